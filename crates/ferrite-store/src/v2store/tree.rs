//! Walking the key space: etcd's `internalGet`, `checkDir` and `Remove`,
//! plus the ordered expiration index that replaces etcd's TTL heap.

use std::collections::{BTreeMap, BTreeSet};

use ferrite_etcd_api::v2::{Error, ErrorCode};

use super::node::{Body, Node};
use super::{path, UnixNanos};

/// etcd's `internalGet`: the node at a clean `key`, or `NotDir` naming the
/// key on the way that is a file, or `KeyNotFound` naming the first
/// component that is missing. Errors carry the store `index`.
pub(super) fn lookup<'a>(root: &'a Node, key: &str, index: u64) -> Result<&'a Node, Error> {
    let mut current = root;
    let mut current_key = "/";
    for (name, name_key) in path::components(key) {
        let Body::Dir(children) = &current.body else {
            return Err(Error::new(ErrorCode::NotDir, path::display(current_key), index));
        };
        current = children.get(name).ok_or_else(|| Error::new(ErrorCode::KeyNotFound, name_key, index))?;
        current_key = name_key;
    }
    Ok(current)
}

/// [`lookup`] for writing.
pub(super) fn lookup_mut<'a>(root: &'a mut Node, key: &str, index: u64) -> Result<&'a mut Node, Error> {
    let mut current = root;
    let mut current_key = "/";
    for (name, name_key) in path::components(key) {
        let Body::Dir(children) = &mut current.body else {
            return Err(Error::new(ErrorCode::NotDir, path::display(current_key), index));
        };
        current = children.get_mut(name).ok_or_else(|| Error::new(ErrorCode::KeyNotFound, name_key, index))?;
        current_key = name_key;
    }
    Ok(current)
}

/// etcd's walk with `checkDir`: the children of the directory `dir_key`,
/// creating missing directories on the way (permanent, created at
/// `created_index`). A file on the way is `NotDir` naming that file.
pub(super) fn ensure_dir<'a>(
    root: &'a mut Node,
    dir_key: &str,
    created_index: u64,
    index: u64,
) -> Result<&'a mut BTreeMap<String, Node>, Error> {
    let mut current = root;
    for (name, name_key) in path::components(dir_key) {
        let Body::Dir(children) = &mut current.body else {
            // Unreachable: every node we step into below is a directory.
            return Err(Error::new(ErrorCode::NotDir, path::display(dir_key), index));
        };
        if !children.contains_key(name) {
            children.insert(name.to_owned(), Node::dir(created_index, None));
        }
        let Some(next) = children.get_mut(name) else {
            return Err(Error::new(ErrorCode::KeyNotFound, name_key, index));
        };
        if !next.is_dir() {
            return Err(Error::new(ErrorCode::NotDir, name_key, index));
        }
        current = next;
    }
    match &mut current.body {
        Body::Dir(children) => Ok(children),
        Body::File(_) => Err(Error::new(ErrorCode::NotDir, path::display(dir_key), index)),
    }
}

/// Unlinks the node at a clean `key` (not the root) from its parent.
pub(super) fn detach(root: &mut Node, key: &str) -> Option<Node> {
    let (parent_key, name) = path::split(key);
    let parent = lookup_mut(root, parent_key, 0).ok()?;
    match &mut parent.body {
        Body::Dir(children) => children.remove(name),
        Body::File(_) => None,
    }
}

/// Visits a removed subtree children first, then the node itself, as
/// etcd's `Remove` calls its callback; `key` is the subtree root's key.
pub(super) fn visit_removed(key: &str, node: &Node, visit: &mut impl FnMut(&str, &Node)) {
    if let Body::Dir(children) = &node.body {
        for (name, child) in children {
            visit_removed(&path::child(key, name), child, visit);
        }
    }
    visit(key, node);
}

/// Every node with a TTL, earliest deadline first; ties go by key so the
/// order never depends on history (etcd's min-heap leaves it unspecified).
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub(super) struct Expirations {
    deadlines: BTreeSet<(UnixNanos, String)>,
}

impl Expirations {
    pub(super) fn insert(&mut self, at: UnixNanos, key: &str) {
        self.deadlines.insert((at, key.to_owned()));
    }

    pub(super) fn remove(&mut self, at: UnixNanos, key: &str) {
        self.deadlines.remove(&(at, key.to_owned()));
    }

    /// Moves `key` from deadline `old` to `new` (etcd's `UpdateTTL`).
    pub(super) fn change(&mut self, key: &str, old: Option<UnixNanos>, new: Option<UnixNanos>) {
        if old == new {
            return;
        }
        if let Some(old) = old {
            self.remove(old, key);
        }
        if let Some(new) = new {
            self.insert(new, key);
        }
    }

    pub(super) fn first(&self) -> Option<(UnixNanos, &str)> {
        self.deadlines.first().map(|(at, key)| (*at, key.as_str()))
    }

    #[cfg(test)]
    pub(super) fn len(&self) -> usize {
        self.deadlines.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Node {
        let mut root = Node::dir(0, None);
        let children = ensure_dir(&mut root, "/a/b", 1, 0).unwrap();
        children.insert("f".into(), Node::file("v".into(), 1, None));
        root
    }

    #[test]
    fn lookup_names_the_failing_component() {
        let root = sample();
        assert_eq!(lookup(&root, "/a/b/f", 9).unwrap().value(), "v");
        assert!(lookup(&root, "/", 9).unwrap().is_dir());

        let missing = lookup(&root, "/a/x/y", 9).unwrap_err();
        assert_eq!((missing.error_code, missing.cause.as_str(), missing.index), (100, "/a/x", 9));

        let under_file = lookup(&root, "/a/b/f/g/h", 9).unwrap_err();
        assert_eq!((under_file.error_code, under_file.cause.as_str()), (104, "/a/b/f"));
    }

    #[test]
    fn ensure_dir_creates_missing_dirs_and_refuses_files() {
        let mut root = sample();
        ensure_dir(&mut root, "/a/c/d", 5, 4).unwrap();
        let created = lookup(&root, "/a/c", 0).unwrap();
        assert!(created.is_dir());
        assert_eq!((created.created_index, created.modified_index), (5, 5));

        let err = ensure_dir(&mut root, "/a/b/f/g", 6, 4).unwrap_err();
        assert_eq!((err.error_code, err.cause.as_str(), err.index), (104, "/a/b/f", 4));
    }

    #[test]
    fn removed_subtrees_are_visited_children_first() {
        let mut root = sample();
        let detached = detach(&mut root, "/a").unwrap();
        let mut seen = Vec::new();
        visit_removed("/a", &detached, &mut |key, _| seen.push(key.to_owned()));
        assert_eq!(seen, ["/a/b/f", "/a/b", "/a"]);
        assert!(lookup(&root, "/a", 0).is_err());
    }

    #[test]
    fn expirations_order_by_deadline_then_key() {
        let mut exp = Expirations::default();
        exp.insert(20, "/b");
        exp.insert(10, "/z");
        exp.insert(10, "/a");
        assert_eq!(exp.first(), Some((10, "/a")));
        exp.change("/a", Some(10), Some(30));
        assert_eq!(exp.first(), Some((10, "/z")));
        exp.change("/z", Some(10), None);
        assert_eq!(exp.first(), Some((20, "/b")));
        assert_eq!(exp.len(), 2);
    }
}
