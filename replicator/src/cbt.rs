//! Changed-block tracking on the source: a persistent dirty bitmap kept by the source-side writer.
//!
//! The file `<image>.homeward/cbt` holds a header (block size, disk size, the generation of the last committed
//! cycle, a *clean* flag) and one bit per block. A writer clears *clean* durably before its first write and sets it
//! again only after the bitmap is on disk, so after an unclean stop the bitmap is untrusted and the next cycle falls
//! back to delta. Writes that bypass the tracker are caught by the data file's identity, recorded at every flush:
//! its modification time, its change time (which `touch -d` cannot set back), its inode (a copy put in its place,
//! even with `cp -p`) and its length; any difference makes the bitmap untrusted too. Left: a bypassing write within
//! the same timestamp tick as the flush (the filesystem's timestamp granularity) is not seen. Whoever holds the tracker holds an exclusive lock on the file: a sync cycle and the guest's writer
//! never run at the same moment, so a cycle reads a point-in-time image.

use std::fs::OpenOptions;
use std::path::{Path, PathBuf};

use crate::fileio::{self, FileLock};
use crate::hashes::Geometry;
use crate::image::DiskImage;
use crate::{Error, Result};

const MAGIC: &[u8; 8] = b"HWCBT002";
const HEADER: usize = 64;

/// What identifies the data file's content from outside: any write or replacement changes one of these.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct DataIdentity {
    mtime_ns: u64,
    ctime_ns: u64,
    ino: u64,
    len: u64,
}

pub struct ChangeTracker {
    lock: FileLock,
    path: PathBuf,
    data_path: PathBuf,
    geom: Geometry,
    clean: bool,
    base_generation: u64,
    /// The data file's identity when the bitmap was last flushed.
    data_id: DataIdentity,
    bits: Vec<u8>,
}

fn identity(path: &Path) -> Result<DataIdentity> {
    use std::os::unix::fs::MetadataExt;
    let m = std::fs::metadata(path).map_err(|e| Error::io(path, e))?;
    let ns = |s: i64, n: i64| (s as u64).wrapping_mul(1_000_000_000).wrapping_add(n as u64);
    Ok(DataIdentity {
        mtime_ns: ns(m.mtime(), m.mtime_nsec()),
        ctime_ns: ns(m.ctime(), m.ctime_nsec()),
        ino: m.ino(),
        len: m.len(),
    })
}

impl ChangeTracker {
    /// Opens (creating if missing) the tracker of `image`, waiting for the lock. A missing tracker, or one kept for
    /// another block size or disk size, starts untrusted (generation 0).
    pub fn open(image: &DiskImage, geom: Geometry) -> Result<ChangeTracker> {
        let dir = image.state_dir();
        std::fs::create_dir_all(&dir).map_err(|e| Error::io(&dir, e))?;
        let path = dir.join("cbt");
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(|e| Error::io(&path, e))?;
        let lock = FileLock::exclusive(file).map_err(|e| Error::io(&path, e))?;
        let nbytes = geom.blocks().div_ceil(8) as usize;
        let raw = std::fs::read(&path).map_err(|e| Error::io(&path, e))?;
        let parsed = (raw.len() == HEADER + nbytes && raw.starts_with(MAGIC)).then(|| {
            let block_size = u32::from_le_bytes(raw[8..12].try_into().unwrap());
            let clean = raw[12] == 1;
            let base = u64::from_le_bytes(raw[16..24].try_into().unwrap());
            let size = u64::from_le_bytes(raw[24..32].try_into().unwrap());
            let word = |at: usize| u64::from_le_bytes(raw[at..at + 8].try_into().unwrap());
            let id = DataIdentity { mtime_ns: word(32), ctime_ns: word(40), ino: word(48), len: word(56) };
            (block_size, clean, base, size, id)
        });
        let data_path = image.data_path.clone();
        let now_id = identity(&data_path)?;
        let mut t = ChangeTracker {
            lock,
            path,
            data_path,
            geom,
            clean: true,
            base_generation: 0,
            data_id: now_id,
            bits: vec![0; nbytes],
        };
        match parsed {
            Some((bs, clean, base, size, id)) if bs == geom.block_size && size == geom.size => {
                // Someone wrote or replaced the disk without going through the tracker: its bitmap misses those.
                t.clean = clean && id == now_id;
                t.base_generation = base;
                t.data_id = id;
                t.bits.copy_from_slice(&raw[HEADER..]);
            }
            _ => t.write_all()?,
        }
        Ok(t)
    }

    /// The generation this bitmap counts changes from, if the bitmap can be trusted.
    pub fn trusted_generation(&self) -> Option<u64> {
        (self.clean && self.base_generation != 0).then_some(self.base_generation)
    }

    /// Must be called before the first write after opening: a crash from here on leaves the bitmap untrusted.
    pub fn begin_writes(&mut self) -> Result<()> {
        if self.clean {
            self.clean = false;
            self.write_header()?;
        }
        Ok(())
    }

    pub fn mark(&mut self, offset: u64, len: u64) {
        if len == 0 {
            return;
        }
        let bs = self.geom.block_size as u64;
        for b in offset / bs..=(offset + len - 1) / bs {
            self.bits[(b / 8) as usize] |= 1 << (b % 8);
        }
    }

    /// Persists the bitmap, then declares it clean. Call after the data writes are durable.
    pub fn flush(&mut self) -> Result<()> {
        self.clean = true;
        self.data_id = identity(&self.data_path)?;
        self.write_all()
    }

    pub fn dirty_blocks(&self) -> Vec<u64> {
        (0..self.geom.blocks()).filter(|b| self.bits[(b / 8) as usize] & (1 << (b % 8)) != 0).collect()
    }

