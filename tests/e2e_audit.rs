//! End-to-end tests of the tamper-evident audit log (issue "Tamper-evident audit log off the
//! critical path, with verification, retention and data-subject requests") with the real binary:
//! one record per request without raw PII/secrets/caller keys, `jimini audit verify` on clean and
//! tampered logs (edited / deleted / reordered), kill -9 under load and torn tails, restarts that
//! keep the chain, data-subject export/erasure (CLI and admin API), audited admin actions, the
//! admin verify endpoint, and block-mode back-pressure with dead letter + `jimini audit replay`.
mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::gen::*;
use common::harness::*;
use jimini::mock::{MockConfig, MockServer};
use rand::Rng;
use serde_json::{json, Value};

// ------------------------------------------------------------------------------------------
// helpers

/// A fresh request id (the proxy adopts a well-formed `x-request-id`), so records map to requests.
fn rid(tag: &str) -> String {
    format!("e2e-{tag}-{}", rand_alnum(16))
}

fn chat_body(model: &str, text: &str) -> Value {
    json!({"model": model, "messages": [{"role": "user", "content": text}]})
}

/// POST /v1/chat/completions; returns (status, headers, full body).
fn chat(
    j: &Jimini,
    request_id: &str,
    body: &Value,
    headers: &[(&str, &str)],
) -> (u16, reqwest::header::HeaderMap, String) {
    let mut rb = Jimini::client()
        .post(j.url("/v1/chat/completions"))
        .header("x-request-id", request_id)
        .json(body);
    for (k, v) in headers {
        rb = rb.header(*k, *v);
    }
    let r = rb.send().expect("request to the proxy");
    let status = r.status().as_u16();
    let h = r.headers().clone();
    (status, h, r.text().unwrap_or_default())
}

struct CliOut {
    code: i32,
    stdout: String,
    stderr: String,
}

fn cli<S: AsRef<std::ffi::OsStr>>(args: &[S]) -> CliOut {
    let out = Command::new(env!("CARGO_BIN_EXE_jimini"))
        .args(args)
        .env("RUST_LOG", "warn")
        .output()
        .expect("run jimini");
    CliOut {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// `jimini audit verify DIR` → (exit code, JSON report, stderr summary).
fn verify(dir: &Path) -> (i32, Value, String) {
    let o = cli(&["audit".as_ref(), "verify".as_ref(), dir.as_os_str()]);
    let report: Value = serde_json::from_str(&o.stdout).unwrap_or_else(|e| {
        panic!(
            "verify printed no JSON report ({e}); exit {}; stdout:\n{}\nstderr:\n{}",
            o.code, o.stdout, o.stderr
        )
    });
    (o.code, report, o.stderr)
}

fn assert_verifies(dir: &Path) -> Value {
    let (code, report, err) = verify(dir);
    assert_eq!(code, 0, "verify failed: {err}\n{report:#}");
    assert_eq!(report["ok"], true, "{report:#}");
    assert!(report["first_break"].is_null(), "{report:#}");
    report
}

/// `jimini audit export --subject ID --dir DIR` → one JSON record per line.
fn cli_export(dir: &Path, subject: &str) -> Vec<Value> {
    let o = cli(&[
        "audit".as_ref(),
        "export".as_ref(),
        "--subject".as_ref(),
        subject.as_ref(),
        "--dir".as_ref(),
        dir.as_os_str(),
    ]);
    assert_eq!(o.code, 0, "export failed: {}", o.stderr);
    o.stdout
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).expect("export line is JSON"))
        .collect()
}

/// An admin JWT with a chosen `sub`.
fn token_for(j: &Jimini, role: &str, sub: &str) -> String {
    let o = cli(&[
        "token".as_ref(),
        "-c".as_ref(),
        j.config_path.as_os_str(),
        "--role".as_ref(),
        role.as_ref(),
        "--ttl".as_ref(),
        "10m".as_ref(),
        "--sub".as_ref(),
        sub.as_ref(),
    ]);
    assert_eq!(o.code, 0, "{}", o.stderr);
    o.stdout.trim().to_string()
}

/// One stored audit line.
#[derive(Clone, Debug)]
struct Rec {
    file: String,
    /// 1-based.
    line: usize,
    v: Value,
}

impl Rec {
    fn kind(&self) -> &str {
        self.v["kind"].as_str().unwrap_or("")
    }
    fn seq(&self) -> u64 {
        self.v["seq"].as_u64().expect("seq")
    }
    fn rid(&self) -> &str {
        self.v["request_id"].as_str().unwrap_or("")
    }
}

/// Log files of an audit directory in chain order (by their running number).
fn segments(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<(u64, PathBuf)> = std::fs::read_dir(dir)
        .unwrap()
        .filter_map(|e| {
            let p = e.unwrap().path();
            let name = p.file_name()?.to_str()?.to_string();
            let rest = name.strip_prefix("audit-")?.strip_suffix(".jsonl")?;
            let no = rest.split_once('-')?.1.parse().ok()?;
            Some((no, p))
        })
        .collect();
    v.sort();
    v.into_iter().map(|(_, p)| p).collect()
}

/// Every complete line of every log file, parsed.
fn records(dir: &Path) -> Vec<Rec> {
    let mut out = Vec::new();
    for p in segments(dir) {
        let text = std::fs::read_to_string(&p).unwrap();
        let file = p.file_name().unwrap().to_str().unwrap().to_string();
        let complete = match text.rfind('\n') {
            Some(i) => &text[..=i],
            None => "",
        };
        for (i, l) in complete.lines().enumerate() {
            let v: Value = serde_json::from_str(l)
                .unwrap_or_else(|e| panic!("{file}:{}: not JSON ({e}): {l}", i + 1));
            out.push(Rec {
                file: file.clone(),
                line: i + 1,
                v,
            });
        }
    }
    out
}

fn of_kind(recs: &[Rec], kind: &str) -> Vec<Rec> {
    recs.iter().filter(|r| r.kind() == kind).cloned().collect()
}

/// Poll the directory until `done` holds (records are written by a background thread).
fn wait_records(dir: &Path, what: &str, done: impl Fn(&[Rec]) -> bool) -> Vec<Rec> {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let recs = records(dir);
        if done(&recs) {
            return recs;
        }
        if Instant::now() > deadline {
            panic!(
                "timed out waiting for {what}; {} records on disk, last: {:?}",
                recs.len(),
                recs.last().map(|r| &r.v)
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Records of these request ids, once every one of them is on disk.
fn wait_requests(dir: &Path, ids: &BTreeSet<String>) -> Vec<Rec> {
    wait_records(dir, &format!("{} request records", ids.len()), |recs| {
        let seen: BTreeSet<&str> = recs
            .iter()
            .filter(|r| r.kind() == "request")
            .map(|r| r.rid())
            .collect();
        ids.iter().all(|id| seen.contains(id.as_str()))
    })
}

/// All bytes of all files below `dir` (log files, meta, dead letter, anything left behind).
fn dir_bytes(dir: &Path) -> Vec<u8> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            out.extend(dir_bytes(&p));
        } else {
            out.extend(std::fs::read(&p).unwrap());
            out.push(b'\n');
        }
    }
    out
}

fn contains(hay: &[u8], needle: &str) -> bool {
    hay.windows(needle.len()).any(|w| w == needle.as_bytes())
}

fn assert_not_in_dir(dir: &Path, secrets: &[(&str, &str)]) {
    let bytes = dir_bytes(dir);
    for (what, s) in secrets {
        assert!(
            !contains(&bytes, s),
            "{what} `{s}` found in the audit files"
        );
    }
}

