//! The store's serialized form, for raft snapshots.
//!
//! Layout: the magic `FV2S`, a format byte, the CRC-32 of the payload
//! (little-endian), then the payload: an [`Image`] in postcard. The tree is
//! a flat list of nodes, parents first, so neither encoding nor decoding
//! recurses however deep the keys go.
//!
//! Encoding these plain types into a `Vec` cannot fail in postcard (every
//! sequence knows its length), but its API says it might; rather than
//! panic, such a failure is written as a frame of format [`UNENCODABLE`]
//! carrying the error text, which restore refuses with that text.

use std::borrow::Cow;
use std::collections::VecDeque;

use ferrite_etcd_api::v2::{self, Action};
use serde::{Deserialize, Serialize};

use super::history::{self, History, Recorded};
use super::node::{Body, Node};
use super::stats::Stats;
use super::tree::{self, Expirations};
use super::watcher::Hub;
use super::{path, SnapshotError, Store, UnixNanos};

const MAGIC: &[u8; 4] = b"FV2S";
const FORMAT: u8 = 1;
/// The format byte of a snapshot the store failed to encode.
const UNENCODABLE: u8 = 0xff;
const HEADER_LEN: usize = MAGIC.len() + 1 + 4;

#[derive(Debug, Serialize, Deserialize)]
struct Image<'a> {
    index: u64,
    stats: Stats,
    #[serde(borrow)]
    nodes: Vec<NodeRecord<'a>>,
    history: Vec<EventRecord>,
}

/// One node below the root; `value` is `None` for a directory.
#[derive(Debug, Serialize, Deserialize)]
struct NodeRecord<'a> {
    key: String,
    created_index: u64,
    modified_index: u64,
    expire_at: Option<UnixNanos>,
    #[serde(borrow)]
    value: Option<Cow<'a, str>>,
}

#[derive(Debug, Serialize, Deserialize)]
struct EventRecord {
    action: Action,
    node: ShownNode,
    prev_node: Option<ShownNode>,
    refresh: bool,
}

/// [`v2::Node`] without its `skip_serializing_if` fields, which a
/// non-self-describing format cannot skip.
#[derive(Debug, Serialize, Deserialize)]
struct ShownNode {
    key: String,
    value: Option<String>,
    dir: bool,
    expiration: Option<String>,
    ttl: i64,
    nodes: Option<Vec<ShownNode>>,
    modified_index: u64,
    created_index: u64,
}

impl From<&v2::Node> for ShownNode {
    fn from(n: &v2::Node) -> ShownNode {
        ShownNode {
            key: n.key.clone(),
            value: n.value.clone(),
            dir: n.dir,
            expiration: n.expiration.clone(),
            ttl: n.ttl,
            nodes: n.nodes.as_ref().map(|nodes| nodes.iter().map(ShownNode::from).collect()),
            modified_index: n.modified_index,
            created_index: n.created_index,
        }
    }
}

impl From<ShownNode> for v2::Node {
    fn from(n: ShownNode) -> v2::Node {
        v2::Node {
            key: n.key,
            value: n.value,
            dir: n.dir,
            expiration: n.expiration,
            ttl: n.ttl,
            nodes: n.nodes.map(|nodes| nodes.into_iter().map(v2::Node::from).collect()),
            modified_index: n.modified_index,
            created_index: n.created_index,
        }
    }
}

