//! The admin HTTP server: one dispatcher over a fixed route table, so authentication, role checks,
//! 404/405, security headers, metrics and the audit trail are applied uniformly. Runs on its own
//! std thread with a small current-thread Tokio runtime; backend calls go to the blocking pool.

use std::net::{SocketAddr, ToSocketAddrs};
use std::sync::{mpsc, Arc, Mutex};
use std::time::Duration;

use axum::body::Body;
use axum::extract::{Query, Request};
use axum::http::header::{self, HeaderMap, HeaderValue};
use axum::http::{Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Router;
use serde::Deserialize;
use serde_json::{json, Value};

use super::backend::{AdminAuditEvent, AdminBackend};
use super::config::AdminConfig;
use super::jwt::{AuthFailure, Role, Verifier};
use super::AdminError;

/// Largest request body accepted (JSON control messages only).
const MAX_BODY: usize = 64 * 1024;
/// Longest data-subject id accepted.
const MAX_SUBJECT_LEN: usize = 1024;
/// Longest path kept in an audit record.
const MAX_AUDIT_PATH: usize = 256;
/// How long `shutdown` waits for the server thread.
const SHUTDOWN_WAIT: Duration = Duration::from_secs(5);

const SECURITY_HEADERS: &[(&str, &str)] = &[
    ("x-content-type-options", "nosniff"),
    ("cache-control", "no-store"),
    ("x-frame-options", "DENY"),
    ("content-security-policy", "default-src 'none'"),
    ("referrer-policy", "no-referrer"),
];

/// Protected operations.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Op {
    Rules,
    Reload,
    Upstreams,
    Reset,
    Config,
    Shadow,
    Verify,
    Export,
    Erase,
}

