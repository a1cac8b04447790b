//! Where a request goes on the wire: parsed `base_url` (scheme, host, port, path prefix, Host header,
//! SNI), the upstream path for each dialect (OpenAI-like with `/v1` de-duplication, Azure deployments,
//! Anthropic) and the credential header to send. No I/O except the explicit load-time DNS helper.

use std::borrow::Cow;
use std::net::{IpAddr, SocketAddr, ToSocketAddrs};

use serde::Serialize;

use super::config::{AuthMode, UpstreamKind};
use super::UpstreamRuntime;

/// Client headers that can carry credentials. With `auth.mode` `inject` or `none` the glue removes all
/// of them before forwarding (see [`strips_client_auth`]).
pub const CLIENT_AUTH_HEADERS: [&str; 3] = ["authorization", "api-key", "x-api-key"];

/// A parsed and validated `base_url`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct UpstreamTarget {
    /// `https` upstream (TLS to the peer).
    pub tls: bool,
    /// Lower-cased host name or IP literal (IPv6 without brackets).
    pub host: String,
    pub port: u16,
    /// Path prefix without trailing slash (`""` or `/v1`, `/openai/v1`, …).
    pub path_prefix: String,
    /// Value for the `Host` header: host, plus `:port` when the port is not the scheme default.
    pub host_header: String,
    /// TLS server name (the host, brackets stripped for IPv6).
    pub sni: String,
}

impl UpstreamTarget {
    /// Parse `http(s)://host[:port][/prefix]`. Rejects credentials, query, fragment, empty hosts and
    /// anything but http/https. The error is a message for a `ConfigError`.
    pub fn parse(base_url: &str) -> Result<UpstreamTarget, String> {
        let url = base_url.trim();
        let (tls, rest) = if let Some(r) = strip_prefix_ci(url, "https://") {
            (true, r)
        } else if let Some(r) = strip_prefix_ci(url, "http://") {
            (false, r)
        } else {
            return Err("scheme must be http:// or https://".into());
        };
        if rest.contains(['?', '#']) {
            return Err("must not contain a query or fragment".into());
        }
        let (authority, path) = match rest.find('/') {
            Some(i) => (&rest[..i], &rest[i..]),
            None => (rest, ""),
        };
        if authority.contains('@') {
            return Err("must not contain credentials (use auth.api_key_env)".into());
        }
        let default_port = if tls { 443 } else { 80 };
        let (host, port) = if let Some(after) = authority.strip_prefix('[') {
            let end = after.find(']').ok_or("unterminated IPv6 literal")?;
            let host = &after[..end];
            host.parse::<std::net::Ipv6Addr>()
                .map_err(|_| format!("invalid IPv6 address '{host}'"))?;
            let port = match &after[end + 1..] {
                "" => default_port,
                p => parse_port(p.strip_prefix(':').ok_or("garbage after IPv6 literal")?)?,
            };
            (host.to_ascii_lowercase(), port)
        } else {
            let (host, port) = match authority.rsplit_once(':') {
                Some((h, p)) => (h, parse_port(p)?),
                None => (authority, default_port),
            };
            if host.is_empty() {
                return Err("missing host".into());
            }
            if !host
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'-' || b == b'_')
            {
                return Err(format!("invalid host '{host}'"));
            }
            (host.to_ascii_lowercase(), port)
        };
        if path.contains(|c: char| c.is_whitespace() || c.is_control()) {
            return Err("path must not contain whitespace".into());
        }
        let path_prefix = path.trim_end_matches('/').to_string();
        let bracketed = if host.contains(':') {
            format!("[{host}]")
        } else {
            host.clone()
        };
        let host_header = if port == default_port {
            bracketed
        } else {
            format!("{bracketed}:{port}")
        };
        Ok(UpstreamTarget {
            tls,
            sni: host.clone(),
            host,
            port,
            path_prefix,
            host_header,
        })
    }

    /// `host:port` (IPv6 bracketed), e.g. for a peer address string.
    pub fn authority(&self) -> String {
        if self.host.contains(':') {
            format!("[{}]:{}", self.host, self.port)
        } else {
            format!("{}:{}", self.host, self.port)
        }
    }

    /// True when the host is an IP literal (no DNS needed; SNI is not meaningful).
    pub fn is_ip(&self) -> bool {
        self.host.parse::<IpAddr>().is_ok()
    }

    /// Resolve the host with the system resolver (blocking `ToSocketAddrs`). Call at load/reload time,
    /// never on the request path; the glue then connects to these addresses only, so Jimini never opens
    /// a connection anywhere not configured. DNS changes are picked up on the next config reload.
    pub fn resolve(&self) -> std::io::Result<Vec<SocketAddr>> {
        let addrs: Vec<SocketAddr> = (self.host.as_str(), self.port).to_socket_addrs()?.collect();
        if addrs.is_empty() {
            return Err(std::io::Error::new(
                std::io::ErrorKind::NotFound,
                format!("no addresses for {}", self.host),
            ));
        }
        Ok(addrs)
    }
}

