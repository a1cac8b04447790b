//! Caller identification (key vault, client side): callers present their own Jimini key, which is
//! matched by SHA3-256 hash against keys from config, a hash file or an env list, and mapped to a caller
//! name. Plain keys are never stored; unknown-key errors never echo the key.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;

use sha3::{Digest, Sha3_256};

use super::config::{CallersConfig, ConfigError};

/// Caller name used when no key identifies the request and keys are not required.
pub const ANONYMOUS: &str = "anonymous";
/// Unauthenticated caller-name hint header, honoured only while `callers.require_key` is false.
pub const CALLER_HEADER: &str = "x-jimini-caller";
const MAX_CALLER_NAME: usize = 64;

/// An identified caller. Cheap to clone.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Caller {
    pub name: Arc<str>,
    /// True when a known key identified the caller (false for anonymous / header hint).
    pub authenticated: bool,
}

/// Why a request was not identified (→ 401, OpenAI-shaped `invalid_api_key`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    #[error("missing API key: send your Jimini caller key as 'Authorization: Bearer <key>' or 'x-api-key'")]
    Missing,
    #[error("invalid API key")]
    Unknown,
}

impl AuthError {
    /// Error `code` for the OpenAI error body.
    pub fn code(self) -> &'static str {
        "invalid_api_key"
    }
}

/// SHA3-256 of a key, lower-case hex (what `callers.keys[].key_sha3` expects).
pub fn hash_key(key: &str) -> String {
    hex::encode(Sha3_256::digest(key.as_bytes()))
}

fn digest(key: &str) -> [u8; 32] {
    Sha3_256::digest(key.as_bytes()).into()
}

/// Equality without data-dependent early exit.
fn ct_eq(a: &[u8; 32], b: &[u8; 32]) -> bool {
    let diff = a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y));
    // black_box keeps the optimizer from turning the fold back into an early-exit compare.
    std::hint::black_box(diff) == 0
}

/// Caller key table. Lookup hashes the presented key and finds it in a map keyed by digest (SipHash
/// with a random seed, so lookup timing tells nothing about stored digests), then confirms with a
/// constant-time comparison. Timing can at most reveal facts about a SHA3 digest, which gives no
/// handle on the key itself.
#[derive(Debug)]
pub struct CallerAuth {
    require_key: bool,
    by_digest: HashMap<[u8; 32], Arc<str>>,
    anonymous: Caller,
}

impl CallerAuth {
    /// Load keys from config, `keys_file` and `keys_env` (read with `std::env::var`).
    pub fn new(cfg: &CallersConfig) -> Result<CallerAuth, ConfigError> {
        Self::with_env(cfg, &|k| std::env::var(k).ok())
    }

