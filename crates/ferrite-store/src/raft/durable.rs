//! The on-disk primitives the raft storage shares: file headers,
//! checksummed record frames, and atomic file replacement.
//!
//! Every file starts with a 12-byte header: an 8-byte magic naming what the
//! file is, then the format version (u32, little endian). Records follow as
//! frames:
//!
//! ```text
//! | len: u32 LE | payload crc32: u32 LE | header crc32: u32 LE | payload: len bytes |
//! ```
//!
//! The header crc covers the 8 bytes before it, so a damaged length is
//! caught before it is trusted. Payloads are postcard.

use std::fs::{self, File};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

/// Length of a file header: magic, then version.
pub(crate) const FILE_HEADER_LEN: usize = 12;
/// Length of a frame header: payload length, payload crc, header crc.
pub(crate) const FRAME_HEADER_LEN: usize = 12;
/// No record is larger; a longer length field is damage.
const MAX_RECORD_LEN: u32 = 1 << 30;

/// What a file is, as its header says.
#[derive(Debug, Clone, Copy)]
pub(crate) struct FileKind {
    pub(crate) magic: [u8; 8],
    pub(crate) version: u32,
    /// For error messages: "log", "vote", "snapshot".
    pub(crate) name: &'static str,
}

impl FileKind {
    pub(crate) fn header(&self) -> [u8; FILE_HEADER_LEN] {
        let mut header = [0u8; FILE_HEADER_LEN];
        header[..8].copy_from_slice(&self.magic);
        header[8..].copy_from_slice(&self.version.to_le_bytes());
        header
    }

    /// Checks that `bytes` (the whole file) starts with this kind's header.
    pub(crate) fn check_header(&self, path: &Path, bytes: &[u8]) -> Result<(), OpenError> {
        if bytes.len() < FILE_HEADER_LEN || bytes[..8] != self.magic {
            return Err(OpenError::Foreign { path: path.to_owned(), kind: self.name });
        }
        let mut version = [0u8; 4];
        version.copy_from_slice(&bytes[8..FILE_HEADER_LEN]);
        let found = u32::from_le_bytes(version);
        if found != self.version {
            return Err(OpenError::Version { path: path.to_owned(), found, expected: self.version });
        }
        Ok(())
    }
}

/// Why a data directory cannot be opened.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    #[error("cannot create data directory {path}")]
    CreateDir { path: PathBuf, source: io::Error },
    #[error("cannot read or prepare {path}")]
    Io { path: PathBuf, source: io::Error },
    #[error("{path} is locked by another process")]
    Locked { path: PathBuf },
    #[error("{path} is not a ferrite-store {kind} file (bad magic)")]
    Foreign { path: PathBuf, kind: &'static str },
    #[error("{path} has format version {found}; this build reads version {expected}")]
    Version { path: PathBuf, found: u32, expected: u32 },
    #[error("{path} is corrupt at offset {offset}: {reason}")]
    Corrupt { path: PathBuf, offset: u64, reason: String },
    #[error("{path}: cannot decode the record at offset {offset}")]
    Decode { path: PathBuf, offset: u64, source: postcard::Error },
    #[error("{path}: the v2 store in the snapshot cannot be restored")]
    Restore { path: PathBuf, source: crate::v2store::SnapshotError },
}

/// A file operation that failed, with the file it failed on.
#[derive(Debug, thiserror::Error)]
#[error("cannot {action} {path}")]
pub(crate) struct FileError {
    pub(crate) action: &'static str,
    pub(crate) path: PathBuf,
    pub(crate) source: io::Error,
}

impl FileError {
    pub(crate) fn new(action: &'static str, path: &Path, source: io::Error) -> FileError {
        FileError { action, path: path.to_owned(), source }
    }

    /// As an `io::Error` of the same kind (ENOSPC stays ENOSPC) whose
    /// message names the path and the cause: openraft keeps only the
    /// message of the error a log write reports.
    pub(crate) fn into_io(self) -> io::Error {
        io::Error::new(self.source.kind(), format!("{self}: {}", self.source))
    }
}

