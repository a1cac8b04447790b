//! OTLP trace export (gRPC or HTTP/protobuf) and the per-request span tree: `jimini.request`
//! (server) with `jimini.request_scan`, `jimini.upstream` (client) and `jimini.response_scan`
//! children, GenAI semantic-convention attributes and W3C `traceparent` propagation upstream.
//!
//! Export never runs on a request thread: spans go into the SDK's bounded batch queue (full queue =
//! span dropped) drained by its own thread; gRPC I/O runs on a dedicated current-thread Tokio
//! runtime owned by this module, so a slow or dead collector cannot stall Pingora's runtimes.

use std::cell::Cell;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::thread;
use std::time::{Duration, SystemTime};

use opentelemetry::propagation::{Extractor, TextMapPropagator};
use opentelemetry::trace::{
    Span as _, SpanId, SpanKind, Status, TraceContextExt, TraceId, Tracer as _, TracerProvider as _,
};
use opentelemetry::{Array, Context, KeyValue, StringValue, Value};
use opentelemetry_otlp::{WithExportConfig, WithHttpConfig};
use opentelemetry_sdk::error::{OTelSdkError, OTelSdkResult};
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::{
    BatchConfigBuilder, BatchSpanProcessor, IdGenerator, RandomIdGenerator, Sampler, SdkTracer,
    SdkTracerProvider, SpanData, SpanExporter,
};
use opentelemetry_sdk::Resource;

use super::config::{OtlpProtocol, ResolvedOtlp, SamplerSpec};
use super::otlp_http::PlainHttpClient;
use super::{TelemetryConfig, TelemetryError};

#[cfg(test)]
#[path = "../../tests/common/otlp.rs"]
mod otlp_receiver;

/// Span names.
pub const SPAN_REQUEST: &str = "jimini.request";
pub const SPAN_REQUEST_SCAN: &str = "jimini.request_scan";
pub const SPAN_UPSTREAM: &str = "jimini.upstream";
pub const SPAN_RESPONSE_SCAN: &str = "jimini.response_scan";

/// Attribute keys (OpenTelemetry HTTP + GenAI semantic conventions, plus Jimini's own).
pub mod attr {
    pub const HTTP_METHOD: &str = "http.request.method";
    pub const HTTP_ROUTE: &str = "http.route";
    pub const HTTP_STATUS: &str = "http.response.status_code";
    pub const GEN_AI_SYSTEM: &str = "gen_ai.system";
    pub const GEN_AI_OPERATION: &str = "gen_ai.operation.name";
    pub const GEN_AI_REQUEST_MODEL: &str = "gen_ai.request.model";
    pub const GEN_AI_RESPONSE_MODEL: &str = "gen_ai.response.model";
    pub const GEN_AI_INPUT_TOKENS: &str = "gen_ai.usage.input_tokens";
    pub const GEN_AI_OUTPUT_TOKENS: &str = "gen_ai.usage.output_tokens";
    pub const DECISION: &str = "jimini.decision";
    pub const RULES: &str = "jimini.rules";
    pub const SHADOW: &str = "jimini.shadow";
    pub const UPSTREAM: &str = "jimini.upstream";
    pub const REQUEST_ID: &str = "jimini.request_id";
    pub const ERROR_TYPE: &str = "error.type";
}

/// Kind of a child span of `jimini.request`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ChildKind {
    RequestScan,
    Upstream,
    ResponseScan,
}

impl ChildKind {
    pub fn span_name(self) -> &'static str {
        match self {
            ChildKind::RequestScan => SPAN_REQUEST_SCAN,
            ChildKind::Upstream => SPAN_UPSTREAM,
            ChildKind::ResponseScan => SPAN_RESPONSE_SCAN,
        }
    }
    fn span_kind(self) -> SpanKind {
        match self {
            ChildKind::Upstream => SpanKind::Client,
            _ => SpanKind::Internal,
        }
    }
}

/// `gen_ai.operation.name` for a route class; `None` for non-GenAI routes (models, other).
pub fn gen_ai_operation(route: &str) -> Option<&'static str> {
    match route {
        "chat" | "responses" | "messages" => Some("chat"),
        "completions" => Some("text_completion"),
        "embeddings" => Some("embeddings"),
        _ => None,
    }
}

