//! The member side of cluster discovery, as etcd's `v2discovery` does it, so
//! a store can bootstrap from `--discovery <token URL>`.
//!
//! The token URL names a directory in a keys API (a discovery service
//! serves it at the URL itself, an etcd at `/v2/keys/...`). It holds
//! `_config/size` and one key per member, named by the member id in hex,
//! whose value is the member's `name=peer-url,...`. A member reads the size,
//! registers itself (create-only), waits until `size` members registered,
//! and takes the first `size` of them by creation index as the initial
//! cluster. Every member computes the same list, since creation order is the
//! store's. The error texts are etcd's, word for word.

use std::collections::BTreeSet;
use std::time::Duration;

use ferrite_etcd_api::v2::{format_id, Action, ErrorCode, Node};
use url::Url;

use crate::{Client, Error, GetOptions, WatchOptions};

/// Why joining through discovery failed. The messages are etcd's.
#[derive(Debug, thiserror::Error)]
pub enum DiscoveryError {
    #[error("discovery: invalid URL")]
    InvalidUrl { url: String },
    #[error("discovery: size key is bad")]
    BadSizeKey { value: String },
    #[error("discovery: size key not found")]
    SizeNotFound,
    #[error("discovery: found duplicate id")]
    DuplicateId { id: String },
    #[error("discovery: found duplicate name")]
    DuplicateName { cluster: String },
    #[error("discovery: cluster is full")]
    FullCluster { size: u64 },
    #[error("discovery: too many retries")]
    TooManyRetries {
        #[source]
        last: Error,
    },
    #[error("discovery: bad discovery endpoint")]
    BadDiscoveryEndpoint {
        #[source]
        source: Error,
    },
    /// Any other error of the discovery service's keys API.
    #[error("discovery: {0}")]
    Etcd(#[source] Error),
}

/// How often and how patiently to retry when the discovery service cannot
/// be reached. etcd retries (almost) forever; Ferrite gives up after
/// `max_retries`, counted over the whole join as etcd counts them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    pub max_retries: u32,
    pub first_backoff: Duration,
    pub max_backoff: Duration,
}

impl Default for RetryPolicy {
    /// 8 retries, 1 s doubling to 30 s: about two minutes in all.
    fn default() -> RetryPolicy {
        RetryPolicy { max_retries: 8, first_backoff: Duration::from_secs(1), max_backoff: Duration::from_secs(30) }
    }
}

/// Registers this member under the token and waits for the others; returns
/// the initial cluster (`name=peer-url,...`, in registration order).
///
/// `member_id` is this member's id (registered in hex); `name` and
/// `peer_urls` are what the other members will use to reach it.
pub async fn join(
    discovery_url: &str,
    member_id: u64,
    name: &str,
    peer_urls: &[String],
) -> Result<String, DiscoveryError> {
    Discovery::new(discovery_url, member_id)?.join_cluster(&member_entry(name, peer_urls)).await
}

/// Reads the cluster registered under a token without joining it, waiting
/// until it is complete (what a proxy does).
pub async fn get_cluster(discovery_url: &str) -> Result<String, DiscoveryError> {
    Discovery::new(discovery_url, 0)?.get_cluster().await
}

/// A member's own line in the registry, as etcd's `URLsMap.String()` writes
/// it: `name=url` pairs, sorted.
pub fn member_entry(name: &str, peer_urls: &[String]) -> String {
    let mut pairs: Vec<String> = peer_urls.iter().map(|u| format!("{name}={u}")).collect();
    pairs.sort();
    pairs.join(",")
}

/// One discovery session against one token.
#[derive(Debug)]
pub struct Discovery {
    client: Client,
    url: String,
    /// The token's path, e.g. `/0a1b...`, under which keys are read.
    cluster: String,
    id: u64,
    retry: RetryPolicy,
    retries: u32,
}

/// What `check_cluster` saw.
struct Check {
    nodes: Vec<Node>,
    size: u64,
    index: u64,
    full: bool,
}

fn base(key: &str) -> &str {
    key.trim_end_matches('/').rsplit('/').next().unwrap_or("")
}

