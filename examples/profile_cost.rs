//! The per-request CPU of choosing a policy profile, in process: the steps
//! `proxy::profile::choose` takes on the allow path (read the presented key from the headers,
//! hash it, run the matchers, count the selection), against a profiles file whose key matcher
//! holds `--keys` SHA-256 hashes, the request's among them. Without `[profiles]` the gateway
//! reads the route's bindings from a map instead; that lookup is timed too, for comparison.
//!
//!   cargo build --release --bins --examples
//!   target/release/examples/profile_cost [--keys 1000] [--iters 200000]

use sha2::{Digest, Sha256};
use std::path::Path;
use std::time::{Duration, Instant};

use guardgate::metrics::Metrics;
use guardgate::policy::profile::{key_sha256_hex, Facts, Selected};
use guardgate::policy::registry::{build_snapshot_with, Capability};
use guardgate::policy::Policy;

fn arg(name: &str, default: &str) -> String {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1).cloned())
        .unwrap_or_else(|| default.to_string())
}

/// Median over 7 rounds of the mean time per call of `f`.
fn time<T>(iters: u32, mut f: impl FnMut() -> T) -> Duration {
    let mut rounds: Vec<Duration> = (0..7)
        .map(|_| {
            let start = Instant::now();
            for _ in 0..iters {
                std::hint::black_box(f());
            }
            start.elapsed() / iters
        })
        .collect();
    rounds.sort();
    rounds[3]
}

struct AnyBackend;

impl Capability for AnyBackend {
    fn unsupported(&self, _policy: &Policy) -> Option<String> {
        None
    }
}

const KEY: &str = "sk-bench-not-a-real-key";

fn main() {
    let keys: usize = arg("--keys", "1000").parse().unwrap();
    let iters: u32 = arg("--iters", "200000").parse().unwrap();
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let dir = tempfile::tempdir().unwrap();
    let mut hashes: Vec<String> = (2..=keys)
        .map(|i| key_sha256_hex(&format!("sk-bench-other-{i}")))
        .collect();
    hashes.push(key_sha256_hex(KEY));
    let file = format!(
        "unknown_profile = \"default\"\n\
         [[profile]]\nname = \"standard\"\ndefault = true\npolicies = [{{ select = \"bench/*\" }}]\n\
         [[profile]]\nname = \"tenant\"\npolicies = [{{ select = \"bench/*\" }}]\n\
         [[match]]\nprofile = \"tenant\"\napi_key_sha256 = [{}]\n",
        hashes
            .iter()
            .map(|h| format!("\"{h}\""))
            .collect::<Vec<_>>()
            .join(", ")
    );
    let path = dir.path().join("profiles.toml");
    std::fs::write(&path, file).unwrap();
    let snap = build_snapshot_with(
        &[root.join("bench/proxy/policies")],
        Some(&path),
        &[],
        &AnyBackend,
        1,
    )
    .unwrap();
    let profiles = snap.profiles.clone().unwrap();
    let metrics = Metrics::new();
    let mut headers = http::HeaderMap::new();
    headers.insert("content-type", "application/json".parse().unwrap());
    headers.insert("authorization", format!("Bearer {KEY}").parse().unwrap());
    let mut routes = std::collections::HashMap::new();
    routes.insert("chat".to_string(), profiles.list[0].binding.clone());

    let choose = || {
        let key = guardgate::proxy::profile::presented_key(&headers);
        let key_sha256 = key.map(|k| Sha256::digest(k).into());
        let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
        let facts = Facts {
            route: "chat",
            model: None,
            key_sha256,
            header: &header,
        };
        let Selected::Profile(i) = profiles.select(&facts) else {
            panic!("the bench key selects the tenant profile");
        };
        let p = &profiles.list[i];
        metrics.profile_requests.with_label_values(&[&p.name]).inc();
        (p.name.clone(), p.binding.input.len())
    };
    assert_eq!(&*choose().0, "tenant");
    let hash_only = || Sha256::digest(KEY.as_bytes());
    let route_lookup = || routes.get("chat").map(|b| b.input.len());

    let t_choose = time(iters, choose);
    let t_hash = time(iters, hash_only);
    let t_route = time(iters, route_lookup);
    println!(
        "profile selection, {keys} key hashes in one matcher, {iters} iterations x 7 rounds (median)"
    );
    println!(
        "  route bindings lookup (no [profiles]):     {:>8.0} ns",
        t_route.as_nanos()
    );
    println!(
        "  SHA-256 of the key alone:                  {:>8.0} ns",
        t_hash.as_nanos()
    );
    println!(
        "  choose (key, hash, matchers, counter):     {:>8.0} ns",
        t_choose.as_nanos()
    );
}
