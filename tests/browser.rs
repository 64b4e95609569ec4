//! The portal in a real browser: Debian's Chromium driven through chromedriver. Checks that the wasm is served as
//! `application/wasm`, that the page hydrates (`<body data-hydrated="true">`, set from the wasm side), and that the
//! left navigation changes the page without a full reload.
//!
//! Slow (starts a browser), so it runs when HOMEWARD_E2E=1, which `./x test` and CI set.

mod common;

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::{free_port, target_dir, Portal};
use fantoccini::{Client, ClientBuilder, Locator};
use hyper_util::client::legacy::connect::HttpConnector;

struct ChromeDriver {
    child: Child,
    url: String,
    _profile: tempfile::TempDir,
}

impl ChromeDriver {
    fn start() -> ChromeDriver {
        let port = free_port();
        let child = Command::new("chromedriver")
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("chromedriver not found: run ./x setup (installs Debian's chromium-driver)");
        ChromeDriver { child, url: format!("http://127.0.0.1:{port}"), _profile: tempfile::tempdir().unwrap() }
    }

    async fn session(&self, width: u32, dark: bool) -> Client {
        let mut args = vec![
            "--headless=new".to_owned(),
            "--no-sandbox".into(),
            "--disable-gpu".into(),
            "--disable-dev-shm-usage".into(),
            "--disable-background-networking".into(),
            "--disable-component-update".into(),
            "--disable-sync".into(),
            "--disable-quic".into(),
            "--no-first-run".into(),
            format!("--user-data-dir={}", tempfile::tempdir().unwrap().keep().display()),
            format!("--window-size={width},900"),
        ];
        if dark {
            args.push("--force-dark-mode".into());
            args.push("--blink-settings=preferredColorScheme=0".into());
        }
        let caps = serde_json::json!({
            "browserName": "chrome",
            "goog:chromeOptions": { "binary": "/usr/bin/chromium", "args": args }
        });
        let caps = caps.as_object().unwrap().clone();
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            match ClientBuilder::new(HttpConnector::new()).capabilities(caps.clone()).connect(&self.url).await {
                Ok(c) => return c,
                Err(e) if Instant::now() < deadline => {
                    let _ = e;
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
                Err(e) => panic!("no WebDriver session from chromedriver within 30 s: {e}"),
            }
        }
    }
}

impl Drop for ChromeDriver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn e2e_enabled() -> bool {
    if std::env::var_os("HOMEWARD_E2E").is_some() {
        return true;
    }
    eprintln!("browser test skipped: set HOMEWARD_E2E=1 (./x test and CI do)");
    false
}

fn screenshots_dir() -> PathBuf {
    let dir = target_dir().join("screenshots");
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

async fn wait_hydrated(c: &Client) {
    if let Err(e) =
        c.wait().at_most(Duration::from_secs(60)).for_element(Locator::Css(r#"body[data-hydrated="true"]"#)).await
    {
        let src = c.source().await.unwrap_or_default();
        panic!("the page did not hydrate within 60 s ({e}); page source:\n{src}");
    }
}

#[tokio::test]
async fn portal_hydrates_and_navigates_without_a_full_reload() {
    if !e2e_enabled() {
        return;
    }
    let wasm = target_dir().join("site/pkg/homeward_bg.wasm");
    assert!(wasm.is_file(), "{} is missing: build the site with ./x site", wasm.display());

    let portal = Portal::start(&["--vault-name", "contoso-dr-vault"]);

    // The wasm must be served with its own media type or browsers refuse to compile it streaming.
    let resp = reqwest::get(format!("{}pkg/homeward_bg.wasm", portal.url)).await.unwrap();
    assert_eq!(resp.status().as_u16(), 200);
    assert_eq!(resp.headers()["content-type"], "application/wasm");
    let served = resp.bytes().await.unwrap();
    assert_eq!(served.len() as u64, std::fs::metadata(&wasm).unwrap().len());

    let driver = ChromeDriver::start();
    let c = driver.session(1280, false).await;
    c.goto(&portal.url).await.unwrap();
    wait_hydrated(&c).await;
    let name = c.find(Locator::Css(r#"[data-testid="vault-name"]"#)).await.unwrap().text().await.unwrap();
    assert_eq!(name, "contoso-dr-vault");
    std::fs::write(screenshots_dir().join("overview-light.png"), c.screenshot().await.unwrap()).unwrap();

    // A full reload would drop this marker; client-side routing keeps it.
    c.execute("window.__homewardMarker = 42; return null;", vec![]).await.unwrap();
    c.find(Locator::LinkText("Jobs")).await.unwrap().click().await.unwrap();
    c.wait()
        .at_most(Duration::from_secs(10))
        .for_element(Locator::XPath("//h1[normalize-space()='Site Recovery jobs']"))
        .await
        .expect("the Jobs page replaced the overview");
    assert_eq!(c.current_url().await.unwrap().path(), "/jobs");
    let kept = c.execute("return window.__homewardMarker === 42;", vec![]).await.unwrap();
    assert_eq!(kept, serde_json::Value::Bool(true), "navigation reloaded the whole page");
    let current = c.find(Locator::Css(r#".sidebar a[aria-current="page"]"#)).await.unwrap().text().await.unwrap();
    assert_eq!(current, "Jobs", "the navigation marks the page it shows");

    // Back goes to the overview, still without a reload.
    c.back().await.unwrap();
    c.wait()
        .at_most(Duration::from_secs(10))
        .for_element(Locator::XPath("//h1[normalize-space()='Overview']"))
        .await
        .expect("back returned to the overview");
    let kept = c.execute("return window.__homewardMarker === 42;", vec![]).await.unwrap();
    assert_eq!(kept, serde_json::Value::Bool(true));

    // Replicated items, fetched by a server function after client-side navigation: the demo estate's items, and
    // for a refused one the rule that refuses it.
    c.find(Locator::LinkText("Replicated items")).await.unwrap().click().await.unwrap();
    let row = c
        .wait()
        .at_most(Duration::from_secs(10))
        .for_element(Locator::Css(r#"table[data-testid="items"] tr[data-item="phys08"]"#))
        .await
        .expect("the items table lists the demo estate");
    let text = row.html(false).await.unwrap();
    assert!(text.contains("R-P2") && text.contains("2008 R2 SP1"), "{text}");
    let kept = c.execute("return window.__homewardMarker === 42;", vec![]).await.unwrap();
    assert_eq!(kept, serde_json::Value::Bool(true));
    std::fs::write(screenshots_dir().join("items-light.png"), c.screenshot().await.unwrap()).unwrap();
    c.close().await.unwrap();

    // The same portal in dark mode and at phone width, for the screenshots folder.
    let c = driver.session(390, true).await;
    c.goto(&format!("{}jobs", portal.url)).await.unwrap();
    wait_hydrated(&c).await;
    std::fs::write(screenshots_dir().join("jobs-dark-390.png"), c.screenshot().await.unwrap()).unwrap();
    c.close().await.unwrap();
}
