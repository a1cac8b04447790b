//! End-to-end tests of the mock over real loopback HTTP (reqwest): every endpoint streamed and not,
//! chunking, usage chunk, faults (sticky, per-header, control API), recording and lifecycle.

use std::time::{Duration, Instant};

use serde_json::{json, Value};
use tokio::net::TcpListener;

use super::{Fault, MockConfig, MockMode, MockServer};

async fn start(cfg: MockConfig) -> MockServer {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    MockServer::start(l, cfg).await.unwrap()
}

fn client() -> reqwest::Client {
    reqwest::Client::builder().build().unwrap()
}

/// Parsed SSE event: (event name if any, data).
fn parse_sse(body: &str) -> Vec<(Option<String>, String)> {
    assert!(
        body.is_empty() || body.ends_with("\n\n"),
        "unterminated event stream: {body:?}"
    );
    body.split("\n\n")
        .filter(|e| !e.is_empty())
        .map(|e| {
            let mut name = None;
            let mut data = None;
            for line in e.lines() {
                if let Some(n) = line.strip_prefix("event: ") {
                    name = Some(n.to_string());
                } else if let Some(d) = line.strip_prefix("data: ") {
                    assert!(data.is_none(), "one data line per event: {e:?}");
                    data = Some(d.to_string());
                } else {
                    panic!("unexpected line {line:?}");
                }
            }
            (name, data.expect("data line"))
        })
        .collect()
}

fn json_events(body: &str) -> Vec<Value> {
    parse_sse(body)
        .into_iter()
        .filter(|(_, d)| d != "[DONE]")
        .map(|(_, d)| serde_json::from_str(&d).unwrap())
        .collect()
}

async fn post(srv: &MockServer, path: &str, body: Value) -> reqwest::Response {
    client()
        .post(format!("{}{path}", srv.url()))
        .json(&body)
        .send()
        .await
        .unwrap()
}

const MULTIBYTE: &str = "Grüße, 世界! 🎉 naïve café — ok";

#[tokio::test]
async fn chat_non_stream() {
    let srv = start(MockConfig::default()).await;
    let r = post(
        &srv,
        "/v1/chat/completions",
        json!({"model":"gpt-4o","messages":[{"role":"system","content":"be nice"},{"role":"user","content":MULTIBYTE}]}),
    )
    .await;
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["content-type"], "application/json");
    assert!(r.headers().contains_key("x-request-id"));
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["object"], "chat.completion");
    assert!(v["id"].as_str().unwrap().starts_with("chatcmpl-"));
    assert!(v["created"].as_u64().unwrap() > 1_600_000_000);
    assert_eq!(v["model"], "gpt-4o");
    assert_eq!(v["choices"][0]["index"], 0);
    assert_eq!(v["choices"][0]["message"]["role"], "assistant");
    assert_eq!(v["choices"][0]["message"]["content"], MULTIBYTE);
    assert_eq!(v["choices"][0]["finish_reason"], "stop");
    let u = &v["usage"];
    let completion = MULTIBYTE.chars().count().div_ceil(4) as u64;
    assert_eq!(u["completion_tokens"], completion);
    assert_eq!(
        u["total_tokens"].as_u64().unwrap(),
        u["prompt_tokens"].as_u64().unwrap() + completion
    );
}

