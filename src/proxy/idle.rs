//! Idle HTTP/1 upstream connections, kept per worker thread.
//!
//! pingora's connection pool spawns a watch task and an `Arc<Mutex>` for every connection it is
//! given back, and taking one out wakes that task, waits for it to let go and calls
//! `getpeername`: about 7 % of the allow path's CPU (docs/BENCHMARKS.md). Here a connection given
//! back goes on a list owned by the worker thread, and the only check on the way out is a
//! non-blocking read: the runtime's reactor has already recorded whether the upstream closed the
//! socket or sent something unasked, so an idle connection needs nobody watching it.
//!
//! Used only where each worker thread runs its own runtime (pingora's default; `upstream.rs`
//! picks pingora's shared pool under work stealing, where requests move between threads and
//! per-thread lists would keep missing), so a connection never leaves the thread whose reactor it
//! is registered with. A sweep task per thread closes connections past their idle timeout once
//! nothing takes them, so a quiet gateway does not keep sockets the upstream has already closed.

use futures_util::FutureExt;
use pingora::protocols::l4::socket::SocketAddr;
use pingora::protocols::Stream;
use std::cell::RefCell;
use std::collections::HashMap;
use std::time::{Duration, Instant};
use tokio::io::AsyncReadExt;

/// Most idle connections kept per peer and thread; the oldest one goes when a list is full.
pub const MAX_PER_PEER: usize = 128;
/// How often a thread's sweep looks for expired or closed connections.
const SWEEP_EVERY: Duration = Duration::from_secs(1);

struct Idle {
    stream: Stream,
    addr: SocketAddr,
    since: Instant,
    timeout: Duration,
}

impl Idle {
    fn expired(&self, now: Instant) -> bool {
        now.saturating_duration_since(self.since) >= self.timeout
    }
}

#[derive(Default)]
struct Lists {
    /// (pool id, peer reuse hash) -> connections, oldest first.
    by_peer: HashMap<(u64, u64), Vec<Idle>>,
    sweeping: bool,
}

thread_local! {
    static LISTS: RefCell<Lists> = RefCell::new(Lists::default());
}

/// Whether a connection that should be silent is still usable: the upstream neither closed it
/// nor sent anything since its last response.
fn still_open(stream: &mut Stream) -> bool {
    let mut byte = [0u8; 1];
    // `unconstrained`: the task's cooperative budget must not turn "nothing to read" into a
    // `Pending` that looks the same as an idle socket.
    tokio::task::unconstrained(stream.read(&mut byte))
        .now_or_never()
        .is_none()
}

/// Takes the most recently used idle connection to `addr` (its reuse hash `key`) in pool `pool`.
pub fn take(pool: u64, key: u64, addr: &SocketAddr) -> Option<Stream> {
    let now = Instant::now();
    loop {
        let mut conn = LISTS.with(|l| {
            let mut l = l.borrow_mut();
            let list = l.by_peer.get_mut(&(pool, key))?;
            let conn = list.pop();
            if list.is_empty() {
                l.by_peer.remove(&(pool, key));
            }
            conn
        })?;
        if conn.expired(now) {
            // The newest is past its timeout, so every older one is too.
            LISTS.with(|l| l.borrow_mut().by_peer.remove(&(pool, key)));
            return None;
        }
        if conn.addr == *addr && still_open(&mut conn.stream) {
            return Some(conn.stream);
        }
    }
}

/// Gives back a connection whose exchange is complete, for `timeout` at most.
pub fn put(pool: u64, key: u64, addr: &SocketAddr, mut stream: Stream, timeout: Duration) {
    if timeout.is_zero() || !still_open(&mut stream) {
        return;
    }
    let conn = Idle {
        stream,
        addr: addr.clone(),
        since: Instant::now(),
        timeout,
    };
    let (dropped, start_sweep) = LISTS.with(|l| {
        let mut l = l.borrow_mut();
        let list = l.by_peer.entry((pool, key)).or_default();
        let dropped = (list.len() >= MAX_PER_PEER).then(|| list.remove(0));
        list.push(conn);
        let start = !l.sweeping;
        l.sweeping = true;
        (dropped, start)
    });
    drop(dropped);
    if start_sweep {
        start_sweeper();
    }
}

