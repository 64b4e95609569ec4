//! The REST API end to end on the demo estate that the first start seeds: the article's failback driven over HTTP,
//! refusals with their rule IDs (409), unknown ids (404), malformed input (400/422).

mod common;

use std::time::{Duration, Instant};

use common::Portal;
use serde_json::{json, Value};

struct Api {
    base: String,
    http: reqwest::Client,
}

impl Api {
    async fn get(&self, path: &str) -> (u16, Value) {
        let r = self.http.get(format!("{}{path}", self.base)).send().await.unwrap();
        let status = r.status().as_u16();
        (status, serde_json::from_str(&r.text().await.unwrap()).unwrap_or(Value::Null))
    }

    async fn post(&self, path: &str, body: &str, key: Option<&str>) -> (u16, Value, Option<String>) {
        let mut req = self
            .http
            .post(format!("{}{path}", self.base))
            .header("content-type", "application/json")
            .body(body.to_owned());
        if let Some(k) = key {
            req = req.header("idempotency-key", k);
        }
        let r = req.send().await.unwrap();
        let status = r.status().as_u16();
        let location = r.headers().get("location").map(|v| v.to_str().unwrap().to_owned());
        (status, serde_json::from_str(&r.text().await.unwrap()).unwrap_or(Value::Null), location)
    }

    /// Starts an action and waits for its job to end; returns the job.
    async fn act(&self, item: &str, action: &str, body: Value, key: &str) -> Value {
        let (status, v, location) = self.post(&format!("items/{item}/{action}"), &body.to_string(), Some(key)).await;
        assert_eq!(status, 202, "{action} on {item}: {v}");
        let location = location.expect("a Location header");
        assert_eq!(location, format!("/api/v1/jobs/{}", v["job_id"].as_str().unwrap()));
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let (_, j) = self.get(&format!("jobs/{}", v["job_id"].as_str().unwrap())).await;
            match j["job"]["state"].as_str().unwrap() {
                "succeeded" => return j,
                "failed" | "cancelled" => panic!("{action} on {item} ended {}", j),
                _ if Instant::now() > deadline => panic!("{action} on {item} did not finish: {j}"),
                _ => tokio::time::sleep(Duration::from_millis(100)).await,
            }
        }
    }
}

