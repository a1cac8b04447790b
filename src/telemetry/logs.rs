//! Structured logging: one JSON object per line (span fields such as `request_id` flattened onto
//! every line) or pretty output for a terminal, filtered by `RUST_LOG` or the configured level.
//! Every line passes a secret scrubber before it is written (defense in depth).

use std::fmt;
use std::io::{self, Write};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, OnceLock};

use regex::Regex;
use serde_json::{Map, Value};
use tracing::field::{Field, Visit};
use tracing::{Event, Subscriber};
use tracing_subscriber::fmt::format::{JsonFields, Writer};
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields, FormattedFields, MakeWriter};
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::EnvFilter;

use super::{LogFormat, TelemetryConfig, TelemetryError};

/// Short, non-reversible rendering of a secret for logs and admin output:
/// `"sk-abcdef123456"` → `"sk-a…[15]"`. Short values reveal nothing but their length.
pub fn mask_secret(s: &str) -> String {
    let n = s.chars().count();
    if n >= 12 {
        let head: String = s.chars().take(4).collect();
        format!("{head}…[{n}]")
    } else {
        format!("…[{n}]")
    }
}

fn scrub_regex() -> &'static Regex {
    static RE: OnceLock<Regex> = OnceLock::new();
    RE.get_or_init(|| {
        // Group 1 keeps an auth-scheme prefix readable; everything else matched is the secret.
        Regex::new(concat!(
            r"(?i:\b(bearer|basic)\s+)([A-Za-z0-9._~+/=-]{16,})",
            r"|\bsk-[A-Za-z0-9_-]{16,}",
            r"|\b(?:AKIA|ASIA)[0-9A-Z]{16}\b",
            r"|\beyJ[A-Za-z0-9_-]{6,}\.[A-Za-z0-9_-]{6,}\.[A-Za-z0-9_-]*",
            r"|\bgh[pousr]_[A-Za-z0-9]{30,}",
            r"|\bxox[abposr]-[A-Za-z0-9-]{10,}",
            r"|\b(?:sk|rk|pk)_(?:live|test)_[A-Za-z0-9]{16,}",
            r"|\bAIza[0-9A-Za-z_-]{35}",
            r"|-----BEGIN [A-Z ]*PRIVATE KEY-----",
        ))
        .expect("static scrub pattern compiles")
    })
}

fn url_credentials_regex() -> &'static Regex {
    static RE: OnceLock<Regex> = OnceLock::new();
    RE.get_or_init(|| {
        Regex::new(r"(://)[^/\s:@]{1,128}:[^/\s@]{1,256}@").expect("static scrub pattern compiles")
    })
}

/// Mask well-known secret shapes (bearer tokens, provider API keys, JWTs, URL credentials).
/// Returns `None` when the text contains nothing to mask.
pub fn scrub_secrets(text: &str) -> Option<String> {
    let re = scrub_regex();
    let urls = url_credentials_regex();
    let hit = re.is_match(text);
    let url_hit = text.contains("://") && urls.is_match(text);
    if !hit && !url_hit {
        return None;
    }
    let mut out = if hit {
        re.replace_all(text, |c: &regex::Captures<'_>| {
            let whole = &c[0];
            match c.get(1) {
                Some(scheme) => {
                    let secret = c.get(2).map_or("", |m| m.as_str());
                    format!("{} {}", scheme.as_str(), mask_secret(secret))
                }
                None => mask_secret(whole),
            }
        })
        .into_owned()
    } else {
        text.to_owned()
    };
    if url_hit {
        out = urls.replace_all(&out, "${1}[REDACTED]@").into_owned();
    }
    Some(out)
}

/// Writer wrapper that scrubs each formatted event (the fmt layer writes one event per call).
pub struct ScrubWriter<W> {
    inner: W,
}

impl<W: Write> Write for ScrubWriter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match std::str::from_utf8(buf).ok().and_then(scrub_secrets) {
            Some(clean) => self.inner.write_all(clean.as_bytes())?,
            None => self.inner.write_all(buf)?,
        }
        Ok(buf.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// `MakeWriter` adapter adding [`ScrubWriter`].
pub struct ScrubMakeWriter<M> {
    inner: M,
}

impl<M> ScrubMakeWriter<M> {
    pub fn new(inner: M) -> Self {
        ScrubMakeWriter { inner }
    }
}

impl<'a, M: MakeWriter<'a>> MakeWriter<'a> for ScrubMakeWriter<M> {
    type Writer = ScrubWriter<M::Writer>;
    fn make_writer(&'a self) -> Self::Writer {
        ScrubWriter {
            inner: self.inner.make_writer(),
        }
    }
}

