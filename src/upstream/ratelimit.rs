//! Per-caller rate limits: requests/min and tokens/min as continuously refilling token buckets, with
//! OpenAI-style `x-ratelimit-*` headers and Retry-After. In-process (sharded, memory-bounded) by default;
//! [`SharedRateLimiter`] runs the same bucket atomically in Redis (Lua) so N replicas enforce one limit.

use std::collections::hash_map::RandomState;
use std::collections::HashMap;
use std::hash::BuildHasher;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicU8, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, RwLock};
use std::time::{Duration, Instant};

use serde::Serialize;

use super::breaker::{Clock, SystemClock};
use super::config::{ConfigError, Limit, LimitsConfig, RedisFailMode};

/// Rough prompt size in tokens: ~4 bytes per token (OpenAI's rule of thumb for English). Pass the
/// request body length: JSON keys and punctuation make this an over-estimate, which is the safe side
/// for admission; completion tokens are debited exactly from `usage` afterwards.
pub fn estimate_prompt_tokens(text_len_bytes: usize) -> u64 {
    (text_len_bytes as u64).div_ceil(4)
}

/// Which bucket refused the request.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum LimitKind {
    Requests,
    Tokens,
}

/// Outcome of a rate-limit check.
#[derive(Clone, Debug, PartialEq)]
pub struct Decision {
    pub allowed: bool,
    /// When refused: how long until the request would be admitted.
    pub retry_after: Duration,
    /// `x-ratelimit-{limit,remaining,reset}-{requests,tokens}` for the limits that apply (send on
    /// every response, like OpenAI). Reset values use Go duration format (`1s`, `6m0s`, `20ms`).
    pub headers: Vec<(&'static str, String)>,
    pub limited_by: Option<LimitKind>,
    /// True when the shared limiter could not reach Redis and the decision came from the fallback.
    pub degraded: bool,
}

impl Decision {
    /// Error `code` for the OpenAI-shaped 429 body.
    pub const CODE: &'static str = "rate_limit_exceeded";

    /// No limit applies.
    pub fn unlimited() -> Decision {
        Decision {
            allowed: true,
            retry_after: Duration::ZERO,
            headers: Vec::new(),
            limited_by: None,
            degraded: false,
        }
    }

    /// `Retry-After` header value: whole seconds, rounded up, at least 1.
    pub fn retry_after_secs(&self) -> u64 {
        self.retry_after.as_millis().div_ceil(1000).max(1) as u64
    }

    /// OpenAI error `type` (`requests` / `tokens`, as OpenAI reports it).
    pub fn error_type(&self) -> &'static str {
        match self.limited_by {
            Some(LimitKind::Tokens) => "tokens",
            _ => "requests",
        }
    }

    /// Message for the 429 body (no caller secrets; the caller name is the caller's own).
    pub fn message(&self) -> String {
        let what = match self.limited_by {
            Some(LimitKind::Requests) => "requests per minute",
            Some(LimitKind::Tokens) => "tokens per minute",
            None => "rate limiter unavailable",
        };
        format!(
            "Rate limit reached ({what}). Please try again in {}.",
            format_reset(self.retry_after.as_millis() as u64)
        )
    }

    fn unavailable() -> Decision {
        Decision {
            allowed: false,
            retry_after: Duration::from_secs(1),
            headers: Vec::new(),
            limited_by: None,
            degraded: true,
        }
    }
}

/// Go-style duration as OpenAI uses in `x-ratelimit-reset-*`: `0s`, `250ms`, `1.5s`, `6m0s`, `1h2m3s`.
pub fn format_reset(ms: u64) -> String {
    if ms == 0 {
        return "0s".to_string();
    }
    if ms < 1_000 {
        return format!("{ms}ms");
    }
    let h = ms / 3_600_000;
    let m = (ms / 60_000) % 60;
    let s = (ms / 1_000) % 60;
    let frac = ms % 1_000;
    let mut out = String::with_capacity(12);
    if h > 0 {
        out.push_str(&format!("{h}h"));
    }
    if h > 0 || m > 0 {
        out.push_str(&format!("{m}m"));
    }
    out.push_str(&s.to_string());
    if frac > 0 {
        let f = format!("{frac:03}");
        out.push('.');
        out.push_str(f.trim_end_matches('0'));
    }
    out.push('s');
    out
}

/// Guards float round-off so "exactly enough" tokens admit.
const EPS: f64 = 1e-6;
/// Balances never go below −capacity, so refilling to full takes at most two windows.
const FULL_REFILL_MS: u64 = 120_000;
const SHARDS: usize = 16;

#[derive(Clone, Copy, Debug, PartialEq)]
struct Rate {
    cap: f64,
    per_ms: f64,
}

impl Rate {
    fn per_minute(n: u32) -> Rate {
        Rate {
            cap: f64::from(n),
            per_ms: f64::from(n) / 60_000.0,
        }
    }
    fn refill(self, bal: f64, elapsed_ms: u64) -> f64 {
        (bal + elapsed_ms as f64 * self.per_ms).min(self.cap)
    }
    fn wait_ms(self, bal: f64, need: f64) -> u64 {
        if bal + EPS >= need {
            0
        } else {
            ((need - bal) / self.per_ms).ceil() as u64
        }
    }
    fn reset_ms(self, bal: f64) -> u64 {
        if bal + EPS >= self.cap {
            0
        } else {
            ((self.cap - bal) / self.per_ms).ceil() as u64
        }
    }
}

/// A caller's limit, resolved from config (copyable, read under a short read lock).
#[derive(Clone, Copy, Debug, PartialEq)]
struct Resolved {
    rpm: u32,
    tpm: u32,
    req: Option<Rate>,
    tok: Option<Rate>,
}

