//! Registered watches and who an event reaches (etcd's `watcherHub`).

use std::collections::HashMap;

use ferrite_etcd_api::v2::Event;
use tokio::sync::mpsc;

use super::path;

/// etcd's per-watcher buffer. A stream watcher that falls this far behind
/// is dropped, as etcd drops it.
pub(super) const BUFFER: usize = 100;

#[derive(Debug)]
struct Registration {
    events: mpsc::Sender<Event>,
    recursive: bool,
    stream: bool,
    /// Only events at or after this index reach the watcher.
    since_index: u64,
}

/// Watchers by the key they watch.
#[derive(Debug, Default)]
pub(super) struct Hub {
    by_key: HashMap<String, Vec<Registration>>,
    /// Registrations since the last sweep of watchers whose receiver is gone.
    since_sweep: usize,
    /// Watchers left by the last sweep.
    after_sweep: usize,
}

impl Hub {
    /// Registers a watch on a clean `key` and returns its event channel.
    pub(super) fn register(
        &mut self,
        key: String,
        recursive: bool,
        stream: bool,
        since_index: u64,
    ) -> mpsc::Receiver<Event> {
        self.since_sweep += 1;
        if self.since_sweep > self.after_sweep.max(64) {
            self.sweep();
        }
        let (events, receiver) = mpsc::channel(BUFFER);
        self.by_key.entry(key).or_default().push(Registration { events, recursive, stream, since_index });
        receiver
    }

    /// Live watchers (`watchers` in the store stats).
    pub(super) fn count(&self) -> usize {
        self.by_key.values().flatten().filter(|r| !r.events.is_closed()).count()
    }

    /// Every registration held, live or abandoned.
    #[cfg(test)]
    pub(super) fn held(&self) -> usize {
        self.by_key.values().map(Vec::len).sum()
    }

    /// Drops the watchers whose receiver is gone (a client that left).
    /// Amortised over registrations, so abandoned watches on quiet keys
    /// cannot pile up.
    fn sweep(&mut self) {
        self.by_key.retain(|_, list| {
            list.retain(|r| !r.events.is_closed());
            !list.is_empty()
        });
        self.since_sweep = 0;
        self.after_sweep = self.by_key.values().map(Vec::len).sum();
    }

    /// etcd's `notify`: offers the event to the watchers of the event's key
    /// and of every directory above it.
    pub(super) fn notify(&mut self, event: &Event) {
        if self.by_key.is_empty() {
            return;
        }
        for watched in path::ancestry(&event.node.key) {
            self.notify_at(event, watched, false);
        }
    }

    /// etcd's `notifyWatchers`: offers the event to the watchers of
    /// `watched`. `removed` marks a node removed by the event (a deleted or
    /// expired directory reaches the watchers of everything inside it).
    pub(super) fn notify_at(&mut self, event: &Event, watched: &str, removed: bool) {
        let Some(list) = self.by_key.get_mut(watched) else {
            return;
        };
        let key = event.node.key.as_str();
        let at_key = key == watched;
        let index = event.node.modified_index;
        if !at_key && path::is_hidden_from(watched, key) {
            return;
        }
        list.retain(|r| {
            if !((r.recursive || at_key || removed) && index >= r.since_index) {
                return !r.events.is_closed();
            }
            match r.events.try_send(event.clone()) {
                // A plain watch fires once; a stream keeps watching.
                Ok(()) => r.stream,
                // Fallen behind (etcd removes it) or the receiver is gone.
                Err(_) => false,
            }
        });
        if list.is_empty() {
            self.by_key.remove(watched);
        }
    }
}

#[cfg(test)]
mod tests {
    use ferrite_etcd_api::v2::{Action, Node};

    use super::*;

    fn event(key: &str, index: u64) -> Event {
        Event {
            action: Action::Set,
            node: Node { key: key.into(), modified_index: index, created_index: index, ..Node::default() },
            prev_node: None,
        }
    }

    #[test]
    fn plain_watchers_fire_once_and_leave() {
        let mut hub = Hub::default();
        let mut rx = hub.register("/a".into(), false, false, 1);
        assert_eq!(hub.count(), 1);
        hub.notify(&event("/a", 1));
        hub.notify(&event("/a", 2));
        assert_eq!(rx.try_recv().unwrap().node.modified_index, 1);
        assert!(rx.try_recv().is_err());
        assert_eq!(hub.count(), 0);
        assert!(hub.by_key.is_empty());
    }

    #[test]
    fn events_before_since_index_are_skipped() {
        let mut hub = Hub::default();
        let mut rx = hub.register("/a".into(), false, false, 5);
        hub.notify(&event("/a", 4));
        assert!(rx.try_recv().is_err());
        hub.notify(&event("/a", 5));
        assert_eq!(rx.try_recv().unwrap().node.modified_index, 5);
    }

    #[test]
    fn only_recursive_watchers_see_the_subtree_and_never_hidden_keys() {
        let mut hub = Hub::default();
        let mut flat = hub.register("/d".into(), false, true, 1);
        let mut deep = hub.register("/d".into(), true, true, 1);
        let mut root = hub.register("/".into(), true, true, 1);
        hub.notify(&event("/d/x", 1));
        hub.notify(&event("/d/_h", 2));
        hub.notify(&event("/_h/y", 3));
        assert!(flat.try_recv().is_err());
        assert_eq!(deep.try_recv().unwrap().node.key, "/d/x");
        assert!(deep.try_recv().is_err());
        assert_eq!(root.try_recv().unwrap().node.key, "/d/x");
        assert!(root.try_recv().is_err());
        // A hidden key is still seen by a watch on that key itself.
        let mut direct = hub.register("/d/_h".into(), false, false, 1);
        hub.notify(&event("/d/_h", 4));
        assert_eq!(direct.try_recv().unwrap().node.key, "/d/_h");
    }

    #[test]
    fn a_stream_watcher_that_falls_behind_is_dropped() {
        let mut hub = Hub::default();
        let mut rx = hub.register("/a".into(), false, true, 1);
        for i in 1..=BUFFER as u64 + 1 {
            hub.notify(&event("/a", i));
        }
        assert_eq!(hub.count(), 0);
        let mut received = 0;
        while rx.try_recv().is_ok() {
            received += 1;
        }
        assert_eq!(received, BUFFER);
        assert!(rx.is_closed(), "the channel ends so the client sees the stream end");
    }

    #[test]
    fn dropped_receivers_are_removed_on_notify_and_by_the_sweep() {
        let mut hub = Hub::default();
        drop(hub.register("/a".into(), false, true, 1));
        assert_eq!(hub.count(), 0, "not counted once the receiver is gone");
        hub.notify(&event("/a", 1));
        assert!(hub.by_key.is_empty());

        drop(hub.register("/quiet".into(), false, false, 1));
        let _kept: Vec<_> = (0..200).map(|i| hub.register(format!("/k{i}"), false, false, 1)).collect();
        assert!(!hub.by_key.contains_key("/quiet"), "swept without any event on /quiet");
        assert_eq!(hub.count(), 200);
    }
}
