//! Prometheus metrics (DESIGN §7) on a private `Registry`, so any number of instances can coexist
//! (tests, reloads). Every label value passes a cardinality guard: fixed allow-lists where the
//! domain is closed, otherwise a length/charset check plus a cap on distinct values ("other" beyond).

use std::borrow::Cow;
use std::cell::RefCell;
use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use prometheus::{
    Encoder, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge,
    IntGaugeVec, Opts, Registry, TextEncoder,
};

/// Value used for any label value the guard refuses.
pub const OTHER: &str = "other";

/// Longest label value accepted verbatim.
const MAX_LABEL_LEN: usize = 64;

/// Buckets of `jimini_overhead_seconds`: 10 µs … 100 ms, dense where the latency budget lives.
pub const OVERHEAD_BUCKETS: &[f64] = &[
    0.000_01, 0.000_025, 0.000_05, 0.000_075, 0.000_1, 0.000_15, 0.000_25, 0.000_5, 0.000_75,
    0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1,
];
/// Buckets of `jimini_request_duration_seconds` (LLM calls take seconds to minutes).
pub const DURATION_BUCKETS: &[f64] = &[
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 20.0, 30.0, 60.0, 120.0, 300.0,
];
/// Buckets of `jimini_ttft_seconds`.
pub const TTFT_BUCKETS: &[f64] = &[
    0.025, 0.05, 0.1, 0.25, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0, 5.0, 10.0, 20.0, 30.0, 60.0,
];

const DECISIONS: &[&str] = &["allow", "flag", "redact", "block", "shadow", "error"];
const DIRECTIONS: &[&str] = &["request", "response"];
const ACTIONS: &[&str] = &["allow", "flag", "redact", "block"];
const RATE_REASONS: &[&str] = &["rpm", "tpm"];

/// Bounded set of values seen for one label name. Values are accepted verbatim while they look
/// like identifiers (config names, detector labels) and the cap is not reached.
struct LabelGuard {
    cap: usize,
    seen: RwLock<HashSet<Box<str>>>,
}

fn is_identifier_like(v: &str) -> bool {
    !v.is_empty()
        && v.len() <= MAX_LABEL_LEN
        && v.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.' | b':' | b'/'))
}

impl LabelGuard {
    fn new(cap: usize) -> Self {
        LabelGuard {
            cap,
            seen: RwLock::new(HashSet::new()),
        }
    }

    fn clamp<'a>(&self, v: &'a str) -> &'a str {
        if !is_identifier_like(v) || v == OTHER {
            return OTHER;
        }
        // A poisoned lock only means another thread panicked mid-insert; the set is still valid.
        {
            let seen = self.seen.read().unwrap_or_else(|e| e.into_inner());
            if seen.contains(v) {
                return v;
            }
            if seen.len() >= self.cap {
                return OTHER;
            }
        }
        let mut seen = self.seen.write().unwrap_or_else(|e| e.into_inner());
        if seen.contains(v) {
            return v;
        }
        if seen.len() >= self.cap {
            return OTHER;
        }
        seen.insert(v.into());
        v
    }
}

fn allow<'a>(list: &[&'static str], v: &'a str) -> &'a str {
    if list.contains(&v) {
        v
    } else {
        OTHER
    }
}

/// HTTP status as a 3-digit label without allocating for the common codes.
fn status_label(status: u16) -> Cow<'static, str> {
    match status {
        200 => Cow::Borrowed("200"),
        400 => Cow::Borrowed("400"),
        401 => Cow::Borrowed("401"),
        403 => Cow::Borrowed("403"),
        404 => Cow::Borrowed("404"),
        413 => Cow::Borrowed("413"),
        429 => Cow::Borrowed("429"),
        500 => Cow::Borrowed("500"),
        502 => Cow::Borrowed("502"),
        503 => Cow::Borrowed("503"),
        504 => Cow::Borrowed("504"),
        100..=599 => Cow::Owned(status.to_string()),
        _ => Cow::Borrowed(OTHER),
    }
}

/// Outcome of one proxied request, reported once at the end.
#[derive(Clone, Debug)]
pub struct RequestOutcome<'a> {
    /// Endpoint route class ("chat", "embeddings", …).
    pub route: &'a str,
    /// Upstream name from config ("" or "none" when the request never reached one).
    pub upstream: &'a str,
    /// `Decision::label()`: allow | flag | redact | block | shadow (anything else → "other").
    pub decision: &'a str,
    /// Status sent to the client.
    pub status: u16,
    /// Wall time from request start to the end of the response.
    pub duration: Duration,
    /// Time spent inside Jimini (duration minus time waiting on the upstream).
    pub overhead: Duration,
    /// Time to first streamed token, for streams.
    pub ttft: Option<Duration>,
}

