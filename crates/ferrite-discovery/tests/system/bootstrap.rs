//! Real etcd 3.4 members, and ferrite-store members, bootstrapping through
//! ferrite-discovery backed by etcd and by ferrite-store respectively.

use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

use ferrite_etcd_client::{Client, GetOptions, SetOptions};
use ferrite_testkit::{free_port, Process, ServerKind};

use crate::{ferrite_store_bin, scratch, Service};

struct Member {
    kind: ServerKind,
    name: String,
    client_url: String,
    peer_url: String,
}

impl Member {
    fn new(kind: ServerKind, name: &str) -> Member {
        Member {
            kind,
            name: name.to_owned(),
            client_url: format!("http://127.0.0.1:{}", free_port().unwrap()),
            peer_url: format!("http://127.0.0.1:{}", free_port().unwrap()),
        }
    }

    fn command(&self, dir: &Path, discovery: &str) -> std::process::Command {
        let mut command = match self.kind {
            ServerKind::Etcd => std::process::Command::new("etcd"),
            ServerKind::Ferrite => std::process::Command::new(ferrite_store_bin()),
        };
        command
            .args(["--name", &self.name])
            .arg("--data-dir")
            .arg(dir.join(&self.name))
            .args(["--listen-client-urls", &self.client_url])
            .args(["--advertise-client-urls", &self.client_url])
            .args(["--listen-peer-urls", &self.peer_url])
            .args(["--initial-advertise-peer-urls", &self.peer_url])
            .args(["--discovery", discovery])
            // Without this, a member refused by a full token becomes a v2
            // proxy instead of failing.
            .args(["--discovery-fallback", "exit"])
            .args(["--logger", "zap", "--log-outputs", "stderr"])
            .arg("--enable-v2");
        command
    }
}

async fn wait_healthy(member: &Member, process: &mut Process) {
    let client = Client::new([&member.client_url]).unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        assert!(process.is_running(), "{} exited:\n{}", member.name, process.log_tail(30));
        if client.health().await.is_ok_and(|h| h.is_healthy()) {
            return;
        }
        assert!(Instant::now() < deadline, "{} not healthy:\n{}", member.name, process.log_tail(30));
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_etcd_members_form_one_cluster_and_a_fourth_is_refused() {
    three_members_form_one_cluster_and_a_fourth_is_refused(ServerKind::Etcd).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_ferrite_store_members_form_one_cluster_and_a_fourth_is_refused() {
    three_members_form_one_cluster_and_a_fourth_is_refused(ServerKind::Ferrite).await;
}

/// Discovery backed by a store of `kind`, and members of `kind` joining
/// through it: the same scenario for etcd (the reference) and Ferrite.
async fn three_members_form_one_cluster_and_a_fourth_is_refused(kind: ServerKind) {
    let service = Service::start_on(kind).await;
    let token_url = service.new_token(3).await;
    let (_dir, dir) = scratch();

    let members: Vec<Member> = ["m1", "m2", "m3"].iter().map(|n| Member::new(kind, n)).collect();
    let mut processes: Vec<Process> = members
        .iter()
        .map(|m| {
            Process::spawn(
                &format!("{kind:?} {}", m.name),
                m.command(&dir, &token_url),
                &dir.join(format!("{}.log", m.name)),
            )
            .unwrap()
        })
        .collect();
    for (member, process) in members.iter().zip(processes.iter_mut()) {
        wait_healthy(member, process).await;
    }

    // One cluster of three, as each member sees it.
    let endpoints: Vec<&str> = members.iter().map(|m| m.client_url.as_str()).collect();
    let client = Client::new(&endpoints).unwrap();
    for member in &members {
        let one = Client::new([&member.client_url]).unwrap();
        let list = one.members().await.unwrap();
        assert_eq!(list.len(), 3, "{} sees {list:?}", member.name);
        let mut names: Vec<&str> = list.iter().map(|m| m.name.as_str()).collect();
        names.sort();
        assert_eq!(names, ["m1", "m2", "m3"]);
        for m in &members {
            assert!(list.iter().any(|l| l.name == m.name && l.peer_urls == [m.peer_url.clone()]));
        }
    }
    client.set("/hello", "world", &SetOptions::default()).await.unwrap();
    let last = Client::new([&members[2].client_url]).unwrap();
    let read = last.get("/hello", &GetOptions { quorum: true, ..GetOptions::default() }).await.unwrap();
    assert_eq!(read.node().value.as_deref(), Some("world"));

    // The registrations are in the backing store: three, named by member id.
    let token = token_url.rsplit('/').next().unwrap();
    let registry = service.store().get(&format!("/_etcd/registry/{token}"), &GetOptions::default()).await.unwrap();
    let registered = registry.node().nodes.clone().unwrap();
    assert_eq!(registered.len(), 3);
    let ids: Vec<String> = client.members().await.unwrap().into_iter().map(|m| m.id).collect();
    for node in &registered {
        let id = node.key.rsplit('/').next().unwrap();
        assert!(ids.iter().any(|i| i == id), "{id} not among {ids:?}");
    }

    // A fourth member with the same token is refused and exits.
    let fourth = Member::new(kind, "m4");
    let log_path = dir.join("m4.log");
    let log = std::fs::File::create(&log_path).unwrap();
    let mut command = tokio::process::Command::from(fourth.command(&dir, &token_url));
    let mut child =
        command.stdin(Stdio::null()).stdout(log.try_clone().unwrap()).stderr(log).kill_on_drop(true).spawn().unwrap();
    let status =
        tokio::time::timeout(Duration::from_secs(60), child.wait()).await.expect("the fourth member exits").unwrap();
    let log = std::fs::read_to_string(&log_path).unwrap();
    assert!(!status.success(), "{status}\n{log}");
    assert!(log.contains("discovery: cluster is full"), "{log}");
    assert_eq!(client.members().await.unwrap().len(), 3);

    drop(processes.drain(..));
}
