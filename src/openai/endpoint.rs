//! Endpoint detection from a request path: which OpenAI-compatible (or Anthropic) API a request
//! targets, independent of any mount prefix (`/v1`, `/api/v1`, `/openai/deployments/NAME`, …).
//! Unknown paths are `Other` and must be passed through untouched by the caller.

/// The API family a request path addresses. Decides which body fields carry content.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Endpoint {
    /// `…/chat/completions`
    ChatCompletions,
    /// `…/completions` (legacy text completions, also `…/engines/ID/completions`)
    Completions,
    /// `…/responses` (creation only; `…/responses/{id}` and sub-resources are `Other`)
    Responses,
    /// `…/embeddings`
    Embeddings,
    /// `…/messages` (Anthropic Messages API)
    AnthropicMessages,
    /// `…/models` and `…/models/{id}`
    Models,
    /// Anything else: passed through untouched.
    Other,
}

/// Gemini-native verbs appended to a model id (`/models/gemini-pro:generateContent`); such paths
/// carry content and are not model listings, so they must not be classified as `Models`.
const MODEL_VERBS: &[&str] = &[
    ":generateContent",
    ":streamGenerateContent",
    ":countTokens",
    ":embedContent",
    ":batchEmbedContents",
    ":predict",
];

impl Endpoint {
    /// Classifies `path` by its trailing segments. The query string and fragment are ignored, as are
    /// empty segments (`//`, trailing `/`), so any prefix works.
    ///
    /// Percent-encoded bytes and dot segments are resolved first, as an upstream that
    /// normalizes paths would (`/v1/chat/%63ompletions`, `/v1/chat%2Fcompletions` and
    /// `/v1/x/../chat/completions` are chat requests there, and must be inspected here).
    pub fn from_path(path: &str) -> Endpoint {
        let path = match path.find(['?', '#']) {
            Some(i) => &path[..i],
            None => path,
        };
        if path.contains('%') || path.split('/').any(|s| s == "." || s == "..") {
            let decoded = String::from_utf8_lossy(&crate::percent::decode(path).0).into_owned();
            let mut segs: Vec<&str> = Vec::new();
            for seg in decoded.split('/') {
                match seg {
                    "" | "." => {}
                    ".." => {
                        segs.pop();
                    }
                    s => segs.push(s),
                }
            }
            let mut rev = segs.into_iter().rev();
            return Self::classify(rev.next(), rev.next(), rev.next());
        }
        // Walk the last three non-empty segments from the end without allocating.
        let mut segs = path.rsplit('/').filter(|s| !s.is_empty());
        let last = segs.next();
        let prev = segs.next();
        let prev2 = segs.next();
        Self::classify(last, prev, prev2)
    }

    fn classify(last: Option<&str>, prev: Option<&str>, prev2: Option<&str>) -> Endpoint {
        match (prev2, prev, last) {
            (_, Some("chat"), Some("completions")) => Endpoint::ChatCompletions,
            (_, _, Some("completions")) => Endpoint::Completions,
            (_, _, Some("responses")) => Endpoint::Responses,
            (_, _, Some("embeddings")) => Endpoint::Embeddings,
            // OpenAI sub-resources that also end in `/messages` (Assistants threads, stored chat
            // completions) are not Anthropic requests.
            (Some("threads" | "completions"), Some(_), Some("messages")) => Endpoint::Other,
            (_, _, Some("messages")) => Endpoint::AnthropicMessages,
            (_, _, Some("models")) => Endpoint::Models,
            (_, Some("models"), Some(id)) if !MODEL_VERBS.iter().any(|v| id.ends_with(v)) => {
                Endpoint::Models
            }
            _ => Endpoint::Other,
        }
    }

