//! ferrite-etcd-client's `join()` (what ferrite-store runs for
//! `--discovery`) through the service.

use ferrite_etcd_client::discovery::{join, DiscoveryError};

use crate::Service;

fn peer(port: u16) -> Vec<String> {
    vec![format!("http://127.0.0.1:{port}")]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_concurrent_joins_agree_and_a_fourth_is_refused() {
    let service = Service::start().await;
    let token_url = service.new_token(3).await;

    // Three callers on their own tasks, as three machines would be.
    let callers: Vec<_> = [(0x1111, "s1", 7001), (0x2222, "s2", 7002), (0x3333, "s3", 7003)]
        .into_iter()
        .map(|(id, name, port)| {
            let url = token_url.clone();
            tokio::spawn(async move { join(&url, id, name, &peer(port)).await })
        })
        .collect();
    let mut results = Vec::new();
    for caller in callers {
        let joined =
            tokio::time::timeout(std::time::Duration::from_secs(30), caller).await.expect("join returns").unwrap();
        results.push(joined.unwrap());
    }
    let (a, b, c) = (&results[0], &results[1], &results[2]);
    assert_eq!(a, b);
    assert_eq!(b, c);
    let mut entries: Vec<&str> = a.split(',').collect();
    entries.sort();
    assert_eq!(entries, ["s1=http://127.0.0.1:7001", "s2=http://127.0.0.1:7002", "s3=http://127.0.0.1:7003"]);

    let fourth = join(&token_url, 0x4444, "s4", &peer(7004)).await;
    let err = fourth.unwrap_err();
    assert!(matches!(err, DiscoveryError::FullCluster { size: 3 }), "{err:?}");
    assert_eq!(err.to_string(), "discovery: cluster is full");

    // A member that registered before and comes back without its data.
    let again = join(&token_url, 0x2222, "s2", &peer(7002)).await;
    assert!(matches!(again, Err(DiscoveryError::DuplicateId { .. })), "{again:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_joiner_waits_for_the_others() {
    let service = Service::start().await;
    let token_url = service.new_token(2).await;
    let first = tokio::spawn({
        let url = token_url.clone();
        async move { join(&url, 0xa, "a", &peer(7101)).await }
    });
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    assert!(!first.is_finished(), "one of two registered: still waiting");
    let second = join(&token_url, 0xb, "b", &peer(7102)).await.unwrap();
    let first = tokio::time::timeout(std::time::Duration::from_secs(10), first)
        .await
        .expect("the first joiner wakes up")
        .unwrap()
        .unwrap();
    assert_eq!(first, second);
    assert_eq!(first, "a=http://127.0.0.1:7101,b=http://127.0.0.1:7102");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unknown_token_has_no_size() {
    let service = Service::start().await;
    let url = format!("{}/{}", service.url, "f".repeat(32));
    let err = join(&url, 1, "x", &peer(7201)).await.unwrap_err();
    assert!(matches!(err, DiscoveryError::SizeNotFound), "{err:?}");
    assert_eq!(err.to_string(), "discovery: size key not found");
}
