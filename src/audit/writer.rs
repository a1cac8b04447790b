//! The background writer: a bounded channel from the request path to one `std::thread` that encodes,
//! chains, batches and fsyncs records; memory-bounded retry with backoff and the dead-letter file when
//! writes fail; the retention ticker; and `AuditHandle`, the only thing the proxy touches.
//!
//! The request path only does `try_send` of a boxed event (never blocks, never touches the disk).
//! Everything that mutates the directory while a proxy runs (erasure, retention, replay) is executed
//! by the writer thread itself, in channel order, so there is exactly one writer per directory.

use std::collections::{HashMap, VecDeque};
use std::fs::File;
use std::io::{self, BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, SyncSender, TrySendError};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use serde::Serialize;
use tracing::{error, info, warn};

use super::config::{AuditConfig, FsyncPolicy, OnFull};
use super::record::{encode_event_with, encode_internal, AuditEvent, Internal, Pending};
use super::retention::{self, RetentionReport};
use super::store::{
    self, Clock, FsSink, Sink, Store, StoreOptions, SystemClock, Target, DEAD_LETTER,
};
use super::subject::{self, EraseReport};
use super::AuditError;

/// Counters for telemetry (`jimini_audit_*`).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct AuditStats {
    /// Records in the chain.
    pub written: u64,
    /// Records lost: channel full (either mode) or neither chain nor dead letter writable.
    pub dropped: u64,
    /// Failed write/fsync attempts.
    pub write_errors: u64,
    /// Records moved to the dead-letter file.
    pub dead_lettered: u64,
    /// Dead-lettered records replayed back into the chain.
    pub replayed: u64,
    /// Records waiting in the channel.
    pub queue_len: usize,
    /// Records held in memory for retry.
    pub retry_len: usize,
    /// The chain is not writable at the moment (records go to retry / dead letter).
    pub failing: bool,
    /// Torn tails sealed at start-up.
    pub sealed_tears: u64,
}

#[derive(Default)]
struct Shared {
    written: AtomicU64,
    dropped: AtomicU64,
    write_errors: AtomicU64,
    dead_lettered: AtomicU64,
    replayed: AtomicU64,
    queue_len: AtomicUsize,
    retry_len: AtomicUsize,
    failing: AtomicBool,
    stopped: AtomicBool,
    sealed_tears: AtomicU64,
    last_drop_log: AtomicU64,
}

type Reply<T> = SyncSender<T>;

enum Msg {
    Event(Box<(AuditEvent, DateTime<Utc>)>),
    /// An event whose sender waits until it is written (and fsynced under `fsync: batch`).
    DurableEvent(Box<(AuditEvent, DateTime<Utc>)>, Reply<bool>),
    Flush(Reply<bool>),
    Erase(String, Reply<Result<EraseReport, AuditError>>),
    Retain(
        DateTime<Utc>,
        Option<Reply<Result<RetentionReport, AuditError>>>,
    ),
    Replay(Option<PathBuf>, Reply<Result<usize, AuditError>>),
    Shutdown(Reply<bool>),
}

/// Fault-injection and time seams for [`AuditHandle::start_with`]. `Default` = the real thing.
pub struct StartOptions {
    pub sink: Box<dyn Sink>,
    pub clock: Arc<dyn Clock>,
    /// First retry delay after a failed write (doubles up to `retry_backoff_max`). Default 100 ms.
    pub retry_backoff: Duration,
    pub retry_backoff_max: Duration,
    /// Failed retries after which held records are spilled to the dead-letter file. Default 5.
    pub retries_before_spill: u32,
}

impl Default for StartOptions {
    fn default() -> Self {
        StartOptions {
            sink: Box::new(FsSink),
            clock: Arc::new(SystemClock),
            retry_backoff: Duration::from_millis(100),
            retry_backoff_max: Duration::from_secs(5),
            retries_before_spill: 5,
        }
    }
}

struct Inner {
    tx: Option<SyncSender<Msg>>,
    shared: Arc<Shared>,
    dir: PathBuf,
    on_full: OnFull,
    high_water: usize,
    writer: Mutex<Option<JoinHandle<()>>>,
    retention: Mutex<Option<(mpsc::Sender<()>, JoinHandle<()>)>>,
}

impl Drop for Inner {
    fn drop(&mut self) {
        // Stop the retention ticker; its sender clone is what would keep the writer alive.
        if let Ok(mut g) = self.retention.lock() {
            if let Some((stop, h)) = g.take() {
                drop(stop);
                let _ = h.join();
            }
        }
    }
}

/// Handle to the audit writer of one directory. Cheap to clone; `Send + Sync`.
#[derive(Clone)]
pub struct AuditHandle {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for AuditHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuditHandle")
            .field("dir", &self.inner.dir)
            .finish()
    }
}

