//! The validator: every problem in user data, with its line, in
//! coreos-cloudinit's words and severities. Pure: no I/O.

use std::fmt;

use crate::decode::decode_content;
use crate::schema::{self, Field, Kind};
use crate::userdata::{self, UserData};
use crate::yaml::{self, Node, ScalarKind, Value};

/// How bad a problem is. Only errors stop an apply.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    /// The config cannot be applied.
    Error,
    /// Probably a mistake; applying goes on.
    Warning,
    /// Worth knowing.
    Info,
}

impl fmt::Display for Severity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Severity::Error => "error",
            Severity::Warning => "warning",
            Severity::Info => "info",
        })
    }
}

/// One problem.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Entry {
    /// How bad it is (`kind` in coreos-cloudinit's JSON).
    #[serde(rename = "kind")]
    pub severity: Severity,
    /// What is wrong.
    pub message: String,
    /// The 1-based line.
    pub line: usize,
}

impl fmt::Display for Entry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "line {}: {}: {}", self.line, self.severity, self.message)
    }
}

/// Every problem found, ordered by line.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Report {
    /// The problems.
    pub entries: Vec<Entry>,
}

impl Report {
    fn push(&mut self, severity: Severity, line: usize, message: impl Into<String>) {
        self.entries.push(Entry { severity, message: message.into(), line });
    }

    pub(crate) fn error(&mut self, line: usize, message: impl Into<String>) {
        self.push(Severity::Error, line, message);
    }

    fn warning(&mut self, line: usize, message: impl Into<String>) {
        self.push(Severity::Warning, line, message);
    }

    fn info(&mut self, line: usize, message: impl Into<String>) {
        self.push(Severity::Info, line, message);
    }

    /// Whether any entry is an error.
    pub fn has_errors(&self) -> bool {
        self.entries.iter().any(|e| e.severity == Severity::Error)
    }

    /// The report as coreos-cloudinit's JSON: `[{"kind","message","line"}]`.
    pub fn to_json(&self) -> String {
        serde_json::to_string(&self.entries).unwrap_or_else(|_| "[]".to_owned())
    }
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for entry in &self.entries {
            writeln!(f, "{entry}")?;
        }
        Ok(())
    }
}

