//! From a container's inspection to the services to register. Pure: no
//! Docker, no store, no clock.
//!
//! The rules are gliderlabs/registrator's (`bridge/bridge.go`,
//! `bridge/util.go`), so a cluster moving from registrator sees the same
//! keys:
//! - ports: every exposed port (as the host network publishes it), then
//!   the runtime port map on top; without `-internal`, a port with no host
//!   binding is skipped;
//! - metadata: `SERVICE_*` from labels, then from the environment (which
//!   wins); `SERVICE_<port>_<attr>` wins over `SERVICE_<attr>` for that port;
//! - name: `name`, else the image's base name without its tag, with a
//!   `-<port>` suffix when the container has several service ports and the
//!   name did not come from a port-specific variable; `ignore` skips;
//! - id: `<hostname>:<container name>:<port>` (`:udp` for UDP), or `id`;
//! - address: the host binding's IP (`0.0.0.0` becomes the hostname's
//!   address; `-ip` overrides) and host port, or with `-internal` the
//!   container's IP and exposed port.

use std::collections::BTreeMap;
use std::time::Duration;

use bollard::models::{ContainerInspectResponse, PortBinding};

/// The registrator-wide settings that shape services.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Settings {
    /// The first part of every service id (the host's name).
    pub hostname: String,
    /// What `0.0.0.0` bindings become: the hostname's address, when it
    /// resolves.
    pub hostname_ip: Option<String>,
    /// `-ip`: the address registered for every published port.
    pub host_ip: Option<String>,
    /// `-internal`: register the container's IP and exposed port.
    pub internal: bool,
    /// `-explicit`: only containers that name their service.
    pub explicit: bool,
    /// `-tags`: tags added to every service.
    pub force_tags: String,
    /// `-ttl`: the keys' time to live.
    pub ttl: Option<Duration>,
}

/// One registration: a container port as a service.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Service {
    pub id: String,
    pub name: String,
    pub ip: String,
    pub port: u16,
    pub tags: Vec<String>,
    /// The other `SERVICE_*` attributes, lower-cased (`check_http`, ...).
    pub attrs: BTreeMap<String, String>,
    pub ttl: Option<Duration>,
    pub container_id: String,
    /// Without the leading `/`.
    pub container_name: String,
}

impl Service {
    /// `<prefix>/<name>/<id>`, as registrator's etcd backend writes it.
    pub fn key(&self, prefix: &str) -> String {
        format!("{}/{}/{}", prefix.trim_end_matches('/'), self.name, self.id)
    }

    /// `ip:port` (`[ip]:port` for IPv6), as Go's `net.JoinHostPort`.
    pub fn value(&self) -> String {
        if self.ip.contains(':') {
            format!("[{}]:{}", self.ip, self.port)
        } else {
            format!("{}:{}", self.ip, self.port)
        }
    }
}

/// A container port before it becomes a service (registrator's `ServicePort`).
#[derive(Debug, Clone, PartialEq, Eq)]
struct Port {
    host_port: String,
    host_ip: String,
    exposed_port: String,
    exposed_ip: String,
    protocol: String,
}

/// The services of a running container, in port order.
pub fn services(container: &ContainerInspectResponse, settings: &Settings) -> Vec<Service> {
    let config = container.config.clone().unwrap_or_default();
    let mut ports: BTreeMap<String, Port> = BTreeMap::new();
    for exposed in config.exposed_ports.iter().flat_map(|p| p.keys()) {
        let number = exposed.split('/').next().unwrap_or_default().to_owned();
        let published = [PortBinding { host_ip: Some("0.0.0.0".into()), host_port: Some(number) }];
        ports.insert(exposed.clone(), port(container, exposed, &published));
    }
    let runtime = container.network_settings.as_ref().and_then(|n| n.ports.as_ref());
    for (exposed, published) in runtime.into_iter().flatten() {
        ports.insert(exposed.clone(), port(container, exposed, published.as_deref().unwrap_or_default()));
    }
    let ports: Vec<Port> = ports.into_values().filter(|p| settings.internal || !p.host_port.is_empty()).collect();
    let group = ports.len() > 1;
    ports.into_iter().filter_map(|p| service(container, p, group, settings)).collect()
}

