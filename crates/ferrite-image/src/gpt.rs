//! A GUID partition table, written from Rust so the disk is assembled
//! without loop devices or partitioning tools.
//!
//! The layout follows the UEFI specification: a protective MBR in LBA 0,
//! the primary header in LBA 1 with 128 entries of 128 bytes from LBA 2,
//! and the backup entries and header at the end of the disk. Everything
//! here is pure: [`Table::encode`] turns a table into the bytes to write
//! at the start and at the end of the disk.

use std::fmt;
use std::str::FromStr;

/// Bytes per logical block.
pub const SECTOR: u64 = 512;
/// Entries in the partition array (the specification's minimum size).
const ENTRIES: u64 = 128;
/// Bytes per entry.
const ENTRY_SIZE: u64 = 128;
/// Blocks taken by the entry array.
const ENTRY_BLOCKS: u64 = ENTRIES * ENTRY_SIZE / SECTOR;

/// A GUID as written in text (`C12A7328-F81F-11D2-BA4B-00A0C93EC93B`):
/// the 16 bytes in text order. GPT stores the first three fields little
/// endian; [`Guid::to_gpt_bytes`] does that swap.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Guid(pub [u8; 16]);

impl Guid {
    /// The GUID whose text form is these 16 bytes in order, the way
    /// systemd turns the halves of a verity root hash into partition UUIDs.
    pub fn from_bytes(bytes: [u8; 16]) -> Self {
        Guid(bytes)
    }

    /// The on-disk (mixed-endian) form.
    pub fn to_gpt_bytes(self) -> [u8; 16] {
        let b = self.0;
        [b[3], b[2], b[1], b[0], b[5], b[4], b[7], b[6], b[8], b[9], b[10], b[11], b[12], b[13], b[14], b[15]]
    }

    /// Reads the on-disk (mixed-endian) form.
    pub fn from_gpt_bytes(b: [u8; 16]) -> Self {
        Guid([b[3], b[2], b[1], b[0], b[5], b[4], b[7], b[6], b[8], b[9], b[10], b[11], b[12], b[13], b[14], b[15]])
    }
}

impl fmt::Display for Guid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, byte) in self.0.iter().enumerate() {
            if matches!(i, 4 | 6 | 8 | 10) {
                f.write_str("-")?;
            }
            write!(f, "{byte:02x}")?;
        }
        Ok(())
    }
}

impl fmt::Debug for Guid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Guid({self})")
    }
}

/// A GUID string that is not 32 hex digits in the 8-4-4-4-12 shape.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("not a GUID: {0:?}")]
pub struct BadGuid(pub String);

impl FromStr for Guid {
    type Err = BadGuid;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || BadGuid(s.to_string());
        let groups: Vec<&str> = s.split('-').collect();
        if groups.iter().map(|g| g.len()).collect::<Vec<_>>() != [8, 4, 4, 4, 12] {
            return Err(bad());
        }
        let hex: String = groups.concat();
        let mut out = [0u8; 16];
        for (i, byte) in out.iter_mut().enumerate() {
            *byte = u8::from_str_radix(hex.get(2 * i..2 * i + 2).ok_or_else(bad)?, 16).map_err(|_| bad())?;
        }
        Ok(Guid(out))
    }
}

/// Partition type GUIDs Ferrite uses (UEFI and the Discoverable
/// Partitions Specification).
pub mod types {
    use super::Guid;

    const fn g(bytes: [u8; 16]) -> Guid {
        Guid(bytes)
    }

    /// EFI System Partition.
    pub const ESP: Guid =
        g([0xc1, 0x2a, 0x73, 0x28, 0xf8, 0x1f, 0x11, 0xd2, 0xba, 0x4b, 0x00, 0xa0, 0xc9, 0x3e, 0xc9, 0x3b]);
    /// /usr for x86-64.
    pub const USR_X86_64: Guid =
        g([0x84, 0x84, 0x68, 0x0c, 0x95, 0x21, 0x48, 0xc6, 0x9c, 0x11, 0xb0, 0x72, 0x06, 0x56, 0xf6, 0x9e]);
    /// dm-verity hashes of /usr for x86-64.
    pub const USR_VERITY_X86_64: Guid =
        g([0x77, 0xff, 0x5f, 0x63, 0xe7, 0xb6, 0x46, 0x33, 0xac, 0xf4, 0x15, 0x65, 0xb8, 0x64, 0xc0, 0xe6]);
    /// Generic Linux data.
    pub const LINUX_DATA: Guid =
        g([0x0f, 0xc6, 0x3d, 0xaf, 0x84, 0x83, 0x47, 0x72, 0x8e, 0x79, 0x3d, 0x69, 0xd8, 0x47, 0x7d, 0xe4]);
    /// The root filesystem for x86-64.
    pub const ROOT_X86_64: Guid =
        g([0x4f, 0x68, 0xbc, 0xe3, 0xe8, 0xcd, 0x4d, 0xb1, 0x96, 0xe7, 0xfb, 0xca, 0xf9, 0x84, 0xb7, 0x09]);
}

