//! Config sections owned by the upstream module: `upstreams:` (list), `routes:` (list), `callers:` and
//! `limits:`. Plain serde structs with documented defaults plus range validation that reports the exact
//! key path (`upstreams[1].breaker.failure_rate: …`). Secrets are never part of these structs.

use std::collections::BTreeMap;
use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize, Serializer};

/// A configuration error that names the offending key path, e.g. `routes[2].upstream: unknown upstream 'x'`.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{path}: {message}")]
pub struct ConfigError {
    /// Key path inside the config file (`upstreams[0].base_url`, `callers.keys_file`, …).
    pub path: String,
    /// Human readable reason. Never contains secret values.
    pub message: String,
}

impl ConfigError {
    pub fn new(path: impl Into<String>, message: impl Into<String>) -> Self {
        ConfigError {
            path: path.into(),
            message: message.into(),
        }
    }
}

/// A secret loaded at startup (upstream API key, rendered header value). `Debug` and `Serialize` print
/// `***`; there is deliberately no `Display`, so it cannot end up in a log line or an admin response by
/// accident. Read it with [`Secret::expose`] at the single place that writes the upstream header.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(Box<str>);

impl Secret {
    pub fn new(value: impl Into<Box<str>>) -> Self {
        Secret(value.into())
    }
    /// The raw value. Only for building the outgoing upstream request.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

impl Serialize for Secret {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str("***")
    }
}

// ---------------------------------------------------------------------------------------------------
// upstreams
// ---------------------------------------------------------------------------------------------------

/// What API dialect an upstream speaks; decides path building and the default auth header.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum UpstreamKind {
    /// api.openai.com (default). `Authorization: Bearer <key>`.
    #[default]
    Openai,
    /// Azure OpenAI: `/openai/deployments/{deployment}/…?api-version=…`, `api-key: <key>`.
    Azure,
    /// Anthropic Messages API, paths passed through, `x-api-key: <key>`.
    Anthropic,
    /// Any OpenAI-compatible server (vLLM, Ollama, LiteLLM, TGI…). Same rules as `openai`.
    OpenaiCompatible,
}

impl UpstreamKind {
    pub fn as_str(self) -> &'static str {
        match self {
            UpstreamKind::Openai => "openai",
            UpstreamKind::Azure => "azure",
            UpstreamKind::Anthropic => "anthropic",
            UpstreamKind::OpenaiCompatible => "openai_compatible",
        }
    }

    /// Header that carries the upstream key when `auth.header` is not set.
    pub fn default_auth_header(self) -> &'static str {
        match self {
            UpstreamKind::Openai | UpstreamKind::OpenaiCompatible => "authorization",
            UpstreamKind::Azure => "api-key",
            UpstreamKind::Anthropic => "x-api-key",
        }
    }
}

/// How the upstream request is authenticated.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AuthMode {
    /// Forward the client's own `Authorization` / `api-key` / `x-api-key` headers unchanged (default).
    #[default]
    Passthrough,
    /// Remove every client credential header and set the real key read from `api_key_env`
    /// (key vaulting: the real key never reaches the client).
    Inject,
    /// Remove every client credential header and send none (local servers without auth).
    None,
}

/// `upstreams[].auth`
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AuthConfig {
    /// `passthrough` (default) | `inject` | `none`.
    pub mode: AuthMode,
    /// Name of the environment variable that holds the real upstream key. Read once at load; required
    /// for `mode: inject`. The value is never logged, serialized or returned by the admin API.
    pub api_key_env: Option<String>,
    /// Header that carries the injected key. Default by kind: `authorization` (value `Bearer <key>`) for
    /// openai/openai_compatible, `api-key` for azure, `x-api-key` for anthropic. For any header other
    /// than `authorization` the value is the bare key.
    pub header: Option<String>,
}

/// `upstreams[].azure` (required when `kind: azure`).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AzureConfig {
    /// `api-version` query parameter sent on every request (replaces any client-supplied value),
    /// e.g. `2024-10-21`.
    pub api_version: String,
    /// Model name (after any route rewrite) → deployment name. A model not listed here uses the model
    /// name itself as the deployment name.
    pub deployments: BTreeMap<String, String>,
}

