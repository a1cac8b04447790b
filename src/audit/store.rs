//! The log directory as a chained, append-only store: file naming and listing, the writer lock,
//! `meta.json` (log id + caller-hash key), start-up recovery (resume the chain, seal a torn tail),
//! rotation by size and by UTC day, and the fault-injection seams (`Sink`, `Clock`).
//!
//! Layout of a log directory:
//! - `audit-YYYYMMDD-NNNNNN.jsonl` — chained records; NNNNNN counts files from 1 and orders them
//!   (the date is informative; ordering never relies on the clock).
//! - `meta.json` (0600) — `{format, log_id, caller_key, created}`.
//! - `.lock` — `flock`ed by the single writer of the directory.
//! - `dead-letter.jsonl` — records that could not be chained yet (see `writer`).

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, NaiveDate, Utc};
use serde::{Deserialize, Serialize};
use tracing::{info, warn};

use super::chain::{self, Hash, GENESIS_PREV};
use super::record::{self, chain_line, encode_internal, Internal, Pending};
use super::AuditError;

pub(crate) const META: &str = "meta.json";
pub(crate) const LOCK: &str = ".lock";
/// Dead-letter file name inside the log directory.
pub const DEAD_LETTER: &str = "dead-letter.jsonl";

/// Where a write goes (lets a test sink fail only one of them).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Target {
    /// A chained log file.
    Log,
    /// The dead-letter file.
    DeadLetter,
}

/// The seam through which every log and dead-letter write and fsync passes; tests inject failures
/// (disk full, permission denied) and stalls. The default methods do the real thing.
pub trait Sink: Send {
    fn write(&mut self, target: Target, file: &mut File, buf: &[u8]) -> io::Result<()> {
        let _ = target;
        file.write_all(buf)
    }
    fn sync(&mut self, target: Target, file: &File) -> io::Result<()> {
        let _ = target;
        file.sync_data()
    }
}

/// The real file system.
#[derive(Clone, Copy, Debug, Default)]
pub struct FsSink;
impl Sink for FsSink {}

/// Time source for rotation and writer-made records (tests move the day forward).
pub trait Clock: Send + Sync {
    fn now(&self) -> DateTime<Utc>;
}

/// `Utc::now()`.
#[derive(Clone, Copy, Debug, Default)]
pub struct SystemClock;
impl Clock for SystemClock {
    fn now(&self) -> DateTime<Utc> {
        Utc::now()
    }
}

/// One log file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Segment {
    pub no: u64,
    pub name: String,
    pub path: PathBuf,
}

pub(crate) fn segment_name(date: NaiveDate, no: u64) -> String {
    format!("audit-{}-{:06}.jsonl", date.format("%Y%m%d"), no)
}

/// `audit-YYYYMMDD-N.jsonl` → (date, N).
pub(crate) fn parse_segment_name(name: &str) -> Option<(NaiveDate, u64)> {
    let rest = name.strip_prefix("audit-")?.strip_suffix(".jsonl")?;
    let (date, no) = rest.split_once('-')?;
    if date.len() != 8 || no.is_empty() || !no.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let date = NaiveDate::parse_from_str(date, "%Y%m%d").ok()?;
    Some((date, no.parse().ok()?))
}

/// Log files of `dir`, oldest first (by number, then name).
pub(crate) fn list_segments(dir: &Path) -> Result<Vec<Segment>, AuditError> {
    let mut out = Vec::new();
    for entry in fs::read_dir(dir).map_err(|e| AuditError::io(dir, e))? {
        let entry = entry.map_err(|e| AuditError::io(dir, e))?;
        let Some(name) = entry.file_name().to_str().map(str::to_owned) else {
            continue;
        };
        if let Some((_, no)) = parse_segment_name(&name) {
            if entry.file_type().map(|t| t.is_file()).unwrap_or(false) {
                out.push(Segment {
                    no,
                    path: entry.path(),
                    name,
                });
            }
        }
    }
    out.sort_by(|a, b| (a.no, &a.name).cmp(&(b.no, &b.name)));
    Ok(out)
}

