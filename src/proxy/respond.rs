//! Responses Jimini writes itself: OpenAI-shaped errors before any upstream contact, the mapping
//! of proxy failures to 4xx/5xx bodies, and the clean end of a stream whose upstream died midway.

use bytes::Bytes;
use pingora::http::ResponseHeader;
use pingora::proxy::{FailToProxy, Session};
use pingora::{Error, ErrorSource, ErrorType};

use crate::openai::{errors, StreamCut};

use super::app::App;
use super::ctx::{ClientError, RequestCtx, ResponseMode};

impl ClientError {
    pub fn new(
        status: u16,
        message: &str,
        kind: &str,
        code: Option<&str>,
        reason: &'static str,
    ) -> Self {
        ClientError {
            status,
            body: errors::body(message, kind, code),
            headers: Vec::new(),
            reason,
        }
    }

    pub fn with_header(mut self, name: &'static str, value: String) -> Self {
        self.headers.push((name, value));
        self
    }
}

/// Write a complete error response. Used from `request_filter` (before the request body was
/// read), so the connection is not reused: the unread body would corrupt the next request.
pub async fn write_client_error(session: &mut Session, err: &ClientError, request_id: &str) {
    let mut header = match ResponseHeader::build(err.status, Some(5 + err.headers.len())) {
        Ok(h) => h,
        Err(e) => {
            tracing::error!(error = %e, "cannot build error response header");
            return;
        }
    };
    let _ = header.insert_header("content-type", "application/json");
    let _ = header.insert_header("content-length", err.body.len().to_string());
    if !request_id.is_empty() {
        let _ = header.insert_header("x-request-id", request_id);
    }
    for (name, value) in &err.headers {
        let _ = header.insert_header(*name, value.as_str());
    }
    session.set_keepalive(None);
    if let Err(e) = session.write_response_header(Box::new(header), false).await {
        tracing::debug!(error = %e, "client went away before the error header");
        return;
    }
    if let Err(e) = session
        .write_response_body(Some(Bytes::from(err.body.clone())), true)
        .await
    {
        tracing::debug!(error = %e, "client went away before the error body");
    }
}

/// Map a proxy failure to what the client sees. If the response had already started (a stream
/// cut midway), end it cleanly with an SSE error event instead of leaving the client hanging.
pub async fn on_fail(
    app: &App,
    session: &mut Session,
    e: &Error,
    ctx: &mut RequestCtx,
) -> FailToProxy {
    if session.response_written().is_some() {
        let tail = stream_cut_tail(app, ctx, e);
        // A stream the client already has whole (`[DONE]` went out) still ends cleanly.
        let complete = matches!(&ctx.response_mode, ResponseMode::Sse(rw) if rw.done());
        let status = ctx.status;
        super::finish::audit_before_completion(app, ctx, status);
        if !tail.is_empty() || complete {
            let _ = session
                .write_response_body(Some(Bytes::from(tail)), true)
                .await;
        }
        return FailToProxy {
            error_code: 0,
            can_reuse_downstream: false,
        };
    }
    let err = ctx.client_error.clone().unwrap_or_else(|| classify(e, ctx));
    let code = err.status;
    ctx.client_error = Some(err.clone());
    super::finish::audit_before_completion(app, ctx, code);
    write_client_error(session, &err, &ctx.request_id).await;
    ctx.client_error = Some(err);
    FailToProxy {
        error_code: code,
        can_reuse_downstream: false,
    }
}

/// The bytes that end a response whose upstream failed after headers were sent.
fn stream_cut_tail(_app: &App, ctx: &mut RequestCtx, e: &Error) -> Vec<u8> {
    let mut out = Vec::new();
    if let ResponseMode::Sse(rw) = &mut ctx.response_mode {
        if !rw.stopped() && !ctx.stream_stopped {
            match ctx.evaluator.as_mut() {
                Some(ev) => {
                    let mut filter = super::response::StreamAdapter { ev };
                    out.extend_from_slice(&rw.abort(StreamCut::Interrupted, &mut filter));
                }
                None => out.extend_from_slice(&StreamCut::Interrupted.error_event(ctx.endpoint)),
            }
        }
        ctx.stream_stopped = true;
    }
    tracing::warn!(error = %e, "upstream failed mid-response; ended the client stream");
    out
}

/// Status and body for a failure before any response byte reached the client.
fn classify(e: &Error, ctx: &RequestCtx) -> ClientError {
    let upstream = ctx.upstream_name.as_deref().unwrap_or("upstream");
    match e.etype() {
        ErrorType::HTTPStatus(code) => {
            let code = *code;
            let (msg, kind, reason) = match code {
                400 => (
                    "The request body could not be parsed.",
                    errors::INVALID_REQUEST,
                    "bad_request",
                ),
                413 => (
                    "The request body exceeds the configured limit.",
                    errors::INVALID_REQUEST,
                    "too_large",
                ),
                415 => (
                    "Unsupported Content-Encoding.",
                    errors::INVALID_REQUEST,
                    "bad_request",
                ),
                503 => (
                    "The upstream is unavailable.",
                    errors::UPSTREAM,
                    "unavailable",
                ),
                504 => ("The upstream timed out.", errors::UPSTREAM, "timeout"),
                _ => (
                    "The upstream request failed.",
                    errors::UPSTREAM,
                    "upstream_error",
                ),
            };
            ClientError::new(code, msg, kind, None, reason)
        }
        ErrorType::ConnectTimedout | ErrorType::ReadTimedout | ErrorType::WriteTimedout => {
            ClientError::new(
                504,
                &format!("Timed out waiting for upstream `{upstream}`."),
                errors::UPSTREAM,
                Some("upstream_timeout"),
                "timeout",
            )
        }
        _ if e.esource() == &ErrorSource::Downstream => ClientError::new(
            400,
            "The request could not be read.",
            errors::INVALID_REQUEST,
            None,
            "bad_request",
        ),
        _ => ClientError::new(
            502,
            &format!("Upstream `{upstream}` is unreachable or failed."),
            errors::UPSTREAM,
            Some("upstream_unavailable"),
            "upstream_error",
        ),
    }
}