async fn chat_stream_text(
    srv: &MockServer,
    extra_headers: &[(&str, &str)],
    body: Value,
) -> (String, Vec<Value>) {
    let mut rb = client()
        .post(format!("{}/v1/chat/completions", srv.url()))
        .json(&body);
    for (k, v) in extra_headers {
        rb = rb.header(*k, *v);
    }
    let r = rb.send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert!(r.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/event-stream"));
    let text = r.text().await.unwrap();
    (text.clone(), json_events(&text))
}

#[tokio::test]
async fn chat_stream_chunking_multibyte() {
    for chunk_chars in [1usize, 7] {
        let srv = start(MockConfig {
            chunk_chars,
            ..MockConfig::default()
        })
        .await;
        let (raw, chunks) = chat_stream_text(
            &srv,
            &[],
            json!({"messages":[{"role":"user","content":MULTIBYTE}],"stream":true}),
        )
        .await;
        assert!(raw.ends_with("data: [DONE]\n\n"));
        assert_eq!(
            chunks[0]["choices"][0]["delta"],
            json!({"role":"assistant","content":""})
        );
        let last = chunks.last().unwrap();
        assert_eq!(last["choices"][0]["finish_reason"], "stop");
        assert_eq!(last["choices"][0]["delta"], json!({}));
        let deltas: Vec<&str> = chunks[1..chunks.len() - 1]
            .iter()
            .map(|c| c["choices"][0]["delta"]["content"].as_str().unwrap())
            .collect();
        assert_eq!(deltas.concat(), MULTIBYTE);
        for (i, d) in deltas.iter().enumerate() {
            let n = d.chars().count();
            assert!(n == chunk_chars || (i + 1 == deltas.len() && n <= chunk_chars));
        }
        let id = &chunks[0]["id"];
        for c in &chunks {
            assert_eq!(c["object"], "chat.completion.chunk");
            assert_eq!(&c["id"], id);
            assert!(c.get("usage").is_none(), "no usage without include_usage");
        }
    }
}

#[tokio::test]
async fn chat_stream_include_usage_and_header_chunking() {
    let srv = start(MockConfig::default()).await;
    let (raw, chunks) = chat_stream_text(
        &srv,
        &[("x-mock-chunk-chars", "1")],
        json!({"messages":[{"role":"user","content":"héllo"}],"stream":true,"stream_options":{"include_usage":true}}),
    )
    .await;
    assert!(raw.ends_with("data: [DONE]\n\n"));
    // role + 5 chars + finish + usage
    assert_eq!(chunks.len(), 8);
    let usage_chunk = chunks.last().unwrap();
    assert_eq!(usage_chunk["choices"], json!([]));
    assert_eq!(usage_chunk["usage"]["completion_tokens"], 2);
    assert_eq!(usage_chunk["usage"]["prompt_tokens"], 2);
    assert_eq!(usage_chunk["usage"]["total_tokens"], 4);
    for c in &chunks[..chunks.len() - 1] {
        assert!(c["usage"].is_null() && c.get("usage").is_some());
    }
}

#[tokio::test]
async fn fixed_mode_and_bad_json() {
    let srv = start(MockConfig {
        mode: MockMode::Fixed,
        fixed_reply: "canned".into(),
        ..MockConfig::default()
    })
    .await;
    let v: Value = post(
        &srv,
        "/v1/chat/completions",
        json!({"messages":[{"role":"user","content":"x"}]}),
    )
    .await
    .json()
    .await
    .unwrap();
    assert_eq!(v["choices"][0]["message"]["content"], "canned");

    let r = client()
        .post(format!("{}/v1/chat/completions", srv.url()))
        .header("content-type", "application/json")
        .body("{not json")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["error"]["type"], "invalid_request_error");
    assert!(v["error"]["param"].is_null());

    // Unknown path: 404 regardless of body validity.
    let r = client()
        .post(format!("{}/v1/unknown", srv.url()))
        .body(vec![0xff, 0xfe, 0x00])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["error"]["message"], "Invalid URL (POST /v1/unknown)");

    let r = client()
        .get(format!("{}/v1/chat/completions", srv.url()))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 405);
}

#[tokio::test]
async fn legacy_completions() {
    let srv = start(MockConfig {
        chunk_chars: 3,
        ..MockConfig::default()
    })
    .await;
    let v: Value = post(
        &srv,
        "/v1/completions",
        json!({"model":"gpt-3.5-turbo-instruct","prompt":MULTIBYTE}),
    )
    .await
    .json()
    .await
    .unwrap();
    assert_eq!(v["object"], "text_completion");
    assert!(v["id"].as_str().unwrap().starts_with("cmpl-"));
    assert_eq!(v["choices"][0]["text"], MULTIBYTE);
    assert!(v["usage"]["total_tokens"].as_u64().unwrap() > 0);

    let text = post(
        &srv,
        "/v1/completions",
        json!({"prompt":MULTIBYTE,"stream":true,"stream_options":{"include_usage":true}}),
    )
    .await
    .text()
    .await
    .unwrap();
    assert!(text.ends_with("data: [DONE]\n\n"));
    let ev = json_events(&text);
    let joined: String = ev
        .iter()
        .filter_map(|c| {
            c["choices"]
                .get(0)
                .map(|ch| ch["text"].as_str().unwrap().to_string())
        })
        .collect();
    assert_eq!(joined, MULTIBYTE);
    assert_eq!(ev[ev.len() - 2]["choices"][0]["finish_reason"], "stop");
    assert_eq!(ev.last().unwrap()["choices"], json!([]));
    assert!(
        ev.last().unwrap()["usage"]["completion_tokens"]
            .as_u64()
            .unwrap()
            > 0
    );
}

