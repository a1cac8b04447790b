//! The `audit:` config section: where the log lives, rotation, fsync policy, back-pressure behaviour,
//! retention and dead-letter bounds. Defaults are documented on each field; `validate` rejects values
//! the writer cannot work with.

use std::fmt;
use std::path::PathBuf;

use serde::de::{self, MapAccess, Visitor};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use super::AuditError;

/// `audit:` section.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct AuditConfig {
    /// Write audit records at all. Default `true`.
    pub enabled: bool,
    /// Log directory (created with mode 0700 if missing). Default `audit`. Env override: `JIMINI_AUDIT_DIR`.
    pub dir: PathBuf,
    /// Rotate to a new file before it would grow beyond this many bytes. Default 64 MiB. Minimum 4 KiB.
    pub max_file_bytes: u64,
    /// Also start a new file when the UTC day changes. Default `true`.
    pub rotate_daily: bool,
    /// When written records are forced to disk: `batch` (default: after every batch the writer
    /// writes, i.e. at most `batch_max` records at risk), `never` (leave it to the OS) or
    /// `interval:N` / `{interval_ms: N}` (at most every N ms while there are unsynced writes).
    pub fsync: FsyncPolicy,
    /// What happens when the writer cannot keep up (channel full) or cannot write:
    /// `block` (default) or `drop`. See [`OnFull`].
    pub on_full: OnFull,
    /// Records buffered between the request path and the writer thread. Default 8192.
    pub channel_capacity: usize,
    /// Maximum records the writer takes from the channel per write call. Default 512.
    pub batch_max: usize,
    /// With `fsync: batch`: how long the writer gathers records before one write + fsync
    /// (group commit). Bounds fsyncs to ~1000/batch_wait_ms per second under load; idle
    /// records wait at most this long. 0 = write whatever is queued at once. Default: 10 with
    /// `durability: async` (no request waits for it; an fsync costs ~100 µs of CPU here, so 500
    /// per second was the writer's largest cost), 2 with `durability: ack` (responses wait for
    /// it). See [`AuditConfig::batch_wait`].
    pub batch_wait_ms: Option<u64>,
    /// Remove log files whose newest record is older than this many days (whole files; an anchor record
    /// keeps the remaining chain verifiable). Default: none (keep forever).
    pub retention_days: Option<u32>,
    /// Upper bound of the dead-letter file (records that could not be written to the chain). When it
    /// is full (or cannot be written) further failed records are dropped, counted and logged. Default 256 MiB.
    pub dead_letter_max_bytes: u64,
    /// Memory bound for records held for retry while writes fail; beyond it the oldest spill to the
    /// dead-letter file. Default 8 MiB.
    pub retry_max_bytes: u64,
    /// Second dead-letter location (ideally another volume) used when `DIR/dead-letter.jsonl` cannot be
    /// written, e.g. because the audit volume is full. Default: none.
    pub dead_letter_fallback: Option<PathBuf>,
    /// How often the retention task looks for expired files, in seconds. Default 3600.
    pub retention_check_secs: u64,
    /// `async` (default): the record is queued after the response and written off the request
    /// path — a slow disk never slows a request, and a killed process loses the records still
    /// queued (at most the last few milliseconds). `ack`: the end of each response (its last bytes,
    /// or Jimini's own error response) is held until its record is written — and fsynced under
    /// `fsync: batch`, shared by concurrent requests (group commit) — so a crash can never lose
    /// the record of a response a client finished reading. Costs one group-committed write per
    /// completion; time to first byte and streaming are unaffected.
    pub durability: Durability,
    /// With `durability: ack`: longest wait for the record before the response completes anyway
    /// (the record stays queued and is counted). Default 2000 ms.
    pub ack_timeout_ms: u64,
}

/// When a request's audit record must be on disk; see [`AuditConfig::durability`].
#[derive(Deserialize, Serialize, Clone, Copy, Debug, PartialEq, Eq, Default)]
#[serde(rename_all = "lowercase")]
pub enum Durability {
    #[default]
    Async,
    Ack,
}

