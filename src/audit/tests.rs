//! End-to-end tests of the audit module through its public API: writer, rotation, restart, torn tails,
//! every tamper kind, erasure, dead letter, back-pressure and retention.

use std::collections::BTreeMap;
use std::fs;
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

use chrono::{DateTime, TimeZone, Utc};

use super::*;

const T: Duration = Duration::from_secs(20);

fn ev(i: u64, subject: Option<&str>) -> AuditEvent {
    AuditEvent {
        request_id: format!("req-{i}"),
        caller: Some("team-a".into()),
        subject: subject.map(str::to_owned),
        route: "chat".into(),
        model: Some("gpt-4o".into()),
        upstream: Some("openai".into()),
        decision: "redact".into(),
        shadow: false,
        rules: vec!["pii.email".into()],
        findings: BTreeMap::from([("email".into(), 2)]),
        status: 200,
        latency_ms: 10 + i,
        upstream_latency_ms: Some(5),
        usage: Some(TokenUsage {
            prompt: 1,
            completion: 2,
            total: 3,
        }),
        kind: "request".into(),
        detail: None,
    }
}

fn cfg(dir: &Path) -> AuditConfig {
    AuditConfig {
        dir: dir.to_path_buf(),
        fsync: FsyncPolicy::Never,
        channel_capacity: 256,
        batch_max: 32,
        ..AuditConfig::default()
    }
}

/// Record, waiting for room instead of dropping (tests want every record).
fn put(h: &AuditHandle, e: AuditEvent) {
    loop {
        match h.record(e.clone()) {
            Ok(()) => return,
            Err(AuditError::Full) => std::thread::sleep(Duration::from_millis(1)),
            Err(e) => panic!("record: {e}"),
        }
    }
}

fn write_log(c: &AuditConfig, n: u64, subject: impl Fn(u64) -> Option<&'static str>) {
    let h = AuditHandle::start(c).unwrap();
    for i in 0..n {
        put(&h, ev(i, subject(i)));
    }
    assert!(h.flush(T));
    h.shutdown(T);
}

fn segments(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| {
            p.file_name()
                .unwrap()
                .to_str()
                .unwrap()
                .starts_with("audit-")
        })
        .collect();
    v.sort();
    v
}

fn lines(p: &Path) -> Vec<String> {
    fs::read_to_string(p)
        .unwrap()
        .lines()
        .map(str::to_owned)
        .collect()
}

fn write_lines(p: &Path, l: &[String]) {
    let mut s = l.join("\n");
    s.push('\n');
    fs::write(p, s).unwrap();
}

fn seq_of(line: &str) -> u64 {
    serde_json::from_str::<serde_json::Value>(line).unwrap()["seq"]
        .as_u64()
        .unwrap()
}

fn name(p: &Path) -> String {
    p.file_name().unwrap().to_str().unwrap().to_owned()
}

/// Verify with the threaded pipeline and on one thread; both must agree.
fn verify_both(dir: &Path) -> VerifyReport {
    let r = verify::verify_with(dir, 3).unwrap();
    assert_eq!(r, verify::verify_with(dir, 1).unwrap());
    r
}

fn assert_ok(dir: &Path) -> VerifyReport {
    let r = verify_both(dir);
    assert!(r.ok, "{}", r.summary());
    r
}

fn assert_break(dir: &Path, reason: BreakReason, seq: u64, file: &str, line: u64) {
    let r = verify_both(dir);
    let b = r
        .first_break
        .clone()
        .unwrap_or_else(|| panic!("expected {reason:?}, got OK"));
    assert_eq!(
        (b.reason, b.seq, b.file.as_str(), b.line),
        (reason, seq, file, line),
        "{}",
        r.summary()
    );
    assert!(!r.ok);
}

/// Test sink: can fail log or dead-letter writes, and stall log writes until released.
#[derive(Clone, Default)]
struct TestSink {
    fail_log: Arc<AtomicBool>,
    fail_dl: Arc<AtomicBool>,
    gate: Arc<Gate>,
}

#[derive(Default)]
struct Gate {
    state: Mutex<(bool, bool)>, // (armed, a writer is waiting)
    cv: Condvar,
}

impl Gate {
    fn arm(&self) {
        self.state.lock().unwrap().0 = true;
    }
    fn release(&self) {
        self.state.lock().unwrap().0 = false;
        self.cv.notify_all();
    }
    fn wait_entered(&self) {
        let mut g = self.state.lock().unwrap();
        while !g.1 {
            g = self.cv.wait(g).unwrap();
        }
    }
    fn pass(&self) {
        let mut g = self.state.lock().unwrap();
        if g.0 {
            g.1 = true;
            self.cv.notify_all();
            while g.0 {
                g = self.cv.wait(g).unwrap();
            }
            g.1 = false;
        }
    }
}

impl Sink for TestSink {
    fn write(&mut self, target: Target, file: &mut fs::File, buf: &[u8]) -> io::Result<()> {
        if target == Target::Log {
            self.gate.pass();
        }
        let fail = match target {
            Target::Log => &self.fail_log,
            Target::DeadLetter => &self.fail_dl,
        };
        if fail.load(Ordering::SeqCst) {
            // Write half, then fail: what a full disk looks like.
            let _ = file.write_all(&buf[..buf.len() / 2]);
            return Err(io::Error::other("injected: no space left on device"));
        }
        file.write_all(buf)
    }
}

fn fast_retry(sink: &TestSink) -> StartOptions {
    StartOptions {
        sink: Box::new(sink.clone()),
        retry_backoff: Duration::from_millis(1),
        retry_backoff_max: Duration::from_millis(4),
        retries_before_spill: 3,
        ..StartOptions::default()
    }
}

struct FakeClock(Mutex<DateTime<Utc>>);
impl Clock for FakeClock {
    fn now(&self) -> DateTime<Utc> {
        *self.0.lock().unwrap()
    }
}