struct Inner {
    /// False with `telemetry.metrics: false`: the request-path recorders do nothing.
    enabled: bool,
    /// Tells this instance's series apart in the per-thread [`SeriesMemo`].
    id: u64,
    registry: Registry,
    requests: IntCounterVec,
    duration: HistogramVec,
    overhead: HistogramVec,
    ttft: HistogramVec,
    findings: IntCounterVec,
    rule_matches: IntCounterVec,
    breaker_state: IntGaugeVec,
    upstream_errors: IntCounterVec,
    reloads: IntCounterVec,
    audit_records: IntCounter,
    audit_dropped: IntCounter,
    traces_dropped: IntCounter,
    trace_export_failed: IntCounter,
    audit_chain_ok: IntGauge,
    active: IntGauge,
    rate_limited: IntCounterVec,
    admin_requests: IntCounterVec,
    // Serializes the counter copies (`set_audit_counters`, `set_trace_counters`) so concurrent
    // scrapes cannot add the same delta twice.
    counter_sync: Mutex<()>,
    g_route: LabelGuard,
    g_upstream: LabelGuard,
    g_detector: LabelGuard,
    g_pack: LabelGuard,
    g_rule: LabelGuard,
    g_kind: LabelGuard,
    g_path_class: LabelGuard,
}

static NEXT_INSTANCE: AtomicU64 = AtomicU64::new(0);

type FoldMap<K, V> = HashMap<K, V, foldhash::fast::FixedState>;

/// The series one finished request updates.
struct RequestSeries {
    requests: IntCounter,
    duration: Histogram,
    overhead: Histogram,
    ttft: Option<Histogram>,
}

/// Per-thread memo of resolved series, keyed by the raw label values: the request path finds
/// its counters and histograms with one fast hash lookup and no lock. (Resolving through
/// `with_label_values` hashes every value with SipHash under the vector's shared `RwLock`, and
/// the label guards take theirs: ~4,600 instructions per request, the lock words' cache lines
/// bouncing between worker threads.) Label guards run once per key and thread; a value they
/// admitted stays admitted and one they refused stays refused, so memoized answers never change.
#[derive(Default)]
struct SeriesMemo {
    owner: u64,
    key: String,
    requests: FoldMap<Box<str>, RequestSeries>,
    counters: FoldMap<Box<str>, IntCounter>,
}

/// Distinct keys a thread memoizes before it starts over (label values come from config and
/// are capped by the guards; this bounds the memo even so).
const MEMO_CAP: usize = 4096;

thread_local! {
    static MEMO: RefCell<SeriesMemo> = RefCell::new(SeriesMemo::default());
}

impl SeriesMemo {
    /// The memo for metrics instance `owner`, emptied when another instance used it last.
    fn for_owner(&mut self, owner: u64) -> &mut SeriesMemo {
        if self.owner != owner || self.requests.len() + self.counters.len() > MEMO_CAP {
            self.requests.clear();
            self.counters.clear();
            self.owner = owner;
        }
        self
    }

    /// Fills `self.key` with `parts`, separated by a byte no label value contains.
    fn set_key(&mut self, parts: &[&str]) {
        self.key.clear();
        for p in parts {
            self.key.push_str(p);
            self.key.push('\u{1}');
        }
    }
}

/// All Jimini metrics. Cheap to clone; `Send + Sync`.
#[derive(Clone)]
pub struct Metrics {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

// Registration of statically-defined, uniquely-named metrics into a fresh registry cannot fail;
// an error here is a programming error caught by every test.
fn reg<C: prometheus::core::Collector + Clone + 'static>(r: &Registry, c: C) -> C {
    r.register(Box::new(c.clone()))
        .expect("static metric definitions are valid and unique");
    c
}

fn counter_vec(r: &Registry, name: &str, help: &str, labels: &[&str]) -> IntCounterVec {
    let c = IntCounterVec::new(Opts::new(name, help), labels).expect("valid metric definition");
    reg(r, c)
}

fn histogram_vec(r: &Registry, name: &str, help: &str, buckets: &[f64]) -> HistogramVec {
    let h = HistogramVec::new(
        HistogramOpts::new(name, help).buckets(buckets.to_vec()),
        &["route"],
    )
    .expect("valid metric definition");
    reg(r, h)
}