/// Appends one frame holding `payload` to `out`. A payload over the
/// record size limit is refused: the reader would take it for damage.
pub(crate) fn encode_frame(payload: &[u8], out: &mut Vec<u8>) -> Result<(), RecordTooLarge> {
    let len = match u32::try_from(payload.len()) {
        Ok(len) if len > 0 && len <= MAX_RECORD_LEN => len,
        _ => return Err(RecordTooLarge { len: payload.len() }),
    };
    let mut header = [0u8; FRAME_HEADER_LEN];
    header[..4].copy_from_slice(&len.to_le_bytes());
    header[4..8].copy_from_slice(&crc32fast::hash(payload).to_le_bytes());
    let header_crc = crc32fast::hash(&header[..8]);
    header[8..].copy_from_slice(&header_crc.to_le_bytes());
    out.extend_from_slice(&header);
    out.extend_from_slice(payload);
    Ok(())
}

/// A record that cannot be framed.
#[derive(Debug, thiserror::Error)]
#[error("a record of {len} bytes cannot be stored (records hold 1 byte to 1 GiB)")]
pub(crate) struct RecordTooLarge {
    len: usize,
}

/// What lies at an offset of a file of frames.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Frame<'a> {
    /// A whole, checksummed record, and the offset just past it.
    Record { payload: &'a [u8], end: usize },
    /// The end of the file, exactly at a frame boundary.
    End,
    /// The last write did not finish: a frame cut short by the end of the
    /// file, an unwritten (zero) frame header, or a last record whose bytes
    /// do not match their checksum.
    Torn { reason: &'static str },
    /// Damage that a cut-short write cannot explain.
    Corrupt { reason: &'static str },
}

/// Reads the frame at `offset` of `file` (the whole file's bytes).
pub(crate) fn read_frame(file: &[u8], offset: usize) -> Frame<'_> {
    let rest = &file[offset.min(file.len())..];
    if rest.is_empty() {
        return Frame::End;
    }
    if rest.len() < FRAME_HEADER_LEN {
        return Frame::Torn { reason: "frame header cut short" };
    }
    let header = &rest[..FRAME_HEADER_LEN];
    if header.iter().all(|&b| b == 0) {
        return Frame::Torn { reason: "frame header never written" };
    }
    let word = |i: usize| u32::from_le_bytes([header[i], header[i + 1], header[i + 2], header[i + 3]]);
    let (len, payload_crc, header_crc) = (word(0), word(4), word(8));
    if crc32fast::hash(&header[..8]) != header_crc {
        return Frame::Corrupt { reason: "frame header checksum mismatch" };
    }
    if len == 0 || len > MAX_RECORD_LEN {
        return Frame::Corrupt { reason: "impossible record length" };
    }
    let len = len as usize;
    let body = &rest[FRAME_HEADER_LEN..];
    if body.len() < len {
        return Frame::Torn { reason: "record cut short by the end of the file" };
    }
    let payload = &body[..len];
    if crc32fast::hash(payload) != payload_crc {
        return if body.len() == len {
            Frame::Torn { reason: "last record checksum mismatch" }
        } else {
            Frame::Corrupt { reason: "record checksum mismatch" }
        };
    }
    Frame::Record { payload, end: offset + FRAME_HEADER_LEN + len }
}

/// Replaces `dir/name` with a file of `kind` holding one record, atomically:
/// write `name.tmp`, fsync it, rename it over `name`, fsync the directory.
/// On failure the old file is untouched and the temporary file removed.
pub(crate) fn write_atomic(dir: &Path, name: &str, kind: &FileKind, payload: &[u8]) -> Result<(), FileError> {
    let mut bytes = Vec::with_capacity(FILE_HEADER_LEN + FRAME_HEADER_LEN + payload.len());
    bytes.extend_from_slice(&kind.header());
    encode_frame(payload, &mut bytes)
        .map_err(|e| FileError::new("write", &dir.join(name), io::Error::new(io::ErrorKind::InvalidInput, e)))?;
    replace_file(dir, name, &bytes)
}

/// Replaces `dir/name` with `bytes` atomically (see [`write_atomic`]).
pub(crate) fn replace_file(dir: &Path, name: &str, bytes: &[u8]) -> Result<(), FileError> {
    let tmp = dir.join(format!("{name}.tmp"));
    let written = File::create(&tmp)
        .and_then(|mut file| {
            file.write_all(bytes)?;
            file.sync_all()
        })
        .map_err(|e| FileError::new("write", &tmp, e));
    if let Err(e) = written {
        remove_leftover(&tmp);
        return Err(e);
    }
    let path = dir.join(name);
    if let Err(e) = fs::rename(&tmp, &path) {
        remove_leftover(&tmp);
        return Err(FileError::new("rename into place", &path, e));
    }
    sync_dir(dir)
}

/// Makes renames and creations in `dir` durable.
pub(crate) fn sync_dir(dir: &Path) -> Result<(), FileError> {
    File::open(dir).and_then(|d| d.sync_all()).map_err(|e| FileError::new("fsync directory", dir, e))
}

/// Removes a temporary file left by an interrupted or failed write.
pub(crate) fn remove_leftover(path: &Path) {
    match fs::remove_file(path) {
        Ok(()) => tracing::debug!(path = %path.display(), "removed leftover temporary file"),
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => {
            tracing::warn!(path = %path.display(), error = %e, "cannot remove leftover temporary file")
        }
    }
}

/// Reads a file written by [`write_atomic`]: `None` if it does not exist.
/// Such a file is never torn (it is renamed into place only once synced),
/// so any damage is an error.
pub(crate) fn read_single(path: &Path, kind: &FileKind) -> Result<Option<Vec<u8>>, OpenError> {
    let bytes = match fs::read(path) {
        Ok(bytes) => bytes,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(source) => return Err(OpenError::Io { path: path.to_owned(), source }),
    };
    kind.check_header(path, &bytes)?;
    let corrupt = |reason: &str| OpenError::Corrupt {
        path: path.to_owned(),
        offset: FILE_HEADER_LEN as u64,
        reason: reason.to_owned(),
    };
    match read_frame(&bytes, FILE_HEADER_LEN) {
        Frame::Record { payload, end } if end == bytes.len() => Ok(Some(payload.to_vec())),
        Frame::Record { .. } => Err(corrupt("bytes after the record")),
        Frame::End => Err(corrupt("no record")),
        Frame::Torn { reason } | Frame::Corrupt { reason } => Err(corrupt(reason)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn framed(payloads: &[&[u8]]) -> Vec<u8> {
        let mut out = Vec::new();
        for p in payloads {
            encode_frame(p, &mut out).unwrap();
        }
        out
    }

    #[test]
    fn frames_read_back() {
        let file = framed(&[b"one", b"two"]);
        let Frame::Record { payload, end } = read_frame(&file, 0) else {
            panic!("first frame unreadable");
        };
        assert_eq!(payload, b"one");
        let Frame::Record { payload, end } = read_frame(&file, end) else {
            panic!("second frame unreadable");
        };
        assert_eq!(payload, b"two");
        assert_eq!(read_frame(&file, end), Frame::End);
    }

    #[test]
    fn a_cut_last_frame_is_torn_and_a_damaged_middle_frame_is_corrupt() {
        let file = framed(&[b"one", b"two"]);
        for cut in 1..file.len() - 15 {
            let short = &file[..file.len() - cut];
            let second = 15;
            assert!(matches!(read_frame(short, second), Frame::Torn { .. } | Frame::End), "cut {cut}");
        }
        let mut damaged = file.clone();
        damaged[13] ^= 1; // first payload
        assert!(matches!(read_frame(&damaged, 0), Frame::Corrupt { .. }));
        let mut last = file.clone();
        let n = last.len();
        last[n - 1] ^= 1;
        assert!(matches!(read_frame(&last, 15), Frame::Torn { .. }));
        let mut length = file;
        length[0] = 200;
        assert!(matches!(read_frame(&length, 0), Frame::Corrupt { .. }));
    }

    #[test]
    fn zeroed_tail_is_torn() {
        let mut file = framed(&[b"one"]);
        file.extend_from_slice(&[0u8; 40]);
        assert!(matches!(read_frame(&file, 15), Frame::Torn { .. }));
    }
}
