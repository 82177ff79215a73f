//! How selections (a route's `policies`, a profile's) bind loaded policies: the bound policy with
//! its action, sampling and candidate, per direction, and the redact bindings kept apart. The
//! snapshot build (`registry`) binds routes, `profile` binds profiles, both here.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use super::binding::{Action, Direction};
use super::file::Policy;
use crate::config::RouteConfig;

/// A policy bound to a route with the action the route gives it.
#[derive(Debug, Clone)]
pub struct Bound {
    pub policy: Arc<Policy>,
    pub action: Action,
    /// A candidate version being shadow-evaluated next to the live one.
    pub candidate: Option<Arc<Policy>>,
    /// Share of requests the expensive (model) backends judge; 1.0 = all.
    pub sample_rate: f64,
    /// Judged with the direction's other joint bindings in one model call
    /// (`model_call = "joint"`).
    pub joint: bool,
}

#[derive(Debug, Default, Clone)]
pub struct RouteBinding {
    pub input: Vec<Bound>,
    pub output: Vec<Bound>,
    /// Redact bindings: applied to the request before it goes upstream, never judged by a
    /// classifier (so never in `input`).
    pub redact: Vec<Bound>,
}

impl RouteBinding {
    /// The bindings with `call` (a route's or a profile's `model_call`) applied.
    pub fn model_call(mut self, call: crate::config::ModelCall) -> RouteBinding {
        let joint = call == crate::config::ModelCall::Joint;
        for x in self.input.iter_mut().chain(self.output.iter_mut()) {
            x.joint = joint;
        }
        self
    }

    pub fn for_direction(&self, d: Direction) -> &[Bound] {
        match d {
            Direction::Input => &self.input,
            Direction::Output => &self.output,
        }
    }
}

/// What a loaded policy needs from the classifier stack to be enforceable.
pub trait Capability: Send + Sync {
    /// Why this policy cannot be classified with the configured backends, if it cannot.
    fn unsupported(&self, policy: &Policy) -> Option<String>;
}

/// `general/*` selects the pack, `*` everything, anything else one id.
pub fn selects(select: &str, id: &str) -> bool {
    match select.strip_suffix('*') {
        Some("") => true,
        Some(prefix) => id.starts_with(prefix),
        None => select == id,
    }
}

/// Binds each route's policy selections to loaded policies. Problems are pushed onto `errors`.
pub fn bind(
    policies: &BTreeMap<String, Arc<Policy>>,
    candidates: &BTreeMap<String, Arc<Policy>>,
    routes: &[RouteConfig],
    capability: &dyn Capability,
    errors: &mut Vec<String>,
) -> HashMap<String, RouteBinding> {
    let mut bindings = HashMap::new();
    for r in routes {
        let label = format!("route {:?}", r.name);
        let rewrite = match crate::wire::Api::from_name(&r.api) {
            Some(_) => Ok(()),
            None => Err(format!(
                "redaction rewrites requests of the chat, completions, responses and messages APIs; \
                 a {} upload is not rewritten",
                r.api
            )),
        };
        let b = bind_selections(
            &label,
            &r.policies,
            rewrite,
            policies,
            candidates,
            capability,
            errors,
        );
        bindings.insert(r.name.clone(), b.model_call(r.model_call));
    }
    bindings
}

/// Binds one list of selections (a route's or a profile's); `label` starts its errors. `rewrite`
/// says whether redact bindings can apply where the selections are used (a profile's: yes; on a
/// batch-upload route only its input bindings are read).
pub fn bind_selections(
    label: &str,
    selections: &[crate::config::RoutePolicy],
    rewrite: Result<(), String>,
    policies: &BTreeMap<String, Arc<Policy>>,
    candidates: &BTreeMap<String, Arc<Policy>>,
    capability: &dyn Capability,
    errors: &mut Vec<String>,
) -> RouteBinding {
    let mut b = RouteBinding::default();
    for sel in selections {
        let matched: Vec<&Arc<Policy>> = policies
            .values()
            .filter(|p| selects(&sel.select, &p.id))
            .collect();
        if matched.is_empty() {
            errors.push(format!(
                "{label}: policy selection {:?} matches no loaded policy",
                sel.select
            ));
        }
        for p in matched {
            // A binding may narrow which backends judge the policy on this route (e.g. rules
            // only where a model would cost too much or is not trusted to block).
            let narrow = |p: &Arc<Policy>| match &sel.backends {
                Some(names) => Arc::new(Policy {
                    backends: Some(names.clone()),
                    ..(**p).clone()
                }),
                None => p.clone(),
            };
            let p = &narrow(p);
            if p.action == Action::Redact || sel.action == Some(Action::Redact) {
                if let Err(why) = bind_redact(&rewrite, sel, p, &mut b.redact) {
                    errors.push(format!("{label}: policy {}: {why}", p.id));
                }
                continue;
            }
            if let Some(why) = capability.unsupported(p) {
                errors.push(format!("{label}: policy {}: {why}", p.id));
                continue;
            }
            let action = sel.action.unwrap_or(p.action);
            let sample_rate = sel.sample_rate.unwrap_or(1.0);
            if sample_rate < 1.0 && action == Action::Block {
                errors.push(format!(
                    "{label}: policy {}: sample_rate applies to annotate and shadow bindings \
                     only; a blocking policy judges every request",
                    p.id
                ));
                continue;
            }
            for d in &sel.directions {
                if !p.applies_to(*d) {
                    continue;
                }
                let list = match d {
                    Direction::Input => &mut b.input,
                    Direction::Output => &mut b.output,
                };
                // A policy selected twice keeps its first binding.
                if !list.iter().any(|x| x.policy.id == p.id) {
                    list.push(Bound {
                        policy: p.clone(),
                        action,
                        candidate: candidates.get(&p.id).map(narrow),
                        sample_rate,
                        joint: false,
                    });
                }
            }
        }
    }
    b
}

/// A redact policy's binding: the request's, where requests can be rewritten (`rewrite`).
fn bind_redact(
    rewrite: &Result<(), String>,
    sel: &crate::config::RoutePolicy,
    p: &Arc<Policy>,
    list: &mut Vec<Bound>,
) -> Result<(), String> {
    if p.redact.is_none() {
        return Err(
            "action = \"redact\" needs a redact policy (action = \"redact\" and [redact] in its front matter)"
                .into(),
        );
    }
    if sel.action.is_some_and(|a| a != Action::Redact) {
        return Err(
            "is a redact policy: bind it without an action, or with action = \"redact\"".into(),
        );
    }
    rewrite.clone()?;
    if sel.directions.contains(&Direction::Input) && !list.iter().any(|x| x.policy.id == p.id) {
        list.push(Bound {
            policy: p.clone(),
            action: Action::Redact,
            candidate: None,
            sample_rate: 1.0,
            joint: false,
        });
    }
    Ok(())
}