impl Metrics {
    /// Fresh registry with every metric registered.
    pub fn new() -> Metrics {
        Metrics::build(true)
    }

    fn build(enabled: bool) -> Metrics {
        let r = Registry::new();
        let requests = counter_vec(
            &r,
            "jimini_requests_total",
            "Proxied requests by route, upstream, policy decision and response status.",
            &["route", "upstream", "decision", "status"],
        );
        let duration = histogram_vec(
            &r,
            "jimini_request_duration_seconds",
            "Total request duration as seen by the client.",
            DURATION_BUCKETS,
        );
        let overhead = histogram_vec(
            &r,
            "jimini_overhead_seconds",
            "Time spent inside Jimini per request, excluding time waiting on the upstream.",
            OVERHEAD_BUCKETS,
        );
        let ttft = histogram_vec(
            &r,
            "jimini_ttft_seconds",
            "Time to first token of streamed responses.",
            TTFT_BUCKETS,
        );
        let findings = counter_vec(
            &r,
            "jimini_findings_total",
            "Detector findings by detector and direction.",
            &["detector", "direction"],
        );
        let rule_matches = counter_vec(
            &r,
            "jimini_rule_matches_total",
            "Rule matches by pack, rule, action and whether the action was shadowed.",
            &["pack", "rule", "action", "shadow"],
        );
        let breaker_state = reg(
            &r,
            IntGaugeVec::new(
                Opts::new(
                    "jimini_upstream_breaker_state",
                    "Circuit breaker state per upstream: 0 closed, 1 half-open, 2 open.",
                ),
                &["upstream"],
            )
            .expect("valid metric definition"),
        );
        let upstream_errors = counter_vec(
            &r,
            "jimini_upstream_errors_total",
            "Upstream failures by upstream and kind.",
            &["upstream", "kind"],
        );
        let reloads = counter_vec(
            &r,
            "jimini_rules_reloads_total",
            "Rule/config reload attempts by result (ok|error).",
            &["result"],
        );
        let audit_records = reg(
            &r,
            IntCounter::new("jimini_audit_records_total", "Audit records written.")
                .expect("valid metric definition"),
        );
        let audit_dropped = reg(
            &r,
            IntCounter::new(
                "jimini_audit_dropped_total",
                "Audit records dropped (queue full with on_full: drop, or write failure).",
            )
            .expect("valid metric definition"),
        );
        let traces_dropped = reg(
            &r,
            IntCounter::new(
                "jimini_traces_dropped_total",
                "Sampled request traces dropped because the span queue was full.",
            )
            .expect("valid metric definition"),
        );
        let trace_export_failed = reg(
            &r,
            IntCounter::new(
                "jimini_trace_export_failed_spans_total",
                "Spans whose OTLP export failed (collector unreachable or rejecting).",
            )
            .expect("valid metric definition"),
        );
        let audit_chain_ok = reg(
            &r,
            IntGauge::new(
                "jimini_audit_chain_ok",
                "1 when the last audit-chain verification passed, 0 when it found a break.",
            )
            .expect("valid metric definition"),
        );
        audit_chain_ok.set(1);
        let active = reg(
            &r,
            IntGauge::new("jimini_active_requests", "Requests in flight.")
                .expect("valid metric definition"),
        );
        let rate_limited = counter_vec(
            &r,
            "jimini_rate_limited_total",
            "Requests rejected by rate limits, by reason (rpm|tpm).",
            &["reason"],
        );
        let admin_requests = counter_vec(
            &r,
            "jimini_admin_requests_total",
            "Admin API requests by path class and status.",
            &["path_class", "status"],
        );
        Metrics {
            inner: Arc::new(Inner {
                enabled,
                id: NEXT_INSTANCE.fetch_add(1, Ordering::Relaxed),
                registry: r,
                requests,
                duration,
                overhead,
                ttft,
                findings,
                rule_matches,
                breaker_state,
                upstream_errors,
                reloads,
                audit_records,
                audit_dropped,
                traces_dropped,
                trace_export_failed,
                audit_chain_ok,
                active,
                rate_limited,
                admin_requests,
                counter_sync: Mutex::new(()),
                g_route: LabelGuard::new(32),
                g_upstream: LabelGuard::new(64),
                g_detector: LabelGuard::new(256),
                g_pack: LabelGuard::new(64),
                g_rule: LabelGuard::new(1024),
                g_kind: LabelGuard::new(32),
                g_path_class: LabelGuard::new(32),
            }),
        }
    }

