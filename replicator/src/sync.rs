//! One replication cycle between a source half and a target half that share nothing but a [`wire`] stream.
//!
//! ```text
//! source                                  target
//! Hello (size, block size, CBT gen) ─────▶
//!                                   ◀──── Welcome (its generation, hash table?, empty?, interrupted cursor?)
//! Start (mode, from block, point) ───────▶
//!                                   ◀──── Hashes … (delta only, streamed while the source hashes its own disk)
//! Data / Zero … Mark … ──────────────────▶ undo-log old bytes → fdatasync → pwrite / punch; at Mark: fdatasync,
//!                                          then the cursor is committed
//! Done (source digest) ──────────────────▶
//!                                   ◀──── Verified (target digest, from the target's own bytes)
//! Commit (new generation) ───────────────▶ point recorded, retention applied
//!                                   ◀──── Committed (the point)
//! ```

use std::collections::VecDeque;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use crate::cbt::ChangeTracker;
use crate::fileio;
use crate::hashes::{self, hash_block, is_zero, BlockHash, Geometry, HashTable};
use crate::image::{DiskImage, Format};
use crate::journal::{Consistency, Journal, PointInfo, Retention, UndoLog};
use crate::wire::{self, End, Frame, Hello, Start, Tx, Welcome, PROTOCOL_VERSION};
use crate::{Error, Result};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// Incremental when the change tracking allows it, full for an empty target, delta otherwise.
    Auto,
    /// Every allocated block; zero ranges become holes on the target.
    Full,
    /// Only the blocks whose BLAKE3 hashes differ.
    Delta,
    /// Only the blocks the source's change tracking marked dirty.
    Incremental,
}

impl Mode {
    pub fn name(self) -> &'static str {
        match self {
            Mode::Auto => "auto",
            Mode::Full => "full",
            Mode::Delta => "delta",
            Mode::Incremental => "incremental",
        }
    }
}

impl std::str::FromStr for Mode {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "auto" => Ok(Mode::Auto),
            "full" => Ok(Mode::Full),
            "delta" => Ok(Mode::Delta),
            "incremental" => Ok(Mode::Incremental),
            _ => Err(format!("unknown sync mode {s:?}; use auto, full, delta or incremental")),
        }
    }
}

impl std::fmt::Display for Mode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// A progress event, sent at most every 100 ms and once at the end.
#[derive(Clone, Debug)]
pub struct Progress {
    pub mode: Mode,
    /// Bytes of the disk examined so far, out of `total`.
    pub done: u64,
    pub total: u64,
    /// Bytes sent to the target so far.
    pub sent: u64,
    pub elapsed: Duration,
    /// Bytes examined per second.
    pub rate: f64,
    pub eta: Option<Duration>,
}

pub type ProgressFn = Arc<dyn Fn(&Progress) + Send + Sync>;

/// A recovery point's id: `rp-` and a UUIDv7, unique across disks and nodes and ordered by time.
pub fn new_point_id() -> String {
    format!("rp-{}", uuid::Uuid::now_v7())
}

#[derive(Clone)]
pub struct SyncOptions {
    pub mode: Mode,
    pub block_size: u32,
    /// A durable checkpoint (fdatasync + cursor) after every this many bytes sent: the most a crash can make the
    /// next run send again.
    pub chunk_bytes: u64,
    /// Cap on bytes per second from source to target.
    pub bandwidth: Option<u64>,
    pub consistency: Consistency,
    /// Shared by all disks of one VM; generated when absent.
    pub point_id: Option<String>,
    pub retention: Retention,
    /// Shared secret between the halves (TCP); empty in process.
    pub token: String,
    pub progress: Option<ProgressFn>,
    pub cancel: Option<Arc<AtomicBool>>,
    /// Use and advance the source's change tracking. Off for a one-off copy to a second target, so the tracking
    /// stays tied to the disk's replication target.
    pub track: bool,
}

impl Default for SyncOptions {
    fn default() -> Self {
        SyncOptions {
            mode: Mode::Auto,
            block_size: 64 << 10,
            chunk_bytes: 32 << 20,
            bandwidth: None,
            consistency: Consistency::CrashConsistent,
            point_id: None,
            retention: Retention::default(),
            token: String::new(),
            progress: None,
            cancel: None,
            track: true,
        }
    }
}

impl std::fmt::Debug for SyncOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SyncOptions")
            .field("mode", &self.mode)
            .field("block_size", &self.block_size)
            .field("chunk_bytes", &self.chunk_bytes)
            .field("bandwidth", &self.bandwidth)
            .finish_non_exhaustive()
    }
}

