//! Tier 1: the GPT writer's output read by an independent reader
//! (util-linux's sfdisk, no root: it works on a plain file).

use std::io::{Seek, SeekFrom, Write};
use std::process::Command;

use ferrite_image::derive;
use ferrite_image::gpt::{Entry, Table, SECTOR};
use ferrite_image::layout::{Layout, Role, Sizes};

#[test]
fn sfdisk_reads_the_design_layout_with_its_types_labels_and_uuids() {
    let layout = Layout::plan(&Sizes::default());
    let seed = [7u8; 32];
    let (usr_a, usr_a_verity) = derive::verity_partition_uuids(&seed);
    let uuid_of = |role: Role| match role {
        Role::UsrA => usr_a,
        Role::UsrAVerity => usr_a_verity,
        other => derive::uuid(&seed, other.label()),
    };
    let table = Table {
        disk_guid: derive::uuid(&seed, "disk"),
        disk_blocks: layout.disk_size / SECTOR,
        entries: layout
            .partitions
            .iter()
            .map(|p| Entry {
                type_guid: p.role.type_guid(),
                unique_guid: uuid_of(p.role),
                first_lba: p.first_lba(),
                last_lba: p.last_lba(),
                attributes: 0,
                label: p.role.label().into(),
            })
            .collect(),
    };
    let enc = table.encode().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let disk = dir.path().join("disk.raw");
    let mut f = std::fs::File::create(&disk).unwrap();
    f.set_len(layout.disk_size).unwrap();
    f.write_all(&enc.head).unwrap();
    f.seek(SeekFrom::End(-(enc.tail.len() as i64))).unwrap();
    f.write_all(&enc.tail).unwrap();
    drop(f);

    let verify = Command::new("sfdisk").arg("--verify").arg(&disk).output().expect("sfdisk runs");
    let text = String::from_utf8_lossy(&verify.stdout);
    assert!(verify.status.success(), "sfdisk --verify: {text}");
    assert!(text.contains("No errors detected"), "sfdisk --verify: {text}");

    let dump = Command::new("sfdisk").arg("--json").arg(&disk).output().expect("sfdisk runs");
    assert!(dump.status.success());
    let json: serde_json::Value = serde_json::from_slice(&dump.stdout).unwrap();
    let pt = &json["partitiontable"];
    assert_eq!(pt["label"], "gpt");
    assert_eq!(pt["id"].as_str().unwrap().to_lowercase(), table.disk_guid.to_string());
    let parts = pt["partitions"].as_array().unwrap();
    assert_eq!(parts.len(), 7);
    for (got, placed) in parts.iter().zip(&layout.partitions) {
        assert_eq!(got["name"], placed.role.label());
        assert_eq!(got["type"].as_str().unwrap().to_lowercase(), placed.role.type_guid().to_string());
        assert_eq!(got["uuid"].as_str().unwrap().to_lowercase(), uuid_of(placed.role).to_string());
        assert_eq!(got["start"].as_u64().unwrap(), placed.first_lba());
        assert_eq!(got["size"].as_u64().unwrap(), placed.size / SECTOR);
    }
}
