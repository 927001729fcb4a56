//! The store side: registrator's `etcd://` URI and its etcd backend's
//! writes (`<prefix>/<name>/<id>` = `ip:port`, with the TTL).

use std::time::Duration;

use ferrite_etcd_api::v2::ErrorCode;
use ferrite_etcd_client::{Client, DeleteOptions, GetOptions, SetOptions};

use crate::service::Service;

/// `etcd://host:port[,host:port...]/prefix`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RegistryUri {
    /// `http://host:port` for each host.
    pub endpoints: Vec<String>,
    /// `/prefix`, or empty for the root.
    pub prefix: String,
}

#[derive(Debug, thiserror::Error)]
#[error("invalid registry URI {uri:?}: {reason}")]
pub struct UriError {
    pub uri: String,
    pub reason: &'static str,
}

impl RegistryUri {
    pub fn parse(uri: &str) -> Result<RegistryUri, UriError> {
        let error = |reason| UriError { uri: uri.to_owned(), reason };
        let rest = uri.strip_prefix("etcd://").ok_or_else(|| error("only the etcd:// backend is supported"))?;
        let (hosts, path) = match rest.split_once('/') {
            Some((hosts, path)) => (hosts, path),
            None => (rest, ""),
        };
        if hosts.is_empty() {
            return Err(error("no host"));
        }
        let endpoints: Vec<String> = hosts.split(',').map(|h| format!("http://{h}")).collect();
        if hosts.split(',').any(|h| h.is_empty() || h.contains(char::is_whitespace)) {
            return Err(error("an empty or malformed host"));
        }
        let segments: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
        let prefix = if segments.is_empty() { String::new() } else { format!("/{}", segments.join("/")) };
        Ok(RegistryUri { endpoints, prefix })
    }
}

/// A registration already in the store, read back for cleanup.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stored {
    pub key: String,
    pub name: String,
    pub id: String,
}

/// The hostname and container name of an id registrator made
/// (`host:container:port[:udp]`); `None` for ids set by `SERVICE_ID`
/// or written by someone else.
pub fn parse_id(id: &str) -> Option<(&str, &str)> {
    let (host, rest) = id.split_once(':')?;
    let rest = rest.strip_suffix(":udp").unwrap_or(rest);
    let (container, port) = rest.rsplit_once(':')?;
    let valid_container = container.chars().next().is_some_and(|c| c.is_ascii_alphanumeric())
        && container.len() > 1
        && container.chars().all(|c| c.is_ascii_alphanumeric() || "_.-".contains(c));
    let valid_port = !port.is_empty() && port.chars().all(|c| c.is_ascii_digit());
    (!host.is_empty() && valid_container && valid_port).then_some((host, container))
}

/// Writes and removes registrations.
#[derive(Debug, Clone)]
pub struct Registry {
    client: Client,
    prefix: String,
}

impl Registry {
    pub fn new(client: Client, prefix: &str) -> Registry {
        Registry { client, prefix: prefix.trim_end_matches('/').to_owned() }
    }

    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    pub async fn register(&self, service: &Service) -> Result<(), ferrite_etcd_client::Error> {
        let options = SetOptions { ttl: service.ttl, ..SetOptions::default() };
        self.client.set(&service.key(&self.prefix), &service.value(), &options).await.map(drop)
    }

    /// Resets the TTL; writes the key again if it is gone (expired while
    /// the store was unreachable, or the store lost it).
    pub async fn refresh(&self, service: &Service) -> Result<(), ferrite_etcd_client::Error> {
        let Some(ttl) = service.ttl else { return self.register(service).await };
        match self.client.refresh(&service.key(&self.prefix), ttl).await {
            Ok(_) => Ok(()),
            Err(e) if e.is(ErrorCode::KeyNotFound) => self.register(service).await,
            Err(e) => Err(e),
        }
    }

