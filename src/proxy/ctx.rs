//! Per-request state carried through the Pingora hooks: the snapshot the request started with,
//! its identity and route, the body buffers, the rule evaluator and the timing needed for
//! metrics (overhead = time spent in Jimini itself, not waiting on the network).

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use bytes::{Bytes, BytesMut};

use crate::openai::{Endpoint, SseRewriter, Usage};
use crate::rules::Evaluator;
use crate::telemetry::RequestTrace;

use super::app::Snapshot;

/// How the response body is handled.
pub enum ResponseMode {
    /// Not inspected (unknown path, non-JSON, or shadow-free passthrough).
    Passthrough,
    /// Non-streamed JSON: buffered (bounded) then rewritten at end of stream.
    Json(BytesMut),
    /// Server-Sent Events: rewritten event by event.
    Sse(Box<SseRewriter>),
    /// The body cannot be inspected and the policy is fail-closed: the client gets this error
    /// body (once, on the first chunk) and none of the upstream's bytes.
    Refused(Option<Bytes>),
}

/// An error Jimini answers itself (status + OpenAI-shaped body + extra headers).
#[derive(Debug, Clone)]
pub struct ClientError {
    pub status: u16,
    pub body: Vec<u8>,
    pub headers: Vec<(&'static str, String)>,
    /// Short machine reason for metrics/audit (`policy`, `egress`, `rate_limit`, …).
    pub reason: &'static str,
}

pub struct RequestCtx {
    pub snap: Arc<Snapshot>,
    pub request_id: String,
    pub started: Instant,
    pub started_wall: SystemTime,
    pub endpoint: Endpoint,
    pub method: String,
    pub path: String,
    pub caller: Option<String>,
    pub subject: Option<String>,
    pub model: Option<String>,
    pub stream_requested: bool,
    /// Index of the upstream chosen for the current attempt.
    pub upstream: Option<usize>,
    pub upstream_name: Option<String>,
    pub model_rewrite: Option<String>,
    pub fallbacks: Vec<usize>,
    /// Retries done so far (0 on the first attempt).
    pub retries: u32,
    /// Breaker ticket of the current attempt: (upstream index, permit).
    pub permit: Option<(usize, crate::upstream::Permit)>,
    /// Set when Jimini decided to retry; the delay is slept in `upstream_peer`.
    pub retry_delay: Option<Duration>,
    pub retry_pending: bool,
    /// The one retry of an idempotent request after a stale pooled connection was used.
    pub stale_retry_used: bool,
    /// `timeouts.total_ms` of the chosen upstream, from the first attempt.
    pub total_deadline: Option<Instant>,
    /// Model read from a pre-read body (model-based routing / Azure deployments).
    pub dispatch_model: Option<String>,
    /// Request body inspection.
    pub inspect_request: bool,
    pub request_gzip: bool,
    pub req_buf: BytesMut,
    /// The final body sent upstream, kept for replay on retry.
    pub final_request_body: Option<bytes::Bytes>,
    pub request_done: bool,
    pub evaluator: Option<Evaluator>,
    pub estimated_prompt_tokens: u64,
    pub rate_limit_headers: Vec<(&'static str, String)>,
    /// Global shadow: bodies pass untouched (framing included); copies are evaluated only.
    pub observe_only: bool,
    /// Set when Jimini answers the client itself.
    pub client_error: Option<ClientError>,
    /// Response side.
    pub response_mode: ResponseMode,
    pub status: u16,
    pub upstream_started: Option<Instant>,
    pub upstream_headers_at: Option<Instant>,
    pub first_token_at: Option<Instant>,
    pub stream_stopped: bool,
    /// The client socket is corked until the response completes (see `cork.rs`).
    pub corked: bool,
    pub usage: Option<Usage>,
    /// Time spent inside Jimini's own filters.
    pub overhead: Duration,
    pub request_scan_time: (Option<SystemTime>, Option<SystemTime>),
    pub response_scan_time: Duration,
    pub trace: Option<RequestTrace>,
    pub unscanned: bool,
    /// The audit record was already written (durability: ack).
    pub audited: bool,
    pub span: tracing::Span,
}

impl RequestCtx {
    pub fn new(snap: Arc<Snapshot>) -> Self {
        RequestCtx {
            snap,
            request_id: String::new(),
            started: Instant::now(),
            started_wall: SystemTime::now(),
            endpoint: Endpoint::Other,
            method: String::new(),
            path: String::new(),
            caller: None,
            subject: None,
            model: None,
            stream_requested: false,
            upstream: None,
            upstream_name: None,
            model_rewrite: None,
            fallbacks: Vec::new(),
            retries: 0,
            permit: None,
            retry_delay: None,
            retry_pending: false,
            stale_retry_used: false,
            total_deadline: None,
            dispatch_model: None,
            inspect_request: false,
            request_gzip: false,
            req_buf: BytesMut::new(),
            final_request_body: None,
            request_done: false,
            evaluator: None,
            estimated_prompt_tokens: 0,
            rate_limit_headers: Vec::new(),
            observe_only: false,
            client_error: None,
            response_mode: ResponseMode::Passthrough,
            status: 0,
            upstream_started: None,
            upstream_headers_at: None,
            first_token_at: None,
            stream_stopped: false,
            usage: None,
            overhead: Duration::ZERO,
            request_scan_time: (None, None),
            response_scan_time: Duration::ZERO,
            trace: None,
            unscanned: false,
            corked: false,
            audited: false,
            span: tracing::Span::none(),
        }
    }

    pub fn snap(&self) -> &Arc<Snapshot> {
        &self.snap
    }

    pub fn route(&self) -> &'static str {
        self.endpoint.route()
    }
}

impl RequestCtx {
    /// Run `f` and add its wall time to `overhead` (time spent inside Jimini's own filters).
    pub fn timed<T>(&mut self, f: impl FnOnce(&mut Self) -> T) -> T {
        let start = Instant::now();
        let out = f(self);
        self.overhead += start.elapsed();
        out
    }
}
