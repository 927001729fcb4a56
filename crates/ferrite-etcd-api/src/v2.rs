//! The etcd v2 keys, members and stats API: JSON shapes and error codes.

use std::fmt;

use serde::{Deserialize, Serialize};

/// A node as the v2 API shows it (etcd's `NodeExtern`).
///
/// Field order matches etcd's JSON encoding; absent and zero fields are
/// omitted exactly where etcd omits them.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Node {
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub key: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<String>,
    #[serde(default, skip_serializing_if = "is_false")]
    pub dir: bool,
    /// RFC 3339 with nanoseconds, as Go's `time.RFC3339Nano` prints it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expiration: Option<String>,
    #[serde(default, skip_serializing_if = "is_zero_i64")]
    pub ttl: i64,
    /// Go's `omitempty` drops an empty list as well as a missing one.
    #[serde(default, skip_serializing_if = "is_none_or_empty")]
    pub nodes: Option<Vec<Node>>,
    #[serde(default, skip_serializing_if = "is_zero_u64")]
    pub modified_index: u64,
    #[serde(default, skip_serializing_if = "is_zero_u64")]
    pub created_index: u64,
}

/// The body of every successful keys response (etcd's `Event`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Event {
    pub action: Action,
    pub node: Node,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prev_node: Option<Node>,
}

/// What happened to a node. The strings are etcd's.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum Action {
    Get,
    Create,
    Set,
    Update,
    Delete,
    CompareAndSwap,
    CompareAndDelete,
    Expire,
}

impl Action {
    pub fn as_str(self) -> &'static str {
        match self {
            Action::Get => "get",
            Action::Create => "create",
            Action::Set => "set",
            Action::Update => "update",
            Action::Delete => "delete",
            Action::CompareAndSwap => "compareAndSwap",
            Action::CompareAndDelete => "compareAndDelete",
            Action::Expire => "expire",
        }
    }
}

impl fmt::Display for Action {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An etcd v2 error code. The numbers, messages and HTTP statuses are
/// etcd's (`server/etcdserver/api/v2error`); clients switch on them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorCode {
    KeyNotFound = 100,
    TestFailed = 101,
    NotFile = 102,
    NoMorePeer = 103,
    NotDir = 104,
    NodeExist = 105,
    KeyIsPreserved = 106,
    RootReadOnly = 107,
    DirNotEmpty = 108,
    ExistingPeerAddr = 109,
    Unauthorized = 110,

    ValueRequired = 200,
    PrevValueRequired = 201,
    TtlNaN = 202,
    IndexNaN = 203,
    ValueOrTtlRequired = 204,
    TimeoutNaN = 205,
    NameRequired = 206,
    IndexOrValueRequired = 207,
    IndexValueMutex = 208,
    InvalidField = 209,
    InvalidForm = 210,
    RefreshValue = 211,
    RefreshTtlRequired = 212,

    RaftInternal = 300,
    LeaderElect = 301,

    WatcherCleared = 400,
    EventIndexCleared = 401,
    StandbyInternal = 402,
    InvalidActiveSize = 403,
    InvalidRemoveDelay = 404,

    ClientInternal = 500,
}

impl ErrorCode {
    pub const ALL: [ErrorCode; 32] = [
        ErrorCode::KeyNotFound,
        ErrorCode::TestFailed,
        ErrorCode::NotFile,
        ErrorCode::NoMorePeer,
        ErrorCode::NotDir,
        ErrorCode::NodeExist,
        ErrorCode::KeyIsPreserved,
        ErrorCode::RootReadOnly,
        ErrorCode::DirNotEmpty,
        ErrorCode::ExistingPeerAddr,
        ErrorCode::Unauthorized,
        ErrorCode::ValueRequired,
        ErrorCode::PrevValueRequired,
        ErrorCode::TtlNaN,
        ErrorCode::IndexNaN,
        ErrorCode::ValueOrTtlRequired,
        ErrorCode::TimeoutNaN,
        ErrorCode::NameRequired,
        ErrorCode::IndexOrValueRequired,
        ErrorCode::IndexValueMutex,
        ErrorCode::InvalidField,
        ErrorCode::InvalidForm,
        ErrorCode::RefreshValue,
        ErrorCode::RefreshTtlRequired,
        ErrorCode::RaftInternal,
        ErrorCode::LeaderElect,
        ErrorCode::WatcherCleared,
        ErrorCode::EventIndexCleared,
        ErrorCode::StandbyInternal,
        ErrorCode::InvalidActiveSize,
        ErrorCode::InvalidRemoveDelay,
        ErrorCode::ClientInternal,
    ];

