//! Identities derived from content, so two builds of the same inputs give
//! the same bytes and a slot's hash alone names its partitions.

use sha2::{Digest, Sha256};

use crate::gpt::Guid;

/// SHA-256 of some bytes.
pub fn sha256(data: &[u8]) -> [u8; 32] {
    Sha256::digest(data).into()
}

/// Lower-case hex.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Parses lower- or upper-case hex.
pub fn unhex(s: &str) -> Option<Vec<u8>> {
    if !s.len().is_multiple_of(2) {
        return None;
    }
    (0..s.len()).step_by(2).map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok()).collect()
}

/// The partition UUIDs of a /usr slot and its verity partition, as
/// systemd's veritysetup generator looks them up from `usrhash=`: the
/// first 128 bits of the root hash name the data partition, the last 128
/// bits the hash partition.
pub fn verity_partition_uuids(root_hash: &[u8; 32]) -> (Guid, Guid) {
    let mut data = [0u8; 16];
    let mut hash = [0u8; 16];
    data.copy_from_slice(&root_hash[..16]);
    hash.copy_from_slice(&root_hash[16..]);
    (Guid::from_bytes(data), Guid::from_bytes(hash))
}

/// A version-4-shaped UUID derived from a seed and a purpose, the way
/// systemd-repart derives UUIDs from a seed: stable for the same inputs,
/// different for every purpose.
pub fn uuid(seed: &[u8], purpose: &str) -> Guid {
    let mut h = Sha256::new();
    h.update(seed);
    h.update([0]);
    h.update(purpose.as_bytes());
    let d = h.finalize();
    let mut b = [0u8; 16];
    b.copy_from_slice(&d[..16]);
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    Guid::from_bytes(b)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn verity_uuids_are_the_halves_of_the_root_hash() {
        let root: [u8; 32] = core::array::from_fn(|i| i as u8);
        let (data, hash) = verity_partition_uuids(&root);
        assert_eq!(data.to_string(), "00010203-0405-0607-0809-0a0b0c0d0e0f");
        assert_eq!(hash.to_string(), "10111213-1415-1617-1819-1a1b1c1d1e1f");
    }

    #[test]
    fn derived_uuids_are_stable_distinct_and_v4_shaped() {
        let a = uuid(b"seed", "ROOT");
        assert_eq!(a, uuid(b"seed", "ROOT"));
        assert_ne!(a, uuid(b"seed", "OEM"));
        assert_ne!(a, uuid(b"other", "ROOT"));
        let text = a.to_string();
        assert_eq!(&text[14..15], "4");
        assert!(matches!(&text[19..20], "8" | "9" | "a" | "b"));
    }

    #[test]
    fn hex_round_trips() {
        assert_eq!(hex(&[0, 0xab, 0xff]), "00abff");
        assert_eq!(unhex("00ABff"), Some(vec![0, 0xab, 0xff]));
        assert_eq!(unhex("0"), None);
        assert_eq!(unhex("zz"), None);
    }
}
