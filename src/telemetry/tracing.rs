//! OTLP trace export (gRPC or HTTP/protobuf) and the per-request span tree: `jimini.request`
//! (server) with `jimini.request_scan`, `jimini.upstream` (client) and `jimini.response_scan`
//! children, GenAI semantic-convention attributes and W3C `traceparent` propagation upstream.
//!
//! The request thread only fills a small record (ids, timestamps, attributes encoded as OTLP
//! bytes when set by `span_attrs`: no OpenTelemetry types, three allocations per sampled trace)
//! and hands it over with one non-blocking `try_send` when the request ends (full queue = trace
//! dropped, counted).
//! The `jimini-spans` thread batches and exports; it polls the queue instead of parking on it so
//! that a send never has to wake it. OTLP/HTTP batches are encoded straight from the records
//! (`otlp_wire`); gRPC goes through the SDK's tonic exporter on a dedicated current-thread Tokio
//! runtime owned by this module. A slow or dead collector therefore never stalls Pingora's
//! runtimes. Context parsing and sampling (`trace_context`) follow W3C Trace Context and the
//! SDK's samplers, decision for decision.

use std::borrow::Cow;
use std::cell::RefCell;
use std::future::Future;
use std::str::FromStr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{self, Receiver, SyncSender, TryRecvError, TrySendError};
use std::sync::{Arc, Mutex};
use std::task::{Poll, Wake, Waker};
use std::thread;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use opentelemetry::trace::{
    SpanContext, SpanId, SpanKind, Status, TraceFlags, TraceId, TraceState,
};
use opentelemetry::{Array, InstrumentationScope, KeyValue, StringValue, Value};
use opentelemetry_otlp::WithExportConfig;
use opentelemetry_sdk::error::{OTelSdkError, OTelSdkResult};
use opentelemetry_sdk::trace::{
    IdGenerator, RandomIdGenerator, SpanData, SpanEvents, SpanExporter, SpanLinks,
};
use opentelemetry_sdk::Resource;

use super::config::{OtlpProtocol, ResolvedOtlp};
use super::otlp_http::PlainHttpClient;
use super::otlp_wire::{TraceExportEncoder, WireSpan, WireSpanKind};
use super::span_attrs::{AttrSet, AttrView};
use super::trace_context::{format_traceparent, keep_tracestate, parse_traceparent, Sampling};
use super::{TelemetryConfig, TelemetryError};

