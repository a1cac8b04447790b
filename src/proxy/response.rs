//! The response: choose how to handle the body from the upstream's headers (JSON buffered and
//! rewritten, SSE rewritten event by event, anything else untouched), then run each chunk
//! through the evaluator. In global shadow mode bodies pass byte for byte while a copy is
//! evaluated for the record.

use std::time::Instant;

use bytes::{Bytes, BytesMut};
use pingora::http::ResponseHeader;
use pingora::proxy::Session;
use pingora::Result;

use crate::config::FailMode;
use crate::openai::{self, errors, Endpoint, SseRewriter, StreamCut, StreamFilter};
use crate::rules::{Direction, Evaluator};

use super::app::App;
use super::ctx::{RequestCtx, ResponseMode};

/// Bridges the SSE rewriter to the evaluator's response direction.
pub struct StreamAdapter<'a> {
    pub ev: &'a mut Evaluator,
}

impl StreamFilter for StreamAdapter<'_> {
    fn push(&mut self, key: u64, chunk: &str) -> String {
        self.ev.stream_push(Direction::Response, key, chunk)
    }
    fn finish(&mut self, key: u64) -> String {
        self.ev.stream_finish(Direction::Response, key)
    }
    fn whole(&mut self, text: &str) -> Option<String> {
        self.ev.rewrite_text(Direction::Response, text)
    }
    fn stop(&self) -> Option<(String, String)> {
        self.ev
            .blocked()
            .map(|b| (b.rule.clone(), b.message.clone()))
    }
}

pub fn on_headers(
    app: &App,
    session: &mut Session,
    resp: &mut ResponseHeader,
    ctx: &mut RequestCtx,
) -> Result<()> {
    if resp.status.is_informational() {
        return Ok(());
    }
    let _entered = ctx.span.clone().entered();
    ctx.timed(|ctx| choose_mode(resp, ctx));
    if matches!(ctx.response_mode, ResponseMode::Refused(_)) {
        // The upstream did answer: refusing what cannot be inspected is this proxy's policy,
        // not a sign of the upstream's health (as a 5xx it opened the breaker for everyone).
        super::peer::record_outcome(app, ctx, ctx.status, None);
        ctx.status = 502;
    }
    if session.req_header().version < http::Version::HTTP_11 {
        // HTTP/1.0 has no chunked coding (RFC 9112 §6.1): a body of unknown length (rewritten
        // here, or close-delimited upstream, which pingora turned chunked) ends with the
        // connection instead.
        resp.remove_header("transfer-encoding");
        if resp.headers.get("content-length").is_none() {
            session.set_keepalive(None);
        }
    }
    // A JSON body held whole until its end: keep the head back until then, too.
    if matches!(ctx.response_mode, ResponseMode::Json(_)) && !ctx.observe_only && !ctx.corked {
        ctx.corked = super::cork::set(session, true);
    }
    Ok(())
}

/// Decide from the upstream's response head how the body is handled.
fn choose_mode(resp: &mut ResponseHeader, ctx: &mut RequestCtx) {
    {
        ctx.status = resp.status.as_u16();
        if ctx.upstream_headers_at.is_none() {
            ctx.upstream_headers_at = Some(Instant::now());
        }
        let _ = resp.insert_header("x-request-id", ctx.request_id.as_str());
        for (k, v) in &ctx.rate_limit_headers {
            let _ = resp.insert_header(*k, v.as_str());
        }
        let content_type = resp
            .headers
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_ascii_lowercase();
        let encoded = resp
            .headers
            .get("content-encoding")
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| !v.eq_ignore_ascii_case("identity"));
        let scannable_endpoint = !matches!(
            ctx.endpoint,
            Endpoint::Other | Endpoint::Models | Endpoint::Embeddings
        );
        // An evaluator exists when the request body was inspected; responses to uninspected
        // requests (GET, unknown paths, fail-open) are not rewritten.
        let scanning = scannable_endpoint && ctx.evaluator.is_some();
        let success = ctx.status < 300;
        ctx.response_mode = if !scanning {
            ResponseMode::Passthrough
        } else if encoded {
            // gzip, br and zstd were decoded by pingora already (see peer.rs); this encoding
            // it cannot decode, so the body cannot be read.
            ctx.unscanned = true;
            match ctx.snap.config.body.on_unparseable {
                // Shadow mode changes no byte of the traffic: recorded as unscanned only.
                _ if ctx.observe_only => ResponseMode::Passthrough,
                FailMode::Open => {
                    tracing::warn!(
                        "upstream used an encoding Jimini cannot decode; response not scanned"
                    );
                    ResponseMode::Passthrough
                }
                FailMode::Closed => {
                    tracing::warn!(
                        "upstream used an encoding Jimini cannot decode; response refused"
                    );
                    refuse_head(resp);
                    ResponseMode::Refused(Some(Bytes::from(errors::body(
                        "The upstream response uses a Content-Encoding this proxy cannot inspect.",
                        errors::UPSTREAM,
                        Some(errors::CODE_UNINSPECTABLE_RESPONSE),
                    ))))
                }
            }
        } else if content_type.starts_with("text/event-stream") {
            ResponseMode::Sse(Box::new(SseRewriter::new(ctx.endpoint)))
        } else if content_type.starts_with("application/json") {
            // Error bodies too: their message may quote the request.
            ResponseMode::Json(BytesMut::new())
        } else if success {
            // No or another content type on a success: what the client asked for decides how
            // it is read (an SDK parses the body by that, not by the header), so a stream in
            // `text/plain` is still scanned; a body that then does not parse is unparseable.
            if ctx.stream_requested {
                ResponseMode::Sse(Box::new(SseRewriter::new(ctx.endpoint)))
            } else {
                ResponseMode::Json(BytesMut::new())
            }
        } else {
            ResponseMode::Passthrough
        };
        let rewriting =
            !matches!(ctx.response_mode, ResponseMode::Passthrough) && !ctx.observe_only;
        if rewriting {
            resp.remove_header("content-length");
            let _ = resp.insert_header("transfer-encoding", "chunked");
        }
    }
}

