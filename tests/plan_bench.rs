//! `./x bench plan`: the control plane's own cost, on SQLite (one node) and on PostgreSQL (two nodes).
//!
//! - Claims per second: 8 concurrent claimers take 1 000 waiting jobs from the job table.
//! - 200 small items reprotected through the API (200 jobs, spread over the nodes): wall time and jobs per second.
//! - A recovery plan of those 200 items failed over (one job, group after group): job time, the time its tasks
//!   spent moving disk bytes (`data_ms` in each task's result), and the difference — the orchestration overhead,
//!   against the goal of < 5 s for 200 items.
//!
//! A benchmark, not a test: it prints figures beside their goal and runs only with HOMEWARD_BENCH set.

mod common;

use std::time::{Duration, Instant};

use common::{get, post, Portal};
use orchestrator::db::Db;
use orchestrator::jobs::{JobStore, NewJob};
use serde_json::Value;

const ITEMS: usize = 200;
const OVERHEAD_GOAL_S: f64 = 5.0;

async fn claims_per_second(url: &str) -> f64 {
    let db = Db::connect(url, 16).await.unwrap();
    db.migrate().await.unwrap();
    let store = JobStore::new(db);
    let n = 1000;
    for i in 0..n {
        let new = NewJob {
            id: orchestrator::jobs::new_id(),
            kind: "bench".into(),
            item_id: Some(format!("bench-{i}")),
            plan_id: None,
            request: "{}".into(),
            idempotency_key: format!("bench-{i}"),
            tasks: vec![("noop".into(), "No-op".into())],
            items: Vec::new(),
        };
        store.create(new).await.unwrap();
    }
    let t = Instant::now();
    let claimers = (0..8).map(|w| {
        let store = store.clone();
        async move {
            // Distinct nodes: one node's workers of different boots would take each other's jobs back.
            let me = format!("bench-node-{w}/boot/w0");
            let mut n = 0;
            while orchestrator::jobs::db_retry("claim", || store.claim(&me, 60_000)).await.unwrap().is_some() {
                n += 1;
            }
            n
        }
    });
    let claimed: usize = futures_util::future::join_all(claimers).await.into_iter().sum();
    assert_eq!(claimed, n);
    n as f64 / t.elapsed().as_secs_f64()
}

async fn wait_all(p: &Portal, jobs: &[String], limit: Duration) -> Vec<Value> {
    let deadline = Instant::now() + limit;
    let mut done = Vec::new();
    for id in jobs {
        loop {
            let j = get(&p.http, &format!("{}api/v1/jobs/{id}", p.url)).await;
            match j["job"]["state"].as_str() {
                Some("succeeded") => {
                    done.push(j);
                    break;
                }
                Some("failed" | "cancelled") => panic!("job {id} did not succeed: {j}"),
                _ if Instant::now() > deadline => panic!("job {id} did not end in {limit:?}: {j}"),
                _ => tokio::time::sleep(Duration::from_millis(100)).await,
            }
        }
    }
    done
}

struct Figures {
    /// Each item's failover task, in ms: p50, p90, max.
    per_item_ms: (u64, u64, u64),
    claims_per_s: f64,
    reprotect_s: f64,
    plan_job_s: f64,
    plan_data_s: f64,
}

