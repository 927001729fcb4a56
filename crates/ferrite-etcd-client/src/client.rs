//! The client handle, its endpoints and the one place requests are sent.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use ferrite_etcd_api::v2;
use http::{HeaderMap, Method, StatusCode};
use serde::de::DeserializeOwned;
use url::Url;

use crate::Error;

/// The path under an endpoint where etcd serves the v2 keys API.
pub const KEYS_PREFIX: &str = "/v2/keys";

const DEFAULT_REQUEST_TIMEOUT: Duration = Duration::from_secs(5);
const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(2);

/// An etcd v2 client over one or more endpoints of the same cluster.
///
/// Cloning is cheap and clones share the remembered endpoint. A request goes
/// to the endpoint that answered last; when it cannot connect there it tries
/// the next one, in order, and remembers the first that answers. Only
/// connection failures move to the next endpoint: a request that reached a
/// server is never sent twice.
#[derive(Debug, Clone)]
pub struct Client {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    http: reqwest::Client,
    endpoints: Vec<Url>,
    current: AtomicUsize,
    keys_prefix: Vec<String>,
    request_timeout: Duration,
}

/// Builds a [`Client`] with settings other than the defaults.
#[derive(Debug, Clone)]
pub struct ClientBuilder {
    endpoints: Vec<String>,
    keys_prefix: String,
    request_timeout: Duration,
    connect_timeout: Duration,
}

impl ClientBuilder {
    /// The path under each endpoint where the keys API lives:
    /// [`KEYS_PREFIX`] for etcd, `""` for a discovery service, which serves
    /// keys at the token URL itself.
    pub fn keys_prefix(mut self, prefix: &str) -> ClientBuilder {
        prefix.clone_into(&mut self.keys_prefix);
        self
    }

    /// Time limit for every request except watches (default 5 s).
    pub fn request_timeout(mut self, timeout: Duration) -> ClientBuilder {
        self.request_timeout = timeout;
        self
    }

    /// Time limit for opening a connection to one endpoint (default 2 s).
    pub fn connect_timeout(mut self, timeout: Duration) -> ClientBuilder {
        self.connect_timeout = timeout;
        self
    }

    pub fn build(self) -> Result<Client, Error> {
        if self.endpoints.is_empty() {
            return Err(Error::NoEndpoints);
        }
        let endpoints = self.endpoints.iter().map(|e| parse_endpoint(e)).collect::<Result<Vec<_>, _>>()?;
        let http = reqwest::Client::builder()
            .connect_timeout(self.connect_timeout)
            // Watches have no time limit: keepalive finds a peer that died
            // without closing the connection.
            .tcp_keepalive(Duration::from_secs(30))
            // Only the endpoints we were given: never a proxy from the
            // environment.
            .no_proxy()
            .build()
            .map_err(|source| Error::Transport { endpoint: endpoints[0].to_string(), tried: 0, source })?;
        Ok(Client {
            inner: Arc::new(Inner {
                http,
                endpoints,
                current: AtomicUsize::new(0),
                keys_prefix: segments(&self.keys_prefix).map(str::to_owned).collect(),
                request_timeout: self.request_timeout,
            }),
        })
    }
}

fn parse_endpoint(endpoint: &str) -> Result<Url, Error> {
    let invalid = |reason: &str| Error::InvalidEndpoint { endpoint: endpoint.to_owned(), reason: reason.to_owned() };
    let url = Url::parse(endpoint).map_err(|e| invalid(&e.to_string()))?;
    if url.scheme() != "http" && url.scheme() != "https" {
        return Err(invalid("the scheme must be http or https"));
    }
    if url.host().is_none() {
        return Err(invalid("no host"));
    }
    if url.query().is_some() || url.fragment().is_some() {
        return Err(invalid("an endpoint has no query or fragment"));
    }
    Ok(url)
}

/// The non-empty segments of a slash-separated path, as Go's `path.Join`
/// would keep them.
pub(crate) fn segments(path: &str) -> impl Iterator<Item = &str> {
    path.split('/').filter(|s| !s.is_empty())
}

/// Which part of etcd's HTTP API a request is for: decides the path and how
/// the answer is read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Api {
    /// The keys API, under the client's keys prefix.
    Keys,
    /// Anything else (`/v2/members`, `/health`, `/version`), from the root.
    Root,
}