thread_local! {
    // Span id the next span built on this thread must use (see `PresetIdGenerator`).
    static PRESET_SPAN_ID: Cell<Option<SpanId>> = const { Cell::new(None) };
}

/// Random ids, except that a span id chosen in advance can be handed to the next span started on
/// the same thread. This lets `upstream_traceparent` name the `jimini.upstream` span before that
/// span is recorded (children are recorded after the fact with explicit timestamps).
#[derive(Debug, Default)]
struct PresetIdGenerator {
    random: RandomIdGenerator,
}

impl IdGenerator for PresetIdGenerator {
    fn new_trace_id(&self) -> TraceId {
        self.random.new_trace_id()
    }
    fn new_span_id(&self) -> SpanId {
        PRESET_SPAN_ID
            .with(Cell::take)
            .unwrap_or_else(|| self.random.new_span_id())
    }
}

/// Runs an exporter's futures on a dedicated runtime: the SDK's batch thread only blocks on a
/// runtime-agnostic `JoinHandle`, while tonic gets the reactor and timers it needs.
#[derive(Debug)]
struct OnRuntime<E> {
    inner: Arc<E>,
    handle: tokio::runtime::Handle,
}

impl<E: SpanExporter + 'static> SpanExporter for OnRuntime<E> {
    fn export(
        &self,
        batch: Vec<SpanData>,
    ) -> impl std::future::Future<Output = OTelSdkResult> + Send {
        let inner = Arc::clone(&self.inner);
        let task = self.handle.spawn(async move { inner.export(batch).await });
        async move {
            task.await
                .unwrap_or_else(|e| Err(OTelSdkError::InternalFailure(e.to_string())))
        }
    }
    fn shutdown_with_timeout(&self, timeout: Duration) -> OTelSdkResult {
        self.inner.shutdown_with_timeout(timeout)
    }
    fn force_flush(&self) -> OTelSdkResult {
        self.inner.force_flush()
    }
    fn set_resource(&mut self, resource: &Resource) {
        // Called once while the provider is built, before any export holds a clone.
        if let Some(inner) = Arc::get_mut(&mut self.inner) {
            inner.set_resource(resource);
        }
    }
}

/// Dedicated runtime thread for gRPC export.
struct RuntimeThread {
    handle: tokio::runtime::Handle,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    done: mpsc::Receiver<()>,
}

impl RuntimeThread {
    fn start() -> Result<RuntimeThread, TelemetryError> {
        let (tx, rx) = mpsc::channel();
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let (done_tx, done_rx) = mpsc::channel();
        thread::Builder::new()
            .name("jimini-otlp".into())
            .spawn(move || {
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build();
                match rt {
                    Ok(rt) => {
                        let _ = tx.send(Ok(rt.handle().clone()));
                        // Runs exporter tasks until told to stop.
                        let _ = rt.block_on(stop_rx);
                        drop(rt);
                    }
                    Err(e) => {
                        let _ = tx.send(Err(e.to_string()));
                    }
                }
                let _ = done_tx.send(());
            })
            .map_err(|e| TelemetryError::Runtime(e.to_string()))?;
        let handle = rx
            .recv()
            .map_err(|e| TelemetryError::Runtime(e.to_string()))?
            .map_err(TelemetryError::Runtime)?;
        Ok(RuntimeThread {
            handle,
            stop: Some(stop_tx),
            done: done_rx,
        })
    }

    fn stop(mut self, timeout: Duration) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        // Bounded wait; a thread still stuck after that is left to finish on its own.
        let _ = self.done.recv_timeout(timeout);
    }
}

struct Inner {
    provider: SdkTracerProvider,
    tracer: SdkTracer,
    propagator: TraceContextPropagator,
    runtime: Mutex<Option<RuntimeThread>>,
    shut: AtomicBool,
    shutdown_timeout: Duration,
}

impl Inner {
    fn shutdown(&self) {
        if self.shut.swap(true, Ordering::AcqRel) {
            return;
        }
        if let Err(e) = self.provider.shutdown_with_timeout(self.shutdown_timeout) {
            tracing::debug!(error = %e, "trace exporter shutdown incomplete");
        }
        let rt = self
            .runtime
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take();
        if let Some(rt) = rt {
            rt.stop(self.shutdown_timeout);
        }
    }
}