fn is_caller_hash(v: &Value) -> bool {
    v.as_str().is_some_and(|s| {
        s.len() == 69
            && s.starts_with("sha3:")
            && s[5..]
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    })
}

fn admin_get(j: &Jimini, path: &str, token: Option<&str>) -> (u16, Value) {
    let mut rb = Jimini::client().get(j.admin_url(path));
    if let Some(t) = token {
        rb = rb.bearer_auth(t);
    }
    let r = rb.send().unwrap();
    let s = r.status().as_u16();
    (s, r.json().unwrap_or(Value::Null))
}

fn admin_post(j: &Jimini, path: &str, token: Option<&str>, body: &Value) -> (u16, Value) {
    let mut rb = Jimini::client().post(j.admin_url(path)).json(body);
    if let Some(t) = token {
        rb = rb.bearer_auth(t);
    }
    let r = rb.send().unwrap();
    let s = r.status().as_u16();
    (s, r.json().unwrap_or(Value::Null))
}

/// Copy the files of an audit directory (flat) into a new temp dir.
fn copy_dir(src: &Path) -> tempfile::TempDir {
    let t = tempfile::tempdir().unwrap();
    for e in std::fs::read_dir(src).unwrap() {
        let p = e.unwrap().path();
        if p.is_file() {
            std::fs::copy(&p, t.path().join(p.file_name().unwrap())).unwrap();
        }
    }
    t
}

/// Seqs of all records must be exactly 0, 1, 2, … with a single genesis at seq 0.
fn assert_consecutive(recs: &[Rec]) {
    for (i, r) in recs.iter().enumerate() {
        assert_eq!(r.seq(), i as u64, "{}:{}: {}", r.file, r.line, r.v);
    }
    assert_eq!(recs.first().map(|r| r.kind()), Some("genesis"));
    assert_eq!(of_kind(recs, "genesis").len(), 1);
}

fn start_on(audit_dir: &Path, extra_yaml: &str) -> Jimini {
    Jimini::start(Options {
        audit_dir: Some(audit_dir.to_path_buf()),
        extra_yaml: extra_yaml.to_string(),
        ..Default::default()
    })
}

/// Send `n` allowed chat requests; returns their ids.
fn allowed_traffic(j: &Jimini, n: usize, tag: &str) -> BTreeSet<String> {
    let mut ids = BTreeSet::new();
    for _ in 0..n {
        let id = rid(tag);
        let (s, _, body) = chat(j, &id, &chat_body("mock-gpt", &words(4)), &[]);
        assert_eq!(s, 200, "{body}");
        ids.insert(id);
    }
    ids
}

// ------------------------------------------------------------------------------------------
// one record per request, the fields it carries, and what it never carries

