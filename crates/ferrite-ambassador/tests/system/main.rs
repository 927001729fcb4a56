//! System tier of ferrite-ambassador: the real binary carrying real redis
//! traffic (Debian's redis-cli) to redis containers on the real Docker
//! engine, following the store (ferrite-store, and etcd 3.4) as a backend
//! moves.
//!
//! `cargo build --workspace --bins && cargo test -p ferrite-ambassador --features system-tests --test system`

use std::io::{BufRead, BufReader, Write};
use std::net::TcpStream;
use std::process::Command;
use std::time::{Duration, Instant};

use ferrite_etcd_client::{Client, DeleteOptions, SetOptions};
use ferrite_testkit::images::{Container, Image, Imported};
use ferrite_testkit::{free_port, Cluster, Process, ServerKind};

fn suffix() -> String {
    use std::sync::atomic::{AtomicUsize, Ordering};
    static N: AtomicUsize = AtomicUsize::new(0);
    format!("{}-{}", std::process::id(), N.fetch_add(1, Ordering::Relaxed))
}

/// Debian's redis-server as an image.
fn redis_image(sfx: &str) -> Imported {
    Image::new(&format!("ferrite-test/redis-{sfx}:latest"))
        .binary("/usr/bin/redis-server", "/usr/bin/redis-server")
        .entrypoint(&["/usr/bin/redis-server", "--protected-mode", "no", "--save", "", "--appendonly", "no"])
        .expose("6379/tcp")
        .import()
        .unwrap()
}

/// `redis-cli -p <port> <args>`: its output, or `Err` with what it said.
fn redis_cli(port: u16, args: &[&str]) -> Result<String, String> {
    let output = Command::new("redis-cli")
        .args(["-h", "127.0.0.1", "-p", &port.to_string()])
        .args(args)
        .output()
        .map_err(|e| e.to_string())?;
    let out = String::from_utf8_lossy(&output.stdout).trim().to_owned();
    let err = String::from_utf8_lossy(&output.stderr).trim().to_owned();
    if !output.status.success() || !err.is_empty() || out.starts_with("ERR") || out.starts_with("Error") {
        return Err(format!("status {}, stdout {out:?}, stderr {err:?}", output.status));
    }
    Ok(out)
}

fn wait_for_redis(port: u16, container: &Container) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while redis_cli(port, &["ping"]).as_deref() != Ok("PONG") {
        assert!(Instant::now() < deadline, "redis never answered:\n{}", container.logs());
        std::thread::sleep(Duration::from_millis(100));
    }
}

struct Ambassador {
    process: Process,
    port: u16,
    _dir: tempfile::TempDir,
}

fn ambassador(store_url: &str, key: &str) -> Ambassador {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port().unwrap();
    let mut command = Command::new(env!("CARGO_BIN_EXE_ferrite-ambassador"));
    command
        .args(["--listen", &format!("127.0.0.1:{port}")])
        .args(["--etcd-endpoints", store_url])
        .arg(key)
        .env("RUST_LOG", "info");
    let process = Process::spawn("ferrite-ambassador", command, &dir.path().join("ambassador.log")).unwrap();
    Ambassador { process, port, _dir: dir }
}

/// A redis connection kept open, speaking RESP by hand.
struct Held(BufReader<TcpStream>);

impl Held {
    fn open(port: u16) -> Held {
        let stream = TcpStream::connect(("127.0.0.1", port)).unwrap();
        stream.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        Held(BufReader::new(stream))
    }

    /// `GET key` on this connection.
    fn get(&mut self, key: &str) -> String {
        write!(self.0.get_mut(), "*2\r\n$3\r\nGET\r\n${}\r\n{key}\r\n", key.len()).unwrap();
        let mut header = String::new();
        self.0.read_line(&mut header).unwrap();
        let mut value = String::new();
        self.0.read_line(&mut value).unwrap();
        assert!(header.starts_with('$'), "a bulk reply, not {header:?}");
        value.trim_end().to_owned()
    }
}

async fn start_store(kind: ServerKind) -> Cluster {
    Cluster::start(kind, 1).await.unwrap()
}

