//! The mock's HTTP server: lifecycle ([`MockServer`] on the caller's runtime or its own thread, and the
//! CLI [`run`]), request routing, recording, fault planning (sticky fault + `x-mock-*` headers) and
//! response delivery (incremental SSE with delays, gzip, abrupt mid-body close), plus `/mock/*` control.

use std::collections::VecDeque;
use std::io::{Read as _, Write as _};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use anyhow::Context as _;
use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{header, HeaderMap, HeaderName, HeaderValue, Method, StatusCode, Uri};
use axum::response::Response;
use axum::serve::ListenerExt as _;
use axum::Router;
use base64::Engine as _;
use bytes::Bytes;
use flate2::write::GzEncoder;
use serde::{Deserialize, Serialize};
use tokio::net::TcpListener;
use tokio::sync::watch;

use super::common::{error_body, fault_message, new_id, Ctx, Flavor, Reply};
use super::{anthropic, chat, embeddings, responses, Fault, MockConfig, RecordedRequest};

/// How long a stopping server lets in-flight responses finish before dropping them.
const SHUTDOWN_GRACE: Duration = Duration::from_millis(500);
/// Pause before an injected abrupt close, so the bytes already produced are flushed to the socket.
const DROP_FLUSH_PAUSE: Duration = Duration::from_millis(20);
/// Upper bound for `x-mock-delay-ms`, so a typo cannot park a connection forever.
const MAX_HEADER_DELAY: Duration = Duration::from_secs(600);

const SSE_CONTENT_TYPE: HeaderValue = HeaderValue::from_static("text/event-stream; charset=utf-8");
const JSON_CONTENT_TYPE: HeaderValue = HeaderValue::from_static("application/json");
const X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// A request as stored (cheap to capture; converted to [`RecordedRequest`] on demand).
struct Record {
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
}

impl Record {
    fn to_public(&self) -> RecordedRequest {
        RecordedRequest {
            method: self.method.as_str().to_string(),
            path: self
                .uri
                .path_and_query()
                .map(|p| p.as_str().to_string())
                .unwrap_or_else(|| self.uri.path().to_string()),
            headers: self
                .headers
                .iter()
                .map(|(n, v)| {
                    (
                        n.as_str().to_string(),
                        String::from_utf8_lossy(v.as_bytes()).into_owned(),
                    )
                })
                .collect(),
            body: self.body.clone(),
        }
    }
}