#[test]
fn mixed_traffic_one_record_per_request_with_decision_fields_and_no_raw_secrets() {
    let alice = format!("team{}", rand_lower(8));
    let bob = format!("team{}", rand_lower(8));
    let alice_key = format!("jk-{}", rand_alnum(24));
    let bob_key = format!("jk-{}", rand_alnum(24));
    let mock = MockServer::spawn_thread(
        "127.0.0.1:0",
        MockConfig {
            enabled: true,
            listen: "127.0.0.1:0".into(),
            ..Default::default()
        },
    )
    .unwrap();
    let upstreams = format!(
        "upstreams:\n  - name: mock\n    base_url: {}\n    models: [\"mock-*\"]\n",
        mock.url()
    );
    let j = Jimini::start_with_mock(
        Options {
            upstreams_yaml: Some(upstreams),
            extra_yaml: format!(
                "callers:\n  require_key: true\n  keys_env: E2E_AUDIT_KEYS\nlimits:\n  callers:\n    {bob}: {{rpm: 2}}\n"
            ),
            env: vec![(
                "E2E_AUDIT_KEYS".into(),
                format!("{alice}={alice_key},{bob}={bob_key}"),
            )],
            ..Default::default()
        },
        mock,
    );
    let a_auth = format!("Bearer {alice_key}");
    let b_auth = format!("Bearer {bob_key}");
    let a = [("authorization", a_auth.as_str())];
    let b = [("authorization", b_auth.as_str())];

    // (request id, expected class) for every request sent.
    let mut sent: Vec<(String, &str)> = Vec::new();
    let mut secrets: Vec<(&str, String)> = vec![
        ("caller key", alice_key.clone()),
        ("caller key", bob_key.clone()),
        ("caller name", alice.clone()),
        ("caller name", bob.clone()),
    ];
    let mut rng = rand::rng();

    for _ in 0..rng.random_range(2..5) {
        let id = rid("allow");
        let text = words(5);
        let (s, _, body) = chat(&j, &id, &chat_body("mock-gpt", &text), &a);
        assert_eq!(s, 200, "{body}");
        secrets.push(("prompt text", text));
        sent.push((id, "allow"));
    }
    {
        // streamed
        let id = rid("stream");
        let text = words(5);
        let mut body = chat_body("mock-gpt", &text);
        body["stream"] = json!(true);
        let (s, _, body) = chat(&j, &id, &body, &a);
        assert_eq!(s, 200, "{body}");
        assert!(body.contains("[DONE]"), "{body}");
        secrets.push(("prompt text", text));
        sent.push((id, "stream"));
    }
    {
        // non-chat route
        let id = rid("models");
        let r = Jimini::client()
            .get(j.url("/v1/models"))
            .header("x-request-id", &id)
            .header("authorization", &a_auth)
            .send()
            .unwrap();
        assert_eq!(r.status(), 200);
        sent.push((id, "models"));
    }
    for _ in 0..rng.random_range(2..5) {
        let id = rid("redact");
        let email = random_email();
        let (s, _, body) = chat(
            &j,
            &id,
            &chat_body("mock-gpt", &format!("{} {email} {}", words(2), words(2))),
            &a,
        );
        assert_eq!(s, 200, "{body}");
        assert!(
            !body.contains(&email),
            "the echo came back unmasked: {body}"
        );
        secrets.push(("email", email));
        sent.push((id, "redact"));
    }
    for _ in 0..rng.random_range(2..5) {
        let id = rid("block");
        let key = openai_key();
        let (s, _, body) = chat(
            &j,
            &id,
            &chat_body("mock-gpt", &format!("my key is {key} ok")),
            &a,
        );
        assert_eq!(s, 403, "{body}");
        secrets.push(("secret", key));
        sent.push((id, "block"));
    }
    for _ in 0..rng.random_range(1..4) {
        let id = rid("egress");
        let model = format!("gpt-{}", rand_lower(6));
        let (s, _, body) = chat(&j, &id, &chat_body(&model, &words(3)), &a);
        assert_eq!(s, 403, "{body}");
        sent.push((id, "egress"));
    }
    for i in 0..4 {
        let id = rid("bob");
        let (s, _, body) = chat(&j, &id, &chat_body("mock-gpt", &words(3)), &b);
        if i < 2 {
            assert_eq!(s, 200, "{body}");
            sent.push((id, "bob-ok"));
        } else {
            assert_eq!(s, 429, "{body}");
            sent.push((id, "bob-429"));
        }
    }
    {
        let id = rid("unauth");
        let wrong = format!("jk-{}", rand_alnum(24));
        let (s, _, body) = chat(
            &j,
            &id,
            &chat_body("mock-gpt", &words(3)),
            &[("authorization", &format!("Bearer {wrong}"))],
        );
        assert_eq!(s, 401, "{body}");
        secrets.push(("unknown caller key", wrong));
        sent.push((id, "unauth"));
    }

    let ids: BTreeSet<String> = sent.iter().map(|(i, _)| i.clone()).collect();
    let recs = wait_requests(&j.audit_dir, &ids);
    let reqs = of_kind(&recs, "request");
    // Exactly one record per request sent, and no others.
    assert_eq!(
        reqs.len(),
        sent.len(),
        "request records: {:?}",
        reqs.iter().map(|r| r.rid()).collect::<Vec<_>>()
    );
    let by_id: BTreeMap<&str, &Rec> = reqs.iter().map(|r| (r.rid(), r)).collect();
    assert_eq!(by_id.len(), sent.len(), "duplicate request ids in the log");

    let mut alice_hash = None;
    let mut bob_hash = None;
    for (id, class) in &sent {
        let r: &Rec = by_id
            .get(id.as_str())
            .copied()
            .unwrap_or_else(|| panic!("no record for {id}"));
        let v = &r.v;
        let ctx = format!("{class} {}:{}: {v}", r.file, r.line);
        assert!(v["latency_ms"].is_u64(), "{ctx}");
        assert!(v["ts"].as_str().is_some_and(|t| t.ends_with('Z')), "{ctx}");
        assert!(v["rules"].is_array() && v["findings"].is_object(), "{ctx}");
        assert_eq!(v["shadow"], false, "{ctx}");
        let route = if *class == "models" { "models" } else { "chat" };
        assert_eq!(v["route"], route, "{ctx}");
        match *class {
            "unauth" => {
                assert_eq!(v["status"], 401, "{ctx}");
                assert!(v.get("caller").is_none(), "{ctx}");
                assert!(v.get("upstream_latency_ms").is_none(), "{ctx}");
            }
            "bob-ok" | "bob-429" => {
                assert!(is_caller_hash(&v["caller"]), "{ctx}");
                let h = v["caller"].as_str().unwrap().to_string();
                assert_eq!(bob_hash.get_or_insert(h.clone()), &h, "{ctx}");
                if *class == "bob-ok" {
                    assert_eq!(v["status"], 200, "{ctx}");
                    assert_eq!(v["decision"], "allow", "{ctx}");
                } else {
                    assert_eq!(v["status"], 429, "{ctx}");
                    assert!(v.get("upstream_latency_ms").is_none(), "{ctx}");
                }
            }
            _ => {
                assert!(is_caller_hash(&v["caller"]), "{ctx}");
                let h = v["caller"].as_str().unwrap().to_string();
                assert_eq!(alice_hash.get_or_insert(h.clone()), &h, "{ctx}");
            }
        }
        match *class {
            "allow" | "stream" => {
                assert_eq!(v["status"], 200, "{ctx}");
                assert_eq!(v["decision"], "allow", "{ctx}");
                assert_eq!(v["model"], "mock-gpt", "{ctx}");
                assert_eq!(v["upstream"], "mock", "{ctx}");
                assert_eq!(v["rules"], json!([]), "{ctx}");
                assert_eq!(v["findings"], json!({}), "{ctx}");
                let up = v["upstream_latency_ms"].as_u64().expect(&ctx);
                assert!(up <= v["latency_ms"].as_u64().unwrap(), "{ctx}");
                if *class == "allow" {
                    let u = &v["usage"];
                    let (p, c, t) = (
                        u["prompt"].as_u64().expect(&ctx),
                        u["completion"].as_u64().expect(&ctx),
                        u["total"].as_u64().expect(&ctx),
                    );
                    assert!(t > 0 && t == p + c, "{ctx}");
                }
            }
            "models" => {
                assert_eq!(v["status"], 200, "{ctx}");
                assert_eq!(v["decision"], "allow", "{ctx}");
                assert_eq!(v["upstream"], "mock", "{ctx}");
            }
            "redact" => {
                assert_eq!(v["status"], 200, "{ctx}");
                assert_eq!(v["decision"], "redact", "{ctx}");
                assert_eq!(v["model"], "mock-gpt", "{ctx}");
                assert_eq!(v["upstream"], "mock", "{ctx}");
                assert!(
                    v["rules"]
                        .as_array()
                        .unwrap()
                        .iter()
                        .any(|r| r.as_str().unwrap().contains("email")),
                    "{ctx}"
                );
                let n: u64 = v["findings"]
                    .as_object()
                    .unwrap()
                    .iter()
                    .filter(|(k, _)| k.contains("email"))
                    .map(|(_, n)| n.as_u64().unwrap())
                    .sum();
                assert!(n >= 1, "{ctx}");
            }
            "block" => {
                assert_eq!(v["status"], 403, "{ctx}");
                assert_eq!(v["decision"], "block", "{ctx}");
                assert_eq!(v["model"], "mock-gpt", "{ctx}");
                assert!(
                    v["rules"]
                        .as_array()
                        .unwrap()
                        .iter()
                        .any(|r| r.as_str().unwrap().contains("openai-key")),
                    "{ctx}"
                );
                assert!(!v["findings"].as_object().unwrap().is_empty(), "{ctx}");
            }
            "egress" => {
                assert_eq!(v["status"], 403, "{ctx}");
                assert_eq!(v["decision"], "block", "{ctx}");
                assert!(
                    v["rules"]
                        .as_array()
                        .unwrap()
                        .iter()
                        .any(|r| r.as_str().unwrap().contains("egress")),
                    "{ctx}"
                );
            }
            _ => {}
        }
    }
    assert_ne!(alice_hash, bob_hash);

    // Nothing raw anywhere in the directory: not the emails, secrets, caller keys or names, and not
    // the prompt text.
    let secrets: Vec<(&str, &str)> = secrets.iter().map(|(w, s)| (*w, s.as_str())).collect();
    assert_not_in_dir(&j.audit_dir, &secrets);

    // The chain verifies while the proxy runs, and the report counts every record.
    let report = assert_verifies(&j.audit_dir);
    assert_eq!(
        report["records"].as_u64(),
        Some(records(&j.audit_dir).len() as u64)
    );
}

// ------------------------------------------------------------------------------------------
// tampering

