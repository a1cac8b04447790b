//! Chain verification (`jimini audit verify DIR`, `GET /admin/audit/verify`): one streaming pass over
//! the files in order, reporting the first break with its seq, file, line and reason. A sealed tear is
//! a normal chained `seal` record, so it verifies; any other gap, edit or foreign data is a break.
//!
//! Per line: take it apart (strict), parse the few members needed, recompute
//! `SHA3-256(prev ‖ canonical bytes)` from the stored bytes, check the subject commitment, then the
//! link to the previous record (seq + 1, prev = previous hash) and file headers (log id, file name).
//! When a record's seq is ahead of the expected one the rest of the log is scanned to tell a deleted
//! record from a reordered one.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::sync::{mpsc, Mutex};

use serde::Serialize;

use super::chain::{self, Hash, GENESIS_PREV};
use super::record::{self, SubjectValue};
use super::store::{is_locked, list_segments, load_meta, Segment};
use super::AuditError;

/// Why the chain is broken.
#[derive(Serialize, Clone, Copy, Debug, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum BreakReason {
    /// A record's bytes no longer match its hash, or its prev does not match the record before it.
    Edited,
    /// Records are missing (seq gap that never closes, removed file, or a start no anchor covers).
    Deleted,
    /// The expected record appears later in the log.
    Reordered,
    /// A seq that was already verified appears again.
    Duplicated,
    /// A file ends inside a record and no seal record covers it.
    Truncated,
    /// A file or record from another log directory (different log id) or a renamed file.
    Foreign,
    /// A line that is not a record of this format.
    Malformed,
}

impl BreakReason {
    pub fn as_str(&self) -> &'static str {
        match self {
            BreakReason::Edited => "edited",
            BreakReason::Deleted => "deleted",
            BreakReason::Reordered => "reordered",
            BreakReason::Duplicated => "duplicated",
            BreakReason::Truncated => "truncated",
            BreakReason::Foreign => "foreign",
            BreakReason::Malformed => "malformed",
        }
    }
}

/// The first place the chain fails.
#[derive(Serialize, Clone, Debug, PartialEq, Eq)]
pub struct Break {
    /// The seq the verifier expected at this point (the first seq that cannot be verified).
    pub seq: u64,
    /// File name inside the directory.
    pub file: String,
    /// 1-based line number in `file`.
    pub line: u64,
    pub reason: BreakReason,
    /// Human-readable explanation (never contains record contents).
    pub detail: String,
}

/// Result of verifying a directory.
#[derive(Serialize, Clone, Debug, Default, PartialEq, Eq)]
pub struct VerifyReport {
    pub ok: bool,
    /// Records verified (up to the first break).
    pub records: u64,
    pub files: usize,
    pub first_seq: Option<u64>,
    pub last_seq: Option<u64>,
    /// Hash of the last verified record: pin it somewhere else to protect the tail, too.
    pub head_hash: Option<String>,
    pub log_id: Option<String>,
    /// Seal records (torn tails sealed at start-up).
    pub sealed_tears: u64,
    /// Erasure records.
    pub erasures: u64,
    /// The oldest file does not start at genesis; an anchor record vouches for where it starts.
    pub anchored: bool,
    /// A writer is running and its last line was still being written (not counted as a break).
    pub partial_tail: bool,
    pub first_break: Option<Break>,
}

impl VerifyReport {
    /// One line for the CLI.
    pub fn summary(&self) -> String {
        match &self.first_break {
            None => format!(
                "OK: {} records in {} files (seq {}..{}), {} sealed tear(s), {} erasure(s){}; head {}",
                self.records,
                self.files,
                self.first_seq.map_or("-".into(), |s| s.to_string()),
                self.last_seq.map_or("-".into(), |s| s.to_string()),
                self.sealed_tears,
                self.erasures,
                if self.anchored { ", starts at a retention anchor" } else { "" },
                self.head_hash.as_deref().unwrap_or("-"),
            ),
            Some(b) => format!(
                "BROKEN at seq {}: {} line {}: {}: {}",
                b.seq,
                b.file,
                b.line,
                b.reason.as_str(),
                b.detail
            ),
        }
    }
}

/// Verify the chain of `dir`.
///
/// Hashing dominates the cost (SHA3 in software, ~2 µs per 600-byte record), so lines are read in
/// ~1 MiB chunks and their self-consistency is checked on worker threads (as many as the CPU quota
/// allows), while this thread walks the chain in order with the results.
pub fn verify_dir(dir: &Path) -> Result<VerifyReport, AuditError> {
    let workers = std::thread::available_parallelism()
        .map_or(1, |n| n.get())
        .min(8);
    verify_with(dir, workers)
}