impl Resolved {
    fn from(l: &Limit) -> Option<Resolved> {
        if l.is_unlimited() {
            return None;
        }
        Some(Resolved {
            rpm: l.rpm.unwrap_or(0),
            tpm: l.tpm.unwrap_or(0),
            req: l.rpm.map(Rate::per_minute),
            tok: l.tpm.map(Rate::per_minute),
        })
    }
}

#[derive(Debug, Default)]
struct Limits {
    default: Option<Resolved>,
    callers: HashMap<String, Option<Resolved>>,
}

impl Limits {
    fn from_config(cfg: &LimitsConfig) -> Limits {
        Limits {
            default: cfg.default.as_ref().and_then(Resolved::from),
            callers: cfg
                .callers
                .iter()
                .map(|(k, v)| (k.clone(), Resolved::from(v)))
                .collect(),
        }
    }
    fn get(&self, caller: &str) -> Option<Resolved> {
        match self.callers.get(caller) {
            Some(l) => *l,
            None => self.default,
        }
    }
}

fn build_decision(l: &Resolved, req_bal: f64, tok_bal: f64, allowed: bool, need: f64) -> Decision {
    let mut headers = Vec::with_capacity(6);
    let mut wait = 0u64;
    let mut limited_by = None;
    if let Some(rate) = l.req {
        headers.push(("x-ratelimit-limit-requests", l.rpm.to_string()));
        headers.push((
            "x-ratelimit-remaining-requests",
            (req_bal.max(0.0) + EPS).floor().to_string(),
        ));
        headers.push((
            "x-ratelimit-reset-requests",
            format_reset(rate.reset_ms(req_bal)),
        ));
        if !allowed {
            let w = rate.wait_ms(req_bal, 1.0);
            if w > 0 {
                wait = w;
                limited_by = Some(LimitKind::Requests);
            }
        }
    }
    if let Some(rate) = l.tok {
        headers.push(("x-ratelimit-limit-tokens", l.tpm.to_string()));
        headers.push((
            "x-ratelimit-remaining-tokens",
            (tok_bal.max(0.0) + EPS).floor().to_string(),
        ));
        headers.push((
            "x-ratelimit-reset-tokens",
            format_reset(rate.reset_ms(tok_bal)),
        ));
        if !allowed {
            let w = rate.wait_ms(tok_bal, need.min(rate.cap));
            if w > wait {
                wait = w;
                limited_by = Some(LimitKind::Tokens);
            }
        }
    }
    if !allowed && limited_by.is_none() {
        // Refused at the edge of round-off: say "requests", retry almost immediately.
        limited_by = Some(if l.req.is_some() {
            LimitKind::Requests
        } else {
            LimitKind::Tokens
        });
        wait = 1;
    }
    Decision {
        allowed,
        retry_after: Duration::from_millis(wait),
        headers,
        limited_by,
        degraded: false,
    }
}

type Shard = HashMap<Box<str>, Entry>;

#[derive(Clone, Copy, Debug)]
struct Entry {
    req: f64,
    tok: f64,
    last_ms: u64,
}

/// In-process limiter: token buckets per caller in 16 mutex-protected shards. Memory is bounded by
/// `limits.max_callers`: when a shard is full, buckets idle for 2 minutes (provably full again, so
/// dropping them loses nothing) are dropped first, then the least recently used eighth.
pub struct RateLimiter {
    limits: RwLock<Limits>,
    shards: Box<[Mutex<Shard>]>,
    shard_cap: usize,
    hasher: RandomState,
    clock: Arc<dyn Clock>,
}

impl std::fmt::Debug for RateLimiter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RateLimiter")
            .field("tracked_callers", &self.tracked_callers())
            .finish_non_exhaustive()
    }
}

impl RateLimiter {
    pub fn new(cfg: &LimitsConfig) -> Result<RateLimiter, ConfigError> {
        Self::with_clock(cfg, SystemClock::shared())
    }

    pub fn with_clock(
        cfg: &LimitsConfig,
        clock: Arc<dyn Clock>,
    ) -> Result<RateLimiter, ConfigError> {
        cfg.validate("limits")?;
        Ok(RateLimiter {
            limits: RwLock::new(Limits::from_config(cfg)),
            shards: (0..SHARDS).map(|_| Mutex::new(HashMap::new())).collect(),
            shard_cap: cfg.max_callers.div_ceil(SHARDS).max(1),
            hasher: RandomState::new(),
            clock,
        })
    }

    /// Apply new limits (config reload) keeping bucket state; lowered limits clamp balances.
    pub fn update_limits(&self, cfg: &LimitsConfig) -> Result<(), ConfigError> {
        cfg.validate("limits")?;
        let new = Limits::from_config(cfg);
        *self.limits.write().unwrap_or_else(|e| e.into_inner()) = new;
        Ok(())
    }

    fn limit_for(&self, caller: &str) -> Option<Resolved> {
        self.limits
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(caller)
    }

    /// Whether any limit applies to this caller (skip token estimation otherwise).
    pub fn is_limited(&self, caller: &str) -> bool {
        self.limit_for(caller).is_some()
    }

    /// Callers with a bucket in memory.
    pub fn tracked_callers(&self) -> usize {
        self.shards.iter().map(|s| lock(s).len()).sum()
    }

