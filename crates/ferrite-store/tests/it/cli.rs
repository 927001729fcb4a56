//! The binary takes etcd's `ETCD_*` environment as etcd does, so a unit
//! file or cloud-config written for etcd configures it unchanged.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use ferrite_testkit::{free_port, Process};

#[tokio::test]
async fn etcd_environment_variables_configure_the_member() {
    let dir = tempfile::tempdir().unwrap();
    let (client, peer) = (free_port().unwrap(), free_port().unwrap());
    let client_url = format!("http://127.0.0.1:{client}");
    let peer_url = format!("http://127.0.0.1:{peer}");
    let mut child = Command::new(env!("CARGO_BIN_EXE_ferrite-store"))
        .env("ETCD_NAME", "from-env")
        .env("ETCD_DATA_DIR", dir.path())
        .env("ETCD_LISTEN_CLIENT_URLS", &client_url)
        .env("ETCD_ADVERTISE_CLIENT_URLS", &client_url)
        .env("ETCD_LISTEN_PEER_URLS", &peer_url)
        .env("ETCD_INITIAL_ADVERTISE_PEER_URLS", &peer_url)
        .env("ETCD_INITIAL_CLUSTER", format!("from-env={peer_url}"))
        .env("ETCD_INITIAL_CLUSTER_TOKEN", "env-token")
        .env("ETCD_ENABLE_V2", "true")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let members = first_member_named(&client_url, "from-env").await;
    let _ = child.kill();
    let _ = child.wait();
    assert_eq!(members["members"][0]["peerURLs"][0], peer_url.as_str());
    assert_eq!(members["members"][0]["clientURLs"][0], client_url.as_str());
    // The id is etcd's: derived from the peer URL and ETCD_INITIAL_CLUSTER_TOKEN.
    let expected = ferrite_store::ids::member_id(std::slice::from_ref(&peer_url), "env-token", None);
    assert_eq!(members["members"][0]["id"], format!("{expected:x}"));
    assert!(dir.path().join("ferrite/meta.json").exists(), "ETCD_DATA_DIR was not used");
}

/// etcd 0.4's address variables, which cloud-config's `coreos.etcd.addr`
/// and `peer-addr` become: advertised as given, served on every interface.
#[tokio::test]
async fn etcd_0_4_address_variables_configure_the_member() {
    let dir = tempfile::tempdir().unwrap();
    let (client, peer) = (free_port().unwrap(), free_port().unwrap());
    let mut command = Command::new(env!("CARGO_BIN_EXE_ferrite-store"));
    command
        .env("ETCD_NAME", "legacy")
        .env("ETCD_DATA_DIR", dir.path().join("data"))
        .env("ETCD_ADDR", format!("127.0.0.1:{client}"))
        .env("ETCD_PEER_ADDR", format!("127.0.0.1:{peer}"));
    // Killed and reaped on drop, even when an assertion fails.
    let _member = Process::spawn("legacy", command, &dir.path().join("legacy.log")).unwrap();
    let members = first_member_named(&format!("http://127.0.0.1:{client}"), "legacy").await;
    assert_eq!(members["members"][0]["clientURLs"], serde_json::json!([format!("http://127.0.0.1:{client}")]));
    assert_eq!(members["members"][0]["peerURLs"], serde_json::json!([format!("http://127.0.0.1:{peer}")]));
}

/// Polls `/v2/members` until the first member carries `name`.
async fn first_member_named(client_url: &str, name: &str) -> serde_json::Value {
    let http = reqwest::Client::new();
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        if let Ok(resp) = http.get(format!("{client_url}/v2/members")).send().await {
            let v: serde_json::Value = resp.json().await.unwrap();
            if v["members"][0]["name"] == name {
                return v;
            }
        }
        assert!(Instant::now() < deadline, "no member named {name} came up at {client_url}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