impl AuditHandle {
    /// Open the directory (recovering/sealing a torn tail and resuming the chain) and start the writer
    /// thread, plus the retention thread if `retention_days` is set. With `enabled: false` returns a
    /// handle that accepts and discards everything.
    pub fn start(cfg: &AuditConfig) -> Result<AuditHandle, AuditError> {
        AuditHandle::start_with(cfg, StartOptions::default())
    }

    /// `start` with injected sink / clock / retry timing (tests, fault drills).
    pub fn start_with(cfg: &AuditConfig, opts: StartOptions) -> Result<AuditHandle, AuditError> {
        cfg.validate()?;
        if !cfg.enabled {
            return Ok(AuditHandle::disabled());
        }
        let store = Store::open(
            &cfg.dir,
            StoreOptions {
                max_file_bytes: cfg.max_file_bytes,
                rotate_daily: cfg.rotate_daily,
                sync_files: cfg.fsync != FsyncPolicy::Never,
                sink: opts.sink,
                clock: opts.clock,
            },
        )?;
        let dir = store.dir.clone();
        let shared = Arc::new(Shared::default());
        if store.recovery.sealed_bytes.is_some() {
            shared.sealed_tears.store(1, Ordering::Relaxed);
        }
        let pending_dl = std::fs::metadata(dir.join(DEAD_LETTER))
            .map(|m| m.len())
            .unwrap_or(0);
        if pending_dl > 0 {
            warn!(bytes = pending_dl, "audit: dead-letter file holds records not yet in the chain; run `jimini audit replay`");
        }
        let (tx, rx) = mpsc::sync_channel(cfg.channel_capacity);
        let worker = Worker {
            store,
            shared: shared.clone(),
            batch_max: cfg.batch_max,
            batch_wait: if cfg.fsync == FsyncPolicy::Batch {
                cfg.batch_wait()
            } else {
                Duration::ZERO
            },
            fsync: cfg.fsync,
            retry: VecDeque::new(),
            retry_bytes: 0,
            retry_max_bytes: cfg.retry_max_bytes,
            backoff0: opts.retry_backoff,
            backoff_max: opts.retry_backoff_max,
            backoff: opts.retry_backoff,
            next_retry: None,
            failed_retries: 0,
            retries_before_spill: opts.retries_before_spill,
            episode_spilled: 0,
            episode_dropped: 0,
            dead_letter: DeadLetter {
                primary: dir.join(DEAD_LETTER),
                fallback: cfg.dead_letter_fallback.clone(),
                max_bytes: cfg.dead_letter_max_bytes,
            },
            waiters: Vec::new(),
            last_sync: Instant::now(),
            caller_hashes: HashMap::new(),
        };
        let writer = std::thread::Builder::new()
            .name("jimini-audit-writer".into())
            .spawn(move || worker.run(rx))
            .map_err(|e| AuditError::io(&dir, e))?;
        let retention = match cfg.retention_days {
            Some(days) => {
                let (stop_tx, stop_rx) = mpsc::channel::<()>();
                let tick_tx = tx.clone();
                let every = Duration::from_secs(cfg.retention_check_secs);
                let h = std::thread::Builder::new()
                    .name("jimini-audit-retention".into())
                    .spawn(move || retention_ticker(tick_tx, stop_rx, days, every))
                    .map_err(|e| AuditError::io(&dir, e))?;
                Some((stop_tx, h))
            }
            None => None,
        };
        let cap = cfg.channel_capacity;
        Ok(AuditHandle {
            inner: Arc::new(Inner {
                tx: Some(tx),
                shared,
                dir,
                on_full: cfg.on_full,
                // Refuse new requests a little before the channel is full so requests already in
                // flight still find room for their records.
                high_water: (cap - cap / 10).max(1),
                writer: Mutex::new(Some(writer)),
                retention: Mutex::new(retention),
            }),
        })
    }

    /// A handle that records nothing (`audit.enabled: false`).
    pub fn disabled() -> AuditHandle {
        AuditHandle {
            inner: Arc::new(Inner {
                tx: None,
                shared: Arc::new(Shared::default()),
                dir: PathBuf::new(),
                on_full: OnFull::Drop,
                high_water: usize::MAX,
                writer: Mutex::new(None),
                retention: Mutex::new(None),
            }),
        }
    }

    /// The log directory (empty for a disabled handle).
    pub fn dir(&self) -> &Path {
        &self.inner.dir
    }

    /// Queue one record. Never blocks. `Err(Full)` when the channel is full: the record is lost and
    /// counted in `dropped` (in `block` mode too — `accepting()` is what keeps that from happening).
    pub fn record(&self, ev: AuditEvent) -> Result<(), AuditError> {
        let Some(tx) = &self.inner.tx else {
            return Ok(());
        };
        let sh = &self.inner.shared;
        if sh.stopped.load(Ordering::Relaxed) {
            sh.dropped.fetch_add(1, Ordering::Relaxed);
            return Err(AuditError::Closed);
        }
        self.enqueue(tx, Msg::Event(Box::new((ev, Utc::now()))))
    }

