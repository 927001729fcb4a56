//! openraft's type configuration, declared once for the whole store.

use std::io::Cursor;

use ferrite_etcd_api::v2;
use serde::{Deserialize, Serialize};

use crate::v2store;

/// A member's raft identity is its etcd member id.
pub type NodeId = u64;

/// What raft's membership config knows about a member: where its peers
/// reach it. Its name and client URLs are published through the log once
/// it starts (see [`Request::PublishMember`]), as etcd does.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PeerNode {
    pub peer_urls: Vec<String>,
}

impl std::fmt::Display for PeerNode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.peer_urls.join(","))
    }
}

/// A replicated request: the payload of a normal log entry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Request {
    /// A write to the v2 key space.
    Keys(v2store::Command),
    /// A member announces its name and client URLs.
    PublishMember { id: NodeId, name: String, client_urls: Vec<String> },
    /// Writes that queued up while earlier entries were in flight, proposed
    /// as one log entry (group commit, see [`crate::proposer`]). Applied in
    /// order; answered by a [`Response::Batch`] of the same length. Last
    /// variant, so logs written before it existed still decode.
    Batch(Vec<Request>),
}

impl Request {
    /// How many client writes this is: one, or a batch's.
    pub fn writes(&self) -> u64 {
        match self {
            Request::Batch(requests) => requests.iter().map(Request::writes).sum(),
            Request::Keys(_) | Request::PublishMember { .. } => 1,
        }
    }
}

/// The result of applying a log entry.
#[expect(
    clippy::large_enum_variant,
    reason = "nearly every entry is a keys write; boxing would only add an allocation to each"
)]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Response {
    /// A [`Request::Keys`] write: the keys API answer.
    Keys(Result<v2store::Applied, v2::Error>),
    /// Applied, with nothing to answer: blank and membership entries, and
    /// [`Request::PublishMember`].
    Done,
    /// A [`Request::Batch`]: one answer per request, in order.
    Batch(Vec<Response>),
}

openraft::declare_raft_types!(
    /// The store's raft type configuration.
    pub TypeConfig:
        D = Request,
        R = Response,
        NodeId = NodeId,
        Node = PeerNode,
        Entry = openraft::Entry<TypeConfig>,
        SnapshotData = Cursor<Vec<u8>>,
        AsyncRuntime = openraft::TokioRuntime,
);

pub type Raft = openraft::Raft<TypeConfig>;
pub type Entry = openraft::Entry<TypeConfig>;
pub type LogId = openraft::LogId<NodeId>;
pub type Vote = openraft::Vote<NodeId>;
pub type RaftMetrics = openraft::RaftMetrics<NodeId, PeerNode>;
pub type StorageError = openraft::StorageError<NodeId>;
pub type StoredMembership = openraft::StoredMembership<NodeId, PeerNode>;
pub type SnapshotMeta = openraft::SnapshotMeta<NodeId, PeerNode>;
