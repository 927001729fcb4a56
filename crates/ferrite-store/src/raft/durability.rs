//! How far the local raft log is on disk, for the leader's parallel write.
//!
//! openraft 0.9's core waits for the leader's own fsync of an entry before
//! it sends the entry to any follower, so every write pays the leader's
//! fsync and then a follower's, in series. The raft thesis (§10.2.1) and
//! etcd let the leader write its log in parallel with replicating it; what
//! keeps that safe is that no entry counts as committed anywhere (applied,
//! or told to a follower) before the leader's copy is on disk too.
//!
//! So the log store acknowledges the leader's own appends as soon as they
//! are in its in-memory log (the core then replicates at once), and the
//! writer thread fsyncs them as usual and publishes here the last index on
//! disk. Two gates hold commitment back until then:
//! - the state machine applies an entry only once it is synced here, so no
//!   client is answered, and no read sees a write, before a majority
//!   including the leader has it on disk;
//! - an AppendEntries carries a commit index no higher than what is synced
//!   here, so followers never apply what the leader could lose. (It is
//!   lowered, not held back: a follower takes the rest of the commit with
//!   the next message, and its new entries do not wait for the leader's
//!   fsync.)
//!
//! A follower's appends are still acknowledged only after their fsync (its
//! answer to the leader is its vote for durability), so on a follower both
//! gates are always already open.

use tokio::sync::watch;

/// What the writer thread has made durable.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Synced {
    /// Every entry up to this index, as the log now holds it, is on disk.
    Upto(u64),
    /// A write failed; nothing more will be synced.
    Failed(String),
}

/// The writer's side: publishes progress.
#[derive(Debug)]
pub(crate) struct SyncedSender(watch::Sender<Synced>);

impl SyncedSender {
    pub(crate) fn new(upto: u64) -> (SyncedSender, Durability) {
        let (tx, rx) = watch::channel(Synced::Upto(upto));
        (SyncedSender(tx), Durability { rx })
    }

    /// Everything up to `upto` is now on disk.
    pub(crate) fn synced(&self, upto: u64) {
        self.0.send_if_modified(|s| match s {
            Synced::Upto(old) if *old != upto => {
                *old = upto;
                true
            }
            _ => false,
        });
    }

    /// The log was cut back: entries after `last` are no longer the synced
    /// ones, whatever replaces them.
    pub(crate) fn truncated(&self, last: u64) {
        self.0.send_if_modified(|s| match s {
            Synced::Upto(old) if *old > last => {
                *old = last;
                true
            }
            _ => false,
        });
    }

    pub(crate) fn failed(&self, reason: String) {
        self.0.send_replace(Synced::Failed(reason));
    }
}

/// Waits for the local log to be on disk up to an index. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Durability {
    rx: watch::Receiver<Synced>,
}

impl Durability {
    /// Returns once every entry up to `index` is on disk, or why it never
    /// will be (the log's writer failed, or the store closed).
    pub async fn wait(&self, index: u64) -> Result<(), String> {
        let mut rx = self.rx.clone();
        let state = rx
            .wait_for(|s| match s {
                Synced::Upto(upto) => *upto >= index,
                Synced::Failed(_) => true,
            })
            .await
            .map_err(|_| "the raft log was closed".to_owned())?;
        match &*state {
            Synced::Upto(_) => Ok(()),
            Synced::Failed(reason) => Err(format!("the raft log cannot be written: {reason}")),
        }
    }

    /// The last index on disk now, or why nothing more will be.
    pub fn synced(&self) -> Result<u64, String> {
        match &*self.rx.borrow() {
            Synced::Upto(upto) => Ok(*upto),
            Synced::Failed(reason) => Err(format!("the raft log cannot be written: {reason}")),
        }
    }

    /// Why the log's writer failed, if it did.
    pub fn failure(&self) -> Option<String> {
        match &*self.rx.borrow() {
            Synced::Failed(reason) => Some(reason.clone()),
            Synced::Upto(_) => None,
        }
    }
}
