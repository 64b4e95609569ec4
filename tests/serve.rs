//! `homeward serve` end to end, without a browser: database creation, /healthz, server-rendered pages, the
//! server function over HTTP, and one-line errors with exit code 2 for bad input.

use crate::common;
use common::{engine, run_homeward, Portal};

async fn get(c: &reqwest::Client, url: &str) -> (u16, String, String) {
    let resp = c.get(url).send().await.unwrap_or_else(|e| panic!("GET {url}: {e}"));
    let status = resp.status().as_u16();
    let ctype = resp.headers().get("content-type").map(|v| v.to_str().unwrap().to_owned()).unwrap_or_default();
    (status, ctype, resp.text().await.unwrap())
}

/// The sign-in form's post, as a browser on the portal's own page sends it.
async fn post_sign_in(c: &reqwest::Client, base: &str, form: &[(&str, &str)]) -> reqwest::Response {
    c.post(format!("{base}/auth/login")).header("origin", base).form(form).send().await.unwrap()
}

#[tokio::test]
async fn serve_creates_the_database_and_healthz_reports_the_schema_version_and_the_workers() {
    let portal = Portal::start(&["--workers", "3"]);
    if engine().0 == "sqlite" {
        assert!(portal.data_dir.join("homeward.db").is_file(), "database file created in the data dir");
        // Password hashes, token digests and the audit log: the owner's only, the WAL too.
        use std::os::unix::fs::PermissionsExt;
        for f in ["homeward.db", "homeward.db-wal"] {
            let mode = std::fs::metadata(portal.data_dir.join(f)).unwrap().permissions().mode() & 0o777;
            assert_eq!(mode, 0o600, "{f} is {mode:o}");
        }
    }
    // The estate's description is in the database; its folder holds only disks.
    assert!(portal.data_dir.join("estate/recovery").is_dir() && !portal.data_dir.join("estate/estate.json").exists());
    let (status, ctype, body) = get(&reqwest::Client::new(), &format!("{}healthz", portal.url)).await;
    assert_eq!(status, 200, "{body}");
    assert!(ctype.starts_with("application/json"), "{ctype}");
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["status"], "ok");
    assert_eq!(v["database"], engine().0);
    assert!(v["schema_version"].as_i64().unwrap() >= 6, "{v}");
    let workers = v["workers"].as_array().unwrap();
    assert_eq!(workers.len(), 3, "{v}");
    assert!(workers.iter().all(|w| w["alive"] == true), "{v}");
    // Worker ids are node/boot/worker: unique across nodes, the node part kept in the data dir.
    let node = std::fs::read_to_string(portal.data_dir.join("node-id")).unwrap();
    assert_eq!(v["node"], node.trim());
    assert!(workers[0]["id"].as_str().unwrap().starts_with(&format!("{}/", node.trim())), "{v}");
}

#[tokio::test]
async fn a_second_process_on_the_same_data_dir_is_refused_with_one_line() {
    let portal = Portal::start(&[]);
    let out = run_homeward(&["serve", "--listen", "127.0.0.1:0", "--data-dir", portal.data_dir.to_str().unwrap()]);
    assert_one_line_usage_error(&out, "another homeward process is running on the data dir");
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
        // (Hydration markers such as `<!>` may follow the text.)
        assert!(html.contains(&format!("<h1>{heading}<")), "/{path} lacks its heading");
        assert!(html.contains("contoso-dr-vault"), "/{path} lacks the vault name from the database");
        assert!(
            html.contains("/pkg/homeward.js") && html.contains("homeward_bg"),
            "/{path} lacks the hydration script"
        );
    }
    // The items page is rendered with the demo estate's data and each item's status; a row's refusals come when
    // its menu opens, from their own server function, explained with the rule.
    let (_, _, html) = get(&portal.http, &format!("{}replicated-items", portal.url)).await;
    assert!(html.contains("web01") && html.contains("phys08") && html.contains("Cannot fail back"), "without data");
    assert!(!html.contains("R-P2"), "the refusals' texts are not in the page");
    let (status, _, json) = get(&portal.http, &format!("{}api/portal/items/refusals?id=phys08", portal.url)).await;
    assert_eq!(status, 200, "{json}");
    assert!(json.contains("R-P2") && json.contains("2008 R2"), "{json}");
    let (status, _, html) = get(&portal.http, &format!("{}jobs/no-such-job", portal.url)).await;
    assert_eq!(status, 200);
    assert!(html.contains("Job not found"));
    let (status, _, html) = get(&portal.http, &format!("{}no-such-page", portal.url)).await;
    assert_eq!(status, 404);
    assert!(html.contains("Page not found"));
}

#[tokio::test]
async fn the_vault_server_function_reads_from_the_database() {
    let portal = Portal::start(&["--vault-name", "fabrikam"]);
    let (status, _, body) = get(&portal.http, &format!("{}api/vault/summary", portal.url)).await;
    assert_eq!(status, 200, "{body}");
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["name"], "fabrikam");
    assert_eq!(v["database"], engine().1);
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
fn an_unreachable_or_wrong_database_url_is_one_line_and_exit_2() {
    let dir = tempfile::tempdir().unwrap();
    let port = common::free_port(); // nothing listens there
    for (url, needle) in [
        (format!("postgres://homeward:s3cret@127.0.0.1:{port}/homeward"), "cannot open the database"),
        ("mysql://127.0.0.1/homeward".to_owned(), "--database-url"),
    ] {
        let out = run_homeward(&[
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--data-dir",
            dir.path().to_str().unwrap(),
            "--database-url",
            &url,
        ]);
        assert_one_line_usage_error(&out, needle);
        assert!(!String::from_utf8_lossy(&out.stderr).contains("s3cret"), "the password is never printed");
    }
}