#[test]
fn writes_records_without_raw_identities() {
    let t = tempfile::tempdir().unwrap();
    let c = cfg(t.path());
    write_log(&c, 5, |_| Some("alice@example.com"));
    let r = assert_ok(t.path());
    assert_eq!(r.records, 6); // genesis + 5
    assert_eq!(r.first_seq, Some(0));
    let all = lines(&segments(t.path())[0]);
    let v: serde_json::Value = serde_json::from_str(&all[1]).unwrap();
    assert!(v["caller"].as_str().unwrap().starts_with("sha3:"));
    assert_eq!(v["subject"].as_str().unwrap().len(), 64);
    assert_eq!(v["subject_value"]["id"], "alice@example.com");
    assert_eq!(v["findings"]["email"], 2);
    assert_eq!(v["usage"]["total"], 3);
    // The caller name appears nowhere; the subject id only inside subject_value (outside the hash).
    let text = fs::read_to_string(&segments(t.path())[0]).unwrap();
    assert!(!text.contains("team-a"));
    for l in &all[1..] {
        let head = &l[..l.find(",\"hash\":").unwrap()];
        assert!(!head.contains("alice"));
    }
    // Caller hashes are stable across records (same key).
    let v2: serde_json::Value = serde_json::from_str(&all[2]).unwrap();
    assert_eq!(v["caller"], v2["caller"]);
}

#[test]
fn memoized_caller_hashes_match_the_keyed_hash_per_caller() {
    let t = tempfile::tempdir().unwrap();
    let h = AuditHandle::start(&cfg(t.path())).unwrap();
    let callers = ["team-a", "team-b", "team-a", "team-c", "team-b"];
    for (i, c) in callers.iter().enumerate() {
        let mut e = ev(i as u64, None);
        e.caller = Some((*c).into());
        put(&h, e);
    }
    h.shutdown(Duration::from_secs(5));
    let meta: serde_json::Value =
        serde_json::from_str(&fs::read_to_string(t.path().join("meta.json")).unwrap()).unwrap();
    let key: [u8; 32] = hex::decode(meta["caller_key"].as_str().unwrap())
        .unwrap()
        .try_into()
        .unwrap();
    let all = lines(&segments(t.path())[0]);
    for (line, c) in all[1..].iter().zip(callers) {
        let v: serde_json::Value = serde_json::from_str(line).unwrap();
        assert_eq!(v["caller"], chain::caller_hash(&key, c), "{c}");
    }
}

#[test]
fn group_commit_window_defaults_follow_durability() {
    use super::Durability;
    let mut c = AuditConfig::default();
    assert_eq!(c.batch_wait(), Duration::from_millis(10));
    c.durability = Durability::Ack;
    assert_eq!(c.batch_wait(), Duration::from_millis(2));
    c.batch_wait_ms = Some(0);
    assert_eq!(c.batch_wait(), Duration::ZERO);
    let parsed: AuditConfig = serde_yaml::from_str("batch_wait_ms: 7").unwrap();
    assert_eq!(parsed.batch_wait(), Duration::from_millis(7));
}

#[test]
fn disabled_handle_accepts_everything() {
    let c = AuditConfig {
        enabled: false,
        ..AuditConfig::default()
    };
    let h = AuditHandle::start(&c).unwrap();
    assert!(h.record(ev(1, None)).is_ok());
    assert!(h.accepting());
    assert!(h.flush(T));
    h.shutdown(T);
}

#[test]
fn rotation_by_size_keeps_the_chain() {
    let t = tempfile::tempdir().unwrap();
    let c = AuditConfig {
        max_file_bytes: 4096,
        ..cfg(t.path())
    };
    write_log(&c, 300, |i| if i % 3 == 0 { Some("s") } else { None });
    let segs = segments(t.path());
    assert!(segs.len() >= 10, "{} files", segs.len());
    for s in &segs {
        assert!(fs::metadata(s).unwrap().len() <= 4096);
        // every file starts with a header naming itself
        let first: serde_json::Value = serde_json::from_str(&lines(s)[0]).unwrap();
        assert_eq!(first["file"], name(s));
    }
    let r = assert_ok(t.path());
    assert_eq!(r.files, segs.len());
    assert_eq!(r.records, 300 + segs.len() as u64); // + genesis + one header per later file
                                                    // First record of file k+1 chains to the last of file k.
    let last_prev: serde_json::Value =
        serde_json::from_str(lines(&segs[0]).last().unwrap()).unwrap();
    let first_next: serde_json::Value = serde_json::from_str(&lines(&segs[1])[0]).unwrap();
    assert_eq!(first_next["prev"], last_prev["hash"]);
}

#[test]
fn rotation_by_day_uses_the_clock() {
    let t = tempfile::tempdir().unwrap();
    let day1 = Utc.with_ymd_and_hms(2026, 3, 1, 23, 59, 0).unwrap();
    let clock = Arc::new(FakeClock(Mutex::new(day1)));
    let opts = || StartOptions {
        clock: clock.clone(),
        ..StartOptions::default()
    };
    let h = AuditHandle::start_with(&cfg(t.path()), opts()).unwrap();
    put(&h, ev(1, None));
    assert!(h.flush(T));
    *clock.0.lock().unwrap() = day1 + chrono::Duration::minutes(2);
    put(&h, ev(2, None));
    assert!(h.flush(T));
    h.shutdown(T);
    let names: Vec<String> = segments(t.path()).iter().map(|p| name(p)).collect();
    assert_eq!(
        names,
        ["audit-20260301-000001.jsonl", "audit-20260302-000002.jsonl"]
    );
    // rotate_daily off: a restart on a later day keeps appending.
    *clock.0.lock().unwrap() = day1 + chrono::Duration::days(3);
    let c = AuditConfig {
        rotate_daily: false,
        ..cfg(t.path())
    };
    let h = AuditHandle::start_with(&c, opts()).unwrap();
    put(&h, ev(3, None));
    h.shutdown(T);
    assert_eq!(segments(t.path()).len(), 2);
    assert_eq!(assert_ok(t.path()).records, 5); // genesis, 1, header, 2, 3
}

