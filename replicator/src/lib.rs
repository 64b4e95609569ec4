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
    #[error("{path}: no space left on the target file system; free space and run the sync again (nothing already \
             committed was lost)")]
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
