//! The live set of policies: an immutable `Snapshot` behind an `ArcSwap`.
//!
//! A request loads the snapshot once and uses it to the end, so a reload in the middle of a request
//! never mixes two policy versions. A reload builds a whole new snapshot off to the side; only if
//! every file parses and every route's selection resolves does it replace the live one.

use arc_swap::ArcSwap;
use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

pub use super::bind::{bind, bind_selections, selects, Bound, Capability, RouteBinding};
use super::discover::policy_files_in;
use super::file::{parse_policy, Policy, PolicyError};
use super::profile::Profiles;
use crate::config::RouteConfig;
use crate::metrics::Metrics;

#[derive(Debug)]
pub struct Snapshot {
    /// Increases by one with every successful reload.
    pub generation: u64,
    pub loaded_at: SystemTime,
    pub policies: BTreeMap<String, Arc<Policy>>,
    /// Candidate versions by live policy id.
    pub candidates: BTreeMap<String, Arc<Policy>>,
    pub routes: HashMap<String, RouteBinding>,
    /// With `[profiles]`: the profiles, bound to the policies above; a request's profile binds
    /// its policies in place of its route's.
    pub profiles: Option<Arc<Profiles>>,
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct ReloadFailure {
    pub at: String,
    pub errors: Vec<String>,
}

/// The reload gate: judges whether a changed policy version may go live (normally by running its
/// case file against its `[thresholds]`).
#[async_trait::async_trait]
pub trait Gate: Send + Sync {
    /// `Ok(summary)` if `policy` may go live, `Err(reasons)` otherwise.
    async fn check(&self, policy: &Policy) -> Result<String, String>;
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct GateResult {
    pub at: String,
    pub policy_id: String,
    pub version: String,
    pub hash: String,
    pub passed: bool,
    pub detail: String,
}

pub struct Registry {
    live: ArcSwap<Snapshot>,
    dirs: Vec<PathBuf>,
    /// The profiles file (`[profiles] file`), read with the policies.
    profiles: Option<PathBuf>,
    routes: Vec<RouteConfig>,
    /// What the last reloads said, published whole (see [`ReloadOutcome`]).
    outcome: Mutex<ReloadOutcome>,
    reload_lock: tokio::sync::Mutex<()>,
    capability: Arc<dyn Capability>,
    metrics: Arc<Metrics>,
    gate: Option<Arc<dyn Gate>>,
}

/// The last reload's error and the gate's last report, kept under one lock: a reader of
/// `/admin/policies` sees both of one reload or both of the one before, never a gate report
/// whose refusal is not yet the reload's error.
#[derive(Debug, Default, Clone)]
struct ReloadOutcome {
    last_error: Option<ReloadFailure>,
    gate_report: Vec<GateResult>,
}

impl Registry {
    /// Loads the initial snapshot; fails (and the gateway does not start) if it is invalid.
    pub fn load(
        dirs: Vec<PathBuf>,
        profiles: Option<PathBuf>,
        routes: Vec<RouteConfig>,
        capability: Arc<dyn Capability>,
        metrics: Arc<Metrics>,
        gate: Option<Arc<dyn Gate>>,
    ) -> Result<Registry, Vec<String>> {
        let snap =
            build_snapshot_with(&dirs, profiles.as_deref(), &routes, capability.as_ref(), 1)?;
        metrics.policy_generation.set(snap.generation as i64);
        Ok(Registry {
            live: ArcSwap::from_pointee(snap),
            dirs,
            profiles,
            routes,
            outcome: Mutex::default(),
            reload_lock: tokio::sync::Mutex::new(()),
            capability,
            metrics,
            gate,
        })
    }

    fn outcome(&self) -> ReloadOutcome {
        self.outcome.lock().map(|g| g.clone()).unwrap_or_default()
    }

    /// The last reload's error and the gate's verdicts on the most recent reload that changed gated
    /// policies, read together.
    pub fn reload_status(&self) -> (Option<ReloadFailure>, Vec<GateResult>) {
        let o = self.outcome();
        (o.last_error, o.gate_report)
    }

    /// Publishes a reload's error (`None`: it went through) and, when the gate ran, its report.
    fn publish(&self, last_error: Option<ReloadFailure>, gate_report: Option<Vec<GateResult>>) {
        if let Ok(mut o) = self.outcome.lock() {
            o.last_error = last_error;
            if let Some(r) = gate_report {
                o.gate_report = r;
            }
        }
    }

