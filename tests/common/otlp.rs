//! Test-only OTLP trace receiver (HTTP/protobuf via axum, or gRPC via tonic) on 127.0.0.1:0 (own thread + runtime, so it
//! works from sync and async tests) accepting `POST /v1/traces` protobuf bodies, decoding
//! `ExportTraceServiceRequest` and keeping flattened spans for assertions.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::post;
use axum::Router;
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{
    TraceService, TraceServiceServer,
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::any_value::Value as PValue;
use opentelemetry_proto::tonic::common::v1::AnyValue;
use prost::Message;

/// Attribute value as received.
#[derive(Clone, Debug, PartialEq)]
pub enum AttrValue {
    Str(String),
    Int(i64),
    Double(f64),
    Bool(bool),
    Array(Vec<AttrValue>),
    Other,
}

/// One received span, flattened out of resource/scope nesting.
#[derive(Clone, Debug)]
pub struct ReceivedSpan {
    pub name: String,
    /// Lowercase hex.
    pub trace_id: String,
    pub span_id: String,
    /// Empty for a root span.
    pub parent_span_id: String,
    /// W3C `tracestate` ("" when none).
    pub trace_state: String,
    /// OTLP enum: 1 internal, 2 server, 3 client, 4 producer, 5 consumer.
    pub kind: i32,
    /// OTLP enum: 0 unset, 1 ok, 2 error.
    pub status_code: i32,
    pub start_unix_nano: u64,
    pub end_unix_nano: u64,
    pub attributes: BTreeMap<String, AttrValue>,
    pub service_name: Option<String>,
}

impl ReceivedSpan {
    pub fn attr(&self, key: &str) -> Option<&AttrValue> {
        self.attributes.get(key)
    }
    pub fn attr_str(&self, key: &str) -> Option<&str> {
        match self.attributes.get(key) {
            Some(AttrValue::Str(s)) => Some(s),
            _ => None,
        }
    }
    pub fn attr_i64(&self, key: &str) -> Option<i64> {
        match self.attributes.get(key) {
            Some(AttrValue::Int(i)) => Some(*i),
            _ => None,
        }
    }
    pub fn attr_bool(&self, key: &str) -> Option<bool> {
        match self.attributes.get(key) {
            Some(AttrValue::Bool(b)) => Some(*b),
            _ => None,
        }
    }
    pub fn attr_str_array(&self, key: &str) -> Option<Vec<String>> {
        match self.attributes.get(key) {
            Some(AttrValue::Array(v)) => v
                .iter()
                .map(|x| match x {
                    AttrValue::Str(s) => Some(s.clone()),
                    _ => None,
                })
                .collect(),
            _ => None,
        }
    }
}

fn convert(v: Option<&AnyValue>) -> AttrValue {
    match v.and_then(|v| v.value.as_ref()) {
        Some(PValue::StringValue(s)) => AttrValue::Str(s.clone()),
        Some(PValue::IntValue(i)) => AttrValue::Int(*i),
        Some(PValue::DoubleValue(d)) => AttrValue::Double(*d),
        Some(PValue::BoolValue(b)) => AttrValue::Bool(*b),
        Some(PValue::ArrayValue(a)) => {
            AttrValue::Array(a.values.iter().map(|x| convert(Some(x))).collect())
        }
        _ => AttrValue::Other,
    }
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

#[derive(Default)]
struct Store {
    spans: Vec<ReceivedSpan>,
    requests: usize,
    /// Headers of the latest OTLP/HTTP request (names lowercase).
    last_headers: Vec<(String, String)>,
}

async fn traces(
    State(store): State<Arc<Mutex<Store>>>,
    headers: axum::http::HeaderMap,
    body: Bytes,
) -> (StatusCode, Vec<u8>) {
    store.lock().unwrap().last_headers = headers
        .iter()
        .map(|(n, v)| (n.as_str().to_owned(), v.to_str().unwrap_or("?").to_owned()))
        .collect();
    let req = match ExportTraceServiceRequest::decode(body) {
        Ok(r) => r,
        Err(_) => return (StatusCode::BAD_REQUEST, Vec::new()),
    };
    ingest(&store, req);
    (
        StatusCode::OK,
        ExportTraceServiceResponse::default().encode_to_vec(),
    )
}

/// The same receiver over OTLP/gRPC (tonic server from the official protobuf definitions).
struct GrpcTraces(Arc<Mutex<Store>>);

#[tonic::async_trait]
impl TraceService for GrpcTraces {
    async fn export(
        &self,
        req: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        ingest(&self.0, req.into_inner());
        Ok(tonic::Response::new(ExportTraceServiceResponse::default()))
    }
}

fn ingest(store: &Mutex<Store>, req: ExportTraceServiceRequest) {
    let mut st = store.lock().unwrap();
    st.requests += 1;
    for rs in req.resource_spans {
        let service_name = rs.resource.as_ref().and_then(|r| {
            r.attributes
                .iter()
                .find(|kv| kv.key == "service.name")
                .and_then(|kv| match convert(kv.value.as_ref()) {
                    AttrValue::Str(s) => Some(s),
                    _ => None,
                })
        });
        for ss in rs.scope_spans {
            for s in ss.spans {
                st.spans.push(ReceivedSpan {
                    name: s.name,
                    trace_id: hex(&s.trace_id),
                    span_id: hex(&s.span_id),
                    parent_span_id: hex(&s.parent_span_id),
                    trace_state: s.trace_state,
                    kind: s.kind,
                    status_code: s.status.map(|x| x.code).unwrap_or(0),
                    start_unix_nano: s.start_time_unix_nano,
                    end_unix_nano: s.end_time_unix_nano,
                    attributes: s
                        .attributes
                        .iter()
                        .map(|kv| (kv.key.clone(), convert(kv.value.as_ref())))
                        .collect(),
                    service_name: service_name.clone(),
                });
            }
        }
    }
}

/// Running receiver; stops when dropped.
pub struct OtlpReceiver {
    addr: SocketAddr,
    store: Arc<Mutex<Store>>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl OtlpReceiver {
    /// Bind 127.0.0.1:0 and serve OTLP/HTTP in the background.
    pub fn start() -> OtlpReceiver {
        Self::start_with(false)
    }

    /// Bind 127.0.0.1:0 and serve OTLP/gRPC in the background (`base_url()` is the endpoint).
    pub fn start_grpc() -> OtlpReceiver {
        Self::start_with(true)
    }

    fn start_with(grpc: bool) -> OtlpReceiver {
        let store = Arc::new(Mutex::new(Store::default()));
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let (addr_tx, addr_rx) = std::sync::mpsc::channel();
        let st = Arc::clone(&store);
        let thread = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async move {
                let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
                addr_tx.send(listener.local_addr().unwrap()).unwrap();
                if grpc {
                    tonic::transport::Server::builder()
                        .add_service(TraceServiceServer::new(GrpcTraces(st)))
                        .serve_with_incoming_shutdown(
                            tokio_stream::wrappers::TcpListenerStream::new(listener),
                            async {
                                let _ = stop_rx.await;
                            },
                        )
                        .await
                        .unwrap();
                    return;
                }
                let app = Router::new()
                    .route("/v1/traces", post(traces))
                    .with_state(st);
                axum::serve(listener, app)
                    .with_graceful_shutdown(async {
                        let _ = stop_rx.await;
                    })
                    .await
                    .unwrap();
            });
        });
        let addr = addr_rx.recv().unwrap();
        OtlpReceiver {
            addr,
            store,
            stop: Some(stop_tx),
            thread: Some(thread),
        }
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://127.0.0.1:PORT` (OTEL_EXPORTER_OTLP_ENDPOINT style base).
    pub fn base_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Full traces URL, `http://127.0.0.1:PORT/v1/traces`.
    pub fn endpoint(&self) -> String {
        format!("http://{}/v1/traces", self.addr)
    }

    pub fn spans(&self) -> Vec<ReceivedSpan> {
        self.store.lock().unwrap().spans.clone()
    }

    /// Number of export requests received.
    /// Value of header `name` on the latest OTLP/HTTP request, if it was sent.
    pub fn last_header(&self, name: &str) -> Option<String> {
        let st = self.store.lock().unwrap();
        st.last_headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.clone())
    }

    pub fn requests(&self) -> usize {
        self.store.lock().unwrap().requests
    }

    /// Wait until at least `n` spans arrived (or `timeout`), then return all spans.
    pub fn wait_for_spans(&self, n: usize, timeout: Duration) -> Vec<ReceivedSpan> {
        let deadline = Instant::now() + timeout;
        loop {
            let spans = self.spans();
            if spans.len() >= n || Instant::now() >= deadline {
                return spans;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for OtlpReceiver {
    fn drop(&mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}
