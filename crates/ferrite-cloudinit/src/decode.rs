//! `write_files` content encodings, as coreos-cloudinit decodes them.

use std::io::Read as _;

use base64::Engine as _;

/// Why content could not be decoded.
#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    /// Not base64.
    #[error("unable to decode base64: {0}")]
    Base64(#[from] base64::DecodeError),
    /// Not gzip.
    #[error("unable to decode gzip: {0}")]
    Gzip(#[from] std::io::Error),
    /// An encoding nobody knows.
    #[error("unsupported encoding {0:?}")]
    Unsupported(String),
}

/// Decodes `content` written with `encoding` (empty: as is).
pub fn decode_content(content: &[u8], encoding: &str) -> Result<Vec<u8>, DecodeError> {
    match encoding {
        "" => Ok(content.to_vec()),
        "b64" | "base64" => base64(content),
        "gz" | "gzip" => gunzip(content),
        "gz+base64" | "gzip+base64" | "gz+b64" | "gzip+b64" => gunzip(&base64(content)?),
        other => Err(DecodeError::Unsupported(other.to_owned())),
    }
}

fn base64(content: &[u8]) -> Result<Vec<u8>, DecodeError> {
    // Go's StdEncoding ignores line breaks inside the text.
    let compact: Vec<u8> = content.iter().copied().filter(|c| *c != b'\n' && *c != b'\r').collect();
    Ok(base64::engine::general_purpose::STANDARD.decode(compact)?)
}

fn gunzip(bytes: &[u8]) -> Result<Vec<u8>, DecodeError> {
    let mut out = Vec::new();
    flate2::read::GzDecoder::new(bytes).read_to_end(&mut out)?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_form() {
        assert_eq!(decode_content(b"hi", "").unwrap(), b"hi");
        assert_eq!(decode_content(b"aGVsbG8K", "base64").unwrap(), b"hello\n");
        assert_eq!(decode_content(b"aGVsbG8K", "b64").unwrap(), b"hello\n");
        for enc in ["gz+base64", "gzip+base64", "gz+b64", "gzip+b64"] {
            assert_eq!(decode_content(b"H4sIAOC3tVQAA8tIzcnJ5wIAIDA6NgYAAAA=", enc).unwrap(), b"hello\n", "{enc}");
        }
        assert!(decode_content(b"hello", "gzip").is_err());
        assert!(decode_content(b"!!!", "base64").is_err());
        assert!(decode_content(b"hello", "custom").is_err());
    }
}
