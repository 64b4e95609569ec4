//! `homeward disk …` end to end: the exact command forms, images that qemu-img recognises and compares, one-line
//! errors for bad images, a cycle between two processes over TCP, and the crash suite (a sync process killed at
//! random points, then resumed: identical bytes, at most one chunk sent again).

use crate::common;
use std::path::Path;
use std::process::{Command, Output};

use common::{run_homeward, BIN};

fn ok(out: Output) -> String {
    assert!(
        out.status.success(),
        "status {:?}\nstdout: {}\nstderr: {}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

fn hw(args: &[&str]) -> String {
    ok(run_homeward(args))
}

fn p(path: &Path) -> &str {
    path.to_str().unwrap()
}

fn qemu_img(args: &[&str]) -> Output {
    Command::new("qemu-img").args(args).output().expect("qemu-img not found: ./x setup installs qemu-utils")
}

/// Writes `len` pseudo-random bytes at `offset` of an image's data file (no change tracking: a foreign writer).
fn poke(data_file: &Path, offset: u64, len: usize, seed: u64) {
    use std::os::unix::fs::FileExt;
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let buf: Vec<u8> = (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect();
    std::fs::OpenOptions::new().write(true).open(data_file).unwrap().write_all_at(&buf, offset).unwrap();
}

#[test]
fn images_of_each_format_are_recognised_by_qemu_img_and_compare_equal_after_a_sync() {
    let dir = tempfile::tempdir().unwrap();
    let (raw, vmdk, vhd) = (dir.path().join("a.img"), dir.path().join("web01.vmdk"), dir.path().join("web01.vhd"));
    hw(&["disk", "create", "--format", "raw", "--size", "8M", p(&raw)]);
    hw(&["disk", "create", "--format", "vmdk", "--size", "8M", p(&vmdk)]);
    hw(&["disk", "create", "--format", "vhd", "--size", "8M", p(&vhd)]);
    // A fixed VHD starts with raw data, so qemu cannot probe it: name the format, as Azure tooling does.
    for (path, fmt) in [(&raw, "raw"), (&vmdk, "vmdk"), (&vhd, "vpc")] {
        let out = qemu_img(&["info", "--output=json", "-f", fmt, p(path)]);
        let info: serde_json::Value = serde_json::from_slice(&ok(out).into_bytes()).unwrap();
        assert_eq!(info["virtual-size"], 8 << 20, "{fmt}: {info}");
        assert_eq!(info["format"], fmt);
    }
    let info = ok(qemu_img(&["info", "--output=json", p(&vmdk)]));
    assert!(info.contains("\"format\": \"vmdk\""), "qemu probes the descriptor as vmdk: {info}");
    assert!(info.contains("monolithicFlat"), "{info}");

    poke(&dir.path().join("web01-flat.vmdk"), 100_000, 300_000, 1);
    poke(&dir.path().join("web01-flat.vmdk"), 7 << 20, 4096, 2);
    let out = hw(&["disk", "sync", "--mode", "full", p(&vmdk), p(&vhd)]);
    assert!(out.contains("full"), "{out}");
    ok(qemu_img(&["compare", "-f", "vmdk", "-F", "vpc", p(&vmdk), p(&vhd)]));
    // And a difference is seen, so the comparison above means something.
    poke(&dir.path().join("web01-flat.vmdk"), 5 << 20, 512, 3);
    assert_eq!(qemu_img(&["compare", "-q", "-f", "vmdk", "-F", "vpc", p(&vmdk), p(&vhd)]).status.code(), Some(1));
    hw(&["disk", "sync", "--mode", "delta", p(&vmdk), p(&vhd)]);
    ok(qemu_img(&["compare", "-f", "vmdk", "-F", "vpc", p(&vmdk), p(&vhd)]));
    hw(&["disk", "sync", p(&vhd), p(&raw)]);
    ok(qemu_img(&["compare", "-f", "vpc", "-F", "raw", p(&vhd), p(&raw)]));
    // The VHD's footer is intact after the syncs wrote up to it.
    let info: serde_json::Value =
        serde_json::from_str(&ok(qemu_img(&["info", "--output=json", "-f", "vpc", p(&vhd)]))).unwrap();
    assert_eq!(info["virtual-size"], 8 << 20);
    assert!(hw(&["disk", "info", p(&vhd)]).contains("vhd (fixed)"));
}

fn assert_refused(args: &[&str], needle: &str) {
    let out = run_homeward(args);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{args:?}: {stderr}");
    let lines: Vec<_> = stderr.lines().filter(|l| !l.trim().is_empty()).collect();
    assert_eq!(lines.len(), 1, "one line: {stderr}");
    assert!(lines[0].contains(needle), "{args:?}: {stderr}");
    assert!(!stderr.contains("panicked"));
}

#[test]
fn damaged_images_are_refused_with_the_file_and_the_problem() {
    let dir = tempfile::tempdir().unwrap();
    let vhd = dir.path().join("c.vhd");
    hw(&["disk", "create", "--format", "vhd", "--size", "2M", p(&vhd)]);
    let good = std::fs::read(&vhd).unwrap();

    std::fs::write(&vhd, &good[..good.len() - 100]).unwrap();
    assert_refused(&["disk", "info", p(&vhd)], "no VHD footer");
    let mut bad = good.clone();
    let n = bad.len();
    bad[n - 512 + 50] ^= 0xff; // inside the footer's size field
    std::fs::write(&vhd, &bad).unwrap();
    assert_refused(&["disk", "info", p(&vhd)], "checksum");
    let mut grown = good.clone();
    grown.splice(0..0, vec![0u8; 512]);
    std::fs::write(&vhd, &grown).unwrap();
    assert_refused(&["disk", "info", p(&vhd)], "size mismatch");

    let vmdk = dir.path().join("d.vmdk");
    hw(&["disk", "create", "--format", "vmdk", "--size", "1M", p(&vmdk)]);
    std::fs::OpenOptions::new().write(true).open(dir.path().join("d-flat.vmdk")).unwrap().set_len(4096).unwrap();
    assert_refused(&["disk", "info", p(&vmdk)], "size mismatch");
    std::fs::remove_file(dir.path().join("d-flat.vmdk")).unwrap();
    assert_refused(&["disk", "info", p(&vmdk)], "d-flat.vmdk");
    std::fs::write(&vmdk, "# Disk DescriptorFile\ncreateType=\"streamOptimized\"\n").unwrap();
    assert_refused(&["disk", "info", p(&vmdk)], "streamOptimized");

    let raw = dir.path().join("odd.img");
    std::fs::write(&raw, vec![1u8; 1000]).unwrap();
    assert_refused(&["disk", "info", p(&raw)], "multiple of 512");
    assert_refused(&["disk", "create", "--format", "vhd", "--size", "1536K", p(&dir.path().join("x.vhd"))], "MiB");
    let out = run_homeward(&["disk", "create", "--format", "qcow2", "--size", "1M", "x"]);
    assert_eq!(out.status.code(), Some(2), "an unknown format is a usage error");
    // A sync from a damaged source changes nothing on the target.
    let dst = dir.path().join("dst.img");
    hw(&["disk", "create", "--format", "raw", "--size", "1M", p(&dst)]);
    assert_refused(&["disk", "sync", p(&raw), p(&dst)], "odd.img");
    assert!(!dir.path().join("dst.img.homeward").exists());
}

#[test]
fn points_and_restore_on_the_command_line() {
    let dir = tempfile::tempdir().unwrap();
    let (s, d) = (dir.path().join("s.vmdk"), dir.path().join("d.vhd"));
    hw(&["disk", "create", "--format", "vmdk", "--size", "4M", p(&s)]);
    let flat = dir.path().join("s-flat.vmdk");
    poke(&flat, 0, 65536, 1);
    hw(&["disk", "sync", "--app-consistent", "--point-id", "before", p(&s), p(&d)]);
    let before = std::fs::read(&flat).unwrap();
    poke(&flat, 4096, 8192, 2);
    let out = hw(&["disk", "sync", p(&s), p(&d)]);
    assert!(out.contains("delta"), "untracked changes are found by delta: {out}");
    let points = hw(&["disk", "points", p(&d)]);
    assert!(points.contains("before") && points.contains("app-consistent") && points.contains("crash-consistent"));
    let json: serde_json::Value = serde_json::from_str(&hw(&["disk", "points", "--json", p(&d)])).unwrap();
    assert_eq!(json.as_array().unwrap().len(), 2);
    let out = dir.path().join("r.img");
    hw(&["disk", "restore", p(&d), "--point", "before", "--to", p(&out)]);
    assert!(std::fs::read(&out).unwrap() == before);
    assert_refused(
        &["disk", "restore", p(&d), "--point", "9", "--to", p(&dir.path().join("n.img"))],
        "no recovery point 9",
    );
}

#[test]
fn a_cycle_between_two_processes_over_tcp_needs_the_shared_token() {
    use std::io::{BufRead, BufReader};
    let dir = tempfile::tempdir().unwrap();
    let (s, d, tok, bad) =
        (dir.path().join("s.img"), dir.path().join("d.vhd"), dir.path().join("token"), dir.path().join("bad"));
    hw(&["disk", "create", "--format", "raw", "--size", "4M", p(&s)]);
    poke(&s, 12345, 100_000, 7);
    std::fs::write(&tok, "s3cret\n").unwrap();
    std::fs::write(&bad, "guess\n").unwrap();
    let receive = |token: &Path| {
        let mut child = Command::new(BIN)
            .args(["disk", "receive", "--listen", "127.0.0.1:0", "--token-file", p(token), p(&d)])
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let mut line = String::new();
        BufReader::new(child.stdout.as_mut().unwrap()).read_line(&mut line).unwrap();
        let addr = line.trim().strip_prefix("receiving on ").unwrap().to_owned();
        (child, addr)
    };
    let (child, addr) = receive(&bad);
    let out = run_homeward(&["disk", "sync", "--token-file", p(&tok), p(&s), &format!("tcp://{addr}")]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("token"), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(!child.wait_with_output().unwrap().status.success());

    let (child, addr) = receive(&tok);
    let out = hw(&["disk", "sync", "--json", "--token-file", p(&tok), p(&s), &format!("tcp://{addr}")]);
    let r: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(r["mode"], "full");
    assert!(r["bytes_sent"].as_u64().unwrap() >= 100_000);
    assert!(child.wait_with_output().unwrap().status.success());
    ok(qemu_img(&["compare", "-f", "raw", "-F", "vpc", p(&s), p(&d)]));
}

#[test]
fn a_full_target_disk_is_an_error_and_loses_no_committed_point() {
    // A 6 MiB file system for an 8 MiB target: the copy cannot fit.
    let mnt = tempfile::tempdir().unwrap();
    let st = Command::new("mount").args(["-t", "tmpfs", "-o", "size=6m", "tmpfs", p(mnt.path())]).status().unwrap();
    assert!(st.success(), "mounting a small tmpfs needs root, which ./x test has");
    struct Unmount<'a>(&'a Path);
    impl Drop for Unmount<'_> {
        fn drop(&mut self) {
            let _ = Command::new("umount").arg(self.0).status();
        }
    }
    let _u = Unmount(mnt.path());
    let dir = tempfile::tempdir().unwrap();
    let s = dir.path().join("s.img");
    let d = mnt.path().join("d.img");
    hw(&["disk", "create", "--format", "raw", "--size", "8M", p(&s)]);
    poke(&s, 0, 1 << 20, 1);
    hw(&["disk", "sync", "--block-size", "4K", p(&s), p(&d)]);
    let committed = std::fs::read(&d).unwrap();
    poke(&s, 1 << 20, 7 << 20, 2); // now 8 MiB of data: more than the file system holds
    let out = run_homeward(&["disk", "sync", "--block-size", "4K", p(&s), p(&d)]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("no space left"), "{stderr}");
    // The committed point restores exactly, even though the failed cycle overwrote part of the disk.
    let points: serde_json::Value = serde_json::from_str(&hw(&["disk", "points", "--json", p(&d)])).unwrap();
    assert_eq!(points.as_array().unwrap().len(), 1);
    let r = dir.path().join("r.img");
    hw(&["disk", "restore", p(&d), "--point", "1", "--to", p(&r)]);
    assert!(std::fs::read(&r).unwrap() == committed);
}

/// Runs one sync that aborts (like kill -9) after `abort_after` bytes reached the target.
fn sync_killed_after(src: &Path, dst: &Path, mode: &str, abort_after: u64) -> Output {
    Command::new(BIN)
        .args(["disk", "sync", "--json", "--block-size", "4K", "--chunk-size", "256K", "--mode", mode, p(src), p(dst)])
        .env("HOMEWARD_FAULT_ABORT_AFTER_BYTES", abort_after.to_string())
        .output()
        .unwrap()
}

fn sync_json(src: &Path, dst: &Path) -> serde_json::Value {
    let out = hw(&["disk", "sync", "--json", "--block-size", "4K", "--chunk-size", "256K", p(src), p(dst)]);
    serde_json::from_str(&out).unwrap()
}

/// The crash suite: ≥ 50 seeds when HOMEWARD_E2E is set (./x test, CI), 6 otherwise.
#[test]
fn a_sync_killed_at_any_point_resumes_to_identical_bytes_sending_at_most_one_chunk_again() {
    use std::os::unix::process::ExitStatusExt;
    let seeds = if std::env::var_os("HOMEWARD_E2E").is_some() { 50 } else { 6 };
    let chunk = 256u64 << 10;
    for seed in 0..seeds {
        let dir = tempfile::tempdir().unwrap();
        let (s, d) = (dir.path().join("s.vmdk"), dir.path().join("d.vhd"));
        hw(&["disk", "create", "--format", "vmdk", "--size", "4M", p(&s)]);
        let flat = dir.path().join("s-flat.vmdk");
        let delta = seed % 2 == 1;
        let needed = if delta {
            // An existing replica, then 1.5 MiB of changes.
            poke(&flat, 0, 4 << 20, seed);
            sync_json(&s, &d);
            poke(&flat, (seed * 4096) % (2 << 20), 3 << 19, seed + 1000);
            3u64 << 19
        } else {
            poke(&flat, 0, 3 << 20, seed);
            3u64 << 20
        };
        let abort_after = 4096 + (seed * 7919 * 4096) % (needed - 4096);
        let out = sync_killed_after(&s, &d, if delta { "delta" } else { "full" }, abort_after);
        assert_eq!(out.status.signal(), Some(libc::SIGABRT), "seed {seed}: the sync should have died");

        let r = sync_json(&s, &d);
        let expect_mode = if delta { "delta" } else { "full" };
        assert_eq!(r["mode"], expect_mode, "seed {seed}");
        ok(qemu_img(&["compare", "-q", "-f", "vmdk", "-F", "vpc", p(&s), p(&d)]));
        let after = r["data_bytes"].as_u64().unwrap();
        // What the killed run had applied is at least abort_after; the resumed run may repeat what was applied but
        // not yet covered by a committed cursor: at most one chunk (plus the block that crossed the threshold).
        assert!(
            after + abort_after <= needed + chunk + 4096,
            "seed {seed}: resumed run sent {after} after {abort_after} of {needed}"
        );
        if !delta && abort_after >= chunk + 4096 {
            assert!(r["resumed_from_block"].as_u64().is_some(), "seed {seed}: a full copy resumes from its cursor");
        }
    }
}

/// The benchmark runs end to end on a small image and reports every figure it promises (slow suite).
#[test]
fn the_benchmark_reports_its_figures_as_one_json_line() {
    if std::env::var_os("HOMEWARD_E2E").is_none() {
        eprintln!("benchmark smoke test skipped: set HOMEWARD_E2E=1 (./x test and CI do)");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let out = hw(&["disk", "bench", "--size", "32M", "--rounds", "1", "--json", "--dir", p(dir.path())]);
    let line = out.lines().last().unwrap();
    let v: serde_json::Value = serde_json::from_str(line).unwrap();
    for key in [
        "delta_vs_rsync",
        "delta_vs_floor",
        "full_vs_cp",
        "incremental_vs_delta",
        "wire_overhead",
        "hash_bytes",
        "peak_rss_mib",
    ] {
        assert!(v[key].as_f64().is_some_and(|x| x > 0.0), "{key} missing or not positive: {line}");
    }
    // Figures that do not depend on the machine's speed.
    assert_eq!(v["changed_bytes"], (32u64 << 20) / 100 / 65536 * 65536);
    assert!(v["wire_overhead"].as_f64().unwrap() <= 1.02, "{line}");
    assert!(v["peak_rss_mib"].as_f64().unwrap() <= 64.0, "{line}");
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0, "the benchmark cleans up after itself");
}
