//! The etcd v2 key space as a pure state machine.
//!
//! INTERFACE STUB: the types and signatures here are the contract the raft
//! state machine and the HTTP layer are written against. Implementation to
//! follow (tree, TTL, event history, watcher hub, stats, snapshot).
//!
//! Every key this module sees is the user's key ("/foo/bar"); the user's
//! root "/" is a read-only directory, as etcd's "/1" namespace is.
//! Time never comes from a clock here: writes carry their expiration as
//! absolute Unix nanoseconds stamped by the proposing node, expiry is the
//! [`Command::DeleteExpired`] command the leader proposes, and reads take
//! `now` only to print the remaining `ttl`.

use ferrite_etcd_api::v2::{Error, Event};
use serde::{Deserialize, Serialize};

/// Unix time in nanoseconds.
pub type UnixNanos = i64;

/// How a write sets or keeps a node's expiration (etcd's `TTLOptionSet`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Ttl {
    /// Absolute expiration; `None` makes the node permanent.
    pub expire_at: Option<UnixNanos>,
    /// Refresh only the TTL: keep the value, notify no watcher.
    pub refresh: bool,
}

/// A replicated write. Applying the same commands in the same order gives
/// the same store on every member.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Command {
    Set { key: String, dir: bool, value: String, ttl: Ttl },
    Create { key: String, dir: bool, value: String, unique: bool, ttl: Ttl },
    Update { key: String, value: String, ttl: Ttl },
    CompareAndSwap { key: String, prev_value: String, prev_index: u64, value: String, ttl: Ttl },
    Delete { key: String, dir: bool, recursive: bool },
    CompareAndDelete { key: String, prev_value: String, prev_index: u64 },
    /// Remove every node whose expiration is at or before `cutoff`
    /// (the leader's clock), emitting `expire` events.
    DeleteExpired { cutoff: UnixNanos },
}

/// A successful operation: the event and the store index after it
/// (the `X-Etcd-Index` header).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Applied {
    pub event: Event,
    pub etcd_index: u64,
}

/// A registered watch.
#[derive(Debug)]
pub struct Watcher {
    /// The store index when the watch was registered (`X-Etcd-Index`).
    pub start_index: u64,
    /// Matching events; one for a plain watch, many for a stream.
    pub events: tokio::sync::mpsc::Receiver<Event>,
}

/// The v2 store.
#[derive(Debug, Default)]
pub struct Store {}

impl Store {
    pub fn new() -> Store {
        Store {}
    }

    pub fn index(&self) -> u64 {
        unimplemented!("v2store")
    }

    pub fn get(&mut self, key: &str, recursive: bool, sorted: bool, now: UnixNanos) -> Result<Applied, Error> {
        let _ = (key, recursive, sorted, now);
        unimplemented!("v2store")
    }

    pub fn apply(&mut self, command: &Command, now: UnixNanos) -> Result<Applied, Error> {
        let _ = (command, now);
        unimplemented!("v2store")
    }

    pub fn watch(&mut self, key: &str, recursive: bool, stream: bool, since_index: u64) -> Result<Watcher, Error> {
        let _ = (key, recursive, stream, since_index);
        unimplemented!("v2store")
    }

    /// The earliest expiration among all nodes, for the leader's expiry timer.
    pub fn next_expiration(&self) -> Option<UnixNanos> {
        unimplemented!("v2store")
    }

    /// `/v2/stats/store` as etcd prints it.
    pub fn stats_json(&self) -> serde_json::Value {
        unimplemented!("v2store")
    }

    pub fn snapshot(&self) -> Vec<u8> {
        unimplemented!("v2store")
    }

    pub fn restore(bytes: &[u8]) -> Result<Store, SnapshotError> {
        let _ = bytes;
        unimplemented!("v2store")
    }
}

#[derive(Debug, thiserror::Error)]
#[error("v2 store snapshot is corrupt: {0}")]
pub struct SnapshotError(pub String);