    /// Queue an event message without ever blocking; a full or closed channel drops it (counted
    /// and logged).
    fn enqueue(&self, tx: &SyncSender<Msg>, msg: Msg) -> Result<(), AuditError> {
        let sh = &self.inner.shared;
        sh.queue_len.fetch_add(1, Ordering::Relaxed);
        match tx.try_send(msg) {
            Ok(()) => Ok(()),
            Err(e) => {
                sh.queue_len.fetch_sub(1, Ordering::Relaxed);
                let total = sh.dropped.fetch_add(1, Ordering::Relaxed) + 1;
                self.log_drop(total);
                match e {
                    TrySendError::Full(_) => Err(AuditError::Full),
                    TrySendError::Disconnected(_) => Err(AuditError::Closed),
                }
            }
        }
    }

    /// Like [`record`](Self::record), but wait (at most `timeout`) until the record is written —
    /// and fsynced under `fsync: batch` — before returning. Concurrent callers share one write and
    /// one fsync (group commit). Returns whether the record was confirmed in time. This is the
    /// `audit.durability: ack` path: the proxy holds the end of a response until its record is
    /// durable, so a crash can never lose the record of a response a client finished reading.
    pub fn record_durable(&self, ev: AuditEvent, timeout: Duration) -> Result<bool, AuditError> {
        let Some(tx) = &self.inner.tx else {
            return Ok(true);
        };
        let sh = &self.inner.shared;
        if sh.stopped.load(Ordering::Relaxed) {
            sh.dropped.fetch_add(1, Ordering::Relaxed);
            return Err(AuditError::Closed);
        }
        let (ack_tx, ack_rx) = mpsc::sync_channel(1);
        self.enqueue(tx, Msg::DurableEvent(Box::new((ev, Utc::now())), ack_tx))?;
        Ok(ack_rx.recv_timeout(timeout).unwrap_or(false))
    }

    /// Rate-limited (once a second) so a stalled disk cannot flood the log.
    fn log_drop(&self, total: u64) {
        let now = Utc::now().timestamp().max(0) as u64;
        let sh = &self.inner.shared;
        let last = sh.last_drop_log.load(Ordering::Relaxed);
        if now > last
            && sh
                .last_drop_log
                .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
        {
            warn!(
                dropped_total = total,
                queue_len = sh.queue_len.load(Ordering::Relaxed),
                "audit: channel full, record dropped"
            );
        }
    }

    /// Whether the proxy should accept new requests. Always true in `drop` mode; in `block` mode false
    /// while the channel is over its high-water mark (90 %), while the chain is not writable, or after
    /// the writer stopped — the glue then answers 503.
    pub fn accepting(&self) -> bool {
        let inner = &self.inner;
        if inner.tx.is_none() || inner.on_full == OnFull::Drop {
            return true;
        }
        let sh = &inner.shared;
        sh.queue_len.load(Ordering::Relaxed) < inner.high_water
            && !sh.failing.load(Ordering::Relaxed)
            && !sh.stopped.load(Ordering::Relaxed)
    }

    pub fn stats(&self) -> AuditStats {
        let sh = &self.inner.shared;
        AuditStats {
            written: sh.written.load(Ordering::Relaxed),
            dropped: sh.dropped.load(Ordering::Relaxed),
            write_errors: sh.write_errors.load(Ordering::Relaxed),
            dead_lettered: sh.dead_lettered.load(Ordering::Relaxed),
            replayed: sh.replayed.load(Ordering::Relaxed),
            queue_len: sh.queue_len.load(Ordering::Relaxed),
            retry_len: sh.retry_len.load(Ordering::Relaxed),
            failing: sh.failing.load(Ordering::Relaxed),
            sealed_tears: sh.sealed_tears.load(Ordering::Relaxed),
        }
    }

    /// Wait until everything queued before this call is durable (fsynced in the chain, or in the
    /// dead-letter file). False on timeout or if the writer is gone.
    pub fn flush(&self, timeout: Duration) -> bool {
        if self.inner.tx.is_none() {
            return true;
        }
        self.call(Msg::Flush, timeout).unwrap_or(false)
    }

    /// Flush, stop the writer and retention threads. Records still held for retry go to the dead-letter
    /// file. Later `record` calls return `Err(Closed)`.
    pub fn shutdown(&self, timeout: Duration) {
        if self.inner.tx.is_none() || self.inner.shared.stopped.swap(true, Ordering::SeqCst) {
            return;
        }
        if let Ok(mut g) = self.inner.retention.lock() {
            if let Some((stop, h)) = g.take() {
                drop(stop);
                let _ = h.join();
            }
        }
        let ok = self.call(Msg::Shutdown, timeout).unwrap_or(false);
        if ok {
            if let Ok(mut g) = self.inner.writer.lock() {
                if let Some(h) = g.take() {
                    let _ = h.join();
                }
            }
        } else {
            error!("audit: writer did not stop within the shutdown timeout");
        }
    }