/// Turns the upstream's head into the head of a 502 JSON error (the body follows from
/// [`ResponseMode::Refused`]).
fn refuse_head(resp: &mut ResponseHeader) {
    let _ = resp.set_status(502);
    for h in ["content-encoding", "content-length", "content-type", "etag"] {
        resp.remove_header(h);
    }
    let _ = resp.insert_header("content-type", "application/json");
}

pub fn on_chunk(
    app: &App,
    body: &mut Option<Bytes>,
    eos: bool,
    ctx: &mut RequestCtx,
) -> Result<()> {
    if !eos && ctx.total_deadline.is_some_and(|d| Instant::now() > d) {
        return total_timeout(body, ctx);
    }
    if let ResponseMode::Refused(error) = &mut ctx.response_mode {
        *body = Some(error.take().unwrap_or_default());
        if eos {
            let status = ctx.status;
            super::finish::audit_before_completion(app, ctx, status);
        }
        return Ok(());
    }
    if matches!(ctx.response_mode, ResponseMode::Passthrough) {
        if ctx.first_token_at.is_none() && body.as_ref().is_some_and(|b| !b.is_empty()) {
            ctx.first_token_at = Some(Instant::now());
        }
        if eos {
            let status = ctx.status;
            super::finish::audit_before_completion(app, ctx, status);
        }
        return Ok(());
    }
    let _entered = ctx.span.clone().entered();
    let started = Instant::now();
    ctx.timed(|ctx| {
        if ctx.observe_only {
            observe(body, eos, ctx);
        } else {
            rewrite(app, body, eos, ctx);
        }
    });
    ctx.response_scan_time += started.elapsed();
    if eos {
        let status = ctx.status;
        super::finish::audit_before_completion(app, ctx, status);
    }
    Ok(())
}

/// `timeouts.total_ms` elapsed mid-response: a stream ends with an error event (and the
/// connection is cut on the next chunk); anything else is cut.
fn total_timeout(body: &mut Option<Bytes>, ctx: &mut RequestCtx) -> Result<()> {
    if let ResponseMode::Sse(rw) = &mut ctx.response_mode {
        if !rw.stopped() && !ctx.stream_stopped {
            let out = match ctx.evaluator.as_mut() {
                Some(ev) => rw.abort(StreamCut::TimedOut, &mut StreamAdapter { ev }),
                None => StreamCut::TimedOut.error_event(ctx.endpoint),
            };
            ctx.stream_stopped = true;
            *body = Some(Bytes::from(out));
            return Ok(());
        }
    }
    Err(pingora::Error::explain(
        pingora::ErrorType::ReadTimedout,
        "total response time limit exceeded",
    ))
}