#[tokio::test]
async fn serve_runs_on_postgresql_with_the_same_migrations() {
    let portal = Portal::start_on_postgres(&[]);
    let (status, _, body) = get(&reqwest::Client::new(), &format!("{}healthz", portal.url)).await;
    assert_eq!(status, 200, "{body}");
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["database"], "postgresql", "{v}");
    assert!(!portal.data_dir.join("homeward.db").exists(), "no SQLite file beside a PostgreSQL vault");
    // Accounts, tokens and jobs live there: an action through the API starts a job on PostgreSQL.
    let (s, body) = post_json(
        &portal,
        "api/v1/items/web01/reprotect?dry_run=true",
        r#"{"master_target":"mt-win-01","process_server":"ps-azure-01"}"#,
    )
    .await;
    assert_eq!(s, 200, "{body}");
}

async fn post_json(portal: &Portal, path: &str, body: &str) -> (u16, String) {
    let r = portal
        .http
        .post(format!("{}{path}", portal.url))
        .header("content-type", "application/json")
        .body(body.to_owned())
        .send()
        .await
        .unwrap();
    (r.status().as_u16(), r.text().await.unwrap())
}

#[test]
fn a_port_in_use_is_one_line_and_exit_2() {
    let busy = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = busy.local_addr().unwrap().to_string();
    let dir = tempfile::tempdir().unwrap();
    let out = run_homeward(&["serve", "--listen", &addr, "--data-dir", dir.path().to_str().unwrap()]);
    assert_one_line_usage_error(&out, "cannot listen");
}

