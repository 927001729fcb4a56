//! fleetd: one machine's agent, engine and API, run together.
//!
//! [`run`] registers the machine, tells systemd it is ready, serves the
//! API on the given listeners, runs the engine (unless disabled) and the
//! agent until told to stop. Told to shut down, it withdraws the machine
//! cleanly; told to reload, it stops its parts but leaves the units
//! running and the machine registered, and hands the listeners back.
//! [`serve`] is fleet's daemon loop over it: on SIGHUP the configuration
//! is read again and a new run takes over on the same listeners (fleet's
//! `reconfigure`). The binary supplies systemd as the unit manager; tests
//! supply the in-memory one.

use std::collections::BTreeMap;
use std::future::Future;
use std::net::IpAddr;
use std::os::fd::OwnedFd;
use std::path::Path;

use ferrite_etcd_client::Client;
use tokio::sync::watch;

use crate::agent::{Agent, AgentSettings, UnitManager};
use crate::config::{Config, DEFAULT_CONFIG_FILE};
use crate::engine::{Engine, EngineSettings};
use crate::registry::{MachineState, Registry};

/// Where the API is served.
#[derive(Debug)]
pub enum ApiListener {
    Unix(tokio::net::UnixListener),
    Tcp(tokio::net::TcpListener),
}

impl ApiListener {
    /// A listening socket received as a descriptor (from systemd): a unix
    /// or a TCP listener, whichever its address says it is.
    pub fn from_fd(fd: OwnedFd) -> std::io::Result<ApiListener> {
        let unix = std::os::unix::net::UnixListener::from(fd);
        if unix.local_addr().is_ok() {
            unix.set_nonblocking(true)?;
            return Ok(ApiListener::Unix(tokio::net::UnixListener::from_std(unix)?));
        }
        let tcp = std::net::TcpListener::from(OwnedFd::from(unix));
        if tcp.local_addr().is_ok() {
            tcp.set_nonblocking(true)?;
            return Ok(ApiListener::Tcp(tokio::net::TcpListener::from_std(tcp)?));
        }
        Err(std::io::Error::new(std::io::ErrorKind::InvalidInput, "neither a unix nor a TCP socket"))
    }

    /// Two listeners on the same socket (the descriptor duplicated): one
    /// to serve on, one to keep for the next run after a reload.
    fn duplicate(self) -> std::io::Result<(ApiListener, ApiListener)> {
        Ok(match self {
            ApiListener::Unix(l) => {
                let std = l.into_std()?;
                let copy = std.try_clone()?;
                (
                    ApiListener::Unix(tokio::net::UnixListener::from_std(std)?),
                    ApiListener::Unix(tokio::net::UnixListener::from_std(copy)?),
                )
            }
            ApiListener::Tcp(l) => {
                let std = l.into_std()?;
                let copy = std.try_clone()?;
                (
                    ApiListener::Tcp(tokio::net::TcpListener::from_std(std)?),
                    ApiListener::Tcp(tokio::net::TcpListener::from_std(copy)?),
                )
            }
        })
    }
}

/// The listeners systemd passed (socket activation: `LISTEN_PID` names
/// this process and `LISTEN_FDS` counts descriptors from 3), as fleet
/// takes them from its `fleet.socket`; `None` when none were passed. The
/// variables are removed, so no child process takes them for its own.
pub fn activated_listeners() -> Result<Option<Vec<ApiListener>>, FleetdError> {
    let fds = sd_notify::listen_fds().map_err(FleetdError::Activation)?;
    let mut listeners = Vec::new();
    for fd in fds {
        // SAFETY: systemd passed these descriptors to this process
        // (LISTEN_PID is ours), open, for it alone; nothing else in the
        // process owns or closes them, and each is taken once.
        #[allow(unsafe_code)]
        let owned = unsafe { <OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(fd) };
        let listener = ApiListener::from_fd(owned).map_err(|e| FleetdError::PassedSocket { fd, source: e })?;
        listeners.push(listener);
    }
    Ok((!listeners.is_empty()).then_some(listeners))
}

/// Why a run of fleetd ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stop {
    /// SIGTERM: the machine's units stop and the machine leaves the cluster.
    Shutdown,
    /// SIGHUP: the configuration is read again and the parts restart; the
    /// units run on and the machine stays registered.
    Reload,
}

/// How a run joins the cluster.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Join {
    /// A starting daemon: waits while another live machine holds its id.
    Register,
    /// After a reload: the machine object is its own, so it is rewritten
    /// (new metadata, address) rather than waited on.
    Rejoin,
}

