//! # replicator — the data plane of Homeward
//!
//! * [`image`]: disk images in real formats — sparse raw, VMDK `monolithicFlat` (on-premises side) and fixed VHD
//!   (cloud side) — created, opened and validated.
//! * [`sync`]: a source half and a target half that talk only through a framed, versioned byte stream ([`wire`]),
//!   with `full`, `delta` (BLAKE3 block hashes), `incremental` (changed-block tracking, [`cbt`]) and `auto` modes;
//!   resumable after a crash from a durable cursor; throttled; reporting progress; ending with a whole-disk digest
//!   compared on both sides.
//! * [`journal`]: recovery points on the target (crash- or app-consistent), kept with a retention policy and
//!   restorable to the exact bytes, through an undo journal.
//! * [`workload`]: a simulated guest writing to a source disk, with a quiesce hook.
//! * [`verify`]: a scrub of a replica at rest against the block hashes its last cycle recorded.
//! * [`bench`]: the side-by-side benchmark against rsync, cp and the read floor.
//!
//! Architecture Invariant: no database and no web here. The orchestrator drives this crate; this crate never calls
//! back into it.

pub mod bench;
pub mod cbt;
pub mod fileio;
pub mod hashes;
pub mod image;
pub mod journal;
pub mod sync;
pub mod verify;
pub mod wire;
pub mod workload;

use std::path::{Path, PathBuf};

pub use image::{DiskImage, Format};
pub use journal::{Consistency, PointInfo, Retention};
pub use sync::{Mode, Progress, SyncOptions, SyncReport};

/// Everything that can go wrong in the data plane, each naming the file or the peer concerned.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error("{path}: {problem}")]
    Image { path: PathBuf, problem: String },
    #[error("replication stream: {0}")]
    Protocol(String),
    #[error("the peer reported: {0}")]
    Peer(String),
    #[error(
        "verification failed: the source's whole-disk digest {source_digest} differs from the target's \
         {target_digest}; the target is not a copy. Run the sync again (it falls back to delta)"
    )]
    DigestMismatch { source_digest: String, target_digest: String },
    #[error("{0}")]
    Invalid(String),
    #[error(
        "{path}: no space left on the target file system; free space and run the sync again (nothing already \
             committed was lost)"
    )]
    NoSpace { path: PathBuf },
    #[error("the sync was cancelled")]
    Cancelled,
}

impl Error {
    pub fn io(path: &Path, source: std::io::Error) -> Error {
        if source.raw_os_error() == Some(libc::ENOSPC) {
            return Error::NoSpace { path: path.to_path_buf() };
        }
        Error::Io { path: path.to_path_buf(), source }
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Parses a size such as `1G`, `64M`, `512K`, `4096` or `1.5GiB` (binary units).
pub fn parse_size(s: &str) -> std::result::Result<u64, String> {
    let t = s.trim();
    let split = t.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let n: f64 = num.parse().map_err(|_| format!("{s:?} is not a size; use e.g. 1G, 64M, 512K or a byte count"))?;
    let mult: u64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kb" | "kib" => 1 << 10,
        "m" | "mb" | "mib" => 1 << 20,
        "g" | "gb" | "gib" => 1 << 30,
        "t" | "tb" | "tib" => 1 << 40,
        u => return Err(format!("unknown size unit {u:?} in {s:?}; use K, M, G or T")),
    };
    let v = n * mult as f64;
    if !(v.is_finite() && v >= 0.0 && v < u64::MAX as f64) || v.fract() != 0.0 {
        return Err(format!("{s:?} is not a whole number of bytes"));
    }
    Ok(v as u64)
}

/// `1536` → `1.5 KiB`.
pub fn human_bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = n as f64;
    let mut u = 0;
    while v >= 1024.0 && u < UNITS.len() - 1 {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {}", UNITS[u])
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn sizes_parse_in_binary_units_and_refuse_nonsense() {
        assert_eq!(super::parse_size("1G"), Ok(1 << 30));
        assert_eq!(super::parse_size("64M"), Ok(64 << 20));
        assert_eq!(super::parse_size("1.5KiB"), Ok(1536));
        assert_eq!(super::parse_size("4096"), Ok(4096));
        assert!(super::parse_size("12Q").unwrap_err().contains("unit"));
        assert!(super::parse_size("abc").is_err());
        assert_eq!(super::human_bytes(1536), "1.5 KiB");
    }
}
