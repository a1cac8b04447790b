//! OpenAI-compatible (and Anthropic Messages) wire formats: endpoint detection, the request/response
//! JSON walker that rewrites only content fields, the SSE codec and stream rewriter, usage
//! extraction and client-facing error bodies. Pure logic: no Pingora, no I/O.

pub mod endpoint;
pub mod errors;
mod json;
pub mod sse;
pub mod stream;
pub mod usage;
mod walker;

pub use endpoint::Endpoint;
pub use sse::{SseError, DEFAULT_MAX_EVENT_BYTES};
pub use stream::{SseRewriter, StreamCut};
pub use usage::{response_usage, Usage};

use serde::de::{self, DeserializeSeed, MapAccess, SeqAccess, Visitor};
use serde_json::{Map, Value};
use std::fmt;

/// What the proxy needs to know about a request before forwarding it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RequestInfo {
    /// Body `model` (absent on Azure deployment paths, where the model is in the path).
    pub model: Option<String>,
    /// Body `stream == true`.
    pub stream: bool,
    /// End-user id: body `user`, else `safety_identifier`, else Anthropic `metadata.user_id`.
    pub user: Option<String>,
}

/// Why a body could not be processed. Messages never contain body content.
#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
pub enum BodyError {
    /// Syntax error, trailing data or a duplicate key; the message names the position only.
    #[error("invalid JSON: {0}")]
    InvalidJson(String),
    /// The body is not UTF-8 (JSON bodies must be).
    #[error("body is not valid UTF-8")]
    InvalidUtf8,
    /// Valid JSON, but the top level is not an object.
    #[error("JSON body is not an object")]
    NotAnObject,
}

/// Rewrites one complete content string; `None` means "unchanged".
pub trait TextFilter {
    fn filter(&mut self, text: &str) -> Option<String>;
}

impl<F: FnMut(&str) -> Option<String>> TextFilter for F {
    fn filter(&mut self, text: &str) -> Option<String> {
        self(text)
    }
}

/// Filters streamed content. Keys are opaque but stable per (choice/output/block index, field
/// kind) within one stream; the rewriter calls `finish` once per key when that field ends.
pub trait StreamFilter {
    /// Feeds the next piece of a field; returns the text that may be released now.
    fn push(&mut self, key: u64, chunk: &str) -> String;
    /// The field ended: returns everything still held for `key`.
    fn finish(&mut self, key: u64) -> String;
    /// A complete text repeated inside a stream event (e.g. `response.output_text.done`).
    fn whole(&mut self, text: &str) -> Option<String>;
    /// `Some((code, message))` ends the stream with an error event.
    fn stop(&self) -> Option<(String, String)>;
}

/// Reads model, stream flag and end-user id. An empty (whitespace-only) body yields the default.
pub fn inspect_request(body: &[u8]) -> Result<RequestInfo, BodyError> {
    Ok(parse_request(body)?.info)
}

/// A request body parsed once (strictly): read for routing, then filtered and spliced.
pub struct ParsedRequest<'a> {
    body: &'a [u8],
    text: &'a str,
    root: Option<json::Node<'a>>,
    info: RequestInfo,
}

/// Parses a request body strictly; an empty (whitespace-only) body has no root.
pub fn parse_request(body: &[u8]) -> Result<ParsedRequest<'_>, BodyError> {
    let text = std::str::from_utf8(body).map_err(|_| BodyError::InvalidUtf8)?;
    let root = json::parse_object(text)?;
    let info = root
        .as_ref()
        .map(RequestInfo::from_root)
        .unwrap_or_default();
    Ok(ParsedRequest {
        body,
        text,
        root,
        info,
    })
}

impl ParsedRequest<'_> {
    /// Model, stream flag and end-user id (the default for an empty body), read once.
    pub fn info(&self) -> &RequestInfo {
        &self.info
    }

    /// [`rewrite_request_body`] on this parse.
    pub fn rewrite(
        self,
        ep: Endpoint,
        f: &mut dyn TextFilter,
        model: Option<&str>,
    ) -> Result<Option<Vec<u8>>, BodyError> {
        let ParsedRequest {
            body, text, root, ..
        } = self;
        let Some(mut root) = root else {
            return match model {
                Some(_) => Err(BodyError::NotAnObject),
                None => Ok(None),
            };
        };
        let mut changed = false;
        if ep.has_content() {
            let mut w = walker::Walk::new(f);
            w.request(ep, &mut root);
            changed = w.changed;
        }
        let mut model_elsewhere = None;
        if let Some(model) = model {
            match root.get_mut("model") {
                Some(m) if m.is_string() => {
                    if m.as_str().as_deref() != Some(model) {
                        m.set_string(model.to_string());
                        changed = true;
                    }
                }
                // Absent or not a string (rare): the generic path appends or replaces it.
                _ => model_elsewhere = Some(model),
            }
        }
        let out = changed.then(|| json::splice(text, &root));
        match model_elsewhere {
            Some(model) => set_model(out.as_deref().unwrap_or(body), model).map(Some),
            None => Ok(out),
        }
    }
}

