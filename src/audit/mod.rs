//! Tamper-evident audit log, off the request path: one record per proxied request (no raw PII or
//! secrets), a SHA3-256 hash chain across files and restarts, a background writer fed by a bounded
//! channel, verification, retention with anchors, data-subject export/erasure and a dead letter.
//!
//! Files: `record` (event + canonical encoding), `chain` (hashes), `store` (directory, recovery,
//! rotation), `writer` (thread, handle, retry, dead letter), `verify`, `subject`, `retention`, `config`.

pub mod chain;
pub mod config;
pub mod record;
pub mod retention;
pub mod store;
pub mod subject;
pub mod verify;
pub mod writer;

use std::io;
use std::path::{Path, PathBuf};

pub use config::{AuditConfig, Durability, FsyncPolicy, OnFull};
pub use record::{AuditEvent, TokenUsage};
pub use retention::{apply_retention, RetentionReport};
pub use store::{Clock, FsSink, Sink, SystemClock, Target, DEAD_LETTER};
pub use subject::{erase_subject, export_subject, EraseReport};
pub use verify::{verify_dir, verify_with, Break, BreakReason, VerifyReport};
pub use writer::{AuditHandle, AuditStats, StartOptions};

/// Audit errors. Messages carry paths and causes, never record contents, subject ids or caller names.
#[derive(Debug, thiserror::Error)]
pub enum AuditError {
    #[error("audit channel full; record dropped")]
    Full,
    #[error("audit writer is not running")]
    Closed,
    #[error("audit writer did not answer in time")]
    Timeout,
    #[error("audit log is not writable at the moment; try again later")]
    Failing,
    #[error("audit directory {} is locked by a running writer (use the running proxy's admin API)", dir.display())]
    Locked { dir: PathBuf },
    // Not a `source`: the message carries the I/O error already, and a chain printer
    // (`{:#}`) would print it twice.
    #[error("audit i/o error on {}: {error}", path.display())]
    Io { path: PathBuf, error: io::Error },
    #[error("audit log corrupt: {0}")]
    Corrupt(String),
    #[error("invalid audit config: {0}")]
    Config(String),
}

impl AuditError {
    pub(crate) fn io(path: &Path, source: io::Error) -> AuditError {
        AuditError::Io {
            path: path.to_path_buf(),
            error: source,
        }
    }
}

/// Replay `DIR/dead-letter.jsonl` into the chain of a directory no proxy is writing to (takes the
/// lock; `Locked` otherwise — then use [`AuditHandle::replay_dead_letter`]). Returns records replayed.
pub fn replay_dead_letter(dir: &Path) -> Result<usize, AuditError> {
    replay_dead_letter_from(dir, &dir.join(DEAD_LETTER))
}

/// Like [`replay_dead_letter`] for another dead-letter file (e.g. `audit.dead_letter_fallback`).
pub fn replay_dead_letter_from(dir: &Path, file: &Path) -> Result<usize, AuditError> {
    if !dir.is_dir() {
        return Err(AuditError::io(
            dir,
            io::Error::from(io::ErrorKind::NotFound),
        ));
    }
    let mut st = store::Store::open(dir, store::StoreOptions::default())?;
    writer::replay_file(&mut st, file).map(|(n, _)| n)
}

#[cfg(test)]
mod tests;