    /// Same with an injectable environment (tests, `jimini check`).
    pub fn with_env(
        cfg: &CallersConfig,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<CallerAuth, ConfigError> {
        let mut by_digest: HashMap<[u8; 32], Arc<str>> = HashMap::new();
        let mut names: HashMap<Arc<str>, Arc<str>> = HashMap::new();
        let mut add = |name: &str, d: [u8; 32], path: String| -> Result<(), ConfigError> {
            validate_name(name).map_err(|m| ConfigError::new(path.clone(), m))?;
            let name = names
                .entry(Arc::from(name))
                .or_insert_with_key(Arc::clone)
                .clone();
            match by_digest.get(&d) {
                Some(existing) if *existing != name => Err(ConfigError::new(
                    path,
                    format!("the same key is already assigned to caller '{existing}'"),
                )),
                _ => {
                    by_digest.insert(d, name);
                    Ok(())
                }
            }
        };
        for (i, k) in cfg.keys.iter().enumerate() {
            let d = parse_digest(&k.key_sha3)
                .map_err(|m| ConfigError::new(format!("callers.keys[{i}].key_sha3"), m))?;
            add(&k.name, d, format!("callers.keys[{i}].name"))?;
        }
        if let Some(file) = &cfg.keys_file {
            let text = std::fs::read_to_string(file).map_err(|e| {
                ConfigError::new(
                    "callers.keys_file",
                    format!("cannot read {}: {e}", file.display()),
                )
            })?;
            for (lineno, line) in text.lines().enumerate() {
                let line = line.trim();
                if line.is_empty() || line.starts_with('#') {
                    continue;
                }
                let at = |m: String| {
                    ConfigError::new(
                        "callers.keys_file",
                        format!("{}:{}: {m}", display_file(file), lineno + 1),
                    )
                };
                let (name, hash) = line
                    .split_once(':')
                    .ok_or_else(|| at("expected 'name:sha3hex'".into()))?;
                let d = parse_digest(hash.trim()).map_err(at)?;
                add(name.trim(), d, "callers.keys_file".into()).map_err(|e| at(e.message))?;
            }
        }
        if let Some(var) = &cfg.keys_env {
            let path = "callers.keys_env";
            let value = env(var).ok_or_else(|| {
                ConfigError::new(path, format!("environment variable {var} is not set"))
            })?;
            for (i, entry) in value.split(',').enumerate() {
                let entry = entry.trim();
                if entry.is_empty() {
                    continue;
                }
                // Never include the entry in errors: it holds a plaintext key.
                let (name, key) = entry.split_once('=').ok_or_else(|| {
                    ConfigError::new(path, format!("{var}: entry {} is not 'name=key'", i + 1))
                })?;
                if key.trim().is_empty() {
                    return Err(ConfigError::new(
                        path,
                        format!("{var}: entry {} has an empty key", i + 1),
                    ));
                }
                add(name.trim(), digest(key.trim()), path.into()).map_err(|e| {
                    ConfigError::new(path, format!("{var}: entry {}: {}", i + 1, e.message))
                })?;
            }
        }
        if cfg.require_key && by_digest.is_empty() {
            return Err(ConfigError::new(
                "callers.require_key",
                "no caller keys configured (keys, keys_file or keys_env)",
            ));
        }
        Ok(CallerAuth {
            require_key: cfg.require_key,
            by_digest,
            anonymous: Caller {
                name: Arc::from(ANONYMOUS),
                authenticated: false,
            },
        })
    }

    pub fn require_key(&self) -> bool {
        self.require_key
    }

    /// Number of distinct keys loaded.
    pub fn key_count(&self) -> usize {
        self.by_digest.len()
    }

    /// Identify from the `Authorization` header (`Bearer <key>`, as the OpenAI SDKs send `api_key`)
    /// or, failing that, an `x-api-key` / `api-key` header value. Without `require_key` an unknown or
    /// missing key yields the anonymous caller (the key may be a real upstream key in passthrough mode).
    pub fn identify(
        &self,
        authorization: Option<&str>,
        api_key_header: Option<&str>,
    ) -> Result<Caller, AuthError> {
        let bearer = authorization.and_then(bearer_token);
        let mut presented = false;
        for key in [bearer, api_key_header.map(str::trim)]
            .into_iter()
            .flatten()
        {
            if key.is_empty() {
                continue;
            }
            presented = true;
            if let Some(name) = self.lookup(key) {
                return Ok(Caller {
                    name: name.clone(),
                    authenticated: true,
                });
            }
        }
        match (self.require_key, presented) {
            (false, _) => Ok(self.anonymous.clone()),
            (true, false) => Err(AuthError::Missing),
            (true, true) => Err(AuthError::Unknown),
        }
    }

    /// [`identify`](Self::identify), plus the unauthenticated `x-jimini-caller` hint: used only when
    /// `require_key` is false and no key matched. Names must be 1–64 chars of `[A-Za-z0-9._:@-]`;
    /// anything else is ignored (anonymous), keeping logs and metric labels clean.
    pub fn identify_request(
        &self,
        authorization: Option<&str>,
        api_key_header: Option<&str>,
        caller_header: Option<&str>,
    ) -> Result<Caller, AuthError> {
        let caller = self.identify(authorization, api_key_header)?;
        if caller.authenticated || self.require_key {
            return Ok(caller);
        }
        match caller_header.map(str::trim) {
            Some(h) if validate_name(h).is_ok() => Ok(Caller {
                name: Arc::from(h),
                authenticated: false,
            }),
            _ => Ok(caller),
        }
    }

    fn lookup(&self, key: &str) -> Option<&Arc<str>> {
        // No caller keys configured (the common pass-through setup): nothing to find, and no
        // SHA3 per request for it (one Keccak permutation ≈ 6,000 instructions).
        if self.by_digest.is_empty() {
            return None;
        }
        let d = digest(key);
        self.by_digest
            .get_key_value(&d)
            .filter(|(stored, _)| ct_eq(stored, &d))
            .map(|(_, name)| name)
    }
}

fn bearer_token(v: &str) -> Option<&str> {
    let v = v.trim();
    let (scheme, rest) = v.split_once(char::is_whitespace)?;
    scheme.eq_ignore_ascii_case("bearer").then(|| rest.trim())
}

fn parse_digest(hex_str: &str) -> Result<[u8; 32], String> {
    let mut out = [0u8; 32];
    hex::decode_to_slice(hex_str.trim(), &mut out)
        .map_err(|_| "must be 64 hex digits (SHA3-256 of the key)".to_string())?;
    Ok(out)
}

fn validate_name(name: &str) -> Result<(), String> {
    if name.is_empty() || name.len() > MAX_CALLER_NAME {
        return Err(format!(
            "caller name must be 1..={MAX_CALLER_NAME} characters"
        ));
    }
    if !name
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b"._:@-".contains(&b))
    {
        return Err(format!(
            "caller name '{}' may only contain A-Z a-z 0-9 . _ : @ -",
            name.escape_debug()
        ));
    }
    Ok(())
}

