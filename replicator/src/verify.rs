//! Verification of a replica at rest (a scrub): every block of the target disk is read again and hashed, and the
//! hashes are compared with the table its last committed cycle recorded ([`hashes::HashTable`]). Incremental cycles
//! trust that table instead of reading the disk, so a block that rotted or was written behind the replicator's back
//! would otherwise stay wrong until a failback boots from it.
//!
//! When a block differs, the table is removed (durably): the next cycle then cannot be incremental and compares the
//! whole replica with the source (delta), rewriting exactly the blocks that differ.

use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};

use serde::{Deserialize, Serialize};

use crate::hashes::{self, hash_block, Geometry, HashTable};
use crate::journal::Journal;
use crate::{fileio, DiskImage, Error, Result};

/// Block numbers of the first differing blocks listed in a report (the count covers them all).
const LISTED: usize = 16;

/// What the verification of one replica disk found.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct VerifyReport {
    pub block_size: u32,
    pub blocks: u64,
    /// Bytes read from the disk (holes are not read: they hash as zeros).
    pub bytes_read: u64,
    /// Blocks whose bytes no longer match their recorded hash.
    pub mismatched_blocks: u64,
    /// The first of them, by block number.
    pub first_mismatches: Vec<u64>,
    /// Whether the recorded table is the one the newest recovery point's digest was computed from (a table that
    /// disagrees with its own point was damaged itself).
    pub table_matches_point: bool,
    /// The table was removed so that the next cycle compares the whole disk with the source.
    pub hashes_dropped: bool,
}

impl VerifyReport {
    pub fn intact(&self) -> bool {
        self.mismatched_blocks == 0 && self.table_matches_point
    }
}

/// Where a replica disk keeps its recorded block hashes.
fn table_path(image: &DiskImage) -> std::path::PathBuf {
    image.state_dir().join("target.hashes")
}

/// The recorded table, whatever block size it was written with (its header says which).
fn load_table(path: &Path, size: u64) -> Option<HashTable> {
    let bytes = std::fs::read(path).ok()?;
    let block_size = u32::from_le_bytes(bytes.get(16..20)?.try_into().ok()?);
    HashTable::load(path, Geometry::new(size, block_size).ok()?)
}

/// Verifies the replica disk at `dst`. `Ok(None)`: the disk has no recorded hashes to compare with (its last cycle
/// did not finish, or none ever ran), and the next cycle compares it with the source in full anyway. Stops with
/// [`Error::Cancelled`] soon after `cancel` is set.
pub fn verify_replica(dst: &Path, cancel: Option<&AtomicBool>) -> Result<Option<VerifyReport>> {
    let image = DiskImage::open(dst)?;
    let table_path = table_path(&image);
    let Some(table) = load_table(&table_path, image.size) else { return Ok(None) };
    let geom = table.geom;
    let newest = Journal::open(&image.state_dir().join("points"))?.points().last().cloned();
    let table_matches_point = newest.is_none_or(|p| p.digest == hashes::hex(&hashes::disk_digest(geom, &table.hashes)));
    let file = image.open_data_read()?;
    let (mut mismatched_blocks, mut first_mismatches) = (0u64, Vec::new());
    let bytes_read = hashes::scan(&file, &image.data_path, geom, 0, geom.blocks(), |b, bytes| {
        if b % 1024 == 0 && cancel.is_some_and(|c| c.load(Ordering::Relaxed)) {
            return Err(Error::Cancelled);
        }
        let h = bytes.map_or_else(|| geom.zero_hash(b), hash_block);
        if h != table.hashes[b as usize] {
            mismatched_blocks += 1;
            if first_mismatches.len() < LISTED {
                first_mismatches.push(b);
            }
        }
        Ok(())
    })?;
    let mut report = VerifyReport {
        block_size: geom.block_size,
        blocks: geom.blocks(),
        bytes_read,
        mismatched_blocks,
        first_mismatches,
        table_matches_point,
        hashes_dropped: false,
    };
    if !report.intact() {
        // Durably gone: after a power cut the next cycle must still find no table to trust.
        fileio::remove_durably(&table_path).map_err(|e| Error::io(&table_path, e))?;
        report.hashes_dropped = true;
    }
    Ok(Some(report))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sync::{sync, SyncOptions};
    use crate::Mode;
    use std::os::unix::fs::FileExt;

    fn disk(dir: &Path, name: &str, fill: u8) -> std::path::PathBuf {
        let p = dir.join(name);
        let img = DiskImage::create(&p, crate::Format::Raw, 4 << 20).unwrap();
        let f = img.open_data_rw().unwrap();
        f.write_all_at(&vec![fill; 1 << 20], 0).unwrap();
        p
    }

    #[test]
    fn a_replica_is_intact_after_a_cycle_and_a_rotten_block_is_found_then_repaired_by_a_delta() {
        let dir = tempfile::tempdir().unwrap();
        let (src, dst) = (disk(dir.path(), "src.img", 7), dir.path().join("dst.img"));
        assert_eq!(verify_replica(&src, None).unwrap(), None, "a source has no recorded replica hashes");
        let opts = SyncOptions { block_size: 64 << 10, ..Default::default() };
        sync(&src, &dst, &opts).unwrap();
        let ok = verify_replica(&dst, None).unwrap().unwrap();
        assert!(ok.intact(), "{ok:?}");
        assert_eq!((ok.blocks, ok.bytes_read, ok.hashes_dropped), (64, 1 << 20, false));

        // Two blocks rot behind the replicator's back (one in the written part, one in a hole).
        let img = DiskImage::open(&dst).unwrap();
        let f = img.open_data_rw().unwrap();
        f.write_all_at(b"rot", (3 << 16) + 10).unwrap();
        f.write_all_at(b"rot", 40 << 16).unwrap();
        drop(f);
        let bad = verify_replica(&dst, None).unwrap().unwrap();
        assert_eq!((bad.mismatched_blocks, bad.first_mismatches.clone(), bad.hashes_dropped), (2, vec![3, 40], true));
        assert!(bad.table_matches_point);
        // With the table gone the next cycle compares the whole disk and rewrites just those two blocks.
        assert_eq!(verify_replica(&dst, None).unwrap(), None);
        let again = sync(&src, &dst, &opts).unwrap();
        assert_eq!((again.mode, again.blocks_changed), (Mode::Delta, 2), "{again:?}");
        assert!(verify_replica(&dst, None).unwrap().unwrap().intact());
    }

    #[test]
    fn a_cancelled_verification_stops() {
        let dir = tempfile::tempdir().unwrap();
        let (src, dst) = (disk(dir.path(), "src.img", 1), dir.path().join("dst.img"));
        sync(&src, &dst, &SyncOptions { block_size: 4096, ..Default::default() }).unwrap();
        let cancel = AtomicBool::new(true);
        assert!(matches!(verify_replica(&dst, Some(&cancel)), Err(Error::Cancelled)));
    }
}
