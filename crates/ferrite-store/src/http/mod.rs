//! The HTTP faces of a member: the client API ([`client`]) and the peer
//! API ([`peer`]), plus the pieces of Go's net/http behaviour that etcd's
//! clients can see ([`form`], JSON encoding, plain-text errors, CORS).

pub mod client;
pub mod form;
pub mod keys_request;
pub mod peer;

use axum::body::Body;
use axum::response::Response;
use http::{header, HeaderValue, StatusCode};
use serde::Serialize;

/// JSON as Go's `json.Marshal` writes it: `<`, `>`, `&`, U+2028 and
/// U+2029 escaped (they can only occur inside strings), and U+FFFD as
/// `\ufffd`, which is how Go writes the invalid UTF-8 bytes that Ferrite
/// stored as U+FFFD when it decoded the request.
pub fn go_json<T: Serialize + ?Sized>(value: &T) -> Vec<u8> {
    let raw = serde_json::to_string(value).unwrap_or_default();
    let mut out = String::with_capacity(raw.len() + 8);
    for c in raw.chars() {
        match c {
            '<' => out.push_str("\\u003c"),
            '>' => out.push_str("\\u003e"),
            '&' => out.push_str("\\u0026"),
            '\u{2028}' => out.push_str("\\u2028"),
            '\u{2029}' => out.push_str("\\u2029"),
            '\u{fffd}' => out.push_str("\\ufffd"),
            c => out.push(c),
        }
    }
    out.into_bytes()
}

/// JSON as Go's `json.NewEncoder(w).Encode` writes it: with a newline.
pub fn go_json_line<T: Serialize + ?Sized>(value: &T) -> Vec<u8> {
    let mut out = go_json(value);
    out.push(b'\n');
    out
}

/// A response with a body and content type.
pub fn respond(status: StatusCode, content_type: &'static str, body: impl Into<Body>) -> Response {
    let mut resp = Response::new(body.into());
    *resp.status_mut() = status;
    resp.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    resp
}

pub const JSON: &str = "application/json";
pub const TEXT: &str = "text/plain; charset=utf-8";

/// Go's `http.Error`: a plain-text line and `nosniff`.
pub fn go_error(status: StatusCode, text: &str) -> Response {
    let mut resp = respond(status, TEXT, format!("{text}\n"));
    resp.headers_mut().insert("x-content-type-options", HeaderValue::from_static("nosniff"));
    resp
}

/// etcd's `allowMethod` refusal: 405 with the allowed methods.
pub fn method_not_allowed(allowed: &'static str) -> Response {
    let mut resp = go_error(StatusCode::METHOD_NOT_ALLOWED, "Method Not Allowed");
    resp.headers_mut().insert(header::ALLOW, HeaderValue::from_static(allowed));
    resp
}

/// etcd's `httptypes.HTTPError`: `{"message": ...}` with a status
/// (`json.Marshal`, so no trailing newline).
pub fn http_error(status: StatusCode, message: &str) -> Response {
    #[derive(Serialize)]
    struct Message<'a> {
        message: &'a str,
    }
    respond(status, JSON, go_json(&Message { message }))
}

/// The message Go's `encoding/json` gives for input serde_json rejected.
pub fn go_json_error(input: &[u8], e: &serde_json::Error) -> String {
    use serde_json::error::Category;
    match e.classify() {
        Category::Eof => "unexpected end of JSON input".to_owned(),
        Category::Syntax => {
            // serde_json reports 1-based line and column of the offending byte.
            let offset =
                input.split(|b| *b == b'\n').take(e.line().saturating_sub(1)).map(|l| l.len() + 1).sum::<usize>()
                    + e.column().saturating_sub(1);
            match input.get(offset) {
                Some(b) => format!("invalid character '{}' looking for beginning of value", char::from(*b)),
                None => "unexpected end of JSON input".to_owned(),
            }
        }
        Category::Data | Category::Io => e.to_string(),
    }
}

