//! A YAML document as a tree that remembers the line of every key and
//! element, and resolves plain scalars with YAML 1.1's rules as go-yaml v1
//! (coreos-cloudinit's parser) does: `off` is a boolean, `0644` an octal
//! integer. Quoted scalars stay strings; `!!binary` scalars are base64
//! decoded. Pure: no I/O.

use std::collections::HashMap;

use base64::Engine as _;
use yaml_rust2::parser::{Event, MarkedEventReceiver, Parser, Tag};
use yaml_rust2::scanner::{Marker, TScalarStyle};

/// A YAML syntax error with the line it was found on (1-based).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("line {line}: {message}")]
pub struct SyntaxError {
    /// 1-based line.
    pub line: usize,
    /// The parser's description.
    pub message: String,
}

/// A node of the document.
#[derive(Debug, Clone, PartialEq)]
pub struct Node {
    /// The 1-based line where the node starts.
    pub line: usize,
    /// What it holds.
    pub value: Value,
}

/// A scalar resolved with YAML 1.1's implicit types, keeping its text.
#[derive(Debug, Clone, PartialEq)]
pub struct Scalar {
    /// The text as written (after quoting and escapes are undone); for
    /// `!!binary` the decoded bytes, lossily as UTF-8.
    pub text: String,
    /// The implicit type.
    pub kind: ScalarKind,
    /// For `!!binary`, the decoded bytes.
    pub binary: Option<Vec<u8>>,
}

/// The type a scalar resolves to.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum ScalarKind {
    /// `~`, `null`, or nothing.
    Null,
    /// A string.
    Str,
    /// `true`/`yes`/`on` and their negations.
    Bool(bool),
    /// An integer (decimal, `0`-prefixed octal, `0x` hex, `0b` binary).
    Int(i64),
    /// A floating-point number.
    Float(f64),
}

/// A node's content.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    /// A scalar.
    Scalar(Scalar),
    /// A sequence of nodes.
    Seq(Vec<Node>),
    /// A mapping, in document order; the key's line is the entry's line.
    Map(Vec<(String, Node)>),
}

impl Node {
    /// The entry `key` of a mapping node.
    pub fn get(&self, key: &str) -> Option<&Node> {
        match &self.value {
            Value::Map(entries) => entries.iter().find(|(k, _)| k == key).map(|(_, n)| n),
            _ => None,
        }
    }

    /// The scalar's text, if the node is a non-null scalar.
    pub fn text(&self) -> Option<&str> {
        match &self.value {
            Value::Scalar(Scalar { kind: ScalarKind::Null, .. }) => None,
            Value::Scalar(s) => Some(&s.text),
            _ => None,
        }
    }

    /// The scalar's bytes (`!!binary` scalars' decoded bytes), if the node
    /// is a non-null scalar.
    pub fn bytes(&self) -> Option<&[u8]> {
        match &self.value {
            Value::Scalar(Scalar { kind: ScalarKind::Null, .. }) => None,
            Value::Scalar(Scalar { binary: Some(bytes), .. }) => Some(bytes),
            Value::Scalar(s) => Some(s.text.as_bytes()),
            _ => None,
        }
    }

    /// The elements of a sequence node (empty otherwise).
    pub fn items(&self) -> &[Node] {
        match &self.value {
            Value::Seq(items) => items,
            _ => &[],
        }
    }

    /// The entries of a mapping node (empty otherwise).
    pub fn entries(&self) -> &[(String, Node)] {
        match &self.value {
            Value::Map(entries) => entries,
            _ => &[],
        }
    }

    /// Whether the node is a null scalar.
    pub fn is_null(&self) -> bool {
        matches!(&self.value, Value::Scalar(Scalar { kind: ScalarKind::Null, .. }))
    }
}

/// Parses a single YAML document. An empty document is an empty mapping.
pub fn parse(text: &str) -> Result<Node, SyntaxError> {
    let mut collector = Collector::default();
    let mut parser = Parser::new_from_str(text);
    parser.load(&mut collector, false).map_err(|e| go_yaml_error(text, *e.marker(), e.info()))?;
    let mut builder = Builder { events: collector.events.into_iter(), anchors: HashMap::new() };
    let root = builder.document()?;
    Ok(root.unwrap_or(Node { line: 1, value: Value::Map(Vec::new()) }))
}

#[derive(Default)]
struct Collector {
    events: Vec<(Event, Marker)>,
}

