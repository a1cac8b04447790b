//! End-to-end tests for the upstream layer (issue "Upstreams: routing, egress control, circuit
//! breakers, retries, fallback, rate limits, key vaulting"), against the real `jimini` binary and
//! in-process mock upstreams.
mod common;

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::harness::*;
use jimini::mock::{Fault, MockConfig, MockServer};
use rand::Rng;
use serde_json::{json, Value};

// ---------------------------------------------------------------------------------------------
// helpers
// ---------------------------------------------------------------------------------------------

fn mock_cfg() -> MockConfig {
    MockConfig {
        enabled: true,
        listen: "127.0.0.1:0".into(),
        ..Default::default()
    }
}

fn spawn_mock() -> MockServer {
    MockServer::spawn_thread("127.0.0.1:0", mock_cfg()).expect("mock upstream")
}

/// A few random lowercase words (no digits, so no detector can mistake them for PII).
fn words(n: usize) -> String {
    const VOCAB: [&str; 16] = [
        "river", "lantern", "copper", "meadow", "orbit", "velvet", "harbor", "pepper", "quartz",
        "summit", "willow", "cobalt", "ember", "fjord", "gadget", "mosaic",
    ];
    let mut rng = rand::rng();
    (0..n)
        .map(|_| VOCAB[rng.random_range(0..VOCAB.len())])
        .collect::<Vec<_>>()
        .join(" ")
}

/// A random lowercase tag, for model names and keys.
fn tag() -> String {
    let mut rng = rand::rng();
    (0..8)
        .map(|_| (b'a' + rng.random_range(0..26u8)) as char)
        .collect()
}

fn chat(model: &str, text: &str) -> Value {
    json!({"model": model, "messages": [{"role": "user", "content": text}]})
}

fn chat_stream(model: &str, text: &str) -> Value {
    json!({"model": model, "stream": true, "messages": [{"role": "user", "content": text}]})
}

fn post(
    j: &Jimini,
    path: &str,
    body: &Value,
    headers: &[(&str, &str)],
) -> reqwest::blocking::Response {
    let mut rb = Jimini::client().post(j.url(path)).json(body);
    for (k, v) in headers {
        rb = rb.header(*k, *v);
    }
    rb.send().expect("request through jimini")
}

/// Status, headers and body text.
fn send(
    j: &Jimini,
    path: &str,
    body: &Value,
    headers: &[(&str, &str)],
) -> (u16, reqwest::header::HeaderMap, String) {
    let r = post(j, path, body, headers);
    let status = r.status().as_u16();
    let h = r.headers().clone();
    let text = r.text().unwrap_or_default();
    (status, h, text)
}

/// Asserts an OpenAI-shaped error body with the given `type`; returns the `error` object.
fn openai_error(body: &str, kind: &str) -> Value {
    let v: Value = serde_json::from_str(body)
        .unwrap_or_else(|e| panic!("error body is not JSON ({e}): {body}"));
    let err = v
        .get("error")
        .unwrap_or_else(|| panic!("no `error` object: {body}"))
        .clone();
    assert!(
        err["message"].as_str().is_some_and(|m| !m.is_empty()),
        "{body}"
    );
    assert_eq!(err["type"], kind, "{body}");
    assert!(
        err.get("code").is_some() && err.get("param").is_some(),
        "{body}"
    );
    err
}

fn hdr<'a>(h: &'a reqwest::header::HeaderMap, name: &str) -> Option<&'a str> {
    h.get(name).and_then(|v| v.to_str().ok())
}

/// Poll `f` every 50 ms until it returns Some or `timeout` elapses.
fn poll<T>(timeout: Duration, mut f: impl FnMut() -> Option<T>) -> Option<T> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = f() {
            return Some(v);
        }
        if Instant::now() > deadline {
            return None;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn admin_get(j: &Jimini, path: &str, token: &str) -> (u16, Value) {
    let r = Jimini::client()
        .get(j.admin_url(path))
        .bearer_auth(token)
        .send()
        .unwrap();
    let s = r.status().as_u16();
    (s, r.json().unwrap_or(Value::Null))
}

fn breaker_state(j: &Jimini, token: &str, upstream: &str) -> String {
    let (s, v) = admin_get(j, "/admin/upstreams", token);
    assert_eq!(s, 200, "{v}");
    let up = v
        .as_array()
        .and_then(|a| a.iter().find(|u| u["name"] == upstream))
        .unwrap_or_else(|| panic!("no upstream {upstream} in {v}"));
    up["breaker"]["state"].as_str().unwrap_or("?").to_string()
}

fn readyz(j: &Jimini) -> u16 {
    Jimini::client()
        .get(j.admin_url("/readyz"))
        .send()
        .unwrap()
        .status()
        .as_u16()
}

/// A listener that nobody should ever connect to. The kernel completes handshakes into the
/// backlog even if we never call accept, so draining it afterwards counts every connection made.
struct Trap {
    listener: TcpListener,
}

impl Trap {
    fn new() -> Trap {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        Trap { listener }
    }
    fn addr(&self) -> String {
        self.listener.local_addr().unwrap().to_string()
    }
    /// Connections accepted so far, with whatever bytes each sent within 300 ms.
    fn drain(&self) -> Vec<String> {
        let mut out = Vec::new();
        while let Ok((mut s, _)) = self.listener.accept() {
            s.set_nonblocking(false).ok();
            s.set_read_timeout(Some(Duration::from_millis(300))).ok();
            let mut buf = vec![0u8; 8192];
            let n = s.read(&mut buf).unwrap_or(0);
            out.push(String::from_utf8_lossy(&buf[..n]).into_owned());
        }
        out
    }
}

/// Send raw bytes to `addr` and read until the peer closes (or 10 s pass).
fn raw_http(addr: &str, req: &str) -> String {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.write_all(req.as_bytes()).unwrap();
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
    String::from_utf8_lossy(&out).into_owned()
}

fn raw_status(resp: &str) -> u16 {
    resp.split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0)
}

fn model_received(m: &MockServer, i: usize) -> String {
    m.requests()[i].json().expect("JSON body upstream")["model"]
        .as_str()
        .unwrap_or_default()
        .to_string()
}

// ---------------------------------------------------------------------------------------------
// routing
// ---------------------------------------------------------------------------------------------