/// What a cycle did, as the source saw it.
#[derive(Clone, Debug, Serialize)]
pub struct SyncReport {
    pub requested: Mode,
    pub mode: Mode,
    /// Why the requested mode was not used.
    pub fallback: Option<String>,
    pub resumed_from_block: Option<u64>,
    pub size: u64,
    pub block_size: u32,
    pub blocks_total: u64,
    /// Blocks sent as data or as zero ranges.
    pub blocks_changed: u64,
    /// Payload bytes of the data blocks sent.
    pub data_bytes: u64,
    pub bytes_read: u64,
    /// Every byte on the stream, source → target.
    pub bytes_sent: u64,
    /// Every byte on the stream, target → source (hash lists and replies).
    pub bytes_received: u64,
    pub elapsed_ms: u64,
    pub digest: String,
    pub point: PointInfo,
}

/// Runs after a cycle's point is committed on the target and before the source is told so: publishes the target's
/// new state elsewhere (a cloud disk's blob); an error fails the cycle, which the source then reports.
pub type AfterCommit = Arc<dyn Fn(&Path) -> std::result::Result<(), String> + Send + Sync>;

/// Target-side options.
#[derive(Clone, Default)]
pub struct TargetOptions {
    pub token: String,
    pub retention: Retention,
    pub after_commit: Option<AfterCommit>,
}

impl std::fmt::Debug for TargetOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TargetOptions")
            .field("retention", &self.retention)
            .field("after_commit", &self.after_commit.is_some())
            .finish()
    }
}

#[derive(Serialize, Deserialize)]
struct Cursor {
    mode: Mode,
    next_block: u64,
    source_generation: u64,
    point_id: String,
}

/// Hashes per frame from the target: small, so the source starts comparing early and never waits long.
const HASH_BATCH: usize = 128;

fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0)
}

fn fresh_u64() -> u64 {
    let seed = format!("{:?}{}{:?}", SystemTime::now(), std::process::id(), std::thread::current().id());
    let h = blake3::hash(seed.as_bytes());
    u64::from_le_bytes(h.as_bytes()[..8].try_into().unwrap()) | 1
}

/// Syncs `src` onto `dst` in this process (two threads, an in-memory stream). `dst` is created with `src`'s size,
/// in the format its extension names, when it does not exist.
pub fn sync(src: &Path, dst: &Path, opts: &SyncOptions) -> Result<SyncReport> {
    let source = DiskImage::open(src)?;
    let (a, b) = wire::in_process(64);
    let target_opts = TargetOptions { token: opts.token.clone(), retention: opts.retention, after_commit: None };
    let dst = dst.to_path_buf();
    let target = std::thread::Builder::new()
        .name("replication-target".into())
        .spawn(move || run_target(&dst, b, &target_opts))
        .map_err(|e| Error::Protocol(format!("cannot start the target half: {e}")))?;
    let result = run_source(&source, a, opts);
    let target_result = target.join().unwrap_or_else(|_| Err(Error::Protocol("the target half panicked".into())));
    match (result, target_result) {
        (Ok(r), Ok(())) => Ok(r),
        // The target's own error names the real cause (a full disk, say); the source only saw the hang-up.
        (Err(Error::Peer(_) | Error::Protocol(_)), Err(t)) => Err(t),
        (Err(e), _) => Err(e),
        (Ok(_), Err(t)) => Err(t),
    }
}

struct Throttle {
    rate: Option<u64>,
    start: Instant,
    sent: u64,
}

impl Throttle {
    fn pace(&mut self, n: usize) {
        self.sent += n as u64;
        if let Some(rate) = self.rate.filter(|r| *r > 0) {
            let due = Duration::from_secs_f64(self.sent as f64 / rate as f64);
            let elapsed = self.start.elapsed();
            if due > elapsed {
                std::thread::sleep(due - elapsed);
            }
        }
    }
}

/// The source half: reads `src`, sends what the target lacks, proves the result.
pub fn run_source(src: &DiskImage, end: End, opts: &SyncOptions) -> Result<SyncReport> {
    let End { mut tx, mut rx } = end;
    let r = source_inner(src, &mut tx, &mut rx, opts);
    if let Err(e) = &r {
        if !matches!(e, Error::Peer(_)) {
            let _ = tx.send(&Frame::Error { message: e.to_string() });
        }
    }
    r
}

struct Sender<'a> {
    tx: &'a mut Tx,
    throttle: Throttle,
    zero_run: Option<(u64, u64)>,
    since_mark: u64,
    chunk: u64,
    blocks_changed: u64,
    data_bytes: u64,
}

