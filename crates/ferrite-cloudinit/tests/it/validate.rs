//! Data-driven: every `fixtures/validate/NAME.yaml` is validated and the
//! report must equal `NAME.report` line for line (and `NAME.json`, where it
//! exists, the JSON form). The binary must agree and exit 1 exactly when the
//! report holds an error.

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;

use ferrite_cloudinit::validate::validate;

fn fixtures() -> Vec<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/it/fixtures/validate");
    let mut inputs: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .collect();
    inputs.sort();
    assert!(inputs.len() >= 20, "fixtures missing from {}", dir.display());
    inputs
}

#[test]
fn every_fixture_reports_what_it_expects() {
    let mut failures = Vec::new();
    for input in fixtures() {
        let expected = std::fs::read_to_string(input.with_extension("report"))
            .unwrap_or_else(|e| panic!("{}: no .report beside it: {e}", input.display()));
        let report = validate(&std::fs::read(&input).unwrap());
        if report.to_string() != expected {
            failures.push(format!("{}:\n--- expected\n{expected}--- got\n{report}", input.display()));
        }
        if let Ok(json) = std::fs::read_to_string(input.with_extension("json")) {
            assert_eq!(report.to_json(), json.trim_end(), "{}", input.display());
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn the_binary_prints_the_report_and_exits_1_on_errors() {
    for input in fixtures() {
        let expected = std::fs::read_to_string(input.with_extension("report")).unwrap();
        let output =
            Command::new(env!("CARGO_BIN_EXE_ferrite-cloudinit")).arg("validate").arg(&input).output().unwrap();
        assert_eq!(String::from_utf8_lossy(&output.stdout), expected, "{}", input.display());
        let has_error = expected.lines().any(|l| l.contains(": error: "));
        assert_eq!(output.status.code(), Some(i32::from(has_error)), "{}", input.display());
    }
}

#[test]
fn the_binary_prints_json() {
    let input = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/it/fixtures/validate/several-mistakes.yaml");
    let output = Command::new(env!("CARGO_BIN_EXE_ferrite-cloudinit"))
        .args(["validate", "--json"])
        .arg(&input)
        .output()
        .unwrap();
    let entries: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    let entries = entries.as_array().unwrap();
    assert_eq!(entries.len(), 5);
    assert_eq!(entries[0]["kind"], "error");
    assert_eq!(entries[0]["line"], 6);
    assert_eq!(entries[0]["message"], "invalid value launch");
    assert_eq!(output.status.code(), Some(1));
}

#[test]
fn gzip_compressed_user_data_is_validated_like_plain() {
    let plain =
        std::fs::read(Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/it/fixtures/validate/several-mistakes.yaml"))
            .unwrap();
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    encoder.write_all(&plain).unwrap();
    let gz = encoder.finish().unwrap();
    assert_eq!(validate(&gz), validate(&plain));
    assert!(validate(&gz).has_errors());
}

#[test]
fn a_missing_file_is_an_error_naming_it() {
    let output = Command::new(env!("CARGO_BIN_EXE_ferrite-cloudinit"))
        .args(["validate", "/nonexistent/user-data"])
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&output.stderr).contains("/nonexistent/user-data"));
}
