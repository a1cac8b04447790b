//! The `telemetry:` config section (log format/level, OTLP exporter settings) and its resolution
//! against the standard `OTEL_*` environment variables. Resolution takes an env lookup function so
//! it is testable without touching the process environment.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::TelemetryError;

/// `telemetry:` section.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TelemetryConfig {
    /// Log line format: `json` (default, one object per line) or `pretty` (for a terminal).
    pub log_format: LogFormat,
    /// Log filter directive (EnvFilter syntax), default `info`. `RUST_LOG`, when set, wins.
    pub log_level: String,
    /// OpenTelemetry trace export.
    pub otlp: OtlpConfig,
    /// Prometheus metrics (default on). Off: the request path records nothing and `/metrics`
    /// answers 404 (for deployments whose metrics come from elsewhere, and to measure their cost).
    pub metrics: bool,
}

impl Default for TelemetryConfig {
    fn default() -> Self {
        TelemetryConfig {
            log_format: LogFormat::Json,
            log_level: "info".to_owned(),
            otlp: OtlpConfig::default(),
            metrics: true,
        }
    }
}

/// Log line format.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// One JSON object per line (default).
    #[default]
    Json,
    /// Human-readable multi-line output for a terminal.
    Pretty,
}

/// OTLP wire protocol.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum OtlpProtocol {
    /// OTLP/gRPC (default port 4317).
    #[serde(rename = "grpc")]
    Grpc,
    /// OTLP/HTTP with protobuf bodies (default port 4318).
    #[serde(rename = "http_protobuf", alias = "http/protobuf")]
    HttpProtobuf,
}

/// `telemetry.otlp:` section. Unset optional fields fall back to the standard `OTEL_*` environment
/// variables, then to the documented defaults.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct OtlpConfig {
    /// Export traces at all (default false). `OTEL_SDK_DISABLED=true` forces it off.
    pub enabled: bool,
    /// Collector endpoint. Default: `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT` (used as-is), else
    /// `OTEL_EXPORTER_OTLP_ENDPOINT`, else `http://127.0.0.1:4317` (grpc) / `http://127.0.0.1:4318`
    /// (http). For http, `/v1/traces` is appended when the endpoint has no path.
    pub endpoint: Option<String>,
    /// `grpc` or `http_protobuf`. Default: `OTEL_EXPORTER_OTLP_TRACES_PROTOCOL` /
    /// `OTEL_EXPORTER_OTLP_PROTOCOL` (`grpc` | `http/protobuf`), else `grpc`.
    pub protocol: Option<OtlpProtocol>,
    /// Fraction of new traces to sample, 0.0..=1.0 (parent-based: an incoming sampled flag wins).
    /// Default: `OTEL_TRACES_SAMPLER` / `OTEL_TRACES_SAMPLER_ARG`, else 1.0.
    pub sample_ratio: Option<f64>,
    /// `service.name` resource attribute. Default: `OTEL_SERVICE_NAME`, else `jimini`.
    pub service_name: Option<String>,
    /// Per-export timeout in milliseconds (default 3000).
    pub export_timeout_ms: u64,
    /// Spans buffered for export; beyond this, new spans are dropped, never waited for (default 2048).
    pub max_queue: usize,
}

impl Default for OtlpConfig {
    fn default() -> Self {
        OtlpConfig {
            enabled: false,
            endpoint: None,
            protocol: None,
            sample_ratio: None,
            service_name: None,
            export_timeout_ms: 3000,
            max_queue: 2048,
        }
    }
}

/// Sampling policy after resolution.
#[derive(Clone, Debug, PartialEq)]
pub enum SamplerSpec {
    AlwaysOn,
    AlwaysOff,
    /// Trace-id ratio for root spans.
    Ratio(f64),
    /// Follow the parent's sampled flag when there is a parent; otherwise use the inner policy.
    ParentBased(Box<SamplerSpec>),
}

