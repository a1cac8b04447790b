//! The request body: buffered (bounded) while pingora streams empty chunks upstream, then parsed
//! as OpenAI JSON at end of stream, scanned by the rule evaluator and sent rewritten — or
//! rejected with an OpenAI-shaped error before the upstream sees a byte of it.

use std::io::Read;
use std::time::SystemTime;

use bytes::Bytes;
use pingora::{Error, ErrorType, Result};

use crate::config::FailMode;
use crate::openai::{self, errors};
use crate::rules::{Direction, Evaluator, Scope};
use crate::telemetry::tracing::attr;

use super::app::App;
use super::ctx::{ClientError, RequestCtx};

pub fn on_chunk(
    app: &App,
    body: &mut Option<Bytes>,
    eos: bool,
    ctx: &mut RequestCtx,
) -> Result<()> {
    if !ctx.inspect_request {
        return Ok(());
    }
    let _entered = ctx.span.clone().entered();
    ctx.timed(|ctx| handle(app, body, eos, ctx))
}

fn handle(_app: &App, body: &mut Option<Bytes>, eos: bool, ctx: &mut RequestCtx) -> Result<()> {
    // A retry replays the body: send what we decided the first time.
    if ctx.request_done {
        if eos {
            *body = ctx.final_request_body.clone();
        } else {
            *body = Some(Bytes::new());
        }
        return Ok(());
    }
    let max = ctx.snap.config.body.max_bytes;
    if let Some(chunk) = body.as_ref() {
        if ctx.req_buf.len() + chunk.len() > max {
            if ctx.observe_only {
                // Shadow never blocks; stop observing and let the bytes flow.
                ctx.observe_only = false;
                ctx.inspect_request = false;
                ctx.unscanned = true;
                ctx.req_buf = Default::default();
                return Ok(());
            }
            return fail(ctx, super::admission::too_large(max));
        }
        ctx.req_buf.extend_from_slice(chunk);
    }
    if !eos {
        if !ctx.observe_only {
            // Hold every byte until the whole body is scanned; an empty chunk sends nothing.
            *body = Some(Bytes::new());
        }
        return Ok(());
    }
    ctx.request_done = true;
    ctx.request_scan_time.0 = Some(SystemTime::now());
    let raw = std::mem::take(&mut ctx.req_buf).freeze();
    let out = process(ctx, &raw);
    ctx.request_scan_time.1 = Some(SystemTime::now());
    let out = match out {
        Ok(out) => out,
        Err(err) => return fail(ctx, err),
    };
    if !ctx.observe_only {
        ctx.final_request_body = Some(out.clone());
        *body = Some(out);
    }
    Ok(())
}

/// A complete request body, decoded (gzip) for parsing — or forwarded unscanned (fail-open).
pub enum Decoded {
    Body(Bytes),
    Unscanned(Bytes),
}

/// Parse, evaluate and rewrite the complete body. Returns the bytes to send upstream.
fn process(ctx: &mut RequestCtx, raw: &Bytes) -> std::result::Result<Bytes, ClientError> {
    let decoded = match decode(ctx, raw)? {
        Decoded::Body(b) => b,
        Decoded::Unscanned(b) => return Ok(b),
    };
    match parse(ctx, &decoded)? {
        Some(req) => evaluate(ctx, &decoded, req),
        None => Ok(decoded.clone()),
    }
}

/// Decodes a gzip body (bounded), honouring `body.on_unparseable` when it cannot be.
pub fn decode(ctx: &mut RequestCtx, raw: &Bytes) -> std::result::Result<Decoded, ClientError> {
    if !ctx.request_gzip {
        return Ok(Decoded::Body(raw.clone()));
    }
    let max = ctx.snap.config.body.max_bytes;
    match gunzip_bounded(raw, max) {
        Ok(b) => Ok(Decoded::Body(Bytes::from(b))),
        Err(msg) => {
            let mode = ctx.snap.config.body.on_unparseable;
            unparseable(ctx, mode, raw, &msg).map(Decoded::Unscanned)
        }
    }
}

/// Parses a decoded body as OpenAI JSON, once: the parse is read for routing and then
/// rewritten. `Ok(None)`: unparseable and forwarded as is (fail-open, `ctx.unscanned`).
pub fn parse<'a>(
    ctx: &mut RequestCtx,
    decoded: &'a Bytes,
) -> std::result::Result<Option<openai::ParsedRequest<'a>>, ClientError> {
    match openai::parse_request(decoded) {
        Ok(req) => Ok(Some(req)),
        Err(e) => {
            let mode = ctx.snap.config.body.on_unparseable;
            unparseable(ctx, mode, decoded, &e.to_string()).map(|_| None)
        }
    }
}