/// Errors worth another try: the service could not be reached or failed on
/// its side.
fn retryable(e: &Error) -> bool {
    match e {
        Error::Transport { .. } => true,
        Error::Decode { status, .. } | Error::Status { status, .. } => status.is_server_error(),
        _ => false,
    }
}

impl Discovery {
    pub fn new(discovery_url: &str, member_id: u64) -> Result<Discovery, DiscoveryError> {
        let invalid = || DiscoveryError::InvalidUrl { url: discovery_url.to_owned() };
        let url = Url::parse(discovery_url).map_err(|_| invalid())?;
        let cluster = url.path().trim_end_matches('/').to_owned();
        if cluster.is_empty() {
            return Err(invalid());
        }
        let mut endpoint = url.clone();
        endpoint.set_path("");
        endpoint.set_query(None);
        endpoint.set_fragment(None);
        let client = Client::builder([endpoint.as_str()]).keys_prefix("").build().map_err(|_| invalid())?;
        Ok(Discovery {
            client,
            url: discovery_url.to_owned(),
            cluster,
            id: member_id,
            retry: RetryPolicy::default(),
            retries: 0,
        })
    }

    pub fn with_retry_policy(mut self, retry: RetryPolicy) -> Discovery {
        self.retry = retry;
        self
    }

    fn config_key(&self) -> String {
        format!("{}/_config", self.cluster)
    }

    fn self_key(&self) -> String {
        format!("{}/{}", self.cluster, format_id(self.id))
    }

    /// Registers `entry` for this member and waits for the cluster; see
    /// [`join`].
    pub async fn join_cluster(&mut self, entry: &str) -> Result<String, DiscoveryError> {
        // Fast path: a full cluster is refused before registering.
        let check = self.check_cluster().await?;
        if check.full {
            return Err(DiscoveryError::FullCluster { size: check.size });
        }
        self.create_self(entry).await?;
        let check = self.check_cluster().await?;
        if check.full {
            return Err(DiscoveryError::FullCluster { size: check.size });
        }
        let (all, size) = self.wait_nodes(check).await?;
        nodes_to_cluster(&all, size)
    }

    /// See [`get_cluster`].
    pub async fn get_cluster(&mut self) -> Result<String, DiscoveryError> {
        let check = self.check_cluster().await?;
        if check.full {
            return nodes_to_cluster(&check.nodes, check.size);
        }
        let (all, size) = self.wait_nodes(check).await?;
        nodes_to_cluster(&all, size)
    }

    async fn backoff(&mut self, step: &str, error: Error) -> Result<(), DiscoveryError> {
        if self.retries >= self.retry.max_retries {
            return Err(DiscoveryError::TooManyRetries { last: error });
        }
        self.retries += 1;
        let exp = (self.retries - 1).min(16);
        let wait = (self.retry.first_backoff * 2u32.pow(exp)).min(self.retry.max_backoff);
        tracing::info!(
            url = %self.url,
            reason = step,
            error = %error,
            backoff = ?wait,
            "retry connecting to discovery service"
        );
        tokio::time::sleep(wait).await;
        Ok(())
    }

    async fn create_self(&mut self, entry: &str) -> Result<(), DiscoveryError> {
        let key = self.self_key();
        let created = loop {
            match self.client.create(&key, entry, None).await {
                Ok(response) => break response,
                Err(e) if e.is(ErrorCode::NodeExist) => {
                    return Err(DiscoveryError::DuplicateId { id: format_id(self.id) })
                }
                // Only a request that never left is safe to send again.
                Err(e) if e.is_unreachable() => self.backoff("registering self", e).await?,
                Err(e) => return Err(DiscoveryError::Etcd(e)),
            }
        };
        // Make sure our own key is visible on the server we talk to.
        let options = WatchOptions { recursive: false, wait_index: Some(created.event.node.created_index) };
        self.client.watch(&key, &options).await.map_err(DiscoveryError::Etcd)?;
        Ok(())
    }

