//! Helpers shared by the mock endpoints: reply type, ids and timestamps, token estimates, UTF-8-safe
//! chunking, text extraction from OpenAI/Anthropic message shapes, SSE framing and error bodies.

use std::io::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;
use std::time::{SystemTime, UNIX_EPOCH};

use axum::http::StatusCode;
use bytes::{BufMut, Bytes, BytesMut};
use serde::Serialize;
use serde_json::Value;

use super::{MockConfig, MockMode};

/// What an endpoint produced; the server applies faults (gzip, drop, delays) on top.
pub(crate) enum Reply {
    /// A complete JSON body.
    Json { status: StatusCode, body: Vec<u8> },
    /// Server-sent events, each already framed (`[event: …\n]data: …\n\n`).
    Sse(Vec<Bytes>),
}

impl Reply {
    pub(crate) fn ok<T: Serialize>(value: &T) -> Reply {
        match serde_json::to_vec(value) {
            Ok(body) => Reply::Json {
                status: StatusCode::OK,
                body,
            },
            // Serializing our own structs cannot fail (no maps with non-string keys); keep a safe path.
            Err(e) => Reply::error(
                StatusCode::INTERNAL_SERVER_ERROR,
                Flavor::OpenAi,
                &format!("mock serialization failed: {e}"),
            ),
        }
    }

    pub(crate) fn error(status: StatusCode, flavor: Flavor, message: &str) -> Reply {
        Reply::Json {
            status,
            body: error_body(status.as_u16(), flavor, message, None),
        }
    }

    pub(crate) fn bad_request(flavor: Flavor, message: &str, param: Option<&str>) -> Reply {
        Reply::Json {
            status: StatusCode::BAD_REQUEST,
            body: error_body(400, flavor, message, param),
        }
    }
}

/// Which provider's error shape to use.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Flavor {
    OpenAi,
    Anthropic,
}

/// Per-request inputs the endpoint builders need.
pub(crate) struct Ctx<'a> {
    pub cfg: &'a MockConfig,
    /// Characters per streamed delta (≥ 1).
    pub chunk_chars: usize,
}

impl Ctx<'_> {
    /// Reply text: the user's text in echo mode (fixed reply when there is none), else the fixed reply.
    pub(crate) fn reply_text(&self, user_text: Option<String>) -> String {
        match (self.cfg.mode, user_text) {
            (MockMode::Echo, Some(t)) => t,
            _ => self.cfg.fixed_reply.clone(),
        }
    }

    /// The request's `model`, or the configured default.
    pub(crate) fn model<'b>(&'b self, req: &'b Value) -> &'b str {
        req.get("model")
            .and_then(Value::as_str)
            .filter(|m| !m.is_empty())
            .unwrap_or(&self.cfg.model)
    }
}

/// Seconds since the Unix epoch.
pub(crate) fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// A unique id such as `chatcmpl-…`: a per-process random-ish seed mixed with a counter, so ids are
/// unique within a run and differ between runs without needing an RNG per request.
pub(crate) fn new_id(prefix: &str) -> String {
    static SEED: OnceLock<u64> = OnceLock::new();
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let seed = *SEED.get_or_init(|| {
        let t = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(0);
        splitmix64(t ^ u64::from(std::process::id()).rotate_left(32))
    });
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let a = splitmix64(seed ^ n);
    let b = splitmix64(a ^ 0x9e37_79b9_7f4a_7c15);
    let mut s = String::with_capacity(prefix.len() + 29);
    s.push_str(prefix);
    // 29 chars after the prefix, like the real ids.
    let _ = std::fmt::Write::write_fmt(&mut s, format_args!("{a:016x}{:013x}", b >> 12));
    s
}