impl Drop for Inner {
    fn drop(&mut self) {
        self.shutdown();
    }
}

/// Process-wide tracing handle; clone freely. `Tracing::disabled()` costs nothing per request.
#[derive(Clone, Default)]
pub struct Tracing {
    inner: Option<Arc<Inner>>,
}

impl std::fmt::Debug for Tracing {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tracing")
            .field("enabled", &self.inner.is_some())
            .finish()
    }
}

fn to_sampler(s: &SamplerSpec) -> Sampler {
    match s {
        SamplerSpec::AlwaysOn => Sampler::AlwaysOn,
        SamplerSpec::AlwaysOff => Sampler::AlwaysOff,
        SamplerSpec::Ratio(r) => Sampler::TraceIdRatioBased(*r),
        SamplerSpec::ParentBased(inner) => Sampler::ParentBased(Box::new(to_sampler(inner))),
    }
}

struct OneHeader<'a>(&'a str);

impl Extractor for OneHeader<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        key.eq_ignore_ascii_case("traceparent").then_some(self.0)
    }
    fn keys(&self) -> Vec<&str> {
        vec!["traceparent"]
    }
}

impl Tracing {
    /// No-op tracing: `start_request` returns an inert `RequestTrace`.
    pub fn disabled() -> Tracing {
        Tracing { inner: None }
    }

    /// From config + `OTEL_*` environment; disabled unless `telemetry.otlp.enabled`.
    pub fn init(cfg: &TelemetryConfig) -> Result<Tracing, TelemetryError> {
        let env = |k: &str| std::env::var(k).ok();
        if !cfg.otlp.effective_enabled(&env) {
            return Ok(Tracing::disabled());
        }
        Self::init_resolved(&cfg.otlp.resolve_with(&env)?)
    }

    /// From fully resolved settings (no environment lookups besides the SDK's `OTEL_BSP_*`).
    pub fn init_resolved(r: &ResolvedOtlp) -> Result<Tracing, TelemetryError> {
        if r.endpoint.starts_with("https://") {
            // Neither the tonic client nor `PlainHttpClient` is built with TLS; fail loudly instead of
            // silently dropping every span.
            return Err(TelemetryError::Config(format!(
                "telemetry.otlp.endpoint: '{}': TLS to the collector is not supported by this \
                 build; export over http:// to a local collector or sidecar",
                r.endpoint
            )));
        }
        let exp_err = |e: opentelemetry_otlp::ExporterBuildError| {
            TelemetryError::Exporter(format!("{} ({}): {e}", r.endpoint, proto_name(r.protocol)))
        };
        let batch = BatchConfigBuilder::default()
            .with_max_queue_size(r.max_queue)
            .with_max_export_batch_size(r.max_queue.min(512))
            .build();
        let (processor, runtime) = match r.protocol {
            OtlpProtocol::Grpc => {
                let rt = RuntimeThread::start()?;
                let exporter = {
                    // tonic's lazy channel spawns its worker onto the ambient runtime.
                    let _guard = rt.handle.enter();
                    opentelemetry_otlp::SpanExporter::builder()
                        .with_tonic()
                        .with_endpoint(r.endpoint.clone())
                        .with_timeout(r.export_timeout)
                        .build()
                        .map_err(exp_err)?
                };
                let exporter = OnRuntime {
                    inner: Arc::new(exporter),
                    handle: rt.handle.clone(),
                };
                (
                    BatchSpanProcessor::builder(exporter)
                        .with_batch_config(batch)
                        .build(),
                    Some(rt),
                )
            }
            OtlpProtocol::HttpProtobuf => {
                // The blocking HTTP client runs on the batch processor's own thread.
                let exporter = opentelemetry_otlp::SpanExporter::builder()
                    .with_http()
                    .with_http_client(PlainHttpClient::new(r.export_timeout))
                    .with_endpoint(r.endpoint.clone())
                    .with_timeout(r.export_timeout)
                    .build()
                    .map_err(exp_err)?;
                (
                    BatchSpanProcessor::builder(exporter)
                        .with_batch_config(batch)
                        .build(),
                    None,
                )
            }
        };
        let resource = Resource::builder()
            .with_service_name(r.service_name.clone())
            .with_attribute(KeyValue::new("service.version", env!("CARGO_PKG_VERSION")))
            .build();
        let provider = SdkTracerProvider::builder()
            .with_span_processor(processor)
            .with_sampler(to_sampler(&r.sampler))
            .with_id_generator(PresetIdGenerator::default())
            .with_resource(resource)
            .build();
        let tracer = provider.tracer("jimini");
        Ok(Tracing {
            inner: Some(Arc::new(Inner {
                provider,
                tracer,
                propagator: TraceContextPropagator::new(),
                runtime: Mutex::new(runtime),
                shut: AtomicBool::new(false),
                shutdown_timeout: r.export_timeout + Duration::from_secs(1),
            })),
        })
    }