/// Fully resolved exporter settings.
#[derive(Clone, Debug, PartialEq)]
pub struct ResolvedOtlp {
    pub endpoint: String,
    pub protocol: OtlpProtocol,
    pub sampler: SamplerSpec,
    pub service_name: String,
    pub export_timeout: Duration,
    pub max_queue: usize,
    /// Extra request headers for OTLP/HTTP exports (collector auth), from
    /// `OTEL_EXPORTER_OTLP_TRACES_HEADERS`, else `OTEL_EXPORTER_OTLP_HEADERS`. (The gRPC exporter
    /// reads the same variables itself.)
    pub headers: OtlpHeaders,
}

/// `key=value,key2=value2` export headers (values percent-decoded, as the OTLP spec says).
/// Values are credentials: `Debug` prints the header names only.
#[derive(Clone, Default, PartialEq)]
pub struct OtlpHeaders(Vec<(http::HeaderName, http::HeaderValue)>);

impl OtlpHeaders {
    pub fn pairs(&self) -> &[(http::HeaderName, http::HeaderValue)] {
        &self.0
    }

    /// Parses the value of `var`; a malformed entry is an error that names the header, never
    /// its value.
    fn parse(var: &str, list: &str) -> Result<OtlpHeaders, TelemetryError> {
        let mut out = Vec::new();
        for entry in list.split(',').map(str::trim).filter(|e| !e.is_empty()) {
            let bad = |what: &str| TelemetryError::Config(format!("{var}: {what}"));
            let Some((name, value)) = entry.split_once('=') else {
                return Err(bad("every entry must be key=value"));
            };
            let name = name.trim();
            let header = http::HeaderName::from_bytes(name.as_bytes())
                .map_err(|_| bad(&format!("'{name}' is not a valid header name")))?;
            let decoded = percent_decode(value.trim())
                .ok_or_else(|| bad(&format!("the value of '{name}' has a bad %-escape")))?;
            let value = http::HeaderValue::from_str(&decoded).map_err(|_| {
                bad(&format!(
                    "the value of '{name}' is not a valid header value"
                ))
            })?;
            out.push((header, value));
        }
        Ok(OtlpHeaders(out))
    }
}

impl std::fmt::Debug for OtlpHeaders {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list()
            .entries(self.0.iter().map(|(n, _)| format!("{n}: <masked>")))
            .finish()
    }
}

/// `%XX` escapes to bytes; `None` on a malformed escape or a result that is not UTF-8.
fn percent_decode(s: &str) -> Option<String> {
    let (bytes, all_valid) = crate::percent::decode(s);
    all_valid.then(|| String::from_utf8(bytes).ok()).flatten()
}

fn non_empty(v: Option<String>) -> Option<String> {
    v.map(|s| s.trim().to_owned()).filter(|s| !s.is_empty())
}

fn parse_protocol(var: &str, v: &str) -> Result<OtlpProtocol, TelemetryError> {
    match v.trim() {
        "grpc" => Ok(OtlpProtocol::Grpc),
        "http/protobuf" | "http_protobuf" => Ok(OtlpProtocol::HttpProtobuf),
        other => Err(TelemetryError::Config(format!(
            "{var}: unsupported OTLP protocol '{other}' (supported: grpc, http/protobuf)"
        ))),
    }
}

/// `http://host:4318` → `http://host:4318/v1/traces`; an explicit path is kept.
fn with_traces_path(endpoint: &str) -> String {
    let after_scheme = endpoint.find("://").map(|i| i + 3).unwrap_or(0);
    let has_path = endpoint[after_scheme..]
        .find('/')
        .map(|i| endpoint.len() > after_scheme + i + 1)
        .unwrap_or(false);
    if has_path {
        endpoint.to_owned()
    } else {
        format!("{}/v1/traces", endpoint.trim_end_matches('/'))
    }
}

fn check_ratio(what: &str, r: f64) -> Result<f64, TelemetryError> {
    if (0.0..=1.0).contains(&r) {
        Ok(r)
    } else {
        Err(TelemetryError::Config(format!(
            "{what}: sample ratio must be within 0.0..=1.0, got {r}"
        )))
    }
}