#[test]
fn routes_by_path_and_model_with_rewrite_and_default() {
    let a = spawn_mock();
    let b = spawn_mock();
    let c = spawn_mock();
    let rewrite_to = format!("b-mini-{}", tag());
    let upstreams = format!(
        "upstreams:\n\
         \x20 - name: a\n    base_url: {}\n\
         \x20 - name: b\n    base_url: {}\n    models: [\"b-mini-*\", \"llama-*\"]\n\
         \x20 - name: c\n    base_url: {}\n",
        a.url(),
        b.url(),
        c.url()
    );
    let routes = format!(
        "routes:\n\
         \x20 - model: gpt-4o-mini\n    upstream: b\n    rewrite_model: {rewrite_to}\n\
         \x20 - model: \"llama-*\"\n    upstream: b\n\
         \x20 - path: /v1/embeddings\n    upstream: c\n\
         \x20 - model: \"gpt-4o*\"\n    upstream: c\n\
         \x20 - model: \"qwen*\"\n    upstream: b\n"
    );
    let j = Jimini::start_with_mock(
        Options {
            upstreams_yaml: Some(upstreams),
            extra_yaml: routes,
            ..Default::default()
        },
        a,
    );
    let a = &j.mock;

    // Exact model → b, rewritten; the client still gets a normal completion.
    let text = words(4);
    let (s, _, body) = send(&j, "/v1/chat/completions", &chat("gpt-4o-mini", &text), &[]);
    assert_eq!(s, 200, "{body}");
    assert_eq!(b.request_count(), 1);
    assert_eq!(
        model_received(&b, 0),
        rewrite_to,
        "upstream sees the rewritten model"
    );
    assert!(
        body.contains(&text),
        "echoed reply reaches the client: {body}"
    );

    // Glob model → b, not rewritten.
    let llama = format!("llama-{}", tag());
    let (s, _, body) = send(&j, "/v1/chat/completions", &chat(&llama, &words(3)), &[]);
    assert_eq!(s, 200, "{body}");
    assert_eq!(b.request_count(), 2);
    assert_eq!(model_received(&b, 1), llama);

    // Exact route wins over the later glob; another gpt-4o* model goes to c by glob.
    let g = format!("gpt-4o-{}", tag());
    let (s, _, body) = send(&j, "/v1/chat/completions", &chat(&g, &words(3)), &[]);
    assert_eq!(s, 200, "{body}");
    assert_eq!(c.request_count(), 1);
    assert_eq!(model_received(&c, 0), g);

    // Path route → c.
    let emb = json!({"model": format!("emb-{}", tag()), "input": words(3)});
    let (s, _, body) = send(&j, "/v1/embeddings", &emb, &[]);
    assert_eq!(s, 200, "{body}");
    assert_eq!(c.request_count(), 2);
    assert_eq!(c.requests()[1].path, "/v1/embeddings");

    // No route matches → the first upstream (implicit default).
    let other = format!("other-{}", tag());
    let (s, _, body) = send(&j, "/v1/chat/completions", &chat(&other, &words(3)), &[]);
    assert_eq!(s, 200, "{body}");
    assert_eq!(a.request_count(), 1);
    assert_eq!(model_received(a, 0), other);
    // GET without a body → default as well.
    let r = Jimini::client().get(j.url("/v1/models")).send().unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(a.request_count(), 2);
    assert_eq!(a.requests()[1].path, "/v1/models");

    // A route may only send what its upstream's allow-list permits (checked after rewrite:
    // `gpt-4o-mini` above was allowed on b only as the rewritten `b-mini-…`).
    let qwen = format!("qwen-{}", tag());
    let (s, _, body) = send(&j, "/v1/chat/completions", &chat(&qwen, &words(3)), &[]);
    assert_eq!(s, 403, "{body}");
    openai_error(&body, "jimini_policy_violation");

    // Nothing leaked to the wrong upstreams.
    assert_eq!(
        (a.request_count(), b.request_count(), c.request_count()),
        (2, 2, 2)
    );
    // Every upstream saw its own Host, not the proxy's.
    for (m, name) in [(a, "a"), (&b, "b"), (&c, "c")] {
        for r in m.requests() {
            assert_eq!(
                r.header("host"),
                Some(m.addr.to_string().as_str()),
                "{name}"
            );
        }
    }
}

#[test]
fn catch_all_route_replaces_the_implicit_default() {
    let a = spawn_mock();
    let b = spawn_mock();
    let upstreams = format!(
        "upstreams:\n\
         \x20 - name: a\n    base_url: {}\n\
         \x20 - name: b\n    base_url: {}\n",
        a.url(),
        b.url()
    );
    let j = Jimini::start_with_mock(
        Options {
            upstreams_yaml: Some(upstreams),
            extra_yaml: "routes:\n  - path: /v1/embeddings\n    upstream: a\n  - upstream: b\n"
                .into(),
            ..Default::default()
        },
        a,
    );
    for _ in 0..3 {
        let m = format!("m-{}", tag());
        let (s, _, body) = send(&j, "/v1/chat/completions", &chat(&m, &words(3)), &[]);
        assert_eq!(s, 200, "{body}");
    }
    let emb = json!({"model": "e", "input": words(2)});
    assert_eq!(send(&j, "/v1/embeddings", &emb, &[]).0, 200);
    assert_eq!(b.request_count(), 3, "catch-all took the chat requests");
    assert_eq!(j.mock.request_count(), 1, "only the path route reached a");
}

// ---------------------------------------------------------------------------------------------
// egress
// ---------------------------------------------------------------------------------------------

#[test]
fn egress_model_allow_list_denies_with_openai_error() {
    let upstreams = |url: &str| {
        format!(
            "upstreams:\n  - name: guarded\n    base_url: {url}\n    models: [\"gpt-4.1*\", \"mock-gpt\"]\n"
        )
    };
    let a = spawn_mock();
    let j = Jimini::start_with_mock(
        Options {
            upstreams_yaml: Some(upstreams(&a.url())),
            ..Default::default()
        },
        a,
    );
    // Allowed by glob.
    let ok = format!("gpt-4.1-{}", tag());
    let (s, _, body) = send(&j, "/v1/chat/completions", &chat(&ok, &words(3)), &[]);
    assert_eq!(s, 200, "{body}");
    assert_eq!(j.mock.request_count(), 1);

    for model in [
        format!("claude-{}", tag()),
        format!("gpt-4o-{}", tag()),
        "gpt-4.".to_string(),
    ] {
        let (s, h, body) = send(
            &j,
            "/v1/chat/completions",
            &chat(&model, &words(3)),
            &[("authorization", "Bearer sk-caller-should-not-leave")],
        );
        assert_eq!(s, 403, "{model}: {body}");
        assert!(hdr(&h, "content-type").is_some_and(|c| c.starts_with("application/json")));
        let err = openai_error(&body, "jimini_policy_violation");
        assert!(
            err["code"].as_str().is_some_and(|c| c.contains("egress")),
            "{body}"
        );
        assert!(err["message"].as_str().unwrap().contains(&model), "{body}");
    }
    // No denied request was delivered upstream as a complete request. (Whether a connection was
    // opened at all is checked with a bare listener below.)
    assert_eq!(
        j.mock.requests().len(),
        1,
        "only the allowed request was delivered"
    );
}

/// The same allow-list, but the upstream is a bare listener: a denied model must not even open a
/// connection to it (so no header — e.g. the caller's Authorization — leaves the gateway).
#[test]
fn egress_denied_model_opens_no_upstream_connection() {
    let trap = Trap::new();
    let upstreams = format!(
        "upstreams:\n  - name: guarded\n    base_url: http://{}\n    models: [\"allowed-*\"]\n    retries: {{max_attempts: 0}}\n",
        trap.addr()
    );
    let j = Jimini::start(Options {
        upstreams_yaml: Some(upstreams),
        ..Default::default()
    });
    let model = format!("denied-{}", tag());
    let (s, _, body) = send(
        &j,
        "/v1/chat/completions",
        &chat(&model, &words(3)),
        &[("authorization", "Bearer sk-caller-should-not-leave")],
    );
    assert_eq!(s, 403, "{body}");
    openai_error(&body, "jimini_policy_violation");
    let seen = trap.drain();
    assert!(
        seen.is_empty(),
        "egress-denied request opened {} connection(s) to the upstream; it received: {:?}",
        seen.len(),
        seen
    );
}

/// With a model route the body's model is known at admission: a denied model is refused before
/// any connection is made.
#[test]
fn egress_denied_with_model_routes_opens_no_upstream_connection() {
    let trap = Trap::new();
    let upstreams = format!(
        "upstreams:\n  - name: guarded\n    base_url: http://{}\n    models: [\"allowed-*\"]\n    retries: {{max_attempts: 0}}\n",
        trap.addr()
    );
    let j = Jimini::start(Options {
        upstreams_yaml: Some(upstreams),
        extra_yaml: "routes:\n  - model: \"allowed-*\"\n    upstream: guarded\n".into(),
        ..Default::default()
    });
    for model in [format!("denied-{}", tag()), format!("gpt-{}", tag())] {
        let (s, _, body) = send(
            &j,
            "/v1/chat/completions",
            &chat(&model, &words(3)),
            &[("authorization", "Bearer sk-caller-should-not-leave")],
        );
        assert_eq!(s, 403, "{body}");
        let err = openai_error(&body, "jimini_policy_violation");
        assert!(err["message"].as_str().unwrap().contains(&model), "{body}");
    }
    let seen = trap.drain();
    assert!(
        seen.is_empty(),
        "denied request contacted the upstream: {seen:?}"
    );
}

