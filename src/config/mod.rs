//! Jimini's configuration: the YAML schema composed from each module's section, `${VAR}`
//! interpolation, `JIMINI_*` environment overrides, and validation whose every error names the
//! exact key path. Loading is pure (no sockets, no threads) so `jimini check` and reloads share it.

mod interpolate;

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

pub use interpolate::interpolate;

use crate::admin::AdminConfig;
use crate::audit::AuditConfig;
use crate::mock::MockConfig;
use crate::rules::RulesConfig;
use crate::telemetry::TelemetryConfig;
use crate::upstream::{CallersConfig, LimitsConfig, RouteConfig, UpstreamConfig};

/// A configuration error; `Display` always names the file and the key path.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{file}: cannot read: {source}")]
    Read {
        file: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{file}: {message}")]
    Interpolation { file: String, message: String },
    #[error("{file}: at `{path}`: {message}")]
    Invalid {
        file: String,
        path: String,
        message: String,
    },
}

/// What to do with a body Jimini must inspect but cannot parse (malformed JSON, invalid UTF-8,
/// unsupported `Content-Encoding`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum FailMode {
    /// Reject with an OpenAI-shaped 400 (requests) or 502 (responses). Nothing unscanned passes.
    #[default]
    Closed,
    /// Forward the bytes unscanned and record the event. For teams that value availability over
    /// inspection; every such request is counted and audited as `unscanned`.
    Open,
}

/// Body handling limits.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct BodyConfig {
    /// Inspect bodies at all. `false` turns Jimini into a plain reverse proxy (routing, limits,
    /// breakers and audit still apply) — the baseline of the load tests.
    pub inspect: bool,
    /// Largest request body Jimini buffers for inspection (bytes). Larger → 413.
    pub max_bytes: usize,
    /// Largest non-streamed JSON response Jimini buffers for inspection (bytes). Larger → 502
    /// (fail closed) or passed through unscanned (fail open).
    pub max_response_bytes: usize,
    /// Behaviour for bodies that cannot be parsed.
    pub on_unparseable: FailMode,
}

impl Default for BodyConfig {
    fn default() -> Self {
        Self {
            inspect: true,
            max_bytes: 8 * 1024 * 1024,
            max_response_bytes: 32 * 1024 * 1024,
            on_unparseable: FailMode::Closed,
        }
    }
}

/// Default client read buffer: fits a typical request head and a small JSON body in one read
/// while keeping thousands of open streams cheap (see `load-tests/streams_memory.py`).
pub const DEFAULT_READ_BUFFER_BYTES: usize = 16 * 1024;
/// Largest accepted `server.read_buffer_bytes`.
pub const MAX_READ_BUFFER_BYTES: usize = 1024 * 1024;

/// Process-level knobs for the Pingora server.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServerConfig {
    /// Worker threads for the proxy service (0 = number of CPUs).
    pub threads: usize,
    /// Seconds to keep serving in-flight requests after SIGTERM.
    pub grace_period_secs: u64,
    /// Hard limit for the graceful shutdown.
    pub shutdown_timeout_secs: u64,
    /// Per-connection read buffer of the client listener (Pingora's default is 64 KiB). Every
    /// open connection holds one; larger reads (request bodies) bypass it. 0 = unbuffered.
    pub read_buffer_bytes: usize,
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            threads: 0,
            grace_period_secs: 5,
            shutdown_timeout_secs: 10,
            read_buffer_bytes: DEFAULT_READ_BUFFER_BYTES,
        }
    }
}

/// The whole configuration file.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Proxy listener (`JIMINI_LISTEN`).
    #[serde(default = "default_listen")]
    pub listen: String,
    #[serde(default)]
    pub server: ServerConfig,
    #[serde(default)]
    pub admin: AdminConfig,
    /// Upstream LLM providers. The first one is the default upstream (`JIMINI_UPSTREAM_URL`).
    pub upstreams: Vec<UpstreamConfig>,
    #[serde(default)]
    pub routes: Vec<RouteConfig>,
    #[serde(default)]
    pub callers: CallersConfig,
    #[serde(default)]
    pub limits: LimitsConfig,
    #[serde(default)]
    pub body: BodyConfig,
    #[serde(default)]
    pub rules: RulesConfig,
    #[serde(default)]
    pub audit: AuditConfig,
    #[serde(default)]
    pub telemetry: TelemetryConfig,
    /// The built-in mock upstream; run in-process when enabled and the default upstream points at it.
    #[serde(default)]
    pub mock: MockConfig,
}