    fn shard(&self, caller: &str) -> MutexGuard<'_, Shard> {
        let i = (self.hasher.hash_one(caller) as usize) % SHARDS;
        lock(&self.shards[i])
    }

    fn with_entry<T>(&self, caller: &str, l: &Resolved, f: impl FnOnce(&mut Entry) -> T) -> T {
        let now = self.clock.now_ms();
        let mut map = self.shard(caller);
        if !map.contains_key(caller) && map.len() >= self.shard_cap {
            evict(&mut map, now, self.shard_cap);
        }
        let e = map.entry(Box::from(caller)).or_insert(Entry {
            req: l.req.map_or(0.0, |r| r.cap),
            tok: l.tok.map_or(0.0, |r| r.cap),
            last_ms: now,
        });
        let elapsed = now.saturating_sub(e.last_ms);
        if let Some(r) = l.req {
            e.req = r.refill(e.req, elapsed);
        }
        if let Some(r) = l.tok {
            e.tok = r.refill(e.tok, elapsed);
        }
        e.last_ms = now.max(e.last_ms);
        f(e)
    }

    /// Admit one request estimated at `estimated_prompt_tokens`. Both buckets must have room (a token
    /// estimate above the whole per-minute budget needs a full bucket); on admission the request
    /// bucket loses 1 and the token bucket the full estimate.
    pub fn check(&self, caller: &str, estimated_prompt_tokens: u64) -> Decision {
        let Some(l) = self.limit_for(caller) else {
            return Decision::unlimited();
        };
        let need = estimated_prompt_tokens as f64;
        let (allowed, r, t) = self.with_entry(caller, &l, |e| {
            let ok_r = l.req.is_none_or(|_| e.req + EPS >= 1.0);
            let ok_t = l.tok.is_none_or(|rate| e.tok + EPS >= need.min(rate.cap));
            let allowed = ok_r && ok_t;
            if allowed {
                if l.req.is_some() {
                    e.req -= 1.0;
                }
                if let Some(rate) = l.tok {
                    e.tok = (e.tok - need).max(-rate.cap);
                }
            }
            (allowed, e.req, e.tok)
        });
        build_decision(&l, r, t, allowed, need)
    }

    /// Debit completion tokens once known (response `usage`). May push the bucket into debt (down to
    /// −tpm), delaying the caller's next requests.
    pub fn record_completion(&self, caller: &str, completion_tokens: u64) {
        let Some(l) = self.limit_for(caller) else {
            return;
        };
        let Some(rate) = l.tok else {
            return;
        };
        self.with_entry(caller, &l, |e| {
            e.tok = (e.tok - completion_tokens as f64).max(-rate.cap);
        });
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // Bucket maps hold plain numbers; a panic elsewhere cannot leave them inconsistent.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

fn evict(map: &mut Shard, now: u64, cap: usize) {
    map.retain(|_, e| now.saturating_sub(e.last_ms) < FULL_REFILL_MS);
    if map.len() < cap {
        return;
    }
    let mut ages: Vec<u64> = map.values().map(|e| e.last_ms).collect();
    let k = (ages.len() / 8).max(1);
    let (_, &mut cutoff, _) = ages.select_nth_unstable(k - 1);
    let mut removed = 0;
    map.retain(|_, e| {
        if removed < k && e.last_ms <= cutoff {
            removed += 1;
            false
        } else {
            true
        }
    });
    tracing::warn!(
        evicted = removed,
        "rate limiter caller table full (limits.max_callers); evicted least recently used buckets"
    );
}

// ---------------------------------------------------------------------------------------------------
// Redis
// ---------------------------------------------------------------------------------------------------

/// Token bucket for one caller, both limits in one hash (`r`, `t`, `ts`), refilled from Redis' own
/// clock (TIME) so replicas with skewed clocks agree. ARGV: rpm (0 = none), tpm (0 = none), tokens,
/// mode (0 = admit, 1 = debit only), ttl ms. Returns {allowed, requests×1000, tokens×1000}.
const BUCKET_LUA: &str = r"
local rpm = tonumber(ARGV[1])
local tpm = tonumber(ARGV[2])
local need = tonumber(ARGV[3])
local debit_only = ARGV[4] == '1'
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local s = redis.call('HMGET', KEYS[1], 'r', 't', 'ts')
local el = now - (tonumber(s[3]) or now)
if el < 0 then el = 0 end
local r = math.min(rpm, (tonumber(s[1]) or rpm) + el * rpm / 60000)
local k = math.min(tpm, (tonumber(s[2]) or tpm) + el * tpm / 60000)
local ok = 1
if debit_only then
  if tpm > 0 then k = math.max(-tpm, k - need) end
elseif (rpm > 0 and r + 1e-6 < 1) or (tpm > 0 and k + 1e-6 < math.min(need, tpm)) then
  ok = 0
else
  if rpm > 0 then r = r - 1 end
  if tpm > 0 then k = math.max(-tpm, k - need) end
end
redis.call('HSET', KEYS[1], 'r', tostring(r), 't', tostring(k), 'ts', tostring(now))
redis.call('PEXPIRE', KEYS[1], tonumber(ARGV[5]))
return {ok, math.floor(r * 1000), math.floor(k * 1000)}
";

/// Keys outlive a full refill from maximum debt; an expired key is a full bucket, which is exact then.
const KEY_TTL_MS: u64 = FULL_REFILL_MS + 1_000;
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
const MIN_BACKOFF: Duration = Duration::from_millis(500);
const MAX_BACKOFF: Duration = Duration::from_secs(30);

/// Why Redis was not used for a decision.
#[derive(Debug, thiserror::Error)]
pub enum RedisLimiterError {
    #[error("redis unavailable (reconnecting)")]
    Unavailable,
    #[error("redis call timed out")]
    Timeout,
    #[error("redis: {0}")]
    Redis(#[from] redis::RedisError),
}

struct ConnState {
    conn: Option<redis::aio::MultiplexedConnection>,
    connecting: bool,
    retry_at: Option<Instant>,
    backoff: Duration,
}

struct RedisConn {
    client: redis::Client,
    response_timeout: Duration,
    state: Mutex<ConnState>,
    /// Mirrors `state.retry_at.is_some()` so the success path only locks after a failure.
    backing_off: AtomicBool,
}

impl RedisConn {
    async fn open(&self) -> Result<redis::aio::MultiplexedConnection, redis::RedisError> {
        let cfg = redis::AsyncConnectionConfig::new()
            .set_connection_timeout(CONNECT_TIMEOUT)
            .set_response_timeout(self.response_timeout);
        self.client
            .get_multiplexed_async_connection_with_config(&cfg)
            .await
    }

    fn store(&self, result: Result<redis::aio::MultiplexedConnection, &redis::RedisError>) {
        let mut st = lock(&self.state);
        st.connecting = false;
        match result {
            Ok(c) => {
                st.conn = Some(c);
                st.retry_at = None;
                st.backoff = MIN_BACKOFF;
                self.backing_off.store(false, Ordering::Relaxed);
            }
            Err(_) => {
                st.retry_at = Some(Instant::now() + st.backoff);
                st.backoff = (st.backoff * 2).min(MAX_BACKOFF);
                self.backing_off.store(true, Ordering::Relaxed);
            }
        }
    }

    /// The live connection, or None (caller falls back). After any failure Redis is skipped for an
    /// exponentially growing pause (0.5 s … 30 s), so a dead or hung Redis costs nothing per request;
    /// without a connection at most one background reconnect runs at a time.
    fn get(self: &Arc<Self>) -> Option<redis::aio::MultiplexedConnection> {
        let mut st = lock(&self.state);
        if st.retry_at.is_some_and(|t| Instant::now() < t) {
            return None;
        }
        if let Some(c) = &st.conn {
            return Some(c.clone());
        }
        if st.connecting {
            return None;
        }
        let handle = tokio::runtime::Handle::try_current().ok()?;
        st.connecting = true;
        drop(st);
        let me = Arc::clone(self);
        handle.spawn(async move {
            let r = me.open().await;
            me.store(r.as_ref().map(Clone::clone));
        });
        None
    }

    fn failed(&self, drop_conn: bool) {
        let mut st = lock(&self.state);
        if drop_conn {
            st.conn = None;
        }
        st.retry_at = Some(Instant::now() + st.backoff);
        st.backoff = (st.backoff * 2).min(MAX_BACKOFF);
        self.backing_off.store(true, Ordering::Relaxed);
    }

    fn succeeded(&self) {
        if self.backing_off.swap(false, Ordering::Relaxed) {
            let mut st = lock(&self.state);
            st.retry_at = None;
            st.backoff = MIN_BACKOFF;
        }
    }
}

const HEALTH_UNKNOWN: u8 = 0;
const HEALTH_OK: u8 = 1;
const HEALTH_DOWN: u8 = 2;

/// Rate limiter shared across replicas through Redis (≥ 5; one Lua script call per check, EVALSHA with
/// EVAL fallback). While Redis is unreachable or slower than `redis_timeout_ms`, `redis_fail: open`
/// (default) decides with the in-process limiter (per-replica limits; `Decision::degraded` is set) and
/// `closed` refuses with 429. Transitions are logged once; [`is_healthy`](Self::is_healthy) and
/// [`fallbacks_total`](Self::fallbacks_total) feed metrics.
pub struct SharedRateLimiter {
    local: RateLimiter,
    redis: Arc<RedisConn>,
    script: redis::Script,
    prefix: String,
    fail: RedisFailMode,
    timeout: Duration,
    health: AtomicU8,
    fallbacks: AtomicU64,
}

impl std::fmt::Debug for SharedRateLimiter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SharedRateLimiter")
            .field("prefix", &self.prefix)
            .field("healthy", &self.is_healthy())
            .finish_non_exhaustive()
    }
}

