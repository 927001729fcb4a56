//! A three-member cluster of the subject under the faults the testkit can
//! inject: a killed member, a restarted one, a paused one, a new one.

use std::time::{Duration, Instant};

use anyhow::{ensure, Context, Result};
use ferrite_testkit::{Cluster, ServerKind};

use crate::servers::{id_by_peer_url, SUBJECT_VAR};

/// Writes the key through one member, retrying for up to 10 s while the
/// cluster answers 5xx (a write during an election fails; clients retry).
async fn put(client: &reqwest::Client, cluster: &Cluster, member: usize, value: &str) -> Result<()> {
    let url = format!("{}/v2/keys/faults/a", cluster.member(member).client_url());
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let response = client.put(&url).form(&[("value", value)]).send().await?;
        let status = response.status();
        if status.is_server_error() && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(200)).await;
            continue;
        }
        ensure!(status.is_success(), "PUT {url}: {status}: {}", response.text().await?);
        return Ok(());
    }
}

/// The key's value read through raft (`quorum=true`) from one member,
/// retrying for up to 10 s while the member answers 5xx or not at all.
async fn get(client: &reqwest::Client, cluster: &Cluster, member: usize) -> Result<String> {
    let url = format!("{}/v2/keys/faults/a?quorum=true", cluster.member(member).client_url());
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let answer = client.get(&url).send().await;
        let retry = match &answer {
            Ok(response) => response.status().is_server_error(),
            Err(_) => true,
        };
        if retry && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(200)).await;
            continue;
        }
        let body: serde_json::Value = answer?.json().await?;
        let value = body["node"]["value"].as_str();
        return Ok(value.with_context(|| format!("GET {url}: {body}"))?.to_owned());
    }
}

// Failures panic here, with the cluster alive, so its logs are kept and named.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_survives_member_faults() {
    let kind = ServerKind::from_env(SUBJECT_VAR, ServerKind::Ferrite).unwrap();
    let mut cluster =
        Cluster::builder(kind).members(3).ferrite_bin(env!("CARGO_BIN_EXE_ferrite-store")).start().await.unwrap();
    faults(&mut cluster).await.unwrap();
}

async fn faults(cluster: &mut Cluster) -> Result<()> {
    let client = reqwest::Client::builder().no_proxy().timeout(Duration::from_secs(15)).build()?;
    put(&client, cluster, 0, "one").await?;

    cluster.kill(2)?;
    put(&client, cluster, 0, "two").await.context("writing with one member killed")?;
    cluster.restart(2).await?;
    assert_eq!(get(&client, cluster, 2).await?, "two", "the restarted member reads the write it missed");

    cluster.pause(1)?;
    put(&client, cluster, 0, "three").await.context("writing with one member paused")?;
    cluster.resume(1)?;
    assert_eq!(get(&client, cluster, 1).await?, "three", "the resumed member catches up");

    let added = cluster.add_member().await?;
    assert_eq!(get(&client, cluster, added).await?, "three", "the new member has the data");
    let url = format!("{}/v2/members", cluster.member(0).client_url());
    let members: serde_json::Value = client.get(&url).send().await?.json().await?;
    let names: Vec<&str> =
        members["members"].as_array().context("members")?.iter().filter_map(|m| m["name"].as_str()).collect();
    assert_eq!(names.len(), 4, "members after adding one: {members}");
    assert!(names.contains(&"n4"), "n4 among {names:?}");

    Ok(())
}

/// A member removed through itself answers the removal, and only then
/// stops. A member that stopped first would make etcdctl, which sent it
/// there, retry on another member, and that retry finds nothing to remove:
/// 404. With one member beside it the removed member learns of it from
/// its own log, at the moment the leader commits it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_removed_through_itself_answers_before_it_stops() {
    let kind = ServerKind::from_env(SUBJECT_VAR, ServerKind::Ferrite).unwrap();
    let mut cluster =
        Cluster::builder(kind).members(1).ferrite_bin(env!("CARGO_BIN_EXE_ferrite-store")).start().await.unwrap();
    removed_through_itself(&mut cluster).await.unwrap();
}

async fn removed_through_itself(cluster: &mut Cluster) -> Result<()> {
    let client = reqwest::Client::builder().no_proxy().timeout(Duration::from_secs(15)).build()?;
    let added = cluster.add_member().await?;
    let url = format!("{}/v2/members", cluster.member(0).client_url());
    let members: serde_json::Value = client.get(&url).send().await?.json().await?;
    let peer = cluster.member(added).peer_url();
    let id = id_by_peer_url(&members, &peer).with_context(|| format!("{peer} in {members}"))?.to_owned();
    let own = cluster.member(added).client_url();
    let removal =
        client.delete(format!("{own}/v2/members/{id}")).send().await.context("DELETE through the member itself")?;
    ensure!(removal.status() == reqwest::StatusCode::NO_CONTENT, "{}: {}", removal.status(), removal.text().await?);
    let deadline = Instant::now() + Duration::from_secs(10);
    while client.get(format!("{own}/version")).send().await.is_ok() {
        ensure!(Instant::now() < deadline, "the removed member still serves 10 s after its removal");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let members: serde_json::Value = client.get(&url).send().await?.json().await?;
    ensure!(members["members"].as_array().map(Vec::len) == Some(1), "members after the removal: {members}");
    Ok(())
}