fn port(container: &ContainerInspectResponse, exposed: &str, published: &[PortBinding]) -> Port {
    let first = published.first();
    let host_port = first.and_then(|b| b.host_port.clone()).unwrap_or_default();
    let mut host_ip = first.and_then(|b| b.host_ip.clone()).filter(|ip| !ip.is_empty()).unwrap_or("0.0.0.0".into());
    let network_mode = container.host_config.as_ref().and_then(|h| h.network_mode.clone()).unwrap_or_default();
    let networks = container.network_settings.as_ref().and_then(|n| n.networks.as_ref());
    // A user-defined network: its address stands for the host's.
    if !matches!(network_mode.as_str(), "bridge" | "default" | "host" | "") {
        host_ip = networks.and_then(|n| n.get(&network_mode)).and_then(|e| e.ip_address.clone()).unwrap_or_default();
    }
    let (exposed_port, protocol) = match exposed.split_once('/') {
        Some((port, protocol)) => (port.to_owned(), protocol.to_owned()),
        None => (exposed.to_owned(), "tcp".to_owned()),
    };
    let mut exposed_ip = container.network_settings.as_ref().and_then(|n| n.ip_address.clone()).unwrap_or_default();
    if exposed_ip.is_empty() {
        // Sorted, so the choice is stable (Go's map order is random).
        let mut addresses: Vec<_> = networks.into_iter().flatten().collect();
        addresses.sort_by(|a, b| a.0.cmp(b.0));
        if let Some(ip) = addresses.into_iter().filter_map(|(_, e)| e.ip_address.clone()).find(|ip| !ip.is_empty()) {
            exposed_ip = ip;
        }
    }
    Port { host_port, host_ip, exposed_port, exposed_ip, protocol }
}

fn service(container: &ContainerInspectResponse, mut port: Port, group: bool, settings: &Settings) -> Option<Service> {
    let config = container.config.clone().unwrap_or_default();
    let image = config.image.unwrap_or_default();
    let default_name = image.rsplit('/').next().unwrap_or_default().split(':').next().unwrap_or_default().to_owned();

    let hostname = if settings.hostname.is_empty() { port.host_ip.clone() } else { settings.hostname.clone() };
    if port.host_ip == "0.0.0.0" {
        if let Some(ip) = &settings.hostname_ip {
            port.host_ip = ip.clone();
        }
    }
    if let Some(ip) = &settings.host_ip {
        port.host_ip = ip.clone();
    }

    let (mut metadata, from_port) = metadata(
        config.labels.as_ref().map(|l| l.iter().map(|(k, v)| (k.clone(), v.clone())).collect()).unwrap_or_default(),
        config.env.as_deref().unwrap_or_default(),
        &port.exposed_port,
    );
    if non_empty(&metadata, "ignore").is_some() {
        return None;
    }
    let mut name = match non_empty(&metadata, "name") {
        Some(name) => name,
        None if settings.explicit => return None,
        None => default_name,
    };
    let container_name = container.name.clone().unwrap_or_default().trim_start_matches('/').to_owned();
    let mut id = format!("{hostname}:{container_name}:{}", port.exposed_port);
    if group && !from_port.contains(&"name".to_owned()) {
        name = format!("{name}-{}", port.exposed_port);
    }
    let (ip, number) = if settings.internal {
        (port.exposed_ip.clone(), port.exposed_port.clone())
    } else {
        (port.host_ip.clone(), port.host_port.clone())
    };
    let mut tag_parts = vec![non_empty(&metadata, "tags").unwrap_or_default(), settings.force_tags.clone()];
    if port.protocol == "udp" {
        tag_parts.push("udp".into());
        id.push_str(":udp");
    }
    if let Some(explicit_id) = non_empty(&metadata, "id") {
        id = explicit_id;
    }
    for key in ["id", "tags", "name"] {
        metadata.remove(key);
    }
    Some(Service {
        id,
        name,
        ip,
        port: number.parse().unwrap_or(0),
        tags: tag_parts.iter().flat_map(|t| split_tags(t)).collect(),
        attrs: metadata,
        ttl: settings.ttl,
        container_id: container.id.clone().unwrap_or_default(),
        container_name,
    })
}