impl Sender<'_> {
    fn data(&mut self, block: u64, bytes: &[u8]) -> Result<()> {
        self.flush_zero()?;
        let f = Frame::Data { block, bytes: bytes.to_vec() }.encode();
        let n = f.len();
        self.tx.send_encoded(f)?;
        self.throttle.pace(n);
        self.blocks_changed += 1;
        self.data_bytes += bytes.len() as u64;
        self.since_mark += n as u64;
        if self.since_mark >= self.chunk {
            self.tx.send(&Frame::Mark { next_block: block + 1 })?;
            self.since_mark = 0;
        }
        Ok(())
    }
    fn zero(&mut self, block: u64) -> Result<()> {
        self.blocks_changed += 1;
        match &mut self.zero_run {
            Some((first, count)) if *first + *count == block => *count += 1,
            _ => {
                self.flush_zero()?;
                self.zero_run = Some((block, 1));
            }
        }
        Ok(())
    }
    fn flush_zero(&mut self) -> Result<()> {
        if let Some((first_block, count)) = self.zero_run.take() {
            self.tx.send(&Frame::Zero { first_block, count })?;
        }
        Ok(())
    }
    fn block(&mut self, block: u64, bytes: Option<&[u8]>) -> Result<()> {
        match bytes {
            Some(b) if !is_zero(b) => self.data(block, b),
            _ => self.zero(block),
        }
    }
}

struct Reporter<'a> {
    f: Option<&'a ProgressFn>,
    mode: Mode,
    start: Instant,
    last: Instant,
    total: u64,
}

impl Reporter<'_> {
    fn tick(&mut self, done: u64, sent: u64, force: bool) {
        let Some(f) = self.f else { return };
        if !force && self.last.elapsed() < Duration::from_millis(100) {
            return;
        }
        self.last = Instant::now();
        let elapsed = self.start.elapsed();
        let rate = done as f64 / elapsed.as_secs_f64().max(1e-6);
        let eta = (rate > 0.0).then(|| Duration::from_secs_f64(self.total.saturating_sub(done) as f64 / rate));
        f(&Progress { mode: self.mode, done, total: self.total, sent, elapsed, rate, eta });
    }
}