/// State shared by all connections of one server.
struct Shared {
    cfg: MockConfig,
    records: Mutex<VecDeque<Record>>,
    /// Requests seen since start or the last clear (recorded or not).
    total: AtomicUsize,
    /// Fast path: skip the fault lock when no sticky fault is set.
    has_fault: AtomicBool,
    fault: Mutex<Option<Fault>>,
    /// Requests seen under the current sticky fault (for `FailFirst`).
    fault_seen: AtomicUsize,
    stop: watch::Receiver<bool>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic while holding these locks cannot leave the data inconsistent (plain pushes/assignments).
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Shared {
    fn record(&self, rec: Record) {
        let cap = self.cfg.max_recorded;
        if cap == 0 {
            return;
        }
        let mut q = lock(&self.records);
        while q.len() >= cap {
            q.pop_front();
        }
        q.push_back(rec);
    }

    fn set_fault(&self, f: Option<Fault>) {
        let mut g = lock(&self.fault);
        self.fault_seen.store(0, Ordering::SeqCst);
        self.has_fault.store(f.is_some(), Ordering::SeqCst);
        *g = f;
    }

    /// Effective behaviour for one request: the sticky fault, overridden per field by headers.
    fn plan(&self, headers: &HeaderMap) -> Plan {
        let mut plan = Plan {
            status: None,
            hang: false,
            drop_after: None,
            delay: None,
            gzip: false,
            chunk_chars: self.cfg.chunk_chars.max(1),
        };
        if self.has_fault.load(Ordering::Relaxed) {
            match lock(&self.fault).clone() {
                Some(Fault::Status(s)) => plan.status = Some(s),
                Some(Fault::Hang) => plan.hang = true,
                Some(Fault::DropMidStream { after_events }) => plan.drop_after = Some(after_events),
                Some(Fault::Delay(d)) => plan.delay = Some(d),
                Some(Fault::Gzip) => plan.gzip = true,
                Some(Fault::FailFirst { n, status })
                    if self.fault_seen.fetch_add(1, Ordering::SeqCst) < n =>
                {
                    plan.status = Some(status);
                }
                Some(Fault::FailFirst { .. }) | None => {}
            }
        }
        let num = |name: &str| -> Option<u64> {
            headers
                .get(name)
                .and_then(|v| v.to_str().ok())
                .and_then(|s| s.trim().parse().ok())
        };
        let flag = |name: &str| -> bool {
            headers.get(name).is_some_and(|v| {
                matches!(
                    v.as_bytes().trim_ascii(),
                    b"1" | b"true" | b"yes" | b"on" | b"TRUE" | b"True"
                )
            })
        };
        if let Some(s) = num("x-mock-status").filter(|s| (400..=599).contains(s)) {
            plan.status = Some(s as u16);
        }
        if flag("x-mock-hang") {
            plan.hang = true;
        }
        if let Some(n) = num("x-mock-drop-after") {
            plan.drop_after = Some(n as usize);
        }
        if let Some(ms) = num("x-mock-delay-ms") {
            plan.delay = Some(Duration::from_millis(ms).min(MAX_HEADER_DELAY));
        }
        if flag("x-mock-gzip") {
            plan.gzip = true;
        }
        if let Some(n) = num("x-mock-chunk-chars") {
            plan.chunk_chars = (n as usize).max(1);
        }
        plan
    }

    /// Resolves when the server is stopping (or its handle is gone).
    async fn stopped(&self) {
        let mut rx = self.stop.clone();
        let _ = rx.wait_for(|s| *s).await;
    }
}

struct Plan {
    status: Option<u16>,
    hang: bool,
    drop_after: Option<usize>,
    delay: Option<Duration>,
    gzip: bool,
    chunk_chars: usize,
}

/// Handle to a running mock upstream. Dropping it (or [`MockServer::shutdown`]) stops the server.
pub struct MockServer {
    /// The bound address (useful with port 0).
    pub addr: SocketAddr,
    shared: Arc<Shared>,
    stop: watch::Sender<bool>,
    thread: Mutex<Option<std::thread::JoinHandle<()>>>,
    task: Mutex<Option<tokio::task::JoinHandle<()>>>,
}

impl std::fmt::Debug for MockServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MockServer")
            .field("addr", &self.addr)
            .finish()
    }
}

impl MockServer {
    fn parts(cfg: MockConfig) -> (Arc<Shared>, watch::Sender<bool>, watch::Receiver<bool>) {
        let (tx, rx) = watch::channel(false);
        let shared = Arc::new(Shared {
            cfg,
            records: Mutex::new(VecDeque::new()),
            total: AtomicUsize::new(0),
            has_fault: AtomicBool::new(false),
            fault: Mutex::new(None),
            fault_seen: AtomicUsize::new(0),
            stop: rx.clone(),
        });
        (shared, tx, rx)
    }

    /// Serves on `listener`, spawned on the current tokio runtime.
    pub async fn start(listener: TcpListener, cfg: MockConfig) -> std::io::Result<MockServer> {
        let addr = listener.local_addr()?;
        let (shared, stop, stop_rx) = Self::parts(cfg);
        let task = tokio::spawn(serve_until(listener, router(shared.clone()), stop_rx));
        Ok(MockServer {
            addr,
            shared,
            stop,
            thread: Mutex::new(None),
            task: Mutex::new(Some(task)),
        })
    }

