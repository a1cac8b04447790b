//! Upstream selection and the upstream side of the exchange: route → breaker (with fallback) →
//! peer with timeouts, the upstream request head (path, Host, credentials, trace context), and
//! the retry decisions (budgeted, backoff with jitter, only before the client saw a byte).

use std::sync::Arc;
use std::time::Instant;

use pingora::http::{RequestHeader, ResponseHeader};
use pingora::prelude::HttpPeer;
use pingora::proxy::Session;
use pingora::{Error, ErrorType, Result};
use serde_json::Value;

use crate::openai::errors;
use crate::telemetry::Metrics;
use crate::upstream::target::strips_client_auth;
use crate::upstream::{
    self, auth_header, upstream_request_path, BreakerState, ConfigError, EgressDenied, FailureKind,
    LoadOptions, Outcome, RetryCause, RetryDecision, RouteConfig, RouteTarget, Router, SystemClock,
    UpstreamConfig, UpstreamKind, UpstreamSet,
};

use super::app::App;
use super::ctx::{ClientError, RequestCtx};

/// Hop-by-hop headers (RFC 9110 §7.6.1) never forwarded upstream.
const HOP_BY_HOP: [&str; 7] = [
    "connection",
    "keep-alive",
    "proxy-connection",
    "te",
    "trailer",
    "upgrade",
    "proxy-authorization",
];

/// Routing table plus upstream runtimes (breakers, budgets, resolved addresses) of one snapshot.
pub struct Gateway {
    router: Router,
    set: UpstreamSet,
    needs_model: bool,
}

fn process_env(k: &str) -> Option<String> {
    std::env::var(k).ok()
}

impl Gateway {
    /// Build and resolve DNS once (blocking; at start-up and reload, never per request).
    /// Breakers and budgets carry over from `previous` for unchanged upstreams.
    pub fn new(
        upstreams: &[UpstreamConfig],
        routes: &[RouteConfig],
        previous: Option<&Gateway>,
    ) -> Result<Gateway, ConfigError> {
        let opts = LoadOptions {
            env: &process_env,
            clock: SystemClock::shared(),
            previous: previous.map(|g| &g.set),
        };
        let mut set = UpstreamSet::with_options(upstreams, &opts)?;
        for (name, e) in set.resolve_all() {
            tracing::warn!(upstream = %name, error = %e, "cannot resolve upstream host now; will resolve per connection");
        }
        let router = Router::new(routes, upstreams)?;
        let needs_model = routes.iter().any(|r| r.model.is_some())
            || upstreams.iter().any(|u| u.kind == UpstreamKind::Azure);
        Ok(Gateway {
            router,
            set,
            needs_model,
        })
    }

    /// Whether dispatch depends on the body's `model` (model routes, Azure deployments).
    pub fn needs_model(&self) -> bool {
        self.needs_model
    }

    pub fn route(&self, path: &str, model: Option<&str>) -> Result<RouteTarget, EgressDenied> {
        self.router.route(path, model)
    }

    pub fn name(&self, idx: usize) -> &str {
        self.set
            .get(idx)
            .map(|u| u.name.as_str())
            .unwrap_or("unknown")
    }

    /// Egress check of the body's model against the route chosen from the head: the model must
    /// be allowed and must route to the upstream already chosen (or one of its fallbacks).
    pub fn check_model(&self, path: &str, chosen: usize, model: &str) -> Result<(), String> {
        match self.router.route(path, Some(model)) {
            Err(denied) => Err(denied.reason),
            Ok(t) if t.upstream == chosen || t.fallbacks.contains(&chosen) => Ok(()),
            Ok(t) => Err(format!(
                "model `{model}` routes to upstream `{}`, but the request was dispatched before its body was read (bodies over 64 KiB cannot be routed by model)",
                self.name(t.upstream)
            )),
        }
    }

    pub fn ready(&self) -> bool {
        self.set.ready_among(&self.router.reachable_upstreams())
    }

    pub fn snapshot(&self) -> Value {
        serde_json::to_value(self.set.snapshot()).unwrap_or(Value::Null)
    }

    pub fn reset_breaker(&self, name: &str) -> bool {
        match self.set.get_by_name(name) {
            Some(up) => {
                up.breaker.reset();
                true
            }
            None => false,
        }
    }

    pub fn export_breaker_states(&self, metrics: &Metrics) {
        for up in self.set.iter() {
            let v = match up.breaker.state() {
                BreakerState::Closed => 0,
                BreakerState::HalfOpen => 1,
                BreakerState::Open => 2,
            };
            metrics.set_breaker_state(&up.name, v);
        }
    }

