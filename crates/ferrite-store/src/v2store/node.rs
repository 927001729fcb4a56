//! One node of the key space and how it prints (etcd's `node` and
//! `NodeExtern`), including the `ttl` and `expiration` fields.

use std::collections::BTreeMap;

use ferrite_etcd_api::v2;

use super::{path, UnixNanos};

const NANOS_PER_SECOND: i64 = 1_000_000_000;

/// A key or a directory. Keys are not stored in the node: the path that
/// reached it is its key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Node {
    pub(super) created_index: u64,
    pub(super) modified_index: u64,
    /// `None` for a permanent node.
    pub(super) expire_at: Option<UnixNanos>,
    pub(super) body: Body,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Body {
    File(String),
    /// Children by name, so listings come out in etcd's `sorted=true` order.
    Dir(BTreeMap<String, Node>),
}

impl Node {
    pub(super) fn file(value: String, index: u64, expire_at: Option<UnixNanos>) -> Node {
        Node { created_index: index, modified_index: index, expire_at, body: Body::File(value) }
    }

    pub(super) fn dir(index: u64, expire_at: Option<UnixNanos>) -> Node {
        Node { created_index: index, modified_index: index, expire_at, body: Body::Dir(BTreeMap::new()) }
    }

    pub(super) fn is_dir(&self) -> bool {
        matches!(self.body, Body::Dir(_))
    }

    /// The value of a key; a directory reads as "" (etcd's zero `Value`).
    pub(super) fn value(&self) -> &str {
        match &self.body {
            Body::File(value) => value,
            Body::Dir(_) => "",
        }
    }

    /// etcd's `Repr(false, false)`: the node alone, as `prevNode` shows it.
    pub(super) fn repr(&self, key: &str, now: UnixNanos) -> v2::Node {
        let (expiration, ttl) = expiration_and_ttl(self.expire_at, now);
        v2::Node {
            key: key.to_owned(),
            value: match &self.body {
                Body::File(value) => Some(value.clone()),
                Body::Dir(_) => None,
            },
            dir: self.is_dir(),
            expiration,
            ttl,
            nodes: None,
            modified_index: self.modified_index,
            created_index: self.created_index,
        }
    }

    /// What a get shows: a directory lists its visible children, each one
    /// with its own children too when `recursive` (etcd's
    /// `loadInternalNode` and `Repr(recursive, sorted)`).
    pub(super) fn listing(&self, key: &str, recursive: bool, now: UnixNanos) -> v2::Node {
        let mut out = self.repr(key, now);
        if let Body::Dir(children) = &self.body {
            let nodes: Vec<v2::Node> = children
                .iter()
                .filter(|(name, _)| !path::is_hidden_name(name))
                .map(|(name, child)| {
                    let child_key = format!("{key}/{name}");
                    if recursive {
                        child.listing(&child_key, true, now)
                    } else {
                        child.repr(&child_key, now)
                    }
                })
                .collect();
            // Go's `omitempty` drops an empty list.
            out.nodes = (!nodes.is_empty()).then_some(nodes);
        }
        out
    }
}