/// `upstreams[].timeouts` (milliseconds).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TimeoutsConfig {
    /// TCP + TLS connect. Default 5000.
    pub connect_ms: u64,
    /// From request sent to the first response byte (models can think for a while). Default 60000.
    pub first_byte_ms: u64,
    /// Maximum silence between two response chunks (SSE streams). Default 60000.
    pub idle_ms: u64,
    /// Whole exchange, including a long stream. Default 600000 (10 minutes).
    pub total_ms: u64,
}

impl Default for TimeoutsConfig {
    fn default() -> Self {
        TimeoutsConfig {
            connect_ms: 5_000,
            first_byte_ms: 60_000,
            idle_ms: 60_000,
            total_ms: 600_000,
        }
    }
}

impl TimeoutsConfig {
    pub fn connect(&self) -> Duration {
        Duration::from_millis(self.connect_ms)
    }
    pub fn first_byte(&self) -> Duration {
        Duration::from_millis(self.first_byte_ms)
    }
    pub fn idle(&self) -> Duration {
        Duration::from_millis(self.idle_ms)
    }
    pub fn total(&self) -> Duration {
        Duration::from_millis(self.total_ms)
    }

    fn validate(&self, path: &str) -> Result<(), ConfigError> {
        for (key, v) in [
            ("connect_ms", self.connect_ms),
            ("first_byte_ms", self.first_byte_ms),
            ("idle_ms", self.idle_ms),
            ("total_ms", self.total_ms),
        ] {
            if v == 0 {
                return Err(ConfigError::new(format!("{path}.{key}"), "must be > 0"));
            }
        }
        Ok(())
    }
}

/// `upstreams[].breaker` — circuit breaker per upstream.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct BreakerConfig {
    /// Open after this many consecutive failures. 0 disables this trigger. Default 5.
    pub consecutive_failures: u32,
    /// Open when the failure ratio over the rolling window reaches this value (0 < x ≤ 1) and the
    /// window holds at least `min_requests` outcomes. Default 0.5.
    pub failure_rate: f64,
    /// Rolling window length in seconds (10 buckets). Default 30.
    pub window_secs: u32,
    /// Minimum outcomes in the window before `failure_rate` can trip. Default 10.
    pub min_requests: u32,
    /// First open period before a half-open probe. Default 5000.
    pub cooldown_ms: u64,
    /// The open period doubles each time a half-open probe fails, up to this cap. Default 60000.
    pub max_cooldown_ms: u64,
    /// Successful probes needed in half-open to close again. Default 2.
    pub half_open_successes: u32,
    /// Count upstream 429 responses as failures. Default false: a 429 proves the upstream is up and is
    /// recorded as a success.
    pub count_429: bool,
}

impl Default for BreakerConfig {
    fn default() -> Self {
        BreakerConfig {
            consecutive_failures: 5,
            failure_rate: 0.5,
            window_secs: 30,
            min_requests: 10,
            cooldown_ms: 5_000,
            max_cooldown_ms: 60_000,
            half_open_successes: 2,
            count_429: false,
        }
    }
}

impl BreakerConfig {
    pub(crate) fn validate(&self, path: &str) -> Result<(), ConfigError> {
        if !(self.failure_rate > 0.0 && self.failure_rate <= 1.0) {
            return Err(ConfigError::new(
                format!("{path}.failure_rate"),
                "must be in (0, 1]",
            ));
        }
        if self.window_secs == 0 || self.window_secs > 3600 {
            return Err(ConfigError::new(
                format!("{path}.window_secs"),
                "must be in 1..=3600",
            ));
        }
        if self.min_requests == 0 {
            return Err(ConfigError::new(
                format!("{path}.min_requests"),
                "must be >= 1",
            ));
        }
        if self.cooldown_ms == 0 {
            return Err(ConfigError::new(
                format!("{path}.cooldown_ms"),
                "must be > 0",
            ));
        }
        if self.max_cooldown_ms < self.cooldown_ms {
            return Err(ConfigError::new(
                format!("{path}.max_cooldown_ms"),
                "must be >= cooldown_ms",
            ));
        }
        if self.half_open_successes == 0 {
            return Err(ConfigError::new(
                format!("{path}.half_open_successes"),
                "must be >= 1",
            ));
        }
        Ok(())
    }
}

