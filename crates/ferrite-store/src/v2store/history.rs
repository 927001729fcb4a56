//! The last 1000 events, for watches that start in the past (etcd's
//! `EventHistory`).

use std::collections::VecDeque;

use ferrite_etcd_api::v2::{Action, Event};

/// How many events etcd keeps.
pub(super) const CAPACITY: usize = 1000;

/// One event as the history keeps it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Recorded {
    pub(super) event: Event,
    /// A TTL refresh: kept (it took an index) but never shown to watchers.
    pub(super) refresh: bool,
}

#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub(super) struct History {
    events: VecDeque<Recorded>,
}

/// A watch asked for an index older than the history holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Cleared {
    pub(super) start_index: u64,
}

impl History {
    pub(super) fn from_events(events: VecDeque<Recorded>) -> History {
        History { events }
    }

    pub(super) fn events(&self) -> impl Iterator<Item = &Recorded> {
        self.events.iter()
    }

    pub(super) fn push(&mut self, recorded: Recorded) {
        if self.events.len() == CAPACITY {
            self.events.pop_front();
        }
        self.events.push_back(recorded);
    }

    /// The index of the oldest event kept (0 while empty).
    pub(super) fn start_index(&self) -> u64 {
        self.events.front().map_or(0, |r| r.event.node.modified_index)
    }

    fn last_index(&self) -> u64 {
        self.events.back().map_or(0, |r| r.event.node.modified_index)
    }

    /// etcd's `scan`: the first event at or after `index` that a watch on
    /// `key` sees, `None` if none is kept yet, [`Cleared`] if `index` is
    /// older than the history.
    pub(super) fn scan(&self, key: &str, recursive: bool, index: u64) -> Result<Option<&Event>, Cleared> {
        let start_index = self.start_index();
        if index < start_index {
            return Err(Cleared { start_index });
        }
        if index > self.last_index() {
            return Ok(None);
        }
        let first = self.events.partition_point(|r| r.event.node.modified_index < index);
        let subtree = if key.ends_with('/') { key.to_owned() } else { format!("{key}/") };
        let found = self.events.range(first..).filter(|r| !r.refresh).map(|r| &r.event).find(|e| {
            let removed_dir = matches!(e.action, Action::Delete | Action::Expire)
                && e.prev_node.as_ref().is_some_and(|prev| prev.dir && key.starts_with(&prev.key));
            // As in etcd: no hidden-key filter here, and a removed directory
            // matches any watched key it is a string prefix of.
            e.node.key == key || (recursive && e.node.key.starts_with(&subtree)) || removed_dir
        });
        Ok(found)
    }
}

#[cfg(test)]
mod tests {
    use ferrite_etcd_api::v2::Node;

    use super::*;

    fn event(action: Action, key: &str, index: u64) -> Recorded {
        Recorded {
            event: Event {
                action,
                node: Node { key: key.into(), modified_index: index, created_index: index, ..Node::default() },
                prev_node: None,
            },
            refresh: false,
        }
    }

    #[test]
    fn keeps_the_last_thousand_and_reports_the_cleared_start() {
        let mut history = History::default();
        assert_eq!(history.scan("/a", false, 1), Ok(None));
        for i in 1..=1005 {
            history.push(event(Action::Set, "/a", i));
        }
        assert_eq!(history.start_index(), 6);
        assert_eq!(history.scan("/a", false, 5), Err(Cleared { start_index: 6 }));
        assert_eq!(history.scan("/a", false, 6).unwrap().unwrap().node.modified_index, 6);
        assert_eq!(history.scan("/a", false, 1006), Ok(None));
    }

    #[test]
    fn finds_the_first_match_at_or_after_the_index() {
        let mut history = History::default();
        history.push(event(Action::Set, "/a", 1));
        history.push(event(Action::Set, "/b/c", 2));
        history.push(event(Action::Set, "/a", 3));
        let mut refresh = event(Action::Set, "/b/c", 4);
        refresh.refresh = true;
        history.push(refresh);
        let found = |key, recursive, index| history.scan(key, recursive, index).unwrap().map(|e| e.node.modified_index);
        assert_eq!(found("/a", false, 2), Some(3));
        assert_eq!(found("/b", false, 1), None);
        assert_eq!(found("/b", true, 1), Some(2));
        assert_eq!(found("/", true, 2), Some(2));
        assert_eq!(found("/b/c", false, 3), None, "refreshes are skipped");
    }

    #[test]
    fn a_removed_directory_matches_keys_it_prefixes() {
        let mut history = History::default();
        let mut delete = event(Action::Delete, "/foo", 1);
        delete.event.prev_node = Some(Node { key: "/foo".into(), dir: true, ..Node::default() });
        history.push(delete);
        for key in ["/foo/x/y", "/foobar", "/foo"] {
            assert!(history.scan(key, false, 1).unwrap().is_some(), "{key}");
        }
        assert!(history.scan("/fo", false, 1).unwrap().is_none());
    }
}