fn display_file(p: &Path) -> String {
    p.display().to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::upstream::config::CallerKeyConfig;
    use std::io::Write;

    fn cfg(require_key: bool) -> CallersConfig {
        CallersConfig {
            require_key,
            keys: vec![CallerKeyConfig {
                name: "alice".into(),
                key_sha3: hash_key("jk-alice-secret").to_uppercase(),
            }],
            ..CallersConfig::default()
        }
    }

    #[test]
    fn hash_is_sha3_256() {
        // SHA3-256("") from FIPS 202 test vectors.
        assert_eq!(
            hash_key(""),
            "a7ffc6f8bf1ed76651c14756a061d662f580ff4de43b49fa82d80a4b80f8434a"
        );
    }

    #[test]
    fn identifies_by_bearer_or_api_key_header() {
        let a = CallerAuth::with_env(&cfg(true), &|_| None).unwrap();
        let c = a.identify(Some("Bearer jk-alice-secret"), None).unwrap();
        assert_eq!((&*c.name, c.authenticated), ("alice", true));
        assert_eq!(
            &*a.identify(Some("bearer   jk-alice-secret "), None)
                .unwrap()
                .name,
            "alice"
        );
        assert_eq!(
            &*a.identify(None, Some("jk-alice-secret")).unwrap().name,
            "alice"
        );
        // A non-matching bearer (e.g. an upstream key) does not hide a matching x-api-key.
        assert_eq!(
            &*a.identify(Some("Bearer sk-other"), Some("jk-alice-secret"))
                .unwrap()
                .name,
            "alice"
        );
        assert_eq!(a.identify(None, None), Err(AuthError::Missing));
        assert_eq!(a.identify(Some("Basic abc"), None), Err(AuthError::Missing));
        assert_eq!(
            a.identify(Some("Bearer "), Some("")),
            Err(AuthError::Missing)
        );
        assert_eq!(
            a.identify(Some("Bearer wrong"), None),
            Err(AuthError::Unknown)
        );
        assert!(!AuthError::Unknown.to_string().contains("wrong"));
    }

    #[test]
    fn without_configured_keys_every_caller_is_anonymous_or_named() {
        let none = |require_key| CallersConfig {
            require_key,
            ..CallersConfig::default()
        };
        let open = CallerAuth::with_env(&none(false), &|_| None).unwrap();
        let c = open
            .identify_request(Some("Bearer sk-upstream"), Some("k"), Some("batch"))
            .unwrap();
        assert_eq!((&*c.name, c.authenticated), ("batch", false));
        let c = open.identify(Some("Bearer sk-upstream"), None).unwrap();
        assert_eq!((&*c.name, c.authenticated), (ANONYMOUS, false));
        // Requiring keys without any is refused when the config loads.
        assert!(CallerAuth::with_env(&none(true), &|_| None).is_err());
    }

    #[test]
    fn anonymous_and_caller_header_without_require_key() {
        let a = CallerAuth::with_env(&cfg(false), &|_| None).unwrap();
        let c = a
            .identify(Some("Bearer sk-real-upstream-key"), None)
            .unwrap();
        assert_eq!((&*c.name, c.authenticated), (ANONYMOUS, false));
        let c = a.identify_request(None, None, Some("batch-job")).unwrap();
        assert_eq!((&*c.name, c.authenticated), ("batch-job", false));
        assert_eq!(
            &*a.identify_request(None, None, Some("bad name\n"))
                .unwrap()
                .name,
            ANONYMOUS
        );
        assert_eq!(
            &*a.identify_request(None, None, Some(&"x".repeat(65)))
                .unwrap()
                .name,
            ANONYMOUS
        );
        // A valid key wins over the hint.
        assert_eq!(
            &*a.identify_request(Some("Bearer jk-alice-secret"), None, Some("mallory"))
                .unwrap()
                .name,
            "alice"
        );
        // With require_key the hint is never used.
        let strict = CallerAuth::with_env(&cfg(true), &|_| None).unwrap();
        assert_eq!(
            strict.identify_request(None, None, Some("alice")),
            Err(AuthError::Missing)
        );
    }

    #[test]
    fn env_list_and_file() {
        let mut f = tempfile::NamedTempFile::new().unwrap();
        writeln!(
            f,
            "# team keys\n\nbob:{}\n carol : {} ",
            hash_key("jk-bob"),
            hash_key("jk-carol")
        )
        .unwrap();
        let c = CallersConfig {
            require_key: true,
            keys_file: Some(f.path().to_path_buf()),
            keys_env: Some("JIMINI_CALLER_KEYS".into()),
            ..cfg(true)
        };
        let env = |k: &str| {
            (k == "JIMINI_CALLER_KEYS").then(|| "dave=jk-dave, erin = jk-erin ,".to_string())
        };
        let a = CallerAuth::with_env(&c, &env).unwrap();
        assert_eq!(a.key_count(), 5);
        for (key, name) in [
            ("jk-alice-secret", "alice"),
            ("jk-bob", "bob"),
            ("jk-carol", "carol"),
            ("jk-dave", "dave"),
            ("jk-erin", "erin"),
        ] {
            assert_eq!(&*a.identify(None, Some(key)).unwrap().name, name);
        }
    }

    #[test]
    fn load_errors_never_leak_keys() {
        let c = CallersConfig {
            keys_env: Some("K".into()),
            ..CallersConfig::default()
        };
        let e = CallerAuth::with_env(&c, &|_| Some("dave:jk-dave-plain".into())).unwrap_err();
        assert_eq!(e.path, "callers.keys_env");
        assert!(!e.to_string().contains("jk-dave-plain"), "{e}");
        let e = CallerAuth::with_env(&c, &|_| None).unwrap_err();
        assert!(e.message.contains("not set"));
        // Same key for two callers.
        let e = CallerAuth::with_env(&c, &|_| Some("a=k1,b=k1".into())).unwrap_err();
        assert!(
            e.message.contains("already assigned") && !e.message.contains("k1,"),
            "{e}"
        );

        let mut bad = cfg(false);
        bad.keys[0].key_sha3 = "abc".into();
        assert_eq!(
            CallerAuth::with_env(&bad, &|_| None).unwrap_err().path,
            "callers.keys[0].key_sha3"
        );

        let mut f = tempfile::NamedTempFile::new().unwrap();
        writeln!(f, "bob:{}\nnot-a-line", hash_key("x")).unwrap();
        let c = CallersConfig {
            keys_file: Some(f.path().to_path_buf()),
            ..CallersConfig::default()
        };
        let e = CallerAuth::with_env(&c, &|_| None).unwrap_err();
        assert!(e.message.ends_with(":2: expected 'name:sha3hex'"), "{e}");

        let e = CallerAuth::with_env(
            &CallersConfig {
                require_key: true,
                ..CallersConfig::default()
            },
            &|_| None,
        )
        .unwrap_err();
        assert_eq!(e.path, "callers.require_key");
    }

    #[test]
    fn constant_time_eq() {
        let a = [7u8; 32];
        let mut b = a;
        assert!(ct_eq(&a, &b));
        b[31] ^= 1;
        assert!(!ct_eq(&a, &b));
    }
}
