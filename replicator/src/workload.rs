//! A simulated guest writing to a source disk, so there are real changes to replicate: a hot-spot pattern (most
//! writes land in a small region, like a database's hot pages) and a sequential log (an application appending
//! records it buffers in memory). Every write goes through the disk's change tracking.
//!
//! `pause()` is a crash-consistent boundary: what was written is on disk, the application's buffer is not.
//! `quiesce()` is the app-consistent hook: the application flushes its buffer first.

use std::time::{Duration, Instant};

use crate::cbt::ChangeTracker;
use crate::fileio;
use crate::hashes::Geometry;
use crate::image::DiskImage;
use crate::{Error, Result};

#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Pattern {
    /// `hot_share` of the writes land in the first `hot_fraction` of the disk, the rest anywhere.
    HotSpot { hot_fraction: f64, hot_share: f64 },
    /// Appends 4 KiB records, buffered `buffered` at a time, to a log that wraps at the end of the disk.
    SequentialLog { buffered: usize },
}

/// Deterministic xorshift64* generator: a seed reproduces a workload exactly.
#[derive(Clone, Debug)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }
    pub fn next_u64(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    pub fn below(&mut self, n: u64) -> u64 {
        if n == 0 {
            0
        } else {
            self.next_u64() % n
        }
    }
    pub fn fill(&mut self, buf: &mut [u8]) {
        for c in buf.chunks_mut(8) {
            let v = self.next_u64().to_le_bytes();
            c.copy_from_slice(&v[..c.len()]);
        }
    }
}

pub struct GuestWriter {
    image: DiskImage,
    file: std::fs::File,
    geom: Geometry,
    tracker: Option<ChangeTracker>,
    rng: Rng,
    pattern: Pattern,
    log_pos: u64,
    app_buffer: Vec<u8>,
    pub bytes_written: u64,
}

const RECORD: usize = 4096;

impl GuestWriter {
    /// `block_size` must be the one the syncs of this disk use, or incremental cycles fall back to delta.
    pub fn open(image: &DiskImage, block_size: u32, pattern: Pattern, seed: u64) -> Result<GuestWriter> {
        Ok(GuestWriter {
            file: image.open_data_rw()?,
            geom: Geometry::new(image.size, block_size)?,
            image: image.clone(),
            tracker: None,
            rng: Rng::new(seed),
            pattern,
            log_pos: 0,
            app_buffer: Vec::new(),
            bytes_written: 0,
        })
    }

    /// A tracked write. Takes the tracker's lock first: a sync cycle in progress holds the guest here.
    pub fn write_at(&mut self, offset: u64, data: &[u8]) -> Result<()> {
        if offset.checked_add(data.len() as u64).is_none_or(|end| end > self.image.size) {
            return Err(Error::Invalid(format!(
                "write of {} bytes at {offset} is past the end of {} ({} bytes)",
                data.len(),
                self.image.path.display(),
                self.image.size
            )));
        }
        if self.tracker.is_none() {
            let mut t = ChangeTracker::open(&self.image, self.geom)?;
            t.begin_writes()?;
            self.tracker = Some(t);
        }
        self.tracker.as_mut().unwrap().mark(offset, data.len() as u64);
        fileio::write_at(&self.file, data, offset).map_err(|e| Error::io(&self.image.data_path, e))?;
        self.bytes_written += data.len() as u64;
        Ok(())
    }

    /// Writes about `bytes` more bytes following the pattern.
    pub fn step(&mut self, bytes: u64) -> Result<()> {
        let mut buf = vec![0u8; RECORD];
        let mut done = 0;
        while done < bytes {
            match self.pattern {
                Pattern::HotSpot { hot_fraction, hot_share } => {
                    let records = self.image.size / RECORD as u64;
                    let hot = ((records as f64 * hot_fraction) as u64).max(1);
                    let pick_hot = (self.rng.below(1_000_000) as f64) < hot_share * 1_000_000.0;
                    let r = if pick_hot { self.rng.below(hot) } else { self.rng.below(records) };
                    self.rng.fill(&mut buf);
                    self.write_at(r * RECORD as u64, &buf)?;
                }
                Pattern::SequentialLog { buffered } => {
                    self.rng.fill(&mut buf);
                    self.app_buffer.extend_from_slice(&buf);
                    if self.app_buffer.len() >= buffered.max(1) * RECORD {
                        self.flush_app_buffer()?;
                    }
                }
            }
            done += RECORD as u64;
        }
        Ok(())
    }

    fn flush_app_buffer(&mut self) -> Result<()> {
        let buf = std::mem::take(&mut self.app_buffer);
        for rec in buf.chunks(RECORD) {
            if self.log_pos + rec.len() as u64 > self.image.size {
                self.log_pos = 0;
            }
            self.write_at(self.log_pos, rec)?;
            self.log_pos += rec.len() as u64;
        }
        Ok(())
    }

    /// Records the application has not written yet (lost by a crash-consistent point).
    pub fn buffered_bytes(&self) -> usize {
        self.app_buffer.len()
    }

    /// Crash-consistent boundary: data and bitmap on disk, lock released so a cycle can run.
    pub fn pause(&mut self) -> Result<()> {
        self.file.sync_data().map_err(|e| Error::io(&self.image.data_path, e))?;
        if let Some(mut t) = self.tracker.take() {
            t.flush()?;
        }
        Ok(())
    }

    /// The app-consistent hook: the application writes out what it buffers, then the guest pauses.
    pub fn quiesce(&mut self) -> Result<()> {
        self.flush_app_buffer()?;
        self.pause()
    }

    /// Stops as a crashed guest would: the bitmap is left marked unclean (untrusted), the lock released.
    pub fn crash(mut self) {
        self.tracker.take();
    }

    /// Writes at `rate` bytes per second for `duration`, pausing every 50 ms so sync cycles can take their turn.
    pub fn run_for(&mut self, rate: u64, duration: Duration) -> Result<()> {
        let start = Instant::now();
        let mut written = 0u64;
        while start.elapsed() < duration {
            let due = (rate as f64 * start.elapsed().as_secs_f64()) as u64;
            if due > written {
                self.step(due - written)?;
                written = due;
            }
            self.pause()?;
            std::thread::sleep(Duration::from_millis(50));
        }
        Ok(())
    }
}

impl Drop for GuestWriter {
    fn drop(&mut self) {
        // A clean shutdown keeps the change tracking trusted. (A crash skips this: the bitmap is then untrusted.)
        let _ = self.pause();
    }
}