    /// Binds `addr` (before returning, so the port is ready) and serves from a dedicated thread with
    /// its own current-thread runtime. Works with or without a caller runtime.
    pub fn spawn_thread(addr: &str, cfg: MockConfig) -> std::io::Result<MockServer> {
        let std_listener = std::net::TcpListener::bind(addr)?;
        std_listener.set_nonblocking(true)?;
        let local = std_listener.local_addr()?;
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        let listener = {
            let _guard = rt.enter();
            TcpListener::from_std(std_listener)?
        };
        let (shared, stop, stop_rx) = Self::parts(cfg);
        let app = router(shared.clone());
        let thread = std::thread::Builder::new()
            .name("jimini-mock".to_string())
            .spawn(move || {
                rt.block_on(serve_until(listener, app, stop_rx));
                // Drops any connection task still running after the grace period.
                rt.shutdown_timeout(Duration::from_millis(100));
            })?;
        Ok(MockServer {
            addr: local,
            shared,
            stop,
            thread: Mutex::new(Some(thread)),
            task: Mutex::new(None),
        })
    }

    /// Stops accepting, ends hanging requests and open streams, and (for `spawn_thread`) waits for the
    /// server thread so the port is released when this returns. Idempotent.
    pub fn shutdown(&self) {
        self.stop.send_replace(true);
        let thread = lock(&self.thread).take();
        if let Some(t) = thread {
            if t.join().is_err() {
                tracing::warn!("mock upstream thread panicked");
            }
        }
    }

    /// Waits until the server task started by [`MockServer::start`] has finished (after `shutdown`).
    pub async fn stopped(&self) {
        let task = lock(&self.task).take();
        if let Some(t) = task {
            let _ = t.await;
        }
    }

    /// Every request seen (oldest first, at most `max_recorded`); `/mock/*` control calls excluded.
    pub fn requests(&self) -> Vec<RecordedRequest> {
        lock(&self.shared.records)
            .iter()
            .map(Record::to_public)
            .collect()
    }

    /// Requests seen since start or the last [`MockServer::clear`].
    pub fn request_count(&self) -> usize {
        self.shared.total.load(Ordering::SeqCst)
    }

    /// Forgets recorded requests and resets the count.
    pub fn clear(&self) {
        let mut q = lock(&self.shared.records);
        q.clear();
        self.shared.total.store(0, Ordering::SeqCst);
    }

    /// Sets (or clears, with None) the sticky fault for subsequent requests.
    pub fn set_fault(&self, f: Option<Fault>) {
        self.shared.set_fault(f);
    }

    /// Base URL, e.g. `http://127.0.0.1:18080`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }
}

impl Drop for MockServer {
    fn drop(&mut self) {
        self.shutdown();
        if let Some(t) = lock(&self.task).take() {
            // The graceful path normally ends the task; aborting only cuts the grace period short.
            t.abort();
        }
    }
}

/// Runs the mock on `listen` until Ctrl-C or SIGTERM (`jimini mock-upstream`).
pub async fn run(listen: &str, cfg: MockConfig) -> anyhow::Result<()> {
    let listener = TcpListener::bind(listen)
        .await
        .with_context(|| format!("mock upstream: cannot listen on {listen}"))?;
    let server = MockServer::start(listener, cfg).await?;
    tracing::info!(addr = %server.addr, "mock upstream listening");
    wait_for_termination().await;
    tracing::info!("mock upstream stopping");
    server.shutdown();
    server.stopped().await;
    Ok(())
}

async fn wait_for_termination() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => {}
                    _ = term.recv() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}

