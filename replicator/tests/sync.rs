//! Property tests of the sync modes and recovery points: random images (raw, VMDK, VHD), random change sets and
//! random block sizes; every mode must leave a byte-identical target, and every restore must equal the source as
//! it was at that point.

mod common;

use common::*;
use replicator::journal::Journal;
use replicator::workload::{GuestWriter, Pattern, Rng};
use replicator::{Consistency, DiskImage, Mode, Retention, SyncOptions};

fn opts(mode: Mode, block_size: u32) -> SyncOptions {
    SyncOptions { mode, block_size, chunk_bytes: 256 << 10, ..SyncOptions::default() }
}

#[test]
fn every_mode_yields_a_byte_identical_target_and_every_point_restores_exactly() {
    for seed in 0..seeds(12, 60) {
        let mut rng = Rng::new(seed);
        let dir = tempfile::tempdir().unwrap();
        let size = (1 + rng.below(6)) << 20;
        let block_size = 512 * (1 + rng.below(128)) as u32;
        let (sf, tf) = (random_format(&mut rng), random_format(&mut rng));
        let src_path = dir.path().join(format!("src.{}", ext(sf)));
        let dst_path = dir.path().join(format!("dst.{}", ext(tf)));
        let src = DiskImage::create(&src_path, sf, size).unwrap();
        let runs = 1 + rng.below(20) as usize;
        scribble(&src, &mut rng, runs);

        let first = [Mode::Auto, Mode::Full, Mode::Delta][rng.below(3) as usize];
        let r = replicator::sync::sync(&src_path, &dst_path, &opts(first, block_size)).unwrap();
        assert_eq!(bytes(&src_path), bytes(&dst_path), "seed {seed}: first cycle ({first} → {})", r.mode);
        if first == Mode::Auto {
            assert_eq!(r.mode, Mode::Full, "auto copies in full to a new, empty target");
        }
        let mut snapshots = vec![(r.point.seq, bytes(&src_path))];

        for cycle in 0..3 {
            let mut w = GuestWriter::open(
                &src,
                block_size,
                Pattern::HotSpot { hot_fraction: 0.1, hot_share: 0.8 },
                seed * 10 + cycle,
            )
            .unwrap();
            w.step(rng.below(64 << 10) + 4096).unwrap();
            if rng.below(3) == 0 {
                // Changes the change tracking does not see must still be found by delta.
                drop(w);
                scribble(&src, &mut rng, 2);
                let mode = [Mode::Delta, Mode::Full][rng.below(2) as usize];
                let r = replicator::sync::sync(&src_path, &dst_path, &opts(mode, block_size)).unwrap();
                assert_eq!(r.mode, mode);
                snapshots.push((r.point.seq, bytes(&src_path)));
            } else {
                w.pause().unwrap();
                drop(w);
                let mode = [Mode::Auto, Mode::Incremental, Mode::Delta][rng.below(3) as usize];
                let r = replicator::sync::sync(&src_path, &dst_path, &opts(mode, block_size)).unwrap();
                if mode != Mode::Delta {
                    assert_eq!(r.mode, Mode::Incremental, "seed {seed}: tracked changes allow incremental");
                }
                snapshots.push((r.point.seq, bytes(&src_path)));
            }
            assert_eq!(bytes(&src_path), bytes(&dst_path), "seed {seed} cycle {cycle}");
        }

        let dst = DiskImage::open(&dst_path).unwrap();
        let journal = Journal::open(&dst.state_dir().join("points")).unwrap();
        assert_eq!(journal.points().len(), snapshots.len());
        for (seq, expected) in &snapshots {
            let out = dir.path().join(format!("restore-{seq}.img"));
            journal.restore(&dst, *seq, &out).unwrap();
            assert!(bytes(&out) == *expected, "seed {seed}: point {seq} restored to different bytes");
        }
    }
}

