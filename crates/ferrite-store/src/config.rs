//! etcd's command line and `ETCD_*` environment, validated into typed
//! settings. A user swaps the etcd binary for ferrite-store and keeps their
//! flags, unit files and cloud-config.

use std::net::{SocketAddr, ToSocketAddrs};
use std::path::PathBuf;
use std::time::Duration;

use clap::builder::BoolishValueParser;
use clap::Parser;
use url::Url;

/// The flags, as etcd spells them. Every flag also reads `ETCD_<NAME>`.
#[derive(Debug, Clone, Parser)]
#[command(
    name = "ferrite-store",
    version,
    about = "An etcd-compatible key-value store (etcd v2 API) on raft.",
    long_about = None
)]
pub struct Flags {
    /// Human-readable name for this member.
    #[arg(long, env = "ETCD_NAME", default_value = "default")]
    pub name: String,

    /// Path to the data directory (default: `<name>.etcd`).
    #[arg(long, env = "ETCD_DATA_DIR")]
    pub data_dir: Option<PathBuf>,

    /// URLs to listen on for client traffic [default: http://localhost:2379,http://localhost:4001].
    #[arg(long, env = "ETCD_LISTEN_CLIENT_URLS")]
    pub listen_client_urls: Option<String>,

    /// This member's client URLs to advertise to the rest of the cluster
    /// [default: http://localhost:2379,http://localhost:4001].
    #[arg(long, env = "ETCD_ADVERTISE_CLIENT_URLS")]
    pub advertise_client_urls: Option<String>,

    /// URLs to listen on for peer traffic [default: http://localhost:2380,http://localhost:7001].
    #[arg(long, env = "ETCD_LISTEN_PEER_URLS")]
    pub listen_peer_urls: Option<String>,

    /// This member's peer URLs to advertise to the rest of the cluster
    /// [default: http://localhost:2380,http://localhost:7001].
    #[arg(long, env = "ETCD_INITIAL_ADVERTISE_PEER_URLS")]
    pub initial_advertise_peer_urls: Option<String>,

    /// DEPRECATED (etcd 0.4): the client address to advertise, host:port.
    /// Use --advertise-client-urls. Without --bind-addr or
    /// --listen-client-urls, clients are served on every interface at its port.
    #[arg(long, env = "ETCD_ADDR")]
    pub addr: Option<String>,

    /// DEPRECATED (etcd 0.4): the client address to listen on, host:port.
    /// Use --listen-client-urls.
    #[arg(long, env = "ETCD_BIND_ADDR")]
    pub bind_addr: Option<String>,

    /// DEPRECATED (etcd 0.4): the peer address to advertise, host:port.
    /// Use --initial-advertise-peer-urls. Without --peer-bind-addr or
    /// --listen-peer-urls, peers are served on every interface at its port.
    #[arg(long, env = "ETCD_PEER_ADDR")]
    pub peer_addr: Option<String>,

    /// DEPRECATED (etcd 0.4): the peer address to listen on, host:port.
    /// Use --listen-peer-urls.
    #[arg(long, env = "ETCD_PEER_BIND_ADDR")]
    pub peer_bind_addr: Option<String>,

    /// Initial cluster configuration for bootstrapping: name=url,...
    #[arg(long, env = "ETCD_INITIAL_CLUSTER")]
    pub initial_cluster: Option<String>,

    /// `new` for a new cluster, `existing` to join one.
    #[arg(long, env = "ETCD_INITIAL_CLUSTER_STATE", default_value = "new")]
    pub initial_cluster_state: String,

    /// Initial cluster token, which makes member and cluster ids unique.
    #[arg(long, env = "ETCD_INITIAL_CLUSTER_TOKEN", default_value = "etcd-cluster")]
    pub initial_cluster_token: String,

    /// Discovery URL used to bootstrap the cluster.
    #[arg(long, env = "ETCD_DISCOVERY")]
    pub discovery: Option<String>,