#[test]
fn restart_resumes_seq_and_prev() {
    let t = tempfile::tempdir().unwrap();
    let c = cfg(t.path());
    write_log(&c, 10, |_| None);
    let before = assert_ok(t.path());
    assert_eq!(before.last_seq, Some(10));
    write_log(&c, 10, |_| None);
    let after = assert_ok(t.path());
    assert_eq!(after.last_seq, Some(20));
    assert_eq!(after.files, 1);
    let l = lines(&segments(t.path())[0]);
    let r10: serde_json::Value = serde_json::from_str(&l[10]).unwrap();
    let r11: serde_json::Value = serde_json::from_str(&l[11]).unwrap();
    assert_eq!(
        (r11["seq"].as_u64(), &r11["prev"]),
        (Some(11), &r10["hash"])
    );
    // meta.json (log id, caller key) is stable across restarts
    let v: serde_json::Value = serde_json::from_str(&l[1]).unwrap();
    let w: serde_json::Value = serde_json::from_str(&l[15]).unwrap();
    assert_eq!(v["caller"], w["caller"]);
}

#[test]
fn torn_last_line_is_detected_then_sealed_on_start() {
    let t = tempfile::tempdir().unwrap();
    let c = cfg(t.path());
    write_log(&c, 5, |_| None);
    let seg = segments(t.path())[0].clone();
    let full = lines(&seg);
    let last = full.last().unwrap().clone();
    // Simulate a crash mid-write: half of a new record at the end.
    let mut f = fs::OpenOptions::new().append(true).open(&seg).unwrap();
    f.write_all(&last.as_bytes()[..last.len() / 2]).unwrap();
    drop(f);
    assert_break(t.path(), BreakReason::Truncated, 6, &name(&seg), 7);

    let h = AuditHandle::start(&c).unwrap();
    assert_eq!(h.stats().sealed_tears, 1);
    put(&h, ev(9, None));
    h.shutdown(T);
    let r = assert_ok(t.path());
    assert_eq!(r.sealed_tears, 1);
    let l = lines(&seg);
    let seal: serde_json::Value = serde_json::from_str(&l[6]).unwrap();
    assert_eq!(seal["kind"], "seal");
    assert_eq!(seal["torn_bytes"].as_u64(), Some((last.len() / 2) as u64));
    assert_eq!(seal["seq"].as_u64(), Some(6));
    assert_eq!(r.last_seq, Some(7));
}

#[test]
fn complete_last_record_missing_newline_is_kept() {
    let t = tempfile::tempdir().unwrap();
    let c = cfg(t.path());
    write_log(&c, 3, |_| None);
    let seg = segments(t.path())[0].clone();
    let mut bytes = fs::read(&seg).unwrap();
    bytes.pop(); // drop the final '\n'
    fs::write(&seg, &bytes).unwrap();
    assert_break(t.path(), BreakReason::Truncated, 3, &name(&seg), 4);
    write_log(&c, 1, |_| None);
    let r = assert_ok(t.path());
    assert_eq!((r.sealed_tears, r.last_seq), (0, Some(4)));
}

#[test]
fn crash_right_after_rotation_is_recovered() {
    let t = tempfile::tempdir().unwrap();
    let c = AuditConfig {
        max_file_bytes: 4096,
        ..cfg(t.path())
    };
    write_log(&c, 40, |_| None);
    let segs = segments(t.path());
    let last = segs.last().unwrap();
    // The newest file holds only a torn header.
    let header = lines(last)[0].clone();
    fs::write(last, &header.as_bytes()[..20]).unwrap();
    // Its rotated predecessor is intact; start-up re-writes the header and seals.
    let h = AuditHandle::start(&c).unwrap();
    put(&h, ev(99, None));
    h.shutdown(T);
    let r = assert_ok(t.path());
    assert_eq!(r.sealed_tears, 1);
    let l = lines(last);
    let hd: serde_json::Value = serde_json::from_str(&l[0]).unwrap();
    assert_eq!(
        (hd["kind"].as_str(), hd["file"].as_str()),
        (Some("file"), Some(name(last).as_str()))
    );
}

/// A multi-file log to tamper with: returns (dir guard, files).
fn tamper_fixture() -> (tempfile::TempDir, Vec<PathBuf>) {
    let t = tempfile::tempdir().unwrap();
    let c = AuditConfig {
        max_file_bytes: 4096,
        ..cfg(t.path())
    };
    write_log(&c, 60, |i| if i % 4 == 0 { Some("subj") } else { None });
    let segs = segments(t.path());
    assert!(segs.len() >= 3);
    assert_ok(t.path());
    (t, segs)
}

#[test]
fn tamper_edit_a_byte() {
    let (t, segs) = tamper_fixture();
    let f = &segs[1];
    let mut l = lines(f);
    let seq = seq_of(&l[3]);
    assert!(l[3].contains("\"status\":200"));
    l[3] = l[3].replacen("\"status\":200", "\"status\":201", 1);
    write_lines(f, &l);
    assert_break(t.path(), BreakReason::Edited, seq, &name(f), 4);
}

#[test]
fn tamper_edit_that_breaks_json_or_the_hash() {
    let (t, segs) = tamper_fixture();
    let f = &segs[0];
    let orig = lines(f);
    // JSON syntax destroyed by the edit
    let mut l = orig.clone();
    l[2] = l[2].replacen("\"route\"", "\"route ", 1);
    write_lines(f, &l);
    assert_break(t.path(), BreakReason::Edited, 2, &name(f), 3);
    // stored hash edited
    let mut l = orig.clone();
    let at = l[2].find("\"hash\":\"").unwrap() + 8;
    let c = if &l[2][at..at + 1] == "0" { "1" } else { "0" };
    l[2].replace_range(at..at + 1, c);
    write_lines(f, &l);
    assert_break(t.path(), BreakReason::Edited, 2, &name(f), 3);
    // subject value swapped to frame someone else
    let mut l = orig.clone();
    let i = l
        .iter()
        .position(|x| x.contains("\"id\":\"subj\""))
        .unwrap();
    l[i] = l[i].replacen("\"id\":\"subj\"", "\"id\":\"other\"", 1);
    write_lines(f, &l);
    assert_break(
        t.path(),
        BreakReason::Edited,
        seq_of(&orig[i]),
        &name(f),
        i as u64 + 1,
    );
}

