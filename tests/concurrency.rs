//! Many jobs at once on one node: while a long, throttled reprotect syncs, another item's failover completes and a
//! protected item keeps gaining recovery points; then the reprotect is cancelled mid-sync — its sync stops at the
//! next chunk, the job ends cancelled, and the item is back in the state it had before.

use crate::common;
use std::time::{Duration, Instant};

use common::{get, post, start_action, wait_job, wait_until_moving, Portal};

const REPROTECT: &str = r#"{"master_target": "mt-win-01", "process_server": "ps-azure-01"}"#;

async fn points(p: &Portal, item: &str) -> usize {
    get(&p.http, &format!("{}api/v1/items/{item}/points", p.url)).await["points"].as_array().unwrap().len()
}

async fn job_state(p: &Portal, job: &str) -> String {
    get(&p.http, &format!("{}api/v1/jobs/{job}", p.url)).await["job"]["state"].as_str().unwrap().to_owned()
}

#[tokio::test]
async fn a_long_reprotect_holds_up_neither_a_failover_nor_replication_and_cancel_stops_its_sync() {
    let p = Portal::start(&["--workers", "4"]);
    let faults = format!("{}api/v1/infrastructure/faults", p.url);
    post(&p.http, &faults, r#"{"guest_bytes_per_tick": 0, "crash_consistent_every_ms": 500}"#, "f0").await;
    let (a, b) = (
        start_action(&p, "web01", "reprotect", REPROTECT, "r1").await,
        start_action(&p, "sql01", "reprotect", REPROTECT, "r2").await,
    );
    assert_eq!(wait_job(&p.http, &p.url, &a).await["job"]["state"], "succeeded");
    assert_eq!(wait_job(&p.http, &p.url, &b).await["job"]["state"], "succeeded");

    // app02: alternate location, a full copy of 16 MiB throttled to 1 MiB/s — about 16 s if left alone.
    post(&p.http, &faults, r#"{"replication_bytes_per_s": 1048576}"#, "f1").await;
    let body = r#"{"master_target": "mt-win-01", "process_server": "ps-azure-01", "datastore": "vmfs-01"}"#;
    let long = start_action(&p, "app02", "reprotect", body, "r3").await;
    wait_until_moving(&p, &long).await;
    // The item shows the initial replication's progress, and the failover refusal quotes it (R-C3 never says 0 %
    // while bytes move); the refusal names the running reprotect, not a master target it has not recorded yet.
    let it = get(&p.http, &format!("{}api/v1/items/app02", p.url)).await;
    let pct = it["item"]["initial_sync_percent"].as_u64().unwrap();
    assert!((1..100).contains(&pct), "initial_sync_percent {pct} while the sync moves: {it}");
    let refused = it["refused_operations"].as_array().unwrap();
    let failover = refused.iter().find(|r| r["operation"] == "failover").unwrap();
    let reasons: Vec<&str> =
        failover["refusals"].as_array().unwrap().iter().map(|r| r["rule"].as_str().unwrap()).collect();
    assert!(!reasons.contains(&"R-P3"), "{failover}");
    assert!(failover.to_string().contains("being reprotected"), "{failover}");

    // Side by side: sql01 fails over to completion, web01 gains recovery points, app02 still syncs.
    let before = points(&p, "web01").await;
    let failover = start_action(&p, "sql01", "failover", r#"{"point": {"type": "latest-processed"}}"#, "f-sql01").await;
    assert_eq!(wait_job(&p.http, &p.url, &failover).await["job"]["state"], "succeeded");
    let deadline = Instant::now() + Duration::from_secs(15);
    while points(&p, "web01").await <= before {
        assert!(Instant::now() < deadline, "web01 gained no recovery point while app02 synced");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(job_state(&p, &long).await, "in-progress", "the long reprotect is still running");

    // Cancel mid-sync: the sync stops at its next chunk, not at its end.
    let asked = Instant::now();
    let (s, v) = post(&p.http, &format!("{}api/v1/jobs/{long}/cancel", p.url), "{}", "c1").await;
    assert_eq!((s, v["state"].as_str()), (200, Some("in-progress")), "asked to stop: {v}");
    let j = wait_job(&p.http, &p.url, &long).await;
    let took = asked.elapsed();
    eprintln!("cancel → job cancelled in {took:?}");
    assert_eq!(j["job"]["state"], "cancelled", "{j}");
    assert!(took < Duration::from_secs(8), "the sync ran on after the cancel ({took:?}); it had ~10 s left: {j}");
    let it = get(&p.http, &format!("{}api/v1/items/app02", p.url)).await;
    assert_eq!(it["item"]["state"], "committed-in-cloud", "back to its state before the reprotect: {it}");
}

/// The database goes away for a few seconds in the middle of a sync: the job rides it out (its writes are retried
/// with backoff, its lease outlives the outage) and ends succeeded, every task run once; nothing is lost.
#[tokio::test]
async fn a_job_survives_the_database_going_away_for_a_few_seconds_mid_sync() {
    let cluster = common::postgres::Cluster::dedicated();
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("test-database-url"), cluster.database()).unwrap();
    let p = Portal::start_in(dir.path(), &[]);
    let faults = format!("{}api/v1/infrastructure/faults", p.url);
    post(&p.http, &faults, r#"{"guest_bytes_per_tick": 0, "replication_bytes_per_s": 2097152}"#, "f0").await;
    let body = r#"{"master_target": "mt-win-01", "process_server": "ps-azure-01", "datastore": "vmfs-01"}"#;
    let job = start_action(&p, "app02", "reprotect", body, "r1").await;
    wait_until_moving(&p, &job).await;

    cluster.stop_server();
    tokio::time::sleep(Duration::from_secs(4)).await; // the outage itself, not a wait for an event
    cluster.restart_server();

    let j = wait_job(&p.http, &p.url, &job).await;
    assert_eq!(j["job"]["state"], "succeeded", "{j}");
    let tasks = j["job"]["tasks"].as_array().unwrap();
    assert!(tasks.iter().all(|t| t["attempts"] == 1), "no task ran twice: {j}");
    let it = get(&p.http, &format!("{}api/v1/items/app02", p.url)).await;
    assert_eq!(it["item"]["state"], "protected-to-primary", "{it}");
    let h = get(&p.http, &format!("{}healthz", p.url)).await;
    assert_eq!(h["status"], "ok", "{h}");
}

/// A sync that fails in a way worth retrying (its source disk went away) is tried again after a backoff: the job
/// page says which attempt failed and when the next one starts; once the disk is back, that attempt succeeds.
#[tokio::test]
async fn a_failed_sync_is_retried_after_a_backoff_that_the_job_page_shows() {
    let p = Portal::start(&[]);
    post(&p.http, &format!("{}api/v1/infrastructure/faults", p.url), r#"{"guest_bytes_per_tick": 0}"#, "f0").await;
    let rec = common::estate_record(&p.data_dir, "web01").await;
    let cloud = p.data_dir.join("estate").join(rec["cloud_disks"][0].as_str().unwrap());
    let away = cloud.with_extension("away");
    std::fs::rename(&cloud, &away).unwrap();
    let job = start_action(&p, "web01", "reprotect", REPROTECT, "r1").await;
    let deadline = Instant::now() + Duration::from_secs(30);
    let task = loop {
        let j = get(&p.http, &format!("{}api/v1/jobs/{job}", p.url)).await;
        let waiting = j["job"]["tasks"].as_array().unwrap().iter().find(|t| t["next_attempt_at"].is_u64()).cloned();
        if let Some(t) = waiting {
            break t;
        }
        assert_ne!(j["job"]["state"], "failed", "a missing disk is worth another attempt: {j}");
        assert!(Instant::now() < deadline, "no retry was scheduled: {j}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert!(task["error"].as_str().unwrap().starts_with("attempt 1 of 4: replication failed"), "{task}");
    let page = p.http.get(format!("{}jobs/{job}", p.url)).send().await.unwrap().text().await.unwrap();
    assert!(page.contains("Next attempt at") && page.contains("attempt 1 of 4"), "the job page shows the retry");

    std::fs::rename(&away, &cloud).unwrap();
    let j = wait_job(&p.http, &p.url, &job).await;
    assert_eq!(j["job"]["state"], "succeeded", "{j}");
    let sync = j["job"]["tasks"].as_array().unwrap().iter().find(|t| t["step"] == "initial-replication").unwrap();
    assert_eq!(sync["attempts"], 2, "{j}");
}

/// Issue 14's load, bounded: twenty clients at once (each at most 40 rounds and 8 s). Fourteen read the items list,
/// single items and the items page; six start reprotects without an Idempotency-Key, two at a time on each of three items. No answer
/// is a 5xx; every action either starts (202) or is refused for the one running on its item with R-W5 (409); each
/// item gets exactly one job; and every client's reads answer while the jobs are created.
#[tokio::test]
async fn twenty_clients_at_once_get_no_server_error_and_one_job_per_item() {
    let p = Portal::start(&["--workers", "4"]);
    let list = get(&p.http, &format!("{}api/v1/items?allows=reprotect", p.url)).await;
    let items: Vec<(String, String)> = list["items"]
        .as_array()
        .unwrap()
        .iter()
        // Original location recovery: no datastore to choose.
        .filter(|v| v["item"]["onprem"]["exists"] == true)
        .map(|v| {
            let id = v["item"]["id"].as_str().unwrap().to_owned();
            let windows = v["item"]["os"]["family"] == "windows";
            (id, if windows { "mt-win-01" } else { "mt-linux-01" }.to_owned())
        })
        .take(3)
        .collect();
    assert_eq!(items.len(), 3, "three items to reprotect: {list}");
    let deadline = Instant::now() + Duration::from_secs(8);
    let mut clients = tokio::task::JoinSet::new();
    for n in 0..20 {
        let (http, url) = (p.http.clone(), p.url.clone());
        let target = items[n % 3].clone();
        clients.spawn(async move {
            let mut seen: Vec<(u16, String)> = Vec::new();
            let mut latencies: Vec<f64> = Vec::new();
            if n < 6 {
                let body = format!(r#"{{"master_target": "{}", "process_server": "ps-azure-01"}}"#, target.1);
                let r = http
                    .post(format!("{url}api/v1/items/{}/reprotect", target.0))
                    .header("content-type", "application/json")
                    .body(body)
                    .send()
                    .await
                    .unwrap();
                seen.push((r.status().as_u16(), r.text().await.unwrap()));
                return (n, seen, latencies);
            }
            for round in 0..40 {
                if Instant::now() > deadline {
                    break;
                }
                // The items API, one item, and the items page as a browser gets it.
                let path = match round % 3 {
                    0 => "api/v1/items".to_owned(),
                    1 => format!("api/v1/items/{}", target.0),
                    _ => "replicated-items".to_owned(),
                };
                let t = Instant::now();
                let r = http.get(format!("{url}{path}")).send().await.unwrap();
                let status = r.status().as_u16();
                let body = r.text().await.unwrap();
                latencies.push(t.elapsed().as_secs_f64() * 1000.0);
                seen.push((status, if status == 200 { String::new() } else { body }));
            }
            (n, seen, latencies)
        });
    }
    let mut started = std::collections::HashMap::<String, usize>::new();
    let mut all: Vec<f64> = Vec::new();
    while let Some(done) = clients.join_next().await {
        let (n, seen, latencies) = done.unwrap();
        all.extend(latencies);
        assert!(!seen.is_empty(), "client {n} made no request");
        for (status, body) in &seen {
            assert!(*status < 500, "client {n}: {status} {body}");
            if n < 6 {
                match status {
                    202 => *started.entry(items[n % 3].0.clone()).or_default() += 1,
                    409 => assert!(body.contains("R-W5"), "client {n}: refused without the rule: {body}"),
                    other => panic!("client {n}: a reprotect answered {other}: {body}"),
                }
            } else {
                assert_eq!(*status, 200, "client {n}: a read answered {status}: {body}");
            }
        }
    }
    for (item, _) in &items {
        assert_eq!(started.get(item), Some(&1), "{item}: one of its two reprotects starts: {started:?}");
    }
    // Reported, not asserted: a figure for the log (speed targets live in the benchmarks).
    all.sort_by(|a, b| a.total_cmp(b));
    let p99 = all[((all.len() - 1) as f64 * 0.99).round() as usize];
    eprintln!("20 clients: {} reads, p99 {p99:.1} ms, 0 errors; 6 reprotects, 3 started, 3 refused (R-W5)", all.len());
}
