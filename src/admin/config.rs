//! The `admin:` config section: listen address and JWT verification settings. The HS256 secret is
//! a [`Secret`], masked in `Debug` and `Serialize` so config dumps never reveal it.

use std::fmt;
use std::path::PathBuf;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Environment variable overriding `admin.jwt.secret`.
pub const ENV_JWT_SECRET: &str = "JIMINI_ADMIN_JWT_SECRET";

/// A secret string: deserializes from a plain string; prints and serializes masked.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(s: impl Into<String>) -> Secret {
        Secret(s.into())
    }
    /// The real value (only for key material, never for output).
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(***)")
    }
}

impl Serialize for Secret {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str("***")
    }
}

impl<'de> Deserialize<'de> for Secret {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        String::deserialize(d).map(Secret)
    }
}

/// JWT signature algorithm accepted by the admin API (exactly one).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum JwtAlgorithm {
    /// HMAC-SHA256 with `admin.jwt.secret` (default).
    #[default]
    HS256,
    /// RSA PKCS#1 v1.5 SHA-256; public key PEM in `admin.jwt.public_key_file`.
    RS256,
    /// ECDSA P-256 SHA-256; public key PEM in `admin.jwt.public_key_file`.
    ES256,
}

/// `admin.jwt:` section.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct JwtConfig {
    /// HS256 shared secret (at least 32 bytes). Overridden by `JIMINI_ADMIN_JWT_SECRET`.
    /// Without any key, every `/admin/` request is answered 401.
    pub secret: Option<Secret>,
    /// PEM public key for RS256/ES256.
    pub public_key_file: Option<PathBuf>,
    /// `HS256` (default), `RS256` or `ES256`; tokens with any other `alg` are rejected.
    pub algorithm: JwtAlgorithm,
    /// Required `iss` claim (default `jimini`).
    pub issuer: String,
    /// Required `aud` claim (default `jimini-admin`).
    pub audience: String,
    /// Clock leeway for `exp`/`nbf`, seconds (default 30, capped at 300).
    pub leeway_secs: u64,
}

impl Default for JwtConfig {
    fn default() -> Self {
        JwtConfig {
            secret: None,
            public_key_file: None,
            algorithm: JwtAlgorithm::HS256,
            issuer: "jimini".to_owned(),
            audience: "jimini-admin".to_owned(),
            leeway_secs: 30,
        }
    }
}

impl JwtConfig {
    /// The HS256 secret in effect: `JIMINI_ADMIN_JWT_SECRET` when set and non-empty, else the
    /// configured one (empty counts as unset).
    pub fn effective_secret(&self) -> Option<Secret> {
        self.effective_secret_with(&|k| std::env::var(k).ok())
    }

    pub fn effective_secret_with(&self, env: &dyn Fn(&str) -> Option<String>) -> Option<Secret> {
        env(ENV_JWT_SECRET)
            .filter(|s| !s.is_empty())
            .map(Secret)
            .or_else(|| self.secret.clone().filter(|s| !s.0.is_empty()))
    }
}

/// `admin:` section.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AdminConfig {
    /// Admin listener (default `127.0.0.1:9901`, loopback only; use `0.0.0.0:9901` in containers).
    pub listen: String,
    /// JWT verification.
    pub jwt: JwtConfig,
}

impl Default for AdminConfig {
    fn default() -> Self {
        AdminConfig {
            listen: "127.0.0.1:9901".to_owned(),
            jwt: JwtConfig::default(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_and_masking() {
        let c: AdminConfig = serde_yaml::from_str("{}").unwrap();
        assert_eq!(c, AdminConfig::default());
        assert_eq!(c.listen, "127.0.0.1:9901");
        assert_eq!(c.jwt.algorithm, JwtAlgorithm::HS256);
        assert_eq!(c.jwt.issuer, "jimini");
        assert_eq!(c.jwt.audience, "jimini-admin");
        assert_eq!(c.jwt.leeway_secs, 30);

        let c: AdminConfig = serde_yaml::from_str(
            "jwt: {secret: topsecretvalue-0123456789abcdef, algorithm: HS256}",
        )
        .unwrap();
        assert!(!format!("{c:?}").contains("topsecret"));
        let json = serde_json::to_string(&c).unwrap();
        assert!(
            !json.contains("topsecret") && json.contains("***"),
            "{json}"
        );
        assert_eq!(
            c.jwt.secret.as_ref().map(Secret::expose),
            Some("topsecretvalue-0123456789abcdef")
        );

        assert!(serde_yaml::from_str::<AdminConfig>("listn: x").is_err());
        assert!(serde_yaml::from_str::<AdminConfig>("jwt: {algorithm: none}").is_err());
        assert!(serde_yaml::from_str::<AdminConfig>("jwt: {algorithm: HS512}").is_err());
        let c: AdminConfig =
            serde_yaml::from_str("jwt: {algorithm: ES256, public_key_file: /k.pem}").unwrap();
        assert_eq!(c.jwt.algorithm, JwtAlgorithm::ES256);
    }

    #[test]
    fn env_secret_override() {
        let mut j = JwtConfig::default();
        assert!(j.effective_secret_with(&|_| None).is_none());
        j.secret = Some(Secret::new(""));
        assert!(j.effective_secret_with(&|_| None).is_none());
        j.secret = Some(Secret::new("from-file"));
        assert_eq!(
            j.effective_secret_with(&|_| None).unwrap().expose(),
            "from-file"
        );
        let env = |k: &str| (k == ENV_JWT_SECRET).then(|| "from-env".to_owned());
        assert_eq!(j.effective_secret_with(&env).unwrap().expose(), "from-env");
        let empty_env = |k: &str| (k == ENV_JWT_SECRET).then(String::new);
        assert_eq!(
            j.effective_secret_with(&empty_env).unwrap().expose(),
            "from-file"
        );
    }
}