    /// Erase a data subject's values through the writer (see [`super::erase_subject`]).
    pub fn erase_subject(&self, subject: &str) -> Result<EraseReport, AuditError> {
        self.call(|r| Msg::Erase(subject.to_owned(), r), LONG)?
    }

    /// Flush, then export a data subject's records.
    pub fn export_subject(&self, subject: &str) -> Result<Vec<serde_json::Value>, AuditError> {
        self.flush(Duration::from_secs(5));
        subject::export_subject(&self.inner.dir, subject)
    }

    /// Replay `DIR/dead-letter.jsonl` (or `from`) into the chain through the writer.
    pub fn replay_dead_letter(&self, from: Option<&Path>) -> Result<usize, AuditError> {
        self.call(|r| Msg::Replay(from.map(Path::to_path_buf), r), LONG)?
    }

    /// Remove files whose newest record is older than `cutoff` (anchor first), through the writer.
    pub fn apply_retention(&self, cutoff: DateTime<Utc>) -> Result<RetentionReport, AuditError> {
        self.call(|r| Msg::Retain(cutoff, Some(r)), LONG)?
    }

    /// Flush, then verify the directory on the calling thread only (a live proxy should not spend
    /// every core on it). A line the writer is in the middle of is not a break.
    pub fn verify(&self) -> Result<super::VerifyReport, AuditError> {
        self.flush(Duration::from_secs(5));
        super::verify_with(&self.inner.dir, 1)
    }

    /// Send a control message (may wait for channel room, up to `timeout`) and wait for the reply.
    fn call<T>(
        &self,
        make: impl FnOnce(Reply<T>) -> Msg,
        timeout: Duration,
    ) -> Result<T, AuditError> {
        let tx = self.inner.tx.as_ref().ok_or(AuditError::Closed)?;
        let deadline = Instant::now() + timeout;
        let (rtx, rrx) = mpsc::sync_channel(1);
        let mut msg = make(rtx);
        let mut pause = Duration::from_micros(200);
        loop {
            match tx.try_send(msg) {
                Ok(()) => break,
                Err(TrySendError::Disconnected(_)) => return Err(AuditError::Closed),
                Err(TrySendError::Full(m)) => {
                    if Instant::now() >= deadline {
                        return Err(AuditError::Timeout);
                    }
                    msg = m;
                    std::thread::sleep(pause);
                    pause = (pause * 2).min(Duration::from_millis(20));
                }
            }
        }
        let left = deadline.saturating_duration_since(Instant::now());
        rrx.recv_timeout(left).map_err(|e| match e {
            RecvTimeoutError::Timeout => AuditError::Timeout,
            RecvTimeoutError::Disconnected => AuditError::Closed,
        })
    }
}

/// Timeout for admin operations that rewrite files.
const LONG: Duration = Duration::from_secs(600);

fn retention_ticker(tx: SyncSender<Msg>, stop: Receiver<()>, days: u32, every: Duration) {
    // First pass shortly after start, then every `every`.
    let mut wait = Duration::from_secs(10).min(every);
    loop {
        match stop.recv_timeout(wait) {
            Err(RecvTimeoutError::Timeout) => {}
            _ => return,
        }
        wait = every;
        let cutoff = Utc::now() - chrono::Duration::days(i64::from(days));
        // Skip a tick rather than block when the writer is busy.
        if let Err(TrySendError::Disconnected(_)) = tx.try_send(Msg::Retain(cutoff, None)) {
            return;
        }
    }
}

/// Where records go when the chain cannot be written.
pub(crate) struct DeadLetter {
    pub primary: PathBuf,
    pub fallback: Option<PathBuf>,
    pub max_bytes: u64,
}

impl DeadLetter {
    /// Append records (durably) to the first dead-letter location that has room and accepts the write.
    fn spill(&self, sink: &mut dyn Sink, recs: &[Pending]) -> io::Result<PathBuf> {
        let mut buf = Vec::with_capacity(recs.iter().map(Pending::size).sum());
        for p in recs {
            dead_letter_line(&mut buf, p);
        }
        let mut last_err = io::Error::other("no dead-letter location");
        for path in std::iter::once(&self.primary).chain(self.fallback.as_ref()) {
            let r = (|| {
                let mut f = store::create_private(path, false)?;
                let len = f.metadata()?.len();
                if len + buf.len() as u64 > self.max_bytes {
                    return Err(io::Error::other(
                        "dead-letter file is at audit.dead_letter_max_bytes",
                    ));
                }
                sink.write(Target::DeadLetter, &mut f, &buf)
                    .inspect_err(|_| {
                        let _ = f.set_len(len);
                    })?;
                sink.sync(Target::DeadLetter, &f)?;
                if len == 0 {
                    // New file: make its directory entry durable too.
                    if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
                        store::sync_dir(parent)?;
                    }
                }
                Ok(())
            })();
            match r {
                Ok(()) => return Ok(path.clone()),
                Err(e) => {
                    warn!(path = %path.display(), error = %e, "audit: dead-letter write failed");
                    last_err = e;
                }
            }
        }
        Err(last_err)
    }
}

