//! Recovery points on the target, kept as an *undo journal*.
//!
//! The target disk always holds the newest point. While a cycle moves the target from point *k* to *k+1*, the old
//! bytes of every block it overwrites are appended to `undo-<k>.log` first (and made durable before the overwrite).
//! Restoring point *k* copies the target and applies the undo logs of points newest → *k*. Pruning drops the
//! oldest points with their logs; newer points never need an older log, so pruning loses nothing still kept.
//!
//! Within one log the first record of a block wins: a cycle resumed after a crash may log a block twice, and only
//! the first record holds the bytes from before the cycle.

use std::collections::HashSet;
use std::fs::{File, OpenOptions};
use std::io::{BufWriter, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::fileio;
use crate::hashes::{self, Geometry};
use crate::image::{DiskImage, Format};
use crate::{Error, Result};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Consistency {
    /// The disk as it was at an instant, like after a power cut.
    CrashConsistent,
    /// Taken while the guest was quiesced: applications flushed their state first.
    AppConsistent,
}

impl std::fmt::Display for Consistency {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Consistency::CrashConsistent => "crash-consistent",
            Consistency::AppConsistent => "app-consistent",
        })
    }
}

impl std::str::FromStr for Consistency {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "crash-consistent" | "crash" => Ok(Consistency::CrashConsistent),
            "app-consistent" | "app" => Ok(Consistency::AppConsistent),
            _ => Err(format!("unknown consistency {s:?}; use crash-consistent or app-consistent")),
        }
    }
}

/// One recovery point of one disk. All disks of a VM share `id`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PointInfo {
    pub seq: u64,
    pub id: String,
    pub created_at_ms: u64,
    pub consistency: Consistency,
    /// Whole-disk digest at this point (hex); a restore is checked against it.
    pub digest: String,
    pub block_size: u32,
    /// Bytes this cycle changed on the target.
    pub changed_bytes: u64,
}

/// Which points to keep: at most `max_points`, none older than `max_age_ms`; the newest is always kept.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Retention {
    pub max_points: Option<usize>,
    pub max_age_ms: Option<u64>,
}

const RECORD_MAGIC: u32 = 0x4857_554e; // "HWUN"
const RECORD_HEAD: usize = 4 + 8 + 4 + 16;

pub struct Journal {
    dir: PathBuf,
    points: Vec<PointInfo>,
}

/// The undo log of the cycle in progress.
pub struct UndoLog {
    path: PathBuf,
    out: BufWriter<File>,
    logged: HashSet<u64>,
}

impl Journal {
    pub fn open(dir: &Path) -> Result<Journal> {
        std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
        let p = dir.join("points.json");
        let points = match std::fs::read(&p) {
            Ok(b) => serde_json::from_slice(&b)
                .map_err(|e| Error::Image { path: p.clone(), problem: format!("unreadable recovery points: {e}") })?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
            Err(e) => return Err(Error::io(&p, e)),
        };
        Ok(Journal { dir: dir.to_path_buf(), points })
    }

    /// Points, oldest first.
    pub fn points(&self) -> &[PointInfo] {
        &self.points
    }

    pub fn latest(&self) -> Option<&PointInfo> {
        self.points.last()
    }

    fn undo_path(&self, seq: u64) -> PathBuf {
        self.dir.join(format!("undo-{seq}.log"))
    }

    /// Opens the undo log that protects the latest point, or `None` when there is no point to protect yet.
    pub fn begin_cycle(&self) -> Result<Option<UndoLog>> {
        let Some(latest) = self.latest() else { return Ok(None) };
        let path = self.undo_path(latest.seq);
        let existed = path.exists();
        let mut f =
            OpenOptions::new().read(true).append(true).create(true).open(&path).map_err(|e| Error::io(&path, e))?;
        if !existed {
            // The log must still be there after a power cut once old bytes have gone into it and been overwritten.
            fileio::sync_parent(&path).map_err(|e| Error::io(&path, e))?;
        }
        // Keep the valid records, cut a torn tail left by a crash.
        let mut logged = HashSet::new();
        let valid_len = read_records(&mut f, &path, |block, _| {
            logged.insert(block);
            Ok(())
        })?;
        f.set_len(valid_len).map_err(|e| Error::io(&path, e))?;
        f.seek(SeekFrom::End(0)).map_err(|e| Error::io(&path, e))?;
        Ok(Some(UndoLog { path, out: BufWriter::with_capacity(1 << 20, f), logged }))
    }