impl MarkedEventReceiver for Collector {
    fn on_event(&mut self, event: Event, mark: Marker) {
        self.events.push((event, mark));
    }
}

struct Builder {
    events: std::vec::IntoIter<(Event, Marker)>,
    anchors: HashMap<usize, Node>,
}

impl Builder {
    fn document(&mut self) -> Result<Option<Node>, SyntaxError> {
        loop {
            match self.events.next() {
                Some((Event::StreamStart | Event::DocumentStart, _)) => {}
                Some((Event::StreamEnd | Event::DocumentEnd, _)) | None => return Ok(None),
                Some((event, mark)) => return self.node(event, mark).map(Some),
            }
        }
    }

    fn node(&mut self, event: Event, mark: Marker) -> Result<Node, SyntaxError> {
        let line = mark.line().max(1);
        let (node, anchor) = match event {
            Event::Scalar(text, style, anchor, tag) => {
                (Node { line, value: Value::Scalar(resolve(text, style, tag.as_ref())?) }, anchor)
            }
            Event::SequenceStart(anchor, _) => {
                let mut items = Vec::new();
                loop {
                    match self.events.next() {
                        Some((Event::SequenceEnd, _)) => break,
                        Some((event, mark)) => items.push(self.node(event, mark)?),
                        None => return Err(truncated(line)),
                    }
                }
                (Node { line, value: Value::Seq(items) }, anchor)
            }
            Event::MappingStart(anchor, _) => {
                let mut entries = Vec::new();
                loop {
                    let key = match self.events.next() {
                        Some((Event::MappingEnd, _)) => break,
                        Some((event, mark)) => self.node(event, mark)?,
                        None => return Err(truncated(line)),
                    };
                    let value = match self.events.next() {
                        Some((event, mark)) => self.node(event, mark)?,
                        None => return Err(truncated(line)),
                    };
                    let name = match &key.value {
                        Value::Scalar(s) => s.text.clone(),
                        _ => format!("{:?}", key.value),
                    };
                    // An entry's line is its key's line, as coreos-cloudinit reports it.
                    entries.push((name, Node { line: key.line, value: value.value }));
                }
                (Node { line, value: Value::Map(entries) }, anchor)
            }
            Event::Alias(id) => {
                let node = self
                    .anchors
                    .get(&id)
                    .cloned()
                    .ok_or_else(|| SyntaxError { line, message: format!("unknown anchor {id}") })?;
                return Ok(Node { line, value: node.value });
            }
            other => return Err(SyntaxError { line, message: format!("unexpected YAML event {other:?}") }),
        };
        if anchor != 0 {
            self.anchors.insert(anchor, node.clone());
        }
        Ok(node)
    }
}

/// A syntax error as coreos-cloudinit reports it: go-yaml v1 (a port of
/// libyaml) prints `line N: PROBLEM`, N being libyaml's 0-based line of
/// the problem (so usually the line above the one at fault; the first line
/// gets no number and is reported as line 1), and PROBLEM libyaml's words
/// without their context. yaml-rust2 follows libyaml's scanner and parser,
/// so its 1-based line less one is libyaml's line, and its messages, which
/// join context and problem and differ in places, are mapped onto
/// libyaml's. Checked against go-yaml itself for the cases in
/// tests/it/fixtures/validate/yaml-*. Mistakes only yaml-rust2 catches
/// (tab after `:`) keep its words, and a line holding only a tab, which
/// libyaml refuses, passes.
fn go_yaml_error(text: &str, at: Marker, message: &str) -> SyntaxError {
    const CANNOT_START: &str = "found character that cannot start any token";
    let line = at.line().saturating_sub(1);
    // An unclosed quoted scalar runs to the end of the stream, where libyaml
    // reports it.
    let end = text.matches('\n').count();
    let (line, problem) = match message {
        "simple key expect ':'" | "simple key expected" => (line, "could not find expected ':'".to_owned()),
        "while parsing a flow sequence, expected ',' or ']'" => (line, "did not find expected ',' or ']'".to_owned()),
        // yaml-rust2 checks indentation inside flow collections too; libyaml
        // reads on and finds the collection unclosed.
        "invalid indentation in flow construct" | "invalid indentation"
            if open_flow_closer(text, at.index()).is_some() =>
        {
            let closer = open_flow_closer(text, at.index()).unwrap_or(']');
            (line, format!("did not find expected ',' or '{closer}'"))
        }
        "while scanning a plain scalar, found a tab" => {
            (line, "found a tab character that violate intendation".to_owned())
        }
        "tabs disallowed within this context (block indentation)" => (line, CANNOT_START.to_owned()),
        m if m.starts_with("unexpected character: ") => (line, CANNOT_START.to_owned()),
        "invalid content after document end marker" => (line, "did not find expected <document start>".to_owned()),
        "invalid trailing content after double-quoted scalar" => (line, "did not find expected key".to_owned()),
        "invalid indentation in quoted scalar" | "while scanning a quoted scalar, found unexpected end of stream" => {
            (end, "found unexpected end of stream".to_owned())
        }
        // go-yaml finds this while decoding, where it has no line.
        "while parsing node, found unknown anchor" => {
            (0, format!("Unknown anchor '{}' referenced", alias_at(text, at.index())))
        }
        m => (
            line,
            m.strip_prefix("while ").and_then(|m| m.split_once(", ")).map_or(m, |(_, problem)| problem).to_owned(),
        ),
    };
    SyntaxError { line: line.max(1), message: problem }
}

