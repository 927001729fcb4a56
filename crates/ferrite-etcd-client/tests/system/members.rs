//! Members, health, version, and failing over past a dead member.

use std::time::Duration;

use ferrite_etcd_client::{Client, Error, GetOptions, SetOptions};
use ferrite_testkit::{Cluster, ServerKind};

use crate::etcd;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn members_list_add_and_remove() {
    let (mut cluster, client) = etcd().await;
    let members = client.members().await.unwrap();
    assert_eq!(members.len(), 1);
    assert_eq!(members[0].name, "n1");
    assert_eq!(members[0].peer_urls, [cluster.member(0).peer_url()]);
    assert_eq!(members[0].client_urls, [cluster.member(0).client_url()]);

    let health = client.health().await.unwrap();
    assert!(health.is_healthy(), "{health:?}");
    let version = client.version().await.unwrap();
    assert_eq!(version.server, "3.4.23");

    // A peer URL already in the cluster is refused with etcd's message.
    let err = client.add_member(&[cluster.member(0).peer_url()]).await.unwrap_err();
    match &err {
        Error::Status { status, message, .. } => {
            assert_eq!(status.as_u16(), 409);
            assert_eq!(message, "membership: peerURL exists");
        }
        other => panic!("{other:?}"),
    }

    // Announce a second member, then start it: it joins.
    let newcomer = cluster.reserve_member().unwrap();
    let added = client.add_member(&[newcomer.peer_url()]).await.unwrap();
    assert_eq!(added.peer_urls, [newcomer.peer_url()]);
    assert_eq!(added.name, "", "not started yet, so unnamed");
    let index = cluster.start_member(newcomer).await.unwrap();
    let members = client.members().await.unwrap();
    assert_eq!(members.len(), 2);
    assert!(members.iter().any(|m| m.id == added.id && m.name == "n2"));

    // The new member serves the same data.
    client.set("/shared", "yes", &SetOptions::default()).await.unwrap();
    let second = Client::new([cluster.member(index).client_url()]).unwrap();
    let read = second.get("/shared", &GetOptions { quorum: true, ..GetOptions::default() }).await.unwrap();
    assert_eq!(read.node().value.as_deref(), Some("yes"));

    // etcd refuses a removal that would break the quorum of members active
    // for 5 s ("unhealthy cluster" in its log, a bare 500 on the wire) while
    // n2 is new: retry, bounded.
    crate::within("removing n2", Duration::from_secs(20), async {
        loop {
            match client.remove_member(&added.id).await {
                Ok(()) => break,
                Err(Error::Status { status, .. }) if status.as_u16() == 500 => {}
                Err(e) => panic!("{e:?}"),
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    })
    .await;
    let members = client.members().await.unwrap();
    assert_eq!(members.len(), 1);
    let err = client.remove_member(&added.id).await.unwrap_err();
    match &err {
        Error::Status { status, message, .. } => {
            assert_eq!(status.as_u16(), 410);
            assert!(message.starts_with("Member permanently removed"), "{message}");
        }
        other => panic!("{other:?}"),
    }
    let err = client.remove_member("abcdef").await.unwrap_err();
    assert!(
        matches!(&err, Error::Status { status, message, .. }
            if status.as_u16() == 404 && message == "No such member: abcdef"),
        "{err:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fails_over_when_the_first_endpoint_is_dead() {
    let mut cluster = Cluster::start(ServerKind::Etcd, 3).await.unwrap();
    let endpoints: Vec<String> = cluster.members().iter().map(|m| m.client_url()).collect();
    let client = Client::new(&endpoints).unwrap();
    client.set("/before", "1", &SetOptions::default()).await.unwrap();
    assert_eq!(client.current_endpoint().as_str(), format!("{}/", endpoints[0]));

    cluster.kill(0).unwrap();
    // Let the two left elect a leader if the dead one led, so what follows
    // shows failover, not an election's write timeout.
    let survivor = Client::new([&endpoints[1]]).unwrap();
    crate::within("a leader among the survivors", std::time::Duration::from_secs(20), async {
        while !survivor.health().await.is_ok_and(|h| h.is_healthy()) {
            tokio::time::sleep(std::time::Duration::from_millis(200)).await;
        }
    })
    .await;
    let set = client.set("/after", "2", &SetOptions::default()).await.unwrap();
    assert_eq!(set.node().value.as_deref(), Some("2"));
    assert_eq!(
        client.current_endpoint().as_str(),
        format!("{}/", endpoints[1]),
        "the next endpoint answered and is remembered"
    );
    let read = client.get("/before", &GetOptions { quorum: true, ..GetOptions::default() }).await.unwrap();
    assert_eq!(read.node().value.as_deref(), Some("1"));
    assert_eq!(client.members().await.unwrap().len(), 3);

    // With every endpoint dead, the error names the last one tried.
    cluster.kill(1).unwrap();
    cluster.kill(2).unwrap();
    let err = client.get("/before", &GetOptions::default()).await.unwrap_err();
    match &err {
        Error::Transport { tried, .. } => assert_eq!(*tried, 3),
        other => panic!("{other:?}"),
    }
    assert!(err.is_unreachable());
}