    async fn check_cluster(&mut self) -> Result<Check, DiscoveryError> {
        loop {
            match self.try_check_cluster().await {
                Err(Ok(e)) => self.backoff("cluster status check", e).await?,
                Err(Err(e)) => return Err(e),
                Ok(check) => return Ok(check),
            }
        }
    }

    /// `Err(Ok(e))`: worth retrying; `Err(Err(e))`: final.
    async fn try_check_cluster(&self) -> Result<Check, Result<Error, DiscoveryError>> {
        let size_key = format!("{}/size", self.config_key());
        let size = match self.client.get(&size_key, &GetOptions::default()).await {
            Ok(response) => response.event.node.value.unwrap_or_default(),
            Err(e) if e.is(ErrorCode::KeyNotFound) => return Err(Err(DiscoveryError::SizeNotFound)),
            Err(e) if retryable(&e) => return Err(Ok(e)),
            Err(source @ Error::Decode { .. }) => return Err(Err(DiscoveryError::BadDiscoveryEndpoint { source })),
            Err(e) => return Err(Err(DiscoveryError::Etcd(e))),
        };
        let size: u64 = size.parse().map_err(|_| Err(DiscoveryError::BadSizeKey { value: size }))?;

        let listing = match self.client.get(&self.cluster, &GetOptions::default()).await {
            Ok(response) => response,
            Err(e) if retryable(&e) => return Err(Ok(e)),
            Err(e) => return Err(Err(DiscoveryError::Etcd(e))),
        };
        let mut nodes: Vec<Node> =
            listing.event.node.nodes.unwrap_or_default().into_iter().filter(|n| base(&n.key) != "_config").collect();
        nodes.sort_by_key(|n| n.created_index);

        let me = format_id(self.id);
        let position = nodes.iter().position(|n| base(&n.key) == me);
        // etcd: full when `size` others registered before us (or we are not
        // there at all and `size` are).
        let full = size > 0 && position.unwrap_or(nodes.len()) >= size as usize;
        if full {
            nodes.truncate(size as usize);
        }
        Ok(Check { nodes, size, index: listing.headers.etcd_index, full })
    }

    async fn wait_nodes(&mut self, mut check: Check) -> Result<(Vec<Node>, u64), DiscoveryError> {
        let me = format_id(self.id);
        let token = base(&self.cluster).to_owned();
        'recheck: loop {
            let size = check.size;
            let mut all = std::mem::take(&mut check.nodes);
            all.truncate(size as usize);
            for n in &all {
                if base(&n.key) == me {
                    tracing::info!(url = %self.url, self_id = %me, "found self from discovery server");
                } else {
                    tracing::info!(url = %self.url, peer = base(&n.key), "found peer from discovery server");
                }
            }
            let mut next = check.index + 1;
            while (all.len() as u64) < size {
                tracing::info!(
                    url = %self.url,
                    found = all.len(),
                    needed = size - all.len() as u64,
                    "found peers from discovery server; waiting for more"
                );
                let options = WatchOptions { recursive: true, wait_index: Some(next) };
                let event = match self.client.watch(&self.cluster, &options).await {
                    Ok(response) => response.event,
                    Err(e) if retryable(&e) || e.is(ErrorCode::EventIndexCleared) => {
                        if retryable(&e) {
                            self.backoff("waiting for other nodes", e).await?;
                        }
                        check = self.check_cluster().await?;
                        if check.full {
                            return Err(DiscoveryError::FullCluster { size: check.size });
                        }
                        continue 'recheck;
                    }
                    Err(e) => return Err(DiscoveryError::Etcd(e)),
                };
                next = event.node.modified_index + 1;
                let node = event.node;
                let parent = node.key.trim_end_matches('/').rsplit_once('/').map(|p| p.0);
                let is_member = parent.is_some_and(|p| base(p) == token)
                    && base(&node.key) != "_config"
                    && matches!(event.action, Action::Create | Action::Set)
                    && !all.iter().any(|n| n.key == node.key);
                if is_member {
                    tracing::info!(url = %self.url, peer = base(&node.key), "found peer from discovery server");
                    all.push(node);
                }
            }
            tracing::info!(url = %self.url, found = all.len(), "found all needed peers from discovery server");
            return Ok((all, size));
        }
    }
}

