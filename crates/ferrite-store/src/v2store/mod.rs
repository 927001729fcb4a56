//! The etcd v2 key space as a pure state machine.
//!
//! Every key this module sees is the user's key ("/foo/bar"); the user's
//! root "/" is a read-only directory created at index 0, as etcd's "/1"
//! namespace is, and responses and error causes show keys exactly as etcd
//! shows them once it has trimmed that namespace. The store index starts
//! at 0.
//!
//! Time never comes from a clock here: writes carry their expiration as
//! absolute Unix nanoseconds stamped by the proposing node, expiry is the
//! [`Command::DeleteExpired`] command the leader proposes, and `now` only
//! prints the remaining `ttl` of nodes in answers and events. No I/O.
//!
//! The behaviour, quirks included, is etcd 3.4's `v2store`: see the notes
//! on each operation. Listings always come out sorted by key (etcd's
//! unsorted order is Go's random map order, of which this is one).
//!
//! Layout: `node` (a node and how it prints), `tree` (walking the key
//! space and the expiration index), `history` (the last 1000 events),
//! `watcher` (the watcher hub), `stats` (the counters), `snapshot` (the
//! serialized form), `path` (cleaning and splitting keys).

mod history;
mod node;
mod path;
mod snapshot;
mod stats;
mod tree;
mod watcher;

#[cfg(test)]
mod tests;

use ferrite_etcd_api::v2::{self, Action, Error, ErrorCode, Event};
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;

use self::history::{Cleared, History, Recorded};
use self::node::{Body, Node};
use self::stats::{Op, Stats};
use self::tree::Expirations;
use self::watcher::Hub;

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
    /// `PUT` (etcd's `Set`): create or replace a key, or create a directory
    /// in place of a key. A directory in the way is `NotFile`.
    Set { key: String, dir: bool, value: String, ttl: Ttl },
    /// `PUT prevExist=false`, or `POST` with `unique` (the new key is the
    /// new index, zero-padded to 20 digits, under `key`).
    Create { key: String, dir: bool, value: String, unique: bool, ttl: Ttl },
    /// `PUT prevExist=true`: a key's value and TTL, or a directory's TTL.
    Update { key: String, value: String, ttl: Ttl },
    /// `PUT` with `prevValue` and/or `prevIndex` (empty and 0 match anything).
    CompareAndSwap { key: String, prev_value: String, prev_index: u64, value: String, ttl: Ttl },
    /// `DELETE`; `recursive` implies `dir`.
    Delete { key: String, dir: bool, recursive: bool },
    /// `DELETE` with `prevValue` and/or `prevIndex`.
    CompareAndDelete { key: String, prev_value: String, prev_index: u64 },
    /// Remove every node whose expiration is at or before `cutoff`
    /// (the leader's clock), emitting `expire` events.
    ///
    /// Nobody waits on its answer: it is the last `expire` event, or
    /// `KeyNotFound` with an empty cause when nothing was due (another
    /// expiry or a write got there first).
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
    ///
    /// The channel closes once the store will send nothing more: after a
    /// plain watch's event; after the one event of a watch answered from
    /// history (etcd then holds a stream open with nothing more to send);
    /// when a stream falls [`WATCH_BUFFER`] events behind (etcd drops such a
    /// watcher); when the store is dropped or replaced by a restore.
    pub events: mpsc::Receiver<Event>,
}

/// How many undelivered events a watcher may hold (etcd's channel size).
pub const WATCH_BUFFER: usize = watcher::BUFFER;

/// How many past events the store keeps for watches (etcd's history size).
pub const HISTORY_CAPACITY: usize = history::CAPACITY;

/// etcd treats a create's expiration before 2000-01-01 as none at all.
const MIN_EXPIRE_AT: UnixNanos = 946_684_800 * 1_000_000_000;

/// The v2 store.
#[derive(Debug)]
pub struct Store {
    /// The user's root directory, created at index 0.
    root: Node,
    expirations: Expirations,
    index: u64,
    history: History,
    hub: Hub,
    stats: Stats,
}

impl Default for Store {
    fn default() -> Store {
        Store::new()
    }
}

