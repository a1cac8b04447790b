//! Rule packs: YAML format and validation (`pack`), compilation of all packs into one immutable
//! [`RuleSet`] over ONE multi-pattern matcher (`engine`), per-request evaluation with precedence,
//! shadow mode and decision records (`evaluator`), pseudonymization/restore (`pseudonym`), hot-reload
//! watching (`watch`), and the `rules:` config section.

mod engine;
mod evaluator;
mod pack;
mod pseudonym;
mod watch;

use std::fmt;
use std::path::PathBuf;
use std::sync::OnceLock;

use serde::{Deserialize, Serialize};

pub use engine::{PackSummary, RuleSet, RuleSummary, WhenSummary};
pub use evaluator::{rules_test_report, BlockInfo, Decision, Evaluator, RuleHit};
pub use pseudonym::MAX_PSEUDONYMS;
pub use watch::{watch, WatchGuard};

/// Which side of the exchange a text belongs to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Direction {
    Request,
    Response,
}

impl Direction {
    pub fn as_str(self) -> &'static str {
        match self {
            Direction::Request => "request",
            Direction::Response => "response",
        }
    }
    fn idx(self) -> usize {
        match self {
            Direction::Request => 0,
            Direction::Response => 1,
        }
    }
}

/// What a rule does with a match. `Ord` is the precedence: `Allow < Flag < Redact < Block`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Action {
    Allow,
    Flag,
    Redact,
    Block,
}

impl Action {
    pub fn as_str(self) -> &'static str {
        match self {
            Action::Allow => "allow",
            Action::Flag => "flag",
            Action::Redact => "redact",
            Action::Block => "block",
        }
    }
}

impl fmt::Display for Action {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Enforcement mode of the whole rule set (`rules.mode`) or of one pack (`mode:` in the pack).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// Actions are applied.
    #[default]
    Enforce,
    /// Actions are only recorded (decision, metrics, audit) as `shadow`; traffic is unchanged.
    Shadow,
}

/// How a `redact` rule rewrites a match.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RedactStyle {
    /// `[REDACTED:EMAIL]`
    #[default]
    Mask,
    /// `[EMAIL:3f9a0c1b2d4e]`: keyed SHA3-256, stable for one deployment key, not reversible.
    Hash,
    /// `[EMAIL_1]`: numbered per request (same value → same placeholder), restored in the response.
    Pseudonymize,
}

/// Informational severity of a rule (reported in summaries; does not change precedence).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    Info,
    Low,
    Medium,
    High,
    Critical,
}

/// The request attributes a rule's `when` clause can select on.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Scope {
    /// Requested model (from the body), if any.
    pub model: Option<String>,
    /// Route name: "chat", "completions", "responses", "embeddings", "messages", "models", "other".
    pub route: String,
    /// Authenticated caller name, if any.
    pub caller: Option<String>,
}

/// Route names a `when.route` clause may use (same names as `openai::Endpoint::route`).
pub const ROUTES: &[&str] = &[
    "chat",
    "completions",
    "responses",
    "embeddings",
    "messages",
    "models",
    "other",
];

/// Options fixed when a rule set is compiled.
#[derive(Clone, PartialEq, Eq)]
pub struct RulesOptions {
    /// Shadow every pack (`rules.mode: shadow` or `JIMINI_SHADOW=1`).
    pub global_shadow: bool,
    /// Key of the `hash` redaction style. Keep it stable across restarts and replicas so hashes
    /// stay comparable; see [`RulesConfig::options`].
    pub hash_key: Vec<u8>,
    /// Cap (bytes) of the stream hold-back window; matches longer than this may be missed when
    /// they straddle a chunk boundary.
    pub max_holdback: usize,
}

impl Default for RulesOptions {
    fn default() -> Self {
        RulesOptions {
            global_shadow: false,
            hash_key: Vec::new(),
            max_holdback: DEFAULT_MAX_HOLDBACK,
        }
    }
}

