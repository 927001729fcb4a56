//! Normalisation of what two independent servers legitimately answer
//! differently, so that everything else can be compared byte for byte.
//!
//! Each rule exists for one reason:
//! - indices (`modifiedIndex`, `createdIndex`, an error's `index`,
//!   `X-Etcd-Index`, etcdctl's `Created-Index:`/`Modified-Index:`/`Index:`
//!   and `[N]` after an error, the `[start/requested]` of a cleared watch,
//!   and the 20-digit names of in-order keys) depend on how many writes the
//!   server did before the case began (etcd itself writes membership records
//!   into the v2 store at boot), so each becomes its offset from the index
//!   the server reported when the case started: `<i+3>`;
//! - `expiration` is wall-clock time: an RFC 3339 UTC time becomes `<time>`;
//! - member and cluster ids are random or derived from ports, and ports are
//!   picked at run time: each known one becomes a named placeholder.
//!
//! Nothing else is touched: a value, a key, a message or a byte of JSON
//! layout that differs is a difference.

/// What identifies one server, to be replaced by placeholders.
#[derive(Debug, Clone, Default)]
pub struct Identity {
    /// (text as the server writes it, placeholder), longest first.
    replacements: Vec<(String, String)>,
}

impl Identity {
    /// Adds a member: its id and ports become `<id:NAME>`, `<client:NAME>`, `<peer:NAME>`.
    pub fn member(&mut self, name: &str, id: &str, client_port: u16, peer_port: u16) {
        if !id.is_empty() {
            self.replace(id, &format!("<id:{name}>"));
        }
        self.replace(&format!("127.0.0.1:{client_port}"), &format!("127.0.0.1:<client:{name}>"));
        self.replace(&format!("127.0.0.1:{peer_port}"), &format!("127.0.0.1:<peer:{name}>"));
    }

    pub fn cluster_id(&mut self, id: &str) {
        self.replace(id, "<cluster-id>");
    }

    fn replace(&mut self, text: &str, placeholder: &str) {
        self.replacements.retain(|(t, _)| t != text);
        self.replacements.push((text.to_owned(), placeholder.to_owned()));
        self.replacements.sort_by_key(|(t, _)| std::cmp::Reverse(t.len()));
    }

    fn apply(&self, text: &str) -> String {
        let mut text = text.to_owned();
        for (from, to) in &self.replacements {
            text = text.replace(from.as_str(), to);
        }
        text
    }
}

/// `value` as an offset from `base`: `<i+2>`, `<i-1>`, `<i+0>`. Zero stays
/// `0`: etcd writes it where there is no index (errors found while parsing a
/// request), and it must stay distinguishable from a real one.
pub fn index(value: u64, base: u64) -> String {
    if value == 0 {
        "0".to_owned()
    } else if value >= base {
        format!("<i+{}>", value - base)
    } else {
        format!("<i-{}>", base - value)
    }
}

/// Markers after which a run of digits is an index.
const INDEX_MARKERS: &[&str] =
    &["\"modifiedIndex\":", "\"createdIndex\":", "\"index\":", "Index: ", ") [", "has been cleared ["];

/// Normalises a body or a command's output (see the module docs).
pub fn text(text: &str, base: u64, identity: &Identity) -> String {
    let mut text = identity.apply(text);
    for marker in INDEX_MARKERS {
        text = numbers_after(&text, marker, base);
    }
    // The second number of "has been cleared [start/requested]".
    text = numbers_after(&text, ">/", base);
    text = compared_indices(&text, base);
    text = in_order_names(&text, base);
    expirations(&text)
}

/// Replaces the run of digits right after each `marker` by its index offset.
fn numbers_after(text: &str, marker: &str, base: u64) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(at) = rest.find(marker) {
        let after = at + marker.len();
        out.push_str(&rest[..after]);
        rest = &rest[after..];
        let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
        match rest[..digits].parse::<u64>() {
            Ok(value) if digits > 0 => out.push_str(&index(value, base)),
            _ => out.push_str(&rest[..digits]),
        }
        rest = &rest[digits..];
    }
    out.push_str(rest);
    out
}

/// A failed compare-and-swap's cause `[prevIndex != modifiedIndex]`. A value
/// compare has the same form, so fixtures compare values that are not numbers.
fn compared_indices(text: &str, base: u64) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(at) = rest.find('[') {
        out.push_str(&rest[..=at]);
        rest = &rest[at + 1..];
        let Some(end) = rest.find(']') else { break };
        let replaced = rest[..end]
            .split_once(" != ")
            .and_then(|(a, b)| Some(format!("{} != {}", index(a.parse().ok()?, base), index(b.parse().ok()?, base))));
        if let Some(replaced) = replaced {
            out.push_str(&replaced);
            rest = &rest[end..];
        }
    }
    out.push_str(rest);
    out
}