/// `upstreams[].retries` — retries happen only before anything was sent to the client and only for
/// connect errors, 502/503/504 and (optionally) 429.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RetryConfig {
    /// Extra attempts after the first one (0 = never retry). Default 2.
    pub max_attempts: u32,
    /// Backoff base; the cap for retry n (0-based) is `base_ms * 2^n`, full jitter. Default 100.
    pub base_ms: u64,
    /// Upper bound of one backoff delay. Default 2000.
    pub max_ms: u64,
    /// Retry budget: each client request deposits this fraction of a retry, each retry withdraws one,
    /// over a 10 s window — retries can add at most ~20 % load during an outage. Default 0.2.
    pub budget_ratio: f64,
    /// Retries per second always allowed regardless of traffic (so low-traffic upstreams can retry).
    /// Default 1.
    pub budget_min_per_sec: u32,
    /// Honour an upstream `Retry-After` only up to this long; a longer one is returned to the client
    /// instead of waiting. Default 5000.
    pub retry_after_cap_ms: u64,
    /// Retry upstream 429 responses (waiting for their Retry-After). Default true.
    pub retry_429: bool,
}

impl Default for RetryConfig {
    fn default() -> Self {
        RetryConfig {
            max_attempts: 2,
            base_ms: 100,
            max_ms: 2_000,
            budget_ratio: 0.2,
            budget_min_per_sec: 1,
            retry_after_cap_ms: 5_000,
            retry_429: true,
        }
    }
}

impl RetryConfig {
    pub(crate) fn validate(&self, path: &str) -> Result<(), ConfigError> {
        if self.max_attempts > 10 {
            return Err(ConfigError::new(
                format!("{path}.max_attempts"),
                "must be <= 10",
            ));
        }
        if self.base_ms == 0 {
            return Err(ConfigError::new(format!("{path}.base_ms"), "must be > 0"));
        }
        if self.max_ms < self.base_ms {
            return Err(ConfigError::new(
                format!("{path}.max_ms"),
                "must be >= base_ms",
            ));
        }
        if !(self.budget_ratio >= 0.0 && self.budget_ratio <= 100.0) {
            return Err(ConfigError::new(
                format!("{path}.budget_ratio"),
                "must be in [0, 100]",
            ));
        }
        Ok(())
    }
}

/// One entry of `upstreams:`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UpstreamConfig {
    /// Unique name, referenced by `routes[].upstream`, `fallback`, metrics and the admin API.
    pub name: String,
    /// `http://` or `https://` URL, optionally with a path prefix (`http://vllm:8000/v1`). Port defaults
    /// to 80/443. No credentials, query or fragment (use `auth`).
    pub base_url: String,
    /// `openai` (default) | `azure` | `anthropic` | `openai_compatible`.
    #[serde(default)]
    pub kind: UpstreamKind,
    /// Upstream authentication (default: pass the client's credentials through).
    #[serde(default)]
    pub auth: AuthConfig,
    /// Azure deployment mapping and api-version; required for `kind: azure`.
    #[serde(default)]
    pub azure: Option<AzureConfig>,
    /// Connect / first byte / idle / total timeouts.
    #[serde(default)]
    pub timeouts: TimeoutsConfig,
    /// Circuit breaker thresholds.
    #[serde(default)]
    pub breaker: BreakerConfig,
    /// Retry policy and budget.
    #[serde(default)]
    pub retries: RetryConfig,
    /// Name of the upstream to use while this one's breaker is open (chains are followed, cycles are
    /// rejected at load).
    #[serde(default)]
    pub fallback: Option<String>,
    /// Models this upstream may serve (exact names or globs with `*` / `?`). Empty = any. Checked
    /// against the model actually sent (after `rewrite_model`); requests without a model are allowed.
    #[serde(default)]
    pub models: Vec<String>,
}