impl SharedRateLimiter {
    /// Requires `limits.redis_url`. Does not connect; the first check starts a background connect
    /// (call [`connect`](Self::connect) at startup to have Redis ready for the first request).
    pub fn new(cfg: &LimitsConfig) -> Result<SharedRateLimiter, ConfigError> {
        let local = RateLimiter::new(cfg)?;
        let url = cfg.redis_url.as_deref().ok_or_else(|| {
            ConfigError::new("limits.redis_url", "required for the shared limiter")
        })?;
        // The parse error may quote the URL; report without it (it can hold a password).
        let client = redis::Client::open(url)
            .map_err(|_| ConfigError::new("limits.redis_url", "invalid Redis URL"))?;
        let timeout = Duration::from_millis(cfg.redis_timeout_ms);
        Ok(SharedRateLimiter {
            local,
            redis: Arc::new(RedisConn {
                client,
                response_timeout: timeout,
                state: Mutex::new(ConnState {
                    conn: None,
                    connecting: false,
                    retry_at: None,
                    backoff: MIN_BACKOFF,
                }),
                backing_off: AtomicBool::new(false),
            }),
            script: redis::Script::new(BUCKET_LUA),
            prefix: cfg.redis_prefix.clone(),
            fail: cfg.redis_fail,
            timeout,
            health: AtomicU8::new(HEALTH_UNKNOWN),
            fallbacks: AtomicU64::new(0),
        })
    }

    /// Connect now (startup). On error the limiter still works (fallback) and keeps retrying.
    pub async fn connect(&self) -> Result<(), RedisLimiterError> {
        let r = self.redis.open().await;
        self.redis.store(r.as_ref().map(Clone::clone));
        match r {
            Ok(_) => {
                self.mark_ok();
                Ok(())
            }
            Err(e) => {
                let e = RedisLimiterError::from(e);
                self.mark_down(&e);
                Err(e)
            }
        }
    }

