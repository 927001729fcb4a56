//! Tier 1 of ferrite-ambassador: the proxy in this process, in front of
//! TCP echo servers, following a ferrite-store member started in this
//! process. No root, no Docker.

use std::net::{SocketAddr, TcpListener as StdListener};
use std::sync::Arc;
use std::time::{Duration, Instant};

use ferrite_etcd_client::{DeleteOptions, SetOptions};
use ferrite_store::testing::OneMember as Store;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};

/// A TCP server answering every line with `<name>:<line>`.
struct Echo {
    addr: SocketAddr,
    task: tokio::task::JoinHandle<()>,
}

impl Echo {
    async fn start(name: &'static str) -> Echo {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else { return };
                tokio::spawn(async move {
                    let (read, mut write) = stream.into_split();
                    let mut lines = BufReader::new(read).lines();
                    while let Ok(Some(line)) = lines.next_line().await {
                        if write.write_all(format!("{name}:{line}\n").as_bytes()).await.is_err() {
                            return;
                        }
                    }
                });
            }
        });
        Echo { addr, task }
    }
}

impl Drop for Echo {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// The ambassador in this process, following `key` in `store`.
struct Ambassador {
    addr: SocketAddr,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<Result<(), ferrite_ambassador::Error>>,
}

impl Ambassador {
    async fn start(store: &Store, key: &str) -> Ambassador {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let config = ferrite_ambassador::Config {
            etcd_endpoints: vec![store.url().to_owned()],
            key: key.to_owned(),
            connect_timeout: Duration::from_secs(2),
            backend_wait: Duration::from_secs(2),
        };
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let (ready_tx, ready_rx) = tokio::sync::oneshot::channel();
        let task = tokio::spawn(ferrite_ambassador::run(
            config,
            listener,
            async move {
                let _ = stopped.await;
            },
            move || {
                let _ = ready_tx.send(());
            },
        ));
        ready_rx.await.expect("the ambassador reads the store before serving");
        Ambassador { addr, stop: Some(stop), task }
    }
}

impl Drop for Ambassador {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        self.task.abort();
    }
}

/// A connection through the ambassador, one line at a time.
struct Conn {
    read: tokio::io::Lines<BufReader<tokio::net::tcp::OwnedReadHalf>>,
    write: tokio::net::tcp::OwnedWriteHalf,
}

impl Conn {
    async fn open(addr: SocketAddr) -> Conn {
        let (read, write) = TcpStream::connect(addr).await.unwrap().into_split();
        Conn { read: BufReader::new(read).lines(), write }
    }

    /// Sends a line; the answer, or `None` when the ambassador closed.
    async fn ask(&mut self, line: &str) -> Option<String> {
        if self.write.write_all(format!("{line}\n").as_bytes()).await.is_err() {
            return None;
        }
        tokio::time::timeout(Duration::from_secs(10), self.read.next_line())
            .await
            .expect("an answer in time")
            .ok()
            .flatten()
    }
}

async fn ask_once(addr: SocketAddr, line: &str) -> Option<String> {
    Conn::open(addr).await.ask(line).await
}

async fn set(store: &Store, key: &str, value: &str) {
    store.client().set(key, value, &SetOptions::default()).await.unwrap();
}

/// Asks through new connections until `want` answers (bounded).
async fn until_answered_by(addr: SocketAddr, want: &str) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let answer = ask_once(addr, "probe").await;
        if answer.as_deref() == Some(&format!("{want}:probe")) {
            return;
        }
        assert!(Instant::now() < deadline, "never answered by {want}; last answer {answer:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn connections_go_round_robin_over_a_registrator_directory() {
    let store = Store::start().await;
    let (a, b) = (Echo::start("a").await, Echo::start("b").await);
    set(&store, "/services/echo/host1:echo-a:7", &a.addr.to_string()).await;
    set(&store, "/services/echo/host2:echo-b:7", &b.addr.to_string()).await;
    let amb = Ambassador::start(&store, "/services/echo").await;

    let mut answers = Vec::new();
    for i in 0..6 {
        answers.push(ask_once(amb.addr, &i.to_string()).await.unwrap());
    }
    let by_a = answers.iter().filter(|a| a.starts_with("a:")).count();
    let by_b = answers.iter().filter(|a| a.starts_with("b:")).count();
    assert_eq!((by_a, by_b), (3, 3), "{answers:?}");
    // Strict alternation, as round-robin means.
    assert!(answers.windows(2).all(|w| w[0][..1] != w[1][..1]), "{answers:?}");
}