#[test]
fn restore_is_exact_after_older_points_are_pruned() {
    let dir = tempfile::tempdir().unwrap();
    let (s, d) = (dir.path().join("s.vmdk"), dir.path().join("d.vhd"));
    let src = DiskImage::create(&s, replicator::Format::Vmdk, 4 << 20).unwrap();
    let mut rng = Rng::new(7);
    scribble(&src, &mut rng, 10);
    let mut o = opts(Mode::Auto, 4096);
    o.retention = Retention { max_points: Some(3), max_age_ms: None };
    let mut snaps = Vec::new();
    for i in 0..6 {
        let mut w = GuestWriter::open(&src, 4096, Pattern::SequentialLog { buffered: 2 }, i).unwrap();
        w.step(40 << 10).unwrap();
        w.quiesce().unwrap();
        drop(w);
        o.consistency = if i % 2 == 0 { Consistency::AppConsistent } else { Consistency::CrashConsistent };
        let r = replicator::sync::sync(&s, &d, &o).unwrap();
        snaps.push((r.point.seq, bytes(&s)));
    }
    let dst = DiskImage::open(&d).unwrap();
    let j = Journal::open(&dst.state_dir().join("points")).unwrap();
    let kept: Vec<u64> = j.points().iter().map(|p| p.seq).collect();
    assert_eq!(kept, vec![4, 5, 6]);
    // Cycles alternate app- (even) and crash-consistent (odd); point 4 came from cycle 3.
    assert_eq!(j.points()[0].consistency, Consistency::CrashConsistent);
    assert_eq!(j.points()[1].consistency, Consistency::AppConsistent);
    for (seq, expected) in snaps.iter().filter(|(s, _)| kept.contains(s)) {
        let out = dir.path().join(format!("r{seq}.vmdk"));
        j.restore(&dst, *seq, &out).unwrap();
        assert!(bytes(&out) == *expected, "point {seq}");
    }
    let e = j.restore(&dst, 1, &dir.path().join("gone.img")).unwrap_err();
    assert!(e.to_string().contains("no recovery point 1"), "{e}");
    assert!(!dir.path().join("gone.img").exists(), "a refused restore leaves no file behind");
}

#[test]
fn incremental_falls_back_to_delta_after_an_unclean_writer_stop() {
    let dir = tempfile::tempdir().unwrap();
    let (s, d) = (dir.path().join("s.img"), dir.path().join("d.img"));
    let src = DiskImage::create(&s, replicator::Format::Raw, 2 << 20).unwrap();
    scribble(&src, &mut Rng::new(1), 5);
    replicator::sync::sync(&s, &d, &opts(Mode::Full, 4096)).unwrap();
    let mut w = GuestWriter::open(&src, 4096, Pattern::HotSpot { hot_fraction: 0.5, hot_share: 0.5 }, 3).unwrap();
    w.step(64 << 10).unwrap();
    w.crash(); // the guest dies: no clean flush of its bitmap
    let r = replicator::sync::sync(&s, &d, &opts(Mode::Incremental, 4096)).unwrap();
    assert_eq!(r.mode, Mode::Delta);
    assert!(r.fallback.as_deref().unwrap_or("").contains("untrusted"), "{:?}", r.fallback);
    assert_eq!(bytes(&s), bytes(&d));
    // The delta cycle re-established trust: the next one is incremental again.
    let mut w = GuestWriter::open(&src, 4096, Pattern::HotSpot { hot_fraction: 0.5, hot_share: 0.5 }, 4).unwrap();
    w.step(16 << 10).unwrap();
    drop(w);
    let r = replicator::sync::sync(&s, &d, &opts(Mode::Incremental, 4096)).unwrap();
    assert_eq!(r.mode, Mode::Incremental);
    assert!(r.data_bytes <= (16 << 10) + 4096 * 4, "only dirty blocks travel: {}", r.data_bytes);
    assert_eq!(bytes(&s), bytes(&d));
}

#[test]
fn full_copy_sends_only_allocated_data_and_leaves_holes() {
    let dir = tempfile::tempdir().unwrap();
    let (s, d) = (dir.path().join("s.img"), dir.path().join("d.vhd"));
    let src = DiskImage::create(&s, replicator::Format::Raw, 64 << 20).unwrap();
    let f = src.open_data_rw().unwrap();
    replicator::fileio::write_at(&f, &vec![0xabu8; 1 << 20], 8 << 20).unwrap();
    replicator::fileio::write_at(&f, &vec![0u8; 4 << 20], 20 << 20).unwrap(); // allocated zeros
    let r = replicator::sync::sync(&s, &d, &opts(Mode::Full, 65536)).unwrap();
    assert_eq!(r.data_bytes, 1 << 20, "zeros and holes are not sent as data");
    assert!(r.bytes_sent < (1 << 20) + (64 << 10), "wire bytes {}", r.bytes_sent);
    let dst = DiskImage::open(&d).unwrap();
    assert!(dst.allocated_bytes().unwrap() < 2 << 20, "target stays sparse: {}", dst.allocated_bytes().unwrap());
    assert_eq!(bytes(&s), bytes(&d));
}