/// Sign-in and roles at the HTTP level: signed-out pages go to /login (keeping the target), the API and server
/// functions answer 401, a wrong password comes back to the form with an error and is audited, the session cookie
/// is HttpOnly and SameSite=Strict, a state change from another site is refused, and each role gets exactly its
/// permissions on the REST API.
#[tokio::test]
async fn sign_in_sessions_roles_and_csrf() {
    let portal = Portal::start(&[]);
    let anon = reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build().unwrap();
    let base = portal.url.trim_end_matches('/').to_owned();

    let r = anon.get(format!("{base}/jobs?state=failed")).send().await.unwrap();
    assert_eq!(r.status().as_u16(), 303);
    assert_eq!(r.headers()["location"], "/login?next=/jobs%3Fstate%3Dfailed");
    for path in ["/api/v1/items", "/api/portal/items?q=&state=&health=&sort=&desc=false&page=1", "/events/jobs/x"] {
        let r = anon.get(format!("{base}{path}")).send().await.unwrap();
        assert_eq!(r.status().as_u16(), 401, "{path}");
    }
    let r = anon.get(format!("{base}/login")).send().await.unwrap();
    assert_eq!(r.status().as_u16(), 200);
    // Never framed or sniffed; pages never stored (Back after sign-out shows nothing), the site's files cacheable.
    for (name, value) in [
        ("x-frame-options", "DENY"),
        ("x-content-type-options", "nosniff"),
        ("referrer-policy", "same-origin"),
        ("cache-control", "no-store"),
    ] {
        assert_eq!(r.headers().get(name).map(|v| v.to_str().unwrap()), Some(value), "{name} on /login");
    }
    // Scripts: only the site's own, and inline ones carrying this response's nonce; wasm only through them.
    let csp = r.headers()["content-security-policy"].to_str().unwrap().to_owned();
    for directive in ["frame-ancestors 'none'", "object-src 'none'", "base-uri 'none'", "'wasm-unsafe-eval'"] {
        assert!(csp.contains(directive), "{directive} in {csp}");
    }
    let nonce = csp.split("'nonce-").nth(1).and_then(|n| n.split('\'').next()).expect("a nonce in the page's policy");
    let script_src = csp.split(';').map(str::trim).find(|d| d.starts_with("script-src")).unwrap();
    assert!(nonce.len() >= 16 && !script_src.contains("unsafe-inline") && !script_src.contains('*'), "{csp}");
    let page_id = r.headers().get("x-request-id").map(|v| v.to_str().unwrap().to_owned()).unwrap_or_default();
    let html = r.text().await.unwrap();
    let scripts: Vec<_> =
        html.match_indices("<script").map(|(i, _)| &html[i..html[i..].find('>').unwrap() + i]).collect();
    assert!(!scripts.is_empty(), "the hydration script");
    for s in &scripts {
        assert!(s.contains(&format!("nonce=\"{nonce}\"")), "every inline script carries the nonce: {s}");
    }
    let r = anon.get(format!("{base}/login")).send().await.unwrap();
    let other = r.headers()["content-security-policy"].to_str().unwrap();
    assert!(!other.contains(nonce), "one nonce per response");
    // Every answer carries a request id for the log; a client's own id comes back unchanged.
    let id = page_id;
    assert_eq!(id.len(), 36, "a UUID request id on /login: {id:?}");
    let again = anon.get(format!("{base}/login")).send().await.unwrap();
    assert_ne!(again.headers()["x-request-id"].to_str().unwrap(), id, "one id per request");
    let r = anon.get(format!("{base}/api/v1/items")).header("x-request-id", "ticket-4711").send().await.unwrap();
    assert_eq!((r.status().as_u16(), r.headers()["x-request-id"].to_str().unwrap()), (401, "ticket-4711"));
    let r = anon.get(format!("{base}/pkg/homeward.css")).send().await.unwrap();
    assert_eq!(r.status().as_u16(), 200);
    assert!(r.headers().get("cache-control").is_none_or(|v| v != "no-store"), "static files stay cacheable");
    assert_eq!(r.headers()["x-content-type-options"], "nosniff");
    // Signed out with no cookie at all, a state-changing API call is unauthenticated (401), not a forgery (403).
    let r = anon.post(format!("{base}/api/v1/items/web01/reprotect")).body("{}").send().await.unwrap();
    assert_eq!(r.status().as_u16(), 401);
    // The bearer scheme is case-insensitive.
    let r = anon
        .get(format!("{base}/api/v1/me"))
        .header("authorization", format!("bearer {}", portal.token))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);
    assert_eq!(r.headers()["cache-control"], "no-store");

    // A wrong password: back to the form, with the error, nothing set.
    let r =
        post_sign_in(&anon, &base, &[("name", "admin"), ("password", "wrong-password-123"), ("next", "/jobs")]).await;
    assert_eq!(r.status().as_u16(), 303);
    assert!(r.headers()["location"].to_str().unwrap().starts_with("/login?error=credentials"));
    assert!(r.headers().get("set-cookie").is_none());
    // The right one: a session cookie and the page the user was going to.
    let r = post_sign_in(
        &anon,
        &base,
        &[("name", "admin"), ("password", common::ADMIN_PASSWORD), ("next", "//evil.example/")],
    )
    .await;
    assert_eq!(r.status().as_u16(), 303);
    assert_eq!(r.headers()["location"], "/", "an outside redirect target is ignored");
    // Browsers drop tabs and line breaks from URLs ("/\t/evil.example" is "//evil.example" to them), and CR/LF
    // cannot be a header: each is refused whole, and the redirect always has a Location.
    for next in ["/\t/evil.example", "/\r\n/evil.example", "/jobs\r\nSet-Cookie: a=b", "/\\evil.example"] {
        let r = post_sign_in(&anon, &base, &[("name", "admin"), ("password", common::ADMIN_PASSWORD), ("next", next)])
            .await;
        assert_eq!(
            (r.status().as_u16(), r.headers().get("location").map(|l| l.as_bytes())),
            (303, Some(&b"/"[..])),
            "{next:?}"
        );
    }
    let r = post_sign_in(&anon, &base, &[("name", "admin"), ("password", common::ADMIN_PASSWORD), ("next", "/")]).await;
    let cookie = r.headers()["set-cookie"].to_str().unwrap().to_owned();
    assert!(cookie.contains("HttpOnly") && cookie.contains("SameSite=Strict"), "{cookie}");
    assert!(!cookie.contains("Secure"), "plain HTTP on localhost: a Secure cookie would never come back: {cookie}");
    let session = cookie.split(';').next().unwrap().to_owned();
    // Behind a TLS-terminating reverse proxy that says so, the cookie is Secure.
    let proxied = anon
        .post(format!("{base}/auth/login"))
        .header("origin", &base)
        .header("x-forwarded-proto", "https")
        .form(&[("name", "admin"), ("password", common::ADMIN_PASSWORD), ("next", "/")])
        .send()
        .await
        .unwrap();
    let proxied = proxied.headers()["set-cookie"].to_str().unwrap();
    assert!(proxied.ends_with("; Secure"), "{proxied}");
    let r = anon.get(format!("{base}/jobs")).header("cookie", &session).send().await.unwrap();
    assert_eq!(r.status().as_u16(), 200);

    // A form post from another site carrying the cookie is refused; so is a sign-out.
    let r = anon
        .post(format!("{base}/auth/logout"))
        .header("cookie", &session)
        .header("sec-fetch-site", "cross-site")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 403);
    let r = anon.get(format!("{base}/jobs")).header("cookie", &session).send().await.unwrap();
    assert_eq!(r.status().as_u16(), 200, "the forged sign-out did not end the session");
    let r = anon
        .post(format!("{base}/auth/logout"))
        .header("cookie", &session)
        .header("origin", &base)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 303);
    let r = anon.get(format!("{base}/jobs")).header("cookie", &session).send().await.unwrap();
    assert_eq!(r.status().as_u16(), 303, "signed out");

    // Roles on the REST API.
    let reader = common::client_with_token(&portal.add_user("rita", "reader"));
    let drill = common::client_with_token(&portal.add_user("dora", "drill-operator"));
    let operator = common::client_with_token(&portal.add_user("olga", "operator"));
    let body = r#"{"master_target": "mt-win-01", "process_server": "ps-azure-01", "reason": "test"}"#;
    for (who, c, status) in [("reader", &reader, 403), ("drill operator", &drill, 403), ("operator", &operator, 202)] {
        let r = c
            .post(format!("{base}/api/v1/items/web01/reprotect"))
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status().as_u16(), status, "{who}");
        let v: serde_json::Value = r.json().await.unwrap();
        if status == 403 {
            assert_eq!(v["code"], "forbidden", "{who}: {v}");
        }
    }
    let r = reader.get(format!("{base}/api/v1/items")).send().await.unwrap();
    assert_eq!(r.status().as_u16(), 200, "a Reader reads");
    let r = operator
        .post(format!("{base}/api/v1/infrastructure/faults"))
        .header("content-type", "application/json")
        .body(r#"{"vcenter_connected": false}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 403, "fault knobs are for Administrators");
    let me: serde_json::Value = operator.get(format!("{base}/api/v1/me")).send().await.unwrap().json().await.unwrap();
    assert_eq!(me["role"], "operator");

    // Everything above is in the audit log: the failed sign-in, the denials with the role, the started job with
    // its reason.
    let log: serde_json::Value =
        portal.http.get(format!("{base}/api/v1/audit")).send().await.unwrap().json().await.unwrap();
    let entries = log["entries"].as_array().unwrap();
    let has = |user: &str, action: &str, outcome: &str| {
        entries.iter().any(|e| e["user_name"] == user && e["action"] == action && e["outcome"] == outcome)
    };
    assert!(has("admin", "sign-in", "denied") && has("admin", "sign-in", "succeeded"), "{log}");
    assert!(has("rita", "reprotect", "denied") && has("dora", "reprotect", "denied"), "{log}");
    assert!(has("olga", "reprotect", "started") && has("olga", "faults", "denied"), "{log}");
    let started = entries.iter().find(|e| e["user_name"] == "olga" && e["outcome"] == "started").unwrap();
    assert_eq!(started["reason"], "test");
    // Job ids are UUIDv7: unique across nodes, ordered by time.
    let id = started["job_id"].as_str().unwrap();
    assert!(id.len() == 36 && id.as_bytes()[14] == b'7', "{id}");
}