    /// Runs the gate on every gated policy that changed; a refused version is replaced by the
    /// live one (or left out, if new) and the routes are bound again. Returns why each refused
    /// version was refused, and the gate's report when it ran.
    async fn apply_gate(
        &self,
        current: &Snapshot,
        snap: &mut Snapshot,
    ) -> Result<(Vec<String>, Option<Vec<GateResult>>), Vec<String>> {
        let Some(gate) = &self.gate else {
            return Ok((Vec::new(), None));
        };
        let changed: Vec<Arc<Policy>> = snap
            .policies
            .values()
            .filter(|p| p.gate)
            .filter(|p| {
                current
                    .policies
                    .get(&p.id)
                    .is_none_or(|old| old.content_hash != p.content_hash)
            })
            .cloned()
            .collect();
        if changed.is_empty() {
            return Ok((Vec::new(), None));
        }
        let mut report = Vec::new();
        let mut refusals = Vec::new();
        for p in changed {
            let res = gate.check(&p).await;
            let passed = res.is_ok();
            let detail = res.unwrap_or_else(|e| e);
            if !passed {
                refusals.push(format!(
                    "{}: version {} of {} refused by the reload gate (the live version stays): {detail}",
                    p.path.display(),
                    p.version,
                    p.id
                ));
                tracing::warn!(policy = %p.id, version = %p.version, %detail, "reload gate refused the new version; the live one stays");
                match current.policies.get(&p.id) {
                    Some(old) => snap.policies.insert(p.id.clone(), old.clone()),
                    None => snap.policies.remove(&p.id),
                };
            }
            report.push(GateResult {
                at: humantime_now(),
                policy_id: p.id.clone(),
                version: p.version.clone(),
                hash: p.content_hash.clone(),
                passed,
                detail,
            });
        }
        if !refusals.is_empty() {
            self.metrics
                .reloads
                .with_label_values(&["gated"])
                .inc_by(refusals.len() as u64);
            let mut errors = Vec::new();
            snap.routes = bind(
                &snap.policies,
                &snap.candidates,
                &self.routes,
                self.capability.as_ref(),
                &mut errors,
            );
            if let Some(old) = snap.profiles.take() {
                snap.profiles = rebind_profiles(
                    &old,
                    &snap.policies,
                    &snap.candidates,
                    &self.routes,
                    self.capability.as_ref(),
                    &mut errors,
                );
            }
            if !errors.is_empty() {
                return Err(errors);
            }
        }
        Ok((refusals, Some(report)))
    }

    pub fn snapshot(&self) -> Arc<Snapshot> {
        self.live.load_full()
    }

    pub fn last_error(&self) -> Option<ReloadFailure> {
        self.outcome().last_error
    }

    pub fn dirs(&self) -> &[PathBuf] {
        &self.dirs
    }

    /// The profiles file, when `[profiles]` names one.
    pub fn profiles_path(&self) -> Option<&std::path::Path> {
        self.profiles.as_deref()
    }