#[test]
fn tamper_rewritten_record_with_recomputed_hash() {
    let (t, segs) = tamper_fixture();
    let f = &segs[0];
    let mut l = lines(f);
    // An attacker edits record 3 and recomputes its own hash: the next record's prev exposes it.
    let edited = l[3].replacen("\"status\":200", "\"status\":500", 1);
    let split = record::split_line(edited.as_bytes()).unwrap();
    let head = record::parse_head(edited.as_bytes()).unwrap();
    let prev = chain::parse_hex(head.prev.as_bytes()).unwrap();
    let h = chain::link(&prev, split.canonical_open);
    let old_hash = &edited[split.canonical_open.len() + 9..split.canonical_open.len() + 73];
    l[3] = edited.replacen(old_hash, &hex::encode(h), 1);
    write_lines(f, &l);
    assert_break(t.path(), BreakReason::Edited, 4, &name(f), 5);
}

#[test]
fn tamper_delete_a_line() {
    let (t, segs) = tamper_fixture();
    let f = &segs[1];
    let mut l = lines(f);
    let seq = seq_of(&l[4]);
    l.remove(4);
    write_lines(f, &l);
    assert_break(t.path(), BreakReason::Deleted, seq, &name(f), 5);
}

#[test]
fn tamper_delete_last_line_of_a_middle_file_and_a_whole_file() {
    let (t, segs) = tamper_fixture();
    let f = &segs[1];
    let mut l = lines(f);
    let seq = seq_of(l.last().unwrap());
    l.pop();
    write_lines(f, &l);
    assert_break(t.path(), BreakReason::Deleted, seq, &name(&segs[2]), 1);

    let (t, segs) = tamper_fixture();
    let first_of_removed = seq_of(&lines(&segs[1])[0]);
    fs::remove_file(&segs[1]).unwrap();
    assert_break(
        t.path(),
        BreakReason::Deleted,
        first_of_removed,
        &name(&segs[2]),
        1,
    );
}

#[test]
fn tamper_swap_two_lines() {
    let (t, segs) = tamper_fixture();
    let f = &segs[1];
    let mut l = lines(f);
    let seq = seq_of(&l[5]);
    l.swap(5, 6);
    write_lines(f, &l);
    assert_break(t.path(), BreakReason::Reordered, seq, &name(f), 6);
    // moved far away, into another file
    let (t, segs) = tamper_fixture();
    let mut a = lines(&segs[0]);
    let moved = a.remove(3);
    let seq = seq_of(&moved);
    write_lines(&segs[0], &a);
    let mut b = lines(&segs[2]);
    b.insert(2, moved);
    write_lines(&segs[2], &b);
    assert_break(t.path(), BreakReason::Reordered, seq, &name(&segs[0]), 4);
}

#[test]
fn tamper_duplicate_line() {
    let (t, segs) = tamper_fixture();
    let f = &segs[0];
    let mut l = lines(f);
    let dup = l[2].clone();
    l.insert(3, dup);
    write_lines(f, &l);
    assert_break(t.path(), BreakReason::Duplicated, 3, &name(f), 4);
}

#[test]
fn tamper_truncate_mid_line_without_seal() {
    // middle file
    let (t, segs) = tamper_fixture();
    let f = &segs[1];
    let l = lines(f);
    let bytes = fs::read(f).unwrap();
    let cut = bytes.len() - l.last().unwrap().len() / 2;
    fs::write(f, &bytes[..cut]).unwrap();
    assert_break(
        t.path(),
        BreakReason::Truncated,
        seq_of(l.last().unwrap()),
        &name(f),
        l.len() as u64,
    );
    // last file (no writer running)
    let (t, segs) = tamper_fixture();
    let f = segs.last().unwrap();
    let l = lines(f);
    let bytes = fs::read(f).unwrap();
    fs::write(f, &bytes[..bytes.len() - 30]).unwrap();
    assert_break(
        t.path(),
        BreakReason::Truncated,
        seq_of(l.last().unwrap()),
        &name(f),
        l.len() as u64,
    );
}

#[test]
fn tamper_foreign_file() {
    let (t, segs) = tamper_fixture();
    let other = tempfile::tempdir().unwrap();
    write_log(
        &AuditConfig {
            max_file_bytes: 4096,
            ..cfg(other.path())
        },
        60,
        |_| None,
    );
    let foreign = segments(other.path());
    let next_seq = assert_ok(t.path()).last_seq.unwrap() + 1;
    // (a) appended as the next file
    let last_no = record_no(segs.last().unwrap());
    let added = t
        .path()
        .join(format!("audit-20990101-{:06}.jsonl", last_no + 1));
    fs::copy(&foreign[1], &added).unwrap();
    assert_break(t.path(), BreakReason::Foreign, next_seq, &name(&added), 1);
    fs::remove_file(&added).unwrap();
    assert_ok(t.path());
    // (b) replacing one of ours under the same name
    let victim = &segs[1];
    let expected = seq_of(&lines(victim)[0]);
    fs::copy(&foreign[1], victim).unwrap();
    assert_break(t.path(), BreakReason::Foreign, expected, &name(victim), 1);
    // (c) a whole foreign first file (genesis of another log)
    let (t, segs) = tamper_fixture();
    fs::copy(&foreign[0], &segs[0]).unwrap();
    assert_break(t.path(), BreakReason::Foreign, 0, &name(&segs[0]), 1);
}

fn record_no(p: &Path) -> u64 {
    store::parse_segment_name(&name(p)).unwrap().1
}