    /// Accepted for compatibility: the v2 API is always served.
    #[arg(long, env = "ETCD_ENABLE_V2", num_args = 0..=1, default_missing_value = "true",
          value_parser = BoolishValueParser::new())]
    pub enable_v2: Option<bool>,

    /// Time (in milliseconds) of a heartbeat interval.
    #[arg(long, env = "ETCD_HEARTBEAT_INTERVAL", default_value_t = 100)]
    pub heartbeat_interval: u64,

    /// Time (in milliseconds) for an election to timeout.
    #[arg(long, env = "ETCD_ELECTION_TIMEOUT", default_value_t = 1000)]
    pub election_timeout: u64,

    /// Number of committed transactions to trigger a snapshot to disk
    /// (etcd's default; a write counts once, batched or not).
    #[arg(long, env = "ETCD_SNAPSHOT_COUNT", default_value_t = 100_000)]
    pub snapshot_count: u64,

    /// Size at which a raft log segment file is closed and the next begun
    /// (ferrite-store's own; etcd's WAL segments are 64 MB). A purge after
    /// a snapshot frees disk space a whole segment at a time.
    #[arg(long, env = "FERRITE_LOG_SEGMENT_BYTES", default_value_t = 16 << 20,
          value_parser = clap::value_parser!(u64).range(4096..))]
    pub log_segment_bytes: u64,

    /// Accepted for compatibility and ignored: ferrite-store always fsyncs
    /// its log before acknowledging a write.
    #[arg(long, env = "ETCD_UNSAFE_NO_FSYNC", num_args = 0..=1, default_missing_value = "true",
          value_parser = BoolishValueParser::new())]
    pub unsafe_no_fsync: Option<bool>,

    /// Accepted for compatibility; logging is controlled by RUST_LOG.
    #[arg(long, env = "ETCD_LOG_LEVEL")]
    pub log_level: Option<String>,

    /// Accepted for compatibility (`zap`, `capnslog`); ignored.
    #[arg(long, env = "ETCD_LOGGER")]
    pub logger: Option<String>,

    /// Accepted for compatibility; logs go to the journal or stderr.
    #[arg(long, env = "ETCD_LOG_OUTPUTS")]
    pub log_outputs: Option<String>,

    /// What to do when discovery fails: `exit`, or `proxy` (Ferrite has no
    /// proxy mode, so it exits with the discovery error either way).
    #[arg(long, env = "ETCD_DISCOVERY_FALLBACK", default_value = "proxy")]
    pub discovery_fallback: String,
}

/// Whether this member starts a cluster or joins one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClusterState {
    New,
    Existing,
}

/// One `name=url` entry of `--initial-cluster`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InitialMember {
    pub name: String,
    pub peer_urls: Vec<String>,
}

/// Validated settings.
#[derive(Debug, Clone)]
pub struct Settings {
    pub name: String,
    pub data_dir: PathBuf,
    pub listen_client: Vec<SocketAddr>,
    pub advertise_client_urls: Vec<String>,
    pub listen_peer: Vec<SocketAddr>,
    pub advertise_peer_urls: Vec<String>,
    /// Empty when bootstrapping through discovery.
    pub initial_cluster: Vec<InitialMember>,
    pub cluster_state: ClusterState,
    pub cluster_token: String,
    pub discovery: Option<String>,
    pub heartbeat: Duration,
    pub election_timeout: Duration,
    pub snapshot_count: u64,
    pub log_segment_bytes: u64,
}