#[test]
fn delta_sends_only_changed_blocks_and_reports_its_figures() {
    let dir = tempfile::tempdir().unwrap();
    let (s, d) = (dir.path().join("s.img"), dir.path().join("d.img"));
    let src = DiskImage::create(&s, replicator::Format::Raw, 16 << 20).unwrap();
    let mut rng = Rng::new(5);
    let f = src.open_data_rw().unwrap();
    let mut all = vec![0u8; 16 << 20];
    rng.fill(&mut all);
    replicator::fileio::write_at(&f, &all, 0).unwrap();
    std::fs::copy(&s, &d).unwrap(); // an existing original disk (original-location recovery)
    for b in [3u64, 100, 101, 200] {
        replicator::fileio::write_at(&f, &[0x55u8; 10], b * 65536 + 7).unwrap();
    }
    let r = replicator::sync::sync(&s, &d, &opts(Mode::Auto, 65536)).unwrap();
    assert_eq!(r.mode, Mode::Delta, "an existing target with data gets a delta");
    assert_eq!((r.blocks_changed, r.data_bytes), (4, 4 * 65536));
    assert!(r.bytes_sent <= 4 * 65536 * 102 / 100, "wire overhead: {}", r.bytes_sent);
    assert_eq!(bytes(&s), bytes(&d));
}

#[test]
fn all_disks_of_a_vm_share_each_point() {
    let dir = tempfile::tempdir().unwrap();
    let mut pairs = Vec::new();
    for i in 0..3 {
        let s = dir.path().join(format!("s{i}.vmdk"));
        let src = DiskImage::create(&s, replicator::Format::Vmdk, 2 << 20).unwrap();
        scribble(&src, &mut Rng::new(i), 3);
        pairs.push((s, dir.path().join(format!("d{i}.vhd"))));
    }
    let refs: Vec<(&std::path::Path, &std::path::Path)> =
        pairs.iter().map(|(a, b)| (a.as_path(), b.as_path())).collect();
    let reports = replicator::sync::sync_vm(&refs, &opts(Mode::Auto, 65536)).unwrap();
    let ids: std::collections::HashSet<_> = reports.iter().map(|r| r.point.id.clone()).collect();
    assert_eq!(ids.len(), 1, "one point id across the VM's disks");
}

#[test]
fn throttle_caps_the_rate_and_progress_reaches_the_total() {
    use std::sync::{Arc, Mutex};
    let dir = tempfile::tempdir().unwrap();
    let (s, d) = (dir.path().join("s.img"), dir.path().join("d.img"));
    let src = DiskImage::create(&s, replicator::Format::Raw, 2 << 20).unwrap();
    let mut all = vec![0u8; 2 << 20];
    Rng::new(9).fill(&mut all);
    replicator::fileio::write_at(&src.open_data_rw().unwrap(), &all, 0).unwrap();
    let events = Arc::new(Mutex::new(Vec::new()));
    let ev = events.clone();
    let mut o = opts(Mode::Full, 65536);
    o.bandwidth = Some(4 << 20); // 2 MiB at 4 MiB/s: at least half a second
    o.progress = Some(Arc::new(move |p: &replicator::Progress| ev.lock().unwrap().push((p.done, p.total))));
    let t = std::time::Instant::now();
    replicator::sync::sync(&s, &d, &o).unwrap();
    assert!(t.elapsed().as_secs_f64() >= 0.45, "throttle not applied: {:?}", t.elapsed());
    let ev = events.lock().unwrap();
    assert_eq!(ev.last().copied(), Some((2 << 20, 2 << 20)));
    assert!(ev.windows(2).all(|w| w[0].0 <= w[1].0), "progress never goes back");
}

#[test]
fn a_target_of_another_size_is_refused_and_left_untouched() {
    let dir = tempfile::tempdir().unwrap();
    let (s, d) = (dir.path().join("s.img"), dir.path().join("d.img"));
    DiskImage::create(&s, replicator::Format::Raw, 2 << 20).unwrap();
    DiskImage::create(&d, replicator::Format::Raw, 4 << 20).unwrap();
    let e = replicator::sync::sync(&s, &d, &opts(Mode::Auto, 65536)).unwrap_err();
    assert!(e.to_string().contains("source's size"), "{e}");
    assert_eq!(std::fs::metadata(&d).unwrap().len(), 4 << 20);
}