#[tokio::test]
async fn the_article_over_the_rest_api_with_refusals_explained() {
    let portal = Portal::start(&[]);
    let api = Api { base: format!("{}api/v1/", portal.url), http: portal.http.clone() };
    // Quiet guests, so the dry run's estimate is exactly what the job then sends.
    let (status, _, _) = api.post("infrastructure/faults", r#"{"guest_bytes_per_tick": 0}"#, None).await;
    assert_eq!(status, 200);

    let (status, items) = api.get("items").await;
    assert_eq!(status, 200);
    let items = items["items"].as_array().unwrap();
    assert!(items.len() >= 10, "the demo estate is seeded on first start");
    let web01 = items.iter().find(|i| i["item"]["id"] == "web01").unwrap();
    assert_eq!(web01["allowed_operations"], json!(["reprotect"]));

    // Dry run: original location, bytes to move, ETA, the checks.
    let body = json!({"master_target": "mt-win-01", "process_server": "ps-azure-01"});
    let (status, plan, _) = api.post("items/web01/reprotect?dry_run=true", &body.to_string(), None).await;
    assert_eq!(status, 200, "{plan}");
    assert_eq!(plan["location"], "original");
    assert!(plan["bytes_to_move"].as_u64().unwrap() > 0);
    assert!(plan["checks"].as_array().unwrap().iter().all(|c| c["passed"] == true), "{plan}");

    let job = api.act("web01", "reprotect", body.clone(), "t-reprotect").await;
    let sent = job["job"]["tasks"].as_array().unwrap().iter().find(|t| t["step"] == "initial-replication").unwrap()
        ["bytes"]
        .clone();
    assert_eq!(sent, plan["bytes_to_move"], "bytes sent = the dry run's delta estimate");
    // A retry with the same key returns the same job.
    let (status, again, _) = api.post("items/web01/reprotect", &body.to_string(), Some("t-reprotect")).await;
    assert_eq!((status, &again["job_id"]), (202, &job["job"]["id"]));

    let (_, points) = api.get("items/web01/points").await;
    let choices = points["choices"].as_array().unwrap();
    assert!(choices.iter().any(|c| c["choice"]["type"] == "latest-app-consistent"), "{points}");

    // vCenter disconnected: failover refused with R-C4, then allowed once reconnected.
    api.post("infrastructure/faults", r#"{"vcenter_connected": false}"#, None).await;
    let fo = json!({"point": {"type": "latest-app-consistent"}});
    let (status, err, _) = api.post("items/web01/failover", &fo.to_string(), Some("t-fo-1")).await;
    assert_eq!(status, 409, "{err}");
    assert_eq!(err["rule"], "R-C4", "{err}");
    assert!(err["recommended_action"].as_str().unwrap().contains("Reconnect"));
    api.post("infrastructure/faults", r#"{"vcenter_connected": true}"#, None).await;
    api.act("web01", "failover", fo, "t-fo-2").await;
    api.act("web01", "commit", json!({}), "t-commit").await;
    let (_, item) = api.get("items/web01").await;
    assert_eq!(item["item"]["state"], "committed-on-primary");
    let (_, only) = api.get("items?state=committed-on-primary").await;
    assert_eq!(only["items"].as_array().unwrap().len(), 1, "{only}");
    let (_, ready) = api.get("items?allows=reprotect&q=erp").await;
    assert_eq!(ready["items"].as_array().unwrap().len(), 3, "{ready}");
    // The agent registers a few minutes after boot (R-A1): until then re-protect says when to retry.
    let rtc = json!({"process_server": "cs-01"});
    let (status, err, _) = api.post("items/web01/reprotect-to-cloud", &rtc.to_string(), None).await;
    assert_eq!((status, err["rule"].as_str()), (409, Some("R-A1")), "{err}");
    assert!(err["recommended_action"].as_str().unwrap().contains("Retry in"));
    api.post("infrastructure/faults", r#"{"register_agent": "web01"}"#, None).await;
    api.act("web01", "reprotect-to-cloud", rtc, "t-rtc").await;

    // Failover with "latest" on a Linux VM (Linux master target, R-T1 reinstall): one more cycle first, then the
    // on-premises disk equals the cloud disk exactly.
    api.act("lin01", "reprotect", json!({"master_target": "mt-linux-01", "process_server": "ps-azure-01"}), "t-lin-r")
        .await;
    let job = api.act("lin01", "failover", json!({"point": {"type": "latest"}}), "t-lin-f").await;
    let names: Vec<&str> =
        job["job"]["tasks"].as_array().unwrap().iter().map(|t| t["name"].as_str().unwrap()).collect();
    assert!(
        names.contains(&"Replicate the pending changes (one more cycle)")
            && names.contains(&"Reinstall VMware Tools (R-T1)"),
        "{names:?}"
    );
    // Before commit: change the recovery point, then cancel the failback (the cloud VM runs again and
    // replication to on-premises resumes).
    api.act("sql01", "reprotect", json!({"master_target": "mt-win-01", "process_server": "ps-azure-01"}), "t-sql-r")
        .await;
    api.act("sql01", "failover", json!({"point": {"type": "latest-processed"}}), "t-sql-f").await;
    let (_, pts) = api.get("items/sql01/points").await;
    let first = pts["points"][0]["id"].as_str().unwrap().to_owned();
    let job =
        api.act("sql01", "change-recovery-point", json!({"point": {"type": "specific", "id": first}}), "t-sql-c").await;
    assert!(job["job"]["tasks"][0]["name"].as_str().unwrap().contains(&first), "{job}");
    api.act("sql01", "cancel-failover", json!({}), "t-sql-x").await;
    let (_, it) = api.get("items/sql01").await;
    assert_eq!(it["item"]["state"], "protected-to-primary", "{it}");
    assert!(it["allowed_operations"].as_array().unwrap().iter().any(|o| o == "failover"));

    // Alternate location (R-L2, R-L10) over the API: a new VM on the master target's host, a full copy.
    let alt_body = json!({"master_target": "mt-win-01", "process_server": "ps-azure-01", "datastore": "vmfs-01"});
    let (_, plan, _) = api.post("items/app02/reprotect?dry_run=true", &alt_body.to_string(), None).await;
    assert_eq!((plan["location"].as_str(), plan["transfer"].as_str()), (Some("alternate"), Some("full")), "{plan}");
    assert!(plan["location_note"].as_str().unwrap().contains("takes longer"));
    let job = api.act("app02", "reprotect", alt_body, "t-app02").await;
    let full = job["job"]["tasks"].as_array().unwrap().iter().find(|t| t["step"] == "initial-replication").unwrap()
        ["bytes"]
        .as_u64()
        .unwrap();
    let estimate = plan["bytes_to_move"].as_u64().unwrap();
    assert!(
        full <= estimate && full >= estimate * 9 / 10,
        "the full copy sends the allocated blocks: {full} vs {estimate}"
    );
    let root = portal.data_dir.join("estate");
    for (item, onprem) in [("lin01", "onprem_disks"), ("app02", "replica_disks")] {
        let rec = common::estate_record(&portal.data_dir, item).await;
        let disk = |field: &str| root.join(rec[field][0].as_str().unwrap());
        let out = std::process::Command::new("qemu-img")
            .args(["compare", "-q", "-f", "vmdk", "-F", "vpc"])
            .arg(disk(onprem))
            .arg(disk("cloud_disks"))
            .output()
            .unwrap();
        assert!(out.status.success(), "{item}: the on-premises disk differs from the cloud disk");
    }

    // Continuous replication: with short intervals a protected item gains points while its guest writes.
    api.post(
        "infrastructure/faults",
        r#"{"guest_bytes_per_tick": 65536, "crash_consistent_every_ms": 100, "app_consistent_every_ms": 100}"#,
        None,
    )
    .await;
    let before = api.get("items/web01/points").await.1["points"].as_array().unwrap().len();
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let now = api.get("items/web01/points").await.1["points"].as_array().unwrap().len();
        if now >= before + 2 {
            break;
        }
        assert!(Instant::now() < deadline, "no new recovery points from continuous replication ({before} → {now})");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    // A recovery plan with a replication group (R-RP2, R-RP3): refused before its items have points, then failed
    // over group by group to the group's common app-consistent point once continuous replication made one.
    let (status, plans) = api.get("plans").await;
    assert_eq!(status, 200);
    let plan = &plans["plans"][0];
    assert_eq!(plan["id"], "plan-erp");
    let app = json!({"point": {"type": "latest-app-consistent"}});
    let (status, err, _) = api.post("plans/plan-erp/failover", &app.to_string(), None).await;
    assert_eq!((status, err["rule"].as_str()), (409, Some("R-RP3")), "{err}");
    for (n, item) in ["erp-db", "erp-app", "erp-web"].iter().enumerate() {
        let mt = if *item == "erp-web" { "mt-linux-01" } else { "mt-win-01" };
        api.act(
            item,
            "reprotect",
            json!({"master_target": mt, "process_server": "ps-azure-01"}),
            &format!("t-erp-{n}"),
        )
        .await;
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    let plan_job = loop {
        let (status, v, _) = api.post("plans/plan-erp/failover", &app.to_string(), Some("t-plan")).await;
        if status == 202 {
            break v["job_id"].as_str().unwrap().to_owned();
        }
        assert_eq!(v["rule"], "R-RP2", "only a missing common point may hold the plan back: {v}");
        assert!(Instant::now() < deadline, "no common app-consistent point for the group: {v}");
        tokio::time::sleep(Duration::from_millis(300)).await;
    };
    let deadline = Instant::now() + Duration::from_secs(60);
    let job = loop {
        let (_, j) = api.get(&format!("jobs/{plan_job}")).await;
        match j["job"]["state"].as_str().unwrap() {
            "succeeded" => break j,
            "failed" | "cancelled" => panic!("plan failover ended {j}"),
            _ => {
                assert!(Instant::now() < deadline, "plan failover did not finish: {j}");
                tokio::time::sleep(Duration::from_millis(100)).await
            }
        }
    };
    let names: Vec<&str> =
        job["job"]["tasks"].as_array().unwrap().iter().map(|t| t["name"].as_str().unwrap()).collect();
    assert!(names[0].starts_with("Group 1: fail over erp-db") && names[1].starts_with("Group 2:"), "{names:?}");
    let points: Vec<String> = names.iter().map(|n| n.rsplit(' ').next().unwrap().to_owned()).collect();
    assert!(points.windows(2).all(|w| w[0] == w[1]), "one common point for the replication group: {names:?}");
    for item in ["erp-db", "erp-app", "erp-web"] {
        assert_eq!(api.get(&format!("items/{item}")).await.1["item"]["state"], "failed-back-commit-pending");
    }

    // Refused scenarios say why, with their rule IDs.
    let alt = json!({"master_target": "mt-win-01", "process_server": "ps-azure-01", "datastore": "vmfs-01"});
    for (item, rule) in [("phys08", "R-P2"), ("mig01", "R-B1")] {
        let (status, err, _) = api.post(&format!("items/{item}/reprotect"), &alt.to_string(), None).await;
        assert_eq!(status, 409, "{item}: {err}");
        assert_eq!(err["rule"], rule, "{item}: {err}");
        assert!(!err["recommended_action"].as_str().unwrap().is_empty());
    }
    let (status, err, _) = api.post("items/web01/failover", "{}", None).await;
    assert_eq!((status, err["code"].as_str()), (409, Some("refused")));

    // Unknown ids and malformed input are client errors, never 500.
    assert_eq!(api.get("items/nope").await.0, 404);
    assert_eq!(api.get("jobs/nope").await.0, 404);
    assert_eq!(api.post("items/web01/explode", "{}", None).await.0, 404);
    assert_eq!(api.post("items/lin01/reprotect", "{not json", None).await.0, 400);
    assert_eq!(api.post("items/lin01/reprotect", r#"{"master_target": 7}"#, None).await.0, 422);
    let (status, doc) = api.get("openapi.json").await;
    assert_eq!(status, 200);
    assert!(doc["paths"]["/api/v1/items/{id}/{action}"]["post"].is_object());
}