#[test]
fn users_cli_creates_accounts_and_refuses_bad_input() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().to_str().unwrap();
    let out = run_homeward(&["users", "add", "alice", "--role", "operator", "--data-dir", d]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("created alice (Operator)") && text.contains("password (shown once): "), "{text}");
    let out = run_homeward(&["users", "add", "alice", "--role", "reader", "--data-dir", d]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("already exists"));
    let out = run_homeward(&["users", "add", "bob", "--role", "root", "--data-dir", d]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("reader, drill-operator, operator or administrator"));
    let out = run_homeward(&["users", "token", "nobody", "--data-dir", d]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("no user named nobody"));
    let out = run_homeward(&["users", "list", "--data-dir", d]);
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "alice\toperator");
}

/// A revoked account's API token stops working at once; a new one works again.
#[tokio::test]
async fn a_revoked_token_is_refused() {
    let portal = Portal::start(&[]);
    let token = portal.add_user("olga", "operator");
    let c = common::client_with_token(&token);
    let url = format!("{}api/v1/me", portal.url);
    assert_eq!(c.get(&url).send().await.unwrap().status().as_u16(), 200);
    let out = common::homeward(&portal.data_dir)
        .args(["users", "revoke", "olga", "--data-dir", portal.data_dir.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "olga: 0 session(s) ended, 1 API token(s) deleted");
    assert_eq!(c.get(&url).send().await.unwrap().status().as_u16(), 401);
    let again = common::client_with_token(&common::token_for(&portal.data_dir, "olga"));
    assert_eq!(again.get(&url).send().await.unwrap().status().as_u16(), 200);
}

/// Failed sign-ins are throttled per account (and per address): the sixth attempt within minutes is refused with
/// 429 and `Retry-After` — the right password too — without a password check; the block is audited once, and a
/// name that is no account's (sometimes a password typed in the wrong field) never reaches the audit log.
#[tokio::test]
async fn failed_sign_ins_are_throttled_and_unknown_names_are_not_stored() {
    let portal = Portal::start(&[]);
    let anon = reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build().unwrap();
    let base = portal.url.trim_end_matches('/').to_owned();
    let sign_in = |name: &'static str, password: &'static str| {
        let (anon, base) = (anon.clone(), base.clone());
        async move {
            anon.post(format!("{base}/auth/login"))
                .header("origin", &base)
                .form(&[("name", name), ("password", password), ("next", "/")])
                .send()
                .await
                .unwrap()
        }
    };
    for n in 0..5 {
        let r = sign_in("admin", "wrong-password-123").await;
        assert_eq!(r.status().as_u16(), 303, "attempt {n}");
    }
    let r = sign_in("admin", common::ADMIN_PASSWORD).await;
    assert_eq!(r.status().as_u16(), 429, "blocked, even with the right password");
    let wait: u64 = r.headers()["retry-after"].to_str().unwrap().parse().unwrap();
    assert!((1..=30).contains(&wait), "{wait}");
    assert!(r.headers().get("set-cookie").is_none());
    assert!(r.text().await.unwrap().contains("Try again in"));
    // Another account is not affected.
    portal.add_user("olga", "operator");
    let r = sign_in("olga", common::ADMIN_PASSWORD).await;
    assert_eq!(r.status().as_u16(), 303);
    assert!(r.headers().get("set-cookie").is_some());

    let r = sign_in("Tr0ub4dor&3-typed-as-a-name", "x").await;
    assert_eq!(r.status().as_u16(), 303);
    let log: serde_json::Value =
        portal.http.get(format!("{base}/api/v1/audit")).send().await.unwrap().json().await.unwrap();
    let text = log.to_string();
    assert!(!text.contains("Tr0ub4dor"), "a typed name that is no account's is not stored: {log}");
    let entries = log["entries"].as_array().unwrap();
    let count = |user: &str, outcome: &str| {
        entries.iter().filter(|e| e["user_name"] == user && e["action"] == "sign-in" && e["outcome"] == outcome).count()
    };
    assert_eq!(count("admin", "denied"), 5, "{log}");
    assert_eq!(count("admin", "throttled"), 1, "the block is audited once, the refused attempt not at all: {log}");
    assert_eq!(count("(unknown account)", "denied"), 1, "{log}");
}

/// A vault whose database is lost next to an existing estate does not start as a brand-new vault over the old
/// disks (new admin, no jobs, no audit): it refuses, saying what to do. A first start killed while seeding, on
/// the other hand, starts cleanly the next time (the half-made disks are made again).
#[tokio::test]
async fn a_lost_database_next_to_an_estate_is_refused_and_an_interrupted_seeding_recovers() {
    if engine().0 != "sqlite" {
        return; // the lost file is SQLite's; PostgreSQL's databases are the server's to keep
    }
    let dir = tempfile::tempdir().unwrap();
    drop(Portal::start_in(dir.path(), &[]));
    for f in ["homeward.db", "homeward.db-wal", "homeward.db-shm"] {
        let _ = std::fs::remove_file(dir.path().join(f));
    }
    let out = common::homeward(dir.path())
        .args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(dir.path())
        .output()
        .unwrap();
    assert_one_line_usage_error(&out, "has no estate");
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(said.contains("Restore the database") && said.contains("move that folder away"), "{said}");
    assert!(dir.path().join("estate/recovery").is_dir(), "nothing deleted");

    // A seeding that died half-way: its marker and a partial disk, no estate in the database.
    let fresh = tempfile::tempdir().unwrap();
    let partial = fresh.path().join("estate/recovery/rg-dr/web01");
    std::fs::create_dir_all(&partial).unwrap();
    std::fs::write(partial.join("disk0.vhd"), b"half").unwrap();
    std::fs::write(fresh.path().join("estate/.seeding"), b"").unwrap();
    let p = Portal::start_in(fresh.path(), &[]);
    let items = common::get(&p.http, &format!("{}api/v1/items", p.url)).await;
    assert!(items["items"].as_array().unwrap().len() >= 10, "{items}");
    assert!(!fresh.path().join("estate/.seeding").exists());
}

/// The portal's server functions answer a client's mistake or a rule's refusal with a 4xx, never 500: a refusal
/// is 409 with its rule, an unknown item 404, an unknown operation 400. A bulk re-protect is refused whole, before
/// anything starts or is audited, when it names unknown items or too many.
#[tokio::test]
async fn portal_actions_answer_4xx_for_refusals_and_mistakes_and_bulk_requests_are_bounded() {
    let portal = Portal::start(&[]);
    let act = |id: &str, op: &str| {
        let body = serde_json::json!({
            "id": id, "op": op, "reason": "t", "key": "",
            "input": {"master_target": "mt-win-01", "process_server": "ps-azure-01", "datastore": "vmfs-01"},
        });
        portal.http.post(format!("{}api/portal/act", portal.url)).json(&body).send()
    };
    let r = act("phys08", "reprotect").await.unwrap();
    assert_eq!(r.status().as_u16(), 409);
    assert!(r.text().await.unwrap().contains("R-P2"));
    assert_eq!(act("nope", "reprotect").await.unwrap().status().as_u16(), 404);
    assert_eq!(act("web01", "explode").await.unwrap().status().as_u16(), 400);

    let many = |ids: Vec<String>| {
        let body = serde_json::json!({"ids": ids, "process_server": "cs-01", "reason": "t", "key": "k"});
        portal.http.post(format!("{}api/portal/reprotect-many", portal.url)).json(&body).send()
    };
    let r = many((0..600).map(|n| format!("x{n}")).collect()).await.unwrap();
    assert_eq!(r.status().as_u16(), 400);
    assert!(r.text().await.unwrap().contains("at most 500"));
    let r = many(vec!["web01".into(), "nope-1".into(), "nope-2".into()]).await.unwrap();
    assert_eq!(r.status().as_u16(), 404);
    assert!(r.text().await.unwrap().contains("nope-1, nope-2"));
    let log: serde_json::Value =
        portal.http.get(format!("{}api/v1/audit", portal.url)).send().await.unwrap().json().await.unwrap();
    assert!(
        !log["entries"].as_array().unwrap().iter().any(|e| e["action"] == "reprotect-to-cloud"),
        "nothing audited for a request refused whole: {log}"
    );
    let jobs: serde_json::Value =
        portal.http.get(format!("{}api/v1/jobs", portal.url)).send().await.unwrap().json().await.unwrap();
    assert_eq!(jobs["jobs"].as_array().unwrap().len(), 0, "{jobs}");

    // Arguments that do not parse are the client's mistake too, for actions and reads alike.
    let (status, body) = post_json(&portal, "api/portal/act", "{not json").await;
    assert_eq!(status, 400, "{body}");
    assert!(body.contains("the request could not be read"), "{body}");
    // On its own connection: the server answers 413 before reading the rest and closes it, and a pooled
    // connection half-written that way could be handed to the next request (a broken pipe there).
    let r = common::client_with_token(&portal.token)
        .post(format!("{}api/portal/act", portal.url))
        .header("content-type", "application/json")
        .body(format!("\"{}\"", "a".repeat(3 << 20)))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 413);
    for path in
        ["api/portal/jobs?item=&plan=&state=&kind=&since=&page=-1", "api/portal/item", "api/portal/audit?page=x"]
    {
        let r = portal.http.get(format!("{}{path}", portal.url)).send().await.unwrap();
        assert_eq!(r.status().as_u16(), 400, "{path}: {}", r.text().await.unwrap());
    }
}

