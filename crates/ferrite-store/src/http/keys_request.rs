//! `/v2/keys` requests: from method and form to a store operation, with
//! etcd's validation order, error codes and causes (`parseKeyRequest` and
//! the v2 applier in etcd's server). Pure: no I/O, time passed in.

use ferrite_etcd_api::v2::{Error, ErrorCode};
use http::Method;

use super::form::{clean_path, parse_bool, parse_u64, Form};
use crate::v2store::{Command, Ttl, UnixNanos};

/// What a keys request asks the server to do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeysOp {
    /// A local read (GET, HEAD).
    Get { key: String, recursive: bool, sorted: bool },
    /// A linearizable read (`quorum=true`).
    QuorumGet { key: String, recursive: bool, sorted: bool },
    /// A long poll or stream of changes (`wait=true`).
    Watch { key: String, recursive: bool, stream: bool, since: u64 },
    /// A replicated write.
    Write(Command),
}

/// A parsed keys request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeysRequest {
    pub op: KeysOp,
    /// Omit `node` and `prevNode` from a successful write's answer.
    pub no_value_on_success: bool,
}

/// Builds a request error as etcd's `NewRequestError` does (index 0).
fn invalid(code: ErrorCode, cause: &str) -> Error {
    Error::new(code, cause, 0)
}

fn get_bool(form: &Form, key: &str, cause: &str) -> Result<bool, Error> {
    match form.get(key) {
        None => Ok(false),
        Some(v) => parse_bool(v).ok_or_else(|| invalid(ErrorCode::InvalidField, cause)),
    }
}

fn get_index(form: &Form, key: &str) -> Result<u64, Error> {
    match form.get(key) {
        None => Ok(0),
        Some(v) => parse_u64(v).ok_or_else(|| invalid(ErrorCode::IndexNaN, &format!("invalid value for {key:?}"))),
    }
}

/// `now + ttl` with Go's arithmetic: `time.Duration(ttl) * time.Second`
/// wraps on overflow, so an absurd TTL lands in the past, before
/// 2000-01-01, where the store treats it as "no TTL" exactly as etcd does.
fn go_expiration(now: UnixNanos, ttl_secs: u64) -> UnixNanos {
    #[allow(clippy::cast_possible_wrap)] // Go's uint64 -> Duration conversion wraps; so does this.
    let ttl = ttl_secs as i64;
    now.wrapping_add(ttl.wrapping_mul(1_000_000_000))
}