/// The closer of the innermost flow collection still open at character
/// `index` (quotes and comments skipped): `]` or `}`.
fn open_flow_closer(text: &str, index: usize) -> Option<char> {
    let mut open = Vec::new();
    let (mut quote, mut comment, mut previous) = (None, false, ' ');
    for c in text.chars().take(index) {
        match (quote, c) {
            (_, '\n') if comment => comment = false,
            _ if comment => {}
            (Some('"'), '\\') if previous == '\\' => {
                previous = ' ';
                continue;
            }
            (Some(q), c) if c == q && !(q == '"' && previous == '\\') => quote = None,
            (Some(_), _) => {}
            (None, '\'' | '"') => quote = Some(c),
            (None, '#') if previous.is_whitespace() => comment = true,
            (None, '[') => open.push(']'),
            (None, '{') => open.push('}'),
            (None, ']' | '}') => {
                open.pop();
            }
            _ => {}
        }
        previous = c;
    }
    open.pop()
}

/// The name of the alias (`*name`) at character `index`.
fn alias_at(text: &str, index: usize) -> String {
    let rest = text.chars().skip(index).skip_while(|c| *c == '*');
    rest.take_while(|c| !c.is_whitespace() && !",[]{}".contains(*c)).collect()
}

fn truncated(line: usize) -> SyntaxError {
    SyntaxError { line, message: "unexpected end of the document".to_owned() }
}

/// A scalar's type. `!!binary` that is not base64 is an error, which
/// go-yaml finds while decoding, where it has no line.
fn resolve(text: String, style: TScalarStyle, tag: Option<&Tag>) -> Result<Scalar, SyntaxError> {
    let string = |text| Ok(Scalar { text, kind: ScalarKind::Str, binary: None });
    match tag.map(|t| t.suffix.as_str()) {
        Some("binary") => {
            let compact: String = text.chars().filter(|c| !c.is_whitespace()).collect();
            let bytes = base64::engine::general_purpose::STANDARD.decode(compact).map_err(|_| SyntaxError {
                line: 1,
                message: "!!binary value contains invalid base64 data".to_owned(),
            })?;
            Ok(Scalar {
                text: String::from_utf8_lossy(&bytes).into_owned(),
                kind: ScalarKind::Str,
                binary: Some(bytes),
            })
        }
        Some("str") => string(text),
        _ if style != TScalarStyle::Plain => string(text),
        _ => Ok(Scalar { kind: implicit_kind(&text), text, binary: None }),
    }
}

/// YAML 1.1's implicit resolution of a plain scalar, as go-yaml v1 does it.
pub fn implicit_kind(text: &str) -> ScalarKind {
    match text {
        "" | "~" | "null" | "Null" | "NULL" => return ScalarKind::Null,
        "y" | "Y" | "yes" | "Yes" | "YES" | "true" | "True" | "TRUE" | "on" | "On" | "ON" => {
            return ScalarKind::Bool(true)
        }
        "n" | "N" | "no" | "No" | "NO" | "false" | "False" | "FALSE" | "off" | "Off" | "OFF" => {
            return ScalarKind::Bool(false)
        }
        ".inf" | ".Inf" | ".INF" | "+.inf" | "+.Inf" | "+.INF" => return ScalarKind::Float(f64::INFINITY),
        "-.inf" | "-.Inf" | "-.INF" => return ScalarKind::Float(f64::NEG_INFINITY),
        ".nan" | ".NaN" | ".NAN" => return ScalarKind::Float(f64::NAN),
        _ => {}
    }
    if let Some(n) = parse_int(text) {
        return ScalarKind::Int(n);
    }
    if looks_like_float(text) {
        if let Ok(f) = text.replace('_', "").parse::<f64>() {
            return ScalarKind::Float(f);
        }
    }
    ScalarKind::Str
}