fn default_listen() -> String {
    "127.0.0.1:8080".to_string()
}

/// The configuration file Jimini embeds, used when `-c` is not given and no file exists.
pub const EMBEDDED_CONFIG: &str = include_str!("../../conf/jimini.yaml");

/// The shipped rule packs, used with the embedded config when no `rules/` directory exists.
pub fn embedded_rules() -> Vec<(String, String)> {
    [
        ("rules/pii.yaml", include_str!("../../rules/pii.yaml")),
        (
            "rules/secrets.yaml",
            include_str!("../../rules/secrets.yaml"),
        ),
        (
            "rules/prompt-injection.yaml",
            include_str!("../../rules/prompt-injection.yaml"),
        ),
        ("rules/egress.yaml", include_str!("../../rules/egress.yaml")),
    ]
    .into_iter()
    .map(|(name, text)| (name.to_string(), text.to_string()))
    .collect()
}

impl Config {
    /// Read, interpolate, parse, apply environment overrides and validate.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let file = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            file: file.clone(),
            source,
        })?;
        let mut cfg = Self::parse_str(&text, &file)?;
        cfg.resolve_relative_paths(path.parent().unwrap_or(Path::new(".")));
        Ok(cfg)
    }

    /// Parse YAML text (after `${VAR}` interpolation) and apply overrides from the process
    /// environment.
    pub fn parse_str(text: &str, file: &str) -> Result<Config, ConfigError> {
        Self::parse_with_env(text, file, &|k| std::env::var(k).ok())
    }

    /// Like [`Config::parse_str`] with an explicit environment (tests).
    pub fn parse_with_env(
        text: &str,
        file: &str,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Config, ConfigError> {
        let expanded = interpolate(text, env).map_err(|message| ConfigError::Interpolation {
            file: file.to_string(),
            message,
        })?;
        let de = serde_yaml::Deserializer::from_str(&expanded);
        let mut cfg: Config = serde_path_to_error::deserialize(de).map_err(|e| {
            let path = e.path().to_string();
            let inner = e.into_inner();
            ConfigError::Invalid {
                file: file.to_string(),
                path: if path.is_empty() || path == "." {
                    "(root)".to_string()
                } else {
                    path
                },
                message: inner.to_string(),
            }
        })?;
        cfg.apply_env(env);
        cfg.validate()
            .map_err(|(path, message)| ConfigError::Invalid {
                file: file.to_string(),
                path,
                message,
            })?;
        Ok(cfg)
    }

    /// `JIMINI_*` overrides for the keys operators change per environment.
    fn apply_env(&mut self, env: &dyn Fn(&str) -> Option<String>) {
        let get = |k: &str| env(k).filter(|v| !v.trim().is_empty());
        if let Some(v) = get("JIMINI_LISTEN") {
            self.listen = v;
        }
        if let Some(v) = get("JIMINI_ADMIN_LISTEN") {
            self.admin.listen = v;
        }
        if let Some(v) = get("JIMINI_UPSTREAM_URL") {
            if let Some(up) = self.upstreams.first_mut() {
                up.base_url = v;
            }
        }
        if let Some(v) = get("JIMINI_RULES_DIR") {
            self.rules.dir = PathBuf::from(v);
        }
        if let Some(v) = get("JIMINI_SHADOW") {
            if matches!(v.as_str(), "1" | "true" | "yes" | "on") {
                self.rules.mode = crate::rules::Mode::Shadow;
            }
        }
        if let Some(v) = get("JIMINI_AUDIT_DIR") {
            self.audit.dir = PathBuf::from(v);
        }
        if let Some(v) = get("JIMINI_ADMIN_JWT_SECRET") {
            self.admin.jwt.secret = Some(crate::admin::config::Secret::new(v));
        }
        if let Some(v) = get("JIMINI_HASH_KEY") {
            self.rules.hash_key = Some(v);
        }
        if let Some(v) = get("JIMINI_REDIS_URL") {
            self.limits.redis_url = Some(v);
        }
    }

    fn validate(&self) -> Result<(), (String, String)> {
        validate_addr(&self.listen).map_err(|m| ("listen".to_string(), m))?;
        validate_addr(&self.admin.listen).map_err(|m| ("admin.listen".to_string(), m))?;
        if addrs_overlap(&self.listen, &self.admin.listen) {
            // The admin listener binds first; pingora would retry the proxy's bind in vain for
            // half a minute while the admin API answered proxy traffic with 404s.
            return Err((
                "admin.listen".into(),
                format!("`{}` is also the proxy's `listen` port", self.admin.listen),
            ));
        }
        if self.upstreams.is_empty() {
            return Err((
                "upstreams".into(),
                "at least one upstream is required".into(),
            ));
        }
        if self.server.read_buffer_bytes > MAX_READ_BUFFER_BYTES {
            return Err((
                "server.read_buffer_bytes".into(),
                format!("must be at most {MAX_READ_BUFFER_BYTES} (0 = unbuffered)"),
            ));
        }
        if self.body.max_bytes == 0 {
            return Err(("body.max_bytes".into(), "must be greater than 0".into()));
        }
        if self.mock.enabled {
            validate_addr(&self.mock.listen).map_err(|m| ("mock.listen".to_string(), m))?;
        }
        let to_pair = |e: crate::upstream::ConfigError| (e.path.clone(), e.message.clone());
        crate::upstream::Router::new(&self.routes, &self.upstreams).map_err(to_pair)?;
        for (i, up) in self.upstreams.iter().enumerate() {
            up.validate(&format!("upstreams[{i}]")).map_err(to_pair)?;
        }
        self.limits.validate("limits").map_err(to_pair)?;
        Ok(())
    }

    /// Relative `rules.dir` / `audit.dir` are resolved against the working directory (the
    /// convention of every other tool), except when they don't exist there but do next to the
    /// config file — so `jimini serve -c /etc/jimini/jimini.yaml` finds `/etc/jimini/rules`.
    fn resolve_relative_paths(&mut self, base: &Path) {
        if self.rules.dir.is_relative() && !self.rules.dir.exists() {
            let candidate = base.join(&self.rules.dir);
            if candidate.exists() {
                self.rules.dir = candidate;
            }
        }
    }

    /// Whether `jimini serve` should run the built-in mock upstream in-process: it is enabled and
    /// the default upstream points at its listen address.
    pub fn runs_embedded_mock(&self) -> bool {
        if !self.mock.enabled {
            return false;
        }
        let Some(up) = self.upstreams.first() else {
            return false;
        };
        let authority = up
            .base_url
            .split("://")
            .nth(1)
            .unwrap_or("")
            .split('/')
            .next()
            .unwrap_or("");
        authority == self.mock.listen
            || authority.replace("localhost", "127.0.0.1") == self.mock.listen
    }

    /// The configuration with every secret replaced by `***` (admin API, logs).
    pub fn masked_json(&self) -> serde_json::Value {
        let mut v = serde_json::to_value(self).unwrap_or(serde_json::Value::Null);
        mask_secrets(&mut v);
        v
    }
}

