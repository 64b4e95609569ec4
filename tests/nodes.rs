//! Two `homeward serve` nodes on one PostgreSQL database and one estate: operators act on both at once, node A is
//! killed with SIGKILL in the middle of a sync, and node B finishes A's jobs once their leases run out. Every job
//! ends exactly once, no finished task runs again, the disks match (`qemu-img compare`), and ten concurrent
//! failover requests for one item from both nodes start one job.

use crate::common;
use std::path::Path;

use common::{get, post, same_disk, start_action, wait_job, wait_until_moving, Portal};
use serde_json::Value;

/// A node on the shared database (remembered in its data dir) and the shared estate folder.
fn node(data_dir: &Path, database: &str, estate: &Path) -> Portal {
    std::fs::write(data_dir.join("test-database-url"), database).unwrap();
    Portal::start_in(data_dir, &["--estate-dir", estate.to_str().unwrap(), "--workers", "4", "--lease-seconds", "3"])
}

const REPROTECT: &str = r#"{"master_target": "mt-win-01", "process_server": "ps-azure-01"}"#;
const FAILOVER: &str = r#"{"point": {"type": "latest-processed"}}"#;

/// Every task succeeded; only the task a kill interrupted ran twice.
fn ran_once(job: &Value) -> u64 {
    assert_eq!(job["job"]["state"], "succeeded", "{job}");
    let tasks = job["job"]["tasks"].as_array().unwrap();
    let extra: u64 = tasks.iter().map(|t| t["attempts"].as_u64().unwrap().saturating_sub(1)).sum();
    assert!(tasks.iter().all(|t| t["state"] == "succeeded"), "{job}");
    assert!(extra <= 1, "only the interrupted task may run twice: {job}");
    extra
}

#[tokio::test]
async fn two_nodes_share_the_work_and_one_finishes_what_the_other_was_killed_in() {
    let (dir_a, dir_b, estate) =
        (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let database = common::postgres::Cluster::get().database();
    let a = node(dir_a.path(), &database, estate.path());
    post(&a.http, &format!("{}api/v1/infrastructure/faults", a.url), r#"{"guest_bytes_per_tick": 0}"#, "f0").await;
    let (j1, j2) = (
        start_action(&a, "web01", "reprotect", REPROTECT, "r-web01").await,
        start_action(&a, "sql01", "reprotect", REPROTECT, "r-sql01").await,
    );
    ran_once(&wait_job(&a.http, &a.url, &j1).await);
    ran_once(&wait_job(&a.http, &a.url, &j2).await);

    // A long reprotect on A: alternate location, a full copy, throttled to 2 MiB/s (about 8 s).
    post(&a.http, &format!("{}api/v1/infrastructure/faults", a.url), r#"{"replication_bytes_per_s": 2097152}"#, "f1")
        .await;
    let body = r#"{"master_target": "mt-win-01", "process_server": "ps-azure-01", "datastore": "vmfs-01"}"#;
    let app02 = start_action(&a, "app02", "reprotect", body, "r-app02").await;
    wait_until_moving(&a, &app02).await;

    // Node B joins while A's sync runs; operators act on both nodes at once.
    let b = node(dir_b.path(), &database, estate.path());
    let (ha, hb) = (get(&a.http, &format!("{}healthz", a.url)).await, get(&b.http, &format!("{}healthz", b.url)).await);
    assert_ne!(ha["node"], hb["node"], "two nodes, two identities");
    assert!(ha["workers"].as_array().unwrap().iter().any(|w| w["job"] == app02.as_str()), "A runs app02: {ha}");
    // Ten failover requests for sql01 at once, from both nodes: one job; the others are refused as busy (R-W5).
    let requests = (0..10).map(|i| {
        let p = if i % 2 == 0 { &a } else { &b };
        let url = format!("{}api/v1/items/sql01/failover", p.url);
        async move { post(&p.http, &url, FAILOVER, &format!("storm-{i}")).await }
    });
    let answers = futures_util::future::join_all(requests).await;
    let started: Vec<&Value> = answers.iter().filter(|(s, _)| *s == 202).map(|(_, v)| v).collect();
    assert_eq!(started.len(), 1, "{answers:?}");
    assert!(answers.iter().all(|(s, _)| *s == 202 || *s == 409), "{answers:?}");
    let sql01_failover = started[0]["job_id"].as_str().unwrap().to_owned();
    let web01_failover = start_action(&b, "web01", "failover", FAILOVER, "f-web01").await;

    drop(a); // SIGKILL, mid-sync
    post(&b.http, &format!("{}api/v1/infrastructure/faults", b.url), r#"{"replication_bytes_per_s": 0}"#, "f2").await;

    // B finishes everything, A's interrupted sync included once A's lease (3 s) has run out: that task ran twice,
    // every other task once.
    let j = wait_job(&b.http, &b.url, &app02).await;
    assert_eq!(ran_once(&j), 1, "the sync A was killed in ran again on B, once: {j}");
    ran_once(&wait_job(&b.http, &b.url, &web01_failover).await);
    ran_once(&wait_job(&b.http, &b.url, &sql01_failover).await);

    let root = estate.path();
    let disk = |r: &Value, which: &str| root.join(r[which][0].as_str().unwrap());
    let r = common::estate_record(dir_b.path(), "app02").await;
    same_disk(&disk(&r, "replica_disks"), "vmdk", &disk(&r, "cloud_disks"), "vpc", "app02 replica");
    for item in ["web01", "sql01"] {
        let r = common::estate_record(dir_b.path(), item).await;
        same_disk(&disk(&r, "onprem_disks"), "vmdk", &disk(&r, "cloud_disks"), "vpc", item);
        let it = get(&b.http, &format!("{}api/v1/items/{item}", b.url)).await;
        assert_eq!(it["item"]["state"], "failed-back-commit-pending", "{it}");
    }
    let jobs = get(&b.http, &format!("{}api/v1/jobs", b.url)).await;
    let failovers = jobs["jobs"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|j| j["job"]["item_id"] == "sql01" && j["job"]["kind"] == "failover")
        .count();
    assert_eq!(failovers, 1, "one failover job for sql01: {jobs}");
}