/// One partition: where it is and what it is called.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub type_guid: Guid,
    pub unique_guid: Guid,
    /// First block.
    pub first_lba: u64,
    /// Last block, inclusive.
    pub last_lba: u64,
    pub attributes: u64,
    /// At most 36 UTF-16 code units.
    pub label: String,
}

/// A whole table for a disk of `disk_blocks` blocks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Table {
    pub disk_guid: Guid,
    pub disk_blocks: u64,
    pub entries: Vec<Entry>,
}

/// Why a table cannot be written.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TableError {
    #[error("partition {label:?} ({first}..={last}) lies outside the usable blocks {usable_first}..={usable_last}")]
    OutOfRange { label: String, first: u64, last: u64, usable_first: u64, usable_last: u64 },
    #[error("partitions {a:?} and {b:?} overlap")]
    Overlap { a: String, b: String },
    #[error("partition label {0:?} is longer than 36 UTF-16 units")]
    LabelTooLong(String),
    #[error("{0} partitions do not fit in a 128-entry table")]
    TooMany(usize),
    #[error("a disk of {0} blocks is too small for a GPT")]
    DiskTooSmall(u64),
}

/// The encoded table: bytes for the start of the disk (from offset 0) and
/// for its end (ending at the last byte).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Encoded {
    pub head: Vec<u8>,
    pub tail: Vec<u8>,
}

impl Table {
    /// First block a partition may use.
    pub fn first_usable(&self) -> u64 {
        2 + ENTRY_BLOCKS
    }

    /// Last block a partition may use.
    pub fn last_usable(&self) -> u64 {
        self.disk_blocks - 2 - ENTRY_BLOCKS
    }

    /// Checks the table and encodes it.
    pub fn encode(&self) -> Result<Encoded, TableError> {
        if self.disk_blocks < 2 * (2 + ENTRY_BLOCKS) + 1 {
            return Err(TableError::DiskTooSmall(self.disk_blocks));
        }
        if self.entries.len() as u64 > ENTRIES {
            return Err(TableError::TooMany(self.entries.len()));
        }
        let (lo, hi) = (self.first_usable(), self.last_usable());
        for e in &self.entries {
            if e.first_lba < lo || e.last_lba > hi || e.first_lba > e.last_lba {
                return Err(TableError::OutOfRange {
                    label: e.label.clone(),
                    first: e.first_lba,
                    last: e.last_lba,
                    usable_first: lo,
                    usable_last: hi,
                });
            }
        }
        for (i, a) in self.entries.iter().enumerate() {
            for b in &self.entries[i + 1..] {
                if a.first_lba <= b.last_lba && b.first_lba <= a.last_lba {
                    return Err(TableError::Overlap { a: a.label.clone(), b: b.label.clone() });
                }
            }
        }

        let mut array = vec![0u8; (ENTRIES * ENTRY_SIZE) as usize];
        for (slot, e) in array.chunks_mut(ENTRY_SIZE as usize).zip(&self.entries) {
            slot[0..16].copy_from_slice(&e.type_guid.to_gpt_bytes());
            slot[16..32].copy_from_slice(&e.unique_guid.to_gpt_bytes());
            slot[32..40].copy_from_slice(&e.first_lba.to_le_bytes());
            slot[40..48].copy_from_slice(&e.last_lba.to_le_bytes());
            slot[48..56].copy_from_slice(&e.attributes.to_le_bytes());
            let units: Vec<u16> = e.label.encode_utf16().collect();
            if units.len() > 36 {
                return Err(TableError::LabelTooLong(e.label.clone()));
            }
            for (i, unit) in units.iter().enumerate() {
                slot[56 + 2 * i..58 + 2 * i].copy_from_slice(&unit.to_le_bytes());
            }
        }
        let array_crc = crc32fast::hash(&array);
        let last = self.disk_blocks - 1;
        let primary = self.header(1, last, 2, array_crc);
        let backup = self.header(last, 1, last - ENTRY_BLOCKS, array_crc);

        let mut head = vec![0u8; ((2 + ENTRY_BLOCKS) * SECTOR) as usize];
        head[..512].copy_from_slice(&self.protective_mbr());
        head[512..512 + primary.len()].copy_from_slice(&primary);
        head[1024..].copy_from_slice(&array);

        let mut tail = vec![0u8; ((1 + ENTRY_BLOCKS) * SECTOR) as usize];
        tail[..array.len()].copy_from_slice(&array);
        tail[array.len()..array.len() + backup.len()].copy_from_slice(&backup);
        Ok(Encoded { head, tail })
    }

