//! The command line: `serve`, `check`, `scan`, `rules test`, `audit …`, `token`,
//! `mock-upstream` and `healthcheck`. Parsing is clap; each command is a thin call into the
//! library, and errors surface here (the binary's edge) with a non-zero exit code.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, Subcommand};

use crate::config::{Config, EMBEDDED_CONFIG};
use crate::proxy::ConfigSource;

#[derive(Parser, Debug)]
#[command(
    name = "jimini",
    version,
    about = "Streaming policy proxy for OpenAI-compatible LLM APIs: redacts PII and secrets, \
             enforces rule packs, audits every request."
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Run the proxy (and the admin API, and the built-in mock upstream when configured).
    Serve {
        /// Config file. Default: conf/jimini.yaml if present, else the embedded default.
        #[arg(short, long)]
        config: Option<PathBuf>,
    },
    /// Validate a config file and the rule packs it names; exit 1 with the key path on error.
    Check {
        #[arg(short, long)]
        config: PathBuf,
    },
    /// Redact stdin with the built-in detectors and print the result.
    Scan {
        /// Print `{"findings":[{"detector","start","end"}],"redacted":"…"}` (byte offsets).
        #[arg(long)]
        json: bool,
    },
    /// Rule-pack tools.
    Rules {
        #[command(subcommand)]
        command: RulesCommand,
    },
    /// Audit-log tools.
    Audit {
        #[command(subcommand)]
        command: AuditCommand,
    },
    /// Print an admin JWT signed with the configured HS256 secret.
    Token {
        #[arg(short, long)]
        config: PathBuf,
        /// viewer | operator | admin
        #[arg(long)]
        role: String,
        /// Lifetime, e.g. 30m, 1h, 2d.
        #[arg(long, default_value = "1h")]
        ttl: String,
        /// The token's subject (who is acting), recorded in the audit log.
        #[arg(long, default_value = "cli")]
        sub: String,
    },
    /// Run the built-in OpenAI-compatible mock upstream.
    MockUpstream {
        #[arg(long, default_value = "127.0.0.1:18080")]
        listen: String,
        /// Characters per streamed delta.
        #[arg(long, default_value_t = 4)]
        chunk_chars: usize,
        /// Delay between streamed deltas (ms).
        #[arg(long, default_value_t = 0)]
        chunk_delay_ms: u64,
    },
    /// Exit 0 if the URL answers 2xx (container HEALTHCHECK without curl).
    Healthcheck {
        #[arg(long, default_value = "http://127.0.0.1:9901/healthz")]
        url: String,
    },
}

#[derive(Subcommand, Debug)]
pub enum RulesCommand {
    /// Evaluate stdin against a rules directory and print the verdict and findings as JSON.
    Test {
        dir: PathBuf,
        #[arg(long)]
        model: Option<String>,
        #[arg(long, default_value = "chat")]
        route: String,
        #[arg(long)]
        caller: Option<String>,
    },
}

#[derive(Subcommand, Debug)]
pub enum AuditCommand {
    /// Verify the hash chain; exit 1 and print the first break.
    Verify {
        /// The audit directory (`audit.dir`; the shipped config's is `./audit`).
        #[arg(default_value = "audit")]
        dir: PathBuf,
    },
    /// Print a data subject's records (GDPR art. 15).
    Export {
        /// The data subject's id (the request's `user` / `safety_identifier`, or `x-jimini-subject`).
        #[arg(long)]
        subject: String,
        /// The audit directory (`audit.dir`).
        #[arg(long, default_value = "audit")]
        dir: PathBuf,
    },
    /// Erase a data subject's identity from the log without breaking verification (art. 17).
    Erase {
        /// The data subject's id (the request's `user` / `safety_identifier`, or `x-jimini-subject`).
        #[arg(long)]
        subject: String,
        /// The audit directory (`audit.dir`).
        #[arg(long, default_value = "audit")]
        dir: PathBuf,
    },
    /// Write dead-lettered records back into the chain.
    Replay {
        /// The audit directory (`audit.dir`; the shipped config's is `./audit`).
        #[arg(default_value = "audit")]
        dir: PathBuf,
    },
}

pub fn main() -> ExitCode {
    let cli = Cli::parse();
    if !matches!(
        cli.command,
        Command::Serve { .. } | Command::MockUpstream { .. }
    ) {
        // One-shot tools behave like Unix filters: `jimini audit export … | head` ends quietly
        // instead of panicking on a closed pipe. The servers keep Rust's default (EPIPE as an
        // error on a socket), as a dead peer must never kill the process.
        // SAFETY: called once at start-up, before any other thread exists.
        unsafe {
            libc::signal(libc::SIGPIPE, libc::SIG_DFL);
        }
    }
    match run(cli) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("jimini: {e:#}");
            ExitCode::from(1)
        }
    }
}

fn load_serve_config(path: Option<PathBuf>) -> anyhow::Result<(ConfigSource, Config)> {
    match path {
        Some(p) => Ok((ConfigSource::File(p.clone()), Config::load(&p)?)),
        None => {
            let default = PathBuf::from("conf/jimini.yaml");
            if default.exists() {
                Ok((ConfigSource::File(default.clone()), Config::load(&default)?))
            } else {
                Ok((
                    ConfigSource::Embedded,
                    Config::parse_str(EMBEDDED_CONFIG, "<embedded conf/jimini.yaml>")?,
                ))
            }
        }
    }
}