async fn serve_until(listener: TcpListener, app: Router, stop: watch::Receiver<bool>) {
    // Streamed events are small writes; Nagle would delay them by tens of milliseconds.
    let listener = listener.tap_io(|tcp| {
        let _ = tcp.set_nodelay(true);
    });
    let wait = |mut rx: watch::Receiver<bool>| async move {
        let _ = rx.wait_for(|s| *s).await;
    };
    let serve = axum::serve(listener, app).with_graceful_shutdown(wait(stop.clone()));
    let grace = async {
        wait(stop).await;
        tokio::time::sleep(SHUTDOWN_GRACE).await;
    };
    tokio::select! {
        res = serve => {
            if let Err(e) = res {
                tracing::warn!(error = %e, "mock upstream server error");
            }
        }
        _ = grace => {}
    }
}

fn router(shared: Arc<Shared>) -> Router {
    Router::new().fallback(handle).with_state(shared)
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Route<'a> {
    Chat,
    Completions,
    Responses,
    Embeddings,
    Messages,
    Models,
    Model(&'a str),
    NotFound,
}

/// Maps a path to an endpoint; accepts `/v1/...`, bare `/...` and Azure `/openai/deployments/{d}/...`.
fn route(path: &str) -> Route<'_> {
    let p = path.trim_end_matches('/');
    let p = p.strip_prefix("/v1").unwrap_or(p);
    let p = match p.strip_prefix("/openai/deployments/") {
        Some(rest) => rest.find('/').map(|i| &rest[i..]).unwrap_or(""),
        None => p,
    };
    match p {
        "/chat/completions" => Route::Chat,
        "/completions" => Route::Completions,
        "/responses" => Route::Responses,
        "/embeddings" => Route::Embeddings,
        "/messages" => Route::Messages,
        "/models" => Route::Models,
        _ => match p.strip_prefix("/models/") {
            Some(id) if !id.is_empty() => Route::Model(id),
            _ => Route::NotFound,
        },
    }
}

async fn handle(State(s): State<Arc<Shared>>, req: Request) -> Response {
    let (parts, body) = req.into_parts();
    if parts.uri.path().starts_with("/mock/") {
        return control(&s, &parts.method, parts.uri.path(), body).await;
    }
    if parts.method == Method::POST && parts.uri.path() == "/v1/traces" {
        return otlp_sink(&s, body).await;
    }
    s.total.fetch_add(1, Ordering::SeqCst);
    let route = route(parts.uri.path());
    let flavor = if route == Route::Messages {
        Flavor::Anthropic
    } else {
        Flavor::OpenAi
    };
    let body = match axum::body::to_bytes(body, s.cfg.max_body_bytes).await {
        Ok(b) => b,
        Err(e) => {
            let too_large = e
                .into_inner()
                .downcast_ref::<http_body_util::LengthLimitError>()
                .is_some();
            let (status, msg) = if too_large {
                (StatusCode::PAYLOAD_TOO_LARGE, "Request body too large.")
            } else {
                (StatusCode::BAD_REQUEST, "Could not read the request body.")
            };
            return simple_error(status, flavor, msg);
        }
    };
    let plan = s.plan(&parts.headers);
    let gzipped_request = parts
        .headers
        .get(header::CONTENT_ENCODING)
        .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"gzip"));
    let method = parts.method;
    if s.cfg.max_recorded > 0 {
        s.record(Record {
            method: method.clone(),
            uri: parts.uri.clone(),
            headers: parts.headers,
            body: body.clone(),
        });
    }

    if let Some(d) = plan.delay {
        tokio::select! {
            _ = tokio::time::sleep(d) => {}
            _ = s.stopped() => return simple_error(StatusCode::SERVICE_UNAVAILABLE, flavor, "Mock upstream is shutting down."),
        }
    }
    if plan.hang {
        s.stopped().await;
        return simple_error(
            StatusCode::SERVICE_UNAVAILABLE,
            flavor,
            "Mock upstream is shutting down.",
        );
    }
    if let Some(status) = plan.status {
        let code = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let body = error_body(status, flavor, &fault_message(status), None);
        let mut resp = deliver(&s, code, Payload::Whole(body), &plan);
        if status == 429 {
            resp.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
        }
        return resp;
    }

    let decoded;
    let body: &[u8] = if gzipped_request {
        let mut out = Vec::new();
        let limit = s.cfg.max_body_bytes as u64 + 1;
        match flate2::read::GzDecoder::new(&body[..])
            .take(limit)
            .read_to_end(&mut out)
        {
            Ok(n) if n as u64 >= limit => {
                return simple_error(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    flavor,
                    "Request body too large.",
                )
            }
            Ok(_) => {
                decoded = out;
                &decoded
            }
            Err(_) => {
                return simple_error(
                    StatusCode::BAD_REQUEST,
                    flavor,
                    "Invalid gzip request body.",
                )
            }
        }
    } else {
        &body
    };

    let ctx = Ctx {
        cfg: &s.cfg,
        chunk_chars: plan.chunk_chars,
    };
    let post = method == Method::POST;
    let get = method == Method::GET;
    let reply = match route {
        Route::Chat if post => chat::chat_completions(&ctx, body),
        Route::Completions if post => chat::completions(&ctx, body),
        Route::Responses if post => responses::responses(&ctx, body),
        Route::Embeddings if post => embeddings::embeddings(&ctx, body),
        Route::Messages if post => anthropic::messages(&ctx, body),
        Route::Models if get => embeddings::list_models(&ctx),
        Route::Model(id) if get => embeddings::get_model(id),
        Route::NotFound => Reply::error(
            StatusCode::NOT_FOUND,
            flavor,
            &format!("Invalid URL ({} {})", method, parts.uri.path()),
        ),
        _ => Reply::error(
            StatusCode::METHOD_NOT_ALLOWED,
            flavor,
            &format!("Method {method} not allowed for {}", parts.uri.path()),
        ),
    };
    match reply {
        Reply::Json { status, body } => deliver(&s, status, Payload::Whole(body), &plan),
        Reply::Sse(events) => deliver(&s, StatusCode::OK, Payload::Events(events), &plan),
    }
}