fn non_empty(map: &BTreeMap<String, String>, key: &str) -> Option<String> {
    map.get(key).filter(|v| !v.is_empty()).cloned()
}

/// The `SERVICE_*` attributes that apply to `port`, lower-cased without
/// the prefix, and which of them came from `SERVICE_<port>_*`.
fn metadata(labels: BTreeMap<String, String>, env: &[String], port: &str) -> (BTreeMap<String, String>, Vec<String>) {
    let mut all = labels;
    // The environment wins over labels.
    for entry in env {
        if let Some((key, value)) = entry.split_once('=') {
            all.insert(key.to_owned(), value.to_owned());
        }
    }
    let mut generic = BTreeMap::new();
    let mut specific = BTreeMap::new();
    for (key, value) in all {
        let Some(rest) = key.strip_prefix("SERVICE_") else { continue };
        let rest = rest.to_lowercase();
        match rest.split_once('_') {
            Some((number, attr)) if number.parse::<u64>().is_ok() => {
                if number == port {
                    specific.insert(attr.to_owned(), value);
                }
            }
            _ => {
                generic.insert(rest, value);
            }
        }
    }
    let from_port: Vec<String> = specific.keys().cloned().collect();
    generic.extend(specific);
    (generic, from_port)
}

/// Splits on commas not preceded by a backslash, dropping the backslash.
fn split_tags(text: &str) -> Vec<String> {
    let mut tags = Vec::new();
    let mut current = String::new();
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\\' if chars.peek() == Some(&',') => {
                current.push(',');
                chars.next();
            }
            ',' => tags.push(std::mem::take(&mut current)),
            c => current.push(c),
        }
    }
    tags.push(current);
    tags.into_iter().filter(|t| !t.is_empty()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn port_specific_attributes_win_and_other_ports_are_ignored() {
        let labels = BTreeMap::from([("SERVICE_NAME".to_owned(), "from-label".to_owned())]);
        let env = [
            "SERVICE_NAME=web".to_owned(),
            "SERVICE_80_NAME=http".into(),
            "SERVICE_443_NAME=https".into(),
            "SERVICE_CHECK_HTTP=/health".into(),
            "PATH=/bin".into(),
        ];
        let (meta, from_port) = metadata(labels.clone(), &env, "80");
        assert_eq!(meta.get("name").map(String::as_str), Some("http"));
        assert_eq!(meta.get("check_http").map(String::as_str), Some("/health"));
        assert_eq!(from_port, ["name"]);
        let (meta, from_port) = metadata(labels.clone(), &env, "8080");
        assert_eq!(meta.get("name").map(String::as_str), Some("web"), "the environment wins over labels");
        assert!(from_port.is_empty());
        let (meta, _) = metadata(labels, &[], "8080");
        assert_eq!(meta.get("name").map(String::as_str), Some("from-label"));
    }

    #[test]
    fn tags_split_on_unescaped_commas() {
        assert_eq!(split_tags("a,b\\,c,,d"), ["a", "b,c", "d"]);
        assert!(split_tags("").is_empty());
    }

    #[test]
    fn values_join_host_and_port_as_go_does() {
        let mut s = Service {
            id: "h:c:80".into(),
            name: "web".into(),
            ip: "10.0.0.1".into(),
            port: 32768,
            tags: vec![],
            attrs: BTreeMap::new(),
            ttl: None,
            container_id: "x".into(),
            container_name: "c".into(),
        };
        assert_eq!(s.key("/services"), "/services/web/h:c:80");
        assert_eq!(s.key("/services/"), "/services/web/h:c:80");
        assert_eq!(s.key(""), "/web/h:c:80");
        assert_eq!(s.value(), "10.0.0.1:32768");
        s.ip = "fd00::1".into();
        assert_eq!(s.value(), "[fd00::1]:32768");
    }
}
