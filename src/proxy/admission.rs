//! The request head, before any byte of body: request id, endpoint, caller identity, route and
//! egress check, rate limits, body-size and encoding limits, audit back-pressure. Anything
//! rejected here never opens an upstream connection.

use pingora::protocols::http::v1::common::is_expect_continue_req;
use pingora::proxy::Session;

use crate::openai::{errors, Endpoint};

use super::app::App;
use super::ctx::{ClientError, RequestCtx};
use super::request_body;

/// Returns the error to answer with, or `None` to proceed to the upstream.
pub async fn admit(app: &App, session: &mut Session, ctx: &mut RequestCtx) -> Option<ClientError> {
    let snap = ctx.snap.clone();
    let req = session.req_header();
    ctx.request_id = request_id(
        req.headers
            .get("x-request-id")
            .and_then(|v| v.to_str().ok()),
    );
    ctx.span = tracing::info_span!("request", request_id = %ctx.request_id);
    ctx.method = req.method.as_str().to_string();
    let path = req.uri.path().to_string();
    ctx.path = path.clone();
    ctx.endpoint = Endpoint::from_path(&path);
    app.metrics.request_started();
    let context_header = |name: &str| req.headers.get(name).and_then(|v| v.to_str().ok());
    let traceparent = context_header("traceparent");
    let tracestate = traceparent.and_then(|_| context_header("tracestate"));
    let route = ctx.endpoint.route();
    ctx.trace = Some(
        app.tracing
            .start_request(traceparent, tracestate, route, &ctx.method),
    );

    // Caller identity: a Jimini caller key when configured, otherwise anonymous (or a declared
    // caller name, when keys are not required).
    let header = |name: &str| {
        session
            .req_header()
            .headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
    };
    let auth = header("authorization");
    let api_key = header("x-api-key").or_else(|| header("api-key"));
    let declared = header("x-jimini-caller");
    match snap
        .callers
        .identify_request(auth.as_deref(), api_key.as_deref(), declared.as_deref())
    {
        Ok(caller) => ctx.caller = Some(caller.name.to_string()),
        Err(e) => {
            return Some(ClientError::new(
                401,
                &format!("Jimini rejected the caller key: {e}"),
                errors::INVALID_REQUEST,
                Some(e.code()),
                "unauthenticated",
            ))
        }
    }
    ctx.subject = header("x-jimini-subject").filter(|s| !s.is_empty() && s.len() <= 256);

    // Audit back-pressure (on_full: block fails closed).
    if let Some(audit) = &app.audit {
        if !audit.accepting() {
            return Some(
                ClientError::new(
                    503,
                    "The audit log is not keeping up; requests are refused until it catches up.",
                    errors::UPSTREAM,
                    Some("audit_backpressure"),
                    "audit_backpressure",
                )
                .with_header("retry-after", "1".into()),
            );
        }
    }

    // Body limits and encoding, known from the headers alone.
    let req = session.req_header();
    let content_length = req
        .headers
        .get("content-length")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok());
    let inspectable =
        snap.config.body.inspect && ctx.method == "POST" && inspects_body(ctx.endpoint);
    if inspectable {
        if let Some(len) = content_length {
            if len > snap.config.body.max_bytes as u64 {
                return Some(too_large(snap.config.body.max_bytes));
            }
        }
        match req
            .headers
            .get("content-encoding")
            .and_then(|v| v.to_str().ok())
            .map(|v| v.trim().to_ascii_lowercase())
            .as_deref()
        {
            None | Some("") | Some("identity") => {}
            Some("gzip") | Some("x-gzip") => ctx.request_gzip = true,
            Some(other) => {
                if snap.config.body.on_unparseable == crate::config::FailMode::Closed {
                    return Some(ClientError::new(
                        415,
                        &format!(
                            "Content-Encoding `{other}` is not supported; send identity or gzip."
                        ),
                        errors::INVALID_REQUEST,
                        Some("unsupported_encoding"),
                        "bad_request",
                    ));
                }
                ctx.unscanned = true;
            }
        }
        ctx.inspect_request = !ctx.unscanned;
        ctx.observe_only = snap.shadow && !ctx.request_gzip;
    }

    // Rate limits: requests now, tokens estimated from the body size.
    ctx.estimated_prompt_tokens =
        crate::upstream::estimate_prompt_tokens(content_length.unwrap_or(0) as usize);
    let caller = ctx.caller.clone().unwrap_or_default();
    let verdict = app
        .limiter
        .check(&caller, ctx.estimated_prompt_tokens)
        .await;
    ctx.rate_limit_headers = verdict.headers.clone();
    if !verdict.allowed {
        app.metrics
            .rate_limited(if verdict.error_type() == "tokens" {
                "tpm"
            } else {
                "rpm"
            });
        let mut err = ClientError::new(
            429,
            &verdict.message(),
            verdict.error_type(),
            Some(crate::upstream::Decision::CODE),
            "rate_limit",
        )
        .with_header("retry-after", verdict.retry_after_secs().to_string());
        for (k, v) in verdict.headers {
            err = err.with_header(k, v);
        }
        return Some(err);
    }

    // Small bodies (the common case) are read and inspected right here, before any upstream
    // contact: a blocked request never opens a connection, routing can use the model, and the
    // upstream gets an exact Content-Length. Pingora replays the body from its 64 KiB buffer to
    // `request_body_filter`, which sends the rewritten bytes. Larger or chunked bodies are
    // inspected while they stream (request_body.rs) and routed by path.
    // One parse of the body: read here for routing, rewritten after it.
    let mut decoded = None;
    if ctx.inspect_request {
        if let Some(len) = content_length.filter(|l| *l <= PREREAD_LIMIT as u64) {
            let raw = match preread(session, len as usize).await {
                Ok(raw) => raw,
                Err(msg) => {
                    return Some(ClientError::new(
                        400,
                        &msg,
                        errors::INVALID_REQUEST,
                        Some("invalid_body"),
                        "bad_request",
                    ))
                }
            };
            ctx.request_scan_time.0 = Some(std::time::SystemTime::now());
            match request_body::decode(ctx, &raw) {
                Ok(d) => decoded = Some(d),
                Err(err) => return Some(err),
            }
        }
    }
    let parsed = match &decoded {
        Some(request_body::Decoded::Body(body)) => match request_body::parse(ctx, body) {
            Ok(req) => {
                if let Some(req) = &req {
                    ctx.dispatch_model = req.info().model.clone();
                }
                req
            }
            Err(err) => return Some(err),
        },
        _ => None,
    };
    match snap.gateway.route(&path, ctx.dispatch_model.as_deref()) {
        Ok(target) => {
            ctx.upstream = Some(target.upstream);
            ctx.model_rewrite = target.model_rewrite.clone();
            ctx.fallbacks = target.fallbacks.clone();
            ctx.upstream_name = Some(snap.gateway.name(target.upstream).to_string());
        }
        Err(denied) => {
            return Some(ClientError::new(
                403,
                &format!("Egress denied: {}", denied.reason),
                errors::POLICY,
                Some(crate::upstream::EgressDenied::CODE),
                "egress",
            ))
        }
    }

    if let Some(d) = &decoded {
        let out = match (d, parsed) {
            (request_body::Decoded::Body(body), Some(req)) => {
                request_body::evaluate(ctx, body, req)
            }
            (request_body::Decoded::Body(body) | request_body::Decoded::Unscanned(body), _) => {
                Ok(body.clone())
            }
        };
        ctx.request_scan_time.1 = Some(std::time::SystemTime::now());
        match out {
            Ok(body) => {
                ctx.final_request_body = Some(body);
                ctx.request_done = true;
            }
            Err(err) => return Some(err),
        }
    }

    None
}