#[tokio::test]
async fn responses_non_stream_and_stream() {
    let srv = start(MockConfig {
        chunk_chars: 2,
        ..MockConfig::default()
    })
    .await;
    let v: Value = post(
        &srv,
        "/v1/responses",
        json!({"model":"gpt-4.1","input":MULTIBYTE}),
    )
    .await
    .json()
    .await
    .unwrap();
    assert_eq!(v["object"], "response");
    assert_eq!(v["status"], "completed");
    assert!(v["id"].as_str().unwrap().starts_with("resp_"));
    let out = &v["output"][0];
    assert_eq!(out["type"], "message");
    assert_eq!(out["role"], "assistant");
    assert_eq!(out["content"][0]["type"], "output_text");
    assert_eq!(out["content"][0]["text"], MULTIBYTE);
    assert_eq!(out["content"][0]["annotations"], json!([]));
    let u = &v["usage"];
    assert_eq!(
        u["total_tokens"].as_u64().unwrap(),
        u["input_tokens"].as_u64().unwrap() + u["output_tokens"].as_u64().unwrap()
    );

    let body = json!({"model":"gpt-4.1","stream":true,"input":[
        {"role":"user","content":[{"type":"input_text","text":"ignored"}]},
        {"role":"assistant","content":"x"},
        {"type":"message","role":"user","content":[{"type":"input_text","text":MULTIBYTE}]}]});
    let text = post(&srv, "/v1/responses", body)
        .await
        .text()
        .await
        .unwrap();
    assert!(!text.contains("[DONE]"));
    let events = parse_sse(&text);
    let mut names: Vec<String> = vec![];
    let mut deltas = String::new();
    for (i, (name, data)) in events.iter().enumerate() {
        let name = name.clone().expect("event line");
        let v: Value = serde_json::from_str(data).unwrap();
        assert_eq!(v["type"], name.as_str());
        assert_eq!(v["sequence_number"], i as u64);
        if name == "response.output_text.delta" {
            assert!(v["item_id"].as_str().unwrap().starts_with("msg_"));
            assert_eq!(v["output_index"], 0);
            assert_eq!(v["content_index"], 0);
            deltas.push_str(v["delta"].as_str().unwrap());
        }
        if name == "response.output_text.done" {
            assert_eq!(v["text"], MULTIBYTE);
        }
        if name == "response.completed" {
            assert_eq!(v["response"]["output"][0]["content"][0]["text"], MULTIBYTE);
            assert!(v["response"]["usage"]["output_tokens"].as_u64().unwrap() > 0);
        }
        if names.last() != Some(&name) {
            names.push(name);
        }
    }
    assert_eq!(deltas, MULTIBYTE);
    assert_eq!(
        names,
        [
            "response.created",
            "response.in_progress",
            "response.output_item.added",
            "response.content_part.added",
            "response.output_text.delta",
            "response.output_text.done",
            "response.content_part.done",
            "response.output_item.done",
            "response.completed"
        ]
    );
}

