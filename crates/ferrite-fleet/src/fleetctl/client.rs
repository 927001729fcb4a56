//! fleetctl's client of the HTTP API v1, over fleetd's unix socket
//! (`unix:///var/run/fleet.sock`, the default) or TCP (`http://host:port`).
//! One HTTP/1.1 connection per request: fleetctl makes few.

use std::time::Duration;

use http::{Method, Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper_util::rt::TokioIo;
use serde::de::DeserializeOwned;

use crate::schema::{ErrorBody, Machine, MachinePage, Unit, UnitPage, UnitState, UnitStatePage};

/// Where the API is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Endpoint {
    Unix(std::path::PathBuf),
    Tcp { authority: String },
}

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("URL scheme undefined")]
    NoScheme,
    #[error("unable to connect to host {host:?} with scheme {scheme:?}")]
    BadEndpoint { host: String, scheme: String },
    #[error("cannot reach the fleet API at {endpoint}: {source}")]
    Connect { endpoint: String, source: std::io::Error },
    #[error("request to the fleet API failed: {0}")]
    Http(#[from] hyper::Error),
    #[error("timed out after {0:?} waiting for the fleet API (--request-timeout)")]
    Timeout(Duration),
    /// fleet's clients render API errors as Google's API client did.
    #[error("googleapi: Error {code}: {message}")]
    Api { code: u16, message: String },
    #[error("googleapi: got HTTP response code {code} with body: {body}")]
    Status { code: u16, body: String },
    #[error("cannot decode the fleet API's answer: {0}")]
    Decode(#[from] serde_json::Error),
}

impl Endpoint {
    /// Reads `--endpoint` as fleetctl does: the first of a comma list.
    pub fn parse(value: &str) -> Result<Endpoint, ClientError> {
        let first = value.split(',').next().unwrap_or_default().trim();
        let (scheme, rest) = first.split_once("://").ok_or(ClientError::NoScheme)?;
        match scheme {
            "unix" => {
                let (host, path) = rest.split_once('/').unwrap_or((rest, ""));
                if !host.is_empty() {
                    return Err(ClientError::BadEndpoint { host: host.to_owned(), scheme: scheme.to_owned() });
                }
                Ok(Endpoint::Unix(std::path::PathBuf::from(format!("/{path}"))))
            }
            "http" => Ok(Endpoint::Tcp { authority: rest.trim_end_matches('/').to_owned() }),
            other => Err(ClientError::BadEndpoint { host: rest.to_owned(), scheme: other.to_owned() }),
        }
    }
}

/// The API client.
#[derive(Debug, Clone)]
pub struct ApiClient {
    endpoint: Endpoint,
    timeout: Duration,
}

impl ApiClient {
    /// A client whose every request fails after `timeout`.
    pub fn new(endpoint: Endpoint, timeout: Duration) -> ApiClient {
        ApiClient { endpoint, timeout }
    }

    async fn request(
        &self,
        method: Method,
        path: &str,
        body: Option<String>,
    ) -> Result<(StatusCode, Bytes), ClientError> {
        tokio::time::timeout(self.timeout, self.request_once(method, path, body))
            .await
            .map_err(|_| ClientError::Timeout(self.timeout))?
    }

    async fn request_once(
        &self,
        method: Method,
        path: &str,
        body: Option<String>,
    ) -> Result<(StatusCode, Bytes), ClientError> {
        let uri = format!("/fleet/v1/{path}");
        let (host, endpoint_text) = match &self.endpoint {
            Endpoint::Unix(socket) => ("localhost".to_owned(), format!("unix://{}", socket.display())),
            Endpoint::Tcp { authority } => (authority.clone(), format!("http://{authority}")),
        };
        let mut request = Request::builder().method(method).uri(uri).header(http::header::HOST, host);
        if body.is_some() {
            request = request.header(http::header::CONTENT_TYPE, "application/json");
        }
        let request =
            request.body(Full::new(Bytes::from(body.unwrap_or_default()))).expect("requests built here are valid");
        let connect_err = |source| ClientError::Connect { endpoint: endpoint_text.clone(), source };
        let response = match &self.endpoint {
            Endpoint::Unix(socket) => {
                let stream = tokio::net::UnixStream::connect(socket).await.map_err(connect_err)?;
                send(TokioIo::new(stream), request).await?
            }
            Endpoint::Tcp { authority } => {
                let stream = tokio::net::TcpStream::connect(authority.as_str()).await.map_err(connect_err)?;
                send(TokioIo::new(stream), request).await?
            }
        };
        Ok(response)
    }

    async fn get<T: DeserializeOwned>(&self, path: &str) -> Result<Option<T>, ClientError> {
        let (status, body) = self.request(Method::GET, path, None).await?;
        if status == StatusCode::NOT_FOUND {
            return Ok(None);
        }
        check(status, &body)?;
        Ok(Some(serde_json::from_slice(&body)?))
    }

    /// Follows `nextPageToken` until the last page.
    async fn all_pages<P: DeserializeOwned, T>(
        &self,
        path: &str,
        split: impl Fn(P) -> (Vec<T>, String),
    ) -> Result<Vec<T>, ClientError> {
        let mut out = Vec::new();
        let mut token = String::new();
        loop {
            let url = if token.is_empty() { path.to_owned() } else { format!("{path}?nextPageToken={token}") };
            let page: P = self.get(&url).await?.unwrap_or_else(|| serde_json::from_str("{}").expect("empty page"));
            let (items, next) = split(page);
            out.extend(items);
            if next.is_empty() {
                return Ok(out);
            }
            token = next;
        }
    }

    pub async fn units(&self) -> Result<Vec<Unit>, ClientError> {
        self.all_pages("units", |p: UnitPage| (p.units, p.next_page_token)).await
    }

    pub async fn unit(&self, name: &str) -> Result<Option<Unit>, ClientError> {
        self.get(&format!("units/{name}")).await
    }

    pub async fn unit_states(&self) -> Result<Vec<UnitState>, ClientError> {
        self.all_pages("state", |p: UnitStatePage| (p.states, p.next_page_token)).await
    }

    pub async fn machines(&self) -> Result<Vec<Machine>, ClientError> {
        self.all_pages("machines", |p: MachinePage| (p.machines, p.next_page_token)).await
    }

    /// `PUT units/<name>` with a unit (create, replace or desired state).
    pub async fn set_unit(&self, unit: &Unit) -> Result<(), ClientError> {
        let body = serde_json::to_string(unit)?;
        let (status, answer) = self.request(Method::PUT, &format!("units/{}", unit.name), Some(body)).await?;
        check(status, &answer)
    }

    pub async fn set_desired_state(&self, name: &str, state: &str) -> Result<(), ClientError> {
        let unit = Unit { name: name.to_owned(), desired_state: state.to_owned(), ..Unit::default() };
        self.set_unit(&unit).await
    }

    /// `DELETE units/<name>`; `false` when there was no such unit.
    pub async fn destroy_unit(&self, name: &str) -> Result<bool, ClientError> {
        let (status, body) = self.request(Method::DELETE, &format!("units/{name}"), None).await?;
        if status == StatusCode::NOT_FOUND {
            return Ok(false);
        }
        check(status, &body).map(|()| true)
    }
}

async fn send<I>(io: I, request: Request<Full<Bytes>>) -> Result<(StatusCode, Bytes), ClientError>
where
    I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    let (mut sender, connection) = hyper::client::conn::http1::handshake(io).await?;
    tokio::spawn(async move {
        if let Err(e) = connection.await {
            tracing::debug!(error = %e, "fleet API connection ended");
        }
    });
    let response = sender.send_request(request).await?;
    let status = response.status();
    let body = response.into_body().collect().await?.to_bytes();
    Ok((status, body))
}

/// An error status as fleet's clients report it.
fn check(status: StatusCode, body: &[u8]) -> Result<(), ClientError> {
    if status.is_success() {
        return Ok(());
    }
    match serde_json::from_slice::<ErrorBody>(body) {
        Ok(e) if !e.error.message.is_empty() => Err(ClientError::Api { code: e.error.code, message: e.error.message }),
        _ => Err(ClientError::Status { code: status.as_u16(), body: String::from_utf8_lossy(body).into_owned() }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints() {
        assert_eq!(
            Endpoint::parse("unix:///var/run/fleet.sock").unwrap(),
            Endpoint::Unix("/var/run/fleet.sock".into())
        );
        assert_eq!(
            Endpoint::parse("http://10.0.0.1:54728,http://10.0.0.2:54728").unwrap(),
            Endpoint::Tcp { authority: "10.0.0.1:54728".into() }
        );
        assert_eq!(Endpoint::parse("10.0.0.1:54728").unwrap_err().to_string(), "URL scheme undefined");
        assert_eq!(
            Endpoint::parse("unix://host/x.sock").unwrap_err().to_string(),
            "unable to connect to host \"host\" with scheme \"unix\""
        );
    }
}
