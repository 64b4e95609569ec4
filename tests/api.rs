//! The REST API end to end on the demo estate that the first start seeds: the article's failback driven over HTTP,
//! refusals with their rule IDs (409), unknown ids (404), malformed input (400/422).

use crate::{arm, common, emulators};
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
    let (_, it) = api.get("items/app02").await;
    let disk = &it["item"]["onprem"]["disks"][0];
    assert_eq!(
        disk["size_bytes"].as_u64(),
        Some(16 << 20),
        "the re-created VM's VMDK has the cloud disk's size: {disk}"
    );
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
    // The plan reprotects as a whole (issue 12 §3): each item takes the listed master target that runs its
    // operating system; a field the action does not take is refused, not ignored.
    // The plan's own protection settings (issue 12 §5) reach every item its reprotect protects, under those the
    // reprotect itself is given.
    let shape = json!({"name": "ERP failback", "groups": [["erp-db"], ["erp-app", "erp-web"]],
        "protection": {"retention_min": 180, "rpo_threshold_min": 20}});
    let r = api.http.put(format!("{}plans/plan-erp", api.base)).json(&shape).send().await.unwrap();
    assert_eq!(r.status().as_u16(), 200, "{}", r.text().await.unwrap());
    let rp = json!({"process_server": "ps-azure-01", "master_targets": ["mt-win-01", "mt-linux-01"],
        "rpo_threshold_min": 30});
    let (status, err, _) = api
        .post(
            "plans/plan-erp/failover",
            &json!({"point": {"type": "latest-processed"},
        "master_targets": ["mt-win-01"]})
            .to_string(),
            None,
        )
        .await;
    assert_eq!(status, 400, "{err}");
    assert!(err["message"].as_str().unwrap().contains("not taken by the plan's failover"), "{err}");
    let (status, err, _) = api
        .post(
            "plans/plan-erp/reprotect",
            &json!({"master_targets": ["mt-linux-01"],
        "process_server": "ps-azure-01"})
            .to_string(),
            None,
        )
        .await;
    assert_eq!((status, err["rule"].as_str()), (409, Some("R-W1")), "Windows VMs and a Linux master target: {err}");
    let (status, preview, _) = api.post("plans/plan-erp/reprotect?dry_run=true", &rp.to_string(), None).await;
    assert_eq!((status, preview["allowed"].as_bool()), (200, Some(true)), "{preview}");
    let chosen: Vec<(&str, &str)> = preview["groups"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|g| g.as_array().unwrap())
        .map(|it| (it["item"].as_str().unwrap(), it["master_target"].as_str().unwrap()))
        .collect();
    assert_eq!(chosen, [("erp-db", "mt-win-01"), ("erp-app", "mt-win-01"), ("erp-web", "mt-linux-01")]);
    assert!(preview["groups"][0][0]["bytes_to_move"].as_u64().unwrap() > 0, "{preview}");
    let (status, v, _) = api.post("plans/plan-erp/reprotect", &rp.to_string(), Some("t-plan-rp")).await;
    assert_eq!(status, 202, "{v}");
    let j = common::wait_job(&api.http, &portal.url, v["job_id"].as_str().unwrap()).await;
    assert_eq!(j["job"]["state"], "succeeded", "{j}");
    assert_eq!(j["job"]["kind"], "plan-reprotect", "{j}");
    for item in ["erp-db", "erp-app", "erp-web"] {
        let (_, it) = api.get(&format!("items/{item}")).await;
        assert_eq!(it["item"]["state"], "protected-to-primary", "{it}");
        let p = &it["item"]["protection"];
        assert_eq!((&p["retention_min"], &p["rpo_threshold_min"]), (&json!(180), &json!(30)), "{it}");
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
    // Each VM's own steps are kept under its plan task (the job page lists them there).
    let first: Value = serde_json::from_str(job["job"]["tasks"][0]["result"].as_str().unwrap()).unwrap();
    let steps: Vec<&str> = first["steps"].as_array().unwrap().iter().map(|s| s["name"].as_str().unwrap()).collect();
    assert_eq!(steps.first(), Some(&"Shut down the cloud VM"), "{first}");
    assert_eq!(steps.last(), Some(&"Power on the on-premises VM"), "{first}");
    assert!(steps.iter().any(|s| s.starts_with("Materialise the disks at recovery point")), "{first}");
    let points: Vec<String> = names.iter().map(|n| n.rsplit(' ').next().unwrap().to_owned()).collect();
    assert!(points.windows(2).all(|w| w[0] == w[1]), "one common point for the replication group: {names:?}");
    // Group 2's two VMs fail back side by side: each one's steps begin before the other's end. Group 2 starts
    // once group 1 has finished.
    let span = |i: usize| {
        let r: Value = serde_json::from_str(job["job"]["tasks"][i]["result"].as_str().unwrap()).unwrap();
        let steps = r["steps"].as_array().unwrap().clone();
        let first = steps[0]["started_at"].as_u64().unwrap();
        let last = steps.last().unwrap();
        (first, last["started_at"].as_u64().unwrap() + last["ms"].as_u64().unwrap())
    };
    let (db, app, web) = (span(0), span(1), span(2));
    assert!(app.0 < web.1 && web.0 < app.1, "group 2 ran one VM after the other: {app:?} {web:?}");
    assert!(db.1 <= app.0 + 1 && db.1 <= web.0 + 1, "group 2 began before group 1 ended: {db:?} {app:?} {web:?}");
    for item in ["erp-db", "erp-app", "erp-web"] {
        assert_eq!(api.get(&format!("items/{item}")).await.1["item"]["state"], "failed-back-commit-pending");
    }

    // The plan commits as a whole (issue 12 §3): a preview, then every item's commit, group after group, each with
    // its own steps; afterwards a cancel of the plan's failover is refused, naming the rule.
    let (status, preview, _) = api.post("plans/plan-erp/commit?dry_run=true", "{}", None).await;
    assert_eq!((status, preview["allowed"].as_bool()), (200, Some(true)), "{preview}");
    assert_eq!(preview["groups"].as_array().unwrap().len(), 2, "{preview}");
    let (status, v, _) = api.post("plans/plan-erp/commit", r#"{"reason": "ERP runs on-premises again"}"#, None).await;
    assert_eq!(status, 202, "{v}");
    let j = common::wait_job(&api.http, &portal.url, v["job_id"].as_str().unwrap()).await;
    assert_eq!(j["job"]["state"], "succeeded", "{j}");
    let names: Vec<&str> = j["job"]["tasks"].as_array().unwrap().iter().map(|t| t["name"].as_str().unwrap()).collect();
    assert!(names[0].starts_with("Group 1: commit erp-db, deleting its cloud VM"), "{names:?}");
    let first: Value = serde_json::from_str(j["job"]["tasks"][0]["result"].as_str().unwrap()).unwrap();
    assert!(first["steps"][0]["name"].as_str().unwrap().starts_with("Delete cloud VM"), "{first}");
    for item in ["erp-db", "erp-app", "erp-web"] {
        let (_, it) = api.get(&format!("items/{item}")).await;
        assert_eq!(it["item"]["state"], "committed-on-primary", "{it}");
        assert_eq!(it["item"]["cloud_vm"]["deleted"], true, "{it}");
    }
    let (status, err, _) = api.post("plans/plan-erp/cancel-failover", "{}", None).await;
    assert_eq!((status, err["rule"].as_str()), (409, Some("R-W3")), "{err}");

    // Refused scenarios say why, with their rule IDs.
    let alt = json!({"master_target": "mt-win-01", "process_server": "ps-azure-01", "datastore": "vmfs-01"});
    for (item, rule) in [("phys08", "R-P2"), ("mig01", "R-B1")] {
        let (status, err, _) = api.post(&format!("items/{item}/reprotect"), &alt.to_string(), None).await;
        assert_eq!(status, 409, "{item}: {err}");
        assert_eq!(err["rule"], rule, "{item}: {err}");
        assert!(!err["recommended_action"].as_str().unwrap().is_empty());
        // The item says so itself, as the portal's status does: nothing of Homeward's clears it.
        let (_, it) = api.get(&format!("items/{item}")).await;
        assert_eq!(it["attention"]["kind"], "never-fails-back", "{it}");
        assert_eq!(it["attention"]["clear"], Value::Null, "{it}");
    }
    // Failed back and committed, the plan's items are unprotected; re-protecting to Azure clears that once their
    // agents register (R-A1), which the item says rather than offering an action that would be refused.
    let (_, it) = api.get("items/erp-db").await;
    assert_eq!(it["attention"]["kind"], "unprotected", "{it}");
    assert_eq!(it["attention"]["clear"], Value::Null, "{it}");
    assert!(
        it["attention"]["detail"].as_str().unwrap().contains("Not yet: The agent on erp-db has not registered"),
        "{it}"
    );
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
    // Every operation says what its address takes, what it reads and what an error looks like, so a client (or a
    // fuzzer) can be generated from the document alone.
    for (path, ops) in doc["paths"].as_object().unwrap() {
        let names: Vec<&str> =
            path.split('/').filter_map(|seg| seg.strip_prefix('{').and_then(|x| x.strip_suffix('}'))).collect();
        for (method, op) in ops.as_object().unwrap() {
            let declared: Vec<&str> = op["parameters"]
                .as_array()
                .unwrap()
                .iter()
                .filter(|p| p["in"] == "path")
                .map(|p| p["name"].as_str().unwrap())
                .collect();
            assert_eq!(declared, names, "{method} {path}");
            assert!(op["responses"]["default"]["content"]["application/json"]["schema"].is_object(), "{method} {path}");
            if method == "post" {
                assert!(op["requestBody"]["content"]["application/json"]["schema"].is_object(), "{method} {path}");
            }
        }
    }
    let action = &doc["paths"]["/api/v1/items/{id}/{action}"]["post"]["parameters"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == "action")
        .unwrap()["schema"]["enum"];
    for op in action.as_array().unwrap() {
        let (status, v, _) = api.post(&format!("items/phys08/{}?dry_run=true", op.as_str().unwrap()), "{}", None).await;
        assert_eq!(status, 200, "every documented action exists: {op} {v}");
    }
    // What the document says of bodies holds: an action without one refuses fields rather than ignoring them, and
    // an optional field may be null.
    for path in ["jobs/nope/cancel", "agents/nope/revoke", "connections/nope/refresh"] {
        let (status, v, _) = api.post(path, r#"{"force": true}"#, None).await;
        assert_eq!(status, 400, "{path}: {v}");
        assert!(v["message"].as_str().unwrap().contains("force"), "{path}: {v}");
    }
    let nulls = r#"{"master_target": null, "process_server": null, "datastore": null, "reason": null}"#;
    assert_eq!(api.post("items/web01/reprotect?dry_run=true", nulls, None).await.0, 200);
}

/// R-W4's last words, "can be failed over again": after re-protect the API offers failover to the cloud and it
/// runs (the on-premises VM off, the cloud VM started from a point of the replication to the cloud), commit in the
/// cloud ends it, and the VM goes round the lifecycle once more. The failback on the way leaves the cloud VM off in
/// the item's own record, not only in the task's words.
#[tokio::test]
async fn r_w4_a_re_protected_vm_fails_over_to_the_cloud_again_and_round_the_lifecycle() {
    let portal = Portal::start(&[]);
    let api = Api { base: format!("{}api/v1/", portal.url), http: portal.http.clone() };
    api.post("infrastructure/faults", r#"{"guest_bytes_per_tick": 0}"#, None).await;
    let rp = json!({"master_target": "mt-win-01", "process_server": "ps-azure-01"});
    api.act("web01", "reprotect", rp.clone(), "w-r1").await;
    let (_, it) = api.get("items/web01").await;
    assert_eq!(it["item"]["cloud_vm"]["running"], true, "{it}");
    api.act("web01", "failover", json!({"point": {"type": "latest-processed"}}), "w-f1").await;
    let (_, it) = api.get("items/web01").await;
    assert_eq!(it["item"]["cloud_vm"]["running"], false, "the failover shut the cloud VM down: {it}");

    // Before re-protect the forward failover is refused with the rule that leads to it and what to do.
    let (status, err, _) = api.post("items/web01/failover-to-cloud", "{}", None).await;
    assert_eq!((status, err["rule"].as_str()), (409, Some("R-W4")), "{err}");
    let message = err["message"].as_str().unwrap();
    assert!(message.contains("failover to the cloud needs it protected to the cloud"), "{message}");
    assert!(!message.contains("FailoverToCloud"), "no Rust names in messages: {message}");

    api.act("web01", "commit", json!({}), "w-c1").await;
    api.post("infrastructure/faults", r#"{"register_agent": "web01"}"#, None).await;
    api.act("web01", "reprotect-to-cloud", json!({"process_server": "cs-01"}), "w-rtc").await;
    let (_, it) = api.get("items/web01").await;
    assert_eq!(it["item"]["state"], "protected-to-cloud", "{it}");
    assert!(it["allowed_operations"].as_array().unwrap().iter().any(|o| o == "failover-to-cloud"), "{it}");

    let (status, plan, _) = api.post("items/web01/failover-to-cloud?dry_run=true", "{}", None).await;
    assert_eq!((status, plan["allowed"].as_bool()), (200, Some(true)), "{plan}");
    let point = plan["point"]["id"].as_str().expect("the dry run names its point").to_owned();
    let job = api.act("web01", "failover-to-cloud", json!({}), "w-ftc").await;
    let steps: Vec<&str> =
        job["job"]["tasks"].as_array().unwrap().iter().map(|t| t["step"].as_str().unwrap()).collect();
    assert_eq!(steps, ["shut-down-on-prem-for-cloud", "vmware-tools", "create-cloud-vm"], "{job}");
    let created: Value = serde_json::from_str(job["job"]["tasks"][2]["result"].as_str().unwrap()).unwrap();
    // The latest point when the job starts: the dry run's, or a newer one that continuous replication made in
    // between (point ids are UUIDv7: they sort by creation time).
    let used = created["point"].as_str().unwrap();
    assert!(used >= point.as_str(), "the dry run's point {point} or a newer one: {created}");
    let (_, it) = api.get("items/web01").await;
    assert_eq!(it["item"]["state"], "failed-over-to-cloud", "{it}");
    assert_eq!(it["item"]["cloud_vm"]["running"], true, "{it}");
    assert_eq!(it["allowed_operations"], json!(["commit-in-cloud"]), "{it}");
    let rec = common::estate_record(&portal.data_dir, "web01").await;
    assert_eq!((rec["onprem_power"].as_bool(), rec["cloud_power"].as_bool()), (Some(false), Some(true)), "{rec}");
    let root = portal.data_dir.join("estate");
    // Quiet guests: the cloud VM's new disk holds exactly what the on-premises VM had.
    common::same_disk(
        &root.join(rec["onprem_disks"][0].as_str().unwrap()),
        "vmdk",
        &root.join(rec["cloud_disks"][0].as_str().unwrap()),
        "vpc",
        "web01 after failover to the cloud",
    );
    let copy = root.join("recovery/web01/reprotected-disk0.vhd");
    assert!(copy.exists(), "the replication copy stays until commit");

    let job = api.act("web01", "commit-in-cloud", json!({}), "w-cic").await;
    assert_eq!(job["job"]["state"], "succeeded");
    assert!(!copy.exists(), "commit deletes the replication copy");
    let (_, it) = api.get("items/web01").await;
    assert_eq!(it["item"]["state"], "committed-in-cloud", "{it}");
    assert!(it["allowed_operations"].as_array().unwrap().iter().any(|o| o == "reprotect"), "{it}");

    // Round again: reprotect (the on-premises VM still exists: original location, only changes) and failback.
    let (_, plan, _) = api.post("items/web01/reprotect?dry_run=true", &rp.to_string(), None).await;
    assert_eq!(plan["location"], "original", "{plan}");
    api.act("web01", "reprotect", rp, "w-r2").await;
    api.act("web01", "failover", json!({"point": {"type": "latest"}}), "w-f2").await;
    let (_, it) = api.get("items/web01").await;
    assert_eq!(it["item"]["state"], "failed-back-commit-pending", "{it}");
    let rec = common::estate_record(&portal.data_dir, "web01").await;
    common::same_disk(
        &root.join(rec["onprem_disks"][0].as_str().unwrap()),
        "vmdk",
        &root.join(rec["cloud_disks"][0].as_str().unwrap()),
        "vpc",
        "web01 failed back a second time",
    );
}

/// Unknown query parameters and body fields are refused with 400 and their name, never ignored: a misspelled
/// `dry_run` must not start a job, a misspelled `point` must not fail over to the default point. A plan's dry run
/// previews every group's items, their points and checks, and starts nothing. Two requests racing for one item:
/// the loser always gets the same answer, R-W5.
#[tokio::test]
async fn unknown_parameters_are_refused_plans_have_a_dry_run_and_a_busy_item_answers_one_way() {
    let portal = Portal::start(&[]);
    let api = Api { base: format!("{}api/v1/", portal.url), http: portal.http.clone() };
    let rp = json!({"master_target": "mt-win-01", "process_server": "ps-azure-01"});
    let (status, err, _) = api.post("items/web01/reprotect?dry_runn=true", &rp.to_string(), None).await;
    assert_eq!((status, err["code"].as_str()), (400, Some("bad-request")), "{err}");
    assert!(err["message"].as_str().unwrap().contains("dry_runn"), "{err}");
    let (status, err, _) =
        api.post("items/web01/reprotect", r#"{"master_target": "mt-win-01", "pointt": {}}"#, None).await;
    assert_eq!(status, 400, "{err}");
    assert!(err["message"].as_str().unwrap().contains("pointt"), "{err}");
    let (status, err) = api.get("items?stat=committed-in-cloud").await;
    assert_eq!(status, 400, "{err}");
    assert!(err["message"].as_str().unwrap().contains("stat"), "{err}");
    // A filter value that is no state or operation is a mistake to fix, not an empty list.
    let (status, err) = api.get("items?state=commited-in-cloud").await;
    assert_eq!(status, 400, "{err}");
    let said = err["message"].as_str().unwrap();
    assert!(said.contains("commited-in-cloud") && said.contains("committed-in-cloud"), "names the states: {err}");
    let (status, err) = api.get("items?allows=failback").await;
    assert_eq!(status, 400, "{err}");
    // The list comes in pages; `next` keeps the filters, and the pages together are the whole list once.
    let (_, all) = api.get("items").await;
    let total = all["total"].as_u64().unwrap() as usize;
    assert_eq!((all["items"].as_array().unwrap().len(), &all["next"]), (total, &Value::Null), "{all}");
    let mut seen = Vec::new();
    let mut page = api.get("items?limit=3").await.1;
    loop {
        assert_eq!(page["total"].as_u64(), Some(total as u64), "{page}");
        seen.extend(page["items"].as_array().unwrap().iter().map(|i| i["item"]["id"].as_str().unwrap().to_owned()));
        let Some(next) = page["next"].as_str() else { break };
        assert!(next.starts_with("/api/v1/items?") && next.ends_with("limit=3"), "{next}");
        page = api.get(next.trim_start_matches("/api/v1/")).await.1;
    }
    let every: Vec<String> =
        all["items"].as_array().unwrap().iter().map(|i| i["item"]["id"].as_str().unwrap().to_owned()).collect();
    assert_eq!(seen, every);
    let (_, erp) = api.get("items?q=erp&limit=2").await;
    assert_eq!((erp["total"].as_u64(), erp["next"].as_str()), (Some(3), Some("/api/v1/items?q=erp&offset=2&limit=2")));
    for bad in ["items?limit=0", "items?limit=5001", "items?offset=-1", "items?limit=many"] {
        let (status, err) = api.get(bad).await;
        assert_eq!(status, 400, "{bad}: {err}");
    }
    let (status, err) = api.get("items?limit=5001").await;
    assert!(err["message"].as_str().unwrap().contains("1 to 5000"), "{status} {err}");
    let (status, err) = api.get("jobs?itm=web01").await;
    assert_eq!(status, 400, "{err}");
    assert_eq!(api.get("jobs").await.1["jobs"].as_array().unwrap().len(), 0, "nothing started");

    let app = json!({"point": {"type": "latest-app-consistent"}});
    let (status, err, _) = api.post("plans/plan-erp/failover?dryrun=true", &app.to_string(), None).await;
    assert_eq!(status, 400, "{err}");
    let (status, preview, _) = api.post("plans/plan-erp/failover?dry_run=true", &app.to_string(), None).await;
    assert_eq!(status, 200, "{preview}");
    assert_eq!(preview["allowed"], false, "{preview}");
    assert!(preview["refusals"].as_array().unwrap().iter().any(|r| r["rule"] == "R-RP3"), "{preview}");
    let groups = preview["groups"].as_array().unwrap();
    assert_eq!(groups[0][0]["item"], "erp-db", "{preview}");
    assert!(
        groups
            .iter()
            .flat_map(|g| g.as_array().unwrap())
            .all(|i| i["checks"].as_array().is_some_and(|c| !c.is_empty())),
        "{preview}"
    );
    let (status, _, _) = api.post("plans/nope/failover?dry_run=true", &app.to_string(), None).await;
    assert_eq!(status, 404);
    assert_eq!(api.get("jobs").await.1["jobs"].as_array().unwrap().len(), 0, "a dry run starts nothing");

    // Ten requests at once with different keys: one job; every other answer is the R-W5 refusal. Replication is
    // slowed so the winner's job is still running when the last request arrives.
    api.post("infrastructure/faults", r#"{"replication_bytes_per_s": 1048576}"#, None).await;
    let mut racing = Vec::new();
    for n in 0..10 {
        let (http, url, body) = (api.http.clone(), format!("{}items/lin01/reprotect", api.base), rp.to_string());
        let body = body.replace("mt-win-01", "mt-linux-01");
        racing.push(tokio::spawn(async move {
            let r = http
                .post(url)
                .header("content-type", "application/json")
                .header("idempotency-key", format!("race-{n}"))
                .body(body)
                .send()
                .await
                .unwrap();
            (r.status().as_u16(), r.json::<Value>().await.unwrap())
        }));
    }
    let mut started = 0;
    for r in racing {
        let (status, v) = r.await.unwrap();
        if status == 202 {
            started += 1;
        } else {
            assert_eq!((status, v["code"].as_str(), v["rule"].as_str()), (409, Some("refused"), Some("R-W5")), "{v}");
        }
    }
    assert_eq!(started, 1);
}

/// A failback that fails mid-way — vCenter lost while the last changes replicate, so "re-attach disks" fails
/// after the cloud VM was shut down — leaves an item that says so: the failed job, the task, the error and what
/// to do, health critical because the machine runs nowhere. Restarting the job from its page continues from
/// that task (R-C4 cleared) and ends the failback; the item's health is normal again.
#[tokio::test]
async fn a_failover_that_fails_mid_way_leaves_an_item_that_says_what_happened_and_what_to_do() {
    let portal = Portal::start(&[]);
    let api = Api { base: format!("{}api/v1/", portal.url), http: portal.http.clone() };
    let faults = |body: &'static str| {
        let api = &api;
        async move { assert_eq!(api.post("infrastructure/faults", body, None).await.0, 200) }
    };
    faults(r#"{"guest_bytes_per_tick": 0}"#).await;
    api.act("web01", "reprotect", json!({"master_target": "mt-win-01", "process_server": "ps-azure-01"}), "h-r").await;
    // Writes pile up unreplicated (no cycle for an hour), then the final cycle moves them at 1 MiB/s.
    faults(r#"{"guest_bytes_per_tick": 1048576, "crash_consistent_every_ms": 3600000, "app_consistent_every_ms": 3600000}"#)
        .await;
    tokio::time::sleep(Duration::from_secs(4)).await;
    faults(r#"{"guest_bytes_per_tick": 0, "replication_bytes_per_s": 1048576}"#).await;
    let (status, v, _) = api.post("items/web01/failover", r#"{"point": {"type": "latest"}}"#, Some("h-f")).await;
    assert_eq!(status, 202, "{v}");
    let job = v["job_id"].as_str().unwrap().to_owned();
    common::wait_until_moving(&portal, &job).await;
    faults(r#"{"vcenter_connected": false}"#).await;
    let j = common::wait_job(&portal.http, &portal.url, &job).await;
    assert_eq!(j["job"]["state"], "failed", "{j}");
    let failed = j["job"]["tasks"].as_array().unwrap().iter().find(|t| t["state"] == "failed").unwrap().clone();
    assert_eq!(failed["step"], "reattach-disks", "{j}");

    let (_, it) = api.get("items/web01").await;
    let item = &it["item"];
    assert_eq!(item["state"], "protected-to-primary", "{it}");
    assert_eq!(item["cloud_vm"]["running"], false, "{it}");
    assert_eq!(item["health"], "critical", "the machine runs nowhere: {it}");
    assert_eq!(item["last_failure"]["job"], job.as_str(), "{it}");
    assert_eq!(item["last_failure"]["task"], failed["name"], "{it}");
    let said = item["health_errors"][0].as_str().unwrap();
    for words in
        [job.as_str(), "Detach and re-attach the disks", "R-C4", "Reconnect", "restart the job", "runs nowhere"]
    {
        assert!(said.contains(words), "{words:?} missing from: {said}");
    }
    let (_, jj) = api.get(&format!("jobs/{job}")).await;
    assert!(jj["allowed_actions"].as_array().unwrap().iter().any(|a| a == "restart"), "{jj}");

    faults(r#"{"vcenter_connected": true, "replication_bytes_per_s": 0}"#).await;
    let (status, v, _) = api.post(&format!("jobs/{job}/restart"), "{}", None).await;
    assert_eq!(status, 200, "{v}");
    let (_, it) = api.get("items/web01").await;
    assert_eq!(it["item"]["state"], "failback-in-progress", "a restarted failover is a failover again: {it}");
    let j = common::wait_job(&portal.http, &portal.url, &job).await;
    assert_eq!(j["job"]["state"], "succeeded", "{j}");
    let reattach =
        j["job"]["tasks"].as_array().unwrap().iter().find(|t| t["step"] == "reattach-disks").unwrap().clone();
    assert_eq!(reattach["state"], "succeeded", "{j}");
    let (_, it) = api.get("items/web01").await;
    assert_eq!(it["item"]["state"], "failed-back-commit-pending", "{it}");
    assert_eq!(it["item"]["health"], "normal", "{it}");
    assert!(it["item"]["last_failure"].is_null(), "{it}");
}

impl Api {
    async fn delete(&self, path: &str) -> (u16, Value) {
        let r = self.http.delete(format!("{}{path}", self.base)).send().await.unwrap();
        let status = r.status().as_u16();
        (status, serde_json::from_str(&r.text().await.unwrap()).unwrap_or(Value::Null))
    }
}

/// An Administrator connects the real APIs of both sites (govmomi's vCenter simulator, Azurite): each mistake is a
/// 4xx that says what to fix, the inventory shows, a lost vCenter shows as failing, and no credential comes back in
/// an answer, the audit log or the database file.
/// Accounts through the API (issue 12 §6): an Administrator lists, creates (a generated password is answered once),
/// changes roles, disables, enables and signs accounts out everywhere; the last enabled Administrator can be neither
/// demoted nor disabled; anyone changes their own password, which ends their other sessions; no password reaches an
/// answer's list, or the audit log.
#[tokio::test]
async fn accounts_are_managed_through_the_api_and_a_password_change_ends_other_sessions() {
    let portal = Portal::start(&[]);
    let base = portal.url.trim_end_matches('/').to_owned();
    let api = Api { base: format!("{}api/v1/", portal.url), http: portal.http.clone() };
    let anon = reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build().unwrap();
    let sign_in = |name: &'static str, password: String| {
        let (anon, base) = (anon.clone(), base.clone());
        async move {
            let r = anon
                .post(format!("{base}/auth/login"))
                .header("origin", &base)
                .form(&[("name", name), ("password", password.as_str()), ("next", "/")])
                .send()
                .await
                .unwrap();
            r.headers().get("set-cookie").map(|c| c.to_str().unwrap().split(';').next().unwrap().to_owned())
        }
    };
    let me_with_cookie = |cookie: String| {
        let (anon, base) = (anon.clone(), base.clone());
        async move { anon.get(format!("{base}/api/v1/me")).header("cookie", cookie).send().await.unwrap().status().as_u16() }
    };

    // Create: a generated password, answered once; a chosen one is not echoed.
    let (status, v, _) = api.post("accounts", r#"{"name": "olga", "role": "operator"}"#, None).await;
    assert_eq!(status, 201, "{v}");
    assert_eq!(v["account"]["role"], "operator", "{v}");
    let olga_pw = v["password"].as_str().expect("a generated password").to_owned();
    assert!(olga_pw.len() >= 12, "{v}");
    let (status, v, _) =
        api.post("accounts", r#"{"name": "rita", "role": "reader", "password": "rita-password-1"}"#, None).await;
    assert_eq!(status, 201, "{v}");
    assert!(v.get("password").is_none(), "a chosen password is never echoed: {v}");
    for (body, want, says) in [
        (r#"{"name": "olga", "role": "reader"}"#, 409, "already exists"),
        (r#"{"name": "ivan", "role": "reader", "pasword": "x"}"#, 400, "pasword"),
        (r#"{"name": "ivan", "role": "root"}"#, 422, "root"),
        (r#"{"name": "ivan", "role": "reader", "password": "short"}"#, 422, "12 characters"),
        ("not json", 400, "not JSON"),
    ] {
        let (status, v, _) = api.post("accounts", body, None).await;
        assert_eq!(status, want, "{body}: {v}");
        assert!(v["message"].as_str().unwrap().contains(says), "{body}: {v}");
    }

    // The list: roles and live sign-ins, never a secret; Readers may not see it, nor change anything.
    let olga_cookie = sign_in("olga", olga_pw.clone()).await.expect("olga signs in with the generated password");
    let (status, v) = api.get("accounts").await;
    assert_eq!(status, 200, "{v}");
    let list = v["accounts"].as_array().unwrap();
    let names: Vec<&str> = list.iter().map(|a| a["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["admin", "olga", "rita"], "{v}");
    let olga = list.iter().find(|a| a["name"] == "olga").unwrap();
    assert_eq!(
        (olga["role"].as_str(), olga["sessions"].as_u64(), olga["disabled_at"].as_u64()),
        (Some("operator"), Some(1), None)
    );
    assert!(!v.to_string().contains(&olga_pw) && !v.to_string().contains("argon2"), "{v}");
    let rita =
        Api { base: api.base.clone(), http: common::client_with_token(&common::token_for(&portal.data_dir, "rita")) };
    assert_eq!(rita.get("accounts").await.0, 403);
    let (status, v, _) = rita.post("accounts/olga/disable", "", None).await;
    assert_eq!(status, 403, "{v}");

    // Roles: a change applies to the next request; the last enabled Administrator keeps its role.
    let (status, v, _) = api.post("accounts/rita/role", r#"{"role": "operator"}"#, None).await;
    assert_eq!((status, v["account"]["role"].as_str()), (200, Some("operator")), "{v}");
    let (_, me) = rita.get("me").await;
    assert_eq!(me["role"], "operator", "{me}");
    let (status, v, _) = api.post("accounts/admin/role", r#"{"role": "operator"}"#, None).await;
    assert_eq!((status, v["code"].as_str()), (409, Some("last-administrator")), "{v}");
    assert_eq!(api.post("accounts/admin/disable", "", None).await.0, 409);
    let (status, v, _) = api.post("accounts/nobody/disable", "", None).await;
    assert_eq!(status, 404, "{v}");
    let (status, v, _) = api.post("accounts/olga/promote", "", None).await;
    assert_eq!(status, 404, "{v}");
    let (status, v, _) = api.post("accounts/olga/disable", r#"{"now": true}"#, None).await;
    assert_eq!(status, 400, "{v}");

    // Disable shuts every door until enabled; revoke signs out but keeps the password.
    let (status, v, _) = api.post("accounts/olga/disable", "", None).await;
    assert_eq!((status, v["sessions_ended"].as_u64()), (200, Some(1)), "{v}");
    assert_eq!(me_with_cookie(olga_cookie.clone()).await, 401);
    assert!(sign_in("olga", olga_pw.clone()).await.is_none(), "a disabled account cannot sign in");
    let (_, v) = api.get("accounts").await;
    assert!(v["accounts"][1]["disabled_at"].as_u64().is_some(), "{v}");
    assert_eq!(api.post("accounts/olga/enable", "", None).await.0, 200);
    let olga_cookie = sign_in("olga", olga_pw.clone()).await.expect("enabled: the password works again");
    let (status, v, _) = api.post("accounts/olga/revoke", "{}", None).await;
    assert_eq!((status, v["sessions_ended"].as_u64()), (200, Some(1)), "{v}");
    assert_eq!(me_with_cookie(olga_cookie).await, 401);

    // Her own password: the current one is checked; her other sessions end, the one she changes it from stays.
    let laptop = sign_in("olga", olga_pw.clone()).await.unwrap();
    let phone = sign_in("olga", olga_pw.clone()).await.unwrap();
    let change = |cookie: String, body: Value| {
        let (anon, base) = (anon.clone(), base.clone());
        async move {
            let r = anon
                .post(format!("{base}/api/v1/me/password"))
                .header("cookie", cookie)
                .header("origin", &base)
                .json(&body)
                .send()
                .await
                .unwrap();
            (r.status().as_u16(), r.json::<Value>().await.unwrap())
        }
    };
    let new_pw = "olga-new-password-2026";
    let (status, v) =
        change(laptop.clone(), json!({"current_password": "not-hers-at-all", "new_password": new_pw})).await;
    assert_eq!(status, 422, "{v}");
    assert!(v["message"].as_str().unwrap().contains("current password is wrong"), "{v}");
    let (status, v) = change(laptop.clone(), json!({"current_password": olga_pw, "new_password": "short"})).await;
    assert_eq!(status, 422, "{v}");
    let (status, v) = change(laptop.clone(), json!({"current_password": olga_pw, "new_password": new_pw})).await;
    assert_eq!((status, v["sessions_ended"].as_u64()), (200, Some(1)), "{v}");
    assert_eq!(me_with_cookie(laptop).await, 200, "the session it was changed from stays");
    assert_eq!(me_with_cookie(phone).await, 401, "the other session ended");
    assert!(sign_in("olga", olga_pw.clone()).await.is_none(), "the old password no longer signs in");
    assert!(sign_in("olga", new_pw.to_owned()).await.is_some());

    // Every change is audited, under the account acted on, without a password.
    let (_, log) = api.get("audit").await;
    let actions: Vec<String> = log["entries"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["target"] == "olga" && e["action"].as_str().unwrap().starts_with(['a', 'p']))
        .map(|e| format!("{} {}", e["action"].as_str().unwrap(), e["outcome"].as_str().unwrap()))
        .collect();
    for want in [
        "account-create applied",
        "account-disable applied",
        "account-enable applied",
        "account-revoke applied",
        "password-change failed",
        "password-change applied",
    ] {
        assert!(actions.iter().any(|a| a == want), "{want} in {actions:?}");
    }
    let text = log.to_string();
    assert!(!text.contains(&olga_pw) && !text.contains(new_pw) && !text.contains("rita-password-1"), "{log}");
}

/// The primary site as a connected vCenter (govmomi's simulator, a VM of it named after the Windows master target,
/// one datastore vSAN). The connection carries the name of the items' original vCenter, so the rules see its hosts, datastores and
/// master targets as vCenter reports them, and the jobs act through the vim25 API: an alternate-location reprotect
/// creates the VM with CreateVM_Task and writes its VMDK in the VM's folder on the datastore; the failover attaches
/// the disk at the chosen point and powers the VM on; commit, then re-protect to the cloud reads the VMDK. An item
/// whose VM is in vCenter fails back to it (original location, a delta into its own disk). The disks are compared
/// with qemu-img at each step. A vCenter that stops answering then refuses failovers (R-C4).
/// A VM of a vCenter connection's last inventory, by name.
fn vm_named(connection: &Value, name: &str) -> Option<Value> {
    connection["connection"]["inventory"]["inventory"]["vms"].as_array()?.iter().find(|m| m["name"] == name).cloned()
}

#[tokio::test]
async fn an_item_fails_back_into_a_connected_vcenter_through_its_api() {
    let vcsim = emulators::Vcsim::start_with(&["--vms", "mt-win-01,web01", "--vsan", "LocalDS_1"]);
    let portal = Portal::start(&[]);
    let api = Api { base: format!("{}api/v1/", portal.url), http: portal.http.clone() };
    let (status, _, _) = api.post("infrastructure/faults", r#"{"guest_bytes_per_tick": 0}"#, None).await;
    assert_eq!(status, 200);
    let conn = json!({"kind": "vcenter", "name": "vcenter-01", "url": vcsim.url, "user": vcsim.user,
                      "password": vcsim.password, "thumbprint": vcsim.thumbprint});
    let (s, v, _) = api.post("connections", &conn.to_string(), None).await;
    assert_eq!(s, 201, "{v}");

    // The choices and the checks come from vCenter: a vSAN datastore is refused for a new VM (R-L9).
    let body = |ds: &str| json!({"master_target": "mt-win-01", "process_server": "ps-azure-01", "datastore": ds});
    let (s, plan, _) = api.post("items/app02/reprotect?dry_run=true", &body("LocalDS_1").to_string(), None).await;
    assert_eq!(s, 200, "{plan}");
    let refused: Vec<&str> = plan["checks"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| c["passed"] == false)
        .map(|c| c["rule"].as_str().unwrap())
        .collect();
    assert_eq!(refused, ["R-L9"], "{plan}");
    let (_, plan, _) = api.post("items/app02/reprotect?dry_run=true", &body("LocalDS_0").to_string(), None).await;
    assert!(plan["checks"].as_array().unwrap().iter().all(|c| c["passed"] == true), "{plan}");
    let host = plan["target_host"].as_str().unwrap().to_owned();
    assert!(host.starts_with("DC0_"), "the master target's host as vCenter runs it: {plan}");

    let job = api.act("app02", "reprotect", body("LocalDS_0"), "vc-reprotect").await;
    let created: Value = serde_json::from_str(job["job"]["tasks"][0]["result"].as_str().unwrap()).unwrap();
    assert_eq!((created["vcenter"].as_str(), created["vm"].as_str()), (Some("vcenter-01"), Some("app02")), "{job}");
    let folder = vcsim.datastores.iter().find(|(n, _)| n == "LocalDS_0").unwrap().1.join("app02");
    let vmdk = folder.join("app02-disk0.vmdk");
    let root = portal.data_dir.join("estate");
    let cloud = |rec: &Value| root.join(rec["cloud_disks"][0].as_str().unwrap());
    let rec = common::estate_record(&portal.data_dir, "app02").await;
    common::same_disk(&vmdk, "vmdk", &cloud(&rec), "vpc", "the VMDK in vCenter's datastore after the full copy");
    let (_, it) = api.get("items/app02").await;
    let onprem = &it["item"]["onprem"];
    assert_eq!((onprem["id"].as_str(), onprem["host"].as_str()), (Some("app02"), Some(host.as_str())), "{it}");
    assert_eq!(onprem["disks"][0]["datastore"], "LocalDS_0");
    let vm = |v: &Value| vm_named(v, "app02");
    let (_, v, _) = api.post("connections/vcenter-01/refresh", "{}", None).await;
    let made = vm(&v).expect("CreateVM_Task made the VM");
    assert_eq!((made["power"].as_str(), made["host"].as_str()), (Some("off"), Some(host.as_str())), "{made}");

    // A drill in vCenter: the test VM is made by CreateVM_Task with its one adapter on the network an Administrator
    // marked isolated, the chosen point's disk attached, and powered on; its cleanup destroys it.
    let (s, v, _) = api.post("infrastructure/networks/VM%20Network", r#"{"isolated": true}"#, None).await;
    assert_eq!((s, v["network"]["vcenter"].as_str()), (200, Some("vcenter-01")), "{v}");
    let job = api.act("app02", "test-failover", json!({"network": "VM Network"}), "vc-drill").await;
    let drill = job["job"]["id"].as_str().unwrap().to_owned();
    let (_, v, _) = api.post("connections/vcenter-01/refresh", "{}", None).await;
    let test_vm = vm_named(&v, "app02-test").expect("the test VM in vCenter");
    assert_eq!(test_vm["power"], "on", "{test_vm}");
    assert_eq!(test_vm["disks"], json!(["[LocalDS_0] app02-test/app02-test-disk0.vmdk"]), "{test_vm}");
    let test_disk = folder.with_file_name("app02-test").join("app02-test-disk0.vmdk");
    common::same_disk(&test_disk, "vmdk", &cloud(&rec), "vpc", "the test VM's disk holds the point");
    let (_, report) = api.get(&format!("drills/{drill}")).await;
    let checks = report["drill"]["checks"].as_array().unwrap();
    assert!(checks.iter().all(|c| c["passed"] == true), "{report}");
    assert!(report.to_string().contains("its one adapter is on VM Network"), "vCenter reports the adapter: {report}");
    assert_eq!(vm(&v).unwrap()["power"], "off", "the item's own VM is left alone");
    api.act("app02", "cleanup-test-failover", json!({"notes": "vCenter drill"}), "vc-drill-c").await;
    let (_, v, _) = api.post("connections/vcenter-01/refresh", "{}", None).await;
    assert!(vm_named(&v, "app02-test").is_none(), "the cleanup destroyed the test VM");
    assert!(!test_disk.exists(), "and its disk");
    api.post("infrastructure/networks/VM%20Network", r#"{"isolated": false}"#, None).await;

    // Someone powers app02's VM on in vCenter, behind Homeward's back, while the item is protected to on-premises:
    // vCenter's next report puts the item in split-brain (nothing resyncs on its own); keeping the cloud copy
    // powers the VM off through vCenter and the item is protected again.
    let vc = orchestrator::connectors::vsphere::Vcenter::connect(orchestrator::connectors::vsphere::VcenterConfig {
        url: vcsim.url.clone(),
        user: vcsim.user.clone(),
        password: vcsim.password.clone(),
        thumbprint: Some(orchestrator::connectors::Thumbprint::parse(&vcsim.thumbprint).unwrap()),
    })
    .await
    .unwrap();
    let id = vc.inventory().await.unwrap().vms.into_iter().find(|v| v.name == "app02").unwrap().id;
    vc.power_on(&id).await.unwrap();
    let (_, it) = api.get("items/app02").await;
    assert_eq!(it["item"]["state"], "protected-to-primary", "nothing is known before vCenter reports it: {it}");
    api.post("connections/vcenter-01/refresh", "{}", None).await;
    let deadline = Instant::now() + Duration::from_secs(30);
    let it = loop {
        let (_, it) = api.get("items/app02").await;
        if it["item"]["state"] == "split-brain" {
            break it;
        }
        assert!(Instant::now() < deadline, "vCenter's report of the VM running made no split-brain: {it}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert_eq!(it["item"]["split_brain"]["intruder"], "primary", "{it}");
    let reason = json!({"reason": "started by mistake in vCenter; the cloud copy is production"});
    api.act("app02", "keep-cloud-copy", reason, "vc-sb").await;
    let (_, v, _) = api.post("connections/vcenter-01/refresh", "{}", None).await;
    assert_eq!(vm(&v).unwrap()["power"], "off", "the losing VM was powered off through vCenter");
    let (_, it) = api.get("items/app02").await;
    assert_eq!(it["item"]["state"], "protected-to-primary", "{it}");

    // Failover to the latest point: the cloud VM shuts down, one more cycle, the disk at that point is attached and
    // the VM powered on through vCenter.
    api.act("app02", "failover", json!({"point": {"type": "latest"}}), "vc-failover").await;
    let (_, v, _) = api.post("connections/vcenter-01/refresh", "{}", None).await;
    let running = vm(&v).unwrap();
    assert_eq!(running["power"], "on", "{running}");
    assert_eq!(running["disks"], json!(["[LocalDS_0] app02/app02-disk0-failback.vmdk"]), "{running}");
    common::same_disk(
        &folder.join("app02-disk0-failback.vmdk"),
        "vmdk",
        &cloud(&rec),
        "vpc",
        "the attached VMDK holds the cloud disk at the latest point",
    );
    api.act("app02", "commit", json!({}), "vc-commit").await;

    // Re-protect to the cloud reads the VM's disk on the datastore.
    api.post("infrastructure/faults", r#"{"register_agent": "app02"}"#, None).await;
    api.act("app02", "reprotect-to-cloud", json!({"process_server": "cs-01"}), "vc-rtc").await;
    let rec = common::estate_record(&portal.data_dir, "app02").await;
    let onprem_disk = std::path::PathBuf::from(rec["onprem_disks"][0].as_str().unwrap());
    assert!(onprem_disk.starts_with(&folder), "{rec}");
    common::same_disk(&onprem_disk, "vmdk", &cloud(&rec), "vpc", "the cloud copy of the VM in vCenter");

    // Original location: web01's VM is in vCenter (its disk a VMDK on LocalDS_0 holding the VM's data from before the
    // failover to the cloud). The reprotect powers it off and sends only the changes into its disk; the failover
    // detaches that disk, attaches the one at the chosen point and powers the VM on.
    let (_, v, _) = api.post("connections/vcenter-01/refresh", "{}", None).await;
    let web01 = vm_named(&v, "web01").expect("the simulator's VM named web01");
    let backing = web01["disks"][0].as_str().unwrap().to_owned();
    let (ds, rel) = backing.trim_start_matches('[').split_once("] ").unwrap();
    let disk = vcsim.datastores.iter().find(|(n, _)| n == ds).unwrap().1.join(rel);
    let estate_disk =
        root.join(common::estate_record(&portal.data_dir, "web01").await["onprem_disks"][0].as_str().unwrap());
    // The simulator's own files for that disk make way for a VMDK holding web01's data.
    let _ = std::fs::remove_file(&disk);
    let _ = std::fs::remove_file(disk.with_file_name(rel.rsplit('/').next().unwrap().replace(".vmdk", "-flat.vmdk")));
    let image = replicator::DiskImage::create(&disk, replicator::Format::Vmdk, 16 << 20).unwrap();
    std::fs::copy(replicator::DiskImage::open(&estate_disk).unwrap().data_path, &image.data_path).unwrap();
    let web = json!({"master_target": "mt-win-01", "process_server": "ps-azure-01"});
    let (_, plan, _) = api.post("items/web01/reprotect?dry_run=true", &web.to_string(), None).await;
    assert_eq!(plan["location"], "original", "{plan}");
    assert!(plan["checks"].as_array().unwrap().iter().all(|c| c["passed"] == true), "{plan}");
    let (_, it) = api.get("items/web01").await;
    assert_eq!(it["item"]["onprem"]["host"], web01["host"], "the VM's host as vCenter reports it: {it}");
    assert_eq!(it["item"]["onprem"]["disks"][0]["datastore"], ds);
    let job = api.act("web01", "reprotect", web, "vc-web-r").await;
    let sent = job["job"]["tasks"].as_array().unwrap().iter().find(|t| t["step"] == "initial-replication").unwrap()
        ["bytes"]
        .as_u64()
        .unwrap();
    assert!(sent > 0 && sent < 16 << 20, "only the changes went into the VM's disk: {sent}");
    let (_, v, _) = api.post("connections/vcenter-01/refresh", "{}", None).await;
    assert_eq!(vm_named(&v, "web01").unwrap()["power"], "off");
    let rec = common::estate_record(&portal.data_dir, "web01").await;
    common::same_disk(&disk, "vmdk", &cloud(&rec), "vpc", "the VM's own disk in vCenter after the delta");
    api.act("web01", "failover", json!({"point": {"type": "latest"}}), "vc-web-f").await;
    let (_, v, _) = api.post("connections/vcenter-01/refresh", "{}", None).await;
    let running = vm_named(&v, "web01").unwrap();
    let failback = backing.replace(".vmdk", "-failback.vmdk");
    assert_eq!((&running["power"], &running["disks"]), (&json!("on"), &json!([failback])), "{running}");
    let failback_file =
        disk.with_file_name(disk.file_name().unwrap().to_str().unwrap().replace(".vmdk", "-failback.vmdk"));
    common::same_disk(&failback_file, "vmdk", &cloud(&rec), "vpc", "web01 at the latest point");

    // Someone removes web01's VM in vCenter before the failback is committed: cancelling the failback stops at its
    // first step with vCenter's answer and what to check, and the item shows it.
    let id = vc.inventory().await.unwrap().vms.into_iter().find(|v| v.name == "web01").unwrap().id;
    vc.power_off(&id).await.unwrap();
    vc.destroy_vm(&id).await.unwrap();
    let (s, v, _) = api.post("items/web01/cancel-failover", "{}", Some("vc-web-x")).await;
    assert_eq!(s, 202, "{v}");
    let job = common::wait_job(&portal.http, &portal.url, v["job_id"].as_str().unwrap()).await;
    assert_eq!(job["job"]["state"], "failed", "{job}");
    let (_, it) = api.get("items/web01").await;
    let failure = &it["item"]["last_failure"];
    assert!(
        failure["error"]
            .as_str()
            .unwrap()
            .contains("vCenter vcenter-01, power off: the VM web01 is not in its inventory"),
        "{it}"
    );
    assert!(failure["recommended_action"].as_str().unwrap().contains("removed or renamed"), "{it}");

    // vCenter stops answering: its last check fails, and a failover to one of its hosts is refused (R-C4).
    api.act("lin01", "reprotect", json!({"master_target": "mt-linux-01", "process_server": "ps-azure-01"}), "vc-lin")
        .await;
    drop(vcsim);
    let (_, v, _) = api.post("connections/vcenter-01/refresh", "{}", None).await;
    assert!(v["connection"]["last_error"].as_str().unwrap().contains("cannot be reached"), "{v}");
    let (s, err, _) = api.post("items/lin01/failover", &json!({"point": {"type": "latest"}}).to_string(), None).await;
    assert_eq!((s, err["rule"].as_str()), (409, Some("R-C4")), "{err}");
    assert!(err["message"].as_str().unwrap().contains("vcenter-01"), "{err}");
}

/// Both sites through their real APIs: app02's cloud disk is a page blob in a storage account (Azurite) holding
/// data the estate's file does not have, and its VM is made in vCenter (the simulator). The reprotect binds the item
/// to the account and copies the blob into the new VM's VMDK; writes to the blob after it reach the failback through
/// the final cycle; commit deletes the blob; re-protect writes a new blob from the VM's disk. `qemu-img compare`
/// checks the VMDK against the VHD read back from the blob at each step.
#[tokio::test]
async fn an_item_whose_cloud_disk_is_a_page_blob_fails_back_into_vcenter_and_returns_to_a_blob() {
    use orchestrator::connectors::azure_blob::{Container, Credential, StorageConfig};
    let vcsim = emulators::Vcsim::start_with(&["--vms", "mt-win-01,web01"]);
    let azurite = emulators::Azurite::start();
    let portal = Portal::start(&[]);
    let api = Api { base: format!("{}api/v1/", portal.url), http: portal.http.clone() };
    api.post("infrastructure/faults", r#"{"guest_bytes_per_tick": 0}"#, None).await;
    let blobs = Container::new(StorageConfig {
        url: azurite.url.clone(),
        container: "vhds".into(),
        credential: Credential::SharedKey(emulators::AZURITE_KEY.into()),
        thumbprint: Some(orchestrator::connectors::Thumbprint::parse(&azurite.thumbprint).unwrap()),
    })
    .unwrap();
    blobs.create_container().await.unwrap();
    let root = portal.data_dir.join("estate");
    let rec = common::estate_record(&portal.data_dir, "app02").await;
    let estate_cloud = root.join(rec["cloud_disks"][0].as_str().unwrap());
    blobs.upload_file("app02-disk0.vhd", &estate_cloud).await.unwrap();
    let web01 = common::estate_record(&portal.data_dir, "web01").await;
    let web01_cloud = root.join(web01["cloud_disks"][0].as_str().unwrap());
    blobs.upload_file("web01-disk0.vhd", &web01_cloud).await.unwrap();
    blobs.put_pages("web01-disk0.vhd", 9 << 20, vec![0x3c; 4096]).await.unwrap();
    // The cloud VM wrote after the failover to Azure: only the blob has it.
    blobs.put_pages("app02-disk0.vhd", 3 << 20, vec![0x5a; 64 << 10]).await.unwrap();
    let scratch = tempfile::tempdir().unwrap();
    // The estate's file becomes the process server's cache of the blob: keep what it held.
    let before = scratch.path().join("before.vhd");
    std::fs::copy(&estate_cloud, &before).unwrap();
    let read_back = |name: &'static str| {
        let (blobs, path) = (&blobs, scratch.path().join(name));
        async move {
            blobs.download_file(name, &path).await.unwrap();
            path
        }
    };

    let vc = json!({"kind": "vcenter", "name": "vcenter-01", "url": vcsim.url, "user": vcsim.user,
                    "password": vcsim.password, "thumbprint": vcsim.thumbprint});
    assert_eq!(api.post("connections", &vc.to_string(), None).await.0, 201);
    let sa = json!({"kind": "storage-account", "name": "azure-disks", "url": azurite.url, "container": "vhds",
                    "account_key": emulators::AZURITE_KEY, "thumbprint": azurite.thumbprint});
    let (s, v, _) = api.post("connections", &sa.to_string(), None).await;
    assert_eq!(s, 201, "{v}");

    let body = json!({"master_target": "mt-win-01", "process_server": "ps-azure-01", "datastore": "LocalDS_0"});
    api.act("app02", "reprotect", body, "blob-reprotect").await;
    let rec = common::estate_record(&portal.data_dir, "app02").await;
    assert_eq!(rec["cloud_storage"], "azure-disks", "bound to the account holding its disk: {rec}");
    let (_, it) = api.get("items/app02").await;
    let cloud_vm = &it["item"]["cloud_vm"];
    assert_eq!(
        (&cloud_vm["storage_account"], &cloud_vm["blobs"]),
        (&json!("azure-disks"), &json!(["app02-disk0.vhd"]))
    );
    let folder = vcsim.datastores.iter().find(|(n, _)| n == "LocalDS_0").unwrap().1.join("app02");
    let vmdk = folder.join("app02-disk0.vmdk");
    let blob = read_back("app02-disk0.vhd").await;
    common::same_disk(&vmdk, "vmdk", &blob, "vpc", "the VMDK in vCenter holds the page blob");
    let differs = std::process::Command::new("qemu-img")
        .args(["compare", "-q", "-f", "vmdk", "-F", "vpc"])
        .arg(&vmdk)
        .arg(&before)
        .status()
        .unwrap();
    assert!(!differs.success(), "the data came from the blob, not from the estate's old file");

    // More writes in the cloud before the failover: its final cycle reads them from a snapshot of the blob.
    blobs
        .put_pages("app02-disk0.vhd", 5 << 20, b"the last order before the failback".repeat(16)[..512].to_vec())
        .await
        .unwrap();
    let job = api.act("app02", "failover", json!({"point": {"type": "latest"}}), "blob-failover").await;
    let last = job["job"]["tasks"].as_array().unwrap().iter().find(|t| t["step"] == "final-cycle").unwrap().clone();
    let result: Value = serde_json::from_str(last["result"].as_str().unwrap()).unwrap();
    let read = result["blob_bytes_read"].as_u64().unwrap();
    assert!(read > 0 && read < 16 << 20, "only the blob's written pages were read: {result}");
    let blob = read_back("app02-disk0.vhd").await;
    common::same_disk(&folder.join("app02-disk0-failback.vmdk"), "vmdk", &blob, "vpc", "the failback at the latest");

    // Commit deletes the cloud VM's disk in the storage account.
    api.act("app02", "commit", json!({}), "blob-commit").await;
    assert!(!blobs.list().await.unwrap().contains(&"app02-disk0.vhd".to_owned()), "the blob is deleted");

    // Re-protect to the cloud writes the VM's disk as a new page blob, only its written blocks.
    api.post("infrastructure/faults", r#"{"register_agent": "app02"}"#, None).await;
    let job = api.act("app02", "reprotect-to-cloud", json!({"process_server": "cs-01"}), "blob-rtc").await;
    let first = job["job"]["tasks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["step"] == "initial-replication-to-cloud")
        .unwrap()
        .clone();
    let result: Value = serde_json::from_str(first["result"].as_str().unwrap()).unwrap();
    let written = result["blob_bytes_written"].as_u64().unwrap();
    // The demo's guest wrote all over its disk: every block but the footer's page holds data.
    assert!(written > 8 << 20 && written <= (16 << 20) + 512, "{result}");
    let rec = common::estate_record(&portal.data_dir, "app02").await;
    let onprem = std::path::PathBuf::from(rec["onprem_disks"][0].as_str().unwrap());
    let blob = read_back("app02-reprotected-disk0.vhd").await;
    common::same_disk(&onprem, "vmdk", &blob, "vpc", "the blob written by the re-protect holds the VM's disk");

    // Original location: web01's VM is in vCenter (its VMDK holds its data from before the failover to the cloud).
    // The reprotect sends only what differs from the blob into that VMDK; commit deletes the blob.
    let (_, v, _) = api.post("connections/vcenter-01/refresh", "{}", None).await;
    let backing =
        vm_named(&v, "web01").expect("the simulator's VM named web01")["disks"][0].as_str().unwrap().to_owned();
    let (ds, rel) = backing.trim_start_matches('[').split_once("] ").unwrap();
    let disk = vcsim.datastores.iter().find(|(n, _)| n == ds).unwrap().1.join(rel);
    let _ = std::fs::remove_file(&disk);
    let _ = std::fs::remove_file(disk.with_file_name(rel.rsplit('/').next().unwrap().replace(".vmdk", "-flat.vmdk")));
    let image = replicator::DiskImage::create(&disk, replicator::Format::Vmdk, 16 << 20).unwrap();
    let onprem = root.join(web01["onprem_disks"][0].as_str().unwrap());
    std::fs::copy(replicator::DiskImage::open(&onprem).unwrap().data_path, &image.data_path).unwrap();
    let web = json!({"master_target": "mt-win-01", "process_server": "ps-azure-01"});
    let job = api.act("web01", "reprotect", web, "blob-web-r").await;
    let sent = job["job"]["tasks"].as_array().unwrap().iter().find(|t| t["step"] == "initial-replication").unwrap()
        ["bytes"]
        .as_u64()
        .unwrap();
    assert!(sent > 0 && sent < 16 << 20, "only the changes went into the VM's disk: {sent}");
    let blob = read_back("web01-disk0.vhd").await;
    common::same_disk(&disk, "vmdk", &blob, "vpc", "web01's own VMDK holds its page blob");
    api.act("web01", "failover", json!({"point": {"type": "latest"}}), "blob-web-f").await;
    let failback = disk.with_file_name(disk.file_name().unwrap().to_str().unwrap().replace(".vmdk", "-failback.vmdk"));
    common::same_disk(&failback, "vmdk", &blob, "vpc", "web01 at the latest point");
    api.act("web01", "commit", json!({}), "blob-web-c").await;
    assert!(!blobs.list().await.unwrap().contains(&"web01-disk0.vhd".to_owned()), "web01's blob is deleted");

    // A lease held on the blob (someone else's copy) stops the next write to it with the cause and what to do.
    blobs.acquire_lease("app02-reprotected-disk0.vhd", -1).await.unwrap();
    let knobs = r#"{"guest_bytes_per_tick": 65536, "crash_consistent_every_ms": 1000}"#;
    assert_eq!(api.post("infrastructure/faults", knobs, None).await.0, 200);
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let (_, it) = api.get("items/app02").await;
        let text = it.to_string();
        if text.contains("active lease") {
            assert!(text.contains("app02-reprotected-disk0.vhd"), "{it}");
            break;
        }
        assert!(Instant::now() < deadline, "the held lease never showed on the item: {it}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// vCenter stops answering in the middle of a failover (the link to it fails; the last check still said it was
/// connected, so the failover was allowed): the first step that needs it fails with vCenter's cause, the job waits
/// 2 s, then 4 s before the next attempts, and finishes by itself once vCenter answers again.
#[tokio::test]
async fn a_failover_waits_out_a_vcenter_that_stops_answering_and_finishes_when_it_is_back() {
    let vcsim = emulators::Vcsim::start_with(&["--vms", "mt-win-01"]);
    let mut gate = emulators::Gate::new(&vcsim.url);
    let portal = Portal::start(&[]);
    let api = Api { base: format!("{}api/v1/", portal.url), http: portal.http.clone() };
    api.post("infrastructure/faults", r#"{"guest_bytes_per_tick": 0}"#, None).await;
    let conn = json!({"kind": "vcenter", "name": "vcenter-01", "url": gate.url, "user": vcsim.user,
                      "password": vcsim.password, "thumbprint": vcsim.thumbprint});
    assert_eq!(api.post("connections", &conn.to_string(), None).await.0, 201);
    let body = json!({"master_target": "mt-win-01", "process_server": "ps-azure-01", "datastore": "LocalDS_0"});
    api.act("app02", "reprotect", body, "gate-r").await;

    gate.close();
    let (s, v, _) = api.post("items/app02/failover", &json!({"point": {"type": "latest"}}).to_string(), None).await;
    assert_eq!(s, 202, "{v}");
    let job = v["job_id"].as_str().unwrap().to_owned();
    let deadline = Instant::now() + Duration::from_secs(30);
    let waiting = loop {
        let (_, j) = api.get(&format!("jobs/{job}")).await;
        let task = j["job"]["tasks"].as_array().unwrap().iter().find(|t| t["attempts"].as_i64() >= Some(2)).cloned();
        if let Some(t) = task.filter(|t| !t["next_attempt_at"].is_null()) {
            break t;
        }
        assert_ne!(j["job"]["state"], "failed", "{j}");
        assert!(Instant::now() < deadline, "no second attempt: {j}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let error = waiting["error"].as_str().unwrap();
    assert!(error.contains("vCenter vcenter-01") && error.contains("cannot be reached"), "{waiting}");
    assert_eq!(waiting["step"], "reattach-disks", "the steps before it needed no vCenter: {waiting}");
    let (started, next) = (waiting["started_at"].as_u64().unwrap(), waiting["next_attempt_at"].as_u64().unwrap());
    assert!(next >= started + 4_000, "the second wait is twice the first: {waiting}");

    gate.open();
    let j = common::wait_job(&portal.http, &portal.url, &job).await;
    assert_eq!(j["job"]["state"], "succeeded", "{j}");
    let (_, v, _) = api.post("connections/vcenter-01/refresh", "{}", None).await;
    assert_eq!(vm_named(&v, "app02").unwrap()["power"], "on", "{v}");
}

/// The cloud VMs in an Azure subscription (Azure Resource Manager's stand-in, answering as the API specification's
/// examples do): a failover powers the item's cloud VM off, commit deletes it and then its managed disk, and a
/// resource lock that makes the power-off fail stops the failover with Azure's cause and what to do. The client
/// secret is checked when the subscription is added and never shown.
#[tokio::test]
async fn the_cloud_vm_in_an_azure_subscription_is_powered_off_and_deleted_through_resource_manager() {
    let arm = arm::Arm::start("rg-dr", &["azvm-lin01", "azvm-web01"]);
    let portal = Portal::start(&[]);
    let api = Api { base: format!("{}api/v1/", portal.url), http: portal.http.clone() };
    api.post("infrastructure/faults", r#"{"guest_bytes_per_tick": 0}"#, None).await;
    let subscription = |secret: &str| {
        json!({"kind": "azure-subscription", "name": "azure-dr", "tenant": arm::TENANT, "client_id": arm::CLIENT_ID,
               "client_secret": secret, "subscription": arm::SUBSCRIPTION, "resource_group": "rg-dr",
               "management_url": arm.url, "authority_url": arm.url, "thumbprint": arm.thumbprint})
        .to_string()
    };
    let (s, v, _) = api.post("connections", &subscription("not-the-secret"), None).await;
    assert_eq!(s, 422, "{v}");
    assert!(v["message"].as_str().unwrap().contains("refused the credentials of application homeward-failback"), "{v}");
    let (s, v, _) = api.post("connections", &subscription(arm::CLIENT_SECRET), None).await;
    assert_eq!(s, 201, "{v}");
    assert!(!v.to_string().contains(arm::CLIENT_SECRET), "{v}");
    let vms: Vec<&str> =
        v["connection"]["inventory"]["vms"].as_array().unwrap().iter().map(|m| m["name"].as_str().unwrap()).collect();
    assert_eq!(vms, ["azvm-lin01", "azvm-web01"], "{v}");

    api.act("lin01", "reprotect", json!({"master_target": "mt-linux-01", "process_server": "ps-azure-01"}), "az-r")
        .await;
    let job = api.act("lin01", "failover", json!({"point": {"type": "latest"}}), "az-f").await;
    assert_eq!(arm.vm("azvm-lin01").unwrap().power, "stopped", "powered off through Resource Manager");
    let shut =
        job["job"]["tasks"].as_array().unwrap().iter().find(|t| t["step"] == "shut-down-cloud-vm").unwrap().clone();
    let result: Value = serde_json::from_str(shut["result"].as_str().unwrap()).unwrap();
    assert_eq!((&result["azure"]["vm"], &result["azure"]["changed"]), (&json!("azvm-lin01"), &json!(true)), "{result}");

    let job = api.act("lin01", "commit", json!({}), "az-c").await;
    assert!(arm.vm("azvm-lin01").is_none(), "the cloud VM is deleted");
    assert!(!arm.disks().iter().any(|d| d.ends_with("/azvm-lin01_OsDisk")), "and its managed disk: {:?}", arm.disks());
    let delete =
        job["job"]["tasks"].as_array().unwrap().iter().find(|t| t["step"] == "delete-cloud-vm").unwrap().clone();
    let result: Value = serde_json::from_str(delete["result"].as_str().unwrap()).unwrap();
    assert_eq!(result["deleted_in_azure"], json!(["VM azvm-lin01", "disk azvm-lin01_OsDisk"]), "{result}");
    let requests = arm.requests();
    let vm = format!(
        "/subscriptions/{}/resourceGroups/rg-dr/providers/Microsoft.Compute/virtualMachines/azvm-lin01",
        arm::SUBSCRIPTION
    );
    for expected in [
        format!("POST {vm}/powerOff?api-version=2024-07-01"),
        format!("DELETE {vm}?api-version=2024-07-01"),
        format!("DELETE /subscriptions/{}/resourceGroups/rg-dr/providers/Microsoft.Compute/disks/azvm-lin01_OsDisk?api-version=2024-03-02", arm::SUBSCRIPTION),
    ] {
        assert!(requests.contains(&expected), "{expected} in {requests:#?}");
    }
    let delete_vm = requests.iter().position(|r| r.starts_with(&format!("DELETE {vm}?"))).unwrap();
    let delete_disk = requests.iter().position(|r| r.contains("/disks/azvm-lin01_OsDisk")).unwrap();
    let polled = requests[delete_vm..delete_disk].iter().any(|r| r.contains("/operations/"));
    assert!(polled, "the VM's deletion was followed to its end before its disk went: {requests:#?}");
    assert!(arm.tokens_issued() <= 3, "the token is kept while it is valid: {}", arm.tokens_issued());

    // A resource lock refuses the power-off: the failover stops there, with Azure's cause, and says what to do.
    arm.refuse_power_off("azvm-web01");
    api.act("web01", "reprotect", json!({"master_target": "mt-win-01", "process_server": "ps-azure-01"}), "az-wr")
        .await;
    let (s, v, _) = api.post("items/web01/failover", &json!({"point": {"type": "latest"}}).to_string(), None).await;
    assert_eq!(s, 202, "{v}");
    let job = common::wait_job(&portal.http, &portal.url, v["job_id"].as_str().unwrap()).await;
    assert_eq!(job["job"]["state"], "failed", "{job}");
    let (_, it) = api.get("items/web01").await;
    let failure = &it["item"]["last_failure"];
    let error = failure["error"].as_str().unwrap();
    assert!(error.contains("Azure subscription azure-dr, power off VM azvm-web01") && error.contains("lock"), "{it}");
    assert!(failure["recommended_action"].as_str().unwrap().contains("azure-dr"), "{it}");
    assert_eq!(arm.vm("azvm-web01").unwrap().power, "running");
}

/// Split-brain found through Azure (issue 12 §4): after a failback the cloud VM is powered off through Resource
/// Manager; someone starts it again in the Azure portal before commit. Homeward asks Azure for the VM's instance view,
/// finds it running, and puts the item in split-brain before a cycle overwrites anything; commit is refused until
/// the operator chooses a copy.
#[tokio::test]
async fn a_cloud_vm_started_in_azure_before_commit_is_a_split_brain() {
    let arm = arm::Arm::start("rg-dr", &["azvm-web01"]);
    let portal = Portal::start(&[]);
    let api = Api { base: format!("{}api/v1/", portal.url), http: portal.http.clone() };
    api.post("infrastructure/faults", r#"{"guest_bytes_per_tick": 0}"#, None).await;
    let subscription = json!({"kind": "azure-subscription", "name": "azure-dr", "tenant": arm::TENANT,
        "client_id": arm::CLIENT_ID, "client_secret": arm::CLIENT_SECRET, "subscription": arm::SUBSCRIPTION,
        "resource_group": "rg-dr", "management_url": arm.url, "authority_url": arm.url, "thumbprint": arm.thumbprint});
    let (s, v, _) = api.post("connections", &subscription.to_string(), None).await;
    assert_eq!(s, 201, "{v}");
    api.act("web01", "reprotect", json!({"master_target": "mt-win-01", "process_server": "ps-azure-01"}), "sb-r").await;
    api.act("web01", "failover", json!({"point": {"type": "latest"}}), "sb-f").await;
    assert_eq!(arm.vm("azvm-web01").unwrap().power, "stopped");
    // Waiting for commit, with the cloud VM off: no split-brain.
    let (_, it) = api.get("items/web01").await;
    assert_eq!(it["item"]["state"], "failed-back-commit-pending", "{it}");

    arm.set_power("azvm-web01", "running");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    let it = loop {
        let (_, it) = api.get("items/web01").await;
        if it["item"]["state"] == "split-brain" {
            break it;
        }
        assert!(std::time::Instant::now() < deadline, "the running cloud VM was not noticed: {it}");
        tokio::time::sleep(std::time::Duration::from_millis(250)).await;
    };
    assert_eq!(it["item"]["split_brain"]["intruder"], "recovery", "{it}");
    let errors = it["item"]["health_errors"].to_string();
    assert!(errors.contains("the cloud VM was started again before commit"), "{errors}");
    assert!(arm.requests().iter().any(|r| r.contains("/virtualMachines/azvm-web01?") && r.contains("instanceView")));
    let (s, v, _) = api.post("items/web01/commit", "{}", None).await;
    assert_eq!(s, 409, "commit waits for the operator's choice: {v}");
}

/// R-C2 from what vCenter reports: the Windows master target is a VM of the connected vCenter with a snapshot, so a
/// failover through it is refused before any job starts, naming the rule and what to do.
#[tokio::test]
async fn a_master_target_snapshot_in_vcenter_refuses_the_failover() {
    let vcsim = emulators::Vcsim::start_with(&["--vms", "mt-win-01", "--snapshot", "mt-win-01"]);
    let portal = Portal::start(&[]);
    let api = Api { base: format!("{}api/v1/", portal.url), http: portal.http.clone() };
    api.post("infrastructure/faults", r#"{"guest_bytes_per_tick": 0}"#, None).await;
    let conn = json!({"kind": "vcenter", "name": "vcenter-01", "url": vcsim.url, "user": vcsim.user,
                      "password": vcsim.password, "thumbprint": vcsim.thumbprint});
    assert_eq!(api.post("connections", &conn.to_string(), None).await.0, 201);
    let (_, infra) = api.get("infrastructure").await;
    assert!(infra.to_string().contains("mt-win-01"), "{infra}");
    let body = json!({"master_target": "mt-win-01", "process_server": "ps-azure-01", "datastore": "LocalDS_0"});
    api.act("app02", "reprotect", body, "snap-r").await;
    let fo = json!({"point": {"type": "latest-processed"}}).to_string();
    let (s, err, _) = api.post("items/app02/failover", &fo, Some("snap-f")).await;
    assert_eq!((s, err["rule"].as_str()), (409, Some("R-C2")), "{err}");
    assert!(err["message"].as_str().unwrap().contains("mt-win-01"), "{err}");
    assert_eq!(api.get("jobs?item=app02").await.1["jobs"].as_array().unwrap().len(), 1, "only the reprotect ran");
}

#[tokio::test]
async fn site_connections_are_checked_against_the_real_apis_and_keep_their_secrets() {
    let vcsim = emulators::Vcsim::start();
    let azurite = emulators::Azurite::start();
    let portal = Portal::start(&[]);
    let api = Api { base: format!("{}api/v1/", portal.url), http: portal.http.clone() };
    let vc = |extra: Value| {
        let mut b = json!({"kind": "vcenter", "name": "vc-prod", "url": vcsim.url, "user": vcsim.user,
                           "password": vcsim.password, "thumbprint": vcsim.thumbprint});
        for (k, v) in extra.as_object().unwrap() {
            if v.is_null() {
                b.as_object_mut().unwrap().remove(k);
            } else {
                b[k] = v.clone();
            }
        }
        b.to_string()
    };

    // Mistakes: each a 4xx naming the field or the cause.
    let (s, v, _) = api.post("connections", &vc(json!({"pasword": "x"})), None).await;
    assert_eq!((s, v["code"].as_str()), (400, Some("bad-request")), "{v}");
    assert!(v["message"].as_str().unwrap().contains("pasword"), "{v}");
    let (s, v, _) = api.post("connections", &json!({"kind": "hyper-v"}).to_string(), None).await;
    assert_eq!(s, 400, "{v}");
    let (s, v, _) = api.post("connections", &vc(json!({"password": "wrong-password"})), None).await;
    assert_eq!(s, 422, "{v}");
    assert!(v["message"].as_str().unwrap().contains("refused the credentials"), "{v}");
    let (s, v, _) = api.post("connections", &vc(json!({"thumbprint": null})), None).await;
    assert_eq!(s, 422, "{v}");
    assert!(v["message"].as_str().unwrap().contains(&vcsim.thumbprint), "the thumbprint to confirm is shown: {v}");
    let (s, v, _) =
        api.post("connections", &vc(json!({"url": format!("https://127.0.0.1:{}", common::free_port())})), None).await;
    assert_eq!(s, 422, "{v}");
    assert!(v["message"].as_str().unwrap().contains("cannot be reached"), "{v}");
    let reader = common::client_with_token(&portal.add_user("rita", "reader"));
    let r = reader
        .post(format!("{}connections", api.base))
        .header("content-type", "application/json")
        .body(vc(json!({})))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 403);

    // The vCenter, then its inventory; never its password.
    let (s, v, _) = api.post("connections", &vc(json!({})), None).await;
    assert_eq!(s, 201, "{v}");
    assert!(!v.to_string().contains(&vcsim.password));
    let inv = &v["connection"]["inventory"]["inventory"];
    assert_eq!(inv["hosts"].as_array().unwrap().len(), 2, "{v}");
    assert_eq!(inv["datastores"].as_array().unwrap().len(), 2, "{v}");
    assert!(inv["vms"].as_array().unwrap().iter().all(|vm| vm["disks"][0].as_str().unwrap().ends_with(".vmdk")), "{v}");
    let (s, v, _) = api.post("connections", &vc(json!({})), None).await;
    assert_eq!((s, v["code"].as_str()), (409, Some("name-taken")), "{v}");

    // The storage account: an expired SAS is refused with its expiry; the account key works.
    let sa = |cred: Value| {
        let mut b = json!({"kind": "storage-account", "name": "azure-disks", "url": azurite.url, "container": "vhds",
                           "thumbprint": azurite.thumbprint});
        for (k, v) in cred.as_object().unwrap() {
            b[k] = v.clone();
        }
        b.to_string()
    };
    let expired = "sv=2021-12-02&ss=b&srt=sco&sp=rl&se=2020-01-01T00%3A00%3A00Z&spr=https&sig=c2lnbmF0dXJl";
    let (s, v, _) = api.post("connections", &sa(json!({"sas": expired})), None).await;
    assert_eq!(s, 422, "{v}");
    assert!(v["message"].as_str().unwrap().contains("has expired") && !v.to_string().contains("c2lnbmF0dXJl"), "{v}");
    let (s, v, _) = api.post("connections", &sa(json!({"account_key": emulators::AZURITE_KEY})), None).await;
    assert_eq!(s, 422, "the container does not exist yet: {v}");
    assert!(v["message"].as_str().unwrap().contains("create it"), "{v}");
    create_container(&azurite, "vhds").await;
    let (s, v, _) = api.post("connections", &sa(json!({"account_key": emulators::AZURITE_KEY})), None).await;
    assert_eq!(s, 201, "{v}");
    assert_eq!(v["connection"]["credential"], "shared-key");

    // The CLI lists both with what they reported.
    let out = common::homeward(&portal.data_dir)
        .args(["connections", "list", "--server", &portal.url, "--token", &portal.token])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(text.contains("vc-prod") && text.contains("2 host(s)") && text.contains("azure-disks"), "{text}");

    // vCenter goes away: checking again keeps the last inventory and says why it fails.
    let id = {
        let (_, l) = api.get("connections").await;
        l["connections"].as_array().unwrap().iter().find(|c| c["name"] == "vc-prod").unwrap()["id"]
            .as_str()
            .unwrap()
            .to_owned()
    };
    drop(vcsim);
    let (s, v, _) = api.post(&format!("connections/{id}/refresh"), "{}", None).await;
    assert_eq!(s, 200, "{v}");
    assert!(v["connection"]["last_error"].as_str().unwrap().contains("cannot be reached"), "{v}");
    assert_eq!(v["connection"]["inventory"]["inventory"]["hosts"].as_array().unwrap().len(), 2);

    // Removed, then gone.
    let (s, _) = api.delete("connections/vc-prod").await;
    assert_eq!(s, 200);
    let (s, _) = api.get(&format!("connections/{id}")).await;
    assert_eq!(s, 404);

    // No secret in the audit log (every role reads it) nor in the database file.
    let (_, audit) = api.get("audit").await;
    let audit = audit.to_string();
    assert!(audit.contains("connection-add") && audit.contains("connection-remove"), "{audit}");
    for secret in ["wrong-password", emulators::AZURITE_KEY, "c2lnbmF0dXJl"] {
        assert!(!audit.contains(secret), "{secret} in the audit log");
    }
    if let Some(db) = std::fs::read(portal.data_dir.join("homeward.db"))
        .ok()
        .filter(|_| common::database_url(&portal.data_dir).is_none())
    {
        let db = String::from_utf8_lossy(&db);
        assert!(!db.contains(emulators::AZURITE_KEY), "the account key is sealed in the database");
    }
}

/// Creates a container with the account key, as an administrator would in the storage account.
async fn create_container(az: &emulators::Azurite, name: &str) {
    use orchestrator::connectors::azure_blob::{Container, Credential, StorageConfig};
    Container::new(StorageConfig {
        url: az.url.clone(),
        container: name.into(),
        credential: Credential::SharedKey(emulators::AZURITE_KEY.into()),
        thumbprint: Some(orchestrator::connectors::Thumbprint::parse(&az.thumbprint).unwrap()),
    })
    .unwrap()
    .create_container()
    .await
    .unwrap();
}

/// Drills (issue 12 §2): a test failover brings web01's copy up on the primary site from a chosen recovery point, on
/// a network marked isolated — a production one is refused —, while the cloud VM runs and replication goes on. The
/// Drill operator may run and clean up drills and nothing else; the report (point, its age, time to power on, the
/// checks, who, notes) is JSON and CSV; a real failover cleans a live drill up first.
#[tokio::test]
async fn a_drill_runs_on_an_isolated_network_beside_replication_and_leaves_a_report() {
    let portal = Portal::start(&[]);
    let api = Api { base: format!("{}api/v1/", portal.url), http: portal.http.clone() };
    api.post("infrastructure/faults", r#"{"guest_bytes_per_tick": 0}"#, None).await;
    let rp = json!({"master_target": "mt-win-01", "process_server": "ps-azure-01"});
    api.act("web01", "reprotect", rp, "d-r1").await;

    let drill_op = common::client_with_token(&portal.add_user("dora", "drill-operator"));
    let dora = Api { base: api.base.clone(), http: drill_op };
    // The dialog's networks: the estate has a production one and an isolated one.
    let (_, infra) = api.get("infrastructure").await;
    let nets = infra["inventory"]["networks"].as_array().unwrap().clone();
    assert!(nets.iter().any(|n| n["id"] == "VM Network" && n["isolated"] == false), "{infra}");
    assert!(nets.iter().any(|n| n["id"] == "drill-isolated" && n["isolated"] == true), "{infra}");

    // Refusals: no network, a production network, an unknown one; each says what to do.
    let (status, err, _) = dora.post("items/web01/test-failover", "{}", None).await;
    assert_eq!((status, err["rule"].as_str()), (409, Some("DR-1")), "{err}");
    assert!(err["recommended_action"].as_str().unwrap().contains("drill-isolated"), "{err}");
    let (status, err, _) = dora.post("items/web01/test-failover", r#"{"network": "VM Network"}"#, None).await;
    assert_eq!((status, err["rule"].as_str()), (409, Some("DR-1")), "{err}");
    assert!(err["message"].as_str().unwrap().contains("production network"), "{err}");
    let (status, err, _) = dora.post("items/web01/test-failover", r#"{"network": "nowhere"}"#, None).await;
    assert_eq!((status, err["rule"].as_str()), (409, Some("DR-1")), "{err}");
    let (status, err, _) =
        dora.post("items/web01/test-failover", r#"{"network": "drill-isolated", "netwrk": 1}"#, None).await;
    assert_eq!(status, 400, "an unknown body field is named: {err}");
    // The Drill operator may not touch production.
    let (status, err, _) = dora.post("items/web01/failover", "{}", None).await;
    assert_eq!(status, 403, "{err}");
    let (status, _, _) = dora.post("infrastructure/networks/VM%20Network", r#"{"isolated": true}"#, None).await;
    assert_eq!(status, 403, "marking a network isolated is an Administrator's");

    // The dry run names the point, the network and the tasks; then the drill, by the Drill operator.
    let (_, pts) = api.get("items/web01/points").await;
    let first = pts["points"][0]["id"].as_str().unwrap().to_owned();
    let body = json!({"network": "drill-isolated", "point": {"type": "specific", "id": first}});
    let (status, plan, _) = dora.post("items/web01/test-failover?dry_run=true", &body.to_string(), None).await;
    assert_eq!((status, plan["allowed"].as_bool()), (200, Some(true)), "{plan}");
    assert_eq!(plan["point"]["id"], first.as_str(), "{plan}");
    let job = dora.act("web01", "test-failover", body.clone(), "d-t1").await;
    let steps: Vec<&str> =
        job["job"]["tasks"].as_array().unwrap().iter().map(|t| t["step"].as_str().unwrap()).collect();
    assert_eq!(steps, ["create-test-vm", "power-on-test-vm", "check-test-vm"], "{job}");
    let drill_id = job["job"]["id"].as_str().unwrap().to_owned();

    // Production untouched: still protected, the cloud VM runs; the item shows its live drill.
    let (_, it) = api.get("items/web01").await;
    assert_eq!(it["item"]["state"], "protected-to-primary", "{it}");
    assert_eq!(it["item"]["cloud_vm"]["running"], true, "{it}");
    assert_eq!(it["item"]["drill"]["id"], drill_id.as_str(), "{it}");
    assert_eq!(it["item"]["drill"]["vm"], "web01-test", "{it}");
    let ops = it["allowed_operations"].as_array().unwrap();
    assert!(ops.iter().any(|o| o == "cleanup-test-failover") && ops.iter().any(|o| o == "failover"), "{it}");
    assert!(!ops.iter().any(|o| o == "test-failover"), "one drill at a time: {it}");
    let (status, err, _) = dora.post("items/web01/test-failover", &body.to_string(), None).await;
    assert_eq!((status, err["rule"].as_str()), (409, Some("DR-3")), "{err}");

    // The test VM's disk holds the chosen point (the job's own check compared digests with the replica's journal);
    // the guest has been quiet since the reprotect, so that point's bytes are the cloud disk's.
    let rec = common::estate_record(&portal.data_dir, "web01").await;
    let root = portal.data_dir.join("estate");
    let test_disk = root.join(it["item"]["drill"]["disks"][0].as_str().unwrap());
    assert!(test_disk.exists(), "{}", test_disk.display());
    let cloud = root.join(rec["cloud_disks"][0].as_str().unwrap());
    common::same_disk(&test_disk, "vmdk", &cloud, "vpc", "the test VM's disk is the chosen point");

    // A drill's job is the Drill operator's to act on (an ended one cannot be cancelled: 409, not 403); a
    // production job is not.
    let (status, err, _) = dora.post(&format!("jobs/{drill_id}/cancel"), "", None).await;
    assert_eq!(status, 409, "{err}");
    let (_, jobs) = api.get("jobs?kind=reprotect").await;
    let reprotect = jobs["jobs"][0]["job"]["id"].as_str().unwrap().to_owned();
    let (status, err, _) = dora.post(&format!("jobs/{reprotect}/cancel"), "", None).await;
    assert_eq!(status, 403, "{err}");

    // Replication goes on beside the drill: a newer point arrives while the test VM exists.
    let before = pts["points"].as_array().unwrap().len();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let (_, p) = api.get("items/web01/points").await;
        if p["points"].as_array().unwrap().len() > before {
            break;
        }
        assert!(Instant::now() < deadline, "no recovery point since the drill started: {p}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    // The report: the point and its age, time to power on, every check passed, who ran it.
    let (status, report) = api.get(&format!("drills/{drill_id}")).await;
    assert_eq!(status, 200, "{report}");
    let d = &report["drill"];
    assert_eq!(
        (d["item"].as_str(), d["network"].as_str(), d["status"].as_str()),
        (Some("web01"), Some("drill-isolated"), Some("running")),
        "{d}"
    );
    assert_eq!(d["point"]["id"], first.as_str(), "{d}");
    assert!(d["point_age_ms"].as_u64().is_some() && d["time_to_power_on_ms"].as_u64().is_some(), "{d}");
    assert_eq!(d["started_by"], "dora", "{d}");
    let checks = d["checks"].as_array().unwrap();
    assert_eq!(checks.len(), 4, "{d}");
    assert!(checks.iter().all(|c| c["passed"] == true), "{d}");
    let csv = api.http.get(format!("{}drills/{drill_id}?format=csv", api.base)).send().await.unwrap();
    assert_eq!(csv.headers()["content-type"], "text/csv; charset=utf-8");
    assert!(csv.headers()["content-disposition"].to_str().unwrap().contains("drill-web01-"));
    let csv = csv.text().await.unwrap();
    assert_eq!(csv.lines().count(), 1 + 4, "a header and one line per check: {csv}");
    assert!(csv.contains("\"disks hold the recovery point\",\"yes\""), "{csv}");
    let (status, err) = api.get(&format!("drills/{drill_id}?format=pdf")).await;
    assert_eq!(status, 400, "{err}");
    let (status, _) = api.get("drills/no-such-drill").await;
    assert_eq!(status, 404);

    // Cleanup with notes, by the Drill operator: the test VM's disks go, the report keeps the notes.
    let (status, err, _) =
        dora.post("items/web01/cleanup-test-failover", &json!({"notes": "x".repeat(4001)}).to_string(), None).await;
    assert_eq!((status, err["rule"].as_str()), (409, Some("DR-4")), "{err}");
    dora.act(
        "web01",
        "cleanup-test-failover",
        json!({"notes": "App answered on the isolated network; login OK."}),
        "d-c1",
    )
    .await;
    assert!(!test_disk.exists(), "the cleanup deletes the test VM's disks");
    let (_, it) = api.get("items/web01").await;
    assert!(it["item"]["drill"].is_null(), "{it}");
    let (_, report) = api.get(&format!("drills/{drill_id}")).await;
    assert_eq!(report["drill"]["status"], "cleaned-up", "{report}");
    assert_eq!(report["drill"]["notes"], "App answered on the isolated network; login OK.", "{report}");
    assert_eq!(report["drill"]["cleaned_by"], "dora", "{report}");
    let (status, err, _) = dora.post("items/web01/cleanup-test-failover", "{}", None).await;
    assert_eq!((status, err["rule"].as_str()), (409, Some("DR-3")), "nothing left to clean up: {err}");

    // A network an Administrator marks isolated can take a drill; the mark is audited.
    let (status, v, _) = api.post("infrastructure/networks/VM%20Network", r#"{"isolated": true}"#, None).await;
    assert_eq!((status, v["network"]["isolated"].as_bool()), (200, Some(true)), "{v}");
    let (status, _, _) = api.post("infrastructure/networks/nowhere", r#"{"isolated": true}"#, None).await;
    assert_eq!(status, 404);
    api.post("infrastructure/networks/VM%20Network", r#"{"isolated": false}"#, None).await;
    let (_, audit) = api.get("audit?target=VM%20Network").await;
    assert!(audit.to_string().contains("network-isolation"), "{audit}");

    // A second drill, then the real failover: the drill is cleaned up first, as its first tasks.
    dora.act("web01", "test-failover", json!({"network": "drill-isolated"}), "d-t2").await;
    let (_, plan, _) = api.post("items/web01/failover?dry_run=true", "{}", None).await;
    assert_eq!(plan["tasks"][0]["step"], "remove-test-vm", "{plan}");
    let job = api.act("web01", "failover", json!({}), "d-f1").await;
    let steps: Vec<&str> =
        job["job"]["tasks"].as_array().unwrap().iter().map(|t| t["step"].as_str().unwrap()).collect();
    assert_eq!(&steps[..2], ["remove-test-vm", "record-cleanup"], "{job}");
    let (_, it) = api.get("items/web01").await;
    assert_eq!(it["item"]["state"], "failed-back-commit-pending", "{it}");
    assert!(it["item"]["drill"].is_null(), "{it}");
    let (_, list) = api.get("drills?item=web01").await;
    let list = list["drills"].as_array().unwrap().clone();
    assert_eq!(list.len(), 2, "{list:?}");
    assert_eq!(list[0]["status"], "cleaned-up");
    assert_eq!(list[0]["cleanup_job"], job["job"]["id"], "{list:?}");
    assert!(list[0]["notes"].as_str().unwrap().contains("Cleaned up by the failover"), "{list:?}");
    let (_, audit) = api.get("audit?user=dora").await;
    let text = audit.to_string();
    assert!(text.contains("test-failover") && text.contains("cleanup-test-failover"), "{audit}");
}

/// Protection settings (issue 12 §5): chosen with the reprotect — its dry run refuses settings that do not hold
/// (PS-1) —, read and replaced later at their own address (422 saying what to enter, 400 for an unknown field, 403
/// for a Reader), audited. Retention's pruning is proven in the core's tests (orchestrator/tests/workflows.rs).
#[tokio::test]
async fn protection_settings_are_chosen_with_the_reprotect_and_changed_later() {
    let portal = Portal::start(&[]);
    let api = Api { base: format!("{}api/v1/", portal.url), http: portal.http.clone() };
    let body = |retention: u32, app: u32| {
        json!({"master_target": "mt-win-01", "process_server": "ps-azure-01", "retention_min": retention,
               "app_consistent_every_min": app, "rpo_threshold_min": 5})
    };
    let (status, plan, _) = api.post("items/web01/reprotect?dry_run=true", &body(10, 30).to_string(), None).await;
    assert_eq!((status, plan["allowed"].as_bool()), (200, Some(false)), "{plan}");
    let refused: Vec<&Value> = plan["checks"].as_array().unwrap().iter().filter(|c| c["passed"] == false).collect();
    assert_eq!(refused.len(), 1, "{plan}");
    assert_eq!(refused[0]["rule"], "PS-1");
    assert!(refused[0]["refusal"]["message"].as_str().unwrap().contains("shorter than the app-consistent"), "{plan}");
    let (status, err, _) = api.post("items/web01/reprotect", &body(10, 30).to_string(), None).await;
    assert_eq!((status, err["rule"].as_str()), (409, Some("PS-1")), "{err}");

    api.act("web01", "reprotect", body(120, 10), "ps-r1").await;
    let (status, p) = api.get("items/web01/protection").await;
    assert_eq!(status, 200, "{p}");
    assert_eq!(p["chosen"], json!({"retention_min": 120, "app_consistent_every_min": 10, "rpo_threshold_min": 5}));
    assert_eq!(p["effective"], p["chosen"], "{p}");

    let put = |body: &str| {
        let req =
            api.http.put(format!("{}items/web01/protection", api.base)).header("content-type", "application/json");
        req.body(body.to_owned()).send()
    };
    let r = put(r#"{"retention_min": 0}"#).await.unwrap();
    assert_eq!(r.status().as_u16(), 422);
    assert!(r.text().await.unwrap().contains("enter 1 to 43200"));
    let r = put(r#"{"retention": 5}"#).await.unwrap();
    assert_eq!(r.status().as_u16(), 400);
    assert!(r.text().await.unwrap().contains("unknown field"));
    let reader = common::client_with_token(&portal.add_user("rita", "reader"));
    let r = reader
        .put(format!("{}items/web01/protection", api.base))
        .header("content-type", "application/json")
        .body(r#"{"retention_min": 60}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 403);
    let r = put(r#"{"retention_min": 180, "reason": "keep three hours"}"#).await.unwrap();
    assert_eq!(r.status().as_u16(), 200);
    let p: Value = r.json().await.unwrap();
    assert_eq!(p["chosen"], json!({"retention_min": 180, "app_consistent_every_min": null, "rpo_threshold_min": null}));
    assert_eq!(p["effective"], json!({"retention_min": 180, "app_consistent_every_min": 5, "rpo_threshold_min": 15}));
    let (_, audit) = api.get("audit?target=web01").await;
    assert!(
        audit.to_string().contains("protection-settings") && audit.to_string().contains("retention 180 min"),
        "{audit}"
    );
    let (status, _) = api.get("items/nope/protection").await;
    assert_eq!(status, 404);
}

/// A webhook receiver on a loopback port: records each request's headers and body, and answers 500 to the first
/// `fail_first` of them (a receiver that is down for a while).
struct Receiver {
    url: String,
    seen: std::sync::Arc<std::sync::Mutex<Vec<(reqwest::header::HeaderMap, String)>>>,
    _task: tokio::task::JoinHandle<()>,
}

impl Receiver {
    async fn start(fail_first: usize) -> Receiver {
        use axum::http::StatusCode;
        let seen: std::sync::Arc<std::sync::Mutex<Vec<(reqwest::header::HeaderMap, String)>>> = Default::default();
        let calls = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let (s2, c2) = (seen.clone(), calls.clone());
        let app = axum::Router::new().route(
            "/hook",
            axum::routing::post(move |headers: axum::http::HeaderMap, body: String| {
                let (seen, calls) = (s2.clone(), c2.clone());
                async move {
                    if calls.fetch_add(1, std::sync::atomic::Ordering::SeqCst) < fail_first {
                        return StatusCode::INTERNAL_SERVER_ERROR;
                    }
                    let mut h = reqwest::header::HeaderMap::new();
                    for (k, v) in headers.iter() {
                        h.insert(
                            reqwest::header::HeaderName::from_bytes(k.as_str().as_bytes()).unwrap(),
                            v.to_str().unwrap().parse().unwrap(),
                        );
                    }
                    seen.lock().unwrap().push((h, body));
                    StatusCode::NO_CONTENT
                }
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/hook", listener.local_addr().unwrap());
        let task = tokio::spawn(async move {
            axum::serve(listener, app).await.unwrap();
        });
        Receiver { url, seen, _task: task }
    }

    /// Waits (bounded) until an event named `event` arrived whose body satisfies `pick`; returns the body.
    async fn wait_for(&self, event: &str, pick: impl Fn(&Value) -> bool) -> (reqwest::header::HeaderMap, Value) {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let found = self.seen.lock().unwrap().iter().find_map(|(h, b)| {
                let v: Value = serde_json::from_str(b).ok()?;
                (h["x-homeward-event"] == event && pick(&v)).then(|| (h.clone(), v))
            });
            if let Some(f) = found {
                return f;
            }
            assert!(Instant::now() < deadline, "no {event} within 60 s: {:?}", self.seen.lock().unwrap());
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

/// Alerts and webhooks (issue 12 §5): a datastore filled opens an alert (listed, acknowledged by an Operator, not by
/// a Reader) that resolves itself once space is back; a webhook on a local listener receives the alert opening, its
/// resolution and a job's end, each signed with HMAC-SHA256 under the webhook's secret; the receiver failing at
/// first is retried with backoff and the delivery log shows the attempts.
#[tokio::test]
async fn alerts_open_and_resolve_and_webhooks_deliver_them_signed_with_retries() {
    let portal = Portal::start(&[]);
    let api = Api { base: format!("{}api/v1/", portal.url), http: portal.http.clone() };
    let receiver = Receiver::start(2).await;

    let reader = common::client_with_token(&portal.add_user("rita", "reader"));
    let r = reader.post(format!("{}webhooks", api.base)).json(&json!({"url": receiver.url})).send().await.unwrap();
    assert_eq!(r.status().as_u16(), 403);
    let (status, err, _) = api.post("webhooks", r#"{"url": "ftp://hooks.example/x"}"#, None).await;
    assert_eq!(status, 422, "{err}");
    let (status, err, _) = api.post("webhooks", r#"{"url": "https://user:pw@hooks.example/x"}"#, None).await;
    assert_eq!(status, 422, "{err}");
    let (status, _, _) =
        api.post("webhooks", &json!({"url": receiver.url, "events": ["alerts"]}).to_string(), None).await;
    assert_eq!(status, 422, "an unknown event kind");
    let (status, hook, _) = api.post("webhooks", &json!({"url": receiver.url}).to_string(), None).await;
    assert_eq!(status, 201, "{hook}");
    let secret = hook["secret"].as_str().unwrap().to_owned();
    let hook_id = hook["webhook"]["id"].as_str().unwrap().to_owned();
    let (_, list) = api.get("webhooks").await;
    assert!(!list.to_string().contains(&secret), "the secret is answered once, never listed: {list}");

    // A datastore fills: its alert opens.
    api.post("infrastructure/faults", r#"{"fill_datastore": "vmfs-02"}"#, None).await;
    let deadline = Instant::now() + Duration::from_secs(30);
    let alert = loop {
        let (_, a) = api.get("alerts").await;
        if let Some(a) = a["alerts"].as_array().unwrap().iter().find(|a| a["subject"] == "vmfs-02").cloned() {
            break a;
        }
        assert!(Instant::now() < deadline, "no alert for the full datastore: {a}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert_eq!((alert["kind"].as_str(), alert["state"].as_str()), (Some("datastore-nearly-full"), Some("open")));
    assert!(alert["message"].as_str().unwrap().contains("Free space"), "{alert}");
    let id = alert["id"].as_str().unwrap().to_owned();
    let r = reader.post(format!("{}alerts/{id}/acknowledge", api.base)).send().await.unwrap();
    assert_eq!(r.status().as_u16(), 403);
    let (status, acked, _) = api.post(&format!("alerts/{id}/acknowledge"), "", None).await;
    assert_eq!((status, acked["alert"]["state"].as_str()), (200, Some("acknowledged")), "{acked}");
    assert_eq!(acked["alert"]["acknowledged_by"], "admin");
    let (status, _, _) = api.post("alerts/alr-nope/acknowledge", "", None).await;
    assert_eq!(status, 404);

    // The webhook hears of it once the receiver is back (its first two answers were 500), signed.
    let (headers, body) = receiver.wait_for("alert.opened", |v| v["alert"]["subject"] == "vmfs-02").await;
    let ts = headers["x-homeward-timestamp"].to_str().unwrap().to_owned();
    let raw = serde_json::to_string(&body).unwrap();
    let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, secret.as_bytes());
    let signed = headers["x-homeward-signature"].to_str().unwrap().strip_prefix("sha256=").unwrap().to_owned();
    let tag: Vec<u8> =
        (0..signed.len()).step_by(2).map(|i| u8::from_str_radix(&signed[i..i + 2], 16).unwrap()).collect();
    let delivered = receiver
        .seen
        .lock()
        .unwrap()
        .iter()
        .find(|(h, _)| h["x-homeward-signature"] == headers["x-homeward-signature"])
        .unwrap()
        .1
        .clone();
    assert!(
        ring::hmac::verify(&key, format!("{ts}.{delivered}").as_bytes(), &tag).is_ok(),
        "the signature checks: {raw}"
    );
    assert!(ring::hmac::verify(&key, format!("{ts}.{delivered} ").as_bytes(), &tag).is_err(), "and binds the body");

    // Space is back: the alert resolves itself; a job's end arrives too.
    api.post("infrastructure/faults", r#"{"free_datastore": "vmfs-02"}"#, None).await;
    receiver.wait_for("alert.resolved", |v| v["alert"]["id"] == id.as_str()).await;
    let (_, open) = api.get("alerts").await;
    assert!(!open.to_string().contains(&id), "resolved alerts leave the open list: {open}");
    let (_, all) = api.get("alerts?state=all").await;
    let resolved = all["alerts"].as_array().unwrap().iter().find(|a| a["id"] == id.as_str()).unwrap().clone();
    assert_eq!(resolved["state"], "resolved", "{resolved}");
    let (status, _, _) = api.post(&format!("alerts/{id}/acknowledge"), "", None).await;
    assert_eq!(status, 409, "nothing to acknowledge once resolved");
    let job = api
        .act("lin01", "reprotect", json!({"master_target": "mt-linux-01", "process_server": "ps-azure-01"}), "wh-r")
        .await;
    let job_id = job["job"]["id"].as_str().unwrap().to_owned();
    let (_, ended) = receiver.wait_for("job.ended", |v| v["job"]["id"] == job_id.as_str()).await;
    assert_eq!(
        (ended["job"]["state"].as_str(), ended["job"]["item"].as_str()),
        (Some("succeeded"), Some("lin01")),
        "{ended}"
    );

    // The delivery log: the first delivery took three attempts (two 500s), every one delivered now.
    let (status, log) = api.get(&format!("webhooks/{hook_id}/deliveries")).await;
    assert_eq!(status, 200, "{log}");
    let log = log["deliveries"].as_array().unwrap().clone();
    let first = log.last().unwrap();
    assert_eq!((first["event"].as_str(), first["attempts"].as_i64()), (Some("alert.opened"), Some(3)), "{log:?}");
    assert!(log.iter().filter(|d| d["state"] == "delivered").count() >= 3, "{log:?}");
    let (status, _) = api.get("webhooks/whk-nope/deliveries").await;
    assert_eq!(status, 404);
    let r = api.http.delete(format!("{}webhooks/{hook_id}", api.base)).send().await.unwrap();
    assert_eq!(r.status().as_u16(), 200);
    let (_, audit) = api.get("audit").await;
    for action in ["webhook-add", "alert-acknowledge", "webhook-remove"] {
        assert!(audit.to_string().contains(action), "{action} is audited");
    }
}

/// A recovery plan's drill (issue 12 §2 and §3): a Drill operator runs every item's test VM from its point, group
/// by group, on the isolated network; each item's drill has a report of its own; the plan's cleanup removes them
/// all. A production network refuses the whole plan; a second drill while one exists too.
#[tokio::test]
async fn a_recovery_plan_is_drilled_as_a_whole_and_cleaned_up() {
    let portal = Portal::start(&[]);
    let api = Api { base: format!("{}api/v1/", portal.url), http: portal.http.clone() };
    api.post("infrastructure/faults", r#"{"guest_bytes_per_tick": 0}"#, None).await;
    for (item, mt) in [("erp-db", "mt-win-01"), ("erp-app", "mt-win-01"), ("erp-web", "mt-linux-01")] {
        api.act(
            item,
            "reprotect",
            json!({"master_target": mt, "process_server": "ps-azure-01"}),
            &format!("pd-{item}"),
        )
        .await;
    }
    let dora =
        Api { base: api.base.clone(), http: common::client_with_token(&portal.add_user("dora", "drill-operator")) };
    let body = |net: &str| json!({"network": net, "point": {"type": "latest-processed"}}).to_string();

    let (status, preview, _) = dora.post("plans/plan-erp/test-failover?dry_run=true", &body("VM Network"), None).await;
    assert_eq!((status, preview["allowed"].as_bool()), (200, Some(false)), "{preview}");
    let rules: Vec<&str> =
        preview["refusals"].as_array().unwrap().iter().map(|r| r["rule"].as_str().unwrap()).collect();
    assert_eq!(rules, ["DR-1"], "one refusal for the plan, however many items share it: {preview}");
    let (status, preview, _) =
        dora.post("plans/plan-erp/test-failover?dry_run=true", &body("drill-isolated"), None).await;
    assert_eq!((status, preview["allowed"].as_bool()), (200, Some(true)), "{preview}");
    let points: Vec<&str> = preview["groups"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|g| g.as_array().unwrap())
        .map(|i| i["point"]["id"].as_str().unwrap())
        .collect();
    assert_eq!(points.len(), 3, "{preview}");
    let (status, _, _) = dora.post("plans/plan-erp/failover", r#"{"point": {"type": "latest-processed"}}"#, None).await;
    assert_eq!(status, 403, "a Drill operator may not fail the plan over");

    let (status, v, _) = dora.post("plans/plan-erp/test-failover", &body("drill-isolated"), Some("pd-t1")).await;
    assert_eq!(status, 202, "{v}");
    let job_id = v["job_id"].as_str().unwrap().to_owned();
    let job = common::wait_job(&portal.http, &portal.url, &job_id).await;
    assert_eq!(job["job"]["state"], "succeeded", "{job}");
    assert_eq!(job["job"]["kind"], "plan-test-failover");
    for item in ["erp-db", "erp-app", "erp-web"] {
        let (_, it) = api.get(&format!("items/{item}")).await;
        let drill = format!("{job_id}.{item}");
        assert_eq!(it["item"]["drill"]["id"], drill.as_str(), "{it}");
        assert_eq!(it["item"]["state"], "protected-to-primary", "{it}");
        let (status, report) = api.get(&format!("drills/{drill}")).await;
        assert_eq!(status, 200, "{report}");
        assert_eq!(
            (report["drill"]["status"].as_str(), report["drill"]["started_by"].as_str()),
            (Some("running"), Some("dora")),
            "{report}"
        );
        assert!(report["drill"]["checks"].as_array().unwrap().iter().all(|c| c["passed"] == true), "{report}");
    }
    let (status, err, _) = dora.post("plans/plan-erp/test-failover", &body("drill-isolated"), None).await;
    assert_eq!((status, err["rule"].as_str()), (409, Some("DR-3")), "{err}");

    let (status, v, _) =
        dora.post("plans/plan-erp/cleanup-test-failover", r#"{"notes": "ERP answered end to end"}"#, None).await;
    assert_eq!(status, 202, "{v}");
    let job = common::wait_job(&portal.http, &portal.url, v["job_id"].as_str().unwrap()).await;
    assert_eq!(job["job"]["state"], "succeeded", "{job}");
    for item in ["erp-db", "erp-app", "erp-web"] {
        let (_, it) = api.get(&format!("items/{item}")).await;
        assert!(it["item"]["drill"].is_null(), "{it}");
        let (_, report) = api.get(&format!("drills/{job_id}.{item}")).await;
        assert_eq!(report["drill"]["status"], "cleaned-up", "{report}");
        assert_eq!(report["drill"]["notes"], "ERP answered end to end");
    }
    let (status, err, _) = dora.post("plans/plan-erp/cleanup-test-failover", "{}", None).await;
    assert_eq!((status, err["rule"].as_str()), (409, Some("DR-3")), "{err}");
    let (status, _, _) = dora.post("plans/plan-erp/drill", "{}", None).await;
    assert_eq!(status, 404, "an unknown plan action");
}

/// Issue 12 §4: the cloud VM started again after a failback, before commit, puts the item in split-brain. The API
/// shows both copies' last writes, refuses commit and a resolution without a reason (SB-2), raises an alert, and
/// ends it only by the operator's choice: the cloud copy's divergent blocks are kept until the next commit.
#[tokio::test]
async fn a_split_brain_is_shown_and_ended_only_by_the_operators_choice_with_a_reason() {
    let portal = Portal::start(&[]);
    let api = Api { base: format!("{}api/v1/", portal.url), http: portal.http.clone() };
    let rp = json!({"master_target": "mt-win-01", "process_server": "ps-azure-01"});
    api.act("web01", "reprotect", rp, "sb-r1").await;
    api.act("web01", "failover", json!({"point": {"type": "latest"}}), "sb-f1").await;
    let (status, err, _) = api.post("infrastructure/faults", r#"{"start_cloud_vm": "nope"}"#, None).await;
    assert_eq!(status, 404, "{err}");
    // Someone starts the cloud VM again, in the Azure portal, before commit.
    let (status, _, _) = api.post("infrastructure/faults", r#"{"start_cloud_vm": "web01"}"#, None).await;
    assert_eq!(status, 200);
    let deadline = Instant::now() + Duration::from_secs(30);
    let it = loop {
        let (_, it) = api.get("items/web01").await;
        if it["item"]["state"] == "split-brain" {
            break it;
        }
        assert!(Instant::now() < deadline, "no split-brain: {it}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let sb = &it["item"]["split_brain"];
    assert_eq!((sb["from"].as_str(), sb["intruder"].as_str()), (Some("failed-back-commit-pending"), Some("recovery")));
    assert!(sb["cloud_last_write_at"].is_u64() && sb["onprem_last_write_at"].is_u64(), "{it}");
    let ops: Vec<&str> = it["allowed_operations"].as_array().unwrap().iter().filter_map(Value::as_str).collect();
    assert!(ops.contains(&"keep-cloud-copy") && ops.contains(&"keep-on-premises-copy"), "{ops:?}");
    assert!(!ops.contains(&"commit"), "{ops:?}");
    let (status, err, _) = api.post("items/web01/commit", "{}", None).await;
    assert_eq!((status, err["rule"].as_str()), (409, Some("R-W3")), "{err}");
    assert!(err["message"].as_str().unwrap().contains("split-brain"), "{err}");
    let (status, err, _) = api.post("items/web01/keep-on-premises-copy", "{}", None).await;
    assert_eq!((status, err["rule"].as_str()), (409, Some("SB-2")), "{err}");
    assert!(err["recommended_action"].as_str().unwrap().contains("Type why"), "{err}");
    let (status, err, _) = api.post("items/sql01/keep-cloud-copy", r#"{"reason": "x"}"#, None).await;
    assert_eq!((status, err["rule"].as_str()), (409, Some("SB-1")), "only an item in split-brain: {err}");

    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (_, a) = api.get("alerts").await;
        let open =
            a["alerts"].as_array().unwrap().iter().find(|a| a["kind"] == "split-brain" && a["subject"] == "web01");
        if let Some(alert) = open {
            assert!(alert["message"].as_str().unwrap().contains("choose the copy that wins"), "{alert}");
            break;
        }
        assert!(Instant::now() < deadline, "no split-brain alert: {a}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    let body = json!({"reason": "the on-premises VM is production since the failback; the cloud start was a mistake"});
    let (status, plan, _) = api.post("items/web01/keep-on-premises-copy?dry_run=true", &body.to_string(), None).await;
    assert_eq!((status, plan["allowed"].as_bool()), (200, Some(true)), "{plan}");
    let job = api.act("web01", "keep-on-premises-copy", body, "sb-k1").await;
    let steps: Vec<&str> =
        job["job"]["tasks"].as_array().unwrap().iter().map(|t| t["step"].as_str().unwrap()).collect();
    assert_eq!(steps, ["keep-divergent-blocks", "shut-down-cloud-vm"], "{job}");
    let (_, it) = api.get("items/web01").await;
    assert_eq!(it["item"]["state"], "failed-back-commit-pending", "{it}");
    assert!(it["item"]["split_brain"].is_null(), "{it}");
    assert_eq!(it["item"]["cloud_vm"]["running"], false, "{it}");
    let kept = &it["item"]["kept_copies"][0];
    assert_eq!((kept["site"].as_str(), kept["job"].as_str()), (Some("recovery"), job["job"]["id"].as_str()), "{it}");
    let file = portal.data_dir.join("estate").join(kept["files"][0].as_str().unwrap());
    assert!(file.exists(), "{}", file.display());
    let (_, audit) = api.get("audit").await;
    assert!(audit.to_string().contains("the cloud start was a mistake"), "the reason is audited");

    // SB-3: the cloud copy's kept blocks are a point to change to before commit, listed with the item's points.
    let kept_job = kept["job"].as_str().unwrap().to_owned();
    let (_, points) = api.get("items/web01/points").await;
    let choice = json!({"type": "kept-copy", "id": kept_job});
    assert!(points["choices"].as_array().unwrap().iter().any(|c| c["choice"] == choice), "{points}");
    let wrong = json!({"point": {"type": "kept-copy", "id": "job-nope"}}).to_string();
    let (status, err, _) = api.post("items/web01/change-recovery-point", &wrong, None).await;
    assert_eq!((status, err["rule"].as_str()), (409, Some("SB-3")), "{err}");
    assert!(err["recommended_action"].as_str().unwrap().contains(&kept_job), "names the kept copies: {err}");
    let (status, err, _) =
        api.post("plans/plan-erp/failover?dry_run=true", &json!({"point": choice}).to_string(), None).await;
    assert!(matches!(status, 200 | 409) && err.to_string().contains("SB-3"), "not for a plan: {status} {err}");
    let body = json!({"point": choice});
    let (status, plan, _) = api.post("items/web01/change-recovery-point?dry_run=true", &body.to_string(), None).await;
    assert_eq!((status, plan["allowed"].as_bool()), (200, Some(true)), "{plan}");
    assert!(plan.to_string().contains("kept from the cloud copy's split-brain"), "{plan}");
    let job = api.act("web01", "change-recovery-point", body, "sb-p1").await;
    let materialised = job["job"]["tasks"].as_array().unwrap().iter().find(|t| t["step"] == "materialise-disks");
    let result: Value = serde_json::from_str(materialised.unwrap()["result"].as_str().unwrap()).unwrap();
    assert_eq!(result["kept_copy"]["job"].as_str(), Some(kept_job.as_str()), "{result}");
    assert_eq!(result["kept_copy"]["site"], "recovery", "{result}");

    // The alert resolves on its own; the commit removes the kept blocks.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (_, a) = api.get("alerts").await;
        if !a["alerts"].as_array().unwrap().iter().any(|a| a["kind"] == "split-brain") {
            break;
        }
        assert!(Instant::now() < deadline, "the split-brain alert stays open: {a}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    api.act("web01", "commit", json!({}), "sb-c1").await;
    let (_, it) = api.get("items/web01").await;
    assert!(it["item"]["kept_copies"].is_null(), "{it}");
    assert!(!file.exists(), "{}", file.display());
}

/// Issue 14 §4: an online verification of an item's on-premises replica (a scrub). Intact after the reprotect; a
/// block that rots on the datastore behind the replicator's back is found, turns the item critical (failover refused
/// by R-C3) and opens an alert; the next cycle compares the whole replica with the cloud copy, rewrites the block and
/// the alert resolves; a verification then finds it intact again.
#[tokio::test]
async fn a_replica_is_verified_in_place_and_a_rotten_block_is_rewritten_by_the_next_cycle() {
    let portal = Portal::start(&[]);
    let api = Api { base: format!("{}api/v1/", portal.url), http: portal.http.clone() };
    let faults = |body: &'static str| {
        let api = &api;
        async move { assert_eq!(api.post("infrastructure/faults", body, None).await.0, 200) }
    };
    // No cycle runs on its own until the test asks for one.
    faults(r#"{"guest_bytes_per_tick": 0, "crash_consistent_every_ms": 3600000, "app_consistent_every_ms": 3600000}"#)
        .await;
    let (status, err, _) = api.post("items/web01/verify-replica", "{}", None).await;
    assert_eq!((status, err["rule"].as_str()), (409, Some("R-W2")), "only a replica protected to on-premises: {err}");
    assert!(err["message"].as_str().unwrap().contains("replica verification needs it protected"), "{err}");
    let (status, err, _) = api.post("items/web01/verify-replicas", "{}", None).await;
    assert_eq!(status, 404, "{err}");
    assert!(err.to_string().contains("verify-replica"), "the actions are named: {err}");
    api.act("web01", "reprotect", json!({"master_target": "mt-win-01", "process_server": "ps-azure-01"}), "vr-r").await;
    let (status, plan, _) = api.post("items/web01/verify-replica?dry_run=true", "{}", None).await;
    assert_eq!((status, plan["allowed"].as_bool()), (200, Some(true)), "{plan}");
    assert_eq!(plan["tasks"][0]["step"], "verify-replica", "{plan}");
    let reader = common::client_with_token(&portal.add_user("rita", "reader"));
    let r = reader.post(format!("{}items/web01/verify-replica", api.base)).body("{}").send().await.unwrap();
    assert_eq!(r.status().as_u16(), 403);

    let result =
        |job: &Value| -> Value { serde_json::from_str(job["job"]["tasks"][0]["result"].as_str().unwrap()).unwrap() };
    let job = api.act("web01", "verify-replica", json!({}), "vr-v1").await;
    let found = result(&job);
    assert_eq!((found["intact"].as_bool(), found["mismatched_blocks"].as_u64()), (Some(true), Some(0)), "{found}");
    assert!(found["bytes_read"].as_u64().unwrap() > 0 && found["blocks"].as_u64().unwrap() > 0, "{found}");
    let (_, it) = api.get("items/web01").await;
    assert_eq!(it["item"]["verification"]["mismatched_blocks"], 0, "{it}");

    // One block of the replica's data file rots on the datastore.
    let mut stack = vec![portal.data_dir.join("estate")];
    let mut flats = Vec::new();
    while let Some(dir) = stack.pop() {
        for e in std::fs::read_dir(&dir).unwrap().flatten() {
            let p = e.path();
            let name = p.to_string_lossy().into_owned();
            if p.is_dir() {
                stack.push(p);
            } else if name.contains("web01") && name.ends_with("-flat.vmdk") && !name.contains("failback") {
                flats.push(p);
            }
        }
    }
    assert_eq!(flats.len(), 1, "web01's replica is one VMDK: {flats:?}");
    {
        use std::os::unix::fs::FileExt;
        let f = std::fs::OpenOptions::new().write(true).open(&flats[0]).unwrap();
        f.write_all_at(b"bit rot", 4096).unwrap();
    }
    let job = api.act("web01", "verify-replica", json!({}), "vr-v2").await;
    let found = result(&job);
    assert_eq!((found["intact"].as_bool(), found["mismatched_blocks"].as_u64()), (Some(false), Some(1)), "{found}");
    assert_eq!(found["disks"][0]["first_mismatched_blocks"], json!([0]), "{found}");
    let (_, it) = api.get("items/web01").await;
    assert_eq!(it["item"]["health"], "critical", "{it}");
    assert!(it["item"]["verification"]["repaired_at"].is_null(), "{it}");
    let (status, plan, _) =
        api.post("items/web01/failover?dry_run=true", r#"{"point": {"type": "latest"}}"#, None).await;
    assert_eq!((status, plan["allowed"].as_bool()), (200, Some(false)), "no failback onto a damaged replica: {plan}");
    assert!(plan.to_string().contains("R-C3"), "{plan}");
    let alert = |open: bool| {
        let api = &api;
        async move {
            let deadline = Instant::now() + Duration::from_secs(30);
            loop {
                let (_, a) = api.get("alerts").await;
                let found = a["alerts"].as_array().unwrap().iter().find(|a| a["kind"] == "replica-damaged").cloned();
                if found.is_some() == open {
                    return found;
                }
                assert!(
                    Instant::now() < deadline,
                    "the replica-damaged alert is not {}: {a}",
                    ["resolved", "open"][open as usize]
                );
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    };
    let opened = alert(true).await.unwrap();
    assert!(opened["message"].as_str().unwrap().contains("do not fail back"), "{opened}");

    // The next cycle compares the whole replica with the cloud copy (its hashes were dropped) and rewrites it.
    faults(r#"{"crash_consistent_every_ms": 100}"#).await;
    let deadline = Instant::now() + Duration::from_secs(30);
    let it = loop {
        let (_, it) = api.get("items/web01").await;
        if it["item"]["verification"]["repaired_at"].is_u64() {
            break it;
        }
        assert!(Instant::now() < deadline, "no cycle rewrote the replica: {it}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert_eq!(it["item"]["health"], "normal", "{it}");
    alert(false).await;
    faults(r#"{"crash_consistent_every_ms": 3600000}"#).await;
    let job = api.act("web01", "verify-replica", json!({}), "vr-v3").await;
    assert_eq!(result(&job)["intact"], true, "{job}");
}

/// Issue 12 §3: recovery plans are created, changed and removed by an Operator (a Reader is refused); a plan is
/// checked whole, every problem named at once (422); a new plan runs like any other (its dry run); removing it leaves
/// its items alone.
#[tokio::test]
async fn recovery_plans_are_created_edited_and_removed_with_every_problem_named() {
    let portal = Portal::start(&[]);
    let api = Api { base: format!("{}api/v1/", portal.url), http: portal.http.clone() };
    let reader = common::client_with_token(&portal.add_user("rita", "reader"));
    let body = json!({"name": "Web tier", "groups": [["web01"], ["app02", "lin01"]]});
    let r = reader.post(format!("{}plans", api.base)).json(&body).send().await.unwrap();
    assert_eq!(r.status().as_u16(), 403);
    let (status, v, _) = api.post("plans", &body.to_string(), None).await;
    assert_eq!(status, 201, "{v}");
    assert_eq!(v["plan"]["id"], "plan-web-tier", "{v}");
    let (status, v) = api.get("plans/plan-web-tier").await;
    assert_eq!((status, v["plan"]["groups"][1][1].as_str()), (200, Some("lin01")), "{v}");

    // Every problem at once, each saying what to enter.
    let bad = json!({"name": "erp FAILBACK", "groups": [["web01", "web01"], [], ["nope", "erp-db"]],
        "protection": {"retention_min": 0}});
    let (status, err, _) = api.post("plans", &bad.to_string(), None).await;
    assert_eq!(status, 422, "{err}");
    let m = err["message"].as_str().unwrap();
    for want in [
        "another plan is named erp FAILBACK",
        "group 2 is empty",
        "web01 is in the plan twice",
        "no replicated item nope",
        "replication group rg-erp fails over to one shared point: add all its items (erp-db, erp-app, erp-web)",
        "the plan's protection settings: the retention is 0 minutes; enter 1 to 43200",
    ] {
        assert!(m.contains(want), "{want:?} in {m}");
    }
    let eight = json!({"name": "Too many", "groups": (0..8).map(|_| vec!["web01"]).collect::<Vec<_>>()});
    let (status, err, _) = api.post("plans", &eight.to_string(), None).await;
    assert_eq!(status, 422, "{err}");
    assert!(err["message"].as_str().unwrap().contains("at most 7"), "{err}");
    let (status, err, _) = api.post("plans", r#"{"name": "x", "groups": [["web01"]], "grups": 1}"#, None).await;
    assert_eq!(status, 400, "{err}");

    // Changed: one group now; the plan's dry run follows it.
    let put = json!({"name": "Web tier", "groups": [["lin01", "web01"]]});
    let r = api.http.put(format!("{}plans/plan-web-tier", api.base)).json(&put).send().await.unwrap();
    assert_eq!(r.status().as_u16(), 200);
    let r = api.http.put(format!("{}plans/plan-nope", api.base)).json(&put).send().await.unwrap();
    assert_eq!(r.status().as_u16(), 404);
    let (status, preview, _) =
        api.post("plans/plan-web-tier/failover?dry_run=true", r#"{"point": {"type": "latest-processed"}}"#, None).await;
    assert_eq!(status, 200, "{preview}");
    let groups = preview["groups"].as_array().unwrap();
    assert_eq!(groups.len(), 1, "{preview}");
    assert_eq!(groups[0][0]["item"], "lin01", "{preview}");

    let (status, _) = api.delete("plans/plan-web-tier").await;
    assert_eq!(status, 200);
    let (status, _) = api.get("plans/plan-web-tier").await;
    assert_eq!(status, 404);
    let (status, _) = api.delete("plans/plan-web-tier").await;
    assert_eq!(status, 404);
    assert_eq!(api.get("items/web01").await.0, 200, "the items stay");
    let (_, audit) = api.get("audit").await;
    assert!(audit.to_string().contains("Web tier: lin01, web01"), "the plan as entered is audited");
}
