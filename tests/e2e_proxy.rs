//! End-to-end tests of the proxy core: the real binary between a real HTTP client and the mock
//! upstream. Redaction in both directions (JSON and SSE, any chunking), blocking, transparency of
//! unknown paths, bodies and errors the client sees.

mod common;

use std::io::{Read, Write};
use std::time::Duration;

use common::gen::{openai_key, random_email};
use common::harness::*;
use jimini::mock::{Fault, MockConfig, MockMode};
use rand::Rng;
use serde_json::{json, Value};

const MASK_RULES: &str = r#"
pack: pii
version: 1
rules:
  - id: email
    description: email addresses
    detector: email
    action: redact
    redact: mask
  - id: phone
    description: phone numbers
    detector: phone
    action: redact
    redact: mask
  - id: card
    description: payment cards
    detector: credit_card
    action: redact
    redact: mask
"#;

const SECRET_RULES: &str = r#"
pack: secrets
version: 1
rules:
  - id: api-keys
    description: provider API keys
    detector: api_key
    action: block
"#;

fn mask_opts(chunk_chars: usize) -> Options {
    Options {
        rules: Some(vec![
            ("pii.yaml".into(), MASK_RULES.into()),
            ("secrets.yaml".into(), SECRET_RULES.into()),
        ]),
        mock: MockConfig {
            enabled: true,
            listen: "127.0.0.1:0".into(),
            chunk_chars,
            ..Default::default()
        },
        ..Default::default()
    }
}

fn rand_email(rng: &mut impl Rng) -> String {
    let user: String = (0..rng.random_range(3..10))
        .map(|_| rng.random_range(b'a'..=b'z') as char)
        .collect();
    let dom: String = (0..rng.random_range(3..8))
        .map(|_| rng.random_range(b'a'..=b'z') as char)
        .collect();
    format!("{user}.{}@{dom}.example.org", rng.random_range(1..999))
}

fn luhn_card(rng: &mut impl Rng) -> String {
    let mut digits: Vec<u32> = vec![4];
    digits.extend((0..14).map(|_| rng.random_range(0..10)));
    let sum: u32 = digits
        .iter()
        .rev()
        .enumerate()
        .map(|(i, &d)| {
            if i % 2 == 0 {
                let x = d * 2;
                if x > 9 {
                    x - 9
                } else {
                    x
                }
            } else {
                d
            }
        })
        .sum();
    digits.push((10 - sum % 10) % 10);
    digits.iter().map(|d| char::from(b'0' + *d as u8)).collect()
}

fn chat_body(text: &str, stream: bool) -> Value {
    json!({"model": "gpt-4o", "stream": stream, "messages": [{"role": "user", "content": text}]})
}

#[test]
fn non_streaming_chat_is_redacted_both_ways() {
    let j = Jimini::start(mask_opts(4));
    let mut rng = rand::rng();
    let client = Jimini::client();
    for _ in 0..5 {
        let email = rand_email(&mut rng);
        let card = luhn_card(&mut rng);
        let text = format!("Hi, I am {email}; my card is {card}. Ünïcödé ✓ 漢字");
        j.mock.clear();
        let resp = client
            .post(j.url("/v1/chat/completions"))
            .header("authorization", "Bearer sk-caller-passthrough")
            .json(&chat_body(&text, false))
            .send()
            .unwrap();
        assert_eq!(resp.status(), 200);
        let body: Value = resp.json().unwrap();
        let content = body["choices"][0]["message"]["content"].as_str().unwrap();
        assert!(
            !content.contains(&email) && !content.contains(&card),
            "{content}"
        );
        assert!(content.contains("[REDACTED:EMAIL]"), "{content}");
        assert!(content.contains("[REDACTED:CREDIT_CARD]"), "{content}");
        assert!(content.ends_with("Ünïcödé ✓ 漢字"), "{content}");
        let seen = j.mock.requests();
        assert_eq!(seen.len(), 1);
        let upstream_body = String::from_utf8_lossy(&seen[0].body);
        assert!(!upstream_body.contains(&email), "{upstream_body}");
        assert!(upstream_body.contains("\"model\":\"gpt-4o\""));
        // Authorization passes through unchanged
        assert_eq!(
            seen[0].header("authorization"),
            Some("Bearer sk-caller-passthrough")
        );
    }
}