    /// Metrics turned off (`telemetry.metrics: false`): nothing on the request path is recorded
    /// and [`Metrics::enabled`] is false, so `/metrics` is not served.
    pub fn disabled() -> Metrics {
        Metrics::build(false)
    }

    /// Whether metrics are recorded and served.
    pub fn enabled(&self) -> bool {
        self.inner.enabled
    }

    /// The underlying registry (e.g. to add process metrics).
    pub fn registry(&self) -> &Registry {
        &self.inner.registry
    }

    /// A request entered the proxy.
    pub fn request_started(&self) {
        if !self.inner.enabled {
            return;
        }
        self.inner.active.inc();
    }

    /// A request finished (pairs with `request_started`).
    pub fn request_finished(&self, o: &RequestOutcome<'_>) {
        let i = &*self.inner;
        if !i.enabled {
            return;
        }
        i.active.dec();
        MEMO.with(|memo| {
            let mut memo = memo.borrow_mut();
            let memo = memo.for_owner(i.id);
            memo.set_key(&[o.route, o.upstream, o.decision]);
            let mut digits = [0u8; 20];
            let status = crate::json_text::decimal(u64::from(o.status), &mut digits);
            memo.key
                .push_str(std::str::from_utf8(status).unwrap_or_default());
            let series = match memo.requests.get_mut(memo.key.as_str()) {
                Some(series) => series,
                None => {
                    let series = self.request_series(o);
                    let key: Box<str> = memo.key.as_str().into();
                    memo.requests.entry(key).or_insert(series)
                }
            };
            series.requests.inc();
            series.duration.observe(o.duration.as_secs_f64());
            series.overhead.observe(o.overhead.as_secs_f64());
            if let Some(t) = o.ttft {
                series
                    .ttft
                    .get_or_insert_with(|| i.ttft.with_label_values(&[i.g_route.clamp(o.route)]))
                    .observe(t.as_secs_f64());
            }
        });
    }

    /// The series of one (route, upstream, decision, status), labels guarded.
    fn request_series(&self, o: &RequestOutcome<'_>) -> RequestSeries {
        let i = &*self.inner;
        let route = i.g_route.clamp(o.route);
        let upstream = if o.upstream.is_empty() {
            "none"
        } else {
            i.g_upstream.clamp(o.upstream)
        };
        let status = status_label(o.status);
        RequestSeries {
            requests: i.requests.with_label_values(&[
                route,
                upstream,
                allow(DECISIONS, o.decision),
                &status,
            ]),
            duration: i.duration.with_label_values(&[route]),
            overhead: i.overhead.with_label_values(&[route]),
            ttft: None,
        }
    }

    /// Adds `n` to the counter memoized under `parts` (resolved by `resolve` on first use).
    fn memo_counter(&self, parts: &[&str], n: u64, resolve: impl FnOnce() -> IntCounter) {
        MEMO.with(|memo| {
            let mut memo = memo.borrow_mut();
            let memo = memo.for_owner(self.inner.id);
            memo.set_key(parts);
            if let Some(c) = memo.counters.get(memo.key.as_str()) {
                c.inc_by(n);
                return;
            }
            let c = resolve();
            c.inc_by(n);
            memo.counters.insert(memo.key.as_str().into(), c);
        });
    }

    /// `n` findings of `detector` in `direction` ("request" | "response").
    pub fn finding(&self, detector: &str, direction: &str, n: u64) {
        if n == 0 || !self.inner.enabled {
            return;
        }
        let i = &*self.inner;
        self.memo_counter(&["f", detector, direction], n, || {
            i.findings
                .with_label_values(&[i.g_detector.clamp(detector), allow(DIRECTIONS, direction)])
        });
    }

    /// One rule matched (`action`: allow|flag|redact|block).
    pub fn rule_match(&self, pack: &str, rule: &str, action: &str, shadow: bool) {
        let i = &*self.inner;
        if !i.enabled {
            return;
        }
        let shadow = if shadow { "true" } else { "false" };
        self.memo_counter(&["r", pack, rule, action, shadow], 1, || {
            i.rule_matches.with_label_values(&[
                i.g_pack.clamp(pack),
                i.g_rule.clamp(rule),
                allow(ACTIONS, action),
                shadow,
            ])
        });
    }