/// `homeward users disable` shuts every door — password, session, token — until `users enable`; the last enabled
/// Administrator cannot be disabled. API tokens expire (`users token --days`, 90 by default): an expired one is
/// refused like an unknown one.
#[tokio::test]
async fn a_disabled_account_cannot_sign_in_and_tokens_expire() {
    let portal = Portal::start(&[]);
    let base = portal.url.trim_end_matches('/').to_owned();
    let users = |args: &[&str]| portal.users(args);
    let anon = reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build().unwrap();
    let sign_in = || {
        anon.post(format!("{base}/auth/login"))
            .header("origin", &base)
            .form(&[("name", "olga"), ("password", common::ADMIN_PASSWORD), ("next", "/")])
            .send()
    };
    let token = portal.add_user("olga", "operator");
    let me = format!("{base}/api/v1/me");
    assert_eq!(common::client_with_token(&token).get(&me).send().await.unwrap().status().as_u16(), 200);
    let session = sign_in().await.unwrap();
    let cookie = session.headers()["set-cookie"].to_str().unwrap().split(';').next().unwrap().to_owned();

    let out = users(&["disable", "olga"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "olga: disabled; 1 session(s) ended, 1 API token(s) deleted"
    );
    assert_eq!(common::client_with_token(&token).get(&me).send().await.unwrap().status().as_u16(), 401);
    assert_eq!(anon.get(&me).header("cookie", &cookie).send().await.unwrap().status().as_u16(), 401);
    let r = sign_in().await.unwrap();
    assert!(
        r.headers()["location"].to_str().unwrap().starts_with("/login?error=credentials"),
        "the password is refused"
    );
    assert!(!users(&["token", "olga"]).status.success(), "no new token for a disabled account");
    let list = String::from_utf8_lossy(&users(&["list"]).stdout).into_owned();
    assert!(list.contains("olga\toperator\tdisabled"), "{list}");
    let out = users(&["disable", "admin"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("last enabled Administrator"));

    assert!(users(&["enable", "olga"]).status.success());
    let r = sign_in().await.unwrap();
    assert!(r.headers().get("set-cookie").is_some(), "enabled: the password works again");

    // Expiry: a token past its date is refused (its date moved back in the vault, as time would).
    let out = users(&["token", "olga", "--days", "1"]);
    let token = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    let c = common::client_with_token(&token);
    assert_eq!(c.get(&me).send().await.unwrap().status().as_u16(), 200);
    let url = common::database_url(&portal.data_dir)
        .unwrap_or_else(|| format!("sqlite://{}", portal.data_dir.join("homeward.db").display()));
    let db = orchestrator::db::Db::connect(&url, 1).await.unwrap();
    let moved = sqlx::query("update api_tokens set expires_at = expires_at - 86400001 where label = 'cli'")
        .execute(&db.pool)
        .await
        .unwrap();
    assert!(moved.rows_affected() >= 1);
    db.pool.close().await;
    assert_eq!(c.get(&me).send().await.unwrap().status().as_u16(), 401, "expired");
    assert!(!users(&["token", "olga", "--days", "0"]).status.success(), "--days is 1 to 3650");
}

/// A client that stops sending mid-request (headers sent, the body promised but never finished) gets 408 once the
/// request timeout passes, and its connection is let go: it cannot hold a handler forever.
#[tokio::test]
async fn a_request_whose_body_never_arrives_times_out_with_408() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let portal = Portal::start(&["--request-timeout-seconds", "1"]);
    let addr = portal.url.trim_start_matches("http://").trim_end_matches('/').to_owned();
    let mut tcp = tokio::net::TcpStream::connect(&addr).await.unwrap();
    let head = format!(
        "POST /auth/login HTTP/1.1\r\nHost: {addr}\r\nOrigin: http://{addr}\r\n\
         Content-Type: application/x-www-form-urlencoded\r\nContent-Length: 100\r\n\r\nname=adm"
    );
    tcp.write_all(head.as_bytes()).await.unwrap();
    let mut answer = vec![0u8; 512];
    let n = tokio::time::timeout(std::time::Duration::from_secs(20), tcp.read(&mut answer))
        .await
        .expect("no answer within 20 s")
        .unwrap();
    let text = String::from_utf8_lossy(&answer[..n]);
    assert!(text.starts_with("HTTP/1.1 408"), "{text}");
}

/// Token use never needs a write to serve a read: with another process holding SQLite's write lock (as a full or
/// busy database would refuse writes), a never-used token still reads at once — its last use is recorded off the
/// request's path, and dropped with a warning if it cannot be.
#[tokio::test]
async fn a_token_reads_while_the_database_refuses_writes() {
    if engine().0 != "sqlite" {
        return;
    }
    let portal = Portal::start(&[]);
    let token = portal.add_user("rita", "reader");
    let url = format!("sqlite://{}", portal.data_dir.join("homeward.db").display());
    let db = orchestrator::db::Db::connect(&url, 1).await.unwrap();
    let mut writer = db.pool.begin().await.unwrap();
    sqlx::query("update users set name = name").execute(&mut *writer).await.unwrap();
    // The server waits up to 10 s for a busy write lock: a read that needed a write would take that long and fail.
    let reader = reqwest::Client::builder()
        .timeout(std::time::Duration::from_secs(5))
        .default_headers(
            [(reqwest::header::AUTHORIZATION, format!("Bearer {token}").parse().unwrap())].into_iter().collect(),
        )
        .build()
        .unwrap();
    let r = reader.get(format!("{}api/v1/items", portal.url)).send().await.expect("the read did not wait");
    assert_eq!(r.status().as_u16(), 200);
    writer.rollback().await.unwrap();
    db.pool.close().await;
}

/// A database that refuses writes (another process holds SQLite's write lock past the busy timeout) is not the
/// client's fault and not a crash: 503 with Retry-After, a typed body without the driver's text, and the response's
/// request id, which the server log's line for the cause names.
#[tokio::test]
async fn a_busy_database_answers_503_without_its_raw_text() {
    if engine().0 != "sqlite" {
        return;
    }
    let portal = Portal::start(&[]);
    let url = format!("sqlite://{}", portal.data_dir.join("homeward.db").display());
    let db = orchestrator::db::Db::connect(&url, 1).await.unwrap();
    let mut writer = db.pool.begin().await.unwrap();
    sqlx::query("update users set name = name").execute(&mut *writer).await.unwrap();
    let r = portal
        .http
        .post(format!("{}api/v1/agents", portal.url))
        .json(&serde_json::json!({"name": "mt-busy", "role": "master-target"}))
        .send()
        .await
        .unwrap();
    writer.rollback().await.unwrap();
    db.pool.close().await;
    assert_eq!(r.status().as_u16(), 503);
    assert_eq!(r.headers()["retry-after"], "5");
    assert!(r.headers().contains_key("x-request-id"));
    let body = r.text().await.unwrap();
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["code"], "unavailable", "{body}");
    assert!(!body.contains("locked") && !body.contains("sqlite") && !body.contains("database:"), "{body}");
}

