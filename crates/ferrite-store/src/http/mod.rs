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
/// U+2029 escaped (they can only occur inside strings).
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
    resp.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    resp
}

pub const JSON: &str = "application/json";
pub const TEXT: &str = "text/plain; charset=utf-8";

/// Go's `http.Error`: a plain-text line and `nosniff`.
pub fn go_error(status: StatusCode, text: &str) -> Response {
    let mut resp = respond(status, TEXT, format!("{text}\n"));
    resp.headers_mut().insert(
        "x-content-type-options",
        HeaderValue::from_static("nosniff"),
    );
    resp
}

/// etcd's `allowMethod` refusal: 405 with the allowed methods.
pub fn method_not_allowed(allowed: &'static str) -> Response {
    let mut resp = go_error(StatusCode::METHOD_NOT_ALLOWED, "Method Not Allowed");
    resp.headers_mut()
        .insert(header::ALLOW, HeaderValue::from_static(allowed));
    resp
}

/// etcd's `httptypes.HTTPError`: `{"message": ...}` with a status.
pub fn http_error(status: StatusCode, message: &str) -> Response {
    #[derive(Serialize)]
    struct Message<'a> {
        message: &'a str,
    }
    respond(status, JSON, go_json_line(&Message { message }))
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
    fn durations_print_like_go() {
        assert_eq!(
            go_duration(Duration::from_nanos(1_618_464_176)),
            "1.618464176s"
        );
        assert_eq!(go_duration(Duration::from_secs(62)), "1m2s");
        assert_eq!(go_duration(Duration::from_millis(3_723_500)), "1h2m3.5s");
        assert_eq!(go_duration(Duration::from_micros(1500)), "1.5ms");
        assert_eq!(go_duration(Duration::ZERO), "0s");
    }
}
