//! Error bodies the client sees, shaped like the provider's own so official SDKs raise their normal
//! exceptions: OpenAI `{"error":{"message","type","code","param"}}`, Anthropic
//! `{"type":"error","error":{"type","message"}}`, plus the SSE error events that end a stopped stream.

use super::Endpoint;
use serde_json::{json, Value};

/// `type` for a request blocked by a Jimini rule (HTTP 403; mid-stream: final SSE error event).
pub const POLICY: &str = "jimini_policy_violation";
/// `type` for failures Jimini reports on behalf of the upstream (HTTP 502/503/504, open breaker).
pub const UPSTREAM: &str = "jimini_upstream_error";
/// OpenAI's `type` for malformed requests (HTTP 400) and oversized bodies (HTTP 413).
pub const INVALID_REQUEST: &str = "invalid_request_error";
/// OpenAI's `type` for request-rate limits (HTTP 429); the `code` is [`CODE_RATE_LIMIT`].
pub const RATE_LIMIT: &str = "requests";
/// OpenAI's `type` for token-rate limits (HTTP 429).
pub const RATE_LIMIT_TOKENS: &str = "tokens";
/// OpenAI's `type` for internal failures (HTTP 500).
pub const SERVER_ERROR: &str = "server_error";
/// OpenAI's `type` for a missing/invalid API key (HTTP 401).
pub const AUTHENTICATION: &str = "invalid_request_error";
/// Anthropic's `type` for a malformed request (HTTP 400/413).
pub const ANTHROPIC_INVALID_REQUEST: &str = "invalid_request_error";
/// Anthropic's `type` for HTTP 429.
pub const ANTHROPIC_RATE_LIMIT: &str = "rate_limit_error";
/// Anthropic's `type` for HTTP 401.
pub const ANTHROPIC_AUTHENTICATION: &str = "authentication_error";
/// Anthropic's `type` for HTTP 529/503.
pub const ANTHROPIC_OVERLOADED: &str = "overloaded_error";
/// Anthropic's `type` for HTTP 500.
pub const ANTHROPIC_API_ERROR: &str = "api_error";

/// `code` for HTTP 429 (OpenAI's own value).
pub const CODE_RATE_LIMIT: &str = "rate_limit_exceeded";
/// `code` for a missing/unknown caller key, HTTP 401 (OpenAI's own value).
pub const CODE_INVALID_API_KEY: &str = "invalid_api_key";
/// `code` for HTTP 413.
pub const CODE_BODY_TOO_LARGE: &str = "request_too_large";
/// `code` for a body that is not valid JSON / UTF-8 / an object (HTTP 400).
pub const CODE_INVALID_JSON: &str = "invalid_json";
/// `code` for a route/upstream not allowed by egress control (HTTP 403).
pub const CODE_EGRESS_DENIED: &str = "egress_denied";
/// `code` for a model outside the allow-list (HTTP 403).
pub const CODE_MODEL_NOT_ALLOWED: &str = "model_not_allowed";
/// `code` for a failed upstream connection or 5xx after retries (HTTP 502).
pub const CODE_UPSTREAM_UNAVAILABLE: &str = "upstream_unavailable";
/// `code` for an upstream timeout (HTTP 504).
pub const CODE_UPSTREAM_TIMEOUT: &str = "upstream_timeout";
/// `code` for an open circuit breaker (HTTP 503).
pub const CODE_CIRCUIT_OPEN: &str = "circuit_open";
/// `code` of the SSE error event sent when an upstream event exceeds the size bound.
pub const CODE_STREAM_EVENT_TOO_LARGE: &str = "stream_event_too_large";
/// The client did not send its request body in time.
pub const CODE_REQUEST_TIMEOUT: &str = "request_timeout";
/// An upstream response in an encoding the proxy cannot decode (fail-closed).
pub const CODE_UNINSPECTABLE_RESPONSE: &str = "uninspectable_upstream_response";
/// A streamed response the upstream broke off.
pub const CODE_STREAM_INTERRUPTED: &str = "upstream_stream_interrupted";

fn openai_value(message: &str, kind: &str, code: Option<&str>) -> Value {
    json!({"error": {"message": message, "type": kind, "code": code, "param": null}})
}

fn anthropic_value(message: &str, kind: &str) -> Value {
    json!({"type": "error", "error": {"type": kind, "message": message}})
}

fn to_vec(v: &Value) -> Vec<u8> {
    // Serialising a Value built from strings cannot fail.
    serde_json::to_vec(v).unwrap_or_default()
}

/// OpenAI-shaped error body: `{"error":{"message":…,"type":…,"code":…,"param":null}}`.
pub fn body(message: &str, kind: &str, code: Option<&str>) -> Vec<u8> {
    to_vec(&openai_value(message, kind, code))
}

/// Anthropic-shaped error body: `{"type":"error","error":{"type":…,"message":…}}`.
pub fn anthropic_body(message: &str, kind: &str) -> Vec<u8> {
    to_vec(&anthropic_value(message, kind))
}

