//! System tier of ferrite-registrator: the real binary against the real
//! Docker engine on this machine, writing to a real ferrite-store (and
//! etcd 3.4). Containers run a ping image imported from the workspace's
//! `ferrite-ping` binary; every name carries this run's suffix, and only
//! those names are asserted, since other containers may run on the engine.
//!
//! `cargo build --workspace --bins && cargo test -p ferrite-registrator --features system-tests --test system`

use std::collections::BTreeMap;
use std::process::Command;
use std::time::{Duration, Instant};

use ferrite_etcd_client::{Client, GetOptions};
use ferrite_testkit::images::{workspace_bin, Container, Image, Imported, PrivateEngine};
use ferrite_testkit::{Cluster, Process, ServerKind};

/// A suffix no other run uses: names of containers, services, prefixes.
fn suffix() -> String {
    use std::sync::atomic::{AtomicUsize, Ordering};
    static N: AtomicUsize = AtomicUsize::new(0);
    format!("{}-{}", std::process::id(), N.fetch_add(1, Ordering::Relaxed))
}

/// The ping image under a repository name of this run, so its default
/// service name (the image's base name) is unique too.
fn ping_image(sfx: &str) -> Imported {
    Image::new(&format!("ferrite-test/ping-{sfx}:latest"))
        .binary(workspace_bin("ferrite-ping"), "/usr/bin/ferrite-ping")
        .entrypoint(&["/usr/bin/ferrite-ping"])
        .expose("8080/tcp")
        .import()
        .unwrap()
}

async fn store(kind: ServerKind) -> Cluster {
    Cluster::start(kind, 1).await.unwrap()
}

struct Registrator {
    process: Process,
    _dir: tempfile::TempDir,
}

/// Starts the registrator binary with registrator's own flags (one dash).
fn registrator(store: &Cluster, hostname: &str, prefix: &str, extra: &[&str]) -> Registrator {
    let dir = tempfile::tempdir().unwrap();
    let uri = format!("etcd://{}{prefix}", store.member(0).client_url().trim_start_matches("http://"));
    let mut command = Command::new(env!("CARGO_BIN_EXE_ferrite-registrator"));
    command.args(["-ip", "127.0.0.1", "-hostname", hostname]).args(extra).arg(uri).env("RUST_LOG", "info");
    let process = Process::spawn("ferrite-registrator", command, &dir.path().join("registrator.log")).unwrap();
    Registrator { process, _dir: dir }
}

/// Every `key -> value` under `<prefix>/<service>` for the given services.
async fn keys(client: &Client, prefix: &str, services: &[&str]) -> BTreeMap<String, String> {
    let mut found = BTreeMap::new();
    for service in services {
        let read = GetOptions { recursive: true, sorted: true, quorum: true };
        if let Ok(response) = client.get(&format!("{prefix}/{service}"), &read).await {
            for node in response.event.node.nodes.iter().flatten() {
                found.insert(node.key.clone(), node.value.clone().unwrap_or_default());
            }
        }
    }
    found
}

/// Waits (bounded) until the keys of `services` are exactly `want`.
async fn converge(
    client: &Client,
    prefix: &str,
    services: &[&str],
    want: &BTreeMap<String, String>,
    registrator: &mut Registrator,
) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let got = keys(client, prefix, services).await;
        if &got == want {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "the store never held exactly {want:#?}\nlast seen {got:#?}\nregistrator log:\n{}",
            registrator.process.log_tail(40)
        );
        assert!(registrator.process.is_running(), "the registrator exited:\n{}", registrator.process.log_tail(40));
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

fn entry(prefix: &str, service: &str, id: &str, value: String) -> (String, String) {
    (format!("{prefix}/{service}/{id}"), value)
}

async fn get_http(addr: &str) -> String {
    let http = reqwest::Client::builder().no_proxy().timeout(Duration::from_secs(5)).build().unwrap();
    http.get(format!("http://{addr}/")).send().await.unwrap().text().await.unwrap()
}

