//! fleetd: one machine's agent, engine and API, run together.
//!
//! [`run`] registers the machine, tells systemd it is ready, serves the
//! API on the given listeners, runs the engine (unless disabled) and the
//! agent until shutdown, and on shutdown withdraws the machine cleanly.
//! The binary supplies systemd as the unit manager; tests supply the
//! in-memory one.

use std::future::Future;
use std::net::IpAddr;
use std::path::Path;

use ferrite_etcd_client::Client;

use crate::agent::{Agent, AgentError, AgentSettings, UnitManager};
use crate::config::Config;
use crate::engine::{Engine, EngineSettings};
use crate::registry::{MachineState, Registry};

/// Where the API is served.
#[derive(Debug)]
pub enum ApiListener {
    Unix(tokio::net::UnixListener),
    Tcp(tokio::net::TcpListener),
}

#[derive(Debug, thiserror::Error)]
pub enum FleetdError {
    #[error("unable to determine local machine ID: {path}: {reason}")]
    MachineId { path: String, reason: String },
    #[error("etcd_servers: {0}")]
    Etcd(#[from] ferrite_etcd_client::Error),
    #[error("agent: {0}")]
    Agent(String),
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

/// Runs fleetd until `shutdown` resolves. `ready` is called once the
/// machine is registered and the API serves.
pub async fn run<M: UnitManager + 'static>(
    config: Config,
    machine: MachineState,
    listeners: Vec<ApiListener>,
    manager: M,
    ready: impl FnOnce(),
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), FleetdError> {
    let client = Client::builder(config.etcd_servers.iter().map(String::as_str))
        .request_timeout(config.etcd_request_timeout.max(std::time::Duration::from_secs(1)) * 5)
        .build()?;
    let registry = Registry::new(client, &config.etcd_key_prefix);
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let stopped = move || {
        let mut rx = stop_rx.clone();
        async move {
            let _ = rx.wait_for(|s| *s).await;
        }
    };
    tokio::spawn(async move {
        shutdown.await;
        let _ = stop_tx.send(true);
    });

    let agent_settings =
        AgentSettings { machine: machine.clone(), ttl: config.agent_ttl, resync: std::time::Duration::from_secs(60) };
    let agent = Agent::new(registry.clone(), agent_settings, manager);
    tokio::select! {
        () = stopped() => return Ok(()),
        registered = agent.register() => registered.map_err(|e| FleetdError::Agent(e.to_string()))?,
    }
    tracing::info!(machine = %machine.id, ip = %machine.public_ip, "machine registered");

    let mut servers = Vec::new();
    for listener in listeners {
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
    let outcome = agent.follow(stopped()).await;
    if let Some(engine) = engine {
        let _ = engine.await;
    }
    for server in servers {
        let _ = server.await;
    }
    outcome.map_err(|e: AgentError<M::Error>| FleetdError::Agent(e.to_string()))
}