    /// After a committed cycle: no block is dirty relative to `generation`.
    pub fn reset(&mut self, generation: u64) -> Result<()> {
        self.bits.fill(0);
        self.base_generation = generation;
        self.clean = true;
        self.data_id = identity(&self.data_path)?;
        self.write_all()
    }

    fn header(&self) -> [u8; HEADER] {
        let mut h = [0u8; HEADER];
        h[..8].copy_from_slice(MAGIC);
        h[8..12].copy_from_slice(&self.geom.block_size.to_le_bytes());
        h[12] = self.clean as u8;
        h[16..24].copy_from_slice(&self.base_generation.to_le_bytes());
        h[24..32].copy_from_slice(&self.geom.size.to_le_bytes());
        h[32..40].copy_from_slice(&self.data_id.mtime_ns.to_le_bytes());
        h[40..48].copy_from_slice(&self.data_id.ctime_ns.to_le_bytes());
        h[48..56].copy_from_slice(&self.data_id.ino.to_le_bytes());
        h[56..64].copy_from_slice(&self.data_id.len.to_le_bytes());
        h
    }

    fn write_header(&self) -> Result<()> {
        let f = self.lock.file();
        fileio::write_at(f, &self.header(), 0).and_then(|_| f.sync_data()).map_err(|e| Error::io(&self.path, e))
    }

    /// Bitmap first, header (with the clean flag) last, each durable, so a torn update reads as unclean.
    fn write_all(&self) -> Result<()> {
        let f = self.lock.file();
        let io = |e| Error::io(&self.path, e);
        let mut unclean = self.header();
        unclean[12] = 0;
        fileio::write_at(f, &unclean, 0).map_err(io)?;
        f.set_len((HEADER + self.bits.len()) as u64).map_err(io)?;
        fileio::write_at(f, &self.bits, HEADER as u64).map_err(io)?;
        f.sync_data().map_err(io)?;
        self.write_header()
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::image::Format;

    #[test]
    fn bitmap_survives_a_clean_close_and_is_untrusted_after_a_crash() {
        let dir = tempfile::tempdir().unwrap();
        let img = DiskImage::create(&dir.path().join("s.img"), Format::Raw, 1 << 20).unwrap();
        let g = Geometry::new(img.size, 4096).unwrap();
        {
            let mut t = ChangeTracker::open(&img, g).unwrap();
            assert_eq!(t.trusted_generation(), None, "a new tracker knows nothing of the past");
            t.reset(42).unwrap();
            t.begin_writes().unwrap();
            t.mark(4096 * 3 + 10, 4096); // spans blocks 3 and 4
            t.flush().unwrap();
        }
        {
            let mut t = ChangeTracker::open(&img, g).unwrap();
            assert_eq!((t.trusted_generation(), t.dirty_blocks()), (Some(42), vec![3, 4]));
            t.begin_writes().unwrap();
            t.mark(0, 1);
            // dropped without flush: a crash
        }
        let t = ChangeTracker::open(&img, g).unwrap();
        assert_eq!(t.trusted_generation(), None, "an unclean stop makes the bitmap untrusted");
        drop(t);
        let t = ChangeTracker::open(&img, Geometry::new(img.size, 8192).unwrap()).unwrap();
        assert_eq!(t.trusted_generation(), None, "another block size starts over");
        drop(t);
        let mut t = ChangeTracker::open(&img, g).unwrap();
        t.reset(43).unwrap();
        drop(t);
        std::thread::sleep(std::time::Duration::from_millis(20));
        fileio::write_at(&img.open_data_rw().unwrap(), b"behind its back", 0).unwrap();
        let t = ChangeTracker::open(&img, g).unwrap();
        assert_eq!(t.trusted_generation(), None, "a write that bypassed the tracker makes it untrusted");
    }

    #[test]
    fn a_bypassing_write_hidden_by_touch_or_a_copy_with_the_same_times_is_still_seen() {
        let dir = tempfile::tempdir().unwrap();
        let img = DiskImage::create(&dir.path().join("s.img"), Format::Raw, 1 << 20).unwrap();
        let g = Geometry::new(img.size, 4096).unwrap();
        let mut t = ChangeTracker::open(&img, g).unwrap();
        t.reset(7).unwrap();
        drop(t);
        let modified = std::fs::metadata(&img.data_path).unwrap().modified().unwrap();
        // A write, then its mtime set back as `touch -d` would: the change time still moves.
        std::thread::sleep(std::time::Duration::from_millis(20));
        let f = img.open_data_rw().unwrap();
        fileio::write_at(&f, b"behind its back", 4096).unwrap();
        f.set_modified(modified).unwrap();
        drop(f);
        assert_eq!(std::fs::metadata(&img.data_path).unwrap().modified().unwrap(), modified);
        assert_eq!(ChangeTracker::open(&img, g).unwrap().trusted_generation(), None, "touch -d does not hide a write");

        // A copy put in its place with the same times (`cp -p`): another inode.
        let mut t = ChangeTracker::open(&img, g).unwrap();
        t.reset(8).unwrap();
        drop(t);
        let modified = std::fs::metadata(&img.data_path).unwrap().modified().unwrap();
        let copy = dir.path().join("copy.img");
        std::fs::copy(&img.data_path, &copy).unwrap();
        std::fs::File::options().write(true).open(&copy).unwrap().set_modified(modified).unwrap();
        std::fs::rename(&copy, &img.data_path).unwrap();
        assert_eq!(ChangeTracker::open(&img, g).unwrap().trusted_generation(), None, "a copy in its place is seen");

        // Untouched, it stays trusted.
        let mut t = ChangeTracker::open(&img, g).unwrap();
        t.reset(9).unwrap();
        drop(t);
        assert_eq!(ChangeTracker::open(&img, g).unwrap().trusted_generation(), Some(9));
    }
}