#[test]
fn verify_reports_edited_deleted_and_reordered_records_with_seq_file_and_line() {
    // Small files, so the chain spans several of them and the break must be reported in the
    // right one, at the right line.
    let mut j = Jimini::start(Options {
        audit_yaml: "  max_file_bytes: 4096\n".into(),
        ..Default::default()
    });
    let ids = allowed_traffic(&j, 30, "tamper");
    wait_requests(&j.audit_dir, &ids);
    j.stop();
    let clean = records(&j.audit_dir);
    assert!(segments(&j.audit_dir).len() >= 3, "expected rotation");
    // No caller keys, no declared name: anonymous, and no caller hash in the record.
    for r in clean.iter().filter(|r| r.kind() == "request") {
        assert!(r.v.get("caller").is_none(), "{}", r.v);
    }
    let report = assert_verifies(&j.audit_dir);

    // Without DIR, `./audit` (the shipped config's `audit.dir`) is the one verified.
    let cwd = tempfile::tempdir().unwrap();
    let copy = copy_dir(&j.audit_dir);
    std::fs::rename(copy.path(), cwd.path().join("audit")).unwrap();
    let verify_without_dir = |cwd: &Path| {
        Command::new(env!("CARGO_BIN_EXE_jimini"))
            .args(["audit", "verify"])
            .current_dir(cwd)
            .output()
            .unwrap()
    };
    let o = verify_without_dir(cwd.path());
    assert_eq!(
        o.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    let default_dir: Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(default_dir["records"], report["records"], "{default_dir:#}");
    assert_eq!(
        default_dir["head_hash"], report["head_hash"],
        "{default_dir:#}"
    );
    let empty = tempfile::tempdir().unwrap();
    let o = verify_without_dir(empty.path());
    assert_ne!(
        o.status.code(),
        Some(0),
        "no ./audit must not verify as clean"
    );

    // A random request record that is neither a file's first nor its last line.
    let last_line: BTreeMap<&str, usize> =
        clean.iter().map(|r| (r.file.as_str(), r.line)).collect();
    let candidates: Vec<&Rec> = clean
        .iter()
        .filter(|r| r.kind() == "request" && r.line > 1 && r.line < last_line[r.file.as_str()])
        .collect();
    assert!(candidates.len() > 10);
    let victim = candidates[rand::rng().random_range(0..candidates.len())].clone();
    let file_of = |dir: &Path| dir.join(&victim.file);
    let lines_of = |dir: &Path| -> Vec<String> {
        std::fs::read_to_string(file_of(dir))
            .unwrap()
            .lines()
            .map(str::to_string)
            .collect()
    };
    let write_lines = |dir: &Path, lines: &[String]| {
        let mut s = lines.join("\n");
        s.push('\n');
        std::fs::write(file_of(dir), s).unwrap();
    };
    let expect_break = |dir: &Path, reason: &str| {
        let (code, report, summary) = verify(dir);
        assert_eq!(code, 1, "{reason}: verify must fail\n{report:#}");
        assert_eq!(report["ok"], false, "{report:#}");
        let b = &report["first_break"];
        assert_eq!(b["reason"], reason, "{report:#}");
        assert_eq!(b["seq"].as_u64(), Some(victim.seq()), "{report:#}");
        assert_eq!(b["file"], victim.file.as_str(), "{report:#}");
        assert_eq!(b["line"].as_u64(), Some(victim.line as u64), "{report:#}");
        // The records before the break still count as verified.
        assert_eq!(report["records"].as_u64(), Some(victim.seq()), "{report:#}");
        assert!(
            summary.contains(&format!("seq {}", victim.seq())) && summary.contains(reason),
            "{summary}"
        );
    };

    // 1. one byte of a field edited in place (the request id value; JSON stays valid)
    let d = copy_dir(&j.audit_dir);
    let mut bytes = std::fs::read(file_of(d.path())).unwrap();
    let line_start: usize = {
        let text = String::from_utf8(bytes.clone()).unwrap();
        text.lines()
            .take(victim.line - 1)
            .map(|l| l.len() + 1)
            .sum()
    };
    let needle = format!("\"request_id\":\"{}", victim.rid());
    let line_text = String::from_utf8(bytes[line_start..].to_vec()).unwrap();
    let at = line_start + line_text.find(&needle).unwrap() + needle.len() - 3;
    bytes[at] = if bytes[at] == b'x' { b'y' } else { b'x' };
    std::fs::write(file_of(d.path()), &bytes).unwrap();
    expect_break(d.path(), "edited");

    // 2. a line deleted
    let d = copy_dir(&j.audit_dir);
    let mut lines = lines_of(d.path());
    lines.remove(victim.line - 1);
    write_lines(d.path(), &lines);
    expect_break(d.path(), "deleted");

    // 3. two lines swapped (the victim and the record after it)
    let d = copy_dir(&j.audit_dir);
    let mut lines = lines_of(d.path());
    lines.swap(victim.line - 1, victim.line);
    write_lines(d.path(), &lines);
    expect_break(d.path(), "reordered");

    // 4. a whole file in the middle removed: the next file's header is where the gap shows
    let d = copy_dir(&j.audit_dir);
    let segs = segments(d.path());
    let gone = segs.len() / 2;
    let gone_first = clean
        .iter()
        .find(|r| r.file == segs[gone].file_name().unwrap().to_str().unwrap())
        .unwrap()
        .seq();
    std::fs::remove_file(&segs[gone]).unwrap();
    let (code, report, _) = verify(d.path());
    assert_eq!(code, 1, "{report:#}");
    let b = &report["first_break"];
    assert_eq!(b["reason"], "deleted", "{report:#}");
    assert_eq!(b["seq"].as_u64(), Some(gone_first), "{report:#}");
    assert_eq!(
        b["file"],
        segs[gone + 1].file_name().unwrap().to_str().unwrap(),
        "{report:#}"
    );
    assert_eq!(b["line"], 1, "{report:#}");

    // Control: an untouched copy verifies.
    let d = copy_dir(&j.audit_dir);
    assert_verifies(d.path());
}

// ------------------------------------------------------------------------------------------
// kill -9 under load, torn tails, restarts

/// What a kill -9 under load left behind.
struct Kill9 {
    _keep: tempfile::TempDir,
    audit_dir: PathBuf,
    /// Every request id a client started to send, in order per thread.
    sent: Vec<Vec<String>>,
    /// Request ids whose complete 200 response a client read.
    completed: Vec<String>,
    /// Complete lines of the log files right after the kill (before any restart).
    lines_after_kill: Vec<String>,
    /// The newest file ended inside a line after the kill.
    torn_after_kill: bool,
}

const LOAD_THREADS: usize = 4;

/// Client threads send requests until the proxy dies under them; the proxy is SIGKILLed once
/// `min_completed` responses were read completely.
fn kill9_under_load(min_completed: usize, audit_yaml: &str) -> Kill9 {
    let keep = tempfile::tempdir().unwrap();
    let audit_dir = keep.path().join("audit");
    let mut j = Jimini::start(Options {
        audit_dir: Some(audit_dir.to_path_buf()),
        audit_yaml: audit_yaml.to_string(),
        ..Default::default()
    });
    let url = j.url("/v1/chat/completions");
    let completed_n = Arc::new(AtomicUsize::new(0));
    let mut handles = Vec::new();
    for t in 0..LOAD_THREADS {
        let (completed_n, url) = (completed_n.clone(), url.clone());
        handles.push(std::thread::spawn(move || {
            let client = reqwest::blocking::Client::builder()
                .timeout(Duration::from_secs(10))
                .build()
                .unwrap();
            let (mut sent, mut done) = (Vec::new(), Vec::new());
            let deadline = Instant::now() + Duration::from_secs(25);
            // Runs until the proxy is gone (the first failed request) or the deadline.
            while Instant::now() < deadline {
                let id = rid(&format!("load{t}"));
                sent.push(id.clone());
                let r = client
                    .post(&url)
                    .header("x-request-id", &id)
                    .json(&chat_body("mock-gpt", &words(6)))
                    .send();
                // Completed = status line, headers and the whole body were read.
                match r.map(|r| (r.status(), r.text())) {
                    Ok((s, Ok(body))) if s == 200 && body.contains("choices") => {
                        completed_n.fetch_add(1, Ordering::SeqCst);
                        done.push(id);
                    }
                    _ => break,
                }
            }
            (sent, done)
        }));
    }
    let deadline = Instant::now() + Duration::from_secs(20);
    while completed_n.load(Ordering::SeqCst) < min_completed && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(2));
    }
    j.kill9();
    let mut sent = Vec::new();
    let mut completed = Vec::new();
    for h in handles {
        let (s, d) = h.join().unwrap();
        sent.push(s);
        completed.extend(d);
    }
    assert!(
        completed.len() >= min_completed,
        "load did not get going: {} completed",
        completed.len()
    );
    drop(j);
    let mut lines_after_kill = Vec::new();
    let mut torn_after_kill = false;
    for p in segments(&audit_dir) {
        let text = std::fs::read_to_string(&p).unwrap();
        torn_after_kill = !text.is_empty() && !text.ends_with('\n');
        let complete = &text[..text.rfind('\n').map_or(0, |i| i + 1)];
        lines_after_kill.extend(complete.lines().map(str::to_string));
    }
    Kill9 {
        _keep: keep,
        audit_dir,
        sent,
        completed,
        lines_after_kill,
        torn_after_kill,
    }
}