/// A CA and a certificate it signed for 127.0.0.1, as an operator's own PKI would give them: (chain PEM with the
/// leaf first, the leaf's key PEM, the CA's PEM).
fn operator_certificate() -> (String, String, String) {
    let ca_key = rcgen::KeyPair::generate().unwrap();
    let mut ca = rcgen::CertificateParams::new(vec![]).unwrap();
    ca.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    ca.distinguished_name.push(rcgen::DnType::CommonName, "Operator test CA");
    let ca_cert = ca.self_signed(&ca_key).unwrap();
    let issuer = rcgen::Issuer::new(ca, ca_key);
    let key = rcgen::KeyPair::generate().unwrap();
    let leaf = rcgen::CertificateParams::new(vec!["127.0.0.1".to_owned()]).unwrap().signed_by(&key, &issuer).unwrap();
    (format!("{}{}", leaf.pem(), ca_cert.pem()), key.serialize_pem(), ca_cert.pem())
}

/// `serve --tls-cert/--tls-key`: the portal, the API and the CLI over HTTPS with the operator's certificate; the
/// session cookie is `Secure`; plain HTTP on that port gets no page; files that cannot serve stop the start with
/// the file named (exit 2) before anything listens.
#[tokio::test]
async fn the_portal_serves_https_with_the_operators_certificate() {
    let dir = tempfile::tempdir().unwrap();
    let (chain, key, ca) = operator_certificate();
    let (cert_file, key_file, ca_file) =
        (dir.path().join("portal.pem"), dir.path().join("portal.key"), dir.path().join("ca.pem"));
    std::fs::write(&cert_file, &chain).unwrap();
    std::fs::write(&key_file, &key).unwrap();
    std::fs::write(&ca_file, &ca).unwrap();
    let (cert_arg, key_arg) = (cert_file.to_str().unwrap(), key_file.to_str().unwrap());

    let portal = Portal::start(&["--tls-cert", cert_arg, "--tls-key", key_arg]);
    assert!(portal.url.starts_with("https://127.0.0.1:"), "{}", portal.url);
    let trusting = || {
        reqwest::Client::builder()
            .tls_certs_only([reqwest::Certificate::from_pem(ca.as_bytes()).unwrap()])
            .redirect(reqwest::redirect::Policy::none())
    };
    let anon = trusting().build().unwrap();
    let base = portal.url.trim_end_matches('/').to_owned();
    let (status, _, body) = get(&anon, &format!("{base}/healthz")).await;
    assert_eq!(status, 200, "{body}");
    let r =
        post_sign_in(&anon, &base, &[("name", "admin"), ("password", common::ADMIN_PASSWORD), ("next", "/jobs")]).await;
    assert_eq!((r.status().as_u16(), r.headers()["location"].to_str().unwrap()), (303, "/jobs"));
    let cookie = r.headers()["set-cookie"].to_str().unwrap().to_owned();
    assert!(cookie.contains("HttpOnly") && cookie.ends_with("; Secure"), "{cookie}");
    let session = cookie.split(';').next().unwrap();
    let r = anon.get(format!("{base}/jobs")).header("cookie", session).send().await.unwrap();
    assert_eq!(r.status().as_u16(), 200);
    assert!(r.text().await.unwrap().contains("/pkg/homeward.js"), "the page and its hydration script");
    let mut h = reqwest::header::HeaderMap::new();
    h.insert("authorization", format!("Bearer {}", portal.token).parse().unwrap());
    let api = trusting().default_headers(h).build().unwrap();
    let r = api.get(format!("{base}/api/v1/items")).send().await.unwrap();
    assert_eq!(r.status().as_u16(), 200);
    // The sign-in throttle still sees the client's address over TLS (30 failures per address, any names).
    for i in 0..30 {
        post_sign_in(&anon, &base, &[("name", format!("nobody-{i}").as_str()), ("password", "wrong-password-123")])
            .await;
    }
    let r = post_sign_in(&anon, &base, &[("name", "someone-else"), ("password", "wrong-password-123")]).await;
    assert_eq!(r.status().as_u16(), 429, "one address's flood is throttled whatever the name");

    // A client that does not trust the certificate gets no answer; nor does plain HTTP.
    let untrusting = reqwest::Client::new();
    assert!(untrusting.get(format!("{base}/healthz")).send().await.is_err(), "an unknown CA is refused");
    let plain = base.replacen("https://", "http://", 1);
    assert!(
        reqwest::Client::new().get(format!("{plain}/healthz")).send().await.is_err(),
        "plain HTTP on the TLS port gets no page"
    );

    // The command line reaches it too, trusting the operator's CA through the usual SSL_CERT_FILE.
    let out = std::process::Command::new(common::BIN)
        .args(["items", "web01", "--json", "--server", &base])
        .env("HOMEWARD_TOKEN", &portal.token)
        .env("SSL_CERT_FILE", &ca_file)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["item"]["id"], "web01", "{v}");

    // Files that cannot serve: the file is named, exit 2, one line.
    let data = tempfile::tempdir().unwrap();
    let data_arg = data.path().to_str().unwrap();
    let missing = dir.path().join("missing.pem");
    let out = run_homeward(&[
        "serve",
        "--listen",
        "127.0.0.1:0",
        "--data-dir",
        data_arg,
        "--tls-cert",
        missing.to_str().unwrap(),
        "--tls-key",
        key_arg,
    ]);
    assert_one_line_usage_error(&out, "missing.pem");
    let out = run_homeward(&[
        "serve",
        "--listen",
        "127.0.0.1:0",
        "--data-dir",
        data_arg,
        "--tls-cert",
        cert_arg,
        "--tls-key",
        cert_arg,
    ]);
    assert_one_line_usage_error(&out, "private key");
    let out = run_homeward(&["serve", "--listen", "127.0.0.1:0", "--data-dir", data_arg, "--tls-cert", cert_arg]);
    assert_one_line_usage_error(&out, "--tls-key");
}

