//! The end of a request (pingora's `logging` hook): one decision record fans out to metrics, the
//! trace, the audit channel, the breaker and the rate limiter. Nothing here waits on I/O: the
//! audit writer and the span exporter run on their own threads.

use std::time::{Duration, Instant, SystemTime};

use pingora::proxy::Session;
use pingora::Error;

use crate::audit::{AuditEvent, Durability, TokenUsage};
use crate::rules::{Action, Decision};
use crate::telemetry::tracing::attr;
use crate::telemetry::{ChildKind, RequestOutcome};

use super::app::App;
use super::ctx::RequestCtx;

pub async fn record(app: &App, session: &mut Session, e: Option<&Error>, ctx: &mut RequestCtx) {
    let now = Instant::now();
    let duration = now.duration_since(ctx.started);
    let status = final_status(session, e, ctx);
    let decision = decision_of(ctx);
    let decision_label = label_of(ctx, &decision);
    let upstream = ctx.upstream_name.clone().unwrap_or_else(|| "none".into());
    let route = ctx.route();

    // Breaker outcome for the upstream that answered (connect failures were recorded earlier).
    super::peer::record_outcome(app, ctx, status, e);

    // Rate limiter: debit real completion tokens.
    if let (Some(usage), Some(caller)) = (&ctx.usage, &ctx.caller) {
        app.limiter
            .record_completion(caller, usage.completion_tokens)
            .await;
    }

    let ttft = if ctx.stream_requested {
        ctx.first_token_at.map(|t| t.duration_since(ctx.started))
    } else {
        None
    };
    let _entered = ctx.span.clone().entered();
    app.metrics.request_finished(&RequestOutcome {
        route,
        upstream: &upstream,
        decision: decision_label,
        status,
        duration,
        overhead: ctx.overhead,
        ttft,
    });
    for hit in &decision.rules {
        app.metrics
            .rule_match(&hit.pack, &hit.rule, action_label(hit.action), hit.shadow);
    }
    for ((detector, direction), n) in &decision.findings_by_direction {
        app.metrics.finding(detector, direction.as_str(), *n);
    }

    if let Some(mut trace) = ctx.trace.take() {
        trace.set_attr(attr::REQUEST_ID, &ctx.request_id);
        trace.set_attr(attr::DECISION, decision_label);
        trace.set_attr(attr::SHADOW, decision.shadow);
        trace.set_attr(attr::UPSTREAM, &upstream);
        trace.set_rules(decision.rules.iter().map(|h| h.rule.as_str()));
        if let Some(u) = &ctx.usage {
            trace.set_usage(u.prompt_tokens, u.completion_tokens);
        }
        if let (Some(s), Some(e)) = ctx.request_scan_time {
            trace.child(ChildKind::RequestScan, s, e, &[]);
        }
        if let Some(up_start) = ctx.upstream_started {
            let start = wall(ctx, up_start);
            trace.child(ChildKind::Upstream, start, wall(ctx, now), &[]);
        }
        if ctx.response_scan_time > Duration::ZERO {
            let end = SystemTime::now();
            trace.child(
                ChildKind::ResponseScan,
                end - ctx.response_scan_time,
                end,
                &[],
            );
        }
        trace.end(status);
    }

    if let Some(audit) = &app.audit {
        if !ctx.audited {
            let ev = audit_event(ctx, &decision, decision_label, status, now);
            if let Err(err) = audit.record(ev) {
                tracing::warn!(error = %err, "audit record not queued");
            }
        }
    }

    tracing::info!(
        method = %ctx.method,
        route,
        upstream = %upstream,
        status,
        decision = decision_label,
        shadow = decision.shadow,
        duration_ms = duration.as_millis() as u64,
        overhead_us = ctx.overhead.as_micros() as u64,
        "request finished"
    );
}

fn decision_of(ctx: &RequestCtx) -> Decision {
    ctx.evaluator
        .as_ref()
        .map(|ev| ev.decision())
        .unwrap_or_else(|| Decision {
            verdict: Action::Allow,
            would_be: Action::Allow,
            shadow: false,
            rules: Vec::new(),
            findings: Default::default(),
            findings_by_direction: Default::default(),
            blocked_by: None,
        })
}