impl Default for UpstreamConfig {
    /// The built-in mock upstream (`jimini mock-upstream`), so the default config works offline.
    fn default() -> Self {
        UpstreamConfig {
            name: "mock".to_string(),
            base_url: "http://127.0.0.1:18080".to_string(),
            kind: UpstreamKind::OpenaiCompatible,
            auth: AuthConfig::default(),
            azure: None,
            timeouts: TimeoutsConfig::default(),
            breaker: BreakerConfig::default(),
            retries: RetryConfig::default(),
            fallback: None,
            models: Vec::new(),
        }
    }
}

impl UpstreamConfig {
    /// Range checks that need nothing but this entry. `path` is e.g. `upstreams[3]`.
    pub(crate) fn validate(&self, path: &str) -> Result<(), ConfigError> {
        if self.name.trim().is_empty() {
            return Err(ConfigError::new(
                format!("{path}.name"),
                "must not be empty",
            ));
        }
        self.timeouts.validate(&format!("{path}.timeouts"))?;
        self.breaker.validate(&format!("{path}.breaker"))?;
        self.retries.validate(&format!("{path}.retries"))?;
        match (&self.kind, &self.azure) {
            (UpstreamKind::Azure, None) => {
                return Err(ConfigError::new(
                    format!("{path}.azure"),
                    "required for kind: azure (api_version)",
                ))
            }
            (UpstreamKind::Azure, Some(az)) if az.api_version.trim().is_empty() => {
                return Err(ConfigError::new(
                    format!("{path}.azure.api_version"),
                    "must not be empty",
                ))
            }
            (UpstreamKind::Azure, _) => {}
            (_, Some(_)) => {
                return Err(ConfigError::new(
                    format!("{path}.azure"),
                    "only allowed with kind: azure",
                ))
            }
            (_, None) => {}
        }
        if let Some(h) = &self.auth.header {
            if h.is_empty() || !h.bytes().all(is_token_byte) {
                return Err(ConfigError::new(
                    format!("{path}.auth.header"),
                    "must be a valid HTTP header name",
                ));
            }
        }
        if self.auth.mode == AuthMode::Inject && self.auth.api_key_env.is_none() {
            return Err(ConfigError::new(
                format!("{path}.auth.api_key_env"),
                "required for auth.mode: inject",
            ));
        }
        Ok(())
    }
}

/// RFC 9110 token characters (header names).
fn is_token_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

// ---------------------------------------------------------------------------------------------------
// routes
// ---------------------------------------------------------------------------------------------------

/// One entry of `routes:`. Routes are tried in order; the first whose conditions all match wins.
/// A route without `path` and `model` is a catch-all. Requests that match no route go to the first
/// upstream (the implicit default route). Egress is then still limited by each upstream's `models`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RouteConfig {
    /// Request path glob (query ignored), e.g. `/v1/chat/*`. `*` matches any run of characters
    /// including `/`, `?` exactly one character; no glob characters = exact match.
    #[serde(default)]
    pub path: Option<String>,
    /// Requested model, exact or glob (`gpt-4o*`). A route with a model condition never matches a
    /// request that carries no model.
    #[serde(default)]
    pub model: Option<String>,
    /// Name of the upstream (must exist in `upstreams`).
    pub upstream: String,
    /// Replace the request's model with this one before forwarding.
    #[serde(default)]
    pub rewrite_model: Option<String>,
}

// ---------------------------------------------------------------------------------------------------
// callers
// ---------------------------------------------------------------------------------------------------

/// `callers:` — who is calling Jimini. Keys are stored only as SHA3-256 hashes.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct CallersConfig {
    /// Reject requests without a known caller key (401). Default false: unknown or missing keys make
    /// the caller `anonymous`, or the name given in the `x-jimini-caller` header (only honoured while
    /// `require_key` is false, because it is unauthenticated).
    pub require_key: bool,
    /// Inline caller keys (name + SHA3-256 hex of the key; `jimini hash-key` prints one).
    pub keys: Vec<CallerKeyConfig>,
    /// File with one `name:sha3hex` per line (`#` comments and blank lines allowed). Hashes only —
    /// plaintext keys do not belong in files that get copied around.
    pub keys_file: Option<PathBuf>,
    /// Name of an environment variable holding `name=key,name2=key2` plaintext keys (hashed at load;
    /// for secrets injected by the orchestrator).
    pub keys_env: Option<String>,
}

