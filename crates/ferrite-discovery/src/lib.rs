//! The cluster discovery service: the discovery.etcd.io protocol.
//!
//! `GET /new?size=N` makes a token (32 random hex digits), stores `N` at
//! `/_etcd/registry/<token>/_config/size` and answers the token URL,
//! `<base URL>/<token>`. Members booting with `--discovery <token URL>` then
//! read and write under that URL, and every such request is passed to the
//! backing store's keys API at `/v2/keys/_etcd/registry/<token>[/<key>]`,
//! with its method, query string, headers and body, and the store's answer
//! comes back as it is, streamed (watches wait). The routes, methods and
//! answers are those of coreos/discovery.etcd.io.
//!
//! The service keeps no state of its own: everything is in the backing
//! store (ferrite-store or etcd), reached through `ferrite-etcd-client`.

use std::future::Future;
use std::net::SocketAddr;
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderName, Method, StatusCode, Uri};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::any;
use axum::Router;
use ferrite_etcd_client::{Client, DeleteOptions};
use tokio::net::TcpListener;

/// Where the store keeps tokens.
pub const REGISTRY: &str = "/_etcd/registry";

/// How long in-flight requests (watches) may go on after shutdown is asked.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(2);

/// The service's settings.
#[derive(Debug, Clone)]
pub struct Config {
    /// The backing store's client URLs.
    pub etcd_endpoints: Vec<String>,
    /// The base URL announced in token URLs (`scheme://host[:port]`, no
    /// path); the listener's own address when not set.
    pub host: Option<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("invalid --host {host:?}: {reason}")]
    InvalidHost { host: String, reason: String },
    #[error("cannot use the backing store's endpoints")]
    Etcd(#[source] ferrite_etcd_client::Error),
    #[error("serving HTTP failed")]
    Serve(#[source] std::io::Error),
}

/// Checks an advertised base URL as discovery.etcd.io does: a scheme and a
/// host, and no path, query or fragment. Returns `scheme://host[:port]`.
pub fn host_only_url(given: &str) -> Result<String, Error> {
    let invalid = |reason: String| Error::InvalidHost { host: given.to_owned(), reason };
    let url = url::Url::parse(given).map_err(|e| invalid(e.to_string()))?;
    if url.path() != "/" && !url.path().is_empty() {
        return Err(invalid(format!("expected a URL without path ({})", url.path())));
    }
    if let Some(query) = url.query() {
        return Err(invalid(format!("expected a URL without query (?{query})")));
    }
    if let Some(fragment) = url.fragment() {
        return Err(invalid(format!("expected a URL without fragment ({fragment})")));
    }
    let Some(host) = url.host_str() else {
        return Err(invalid("expected a host name (none given)".to_owned()));
    };
    let host = match url.port() {
        Some(port) => format!("{host}:{port}"),
        None => host.to_owned(),
    };
    Ok(format!("{}://{}", url.scheme(), host))
}

#[derive(Debug, Clone)]
struct Service {
    etcd: Client,
    base_url: String,
}

/// Serves the discovery protocol on `listener` until `shutdown` completes.
/// Requests still waiting then (watches) get [`SHUTDOWN_GRACE`] to finish.
pub async fn run(
    config: Config,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), Error> {
    let local: SocketAddr = listener.local_addr().map_err(Error::Serve)?;
    let base_url = match &config.host {
        Some(host) => host_only_url(host)?,
        None => format!("http://{local}"),
    };
    let etcd = Client::new(&config.etcd_endpoints).map_err(Error::Etcd)?;
    tracing::info!(
        etcd = ?config.etcd_endpoints,
        host = %base_url,
        "discovery server started"
    );
    let app = router(Service { etcd, base_url });

    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    tokio::spawn(async move {
        shutdown.await;
        let _ = stop_tx.send(true);
    });
    let graceful = {
        let mut stop = stop_rx.clone();
        async move {
            let _ = stop.wait_for(|s| *s).await;
        }
    };
    let deadline = {
        let mut stop = stop_rx;
        async move {
            let _ = stop.wait_for(|s| *s).await;
            tokio::time::sleep(SHUTDOWN_GRACE).await;
        }
    };

    tracing::info!(addr = %local, "discovery serving");
    // The listener is bound, so connections are accepted from here on.
    if let Err(e) = sd_notify::notify(false, &[sd_notify::NotifyState::Ready]) {
        tracing::debug!(error = %e, "could not notify systemd");
    }
    let serve = axum::serve(listener, app).with_graceful_shutdown(graceful);
    tokio::select! {
        result = serve => result.map_err(Error::Serve)?,
        () = deadline => tracing::info!("stopped with requests still waiting"),
    }
    tracing::info!("discovery server stopped");
    Ok(())
}

fn router(service: Service) -> Router {
    Router::new()
        .route("/", any(home))
        .route("/robots.txt", any(robots))
        .route("/new", any(new_token))
        .route("/health", any(health))
        .fallback(token)
        .layer(axum::middleware::from_fn(log_request))
        .with_state(service)
}

async fn log_request(request: Request, next: Next) -> Response {
    let method = request.method().clone();
    let path = request.uri().path().to_owned();
    let response = next.run(request).await;
    tracing::info!(%method, %path, status = response.status().as_u16(), "request");
    response
}

/// Go's `http.Error`: plain text and a newline.
fn http_error(status: StatusCode, message: &str) -> Response {
    (
        status,
        [("content-type", "text/plain; charset=utf-8"), ("x-content-type-options", "nosniff")],
        format!("{message}\n"),
    )
        .into_response()
}

fn text(body: String) -> Response {
    ([("content-type", "text/plain; charset=utf-8")], body).into_response()
}

async fn home() -> Response {
    text(
        "ferrite-discovery: cluster discovery for ferrite-store and etcd.\n\
         GET /new?size=N makes a token URL; pass it to each member as --discovery.\n"
            .to_owned(),
    )
}

async fn robots() -> Response {
    text("User-agent: *\nDisallow: /\n".to_owned())
}

fn new_token_name() -> String {
    let bytes: [u8; 16] = rand::random();
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The store path of a token's directory.
pub fn token_dir(token: &str) -> String {
    format!("{REGISTRY}/{token}")
}

impl Service {
    async fn setup_token(&self, size: i64) -> Result<String, ferrite_etcd_client::Error> {
        let token = new_token_name();
        let key = format!("{}/_config/size", token_dir(&token));
        self.etcd.create(&key, &size.to_string(), None).await?;
        Ok(token)
    }

    async fn delete_token(&self, token: &str) -> Result<(), ferrite_etcd_client::Error> {
        let options = DeleteOptions { recursive: true, ..DeleteOptions::default() };
        self.etcd.delete(&token_dir(token), &options).await?;
        Ok(())
    }
}

/// Reads `size` as Go's `strconv.Atoi` does, with its error text; Ferrite
/// also refuses a negative size.
pub fn parse_size(s: &str) -> Result<i64, String> {
    match s.parse::<i64>() {
        Ok(n) if n < 0 => Err(format!("size must not be negative: {n}")),
        Ok(n) => Ok(n),
        Err(e) => {
            use std::num::IntErrorKind;
            let why = match e.kind() {
                IntErrorKind::PosOverflow | IntErrorKind::NegOverflow => "value out of range",
                _ => "invalid syntax",
            };
            Err(format!("strconv.Atoi: parsing {s:?}: {why}"))
        }
    }
}

/// `size` from the query string or a form body, as Go's `FormValue` finds it.
fn size_param(uri: &Uri, headers: &HeaderMap, body: &[u8]) -> Option<String> {
    let find =
        |bytes: &[u8]| url::form_urlencoded::parse(bytes).find(|(k, _)| k == "size").map(|(_, v)| v.into_owned());
    let is_form = headers
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/x-www-form-urlencoded"));
    let from_body = if is_form { find(body) } else { None };
    from_body.or_else(|| find(uri.query().unwrap_or("").as_bytes()))
}

async fn new_token(State(service): State<Service>, uri: Uri, headers: HeaderMap, body: Bytes) -> Response {
    let size = match size_param(&uri, &headers, &body).filter(|s| !s.is_empty()) {
        None => 3,
        Some(s) => match parse_size(&s) {
            Ok(n) => n,
            Err(message) => return http_error(StatusCode::BAD_REQUEST, &message),
        },
    };
    match service.setup_token(size).await {
        Ok(token) => {
            tracing::info!(%token, size, "new cluster created");
            text(format!("{}/{token}", service.base_url.trim_end_matches('/')))
        }
        Err(e) => {
            tracing::warn!(error = %error_chain(&e), "could not set up a token");
            http_error(StatusCode::BAD_REQUEST, "Unable to generate token")
        }
    }
}

async fn health(State(service): State<Service>) -> Response {
    let token = match service.setup_token(0).await {
        Ok(token) => token,
        Err(e) => {
            tracing::warn!(error = %error_chain(&e), "health failed to set up a token");
            return http_error(StatusCode::BAD_REQUEST, "health failed to setupToken");
        }
    };
    if let Err(e) = service.delete_token(&token).await {
        tracing::warn!(error = %error_chain(&e), "health failed to delete a token");
        return http_error(StatusCode::BAD_REQUEST, "health failed to deleteToken");
    }
    text("OK".to_owned())
}

/// Where a request under a token goes.
#[derive(Debug, PartialEq, Eq)]
pub enum Route {
    /// To the store's keys API at this path.
    Proxy(String),
    MethodNotAllowed,
    NotFound,
}

fn is_token(s: &str) -> bool {
    s.len() == 32 && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

/// discovery.etcd.io's token routes: `/<token>` and `/<token>/` (GET, PUT),
/// `/<token>/<machine>` (GET, PUT, DELETE), `/<token>/_config/size` (GET).
pub fn route(method: &Method, path: &str) -> Route {
    let rest = path.strip_prefix('/').unwrap_or(path);
    let (token, tail) = rest.split_once('/').unwrap_or((rest, ""));
    if !is_token(token) {
        return Route::NotFound;
    }
    let allowed: &[Method] = if tail.is_empty() {
        &[Method::GET, Method::PUT]
    } else if tail == "_config/size" {
        &[Method::GET]
    } else if !tail.contains('/') {
        &[Method::GET, Method::PUT, Method::DELETE]
    } else {
        return Route::NotFound;
    };
    if !allowed.contains(method) {
        return Route::MethodNotAllowed;
    }
    let mut target = format!("/v2/keys{}", token_dir(token));
    if !tail.is_empty() {
        target.push('/');
        target.push_str(tail);
    }
    Route::Proxy(target)
}

/// Headers that belong to one connection, not to the message.
fn hop_by_hop(name: &HeaderName) -> bool {
    matches!(
        name.as_str(),
        "connection"
            | "keep-alive"
            | "proxy-authenticate"
            | "proxy-authorization"
            | "te"
            | "trailer"
            | "transfer-encoding"
            | "upgrade"
            | "host"
            | "content-length"
    )
}

async fn token(State(service): State<Service>, method: Method, uri: Uri, headers: HeaderMap, body: Bytes) -> Response {
    let target = match route(&method, uri.path()) {
        Route::Proxy(target) => target,
        Route::MethodNotAllowed => return StatusCode::METHOD_NOT_ALLOWED.into_response(),
        Route::NotFound => return http_error(StatusCode::NOT_FOUND, "404 page not found"),
    };
    let mut forward_headers = HeaderMap::new();
    for (name, value) in &headers {
        if !hop_by_hop(name) {
            forward_headers.append(name.clone(), value.clone());
        }
    }
    let upstream = match service.etcd.forward(method, &target, uri.query(), &forward_headers, body).await {
        Ok(upstream) => upstream,
        Err(e) => {
            tracing::warn!(error = %error_chain(&e), %target, "error making request");
            return StatusCode::INTERNAL_SERVER_ERROR.into_response();
        }
    };
    let mut response = Response::builder().status(upstream.status());
    for (name, value) in upstream.headers() {
        if !hop_by_hop(name) || name == "content-length" {
            response = response.header(name, value);
        }
    }
    response
        .body(Body::from_stream(upstream.bytes_stream()))
        .unwrap_or_else(|_| StatusCode::INTERNAL_SERVER_ERROR.into_response())
}

/// An error and its causes on one line, for logs.
pub fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    const TOKEN: &str = "0123456789abcdef0123456789abcdef";

    #[test]
    fn token_routes_are_discovery_etcd_ios() {
        let proxied = |m: Method, p: &str| route(&m, p);
        assert_eq!(
            proxied(Method::GET, &format!("/{TOKEN}")),
            Route::Proxy(format!("/v2/keys/_etcd/registry/{TOKEN}"))
        );
        assert_eq!(
            proxied(Method::PUT, &format!("/{TOKEN}/")),
            Route::Proxy(format!("/v2/keys/_etcd/registry/{TOKEN}"))
        );
        assert_eq!(proxied(Method::DELETE, &format!("/{TOKEN}")), Route::MethodNotAllowed);
        assert_eq!(
            proxied(Method::PUT, &format!("/{TOKEN}/8e9e05c52164694d")),
            Route::Proxy(format!("/v2/keys/_etcd/registry/{TOKEN}/8e9e05c52164694d"))
        );
        assert_eq!(
            proxied(Method::DELETE, &format!("/{TOKEN}/8e9e05c52164694d")),
            Route::Proxy(format!("/v2/keys/_etcd/registry/{TOKEN}/8e9e05c52164694d"))
        );
        assert_eq!(proxied(Method::POST, &format!("/{TOKEN}/8e9e05c52164694d")), Route::MethodNotAllowed);
        assert_eq!(
            proxied(Method::GET, &format!("/{TOKEN}/_config/size")),
            Route::Proxy(format!("/v2/keys/_etcd/registry/{TOKEN}/_config/size"))
        );
        assert_eq!(proxied(Method::PUT, &format!("/{TOKEN}/_config/size")), Route::MethodNotAllowed);
        assert_eq!(proxied(Method::GET, &format!("/{TOKEN}/a/b")), Route::NotFound);
        assert_eq!(proxied(Method::GET, "/0123"), Route::NotFound);
        assert_eq!(proxied(Method::GET, "/0123456789ABCDEF0123456789ABCDEF"), Route::NotFound);
    }

    #[test]
    fn tokens_are_32_hex_digits() {
        let t = new_token_name();
        assert!(is_token(&t), "{t}");
        assert_ne!(t, new_token_name());
    }

    #[test]
    fn sizes_parse_like_atoi() {
        assert_eq!(parse_size("5"), Ok(5));
        assert_eq!(parse_size("+3"), Ok(3));
        assert_eq!(parse_size("abc"), Err("strconv.Atoi: parsing \"abc\": invalid syntax".to_owned()));
        assert_eq!(
            parse_size("99999999999999999999"),
            Err("strconv.Atoi: parsing \"99999999999999999999\": value out of range".to_owned())
        );
        assert!(parse_size("-1").is_err());
    }

    #[test]
    fn size_comes_from_the_form_or_the_query() {
        let uri: Uri = "/new?size=5".parse().unwrap();
        assert_eq!(size_param(&uri, &HeaderMap::new(), b""), Some("5".to_owned()));
        let mut form = HeaderMap::new();
        form.insert("content-type", "application/x-www-form-urlencoded".parse().unwrap());
        assert_eq!(size_param(&uri, &form, b"size=7"), Some("7".to_owned()));
        assert_eq!(size_param(&"/new".parse().unwrap(), &form, b""), None);
    }

    #[test]
    fn host_must_be_a_bare_url() {
        assert_eq!(host_only_url("http://127.0.0.1:8087").unwrap(), "http://127.0.0.1:8087");
        assert_eq!(host_only_url("https://discovery.example/").unwrap(), "https://discovery.example");
        for bad in ["http://h/path", "http://h/?q=1", "http://h/#f", "nonsense"] {
            assert!(host_only_url(bad).is_err(), "{bad}");
        }
    }
}