/// `verify_dir` with an explicit number of hashing threads (1 = all on the calling thread).
pub fn verify_with(dir: &Path, workers: usize) -> Result<VerifyReport, AuditError> {
    if !dir.is_dir() {
        return Err(AuditError::io(
            dir,
            std::io::Error::new(std::io::ErrorKind::NotFound, "no such directory"),
        ));
    }
    let segs = list_segments(dir)?;
    let meta_log = load_meta(dir).ok().flatten().map(|m| m.log_id);
    let live = is_locked(dir);
    let mut v = Verifier {
        log_id: meta_log,
        ..Verifier::default()
    };
    v.report.files = segs.len();
    let names: Vec<&str> = segs.iter().map(|s| s.name.as_str()).collect();
    let last_file = segs.len().saturating_sub(1);
    let mut reader = ChunkReader::new(&segs);
    if workers <= 1 {
        while let Some(c) = reader.next_chunk()? {
            if !v.chunk(&c, None, &names, live && c.file == last_file) {
                break;
            }
        }
    } else {
        pipeline(&mut reader, workers, |c, f| {
            v.chunk(c, Some(f), &names, live && c.file == last_file)
        })?;
    }
    Ok(v.finish(segs.first().map(|s| s.name.as_str())))
}

/// Whole lines of one file, about 1 MiB at a time.
struct Chunk {
    file: usize,
    /// 1-based number of the first line in `data`.
    first_line: u64,
    data: Vec<u8>,
    /// End offset of each line in `data` (after its `\n`, if it has one).
    ends: Vec<usize>,
}

impl Chunk {
    /// Lines: (bytes without the `\n`, whether there was one).
    fn lines(&self) -> impl Iterator<Item = (&[u8], bool)> {
        let mut start = 0;
        self.ends.iter().map(move |&end| {
            let l = &self.data[start..end];
            start = end;
            match l.split_last() {
                Some((b'\n', body)) => (body, true),
                _ => (l, false),
            }
        })
    }
}

struct ChunkReader<'a> {
    segs: &'a [Segment],
    file: usize,
    reader: Option<BufReader<File>>,
    line: u64,
}

const CHUNK: usize = 1 << 20;

impl<'a> ChunkReader<'a> {
    fn new(segs: &'a [Segment]) -> Self {
        ChunkReader {
            segs,
            file: 0,
            reader: None,
            line: 1,
        }
    }

    fn next_chunk(&mut self) -> Result<Option<Chunk>, AuditError> {
        loop {
            let Some(seg) = self.segs.get(self.file) else {
                return Ok(None);
            };
            let r = match &mut self.reader {
                Some(r) => r,
                None => {
                    let f = File::open(&seg.path).map_err(|e| AuditError::io(&seg.path, e))?;
                    self.line = 1;
                    self.reader.insert(BufReader::with_capacity(CHUNK, f))
                }
            };
            let mut data = Vec::with_capacity(CHUNK + 4096);
            let mut ends = Vec::with_capacity(CHUNK / 256);
            while data.len() < CHUNK {
                let n = r
                    .read_until(b'\n', &mut data)
                    .map_err(|e| AuditError::io(&seg.path, e))?;
                if n == 0 {
                    break;
                }
                ends.push(data.len());
            }
            if data.is_empty() {
                self.reader = None;
                self.file += 1;
                continue;
            }
            let c = Chunk {
                file: self.file,
                first_line: self.line,
                data,
                ends,
            };
            self.line += c.ends.len() as u64;
            return Ok(Some(c));
        }
    }
}

