//! Verdict cache for model backends: the cheapest model call is the one not made.
//!
//! Keyed by the policy's id and content hash plus a hash of the *normalised* content, so the same
//! text in different Unicode spellings or invisible-character padding hits the same entry. A policy
//! edit changes its content hash, so stale verdicts can never be served; the first lookup with a new
//! hash also empties the old version's entries so they do not sit in memory until they age out.

use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::{Content, Verdict};
use crate::policy::Policy;

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct Key {
    policy_id: Arc<str>,
    /// A shadow candidate shares its live policy's id: each keeps its own version (and entries).
    candidate: bool,
    policy_hash: Arc<str>,
    content: [u8; 16],
}

/// A policy id, and whether it is the shadow candidate of that id.
type Slot = (Arc<str>, bool);

pub struct VerdictCache {
    entries: moka::sync::Cache<Key, Verdict>,
    /// The policy hash each (id, candidate) was last seen with: a different one means the policy
    /// changed. Keyed apart for candidates, which are judged next to their live version on every
    /// request: one shared slot made the two versions empty each other's entries every time.
    current: Mutex<HashMap<Slot, Arc<str>>>,
}

/// A stable digest of what the model is shown, after normalisation.
pub fn content_digest(content: &Content) -> [u8; 16] {
    let mut h = Sha256::new();
    for it in &content.items {
        h.update(it.source.as_str().as_bytes());
        h.update([0]);
        h.update((it.norm().len() as u64).to_le_bytes());
        h.update(it.norm().as_bytes());
    }
    let d = h.finalize();
    let mut out = [0u8; 16];
    out.copy_from_slice(&d[..16]);
    out
}

impl VerdictCache {
    pub fn new(max_entries: u64, ttl: Duration) -> VerdictCache {
        VerdictCache {
            entries: moka::sync::Cache::builder()
                .max_capacity(max_entries)
                .time_to_live(ttl)
                .support_invalidation_closures()
                .build(),
            current: Mutex::new(HashMap::new()),
        }
    }

    fn key(&self, policy: &Policy, content: &Content) -> Key {
        let policy_id: Arc<str> = Arc::from(policy.id.as_str());
        let policy_hash: Arc<str> = Arc::from(policy.content_hash.as_str());
        let candidate = policy.candidate;
        let mut cur = self.current.lock().unwrap_or_else(|e| e.into_inner());
        let slot = (policy_id.clone(), candidate);
        match cur.get(&slot) {
            Some(h) if *h == policy_hash => {}
            Some(_) => {
                let (id, keep) = (policy_id.clone(), policy_hash.clone());
                // Only fails when invalidation closures are not enabled, which `new` does.
                let _ = self.entries.invalidate_entries_if(move |k, _| {
                    k.policy_id == id && k.candidate == candidate && k.policy_hash != keep
                });
                cur.insert(slot, policy_hash.clone());
            }
            None => {
                cur.insert(slot, policy_hash.clone());
            }
        }
        Key {
            policy_id,
            candidate,
            policy_hash,
            content: content_digest(content),
        }
    }

    /// A cached verdict, marked as a cache hit.
    pub fn get(&self, policy: &Policy, content: &Content) -> (Option<Verdict>, CacheSlot) {
        let key = self.key(policy, content);
        let hit = self.entries.get(&key).map(|mut v| {
            v.cache_hit = true;
            v.timing = None;
            v
        });
        (hit, CacheSlot(key))
    }

    pub fn put(&self, slot: CacheSlot, verdict: &Verdict) {
        self.entries.insert(slot.0, verdict.clone());
    }

    /// Entries currently held (approximate: moka applies writes lazily).
    pub fn len(&self) -> u64 {
        self.entries.run_pending_tasks();
        self.entries.entry_count()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Where a verdict computed after a miss goes.
pub struct CacheSlot(Key);

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::parse_policy;
    use crate::wire::{Segment, Source};

    fn policy(body: &str) -> Policy {
        let text = format!(
            "+++\nid = \"t/p\"\ntitle = \"t\"\nversion = \"1\"\n[[codes]]\ncode = \"X1\"\ntitle = \"x\"\n+++\n{body}\n"
        );
        parse_policy(std::path::Path::new("p.md"), text.as_bytes()).unwrap()
    }

    fn content(text: &str) -> Content {
        Content::from_segments(vec![Segment {
            source: Source::User,
            text: text.into(),
            location: "m".into(),
        }])
    }

    #[test]
    fn hits_on_normalised_repeats_and_misses_after_a_policy_edit() {
        let cache = VerdictCache::new(100, Duration::from_secs(60));
        let p1 = policy("Version one.");
        let v = Verdict {
            violation: true,
            ..Verdict::allow("m")
        };
        let (hit, slot) = cache.get(&p1, &content("hello world"));
        assert!(hit.is_none());
        cache.put(slot, &v);
        // Full-width letters and a zero-width space normalise to the same text.
        let (hit, _) = cache.get(&p1, &content("ｈｅｌｌｏ\u{200b} world"));
        let hit = hit.expect("normalised repeat hits");
        assert!(hit.violation && hit.cache_hit);
        assert!(cache.get(&p1, &content("hello there")).0.is_none());

        let p2 = policy("Version two.");
        assert!(cache.get(&p2, &content("hello world")).0.is_none());
        assert_eq!(cache.len(), 0, "the old version's entries are dropped");
        // And the old version does not come back if it were re-read.
        assert!(cache.get(&p1, &content("hello world")).0.is_none());
    }

    #[test]
    fn a_shadow_candidate_and_its_live_policy_keep_their_own_entries() {
        let cache = VerdictCache::new(100, Duration::from_secs(60));
        let live = policy("Live version.");
        let mut candidate = policy("Candidate version.");
        candidate.candidate = true;
        let allow = Verdict::allow("m");
        // Both are judged on every request, alternately: the second round hits for both.
        for (p, _) in [(&live, 0), (&candidate, 1)] {
            let (hit, slot) = cache.get(p, &content("hello world"));
            assert!(hit.is_none());
            cache.put(slot, &allow);
        }
        for p in [&live, &candidate, &live, &candidate] {
            let (hit, _) = cache.get(p, &content("hello world"));
            assert!(hit.is_some_and(|v| v.cache_hit), "{}", p.candidate);
        }
        // Editing the candidate drops only the candidate's entries.
        let mut edited = policy("Candidate version, edited.");
        edited.candidate = true;
        assert!(cache.get(&edited, &content("hello world")).0.is_none());
        assert!(cache.get(&live, &content("hello world")).0.is_some());
    }

    #[test]
    fn source_is_part_of_the_key() {
        let a = content_digest(&content("x"));
        let b = content_digest(&Content::from_segments(vec![Segment {
            source: Source::Assistant,
            text: "x".into(),
            location: "m".into(),
        }]));
        assert_ne!(a, b);
    }
}