#[test]
fn streaming_any_chunk_size_never_leaks_and_matches_non_streaming() {
    let j = Jimini::start(mask_opts(4));
    let mut rng = rand::rng();
    let client = Jimini::client();
    for chunk in [1usize, 2, 3, 5, 7, 13] {
        let email = rand_email(&mut rng);
        let phone = format!("+1 415 555 {:04}", rng.random_range(0..10000));
        let text = format!("Write to {email} or call {phone} — merci, ça va? 🎉 done.");
        let non_stream: Value = client
            .post(j.url("/v1/chat/completions"))
            .json(&chat_body(&text, false))
            .send()
            .unwrap()
            .json()
            .unwrap();
        let expected = non_stream["choices"][0]["message"]["content"]
            .as_str()
            .unwrap()
            .to_string();
        let resp = client
            .post(j.url("/v1/chat/completions"))
            .header("x-mock-chunk-chars", chunk.to_string())
            .json(&chat_body(&text, true))
            .send()
            .unwrap();
        assert_eq!(resp.status(), 200);
        assert!(resp
            .headers()
            .get("content-type")
            .unwrap()
            .to_str()
            .unwrap()
            .starts_with("text/event-stream"));
        let body = resp.text().unwrap();
        assert!(!body.contains(&email), "chunk {chunk}: leaked in {body}");
        assert!(body.trim_end().ends_with("data: [DONE]"), "{body}");
        let streamed = sse_chat_text(&body);
        assert_eq!(streamed, expected, "chunk size {chunk}");
        assert!(streamed.contains("[REDACTED:EMAIL]"));
    }
}

/// Concatenated `logprobs.content[].token` of every choice (and chunk) in a chat response.
fn logprob_tokens(v: &Value) -> String {
    v["choices"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|c| c["logprobs"]["content"].as_array())
        .flatten()
        .filter_map(|t| t["token"].as_str())
        .collect()
}

#[test]
fn logprobs_never_spell_out_redacted_text() {
    // The upstream writes the address itself (fixed reply): only the response path can catch it.
    let mut rng = rand::rng();
    let email = rand_email(&mut rng);
    let mut opts = mask_opts(3);
    opts.mock.mode = MockMode::Fixed;
    opts.mock.fixed_reply = format!("Please write to {email} about the invoice today");
    let j = Jimini::start(opts);
    let client = Jimini::client();
    for stream in [false, true] {
        let mut body = chat_body("where do I send it?", stream);
        body["logprobs"] = json!(true);
        let resp = client
            .post(j.url("/v1/chat/completions"))
            .json(&body)
            .send()
            .unwrap();
        assert_eq!(resp.status(), 200);
        let raw = resp.text().unwrap();
        let (content, tokens) = if stream {
            let tokens = sse_chunks(&raw).iter().map(logprob_tokens).collect();
            (sse_chat_text(&raw), tokens)
        } else {
            let v: Value = serde_json::from_str(&raw).unwrap();
            let content = v["choices"][0]["message"]["content"]
                .as_str()
                .unwrap()
                .to_string();
            (content, logprob_tokens(&v))
        };
        assert!(content.contains("[REDACTED:EMAIL]"), "{content}");
        let local = email.split('@').next().unwrap();
        assert!(
            !tokens.contains(local),
            "stream={stream}: logprobs spell {local:?}: {tokens:?}"
        );
        assert!(!raw.contains(&email), "stream={stream}: {raw}");
    }
    // A choice with nothing to redact keeps its logprobs, token for token. (In a stream nearly
    // every chunk of prose is shifted by the hold-back, so its logprobs go too.)
    let mut opts = mask_opts(3);
    opts.mock.mode = MockMode::Fixed;
    opts.mock.fixed_reply = "nothing to hide here".into();
    let clean = Jimini::start(opts);
    let mut body = chat_body("hello", false);
    body["logprobs"] = json!(true);
    let v: Value = client
        .post(clean.url("/v1/chat/completions"))
        .json(&body)
        .send()
        .unwrap()
        .json()
        .unwrap();
    assert_eq!(logprob_tokens(&v), "nothing to hide here");
}

#[test]
fn secret_in_request_is_blocked_before_the_upstream() {
    let j = Jimini::start(mask_opts(4));
    let mut rng = rand::rng();
    let alphabet = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
    let key = format!(
        "sk-proj-{}",
        (0..64)
            .map(|_| alphabet[rng.random_range(0..alphabet.len())] as char)
            .collect::<String>()
    );
    let resp = Jimini::client()
        .post(j.url("/v1/chat/completions"))
        .json(&chat_body(&format!("use {key} please"), false))
        .send()
        .unwrap();
    assert_eq!(resp.status(), 403);
    let body: Value = resp.json().unwrap();
    assert_eq!(body["error"]["type"], "jimini_policy_violation");
    assert_eq!(body["error"]["code"], "secrets.api-keys");
    assert!(!body.to_string().contains(&key));
    // A small body is inspected before dispatch: the upstream is never even contacted.
    assert_eq!(j.mock.request_count(), 0);
    // A large (over 64 KiB) body is inspected while it streams: the upstream may see the
    // request head, never a byte of the secret.
    let filler = "lorem ipsum ".repeat(8000);
    let resp = Jimini::client()
        .post(j.url("/v1/chat/completions"))
        .json(&chat_body(&format!("{filler} use {key} please"), false))
        .send()
        .unwrap();
    assert_eq!(resp.status(), 403);
    assert!(j
        .mock
        .requests()
        .iter()
        .all(|r| !String::from_utf8_lossy(&r.body).contains(&key)));
}

