//! Retention: remove whole log files whose newest record is older than the cutoff, oldest first and
//! never the file being written. Before anything is deleted an `anchor` record (first remaining seq,
//! the hash it chains to, i.e. the hash of the last removed record) is appended and fsynced, so
//! verification can start at the oldest remaining file and a crash mid-way never leaves an
//! unverifiable directory.

use std::fs;
use std::path::Path;

use chrono::{DateTime, Utc};
use serde::Serialize;
use tracing::{info, warn};

use super::record::{encode_internal, Internal};
use super::store::{self, first_record, list_segments, scan_tail, Segment, Store, StoreOptions};
use super::writer::AuditHandle;
use super::AuditError;

/// Outcome of a retention pass.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct RetentionReport {
    pub removed_files: Vec<String>,
    /// Seq of the anchor record written (None when nothing expired).
    pub anchor_seq: Option<u64>,
    /// Seq of the first record that remains.
    pub first_seq: Option<u64>,
}

/// Remove files whose newest record is older than `cutoff`. Through the writer when `handle` runs on
/// `dir`, else directly under the directory lock.
pub fn apply_retention(
    dir: &Path,
    cutoff: DateTime<Utc>,
    handle: Option<&AuditHandle>,
) -> Result<RetentionReport, AuditError> {
    if let Some(h) = handle {
        if h.dir().canonicalize().ok() == dir.canonicalize().ok() {
            return h.apply_retention(cutoff);
        }
    }
    if !dir.is_dir() {
        return Err(AuditError::io(
            dir,
            std::io::Error::from(std::io::ErrorKind::NotFound),
        ));
    }
    let mut st = Store::open(dir, StoreOptions::default())?;
    retain_in_store(&mut st, cutoff)
}

/// Timestamp of the newest record of a file (its last valid line); file mtime if unreadable.
fn newest_ts(seg: &Segment) -> Option<DateTime<Utc>> {
    if let Ok(t) = scan_tail(&seg.path) {
        if let Some(ts) = t
            .last
            .and_then(|c| DateTime::parse_from_rfc3339(&c.ts).ok())
        {
            return Some(ts.with_timezone(&Utc));
        }
    }
    let m = fs::metadata(&seg.path).ok()?.modified().ok()?;
    Some(DateTime::<Utc>::from(m))
}

pub(crate) fn retain_in_store(
    st: &mut Store,
    cutoff: DateTime<Utc>,
) -> Result<RetentionReport, AuditError> {
    let segs = list_segments(&st.dir)?;
    let cur = st.current_no();
    let expired = segs
        .iter()
        .take_while(|s| s.no < cur && newest_ts(s).is_some_and(|t| t < cutoff))
        .count();
    if expired == 0 {
        return Ok(RetentionReport::default());
    }
    let keep = &segs[expired];
    let first = first_record(&keep.path)
        .map_err(|e| AuditError::io(&keep.path, e))?
        .ok_or_else(|| {
            AuditError::Corrupt(format!(
                "{}: first line is not a valid record; retention skipped",
                keep.name
            ))
        })?;
    let anchor = encode_internal(
        &Internal::Anchor {
            first_seq: first.seq,
            first_prev: first.prev,
            first_file: &keep.name,
            removed_files: expired as u64,
        },
        &st.clock().now(),
    );
    let anchor_seq = st.append_durable(&anchor)?;
    let mut removed = Vec::with_capacity(expired);
    for s in &segs[..expired] {
        // Oldest first: a failure leaves a contiguous suffix; the next pass finishes the job.
        if let Err(e) = fs::remove_file(&s.path) {
            warn!(file = %s.name, error = %e, "audit retention: could not remove file; will retry");
            break;
        }
        removed.push(s.name.clone());
    }
    let _ = store::sync_dir(&st.dir);
    info!(
        removed = removed.len(),
        first_seq = first.seq,
        "audit retention: expired files removed"
    );
    Ok(RetentionReport {
        removed_files: removed,
        anchor_seq: Some(anchor_seq),
        first_seq: Some(first.seq),
    })
}