fn strip_prefix_ci<'a>(s: &'a str, prefix: &str) -> Option<&'a str> {
    (s.len() >= prefix.len()
        && s.as_bytes()[..prefix.len()].eq_ignore_ascii_case(prefix.as_bytes()))
    .then(|| &s[prefix.len()..])
}

fn parse_port(p: &str) -> Result<u16, String> {
    match p.parse::<u16>() {
        Ok(0) | Err(_) => Err(format!("invalid port '{p}'")),
        Ok(v) => Ok(v),
    }
}

/// Path (and query) to request from the upstream.
///
/// * openai / openai_compatible / anthropic: `prefix + client path`, except that when the prefix ends
///   in `/v1` and the client path starts with `/v1`, the `/v1` is not doubled:
///   `https://api.openai.com` + `/v1/chat/completions` → `/v1/chat/completions`;
///   `http://host:8000/v1` + `/v1/chat/completions` → `/v1/chat/completions`;
///   `http://host:8000/v1` + `/chat/completions` → `/v1/chat/completions`;
///   `http://gw/openai` + `/v1/models` → `/openai/v1/models`.
/// * azure: the client's `/v1` is stripped and the rest goes under
///   `/openai/deployments/{deployment}` for deployment-scoped endpoints (chat/completions, completions,
///   embeddings, audio, images), else under `/openai`; `api-version` is set from config (a client value
///   is replaced) and other query parameters are kept. The deployment is looked up from `model` (after
///   rewrite) in `azure.deployments`, defaulting to the model name, and percent-encoded. A client that
///   already speaks Azure (`/openai/...`) is passed through with the configured `api-version`.
pub fn upstream_request_path(
    up: &UpstreamRuntime,
    client_path_and_query: &str,
    model: Option<&str>,
) -> String {
    build_path(
        up.config.kind,
        &up.target.path_prefix,
        up.config.azure.as_ref(),
        client_path_and_query,
        model,
    )
}

pub(crate) fn build_path(
    kind: UpstreamKind,
    prefix: &str,
    azure: Option<&super::config::AzureConfig>,
    client_path_and_query: &str,
    model: Option<&str>,
) -> String {
    let client: Cow<'_, str> = if client_path_and_query.starts_with('/') {
        Cow::Borrowed(client_path_and_query)
    } else {
        Cow::Owned(format!("/{client_path_and_query}"))
    };
    let (path, query) = match client.split_once('?') {
        Some((p, q)) => (p, Some(q)),
        None => (client.as_ref(), None),
    };
    match (kind, azure) {
        (UpstreamKind::Azure, Some(az)) => {
            let mut out = String::with_capacity(prefix.len() + path.len() + 64);
            out.push_str(prefix);
            if path.starts_with("/openai/") || path == "/openai" {
                out.push_str(path);
            } else {
                let rest = strip_v1(path);
                out.push_str("/openai");
                if let Some(m) = model.filter(|_| is_deployment_scoped(rest)) {
                    let dep = az.deployments.get(m).map_or(m, String::as_str);
                    out.push_str("/deployments/");
                    percent_encode_segment(dep, &mut out);
                }
                out.push_str(rest);
            }
            out.push_str("?api-version=");
            percent_encode_segment(&az.api_version, &mut out);
            for param in query.into_iter().flat_map(|q| q.split('&')) {
                let name = param.split('=').next().unwrap_or("");
                if !param.is_empty() && name != "api-version" {
                    out.push('&');
                    out.push_str(param);
                }
            }
            out
        }
        _ => {
            let joined_path =
                if prefix.ends_with("/v1") && (path == "/v1" || path.starts_with("/v1/")) {
                    let mut s = String::with_capacity(prefix.len() + path.len());
                    s.push_str(&prefix[..prefix.len() - 3]);
                    s.push_str(path);
                    s
                } else {
                    let mut s = String::with_capacity(prefix.len() + path.len());
                    s.push_str(prefix);
                    s.push_str(path);
                    s
                };
            match query {
                Some(q) => format!("{joined_path}?{q}"),
                None => joined_path,
            }
        }
    }
}