    /// Deletes a key; one already gone is fine.
    pub async fn delete(&self, key: &str) -> Result<(), ferrite_etcd_client::Error> {
        match self.client.delete(key, &DeleteOptions::default()).await {
            Ok(_) => Ok(()),
            Err(e) if e.is(ErrorCode::KeyNotFound) => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// Every `<prefix>/<name>/<id>` value in the store.
    pub async fn list(&self) -> Result<Vec<Stored>, ferrite_etcd_client::Error> {
        let root = if self.prefix.is_empty() { "/" } else { &self.prefix };
        let read = GetOptions { recursive: true, sorted: true, quorum: true };
        let node = match self.client.get(root, &read).await {
            Ok(response) => response.event.node,
            Err(e) if e.is(ErrorCode::KeyNotFound) => return Ok(Vec::new()),
            Err(e) => return Err(e),
        };
        let mut stored = Vec::new();
        for service in node.nodes.iter().flatten().filter(|n| n.dir) {
            let name = service.key.rsplit('/').next().unwrap_or_default();
            for entry in service.nodes.iter().flatten().filter(|n| !n.dir) {
                let id = entry.key.rsplit('/').next().unwrap_or_default();
                stored.push(Stored { key: entry.key.clone(), name: name.to_owned(), id: id.to_owned() });
            }
        }
        Ok(stored)
    }
}

/// Exponential backoff for retrying the store.
#[derive(Debug, Clone)]
pub struct Backoff {
    next: Duration,
}

impl Backoff {
    pub const FIRST: Duration = Duration::from_millis(500);
    pub const MAX: Duration = Duration::from_secs(30);

    pub fn new() -> Backoff {
        Backoff { next: Backoff::FIRST }
    }

    /// The delay before the next attempt; each call doubles the following one.
    pub fn next_delay(&mut self) -> Duration {
        let delay = self.next;
        self.next = (self.next * 2).min(Backoff::MAX);
        delay
    }

    pub fn reset(&mut self) {
        self.next = Backoff::FIRST;
    }
}

impl Default for Backoff {
    fn default() -> Backoff {
        Backoff::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uris_give_endpoints_and_prefix() {
        let uri = RegistryUri::parse("etcd://10.0.0.1:2379/services").unwrap();
        assert_eq!(uri.endpoints, ["http://10.0.0.1:2379"]);
        assert_eq!(uri.prefix, "/services");
        let uri = RegistryUri::parse("etcd://a:1,b:2/x/y/").unwrap();
        assert_eq!(uri.endpoints, ["http://a:1", "http://b:2"]);
        assert_eq!(uri.prefix, "/x/y");
        assert_eq!(RegistryUri::parse("etcd://a:1").unwrap().prefix, "");
        assert!(RegistryUri::parse("consul://a:1/x").is_err());
        assert!(RegistryUri::parse("etcd:///x").is_err());
        assert!(RegistryUri::parse("etcd://a:1,/x").is_err());
    }

    #[test]
    fn ids_registrator_made_name_host_and_container() {
        assert_eq!(parse_id("host1:redis:6379"), Some(("host1", "redis")));
        assert_eq!(parse_id("host1:dns.1:53:udp"), Some(("host1", "dns.1")));
        assert_eq!(parse_id("10.0.0.1:web:80"), Some(("10.0.0.1", "web")));
        assert_eq!(parse_id("custom-id"), None);
        assert_eq!(parse_id("h:c:port"), None);
        assert_eq!(parse_id("h:_bad:80"), None);
    }

    #[test]
    fn backoff_doubles_up_to_its_cap_and_resets() {
        let mut backoff = Backoff::new();
        assert_eq!(backoff.next_delay(), Duration::from_millis(500));
        assert_eq!(backoff.next_delay(), Duration::from_secs(1));
        for _ in 0..10 {
            backoff.next_delay();
        }
        assert_eq!(backoff.next_delay(), Backoff::MAX);
        backoff.reset();
        assert_eq!(backoff.next_delay(), Backoff::FIRST);
    }
}