    pub fn is_enabled(&self) -> bool {
        self.inner.is_some()
    }

    /// Open the `jimini.request` span, continuing the caller's trace when `incoming_traceparent`
    /// is a valid W3C header (an invalid one starts a new trace).
    pub fn start_request(
        &self,
        incoming_traceparent: Option<&str>,
        route: &str,
        method: &str,
    ) -> RequestTrace {
        let Some(inner) = &self.inner else {
            return RequestTrace { active: None };
        };
        let parent = match incoming_traceparent {
            Some(tp) => inner.propagator.extract(&OneHeader(tp.trim())),
            None => Context::new(),
        };
        let mut attrs = Vec::with_capacity(5);
        attrs.push(KeyValue::new(attr::HTTP_METHOD, method.to_owned()));
        attrs.push(KeyValue::new(attr::HTTP_ROUTE, route.to_owned()));
        if let Some(op) = gen_ai_operation(route) {
            let system = if route == "messages" {
                "anthropic"
            } else {
                "openai"
            };
            attrs.push(KeyValue::new(attr::GEN_AI_SYSTEM, system));
            attrs.push(KeyValue::new(attr::GEN_AI_OPERATION, op));
        }
        let span = inner
            .tracer
            .span_builder(SPAN_REQUEST)
            .with_kind(SpanKind::Server)
            .with_attributes(attrs)
            .start_with_context(&inner.tracer, &parent);
        let sampled = span.span_context().is_sampled();
        let upstream_id = sampled.then(|| RandomIdGenerator::default().new_span_id());
        RequestTrace {
            active: Some(Box::new(Active {
                tracer: inner.tracer.clone(),
                cx: parent.with_span(span),
                sampled,
                upstream_id,
                upstream_id_used: false,
            })),
        }
    }

    /// Export everything queued so far (bounded by the SDK's flush timeout). For tests and
    /// graceful shutdown paths.
    pub fn flush(&self) {
        if let Some(inner) = &self.inner {
            if let Err(e) = inner.provider.force_flush() {
                tracing::debug!(error = %e, "trace flush incomplete");
            }
        }
    }

    /// Flush and stop the exporter, waiting at most export timeout + 1 s. Idempotent.
    pub fn shutdown(&self) {
        if let Some(inner) = &self.inner {
            inner.shutdown();
        }
    }
}

fn proto_name(p: OtlpProtocol) -> &'static str {
    match p {
        OtlpProtocol::Grpc => "grpc",
        OtlpProtocol::HttpProtobuf => "http/protobuf",
    }
}

struct Active {
    tracer: SdkTracer,
    /// Parent context + the request span.
    cx: Context,
    sampled: bool,
    /// Pre-allocated id of the first `jimini.upstream` child (sampled requests only).
    upstream_id: Option<SpanId>,
    upstream_id_used: bool,
}

/// One request's trace. Inert (a `None`) when tracing is disabled.
pub struct RequestTrace {
    active: Option<Box<Active>>,
}

impl std::fmt::Debug for RequestTrace {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RequestTrace")
            .field("recording", &self.is_recording())
            .finish()
    }
}

impl RequestTrace {
    /// An inert trace (same as from `Tracing::disabled()`).
    pub fn none() -> RequestTrace {
        RequestTrace { active: None }
    }

    /// True when attributes and children will be exported.
    pub fn is_recording(&self) -> bool {
        self.active.as_ref().is_some_and(|a| a.sampled)
    }