#[test]
fn kill9_under_load_then_restart_on_same_dir_verifies_and_keeps_chaining() {
    let k = kill9_under_load(60, "");
    let sent_n: usize = k.sent.iter().map(Vec::len).sum();
    let sent_ids: BTreeSet<&str> = k.sent.iter().flatten().map(String::as_str).collect();

    // A new proxy on the same directory (the first one's, kept alive by `k`) recovers the chain;
    // a torn last line, if the kill left one, is sealed.
    let mut j2 = start_on(&k.audit_dir, "");
    let report = assert_verifies(&k.audit_dir);
    assert_eq!(
        report["sealed_tears"].as_u64(),
        Some(u64::from(k.torn_after_kill)),
        "{report:#}"
    );
    // Recovery keeps every complete record the crash left, byte for byte, in place.
    let after: Vec<String> = segments(&k.audit_dir)
        .iter()
        .flat_map(|p| {
            std::fs::read_to_string(p)
                .unwrap()
                .lines()
                .map(str::to_string)
                .collect::<Vec<_>>()
        })
        .collect();
    assert!(k.lines_after_kill.len() >= 2, "nothing on disk at the kill");
    assert_eq!(&after[..k.lines_after_kill.len()], &k.lines_after_kill[..]);

    let recs = records(&k.audit_dir);
    assert_consecutive(&recs);
    let reqs = of_kind(&recs, "request");
    // Upper bound: only requests that were sent can have records, each at most once.
    assert!(
        reqs.len() <= sent_n,
        "{} request records but only {sent_n} requests sent",
        reqs.len()
    );
    let recorded: BTreeSet<&str> = reqs.iter().map(|r| r.rid()).collect();
    assert_eq!(recorded.len(), reqs.len(), "a request recorded twice");
    assert!(
        recorded.is_subset(&sent_ids),
        "a record for a request never sent"
    );

    // The restarted proxy keeps chaining on.
    let last = report["last_seq"].as_u64().unwrap();
    let more = allowed_traffic(&j2, 5, "after");
    let recs = wait_requests(&k.audit_dir, &more);
    assert!(recs
        .iter()
        .filter(|r| more.contains(r.rid()))
        .all(|r| r.seq() > last));
    assert_consecutive(&recs);
    j2.stop();
    assert_verifies(&k.audit_dir);
}

/// The lower bound of the kill -9 criterion: every response a client read completely has a record
/// after the crash (with `audit.fsync: batch`). More records than completed responses is fine: the
/// proxy queues the record once it has written the response, and a client that the kill cut off
/// before it had read (all of) that response does not count it as completed.
#[test]
fn kill9_under_load_every_completed_response_has_a_record() {
    // `durability: ack` holds the end of each response until its record is durable.
    let k = kill9_under_load(60, "  durability: ack\n");
    let _j2 = start_on(&k.audit_dir, "");
    assert_verifies(&k.audit_dir);
    let recs = records(&k.audit_dir);
    let recorded: BTreeSet<String> = of_kind(&recs, "request")
        .iter()
        .map(|r| r.rid().to_string())
        .collect();
    let missing: Vec<&String> = k
        .completed
        .iter()
        .filter(|id| !recorded.contains(id.as_str()))
        .collect();
    assert!(
        missing.is_empty(),
        "{} of {} completely read responses have no audit record after kill -9: {missing:?}",
        missing.len(),
        k.completed.len()
    );
    assert!(recorded.len() >= k.completed.len());
}

#[test]
fn torn_tail_after_kill9_is_sealed_on_restart() {
    let keep = tempfile::tempdir().unwrap();
    let audit_dir = keep.path().join("audit");
    let mut j = start_on(&audit_dir, "");
    let ids = allowed_traffic(&j, 8, "torn");
    wait_requests(&audit_dir, &ids);
    j.kill9();
    drop(j);

    // A write cut short by the crash: the first part of a record line, no newline.
    let newest = segments(&audit_dir).pop().unwrap();
    let text = std::fs::read_to_string(&newest).unwrap();
    let last_line = text.lines().last().unwrap();
    let cut = rand::rng().random_range(10..last_line.len() - 10);
    let torn = last_line[..cut].to_string();
    let mut f = std::fs::OpenOptions::new()
        .append(true)
        .open(&newest)
        .unwrap();
    std::io::Write::write_all(&mut f, torn.as_bytes()).unwrap();
    drop(f);
    // Without a running writer, an unsealed torn tail is a break.
    let (code, report, _) = verify(&audit_dir);
    assert_eq!(code, 1, "{report:#}");
    assert_eq!(report["first_break"]["reason"], "truncated", "{report:#}");

    let mut j2 = start_on(&audit_dir, "");
    let more = allowed_traffic(&j2, 3, "sealed");
    wait_requests(&audit_dir, &more);
    j2.stop();
    let report = assert_verifies(&audit_dir);
    assert_eq!(report["sealed_tears"], 1, "{report:#}");
    let recs = records(&audit_dir);
    let seals = of_kind(&recs, "seal");
    assert_eq!(seals.len(), 1);
    let s = &seals[0].v;
    assert_eq!(s["torn_bytes"].as_u64(), Some(torn.len() as u64), "{s}");
    assert_eq!(
        s["torn_sha3"].as_str(),
        Some(hex::encode(jimini::audit::chain::sha3(torn.as_bytes())).as_str()),
        "{s}"
    );
    assert_eq!(s["file"], newest.file_name().unwrap().to_str().unwrap());
    assert_consecutive(&recs);
    let reqs = of_kind(&recs, "request");
    assert_eq!(reqs.len(), ids.len() + more.len());
}