/// One request, before an endpoint is chosen.
#[derive(Debug)]
pub(crate) struct Call<'a> {
    pub method: Method,
    pub api: Api,
    pub path: &'a str,
    pub query: Vec<(&'static str, String)>,
    pub form: Option<Vec<(&'static str, String)>>,
    pub json: Option<serde_json::Value>,
    /// Watches wait as long as etcd makes them wait.
    pub wait: bool,
}

impl<'a> Call<'a> {
    pub fn new(method: Method, api: Api, path: &'a str) -> Call<'a> {
        Call { method, api, path, query: Vec::new(), form: None, json: None, wait: false }
    }
}

/// The headers etcd sets on every keys answer.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EtcdHeaders {
    /// `X-Etcd-Index`: the store's index when the answer was made. For a
    /// watch it is the index when the watch began.
    pub etcd_index: u64,
    /// `X-Raft-Index`.
    pub raft_index: Option<u64>,
    /// `X-Raft-Term`.
    pub raft_term: Option<u64>,
    /// `X-Etcd-Cluster-Id`.
    pub cluster_id: Option<String>,
}

impl EtcdHeaders {
    fn from_headers(headers: &HeaderMap) -> EtcdHeaders {
        let text = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
        let number = |name: &str| text(name).and_then(|v| v.trim().parse().ok());
        EtcdHeaders {
            etcd_index: number("x-etcd-index").unwrap_or(0),
            raft_index: number("x-raft-index"),
            raft_term: number("x-raft-term"),
            cluster_id: text("x-etcd-cluster-id").map(str::to_owned),
        }
    }
}

/// A successful answer of the keys API: etcd's event and its headers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    pub event: v2::Event,
    pub headers: EtcdHeaders,
}

impl Response {
    /// The node the event is about.
    pub fn node(&self) -> &v2::Node {
        &self.event.node
    }

    /// `X-Etcd-Index` of the answer.
    pub fn etcd_index(&self) -> u64 {
        self.headers.etcd_index
    }
}

/// A raw answer read whole.
pub(crate) struct Answer {
    pub endpoint: Url,
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: bytes::Bytes,
}

impl Answer {
    pub fn decode<T: DeserializeOwned>(&self) -> Result<T, Error> {
        serde_json::from_slice(&self.body).map_err(|source| Error::Decode {
            endpoint: self.endpoint.to_string(),
            status: self.status,
            body: String::from_utf8_lossy(&self.body).into_owned(),
            source,
        })
    }

    /// Reads a keys API answer: an event on success, etcd's error otherwise.
    pub fn into_keys_response(self) -> Result<Response, Error> {
        if self.status.is_success() {
            let event = self.decode()?;
            Ok(Response { event, headers: EtcdHeaders::from_headers(&self.headers) })
        } else {
            Err(Error::Api(self.decode()?))
        }
    }

    /// Fails with [`Error::Status`] on an error status, taking the message
    /// from etcd's `{"message": ...}` body when there is one.
    pub fn check_status(self) -> Result<Answer, Error> {
        if self.status.is_success() {
            return Ok(self);
        }
        #[derive(serde::Deserialize)]
        struct Message {
            message: String,
        }
        let message = serde_json::from_slice::<Message>(&self.body)
            .map(|m| m.message)
            .unwrap_or_else(|_| String::from_utf8_lossy(&self.body).trim().to_owned());
        Err(Error::Status { endpoint: self.endpoint.to_string(), status: self.status, message })
    }
}