    /// Rebuilds the snapshot from disk. Returns `Ok(None)` when nothing changed (same hashes), so a
    /// burst of file events does not bump the generation needlessly.
    pub async fn reload(&self, trigger: &str) -> Result<Option<u64>, Vec<String>> {
        let _guard = self.reload_lock.lock().await;
        let current = self.live.load();
        let next_gen = current.generation + 1;
        let dirs = self.dirs.clone();
        let profiles = self.profiles.clone();
        let routes = self.routes.clone();
        let cap = self.capability.clone();
        let built = tokio::task::spawn_blocking(move || {
            build_snapshot_with(&dirs, profiles.as_deref(), &routes, cap.as_ref(), next_gen)
        })
        .await
        .map_err(|e| vec![format!("reload task failed: {e}")])?;
        let mut gate_report = None;
        let built = match built {
            Ok(mut snap) => match self.apply_gate(&current, &mut snap).await {
                Ok((refusals, report)) => {
                    gate_report = report;
                    // A reload whose only change the gate refused is a failed reload: say why.
                    if !refusals.is_empty() && same_policies(&current, &snap) {
                        Err(refusals)
                    } else {
                        Ok((snap, refusals))
                    }
                }
                Err(e) => Err(e),
            },
            Err(e) => Err(e),
        };
        match built {
            Ok((snap, refusals)) => {
                // Other changes went live; a refused version is still reported until a reload
                // without refusals.
                let failure = (!refusals.is_empty()).then(|| ReloadFailure {
                    at: humantime_now(),
                    errors: refusals,
                });
                if same_policies(&current, &snap) {
                    self.publish(failure, gate_report);
                    return Ok(None);
                }
                let gen = snap.generation;
                tracing::info!(
                    trigger,
                    generation = gen,
                    policies = snap.policies.len(),
                    "policies reloaded"
                );
                self.live.store(Arc::new(snap));
                self.metrics.reloads.with_label_values(&["success"]).inc();
                self.metrics.policy_generation.set(gen as i64);
                // After the swap: whoever reads the report finds its versions live.
                self.publish(failure, gate_report);
                Ok(Some(gen))
            }
            Err(errors) => {
                tracing::error!(
                    trigger,
                    ?errors,
                    "policy reload rejected; the previous snapshot stays live"
                );
                self.metrics.reloads.with_label_values(&["failure"]).inc();
                let failure = ReloadFailure {
                    at: humantime_now(),
                    errors: errors.clone(),
                };
                self.publish(Some(failure), gate_report);
                Err(errors)
            }
        }
    }
}

fn same_policies(a: &Snapshot, b: &Snapshot) -> bool {
    let same = |x: &BTreeMap<String, Arc<Policy>>, y: &BTreeMap<String, Arc<Policy>>| {
        x.len() == y.len()
            && x.iter()
                .zip(y.iter())
                .all(|((ka, pa), (kb, pb))| ka == kb && pa.content_hash == pb.content_hash)
    };
    let profiles = |s: &Snapshot| s.profiles.as_ref().map(|p| p.content_hash.clone());
    same(&a.policies, &b.policies)
        && same(&a.candidates, &b.candidates)
        && profiles(a) == profiles(b)
}

/// The profiles bound again to `policies` (after the reload gate put back a live version).
fn rebind_profiles(
    old: &Profiles,
    policies: &BTreeMap<String, Arc<Policy>>,
    candidates: &BTreeMap<String, Arc<Policy>>,
    routes: &[RouteConfig],
    capability: &dyn Capability,
    errors: &mut Vec<String>,
) -> Option<Arc<Profiles>> {
    let names: Vec<String> = routes.iter().map(|r| r.name.clone()).collect();
    super::profile::bind(
        &old.path,
        old.source.clone(),
        policies,
        candidates,
        &names,
        capability,
        errors,
    )
    .map(Arc::new)
}

fn humantime_now() -> String {
    let d = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap_or_default();
    format!("{}.{:03}", d.as_secs(), d.subsec_millis())
}

/// Reads, parses and binds every policy. Collects all errors rather than stopping at the first, so
/// one reload report shows everything that is wrong.
pub fn build_snapshot(
    dirs: &[PathBuf],
    routes: &[RouteConfig],
    capability: &dyn Capability,
    generation: u64,
) -> Result<Snapshot, Vec<String>> {
    build_snapshot_with(dirs, None, routes, capability, generation)
}

/// [`build_snapshot`] with the profiles file, read and bound to the same policies.
pub fn build_snapshot_with(
    dirs: &[PathBuf],
    profiles: Option<&std::path::Path>,
    routes: &[RouteConfig],
    capability: &dyn Capability,
    generation: u64,
) -> Result<Snapshot, Vec<String>> {
    let mut errors = Vec::new();
    let mut policies: BTreeMap<String, Arc<Policy>> = BTreeMap::new();
    let mut candidates: BTreeMap<String, Arc<Policy>> = BTreeMap::new();
    for dir in dirs {
        let files = match policy_files_in(dir) {
            Ok(f) => f,
            Err(e) => {
                errors.push(e);
                continue;
            }
        };
        for path in files {
            let parsed = std::fs::read(&path)
                .map_err(|e| PolicyError {
                    path: path.display().to_string(),
                    reason: format!("cannot read: {e}"),
                })
                .and_then(|bytes| parse_policy(&path, &bytes));
            match parsed {
                Ok(p) if p.candidate => {
                    if let Some(prev) = candidates.get(&p.id) {
                        errors.push(format!(
                            "{}: a candidate for {:?} already exists in {}",
                            path.display(),
                            p.id,
                            prev.path.display()
                        ));
                    } else {
                        candidates.insert(p.id.clone(), Arc::new(p));
                    }
                }
                Ok(p) => {
                    if let Some(prev) = policies.get(&p.id) {
                        errors.push(format!(
                            "{}: id {:?} is already used by {}",
                            path.display(),
                            p.id,
                            prev.path.display()
                        ));
                    } else {
                        policies.insert(p.id.clone(), Arc::new(p));
                    }
                }
                Err(e) => errors.push(e.to_string()),
            }
        }
    }
    for (id, c) in &candidates {
        match policies.get(id) {
            None => errors.push(format!(
                "{}: candidate for {id:?}, but no live policy has that id",
                c.path.display()
            )),
            Some(live) if live.version == c.version => errors.push(format!(
                "{}: candidate for {id:?} has the live version {:?}; give it a new version",
                c.path.display(),
                c.version
            )),
            Some(_) => {
                if let Some(why) = capability.unsupported(c) {
                    errors.push(format!("{}: candidate: {why}", c.path.display()));
                }
            }
        }
    }
    let bindings = bind(&policies, &candidates, routes, capability, &mut errors);
    let profiles = profiles.and_then(|path| {
        let names: Vec<String> = routes.iter().map(|r| r.name.clone()).collect();
        super::profile::load(
            path,
            &policies,
            &candidates,
            &names,
            capability,
            &mut errors,
        )
        .map(Arc::new)
    });
    if !errors.is_empty() {
        return Err(errors);
    }
    Ok(Snapshot {
        generation,
        loaded_at: SystemTime::now(),
        policies,
        candidates,
        routes: bindings,
        profiles,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn selection_globs() {
        assert!(selects("*", "a/b"));
        assert!(selects("general/*", "general/self-harm"));
        assert!(!selects("general/*", "teen-safety/x"));
        assert!(selects("a/b", "a/b"));
        assert!(!selects("a/b", "a/bc"));
    }
}