/// Dead-letter line: `{<members>[,"subject_value":{…}]}` — a record without seq/prev/hash.
fn dead_letter_line(out: &mut Vec<u8>, p: &Pending) {
    out.push(b'{');
    out.extend_from_slice(&p.body);
    if let Some(sv) = &p.subject_value {
        out.extend_from_slice(b",\"subject_value\":");
        out.extend_from_slice(sv);
    }
    out.extend_from_slice(b"}\n");
}

/// Parse a dead-letter line back into a pending record marked `"replayed":true`.
fn parse_dead_letter_line(line: &[u8]) -> Option<Pending> {
    if line.len() < 2 || line[0] != b'{' || line[line.len() - 1] != b'}' {
        return None;
    }
    serde_json::from_slice::<serde::de::IgnoredAny>(line).ok()?;
    const SV: &[u8] = b",\"subject_value\":{";
    // The subject value is the last member and its strings cannot contain an unescaped quote, so the
    // last occurrence of the key is the real one.
    let sv_at = line.windows(SV.len()).rposition(|w| w == SV);
    let (body, sv) = match sv_at {
        Some(p) => (
            &line[1..p],
            Some(line[p + SV.len() - 1..line.len() - 1].to_vec()),
        ),
        None => (&line[1..line.len() - 1], None),
    };
    if !body.starts_with(b"\"ts\":") {
        return None;
    }
    let mut body = body.to_vec();
    if !body.ends_with(b",\"replayed\":true") {
        body.extend_from_slice(b",\"replayed\":true");
    }
    Some(Pending {
        body,
        subject_value: sv,
    })
}

/// Replay one dead-letter file into the store in chunks; truncates it after everything is durable.
/// Returns (replayed, skipped unreadable lines).
pub(crate) fn replay_file(store: &mut Store, path: &Path) -> Result<(usize, usize), AuditError> {
    let f = match File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok((0, 0)),
        Err(e) => return Err(AuditError::io(path, e)),
    };
    let mut r = BufReader::new(f);
    let mut line = Vec::new();
    let mut chunk = Vec::with_capacity(512);
    let (mut done, mut skipped) = (0usize, 0usize);
    let log_path = store.dir.join(store.current_name());
    loop {
        line.clear();
        let n = r
            .read_until(b'\n', &mut line)
            .map_err(|e| AuditError::io(path, e))?;
        let complete = line.last() == Some(&b'\n');
        if complete {
            line.pop();
        }
        if n > 0 {
            match parse_dead_letter_line(&line) {
                Some(p) if complete || !line.is_empty() => chunk.push(p),
                _ if line.is_empty() => {}
                _ => skipped += 1,
            }
        }
        if chunk.len() >= 512 || (n == 0 && !chunk.is_empty()) {
            store
                .append(&chunk)
                .map_err(|e| AuditError::io(&log_path, e.source))?;
            done += chunk.len();
            chunk.clear();
        }
        if n == 0 {
            break;
        }
    }
    store.sync().map_err(|e| AuditError::io(&log_path, e))?;
    if done > 0 || skipped > 0 {
        let f = store::create_private(path, true).map_err(|e| AuditError::io(path, e))?;
        f.sync_all().map_err(|e| AuditError::io(path, e))?;
    }
    if skipped > 0 {
        warn!(skipped, path = %path.display(), "audit: unreadable dead-letter lines skipped during replay");
    }
    Ok((done, skipped))
}

struct Worker {
    store: Store,
    shared: Arc<Shared>,
    batch_max: usize,
    batch_wait: Duration,
    fsync: FsyncPolicy,
    retry: VecDeque<Pending>,
    retry_bytes: usize,
    retry_max_bytes: u64,
    backoff0: Duration,
    backoff_max: Duration,
    backoff: Duration,
    next_retry: Option<Instant>,
    failed_retries: u32,
    retries_before_spill: u32,
    /// Records spilled / lost since the log last failed (reported by the `resume` record).
    episode_spilled: u64,
    episode_dropped: u64,
    dead_letter: DeadLetter,
    waiters: Vec<Reply<bool>>,
    last_sync: Instant,
    /// Caller name -> keyed caller hash (names, never keys; bounded by [`CALLER_HASH_CACHE`]).
    caller_hashes: HashMap<String, String>,
}

/// Distinct caller names whose hash the writer remembers; past it the memo starts over.
const CALLER_HASH_CACHE: usize = 1024;

