//! Member and cluster ids, derived exactly as etcd derives them, so the same
//! `--initial-cluster` and token give the same ids under etcd and Ferrite.

use sha1::{Digest, Sha1};

/// A member's id: SHA-1 of its sorted peer URLs, the cluster token and,
/// for members added at runtime, the Unix second of the addition.
pub fn member_id(peer_urls: &[String], token: &str, added_at_unix: Option<i64>) -> u64 {
    let mut urls = peer_urls.to_vec();
    urls.sort();
    let mut hasher = Sha1::new();
    hasher.update(urls.concat().as_bytes());
    hasher.update(token.as_bytes());
    if let Some(secs) = added_at_unix {
        hasher.update(secs.to_string().as_bytes());
    }
    first_u64(&hasher.finalize())
}

/// The cluster id: SHA-1 of the sorted initial member ids, big-endian.
pub fn cluster_id(member_ids: &[u64]) -> u64 {
    let mut ids = member_ids.to_vec();
    ids.sort_unstable();
    let mut hasher = Sha1::new();
    for id in ids {
        hasher.update(id.to_be_bytes());
    }
    first_u64(&hasher.finalize())
}

fn first_u64(digest: &[u8]) -> u64 {
    let mut bytes = [0u8; 8];
    bytes.copy_from_slice(&digest[..8]);
    u64::from_be_bytes(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_single_member_ids_match_etcds() {
        // etcd 3.4 started with all defaults reports member 8e9e05c52164694d
        // in cluster cdf818194e3a8c32.
        let id = member_id(&["http://localhost:2380".to_owned()], "etcd-cluster", None);
        assert_eq!(format!("{id:x}"), "8e9e05c52164694d");
        assert_eq!(format!("{:x}", cluster_id(&[id])), "cdf818194e3a8c32");
    }

    #[test]
    fn url_order_does_not_matter_but_the_token_does() {
        let a = member_id(&["http://a:1".into(), "http://b:2".into()], "t", None);
        let b = member_id(&["http://b:2".into(), "http://a:1".into()], "t", None);
        assert_eq!(a, b);
        assert_ne!(a, member_id(&["http://a:1".into(), "http://b:2".into()], "u", None));
        assert_ne!(a, member_id(&["http://a:1".into(), "http://b:2".into()], "t", Some(1)));
    }
}
