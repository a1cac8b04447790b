//! Hot-reload trigger: a notify watcher on the rules directory and config file, debounced in a
//! background thread. Directories are watched non-recursively, files through their parent directory
//! (so editor rename-writes and Kubernetes ConfigMap `..data` symlink swaps are seen), and a watched
//! directory that is itself replaced is re-watched.

use std::collections::HashSet;
use std::ffi::OsString;
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::mpsc::{self, RecvTimeoutError, Sender};
use std::thread;
use std::time::{Duration, Instant};

use notify::{Event, EventKind, RecommendedWatcher, RecursiveMode, Watcher};

use super::RulesError;

enum Msg {
    Fs(notify::Result<Event>),
    Stop,
}

/// Stops the watcher when dropped (the background thread exits after its current callback).
pub struct WatchGuard {
    tx: Sender<Msg>,
}

impl Drop for WatchGuard {
    fn drop(&mut self) {
        let _ = self.tx.send(Msg::Stop);
    }
}

impl std::fmt::Debug for WatchGuard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("WatchGuard")
    }
}

enum Target {
    /// Any change inside `dir` (or to `dir` itself, seen from `parent`).
    Dir { dir: PathBuf },
    /// Changes of `name` in `parent`, or of Kubernetes `..data`-style entries next to it.
    File { parent: PathBuf, name: OsString },
}

impl Target {
    fn relevant(&self, p: &Path) -> bool {
        match self {
            Target::Dir { dir } => p == dir || p.parent() == Some(dir.as_path()),
            Target::File { parent, name } => {
                p.parent() == Some(parent.as_path())
                    && p.file_name().is_some_and(|n| {
                        n == name.as_os_str() || n.to_string_lossy().starts_with("..")
                    })
            }
        }
    }
}

fn relevant(targets: &[Target], ev: &notify::Result<Event>) -> bool {
    match ev {
        // Errors (e.g. event queue overflow) may hide changes: reload to be safe.
        Err(_) => true,
        Ok(ev) => {
            if matches!(ev.kind, EventKind::Access(_)) {
                // Our own reload reads the files; reacting would loop.
                return false;
            }
            ev.need_rescan()
                || ev.paths.is_empty()
                || ev
                    .paths
                    .iter()
                    .any(|p| targets.iter().any(|t| t.relevant(p)))
        }
    }
}

/// Directories whose own path an event touched (replaced/renamed/removed): watch them again.
fn touched_dirs(targets: &[Target], ev: &notify::Result<Event>, out: &mut HashSet<PathBuf>) {
    if let Ok(ev) = ev {
        for t in targets {
            if let Target::Dir { dir } = t {
                if ev.need_rescan() || ev.paths.iter().any(|p| p == dir) {
                    out.insert(dir.clone());
                }
            }
        }
    }
}

