//! fleetd wired whole (agent, engine, API on a unix socket) with
//! in-memory unit managers, driven by fleetctl through the socket.

use std::time::Duration;

use clap::Parser;
use ferrite_fleet::agent::memory::MemoryUnits;
use ferrite_fleet::config::Config;
use ferrite_fleet::fleetctl::{run as fleetctl, Cli, Io};
use ferrite_fleet::fleetd::{self, ApiListener};

use crate::store::Store;

async fn ctl(endpoint: &str, args: &[&str]) -> (i32, String, String) {
    let mut argv = vec!["fleetctl".to_owned(), format!("--endpoint={endpoint}")];
    argv.extend(args.iter().map(|a| a.to_string()));
    let (mut out, mut err) = (Vec::new(), Vec::new());
    let code = fleetctl(Cli::try_parse_from(argv).unwrap(), &mut Io { out: &mut out, err: &mut err }).await;
    (code, String::from_utf8(out).unwrap(), String::from_utf8(err).unwrap())
}

#[tokio::test]
async fn two_fleetds_serve_fleetctl_over_a_unix_socket_and_withdraw_on_stop() {
    let store = Store::start().await;
    let dir = tempfile::tempdir().unwrap();
    let config = Config {
        etcd_servers: vec![store.url.clone()],
        engine_reconcile_interval: Duration::from_millis(300),
        agent_ttl: Duration::from_secs(10),
        ..Config::default()
    };
    let mut stops = Vec::new();
    let mut daemons = Vec::new();
    let mut managers = Vec::new();
    for (i, id) in ["1111111111111111", "2222222222222222"].into_iter().enumerate() {
        let socket = dir.path().join(format!("fleet{i}.sock"));
        let listener = ApiListener::Unix(tokio::net::UnixListener::bind(&socket).unwrap());
        let mut config = config.clone();
        config.metadata = [("role".to_owned(), format!("r{i}"))].into();
        config.public_ip = Some(format!("10.0.0.{}", i + 1).parse().unwrap());
        let machine = fleetd::machine_state(&config, id.to_owned());
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let (ready_tx, ready_rx) = tokio::sync::oneshot::channel::<()>();
        let manager = MemoryUnits::new();
        managers.push(manager.clone());
        daemons.push(tokio::spawn(fleetd::run(
            config,
            machine,
            vec![listener],
            manager,
            move || {
                let _ = ready_tx.send(());
            },
            async move {
                let _ = stopped.await;
            },
        )));
        ready_rx.await.unwrap();
        stops.push(stop);
    }
    let endpoint = format!("unix://{}", dir.path().join("fleet0.sock").display());

    let (code, out, _) = ctl(&endpoint, &["list-machines", "--no-legend"]).await;
    assert_eq!(code, 0);
    assert_eq!(out, "11111111...\t10.0.0.1\trole=r0\n22222222...\t10.0.0.2\trole=r1\n");

    let unit = dir.path().join("db.service");
    std::fs::write(&unit, "[Service]\nExecStart=/bin/sleep 1000\n[X-Fleet]\nMachineMetadata=role=r1\n").unwrap();
    let (code, out, err) = ctl(&endpoint, &["start", unit.to_str().unwrap()]).await;
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("Unit db.service launched on 22222222.../10.0.0.2"), "{out}");
    assert!(managers[1].running().contains("db.service"));

    // Stopping the second fleetd unloads its units and withdraws it; the
    // engine (on the first) finds nowhere else the unit may run.
    stops.pop().unwrap().send(()).unwrap();
    daemons.pop().unwrap().await.unwrap().unwrap();
    assert!(managers[1].files().is_empty());
    let (_, out, _) = ctl(&endpoint, &["list-machines", "--no-legend", "--fields", "machine"]).await;
    assert_eq!(out, "11111111...\n");
    stops.pop().unwrap().send(()).unwrap();
    daemons.pop().unwrap().await.unwrap().unwrap();
}
