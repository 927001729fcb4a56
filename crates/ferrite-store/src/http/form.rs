//! Request decoding exactly as Go's net/http does it for etcd: form values
//! (body before query), percent-decoding, path cleaning, boolean and
//! integer syntax. etcd's answers to malformed input are whatever Go's
//! parsers say, so the parsers here reproduce Go's, messages included.

/// Decoded form values in Go's order: body values first, then the query's.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Form {
    pairs: Vec<(String, String)>,
}

/// A form or query that Go's `url.ParseQuery` would reject.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FormError {
    #[error("invalid URL escape {0:?}")]
    Escape(String),
    #[error("invalid semicolon separator in query")]
    Semicolon,
}

impl Form {
    /// Parses the body (when it is a form) and the query into one form.
    pub fn parse(body: Option<&[u8]>, query: &str) -> Result<Form, FormError> {
        let mut form = Form::default();
        if let Some(body) = body {
            form.extend(&String::from_utf8_lossy(body))?;
        }
        form.extend(query)?;
        Ok(form)
    }

    fn extend(&mut self, raw: &str) -> Result<(), FormError> {
        // Go parses every pair and returns the first error after keeping
        // the good ones; etcd rejects the request on any error anyway.
        let mut first_error = None;
        for part in raw.split('&') {
            if part.is_empty() {
                continue;
            }
            if part.contains(';') {
                first_error.get_or_insert(FormError::Semicolon);
                continue;
            }
            let (k, v) = part.split_once('=').unwrap_or((part, ""));
            match (query_unescape(k), query_unescape(v)) {
                (Ok(k), Ok(v)) => self.pairs.push((k, v)),
                (Err(e), _) | (_, Err(e)) => {
                    first_error.get_or_insert(e);
                }
            }
        }
        first_error.map_or(Ok(()), Err)
    }

    /// Whether the key is present at all (even with an empty value).
    pub fn has(&self, key: &str) -> bool {
        self.pairs.iter().any(|(k, _)| k == key)
    }

    /// The first value for the key, as Go's `FormValue` ("" when absent).
    pub fn value(&self, key: &str) -> &str {
        self.get(key).unwrap_or("")
    }

    pub fn get(&self, key: &str) -> Option<&str> {
        self.pairs.iter().find(|(k, _)| k == key).map(|(_, v)| v.as_str())
    }
}

/// Go's `url.QueryUnescape`: `+` is a space, `%XX` a byte.
pub fn query_unescape(s: &str) -> Result<String, FormError> {
    unescape(s, true)
}

/// Go's `url.PathUnescape`: `%XX` a byte, `+` itself.
pub fn path_unescape(s: &str) -> Result<String, FormError> {
    unescape(s, false)
}

fn unescape(s: &str, plus_is_space: bool) -> Result<String, FormError> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' => {
                let hex = bytes.get(i + 1..i + 3).and_then(|h| {
                    let h = std::str::from_utf8(h).ok()?;
                    u8::from_str_radix(h, 16).ok().filter(|_| h.bytes().all(|c| c.is_ascii_hexdigit()))
                });
                match hex {
                    Some(b) => {
                        out.push(b);
                        i += 3;
                    }
                    None => {
                        let end = (i + 3).min(bytes.len());
                        return Err(FormError::Escape(String::from_utf8_lossy(&bytes[i..end]).into_owned()));
                    }
                }
            }
            b'+' if plus_is_space => {
                out.push(b' ');
                i += 1;
            }
            b => {
                out.push(b);
                i += 1;
            }
        }
    }
    Ok(String::from_utf8_lossy(&out).into_owned())
}

/// Go's `strconv.ParseBool`.
pub fn parse_bool(s: &str) -> Option<bool> {
    match s {
        "1" | "t" | "T" | "TRUE" | "true" | "True" => Some(true),
        "0" | "f" | "F" | "FALSE" | "false" | "False" => Some(false),
        _ => None,
    }
}

/// Go's `strconv.ParseUint(s, 10, 64)`.
pub fn parse_u64(s: &str) -> Option<u64> {
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    s.parse().ok()
}

