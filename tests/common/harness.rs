//! End-to-end harness: starts the real `jimini` binary on ephemeral loopback ports against an
//! in-process mock upstream, with a per-test config, rules and audit directory.
#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use jimini::mock::{MockConfig, MockServer};

pub fn free_port() -> u16 {
    let [port] = free_ports::<1>();
    port
}

/// `N` distinct loopback ports, free when picked. All are held bound until every one is picked:
/// a port released and then asked for again can come back (`bind(…:0)` starts its search at a
/// random port each time), and a jimini given one port for both its proxy and its admin listener
/// serves the admin API where the proxy should be (pingora retries the port its own admin
/// listener holds, and the proxy port looks ready since that process does listen on it), so a
/// client talking to "the proxy" gets the admin API's 404s.
pub fn free_ports<const N: usize>() -> [u16; N] {
    let held: Vec<TcpListener> = (0..N)
        .map(|_| TcpListener::bind("127.0.0.1:0").expect("bind an ephemeral port"))
        .collect();
    std::array::from_fn(|i| {
        held[i]
            .local_addr()
            .map(|a| a.port())
            .expect("bound address")
    })
}

/// A loopback port that refuses connections for as long as this lives: a TCP socket bound to
/// it but never listening. (A port from [`free_port`] is only free until a server started by a
/// parallel test picks it, which then answers instead of refusing.)
pub struct ClosedPort {
    _socket: socket2::Socket,
    pub port: u16,
}

impl ClosedPort {
    pub fn new() -> ClosedPort {
        use socket2::{Domain, Socket, Type};
        let socket = Socket::new(Domain::IPV4, Type::STREAM, None).expect("create a socket");
        let addr: std::net::SocketAddr = "127.0.0.1:0".parse().expect("loopback address");
        socket.bind(&addr.into()).expect("bind an ephemeral port");
        let port = socket
            .local_addr()
            .ok()
            .and_then(|a| a.as_socket())
            .map(|a| a.port())
            .expect("bound address");
        ClosedPort {
            _socket: socket,
            port,
        }
    }
}

fn write_config(
    opts: &Options,
    mock: &MockServer,
    dir: &Path,
    rules_dir: &Path,
    audit_dir: &Path,
    proxy_port: u16,
    admin_port: u16,
) -> PathBuf {
    let upstreams = opts.upstreams_yaml.clone().unwrap_or_else(|| {
        format!(
            "upstreams:\n  - name: mock\n    base_url: http://{}\n",
            mock.addr
        )
    });
    let yaml = format!(
        "listen: 127.0.0.1:{proxy_port}\n\
         server:\n  threads: 2\n  grace_period_secs: 0\n  shutdown_timeout_secs: 1\n\
         admin:\n  listen: 127.0.0.1:{admin_port}\n  jwt:\n    secret: test-secret-0123456789abcdef-0123456789abcdef\n\
         {upstreams}\
         rules:\n  dir: {rules}\n  mode: {mode}\n  reload_debounce_ms: 100\n\
         audit:\n  enabled: {audit}\n  dir: {audit_dir}\n  fsync: batch\n{audit_extra}\
         telemetry:\n  log_format: json\n  log_level: info\n{telemetry}\
         {extra}\n",
        rules = rules_dir.display(),
        mode = opts.rules_mode,
        audit = opts.audit,
        audit_dir = audit_dir.display(),
        audit_extra = opts.audit_yaml,
        telemetry = opts.telemetry_yaml,
        extra = opts.extra_yaml,
    );
    let config_path = dir.join("jimini.yaml");
    std::fs::write(&config_path, yaml).unwrap();
    config_path
}

type Logs = Arc<Mutex<Vec<String>>>;

fn spawn_jimini(opts: &Options, dir: &Path, config_path: &Path) -> (Child, Logs) {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_jimini"));
    cmd.arg("serve")
        .arg("-c")
        .arg(config_path)
        .current_dir(dir)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .env_remove("JIMINI_LISTEN")
        .env_remove("JIMINI_ADMIN_LISTEN")
        .env_remove("JIMINI_UPSTREAM_URL")
        .env_remove("JIMINI_SHADOW")
        .env_remove("OTEL_EXPORTER_OTLP_ENDPOINT")
        .env("RUST_LOG", "info");
    for (k, v) in &opts.env {
        cmd.env(k, v);
    }
    let mut child = cmd.spawn().expect("spawn jimini");
    let logs = Arc::new(Mutex::new(Vec::new()));
    for stream in [
        child
            .stdout
            .take()
            .map(|s| Box::new(s) as Box<dyn std::io::Read + Send>),
        child
            .stderr
            .take()
            .map(|s| Box::new(s) as Box<dyn std::io::Read + Send>),
    ]
    .into_iter()
    .flatten()
    {
        let logs = logs.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stream).lines().map_while(Result::ok) {
                logs.lock().unwrap().push(line);
            }
        });
    }
    (child, logs)
}

