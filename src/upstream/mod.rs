//! Upstream management, pure logic: config sections (`upstreams`, `routes`, `callers`, `limits`),
//! routing + egress control, circuit breakers, retry backoff/budget, per-caller rate limits (in-process
//! or Redis), caller keys and upstream target/path/credential building. The Pingora glue calls in here.

pub mod breaker;
pub mod callers;
pub mod config;
mod glob;
pub mod ratelimit;
pub mod retry;
pub mod routing;
pub mod target;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;

pub use breaker::{
    Breaker, BreakerOpen, BreakerSnapshot, BreakerState, Clock, FailureKind, FakeClock, Outcome,
    Permit, SystemClock,
};
pub use callers::{AuthError, Caller, CallerAuth};
pub use config::{
    AuthMode, CallersConfig, ConfigError, LimitsConfig, RouteConfig, Secret, UpstreamConfig,
    UpstreamKind,
};
pub use ratelimit::{estimate_prompt_tokens, Decision, Limiter, RateLimiter, SharedRateLimiter};
pub use retry::{
    is_retryable_status, parse_retry_after, Backoff, RetryBudget, RetryCause, RetryDecision,
    RetryPolicy,
};
pub use routing::{EgressDenied, RouteTarget, Router};
pub use target::{auth_header, upstream_request_path, UpstreamTarget};

/// Credentials resolved at load.
#[derive(Debug)]
pub(crate) struct ResolvedAuth {
    pub(crate) mode: AuthMode,
    /// Lower-case header name for the injected key.
    pub(crate) header: String,
    /// Full header value (`Bearer sk-…` or the bare key) for `inject`.
    pub(crate) value: Option<Secret>,
}

/// One upstream, ready for traffic: validated config, parsed target, breaker, retry policy and budget.
#[derive(Debug)]
pub struct UpstreamRuntime {
    pub name: String,
    pub config: UpstreamConfig,
    pub target: UpstreamTarget,
    pub breaker: Arc<Breaker>,
    pub budget: Arc<RetryBudget>,
    pub retry: RetryPolicy,
    pub(crate) auth: ResolvedAuth,
    addrs: Vec<SocketAddr>,
    next_addr: AtomicUsize,
}

impl UpstreamRuntime {
    /// Addresses resolved by [`UpstreamSet::resolve_all`] (empty before).
    pub fn addrs(&self) -> &[SocketAddr] {
        &self.addrs
    }

    /// Next resolved address, round robin (None when not resolved: connect by host name then).
    pub fn pick_addr(&self) -> Option<SocketAddr> {
        if self.addrs.is_empty() {
            return None;
        }
        let i = self.next_addr.fetch_add(1, Ordering::Relaxed) % self.addrs.len();
        self.addrs.get(i).copied()
    }

    /// Call once per client request routed here (feeds the retry budget).
    pub fn on_request(&self) {
        self.budget.deposit();
    }

    /// Whether and when to retry after `retries_done` retries failed with `cause` (consumes budget
    /// only when the answer is `Retry`). The caller must not retry once bytes reached the client.
    pub fn retry_decision<R: rand::Rng + ?Sized>(
        &self,
        retries_done: u32,
        cause: RetryCause,
        rng: &mut R,
    ) -> RetryDecision {
        self.retry.decide(retries_done, cause, &self.budget, rng)
    }

    pub fn timeouts(&self) -> &config::TimeoutsConfig {
        &self.config.timeouts
    }

    /// Whether an injected key is configured (for the admin view; never the key itself).
    pub fn has_injected_key(&self) -> bool {
        self.auth.value.is_some()
    }

    fn snapshot(&self) -> UpstreamSnapshot {
        UpstreamSnapshot {
            name: self.name.clone(),
            kind: self.config.kind,
            base_url: self.config.base_url.clone(),
            auth_mode: self.auth.mode,
            api_key_env: self.config.auth.api_key_env.clone(),
            key_loaded: self.auth.value.is_some(),
            fallback: self.config.fallback.clone(),
            models: self.config.models.clone(),
            breaker: self.breaker.snapshot(),
            retry_budget_available: self.budget.available(),
            resolved_addrs: self.addrs.iter().map(ToString::to_string).collect(),
        }
    }
}