pub(crate) fn splitmix64(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// Deterministic token estimate: ⌈chars / 4⌉.
pub(crate) fn approx_tokens(chars: usize) -> u64 {
    chars.div_ceil(4) as u64
}

/// Total characters of every string reachable from `v` (prompt size estimate).
pub(crate) fn text_chars(v: &Value) -> usize {
    match v {
        Value::String(s) => s.chars().count(),
        Value::Array(a) => a.iter().map(text_chars).sum(),
        Value::Object(o) => o
            .iter()
            .filter(|(k, _)| matches!(k.as_str(), "content" | "text" | "input" | "prompt"))
            .map(|(_, v)| text_chars(v))
            .sum(),
        _ => 0,
    }
}

/// Splits `text` into pieces of at most `n` characters (never inside a UTF-8 sequence).
pub(crate) fn char_chunks(text: &str, n: usize) -> impl Iterator<Item = &str> {
    let n = n.max(1);
    let mut rest = text;
    std::iter::from_fn(move || {
        if rest.is_empty() {
            return None;
        }
        let cut = rest
            .char_indices()
            .nth(n)
            .map(|(i, _)| i)
            .unwrap_or(rest.len());
        let (head, tail) = rest.split_at(cut);
        rest = tail;
        Some(head)
    })
}

/// Text of a message `content`: a string, or the concatenated `text` of its text parts
/// (`text`, `input_text`, `output_text`), joined by newlines. None when there is no text at all.
pub(crate) fn content_text(content: &Value) -> Option<String> {
    match content {
        Value::String(s) => Some(s.clone()),
        Value::Array(parts) => {
            let mut out: Option<String> = None;
            for p in parts {
                let text = match p {
                    Value::String(s) => Some(s.as_str()),
                    Value::Object(o) => {
                        let ty = o.get("type").and_then(Value::as_str).unwrap_or("text");
                        if matches!(ty, "text" | "input_text" | "output_text") {
                            o.get("text").and_then(Value::as_str)
                        } else {
                            None
                        }
                    }
                    _ => None,
                };
                if let Some(t) = text {
                    match &mut out {
                        Some(s) => {
                            s.push('\n');
                            s.push_str(t);
                        }
                        None => out = Some(t.to_string()),
                    }
                }
            }
            out
        }
        _ => None,
    }
}

/// Text of the last message with role `user` in a `messages`-style array.
pub(crate) fn last_user_text(messages: &[Value]) -> Option<String> {
    messages
        .iter()
        .rev()
        .find(|m| m.get("role").and_then(Value::as_str) == Some("user"))
        .and_then(|m| m.get("content"))
        .and_then(content_text)
}

/// Parses a request body as a JSON object, or returns the 400 reply real providers give.
pub(crate) fn parse_object(body: &[u8], flavor: Flavor) -> Result<Value, Reply> {
    match serde_json::from_slice::<Value>(body) {
        Ok(v @ Value::Object(_)) => Ok(v),
        Ok(_) => Err(Reply::bad_request(
            flavor,
            "The request body must be a JSON object.",
            None,
        )),
        Err(_) => Err(Reply::bad_request(
            flavor,
            "We could not parse the JSON body of your request. (HINT: This likely means you aren't \
             using your HTTP library correctly. The OpenAI API expects a JSON payload.)",
            None,
        )),
    }
}

/// `stream: true`?
pub(crate) fn wants_stream(req: &Value) -> bool {
    req.get("stream").and_then(Value::as_bool).unwrap_or(false)
}

/// `n` clamped to 1..=128 (the real API's limit).
pub(crate) fn choice_count(req: &Value) -> usize {
    req.get("n")
        .and_then(Value::as_u64)
        .map(|n| n.clamp(1, 128) as usize)
        .unwrap_or(1)
}

/// `data: <json>\n\n`.
pub(crate) fn data_event<T: Serialize>(value: &T) -> Bytes {
    let mut buf = BytesMut::with_capacity(256).writer();
    let _ = buf.write_all(b"data: ");
    // Writing our own Serialize types into memory cannot fail.
    let _ = serde_json::to_writer(&mut buf, value);
    let _ = buf.write_all(b"\n\n");
    buf.into_inner().freeze()
}

/// `event: <name>\ndata: <json>\n\n`.
pub(crate) fn named_event<T: Serialize>(name: &str, value: &T) -> Bytes {
    let mut buf = BytesMut::with_capacity(256 + name.len()).writer();
    let _ = write!(buf, "event: {name}\ndata: ");
    let _ = serde_json::to_writer(&mut buf, value);
    let _ = buf.write_all(b"\n\n");
    buf.into_inner().freeze()
}

pub(crate) const DONE_EVENT: &[u8] = b"data: [DONE]\n\n";

#[derive(Serialize)]
struct OpenAiError<'a> {
    error: OpenAiErrorInner<'a>,
}
#[derive(Serialize)]
struct OpenAiErrorInner<'a> {
    message: &'a str,
    #[serde(rename = "type")]
    kind: &'a str,
    param: Option<&'a str>,
    code: Option<&'a str>,
}
#[derive(Serialize)]
struct AnthropicError<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    error: AnthropicErrorInner<'a>,
}
#[derive(Serialize)]
struct AnthropicErrorInner<'a> {
    #[serde(rename = "type")]
    kind: &'a str,
    message: &'a str,
}

