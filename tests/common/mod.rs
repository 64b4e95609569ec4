//! Shared by the end-to-end tests: start the real `homeward` binary on a free port with a fresh data dir.

#![allow(dead_code)] // each test binary uses a different part of this module

use std::io::{BufRead, BufReader};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use serde_json::Value;

#[path = "../support/postgres.rs"]
pub mod postgres;

pub mod netns;

pub const BIN: &str = env!("CARGO_BIN_EXE_homeward");

/// The database URL the suites use for `data_dir`: none (the SQLite file in the data dir) unless
/// HOMEWARD_TEST_DATABASE=postgres, then a database of its own on the test cluster — the same one every time for
/// the same data dir, so restart tests find their vault again.
pub fn database_url(data_dir: &Path) -> Option<String> {
    let remembered = data_dir.join("test-database-url");
    if let Ok(url) = std::fs::read_to_string(&remembered) {
        return Some(url);
    }
    if !postgres::wanted() {
        return None;
    }
    let url = postgres::Cluster::get().database();
    std::fs::create_dir_all(data_dir).unwrap();
    std::fs::write(&remembered, &url).unwrap();
    Some(url)
}

/// `homeward` with the test database of `data_dir` in its environment.
pub fn homeward(data_dir: &Path) -> Command {
    let mut c = Command::new(BIN);
    match database_url(data_dir) {
        Some(url) => c.env("HOMEWARD_DATABASE_URL", url),
        None => c.env_remove("HOMEWARD_DATABASE_URL"),
    };
    c
}

/// The engine's name as /healthz says it, and as the portal shows it.
pub fn engine() -> (&'static str, &'static str) {
    if postgres::wanted() {
        ("postgresql", "PostgreSQL")
    } else {
        ("sqlite", "SQLite")
    }
}

/// The first-start Administrator's password in tests (HOMEWARD_ADMIN_PASSWORD).
pub const ADMIN_PASSWORD: &str = "correct-horse-battery-staple";

/// The workspace's `target` folder, found from the binary under test (`target/<profile>/homeward`).
pub fn target_dir() -> PathBuf {
    Path::new(BIN).parent().and_then(Path::parent).expect("binary lives in target/<profile>").to_path_buf()
}

/// A `homeward serve` process on 127.0.0.1 with a port the OS picked; killed on drop.
pub struct Portal {
    child: Child,
    /// Base URL with a trailing slash, as printed by the server.
    pub url: String,
    pub data_dir: PathBuf,
    /// `host:port` of the agents' endpoint (mutual TLS), from the server's second line.
    pub agent_endpoint: String,
    /// An Administrator's personal API token, and a client that sends it.
    pub token: String,
    pub http: reqwest::Client,
    _owned_dir: Option<tempfile::TempDir>,
}

impl Portal {
    /// Starts on a fresh temporary data dir, removed when the portal is dropped.
    pub fn start(extra_args: &[&str]) -> Portal {
        let dir = tempfile::tempdir().expect("temp data dir");
        let mut portal = Portal::start_in(dir.path(), extra_args);
        portal._owned_dir = Some(dir);
        portal
    }

    /// Starts on a fresh temporary data dir with its vault in a new database on the PostgreSQL test cluster,
    /// whichever engine the suite runs on.
    pub fn start_on_postgres(extra_args: &[&str]) -> Portal {
        let dir = tempfile::tempdir().expect("temp data dir");
        std::fs::write(dir.path().join("test-database-url"), postgres::Cluster::get().database()).unwrap();
        let mut portal = Portal::start_in(dir.path(), extra_args);
        portal._owned_dir = Some(dir);
        portal
    }

    /// Starts on `data_dir`, which the caller keeps (for restart tests).
    pub fn start_in(data_dir: &Path, extra_args: &[&str]) -> Portal {
        install_tls();
        let mut child = homeward(data_dir)
            .args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
            .arg(data_dir)
            .args(extra_args)
            .env("HOMEWARD_ADMIN_PASSWORD", ADMIN_PASSWORD)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start homeward serve");
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let mut lines = BufReader::new(stdout).lines();
            for line in lines.by_ref().take(2).map_while(Result::ok) {
                let _ = tx.send(line);
            }
            for _ in lines {} // keep draining so the server never blocks on a full pipe
        });
        // Until the Portal owns it, a panic here must not leave the server running (it would hold the test
        // runner's output pipe open and hang the suite).
        let mut guard = KillOnDrop(Some(child));
        let line = match rx.recv_timeout(Duration::from_secs(60)) {
            Ok(line) => line,
            Err(_) => panic!("homeward serve printed no URL within 60 s"),
        };
        let url = line.strip_prefix("Homeward portal: ").unwrap_or_else(|| panic!("unexpected first line: {line}"));
        assert!(
            (url.starts_with("http://127.0.0.1:") || url.starts_with("https://127.0.0.1:")) && url.ends_with('/'),
            "{url}"
        );
        let second = rx.recv_timeout(Duration::from_secs(10)).expect("the agents' endpoint line");
        let agent_endpoint = second
            .strip_prefix("Agents' endpoint (mutual TLS): ")
            .unwrap_or_else(|| panic!("unexpected second line: {second}"))
            .to_owned();
        let token = token_for(data_dir, "admin");
        let http = client_with_token(&token);
        Portal {
            child: guard.0.take().expect("the server process"),
            url: url.to_owned(),
            data_dir: data_dir.to_owned(),
            agent_endpoint,
            token,
            http,
            _owned_dir: None,
        }
    }

    /// `homeward users <args> --data-dir <this vault>`, on this vault's database.
    pub fn users(&self, args: &[&str]) -> std::process::Output {
        homeward(&self.data_dir).arg("users").args(args).arg("--data-dir").arg(&self.data_dir).output().unwrap()
    }

    /// Creates an account with `role` (password `ADMIN_PASSWORD`) and returns a personal API token for it.
    pub fn add_user(&self, name: &str, role: &str) -> String {
        let out = homeward(&self.data_dir)
            .args(["users", "add", name, "--role", role, "--data-dir"])
            .arg(&self.data_dir)
            .env("HOMEWARD_NEW_PASSWORD", ADMIN_PASSWORD)
            .output()
            .unwrap();
        assert!(out.status.success(), "users add: {}", String::from_utf8_lossy(&out.stderr));
        token_for(&self.data_dir, name)
    }
}