/// Only configured upstreams are ever contacted: Host headers, absolute-form URIs, CONNECT and
/// odd paths naming another host all end at the configured upstream (or are refused).
#[test]
fn no_connection_to_unconfigured_hosts() {
    let trap = Trap::new();
    let t = trap.addr();
    let j = Jimini::start(Options::default());
    let proxy = j.proxy.clone();
    let body = chat("mock-gpt", &words(3)).to_string();
    let len = body.len();
    let reqs = [
        format!("POST /v1/chat/completions HTTP/1.1\r\nHost: {t}\r\nContent-Type: application/json\r\nContent-Length: {len}\r\nConnection: close\r\n\r\n{body}"),
        format!("POST http://{t}/v1/chat/completions HTTP/1.1\r\nHost: {t}\r\nContent-Type: application/json\r\nContent-Length: {len}\r\nConnection: close\r\n\r\n{body}"),
        format!("GET http://{t}/v1/models HTTP/1.1\r\nHost: {t}\r\nConnection: close\r\n\r\n"),
        format!("GET http://{t}/ HTTP/1.1\r\nHost: {proxy}\r\nConnection: close\r\n\r\n"),
        format!("CONNECT {t} HTTP/1.1\r\nHost: {t}\r\nConnection: close\r\n\r\n"),
        format!("GET //{t}/v1/models HTTP/1.1\r\nHost: {t}\r\nConnection: close\r\n\r\n"),
        format!("GET /http://{t}/v1/models HTTP/1.1\r\nHost: {proxy}\r\nConnection: close\r\n\r\n"),
        format!("GET /v1/models HTTP/1.1\r\nHost: {proxy}\r\nX-Forwarded-Host: {t}\r\nForwarded: host={t}\r\nX-Forwarded-Proto: http\r\nConnection: close\r\n\r\n"),
        format!("GET /v1/models HTTP/1.1\r\nHost: {t}\r\nX-Original-URL: http://{t}/\r\nX-Rewrite-URL: http://{t}/\r\nConnection: close\r\n\r\n"),
    ];
    let mut answered = 0;
    for r in &reqs {
        let resp = raw_http(&proxy, r);
        if raw_status(&resp) != 0 {
            answered += 1;
        }
    }
    // A client that uses Jimini as a forward proxy (absolute-form) also stays on the upstream.
    let via_proxy = reqwest::blocking::Client::builder()
        .proxy(reqwest::Proxy::http(format!("http://{proxy}")).unwrap())
        .timeout(Duration::from_secs(20))
        .build()
        .unwrap();
    let r = via_proxy
        .post(format!("http://{t}/v1/chat/completions"))
        .json(&chat("mock-gpt", &words(2)))
        .send()
        .unwrap();
    assert_eq!(r.status(), 200);

    assert!(
        answered >= reqs.len() - 1,
        "the proxy answered the raw requests"
    );
    let seen = trap.drain();
    assert!(seen.is_empty(), "unconfigured host was contacted: {seen:?}");
    // What did arrive went to the configured upstream with its own Host.
    let recorded = j.mock.requests();
    assert!(recorded.len() >= 3, "{}", recorded.len());
    for r in recorded {
        assert_eq!(r.header("host"), Some(j.mock.addr.to_string().as_str()));
    }
}

// ---------------------------------------------------------------------------------------------
// key vaulting
// ---------------------------------------------------------------------------------------------

#[test]
fn key_vaulting_injects_real_key_and_authenticates_callers() {
    let real = format!("sk-real-{}{}", tag(), tag());
    let alice = format!("jk-alice-{}", tag());
    let bob = format!("jk-bob-{}", tag());
    let carol = format!("jk-carol-{}", tag());
    let a = spawn_mock();
    let upstreams = format!(
        "upstreams:\n  - name: vault\n    base_url: {}\n    auth: {{mode: inject, api_key_env: E2E_UPSTREAM_KEY}}\n",
        a.url()
    );
    let callers = format!(
        "callers:\n  require_key: true\n  keys_env: E2E_CALLER_KEYS\n  keys:\n    - name: carol\n      key_sha3: {}\n",
        jimini::upstream::callers::hash_key(&carol)
    );
    let j = Jimini::start_with_mock(
        Options {
            upstreams_yaml: Some(upstreams),
            extra_yaml: callers,
            env: vec![
                ("E2E_UPSTREAM_KEY".into(), real.clone()),
                ("E2E_CALLER_KEYS".into(), format!("alice={alice},bob={bob}")),
            ],
            ..Default::default()
        },
        a,
    );
    let bearer = |k: &str| format!("Bearer {k}");
    let cases: Vec<(String, Vec<(&str, String)>)> = vec![
        (alice.clone(), vec![("authorization", bearer(&alice))]),
        (bob.clone(), vec![("x-api-key", bob.clone())]),
        (carol.clone(), vec![("api-key", carol.clone())]),
    ];
    for (i, (key, headers)) in cases.iter().enumerate() {
        let h: Vec<(&str, &str)> = headers.iter().map(|(k, v)| (*k, v.as_str())).collect();
        let (s, rh, body) = send(&j, "/v1/chat/completions", &chat("mock-gpt", &words(3)), &h);
        assert_eq!(s, 200, "{body}");
        let rec = &j.mock.requests()[i];
        assert_eq!(rec.header("authorization"), Some(bearer(&real).as_str()));
        for (name, value) in &rec.headers {
            assert!(
                !value.contains(key.as_str()),
                "caller key forwarded upstream in {name}"
            );
        }
        assert!(rec.header("x-api-key").is_none() && rec.header("api-key").is_none());
        // The client never sees the real key.
        assert!(!body.contains(&real));
        for (name, v) in rh.iter() {
            assert!(
                !v.to_str().unwrap_or("").contains(&real),
                "real key in response header {name}"
            );
        }
    }

    // Unknown and missing keys: 401, OpenAI-shaped, nothing forwarded.
    let before = j.mock.request_count();
    let wrong = format!("jk-wrong-{}", tag());
    for headers in [
        vec![("authorization", bearer(&wrong))],
        vec![("x-api-key", wrong.clone())],
        vec![("authorization", bearer(&real))],
        vec![],
    ] {
        let h: Vec<(&str, &str)> = headers.iter().map(|(k, v)| (*k, v.as_str())).collect();
        let (s, _, body) = send(&j, "/v1/chat/completions", &chat("mock-gpt", &words(2)), &h);
        assert_eq!(s, 401, "{body}");
        let err = openai_error(&body, "invalid_request_error");
        assert_eq!(err["code"], "invalid_api_key");
        assert!(!body.contains(&wrong) && !body.contains(&real));
    }
    assert_eq!(j.mock.request_count(), before);

    // Neither the admin API nor the logs reveal the real key.
    let viewer = j.token("viewer");
    let (s, v) = admin_get(&j, "/admin/upstreams", &viewer);
    assert_eq!(s, 200);
    assert!(!v.to_string().contains(&real), "{v}");
    assert_eq!(v[0]["key_loaded"], true, "{v}");
    assert_eq!(v[0]["api_key_env"], "E2E_UPSTREAM_KEY", "{v}");
    let (s, v) = admin_get(&j, "/admin/config", &viewer);
    assert_eq!(s, 200);
    let cfg = v.to_string();
    assert!(
        !cfg.contains(&real) && !cfg.contains(&alice) && !cfg.contains(&bob),
        "{cfg}"
    );
    let logs = j.logs_text();
    for secret in [&real, &alice, &bob, &carol] {
        assert!(!logs.contains(secret.as_str()), "secret in logs");
    }
}

#[test]
fn passthrough_forwards_caller_authorization_and_none_strips_it() {
    let pass = spawn_mock();
    let none = spawn_mock();
    let upstreams = format!(
        "upstreams:\n\
         \x20 - name: pass\n    base_url: {}\n    auth: {{mode: passthrough}}\n\
         \x20 - name: none\n    base_url: {}\n    auth: {{mode: none}}\n",
        pass.url(),
        none.url()
    );
    let j = Jimini::start_with_mock(
        Options {
            upstreams_yaml: Some(upstreams),
            extra_yaml: "routes:\n  - path: /v1/embeddings\n    upstream: none\n".into(),
            ..Default::default()
        },
        pass,
    );
    let user_key = format!("sk-user-{}", tag());
    let auth = format!("Bearer {user_key}");
    let (s, _, body) = send(
        &j,
        "/v1/chat/completions",
        &chat("mock-gpt", &words(3)),
        &[("authorization", &auth), ("x-api-key", &user_key)],
    );
    assert_eq!(s, 200, "{body}");
    let rec = &j.mock.requests()[0];
    assert_eq!(rec.header("authorization"), Some(auth.as_str()));
    assert_eq!(rec.header("x-api-key"), Some(user_key.as_str()));

    let emb = json!({"model": "e", "input": words(2)});
    let (s, _, body) = send(
        &j,
        "/v1/embeddings",
        &emb,
        &[("authorization", &auth), ("api-key", &user_key)],
    );
    assert_eq!(s, 200, "{body}");
    let rec = &none.requests()[0];
    assert!(rec.header("authorization").is_none(), "{:?}", rec.headers);
    assert!(rec.header("api-key").is_none(), "{:?}", rec.headers);
}

