//! `homeward serve` end to end, without a browser: database creation, /healthz, server-rendered pages, the
//! server function over HTTP, and one-line errors with exit code 2 for bad input.

mod common;

use common::{run_homeward, Portal};

async fn get(c: &reqwest::Client, url: &str) -> (u16, String, String) {
    let resp = c.get(url).send().await.unwrap_or_else(|e| panic!("GET {url}: {e}"));
    let status = resp.status().as_u16();
    let ctype = resp.headers().get("content-type").map(|v| v.to_str().unwrap().to_owned()).unwrap_or_default();
    (status, ctype, resp.text().await.unwrap())
}

#[tokio::test]
async fn serve_creates_the_database_and_healthz_reports_the_schema_version() {
    let portal = Portal::start(&[]);
    assert!(portal.data_dir.join("homeward.db").is_file(), "database file created in the data dir");
    let (status, ctype, body) = get(&reqwest::Client::new(), &format!("{}healthz", portal.url)).await;
    assert_eq!(status, 200, "{body}");
    assert!(ctype.starts_with("application/json"), "{ctype}");
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["status"], "ok");
    assert_eq!(v["database"], "sqlite");
    assert!(v["schema_version"].as_i64().unwrap() >= 1, "{v}");
}

#[tokio::test]
async fn pages_are_server_rendered_with_the_vault_name_and_the_hydration_script() {
    let portal = Portal::start(&["--vault-name", "contoso-dr-vault"]);
    for (path, heading) in [
        ("", "Overview"),
        ("replicated-items", "Replicated items"),
        ("recovery-plans", "Recovery plans"),
        ("jobs", "Site Recovery jobs"),
        ("infrastructure", "Site Recovery infrastructure"),
    ] {
        let (status, ctype, html) = get(&portal.http, &format!("{}{path}", portal.url)).await;
        assert_eq!(status, 200, "/{path}");
        assert!(ctype.starts_with("text/html"), "/{path}: {ctype}");
        assert!(html.contains(&format!("<h1>{heading}</h1>")), "/{path} lacks its heading");
        assert!(html.contains("contoso-dr-vault"), "/{path} lacks the vault name from the database");
        assert!(
            html.contains("/pkg/homeward.js") && html.contains("homeward_bg"),
            "/{path} lacks the hydration script"
        );
    }
    // The items page is rendered with the demo estate's data, refusals explained.
    let (_, _, html) = get(&portal.http, &format!("{}replicated-items", portal.url)).await;
    assert!(html.contains("web01") && html.contains("phys08") && html.contains("R-P2"), "items page without data");
    let (status, _, html) = get(&portal.http, &format!("{}jobs/no-such-job", portal.url)).await;
    assert_eq!(status, 200);
    assert!(html.contains("Job not found"));
    let (status, _, html) = get(&portal.http, &format!("{}no-such-page", portal.url)).await;
    assert_eq!(status, 404);
    assert!(html.contains("Page not found"));
}

#[tokio::test]
async fn the_vault_server_function_reads_from_sqlite() {
    let portal = Portal::start(&["--vault-name", "fabrikam"]);
    let (status, _, body) = get(&portal.http, &format!("{}api/vault/summary", portal.url)).await;
    assert_eq!(status, 200, "{body}");
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["name"], "fabrikam");
    assert_eq!(v["database"], "SQLite");
    assert!(v["schema_version"].as_i64().unwrap() >= 1);
}

#[tokio::test]
async fn the_vault_and_its_name_survive_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let first = Portal::start_in(dir.path(), &["--vault-name", "first-name"]);
    let (_, _, before) = get(&first.http, &format!("{}api/vault/summary", first.url)).await;
    drop(first); // killed, as a crash would
    let second = Portal::start_in(dir.path(), &["--vault-name", "other-name"]);
    let (status, _, after) = get(&second.http, &format!("{}api/vault/summary", second.url)).await;
    assert_eq!(status, 200, "{after}");
    let (before, after): (serde_json::Value, serde_json::Value) =
        (serde_json::from_str(&before).unwrap(), serde_json::from_str(&after).unwrap());
    assert_eq!(after["name"], "first-name", "an existing vault keeps its name");
    assert_eq!(after["created_at"], before["created_at"]);
}

fn assert_one_line_usage_error(out: &std::process::Output, needle: &str) {
    assert_eq!(out.status.code(), Some(2), "exit code; stderr: {}", String::from_utf8_lossy(&out.stderr));
    let stderr = String::from_utf8_lossy(&out.stderr);
    let lines: Vec<_> = stderr.lines().filter(|l| !l.trim().is_empty()).collect();
    assert_eq!(lines.len(), 1, "one line expected, got: {stderr}");
    assert!(lines[0].starts_with("error:") && lines[0].contains(needle), "{}", lines[0]);
    assert!(!stderr.contains("panicked"), "{stderr}");
}

#[test]
fn a_bad_listen_value_is_one_line_and_exit_2() {
    let out = run_homeward(&["serve", "--listen", "not-an-address"]);
    assert_one_line_usage_error(&out, "--listen");
}

#[test]
fn an_unusable_data_dir_is_one_line_and_exit_2() {
    let file = tempfile::NamedTempFile::new().unwrap();
    let bad = file.path().join("data");
    let out = run_homeward(&["serve", "--listen", "127.0.0.1:0", "--data-dir", bad.to_str().unwrap()]);
    assert_one_line_usage_error(&out, "data directory");
}

#[test]
fn a_postgres_url_is_refused_until_scale_out_lands() {
    let dir = tempfile::tempdir().unwrap();
    let out = run_homeward(&[
        "serve",
        "--listen",
        "127.0.0.1:0",
        "--data-dir",
        dir.path().to_str().unwrap(),
        "--database-url",
        "postgres://localhost/homeward",
    ]);
    assert_one_line_usage_error(&out, "PostgreSQL");
}

#[test]
fn a_port_in_use_is_one_line_and_exit_2() {
    let busy = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = busy.local_addr().unwrap().to_string();
    let dir = tempfile::tempdir().unwrap();
    let out = run_homeward(&["serve", "--listen", &addr, "--data-dir", dir.path().to_str().unwrap()]);
    assert_one_line_usage_error(&out, "cannot listen");
}