/// Admin/API view of one upstream. Contains no secret: the env var *name* and whether a key was loaded.
#[derive(Clone, Debug, Serialize)]
pub struct UpstreamSnapshot {
    pub name: String,
    pub kind: UpstreamKind,
    pub base_url: String,
    pub auth_mode: AuthMode,
    pub api_key_env: Option<String>,
    pub key_loaded: bool,
    pub fallback: Option<String>,
    pub models: Vec<String>,
    pub breaker: BreakerSnapshot,
    pub retry_budget_available: f64,
    pub resolved_addrs: Vec<String>,
}

/// How [`UpstreamSet`] reads its surroundings (env, time, the previous generation for reloads).
pub struct LoadOptions<'a> {
    /// Environment lookup for `auth.api_key_env`.
    pub env: &'a dyn Fn(&str) -> Option<String>,
    pub clock: Arc<dyn Clock>,
    /// On reload: breakers and budgets of upstreams with the same name and unchanged breaker/retry
    /// config are carried over, so a reload does not close an open breaker or refill a budget.
    pub previous: Option<&'a UpstreamSet>,
}

fn process_env(k: &str) -> Option<String> {
    std::env::var(k).ok()
}

impl LoadOptions<'static> {
    /// Process environment, system clock, no previous generation.
    pub fn system() -> LoadOptions<'static> {
        LoadOptions {
            env: &process_env,
            clock: SystemClock::shared(),
            previous: None,
        }
    }
}

/// All configured upstreams, indexed like the `upstreams:` list (and like `RouteTarget::upstream`).
#[derive(Debug)]
pub struct UpstreamSet {
    upstreams: Vec<Arc<UpstreamRuntime>>,
    by_name: HashMap<String, usize>,
}

impl UpstreamSet {
    /// Validate and build from config with the process environment and the system clock.
    pub fn new(cfgs: &[UpstreamConfig]) -> Result<UpstreamSet, ConfigError> {
        Self::with_options(cfgs, &LoadOptions::system())
    }

    pub fn with_options(
        cfgs: &[UpstreamConfig],
        opts: &LoadOptions<'_>,
    ) -> Result<UpstreamSet, ConfigError> {
        let index = routing::index_upstreams(cfgs)?;
        routing::fallback_chains(cfgs, &index)?;
        let mut upstreams = Vec::with_capacity(cfgs.len());
        for (i, c) in cfgs.iter().enumerate() {
            let path = format!("upstreams[{i}]");
            c.validate(&path)?;
            let target = UpstreamTarget::parse(&c.base_url)
                .map_err(|m| ConfigError::new(format!("{path}.base_url"), m))?;
            let auth = resolve_auth(c, &path, opts.env)?;
            let prev = opts.previous.and_then(|p| p.get_by_name(&c.name));
            let breaker = match prev {
                Some(p) if p.config.breaker == c.breaker && p.config.timeouts == c.timeouts => {
                    Arc::clone(&p.breaker)
                }
                _ => Arc::new(
                    Breaker::new(c.breaker.clone(), Arc::clone(&opts.clock)).with_probe_timeout(
                        c.timeouts.connect() + c.timeouts.first_byte() + Duration::from_secs(1),
                    ),
                ),
            };
            let budget = match prev {
                Some(p) if p.config.retries == c.retries => Arc::clone(&p.budget),
                _ => Arc::new(RetryBudget::from_config(
                    &c.retries,
                    Arc::clone(&opts.clock),
                )),
            };
            upstreams.push(Arc::new(UpstreamRuntime {
                name: c.name.clone(),
                config: c.clone(),
                target,
                breaker,
                budget,
                retry: RetryPolicy::from_config(&c.retries),
                auth,
                addrs: Vec::new(),
                next_addr: AtomicUsize::new(0),
            }));
        }
        let by_name = index.into_iter().map(|(k, v)| (k.to_string(), v)).collect();
        Ok(UpstreamSet { upstreams, by_name })
    }