// ---------------------------------------------------------------------------------------------
// circuit breaker, fallback, readiness
// ---------------------------------------------------------------------------------------------

fn breaker_upstream(name: &str, url: &str, breaker: &str, extra: &str) -> String {
    format!(
        "  - name: {name}\n    base_url: {url}\n    breaker: {{min_requests: 1000, {breaker}}}\n    retries: {{max_attempts: 0}}\n{extra}"
    )
}

#[test]
fn breaker_opens_fails_fast_and_admin_reset_closes_it() {
    let a = spawn_mock();
    let upstreams = format!(
        "upstreams:\n{}",
        breaker_upstream(
            "primary",
            &a.url(),
            "consecutive_failures: 3, cooldown_ms: 60000, max_cooldown_ms: 60000",
            ""
        )
    );
    let j = Jimini::start_with_mock(
        Options {
            upstreams_yaml: Some(upstreams),
            ..Default::default()
        },
        a,
    );
    let viewer = j.token("viewer");
    let operator = j.token("operator");
    assert_eq!(breaker_state(&j, &viewer, "primary"), "closed");
    assert_eq!(readyz(&j), 200);

    j.mock.set_fault(Some(Fault::Status(500)));
    for i in 0..3 {
        let (s, _, body) = send(
            &j,
            "/v1/chat/completions",
            &chat("mock-gpt", &words(2)),
            &[],
        );
        assert_eq!(s, 500, "failure {i} is the upstream's own answer: {body}");
    }
    assert_eq!(j.mock.request_count(), 3);
    assert!(
        poll(Duration::from_secs(10), || {
            (breaker_state(&j, &viewer, "primary") == "open").then_some(())
        })
        .is_some(),
        "breaker did not open after 3 failures"
    );

    // Open: fast 503 with Retry-After, upstream untouched.
    for _ in 0..5 {
        let (s, h, body) = send(
            &j,
            "/v1/chat/completions",
            &chat("mock-gpt", &words(2)),
            &[],
        );
        assert_eq!(s, 503, "{body}");
        let ra: u64 = hdr(&h, "retry-after")
            .and_then(|v| v.parse().ok())
            .expect("Retry-After seconds");
        assert!((1..=60).contains(&ra), "{ra}");
        let err = openai_error(&body, "jimini_upstream_error");
        assert!(
            err["code"].as_str().unwrap_or("").contains("circuit"),
            "{body}"
        );
    }
    assert_eq!(
        j.mock.request_count(),
        3,
        "no request reached the upstream while open"
    );

    let (_, v) = admin_get(&j, "/admin/upstreams", &viewer);
    let b = &v[0]["breaker"];
    assert_eq!(b["state"], "open", "{v}");
    assert!(b["opens_total"].as_u64().unwrap_or(0) >= 1, "{v}");
    assert!(b["retry_after_ms"].as_u64().is_some(), "{v}");
    assert_eq!(readyz(&j), 503, "the only upstream is open");

    // Reset needs operator.
    let reset = |tok: &str| {
        Jimini::client()
            .post(j.admin_url("/admin/upstreams/primary/reset"))
            .bearer_auth(tok)
            .send()
            .unwrap()
            .status()
            .as_u16()
    };
    assert_eq!(reset(&viewer), 403);
    assert_eq!(breaker_state(&j, &viewer, "primary"), "open");
    let r = Jimini::client()
        .post(j.admin_url("/admin/upstreams/nope/reset"))
        .bearer_auth(&operator)
        .send()
        .unwrap();
    assert_eq!(r.status(), 404);
    j.mock.set_fault(None);
    assert_eq!(reset(&operator), 200);
    assert_eq!(breaker_state(&j, &viewer, "primary"), "closed");
    assert_eq!(readyz(&j), 200);
    let (s, _, body) = send(
        &j,
        "/v1/chat/completions",
        &chat("mock-gpt", &words(2)),
        &[],
    );
    assert_eq!(s, 200, "{body}");
    assert_eq!(j.mock.request_count(), 4);
}

#[test]
fn breaker_recovers_after_cooldown_and_readiness_follows() {
    let a = spawn_mock();
    let upstreams = format!(
        "upstreams:\n{}",
        breaker_upstream(
            "primary",
            &a.url(),
            "consecutive_failures: 2, cooldown_ms: 1000, max_cooldown_ms: 1000, half_open_successes: 1",
            ""
        )
    );
    let j = Jimini::start_with_mock(
        Options {
            upstreams_yaml: Some(upstreams),
            ..Default::default()
        },
        a,
    );
    let viewer = j.token("viewer");
    j.mock.set_fault(Some(Fault::Status(502)));
    for _ in 0..2 {
        assert_eq!(
            send(
                &j,
                "/v1/chat/completions",
                &chat("mock-gpt", &words(2)),
                &[]
            )
            .0,
            502
        );
    }
    // Open now (or already half-open after the short cooldown): readiness must have dipped or
    // the state must show open; poll the admin view for "open" first.
    let state = poll(Duration::from_secs(5), || {
        let s = breaker_state(&j, &viewer, "primary");
        (s != "closed").then_some(s)
    })
    .expect("breaker left closed");
    assert!(state == "open" || state == "half_open", "{state}");

    j.mock.set_fault(None);
    let ok = poll(Duration::from_secs(15), || {
        let (s, _, _) = send(
            &j,
            "/v1/chat/completions",
            &chat("mock-gpt", &words(2)),
            &[],
        );
        (s == 200).then_some(())
    });
    assert!(
        ok.is_some(),
        "requests never succeeded again after the cooldown"
    );
    assert!(
        poll(Duration::from_secs(5), || {
            (breaker_state(&j, &viewer, "primary") == "closed").then_some(())
        })
        .is_some(),
        "breaker closed after a successful probe"
    );
    assert_eq!(readyz(&j), 200);
}

#[test]
fn open_breaker_fails_over_to_fallback() {
    let a = spawn_mock();
    let b = spawn_mock();
    let upstreams = format!(
        "upstreams:\n{}{}",
        breaker_upstream(
            "primary",
            &a.url(),
            "consecutive_failures: 2, cooldown_ms: 60000, max_cooldown_ms: 60000",
            "    fallback: backup\n"
        ),
        breaker_upstream("backup", &b.url(), "consecutive_failures: 5", "")
    );
    let j = Jimini::start_with_mock(
        Options {
            upstreams_yaml: Some(upstreams),
            ..Default::default()
        },
        a,
    );
    let viewer = j.token("viewer");
    j.mock.set_fault(Some(Fault::Status(500)));
    for _ in 0..2 {
        assert_eq!(
            send(
                &j,
                "/v1/chat/completions",
                &chat("mock-gpt", &words(2)),
                &[]
            )
            .0,
            500
        );
    }
    assert!(poll(Duration::from_secs(10), || {
        (breaker_state(&j, &viewer, "primary") == "open").then_some(())
    })
    .is_some());
    let a_count = j.mock.request_count();
    for i in 0..4 {
        let text = words(3);
        let (s, _, body) = send(&j, "/v1/chat/completions", &chat("mock-gpt", &text), &[]);
        assert_eq!(s, 200, "{body}");
        assert!(body.contains(&text));
        assert_eq!(b.request_count(), i + 1);
    }
    assert_eq!(
        j.mock.request_count(),
        a_count,
        "primary untouched while open"
    );
    assert_eq!(breaker_state(&j, &viewer, "backup"), "closed");
    assert_eq!(readyz(&j), 200, "the fallback keeps the gateway ready");
}

