//! Process-wide state: the live [`Snapshot`] (config + compiled rules + routing) behind an
//! `ArcSwap`, and the long-lived services every request talks to (metrics, tracer, audit writer,
//! rate limiter, breakers). Reload = fallible `prepare` then an infallible `store`.

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use arc_swap::ArcSwap;

use super::peer::Gateway;
use crate::audit::AuditHandle;
use crate::config::Config;
use crate::rules::{Mode, RuleSet, RulesOptions};
use crate::telemetry::{Metrics, Tracing};
use crate::upstream::{CallerAuth, Limiter};

/// Everything a request needs that can change on reload. A request loads it once and keeps the
/// `Arc` to its end, so a reload never changes a request midway.
pub struct Snapshot {
    pub config: Arc<Config>,
    pub rules: Arc<RuleSet>,
    pub gateway: Arc<Gateway>,
    pub callers: Arc<CallerAuth>,
    pub shadow: bool,
    pub generation: u64,
}

/// Where the configuration comes from.
#[derive(Clone, Debug)]
pub enum ConfigSource {
    File(PathBuf),
    /// The embedded default (`jimini serve` without `-c` and no `conf/jimini.yaml`).
    Embedded,
}

pub struct App {
    snapshot: ArcSwap<Snapshot>,
    pub source: ConfigSource,
    shadow_override: Mutex<Option<bool>>,
    generation: AtomicU64,
    reload_lock: Mutex<()>,
    hash_key: Vec<u8>,
    pub metrics: Metrics,
    pub tracing: Tracing,
    pub audit: Option<AuditHandle>,
    pub limiter: Limiter,
}

impl App {
    /// Build the first snapshot; any error here stops start-up.
    pub fn new(
        source: ConfigSource,
        config: Config,
        metrics: Metrics,
        tracing: Tracing,
        audit: Option<AuditHandle>,
        limiter: Limiter,
    ) -> anyhow::Result<Arc<App>> {
        let hash_key = match &config.rules.hash_key {
            Some(k) if !k.is_empty() => k.as_bytes().to_vec(),
            // Without a configured key, hashes are stable for this process only; documented in
            // the config reference so operators set JIMINI_HASH_KEY for cross-replica stability.
            _ => rand::random::<[u8; 32]>().to_vec(),
        };
        let first = Self::prepare_with(
            matches!(source, ConfigSource::Embedded),
            &config,
            &hash_key,
            None,
            None,
            1,
        )
        .map_err(|e| anyhow::anyhow!(e))?;
        let names: Vec<&str> = config.upstreams.iter().map(|u| u.name.as_str()).collect();
        metrics.preinit(&names, &["chat", "completions", "responses", "messages"]);
        Ok(Arc::new(App {
            snapshot: ArcSwap::from_pointee(first),
            source,
            shadow_override: Mutex::new(None),
            generation: AtomicU64::new(1),
            reload_lock: Mutex::new(()),
            hash_key,
            metrics,
            tracing,
            audit,
            limiter,
        }))
    }

    pub fn snapshot(&self) -> Arc<Snapshot> {
        self.snapshot.load_full()
    }

    fn prepare_with(
        embedded: bool,
        config: &Config,
        hash_key: &[u8],
        shadow_override: Option<bool>,
        previous: Option<&Snapshot>,
        generation: u64,
    ) -> Result<Snapshot, String> {
        let shadow = shadow_override.unwrap_or(config.rules.mode == Mode::Shadow);
        let opts = RulesOptions {
            global_shadow: shadow,
            hash_key: hash_key.to_vec(),
            max_holdback: config.rules.max_holdback,
        };
        let rules = if config.rules.dir.exists() {
            RuleSet::load_dir(&config.rules.dir, &opts).map_err(|e| e.to_string())?
        } else if embedded {
            // `jimini serve` with the embedded default, outside a checkout: the shipped packs
            // are compiled into the binary.
            RuleSet::from_sources(&crate::config::embedded_rules(), &opts)
                .map_err(|e| e.to_string())?
        } else {
            return Err(format!(
                "rules.dir `{}` does not exist (set rules.dir or JIMINI_RULES_DIR)",
                config.rules.dir.display()
            ));
        };
        let gateway = Gateway::new(
            &config.upstreams,
            &config.routes,
            previous.map(|p| p.gateway.as_ref()),
        )
        .map_err(|e| e.to_string())?;
        let callers = CallerAuth::new(&config.callers).map_err(|e| e.to_string())?;
        Ok(Snapshot {
            config: Arc::new(config.clone()),
            rules: Arc::new(rules),
            gateway: Arc::new(gateway),
            callers: Arc::new(callers),
            shadow,
            generation,
        })
    }

    /// Re-read config and rules, compile, and swap. A failure keeps the current snapshot.
    pub fn reload(&self) -> Result<u64, String> {
        let _guard = self.reload_lock.lock().unwrap_or_else(|p| p.into_inner());
        let result = self.reload_locked();
        self.metrics.rules_reload(result.is_ok());
        match &result {
            Ok(generation) => tracing::info!(generation, "configuration and rules reloaded"),
            Err(e) => tracing::error!(error = %e, "reload rejected; previous rules stay live"),
        }
        result
    }

    fn reload_locked(&self) -> Result<u64, String> {
        let current = self.snapshot();
        let config = match &self.source {
            ConfigSource::File(path) => Config::load(path).map_err(|e| e.to_string())?,
            ConfigSource::Embedded => (*current.config).clone(),
        };
        let shadow_override = *self
            .shadow_override
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        let generation = self.generation.fetch_add(1, Ordering::SeqCst) + 1;
        let next = Self::prepare_with(
            matches!(self.source, ConfigSource::Embedded),
            &config,
            &self.hash_key,
            shadow_override,
            Some(&current),
            generation,
        )?;
        // Limits keep their bucket state; only the configured rates change.
        self.limiter
            .update_limits(&config.limits)
            .map_err(|e| e.to_string())?;
        self.snapshot.store(Arc::new(next));
        Ok(generation)
    }

    /// Admin toggle of global shadow mode; survives reloads until toggled again.
    pub fn set_shadow(&self, on: bool) -> Result<u64, String> {
        *self
            .shadow_override
            .lock()
            .unwrap_or_else(|p| p.into_inner()) = Some(on);
        self.reload()
    }

    /// Paths whose changes trigger a reload.
    pub fn watched_paths(&self) -> Vec<PathBuf> {
        let snap = self.snapshot();
        let mut paths = vec![snap.config.rules.dir.clone()];
        if let ConfigSource::File(p) = &self.source {
            paths.push(p.clone());
        }
        // Embedded packs (no rules directory) have nothing to watch.
        paths.retain(|p| p.exists());
        paths
    }

    /// Ready: rules live (always, once constructed), at least one upstream usable, audit accepting.
    pub fn readiness(&self) -> (bool, serde_json::Value) {
        let snap = self.snapshot();
        let upstream_ready = snap.gateway.ready();
        let audit_ok = self.audit.as_ref().is_none_or(|a| a.accepting());
        let ready = upstream_ready && audit_ok;
        (
            ready,
            serde_json::json!({
                "ready": ready,
                "config_generation": snap.generation,
                "rules": snap.rules.rule_count(),
                "upstream_available": upstream_ready,
                "audit_accepting": audit_ok,
                "shadow": snap.shadow,
            }),
        )
    }
}