    /// An upstream attempt failed (`kind`: connect, timeout, status_5xx, breaker_open, …).
    pub fn upstream_error(&self, upstream: &str, kind: &str) {
        let i = &*self.inner;
        if !i.enabled {
            return;
        }
        i.upstream_errors
            .with_label_values(&[i.g_upstream.clamp(upstream), i.g_kind.clamp(kind)])
            .inc();
    }

    /// Breaker state: 0 closed, 1 half-open, 2 open.
    pub fn set_breaker_state(&self, upstream: &str, state: i64) {
        let i = &*self.inner;
        i.breaker_state
            .with_label_values(&[i.g_upstream.clamp(upstream)])
            .set(state.clamp(0, 2));
    }

    /// Create the zero-valued series operators alert on, so every metric family is exported from
    /// the first scrape (a `rate(...)` over a series that appears only at its first increment
    /// misses that increment, and dashboards show "no data" instead of 0).
    pub fn preinit(&self, upstreams: &[&str], routes: &[&str]) {
        let i = &*self.inner;
        for result in ["ok", "error"] {
            i.reloads.with_label_values(&[result]);
        }
        for reason in RATE_REASONS {
            i.rate_limited.with_label_values(&[reason]);
        }
        for route in routes {
            i.ttft.with_label_values(&[i.g_route.clamp(route)]);
        }
        for up in upstreams {
            let up = i.g_upstream.clamp(up);
            for kind in [
                "connect",
                "timeout",
                "status_5xx",
                "status_429",
                "breaker_open",
            ] {
                i.upstream_errors
                    .with_label_values(&[up, i.g_kind.clamp(kind)]);
            }
            i.breaker_state.with_label_values(&[up]);
        }
    }

    /// A reload attempt finished.
    pub fn rules_reload(&self, ok: bool) {
        self.inner
            .reloads
            .with_label_values(&[if ok { "ok" } else { "error" }])
            .inc();
    }

    /// A request was rejected by a rate limit (`reason`: rpm | tpm).
    pub fn rate_limited(&self, reason: &str) {
        if !self.inner.enabled {
            return;
        }
        self.inner
            .rate_limited
            .with_label_values(&[allow(RATE_REASONS, reason)])
            .inc();
    }

    /// One admin API request (`path_class` is a fixed name chosen by the admin server).
    pub fn admin_request(&self, path_class: &str, status: u16) {
        let i = &*self.inner;
        i.admin_requests
            .with_label_values(&[i.g_path_class.clamp(path_class), &status_label(status)])
            .inc();
    }

    /// Result of the latest audit-chain verification (admin API or start-up).
    pub fn set_audit_chain_ok(&self, ok: bool) {
        self.inner.audit_chain_ok.set(i64::from(ok));
    }

    /// Copy the audit writer's own monotonic counters (call before `encode`). Values lower than
    /// the current ones (e.g. a restarted writer) are ignored: counters never go down.
    pub fn set_audit_counters(&self, written: u64, dropped: u64) {
        let i = &*self.inner;
        catch_up(
            &i.counter_sync,
            [(&i.audit_records, written), (&i.audit_dropped, dropped)],
        );
    }

    /// Copy the span exporter's loss counters (call before `encode`), like the audit ones.
    pub fn set_trace_counters(&self, dropped_traces: u64, failed_spans: u64) {
        let i = &*self.inner;
        catch_up(
            &i.counter_sync,
            [
                (&i.traces_dropped, dropped_traces),
                (&i.trace_export_failed, failed_spans),
            ],
        );
    }

    /// Prometheus text exposition format.
    pub fn encode(&self) -> String {
        let families = self.inner.registry.gather();
        let mut buf = Vec::with_capacity(8 * 1024);
        if let Err(e) = TextEncoder::new().encode(&families, &mut buf) {
            tracing::warn!(error = %e, "encoding metrics failed");
        }
        String::from_utf8(buf).unwrap_or_default()
    }
}

/// Raises each counter to the external monotonic value it mirrors; lower values (a restarted
/// source) are ignored, so counters never go down.
fn catch_up<const N: usize>(lock: &Mutex<()>, pairs: [(&IntCounter, u64); N]) {
    let _g = lock.lock().unwrap_or_else(|e| e.into_inner());
    for (c, v) in pairs {
        let cur = c.get();
        if v > cur {
            c.inc_by(v - cur);
        }
    }
}

#[cfg(test)]
mod tests {