#[test]
fn unknown_paths_and_methods_pass_through_untouched() {
    let j = Jimini::start(mask_opts(4));
    let client = Jimini::client();
    // unknown path: the mock answers 404 with its own body; Jimini relays it byte for byte
    let direct = client
        .get(format!("http://{}/v1/files/file-abc?x=1", j.mock.addr))
        .send()
        .unwrap();
    let direct_status = direct.status();
    let direct_body = direct.bytes().unwrap();
    let via = client.get(j.url("/v1/files/file-abc?x=1")).send().unwrap();
    assert_eq!(via.status(), direct_status);
    assert_eq!(via.bytes().unwrap(), direct_body);
    let seen = j.mock.requests();
    let last = seen.last().unwrap();
    assert_eq!(last.method, "GET");
    assert_eq!(last.path, "/v1/files/file-abc?x=1");
    // an unknown POST body with PII is not inspected (not an OpenAI content endpoint)
    j.mock.clear();
    let raw = b"{\"note\":\"jane@example.com\"}".to_vec();
    let _ = client
        .post(j.url("/v1/custom/thing"))
        .header("content-type", "application/json")
        .body(raw.clone())
        .send()
        .unwrap();
    assert_eq!(j.mock.requests()[0].body.as_ref(), &raw[..]);
    // models list passes
    let models = client.get(j.url("/v1/models")).send().unwrap();
    assert_eq!(models.status(), 200);
    assert_eq!(models.json::<Value>().unwrap()["object"], "list");
}

#[test]
fn large_bodies_are_forwarded_whole() {
    let j = Jimini::start(mask_opts(64));
    let mut text = String::new();
    while text.len() < 600_000 {
        text.push_str("lorem ipsum dolor sit amet ✓ ");
    }
    text.push_str("end jane@example.com");
    let resp = Jimini::client()
        .post(j.url("/v1/chat/completions"))
        .json(&chat_body(&text, false))
        .send()
        .unwrap();
    assert_eq!(resp.status(), 200);
    let body: Value = resp.json().unwrap();
    let content = body["choices"][0]["message"]["content"].as_str().unwrap();
    assert_eq!(
        content.len(),
        text.len() - "jane@example.com".len() + "[REDACTED:EMAIL]".len()
    );
    assert!(content.ends_with("end [REDACTED:EMAIL]"));
}

#[test]
fn oversized_body_gets_413() {
    let j = Jimini::start(Options {
        extra_yaml: "body:\n  max_bytes: 1000\n".into(),
        ..mask_opts(4)
    });
    let text = "x".repeat(5000);
    let resp = Jimini::client()
        .post(j.url("/v1/chat/completions"))
        .json(&chat_body(&text, false))
        .send()
        .unwrap();
    assert_eq!(resp.status(), 413);
    let body: Value = resp.json().unwrap();
    assert_eq!(body["error"]["type"], "invalid_request_error");
    assert_eq!(j.mock.request_count(), 0);
}

#[test]
fn oversized_chunked_body_gets_413() {
    let j = Jimini::start(Options {
        extra_yaml: "body:\n  max_bytes: 1000\n".into(),
        ..mask_opts(4)
    });
    // raw HTTP/1.1 with chunked framing: no Content-Length to reject up front
    let mut s = std::net::TcpStream::connect(&j.proxy).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut req = String::from(
        "POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n",
    );
    let chunk = "a".repeat(700);
    for _ in 0..3 {
        req.push_str(&format!("{:x}\r\n{chunk}\r\n", chunk.len()));
    }
    req.push_str("0\r\n\r\n");
    s.write_all(req.as_bytes()).unwrap();
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
    let out = String::from_utf8_lossy(&out);
    assert!(out.starts_with("HTTP/1.1 413"), "{out}");
    assert!(out.contains("invalid_request_error"), "{out}");
}

#[test]
fn malformed_json_and_invalid_utf8_get_400() {
    let j = Jimini::start(mask_opts(4));
    let client = Jimini::client();
    for body in [
        b"{\"model\": \"x\", \"messages\": [".to_vec(),
        b"not json at all".to_vec(),
        vec![b'{', b'"', b'a', b'"', b':', b'"', 0xff, 0xfe, b'"', b'}'],
    ] {
        let resp = client
            .post(j.url("/v1/chat/completions"))
            .header("content-type", "application/json")
            .body(body)
            .send()
            .unwrap();
        assert_eq!(resp.status(), 400);
        let v: Value = resp.json().unwrap();
        assert_eq!(v["error"]["type"], "invalid_request_error");
    }
    assert_eq!(j.mock.request_count(), 0);
}

#[test]
fn gzip_request_body_is_decoded_and_scanned() {
    use flate2::write::GzEncoder;
    let j = Jimini::start(mask_opts(4));
    let body = serde_json::to_vec(&chat_body("reach jane.roe@example.com", false)).unwrap();
    let mut enc = GzEncoder::new(Vec::new(), flate2::Compression::default());
    enc.write_all(&body).unwrap();
    let gz = enc.finish().unwrap();
    let resp = Jimini::client()
        .post(j.url("/v1/chat/completions"))
        .header("content-type", "application/json")
        .header("content-encoding", "gzip")
        .body(gz)
        .send()
        .unwrap();
    assert_eq!(resp.status(), 200);
    let v: Value = resp.json().unwrap();
    assert_eq!(
        v["choices"][0]["message"]["content"],
        "reach [REDACTED:EMAIL]"
    );
    let seen = &j.mock.requests()[0];
    assert!(seen.header("content-encoding").is_none());
    assert!(!String::from_utf8_lossy(&seen.body).contains("jane.roe"));
}