    /// Set an attribute on the request span (no-op unless recording).
    pub fn set_attr(&mut self, key: &'static str, value: impl Into<Value>) {
        if let Some(a) = &self.active {
            if a.sampled {
                a.cx.span().set_attribute(KeyValue::new(key, value));
            }
        }
    }

    /// `gen_ai.usage.input_tokens` / `gen_ai.usage.output_tokens` (OTel integers are i64).
    pub fn set_usage(&mut self, input_tokens: u64, output_tokens: u64) {
        if self.is_recording() {
            let clamp = |n: u64| i64::try_from(n).unwrap_or(i64::MAX);
            self.set_attr(attr::GEN_AI_INPUT_TOKENS, clamp(input_tokens));
            self.set_attr(attr::GEN_AI_OUTPUT_TOKENS, clamp(output_tokens));
        }
    }

    /// `jimini.rules` as a string array.
    pub fn set_rules<I, S>(&mut self, rules: I)
    where
        I: IntoIterator<Item = S>,
        S: Into<StringValue>,
    {
        if self.is_recording() {
            let v: Vec<StringValue> = rules.into_iter().map(Into::into).collect();
            self.set_attr(attr::RULES, Value::Array(Array::String(v)));
        }
    }

    /// Record a finished child span with explicit timestamps. The first `Upstream` child gets the
    /// span id already announced by `upstream_traceparent`; later ones (retries, fallbacks) get
    /// fresh ids. An `error.type` attribute marks the child as failed.
    pub fn child<I>(&mut self, kind: ChildKind, start: SystemTime, end: SystemTime, attrs: I)
    where
        I: IntoIterator<Item = KeyValue>,
    {
        let Some(a) = self.active.as_deref_mut() else {
            return;
        };
        if !a.sampled {
            return;
        }
        let attrs: Vec<KeyValue> = attrs.into_iter().collect();
        let failed = attrs.iter().any(|kv| kv.key.as_str() == attr::ERROR_TYPE);
        let preset = if kind == ChildKind::Upstream && !a.upstream_id_used {
            a.upstream_id_used = true;
            a.upstream_id
        } else {
            None
        };
        PRESET_SPAN_ID.with(|c| c.set(preset));
        let mut span = a
            .tracer
            .span_builder(kind.span_name())
            .with_kind(kind.span_kind())
            .with_start_time(start)
            .with_attributes(attrs)
            .start_with_context(&a.tracer, &a.cx);
        // Never leak a preset id into an unrelated span should the SDK not have consumed it.
        PRESET_SPAN_ID.with(|c| c.set(None));
        if failed {
            span.set_status(Status::error(""));
        }
        span.end_with_timestamp(end.max(start));
    }

    /// W3C `traceparent` to send upstream: this trace id, the `jimini.upstream` span id (or the
    /// request span id when unsampled), and the sampled flag. `None` when tracing is disabled
    /// (then the client's own header, if any, should pass through untouched).
    pub fn upstream_traceparent(&self) -> Option<String> {
        let a = self.active.as_ref()?;
        let span = a.cx.span();
        let sc = span.span_context();
        if !sc.is_valid() {
            return None;
        }
        let id = a.upstream_id.unwrap_or_else(|| sc.span_id());
        Some(format!(
            "00-{}-{}-{:02x}",
            sc.trace_id(),
            id,
            sc.trace_flags().to_u8() & 0x01
        ))
    }

    /// W3C `tracestate` to send upstream, when the incoming one was non-empty.
    pub fn upstream_tracestate(&self) -> Option<String> {
        let a = self.active.as_ref()?;
        let h = a.cx.span().span_context().trace_state().header();
        (!h.is_empty()).then_some(h)
    }

    /// Trace id (hex) for log correlation, when tracing is on.
    pub fn trace_id(&self) -> Option<String> {
        let a = self.active.as_ref()?;
        let span = a.cx.span();
        let sc = span.span_context();
        sc.is_valid().then(|| sc.trace_id().to_string())
    }