/// Whether two listeners would fight over one port: same non-zero port, and the same address
/// or a wildcard on either side.
fn addrs_overlap(a: &str, b: &str) -> bool {
    match (
        a.parse::<std::net::SocketAddr>(),
        b.parse::<std::net::SocketAddr>(),
    ) {
        (Ok(a), Ok(b)) => {
            a.port() != 0
                && a.port() == b.port()
                && (a.ip() == b.ip() || a.ip().is_unspecified() || b.ip().is_unspecified())
        }
        _ => false,
    }
}

fn validate_addr(addr: &str) -> Result<(), String> {
    addr.parse::<std::net::SocketAddr>()
        .map(|_| ())
        .map_err(|e| format!("`{addr}` is not a socket address (host:port, numeric host): {e}"))
}

/// Replace values of keys that can hold secrets. Module configs already serialize their secret
/// types as `***`; this is the belt to that brace, keyed on names.
pub fn mask_secrets(v: &mut serde_json::Value) {
    match v {
        serde_json::Value::Object(map) => {
            for (k, val) in map.iter_mut() {
                let lk = k.to_ascii_lowercase();
                let secretish = ["secret", "password", "token", "hash_key", "api_key"]
                    .iter()
                    .any(|s| lk.contains(s))
                    && !lk.ends_with("_env")
                    && !lk.ends_with("_file");
                if secretish && !val.is_null() && !val.is_object() && !val.is_array() {
                    *val = serde_json::Value::String("***".into());
                } else if lk == "redis_url" {
                    if let serde_json::Value::String(s) = val {
                        *s = mask_url_credentials(s);
                    }
                } else {
                    mask_secrets(val);
                }
            }
        }
        serde_json::Value::Array(items) => items.iter_mut().for_each(mask_secrets),
        _ => {}
    }
}

fn mask_url_credentials(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(s), Some(at)) if at > s => format!("{}://***@{}", &url[..s], &url[at + 1..]),
        _ => url.to_string(),
    }
}

#[cfg(test)]
mod tests;