async fn published_ports_appear_and_disappear(kind: ServerKind) {
    let sfx = suffix();
    let image = ping_image(&sfx);
    let store = store(kind).await;
    let client = Client::new([store.member(0).client_url()]).unwrap();
    let (host, prefix) = (format!("host-{sfx}"), format!("/services-{sfx}"));
    let (web, multi) = (format!("web-{sfx}"), format!("ping-{sfx}"));
    let services = [web.as_str(), &format!("{multi}-8080"), &format!("{multi}-9090")];

    // Started before the registrator: found by its first sync.
    let early =
        Container::run(&format!("early-{sfx}"), &["-p", "8080", "-e", &format!("SERVICE_NAME={web}"), image.as_str()])
            .unwrap();
    let mut reg = registrator(&store, &host, &prefix, &[]);
    let mut want = BTreeMap::from([entry(
        &prefix,
        &web,
        &format!("{host}:early-{sfx}:8080"),
        format!("127.0.0.1:{}", early.host_port("8080/tcp").unwrap()),
    )]);
    converge(&client, &prefix, &services, &want, &mut reg).await;

    // Started after: seen through the events. Two published ports, no
    // name: the image's base name with a port suffix.
    let two = Container::run(&format!("two-{sfx}"), &["-p", "8080", "-p", "9090", image.as_str()]).unwrap();
    want.extend([
        entry(
            &prefix,
            &format!("{multi}-8080"),
            &format!("{host}:two-{sfx}:8080"),
            format!("127.0.0.1:{}", two.host_port("8080/tcp").unwrap()),
        ),
        entry(
            &prefix,
            &format!("{multi}-9090"),
            &format!("{host}:two-{sfx}:9090"),
            format!("127.0.0.1:{}", two.host_port("9090/tcp").unwrap()),
        ),
    ]);
    converge(&client, &prefix, &services, &want, &mut reg).await;

    // What a user checks: the registered address answers.
    let value = want[&format!("{prefix}/{web}/{host}:early-{sfx}:8080")].clone();
    assert!(get_http(&value).await.starts_with("hello from "), "the registered address serves the container");

    // Stopped: gone. Removed: gone.
    early.docker(&["stop", "-t", "1"]).unwrap();
    want.retain(|k, _| !k.contains(&format!(":early-{sfx}:")));
    converge(&client, &prefix, &services, &want, &mut reg).await;
    drop(two);
    want.clear();
    converge(&client, &prefix, &services, &want, &mut reg).await;

    // Started again: back.
    early.docker(&["start"]).unwrap();
    want.insert(
        format!("{prefix}/{web}/{host}:early-{sfx}:8080"),
        format!("127.0.0.1:{}", early.host_port("8080/tcp").unwrap()),
    );
    converge(&client, &prefix, &services, &want, &mut reg).await;
    drop(early);
}

#[tokio::test]
async fn published_ports_appear_and_disappear_on_ferrite_store() {
    published_ports_appear_and_disappear(ServerKind::Ferrite).await;
}

#[tokio::test]
async fn published_ports_appear_and_disappear_on_etcd() {
    published_ports_appear_and_disappear(ServerKind::Etcd).await;
}