impl Worker {
    fn run(mut self, rx: Receiver<Msg>) {
        let mut batch: Vec<Pending> = Vec::with_capacity(self.batch_max);
        let mut acks: Vec<Reply<bool>> = Vec::new();
        loop {
            let timeout = self.next_wakeup();
            let first = match rx.recv_timeout(timeout) {
                Ok(m) => Some(m),
                Err(RecvTimeoutError::Timeout) => None,
                Err(RecvTimeoutError::Disconnected) => {
                    self.finish();
                    return;
                }
            };
            let mut control = None;
            let mut next = first;
            let mut batch_started: Option<Instant> = None;
            while let Some(m) = next.take() {
                match m {
                    Msg::Event(ev) => {
                        self.shared.queue_len.fetch_sub(1, Ordering::Relaxed);
                        batch.push(self.encode(&ev.0, &ev.1));
                    }
                    Msg::DurableEvent(ev, ack) => {
                        self.shared.queue_len.fetch_sub(1, Ordering::Relaxed);
                        batch.push(self.encode(&ev.0, &ev.1));
                        acks.push(ack);
                    }
                    other => {
                        control = Some(other);
                        break;
                    }
                }
                if batch.len() < self.batch_max {
                    next = rx.try_recv().ok();
                    // Group commit: with fsync per batch, gather what arrives within a short
                    // window so one write + fsync serves many requests (fewer fsyncs and
                    // thread wake-ups under load; at most `batch_wait_ms` added latency).
                    // Sleep instead of blocking on the channel: while the writer is parked in
                    // `recv`, every request's `try_send` pays a futex wake-up (one syscall on
                    // the request path per record); a sleeping writer is woken by nobody and
                    // drains the window's records in one go.
                    if next.is_none() && !batch.is_empty() && self.batch_wait > Duration::ZERO {
                        let deadline =
                            *batch_started.get_or_insert_with(Instant::now) + self.batch_wait;
                        let left = deadline.saturating_duration_since(Instant::now());
                        if !left.is_zero() {
                            std::thread::sleep(left);
                            next = rx.try_recv().ok();
                        }
                    }
                }
            }
            if !batch.is_empty() {
                self.write(&mut batch);
            }
            // Group commit: every waiter of this batch is answered by the batch's one write
            // (+ fsync). Records held for retry answer when the retry queue drains.
            if !acks.is_empty() {
                if self.retry.is_empty() {
                    for ack in acks.drain(..) {
                        let _ = ack.try_send(true);
                    }
                } else {
                    self.waiters.append(&mut acks);
                }
            }
            self.tick();
            if let Some(c) = control {
                if !self.control(c) {
                    return;
                }
            }
        }
    }

    fn encode(&mut self, ev: &AuditEvent, ts: &DateTime<Utc>) -> Pending {
        // The salt is drawn once here, so re-encoding for a retry is not needed and bytes are stable.
        let salt: [u8; 16] = if ev.subject.is_some() {
            rand::random()
        } else {
            [0; 16]
        };
        let key = self.store.caller_key();
        let memo = &mut self.caller_hashes;
        let mut caller_hash = |caller: &str| {
            if let Some(h) = memo.get(caller) {
                return h.clone();
            }
            if memo.len() >= CALLER_HASH_CACHE {
                memo.clear();
            }
            let h = super::chain::caller_hash(key, caller);
            memo.insert(caller.to_string(), h.clone());
            h
        };
        encode_event_with(ev, ts, &mut caller_hash, &salt)
    }

    fn next_wakeup(&self) -> Duration {
        let mut t = Duration::from_secs(1);
        if let Some(at) = self.next_retry {
            t = t.min(at.saturating_duration_since(Instant::now()));
        }
        if let FsyncPolicy::Interval { interval_ms } = self.fsync {
            if self.store.is_dirty() {
                let due = self.last_sync + Duration::from_millis(interval_ms);
                t = t.min(due.saturating_duration_since(Instant::now()));
            }
        }
        t
    }

    fn set_failing(&self, on: bool) {
        self.shared.failing.store(on, Ordering::Relaxed);
        self.shared
            .retry_len
            .store(self.retry.len(), Ordering::Relaxed);
    }

    /// Write a batch (drained), or queue it behind records already waiting for retry.
    fn write(&mut self, batch: &mut Vec<Pending>) {
        if self.shared.failing.load(Ordering::Relaxed) {
            // Keep order: everything goes behind the held records; `retry_now` writes them.
            self.hold(batch.drain(..));
            return;
        }
        match self.store.append(batch) {
            Ok(()) => {
                self.shared
                    .written
                    .fetch_add(batch.len() as u64, Ordering::Relaxed);
                batch.clear();
                self.after_write();
            }
            Err(e) => {
                self.shared
                    .written
                    .fetch_add(e.committed as u64, Ordering::Relaxed);
                self.shared.write_errors.fetch_add(1, Ordering::Relaxed);
                error!(error = %e.source, held = batch.len() - e.committed, "audit: write failed; holding records for retry");
                batch.drain(..e.committed);
                self.set_failing(true);
                self.hold(batch.drain(..));
                self.backoff = self.backoff0;
                self.failed_retries = 0;
                self.next_retry = Some(Instant::now() + self.backoff);
            }
        }
    }