/// Validates raw user data (possibly gzip-compressed).
pub fn validate(raw: &[u8]) -> Report {
    let data = match userdata::decompress(raw) {
        Ok(data) => data,
        Err(e) => {
            let mut report = Report::default();
            report.error(1, e.to_string());
            return report;
        }
    };
    match userdata::classify(&data) {
        UserData::Empty | UserData::Script(_) => Report::default(),
        UserData::Ignition => {
            let mut report = Report::default();
            report.warning(1, "Ignition configs are not supported by ferrite-cloudinit; nothing will be applied");
            report
        }
        UserData::CloudConfig(text) => validate_cloud_config(&text).0,
        UserData::Unknown => {
            let mut report = Report::default();
            report.error(1, r##"must be "#cloud-config" or begin with "#!""##);
            report
        }
    }
}

/// Validates a cloud-config document; also returns its tree with keys
/// normalized (`-` made `_`) when it parsed.
pub fn validate_cloud_config(text: &str) -> (Report, Option<Node>) {
    let mut report = Report::default();
    let root = match yaml::parse(text) {
        Ok(root) => normalize(root),
        Err(e) => {
            report.error(e.line, e.message);
            return (report, None);
        }
    };
    if !matches!(root.value, Value::Map(_)) {
        report.error(root.line, "cloud-config must be a mapping of keys");
        return (report, None);
    }
    check_discovery_url(&root, &mut report);
    check_encoding(&root, &mut report);
    check_structure(&root, &schema::ROOT, "", &mut report);
    check_validity(&root, &schema::ROOT, &mut report);
    check_write_files(&root, &mut report);
    check_write_files_under_coreos(&root, &mut report);
    report.entries.sort_by_key(|e| e.line);
    (report, Some(root))
}

/// Makes every key's `-` a `_`: the two are interchangeable.
pub fn normalize(node: Node) -> Node {
    let value = match node.value {
        Value::Map(entries) => {
            Value::Map(entries.into_iter().map(|(k, v)| (k.replace('-', "_"), normalize(v))).collect())
        }
        Value::Seq(items) => Value::Seq(items.into_iter().map(normalize).collect()),
        scalar => scalar,
    };
    Node { line: node.line, value }
}

fn check_discovery_url(root: &Node, report: &mut Report) {
    for section in ["etcd", "etcd2"] {
        let Some(node) = root.get("coreos").and_then(|c| c.get(section)).and_then(|e| e.get("discovery")) else {
            continue;
        };
        if node.is_null() {
            continue;
        }
        let text = node.text().unwrap_or_default();
        if !(text.starts_with('/') || url::Url::parse(text).is_ok()) {
            report.warning(node.line, "discovery URL is not valid");
        }
    }
}

fn check_encoding(root: &Node, report: &mut Report) {
    let Some(files) = root.get("write_files") else { return };
    for file in files.items() {
        let Some(encoding) = file.get("encoding").and_then(Node::text) else { continue };
        let content = file.get("content");
        let bytes = content.and_then(Node::bytes).unwrap_or_default();
        if decode_content(bytes, encoding).is_err() {
            let line = content.map_or(file.line, |c| c.line);
            report.error(line, format!("content cannot be decoded as {encoding:?}"));
        }
    }
}

fn compatible(node: &Node, kind: &Kind) -> bool {
    match (&node.value, kind) {
        (Value::Scalar(s), Kind::Str) => s.kind != ScalarKind::Null,
        (Value::Map(_), Kind::Struct(_)) => true,
        (Value::Seq(_), Kind::List(_)) => true,
        (Value::Scalar(s), Kind::Bool) => matches!(s.kind, ScalarKind::Bool(_)),
        (Value::Scalar(s), Kind::Int) => matches!(s.kind, ScalarKind::Int(_)),
        (Value::Scalar(s), Kind::Float) => matches!(s.kind, ScalarKind::Int(_) | ScalarKind::Float(_)),
        _ => false,
    }
}

fn check_structure(node: &Node, field: &Field, name: &str, report: &mut Report) {
    check_kind(node, &field.kind, name, report);
}

fn check_kind(node: &Node, kind: &Kind, name: &str, report: &mut Report) {
    if !compatible(node, kind) {
        report.warning(node.line, format!("incorrect type for {name:?} (want {})", kind.human()));
        return;
    }
    match kind {
        Kind::Struct(fields) => {
            for (key, child) in node.entries() {
                match fields.iter().find(|f| f.name == key) {
                    Some(field) => {
                        if let Some(why) = field.deprecated {
                            report.warning(child.line, format!("deprecated key {key:?} ({why})"));
                        }
                        check_structure(child, field, key, report);
                    }
                    None => report.warning(child.line, format!("unrecognized key {key:?}")),
                }
            }
        }
        Kind::List(inner) => {
            for (i, item) in node.items().iter().enumerate() {
                check_kind(item, inner, &format!("{name}[{i}]"), report);
            }
        }
        Kind::Str | Kind::Bool | Kind::Int | Kind::Float => {}
    }
}

fn check_validity(node: &Node, field: &Field, report: &mut Report) {
    if let (Some(valid), Value::Scalar(_)) = (field.valid, &node.value) {
        if let Some(text) = node.text().filter(|t| !t.is_empty()) {
            if !valid.accepts(text) {
                report.error(node.line, format!("invalid value {text}"));
            }
        }
    }
    validity_of_kind(node, &field.kind, report);
}

fn validity_of_kind(node: &Node, kind: &Kind, report: &mut Report) {
    match (kind, &node.value) {
        (Kind::Struct(fields), Value::Map(entries)) => {
            for (key, child) in entries {
                if let Some(field) = fields.iter().find(|f| f.name == key) {
                    check_validity(child, field, report);
                }
            }
        }
        (Kind::List(inner), Value::Seq(items)) => {
            for item in items {
                validity_of_kind(item, inner, report);
            }
        }
        _ => {}
    }
}

fn check_write_files(root: &Node, report: &mut Report) {
    let Some(files) = root.get("write_files") else { return };
    for file in files.items() {
        let Some(path) = file.get("path") else { continue };
        let Some(text) = path.text() else { continue };
        let clean = clean_path(text);
        let dir = clean.rsplit_once('/').map_or("", |(dir, _)| dir);
        if dir == "/usr" || dir.starts_with("/usr/") {
            report.error(path.line, "file cannot be written to a read-only filesystem");
        }
    }
}

fn check_write_files_under_coreos(root: &Node, report: &mut Report) {
    if let Some(node) = root.get("coreos").and_then(|c| c.get("write_files")) {
        report.info(node.line, "write_files doesn't belong under coreos");
    }
}

/// A path with `.`, `..` and repeated slashes resolved lexically, as Go's
/// `path.Clean`.
pub fn clean_path(path: &str) -> String {
    let absolute = path.starts_with('/');
    let mut parts: Vec<&str> = Vec::new();
    for part in path.split('/') {
        match part {
            "" | "." => {}
            ".." => {
                if parts.last().is_some_and(|p| *p != "..") {
                    parts.pop();
                } else if !absolute {
                    parts.push("..");
                }
            }
            other => parts.push(other),
        }
    }
    let joined = parts.join("/");
    match (absolute, joined.is_empty()) {
        (true, _) => format!("/{joined}"),
        (false, true) => ".".to_owned(),
        (false, false) => joined,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lines(config: &str) -> Vec<String> {
        validate(format!("#cloud-config\n{config}").as_bytes()).entries.iter().map(ToString::to_string).collect()
    }

    #[test]
    fn coerced_values_validate_by_their_text() {
        assert!(lines("coreos:\n  update:\n    reboot-strategy: off").is_empty());
        assert_eq!(lines("coreos:\n  update:\n    reboot-strategy: false"), ["line 4: error: invalid value false"]);
        for perm in ["0744", "'0744'", "744", "'744'"] {
            assert!(lines(&format!("write_files:\n  - permissions: {perm}")).is_empty(), "{perm}");
        }
    }

    #[test]
    fn header_and_kinds() {
        assert!(validate(b"").entries.is_empty());
        assert!(validate(b"#!/bin/bash\necho hey").entries.is_empty());
        assert_eq!(validate(b"{}").to_string(), "line 1: error: must be \"#cloud-config\" or begin with \"#!\"\n");
        assert_eq!(validate(br#"{"ignitionVersion":1}"#).entries[0].severity, Severity::Warning);
    }

    /// coreos-cloudinit's own cases (config/validate/validate_test.go,
    /// TestParseCloudConfig): go-yaml's words and line. Its third case, a
    /// lone tab, is one yaml-rust2 accepts (see `yaml::go_yaml_error`).
    #[test]
    fn yaml_syntax_errors_read_as_coreos_cloudinit_reports_them() {
        let report = |text: &str| validate_cloud_config(text).0.to_string();
        assert_eq!(report("a:\na"), "line 2: error: could not find expected ':'\n");
        assert_eq!(report("#hello\na:\na"), "line 3: error: could not find expected ':'\n");
    }

    #[test]
    fn clean_paths() {
        assert_eq!(clean_path("/tmp/../usr/x"), "/usr/x");
        assert_eq!(clean_path("//a/./b/"), "/a/b");
        assert_eq!(clean_path("/.."), "/");
    }

    #[test]
    fn json_has_coreos_cloudinit_fields() {
        let report = validate(b"#cloud-config\nfoo: 1\n");
        assert_eq!(report.to_json(), r#"[{"kind":"warning","message":"unrecognized key \"foo\"","line":2}]"#);
    }
}