    /// Apply new limits (config reload). Redis settings need a new limiter.
    pub fn update_limits(&self, cfg: &LimitsConfig) -> Result<(), ConfigError> {
        self.local.update_limits(cfg)
    }

    /// The in-process fallback limiter.
    pub fn local(&self) -> &RateLimiter {
        &self.local
    }

    /// Whether the last Redis call succeeded.
    pub fn is_healthy(&self) -> bool {
        self.health.load(Ordering::Relaxed) == HEALTH_OK
    }

    /// Decisions taken without Redis so far.
    pub fn fallbacks_total(&self) -> u64 {
        self.fallbacks.load(Ordering::Relaxed)
    }

    pub fn is_limited(&self, caller: &str) -> bool {
        self.local.is_limited(caller)
    }

    fn mark_ok(&self) {
        if self.health.swap(HEALTH_OK, Ordering::Relaxed) == HEALTH_DOWN {
            tracing::info!("redis rate limiter reachable again; limits are shared across replicas");
        }
    }

    fn mark_down(&self, e: &RedisLimiterError) {
        if self.health.swap(HEALTH_DOWN, Ordering::Relaxed) != HEALTH_DOWN {
            let mode = match self.fail {
                RedisFailMode::Open => "falling back to per-replica in-process limits",
                RedisFailMode::Closed => "rejecting rate-limited callers (redis_fail: closed)",
            };
            tracing::warn!(error = %e, "redis rate limiter unavailable; {mode}");
        }
    }

    async fn eval(
        &self,
        caller: &str,
        l: &Resolved,
        tokens: u64,
        debit_only: bool,
    ) -> Result<(bool, f64, f64), RedisLimiterError> {
        let mut conn = self.redis.get().ok_or(RedisLimiterError::Unavailable)?;
        let mut key = String::with_capacity(self.prefix.len() + caller.len());
        key.push_str(&self.prefix);
        key.push_str(caller);
        let mut inv = self.script.key(key);
        inv.arg(l.rpm)
            .arg(l.tpm)
            .arg(tokens)
            .arg(u8::from(debit_only))
            .arg(KEY_TTL_MS);
        match tokio::time::timeout(self.timeout, inv.invoke_async::<(i64, i64, i64)>(&mut conn))
            .await
        {
            Err(_) => {
                self.redis.failed(false);
                Err(RedisLimiterError::Timeout)
            }
            Ok(Err(e)) => {
                // A server error reply (has a code) leaves the connection usable; anything else is
                // transport trouble: drop it and reconnect.
                self.redis
                    .failed(e.code().is_none() || e.is_io_error() || e.is_connection_dropped());
                Err(e.into())
            }
            Ok(Ok((ok, r, t))) => {
                self.redis.succeeded();
                Ok((ok == 1, r as f64 / 1000.0, t as f64 / 1000.0))
            }
        }
    }

    /// Same contract as [`RateLimiter::check`], enforced across every replica sharing the Redis.
    pub async fn check(&self, caller: &str, estimated_prompt_tokens: u64) -> Decision {
        let Some(l) = self.local.limit_for(caller) else {
            return Decision::unlimited();
        };
        match self.eval(caller, &l, estimated_prompt_tokens, false).await {
            Ok((allowed, r, t)) => {
                self.mark_ok();
                build_decision(&l, r, t, allowed, estimated_prompt_tokens as f64)
            }
            Err(e) => {
                self.fallbacks.fetch_add(1, Ordering::Relaxed);
                self.mark_down(&e);
                match self.fail {
                    RedisFailMode::Open => {
                        let mut d = self.local.check(caller, estimated_prompt_tokens);
                        d.degraded = true;
                        d
                    }
                    RedisFailMode::Closed => Decision::unavailable(),
                }
            }
        }
    }

    /// Same contract as [`RateLimiter::record_completion`].
    pub async fn record_completion(&self, caller: &str, completion_tokens: u64) {
        let Some(l) = self.local.limit_for(caller) else {
            return;
        };
        if l.tok.is_none() {
            return;
        }
        if let Err(e) = self.eval(caller, &l, completion_tokens, true).await {
            self.mark_down(&e);
            self.local.record_completion(caller, completion_tokens);
        } else {
            self.mark_ok();
        }
    }
}

/// The limiter the proxy uses: in-process, or shared through Redis when `limits.redis_url` is set.
#[derive(Debug)]
pub enum Limiter {
    Local(RateLimiter),
    Shared(SharedRateLimiter),
}

impl Limiter {
    pub fn from_config(cfg: &LimitsConfig) -> Result<Limiter, ConfigError> {
        if cfg.redis_url.is_some() {
            Ok(Limiter::Shared(SharedRateLimiter::new(cfg)?))
        } else {
            Ok(Limiter::Local(RateLimiter::new(cfg)?))
        }
    }

    pub fn is_limited(&self, caller: &str) -> bool {
        match self {
            Limiter::Local(l) => l.is_limited(caller),
            Limiter::Shared(s) => s.is_limited(caller),
        }
    }

    pub async fn check(&self, caller: &str, estimated_prompt_tokens: u64) -> Decision {
        match self {
            Limiter::Local(l) => l.check(caller, estimated_prompt_tokens),
            Limiter::Shared(s) => s.check(caller, estimated_prompt_tokens).await,
        }
    }

    pub async fn record_completion(&self, caller: &str, completion_tokens: u64) {
        match self {
            Limiter::Local(l) => l.record_completion(caller, completion_tokens),
            Limiter::Shared(s) => s.record_completion(caller, completion_tokens).await,
        }
    }