    fn upstream(&self, idx: usize) -> Option<&Arc<upstream::UpstreamRuntime>> {
        self.set.get(idx)
    }
}

fn internal(msg: &'static str) -> Box<Error> {
    Error::explain(ErrorType::InternalError, msg)
}

/// `upstream_peer`: pick the first upstream of the route's chain whose breaker admits the request.
pub async fn select(
    app: &App,
    session: &mut Session,
    ctx: &mut RequestCtx,
) -> Result<Box<HttpPeer>> {
    if let Some(delay) = ctx.retry_delay.take() {
        tokio::time::sleep(delay).await;
    }
    let snap = ctx.snap.clone();
    let primary = ctx.upstream.ok_or_else(|| internal("no route chosen"))?;
    let target = RouteTarget {
        upstream: primary,
        model_rewrite: ctx.model_rewrite.clone(),
        fallbacks: ctx.fallbacks.clone(),
        route: None,
    };
    let (idx, permit) = match snap.gateway.set.acquire(&target) {
        Ok(x) => x,
        Err(open) => {
            let secs = open.retry_after.as_secs().max(1);
            ctx.client_error = Some(
                ClientError::new(
                    503,
                    &format!(
                        "Upstream `{}` is unavailable (circuit breaker open); retry after {secs}s.",
                        snap.gateway.name(primary)
                    ),
                    errors::UPSTREAM,
                    Some("upstream_circuit_open"),
                    "breaker_open",
                )
                .with_header("retry-after", secs.to_string()),
            );
            app.metrics
                .upstream_error(snap.gateway.name(primary), "breaker_open");
            return Err(Error::explain(
                ErrorType::HTTPStatus(503),
                "circuit breaker open",
            ));
        }
    };
    let up = snap
        .gateway
        .upstream(idx)
        .ok_or_else(|| internal("upstream index out of range"))?;
    if ctx.retries == 0 {
        up.budget.deposit();
    }
    ctx.permit = Some((idx, permit));
    ctx.upstream_name = Some(up.name.clone());
    if ctx.upstream_started.is_none() {
        ctx.upstream_started = Some(Instant::now());
    }
    let sni = if up.target.is_ip() {
        String::new()
    } else {
        up.target.sni.clone()
    };
    let mut peer = match up.pick_addr() {
        Some(addr) => HttpPeer::new(addr, up.target.tls, sni),
        // Unresolved at load: connect by name (the configured host, nothing else).
        None => HttpPeer::new(up.target.authority(), up.target.tls, sni),
    };
    let t = up.timeouts();
    if ctx.total_deadline.is_none() {
        ctx.total_deadline = Some(ctx.started + t.total());
    }
    peer.options.connection_timeout = Some(t.connect());
    peer.options.total_connection_timeout = Some(t.connect() * 2);
    // One read timeout covers waiting for the first byte and the gaps between stream chunks.
    let mut read_timeout = t.first_byte().max(t.idle());
    if ctx.inspect_request && !ctx.request_done && !session.is_body_empty() {
        // The body is inspected as it streams and sent at its end: pingora's read timer runs
        // from the request head on, so the upload's whole duration would count as the
        // upstream's silence. The client's own read timeout bounds a stalled upload; the
        // total limit bounds the rest.
        let left = ctx
            .total_deadline
            .map(|d| d.saturating_duration_since(Instant::now()))
            .unwrap_or_default();
        read_timeout = read_timeout.max(left);
    }
    peer.options.read_timeout = Some(read_timeout);
    peer.options.write_timeout = Some(t.idle());
    Ok(Box::new(peer))
}