/// OTLP/HTTP trace exports are accepted and discarded (an empty `ExportTraceServiceResponse`):
/// a stand-in collector for offline runs and load tests. Not counted as upstream traffic.
async fn otlp_sink(s: &Shared, body: Body) -> Response {
    let status = match axum::body::to_bytes(body, s.cfg.max_body_bytes).await {
        Ok(_) => StatusCode::OK,
        Err(_) => StatusCode::PAYLOAD_TOO_LARGE,
    };
    let mut resp = Response::new(Body::empty());
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/x-protobuf"),
    );
    resp
}

fn simple_error(status: StatusCode, flavor: Flavor, msg: &str) -> Response {
    let mut resp = Response::new(Body::from(error_body(status.as_u16(), flavor, msg, None)));
    *resp.status_mut() = status;
    resp.headers_mut()
        .insert(header::CONTENT_TYPE, JSON_CONTENT_TYPE);
    resp
}

enum Payload {
    Whole(Vec<u8>),
    Events(Vec<Bytes>),
}

fn request_id_header() -> HeaderValue {
    HeaderValue::from_str(&new_id("req_")).unwrap_or(HeaderValue::from_static("req_mock"))
}

fn gzip_all(data: &[u8]) -> Vec<u8> {
    let mut enc = GzEncoder::new(
        Vec::with_capacity(data.len() / 2 + 64),
        flate2::Compression::fast(),
    );
    // Writing into a Vec cannot fail.
    let _ = enc.write_all(data);
    enc.finish().unwrap_or_default()
}

fn abrupt_close() -> std::io::Error {
    std::io::Error::new(
        std::io::ErrorKind::ConnectionAborted,
        "mock upstream: injected connection drop",
    )
}