/// Event fields collected into a JSON map.
struct JsonVisitor<'a>(&'a mut Map<String, Value>);

impl Visit for JsonVisitor<'_> {
    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        self.0
            .insert(field.name().to_owned(), Value::String(format!("{value:?}")));
    }
    fn record_str(&mut self, field: &Field, value: &str) {
        self.0
            .insert(field.name().to_owned(), Value::String(value.to_owned()));
    }
    fn record_i64(&mut self, field: &Field, value: i64) {
        self.0.insert(field.name().to_owned(), value.into());
    }
    fn record_u64(&mut self, field: &Field, value: u64) {
        self.0.insert(field.name().to_owned(), value.into());
    }
    fn record_f64(&mut self, field: &Field, value: f64) {
        self.0.insert(field.name().to_owned(), value.into());
    }
    fn record_bool(&mut self, field: &Field, value: bool) {
        self.0.insert(field.name().to_owned(), value.into());
    }
    fn record_error(&mut self, field: &Field, value: &(dyn std::error::Error + 'static)) {
        self.0
            .insert(field.name().to_owned(), Value::String(value.to_string()));
    }
}

/// JSON line formatter: `{"timestamp","level","target",<span fields, outermost first>,
/// "span":"<innermost span name>",<event fields incl. "message">}`. Span fields sit at the top level
/// so `request_id` can be queried directly; event fields win on a name clash.
pub struct JsonLine;

impl<S, N> FormatEvent<S, N> for JsonLine
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        let meta = event.metadata();
        let mut obj = Map::new();
        obj.insert(
            "timestamp".into(),
            Value::String(chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Micros, true)),
        );
        obj.insert("level".into(), Value::String(meta.level().to_string()));
        obj.insert("target".into(), Value::String(meta.target().to_owned()));
        if let Some(scope) = ctx.event_scope() {
            let mut innermost = None;
            for span in scope.from_root() {
                let ext = span.extensions();
                if let Some(fields) = ext.get::<FormattedFields<N>>() {
                    // Span fields are stored pre-rendered by `JsonFields` as a JSON object.
                    if let Ok(Value::Object(m)) = serde_json::from_str::<Value>(fields.as_str()) {
                        obj.extend(m);
                    }
                }
                innermost = Some(span.name());
            }
            if let Some(name) = innermost {
                obj.insert("span".into(), Value::String(name.to_owned()));
            }
        }
        event.record(&mut JsonVisitor(&mut obj));
        let line = serde_json::to_string(&obj).map_err(|_| fmt::Error)?;
        writeln!(writer, "{line}")
    }
}

fn filter_for(cfg: &TelemetryConfig) -> Result<EnvFilter, TelemetryError> {
    if let Ok(v) = std::env::var("RUST_LOG") {
        if !v.trim().is_empty() {
            if let Ok(f) = EnvFilter::try_new(&v) {
                return Ok(f);
            }
        }
    }
    EnvFilter::try_new(&cfg.log_level).map_err(|e| {
        TelemetryError::Config(format!(
            "telemetry.log_level: invalid filter '{}': {e}",
            cfg.log_level
        ))
    })
}

type BoxedSubscriber = Box<dyn Subscriber + Send + Sync + 'static>;

/// The subscriber `init_logs` installs, writing to `make_writer` (exposed for tests and embedding).
pub fn build_subscriber<M>(
    cfg: &TelemetryConfig,
    filter: EnvFilter,
    make_writer: M,
) -> BoxedSubscriber
where
    M: for<'a> MakeWriter<'a> + Send + Sync + 'static,
{
    let writer = ScrubMakeWriter::new(make_writer);
    match cfg.log_format {
        LogFormat::Json => Box::new(
            tracing_subscriber::fmt()
                .fmt_fields(JsonFields::new())
                .event_format(JsonLine)
                .with_env_filter(filter)
                .with_writer(writer)
                .finish(),
        ),
        LogFormat::Pretty => Box::new(
            tracing_subscriber::fmt()
                .pretty()
                .with_env_filter(filter)
                .with_writer(writer)
                .finish(),
        ),
    }
}

/// Lines waiting for the log thread; beyond this, lines are dropped (and counted) rather than
/// blocking a request on a slow stderr (a full pipe, a stalled log collector).
const LOG_QUEUE_LINES: usize = 16 * 1024;

/// A `MakeWriter` that hands each formatted event to a background thread writing stderr, so
/// logging never does blocking I/O on a request thread.
#[derive(Clone)]
pub struct NonBlockingStderr {
    tx: std::sync::mpsc::SyncSender<Vec<u8>>,
    pending: std::sync::Arc<std::sync::atomic::AtomicUsize>,
}