/// `upstream_request_filter`: the request head as the upstream must see it.
pub fn prepare_request(
    _app: &App,
    session: &mut Session,
    req: &mut RequestHeader,
    ctx: &mut RequestCtx,
) -> Result<()> {
    let snap = ctx.snap.clone();
    let idx = ctx
        .permit
        .map(|(i, _)| i)
        .ok_or_else(|| internal("no upstream selected"))?;
    let up = snap
        .gateway
        .upstream(idx)
        .ok_or_else(|| internal("upstream index out of range"))?;
    let client_pq = session
        .req_header()
        .uri
        .path_and_query()
        .map(|pq| pq.as_str().to_string())
        .unwrap_or_else(|| "/".into());
    let model = ctx
        .model_rewrite
        .as_deref()
        .or(ctx.dispatch_model.as_deref());
    let path = upstream_request_path(up, &client_pq, model);
    let uri: http::Uri = path
        .parse()
        .map_err(|_| Error::explain(ErrorType::InternalError, "invalid upstream path"))?;
    req.set_uri(uri);
    req.insert_header("host", up.target.host_header.as_str())?;
    for h in HOP_BY_HOP {
        req.remove_header(h);
    }
    // Credentials: inject the vaulted key or pass the caller's through, per upstream.
    let caller_auth = session
        .req_header()
        .headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    if strips_client_auth(up) {
        for h in upstream::target::CLIENT_AUTH_HEADERS {
            req.remove_header(h);
        }
    }
    if let Some((name, value)) = auth_header(up, caller_auth.as_deref()) {
        req.insert_header(name.to_string(), value)?;
    }
    // Jimini's own hints never leave the gateway.
    req.remove_header("x-jimini-caller");
    req.remove_header("x-jimini-subject");
    req.insert_header("x-request-id", ctx.request_id.as_str())?;
    if let Some(tp) = ctx.trace.as_ref().and_then(|t| t.upstream_traceparent()) {
        req.insert_header("traceparent", tp)?;
    }
    if ctx.inspect_request || ctx.observe_only {
        // Responses must be readable to be scanned: ask for identity, and should the upstream
        // compress anyway, have pingora decompress before the body filters (this must be set
        // before the response header phase).
        req.insert_header("accept-encoding", "identity")?;
        // A fresh ctx per attempt: on a retry the previous attempt's response already moved the
        // ctx to its body phase, where every `adjust_*` (and `request_filter`) panics.
        session.upstream_compression =
            pingora::protocols::http::compression::ResponseCompressionCtx::new(0, true, false);
    }
    if let (true, Some(body)) = (ctx.request_done, ctx.final_request_body.as_ref()) {
        // Inspected before dispatch: the exact length of what will be sent, which the client
        // has sent already (its `Expect: 100-continue` was answered here).
        req.remove_header("expect");
        req.remove_header("transfer-encoding");
        req.insert_header("content-length", body.len().to_string())?;
        if ctx.request_gzip {
            req.remove_header("content-encoding");
        }
    } else if ctx.inspect_request && !ctx.observe_only {
        // The body is rewritten while it streams: pingora frames it chunked once
        // Content-Length is gone.
        req.remove_header("content-length");
        req.remove_header("content-encoding");
    }
    Ok(())
}

/// `upstream_response_filter`: breaker bookkeeping and retry-on-status, before the client has
/// seen anything.
pub async fn on_upstream_response(
    app: &App,
    _session: &mut Session,
    resp: &mut ResponseHeader,
    ctx: &mut RequestCtx,
) -> Result<()> {
    if resp.status.is_informational() {
        // 1xx (100 Continue, 103 Early Hints) is forwarded as it is; the final head follows.
        return Ok(());
    }
    let status = resp.status.as_u16();
    let Some((idx, permit)) = ctx.permit else {
        return Ok(());
    };
    let snap = ctx.snap.clone();
    let Some(up) = snap.gateway.upstream(idx) else {
        return Ok(());
    };
    if status >= 500 || status == 429 {
        let retry_after = resp
            .headers
            .get("retry-after")
            .and_then(|v| v.to_str().ok())
            .and_then(upstream::parse_retry_after);
        let decision = if body_replayable(ctx) {
            up.retry.decide(
                ctx.retries,
                RetryCause::Status {
                    status,
                    retry_after,
                },
                &up.budget,
                &mut rand::rng(),
            )
        } else {
            RetryDecision::GiveUp(upstream::retry::GiveUp::NotRetryable)
        };
        if let RetryDecision::Retry(delay) = decision {
            ctx.permit = None;
            up.breaker.record(permit, Outcome::from_status(status));
            app.metrics.upstream_error(&up.name, status_kind(status));
            ctx.retries += 1;
            ctx.retry_delay = Some(delay);
            ctx.retry_pending = true;
            let mut e = Error::explain(ErrorType::HTTPStatus(status), "retrying upstream status");
            e.set_retry(true);
            return Err(e);
        }
    }
    Ok(())
}

/// A retry must resend the body. Pingora replays its own copy only up to 64 KiB.
fn body_replayable(ctx: &RequestCtx) -> bool {
    ctx.final_request_body
        .as_ref()
        .is_none_or(|b| b.len() <= 64 * 1024)
        && ctx.req_buf.len() <= 64 * 1024
}

fn status_kind(status: u16) -> &'static str {
    match status {
        429 => "status_429",
        500..=599 => "status_5xx",
        _ => "status_other",
    }
}

