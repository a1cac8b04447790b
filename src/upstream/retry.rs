//! Retry policy pieces: full-jitter exponential backoff, a retry budget that stops retries from
//! amplifying an outage, `Retry-After` parsing (seconds or HTTP-date) and which failures are safe to
//! retry. The glue only retries before anything was sent to the client.

use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use rand::Rng;
use serde::Serialize;

use super::breaker::Clock;
use super::config::RetryConfig;

/// Full-jitter exponential backoff: retry `n` (0-based) sleeps a uniform random time in
/// `[0, min(max, base · 2ⁿ)]` (AWS "full jitter": spreads synchronized clients best).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Backoff {
    base_ms: u64,
    max_ms: u64,
}

impl Backoff {
    pub fn new(base: Duration, max: Duration) -> Backoff {
        let base_ms = u64::try_from(base.as_millis()).unwrap_or(u64::MAX).max(1);
        let max_ms = u64::try_from(max.as_millis())
            .unwrap_or(u64::MAX)
            .max(base_ms);
        Backoff { base_ms, max_ms }
    }

    pub fn from_config(cfg: &RetryConfig) -> Backoff {
        Backoff::new(
            Duration::from_millis(cfg.base_ms),
            Duration::from_millis(cfg.max_ms),
        )
    }

    /// Upper bound of the delay before retry `attempt` (0-based).
    pub fn cap(&self, attempt: u32) -> Duration {
        let ms = 1u64
            .checked_shl(attempt)
            .and_then(|f| self.base_ms.checked_mul(f))
            .map_or(self.max_ms, |v| v.min(self.max_ms));
        Duration::from_millis(ms)
    }

    /// Jittered delay before retry `attempt` (0-based), in `[0, cap(attempt)]`.
    pub fn delay<R: Rng + ?Sized>(&self, attempt: u32, rng: &mut R) -> Duration {
        let cap = u64::try_from(self.cap(attempt).as_millis()).unwrap_or(u64::MAX);
        Duration::from_millis(rng.random_range(0..=cap))
    }
}

const BUDGET_BUCKETS: usize = 10;
const BUDGET_BUCKET_MS: u64 = 1_000;

#[derive(Clone, Copy, Debug, Default)]
struct BudgetBucket {
    slot: u64,
    deposits: u64,
    withdrawals: u64,
}

/// Retry budget over a sliding 10 s window (ten 1 s buckets): retries allowed in the window =
/// `budget_ratio × requests + budget_min_per_sec × 10 − retries already made`. Call [`deposit`] once
/// per client request (not per attempt) and [`try_withdraw`] before each retry. Old deposits expire
/// with the window, so a long quiet period cannot bank a retry storm.
///
/// [`deposit`]: RetryBudget::deposit
/// [`try_withdraw`]: RetryBudget::try_withdraw
pub struct RetryBudget {
    ratio: f64,
    min_per_sec: u32,
    clock: Arc<dyn Clock>,
    buckets: Mutex<[BudgetBucket; BUDGET_BUCKETS]>,
}

impl std::fmt::Debug for RetryBudget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RetryBudget")
            .field("ratio", &self.ratio)
            .field("min_per_sec", &self.min_per_sec)
            .finish_non_exhaustive()
    }
}

impl RetryBudget {
    pub fn new(ratio: f64, min_per_sec: u32, clock: Arc<dyn Clock>) -> RetryBudget {
        RetryBudget {
            ratio: if ratio.is_finite() {
                ratio.max(0.0)
            } else {
                0.0
            },
            min_per_sec,
            clock,
            buckets: Mutex::new([BudgetBucket::default(); BUDGET_BUCKETS]),
        }
    }

    pub fn from_config(cfg: &RetryConfig, clock: Arc<dyn Clock>) -> RetryBudget {
        RetryBudget::new(cfg.budget_ratio, cfg.budget_min_per_sec, clock)
    }

    fn with_current<T>(
        &self,
        f: impl FnOnce(&mut [BudgetBucket; BUDGET_BUCKETS], usize) -> T,
    ) -> T {
        let slot = self.clock.now_ms() / BUDGET_BUCKET_MS;
        // Only counters live behind the lock; a poisoned lock still holds valid counters.
        let mut buckets = self.buckets.lock().unwrap_or_else(|e| e.into_inner());
        let idx = (slot % BUDGET_BUCKETS as u64) as usize;
        // Expire every bucket that fell out of the window (not only the current one), so totals
        // never include stale slots.
        for b in buckets.iter_mut() {
            if b.slot + (BUDGET_BUCKETS as u64) <= slot {
                *b = BudgetBucket::default();
            }
        }
        if buckets[idx].slot != slot {
            buckets[idx] = BudgetBucket {
                slot,
                deposits: 0,
                withdrawals: 0,
            };
        }
        f(&mut buckets, idx)
    }