    /// Records a verified cycle as the newest point, then applies retention.
    pub fn commit_point(&mut self, mut info: PointInfo, retention: Retention, now_ms: u64) -> Result<PointInfo> {
        info.seq = self.latest().map_or(1, |p| p.seq + 1);
        self.points.push(info.clone());
        let keep_from = {
            let n = self.points.len();
            let mut drop = 0;
            while drop < n - 1 {
                let p = &self.points[drop];
                let too_many = retention.max_points.is_some_and(|m| n - drop > m.max(1));
                let too_old = retention.max_age_ms.is_some_and(|a| now_ms.saturating_sub(p.created_at_ms) > a);
                if !(too_many || too_old) {
                    break;
                }
                drop += 1;
            }
            drop
        };
        let pruned: Vec<PointInfo> = self.points.drain(..keep_from).collect();
        self.save()?;
        for p in pruned {
            let path = self.undo_path(p.seq);
            fileio::remove_durably(&path).map_err(|e| Error::io(&path, e))?;
        }
        Ok(info)
    }

    /// Forgets every point and its undo log: the target was written outside replication (a VM ran on it), so
    /// undoing the logged cycles no longer leads back to any point. The next cycle starts a new chain.
    pub fn discard_all(&mut self) -> Result<usize> {
        let gone: Vec<PointInfo> = std::mem::take(&mut self.points);
        self.save()?;
        for p in &gone {
            let path = self.undo_path(p.seq);
            fileio::remove_durably(&path).map_err(|e| Error::io(&path, e))?;
        }
        Ok(gone.len())
    }

    fn save(&self) -> Result<()> {
        let p = self.dir.join("points.json");
        let body = serde_json::to_vec_pretty(&self.points).expect("points serialise");
        fileio::write_atomic(&p, &body).map_err(|e| Error::io(&p, e))
    }

    /// Writes the bytes of point `seq` of `target` to a new image at `out` (format from its extension) and checks
    /// them against the point's digest.
    pub fn restore(&self, target: &DiskImage, seq: u64, out: &Path) -> Result<PointInfo> {
        let Some(point) = self.points.iter().find(|p| p.seq == seq).cloned() else {
            let have: Vec<String> = self.points.iter().map(|p| p.seq.to_string()).collect();
            return Err(Error::Invalid(format!(
                "no recovery point {seq} on {}; available: {}",
                target.path.display(),
                if have.is_empty() { "none".into() } else { have.join(", ") }
            )));
        };
        let geom = Geometry::new(target.size, point.block_size)?;
        let dst = DiskImage::create(out, Format::from_extension(out), target.size)?;
        let result = (|| {
            let src = target.open_data_read()?;
            let w = dst.open_data_rw()?;
            // Copy the allocated ranges of the newest state…
            let ranges = fileio::data_ranges(&src, target.size).map_err(|e| Error::io(&target.data_path, e))?;
            let mut buf = vec![0u8; 1 << 20];
            for (start, end) in ranges {
                let mut at = start;
                while at < end {
                    let n = ((end - at) as usize).min(buf.len());
                    fileio::read_at(&src, &mut buf[..n], at).map_err(|e| Error::io(&target.data_path, e))?;
                    if !hashes::is_zero(&buf[..n]) {
                        fileio::write_at(&w, &buf[..n], at).map_err(|e| Error::io(&dst.data_path, e))?;
                    }
                    at += n as u64;
                }
            }
            // …then undo, newest log first, back to the requested point (the log of the latest point is there too
            // when a cycle was interrupted half-way).
            let latest = self.latest().map_or(0, |p| p.seq);
            for s in (seq..=latest).rev() {
                let path = self.undo_path(s);
                let Ok(mut f) = File::open(&path) else { continue };
                let mut seen = HashSet::new();
                read_records(&mut f, &path, |block, data| {
                    if block >= geom.blocks() {
                        return Err(Error::Image {
                            path: path.clone(),
                            problem: format!("undo record for block {block} is outside the disk"),
                        });
                    }
                    if seen.insert(block) {
                        // An empty record means the block was all zeros.
                        let done = if data.is_empty() {
                            fileio::punch_hole(&w, geom.offset(block), geom.len(block) as u64)
                        } else {
                            fileio::write_at(&w, data, geom.offset(block))
                        };
                        done.map_err(|e| Error::io(&dst.data_path, e))?;
                    }
                    Ok(())
                })?;
            }
            w.sync_all().map_err(|e| Error::io(&dst.data_path, e))?;
            let got = digest_of(&w, &dst.data_path, geom)?;
            if got != point.digest {
                return Err(Error::DigestMismatch { source_digest: point.digest.clone(), target_digest: got });
            }
            Ok(point)
        })();
        if result.is_err() {
            let _ = std::fs::remove_file(&dst.path);
            if dst.data_path != dst.path {
                let _ = std::fs::remove_file(&dst.data_path);
            }
        }
        result
    }
}