impl Op {
    fn class(self) -> &'static str {
        match self {
            Op::Rules => "rules",
            Op::Reload => "rules_reload",
            Op::Upstreams => "upstreams",
            Op::Reset => "upstream_reset",
            Op::Config => "config",
            Op::Shadow => "shadow",
            Op::Verify => "audit_verify",
            Op::Export => "audit_export",
            Op::Erase => "audit_erase",
        }
    }
    fn method(self) -> Method {
        match self {
            Op::Rules | Op::Upstreams | Op::Config | Op::Verify | Op::Export => Method::GET,
            Op::Reload | Op::Reset | Op::Shadow | Op::Erase => Method::POST,
        }
    }
    fn role(self) -> Role {
        match self {
            Op::Rules | Op::Upstreams | Op::Config | Op::Verify => Role::Viewer,
            Op::Reload | Op::Reset | Op::Shadow => Role::Operator,
            Op::Export | Op::Erase => Role::Admin,
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Open {
    Healthz,
    Readyz,
    Metrics,
}

#[derive(Debug, PartialEq, Eq)]
enum Target<'a> {
    Open(Open),
    /// A protected operation; `name` is the upstream for `Reset`.
    Admin(Op, &'a str),
    /// Under `/admin/` but no such route.
    AdminUnknown,
    NotFound,
}

fn classify(path: &str) -> Target<'_> {
    match path {
        "/healthz" => return Target::Open(Open::Healthz),
        "/readyz" => return Target::Open(Open::Readyz),
        "/metrics" => return Target::Open(Open::Metrics),
        "/admin/rules" => return Target::Admin(Op::Rules, ""),
        "/admin/rules/reload" => return Target::Admin(Op::Reload, ""),
        "/admin/upstreams" => return Target::Admin(Op::Upstreams, ""),
        "/admin/config" => return Target::Admin(Op::Config, ""),
        "/admin/shadow" => return Target::Admin(Op::Shadow, ""),
        "/admin/audit/verify" => return Target::Admin(Op::Verify, ""),
        "/admin/audit/export" => return Target::Admin(Op::Export, ""),
        "/admin/audit/erase" => return Target::Admin(Op::Erase, ""),
        _ => {}
    }
    if let Some(name) = path
        .strip_prefix("/admin/upstreams/")
        .and_then(|r| r.strip_suffix("/reset"))
    {
        if !name.is_empty() && !name.contains('/') {
            return Target::Admin(Op::Reset, name);
        }
    }
    if path == "/admin" || path.starts_with("/admin/") {
        Target::AdminUnknown
    } else {
        Target::NotFound
    }
}

struct AppState {
    backend: Arc<dyn AdminBackend>,
    verifier: Verifier,
}

/// OpenAI-style error body.
fn error(status: StatusCode, kind: &str, code: &str, message: &str) -> Response {
    let body = json!({"error": {"message": message, "type": kind, "code": code, "param": null}});
    (status, axum::Json(body)).into_response()
}

fn internal(message: &str) -> Response {
    error(
        StatusCode::INTERNAL_SERVER_ERROR,
        "server_error",
        "internal_error",
        message,
    )
}

fn ok_json(v: Value) -> Response {
    (StatusCode::OK, axum::Json(v)).into_response()
}

async fn blocking<T, F>(b: &Arc<dyn AdminBackend>, f: F) -> Result<T, Response>
where
    T: Send + 'static,
    F: FnOnce(&dyn AdminBackend) -> T + Send + 'static,
{
    let b = Arc::clone(b);
    tokio::task::spawn_blocking(move || f(&*b))
        .await
        .map_err(|_| internal("admin backend failed"))
}

fn truncate(s: &str, max: usize) -> String {
    if s.len() <= max {
        return s.to_owned();
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    s[..end].to_owned()
}

fn method_not_allowed(allow: &'static str) -> Response {
    let mut r = error(
        StatusCode::METHOD_NOT_ALLOWED,
        "invalid_request_error",
        "method_not_allowed",
        "method not allowed",
    );
    r.headers_mut()
        .insert(header::ALLOW, HeaderValue::from_static(allow));
    r
}

fn unauthorized(f: AuthFailure) -> Response {
    let (msg, challenge) = match f {
        AuthFailure::NoKey => (
            "admin API is disabled: no JWT key configured",
            r#"Bearer realm="jimini-admin""#,
        ),
        AuthFailure::Missing => ("missing bearer token", r#"Bearer realm="jimini-admin""#),
        _ => (
            "invalid or expired token",
            r#"Bearer realm="jimini-admin", error="invalid_token""#,
        ),
    };
    let mut r = error(
        StatusCode::UNAUTHORIZED,
        "authentication_error",
        f.as_str(),
        msg,
    );
    r.headers_mut().insert(
        header::WWW_AUTHENTICATE,
        HeaderValue::from_static(challenge),
    );
    r
}

async fn read_json(body: Body) -> Result<Value, Response> {
    let bytes = axum::body::to_bytes(body, MAX_BODY).await.map_err(|_| {
        error(
            StatusCode::PAYLOAD_TOO_LARGE,
            "invalid_request_error",
            "body_too_large",
            "request body too large",
        )
    })?;
    serde_json::from_slice(&bytes).map_err(|_| bad_request("request body must be a JSON object"))
}

fn bad_request(message: &str) -> Response {
    error(
        StatusCode::BAD_REQUEST,
        "invalid_request_error",
        "bad_request",
        message,
    )
}

/// A usable data-subject id, or a 400 response.
fn subject_of(v: Option<&str>) -> Result<String, Box<Response>> {
    match v.map(str::trim) {
        Some(s) if !s.is_empty() && s.len() <= MAX_SUBJECT_LEN => Ok(s.to_owned()),
        _ => Err(Box::new(bad_request(
            "a non-empty 'subject' (at most 1024 bytes) is required",
        ))),
    }
}

#[derive(Deserialize)]
struct SubjectQuery {
    subject: Option<String>,
}

async fn run_op(st: &AppState, op: Op, name: &str, req: Request) -> Response {
    let b = &st.backend;
    let res: Result<Response, Response> = async {
        Ok(match op {
            Op::Rules => ok_json(blocking(b, |b| b.rules()).await?),
            Op::Upstreams => ok_json(blocking(b, |b| b.upstreams()).await?),
            Op::Config => ok_json(blocking(b, |b| b.config_masked()).await?),
            Op::Reload => match blocking(b, |b| b.reload_rules()).await? {
                Ok(v) => ok_json(v),
                Err(m) => error(
                    StatusCode::UNPROCESSABLE_ENTITY,
                    "invalid_request_error",
                    "reload_failed",
                    &m,
                ),
            },
            Op::Reset => {
                let name = name.to_owned();
                match blocking(b, move |b| b.reset_breaker(&name)).await? {
                    Ok(v) => ok_json(v),
                    Err(AdminError::NotFound(m)) => error(
                        StatusCode::NOT_FOUND,
                        "not_found_error",
                        "unknown_upstream",
                        &format!("not found: {m}"),
                    ),
                    Err(AdminError::BadRequest(m)) => bad_request(&m),
                    Err(e) => internal(&e.to_string()),
                }
            }
            Op::Shadow => {
                let v = read_json(req.into_body()).await?;
                let on = v
                    .get("enabled")
                    .and_then(Value::as_bool)
                    .ok_or_else(|| bad_request("body must be {\"enabled\": true|false}"))?;
                ok_json(blocking(b, move |b| b.set_shadow(on)).await?)
            }
            Op::Verify => match blocking(b, |b| b.audit_verify()).await? {
                Ok(v) => ok_json(v),
                Err(m) => error(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "server_error",
                    "audit_error",
                    &m,
                ),
            },
            Op::Export => {
                let q = Query::<SubjectQuery>::try_from_uri(req.uri())
                    .map_err(|_| bad_request("invalid query string"))?;
                let subject = subject_of(q.subject.as_deref()).map_err(|r| *r)?;
                match blocking(b, move |b| b.audit_export(&subject)).await? {
                    Ok(v) => ok_json(v),
                    Err(m) => error(
                        StatusCode::INTERNAL_SERVER_ERROR,
                        "server_error",
                        "audit_error",
                        &m,
                    ),
                }
            }
            Op::Erase => {
                let v = read_json(req.into_body()).await?;
                let subject =
                    subject_of(v.get("subject").and_then(Value::as_str)).map_err(|r| *r)?;
                match blocking(b, move |b| b.audit_erase(&subject)).await? {
                    Ok(v) => ok_json(v),
                    Err(m) => error(
                        StatusCode::INTERNAL_SERVER_ERROR,
                        "server_error",
                        "audit_error",
                        &m,
                    ),
                }
            }
        })
    }
    .await;
    res.unwrap_or_else(|r| r)
}

fn outcome_of(status: StatusCode) -> &'static str {
    match status.as_u16() {
        200..=299 => "ok",
        400 | 413 => "bad_request",
        403 => "forbidden",
        404 => "not_found",
        405 => "method_not_allowed",
        _ => "error",
    }
}

async fn handle_admin(st: &AppState, target: Target<'_>, req: Request) -> (Response, &'static str) {
    let method = req.method().clone();
    let path = truncate(req.uri().path(), MAX_AUDIT_PATH);
    let class = match target {
        Target::Admin(op, _) => op.class(),
        _ => "unknown",
    };
    let auth = st.verifier.verify_header(
        req.headers()
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok()),
    );
    let (resp, role, sub, outcome) = match auth {
        Err(f) => (
            unauthorized(f),
            None,
            None,
            format!("unauthenticated:{}", f.as_str()),
        ),
        Ok(p) => {
            let role = p.role.map(|r| r.as_str().to_owned());
            let resp = match target {
                Target::Admin(op, _) if method != op.method() => {
                    method_not_allowed(if op.method() == Method::GET {
                        "GET"
                    } else {
                        "POST"
                    })
                }
                Target::Admin(op, name) => {
                    if p.role.is_some_and(|r| r >= op.role()) {
                        run_op(st, op, name, req).await
                    } else {
                        error(
                            StatusCode::FORBIDDEN,
                            "permission_error",
                            "insufficient_role",
                            &format!("role '{}' required", op.role().as_str()),
                        )
                    }
                }
                _ => error(
                    StatusCode::NOT_FOUND,
                    "not_found_error",
                    "not_found",
                    "no such admin endpoint",
                ),
            };
            let outcome = outcome_of(resp.status()).to_owned();
            (resp, role, p.subject, outcome)
        }
    };
    let event = AdminAuditEvent {
        method: method.as_str().to_owned(),
        path,
        status: resp.status().as_u16(),
        role,
        subject_of_token: sub,
        outcome,
    };
    if blocking(&st.backend, move |b| b.audit_admin(event))
        .await
        .is_err()
    {
        tracing::warn!("admin audit record failed");
    }
    (resp, class)
}

async fn handle_open(st: &AppState, which: Open, method: &Method) -> Response {
    if method != Method::GET && method != Method::HEAD {
        return method_not_allowed("GET, HEAD");
    }
    match which {
        Open::Healthz => ok_json(json!({"status": "ok"})),
        Open::Readyz => match blocking(&st.backend, |b| b.ready()).await {
            Ok((ready, details)) => {
                let status = if ready {
                    StatusCode::OK
                } else {
                    StatusCode::SERVICE_UNAVAILABLE
                };
                (
                    status,
                    axum::Json(json!({"ready": ready, "details": details})),
                )
                    .into_response()
            }
            Err(r) => r,
        },
        Open::Metrics => match blocking(&st.backend, |b| b.metrics_text()).await {
            Ok(None) => error(
                StatusCode::NOT_FOUND,
                "not_found_error",
                "metrics_disabled",
                "metrics are turned off (telemetry.metrics: false)",
            ),
            Ok(Some(text)) => (
                StatusCode::OK,
                [(
                    header::CONTENT_TYPE,
                    "text/plain; version=0.0.4; charset=utf-8",
                )],
                text,
            )
                .into_response(),
            Err(r) => r,
        },
    }
}

async fn dispatch(st: Arc<AppState>, req: Request) -> Response {
    let path = req.uri().path().to_owned();
    let target = classify(&path);
    let (mut resp, class) = match target {
        Target::Open(o) => {
            let class = match o {
                Open::Healthz => "healthz",
                Open::Readyz => "readyz",
                Open::Metrics => "metrics",
            };
            (handle_open(&st, o, req.method()).await, class)
        }
        Target::NotFound => (
            error(
                StatusCode::NOT_FOUND,
                "not_found_error",
                "not_found",
                "not found",
            ),
            "unknown",
        ),
        t => handle_admin(&st, t, req).await,
    };
    add_security_headers(resp.headers_mut());
    st.backend.record_request(class, resp.status().as_u16());
    resp
}

fn add_security_headers(h: &mut HeaderMap) {
    for (k, v) in SECURITY_HEADERS {
        h.insert(*k, HeaderValue::from_static(v));
    }
}

/// A running admin server; stops on `shutdown()` or drop.
pub struct AdminServer {
    addr: SocketAddr,
    stop: Mutex<Option<tokio::sync::oneshot::Sender<()>>>,
    done: Mutex<Option<mpsc::Receiver<()>>>,
}

impl std::fmt::Debug for AdminServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AdminServer")
            .field("addr", &self.addr)
            .finish()
    }
}

