//! `jimini serve`: assemble the process — logs, metrics, tracer, audit writer, rate limiter, the
//! live snapshot, the in-process mock upstream when the config names it, the admin API, the
//! rules/config watcher and SIGHUP — then hand the proxy service to Pingora.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use pingora::server::configuration::ServerConf;
use pingora::server::Server;

use crate::admin::{self, AdminServer};
use crate::audit::AuditHandle;
use crate::config::Config;
use crate::mock::MockServer;
use crate::proxy::{App, JiminiProxy};
use crate::proxy_admin::Backend;
use crate::telemetry::{self, Metrics, Tracing};
use crate::upstream::Limiter;

pub use crate::proxy::ConfigSource;

/// Everything `serve` started besides Pingora itself; dropped at shutdown.
pub struct Running {
    pub app: Arc<App>,
    _mock: Option<MockServer>,
    _admin: AdminServer,
    _watch: Option<crate::rules::WatchGuard>,
}

/// Start every component except the Pingora server (shared by `serve` and the test harness).
pub fn start(source: ConfigSource, config: Config) -> anyhow::Result<Running> {
    telemetry::init_logs(&config.telemetry).ok();
    let metrics = if config.telemetry.metrics {
        Metrics::new()
    } else {
        Metrics::disabled()
    };
    let tracing_handle = Tracing::init(&config.telemetry).unwrap_or_else(|e| {
        tracing::error!(error = %e, "OTLP tracing disabled: exporter could not start");
        Tracing::disabled()
    });
    let audit = if config.audit.enabled {
        Some(
            AuditHandle::start(&config.audit)
                .with_context(|| format!("audit log at {}", config.audit.dir.display()))?,
        )
    } else {
        None
    };
    let limiter = Limiter::from_config(&config.limits).context("rate limits")?;
    let mock = if config.runs_embedded_mock() {
        let m = MockServer::spawn_thread(&config.mock.listen, config.mock.clone())
            .with_context(|| format!("built-in mock upstream on {}", config.mock.listen))?;
        tracing::info!(listen = %config.mock.listen, "built-in mock upstream running in-process");
        Some(m)
    } else {
        None
    };
    let app = App::new(
        source,
        config.clone(),
        metrics,
        tracing_handle,
        audit,
        limiter,
    )?;
    let backend = Arc::new(Backend::new(app.clone()));
    let admin = admin::spawn_admin(&config.admin, backend)
        .with_context(|| format!("admin listener {}", config.admin.listen))?;

    let watch = {
        let app = app.clone();
        let debounce = Duration::from_millis(config.rules.reload_debounce_ms);
        let paths = app.watched_paths();
        match crate::rules::watch(&paths, debounce, {
            let app = app.clone();
            move || {
                let _ = app.reload();
            }
        }) {
            Ok(guard) => Some(guard),
            Err(_) if paths.is_empty() => None,
            Err(e) => {
                tracing::error!(error = %e, "file watcher unavailable; reload with SIGHUP or the admin API");
                None
            }
        }
    };
    spawn_sighup_reloader(app.clone());
    Ok(Running {
        app,
        _mock: mock,
        _admin: admin,
        _watch: watch,
    })
}

/// `jimini serve`: blocks until SIGTERM/SIGINT and the graceful shutdown complete.
pub fn serve(source: ConfigSource, config: Config) -> anyhow::Result<()> {
    let listen = config.listen.clone();
    let server_cfg = config.server.clone();
    let running = start(source, config)?;

    let mut conf = ServerConf {
        grace_period_seconds: Some(server_cfg.grace_period_secs),
        graceful_shutdown_timeout_seconds: Some(server_cfg.shutdown_timeout_secs),
        // Retries are Jimini's decision (budgeted, idempotency-aware), never pingora's default.
        max_retries: 4,
        ..ServerConf::default()
    };
    if server_cfg.threads > 0 {
        conf.threads = server_cfg.threads;
    } else {
        conf.threads = std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(2);
    }
    let mut server = Server::new_with_opt_and_conf(None, conf);
    server.bootstrap();
    let proxy = JiminiProxy {
        app: running.app.clone(),
    };
    let mut service = pingora::proxy::http_proxy_service(&server.configuration, proxy);
    // Every open client connection holds this buffer; Pingora's 64 KiB default cost 2–7 MB of
    // RSS at 1,000 concurrent streams, with no throughput gain on JSON-sized requests.
    let buffers =
        pingora::listeners::L4BufferSettings::default().read(server_cfg.read_buffer_bytes);
    service
        .add_listener(pingora::listeners::ListenerConfig::tcp(listen.clone()).l4_buffer(buffers));
    server.add_service(service);
    tracing::info!(listen = %listen, version = env!("CARGO_PKG_VERSION"), "jimini proxy listening");
    server.run(pingora::server::RunArgs::default());
    // Pingora returned: drain the audit channel and the span exporter before exit.
    if let Some(audit) = &running.app.audit {
        audit.shutdown(Duration::from_secs(5));
    }
    running.app.tracing.shutdown();
    telemetry::flush_logs(Duration::from_secs(2));
    Ok(())
}

fn spawn_sighup_reloader(app: Arc<App>) {
    use signal_hook::consts::SIGHUP;
    match signal_hook::iterator::Signals::new([SIGHUP]) {
        Ok(mut signals) => {
            let spawned = std::thread::Builder::new()
                .name("jimini-sighup".into())
                .spawn(move || {
                    for _ in signals.forever() {
                        tracing::info!("SIGHUP: reloading configuration and rules");
                        let _ = app.reload();
                    }
                });
            if let Err(e) = spawned {
                tracing::error!(error = %e, "cannot start the SIGHUP thread");
            }
        }
        Err(e) => tracing::error!(error = %e, "cannot install the SIGHUP handler"),
    }
}
