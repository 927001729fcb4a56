//! Single watches and the follow-forever stream, including etcd's 1000-event
//! history running out under it.

use std::time::Duration;

use ferrite_etcd_api::v2::Action;
use ferrite_etcd_client::{SetOptions, WatchEvent, WatchOptions};
use futures::StreamExt;

use crate::{etcd, within};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_watch_waits_for_the_next_change() {
    let (_etcd, client) = etcd().await;
    let first = client.set("/w/k", "0", &SetOptions::default()).await.unwrap();

    let watcher = client.clone();
    let waiting =
        tokio::spawn(async move { watcher.watch("/w", &WatchOptions { recursive: true, wait_index: None }).await });
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!waiting.is_finished(), "a watch waits");
    client.set("/w/k", "1", &SetOptions::default()).await.unwrap();
    let seen = within("watch", Duration::from_secs(5), waiting).await.unwrap().unwrap();
    assert_eq!(seen.node().value.as_deref(), Some("1"));

    // waitIndex reaches back into history.
    let past = client
        .watch("/w/k", &WatchOptions { recursive: false, wait_index: Some(first.node().modified_index) })
        .await
        .unwrap();
    assert_eq!(past.node().value.as_deref(), Some("0"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ttl_expiry_is_seen_through_a_watch() {
    let (_etcd, client) = etcd().await;
    let created = client.create("/leases/l1", "holder", Some(Duration::from_secs(1))).await.unwrap();
    let options = WatchOptions { recursive: true, wait_index: Some(created.node().modified_index + 1) };
    let mut stream = Box::pin(client.watch_stream("/leases", options));
    let event = within("expiry", Duration::from_secs(10), stream.next()).await.unwrap().unwrap();
    match event {
        WatchEvent::Change(r) => {
            assert_eq!(r.event.action, Action::Expire);
            assert_eq!(r.node().key, "/leases/l1");
            assert_eq!(r.event.prev_node.unwrap().value.as_deref(), Some("holder"));
        }
        other => panic!("{other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_stream_follows_every_change_in_order() {
    let (_etcd, client) = etcd().await;
    let start = client.set("/f/a", "0", &SetOptions::default()).await.unwrap();
    let options = WatchOptions { recursive: true, wait_index: Some(start.node().modified_index + 1) };
    let stream = client.watch_stream("/f", options);
    // Changes made before the stream is polled are not missed.
    for i in 1..=20 {
        client.set(&format!("/f/{}", i % 3), &i.to_string(), &SetOptions::default()).await.unwrap();
    }
    let seen: Vec<_> = within("20 changes", Duration::from_secs(10), stream.take(20).collect::<Vec<_>>()).await;
    let values: Vec<String> = seen
        .into_iter()
        .map(|e| match e.unwrap() {
            WatchEvent::Change(r) => r.node().value.clone().unwrap(),
            other => panic!("{other:?}"),
        })
        .collect();
    let expected: Vec<String> = (1..=20).map(|i: i32| i.to_string()).collect();
    assert_eq!(values, expected);
}

/// fleet and registrator fall behind; etcd then answers 401
/// EventIndexCleared, and the stream must read the key again and go on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_stream_survives_a_cleared_index() {
    let (_etcd, client) = etcd().await;
    let start = client.set("/svc/k0", "start", &SetOptions::default()).await.unwrap();

    // 1100 changes: more than etcd's 1000-event history. Bounded: eight
    // writers at a time.
    let writes = futures::stream::iter(0..1100)
        .map(|i| {
            let client = client.clone();
            async move { client.set(&format!("/svc/k{}", i % 10), &i.to_string(), &SetOptions::default()).await }
        })
        .buffer_unordered(8)
        .collect::<Vec<_>>();
    for result in within("1100 writes", Duration::from_secs(120), writes).await {
        result.unwrap();
    }

    let options = WatchOptions { recursive: true, wait_index: Some(start.node().modified_index + 1) };
    let mut stream = Box::pin(client.watch_stream("/svc", options));
    let first = within("resync", Duration::from_secs(10), stream.next()).await.unwrap().unwrap();
    let resync_index = match first {
        WatchEvent::Resync { node, etcd_index } => {
            let node = node.expect("/svc exists");
            assert_eq!(node.nodes.as_ref().unwrap().len(), 10);
            etcd_index
        }
        other => panic!("expected a resync, got {other:?}"),
    };

    let after = client.set("/svc/k3", "after", &SetOptions::default()).await.unwrap();
    assert!(after.node().modified_index > resync_index);
    let next = within("change after resync", Duration::from_secs(10), stream.next()).await.unwrap().unwrap();
    match next {
        WatchEvent::Change(r) => {
            assert_eq!(r.node().key, "/svc/k3");
            assert_eq!(r.node().value.as_deref(), Some("after"));
            assert_eq!(r.node().modified_index, after.node().modified_index);
        }
        other => panic!("{other:?}"),
    }
}