/// A damaged estate (a row of the database that no longer parses) is not served as errors with `/healthz` saying
/// ok: `/healthz` turns unavailable naming the row, item calls answer a typed 500 without the parser's text, and
/// the next start refuses with one line naming the row and what to do (exit 2).
#[tokio::test]
async fn a_damaged_estate_makes_healthz_unavailable_and_the_next_start_refuse() {
    if engine().0 != "sqlite" {
        return; // the damage is written with SQLite's file; the check is the same code on PostgreSQL
    }
    let dir = tempfile::tempdir().unwrap();
    let portal = Portal::start_in(dir.path(), &[]);
    let (status, _, body) = get(&reqwest::Client::new(), &format!("{}healthz", portal.url)).await;
    assert_eq!(status, 200, "{body}");
    let url = format!("sqlite://{}", dir.path().join("homeward.db").display());
    let db = orchestrator::db::Db::connect(&url, 1).await.unwrap();
    sqlx::query("update estate_items set record = '{\"item\": 7' where id = 'web01'").execute(&db.pool).await.unwrap();
    db.pool.close().await;

    let (status, _, body) = get(&reqwest::Client::new(), &format!("{}healthz", portal.url)).await;
    assert_eq!(status, 503, "{body}");
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["status"], "unavailable");
    let error = v["error"].as_str().unwrap();
    assert!(error.contains("item web01") && error.contains("restore the vault's database"), "{error}");
    let r = portal.http.get(format!("{}api/v1/items", portal.url)).send().await.unwrap();
    assert_eq!(r.status().as_u16(), 500);
    let v: serde_json::Value = r.json().await.unwrap();
    assert_eq!(v["code"], "internal", "{v}");
    assert!(v["request_id"].is_string() && !v.to_string().contains("EOF while parsing"), "{v}");
    drop(portal);

    let out = common::homeward(dir.path())
        .args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(dir.path())
        .output()
        .unwrap();
    assert_one_line_usage_error(&out, "item web01");
    assert!(String::from_utf8_lossy(&out.stderr).contains("restore the vault's database from its backup"));
}