    /// Close the request span with the status sent to the client (5xx marks it as an error).
    pub fn end(self, status: u16) {
        let Some(a) = self.active else {
            return;
        };
        let span = a.cx.span();
        if a.sampled {
            span.set_attribute(KeyValue::new(attr::HTTP_STATUS, i64::from(status)));
            if status >= 500 {
                span.set_status(Status::error(""));
            }
        }
        span.end();
    }
}

#[cfg(test)]
mod tests {
    use super::otlp_receiver::OtlpReceiver;
    use super::*;
    use crate::telemetry::config::OtlpConfig;

    fn assert_send_sync<T: Send + Sync>() {}

    #[test]
    fn handles_are_send_sync() {
        assert_send_sync::<Tracing>();
        assert_send_sync::<RequestTrace>();
    }

    fn resolved(endpoint: String, protocol: OtlpProtocol, sampler: SamplerSpec) -> ResolvedOtlp {
        ResolvedOtlp {
            endpoint,
            protocol,
            sampler,
            service_name: "jimini-test".into(),
            export_timeout: Duration::from_millis(800),
            max_queue: 256,
        }
    }

    fn always() -> SamplerSpec {
        SamplerSpec::ParentBased(Box::new(SamplerSpec::AlwaysOn))
    }

    #[test]
    fn disabled_is_inert() {
        let t = Tracing::disabled();
        assert!(!t.is_enabled());
        let mut rt = t.start_request(
            Some("00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"),
            "chat",
            "POST",
        );
        assert!(!rt.is_recording());
        rt.set_attr(attr::DECISION, "allow");
        rt.child(
            ChildKind::Upstream,
            SystemTime::now(),
            SystemTime::now(),
            [],
        );
        assert_eq!(rt.upstream_traceparent(), None);
        rt.end(200);
        t.shutdown();
        // config default: disabled
        assert!(!Tracing::init(&TelemetryConfig::default())
            .unwrap()
            .is_enabled());
    }

    #[test]
    fn spans_arrive_at_otlp_http_receiver_with_links_and_attributes() {
        let rx = OtlpReceiver::start();
        let t = Tracing::init_resolved(&resolved(
            rx.endpoint(),
            OtlpProtocol::HttpProtobuf,
            always(),
        ))
        .unwrap();
        let incoming = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01";
        let mut rt = t.start_request(Some(incoming), "chat", "POST");
        assert!(rt.is_recording());
        rt.set_attr(attr::REQUEST_ID, "req-1");
        rt.set_attr(attr::GEN_AI_REQUEST_MODEL, "gpt-4o");
        rt.set_attr(attr::GEN_AI_RESPONSE_MODEL, "gpt-4o-2024-08-06");
        rt.set_usage(12, 34);
        rt.set_attr(attr::DECISION, "redact");
        rt.set_attr(attr::SHADOW, false);
        rt.set_attr(attr::UPSTREAM, "openai");
        rt.set_rules(["pii.email", "secrets.openai-key"]);
        let t0 = SystemTime::now();
        let ms = |n| t0 + Duration::from_millis(n);
        let tp = rt.upstream_traceparent().unwrap();
        rt.child(
            ChildKind::RequestScan,
            ms(0),
            ms(1),
            [KeyValue::new("jimini.findings", 2i64)],
        );
        rt.child(
            ChildKind::Upstream,
            ms(1),
            ms(50),
            [KeyValue::new(attr::UPSTREAM, "openai")],
        );
        rt.child(
            ChildKind::Upstream,
            ms(50),
            ms(60),
            [KeyValue::new(attr::ERROR_TYPE, "timeout")],
        );
        rt.child(ChildKind::ResponseScan, ms(60), ms(61), []);
        rt.end(200);
        t.shutdown();

        let spans = rx.wait_for_spans(5, Duration::from_secs(10));
        assert_eq!(spans.len(), 5, "{spans:#?}");
        let req = spans.iter().find(|s| s.name == SPAN_REQUEST).unwrap();
        assert_eq!(req.trace_id, "0af7651916cd43dd8448eb211c80319c");
        assert_eq!(req.parent_span_id, "b7ad6b7169203331");
        assert_eq!(req.kind, 2, "server");
        assert_eq!(req.service_name.as_deref(), Some("jimini-test"));
        let s = |k: &str| {
            req.attr_str(k)
                .unwrap_or_else(|| panic!("missing {k}: {req:#?}"))
        };
        assert_eq!(s(attr::HTTP_METHOD), "POST");
        assert_eq!(s(attr::HTTP_ROUTE), "chat");
        assert_eq!(s(attr::GEN_AI_SYSTEM), "openai");
        assert_eq!(s(attr::GEN_AI_OPERATION), "chat");
        assert_eq!(s(attr::GEN_AI_REQUEST_MODEL), "gpt-4o");
        assert_eq!(s(attr::GEN_AI_RESPONSE_MODEL), "gpt-4o-2024-08-06");
        assert_eq!(s(attr::DECISION), "redact");
        assert_eq!(s(attr::REQUEST_ID), "req-1");
        assert_eq!(req.attr_i64(attr::GEN_AI_INPUT_TOKENS), Some(12));
        assert_eq!(req.attr_i64(attr::GEN_AI_OUTPUT_TOKENS), Some(34));
        assert_eq!(req.attr_i64(attr::HTTP_STATUS), Some(200));
        assert_eq!(req.attr_bool(attr::SHADOW), Some(false));
        assert_eq!(
            req.attr_str_array(attr::RULES),
            Some(vec![
                "pii.email".to_string(),
                "secrets.openai-key".to_string()
            ])
        );
        for s in spans.iter().filter(|s| s.name != SPAN_REQUEST) {
            assert_eq!(s.trace_id, req.trace_id);
            assert_eq!(s.parent_span_id, req.span_id, "{} parent", s.name);
        }
        let ups: Vec<_> = spans.iter().filter(|s| s.name == SPAN_UPSTREAM).collect();
        assert_eq!(ups.len(), 2);
        assert!(ups.iter().all(|s| s.kind == 3), "client kind");
        // the announced traceparent names the first upstream span
        assert_eq!(tp, format!("00-{}-{}-01", req.trace_id, ups[0].span_id));
        assert_ne!(ups[0].span_id, ups[1].span_id);
        assert_eq!(ups[1].status_code, 2, "error status on the failed attempt");
        let scan = spans.iter().find(|s| s.name == SPAN_REQUEST_SCAN).unwrap();
        assert_eq!(scan.attr_i64("jimini.findings"), Some(2));
        assert_eq!(scan.end_unix_nano - scan.start_unix_nano, 1_000_000);
        assert!(spans.iter().any(|s| s.name == SPAN_RESPONSE_SCAN));
    }