pub fn too_large(max: usize) -> ClientError {
    ClientError::new(
        413,
        &format!("The request body exceeds the configured limit of {max} bytes."),
        errors::INVALID_REQUEST,
        Some("request_too_large"),
        "too_large",
    )
}

/// Honour a well-formed client request id (so logs correlate across hops); otherwise mint one.
fn request_id(incoming: Option<&str>) -> String {
    match incoming {
        Some(id)
            if !id.is_empty()
                && id.len() <= 128
                && id.bytes().all(|b| {
                    b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b':')
                }) =>
        {
            id.to_string()
        }
        _ => hex::encode(rand::random::<[u8; 12]>()),
    }
}

/// Endpoints whose bodies carry content Jimini scans.
pub fn inspects_body(ep: Endpoint) -> bool {
    matches!(
        ep,
        Endpoint::ChatCompletions
            | Endpoint::Completions
            | Endpoint::Responses
            | Endpoint::Embeddings
            | Endpoint::AnthropicMessages
    )
}

/// Pingora's replay buffer size: a body read in `request_filter` is resent from it.
const PREREAD_LIMIT: usize = 64 * 1024;

/// Read a small body now; pingora replays it from its retry buffer to `request_body_filter`.
async fn preread(session: &mut Session, len: usize) -> Result<bytes::Bytes, String> {
    // A client that sent `Expect: 100-continue` waits for this before its body (pingora never
    // answers it; the upstream, which would, has not been contacted yet).
    if len > 0 && is_expect_continue_req(session.req_header()) {
        session
            .write_continue_response()
            .await
            .map_err(|e| format!("cannot answer Expect: 100-continue: {e}"))?;
    }
    session.as_mut().enable_retry_buffering();
    let mut buf = bytes::BytesMut::with_capacity(len);
    loop {
        match session.read_request_body().await {
            Ok(Some(chunk)) => {
                buf.extend_from_slice(&chunk);
                if buf.len() > PREREAD_LIMIT {
                    return Err("request body larger than its Content-Length".into());
                }
            }
            Ok(None) => break,
            Err(e) => return Err(format!("cannot read the request body: {e}")),
        }
    }
    Ok(buf.freeze())
}