fn label_of(ctx: &RequestCtx, decision: &Decision) -> &'static str {
    if ctx
        .client_error
        .as_ref()
        .is_some_and(|c| c.reason == "egress")
    {
        "block"
    } else {
        decision.label()
    }
}

/// The request's audit record (no raw values: rule ids, counts, hashes).
fn audit_event(
    ctx: &RequestCtx,
    decision: &Decision,
    decision_label: &str,
    status: u16,
    now: Instant,
) -> AuditEvent {
    let mut rules: Vec<String> = decision.rules.iter().map(|h| h.rule.clone()).collect();
    if ctx
        .client_error
        .as_ref()
        .is_some_and(|e| e.reason == "egress")
    {
        rules.push("egress".into());
    }
    AuditEvent {
        request_id: ctx.request_id.clone(),
        // The anonymous caller is no identity: its keyed hash would be one constant on every
        // record (80 bytes of each line, and of what the chain link hashes).
        caller: ctx
            .caller
            .clone()
            .filter(|c| c != crate::upstream::callers::ANONYMOUS),
        subject: ctx.subject.clone(),
        route: ctx.route().to_string(),
        model: ctx.model.clone(),
        upstream: ctx.upstream_name.clone(),
        decision: decision_label.to_string(),
        shadow: decision.shadow,
        rules,
        findings: decision.findings.clone(),
        status,
        latency_ms: now.duration_since(ctx.started).as_millis() as u64,
        upstream_latency_ms: ctx
            .upstream_started
            .filter(|_| ctx.upstream_headers_at.is_some())
            .map(|s| now.duration_since(s).as_millis() as u64),
        usage: ctx.usage.as_ref().map(|u| TokenUsage {
            prompt: u.prompt_tokens,
            completion: u.completion_tokens,
            total: u.total_tokens,
        }),
        kind: "request".into(),
        detail: ctx.unscanned.then(|| "unscanned".to_string()),
    }
}

/// With `audit.durability: ack`, write the record now and wait (bounded) until it is durable,
/// before the client sees the end of its response. Called from the end of the response body and
/// before Jimini writes its own error responses. The wait yields the worker thread to the
/// runtime's other tasks (`block_in_place`), and concurrent requests share one fsync.
pub fn audit_before_completion(app: &App, ctx: &mut RequestCtx, status: u16) {
    let Some(audit) = &app.audit else {
        return;
    };
    let cfg = &ctx.snap.config.audit;
    if cfg.durability != Durability::Ack || ctx.audited {
        return;
    }
    let timeout = Duration::from_millis(cfg.ack_timeout_ms);
    let decision = decision_of(ctx);
    let label = label_of(ctx, &decision);
    let ev = audit_event(ctx, &decision, label, status, Instant::now());
    ctx.audited = true;
    let wait = || audit.record_durable(ev, timeout);
    let multi_thread = tokio::runtime::Handle::try_current()
        .is_ok_and(|h| h.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread);
    let result = if multi_thread {
        tokio::task::block_in_place(wait)
    } else {
        wait()
    };
    match result {
        Ok(true) => {}
        Ok(false) => tracing::warn!("audit record not confirmed within ack_timeout_ms"),
        Err(err) => tracing::warn!(error = %err, "audit record not queued"),
    }
}

fn action_label(a: Action) -> &'static str {
    match a {
        Action::Allow => "allow",
        Action::Flag => "flag",
        Action::Redact => "redact",
        Action::Block => "block",
    }
}

fn wall(ctx: &RequestCtx, at: Instant) -> SystemTime {
    ctx.started_wall + at.saturating_duration_since(ctx.started)
}

fn final_status(session: &Session, e: Option<&Error>, ctx: &RequestCtx) -> u16 {
    if let Some(err) = &ctx.client_error {
        return err.status;
    }
    if let Some(resp) = session.response_written() {
        return resp.status.as_u16();
    }
    if ctx.status != 0 {
        return ctx.status;
    }
    if e.is_some() {
        502
    } else {
        0
    }
}
