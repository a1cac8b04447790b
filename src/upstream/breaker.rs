//! Circuit breaker per upstream: closed → open (N consecutive failures or a failure rate over a rolling,
//! bucketed window) → half-open after a cool-down that doubles on every re-open → closed after M probe
//! successes. Pure logic over a [`Clock`] so every transition is tested on fake time.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use serde::Serialize;

use super::config::BreakerConfig;

/// Monotonic milliseconds. `SystemClock` in production, [`FakeClock`] in tests.
pub trait Clock: Send + Sync + 'static {
    fn now_ms(&self) -> u64;
}

/// Monotonic clock (`Instant`) counted from its creation.
#[derive(Debug, Clone, Copy)]
pub struct SystemClock {
    origin: Instant,
}

impl SystemClock {
    pub fn new() -> Self {
        SystemClock {
            origin: Instant::now(),
        }
    }

    /// A shared handle, convenient for constructors taking `Arc<dyn Clock>`.
    pub fn shared() -> Arc<dyn Clock> {
        Arc::new(SystemClock::new())
    }
}

impl Default for SystemClock {
    fn default() -> Self {
        Self::new()
    }
}

impl Clock for SystemClock {
    fn now_ms(&self) -> u64 {
        u64::try_from(self.origin.elapsed().as_millis()).unwrap_or(u64::MAX)
    }
}

/// Manually advanced clock for tests (also usable by integration tests of the glue).
#[derive(Debug, Default)]
pub struct FakeClock(AtomicU64);

impl FakeClock {
    pub fn new(start_ms: u64) -> Arc<FakeClock> {
        Arc::new(FakeClock(AtomicU64::new(start_ms)))
    }
    pub fn advance(&self, d: Duration) {
        let ms = u64::try_from(d.as_millis()).unwrap_or(u64::MAX);
        self.0.fetch_add(ms, Ordering::SeqCst);
    }
    pub fn set_ms(&self, ms: u64) {
        self.0.store(ms, Ordering::SeqCst);
    }
}

impl Clock for FakeClock {
    fn now_ms(&self) -> u64 {
        self.0.load(Ordering::SeqCst)
    }
}

/// Breaker state as shown to operators.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum BreakerState {
    Closed,
    Open,
    HalfOpen,
}

impl BreakerState {
    pub fn as_str(self) -> &'static str {
        match self {
            BreakerState::Closed => "closed",
            BreakerState::Open => "open",
            BreakerState::HalfOpen => "half_open",
        }
    }
    fn code(self) -> u64 {
        match self {
            BreakerState::Closed => 0,
            BreakerState::Open => 1,
            BreakerState::HalfOpen => 2,
        }
    }
    fn from_code(c: u64) -> BreakerState {
        match c & 3 {
            0 => BreakerState::Closed,
            1 => BreakerState::Open,
            _ => BreakerState::HalfOpen,
        }
    }
}

/// Why an upstream attempt failed (only these count against the breaker).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum FailureKind {
    /// TCP/TLS connect failed or the connection was reset before a response.
    Connect,
    /// Connect, first-byte or idle timeout.
    Timeout,
    /// Upstream answered 5xx.
    Status5xx,
    /// Upstream answered 429 (a failure only with `count_429: true`).
    Status429,
}

impl FailureKind {
    pub fn as_str(self) -> &'static str {
        match self {
            FailureKind::Connect => "connect",
            FailureKind::Timeout => "timeout",
            FailureKind::Status5xx => "status_5xx",
            FailureKind::Status429 => "status_429",
        }
    }
}

/// Result of one upstream attempt, as far as the breaker cares.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    Success,
    Failure(FailureKind),
}

impl Outcome {
    /// Classify an upstream response status: 5xx and 429 are failures, everything else success.
    /// (Whether a 429 counts is decided by the breaker's `count_429`.)
    pub fn from_status(status: u16) -> Outcome {
        match status {
            500..=599 => Outcome::Failure(FailureKind::Status5xx),
            429 => Outcome::Failure(FailureKind::Status429),
            _ => Outcome::Success,
        }
    }
}

/// Admission ticket from [`Breaker::try_acquire`]; hand it back to [`Breaker::record`]. Outcomes of
/// permits issued before the last state change are ignored, so slow requests from before an
/// open/close cannot flip the new state.
#[must_use = "record the outcome with Breaker::record"]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Permit {
    generation: u64,
    probe: bool,
}