/// Both listeners accept, or the logs so far (the process exited, or 30 s passed).
fn wait_ready(
    child: &mut Child,
    logs: &Logs,
    proxy_port: u16,
    admin_port: u16,
) -> Result<(), String> {
    let text = || logs.lock().unwrap().join("\n");
    let deadline = Instant::now() + Duration::from_secs(30);
    let pid = child.id();
    // "Ours" below only tells which listener it is when the two ports differ.
    assert_ne!(
        proxy_port, admin_port,
        "proxy and admin need their own ports"
    );
    loop {
        // Ours, not merely open: a port picked by `free_port` may be held by a parallel test's
        // server, which would accept the probe while this jimini fails to bind (and exits).
        let up = |port: u16| match listener_owned_by(pid, port) {
            Some(ours) => ours,
            None => std::net::TcpStream::connect(("127.0.0.1", port)).is_ok(),
        };
        if up(admin_port) && up(proxy_port) {
            return Ok(());
        }
        // Pingora retries a taken port for 30 s: give up on it at once, the caller picks others.
        if text().contains(" is in use, will try again") {
            let _ = child.kill();
            let _ = child.wait();
            return Err(format!("Address already in use (pingora)\n{}", text()));
        }
        if let Ok(Some(_)) = child.try_wait() {
            // Give the log readers a moment to drain the pipes.
            std::thread::sleep(Duration::from_millis(100));
            return Err(text());
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            return Err(text());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Whether process `pid` holds the socket listening on 127.0.0.1:`port` (Linux `/proc`);
/// `None` where `/proc` cannot tell.
pub fn listener_owned_by(pid: u32, port: u16) -> Option<bool> {
    let table = std::fs::read_to_string("/proc/net/tcp").ok()?;
    let local = format!("0100007F:{port:04X}");
    let inodes: Vec<String> = table
        .lines()
        .skip(1)
        .filter_map(|line| {
            let cols: Vec<&str> = line.split_whitespace().collect();
            // local_address, state 0A = LISTEN, inode
            (cols.get(1) == Some(&local.as_str()) && cols.get(3) == Some(&"0A"))
                .then(|| cols.get(9).map(|i| format!("socket:[{i}]")))
                .flatten()
        })
        .collect();
    if inodes.is_empty() {
        return Some(false);
    }
    let fds = std::fs::read_dir(format!("/proc/{pid}/fd")).ok()?;
    Some(fds.flatten().any(|fd| {
        std::fs::read_link(fd.path())
            .map(|l| inodes.iter().any(|i| l.as_os_str() == i.as_str()))
            .unwrap_or(false)
    }))
}

pub fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Copy the shipped rule packs into `dst`.
pub fn copy_shipped_rules(dst: &Path) {
    std::fs::create_dir_all(dst).unwrap();
    for entry in std::fs::read_dir(repo_root().join("rules")).unwrap() {
        let entry = entry.unwrap();
        let p = entry.path();
        if p.extension().is_some_and(|e| e == "yaml" || e == "yml") {
            std::fs::copy(&p, dst.join(entry.file_name())).unwrap();
        }
    }
}

pub struct Options {
    /// Extra YAML appended to the generated config (top-level sections).
    pub extra_yaml: String,
    /// Replace the generated `upstreams:` section.
    pub upstreams_yaml: Option<String>,
    pub env: Vec<(String, String)>,
    pub mock: MockConfig,
    /// Use these rule files instead of the shipped packs: (file name, yaml).
    pub rules: Option<Vec<(String, String)>>,
    pub rules_mode: &'static str,
    pub audit: bool,
    /// Extra lines inside the generated `telemetry:` section, each indented by two spaces and
    /// ending in a newline (e.g. `"  otlp: {enabled: true}\n"`). `extra_yaml` cannot add these:
    /// a second top-level `telemetry:` key is a duplicate.
    pub telemetry_yaml: String,
    /// Use this audit directory instead of `<temp dir>/audit`, e.g. to start a second instance on
    /// the log of a first one (keep whatever owns the directory alive). Default: none.
    pub audit_dir: Option<PathBuf>,
    /// Extra lines inside the generated `audit:` section, each indented by two spaces and ending
    /// in a newline (e.g. `"  max_file_bytes: 4096\n"`). Default: empty.
    pub audit_yaml: String,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            extra_yaml: String::new(),
            upstreams_yaml: None,
            env: Vec::new(),
            mock: MockConfig {
                enabled: true,
                listen: "127.0.0.1:0".into(),
                ..Default::default()
            },
            rules: None,
            rules_mode: "enforce",
            audit: true,
            telemetry_yaml: String::new(),
            audit_dir: None,
            audit_yaml: String::new(),
        }
    }
}

pub struct Jimini {
    pub child: Child,
    pub dir: tempfile::TempDir,
    pub proxy: String,
    pub admin: String,
    pub mock: MockServer,
    pub config_path: PathBuf,
    pub rules_dir: PathBuf,
    pub audit_dir: PathBuf,
    pub logs: Arc<Mutex<Vec<String>>>,
}

impl Jimini {
    pub fn start(opts: Options) -> Jimini {
        let mock =
            MockServer::spawn_thread("127.0.0.1:0", opts.mock.clone()).expect("mock upstream");
        Self::start_with_mock(opts, mock)
    }

    pub fn start_with_mock(opts: Options, mock: MockServer) -> Jimini {
        let dir = tempfile::tempdir().unwrap();
        let rules_dir = dir.path().join("rules");
        match &opts.rules {
            Some(files) => {
                std::fs::create_dir_all(&rules_dir).unwrap();
                for (name, yaml) in files {
                    std::fs::write(rules_dir.join(name), yaml).unwrap();
                }
            }
            None => copy_shipped_rules(&rules_dir),
        }
        let audit_dir = opts
            .audit_dir
            .clone()
            .unwrap_or_else(|| dir.path().join("audit"));
        // A port picked by `free_port` can be taken by someone else (another test's outgoing
        // connection) before jimini binds it: start again on fresh ports when that happens.
        let mut attempt = 0;
        let (child, logs, proxy_port, admin_port, config_path) = loop {
            attempt += 1;
            let [proxy_port, admin_port] = free_ports::<2>();
            let config_path = write_config(
                &opts,
                &mock,
                dir.path(),
                &rules_dir,
                &audit_dir,
                proxy_port,
                admin_port,
            );
            let (mut child, logs) = spawn_jimini(&opts, dir.path(), &config_path);
            match wait_ready(&mut child, &logs, proxy_port, admin_port) {
                Ok(()) => break (child, logs, proxy_port, admin_port, config_path),
                Err(text) if attempt < 5 && text.contains("Address already in use") => continue,
                Err(text) => panic!("jimini did not start; logs:\n{text}"),
            }
        };
        Jimini {
            child,
            dir,
            proxy: format!("127.0.0.1:{proxy_port}"),
            admin: format!("127.0.0.1:{admin_port}"),
            mock,
            config_path,
            rules_dir,
            audit_dir,
            logs,
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.proxy, path)
    }

    pub fn admin_url(&self, path: &str) -> String {
        format!("http://{}{}", self.admin, path)
    }

    pub fn logs_text(&self) -> String {
        self.logs.lock().unwrap().join("\n")
    }

    pub fn client() -> reqwest::blocking::Client {
        reqwest::blocking::Client::builder()
            .timeout(Duration::from_secs(30))
            .build()
            .unwrap()
    }

    /// Send SIGTERM and wait (bounded) for exit.
    pub fn stop(&mut self) {
        unsafe {
            libc::kill(self.child.id() as i32, libc::SIGTERM);
        }
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    pub fn kill9(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    pub fn token(&self, role: &str) -> String {
        let out = Command::new(env!("CARGO_BIN_EXE_jimini"))
            .args(["token", "-c"])
            .arg(&self.config_path)
            .args(["--role", role, "--ttl", "10m"])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap().trim().to_string()
    }
}

impl Drop for Jimini {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// The JSON payloads of an SSE body's `data:` lines (`[DONE]` and non-JSON lines skipped).
pub fn sse_chunks(body: &str) -> Vec<serde_json::Value> {
    body.lines()
        .filter_map(|line| line.strip_prefix("data: "))
        .filter_map(|data| serde_json::from_str(data).ok())
        .collect()
}

/// Concatenate the chat `delta.content` of an SSE body.
pub fn sse_chat_text(body: &str) -> String {
    let mut out = String::new();
    for v in sse_chunks(body) {
        if let Some(choices) = v["choices"].as_array() {
            for c in choices {
                if let Some(t) = c["delta"]["content"].as_str() {
                    out.push_str(t);
                }
            }
        }
    }
    out
}

/// The text a client reads from a response body: streamed bodies (SSE) are reassembled from
/// their text deltas (chat `delta.content`, legacy `choices[].text`, Anthropic `delta.text`,
/// Responses `response.output_text.delta`), since Jimini releases streamed text as soon as it
/// is final and a mask may span several events; other bodies are returned as is.
pub fn client_text(body: &str) -> String {
    if !body.lines().any(|l| l.starts_with("data: ")) {
        return body.to_string();
    }
    let mut out = String::new();
    for line in body.lines() {
        let Some(data) = line.strip_prefix("data: ") else {
            continue;
        };
        let Ok(v) = serde_json::from_str::<serde_json::Value>(data) else {
            continue;
        };
        for c in v["choices"].as_array().into_iter().flatten() {
            for t in [&c["delta"]["content"], &c["text"]] {
                out.push_str(t.as_str().unwrap_or(""));
            }
        }
        out.push_str(v["delta"]["text"].as_str().unwrap_or(""));
        if v["type"] == "response.output_text.delta" {
            out.push_str(v["delta"].as_str().unwrap_or(""));
        }
    }
    out
}