impl Journal {
    /// The bytes of `blocks` (by index, in the point's block size) of `target` as they were at point `seq`, without
    /// restoring the whole disk: the current block, or the oldest undo record of it from `seq` on (as `restore`
    /// ends up with). For checking an image that differs from the point in those blocks only.
    pub fn blocks_at(
        &self,
        target: &DiskImage,
        seq: u64,
        blocks: &HashSet<u64>,
    ) -> Result<std::collections::HashMap<u64, Vec<u8>>> {
        let Some(point) = self.points.iter().find(|p| p.seq == seq) else {
            return Err(Error::Invalid(format!("no recovery point {seq} on {}", target.path.display())));
        };
        let geom = Geometry::new(target.size, point.block_size)?;
        let src = target.open_data_read()?;
        let mut out = std::collections::HashMap::new();
        for &b in blocks {
            if b >= geom.blocks() {
                return Err(Error::Invalid(format!("block {b} is outside {}", target.path.display())));
            }
            let mut data = vec![0u8; geom.len(b)];
            fileio::read_at(&src, &mut data, geom.offset(b)).map_err(|e| Error::io(&target.data_path, e))?;
            out.insert(b, data);
        }
        let latest = self.latest().map_or(0, |p| p.seq);
        for s in (seq..=latest).rev() {
            let path = self.undo_path(s);
            let Ok(mut f) = File::open(&path) else { continue };
            let mut seen = HashSet::new();
            read_records(&mut f, &path, |block, data| {
                if blocks.contains(&block) && seen.insert(block) {
                    // An empty record means the block was all zeros.
                    let old = if data.is_empty() { vec![0u8; geom.len(block)] } else { data.to_vec() };
                    out.insert(block, old);
                }
                Ok(())
            })?;
        }
        Ok(out)
    }
}

/// The whole-disk digest (hex) of an image's data, as recovery points record it, with `block_size` blocks.
pub fn image_digest(img: &DiskImage, block_size: u32) -> Result<String> {
    let geom = Geometry::new(img.size, block_size)?;
    digest_of(&img.open_data_read()?, &img.data_path, geom)
}

fn digest_of(f: &File, path: &Path, geom: Geometry) -> Result<String> {
    let mut hs = Vec::with_capacity(geom.blocks() as usize);
    hashes::scan(f, path, geom, 0, geom.blocks(), |b, data| {
        hs.push(data.map_or_else(|| geom.zero_hash(b), hashes::hash_block));
        Ok(())
    })?;
    Ok(hashes::hex(&hashes::disk_digest(geom, &hs)))
}

impl UndoLog {
    pub fn contains(&self, block: u64) -> bool {
        self.logged.contains(&block)
    }

    /// Appends the old bytes of `block` unless this cycle logged it already.
    pub fn record(&mut self, block: u64, old: &[u8]) -> Result<()> {
        if !self.logged.insert(block) {
            return Ok(());
        }
        let mut head = [0u8; RECORD_HEAD];
        head[..4].copy_from_slice(&RECORD_MAGIC.to_le_bytes());
        head[4..12].copy_from_slice(&block.to_le_bytes());
        head[12..16].copy_from_slice(&(old.len() as u32).to_le_bytes());
        head[16..32].copy_from_slice(&blake3::hash(old).as_bytes()[..16]);
        let io = |e| Error::io(&self.path, e);
        self.out.write_all(&head).map_err(io)?;
        self.out.write_all(old).map_err(io)
    }

    /// Makes every record durable; call before overwriting the blocks they protect.
    pub fn sync(&mut self) -> Result<()> {
        let io = |e| Error::io(&self.path, e);
        self.out.flush().map_err(io)?;
        self.out.get_ref().sync_data().map_err(io)
    }
}