    /// Resolve every upstream host once (blocking DNS — call at load/reload, off the request path).
    /// Failures are returned per upstream but are not fatal: that upstream keeps connecting by name.
    pub fn resolve_all(&mut self) -> Vec<(String, std::io::Error)> {
        let mut errors = Vec::new();
        for up in &mut self.upstreams {
            if let Some(rt) = Arc::get_mut(up) {
                match rt.target.resolve() {
                    Ok(a) => rt.addrs = a,
                    Err(e) => errors.push((rt.name.clone(), e)),
                }
            }
        }
        errors
    }

    pub fn len(&self) -> usize {
        self.upstreams.len()
    }

    pub fn is_empty(&self) -> bool {
        self.upstreams.is_empty()
    }

    pub fn get(&self, index: usize) -> Option<&Arc<UpstreamRuntime>> {
        self.upstreams.get(index)
    }

    pub fn get_by_name(&self, name: &str) -> Option<&Arc<UpstreamRuntime>> {
        self.by_name.get(name).and_then(|&i| self.upstreams.get(i))
    }

    pub fn index_of(&self, name: &str) -> Option<usize> {
        self.by_name.get(name).copied()
    }

    pub fn iter(&self) -> impl Iterator<Item = &Arc<UpstreamRuntime>> {
        self.upstreams.iter()
    }

    /// Ready while at least one upstream's breaker admits traffic (closed, or half-open / cool-down
    /// elapsed). Pass `Router::reachable_upstreams()` to [`ready_among`](Self::ready_among) to ignore
    /// upstreams no route can reach.
    pub fn ready(&self) -> bool {
        self.upstreams
            .iter()
            .any(|u| u.breaker.state() != BreakerState::Open)
    }

    pub fn ready_among(&self, indexes: &[usize]) -> bool {
        indexes
            .iter()
            .filter_map(|&i| self.upstreams.get(i))
            .any(|u| u.breaker.state() != BreakerState::Open)
    }

    /// First upstream in `[primary, fallbacks…]` whose breaker admits the request, with its permit.
    /// `Err` carries the shortest retry-after among them (for a 503 Retry-After).
    pub fn acquire(&self, target: &RouteTarget) -> Result<(usize, Permit), BreakerOpen> {
        let mut shortest: Option<Duration> = None;
        for idx in std::iter::once(target.upstream).chain(target.fallbacks.iter().copied()) {
            let Some(up) = self.upstreams.get(idx) else {
                continue;
            };
            match up.breaker.try_acquire() {
                Ok(p) => return Ok((idx, p)),
                Err(e) => shortest = Some(shortest.map_or(e.retry_after, |s| s.min(e.retry_after))),
            }
        }
        Err(BreakerOpen {
            retry_after: shortest.unwrap_or(Duration::from_secs(1)),
        })
    }

    /// Admin view (no secrets).
    pub fn snapshot(&self) -> Vec<UpstreamSnapshot> {
        self.upstreams.iter().map(|u| u.snapshot()).collect()
    }
}

