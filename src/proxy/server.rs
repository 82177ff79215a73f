//! Assembles the pingora server: the traffic listener, the admin listener, and background services
//! for policy reloads and shutdown bookkeeping.

use async_trait::async_trait;
use pingora::server::configuration::{Opt, ServerConf};
use pingora::server::{Server, ShutdownWatch};
use pingora::services::background::{background_service, BackgroundService};
use pingora::services::listening::Service;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::admin::AdminApp;
use super::app::GuardApp;
use super::gateway::Gateway;
use super::passthrough::Passthrough;
use crate::policy::watch::{self, WatchOptions};

struct PolicyWatcher {
    gw: Arc<Gateway>,
}

#[async_trait]
impl BackgroundService for PolicyWatcher {
    async fn start(&self, shutdown: ShutdownWatch) {
        let p = &self.gw.config.policies;
        let opts = WatchOptions {
            watch: p.watch,
            debounce: Duration::from_millis(p.debounce_ms),
            poll: (p.poll_interval_ms > 0).then(|| Duration::from_millis(p.poll_interval_ms)),
        };
        watch::run(self.gw.registry.clone(), opts, shutdown).await;
    }
}

/// Sends each newly live policy version to the model backends once, so the first real request
/// for it already finds the policy prefix in the model's cache (an in-process model only caches a
/// prefix after a request with it has finished).
struct Warmer {
    gw: Arc<Gateway>,
}

#[async_trait]
impl BackgroundService for Warmer {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        let mut warmed = std::collections::HashSet::new();
        let mut warmed_sets = std::collections::HashSet::new();
        let mut generation = None;
        loop {
            let snap = self.gw.registry.snapshot();
            if generation != Some(snap.generation) {
                generation = Some(snap.generation);
                let mut bound: Vec<Arc<crate::policy::Policy>> = Vec::new();
                let mut sets = Vec::new();
                let profiles = snap.profiles.iter().flat_map(|p| p.list.iter());
                let bindings = snap.routes.values().chain(profiles.map(|p| &p.binding));
                for b in bindings {
                    for x in b.input.iter().chain(b.output.iter()) {
                        bound.push(x.policy.clone());
                        bound.extend(x.candidate.clone());
                    }
                    sets.extend(crate::decide::joint_sets(&b.input));
                    sets.extend(crate::decide::joint_sets(&b.output));
                }
                for p in &bound {
                    if !warmed.insert((p.id.clone(), p.content_hash.clone())) {
                        continue;
                    }
                    tokio::select! {
                        _ = self.gw.cascade.warm(p) => {}
                        _ = shutdown.changed() => return,
                    }
                }
                for set in &sets {
                    let mut key: Vec<(String, String)> = set
                        .iter()
                        .map(|p| (p.id.clone(), p.content_hash.clone()))
                        .collect();
                    key.sort();
                    if !warmed_sets.insert(key) {
                        continue;
                    }
                    let set: Vec<&crate::policy::Policy> = set.iter().map(|p| &**p).collect();
                    tokio::select! {
                        _ = self.gw.cascade.warm_joint(&set) => {}
                        _ = shutdown.changed() => return,
                    }
                }
                self.gw.warmed.store(true, Ordering::Relaxed);
            }
            tokio::select! {
                _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                _ = shutdown.changed() => return,
            }
        }
    }
}

/// Deletes captured text past `[audit] capture_retention`: at start, then every quarter of the
/// retention period (at least a second, at most ten minutes apart), so text outlives its period
/// by a quarter of it at most.
struct ReviewPurge {
    gw: Arc<Gateway>,
}

