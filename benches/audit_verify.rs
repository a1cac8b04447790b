//! Audit chain verification throughput (DESIGN §9 / issue: 1M records "in seconds", target ≥ 300k/s).
//! Generates a realistic log of N records (default 200,000; override with `JIMINI_BENCH_AUDIT_RECORDS`)
//! through the real writer (rotation at 16 MiB, one record in ten with a data subject), then measures
//! `verify_dir`; criterion reports the rate as elements/s = records/s.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use jimini::audit::{
    verify_dir, AuditConfig, AuditError, AuditEvent, AuditHandle, FsyncPolicy, TokenUsage,
};

fn event(i: u64) -> AuditEvent {
    AuditEvent {
        request_id: format!("req-{i:016x}"),
        caller: Some(format!("team-{}", i % 17)),
        subject: i
            .is_multiple_of(10)
            .then(|| format!("user-{}@example.com", i % 1000)),
        route: "chat".into(),
        model: Some("gpt-4o-mini".into()),
        upstream: Some("openai".into()),
        decision: ["allow", "redact", "flag", "block"][(i % 4) as usize].into(),
        shadow: i.is_multiple_of(7),
        rules: if i.is_multiple_of(4) {
            vec![]
        } else {
            vec!["pii.email".into(), "secrets.openai-key".into()]
        },
        findings: if i.is_multiple_of(4) {
            BTreeMap::new()
        } else {
            BTreeMap::from([("email".into(), 2), ("api_key.openai".into(), 1)])
        },
        status: 200,
        latency_ms: 100 + i % 900,
        upstream_latency_ms: Some(90 + i % 900),
        usage: Some(TokenUsage {
            prompt: 512,
            completion: 128,
            total: 640,
        }),
        kind: "request".into(),
        detail: None,
    }
}

/// Write `n` records into `dir` through the real writer.
pub fn generate(dir: &Path, n: u64) {
    let cfg = AuditConfig {
        dir: dir.to_path_buf(),
        fsync: FsyncPolicy::Never,
        channel_capacity: 65_536,
        batch_max: 2048,
        max_file_bytes: 16 * 1024 * 1024,
        rotate_daily: false,
        ..AuditConfig::default()
    };
    let h = AuditHandle::start(&cfg).expect("start audit writer");
    for i in 0..n {
        let mut ev = event(i);
        loop {
            match h.record(ev) {
                Ok(()) => break,
                Err(AuditError::Full) => {
                    std::thread::yield_now();
                    ev = event(i);
                }
                Err(e) => panic!("record: {e}"),
            }
        }
    }
    assert!(h.flush(Duration::from_secs(600)), "flush");
    h.shutdown(Duration::from_secs(60));
}

fn bench(c: &mut Criterion) {
    let n: u64 = std::env::var("JIMINI_BENCH_AUDIT_RECORDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(200_000);
    let dir = tempfile::tempdir().expect("tempdir");
    let t = Instant::now();
    generate(dir.path(), n);
    eprintln!("audit_verify: generated {n} records in {:.2?}", t.elapsed());
    let t = Instant::now();
    let r = verify_dir(dir.path()).expect("verify");
    assert!(r.ok, "{}", r.summary());
    let el = t.elapsed();
    eprintln!(
        "audit_verify: first pass {} records in {} files: {el:.2?} ({:.0} records/s)",
        r.records,
        r.files,
        r.records as f64 / el.as_secs_f64()
    );

    let mut g = c.benchmark_group("audit_verify");
    g.throughput(Throughput::Elements(r.records));
    g.sample_size(10);
    g.bench_function(format!("verify_dir/{n}"), |b| {
        b.iter(|| {
            let r = verify_dir(dir.path()).expect("verify");
            assert!(r.ok);
            r.records
        })
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