impl AdminServer {
    /// The bound address (the real port when `listen` used port 0).
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Stop accepting, finish in-flight requests, wait (bounded) for the thread. Idempotent.
    pub fn shutdown(&self) {
        if let Some(s) = self.stop.lock().unwrap_or_else(|e| e.into_inner()).take() {
            let _ = s.send(());
        }
        if let Some(d) = self.done.lock().unwrap_or_else(|e| e.into_inner()).take() {
            let _ = d.recv_timeout(SHUTDOWN_WAIT);
        }
    }
}

impl Drop for AdminServer {
    fn drop(&mut self) {
        self.shutdown();
    }
}

/// Bind `cfg.listen` (error if taken) and serve the admin API on a dedicated thread.
pub fn spawn_admin(
    cfg: &AdminConfig,
    backend: Arc<dyn AdminBackend>,
) -> Result<AdminServer, AdminError> {
    let verifier = Verifier::from_config(cfg)?;
    let bind_err = |message: String| AdminError::Bind {
        addr: cfg.listen.clone(),
        message,
    };
    let addrs: Vec<SocketAddr> = cfg
        .listen
        .to_socket_addrs()
        .map_err(|e| bind_err(e.to_string()))?
        .collect();
    let listener = std::net::TcpListener::bind(&addrs[..]).map_err(|e| bind_err(e.to_string()))?;
    listener
        .set_nonblocking(true)
        .map_err(|e| bind_err(e.to_string()))?;
    let addr = listener.local_addr().map_err(|e| bind_err(e.to_string()))?;
    if !addr.ip().is_loopback() {
        tracing::info!(%addr, "admin API listening on a non-loopback address");
    }

    let state = Arc::new(AppState { backend, verifier });
    let app = Router::new().fallback(move |req: Request| dispatch(Arc::clone(&state), req));
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let (ready_tx, ready_rx) = mpsc::channel::<Result<(), String>>();
    let (done_tx, done_rx) = mpsc::channel::<()>();
    std::thread::Builder::new()
        .name("jimini-admin".into())
        .spawn(move || {
            let rt = match tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .max_blocking_threads(4)
                .thread_name("jimini-admin-blocking")
                .build()
            {
                Ok(rt) => rt,
                Err(e) => {
                    let _ = ready_tx.send(Err(e.to_string()));
                    return;
                }
            };
            rt.block_on(async move {
                let listener = match tokio::net::TcpListener::from_std(listener) {
                    Ok(l) => l,
                    Err(e) => {
                        let _ = ready_tx.send(Err(e.to_string()));
                        return;
                    }
                };
                let _ = ready_tx.send(Ok(()));
                let served = axum::serve(listener, app)
                    .with_graceful_shutdown(async {
                        let _ = stop_rx.await;
                    })
                    .await;
                if let Err(e) = served {
                    tracing::error!(error = %e, "admin server stopped");
                }
            });
            drop(rt);
            let _ = done_tx.send(());
        })
        .map_err(|e| AdminError::Internal(format!("spawning admin thread: {e}")))?;
    match ready_rx.recv() {
        Ok(Ok(())) => {}
        Ok(Err(e)) => return Err(AdminError::Internal(format!("admin runtime: {e}"))),
        Err(_) => return Err(AdminError::Internal("admin thread exited".into())),
    }
    tracing::info!(%addr, "admin API listening");
    Ok(AdminServer {
        addr,
        stop: Mutex::new(Some(stop_tx)),
        done: Mutex::new(Some(done_rx)),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::admin::config::Secret;
    use crate::admin::jwt::tests::{claims, hs_config, hs_token, none_token, SECRET};

    #[derive(Default)]
    struct Fake {
        calls: Mutex<Vec<String>>,
        audits: Mutex<Vec<AdminAuditEvent>>,
        requests: Mutex<Vec<(&'static str, u16)>>,
        not_ready: bool,
    }

    impl Fake {
        fn call(&self, s: impl Into<String>) {
            self.calls.lock().unwrap().push(s.into());
        }
        fn calls(&self) -> Vec<String> {
            self.calls.lock().unwrap().clone()
        }
    }

    impl AdminBackend for Fake {
        fn ready(&self) -> (bool, Value) {
            (!self.not_ready, json!({"rules": 3}))
        }
        fn rules(&self) -> Value {
            self.call("rules");
            json!({"packs": []})
        }
        fn reload_rules(&self) -> Result<Value, String> {
            self.call("reload");
            Ok(json!({"reloaded": true}))
        }
        fn upstreams(&self) -> Value {
            self.call("upstreams");
            json!([{"name": "openai", "breaker": "closed"}])
        }
        fn reset_breaker(&self, name: &str) -> Result<Value, AdminError> {
            self.call(format!("reset:{name}"));
            if name == "openai" {
                Ok(json!({"upstream": name, "breaker": "closed"}))
            } else {
                Err(AdminError::NotFound(format!("upstream '{name}'")))
            }
        }
        fn config_masked(&self) -> Value {
            self.call("config");
            json!({"admin": {"jwt": {"secret": "***"}}})
        }
        fn set_shadow(&self, on: bool) -> Value {
            self.call(format!("shadow:{on}"));
            json!({"shadow": on})
        }
        fn audit_verify(&self) -> Result<Value, String> {
            self.call("verify");
            Ok(json!({"ok": true}))
        }
        fn audit_export(&self, subject: &str) -> Result<Value, String> {
            self.call(format!("export:{subject}"));
            Ok(json!({"records": []}))
        }
        fn audit_erase(&self, subject: &str) -> Result<Value, String> {
            self.call(format!("erase:{subject}"));
            Ok(json!({"erased": 0}))
        }
        fn metrics_text(&self) -> Option<String> {
            Some("# HELP jimini_active_requests x\njimini_active_requests 0\n".into())
        }
        fn audit_admin(&self, event: AdminAuditEvent) {
            self.audits.lock().unwrap().push(event);
        }
        fn record_request(&self, path_class: &'static str, status: u16) {
            self.requests.lock().unwrap().push((path_class, status));
        }
    }

    fn loopback(mut c: AdminConfig) -> AdminConfig {
        c.listen = "127.0.0.1:0".into();
        c
    }

    struct Ep {
        method: &'static str,
        path: &'static str,
        body: Option<Value>,
        role: Role,
        call: &'static str,
    }

    fn endpoints() -> Vec<Ep> {
        vec![
            Ep {
                method: "GET",
                path: "/admin/rules",
                body: None,
                role: Role::Viewer,
                call: "rules",
            },
            Ep {
                method: "POST",
                path: "/admin/rules/reload",
                body: None,
                role: Role::Operator,
                call: "reload",
            },
            Ep {
                method: "GET",
                path: "/admin/upstreams",
                body: None,
                role: Role::Viewer,
                call: "upstreams",
            },
            Ep {
                method: "POST",
                path: "/admin/upstreams/openai/reset",
                body: None,
                role: Role::Operator,
                call: "reset:openai",
            },
            Ep {
                method: "GET",
                path: "/admin/config",
                body: None,
                role: Role::Viewer,
                call: "config",
            },
            Ep {
                method: "POST",
                path: "/admin/shadow",
                body: Some(json!({"enabled": true})),
                role: Role::Operator,
                call: "shadow:true",
            },
            Ep {
                method: "GET",
                path: "/admin/audit/verify",
                body: None,
                role: Role::Viewer,
                call: "verify",
            },
            Ep {
                method: "GET",
                path: "/admin/audit/export?subject=user-42",
                body: None,
                role: Role::Admin,
                call: "export:user-42",
            },
            Ep {
                method: "POST",
                path: "/admin/audit/erase",
                body: Some(json!({"subject": "user-42"})),
                role: Role::Admin,
                call: "erase:user-42",
            },
        ]
    }

    fn send(
        client: &reqwest::blocking::Client,
        base: &str,
        ep: &Ep,
        token: Option<&str>,
    ) -> reqwest::blocking::Response {
        let url = format!("{base}{}", ep.path);
        let mut rb = match ep.method {
            "GET" => client.get(url),
            _ => client.post(url),
        };
        if let Some(t) = token {
            rb = rb.bearer_auth(t);
        }
        if let Some(b) = &ep.body {
            rb = rb.json(b);
        }
        rb.send().unwrap()
    }

    fn assert_security_headers(r: &reqwest::blocking::Response) {
        let h = r.headers();
        for (k, v) in SECURITY_HEADERS {
            assert_eq!(
                h.get(*k).and_then(|x| x.to_str().ok()),
                Some(*v),
                "{k} on {}",
                r.url()
            );
        }
    }

    #[test]
    fn jwt_matrix_over_every_endpoint() {
        let fake = Arc::new(Fake::default());
        let srv = spawn_admin(&loopback(hs_config()), fake.clone()).unwrap();
        let base = format!("http://{}", srv.addr());
        let client = reqwest::blocking::Client::new();

        let mut wrong_aud = claims("admin", 600, -5);
        wrong_aud["aud"] = json!("someone-else");
        let mut wrong_iss = claims("admin", 600, -5);
        wrong_iss["iss"] = json!("evil");
        let rejected: Vec<(&str, Option<String>)> = vec![
            ("no token", None),
            (
                "bad signature",
                Some(hs_token(
                    "wrong-secret-0123456789-abcdefghijklm",
                    &claims("admin", 600, -5),
                )),
            ),
            (
                "expired",
                Some(hs_token(SECRET, &claims("admin", -3600, -7200))),
            ),
            ("alg none", Some(none_token(&claims("admin", 600, -5)))),
            ("wrong audience", Some(hs_token(SECRET, &wrong_aud))),
            ("wrong issuer", Some(hs_token(SECRET, &wrong_iss))),
            (
                "nbf in the future",
                Some(hs_token(SECRET, &claims("admin", 7200, 3600))),
            ),
        ];
        let mut admin_requests = 0;
        for ep in endpoints() {
            for (name, tok) in &rejected {
                let r = send(&client, &base, &ep, tok.as_deref());
                assert_eq!(r.status(), 401, "{name} {} {}", ep.method, ep.path);
                let www = r
                    .headers()
                    .get("www-authenticate")
                    .unwrap()
                    .to_str()
                    .unwrap();
                assert!(www.starts_with("Bearer"), "{www}");
                assert_security_headers(&r);
                let body: Value = r.json().unwrap();
                assert_eq!(body["error"]["type"], "authentication_error");
                admin_requests += 1;
            }
            for role in [Role::Viewer, Role::Operator, Role::Admin] {
                let tok = hs_token(SECRET, &claims(role.as_str(), 600, -5));
                let before = fake.calls().len();
                let r = send(&client, &base, &ep, Some(&tok));
                admin_requests += 1;
                assert_security_headers(&r);
                if role >= ep.role {
                    assert_eq!(r.status(), 200, "{role:?} {} {}", ep.method, ep.path);
                    assert!(r.headers()["content-type"]
                        .to_str()
                        .unwrap()
                        .starts_with("application/json"));
                    let calls = fake.calls();
                    assert_eq!(calls.len(), before + 1);
                    assert_eq!(calls.last().map(String::as_str), Some(ep.call));
                } else {
                    assert_eq!(r.status(), 403, "{role:?} {} {}", ep.method, ep.path);
                    let body: Value = r.json().unwrap();
                    assert_eq!(body["error"]["type"], "permission_error");
                    assert_eq!(fake.calls().len(), before, "backend not called on 403");
                }
            }
        }
        // rejected tokens never reached the backend; every admin request was audited
        let audits = fake.audits.lock().unwrap().clone();
        assert_eq!(audits.len(), admin_requests);
        let unauth = audits.iter().filter(|a| a.status == 401).count();
        assert_eq!(unauth, endpoints().len() * rejected.len());
        assert!(audits
            .iter()
            .filter(|a| a.status == 401)
            .all(|a| a.role.is_none()
                && a.subject_of_token.is_none()
                && a.outcome.starts_with("unauthenticated:")));
        let expired = audits
            .iter()
            .filter(|a| a.outcome == "unauthenticated:expired_token")
            .count();
        assert_eq!(expired, endpoints().len());
        let forbidden: Vec<_> = audits.iter().filter(|a| a.status == 403).collect();
        assert!(!forbidden.is_empty());
        assert!(forbidden
            .iter()
            .all(|a| a.outcome == "forbidden" && a.subject_of_token.as_deref() == Some("alice")));
        // the data-subject id in the query string never reaches the audit record
        assert!(audits.iter().all(|a| !a.path.contains("user-42")));
        assert!(audits.iter().any(|a| a.path == "/admin/audit/export"
            && a.status == 200
            && a.role.as_deref() == Some("admin")));
        let reqs = fake.requests.lock().unwrap().clone();
        assert!(reqs.contains(&("audit_export", 200)) && reqs.contains(&("rules", 401)));
        srv.shutdown();
    }

    #[test]
    fn no_key_configured_is_401_everywhere() {
        let fake = Arc::new(Fake::default());
        let mut cfg = loopback(AdminConfig::default());
        cfg.jwt.secret = Some(Secret::new(""));
        let srv = spawn_admin(&cfg, fake.clone()).unwrap();
        let base = format!("http://{}", srv.addr());
        let client = reqwest::blocking::Client::new();
        let tok = hs_token(SECRET, &claims("admin", 600, -5));
        for ep in endpoints() {
            for t in [
                None,
                Some(tok.as_str()),
                Some(none_token(&claims("admin", 600, 0)).as_str()),
            ] {
                let r = send(&client, &base, &ep, t);
                assert_eq!(r.status(), 401, "{}", ep.path);
                assert_security_headers(&r);
            }
        }
        // unknown admin paths do not leak existence either
        let r = client.get(format!("{base}/admin/nope")).send().unwrap();
        assert_eq!(r.status(), 401);
        assert!(fake.calls().is_empty());
        // open endpoints stay open
        assert_eq!(
            client
                .get(format!("{base}/healthz"))
                .send()
                .unwrap()
                .status(),
            200
        );
        assert_eq!(
            client
                .get(format!("{base}/readyz"))
                .send()
                .unwrap()
                .status(),
            200
        );
        let audits = fake.audits.lock().unwrap();
        assert!(audits
            .iter()
            .all(|a| a.outcome == "unauthenticated:no_key_configured"));
    }

    #[test]
    fn open_endpoints_errors_and_headers() {
        let fake = Arc::new(Fake {
            not_ready: true,
            ..Fake::default()
        });
        let srv = spawn_admin(&loopback(hs_config()), fake.clone()).unwrap();
        let base = format!("http://{}", srv.addr());
        let c = reqwest::blocking::Client::new();

        let r = c.get(format!("{base}/healthz")).send().unwrap();
        assert_eq!(r.status(), 200);
        assert_security_headers(&r);
        let r = c.get(format!("{base}/readyz")).send().unwrap();
        assert_eq!(r.status(), 503);
        assert_security_headers(&r);
        let v: Value = r.json().unwrap();
        assert_eq!(v["ready"], false);
        assert_eq!(v["details"]["rules"], 3);
        let r = c.get(format!("{base}/metrics")).send().unwrap();
        assert_eq!(r.status(), 200);
        assert!(r.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/plain; version=0.0.4"));
        assert_security_headers(&r);
        assert!(r.text().unwrap().contains("jimini_active_requests 0"));
        let r = c.post(format!("{base}/healthz")).send().unwrap();
        assert_eq!(r.status(), 405);
        assert_security_headers(&r);
        let r = c.get(format!("{base}/nope")).send().unwrap();
        assert_eq!(r.status(), 404);
        assert_security_headers(&r);
        let v: Value = r.json().unwrap();
        assert_eq!(v["error"]["type"], "not_found_error");

        let admin = hs_token(SECRET, &claims("admin", 600, -5));
        let viewer = hs_token(SECRET, &claims("viewer", 600, -5));
        // wrong method on a known route → 405 with Allow (after auth)
        let r = c
            .get(format!("{base}/admin/rules/reload"))
            .bearer_auth(&admin)
            .send()
            .unwrap();
        assert_eq!(r.status(), 405);
        assert_eq!(r.headers()["allow"], "POST");
        let r = c
            .delete(format!("{base}/admin/rules"))
            .bearer_auth(&viewer)
            .send()
            .unwrap();
        assert_eq!(r.status(), 405);
        // unknown admin route → 404 after auth
        let r = c
            .get(format!("{base}/admin/nope"))
            .bearer_auth(&admin)
            .send()
            .unwrap();
        assert_eq!(r.status(), 404);
        assert_security_headers(&r);
        // unknown upstream → 404 from backend
        let r = c
            .post(format!("{base}/admin/upstreams/ghost/reset"))
            .bearer_auth(&admin)
            .send()
            .unwrap();
        assert_eq!(r.status(), 404);
        // bad bodies / queries → 400
        for (path, body) in [
            ("/admin/shadow", "{}"),
            ("/admin/shadow", "not json"),
            ("/admin/shadow", r#"{"enabled":"yes"}"#),
            ("/admin/audit/erase", r#"{"subject":""}"#),
            ("/admin/audit/erase", r#"{}"#),
        ] {
            let r = c
                .post(format!("{base}{path}"))
                .bearer_auth(&admin)
                .header("content-type", "application/json")
                .body(body)
                .send()
                .unwrap();
            assert_eq!(r.status(), 400, "{path} {body}");
            assert_security_headers(&r);
        }
        let r = c
            .get(format!("{base}/admin/audit/export"))
            .bearer_auth(&admin)
            .send()
            .unwrap();
        assert_eq!(r.status(), 400);
        let r = c
            .post(format!("{base}/admin/shadow"))
            .bearer_auth(&admin)
            .body(vec![b' '; MAX_BODY + 10])
            .send()
            .unwrap();
        assert_eq!(r.status(), 413);
        // shadow off
        let r = c
            .post(format!("{base}/admin/shadow"))
            .bearer_auth(&admin)
            .json(&json!({"enabled": false}))
            .send()
            .unwrap();
        assert_eq!(r.status(), 200);
        assert_eq!(r.json::<Value>().unwrap()["shadow"], false);
        assert!(fake.calls().contains(&"shadow:false".to_string()));
        // a token without a role is authenticated but forbidden
        let mut c0 = claims("viewer", 600, -5);
        c0.as_object_mut().unwrap().remove("roles");
        let r = c
            .get(format!("{base}/admin/rules"))
            .bearer_auth(hs_token(SECRET, &c0))
            .send()
            .unwrap();
        assert_eq!(r.status(), 403);
        drop(srv);
    }

    #[test]
    fn bind_errors_and_defaults() {
        let fake: Arc<dyn AdminBackend> = Arc::new(Fake::default());
        let a = spawn_admin(&loopback(hs_config()), fake.clone()).unwrap();
        assert!(a.addr().ip().is_loopback());
        let mut taken = hs_config();
        taken.listen = a.addr().to_string();
        assert!(matches!(
            spawn_admin(&taken, fake.clone()),
            Err(AdminError::Bind { .. })
        ));
        let mut bad = hs_config();
        bad.listen = "not an address".into();
        assert!(matches!(
            spawn_admin(&bad, fake.clone()),
            Err(AdminError::Bind { .. })
        ));
        let mut weak = loopback(hs_config());
        weak.jwt.secret = Some(Secret::new("short"));
        assert!(matches!(
            spawn_admin(&weak, fake.clone()),
            Err(AdminError::Config(_))
        ));
        assert!(AdminConfig::default().listen.starts_with("127.0.0.1:"));
        a.shutdown();
        a.shutdown();
        // the port is free again after shutdown
        assert!(std::net::TcpListener::bind(a.addr()).is_ok());
    }

    #[test]
    fn route_table() {
        assert_eq!(
            classify("/admin/upstreams/openai/reset"),
            Target::Admin(Op::Reset, "openai")
        );
        assert_eq!(classify("/admin/upstreams//reset"), Target::AdminUnknown);
        assert_eq!(classify("/admin/upstreams/a/b/reset"), Target::AdminUnknown);
        assert_eq!(classify("/admin"), Target::AdminUnknown);
        assert_eq!(classify("/administrator"), Target::NotFound);
        assert_eq!(classify("/healthz"), Target::Open(Open::Healthz));
        assert_eq!(classify("/admin/rules/"), Target::AdminUnknown);
        assert_eq!(truncate("ééé", 3), "é");
    }
}
