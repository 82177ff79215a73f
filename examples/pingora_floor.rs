//! The proxy benchmark's measure of what pingora itself costs (`bench/proxy/run.sh`, scenario
//! (g)): the smallest reverse proxy pingora-proxy allows, one `upstream_peer` hook and nothing
//! else, with the server settings guardgate's benchmark config uses (one thread, no work
//! stealing, upstream keep-alive) and the same allocator. guardgate's pass-through cannot be
//! cheaper than the HTTP/1 stack it is built on by much, so this separates what guardgate adds
//! from what the framework costs before guardgate runs a line.
//!
//! `pingora_floor LISTEN UPSTREAM WORKDIR [THREADS]`, e.g.
//! `pingora_floor 127.0.0.1:18410 127.0.0.1:18400 /tmp/floor 1`.

use async_trait::async_trait;
use pingora::prelude::*;
use pingora::proxy::{ProxyHttp, Session};
use pingora::server::configuration::{Opt, ServerConf};
use std::net::SocketAddr;

#[cfg(feature = "mimalloc")]
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

struct Floor {
    upstream: SocketAddr,
}

#[async_trait]
impl ProxyHttp for Floor {
    type CTX = ();

    fn new_ctx(&self) {}

    async fn upstream_peer(&self, _session: &mut Session, _ctx: &mut ()) -> Result<Box<HttpPeer>> {
        Ok(Box::new(HttpPeer::new(self.upstream, false, String::new())))
    }
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.len() < 3 {
        eprintln!("usage: pingora_floor LISTEN UPSTREAM WORKDIR [THREADS]");
        std::process::exit(2);
    }
    let upstream: SocketAddr = args[1].parse().unwrap_or_else(|e| {
        eprintln!(
            "pingora_floor: UPSTREAM {:?} is not an ip:port ({e})",
            args[1]
        );
        std::process::exit(2);
    });
    let threads = match args.get(3).map(|t| t.parse::<usize>()) {
        None => 1,
        Some(Ok(n)) if n > 0 => n,
        Some(_) => {
            eprintln!("pingora_floor: THREADS must be a positive integer");
            std::process::exit(2);
        }
    };
    let dir = std::path::Path::new(&args[2]);
    let conf = ServerConf {
        threads,
        work_stealing: false,
        grace_period_seconds: Some(0),
        graceful_shutdown_timeout_seconds: Some(1),
        pid_file: dir.join("floor.pid").display().to_string(),
        upgrade_sock: dir.join("floor-upgrade.sock").display().to_string(),
        ..Default::default()
    };
    let mut server = Server::new_with_opt_and_conf(Opt::default(), conf);
    server.bootstrap();
    let mut proxy = pingora::proxy::http_proxy_service(&server.configuration, Floor { upstream });
    proxy.add_tcp(&args[0]);
    server.add_service(proxy);
    server.run_forever();
}