/// `callers.keys[]`
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CallerKeyConfig {
    /// Caller name used in logs, audit records, metrics and `limits.callers`.
    pub name: String,
    /// Lower- or upper-case hex SHA3-256 of the caller's key (64 hex digits).
    pub key_sha3: String,
}

// ---------------------------------------------------------------------------------------------------
// limits
// ---------------------------------------------------------------------------------------------------

/// Requests and tokens per minute for one caller. A missing value means unlimited.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Limit {
    /// Requests per minute (token bucket: burst = rpm, refill rpm/60 per second).
    pub rpm: Option<u32>,
    /// Tokens per minute: estimated prompt tokens debited at admission, completion tokens debited when
    /// the response usage is known.
    pub tpm: Option<u32>,
}

impl Limit {
    pub fn is_unlimited(&self) -> bool {
        self.rpm.is_none() && self.tpm.is_none()
    }

    fn validate(&self, path: &str) -> Result<(), ConfigError> {
        if self.rpm == Some(0) {
            return Err(ConfigError::new(
                format!("{path}.rpm"),
                "must be >= 1 (omit for unlimited)",
            ));
        }
        if self.tpm == Some(0) {
            return Err(ConfigError::new(
                format!("{path}.tpm"),
                "must be >= 1 (omit for unlimited)",
            ));
        }
        Ok(())
    }
}

/// What the shared (Redis) limiter does while Redis is unreachable.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RedisFailMode {
    /// Fall back to the in-process limiter (each replica enforces the limit on its own) — default,
    /// because a limiter outage should not become an API outage.
    #[default]
    Open,
    /// Reject with 429 (Retry-After: 1) until Redis is back.
    Closed,
}

/// `limits:` — per-caller token buckets.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LimitsConfig {
    /// Limit for callers not listed in `callers`. Default none (unlimited).
    pub default: Option<Limit>,
    /// Per caller name.
    pub callers: BTreeMap<String, Limit>,
    /// `redis://[:password@]host:port/db` — share the buckets across replicas. Default none
    /// (in-process). Credentials in it are masked when the config is serialized.
    #[serde(serialize_with = "serialize_masked_url")]
    pub redis_url: Option<String>,
    /// Key prefix in Redis. Default `jimini:rl:`.
    pub redis_prefix: String,
    /// `open` (default: fall back to the local limiter) | `closed` (reject while Redis is down).
    pub redis_fail: RedisFailMode,
    /// Budget for one Redis round trip before falling back. Default 50.
    pub redis_timeout_ms: u64,
    /// Upper bound of callers tracked in memory (oldest idle buckets are evicted). Default 100000.
    pub max_callers: usize,
}

impl Default for LimitsConfig {
    fn default() -> Self {
        LimitsConfig {
            default: None,
            callers: BTreeMap::new(),
            redis_url: None,
            redis_prefix: "jimini:rl:".to_string(),
            redis_fail: RedisFailMode::Open,
            redis_timeout_ms: 50,
            max_callers: 100_000,
        }
    }
}

impl LimitsConfig {
    /// Checks ranges; `path` is the section key (`limits`).
    pub fn validate(&self, path: &str) -> Result<(), ConfigError> {
        if let Some(d) = &self.default {
            d.validate(&format!("{path}.default"))?;
        }
        for (name, l) in &self.callers {
            l.validate(&format!("{path}.callers.{name}"))?;
        }
        if let Some(url) = &self.redis_url {
            if !(url.starts_with("redis://")
                || url.starts_with("rediss://")
                || url.starts_with("redis+unix://")
                || url.starts_with("unix://"))
            {
                return Err(ConfigError::new(
                    format!("{path}.redis_url"),
                    "must start with redis://, rediss:// or unix://",
                ));
            }
        }
        if self.redis_timeout_ms == 0 {
            return Err(ConfigError::new(
                format!("{path}.redis_timeout_ms"),
                "must be > 0",
            ));
        }
        if self.max_callers == 0 {
            return Err(ConfigError::new(
                format!("{path}.max_callers"),
                "must be >= 1",
            ));
        }
        Ok(())
    }
}