impl Permit {
    /// True when this request is a half-open probe.
    pub fn is_probe(&self) -> bool {
        self.probe
    }
}

/// The breaker refused the request.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("circuit breaker open; retry after {retry_after:?}")]
pub struct BreakerOpen {
    /// Time until a probe may be admitted (at least 1 s, for a `Retry-After` header).
    pub retry_after: Duration,
}

/// Operator view (admin API, metrics).
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct BreakerSnapshot {
    pub state: BreakerState,
    pub consecutive_failures: u32,
    /// Failure ratio over the rolling window (0 when the window is empty).
    pub failure_rate: f64,
    /// Outcomes in the rolling window.
    pub window_requests: u64,
    pub opens_total: u64,
    /// While open: time until the next probe is allowed.
    pub retry_after_ms: Option<u64>,
    /// Current open period (doubles on each failed probe).
    pub cooldown_ms: u64,
}

const BUCKETS: usize = 10;
const HALF_OPEN_MAX_IN_FLIGHT: u32 = 1;
const MIN_RETRY_AFTER: Duration = Duration::from_secs(1);
/// A probe that never reports (client went away, glue forgot) stops blocking new probes after this.
const DEFAULT_PROBE_TIMEOUT_MS: u64 = 30_000;

#[derive(Clone, Copy, Debug, Default)]
struct Bucket {
    slot: u64,
    total: u32,
    failures: u32,
}

#[derive(Debug)]
struct Window {
    bucket_ms: u64,
    buckets: [Bucket; BUCKETS],
}

impl Window {
    fn new(window_secs: u32) -> Window {
        Window {
            bucket_ms: (u64::from(window_secs) * 1000 / BUCKETS as u64).max(1),
            buckets: [Bucket::default(); BUCKETS],
        }
    }

    fn add(&mut self, now: u64, failure: bool) {
        let slot = now / self.bucket_ms;
        let b = &mut self.buckets[(slot % BUCKETS as u64) as usize];
        if b.slot != slot || b.total == 0 {
            *b = Bucket {
                slot,
                total: 0,
                failures: 0,
            };
        }
        b.total = b.total.saturating_add(1);
        if failure {
            b.failures = b.failures.saturating_add(1);
        }
    }

    /// (total, failures) over the buckets still inside the window.
    fn counts(&self, now: u64) -> (u64, u64) {
        let cur = now / self.bucket_ms;
        self.buckets
            .iter()
            .filter(|b| b.total > 0 && b.slot <= cur && cur - b.slot < BUCKETS as u64)
            .fold((0, 0), |(t, f), b| {
                (t + u64::from(b.total), f + u64::from(b.failures))
            })
    }

    fn clear(&mut self) {
        self.buckets = [Bucket::default(); BUCKETS];
    }
}

#[derive(Debug)]
struct Inner {
    state: BreakerState,
    generation: u64,
    consecutive_failures: u32,
    window: Window,
    opened_at: u64,
    cooldown_ms: u64,
    probes_in_flight: u32,
    last_probe_at: u64,
    probe_successes: u32,
    opens_total: u64,
}

/// Thread-safe circuit breaker. The closed-state admission is lock-free (one atomic load); outcomes
/// and non-closed admissions take a small mutex for a few arithmetic operations.
pub struct Breaker {
    cfg: BreakerConfig,
    clock: Arc<dyn Clock>,
    probe_timeout_ms: u64,
    /// `generation << 2 | state code`, mirrored from `inner` for the lock-free fast path.
    packed: AtomicU64,
    inner: Mutex<Inner>,
}

impl std::fmt::Debug for Breaker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Breaker")
            .field("state", &self.state())
            .finish_non_exhaustive()
    }
}

impl Breaker {
    /// `cfg` is assumed validated ([`BreakerConfig`] ranges); degenerate values are clamped anyway.
    pub fn new(cfg: BreakerConfig, clock: Arc<dyn Clock>) -> Breaker {
        let window = Window::new(cfg.window_secs.max(1));
        let cooldown_ms = cfg.cooldown_ms.max(1);
        Breaker {
            cfg,
            clock,
            probe_timeout_ms: DEFAULT_PROBE_TIMEOUT_MS,
            packed: AtomicU64::new(BreakerState::Closed.code()),
            inner: Mutex::new(Inner {
                state: BreakerState::Closed,
                generation: 0,
                consecutive_failures: 0,
                window,
                opened_at: 0,
                cooldown_ms,
                probes_in_flight: 0,
                last_probe_at: 0,
                probe_successes: 0,
                opens_total: 0,
            }),
        }
    }

