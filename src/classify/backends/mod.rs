//! Model backends as the config declares them (`[[backends]]`): each kind owns its config
//! struct, its checks and its `build` (the [`Backend`] trait), and this module assembles the
//! cascade that `serve`, `check-config` and the policy tools all use. A new kind is one module
//! here and its line in [`BackendConfig`] (the variant and its arm in `backend`).

pub mod local;
pub mod remote;

use serde::Deserialize;
use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use super::cache::VerdictCache;
use super::cascade::Stage;
use super::model::{ChatModel, ModelClassifier};
use super::prompt::Family;
use super::rules::RulesClassifier;
use super::{Cascade, Classifier};
use crate::metrics::Metrics;
use crate::policy::file::Effort;

/// One `[[backends]]` entry, by its `kind`. Each variant's struct rejects keys it does not know,
/// so a setting of the other kind is an error, not silently ignored.
#[derive(Debug, Clone, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum BackendConfig {
    /// Any OpenAI-compatible chat completions server.
    Remote(remote::RemoteConfig),
    /// A model run in process by mistral.rs (cargo feature `local-model`, on by default).
    Local(local::LocalConfig),
}

/// What each kind of backend provides.
pub(crate) trait Backend {
    /// The `kind` as written in the config.
    fn kind(&self) -> &'static str;

    /// The settings every model backend has.
    fn shared(&self) -> Shared<'_>;

    /// The kind's own checks; errors name the key under `backends[i]` ("" for the entry).
    fn validate(&self) -> Result<(), (String, String)>;

    /// The classifier, named `label`; `shared` is `self.shared()`.
    fn build(
        &self,
        label: &'static str,
        shared: &Shared<'_>,
        cx: &BuildContext<'_>,
    ) -> anyhow::Result<Arc<dyn Classifier>>;
}

impl BackendConfig {
    fn backend(&self) -> &dyn Backend {
        match self {
            BackendConfig::Remote(c) => c,
            BackendConfig::Local(c) => c,
        }
    }

    pub fn name(&self) -> &str {
        self.backend().shared().name
    }

    /// The `kind` as written in the config.
    pub fn kind(&self) -> &'static str {
        self.backend().kind()
    }

    /// Checks one entry on its own; errors name the key under `backends[i]` ("" for the entry).
    pub fn validate(&self) -> Result<(), (String, String)> {
        let b = self.backend();
        b.shared().validate()?;
        b.validate()
    }

    /// The backend as a cascade stage.
    pub fn build(&self, cx: &BuildContext<'_>) -> anyhow::Result<Stage> {
        let b = self.backend();
        let shared = b.shared();
        // Backend names live for the whole process (audit records and metrics borrow them).
        let label: &'static str =
            Box::leak(format!("{}:{}", b.kind(), shared.name).into_boxed_str());
        let classifier = b.build(label, &shared, cx)?;
        Ok(Stage {
            classifier,
            escalate_band: shared.escalate_band.map(|[lo, hi]| (lo, hi)),
        })
    }
}

/// Whether building a backend loads model weights (`serve`, the policy tools) or only checks that
/// they could be loaded (`check-config`, which must stay fast and side-effect free).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ModelLoad {
    Load,
    CheckOnly,
}

/// What building a backend needs besides its own config.
pub struct BuildContext<'a> {
    /// The config file's directory: relative model paths resolve against it.
    pub base_dir: &'a Path,
    pub metrics: &'a Arc<Metrics>,
    pub load: ModelLoad,
}

/// The deterministic rules, then each backend in `backends` in order, then `extra` (classifiers
/// given in code, e.g. by tests): the stack every policy is judged through.
pub fn build_cascade(
    backends: &[&BackendConfig],
    cx: &BuildContext<'_>,
    extra: Vec<Arc<dyn Classifier>>,
) -> anyhow::Result<Arc<Cascade>> {
    let mut stages = vec![Stage::new(Arc::new(RulesClassifier))];
    for b in backends {
        stages.push(b.build(cx)?);
    }
    stages.extend(extra.into_iter().map(Stage::new));
    Ok(Arc::new(Cascade::new(stages, cx.metrics.clone())))
}

/// The settings every model backend has, whatever hosts it. Each kind's config spells them out
/// itself (serde's `flatten` would turn off `deny_unknown_fields`) and lends them here, so that
/// they are checked and applied in one place.
pub struct Shared<'a> {
    pub name: &'a str,
    pub family: Family,
    pub reasoning_effort: Effort,
    pub max_concurrency: usize,
    pub max_tokens: u32,
    pub cache_entries: u64,
    pub cache_ttl_s: u64,
    pub violation_threshold: Option<f32>,
    pub violation_thresholds: &'a HashMap<String, f32>,
    pub escalate_band: Option<[f32; 2]>,
}

