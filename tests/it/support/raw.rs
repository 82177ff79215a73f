//! Peers written on raw TCP, for what hyper would not produce or accept: upstreams that send 1xx
//! responses or drop a connection mid-exchange, and requests sent byte for byte.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Reads one HTTP/1 request (its header and a Content-Length body) from `s` into the front of
/// `buf`. Returns the request's length, or `None` when the
/// connection ends first; bytes past it (a pipelined request) stay in `buf`.
async fn read_request(s: &mut TcpStream, buf: &mut Vec<u8>) -> Option<usize> {
    let mut tmp = [0u8; 4096];
    loop {
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&buf[..end]).to_ascii_lowercase();
            let len: usize = head
                .lines()
                .find_map(|l| l.strip_prefix("content-length:"))
                .and_then(|v| v.trim().parse().ok())
                .unwrap_or(0);
            if buf.len() >= end + 4 + len {
                return Some(end + 4 + len);
            }
        }
        match s.read(&mut tmp).await {
            Ok(0) | Err(_) => return None,
            Ok(n) => buf.extend_from_slice(&tmp[..n]),
        }
    }
}

/// An upstream that answers every request with `reply`, written as raw bytes: for replies hyper's
/// server would not produce (1xx before the response, a coded stream).
pub async fn upstream(reply: Vec<u8>) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            let reply = reply.clone();
            tokio::spawn(async move {
                // Read the header and a Content-Length body, then answer and close.
                if read_request(&mut s, &mut Vec::new()).await.is_none() {
                    return;
                }
                let _ = s.write_all(&reply).await;
                let _ = s.shutdown().await;
            });
        }
    });
    format!("http://{addr}")
}

/// An upstream that serves keep-alive requests and, on the request numbered `drop_at` (1-based,
/// counted over all connections), reads it and closes the connection without a reply: what an
/// upstream that restarts, or closes an idle connection just as the gateway reuses it, does.
/// Returns its base URL and the (requests, connections) counters.
pub async fn closing_upstream(drop_at: usize) -> (String, Arc<AtomicUsize>, Arc<AtomicUsize>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let requests = Arc::new(AtomicUsize::new(0));
    let connections = Arc::new(AtomicUsize::new(0));
    let (rq, cn) = (requests.clone(), connections.clone());
    tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            cn.fetch_add(1, Ordering::SeqCst);
            let rq = rq.clone();
            tokio::spawn(async move {
                let body = serde_json::to_vec(&super::mock::chat_completion("m", "hi")).unwrap();
                let mut buf = Vec::new();
                loop {
                    // One request: the header and its Content-Length body.
                    let Some(end) = read_request(&mut s, &mut buf).await else {
                        return;
                    };
                    buf.drain(..end);
                    if rq.fetch_add(1, Ordering::SeqCst) + 1 == drop_at {
                        return; // drops (closes) the connection, no reply
                    }
                    let head = format!(
                        "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n",
                        body.len()
                    );
                    if s.write_all(head.as_bytes()).await.is_err()
                        || s.write_all(&body).await.is_err()
                    {
                        return;
                    }
                }
            });
        }
    });
    (format!("http://{addr}"), requests, connections)
}

/// Sends `request` on a fresh connection and returns everything the gateway answers until it
/// closes the connection (or 5 s pass).
pub async fn exchange(port: u16, request: &[u8]) -> String {
    let mut s = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    s.write_all(request).await.unwrap();
    let mut out = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut out)).await;
    String::from_utf8_lossy(&out).into_owned()
}