#[test]
fn tamper_renamed_file() {
    let (t, segs) = tamper_fixture();
    // Swap the names of two files: each header still names its original file.
    let a = t.path().join("tmp");
    fs::rename(&segs[1], &a).unwrap();
    fs::rename(&segs[2], &segs[1]).unwrap();
    fs::rename(&a, &segs[2]).unwrap();
    let r = verify_dir(t.path()).unwrap();
    let b = r.first_break.unwrap();
    assert_eq!(
        (b.reason, b.file.as_str(), b.line),
        (BreakReason::Foreign, name(&segs[1]).as_str(), 1)
    );
}

#[test]
fn malformed_lines_and_empty_dirs() {
    let t = tempfile::tempdir().unwrap();
    let r = verify_dir(t.path()).unwrap();
    assert!(r.ok && r.records == 0 && r.files == 0);
    assert!(verify_dir(&t.path().join("missing")).is_err());
    let (t, segs) = tamper_fixture();
    let mut l = lines(&segs[0]);
    l.insert(2, "hello".into());
    write_lines(&segs[0], &l);
    assert_break(t.path(), BreakReason::Malformed, 2, &name(&segs[0]), 3);
}

#[test]
fn verify_summary_is_printable() {
    let (t, segs) = tamper_fixture();
    let ok = verify_dir(t.path()).unwrap();
    assert!(ok.summary().starts_with("OK: "));
    let mut l = lines(&segs[0]);
    l.remove(2);
    write_lines(&segs[0], &l);
    let r = verify_dir(t.path()).unwrap();
    let s = r.summary();
    assert!(
        s.starts_with("BROKEN at seq 2:") && s.contains("deleted"),
        "{s}"
    );
    let j = serde_json::to_value(&r).unwrap();
    assert_eq!(j["first_break"]["reason"], "deleted");
}

fn grep(dir: &Path, needle: &str) -> usize {
    fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.is_file())
        .map(|p| {
            fs::read_to_string(p)
                .unwrap_or_default()
                .matches(needle)
                .count()
        })
        .sum()
}

#[test]
fn erasure_through_the_writer() {
    let t = tempfile::tempdir().unwrap();
    let c = AuditConfig {
        max_file_bytes: 4096,
        ..cfg(t.path())
    };
    let h = AuditHandle::start(&c).unwrap();
    for i in 0..60 {
        put(
            &h,
            ev(
                i,
                Some(if i % 2 == 0 {
                    "alice@example.com"
                } else {
                    "bob"
                }),
            ),
        );
    }
    let exported = export_subject(t.path(), "alice@example.com");
    // export through the handle flushes first
    let exported_h = h.export_subject("alice@example.com").unwrap();
    assert_eq!(exported_h.len(), 30);
    assert!(exported.unwrap().len() <= 30);
    assert!(exported_h
        .iter()
        .all(|v| v["subject_value"]["id"] == "alice@example.com"));
    assert!(grep(t.path(), "alice@example.com") == 30);

    let rep = erase_subject(t.path(), "alice@example.com", Some(&h)).unwrap();
    assert_eq!(rep.records, 30);
    assert!(rep.files >= 2);
    assert!(rep.erasure_seq.is_some());
    // the writer keeps appending to the (rewritten) current file
    put(&h, ev(100, Some("bob")));
    assert!(h.flush(T));
    assert_eq!(grep(t.path(), "alice@example.com"), 0);
    let r = assert_ok(t.path());
    assert_eq!(r.erasures, 1);
    assert!(export_subject(t.path(), "alice@example.com")
        .unwrap()
        .is_empty());
    assert_eq!(export_subject(t.path(), "bob").unwrap().len(), 31);
    // erasure record holds counts only
    let erasure = segments(t.path())
        .iter()
        .flat_map(|f| lines(f))
        .find(|l| l.contains("\"kind\":\"erasure\""))
        .unwrap();
    let v: serde_json::Value = serde_json::from_str(&erasure).unwrap();
    assert_eq!(v["erased"].as_u64(), Some(30));
    // a running writer owns the directory: direct erasure is refused
    assert!(matches!(
        erase_subject(Path::new("/nonexistent-other"), "bob", Some(&h)),
        Err(AuditError::Io { .. })
    ));
    let cp = t.path().to_path_buf();
    let locked = std::thread::spawn(move || erase_subject(&cp, "bob", None))
        .join()
        .unwrap();
    assert!(matches!(locked, Err(AuditError::Locked { .. })));
    h.shutdown(T);
    // restart after erasure: chain continues
    write_log(&c, 2, |_| None);
    assert_ok(t.path());
}

#[test]
fn erasure_without_a_running_writer() {
    let t = tempfile::tempdir().unwrap();
    let c = cfg(t.path());
    write_log(&c, 20, |i| {
        if i < 5 {
            Some("Zoë \"Q\" \u{1}")
        } else {
            Some("carol")
        }
    });
    assert_eq!(
        export_subject(t.path(), "Zoë \"Q\" \u{1}").unwrap().len(),
        5
    );
    let rep = erase_subject(t.path(), "Zoë \"Q\" \u{1}", None).unwrap();
    assert_eq!((rep.records, rep.files), (5, 1));
    assert_eq!(grep(t.path(), "Zo"), 0);
    let r = assert_ok(t.path());
    assert_eq!((r.erasures, r.last_seq), (1, Some(21)));
    assert!(export_subject(t.path(), "Zoë \"Q\" \u{1}")
        .unwrap()
        .is_empty());
    assert_eq!(export_subject(t.path(), "carol").unwrap().len(), 15);
    // erasing again is harmless and still recorded
    let rep = erase_subject(t.path(), "Zoë \"Q\" \u{1}", None).unwrap();
    assert_eq!(rep.records, 0);
    assert_eq!(assert_ok(t.path()).erasures, 2);
}