/// Egress check of the model, then the rule evaluator over every content field. Returns the
/// body to send upstream, or the error to answer with.
pub fn evaluate(
    ctx: &mut RequestCtx,
    decoded: &Bytes,
    req: openai::ParsedRequest<'_>,
) -> std::result::Result<Bytes, ClientError> {
    let snap = ctx.snap.clone();
    let fail_mode = snap.config.body.on_unparseable;
    let info = req.info();
    ctx.model = info.model.clone();
    ctx.stream_requested = info.stream;
    if ctx.subject.is_none() {
        ctx.subject = info.user.clone();
    }
    if let Some(trace) = ctx.trace.as_mut() {
        if let Some(m) = &ctx.model {
            trace.set_attr(attr::GEN_AI_REQUEST_MODEL, m.as_str());
        }
    }

    // Egress: the chosen upstream must be allowed to serve this model.
    // Check the upstream actually selected (a fallback, when the primary's breaker is open).
    let selected = ctx.permit.map(|(i, _)| i).or(ctx.upstream);
    if let (Some(idx), Some(model)) = (selected, ctx.model.as_deref()) {
        if let Err(denied) = snap.gateway.check_model(&ctx.path, idx, model) {
            return Err(ClientError::new(
                403,
                &format!("Egress denied: {denied}"),
                errors::POLICY,
                Some("egress.model_not_allowed"),
                "egress",
            ));
        }
    }

    let mut ev = Evaluator::new(
        snap.rules.clone(),
        Scope {
            model: ctx.model.clone(),
            route: ctx.endpoint.route().to_string(),
            caller: ctx.caller.clone(),
        },
    );
    if let Some(block) = ev.check_model() {
        ctx.evaluator = Some(ev);
        return Err(policy_block(&block));
    }
    let rewritten = {
        let mut filter = |t: &str| ev.rewrite_text(Direction::Request, t);
        req.rewrite(ctx.endpoint, &mut filter, ctx.model_rewrite.as_deref())
    };
    let blocked = ev.blocked().cloned();
    ctx.evaluator = Some(ev);
    if let Some(block) = blocked {
        return Err(policy_block(&block));
    }
    match rewritten {
        Ok(Some(new_body)) => Ok(Bytes::from(new_body)),
        Ok(None) => Ok(decoded.clone()),
        Err(e) => unparseable(ctx, fail_mode, decoded, &e.to_string()),
    }
}

fn policy_block(block: &crate::rules::BlockInfo) -> ClientError {
    ClientError::new(
        403,
        &block.message,
        errors::POLICY,
        Some(&block.rule),
        "policy",
    )
}

fn unparseable(
    ctx: &mut RequestCtx,
    mode: FailMode,
    body: &Bytes,
    why: &str,
) -> std::result::Result<Bytes, ClientError> {
    tracing::warn!(reason = %why, "request body could not be inspected");
    match mode {
        FailMode::Open => {
            ctx.unscanned = true;
            Ok(body.clone())
        }
        FailMode::Closed => Err(ClientError::new(
            400,
            &format!("Jimini could not parse the request body: {why}"),
            errors::INVALID_REQUEST,
            Some("invalid_body"),
            "bad_request",
        )),
    }
}

/// Record the error for `fail_to_proxy` and abort the upstream request. The upstream has seen
/// headers but no body byte, and the half-sent connection is dropped.
fn fail<T>(ctx: &mut RequestCtx, err: ClientError) -> Result<T> {
    let status = err.status;
    ctx.client_error = Some(err);
    Err(Error::explain(
        ErrorType::HTTPStatus(status),
        "request rejected by jimini",
    ))
}

fn gunzip_bounded(raw: &[u8], max: usize) -> std::result::Result<Vec<u8>, String> {
    let mut out = Vec::new();
    let mut decoder = flate2::read::MultiGzDecoder::new(raw).take(max as u64 + 1);
    decoder
        .read_to_end(&mut out)
        .map_err(|e| format!("invalid gzip body: {e}"))?;
    if out.len() > max {
        return Err(format!("decompressed body exceeds {max} bytes"));
    }
    Ok(out)
}
