//! The VM tier: Ferrite's real disk image, built by `cargo xtask image`,
//! booted under QEMU with OVMF. `cargo xtask test` runs it after tier 2,
//! one test at a time. `FERRITE_IMAGE_DIR` points elsewhere than
//! target/ferrite-image/images.

mod boot;
mod configdrive;
mod pxe;
mod serve;
mod verity;

use std::collections::BTreeMap;
use std::path::PathBuf;

/// The directory holding ferrite.qcow2, ferrite.raw and manifest.json.
pub fn images() -> PathBuf {
    match std::env::var_os("FERRITE_IMAGE_DIR") {
        Some(dir) => PathBuf::from(dir),
        None => PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/ferrite-image/images"),
    }
}

/// The image's manifest.
pub fn manifest() -> serde_json::Value {
    let path = images().join("manifest.json");
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("{}: {e} (build the image first: cargo xtask image)", path.display()));
    serde_json::from_str(&text).expect("manifest.json is JSON")
}

/// The guest's `ferrite-report:` console line as key=value pairs.
pub fn parse_report(line: &str) -> BTreeMap<String, String> {
    let body = line.split_once("ferrite-report:").map(|(_, b)| b).unwrap_or("");
    body.split_whitespace()
        .filter_map(|kv| kv.split_once('='))
        .map(|(k, v)| (k.to_string(), v.trim_end_matches('\r').to_string()))
        .collect()
}

/// `text` as one word for the guest's shell (SSH hands commands to it).
pub fn shell_quote(text: &str) -> String {
    format!("'{}'", text.replace('\'', r"'\''"))
}

/// A guest command's standard output, trimmed; panics naming the command
/// when it fails.
pub fn stdout_of(vm: &ferrite_vm::Vm, command: &str) -> String {
    let out = vm.ssh("core", command).unwrap_or_else(|e| panic!("ssh {command}: {e}"));
    assert!(out.status.success(), "`{command}` in the guest: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// The qcow2 is compressed with zstd, which QEMU decompresses several times
/// faster than qcow2's default zlib as the guest reads it.
#[test]
fn the_qcow2_is_compressed_with_zstd() {
    let qcow2 = images().join("ferrite.qcow2");
    let out = std::process::Command::new("qemu-img")
        .args(["info", "--output=json"])
        .arg(&qcow2)
        .output()
        .expect("qemu-img runs");
    assert!(out.status.success(), "qemu-img info {}: {}", qcow2.display(), String::from_utf8_lossy(&out.stderr));
    let info: serde_json::Value = serde_json::from_slice(&out.stdout).expect("qemu-img info prints JSON");
    assert_eq!(info["format"], "qcow2");
    assert_eq!(info["format-specific"]["data"]["compression-type"], "zstd", "{info:#}");
    // Compressed at all: under half the raw image's size.
    let raw = std::fs::metadata(images().join("ferrite.raw")).expect("ferrite.raw").len();
    assert!(info["actual-size"].as_u64().unwrap() < raw / 2, "{info:#}");
}

#[test]
fn shell_quote_makes_one_word() {
    assert_eq!(shell_quote(r#"ENTRYPOINT ["/usr/bin/env"]"#), r#"'ENTRYPOINT ["/usr/bin/env"]'"#);
    assert_eq!(shell_quote("it's"), r"'it'\''s'");
}

#[test]
fn the_report_line_parses_into_fields() {
    let r = parse_report("[  OK  ] x\rferrite-report: state=running usr=/dev/mapper/usr,squashfs,ro failed= boot=x\r");
    assert_eq!(r["state"], "running");
    assert_eq!(r["usr"], "/dev/mapper/usr,squashfs,ro");
    assert_eq!(r["failed"], "");
}