    /// Sum of the samples of `family` whose label set contains all of `want`.
    fn sample_sum(m: &Metrics, family: &str, want: &[&str]) -> f64 {
        m.encode()
            .lines()
            .filter(|l| l.starts_with(&format!("{family}{{")))
            .filter(|l| want.iter().all(|w| l.contains(w)))
            .filter_map(|l| l.rsplit_once(' ').and_then(|(_, v)| v.parse::<f64>().ok()))
            .sum()
    }

    #[test]
    fn memoized_series_count_per_instance_and_key_across_threads() {
        let a = Metrics::new();
        let b = Metrics::new();
        let outcome = |route: &'static str, status: u16| RequestOutcome {
            route,
            upstream: "mock",
            decision: "redact",
            status,
            duration: Duration::from_millis(3),
            overhead: Duration::from_micros(80),
            ttft: (route == "chat").then(|| Duration::from_millis(1)),
        };
        // Alternating instances on one thread, on several threads, and more distinct keys
        // than the memo holds: every count lands on its own instance and series.
        std::thread::scope(|scope| {
            for t in 0..3 {
                let (a, b) = (&a, &b);
                scope.spawn(move || {
                    for n in 0..(MEMO_CAP + 50) {
                        let (m, other) = if n % 2 == 0 { (a, b) } else { (b, a) };
                        m.request_finished(&outcome("chat", 200));
                        other.finding("email", "request", 2);
                        m.rule_match("pii", &format!("rule-{}", n % 7), "redact", t == 0);
                        if n < 600 {
                            m.request_finished(&outcome("embeddings", 400 + (n % 100) as u16));
                        }
                    }
                });
            }
        });
        let per_instance = ((MEMO_CAP + 50) / 2 * 3) as f64;
        for m in [&a, &b] {
            assert_eq!(
                sample_sum(
                    m,
                    "jimini_requests_total",
                    &["route=\"chat\"", "status=\"200\""]
                ),
                per_instance
            );
            assert_eq!(
                sample_sum(m, "jimini_requests_total", &["route=\"embeddings\""]),
                900.0
            );
            assert_eq!(
                sample_sum(m, "jimini_findings_total", &["detector=\"email\""]),
                per_instance * 2.0
            );
            assert_eq!(
                sample_sum(m, "jimini_rule_matches_total", &["shadow=\"true\""]),
                per_instance / 3.0
            );
            assert_eq!(
                sample_sum(m, "jimini_ttft_seconds_count", &["route=\"chat\""]),
                per_instance
            );
            assert_eq!(
                sample_sum(m, "jimini_overhead_seconds_count", &[]),
                per_instance + 900.0
            );
        }
        // One instance, more distinct keys than the memo holds (it starts over): nothing lost.
        let c = Metrics::new();
        for n in 0..(MEMO_CAP * 2 + 10) {
            c.rule_match("pii", &format!("r{n}"), "flag", false);
            c.rule_match("pii", "r0", "flag", false);
        }
        let total = (MEMO_CAP * 2 + 10) as f64;
        assert_eq!(
            sample_sum(&c, "jimini_rule_matches_total", &[]),
            total * 2.0
        );
    }

    #[test]
    fn disabled_metrics_record_nothing() {
        for (m, on) in [(Metrics::new(), true), (Metrics::disabled(), false)] {
            assert_eq!(m.enabled(), on);
            m.request_started();
            m.finding("email", "request", 3);
            m.rule_match("pii", "r1", "redact", false);
            m.upstream_error("mock", "connect");
            m.rate_limited("rpm");
            let text = m.encode();
            for family in [
                "jimini_active_requests",
                "jimini_findings_total",
                "jimini_rule_matches_total",
                "jimini_upstream_errors_total",
                "jimini_rate_limited_total",
            ] {
                let recorded = text
                    .lines()
                    .filter(|l| l.starts_with(family))
                    .any(|l| !l.ends_with(" 0"));
                assert_eq!(recorded, on, "{family} (enabled: {on}):\n{text}");
            }
        }
    }

    use super::*;

    fn line_value(text: &str, prefix: &str) -> Option<f64> {
        text.lines()
            .find(|l| l.starts_with(prefix) && l[prefix.len()..].starts_with(' '))
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse().ok())
    }

    #[test]
    fn scripted_sequence_exact_values() {
        let m = Metrics::new();
        m.request_started();
        m.request_started();
        m.request_started();
        let ok = RequestOutcome {
            route: "chat",
            upstream: "openai",
            decision: "redact",
            status: 200,
            duration: Duration::from_millis(800),
            overhead: Duration::from_micros(40),
            ttft: Some(Duration::from_millis(300)),
        };
        m.request_finished(&ok);
        m.request_finished(&ok);
        m.request_finished(&RequestOutcome {
            decision: "block",
            status: 403,
            upstream: "",
            ttft: None,
            ..ok.clone()
        });
        m.finding("email", "request", 2);
        m.finding("email", "request", 1);
        m.finding("api_key.openai", "response", 1);
        m.finding("email", "request", 0);
        m.rule_match("pii", "pii.email", "redact", false);
        m.rule_match("pii", "pii.email", "redact", true);
        m.upstream_error("openai", "timeout");
        m.set_breaker_state("openai", 2);
        m.rules_reload(true);
        m.rules_reload(false);
        m.rules_reload(true);
        m.rate_limited("rpm");
        m.rate_limited("tpm");
        m.rate_limited("tpm");
        m.admin_request("rules", 401);
        m.set_audit_counters(10, 1);
        m.set_audit_counters(15, 1);
        m.set_audit_counters(12, 0); // lower values never decrease a counter
        m.set_trace_counters(3, 512);
        m.set_trace_counters(2, 1024);

        let t = m.encode();
        let exp: &[(&str, f64)] = &[
            (
                r#"jimini_requests_total{decision="redact",route="chat",status="200",upstream="openai"}"#,
                2.0,
            ),
            (
                r#"jimini_requests_total{decision="block",route="chat",status="403",upstream="none"}"#,
                1.0,
            ),
            (
                r#"jimini_findings_total{detector="email",direction="request"}"#,
                3.0,
            ),
            (
                r#"jimini_findings_total{detector="api_key.openai",direction="response"}"#,
                1.0,
            ),
            (
                r#"jimini_rule_matches_total{action="redact",pack="pii",rule="pii.email",shadow="false"}"#,
                1.0,
            ),
            (
                r#"jimini_rule_matches_total{action="redact",pack="pii",rule="pii.email",shadow="true"}"#,
                1.0,
            ),
            (
                r#"jimini_upstream_errors_total{kind="timeout",upstream="openai"}"#,
                1.0,
            ),
            (r#"jimini_upstream_breaker_state{upstream="openai"}"#, 2.0),
            (r#"jimini_rules_reloads_total{result="ok"}"#, 2.0),
            (r#"jimini_rules_reloads_total{result="error"}"#, 1.0),
            (r#"jimini_rate_limited_total{reason="rpm"}"#, 1.0),
            (r#"jimini_rate_limited_total{reason="tpm"}"#, 2.0),
            (
                r#"jimini_admin_requests_total{path_class="rules",status="401"}"#,
                1.0,
            ),
            ("jimini_audit_records_total", 15.0),
            ("jimini_audit_dropped_total", 1.0),
            ("jimini_traces_dropped_total", 3.0),
            ("jimini_trace_export_failed_spans_total", 1024.0),
            ("jimini_active_requests", 0.0),
            (
                r#"jimini_request_duration_seconds_count{route="chat"}"#,
                3.0,
            ),
            (r#"jimini_overhead_seconds_count{route="chat"}"#, 3.0),
            (r#"jimini_ttft_seconds_count{route="chat"}"#, 2.0),
            (r#"jimini_ttft_seconds_sum{route="chat"}"#, 0.6),
            (
                r#"jimini_overhead_seconds_bucket{route="chat",le="0.00005"}"#,
                3.0,
            ),
            (
                r#"jimini_overhead_seconds_bucket{route="chat",le="0.000025"}"#,
                0.0,
            ),
        ];
        for (prefix, want) in exp {
            let got = line_value(&t, prefix).unwrap_or_else(|| panic!("missing {prefix} in\n{t}"));
            assert!(
                (got - want).abs() < 1e-9,
                "{prefix}: got {got}, want {want}"
            );
        }
    }

    #[test]
    fn histogram_buckets_present() {
        let m = Metrics::new();
        m.request_started();
        m.request_finished(&RequestOutcome {
            route: "embeddings",
            upstream: "u",
            decision: "allow",
            status: 200,
            duration: Duration::from_millis(5),
            overhead: Duration::from_micros(5),
            ttft: Some(Duration::from_millis(5)),
        });
        let t = m.encode();
        for (name, buckets) in [
            ("jimini_overhead_seconds", OVERHEAD_BUCKETS),
            ("jimini_request_duration_seconds", DURATION_BUCKETS),
            ("jimini_ttft_seconds", TTFT_BUCKETS),
        ] {
            assert!(t.contains(&format!("# TYPE {name} histogram")));
            for b in buckets {
                let line = format!("{name}_bucket{{route=\"embeddings\",le=\"{b}\"}}");
                assert!(t.contains(&line), "missing {line}");
            }
            assert!(t.contains(&format!(
                "{name}_bucket{{route=\"embeddings\",le=\"+Inf\"}} 1"
            )));
        }
        assert_eq!(OVERHEAD_BUCKETS.first(), Some(&0.000_01));
        assert_eq!(OVERHEAD_BUCKETS.last(), Some(&0.1));
        assert!(OVERHEAD_BUCKETS.windows(2).all(|w| w[0] < w[1]));
    }

    #[test]
    fn cardinality_guard() {
        let m = Metrics::new();
        // user-ish or odd values never become labels
        for bad in [
            "",
            "john@example.com",
            "has space",
            "quote\"inject",
            "x".repeat(65).as_str(),
            "other",
        ] {
            m.finding(bad, "request", 1);
        }
        m.finding("email", "sideways", 1);
        m.rule_match("p", "p.r", "explode", false);
        m.rate_limited("caller-alice");
        m.request_started();
        m.request_finished(&RequestOutcome {
            route: "chat",
            upstream: "u",
            decision: "maybe",
            status: 42,
            duration: Duration::ZERO,
            overhead: Duration::ZERO,
            ttft: None,
        });
        let t = m.encode();
        assert_eq!(
            line_value(
                &t,
                r#"jimini_findings_total{detector="other",direction="request"}"#
            ),
            Some(6.0)
        );
        assert_eq!(
            line_value(
                &t,
                r#"jimini_findings_total{detector="email",direction="other"}"#
            ),
            Some(1.0)
        );
        assert!(t.contains(r#"action="other""#));
        assert!(t.contains(r#"jimini_rate_limited_total{reason="other"} 1"#));
        assert!(t.contains(r#"decision="other""#) && t.contains(r#"status="other""#));
        assert!(!t.contains("example.com") && !t.contains("alice"));

        // distinct values beyond the cap collapse into "other"
        let m = Metrics::new();
        for n in 0..100 {
            m.upstream_error(&format!("up{n}"), "connect");
        }
        let t = m.encode();
        let distinct = t
            .lines()
            .filter(|l| l.starts_with("jimini_upstream_errors_total{"))
            .count();
        assert_eq!(distinct, 65, "64 named + other");
        assert_eq!(
            line_value(
                &t,
                r#"jimini_upstream_errors_total{kind="connect",upstream="other"}"#
            ),
            Some(36.0)
        );
        // values seen before the cap keep working afterwards
        m.upstream_error("up3", "connect");
        assert_eq!(
            line_value(
                &m.encode(),
                r#"jimini_upstream_errors_total{kind="connect",upstream="up3"}"#
            ),
            Some(2.0)
        );
    }

    proptest::proptest! {
        #[test]
        fn guard_output_is_bounded_and_safe(values in proptest::collection::vec(".{0,80}", 1..200)) {
            let g = LabelGuard::new(8);
            let mut out = HashSet::new();
            for v in &values {
                let l = g.clamp(v);
                proptest::prop_assert!(l == OTHER || (l == v.as_str() && is_identifier_like(l)));
                out.insert(l.to_owned());
            }
            proptest::prop_assert!(out.len() <= 9);
        }
    }

    #[test]
    fn status_labels_are_three_digits() {
        for s in [100u16, 200, 201, 204, 302, 404, 418, 499, 503, 599] {
            let l = status_label(s);
            assert_eq!(l.len(), 3);
            assert_eq!(l.parse::<u16>().ok(), Some(s));
        }
        for s in [0u16, 99, 600, 1000] {
            assert_eq!(status_label(s), OTHER);
        }
    }

    #[test]
    fn instances_are_independent_and_threadsafe() {
        let a = Metrics::new();
        let b = Metrics::new();
        a.rules_reload(true);
        assert!(b
            .encode()
            .lines()
            .all(|l| !l.starts_with("jimini_rules_reloads_total{")));
        let threads: Vec<_> = (0..4)
            .map(|_| {
                let a = a.clone();
                std::thread::spawn(move || {
                    for _ in 0..1000 {
                        a.rule_match("pii", "pii.email", "flag", false);
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        assert!(a.encode().contains(
            r#"jimini_rule_matches_total{action="flag",pack="pii",rule="pii.email",shadow="false"} 4000"#
        ));
    }
}