impl RequestInfo {
    /// What the proxy needs from a parsed request object.
    fn from_root(root: &json::Node<'_>) -> RequestInfo {
        let string = |v: Option<&json::Node<'_>>| v.and_then(|v| v.as_str()).map(String::from);
        let user = string(root.get("user"))
            .or_else(|| string(root.get("safety_identifier")))
            .or_else(|| string(root.get("metadata").and_then(|m| m.get("user_id"))));
        RequestInfo {
            model: string(root.get("model")),
            stream: root.get("stream").and_then(json::Node::as_bool) == Some(true),
            user,
        }
    }
}

/// Filters the content fields of a request body for endpoint `ep` and, with `model`, sets the
/// top-level model (in place if present, appended otherwise). Only changed strings are
/// re-encoded; every other byte is forwarded as received. `Ok(None)`: nothing changed — forward
/// the original bytes. The body is parsed strictly whatever the endpoint.
pub fn rewrite_request_body(
    ep: Endpoint,
    body: &[u8],
    f: &mut dyn TextFilter,
    model: Option<&str>,
) -> Result<Option<Vec<u8>>, BodyError> {
    parse_request(body)?.rewrite(ep, f, model)
}

/// Rewrites the content fields of a request body. `Ok(None)`: nothing changed (or the endpoint has
/// no content / the body is empty) — forward the original bytes.
pub fn rewrite_request(
    ep: Endpoint,
    body: &[u8],
    f: &mut dyn TextFilter,
) -> Result<Option<Vec<u8>>, BodyError> {
    if !ep.has_content() {
        return Ok(None);
    }
    rewrite_request_body(ep, body, f, None)
}

/// Rewrites the content fields of a non-streamed response body; `Ok(None)` when unchanged.
/// Embeddings, model listings and unknown endpoints are never rewritten.
pub fn rewrite_response(
    ep: Endpoint,
    body: &[u8],
    f: &mut dyn TextFilter,
) -> Result<Option<Vec<u8>>, BodyError> {
    rewrite_response_with_usage(ep, body, f).0
}

/// [`rewrite_response`] and [`response_usage`] from one parse of the body. A body that cannot be
/// parsed strictly still yields its usage when a lenient read finds one.
pub fn rewrite_response_with_usage(
    ep: Endpoint,
    body: &[u8],
    f: &mut dyn TextFilter,
) -> (Result<Option<Vec<u8>>, BodyError>, Option<Usage>) {
    if matches!(
        ep,
        Endpoint::Embeddings | Endpoint::Models | Endpoint::Other
    ) {
        return (Ok(None), response_usage(body));
    }
    let Ok(text) = std::str::from_utf8(body) else {
        return (Err(BodyError::InvalidUtf8), None);
    };
    let mut root = match json::parse_object(text) {
        Ok(Some(root)) => root,
        Ok(None) => return (Ok(None), None),
        Err(e) => return (Err(e), response_usage(body)),
    };
    let usage = usage::node_usage(&root);
    let mut w = walker::Walk::new(f);
    w.response(ep, &mut root);
    let out = w.changed.then(|| json::splice(text, &root));
    (Ok(out), usage)
}

/// Sets the top-level `model` (kept in place if present, appended otherwise).
pub fn set_model(body: &[u8], model: &str) -> Result<Vec<u8>, BodyError> {
    let mut root = parse_object(body)?.ok_or(BodyError::NotAnObject)?;
    if root.get("model").and_then(Value::as_str) == Some(model) {
        return Ok(body.to_vec());
    }
    if let Value::Object(map) = &mut root {
        map.insert("model".to_string(), Value::String(model.to_string()));
    }
    to_vec(&root)
}

fn to_vec(v: &Value) -> Result<Vec<u8>, BodyError> {
    serde_json::to_vec(v).map_err(json_err)
}

fn json_err(e: serde_json::Error) -> BodyError {
    // serde_json messages name the position and the expectation, never the offending value.
    BodyError::InvalidJson(e.to_string())
}

