//! Telemetry: Prometheus metrics (`metrics`), OTLP traces (`tracing`, recorded as `span_attrs`
//! under W3C `trace_context`), structured logs (`logs`) and the `telemetry:` config section
//! (`config`). Nothing here blocks a request on I/O.

pub mod config;
pub mod logs;
pub mod metrics;
pub mod otlp_http;
pub mod otlp_wire;
pub mod span_attrs;
pub mod trace_context;
pub mod tracing;

pub use self::tracing::{ChildKind, RequestTrace, Tracing};
pub use config::{
    LogFormat, OtlpConfig, OtlpHeaders, OtlpProtocol, ResolvedOtlp, SamplerSpec, TelemetryConfig,
};
pub use logs::{flush_logs, init_logs, log_lines_dropped, mask_secret, scrub_secrets};
pub use metrics::{Metrics, RequestOutcome};

/// Telemetry setup errors.
#[derive(Debug, thiserror::Error)]
pub enum TelemetryError {
    /// Invalid `telemetry:` setting or `OTEL_*` variable.
    #[error("telemetry config: {0}")]
    Config(String),
    /// The OTLP exporter could not be built.
    #[error("OTLP exporter: {0}")]
    Exporter(String),
    /// The exporter's background runtime/thread could not be started.
    #[error("telemetry runtime: {0}")]
    Runtime(String),
}