/// A flag whose value cannot be used; names the flag and the value.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("--{flag}: invalid URL {value:?}: {reason}")]
    Url { flag: &'static str, value: String, reason: String },
    #[error("--{flag}: cannot resolve {value:?}: {reason}")]
    Resolve { flag: &'static str, value: String, reason: String },
    #[error("--initial-cluster: entry {entry:?} is not of the form name=url")]
    ClusterEntry { entry: String },
    #[error("--initial-cluster-state: {value:?} is neither \"new\" nor \"existing\"")]
    ClusterState { value: String },
    #[error(
        "--initial-cluster has {name}={cluster} but missing from --initial-advertise-peer-urls={advertised} \
         (resolved urls: {cluster:?} != {advertised:?})"
    )]
    PeerUrlMismatch { name: String, cluster: String, advertised: String },
    #[error("--initial-cluster: member {name:?} is not in the cluster ({cluster})")]
    NotInCluster { name: String, cluster: String },
    #[error("--discovery-fallback: {value:?} is neither \"exit\" nor \"proxy\"")]
    DiscoveryFallback { value: String },
    #[error("--initial-cluster and --discovery are mutually exclusive; choose one")]
    ClusterAndDiscovery,
    #[error("--{flag}: {value:?} is not host:port")]
    Addr { flag: &'static str, value: String },
    #[error("set only one of flags --{urls} and --{addr}")]
    AddrAndUrls { urls: &'static str, addr: &'static str },
    #[error("--election-timeout ({election} ms) must be at least 5 times --heartbeat-interval ({heartbeat} ms)")]
    Timeouts { election: u64, heartbeat: u64 },
}

const DEFAULT_CLIENT_URLS: &str = "http://localhost:2379,http://localhost:4001";
const DEFAULT_PEER_URLS: &str = "http://localhost:2380,http://localhost:7001";

/// The URLs of one side (clients or peers), from the URL flags or from
/// etcd 0.4's address flags, which configs written for CoreOS still use
/// (`coreos.etcd.addr: $private_ipv4:4001`).
struct Side<'a> {
    listen: (&'static str, &'a Option<String>),
    advertise: (&'static str, &'a Option<String>),
    addr: (&'static str, &'a Option<String>),
    bind_addr: (&'static str, &'a Option<String>),
    default_urls: &'static str,
}

impl Side<'_> {
    /// `(listen URLs, advertised URLs)`. As etcd 2 did, an address flag
    /// and its URL flag together are an error; as etcd 0.4 did, an
    /// advertised address alone means listening on every interface at its
    /// port.
    fn urls(&self) -> Result<(String, String), ConfigError> {
        let addr = self.addr.1.as_deref().map(|a| host_port(self.addr.0, a)).transpose()?;
        let bind = self.bind_addr.1.as_deref().map(|a| host_port(self.bind_addr.0, a)).transpose()?;
        for ((urls_flag, urls), (addr_flag, addr)) in
            [(self.advertise, (self.addr.0, &addr)), (self.listen, (self.bind_addr.0, &bind))]
        {
            if urls.is_some() && addr.is_some() {
                return Err(ConfigError::AddrAndUrls { urls: urls_flag, addr: addr_flag });
            }
        }
        let advertise = match (self.advertise.1, &addr) {
            (Some(urls), _) => urls.clone(),
            (None, Some((host, port))) => format!("http://{host}:{port}"),
            (None, None) => self.default_urls.to_owned(),
        };
        let listen = match (self.listen.1, &bind, &addr) {
            (Some(urls), _, _) => urls.clone(),
            (None, Some((host, port)), _) => format!("http://{host}:{port}"),
            (None, None, Some((_, port))) => format!("http://0.0.0.0:{port}"),
            (None, None, None) => self.default_urls.to_owned(),
        };
        Ok((listen, advertise))
    }
}

/// Splits `host:port` (`[v6]:port` too), as Go's `net.SplitHostPort`.
fn host_port(flag: &'static str, value: &str) -> Result<(String, u16), ConfigError> {
    let bad = || ConfigError::Addr { flag, value: value.to_owned() };
    let (host, port) = value.rsplit_once(':').ok_or_else(bad)?;
    let port = port.parse::<u16>().map_err(|_| bad())?;
    if host.is_empty() || (host.contains(':') && !(host.starts_with('[') && host.ends_with(']'))) {
        return Err(bad());
    }
    Ok((host.to_owned(), port))
}