/// Parses a body that must be a JSON object; `None` for an empty body. Duplicate keys are
/// rejected: we would scan the last occurrence while a first-wins upstream would use the other.
pub(crate) fn parse_object(body: &[u8]) -> Result<Option<Value>, BodyError> {
    let text = std::str::from_utf8(body).map_err(|_| BodyError::InvalidUtf8)?;
    if text.trim_start().is_empty() {
        return Ok(None);
    }
    let mut de = serde_json::Deserializer::from_str(text);
    let v = StrictValue.deserialize(&mut de).map_err(json_err)?;
    de.end().map_err(json_err)?;
    if v.is_object() {
        Ok(Some(v))
    } else {
        Err(BodyError::NotAnObject)
    }
}

/// Like `serde_json::Value`'s own deserializer, but fails on duplicate object keys.
struct StrictValue;

impl<'de> DeserializeSeed<'de> for StrictValue {
    type Value = Value;
    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<Value, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for StrictValue {
    type Value = Value;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("any JSON value")
    }
    fn visit_bool<E>(self, v: bool) -> Result<Value, E> {
        Ok(Value::Bool(v))
    }
    fn visit_i64<E>(self, v: i64) -> Result<Value, E> {
        Ok(Value::from(v))
    }
    fn visit_u64<E>(self, v: u64) -> Result<Value, E> {
        Ok(Value::from(v))
    }
    fn visit_f64<E>(self, v: f64) -> Result<Value, E> {
        Ok(Value::from(v))
    }
    fn visit_str<E>(self, v: &str) -> Result<Value, E> {
        Ok(Value::String(v.to_owned()))
    }
    fn visit_string<E>(self, v: String) -> Result<Value, E> {
        Ok(Value::String(v))
    }
    fn visit_unit<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }
    fn visit_none<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        let mut out = Vec::with_capacity(seq.size_hint().unwrap_or(0));
        while let Some(v) = seq.next_element_seed(StrictValue)? {
            out.push(v);
        }
        Ok(Value::Array(out))
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        let mut out = Map::new();
        while let Some(k) = map.next_key::<String>()? {
            if out.contains_key(&k) {
                // The key itself may be content; do not echo it.
                return Err(de::Error::custom("duplicate object key"));
            }
            let v = map.next_value_seed(StrictValue)?;
            out.insert(k, v);
        }
        Ok(Value::Object(out))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn inspect_table() {
        let cases: &[(&str, Option<&str>, bool, Option<&str>)] = &[
            (
                r#"{"model":"gpt-4o","stream":true,"user":"u1","messages":[]}"#,
                Some("gpt-4o"),
                true,
                Some("u1"),
            ),
            (
                r#"{"model":"gpt-4o","stream":false,"safety_identifier":"s1"}"#,
                Some("gpt-4o"),
                false,
                Some("s1"),
            ),
            (
                r#"{"model":"claude-3","stream":"true","metadata":{"user_id":"a1"}}"#,
                Some("claude-3"),
                false,
                Some("a1"),
            ),
            (
                r#"{"model":7,"user":5,"metadata":{"user_id":3}}"#,
                None,
                false,
                None,
            ),
            (r#"{}"#, None, false, None),
            ("", None, false, None),
        ];
        for (body, model, stream, user) in cases {
            let info = inspect_request(body.as_bytes()).unwrap();
            assert_eq!(info.model.as_deref(), *model, "{body}");
            assert_eq!(info.stream, *stream, "{body}");
            assert_eq!(info.user.as_deref(), *user, "{body}");
        }
    }

    #[test]
    fn inspect_errors() {
        assert_eq!(inspect_request(b"\xff{}"), Err(BodyError::InvalidUtf8));
        assert_eq!(
            inspect_request(b"[\"gpt\", true]"),
            Err(BodyError::NotAnObject)
        );
        assert_eq!(inspect_request(b"\"x\""), Err(BodyError::NotAnObject));
        assert!(matches!(
            inspect_request(b"{\"model\":"),
            Err(BodyError::InvalidJson(_))
        ));
        assert!(matches!(
            inspect_request(b"[1,"),
            Err(BodyError::InvalidJson(_))
        ));
        assert!(matches!(
            inspect_request(br#"{"model":"a","model":"b"}"#),
            Err(BodyError::InvalidJson(_))
        ));
    }

    #[test]
    fn duplicate_keys_rejected_without_echo() {
        let mut f = |_: &str| None;
        let e = rewrite_request(
            Endpoint::ChatCompletions,
            br#"{"messages":[{"content":"a","content":"b"}],"x":{"SECRETKEY":1,"SECRETKEY":2}}"#,
            &mut f,
        )
        .unwrap_err();
        assert!(matches!(e, BodyError::InvalidJson(_)));
        assert!(!e.to_string().contains("SECRETKEY"));
    }

    #[test]
    fn set_model_rewrites_only_model() {
        let body = br#"{"messages":[],"model":"a","n":1}"#;
        assert_eq!(
            set_model(body, "b").unwrap(),
            br#"{"messages":[],"model":"b","n":1}"#.to_vec()
        );
        // Same model: original bytes, untouched formatting.
        let spaced = br#"{ "model" : "a" }"#;
        assert_eq!(set_model(spaced, "a").unwrap(), spaced.to_vec());
        assert_eq!(
            set_model(br#"{"n":1}"#, "m\"x").unwrap(),
            br#"{"n":1,"model":"m\"x"}"#.to_vec()
        );
        assert_eq!(set_model(b"[]", "m"), Err(BodyError::NotAnObject));
        assert_eq!(set_model(b"", "m"), Err(BodyError::NotAnObject));
        assert_eq!(set_model(b"\xc3", "m"), Err(BodyError::InvalidUtf8));
    }

    #[test]
    fn one_pass_request_rewrite_matches_separate_steps() {
        let redact = |t: &str| t.contains("SECRET").then(|| t.replace("SECRET", "[X]"));
        let bodies: &[&[u8]] = &[
            br#"{"model":"a","messages":[{"role":"user","content":"hi SECRET"}],"n":1}"#,
            br#"{"messages":[{"role":"user","content":"clean"}],"model":"a"}"#,
            br#"{"n":1}"#,
            br#"{ "model" : "b" , "stream": true, "user": "u"}"#,
            b"  ",
        ];
        for body in bodies {
            for model in [None, Some("a"), Some("m\"x")] {
                let ep = Endpoint::ChatCompletions;
                let mut f = redact;
                let got = rewrite_request_body(ep, body, &mut f, model)
                    .map(|o| o.unwrap_or_else(|| body.to_vec()));
                // The former two-pass path: rewrite, then set the model.
                let mut f = redact;
                let expected = rewrite_request(ep, body, &mut f)
                    .map(|o| o.unwrap_or_else(|| body.to_vec()))
                    .and_then(|b| match model {
                        Some(m) => set_model(&b, m),
                        None => Ok(b),
                    });
                // Same JSON; the splice keeps the client's formatting where the old path
                // re-serialised compactly.
                let as_value = |r: Result<Vec<u8>, BodyError>| {
                    r.map(|b| serde_json::from_slice::<Value>(&b).ok())
                };
                assert_eq!(
                    as_value(got),
                    as_value(expected),
                    "{} {model:?}",
                    String::from_utf8_lossy(body)
                );
            }
        }
        let dup = inspect_request(br#"{"a":{"SECRET":1,"SECRET":2}}"#).unwrap_err();
        assert!(matches!(dup, BodyError::InvalidJson(_)), "{dup:?}");
        assert!(!dup.to_string().contains("SECRET"), "{dup}");
    }

    #[test]
    fn response_rewrite_and_usage_share_one_parse() {
        let redact = |t: &str| t.contains("SECRET").then(|| t.replace("SECRET", "[X]"));
        let cases: &[(Endpoint, &[u8])] = &[
            (
                Endpoint::ChatCompletions,
                br#"{"choices":[{"message":{"content":"a SECRET"}}],"usage":{"prompt_tokens":3,"completion_tokens":4}}"#,
            ),
            (
                Endpoint::ChatCompletions,
                br#"{"choices":[{"message":{"content":"clean"}}],"usage":{"prompt_tokens":1}}"#,
            ),
            (
                Endpoint::Responses,
                br#"{"output":[{"type":"message","content":[{"type":"output_text","text":"SECRET"}]}],"response":{"usage":{"input_tokens":2,"output_tokens":5}}}"#,
            ),
            (Endpoint::Embeddings, br#"{"data":[],"usage":{"prompt_tokens":7,"total_tokens":7}}"#),
            (Endpoint::ChatCompletions, br#"{"usage":{"prompt_tokens":1},"usage":{"prompt_tokens":2}}"#),
            (Endpoint::ChatCompletions, b"not json"),
            (Endpoint::ChatCompletions, b""),
        ];
        for (ep, body) in cases {
            let mut f = redact;
            let (rewritten, usage) = rewrite_response_with_usage(*ep, body, &mut f);
            let mut f = redact;
            assert_eq!(rewritten, rewrite_response(*ep, body, &mut f));
            assert_eq!(
                usage,
                response_usage(body),
                "{}",
                String::from_utf8_lossy(body)
            );
        }
    }

    #[test]
    fn strict_parse_preserves_values() {
        let body = br#"{"a":-1,"b":18446744073709551615,"c":1.5,"d":[null,true,"x\u00e9"],"e":{}}"#;
        let v = parse_object(body).unwrap().unwrap();
        let plain: Value = serde_json::from_slice(body).unwrap();
        assert_eq!(v, plain);
    }
}