/// In-order keys (POST) are named by their creation index, zero-padded to 20 digits.
fn in_order_names(text: &str, base: u64) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(at) = rest.find(|c: char| c.is_ascii_digit()) {
        out.push_str(&rest[..at]);
        rest = &rest[at..];
        let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
        match rest[..digits].parse::<u64>() {
            Ok(value) if digits == 20 => out.push_str(&format!("<key{}>", index(value, base))),
            _ => out.push_str(&rest[..digits]),
        }
        rest = &rest[digits..];
    }
    out.push_str(rest);
    out
}

/// `"expiration":"2026-01-02T03:04:05.123Z"` and etcdctl's `Expiration: ...`.
fn expirations(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(at) = rest.find("\"expiration\":\"") {
        let after = at + "\"expiration\":\"".len();
        out.push_str(&rest[..after]);
        rest = &rest[after..];
        let end = rest.find('"').unwrap_or(rest.len());
        if is_utc_time(&rest[..end]) {
            out.push_str("<time>");
        } else {
            out.push_str(&rest[..end]);
        }
        rest = &rest[end..];
    }
    out.push_str(rest);
    out
}

/// RFC 3339 in UTC as Go writes it: `YYYY-MM-DDTHH:MM:SS[.fraction]Z`.
fn is_utc_time(text: &str) -> bool {
    let bytes = text.as_bytes();
    bytes.len() >= 20
        && bytes[4] == b'-'
        && bytes[7] == b'-'
        && bytes[10] == b'T'
        && bytes[13] == b':'
        && bytes[16] == b':'
        && text.ends_with('Z')
        && text[..text.len() - 1].bytes().all(|b| b.is_ascii_digit() || b"-T:.".contains(&b))
}

/// The shape of a JSON document: key names (in order) and JSON types, with
/// every scalar value dropped. For bodies whose values are inherently
/// different between two servers (statistics, timings).
pub fn json_shape(text: &str) -> Option<String> {
    let value: serde_json::Value = serde_json::from_str(text).ok()?;
    let mut out = String::new();
    shape_of(&value, &mut out);
    Some(out)
}

fn shape_of(value: &serde_json::Value, out: &mut String) {
    use serde_json::Value;
    match value {
        Value::Null => out.push_str("null"),
        Value::Bool(_) => out.push_str("bool"),
        Value::Number(_) => out.push_str("number"),
        Value::String(_) => out.push_str("string"),
        Value::Array(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                shape_of(item, out);
            }
            out.push(']');
        }
        Value::Object(map) => {
            out.push('{');
            for (i, (key, item)) in map.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                out.push_str(&format!("{key:?}:"));
                shape_of(item, out);
            }
            out.push('}');
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn indices_become_offsets_and_the_rest_stays() {
        let body = r#"{"action":"create","node":{"key":"/q/00000000000000000012","value":"12","expiration":"2026-11-25T22:30:37.1Z","ttl":5,"modifiedIndex":12,"createdIndex":12}}"#;
        assert_eq!(
            text(body, 10, &Identity::default()),
            r#"{"action":"create","node":{"key":"/q/<key<i+2>>","value":"12","expiration":"<time>","ttl":5,"modifiedIndex":<i+2>,"createdIndex":<i+2>}}"#
        );
        let compare = r#""cause":"[x != v] [78 != 72]","index":72"#;
        assert_eq!(text(compare, 71, &Identity::default()), r#""cause":"[x != v] [<i+7> != <i+1>]","index":<i+1>"#);
        assert_eq!(text(r#""index":0"#, 9, &Identity::default()), r#""index":0"#);
        let cleared = r#"{"errorCode":401,"cause":"the requested history has been cleared [1012/4]","index":2011}"#;
        assert_eq!(
            text(cleared, 5, &Identity::default()),
            r#"{"errorCode":401,"cause":"the requested history has been cleared [<i+1007>/<i-1>]","index":<i+2006>}"#
        );
    }

    #[test]
    fn identities_become_placeholders() {
        let mut identity = Identity::default();
        identity.member("n1", "25351fad42b3c84c", 23790, 23800);
        let body = r#"{"id":"25351fad42b3c84c","peerURLs":["http://127.0.0.1:23800"],"clientURLs":["http://127.0.0.1:23790"]}"#;
        assert_eq!(
            text(body, 0, &identity),
            r#"{"id":"<id:n1>","peerURLs":["http://127.0.0.1:<peer:n1>"],"clientURLs":["http://127.0.0.1:<client:n1>"]}"#
        );
    }

    #[test]
    fn shapes_keep_keys_and_types() {
        assert_eq!(
            json_shape(r#"{"a":1,"b":{"c":"x"},"d":[true]}"#).unwrap(),
            r#"{"a":number,"b":{"c":string},"d":[bool]}"#
        );
    }
}