async fn redis_traffic_follows_a_backend_move(kind: ServerKind) {
    let sfx = suffix();
    let image = redis_image(&sfx);
    let r1 = Container::run(&format!("r1-{sfx}"), &["-p", "6379", image.as_str()]).unwrap();
    let r2 = Container::run(&format!("r2-{sfx}"), &["-p", "6379", image.as_str()]).unwrap();
    let (p1, p2) = (r1.host_port("6379/tcp").unwrap(), r2.host_port("6379/tcp").unwrap());
    wait_for_redis(p1, &r1);
    wait_for_redis(p2, &r2);
    redis_cli(p1, &["set", "who", "r1"]).unwrap();
    redis_cli(p2, &["set", "who", "r2"]).unwrap();

    let store = start_store(kind).await;
    let client = Client::new([store.member(0).client_url()]).unwrap();
    let dir = format!("/services-{sfx}/redis");
    let (k1, k2) = (format!("{dir}/h:r1-{sfx}:6379"), format!("{dir}/h:r2-{sfx}:6379"));
    client.set(&k1, &format!("127.0.0.1:{p1}"), &SetOptions::default()).await.unwrap();
    let amb = ambassador(&store.member(0).client_url(), &dir);

    let deadline = Instant::now() + Duration::from_secs(20);
    while redis_cli(amb.port, &["get", "who"]).as_deref() != Ok("r1") {
        assert!(Instant::now() < deadline, "no traffic through the ambassador:\n{}", amb.process.log_tail(30));
        std::thread::sleep(Duration::from_millis(100));
    }
    let mut held = Held::open(amb.port);
    assert_eq!(held.get("who"), "r1");

    // Requests, each on a new connection, before and after the move.
    let mut answers = Vec::new();
    for _ in 0..10 {
        answers.push(redis_cli(amb.port, &["get", "who"]));
    }
    // The move as the registrator writes it when redis moves: the old
    // registration goes, then the new one comes. Connections arriving in
    // between wait for the new backend rather than fail.
    client.delete(&k1, &DeleteOptions::default()).await.unwrap();
    client.set(&k2, &format!("127.0.0.1:{p2}"), &SetOptions::default()).await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let answer = redis_cli(amb.port, &["get", "who"]);
        let switched = answer.as_deref() == Ok("r2");
        answers.push(answer);
        if switched {
            break;
        }
        assert!(Instant::now() < deadline, "never switched to r2:\n{}", amb.process.log_tail(30));
    }
    for _ in 0..30 {
        answers.push(redis_cli(amb.port, &["get", "who"]));
    }
    let failed: Vec<_> = answers.iter().filter(|a| a.is_err()).collect();
    assert!(failed.is_empty(), "failed requests: {failed:?}\n{}", amb.process.log_tail(30));
    let first_r2 = answers.iter().position(|a| a.as_deref() == Ok("r2")).unwrap();
    assert!(answers[first_r2..].iter().all(|a| a.as_deref() == Ok("r2")), "after the switch only r2: {answers:?}");
    assert!(answers[..first_r2].iter().all(|a| a.as_deref() == Ok("r1")), "before it only r1: {answers:?}");

    // Writes land on the new backend; the connection opened before the
    // move still talks to the old one.
    redis_cli(amb.port, &["set", "moved", "yes"]).unwrap();
    assert_eq!(redis_cli(p2, &["get", "moved"]).unwrap(), "yes");
    assert_eq!(held.get("who"), "r1", "an open connection is not dropped by the switch");

    // Both listed, one down: every connection goes to the one that is up.
    client.set(&k1, &format!("127.0.0.1:{p1}"), &SetOptions::default()).await.unwrap();
    std::thread::sleep(Duration::from_millis(500));
    r2.docker(&["stop", "-t", "1"]).unwrap();
    for i in 0..6 {
        assert_eq!(redis_cli(amb.port, &["get", "who"]), Ok("r1".to_owned()), "request {i} with r2 down");
    }

    // None up: the connection is closed, and the log says why.
    r1.docker(&["stop", "-t", "1"]).unwrap();
    assert!(redis_cli(amb.port, &["get", "who"]).is_err());
    assert!(amb.process.log_tail(20).contains("no backend accepted"), "{}", amb.process.log_tail(20));
    drop((r1, r2));
}

#[tokio::test]
async fn redis_traffic_follows_a_backend_move_on_ferrite_store() {
    redis_traffic_follows_a_backend_move(ServerKind::Ferrite).await;
}

#[tokio::test]
async fn redis_traffic_follows_a_backend_move_on_etcd() {
    redis_traffic_follows_a_backend_move(ServerKind::Etcd).await;
}