pub use super::span_attrs::{SpanValue, MAX_VALUE_LEN as MAX_ATTR_LEN};

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
    fn wire_kind(self) -> WireSpanKind {
        match self {
            ChildKind::Upstream => WireSpanKind::Client,
            _ => WireSpanKind::Internal,
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

/// Export failures are logged at `warn` at most this often (the rest at `debug`).
const EXPORT_WARNING_INTERVAL: Duration = Duration::from_secs(60);
/// How long the span thread sleeps between polls of an empty queue.
const POLL_INTERVAL: Duration = Duration::from_millis(10);
/// Spans per export request (`OTEL_BSP_MAX_EXPORT_BATCH_SIZE` overrides, capped by the queue).
const DEFAULT_BATCH: usize = 512;
/// Longest time a span waits for its batch (`OTEL_BSP_SCHEDULE_DELAY`, ms, overrides).
const DEFAULT_DELAY: Duration = Duration::from_secs(5);
/// Bytes of encoded attributes reserved per sampled request (Jimini sets about fifteen, about
/// 450 bytes with a model and a few rule ids; more only grows the buffer).
const ATTR_BYTES: usize = 512;
/// Most child spans per request (Jimini records three: request scan, upstream, response scan);
/// later ones are left out.
const MAX_CHILDREN: usize = 8;

/// Spans recorded per request at most (request span + scan/upstream children, retries aside):
/// the queue of requests is sized so that `max_queue` counts spans, as in the SDK.
const SPANS_PER_REQUEST: usize = 4;

/// Runs an exporter's futures on a dedicated runtime: the span thread only blocks on a
/// runtime-agnostic `JoinHandle`, while tonic gets the reactor and timers it needs.
#[derive(Debug)]
struct OnRuntime<E> {
    inner: Arc<E>,
    handle: tokio::runtime::Handle,
}

impl<E: SpanExporter + 'static> SpanExporter for OnRuntime<E> {
    fn export(&self, batch: Vec<SpanData>) -> impl Future<Output = OTelSdkResult> + Send {
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
        // Called once before the exporter moves to its thread, while no clone exists.
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

/// OTLP/HTTP export of batches encoded by [`TraceExportEncoder`], over [`PlainHttpClient`].
#[derive(Debug)]
struct WireHttpExporter {
    client: PlainHttpClient,
    uri: http::Uri,
    headers: http::HeaderMap,
}

impl WireHttpExporter {
    fn new(r: &ResolvedOtlp) -> Result<WireHttpExporter, TelemetryError> {
        let uri: http::Uri = r.endpoint.parse().map_err(|e| {
            TelemetryError::Config(format!("telemetry.otlp.endpoint: '{}': {e}", r.endpoint))
        })?;
        let mut headers = http::HeaderMap::new();
        headers.insert(
            http::header::CONTENT_TYPE,
            http::HeaderValue::from_static("application/x-protobuf"),
        );
        headers.insert(
            http::header::USER_AGENT,
            http::HeaderValue::from_static(concat!("jimini/", env!("CARGO_PKG_VERSION"))),
        );
        for (name, value) in r.headers.pairs() {
            headers.append(name.clone(), value.clone());
        }
        Ok(WireHttpExporter {
            client: PlainHttpClient::new(r.export_timeout),
            uri,
            headers,
        })
    }

    /// POSTs one encoded `ExportTraceServiceRequest`; any non-2xx answer is a failure.
    fn post(&self, body: Bytes) -> Result<(), String> {
        let mut req = http::Request::new(body);
        *req.method_mut() = http::Method::POST;
        *req.uri_mut() = self.uri.clone();
        *req.headers_mut() = self.headers.clone();
        let resp = self.client.send(&req).map_err(|e| e.to_string())?;
        if resp.status().is_success() {
            Ok(())
        } else {
            Err(format!(
                "collector answered HTTP {}",
                resp.status().as_u16()
            ))
        }
    }
}

/// Where the span thread puts finished traces. OTLP/HTTP encodes each span straight into the
/// request body (see `otlp_wire`: no `SpanData`, no per-attribute allocation; it was ~5 µs of
/// CPU per traced request through the SDK exporter); gRPC goes through the SDK's tonic exporter.
enum Pipeline {
    Wire {
        exporter: WireHttpExporter,
        encoder: TraceExportEncoder,
    },
    Sdk {
        exporter: OnRuntime<opentelemetry_otlp::SpanExporter>,
        scope: InstrumentationScope,
        batch: Vec<SpanData>,
    },
}

impl Pipeline {
    fn push(&mut self, record: Box<TraceRecord>) {
        match self {
            Pipeline::Wire { encoder, .. } => record.encode_into(encoder),
            Pipeline::Sdk { scope, batch, .. } => record.into_spans(scope, batch),
        }
    }

    /// Spans waiting for export.
    fn pending(&self) -> usize {
        match self {
            Pipeline::Wire { encoder, .. } => encoder.len(),
            Pipeline::Sdk { batch, .. } => batch.len(),
        }
    }

    /// Exports what is pending; on failure, how many spans were lost and why.
    fn export(&mut self) -> Result<(), (usize, String)> {
        let n = self.pending();
        if n == 0 {
            return Ok(());
        }
        match self {
            Pipeline::Wire { exporter, encoder } => exporter.post(encoder.take_request()),
            Pipeline::Sdk {
                exporter, batch, ..
            } => {
                let spans = std::mem::replace(batch, Vec::with_capacity(n));
                block_on(exporter.export(spans)).map_err(|e| e.to_string())
            }
        }
        .map_err(|e| (n, e))
    }

    fn shutdown(&self, timeout: Duration) -> Result<(), String> {
        match self {
            // Nothing buffered outside the encoder; the idle connection closes on drop.
            Pipeline::Wire { .. } => Ok(()),
            Pipeline::Sdk { exporter, .. } => exporter
                .shutdown_with_timeout(timeout)
                .map_err(|e| e.to_string()),
        }
    }
}

struct ThreadWaker(thread::Thread);

impl Wake for ThreadWaker {
    fn wake(self: Arc<Self>) {
        self.0.unpark();
    }
}

/// Polls a future to completion on the current thread, parking between wake-ups.
fn block_on<F: Future>(fut: F) -> F::Output {
    let mut fut = std::pin::pin!(fut);
    let waker = Waker::from(Arc::new(ThreadWaker(thread::current())));
    let mut cx = std::task::Context::from_waker(&waker);
    loop {
        if let Poll::Ready(v) = fut.as_mut().poll(&mut cx) {
            return v;
        }
        thread::park();
    }
}

/// A child span of `jimini.request`.
#[derive(Debug)]
struct ChildRecord {
    kind: ChildKind,
    span_id: [u8; 8],
    start: SystemTime,
    end: SystemTime,
    /// Empty (no allocation) for Jimini's own children.
    attrs: AttrSet,
    error: bool,
}

impl Default for ChildRecord {
    fn default() -> Self {
        ChildRecord {
            kind: ChildKind::RequestScan,
            span_id: [0; 8],
            start: UNIX_EPOCH,
            end: UNIX_EPOCH,
            attrs: AttrSet::default(),
            error: false,
        }
    }
}

/// The ids a request carries whether or not it is sampled: they are propagated either way.
#[derive(Clone, Copy, Debug)]
struct TraceIds {
    trace_id: [u8; 16],
    span_id: [u8; 8],
    sampled: bool,
    /// Pre-allocated id of the first `jimini.upstream` child (sampled requests only).
    upstream_id: Option<[u8; 8]>,
}

/// A sampled request's spans as the request thread records them and hands them over.
struct TraceRecord {
    ids: TraceIds,
    /// The caller's span, when the request continued an incoming trace.
    parent: Option<[u8; 8]>,
    trace_state: Option<Box<str>>,
    start: SystemTime,
    end: SystemTime,
    error: bool,
    /// The request span's attributes.
    attrs: AttrSet,
    children: [ChildRecord; MAX_CHILDREN],
    child_count: usize,
    upstream_id_used: bool,
}

enum Msg {
    Trace(Box<TraceRecord>),
    Flush(mpsc::Sender<()>),
}

fn status_of(error: bool) -> Status {
    if error {
        Status::error("")
    } else {
        Status::Unset
    }
}

/// Resource attributes (and test fixtures) as an attribute set. Arrays other than string
/// arrays are written as their display string.
pub(crate) fn attrs_from_key_values(kvs: &[KeyValue]) -> AttrSet {
    let mut set = AttrSet::default();
    for kv in kvs {
        let key = kv.key.as_str();
        match &kv.value {
            Value::Bool(b) => set.push(key, SpanValue::Bool(*b)),
            Value::I64(i) => set.push(key, SpanValue::Int(*i)),
            Value::F64(d) => set.push(key, SpanValue::Double(*d)),
            Value::String(s) => set.push(key, SpanValue::Str(s.as_str())),
            Value::Array(Array::String(items)) => {
                set.push_list(key, items.iter().map(StringValue::as_str))
            }
            other => set.push(key, SpanValue::Str(&other.as_str())),
        }
    }
    set
}

/// One span's attributes as the SDK's exporter takes them (gRPC export only).
fn key_values(attrs: &AttrSet) -> Vec<KeyValue> {
    attrs
        .iter()
        .map(|(key, value)| {
            let value = match value {
                AttrView::Str(s) => Value::from(s.to_owned()),
                AttrView::Int(i) => Value::I64(i),
                AttrView::Bool(b) => Value::Bool(b),
                AttrView::Double(d) => Value::F64(d),
                AttrView::List(items) => Value::Array(Array::String(
                    items
                        .iter()
                        .map(|s| StringValue::from(s.to_owned()))
                        .collect(),
                )),
            };
            KeyValue::new(key.to_owned(), value)
        })
        .collect()
}

impl TraceRecord {
    fn children(&self) -> &[ChildRecord] {
        &self.children[..self.child_count]
    }

    fn into_spans(self, scope: &InstrumentationScope, out: &mut Vec<SpanData>) {
        let trace_state = self
            .trace_state
            .as_deref()
            .and_then(|s| TraceState::from_str(s).ok())
            .unwrap_or_default();
        let flags = if self.ids.sampled {
            TraceFlags::SAMPLED
        } else {
            TraceFlags::default()
        };
        let trace_id = TraceId::from_bytes(self.ids.trace_id);
        let request_id = SpanId::from_bytes(self.ids.span_id);
        for c in self.children() {
            out.push(SpanData {
                span_context: SpanContext::new(
                    trace_id,
                    SpanId::from_bytes(c.span_id),
                    flags,
                    false,
                    trace_state.clone(),
                ),
                parent_span_id: request_id,
                parent_span_is_remote: false,
                span_kind: c.kind.span_kind(),
                name: Cow::Borrowed(c.kind.span_name()),
                start_time: c.start,
                end_time: c.end.max(c.start),
                attributes: key_values(&c.attrs),
                dropped_attributes_count: c.attrs.dropped(),
                events: SpanEvents::default(),
                links: SpanLinks::default(),
                status: status_of(c.error),
                instrumentation_scope: scope.clone(),
            });
        }
        out.push(SpanData {
            span_context: SpanContext::new(trace_id, request_id, flags, false, trace_state),
            parent_span_id: self.parent.map_or(SpanId::INVALID, SpanId::from_bytes),
            parent_span_is_remote: self.parent.is_some(),
            span_kind: SpanKind::Server,
            name: Cow::Borrowed(SPAN_REQUEST),
            start_time: self.start,
            end_time: self.end.max(self.start),
            attributes: key_values(&self.attrs),
            dropped_attributes_count: self.attrs.dropped(),
            events: SpanEvents::default(),
            links: SpanLinks::default(),
            status: status_of(self.error),
            instrumentation_scope: scope.clone(),
        });
    }

    /// Encodes the children, then the request span, as `into_spans` orders them.
    fn encode_into(&self, encoder: &mut TraceExportEncoder) {
        let trace_state = self.trace_state.as_deref().unwrap_or_default();
        let trace_flags = u8::from(self.ids.sampled);
        for c in self.children() {
            encoder.push(&WireSpan {
                trace_id: self.ids.trace_id,
                span_id: c.span_id,
                parent_span_id: Some(self.ids.span_id),
                parent_is_remote: false,
                trace_state,
                trace_flags,
                name: c.kind.span_name(),
                kind: c.kind.wire_kind(),
                start: c.start,
                end: c.end.max(c.start),
                attributes: &c.attrs,
                error: c.error,
            });
        }
        encoder.push(&WireSpan {
            trace_id: self.ids.trace_id,
            span_id: self.ids.span_id,
            parent_span_id: self.parent,
            parent_is_remote: self.parent.is_some(),
            trace_state,
            trace_flags,
            name: SPAN_REQUEST,
            kind: WireSpanKind::Server,
            start: self.start,
            end: self.end.max(self.start),
            attributes: &self.attrs,
            error: self.error,
        });
    }
}

/// Batching settings of the span thread.
#[derive(Clone, Copy, Debug)]
struct BatchSettings {
    max_batch: usize,
    delay: Duration,
    export_timeout: Duration,
}

impl BatchSettings {
    fn from_env(r: &ResolvedOtlp) -> BatchSettings {
        let env_num = |k: &str| {
            std::env::var(k)
                .ok()
                .and_then(|v| v.trim().parse::<u64>().ok())
        };
        let max_batch = env_num("OTEL_BSP_MAX_EXPORT_BATCH_SIZE")
            .and_then(|n| usize::try_from(n).ok())
            .unwrap_or(DEFAULT_BATCH)
            .clamp(1, r.max_queue.max(1));
        let delay = env_num("OTEL_BSP_SCHEDULE_DELAY")
            .map(Duration::from_millis)
            .unwrap_or(DEFAULT_DELAY)
            .max(POLL_INTERVAL);
        BatchSettings {
            max_batch,
            delay,
            export_timeout: r.export_timeout,
        }
    }
}

/// The span thread: drains the queue, encodes or converts each trace, exports full batches at
/// once and partial ones after `delay`; on stop it exports what is queued and shuts down.
fn span_thread(
    rx: Receiver<Msg>,
    mut pipeline: Pipeline,
    settings: BatchSettings,
    stop: Arc<AtomicBool>,
    failed_exports: Arc<AtomicU64>,
) {
    let mut oldest: Option<Instant> = None;
    let mut last_warning: Option<Instant> = None;
    let mut export = |pipeline: &mut Pipeline| {
        if let Err((n, e)) = pipeline.export() {
            let failed = failed_exports.fetch_add(n as u64, Ordering::Relaxed) + n as u64;
            // An unreachable collector fails every batch: say so, but at most once a minute.
            if last_warning.is_none_or(|t| t.elapsed() >= EXPORT_WARNING_INTERVAL) {
                last_warning = Some(Instant::now());
                tracing::warn!(error = %e, failed_spans_total = failed, "trace export failed");
            } else {
                tracing::debug!(error = %e, spans = n, "trace export failed");
            }
        }
    };
    loop {
        let stopping = stop.load(Ordering::Acquire);
        let mut flushes = Vec::new();
        loop {
            match rx.try_recv() {
                Ok(Msg::Trace(record)) => {
                    oldest.get_or_insert_with(Instant::now);
                    pipeline.push(record);
                    if pipeline.pending() >= settings.max_batch {
                        export(&mut pipeline);
                        oldest = None;
                    }
                }
                Ok(Msg::Flush(ack)) => flushes.push(ack),
                Err(TryRecvError::Empty) => break,
                Err(TryRecvError::Disconnected) => {
                    stop.store(true, Ordering::Release);
                    break;
                }
            }
        }
        let due = oldest.is_some_and(|t| t.elapsed() >= settings.delay);
        if due || !flushes.is_empty() || stopping {
            export(&mut pipeline);
            oldest = None;
        }
        for ack in flushes {
            let _ = ack.send(());
        }
        if stopping {
            break;
        }
        thread::sleep(POLL_INTERVAL);
    }
    if let Err(e) = pipeline.shutdown(settings.export_timeout) {
        tracing::debug!(error = %e, "trace exporter shutdown incomplete");
    }
}

struct Inner {
    queue: SyncSender<Msg>,
    sampling: Sampling,
    ids: RandomIdGenerator,
    stop: Arc<AtomicBool>,
    done: Mutex<Option<mpsc::Receiver<()>>>,
    runtime: Mutex<Option<RuntimeThread>>,
    shut: AtomicBool,
    shutdown_timeout: Duration,
    dropped: AtomicU64,
    failed_exports: Arc<AtomicU64>,
}

impl Inner {
    /// (traces dropped on a full queue, spans whose export failed) since start.
    fn loss(&self) -> (u64, u64) {
        (
            self.dropped.load(Ordering::Relaxed),
            self.failed_exports.load(Ordering::Relaxed),
        )
    }

    fn shutdown(&self) {
        if self.shut.swap(true, Ordering::AcqRel) {
            return;
        }
        self.stop.store(true, Ordering::Release);
        let done = self.done.lock().unwrap_or_else(|e| e.into_inner()).take();
        if let Some(done) = done {
            // Bounded wait; a thread stuck on a black-hole collector finishes on its own.
            let _ = done.recv_timeout(self.shutdown_timeout);
        }
        let rt = self
            .runtime
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take();
        if let Some(rt) = rt {
            rt.stop(self.shutdown_timeout);
        }
        let (dropped, failed) = self.loss();
        if dropped > 0 || failed > 0 {
            tracing::info!(
                dropped_traces = dropped,
                failed_spans = failed,
                "trace export summary"
            );
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

    /// From fully resolved settings (no environment lookups besides `OTEL_BSP_*` batching).
    pub fn init_resolved(r: &ResolvedOtlp) -> Result<Tracing, TelemetryError> {
        if r.endpoint.starts_with("https://") {
            // Neither the tonic client nor `PlainHttpClient` is built with TLS; fail loudly
            // instead of silently dropping every span.
            return Err(TelemetryError::Config(format!(
                "telemetry.otlp.endpoint: '{}': TLS to the collector is not supported by this \
                 build; export over http:// to a local collector or sidecar",
                r.endpoint
            )));
        }
        let exp_err = |e: opentelemetry_otlp::ExporterBuildError| {
            TelemetryError::Exporter(format!("{} ({}): {e}", r.endpoint, proto_name(r.protocol)))
        };
        let resource = Resource::builder()
            .with_service_name(r.service_name.clone())
            .with_attribute(KeyValue::new("service.version", env!("CARGO_PKG_VERSION")))
            .build();
        let scope = InstrumentationScope::builder("jimini")
            .with_version(env!("CARGO_PKG_VERSION"))
            .build();
        let (pipeline, runtime) = match r.protocol {
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
                let mut exporter = OnRuntime {
                    inner: Arc::new(exporter),
                    handle: rt.handle.clone(),
                };
                exporter.set_resource(&resource);
                let pipeline = Pipeline::Sdk {
                    exporter,
                    scope,
                    batch: Vec::new(),
                };
                (pipeline, Some(rt))
            }
            OtlpProtocol::HttpProtobuf => {
                let kvs: Vec<KeyValue> = resource
                    .iter()
                    .map(|(k, v)| KeyValue::new(k.clone(), v.clone()))
                    .collect();
                let encoder = TraceExportEncoder::new(
                    &attrs_from_key_values(&kvs),
                    scope.name(),
                    scope.version().unwrap_or_default(),
                );
                let pipeline = Pipeline::Wire {
                    exporter: WireHttpExporter::new(r)?,
                    encoder,
                };
                (pipeline, None)
            }
        };
        let settings = BatchSettings::from_env(r);
        let (queue, rx) = mpsc::sync_channel((r.max_queue / SPANS_PER_REQUEST).max(1));
        let stop = Arc::new(AtomicBool::new(false));
        let failed_exports = Arc::new(AtomicU64::new(0));
        let (done_tx, done_rx) = mpsc::channel();
        {
            let stop = Arc::clone(&stop);
            let failed = Arc::clone(&failed_exports);
            thread::Builder::new()
                .name("jimini-spans".into())
                .spawn(move || {
                    span_thread(rx, pipeline, settings, stop, failed);
                    let _ = done_tx.send(());
                })
                .map_err(|e| TelemetryError::Runtime(e.to_string()))?;
        }
        Ok(Tracing {
            inner: Some(Arc::new(Inner {
                queue,
                sampling: Sampling::from_spec(&r.sampler),
                ids: RandomIdGenerator::default(),
                stop,
                done: Mutex::new(Some(done_rx)),
                runtime: Mutex::new(runtime),
                shut: AtomicBool::new(false),
                shutdown_timeout: r.export_timeout + Duration::from_secs(1),
                dropped: AtomicU64::new(0),
                failed_exports,
            })),
        })
    }

    pub fn is_enabled(&self) -> bool {
        self.inner.is_some()
    }

    /// Open the `jimini.request` span, continuing the caller's trace when `traceparent` is a
    /// valid W3C header (an invalid one starts a new trace; `tracestate` is kept on the spans
    /// only with a valid parent).
    pub fn start_request(
        &self,
        traceparent: Option<&str>,
        tracestate: Option<&str>,
        route: &'static str,
        method: &str,
    ) -> RequestTrace {
        let Some(inner) = &self.inner else {
            return RequestTrace { active: None };
        };
        let start = SystemTime::now();
        let parent = traceparent.and_then(parse_traceparent);
        let trace_id = match &parent {
            Some(p) => p.trace_id,
            None => inner.ids.new_trace_id().to_bytes(),
        };
        let sampled = inner.sampling.sampled(parent.as_ref(), &trace_id);
        let ids = TraceIds {
            trace_id,
            span_id: inner.ids.new_span_id().to_bytes(),
            sampled,
            upstream_id: sampled.then(|| inner.ids.new_span_id().to_bytes()),
        };
        let record = sampled.then(|| {
            let mut attrs = AttrSet::with_capacity(ATTR_BYTES);
            push_request_head(&mut attrs, route, method);
            Box::new(TraceRecord {
                ids,
                parent: parent.map(|p| p.span_id),
                trace_state: parent
                    .and(tracestate)
                    .and_then(keep_tracestate)
                    .map(Box::from),
                start,
                end: start,
                error: false,
                attrs,
                children: std::array::from_fn(|_| ChildRecord::default()),
                child_count: 0,
                upstream_id_used: false,
            })
        });
        RequestTrace {
            active: Some(Active {
                inner: Arc::clone(inner),
                ids,
                record,
            }),
        }
    }

    /// Export everything queued so far (bounded by the export timeout). For tests and
    /// graceful shutdown paths.
    pub fn flush(&self) {
        let Some(inner) = &self.inner else { return };
        let deadline = Instant::now() + inner.shutdown_timeout;
        let (ack_tx, ack_rx) = mpsc::channel();
        let mut msg = Msg::Flush(ack_tx);
        loop {
            match inner.queue.try_send(msg) {
                Ok(()) => break,
                Err(TrySendError::Full(m)) if Instant::now() < deadline => {
                    msg = m;
                    thread::sleep(POLL_INTERVAL);
                }
                Err(_) => return,
            }
        }
        if ack_rx
            .recv_timeout(deadline.saturating_duration_since(Instant::now()))
            .is_err()
        {
            tracing::debug!("trace flush incomplete");
        }
    }

    /// `(traces dropped on a full queue, spans whose export failed)` since start.
    pub fn loss_counters(&self) -> (u64, u64) {
        self.inner.as_ref().map_or((0, 0), |i| i.loss())
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

/// The request span's first attributes: method, route, GenAI system and operation.
fn request_head(route: &str, method: &str) -> AttrSet {
    let mut attrs = AttrSet::default();
    attrs.push(attr::HTTP_METHOD, SpanValue::Str(method));
    attrs.push(attr::HTTP_ROUTE, SpanValue::Str(route));
    if let Some(op) = gen_ai_operation(route) {
        let system = if route == "messages" {
            "anthropic"
        } else {
            "openai"
        };
        attrs.push(attr::GEN_AI_SYSTEM, SpanValue::Str(system));
        attrs.push(attr::GEN_AI_OPERATION, SpanValue::Str(op));
    }
    attrs
}

/// Distinct (route, method) heads a thread keeps encoded; methods come from clients, so the
/// memo is bounded and later pairs are encoded each time.
const MAX_MEMO_HEADS: usize = 64;

thread_local! {
    static REQUEST_HEADS: RefCell<Vec<(&'static str, Box<str>, AttrSet)>> =
        const { RefCell::new(Vec::new()) };
}

/// Appends [`request_head`], encoded once per thread for each (route, method).
fn push_request_head(attrs: &mut AttrSet, route: &'static str, method: &str) {
    REQUEST_HEADS.with(|memo| {
        let Ok(mut memo) = memo.try_borrow_mut() else {
            attrs.extend_from(&request_head(route, method));
            return;
        };
        if let Some((_, _, head)) = memo.iter().find(|(r, m, _)| *r == route && **m == *method) {
            attrs.extend_from(head);
            return;
        }
        let head = request_head(route, method);
        attrs.extend_from(&head);
        if memo.len() < MAX_MEMO_HEADS {
            memo.push((route, method.into(), head));
        }
    });
}

/// A request's trace while it runs.
struct Active {
    inner: Arc<Inner>,
    ids: TraceIds,
    /// Present when sampled: what will be exported.
    record: Option<Box<TraceRecord>>,
}

/// One request's trace. Inert (a `None`) when tracing is disabled.
pub struct RequestTrace {
    active: Option<Active>,
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
        self.active.as_ref().is_some_and(|a| a.record.is_some())
    }

    fn record(&mut self) -> Option<&mut TraceRecord> {
        self.active.as_mut()?.record.as_deref_mut()
    }

    /// Set an attribute on the request span (no-op unless recording). String values longer
    /// than [`MAX_ATTR_LEN`] bytes are cut at a character boundary: values such as the model
    /// come from the client's body, and a span is no place for a megabyte of it.
    pub fn set_attr<'v>(&mut self, key: &'static str, value: impl Into<SpanValue<'v>>) {
        if let Some(r) = self.record() {
            r.attrs.push(key, value.into());
        }
    }

    /// `gen_ai.usage.input_tokens` / `gen_ai.usage.output_tokens` (OTel integers are i64).
    pub fn set_usage(&mut self, input_tokens: u64, output_tokens: u64) {
        let clamp = |n: u64| i64::try_from(n).unwrap_or(i64::MAX);
        self.set_attr(attr::GEN_AI_INPUT_TOKENS, clamp(input_tokens));
        self.set_attr(attr::GEN_AI_OUTPUT_TOKENS, clamp(output_tokens));
    }

    /// `jimini.rules` as a string array.
    pub fn set_rules<'v, I>(&mut self, rules: I)
    where
        I: IntoIterator<Item = &'v str>,
        I::IntoIter: Clone,
    {
        if let Some(r) = self.record() {
            r.attrs.push_list(attr::RULES, rules);
        }
    }

    /// Record a finished child span with explicit timestamps. The first `Upstream` child gets the
    /// span id already announced by `upstream_traceparent`; later ones (retries, fallbacks) get
    /// fresh ids. An `error.type` attribute marks the child as failed.
    pub fn child(
        &mut self,
        kind: ChildKind,
        start: SystemTime,
        end: SystemTime,
        attrs: &[(&'static str, SpanValue<'_>)],
    ) {
        let Some(a) = self.active.as_mut() else {
            return;
        };
        let Some(r) = a.record.as_deref_mut() else {
            return;
        };
        if r.child_count == MAX_CHILDREN {
            return;
        }
        let preset = if kind == ChildKind::Upstream && !r.upstream_id_used {
            r.upstream_id_used = true;
            a.ids.upstream_id
        } else {
            None
        };
        let span_id = preset.unwrap_or_else(|| a.inner.ids.new_span_id().to_bytes());
        let mut set = AttrSet::default();
        for (key, value) in attrs {
            set.push(key, *value);
        }
        r.children[r.child_count] = ChildRecord {
            kind,
            span_id,
            start,
            end,
            attrs: set,
            error: attrs.iter().any(|(key, _)| *key == attr::ERROR_TYPE),
        };
        r.child_count += 1;
    }

    /// W3C `traceparent` to send upstream: this trace id, the `jimini.upstream` span id (or the
    /// request span id when unsampled), and the sampled flag. `None` when tracing is disabled
    /// (then the client's own header, if any, should pass through untouched).
    pub fn upstream_traceparent(&self) -> Option<String> {
        let ids = &self.active.as_ref()?.ids;
        let header = format_traceparent(
            ids.trace_id,
            ids.upstream_id.unwrap_or(ids.span_id),
            ids.sampled,
        );
        std::str::from_utf8(&header).ok().map(str::to_owned)
    }

    /// Trace id (hex) for log correlation, when tracing is on.
    pub fn trace_id(&self) -> Option<String> {
        Some(hex::encode(self.active.as_ref()?.ids.trace_id))
    }

    /// Close the request span with the status sent to the client (5xx marks it as an error)
    /// and hand a sampled trace to the span thread without blocking (full queue: dropped).
    pub fn end(self, status: u16) {
        let Some(Active {
            inner,
            record: Some(mut record),
            ..
        }) = self.active
        else {
            return;
        };
        record
            .attrs
            .push(attr::HTTP_STATUS, SpanValue::Int(i64::from(status)));
        record.end = SystemTime::now();
        record.error = status >= 500;
        if inner.queue.try_send(Msg::Trace(record)).is_err() {
            inner.dropped.fetch_add(1, Ordering::Relaxed);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::otlp_receiver::OtlpReceiver;
    use super::*;
    use crate::telemetry::config::{OtlpConfig, SamplerSpec};

    fn assert_send_sync<T: Send + Sync>() {}

    #[test]
    fn traceparent_matches_the_sdk_ids_display() {
        for (trace, span, sampled) in [([0x0a; 16], [0xb7; 8], true), ([0; 16], [255; 8], false)] {
            let header = format_traceparent(trace, span, sampled);
            assert_eq!(
                std::str::from_utf8(&header).unwrap(),
                format!(
                    "00-{}-{}-{:02x}",
                    TraceId::from_bytes(trace),
                    SpanId::from_bytes(span),
                    u8::from(sampled)
                )
            );
        }
    }

    #[test]
    fn long_string_attributes_are_clipped_on_a_char_boundary() {
        let rx = OtlpReceiver::start();
        let t = Tracing::init_resolved(&resolved(
            rx.endpoint(),
            OtlpProtocol::HttpProtobuf,
            always(),
        ))
        .unwrap();
        let mut rt = t.start_request(None, None, "chat", "POST");
        let huge = "é".repeat(100_000);
        rt.set_attr(attr::GEN_AI_REQUEST_MODEL, huge.as_str());
        rt.set_attr(attr::REQUEST_ID, "short");
        rt.end(200);
        t.shutdown();
        let spans = rx.wait_for_spans(1, Duration::from_secs(10));
        let model = spans[0].attr_str(attr::GEN_AI_REQUEST_MODEL).unwrap();
        assert_eq!(
            model.len(),
            MAX_ATTR_LEN,
            "256 bytes = 128 two-byte characters"
        );
        assert!(huge.starts_with(model));
        assert_eq!(spans[0].attr_str(attr::REQUEST_ID), Some("short"));
    }

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
            headers: Default::default(),
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
            None,
            "chat",
            "POST",
        );
        assert!(!rt.is_recording());
        rt.set_attr(attr::DECISION, "allow");
        rt.child(
            ChildKind::Upstream,
            SystemTime::now(),
            SystemTime::now(),
            &[],
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
        let mut rt = t.start_request(
            Some(incoming),
            Some("rojo=00f067aa0ba902b7"),
            "chat",
            "POST",
        );
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
            &[("jimini.findings", SpanValue::Int(2))],
        );
        rt.child(
            ChildKind::Upstream,
            ms(1),
            ms(50),
            &[(attr::UPSTREAM, SpanValue::Str("openai"))],
        );
        rt.child(
            ChildKind::Upstream,
            ms(50),
            ms(60),
            &[(attr::ERROR_TYPE, SpanValue::Str("timeout"))],
        );
        rt.child(ChildKind::ResponseScan, ms(60), ms(61), &[]);
        rt.end(200);
        t.shutdown();

        let spans = rx.wait_for_spans(5, Duration::from_secs(10));
        assert_eq!(spans.len(), 5, "{spans:#?}");
        let req = spans.iter().find(|s| s.name == SPAN_REQUEST).unwrap();
        assert_eq!(req.trace_id, "0af7651916cd43dd8448eb211c80319c");
        assert_eq!(req.parent_span_id, "b7ad6b7169203331");
        assert_eq!(req.kind, 2, "server");
        assert!(spans
            .iter()
            .all(|s| s.trace_state == "rojo=00f067aa0ba902b7"));
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
    fn spans_arrive_at_otlp_grpc_receiver() {
        let rx = OtlpReceiver::start_grpc();
        let t =
            Tracing::init_resolved(&resolved(rx.base_url(), OtlpProtocol::Grpc, always())).unwrap();
        let mut rt = t.start_request(None, None, "responses", "POST");
        rt.set_attr(attr::DECISION, "block");
        rt.set_rules(["secrets.aws"]);
        let t0 = SystemTime::now();
        rt.child(
            ChildKind::RequestScan,
            t0,
            t0 + Duration::from_micros(250),
            &[],
        );
        rt.end(403);
        // A second request in its own batch: the connection is reused across exports.
        t.flush();
        t.start_request(None, None, "embeddings", "POST").end(200);
        t.shutdown();
        let spans = rx.wait_for_spans(3, Duration::from_secs(10));
        assert_eq!(spans.len(), 3, "{spans:#?}");
        assert_eq!(rx.requests(), 2, "one export per flush");
        let req = spans
            .iter()
            .find(|s| s.attr_str(attr::HTTP_ROUTE) == Some("responses"))
            .unwrap();
        assert_eq!(req.name, SPAN_REQUEST);
        assert_eq!(req.parent_span_id, "");
        assert_eq!(req.service_name.as_deref(), Some("jimini-test"));
        assert_eq!(req.attr_str(attr::DECISION), Some("block"));
        assert_eq!(req.attr_i64(attr::HTTP_STATUS), Some(403));
        assert_eq!(req.status_code, 0, "4xx is not a server error");
        assert_eq!(
            req.attr_str_array(attr::RULES),
            Some(vec!["secrets.aws".to_string()])
        );
        let scan = spans.iter().find(|s| s.name == SPAN_REQUEST_SCAN).unwrap();
        assert_eq!(scan.parent_span_id, req.span_id);
        assert_eq!(scan.trace_id, req.trace_id);
        assert_eq!(scan.end_unix_nano - scan.start_unix_nano, 250_000);
    }

    #[test]
    fn http_export_sends_otlp_headers_and_counts_rejected_batches() {
        let rx = OtlpReceiver::start();
        let cfg = OtlpConfig {
            enabled: true,
            endpoint: Some(rx.endpoint()),
            protocol: Some(OtlpProtocol::HttpProtobuf),
            ..OtlpConfig::default()
        };
        let env = |k: &str| {
            (k == "OTEL_EXPORTER_OTLP_HEADERS")
                .then(|| "authorization=Bearer%20s3cr3t, x-tenant = blue".to_owned())
        };
        let t = Tracing::init_resolved(&cfg.resolve_with(&env).unwrap()).unwrap();
        t.start_request(None, None, "chat", "POST").end(200);
        t.flush();
        assert_eq!(rx.wait_for_spans(1, Duration::from_secs(10)).len(), 1);
        assert_eq!(
            rx.last_header("authorization").as_deref(),
            Some("Bearer s3cr3t")
        );
        assert_eq!(rx.last_header("x-tenant").as_deref(), Some("blue"));
        assert_eq!(
            rx.last_header("content-type").as_deref(),
            Some("application/x-protobuf")
        );
        t.shutdown();

        // A collector that answers 503: the batch is lost and counted, nothing blocks.
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap();
        std::thread::spawn(move || {
            use std::io::{Read, Write};
            for conn in l.incoming().take(4) {
                let Ok(mut c) = conn else { continue };
                let mut buf = [0u8; 65536];
                let _ = c.read(&mut buf);
                let _ = c.write_all(
                    b"HTTP/1.1 503 Service Unavailable\r\ncontent-length: 0\r\nconnection: close\r\n\r\n",
                );
            }
        });
        let t = Tracing::init_resolved(&resolved(
            format!("http://{addr}/v1/traces"),
            OtlpProtocol::HttpProtobuf,
            always(),
        ))
        .unwrap();
        let mut rt = t.start_request(None, None, "chat", "POST");
        rt.child(
            ChildKind::Upstream,
            SystemTime::now(),
            SystemTime::now(),
            &[],
        );
        rt.end(200);
        t.flush();
        assert_eq!(t.loss_counters(), (0, 2), "both spans of the batch failed");
        t.shutdown();
    }

    #[test]
    fn a_full_queue_drops_traces_without_blocking_and_counts_them() {
        // A collector that accepts connections and never answers holds the span thread in
        // its first export; the queue (max_queue 8 spans = 2 requests) then fills up.
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let mut r = resolved(
            format!("http://{}/v1/traces", l.local_addr().unwrap()),
            OtlpProtocol::HttpProtobuf,
            always(),
        );
        r.max_queue = 8;
        let t = Tracing::init_resolved(&r).unwrap();
        for _ in 0..200 {
            t.start_request(None, None, "chat", "POST").end(200);
        }
        let (dropped, _) = t.loss_counters();
        assert!(dropped >= 190, "dropped {dropped}");
        t.shutdown();
        drop(l);
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
        let a = t.start_request(None, None, "embeddings", "POST");
        let b = t.start_request(Some("garbage"), Some("rojo=1"), "models", "GET");
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
            Some("rojo=1"),
            "chat",
            "POST",
        );
        assert!(!c.is_recording());
        c.set_attr(attr::DECISION, "allow");
        c.child(
            ChildKind::RequestScan,
            SystemTime::now(),
            SystemTime::now(),
            &[],
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
        assert!(
            spans.iter().all(|s| s.trace_state.is_empty()),
            "no tracestate without a valid parent"
        );
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
        let r = t.start_request(None, None, "chat", "POST");
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
            let mut r = t.start_request(None, None, "chat", "POST");
            r.set_attr(attr::REQUEST_ID, format!("r{i}").as_str());
            r.child(
                ChildKind::Upstream,
                SystemTime::now(),
                SystemTime::now(),
                &[],
            );
            r.end(200);
        }
        t.flush();
        let (_, failed) = t.loss_counters();
        assert!(
            failed > 0,
            "exports to a dead collector are counted as failed"
        );
        let t2 = t.clone();
        t.shutdown();
        t2.shutdown(); // idempotent
                       // after shutdown calls still return immediately
        t2.start_request(None, None, "chat", "POST").end(200);
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
            t.start_request(None, None, "chat", "POST").end(200);
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
        t.start_request(None, None, "completions", "POST").end(200);
        t.shutdown();
        let spans = rx.wait_for_spans(1, Duration::from_secs(10));
        assert_eq!(spans[0].service_name.as_deref(), Some("cfg-svc"));
        assert_eq!(
            spans[0].attr_str(attr::GEN_AI_OPERATION),
            Some("text_completion")
        );
    }
}