impl Store {
    pub fn new() -> Store {
        Store {
            root: Node::dir(0, None),
            expirations: Expirations::default(),
            index: 0,
            history: History::default(),
            hub: Hub::default(),
            stats: Stats::default(),
        }
    }

    /// The store index: the index of the last write.
    pub fn index(&self) -> u64 {
        self.index
    }

    /// Reads a key or lists a directory (hidden children omitted, the
    /// subtree too when `recursive`). Counts in the stats, as etcd does.
    /// `sorted` changes nothing: listings are always sorted.
    pub fn get(&mut self, key: &str, recursive: bool, sorted: bool, now: UnixNanos) -> Result<Applied, Error> {
        let _ = sorted;
        let key = path::clean(key);
        let result = tree::lookup(&self.root, &key, self.index).map(|node| Applied {
            event: Event {
                action: Action::Get,
                node: node.listing(path::display(&key), recursive, now),
                prev_node: None,
            },
            etcd_index: self.index,
        });
        self.stats.count(Op::Get, result.is_ok());
        result
    }

    /// Applies a replicated write. `now` only prints `ttl` in the answer
    /// and in the events watchers receive.
    pub fn apply(&mut self, command: &Command, now: UnixNanos) -> Result<Applied, Error> {
        let event = match command {
            Command::Set { key, dir, value, ttl } => self.set(key, *dir, value, *ttl, now),
            Command::Create { key, dir, value, unique, ttl } => self.create(key, *dir, value, *unique, *ttl, now),
            Command::Update { key, value, ttl } => self.update(key, value, *ttl, now),
            Command::CompareAndSwap { key, prev_value, prev_index, value, ttl } => {
                self.compare_and_swap(key, prev_value, *prev_index, value, *ttl, now)
            }
            Command::Delete { key, dir, recursive } => self.delete(key, *dir, *recursive, now),
            Command::CompareAndDelete { key, prev_value, prev_index } => {
                self.compare_and_delete(key, prev_value, *prev_index, now)
            }
            Command::DeleteExpired { cutoff } => self.delete_expired(*cutoff, now),
        }?;
        Ok(Applied { event, etcd_index: self.index })
    }

    /// Watches `key` (its subtree when `recursive`) from `since_index`, or
    /// from the next write when it is 0. An event already in the history is
    /// delivered at once; an index older than the history is
    /// `EventIndexCleared`.
    pub fn watch(&mut self, key: &str, recursive: bool, stream: bool, since_index: u64) -> Result<Watcher, Error> {
        let key = path::clean(key);
        let since = if since_index == 0 { self.index + 1 } else { since_index };
        match self.history.scan(&key, recursive, since) {
            Err(Cleared { start_index }) => Err(Error::new(
                ErrorCode::EventIndexCleared,
                format!("the requested history has been cleared [{start_index}/{since}]"),
                self.index,
            )),
            Ok(Some(event)) => {
                let (sender, events) = mpsc::channel(WATCH_BUFFER);
                // A fresh channel always has room for its one event.
                let _ = sender.try_send(event.clone());
                Ok(Watcher { start_index: self.index, events })
            }
            Ok(None) => {
                Ok(Watcher { start_index: self.index, events: self.hub.register(key, recursive, stream, since) })
            }
        }
    }

    /// The earliest expiration among all nodes, for the leader's expiry timer.
    pub fn next_expiration(&self) -> Option<UnixNanos> {
        self.expirations.first().map(|(at, _)| at)
    }

    /// `/v2/stats/store` as etcd prints it.
    pub fn stats_json(&self) -> serde_json::Value {
        self.stats.to_json(u64::try_from(self.hub.count()).unwrap_or(u64::MAX))
    }

    /// The whole store (tree, TTLs, index, history, stats) as bytes, for a
    /// raft snapshot. Watchers are not part of it.
    pub fn snapshot(&self) -> Vec<u8> {
        snapshot::encode(self)
    }

    /// The store a [`Store::snapshot`] was taken of, with no watchers.
    pub fn restore(bytes: &[u8]) -> Result<Store, SnapshotError> {
        snapshot::decode(bytes)
    }