    fn hold(&mut self, recs: impl Iterator<Item = Pending>) {
        for p in recs {
            self.retry_bytes += p.size();
            self.retry.push_back(p);
        }
        if self.retry_bytes as u64 > self.retry_max_bytes {
            // Spill the oldest half so spills happen in large, rare writes.
            self.spill_until(self.retry_max_bytes as usize / 2);
        }
        self.shared
            .retry_len
            .store(self.retry.len(), Ordering::Relaxed);
    }

    /// Move held records (oldest first) to the dead-letter file until at most `keep_bytes` remain.
    fn spill_until(&mut self, keep_bytes: usize) {
        let mut take = 0;
        let mut bytes = self.retry_bytes;
        while bytes > keep_bytes && take < self.retry.len() {
            bytes -= self.retry[take].size();
            take += 1;
        }
        if take == 0 {
            return;
        }
        let recs: Vec<Pending> = self.retry.drain(..take).collect();
        self.retry_bytes = bytes;
        match self.dead_letter.spill(self.store.sink_mut(), &recs) {
            Ok(path) => {
                self.episode_spilled += recs.len() as u64;
                self.shared
                    .dead_lettered
                    .fetch_add(recs.len() as u64, Ordering::Relaxed);
                warn!(records = recs.len(), path = %path.display(), "audit: records moved to the dead-letter file; `jimini audit replay` puts them back into the chain");
            }
            Err(e) => {
                self.episode_dropped += recs.len() as u64;
                self.shared
                    .dropped
                    .fetch_add(recs.len() as u64, Ordering::Relaxed);
                error!(records = recs.len(), error = %e, "audit: RECORDS LOST: neither the log nor a dead-letter file is writable");
            }
        }
        self.shared
            .retry_len
            .store(self.retry.len(), Ordering::Relaxed);
        if self.retry.is_empty() {
            self.answer_waiters();
        }
    }

    fn after_write(&mut self) {
        let due = match self.fsync {
            FsyncPolicy::Batch => true,
            FsyncPolicy::Never => false,
            FsyncPolicy::Interval { interval_ms } => {
                self.last_sync.elapsed() >= Duration::from_millis(interval_ms)
            }
        };
        if due {
            self.sync();
        }
    }

    fn sync(&mut self) -> bool {
        self.last_sync = Instant::now();
        match self.store.sync() {
            Ok(()) => true,
            Err(e) => {
                self.shared.write_errors.fetch_add(1, Ordering::Relaxed);
                error!(error = %e, "audit: fsync failed");
                false
            }
        }
    }

    /// Periodic duties: retry held records when due; interval fsync.
    fn tick(&mut self) {
        if let Some(at) = self.next_retry {
            if Instant::now() >= at {
                self.retry_now();
            }
        }
        if let FsyncPolicy::Interval { interval_ms } = self.fsync {
            if self.store.is_dirty()
                && self.last_sync.elapsed() >= Duration::from_millis(interval_ms)
            {
                self.sync();
            }
        }
    }

    /// Try to write everything held; on success the log is healthy again.
    fn retry_now(&mut self) {
        // First document the failure episode in the chain, so an auditor sees where records went
        // to the dead letter (or were lost). This record also serves as the probe when nothing is held.
        if self.episode_spilled + self.episode_dropped > 0 {
            let rec = encode_internal(
                &Internal::Resume {
                    dead_lettered: self.episode_spilled,
                    dropped: self.episode_dropped,
                },
                &self.store.clock().now(),
            );
            match self.store.append(std::slice::from_ref(&rec)) {
                Ok(()) => {
                    self.shared.written.fetch_add(1, Ordering::Relaxed);
                    self.episode_spilled = 0;
                    self.episode_dropped = 0;
                }
                Err(_) => return self.retry_failed(),
            }
        }
        while !self.retry.is_empty() {
            let n = self.retry.len().min(self.batch_max.max(64));
            let slice = &self.retry.make_contiguous()[..n];
            match self.store.append(slice) {
                Ok(()) => self.commit_held(n),
                Err(e) => {
                    self.commit_held(e.committed);
                    return self.retry_failed();
                }
            }
        }
        info!("audit: log writable again; held records written");
        self.next_retry = None;
        self.backoff = self.backoff0;
        self.failed_retries = 0;
        self.sync();
        self.set_failing(false);
        self.answer_waiters();
    }

