//! fleet's page tokens: URL-safe base64 (padded) of four little-endian
//! bytes, `{limit: u16, page: u16}`. The API answers a page of `limit`
//! items and a token for the next page while items may remain.

use base64::engine::general_purpose::URL_SAFE;
use base64::Engine as _;

/// Why a client's token is refused; the API answers 400 with the message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PageTokenError {
    #[error("too many values for page token")]
    TooMany,
    #[error("{0}")]
    Base64(String),
    #[error("unexpected EOF")]
    Short,
    #[error("token limit must be {0}")]
    Limit(u16),
    #[error("token page must be greater than zero")]
    PageZero,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PageToken {
    pub limit: u16,
    pub page: u16,
}

impl PageToken {
    pub fn first(limit: u16) -> PageToken {
        PageToken { limit, page: 1 }
    }

    pub fn encode(&self) -> String {
        let mut bytes = [0u8; 4];
        bytes[..2].copy_from_slice(&self.limit.to_le_bytes());
        bytes[2..].copy_from_slice(&self.page.to_le_bytes());
        URL_SAFE.encode(bytes)
    }

    /// Reads the `nextPageToken` query values; none means the first page.
    pub fn from_query(values: &[&str], limit: u16) -> Result<PageToken, PageTokenError> {
        let token = match values {
            [] => return Ok(PageToken::first(limit)),
            [one] => *one,
            _ => return Err(PageTokenError::TooMany),
        };
        let bytes = URL_SAFE.decode(token).map_err(|e| PageTokenError::Base64(go_base64_message(&e)))?;
        let [l0, l1, p0, p1, ..] = bytes[..] else {
            return Err(PageTokenError::Short);
        };
        let parsed = PageToken { limit: u16::from_le_bytes([l0, l1]), page: u16::from_le_bytes([p0, p1]) };
        if parsed.limit != limit {
            return Err(PageTokenError::Limit(limit));
        }
        if parsed.page == 0 {
            return Err(PageTokenError::PageZero);
        }
        Ok(parsed)
    }

    /// The slice of `items` on this page, and the next page's token when
    /// fleet would give one (also after an exactly full last page).
    pub fn page<'a, T>(&self, items: &'a [T]) -> (&'a [T], Option<PageToken>) {
        let limit = usize::from(self.limit);
        let start = (usize::from(self.page) - 1) * limit;
        let end = (start + limit).min(items.len());
        let slice = items.get(start..end).unwrap_or(&[]);
        let next = (start < items.len() && usize::from(self.page) * limit <= items.len())
            .then(|| PageToken { limit: self.limit, page: self.page + 1 });
        (slice, next)
    }
}

/// Go's wording for a base64 decoding failure.
fn go_base64_message(e: &base64::DecodeError) -> String {
    match e {
        base64::DecodeError::InvalidByte(at, _) | base64::DecodeError::InvalidLastSymbol(at, _) => {
            format!("illegal base64 data at input byte {at}")
        }
        base64::DecodeError::InvalidLength(at) => format!("illegal base64 data at input byte {at}"),
        base64::DecodeError::InvalidPadding => "illegal base64 data at input byte 0".to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_match_fleets_vectors() {
        assert_eq!(PageToken { limit: 100, page: 2 }.encode(), "ZAACAA==");
        assert_eq!(PageToken { limit: 12482, page: 0 }.encode(), "wjAAAA==");
        assert_eq!(PageToken { limit: 19, page: 11852 }.encode(), "EwBMLg==");
    }

    #[test]
    fn bad_tokens_are_refused_with_fleets_messages() {
        assert_eq!(PageToken::from_query(&["EwBMLg=="], 100), Err(PageTokenError::Limit(100)));
        assert_eq!(PageToken::from_query(&["EwBMLg=="], 100).unwrap_err().to_string(), "token limit must be 100");
        assert_eq!(PageToken::from_query(&["ZAAAAA=="], 100), Err(PageTokenError::PageZero));
        assert_eq!(PageToken::from_query(&["a", "b"], 100), Err(PageTokenError::TooMany));
        assert_eq!(PageToken::from_query(&["ZAA="], 100), Err(PageTokenError::Short));
        assert!(matches!(PageToken::from_query(&["!!!!"], 100), Err(PageTokenError::Base64(_))));
        assert_eq!(PageToken::from_query(&[], 100), Ok(PageToken::first(100)));
        assert_eq!(PageToken::from_query(&["ZAACAA=="], 100), Ok(PageToken { limit: 100, page: 2 }));
    }

    #[test]
    fn pages_and_the_next_token() {
        let items: Vec<u32> = (0..250).collect();
        let (first, next) = PageToken::first(100).page(&items);
        assert_eq!((first.len(), next), (100, Some(PageToken { limit: 100, page: 2 })));
        let (last, next) = PageToken { limit: 100, page: 3 }.page(&items);
        assert_eq!((last.len(), next), (50, None));
        // An exactly full last page still points at an empty next page.
        let items: Vec<u32> = (0..200).collect();
        let (_, next) = PageToken { limit: 100, page: 2 }.page(&items);
        assert_eq!(next, Some(PageToken { limit: 100, page: 3 }));
        let (empty, next) = PageToken { limit: 100, page: 3 }.page(&items);
        assert_eq!((empty.len(), next), (0, None));
    }
}