/// Per-directory identity and key.
#[derive(Clone)]
pub(crate) struct Meta {
    pub log_id: String,
    pub caller_key: [u8; 32],
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct MetaFile {
    format: u32,
    log_id: String,
    caller_key: String,
    created: String,
}

/// Read `meta.json`; `Ok(None)` if absent.
pub(crate) fn load_meta(dir: &Path) -> Result<Option<Meta>, AuditError> {
    let path = dir.join(META);
    let bytes = match fs::read(&path) {
        Ok(b) => b,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(AuditError::io(&path, e)),
    };
    let m: MetaFile = serde_json::from_slice(&bytes)
        .map_err(|e| AuditError::Corrupt(format!("{}: {e}", path.display())))?;
    let mut key = [0u8; 32];
    hex::decode_to_slice(&m.caller_key, &mut key).map_err(|_| {
        AuditError::Corrupt(format!(
            "{}: caller_key is not 64 hex digits",
            path.display()
        ))
    })?;
    Ok(Some(Meta {
        log_id: m.log_id,
        caller_key: key,
    }))
}

fn store_meta(dir: &Path, meta: &Meta, now: &DateTime<Utc>) -> Result<(), AuditError> {
    let m = MetaFile {
        format: record::FORMAT,
        log_id: meta.log_id.clone(),
        caller_key: hex::encode(meta.caller_key),
        created: record::format_ts(now),
    };
    let mut bytes =
        serde_json::to_vec_pretty(&m).map_err(|e| AuditError::Corrupt(e.to_string()))?;
    bytes.push(b'\n');
    write_atomic(dir, META, &bytes)
}

/// Write `dir/name` via a temp file + rename, fsyncing file and directory.
pub(crate) fn write_atomic(dir: &Path, name: &str, bytes: &[u8]) -> Result<(), AuditError> {
    let tmp = dir.join(format!(".{name}.tmp"));
    let path = dir.join(name);
    let mut f = create_private(&tmp, true).map_err(|e| AuditError::io(&tmp, e))?;
    f.write_all(bytes)
        .and_then(|_| f.sync_all())
        .map_err(|e| AuditError::io(&tmp, e))?;
    fs::rename(&tmp, &path).map_err(|e| AuditError::io(&path, e))?;
    sync_dir(dir).map_err(|e| AuditError::io(dir, e))
}

/// Open for appending (O_APPEND, so a write after cutting back a failed one lands at the new end),
/// creating with mode 0600; `truncate` empties the file first.
pub(crate) fn create_private(path: &Path, truncate: bool) -> io::Result<File> {
    let mut o = OpenOptions::new();
    o.append(true).create(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        o.mode(0o600);
    }
    let f = o.open(path)?;
    if truncate {
        f.set_len(0)?;
    }
    Ok(f)
}

pub(crate) fn sync_dir(dir: &Path) -> io::Result<()> {
    #[cfg(unix)]
    {
        File::open(dir)?.sync_all()
    }
    #[cfg(not(unix))]
    {
        let _ = dir;
        Ok(())
    }
}

fn create_dir(dir: &Path) -> Result<(), AuditError> {
    let mut b = fs::DirBuilder::new();
    b.recursive(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::DirBuilderExt;
        b.mode(0o700);
    }
    b.create(dir).map_err(|e| AuditError::io(dir, e))
}

/// Exclusive writer lock on `dir/.lock` (released when dropped).
pub(crate) struct DirLock {
    _file: File,
}

#[cfg(unix)]
fn flock(f: &File, op: libc::c_int) -> io::Result<()> {
    use std::os::unix::io::AsRawFd;
    // SAFETY: flock on a valid, owned file descriptor has no memory-safety preconditions.
    let rc = unsafe { libc::flock(f.as_raw_fd(), op) };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

pub(crate) fn lock_dir(dir: &Path) -> Result<DirLock, AuditError> {
    let path = dir.join(LOCK);
    let file = create_private(&path, false).map_err(|e| AuditError::io(&path, e))?;
    #[cfg(unix)]
    {
        // A verifier probing the lock holds it for microseconds; retry briefly before giving up.
        let mut tries = 0;
        loop {
            match flock(&file, libc::LOCK_EX | libc::LOCK_NB) {
                Ok(()) => break,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock && tries < 10 => {
                    tries += 1;
                    std::thread::sleep(Duration::from_millis(20));
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    return Err(AuditError::Locked {
                        dir: dir.to_path_buf(),
                    })
                }
                Err(e) => return Err(AuditError::io(&path, e)),
            }
        }
    }
    Ok(DirLock { _file: file })
}

/// Is a writer (this or another process) holding the directory lock right now?
pub(crate) fn is_locked(dir: &Path) -> bool {
    #[cfg(unix)]
    {
        let Ok(f) = File::open(dir.join(LOCK)) else {
            return false;
        };
        match flock(&f, libc::LOCK_SH | libc::LOCK_NB) {
            Ok(()) => {
                let _ = flock(&f, libc::LOCK_UN);
                false
            }
            Err(e) => e.kind() == io::ErrorKind::WouldBlock,
        }
    }
    #[cfg(not(unix))]
    {
        let _ = dir;
        false
    }
}

/// A record that passed self-verification (parses, and its hash matches its bytes and stored prev).
#[derive(Clone, Debug)]
pub(crate) struct Checked {
    pub seq: u64,
    pub hash: Hash,
    pub prev: Hash,
    pub ts: String,
    pub log_id: Option<String>,
}

pub(crate) fn check_line(line: &[u8]) -> Option<Checked> {
    let s = record::split_line(line).ok()?;
    let head = record::parse_head(line).ok()?;
    let prev = chain::parse_hex(head.prev.as_bytes())?;
    if chain::link(&prev, s.canonical_open) != s.hash {
        return None;
    }
    Some(Checked {
        seq: head.seq,
        hash: s.hash,
        prev,
        ts: head.ts.to_owned(),
        log_id: head.log_id.map(str::to_owned),
    })
}

/// End state of a file: its last self-consistent record and where it ends.
#[derive(Debug)]
pub(crate) struct Tail {
    pub len: u64,
    /// Byte offset just after the last valid record (its `\n`, or EOF if `needs_newline`).
    pub valid_end: u64,
    pub last: Option<Checked>,
    /// The last valid record is complete but lacks its `\n`.
    pub needs_newline: bool,
}

/// Find the last valid record of a file, reading backwards in growing chunks.
pub(crate) fn scan_tail(path: &Path) -> io::Result<Tail> {
    let mut f = File::open(path)?;
    let len = f.metadata()?.len();
    let mut chunk = len.min(256 * 1024);
    loop {
        let start = len - chunk;
        let mut buf = vec![0u8; chunk as usize];
        f.seek(SeekFrom::Start(start))?;
        f.read_exact(&mut buf)?;
        // Unterminated tail (possibly a complete record missing only its newline).
        let last_nl = buf.iter().rposition(|&b| b == b'\n');
        let tail_from = last_nl.map_or(0, |p| p + 1);
        if tail_from < buf.len() && (start == 0 || last_nl.is_some()) {
            if let Some(c) = check_line(&buf[tail_from..]) {
                return Ok(Tail {
                    len,
                    valid_end: len,
                    last: Some(c),
                    needs_newline: true,
                });
            }
        }
        // Complete lines, newest first. The first piece of a chunk that does not start at 0 may be
        // partial, so it is only trusted when the chunk reaches the start of the file.
        let complete = &buf[..tail_from];
        let mut end = complete.len();
        while end > 0 {
            let line_end = end - 1; // position of '\n'
            let line_start = complete[..line_end]
                .iter()
                .rposition(|&b| b == b'\n')
                .map_or(0, |p| p + 1);
            if line_start == 0 && start > 0 {
                break;
            }
            if let Some(c) = check_line(&complete[line_start..line_end]) {
                return Ok(Tail {
                    len,
                    valid_end: start + end as u64,
                    last: Some(c),
                    needs_newline: false,
                });
            }
            end = line_start;
        }
        if start == 0 {
            return Ok(Tail {
                len,
                valid_end: 0,
                last: None,
                needs_newline: false,
            });
        }
        chunk = (chunk * 4).min(len);
    }
}

/// First line of a file, checked.
pub(crate) fn first_record(path: &Path) -> io::Result<Option<Checked>> {
    let f = File::open(path)?;
    let mut r = io::BufReader::new(f);
    let mut line = Vec::new();
    io::BufRead::read_until(&mut r, b'\n', &mut line)?;
    if line.last() == Some(&b'\n') {
        line.pop();
    }
    Ok(check_line(&line))
}

/// Options the store needs from the config plus the seams.
pub(crate) struct StoreOptions {
    pub max_file_bytes: u64,
    pub rotate_daily: bool,
    /// fsync on rotation and when creating files (false for `fsync: never`).
    pub sync_files: bool,
    pub sink: Box<dyn Sink>,
    pub clock: Arc<dyn Clock>,
}

impl Default for StoreOptions {
    fn default() -> Self {
        StoreOptions {
            max_file_bytes: 64 * 1024 * 1024,
            rotate_daily: true,
            sync_files: true,
            sink: Box::new(FsSink),
            clock: Arc::new(SystemClock),
        }
    }
}

/// What start-up found.
#[derive(Clone, Debug, Default)]
pub(crate) struct Recovery {
    pub sealed_bytes: Option<u64>,
}

/// A failed append: the first `committed` records are in the chain, the rest are not.
#[derive(Debug)]
pub(crate) struct AppendError {
    pub committed: usize,
    pub source: io::Error,
}

/// The open chain of one directory. Exactly one exists per directory (lock file).
pub(crate) struct Store {
    pub dir: PathBuf,
    _lock: DirLock,
    pub meta: Meta,
    opts: StoreOptions,
    file: File,
    file_no: u64,
    file_name: String,
    file_date: NaiveDate,
    file_len: u64,
    /// The current file holds only its header: never rotate away from it (a record larger than
    /// `max_file_bytes` would otherwise rotate forever).
    fresh: bool,
    /// A failed write could not be rolled back; the file must be cut back to `file_len` before writing.
    tainted: bool,
    next_seq: u64,
    prev: Hash,
    dirty: bool,
    buf: Vec<u8>,
    pub recovery: Recovery,
}

impl Store {
    /// Open `dir` for writing: lock it, load or create `meta.json`, resume the chain from the last
    /// valid record and seal a torn tail with an explicit `seal` record.
    pub fn open(dir: &Path, opts: StoreOptions) -> Result<Store, AuditError> {
        create_dir(dir)?;
        let lock = lock_dir(dir)?;
        let now = opts.clock.now();
        let segments = list_segments(dir)?;
        let meta = match load_meta(dir)? {
            Some(m) => m,
            None => {
                let log_id = match segments.first() {
                    None => hex::encode(rand::random::<[u8; 16]>()),
                    Some(s) => first_record(&s.path)
                        .map_err(|e| AuditError::io(&s.path, e))?
                        .and_then(|c| c.log_id)
                        .ok_or_else(|| {
                            AuditError::Corrupt(format!(
                                "{} is missing and the log id cannot be read from {}",
                                META, s.name
                            ))
                        })?,
                };
                if !segments.is_empty() {
                    warn!(dir = %dir.display(), "audit: meta.json missing; recreated with a new caller-hash key (caller hashes change from here on)");
                }
                let m = Meta {
                    log_id,
                    caller_key: rand::random(),
                };
                store_meta(dir, &m, &now)?;
                m
            }
        };

        let recovery = Recovery::default();
        let Some(last) = segments.last().cloned() else {
            let date = now.date_naive();
            let name = segment_name(date, 1);
            let path = dir.join(&name);
            let file = create_private(&path, true).map_err(|e| AuditError::io(&path, e))?;
            let mut s = Store::assemble(
                dir,
                lock,
                meta,
                opts,
                file,
                1,
                name,
                date,
                0,
                0,
                GENESIS_PREV,
                recovery,
            );
            s.write_header(true).map_err(|e| AuditError::io(&path, e))?;
            s.sync().map_err(|e| AuditError::io(&path, e))?;
            info!(dir = %dir.display(), "audit: created log directory (genesis)");
            return Ok(s);
        };

        // A meta.json from another directory would silently fork the log: refuse to start.
        let header = first_record(&last.path).map_err(|e| AuditError::io(&last.path, e))?;
        if let Some(theirs) = header.as_ref().and_then(|c| c.log_id.as_deref()) {
            if theirs != meta.log_id {
                return Err(AuditError::Corrupt(format!(
                    "{} belongs to log {theirs} but {META} says {}; restore the right {META}",
                    last.name, meta.log_id
                )));
            }
        }
        let (date, no) = parse_segment_name(&last.name).unwrap_or((now.date_naive(), last.no));
        let tail = scan_tail(&last.path).map_err(|e| AuditError::io(&last.path, e))?;
        let torn: u64;
        let mut header_needed = None;
        let (next_seq, prev, valid_end) = match &tail.last {
            Some(c) => {
                torn = tail.len - tail.valid_end;
                (c.seq + 1, c.hash, tail.valid_end)
            }
            None => {
                // Nothing valid in the newest file (crash while creating it): chain on from the previous
                // file and give this one a fresh header.
                torn = tail.len;
                match segments.len().checked_sub(2).map(|i| &segments[i]) {
                    Some(p) => {
                        let pt = scan_tail(&p.path).map_err(|e| AuditError::io(&p.path, e))?;
                        match pt.last {
                            Some(c) if pt.valid_end == pt.len && !pt.needs_newline => {
                                header_needed = Some(false);
                                (c.seq + 1, c.hash, 0)
                            }
                            _ => {
                                return Err(AuditError::Corrupt(format!(
                                    "{} has no valid record and {} does not end with one; run `jimini audit verify`",
                                    last.name, p.name
                                )))
                            }
                        }
                    }
                    None => {
                        header_needed = Some(true);
                        (0, GENESIS_PREV, 0)
                    }
                }
            }
        };
        let torn_bytes = if torn > 0 && !tail.needs_newline {
            let mut f = File::open(&last.path).map_err(|e| AuditError::io(&last.path, e))?;
            f.seek(SeekFrom::Start(valid_end))
                .map_err(|e| AuditError::io(&last.path, e))?;
            let mut b = Vec::new();
            f.read_to_end(&mut b)
                .map_err(|e| AuditError::io(&last.path, e))?;
            Some(b)
        } else {
            None
        };
        let mut file =
            create_private(&last.path, false).map_err(|e| AuditError::io(&last.path, e))?;
        if torn_bytes.is_some() {
            file.set_len(valid_end)
                .map_err(|e| AuditError::io(&last.path, e))?;
        }
        if tail.needs_newline {
            file.write_all(b"\n")
                .map_err(|e| AuditError::io(&last.path, e))?;
        }
        let len = valid_end + u64::from(tail.needs_newline);
        let mut s = Store::assemble(
            dir,
            lock,
            meta,
            opts,
            file,
            no,
            last.name.clone(),
            date,
            len,
            next_seq,
            prev,
            recovery,
        );
        if let Some(genesis) = header_needed {
            s.write_header(genesis)
                .map_err(|e| AuditError::io(&last.path, e))?;
        }
        if let Some(tb) = torn_bytes {
            let seal = encode_internal(
                &Internal::Seal {
                    file: &last.name,
                    torn_bytes: tb.len() as u64,
                    torn_sha3: chain::sha3(&tb),
                },
                &s.opts.clock.now(),
            );
            s.append(std::slice::from_ref(&seal))
                .map_err(|e| AuditError::io(&last.path, e.source))?;
            warn!(file = %last.name, torn_bytes = tb.len(), seq = s.next_seq - 1, "audit: torn tail found at start-up; removed and sealed");
            s.recovery.sealed_bytes = Some(tb.len() as u64);
        }
        s.sync().map_err(|e| AuditError::io(&last.path, e))?;
        info!(dir = %dir.display(), next_seq = s.next_seq, file = %s.file_name, "audit: resumed chain");
        Ok(s)
    }

    #[allow(clippy::too_many_arguments)]
    fn assemble(
        dir: &Path,
        lock: DirLock,
        meta: Meta,
        opts: StoreOptions,
        file: File,
        file_no: u64,
        file_name: String,
        file_date: NaiveDate,
        file_len: u64,
        next_seq: u64,
        prev: Hash,
        recovery: Recovery,
    ) -> Store {
        Store {
            dir: dir.to_path_buf(),
            _lock: lock,
            meta,
            opts,
            file,
            file_no,
            file_name,
            file_date,
            file_len,
            fresh: false,
            tainted: false,
            next_seq,
            prev,
            dirty: false,
            buf: Vec::with_capacity(64 * 1024),
            recovery,
        }
    }

    #[cfg(test)]
    pub fn next_seq(&self) -> u64 {
        self.next_seq
    }
    pub fn current_no(&self) -> u64 {
        self.file_no
    }
    pub fn current_name(&self) -> &str {
        &self.file_name
    }
    pub fn clock(&self) -> &Arc<dyn Clock> {
        &self.opts.clock
    }
    pub fn sink_mut(&mut self) -> &mut dyn Sink {
        self.opts.sink.as_mut()
    }
    pub fn caller_key(&self) -> &[u8; 32] {
        &self.meta.caller_key
    }

    /// Write the genesis (empty directory) or file header record into the (empty) current file.
    fn write_header(&mut self, genesis: bool) -> io::Result<()> {
        let now = self.opts.clock.now();
        let p = if genesis {
            encode_internal(
                &Internal::Genesis {
                    log_id: &self.meta.log_id,
                    file: &self.file_name,
                },
                &now,
            )
        } else {
            encode_internal(
                &Internal::File {
                    log_id: &self.meta.log_id,
                    file: &self.file_name,
                },
                &now,
            )
        };
        let mut line = Vec::with_capacity(256);
        let h = chain_line(&mut line, self.next_seq, &self.prev, &p);
        self.opts.sink.write(Target::Log, &mut self.file, &line)?;
        self.file_len += line.len() as u64;
        self.next_seq += 1;
        self.prev = h;
        self.fresh = true;
        self.dirty = true;
        Ok(())
    }

    /// Append records in order. All-or-prefix: on error the first `committed` records are in the chain
    /// and nothing else is in the file (a partial write is cut back).
    pub fn append(&mut self, recs: &[Pending]) -> Result<(), AppendError> {
        let mut committed = 0usize;
        let fail = |committed, source| Err(AppendError { committed, source });
        if self.tainted {
            if let Err(e) = self.file.set_len(self.file_len) {
                return fail(0, e);
            }
            self.tainted = false;
        }
        let mut buf = std::mem::take(&mut self.buf);
        buf.clear();
        let mut seq = self.next_seq;
        let mut prev = self.prev;
        let mut in_buf = 0usize;
        let today = self.opts.clock.now().date_naive();
        let result = (|| {
            for p in recs {
                let need_day = self.opts.rotate_daily && today != self.file_date;
                let projected = self.file_len + buf.len() as u64 + p.size() as u64;
                let need_size =
                    projected > self.opts.max_file_bytes && !(self.fresh && buf.is_empty());
                if need_day || need_size {
                    if !buf.is_empty() {
                        if let Err(e) = self.write_buf(&buf) {
                            return fail(committed, e);
                        }
                        self.next_seq = seq;
                        self.prev = prev;
                        committed += in_buf;
                        in_buf = 0;
                        buf.clear();
                    }
                    if let Err(e) = self.rotate(today) {
                        return fail(committed, e);
                    }
                    seq = self.next_seq;
                    prev = self.prev;
                }
                prev = chain_line(&mut buf, seq, &prev, p);
                seq += 1;
                in_buf += 1;
            }
            if !buf.is_empty() {
                if let Err(e) = self.write_buf(&buf) {
                    return fail(committed, e);
                }
                self.next_seq = seq;
                self.prev = prev;
            }
            Ok(())
        })();
        self.buf = buf;
        result
    }

    fn write_buf(&mut self, buf: &[u8]) -> io::Result<()> {
        match self.opts.sink.write(Target::Log, &mut self.file, buf) {
            Ok(()) => {
                self.file_len += buf.len() as u64;
                self.dirty = true;
                self.fresh = false;
                Ok(())
            }
            Err(e) => {
                // Cut a partial write back so the file never keeps a torn line between good ones.
                if self.file.set_len(self.file_len).is_err() {
                    self.tainted = true;
                }
                Err(e)
            }
        }
    }

    /// Start the next file (its header chains to the last record of the current one).
    fn rotate(&mut self, today: NaiveDate) -> io::Result<()> {
        if self.opts.sync_files {
            self.sync()?;
        }
        let no = self.file_no + 1;
        let name = segment_name(today, no);
        let path = self.dir.join(&name);
        // Number `no` is above every committed file, so an existing file of that name can only be the
        // leftover of our own failed rotation.
        let file = create_private(&path, true)?;
        if self.opts.sync_files {
            sync_dir(&self.dir)?;
        }
        let old = std::mem::replace(&mut self.file, file);
        let saved = (
            self.file_no,
            std::mem::replace(&mut self.file_name, name),
            self.file_date,
            self.file_len,
        );
        self.file_no = no;
        self.file_date = today;
        self.file_len = 0;
        if let Err(e) = self.write_header(false) {
            let _ = fs::remove_file(&path);
            self.file = old;
            (self.file_no, self.file_name, self.file_date, self.file_len) = saved;
            return Err(e);
        }
        info!(file = %self.file_name, "audit: rotated");
        Ok(())
    }

    /// fsync the current file if it has unsynced writes.
    pub fn sync(&mut self) -> io::Result<()> {
        if self.dirty {
            self.opts.sink.sync(Target::Log, &self.file)?;
            self.dirty = false;
        }
        Ok(())
    }

    pub fn is_dirty(&self) -> bool {
        self.dirty
    }

    /// Re-open the current file after it was replaced by rename (erasure rewrite).
    pub fn reopen_current(&mut self) -> io::Result<()> {
        let path = self.dir.join(&self.file_name);
        let f = create_private(&path, false)?;
        self.file_len = f.metadata()?.len();
        self.file = f;
        Ok(())
    }

    /// Append one writer-made record and make it durable.
    pub fn append_durable(&mut self, p: &Pending) -> Result<u64, AuditError> {
        let path = self.dir.join(&self.file_name);
        self.append(std::slice::from_ref(p))
            .map_err(|e| AuditError::io(&path, e.source))?;
        self.sync().map_err(|e| AuditError::io(&path, e))?;
        Ok(self.next_seq - 1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn segment_names_sort_and_parse() {
        let d = NaiveDate::from_ymd_opt(2026, 1, 2).unwrap();
        let n = segment_name(d, 7);
        assert_eq!(n, "audit-20260102-000007.jsonl");
        assert_eq!(parse_segment_name(&n), Some((d, 7)));
        assert_eq!(
            parse_segment_name("audit-20260102-1234567.jsonl"),
            Some((d, 1_234_567))
        );
        for bad in [
            "audit-2026010-000001.jsonl",
            "audit-20261302-000001.jsonl",
            "audit-20260102-.jsonl",
            "x.jsonl",
            "audit-20260102-00a001.jsonl",
        ] {
            assert_eq!(parse_segment_name(bad), None, "{bad}");
        }
    }

    #[test]
    fn lock_is_exclusive() {
        let t = tempfile::tempdir().unwrap();
        let s = Store::open(t.path(), StoreOptions::default()).unwrap();
        assert!(is_locked(t.path()));
        assert!(matches!(
            Store::open(t.path(), StoreOptions::default()),
            Err(AuditError::Locked { .. })
        ));
        drop(s);
        assert!(!is_locked(t.path()));
        let s = Store::open(t.path(), StoreOptions::default()).unwrap();
        assert_eq!(s.next_seq(), 1);
    }
}