    fn retry_failed(&mut self) {
        self.shared.write_errors.fetch_add(1, Ordering::Relaxed);
        self.failed_retries += 1;
        if self.failed_retries >= self.retries_before_spill {
            self.spill_until(0);
            self.failed_retries = 0;
        }
        self.backoff = (self.backoff * 2).min(self.backoff_max);
        self.next_retry = Some(Instant::now() + self.backoff);
        self.set_failing(true);
    }

    fn commit_held(&mut self, n: usize) {
        for p in self.retry.drain(..n) {
            self.retry_bytes -= p.size();
        }
        self.shared.written.fetch_add(n as u64, Ordering::Relaxed);
    }

    fn answer_waiters(&mut self) {
        if self.waiters.is_empty() {
            return;
        }
        // Dead-letter writes are fsynced as they happen; the log needs it now.
        self.sync();
        for w in self.waiters.drain(..) {
            let _ = w.try_send(true);
        }
    }

    /// Handle a control message; false = stop the thread.
    fn control(&mut self, msg: Msg) -> bool {
        match msg {
            Msg::Event(_) | Msg::DurableEvent(..) => {}
            Msg::Flush(reply) => {
                if self.retry.is_empty() {
                    let ok = self.sync();
                    let _ = reply.try_send(ok);
                } else {
                    self.waiters.push(reply);
                }
            }
            Msg::Erase(subject, reply) => {
                let r = self.erase(&subject);
                let _ = reply.try_send(r);
            }
            Msg::Retain(cutoff, reply) => {
                let r = if !self.is_failing() {
                    retention::retain_in_store(&mut self.store, cutoff)
                } else {
                    Err(AuditError::Failing)
                };
                match &r {
                    Err(e) => {
                        warn!(error = %e, "audit: retention pass failed; will retry on the next tick")
                    }
                    Ok(rep) if rep.anchor_seq.is_some() => {
                        self.shared.written.fetch_add(1, Ordering::Relaxed);
                    }
                    Ok(_) => {}
                }
                if let Some(reply) = reply {
                    let _ = reply.try_send(r);
                }
            }
            Msg::Replay(from, reply) => {
                let r = if !self.is_failing() {
                    let path = from.unwrap_or_else(|| self.dead_letter.primary.clone());
                    replay_file(&mut self.store, &path).map(|(n, _)| n)
                } else {
                    Err(AuditError::Failing)
                };
                if let Ok(n) = &r {
                    self.shared.replayed.fetch_add(*n as u64, Ordering::Relaxed);
                    self.shared.written.fetch_add(*n as u64, Ordering::Relaxed);
                    info!(
                        records = n,
                        "audit: dead-letter records replayed into the chain"
                    );
                }
                let _ = reply.try_send(r);
            }
            Msg::Shutdown(reply) => {
                let ok = self.finish();
                let _ = reply.try_send(ok);
                return false;
            }
        }
        true
    }

    fn erase(&mut self, id: &str) -> Result<EraseReport, AuditError> {
        // Values still held in memory are scrubbed too (they are not in any file yet).
        let prefix = subject::subject_value_prefix(id);
        let mut held = 0u64;
        for p in self.retry.iter_mut() {
            if p.subject_value
                .as_ref()
                .is_some_and(|sv| sv.starts_with(&prefix))
            {
                p.subject_value = None;
                held += 1;
            }
        }
        let mut rep =
            subject::erase_in_store(&mut self.store, id, self.dead_letter.fallback.as_deref())?;
        rep.records += held;
        let rec = encode_internal(
            &Internal::Erasure {
                erased: rep.records,
                files: rep.files,
            },
            &self.store.clock().now(),
        );
        if !self.is_failing() {
            rep.erasure_seq = Some(self.store.append_durable(&rec)?);
            self.shared.written.fetch_add(1, Ordering::Relaxed);
        } else {
            // The chain is failing; the erasure record waits with the other held records.
            self.hold(std::iter::once(rec));
        }
        info!(
            records = rep.records,
            files = rep.files,
            "audit: data-subject erasure done"
        );
        Ok(rep)
    }

    fn is_failing(&self) -> bool {
        self.shared.failing.load(Ordering::Relaxed)
    }

    /// Final flush: retry held records once, spill what is left, fsync. True if nothing was lost.
    fn finish(&mut self) -> bool {
        if self.is_failing() {
            self.retry_now();
        }
        let dropped_before = self.shared.dropped.load(Ordering::Relaxed);
        if !self.retry.is_empty() {
            self.spill_until(0);
        }
        let ok = self.sync() && self.shared.dropped.load(Ordering::Relaxed) == dropped_before;
        self.answer_waiters();
        self.shared.stopped.store(true, Ordering::Relaxed);
        info!(
            written = self.shared.written.load(Ordering::Relaxed),
            "audit: writer stopped"
        );
        ok
    }
}

#[allow(dead_code)]
fn assert_handle_is_send_sync_clone() {
    fn ok<T: Send + Sync + Clone>() {}
    ok::<AuditHandle>();
}