/// `fail_to_connect`: breaker failure; retry (next attempt may go to a fallback) within budget.
pub fn on_connect_failure(
    app: &App,
    _peer: &HttpPeer,
    ctx: &mut RequestCtx,
    mut e: Box<Error>,
) -> Box<Error> {
    if let Some(up) = fail_attempt(app, ctx, FailureKind::Connect) {
        match up.retry.decide(
            ctx.retries,
            RetryCause::Connect,
            &up.budget,
            &mut rand::rng(),
        ) {
            RetryDecision::Retry(delay) => {
                ctx.retries += 1;
                ctx.retry_delay = Some(delay);
                e.set_retry(true);
                return e;
            }
            RetryDecision::GiveUp(why) => {
                tracing::warn!(upstream = %up.name, reason = why.as_str(), "not retrying connect failure");
            }
        }
    }
    e.set_retry(false);
    e
}

/// Returns the current attempt's breaker permit with a failure verdict and counts the error;
/// the upstream comes back for a retry decision. `None` when no attempt holds a permit.
fn fail_attempt(
    app: &App,
    ctx: &mut RequestCtx,
    kind: FailureKind,
) -> Option<Arc<upstream::UpstreamRuntime>> {
    let (idx, permit) = ctx.permit.take()?;
    let up = Arc::clone(ctx.snap.gateway.upstream(idx)?);
    up.breaker.record(permit, Outcome::Failure(kind));
    app.metrics.upstream_error(&up.name, kind.as_str());
    Some(up)
}

/// `error_while_proxy`: Jimini's own retry-on-status is retried, and so is an idempotent request
/// that met the keep-alive race on a pooled connection (below); anything else (a timeout or
/// reset after a non-idempotent request was sent) is not — the upstream may have processed it.
pub fn on_proxy_error(
    app: &App,
    _peer: &HttpPeer,
    session: &mut Session,
    ctx: &mut RequestCtx,
    mut e: Box<Error>,
    client_reused: bool,
) -> Box<Error> {
    if ctx.retry_pending {
        ctx.retry_pending = false;
        e.set_retry(true);
        return e;
    }
    if ctx.client_error.is_some() {
        // Jimini rejected the request itself (policy block, body limit, egress): not an
        // upstream failure; `record_outcome` returns the permit without a verdict.
        e.set_retry(false);
        return e;
    }
    // The keep-alive race: the upstream closed a pooled connection as this request reached it.
    // As in Pingora's default, an idempotent request whose body can be replayed gets one more
    // try on a fresh connection (POSTs never: the upstream may have started on them). The stale
    // connection still counts as a connect failure for the breaker, like a refused connect.
    if client_reused
        && !ctx.stale_retry_used
        && matches!(e.retry, pingora::RetryType::ReusedOnly)
        && session.req_header().method.is_idempotent()
        && !session.as_ref().retry_buffer_truncated()
    {
        ctx.stale_retry_used = true;
        fail_attempt(app, ctx, FailureKind::Connect);
        e.set_retry(true);
        return e;
    }
    // While the client's body is still arriving, the upstream cannot be judged: it has not
    // received the request whole, and a client that stalls makes it time out or hang up. No
    // breaker verdict (one slow client must not open the circuit for everyone); a timeout is
    // the client's, a 408.
    if !ctx.request_done && !session.as_mut().is_body_done() {
        if matches!(e.etype(), ErrorType::ReadTimedout) {
            ctx.client_error = Some(ClientError::new(
                408,
                "The request body was not received in time.",
                errors::INVALID_REQUEST,
                Some(errors::CODE_REQUEST_TIMEOUT),
                "client_timeout",
            ));
        }
        // Returned without a verdict (an unreported half-open probe expires by itself).
        ctx.permit = None;
        e.set_retry(false);
        return e;
    }
    let kind = match e.etype() {
        ErrorType::ReadTimedout | ErrorType::WriteTimedout => FailureKind::Timeout,
        _ => FailureKind::Connect,
    };
    fail_attempt(app, ctx, kind);
    e.set_retry(false);
    e
}

/// At the end of the request: return the breaker permit with the final outcome.
pub fn record_outcome(_app: &App, ctx: &mut RequestCtx, status: u16, e: Option<&Error>) {
    let Some((idx, permit)) = ctx.permit.take() else {
        return;
    };
    let snap = ctx.snap.clone();
    let Some(up) = snap.gateway.upstream(idx) else {
        return;
    };
    let outcome = match e {
        Some(err)
            if matches!(
                err.etype(),
                ErrorType::ReadTimedout | ErrorType::WriteTimedout
            ) =>
        {
            Outcome::Failure(FailureKind::Timeout)
        }
        _ if ctx.status != 0 => Outcome::from_status(ctx.status),
        // Jimini answered itself after selecting the upstream (policy block): no verdict on it.
        _ if ctx.client_error.is_some() => return,
        _ => Outcome::from_status(status),
    };
    up.breaker.record(permit, outcome);
}
