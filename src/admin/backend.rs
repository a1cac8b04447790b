//! The admin API's view of the application: a trait the proxy glue implements, so the admin server
//! knows nothing about snapshots, breakers or the audit writer. Methods are synchronous; the server
//! calls them from Tokio's blocking pool, so they may block (audit verify/export/erase, reloads).

use serde::Serialize;
use serde_json::Value;

use super::AdminError;

/// One admin API request, as recorded in the audit log. Never contains the token, the query
/// string or request bodies (data-subject ids are PII).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct AdminAuditEvent {
    /// HTTP method.
    pub method: String,
    /// Request path without the query string (truncated to 256 bytes).
    pub path: String,
    /// Status code returned.
    pub status: u16,
    /// Highest role of a verified token, if any.
    pub role: Option<String>,
    /// `sub` of a verified token (unverified tokens are never trusted for this).
    pub subject_of_token: Option<String>,
    /// `ok`, `unauthenticated:<reason>`, `forbidden`, `not_found`, `method_not_allowed`,
    /// `bad_request`, `error`.
    pub outcome: String,
}

/// Application hooks behind the admin API.
pub trait AdminBackend: Send + Sync + 'static {
    /// Readiness: config loaded, rules live, at least one upstream usable; details are shown.
    fn ready(&self) -> (bool, Value);
    /// Loaded rule packs (no matched values).
    fn rules(&self) -> Value;
    /// Re-read config and rules; `Err` keeps the old snapshot (message shown to the operator).
    fn reload_rules(&self) -> Result<Value, String>;
    /// Upstreams with breaker states.
    fn upstreams(&self) -> Value;
    /// Close the named upstream's breaker; `AdminError::NotFound` for an unknown name.
    fn reset_breaker(&self, name: &str) -> Result<Value, AdminError>;
    /// Effective config with secrets masked.
    fn config_masked(&self) -> Value;
    /// Turn global shadow mode on/off; returns the new state.
    fn set_shadow(&self, on: bool) -> Value;
    /// Verify the audit chain.
    fn audit_verify(&self) -> Result<Value, String>;
    /// Data-subject export.
    fn audit_export(&self, subject: &str) -> Result<Value, String>;
    /// Data-subject erasure.
    fn audit_erase(&self, subject: &str) -> Result<Value, String>;
    /// Prometheus text exposition for `/metrics`.
    /// None when metrics are turned off (`telemetry.metrics: false`): `/metrics` answers 404.
    fn metrics_text(&self) -> Option<String>;
    /// Record an admin request (every `/admin/` request, including 401/403) in the audit log.
    fn audit_admin(&self, event: AdminAuditEvent);
    /// Count any admin-listener request in metrics (`jimini_admin_requests_total`). `path_class`
    /// is a fixed name (healthz, readyz, metrics, rules, …, unknown). Default: nothing.
    fn record_request(&self, path_class: &'static str, status: u16) {
        let _ = (path_class, status);
    }
}