/// Watches `paths` (directories and files) and calls `on_change` from a background thread once
/// per burst of changes: after `debounce` without further relevant events, or at the latest
/// `max(2 s, 2 × debounce)` after the burst started. Dropping the guard stops watching.
pub fn watch(
    paths: &[PathBuf],
    debounce: Duration,
    on_change: impl Fn() + Send + 'static,
) -> Result<WatchGuard, RulesError> {
    let werr = |p: &Path, m: String| RulesError::Watch {
        path: p.display().to_string(),
        message: m,
    };
    let mut targets = Vec::with_capacity(paths.len());
    let mut watch_dirs: Vec<PathBuf> = Vec::new();
    for p in paths {
        let abs = std::path::absolute(p).map_err(|e| werr(p, e.to_string()))?;
        let meta = fs::metadata(&abs).map_err(|e| werr(p, e.to_string()))?;
        let parent = abs.parent().map(Path::to_path_buf);
        if meta.is_dir() {
            watch_dirs.push(abs.clone());
            if let Some(parent) = parent {
                watch_dirs.push(parent);
            }
            targets.push(Target::Dir { dir: abs });
        } else {
            let (Some(parent), Some(name)) = (parent, abs.file_name()) else {
                return Err(werr(p, "not a file or directory".into()));
            };
            watch_dirs.push(parent.clone());
            targets.push(Target::File {
                parent,
                name: name.to_os_string(),
            });
        }
    }
    let (tx, rx) = mpsc::channel::<Msg>();
    let fs_tx = tx.clone();
    let mut watcher: RecommendedWatcher = notify::recommended_watcher(move |res| {
        let _ = fs_tx.send(Msg::Fs(res));
    })
    .map_err(|e| werr(Path::new("."), e.to_string()))?;
    let mut seen = HashSet::new();
    for d in &watch_dirs {
        if seen.insert(d.clone()) {
            watcher
                .watch(d, RecursiveMode::NonRecursive)
                .map_err(|e| werr(d, e.to_string()))?;
        }
    }
    let max_wait = (debounce * 2).max(Duration::from_secs(2));
    thread::Builder::new()
        .name("jimini-rules-watch".into())
        .spawn(move || {
            // The thread owns the watcher: re-watching replaced directories needs it.
            let mut watcher = watcher;
            loop {
                let ev = match rx.recv() {
                    Ok(Msg::Fs(ev)) => ev,
                    Ok(Msg::Stop) | Err(_) => return,
                };
                if !relevant(&targets, &ev) {
                    continue;
                }
                let mut rewatch = HashSet::new();
                touched_dirs(&targets, &ev, &mut rewatch);
                let start = Instant::now();
                let mut last = start;
                loop {
                    let wait = debounce
                        .saturating_sub(last.elapsed())
                        .min(max_wait.saturating_sub(start.elapsed()));
                    if wait.is_zero() {
                        break;
                    }
                    match rx.recv_timeout(wait) {
                        Ok(Msg::Fs(ev)) => {
                            if relevant(&targets, &ev) {
                                touched_dirs(&targets, &ev, &mut rewatch);
                                last = Instant::now();
                            }
                        }
                        Ok(Msg::Stop) | Err(RecvTimeoutError::Disconnected) => return,
                        Err(RecvTimeoutError::Timeout) => break,
                    }
                }
                for d in &rewatch {
                    let _ = watcher.unwatch(d);
                    if let Err(e) = watcher.watch(d, RecursiveMode::NonRecursive) {
                        // Parent is still watched: the directory's reappearance triggers a retry.
                        tracing::warn!(path = %d.display(), error = %e, "re-watching rules directory failed");
                    }
                }
                on_change();
            }
        })
        .map_err(|e| werr(Path::new("."), e.to_string()))?;
    Ok(WatchGuard { tx })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::mpsc::Receiver;

    const DEBOUNCE: Duration = Duration::from_millis(400);
    const GENEROUS: Duration = Duration::from_secs(20);

    fn start(paths: &[PathBuf]) -> (WatchGuard, Receiver<()>) {
        let (tx, rx) = mpsc::channel();
        let g = watch(paths, DEBOUNCE, move || {
            let _ = tx.send(());
        })
        .unwrap();
        (g, rx)
    }

    /// One callback for the burst, then silence (no second callback for the same burst).
    fn expect_once(rx: &Receiver<()>) {
        rx.recv_timeout(GENEROUS).expect("on_change fired");
        assert!(
            rx.recv_timeout(DEBOUNCE * 4).is_err(),
            "a single burst fired more than once"
        );
    }

    #[test]
    fn burst_of_writes_fires_once() {
        let d = tempfile::tempdir().unwrap();
        let rules = d.path().join("rules");
        fs::create_dir(&rules).unwrap();
        let (_g, rx) = start(std::slice::from_ref(&rules));
        for i in 0..20 {
            fs::write(rules.join("pii.yaml"), format!("pack: p{i}\n")).unwrap();
        }
        expect_once(&rx);
        // Reading the files (as a reload does) does not trigger.
        let _ = fs::read_to_string(rules.join("pii.yaml")).unwrap();
        assert!(rx.recv_timeout(DEBOUNCE * 3).is_err());
    }

    #[test]
    fn rename_write_fires() {
        let d = tempfile::tempdir().unwrap();
        let cfg = d.path().join("jimini.yaml");
        fs::write(&cfg, "a: 1\n").unwrap();
        let (_g, rx) = start(std::slice::from_ref(&cfg));
        // Unrelated files next to a watched file are ignored.
        fs::write(d.path().join("other.txt"), "x").unwrap();
        assert!(rx.recv_timeout(DEBOUNCE * 3).is_err());
        // Editor-style save: write a temp file, rename over the original.
        let tmp = d.path().join(".jimini.yaml.swp");
        fs::write(&tmp, "a: 2\n").unwrap();
        fs::rename(&tmp, &cfg).unwrap();
        expect_once(&rx);
    }

    #[cfg(unix)]
    #[test]
    fn configmap_data_symlink_swap_fires() {
        use std::os::unix::fs::symlink;
        let d = tempfile::tempdir().unwrap();
        let mount = d.path().join("rules");
        fs::create_dir(&mount).unwrap();
        // Kubernetes layout: ..<ts>/pii.yaml, ..data -> ..<ts>, pii.yaml -> ..data/pii.yaml
        let v1 = mount.join("..2024_01");
        fs::create_dir(&v1).unwrap();
        fs::write(v1.join("pii.yaml"), "v1").unwrap();
        symlink("..2024_01", mount.join("..data")).unwrap();
        symlink("..data/pii.yaml", mount.join("pii.yaml")).unwrap();
        let (_g, rx) = start(&[mount.clone(), mount.join("pii.yaml")]);
        let v2 = mount.join("..2024_02");
        fs::create_dir(&v2).unwrap();
        fs::write(v2.join("pii.yaml"), "v2").unwrap();
        symlink("..2024_02", mount.join("..data_tmp")).unwrap();
        fs::rename(mount.join("..data_tmp"), mount.join("..data")).unwrap();
        fs::remove_dir_all(&v1).unwrap();
        expect_once(&rx);
        assert_eq!(fs::read_to_string(mount.join("pii.yaml")).unwrap(), "v2");
    }

    #[test]
    fn replaced_directory_is_rewatched() {
        let d = tempfile::tempdir().unwrap();
        let rules = d.path().join("rules");
        fs::create_dir(&rules).unwrap();
        let (_g, rx) = start(std::slice::from_ref(&rules));
        let new = d.path().join("rules.new");
        fs::create_dir(&new).unwrap();
        fs::write(new.join("a.yaml"), "x").unwrap();
        fs::rename(&rules, d.path().join("rules.old")).unwrap();
        fs::rename(&new, &rules).unwrap();
        rx.recv_timeout(GENEROUS).expect("replacement seen");
        while rx.recv_timeout(DEBOUNCE * 3).is_ok() {}
        // A write into the NEW directory is seen.
        fs::write(rules.join("b.yaml"), "y").unwrap();
        rx.recv_timeout(GENEROUS)
            .expect("write into replaced dir seen");
    }

    #[test]
    fn missing_path_is_an_error_and_drop_stops() {
        let d = tempfile::tempdir().unwrap();
        let e = watch(&[d.path().join("nope")], DEBOUNCE, || {}).unwrap_err();
        assert!(e.to_string().starts_with("watching "), "{e}");
        let (g, rx) = start(&[d.path().to_path_buf()]);
        drop(g);
        fs::write(d.path().join("a.yaml"), "x").unwrap();
        assert!(rx.recv_timeout(DEBOUNCE * 3).is_err());
    }
}