    fn set(&mut self, key: &str, dir: bool, value: &str, ttl: Ttl, now: UnixNanos) -> Result<Event, Error> {
        let key = path::clean(key);
        let result = self.set_node(&key, dir, value, ttl, now);
        self.stats.count(Op::Set, result.is_ok());
        let event = result?;
        self.publish(&event, ttl.refresh);
        Ok(event)
    }

    fn set_node(&mut self, key: &str, dir: bool, value: &str, ttl: Ttl, now: UnixNanos) -> Result<Event, Error> {
        let value = match tree::lookup(&self.root, key, self.index) {
            // A refresh keeps the value it finds.
            Ok(node) if ttl.refresh => node.value().to_owned(),
            Ok(_) => value.to_owned(),
            Err(e) if ttl.refresh || e.error_code != ErrorCode::KeyNotFound.code() => return Err(e),
            Err(_) => value.to_owned(),
        };
        self.create_node(key, dir, value, true, ttl.expire_at, Action::Set, now)
    }

    fn create(
        &mut self,
        key: &str,
        dir: bool,
        value: &str,
        unique: bool,
        ttl: Ttl,
        now: UnixNanos,
    ) -> Result<Event, Error> {
        let mut key = path::clean(key);
        if unique {
            key = path::child(&key, &format!("{:020}", self.index + 1));
        }
        let result = self.create_node(&key, dir, value.to_owned(), false, ttl.expire_at, Action::Create, now);
        self.stats.count(Op::Create, result.is_ok());
        let event = result?;
        // etcd's Create ignores `refresh`.
        self.publish(&event, false);
        Ok(event)
    }

    /// etcd's `internalCreate`: makes missing parent directories, then the
    /// node; `replace` lets it take a key's place (never a directory's).
    #[allow(clippy::too_many_arguments)]
    fn create_node(
        &mut self,
        key: &str,
        dir: bool,
        value: String,
        replace: bool,
        expire_at: Option<UnixNanos>,
        action: Action,
        now: UnixNanos,
    ) -> Result<Event, Error> {
        let current = self.index;
        let next = current + 1;
        if key == "/" {
            return Err(root_read_only(current));
        }
        let expire_at = expire_at.filter(|at| *at >= MIN_EXPIRE_AT);
        let (dir_key, name) = path::split(key);
        let children = match tree::ensure_dir(&mut self.root, dir_key, next, current) {
            Ok(children) => children,
            Err(e) => {
                // etcd counts this as a failed set whatever the operation.
                self.stats.count(Op::Set, false);
                return Err(e);
            }
        };
        let mut prev_node = None;
        if let Some(existing) = children.get(name) {
            if !replace {
                return Err(Error::new(ErrorCode::NodeExist, key, current));
            }
            if existing.is_dir() {
                return Err(Error::new(ErrorCode::NotFile, key, current));
            }
            prev_node = Some(existing.repr(key, now));
            if let Some(at) = existing.expire_at {
                self.expirations.remove(at, key);
            }
        }
        let node = if dir { Node::dir(next, expire_at) } else { Node::file(value, next, expire_at) };
        let shown = node.repr(key, now);
        children.insert(name.to_owned(), node);
        if let Some(at) = expire_at {
            self.expirations.insert(at, key);
        }
        self.index = next;
        Ok(Event { action, node: shown, prev_node })
    }

    fn update(&mut self, key: &str, value: &str, ttl: Ttl, now: UnixNanos) -> Result<Event, Error> {
        let key = path::clean(key);
        let current = self.index;
        let next = current + 1;
        if key == "/" {
            // etcd returns this one before its counter sees an error.
            self.stats.count(Op::Update, true);
            return Err(root_read_only(current));
        }
        let node = match tree::lookup_mut(&mut self.root, &key, current) {
            Ok(node) => node,
            Err(e) => {
                self.stats.count(Op::Update, false);
                return Err(e);
            }
        };
        if node.is_dir() && !value.is_empty() {
            // Counted as a success too, as etcd does.
            self.stats.count(Op::Update, true);
            return Err(Error::new(ErrorCode::NotFile, key, current));
        }
        let prev_node = node.repr(&key, now);
        // A directory keeps its modifiedIndex: etcd's `Write` refuses it.
        if let Body::File(stored) = &mut node.body {
            if !ttl.refresh {
                value.clone_into(stored);
            }
            node.modified_index = next;
        }
        let old_expire_at = std::mem::replace(&mut node.expire_at, ttl.expire_at);
        let mut shown = node.repr(&key, now);
        shown.modified_index = next;
        self.expirations.change(&key, old_expire_at, ttl.expire_at);
        self.index = next;
        self.stats.count(Op::Update, true);
        let event = Event { action: Action::Update, node: shown, prev_node: Some(prev_node) };
        self.publish(&event, ttl.refresh);
        Ok(event)
    }

