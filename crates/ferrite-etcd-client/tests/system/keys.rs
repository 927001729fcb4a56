//! Reads, writes, conditions, directories, in-order keys and TTLs.

use std::time::Duration;

use ferrite_etcd_api::v2::{Action, ErrorCode};
use ferrite_etcd_client::{DeleteOptions, Error, GetOptions, SetOptions};

use crate::etcd;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn set_get_and_the_etcd_index_header() {
    let (_etcd, client) = etcd().await;
    let set = client.set("/a/b", "one", &SetOptions::default()).await.unwrap();
    assert_eq!(set.event.action, Action::Set);
    assert_eq!(set.node().key, "/a/b");
    assert!(set.etcd_index() >= set.node().modified_index);
    assert!(set.headers.cluster_id.is_some());

    let got = client.get("/a/b", &GetOptions::default()).await.unwrap();
    assert_eq!(got.event.action, Action::Get);
    assert_eq!(got.node().value.as_deref(), Some("one"));
    assert_eq!(got.node().modified_index, set.node().modified_index);
    assert_eq!(got.etcd_index(), set.etcd_index());

    let again = client.set("/a/b", "two", &SetOptions::default()).await.unwrap();
    assert_eq!(again.event.prev_node.as_ref().unwrap().value.as_deref(), Some("one"));
    assert!(again.etcd_index() > set.etcd_index());

    // Keys with characters that need escaping round-trip.
    client.set("/a/with space?&#", "x", &SetOptions::default()).await.unwrap();
    let odd = client.get("/a/with space?&#", &GetOptions::default()).await.unwrap();
    assert_eq!(odd.node().key, "/a/with space?&#");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn recursive_sorted_listing_and_quorum_read() {
    let (_etcd, client) = etcd().await;
    for key in ["/d/c", "/d/a", "/d/sub/x", "/d/b"] {
        client.set(key, key, &SetOptions::default()).await.unwrap();
    }
    let options = GetOptions { recursive: true, sorted: true, quorum: true };
    let listing = client.get("/d", &options).await.unwrap();
    assert!(listing.node().dir);
    let children = listing.node().nodes.clone().unwrap();
    let keys: Vec<&str> = children.iter().map(|n| n.key.as_str()).collect();
    assert_eq!(keys, ["/d/a", "/d/b", "/d/c", "/d/sub"]);
    let sub = children[3].nodes.as_ref().expect("recursive lists the subtree");
    assert_eq!(sub[0].value.as_deref(), Some("/d/sub/x"));

    let shallow = client.get("/d", &GetOptions::default()).await.unwrap();
    let sub = shallow.node().nodes.as_ref().unwrap().iter().find(|n| n.key == "/d/sub").unwrap();
    assert!(sub.nodes.is_none(), "not recursive: the subdirectory is not listed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn errors_are_etcds_codes() {
    let (_etcd, client) = etcd().await;

    let err = client.get("/missing", &GetOptions::default()).await.unwrap_err();
    assert!(err.is(ErrorCode::KeyNotFound), "{err:?}");
    match &err {
        Error::Api(e) => assert_eq!(e.cause, "/missing"),
        other => panic!("{other:?}"),
    }

    client.create("/c", "1", None).await.unwrap();
    let err = client.create("/c", "2", None).await.unwrap_err();
    assert!(err.is(ErrorCode::NodeExist), "{err:?}");

    let err = client.update("/nope", "1", None).await.unwrap_err();
    assert!(err.is(ErrorCode::KeyNotFound), "{err:?}");
    let updated = client.update("/c", "3", None).await.unwrap();
    assert_eq!(updated.event.action, Action::Update);

    let err = client.compare_and_swap("/c", "4", Some("wrong"), None, None).await.unwrap_err();
    assert!(err.is(ErrorCode::TestFailed), "{err:?}");
    assert!(err.to_string().contains("Compare failed"), "{err}");

    let err = client.delete("/c", &DeleteOptions { dir: true, ..DeleteOptions::default() }).await;
    // etcd deletes a file even with dir=true; a dir without it is refused.
    assert!(err.is_ok());
    client.create_dir("/dir", None).await.unwrap();
    let err = client.delete("/dir", &DeleteOptions::default()).await.unwrap_err();
    assert!(err.is(ErrorCode::NotFile), "{err:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn compare_and_swap_and_compare_and_delete() {
    let (_etcd, client) = etcd().await;
    let first = client.set("/lock", "free", &SetOptions::default()).await.unwrap();
    let index = first.node().modified_index;

    let swapped = client.compare_and_swap("/lock", "taken", Some("free"), None, None).await.unwrap();
    assert_eq!(swapped.event.action, Action::CompareAndSwap);
    assert_eq!(swapped.node().value.as_deref(), Some("taken"));

    // The index moved on: the old one no longer matches.
    let err = client.compare_and_swap("/lock", "again", None, Some(index), None).await.unwrap_err();
    assert!(err.is(ErrorCode::TestFailed));
    let by_index =
        client.compare_and_swap("/lock", "again", None, Some(swapped.node().modified_index), None).await.unwrap();
    assert_eq!(by_index.node().value.as_deref(), Some("again"));

    // prevExist through set().
    let options = SetOptions { prev_exist: Some(false), ..SetOptions::default() };
    let err = client.set("/lock", "x", &options).await.unwrap_err();
    assert!(err.is(ErrorCode::NodeExist));

    let err = client.compare_and_delete("/lock", Some("taken"), None).await.unwrap_err();
    assert!(err.is(ErrorCode::TestFailed));
    let deleted = client.compare_and_delete("/lock", Some("again"), None).await.unwrap();
    assert_eq!(deleted.event.action, Action::CompareAndDelete);
    let err = client.get("/lock", &GetOptions::default()).await.unwrap_err();
    assert!(err.is(ErrorCode::KeyNotFound));

    client.set("/lock2", "v", &SetOptions::default()).await.unwrap();
    let at = client.get("/lock2", &GetOptions::default()).await.unwrap();
    client.compare_and_delete("/lock2", None, Some(at.node().modified_index)).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn directories_and_recursive_delete() {
    let (_etcd, client) = etcd().await;
    let dir = client.create_dir("/machines", None).await.unwrap();
    assert!(dir.node().dir);
    let err = client.create_dir("/machines", None).await.unwrap_err();
    assert!(err.is(ErrorCode::NodeExist));

    // An empty dir goes with dir=true.
    client.create_dir("/empty", None).await.unwrap();
    client.delete("/empty", &DeleteOptions { dir: true, ..DeleteOptions::default() }).await.unwrap();

    client.set("/machines/m1/ip", "10.0.0.1", &SetOptions::default()).await.unwrap();
    let err = client.delete("/machines", &DeleteOptions { dir: true, ..DeleteOptions::default() }).await.unwrap_err();
    assert!(err.is(ErrorCode::DirNotEmpty), "{err:?}");
    let gone =
        client.delete("/machines", &DeleteOptions { recursive: true, ..DeleteOptions::default() }).await.unwrap();
    assert_eq!(gone.event.action, Action::Delete);
    assert!(client.get("/machines/m1/ip", &GetOptions::default()).await.unwrap_err().is(ErrorCode::KeyNotFound));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn in_order_keys_are_created_in_increasing_order() {
    let (_etcd, client) = etcd().await;
    let mut keys = Vec::new();
    for job in ["a", "b", "c"] {
        let created = client.create_in_order("/queue", job, None).await.unwrap();
        assert_eq!(created.event.action, Action::Create);
        keys.push(created.node().key.clone());
    }
    let mut sorted = keys.clone();
    sorted.sort();
    assert_eq!(keys, sorted);
    assert!(keys.iter().all(|k| k.starts_with("/queue/")));

    let options = GetOptions { sorted: true, ..GetOptions::default() };
    let listing = client.get("/queue", &options).await.unwrap();
    let values: Vec<_> = listing.node().nodes.as_ref().unwrap().iter().map(|n| n.value.clone().unwrap()).collect();
    assert_eq!(values, ["a", "b", "c"]);

    let with_ttl = client.create_in_order("/queue", "d", Some(Duration::from_secs(60))).await.unwrap();
    assert_eq!(with_ttl.node().ttl, 60);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ttl_set_refresh_and_expiry() {
    let (_etcd, client) = etcd().await;
    let options = SetOptions { ttl: Some(Duration::from_secs(100)), ..SetOptions::default() };
    let set = client.set("/lease", "me", &options).await.unwrap();
    assert_eq!(set.node().ttl, 100);
    assert!(set.node().expiration.is_some());

    let refreshed = client.refresh("/lease", Duration::from_secs(300)).await.unwrap();
    assert_eq!(refreshed.node().ttl, 300);
    assert_eq!(refreshed.node().value.as_deref(), Some("me"), "refresh keeps the value");

    let err = client.refresh("/no-lease", Duration::from_secs(5)).await.unwrap_err();
    assert!(err.is(ErrorCode::KeyNotFound), "{err:?}");

    client.create("/short", "x", Some(Duration::from_secs(1))).await.unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        match client.get("/short", &GetOptions::default()).await {
            Err(e) if e.is(ErrorCode::KeyNotFound) => break,
            Ok(_) if std::time::Instant::now() < deadline => tokio::time::sleep(Duration::from_millis(200)).await,
            other => panic!("/short did not expire: {other:?}"),
        }
    }
}