#[tokio::test]
async fn embeddings_models_messages() {
    let srv = start(MockConfig::default()).await;
    let v: Value = post(
        &srv,
        "/v1/embeddings",
        json!({"model":"text-embedding-3-small","input":["a","b"],"encoding_format":"base64"}),
    )
    .await
    .json()
    .await
    .unwrap();
    assert_eq!(v["object"], "list");
    assert_eq!(v["data"].as_array().unwrap().len(), 2);
    assert_eq!(v["data"][1]["object"], "embedding");
    assert!(v["data"][0]["embedding"].is_string());

    let v: Value = client()
        .get(format!("{}/v1/models", srv.url()))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(v["object"], "list");
    assert_eq!(v["data"][0]["id"], "mock-gpt");
    assert_eq!(v["data"][0]["object"], "model");
    let v: Value = client()
        .get(format!("{}/v1/models/gpt-x", srv.url()))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(v["id"], "gpt-x");

    let v: Value = post(
        &srv,
        "/v1/messages",
        json!({"model":"claude-x","max_tokens":5,"messages":[{"role":"user","content":MULTIBYTE}]}),
    )
    .await
    .json()
    .await
    .unwrap();
    assert_eq!(v["type"], "message");
    assert_eq!(v["content"][0]["text"], MULTIBYTE);
    assert_eq!(v["stop_reason"], "end_turn");
    let text = post(&srv, "/v1/messages", json!({"model":"claude-x","max_tokens":5,"stream":true,"messages":[{"role":"user","content":MULTIBYTE}]}))
        .await
        .text()
        .await
        .unwrap();
    let joined: String = parse_sse(&text)
        .iter()
        .filter(|(n, _)| n.as_deref() == Some("content_block_delta"))
        .map(|(_, d)| {
            serde_json::from_str::<Value>(d).unwrap()["delta"]["text"]
                .as_str()
                .unwrap()
                .to_string()
        })
        .collect();
    assert_eq!(joined, MULTIBYTE);
    assert!(text.ends_with("event: message_stop\ndata: {\"type\":\"message_stop\"}\n\n"));

    // Anthropic-shaped errors on the messages route.
    let r = client()
        .post(format!("{}/v1/messages", srv.url()))
        .header("x-mock-status", "529")
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 529);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["error"]["type"], "overloaded_error");
}