    fn compare_and_swap(
        &mut self,
        key: &str,
        prev_value: &str,
        prev_index: u64,
        value: &str,
        ttl: Ttl,
        now: UnixNanos,
    ) -> Result<Event, Error> {
        let key = path::clean(key);
        let current = self.index;
        let next = current + 1;
        if key == "/" {
            // etcd returns this one before its counter sees an error.
            self.stats.count(Op::CompareAndSwap, true);
            return Err(root_read_only(current));
        }
        let checked = tree::lookup_mut(&mut self.root, &key, current).and_then(|node| {
            if node.is_dir() {
                return Err(Error::new(ErrorCode::NotFile, key.as_str(), current));
            }
            match compare_failure(node, prev_value, prev_index) {
                Some(cause) => Err(Error::new(ErrorCode::TestFailed, cause, current)),
                None => Ok(node),
            }
        });
        let node = match checked {
            Ok(node) => node,
            Err(e) => {
                self.stats.count(Op::CompareAndSwap, false);
                return Err(e);
            }
        };
        let prev_node = node.repr(&key, now);
        if let (Body::File(stored), false) = (&mut node.body, ttl.refresh) {
            value.clone_into(stored);
        }
        node.modified_index = next;
        let old_expire_at = std::mem::replace(&mut node.expire_at, ttl.expire_at);
        let shown = node.repr(&key, now);
        self.expirations.change(&key, old_expire_at, ttl.expire_at);
        self.index = next;
        self.stats.count(Op::CompareAndSwap, true);
        let event = Event { action: Action::CompareAndSwap, node: shown, prev_node: Some(prev_node) };
        self.publish(&event, ttl.refresh);
        Ok(event)
    }

    fn delete(&mut self, key: &str, dir: bool, recursive: bool, now: UnixNanos) -> Result<Event, Error> {
        let key = path::clean(key);
        let current = self.index;
        if key == "/" {
            // etcd returns this one before its counter sees an error.
            self.stats.count(Op::Delete, true);
            return Err(root_read_only(current));
        }
        let dir = dir || recursive;
        let checked = tree::lookup(&self.root, &key, current).and_then(|node| match &node.body {
            Body::Dir(_) if !dir => Err(Error::new(ErrorCode::NotFile, key.as_str(), current)),
            Body::Dir(children) if !children.is_empty() && !recursive => {
                Err(Error::new(ErrorCode::DirNotEmpty, key.as_str(), current))
            }
            _ => Ok(removal_event(Action::Delete, &key, node, current + 1, now)),
        });
        self.stats.count(Op::Delete, checked.is_ok());
        let event = checked?;
        self.remove_subtree(&key, &event);
        self.index = current + 1;
        self.publish(&event, false);
        Ok(event)
    }

    fn compare_and_delete(
        &mut self,
        key: &str,
        prev_value: &str,
        prev_index: u64,
        now: UnixNanos,
    ) -> Result<Event, Error> {
        // No read-only check: on the root this is `NotFile` for etcd's "/1",
        // which prints with no cause.
        let key = path::clean(key);
        let current = self.index;
        let node = match tree::lookup(&self.root, &key, current) {
            Ok(node) => node,
            Err(e) => {
                self.stats.count(Op::CompareAndDelete, false);
                return Err(e);
            }
        };
        // etcd returns these two before its counter sees an error: they
        // count as successes.
        if node.is_dir() {
            self.stats.count(Op::CompareAndDelete, true);
            return Err(Error::new(ErrorCode::NotFile, path::display(&key), current));
        }
        if let Some(cause) = compare_failure(node, prev_value, prev_index) {
            self.stats.count(Op::CompareAndDelete, true);
            return Err(Error::new(ErrorCode::TestFailed, cause, current));
        }
        let event = removal_event(Action::CompareAndDelete, &key, node, current + 1, now);
        self.remove_subtree(&key, &event);
        self.index = current + 1;
        self.stats.count(Op::CompareAndDelete, true);
        self.publish(&event, false);
        Ok(event)
    }