/// Builds the response, applying gzip, mid-body drop and per-event delays from `plan`.
fn deliver(s: &Arc<Shared>, status: StatusCode, payload: Payload, plan: &Plan) -> Response {
    let (content_type, body) = match payload {
        Payload::Whole(data) => {
            let data = if plan.gzip { gzip_all(&data) } else { data };
            let body = match plan.drop_after {
                None => Body::from(data),
                Some(_) => {
                    let half = Bytes::from(data);
                    let total = half.len();
                    let first = half.slice(..total / 2);
                    let stream = futures_util::stream::unfold(Some(first), |st| async move {
                        match st {
                            Some(b) => Some((Ok::<Bytes, std::io::Error>(b), None)),
                            None => {
                                tokio::time::sleep(DROP_FLUSH_PAUSE).await;
                                Some((Err(abrupt_close()), None))
                            }
                        }
                    });
                    let mut resp = Response::new(Body::from_stream(stream));
                    resp.headers_mut()
                        .insert(header::CONTENT_LENGTH, HeaderValue::from(total));
                    return finish_headers(resp, status, JSON_CONTENT_TYPE, plan.gzip);
                }
            };
            (JSON_CONTENT_TYPE, body)
        }
        Payload::Events(events) => {
            let st = EventStream {
                events: events.into_iter(),
                delay: (s.cfg.chunk_delay_ms > 0)
                    .then(|| Duration::from_millis(s.cfg.chunk_delay_ms)),
                budget: plan.drop_after,
                gz: plan
                    .gzip
                    .then(|| GzEncoder::new(Vec::with_capacity(1024), flate2::Compression::fast())),
                first: true,
                done: false,
                shared: s.clone(),
            };
            let stream = futures_util::stream::unfold(st, |mut st| async move {
                st.next().await.map(|item| (item, st))
            });
            (SSE_CONTENT_TYPE, Body::from_stream(stream))
        }
    };
    let is_sse = content_type == SSE_CONTENT_TYPE;
    let mut resp = finish_headers(Response::new(body), status, content_type, plan.gzip);
    if is_sse {
        resp.headers_mut()
            .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    }
    resp
}

fn finish_headers(
    mut resp: Response,
    status: StatusCode,
    content_type: HeaderValue,
    gzip: bool,
) -> Response {
    *resp.status_mut() = status;
    let h = resp.headers_mut();
    h.insert(header::CONTENT_TYPE, content_type);
    h.insert(X_REQUEST_ID, request_id_header());
    if gzip {
        h.insert(header::CONTENT_ENCODING, HeaderValue::from_static("gzip"));
    }
    resp
}

/// Incremental SSE body: one frame per event, optional pause between events, optional abrupt close
/// after `budget` events, optional gzip with a sync flush per event (so it stays incremental).
struct EventStream {
    events: std::vec::IntoIter<Bytes>,
    delay: Option<Duration>,
    budget: Option<usize>,
    gz: Option<GzEncoder<Vec<u8>>>,
    first: bool,
    done: bool,
    shared: Arc<Shared>,
}

impl EventStream {
    async fn next(&mut self) -> Option<Result<Bytes, std::io::Error>> {
        if self.done {
            return None;
        }
        if self.budget == Some(0) {
            self.done = true;
            tokio::time::sleep(DROP_FLUSH_PAUSE).await;
            return Some(Err(abrupt_close()));
        }
        let Some(event) = self.events.next() else {
            self.done = true;
            return self
                .gz
                .take()
                .and_then(|enc| enc.finish().ok())
                .filter(|tail| !tail.is_empty())
                .map(|tail| Ok(Bytes::from(tail)));
        };
        if !self.first {
            if let Some(d) = self.delay {
                tokio::select! {
                    _ = tokio::time::sleep(d) => {}
                    _ = self.shared.stopped() => {
                        self.done = true;
                        return Some(Err(abrupt_close()));
                    }
                }
            }
        }
        self.first = false;
        if let Some(b) = &mut self.budget {
            *b -= 1;
        }
        match &mut self.gz {
            None => Some(Ok(event)),
            Some(enc) => {
                // Writes into a Vec cannot fail; the sync flush makes this event decodable now.
                let _ = enc.write_all(&event);
                let _ = enc.flush();
                Some(Ok(Bytes::from(std::mem::take(enc.get_mut()))))
            }
        }
    }
}