#[async_trait]
impl BackgroundService for ReviewPurge {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        let Some(review) = self.gw.auditor.review().cloned() else {
            return;
        };
        loop {
            let r = review.clone();
            let cutoff = crate::review::now_ms() - r.retention.as_millis() as i64;
            match tokio::task::spawn_blocking(move || r.store.purge(cutoff)).await {
                Ok(Ok(0)) => {}
                Ok(Ok(n)) => tracing::info!(
                    captures = n,
                    "review store: captured text past its retention purged"
                ),
                Ok(Err(e)) => {
                    self.gw.metrics.fault(crate::metrics::Fault::ReviewWrite);
                    tracing::error!(error = %e, "review store: purge failed");
                }
                Err(e) => tracing::error!(error = %e, "review store: purge task failed"),
            }
            tokio::select! {
                _ = tokio::time::sleep((review.retention / 4).clamp(Duration::from_secs(1), Duration::from_secs(600))) => {}
                _ = shutdown.changed() => return,
            }
        }
    }
}

struct Lifecycle {
    gw: Arc<Gateway>,
}

#[async_trait]
impl BackgroundService for Lifecycle {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        let _ = shutdown.changed().await;
        self.gw.draining.store(true, Ordering::Relaxed);
        tracing::info!("shutdown requested: readiness now fails, in-flight requests drain");
    }
}

/// Runs the gateway until a signal stops it. Never returns normally: pingora exits the process.
pub fn run(gw: Gateway, upgrade: bool) -> anyhow::Result<()> {
    let opt = Opt {
        upgrade,
        ..Default::default()
    };
    let s = &gw.config.server;
    // Like every other path in the config, these resolve against the config file's directory.
    let path = |p: &str| {
        gw.config
            .resolve(std::path::Path::new(p))
            .display()
            .to_string()
    };
    let conf = ServerConf {
        threads: s.threads,
        grace_period_seconds: Some(s.grace_period_seconds),
        graceful_shutdown_timeout_seconds: Some(s.graceful_shutdown_timeout_seconds),
        upgrade_sock: path(&s.upgrade_sock),
        pid_file: path(&s.pid_file),
        work_stealing: s.work_stealing,
        ..Default::default()
    };
    if !upgrade {
        // pingora retries a listen address that is in use once a second, forever, while the
        // admin listener (and so /readyz) comes up: a second gateway on a taken port looked
        // healthy and served nothing. Refuse to start instead, as nginx does. An upgrade takes
        // the listening sockets over from the running process, so it skips this.
        ensure_free(&s.listen, "server.listen")?;
        ensure_free(&gw.config.admin.listen, "admin.listen")?;
    }
    let mut server = Server::new_with_opt_and_conf(opt, conf);
    // From the moment a graceful upgrade or shutdown starts, replies say `Connection: close` and
    // readiness fails, so keep-alive clients reconnect (to the new process) instead of having an
    // idle connection dropped under them.
    let mut phases = server.watch_execution_phase();
    server.bootstrap();

    let listen = gw.config.server.listen.clone();
    let admin_listen = gw.config.admin.listen.clone();
    let gw = Arc::new(gw);
    let watcher = gw.clone();
    std::thread::Builder::new()
        .name("guardgate-phase".into())
        .spawn(move || {
            use pingora::server::ExecutionPhase as P;
            while let Ok(p) = phases.blocking_recv() {
                if matches!(
                    p,
                    P::GracefulUpgradeTransferringFds
                        | P::GracefulUpgradeCloseTimeout
                        | P::GracefulTerminate
                        | P::ShutdownStarted
                ) {
                    watcher.draining.store(true, Ordering::Relaxed);
                    tracing::info!(phase = ?p, "draining: replies now close their connections");
                }
            }
        })
        .map_err(|e| anyhow::anyhow!("cannot start the phase watcher: {e}"))?;

    let drain = gw.clone();
    server.set_drain_wait(Box::new(move |limit| wait_for_in_flight(&drain, limit)));

    let passthrough =
        pingora::proxy::http_proxy(&server.configuration, Passthrough { gw: gw.clone() });
    let mut proxy = Service::new(
        "guardgate proxy".to_string(),
        GuardApp::new(gw.clone(), passthrough),
    );
    proxy.add_tcp(&listen);

    let mut admin = Service::new("guardgate admin".to_string(), AdminApp::new(gw.clone()));
    admin.add_tcp(&admin_listen);

    server.add_service(proxy);
    server.add_service(admin);
    server.add_service(background_service(
        "policy watcher",
        PolicyWatcher { gw: gw.clone() },
    ));
    server.add_service(background_service(
        "model warm-up",
        Warmer { gw: gw.clone() },
    ));
    server.add_service(background_service(
        "review purge",
        ReviewPurge { gw: gw.clone() },
    ));
    server.add_service(background_service(
        "lifecycle",
        Lifecycle { gw: gw.clone() },
    ));

    tracing::info!(%listen, admin = %admin_listen, routes = gw.routes.len(), policies = gw.registry.snapshot().policies.len(), "guardgate serving");
    server.run_forever()
}

