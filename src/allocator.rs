//! mimalloc settings for the serving process (feature `mimalloc`, on by default).
//!
//! mimalloc (v3) returns memory to the kernel once it has been free for a second ("purging"). A
//! model verdict frees and reallocates KV cache copies (tens of MB) on every request, and the
//! prefix cache frees an evicted entry's, so with the default the verdicts kept faulting memory
//! back in, one 2 MiB huge page at a time, each zeroed by the kernel. With purging off the memory
//! is reused: 0 page faults per verdict instead of 400-1,100, and the steady-state verdict ~8 %
//! faster on 2 cores (docs/BENCHMARKS.md, "Allocator"). The cost is that resident memory stays
//! at its peak, which the bounded caches (prefix cache entries, verdict cache, upstream pool)
//! already cap.

/// mimalloc's `mi_option_purge_delay` (v3 `mimalloc.h`: the 16th entry of `mi_option_e`;
/// libmimalloc-sys names the options around it but not this one).
const MI_OPTION_PURGE_DELAY: libmimalloc_sys::mi_option_t = 15;

/// The environment variable mimalloc reads for the same option at start-up: where it is set, the
/// operator's value stands.
const PURGE_DELAY_ENV: &str = "MIMALLOC_PURGE_DELAY";

/// Turns purging off unless `MIMALLOC_PURGE_DELAY` says otherwise. Call first thing in `main`.
pub fn tune() {
    if std::env::var_os(PURGE_DELAY_ENV).is_some() {
        return;
    }
    // SAFETY: mi_option_set only stores the value in mimalloc's option table.
    unsafe { libmimalloc_sys::mi_option_set(MI_OPTION_PURGE_DELAY, -1) };
}

/// The purge delay in force, in ms (-1: never purge).
pub fn purge_delay_ms() -> i64 {
    // SAFETY: reads mimalloc's option table.
    unsafe { libmimalloc_sys::mi_option_get(MI_OPTION_PURGE_DELAY) as i64 }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_option_index_is_mimallocs_purge_delay() {
        // A wrong index would silently set some other option: before `tune`, the option read must
        // hold purge_delay's default (1000 ms in v3) or the value the environment gave it.
        let expected = std::env::var(PURGE_DELAY_ENV)
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(1000);
        assert_eq!(purge_delay_ms(), expected);
        // Its neighbours hold other defaults: eager_commit_delay (14) is 1, use_numa_nodes (16) 0.
        let get = |o| unsafe { libmimalloc_sys::mi_option_get(o) };
        assert_eq!((get(14), get(16)), (1, 0));
        tune();
        if std::env::var_os(PURGE_DELAY_ENV).is_none() {
            assert_eq!(purge_delay_ms(), -1);
        }
    }
}