/// A fallback is only used for models its own allow-list permits; otherwise the client gets the
/// breaker's 503 and the fallback is not contacted.
#[test]
fn fallback_respects_its_model_allow_list() {
    let a = spawn_mock();
    let b = spawn_mock();
    let upstreams = format!(
        "upstreams:\n{}{}",
        breaker_upstream(
            "primary",
            &a.url(),
            "consecutive_failures: 1, cooldown_ms: 60000, max_cooldown_ms: 60000",
            "    fallback: backup\n"
        ),
        breaker_upstream(
            "backup",
            &b.url(),
            "consecutive_failures: 5",
            "    models: [\"mock-gpt\"]\n"
        )
    );
    let j = Jimini::start_with_mock(
        Options {
            upstreams_yaml: Some(upstreams),
            ..Default::default()
        },
        a,
    );
    let viewer = j.token("viewer");
    j.mock.set_fault(Some(Fault::Status(500)));
    assert_eq!(
        send(&j, "/v1/chat/completions", &chat("mock-gpt", "x"), &[]).0,
        500
    );
    assert!(poll(Duration::from_secs(10), || {
        (breaker_state(&j, &viewer, "primary") == "open").then_some(())
    })
    .is_some());
    // Allowed on the fallback → served there.
    assert_eq!(
        send(&j, "/v1/chat/completions", &chat("mock-gpt", "y"), &[]).0,
        200
    );
    assert_eq!(b.request_count(), 1);
    // Not allowed on the fallback → 503 circuit open, fallback untouched.
    let other = format!("special-{}", tag());
    let (s, h, body) = send(&j, "/v1/chat/completions", &chat(&other, &words(2)), &[]);
    assert_eq!(s, 503, "{body}");
    assert!(hdr(&h, "retry-after").is_some());
    openai_error(&body, "jimini_upstream_error");
    assert_eq!(
        b.request_count(),
        1,
        "the fallback saw nothing of the disallowed model"
    );
}

/// Same as above with a body over the 64 KiB pre-read limit (routed by path, inspected while it
/// streams): the fallback must still not serve a model its allow-list forbids.
#[test]
fn fallback_respects_its_model_allow_list_for_large_bodies() {
    let a = spawn_mock();
    let b = spawn_mock();
    let upstreams = format!(
        "upstreams:\n{}{}",
        breaker_upstream(
            "primary",
            &a.url(),
            "consecutive_failures: 1, cooldown_ms: 60000, max_cooldown_ms: 60000",
            "    fallback: backup\n"
        ),
        breaker_upstream(
            "backup",
            &b.url(),
            "consecutive_failures: 5",
            "    models: [\"mock-gpt\"]\n"
        )
    );
    let j = Jimini::start_with_mock(
        Options {
            upstreams_yaml: Some(upstreams),
            ..Default::default()
        },
        a,
    );
    let viewer = j.token("viewer");
    j.mock.set_fault(Some(Fault::Status(500)));
    assert_eq!(
        send(&j, "/v1/chat/completions", &chat("mock-gpt", "x"), &[]).0,
        500
    );
    assert!(poll(Duration::from_secs(10), || {
        (breaker_state(&j, &viewer, "primary") == "open").then_some(())
    })
    .is_some());
    let other = format!("special-{}", tag());
    let big = words(15_000); // ~100 KiB
    assert!(big.len() > 64 * 1024);
    let (s, _, body) = send(&j, "/v1/chat/completions", &chat(&other, &big), &[]);
    assert_ne!(s, 200, "the fallback served a model it does not allow");
    assert!(
        body.len() < 4096,
        "an error, not a completion: {} bytes",
        body.len()
    );
    assert!(
        b.requests().is_empty(),
        "the fallback received the disallowed request"
    );
}

/// Bodies over the pre-read limit are checked while they stream: the denial still reaches the
/// client as a 403 and no complete request is delivered upstream.
#[test]
fn egress_denies_large_bodies_too() {
    let a = spawn_mock();
    let upstreams = format!(
        "upstreams:\n  - name: guarded\n    base_url: {}\n    models: [\"allowed-*\"]\n",
        a.url()
    );
    let j = Jimini::start_with_mock(
        Options {
            upstreams_yaml: Some(upstreams),
            ..Default::default()
        },
        a,
    );
    let model = format!("denied-{}", tag());
    let big = words(15_000);
    assert!(big.len() > 64 * 1024);
    let (s, _, body) = send(&j, "/v1/chat/completions", &chat(&model, &big), &[]);
    assert_eq!(s, 403, "{}", &body[..body.len().min(500)]);
    let err = openai_error(&body, "jimini_policy_violation");
    assert!(err["message"].as_str().unwrap().contains(&model), "{body}");
    assert!(j.mock.requests().is_empty(), "no complete request upstream");
    let ok = format!("allowed-{}", tag());
    let (s, _, body) = send(&j, "/v1/chat/completions", &chat(&ok, &words(15_000)), &[]);
    assert_eq!(s, 200, "{}", &body[..body.len().min(500)]);
    assert_eq!(j.mock.requests().len(), 1);
}

#[test]
fn readyz_is_unready_only_when_every_reachable_upstream_is_open() {
    let a = spawn_mock();
    let b = spawn_mock();
    let c = spawn_mock();
    let br =
        "consecutive_failures: 1, cooldown_ms: 1500, max_cooldown_ms: 1500, half_open_successes: 1";
    let upstreams = format!(
        "upstreams:\n{}{}{}",
        breaker_upstream("a", &a.url(), br, ""),
        breaker_upstream("b", &b.url(), br, ""),
        // Not reachable by any route: its (closed) breaker must not keep /readyz green.
        breaker_upstream("unrouted", &c.url(), br, "")
    );
    let j = Jimini::start_with_mock(
        Options {
            upstreams_yaml: Some(upstreams),
            extra_yaml: "routes:\n  - path: /v1/embeddings\n    upstream: b\n".into(),
            ..Default::default()
        },
        a,
    );
    let viewer = j.token("viewer");
    assert_eq!(readyz(&j), 200);
    j.mock.set_fault(Some(Fault::Status(503)));
    b.set_fault(Some(Fault::Status(503)));
    assert_eq!(
        send(
            &j,
            "/v1/chat/completions",
            &chat("mock-gpt", &words(2)),
            &[]
        )
        .0,
        503
    );
    assert!(poll(Duration::from_secs(5), || {
        (breaker_state(&j, &viewer, "a") != "closed").then_some(())
    })
    .is_some());
    // b still closed → ready (unless a's short cooldown already elapsed, which is also ready).
    assert_eq!(readyz(&j), 200, "b is still available");

    // Open both within one cooldown and observe 503.
    let unready = poll(Duration::from_secs(15), || {
        send(
            &j,
            "/v1/chat/completions",
            &chat("mock-gpt", &words(2)),
            &[],
        );
        send(
            &j,
            "/v1/embeddings",
            &json!({"model": "e", "input": "x"}),
            &[],
        );
        (readyz(&j) == 503).then_some(())
    });
    assert!(
        unready.is_some(),
        "readyz never reported 503 with a and b open"
    );
    assert_eq!(breaker_state(&j, &viewer, "unrouted"), "closed");

    j.mock.set_fault(None);
    b.set_fault(None);
    assert!(
        poll(Duration::from_secs(10), || (readyz(&j) == 200)
            .then_some(()))
        .is_some(),
        "readyz recovered after the cooldown"
    );
    assert!(poll(Duration::from_secs(10), || {
        (send(
            &j,
            "/v1/chat/completions",
            &chat("mock-gpt", &words(2)),
            &[],
        )
        .0 == 200)
            .then_some(())
    })
    .is_some());
}

// ---------------------------------------------------------------------------------------------
// retries
// ---------------------------------------------------------------------------------------------

fn retry_jimini(mock: MockServer, retries: &str, extra: &str) -> Jimini {
    let upstreams = format!(
        "upstreams:\n  - name: up\n    base_url: {}\n    breaker: {{consecutive_failures: 100, min_requests: 1000}}\n    retries: {{{retries}}}\n{extra}",
        mock.url()
    );
    Jimini::start_with_mock(
        Options {
            upstreams_yaml: Some(upstreams),
            ..Default::default()
        },
        mock,
    )
}

#[test]
fn retryable_status_is_retried_transparently() {
    let j = retry_jimini(spawn_mock(), "max_attempts: 2, base_ms: 10, max_ms: 50", "");
    for status in [503u16, 502, 504] {
        j.mock.clear();
        j.mock.set_fault(Some(Fault::FailFirst { n: 1, status }));
        let text = words(3);
        let (s, _, body) = send(&j, "/v1/chat/completions", &chat("mock-gpt", &text), &[]);
        assert_eq!(s, 200, "{status}: {body}");
        assert!(body.contains(&text), "{body}");
        assert_eq!(
            j.mock.request_count(),
            2,
            "{status}: one failure + one retry"
        );
        let reqs = j.mock.requests();
        assert_eq!(
            reqs[0].body, reqs[1].body,
            "the retry resends the same body"
        );
        assert!(
            reqs[1].body_text().contains(&text),
            "the retry carries the body"
        );
    }
    // Streaming request, retried before any byte reached the client.
    j.mock.clear();
    j.mock
        .set_fault(Some(Fault::FailFirst { n: 1, status: 503 }));
    let text = words(4);
    let (s, _, body) = send(
        &j,
        "/v1/chat/completions",
        &chat_stream("mock-gpt", &text),
        &[],
    );
    assert_eq!(s, 200, "{body}");
    assert_eq!(sse_chat_text(&body), text);
    assert_eq!(j.mock.request_count(), 2);
}