fn source_inner(src: &DiskImage, tx: &mut Tx, rx: &mut wire::Rx, opts: &SyncOptions) -> Result<SyncReport> {
    let started = Instant::now();
    let geom = Geometry::new(src.size, opts.block_size)?;
    let blocks = geom.blocks();
    let data = src.open_data_read()?;
    // Holding the tracker pauses the guest's writer: the cycle reads one instant of the disk.
    let mut tracker = ChangeTracker::open(src, geom)?;
    let table_path = src.state_dir().join("source.hashes");
    let table = if opts.track {
        tracker.trusted_generation().and_then(|g| HashTable::load(&table_path, geom).filter(|t| t.generation == g))
    } else {
        None
    };
    let source_generation = table.as_ref().map_or(0, |t| t.generation);

    tx.send(&Frame::Hello(Hello {
        version: PROTOCOL_VERSION,
        token: opts.token.clone(),
        size: src.size,
        block_size: opts.block_size,
        source_generation,
    }))?;
    let w: Welcome = match rx.recv()? {
        Frame::Welcome(w) => w,
        f => return Err(Error::Protocol(format!("expected Welcome, got {f:?}"))),
    };
    if w.version != PROTOCOL_VERSION {
        return Err(Error::Protocol(format!("the target speaks version {}, we speak {PROTOCOL_VERSION}", w.version)));
    }
    let incremental_ok = source_generation != 0 && w.has_hashes && w.target_generation == source_generation;
    let resume = w.resume.as_ref().and_then(|(m, next, g)| Some((m.parse::<Mode>().ok()?, *next, *g)));
    let (mode, fallback) = match opts.mode {
        Mode::Full => (Mode::Full, None),
        Mode::Delta => (Mode::Delta, None),
        Mode::Incremental if incremental_ok => (Mode::Incremental, None),
        Mode::Incremental => (
            Mode::Delta,
            Some(if !opts.track {
                "change tracking is off for this sync".to_owned()
            } else if source_generation == 0 {
                "the source's change tracking is untrusted (first cycle, or the writer stopped uncleanly)".to_owned()
            } else {
                "the target's last cycle came from another source state".to_owned()
            }),
        ),
        Mode::Auto => match resume {
            Some((Mode::Full, _, _)) => (Mode::Full, None),
            Some((Mode::Incremental, _, g)) if incremental_ok && g == source_generation => (Mode::Incremental, None),
            _ if incremental_ok => (Mode::Incremental, None),
            _ if w.empty => (Mode::Full, None),
            _ => (Mode::Delta, None),
        },
    };
    let from_block = match resume {
        Some((m, next, g)) if m == mode && g == source_generation && next <= blocks => next,
        _ => 0,
    };
    let point_id = opts.point_id.clone().unwrap_or_else(new_point_id);
    tx.send(&Frame::Start(Start {
        mode: mode.name().into(),
        from_block,
        point_id,
        consistency: opts.consistency.to_string(),
        created_at_ms: now_ms(),
        source_generation,
    }))?;

    let cancelled = || opts.cancel.as_ref().is_some_and(|c| c.load(Ordering::Relaxed));
    let total = match mode {
        Mode::Incremental => tracker.dirty_blocks().len() as u64 * geom.block_size as u64,
        _ => src.size,
    };
    let mut rep = Reporter { f: opts.progress.as_ref(), mode, start: started, last: started, total };
    let mut s = Sender {
        tx,
        throttle: Throttle { rate: opts.bandwidth, start: Instant::now(), sent: 0 },
        zero_run: None,
        since_mark: 0,
        chunk: opts.chunk_bytes.max(1),
        blocks_changed: 0,
        data_bytes: 0,
    };
    let mut ours: Vec<BlockHash> = Vec::with_capacity(blocks as usize);
    let bytes_read = match mode {
        Mode::Full => hashes::scan(&data, &src.data_path, geom, 0, blocks, |b, bytes| {
            if cancelled() {
                return Err(Error::Cancelled);
            }
            ours.push(bytes.map_or_else(|| geom.zero_hash(b), hash_block));
            if b >= from_block {
                s.block(b, bytes)?;
            }
            rep.tick(geom.offset(b), s.tx.sent.get(), false);
            Ok(())
        })?,
        Mode::Delta => {
            let mut theirs: VecDeque<BlockHash> = VecDeque::new();
            let mut next_theirs = 0u64;
            hashes::scan(&data, &src.data_path, geom, 0, blocks, |b, bytes| {
                if cancelled() {
                    return Err(Error::Cancelled);
                }
                let h = bytes.map_or_else(|| geom.zero_hash(b), hash_block);
                ours.push(h);
                while theirs.is_empty() {
                    match rx.recv()? {
                        Frame::Hashes { first_block, hashes } if first_block == next_theirs => {
                            next_theirs += hashes.len() as u64;
                            theirs.extend(hashes);
                        }
                        f => {
                            return Err(Error::Protocol(format!("expected hashes from block {next_theirs}, got {f:?}")))
                        }
                    }
                }
                if theirs.pop_front() != Some(h) {
                    s.block(b, bytes)?;
                }
                rep.tick(geom.offset(b), s.tx.sent.get(), false);
                Ok(())
            })?
        }
        Mode::Incremental => {
            let mut t = table.clone().expect("incremental is only chosen with a table");
            let mut buf = vec![0u8; geom.block_size as usize];
            let mut read = 0;
            for (i, b) in tracker.dirty_blocks().into_iter().enumerate() {
                if cancelled() {
                    return Err(Error::Cancelled);
                }
                let buf = &mut buf[..geom.len(b)];
                fileio::read_at(&data, buf, geom.offset(b)).map_err(|e| Error::io(&src.data_path, e))?;
                read += buf.len() as u64;
                t.hashes[b as usize] = hash_block(buf);
                if b >= from_block {
                    s.block(b, Some(buf))?;
                }
                rep.tick(i as u64 * geom.block_size as u64, s.tx.sent.get(), false);
            }
            ours = t.hashes;
            read
        }
        Mode::Auto => unreachable!("auto is resolved above"),
    };
    s.flush_zero()?;
    let (blocks_changed, data_bytes) = (s.blocks_changed, s.data_bytes);
    rep.tick(total, s.tx.sent.get(), true);
    let digest = hashes::disk_digest(geom, &ours);
    tx.send(&Frame::Done { digest })?;
    match rx.recv()? {
        Frame::Verified { digest: theirs } if theirs == digest => {}
        Frame::Verified { digest: theirs } => {
            return Err(Error::DigestMismatch {
                source_digest: hashes::hex(&digest),
                target_digest: hashes::hex(&theirs),
            })
        }
        f => return Err(Error::Protocol(format!("expected Verified, got {f:?}"))),
    }
    // The source's tracking restarts from this verified state; the target records the same generation on Commit.
    // A crash in between leaves the two generations different, which only costs the next cycle a delta.
    let generation = if opts.track {
        let generation = fresh_u64();
        // No folder fsync for the table's name: should a power cut bring the old table back, its generation no
        // longer matches the tracker's (reset durably next) and the next cycle is a delta.
        HashTable { geom, generation, hashes: ours }.save_unsynced_name(&table_path)?;
        tracker.reset(generation)?;
        generation
    } else {
        0
    };
    drop(tracker); // the guest may write again
    tx.send(&Frame::Commit { generation })?;
    let point: PointInfo = match rx.recv()? {
        Frame::Committed { point_json } => serde_json::from_str(&point_json)
            .map_err(|e| Error::Protocol(format!("unreadable point from the target: {e}")))?,
        f => return Err(Error::Protocol(format!("expected Committed, got {f:?}"))),
    };
    Ok(SyncReport {
        requested: opts.mode,
        mode,
        fallback,
        resumed_from_block: (from_block > 0).then_some(from_block),
        size: src.size,
        block_size: geom.block_size,
        blocks_total: blocks,
        blocks_changed,
        data_bytes,
        bytes_read,
        bytes_sent: tx.sent.get(),
        bytes_received: rx.received.get(),
        elapsed_ms: started.elapsed().as_millis() as u64,
        digest: hashes::hex(&digest),
        point,
    })
}

