//! Admin JWTs: verification (one configured algorithm, `exp`/`nbf`/`iss`/`aud` checked with a
//! small leeway, `alg: none` and algorithm confusion rejected), roles, token issuing for
//! `jimini token`, and the TTL parser ("1h", "30m", "3600s", "2d").

use std::time::Duration;

use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};

use super::config::{AdminConfig, JwtAlgorithm};
use super::AdminError;

/// Minimum HS256 secret length in bytes (RFC 7518 §3.2: key ≥ hash output size).
pub const MIN_SECRET_LEN: usize = 32;
/// Tokens longer than this are rejected before any parsing.
const MAX_TOKEN_LEN: usize = 8 * 1024;
/// Upper bound of `leeway_secs`.
const MAX_LEEWAY_SECS: u64 = 300;
/// Longest TTL `issue_token` accepts.
pub const MAX_TTL: Duration = Duration::from_secs(366 * 24 * 3600);

/// Admin roles; each includes the ones below it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Role {
    Viewer,
    Operator,
    Admin,
}

impl Role {
    pub fn parse(s: &str) -> Option<Role> {
        match s {
            "viewer" => Some(Role::Viewer),
            "operator" => Some(Role::Operator),
            "admin" => Some(Role::Admin),
            _ => None,
        }
    }
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Viewer => "viewer",
            Role::Operator => "operator",
            Role::Admin => "admin",
        }
    }
}

/// `roles` claim: a list, or a single string.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum RolesClaim {
    One(String),
    Many(Vec<String>),
}

#[derive(Debug, Deserialize)]
struct Claims {
    #[serde(default)]
    sub: Option<String>,
    #[serde(default)]
    roles: Option<RolesClaim>,
}

#[derive(Serialize)]
struct IssueClaims<'a> {
    iss: &'a str,
    aud: &'a str,
    sub: &'a str,
    iat: u64,
    nbf: u64,
    exp: u64,
    roles: [&'a str; 1],
    jti: String,
}

/// A verified caller.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Principal {
    /// Highest known role in the token (`None`: authenticated but no usable role → 403).
    pub role: Option<Role>,
    /// The token's `sub`, for the audit trail.
    pub subject: Option<String>,
}

/// Why authentication failed (all map to 401; the reason goes to the audit log, not the client).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AuthFailure {
    /// No verification key configured: the admin API is closed.
    NoKey,
    /// No `Authorization: Bearer` header.
    Missing,
    /// Signature, algorithm, claims or format invalid.
    Invalid,
    /// `exp` in the past.
    Expired,
    /// `nbf` in the future.
    NotYetValid,
}

impl AuthFailure {
    pub fn as_str(self) -> &'static str {
        match self {
            AuthFailure::NoKey => "no_key_configured",
            AuthFailure::Missing => "missing_token",
            AuthFailure::Invalid => "invalid_token",
            AuthFailure::Expired => "expired_token",
            AuthFailure::NotYetValid => "token_not_yet_valid",
        }
    }
}

/// Verifies admin tokens with exactly one key and algorithm.
pub struct Verifier {
    key: Option<(DecodingKey, Validation)>,
}

impl std::fmt::Debug for Verifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Verifier")
            .field("configured", &self.key.is_some())
            .finish()
    }
}

fn algorithm(a: JwtAlgorithm) -> Algorithm {
    match a {
        JwtAlgorithm::HS256 => Algorithm::HS256,
        JwtAlgorithm::RS256 => Algorithm::RS256,
        JwtAlgorithm::ES256 => Algorithm::ES256,
    }
}