impl Client {
    /// A client for the given endpoints (`http://host:port`), with the
    /// default settings.
    pub fn new<I, S>(endpoints: I) -> Result<Client, Error>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        Client::builder(endpoints).build()
    }

    pub fn builder<I, S>(endpoints: I) -> ClientBuilder
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        ClientBuilder {
            endpoints: endpoints.into_iter().map(|e| e.as_ref().to_owned()).collect(),
            keys_prefix: KEYS_PREFIX.to_owned(),
            request_timeout: DEFAULT_REQUEST_TIMEOUT,
            connect_timeout: DEFAULT_CONNECT_TIMEOUT,
        }
    }

    /// All endpoints, in the order given.
    pub fn endpoints(&self) -> &[Url] {
        &self.inner.endpoints
    }

    /// The endpoint the next request goes to first: the last one that
    /// answered.
    pub fn current_endpoint(&self) -> &Url {
        &self.inner.endpoints[self.current_index()]
    }

    fn current_index(&self) -> usize {
        self.inner.current.load(Ordering::Relaxed) % self.inner.endpoints.len()
    }

    fn url(&self, endpoint: &Url, api: Api, path: &str) -> Url {
        let mut url = endpoint.clone();
        if let Ok(mut segs) = url.path_segments_mut() {
            segs.pop_if_empty();
            if api == Api::Keys {
                segs.extend(&self.inner.keys_prefix);
            }
            segs.extend(segments(path));
        }
        url
    }

    /// Sends a request to the first endpoint that accepts a connection,
    /// starting with the remembered one.
    async fn send_with<F>(&self, build: F) -> Result<(Url, reqwest::Response), Error>
    where
        F: Fn(&Url) -> reqwest::RequestBuilder,
    {
        let n = self.inner.endpoints.len();
        let start = self.current_index();
        let mut last = None;
        for i in 0..n {
            let index = (start + i) % n;
            let endpoint = &self.inner.endpoints[index];
            match build(endpoint).send().await {
                Ok(response) => {
                    if index != start {
                        tracing::info!(%endpoint, "switched to etcd endpoint");
                        self.inner.current.store(index, Ordering::Relaxed);
                    }
                    return Ok((endpoint.clone(), response));
                }
                Err(source) if source.is_connect() => {
                    tracing::warn!(%endpoint, error = %source, "cannot connect to etcd endpoint");
                    last = Some((endpoint.clone(), source));
                }
                Err(source) => return Err(Error::Transport { endpoint: endpoint.to_string(), tried: i + 1, source }),
            }
        }
        let (endpoint, source) = last.expect("at least one endpoint");
        Err(Error::Transport { endpoint: endpoint.to_string(), tried: n, source })
    }

    /// Sends `call` and reads the whole answer.
    pub(crate) async fn execute(&self, call: &Call<'_>) -> Result<Answer, Error> {
        let (endpoint, response) = self
            .send_with(|endpoint| {
                let mut request = self.inner.http.request(call.method.clone(), self.url(endpoint, call.api, call.path));
                if !call.query.is_empty() {
                    request = request.query(&call.query);
                }
                if let Some(form) = &call.form {
                    request = request.form(form);
                }
                if let Some(json) = &call.json {
                    request = request.json(json);
                }
                if !call.wait {
                    request = request.timeout(self.inner.request_timeout);
                }
                request
            })
            .await?;
        let status = response.status();
        let headers = response.headers().clone();
        let body = response.bytes().await.map_err(|source| Error::Transport {
            endpoint: endpoint.to_string(),
            tried: 1,
            source,
        })?;
        Ok(Answer { endpoint, status, headers, body })
    }

    /// Sends a request as given (method, absolute path, raw query string,
    /// headers, body) and hands back the answer unread, to stream it on.
    /// No time limit applies, since a forwarded watch waits. This is what a
    /// proxy in front of the store (the discovery service) uses.
    pub async fn forward(
        &self,
        method: Method,
        path: &str,
        query: Option<&str>,
        headers: &HeaderMap,
        body: bytes::Bytes,
    ) -> Result<reqwest::Response, Error> {
        let (_, response) = self
            .send_with(|endpoint| {
                let mut url = self.url(endpoint, Api::Root, path);
                url.set_query(query);
                self.inner.http.request(method.clone(), url).headers(headers.clone()).body(body.clone())
            })
            .await?;
        Ok(response)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_join_prefix_and_key_as_path_join_does() {
        let client = Client::new(["http://127.0.0.1:2379"]).unwrap();
        let ep = client.current_endpoint().clone();
        assert_eq!(client.url(&ep, Api::Keys, "/foo/bar/").as_str(), "http://127.0.0.1:2379/v2/keys/foo/bar");
        assert_eq!(client.url(&ep, Api::Keys, "a b?c").as_str(), "http://127.0.0.1:2379/v2/keys/a%20b%3Fc");
        assert_eq!(client.url(&ep, Api::Keys, "/").as_str(), "http://127.0.0.1:2379/v2/keys");
        assert_eq!(client.url(&ep, Api::Root, "/v2/members").as_str(), "http://127.0.0.1:2379/v2/members");

        let discovery = Client::builder(["http://127.0.0.1:8087/base/"]).keys_prefix("").build().unwrap();
        let ep = discovery.current_endpoint().clone();
        assert_eq!(
            discovery.url(&ep, Api::Keys, "/abc/_config/size").as_str(),
            "http://127.0.0.1:8087/base/abc/_config/size"
        );
    }

    #[test]
    fn endpoints_are_checked() {
        assert!(matches!(Client::new(Vec::<String>::new()), Err(Error::NoEndpoints)));
        for bad in ["127.0.0.1:2379", "unix:///x", "http://h:1/?a=b", "nonsense"] {
            assert!(matches!(Client::new([bad]), Err(Error::InvalidEndpoint { .. })), "{bad}");
        }
    }

    #[test]
    fn headers_are_read() {
        let mut headers = HeaderMap::new();
        headers.insert("x-etcd-index", "42".parse().unwrap());
        headers.insert("x-raft-index", "7".parse().unwrap());
        headers.insert("x-raft-term", "2".parse().unwrap());
        headers.insert("x-etcd-cluster-id", "cdf818194e3a8c32".parse().unwrap());
        assert_eq!(
            EtcdHeaders::from_headers(&headers),
            EtcdHeaders {
                etcd_index: 42,
                raft_index: Some(7),
                raft_term: Some(2),
                cluster_id: Some("cdf818194e3a8c32".into()),
            }
        );
        assert_eq!(EtcdHeaders::from_headers(&HeaderMap::new()).etcd_index, 0);
    }

    mod over_http {
        use super::*;
        use crate::fake_server::{dead_endpoint, event, FakeServer};
        use crate::GetOptions;

        const GOT: &str = r#"{"action":"get","node":{"key":"/k","value":"v","modifiedIndex":3,"createdIndex":3}}"#;

        #[tokio::test]
        async fn fails_over_to_the_next_endpoint_and_remembers_it() {
            let live = FakeServer::start(|_, _| event(200, 9, GOT)).await;
            let dead = dead_endpoint().await;
            let client = Client::new([dead.as_str(), live.url.as_str()]).unwrap();
            assert_eq!(client.current_endpoint().as_str(), format!("{dead}/"));

            let response = client.get("/k", &GetOptions::default()).await.unwrap();
            assert_eq!(response.node().value.as_deref(), Some("v"));
            assert_eq!(response.etcd_index(), 9);
            assert_eq!(client.current_endpoint().as_str(), format!("{}/", live.url));

            // A clone shares the remembered endpoint.
            let clone = client.clone();
            clone.get("/k", &GetOptions::default()).await.unwrap();
            assert_eq!(clone.current_endpoint(), client.current_endpoint());
            assert_eq!(live.seen().len(), 2);
        }

        #[tokio::test]
        async fn names_the_last_endpoint_when_none_answers() {
            let a = dead_endpoint().await;
            let b = dead_endpoint().await;
            let client = Client::new([a.as_str(), b.as_str()]).unwrap();
            let err = client.get("/k", &GetOptions::default()).await.unwrap_err();
            match &err {
                Error::Transport { endpoint, tried, .. } => {
                    assert_eq!(endpoint, &format!("{b}/"));
                    assert_eq!(*tried, 2);
                }
                other => panic!("{other:?}"),
            }
            assert!(err.is_unreachable());
        }

        #[tokio::test]
        async fn does_not_fail_over_on_an_etcd_error() {
            let first = FakeServer::start(|_, _| {
                event(404, 4, r#"{"errorCode":100,"message":"Key not found","cause":"/k","index":4}"#)
            })
            .await;
            let second = FakeServer::start(|_, _| event(200, 9, GOT)).await;
            let client = Client::new([first.url.as_str(), second.url.as_str()]).unwrap();
            let err = client.get("/k", &GetOptions::default()).await.unwrap_err();
            assert!(err.is(ferrite_etcd_api::v2::ErrorCode::KeyNotFound));
            assert!(second.seen().is_empty());
        }

        #[tokio::test]
        async fn forward_passes_method_path_query_and_body() {
            let server = FakeServer::start(|_, _| event(201, 5, "{}")).await;
            let client = Client::new([server.url.as_str()]).unwrap();
            let mut headers = HeaderMap::new();
            headers.insert("content-type", "application/x-www-form-urlencoded".parse().unwrap());
            let response = client
                .forward(
                    Method::PUT,
                    "/v2/keys/_etcd/registry/tok/abc",
                    Some("prevExist=false"),
                    &headers,
                    bytes::Bytes::from_static(b"value=x"),
                )
                .await
                .unwrap();
            assert_eq!(response.status(), StatusCode::CREATED);
            let seen = &server.seen()[0];
            assert_eq!(seen.method, Method::PUT);
            assert_eq!(seen.path, "/v2/keys/_etcd/registry/tok/abc");
            assert_eq!(seen.param("prevExist"), Some("false"));
            assert_eq!(seen.body, "value=x");
            assert_eq!(seen.content_type.as_deref(), Some("application/x-www-form-urlencoded"));
        }
    }
}