/// Go's `path.Clean`: the shortest equivalent absolute path.
pub fn clean_path(p: &str) -> String {
    let mut parts: Vec<&str> = Vec::new();
    for part in p.split('/') {
        match part {
            "" | "." => {}
            ".." => {
                parts.pop();
            }
            other => parts.push(other),
        }
    }
    let mut out = String::with_capacity(p.len() + 1);
    for part in &parts {
        out.push('/');
        out.push_str(part);
    }
    if out.is_empty() {
        out.push('/');
    }
    out
}

/// The path Go's `ServeMux` redirects a request to when its path is not
/// canonical (`//`, `.`, `..`), or `None` when the path is canonical.
/// Like Go's `cleanPath`, a trailing slash is kept.
pub fn mux_redirect(path: &str) -> Option<String> {
    if path.is_empty() {
        return Some("/".to_owned());
    }
    let mut cleaned = clean_path(path);
    if path.ends_with('/') && cleaned != "/" {
        cleaned.push('/');
    }
    (cleaned != path).then_some(cleaned)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn body_values_come_before_query_values() {
        let form = Form::parse(Some(b"value=body"), "value=query&ttl=5").unwrap();
        assert_eq!(form.value("value"), "body");
        assert_eq!(form.value("ttl"), "5");
        assert!(!form.has("dir"));
        assert_eq!(form.value("dir"), "");
    }

    #[test]
    fn present_but_empty_is_present() {
        let form = Form::parse(None, "prevValue=&recursive").unwrap();
        assert!(form.has("prevValue"));
        assert!(form.has("recursive"));
        assert_eq!(form.value("recursive"), "");
    }

    #[test]
    fn decodes_plus_and_percent_like_go() {
        let form = Form::parse(None, "value=a+b%20c%2Bd").unwrap();
        assert_eq!(form.value("value"), "a b c+d");
        assert_eq!(path_unescape("/a+b%2Fc").unwrap(), "/a+b/c");
    }

    #[test]
    fn rejects_bad_escapes_and_semicolons_with_gos_messages() {
        assert_eq!(Form::parse(None, "value=%zz").unwrap_err().to_string(), r#"invalid URL escape "%zz""#);
        assert_eq!(Form::parse(None, "value=%4").unwrap_err().to_string(), r#"invalid URL escape "%4""#);
        assert_eq!(Form::parse(None, "a=1;b=2").unwrap_err().to_string(), "invalid semicolon separator in query");
    }

    #[test]
    fn bools_and_integers_follow_strconv() {
        for t in ["1", "t", "T", "TRUE", "true", "True"] {
            assert_eq!(parse_bool(t), Some(true), "{t}");
        }
        for f in ["0", "f", "F", "FALSE", "false", "False"] {
            assert_eq!(parse_bool(f), Some(false), "{f}");
        }
        for bad in ["", "yes", "tRUE", " true"] {
            assert_eq!(parse_bool(bad), None, "{bad:?}");
        }
        assert_eq!(parse_u64("42"), Some(42));
        assert_eq!(parse_u64("18446744073709551615"), Some(u64::MAX));
        for bad in ["", "-1", "+1", "1.0", "18446744073709551616", "0x10"] {
            assert_eq!(parse_u64(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn cleans_paths_like_go() {
        assert_eq!(clean_path(""), "/");
        assert_eq!(clean_path("/"), "/");
        assert_eq!(clean_path("//a/./b/"), "/a/b");
        assert_eq!(clean_path("/a/../../b"), "/b");
        assert_eq!(clean_path("a/b"), "/a/b");
    }

    #[test]
    fn mux_redirects_only_non_canonical_paths() {
        assert_eq!(mux_redirect("/v2/keys/foo"), None);
        assert_eq!(mux_redirect("/v2/keys/"), None);
        assert_eq!(mux_redirect("/v2/keys//foo"), Some("/v2/keys/foo".into()));
        assert_eq!(mux_redirect("/v2/keys/a/../b/"), Some("/v2/keys/b/".into()));
    }
}