    fn available_in(&self, buckets: &[BudgetBucket; BUDGET_BUCKETS]) -> f64 {
        let (dep, wd) = buckets.iter().fold((0u64, 0u64), |(d, w), b| {
            (d + b.deposits, w + b.withdrawals)
        });
        self.ratio * dep as f64 + f64::from(self.min_per_sec) * BUDGET_BUCKETS as f64 - wd as f64
    }

    /// One client request arrived.
    pub fn deposit(&self) {
        self.with_current(|b, i| b[i].deposits += 1);
    }

    /// Take one retry from the budget; false = budget exhausted, do not retry.
    pub fn try_withdraw(&self) -> bool {
        self.with_current(|b, i| {
            if self.available_in(b) >= 1.0 {
                b[i].withdrawals += 1;
                true
            } else {
                false
            }
        })
    }

    /// Retries currently available (for the admin API).
    pub fn available(&self) -> f64 {
        self.with_current(|b, _| self.available_in(b)).max(0.0)
    }
}

/// Whether an upstream status may be retried: 502, 503, 504, and 429 when `retry_429`.
/// (500 is not: the request may have been processed.)
pub fn is_retryable_status(status: u16, retry_429: bool) -> bool {
    matches!(status, 502..=504) || (retry_429 && status == 429)
}

/// Parse a `Retry-After` value: delay-seconds (`"120"`, also a non-negative decimal such as `"1.5"`)
/// or an HTTP-date (IMF-fixdate, RFC 850 or asctime). A date in the past gives zero.
pub fn parse_retry_after(value: &str) -> Option<Duration> {
    parse_retry_after_at(value, SystemTime::now())
}

/// [`parse_retry_after`] relative to `now` (testable).
pub fn parse_retry_after_at(value: &str, now: SystemTime) -> Option<Duration> {
    let v = value.trim();
    if v.is_empty() {
        return None;
    }
    if v.bytes().all(|b| b.is_ascii_digit() || b == b'.') {
        let secs: f64 = v.parse().ok()?;
        return (0.0..1e9)
            .contains(&secs)
            .then(|| Duration::from_secs_f64(secs));
    }
    const FORMATS: [&str; 3] = [
        "%a, %d %b %Y %H:%M:%S GMT", // IMF-fixdate (preferred)
        "%A, %d-%b-%y %H:%M:%S GMT", // RFC 850
        "%a %b %e %H:%M:%S %Y",      // asctime
    ];
    let at = FORMATS
        .iter()
        .find_map(|f| chrono::NaiveDateTime::parse_from_str(v, f).ok())?
        .and_utc();
    let at: SystemTime = at.into();
    Some(at.duration_since(now).unwrap_or(Duration::ZERO))
}

/// Parse OpenAI's `retry-after-ms` header (milliseconds, possibly fractional).
pub fn parse_retry_after_ms(value: &str) -> Option<Duration> {
    let ms: f64 = value.trim().parse().ok()?;
    (0.0..1e12)
        .contains(&ms)
        .then(|| Duration::from_secs_f64(ms / 1000.0))
}

/// What went wrong with an attempt, as far as retrying is concerned.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RetryCause {
    /// Connection could not be established (nothing reached the upstream): always safe to retry.
    Connect,
    /// The upstream answered with this status before anything was sent to the client.
    Status {
        status: u16,
        retry_after: Option<Duration>,
    },
    /// Timeout after the request was sent: the upstream may be processing it, never retried.
    Timeout,
}

/// Why no retry happens (metrics label).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum GiveUp {
    NotRetryable,
    AttemptsExhausted,
    RetryAfterTooLong,
    BudgetExhausted,
}