    /// etcd's `DeleteExpiredKeys`: each due node, earliest first, is removed
    /// with its subtree by an `expire` event that takes an index.
    fn delete_expired(&mut self, cutoff: UnixNanos, now: UnixNanos) -> Result<Event, Error> {
        let mut last = None;
        while let Some((at, key)) = self.expirations.first() {
            if at > cutoff {
                break;
            }
            let key = key.to_owned();
            self.expirations.remove(at, &key);
            let next = self.index + 1;
            let Ok(node) = tree::lookup(&self.root, &key, self.index) else {
                // Every deadline belongs to a node; skip rather than trust one that does not.
                continue;
            };
            let event = removal_event(Action::Expire, &key, node, next, now);
            self.remove_subtree(&key, &event);
            self.index = next;
            self.stats.expire_count += 1;
            self.publish(&event, false);
            last = Some(event);
        }
        last.ok_or_else(|| Error::new(ErrorCode::KeyNotFound, "", self.index))
    }

    /// Unlinks the subtree at `key`, drops its deadlines and notifies the
    /// watchers of every removed node, children first (etcd's `Remove`
    /// callback; a stream watching the removed key itself hears the event
    /// again from [`Store::publish`], as in etcd).
    fn remove_subtree(&mut self, key: &str, event: &Event) {
        let Some(removed) = tree::detach(&mut self.root, key) else {
            return;
        };
        let Store { expirations, hub, .. } = self;
        tree::visit_removed(key, &removed, &mut |removed_key, node| {
            if let Some(at) = node.expire_at {
                expirations.remove(at, removed_key);
            }
            hub.notify_at(event, removed_key, true);
        });
    }

    /// Records the event and, unless it is a TTL refresh, notifies watchers.
    fn publish(&mut self, event: &Event, refresh: bool) {
        self.history.push(Recorded { event: event.clone(), refresh });
        if !refresh {
            self.hub.notify(event);
        }
    }
}

fn root_read_only(index: u64) -> Error {
    Error::new(ErrorCode::RootReadOnly, "/", index)
}

/// The event of a delete, compare-and-delete or expiry of `node` at `key`:
/// no value, `dir` for a directory, the node as it was in `prevNode`.
fn removal_event(action: Action, key: &str, node: &Node, index: u64, now: UnixNanos) -> Event {
    Event {
        action,
        node: v2::Node {
            key: key.to_owned(),
            dir: node.is_dir(),
            modified_index: index,
            created_index: node.created_index,
            ..v2::Node::default()
        },
        prev_node: Some(node.repr(key, now)),
    }
}

/// etcd's `Compare` and `getCompareFailCause`: `None` when `node` matches
/// (an empty `prev_value` and a 0 `prev_index` match anything), else the
/// cause etcd reports.
fn compare_failure(node: &Node, prev_value: &str, prev_index: u64) -> Option<String> {
    let value = node.value();
    let index = node.modified_index;
    let value_matches = prev_value.is_empty() || value == prev_value;
    let index_matches = prev_index == 0 || index == prev_index;
    match (value_matches, index_matches) {
        (true, true) => None,
        (false, true) => Some(format!("[{prev_value} != {value}]")),
        (true, false) => Some(format!("[{prev_index} != {index}]")),
        (false, false) => Some(format!("[{prev_value} != {value}] [{prev_index} != {index}]")),
    }
}

/// Why [`Store::restore`] refused its bytes; the text names the problem.
#[derive(Debug, thiserror::Error)]
#[error("v2 store snapshot is corrupt: {0}")]
pub struct SnapshotError(pub String);