    pub fn update_limits(&self, cfg: &LimitsConfig) -> Result<(), ConfigError> {
        match self {
            Limiter::Local(l) => l.update_limits(cfg),
            Limiter::Shared(s) => s.update_limits(cfg),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::upstream::breaker::FakeClock;

    fn cfg(rpm: Option<u32>, tpm: Option<u32>) -> LimitsConfig {
        LimitsConfig {
            default: Some(Limit { rpm, tpm }),
            ..LimitsConfig::default()
        }
    }

    fn header<'a>(d: &'a Decision, name: &str) -> &'a str {
        d.headers
            .iter()
            .find(|(k, _)| *k == name)
            .map(|(_, v)| v.as_str())
            .unwrap_or_else(|| panic!("no {name}"))
    }

    #[test]
    fn estimate_is_quarter_of_bytes_rounded_up() {
        assert_eq!(estimate_prompt_tokens(0), 0);
        assert_eq!(estimate_prompt_tokens(1), 1);
        assert_eq!(estimate_prompt_tokens(4), 1);
        assert_eq!(estimate_prompt_tokens(2048), 512);
    }

    #[test]
    fn reset_format_like_openai() {
        for (ms, want) in [
            (0, "0s"),
            (20, "20ms"),
            (999, "999ms"),
            (1_000, "1s"),
            (1_500, "1.5s"),
            (59_886, "59.886s"),
            (60_000, "1m0s"),
            (360_000, "6m0s"),
            (3_600_000, "1h0m0s"),
            (3_723_040, "1h2m3.04s"),
        ] {
            assert_eq!(format_reset(ms), want);
        }
    }

    #[test]
    fn unlimited_without_config() {
        let rl = RateLimiter::new(&LimitsConfig::default()).unwrap();
        let d = rl.check("anyone", 1_000_000);
        assert!(d.allowed && d.headers.is_empty());
        assert_eq!(rl.tracked_callers(), 0, "no state for unlimited callers");
    }

    #[test]
    fn rpm_bucket_refills_continuously() {
        let clock = FakeClock::new(0);
        let rl = RateLimiter::with_clock(&cfg(Some(60), None), clock.clone()).unwrap();
        for i in 0..60 {
            let d = rl.check("a", 0);
            assert!(d.allowed, "request {i}");
            assert_eq!(
                header(&d, "x-ratelimit-remaining-requests"),
                (59 - i).to_string()
            );
        }
        let d = rl.check("a", 0);
        assert!(!d.allowed);
        assert_eq!(d.limited_by, Some(LimitKind::Requests));
        assert_eq!(d.retry_after, Duration::from_secs(1)); // 60/min = one per second
        assert_eq!(d.retry_after_secs(), 1);
        assert_eq!(header(&d, "x-ratelimit-limit-requests"), "60");
        assert_eq!(header(&d, "x-ratelimit-reset-requests"), "1m0s");
        assert!(d.headers.iter().all(|(k, _)| !k.ends_with("tokens")));
        clock.advance(Duration::from_millis(999));
        assert!(!rl.check("a", 0).allowed);
        clock.advance(Duration::from_millis(1));
        assert!(rl.check("a", 0).allowed, "exactly one token refilled");
        assert!(!rl.check("a", 0).allowed);
        // Other callers have their own bucket.
        assert!(rl.check("b", 0).allowed);
        // Refill caps at capacity.
        clock.advance(Duration::from_secs(3600));
        let d = rl.check("a", 0);
        assert_eq!(header(&d, "x-ratelimit-remaining-requests"), "59");
        assert_eq!(header(&d, "x-ratelimit-reset-requests"), "1s");
    }

    #[test]
    fn rpm_and_tpm_together() {
        let clock = FakeClock::new(0);
        let rl = RateLimiter::with_clock(&cfg(Some(10), Some(1_000)), clock.clone()).unwrap();
        let d = rl.check("a", 600);
        assert!(d.allowed);
        assert_eq!(header(&d, "x-ratelimit-remaining-tokens"), "400");
        assert_eq!(header(&d, "x-ratelimit-remaining-requests"), "9");
        assert_eq!(header(&d, "x-ratelimit-reset-tokens"), "36s"); // 600 tokens at 1000/min
        assert_eq!(header(&d, "x-ratelimit-reset-requests"), "6s");
        // Tokens short: refused, nothing debited (requests stay at 9).
        let d = rl.check("a", 500);
        assert!(!d.allowed);
        assert_eq!(d.limited_by, Some(LimitKind::Tokens));
        assert_eq!(d.retry_after, Duration::from_secs(6)); // 100 tokens missing at 1000/min
        assert_eq!(d.error_type(), "tokens");
        assert_eq!(header(&d, "x-ratelimit-remaining-requests"), "9");
        // Completion tokens debited after the fact → debt.
        rl.record_completion("a", 900);
        let d = rl.check("a", 1);
        assert!(!d.allowed);
        assert_eq!(header(&d, "x-ratelimit-remaining-tokens"), "0");
        assert_eq!(d.retry_after, Duration::from_millis(30_060)); // from −500 to +1
        clock.advance(Duration::from_millis(30_060));
        assert!(rl.check("a", 1).allowed);
    }

    #[test]
    fn oversized_estimate_needs_full_bucket_and_debt_is_bounded() {
        let clock = FakeClock::new(0);
        let rl = RateLimiter::with_clock(&cfg(None, Some(100)), clock.clone()).unwrap();
        assert!(
            rl.check("a", 10_000).allowed,
            "full bucket admits one oversized request"
        );
        let d = rl.check("a", 1);
        assert!(!d.allowed);
        // Debt bounded at −capacity: 101 tokens to earn at 100/min.
        assert_eq!(d.retry_after, Duration::from_millis(60_600));
        rl.record_completion("a", 1_000_000);
        assert_eq!(rl.check("a", 1).retry_after, Duration::from_millis(60_600));
    }