static LOG_LINES_DROPPED: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
static LOG_PENDING: std::sync::OnceLock<std::sync::Arc<std::sync::atomic::AtomicUsize>> =
    std::sync::OnceLock::new();

impl NonBlockingStderr {
    fn spawn() -> io::Result<NonBlockingStderr> {
        let (tx, rx) = std::sync::mpsc::sync_channel::<Vec<u8>>(LOG_QUEUE_LINES);
        let pending = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let counter = pending.clone();
        std::thread::Builder::new()
            .name("jimini-log".into())
            .spawn(move || {
                let mut err = io::stderr();
                for line in rx {
                    let _ = err.write_all(&line);
                    counter.fetch_sub(1, Ordering::Release);
                }
            })?;
        let _ = LOG_PENDING.set(pending.clone());
        Ok(NonBlockingStderr { tx, pending })
    }
}

/// One event's bytes; sent to the log thread when the formatter drops it.
pub struct QueuedLine {
    buf: Vec<u8>,
    sink: NonBlockingStderr,
}

impl Write for QueuedLine {
    fn write(&mut self, b: &[u8]) -> io::Result<usize> {
        self.buf.extend_from_slice(b);
        Ok(b.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl Drop for QueuedLine {
    fn drop(&mut self) {
        if self.buf.is_empty() {
            return;
        }
        self.sink.pending.fetch_add(1, Ordering::AcqRel);
        if self
            .sink
            .tx
            .try_send(std::mem::take(&mut self.buf))
            .is_err()
        {
            self.sink.pending.fetch_sub(1, Ordering::AcqRel);
            LOG_LINES_DROPPED.fetch_add(1, Ordering::Relaxed);
        }
    }
}

impl<'a> MakeWriter<'a> for NonBlockingStderr {
    type Writer = QueuedLine;
    fn make_writer(&'a self) -> QueuedLine {
        QueuedLine {
            buf: Vec::with_capacity(256),
            sink: self.clone(),
        }
    }
}

/// Log lines dropped because the log thread could not keep up.
pub fn log_lines_dropped() -> u64 {
    LOG_LINES_DROPPED.load(Ordering::Relaxed)
}

/// Wait (bounded) until queued log lines are written; call before the process exits.
pub fn flush_logs(timeout: std::time::Duration) {
    let Some(pending) = LOG_PENDING.get() else {
        return;
    };
    let deadline = std::time::Instant::now() + timeout;
    while pending.load(Ordering::Acquire) > 0 && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
}

/// Install the global subscriber (stderr, so stdout stays clean for CLI output). Idempotent: after
/// the first successful call (or if another global subscriber already exists) later calls are no-ops.
pub fn init_logs(cfg: &TelemetryConfig) -> Result<(), TelemetryError> {
    static DONE: AtomicBool = AtomicBool::new(false);
    static LOCK: Mutex<()> = Mutex::new(());
    if DONE.load(Ordering::Acquire) {
        return Ok(());
    }
    let _g = LOCK.lock().unwrap_or_else(|e| e.into_inner());
    if DONE.load(Ordering::Acquire) {
        return Ok(());
    }
    let filter = filter_for(cfg)?;
    let sub = match NonBlockingStderr::spawn() {
        Ok(writer) => build_subscriber(cfg, filter, writer),
        // No thread for logging: fall back to writing stderr directly.
        Err(_) => build_subscriber(cfg, filter, io::stderr),
    };
    // Failure means some other global subscriber is installed already; keep it.
    let _ = sub.try_init();
    DONE.store(true, Ordering::Release);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[derive(Clone, Default)]
    struct Buf(Arc<Mutex<Vec<u8>>>);
    impl Write for Buf {
        fn write(&mut self, b: &[u8]) -> io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }
    impl<'a> MakeWriter<'a> for Buf {
        type Writer = Buf;
        fn make_writer(&'a self) -> Buf {
            self.clone()
        }
    }
    impl Buf {
        fn text(&self) -> String {
            String::from_utf8(self.0.lock().unwrap().clone()).unwrap()
        }
    }

    #[test]
    fn mask_secret_shapes() {
        assert_eq!(mask_secret("sk-abcdefghijkl"), "sk-a…[15]");
        assert_eq!(mask_secret("short"), "…[5]");
        assert_eq!(mask_secret(""), "…[0]");
        // multibyte safe
        assert_eq!(mask_secret("ééééééééééééé"), "éééé…[13]");
    }

    #[test]
    fn scrubber_masks_known_secret_shapes() {
        let cases = [
            ("auth Bearer abcdefghijklmnop done", "abcdefghijklmnop"),
            ("key sk-proj-ABCDEFGHIJKLMNOPQRST", "ABCDEFGHIJKLMNOPQRST"),
            ("aws AKIAABCDEFGHIJKLMNOP", "AKIAABCDEFGHIJKLMNOP"),
            (
                "jwt eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxIn0.c2lnbmF0dXJl",
                "eyJzdWIiOiIxIn0",
            ),
            (
                "ghp_abcdefghijklmnopqrstuvwxyz0123456789",
                "ghp_abcdefghijklmnopqrstuvwxyz0123456789",
            ),
            ("redis://user:hunter2pass@host:6379", "hunter2pass"),
        ];
        for (input, secret) in cases {
            let out = scrub_secrets(input).unwrap_or_else(|| panic!("not scrubbed: {input}"));
            assert!(!out.contains(secret), "{input} -> {out}");
        }
        assert_eq!(scrub_secrets("plain text, 200 OK, model gpt-4o"), None);
        let out = scrub_secrets("Authorization: Bearer abcdefghijklmnop").unwrap();
        assert!(out.starts_with("Authorization: Bearer abcd…[16]"), "{out}");
    }

    proptest::proptest! {
        #[test]
        fn embedded_keys_are_always_masked(
            before in "[a-z ,.:=\"]{0,40}",
            key in "[A-Za-z0-9]{20,48}",
            after in "[a-z ,.:\"]{0,40}",
        ) {
            let secret = format!("sk-{key}");
            let text = format!("{before} {secret} {after}");
            let out = scrub_secrets(&text);
            proptest::prop_assert!(out.is_some());
            proptest::prop_assert!(!out.unwrap().contains(&secret));
        }

        #[test]
        fn scrubber_never_panics(s in "\\PC{0,200}") {
            let _ = scrub_secrets(&s);
        }
    }

    #[test]
    fn json_lines_carry_request_id_and_are_scrubbed() {
        let buf = Buf::default();
        let cfg = TelemetryConfig::default();
        let sub = build_subscriber(&cfg, EnvFilter::new("info"), buf.clone());
        tracing::subscriber::with_default(sub, || {
            let span = tracing::info_span!("request", request_id = %"req-123");
            let _e = span.enter();
            tracing::info!(status = 200u64, "upstream answered");
            tracing::warn!("leaked key sk-ABCDEFGHIJKLMNOPQRSTUV in message");
            tracing::debug!("filtered out");
            let inner = tracing::info_span!("scan", dir = "request");
            inner.in_scope(|| tracing::info!(findings = 2u64, "scanned"));
        });
        let text = buf.text();
        let lines: Vec<Value> = text
            .lines()
            .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
            .collect();
        assert_eq!(lines.len(), 3, "{text}");
        for l in &lines {
            assert_eq!(l["request_id"], "req-123", "{l}");
            assert!(l["timestamp"].is_string() && l["level"].is_string());
        }
        assert_eq!(lines[0]["message"], "upstream answered");
        assert_eq!(lines[0]["status"], 200);
        assert_eq!(lines[0]["level"], "INFO");
        assert_eq!(lines[0]["span"], "request");
        assert!(!text.contains("ABCDEFGHIJKLMNOPQRSTUV"));
        assert_eq!(lines[2]["dir"], "request");
        assert_eq!(lines[2]["span"], "scan");
        assert_eq!(lines[2]["findings"], 2);
    }

    #[test]
    fn pretty_format_and_level_filter() {
        let buf = Buf::default();
        let cfg = TelemetryConfig {
            log_format: LogFormat::Pretty,
            ..TelemetryConfig::default()
        };
        let sub = build_subscriber(&cfg, EnvFilter::new("warn"), buf.clone());
        tracing::subscriber::with_default(sub, || {
            tracing::info!("quiet");
            tracing::warn!(token = "Bearer abcdefghijklmnop", "loud");
        });
        let text = buf.text();
        assert!(text.contains("loud") && !text.contains("quiet"), "{text}");
        assert!(!text.contains("abcdefghijklmnop"));
    }

    #[test]
    fn init_logs_is_idempotent_and_validates_level() {
        let cfg = TelemetryConfig::default();
        init_logs(&cfg).unwrap();
        init_logs(&cfg).unwrap();
        let bad = TelemetryConfig {
            log_level: "info,[[[".into(),
            ..TelemetryConfig::default()
        };
        assert!(filter_for(&bad).is_err() || std::env::var("RUST_LOG").is_ok());
    }
}
