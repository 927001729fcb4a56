//! The member side of discovery against a real etcd used directly as the
//! discovery store (`--discovery http://etcd/v2/keys/discovery/<token>`).
//! The same protocol through ferrite-discovery is tested in that crate.

use ferrite_etcd_client::discovery::{join, DiscoveryError};

use crate::etcd;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn join_through_a_plain_etcd_directory() {
    let (_etcd, client) = etcd().await;
    let base = client.current_endpoint().as_str().trim_end_matches('/').to_owned();
    client.create("/discovery/tok/_config/size", "2", None).await.unwrap();
    let url = format!("{base}/v2/keys/discovery/tok");

    let missing = join(&format!("{base}/v2/keys/discovery/none"), 1, "a", &["http://127.0.0.1:1".into()]).await;
    assert!(matches!(missing, Err(DiscoveryError::SizeNotFound)), "{missing:?}");

    let (a_urls, b_urls) = (["http://127.0.0.1:7001".to_owned()], ["http://127.0.0.1:7002".to_owned()]);
    let a = join(&url, 0xa, "a", &a_urls);
    let b = join(&url, 0xb, "b", &b_urls);
    let (a, b) = tokio::join!(a, b);
    let (a, b) = (a.unwrap(), b.unwrap());
    assert_eq!(a, b);
    let mut entries: Vec<&str> = a.split(',').collect();
    entries.sort();
    assert_eq!(entries, ["a=http://127.0.0.1:7001", "b=http://127.0.0.1:7002"]);

    let third = join(&url, 0xc, "c", &["http://127.0.0.1:7003".into()]).await;
    assert!(matches!(third, Err(DiscoveryError::FullCluster { size: 2 })), "{third:?}");
    assert_eq!(third.unwrap_err().to_string(), "discovery: cluster is full");

    // A member already registered, coming back: etcd's duplicate-id answer.
    let again = join(&url, 0xa, "a", &["http://127.0.0.1:7001".into()]).await;
    assert!(matches!(again, Err(DiscoveryError::DuplicateId { .. })), "{again:?}");
}