    #[test]
    fn new_root_without_or_with_invalid_traceparent_and_unsampled_propagation() {
        let rx = OtlpReceiver::start();
        let t = Tracing::init_resolved(&resolved(
            rx.endpoint(),
            OtlpProtocol::HttpProtobuf,
            always(),
        ))
        .unwrap();
        let a = t.start_request(None, "embeddings", "POST");
        let b = t.start_request(Some("garbage"), "models", "GET");
        let tp_a = a.upstream_traceparent().unwrap();
        assert!(
            tp_a.starts_with("00-") && tp_a.ends_with("-01") && tp_a.len() == 55,
            "{tp_a}"
        );
        assert_ne!(a.trace_id(), b.trace_id());
        a.end(200);
        b.end(503);
        // an unsampled incoming parent: nothing recorded, the trace id and flag are kept
        let mut c = t.start_request(
            Some("00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-00"),
            "chat",
            "POST",
        );
        assert!(!c.is_recording());
        c.set_attr(attr::DECISION, "allow");
        c.child(
            ChildKind::RequestScan,
            SystemTime::now(),
            SystemTime::now(),
            [],
        );
        let tp_c = c.upstream_traceparent().unwrap();
        assert!(
            tp_c.starts_with("00-0af7651916cd43dd8448eb211c80319c-"),
            "{tp_c}"
        );
        assert!(tp_c.ends_with("-00"));
        assert!(!tp_c.contains("b7ad6b7169203331"));
        c.end(200);
        t.shutdown();
        let spans = rx.wait_for_spans(2, Duration::from_secs(10));
        assert_eq!(spans.len(), 2, "{spans:#?}");
        let emb = spans
            .iter()
            .find(|s| s.attr_str(attr::HTTP_ROUTE) == Some("embeddings"))
            .unwrap();
        assert_eq!(emb.parent_span_id, "");
        assert_eq!(emb.attr_str(attr::GEN_AI_OPERATION), Some("embeddings"));
        let models = spans
            .iter()
            .find(|s| s.attr_str(attr::HTTP_ROUTE) == Some("models"))
            .unwrap();
        assert_eq!(models.attr_str(attr::GEN_AI_OPERATION), None);
        assert_eq!(models.status_code, 2);
    }