/// Default `block`: the audit trail is what makes the proxy's decisions accountable, so a request that
/// cannot be audited is refused (503) rather than served silently. Write *errors* do not trip it at
/// once: records are first held in memory and spilled to the dead-letter file, so `block` only bites
/// when the writer is truly stalled or failing. Deployments that prefer availability choose `drop`,
/// which serves traffic and counts every lost record in `jimini_audit_dropped_total`.
#[derive(Deserialize, Serialize, Clone, Copy, Debug, PartialEq, Eq, Default)]
#[serde(rename_all = "lowercase")]
pub enum OnFull {
    /// Serve the request, lose the record (counted + logged).
    Drop,
    /// Fail closed: `AuditHandle::accepting()` turns false and the proxy answers 503 until the writer
    /// catches up.
    #[default]
    Block,
}

/// Fsync policy. YAML forms: `batch`, `never`, `"interval:100"` (ms) or `{interval_ms: 100}`.
/// Serialized as the string form.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum FsyncPolicy {
    /// fsync after every written batch.
    #[default]
    Batch,
    /// fsync at most every N milliseconds while there are unsynced records (and on flush/shutdown).
    Interval { interval_ms: u64 },
    /// never fsync in steady state (explicit `flush` and shutdown still sync).
    Never,
}

impl Default for AuditConfig {
    fn default() -> Self {
        AuditConfig {
            enabled: true,
            dir: PathBuf::from("audit"),
            max_file_bytes: 64 * 1024 * 1024,
            rotate_daily: true,
            fsync: FsyncPolicy::Batch,
            on_full: OnFull::Block,
            channel_capacity: 8192,
            batch_max: 512,
            batch_wait_ms: None,
            retention_days: None,
            dead_letter_max_bytes: 256 * 1024 * 1024,
            retry_max_bytes: 8 * 1024 * 1024,
            dead_letter_fallback: None,
            retention_check_secs: 3600,
            durability: Durability::Async,
            ack_timeout_ms: 2000,
        }
    }
}

impl AuditConfig {
    /// The group-commit window in effect: `batch_wait_ms`, or the default for the durability
    /// mode (10 ms async, 2 ms ack).
    pub fn batch_wait(&self) -> std::time::Duration {
        let default = match self.durability {
            Durability::Async => 10,
            Durability::Ack => 2,
        };
        std::time::Duration::from_millis(self.batch_wait_ms.unwrap_or(default))
    }

    /// Reject values the writer cannot run with. Messages name the key (`audit.<key>`).
    pub fn validate(&self) -> Result<(), AuditError> {
        let bad = |m: &str| Err(AuditError::Config(m.to_string()));
        if self.dir.as_os_str().is_empty() {
            return bad("audit.dir must not be empty");
        }
        if self.max_file_bytes < 4096 {
            return bad("audit.max_file_bytes must be at least 4096");
        }
        if self.channel_capacity == 0 {
            return bad("audit.channel_capacity must be at least 1");
        }
        if self.batch_max == 0 {
            return bad("audit.batch_max must be at least 1");
        }
        if self.retention_days == Some(0) {
            return bad("audit.retention_days must be at least 1 (omit it to keep files forever)");
        }
        if let FsyncPolicy::Interval { interval_ms: 0 } = self.fsync {
            return bad(
                "audit.fsync interval must be at least 1 ms (use `batch` to sync every batch)",
            );
        }
        if self.retention_check_secs == 0 {
            return bad("audit.retention_check_secs must be at least 1");
        }
        Ok(())
    }
}

impl FsyncPolicy {
    fn parse(s: &str) -> Option<FsyncPolicy> {
        let s = s.trim();
        match s {
            "batch" => return Some(FsyncPolicy::Batch),
            "never" => return Some(FsyncPolicy::Never),
            _ => {}
        }
        let n = s.strip_prefix("interval:")?.trim();
        let n = n.strip_suffix("ms").unwrap_or(n).trim();
        n.parse()
            .ok()
            .map(|interval_ms| FsyncPolicy::Interval { interval_ms })
    }
}