/// Go flags also accept a single dash (`-name`); clap wants two.
pub fn normalize_args<I: IntoIterator<Item = String>>(args: I) -> Vec<String> {
    args.into_iter()
        .enumerate()
        .map(|(i, a)| {
            let single_dash_long = i > 0 && a.starts_with('-') && !a.starts_with("--") && a.len() > 2;
            if single_dash_long {
                format!("-{a}")
            } else {
                a
            }
        })
        .collect()
}

fn parse_urls(flag: &'static str, value: &str) -> Result<Vec<String>, ConfigError> {
    value
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|s| {
            let url =
                Url::parse(s).map_err(|e| ConfigError::Url { flag, value: s.to_owned(), reason: e.to_string() })?;
            if url.scheme() != "http" {
                return Err(ConfigError::Url {
                    flag,
                    value: s.to_owned(),
                    reason: format!("scheme {:?} is not supported (use http)", url.scheme()),
                });
            }
            if url.host_str().is_none() || url.port().is_none() {
                return Err(ConfigError::Url { flag, value: s.to_owned(), reason: "URL must have host:port".into() });
            }
            Ok(s.trim_end_matches('/').to_owned())
        })
        .collect()
}

fn resolve(flag: &'static str, urls: &[String]) -> Result<Vec<SocketAddr>, ConfigError> {
    let mut out = Vec::new();
    for u in urls {
        let url = Url::parse(u).map_err(|e| ConfigError::Url { flag, value: u.clone(), reason: e.to_string() })?;
        let host = url.host_str().unwrap_or_default().trim_start_matches('[').trim_end_matches(']');
        let port = url.port().unwrap_or_default();
        let addrs = (host, port).to_socket_addrs().map_err(|e| ConfigError::Resolve {
            flag,
            value: u.clone(),
            reason: e.to_string(),
        })?;
        // `localhost` resolves to both families; listening on the first
        // is what a user means and avoids double binds.
        if let Some(addr) = addrs.into_iter().next() {
            if !out.contains(&addr) {
                out.push(addr);
            }
        }
    }
    Ok(out)
}

/// Parses `name=url,name=url` (a name may repeat to give several URLs).
pub fn parse_initial_cluster(value: &str) -> Result<Vec<InitialMember>, ConfigError> {
    let mut members: Vec<InitialMember> = Vec::new();
    for entry in value.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        let (name, url) = entry.split_once('=').ok_or_else(|| ConfigError::ClusterEntry { entry: entry.to_owned() })?;
        let url = parse_urls("initial-cluster", url)?
            .pop()
            .ok_or_else(|| ConfigError::ClusterEntry { entry: entry.to_owned() })?;
        match members.iter_mut().find(|m| m.name == name) {
            Some(m) => m.peer_urls.push(url),
            None => members.push(InitialMember { name: name.to_owned(), peer_urls: vec![url] }),
        }
    }
    Ok(members)
}

