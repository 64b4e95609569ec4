//! `homeward disk bench`: our delta, full and incremental syncs timed side by side, in one run, against
//! `rsync --inplace --no-whole-file -B 65536`, `cp`, and the read floor `cat SRC DST > /dev/null`. Each of ours runs
//! as its own `homeward disk sync` process, like the baselines, so process start-up is in every figure and the
//! peak RSS is the sync's own.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Instant;

use serde::Serialize;

use crate::fileio;
use crate::image::{DiskImage, Format};
use crate::workload::{GuestWriter, Pattern, Rng};
use crate::{human_bytes, Error, Result};

const BLOCK: u64 = 64 << 10;

pub struct BenchOptions {
    pub size: u64,
    pub rounds: usize,
    pub dir: Option<PathBuf>,
    /// The `homeward` binary whose `disk sync` is measured.
    pub homeward: PathBuf,
}

/// The one JSON line of `--json`; times are medians in seconds.
#[derive(Clone, Debug, Serialize)]
pub struct BenchSummary {
    pub size: u64,
    pub rounds: usize,
    pub block_size: u64,
    pub changed_bytes: u64,
    pub delta_s: f64,
    pub rsync_s: f64,
    pub floor_s: f64,
    pub full_s: f64,
    pub cp_s: f64,
    /// cp followed by an fdatasync of the copy: the durable baseline (our full copy is durable).
    pub cp_durable_s: f64,
    pub incremental_s: f64,
    pub sparse_full_s: f64,
    /// rsync time / our delta time.
    pub delta_vs_rsync: f64,
    /// our delta / read floor.
    pub delta_vs_floor: f64,
    /// our full / cp.
    pub full_vs_cp: f64,
    /// our full / (cp + fdatasync).
    pub full_vs_durable_cp: f64,
    /// our incremental / our delta.
    pub incremental_vs_delta: f64,
    /// full copy of an 8× larger sparse image holding the same data / full copy of the dense image.
    pub sparse_vs_dense: f64,
    /// bytes sent source → target by delta / changed bytes.
    pub wire_overhead: f64,
    /// bytes sent target → source by delta (the hash list and replies).
    pub hash_bytes: u64,
    pub peak_rss_mib: f64,
}

pub struct BenchReport {
    pub summary: BenchSummary,
}

struct Timed {
    secs: f64,
    stdout: String,
    max_rss: u64,
}

/// Writes back every dirty page first, so a measured step never pays for the previous step's writes.
fn settle() {
    // SAFETY: sync(2) has no arguments and cannot fail.
    unsafe { libc::sync() };
}

fn run_timed(cmd: &mut Command, what: &str) -> Result<Timed> {
    settle();
    let start = Instant::now();
    let mut child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| Error::Invalid(format!("cannot run {what}: {e}")))?;
    let mut stdout = String::new();
    let mut stderr = String::new();
    let _ = child.stdout.take().unwrap().read_to_string(&mut stdout);
    let _ = child.stderr.take().unwrap().read_to_string(&mut stderr);
    let mut status = 0;
    // SAFETY: wait4 on our own child's pid, with structs we own; std's Child is not waited on afterwards.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    let rc = unsafe { libc::wait4(child.id() as libc::pid_t, &mut status, 0, &mut ru) };
    let secs = start.elapsed().as_secs_f64();
    if rc < 0 {
        return Err(Error::Invalid(format!("waiting for {what}: {}", std::io::Error::last_os_error())));
    }
    if !(libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0) {
        return Err(Error::Invalid(format!("{what} failed (status {status}): {}", stderr.trim())));
    }
    Ok(Timed { secs, stdout, max_rss: ru.ru_maxrss as u64 * 1024 })
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    v[v.len() / 2]
}

struct Cleanup(PathBuf);
impl Drop for Cleanup {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn remove_image(p: &Path) {
    let _ = std::fs::remove_file(p);
    let mut state = p.as_os_str().to_owned();
    state.push(".homeward");
    let _ = std::fs::remove_dir_all(PathBuf::from(state));
}

fn now_secs() -> libc::time_t {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0) as libc::time_t
}