#[test]
fn gzip_upstream_response_is_still_scanned() {
    let j = Jimini::start(mask_opts(4));
    for stream in [false, true] {
        let resp = Jimini::client()
            .post(j.url("/v1/chat/completions"))
            .header("x-mock-gzip", "1")
            .json(&chat_body("my mail is jane.roe@example.com", stream))
            .send()
            .unwrap();
        assert_eq!(resp.status(), 200);
        let text = resp.text().unwrap();
        assert!(
            !text.contains("jane.roe@example.com"),
            "stream={stream}: {text}"
        );
        assert!(
            client_text(&text).contains("[REDACTED:EMAIL]"),
            "stream={stream}: {text}"
        );
    }
}

#[test]
fn upstream_down_is_an_openai_shaped_502() {
    let dead = ClosedPort::new();
    let j = Jimini::start(Options {
        upstreams_yaml: Some(format!(
            "upstreams:\n  - name: dead\n    base_url: http://127.0.0.1:{}\n    retries: {{ max_attempts: 0 }}\n",
            dead.port
        )),
        ..mask_opts(4)
    });
    let resp = Jimini::client()
        .post(j.url("/v1/chat/completions"))
        .json(&chat_body("hello", false))
        .send()
        .unwrap();
    assert_eq!(resp.status(), 502);
    let v: Value = resp.json().unwrap();
    assert_eq!(v["error"]["type"], "jimini_upstream_error");
}

#[test]
fn upstream_dying_mid_stream_ends_cleanly_with_an_error_event() {
    let j = Jimini::start(mask_opts(2));
    j.mock
        .set_fault(Some(Fault::DropMidStream { after_events: 4 }));
    let resp = Jimini::client()
        .post(j.url("/v1/chat/completions"))
        .json(&chat_body(
            "a fairly long answer that will be cut in the middle",
            true,
        ))
        .send()
        .unwrap();
    assert_eq!(resp.status(), 200);
    // the body ends (no hang); whatever arrived ends with an error event, never [DONE]
    let body = resp.text().unwrap_or_default();
    assert!(!body.contains("[DONE]"), "{body}");
    assert!(
        body.contains("\"error\""),
        "expected an SSE error event: {body}"
    );
}

#[test]
fn base_url_with_path_prefix_is_respected() {
    let mock =
        jimini::mock::MockServer::spawn_thread("127.0.0.1:0", MockConfig::default()).unwrap();
    let addr = mock.addr;
    let j = Jimini::start_with_mock(
        Options {
            upstreams_yaml: Some(format!(
                "upstreams:\n  - name: prefixed\n    base_url: http://{addr}/v1\n"
            )),
            ..mask_opts(4)
        },
        mock,
    );
    let resp = Jimini::client()
        .post(j.url("/v1/chat/completions"))
        .json(&chat_body("hi", false))
        .send()
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(j.mock.requests()[0].path, "/v1/chat/completions");
}