/// Parses a keys request. `path` is the decoded URL path after
/// `/v2/keys`; `now` stamps the expiration of a `ttl`.
pub fn parse(method: &Method, path: &str, form: &Form, now: UnixNanos) -> Result<KeysRequest, Error> {
    let key = clean_path(path);
    let prev_index = get_index(form, "prevIndex")?;
    let since = get_index(form, "waitIndex")?;
    let recursive = get_bool(form, "recursive", r#"invalid value for "recursive""#)?;
    let sorted = get_bool(form, "sorted", r#"invalid value for "sorted""#)?;
    let wait = get_bool(form, "wait", r#"invalid value for "wait""#)?;
    let dir = get_bool(form, "dir", r#"invalid value for "dir""#)?;
    let quorum = get_bool(form, "quorum", r#"invalid value for "quorum""#)?;
    let stream = get_bool(form, "stream", r#"invalid value for "stream""#)?;

    if wait && method != Method::GET {
        return Err(invalid(ErrorCode::InvalidField, r#""wait" can only be used with GET requests"#));
    }

    let prev_value = form.value("prevValue").to_owned();
    if form.has("prevValue") && prev_value.is_empty() {
        return Err(invalid(ErrorCode::PrevValueRequired, r#""prevValue" cannot be empty"#));
    }

    let no_value_on_success = get_bool(form, "noValueOnSuccess", r#"invalid value for "noValueOnSuccess""#)?;

    // An empty ttl is no ttl.
    let ttl = match form.value("ttl") {
        "" => None,
        v => Some(parse_u64(v).ok_or_else(|| invalid(ErrorCode::TtlNaN, r#"invalid value for "ttl""#))?),
    };

    let prev_exist = match form.get("prevExist") {
        None => None,
        Some(v) => Some(parse_bool(v).ok_or_else(|| invalid(ErrorCode::InvalidField, "invalid value for prevExist"))?),
    };

    let refresh = match form.get("refresh") {
        None => false,
        Some(v) => {
            let refresh = parse_bool(v).ok_or_else(|| invalid(ErrorCode::InvalidField, "invalid value for refresh"))?;
            if refresh {
                if !form.value("value").is_empty() {
                    return Err(invalid(ErrorCode::RefreshValue, "A value was provided on a refresh"));
                }
                if ttl.is_none() {
                    return Err(invalid(ErrorCode::RefreshTtlRequired, "No TTL value set"));
                }
            }
            refresh
        }
    };

    let ttl = Ttl { expire_at: ttl.map(|secs| go_expiration(now, secs)), refresh };
    let value = form.value("value").to_owned();

    let op = match *method {
        Method::GET if quorum => KeysOp::QuorumGet { key, recursive, sorted },
        Method::GET if wait => KeysOp::Watch { key, recursive, stream, since },
        Method::GET | Method::HEAD => KeysOp::Get { key, recursive, sorted },
        Method::POST => KeysOp::Write(Command::Create { key, dir, value, unique: true, ttl }),
        Method::PUT => KeysOp::Write(match prev_exist {
            Some(true) if prev_index == 0 && prev_value.is_empty() => Command::Update { key, value, ttl },
            Some(true) => Command::CompareAndSwap { key, prev_value, prev_index, value, ttl },
            Some(false) => Command::Create { key, dir, value, unique: false, ttl },
            None if prev_index > 0 || !prev_value.is_empty() => {
                Command::CompareAndSwap { key, prev_value, prev_index, value, ttl }
            }
            None => Command::Set { key, dir, value, ttl },
        }),
        Method::DELETE if prev_index > 0 || !prev_value.is_empty() => {
            KeysOp::Write(Command::CompareAndDelete { key, prev_value, prev_index })
        }
        Method::DELETE => KeysOp::Write(Command::Delete { key, dir, recursive }),
        // The handler answers 405 before parsing any other method.
        _ => return Err(invalid(ErrorCode::InvalidForm, "unsupported method")),
    };
    Ok(KeysRequest { op, no_value_on_success })
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: UnixNanos = 1_700_000_000_000_000_000;

    fn req(method: Method, path: &str, query: &str) -> Result<KeysRequest, Error> {
        parse(&method, path, &Form::parse(None, query).unwrap(), NOW)
    }

    fn write(method: Method, path: &str, query: &str) -> Command {
        match req(method, path, query).unwrap().op {
            KeysOp::Write(c) => c,
            other => panic!("expected a write, got {other:?}"),
        }
    }

    #[test]
    fn put_maps_to_the_store_call_etcd_makes() {
        let plain = Ttl::default();
        assert_eq!(
            write(Method::PUT, "/a", "value=1"),
            Command::Set { key: "/a".into(), dir: false, value: "1".into(), ttl: plain }
        );
        assert_eq!(
            write(Method::PUT, "/a", "value=1&prevExist=true"),
            Command::Update { key: "/a".into(), value: "1".into(), ttl: plain }
        );
        assert_eq!(
            write(Method::PUT, "/a", "value=1&prevExist=false&dir=false"),
            Command::Create { key: "/a".into(), dir: false, value: "1".into(), unique: false, ttl: plain }
        );
        assert_eq!(
            write(Method::PUT, "/a", "value=2&prevValue=1"),
            Command::CompareAndSwap {
                key: "/a".into(),
                prev_value: "1".into(),
                prev_index: 0,
                value: "2".into(),
                ttl: plain
            }
        );
        assert_eq!(
            write(Method::PUT, "/a", "value=2&prevIndex=7&prevExist=true"),
            Command::CompareAndSwap {
                key: "/a".into(),
                prev_value: String::new(),
                prev_index: 7,
                value: "2".into(),
                ttl: plain
            }
        );
    }

    #[test]
    fn post_creates_in_order_and_delete_may_compare() {
        assert_eq!(
            write(Method::POST, "/q", "value=job"),
            Command::Create { key: "/q".into(), dir: false, value: "job".into(), unique: true, ttl: Ttl::default() }
        );
        assert_eq!(
            write(Method::DELETE, "/a", "prevIndex=3"),
            Command::CompareAndDelete { key: "/a".into(), prev_value: String::new(), prev_index: 3 }
        );
        assert_eq!(
            write(Method::DELETE, "/d", "dir=true&recursive=true"),
            Command::Delete { key: "/d".into(), dir: true, recursive: true }
        );
    }

    #[test]
    fn ttl_is_stamped_from_now_and_empty_ttl_is_none() {
        match write(Method::PUT, "/a", "value=1&ttl=5") {
            Command::Set { ttl, .. } => assert_eq!(ttl.expire_at, Some(NOW + 5_000_000_000)),
            other => panic!("{other:?}"),
        }
        match write(Method::PUT, "/a", "value=1&ttl=") {
            Command::Set { ttl, .. } => assert_eq!(ttl.expire_at, None),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn an_overflowing_ttl_wraps_as_in_go() {
        assert_eq!(go_expiration(NOW, 5), NOW + 5_000_000_000);
        // 9999999999 s overflows int64 nanoseconds and wraps negative.
        assert!(go_expiration(NOW, 9_999_999_999) < 0);
    }

    #[test]
    fn reads_watches_and_quorum() {
        assert_eq!(
            req(Method::GET, "//a/./b", "recursive=true&sorted=1").unwrap().op,
            KeysOp::Get { key: "/a/b".into(), recursive: true, sorted: true }
        );
        assert_eq!(
            req(Method::GET, "/a", "wait=true&waitIndex=9&stream=true").unwrap().op,
            KeysOp::Watch { key: "/a".into(), recursive: false, stream: true, since: 9 }
        );
        // quorum wins over wait, as in etcd (the request becomes QGET).
        assert_eq!(
            req(Method::GET, "/a", "wait=true&quorum=true").unwrap().op,
            KeysOp::QuorumGet { key: "/a".into(), recursive: false, sorted: false }
        );
    }

    #[test]
    fn malformed_parameters_get_etcds_codes_and_causes() {
        let cases: &[(Method, &str, u32, &str)] = &[
            (Method::PUT, "prevIndex=x", 203, r#"invalid value for "prevIndex""#),
            (Method::GET, "waitIndex=-1", 203, r#"invalid value for "waitIndex""#),
            (Method::GET, "recursive=yes", 209, r#"invalid value for "recursive""#),
            (Method::GET, "sorted=", 209, r#"invalid value for "sorted""#),
            (Method::PUT, "wait=true", 209, r#""wait" can only be used with GET requests"#),
            (Method::PUT, "prevValue=", 201, r#""prevValue" cannot be empty"#),
            (Method::PUT, "ttl=abc", 202, r#"invalid value for "ttl""#),
            (Method::PUT, "prevExist=maybe", 209, "invalid value for prevExist"),
            (Method::PUT, "refresh=nope", 209, "invalid value for refresh"),
            (Method::PUT, "refresh=true&value=x&ttl=5", 211, "A value was provided on a refresh"),
            (Method::PUT, "refresh=true", 212, "No TTL value set"),
            (Method::PUT, "noValueOnSuccess=2", 209, r#"invalid value for "noValueOnSuccess""#),
        ];
        for (method, query, code, cause) in cases {
            let err = req(method.clone(), "/a", query).unwrap_err();
            assert_eq!((err.error_code, err.cause.as_str(), err.index), (*code, *cause, 0), "{query}");
        }
    }

    #[test]
    fn parameter_checks_run_in_etcds_order() {
        // prevIndex is checked before the booleans.
        let err = req(Method::GET, "/a", "recursive=bad&prevIndex=bad").unwrap_err();
        assert_eq!(err.error_code, 203);
    }
}