/// Error body in the provider's shape for `status`. `message` should not contain user data.
pub(crate) fn error_body(
    status: u16,
    flavor: Flavor,
    message: &str,
    param: Option<&str>,
) -> Vec<u8> {
    let res = match flavor {
        Flavor::OpenAi => {
            let (kind, code) = openai_error_kind(status);
            serde_json::to_vec(&OpenAiError {
                error: OpenAiErrorInner {
                    message,
                    kind,
                    param,
                    code,
                },
            })
        }
        Flavor::Anthropic => serde_json::to_vec(&AnthropicError {
            kind: "error",
            error: AnthropicErrorInner {
                kind: anthropic_error_kind(status),
                message,
            },
        }),
    };
    res.unwrap_or_default()
}

fn openai_error_kind(status: u16) -> (&'static str, Option<&'static str>) {
    match status {
        401 => ("invalid_request_error", Some("invalid_api_key")),
        403 => ("permission_error", None),
        404 => ("invalid_request_error", None),
        429 => ("requests", Some("rate_limit_exceeded")),
        400..=499 => ("invalid_request_error", None),
        _ => ("server_error", None),
    }
}

fn anthropic_error_kind(status: u16) -> &'static str {
    match status {
        401 => "authentication_error",
        403 => "permission_error",
        404 => "not_found_error",
        413 => "request_too_large",
        429 => "rate_limit_error",
        529 => "overloaded_error",
        400..=499 => "invalid_request_error",
        _ => "api_error",
    }
}

/// Human message for an injected status fault.
pub(crate) fn fault_message(status: u16) -> String {
    match status {
        429 => {
            "Rate limit reached for requests (injected by the Jimini mock upstream).".to_string()
        }
        500 => "The server had an error while processing your request. Sorry about that! \
                (injected by the Jimini mock upstream)"
            .to_string(),
        503 => "The engine is currently overloaded, please try again later. \
                (injected by the Jimini mock upstream)"
            .to_string(),
        s => format!("Mock upstream injected status {s}."),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn chunks_respect_char_boundaries() {
        let text = "héllo wörld 你好🎉!";
        for n in 0..12 {
            let parts: Vec<&str> = char_chunks(text, n).collect();
            assert_eq!(parts.concat(), text, "n={n}");
            let n = n.max(1);
            for (i, p) in parts.iter().enumerate() {
                let c = p.chars().count();
                assert!(
                    c == n || (i + 1 == parts.len() && c <= n),
                    "n={n} part={p:?}"
                );
            }
        }
        assert_eq!(char_chunks("", 3).count(), 0);
    }

    #[test]
    fn content_text_shapes() {
        let table = [
            (json!("hi"), Some("hi")),
            (
                json!([{"type":"text","text":"a"},{"type":"image_url","image_url":{"url":"x"}},{"type":"input_text","text":"b"}]),
                Some("a\nb"),
            ),
            (json!([{"type":"image_url"}]), None),
            (json!(null), None),
            (json!(["x", "y"]), Some("x\ny")),
        ];
        for (v, want) in table {
            assert_eq!(content_text(&v).as_deref(), want, "{v}");
        }
    }

    #[test]
    fn last_user_wins() {
        let msgs = json!([
            {"role":"system","content":"sys"},
            {"role":"user","content":"first"},
            {"role":"assistant","content":"ok"},
            {"role":"user","content":[{"type":"text","text":"second"}]},
            {"role":"tool","content":"t"}
        ]);
        let arr = msgs.as_array().cloned().unwrap_or_default();
        assert_eq!(last_user_text(&arr).as_deref(), Some("second"));
        assert_eq!(last_user_text(&[]), None);
    }

    #[test]
    fn ids_are_unique_and_shaped() {
        let a = new_id("chatcmpl-");
        let b = new_id("chatcmpl-");
        assert_ne!(a, b);
        assert!(a.starts_with("chatcmpl-"));
        assert_eq!(a.len(), "chatcmpl-".len() + 29);
    }

    #[test]
    fn error_shapes() {
        let v: Value = serde_json::from_slice(&error_body(429, Flavor::OpenAi, "m", None)).unwrap();
        assert_eq!(v["error"]["code"], "rate_limit_exceeded");
        assert_eq!(v["error"]["message"], "m");
        assert!(v["error"]["param"].is_null());
        let v: Value =
            serde_json::from_slice(&error_body(529, Flavor::Anthropic, "m", None)).unwrap();
        assert_eq!(v["type"], "error");
        assert_eq!(v["error"]["type"], "overloaded_error");
    }

    #[test]
    fn tokens() {
        assert_eq!(approx_tokens(0), 0);
        assert_eq!(approx_tokens(1), 1);
        assert_eq!(approx_tokens(8), 2);
        assert_eq!(approx_tokens(9), 3);
    }
}