#[test]
fn retries_stop_at_max_attempts() {
    let j = retry_jimini(spawn_mock(), "max_attempts: 2, base_ms: 10, max_ms: 50", "");
    j.mock.set_fault(Some(Fault::Status(503)));
    let (s, _, body) = send(
        &j,
        "/v1/chat/completions",
        &chat("mock-gpt", &words(2)),
        &[],
    );
    assert_eq!(s, 503, "{body}");
    assert_eq!(
        j.mock.request_count(),
        3,
        "1 attempt + max_attempts retries"
    );
    // The client gets the upstream's last answer, OpenAI-shaped.
    let v: Value = serde_json::from_str(&body).unwrap();
    assert!(v["error"]["message"].is_string(), "{body}");
}

#[test]
fn status_500_and_exhausted_budget_are_not_retried() {
    let j = retry_jimini(spawn_mock(), "max_attempts: 2, base_ms: 10, max_ms: 50", "");
    j.mock
        .set_fault(Some(Fault::FailFirst { n: 1, status: 500 }));
    let (s, _, body) = send(
        &j,
        "/v1/chat/completions",
        &chat("mock-gpt", &words(2)),
        &[],
    );
    assert_eq!(s, 500, "{body}");
    assert_eq!(
        j.mock.request_count(),
        1,
        "500 may have been processed: never retried"
    );

    let j = retry_jimini(
        spawn_mock(),
        "max_attempts: 3, base_ms: 10, max_ms: 50, budget_ratio: 0.0, budget_min_per_sec: 0",
        "",
    );
    j.mock
        .set_fault(Some(Fault::FailFirst { n: 1, status: 503 }));
    let (s, _, body) = send(
        &j,
        "/v1/chat/completions",
        &chat("mock-gpt", &words(2)),
        &[],
    );
    assert_eq!(s, 503, "{body}");
    assert_eq!(j.mock.request_count(), 1, "empty budget: no retry");
}

#[test]
fn upstream_429_retry_after_is_honoured() {
    let j = retry_jimini(
        spawn_mock(),
        "max_attempts: 2, base_ms: 10, max_ms: 50, retry_after_cap_ms: 3000",
        "",
    );
    j.mock
        .set_fault(Some(Fault::FailFirst { n: 1, status: 429 }));
    let started = Instant::now();
    let (s, _, body) = send(
        &j,
        "/v1/chat/completions",
        &chat("mock-gpt", &words(2)),
        &[],
    );
    let waited = started.elapsed();
    assert_eq!(s, 200, "{body}");
    assert_eq!(j.mock.request_count(), 2);
    // The mock's 429 says Retry-After: 1; the retry must not come sooner (lower bound only).
    assert!(
        waited >= Duration::from_millis(950),
        "retried after {waited:?}"
    );
}

#[test]
fn upstream_429_beyond_cap_or_with_retry_429_off_reaches_the_client() {
    // Retry-After above the cap: the client gets the 429 and its Retry-After.
    let j = retry_jimini(
        spawn_mock(),
        "max_attempts: 2, base_ms: 10, max_ms: 50, retry_after_cap_ms: 500",
        "",
    );
    j.mock
        .set_fault(Some(Fault::FailFirst { n: 1, status: 429 }));
    let (s, h, body) = send(
        &j,
        "/v1/chat/completions",
        &chat("mock-gpt", &words(2)),
        &[],
    );
    assert_eq!(s, 429, "{body}");
    assert_eq!(hdr(&h, "retry-after"), Some("1"));
    assert_eq!(j.mock.request_count(), 1);

    // retry_429: false → passed through untouched.
    let j = retry_jimini(
        spawn_mock(),
        "max_attempts: 2, base_ms: 10, max_ms: 50, retry_429: false",
        "",
    );
    j.mock
        .set_fault(Some(Fault::FailFirst { n: 1, status: 429 }));
    let (s, h, _) = send(
        &j,
        "/v1/chat/completions",
        &chat("mock-gpt", &words(2)),
        &[],
    );
    assert_eq!(s, 429);
    assert_eq!(hdr(&h, "retry-after"), Some("1"));
    assert_eq!(j.mock.request_count(), 1);
}

#[test]
fn stream_cut_midway_is_not_retried_and_ends_cleanly() {
    let mut cfg = mock_cfg();
    cfg.chunk_chars = 2;
    let m = MockServer::spawn_thread("127.0.0.1:0", cfg).unwrap();
    let j = retry_jimini(m, "max_attempts: 3, base_ms: 10, max_ms: 50", "");
    // Late enough that whole words were released; the text held back at the cut (a word that
    // could still grow into a finding) is dropped, not sent.
    j.mock
        .set_fault(Some(Fault::DropMidStream { after_events: 14 }));
    let (s, h, body) = send(
        &j,
        "/v1/chat/completions",
        &chat_stream("mock-gpt", &words(12)),
        &[],
    );
    assert_eq!(s, 200, "{body}");
    assert!(hdr(&h, "content-type").is_some_and(|c| c.starts_with("text/event-stream")));
    assert!(
        !sse_chat_text(&body).is_empty(),
        "some deltas arrived: {body}"
    );
    // The error is the last event: no `[DONE]` pretends the stream completed.
    let last = body
        .lines()
        .rev()
        .find_map(|l| l.strip_prefix("data: "))
        .expect("an SSE event");
    let ev: Value = serde_json::from_str(last).expect("final event is JSON");
    assert_eq!(ev["error"]["type"], "jimini_upstream_error", "{body}");
    assert!(
        ev["error"]["code"]
            .as_str()
            .is_some_and(|c| c.contains("interrupted")),
        "{body}"
    );
    // Give a (wrong) retry time to show up before counting.
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(
        j.mock.request_count(),
        1,
        "no retry after bytes reached the client"
    );

    // Non-streamed body cut in half: not retried either, and the client never gets a
    // complete-looking success.
    j.mock.clear();
    let client = Jimini::client();
    let r = client
        .post(j.url("/v1/chat/completions"))
        .json(&chat("mock-gpt", &words(8)))
        .send();
    if let Ok(r) = r {
        let status = r.status().as_u16();
        let parsed = r
            .text()
            .ok()
            .and_then(|t| serde_json::from_str::<Value>(&t).ok());
        let complete_success =
            status == 200 && parsed.is_some_and(|v| v["choices"][0]["message"].is_object());
        assert!(
            !complete_success,
            "a truncated upstream body looked complete"
        );
    }
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(j.mock.request_count(), 1);
}

#[test]
fn connection_refused_is_502_or_served_by_fallback() {
    let closed = ClosedPort::new();
    let dead = format!("http://127.0.0.1:{}", closed.port);
    // Primary points at a closed port, no fallback.
    let upstreams = format!(
        "upstreams:\n  - name: dead\n    base_url: {dead}\n    timeouts: {{connect_ms: 1000}}\n    retries: {{max_attempts: 1, base_ms: 10, max_ms: 50}}\n"
    );
    let j = Jimini::start(Options {
        upstreams_yaml: Some(upstreams),
        ..Default::default()
    });
    let (s, _, body) = send(
        &j,
        "/v1/chat/completions",
        &chat("mock-gpt", &words(2)),
        &[],
    );
    assert_eq!(s, 502, "{body}");
    let err = openai_error(&body, "jimini_upstream_error");
    assert!(err["message"].as_str().unwrap().contains("dead"), "{body}");
    assert_eq!(j.mock.request_count(), 0);
    drop(j);

    // Same, with a fallback: the connect failure opens the primary's breaker and the retry goes
    // to the fallback — the client never notices.
    let b = spawn_mock();
    let upstreams = format!(
        "upstreams:\n\
         \x20 - name: dead\n    base_url: {dead}\n    fallback: backup\n    timeouts: {{connect_ms: 1000}}\n    breaker: {{consecutive_failures: 1, cooldown_ms: 60000, max_cooldown_ms: 60000}}\n    retries: {{max_attempts: 1, base_ms: 10, max_ms: 50}}\n\
         \x20 - name: backup\n    base_url: {}\n",
        b.url()
    );
    let j = Jimini::start(Options {
        upstreams_yaml: Some(upstreams),
        ..Default::default()
    });
    for i in 0..3 {
        let text = words(3);
        let (s, _, body) = send(&j, "/v1/chat/completions", &chat("mock-gpt", &text), &[]);
        assert_eq!(s, 200, "request {i}: {body}");
        assert!(body.contains(&text));
    }
    assert_eq!(b.request_count(), 3);
}