/// Calls `each(block, bytes)` for every intact record; returns the length of the intact prefix.
fn read_records(f: &mut File, path: &Path, mut each: impl FnMut(u64, &[u8]) -> Result<()>) -> Result<u64> {
    f.seek(SeekFrom::Start(0)).map_err(|e| Error::io(path, e))?;
    let mut r = std::io::BufReader::with_capacity(1 << 20, f);
    let mut pos = 0u64;
    let mut head = [0u8; RECORD_HEAD];
    let mut data = Vec::new();
    loop {
        if read_full(&mut r, &mut head).map_err(|e| Error::io(path, e))? < RECORD_HEAD {
            return Ok(pos);
        }
        let magic = u32::from_le_bytes(head[..4].try_into().unwrap());
        let block = u64::from_le_bytes(head[4..12].try_into().unwrap());
        let len = u32::from_le_bytes(head[12..16].try_into().unwrap()) as usize;
        if magic != RECORD_MAGIC || len > 16 << 20 {
            return Ok(pos);
        }
        data.resize(len, 0);
        if read_full(&mut r, &mut data).map_err(|e| Error::io(path, e))? < len
            || blake3::hash(&data).as_bytes()[..16] != head[16..32]
        {
            return Ok(pos);
        }
        each(block, &data)?;
        pos += (RECORD_HEAD + len) as u64;
    }
}

fn read_full(r: &mut impl Read, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match r.read(&mut buf[n..])? {
            0 => break,
            k => n += k,
        }
    }
    Ok(n)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn point(id: &str, at: u64) -> PointInfo {
        PointInfo {
            seq: 0,
            id: id.into(),
            created_at_ms: at,
            consistency: Consistency::CrashConsistent,
            digest: String::new(),
            block_size: 4096,
            changed_bytes: 0,
        }
    }

    #[test]
    fn retention_keeps_the_newest_by_count_and_age() {
        let dir = tempfile::tempdir().unwrap();
        let mut j = Journal::open(dir.path()).unwrap();
        let r = Retention { max_points: Some(3), max_age_ms: Some(10_000) };
        for i in 0..5u64 {
            std::fs::write(dir.path().join(format!("undo-{}.log", i + 1)), b"").unwrap();
            j.commit_point(point(&format!("p{i}"), i * 1000), r, i * 1000).unwrap();
        }
        let seqs: Vec<u64> = j.points().iter().map(|p| p.seq).collect();
        assert_eq!(seqs, vec![3, 4, 5]);
        assert!(!dir.path().join("undo-1.log").exists() && dir.path().join("undo-3.log").exists());
        // Far in the future every point is too old, but the newest is always kept.
        j.commit_point(point("late", 100_000), r, 100_000).unwrap();
        assert_eq!(j.points().len(), 1);
        assert_eq!(Journal::open(dir.path()).unwrap().points().len(), 1, "persisted");
    }

    #[test]
    fn a_torn_undo_record_is_cut_and_the_first_record_of_a_block_wins() {
        let dir = tempfile::tempdir().unwrap();
        let mut j = Journal::open(dir.path()).unwrap();
        j.commit_point(point("p", 0), Retention::default(), 0).unwrap();
        let mut log = j.begin_cycle().unwrap().unwrap();
        log.record(2, &[1u8; 4096]).unwrap();
        log.record(2, &[9u8; 4096]).unwrap(); // ignored: block 2 is logged
        log.sync().unwrap();
        drop(log);
        let p = dir.path().join("undo-1.log");
        let full = std::fs::metadata(&p).unwrap().len();
        assert_eq!(full, (RECORD_HEAD + 4096) as u64);
        let mut f = OpenOptions::new().append(true).open(&p).unwrap();
        f.write_all(&[0x4e, 0x55, 0x57, 0x48, 1, 2, 3]).unwrap(); // a torn record
        drop(f);
        let log = j.begin_cycle().unwrap().unwrap();
        assert!(log.contains(2));
        assert_eq!(std::fs::metadata(&p).unwrap().len(), full, "torn tail cut");
    }

    #[test]
    fn a_new_undo_log_and_a_pruned_one_are_made_durable_in_their_folder() {
        let synced = || crate::fileio::SYNCED_DIRS.with(|s| std::mem::take(&mut *s.borrow_mut()));
        let dir = tempfile::tempdir().unwrap();
        let mut j = Journal::open(dir.path()).unwrap();
        j.commit_point(point("p1", 0), Retention::default(), 0).unwrap();
        synced();
        drop(j.begin_cycle().unwrap().unwrap());
        assert_eq!(synced(), vec![dir.path().to_path_buf()], "the new undo log's name is durable before it is used");
        drop(j.begin_cycle().unwrap().unwrap());
        assert!(synced().is_empty(), "an existing log needs no folder sync");
        j.commit_point(point("p2", 1), Retention { max_points: Some(1), max_age_ms: None }, 1).unwrap();
        assert!(!dir.path().join("undo-1.log").exists());
        // points.json's atomic replace, then the pruned log's removal.
        assert_eq!(synced(), vec![dir.path().to_path_buf(), dir.path().to_path_buf()]);
    }
}