impl GiveUp {
    pub fn as_str(self) -> &'static str {
        match self {
            GiveUp::NotRetryable => "not_retryable",
            GiveUp::AttemptsExhausted => "attempts_exhausted",
            GiveUp::RetryAfterTooLong => "retry_after_too_long",
            GiveUp::BudgetExhausted => "budget_exhausted",
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RetryDecision {
    /// Sleep this long, then try again.
    Retry(Duration),
    GiveUp(GiveUp),
}

/// Per-upstream retry policy (from [`RetryConfig`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RetryPolicy {
    pub max_attempts: u32,
    pub backoff: Backoff,
    pub retry_after_cap: Duration,
    pub retry_429: bool,
}

impl RetryPolicy {
    pub fn from_config(cfg: &RetryConfig) -> RetryPolicy {
        RetryPolicy {
            max_attempts: cfg.max_attempts,
            backoff: Backoff::from_config(cfg),
            retry_after_cap: Duration::from_millis(cfg.retry_after_cap_ms),
            retry_429: cfg.retry_429,
        }
    }

    /// Decide about retry number `retries_done` (0 for the first retry). Only consumes budget when
    /// the answer is `Retry`. A `Retry-After` longer than the cap means give up (the client gets the
    /// upstream's answer and its Retry-After); a shorter one is waited out (at least the backoff).
    pub fn decide<R: Rng + ?Sized>(
        &self,
        retries_done: u32,
        cause: RetryCause,
        budget: &RetryBudget,
        rng: &mut R,
    ) -> RetryDecision {
        let retry_after = match cause {
            RetryCause::Connect => None,
            RetryCause::Timeout => return RetryDecision::GiveUp(GiveUp::NotRetryable),
            RetryCause::Status {
                status,
                retry_after,
            } => {
                if !is_retryable_status(status, self.retry_429) {
                    return RetryDecision::GiveUp(GiveUp::NotRetryable);
                }
                retry_after
            }
        };
        if retries_done >= self.max_attempts {
            return RetryDecision::GiveUp(GiveUp::AttemptsExhausted);
        }
        if retry_after.is_some_and(|ra| ra > self.retry_after_cap) {
            return RetryDecision::GiveUp(GiveUp::RetryAfterTooLong);
        }
        if !budget.try_withdraw() {
            return RetryDecision::GiveUp(GiveUp::BudgetExhausted);
        }
        let jitter = self.backoff.delay(retries_done, rng);
        RetryDecision::Retry(retry_after.map_or(jitter, |ra| ra.max(jitter)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::upstream::breaker::FakeClock;
    use rand::rngs::StdRng;
    use rand::SeedableRng;

    #[test]
    fn backoff_caps_grow_and_saturate() {
        let b = Backoff::new(Duration::from_millis(100), Duration::from_millis(2_000));
        let caps: Vec<u64> = (0..7).map(|a| b.cap(a).as_millis() as u64).collect();
        assert_eq!(caps, [100, 200, 400, 800, 1600, 2000, 2000]);
        assert_eq!(b.cap(64), Duration::from_millis(2_000));
        assert_eq!(b.cap(u32::MAX), Duration::from_millis(2_000));
    }

    #[test]
    fn backoff_delay_within_bounds_and_jittered() {
        let b = Backoff::new(Duration::from_millis(100), Duration::from_millis(2_000));
        let mut rng = StdRng::seed_from_u64(7);
        for attempt in 0..10 {
            let cap = b.cap(attempt);
            let samples: Vec<Duration> = (0..2_000).map(|_| b.delay(attempt, &mut rng)).collect();
            assert!(samples.iter().all(|d| *d <= cap));
            let mean = samples.iter().map(|d| d.as_secs_f64()).sum::<f64>() / samples.len() as f64;
            // Uniform on [0, cap] → mean ≈ cap/2.
            assert!(
                (mean - cap.as_secs_f64() / 2.0).abs() < cap.as_secs_f64() * 0.05,
                "attempt {attempt}"
            );
            assert!(
                samples.iter().any(|d| *d < cap / 4) && samples.iter().any(|d| *d > cap * 3 / 4)
            );
        }
    }

    #[test]
    fn budget_exhausts_and_refills() {
        let clock = FakeClock::new(0);
        let budget = RetryBudget::new(0.2, 1, clock.clone());
        // min_per_sec × 10 s window = 10 free retries.
        for _ in 0..10 {
            assert!(budget.try_withdraw());
        }
        assert!(!budget.try_withdraw());
        // 5 requests deposit 1 retry.
        for _ in 0..5 {
            budget.deposit();
        }
        assert!(budget.try_withdraw());
        assert!(!budget.try_withdraw());
        // Withdrawals age out with the window.
        clock.advance(Duration::from_secs(10));
        assert!((budget.available() - 10.0).abs() < 1e-9);
        assert!(budget.try_withdraw());
    }

    #[test]
    fn budget_limits_amplification_under_load() {
        let clock = FakeClock::new(0);
        let budget = RetryBudget::new(0.2, 0, clock.clone());
        let mut retries = 0;
        for _ in 0..1_000 {
            budget.deposit();
            if budget.try_withdraw() {
                retries += 1;
            }
        }
        assert_eq!(retries, 200);
        // Deposits expire: after the window, no banked retries.
        clock.advance(Duration::from_secs(10));
        assert!(!budget.try_withdraw());
    }

    #[test]
    fn retryable_statuses() {
        for s in [502, 503, 504] {
            assert!(is_retryable_status(s, false));
        }
        assert!(is_retryable_status(429, true));
        assert!(!is_retryable_status(429, false));
        for s in [200, 400, 401, 404, 500, 501, 505] {
            assert!(!is_retryable_status(s, true), "{s}");
        }
    }

    #[test]
    fn retry_after_forms() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(784_111_700); // 1994-11-06T08:48:20Z
        let p = |v: &str| parse_retry_after_at(v, now);
        assert_eq!(p("120"), Some(Duration::from_secs(120)));
        assert_eq!(p(" 0 "), Some(Duration::ZERO));
        assert_eq!(p("1.5"), Some(Duration::from_millis(1_500)));
        assert_eq!(
            p("Sun, 06 Nov 1994 08:49:37 GMT"),
            Some(Duration::from_secs(77))
        );
        assert_eq!(
            p("Sunday, 06-Nov-94 08:49:37 GMT"),
            Some(Duration::from_secs(77))
        );
        assert_eq!(p("Sun Nov  6 08:49:37 1994"), Some(Duration::from_secs(77)));
        assert_eq!(
            p("Sun, 06 Nov 1994 08:00:00 GMT"),
            Some(Duration::ZERO),
            "past date"
        );
        for bad in [
            "",
            "-1",
            "soon",
            "1e3",
            "Sun, 06 Nov 1994 25:00:00 GMT",
            "1.2.3",
        ] {
            assert_eq!(p(bad), None, "{bad:?}");
        }
        assert_eq!(
            parse_retry_after_ms("250"),
            Some(Duration::from_millis(250))
        );
        assert_eq!(parse_retry_after_ms("x"), None);
    }

    #[test]
    fn policy_decisions() {
        let cfg = RetryConfig::default();
        let pol = RetryPolicy::from_config(&cfg);
        let clock = FakeClock::new(0);
        let budget = RetryBudget::from_config(&cfg, clock);
        let mut rng = StdRng::seed_from_u64(1);
        let st = |status, ra: Option<u64>| RetryCause::Status {
            status,
            retry_after: ra.map(Duration::from_millis),
        };
        assert!(
            matches!(pol.decide(0, RetryCause::Connect, &budget, &mut rng), RetryDecision::Retry(d) if d <= Duration::from_millis(100))
        );
        assert_eq!(
            pol.decide(0, RetryCause::Timeout, &budget, &mut rng),
            RetryDecision::GiveUp(GiveUp::NotRetryable)
        );
        assert_eq!(
            pol.decide(0, st(500, None), &budget, &mut rng),
            RetryDecision::GiveUp(GiveUp::NotRetryable)
        );
        assert_eq!(
            pol.decide(2, st(503, None), &budget, &mut rng),
            RetryDecision::GiveUp(GiveUp::AttemptsExhausted)
        );
        assert_eq!(
            pol.decide(0, st(429, Some(3_000)), &budget, &mut rng),
            RetryDecision::Retry(Duration::from_millis(3_000))
        );
        assert_eq!(
            pol.decide(0, st(429, Some(6_000)), &budget, &mut rng),
            RetryDecision::GiveUp(GiveUp::RetryAfterTooLong)
        );
        // Budget: 10 free, 2 used above.
        for _ in 0..8 {
            assert!(matches!(
                pol.decide(0, st(502, None), &budget, &mut rng),
                RetryDecision::Retry(_)
            ));
        }
        assert_eq!(
            pol.decide(0, st(502, None), &budget, &mut rng),
            RetryDecision::GiveUp(GiveUp::BudgetExhausted)
        );
    }
}
