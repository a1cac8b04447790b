//! The admin API's view of the running proxy: implements `admin::AdminBackend` over the live
//! [`App`] (rules, breakers, masked config, shadow toggle, audit verification and data-subject
//! requests). The HTTP surface and JWT checks live in `admin/`.

use std::sync::Arc;

use serde_json::{json, Value};

use crate::admin::{AdminAuditEvent, AdminBackend, AdminError};
use crate::audit::{AuditEvent, AuditHandle};
use crate::proxy::App;

pub struct Backend {
    app: Arc<App>,
}

impl Backend {
    pub fn new(app: Arc<App>) -> Self {
        Backend { app }
    }

    /// The live audit handle; the admin API works through it so verification is
    /// single-threaded and erasure goes through the writer.
    fn audit(&self) -> Result<&AuditHandle, String> {
        self.app
            .audit
            .as_ref()
            .ok_or_else(|| "the audit log is disabled".to_string())
    }
}

impl AdminBackend for Backend {
    fn ready(&self) -> (bool, Value) {
        self.app.readiness()
    }

    fn rules(&self) -> Value {
        let snap = self.app.snapshot();
        json!({
            "generation": snap.generation,
            "shadow": snap.shadow,
            "rule_count": snap.rules.rule_count(),
            "packs": snap.rules.packs(),
        })
    }

    fn reload_rules(&self) -> Result<Value, String> {
        let generation = self.app.reload()?;
        Ok(json!({"reloaded": true, "generation": generation}))
    }

    fn upstreams(&self) -> Value {
        self.app.snapshot().gateway.snapshot()
    }

    fn reset_breaker(&self, name: &str) -> Result<Value, AdminError> {
        if self.app.snapshot().gateway.reset_breaker(name) {
            Ok(json!({"reset": name}))
        } else {
            Err(AdminError::NotFound(format!("no upstream named `{name}`")))
        }
    }

    fn config_masked(&self) -> Value {
        self.app.snapshot().config.masked_json()
    }

    fn set_shadow(&self, on: bool) -> Value {
        match self.app.set_shadow(on) {
            Ok(generation) => json!({"shadow": on, "generation": generation}),
            Err(e) => json!({"shadow": self.app.snapshot().shadow, "error": e}),
        }
    }

    fn audit_verify(&self) -> Result<Value, String> {
        // Single-threaded through the live handle (flushes first): verification must not take
        // every core away from a serving proxy.
        let report = self.audit()?.verify().map_err(|e| e.to_string())?;
        self.app.metrics.set_audit_chain_ok(report.ok);
        serde_json::to_value(report).map_err(|e| e.to_string())
    }

    fn audit_export(&self, subject: &str) -> Result<Value, String> {
        let records = self
            .audit()?
            .export_subject(subject)
            .map_err(|e| e.to_string())?;
        Ok(json!({"count": records.len(), "records": records}))
    }

    fn audit_erase(&self, subject: &str) -> Result<Value, String> {
        let report = self
            .audit()?
            .erase_subject(subject)
            .map_err(|e| e.to_string())?;
        serde_json::to_value(report).map_err(|e| e.to_string())
    }

    fn metrics_text(&self) -> Option<String> {
        if !self.app.metrics.enabled() {
            return None;
        }
        let snap = self.app.snapshot();
        snap.gateway.export_breaker_states(&self.app.metrics);
        if let Some(a) = &self.app.audit {
            let s = a.stats();
            self.app.metrics.set_audit_counters(s.written, s.dropped);
        }
        let (dropped, failed) = self.app.tracing.loss_counters();
        self.app.metrics.set_trace_counters(dropped, failed);
        Some(self.app.metrics.encode())
    }

    fn record_request(&self, path_class: &'static str, status: u16) {
        self.app.metrics.admin_request(path_class, status);
    }

    fn audit_admin(&self, event: AdminAuditEvent) {
        if let Some(a) = &self.app.audit {
            let ev = AuditEvent {
                request_id: hex::encode(rand::random::<[u8; 12]>()),
                caller: event.subject_of_token.clone(),
                subject: None,
                route: "admin".into(),
                model: None,
                upstream: None,
                decision: event.outcome.clone(),
                shadow: false,
                rules: Vec::new(),
                findings: Default::default(),
                status: event.status,
                latency_ms: 0,
                upstream_latency_ms: None,
                usage: None,
                kind: "admin".into(),
                detail: Some(format!("{} {}", event.method, event.path)),
            };
            if let Err(e) = a.record(ev) {
                tracing::warn!(error = %e, "admin audit record not queued");
            }
        }
    }
}
