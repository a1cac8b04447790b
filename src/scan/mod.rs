//! Detection: built-in PII/secret detectors (pattern + validator), custom regex and keyword
//! specs, all compiled into ONE multi-pattern [`Matcher`]; whole-text rewriting
//! ([`rewrite_all`]) and a chunk-boundary-safe, bounded-memory [`StreamScanner`]. Pure logic.

mod detectors;
mod lanes;
mod liveness;
mod matcher;
mod rewrite;
mod sha256;
mod stream;
mod validators;

#[cfg(test)]
mod detector_tests;
#[cfg(test)]
mod proptests;

pub use liveness::Liveness;
pub use matcher::{Matcher, DEFAULT_MAX_MATCH_CAP, RESYNC_WINDOW};
pub use rewrite::{mask_label, rewrite_all, scan_report, BuiltinRewriter, Replacement, Rewriter};
pub use stream::StreamScanner;

/// Stable names of the built-in detectors (used in rules, metrics and audit records).
/// A rule may name a family prefix (`api_key` = every `api_key.*`); the rules module
/// expands it against this list.
pub const BUILTIN_DETECTORS: &[&str] = &[
    "email",
    "phone",
    "credit_card",
    "us_ssn",
    "us_itin",
    "iban",
    "ipv4",
    "ipv6",
    "us_bank_routing",
    "crypto_wallet",
    "api_key.openai",
    "api_key.anthropic",
    "api_key.aws_access_key",
    "api_key.aws_secret_key",
    "api_key.github",
    "api_key.slack",
    "api_key.google",
    "api_key.stripe",
    "private_key",
    "jwt",
    "url_credentials",
];

/// What a pattern spec matches.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PatternKind {
    /// A built-in detector by exact name (see [`BUILTIN_DETECTORS`]).
    Builtin(String),
    /// A custom regex (Rust `regex` syntax). In ASCII-only patterns `\b`/`\B` are ASCII word
    /// boundaries (keeps the one-pass DFA fast); unbounded patterns are capped for the
    /// stream hold-back (see [`Matcher::new_with_cap`]).
    Regex(String),
    /// Case-insensitive keywords/phrases, matched as whole words where they start/end with
    /// a word character; whitespace inside a phrase matches 1–8 whitespace characters.
    Keywords(Vec<String>),
}

/// One pattern to compile; `label` is reported back (findings, masks, errors).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PatternSpec {
    pub label: String,
    pub kind: PatternKind,
}

impl PatternSpec {
    /// Built-in detector with label == name.
    pub fn builtin(name: &str) -> PatternSpec {
        PatternSpec {
            label: name.to_string(),
            kind: PatternKind::Builtin(name.to_string()),
        }
    }
}

/// Errors building a [`Matcher`]. Messages name the label, never matched text.
#[derive(Debug, thiserror::Error)]
pub enum ScanError {
    #[error("unknown detector '{0}'")]
    UnknownDetector(String),
    #[error("invalid regex for '{label}': {message}")]
    BadRegex { label: String, message: String },
    #[error("keyword list '{0}' has no non-empty keyword")]
    EmptyKeywords(String),
}

/// A validated match. Byte offsets into the haystack; `pattern` indexes the specs given to
/// [`Matcher::new`] (and [`Matcher::labels`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Finding {
    pub pattern: usize,
    pub start: usize,
    pub end: usize,
}

/// Specs for every built-in detector, label == name, in [`BUILTIN_DETECTORS`] order.
pub fn builtin_specs() -> Vec<PatternSpec> {
    BUILTIN_DETECTORS
        .iter()
        .map(|n| PatternSpec::builtin(n))
        .collect()
}