pub fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.command {
        Command::Serve { config } => {
            let (source, cfg) = load_serve_config(config)?;
            crate::server::serve(source, cfg)?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Check { config } => check(&config),
        Command::Scan { json } => {
            let mut input = String::new();
            std::io::stdin()
                .read_to_string(&mut input)
                .context("stdin is not valid UTF-8")?;
            let matcher = crate::scan::Matcher::builtin()?;
            let mut out = std::io::stdout().lock();
            if json {
                let report = crate::scan::scan_report(&matcher, &input);
                writeln!(out, "{}", serde_json::to_string(&report)?)?;
            } else {
                let mut rw = crate::scan::BuiltinRewriter::new(&matcher);
                let redacted = crate::scan::rewrite_all(&mut rw, &input).unwrap_or(input);
                out.write_all(redacted.as_bytes())?;
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Rules {
            command:
                RulesCommand::Test {
                    dir,
                    model,
                    route,
                    caller,
                },
        } => {
            let mut input = String::new();
            std::io::stdin()
                .read_to_string(&mut input)
                .context("stdin is not valid UTF-8")?;
            let opts = crate::rules::RulesOptions {
                global_shadow: false,
                hash_key: b"jimini-rules-test".to_vec(),
                max_holdback: 128,
            };
            let rules = crate::rules::RuleSet::load_dir(&dir, &opts)?;
            let report = crate::rules::rules_test_report(
                &rules,
                crate::rules::Scope {
                    model,
                    route,
                    caller,
                },
                &input,
            );
            println!("{}", serde_json::to_string_pretty(&report)?);
            Ok(ExitCode::SUCCESS)
        }
        Command::Audit { command } => audit(command),
        Command::Token {
            config,
            role,
            ttl,
            sub,
        } => {
            let cfg = Config::load(&config)?;
            let ttl = crate::admin::parse_ttl(&ttl).map_err(|e| anyhow::anyhow!(e))?;
            let token = crate::admin::issue_token(&cfg.admin, &role, ttl, &sub)?;
            println!("{token}");
            Ok(ExitCode::SUCCESS)
        }
        Command::MockUpstream {
            listen,
            chunk_chars,
            chunk_delay_ms,
        } => {
            let cfg = crate::mock::MockConfig {
                enabled: true,
                listen: listen.clone(),
                chunk_chars,
                chunk_delay_ms,
                ..Default::default()
            };
            let rt = tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()?;
            rt.block_on(crate::mock::run(&listen, cfg))?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Healthcheck { url } => Ok(healthcheck(&url)),
    }
}

fn check(path: &Path) -> anyhow::Result<ExitCode> {
    let cfg = match Config::load(path) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("{e}");
            return Ok(ExitCode::from(1));
        }
    };
    let opts = crate::rules::RulesOptions {
        global_shadow: false,
        hash_key: b"check".to_vec(),
        max_holdback: cfg.rules.max_holdback,
    };
    match crate::rules::RuleSet::load_dir(&cfg.rules.dir, &opts) {
        Ok(rules) => {
            println!(
                "{}: ok ({} upstreams, {} rules in {})",
                path.display(),
                cfg.upstreams.len(),
                rules.rule_count(),
                cfg.rules.dir.display()
            );
            Ok(ExitCode::SUCCESS)
        }
        Err(e) => {
            eprintln!("{}: at `rules.dir`: {e}", path.display());
            Ok(ExitCode::from(1))
        }
    }
}

fn audit(cmd: AuditCommand) -> anyhow::Result<ExitCode> {
    match cmd {
        AuditCommand::Verify { dir } => {
            let report = crate::audit::verify_dir(&dir)?;
            println!("{}", serde_json::to_string_pretty(&report)?);
            eprintln!("{}", report.summary());
            Ok(if report.ok {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(1)
            })
        }
        AuditCommand::Export { subject, dir } => {
            let records = crate::audit::export_subject(&dir, &subject)?;
            for r in records {
                println!("{}", serde_json::to_string(&r)?);
            }
            Ok(ExitCode::SUCCESS)
        }
        AuditCommand::Erase { subject, dir } => {
            let report = crate::audit::erase_subject(&dir, &subject, None)?;
            println!("{}", serde_json::to_string_pretty(&report)?);
            Ok(ExitCode::SUCCESS)
        }
        AuditCommand::Replay { dir } => {
            let n = crate::audit::replay_dead_letter(&dir)?;
            println!("replayed {n} records");
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// Minimal HTTP/1.1 GET over a TCP socket: the runtime image has no curl.
fn healthcheck(url: &str) -> ExitCode {
    use std::net::TcpStream;
    use std::time::Duration;
    let Some(rest) = url.strip_prefix("http://") else {
        eprintln!("healthcheck: only http:// URLs are supported");
        return ExitCode::from(2);
    };
    let (authority, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    let addr = match std::net::ToSocketAddrs::to_socket_addrs(authority)
        .ok()
        .and_then(|mut a| a.next())
    {
        Some(a) => a,
        None => {
            eprintln!("healthcheck: cannot resolve {authority}");
            return ExitCode::from(1);
        }
    };
    let result = (|| -> std::io::Result<String> {
        let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(3))?;
        s.set_read_timeout(Some(Duration::from_secs(3)))?;
        write!(
            s,
            "GET {path} HTTP/1.1\r\nHost: {authority}\r\nConnection: close\r\n\r\n"
        )?;
        let mut buf = String::new();
        let _ = s.read_to_string(&mut buf);
        Ok(buf)
    })();
    match result {
        Ok(resp) if resp.starts_with("HTTP/1.1 2") || resp.starts_with("HTTP/1.0 2") => {
            ExitCode::SUCCESS
        }
        Ok(resp) => {
            eprintln!(
                "healthcheck: {}",
                resp.lines().next().unwrap_or("empty response")
            );
            ExitCode::from(1)
        }
        Err(e) => {
            eprintln!("healthcheck: {e}");
            ExitCode::from(1)
        }
    }
}