#[test]
fn dead_letter_then_replay_restores_a_verifying_chain() {
    let t = tempfile::tempdir().unwrap();
    let sink = TestSink::default();
    let h = AuditHandle::start_with(&cfg(t.path()), fast_retry(&sink)).unwrap();
    put(&h, ev(0, None));
    assert!(h.flush(T));
    sink.fail_log.store(true, Ordering::SeqCst);
    for i in 1..=5 {
        put(&h, ev(i, Some(if i == 3 { "dave" } else { "erin" })));
    }
    // flush returns once the held records are durable in the dead-letter file
    assert!(h.flush(T));
    let st = h.stats();
    assert_eq!(st.dead_lettered, 5, "{st:?}");
    assert!(st.write_errors >= 1 && st.failing);
    assert!(
        !h.accepting(),
        "block mode refuses traffic while the log fails"
    );
    assert_eq!(st.dropped, 0);
    assert_eq!(lines(&t.path().join(DEAD_LETTER)).len(), 5);
    // the failed half-writes were cut back: the chain still verifies
    assert_ok(t.path());
    // data-subject requests cover the dead letter too
    assert_eq!(export_subject(t.path(), "dave").unwrap().len(), 1);
    sink.fail_log.store(false, Ordering::SeqCst);
    put(&h, ev(6, None));
    assert!(h.flush(T));
    assert!(h.accepting());
    assert!(!h.stats().failing);
    let n = h.replay_dead_letter(None).unwrap();
    assert_eq!(n, 5);
    h.shutdown(T);
    let r = assert_ok(t.path());
    assert_eq!(r.records, 1 + 7 + 1); // genesis, 7 events, one `resume` record
    assert_eq!(fs::metadata(t.path().join(DEAD_LETTER)).unwrap().len(), 0);
    let all = lines(&segments(t.path())[0]);
    assert_eq!(
        all.iter()
            .filter(|l| l.contains("\"replayed\":true"))
            .count(),
        5
    );
    let resume = all
        .iter()
        .find(|l| l.contains("\"kind\":\"resume\""))
        .unwrap();
    assert!(
        resume.contains("\"dead_lettered\":5,\"dropped\":0"),
        "{resume}"
    );
    assert_eq!(export_subject(t.path(), "dave").unwrap().len(), 1);
}

#[test]
fn dead_letter_replay_via_cli_function_and_shutdown_spill() {
    let t = tempfile::tempdir().unwrap();
    let sink = TestSink::default();
    let h = AuditHandle::start_with(
        &cfg(t.path()),
        StartOptions {
            retries_before_spill: 1000,
            ..fast_retry(&sink)
        },
    )
    .unwrap();
    sink.fail_log.store(true, Ordering::SeqCst);
    for i in 0..4 {
        put(&h, ev(i, None));
    }
    // held in memory (no spill yet); shutdown spills them, nothing is lost
    h.shutdown(T);
    assert!(matches!(h.record(ev(9, None)), Err(AuditError::Closed)));
    assert_eq!(h.stats().dead_lettered, 4);
    assert_eq!(replay_dead_letter(t.path()).unwrap(), 4);
    assert_eq!(assert_ok(t.path()).records, 5);
    assert_eq!(replay_dead_letter(t.path()).unwrap(), 0);
}

#[test]
fn recovery_without_dead_letter_writes_held_records_in_order() {
    let t = tempfile::tempdir().unwrap();
    let sink = TestSink::default();
    let h = AuditHandle::start_with(
        &cfg(t.path()),
        StartOptions {
            retries_before_spill: u32::MAX,
            ..fast_retry(&sink)
        },
    )
    .unwrap();
    sink.fail_log.store(true, Ordering::SeqCst);
    for i in 0..10 {
        put(&h, ev(i, None));
    }
    while h.stats().retry_len < 10 {
        std::thread::sleep(Duration::from_millis(1));
    }
    sink.fail_log.store(false, Ordering::SeqCst);
    assert!(h.flush(T));
    h.shutdown(T);
    let st = h.stats();
    assert_eq!(
        (st.written, st.dead_lettered, st.dropped),
        (10, 0, 0),
        "{st:?}"
    );
    let l = lines(&segments(t.path())[0]);
    let ids: Vec<String> = l[1..]
        .iter()
        .map(|x| {
            serde_json::from_str::<serde_json::Value>(x).unwrap()["request_id"]
                .as_str()
                .unwrap()
                .to_owned()
        })
        .collect();
    assert_eq!(ids, (0..10).map(|i| format!("req-{i}")).collect::<Vec<_>>());
    assert_ok(t.path());
}

#[test]
fn records_lost_only_when_dead_letter_also_fails_and_are_counted() {
    let t = tempfile::tempdir().unwrap();
    let sink = TestSink::default();
    let h = AuditHandle::start_with(&cfg(t.path()), fast_retry(&sink)).unwrap();
    sink.fail_log.store(true, Ordering::SeqCst);
    sink.fail_dl.store(true, Ordering::SeqCst);
    for i in 0..3 {
        put(&h, ev(i, None));
    }
    h.shutdown(T);
    let st = h.stats();
    assert_eq!(
        (st.dropped, st.dead_lettered, st.written),
        (3, 0, 0),
        "{st:?}"
    );
    assert_ok(t.path());
}

fn stalled(on_full: OnFull) -> (tempfile::TempDir, TestSink, AuditHandle) {
    let t = tempfile::tempdir().unwrap();
    let sink = TestSink::default();
    let c = AuditConfig {
        channel_capacity: 4,
        batch_max: 1,
        on_full,
        ..cfg(t.path())
    };
    let h = AuditHandle::start_with(
        &c,
        StartOptions {
            sink: Box::new(sink.clone()),
            ..StartOptions::default()
        },
    )
    .unwrap();
    sink.gate.arm();
    h.record(ev(0, None)).unwrap();
    sink.gate.wait_entered(); // the writer is now stuck inside a write
    (t, sink, h)
}