#[test]
fn graceful_restart_continues_the_chain_with_the_same_caller_hashes() {
    let keep = tempfile::tempdir().unwrap();
    let audit_dir = keep.path().join("audit");
    let caller = format!("svc{}", rand_lower(8));
    let mut runs: Vec<BTreeSet<String>> = Vec::new();
    for round in 0..3 {
        let mut j = start_on(&audit_dir, "");
        let mut ids = BTreeSet::new();
        for _ in 0..rand::rng().random_range(2..6) {
            let id = rid(&format!("r{round}"));
            let (s, _, body) = chat(
                &j,
                &id,
                &chat_body("mock-gpt", &words(3)),
                &[("x-jimini-caller", &caller)],
            );
            assert_eq!(s, 200, "{body}");
            ids.insert(id);
        }
        wait_requests(&audit_dir, &ids);
        j.stop();
        let status = j.child.try_wait().unwrap();
        assert!(
            status.is_some_and(|s| s.code().is_some()),
            "proxy did not exit by itself on SIGTERM: {status:?}"
        );
        runs.push(ids);
        assert_verifies(&audit_dir);
    }
    let recs = records(&audit_dir);
    assert_consecutive(&recs);
    assert_eq!(
        of_kind(&recs, "seal").len(),
        0,
        "a clean stop leaves no torn tail"
    );
    let reqs = of_kind(&recs, "request");
    assert_eq!(reqs.len(), runs.iter().map(BTreeSet::len).sum::<usize>());
    // Runs follow each other in the chain.
    let max_seq = |ids: &BTreeSet<String>| {
        reqs.iter()
            .filter(|r| ids.contains(r.rid()))
            .map(Rec::seq)
            .max()
    };
    let min_seq = |ids: &BTreeSet<String>| {
        reqs.iter()
            .filter(|r| ids.contains(r.rid()))
            .map(Rec::seq)
            .min()
    };
    assert!(max_seq(&runs[0]) < min_seq(&runs[1]));
    assert!(max_seq(&runs[1]) < min_seq(&runs[2]));
    // The caller-hash key survives restarts: one caller, one hash.
    let hashes: BTreeSet<&str> = reqs
        .iter()
        .map(|r| r.v["caller"].as_str().unwrap())
        .collect();
    assert_eq!(hashes.len(), 1, "{hashes:?}");
    assert!(is_caller_hash(&json!(hashes.iter().next().unwrap())));
    assert_not_in_dir(&audit_dir, &[("caller name", &caller)]);
}

// ------------------------------------------------------------------------------------------
// data subjects

#[test]
fn data_subject_export_and_erasure_via_cli_and_admin_api() {
    // Small files: a subject's records spread over several files, the current one included.
    let mut j = Jimini::start(Options {
        audit_yaml: "  max_file_bytes: 4096\n".into(),
        ..Default::default()
    });
    let mut rng = rand::rng();
    let subject_a = format!("subject-{}", rand_alnum(12));
    // Shares A as a prefix: must never be mixed up with A.
    let subject_b = format!("{subject_a}-2");
    // Given by header; the body names someone else, the header wins.
    let subject_c = format!("subject-{}", rand_alnum(12));
    let body_user_c = format!("ignored-{}", rand_alnum(12));
    // Characters JSON escapes, and non-ASCII.
    let subject_d = format!("Zoë \"{}\" \\ ✓/{}", rand_lower(5), rand_alnum(8));

    let mut order: Vec<&str> = Vec::new();
    for (who, n) in [
        ("a", rng.random_range(6..12)),
        ("b", rng.random_range(1..4)),
        ("c", rng.random_range(1..4)),
        ("d", rng.random_range(1..4)),
        ("none", 4),
    ] {
        order.extend(std::iter::repeat_n(who, n));
    }
    use rand::seq::SliceRandom;
    order.shuffle(&mut rng);

    let mut ids: BTreeMap<&str, BTreeSet<String>> = BTreeMap::new();
    let mut all = BTreeSet::new();
    let classes = ["allow", "redact", "block"];
    let send =
        |who: &str, ids: &mut BTreeMap<&str, BTreeSet<String>>, all: &mut BTreeSet<String>| {
            let who: &'static str = match who {
                "a" => "a",
                "b" => "b",
                "c" => "c",
                "d" => "d",
                _ => "none",
            };
            let id = rid(&format!("subj{who}"));
            let class = classes[rand::rng().random_range(0..3)];
            let text = match class {
                "redact" => format!("mail {} now", random_email()),
                "block" => format!("key {} now", openai_key()),
                _ => words(4),
            };
            let mut body = chat_body("mock-gpt", &text);
            let mut headers: Vec<(&str, &str)> = Vec::new();
            match who {
                "a" => body["user"] = json!(subject_a),
                "b" => body["user"] = json!(subject_b),
                "c" => {
                    body["user"] = json!(body_user_c);
                    headers.push(("x-jimini-subject", &subject_c));
                }
                "d" => body["user"] = json!(subject_d),
                _ => {}
            }
            let (s, _, resp) = chat(&j, &id, &body, &headers);
            let want = if class == "block" { 403 } else { 200 };
            assert_eq!(s, want, "{resp}");
            ids.entry(who).or_default().insert(id.clone());
            all.insert(id);
        };
    for who in &order {
        send(who, &mut ids, &mut all);
    }
    wait_requests(&j.audit_dir, &all);
    assert!(segments(&j.audit_dir).len() >= 3, "expected rotation");
    // The subject header is not forwarded upstream.
    assert!(j
        .mock
        .requests()
        .iter()
        .all(|r| r.header("x-jimini-subject").is_none()));

    let rids = |recs: &[Value]| -> BTreeSet<String> {
        recs.iter()
            .map(|r| r["request_id"].as_str().unwrap().to_string())
            .collect()
    };
    // CLI export returns exactly the subject's records (with the erasable value beside them).
    for (who, subject) in [
        ("a", &subject_a),
        ("b", &subject_b),
        ("c", &subject_c),
        ("d", &subject_d),
    ] {
        let got = cli_export(&j.audit_dir, subject);
        assert_eq!(rids(&got), ids[who], "export of {who}");
        assert_eq!(got.len(), ids[who].len(), "export of {who}");
        for r in &got {
            assert_eq!(r["kind"], "request");
            assert_eq!(r["subject_value"]["id"], subject.as_str(), "{r}");
            assert!(r["subject"].as_str().is_some_and(|s| s.len() == 64), "{r}");
        }
    }
    assert!(cli_export(&j.audit_dir, &body_user_c).is_empty());
    assert!(cli_export(&j.audit_dir, &format!("subject-{}", rand_alnum(12))).is_empty());

    // Admin API export (admin role only).
    let admin = j.token("admin");
    let viewer = j.token("viewer");
    let export = |subject: &str, token: Option<&str>| -> (u16, Value) {
        let mut rb = Jimini::client()
            .get(j.admin_url("/admin/audit/export"))
            .query(&[("subject", subject)]);
        if let Some(t) = token {
            rb = rb.bearer_auth(t);
        }
        let r = rb.send().unwrap();
        (r.status().as_u16(), r.json().unwrap_or(Value::Null))
    };
    for (who, subject) in [("a", &subject_a), ("d", &subject_d)] {
        let (s, v) = export(subject, Some(&admin));
        assert_eq!(s, 200, "{v}");
        assert_eq!(v["count"].as_u64(), Some(ids[who].len() as u64), "{v}");
        assert_eq!(rids(v["records"].as_array().unwrap()), ids[who]);
    }
    assert_eq!(export(&subject_a, Some(&viewer)).0, 403);
    assert_eq!(export(&subject_a, None).0, 401);

    // Erase A and D through the running proxy (admin role only).
    let erase = |subject: &str, token: &str| {
        admin_post(
            &j,
            "/admin/audit/erase",
            Some(token),
            &json!({ "subject": subject }),
        )
    };
    assert_eq!(erase(&subject_a, &viewer).0, 403);
    for (n, (who, subject)) in [("a", &subject_a), ("d", &subject_d)].iter().enumerate() {
        let (s, v) = erase(subject, &admin);
        assert_eq!(s, 200, "{v}");
        assert_eq!(v["records"].as_u64(), Some(ids[who].len() as u64), "{v}");
        assert!(v["erasure_seq"].is_u64(), "{v}");
        let recs = records(&j.audit_dir);
        let erasures = of_kind(&recs, "erasure");
        assert_eq!(erasures.len(), n + 1);
        assert_eq!(erasures[n].seq(), v["erasure_seq"].as_u64().unwrap());
        assert_eq!(
            erasures[n].v["erased"].as_u64(),
            Some(ids[who].len() as u64)
        );
    }
    // The proxy keeps writing into the rewritten files; the chain stays whole.
    for who in ["b", "none", "c", "b", "none"] {
        send(who, &mut ids, &mut all);
    }
    wait_requests(&j.audit_dir, &all);
    let report = assert_verifies(&j.audit_dir);
    assert_eq!(report["erasures"], 2);
    let (s, v) = admin_get(&j, "/admin/audit/verify", Some(&viewer));
    assert_eq!((s, &v["ok"]), (200, &json!(true)), "{v}");

    // A's and D's ids are nowhere in the directory any more, raw or JSON-escaped (B's id, which
    // contains A's as a prefix, is taken out before looking).
    let d_json = serde_json::to_string(&subject_d).unwrap();
    let text = String::from_utf8_lossy(&dir_bytes(&j.audit_dir)).replace(&subject_b, "");
    for (what, needle) in [
        ("A", subject_a.as_str()),
        ("D", subject_d.as_str()),
        ("D (JSON)", &d_json[1..d_json.len() - 1]),
    ] {
        assert!(
            !text.contains(needle),
            "erased subject {what} still in the audit files"
        );
    }
    for (who, subject) in [("a", &subject_a), ("d", &subject_d)] {
        assert!(cli_export(&j.audit_dir, subject).is_empty());
        let (s, v) = export(subject, Some(&admin));
        assert_eq!((s, v["count"].as_u64()), (200, Some(0)), "{v}");
        // The records themselves stay, with their commitment.
        let recs = records(&j.audit_dir);
        for id in &ids[who] {
            let r = recs
                .iter()
                .find(|r| r.rid() == id)
                .expect("erased record kept");
            assert!(
                r.v.get("subject_value").is_none() && r.v["subject"].is_string(),
                "{}",
                r.v
            );
        }
    }
    // Other subjects are untouched.
    assert_eq!(rids(&cli_export(&j.audit_dir, &subject_b)), ids["b"]);
    assert_eq!(rids(&cli_export(&j.audit_dir, &subject_c)), ids["c"]);

    // The CLI cannot erase under a running proxy (it would be a second writer) ...
    let erase_c = |dir: &Path| {
        cli(&[
            "audit".as_ref(),
            "erase".as_ref(),
            "--subject".as_ref(),
            subject_c.as_ref(),
            "--dir".as_ref(),
            dir.as_os_str(),
        ])
    };
    let o = erase_c(&j.audit_dir);
    assert_ne!(o.code, 0, "CLI erase succeeded next to a running writer");
    assert!(o.stderr.contains("locked"), "{}", o.stderr);
    assert_eq!(rids(&cli_export(&j.audit_dir, &subject_c)), ids["c"]);
    // ... but can once it is stopped.
    j.stop();
    let o = erase_c(&j.audit_dir);
    assert_eq!(o.code, 0, "{}", o.stderr);
    let rep: Value = serde_json::from_str(&o.stdout).unwrap();
    assert_eq!(
        rep["records"].as_u64(),
        Some(ids["c"].len() as u64),
        "{rep}"
    );
    assert_not_in_dir(&j.audit_dir, &[("erased subject", &subject_c)]);
    assert!(cli_export(&j.audit_dir, &subject_c).is_empty());
    assert_eq!(rids(&cli_export(&j.audit_dir, &subject_b)), ids["b"]);
    let report = assert_verifies(&j.audit_dir);
    assert_eq!(report["erasures"], 3);
}