/// The target half: applies what the source sends to `dst` (created if missing), journals the old bytes, proves
/// the result with its own digest and records the recovery point.
pub fn run_target(dst: &Path, end: End, opts: &TargetOptions) -> Result<()> {
    let End { tx, mut rx } = end;
    let tx = Arc::new(Mutex::new(tx));
    let r = target_inner(dst, &tx, &mut rx, opts);
    if let Err(e) = &r {
        if !matches!(e, Error::Peer(_)) {
            let _ = tx.lock().unwrap().send(&Frame::Error { message: e.to_string() });
        }
    }
    r
}

fn send(tx: &Arc<Mutex<Tx>>, f: &Frame) -> Result<()> {
    tx.lock().unwrap().send(f)
}

struct Applier<'a> {
    image: &'a DiskImage,
    file: &'a std::fs::File,
    geom: Geometry,
    undo: Option<UndoLog>,
    written: Vec<Option<BlockHash>>,
    batch: Vec<(u64, Vec<u8>)>,
    batch_bytes: usize,
    unsynced: bool,
    changed_bytes: u64,
    applied_bytes: u64,
    abort_after: Option<u64>,
}

impl Applier<'_> {
    fn io(&self, e: std::io::Error) -> Error {
        Error::io(&self.image.data_path, e)
    }

    fn check_range(&self, first: u64, count: u64) -> Result<()> {
        if count == 0 || first.checked_add(count).is_none_or(|end| end > self.geom.blocks()) {
            return Err(Error::Protocol(format!("blocks {first}+{count} are outside the disk")));
        }
        Ok(())
    }

    fn push(&mut self, block: u64, bytes: Vec<u8>) -> Result<()> {
        self.check_range(block, 1)?;
        if bytes.len() != self.geom.len(block) {
            return Err(Error::Protocol(format!("block {block} arrived with {} bytes", bytes.len())));
        }
        self.batch_bytes += bytes.len();
        self.batch.push((block, bytes));
        if self.batch_bytes >= 4 << 20 {
            self.flush()?;
        }
        Ok(())
    }

    /// Old bytes to the undo log (durable) first, then the new bytes in place.
    fn flush(&mut self) -> Result<()> {
        if self.batch.is_empty() {
            return Ok(());
        }
        let batch = std::mem::take(&mut self.batch);
        self.batch_bytes = 0;
        if let Some(undo) = &mut self.undo {
            let mut old = vec![0u8; self.geom.block_size as usize];
            for (b, _) in &batch {
                if !undo.contains(*b) {
                    let old = &mut old[..self.geom.len(*b)];
                    fileio::read_at(self.file, old, self.geom.offset(*b))
                        .map_err(|e| Error::io(&self.image.data_path, e))?;
                    undo.record(*b, if is_zero(old) { &[] } else { old })?;
                }
            }
            undo.sync()?;
        }
        for (b, bytes) in &batch {
            fileio::write_at(self.file, bytes, self.geom.offset(*b)).map_err(|e| self.io(e))?;
            self.written[*b as usize] = Some(hash_block(bytes));
            self.changed_bytes += bytes.len() as u64;
            self.applied(bytes.len() as u64);
        }
        // Start writing the batch back now, so the checkpoint's fdatasync finds little left to do and the disk
        // works while we receive the next batch.
        if let (Some((first, _)), Some((last, _))) = (batch.first(), batch.last()) {
            let (lo, hi) =
                (self.geom.offset(*first.min(last)), self.geom.offset(*first.max(last) + 1).min(self.geom.size));
            fileio::start_writeback(self.file, lo, hi - lo);
        }
        self.unsynced = true;
        Ok(())
    }

    fn zero(&mut self, first: u64, count: u64) -> Result<()> {
        self.check_range(first, count)?;
        self.flush()?;
        let (start, end) = (self.geom.offset(first), self.geom.offset(first + count).min(self.geom.size));
        if let Some(undo) = &mut self.undo {
            let ranges =
                fileio::data_ranges(self.file, self.geom.size).map_err(|e| Error::io(&self.image.data_path, e))?;
            let mut old = vec![0u8; self.geom.block_size as usize];
            for (rs, re) in ranges.into_iter().filter(|(rs, re)| *re > start && *rs < end) {
                let (lo, hi) =
                    (rs.max(start) / self.geom.block_size as u64, (re.min(end) - 1) / self.geom.block_size as u64);
                for b in lo..=hi {
                    let old = &mut old[..self.geom.len(b)];
                    fileio::read_at(self.file, old, self.geom.offset(b))
                        .map_err(|e| Error::io(&self.image.data_path, e))?;
                    if !is_zero(old) {
                        undo.record(b, old)?;
                        self.changed_bytes += old.len() as u64;
                    }
                }
            }
            undo.sync()?;
        }
        fileio::punch_hole(self.file, start, end - start).map_err(|e| self.io(e))?;
        for b in first..first + count {
            self.written[b as usize] = Some(self.geom.zero_hash(b));
        }
        self.unsynced = true;
        self.applied(end - start);
        Ok(())
    }

    fn applied(&mut self, n: u64) {
        self.applied_bytes += n;
        // Test hook for the crash suite: die like kill -9 after this many bytes reached the target.
        if self.abort_after.is_some_and(|limit| self.applied_bytes >= limit) {
            std::process::abort();
        }
    }

    fn sync(&mut self) -> Result<()> {
        self.flush()?;
        if self.unsynced {
            self.file.sync_data().map_err(|e| self.io(e))?;
            self.unsynced = false;
        }
        Ok(())
    }
}