/// Sampler from `OTEL_TRACES_SAMPLER(_ARG)`. Unknown values fall back to the default, as the
/// OpenTelemetry spec asks of SDKs, with a warning.
fn sampler_from_env(env: &dyn Fn(&str) -> Option<String>) -> SamplerSpec {
    let default = SamplerSpec::ParentBased(Box::new(SamplerSpec::AlwaysOn));
    let Some(name) = non_empty(env("OTEL_TRACES_SAMPLER")) else {
        return default;
    };
    let ratio = || {
        let arg = non_empty(env("OTEL_TRACES_SAMPLER_ARG"));
        match arg.as_deref().map(str::parse::<f64>) {
            None => 1.0,
            Some(Ok(r)) if (0.0..=1.0).contains(&r) => r,
            Some(_) => {
                tracing::warn!("OTEL_TRACES_SAMPLER_ARG is not a ratio within 0..=1; using 1.0");
                1.0
            }
        }
    };
    match name.as_str() {
        "always_on" => SamplerSpec::AlwaysOn,
        "always_off" => SamplerSpec::AlwaysOff,
        "traceidratio" => SamplerSpec::Ratio(ratio()),
        "parentbased_always_on" => default,
        "parentbased_always_off" => SamplerSpec::ParentBased(Box::new(SamplerSpec::AlwaysOff)),
        "parentbased_traceidratio" => {
            SamplerSpec::ParentBased(Box::new(SamplerSpec::Ratio(ratio())))
        }
        other => {
            tracing::warn!(
                sampler = other,
                "unsupported OTEL_TRACES_SAMPLER; using parentbased_always_on"
            );
            default
        }
    }
}

impl OtlpConfig {
    /// Whether export is on, considering `OTEL_SDK_DISABLED`.
    pub fn effective_enabled(&self, env: &dyn Fn(&str) -> Option<String>) -> bool {
        let disabled = non_empty(env("OTEL_SDK_DISABLED"))
            .map(|v| v.eq_ignore_ascii_case("true"))
            .unwrap_or(false);
        self.enabled && !disabled
    }

    /// Resolve against the process environment.
    pub fn resolve(&self) -> Result<ResolvedOtlp, TelemetryError> {
        self.resolve_with(&|k| std::env::var(k).ok())
    }