    #[test]
    fn requests_limit_wins_when_longer() {
        let clock = FakeClock::new(0);
        let rl = RateLimiter::with_clock(&cfg(Some(1), Some(1_000_000)), clock).unwrap();
        assert!(rl.check("a", 10).allowed);
        let d = rl.check("a", 10);
        assert_eq!(
            (d.allowed, d.limited_by),
            (false, Some(LimitKind::Requests))
        );
        assert_eq!(d.retry_after, Duration::from_secs(60));
        assert!(d.message().contains("requests per minute") && d.message().contains("1m0s"));
    }

    #[test]
    fn per_caller_overrides_default_and_reload_keeps_state() {
        let mut c = cfg(Some(1), None);
        c.callers.insert(
            "vip".into(),
            Limit {
                rpm: Some(3),
                tpm: None,
            },
        );
        c.callers.insert("free".into(), Limit::default()); // explicitly unlimited
        let clock = FakeClock::new(0);
        let rl = RateLimiter::with_clock(&c, clock).unwrap();
        assert!(rl.check("x", 0).allowed);
        assert!(!rl.check("x", 0).allowed);
        for _ in 0..3 {
            assert!(rl.check("vip", 0).allowed);
        }
        assert!(!rl.check("vip", 0).allowed);
        for _ in 0..100 {
            assert!(rl.check("free", 0).allowed);
        }
        c.default = Some(Limit {
            rpm: Some(5),
            tpm: None,
        });
        rl.update_limits(&c).unwrap();
        assert!(!rl.check("x", 0).allowed, "bucket state survives reload");
    }

    #[test]
    fn memory_is_bounded() {
        let clock = FakeClock::new(0);
        let mut c = cfg(Some(10), None);
        c.max_callers = 64;
        let rl = RateLimiter::with_clock(&c, clock.clone()).unwrap();
        for i in 0..10_000 {
            rl.check(&format!("caller-{i}"), 0);
            if i % 100 == 0 {
                clock.advance(Duration::from_millis(10));
            }
        }
        assert!(
            rl.tracked_callers() <= 64 + SHARDS,
            "{}",
            rl.tracked_callers()
        );
        // Idle (hence full) buckets are dropped first without changing behaviour.
        clock.advance(Duration::from_secs(600));
        assert!(rl.check("new", 0).allowed);
    }

    proptest::proptest! {
        /// Whatever the arrival pattern, admitted requests never exceed burst + refill, and admitted
        /// estimated tokens never exceed burst + refill + one oversized request.
        #[test]
        fn never_admits_more_than_the_bucket_allows(
            ops in proptest::collection::vec((0u64..5_000, 0u64..400), 1..300)
        ) {
            let clock = FakeClock::new(0);
            let rl = RateLimiter::with_clock(&cfg(Some(30), Some(2_000)), clock.clone()).unwrap();
            let (mut reqs, mut toks, mut elapsed, mut largest) = (0u64, 0u64, 0u64, 0u64);
            for (advance, est) in ops {
                clock.advance(Duration::from_millis(advance));
                elapsed += advance;
                let d = rl.check("p", est);
                if d.allowed {
                    reqs += 1;
                    toks += est;
                    largest = largest.max(est);
                } else {
                    proptest::prop_assert!(d.retry_after > Duration::ZERO);
                }
            }
            let refill_r = 30.0 * elapsed as f64 / 60_000.0;
            let refill_t = 2_000.0 * elapsed as f64 / 60_000.0;
            proptest::prop_assert!(reqs as f64 <= 30.0 + refill_r + 1e-6, "{} reqs in {} ms", reqs, elapsed);
            proptest::prop_assert!(toks as f64 <= 2_000.0 + refill_t + largest as f64 + 1e-6);
        }
    }

    #[tokio::test]
    async fn limiter_enum_dispatches() {
        let l = Limiter::from_config(&cfg(Some(1), None)).unwrap();
        assert!(matches!(l, Limiter::Local(_)));
        assert!(l.is_limited("x"));
        assert!(l.check("x", 0).await.allowed);
        assert!(!l.check("x", 0).await.allowed);
        l.record_completion("x", 10).await;
        let mut c = cfg(Some(1), None);
        c.redis_url = Some("redis://127.0.0.1:1/".into());
        assert!(matches!(
            Limiter::from_config(&c).unwrap(),
            Limiter::Shared(_)
        ));
    }

    #[test]
    fn decision_helpers() {
        let d = Decision {
            retry_after: Duration::from_millis(1_001),
            ..Decision::unavailable()
        };
        assert_eq!(d.retry_after_secs(), 2);
        assert_eq!(Decision::unlimited().retry_after_secs(), 1);
        assert!(Decision::unavailable().message().contains("unavailable"));
    }

    #[tokio::test]
    async fn shared_limiter_falls_back_when_redis_is_down() {
        // A port nobody listens on.
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let mut c = cfg(Some(2), None);
        c.redis_url = Some(format!("redis://127.0.0.1:{port}/"));
        let open = SharedRateLimiter::new(&c).unwrap();
        assert!(open.connect().await.is_err());
        let d = open.check("a", 0).await;
        assert!(d.allowed && d.degraded);
        assert!(open.check("a", 0).await.allowed);
        assert!(
            !open.check("a", 0).await.allowed,
            "local limiter still enforces per replica"
        );
        assert_eq!(open.fallbacks_total(), 3);
        assert!(!open.is_healthy());

        c.redis_fail = RedisFailMode::Closed;
        let closed = SharedRateLimiter::new(&c).unwrap();
        let d = closed.check("a", 0).await;
        assert!(!d.allowed && d.degraded);
        assert_eq!(d.retry_after_secs(), 1);
        // Unlimited callers never touch Redis.
        c.default = None;
        let none = SharedRateLimiter::new(&c).unwrap();
        assert!(none.check("a", 0).await.allowed);
        assert_eq!(none.fallbacks_total(), 0);
    }