fn parse_int(text: &str) -> Option<i64> {
    let (negative, body) = match text.as_bytes().first()? {
        b'-' => (true, &text[1..]),
        b'+' => (false, &text[1..]),
        _ => (false, text),
    };
    let body = body.replace('_', "");
    if body.is_empty() {
        return None;
    }
    let value = if let Some(hex) = body.strip_prefix("0x") {
        i64::from_str_radix(hex, 16).ok()?
    } else if let Some(bin) = body.strip_prefix("0b") {
        i64::from_str_radix(bin, 2).ok()?
    } else if body.len() > 1 && body.starts_with('0') {
        i64::from_str_radix(&body[1..], 8).ok()?
    } else if body.bytes().all(|b| b.is_ascii_digit()) {
        body.parse().ok()?
    } else {
        return None;
    };
    Some(if negative { -value } else { value })
}

fn looks_like_float(text: &str) -> bool {
    let body = text.trim_start_matches(['-', '+']);
    let mut digits = false;
    for (i, c) in body.char_indices() {
        match c {
            '0'..='9' => digits = true,
            '_' | '.' => {}
            'e' | 'E' => return digits && i + 1 < body.len(),
            _ => return false,
        }
    }
    digits && body.contains('.')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_carry_their_lines() {
        let doc =
            parse("#cloud-config\ncoreos:\n  units:\n    - name: a\n      command: start\n    - name: b\n").unwrap();
        let coreos = doc.get("coreos").unwrap();
        assert_eq!(coreos.line, 2);
        let units = coreos.get("units").unwrap();
        assert_eq!(units.line, 3);
        assert_eq!(units.items()[0].line, 4);
        assert_eq!(units.items()[0].get("command").unwrap().line, 5);
        assert_eq!(units.items()[1].line, 6);
    }

    #[test]
    fn plain_scalars_resolve_as_yaml_1_1() {
        assert_eq!(implicit_kind("off"), ScalarKind::Bool(false));
        assert_eq!(implicit_kind("yes"), ScalarKind::Bool(true));
        assert_eq!(implicit_kind("0744"), ScalarKind::Int(0o744));
        assert_eq!(implicit_kind("744"), ScalarKind::Int(744));
        assert_eq!(implicit_kind("0x1f"), ScalarKind::Int(31));
        assert_eq!(implicit_kind("1.5"), ScalarKind::Float(1.5));
        assert_eq!(implicit_kind("~"), ScalarKind::Null);
        assert_eq!(implicit_kind("10.0.0.1:4001"), ScalarKind::Str);
        assert_eq!(implicit_kind("$private_ipv4:7001"), ScalarKind::Str);
    }

    #[test]
    fn quoted_scalars_stay_strings() {
        let doc = parse("a: 'off'\nb: \"0644\"\nc: !!str 12\n").unwrap();
        for key in ["a", "b", "c"] {
            let Value::Scalar(s) = &doc.get(key).unwrap().value else { panic!() };
            assert_eq!(s.kind, ScalarKind::Str, "{key}");
        }
    }

    #[test]
    fn binary_scalars_are_decoded() {
        let doc = parse("content: !!binary aGVsbG8K\n").unwrap();
        assert_eq!(doc.get("content").unwrap().text(), Some("hello\n"));
    }

    #[test]
    fn syntax_errors_carry_go_yaml_words_and_line() {
        // libyaml finds the misindented key at the start of line 3 (its
        // line 2, counting from 0) and says so without its context.
        let err = parse("a:\n  b: c\n d: e\n").unwrap_err();
        assert_eq!((err.line, err.message.as_str()), (2, "did not find expected key"));
        let err = parse("a:\n  b: c: d\n").unwrap_err();
        assert_eq!((err.line, err.message.as_str()), (1, "mapping values are not allowed in this context"));
    }

    #[test]
    fn anchors_are_followed() {
        let doc = parse("a: &x hello\nb: *x\n").unwrap();
        assert_eq!(doc.get("b").unwrap().text(), Some("hello"));
    }
}