// Never print the key.
impl fmt::Debug for RulesOptions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RulesOptions")
            .field("global_shadow", &self.global_shadow)
            .field("hash_key", &format_args!("<{} bytes>", self.hash_key.len()))
            .field("max_holdback", &self.max_holdback)
            .finish()
    }
}

const DEFAULT_MAX_HOLDBACK: usize = 128;

/// The `rules:` config section.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RulesConfig {
    /// Directory of rule packs (`*.yaml` / `*.yml`; dotfiles and subdirectories are ignored).
    /// Default: `rules`.
    pub dir: PathBuf,
    /// `enforce` (default) or `shadow` (record every would-be action, change nothing).
    /// `JIMINI_SHADOW=1` forces shadow too.
    pub mode: Mode,
    /// Key for the `hash` redaction style. Default: none → `JIMINI_HASH_KEY` from the environment,
    /// else a random per-process key (hashes then differ across restarts and replicas; a warning
    /// is logged). Serialized as `***` so config dumps never show it.
    #[serde(serialize_with = "serialize_masked")]
    pub hash_key: Option<String>,
    /// Cap (bytes) of the stream hold-back window. Default: 128.
    pub max_holdback: usize,
    /// Quiet period (ms) before a change in the rules directory or config file triggers a reload.
    /// Default: 300.
    pub reload_debounce_ms: u64,
}

impl Default for RulesConfig {
    fn default() -> Self {
        RulesConfig {
            dir: PathBuf::from("rules"),
            mode: Mode::Enforce,
            hash_key: None,
            max_holdback: DEFAULT_MAX_HOLDBACK,
            reload_debounce_ms: 300,
        }
    }
}

fn serialize_masked<S: serde::Serializer>(v: &Option<String>, s: S) -> Result<S::Ok, S::Error> {
    match v {
        Some(_) => s.serialize_str("***"),
        None => s.serialize_none(),
    }
}

impl fmt::Debug for RulesConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RulesConfig")
            .field("dir", &self.dir)
            .field("mode", &self.mode)
            .field("hash_key", &self.hash_key.as_ref().map(|_| "***"))
            .field("max_holdback", &self.max_holdback)
            .field("reload_debounce_ms", &self.reload_debounce_ms)
            .finish()
    }
}

impl RulesConfig {
    /// Options from this section plus the process environment (`JIMINI_SHADOW`, `JIMINI_HASH_KEY`).
    pub fn options(&self) -> RulesOptions {
        self.options_with_env(|k| std::env::var(k).ok())
    }

    /// Like [`RulesConfig::options`] with an injectable environment (tests).
    /// Shadow: `mode: shadow` or `JIMINI_SHADOW` in {1,true,yes,on}. Hash key: `hash_key`, else
    /// `JIMINI_HASH_KEY`, else one random key per process (stable across reloads, not restarts).
    pub fn options_with_env(&self, env: impl Fn(&str) -> Option<String>) -> RulesOptions {
        let env_shadow = env("JIMINI_SHADOW").is_some_and(|v| truthy(&v));
        let hash_key = match (&self.hash_key, env("JIMINI_HASH_KEY")) {
            (Some(k), _) if !k.is_empty() => k.as_bytes().to_vec(),
            (_, Some(k)) if !k.is_empty() => k.into_bytes(),
            _ => process_hash_key().to_vec(),
        };
        RulesOptions {
            global_shadow: self.mode == Mode::Shadow || env_shadow,
            hash_key,
            max_holdback: self.max_holdback.max(1),
        }
    }
}

fn truthy(v: &str) -> bool {
    matches!(
        v.trim().to_ascii_lowercase().as_str(),
        "1" | "true" | "yes" | "on"
    )
}

fn process_hash_key() -> &'static [u8; 32] {
    static KEY: OnceLock<[u8; 32]> = OnceLock::new();
    KEY.get_or_init(|| {
        tracing::warn!(
            "no rules.hash_key / JIMINI_HASH_KEY configured: using a random per-process key, \
             so `hash` redactions will differ across restarts and replicas"
        );
        rand::random()
    })
}