fn strip_v1(path: &str) -> &str {
    match path.strip_prefix("/v1") {
        Some("") => "/",
        Some(rest) if rest.starts_with('/') => rest,
        _ => path,
    }
}

/// Azure endpoints that live under `/openai/deployments/{deployment}/…`.
fn is_deployment_scoped(rest: &str) -> bool {
    const SCOPED: [&str; 5] = [
        "/chat/completions",
        "/completions",
        "/embeddings",
        "/audio/",
        "/images/",
    ];
    SCOPED.iter().any(|p| rest.starts_with(p))
}

/// Percent-encode everything but RFC 3986 unreserved characters (so a model name can never add path
/// segments, `..`, or a query).
fn percent_encode_segment(s: &str, out: &mut String) {
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(b as char);
        } else {
            out.push('%');
            out.push(char::from(b"0123456789ABCDEF"[usize::from(b >> 4)]));
            out.push(char::from(b"0123456789ABCDEF"[usize::from(b & 15)]));
        }
    }
}

/// Whether the glue must remove every [`CLIENT_AUTH_HEADERS`] header before forwarding (true for
/// `inject` and `none`; with `passthrough` the client's credentials go through untouched).
pub fn strips_client_auth(up: &UpstreamRuntime) -> bool {
    up.auth.mode != AuthMode::Passthrough
}