    /// Resolve against an arbitrary environment (config values win over the environment).
    pub fn resolve_with(
        &self,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<ResolvedOtlp, TelemetryError> {
        let protocol = match self.protocol {
            Some(p) => p,
            None => {
                if let Some(v) = non_empty(env("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL")) {
                    parse_protocol("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", &v)?
                } else if let Some(v) = non_empty(env("OTEL_EXPORTER_OTLP_PROTOCOL")) {
                    parse_protocol("OTEL_EXPORTER_OTLP_PROTOCOL", &v)?
                } else {
                    OtlpProtocol::Grpc
                }
            }
        };
        let endpoint = match non_empty(self.endpoint.clone()) {
            Some(e) if protocol == OtlpProtocol::HttpProtobuf => with_traces_path(&e),
            Some(e) => e,
            None => {
                if let Some(e) = non_empty(env("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")) {
                    e
                } else if let Some(e) = non_empty(env("OTEL_EXPORTER_OTLP_ENDPOINT")) {
                    match protocol {
                        OtlpProtocol::HttpProtobuf => with_traces_path(&e),
                        OtlpProtocol::Grpc => e,
                    }
                } else {
                    match protocol {
                        OtlpProtocol::Grpc => "http://127.0.0.1:4317".to_owned(),
                        OtlpProtocol::HttpProtobuf => "http://127.0.0.1:4318/v1/traces".to_owned(),
                    }
                }
            }
        };
        if !(endpoint.starts_with("http://") || endpoint.starts_with("https://")) {
            return Err(TelemetryError::Config(format!(
                "telemetry.otlp.endpoint: '{endpoint}' must start with http:// or https://"
            )));
        }
        let sampler = match self.sample_ratio {
            Some(r) => SamplerSpec::ParentBased(Box::new(SamplerSpec::Ratio(check_ratio(
                "telemetry.otlp.sample_ratio",
                r,
            )?))),
            None => sampler_from_env(env),
        };
        let service_name = non_empty(self.service_name.clone())
            .or_else(|| non_empty(env("OTEL_SERVICE_NAME")))
            .unwrap_or_else(|| "jimini".to_owned());
        if self.max_queue == 0 {
            return Err(TelemetryError::Config(
                "telemetry.otlp.max_queue: must be at least 1".to_owned(),
            ));
        }
        let headers = match non_empty(env("OTEL_EXPORTER_OTLP_TRACES_HEADERS")) {
            Some(v) => OtlpHeaders::parse("OTEL_EXPORTER_OTLP_TRACES_HEADERS", &v)?,
            None => match non_empty(env("OTEL_EXPORTER_OTLP_HEADERS")) {
                Some(v) => OtlpHeaders::parse("OTEL_EXPORTER_OTLP_HEADERS", &v)?,
                None => OtlpHeaders::default(),
            },
        };
        Ok(ResolvedOtlp {
            endpoint,
            protocol,
            sampler,
            service_name,
            export_timeout: Duration::from_millis(self.export_timeout_ms.max(1)),
            max_queue: self.max_queue,
            headers,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn env_of(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let m: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        move |k| m.get(k).cloned()
    }

    #[test]
    fn yaml_defaults_and_unknown_fields() {
        let c: TelemetryConfig = serde_yaml::from_str("{}").unwrap();
        assert_eq!(c, TelemetryConfig::default());
        assert_eq!(c.log_format, LogFormat::Json);
        assert_eq!(c.log_level, "info");
        assert!(!c.otlp.enabled);
        assert_eq!(c.otlp.export_timeout_ms, 3000);
        assert_eq!(c.otlp.max_queue, 2048);
        let c: TelemetryConfig = serde_yaml::from_str(
            "log_format: pretty\notlp: {enabled: true, protocol: http_protobuf, sample_ratio: 0.25}",
        )
        .unwrap();
        assert_eq!(c.log_format, LogFormat::Pretty);
        assert_eq!(c.otlp.protocol, Some(OtlpProtocol::HttpProtobuf));
        assert!(serde_yaml::from_str::<TelemetryConfig>("logformat: json").is_err());
        assert!(serde_yaml::from_str::<TelemetryConfig>("otlp: {endpont: x}").is_err());
    }

    #[test]
    fn otlp_headers_come_from_the_environment_decoded_and_masked() {
        let base = OtlpConfig::default();
        let r = base
            .resolve_with(&env_of(&[(
                "OTEL_EXPORTER_OTLP_HEADERS",
                "api-key=s%3Dcr%C3%A9t , x-team=a b,",
            )]))
            .unwrap();
        let got: Vec<(String, String)> = r
            .headers
            .pairs()
            .iter()
            .map(|(n, v)| (n.to_string(), v.to_str().unwrap_or("").to_owned()))
            .collect();
        assert_eq!(got[1], ("x-team".to_owned(), "a b".to_owned()));
        assert_eq!(got[0].0, "api-key");
        assert_eq!(r.headers.pairs()[0].1.as_bytes(), "s=crét".as_bytes());
        let shown = format!("{r:?}");
        assert!(shown.contains("api-key: <masked>"), "{shown}");
        assert!(
            !shown.contains("s=cr") && !shown.contains("s%3D"),
            "{shown}"
        );

        // The traces-specific variable wins over the general one.
        let r = base
            .resolve_with(&env_of(&[
                ("OTEL_EXPORTER_OTLP_HEADERS", "a=1"),
                ("OTEL_EXPORTER_OTLP_TRACES_HEADERS", "b=2"),
            ]))
            .unwrap();
        assert_eq!(r.headers.pairs().len(), 1);
        assert_eq!(r.headers.pairs()[0].0.as_str(), "b");
        assert!(base
            .resolve_with(&env_of(&[]))
            .unwrap()
            .headers
            .pairs()
            .is_empty());

        // Malformed entries are errors naming the variable and header, never the value.
        for (list, what) in [
            ("novalue", "key=value"),
            ("bad header=x", "'bad header'"),
            ("k=%zzsecret", "'k'"),
            ("k=line\nsecret", "'k'"),
        ] {
            let e = base
                .resolve_with(&env_of(&[("OTEL_EXPORTER_OTLP_HEADERS", list)]))
                .unwrap_err()
                .to_string();
            assert!(
                e.contains("OTEL_EXPORTER_OTLP_HEADERS") && e.contains(what),
                "{e}"
            );
            assert!(!e.contains("secret"), "{e}");
        }
    }

    #[test]
    fn resolution_table() {
        let base = OtlpConfig::default();
        let r = base.resolve_with(&env_of(&[])).unwrap();
        assert_eq!(r.endpoint, "http://127.0.0.1:4317");
        assert_eq!(r.protocol, OtlpProtocol::Grpc);
        assert_eq!(r.service_name, "jimini");
        assert_eq!(
            r.sampler,
            SamplerSpec::ParentBased(Box::new(SamplerSpec::AlwaysOn))
        );

        let r = base
            .resolve_with(&env_of(&[("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf")]))
            .unwrap();
        assert_eq!(r.endpoint, "http://127.0.0.1:4318/v1/traces");

        let r = base
            .resolve_with(&env_of(&[
                ("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf"),
                ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://col:4318/"),
                ("OTEL_SERVICE_NAME", "svc"),
                ("OTEL_TRACES_SAMPLER", "parentbased_traceidratio"),
                ("OTEL_TRACES_SAMPLER_ARG", "0.1"),
            ]))
            .unwrap();
        assert_eq!(r.endpoint, "http://col:4318/v1/traces");
        assert_eq!(r.service_name, "svc");
        assert_eq!(
            r.sampler,
            SamplerSpec::ParentBased(Box::new(SamplerSpec::Ratio(0.1)))
        );

        // the per-signal endpoint is used verbatim
        let r = base
            .resolve_with(&env_of(&[
                ("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf"),
                (
                    "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
                    "http://col:9999/custom",
                ),
                ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://ignored:1"),
            ]))
            .unwrap();
        assert_eq!(r.endpoint, "http://col:9999/custom");

        // config wins over env
        let cfg = OtlpConfig {
            endpoint: Some("http://cfg:4318".into()),
            protocol: Some(OtlpProtocol::HttpProtobuf),
            sample_ratio: Some(0.5),
            service_name: Some("me".into()),
            ..OtlpConfig::default()
        };
        let r = cfg
            .resolve_with(&env_of(&[
                ("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc"),
                ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://env:1"),
                ("OTEL_SERVICE_NAME", "svc"),
                ("OTEL_TRACES_SAMPLER", "always_off"),
            ]))
            .unwrap();
        assert_eq!(r.endpoint, "http://cfg:4318/v1/traces");
        assert_eq!(r.protocol, OtlpProtocol::HttpProtobuf);
        assert_eq!(r.service_name, "me");
        assert_eq!(
            r.sampler,
            SamplerSpec::ParentBased(Box::new(SamplerSpec::Ratio(0.5)))
        );

        // bad values
        assert!(base
            .resolve_with(&env_of(&[("OTEL_EXPORTER_OTLP_PROTOCOL", "http/json")]))
            .is_err());
        let bad_ratio = OtlpConfig {
            sample_ratio: Some(1.5),
            ..OtlpConfig::default()
        };
        assert!(bad_ratio.resolve_with(&env_of(&[])).is_err());
        let bad_ep = OtlpConfig {
            endpoint: Some("col:4317".into()),
            ..OtlpConfig::default()
        };
        assert!(bad_ep.resolve_with(&env_of(&[])).is_err());
        // unknown sampler / bad arg fall back instead of failing
        let r = base
            .resolve_with(&env_of(&[
                ("OTEL_TRACES_SAMPLER", "traceidratio"),
                ("OTEL_TRACES_SAMPLER_ARG", "nope"),
            ]))
            .unwrap();
        assert_eq!(r.sampler, SamplerSpec::Ratio(1.0));
        let r = base
            .resolve_with(&env_of(&[("OTEL_TRACES_SAMPLER", "jaeger_remote")]))
            .unwrap();
        assert_eq!(
            r.sampler,
            SamplerSpec::ParentBased(Box::new(SamplerSpec::AlwaysOn))
        );
    }

    #[test]
    fn sdk_disabled_env() {
        let cfg = OtlpConfig {
            enabled: true,
            ..OtlpConfig::default()
        };
        assert!(cfg.effective_enabled(&env_of(&[])));
        assert!(!cfg.effective_enabled(&env_of(&[("OTEL_SDK_DISABLED", "TRUE")])));
        assert!(!OtlpConfig::default().effective_enabled(&env_of(&[])));
    }
}