/// Read chunks in order, hash-check their lines on `workers` threads and hand them back in order to
/// `step` (which returns false to stop early). At most `2 × workers` chunks are in flight.
fn pipeline(
    reader: &mut ChunkReader<'_>,
    workers: usize,
    mut step: impl FnMut(&Chunk, &[bool]) -> bool,
) -> Result<(), AuditError> {
    let (job_tx, job_rx) = mpsc::sync_channel::<(u64, Chunk)>(workers * 2);
    let job_rx = Mutex::new(job_rx);
    let (res_tx, res_rx) = mpsc::channel::<(u64, Chunk, Vec<bool>)>();
    std::thread::scope(|s| {
        // Owned by the closure so that every way out of it (including `?`-style early returns)
        // drops the sender, which ends the workers before the scope joins them.
        let job_tx = job_tx;
        for _ in 0..workers {
            let res_tx = res_tx.clone();
            let job_rx = &job_rx;
            s.spawn(move || loop {
                let job = match job_rx.lock() {
                    Ok(rx) => rx.recv(),
                    Err(_) => return,
                };
                let Ok((i, c)) = job else { return };
                let flags = c
                    .lines()
                    .map(|(l, nl)| nl && record::self_consistent(l))
                    .collect();
                if res_tx.send((i, c, flags)).is_err() {
                    return;
                }
            });
        }
        drop(res_tx);
        let mut pending = BTreeMap::new();
        let (mut sent, mut done, mut eof) = (0u64, 0u64, false);
        let result = loop {
            while !eof && sent - done < (workers * 2) as u64 {
                match reader.next_chunk() {
                    Ok(Some(c)) => {
                        if job_tx.send((sent, c)).is_err() {
                            eof = true;
                        } else {
                            sent += 1;
                        }
                    }
                    Ok(None) => eof = true,
                    Err(e) => return Err(e),
                }
            }
            if done == sent {
                break Ok(());
            }
            let (c, f) = loop {
                if let Some(x) = pending.remove(&done) {
                    break x;
                }
                match res_rx.recv() {
                    Ok((i, c, f)) => {
                        pending.insert(i, (c, f));
                    }
                    Err(_) => {
                        return Err(AuditError::Corrupt("a verification worker stopped".into()))
                    }
                }
            };
            done += 1;
            if !step(&c, &f) {
                break Ok(());
            }
        };
        // Dropping the job sender ends the workers; the scope joins them.
        drop(job_tx);
        result
    })
}

/// A pending seq gap: deleted unless the missing seq shows up later (then reordered).
struct Gap {
    seq: u64,
    file: String,
    line: u64,
    found_seq: u64,
    found: bool,
}

#[derive(Default)]
struct Verifier {
    report: VerifyReport,
    log_id: Option<String>,
    /// (next expected seq, hash of the last record)
    state: Option<(u64, Hash)>,
    anchored_start: Option<(u64, Hash)>,
    anchors: Vec<(u64, Hash)>,
    gap: Option<Gap>,
}

impl Verifier {
    fn expected(&self) -> u64 {
        self.state.map_or(0, |s| s.0)
    }

    fn brk(&mut self, reason: BreakReason, file: &str, line: u64, detail: String) {
        if self.report.first_break.is_none() {
            let seq = self.expected();
            self.report.first_break = Some(Break {
                seq,
                file: file.to_owned(),
                line,
                reason,
                detail,
            });
        }
    }

    /// Walk one chunk. Returns false once nothing more needs to be read.
    fn chunk(
        &mut self,
        c: &Chunk,
        flags: Option<&[bool]>,
        names: &[&str],
        live_last: bool,
    ) -> bool {
        let file = names[c.file];
        for (i, (line, nl)) in c.lines().enumerate() {
            let line_no = c.first_line + i as u64;
            if let Some(gap) = &mut self.gap {
                if record::peek_seq(line) == Some(gap.seq) {
                    gap.found = true;
                    return false;
                }
                continue;
            }
            if !nl {
                if live_last {
                    // A running writer is in the middle of this line.
                    self.report.partial_tail = true;
                    return true;
                }
                let why = "file ends inside a record and no seal record follows";
                self.brk(BreakReason::Truncated, file, line_no, why.into());
                return false;
            }
            let self_ok = flags.and_then(|f| f.get(i).copied()).unwrap_or(false);
            self.feed(line, file, line_no, self_ok);
            if self.report.first_break.is_some() {
                return false;
            }
        }
        true
    }