// ---------------------------------------------------------------------------------------------
// timeouts
// ---------------------------------------------------------------------------------------------

#[test]
fn hanging_upstream_times_out_with_504() {
    let upstreams = |url: &str| {
        format!(
            "upstreams:\n  - name: slow\n    base_url: {url}\n    timeouts: {{first_byte_ms: 500, idle_ms: 500}}\n    retries: {{max_attempts: 2, base_ms: 10, max_ms: 50}}\n"
        )
    };
    let m = spawn_mock();
    let j = Jimini::start_with_mock(
        Options {
            upstreams_yaml: Some(upstreams(&m.url())),
            ..Default::default()
        },
        m,
    );
    j.mock.set_fault(Some(Fault::Hang));
    let client = reqwest::blocking::Client::builder()
        .timeout(Duration::from_secs(20))
        .build()
        .unwrap();
    for body in [
        chat("mock-gpt", &words(2)),
        chat_stream("mock-gpt", &words(2)),
    ] {
        j.mock.clear();
        let r = client
            .post(j.url("/v1/chat/completions"))
            .json(&body)
            .send()
            .expect("jimini answers before the client timeout");
        let s = r.status().as_u16();
        let text = r.text().unwrap();
        assert_eq!(s, 504, "{text}");
        let err = openai_error(&text, "jimini_upstream_error");
        assert_eq!(err["code"], "upstream_timeout", "{text}");
        assert_eq!(
            j.mock.request_count(),
            1,
            "a timed-out request is not retried"
        );
    }
}

#[test]
fn stream_that_stalls_midway_hits_the_idle_timeout() {
    let mut cfg = mock_cfg();
    cfg.chunk_delay_ms = 3_000;
    cfg.chunk_chars = 2;
    let m = MockServer::spawn_thread("127.0.0.1:0", cfg).unwrap();
    let upstreams = format!(
        "upstreams:\n  - name: slow\n    base_url: {}\n    timeouts: {{first_byte_ms: 500, idle_ms: 500}}\n",
        m.url()
    );
    let j = Jimini::start_with_mock(
        Options {
            upstreams_yaml: Some(upstreams),
            ..Default::default()
        },
        m,
    );
    let client = reqwest::blocking::Client::builder()
        .timeout(Duration::from_secs(20))
        .build()
        .unwrap();
    let r = client
        .post(j.url("/v1/chat/completions"))
        .json(&chat_stream("mock-gpt", &words(6)))
        .send()
        .expect("response");
    let s = r.status().as_u16();
    let text = r
        .text()
        .expect("the stream ends (cleanly) instead of hanging");
    if s == 200 {
        assert!(
            text.contains("jimini_upstream_error"),
            "stalled stream ends with an error event: {text}"
        );
    } else {
        openai_error(&text, "jimini_upstream_error");
    }
    assert_eq!(j.mock.request_count(), 1);
}

// ---------------------------------------------------------------------------------------------
// rate limits
// ---------------------------------------------------------------------------------------------

#[test]
fn rpm_limit_rejects_with_openai_429_and_headers() {
    let j = Jimini::start(Options {
        extra_yaml: "limits:\n  default: {rpm: 3}\n  callers:\n    vip: {rpm: 5}\n".into(),
        ..Default::default()
    });
    let caller = format!("c-{}", tag());
    let h = [("x-jimini-caller", caller.as_str())];
    for i in 0..3 {
        let (s, rh, body) = send(&j, "/v1/chat/completions", &chat("mock-gpt", &words(2)), &h);
        assert_eq!(s, 200, "{body}");
        assert_eq!(hdr(&rh, "x-ratelimit-limit-requests"), Some("3"));
        assert_eq!(
            hdr(&rh, "x-ratelimit-remaining-requests"),
            Some((2 - i).to_string().as_str())
        );
        assert!(hdr(&rh, "x-ratelimit-reset-requests").is_some());
    }
    let (s, rh, body) = send(&j, "/v1/chat/completions", &chat("mock-gpt", &words(2)), &h);
    assert_eq!(s, 429, "{body}");
    let ra: u64 = hdr(&rh, "retry-after")
        .and_then(|v| v.parse().ok())
        .expect("Retry-After");
    assert!((1..=60).contains(&ra), "{ra}");
    assert_eq!(hdr(&rh, "x-ratelimit-limit-requests"), Some("3"));
    assert_eq!(hdr(&rh, "x-ratelimit-remaining-requests"), Some("0"));
    let err = openai_error(&body, "requests");
    assert_eq!(err["code"], "rate_limit_exceeded");
    assert_eq!(
        j.mock.request_count(),
        3,
        "the limited request never went upstream"
    );

    // Other callers have their own buckets; named callers their own limit.
    let other = format!("c-{}", tag());
    let (s, _, _) = send(
        &j,
        "/v1/chat/completions",
        &chat("mock-gpt", &words(2)),
        &[("x-jimini-caller", other.as_str())],
    );
    assert_eq!(s, 200);
    let mut vip_ok = 0;
    for _ in 0..6 {
        let (s, rh, _) = send(
            &j,
            "/v1/chat/completions",
            &chat("mock-gpt", &words(2)),
            &[("x-jimini-caller", "vip")],
        );
        assert_eq!(hdr(&rh, "x-ratelimit-limit-requests"), Some("5"));
        if s == 200 {
            vip_ok += 1;
        } else {
            assert_eq!(s, 429);
        }
    }
    assert_eq!(vip_ok, 5);
}

#[test]
fn tpm_limit_rejects_with_tokens_type() {
    let j = Jimini::start(Options {
        extra_yaml: "limits:\n  default: {tpm: 200}\n".into(),
        ..Default::default()
    });
    let caller = format!("t-{}", tag());
    let h = [("x-jimini-caller", caller.as_str())];
    // ~120 estimated prompt tokens per request (body bytes / 4).
    let big = || chat("mock-gpt", &words(80));
    let (s, rh, body) = send(&j, "/v1/chat/completions", &big(), &h);
    assert_eq!(s, 200, "{body}");
    assert_eq!(hdr(&rh, "x-ratelimit-limit-tokens"), Some("200"));
    let remaining: u64 = hdr(&rh, "x-ratelimit-remaining-tokens")
        .and_then(|v| v.parse().ok())
        .unwrap();
    assert!(remaining < 200, "{remaining}");
    let (s, rh, body) = send(&j, "/v1/chat/completions", &big(), &h);
    assert_eq!(s, 429, "{body}");
    assert!(hdr(&rh, "retry-after").is_some());
    assert_eq!(hdr(&rh, "x-ratelimit-limit-tokens"), Some("200"));
    let err: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(err["error"]["code"], "rate_limit_exceeded", "{body}");
    assert!(
        err["error"]["message"]
            .as_str()
            .unwrap()
            .contains("tokens per minute"),
        "{body}"
    );
    assert_eq!(j.mock.request_count(), 1);
}

#[test]
fn tpm_limit_429_body_type_is_tokens() {
    let j = Jimini::start(Options {
        extra_yaml: "limits:\n  default: {tpm: 200}\n".into(),
        ..Default::default()
    });
    let h = [("x-jimini-caller", "tok")];
    let big = || chat("mock-gpt", &words(80));
    assert_eq!(send(&j, "/v1/chat/completions", &big(), &h).0, 200);
    let (s, _, body) = send(&j, "/v1/chat/completions", &big(), &h);
    assert_eq!(s, 429, "{body}");
    openai_error(&body, "tokens");
}

// ---------------------------------------------------------------------------------------------
// shared (Redis) limits across two processes
// ---------------------------------------------------------------------------------------------

struct Redis {
    child: Child,
    port: u16,
}