#[test]
fn block_mode_refuses_when_full_and_recovers() {
    let (t, sink, h) = stalled(OnFull::Block);
    assert!(h.accepting());
    let mut full = 0;
    for i in 1..=10 {
        if let Err(e) = h.record(ev(i, None)) {
            assert!(matches!(e, AuditError::Full));
            full += 1;
        }
    }
    assert_eq!(full, 6); // capacity 4
    assert!(!h.accepting());
    assert_eq!(h.stats().queue_len, 4);
    assert_eq!(h.stats().dropped, 6);
    sink.gate.release();
    assert!(h.flush(T));
    assert!(h.accepting());
    h.shutdown(T);
    assert_eq!(assert_ok(t.path()).records, 1 + 5);
}

#[test]
fn drop_mode_keeps_accepting_and_counts() {
    let (t, sink, h) = stalled(OnFull::Drop);
    for i in 1..=10 {
        let _ = h.record(ev(i, None));
    }
    assert!(h.accepting());
    assert_eq!(h.stats().dropped, 6);
    // flush cannot complete while the writer is stuck
    assert!(!h.flush(Duration::from_millis(50)));
    sink.gate.release();
    assert!(h.flush(T));
    h.shutdown(T);
    assert_eq!(h.stats().written, 5);
    assert_ok(t.path());
}

#[test]
fn retention_removes_old_files_and_verify_still_passes() {
    let t = tempfile::tempdir().unwrap();
    let c = AuditConfig {
        max_file_bytes: 4096,
        ..cfg(t.path())
    };
    write_log(&c, 80, |_| None);
    let before = segments(t.path());
    assert!(before.len() >= 4);
    // Nothing is older than an hour ago.
    let none = apply_retention(t.path(), Utc::now() - chrono::Duration::hours(1), None).unwrap();
    assert_eq!(none, RetentionReport::default());
    // Everything but the current file is "old" for a cutoff in the future.
    let rep = apply_retention(t.path(), Utc::now() + chrono::Duration::days(1), None).unwrap();
    assert_eq!(rep.removed_files.len(), before.len() - 1);
    let after = segments(t.path());
    assert_eq!(after[0], before[before.len() - 1]);
    let r = assert_ok(t.path());
    assert!(r.anchored);
    assert_eq!(r.first_seq, rep.first_seq);
    // the chain continues after a restart, and a second pass through a live handle works too
    let h = AuditHandle::start(&c).unwrap();
    for i in 0..80 {
        put(&h, ev(i, None));
    }
    assert!(h.flush(T));
    let rep2 = apply_retention(t.path(), Utc::now() + chrono::Duration::days(1), Some(&h)).unwrap();
    assert!(!rep2.removed_files.is_empty());
    h.shutdown(T);
    let r = assert_ok(t.path());
    assert!(r.anchored);
    // removing the anchor's file start without an anchor is a deletion
    let segs = segments(t.path());
    if segs.len() >= 2 {
        fs::remove_file(&segs[0]).unwrap();
        let r = verify_dir(t.path()).unwrap();
        assert_eq!(r.first_break.unwrap().reason, BreakReason::Deleted);
    }
}

#[test]
fn retention_thread_runs_on_its_own() {
    // retention_days with a tiny check interval: files written "now" are kept.
    let t = tempfile::tempdir().unwrap();
    let c = AuditConfig {
        max_file_bytes: 4096,
        retention_days: Some(1),
        retention_check_secs: 1,
        ..cfg(t.path())
    };
    let h = AuditHandle::start(&c).unwrap();
    for i in 0..50 {
        put(&h, ev(i, None));
    }
    assert!(h.flush(T));
    let n = segments(t.path()).len();
    h.shutdown(T);
    assert_eq!(segments(t.path()).len(), n);
    assert_ok(t.path());
}

#[test]
fn fsync_policies_all_produce_valid_logs() {
    for p in [
        FsyncPolicy::Batch,
        FsyncPolicy::Never,
        FsyncPolicy::Interval { interval_ms: 5 },
    ] {
        let t = tempfile::tempdir().unwrap();
        let c = AuditConfig {
            fsync: p,
            ..cfg(t.path())
        };
        write_log(&c, 50, |_| None);
        assert_eq!(assert_ok(t.path()).records, 51, "{p}");
    }
}

#[test]
fn concurrent_producers() {
    let t = tempfile::tempdir().unwrap();
    let h = AuditHandle::start(&cfg(t.path())).unwrap();
    let threads: Vec<_> = (0..4)
        .map(|k| {
            let h = h.clone();
            std::thread::spawn(move || {
                for i in 0..250 {
                    put(&h, ev(k * 1000 + i, None));
                }
            })
        })
        .collect();
    for th in threads {
        th.join().unwrap();
    }
    assert!(h.flush(T));
    h.shutdown(T);
    assert_eq!(h.stats().written, 1000);
    assert_eq!(assert_ok(t.path()).records, 1001);
}

#[test]
fn meta_json_missing_or_foreign() {
    let t = tempfile::tempdir().unwrap();
    let c = cfg(t.path());
    write_log(&c, 3, |_| None);
    // missing: recreated from the log id in the files, with a new caller key
    fs::remove_file(t.path().join("meta.json")).unwrap();
    write_log(&c, 3, |_| None);
    let r = assert_ok(t.path());
    assert_eq!(r.records, 7);
    let l = lines(&segments(t.path())[0]);
    let a: serde_json::Value = serde_json::from_str(&l[1]).unwrap();
    let b: serde_json::Value = serde_json::from_str(&l[5]).unwrap();
    assert_ne!(a["caller"], b["caller"]);
    // foreign: another directory's meta.json is refused at start-up
    let other = tempfile::tempdir().unwrap();
    write_log(&cfg(other.path()), 1, |_| None);
    fs::copy(other.path().join("meta.json"), t.path().join("meta.json")).unwrap();
    assert!(matches!(
        AuditHandle::start(&c),
        Err(AuditError::Corrupt(_))
    ));
    let v = verify_dir(t.path()).unwrap();
    assert_eq!(v.first_break.unwrap().reason, BreakReason::Foreign);
}

