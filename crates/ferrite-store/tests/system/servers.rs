//! The reference etcd and the subject under test, side by side.

use anyhow::{Context, Result};
use ferrite_testkit::{Cluster, ServerKind};

use crate::normalise::Identity;

/// Selects the subject: `etcd` (to prove the harness) or `ferrite` (default).
pub const SUBJECT_VAR: &str = "FERRITE_CONFORMANCE_SUBJECT";

/// Starts a single-member cluster of each: reference (always etcd) first,
/// subject second, concurrently.
pub async fn start_pair() -> Result<(Cluster, Cluster)> {
    let subject = ServerKind::from_env(SUBJECT_VAR, ServerKind::Ferrite)?;
    let reference = Cluster::start(ServerKind::Etcd, 1);
    let subject = Cluster::builder(subject).ferrite_bin(env!("CARGO_BIN_EXE_ferrite-store")).start();
    let (reference, subject) = tokio::join!(reference, subject);
    Ok((reference.context("starting the reference etcd")?, subject.context("starting the subject")?))
}

/// Reads `/v2/members` and maps every member id, port and the cluster id to
/// placeholders named after the harness's member names.
pub async fn identify(cluster: &Cluster) -> Result<Identity> {
    let url = format!("{}/v2/members", cluster.member(0).client_url());
    let response =
        reqwest::Client::builder().no_proxy().build()?.get(&url).send().await.with_context(|| format!("GET {url}"))?;
    let mut identity = Identity::default();
    if let Some(id) = response.headers().get("x-etcd-cluster-id") {
        identity.cluster_id(id.to_str()?);
    }
    let members: serde_json::Value = response.json().await.context("members JSON")?;
    for harness in cluster.members() {
        let id = id_by_peer_url(&members, &harness.peer_url()).unwrap_or_default();
        identity.member(harness.name(), id, harness.client_port(), harness.peer_port());
    }
    Ok(identity)
}

/// The id of the member with this peer URL in a `/v2/members` answer. By
/// peer URL, because a member's name shows only once it has published it.
pub fn id_by_peer_url<'a>(members: &'a serde_json::Value, peer_url: &str) -> Option<&'a str> {
    members["members"].as_array()?.iter().find(|m| m["peerURLs"][0] == peer_url).and_then(|m| m["id"].as_str())
}
