//! A plain (non-streamed) reply that only annotate and shadow bindings judge: nothing it could
//! find changes what the client gets, so the reply is relayed as it arrives (no added latency,
//! no size limit) while a copy of up to `routes.output.max_reply_bytes` is kept. Once the client
//! has the whole reply, the copy is judged: rules in place, model work on the background queue
//! (`exchange::background`), all of it recorded as `off_path`. A reply larger than the copy's
//! bound, or one that cannot be read, is recorded as `not_judged` and counted as unclassifiable.
//! What annotate bindings find can no longer become headers: the reply says
//! `x-guardgate-pending: annotations`, and the audit record has the findings.

use bytes::{Bytes, BytesMut};
use pingora::protocols::http::ServerSession as Session;

use super::plain::reply_segments;
use super::release;
use super::untouched::upstream_body_failed;
use crate::config::Action;
use crate::policy::Bound;
use crate::proxy::body::content_codings;
use crate::proxy::exchange::{Exchange, Outcome};
use crate::proxy::forward::UpstreamReply;

/// Whether a plain reply judged against `bound` can go out before it is judged: no binding's
/// verdict would change what the client gets.
pub fn applies(bound: &[Bound]) -> bool {
    bound
        .iter()
        .all(|b| matches!(b.action, Action::Annotate | Action::Shadow))
}

/// The upstream's body as far as it is kept for judging.
#[derive(Default)]
struct Kept {
    chunks: Vec<Bytes>,
    len: usize,
    /// The body grew past the bound: the copy was dropped.
    over: bool,
}

impl Kept {
    fn push(&mut self, chunk: &Bytes, limit: usize) {
        if self.over {
            return;
        }
        self.len += chunk.len();
        if self.len > limit {
            self.over = true;
            self.chunks = Vec::new();
            return;
        }
        // A clone shares the chunk's buffer: keeping the copy costs no memcpy while it grows.
        self.chunks.push(chunk.clone());
    }

    fn whole(self) -> Bytes {
        match <[Bytes; 1]>::try_from(self.chunks) {
            Ok([one]) => one,
            Err(chunks) => {
                let mut buf = BytesMut::with_capacity(self.len);
                for c in chunks {
                    buf.extend_from_slice(&c);
                }
                buf.freeze()
            }
        }
    }
}

pub async fn relay(
    ex: &mut Exchange,
    session: &mut Session,
    up: UpstreamReply,
    bound: &[Bound],
) -> pingora::Result<()> {
    let (api, limit) = match ex.route() {
        Some(r) => (r.api, r.output.max_reply_bytes),
        None => (ex.api(), usize::MAX),
    };
    let UpstreamReply {
        mut http,
        peer,
        mut header,
    } = up;
    if bound.iter().any(|b| b.action == Action::Annotate) {
        header.insert_header("x-guardgate-pending", "annotations")?;
    }
    let coded = content_codings(&header.headers);
    if let Err(e) = session.write_response_header(Box::new(header)).await {
        http.shutdown().await;
        ex.outcome = Outcome::ClientGone;
        return Err(e);
    }
    let mut kept = Kept::default();
    loop {
        match http.read_response_body().await {
            Ok(Some(chunk)) => {
                kept.push(&chunk, limit);
                if let Err(e) = session.write_response_body(chunk, false).await {
                    // The client went away: closing the upstream stops generation (and billing).
                    http.shutdown().await;
                    ex.outcome = Outcome::ClientGone;
                    return Err(e);
                }
            }
            Ok(None) => break,
            Err(e) => {
                http.shutdown().await;
                upstream_body_failed(ex, &e);
                return Err(e);
            }
        }
    }
    session.write_response_body(Bytes::new(), true).await?;
    release(ex, http, &peer).await;
    if kept.over {
        let why = format!("the reply exceeds {limit} bytes (routes.output.max_reply_bytes)");
        ex.not_judged(bound, &why);
        return Ok(());
    }
    match reply_segments(api, &kept.whole(), coded.as_deref(), limit) {
        Ok(segments) => {
            if !ex
                .judge_sent_reply(bound, segments)
                .await
                .annotations
                .is_empty()
            {
                ex.outcome = Outcome::Annotated;
            }
        }
        Err(why) => ex.not_judged(bound, &why),
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_copy_is_the_body_up_to_its_bound_and_nothing_past_it() {
        let mut k = Kept::default();
        for piece in ["{\"a\":", "\"bc\"", "}"] {
            k.push(&Bytes::from(piece), 10);
        }
        assert!(!k.over);
        assert_eq!(&k.whole()[..], b"{\"a\":\"bc\"}");

        let mut k = Kept::default();
        k.push(&Bytes::from("0123456789"), 10);
        assert!(!k.over, "a body exactly at the bound is kept");
        assert_eq!(&k.whole()[..], b"0123456789");

        let mut k = Kept::default();
        k.push(&Bytes::from("012345"), 10);
        k.push(&Bytes::from("6789X"), 10);
        assert!(k.over);
        assert!(k.chunks.is_empty(), "a copy past its bound is dropped");
        // Later chunks are not kept either.
        k.push(&Bytes::from("Y"), 10);
        assert!(k.over && k.chunks.is_empty());
    }

    #[test]
    fn only_annotate_and_shadow_bindings_let_a_reply_go_first() {
        use crate::policy::parse_policy;
        use std::sync::Arc;
        let text = "+++\nid = \"t/p\"\ntitle = \"T\"\nversion = \"1\"\n[[codes]]\ncode = \"C\"\ntitle = \"C\"\n+++\nText.\n";
        let policy = Arc::new(parse_policy(std::path::Path::new("p.md"), text.as_bytes()).unwrap());
        let bound = |action| Bound {
            policy: policy.clone(),
            action,
            sample_rate: 1.0,
            candidate: None,
            joint: false,
        };
        assert!(applies(&[bound(Action::Shadow), bound(Action::Annotate)]));
        assert!(!applies(&[bound(Action::Shadow), bound(Action::Block)]));
        assert!(!applies(&[bound(Action::Block)]));
    }
}