fn target_inner(dst: &Path, tx: &Arc<Mutex<Tx>>, rx: &mut wire::Rx, opts: &TargetOptions) -> Result<()> {
    let hello = match rx.recv()? {
        Frame::Hello(h) => h,
        f => return Err(Error::Protocol(format!("expected Hello, got {f:?}"))),
    };
    if hello.version != PROTOCOL_VERSION {
        return Err(Error::Protocol(format!(
            "the source speaks version {}, we speak {PROTOCOL_VERSION}",
            hello.version
        )));
    }
    if !opts.token.is_empty() && !constant_time_eq(hello.token.as_bytes(), opts.token.as_bytes()) {
        return Err(Error::Invalid("the source presented a wrong token".into()));
    }
    let image = if dst.exists() {
        DiskImage::open(dst)?
    } else {
        DiskImage::create(dst, Format::from_extension(dst), hello.size)?
    };
    if image.size != hello.size {
        return Err(Error::Invalid(format!(
            "{}: the target disk is {} bytes but the source is {}; create the target with the source's size",
            image.path.display(),
            image.size,
            hello.size
        )));
    }
    let geom = Geometry::new(hello.size, hello.block_size)?;
    let blocks = geom.blocks();
    let file = image.open_data_rw()?;
    let state = image.state_dir();
    std::fs::create_dir_all(&state).map_err(|e| Error::io(&state, e))?;
    let mut journal = Journal::open(&state.join("points"))?;
    let cursor_path = state.join("cursor.json");
    let table_path = state.join("target.hashes");
    let cursor: Option<Cursor> = std::fs::read(&cursor_path).ok().and_then(|b| serde_json::from_slice(&b).ok());
    let table = HashTable::load(&table_path, geom);
    let empty = journal.points().is_empty()
        && fileio::data_ranges(&file, image.size).map_err(|e| Error::io(&image.data_path, e))?.is_empty();
    send(
        tx,
        &Frame::Welcome(Welcome {
            version: PROTOCOL_VERSION,
            target_generation: table.as_ref().map_or(0, |t| t.generation),
            has_hashes: table.is_some(),
            empty,
            resume: cursor.as_ref().map(|c| (c.mode.name().to_owned(), c.next_block, c.source_generation)),
        }),
    )?;
    let start: Start = match rx.recv()? {
        Frame::Start(s) => s,
        f => return Err(Error::Protocol(format!("expected Start, got {f:?}"))),
    };
    let mode: Mode = start.mode.parse().map_err(Error::Protocol)?;
    let consistency: Consistency = start.consistency.parse().map_err(Error::Protocol)?;
    // From here on the bytes change: the table no longer describes them until the commit writes a new one, and an
    // interrupted cycle must be findable (a full copy resumes as a full copy even before its first checkpoint).
    if table.is_some() {
        // Durably gone before the first byte changes: after a power cut a stale table must not describe new bytes.
        std::fs::remove_file(&table_path).map_err(|e| Error::io(&table_path, e))?;
        fileio::sync_parent(&table_path).map_err(|e| Error::io(&table_path, e))?;
    }
    let write_cursor = |next_block: u64| -> Result<()> {
        let c =
            Cursor { mode, next_block, source_generation: start.source_generation, point_id: start.point_id.clone() };
        fileio::write_atomic(&cursor_path, &serde_json::to_vec(&c).unwrap()).map_err(|e| Error::io(&cursor_path, e))
    };
    // A cursor from the start on for a full copy (it resumes as one) and for a resumed cycle; a delta or an
    // incremental cycle from block 0 needs none until its first checkpoint: interrupted before it, the next cycle
    // starts from block 0 anyway (the hash table is gone, so a delta). A stale cursor is always replaced.
    if mode == Mode::Full || start.from_block > 0 || cursor_path.exists() {
        write_cursor(start.from_block)?;
    }

    // The hashes of the target's bytes that this cycle does not overwrite.
    let hasher = {
        let (tx, image, geom) = (tx.clone(), image.clone(), geom);
        let (mode, from_block) = (mode, start.from_block);
        let table = table.clone();
        std::thread::Builder::new()
            .name("replication-target-hasher".into())
            .spawn(move || -> Result<Vec<BlockHash>> {
                match mode {
                    Mode::Incremental => table
                        .map(|t| t.hashes)
                        .ok_or_else(|| Error::Protocol("incremental cycle but the target has no hash table".into())),
                    Mode::Delta | Mode::Full => {
                        let file = image.open_data_read()?;
                        let end = if mode == Mode::Delta { geom.blocks() } else { from_block.min(geom.blocks()) };
                        let mut out = Vec::with_capacity(end as usize);
                        let mut batch = Vec::with_capacity(HASH_BATCH);
                        let mut first = 0;
                        hashes::scan(&file, &image.data_path, geom, 0, end, |b, bytes| {
                            let h = bytes.map_or_else(|| geom.zero_hash(b), hash_block);
                            out.push(h);
                            if mode == Mode::Delta {
                                batch.push(h);
                                if batch.len() == HASH_BATCH {
                                    send(
                                        &tx,
                                        &Frame::Hashes { first_block: first, hashes: std::mem::take(&mut batch) },
                                    )?;
                                    first = b + 1;
                                }
                            }
                            Ok(())
                        })?;
                        if !batch.is_empty() {
                            send(&tx, &Frame::Hashes { first_block: first, hashes: batch })?;
                        }
                        Ok(out)
                    }
                    Mode::Auto => Err(Error::Protocol("the source must resolve auto".into())),
                }
            })
            .map_err(|e| Error::Protocol(format!("cannot start the hasher: {e}")))?
    };
    let mut hasher = Some(hasher);
    let mut join_hasher = || -> Result<Vec<BlockHash>> {
        match hasher.take() {
            Some(h) => h.join().unwrap_or_else(|_| Err(Error::Protocol("the hasher panicked".into()))),
            None => Err(Error::Protocol("hashes joined twice".into())),
        }
    };

    let mut ap = Applier {
        image: &image,
        file: &file,
        geom,
        undo: journal.begin_cycle()?,
        written: vec![None; blocks as usize],
        batch: Vec::new(),
        batch_bytes: 0,
        unsynced: false,
        changed_bytes: 0,
        applied_bytes: 0,
        abort_after: std::env::var("HOMEWARD_FAULT_ABORT_AFTER_BYTES").ok().and_then(|v| v.parse().ok()),
    };
    let result = (|| -> Result<()> {
        loop {
            match rx.recv()? {
                Frame::Data { block, bytes } => ap.push(block, bytes)?,
                Frame::Zero { first_block, count } => ap.zero(first_block, count)?,
                Frame::Mark { next_block } => {
                    ap.sync()?;
                    write_cursor(next_block)?;
                }
                Frame::Done { digest: theirs } => {
                    ap.sync()?;
                    let base = join_hasher()?;
                    let mut ours = Vec::with_capacity(blocks as usize);
                    for b in 0..blocks {
                        match ap.written[b as usize].or_else(|| base.get(b as usize).copied()) {
                            Some(h) => ours.push(h),
                            None => return Err(Error::Protocol(format!("block {b} was never sent in a full copy"))),
                        }
                    }
                    let digest = hashes::disk_digest(geom, &ours);
                    send(tx, &Frame::Verified { digest })?;
                    if digest != theirs {
                        let _ = std::fs::remove_file(&cursor_path);
                        return Err(Error::DigestMismatch {
                            source_digest: hashes::hex(&theirs),
                            target_digest: hashes::hex(&digest),
                        });
                    }
                    let generation = match rx.recv()? {
                        Frame::Commit { generation } => generation,
                        f => return Err(Error::Protocol(format!("expected Commit, got {f:?}"))),
                    };
                    // The table's new name is made durable with the cursor's removal, below.
                    HashTable { geom, generation, hashes: ours }.save_unsynced_name(&table_path)?;
                    let point = journal.commit_point(
                        PointInfo {
                            seq: 0,
                            id: start.point_id.clone(),
                            created_at_ms: start.created_at_ms,
                            consistency,
                            digest: hashes::hex(&digest),
                            block_size: geom.block_size,
                            changed_bytes: ap.changed_bytes,
                        },
                        opts.retention,
                        now_ms(),
                    )?;
                    // Durably: a cursor back from a power cut would resume a cycle that has committed. The same
                    // folder fsync makes the table's name durable (without it, the next cycle is a delta).
                    match std::fs::remove_file(&cursor_path) {
                        Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(Error::io(&cursor_path, e)),
                        _ => fileio::sync_parent(&cursor_path).map_err(|e| Error::io(&cursor_path, e))?,
                    }
                    if let Some(publish) = &opts.after_commit {
                        publish(dst).map_err(Error::Invalid)?;
                    }
                    send(tx, &Frame::Committed { point_json: serde_json::to_string(&point).unwrap() })?;
                    return Ok(());
                }
                f => return Err(Error::Protocol(format!("unexpected frame {f:?}"))),
            }
        }
    })();
    if result.is_err() {
        // Unblock and reap the hasher whatever state it is in.
        drop(ap);
        let _ = join_hasher();
    }
    result
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Syncs every disk of one VM in one cycle: all of them get the same recovery point id.
pub fn sync_vm(pairs: &[(&Path, &Path)], opts: &SyncOptions) -> Result<Vec<SyncReport>> {
    let mut opts = opts.clone();
    opts.point_id.get_or_insert_with(new_point_id);
    pairs.iter().map(|(s, d)| sync(s, d, &opts)).collect()
}

/// Receives one cycle over TCP on `listener` into `dst` (the target half in its own process).
pub fn receive_tcp(listener: &std::net::TcpListener, dst: &Path, opts: &TargetOptions) -> Result<()> {
    if opts.token.is_empty() {
        return Err(Error::Invalid("a TCP target needs a non-empty shared token".into()));
    }
    let (stream, _) = listener.accept().map_err(|e| Error::Protocol(format!("accept: {e}")))?;
    run_target(dst, wire::tcp(stream)?, opts)
}

/// Sends one cycle of `src` to a target half listening at `addr`.
pub fn send_tcp(src: &Path, addr: &str, opts: &SyncOptions) -> Result<SyncReport> {
    let image = DiskImage::open(src)?;
    let stream = std::net::TcpStream::connect(addr)
        .map_err(|e| Error::Protocol(format!("cannot connect to the target at {addr}: {e}")))?;
    run_source(&image, wire::tcp(stream)?, opts)
}

/// Bytes a delta from `src` to `dst` would send, found by hashing both (for a dry run's estimate). A missing or
/// differently sized target means a full copy of the source's allocated data.
pub fn estimate_changes(src: &Path, dst: &Path, block_size: u32) -> Result<u64> {
    let s = DiskImage::open(src)?;
    let geom = Geometry::new(s.size, block_size)?;
    let Ok(d) = DiskImage::open(dst) else { return s.allocated_bytes() };
    if d.size != s.size {
        return s.allocated_bytes();
    }
    let hashes_of = |img: &DiskImage| -> Result<Vec<BlockHash>> {
        let f = img.open_data_read()?;
        let mut out = Vec::with_capacity(geom.blocks() as usize);
        hashes::scan(&f, &img.data_path, geom, 0, geom.blocks(), |b, bytes| {
            out.push(bytes.map_or_else(|| geom.zero_hash(b), hash_block));
            Ok(())
        })?;
        Ok(out)
    };
    let (a, b) = (hashes_of(&s)?, hashes_of(&d)?);
    Ok(a.iter().zip(&b).enumerate().filter(|(_, (x, y))| x != y).map(|(i, _)| geom.len(i as u64) as u64).sum())
}

/// Bytes a full copy of `src` would send: the blocks that hold allocated data (holes are never sent). Reads no data.
pub fn estimate_full(src: &Path, block_size: u32) -> Result<u64> {
    let s = DiskImage::open(src)?;
    let geom = Geometry::new(s.size, block_size)?;
    let f = s.open_data_read()?;
    let ranges = fileio::data_ranges(&f, s.size).map_err(|e| Error::io(&s.data_path, e))?;
    let bs = block_size as u64;
    let mut blocks = std::collections::BTreeSet::new();
    for (start, end) in ranges {
        blocks.extend(start / bs..end.div_ceil(bs));
    }
    Ok(blocks.into_iter().filter(|b| *b < geom.blocks()).map(|b| geom.len(b) as u64).sum())
}
