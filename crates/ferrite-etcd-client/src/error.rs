//! What can go wrong talking to etcd.

use ferrite_etcd_api::v2;
use ferrite_etcd_api::v2::ErrorCode;

/// An error from one client call. Kept small (endpoints as strings) so
/// that it can be wrapped without boxing.
///
/// Callers that care about etcd's own answers match [`Error::Api`] (or use
/// [`Error::code`]); everything else says which endpoint failed and how.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// etcd answered with an error of the keys API (key not found, compare
    /// failed, index cleared, ...).
    #[error("etcd: {0}")]
    Api(v2::Error),

    /// etcd answered with an error status outside the keys API (members,
    /// health), with its message.
    #[error("etcd at {endpoint} answered {status}: {message}")]
    Status { endpoint: String, status: http::StatusCode, message: String },

    /// No endpoint could be reached, or a request broke in flight.
    /// `endpoint` is the last one tried; `tried` counts the endpoints tried.
    #[error("request to etcd at {endpoint} failed (tried {tried} endpoint(s))")]
    Transport {
        endpoint: String,
        tried: usize,
        #[source]
        source: reqwest::Error,
    },

    /// The answer was not the JSON etcd sends.
    #[error("could not decode the answer of {endpoint} (HTTP {status}): {body:?}")]
    Decode {
        endpoint: String,
        status: http::StatusCode,
        body: String,
        #[source]
        source: serde_json::Error,
    },

    /// An endpoint string is not an http(s) URL.
    #[error("invalid etcd endpoint {endpoint:?}: {reason}")]
    InvalidEndpoint { endpoint: String, reason: String },

    /// The client was built without endpoints.
    #[error("no etcd endpoints given")]
    NoEndpoints,
}

impl Error {
    /// The etcd error code, when etcd answered with a keys API error.
    pub fn code(&self) -> Option<ErrorCode> {
        match self {
            Error::Api(e) => e.code(),
            _ => None,
        }
    }

    /// True when etcd answered with the given error code.
    pub fn is(&self, code: ErrorCode) -> bool {
        self.code() == Some(code)
    }

    /// True when the request never reached a server: every endpoint refused
    /// the connection. Such a request can be retried without risk of
    /// applying it twice.
    pub fn is_unreachable(&self) -> bool {
        matches!(self, Error::Transport { source, .. } if source.is_connect())
    }
}
