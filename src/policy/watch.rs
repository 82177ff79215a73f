//! Reload triggers: file-system events (debounced), a periodic fingerprint check as a safety net,
//! and SIGHUP. All of them funnel into `Registry::reload`, which is serialised and validating.

use notify::{RecursiveMode, Watcher};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use super::discover::policy_files_in;
use super::registry::Registry;

/// (path, modified, len) of every policy file and the profiles file: changes whenever a reload
/// could matter.
fn fingerprint(
    dirs: &[PathBuf],
    profiles: Option<&Path>,
) -> Vec<(PathBuf, Option<SystemTime>, u64)> {
    let files = dirs
        .iter()
        .flat_map(|d| policy_files_in(d).unwrap_or_default())
        .chain(profiles.map(Path::to_path_buf));
    files
        .map(|p| {
            let meta = std::fs::metadata(&p).ok();
            let modified = meta.as_ref().and_then(|m| m.modified().ok());
            (p, modified, meta.map(|m| m.len()).unwrap_or(0))
        })
        .collect()
}

pub struct WatchOptions {
    pub watch: bool,
    pub debounce: Duration,
    pub poll: Option<Duration>,
}

/// Runs until `shutdown` flips. Spawned as a pingora background service.
pub async fn run(
    registry: Arc<Registry>,
    opts: WatchOptions,
    mut shutdown: tokio::sync::watch::Receiver<bool>,
) {
    let (tx, mut rx) = tokio::sync::mpsc::channel::<&'static str>(64);
    let profiles = registry.profiles_path().map(Path::to_path_buf);
    let _watcher = if opts.watch {
        let ev_tx = tx.clone();
        let dirs = registry.dirs().to_vec();
        let wanted = profiles.clone();
        let watcher = notify::recommended_watcher(move |res: notify::Result<notify::Event>| {
            if let Ok(ev) = res {
                // The profiles file's directory is the config's, where other files (an audit
                // log) change all the time: only events on the file itself reload.
                let relevant = wanted.is_none()
                    || ev.paths.iter().any(|p| {
                        dirs.iter().any(|d| p.starts_with(d))
                            || wanted
                                .as_ref()
                                .is_some_and(|w| p.file_name() == w.file_name())
                    });
                if !ev.kind.is_access() && relevant {
                    // Full channel means a reload is already pending: dropping is fine.
                    let _ = ev_tx.try_send("watch");
                }
            }
        });
        match watcher {
            Ok(mut w) => {
                for d in registry.dirs() {
                    if let Err(e) = w.watch(d, RecursiveMode::Recursive) {
                        tracing::warn!(dir = %d.display(), error = %e, "cannot watch policy dir; relying on polling");
                    }
                }
                // The directory, not the file: an editor's or a ConfigMap's swap replaces the
                // file, and a watch on the old one would see nothing after the first save.
                if let Some(dir) = profiles.as_deref().and_then(Path::parent) {
                    if let Err(e) = w.watch(dir, RecursiveMode::NonRecursive) {
                        tracing::warn!(dir = %dir.display(), error = %e, "cannot watch the profiles file's dir; relying on polling");
                    }
                }
                Some(w)
            }
            Err(e) => {
                tracing::warn!(error = %e, "file watching unavailable; relying on polling");
                None
            }
        }
    } else {
        None
    };

    #[cfg(unix)]
    let mut hup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()).ok();

    let dirs = registry.dirs().to_vec();
    let mut last_fp = fingerprint(&dirs, profiles.as_deref());
    // The policies were read when the registry was built, before this task (and its watch) began:
    // a file changed in between raised no event and already matches the fingerprint above, so it
    // would never be reloaded. One reload now reads it; with nothing changed it changes nothing.
    if let Err(errors) = registry.reload("start").await {
        tracing::warn!(?errors, "policies changed since start do not load");
    }
    let mut poll = tokio::time::interval(opts.poll.unwrap_or(Duration::from_secs(3600)));
    poll.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    poll.tick().await;

    loop {
        #[cfg(unix)]
        let hup_fut = async {
            match hup.as_mut() {
                Some(h) => h.recv().await,
                None => std::future::pending().await,
            }
        };
        #[cfg(not(unix))]
        let hup_fut = std::future::pending::<Option<()>>();

        let (trigger, polled): (&'static str, Option<_>) = tokio::select! {
            _ = shutdown.changed() => return,
            Some(t) = rx.recv() => {
                // Let the burst of events of one save/swap settle, then reload once.
                tokio::time::sleep(opts.debounce).await;
                while rx.try_recv().is_ok() {}
                (t, None)
            }
            _ = hup_fut => ("sighup", None),
            _ = poll.tick(), if opts.poll.is_some() => {
                let d = dirs.clone();
                let pf = profiles.clone();
                let fp = tokio::task::spawn_blocking(move || fingerprint(&d, pf.as_deref())).await.unwrap_or_default();
                if fp == last_fp { continue; }
                ("poll", Some(fp))
            }
        };
        // The fingerprint of what this reload starts from, taken before it reads the files: a
        // file still being written (or changed while the reload runs) then differs at the next
        // poll and is read again. Taken after the reload, it matched the finished file, so a
        // reload that had failed on the half-written one was never retried.
        let before = match polled {
            Some(fp) => fp,
            None => {
                let d = dirs.clone();
                let pf = profiles.clone();
                tokio::task::spawn_blocking(move || fingerprint(&d, pf.as_deref()))
                    .await
                    .unwrap_or_default()
            }
        };
        let _ = registry.reload(trigger).await;
        last_fp = before;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::Metrics;
    use crate::policy::registry::Capability;
    use crate::policy::Policy;

    struct AnyBackend;

    impl Capability for AnyBackend {
        fn unsupported(&self, _policy: &Policy) -> Option<String> {
            None
        }
    }

    fn policy(version: &str) -> String {
        format!("+++\nid = \"t/p\"\ntitle = \"t\"\nversion = \"{version}\"\n[[codes]]\ncode = \"X1\"\ntitle = \"x\"\n[[rules]]\nid = \"r\"\ncode = \"X1\"\nkeywords = [\"zorble\"]\n+++\nbody\n")
    }

    /// A file changed after the registry read it but before the watcher began raises no event
    /// the watcher can see; it must still be loaded, with polling off.
    #[tokio::test]
    async fn a_change_before_the_watcher_starts_is_loaded() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("p.md"), policy("1")).unwrap();
        let registry = Arc::new(
            Registry::load(
                vec![dir.path().to_path_buf()],
                None,
                Vec::new(),
                Arc::new(AnyBackend),
                Arc::new(Metrics::new()),
                None,
            )
            .unwrap(),
        );
        assert_eq!(registry.snapshot().policies["t/p"].version, "1");
        std::fs::write(dir.path().join("p.md"), policy("2")).unwrap();
        let (stop, shutdown) = tokio::sync::watch::channel(false);
        let opts = WatchOptions {
            watch: true,
            debounce: Duration::from_millis(10),
            poll: None,
        };
        let task = tokio::spawn(run(registry.clone(), opts, shutdown));
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while registry.snapshot().policies["t/p"].version != "2" {
            assert!(
                std::time::Instant::now() < deadline,
                "the change made before the watcher started was never loaded"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        stop.send(true).unwrap();
        task.await.unwrap();
    }
}
