//! Token usage extraction from OpenAI (Chat/Completions/Embeddings: `prompt_tokens`…, Responses:
//! `input_tokens`…) and Anthropic (`input_tokens` + cache tokens) usage objects, for metrics and
//! audit. Never fails: a missing or odd usage object is simply `None`.

use serde::Deserialize;
use serde_json::Value;

use super::json::Node;

/// Normalised token counts. `prompt_tokens` includes cached input tokens for Anthropic.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct Usage {
    /// Input tokens (`prompt_tokens` / `input_tokens`, plus Anthropic cache tokens).
    pub prompt_tokens: u64,
    /// Output tokens (`completion_tokens` / `output_tokens`).
    pub completion_tokens: u64,
    /// As reported, else prompt + completion.
    pub total_tokens: u64,
}

fn num(obj: &serde_json::Map<String, Value>, key: &str) -> Option<u64> {
    obj.get(key).and_then(Value::as_u64)
}

impl Usage {
    /// Reads a `usage` object in any of the supported dialects. `None` if it carries no counts.
    pub fn from_value(v: &Value) -> Option<Usage> {
        let obj = v.as_object()?;
        Usage::from_counts(&|k: &str| num(obj, k))
    }

    /// From a lookup of a usage object's integer fields.
    fn from_counts(num: &dyn Fn(&str) -> Option<u64>) -> Option<Usage> {
        let prompt = num("prompt_tokens").or_else(|| {
            let input = num("input_tokens");
            let created = num("cache_creation_input_tokens");
            let read = num("cache_read_input_tokens");
            if input.is_none() && created.is_none() && read.is_none() {
                None
            } else {
                // Anthropic reports cached input separately; OpenAI Responses includes it in
                // input_tokens and never sends these two keys.
                Some(input.unwrap_or(0) + created.unwrap_or(0) + read.unwrap_or(0))
            }
        });
        let completion = num("completion_tokens").or_else(|| num("output_tokens"));
        let total = num("total_tokens");
        if prompt.is_none() && completion.is_none() && total.is_none() {
            return None;
        }
        let prompt_tokens = prompt.unwrap_or(0);
        let completion_tokens = completion.unwrap_or(0);
        Some(Usage {
            prompt_tokens,
            completion_tokens,
            total_tokens: total.unwrap_or(prompt_tokens + completion_tokens),
        })
    }
}

#[derive(Deserialize)]
struct UsagePeek {
    #[serde(default)]
    usage: Option<Value>,
    /// Streaming-style wrappers (`{"response": {"usage": …}}`) seen in stored Responses events.
    #[serde(default)]
    response: Option<Box<UsagePeek>>,
}

/// Usage of an already parsed response object: top-level `usage`, else `response.usage`.
pub(crate) fn node_usage(root: &Node<'_>) -> Option<Usage> {
    let counts = |u: &Node<'_>| {
        u.is_object()
            .then(|| Usage::from_counts(&|k: &str| u.get(k).and_then(Node::as_u64)))
            .flatten()
    };
    root.get("usage").and_then(counts).or_else(|| {
        root.get("response")
            .and_then(|r| r.get("usage"))
            .and_then(counts)
    })
}

/// Usage of a non-streamed response body (any endpoint). Skips everything but `usage` while
/// parsing, so it is cheap even on large bodies.
pub fn response_usage(body: &[u8]) -> Option<Usage> {
    let first = body.iter().find(|b| !b.is_ascii_whitespace())?;
    if *first != b'{' {
        return None;
    }
    let peek: UsagePeek = serde_json::from_slice(body).ok()?;
    if let Some(u) = peek.usage.as_ref().and_then(Usage::from_value) {
        return Some(u);
    }
    peek.response
        .and_then(|r| r.usage)
        .as_ref()
        .and_then(Usage::from_value)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dialects() {
        type Counts = Option<(u64, u64, u64)>;
        let cases: &[(&str, Counts)] = &[
            (
                r#"{"id":"x","usage":{"prompt_tokens":9,"completion_tokens":12,"total_tokens":21}}"#,
                Some((9, 12, 21)),
            ),
            (
                r#"{"object":"list","usage":{"prompt_tokens":5,"total_tokens":5}}"#,
                Some((5, 0, 5)),
            ),
            (
                r#"{"usage":{"input_tokens":10,"output_tokens":3,"total_tokens":13,"input_tokens_details":{"cached_tokens":0}}}"#,
                Some((10, 3, 13)),
            ),
            (
                r#"{"usage":{"input_tokens":10,"cache_creation_input_tokens":2,"cache_read_input_tokens":4,"output_tokens":7}}"#,
                Some((16, 7, 23)),
            ),
            (
                r#"{"response":{"usage":{"input_tokens":1,"output_tokens":2}}}"#,
                Some((1, 2, 3)),
            ),
            (r#"{"usage":null}"#, None),
            (r#"{"usage":{}}"#, None),
            (r#"{"id":"x"}"#, None),
            (r#"[1,2]"#, None),
            (r#"not json"#, None),
            (r#""#, None),
        ];
        for (body, want) in cases {
            let got = response_usage(body.as_bytes())
                .map(|u| (u.prompt_tokens, u.completion_tokens, u.total_tokens));
            assert_eq!(got, *want, "{body}");
        }
    }
}
