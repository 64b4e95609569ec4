//! The server killed (SIGKILL) at random moments of a workflow, then restarted on the same data dir: every job
//! ends once, correctly — its finished tasks are not run again, at most the interrupted one is, and the disks are
//! what the workflow promises. 30 seeds when HOMEWARD_E2E is set (./x test, CI), 3 otherwise, or
//! HOMEWARD_CRASH_SEEDS. Each seed has its own data dir and server, so three run at a time: a seed spends most of
//! its time waiting for its server.

use crate::common;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use common::{get, post, same_disk, wait_job, Portal};
use serde_json::Value;

const AT_ONCE: usize = 3;

fn assert_ran_once(job: &Value, seed: u64) {
    assert_eq!(job["job"]["state"], "succeeded", "seed {seed}: {job}");
    let tasks = job["job"]["tasks"].as_array().unwrap();
    let attempts: u64 = tasks.iter().map(|t| t["attempts"].as_u64().unwrap()).sum();
    assert!(
        tasks.iter().all(|t| t["state"] == "succeeded" && t["attempts"].as_u64().unwrap() >= 1),
        "seed {seed}: {job}"
    );
    assert!(attempts <= tasks.len() as u64 + 1, "seed {seed}: only the interrupted task may run twice: {job}");
}

/// Starting and killing a server wait on a child process: kept off the runtime's workers.
async fn start(dir: PathBuf) -> Portal {
    tokio::task::spawn_blocking(move || Portal::start_in(&dir, &[])).await.unwrap()
}

async fn kill(portal: Portal) {
    tokio::task::spawn_blocking(move || drop(portal)).await.unwrap(); // SIGKILL
}

/// One seed: start a workflow, kill the server after a seed-chosen delay, restart it and check the outcome.
/// Returns whether the kill landed while the job was running.
async fn crash_once(seed: u64) -> bool {
    let dir = tempfile::tempdir().unwrap();
    let portal = start(dir.path().to_owned()).await;
    let base = portal.url.clone();
    post(&portal.http, &format!("{base}api/v1/infrastructure/faults"), r#"{"guest_bytes_per_tick": 0}"#, "f").await;
    let reprotect = r#"{"master_target": "mt-win-01", "process_server": "ps-azure-01", "datastore": "vmfs-01"}"#;
    // Even seeds crash a reprotect (alternate location for app02: create VM, full copy); odd ones a failover.
    let (item, action, body) = if seed.is_multiple_of(2) {
        ("app02", "reprotect", reprotect.to_owned())
    } else {
        let (s, v) = post(&portal.http, &format!("{base}api/v1/items/web01/reprotect"), reprotect, "pre").await;
        assert_eq!(s, 202, "{v}");
        wait_job(&portal.http, &base, v["job_id"].as_str().unwrap()).await;
        ("web01", "failover", r#"{"point": {"type": "latest-processed"}}"#.to_owned())
    };
    let (s, v) = post(&portal.http, &format!("{base}api/v1/items/{item}/{action}"), &body, "crash").await;
    assert_eq!(s, 202, "seed {seed}: {v}");
    let job = v["job_id"].as_str().unwrap().to_owned();
    tokio::time::sleep(Duration::from_millis((seed * 37) % 250)).await;
    let at_kill = get(&portal.http, &format!("{base}api/v1/jobs/{job}")).await;
    kill(portal).await;
    let interrupted = !matches!(at_kill["job"]["state"].as_str(), Some("succeeded" | "failed" | "cancelled"));

    let portal = start(dir.path().to_owned()).await;
    let j = wait_job(&portal.http, &portal.url, &job).await;
    assert_ran_once(&j, seed);
    // The same request after the restart is the same job, not a second run.
    let (s, again) = post(&portal.http, &format!("{}api/v1/items/{item}/{action}", portal.url), &body, "crash").await;
    assert_eq!((s, again["job_id"].as_str()), (202, Some(job.as_str())), "seed {seed}");

    let it = get(&portal.http, &format!("{}api/v1/items/{item}", portal.url)).await;
    let expected = if action == "reprotect" { "protected-to-primary" } else { "failed-back-commit-pending" };
    assert_eq!(it["item"]["state"], expected, "seed {seed}: {it}");
    let rec = common::estate_record(dir.path(), item).await;
    let root = dir.path().join("estate");
    let cloud = root.join(rec["cloud_disks"][0].as_str().unwrap());
    let onprem =
        root.join(rec[if action == "reprotect" { "replica_disks" } else { "onprem_disks" }][0].as_str().unwrap());
    // After a failover the on-premises disk is the chosen point (restored from the replica, digest-checked);
    // with quiet guests that is the cloud disk's content too.
    tokio::task::spawn_blocking(move || same_disk(&onprem, "vmdk", &cloud, "vpc", &format!("seed {seed}")))
        .await
        .unwrap();
    kill(portal).await;
    interrupted
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn jobs_end_once_and_correctly_when_the_server_is_killed_mid_workflow() {
    let seeds = match std::env::var("HOMEWARD_CRASH_SEEDS").ok().and_then(|n| n.parse().ok()) {
        Some(n) => n,
        None if std::env::var_os("HOMEWARD_E2E").is_some() => 30,
        None => 3,
    };
    let slots = Arc::new(tokio::sync::Semaphore::new(AT_ONCE));
    let mut runs = tokio::task::JoinSet::new();
    for seed in 0..seeds {
        let slots = slots.clone();
        runs.spawn(async move {
            let _slot = slots.acquire_owned().await.unwrap();
            crash_once(seed).await
        });
    }
    let mut interrupted = 0;
    while let Some(run) = runs.join_next().await {
        // A failed seed's panic (its assertion message) fails the test here.
        if run.unwrap_or_else(|e| std::panic::resume_unwind(e.into_panic())) {
            interrupted += 1;
        }
    }
    eprintln!("{interrupted} of {seeds} kills landed while the job was running");
    assert!(interrupted > 0, "no kill interrupted a running job: the test proved nothing");
}