    #[test]
    fn always_off_sampler_still_propagates() {
        let rx = OtlpReceiver::start();
        let t = Tracing::init_resolved(&resolved(
            rx.endpoint(),
            OtlpProtocol::HttpProtobuf,
            SamplerSpec::AlwaysOff,
        ))
        .unwrap();
        let r = t.start_request(None, "chat", "POST");
        assert!(!r.is_recording());
        assert!(r.upstream_traceparent().unwrap().ends_with("-00"));
        r.end(200);
        t.shutdown();
        std::thread::sleep(Duration::from_millis(100));
        assert!(rx.spans().is_empty());
    }

    fn dead_port() -> u16 {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let p = l.local_addr().unwrap().port();
        drop(l);
        p
    }

    fn exercise_dead_collector(protocol: OtlpProtocol, endpoint: String) {
        let t = Tracing::init_resolved(&resolved(endpoint, protocol, always())).unwrap();
        for i in 0..300 {
            let mut r = t.start_request(None, "chat", "POST");
            r.set_attr(attr::REQUEST_ID, format!("r{i}"));
            r.child(
                ChildKind::Upstream,
                SystemTime::now(),
                SystemTime::now(),
                [],
            );
            r.end(200);
        }
        t.flush();
        let t2 = t.clone();
        t.shutdown();
        t2.shutdown(); // idempotent
                       // after shutdown calls still return immediately
        t2.start_request(None, "chat", "POST").end(200);
    }

    #[test]
    fn dead_http_collector_does_not_block() {
        let port = dead_port();
        exercise_dead_collector(
            OtlpProtocol::HttpProtobuf,
            format!("http://127.0.0.1:{port}/v1/traces"),
        );
    }

    #[test]
    fn grpc_exporter_builds_and_survives_dead_collector() {
        let port = dead_port();
        exercise_dead_collector(OtlpProtocol::Grpc, format!("http://127.0.0.1:{port}"));
    }

    #[test]
    fn grpc_exporter_can_be_built_inside_a_tokio_runtime() {
        let port = dead_port();
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            let t = Tracing::init_resolved(&resolved(
                format!("http://127.0.0.1:{port}"),
                OtlpProtocol::Grpc,
                always(),
            ))
            .unwrap();
            t.start_request(None, "chat", "POST").end(200);
            // shutdown blocks (bounded); run it off the async thread like the glue would
            tokio::task::spawn_blocking(move || t.shutdown())
                .await
                .unwrap();
        });
    }

    #[test]
    fn https_endpoint_is_refused_up_front() {
        for p in [OtlpProtocol::Grpc, OtlpProtocol::HttpProtobuf] {
            let r = resolved("https://collector:4317".into(), p, always());
            assert!(matches!(
                Tracing::init_resolved(&r),
                Err(TelemetryError::Config(_))
            ));
        }
    }

    #[test]
    fn init_from_config_http() {
        let rx = OtlpReceiver::start();
        let cfg = TelemetryConfig {
            otlp: OtlpConfig {
                enabled: true,
                endpoint: Some(rx.base_url()),
                protocol: Some(OtlpProtocol::HttpProtobuf),
                sample_ratio: Some(1.0),
                service_name: Some("cfg-svc".into()),
                ..OtlpConfig::default()
            },
            ..TelemetryConfig::default()
        };
        let t = Tracing::init(&cfg).unwrap();
        assert!(t.is_enabled());
        t.start_request(None, "completions", "POST").end(200);
        t.shutdown();
        let spans = rx.wait_for_spans(1, Duration::from_secs(10));
        assert_eq!(spans[0].service_name.as_deref(), Some("cfg-svc"));
        assert_eq!(
            spans[0].attr_str(attr::GEN_AI_OPERATION),
            Some("text_completion")
        );
    }
}
