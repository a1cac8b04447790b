//! Built-in OpenAI-compatible mock upstream: chat/legacy completions, Responses, embeddings, models and
//! Anthropic messages (streamed and not), with request recording and fault injection. It backs
//! `jimini mock-upstream`, the offline default config of `jimini serve`, and every end-to-end test.
//! `POST /v1/traces` accepts and discards OTLP/HTTP exports (a stand-in collector for load tests).
//!
//! Wire formats follow the real APIs closely enough for the official `openai` / `anthropic` SDKs to
//! parse them. Fault injection is available three ways: [`MockServer::set_fault`] (in-process),
//! `POST /mock/fault` (sticky, for black-box tests) and per-request `x-mock-*` headers:
//!
//! | header | effect |
//! |---|---|
//! | `x-mock-status: 500` | reply with that status (400–599) and an OpenAI-shaped error body |
//! | `x-mock-hang: 1` | accept the request and never answer (until the server stops) |
//! | `x-mock-drop-after: 3` | stream 3 events (non-stream: half the body) then close abruptly |
//! | `x-mock-delay-ms: 200` | wait before sending the response headers |
//! | `x-mock-gzip: 1` | gzip the response body |
//! | `x-mock-chunk-chars: 1` | characters per streamed delta for this request |
//!
//! Control endpoints (never recorded, never faulted): `POST /mock/fault` with one of
//! `{"status":500}`, `{"hang":true}`, `{"drop_after":3}`, `{"delay_ms":200}`, `{"gzip":true}`,
//! `{"fail_first":{"n":2,"status":503}}` or `{"clear":true}`; `GET /mock/requests`
//! (`{"object":"list","count":N,"data":[{method,path,headers{},body,body_base64}]}`);
//! `DELETE /mock/requests`; `GET /mock/health`.

mod anthropic;
mod chat;
mod common;
mod embeddings;
mod responses;
mod server;

#[cfg(test)]
mod tests;

use std::time::Duration;

use bytes::Bytes;
use serde::{Deserialize, Serialize};

pub use server::{run, MockServer};

/// `mock:` config section. Used by `jimini mock-upstream` and by `jimini serve` (which starts the mock
/// in-process when `enabled` is true, so the shipped config works offline).
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct MockConfig {
    /// Run the mock in-process with `jimini serve`. Default: false.
    pub enabled: bool,
    /// Listen address. Default: "127.0.0.1:18080".
    pub listen: String,
    /// `echo` (reply with the last user message) or `fixed` (reply with `fixed_reply`). Default: echo.
    pub mode: MockMode,
    /// Reply text in `fixed` mode, and in `echo` mode when the request carries no user text.
    /// Default: "Hello from the Jimini mock upstream."
    pub fixed_reply: String,
    /// Characters (not bytes) per streamed delta; 0 is treated as 1. Default: 4.
    pub chunk_chars: usize,
    /// Pause between streamed events, in milliseconds. Default: 0.
    pub chunk_delay_ms: u64,
    /// Model name used when the request names none, and listed by `/v1/models`. Default: "mock-gpt".
    pub model: String,
    /// How many recent requests are kept for inspection (`requests()`, `GET /mock/requests`); older
    /// ones are discarded so benchmarks do not grow memory. 0 disables recording. Default: 1000.
    pub max_recorded: usize,
    /// Largest accepted request body in bytes (larger → 413). Default: 32 MiB.
    pub max_body_bytes: usize,
}

impl Default for MockConfig {
    fn default() -> Self {
        MockConfig {
            enabled: false,
            listen: "127.0.0.1:18080".to_string(),
            mode: MockMode::Echo,
            fixed_reply: "Hello from the Jimini mock upstream.".to_string(),
            chunk_chars: 4,
            chunk_delay_ms: 0,
            model: "mock-gpt".to_string(),
            max_recorded: 1000,
            max_body_bytes: 32 << 20,
        }
    }
}

/// How the mock chooses its reply text.
#[derive(Deserialize, Serialize, Clone, Copy, Debug, PartialEq, Eq, Default)]
#[serde(rename_all = "lowercase")]
pub enum MockMode {
    /// Reply with the text of the last user message.
    #[default]
    Echo,
    /// Always reply with `fixed_reply`.
    Fixed,
}

/// A sticky fault applied to every subsequent (non-control) request until cleared.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Fault {
    /// Reply with this status and an OpenAI-shaped error body (429 adds `Retry-After: 1`).
    Status(u16),
    /// Accept the request and never answer (until the server shuts down).
    Hang,
    /// Stream this many events then close the connection without `[DONE]`; for non-streaming
    /// replies send the headers and half of the body, then close.
    DropMidStream {
        /// Events sent before the close (0 = close right after the headers).
        after_events: usize,
    },
    /// Wait this long before sending the response headers.
    Delay(Duration),
    /// Gzip-encode the response body regardless of `Accept-Encoding`.
    Gzip,
    /// The first `n` requests after the fault is set fail with `status`, later ones succeed.
    FailFirst {
        /// How many requests fail.
        n: usize,
        /// Their status (400–599).
        status: u16,
    },
}

/// One request as the mock received it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RecordedRequest {
    /// HTTP method, e.g. "POST".
    pub method: String,
    /// Path and query, e.g. "/v1/chat/completions?api-version=1".
    pub path: String,
    /// Headers in arrival order, lowercased names; values decoded as lossy UTF-8.
    pub headers: Vec<(String, String)>,
    /// Raw body bytes (as sent; not decompressed).
    pub body: Bytes,
}

impl RecordedRequest {
    /// First value of header `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// Body as (lossy) UTF-8 text.
    pub fn body_text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// Body parsed as JSON, if it is JSON.
    pub fn json(&self) -> Option<serde_json::Value> {
        serde_json::from_slice(&self.body).ok()
    }
}