impl Verifier {
    /// Build from config. No key → a verifier that rejects everything. A key that is configured
    /// but unusable (unreadable file, bad PEM, short secret, key/algorithm mismatch) is an error.
    pub fn from_config(cfg: &AdminConfig) -> Result<Verifier, AdminError> {
        let j = &cfg.jwt;
        let alg = algorithm(j.algorithm);
        let key = match j.algorithm {
            JwtAlgorithm::HS256 => {
                if j.public_key_file.is_some() {
                    return Err(AdminError::Config(
                        "admin.jwt.public_key_file is set but admin.jwt.algorithm is HS256 \
                         (use RS256 or ES256 with a public key)"
                            .into(),
                    ));
                }
                match j.effective_secret() {
                    None => None,
                    Some(s) if s.expose().len() < MIN_SECRET_LEN => {
                        return Err(AdminError::Config(format!(
                            "admin.jwt.secret: must be at least {MIN_SECRET_LEN} bytes"
                        )))
                    }
                    Some(s) => Some(DecodingKey::from_secret(s.expose().as_bytes())),
                }
            }
            JwtAlgorithm::RS256 | JwtAlgorithm::ES256 => match &j.public_key_file {
                None => None,
                Some(path) => {
                    let pem = std::fs::read(path).map_err(|e| {
                        AdminError::Config(format!(
                            "admin.jwt.public_key_file: {}: {e}",
                            path.display()
                        ))
                    })?;
                    let k = if j.algorithm == JwtAlgorithm::RS256 {
                        DecodingKey::from_rsa_pem(&pem)
                    } else {
                        DecodingKey::from_ec_pem(&pem)
                    };
                    Some(k.map_err(|e| {
                        AdminError::Config(format!(
                            "admin.jwt.public_key_file: {}: not a {:?} public key PEM: {e}",
                            path.display(),
                            j.algorithm
                        ))
                    })?)
                }
            },
        };
        if key.is_none() {
            tracing::warn!("admin JWT key not configured: every /admin/ request will get 401");
        }
        let mut v = Validation::new(alg);
        v.leeway = j.leeway_secs.min(MAX_LEEWAY_SECS);
        v.validate_exp = true;
        v.validate_nbf = true;
        v.set_issuer(&[j.issuer.as_str()]);
        v.set_audience(&[j.audience.as_str()]);
        v.set_required_spec_claims(&["exp", "iss", "aud"]);
        Ok(Verifier {
            key: key.map(|k| (k, v)),
        })
    }

    pub fn is_configured(&self) -> bool {
        self.key.is_some()
    }

    /// Verify a raw `Authorization` header value.
    pub fn verify_header(&self, authorization: Option<&str>) -> Result<Principal, AuthFailure> {
        if self.key.is_none() {
            return Err(AuthFailure::NoKey);
        }
        let h = authorization.ok_or(AuthFailure::Missing)?.trim();
        let (scheme, token) = h.split_once(' ').ok_or(AuthFailure::Missing)?;
        if !scheme.eq_ignore_ascii_case("bearer") {
            return Err(AuthFailure::Missing);
        }
        self.verify(token.trim())
    }

    /// Verify a bare token.
    pub fn verify(&self, token: &str) -> Result<Principal, AuthFailure> {
        let Some((key, validation)) = &self.key else {
            return Err(AuthFailure::NoKey);
        };
        if token.is_empty() || token.len() > MAX_TOKEN_LEN {
            return Err(AuthFailure::Invalid);
        }
        // `alg: none` fails header parsing; any other algorithm fails the allow-list of one.
        let data = jsonwebtoken::decode::<Claims>(token, key, validation).map_err(|e| {
            use jsonwebtoken::errors::ErrorKind;
            match e.kind() {
                ErrorKind::ExpiredSignature => AuthFailure::Expired,
                ErrorKind::ImmatureSignature => AuthFailure::NotYetValid,
                _ => AuthFailure::Invalid,
            }
        })?;
        let roles: Vec<String> = match data.claims.roles {
            None => Vec::new(),
            Some(RolesClaim::One(r)) => vec![r],
            Some(RolesClaim::Many(v)) => v,
        };
        let role = roles.iter().filter_map(|r| Role::parse(r)).max();
        Ok(Principal {
            role,
            subject: data.claims.sub,
        })
    }
}

fn now_secs() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// Sign an HS256 admin token with the configured secret (`JIMINI_ADMIN_JWT_SECRET` wins).
pub fn issue_token(
    cfg: &AdminConfig,
    role: &str,
    ttl: Duration,
    subject: &str,
) -> Result<String, AdminError> {
    if cfg.jwt.algorithm != JwtAlgorithm::HS256 {
        return Err(AdminError::Config(format!(
            "jimini token signs HS256 only; admin.jwt.algorithm is {:?} (sign with your own key)",
            cfg.jwt.algorithm
        )));
    }
    let secret = cfg.jwt.effective_secret().ok_or_else(|| {
        AdminError::Config(
            "no admin.jwt.secret configured (set it or JIMINI_ADMIN_JWT_SECRET)".into(),
        )
    })?;
    if secret.expose().len() < MIN_SECRET_LEN {
        return Err(AdminError::Config(format!(
            "admin.jwt.secret: must be at least {MIN_SECRET_LEN} bytes"
        )));
    }
    let role = Role::parse(role).ok_or_else(|| {
        AdminError::BadRequest(format!(
            "unknown role '{role}' (expected viewer, operator or admin)"
        ))
    })?;
    if ttl.is_zero() || ttl > MAX_TTL {
        return Err(AdminError::BadRequest(
            "ttl must be between 1s and 366d".into(),
        ));
    }
    let now = now_secs();
    let claims = IssueClaims {
        iss: &cfg.jwt.issuer,
        aud: &cfg.jwt.audience,
        sub: subject,
        iat: now,
        nbf: now,
        exp: now + ttl.as_secs().max(1),
        roles: [role.as_str()],
        jti: format!("{:016x}", rand::random::<u64>()),
    };
    jsonwebtoken::encode(
        &Header::new(Algorithm::HS256),
        &claims,
        &EncodingKey::from_secret(secret.expose().as_bytes()),
    )
    .map_err(|e| AdminError::Internal(format!("signing token: {e}")))
}