/// A new personal API token for `user`, created with `homeward users token`.
pub fn token_for(data_dir: &Path, user: &str) -> String {
    let out = homeward(data_dir)
        .args(["users", "token", user, "--label", "tests", "--data-dir"])
        .arg(data_dir)
        .output()
        .unwrap();
    assert!(out.status.success(), "users token: {}", String::from_utf8_lossy(&out.stderr));
    let token = String::from_utf8(out.stdout).unwrap().trim().to_owned();
    assert!(token.starts_with("hwt_"), "{token}");
    token
}

/// reqwest is built without a default crypto provider (the binary names ring); a test process installs it once
/// before building any client.
pub fn install_tls() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

pub fn client_with_token(token: &str) -> reqwest::Client {
    install_tls();
    let mut h = reqwest::header::HeaderMap::new();
    h.insert("authorization", format!("Bearer {token}").parse().unwrap());
    reqwest::Client::builder().default_headers(h).build().unwrap()
}

struct KillOnDrop(Option<Child>);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        if let Some(c) = &mut self.0 {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for Portal {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Runs `homeward` to completion with a deadline, for the exit-code tests.
pub fn run_homeward(args: &[&str]) -> Output {
    let mut child = Command::new(BIN)
        .args(args)
        .env_remove("HOMEWARD_DATABASE_URL")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start homeward");
    for _ in 0..300 {
        if child.try_wait().unwrap().is_some() {
            return child.wait_with_output().unwrap();
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let _ = child.kill();
    panic!("homeward {args:?} did not exit within 30 s");
}

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// GET `url` and its JSON body.
pub async fn get(c: &reqwest::Client, url: &str) -> Value {
    serde_json::from_str(&c.get(url).send().await.unwrap().text().await.unwrap()).unwrap()
}

pub async fn post(c: &reqwest::Client, url: &str, body: &str, key: &str) -> (u16, Value) {
    let r = c
        .post(url)
        .header("content-type", "application/json")
        .header("idempotency-key", key)
        .body(body.to_owned())
        .send()
        .await
        .unwrap();
    (r.status().as_u16(), serde_json::from_str(&r.text().await.unwrap()).unwrap_or(Value::Null))
}

pub async fn wait_job(c: &reqwest::Client, base: &str, job: &str) -> Value {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let j = get(c, &format!("{base}api/v1/jobs/{job}")).await;
        match j["job"]["state"].as_str() {
            Some("succeeded" | "failed" | "cancelled") => return j,
            _ if Instant::now() > deadline => panic!("job {job} did not end: {j}"),
            _ => tokio::time::sleep(Duration::from_millis(50)).await,
        }
    }
}

/// `qemu-img compare`: the two disk images hold the same guest bytes.
pub fn same_disk(a: &std::path::Path, fa: &str, b: &std::path::Path, fb: &str, context: &str) {
    let out = Command::new("qemu-img").args(["compare", "-q", "-f", fa, "-F", fb]).arg(a).arg(b).output().unwrap();
    assert!(out.status.success(), "{context}: {} differs from {}", a.display(), b.display());
}

/// An item's record in the vault of `data_dir` (its disks' paths under the estate folder, power, tools …), read
/// from the database the way every node sees it.
pub async fn estate_record(data_dir: &Path, item: &str) -> Value {
    let url = database_url(data_dir)
        .unwrap_or_else(|| format!("sqlite://{}?mode=ro", data_dir.join("homeward.db").display()));
    let db = orchestrator::db::Db::connect(&url, 1).await.unwrap();
    let record: String = sqlx::query_scalar("select record from estate_items where id = $1")
        .bind(item)
        .fetch_one(&db.pool)
        .await
        .unwrap_or_else(|e| panic!("no record of {item}: {e}"));
    db.pool.close().await;
    serde_json::from_str(&record).unwrap()
}

/// Starts `action` on `item` through the API (202 expected); the job's id.
pub async fn start_action(p: &Portal, item: &str, action: &str, body: &str, key: &str) -> String {
    let (s, v) = post(&p.http, &format!("{}api/v1/items/{item}/{action}", p.url), body, key).await;
    assert_eq!(s, 202, "{action} {item}: {v}");
    v["job_id"].as_str().unwrap().to_owned()
}

/// Waits until one of the job's tasks reports bytes examined: its sync is moving data now.
pub async fn wait_until_moving(p: &Portal, job: &str) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let j = get(&p.http, &format!("{}api/v1/jobs/{job}", p.url)).await;
        let tasks = j["job"]["tasks"].as_array().cloned().unwrap_or_default();
        if tasks.iter().any(|t| t["progress"].as_array().is_some_and(|p| p[0].as_u64() > Some(0))) {
            return;
        }
        assert!(Instant::now() < deadline, "the job never started moving bytes: {j}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