pub(super) fn encode(store: &Store) -> Vec<u8> {
    let mut nodes = Vec::new();
    let mut stack = vec![("/".to_owned(), &store.root)];
    while let Some((key, node)) = stack.pop() {
        if let Body::Dir(children) = &node.body {
            for (name, child) in children.iter().rev() {
                stack.push((path::child(&key, name), child));
            }
        }
        if key != "/" {
            nodes.push(NodeRecord {
                key,
                created_index: node.created_index,
                modified_index: node.modified_index,
                expire_at: node.expire_at,
                value: match &node.body {
                    Body::File(value) => Some(Cow::Borrowed(value.as_str())),
                    Body::Dir(_) => None,
                },
            });
        }
    }
    let history = store
        .history
        .events()
        .map(|r| EventRecord {
            action: r.event.action,
            node: ShownNode::from(&r.event.node),
            prev_node: r.event.prev_node.as_ref().map(ShownNode::from),
            refresh: r.refresh,
        })
        .collect();
    let image = Image { index: store.index, stats: store.stats.clone(), nodes, history };
    match postcard::to_allocvec(&image) {
        Ok(payload) => frame(FORMAT, &payload),
        Err(e) => frame(UNENCODABLE, e.to_string().as_bytes()),
    }
}

fn frame(format: u8, payload: &[u8]) -> Vec<u8> {
    let mut bytes = Vec::with_capacity(HEADER_LEN + payload.len());
    bytes.extend_from_slice(MAGIC);
    bytes.push(format);
    bytes.extend_from_slice(&crc32fast::hash(payload).to_le_bytes());
    bytes.extend_from_slice(payload);
    bytes
}

