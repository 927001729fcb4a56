//! `ferrite-registrator`: announces every published container port in the
//! store, as gliderlabs/registrator's etcd backend does.
//!
//! - [`service`]: a container's inspection → its services (pure; the
//!   naming, metadata and address rules).
//! - [`registry`]: the `etcd://host:port/prefix` URI and the store writes
//!   (`<prefix>/<name>/<hostname>:<container>:<port>` = `ip:port`, TTL).
//! - [`bridge`]: the registered state, kept in step with Docker and the
//!   store (sync, refresh, retry, cleanup).
//! - [`run`]: the event loop: subscribe to Docker's events, sync, then
//!   follow starts and deaths; resync when Docker's event stream breaks
//!   (a daemon restart); retry with backoff while the store is unreachable.

pub mod bridge;
pub mod registry;
pub mod service;

use std::collections::HashMap;
use std::ffi::OsString;
use std::future::Future;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bollard::query_parameters::EventsOptions;
use bollard::Docker;
use futures::StreamExt;

use crate::bridge::Bridge;
use crate::registry::{Backoff, Registry, RegistryUri};

/// Everything the registrator needs, validated.
#[derive(Debug, Clone)]
pub struct Config {
    /// Docker's API socket (`unix://` or a path).
    pub docker_socket: String,
    pub registry: RegistryUri,
    pub service: service::Settings,
    /// `-ttl-refresh`: how often TTLs are reset.
    pub ttl_refresh: Option<Duration>,
    /// `-resync`: how often to list every container again.
    pub resync: Option<Duration>,
    /// `-cleanup`: delete this host's keys that no running container has.
    pub cleanup: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Uri(#[from] registry::UriError),
    #[error("-ttl and -ttl-refresh must be specified together or not at all")]
    TtlWithoutRefresh,
    #[error("-ttl ({ttl}s) must be greater than -ttl-refresh ({refresh}s)")]
    TtlNotAboveRefresh { ttl: u64, refresh: u64 },
    #[error("invalid store endpoint")]
    Store(#[from] ferrite_etcd_client::Error),
    #[error("cannot use the Docker socket {socket}")]
    Docker {
        socket: String,
        #[source]
        source: bollard::errors::Error,
    },
}

/// The registrator's timing flags, checked as registrator checks them.
pub fn check_ttl(ttl: u64, ttl_refresh: u64) -> Result<(Option<Duration>, Option<Duration>), Error> {
    match (ttl, ttl_refresh) {
        (0, 0) => Ok((None, None)),
        (0, _) | (_, 0) => Err(Error::TtlWithoutRefresh),
        (ttl, refresh) if ttl <= refresh => Err(Error::TtlNotAboveRefresh { ttl, refresh }),
        (ttl, refresh) => Ok((Some(Duration::from_secs(ttl)), Some(Duration::from_secs(refresh)))),
    }
}

/// Registrator's flags are Go flags (`-ttl 30`, `-internal`); clap wants
/// `--ttl`. Rewrites the single-dash long flags it knows, leaving
/// everything else (values, the URI) alone.
pub fn go_style_args(args: impl IntoIterator<Item = OsString>, flags: &[&str]) -> Vec<OsString> {
    args.into_iter()
        .map(|arg| {
            let Some(text) = arg.to_str() else { return arg };
            let Some(rest) = text.strip_prefix('-') else { return arg };
            if rest.starts_with('-') {
                return arg;
            }
            let name = rest.split_once('=').map_or(rest, |(name, _)| name);
            if flags.contains(&name) {
                OsString::from(format!("-{text}"))
            } else {
                arg
            }
        })
        .collect()
}

/// The hostname's first address, as registrator resolves `0.0.0.0`.
pub async fn resolve_hostname(hostname: &str) -> Option<String> {
    let addrs = tokio::net::lookup_host((hostname, 0)).await.ok()?;
    let addrs: Vec<_> = addrs.collect();
    addrs.iter().find(|a| a.is_ipv4()).or(addrs.first()).map(|a| a.ip().to_string())
}

fn connect_docker(socket: &str) -> Result<Docker, Error> {
    Docker::connect_with_socket(socket, 120, bollard::API_DEFAULT_VERSION)
        .map_err(|source| Error::Docker { socket: socket.to_owned(), source })
}

async fn tick(interval: &mut Option<tokio::time::Interval>) {
    match interval {
        Some(interval) => {
            interval.tick().await;
        }
        None => std::future::pending().await,
    }
}

fn every(period: Option<Duration>) -> Option<tokio::time::Interval> {
    period.map(|p| {
        let mut interval = tokio::time::interval_at(tokio::time::Instant::now() + p, p);
        interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        interval
    })
}

/// Runs until `shutdown` resolves. `ready` is called after the first full
/// sync.
pub async fn run(config: Config, shutdown: impl Future<Output = ()>, ready: impl FnOnce()) -> Result<(), Error> {
    let client = ferrite_etcd_client::Client::new(&config.registry.endpoints)?;
    let registry = Registry::new(client, &config.registry.prefix);
    let docker = connect_docker(&config.docker_socket)?;
    let mut bridge = Bridge::new(docker.clone(), registry, config.service.clone(), config.cleanup);
    let mut ready = Some(ready);
    let mut docker_backoff = Backoff::new();
    let mut store_backoff = Backoff::new();
    let mut refresh = every(config.ttl_refresh);
    let mut resync = every(config.resync);
    tokio::pin!(shutdown);

    loop {
        // Docker first: an engine that does not answer (restarting) is
        // waited for.
        let docker = match docker.clone().negotiate_version().await {
            Ok(d) => d,
            Err(e) => {
                let delay = docker_backoff.next_delay();
                tracing::warn!(error = %ferrite_daemon::error_chain(&e), retry_in = ?delay, "Docker does not answer");
                tokio::select! {
                    () = &mut shutdown => return Ok(()),
                    () = tokio::time::sleep(delay) => continue,
                }
            }
        };
        // Subscribe before the sync: events since a moment before it are
        // replayed, so a container that starts or dies meanwhile is seen.
        let since = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
        let filters = HashMap::from([
            ("type".to_owned(), vec!["container".to_owned()]),
            ("event".to_owned(), vec!["start".to_owned(), "die".to_owned()]),
        ]);
        let options = EventsOptions { since: Some(since.to_string()), until: None, filters: Some(filters) };
        let mut events = Box::pin(docker.events(Some(options)));
        bridge.set_docker(docker.clone());
        if let Err(e) = bridge.sync().await {
            let delay = docker_backoff.next_delay();
            tracing::warn!(error = %ferrite_daemon::error_chain(&e), retry_in = ?delay, "cannot list containers");
            tokio::select! {
                () = &mut shutdown => return Ok(()),
                () = tokio::time::sleep(delay) => continue,
            }
        }
        docker_backoff.reset();
        if let Some(ready) = ready.take() {
            ready();
        }
        let mut retry_at: Option<tokio::time::Instant> = None;
        loop {
            // While the store lacks registrations, write them again with
            // backoff until it takes them all.
            if bridge.unsynced() {
                retry_at.get_or_insert_with(|| tokio::time::Instant::now() + store_backoff.next_delay());
            } else {
                retry_at = None;
                store_backoff.reset();
            }
            let retry = async {
                match retry_at {
                    Some(at) => tokio::time::sleep_until(at).await,
                    None => std::future::pending::<()>().await,
                }
            };
            tokio::select! {
                () = &mut shutdown => return Ok(()),
                event = events.next() => match event {
                    Some(Ok(message)) => {
                        let id = message.actor.and_then(|a| a.id).unwrap_or_default();
                        match message.action.as_deref() {
                            Some("start") => bridge.add(&id).await,
                            Some("die") => bridge.remove(&id).await,
                            _ => {}
                        }
                    }
                    Some(Err(e)) => {
                        tracing::warn!(error = %ferrite_daemon::error_chain(&e), "Docker's event stream broke; resyncing");
                        break;
                    }
                    None => {
                        tracing::warn!("Docker's event stream ended; resyncing");
                        break;
                    }
                },
                () = tick(&mut refresh) => bridge.refresh().await,
                () = tick(&mut resync) => {
                    if let Err(e) = bridge.sync().await {
                        tracing::warn!(error = %ferrite_daemon::error_chain(&e), "resync: cannot list containers");
                    }
                }
                () = retry => {
                    retry_at = None;
                    tracing::info!("writing registrations to the store again");
                    bridge.retry().await;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ttl_flags_are_checked_as_registrator_checks_them() {
        assert_eq!(check_ttl(0, 0).unwrap(), (None, None));
        assert_eq!(check_ttl(30, 20).unwrap(), (Some(Duration::from_secs(30)), Some(Duration::from_secs(20))));
        assert!(matches!(check_ttl(30, 0), Err(Error::TtlWithoutRefresh)));
        assert!(matches!(check_ttl(0, 10), Err(Error::TtlWithoutRefresh)));
        assert!(matches!(check_ttl(10, 10), Err(Error::TtlNotAboveRefresh { ttl: 10, refresh: 10 })));
    }

    #[test]
    fn single_dash_flags_become_double_dash() {
        let args = ["registrator", "-ip", "10.0.0.1", "-ttl=30", "-internal", "--resync", "5", "-x", "etcd://h:1/s"]
            .map(OsString::from);
        let flags = ["ip", "ttl", "internal", "resync"];
        let out: Vec<String> = go_style_args(args, &flags).into_iter().map(|a| a.into_string().unwrap()).collect();
        assert_eq!(
            out,
            ["registrator", "--ip", "10.0.0.1", "--ttl=30", "--internal", "--resync", "5", "-x", "etcd://h:1/s"]
        );
    }
}