fn same_bytes(a: &Path, b: &Path) -> Result<bool> {
    let (fa, fb) =
        (std::fs::File::open(a).map_err(|e| Error::io(a, e))?, std::fs::File::open(b).map_err(|e| Error::io(b, e))?);
    let (la, lb) =
        (fa.metadata().map_err(|e| Error::io(a, e))?.len(), fb.metadata().map_err(|e| Error::io(b, e))?.len());
    if la != lb {
        return Ok(false);
    }
    let (mut ba, mut bb) = (vec![0u8; 4 << 20], vec![0u8; 4 << 20]);
    let mut at = 0;
    while at < la {
        let n = ((la - at) as usize).min(ba.len());
        fileio::read_at(&fa, &mut ba[..n], at).map_err(|e| Error::io(a, e))?;
        fileio::read_at(&fb, &mut bb[..n], at).map_err(|e| Error::io(b, e))?;
        if ba[..n] != bb[..n] {
            return Ok(false);
        }
        at += n as u64;
    }
    Ok(true)
}

pub fn run(opts: &BenchOptions, mut out: impl FnMut(&str)) -> Result<BenchReport> {
    for tool in ["rsync", "cp", "cat"] {
        if Command::new(tool).arg("--version").stdout(Stdio::null()).stderr(Stdio::null()).status().is_err() {
            return Err(Error::Invalid(format!("{tool} is not installed; ./x setup installs it")));
        }
    }
    let size = opts.size.div_ceil(BLOCK) * BLOCK;
    if size < 4 * BLOCK {
        return Err(Error::Invalid("the benchmark needs at least 256 KiB".into()));
    }
    let dir =
        opts.dir.clone().unwrap_or_else(std::env::temp_dir).join(format!("homeward-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir).map_err(|e| Error::io(&dir, e))?;
    let _cleanup = Cleanup(dir.clone());
    let p = |n: &str| dir.join(n);
    let (src, inc, delta, rs, full, cpd, src8, full8) = (
        p("src.img"),
        p("inc.img"),
        p("delta.img"),
        p("rsync.img"),
        p("full.img"),
        p("cp.img"),
        p("src8.img"),
        p("full8.img"),
    );

    out(&format!("preparing a {} image of random data and an 8× sparse one holding the same data…", human_bytes(size)));
    let s = DiskImage::create(&src, Format::Raw, size)?;
    let s8 = DiskImage::create(&src8, Format::Raw, size * 8)?;
    {
        let (f, f8) = (s.open_data_rw()?, s8.open_data_rw()?);
        let mut rng = Rng::new(0x5eed);
        let mut buf = vec![0u8; 4 << 20];
        let mut at = 0;
        while at < size {
            let n = ((size - at) as usize).min(buf.len());
            rng.fill(&mut buf[..n]);
            fileio::write_at(&f, &buf[..n], at).map_err(|e| Error::io(&src, e))?;
            fileio::write_at(&f8, &buf[..n], size * 3 + at).map_err(|e| Error::io(&src8, e))?;
            at += n as u64;
        }
        f.sync_all().map_err(|e| Error::io(&src, e))?;
        f8.sync_all().map_err(|e| Error::io(&src8, e))?;
    }
    let hw = |args: &[&str]| {
        let mut c = Command::new(&opts.homeward);
        c.args(["disk", "sync", "--json"]).args(args);
        c
    };
    // The replication target the source's change tracking follows.
    run_timed(hw(&["--mode", "full"]).arg(&src).arg(&inc), "initial sync")?;

    let blocks = size / BLOCK;
    let changes = (blocks / 100).max(1);
    let changed_bytes = changes * BLOCK;
    let (mut t_delta, mut t_rsync, mut t_floor, mut t_full, mut t_cp, mut t_inc, mut t_sparse) =
        (vec![], vec![], vec![], vec![], vec![], vec![], vec![]);
    let mut t_cp_durable = vec![];
    let (mut sent, mut back, mut peak) = (0u64, 0u64, 0u64);
    for round in 0..opts.rounds {
        // Both delta targets start as the replica, then 1 % of the source's 64 KiB blocks change.
        for t in [&delta, &rs] {
            remove_image(t);
            std::fs::copy(&inc, t).map_err(|e| Error::io(t, e))?;
            let f = std::fs::File::options().write(true).open(t).map_err(|e| Error::io(t, e))?;
            // Untimed: the copy's dirty pages must not be charged to the measured sync's fdatasync.
            f.sync_all().map_err(|e| Error::io(t, e))?;
            // The replica is older than the source, as in life; an equal mtime (same second) would make rsync's
            // quick check skip the file and time nothing.
            let an_hour_ago = libc::timespec { tv_sec: now_secs() - 3600, tv_nsec: 0 };
            let times = [an_hour_ago, an_hour_ago];
            // SAFETY: futimens on an fd we own with a valid array of two timespecs.
            if unsafe { libc::futimens(std::os::unix::io::AsRawFd::as_raw_fd(&f), times.as_ptr()) } != 0 {
                return Err(Error::io(t, std::io::Error::last_os_error()));
            }
        }
        {
            let mut w = GuestWriter::open(&s, BLOCK as u32, Pattern::HotSpot { hot_fraction: 1.0, hot_share: 1.0 }, 0)?;
            let mut rng = Rng::new(round as u64 + 1);
            let mut picked = std::collections::HashSet::new();
            let mut buf = vec![0u8; BLOCK as usize];
            while (picked.len() as u64) < changes {
                let b = rng.below(blocks);
                if picked.insert(b) {
                    rng.fill(&mut buf);
                    w.write_at(b * BLOCK, &buf)?;
                }
            }
            w.pause()?;
        }
        let r = run_timed(hw(&["--mode", "incremental"]).arg(&src).arg(&inc), "our incremental sync")?;
        let report: serde_json::Value = serde_json::from_str(&r.stdout).map_err(|e| Error::Invalid(e.to_string()))?;
        if report["mode"] != "incremental" {
            return Err(Error::Invalid(format!("the incremental cycle ran as {}: benchmark invalid", report["mode"])));
        }
        t_inc.push(r.secs);
        peak = peak.max(r.max_rss);

        let r = run_timed(hw(&["--mode", "delta", "--no-track"]).arg(&src).arg(&delta), "our delta sync")?;
        let report: serde_json::Value = serde_json::from_str(&r.stdout).map_err(|e| Error::Invalid(e.to_string()))?;
        sent = report["bytes_sent"].as_u64().unwrap_or(0);
        back = report["bytes_received"].as_u64().unwrap_or(0);
        t_delta.push(r.secs);
        peak = peak.max(r.max_rss);

        let r = run_timed(
            Command::new("rsync").args(["--inplace", "--no-whole-file", "-B", "65536"]).arg(&src).arg(&rs),
            "rsync",
        )?;
        t_rsync.push(r.secs);
        if !same_bytes(&src, &rs)? {
            return Err(Error::Invalid("rsync left a target that differs from the source: baseline invalid".into()));
        }
        if !same_bytes(&src, &delta)? {
            return Err(Error::Invalid("our delta left a target that differs from the source".into()));
        }

        let devnull = std::fs::File::create("/dev/null").map_err(|e| Error::io(Path::new("/dev/null"), e))?;
        settle();
        let start = Instant::now();
        let st = Command::new("cat").arg(&src).arg(&delta).stdout(devnull).status();
        if !st.is_ok_and(|s| s.success()) {
            return Err(Error::Invalid("cat failed".into()));
        }
        t_floor.push(start.elapsed().as_secs_f64());

        remove_image(&full);
        let r = run_timed(hw(&["--mode", "full", "--no-track"]).arg(&src).arg(&full), "our full sync")?;
        t_full.push(r.secs);
        peak = peak.max(r.max_rss);

        let _ = std::fs::remove_file(&cpd);
        t_cp.push(run_timed(Command::new("cp").arg(&src).arg(&cpd), "cp")?.secs);
        let _ = std::fs::remove_file(&cpd);
        let cp_sync = r#"cp "$0" "$1" && sync "$1""#;
        t_cp_durable.push(run_timed(Command::new("sh").args(["-c", cp_sync]).arg(&src).arg(&cpd), "cp + sync")?.secs);

        remove_image(&full8);
        let r = run_timed(hw(&["--mode", "full", "--no-track"]).arg(&src8).arg(&full8), "our full sync (sparse)")?;
        t_sparse.push(r.secs);
        peak = peak.max(r.max_rss);
        out(&format!(
            "round {}: delta {:.3}s  rsync {:.3}s  floor {:.3}s  full {:.3}s  cp {:.3}s  incremental {:.3}s  sparse 8× {:.3}s",
            round + 1,
            t_delta[round],
            t_rsync[round],
            t_floor[round],
            t_full[round],
            t_cp[round],
            t_inc[round],
            t_sparse[round]
        ));
    }
    let (delta_s, rsync_s, floor_s, full_s, cp_s, incremental_s, sparse_full_s) = (
        median(&mut t_delta),
        median(&mut t_rsync),
        median(&mut t_floor),
        median(&mut t_full),
        median(&mut t_cp),
        median(&mut t_inc),
        median(&mut t_sparse),
    );
    let cp_durable_s = median(&mut t_cp_durable);
    let summary = BenchSummary {
        size,
        rounds: opts.rounds,
        block_size: BLOCK,
        changed_bytes,
        delta_s,
        rsync_s,
        floor_s,
        full_s,
        cp_s,
        cp_durable_s,
        incremental_s,
        sparse_full_s,
        delta_vs_rsync: rsync_s / delta_s,
        delta_vs_floor: delta_s / floor_s,
        full_vs_cp: full_s / cp_s,
        full_vs_durable_cp: full_s / cp_durable_s,
        incremental_vs_delta: incremental_s / delta_s,
        sparse_vs_dense: sparse_full_s / full_s,
        wire_overhead: sent as f64 / changed_bytes as f64,
        hash_bytes: back,
        peak_rss_mib: peak as f64 / (1 << 20) as f64,
    };
    let verdict = |ok: bool| if ok { "target met" } else { "TARGET MISSED" };
    let s = &summary;
    out("");
    out(&format!(
        "{} image, 1 % of 64 KiB blocks changed ({}), medians of {} rounds",
        human_bytes(size),
        human_bytes(changed_bytes),
        s.rounds
    ));
    out(&format!("  our delta        {:>8.3} s", s.delta_s));
    out(&format!(
        "  rsync            {:>8.3} s   delta is {:.2}× faster (≥ 3: {})",
        s.rsync_s,
        s.delta_vs_rsync,
        verdict(s.delta_vs_rsync >= 3.0)
    ));
    out(&format!(
        "  read floor (cat) {:>8.3} s   delta is {:.2}× the floor (≤ 1.5: {})",
        s.floor_s,
        s.delta_vs_floor,
        verdict(s.delta_vs_floor <= 1.5)
    ));
    out(&format!("  our full         {:>8.3} s", s.full_s));
    // The goal is against a durable copy: ours is one (pwrite → fdatasync → cursor); plain cp leaves its bytes in
    // the page cache, so it is shown for scale only.
    out(&format!("  cp               {:>8.3} s   full is {:.2}× cp (not durable: for scale)", s.cp_s, s.full_vs_cp));
    out(&format!(
        "  cp + fdatasync   {:>8.3} s   full is {:.2}× the durable copy (≤ 1.1: {})",
        s.cp_durable_s,
        s.full_vs_durable_cp,
        verdict(s.full_vs_durable_cp <= 1.1)
    ));
    out(&format!(
        "  our incremental  {:>8.3} s   {:.3}× delta (≤ 0.1: {})",
        s.incremental_s,
        s.incremental_vs_delta,
        verdict(s.incremental_vs_delta <= 0.1)
    ));
    out(&format!("  full, 8× sparse  {:>8.3} s   {:.2}× the dense full copy", s.sparse_full_s, s.sparse_vs_dense));
    out(&format!(
        "  wire: delta sent {} for {} changed ({:.4}×, ≤ 1.02: {}); hash list back {}",
        human_bytes(sent),
        human_bytes(changed_bytes),
        s.wire_overhead,
        verdict(s.wire_overhead <= 1.02),
        human_bytes(back)
    ));
    out(&format!("  peak RSS of our syncs {:.1} MiB (≤ 64: {})", s.peak_rss_mib, verdict(s.peak_rss_mib <= 64.0)));
    Ok(BenchReport { summary })
}