/// Go's `types.NewURLs`, which etcd applies to member peer URLs: at least
/// one, each http(s) with host:port and no path (or unix), sorted.
pub fn go_new_urls(urls: &[String]) -> Result<Vec<String>, String> {
    if urls.is_empty() {
        return Err("no valid URLs given".to_owned());
    }
    let mut out = Vec::with_capacity(urls.len());
    for raw in urls {
        let s = raw.trim();
        let (scheme, rest) = match s.split_once("://") {
            Some((scheme, rest)) => (scheme, rest),
            None => ("", s),
        };
        match scheme {
            "http" | "https" => {
                let (host_port, path) = match rest.find('/') {
                    Some(i) => (&rest[..i], &rest[i..]),
                    None => (rest, ""),
                };
                let has_port = host_port
                    .rsplit_once(':')
                    .is_some_and(|(host, port)| !host.is_empty() || port.chars().all(|c| c.is_ascii_digit()));
                if !has_port {
                    return Err(format!(r#"URL address does not have the form "host:port": {s}"#));
                }
                if !path.is_empty() {
                    return Err(format!("URL must not contain a path: {s}"));
                }
            }
            "unix" | "unixs" => {}
            _ => return Err(format!("URL scheme must be http, https, unix, or unixs: {s}")),
        }
        out.push(s.to_owned());
    }
    out.sort();
    Ok(out)
}

/// Formats a duration as Go's `time.Duration.String` does ("1m2.5s").
pub fn go_duration(d: std::time::Duration) -> String {
    let nanos = d.as_nanos();
    if nanos == 0 {
        return "0s".to_owned();
    }
    if nanos < 1_000 {
        return format!("{nanos}ns");
    }
    if nanos < 1_000_000 {
        return format!("{}µs", trim_fraction(nanos, 1_000));
    }
    if nanos < 1_000_000_000 {
        return format!("{}ms", trim_fraction(nanos, 1_000_000));
    }
    let secs_total = nanos / 1_000_000_000;
    let frac = nanos % 1_000_000_000;
    let hours = secs_total / 3600;
    let minutes = (secs_total % 3600) / 60;
    let secs = secs_total % 60;
    let mut out = String::new();
    if hours > 0 {
        out.push_str(&format!("{hours}h"));
    }
    if hours > 0 || minutes > 0 {
        out.push_str(&format!("{minutes}m"));
    }
    out.push_str(&trim_fraction(secs * 1_000_000_000 + frac, 1_000_000_000));
    out.push('s');
    out
}

fn trim_fraction(value: u128, unit: u128) -> String {
    let whole = value / unit;
    let frac = value % unit;
    if frac == 0 {
        return whole.to_string();
    }
    let width = unit.to_string().len() - 1;
    let digits = format!("{frac:0width$}");
    format!("{whole}.{}", digits.trim_end_matches('0'))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn json_escapes_html_like_go() {
        assert_eq!(go_json(&"<a&b>"), br#""\u003ca\u0026b\u003e""#.to_vec());
        assert_eq!(go_json_line(&1), b"1\n".to_vec());
    }

    #[test]
    fn member_urls_are_checked_like_gos_new_urls() {
        assert_eq!(go_new_urls(&[]).unwrap_err(), "no valid URLs given");
        assert_eq!(
            go_new_urls(&["not-a-url".into()]).unwrap_err(),
            "URL scheme must be http, https, unix, or unixs: not-a-url"
        );
        assert_eq!(
            go_new_urls(&["http://10.0.0.1".into()]).unwrap_err(),
            r#"URL address does not have the form "host:port": http://10.0.0.1"#
        );
        assert_eq!(
            go_new_urls(&["http://10.0.0.1:2380/x".into()]).unwrap_err(),
            "URL must not contain a path: http://10.0.0.1:2380/x"
        );
        assert_eq!(
            go_new_urls(&["http://b:2".into(), "http://a:1".into()]).unwrap(),
            vec!["http://a:1".to_owned(), "http://b:2".to_owned()]
        );
    }

    #[test]
    fn json_errors_read_like_gos() {
        let eof = serde_json::from_slice::<serde_json::Value>(b"").unwrap_err();
        assert_eq!(go_json_error(b"", &eof), "unexpected end of JSON input");
        let open = serde_json::from_slice::<serde_json::Value>(b"{").unwrap_err();
        assert_eq!(go_json_error(b"{", &open), "unexpected end of JSON input");
        let bad = serde_json::from_slice::<serde_json::Value>(b"xyz").unwrap_err();
        assert_eq!(go_json_error(b"xyz", &bad), "invalid character 'x' looking for beginning of value");
    }

    #[test]
    fn durations_print_like_go() {
        assert_eq!(go_duration(Duration::from_nanos(1_618_464_176)), "1.618464176s");
        assert_eq!(go_duration(Duration::from_secs(62)), "1m2s");
        assert_eq!(go_duration(Duration::from_millis(3_723_500)), "1h2m3.5s");
        assert_eq!(go_duration(Duration::from_micros(1500)), "1.5ms");
        assert_eq!(go_duration(Duration::ZERO), "0s");
    }
}