    pub fn code(self) -> u32 {
        self as u32
    }

    pub fn from_code(code: u32) -> Option<ErrorCode> {
        ErrorCode::ALL.into_iter().find(|c| c.code() == code)
    }

    /// etcd's message for this code, word for word.
    pub fn message(self) -> &'static str {
        match self {
            ErrorCode::KeyNotFound => "Key not found",
            ErrorCode::TestFailed => "Compare failed",
            ErrorCode::NotFile => "Not a file",
            ErrorCode::NoMorePeer => "Reached the max number of peers in the cluster",
            ErrorCode::NotDir => "Not a directory",
            ErrorCode::NodeExist => "Key already exists",
            ErrorCode::KeyIsPreserved => "The prefix of given key is a keyword in etcd",
            ErrorCode::RootReadOnly => "Root is read only",
            ErrorCode::DirNotEmpty => "Directory not empty",
            ErrorCode::ExistingPeerAddr => "Peer address has existed",
            ErrorCode::Unauthorized => "The request requires user authentication",
            ErrorCode::ValueRequired => "Value is Required in POST form",
            ErrorCode::PrevValueRequired => "PrevValue is Required in POST form",
            ErrorCode::TtlNaN => "The given TTL in POST form is not a number",
            ErrorCode::IndexNaN => "The given index in POST form is not a number",
            ErrorCode::ValueOrTtlRequired => "Value or TTL is required in POST form",
            ErrorCode::TimeoutNaN => "The given timeout in POST form is not a number",
            ErrorCode::NameRequired => "Name is required in POST form",
            ErrorCode::IndexOrValueRequired => "Index or value is required",
            ErrorCode::IndexValueMutex => "Index and value cannot both be specified",
            ErrorCode::InvalidField => "Invalid field",
            ErrorCode::InvalidForm => "Invalid POST form",
            ErrorCode::RefreshValue => "Value provided on refresh",
            ErrorCode::RefreshTtlRequired => "A TTL must be provided on refresh",
            ErrorCode::RaftInternal => "Raft Internal Error",
            ErrorCode::LeaderElect => "During Leader Election",
            ErrorCode::WatcherCleared => "watcher is cleared due to etcd recovery",
            ErrorCode::EventIndexCleared => "The event in requested index is outdated and cleared",
            ErrorCode::StandbyInternal => "Standby Internal Error",
            ErrorCode::InvalidActiveSize => "Invalid active size",
            ErrorCode::InvalidRemoveDelay => "Standby remove delay",
            ErrorCode::ClientInternal => "Client Internal Error",
        }
    }

    /// The HTTP status etcd answers with for this code.
    pub fn http_status(self) -> u16 {
        match self {
            ErrorCode::KeyNotFound => 404,
            ErrorCode::NotFile | ErrorCode::DirNotEmpty => 403,
            ErrorCode::Unauthorized => 401,
            ErrorCode::TestFailed | ErrorCode::NodeExist => 412,
            ErrorCode::RaftInternal | ErrorCode::LeaderElect => 500,
            _ => 400,
        }
    }
}

/// An etcd v2 error as it travels: code, message, cause and the store index
/// at the time of the error.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Error {
    pub error_code: u32,
    pub message: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub cause: String,
    pub index: u64,
}

impl Error {
    pub fn new(code: ErrorCode, cause: impl Into<String>, index: u64) -> Error {
        Error { error_code: code.code(), message: code.message().to_owned(), cause: cause.into(), index }
    }

    pub fn code(&self) -> Option<ErrorCode> {
        ErrorCode::from_code(self.error_code)
    }

    pub fn http_status(&self) -> u16 {
        self.code().map_or(400, ErrorCode::http_status)
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // etcd's `Error.Error()`: "<code>: <message> (<cause>) [<index>]".
        write!(f, "{}: {} ({}) [{}]", self.error_code, self.message, self.cause, self.index)
    }
}

impl std::error::Error for Error {}

/// One member of the cluster as `/v2/members` lists it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Member {
    pub id: String,
    pub name: String,
    #[serde(rename = "peerURLs")]
    pub peer_urls: Vec<String>,
    #[serde(rename = "clientURLs")]
    pub client_urls: Vec<String>,
}

/// `GET /v2/members`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemberList {
    pub members: Vec<Member>,
}

/// The body of `POST /v2/members` and `PUT /v2/members/<id>`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemberCreateRequest {
    #[serde(rename = "peerURLs")]
    pub peer_urls: Vec<String>,
}

/// `GET /version`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Version {
    #[serde(rename = "etcdserver")]
    pub server: String,
    #[serde(rename = "etcdcluster")]
    pub cluster: String,
}