/// Shadow: evaluate a copy, emit the original bytes.
fn observe(body: &mut Option<Bytes>, eos: bool, ctx: &mut RequestCtx) {
    if ctx.first_token_at.is_none() && body.as_ref().is_some_and(|b| !b.is_empty()) {
        ctx.first_token_at = Some(Instant::now());
    }
    let Some(ev) = ctx.evaluator.as_mut() else {
        return;
    };
    let max = ctx.snap.config.body.max_response_bytes;
    match &mut ctx.response_mode {
        ResponseMode::Sse(rw) => {
            let mut filter = StreamAdapter { ev };
            if let Some(chunk) = body.as_ref() {
                let _ = rw.push(chunk, &mut filter);
            }
            if eos {
                let _ = rw.finish(&mut filter);
                ctx.usage = rw.usage();
            }
        }
        ResponseMode::Json(buf) => {
            if let Some(chunk) = body.as_ref() {
                if buf.len() + chunk.len() <= max {
                    buf.extend_from_slice(chunk);
                }
            }
            if eos {
                let mut filter = |t: &str| ev.rewrite_text(Direction::Response, t);
                let (_, usage) =
                    openai::rewrite_response_with_usage(ctx.endpoint, buf, &mut filter);
                ctx.usage = usage;
            }
        }
        ResponseMode::Passthrough | ResponseMode::Refused(_) => {}
    }
}

fn rewrite(_app: &App, body: &mut Option<Bytes>, eos: bool, ctx: &mut RequestCtx) {
    let max = ctx.snap.config.body.max_response_bytes;
    let fail_mode = ctx.snap.config.body.on_unparseable;
    let endpoint = ctx.endpoint;
    let Some(ev) = ctx.evaluator.as_mut() else {
        return;
    };
    match &mut ctx.response_mode {
        ResponseMode::Sse(rw) => {
            if rw.stopped() {
                // A policy stop already ended the client's stream; drop the rest.
                *body = Some(Bytes::new());
                return;
            }
            let mut filter = StreamAdapter { ev };
            let mut out = match body.as_ref() {
                Some(chunk) => rw.push(chunk, &mut filter),
                None => Vec::new(),
            };
            if eos && !rw.stopped() {
                out.extend_from_slice(&rw.finish(&mut filter));
            }
            if rw.stopped() {
                ctx.stream_stopped = true;
            }
            if eos {
                ctx.usage = rw.usage();
            }
            if ctx.first_token_at.is_none() && !out.is_empty() {
                ctx.first_token_at = Some(Instant::now());
            }
            *body = Some(Bytes::from(out));
        }
        ResponseMode::Json(buf) => {
            if let Some(chunk) = body.as_ref() {
                if buf.len() + chunk.len() > max {
                    if fail_mode == FailMode::Open {
                        // Too large to inspect: release what we held and pass the rest through.
                        let mut out = std::mem::take(buf);
                        out.extend_from_slice(chunk);
                        *body = Some(out.freeze());
                        ctx.unscanned = true;
                        ctx.response_mode = ResponseMode::Passthrough;
                        return;
                    }
                    // The head went out already: the body becomes the error object, and no
                    // byte of the upstream's (held or still to come) reaches the client.
                    ctx.unscanned = true;
                    *body = Some(Bytes::from(errors::body(
                        "The upstream response exceeds the inspection limit.",
                        errors::UPSTREAM,
                        Some("response_too_large"),
                    )));
                    ctx.response_mode = ResponseMode::Refused(None);
                    return;
                }
                buf.extend_from_slice(chunk);
            }
            if !eos {
                *body = Some(Bytes::new());
                return;
            }
            let whole = std::mem::take(buf).freeze();
            let result = {
                let mut filter = |t: &str| ev.rewrite_text(Direction::Response, t);
                let (result, usage) =
                    openai::rewrite_response_with_usage(endpoint, &whole, &mut filter);
                ctx.usage = usage;
                result
            };
            let out = if let Some(block) = ev.blocked() {
                Bytes::from(errors::body(
                    &block.message,
                    errors::POLICY,
                    Some(&block.rule),
                ))
            } else {
                match result {
                    Ok(Some(new_body)) => Bytes::from(new_body),
                    Ok(None) => whole,
                    Err(e) => {
                        tracing::warn!(error = %e, "upstream JSON response could not be parsed");
                        ctx.unscanned = true;
                        match fail_mode {
                            FailMode::Open => whole,
                            FailMode::Closed => Bytes::from(errors::body(
                                "The upstream response could not be inspected.",
                                errors::UPSTREAM,
                                Some("unparseable_upstream_response"),
                            )),
                        }
                    }
                }
            };
            if ctx.first_token_at.is_none() {
                ctx.first_token_at = Some(Instant::now());
            }
            *body = Some(out);
        }
        ResponseMode::Passthrough | ResponseMode::Refused(_) => {}
    }
}