    #[test]
    fn invalid_redis_url_error_hides_password() {
        let c = LimitsConfig {
            redis_url: Some("redis://:s3cret@host:notaport".into()),
            ..LimitsConfig::default()
        };
        let e = SharedRateLimiter::new(&c).unwrap_err();
        assert!(!e.to_string().contains("s3cret"), "{e}");
    }

    /// A throwaway redis-server on a free loopback port, killed on drop.
    struct RedisServer {
        child: std::process::Child,
        port: u16,
        _dir: tempfile::TempDir,
    }

    impl RedisServer {
        fn start() -> Option<RedisServer> {
            let port = std::net::TcpListener::bind("127.0.0.1:0")
                .unwrap()
                .local_addr()
                .unwrap()
                .port();
            Self::start_on(port)
        }

        fn start_on(port: u16) -> Option<RedisServer> {
            let bin = std::path::Path::new("/usr/bin/redis-server");
            let bin = if bin.exists() {
                bin.to_path_buf()
            } else {
                let found = std::env::var_os("PATH").and_then(|p| {
                    std::env::split_paths(&p)
                        .map(|d| d.join("redis-server"))
                        .find(|c| c.exists())
                });
                match found {
                    Some(b) => b,
                    None => {
                        eprintln!(
                            "NOTICE: redis-server not installed; skipping the shared limiter test"
                        );
                        return None;
                    }
                }
            };
            let dir = tempfile::tempdir().unwrap();
            let child = std::process::Command::new(bin)
                .args([
                    "--port",
                    &port.to_string(),
                    "--bind",
                    "127.0.0.1",
                    "--save",
                    "",
                    "--appendonly",
                    "no",
                ])
                .current_dir(dir.path())
                .stdout(std::process::Stdio::null())
                .spawn()
                .expect("spawn redis-server");
            let server = RedisServer {
                child,
                port,
                _dir: dir,
            };
            let deadline = Instant::now() + Duration::from_secs(10);
            while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
                assert!(Instant::now() < deadline, "redis-server did not start");
                std::thread::sleep(Duration::from_millis(20));
            }
            Some(server)
        }
    }

    impl Drop for RedisServer {
        fn drop(&mut self) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn two_replicas_share_one_limit_through_redis() {
        let Some(server) = RedisServer::start() else {
            return;
        };
        let mut c = cfg(Some(5), Some(10_000));
        c.redis_url = Some(format!("redis://127.0.0.1:{}/", server.port));
        c.redis_prefix = format!("jimini:test:{}:", std::process::id());
        c.redis_timeout_ms = 2_000; // CI machines are slow; this test is about sharing, not latency
        let a = SharedRateLimiter::new(&c).unwrap();
        let b = SharedRateLimiter::new(&c).unwrap();
        a.connect().await.unwrap();
        b.connect().await.unwrap();

        let mut allowed = 0;
        for i in 0..10 {
            let lim = if i % 2 == 0 { &a } else { &b };
            let d = lim.check("alice", 10).await;
            assert!(!d.degraded, "redis path used");
            if d.allowed {
                allowed += 1;
                assert_eq!(
                    header(&d, "x-ratelimit-remaining-requests"),
                    (5 - allowed).to_string()
                );
            } else {
                assert_eq!(d.limited_by, Some(LimitKind::Requests));
                assert!(
                    d.retry_after > Duration::from_secs(10)
                        && d.retry_after <= Duration::from_secs(12),
                    "{:?}",
                    d.retry_after
                );
            }
        }
        assert_eq!(allowed, 5, "both replicas together admit exactly the limit");
        assert!(a.is_healthy() && b.is_healthy());
        assert_eq!(a.fallbacks_total() + b.fallbacks_total(), 0);

        // Tokens: one replica's completion debit is seen by the other.
        let d = a.check("bob", 1_000).await;
        assert_eq!(header(&d, "x-ratelimit-remaining-tokens"), "9000");
        b.record_completion("bob", 8_500).await;
        let d = a.check("bob", 1_000).await;
        assert!(!d.allowed);
        assert_eq!(d.limited_by, Some(LimitKind::Tokens));

        // Keys carry a TTL.
        let client = redis::Client::open(format!("redis://127.0.0.1:{}/", server.port)).unwrap();
        let mut conn = client.get_multiplexed_async_connection().await.unwrap();
        let ttl: i64 = redis::cmd("PTTL")
            .arg(format!("{}alice", c.redis_prefix))
            .query_async(&mut conn)
            .await
            .unwrap();
        assert!(ttl > 0 && ttl <= KEY_TTL_MS as i64, "ttl {ttl}");

        // Redis goes away: fail-open to the local limiter, reported as degraded/unhealthy.
        let port = server.port;
        drop(server);
        let d = a.check("carol", 1).await;
        assert!(d.allowed && d.degraded);
        assert!(!a.is_healthy());
        assert!(a.fallbacks_total() >= 1);

        // Redis comes back: the limiter reconnects in the background (backoff) and shares again.
        let _server = RedisServer::start_on(port).unwrap();
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let d = a.check("dave", 1).await;
            if !d.degraded {
                break;
            }
            assert!(Instant::now() < deadline, "limiter did not reconnect");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        assert!(a.is_healthy());
    }
}
