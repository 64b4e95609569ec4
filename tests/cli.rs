//! The API's command-line clients against a running server on the demo estate: the refused scenarios name their
//! rule (exit code 3), the article's steps run with --wait, a dry run prints its checks.

use crate::{arm, common};
use common::{run_homeward, Portal};

fn hw(portal: &Portal, args: &[&str]) -> (i32, String, String) {
    let mut all = args.to_vec();
    let server = portal.url.trim_end_matches('/');
    all.extend(["--server", server, "--token", &portal.token]);
    let out = run_homeward(&all);
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn the_cli_drives_the_api_and_explains_refusals() {
    let portal = Portal::start(&[]);

    let (code, out, _) = hw(&portal, &["items"]);
    assert_eq!(code, 0);
    assert!(out.contains("web01") && out.contains("committed-in-cloud") && out.contains("reprotect"), "{out}");

    let alt = ["--master-target", "mt-win-01", "--process-server", "ps-azure-01", "--datastore", "vmfs-01"];
    for (item, rule) in [("phys08", "R-P2"), ("mig01", "R-B1")] {
        let mut args = vec!["reprotect", item];
        args.extend(alt);
        let (code, _, err) = hw(&portal, &args);
        assert_eq!(code, 3, "{item}: {err}");
        assert!(err.contains(&format!("refused ({rule})")) && err.contains("what to do:"), "{item}: {err}");
    }
    let (code, out, _) = hw(&portal, &["items", "phys08"]);
    assert_eq!(code, 0);
    assert!(out.contains("reprotect not allowed (R-P2)"), "{out}");

    let (code, out, err) = hw(
        &portal,
        &["reprotect", "web01", "--master-target", "mt-win-01", "--process-server", "ps-azure-01", "--dry-run"],
    );
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("Original location recovery (R-L1)") && out.contains("[ok  ] R-C1"), "{out}");

    let (code, out, err) = hw(
        &portal,
        &["reprotect", "web01", "--master-target", "mt-win-01", "--process-server", "ps-azure-01", "--wait"],
    );
    assert_eq!(code, 0, "{err}");
    assert!(out.contains(": succeeded") && out.contains("Initial replication"), "{out}");
    let (code, out, err) = hw(&portal, &["verify-replica", "web01", "--wait"]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("replica intact:") && out.contains("blocks compared"), "{out}");
    let (code, out, err) = hw(&portal, &["failover", "web01", "--point", "latest-app-consistent", "--wait"]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("Re-enable VMware Tools (R-T1)"), "{out}");
    let (code, _, err) = hw(&portal, &["commit", "web01", "--wait"]);
    assert_eq!(code, 0, "{err}");
    let (code, out, _) = hw(&portal, &["jobs"]);
    assert_eq!(code, 0);
    assert_eq!(out.lines().filter(|l| l.contains("succeeded")).count(), 4, "{out}");
    // Every operation the API offers has its command: the forward failover (refused until re-protect, R-W4) and
    // a recovery plan's failover with its dry run (each group's items, refused while they have no point).
    let (code, out, _) = hw(&portal, &["failover-to-cloud", "web01", "--dry-run"]);
    assert_eq!(code, 3, "{out}");
    assert!(out.contains("FAIL] R-W4") && out.contains("failover to the cloud needs it protected"), "{out}");
    let (code, out, _) = hw(&portal, &["plan-failover", "plan-erp", "--point", "latest-app-consistent", "--dry-run"]);
    assert_eq!(code, 3, "{out}");
    assert!(out.contains("group 1:") && out.contains("erp-db at no point") && out.contains("R-RP3"), "{out}");
    let (code, _, err) = hw(&portal, &["plan-failover", "no-such-plan", "--dry-run"]);
    assert_eq!(code, 2, "{err}");

    // Job actions as on the job page: cancel a running (throttled) reprotect, restart it once the link is
    // fast again; a finished job cannot be cancelled.
    let faults = |body: &'static str| {
        portal
            .http
            .post(format!("{}api/v1/infrastructure/faults", portal.url))
            .header("content-type", "application/json")
            .body(body)
            .send()
    };
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    assert!(rt.block_on(faults(r#"{"replication_bytes_per_s": 262144}"#)).unwrap().status().is_success());
    // app02 is re-created at an alternate location: a full copy of 16 MiB, about a minute at 256 KiB/s.
    let mut args = vec!["reprotect", "app02"];
    args.extend(alt);
    let (code, out, err) = hw(&portal, &args);
    assert_eq!(code, 0, "{err}");
    let job = out.split_whitespace().nth(1).unwrap().to_owned();
    let (code, out, err) = hw(&portal, &["job-action", &job, "cancel", "--wait"]);
    assert_eq!(code, 1, "the job ends cancelled: {out} {err}");
    assert!(out.contains("cancel asked") && err.contains("cancelled"), "{out} {err}");
    assert!(rt.block_on(faults(r#"{"replication_bytes_per_s": 0}"#)).unwrap().status().is_success());
    let (code, out, err) = hw(&portal, &["job-action", &job, "restart", "--wait"]);
    assert_eq!(code, 0, "{out} {err}");
    assert!(out.contains(": succeeded"), "{out}");
    let (code, _, err) = hw(&portal, &["job-action", &job, "cancel"]);
    assert_eq!(code, 2, "{err}");
    let (code, _, err) = hw(&portal, &["job-action", &job, "explode"]);
    assert_eq!(code, 2, "{err}");
    let (code, _, err) = hw(&portal, &["jobs", "no-such-job"]);
    assert_eq!(code, 2, "{err}");
    let out = run_homeward(&["items", "--server", "http://127.0.0.1:1"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("cannot reach the server"), "{err}");

    // Without a token the API says how to get one; a Reader's token may read but not act.
    let out = run_homeward(&["items", "--server", portal.url.trim_end_matches('/')]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("homeward users token") && err.contains("HOMEWARD_TOKEN"), "{err}");
    let reader = portal.add_user("rita", "reader");
    let server = portal.url.trim_end_matches('/');
    let out = run_homeward(&["items", "--server", server, "--token", &reader]);
    assert_eq!(out.status.code(), Some(0));
    let out = run_homeward(&["reprotect-to-cloud", "web01", "--server", server, "--token", &reader]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("Your role, Reader, cannot"), "{err}");
}

/// Accounts from the command line (issue 12 §6): `homeward password` changes the token's own account password
/// through the API (current and new on standard input), `homeward users role` changes a role in the database, and
/// the last enabled Administrator keeps its role.
#[test]
fn passwords_and_roles_from_the_command_line() {
    use std::io::Write;
    let portal = Portal::start(&[]);
    let token = portal.add_user("olga", "operator");
    let server = portal.url.trim_end_matches('/').to_owned();
    let password = |stdin: String| {
        let mut child = common::homeward(&portal.data_dir)
            .args(["password", "--server", &server, "--token", &token])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        child.stdin.take().unwrap().write_all(stdin.as_bytes()).unwrap();
        let out = child.wait_with_output().unwrap();
        let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
        (out.status.code().unwrap_or(-1), text)
    };
    let (code, text) = password("only-one-line\n".into());
    assert_eq!(code, 2, "{text}");
    assert!(text.contains("two lines"), "{text}");
    let (code, text) = password("not-her-password\nolga-new-password-1\n".into());
    assert_ne!(code, 0, "{text}");
    assert!(text.contains("current password is wrong"), "{text}");
    let (code, text) = password(format!("{}\nolga-new-password-1\n", common::ADMIN_PASSWORD));
    assert_eq!(code, 0, "{text}");
    assert!(text.contains("password changed"), "{text}");

    let users = |args: &[&str]| portal.users(args);
    let out = users(&["role", "olga", "--role", "reader"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "olga: Reader");
    let list = String::from_utf8_lossy(&users(&["list"]).stdout).into_owned();
    assert!(list.contains("olga\treader"), "{list}");
    let out = users(&["role", "admin", "--role", "operator"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("last enabled Administrator"));
}

/// `homeward connections add-azure` adds the recovery site's Azure subscription (the client secret read from a file,
/// never printed) and `list` shows its resource group's VMs; a wrong secret is refused with the cause.
#[test]
fn the_cli_connects_an_azure_subscription() {
    let arm = arm::Arm::start("rg-dr", &["azvm-web01"]);
    let portal = Portal::start(&[]);
    let dir = tempfile::tempdir().unwrap();
    let secret = dir.path().join("secret");
    let add = |name: &str| {
        vec![
            "connections".to_owned(),
            "add-azure".into(),
            name.into(),
            "--tenant".into(),
            arm::TENANT.into(),
            "--client-id".into(),
            arm::CLIENT_ID.into(),
            "--subscription".into(),
            arm::SUBSCRIPTION.into(),
            "--resource-group".into(),
            "rg-dr".into(),
            "--management-url".into(),
            arm.url.clone(),
            "--authority-url".into(),
            arm.url.clone(),
            "--thumbprint".into(),
            arm.thumbprint.clone(),
            "--secret-file".into(),
            secret.display().to_string(),
        ]
    };
    std::fs::write(&secret, "wrong").unwrap();
    let args = add("azure-dr");
    let (code, _, err) = hw(&portal, &args.iter().map(String::as_str).collect::<Vec<_>>());
    assert_ne!(code, 0);
    assert!(err.contains("refused the credentials of application homeward-failback"), "{err}");
    std::fs::write(&secret, arm::CLIENT_SECRET).unwrap();
    let (code, out, err) = hw(&portal, &args.iter().map(String::as_str).collect::<Vec<_>>());
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("resource group rg-dr: 1 VM(s)") && out.contains("VM azvm-web01"), "{out}");
    assert!(!out.contains(arm::CLIENT_SECRET) && !err.contains(arm::CLIENT_SECRET));
    let (code, out, _) = hw(&portal, &["connections", "list"]);
    assert_eq!(code, 0);
    assert!(out.contains("azure-dr") && out.contains("azvm-web01_OsDisk"), "{out}");
}

/// Drills from the command line: the networks with their isolation, a production network refused (exit 3, DR-1),
/// a test failover and its cleanup with notes, the report as text and CSV; marking a network isolated.
#[test]
fn the_cli_runs_a_drill_and_prints_its_report() {
    let portal = Portal::start(&[]);
    let (code, _, err) = hw(
        &portal,
        &["reprotect", "lin01", "--master-target", "mt-linux-01", "--process-server", "ps-azure-01", "--wait"],
    );
    assert_eq!(code, 0, "{err}");
    let (code, out, _) = hw(&portal, &["networks", "list"]);
    assert_eq!(code, 0);
    assert!(out.contains("drill-isolated") && out.contains("isolated") && out.contains("production"), "{out}");

    let (code, _, err) = hw(&portal, &["test-failover", "lin01", "--network", "VM Network"]);
    assert_eq!(code, 3, "{err}");
    assert!(err.contains("refused (DR-1)") && err.contains("production network"), "{err}");
    let (code, out, err) = hw(&portal, &["test-failover", "lin01", "--network", "drill-isolated", "--dry-run"]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("Create test VM lin01-test") && out.contains("[ok  ] DR-1"), "{out}");
    let (code, out, err) = hw(&portal, &["test-failover", "lin01", "--network", "drill-isolated", "--wait"]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains(": succeeded") && out.contains("Power on test VM lin01-test"), "{out}");
    let (code, out, err) =
        hw(&portal, &["cleanup-test-failover", "lin01", "--notes", "booted; SSH answered", "--wait"]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains(": succeeded"), "{out}");

    let (code, out, _) = hw(&portal, &["drills", "--item", "lin01"]);
    assert_eq!(code, 0);
    assert!(out.contains("cleaned-up") && out.contains("4/4 passed"), "{out}");
    let id = out.lines().nth(1).and_then(|l| l.split_whitespace().next()).unwrap().to_owned();
    let (code, out, _) = hw(&portal, &["drills", &id]);
    assert_eq!(code, 0);
    assert!(out.contains("test VM lin01-test") && out.contains("notes: booted; SSH answered"), "{out}");
    assert!(out.contains("[ok  ] the test VM runs"), "{out}");
    let (code, out, _) = hw(&portal, &["drills", &id, "--csv"]);
    assert_eq!(code, 0);
    assert!(out.starts_with("drill,item,vm,") && out.lines().count() == 5, "{out}");
    let (code, _, err) = hw(&portal, &["drills", "no-such-drill"]);
    assert_eq!(code, 2, "{err}");

    let (code, out, err) =
        hw(&portal, &["protection", "set", "lin01", "--retention-min", "90", "--rpo-threshold-min", "10"]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("recovery points kept: 90 min") && out.contains("RPO threshold: 10 min"), "{out}");
    assert!(out.contains("app-consistent point every: 5 min (vault default)"), "{out}");
    let (code, _, err) = hw(&portal, &["protection", "set", "lin01", "--retention-min", "0"]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("enter 1 to 43200"), "{err}");
    let (code, out, _) = hw(&portal, &["protection", "show", "lin01"]);
    assert_eq!(code, 0);
    assert!(out.contains("recovery points kept: 90 min"), "{out}");

    let (code, out, err) = hw(&portal, &["networks", "isolate", "VM Network"]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("network VM Network: isolated"), "{out}");
    let (code, _, err) = hw(&portal, &["networks", "production", "no-such-net"]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("no network"), "{err}");

    // Split-brain (issue 12 §4): only an item in it may be resolved; a reason is required; then the cloud copy wins.
    let keep = ["resolve-split-brain", "lin01", "--keep", "cloud", "--reason", "the cloud VM is production"];
    let (code, _, err) = hw(&portal, &keep);
    assert_eq!(code, 3, "{err}");
    assert!(err.contains("refused (SB-1)"), "{err}");
    let (code, _, err) = hw(&portal, &["resolve-split-brain", "lin01", "--keep", "nowhere", "--reason", "x"]);
    assert_eq!(code, 2, "{err}");
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let faults = format!("{}api/v1/infrastructure/faults", portal.url);
    let (status, v) = rt.block_on(common::post(&portal.http, &faults, r#"{"start_onprem_vm": "lin01"}"#, "sb-cli"));
    assert_eq!(status, 200, "{v}");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        let (_, out, _) = hw(&portal, &["items"]);
        if out.lines().any(|l| l.contains("lin01") && l.contains("split-brain")) {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "no split-brain: {out}");
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
    let (code, _, err) = hw(&portal, &["resolve-split-brain", "lin01", "--keep", "cloud", "--reason", " "]);
    assert_eq!(code, 3, "{err}");
    assert!(err.contains("refused (SB-2)"), "{err}");
    let (code, out, err) = hw(&portal, &[&keep[..], &["--wait"]].concat());
    assert_eq!(code, 0, "{err}");
    assert!(out.contains(": succeeded") && out.contains("Keep the on-premises VM's divergent blocks"), "{out}");
    let (_, out, _) = hw(&portal, &["items"]);
    assert!(out.lines().any(|l| l.contains("lin01") && l.contains("protected-to-primary")), "{out}");
    // SB-3: the on-premises VM's kept blocks are a point the failover can take, named kept:<resolving job>.
    let (code, out, _) = hw(&portal, &["failover", "lin01", "--point", "kept:job-nope", "--dry-run"]);
    assert_eq!(code, 3, "{out}");
    assert!(out.contains("[FAIL] SB-3") && out.contains("no blocks kept from a split-brain resolved by job job-nope"));
    let item = rt.block_on(common::get(&portal.http, &format!("{}api/v1/items/lin01", portal.url)));
    let kept = format!("kept:{}", item["item"]["kept_copies"][0]["job"].as_str().unwrap());
    let (code, out, err) = hw(&portal, &["failover", "lin01", "--point", &kept, "--dry-run"]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("blocks kept from the on-premises copy's split-brain"), "{out}");

    // A recovery plan's reprotect (issue 12 §3): the dry run shows each item's master target, by its operating
    // system; one master target for both systems is refused with R-W1; then the plan reprotects and waits.
    let rp = ["plan-reprotect", "plan-erp", "--process-server", "ps-azure-01", "--master-target", "mt-win-01"];
    let (code, out, err) = hw(&portal, &[&rp[..], &["--master-target", "mt-linux-01", "--dry-run"]].concat());
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("erp-web through mt-linux-01") && out.contains("erp-db through mt-win-01"), "{out}");
    let (code, out, _) = hw(&portal, &[&rp[..], &["--dry-run"]].concat());
    assert_eq!(code, 3, "{out}");
    assert!(out.contains("R-W1") && out.contains("needs a Linux master target"), "{out}");
    let (code, out, err) = hw(&portal, &[&rp[..], &["--master-target", "mt-linux-01", "--wait"]].concat());
    assert_eq!(code, 0, "{err}");
    assert!(out.contains(": succeeded"), "{out}");

    // A recovery plan's commit and cancel failover (issue 12 §3): refused while its items are not failed back.
    let (code, _, err) = hw(&portal, &["plan-commit", "plan-erp", "--reason", "ERP back home"]);
    assert_eq!(code, 3, "{err}");
    assert!(err.contains("refused (R-W3)"), "{err}");
    let (code, _, err) = hw(&portal, &["plan-cancel-failover", "plan-erp"]);
    assert_eq!(code, 3, "{err}");

    // Plans shaped from the command line.
    let create = ["plans", "create", "Linux", "--group", "lin01", "--group", "web01, app02", "--retention-min", "240"];
    let (code, out, err) = hw(&portal, &create);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("plan-linux") && out.contains("lin01 → web01, app02"), "{out}");
    assert!(out.contains("reprotect defaults: retention 240 min"), "{out}");
    // An edit keeps the settings it is not given.
    let (code, out, err) =
        hw(&portal, &["plans", "edit", "plan-linux", "--group", "lin01,web01", "--rpo-threshold-min", "20"]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("Linux") && out.contains("lin01, web01"), "{out}");
    assert!(out.contains("retention 240 min, rpo threshold 20 min"), "{out}");
    let (code, _, err) = hw(&portal, &["plans", "edit", "plan-linux", "--group", "lin01,lin01"]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("lin01 is in the plan twice"), "{err}");
    let (code, out, _) = hw(&portal, &["plans", "list"]);
    assert_eq!(code, 0);
    assert!(out.contains("plan-erp") && out.contains("plan-linux"), "{out}");
    let (code, out, err) = hw(&portal, &["plans", "remove", "plan-linux"]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("plan plan-linux removed"), "{out}");
}

/// Alerts and webhooks from the command line: a full datastore's alert listed and acknowledged; a webhook added
/// (its secret printed once), listed, its delivery log shown, removed; a bad address refused (exit 2).
#[test]
fn the_cli_lists_and_acknowledges_alerts_and_manages_webhooks() {
    let portal = Portal::start(&[]);
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    rt.block_on(common::post(
        &portal.http,
        &format!("{}api/v1/infrastructure/faults", portal.url),
        r#"{"fill_datastore": "vsan-01"}"#,
        "cli-fill",
    ));
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    let out = loop {
        let (code, out, err) = hw(&portal, &["alerts", "list"]);
        assert_eq!(code, 0, "{err}");
        if out.contains("vsan-01") {
            break out;
        }
        assert!(std::time::Instant::now() < deadline, "no alert: {out}");
        std::thread::sleep(std::time::Duration::from_millis(200));
    };
    assert!(out.contains("datastore-nearly-full") && out.contains("open"), "{out}");
    let id = out.split_whitespace().next().unwrap().to_owned();
    let (code, out, err) = hw(&portal, &["alerts", "ack", &id]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("acknowledged by admin"), "{out}");

    let (code, _, err) = hw(&portal, &["webhooks", "add", "gopher://x"]);
    assert_eq!(code, 2, "{err}");
    let port = common::free_port();
    let (code, out, err) =
        hw(&portal, &["webhooks", "add", &format!("http://127.0.0.1:{port}/hook"), "--events", "job"]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("signing secret (shown once): "), "{out}");
    let hook = out.split_whitespace().nth(1).unwrap().to_owned();
    let (code, out, _) = hw(&portal, &["webhooks", "list"]);
    assert_eq!(code, 0);
    assert!(out.contains(&hook) && out.contains("(job)"), "{out}");
    let (code, _, err) = hw(&portal, &["webhooks", "deliveries", &hook]);
    assert_eq!(code, 0, "{err}");
    let (code, out, err) = hw(&portal, &["webhooks", "remove", &hook]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("removed"), "{out}");
    let (code, _, _) = hw(&portal, &["webhooks", "remove", &hook]);
    assert_eq!(code, 2, "an unknown webhook");
}