#[tokio::test]
async fn a_comma_separated_value_is_a_backend_list() {
    let store = Store::start().await;
    let (a, b) = (Echo::start("a").await, Echo::start("b").await);
    set(&store, "/amb/echo", &format!("{},{}", a.addr, b.addr)).await;
    let amb = Ambassador::start(&store, "/amb/echo").await;
    let first = ask_once(amb.addr, "x").await.unwrap();
    let second = ask_once(amb.addr, "x").await.unwrap();
    let mut both = [first, second];
    both.sort();
    assert_eq!(both, ["a:x", "b:x"]);
}

#[tokio::test]
async fn a_backend_move_is_followed_and_open_connections_stay_on_theirs() {
    let store = Store::start().await;
    let (a, b) = (Echo::start("a").await, Echo::start("b").await);
    set(&store, "/services/echo/h:echo:7", &a.addr.to_string()).await;
    let amb = Ambassador::start(&store, "/services/echo").await;

    let mut open = Conn::open(amb.addr).await;
    assert_eq!(open.ask("before").await.as_deref(), Some("a:before"));

    // The backend moves: the registrator's key for the old one goes, the
    // new one comes.
    store.client().delete("/services/echo/h:echo:7", &DeleteOptions::default()).await.unwrap();
    set(&store, "/services/echo/h2:echo:7", &b.addr.to_string()).await;
    until_answered_by(amb.addr, "b").await;

    // Every new connection now reaches b, none fails.
    for i in 0..5 {
        assert_eq!(ask_once(amb.addr, &i.to_string()).await, Some(format!("b:{i}")));
    }
    // The connection opened before the switch still talks to a.
    assert_eq!(open.ask("after").await.as_deref(), Some("a:after"));
}

#[tokio::test]
async fn a_connection_arriving_while_a_backend_moves_waits_for_the_new_one() {
    let store = Store::start().await;
    let (a, b) = (Echo::start("a").await, Echo::start("b").await);
    set(&store, "/services/echo/h:echo:7", &a.addr.to_string()).await;
    let amb = Ambassador::start(&store, "/services/echo").await;
    assert_eq!(ask_once(amb.addr, "x").await.as_deref(), Some("a:x"));

    // Break before make: the old registration goes first.
    store.client().delete("/services/echo/h:echo:7", &DeleteOptions::default()).await.unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut during = Conn::open(amb.addr).await;
    set(&store, "/services/echo/h2:echo:7", &b.addr.to_string()).await;
    assert_eq!(during.ask("y").await.as_deref(), Some("b:y"), "held, then sent to the new backend");
}

#[tokio::test]
async fn a_backend_that_refuses_is_skipped_for_the_next() {
    let store = Store::start().await;
    let a = Echo::start("a").await;
    // A port nobody listens on: bound, then closed.
    let dead = StdListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
    set(&store, "/amb/echo", &format!("{dead},{}", a.addr)).await;
    let amb = Ambassador::start(&store, "/amb/echo").await;
    for i in 0..4 {
        assert_eq!(ask_once(amb.addr, &i.to_string()).await, Some(format!("a:{i}")), "connection {i}");
    }
}

#[tokio::test]
async fn without_backends_a_connection_is_closed_until_one_appears() {
    let store = Store::start().await;
    let amb = Ambassador::start(&store, "/services/missing").await;
    assert_eq!(ask_once(amb.addr, "x").await, None, "closed: the key does not exist");

    // Every backend refusing is the same as none.
    let dead = StdListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
    set(&store, "/services/missing/h:x:1", &dead.to_string()).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(ask_once(amb.addr, "x").await, None, "closed: the only backend refuses");

    let a = Echo::start("a").await;
    set(&store, "/services/missing/h:x:1", &a.addr.to_string()).await;
    until_answered_by(amb.addr, "a").await;
}

#[tokio::test]
async fn the_proxy_waits_for_the_store_and_picks_backends_up_once_it_answers() {
    // The store's client port is bound but nothing serves it yet: the
    // first read fails (times out) and is retried with backoff.
    let client_listener = StdListener::bind("127.0.0.1:0").unwrap();
    let store_url = format!("http://{}", client_listener.local_addr().unwrap());
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let config = ferrite_ambassador::Config {
        etcd_endpoints: vec![store_url],
        key: "/amb/echo".into(),
        connect_timeout: Duration::from_secs(1),
        backend_wait: Duration::ZERO,
    };
    let ready = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let flag = ready.clone();
    let task = tokio::spawn(ferrite_ambassador::run(config, listener, std::future::pending(), move || {
        flag.store(true, std::sync::atomic::Ordering::SeqCst);
    }));
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(!ready.load(std::sync::atomic::Ordering::SeqCst), "not ready before the store answered");

    let store = Store::start_on(client_listener).await;
    let a = Echo::start("a").await;
    set(&store, "/amb/echo", &a.addr.to_string()).await;
    until_answered_by(addr, "a").await;
    assert!(ready.load(std::sync::atomic::Ordering::SeqCst));
    task.abort();
}
