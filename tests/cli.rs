//! The API's command-line clients against a running server on the demo estate: the refused scenarios name their
//! rule (exit code 3), the article's steps run with --wait, a dry run prints its checks.

mod common;

use common::{run_homeward, Portal};

fn hw(server: &str, args: &[&str]) -> (i32, String, String) {
    let mut all = args.to_vec();
    all.extend(["--server", server]);
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
    let server = portal.url.trim_end_matches('/').to_owned();

    let (code, out, _) = hw(&server, &["items"]);
    assert_eq!(code, 0);
    assert!(out.contains("web01") && out.contains("committed-in-cloud") && out.contains("reprotect"), "{out}");

    let alt = ["--master-target", "mt-win-01", "--process-server", "ps-azure-01", "--datastore", "vmfs-01"];
    for (item, rule) in [("phys08", "R-P2"), ("mig01", "R-B1")] {
        let mut args = vec!["reprotect", item];
        args.extend(alt);
        let (code, _, err) = hw(&server, &args);
        assert_eq!(code, 3, "{item}: {err}");
        assert!(err.contains(&format!("refused ({rule})")) && err.contains("what to do:"), "{item}: {err}");
    }
    let (code, out, _) = hw(&server, &["items", "phys08"]);
    assert_eq!(code, 0);
    assert!(out.contains("reprotect not allowed (R-P2)"), "{out}");

    let (code, out, err) = hw(
        &server,
        &["reprotect", "web01", "--master-target", "mt-win-01", "--process-server", "ps-azure-01", "--dry-run"],
    );
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("Original location recovery (R-L1)") && out.contains("[ok  ] R-C1"), "{out}");

    let (code, out, err) = hw(
        &server,
        &["reprotect", "web01", "--master-target", "mt-win-01", "--process-server", "ps-azure-01", "--wait"],
    );
    assert_eq!(code, 0, "{err}");
    assert!(out.contains(": succeeded") && out.contains("Initial replication"), "{out}");
    let (code, out, err) = hw(&server, &["failover", "web01", "--point", "latest-app-consistent", "--wait"]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("Re-enable VMware Tools (R-T1)"), "{out}");
    let (code, _, err) = hw(&server, &["commit", "web01", "--wait"]);
    assert_eq!(code, 0, "{err}");
    let (code, out, _) = hw(&server, &["jobs"]);
    assert_eq!(code, 0);
    assert_eq!(out.lines().filter(|l| l.contains("succeeded")).count(), 3, "{out}");
    let (code, _, err) = hw(&server, &["jobs", "no-such-job"]);
    assert_eq!(code, 2, "{err}");
    let (code, _, err) = hw("http://127.0.0.1:1", &["items"]);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("cannot reach the server"), "{err}");
}
