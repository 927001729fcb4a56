//! fleetd wired whole (agent, engine, API on a unix socket) with
//! in-memory unit managers, driven by fleetctl through the socket.

use std::time::Duration;

use clap::Parser;
use ferrite_fleet::agent::memory::MemoryUnits;
use ferrite_fleet::config::Config;
use ferrite_fleet::fleetctl::{run as fleetctl, Cli, Io};
use ferrite_fleet::fleetd::{self, ApiListener, Join, Stop};

use ferrite_store::testing::OneMember as Store;

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
        etcd_servers: vec![store.url().to_owned()],
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
            Join::Register,
            move || {
                let _ = ready_tx.send(());
            },
            async move {
                let _ = stopped.await;
                Stop::Shutdown
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

#[tokio::test]
async fn a_reload_reads_the_configuration_again_and_keeps_units_machine_and_socket() {
    let store = Store::start().await;
    let dir = tempfile::tempdir().unwrap();
    let conf = dir.path().join("fleet.conf");
    let write_conf = |role: &str| {
        let text = format!(
            "etcd_servers={}\nmetadata=\"role={role}\"\npublic_ip=10.0.0.1\nagent_ttl=10s\nengine_reconcile_interval=0.3\n",
            store.url()
        );
        std::fs::write(&conf, text).unwrap();
    };
    write_conf("old");
    let id_file = dir.path().join("machine-id");
    std::fs::write(&id_file, "3333333333333333\n").unwrap();
    let socket = dir.path().join("fleet.sock");
    let listener = ApiListener::Unix(tokio::net::UnixListener::bind(&socket).unwrap());
    let manager = MemoryUnits::new();
    let (signals, signals_rx) = tokio::sync::watch::channel(None);
    let (ready_tx, mut ready) = tokio::sync::mpsc::unbounded_channel();
    let (conf_path, units) = (conf.clone(), manager.clone());
    let daemon = tokio::spawn(fleetd::serve(
        move || fleetd::load_config(Some(&conf_path), &Default::default(), &id_file),
        vec![listener],
        move |_: &Config| Ok(units.clone()),
        move || {
            let _ = ready_tx.send(());
        },
        signals_rx,
    ));
    ready.recv().await.unwrap();
    let endpoint = format!("unix://{}", socket.display());
    let unit = dir.path().join("db.service");
    std::fs::write(&unit, "[Service]\nExecStart=/bin/sleep 1000\n").unwrap();
    let (code, _, err) = ctl(&endpoint, &["start", unit.to_str().unwrap()]).await;
    assert_eq!(code, 0, "{err}");

    write_conf("new");
    signals.send(Some(Stop::Reload)).unwrap();
    ready.recv().await.unwrap();
    // The same socket serves; the machine is there once, as configured now.
    let (code, out, err) = ctl(&endpoint, &["list-machines", "--no-legend"]).await;
    assert_eq!(code, 0, "{err}");
    assert_eq!(out, "33333333...\t10.0.0.1\trole=new\n");
    // The unit ran on through the reload (never stopped or unloaded), and
    // fleet still has it launched.
    assert!(manager.running().contains("db.service"));
    let calls = manager.calls();
    assert!(!calls.iter().any(|c| c == "stop db.service" || c == "unload db.service"), "{calls:?}");
    let (_, out, _) = ctl(&endpoint, &["list-unit-files", "--no-legend", "--fields", "unit,dstate,state"]).await;
    assert_eq!(out, "db.service\tlaunched\tlaunched\n");

    // A reload onto a configuration that no longer loads ends fleetd.
    std::fs::write(&conf, "agent_ttl=soon\n").unwrap();
    signals.send(Some(Stop::Reload)).unwrap();
    let error = daemon.await.unwrap().unwrap_err().to_string();
    assert!(error.contains("agent_ttl"), "{error}");
}

#[tokio::test]
async fn a_shutdown_after_a_reload_withdraws_the_machine() {
    let store = Store::start().await;
    let dir = tempfile::tempdir().unwrap();
    let conf = dir.path().join("fleet.conf");
    std::fs::write(&conf, format!("etcd_servers={}\nagent_ttl=10s\n", store.url())).unwrap();
    let id_file = dir.path().join("machine-id");
    std::fs::write(&id_file, "4444444444444444\n").unwrap();
    let socket = dir.path().join("fleet.sock");
    let listener = ApiListener::Unix(tokio::net::UnixListener::bind(&socket).unwrap());
    let (signals, signals_rx) = tokio::sync::watch::channel(None);
    let (ready_tx, mut ready) = tokio::sync::mpsc::unbounded_channel();
    let daemon = tokio::spawn(fleetd::serve(
        move || fleetd::load_config(Some(&conf), &Default::default(), &id_file),
        vec![listener],
        |_: &Config| Ok(MemoryUnits::new()),
        move || {
            let _ = ready_tx.send(());
        },
        signals_rx,
    ));
    ready.recv().await.unwrap();
    signals.send(Some(Stop::Reload)).unwrap();
    ready.recv().await.unwrap();
    signals.send(Some(Stop::Shutdown)).unwrap();
    daemon.await.unwrap().unwrap();
    let registry = ferrite_fleet::registry::Registry::new(store.client(), "/_coreos.com/fleet/");
    assert_eq!(registry.machines().await.unwrap(), [], "the machine is still registered after the shutdown");
}