/// Joins the members' entries into the initial cluster and checks it as
/// etcd does: valid peer URLs, and `size` distinct names.
fn nodes_to_cluster(nodes: &[Node], size: u64) -> Result<String, DiscoveryError> {
    let cluster = nodes.iter().map(|n| n.value.as_deref().unwrap_or("")).collect::<Vec<_>>().join(",");
    let names = parse_urls_map(&cluster).ok_or_else(|| DiscoveryError::InvalidUrl { url: cluster.clone() })?;
    if names.len() as u64 != size {
        return Err(DiscoveryError::DuplicateName { cluster });
    }
    Ok(cluster)
}

/// The names of an initial-cluster string, or `None` if any URL is not a
/// peer URL (etcd's `types.NewURLsMap`).
fn parse_urls_map(s: &str) -> Option<BTreeSet<&str>> {
    let mut names = BTreeSet::new();
    for pair in s.split(',').filter(|p| !p.is_empty()) {
        let (name, url) = pair.split_once('=').unwrap_or((pair, ""));
        if !is_peer_url(url) {
            return None;
        }
        names.insert(name);
    }
    Some(names)
}

/// etcd's `types.NewURLs` check: http(s) or unix(s), `host:port`, no path.
fn is_peer_url(url: &str) -> bool {
    let Some((scheme, rest)) = url.split_once("://") else {
        return false;
    };
    if !matches!(scheme, "http" | "https" | "unix" | "unixs") {
        return false;
    }
    if rest.contains(['/', '?', '#']) {
        return false;
    }
    match rest.rsplit_once(':') {
        Some((host, port)) => !host.is_empty() && port.parse::<u16>().is_ok(),
        None => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(key: &str, value: &str, created: u64) -> Node {
        Node {
            key: key.into(),
            value: Some(value.into()),
            created_index: created,
            modified_index: created,
            ..Node::default()
        }
    }

    #[test]
    fn member_entry_is_sorted_pairs() {
        let urls = ["http://b:2380".to_string(), "http://a:2380".to_string()];
        assert_eq!(member_entry("n1", &urls), "n1=http://a:2380,n1=http://b:2380");
    }

    #[test]
    fn token_path_and_keys() {
        let d = Discovery::new("http://127.0.0.1:8087/0123abcd", 0x8e9e05c52164694d).unwrap();
        assert_eq!(d.cluster, "/0123abcd");
        assert_eq!(d.self_key(), "/0123abcd/8e9e05c52164694d");
        assert_eq!(d.config_key(), "/0123abcd/_config");
        assert_eq!(d.client.current_endpoint().as_str(), "http://127.0.0.1:8087/");

        let on_etcd = Discovery::new("http://127.0.0.1:2379/v2/keys/discovery/tok/", 1).unwrap();
        assert_eq!(on_etcd.cluster, "/v2/keys/discovery/tok");
        assert!(matches!(Discovery::new("http://127.0.0.1:8087", 1), Err(DiscoveryError::InvalidUrl { .. })));
        assert!(matches!(Discovery::new("not a url", 1), Err(DiscoveryError::InvalidUrl { .. })));
    }

    #[test]
    fn cluster_string_is_checked_as_etcd_does() {
        let nodes = [
            node("/_etcd/registry/t/1", "a=http://127.0.0.1:1", 5),
            node("/_etcd/registry/t/2", "b=http://127.0.0.1:2", 6),
        ];
        assert_eq!(nodes_to_cluster(&nodes, 2).unwrap(), "a=http://127.0.0.1:1,b=http://127.0.0.1:2");
        let dup = [node("/t/1", "a=http://127.0.0.1:1", 5), node("/t/2", "a=http://127.0.0.1:2", 6)];
        let err = nodes_to_cluster(&dup, 2).unwrap_err();
        assert_eq!(err.to_string(), "discovery: found duplicate name");
        let bad = [node("/t/1", "a=127.0.0.1:1", 5)];
        let err = nodes_to_cluster(&bad, 1).unwrap_err();
        assert_eq!(err.to_string(), "discovery: invalid URL");
    }

    #[test]
    fn peer_urls_follow_etcd_rules() {
        assert!(is_peer_url("http://127.0.0.1:2380"));
        assert!(is_peer_url("https://[::1]:2380"));
        assert!(!is_peer_url("http://127.0.0.1"));
        assert!(!is_peer_url("http://127.0.0.1:2380/"));
        assert!(!is_peer_url("ftp://127.0.0.1:2380"));
        assert!(!is_peer_url(""));
    }

    #[test]
    fn messages_are_etcds() {
        assert_eq!(DiscoveryError::FullCluster { size: 3 }.to_string(), "discovery: cluster is full");
        assert_eq!(DiscoveryError::SizeNotFound.to_string(), "discovery: size key not found");
        assert_eq!(DiscoveryError::DuplicateId { id: "1".into() }.to_string(), "discovery: found duplicate id");
        assert_eq!(DiscoveryError::BadSizeKey { value: "x".into() }.to_string(), "discovery: size key is bad");
    }

    mod over_http {
        use super::*;
        use crate::fake_server::{dead_endpoint, event, FakeServer};
        use http::Method;

        #[tokio::test]
        async fn a_full_cluster_is_refused_before_registering() {
            let server = FakeServer::start(|seen, _| {
                if seen.path.ends_with("/_config/size") {
                    event(200, 9, r#"{"action":"get","node":{"key":"/_etcd/registry/t/_config/size","value":"2","modifiedIndex":4,"createdIndex":4}}"#)
                } else {
                    event(200, 9, r#"{"action":"get","node":{"key":"/_etcd/registry/t","dir":true,"nodes":[
                        {"key":"/_etcd/registry/t/b","value":"b=http://127.0.0.1:2","modifiedIndex":6,"createdIndex":6},
                        {"key":"/_etcd/registry/t/a","value":"a=http://127.0.0.1:1","modifiedIndex":5,"createdIndex":5}
                    ],"modifiedIndex":3,"createdIndex":3}}"#)
                }
            })
            .await;
            let url = format!("{}/t", server.url);
            let err = join(&url, 0xc, "c", &["http://127.0.0.1:3".into()]).await.unwrap_err();
            assert!(matches!(err, DiscoveryError::FullCluster { size: 2 }), "{err:?}");
            assert!(server.seen().iter().all(|s| s.method == Method::GET), "nothing registered");

            // A reader (a proxy) gets the cluster in creation order.
            let cluster = get_cluster(&url).await.unwrap();
            assert_eq!(cluster, "a=http://127.0.0.1:1,b=http://127.0.0.1:2");
        }

        #[tokio::test]
        async fn retries_are_bounded() {
            let url = format!("{}/t", dead_endpoint().await);
            let mut discovery = Discovery::new(&url, 1).unwrap().with_retry_policy(RetryPolicy {
                max_retries: 2,
                first_backoff: Duration::from_millis(1),
                max_backoff: Duration::from_millis(1),
            });
            let err = discovery.join_cluster("x=http://127.0.0.1:1").await.unwrap_err();
            assert_eq!(err.to_string(), "discovery: too many retries");
            match err {
                DiscoveryError::TooManyRetries { last } => assert!(last.is_unreachable()),
                other => panic!("{other:?}"),
            }
            assert_eq!(discovery.retries, 2);
        }

        #[tokio::test]
        async fn a_bad_size_and_a_foreign_endpoint_are_named() {
            let server = FakeServer::start(|seen, _| {
                if seen.path.starts_with("/html") {
                    (200, vec![], "<html>hello</html>".into())
                } else {
                    event(200, 9, r#"{"action":"get","node":{"key":"/t/_config/size","value":"three","modifiedIndex":4,"createdIndex":4}}"#)
                }
            })
            .await;
            let err = join(&format!("{}/t", server.url), 1, "a", &[]).await.unwrap_err();
            assert_eq!(err.to_string(), "discovery: size key is bad");
            let err = join(&format!("{}/html", server.url), 1, "a", &[]).await.unwrap_err();
            assert_eq!(err.to_string(), "discovery: bad discovery endpoint");
        }
    }
}