impl Shared<'_> {
    fn validate(&self) -> Result<(), (String, String)> {
        let err = |key: &str, reason: &str| Err((key.to_string(), reason.to_string()));
        if self.name.is_empty() {
            return err("name", "must not be empty");
        }
        if self.max_concurrency == 0 || self.max_tokens == 0 {
            return err("", "max_concurrency and max_tokens must be positive");
        }
        if self
            .violation_threshold
            .is_some_and(|t| !(0.0..=1.0).contains(&t))
        {
            return err("violation_threshold", "expected a probability within 0..1");
        }
        if let Some((id, _)) = self
            .violation_thresholds
            .iter()
            .find(|(_, t)| !(0.0..=1.0).contains(*t))
        {
            return err(
                &format!("violation_thresholds.{id:?}"),
                "expected a probability within 0..1",
            );
        }
        if let Some([lo, hi]) = self.escalate_band {
            if !(0.0..=1.0).contains(&lo) || !(0.0..=1.0).contains(&hi) || lo > hi {
                return err("escalate_band", "expected [low, high] within 0..1");
            }
        }
        Ok(())
    }

    /// A model host as a classifier: prompting, answer parsing, metrics and (when configured)
    /// the verdict cache are the same for every host.
    pub(crate) fn classifier<M: ChatModel + 'static>(
        &self,
        label: &'static str,
        model: M,
        metrics: &Arc<Metrics>,
    ) -> Arc<dyn Classifier> {
        let c = ModelClassifier::new(label, model, self.family, self.reasoning_effort)
            .with_violation_threshold(self.violation_threshold, self.violation_thresholds.clone())
            .with_metrics(metrics.clone());
        if self.cache_entries == 0 {
            return Arc::new(c);
        }
        let cache = VerdictCache::new(
            self.cache_entries,
            Duration::from_secs(self.cache_ttl_s.max(1)),
        );
        Arc::new(c.with_cache(Arc::new(cache)))
    }
}

// Defaults shared by both kinds.
fn default_cache_entries() -> u64 {
    10_000
}
fn default_cache_ttl() -> u64 {
    3_600
}
fn default_family() -> Family {
    Family::GptOssSafeguard
}
fn default_effort() -> Effort {
    Effort::Low
}
fn default_concurrency() -> usize {
    16
}
fn default_max_tokens() -> u32 {
    1024
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<BackendConfig, toml::de::Error> {
        toml::from_str(text)
    }

    #[test]
    fn each_kind_rejects_the_other_kinds_keys() {
        let local = parse("name = \"m\"\nkind = \"local\"\nmodel_path = \"m.gguf\"\n").unwrap();
        assert_eq!((local.kind(), local.name()), ("local", "m"));
        let remote =
            parse("name = \"r\"\nkind = \"remote\"\nbase_url = \"http://x/v1\"\nmodel = \"s\"\n")
                .unwrap();
        assert_eq!((remote.kind(), remote.name()), ("remote", "r"));
        for (text, key) in [
            (
                "name = \"m\"\nkind = \"local\"\nmodel_path = \"m.gguf\"\nbase_url = \"http://x/v1\"\n",
                "base_url",
            ),
            (
                "name = \"r\"\nkind = \"remote\"\nbase_url = \"http://x/v1\"\nmodel = \"s\"\nmodel_path = \"m.gguf\"\n",
                "model_path",
            ),
            ("name = \"m\"\nkind = \"lokal\"\n", "lokal"),
        ] {
            let e = parse(text).unwrap_err().to_string();
            assert!(e.contains(key), "{text}: {e}");
        }
    }

    #[test]
    fn shared_settings_are_checked_for_every_kind() {
        for extra in [
            "max_tokens = 0",
            "max_concurrency = 0",
            "escalate_band = [0.8, 0.2]",
            "violation_thresholds = { \"general/self-harm\" = 1.5 }",
        ] {
            for base in [
                "name = \"m\"\nkind = \"local\"\nmodel_path = \"m.gguf\"\n",
                "name = \"r\"\nkind = \"remote\"\nbase_url = \"http://x/v1\"\nmodel = \"s\"\n",
            ] {
                let b = parse(&format!("{base}{extra}\n")).unwrap();
                assert!(b.validate().is_err(), "{base}{extra}");
            }
        }
    }
}