#[test]
fn second_writer_on_the_same_directory_is_refused() {
    let t = tempfile::tempdir().unwrap();
    let c = cfg(t.path());
    let h = AuditHandle::start(&c).unwrap();
    assert!(matches!(
        AuditHandle::start(&c),
        Err(AuditError::Locked { .. })
    ));
    assert!(matches!(
        replay_dead_letter(t.path()),
        Err(AuditError::Locked { .. })
    ));
    // verification works on a live directory
    put(&h, ev(1, None));
    assert!(h.flush(T));
    assert!(h.verify().unwrap().ok);
    h.shutdown(T);
    assert!(AuditHandle::start(&c).is_ok());
}

#[test]
fn failed_rotation_leaves_no_stray_file_and_recovers() {
    let t = tempfile::tempdir().unwrap();
    let sink = TestSink::default();
    let c = AuditConfig {
        max_file_bytes: 4096,
        batch_max: 4,
        ..cfg(t.path())
    };
    let opts = StartOptions {
        retries_before_spill: u32::MAX,
        ..fast_retry(&sink)
    };
    let h = AuditHandle::start_with(&c, opts).unwrap();
    for i in 0..4 {
        put(&h, ev(i, None));
    }
    assert!(h.flush(T));
    sink.fail_log.store(true, Ordering::SeqCst);
    for i in 4..40 {
        put(&h, ev(i, None));
    }
    while h.stats().retry_len < 36 {
        std::thread::sleep(Duration::from_millis(1));
    }
    // Rotations were attempted and failed: only files with a complete header exist.
    for s in segments(t.path()) {
        assert!(fs::metadata(&s).unwrap().len() > 0);
    }
    sink.fail_log.store(false, Ordering::SeqCst);
    assert!(h.flush(T));
    h.shutdown(T);
    let r = assert_ok(t.path());
    assert_eq!(r.records, 40 + r.files as u64);
    assert!(r.files >= 2);
}

#[derive(Clone, Debug)]
enum Op {
    Write(u8),
    Restart,
    Tear(u8),
    Erase(u8),
    Retain,
}

fn op() -> impl proptest::strategy::Strategy<Value = Op> {
    use proptest::prelude::*;
    prop_oneof![
        4 => (1u8..40).prop_map(Op::Write),
        1 => Just(Op::Restart),
        1 => (1u8..200).prop_map(Op::Tear),
        1 => (0u8..3).prop_map(Op::Erase),
        1 => Just(Op::Retain),
    ]
}

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig { cases: 12, ..Default::default() })]
    /// Any sequence of writes, restarts, crashes mid-line, erasures and retention leaves a log that
    /// verifies, with erased subjects gone and the others still exportable.
    #[test]
    fn any_history_verifies(ops in proptest::collection::vec(op(), 1..12)) {
        let t = tempfile::tempdir().unwrap();
        let c = AuditConfig { max_file_bytes: 4096, ..cfg(t.path()) };
        const SUBJECTS: [&str; 3] = ["s-zero", "s-one", "s-two"];
        let mut h = Some(AuditHandle::start(&c).unwrap());
        let mut erased = [false; 3];
        let mut n = 0u64;
        for o in &ops {
            match o {
                Op::Write(k) => {
                    let hh = h.get_or_insert_with(|| AuditHandle::start(&c).unwrap());
                    for _ in 0..*k {
                        let s = (n % 3) as usize;
                        erased[s] = false;
                        put(hh, ev(n, Some(SUBJECTS[s])));
                        n += 1;
                    }
                    proptest::prop_assert!(hh.flush(T));
                }
                Op::Restart => {
                    if let Some(hh) = h.take() {
                        hh.shutdown(T);
                    }
                }
                Op::Tear(b) => {
                    if let Some(hh) = h.take() {
                        hh.shutdown(T);
                    }
                    let last = segments(t.path()).pop().unwrap();
                    let mut f = fs::OpenOptions::new().append(true).open(&last).unwrap();
                    f.write_all(&b"{\"seq\":99999,\"ts\":\"2026-01-01T00:00:00.000Z\",\"kind\":\"request\",\"request_id\":\"torn-record-with-many-bytes-to-cut-anywhere-in-the-middle-of-it-xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx"[..*b as usize]).unwrap();
                }
                Op::Erase(s) => {
                    let s = *s as usize;
                    erase_subject(t.path(), SUBJECTS[s], h.as_ref()).unwrap();
                    erased[s] = true;
                }
                Op::Retain => {
                    apply_retention(t.path(), Utc::now() + chrono::Duration::days(1), h.as_ref()).unwrap();
                }
            }
        }
        if let Some(hh) = h.take() {
            hh.shutdown(T);
        }
        // a tear left by the last op is sealed by the next start
        AuditHandle::start(&c).unwrap().shutdown(T);
        let r = verify_both(t.path());
        proptest::prop_assert!(r.ok, "{} after {:?}", r.summary(), ops);
        for (i, s) in SUBJECTS.iter().enumerate() {
            if erased[i] {
                proptest::prop_assert_eq!(grep(t.path(), s), 0);
                proptest::prop_assert!(export_subject(t.path(), s).unwrap().is_empty());
            }
        }
    }
}

#[test]
fn io_errors_name_their_cause_once_in_a_chain() {
    // The CLI prints errors with their chain (`{:#}`).
    let e = AuditError::io(Path::new("audit"), io::Error::other("disk on fire"));
    let chain = format!("{:#}", anyhow::Error::from(e));
    assert_eq!(chain, "audit i/o error on audit: disk on fire");
    let missing = verify_dir(Path::new("/nonexistent-audit-dir"))
        .err()
        .unwrap();
    let chain = format!("{:#}", anyhow::Error::from(missing));
    assert_eq!(
        chain,
        "audit i/o error on /nonexistent-audit-dir: no such directory"
    );
}