// ------------------------------------------------------------------------------------------
// admin API

#[test]
fn admin_requests_are_audited_including_401_and_403() {
    let j = Jimini::start(Options::default());
    let sub = format!("ops{}", rand_lower(8));
    let viewer = token_for(&j, "viewer", &sub);
    let garbage = format!("ey{}.{}.{}", rand_alnum(20), rand_alnum(20), rand_alnum(20));

    let (s, _) = admin_get(&j, "/admin/rules", None);
    assert_eq!(s, 401);
    let (s, _) = admin_get(&j, "/admin/rules", Some(&garbage));
    assert_eq!(s, 401);
    let (s, _) = admin_get(&j, "/admin/rules", Some(&viewer));
    assert_eq!(s, 200);
    let (s, _) = admin_post(&j, "/admin/rules/reload", Some(&viewer), &json!({}));
    assert_eq!(s, 403);

    let recs = wait_records(&j.audit_dir, "4 admin records", |r| {
        of_kind(r, "admin").len() >= 4
    });
    let admins = of_kind(&recs, "admin");
    assert_eq!(admins.len(), 4, "{admins:?}");
    let find = |detail: &str, status: u64| -> Vec<&Rec> {
        admins
            .iter()
            .filter(|r| r.v["detail"] == detail && r.v["status"].as_u64() == Some(status))
            .collect()
    };
    let unauth = find("GET /admin/rules", 401);
    assert_eq!(unauth.len(), 2, "{admins:?}");
    for r in &unauth {
        assert!(
            r.v["decision"]
                .as_str()
                .unwrap()
                .starts_with("unauthenticated"),
            "{}",
            r.v
        );
        assert!(r.v.get("caller").is_none(), "{}", r.v);
        assert_eq!(r.v["route"], "admin", "{}", r.v);
    }
    let ok = find("GET /admin/rules", 200);
    assert_eq!(ok.len(), 1, "{admins:?}");
    assert_eq!(ok[0].v["decision"], "ok");
    assert!(is_caller_hash(&ok[0].v["caller"]), "{}", ok[0].v);
    let denied = find("POST /admin/rules/reload", 403);
    assert_eq!(denied.len(), 1, "{admins:?}");
    assert_eq!(denied[0].v["decision"], "forbidden");
    assert_eq!(denied[0].v["caller"], ok[0].v["caller"]);
    assert_not_in_dir(
        &j.audit_dir,
        &[
            ("token", &viewer),
            ("token", &garbage),
            ("token subject", &sub),
        ],
    );
    assert_verifies(&j.audit_dir);
}

#[test]
fn admin_verify_endpoint_reports_ok_then_the_break() {
    let j = Jimini::start(Options::default());
    let ids = allowed_traffic(&j, 12, "adminverify");
    wait_requests(&j.audit_dir, &ids);
    let viewer = j.token("viewer");
    let (s, _) = admin_get(&j, "/admin/audit/verify", None);
    assert_eq!(s, 401);
    let (s, v) = admin_get(&j, "/admin/audit/verify", Some(&viewer));
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["ok"], true, "{v}");
    assert!(v["first_break"].is_null(), "{v}");
    assert!(v["records"].as_u64().unwrap() > ids.len() as u64, "{v}");
    assert!(
        v["head_hash"].as_str().is_some_and(|h| h.len() == 64),
        "{v}"
    );

    // Flip one byte of a middle record in place (no truncation: the writer keeps appending).
    let recs = records(&j.audit_dir);
    let victim = recs
        .iter()
        .filter(|r| ids.contains(r.rid()))
        .nth(ids.len() / 2)
        .unwrap()
        .clone();
    let path = j.audit_dir.join(&victim.file);
    let text = std::fs::read_to_string(&path).unwrap();
    let off = text.find(victim.rid()).unwrap() + victim.rid().len() - 1;
    let old = text.as_bytes()[off];
    {
        use std::os::unix::fs::FileExt;
        let f = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
        f.write_all_at(&[if old == b'q' { b'r' } else { b'q' }], off as u64)
            .unwrap();
    }
    let (s, v) = admin_get(&j, "/admin/audit/verify", Some(&viewer));
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["ok"], false, "{v}");
    assert_eq!(v["first_break"]["reason"], "edited", "{v}");
    assert_eq!(v["first_break"]["seq"].as_u64(), Some(victim.seq()), "{v}");
    assert_eq!(v["first_break"]["file"], victim.file.as_str(), "{v}");
    assert_eq!(
        v["first_break"]["line"].as_u64(),
        Some(victim.line as u64),
        "{v}"
    );
    let metrics = Jimini::client()
        .get(j.admin_url("/metrics"))
        .send()
        .unwrap()
        .text()
        .unwrap();
    assert!(
        metrics
            .lines()
            .any(|l| l.starts_with("jimini_audit_chain_ok") && l.trim_end().ends_with(" 0")),
        "chain gauge not 0:\n{}",
        metrics
            .lines()
            .filter(|l| l.contains("audit"))
            .collect::<Vec<_>>()
            .join("\n")
    );
    let (code, _, _) = verify(&j.audit_dir);
    assert_eq!(code, 1);
}