/// Sticky fault as accepted by `POST /mock/fault` (exactly one field).
#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct FaultSpec {
    status: Option<u16>,
    hang: Option<bool>,
    drop_after: Option<usize>,
    delay_ms: Option<u64>,
    gzip: Option<bool>,
    fail_first: Option<FailFirstSpec>,
    clear: Option<bool>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FailFirstSpec {
    n: usize,
    #[serde(default = "default_fail_status")]
    status: u16,
}

fn default_fail_status() -> u16 {
    500
}

impl FaultSpec {
    /// `Ok(None)` means clear.
    fn into_fault(self) -> Result<Option<Fault>, &'static str> {
        let mut out: Vec<Option<Fault>> = Vec::new();
        if let Some(s) = self.status {
            if !(400..=599).contains(&s) {
                return Err("status must be within 400..=599");
            }
            out.push(Some(Fault::Status(s)));
        }
        if self.hang == Some(true) {
            out.push(Some(Fault::Hang));
        }
        if let Some(n) = self.drop_after {
            out.push(Some(Fault::DropMidStream { after_events: n }));
        }
        if let Some(ms) = self.delay_ms {
            out.push(Some(Fault::Delay(Duration::from_millis(ms))));
        }
        if self.gzip == Some(true) {
            out.push(Some(Fault::Gzip));
        }
        if let Some(ff) = self.fail_first {
            if !(400..=599).contains(&ff.status) {
                return Err("fail_first.status must be within 400..=599");
            }
            out.push(Some(Fault::FailFirst {
                n: ff.n,
                status: ff.status,
            }));
        }
        if self.clear == Some(true) {
            out.push(None);
        }
        match out.len() {
            1 => Ok(out.pop().flatten()),
            0 => Err("expected one of status, hang, drop_after, delay_ms, gzip, fail_first, clear"),
            _ => Err("set exactly one fault at a time"),
        }
    }
}

#[derive(Serialize)]
struct RecordedJson<'a> {
    method: &'a str,
    path: &'a str,
    headers: serde_json::Map<String, serde_json::Value>,
    body: String,
    body_base64: String,
}

fn json_response(status: StatusCode, value: &serde_json::Value) -> Response {
    let mut resp = Response::new(Body::from(serde_json::to_vec(value).unwrap_or_default()));
    *resp.status_mut() = status;
    resp.headers_mut()
        .insert(header::CONTENT_TYPE, JSON_CONTENT_TYPE);
    resp
}