/// The credential header for the upstream request, as `(lower-case name, value)`:
/// * `inject`: the configured header with the real key (`Bearer <key>` for `authorization`);
/// * `passthrough`: `("authorization", caller value)` when the client sent one (other client
///   credential headers are simply left in place);
/// * `none`: nothing.
///
/// The injected value is precomputed at load; this never allocates.
pub fn auth_header<'a>(
    up: &'a UpstreamRuntime,
    caller_authorization: Option<&'a str>,
) -> Option<(&'a str, &'a str)> {
    match up.auth.mode {
        AuthMode::Inject => up
            .auth
            .value
            .as_ref()
            .map(|v| (up.auth.header.as_str(), v.expose())),
        AuthMode::Passthrough => caller_authorization.map(|v| ("authorization", v)),
        AuthMode::None => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::upstream::config::AzureConfig;

    #[test]
    fn parse_base_urls() {
        let t = UpstreamTarget::parse("https://api.openai.com").unwrap();
        assert_eq!(
            (t.tls, t.host.as_str(), t.port, t.path_prefix.as_str()),
            (true, "api.openai.com", 443, "")
        );
        assert_eq!(t.host_header, "api.openai.com");
        assert_eq!(t.sni, "api.openai.com");
        assert_eq!(t.authority(), "api.openai.com:443");

        let t = UpstreamTarget::parse("HTTP://VLLM.internal:8000/v1/").unwrap();
        assert_eq!(
            (t.tls, t.host.as_str(), t.port, t.path_prefix.as_str()),
            (false, "vllm.internal", 8000, "/v1")
        );
        assert_eq!(t.host_header, "vllm.internal:8000");

        let t = UpstreamTarget::parse("http://[::1]:11434").unwrap();
        assert_eq!((t.host.as_str(), t.port), ("::1", 11434));
        assert_eq!(t.host_header, "[::1]:11434");
        assert_eq!(t.authority(), "[::1]:11434");
        assert!(t.is_ip());

        let t = UpstreamTarget::parse("https://x.example:443/openai").unwrap();
        assert_eq!(t.host_header, "x.example");
        assert_eq!(t.path_prefix, "/openai");

        for bad in [
            "ftp://x",
            "api.openai.com",
            "https://",
            "https://:443",
            "https://user:pw@api.openai.com",
            "https://x:0",
            "https://x:99999",
            "https://x/v1?a=b",
            "https://x/#f",
            "https://[::1",
            "https://[zz]:1",
            "https://a b/",
            "https://x/a b",
        ] {
            assert!(UpstreamTarget::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn resolve_localhost() {
        let t = UpstreamTarget::parse("http://127.0.0.1:18080").unwrap();
        assert_eq!(
            t.resolve().unwrap(),
            vec!["127.0.0.1:18080".parse().unwrap()]
        );
    }

    fn oa(prefix: &str, client: &str) -> String {
        build_path(UpstreamKind::Openai, prefix, None, client, Some("gpt-4o"))
    }

    #[test]
    fn openai_like_paths() {
        let cases = [
            ("", "/v1/chat/completions", "/v1/chat/completions"),
            ("/v1", "/v1/chat/completions", "/v1/chat/completions"),
            ("/v1", "/chat/completions", "/v1/chat/completions"),
            ("/v1", "/v1", "/v1"),
            ("/v1", "/v1beta/x", "/v1/v1beta/x"),
            ("/openai", "/v1/models", "/openai/v1/models"),
            (
                "/openai/v1",
                "/v1/embeddings?x=1",
                "/openai/v1/embeddings?x=1",
            ),
            (
                "",
                "/v1/files?purpose=batch&limit=2",
                "/v1/files?purpose=batch&limit=2",
            ),
            ("/api", "v1/models", "/api/v1/models"),
        ];
        for (prefix, client, want) in cases {
            assert_eq!(oa(prefix, client), want, "{prefix} + {client}");
        }
        assert_eq!(
            build_path(
                UpstreamKind::Anthropic,
                "",
                None,
                "/v1/messages",
                Some("claude")
            ),
            "/v1/messages"
        );
        assert_eq!(
            build_path(
                UpstreamKind::OpenaiCompatible,
                "/v1",
                None,
                "/v1/models",
                None
            ),
            "/v1/models"
        );
    }

    #[test]
    fn azure_paths() {
        let az = AzureConfig {
            api_version: "2024-10-21".into(),
            deployments: [("gpt-4o".to_string(), "prod-4o".to_string())]
                .into_iter()
                .collect(),
        };
        let p = |client: &str, model: Option<&str>| {
            build_path(UpstreamKind::Azure, "", Some(&az), client, model)
        };
        assert_eq!(
            p("/v1/chat/completions", Some("gpt-4o")),
            "/openai/deployments/prod-4o/chat/completions?api-version=2024-10-21"
        );
        assert_eq!(
            p(
                "/v1/embeddings?api-version=old&foo=bar",
                Some("text-embedding-3-small")
            ),
            "/openai/deployments/text-embedding-3-small/embeddings?api-version=2024-10-21&foo=bar"
        );
        assert_eq!(
            p("/v1/models", None),
            "/openai/models?api-version=2024-10-21"
        );
        assert_eq!(
            p("/v1/models", Some("gpt-4o")),
            "/openai/models?api-version=2024-10-21"
        );
        assert_eq!(
            p("/chat/completions", Some("../../admin?x")),
            "/openai/deployments/..%2F..%2Fadmin%3Fx/chat/completions?api-version=2024-10-21"
        );
        assert_eq!(
            p(
                "/openai/deployments/d1/chat/completions?api-version=2023-05-15",
                Some("gpt-4o")
            ),
            "/openai/deployments/d1/chat/completions?api-version=2024-10-21"
        );
        assert_eq!(
            build_path(
                UpstreamKind::Azure,
                "/gw",
                Some(&az),
                "/v1/completions",
                Some("m")
            ),
            "/gw/openai/deployments/m/completions?api-version=2024-10-21"
        );
    }
}
