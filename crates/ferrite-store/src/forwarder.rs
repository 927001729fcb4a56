//! A follower's writes on their way to the leader.
//!
//! Forwarding each write as its own peer call costs the leader a request
//! to parse and answer per write, which at a few thousand writes a second
//! is most of its CPU. The forwarder queues the follower's writes and lets
//! one call at a time be outstanding; writes that arrive meanwhile go
//! together in the next call (a list, on the stream to the leader),
//! which the leader hands to its proposer at once, so they usually share
//! one log entry as well. A write that finds a free slot goes at once.
//!
//! A failed call fails every write in it with the transport error: the
//! leader may or may not have proposed them, so none may be retried.

use std::sync::Arc;
use std::time::Instant;

use crate::batch::{answer_all, Batcher, Completion, Pending};
use crate::node::{NodeError, Proposed};
use crate::raft::network::PeerCallError;
use crate::raft::stream::{Kind, Streams};
use crate::raft::types::{NodeId, Request};

/// Calls to the leader outstanding at once. One: each call costs both
/// ends a request to parse and answer and the leader a proposal, so the
/// fewer and fuller the better. Writes queue for one round trip at most.
/// At 32 connections on a 2-core machine, writes through a follower went
/// from 4.3k/s at 4 (p99 16-50 ms) to 7.1k/s at 1 (p99 8 ms), and the
/// cluster's CPU per write from 0.29 to 0.18 ms (BENCHMARKS.md, "in
/// flight").
const MAX_IN_FLIGHT: usize = 1;

/// At most this many writes per call (the leader's proposer takes as many
/// per entry).
const MAX_BATCH: usize = 256;

/// Where a write goes, and until when its caller waits.
#[derive(Debug)]
pub struct Forward {
    pub leader: NodeId,
    pub peer_url: String,
    pub request: Request,
    pub deadline: Instant,
}

/// What the leader answered for one write, or why the call failed.
pub type Answer = Result<Result<Proposed, NodeError>, Arc<PeerCallError>>;

type Queued = Pending<Forward, Answer>;

/// The queue of writes to the leader. Cheap to share.
#[derive(Debug)]
pub struct Forwarder {
    queue: Batcher<Forward, Answer>,
}

impl Forwarder {
    pub fn spawn(streams: Streams) -> Forwarder {
        // Nothing to do in queue order: each batch is sent on its own.
        let queue =
            Batcher::spawn(MAX_IN_FLIGHT, MAX_BATCH, move |batch| std::future::ready(send(streams.clone(), batch)));
        Forwarder { queue }
    }

    /// Sends `forward.request` to the leader and waits for its answer.
    pub async fn forward(&self, forward: Forward) -> Answer {
        let deadline = forward.deadline;
        match tokio::time::timeout_at(deadline.into(), self.queue.submit(forward)).await {
            Ok(Some(answer)) => answer,
            Ok(None) => Ok(Err(NodeError::Stopped("the forwarder stopped".into()))),
            Err(_) => Ok(Err(NodeError::Timeout)),
        }
    }
}

/// One call per leader the batch names (only around a leader change is
/// there more than one).
fn send(streams: Streams, batch: Vec<Queued>) -> Completion {
    Box::pin(async move {
        let mut groups: Vec<(NodeId, String, Vec<Queued>)> = Vec::new();
        for pending in batch {
            let (leader, url) = (pending.request.leader, &pending.request.peer_url);
            match groups.iter_mut().find(|(l, u, _)| *l == leader && u == url) {
                Some((_, _, group)) => group.push(pending),
                None => groups.push((leader, url.clone(), vec![pending])),
            }
        }
        let calls = groups.into_iter().map(|(leader, url, group)| send_group(&streams, leader, url, group));
        futures::future::join_all(calls).await;
    })
}

async fn send_group(streams: &Streams, leader: NodeId, url: String, group: Vec<Queued>) {
    let deadline = group.iter().map(|p| p.request.deadline).max().unwrap_or_else(Instant::now);
    let (requests, replies): (Vec<Request>, Vec<_>) = group.into_iter().map(|p| (p.request.request, p.reply)).unzip();
    let left = deadline.saturating_duration_since(Instant::now());
    let answer: Result<Vec<Result<Proposed, NodeError>>, PeerCallError> =
        streams.call(leader, &url, Kind::Propose, &requests, left).await;
    match answer {
        Ok(answers) if answers.len() == replies.len() => {
            for (reply, answer) in replies.into_iter().zip(answers) {
                let _ = reply.send(Ok(answer));
            }
        }
        Ok(answers) => {
            let what = format!("the leader answered {} of {} forwarded writes", answers.len(), replies.len());
            answer_all(replies, || Ok(Err(NodeError::Internal(what.clone()))));
        }
        Err(e) => {
            let e = Arc::new(e);
            answer_all(replies, || Err(Arc::clone(&e)));
        }
    }
}
