//! The real binary refuses a data directory it cannot trust, and says
//! which file is at fault, instead of serving from damaged state.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use ferrite_testkit::free_port;

const BIN: &str = env!("CARGO_BIN_EXE_ferrite-store");

fn command(data_dir: &Path, client: u16, peer: u16) -> Command {
    ferrite_testkit::solo_member_command(Path::new(BIN), data_dir, client, peer)
}

/// Runs the binary expecting it to exit by itself; returns its output.
fn run_to_exit(mut cmd: Command) -> Output {
    let mut child = cmd.stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
    let deadline = Instant::now() + Duration::from_secs(15);
    while child.try_wait().unwrap().is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("ferrite-store kept running on a data directory it should refuse");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    child.wait_with_output().unwrap()
}

/// Starts a member, writes `n` keys through the API, and kills it.
async fn populate(data_dir: &Path, n: usize) {
    let (client, peer) = (free_port().unwrap(), free_port().unwrap());
    let mut child = command(data_dir, client, peer).stdout(Stdio::null()).stderr(Stdio::null()).spawn().unwrap();
    let http = reqwest::Client::new();
    let base = format!("http://127.0.0.1:{client}/v2/keys");
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let ok = http.put(format!("{base}/k0")).form(&[("value", "0")]).send().await.is_ok_and(|r| r.status() == 201);
        if ok {
            break;
        }
        assert!(Instant::now() < deadline, "the member never accepted a write");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    for i in 1..n {
        let resp = http.put(format!("{base}/k{i}")).form(&[("value", i.to_string())]).send().await.unwrap();
        assert_eq!(resp.status().as_u16(), 201);
    }
    child.kill().unwrap();
    child.wait().unwrap();
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[tokio::test]
async fn a_log_damaged_in_the_middle_stops_the_start_and_names_the_file() {
    let dir = tempfile::tempdir().unwrap();
    populate(dir.path(), 200).await;
    let log: PathBuf = dir.path().join("ferrite/raft/log.0000000000000000");
    let mut bytes = std::fs::read(&log).unwrap();
    let middle = bytes.len() / 3;
    bytes[middle] ^= 0xff;
    std::fs::write(&log, &bytes).unwrap();

    let out = run_to_exit(command(dir.path(), free_port().unwrap(), free_port().unwrap()));
    assert!(!out.status.success(), "started on a corrupt log");
    let err = stderr(&out);
    assert!(err.contains(&log.display().to_string()), "the error does not name {}: {err}", log.display());
    assert!(err.contains("corrupt") || err.contains("decode"), "{err}");
}

#[tokio::test]
async fn an_etcd_data_directory_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("member/wal")).unwrap();
    let out = run_to_exit(command(dir.path(), free_port().unwrap(), free_port().unwrap()));
    assert!(!out.status.success());
    let err = stderr(&out);
    assert!(err.contains("etcd data directory") && err.contains(&dir.path().display().to_string()), "{err}");
}

#[tokio::test]
async fn a_damaged_member_file_is_refused_by_name() {
    let dir = tempfile::tempdir().unwrap();
    populate(dir.path(), 3).await;
    let meta = dir.path().join("ferrite/meta.json");
    std::fs::write(&meta, b"{ not json").unwrap();
    let out = run_to_exit(command(dir.path(), free_port().unwrap(), free_port().unwrap()));
    assert!(!out.status.success());
    let err = stderr(&out);
    assert!(err.contains(&meta.display().to_string()), "{err}");
}

#[tokio::test]
async fn a_foreign_file_in_place_of_the_log_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    populate(dir.path(), 3).await;
    let log = dir.path().join("ferrite/raft/log.0000000000000000");
    std::fs::write(&log, b"this is not a raft log at all, just text").unwrap();
    let out = run_to_exit(command(dir.path(), free_port().unwrap(), free_port().unwrap()));
    assert!(!out.status.success());
    let err = stderr(&out);
    assert!(err.contains(&log.display().to_string()) && err.contains("not a ferrite-store"), "{err}");
}
