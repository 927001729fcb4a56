//! fleetctl against the API of a cluster of an engine and two agents (with
//! fake systemd) on a real store: the lifecycle with fleetctl's output.

use std::time::Duration;

use clap::Parser;
use ferrite_fleet::agent::{Agent, AgentSettings};
use ferrite_fleet::api;
use ferrite_fleet::engine::{Engine, EngineSettings};
use ferrite_fleet::fleetctl::{run, Cli, Io};
use ferrite_fleet::registry::{MachineState, Registry};

use ferrite_fleet::agent::memory::MemoryUnits;
use ferrite_store::testing::OneMember as Store;

struct Cluster {
    endpoint: String,
    dir: tempfile::TempDir,
    _store: Store,
    _stop: tokio::sync::watch::Sender<bool>,
}

async fn cluster() -> Cluster {
    let store = Store::start().await;
    let registry = Registry::new(store.client(), "/_coreos.com/fleet/");
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let until = |mut rx: tokio::sync::watch::Receiver<bool>| async move {
        let _ = rx.wait_for(|s| *s).await;
    };
    for (id, ip) in [("aaaaaaaaaaaa0001", "10.0.0.1"), ("bbbbbbbbbbbb0002", "10.0.0.2")] {
        let settings = AgentSettings {
            machine: MachineState { id: id.into(), public_ip: ip.into(), ..MachineState::default() },
            ttl: Duration::from_secs(10),
            resync: Duration::from_secs(60),
        };
        tokio::spawn(Agent::new(registry.clone(), settings, MemoryUnits::new()).run(until(stopped.clone())));
    }
    let engine =
        EngineSettings { machine_id: "aaaaaaaaaaaa0001".into(), interval: Duration::from_millis(200), watches: true };
    tokio::spawn(Engine::new(registry.clone(), engine).run(until(stopped.clone())));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let endpoint = format!("http://{}", listener.local_addr().unwrap());
    let app = api::router(registry.clone(), 100);
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    while registry.machines().await.unwrap().len() < 2 {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("hello.service"), "[Service]\nExecStart=/bin/sleep 1000\n").unwrap();
    std::fs::write(
        dir.path().join("web@.service"),
        "[Unit]\nDescription=web %i\n[Service]\nExecStart=/bin/sleep 1000\n[X-Fleet]\nConflicts=web@*.service\n",
    )
    .unwrap();
    Cluster { endpoint, dir, _store: store, _stop: stop }
}

impl Cluster {
    /// Runs fleetctl with these arguments: (exit code, stdout, stderr).
    async fn fleetctl(&self, args: &[&str]) -> (i32, String, String) {
        let mut argv = vec!["fleetctl".to_owned(), format!("--endpoint={}", self.endpoint)];
        argv.extend(args.iter().map(|a| a.replace("$DIR", &self.dir.path().display().to_string())));
        let cli = Cli::try_parse_from(argv).unwrap();
        let (mut out, mut err) = (Vec::new(), Vec::new());
        let code = run(cli, &mut Io { out: &mut out, err: &mut err }).await;
        (code, String::from_utf8(out).unwrap(), String::from_utf8(err).unwrap())
    }
}

#[tokio::test]
async fn the_lifecycle_with_fleetctls_output() {
    let c = cluster().await;
    let (code, out, err) = c.fleetctl(&["submit", "$DIR/hello.service"]).await;
    assert_eq!((code, out.as_str(), err.as_str()), (0, "Unit hello.service inactive\n", ""));
    // Submitting the same file again is silent.
    assert_eq!(c.fleetctl(&["submit", "$DIR/hello.service"]).await, (0, String::new(), String::new()));

    let (code, out, _) = c.fleetctl(&["list-unit-files"]).await;
    assert_eq!(code, 0);
    assert_eq!(
        out,
        "UNIT\t\tHASH\tDSTATE\t\tSTATE\t\tTARGET\nhello.service\tf4e0c1e\tinactive\tinactive\t-\n"
            .replace("f4e0c1e", &hash_of("[Service]\nExecStart=/bin/sleep 1000\n"))
    );

    let (code, out, err) = c.fleetctl(&["start", "hello.service"]).await;
    assert_eq!(code, 0, "{err}");
    assert!(out.starts_with("Unit hello.service launched on aaaaaaaa.../10.0.0.1\n"), "{out}");

    let (_, out, _) = c.fleetctl(&["list-units", "--no-legend"]).await;
    assert_eq!(out, "hello.service\taaaaaaaa.../10.0.0.1\tactive\trunning\n");

    // Two instances of a template that conflicts with itself land apart.
    let (code, out, err) = c.fleetctl(&["start", "$DIR/web@1.service", "$DIR/web@2.service"]).await;
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("Unit web@1.service launched on"), "{out}");
    let (_, out, _) = c.fleetctl(&["list-units", "--no-legend", "--full", "--fields", "unit,machine"]).await;
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 3, "{out}");
    let machine_of =
        |unit: &str| lines.iter().find(|l| l.starts_with(unit)).unwrap().split('\t').next_back().unwrap().to_owned();
    assert_ne!(machine_of("web@1"), machine_of("web@2"));
    let (_, out, _) = c.fleetctl(&["cat", "web@1.service"]).await;
    assert_eq!(
        out,
        "[Unit]\nDescription=web %i\n\n[Service]\nExecStart=/bin/sleep 1000\n\n[X-Fleet]\nConflicts=web@*.service\n"
    );

    let (_, out, _) = c.fleetctl(&["list-machines"]).await;
    assert_eq!(out, "MACHINE\t\tIP\t\tMETADATA\naaaaaaaa...\t10.0.0.1\t-\nbbbbbbbb...\t10.0.0.2\t-\n");

    let (code, out, err) = c.fleetctl(&["stop", "hello.service"]).await;
    assert_eq!((code, err.as_str()), (0, "Successfully stopped units [hello.service].\n"));
    assert_eq!(out, "Unit hello.service loaded on aaaaaaaa.../10.0.0.1\n");
    let (code, _, err) = c.fleetctl(&["unload", "hello.service"]).await;
    assert_eq!((code, err.as_str()), (0, "Successfully unloaded units [hello.service].\n"));
    let (code, _, err) = c.fleetctl(&["stop", "hello.service"]).await;
    assert_eq!((code, err.as_str()), (1, "Unable to stop unit hello.service in state inactive\n"));
    assert_eq!(c.fleetctl(&["destroy", "hello.service"]).await, (0, "Destroyed hello.service\n".into(), String::new()));
    assert_eq!(
        c.fleetctl(&["destroy", "hello.service"]).await,
        (0, String::new(), "Units not found in registry\n".into())
    );
    let (code, _, err) = c.fleetctl(&["cat", "hello.service"]).await;
    assert_eq!((code, err.as_str()), (1, "Unit hello.service not found\n"));
}