    /// `self_ok`: a worker already found the line's hash consistent with its bytes and canonical prev.
    fn feed(&mut self, line: &[u8], file: &str, line_no: u64, self_ok: bool) {
        use BreakReason::*;
        let split = match record::split_line(line) {
            Ok(s) => s,
            Err(why) => return self.brk(Malformed, file, line_no, why.into()),
        };
        let head =
            match record::fast_head(line, &split).map_or_else(|| record::parse_head(line), Ok) {
                Ok(h) => h,
                Err(_) => {
                    let prev = self.state.map_or(GENESIS_PREV, |s| s.1);
                    let reason = if chain::link(&prev, split.canonical_open) != split.hash {
                        Edited
                    } else {
                        Malformed
                    };
                    let why = "record does not parse as a record of this format";
                    return self.brk(reason, file, line_no, why.into());
                }
            };
        let Some(prev) = chain::parse_hex(head.prev.as_bytes()) else {
            return self.brk(Malformed, file, line_no, "prev is not 64 hex digits".into());
        };
        // The worker hashed with the prev at its canonical place; that counts only if it is the prev.
        let checked =
            self_ok && record::canonical_prev(split.canonical_open) == Some(head.prev.as_bytes());
        if !checked && chain::link(&prev, split.canonical_open) != split.hash {
            return self.brk(
                Edited,
                file,
                line_no,
                "record bytes do not match its hash".into(),
            );
        }
        if let Some(sv) = split.subject_value {
            let ok = serde_json::from_slice::<SubjectValue>(sv)
                .ok()
                .zip(head.subject)
                .is_some_and(|(sv, c)| record::subject_matches(&sv, c));
            if !ok {
                return self.brk(
                    Edited,
                    file,
                    line_no,
                    "subject_value does not match the chained commitment".into(),
                );
            }
        }
        let is_header = matches!(head.kind, "genesis" | "file");
        if is_header {
            match (&self.log_id, head.log_id) {
                (_, None) => {
                    return self.brk(
                        Malformed,
                        file,
                        line_no,
                        "file header without log_id".into(),
                    )
                }
                (Some(mine), Some(theirs)) if mine != theirs => {
                    return self.brk(
                        Foreign,
                        file,
                        line_no,
                        format!("file belongs to log {theirs}, this directory is log {mine}"),
                    );
                }
                (None, Some(theirs)) => self.log_id = Some(theirs.to_owned()),
                _ => {}
            }
            if head.file != Some(file) {
                let named = head.file.unwrap_or("-");
                return self.brk(
                    Foreign,
                    file,
                    line_no,
                    format!("file header names {named}: file renamed or copied"),
                );
            }
        }
        match self.state {
            None => {
                if head.kind == "genesis" {
                    if head.seq != 0 || prev != GENESIS_PREV {
                        return self.brk(
                            Malformed,
                            file,
                            line_no,
                            "genesis record must have seq 0 and a zero prev".into(),
                        );
                    }
                } else {
                    self.anchored_start = Some((head.seq, prev));
                }
                self.report.first_seq = Some(head.seq);
            }
            Some((next, last)) => {
                if head.kind == "genesis" {
                    return self.brk(
                        Foreign,
                        file,
                        line_no,
                        "a second genesis record: data from another log".into(),
                    );
                }
                if head.seq == next && prev != last {
                    return self.brk(
                        Edited,
                        file,
                        line_no,
                        format!(
                            "prev does not match the hash of seq {}",
                            next.wrapping_sub(1)
                        ),
                    );
                }
                if head.seq > next {
                    self.gap = Some(Gap {
                        seq: next,
                        file: file.to_owned(),
                        line: line_no,
                        found_seq: head.seq,
                        found: false,
                    });
                    return;
                }
                if head.seq < next {
                    return self.brk(
                        Duplicated,
                        file,
                        line_no,
                        format!("seq {} appears again", head.seq),
                    );
                }
            }
        }
        if line_no == 1 && !is_header {
            return self.brk(
                Malformed,
                file,
                line_no,
                "file does not start with a header record".into(),
            );
        }
        if line_no > 1 && is_header {
            return self.brk(
                Malformed,
                file,
                line_no,
                "header record inside a file".into(),
            );
        }
        match head.kind {
            "seal" => self.report.sealed_tears += 1,
            "erasure" => self.report.erasures += 1,
            "anchor" => {
                if let (Some(s), Some(p)) = (
                    head.first_seq,
                    head.first_prev.and_then(|p| chain::parse_hex(p.as_bytes())),
                ) {
                    self.anchors.push((s, p));
                }
            }
            _ => {}
        }
        self.state = Some((head.seq + 1, split.hash));
        self.report.records += 1;
        self.report.last_seq = Some(head.seq);
    }

    fn finish(mut self, first_file: Option<&str>) -> VerifyReport {
        if let Some(g) = self.gap.take() {
            let (reason, detail) = if g.found {
                (
                    BreakReason::Reordered,
                    format!(
                        "found seq {} where seq {} belongs; seq {} appears later",
                        g.found_seq, g.seq, g.seq
                    ),
                )
            } else {
                (
                    BreakReason::Deleted,
                    format!(
                        "seq {} to {} missing (next record found is seq {})",
                        g.seq,
                        g.found_seq - 1,
                        g.found_seq
                    ),
                )
            };
            self.report.first_break = Some(Break {
                seq: g.seq,
                file: g.file,
                line: g.line,
                reason,
                detail,
            });
        }
        if let (None, Some(start)) = (&self.report.first_break, self.anchored_start) {
            if self.anchors.contains(&start) {
                self.report.anchored = true;
            } else {
                self.report.first_break = Some(Break {
                    seq: start.0,
                    file: first_file.unwrap_or("-").to_owned(),
                    line: 1,
                    reason: BreakReason::Deleted,
                    detail: format!(
                        "log starts at seq {} without genesis and no anchor record covers it",
                        start.0
                    ),
                });
            }
        }
        if let Some((_, h)) = self.state {
            self.report.head_hash = Some(hex::encode(h));
        }
        self.report.log_id = self.log_id.take();
        self.report.ok = self.report.first_break.is_none();
        self.report
    }
}