    fn protective_mbr(&self) -> [u8; 512] {
        let mut mbr = [0u8; 512];
        let entry = &mut mbr[446..462];
        entry[1..4].copy_from_slice(&[0x00, 0x02, 0x00]); // CHS of LBA 1
        entry[4] = 0xee;
        entry[5..8].copy_from_slice(&[0xff, 0xff, 0xff]);
        entry[8..12].copy_from_slice(&1u32.to_le_bytes());
        let size = u32::try_from(self.disk_blocks - 1).unwrap_or(u32::MAX);
        entry[12..16].copy_from_slice(&size.to_le_bytes());
        mbr[510] = 0x55;
        mbr[511] = 0xaa;
        mbr
    }

    fn header(&self, my_lba: u64, alternate_lba: u64, entries_lba: u64, array_crc: u32) -> Vec<u8> {
        let mut h = vec![0u8; 92];
        h[0..8].copy_from_slice(b"EFI PART");
        h[8..12].copy_from_slice(&0x0001_0000u32.to_le_bytes());
        h[12..16].copy_from_slice(&92u32.to_le_bytes());
        // 16..20: header CRC, filled below; 20..24 reserved.
        h[24..32].copy_from_slice(&my_lba.to_le_bytes());
        h[32..40].copy_from_slice(&alternate_lba.to_le_bytes());
        h[40..48].copy_from_slice(&self.first_usable().to_le_bytes());
        h[48..56].copy_from_slice(&self.last_usable().to_le_bytes());
        h[56..72].copy_from_slice(&self.disk_guid.to_gpt_bytes());
        h[72..80].copy_from_slice(&entries_lba.to_le_bytes());
        h[80..84].copy_from_slice(&(ENTRIES as u32).to_le_bytes());
        h[84..88].copy_from_slice(&(ENTRY_SIZE as u32).to_le_bytes());
        h[88..92].copy_from_slice(&array_crc.to_le_bytes());
        let crc = crc32fast::hash(&h);
        h[16..20].copy_from_slice(&crc.to_le_bytes());
        h
    }
}