#[test]
fn shipped_config_checks_and_scan_cli_reports_byte_offsets() {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_jimini"))
        .args(["check", "-c"])
        .arg(repo_root().join("conf/jimini.yaml"))
        .current_dir(repo_root())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    let input = "héllo — mail jane@example.com now";
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_jimini"))
        .args(["scan", "--json"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(input.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    let f = &v["findings"][0];
    assert_eq!(f["detector"], "email");
    let (s, e) = (
        f["start"].as_u64().unwrap() as usize,
        f["end"].as_u64().unwrap() as usize,
    );
    assert_eq!(&input[s..e], "jane@example.com");
    assert_eq!(v["redacted"], "héllo — mail [REDACTED:EMAIL] now");
}

#[test]
fn check_reports_the_key_path_of_a_bad_config() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("bad.yaml");
    std::fs::write(
        &p,
        "upstreams:\n  - name: a\n    base_url: http://127.0.0.1:1\n    timeouts:\n      conect_ms: 5\n",
    )
    .unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_jimini"))
        .args(["check", "-c"])
        .arg(&p)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("upstreams[0].timeouts"), "{err}");
    assert!(err.contains("conect_ms"), "{err}");
}

#[test]
fn anthropic_messages_are_scanned_streaming_and_not() {
    let j = Jimini::start(mask_opts(3));
    let client = Jimini::client();
    let mut rng = rand::rng();
    for stream in [false, true] {
        let email = rand_email(&mut rng);
        j.mock.clear();
        let resp = client
            .post(j.url("/v1/messages"))
            .header("x-api-key", "sk-ant-caller")
            .header("anthropic-version", "2023-06-01")
            .json(&json!({
                "model": "claude-sonnet-4",
                "max_tokens": 64,
                "stream": stream,
                "system": format!("The operator is {email}"),
                "messages": [{"role": "user", "content": [{"type": "text", "text": format!("mail {email} today")}]}]
            }))
            .send()
            .unwrap();
        assert_eq!(resp.status(), 200);
        let text = resp.text().unwrap();
        assert!(!text.contains(&email), "stream={stream}: {text}");
        assert!(
            client_text(&text).contains("[REDACTED:EMAIL]"),
            "stream={stream}: {text}"
        );
        let seen = String::from_utf8_lossy(&j.mock.requests()[0].body).to_string();
        assert!(!seen.contains(&email), "{seen}");
        assert!(
            seen.contains("\"system\":\"The operator is [REDACTED:EMAIL]\""),
            "{seen}"
        );
        if stream {
            assert!(text.contains("event: message_stop"), "{text}");
        }
    }
}

#[test]
fn responses_api_and_legacy_completions_are_scanned() {
    let j = Jimini::start(mask_opts(2));
    let client = Jimini::client();
    let email = "ana.lopez@example.net";
    for (path, body) in [
        (
            "/v1/responses",
            json!({"model": "gpt-4o", "input": format!("hi {email}"), "stream": true}),
        ),
        (
            "/v1/responses",
            json!({"model": "gpt-4o", "input": [{"role": "user", "content": [{"type": "input_text", "text": format!("hi {email}")}]}]}),
        ),
        (
            "/v1/completions",
            json!({"model": "gpt-3.5-turbo-instruct", "prompt": format!("hi {email}"), "stream": true}),
        ),
        (
            "/v1/completions",
            json!({"model": "gpt-3.5-turbo-instruct", "prompt": [format!("hi {email}")]}),
        ),
    ] {
        let resp = client.post(j.url(path)).json(&body).send().unwrap();
        assert_eq!(resp.status(), 200, "{path}");
        let text = resp.text().unwrap();
        assert!(!text.contains(email), "{path}: {text}");
        assert!(
            client_text(&text).contains("[REDACTED:EMAIL]"),
            "{path}: {text}"
        );
    }
}

/// The harness's readiness check asks who owns a listening port, not merely whether something
/// answers there: a parallel test's server on a recycled port once passed for this jimini.
#[test]
fn harness_readiness_tells_our_listener_from_someone_elses() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    assert_eq!(
        listener_owned_by(std::process::id(), port),
        Some(true),
        "this process listens on {port}"
    );
    let j = Jimini::start(Options::default());
    let proxy_port: u16 = j.proxy.rsplit(':').next().unwrap().parse().unwrap();
    assert_eq!(listener_owned_by(j.child.id(), port), Some(false));
    assert_eq!(listener_owned_by(j.child.id(), proxy_port), Some(true));
    drop(listener);
    assert_eq!(listener_owned_by(std::process::id(), port), Some(false));
}

/// A one-shot-per-connection upstream that answers every request with `response` (raw bytes,
/// written in `pieces` separate writes) and closes, so the test controls framing exactly.
/// Returns its address; the thread lives as long as the test process.
fn raw_upstream(response: Vec<u8>, pieces: usize) -> std::net::SocketAddr {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(mut conn) = conn else { continue };
            let response = response.clone();
            std::thread::spawn(move || {
                let _ = conn.set_nodelay(true);
                // Read the head and a Content-Length body, then answer.
                let mut buf = Vec::new();
                let mut chunk = [0u8; 8192];
                let head_end = loop {
                    match conn.read(&mut chunk) {
                        Ok(0) | Err(_) => return,
                        Ok(n) => buf.extend_from_slice(&chunk[..n]),
                    }
                    if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                        break i + 4;
                    }
                };
                let head = String::from_utf8_lossy(&buf[..head_end]).to_ascii_lowercase();
                let len: usize = head
                    .lines()
                    .find_map(|l| l.strip_prefix("content-length:"))
                    .and_then(|v| v.trim().parse().ok())
                    .unwrap_or(0);
                while buf.len() < head_end + len {
                    match conn.read(&mut chunk) {
                        Ok(0) | Err(_) => return,
                        Ok(n) => buf.extend_from_slice(&chunk[..n]),
                    }
                }
                let step = response.len().div_ceil(pieces.max(1)).max(1);
                for part in response.chunks(step) {
                    if conn.write_all(part).is_err() {
                        return;
                    }
                    let _ = conn.flush();
                    std::thread::sleep(Duration::from_millis(5));
                }
            });
        }
    });
    addr
}

fn raw_opts(addr: std::net::SocketAddr) -> Options {
    Options {
        upstreams_yaml: Some(format!(
            "upstreams:\n  - name: raw\n    base_url: http://{addr}\n    retries: {{ max_attempts: 0 }}\n"
        )),
        ..mask_opts(4)
    }
}

/// Starts a Jimini in front of a `raw_upstream` answering `response` and sends it one chat
/// request (streamed or not); returns the Jimini (keep it alive while reading) and the response.
fn chat_via_raw_upstream(
    response: String,
    pieces: usize,
    stream: bool,
    tweak: impl FnOnce(&mut Options),
) -> (Jimini, reqwest::blocking::Response) {
    let mut opts = raw_opts(raw_upstream(response.into_bytes(), pieces));
    tweak(&mut opts);
    let j = Jimini::start(opts);
    let resp = Jimini::client()
        .post(j.url("/v1/chat/completions"))
        .json(&chat_body("hello", stream))
        .send()
        .unwrap();
    (j, resp)
}