    /// How long an unreported half-open probe blocks further probes (use connect + first-byte timeout,
    /// since the outcome is recorded when the response head arrives).
    pub fn with_probe_timeout(mut self, d: Duration) -> Breaker {
        self.probe_timeout_ms = u64::try_from(d.as_millis()).unwrap_or(u64::MAX).max(1);
        self
    }

    pub fn config(&self) -> &BreakerConfig {
        &self.cfg
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // The critical sections never panic midway, so a poisoned lock still holds consistent data.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn publish(&self, inner: &Inner) {
        self.packed.store(
            inner.generation << 2 | inner.state.code(),
            Ordering::Release,
        );
    }

    fn transition(&self, inner: &mut Inner, to: BreakerState, now: u64) {
        inner.state = to;
        inner.generation = inner.generation.wrapping_add(1);
        inner.probes_in_flight = 0;
        inner.probe_successes = 0;
        match to {
            BreakerState::Open => {
                inner.opened_at = now;
                inner.opens_total += 1;
                inner.window.clear();
            }
            BreakerState::Closed => {
                inner.consecutive_failures = 0;
                inner.cooldown_ms = self.cfg.cooldown_ms.max(1);
                inner.window.clear();
            }
            BreakerState::HalfOpen => {}
        }
        self.publish(inner);
    }

    /// Admit a request or refuse it while open. In half-open only one probe is in flight at a time.
    pub fn try_acquire(&self) -> Result<Permit, BreakerOpen> {
        let packed = self.packed.load(Ordering::Acquire);
        if BreakerState::from_code(packed) == BreakerState::Closed {
            return Ok(Permit {
                generation: packed >> 2,
                probe: false,
            });
        }
        let now = self.clock.now_ms();
        let mut inner = self.lock();
        if inner.state == BreakerState::Open {
            let until = inner.opened_at.saturating_add(inner.cooldown_ms);
            if now < until {
                return Err(BreakerOpen {
                    retry_after: Duration::from_millis(until - now).max(MIN_RETRY_AFTER),
                });
            }
            self.transition(&mut inner, BreakerState::HalfOpen, now);
        }
        match inner.state {
            BreakerState::Closed => Ok(Permit {
                generation: inner.generation,
                probe: false,
            }),
            BreakerState::HalfOpen => {
                let stale = now.saturating_sub(inner.last_probe_at) >= self.probe_timeout_ms;
                if inner.probes_in_flight < HALF_OPEN_MAX_IN_FLIGHT || stale {
                    inner.probes_in_flight = if stale { 1 } else { inner.probes_in_flight + 1 };
                    inner.last_probe_at = now;
                    Ok(Permit {
                        generation: inner.generation,
                        probe: true,
                    })
                } else {
                    Err(BreakerOpen {
                        retry_after: MIN_RETRY_AFTER,
                    })
                }
            }
            // Unreachable: Open was turned into HalfOpen or returned above.
            BreakerState::Open => Err(BreakerOpen {
                retry_after: MIN_RETRY_AFTER,
            }),
        }
    }

    /// Alias of [`try_acquire`](Self::try_acquire) (name used in INTERFACES.md).
    pub fn allow_request(&self) -> Result<Permit, BreakerOpen> {
        self.try_acquire()
    }