#[tokio::test]
async fn bad_input_is_refused_with_fleets_messages() {
    let c = cluster().await;
    let (code, _, err) = c.fleetctl(&["list-units", "--fields=unit,foo"]).await;
    assert_eq!((code, err.as_str()), (1, "Invalid key in output format: \"foo\"\n"));
    let (code, _, err) = c.fleetctl(&["submit", "$DIR/nothere.service"]).await;
    assert_eq!(
        (code, err.as_str()),
        (1, "Error creating units: unable to find Unit(nothere.service) in Registry or on filesystem\n")
    );
    std::fs::write(
        c.dir.path().join("bad.service"),
        "[Service]\nExecStart=/bin/true\n[X-Fleet]\nMachineID=abc\nGlobal=true\n",
    )
    .unwrap();
    let (code, _, err) = c.fleetctl(&["submit", "$DIR/bad.service"]).await;
    assert_eq!((code, err.as_str()), (1, "Error creating units: MachineID cannot be used with Global\n"));
    std::fs::write(c.dir.path().join("broken.service"), "[Service]\nExecStart=/bin/true\nno equals here\nMore=1\n")
        .unwrap();
    let (code, _, err) = c.fleetctl(&["submit", "$DIR/broken.service"]).await;
    assert_eq!(code, 1);
    assert!(err.contains("line 3: unexpected newline encountered while parsing option name"), "{err}");
}

fn hash_of(text: &str) -> String {
    ferrite_fleet::unit_file::UnitFile::parse(text).unwrap().hash().short()
}

/// Runs fleetctl with `argv` (without the program name) and no cluster.
async fn fleetctl_alone(argv: &[&str]) -> (i32, String, String) {
    let cli = Cli::try_parse_from(std::iter::once("fleetctl").chain(argv.iter().copied())).unwrap();
    let (mut out, mut err) = (Vec::new(), Vec::new());
    let code = run(cli, &mut Io { out: &mut out, err: &mut err }).await;
    (code, String::from_utf8(out).unwrap(), String::from_utf8(err).unwrap())
}

#[tokio::test]
async fn an_api_that_does_not_answer_fails_after_the_request_timeout() {
    // Accepts connections and never answers.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let endpoint = format!("--endpoint=http://{}", listener.local_addr().unwrap());
    let held = tokio::spawn(async move {
        let mut open = Vec::new();
        while let Ok((stream, _)) = listener.accept().await {
            open.push(stream);
        }
    });
    // The outer bound only keeps a broken build from hanging the suite;
    // the message says which timeout fleetctl used.
    let argv = [endpoint.as_str(), "--request-timeout=0.2", "list-machines"];
    let ran = tokio::time::timeout(Duration::from_secs(60), fleetctl_alone(&argv));
    let (code, out, err) = ran.await.expect("fleetctl ignored --request-timeout");
    assert_eq!((code, out.as_str()), (1, ""), "{err}");
    assert!(err.contains("timed out after 200ms"), "{err}");
    held.abort();

    let (code, _, err) = fleetctl_alone(&[&endpoint, "--request-timeout=0", "list-machines"]).await;
    assert_eq!(code, 1);
    assert!(err.contains("--request-timeout must be a positive number of seconds, not 0"), "{err}");
}
