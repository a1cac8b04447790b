//! Data-subject requests (GDPR art. 15 / 17). The chain covers only a salted commitment to the subject
//! id; the id and salt (`subject_value`) sit beside it, outside the hashed bytes. Export finds a
//! subject's records by that value; erasure rewrites the affected files without it (temp file +
//! rename, under the writer lock) and appends an `erasure` record, so verification stays green and
//! the remaining commitment can no longer be linked to the person.

use std::fs::File;
use std::io::{self, BufRead, BufReader, BufWriter, Write};
use std::path::Path;

use serde::Serialize;
use tracing::warn;

use super::record::{self, encode_internal, find, Internal, SubjectValue};
use super::store::{self, list_segments, Store, StoreOptions, DEAD_LETTER};
use super::writer::AuditHandle;
use super::AuditError;

/// Outcome of an erasure.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct EraseReport {
    /// Records (chained, dead-lettered or held in memory) whose subject value was removed.
    pub records: u64,
    /// Log files rewritten.
    pub files: u64,
    /// Seq of the `erasure` record (None if it is still waiting for a failing log to recover).
    pub erasure_seq: Option<u64>,
}

/// Records of `subject` (log files and dead-letter file), as stored, including their `subject_value`.
/// Records whose subject value does not match its chained commitment are skipped (tampering; `verify`
/// reports it).
pub fn export_subject(dir: &Path, subject: &str) -> Result<Vec<serde_json::Value>, AuditError> {
    if !dir.is_dir() {
        return Err(AuditError::io(
            dir,
            io::Error::from(io::ErrorKind::NotFound),
        ));
    }
    let needle = record::subject_needle(subject);
    let mut out = Vec::new();
    for seg in list_segments(dir)? {
        scan_matches(&seg.path, &needle, |line| {
            let Ok(split) = record::split_line(line) else {
                return;
            };
            let (Some(sv), Ok(head)) = (split.subject_value, record::parse_head(line)) else {
                return;
            };
            let ok = serde_json::from_slice::<SubjectValue>(sv)
                .ok()
                .zip(head.subject)
                .is_some_and(|(sv, c)| {
                    sv.id == record::clip(subject, record::MAX_SUBJECT)
                        && record::subject_matches(&sv, c)
                });
            if !ok {
                warn!(file = %seg.name, "audit export: subject value does not match its commitment; record skipped");
                return;
            }
            if let Ok(v) = serde_json::from_slice(line) {
                out.push(v);
            }
        })?;
    }
    let dl = dir.join(DEAD_LETTER);
    if dl.exists() {
        scan_matches(&dl, &needle, |line| {
            if let Ok(v) = serde_json::from_slice(line) {
                out.push(v);
            }
        })?;
    }
    Ok(out)
}

/// Erase a data subject. With a live handle on the same directory the writer thread does it (in
/// order with queued records, which are therefore covered); otherwise the directory lock is taken
/// (`Locked` if a proxy is running on it elsewhere) and the erasure record is appended directly.
pub fn erase_subject(
    dir: &Path,
    subject: &str,
    handle: Option<&AuditHandle>,
) -> Result<EraseReport, AuditError> {
    if let Some(h) = handle {
        if same_dir(h.dir(), dir) {
            return h.erase_subject(subject);
        }
    }
    if !dir.is_dir() {
        return Err(AuditError::io(
            dir,
            io::Error::from(io::ErrorKind::NotFound),
        ));
    }
    let mut st = Store::open(dir, StoreOptions::default())?;
    let mut rep = erase_in_store(&mut st, subject, None)?;
    let rec = encode_internal(
        &Internal::Erasure {
            erased: rep.records,
            files: rep.files,
        },
        &st.clock().now(),
    );
    rep.erasure_seq = Some(st.append_durable(&rec)?);
    Ok(rep)
}

fn same_dir(a: &Path, b: &Path) -> bool {
    match (a.canonicalize(), b.canonicalize()) {
        (Ok(a), Ok(b)) => a == b,
        _ => a == b,
    }
}

/// `{"id":<json id>,"salt":"` — how an in-memory subject value for `id` starts.
pub(crate) fn subject_value_prefix(id: &str) -> Vec<u8> {
    let mut v = b"{\"id\":".to_vec();
    record::push_json_str(&mut v, record::clip(id, record::MAX_SUBJECT));
    v.extend_from_slice(b",\"salt\":\"");
    v
}