/// Error body in the dialect of `ep` (Anthropic for `/messages`, OpenAI otherwise). Anthropic has
/// no `code`; the OpenAI `kind` is passed through as the Anthropic `type`.
pub fn body_for(ep: Endpoint, message: &str, kind: &str, code: Option<&str>) -> Vec<u8> {
    match ep {
        Endpoint::AnthropicMessages => anthropic_body(message, kind),
        _ => body(message, kind, code),
    }
}

/// 403 body for a blocked request: `code` is the rule id (never the matched value).
pub fn policy_violation(ep: Endpoint, rule: &str, message: &str) -> Vec<u8> {
    body_for(ep, message, POLICY, Some(rule))
}

/// 429 body (OpenAI: type `requests`, code `rate_limit_exceeded`).
pub fn rate_limited(ep: Endpoint, message: &str) -> Vec<u8> {
    match ep {
        Endpoint::AnthropicMessages => anthropic_body(message, ANTHROPIC_RATE_LIMIT),
        _ => body(message, RATE_LIMIT, Some(CODE_RATE_LIMIT)),
    }
}

/// 413 body for a request body over `limit` bytes.
pub fn too_large(ep: Endpoint, limit: usize) -> Vec<u8> {
    let msg = format!("Request body exceeds the {limit} byte limit of this proxy.");
    body_for(ep, &msg, INVALID_REQUEST, Some(CODE_BODY_TOO_LARGE))
}

/// 502/503/504 body for an upstream failure; `code` e.g. [`CODE_UPSTREAM_TIMEOUT`].
pub fn upstream(ep: Endpoint, message: &str, code: &str) -> Vec<u8> {
    body_for(ep, message, UPSTREAM, Some(code))
}

/// Final SSE event of a stream stopped by OpenAI-style endpoints:
/// `data: {"error":{…}}\n\n` (the OpenAI SDKs raise `APIError` on a data object with `error`).
pub fn sse_event(message: &str, kind: &str, code: Option<&str>) -> Vec<u8> {
    let mut out = b"data: ".to_vec();
    out.extend_from_slice(&body(message, kind, code));
    out.extend_from_slice(b"\n\n");
    out
}

/// Final SSE event of a stopped Anthropic stream: `event: error\ndata: {"type":"error",…}\n\n`.
pub fn anthropic_sse_event(message: &str, kind: &str) -> Vec<u8> {
    let mut out = b"event: error\ndata: ".to_vec();
    out.extend_from_slice(&anthropic_body(message, kind));
    out.extend_from_slice(b"\n\n");
    out
}

/// SSE error event in the dialect of `ep`.
pub fn sse_event_for(ep: Endpoint, message: &str, kind: &str, code: Option<&str>) -> Vec<u8> {
    match ep {
        Endpoint::AnthropicMessages => anthropic_sse_event(message, kind),
        _ => sse_event(message, kind, code),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(b: &[u8]) -> Value {
        serde_json::from_slice(b).unwrap()
    }

    #[test]
    fn openai_shape() {
        let v = parse(&body("blocked \"x\"", POLICY, Some("secrets.openai-key")));
        assert_eq!(
            v,
            json!({"error":{"message":"blocked \"x\"","type":"jimini_policy_violation","code":"secrets.openai-key","param":null}})
        );
        let raw = String::from_utf8(body("m", SERVER_ERROR, None)).unwrap();
        assert_eq!(
            raw,
            r#"{"error":{"message":"m","type":"server_error","code":null,"param":null}}"#
        );
    }

    #[test]
    fn dialects() {
        let v = parse(&policy_violation(Endpoint::AnthropicMessages, "r.x", "no"));
        assert_eq!(
            v,
            json!({"type":"error","error":{"type":"jimini_policy_violation","message":"no"}})
        );
        let v = parse(&rate_limited(Endpoint::ChatCompletions, "slow down"));
        assert_eq!(v["error"]["type"], "requests");
        assert_eq!(v["error"]["code"], "rate_limit_exceeded");
        let v = parse(&rate_limited(Endpoint::AnthropicMessages, "slow down"));
        assert_eq!(v["error"]["type"], "rate_limit_error");
        let v = parse(&too_large(Endpoint::Responses, 10));
        assert_eq!(v["error"]["type"], INVALID_REQUEST);
        assert_eq!(v["error"]["code"], CODE_BODY_TOO_LARGE);
        let v = parse(&upstream(Endpoint::Other, "down", CODE_CIRCUIT_OPEN));
        assert_eq!(v["error"]["type"], UPSTREAM);
    }

    #[test]
    fn sse_events() {
        let e = String::from_utf8(sse_event("stop", POLICY, Some("a.b"))).unwrap();
        assert_eq!(
            e,
            "data: {\"error\":{\"message\":\"stop\",\"type\":\"jimini_policy_violation\",\"code\":\"a.b\",\"param\":null}}\n\n"
        );
        let e = String::from_utf8(sse_event_for(
            Endpoint::AnthropicMessages,
            "stop",
            POLICY,
            None,
        ))
        .unwrap();
        assert_eq!(
            e,
            "event: error\ndata: {\"type\":\"error\",\"error\":{\"type\":\"jimini_policy_violation\",\"message\":\"stop\"}}\n\n"
        );
    }
}