fn sse_body(deltas: &[&str]) -> String {
    let mut body = String::new();
    for d in deltas {
        body += &format!(
            "data: {}\n\n",
            json!({"id": "c1", "object": "chat.completion.chunk", "choices": [{"index": 0, "delta": {"content": d}, "finish_reason": null}]})
        );
    }
    body
}

/// An upstream that compresses with an encoding pingora cannot decode gets no byte through:
/// the client sees a 502 error object instead of unscanned text (fail-closed default).
#[test]
fn undecodable_response_encoding_is_refused_not_passed_through() {
    let email = random_email();
    let body = sse_body(&[&format!("mail {email}")]) + "data: [DONE]\n\n";
    // Any bytes will do: the point is that Jimini cannot read them, whatever they are.
    let response = format!(
        "HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ncontent-encoding: deflate\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    );
    // A breaker that opens on the first failure: a refusal is policy, not a failure, so the
    // second request still reaches the upstream (not `503 upstream_circuit_open`).
    let (j, _) = chat_via_raw_upstream(response.clone(), 1, true, |o| {
        let ups = o.upstreams_yaml.take().unwrap();
        o.upstreams_yaml = Some(
            ups + "    breaker: { consecutive_failures: 1, cooldown_ms: 60000, max_cooldown_ms: 60000 }\n",
        )
    });
    let resp = Jimini::client()
        .post(j.url("/v1/chat/completions"))
        .json(&chat_body("hello", true))
        .send()
        .unwrap();
    assert_eq!(resp.status(), 502);
    assert!(resp.headers().get("content-encoding").is_none());
    let text = resp.text().unwrap();
    assert!(!text.contains(&email), "{text}");
    let err: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(err["error"]["code"], "uninspectable_upstream_response");
    // Shadow mode enforces nothing: the same answer passes byte for byte.
    let (_j, resp) = chat_via_raw_upstream(response, 1, true, |o| o.rules_mode = "shadow");
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["content-encoding"], "deflate");
    assert_eq!(resp.text().unwrap(), body);
}

/// A stream served without `text/event-stream` is still a stream to the SDK that asked for
/// one: it is scanned as such.
#[test]
fn stream_without_an_sse_content_type_is_still_scanned() {
    let email = random_email();
    let (a, b) = email.split_at(email.len() / 2);
    let body = sse_body(&["mail ", a, b, " ok"]) + "data: [DONE]\n\n";
    for content_type in [
        "",
        "content-type: text/plain\r\n",
        "content-type: application/octet-stream\r\n",
    ] {
        let response = format!(
            "HTTP/1.1 200 OK\r\n{content_type}content-length: {}\r\nconnection: close\r\n\r\n{body}",
            body.len()
        );
        let (_j, resp) = chat_via_raw_upstream(response, 3, true, |_| {});
        assert_eq!(resp.status(), 200);
        let text = resp.text().unwrap();
        assert!(
            !text.contains(&email) && !text.contains(b),
            "{content_type:?}: {text}"
        );
        assert_eq!(
            sse_chat_text(&text),
            "mail [REDACTED:EMAIL] ok",
            "{content_type:?}"
        );
    }
}