    /// Record the outcome of an admitted request.
    pub fn record(&self, permit: Permit, outcome: Outcome) {
        let failure = match outcome {
            Outcome::Success => false,
            Outcome::Failure(FailureKind::Status429) => self.cfg.count_429,
            Outcome::Failure(_) => true,
        };
        let now = self.clock.now_ms();
        let mut inner = self.lock();
        if permit.generation != inner.generation {
            return;
        }
        match inner.state {
            BreakerState::Closed => {
                inner.window.add(now, failure);
                if !failure {
                    inner.consecutive_failures = 0;
                    return;
                }
                inner.consecutive_failures = inner.consecutive_failures.saturating_add(1);
                let by_count = self.cfg.consecutive_failures > 0
                    && inner.consecutive_failures >= self.cfg.consecutive_failures;
                let (total, failures) = inner.window.counts(now);
                let by_rate = total >= u64::from(self.cfg.min_requests)
                    && failures as f64 >= self.cfg.failure_rate * total as f64;
                if by_count || by_rate {
                    inner.cooldown_ms = self.cfg.cooldown_ms.max(1);
                    self.transition(&mut inner, BreakerState::Open, now);
                }
            }
            BreakerState::HalfOpen => {
                if !permit.probe {
                    return;
                }
                inner.probes_in_flight = inner.probes_in_flight.saturating_sub(1);
                if failure {
                    inner.cooldown_ms = inner
                        .cooldown_ms
                        .saturating_mul(2)
                        .min(self.cfg.max_cooldown_ms.max(1));
                    self.transition(&mut inner, BreakerState::Open, now);
                } else {
                    inner.probe_successes += 1;
                    if inner.probe_successes >= self.cfg.half_open_successes {
                        self.transition(&mut inner, BreakerState::Closed, now);
                    }
                }
            }
            BreakerState::Open => {}
        }
    }

    /// Same as `record(permit, Outcome::Success)`.
    pub fn record_success(&self, permit: Permit) {
        self.record(permit, Outcome::Success)
    }

    /// Same as `record(permit, Outcome::Failure(kind))`.
    pub fn record_failure(&self, permit: Permit, kind: FailureKind) {
        self.record(permit, Outcome::Failure(kind))
    }

    /// Current state. An open breaker whose cool-down has elapsed reports `HalfOpen` (it will admit a
    /// probe), so readiness recovers even when no traffic arrives to drive the transition.
    pub fn state(&self) -> BreakerState {
        let state = BreakerState::from_code(self.packed.load(Ordering::Acquire));
        if state != BreakerState::Open {
            return state;
        }
        let inner = self.lock();
        if inner.state == BreakerState::Open
            && self.clock.now_ms() >= inner.opened_at.saturating_add(inner.cooldown_ms)
        {
            BreakerState::HalfOpen
        } else {
            inner.state
        }
    }

    /// Force closed, clear counters and the cool-down (admin action). `opens_total` is kept.
    pub fn reset(&self) {
        let now = self.clock.now_ms();
        let mut inner = self.lock();
        self.transition(&mut inner, BreakerState::Closed, now);
    }