#[derive(Debug, thiserror::Error)]
pub enum FleetdError {
    #[error("unable to determine local machine ID: {path}: {reason}")]
    MachineId { path: String, reason: String },
    #[error("etcd_servers: {0}")]
    Etcd(#[from] ferrite_etcd_client::Error),
    #[error("agent: {0}")]
    Agent(String),
    #[error("socket activation: {0}")]
    Activation(#[source] std::io::Error),
    #[error("socket activation: descriptor {fd}: {source}")]
    PassedSocket { fd: i32, source: std::io::Error },
    #[error("cannot keep the API listener for a reload: {0}")]
    Listener(#[source] std::io::Error),
    #[error("Unable to use config file {path}: {source}")]
    ConfigFile { path: String, source: std::io::Error },
    #[error(transparent)]
    Config(#[from] crate::config::ConfigError),
    #[error("unit manager: {0}")]
    Units(#[from] crate::agent::systemd::SystemdUnitsError),
}

/// The machine id as fleet reads it: `/etc/machine-id`, trimmed.
pub fn machine_id(path: &Path) -> Result<String, FleetdError> {
    let bad = |reason: String| FleetdError::MachineId { path: path.display().to_string(), reason };
    let text = std::fs::read_to_string(path).map_err(|e| bad(e.to_string()))?;
    let id = text.trim();
    if id.is_empty() {
        return Err(bad("empty".to_owned()));
    }
    Ok(id.to_owned())
}

/// The address other machines reach this one at, when the configuration
/// does not say: the source address of the default route, which the
/// kernel picks when a UDP socket is connected (connecting a UDP socket
/// sends nothing).
pub fn default_route_address() -> Option<IpAddr> {
    let socket = std::net::UdpSocket::bind("0.0.0.0:0").ok()?;
    socket.connect("192.0.2.1:9").ok()?;
    let ip = socket.local_addr().ok()?.ip();
    (!ip.is_unspecified() && !ip.is_loopback()).then_some(ip)
}

/// This machine as it registers: id, address, metadata, version.
pub fn machine_state(config: &Config, id: String) -> MachineState {
    let public_ip = config.public_ip.or_else(default_route_address).map(|ip| ip.to_string()).unwrap_or_default();
    MachineState {
        id,
        public_ip,
        metadata: config.metadata.clone(),
        capabilities: Some([("DISABLE_ENGINE".to_owned(), config.disable_engine), ("GRPC".to_owned(), false)].into()),
        version: env!("CARGO_PKG_VERSION").to_owned(),
    }
}

/// Reads fleet's configuration as fleetd does at start and on SIGHUP: the
/// file (`config`, else [`DEFAULT_CONFIG_FILE`] when it exists) under the
/// `FLEET_*` variables of `env`; warnings are logged. With the machine id
/// from `machine_id_file`, this machine as it registers.
pub fn load_config(
    config: Option<&Path>,
    env: &BTreeMap<String, String>,
    machine_id_file: &Path,
) -> Result<(Config, MachineState), FleetdError> {
    let default = Path::new(DEFAULT_CONFIG_FILE);
    let path = config.or_else(|| default.exists().then_some(default));
    let text = match path {
        Some(p) => Some(
            std::fs::read_to_string(p)
                .map_err(|source| FleetdError::ConfigFile { path: p.display().to_string(), source })?,
        ),
        None => None,
    };
    let path_text = path.map(|p| p.display().to_string()).unwrap_or_default();
    let loaded = crate::config::load(text.as_deref().map(|t| (path_text.as_str(), t)), env)?;
    for warning in &loaded.warnings {
        tracing::warn!("{warning}");
    }
    let machine = machine_state(&loaded.config, machine_id(machine_id_file)?);
    Ok((loaded.config, machine))
}

/// Runs fleetd until `stop` resolves; why it stopped, and the listeners
/// (still open) for a run after a reload. `ready` is called once the
/// machine is registered and the API serves.
pub async fn run<M: UnitManager + 'static>(
    config: Config,
    machine: MachineState,
    listeners: Vec<ApiListener>,
    manager: M,
    join: Join,
    ready: impl FnOnce(),
    stop: impl Future<Output = Stop> + Send + 'static,
) -> Result<(Stop, Vec<ApiListener>), FleetdError> {
    let client = Client::builder(config.etcd_servers.iter().map(String::as_str))
        .request_timeout(config.etcd_request_timeout.max(std::time::Duration::from_secs(1)) * 5)
        .build()?;
    let registry = Registry::new(client, &config.etcd_key_prefix);
    let (stop_tx, stop_rx) = watch::channel(None);
    let stopped = move || {
        let mut rx = stop_rx.clone();
        async move {
            let _ = rx.wait_for(Option::is_some).await;
        }
    };
    let why = stop_tx.subscribe();
    tokio::spawn(async move {
        let why = stop.await;
        let _ = stop_tx.send(Some(why));
    });

    let agent_settings =
        AgentSettings { machine: machine.clone(), ttl: config.agent_ttl, resync: std::time::Duration::from_secs(60) };
    let mut agent = Agent::new(registry.clone(), agent_settings, manager);
    let joined = async {
        match join {
            Join::Register => agent.register().await,
            Join::Rejoin => agent.heartbeat().await,
        }
    };
    tokio::select! {
        () = stopped() => {
            let why = why.borrow().unwrap_or(Stop::Shutdown);
            return Ok((why, listeners));
        }
        joined = joined => joined.map_err(|e| FleetdError::Agent(e.to_string()))?,
    }
    tracing::info!(machine = %machine.id, ip = %machine.public_ip, metadata = ?machine.metadata, "machine registered");

    let mut servers = Vec::new();
    let mut kept = Vec::new();
    for listener in listeners {
        let (listener, keep) = listener.duplicate().map_err(FleetdError::Listener)?;
        kept.push(keep);
        let app = crate::api::router(registry.clone(), config.token_limit);
        let stop = stopped();
        servers.push(tokio::spawn(async move {
            let outcome = match listener {
                ApiListener::Unix(l) => axum::serve(l, app).with_graceful_shutdown(stop).await,
                ApiListener::Tcp(l) => axum::serve(l, app).with_graceful_shutdown(stop).await,
            };
            if let Err(e) = outcome {
                tracing::error!(error = %e, "Failed serving HTTP on listener");
            }
        }));
    }
    let engine = if config.disable_engine {
        tracing::info!("Not starting engine; disable-engine is set");
        None
    } else {
        let settings = EngineSettings {
            machine_id: machine.id.clone(),
            interval: config.engine_reconcile_interval,
            watches: !config.disable_watches,
        };
        Some(tokio::spawn(Engine::new(registry.clone(), settings).run(stopped())))
    };
    ready();
    agent.follow(stopped()).await;
    if let Some(engine) = engine {
        let _ = engine.await;
    }
    for server in servers {
        let _ = server.await;
    }
    let why = why.borrow().unwrap_or(Stop::Shutdown);
    if why == Stop::Shutdown {
        agent.purge().await.map_err(|e| FleetdError::Agent(e.to_string()))?;
    }
    Ok((why, kept))
}

/// fleetd for good: [`run`]s on what `load` reads until `signals` says
/// [`Stop::Shutdown`]; on [`Stop::Reload`] it reads the configuration
/// again and runs anew on the same listeners, as fleet's daemon does on
/// SIGHUP. A configuration that no longer loads ends it, as in fleet.
/// `ready` is called each time a run serves.
pub async fn serve<M: UnitManager + 'static>(
    load: impl Fn() -> Result<(Config, MachineState), FleetdError>,
    mut listeners: Vec<ApiListener>,
    manager: impl Fn(&Config) -> Result<M, FleetdError>,
    mut ready: impl FnMut(),
    signals: watch::Receiver<Option<Stop>>,
) -> Result<(), FleetdError> {
    let mut join = Join::Register;
    loop {
        let (config, machine) = load()?;
        let units = manager(&config)?;
        let mut signal = signals.clone();
        // What came during the last run's teardown: a shutdown still holds.
        if *signal.borrow_and_update() == Some(Stop::Shutdown) {
            return Ok(());
        }
        let stop = async move {
            match signal.changed().await {
                Ok(()) => signal.borrow().unwrap_or(Stop::Shutdown),
                Err(_) => Stop::Shutdown,
            }
        };
        let (why, kept) = run(config, machine, listeners, units, join, &mut ready, stop).await?;
        if why == Stop::Shutdown {
            return Ok(());
        }
        tracing::info!("Restarting server components");
        listeners = kept;
        join = Join::Rejoin;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Serves one connection on `listener` and checks it came through.
    async fn accepts(listener: ApiListener, connect: impl Future<Output = std::io::Result<()>>) {
        let accept = async {
            match listener {
                ApiListener::Unix(l) => l.accept().await.map(|_| ()),
                ApiListener::Tcp(l) => l.accept().await.map(|_| ()),
            }
        };
        let (accepted, connected) = tokio::join!(accept, connect);
        accepted.unwrap();
        connected.unwrap();
    }

    #[tokio::test]
    async fn a_passed_unix_socket_becomes_a_unix_listener_that_serves() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("fleet.sock");
        let fd = OwnedFd::from(std::os::unix::net::UnixListener::bind(&path).unwrap());
        let listener = ApiListener::from_fd(fd).unwrap();
        assert!(matches!(listener, ApiListener::Unix(_)), "{listener:?}");
        accepts(listener, async { tokio::net::UnixStream::connect(&path).await.map(|_| ()) }).await;
    }

    #[tokio::test]
    async fn a_passed_tcp_socket_becomes_a_tcp_listener_that_serves() {
        let std = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = std.local_addr().unwrap();
        let listener = ApiListener::from_fd(OwnedFd::from(std)).unwrap();
        assert!(matches!(listener, ApiListener::Tcp(_)), "{listener:?}");
        accepts(listener, async { tokio::net::TcpStream::connect(addr).await.map(|_| ()) }).await;
    }

    #[test]
    fn a_passed_descriptor_that_is_no_socket_is_refused() {
        let file = OwnedFd::from(tempfile::tempfile().unwrap());
        let error = ApiListener::from_fd(file).unwrap_err();
        assert_eq!(error.to_string(), "neither a unix nor a TCP socket");
    }

    #[tokio::test]
    async fn a_duplicated_listener_serves_after_the_first_is_closed() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("fleet.sock");
        let listener = ApiListener::Unix(tokio::net::UnixListener::bind(&path).unwrap());
        let (first, kept) = listener.duplicate().unwrap();
        drop(first);
        accepts(kept, async { tokio::net::UnixStream::connect(&path).await.map(|_| ()) }).await;
    }
}