#[tokio::test]
async fn status_faults_sticky_header_and_fail_first() {
    let srv = start(MockConfig::default()).await;
    let chat = json!({"messages":[{"role":"user","content":"hi"}]});
    srv.set_fault(Some(Fault::Status(429)));
    let r = post(&srv, "/v1/chat/completions", chat.clone()).await;
    assert_eq!(r.status(), 429);
    assert_eq!(r.headers()["retry-after"], "1");
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["error"]["code"], "rate_limit_exceeded");
    srv.set_fault(None);
    assert_eq!(
        post(&srv, "/v1/chat/completions", chat.clone())
            .await
            .status(),
        200
    );

    let r = client()
        .post(format!("{}/v1/chat/completions", srv.url()))
        .header("x-mock-status", "503")
        .json(&chat)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 503);
    assert_eq!(
        r.json::<Value>().await.unwrap()["error"]["type"],
        "server_error"
    );

    srv.set_fault(Some(Fault::FailFirst { n: 2, status: 502 }));
    let mut statuses = vec![];
    for _ in 0..4 {
        statuses.push(
            post(&srv, "/v1/chat/completions", chat.clone())
                .await
                .status()
                .as_u16(),
        );
    }
    assert_eq!(statuses, [502, 502, 200, 200]);

    // Same through the control API.
    let r = client()
        .post(format!("{}/mock/fault", srv.url()))
        .json(&json!({"fail_first":{"n":1,"status":500}}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(
        post(&srv, "/v1/chat/completions", chat.clone())
            .await
            .status(),
        500
    );
    assert_eq!(
        post(&srv, "/v1/chat/completions", chat.clone())
            .await
            .status(),
        200
    );
    client()
        .post(format!("{}/mock/fault", srv.url()))
        .json(&json!({"status":500}))
        .send()
        .await
        .unwrap();
    assert_eq!(
        post(&srv, "/v1/chat/completions", chat.clone())
            .await
            .status(),
        500
    );
    client()
        .post(format!("{}/mock/fault", srv.url()))
        .json(&json!({"clear":true}))
        .send()
        .await
        .unwrap();
    assert_eq!(
        post(&srv, "/v1/chat/completions", chat.clone())
            .await
            .status(),
        200
    );
    let r = client()
        .post(format!("{}/mock/fault", srv.url()))
        .json(&json!({"nope":1}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
}

/// Reads a response until EOF or error; returns (bytes, saw_error).
async fn read_all(mut r: reqwest::Response) -> (Vec<u8>, bool) {
    let mut out = vec![];
    loop {
        match r.chunk().await {
            Ok(Some(c)) => out.extend_from_slice(&c),
            Ok(None) => return (out, false),
            Err(_) => return (out, true),
        }
    }
}

#[tokio::test]
async fn drop_mid_stream() {
    let srv = start(MockConfig {
        chunk_chars: 1,
        ..MockConfig::default()
    })
    .await;
    let body = json!({"messages":[{"role":"user","content":"abcdefghij"}],"stream":true});
    srv.set_fault(Some(Fault::DropMidStream { after_events: 3 }));
    let r = post(&srv, "/v1/chat/completions", body.clone()).await;
    assert_eq!(r.status(), 200);
    let (bytes, err) = read_all(r).await;
    assert!(err, "abrupt close must surface as a body error");
    let text = String::from_utf8(bytes).unwrap();
    assert!(!text.contains("[DONE]"));
    assert_eq!(parse_sse(&text).len(), 3);

    // Per-request header on a non-stream body: headers + half the body, then close.
    srv.set_fault(None);
    let r = client()
        .post(format!("{}/v1/chat/completions", srv.url()))
        .header("x-mock-drop-after", "0")
        .json(&json!({"messages":[{"role":"user","content":"abcdefghij"}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let full: usize = r.content_length().unwrap() as usize;
    let (bytes, err) = read_all(r).await;
    assert!(err);
    assert_eq!(bytes.len(), full / 2);

    // Server still healthy afterwards.
    assert_eq!(post(&srv, "/v1/chat/completions", body).await.status(), 200);
}

fn gunzip(data: &[u8]) -> String {
    use std::io::Read;
    let mut s = String::new();
    flate2::read::GzDecoder::new(data)
        .read_to_string(&mut s)
        .unwrap();
    s
}

#[tokio::test]
async fn gzip_fault() {
    let srv = start(MockConfig::default()).await;
    srv.set_fault(Some(Fault::Gzip));
    let r = post(
        &srv,
        "/v1/chat/completions",
        json!({"messages":[{"role":"user","content":MULTIBYTE}]}),
    )
    .await;
    assert_eq!(r.headers()["content-encoding"], "gzip");
    let v: Value = serde_json::from_str(&gunzip(&r.bytes().await.unwrap())).unwrap();
    assert_eq!(v["choices"][0]["message"]["content"], MULTIBYTE);

    srv.set_fault(None);
    let r = client()
        .post(format!("{}/v1/chat/completions", srv.url()))
        .header("x-mock-gzip", "1")
        .json(&json!({"messages":[{"role":"user","content":MULTIBYTE}],"stream":true}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.headers()["content-encoding"], "gzip");
    let text = gunzip(&r.bytes().await.unwrap());
    assert!(text.ends_with("data: [DONE]\n\n"));
    let joined: String = json_events(&text)
        .iter()
        .map(|c| {
            c["choices"][0]["delta"]["content"]
                .as_str()
                .unwrap_or("")
                .to_string()
        })
        .collect();
    assert_eq!(joined, MULTIBYTE);
}

#[tokio::test]
async fn delay_hang_and_incremental_streaming() {
    let srv = start(MockConfig {
        chunk_chars: 1,
        chunk_delay_ms: 40,
        ..MockConfig::default()
    })
    .await;
    // Incremental: the first event arrives long before the last.
    let t0 = Instant::now();
    let mut r = post(
        &srv,
        "/v1/chat/completions",
        json!({"messages":[{"role":"user","content":"abcdefgh"}],"stream":true}),
    )
    .await;
    let first = r.chunk().await.unwrap().unwrap();
    let t_first = t0.elapsed();
    assert!(String::from_utf8_lossy(&first).starts_with("data: "));
    let mut rest = first.to_vec();
    while let Some(c) = r.chunk().await.unwrap() {
        rest.extend_from_slice(&c);
    }
    let t_all = t0.elapsed();
    assert!(t_all >= Duration::from_millis(40 * 10), "{t_all:?}");
    assert!(t_first < t_all / 2, "first={t_first:?} all={t_all:?}");
    assert!(String::from_utf8(rest)
        .unwrap()
        .ends_with("data: [DONE]\n\n"));

    // Delay before headers.
    let t0 = Instant::now();
    let r = client()
        .post(format!("{}/v1/chat/completions", srv.url()))
        .header("x-mock-delay-ms", "150")
        .json(&json!({"messages":[{"role":"user","content":"x"}]}))
        .send()
        .await
        .unwrap();
    assert!(t0.elapsed() >= Duration::from_millis(150));
    assert_eq!(r.status(), 200);

    // Hang: no answer within the client timeout; the request is still recorded.
    srv.clear();
    let res = reqwest::Client::builder()
        .timeout(Duration::from_millis(200))
        .build()
        .unwrap()
        .post(format!("{}/v1/chat/completions", srv.url()))
        .header("x-mock-hang", "1")
        .body("{}")
        .send()
        .await;
    assert!(res.unwrap_err().is_timeout());
    assert_eq!(srv.request_count(), 1);
}

#[tokio::test]
async fn recording() {
    let srv = start(MockConfig {
        max_recorded: 2,
        ..MockConfig::default()
    })
    .await;
    let body = json!({"messages":[{"role":"user","content":"secret-free text"}]});
    let r = client()
        .post(format!(
            "{}/v1/chat/completions?api-version=2024",
            srv.url()
        ))
        .header("Authorization", "Bearer sk-test")
        .header(
            "traceparent",
            "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
        )
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let recs = srv.requests();
    assert_eq!(recs.len(), 1);
    let rec = &recs[0];
    assert_eq!(rec.method, "POST");
    assert_eq!(rec.path, "/v1/chat/completions?api-version=2024");
    assert_eq!(rec.header("authorization"), Some("Bearer sk-test"));
    assert_eq!(
        rec.header("TraceParent"),
        Some("00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01")
    );
    assert!(rec
        .headers
        .iter()
        .all(|(n, _)| n.chars().all(|c| !c.is_ascii_uppercase())));
    assert_eq!(rec.json().unwrap(), body);

    // Control endpoints are not recorded; the JSON view carries body and base64.
    let v: Value = client()
        .get(format!("{}/mock/requests", srv.url()))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(v["count"], 1);
    assert_eq!(v["data"][0]["headers"]["authorization"], "Bearer sk-test");
    assert_eq!(
        serde_json::from_str::<Value>(v["data"][0]["body"].as_str().unwrap()).unwrap(),
        body
    );
    assert!(v["data"][0]["body_base64"].is_string());

    // Ring buffer keeps the newest `max_recorded`; the count keeps counting.
    for i in 0..3 {
        client()
            .get(format!("{}/v1/models/m{i}", srv.url()))
            .send()
            .await
            .unwrap();
    }
    assert_eq!(srv.request_count(), 4);
    let paths: Vec<String> = srv.requests().into_iter().map(|r| r.path).collect();
    assert_eq!(paths, ["/v1/models/m1", "/v1/models/m2"]);

    let r = client()
        .delete(format!("{}/mock/requests", srv.url()))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(srv.request_count(), 0);
    assert!(srv.requests().is_empty());
}

#[test]
fn spawn_thread_lifecycle_releases_port() {
    let srv = MockServer::spawn_thread("127.0.0.1:0", MockConfig::default()).unwrap();
    let addr = srv.addr;
    let c = reqwest::blocking::Client::new();
    // Hanging request on another thread must not block shutdown.
    let url = srv.url();
    let hung = std::thread::spawn(move || {
        reqwest::blocking::Client::new()
            .post(format!("{url}/v1/chat/completions"))
            .header("x-mock-hang", "1")
            .body("{}")
            .send()
            .map(|r| r.status().as_u16())
    });
    let v: Value = c
        .post(format!("{}/v1/chat/completions", srv.url()))
        .json(&json!({"messages":[{"role":"user","content":"hi"}]}))
        .send()
        .unwrap()
        .json()
        .unwrap();
    assert_eq!(v["choices"][0]["message"]["content"], "hi");
    while srv.request_count() < 2 {
        std::thread::sleep(Duration::from_millis(5));
    }
    let t0 = Instant::now();
    drop(srv);
    assert!(t0.elapsed() < Duration::from_secs(2));
    assert_eq!(hung.join().unwrap().unwrap(), 503);
    // Port is free again.
    let again = MockServer::spawn_thread(&addr.to_string(), MockConfig::default()).unwrap();
    assert_eq!(again.addr, addr);
}

#[tokio::test]
async fn config_defaults_and_unknown_keys() {
    let cfg: MockConfig = serde_json::from_value(json!({})).unwrap();
    assert_eq!(cfg, MockConfig::default());
    assert_eq!(cfg.listen, "127.0.0.1:18080");
    assert_eq!(cfg.chunk_chars, 4);
    assert_eq!(cfg.model, "mock-gpt");
    let cfg: MockConfig =
        serde_json::from_value(json!({"mode":"fixed","chunk_delay_ms":3})).unwrap();
    assert_eq!(cfg.mode, MockMode::Fixed);
    assert!(serde_json::from_value::<MockConfig>(json!({"bogus":1})).is_err());
}

#[tokio::test]
async fn many_concurrent_requests() {
    let srv = start(MockConfig {
        max_recorded: 0,
        ..MockConfig::default()
    })
    .await;
    let c = client();
    let mut tasks = vec![];
    for i in 0..200 {
        let c = c.clone();
        let url = format!("{}/v1/chat/completions", srv.url());
        tasks.push(tokio::spawn(async move {
            let stream = i % 2 == 0;
            let r = c
                .post(url)
                .json(&json!({"messages":[{"role":"user","content":format!("msg {i}")}],"stream":stream}))
                .send()
                .await
                .unwrap();
            assert_eq!(r.status(), 200);
            let t = r.text().await.unwrap();
            assert!(t.contains(&format!("msg {}", i)) || stream);
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    assert_eq!(srv.request_count(), 200);
    assert!(srv.requests().is_empty());
}

#[tokio::test]
async fn gzip_request_body_is_decoded_but_recorded_raw() {
    use std::io::Write;
    let srv = start(MockConfig::default()).await;
    let body = json!({"messages":[{"role":"user","content":"zipped"}]}).to_string();
    let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    enc.write_all(body.as_bytes()).unwrap();
    let gz = enc.finish().unwrap();
    let r = client()
        .post(format!("{}/v1/chat/completions", srv.url()))
        .header("content-type", "application/json")
        .header("content-encoding", "gzip")
        .body(gz.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["choices"][0]["message"]["content"], "zipped");
    assert_eq!(srv.requests()[0].body, gz);
}

#[tokio::test]
async fn sticky_delay_and_hang_faults() {
    let srv = start(MockConfig::default()).await;
    srv.set_fault(Some(Fault::Delay(Duration::from_millis(100))));
    let t0 = Instant::now();
    let r = post(&srv, "/v1/models", json!({})).await;
    // POST to /v1/models is 405, but only after the delay.
    assert_eq!(r.status(), 405);
    assert!(t0.elapsed() >= Duration::from_millis(100));

    srv.set_fault(Some(Fault::Hang));
    let res = reqwest::Client::builder()
        .timeout(Duration::from_millis(150))
        .build()
        .unwrap()
        .get(format!("{}/v1/models", srv.url()))
        .send()
        .await;
    assert!(res.unwrap_err().is_timeout());
    // Control endpoints are never faulted.
    let r = client()
        .get(format!("{}/mock/health", srv.url()))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
}

#[tokio::test]
async fn spawn_thread_from_inside_a_runtime() {
    let srv = MockServer::spawn_thread("127.0.0.1:0", MockConfig::default()).unwrap();
    let r = client()
        .get(format!("{}/v1/models", srv.url()))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    srv.shutdown();
    srv.shutdown(); // idempotent
    assert!(client()
        .get(format!("{}/v1/models", srv.url()))
        .send()
        .await
        .is_err());
}

#[tokio::test]
async fn oversized_body_is_413() {
    let srv = start(MockConfig {
        max_body_bytes: 64,
        ..MockConfig::default()
    })
    .await;
    let r = post(
        &srv,
        "/v1/chat/completions",
        json!({"messages":[{"role":"user","content":"x".repeat(100)}]}),
    )
    .await;
    assert_eq!(r.status(), 413);
    assert_eq!(
        r.json::<Value>().await.unwrap()["error"]["type"],
        "invalid_request_error"
    );
}

#[tokio::test]
async fn otlp_trace_exports_are_accepted_and_not_counted_as_traffic() {
    let srv = start(MockConfig::default()).await;
    let resp = client()
        .post(format!("{}/v1/traces", srv.url()))
        .header("content-type", "application/x-protobuf")
        .body(vec![0x0a, 0x00])
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(
        resp.headers()["content-type"],
        "application/x-protobuf",
        "an OTLP/HTTP response"
    );
    assert!(resp.bytes().await.unwrap().is_empty());
    assert_eq!(srv.request_count(), 0);
    // Anything else under /v1/traces is still the API's 404/405 shape.
    let get = client()
        .get(format!("{}/v1/traces", srv.url()))
        .send()
        .await
        .unwrap();
    assert_eq!(get.status(), 404);
}
