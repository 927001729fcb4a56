//! Group commit of writes on the leader.
//!
//! openraft 0.9's core makes each client write its own log entry, and
//! before it handles its next message (or sends the entry to followers) it
//! waits for that entry's fsync (`RaftCore::append_to_log` awaits the
//! flush callback). One write per entry therefore costs a leader fsync and
//! a replication round trip in series, and the log writer's own grouping
//! never gets more than one entry to share an fsync.
//!
//! The proposer queues the leader's writes (local and forwarded) and lets
//! at most [`MAX_IN_FLIGHT`] entries be in raft at a time. Writes that
//! arrive meanwhile wait in the queue and go, in arrival order, as one
//! [`Request::Batch`] entry as soon as a slot frees. A write that finds a
//! free slot goes at once as itself: no timer, no added latency when idle.
//!
//! Durability is unchanged: a batch is one log entry, so every write in it
//! is fsynced on a quorum and committed before any of them is answered,
//! and all of them are applied (in order) before the answers go out.

use openraft::error::ClientWriteError;

use crate::batch::{answer_all, Batcher, Completion, Pending};
use crate::node::{NodeError, NotLeader, Proposed};
use crate::raft::types::{Raft, Request, Response};

/// Entries of this proposer in raft at once. Two lets the next batch's
/// leader fsync overlap the previous batch's replication; more only makes
/// batches smaller (each costs the leader's core a separate fsync).
const MAX_IN_FLIGHT: usize = 2;

/// At most this many writes per entry, which bounds an entry's size (and
/// so an AppendEntries body) to well under the peer body limit.
const MAX_BATCH: usize = 256;

/// What a proposal came to: `Err(NotLeader)` means nothing was proposed.
pub type Outcome = Result<Result<Proposed, NodeError>, NotLeader>;

/// The queue in front of `Raft::client_write`. Cheap to share.
#[derive(Debug)]
pub struct Proposer {
    queue: Batcher<Request, Outcome>,
}

impl Proposer {
    /// Starts the proposer's task; it ends when the proposer is dropped.
    pub fn spawn(raft: Raft) -> Proposer {
        let queue = Batcher::spawn(MAX_IN_FLIGHT, MAX_BATCH, move |batch| submit(raft.clone(), batch));
        Proposer { queue }
    }

    /// Proposes `request` and waits until it is committed and applied here.
    pub async fn propose(&self, request: Request) -> Outcome {
        self.queue.submit(request).await.unwrap_or_else(|| Ok(Err(NodeError::Stopped("the proposer stopped".into()))))
    }
}

/// Submits one batch to raft as one entry (a lone write as itself), in
/// queue order; what is left is waiting for it to be applied.
async fn submit(raft: Raft, batch: Vec<Pending<Request, Outcome>>) -> Completion {
    let (requests, replies): (Vec<Request>, Vec<_>) = batch.into_iter().map(|p| (p.request, p.reply)).unzip();
    let (request, batched) = match <[Request; 1]>::try_from(requests) {
        Ok([one]) => (one, false),
        Err(requests) => (Request::Batch(requests), true),
    };
    let answer = match raft.client_write_ff(request).await {
        Ok(answer) => answer,
        Err(fatal) => {
            let reason = fatal.to_string();
            answer_all(replies, || Ok(Err(NodeError::Stopped(reason.clone()))));
            return Box::pin(async {});
        }
    };
    Box::pin(async move {
        match answer.await {
            Ok(Ok(written)) => {
                let log_index = written.log_id.index;
                match (written.data, batched) {
                    (Response::Batch(responses), true) if responses.len() == replies.len() => {
                        for (reply, response) in replies.into_iter().zip(responses) {
                            let _ = reply.send(Ok(Ok(Proposed { response, log_index })));
                        }
                    }
                    (response, false) => {
                        answer_all(replies, || Ok(Ok(Proposed { response: response.clone(), log_index })))
                    }
                    (other, true) => answer_all(replies, || {
                        Ok(Err(NodeError::Internal(format!("a batch of writes applied as {other:?}"))))
                    }),
                }
            }
            Ok(Err(ClientWriteError::ForwardToLeader(_))) => answer_all(replies, || Err(NotLeader)),
            Ok(Err(ClientWriteError::ChangeMembershipError(e))) => {
                answer_all(replies, || Ok(Err(NodeError::Internal(e.to_string()))))
            }
            // The raft core stopped before answering; say why.
            Err(_) => {
                let reason = stop_reason(&raft);
                answer_all(replies, || Ok(Err(NodeError::Stopped(reason.clone()))));
            }
        }
    })
}

/// Why raft stopped, from its metrics (e.g. the failed log write).
pub(crate) fn stop_reason(raft: &Raft) -> String {
    match &raft.metrics().borrow().running_state {
        Ok(()) => "raft shut down".to_owned(),
        Err(fatal) => fatal.to_string(),
    }
}
