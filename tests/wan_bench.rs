//! The WAN benchmark (not a pass/fail test): a process server sends to a master target across three network
//! namespaces, the WAN shaped to 100 Mbit/s by `tc … tbf`, and it prints each figure beside its goal and beside a
//! baseline measured in the same run — the same replicator over plain TCP (no TLS, a shared token).
//!
//! * full copy: rate on the wire against the link rate (goal ≥ 90 %);
//! * delta resync with 1 % of the 64 KiB blocks changed: time against (changed bytes + hash list) / link rate
//!   (goal ≤ 1.1 ×).
//!
//! Runs when HOMEWARD_BENCH=1: `./x bench wan`. HOMEWARD_BENCH_WAN_SIZE (default 1G) sets the disk's size; a
//! quarter of it holds data.

mod common;

use std::path::Path;
use std::process::Command;

use common::netns::{cycle, fill_random, Sites};
use common::BIN;
use serde_json::Value;

const LINK_BITS_PER_S: f64 = 100e6;

fn parse_size(s: &str) -> u64 {
    let (n, unit) = s.split_at(s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len()));
    n.parse::<u64>().unwrap()
        << match unit {
            "K" => 10,
            "M" => 20,
            "G" => 30,
            _ => 0,
        }
}

#[test]
fn wan_benchmark() {
    if std::env::var_os("HOMEWARD_BENCH").is_none() {
        eprintln!("WAN benchmark skipped: set HOMEWARD_BENCH=1 (./x bench wan does)");
        return;
    }
    let Some(mut s) = Sites::for_test("100mbit") else { return };
    let size = parse_size(&std::env::var("HOMEWARD_BENCH_WAN_SIZE").unwrap_or_else(|_| "1G".into()));
    let dir = tempfile::tempdir().unwrap();
    let vault = s.serve(&dir.path().join("vault"));
    let mt = s.agent(Sites::ONPREM, &vault, "mt-01", "master-target", dir.path());
    let ps = s.agent(Sites::CLOUD, &vault, "ps-01", "process-server", dir.path());

    let src = dir.path().join("cloud-disk0.vmdk");
    let out =
        Command::new(BIN).args(["disk", "create", "--format", "vmdk", "--size", &size.to_string()]).arg(&src).output();
    assert!(out.unwrap().status.success());
    let data_file = dir.path().join("cloud-disk0-flat.vmdk");
    let data = (size / 4) as usize;
    fill_random(&data_file, 0, data, 0x5eed);

    // Over mutual TLS between the agents, and the baseline: the same replicator over plain TCP with a token.
    let tls = |mode: &str, dst: &Path| {
        let (receiver, addr) = s.receive(&mt, dst);
        cycle(s.send(mode, "--agent-dir", &ps, &src, &format!("tls://mt-01@{addr}")), receiver)
    };
    let token = dir.path().join("token");
    std::fs::write(&token, "bench-token").unwrap();
    let plain = |mode: &str, dst: &Path| {
        let (receiver, addr) = s.receive_with("--token-file", &token, dst);
        cycle(s.send(mode, "--token-file", &token, &src, &format!("tcp://{addr}")), receiver)
    };

    let tls_dst = dir.path().join("onprem-tls.vmdk");
    let tcp_dst = dir.path().join("onprem-tcp.vmdk");
    let full_tls = tls("full", &tls_dst);
    let full_tcp = plain("full", &tcp_dst);

    // 1 % of the 64 KiB blocks changed, spread over the disk.
    let blocks = size / 65536;
    let changed = (blocks / 100).max(1);
    for i in 0..changed {
        let block = (i * 9973 + 17) % blocks;
        fill_random(&data_file, block * 65536, 65536, 0xd17a + i);
    }
    let delta_tls = tls("delta", &tls_dst);
    let delta_tcp = plain("delta", &tcp_dst);

    let secs = |r: &Value| r["elapsed_ms"].as_f64().unwrap() / 1000.0;
    let wire_rate = |r: &Value, wire: f64| wire * 8.0 / secs(r);
    let full_rate = wire_rate(&full_tls, full_tls["wire_bytes_sent"].as_f64().unwrap());
    let full_tcp_rate = wire_rate(&full_tcp, full_tcp["bytes_sent"].as_f64().unwrap());
    let floor =
        |r: &Value| (r["data_bytes"].as_f64().unwrap() + r["bytes_received"].as_f64().unwrap()) * 8.0 / LINK_BITS_PER_S;
    println!();
    println!("WAN benchmark: {} MiB disk, {} MiB of data, link shaped to 100 Mbit/s", size >> 20, data >> 20);
    println!("| figure | mutual TLS between agents | baseline: plain TCP | goal |");
    println!("|---|---|---|---|");
    println!(
        "| full copy, rate on the wire | {:.1} Mbit/s ({:.0} % of the link) | {:.1} Mbit/s | ≥ 90 % of the link |",
        full_rate / 1e6,
        full_rate / LINK_BITS_PER_S * 100.0,
        full_tcp_rate / 1e6
    );
    println!(
        "| full copy, TLS and framing over the data | {:.2} % | {:.2} % | — |",
        (full_tls["wire_bytes_sent"].as_f64().unwrap() / full_tls["data_bytes"].as_f64().unwrap() - 1.0) * 100.0,
        (full_tcp["bytes_sent"].as_f64().unwrap() / full_tcp["data_bytes"].as_f64().unwrap() - 1.0) * 100.0
    );
    println!(
        "| delta, 1 % of blocks changed: time / ((changed + hash list) / link rate) | {:.2} s / {:.2} s = {:.2} × | {:.2} s / {:.2} s = {:.2} × | ≤ 1.1 × |",
        secs(&delta_tls),
        floor(&delta_tls),
        secs(&delta_tls) / floor(&delta_tls),
        secs(&delta_tcp),
        floor(&delta_tcp),
        secs(&delta_tcp) / floor(&delta_tcp)
    );
    println!(
        "| delta: data sent, hash list received | {} KiB, {} KiB | {} KiB, {} KiB | — |",
        delta_tls["data_bytes"].as_u64().unwrap() >> 10,
        delta_tls["bytes_received"].as_u64().unwrap() >> 10,
        delta_tcp["data_bytes"].as_u64().unwrap() >> 10,
        delta_tcp["bytes_received"].as_u64().unwrap() >> 10
    );
    common::same_disk(&src, "vmdk", &tls_dst, "vmdk", "the TLS target after the delta");
}
