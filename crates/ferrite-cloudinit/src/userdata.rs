//! What kind of user data a machine was given: a `#cloud-config` document,
//! a `#!` script, an Ignition config, or nothing. Gzip-compressed user data
//! is decompressed first. Pure: no I/O.

use std::io::Read as _;

/// User data, classified.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UserData {
    /// No user data at all.
    Empty,
    /// A cloud-config document (CRLF line ends already made LF).
    CloudConfig(String),
    /// A script to run once.
    Script(Vec<u8>),
    /// An Ignition config: recognised, not supported.
    Ignition,
    /// Anything else.
    Unknown,
}

/// User data that could not be read.
#[derive(Debug, thiserror::Error)]
pub enum UserDataError {
    /// Gzip magic, but not a gzip stream.
    #[error("user data is gzip-compressed but cannot be decompressed")]
    Gzip(#[source] std::io::Error),
}

/// Decompresses gzip-compressed user data; anything else is returned as is.
pub fn decompress(raw: &[u8]) -> Result<Vec<u8>, UserDataError> {
    if raw.starts_with(&[0x1f, 0x8b]) {
        let mut out = Vec::new();
        flate2::read::MultiGzDecoder::new(raw).read_to_end(&mut out).map_err(UserDataError::Gzip)?;
        Ok(out)
    } else {
        Ok(raw.to_vec())
    }
}

/// Classifies (decompressed) user data as coreos-cloudinit does.
pub fn classify(data: &[u8]) -> UserData {
    if data.is_empty() {
        return UserData::Empty;
    }
    let first_line = data.split(|&b| b == b'\n').next().unwrap_or_default();
    if first_line.starts_with(b"#!") {
        return UserData::Script(data.to_vec());
    }
    let Ok(text) = std::str::from_utf8(data) else { return UserData::Unknown };
    if is_cloud_config(text) {
        return UserData::CloudConfig(text.replace("\r\n", "\n"));
    }
    if is_ignition(text) {
        return UserData::Ignition;
    }
    UserData::Unknown
}

/// The first line, trailing whitespace (and a CR) trimmed, is `#cloud-config`.
pub fn is_cloud_config(text: &str) -> bool {
    text.split('\n').next().unwrap_or_default().trim_end() == "#cloud-config"
}

/// A JSON object with `ignitionVersion` or `ignition.version`.
pub fn is_ignition(text: &str) -> bool {
    let Ok(serde_json::Value::Object(object)) = serde_json::from_str::<serde_json::Value>(text) else {
        return false;
    };
    object.get("ignitionVersion").is_some_and(|v| v.is_number())
        || object.get("ignition").and_then(|i| i.get("version")).is_some_and(|v| v.is_string())
}

#[cfg(test)]
mod tests {
    use std::io::Write as _;

    use super::*;

    #[test]
    fn kinds() {
        assert_eq!(classify(b""), UserData::Empty);
        assert_eq!(classify(b"#!/bin/sh\necho hi\n"), UserData::Script(b"#!/bin/sh\necho hi\n".to_vec()));
        assert_eq!(
            classify(b"#cloud-config\r\nhostname: a\r\n"),
            UserData::CloudConfig("#cloud-config\nhostname: a\n".into())
        );
        assert_eq!(
            classify(b"#cloud-config  \nhostname: a"),
            UserData::CloudConfig("#cloud-config  \nhostname: a".into())
        );
        assert_eq!(classify(br#"{"ignition":{"version":"2.2.0"}}"#), UserData::Ignition);
        assert_eq!(classify(br#"{"ignitionVersion":1}"#), UserData::Ignition);
        assert_eq!(classify(b"{}"), UserData::Unknown);
        assert_eq!(classify(b"# cloud-config\n"), UserData::Unknown);
    }

    #[test]
    fn gzip_is_undone() {
        let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        encoder.write_all(b"#cloud-config\nhostname: x\n").unwrap();
        let gz = encoder.finish().unwrap();
        assert_eq!(decompress(&gz).unwrap(), b"#cloud-config\nhostname: x\n");
        assert!(decompress(&[0x1f, 0x8b, 1, 2, 3]).is_err());
        assert_eq!(decompress(b"plain").unwrap(), b"plain");
    }
}