impl Redis {
    fn start() -> Option<Redis> {
        let bin = "/usr/bin/redis-server";
        if !std::path::Path::new(bin).exists() {
            return None;
        }
        let port = free_port();
        let child = Command::new(bin)
            .args([
                "--port",
                &port.to_string(),
                "--save",
                "",
                "--appendonly",
                "no",
                "--bind",
                "127.0.0.1",
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .ok()?;
        let r = Redis { child, port };
        let up = poll(Duration::from_secs(10), || {
            let mut s = TcpStream::connect(("127.0.0.1", port)).ok()?;
            s.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
            s.write_all(b"*1\r\n$4\r\nPING\r\n").ok()?;
            let mut buf = [0u8; 16];
            let n = s.read(&mut buf).ok()?;
            buf[..n].starts_with(b"+PONG").then_some(())
        });
        up.map(|_| r)
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn shared_redis_limit_is_enforced_across_two_processes() {
    let redis = Redis::start().expect("redis-server at /usr/bin/redis-server");
    let prefix = format!("e2e:{}:", tag());
    let limits = format!(
        "limits:\n  default: {{rpm: 4}}\n  redis_url: redis://127.0.0.1:{}/0\n  redis_prefix: \"{prefix}\"\n  redis_fail: closed\n  redis_timeout_ms: 2000\n",
        redis.port
    );
    let start = || {
        Jimini::start(Options {
            extra_yaml: limits.clone(),
            ..Default::default()
        })
    };
    let a = start();
    let b = start();
    // redis_fail: closed refuses until the (lazy) Redis connection is up: warm each process up
    // with its own caller until it admits.
    for (j, who) in [(&a, "warm-a"), (&b, "warm-b")] {
        let ok = poll(Duration::from_secs(15), || {
            let (s, _, _) = send(
                j,
                "/v1/chat/completions",
                &chat("mock-gpt", "warm"),
                &[("x-jimini-caller", who)],
            );
            (s == 200).then_some(())
        });
        assert!(ok.is_some(), "{who}: limiter never reached Redis");
    }

    let caller = format!("shared-{}", tag());
    let h = [("x-jimini-caller", caller.as_str())];
    let mut results = Vec::new();
    for i in 0..8 {
        let j = if i % 2 == 0 { &a } else { &b };
        let (s, rh, body) = send(j, "/v1/chat/completions", &chat("mock-gpt", &words(2)), &h);
        if s == 429 {
            // A real limit decision (not "Redis unavailable", which carries no limit headers).
            assert_eq!(hdr(&rh, "x-ratelimit-limit-requests"), Some("4"), "{body}");
            openai_error(&body, "requests");
        } else {
            assert_eq!(s, 200, "{body}");
        }
        results.push(s);
    }
    assert_eq!(
        results,
        vec![200, 200, 200, 200, 429, 429, 429, 429],
        "one budget of 4 across both processes"
    );
    let served = a.mock.request_count() + b.mock.request_count();
    // 4 shared + the warm-up requests that were admitted (one per process).
    assert_eq!(served, 4 + 2);
    drop(a);
    drop(b);
    drop(redis);
}

// ---------------------------------------------------------------------------------------------
// keep-alive race on pooled upstream connections
// ---------------------------------------------------------------------------------------------

/// An upstream that answers the first request on each connection (keep-alive) and closes the
/// connection when a second request arrives on it: the race between an upstream's idle close
/// and a reused pooled connection, made deterministic. Returns (base URL, connections, served).
fn racy_upstream() -> (
    String,
    std::sync::Arc<std::sync::atomic::AtomicUsize>,
    std::sync::Arc<std::sync::atomic::AtomicUsize>,
) {
    use std::io::BufRead;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    let conns = Arc::new(AtomicUsize::new(0));
    let served = Arc::new(AtomicUsize::new(0));
    let (c, sv) = (Arc::clone(&conns), Arc::clone(&served));
    std::thread::spawn(move || {
        for s in l.incoming() {
            let Ok(s) = s else { return };
            c.fetch_add(1, Ordering::SeqCst);
            let sv = Arc::clone(&sv);
            std::thread::spawn(move || {
                let mut r = std::io::BufReader::new(s.try_clone().unwrap());
                let mut w = s;
                for n in 0.. {
                    let mut len = 0usize;
                    loop {
                        let mut line = String::new();
                        if r.read_line(&mut line).unwrap_or(0) == 0 {
                            return;
                        }
                        if line == "\r\n" {
                            break;
                        }
                        let lower = line.to_ascii_lowercase();
                        if let Some(v) = lower.strip_prefix("content-length:") {
                            len = v.trim().parse().unwrap_or(0);
                        }
                    }
                    let mut body = vec![0; len];
                    if r.read_exact(&mut body).is_err() {
                        return;
                    }
                    if n >= 1 {
                        return; // the race: close instead of answering
                    }
                    sv.fetch_add(1, Ordering::SeqCst);
                    let reply = r#"{"object":"list","data":[{"id":"gpt-4o","object":"model"}]}"#;
                    let _ = write!(
                        w,
                        "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{reply}",
                        reply.len()
                    );
                }
            });
        }
    });
    (format!("http://{addr}"), conns, served)
}

#[test]
fn stale_pooled_connection_retries_idempotent_requests_once_and_never_posts() {
    use std::sync::atomic::Ordering;
    let (url, conns, served) = racy_upstream();
    let j = Jimini::start(Options {
        upstreams_yaml: Some(format!("upstreams:\n  - name: racy\n    base_url: {url}\n")),
        ..Default::default()
    });
    let client = reqwest::blocking::Client::new();
    for i in 0..3 {
        let r = client.get(j.url("/v1/models")).send().unwrap();
        let status = r.status().as_u16();
        let body = r.text().unwrap();
        assert_eq!(status, 200, "GET {i}: {body}");
        assert!(body.contains("gpt-4o"), "GET {i}: {body}");
    }
    // The 2nd and 3rd GET met a closed pooled connection and were retried on a fresh one.
    assert_eq!(served.load(Ordering::SeqCst), 3);
    assert_eq!(conns.load(Ordering::SeqCst), 3);
    // A POST on the (again stale) pooled connection is not retried: the upstream may have
    // started on it. The client gets an OpenAI-shaped 502 and the SDK's own retry decides.
    let (status, _, body) = send(
        &j,
        "/v1/chat/completions",
        &json!({"model": "gpt-4o", "messages": [{"role": "user", "content": "hi"}]}),
        &[],
    );
    assert_eq!(status, 502, "{body}");
    openai_error(&body, "jimini_upstream_error");
    assert_eq!(served.load(Ordering::SeqCst), 3);
}

/// A large body inspected while it streams is sent upstream at its end: an upload slower than
/// `first_byte_ms` is not the upstream's silence (it used to be a 504 and a breaker failure).
#[test]
fn slow_upload_of_an_inspected_body_is_not_an_upstream_timeout() {
    let m = spawn_mock();
    let upstreams = format!(
        "upstreams:\n  - name: slow\n    base_url: {}\n    timeouts: {{first_byte_ms: 300, idle_ms: 300}}\n    breaker: {{consecutive_failures: 1, cooldown_ms: 60000, max_cooldown_ms: 60000}}\n",
        m.url()
    );
    let j = Jimini::start_with_mock(
        Options {
            upstreams_yaml: Some(upstreams),
            ..Default::default()
        },
        m,
    );
    // > 64 KiB: not pre-read, inspected as it streams.
    let body = serde_json::to_vec(&chat("mock-gpt", &"lorem ipsum ".repeat(12_000))).unwrap();
    let addr = j.proxy.clone();
    let mut conn = std::net::TcpStream::connect(&addr).unwrap();
    conn.set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    write!(
        conn,
        "POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    )
    .unwrap();
    // Five pieces with pauses of twice the first-byte timeout between them.
    for piece in body.chunks(body.len().div_ceil(5)) {
        conn.write_all(piece).unwrap();
        std::thread::sleep(Duration::from_millis(600));
    }
    let mut resp = String::new();
    let _ = conn.read_to_string(&mut resp);
    assert!(
        resp.starts_with("HTTP/1.1 200"),
        "{}",
        &resp[..resp.len().min(300)]
    );
    // The breaker (one failure opens it) is still closed: a normal request goes through.
    let r = Jimini::client()
        .post(j.url("/v1/chat/completions"))
        .json(&chat("mock-gpt", "hello"))
        .send()
        .unwrap();
    assert_eq!(r.status(), 200);
}