impl Flags {
    /// Validates the flags into settings, naming the flag at fault.
    pub fn settings(&self) -> Result<Settings, ConfigError> {
        let (listen_client_urls, advertise_client_urls) = Side {
            listen: ("listen-client-urls", &self.listen_client_urls),
            advertise: ("advertise-client-urls", &self.advertise_client_urls),
            addr: ("addr", &self.addr),
            bind_addr: ("bind-addr", &self.bind_addr),
            default_urls: DEFAULT_CLIENT_URLS,
        }
        .urls()?;
        let (listen_peer_urls, advertise_peer_urls) = Side {
            listen: ("listen-peer-urls", &self.listen_peer_urls),
            advertise: ("initial-advertise-peer-urls", &self.initial_advertise_peer_urls),
            addr: ("peer-addr", &self.peer_addr),
            bind_addr: ("peer-bind-addr", &self.peer_bind_addr),
            default_urls: DEFAULT_PEER_URLS,
        }
        .urls()?;
        let advertise_peer_urls = parse_urls("initial-advertise-peer-urls", &advertise_peer_urls)?;
        let cluster_state = match self.initial_cluster_state.as_str() {
            "new" => ClusterState::New,
            "existing" => ClusterState::Existing,
            other => return Err(ConfigError::ClusterState { value: other.to_owned() }),
        };
        let initial_cluster = match (&self.initial_cluster, &self.discovery) {
            (Some(_), Some(_)) => return Err(ConfigError::ClusterAndDiscovery),
            (None, Some(_)) => Vec::new(),
            (Some(c), None) => parse_initial_cluster(c)?,
            (None, None) => vec![InitialMember { name: self.name.clone(), peer_urls: advertise_peer_urls.clone() }],
        };
        if self.discovery.is_none() {
            let cluster_text = self.initial_cluster.clone().unwrap_or_default();
            let me = initial_cluster
                .iter()
                .find(|m| m.name == self.name)
                .ok_or_else(|| ConfigError::NotInCluster { name: self.name.clone(), cluster: cluster_text })?;
            let mut theirs = me.peer_urls.clone();
            let mut ours = advertise_peer_urls.clone();
            theirs.sort();
            ours.sort();
            if theirs != ours {
                return Err(ConfigError::PeerUrlMismatch {
                    name: self.name.clone(),
                    cluster: me.peer_urls.join(","),
                    advertised: advertise_peer_urls.join(","),
                });
            }
        }
        if !matches!(self.discovery_fallback.as_str(), "exit" | "proxy") {
            return Err(ConfigError::DiscoveryFallback { value: self.discovery_fallback.clone() });
        }
        if self.election_timeout < 5 * self.heartbeat_interval {
            return Err(ConfigError::Timeouts { election: self.election_timeout, heartbeat: self.heartbeat_interval });
        }
        let listen_client_urls = parse_urls("listen-client-urls", &listen_client_urls)?;
        let listen_peer_urls = parse_urls("listen-peer-urls", &listen_peer_urls)?;
        Ok(Settings {
            name: self.name.clone(),
            data_dir: self.data_dir.clone().unwrap_or_else(|| PathBuf::from(format!("{}.etcd", self.name))),
            listen_client: resolve("listen-client-urls", &listen_client_urls)?,
            advertise_client_urls: parse_urls("advertise-client-urls", &advertise_client_urls)?,
            listen_peer: resolve("listen-peer-urls", &listen_peer_urls)?,
            advertise_peer_urls,
            initial_cluster,
            cluster_state,
            cluster_token: self.initial_cluster_token.clone(),
            discovery: self.discovery.clone(),
            heartbeat: Duration::from_millis(self.heartbeat_interval),
            election_timeout: Duration::from_millis(self.election_timeout),
            snapshot_count: self.snapshot_count.max(1),
            log_segment_bytes: self.log_segment_bytes,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn flags(args: &[&str]) -> Flags {
        let mut argv = vec!["ferrite-store".to_owned()];
        argv.extend(args.iter().map(|s| s.to_string()));
        Flags::try_parse_from(normalize_args(argv)).unwrap()
    }

    #[test]
    fn etcds_defaults_include_the_legacy_ports() {
        let s = flags(&[]).settings().unwrap();
        assert_eq!(s.advertise_client_urls, ["http://localhost:2379", "http://localhost:4001"]);
        assert_eq!(s.advertise_peer_urls, ["http://localhost:2380", "http://localhost:7001"]);
        assert_eq!(s.listen_peer.iter().map(|a| a.port()).collect::<Vec<_>>(), vec![2380, 7001]);
        assert_eq!(s.data_dir, PathBuf::from("default.etcd"));
        assert_eq!(s.listen_client.iter().map(|a| a.port()).collect::<Vec<_>>(), vec![2379, 4001]);
        assert_eq!(s.initial_cluster.len(), 1);
    }

    #[test]
    fn a_three_member_cluster_with_single_dash_flags() {
        let s = flags(&[
            "-name",
            "n2",
            "--initial-advertise-peer-urls",
            "http://127.0.0.1:2382",
            "--listen-peer-urls=http://127.0.0.1:2382",
            "--initial-cluster",
            "n1=http://127.0.0.1:2380,n2=http://127.0.0.1:2382,n3=http://127.0.0.1:2384",
            "--enable-v2",
        ])
        .settings()
        .unwrap();
        assert_eq!(s.name, "n2");
        assert_eq!(s.initial_cluster.len(), 3);
        assert_eq!(s.initial_cluster[1].peer_urls, vec!["http://127.0.0.1:2382".to_owned()]);
    }

    #[test]
    fn enable_v2_takes_an_optional_go_bool() {
        assert_eq!(flags(&["--enable-v2"]).enable_v2, Some(true));
        assert_eq!(flags(&["--enable-v2=false"]).enable_v2, Some(false));
    }

    #[test]
    fn errors_name_the_flag() {
        let err = flags(&["--initial-cluster", "n1=http://127.0.0.1:1"]).settings().unwrap_err().to_string();
        assert!(err.contains("--initial-cluster"), "{err}");
        let err = flags(&["--listen-client-urls", "unix:///x"]).settings().unwrap_err().to_string();
        assert!(err.starts_with("--listen-client-urls"), "{err}");
        let err = flags(&["--initial-cluster-state", "old"]).settings().unwrap_err().to_string();
        assert!(err.contains("\"old\""), "{err}");
        let err = flags(&["--initial-cluster", "justaname"]).settings().unwrap_err().to_string();
        assert!(err.contains("justaname"), "{err}");
    }

    #[test]
    fn etcd_0_4_addresses_advertise_and_listen_on_every_interface() {
        // What coreos-cloudinit writes for `coreos.etcd.addr` / `peer-addr`.
        let s = flags(&["--addr", "10.0.0.5:4001", "--peer-addr", "10.0.0.5:7001"]).settings().unwrap();
        assert_eq!(s.advertise_client_urls, ["http://10.0.0.5:4001"]);
        assert_eq!(s.listen_client, ["0.0.0.0:4001".parse::<SocketAddr>().unwrap()]);
        assert_eq!(s.advertise_peer_urls, ["http://10.0.0.5:7001"]);
        assert_eq!(s.listen_peer, ["0.0.0.0:7001".parse::<SocketAddr>().unwrap()]);
        assert_eq!(s.initial_cluster[0].peer_urls, ["http://10.0.0.5:7001"]);
    }

    #[test]
    fn a_bind_address_narrows_what_is_listened_on() {
        let s = flags(&["-addr", "10.0.0.5:4001", "-bind-addr", "127.0.0.1:4001"]).settings().unwrap();
        assert_eq!(s.advertise_client_urls, ["http://10.0.0.5:4001"]);
        assert_eq!(s.listen_client, ["127.0.0.1:4001".parse::<SocketAddr>().unwrap()]);
    }

    #[test]
    fn an_address_and_its_url_flag_together_are_refused() {
        let err = flags(&["--addr", "10.0.0.5:4001", "--advertise-client-urls", "http://10.0.0.5:2379"])
            .settings()
            .unwrap_err()
            .to_string();
        assert_eq!(err, "set only one of flags --advertise-client-urls and --addr");
        let err = flags(&["--peer-bind-addr", "0.0.0.0:7001", "--listen-peer-urls", "http://0.0.0.0:2380"])
            .settings()
            .unwrap_err()
            .to_string();
        assert_eq!(err, "set only one of flags --listen-peer-urls and --peer-bind-addr");
    }

    #[test]
    fn an_address_without_a_port_is_refused_naming_the_flag() {
        let err = flags(&["--peer-addr", "10.0.0.5"]).settings().unwrap_err().to_string();
        assert_eq!(err, "--peer-addr: \"10.0.0.5\" is not host:port");
        let err = flags(&["--addr", "::1:4001"]).settings().unwrap_err().to_string();
        assert!(err.starts_with("--addr:"), "{err}");
        assert!(flags(&["--addr", "[::1]:4001"]).settings().is_ok());
    }
}