/// A rule-pack load error, located as precisely as the source allows.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PackError {
    /// File name as given (e.g. `rules/pii.yaml`).
    pub file: String,
    /// 1-based line, when known.
    pub line: Option<usize>,
    /// Full rule id (`pack.rule`), when the error belongs to one rule.
    pub rule: Option<String>,
    /// What is wrong (never contains matched text; may quote the rule source).
    pub message: String,
}

impl fmt::Display for PackError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.file)?;
        if let Some(line) = self.line {
            write!(f, ":{line}")?;
        }
        f.write_str(": ")?;
        if let Some(rule) = &self.rule {
            write!(f, "rule {rule}: ")?;
        }
        f.write_str(&self.message)
    }
}

/// Errors of loading, compiling or watching rules.
#[derive(Debug, thiserror::Error)]
pub enum RulesError {
    /// A pack is invalid: `rules/pii.yaml:12: rule pii.email: unknown detector 'emial'`.
    #[error("{0}")]
    Invalid(PackError),
    // Not a `source`: the message carries the I/O error already, and a chain printer
    // (`{:#}`) would print it twice.
    #[error("{path}: {error}")]
    Io { path: String, error: std::io::Error },
    /// The combined matcher could not be built (e.g. size limits across all packs).
    #[error("compiling rule packs: {0}")]
    Compile(String),
    #[error("watching {path}: {message}")]
    Watch { path: String, message: String },
}

impl RulesError {
    /// The located pack error, if this is one.
    pub fn pack_error(&self) -> Option<&PackError> {
        match self {
            RulesError::Invalid(e) => Some(e),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_defaults_and_unknown_keys() {
        let c: RulesConfig = serde_yaml::from_str("{}").unwrap();
        assert_eq!(c, RulesConfig::default());
        assert_eq!(c.dir, PathBuf::from("rules"));
        assert_eq!(c.max_holdback, 128);
        assert_eq!(c.reload_debounce_ms, 300);
        let e = serde_yaml::from_str::<RulesConfig>("dirr: x").unwrap_err();
        assert!(e.to_string().contains("unknown field `dirr`"), "{e}");
        let c: RulesConfig = serde_yaml::from_str("mode: shadow\nhash_key: k").unwrap();
        assert_eq!(c.mode, Mode::Shadow);
        assert!(!format!("{c:?}").contains("\"k\""));
        let dumped = serde_json::to_value(&c).unwrap();
        assert_eq!(dumped["hash_key"], "***");
        assert_eq!(dumped["mode"], "shadow");
    }

    #[test]
    fn options_from_env() {
        let c = RulesConfig::default();
        let o = c.options_with_env(|k| match k {
            "JIMINI_SHADOW" => Some("1".into()),
            "JIMINI_HASH_KEY" => Some("envkey".into()),
            _ => None,
        });
        assert!(o.global_shadow);
        assert_eq!(o.hash_key, b"envkey");
        let c = RulesConfig {
            hash_key: Some("cfgkey".into()),
            ..RulesConfig::default()
        };
        let o = c.options_with_env(|k| (k == "JIMINI_SHADOW").then(|| "0".to_string()));
        assert!(!o.global_shadow);
        assert_eq!(o.hash_key, b"cfgkey");
        let o1 = RulesConfig::default().options_with_env(|_| None);
        let o2 = RulesConfig::default().options_with_env(|_| None);
        assert_eq!(o1.hash_key.len(), 32);
        assert_eq!(o1.hash_key, o2.hash_key, "random key is per process");
        assert!(!format!("{o1:?}").contains(&format!("{:?}", o1.hash_key)));
    }

    #[test]
    fn action_order_and_error_display() {
        assert!(Action::Allow < Action::Flag);
        assert!(Action::Flag < Action::Redact);
        assert!(Action::Redact < Action::Block);
        let e = PackError {
            file: "rules/pii.yaml".into(),
            line: Some(12),
            rule: Some("pii.email".into()),
            message: "unknown detector 'emial'".into(),
        };
        assert_eq!(
            RulesError::Invalid(e).to_string(),
            "rules/pii.yaml:12: rule pii.email: unknown detector 'emial'"
        );
    }
}