/// Idle connections this thread holds for `pool` (tests and metrics).
pub fn count(pool: u64) -> usize {
    LISTS.with(|l| {
        l.borrow()
            .by_peer
            .iter()
            .filter(|((p, _), _)| *p == pool)
            .map(|(_, v)| v.len())
            .sum()
    })
}

/// The sweep runs on the calling thread's runtime, which must be a current-thread one (the only
/// kind `upstream.rs` uses these lists on), so that it sees this thread's lists.
fn start_sweeper() {
    tokio::spawn(async {
        loop {
            tokio::time::sleep(SWEEP_EVERY).await;
            if !sweep() {
                break;
            }
        }
    });
}

/// Closes this thread's expired and closed connections; false when none is left (the sweep
/// ends, and the next `put` starts another).
fn sweep() -> bool {
    let now = Instant::now();
    let mut lists = LISTS.with(|l| std::mem::take(&mut l.borrow_mut().by_peer));
    for list in lists.values_mut() {
        list.retain_mut(|c| !c.expired(now) && still_open(&mut c.stream));
    }
    lists.retain(|_, v| !v.is_empty());
    LISTS.with(|l| {
        let mut l = l.borrow_mut();
        // Connections given back while the sweep ran are newer than every swept one.
        for (k, newer) in std::mem::take(&mut l.by_peer) {
            lists.entry(k).or_default().extend(newer);
        }
        l.by_peer = lists;
        l.sweeping = !l.by_peer.is_empty();
        l.sweeping
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncWriteExt;

    async fn pair() -> (Stream, tokio::net::TcpStream, SocketAddr) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let at = listener.local_addr().unwrap();
        let client = tokio::net::TcpStream::connect(at).await.unwrap();
        let (server, _) = listener.accept().await.unwrap();
        let stream: Stream = Box::new(pingora::protocols::l4::stream::Stream::from(client));
        (stream, server, SocketAddr::Inet(at))
    }

    #[tokio::test(flavor = "current_thread")]
    async fn reuses_live_connections_newest_first_and_drops_dead_ones() {
        let pool = 9_001;
        let (a, _server_a, addr) = pair().await;
        let (b, mut server_b, _) = pair().await;
        let (c, server_c, _) = pair().await;
        let long = Duration::from_secs(60);
        put(pool, 1, &addr, a, long);
        put(pool, 1, &addr, b, long);
        put(pool, 1, &addr, c, long);
        assert_eq!(count(pool), 3);

        // c's upstream closes it and b's sends data nobody asked for: neither may be reused.
        drop(server_c);
        server_b.write_all(b"HTTP/1.1 200 OK\r\n").await.unwrap();
        tokio::time::sleep(Duration::from_millis(50)).await;
        let got = take(pool, 1, &addr).expect("a is still usable");
        assert_eq!(count(pool), 0, "the dead ones were dropped on the way");
        assert!(take(pool, 1, &addr).is_none());
        // Another peer key or address never gets it.
        put(pool, 1, &addr, got, long);
        assert!(take(pool, 2, &addr).is_none());
        let other = SocketAddr::Inet("127.0.0.1:1".parse().unwrap());
        assert!(take(pool, 1, &other).is_none());
    }

    #[tokio::test(flavor = "current_thread", start_paused = true)]
    async fn expired_connections_are_not_reused_and_get_swept() {
        let pool = 9_002;
        let (a, _sa, addr) = pair().await;
        let (b, _sb, _) = pair().await;
        put(pool, 7, &addr, a, Duration::from_millis(10));
        std::thread::sleep(Duration::from_millis(20));
        assert!(take(pool, 7, &addr).is_none(), "past its idle timeout");

        put(pool, 7, &addr, b, Duration::from_millis(10));
        std::thread::sleep(Duration::from_millis(20));
        assert_eq!(count(pool), 1);
        // The sweep runs on the paused clock's next tick.
        tokio::time::sleep(SWEEP_EVERY * 2).await;
        assert_eq!(count(pool), 0);
    }
}