#[tokio::test]
async fn a_killed_registrator_restarted_with_cleanup_converges() {
    let sfx = suffix();
    let image = ping_image(&sfx);
    let store = store(ServerKind::Ferrite).await;
    let client = Client::new([store.member(0).client_url()]).unwrap();
    let (host, prefix, svc) = (format!("host-{sfx}"), format!("/services-{sfx}"), format!("svc-{sfx}"));
    let name = format!("SERVICE_NAME={svc}");
    let run = |c: &str| Container::run(&format!("{c}-{sfx}"), &["-p", "8080", "-e", &name, image.as_str()]).unwrap();
    let value = |c: &Container| format!("127.0.0.1:{}", c.host_port("8080/tcp").unwrap());
    let id = |c: &str| format!("{host}:{c}-{sfx}:8080");

    let (b, c) = (run("b"), run("c"));
    let mut reg = registrator(&store, &host, &prefix, &["-cleanup"]);
    let mut want =
        BTreeMap::from([entry(&prefix, &svc, &id("b"), value(&b)), entry(&prefix, &svc, &id("c"), value(&c))]);
    converge(&client, &prefix, &[&svc], &want, &mut reg).await;

    // SIGKILL: no chance to deregister anything.
    reg.process.kill().unwrap();
    drop(c);
    let d = run("d");
    // Meanwhile the store still holds c, and not d.
    let stale = keys(&client, &prefix, &[&svc]).await;
    assert!(stale.contains_key(&format!("{prefix}/{svc}/{}", id("c"))), "{stale:?}");

    let mut reg = registrator(&store, &host, &prefix, &["-cleanup"]);
    want.remove(&format!("{prefix}/{svc}/{}", id("c")));
    want.extend([entry(&prefix, &svc, &id("d"), value(&d))]);
    converge(&client, &prefix, &[&svc], &want, &mut reg).await;

    // Another host's registration under the same service is not ours to clean.
    client.set(&format!("{prefix}/{svc}/otherhost:x-{sfx}:8080"), "10.9.9.9:1", &Default::default()).await.unwrap();
    reg.process.kill().unwrap();
    let mut reg = registrator(&store, &host, &prefix, &["-cleanup"]);
    want.insert(format!("{prefix}/{svc}/otherhost:x-{sfx}:8080"), "10.9.9.9:1".into());
    converge(&client, &prefix, &[&svc], &want, &mut reg).await;
    drop((b, d));
}