    /// Stable route label used by rules scopes, metrics and audit records.
    pub fn route(&self) -> &'static str {
        match self {
            Endpoint::ChatCompletions => "chat",
            Endpoint::Completions => "completions",
            Endpoint::Responses => "responses",
            Endpoint::Embeddings => "embeddings",
            Endpoint::AnthropicMessages => "messages",
            Endpoint::Models => "models",
            Endpoint::Other => "other",
        }
    }

    /// True for endpoints whose request bodies carry content that must be scanned.
    pub fn has_content(&self) -> bool {
        !matches!(self, Endpoint::Models | Endpoint::Other)
    }
}

#[cfg(test)]
mod tests {
    use super::Endpoint::{self, *};

    #[test]
    fn from_path_table() {
        let cases: &[(&str, Endpoint)] = &[
            ("/v1/chat/completions", ChatCompletions),
            ("/chat/completions", ChatCompletions),
            (
                "/v1/chat/completions?api-version=2024-10-21",
                ChatCompletions,
            ),
            (
                "/openai/deployments/gpt4o/chat/completions?api-version=2024-10-21",
                ChatCompletions,
            ),
            ("/api/v1/chat/completions", ChatCompletions),
            ("/v1/chat/completions/", ChatCompletions),
            ("//v1//chat//completions", ChatCompletions),
            // What a normalizing upstream serves as chat must be inspected as chat.
            ("/v1/chat/%63ompletions", ChatCompletions),
            ("/v1/%63hat/completions?x=%2F", ChatCompletions),
            ("/v1/chat%2Fcompletions", ChatCompletions),
            ("/v1/chat%2fcompletions", ChatCompletions),
            ("/v1/x/../chat/completions", ChatCompletions),
            ("/v1/chat/./completions", ChatCompletions),
            ("/v1/chat/%2E/completions", ChatCompletions),
            ("/v1/chat/completions/%2e%2e", Other),
            ("/v1/%65mbeddings", Embeddings),
            ("/v1/chat/completions%zz", Other),
            ("/v1/%ZZ/chat/completions", ChatCompletions),
            ("/v1/completions", Completions),
            ("/v1/engines/davinci/completions", Completions),
            ("/openai/deployments/x/completions", Completions),
            ("/v1/responses", Responses),
            ("/openai/v1/responses?x=1", Responses),
            ("/v1/responses/resp_123", Other),
            ("/v1/responses/resp_123/cancel", Other),
            ("/v1/responses/resp_123/input_items", Other),
            ("/v1/embeddings", Embeddings),
            (
                "/openai/deployments/emb/embeddings?api-version=1",
                Embeddings,
            ),
            ("/v1/messages", AnthropicMessages),
            ("/anthropic/v1/messages?beta=true", AnthropicMessages),
            ("/v1/messages/count_tokens", Other),
            ("/v1/threads/thread_abc/messages", Other),
            ("/v1/chat/completions/chatcmpl-1/messages", Other),
            ("/v1/chat/completions/chatcmpl-1", Other),
            ("/v1/models", Models),
            ("/v1/models/gpt-4o", Models),
            ("/v1/models/ft:gpt-4o-mini:org::abc123", Models),
            ("/v1beta/models/gemini-pro:generateContent", Other),
            ("/v1/models/x/extra", Other),
            ("/v1/audio/speech", Other),
            ("/v1/files", Other),
            ("/", Other),
            ("", Other),
            ("/v1/xcompletions", Other),
            ("/v1/chatcompletions", Other),
            ("/v1/foochat/completions", Completions),
            ("/v1/chat/completions#frag", ChatCompletions),
        ];
        for (path, want) in cases {
            assert_eq!(Endpoint::from_path(path), *want, "path {path:?}");
        }
    }

    #[test]
    fn routes() {
        let all = [
            (ChatCompletions, "chat"),
            (Completions, "completions"),
            (Responses, "responses"),
            (Embeddings, "embeddings"),
            (AnthropicMessages, "messages"),
            (Models, "models"),
            (Other, "other"),
        ];
        for (ep, r) in all {
            assert_eq!(ep.route(), r);
        }
        assert!(ChatCompletions.has_content());
        assert!(!Models.has_content());
        assert!(!Other.has_content());
    }
}
