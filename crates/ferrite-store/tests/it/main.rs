//! In-process clusters (tier 1): several members in one process on
//! loopback, driven over their real HTTP APIs, with links cut through the
//! raft network's fault table.

mod cli;
mod cluster;
mod datadir;

use std::time::{Duration, Instant};

use cluster::Cluster;
use serde_json::Value;

async fn body(resp: reqwest::Response) -> (u16, Value) {
    let status = resp.status().as_u16();
    let value = resp.json().await.unwrap_or(Value::Null);
    (status, value)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_single_member_serves_the_keys_api() {
    let c = Cluster::start(1).await;
    let http = reqwest::Client::new();
    let url = c.keys_url(0, "/message");
    let (status, v) = body(http.put(&url).form(&[("value", "hello")]).send().await.unwrap()).await;
    assert_eq!(status, 201, "{v}");
    assert_eq!(v["action"], "set");
    assert_eq!(v["node"]["value"], "hello");
    let (status, v) = body(http.get(&url).send().await.unwrap()).await;
    assert_eq!(status, 200);
    assert_eq!(v["node"]["value"], "hello");
    let (status, v) = body(http.get(c.keys_url(0, "/missing")).send().await.unwrap()).await;
    assert_eq!((status, v["errorCode"].as_u64()), (404, Some(100)));
    c.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn followers_forward_writes_and_quorum_reads_see_them() {
    let c = Cluster::start(3).await;
    let leader = c.wait_leader().await;
    let follower = (leader + 1) % 3;
    let other = (leader + 2) % 3;
    let http = reqwest::Client::new();
    for i in 0..20 {
        let resp = http.put(c.keys_url(follower, &format!("/k{i}"))).form(&[("value", i.to_string())]).send().await;
        assert_eq!(resp.unwrap().status().as_u16(), 201);
        // Linearizable: a quorum read anywhere sees an acknowledged write.
        let (status, v) = body(http.get(c.keys_url(other, &format!("/k{i}?quorum=true"))).send().await.unwrap()).await;
        assert_eq!(status, 200, "{v}");
        assert_eq!(v["node"]["value"], i.to_string());
    }
    // Read-your-writes on the member that took the write, without quorum.
    let (_, v) = body(http.get(c.keys_url(follower, "/k19")).send().await.unwrap()).await;
    assert_eq!(v["node"]["value"], "19");
    c.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_writes_each_get_their_own_answer() {
    // Many writes at once queue up on the leader and share log entries
    // (group commit); each must still be answered with its own result.
    let c = Cluster::start(3).await;
    let leader = c.wait_leader().await;
    let http = reqwest::Client::new();
    let writes = (0..64).map(|i| {
        let http = http.clone();
        // Half through the leader, half forwarded by followers.
        let url = c.keys_url([leader, (leader + 1) % 3, leader, (leader + 2) % 3][i % 4], &format!("/many/k{i}"));
        async move {
            let (status, v) = body(http.put(&url).form(&[("value", format!("v{i}"))]).send().await.unwrap()).await;
            (i, status, v)
        }
    });
    for (i, status, v) in futures::future::join_all(writes).await {
        assert_eq!(status, 201, "{v}");
        assert_eq!(v["node"]["key"], format!("/many/k{i}"));
        assert_eq!(v["node"]["value"], format!("v{i}"));
    }
    // Creating the same key twice at once: exactly one wins.
    let creates = (0..8).map(|i| {
        let http = http.clone();
        let url = c.keys_url(leader, "/many/once?prevExist=false");
        async move { http.put(&url).form(&[("value", format!("c{i}"))]).send().await.unwrap().status().as_u16() }
    });
    let statuses = futures::future::join_all(creates).await;
    assert_eq!(statuses.iter().filter(|s| **s == 201).count(), 1, "{statuses:?}");
    assert_eq!(statuses.iter().filter(|s| **s == 412).count(), 7, "{statuses:?}");
    c.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ttl_keys_expire_on_every_member_by_the_leaders_clock() {
    let c = Cluster::start(3).await;
    c.wait_leader().await;
    let http = reqwest::Client::new();
    let resp = http.put(c.keys_url(0, "/lease")).form(&[("value", "v"), ("ttl", "1")]).send().await.unwrap();
    assert_eq!(resp.status().as_u16(), 201);
    let deadline = Instant::now() + Duration::from_secs(6);
    for member in 0..3 {
        loop {
            let status = http.get(c.keys_url(member, "/lease")).send().await.unwrap().status().as_u16();
            if status == 404 {
                break;
            }
            assert!(Instant::now() < deadline, "member {member} still has the key after its TTL");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    c.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_leader_takes_over_and_keeps_every_acknowledged_write() {
    let mut c = Cluster::start(3).await;
    let leader = c.wait_leader().await;
    let http = reqwest::Client::new();
    let survivor = (leader + 1) % 3;
    let mut acked = Vec::new();
    for i in 0..30 {
        let resp = http.put(c.keys_url(survivor, &format!("/w{i}"))).form(&[("value", "x")]).send().await.unwrap();
        if resp.status().is_success() {
            acked.push(i);
        }
    }
    c.kill(leader).await;
    let new_leader = c.wait_leader().await;
    assert_ne!(new_leader, leader);
    let resp = http.put(c.keys_url(survivor, "/after")).form(&[("value", "y")]).send().await.unwrap();
    assert_eq!(resp.status().as_u16(), 201);
    for i in acked {
        let status = http.get(c.keys_url(survivor, &format!("/w{i}?quorum=true"))).send().await.unwrap().status();
        assert_eq!(status.as_u16(), 200, "acknowledged write /w{i} lost");
    }
    c.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_partitioned_follower_catches_up_after_the_cut_heals() {
    let c = Cluster::start(3).await;
    let leader = c.wait_leader().await;
    let cut = (leader + 1) % 3;
    c.isolate(cut);
    let http = reqwest::Client::new();
    for i in 0..10 {
        let resp = http.put(c.keys_url(leader, &format!("/p{i}"))).form(&[("value", "v")]).send().await.unwrap();
        assert_eq!(resp.status().as_u16(), 201, "the majority side must keep serving writes");
    }
    c.heal();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let status = http.get(c.keys_url(cut, "/p9")).send().await.unwrap().status().as_u16();
        if status == 200 {
            break;
        }
        assert!(Instant::now() < deadline, "the healed follower never caught up");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    c.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_cluster_restart_keeps_all_data() {
    let mut c = Cluster::start(3).await;
    c.wait_leader().await;
    let http = reqwest::Client::new();
    for i in 0..25 {
        let resp = http.put(c.keys_url(i % 3, &format!("/r/{i}"))).form(&[("value", i.to_string())]).send().await;
        assert_eq!(resp.unwrap().status().as_u16(), 201);
    }
    c.restart_all().await;
    c.wait_leader().await;
    let (status, v) =
        body(http.get(c.keys_url(1, "/r?recursive=true&sorted=true&quorum=true")).send().await.unwrap()).await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["node"]["nodes"].as_array().map(Vec::len), Some(25));
    c.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn log_segments_roll_purges_delete_them_and_a_restart_keeps_all_data() {
    let mut c = Cluster::start_with(3, |s| {
        s.snapshot_count = 50;
        s.log_segment_bytes = 4096;
    })
    .await;
    c.wait_leader().await;
    let http = reqwest::Client::new();
    let value = "v".repeat(100);
    for i in 0..400 {
        let resp = http.put(c.keys_url(i % 3, &format!("/seg/{i}"))).form(&[("value", &value)]).send().await;
        assert_eq!(resp.unwrap().status().as_u16(), 201);
    }
    // Snapshots and purges run in the background: wait until every member
    // has deleted its first segments.
    let deadline = Instant::now() + Duration::from_secs(10);
    for member in 0..3 {
        loop {
            let segments = c.log_segments(member);
            if segments.first().is_some_and(|&first| first > 0) && segments.len() < 10 {
                break;
            }
            assert!(Instant::now() < deadline, "member {member} kept its segments: {segments:?}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    c.restart_all().await;
    c.wait_leader().await;
    for member in 0..3 {
        let url = c.keys_url(member, "/seg?recursive=true&quorum=true");
        let (status, v) = body(http.get(url).send().await.unwrap()).await;
        assert_eq!(status, 200, "{v}");
        assert_eq!(v["node"]["nodes"].as_array().map(Vec::len), Some(400), "member {member}");
    }
    let resp = http.put(c.keys_url(0, "/seg/after")).form(&[("value", "x")]).send().await.unwrap();
    assert_eq!(resp.status().as_u16(), 201);
    c.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_removed_member_stops_and_the_rest_keep_serving() {
    let c = Cluster::start(3).await;
    let leader = c.wait_leader().await;
    let victim = (leader + 1) % 3;
    let http = reqwest::Client::new();
    let victim_node = c.node(victim);
    let url = format!("{}/v2/members/{:x}", c.client_url(leader), victim_node.id);
    let resp = http.delete(&url).send().await.unwrap();
    assert_eq!(resp.status().as_u16(), 204);
    tokio::time::timeout(Duration::from_secs(10), victim_node.removed.notified())
        .await
        .expect("the removed member never noticed its removal");
    let (status, v) = body(http.get(format!("{}/v2/members", c.client_url(leader))).send().await.unwrap()).await;
    assert_eq!(status, 200);
    assert_eq!(v["members"].as_array().map(Vec::len), Some(2), "{v}");
    let resp = http.put(c.keys_url(leader, "/after-removal")).form(&[("value", "x")]).send().await.unwrap();
    assert_eq!(resp.status().as_u16(), 201);
    c.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leader_can_remove_itself_and_the_others_elect_a_new_one() {
    let mut c = Cluster::start(3).await;
    let leader = c.wait_leader().await;
    let http = reqwest::Client::new();
    let leader_node = c.node(leader);
    let url = format!("{}/v2/members/{:x}", c.client_url(leader), leader_node.id);
    assert_eq!(http.delete(&url).send().await.unwrap().status().as_u16(), 204);
    tokio::time::timeout(Duration::from_secs(10), leader_node.removed.notified())
        .await
        .expect("the removed leader never stopped");
    c.kill(leader).await;
    let new_leader = c.wait_leader().await;
    assert_ne!(new_leader, leader);
    let (_, v) = body(http.get(format!("{}/v2/members", c.client_url(new_leader))).send().await.unwrap()).await;
    assert_eq!(v["members"].as_array().map(Vec::len), Some(2), "{v}");
    let resp = http.put(c.keys_url(new_leader, "/after")).form(&[("value", "x")]).send().await.unwrap();
    assert_eq!(resp.status().as_u16(), 201);
    c.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_follower_far_behind_catches_up_from_a_snapshot_and_restarts_from_it() {
    let mut c = Cluster::start_with(3, |s| s.snapshot_count = 20).await;
    let leader = c.wait_leader().await;
    let behind = (leader + 1) % 3;
    c.isolate(behind);
    let http = reqwest::Client::new();
    for i in 0..150 {
        let resp = http.put(c.keys_url(leader, &format!("/s/{i}"))).form(&[("value", i.to_string())]).send().await;
        assert_eq!(resp.unwrap().status().as_u16(), 201);
    }
    // The leader compacts its log past what the follower has (snapshots
    // and purges run in the background, so give them a moment).
    let behind_at = c.node(behind).raft.metrics().borrow().last_log_index.unwrap_or(0);
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let purged = c.node(leader).raft.metrics().borrow().purged.map_or(0, |l| l.index);
        if purged > behind_at {
            break;
        }
        assert!(Instant::now() < deadline, "the leader kept its log (purged {purged}, follower at {behind_at})");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    c.heal();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (status, v) = body(http.get(c.keys_url(behind, "/s/149")).send().await.unwrap()).await;
        if status == 200 {
            assert_eq!(v["node"]["value"], "149");
            break;
        }
        assert!(Instant::now() < deadline, "the follower never caught up from the snapshot");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Every member restarts from its snapshot plus the log after it.
    c.restart_all().await;
    c.wait_leader().await;
    for member in 0..3 {
        let (status, v) = body(http.get(c.keys_url(member, "/s?recursive=true")).send().await.unwrap()).await;
        assert_eq!(status, 200);
        assert_eq!(v["node"]["nodes"].as_array().map(Vec::len), Some(150), "member {member}");
    }
    c.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leader_and_self_stats_count_real_replication() {
    let c = Cluster::start(3).await;
    let leader = c.wait_leader().await;
    let http = reqwest::Client::new();
    for i in 0..10 {
        let resp = http.put(c.keys_url(leader, &format!("/st{i}"))).form(&[("value", "v")]).send().await.unwrap();
        assert_eq!(resp.status().as_u16(), 201);
    }
    // A write is acknowledged once one follower has it; the other's first
    // answer may come a little later (its first append also persists the
    // new term), so wait for it.
    let deadline = Instant::now() + Duration::from_secs(10);
    let v = loop {
        let (status, v) =
            body(http.get(format!("{}/v2/stats/leader", c.client_url(leader))).send().await.unwrap()).await;
        assert_eq!(status, 200);
        let counted = |f: &serde_json::Value| f["counts"]["success"].as_u64().unwrap() > 0;
        if v["followers"].as_object().is_some_and(|f| f.len() == 2 && f.values().all(counted)) {
            break v;
        }
        assert!(Instant::now() < deadline, "a follower's appends were never counted: {v}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    for (id, f) in v["followers"].as_object().unwrap() {
        let (min, avg, max) =
            (f["latency"]["minimum"].as_f64(), f["latency"]["average"].as_f64(), f["latency"]["maximum"].as_f64());
        assert!(min.unwrap() > 0.0 && min <= avg && avg <= max, "follower {id}: {f}");
    }
    let (_, me) = body(http.get(format!("{}/v2/stats/self", c.client_url(leader))).send().await.unwrap()).await;
    assert!(me["sendAppendRequestCnt"].as_u64().unwrap() > 0, "{me}");
    let follower = (leader + 1) % 3;
    let (_, them) = body(http.get(format!("{}/v2/stats/self", c.client_url(follower))).send().await.unwrap()).await;
    assert!(them["recvAppendRequestCnt"].as_u64().unwrap() > 0, "{them}");
    let (status, _) = body(http.get(format!("{}/v2/stats/leader", c.client_url(follower))).send().await.unwrap()).await;
    assert_eq!(status, 403, "a follower is not the current leader");
    c.stop().await;
}