pub(super) fn decode(bytes: &[u8]) -> Result<Store, SnapshotError> {
    let corrupt = SnapshotError;
    if bytes.len() < HEADER_LEN {
        return Err(corrupt(format!("{} bytes is shorter than the {HEADER_LEN}-byte header", bytes.len())));
    }
    let (header, payload) = bytes.split_at(HEADER_LEN);
    if &header[..4] != MAGIC {
        return Err(corrupt(format!("bad magic {:02x?}, expected {MAGIC:02x?}", &header[..4])));
    }
    let stored = u32::from_le_bytes([header[5], header[6], header[7], header[8]]);
    let computed = crc32fast::hash(payload);
    if stored != computed {
        return Err(corrupt(format!("checksum mismatch: header says {stored:08x}, payload hashes to {computed:08x}")));
    }
    if header[4] == UNENCODABLE {
        let why = String::from_utf8_lossy(payload);
        return Err(corrupt(format!("the store could not be encoded when it was taken: {why}")));
    }
    if header[4] != FORMAT {
        return Err(corrupt(format!("unknown format {}, expected {FORMAT}", header[4])));
    }
    let (image, rest): (Image<'_>, _) =
        postcard::take_from_bytes(payload).map_err(|e| corrupt(format!("undecodable payload: {e}")))?;
    if !rest.is_empty() {
        return Err(corrupt(format!("{} stray bytes after the payload", rest.len())));
    }
    rebuild(image).map_err(corrupt)
}

/// Builds the store from a decoded image, checking what the store relies on.
fn rebuild(image: Image<'_>) -> Result<Store, String> {
    let index = image.index;
    let mut root = Node::dir(0, None);
    let mut expirations = Expirations::default();
    for record in image.nodes {
        let key = record.key;
        if key == "/" || path::clean(&key) != key {
            return Err(format!("node key {key:?} is not a clean key below the root"));
        }
        if record.created_index > index || record.modified_index > index {
            return Err(format!("node {key} has an index beyond the store index {index}"));
        }
        let (parent_key, name) = path::split(&key);
        let parent = tree::lookup_mut(&mut root, parent_key, index)
            .map_err(|_| format!("node {key} comes before its parent directory"))?;
        let Body::Dir(children) = &mut parent.body else {
            return Err(format!("node {key} is under the key {parent_key}, not a directory"));
        };
        if children.contains_key(name) {
            return Err(format!("node {key} appears twice"));
        }
        let body = match record.value {
            Some(value) => Body::File(value.into_owned()),
            None => Body::Dir(Default::default()),
        };
        children.insert(
            name.to_owned(),
            Node {
                created_index: record.created_index,
                modified_index: record.modified_index,
                expire_at: record.expire_at,
                body,
            },
        );
        if let Some(at) = record.expire_at {
            expirations.insert(at, &key);
        }
    }

    if image.history.len() > history::CAPACITY {
        return Err(format!("{} history events, more than the {} kept", image.history.len(), history::CAPACITY));
    }
    let mut events = VecDeque::with_capacity(image.history.len());
    let mut previous = 0;
    for record in image.history {
        let event_index = record.node.modified_index;
        if event_index <= previous || event_index > index {
            return Err(format!(
                "history event at index {event_index} is out of order (after {previous}, store index {index})"
            ));
        }
        previous = event_index;
        events.push_back(Recorded {
            event: v2::Event {
                action: record.action,
                node: record.node.into(),
                prev_node: record.prev_node.map(v2::Node::from),
            },
            refresh: record.refresh,
        });
    }

    Ok(Store {
        root,
        expirations,
        index,
        history: History::from_events(events),
        hub: Hub::default(),
        stats: image.stats,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn framed(image: &Image<'_>) -> Vec<u8> {
        frame(FORMAT, &postcard::to_allocvec(image).unwrap())
    }

    fn record(key: &str, value: Option<&'static str>) -> NodeRecord<'static> {
        NodeRecord {
            key: key.into(),
            created_index: 1,
            modified_index: 1,
            expire_at: None,
            value: value.map(Cow::Borrowed),
        }
    }

    fn image(nodes: Vec<NodeRecord<'static>>) -> Image<'static> {
        Image { index: 5, stats: Stats::default(), nodes, history: Vec::new() }
    }

    fn reason(image: &Image<'_>) -> String {
        match decode(&framed(image)) {
            Err(SnapshotError(why)) => why,
            other => panic!("expected a corrupt snapshot, got {other:?}"),
        }
    }

    #[test]
    fn a_well_formed_image_decodes() {
        let store = decode(&framed(&image(vec![record("/d", None), record("/d/k", Some("v"))]))).unwrap();
        assert_eq!(store.index, 5);
        assert_eq!(tree::lookup(&store.root, "/d/k", 5).unwrap().value(), "v");
    }

    #[test]
    fn a_failed_encoding_is_refused_with_its_reason() {
        let bytes = frame(UNENCODABLE, b"no length");
        let Err(SnapshotError(why)) = decode(&bytes) else {
            panic!("an unencodable snapshot restored");
        };
        assert!(why.contains("could not be encoded") && why.contains("no length"), "{why}");
    }

    #[test]
    fn the_tree_must_be_well_formed() {
        assert!(reason(&image(vec![record("/d/k", Some("v"))])).contains("before its parent"));
        assert!(reason(&image(vec![record("/f", Some("v")), record("/f/k", Some("v"))])).contains("not a directory"));
        assert!(reason(&image(vec![record("/k", Some("v")), record("/k", None)])).contains("twice"));
        assert!(reason(&image(vec![record("/", None)])).contains("not a clean key"));
        assert!(reason(&image(vec![record("/a//b", None)])).contains("not a clean key"));
        let mut late = record("/k", Some("v"));
        late.modified_index = 6;
        assert!(reason(&image(vec![late])).contains("beyond the store index"));
    }

    #[test]
    fn the_history_must_be_in_order_and_not_beyond_the_index() {
        let event = |index: u64| EventRecord {
            action: Action::Set,
            node: ShownNode::from(&v2::Node {
                key: "/k".into(),
                modified_index: index,
                created_index: index,
                ..v2::Node::default()
            }),
            prev_node: None,
            refresh: false,
        };
        let mut out_of_order = image(Vec::new());
        out_of_order.history = vec![event(3), event(2)];
        assert!(reason(&out_of_order).contains("out of order"));
        let mut beyond = image(Vec::new());
        beyond.history = vec![event(6)];
        assert!(reason(&beyond).contains("out of order"));
        let mut too_long = image(Vec::new());
        too_long.index = 2000;
        too_long.history = (1..=1001).map(event).collect();
        assert!(reason(&too_long).contains("more than the 1000 kept"));
    }
}
