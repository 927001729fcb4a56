//! What the store says the backends are. Pure: no I/O.
//!
//! The ambassador follows one key. Every value under it (the key itself
//! when it holds a value, otherwise every value in its subtree, in key
//! order) is a comma-separated list of `host:port` backends, so both a
//! registrator's layout (`/services/redis/<id>` = `10.0.0.5:6379`) and a
//! hand-written `10.0.0.5:6379,10.0.0.6:6379` work.

use std::collections::BTreeMap;

use ferrite_etcd_api::v2::{Action, Node};

/// The leaves of the followed key: store key → value.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Leaves(BTreeMap<String, String>);

/// A value that is not a `host:port` list entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejected {
    pub key: String,
    pub entry: String,
}

impl Leaves {
    /// The leaves of a node read recursively (`None`: the key does not exist).
    pub fn from_node(node: Option<&Node>) -> Leaves {
        let mut leaves = Leaves::default();
        if let Some(node) = node {
            leaves.insert_tree(node);
        }
        leaves
    }

    fn insert_tree(&mut self, node: &Node) {
        if node.dir {
            for child in node.nodes.iter().flatten() {
                self.insert_tree(child);
            }
        } else if let Some(value) = &node.value {
            self.0.insert(node.key.clone(), value.clone());
        }
    }

    /// Applies one watch event on the followed key or below it.
    pub fn apply(&mut self, action: Action, node: &Node) {
        match action {
            Action::Get => {}
            Action::Create | Action::Set | Action::Update | Action::CompareAndSwap => {
                // A set over a directory or a value replaces what was there.
                self.remove_tree(&node.key);
                self.insert_tree(node);
            }
            Action::Delete | Action::CompareAndDelete | Action::Expire => self.remove_tree(&node.key),
        }
    }

    fn remove_tree(&mut self, key: &str) {
        let below = format!("{}/", key.trim_end_matches('/'));
        self.0.retain(|k, _| k != key && !k.starts_with(&below));
    }

    /// The backends in key order, and the entries that are not `host:port`.
    pub fn backends(&self) -> (Vec<String>, Vec<Rejected>) {
        let mut backends = Vec::new();
        let mut rejected = Vec::new();
        for (key, value) in &self.0 {
            for entry in value.split(',').map(str::trim).filter(|e| !e.is_empty()) {
                if is_host_port(entry) {
                    backends.push(entry.to_owned());
                } else {
                    rejected.push(Rejected { key: key.clone(), entry: entry.to_owned() });
                }
            }
        }
        (backends, rejected)
    }
}

/// `host:port` or `[v6]:port` with a non-zero port.
fn is_host_port(entry: &str) -> bool {
    let Some((host, port)) = entry.rsplit_once(':') else { return false };
    let host_ok = if let Some(inner) = host.strip_prefix('[').and_then(|h| h.strip_suffix(']')) {
        inner.parse::<std::net::Ipv6Addr>().is_ok()
    } else {
        !host.is_empty() && !host.contains(':') && !host.contains(char::is_whitespace)
    };
    host_ok && port.parse::<u16>().is_ok_and(|p| p != 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn leaf(key: &str, value: &str) -> Node {
        Node { key: key.into(), value: Some(value.into()), ..Node::default() }
    }

    fn dir(key: &str, nodes: Vec<Node>) -> Node {
        Node { key: key.into(), dir: true, nodes: Some(nodes), ..Node::default() }
    }

    #[test]
    fn a_registrator_directory_lists_every_child_in_key_order() {
        let node = dir(
            "/services/redis",
            vec![
                leaf("/services/redis/h2:redis:6379", "10.0.0.2:32768"),
                leaf("/services/redis/h1:redis:6379", "10.0.0.1:32768"),
            ],
        );
        let (backends, rejected) = Leaves::from_node(Some(&node)).backends();
        assert_eq!(backends, ["10.0.0.1:32768", "10.0.0.2:32768"]);
        assert!(rejected.is_empty());
    }

    #[test]
    fn a_value_is_a_comma_separated_list() {
        let node = leaf("/amb/redis", " 10.0.0.1:6379, redis.local:6380,,[::1]:6381 ");
        let (backends, _) = Leaves::from_node(Some(&node)).backends();
        assert_eq!(backends, ["10.0.0.1:6379", "redis.local:6380", "[::1]:6381"]);
    }

    #[test]
    fn entries_that_are_not_host_port_are_rejected_with_their_key() {
        let node = dir("/s", vec![leaf("/s/a", "10.0.0.1"), leaf("/s/b", "10.0.0.1:0"), leaf("/s/c", "h:80")]);
        let (backends, rejected) = Leaves::from_node(Some(&node)).backends();
        assert_eq!(backends, ["h:80"]);
        assert_eq!(
            rejected,
            [
                Rejected { key: "/s/a".into(), entry: "10.0.0.1".into() },
                Rejected { key: "/s/b".into(), entry: "10.0.0.1:0".into() }
            ]
        );
    }

    #[test]
    fn nested_directories_count_and_a_missing_key_has_no_backends() {
        let node = dir("/s", vec![dir("/s/x", vec![leaf("/s/x/1", "a:1")]), leaf("/s/y", "b:2")]);
        assert_eq!(Leaves::from_node(Some(&node)).backends().0, ["a:1", "b:2"]);
        assert!(Leaves::from_node(None).backends().0.is_empty());
    }

    #[test]
    fn events_add_replace_and_remove_leaves() {
        let mut leaves = Leaves::from_node(Some(&dir("/s", vec![leaf("/s/a", "a:1"), leaf("/s/b", "b:1")])));
        leaves.apply(Action::Set, &leaf("/s/c", "c:1"));
        leaves.apply(Action::CompareAndSwap, &leaf("/s/a", "a:2"));
        leaves.apply(Action::Expire, &leaf("/s/b", ""));
        assert_eq!(leaves.backends().0, ["a:2", "c:1"]);
        leaves.apply(Action::Create, &dir("/s/d", vec![]));
        leaves.apply(Action::Set, &leaf("/s/d/x", "d:1"));
        assert_eq!(leaves.backends().0, ["a:2", "c:1", "d:1"]);
        // Deleting a directory removes everything under it, not its siblings
        // with a common prefix.
        leaves.apply(Action::Set, &leaf("/s/dd", "dd:1"));
        leaves.apply(Action::Delete, &dir("/s/d", vec![]));
        assert_eq!(leaves.backends().0, ["a:2", "c:1", "dd:1"]);
        leaves.apply(Action::Delete, &dir("/s", vec![]));
        assert!(leaves.backends().0.is_empty());
    }
}
