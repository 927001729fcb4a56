//! A full disk: writes fail with an error, reads go on, and nothing that
//! was acknowledged is lost or corrupted. The data directory lives on a
//! small tmpfs mounted by the test (the system tier runs as root).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use ferrite_testkit::{free_port, Process};

const BIN: &str = env!("CARGO_BIN_EXE_ferrite-store");

/// A tmpfs of a fixed size, unmounted on drop.
struct SmallDisk {
    path: PathBuf,
    _dir: tempfile::TempDir,
}

impl SmallDisk {
    fn mount(size: &str) -> SmallDisk {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("disk");
        std::fs::create_dir(&path).unwrap();
        let status =
            Command::new("mount").args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"]).arg(&path).status();
        assert!(
            status.is_ok_and(|s| s.success()),
            "cannot mount a tmpfs at {} (the system tier needs root)",
            path.display()
        );
        SmallDisk { path, _dir: dir }
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.path).status();
    }
}

fn start(data_dir: &Path, log: &Path, client: u16, peer: u16) -> Process {
    let cmd = ferrite_testkit::solo_member_command(Path::new(BIN), data_dir, client, peer);
    Process::spawn("ferrite-store", cmd, log).unwrap()
}

async fn wait_writable(http: &reqwest::Client, base: &str) {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let resp = http.put(format!("{base}/probe")).form(&[("value", "x")]).send().await;
        if resp.is_ok_and(|r| r.status().is_success()) {
            return;
        }
        assert!(Instant::now() < deadline, "the member never accepted a write");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_fails_writes_keeps_reads_and_loses_nothing() {
    let disk = SmallDisk::mount("4m");
    let data_dir = disk.path.join("data");
    // Leave ~1.5 MiB for the store; the filler is removed later to make room.
    let filler = disk.path.join("filler");
    std::fs::write(&filler, vec![0u8; 2_560 * 1024]).unwrap();
    let logs = tempfile::tempdir().unwrap();
    let (client, peer) = (free_port().unwrap(), free_port().unwrap());
    let mut member = start(&data_dir, &logs.path().join("first.log"), client, peer);
    let http = reqwest::Client::new();
    let base = format!("http://127.0.0.1:{client}/v2/keys");
    wait_writable(&http, &base).await;

    // Write 64 KiB values until the disk refuses one.
    let value = "v".repeat(64 * 1024);
    let mut acknowledged = Vec::new();
    let mut refusal = None;
    for i in 0..200 {
        let resp = http.put(format!("{base}/big/{i}")).form(&[("value", value.as_str())]).send().await.unwrap();
        let status = resp.status().as_u16();
        let body = resp.text().await.unwrap();
        if status == 201 {
            acknowledged.push(i);
        } else {
            refusal = Some((status, body));
            break;
        }
    }
    let (status, body) = refusal.expect("200 writes of 64 KiB fit in a 4 MiB disk");
    assert!(!acknowledged.is_empty(), "no write fitted at all");
    assert_eq!(status, 500, "{body}");
    let error: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(error["errorCode"], 300, "{body}");
    assert!(error["cause"].as_str().unwrap_or("").contains("No space left"), "the cause should say why: {body}");

    // Reads go on, and so do further refusals (no hang, no crash).
    for i in &acknowledged {
        let resp = http.get(format!("{base}/big/{i}")).send().await.unwrap();
        assert_eq!(resp.status().as_u16(), 200, "acknowledged /big/{i} unreadable after the disk filled");
    }
    let again = http.put(format!("{base}/after")).form(&[("value", "x")]).send().await.unwrap();
    assert_eq!(again.status().as_u16(), 500);
    assert!(member.is_running(), "the member died instead of refusing writes");

    // Make room and restart: everything acknowledged is there, intact.
    member.kill().unwrap();
    std::fs::remove_file(&filler).unwrap();
    let _member = start(&data_dir, &logs.path().join("second.log"), client, peer);
    wait_writable(&http, &base).await;
    for i in &acknowledged {
        let resp = http.get(format!("{base}/big/{i}?quorum=true")).send().await.unwrap();
        assert_eq!(resp.status().as_u16(), 200, "acknowledged /big/{i} lost across the restart");
        let v: serde_json::Value = resp.json().await.unwrap();
        assert_eq!(v["node"]["value"].as_str().map(str::len), Some(value.len()), "/big/{i} came back damaged");
    }
}