    pub fn snapshot(&self) -> BreakerSnapshot {
        let now = self.clock.now_ms();
        let inner = self.lock();
        let (total, failures) = inner.window.counts(now);
        let until = inner.opened_at.saturating_add(inner.cooldown_ms);
        let (state, retry_after_ms) = match inner.state {
            BreakerState::Open if now < until => (BreakerState::Open, Some(until - now)),
            BreakerState::Open => (BreakerState::HalfOpen, None),
            s => (s, None),
        };
        BreakerSnapshot {
            state,
            consecutive_failures: inner.consecutive_failures,
            failure_rate: if total == 0 {
                0.0
            } else {
                failures as f64 / total as f64
            },
            window_requests: total,
            opens_total: inner.opens_total,
            retry_after_ms,
            cooldown_ms: inner.cooldown_ms,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg() -> BreakerConfig {
        BreakerConfig {
            consecutive_failures: 3,
            failure_rate: 0.5,
            window_secs: 10,
            min_requests: 6,
            cooldown_ms: 1_000,
            max_cooldown_ms: 3_000,
            half_open_successes: 2,
            count_429: false,
        }
    }

    fn setup(c: BreakerConfig) -> (Arc<FakeClock>, Breaker) {
        let clock = FakeClock::new(1_000_000);
        let b = Breaker::new(c, clock.clone());
        (clock, b)
    }

    fn fail(b: &Breaker, kind: FailureKind) {
        let p = b.try_acquire().expect("admitted");
        b.record(p, Outcome::Failure(kind));
    }

    fn ok(b: &Breaker) {
        let p = b.try_acquire().expect("admitted");
        b.record(p, Outcome::Success);
    }

    #[test]
    fn opens_after_consecutive_failures() {
        let (_c, b) = setup(cfg());
        fail(&b, FailureKind::Connect);
        fail(&b, FailureKind::Timeout);
        assert_eq!(b.state(), BreakerState::Closed);
        fail(&b, FailureKind::Status5xx);
        assert_eq!(b.state(), BreakerState::Open);
        let e = b.try_acquire().unwrap_err();
        assert_eq!(e.retry_after, Duration::from_secs(1));
        assert_eq!(b.snapshot().opens_total, 1);
    }

    #[test]
    fn success_resets_consecutive_count() {
        // 10 failures / 15 outcomes ≥ 0.5 would trip the rate trigger; disable it for this check.
        let mut c = cfg();
        c.failure_rate = 1.0;
        let (_c, b) = setup(c);
        for _ in 0..5 {
            fail(&b, FailureKind::Connect);
            fail(&b, FailureKind::Connect);
            ok(&b);
        }
        assert_eq!(b.state(), BreakerState::Closed);
        assert_eq!(b.snapshot().consecutive_failures, 0);
    }

    #[test]
    fn opens_by_failure_rate_only_after_min_requests() {
        let mut c = cfg();
        c.consecutive_failures = 0; // rate trigger only
        let (_c, b) = setup(c);
        // fail, ok, fail, ok, fail → 3/5 but below min_requests (6)
        for i in 0..5 {
            if i % 2 == 0 {
                fail(&b, FailureKind::Status5xx)
            } else {
                ok(&b)
            }
        }
        assert_eq!(b.state(), BreakerState::Closed);
        assert_eq!(b.snapshot().window_requests, 5);
        ok(&b); // 3/6 = 0.5 but the trip is evaluated on failures only
        assert_eq!(b.state(), BreakerState::Closed);
        fail(&b, FailureKind::Status5xx); // 4/7 ≥ 0.5
        assert_eq!(b.state(), BreakerState::Open);
    }

    #[test]
    fn rate_window_forgets_old_outcomes() {
        let mut c = cfg();
        c.consecutive_failures = 0;
        let (clock, b) = setup(c);
        for _ in 0..5 {
            fail(&b, FailureKind::Status5xx);
        }
        clock.advance(Duration::from_secs(11)); // all buckets expired
        assert_eq!(b.snapshot().window_requests, 0);
        for _ in 0..5 {
            ok(&b);
        }
        fail(&b, FailureKind::Status5xx); // 1/6
        assert_eq!(b.state(), BreakerState::Closed);
    }

    #[test]
    fn open_to_half_open_after_cooldown_then_closed_after_m_successes() {
        let (clock, b) = setup(cfg());
        for _ in 0..3 {
            fail(&b, FailureKind::Connect);
        }
        clock.advance(Duration::from_millis(999));
        assert_eq!(b.state(), BreakerState::Open);
        assert!(b.try_acquire().is_err());
        clock.advance(Duration::from_millis(1));
        assert_eq!(b.state(), BreakerState::HalfOpen, "lazy: cool-down elapsed");
        let p1 = b.try_acquire().unwrap();
        assert!(p1.is_probe());
        // Only one probe in flight.
        assert_eq!(b.try_acquire().unwrap_err().retry_after, MIN_RETRY_AFTER);
        b.record(p1, Outcome::Success);
        assert_eq!(b.state(), BreakerState::HalfOpen);
        let p2 = b.try_acquire().unwrap();
        b.record(p2, Outcome::Success);
        assert_eq!(b.state(), BreakerState::Closed);
        let s = b.snapshot();
        assert_eq!(s.cooldown_ms, 1_000);
        assert_eq!(s.consecutive_failures, 0);
    }

    #[test]
    fn half_open_failure_reopens_with_doubled_capped_cooldown() {
        let (clock, b) = setup(cfg());
        for _ in 0..3 {
            fail(&b, FailureKind::Connect);
        }
        let expected = [2_000u64, 3_000, 3_000]; // 1000 → 2000 → 3000 (cap) → 3000
        for want in expected {
            clock.advance(Duration::from_millis(b.snapshot().cooldown_ms));
            let p = b.try_acquire().unwrap();
            assert!(p.is_probe());
            b.record(p, Outcome::Failure(FailureKind::Timeout));
            assert_eq!(b.state(), BreakerState::Open);
            let s = b.snapshot();
            assert_eq!(s.cooldown_ms, want);
            assert_eq!(s.retry_after_ms, Some(want));
        }
        assert_eq!(b.snapshot().opens_total, 4);
        // Recovery resets the cool-down to the base.
        clock.advance(Duration::from_millis(3_000));
        ok(&b);
        ok(&b);
        assert_eq!(b.state(), BreakerState::Closed);
        assert_eq!(b.snapshot().cooldown_ms, 1_000);
        for _ in 0..3 {
            fail(&b, FailureKind::Connect);
        }
        assert_eq!(b.snapshot().retry_after_ms, Some(1_000));
    }

    #[test]
    fn reset_closes_and_clears() {
        let (_c, b) = setup(cfg());
        for _ in 0..3 {
            fail(&b, FailureKind::Connect);
        }
        assert_eq!(b.state(), BreakerState::Open);
        b.reset();
        assert_eq!(b.state(), BreakerState::Closed);
        assert!(b.try_acquire().is_ok());
        let s = b.snapshot();
        assert_eq!(
            (s.consecutive_failures, s.window_requests, s.opens_total),
            (0, 0, 1)
        );
    }

    #[test]
    fn status_429_counts_only_when_configured() {
        let (_c, b) = setup(cfg());
        for _ in 0..10 {
            fail(&b, FailureKind::Status429);
        }
        assert_eq!(b.state(), BreakerState::Closed);
        let mut c = cfg();
        c.count_429 = true;
        let (_c, b) = setup(c);
        for _ in 0..3 {
            fail(&b, FailureKind::Status429);
        }
        assert_eq!(b.state(), BreakerState::Open);
    }

    #[test]
    fn stale_permits_are_ignored() {
        let (clock, b) = setup(cfg());
        let old = b.try_acquire().unwrap(); // admitted while closed
        for _ in 0..3 {
            fail(&b, FailureKind::Connect);
        }
        clock.advance(Duration::from_millis(1_000));
        let probe = b.try_acquire().unwrap();
        // The slow pre-open request succeeding must not count as a probe success…
        b.record(old, Outcome::Success);
        b.record(old, Outcome::Success);
        assert_eq!(b.state(), BreakerState::HalfOpen);
        // …nor may its failure re-open.
        b.record(old, Outcome::Failure(FailureKind::Connect));
        assert_eq!(b.state(), BreakerState::HalfOpen);
        b.record(probe, Outcome::Success);
        let p = b.try_acquire().unwrap();
        b.record(p, Outcome::Success);
        assert_eq!(b.state(), BreakerState::Closed);
    }

    #[test]
    fn lost_probe_stops_blocking_after_probe_timeout() {
        let clock = FakeClock::new(0);
        let b = Breaker::new(cfg(), clock.clone()).with_probe_timeout(Duration::from_secs(5));
        for _ in 0..3 {
            fail(&b, FailureKind::Connect);
        }
        clock.advance(Duration::from_secs(1));
        let _lost = b.try_acquire().unwrap();
        assert!(b.try_acquire().is_err());
        clock.advance(Duration::from_secs(5));
        assert!(b.try_acquire().unwrap().is_probe());
    }

    #[test]
    fn outcome_from_status() {
        assert_eq!(Outcome::from_status(200), Outcome::Success);
        assert_eq!(Outcome::from_status(404), Outcome::Success);
        assert_eq!(
            Outcome::from_status(429),
            Outcome::Failure(FailureKind::Status429)
        );
        assert_eq!(
            Outcome::from_status(503),
            Outcome::Failure(FailureKind::Status5xx)
        );
    }

    #[test]
    fn concurrent_use_is_consistent() {
        let clock = FakeClock::new(0);
        let b = Arc::new(Breaker::new(cfg(), clock));
        let handles: Vec<_> = (0..4)
            .map(|_| {
                let b = b.clone();
                std::thread::spawn(move || {
                    for _ in 0..1000 {
                        if let Ok(p) = b.try_acquire() {
                            b.record(p, Outcome::Failure(FailureKind::Connect));
                        }
                    }
                })
            })
            .collect();
        for h in handles {
            h.join().unwrap();
        }
        assert_eq!(b.state(), BreakerState::Open);
        assert_eq!(b.snapshot().opens_total, 1);
    }
}
