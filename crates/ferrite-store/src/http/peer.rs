//! The peer API: the streams that carry raft's messages and the
//! proposals and read-index requests followers forward (see
//! [`crate::raft::stream`]), snapshots, membership changes forwarded to
//! the leader, and etcd's `GET /members` that a joining member reads.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, Request as HttpRequest, State};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use ferrite_etcd_api::v2;
use http::{HeaderValue, StatusCode};
use openraft::raft::{AppendEntriesRequest, InstallSnapshotRequest, VoteRequest};
use serde::de::DeserializeOwned;
use serde::Serialize;

use super::{go_json_line, respond, JSON};
use crate::node::{MemberError, Node};
use crate::raft::network::Encoding;
use crate::raft::stream::{self, Frame, Kind};
use crate::raft::types::{NodeId, Request, TypeConfig};

/// The peer API router.
pub fn router(node: Arc<Node>) -> Router {
    Router::new()
        .route(stream::ROUTE, post(open_stream))
        .route("/raft/snapshot", post(snapshot))
        .route("/raft/members/add", post(member_add))
        .route("/raft/members/remove", post(member_remove))
        .route("/members", get(members))
        // Raft's bodies (a batch of entries, a snapshot chunk of openraft's
        // default 3 MiB) outgrow axum's 2 MiB default; peers are trusted,
        // so allow up to the log's own record size limit.
        .layer(DefaultBodyLimit::max(1 << 30))
        .with_state(node)
}

/// Decodes a peer request, runs `serve` on it and encodes its answer.
async fn rpc<Req, Resp, F, Fut>(encoding: Encoding, body: &[u8], serve: F) -> Response
where
    Req: DeserializeOwned,
    Resp: Serialize,
    F: FnOnce(Req) -> Fut,
    Fut: std::future::Future<Output = Resp>,
{
    let req: Req = match encoding.decode(body) {
        Ok(r) => r,
        Err(e) => return (StatusCode::BAD_REQUEST, format!("undecodable peer request: {e}")).into_response(),
    };
    let answer = serve(req).await;
    match encoding.encode(&answer) {
        Ok(bytes) => respond(StatusCode::OK, encoding.content_type(), bytes),
        Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, format!("cannot encode peer answer: {e}")).into_response(),
    }
}

/// Upgrades the connection to a stream of calls from the peer.
async fn open_stream(State(node): State<Arc<Node>>, req: HttpRequest) -> Response {
    stream::accept(req, move |io| async move {
        stream::serve(io, |frame| answer(&node, frame), node.stopped()).await;
    })
}

/// Serves one call from a stream; the reply frame.
async fn answer(node: &Node, frame: Frame) -> Vec<u8> {
    let id = frame.id;
    let Some(kind) = Kind::from_tag(frame.tag) else {
        return stream::refusal(id, &format!("no call of kind {}", frame.tag));
    };
    let encoding = kind.encoding();
    macro_rules! serve {
        (|$req:ident: $ty:ty| $serve:expr) => {
            match encoding.decode::<$ty>(&frame.body) {
                Ok($req) => stream::reply(id, encoding, &$serve),
                Err(e) => stream::refusal(id, &format!("undecodable {} call: {e}", kind.name())),
            }
        };
    }
    match kind {
        Kind::Append => serve!(|req: AppendEntriesRequest<TypeConfig>| {
            node.counters.recv_append.fetch_add(1, Ordering::Relaxed);
            let answer = node.raft.append_entries(req).await;
            node.heard.append(&answer);
            answer
        }),
        Kind::Vote => serve!(|req: VoteRequest<NodeId>| {
            let answer = node.raft.vote(req).await;
            node.heard.vote(&answer);
            answer
        }),
        Kind::Propose => serve!(|requests: Vec<Request>| node.propose_forwarded(requests).await),
        Kind::ReadIndex => serve!(|_unit: ()| node.read_index_local().await),
    }
}

async fn snapshot(State(node): State<Arc<Node>>, body: Bytes) -> Response {
    rpc(Encoding::Postcard, &body, |req: InstallSnapshotRequest<TypeConfig>| async move {
        let vote = req.vote;
        let answer = node.raft.install_snapshot(req).await;
        node.heard.snapshot(&answer, &vote);
        answer
    })
    .await
}

// Membership changes travel as JSON (see [`Encoding`]).

async fn member_add(State(node): State<Arc<Node>>, body: Bytes) -> Response {
    rpc(Encoding::Json, &body, |peer_urls: Vec<String>| async move {
        let answer: Result<v2::Member, MemberError> = node.add_member_local(peer_urls).await;
        answer
    })
    .await
}

async fn member_remove(State(node): State<Arc<Node>>, body: Bytes) -> Response {
    rpc(Encoding::Json, &body, |id: NodeId| async move {
        let answer: Result<(), MemberError> = node.remove_member_local(id).await;
        answer
    })
    .await
}

/// etcd's peer `/members`: the member list a joining member bootstraps from.
async fn members(State(node): State<Arc<Node>>) -> Response {
    let mut resp = respond(StatusCode::OK, JSON, go_json_line(&node.members()));
    if let Ok(v) = HeaderValue::from_str(&v2::format_id(node.cluster_id)) {
        resp.headers_mut().insert("x-etcd-cluster-id", v);
    }
    resp
}