// ------------------------------------------------------------------------------------------
// block-mode back-pressure, dead letter, replay
//
// The tests run as root, so revoking permissions on the audit directory stops nothing. A limit
// that binds root too is RLIMIT_FSIZE: once the proxy's soft file-size limit equals the length of
// its current log file, every further append fails with EFBIG, while the (empty) dead-letter file
// still has room below the limit. SIGXFSZ, which would kill the process, is ignored: an ignored
// signal stays ignored across exec, so ignoring it in this test process before spawning the proxy
// is enough (nothing else here writes files anywhere near such a limit).

fn set_fsize_limit(pid: u32, limit: Option<u64>) {
    let cur = limit.unwrap_or(libc::RLIM_INFINITY);
    let new = libc::rlimit {
        rlim_cur: cur,
        rlim_max: libc::RLIM_INFINITY,
    };
    // SAFETY: valid pointer to an initialized rlimit; a null old-limit pointer is allowed.
    let rc = unsafe {
        libc::prlimit(
            pid as libc::pid_t,
            libc::RLIMIT_FSIZE,
            &new,
            std::ptr::null_mut(),
        )
    };
    assert_eq!(rc, 0, "prlimit: {}", std::io::Error::last_os_error());
}

#[test]
fn block_mode_refuses_with_503_while_the_log_fails_then_dead_letter_replays_into_the_chain() {
    // SAFETY: setting a signal disposition to SIG_IGN has no memory-safety preconditions.
    unsafe {
        libc::signal(libc::SIGXFSZ, libc::SIG_IGN);
    }
    let mut j = Jimini::start(Options::default()); // audit.on_full defaults to block
    let mut all = allowed_traffic(&j, 30, "before");
    wait_requests(&j.audit_dir, &all);
    let log = segments(&j.audit_dir).pop().unwrap();
    let log_len = std::fs::metadata(&log).unwrap().len();
    set_fsize_limit(j.child.id(), Some(log_len));

    // Requests go on until the writer has failed and admission refuses with 503.
    let mut refused = 0;
    let deadline = Instant::now() + Duration::from_secs(15);
    while refused < 3 && Instant::now() < deadline {
        let id = rid("failing");
        let (s, h, body) = chat(&j, &id, &chat_body("mock-gpt", &words(3)), &[]);
        all.insert(id);
        match s {
            200 => {}
            503 => {
                refused += 1;
                let v: Value = serde_json::from_str(&body).unwrap();
                assert_eq!(v["error"]["code"], "audit_backpressure", "{body}");
                assert!(h.get("retry-after").is_some());
            }
            other => panic!("unexpected {other}: {body}"),
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(
        refused, 3,
        "no 503 while the audit log could not be written"
    );

    // Held records spill to the dead-letter file; the chain itself stays intact meanwhile.
    let dl = j.audit_dir.join("dead-letter.jsonl");
    let deadline = Instant::now() + Duration::from_secs(15);
    while std::fs::metadata(&dl).map(|m| m.len()).unwrap_or(0) == 0 {
        assert!(Instant::now() < deadline, "nothing dead-lettered");
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(std::fs::metadata(&log).unwrap().len(), log_len);
    assert_verifies(&j.audit_dir);

    // Lift the limit: the writer resumes, admission accepts again.
    set_fsize_limit(j.child.id(), None);
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let id = rid("recovering");
        let (s, _, body) = chat(&j, &id, &chat_body("mock-gpt", &words(3)), &[]);
        all.insert(id);
        if s == 200 {
            break;
        }
        assert_eq!(s, 503, "{body}");
        assert!(Instant::now() < deadline, "the proxy never accepted again");
        std::thread::sleep(Duration::from_millis(200));
    }
    let recs = wait_records(&j.audit_dir, "a resume record", |r| {
        !of_kind(r, "resume").is_empty()
    });
    let resume = &of_kind(&recs, "resume")[0].v;
    let dead = std::fs::read_to_string(&dl).unwrap().lines().count() as u64;
    assert!(dead > 0);
    assert_eq!(resume["dead_lettered"].as_u64(), Some(dead), "{resume}");
    assert_eq!(resume["dropped"], 0, "{resume}");
    j.stop();

    // Offline replay puts the dead-lettered records back into the chain.
    let before = of_kind(&records(&j.audit_dir), "request").len();
    let o = cli(&["audit".as_ref(), "replay".as_ref(), j.audit_dir.as_os_str()]);
    assert_eq!(o.code, 0, "{}", o.stderr);
    assert!(
        o.stdout.contains(&format!("replayed {dead} records")),
        "{}",
        o.stdout
    );
    assert_eq!(std::fs::metadata(&dl).unwrap().len(), 0);
    assert_verifies(&j.audit_dir);
    let recs = records(&j.audit_dir);
    let reqs = of_kind(&recs, "request");
    assert_eq!(reqs.len() as u64, before as u64 + dead);
    // Every request sent — served, refused or in flight when the log failed — is in the chain
    // exactly once.
    let got: Vec<&str> = reqs.iter().map(|r| r.rid()).collect();
    let got_set: BTreeSet<&str> = got.iter().copied().collect();
    assert_eq!(got.len(), got_set.len(), "a request recorded twice");
    let want: BTreeSet<&str> = all.iter().map(String::as_str).collect();
    assert_eq!(got_set, want);
    assert_eq!(
        reqs.iter().filter(|r| r.v["replayed"] == true).count() as u64,
        dead
    );
    assert!(reqs.iter().any(|r| r.v["status"] == 503));
    assert_consecutive(&recs);
}

#[test]
fn audit_disabled_writes_nothing_and_admin_verify_says_so() {
    let j = Jimini::start(Options {
        audit: false,
        ..Default::default()
    });
    let ids = allowed_traffic(&j, 3, "off");
    assert_eq!(ids.len(), 3);
    let viewer = j.token("viewer");
    let (s, v) = admin_get(&j, "/admin/audit/verify", Some(&viewer));
    assert_eq!(s, 500, "{v}");
    assert_eq!(v["error"]["code"], "audit_error", "{v}");
    let (s, _) = admin_get(&j, "/admin/rules", None);
    assert_eq!(s, 401);
    std::thread::sleep(Duration::from_millis(300));
    assert!(
        !j.audit_dir.exists(),
        "audit.enabled: false created {}",
        j.audit_dir.display()
    );
}