/// Formats a member or cluster id the way etcd prints it: lower-case hex,
/// no padding.
pub fn format_id(id: u64) -> String {
    format!("{id:x}")
}

/// Parses an id printed by [`format_id`].
pub fn parse_id(s: &str) -> Option<u64> {
    u64::from_str_radix(s, 16).ok()
}

/// Formats Unix nanoseconds as Go's `time.RFC3339Nano` prints a UTC time,
/// the form of every timestamp in etcd's JSON: trailing zeros of the
/// fraction trimmed, no fraction when it is zero ("2026-11-25T22:00:01.5Z").
pub fn format_time(unix_nanos: i64) -> String {
    let secs = unix_nanos.div_euclid(1_000_000_000);
    let nanos = unix_nanos.rem_euclid(1_000_000_000);
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    let (year, month, day) = civil_from_days(days);
    let mut out = format!("{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}", rem / 3600, (rem % 3600) / 60, rem % 60);
    if nanos != 0 {
        let fraction = format!("{nanos:09}");
        out.push('.');
        out.push_str(fraction.trim_end_matches('0'));
    }
    out.push('Z');
    out
}

/// Days since 1970-01-01 to a proleptic Gregorian date (Howard Hinnant's
/// `civil_from_days`).
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    // Both are small by construction (1..=31, 1..=12).
    (year, u32::try_from(month).unwrap_or(1), u32::try_from(day).unwrap_or(1))
}

fn is_none_or_empty(nodes: &Option<Vec<Node>>) -> bool {
    nodes.as_ref().is_none_or(Vec::is_empty)
}

fn is_false(b: &bool) -> bool {
    !*b
}

fn is_zero_u64(n: &u64) -> bool {
    *n == 0
}

fn is_zero_i64(n: &i64) -> bool {
    *n == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn node_serializes_in_etcd_field_order_and_omits_empty_fields() {
        let event = Event {
            action: Action::Set,
            node: Node {
                key: "/foo".into(),
                value: Some("bar".into()),
                modified_index: 7,
                created_index: 7,
                ..Node::default()
            },
            prev_node: None,
        };
        assert_eq!(
            serde_json::to_string(&event).unwrap(),
            r#"{"action":"set","node":{"key":"/foo","value":"bar","modifiedIndex":7,"createdIndex":7}}"#
        );
    }

    #[test]
    fn empty_value_is_kept_but_absent_value_is_not() {
        let with_empty = Node { key: "/a".into(), value: Some(String::new()), ..Node::default() };
        assert_eq!(serde_json::to_string(&with_empty).unwrap(), r#"{"key":"/a","value":""}"#);
        let dir = Node { key: "/d".into(), dir: true, nodes: Some(Vec::new()), ..Node::default() };
        assert_eq!(serde_json::to_string(&dir).unwrap(), r#"{"key":"/d","dir":true}"#);
    }

    #[test]
    fn error_has_etcd_shape_status_and_display() {
        let err = Error::new(ErrorCode::KeyNotFound, "/foo", 5);
        assert_eq!(
            serde_json::to_string(&err).unwrap(),
            r#"{"errorCode":100,"message":"Key not found","cause":"/foo","index":5}"#
        );
        assert_eq!(err.http_status(), 404);
        assert_eq!(err.to_string(), "100: Key not found (/foo) [5]");
        assert_eq!(Error::new(ErrorCode::NodeExist, "", 1).http_status(), 412);
        assert_eq!(Error::new(ErrorCode::TtlNaN, "", 1).http_status(), 400);
    }

    #[test]
    fn every_code_round_trips() {
        for code in ErrorCode::ALL {
            assert_eq!(ErrorCode::from_code(code.code()), Some(code));
        }
        assert_eq!(ErrorCode::from_code(999), None);
    }

    #[test]
    fn times_print_as_go_rfc3339nano() {
        assert_eq!(format_time(0), "1970-01-01T00:00:00Z");
        assert_eq!(format_time(1_784_067_293_289_578_149), "2026-07-14T22:14:53.289578149Z");
        assert_eq!(format_time(1_784_067_293_500_000_000), "2026-07-14T22:14:53.5Z");
        assert_eq!(format_time(951_782_400_000_000_000), "2000-02-29T00:00:00Z");
    }

    #[test]
    fn ids_print_as_etcd_does() {
        assert_eq!(format_id(0x8e9e05c52164694d), "8e9e05c52164694d");
        assert_eq!(parse_id("8e9e05c52164694d"), Some(0x8e9e05c52164694d));
        assert_eq!(parse_id("zz"), None);
    }
}