/// `/mock/*` control endpoints (not recorded, not faulted).
async fn control(s: &Arc<Shared>, method: &Method, path: &str, body: Body) -> Response {
    let bad = |msg: &str| simple_error(StatusCode::BAD_REQUEST, Flavor::OpenAi, msg);
    match (method.as_str(), path.trim_end_matches('/')) {
        ("GET", "/mock/health") => {
            json_response(StatusCode::OK, &serde_json::json!({"status": "ok"}))
        }
        ("POST", "/mock/fault") => {
            let Ok(bytes) = axum::body::to_bytes(body, 1 << 16).await else {
                return bad("could not read body");
            };
            let spec: FaultSpec = match serde_json::from_slice(&bytes) {
                Ok(s) => s,
                Err(e) => return bad(&format!("invalid fault: {e}")),
            };
            match spec.into_fault() {
                Ok(f) => {
                    let desc = f.as_ref().map(|f| format!("{f:?}"));
                    s.set_fault(f);
                    json_response(
                        StatusCode::OK,
                        &serde_json::json!({"ok": true, "fault": desc}),
                    )
                }
                Err(msg) => bad(msg),
            }
        }
        ("GET", "/mock/fault") => {
            let desc = lock(&s.fault).as_ref().map(|f| format!("{f:?}"));
            json_response(StatusCode::OK, &serde_json::json!({ "fault": desc }))
        }
        ("GET", "/mock/requests") => {
            let records: Vec<RecordedRequest> =
                lock(&s.records).iter().map(Record::to_public).collect();
            let data: Vec<serde_json::Value> = records
                .iter()
                .map(|r| {
                    let mut headers = serde_json::Map::new();
                    for (n, v) in &r.headers {
                        match headers.get_mut(n) {
                            Some(serde_json::Value::String(prev)) => {
                                prev.push_str(", ");
                                prev.push_str(v);
                            }
                            _ => {
                                headers.insert(n.clone(), serde_json::Value::String(v.clone()));
                            }
                        }
                    }
                    serde_json::to_value(RecordedJson {
                        method: &r.method,
                        path: &r.path,
                        headers,
                        body: r.body_text(),
                        body_base64: base64::engine::general_purpose::STANDARD.encode(&r.body),
                    })
                    .unwrap_or_default()
                })
                .collect();
            json_response(
                StatusCode::OK,
                &serde_json::json!({
                    "object": "list",
                    "count": s.total.load(Ordering::SeqCst),
                    "data": data,
                }),
            )
        }
        ("DELETE", "/mock/requests") => {
            lock(&s.records).clear();
            s.total.store(0, Ordering::SeqCst);
            json_response(StatusCode::OK, &serde_json::json!({"ok": true}))
        }
        _ => simple_error(
            StatusCode::NOT_FOUND,
            Flavor::OpenAi,
            &format!("Unknown mock control endpoint ({method} {path})"),
        ),
    }
}

#[cfg(test)]
mod unit_tests {
    use super::*;

    #[test]
    fn routes() {
        let table = [
            ("/v1/chat/completions", Route::Chat),
            ("/chat/completions", Route::Chat),
            ("/v1/chat/completions/", Route::Chat),
            ("/openai/deployments/gpt4/chat/completions", Route::Chat),
            ("/v1/completions", Route::Completions),
            ("/v1/responses", Route::Responses),
            ("/v1/embeddings", Route::Embeddings),
            ("/v1/messages", Route::Messages),
            ("/v1/models", Route::Models),
            ("/v1/models/gpt-4o", Route::Model("gpt-4o")),
            ("/v1/models/", Route::Models),
            ("/v1/foo", Route::NotFound),
            ("/v1beta/chat/completions", Route::NotFound),
            ("/", Route::NotFound),
        ];
        for (p, want) in table {
            assert_eq!(route(p), want, "{p}");
        }
    }

    #[test]
    fn fault_specs() {
        let parse = |s: &str| {
            serde_json::from_str::<FaultSpec>(s)
                .map_err(|_| "json")
                .and_then(FaultSpec::into_fault)
        };
        assert_eq!(parse(r#"{"status":500}"#), Ok(Some(Fault::Status(500))));
        assert_eq!(parse(r#"{"clear":true}"#), Ok(None));
        assert_eq!(parse(r#"{"hang":true}"#), Ok(Some(Fault::Hang)));
        assert_eq!(
            parse(r#"{"drop_after":3}"#),
            Ok(Some(Fault::DropMidStream { after_events: 3 }))
        );
        assert_eq!(
            parse(r#"{"delay_ms":5}"#),
            Ok(Some(Fault::Delay(Duration::from_millis(5))))
        );
        assert_eq!(parse(r#"{"gzip":true}"#), Ok(Some(Fault::Gzip)));
        assert_eq!(
            parse(r#"{"fail_first":{"n":2}}"#),
            Ok(Some(Fault::FailFirst { n: 2, status: 500 }))
        );
        assert!(parse(r#"{"status":200}"#).is_err());
        assert!(parse(r#"{}"#).is_err());
        assert!(parse(r#"{"status":500,"hang":true}"#).is_err());
        assert!(parse(r#"{"bogus":1}"#).is_err());
    }
}
