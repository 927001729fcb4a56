//! Key paths as etcd's v2 store sees them: cleaned like Go's
//! `path.Clean(path.Join("/", key))`, split into components, hidden when a
//! component starts with `_`.

/// Cleans a user key the way etcd does before every store operation:
/// rooted, no empty or `.` components, `..` resolved (never above the root),
/// no trailing slash. `"//a/./b/"` becomes `"/a/b"`; `""` becomes `"/"`.
pub(super) fn clean(key: &str) -> String {
    let mut out = String::with_capacity(key.len() + 1);
    for part in key.split('/') {
        match part {
            "" | "." => {}
            ".." => {
                if let Some(slash) = out.rfind('/') {
                    out.truncate(slash);
                }
            }
            _ => {
                out.push('/');
                out.push_str(part);
            }
        }
    }
    if out.is_empty() {
        out.push('/');
    }
    out
}

/// The key of child `name` under the directory `parent` (both clean).
pub(super) fn child(parent: &str, name: &str) -> String {
    if parent == "/" {
        format!("/{name}")
    } else {
        format!("{parent}/{name}")
    }
}

/// Splits a clean key other than the root into its directory and its last
/// component: `"/a/b"` gives `("/a", "b")`, `"/a"` gives `("/", "a")`.
pub(super) fn split(key: &str) -> (&str, &str) {
    match key.rfind('/') {
        Some(0) => ("/", &key[1..]),
        Some(slash) => (&key[..slash], &key[slash + 1..]),
        None => ("/", key),
    }
}

/// How the key prints in responses and error causes: etcd keeps user keys
/// under `/1` and trims that prefix, so the user's root prints as nothing.
pub(super) fn display(key: &str) -> &str {
    if key == "/" {
        ""
    } else {
        key
    }
}

/// A hidden component: listings omit it, a direct read still finds it.
pub(super) fn is_hidden_name(name: &str) -> bool {
    name.starts_with('_')
}

/// The components of a clean key, each with the key of the node it names:
/// `"/a/b"` yields `("a", "/a")` then `("b", "/a/b")`. The root yields none.
pub(super) fn components(key: &str) -> Components<'_> {
    Components { key, start: 1 }
}

#[derive(Debug)]
pub(super) struct Components<'a> {
    key: &'a str,
    start: usize,
}

impl<'a> Iterator for Components<'a> {
    type Item = (&'a str, &'a str);

    fn next(&mut self) -> Option<Self::Item> {
        let key = self.key;
        while self.start < key.len() {
            let rest = &key[self.start..];
            let end = rest.find('/').map_or(key.len(), |i| self.start + i);
            let name = &key[self.start..end];
            self.start = end + 1;
            if !name.is_empty() {
                return Some((name, &key[..end]));
            }
        }
        None
    }
}

/// The paths a change at `key` notifies, root first: `"/a/b"` yields
/// `"/"`, `"/a"`, `"/a/b"` (etcd's `notify` walking the key's segments).
pub(super) fn ancestry(key: &str) -> impl Iterator<Item = &str> {
    std::iter::once("/").chain(components(key).map(|(_, path)| path))
}

/// etcd's watcher-hub `isHidden`: whether the event at `key_path` lies in a
/// hidden part of the tree as seen from the watched `watch_path`.
pub(super) fn is_hidden_from(watch_path: &str, key_path: &str) -> bool {
    // A directory delete also notifies watchers deeper than the event's key.
    if watch_path.len() > key_path.len() {
        return false;
    }
    let after = key_path.get(watch_path.len()..).unwrap_or("");
    clean(&format!("/{after}")).contains("/_")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clean_matches_go_path_clean_under_root() {
        let cases = [
            ("", "/"),
            ("/", "/"),
            ("//", "/"),
            ("foo", "/foo"),
            ("/foo/", "/foo"),
            ("//a/./b/", "/a/b"),
            ("/a/b/../c", "/a/c"),
            ("/../a", "/a"),
            ("/a/..", "/"),
            ("/a/../..", "/"),
            ("/a/.../b", "/a/.../b"),
            ("/_h/x", "/_h/x"),
        ];
        for (input, want) in cases {
            assert_eq!(clean(input), want, "clean({input:?})");
        }
    }

    #[test]
    fn split_and_child_are_inverse() {
        assert_eq!(split("/a"), ("/", "a"));
        assert_eq!(split("/a/b/c"), ("/a/b", "c"));
        assert_eq!(child("/", "a"), "/a");
        assert_eq!(child("/a/b", "c"), "/a/b/c");
    }

    #[test]
    fn components_carry_their_paths() {
        let got: Vec<_> = components("/a/bb/c").collect();
        assert_eq!(got, [("a", "/a"), ("bb", "/a/bb"), ("c", "/a/bb/c")]);
        assert_eq!(components("/").count(), 0);
        let walk: Vec<_> = ancestry("/a/b").collect();
        assert_eq!(walk, ["/", "/a", "/a/b"]);
    }

    #[test]
    fn hidden_rules_follow_etcd() {
        assert!(is_hidden_name("_x"));
        assert!(!is_hidden_name("x_"));
        assert!(is_hidden_from("/", "/_a"));
        assert!(is_hidden_from("/a", "/a/_b/c"));
        assert!(!is_hidden_from("/a/_b", "/a/_b/c"));
        assert!(!is_hidden_from("/a/_b", "/a/_b"));
        assert!(!is_hidden_from("/a/b/c", "/a/b"));
        assert_eq!(display("/"), "");
        assert_eq!(display("/a"), "/a");
    }
}