/// Reads the primary table back from the start of a disk (tests and
/// `ferrite-image inspect`-style checks): the header's CRCs must match.
pub fn decode_primary(head: &[u8], disk_blocks: u64) -> Option<Table> {
    let h = head.get(512..604)?;
    if &h[0..8] != b"EFI PART" {
        return None;
    }
    let mut zeroed = h.to_vec();
    zeroed[16..20].fill(0);
    if crc32fast::hash(&zeroed) != u32::from_le_bytes(h[16..20].try_into().ok()?) {
        return None;
    }
    let array = head.get(1024..1024 + (ENTRIES * ENTRY_SIZE) as usize)?;
    if crc32fast::hash(array) != u32::from_le_bytes(h[88..92].try_into().ok()?) {
        return None;
    }
    let disk_guid = Guid::from_gpt_bytes(h[56..72].try_into().ok()?);
    let mut entries = Vec::new();
    for slot in array.chunks(ENTRY_SIZE as usize) {
        let type_guid = Guid::from_gpt_bytes(slot[0..16].try_into().ok()?);
        if type_guid.0 == [0; 16] {
            continue;
        }
        let units: Vec<u16> =
            slot[56..128].chunks(2).map(|c| u16::from_le_bytes([c[0], c[1]])).take_while(|&u| u != 0).collect();
        entries.push(Entry {
            type_guid,
            unique_guid: Guid::from_gpt_bytes(slot[16..32].try_into().ok()?),
            first_lba: u64::from_le_bytes(slot[32..40].try_into().ok()?),
            last_lba: u64::from_le_bytes(slot[40..48].try_into().ok()?),
            attributes: u64::from_le_bytes(slot[48..56].try_into().ok()?),
            label: String::from_utf16(&units).ok()?,
        });
    }
    Some(Table { disk_guid, disk_blocks, entries })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table() -> Table {
        Table {
            disk_guid: "11111111-2222-3333-4444-555555555555".parse().unwrap(),
            disk_blocks: 8192,
            entries: vec![
                Entry {
                    type_guid: types::ESP,
                    unique_guid: "aaaaaaaa-bbbb-cccc-dddd-eeeeeeeeeeee".parse().unwrap(),
                    first_lba: 2048,
                    last_lba: 4095,
                    attributes: 0,
                    label: "EFI-SYSTEM".into(),
                },
                Entry {
                    type_guid: types::ROOT_X86_64,
                    unique_guid: "01234567-89ab-cdef-0123-456789abcdef".parse().unwrap(),
                    first_lba: 4096,
                    last_lba: 8192 - 34,
                    attributes: 0,
                    label: "ROOT".into(),
                },
            ],
        }
    }

    #[test]
    fn guid_text_round_trips_and_gpt_form_swaps_the_first_three_fields() {
        let esp: Guid = "C12A7328-F81F-11D2-BA4B-00A0C93EC93B".parse().unwrap();
        assert_eq!(esp, types::ESP);
        assert_eq!(esp.to_string(), "c12a7328-f81f-11d2-ba4b-00a0c93ec93b");
        assert_eq!(esp.to_gpt_bytes()[..8], [0x28, 0x73, 0x2a, 0xc1, 0x1f, 0xf8, 0xd2, 0x11]);
        assert_eq!(Guid::from_gpt_bytes(esp.to_gpt_bytes()), esp);
        assert!("c12a7328f81f11d2ba4b00a0c93ec93b".parse::<Guid>().is_err());
        assert!("g12a7328-f81f-11d2-ba4b-00a0c93ec93b".parse::<Guid>().is_err());
    }

    #[test]
    fn type_guids_are_the_specifications() {
        // UEFI and the Discoverable Partitions Specification, as text.
        for (guid, text) in [
            (types::ESP, "c12a7328-f81f-11d2-ba4b-00a0c93ec93b"),
            (types::USR_X86_64, "8484680c-9521-48c6-9c11-b0720656f69e"),
            (types::USR_VERITY_X86_64, "77ff5f63-e7b6-4633-acf4-1565b864c0e6"),
            (types::LINUX_DATA, "0fc63daf-8483-4772-8e79-3d69d8477de4"),
            (types::ROOT_X86_64, "4f68bce3-e8cd-4db1-96e7-fbcaf984b709"),
        ] {
            assert_eq!(guid.to_string(), text);
        }
    }

    #[test]
    fn encoded_table_reads_back_with_valid_checksums() {
        let t = table();
        let enc = t.encode().unwrap();
        assert_eq!(enc.head.len(), 34 * 512);
        assert_eq!(enc.tail.len(), 33 * 512);
        assert_eq!(&enc.head[510..512], &[0x55, 0xaa]);
        assert_eq!(enc.head[446 + 4], 0xee);
        assert_eq!(decode_primary(&enc.head, t.disk_blocks), Some(t));
    }

    #[test]
    fn backup_header_points_back_at_the_primary() {
        let t = table();
        let enc = t.encode().unwrap();
        let backup = &enc.tail[32 * 512..32 * 512 + 92];
        assert_eq!(&backup[0..8], b"EFI PART");
        assert_eq!(u64::from_le_bytes(backup[24..32].try_into().unwrap()), 8191);
        assert_eq!(u64::from_le_bytes(backup[32..40].try_into().unwrap()), 1);
        assert_eq!(u64::from_le_bytes(backup[72..80].try_into().unwrap()), 8191 - 32);
        assert_eq!(&enc.tail[..32 * 512], &enc.head[1024..], "both arrays are the same");
    }

    #[test]
    fn a_corrupted_header_is_refused() {
        let mut enc = table().encode().unwrap();
        enc.head[512 + 40] ^= 1;
        assert_eq!(decode_primary(&enc.head, 8192), None);
    }

    #[test]
    fn overlapping_or_outside_partitions_are_refused() {
        let mut t = table();
        t.entries[1].first_lba = 4000;
        assert!(matches!(t.encode(), Err(TableError::Overlap { .. })));
        let mut t = table();
        t.entries[1].last_lba = 8191;
        assert!(matches!(t.encode(), Err(TableError::OutOfRange { .. })));
        let mut t = table();
        t.entries[0].label = "x".repeat(37);
        assert!(matches!(t.encode(), Err(TableError::LabelTooLong(_))));
    }
}