/// etcd's `expirationAndTTL`: the expiration in UTC and the remaining
/// seconds rounded up (so 1..n while alive, 0 or below once due).
pub(super) fn expiration_and_ttl(expire_at: Option<UnixNanos>, now: UnixNanos) -> (Option<String>, i64) {
    let Some(at) = expire_at else {
        return (None, 0);
    };
    let remaining = at.saturating_sub(now);
    let mut ttl = remaining / NANOS_PER_SECOND;
    if remaining % NANOS_PER_SECOND > 0 {
        ttl += 1;
    }
    (Some(ferrite_etcd_api::v2::format_time(at)), ttl)
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECOND: i64 = NANOS_PER_SECOND;

    #[test]
    fn expiration_prints_as_go_rfc3339nano() {
        assert_eq!(ferrite_etcd_api::v2::format_time(0), "1970-01-01T00:00:00Z");
        assert_eq!(ferrite_etcd_api::v2::format_time(1_795_644_001_123_456_789), "2026-11-25T22:00:01.123456789Z");
        assert_eq!(ferrite_etcd_api::v2::format_time(1_795_644_001_120_000_000), "2026-11-25T22:00:01.12Z");
        assert_eq!(ferrite_etcd_api::v2::format_time(1_795_644_001_000_000_000), "2026-11-25T22:00:01Z");
        assert_eq!(ferrite_etcd_api::v2::format_time(951_782_400 * SECOND), "2000-02-29T00:00:00Z");
        assert_eq!(ferrite_etcd_api::v2::format_time(-1), "1969-12-31T23:59:59.999999999Z");
    }

    #[test]
    fn civil_dates_agree_with_the_time_crate() {
        let mut at: i64 = -5_000_000_000 * SECOND;
        while at < 9_000_000_000 * SECOND {
            let reference = time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(at)).unwrap();
            let printed = ferrite_etcd_api::v2::format_time(at);
            let expected = format!(
                "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}",
                reference.year(),
                u8::from(reference.month()),
                reference.day(),
                reference.hour(),
                reference.minute(),
                reference.second()
            );
            assert_eq!(&printed[..19], expected, "at {at}");
            at += 7_919 * 3_600 * SECOND + 123_456_789;
        }
    }

    #[test]
    fn ttl_is_the_ceiling_of_remaining_seconds() {
        let now = 1_000 * SECOND;
        let ttl = |at| expiration_and_ttl(Some(at), now).1;
        assert_eq!(ttl(now + 5 * SECOND), 5);
        assert_eq!(ttl(now + 5 * SECOND - 1), 5);
        assert_eq!(ttl(now + 4 * SECOND + 1), 5);
        assert_eq!(ttl(now + 1), 1);
        assert_eq!(ttl(now), 0);
        assert_eq!(ttl(now - SECOND / 2), 0);
        assert_eq!(ttl(now - 3 * SECOND / 2), -1);
        assert_eq!(expiration_and_ttl(None, now), (None, 0));
    }

    #[test]
    fn listing_hides_underscore_children_and_omits_empty_lists() {
        let mut dir = Node::dir(1, None);
        let Body::Dir(children) = &mut dir.body else { unreachable!() };
        children.insert("b".into(), Node::file("2".into(), 3, None));
        children.insert("_h".into(), Node::file("h".into(), 4, None));
        let mut sub = Node::dir(2, None);
        let Body::Dir(grand) = &mut sub.body else { unreachable!() };
        grand.insert("x".into(), Node::file(String::new(), 5, None));
        children.insert("a".into(), sub);

        let flat = serde_json::to_string(&dir.listing("/d", false, 0)).unwrap();
        assert_eq!(
            flat,
            r#"{"key":"/d","dir":true,"nodes":[{"key":"/d/a","dir":true,"modifiedIndex":2,"createdIndex":2},{"key":"/d/b","value":"2","modifiedIndex":3,"createdIndex":3}],"modifiedIndex":1,"createdIndex":1}"#
        );
        let deep = serde_json::to_string(&dir.listing("/d", true, 0)).unwrap();
        assert_eq!(
            deep,
            r#"{"key":"/d","dir":true,"nodes":[{"key":"/d/a","dir":true,"nodes":[{"key":"/d/a/x","value":"","modifiedIndex":5,"createdIndex":5}],"modifiedIndex":2,"createdIndex":2},{"key":"/d/b","value":"2","modifiedIndex":3,"createdIndex":3}],"modifiedIndex":1,"createdIndex":1}"#
        );
        let empty = serde_json::to_string(&Node::dir(7, None).listing("/e", true, 0)).unwrap();
        assert_eq!(empty, r#"{"key":"/e","dir":true,"modifiedIndex":7,"createdIndex":7}"#);
    }
}