/// Replace the password (and user) of a URL with `***` for display.
pub fn mask_url_credentials(url: &str) -> String {
    let Some(scheme_end) = url.find("://") else {
        return url.to_string();
    };
    let rest = &url[scheme_end + 3..];
    let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    match rest[..authority_end].rfind('@') {
        Some(at) => format!("{}***@{}", &url[..scheme_end + 3], &rest[at + 1..]),
        None => url.to_string(),
    }
}

fn serialize_masked_url<S: Serializer>(v: &Option<String>, s: S) -> Result<S::Ok, S::Error> {
    match v {
        Some(url) => s.serialize_some(&mask_url_credentials(url)),
        None => s.serialize_none(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn upstream_defaults_from_minimal_yaml() {
        let yaml = "name: openai\nbase_url: https://api.openai.com\n";
        let c: UpstreamConfig = serde_yaml::from_str(yaml).unwrap();
        assert_eq!(c.kind, UpstreamKind::Openai);
        assert_eq!(c.auth.mode, AuthMode::Passthrough);
        assert_eq!(c.timeouts, TimeoutsConfig::default());
        assert_eq!(c.breaker, BreakerConfig::default());
        assert_eq!(c.retries, RetryConfig::default());
        assert!(c.validate("upstreams[0]").is_ok());
    }

    #[test]
    fn unknown_fields_rejected() {
        let yaml = "name: a\nbase_url: http://x\nbreaker:\n  consecutive_failure: 3\n";
        assert!(serde_yaml::from_str::<UpstreamConfig>(yaml).is_err());
        assert!(serde_yaml::from_str::<LimitsConfig>("defaults: {}").is_err());
    }

    #[test]
    fn partial_nested_sections_keep_other_defaults() {
        let yaml = "name: a\nbase_url: http://x\ntimeouts:\n  connect_ms: 10\nauth:\n  mode: inject\n  api_key_env: K\n";
        let c: UpstreamConfig = serde_yaml::from_str(yaml).unwrap();
        assert_eq!(c.timeouts.connect_ms, 10);
        assert_eq!(c.timeouts.total_ms, 600_000);
        assert_eq!(c.auth.mode, AuthMode::Inject);
    }

    #[test]
    fn validation_names_key_paths() {
        let mut c = UpstreamConfig::default();
        c.breaker.failure_rate = 1.5;
        let e = c.validate("upstreams[2]").unwrap_err();
        assert_eq!(e.path, "upstreams[2].breaker.failure_rate");

        let c = UpstreamConfig {
            kind: UpstreamKind::Azure,
            ..UpstreamConfig::default()
        };
        assert_eq!(
            c.validate("upstreams[0]").unwrap_err().path,
            "upstreams[0].azure"
        );

        let mut c = UpstreamConfig::default();
        c.auth.mode = AuthMode::Inject;
        assert_eq!(
            c.validate("upstreams[1]").unwrap_err().to_string(),
            "upstreams[1].auth.api_key_env: required for auth.mode: inject"
        );

        let l: LimitsConfig = serde_yaml::from_str("callers:\n  bob: {rpm: 0}\n").unwrap();
        assert_eq!(
            l.validate("limits").unwrap_err().path,
            "limits.callers.bob.rpm"
        );
    }

    #[test]
    fn secret_never_prints() {
        let s = Secret::new("sk-live-123");
        assert_eq!(format!("{s:?}"), "***");
        assert_eq!(serde_json::to_string(&s).unwrap(), "\"***\"");
        assert_eq!(s.expose(), "sk-live-123");
    }

    #[test]
    fn redis_url_credentials_masked_in_serialization() {
        let l = LimitsConfig {
            redis_url: Some("redis://:hunter2@redis:6379/0".into()),
            ..LimitsConfig::default()
        };
        let json = serde_json::to_string(&l).unwrap();
        assert!(!json.contains("hunter2"), "{json}");
        assert!(json.contains("redis://***@redis:6379/0"));
        assert_eq!(mask_url_credentials("redis://h:1"), "redis://h:1");
    }
}