/// Fails when nothing could listen on `addr` now (another process holds it). SO_REUSEADDR as
/// pingora sets it, so connections of an earlier run still in TIME_WAIT do not count.
fn ensure_free(addr: &str, key: &str) -> anyhow::Result<()> {
    let sa: std::net::SocketAddr = addr
        .parse()
        .map_err(|e| anyhow::anyhow!("{key} = {addr:?}: {e}"))?;
    let sock = socket2::Socket::new(
        socket2::Domain::for_address(sa),
        socket2::Type::STREAM,
        None,
    )?;
    sock.set_reuse_address(true)?;
    sock.bind(&sa.into())
        .and_then(|()| sock.listen(1))
        .map_err(|e| {
            anyhow::anyhow!(
                "cannot listen on {addr} ({key}): {e}; is another gateway running there?"
            )
        })
}

/// After the grace period, before pingora shuts its runtimes down (which drops every task, so a
/// request still in flight, such as one waiting for a model answer, would be cut off): waits until
/// no request is in flight, at most `graceful_shutdown_timeout_seconds`.
fn wait_for_in_flight(gw: &Gateway, limit: Duration) {
    let deadline = Instant::now() + limit;
    // Judgement off the request path counts too: its audit records are still to be written.
    let count = || {
        (
            gw.in_flight.load(Ordering::Acquire),
            gw.background.pending(),
        )
    };
    let (mut n, mut jobs) = count();
    if n + jobs > 0 {
        tracing::info!(
            in_flight = n,
            background = jobs,
            ?limit,
            "waiting for requests in flight"
        );
    }
    while n + jobs > 0 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(10));
        (n, jobs) = count();
    }
    if n > 0 {
        tracing::warn!(
            in_flight = n,
            ?limit,
            "requests still in flight at the shutdown timeout are cut off"
        );
        gw.metrics
            .faults(crate::metrics::Fault::ShutdownCutOff, n as u64);
    }
    if jobs > 0 {
        tracing::warn!(
            background = jobs,
            ?limit,
            "judgements off the request path still pending at the shutdown timeout are cut off (no audit record)"
        );
        gw.metrics
            .background_jobs
            .with_label_values(&["cut_off"])
            .inc_by(jobs as u64);
    }
    // What the requests and judgements above recorded is still on its way to the audit file.
    let left = deadline.saturating_duration_since(Instant::now());
    if !gw.auditor.drain(left.max(Duration::from_millis(500))) {
        tracing::warn!("audit records still unwritten at exit");
    }
    // And their spans in the exporter's queue: exported now, or lost with the process.
    let left = deadline.saturating_duration_since(Instant::now());
    gw.telemetry.shutdown(left.max(Duration::from_millis(500)));
    if gw.config.backends.iter().any(|b| b.kind() == "local") {
        // mistral.rs sends an answer before it finishes that sequence's step; exiting during the
        // step tears the CUDA driver down under the engine thread (a segfault at exit, seen on an
        // H200). The step takes milliseconds.
        std::thread::sleep(Duration::from_millis(200));
    }
}