/// Nodes on `database` (None: each node's own SQLite file — then one node) sharing the estate of the first.
async fn run(database: Option<String>, nodes: usize) -> Figures {
    let dirs: Vec<tempfile::TempDir> = (0..nodes).map(|_| tempfile::tempdir().unwrap()).collect();
    let estate = dirs[0].path().join("estate");
    if let Some(url) = &database {
        for d in &dirs {
            std::fs::write(d.path().join("test-database-url"), url).unwrap();
        }
    }
    let out = common::homeward(dirs[0].path())
        .args(["demo", "init", "--data-dir"])
        .arg(dirs[0].path())
        .args(["--fleet", &ITEMS.to_string(), "--fleet-plan"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let args = ["--estate-dir", estate.to_str().unwrap(), "--workers", "4"];
    let portals: Vec<Portal> = dirs.iter().map(|d| Portal::start_in(d.path(), &args)).collect();
    let p0 = &portals[0];
    post(&p0.http, &format!("{}api/v1/infrastructure/faults", p0.url), r#"{"guest_bytes_per_tick": 0}"#, "f").await;

    let items = get(&p0.http, &format!("{}api/v1/items", p0.url)).await;
    let fleet: Vec<(String, String)> = items["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| if i["item"].is_object() { &i["item"] } else { i })
        .filter(|i| i["id"].as_str().is_some_and(|id| id.starts_with("fleet-")))
        .map(|i| (i["id"].as_str().unwrap().to_owned(), i["os"]["family"].as_str().unwrap().to_owned()))
        .collect();
    assert_eq!(fleet.len(), ITEMS);
    let t = Instant::now();
    let mut jobs = Vec::new();
    for (n, (id, family)) in fleet.iter().enumerate() {
        let p = &portals[n % portals.len()];
        let mt = if family == "windows" { "mt-win-01" } else { "mt-linux-01" };
        let body = format!(
            r#"{{"master_target": "{mt}", "process_server": "ps-azure-01", "datastore": "vmfs-01", "reason": "bench"}}"#
        );
        let (s, v) = post(&p.http, &format!("{}api/v1/items/{id}/reprotect", p.url), &body, &format!("r-{id}")).await;
        assert_eq!(s, 202, "{id}: {v}");
        jobs.push(v["job_id"].as_str().unwrap().to_owned());
    }
    wait_all(p0, &jobs, Duration::from_secs(600)).await;
    let reprotect_s = t.elapsed().as_secs_f64();

    let (s, v) = post(
        &p0.http,
        &format!("{}api/v1/plans/plan-fleet/failover", p0.url),
        r#"{"point": {"type": "latest-processed"}, "reason": "bench"}"#,
        "plan",
    )
    .await;
    assert_eq!(s, 202, "{v}");
    let job = wait_all(p0, &[v["job_id"].as_str().unwrap().to_owned()], Duration::from_secs(900)).await.remove(0);
    let (started, finished) = (job["job"]["started_at"].as_u64().unwrap(), job["job"]["finished_at"].as_u64().unwrap());
    let data_ms: u64 = job["job"]["tasks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| {
            let r: Value = serde_json::from_str(t["result"].as_str().unwrap_or("{}")).unwrap_or_default();
            r["data_ms"].as_u64().unwrap_or(0)
        })
        .sum();
    let mut per_item: Vec<u64> = job["job"]["tasks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["finished_at"].as_u64().unwrap() - t["started_at"].as_u64().unwrap())
        .collect();
    per_item.sort_unstable();
    let pct = |q: usize| per_item[(per_item.len() * q / 100).min(per_item.len() - 1)];
    let claims_url = match &database {
        Some(_) => common::postgres::Cluster::get().database(),
        None => format!("sqlite://{}?mode=rwc", dirs[0].path().join("claims.db").display()),
    };
    Figures {
        per_item_ms: (pct(50), pct(90), *per_item.last().unwrap()),
        claims_per_s: claims_per_second(&claims_url).await,
        reprotect_s,
        plan_job_s: (finished - started) as f64 / 1000.0,
        plan_data_s: data_ms as f64 / 1000.0,
    }
}

fn report(engine: &str, nodes: usize, f: &Figures) {
    let overhead = f.plan_job_s - f.plan_data_s;
    println!("{engine} ({nodes} node{}):", if nodes > 1 { "s" } else { "" });
    println!("  claims per second (8 claimers, 1 000 jobs)      {:>8.0}", f.claims_per_s);
    println!(
        "  {ITEMS} reprotect jobs through the API             {:>8.1} s  ({:.1} jobs/s)",
        f.reprotect_s,
        ITEMS as f64 / f.reprotect_s
    );
    println!("  plan failover of {ITEMS} items: job time          {:>8.2} s", f.plan_job_s);
    println!("    of which moving disk bytes                    {:>8.2} s  (the baseline)", f.plan_data_s);
    let (p50, p90, max) = f.per_item_ms;
    println!("    per item: p50 {p50} ms, p90 {p90} ms, max {max} ms");
    println!(
        "    orchestration overhead                        {:>8.2} s  goal < {OVERHEAD_GOAL_S} s: {}",
        overhead,
        if overhead < OVERHEAD_GOAL_S { "met" } else { "MISSED" }
    );
}

#[tokio::test]
async fn plan_benchmark() {
    if std::env::var_os("HOMEWARD_BENCH").is_none() {
        eprintln!("plan benchmark skipped: set HOMEWARD_BENCH=1 (./x bench plan does)");
        return;
    }
    let sqlite = run(None, 1).await;
    let pg = run(Some(common::postgres::Cluster::get().database()), 2).await;
    println!("\nControl-plane benchmark (release build, this machine: {} cores)", num_cores());
    report("SQLite", 1, &sqlite);
    report("PostgreSQL", 2, &pg);
}

fn num_cores() -> usize {
    std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1)
}