/// Parse a TTL: `<n>s|m|h|d`, or bare seconds. Zero and overflow are errors.
pub fn parse_ttl(s: &str) -> Result<Duration, AdminError> {
    let s = s.trim();
    let bad =
        || AdminError::BadRequest(format!("invalid ttl '{s}' (examples: 3600s, 30m, 1h, 2d)"));
    let (num, mult) = match s.char_indices().last() {
        Some((i, 's')) => (&s[..i], 1u64),
        Some((i, 'm')) => (&s[..i], 60),
        Some((i, 'h')) => (&s[..i], 3600),
        Some((i, 'd')) => (&s[..i], 86_400),
        Some((_, c)) if c.is_ascii_digit() => (s, 1),
        _ => return Err(bad()),
    };
    if num.is_empty() || !num.bytes().all(|b| b.is_ascii_digit()) {
        return Err(bad());
    }
    let n: u64 = num.parse().map_err(|_| bad())?;
    let secs = n.checked_mul(mult).ok_or_else(bad)?;
    if secs == 0 {
        return Err(bad());
    }
    Ok(Duration::from_secs(secs))
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::admin::config::Secret;
    use base64::Engine;

    pub const SECRET: &str = "test-secret-0123456789-abcdefghijklmnop";

    /// Test-only ES256 key pair (generated for these tests; protects nothing).
    pub const EC_PRIVATE_PEM: &str = "-----BEGIN PRIVATE KEY-----
MIGHAgEAMBMGByqGSM49AgEGCCqGSM49AwEHBG0wawIBAQQg3ExYGDVd1PEn6YLz
hybGOFIk/Dcog2wJLTRCXHhROpyhRANCAAR3tonCxVIXDitU2ayf1+Bpno5sajlv
mb8Gkyvk7/xC0+MTcvnRhuLDpiEkG6lC8FeqjY9J0Xl0S6moCP9tDPhI
-----END PRIVATE KEY-----
";
    pub const EC_PUBLIC_PEM: &str = "-----BEGIN PUBLIC KEY-----
MFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAEd7aJwsVSFw4rVNmsn9fgaZ6ObGo5
b5m/BpMr5O/8QtPjE3L50Ybiw6YhJBupQvBXqo2PSdF5dEupqAj/bQz4SA==
-----END PUBLIC KEY-----
";

    pub fn hs_config() -> AdminConfig {
        let mut c = AdminConfig::default();
        c.jwt.secret = Some(Secret::new(SECRET));
        c
    }

    /// Token with arbitrary claims, HS256 with `key`.
    pub fn hs_token(key: &str, claims: &serde_json::Value) -> String {
        jsonwebtoken::encode(
            &Header::new(Algorithm::HS256),
            claims,
            &EncodingKey::from_secret(key.as_bytes()),
        )
        .unwrap()
    }

    pub fn claims(role: &str, exp_offset: i64, nbf_offset: i64) -> serde_json::Value {
        let now = now_secs() as i64;
        serde_json::json!({
            "iss": "jimini", "aud": "jimini-admin", "sub": "alice",
            "exp": now + exp_offset, "nbf": now + nbf_offset, "iat": now, "roles": [role]
        })
    }

    /// Hand-crafted unsigned token (`alg: none`).
    pub fn none_token(claims: &serde_json::Value) -> String {
        let e = base64::engine::general_purpose::URL_SAFE_NO_PAD;
        format!(
            "{}.{}.",
            e.encode(br#"{"alg":"none","typ":"JWT"}"#),
            e.encode(claims.to_string())
        )
    }

    #[test]
    fn roles_order() {
        assert!(Role::Admin > Role::Operator && Role::Operator > Role::Viewer);
        for r in ["viewer", "operator", "admin"] {
            assert_eq!(Role::parse(r).unwrap().as_str(), r);
        }
        assert_eq!(Role::parse("root"), None);
        assert_eq!(Role::parse("Admin"), None);
    }

    #[test]
    fn verify_matrix() {
        let v = Verifier::from_config(&hs_config()).unwrap();
        let ok = claims("operator", 600, -10);
        let p = v.verify(&hs_token(SECRET, &ok)).unwrap();
        assert_eq!(p.role, Some(Role::Operator));
        assert_eq!(p.subject.as_deref(), Some("alice"));

        let mut multi = ok.clone();
        multi["roles"] = serde_json::json!(["viewer", "unknown", "admin"]);
        assert_eq!(
            v.verify(&hs_token(SECRET, &multi)).unwrap().role,
            Some(Role::Admin)
        );
        let mut single = ok.clone();
        single["roles"] = serde_json::json!("viewer");
        assert_eq!(
            v.verify(&hs_token(SECRET, &single)).unwrap().role,
            Some(Role::Viewer)
        );
        let mut none = ok.clone();
        none.as_object_mut().unwrap().remove("roles");
        assert_eq!(v.verify(&hs_token(SECRET, &none)).unwrap().role, None);

        let cases: Vec<(&str, String, AuthFailure)> = vec![
            (
                "bad signature",
                hs_token("another-secret-0123456789-abcdefghijk", &ok),
                AuthFailure::Invalid,
            ),
            (
                "expired",
                hs_token(SECRET, &claims("admin", -3600, -7200)),
                AuthFailure::Expired,
            ),
            (
                "nbf future",
                hs_token(SECRET, &claims("admin", 7200, 3600)),
                AuthFailure::NotYetValid,
            ),
            ("alg none", none_token(&ok), AuthFailure::Invalid),
            ("garbage", "not.a.jwt".into(), AuthFailure::Invalid),
            ("empty", String::new(), AuthFailure::Invalid),
            ("huge", "a".repeat(MAX_TOKEN_LEN + 1), AuthFailure::Invalid),
        ];
        for (name, tok, want) in cases {
            assert_eq!(v.verify(&tok), Err(want), "{name}");
        }
        for (field, val) in [("aud", "other"), ("iss", "evil")] {
            let mut c = ok.clone();
            c[field] = serde_json::json!(val);
            assert_eq!(
                v.verify(&hs_token(SECRET, &c)),
                Err(AuthFailure::Invalid),
                "{field}"
            );
        }
        for field in ["exp", "aud", "iss"] {
            let mut c = ok.clone();
            c.as_object_mut().unwrap().remove(field);
            assert_eq!(
                v.verify(&hs_token(SECRET, &c)),
                Err(AuthFailure::Invalid),
                "missing {field}"
            );
        }
        // within leeway
        assert!(v
            .verify(&hs_token(SECRET, &claims("viewer", -5, -10)))
            .is_ok());
        assert!(v
            .verify(&hs_token(SECRET, &claims("viewer", 600, 5)))
            .is_ok());
        // other HMAC algorithms are refused even with the right secret
        let hs512 = jsonwebtoken::encode(
            &Header::new(Algorithm::HS512),
            &ok,
            &EncodingKey::from_secret(SECRET.as_bytes()),
        )
        .unwrap();
        assert_eq!(v.verify(&hs512), Err(AuthFailure::Invalid));
        // headers
        let tok = hs_token(SECRET, &ok);
        assert!(v.verify_header(Some(&format!("Bearer {tok}"))).is_ok());
        assert!(v.verify_header(Some(&format!("bearer  {tok}"))).is_ok());
        assert_eq!(v.verify_header(None), Err(AuthFailure::Missing));
        assert_eq!(
            v.verify_header(Some(&format!("Basic {tok}"))),
            Err(AuthFailure::Missing)
        );
        assert_eq!(v.verify_header(Some(&tok)), Err(AuthFailure::Missing));
    }

    #[test]
    fn no_key_rejects_everything() {
        let v = Verifier::from_config(&AdminConfig::default()).unwrap();
        assert!(!v.is_configured());
        let tok = hs_token(SECRET, &claims("admin", 600, 0));
        assert_eq!(v.verify(&tok), Err(AuthFailure::NoKey));
        assert_eq!(
            v.verify_header(Some(&format!("Bearer {tok}"))),
            Err(AuthFailure::NoKey)
        );
        assert_eq!(
            v.verify(&none_token(&claims("admin", 600, 0))),
            Err(AuthFailure::NoKey)
        );
    }

    #[test]
    fn config_errors() {
        let mut c = hs_config();
        c.jwt.secret = Some(Secret::new("short"));
        assert!(matches!(
            Verifier::from_config(&c),
            Err(AdminError::Config(_))
        ));
        let mut c = hs_config();
        c.jwt.public_key_file = Some("/nonexistent.pem".into());
        assert!(matches!(
            Verifier::from_config(&c),
            Err(AdminError::Config(_))
        ));
        let mut c = AdminConfig::default();
        c.jwt.algorithm = JwtAlgorithm::ES256;
        c.jwt.public_key_file = Some("/nonexistent/key.pem".into());
        assert!(matches!(
            Verifier::from_config(&c),
            Err(AdminError::Config(_))
        ));
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("k.pem");
        std::fs::write(&p, "not a pem").unwrap();
        c.jwt.public_key_file = Some(p);
        assert!(matches!(
            Verifier::from_config(&c),
            Err(AdminError::Config(_))
        ));
    }

    #[test]
    fn es256_public_key_and_algorithm_confusion() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("pub.pem");
        std::fs::write(&p, EC_PUBLIC_PEM).unwrap();
        let mut c = AdminConfig::default();
        c.jwt.algorithm = JwtAlgorithm::ES256;
        c.jwt.public_key_file = Some(p);
        let v = Verifier::from_config(&c).unwrap();
        let ok = claims("admin", 600, 0);
        let es = jsonwebtoken::encode(
            &Header::new(Algorithm::ES256),
            &ok,
            &EncodingKey::from_ec_pem(EC_PRIVATE_PEM.as_bytes()).unwrap(),
        )
        .unwrap();
        assert_eq!(v.verify(&es).unwrap().role, Some(Role::Admin));
        // HS256 signed with the public key as the HMAC secret (classic confusion attack)
        assert_eq!(
            v.verify(&hs_token(EC_PUBLIC_PEM, &ok)),
            Err(AuthFailure::Invalid)
        );
        assert_eq!(v.verify(&none_token(&ok)), Err(AuthFailure::Invalid));
        // and an HS256 verifier refuses the ES256 token
        let hv = Verifier::from_config(&hs_config()).unwrap();
        assert_eq!(hv.verify(&es), Err(AuthFailure::Invalid));
    }

    #[test]
    fn issue_and_verify_roundtrip() {
        let c = hs_config();
        let v = Verifier::from_config(&c).unwrap();
        for role in ["viewer", "operator", "admin"] {
            let t = issue_token(&c, role, Duration::from_secs(3600), "cli").unwrap();
            let p = v.verify(&t).unwrap();
            assert_eq!(p.role, Role::parse(role));
            assert_eq!(p.subject.as_deref(), Some("cli"));
        }
        assert!(matches!(
            issue_token(&c, "root", Duration::from_secs(60), "x"),
            Err(AdminError::BadRequest(_))
        ));
        assert!(issue_token(&c, "admin", Duration::ZERO, "x").is_err());
        assert!(matches!(
            issue_token(
                &AdminConfig::default(),
                "admin",
                Duration::from_secs(60),
                "x"
            ),
            Err(AdminError::Config(_))
        ));
        let mut es = hs_config();
        es.jwt.algorithm = JwtAlgorithm::ES256;
        assert!(issue_token(&es, "admin", Duration::from_secs(60), "x").is_err());
        // a token for another audience does not verify
        let mut other = hs_config();
        other.jwt.audience = "elsewhere".into();
        let t = issue_token(&other, "admin", Duration::from_secs(60), "x").unwrap();
        assert_eq!(v.verify(&t), Err(AuthFailure::Invalid));
    }

    proptest::proptest! {
        #[test]
        fn ttl_roundtrip(n in 1u64..10_000_000, unit in 0usize..5) {
            let (suffix, mult) = [("s", 1), ("m", 60), ("h", 3600), ("d", 86_400), ("", 1)][unit];
            let d = parse_ttl(&format!("{n}{suffix}")).unwrap();
            proptest::prop_assert_eq!(d, Duration::from_secs(n * mult));
        }

        #[test]
        fn verify_never_panics_on_garbage(s in ".{0,300}") {
            let v = Verifier::from_config(&hs_config()).unwrap();
            proptest::prop_assert!(v.verify(&s).is_err());
        }
    }

    #[test]
    fn ttl_parser() {
        let ok = [
            ("1h", 3600),
            ("30m", 1800),
            ("3600s", 3600),
            ("2d", 172_800),
            ("90", 90),
            (" 15m ", 900),
        ];
        for (s, secs) in ok {
            assert_eq!(parse_ttl(s).unwrap(), Duration::from_secs(secs), "{s}");
        }
        for s in [
            "",
            "h",
            "0h",
            "0",
            "-1h",
            "1.5h",
            "1w",
            "10 m",
            "99999999999999999999d",
            "1hh",
        ] {
            assert!(parse_ttl(s).is_err(), "{s}");
        }
    }
}