/// Remove `id`'s subject values from every log file and the dead-letter file(s). The caller holds the
/// store (hence the lock) and appends the erasure record.
pub(crate) fn erase_in_store(
    st: &mut Store,
    id: &str,
    fallback: Option<&Path>,
) -> Result<EraseReport, AuditError> {
    let cur = st.dir.join(st.current_name());
    st.sync().map_err(|e| AuditError::io(&cur, e))?;
    let needle = record::subject_needle(id);
    let mut rep = EraseReport::default();
    for seg in list_segments(&st.dir)? {
        let n = rewrite_without(&st.dir, &seg.path, &seg.name, &needle, true)?;
        if n > 0 {
            rep.records += n;
            rep.files += 1;
            if seg.no == st.current_no() {
                st.reopen_current()
                    .map_err(|e| AuditError::io(&seg.path, e))?;
            }
        }
    }
    let dl = st.dir.join(DEAD_LETTER);
    rep.records += rewrite_without(&st.dir, &dl, DEAD_LETTER, &needle, false)?;
    if let Some(fb) = fallback {
        if let (Some(parent), Some(name)) = (fb.parent(), fb.file_name().and_then(|n| n.to_str())) {
            let parent = if parent.as_os_str().is_empty() {
                Path::new(".")
            } else {
                parent
            };
            rep.records += rewrite_without(parent, fb, name, &needle, false)?;
        }
    }
    Ok(rep)
}

/// Call `f` for every complete line of `path` containing `needle`.
fn scan_matches(path: &Path, needle: &[u8], mut f: impl FnMut(&[u8])) -> Result<(), AuditError> {
    let file = match File::open(path) {
        Ok(x) => x,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(AuditError::io(path, e)),
    };
    let mut r = BufReader::with_capacity(1 << 20, file);
    let mut line = Vec::with_capacity(1024);
    loop {
        line.clear();
        if r.read_until(b'\n', &mut line)
            .map_err(|e| AuditError::io(path, e))?
            == 0
        {
            return Ok(());
        }
        if line.last() != Some(&b'\n') {
            return Ok(()); // partial line being written
        }
        line.pop();
        if find(&line, needle).is_some() {
            f(&line);
        }
    }
}

/// Where to cut a matching line: the start of its `subject_value` member, which must be the last one.
fn cut_at(line: &[u8], needle: &[u8], chained: bool) -> Option<usize> {
    let pos = find(line, needle)?;
    if !line.ends_with(b"}}") {
        return None;
    }
    if chained {
        // Only ever cut the member that follows the hash (never touch hashed bytes).
        let s = record::split_line(line).ok()?;
        if s.tail_start != pos {
            return None;
        }
    }
    Some(pos)
}

/// Rewrite `path` without the matching subject values (atomically). Returns how many were removed.
fn rewrite_without(
    dir: &Path,
    path: &Path,
    name: &str,
    needle: &[u8],
    chained: bool,
) -> Result<u64, AuditError> {
    let mut hits = 0u64;
    scan_matches(path, needle, |line| {
        hits += u64::from(cut_at(line, needle, chained).is_some())
    })?;
    if hits == 0 {
        return Ok(0);
    }
    let tmp = dir.join(format!(".{name}.erase.tmp"));
    let io_err = |p: &Path, e| AuditError::io(p, e);
    let src = File::open(path).map_err(|e| io_err(path, e))?;
    let mut r = BufReader::with_capacity(1 << 20, src);
    let out = store::create_private(&tmp, true).map_err(|e| io_err(&tmp, e))?;
    let mut w = BufWriter::with_capacity(1 << 20, out);
    let mut line = Vec::with_capacity(1024);
    let mut removed = 0u64;
    loop {
        line.clear();
        if r.read_until(b'\n', &mut line)
            .map_err(|e| io_err(path, e))?
            == 0
        {
            break;
        }
        let nl = line.last() == Some(&b'\n');
        let body = if nl {
            &line[..line.len() - 1]
        } else {
            &line[..]
        };
        match cut_at(body, needle, chained) {
            Some(pos) if nl => {
                w.write_all(&body[..pos])
                    .and_then(|_| w.write_all(b"}\n"))
                    .map_err(|e| io_err(&tmp, e))?;
                removed += 1;
            }
            _ => w.write_all(&line).map_err(|e| io_err(&tmp, e))?,
        }
    }
    let out = w.into_inner().map_err(|e| io_err(&tmp, e.into_error()))?;
    out.sync_all().map_err(|e| io_err(&tmp, e))?;
    drop(out);
    std::fs::rename(&tmp, path).map_err(|e| io_err(path, e))?;
    store::sync_dir(dir).map_err(|e| io_err(dir, e))?;
    Ok(removed)
}