impl fmt::Display for FsyncPolicy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FsyncPolicy::Batch => f.write_str("batch"),
            FsyncPolicy::Never => f.write_str("never"),
            FsyncPolicy::Interval { interval_ms } => write!(f, "interval:{interval_ms}"),
        }
    }
}

impl Serialize for FsyncPolicy {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for FsyncPolicy {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        const EXPECTED: &str =
            "`batch`, `never`, `interval:N` (milliseconds) or `{interval_ms: N}`";
        impl<'de> Visitor<'de> for V {
            type Value = FsyncPolicy;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(EXPECTED)
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<FsyncPolicy, E> {
                FsyncPolicy::parse(v).ok_or_else(|| {
                    E::custom(format_args!(
                        "invalid fsync policy {v:?}: expected {EXPECTED}"
                    ))
                })
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<FsyncPolicy, A::Error> {
                let mut ms = None;
                while let Some(key) = map.next_key::<String>()? {
                    if key != "interval_ms" {
                        return Err(de::Error::unknown_field(&key, &["interval_ms"]));
                    }
                    if ms.is_some() {
                        return Err(de::Error::duplicate_field("interval_ms"));
                    }
                    ms = Some(map.next_value::<u64>()?);
                }
                let interval_ms = ms.ok_or_else(|| de::Error::missing_field("interval_ms"))?;
                Ok(FsyncPolicy::Interval { interval_ms })
            }
        }
        d.deserialize_any(V)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fsync_forms() {
        let cases: &[(&str, FsyncPolicy)] = &[
            ("batch", FsyncPolicy::Batch),
            ("never", FsyncPolicy::Never),
            (
                "\"interval:100\"",
                FsyncPolicy::Interval { interval_ms: 100 },
            ),
            (
                "\"interval: 250ms\"",
                FsyncPolicy::Interval { interval_ms: 250 },
            ),
            ("{interval_ms: 7}", FsyncPolicy::Interval { interval_ms: 7 }),
        ];
        for (yaml, want) in cases {
            let got: FsyncPolicy = serde_yaml::from_str(yaml).unwrap();
            assert_eq!(&got, want, "{yaml}");
            // round trip through the string form
            let s = serde_yaml::to_string(&got).unwrap();
            let back: FsyncPolicy = serde_yaml::from_str(&s).unwrap();
            assert_eq!(back, got);
        }
        for bad in [
            "always",
            "\"interval:\"",
            "{interval: 5}",
            "{interval_ms: 5, x: 1}",
            "5",
        ] {
            assert!(serde_yaml::from_str::<FsyncPolicy>(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn section_defaults_and_unknown_keys() {
        let c: AuditConfig =
            serde_yaml::from_str("dir: /var/log/jimini\non_full: drop\nfsync: never\n").unwrap();
        assert_eq!(c.dir, PathBuf::from("/var/log/jimini"));
        assert_eq!(c.on_full, OnFull::Drop);
        assert_eq!(c.fsync, FsyncPolicy::Never);
        assert_eq!(c.channel_capacity, AuditConfig::default().channel_capacity);
        assert!(c.validate().is_ok());
        assert!(serde_yaml::from_str::<AuditConfig>("dri: x\n").is_err());
        assert_eq!(AuditConfig::default().on_full, OnFull::Block);
        let bad = AuditConfig {
            retention_days: Some(0),
            ..AuditConfig::default()
        };
        assert!(bad
            .validate()
            .unwrap_err()
            .to_string()
            .contains("audit.retention_days"));
        let bad = AuditConfig {
            channel_capacity: 0,
            ..AuditConfig::default()
        };
        assert!(bad.validate().is_err());
    }
}