/// An upstream that dies inside an event: neither the cut event nor the text held back for
/// the finding that was still growing reaches the client, which gets one error event.
#[test]
fn stream_cut_mid_event_leaks_no_part_of_a_held_value() {
    let email = random_email();
    let (a, b) = email.split_at(email.len() / 2);
    let first = sse_body(&[&format!("Contact {a}")]);
    let cut = format!(r#"data: {{"id":"c1","choices":[{{"index":0,"delta":{{"content":"{b} and "#);
    let response = format!(
        "HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\nconnection: close\r\n\r\n{first}{cut}"
    );
    let (_j, resp) = chat_via_raw_upstream(response, 2, true, |_| {});
    assert_eq!(resp.status(), 200);
    let text = resp.text().unwrap();
    assert!(!text.contains(a) && !text.contains(b), "{text}");
    let events = sse_chunks(&text);
    let errors: Vec<_> = events.iter().filter(|e| e.get("error").is_some()).collect();
    assert_eq!(errors.len(), 1, "{text}");
    assert_eq!(errors[0]["error"]["code"], "upstream_stream_interrupted");
}

/// A JSON answer larger than `body.max_response_bytes`: the client gets the error object and
/// not one byte of the upstream's body (it used to get the unscanned tail).
#[test]
fn oversized_json_response_forwards_nothing_unscanned() {
    let email = random_email();
    let filler = "a".repeat(300_000);
    let body = json!({"id": "x", "object": "chat.completion", "choices": [{"index": 0, "message": {"role": "assistant", "content": format!("{filler} {email}")}, "finish_reason": "stop"}]}).to_string();
    let response = format!(
        "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    );
    let (_j, resp) = chat_via_raw_upstream(response, 40, false, |o| {
        o.extra_yaml += "body:\n  max_response_bytes: 65536\n"
    });
    let text = resp.text().unwrap();
    assert!(
        !text.contains(&email) && !text.contains("aaaa"),
        "{} bytes",
        text.len()
    );
    let err: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(err["error"]["code"], "response_too_large");
}

/// Percent-encoded and dot-segment spellings of an inspected path are inspected: a secret is
/// blocked and PII redacted before the upstream sees them.
#[test]
fn encoded_paths_are_inspected_like_the_plain_ones() {
    let j = Jimini::start(Options::default());
    let key = openai_key();
    for path in [
        "/v1/chat/%63ompletions",
        "/v1/%63hat/completions",
        "/v1/chat%2Fcompletions",
    ] {
        let resp = Jimini::client()
            .post(j.url(path))
            .json(&chat_body(&format!("my key is {key}"), false))
            .send()
            .unwrap();
        assert_eq!(resp.status(), 403, "{path}");
        assert!(
            !j.mock
                .requests()
                .iter()
                .any(|r| String::from_utf8_lossy(&r.body).contains(&key)),
            "{path}"
        );
    }
}

/// Sends `head` (+ `body` once `wait_for_continue` saw the interim 100) on a raw connection and
/// returns everything the proxy answered until it closed.
fn raw_exchange(addr: &str, head: &str, body: &[u8], wait_for_continue: bool) -> String {
    let mut conn = std::net::TcpStream::connect(addr).unwrap();
    conn.set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    conn.write_all(head.as_bytes()).unwrap();
    let mut got = Vec::new();
    if wait_for_continue {
        let mut buf = [0u8; 256];
        while !got.windows(4).any(|w| w == b"\r\n\r\n") {
            let n = conn
                .read(&mut buf)
                .expect("an interim response before the body");
            assert!(n > 0, "closed before answering Expect");
            got.extend_from_slice(&buf[..n]);
        }
        assert!(
            got.starts_with(b"HTTP/1.1 100 Continue\r\n"),
            "{}",
            String::from_utf8_lossy(&got)
        );
        got.clear();
    }
    conn.write_all(body).unwrap();
    let _ = conn.read_to_end(&mut got);
    String::from_utf8_lossy(&got).into_owned()
}

/// `Expect: 100-continue` on an inspected endpoint is answered before the body is read (a
/// client that waits for it would otherwise hang until its own timeout).
#[test]
fn expect_continue_is_answered_before_the_body() {
    let j = Jimini::start(mask_opts(4));
    let email = random_email();
    let body = chat_body(&format!("mail {email}"), false).to_string();
    let head = format!(
        "POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: {}\r\nExpect: 100-continue\r\nConnection: close\r\n\r\n",
        body.len()
    );
    let resp = raw_exchange(&j.proxy, &head, body.as_bytes(), true);
    assert!(resp.starts_with("HTTP/1.1 200"), "{resp}");
    assert!(
        resp.contains("[REDACTED:EMAIL]") && !resp.contains(&email),
        "{resp}"
    );
    let seen = j.mock.requests();
    let upstream = seen.last().unwrap();
    assert!(String::from_utf8_lossy(&upstream.body).contains("[REDACTED:EMAIL]"));
}

/// An HTTP/1.0 client never gets chunked framing (it has none): a rewritten body is
/// delimited by the connection's close.
#[test]
fn http10_client_gets_a_close_delimited_rewritten_body() {
    let j = Jimini::start(mask_opts(4));
    let email = random_email();
    let body = chat_body(&format!("mail {email}"), false).to_string();
    let head = format!(
        "POST /v1/chat/completions HTTP/1.0\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
        body.len()
    );
    let resp = raw_exchange(&j.proxy, &head, body.as_bytes(), false);
    let (head, payload) = resp.split_once("\r\n\r\n").unwrap();
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert!(
        !head.to_ascii_lowercase().contains("transfer-encoding"),
        "{head}"
    );
    let v: Value = serde_json::from_str(payload).expect("the body is the JSON, unframed");
    assert_eq!(
        v["choices"][0]["message"]["content"],
        "mail [REDACTED:EMAIL]"
    );
}

/// The data of an SSE body's events that are not JSON (`[DONE]` excluded), in order.
fn sse_plain_datas(body: &str) -> Vec<String> {
    let mut out = Vec::new();
    for event in body.split("\n\n") {
        let lines: Vec<&str> = event
            .lines()
            .filter_map(|l| l.strip_prefix("data:"))
            .map(|v| v.strip_prefix(' ').unwrap_or(v))
            .collect();
        if lines.is_empty() {
            continue;
        }
        let data = lines.join("\n");
        if data != "[DONE]" && serde_json::from_str::<Value>(&data).is_err() {
            out.push(data);
        }
    }
    out
}

fn sse_response(body: &str) -> String {
    format!("HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\nconnection: close\r\n\r\n{body}")
}

/// After `data: [DONE]` the stream is over: whatever an upstream sends after it (a chat chunk,
/// JSON of any shape, plain text, a comment, a cut event) never reaches the client, scanned or
/// not, and the client's stream ends cleanly at `[DONE]`.
#[test]
fn nothing_after_done_reaches_the_client() {
    let email = random_email();
    let head = sse_body(&["hello ", "world"]) + "data: [DONE]\n\n";
    let tail = sse_body(&[&format!("late {email}")])
        + &format!("data: {}\n\n", json!({"leak": email}))
        + &format!("data: plain {email}\n\n: {email}\n\n")
        + &format!(r#"data: {{"choices":[{{"delta":{{"content":"{email}"#);
    for pieces in [1, 4] {
        let (_j, resp) =
            chat_via_raw_upstream(sse_response(&(head.clone() + &tail)), pieces, true, |_| {});
        assert_eq!(resp.status(), 200);
        let text = resp.text().unwrap();
        assert!(!text.contains(&email), "{text}");
        // The scanner's hold-back may move text between chunks; the events are the head's.
        assert_eq!(
            sse_chat_text(&text),
            "hello world",
            "pieces {pieces}: {text}"
        );
        assert!(
            text.ends_with("\n\ndata: [DONE]\n\n"),
            "pieces {pieces}: {text}"
        );
        assert_eq!(
            text.matches("data: ").count(),
            sse_chunks(&text).len() + 1,
            "{text}"
        );
        assert!(
            !text.lines().any(|l| l.starts_with(':')),
            "no comment: {text}"
        );
        assert!(!text.contains("error"), "{text}");
    }
}

/// SSE comment lines are scanned like any text; keep-alive comments pass byte for byte.
#[test]
fn sse_comments_are_scanned_and_keepalives_pass() {
    let email = random_email();
    let body = format!(
        ": ping\n\n{}: contact {email}\n\n: keep-alive\n\ndata: [DONE]\n\n",
        sse_body(&["hi"])
    );
    let (_j, resp) = chat_via_raw_upstream(sse_response(&body), 3, true, |_| {});
    assert_eq!(resp.status(), 200);
    let text = resp.text().unwrap();
    assert!(!text.contains(&email), "{text}");
    let comments: Vec<&str> = text.lines().filter(|l| l.starts_with(':')).collect();
    assert_eq!(
        comments,
        [": ping", ": contact [REDACTED:EMAIL]", ": keep-alive"],
        "{text}"
    );
    assert!(text.starts_with(": ping\n\n"), "{text}");
    assert!(text.contains("\n\n: keep-alive\n\n"), "{text}");
    assert_eq!(sse_chat_text(&text), "hi");
}

/// Consecutive plain-text `data:` events are one held-back text: an address or a card number
/// split across events is still redacted, and the client's text equals the redaction of the
/// whole text — with `[DONE]` or without (the end of the response flushes).
#[test]
fn plain_text_events_are_redacted_across_event_boundaries() {
    let email = random_email();
    let (a, b) = email.split_at(email.len() / 2);
    let mut rng = rand::rng();
    let card = luhn_card(&mut rng);
    let (c, d) = card.split_at(7);
    let datas = [
        "mail ".to_string(),
        a.to_string(),
        format!("{b} or pay {c}"),
        format!("{d} now"),
    ];
    let expected = "mail [REDACTED:EMAIL] or pay [REDACTED:CREDIT_CARD] now";
    for (done, pieces) in [(true, 1), (false, 5)] {
        let mut body: String = datas.iter().map(|d| format!("data: {d}\n\n")).collect();
        if done {
            body += "data: [DONE]\n\n";
        }
        let (_j, resp) = chat_via_raw_upstream(sse_response(&body), pieces, true, |_| {});
        assert_eq!(resp.status(), 200);
        let text = resp.text().unwrap();
        assert!(!text.contains(a) && !text.contains(b), "{text}");
        assert!(!text.contains(c) && !text.contains(d), "{text}");
        assert_eq!(sse_plain_datas(&text).concat(), expected, "{text}");
        assert!(!text.contains("error"), "{text}");
        assert_eq!(text.ends_with("data: [DONE]\n\n"), done, "{text}");
    }
}

/// An upstream whose connection ends abnormally after a complete stream (`[DONE]` sent, then
/// the chunked body cut before its last chunk) cut nothing the client needed: the client's
/// stream ends at `[DONE]` without an error event after it (it used to get one).
#[test]
fn upstream_cut_after_done_adds_no_error_event() {
    let body = sse_body(&["hello ", "world"]) + "data: [DONE]\n\n";
    for tail in ["", ": after\n\n"] {
        let payload = body.clone() + tail;
        let response = format!(
            "HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n\r\n{:x}\r\n{payload}\r\n",
            payload.len()
        );
        let (_j, resp) = chat_via_raw_upstream(response, 2, true, |_| {});
        assert_eq!(resp.status(), 200);
        let text = resp.text().unwrap();
        assert_eq!(sse_chat_text(&text), "hello world", "{tail:?}: {text}");
        assert!(text.ends_with("\n\ndata: [DONE]\n\n"), "{tail:?}: {text}");
        assert!(!text.contains("error"), "{tail:?}: {text}");
    }
}