#[tokio::test]
async fn ttl_keys_live_while_refreshed_and_expire_once_the_registrator_is_gone() {
    let sfx = suffix();
    let image = ping_image(&sfx);
    let store = store(ServerKind::Ferrite).await;
    let client = Client::new([store.member(0).client_url()]).unwrap();
    let (host, prefix, svc) = (format!("host-{sfx}"), format!("/services-{sfx}"), format!("svc-{sfx}"));
    let c = Container::run(&format!("t-{sfx}"), &["-p", "8080", "-e", &format!("SERVICE_NAME={svc}"), image.as_str()])
        .unwrap();
    let mut reg = registrator(&store, &host, &prefix, &["-ttl", "3", "-ttl-refresh", "1"]);
    let key = format!("{prefix}/{svc}/{host}:t-{sfx}:8080");
    let want = BTreeMap::from([(key.clone(), format!("127.0.0.1:{}", c.host_port("8080/tcp").unwrap()))]);
    converge(&client, &prefix, &[&svc], &want, &mut reg).await;
    let node = client.get(&key, &GetOptions::default()).await.unwrap().event.node;
    assert!(node.ttl > 0 && node.ttl <= 3, "the key carries the TTL: {node:?}");

    // Twice the TTL later, refreshes kept it.
    tokio::time::sleep(Duration::from_secs(6)).await;
    converge(&client, &prefix, &[&svc], &want, &mut reg).await;

    // Killed: nobody refreshes, the key expires.
    reg.process.kill().unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    while !keys(&client, &prefix, &[&svc]).await.is_empty() {
        assert!(Instant::now() < deadline, "the key never expired");
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    drop(c);
}

#[tokio::test]
async fn registrations_are_restored_when_the_store_comes_back() {
    let sfx = suffix();
    let image = ping_image(&sfx);
    let mut store = store(ServerKind::Ferrite).await;
    let client = Client::new([store.member(0).client_url()]).unwrap();
    let (host, prefix, svc) = (format!("host-{sfx}"), format!("/services-{sfx}"), format!("svc-{sfx}"));
    let name = format!("SERVICE_NAME={svc}");
    let a = Container::run(&format!("a-{sfx}"), &["-p", "8080", "-e", &name, image.as_str()]).unwrap();
    let mut reg = registrator(&store, &host, &prefix, &[]);
    let mut want = BTreeMap::from([(
        format!("{prefix}/{svc}/{host}:a-{sfx}:8080"),
        format!("127.0.0.1:{}", a.host_port("8080/tcp").unwrap()),
    )]);
    converge(&client, &prefix, &[&svc], &want, &mut reg).await;

    // The store goes away; a container starts and another stops meanwhile.
    store.kill(0).unwrap();
    let b = Container::run(&format!("b-{sfx}"), &["-p", "8080", "-e", &name, image.as_str()]).unwrap();
    a.docker(&["stop", "-t", "1"]).unwrap();
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(reg.process.is_running(), "an unreachable store does not stop the registrator");

    store.restart(0).await.unwrap();
    want.clear();
    want.insert(
        format!("{prefix}/{svc}/{host}:b-{sfx}:8080"),
        format!("127.0.0.1:{}", b.host_port("8080/tcp").unwrap()),
    );
    converge(&client, &prefix, &[&svc], &want, &mut reg).await;
    drop((a, b));
}

#[tokio::test]
async fn a_docker_daemon_restart_means_a_resync() {
    // An engine of this test's own, which it may restart.
    let sfx = suffix();
    let mut engine = PrivateEngine::start().unwrap();
    let docker_host = engine.host.clone();
    let on = Some(docker_host.as_str());
    let image = Image::new(&format!("ferrite-test/ping-{sfx}:latest"))
        .binary(workspace_bin("ferrite-ping"), "/usr/bin/ferrite-ping")
        .entrypoint(&["/usr/bin/ferrite-ping"])
        .expose("8080/tcp")
        .import_to(on)
        .unwrap();
    let store = store(ServerKind::Ferrite).await;
    let client = Client::new([store.member(0).client_url()]).unwrap();
    let (host, prefix) = (format!("host-{sfx}"), format!("/services-{sfx}"));
    let (once, always) = (format!("once-{sfx}"), format!("always-{sfx}"));
    // Host networking (the engine has no bridge): the exposed port is
    // registered as the host's.
    let run = |name: &str, service: &str, extra: &[&str]| {
        let env = format!("SERVICE_NAME={service}");
        let mut args = vec!["--net", "host", "-e", &env, "-e", "PING_LISTEN=127.0.0.1:0"];
        args.extend_from_slice(extra);
        args.push(image.as_str());
        Container::run_on(on, name, &args).unwrap()
    };
    let a = run(&format!("a-{sfx}"), &once, &[]);
    let _c = run(&format!("c-{sfx}"), &always, &["--restart", "always"]);
    let mut reg = registrator(&store, &host, &prefix, &["-docker-host", &docker_host]);
    let key_a = format!("{prefix}/{once}/{host}:a-{sfx}:8080");
    let key_c = format!("{prefix}/{always}/{host}:c-{sfx}:8080");
    let services = [once.as_str(), always.as_str()];
    let mut want =
        BTreeMap::from([(key_a.clone(), "127.0.0.1:8080".to_owned()), (key_c.clone(), "127.0.0.1:8080".to_owned())]);
    converge(&client, &prefix, &services, &want, &mut reg).await;

    // The engine restarts: a stays stopped, c comes back by its restart
    // policy while the registrator is still reconnecting.
    engine.restart().unwrap();
    want.remove(&key_a);
    converge(&client, &prefix, &services, &want, &mut reg).await;
    assert_eq!(c_state(&engine, &format!("c-{sfx}")), "running", "{}", engine.log_tail());
    let log = reg.process.log_tail(200);
    assert!(log.contains("resyncing"), "the registrator saw the engine go and synced again:\n{log}");

    // The registrator follows the new engine's events.
    a.docker(&["start"]).unwrap();
    want.insert(key_a, "127.0.0.1:8080".to_owned());
    converge(&client, &prefix, &services, &want, &mut reg).await;
    a.docker(&["stop", "-t", "1"]).unwrap();
    want.remove(&format!("{prefix}/{once}/{host}:a-{sfx}:8080"));
    converge(&client, &prefix, &services, &want, &mut reg).await;
}

fn c_state(engine: &PrivateEngine, name: &str) -> String {
    let output = Command::new("docker")
        .env("DOCKER_HOST", &engine.host)
        .args(["inspect", "-f", "{{.State.Status}}", name])
        .output()
        .unwrap();
    String::from_utf8_lossy(&output.stdout).trim().to_owned()
}