fn resolve_auth(
    c: &UpstreamConfig,
    path: &str,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<ResolvedAuth, ConfigError> {
    let header = c
        .auth
        .header
        .as_deref()
        .unwrap_or(c.kind.default_auth_header())
        .to_ascii_lowercase();
    let value = match (&c.auth.mode, &c.auth.api_key_env) {
        (AuthMode::Inject, Some(var)) => {
            let key = env(var)
                .map(|k| k.trim().to_string())
                .filter(|k| !k.is_empty())
                .ok_or_else(|| {
                    ConfigError::new(
                        format!("{path}.auth.api_key_env"),
                        format!("environment variable {var} is not set or empty"),
                    )
                })?;
            if key.bytes().any(|b| b.is_ascii_control()) {
                return Err(ConfigError::new(
                    format!("{path}.auth.api_key_env"),
                    format!("environment variable {var} contains control characters"),
                ));
            }
            Some(Secret::new(if header == "authorization" {
                format!("Bearer {key}")
            } else {
                key
            }))
        }
        _ => None,
    };
    Ok(ResolvedAuth {
        mode: c.auth.mode,
        header,
        value,
    })
}

#[cfg(test)]
mod tests {
    use super::config::{AuthConfig, AzureConfig};
    use super::*;

    const KEY: &str = "sk-proj-REALSECRET123";

    fn env(k: &str) -> Option<String> {
        match k {
            "OPENAI_API_KEY" => Some(KEY.to_string()),
            "AZURE_KEY" => Some("az-secret".to_string()),
            _ => None,
        }
    }

    fn opts(clock: Arc<dyn Clock>) -> LoadOptions<'static> {
        LoadOptions {
            env: &env,
            clock,
            previous: None,
        }
    }

    fn configs() -> Vec<UpstreamConfig> {
        let yaml = r#"
- name: openai
  base_url: https://api.openai.com
  auth: { mode: inject, api_key_env: OPENAI_API_KEY }
  fallback: azure
- name: azure
  base_url: https://myres.openai.azure.com
  kind: azure
  auth: { mode: inject, api_key_env: AZURE_KEY }
  azure: { api_version: "2024-10-21", deployments: { gpt-4o: prod-4o } }
- name: vllm
  base_url: http://127.0.0.1:8000/v1
  kind: openai_compatible
  auth: { mode: none }
  breaker: { consecutive_failures: 1, cooldown_ms: 1000 }
- name: pass
  base_url: http://127.0.0.1:9/
"#;
        serde_yaml::from_str(yaml).unwrap()
    }

    #[test]
    fn builds_runtime_with_injected_keys_masked() {
        let set = UpstreamSet::with_options(&configs(), &opts(SystemClock::shared())).unwrap();
        assert_eq!(set.len(), 4);
        let oa = set.get_by_name("openai").unwrap();
        assert_eq!(
            auth_header(oa, Some("Bearer jk-caller")),
            Some(("authorization", "Bearer sk-proj-REALSECRET123"))
        );
        assert!(target::strips_client_auth(oa));
        let az = set.get(1).unwrap();
        assert_eq!(auth_header(az, None), Some(("api-key", "az-secret")));
        assert_eq!(
            upstream_request_path(az, "/v1/chat/completions", Some("gpt-4o")),
            "/openai/deployments/prod-4o/chat/completions?api-version=2024-10-21"
        );
        let vllm = set.get_by_name("vllm").unwrap();
        assert_eq!(auth_header(vllm, Some("Bearer x")), None);
        assert!(target::strips_client_auth(vllm));
        assert_eq!(
            upstream_request_path(vllm, "/v1/chat/completions", None),
            "/v1/chat/completions"
        );
        let pass = set.get_by_name("pass").unwrap();
        assert!(!target::strips_client_auth(pass));
        assert_eq!(
            auth_header(pass, Some("Bearer sk-user")),
            Some(("authorization", "Bearer sk-user"))
        );
        assert_eq!(auth_header(pass, None), None);

        // The key never shows in Debug or the admin snapshot.
        let dbg = format!("{set:?}");
        assert!(!dbg.contains("REALSECRET") && !dbg.contains("az-secret"));
        let snap = serde_json::to_string(&set.snapshot()).unwrap();
        assert!(
            !snap.contains("REALSECRET") && !snap.contains("az-secret"),
            "{snap}"
        );
        assert!(snap.contains("\"key_loaded\":true") && snap.contains("OPENAI_API_KEY"));
    }

    #[test]
    fn custom_header_gets_bare_key() {
        let mut c = configs();
        c[0].auth = AuthConfig {
            mode: AuthMode::Inject,
            api_key_env: Some("OPENAI_API_KEY".into()),
            header: Some("X-Custom-Key".into()),
        };
        let set = UpstreamSet::with_options(&c, &opts(SystemClock::shared())).unwrap();
        assert_eq!(
            auth_header(set.get(0).unwrap(), None),
            Some(("x-custom-key", KEY))
        );
    }

    #[test]
    fn load_errors_name_key_paths_and_hide_values() {
        let mut c = configs();
        c[1].auth.api_key_env = Some("MISSING".into());
        let e = UpstreamSet::with_options(&c, &opts(SystemClock::shared())).unwrap_err();
        assert_eq!(
            e.to_string(),
            "upstreams[1].auth.api_key_env: environment variable MISSING is not set or empty"
        );

        let mut c = configs();
        c[2].base_url = "ftp://x".into();
        assert_eq!(
            UpstreamSet::with_options(&c, &opts(SystemClock::shared()))
                .unwrap_err()
                .path,
            "upstreams[2].base_url"
        );

        let mut c = configs();
        c[3].fallback = Some("pass".into());
        assert!(UpstreamSet::with_options(&c, &opts(SystemClock::shared()))
            .unwrap_err()
            .message
            .contains("cycle"));

        let mut c = configs();
        c[1].azure = Some(AzureConfig::default());
        assert_eq!(
            UpstreamSet::with_options(&c, &opts(SystemClock::shared()))
                .unwrap_err()
                .path,
            "upstreams[1].azure.api_version"
        );
    }

    #[test]
    fn readiness_and_fallback_acquire() {
        let clock = FakeClock::new(0);
        let set = UpstreamSet::with_options(&configs(), &opts(clock.clone())).unwrap();
        let routes = vec![RouteConfig {
            upstream: "vllm".into(),
            model: Some("llama*".into()),
            ..RouteConfig::default()
        }];
        let router = Router::new(&routes, &configs()).unwrap();
        assert!(set.ready());
        let vllm = set.index_of("vllm").unwrap();
        let p = set.get(vllm).unwrap().breaker.try_acquire().unwrap();
        set.get(vllm)
            .unwrap()
            .breaker
            .record_failure(p, FailureKind::Connect);
        assert!(set.ready(), "others still closed");
        assert!(!set.ready_among(&[vllm]));
        let reach = router.reachable_upstreams();
        assert_eq!(
            reach,
            vec![0, 1, 2],
            "openai (default) → azure fallback, vllm route"
        );

        // Open primary → fallback; everything open → shortest retry-after.
        let t = router
            .route("/v1/chat/completions", Some("gpt-4o"))
            .unwrap();
        assert_eq!((t.upstream, t.fallbacks.clone()), (0, vec![1]));
        let oa = set.get(0).unwrap();
        for _ in 0..5 {
            let p = oa.breaker.try_acquire().unwrap();
            oa.breaker.record_failure(p, FailureKind::Status5xx);
        }
        assert_eq!(set.acquire(&t).unwrap().0, 1);
        let az = set.get(1).unwrap();
        for _ in 0..5 {
            let p = az.breaker.try_acquire().unwrap();
            az.breaker.record_failure(p, FailureKind::Timeout);
        }
        clock.advance(Duration::from_millis(2_000));
        assert_eq!(
            set.acquire(&t).unwrap_err().retry_after,
            Duration::from_secs(3)
        );
        // vllm cool-down (1 s) elapsed: readiness recovers without traffic.
        assert!(set.ready_among(&[vllm]));
    }

    #[test]
    fn reload_carries_breaker_state_when_config_unchanged() {
        let clock = FakeClock::new(0);
        let first = UpstreamSet::with_options(&configs(), &opts(clock.clone())).unwrap();
        let b = &first.get_by_name("vllm").unwrap().breaker;
        let p = b.try_acquire().unwrap();
        b.record_failure(p, FailureKind::Connect);
        let o = LoadOptions {
            env: &env,
            clock: clock.clone(),
            previous: Some(&first),
        };
        let second = UpstreamSet::with_options(&configs(), &o).unwrap();
        assert_eq!(
            second.get_by_name("vllm").unwrap().breaker.state(),
            BreakerState::Open
        );
        let mut changed = configs();
        changed[2].breaker.consecutive_failures = 3;
        let o = LoadOptions {
            env: &env,
            clock,
            previous: Some(&first),
        };
        let third = UpstreamSet::with_options(&changed, &o).unwrap();
        assert_eq!(
            third.get_by_name("vllm").unwrap().breaker.state(),
            BreakerState::Closed
        );
    }

    #[test]
    fn resolve_all_fills_addresses() {
        let mut set =
            UpstreamSet::with_options(&configs()[2..], &opts(SystemClock::shared())).unwrap();
        let errors = set.resolve_all();
        assert!(errors.is_empty());
        let vllm = set.get(0).unwrap();
        assert_eq!(vllm.pick_addr(), Some("127.0.0.1:8000".parse().unwrap()));
        assert_eq!(vllm.addrs().len(), 1);
    }
}
