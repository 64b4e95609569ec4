//! Site agents against the real binary: an Administrator enrolls an agent through the API, `homeward agent`
//! redeems the token and heartbeats over mutual TLS; a replayed token, a wrong role, a wrong CA fingerprint, a
//! client without a certificate, a certificate from another CA and an unregistered certificate of the vault's CA
//! are all refused; revoking stops the running agent at its next heartbeat.

use crate::{common, emulators};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::netns::{cycle, fill_random, finished, Sites};
use common::{Portal, BIN};
use serde_json::{json, Value};

/// An agent process, killed if the test ends (or fails) while it runs.
struct AgentProcess(Option<Child>);

impl Drop for AgentProcess {
    fn drop(&mut self) {
        if let Some(c) = &mut self.0 {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// `homeward agent` with `args`, its output piped.
fn agent(args: &[&str]) -> AgentProcess {
    let child = Command::new(BIN)
        .arg("agent")
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start homeward agent");
    AgentProcess(Some(child))
}

/// Waits (bounded) for the agent to exit; returns its code and stderr.
fn exit_of(mut p: AgentProcess, within: Duration) -> (i32, String) {
    let deadline = Instant::now() + within;
    while Instant::now() < deadline {
        let child = p.0.as_mut().unwrap();
        if child.try_wait().unwrap().is_some() {
            let out = p.0.take().unwrap().wait_with_output().unwrap();
            return (out.status.code().unwrap_or(-1), String::from_utf8_lossy(&out.stderr).into_owned());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!("the agent did not exit within {within:?}");
}

async fn enroll(p: &Portal, c: &reqwest::Client, name: &str, role: &str) -> (u16, Value) {
    let r = c.post(format!("{}api/v1/agents", p.url)).json(&json!({"name": name, "role": role})).send().await.unwrap();
    (r.status().as_u16(), r.json().await.unwrap())
}

async fn agent_named(p: &Portal, name: &str) -> Value {
    let v = common::get(&p.http, &format!("{}api/v1/agents", p.url)).await;
    v["agents"].as_array().unwrap().iter().find(|a| a["name"] == name).cloned().unwrap_or(Value::Null)
}

/// Polls (bounded) until the agent `name` is in `state`.
async fn wait_state(p: &Portal, name: &str, state: &str) -> Value {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let a = agent_named(p, name).await;
        if a["state"] == state {
            return a;
        }
        assert!(Instant::now() < deadline, "{name} never became {state}: {a}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Enrolls and starts agents `(name, role, site, extra arguments)` over the estate's folder, each online before the
/// next; they stop (and their folders go) when the returned list is dropped.
async fn start_agents<const N: usize>(
    p: &Portal,
    list: [(&str, &str, &str, Vec<String>); N],
) -> Vec<(AgentProcess, tempfile::TempDir)> {
    let disks = p.data_dir.join("estate").display().to_string();
    let mut agents = Vec::new();
    for (name, role, site, extra) in list {
        let body = json!({"name": name, "role": role, "site": site});
        let r = p.http.post(format!("{}api/v1/agents", p.url)).json(&body).send().await.unwrap();
        assert_eq!(r.status().as_u16(), 201);
        let e: Value = r.json().await.unwrap();
        let dir = tempfile::tempdir().unwrap();
        let mut args = args_of(e["command"].as_str().unwrap());
        args.extend(["--data-dir".into(), dir.path().display().to_string(), "--heartbeat-seconds".into(), "1".into()]);
        args.extend(["--disks".into(), disks.clone()]);
        args.extend(extra);
        let argv: Vec<&str> = args.iter().map(String::as_str).collect();
        agents.push((agent(&argv), dir));
        wait_state(p, name, "online").await;
    }
    agents
}

/// Starts `action` on `item` and waits for its job, which must succeed; the job as the API shows it.
async fn succeeded(p: &Portal, item: &str, action: &str, body: Value, key: &str) -> Value {
    let job = common::start_action(p, item, action, &body.to_string(), key).await;
    let j = common::wait_job(&p.http, &p.url, &job).await;
    assert_eq!(j["job"]["state"], "succeeded", "{action} {item}: {j}");
    j
}

/// Splits the enrollment's command line into `homeward agent`'s arguments.
fn args_of(command: &str) -> Vec<String> {
    let words: Vec<String> = command.split_whitespace().map(str::to_owned).collect();
    assert_eq!(&words[..2], ["homeward", "agent"], "{command}");
    words[2..].to_vec()
}

#[tokio::test]
async fn an_enrolled_agent_heartbeats_over_mutual_tls_and_a_revoked_one_stops() {
    let p = Portal::start(&[]);
    let dir = tempfile::tempdir().unwrap();

    // Only an Administrator enrolls; names are checked; unknown fields are refused.
    let reader = common::client_with_token(&p.add_user("rita", "reader"));
    assert_eq!(enroll(&p, &reader, "mt-01", "master-target").await.0, 403);
    assert_eq!(enroll(&p, &p.http, "MT 01", "master-target").await.0, 422);
    let r =
        p.http.post(format!("{}api/v1/agents", p.url)).json(&json!({"name": "x", "role": "master-target", "rol": 1}));
    let r = r.send().await.unwrap();
    assert_eq!(r.status().as_u16(), 400, "{}", r.text().await.unwrap());

    let (code, e) = enroll(&p, &p.http, "mt-01", "master-target").await;
    assert_eq!(code, 201, "{e}");
    assert_eq!(
        (e["agent"]["state"].as_str(), e["agent"]["site"].as_str()),
        (Some("awaiting-agent"), Some("on-premises"))
    );
    assert_eq!(enroll(&p, &p.http, "mt-01", "master-target").await.0, 409);
    let mut args = args_of(e["command"].as_str().unwrap());
    let data = dir.path().join("mt-01");
    args.extend(["--data-dir".into(), data.display().to_string(), "--heartbeat-seconds".into(), "1".into()]);
    let argv: Vec<&str> = args.iter().map(String::as_str).collect();

    // A wrong CA fingerprint: the agent refuses to trust the control plane, and the token stays unused.
    let mut wrong_ca = argv.clone();
    let fp = wrong_ca.iter().position(|a| *a == "--ca-fingerprint").unwrap() + 1;
    wrong_ca[fp] = "00ff";
    let wrong_dir = dir.path().join("wrong-ca").display().to_string();
    let i = wrong_ca.iter().position(|a| *a == "--data-dir").unwrap() + 1;
    wrong_ca[i] = &wrong_dir;
    let (code, err) = exit_of(agent(&wrong_ca), Duration::from_secs(30));
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("refusing to trust it"), "{err}");
    assert!(!Path::new(&wrong_dir).join("agent.json").exists(), "nothing kept after a refused CA");

    // The wrong role is refused before anything is signed; the token still works afterwards.
    let mut as_ps = argv.clone();
    as_ps[1] = "process-server";
    let (code, err) = exit_of(agent(&as_ps), Duration::from_secs(30));
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("--role master-target"), "{err}");

    let running = agent(&argv);
    let online = wait_state(&p, "mt-01", "online").await;
    assert_eq!(online["version"], env!("CARGO_PKG_VERSION"));
    assert_eq!(online["inventory"]["heartbeat_ms"], 1000);
    assert!(online["inventory"]["total_bytes"].as_u64().unwrap() > 0, "{online}");
    for f in ["agent.key", "agent.pem", "ca.pem", "agent.json"] {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(data.join(f)).unwrap().permissions().mode();
        assert_eq!(mode & 0o077, 0, "{f} is readable by others");
    }
    // The inventory follows the disk folder.
    std::fs::write(data.join("disks").join("disk0.vmdk"), vec![0u8; 4096]).unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    while agent_named(&p, "mt-01").await["inventory"]["disks"][0]["size_bytes"] != 4096 {
        assert!(Instant::now() < deadline, "the inventory never showed the disk");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // A replayed token enrolls nobody.
    let replay_dir = dir.path().join("replay").display().to_string();
    let mut replay = argv.clone();
    let i = replay.iter().position(|a| *a == "--data-dir").unwrap() + 1;
    replay[i] = &replay_dir;
    let (code, err) = exit_of(agent(&replay), Duration::from_secs(30));
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("unknown or was used already"), "{err}");

    // Revoked: the running agent is refused at its next heartbeat and stops with exit 3; a restart too.
    let r = p.http.post(format!("{}api/v1/agents/{}/revoke", p.url, online["id"].as_str().unwrap())).send().await;
    assert_eq!(r.unwrap().status().as_u16(), 200);
    let (code, err) = exit_of(running, Duration::from_secs(30));
    assert_eq!(code, 3, "{err}");
    assert!(err.contains("revoked"), "{err}");
    let (code, err) = exit_of(agent(&argv), Duration::from_secs(30));
    assert_eq!(code, 3, "{err}");

    let audit = common::get(&p.http, &format!("{}api/v1/audit", p.url)).await;
    let lines: Vec<String> = audit["entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            format!(
                "{} {} {}",
                e["action"].as_str().unwrap(),
                e["target"].as_str().unwrap(),
                e["outcome"].as_str().unwrap()
            )
        })
        .collect();
    for want in [
        "agent-enroll-token mt-01 applied",
        "agent-enroll mt-01 succeeded",
        "agent-revoke mt-01 applied",
        "agent-connect mt-01 refused",
        "agent-enroll (token) refused",
    ] {
        assert!(lines.iter().any(|l| l == want), "no audit line {want:?} in {lines:#?}");
    }
}

/// A TLS client that trusts any server (the test only checks what the control plane does with its certificate).
#[derive(Debug)]
struct AnyServer(Arc<rustls::crypto::CryptoProvider>);

impl rustls::client::danger::ServerCertVerifier for AnyServer {
    fn verify_server_cert(
        &self,
        _: &rustls::pki_types::CertificateDer<'_>,
        _: &[rustls::pki_types::CertificateDer<'_>],
        _: &rustls::pki_types::ServerName<'_>,
        _: &[u8],
        _: rustls::pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        Ok(rustls::client::danger::ServerCertVerified::assertion())
    }
    fn verify_tls12_signature(
        &self,
        m: &[u8],
        c: &rustls::pki_types::CertificateDer<'_>,
        d: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(m, c, d, &self.0.signature_verification_algorithms)
    }
    fn verify_tls13_signature(
        &self,
        m: &[u8],
        c: &rustls::pki_types::CertificateDer<'_>,
        d: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(m, c, d, &self.0.signature_verification_algorithms)
    }
    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// Sends one heartbeat request to the agents' endpoint presenting `cert` (or none); returns what came back: the
/// HTTP status line, or the error that ended the connection.
async fn heartbeat_with(endpoint: &str, cert: Option<(String, String)>) -> String {
    use rustls::pki_types::pem::PemObject;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .unwrap()
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(AnyServer(provider)));
    let config = match cert {
        Some((cert, key)) => builder
            .with_client_auth_cert(
                vec![rustls::pki_types::CertificateDer::from_pem_slice(cert.as_bytes()).unwrap()],
                rustls::pki_types::PrivateKeyDer::from_pem_slice(key.as_bytes()).unwrap(),
            )
            .unwrap(),
        None => builder.with_no_client_auth(),
    };
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let tcp = tokio::net::TcpStream::connect(endpoint).await.unwrap();
    let name = rustls::pki_types::ServerName::try_from("control-plane.homeward.invalid").unwrap();
    let mut tls = match connector.connect(name, tcp).await {
        Ok(t) => t,
        Err(e) => return format!("handshake failed: {e}"),
    };
    let body = r#"{"version":"9","inventory":{"disks":[],"free_bytes":0,"total_bytes":0,"heartbeat_ms":1000}}"#;
    let req = format!(
        "POST /agent/v1/heartbeat HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    );
    if let Err(e) = tls.write_all(req.as_bytes()).await {
        return format!("write failed: {e}");
    }
    let mut out = Vec::new();
    match tokio::time::timeout(Duration::from_secs(10), tls.read_to_end(&mut out)).await {
        Ok(Ok(_)) if out.is_empty() => "closed without an answer".into(),
        Ok(Ok(_)) => String::from_utf8_lossy(&out).lines().next().unwrap_or_default().to_owned(),
        Ok(Err(e)) => format!("read failed: {e}"),
        Err(_) => "no answer within 10 s".into(),
    }
}

fn certificate(issuer: &rcgen::Issuer<'_, rcgen::KeyPair>, name: &str) -> (String, String) {
    let key = rcgen::KeyPair::generate().unwrap();
    let mut params = rcgen::CertificateParams::new(vec![format!("{name}.agent.homeward.invalid")]).unwrap();
    params.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ClientAuth];
    let cert = params.signed_by(&key, issuer).unwrap();
    (cert.pem(), key.serialize_pem())
}

#[tokio::test]
async fn the_agents_endpoint_refuses_anonymous_forged_and_unregistered_certificates() {
    let p = Portal::start(&[]);
    let ep = p.agent_endpoint.clone();

    // No certificate at all: only enrollment is open, with its token.
    let none = heartbeat_with(&ep, None).await;
    assert!(none.starts_with("HTTP/1.1 403"), "answered without a certificate: {none}");

    // A certificate with an agent's name from a CA of the attacker's own.
    let mut ca = rcgen::CertificateParams::new(vec![]).unwrap();
    ca.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    ca.distinguished_name.push(rcgen::DnType::CommonName, "Homeward vault CA");
    let forged_issuer = rcgen::Issuer::new(ca, rcgen::KeyPair::generate().unwrap());
    let forged = heartbeat_with(&ep, Some(certificate(&forged_issuer, "mt-01"))).await;
    assert!(!forged.starts_with("HTTP/1.1"), "answered a forged certificate: {forged}");

    // A certificate the vault's CA signed but no enrollment registered (a stolen CA key would be worse; this is
    // the check that a revocation relies on): the handshake passes, the request is refused.
    let pki = p.data_dir.join("pki");
    let key = rcgen::KeyPair::from_pem(&std::fs::read_to_string(pki.join("ca.key")).unwrap()).unwrap();
    let issuer = rcgen::Issuer::from_ca_cert_pem(&std::fs::read_to_string(pki.join("ca.pem")).unwrap(), key).unwrap();
    let unregistered = heartbeat_with(&ep, Some(certificate(&issuer, "mt-01"))).await;
    assert!(unregistered.starts_with("HTTP/1.1 403"), "{unregistered}");

    // The control plane is still up and answers its own agents (nothing above broke the listener).
    assert_eq!(p.http.get(format!("{}healthz", p.url)).send().await.unwrap().status().as_u16(), 200);
}

/// An item replicates through its process server: when that server's agent is killed (SIGKILL) the item's health
/// turns to a warning naming it — not a failed job — and back to normal when a restarted agent heartbeats again.
#[tokio::test]
async fn an_agent_that_stops_heartbeating_turns_its_items_health_to_a_warning() {
    let p = Portal::start(&[]);
    let job = common::start_action(
        &p,
        "web01",
        "reprotect",
        r#"{"master_target":"mt-win-01","process_server":"ps-azure-01"}"#,
        "agents-health",
    )
    .await;
    assert_eq!(common::wait_job(&p.http, &p.url, &job).await["job"]["state"], "succeeded");

    // Both ends of the item's cycles get an agent (one end alone is a configuration error the item shows).
    let disks = p.data_dir.join("estate").display().to_string();
    let (code, e) = enroll(&p, &p.http, "mt-win-01", "master-target").await;
    assert_eq!(code, 201, "{e}");
    let mt_dir = tempfile::tempdir().unwrap();
    let mut args = args_of(e["command"].as_str().unwrap());
    args.extend(["--data-dir".into(), mt_dir.path().display().to_string(), "--heartbeat-seconds".into(), "1".into()]);
    args.extend(["--disks".into(), disks.clone()]);
    let argv: Vec<&str> = args.iter().map(String::as_str).collect();
    let _mt = agent(&argv);
    let (code, e) = enroll(&p, &p.http, "ps-azure-01", "process-server").await;
    assert_eq!(code, 201, "{e}");
    let dir = tempfile::tempdir().unwrap();
    let mut args = args_of(e["command"].as_str().unwrap());
    args.extend(["--data-dir".into(), dir.path().display().to_string(), "--heartbeat-seconds".into(), "1".into()]);
    args.extend(["--disks".into(), disks.clone()]);
    let argv: Vec<&str> = args.iter().map(String::as_str).collect();
    let mut running = agent(&argv);
    wait_state(&p, "mt-win-01", "online").await;
    wait_state(&p, "ps-azure-01", "online").await;
    let item = common::get(&p.http, &format!("{}api/v1/items/web01", p.url)).await;
    let errors = item["item"]["health_errors"].to_string();
    assert!(!errors.contains("agent"), "{errors}");

    running.0.as_mut().unwrap().kill().unwrap();
    wait_state(&p, "ps-azure-01", "offline").await;
    let item = common::get(&p.http, &format!("{}api/v1/items/web01", p.url)).await;
    assert_eq!(item["item"]["health"], "warning", "{item}");
    let errors = item["item"]["health_errors"].to_string();
    assert!(errors.contains("process server ps-azure-01's agent has sent no heartbeat since"), "{errors}");
    let listed = common::get(&p.http, &format!("{}api/v1/items", p.url)).await;
    let row = listed["items"].as_array().unwrap().iter().find(|i| i["item"]["id"] == "web01").unwrap().clone();
    assert_eq!(row["item"]["health"], "warning", "the list says the same: {row}");
    // Not a job failure: nothing failed, and the item still offers what it offered.
    assert!(item["item"]["last_failure"].is_null(), "{item}");

    // Restarted from its folder (no token needed), it is online again and the warning is gone.
    let mut again: Vec<&str> = vec!["--role", "process-server", "--data-dir"];
    let d = dir.path().display().to_string();
    again.extend([d.as_str(), "--heartbeat-seconds", "1", "--disks", disks.as_str()]);
    let _back = agent(&again);
    wait_state(&p, "ps-azure-01", "online").await;
    let item = common::get(&p.http, &format!("{}api/v1/items/web01", p.url)).await;
    assert!(!item["item"]["health_errors"].to_string().contains("agent"), "{item}");
}

/// `serve --embedded-agents` (what `./x run` does): an agent for each process server and master target of the
/// inventory, enrolled through the same token and TLS path; a restart keeps their identities.
#[tokio::test]
async fn the_embedded_default_runs_its_agents_through_the_same_enrollment_and_tls() {
    let dir = tempfile::tempdir().unwrap();
    let names = ["cs-01", "mt-linux-01", "mt-win-01", "ps-azure-01"];
    let mut ids = Vec::new();
    for round in 0..2 {
        let p = Portal::start_in(dir.path(), &["--embedded-agents"]);
        let mut now = Vec::new();
        for name in names {
            // Embedded agents heartbeat every 10 s; the first heartbeat comes right after enrollment.
            let a = wait_state(&p, name, "online").await;
            now.push(a["id"].as_str().unwrap().to_owned());
        }
        let v = common::get(&p.http, &format!("{}api/v1/agents", p.url)).await;
        let all = v["agents"].as_array().unwrap();
        assert_eq!(all.len(), 4, "{v}");
        let ps = all.iter().find(|a| a["name"] == "ps-azure-01").unwrap();
        assert_eq!((ps["role"].as_str(), ps["site"].as_str()), (Some("process-server"), Some("cloud")));
        let cs = all.iter().find(|a| a["name"] == "cs-01").unwrap();
        assert_eq!((cs["role"].as_str(), cs["site"].as_str()), (Some("process-server"), Some("on-premises")));
        assert!(dir.path().join("agents/mt-win-01/agent.key").exists());
        if round == 0 {
            ids = now;
        } else {
            assert_eq!(ids, now, "the same agents after a restart, not new enrollments");
        }
    }
}

/// The task result of `step` in a finished job.
fn task_result(job: &Value, step: &str) -> Value {
    let tasks = job["job"]["tasks"].as_array().unwrap();
    let t = tasks.iter().find(|t| t["step"] == step).unwrap_or_else(|| panic!("no {step} in {job}"));
    serde_json::from_str(t["result"].as_str().unwrap_or("null")).unwrap()
}

/// With agents enrolled under the inventory's names, the jobs' cycles run through them: the reprotect's initial
/// replication goes from the cloud's process server to the chosen master target, the re-protect to the cloud from
/// the configuration server's process server to the cloud's one, each task naming the two agents and the bytes on
/// the wire; the disks come out identical.
#[tokio::test]
async fn the_articles_cycles_run_through_the_site_agents() {
    let p = Portal::start(&["--embedded-agents"]);
    for name in ["cs-01", "mt-win-01", "ps-azure-01"] {
        wait_state(&p, name, "online").await;
    }
    let faults = format!("{}api/v1/infrastructure/faults", p.url);
    common::post(&p.http, &faults, r#"{"guest_bytes_per_tick": 0}"#, "quiet").await;
    let act = |item: &'static str, action: &'static str, body: Value, key: &'static str| {
        succeeded(&p, item, action, body, key)
    };
    let rp = json!({"master_target": "mt-win-01", "process_server": "ps-azure-01"});
    let j = act("web01", "reprotect", rp, "a-r").await;
    let sync = task_result(&j, "initial-replication");
    assert_eq!(sync["agents"], "ps-azure-01 → mt-win-01", "{sync}");
    let (data, wire) = (sync["bytes_sent"].as_u64().unwrap(), sync["wire_bytes"].as_u64().unwrap());
    assert!(data > 0 && wire > data, "the wire carries the data and the protocol and TLS around it: {sync}");
    assert!(sync["assignment"].as_str().is_some_and(|a| a.starts_with("asg-")), "{sync}");
    // The Infrastructure page's throughput: both agents of the cycle streamed lately.
    for name in ["ps-azure-01", "mt-win-01"] {
        let a = agent_named(&p, name).await;
        assert!(a["activity"]["throughput_bytes_per_s"].as_u64() > Some(0), "{a}");
    }
    assert!(agent_named(&p, "mt-linux-01").await["activity"]["throughput_bytes_per_s"].is_null());
    let token = common::token_for(&p.data_dir, "admin");
    let out = common::run_homeward(&["agents", "list", "--server", &p.url, "--token", &token]);
    let text = String::from_utf8_lossy(&out.stdout);
    let line = text.lines().find(|l| l.contains("ps-azure-01")).unwrap_or_else(|| panic!("{text}"));
    assert!(line.contains(" MiB/s"), "the CLI lists the throughput too: {text}");
    // The job's page says it too, beside the task.
    let page = format!("{}jobs/{}", p.url, j["job"]["id"].as_str().unwrap());
    let html = p.http.get(&page).send().await.unwrap().text().await.unwrap();
    assert!(html.contains("through the site agents ps-azure-01 → mt-win-01,"), "{html}");
    act("web01", "failover", json!({"point": {"type": "latest-processed"}}), "a-f").await;
    act("web01", "commit", json!({}), "a-c").await;
    common::post(&p.http, &faults, r#"{"register_agent": "web01"}"#, "reg").await;
    let j = act("web01", "reprotect-to-cloud", json!({"process_server": "cs-01"}), "a-rtc").await;
    let sync = task_result(&j, "initial-replication-to-cloud");
    assert_eq!(sync["agents"], "cs-01 → ps-azure-01", "{sync}");
    let rec = common::estate_record(&p.data_dir, "web01").await;
    let root = p.data_dir.join("estate");
    common::same_disk(
        &root.join(rec["onprem_disks"][0].as_str().unwrap()),
        "vmdk",
        &root.join(rec["cloud_disks"][0].as_str().unwrap()),
        "vpc",
        "web01 re-protected to the cloud through the agents",
    );
}

/// A master target's agent that mounts a vCenter datastore (`--datastore NAME=DIR`) writes the failback's VMDK there:
/// the alternate-location reprotect into govmomi's simulator runs its cycles from the cloud's process server to it,
/// the disk named as vCenter names it, and the VMDK in the datastore's folder holds the cloud disk.
#[tokio::test]
async fn a_master_target_agent_writes_the_vcenter_datastore_it_mounts() {
    let vcsim = emulators::Vcsim::start_with(&["--vms", "mt-win-01"]);
    let p = Portal::start(&[]);
    let api = |path: &str| format!("{}api/v1/{path}", p.url);
    common::post(&p.http, &api("infrastructure/faults"), r#"{"guest_bytes_per_tick": 0}"#, "quiet").await;
    let conn = json!({"kind": "vcenter", "name": "vcenter-01", "url": vcsim.url, "user": vcsim.user,
                      "password": vcsim.password, "thumbprint": vcsim.thumbprint});
    let (code, v) = common::post(&p.http, &api("connections"), &conn.to_string(), "vc").await;
    assert_eq!(code, 201, "{v}");
    let ds = vcsim.datastores.iter().find(|(n, _)| n == "LocalDS_0").unwrap().1.clone();
    let mount = vec!["--datastore".to_owned(), format!("LocalDS_0={}", ds.display())];
    let _agents = start_agents(
        &p,
        [("mt-win-01", "master-target", "on-premises", mount), ("ps-azure-01", "process-server", "cloud", vec![])],
    )
    .await;
    assert_eq!(agent_named(&p, "mt-win-01").await["inventory"]["datastores"], json!(["LocalDS_0"]));

    let body = json!({"master_target": "mt-win-01", "process_server": "ps-azure-01", "datastore": "LocalDS_0"});
    let job = common::start_action(&p, "app02", "reprotect", &body.to_string(), "ds-r").await;
    let j = common::wait_job(&p.http, &p.url, &job).await;
    assert_eq!(j["job"]["state"], "succeeded", "{j}");
    let sync = task_result(&j, "initial-replication");
    assert_eq!(sync["agents"], "ps-azure-01 → mt-win-01", "through the agents: {sync}");
    let rec = common::estate_record(&p.data_dir, "app02").await;
    let vmdk = ds.join("app02").join("app02-disk0.vmdk");
    assert_eq!(rec["replica_disks"][0].as_str(), vmdk.to_str(), "{rec}");
    let cloud = p.data_dir.join("estate").join(rec["cloud_disks"][0].as_str().unwrap());
    common::same_disk(&vmdk, "vmdk", &cloud, "vpc", "the master target's agent wrote the VMDK in the datastore");
}

/// A cloud disk held as a page blob (Azurite) moves through the site agents: for each cycle the control plane takes a
/// snapshot of the blob and hands the cloud's process server a SAS for that snapshot alone, which it reads into its
/// cache before sending; on the way back the receiving process server pushes what it received to the blob before
/// the cycle counts. Each step is compared with the blob read back.
#[tokio::test]
async fn page_blobs_move_through_the_process_servers_agents() {
    use orchestrator::connectors::azure_blob::{Container, Credential, StorageConfig};
    let az = emulators::Azurite::start();
    let p = Portal::start(&[]);
    let api = |path: &str| format!("{}api/v1/{path}", p.url);
    common::post(&p.http, &api("infrastructure/faults"), r#"{"guest_bytes_per_tick": 0}"#, "quiet").await;
    let blobs = Container::new(StorageConfig {
        url: az.url.clone(),
        container: "vhds".into(),
        credential: Credential::SharedKey(emulators::AZURITE_KEY.into()),
        thumbprint: Some(orchestrator::connectors::Thumbprint::parse(&az.thumbprint).unwrap()),
    })
    .unwrap();
    blobs.create_container().await.unwrap();
    let root = p.data_dir.join("estate");
    let rec = common::estate_record(&p.data_dir, "app02").await;
    blobs.upload_file("app02-disk0.vhd", &root.join(rec["cloud_disks"][0].as_str().unwrap())).await.unwrap();
    blobs.put_pages("app02-disk0.vhd", 3 << 20, vec![0x5a; 65536]).await.unwrap();
    let sa = json!({"kind": "storage-account", "name": "azure-disks", "url": az.url, "container": "vhds",
                    "account_key": emulators::AZURITE_KEY, "thumbprint": az.thumbprint});
    let (code, v) = common::post(&p.http, &api("connections"), &sa.to_string(), "sa").await;
    assert_eq!(code, 201, "{v}");

    let _agents = start_agents(
        &p,
        [
            ("mt-win-01", "master-target", "on-premises", vec![]),
            ("ps-azure-01", "process-server", "cloud", vec![]),
            ("cs-01", "process-server", "on-premises", vec![]),
        ],
    )
    .await;
    let scratch = tempfile::tempdir().unwrap();
    let read_back = |name: &'static str| {
        let (blobs, path) = (&blobs, scratch.path().join(name));
        async move {
            blobs.download_file(name, &path).await.unwrap();
            path
        }
    };
    let act = |item: &'static str, action: &'static str, body: Value, key: &'static str| {
        succeeded(&p, item, action, body, key)
    };

    let body = json!({"master_target": "mt-win-01", "process_server": "ps-azure-01", "datastore": "vmfs-01"});
    let j = act("app02", "reprotect", body, "pb-r").await;
    assert_eq!(task_result(&j, "initial-replication")["agents"], "ps-azure-01 → mt-win-01");
    let rec = common::estate_record(&p.data_dir, "app02").await;
    assert_eq!(rec["cloud_storage"], "azure-disks", "{rec}");
    let replica = root.join(rec["replica_disks"][0].as_str().unwrap());
    common::same_disk(&replica, "vmdk", &read_back("app02-disk0.vhd").await, "vpc", "the replica holds the blob");

    blobs.put_pages("app02-disk0.vhd", 5 << 20, vec![0x6b; 4096]).await.unwrap();
    let j = act("app02", "failover", json!({"point": {"type": "latest"}}), "pb-f").await;
    assert_eq!(task_result(&j, "final-cycle")["agents"], "ps-azure-01 → mt-win-01");
    let failback = root.join(rec["replica_disks"][0].as_str().unwrap().replace(".vmdk", "-failback.vmdk"));
    let blob = read_back("app02-disk0.vhd").await;
    common::same_disk(&failback, "vmdk", &blob, "vpc", "the failback holds the blob's last writes");
    assert_eq!(blobs.list().await.unwrap(), ["app02-disk0.vhd"], "no snapshot is left behind");
    act("app02", "commit", json!({}), "pb-c").await;
    assert!(blobs.list().await.unwrap().is_empty(), "commit deleted the blob");

    common::post(&p.http, &api("infrastructure/faults"), r#"{"register_agent": "app02"}"#, "reg").await;
    let j = act("app02", "reprotect-to-cloud", json!({"process_server": "cs-01"}), "pb-rtc").await;
    assert_eq!(task_result(&j, "initial-replication-to-cloud")["agents"], "cs-01 → ps-azure-01");
    let rec = common::estate_record(&p.data_dir, "app02").await;
    let onprem = root.join(rec["onprem_disks"][0].as_str().unwrap());
    let blob = read_back("app02-reprotected-disk0.vhd").await;
    common::same_disk(&onprem, "vmdk", &blob, "vpc", "the receiving process server pushed the re-protected disk");
}

/// An agent's link listener takes only streams the control plane assigned: an enrolled process server that opens
/// a stream to a master target without an assignment (the replicator's protocol straight away, no hello naming
/// one) is refused, and nothing is written.
#[tokio::test]
async fn a_stream_without_an_assignment_is_refused_by_the_receiving_agent() {
    let p = Portal::start(&["--embedded-agents"]);
    for name in ["cs-01", "mt-win-01"] {
        wait_state(&p, name, "online").await;
    }
    let link = agent_named(&p, "mt-win-01").await["inventory"]["link_endpoint"].as_str().unwrap().to_owned();
    let src = p.data_dir.join("estate/recovery/rg-dr/web01/disk0.vhd");
    let before = std::fs::read_dir(p.data_dir.join("estate/primary/vmfs-01")).unwrap().count();
    let out = Command::new(BIN)
        .args(["disk", "sync", "--json", "--agent-dir"])
        .arg(p.data_dir.join("agents/cs-01"))
        .arg(&src)
        .arg(format!("tls://mt-win-01@{link}"))
        .output()
        .unwrap();
    assert!(!out.status.success(), "the unassigned stream cannot succeed");
    assert_eq!(std::fs::read_dir(p.data_dir.join("estate/primary/vmfs-01")).unwrap().count(), before);
}

/// Fencing stops the bytes, not only the rows: a reprotect's sync runs between the embedded agents (held to
/// 256 KiB/s by the sender's rate cap); the job is cancelled mid-sync; its assignment ends, both agents are refused
/// at their next report, and the target disk stops changing.
#[tokio::test]
async fn cancelling_a_job_stops_its_agents_streams() {
    use std::os::unix::fs::MetadataExt;
    let p = Portal::start(&["--embedded-agents"]);
    for name in ["mt-win-01", "ps-azure-01"] {
        wait_state(&p, name, "online").await;
    }
    common::post(&p.http, &format!("{}api/v1/infrastructure/faults", p.url), r#"{"guest_bytes_per_tick": 0}"#, "q")
        .await;
    let r = p
        .http
        .post(format!("{}api/v1/agents/ps-azure-01/rate-cap", p.url))
        .json(&json!({"max_bytes_per_s": 256 << 10}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);
    let estate = p.data_dir.join("estate");
    fill_random(&estate.join("recovery/rg-dr/web01/disk0.vhd"), 0, 16 << 20, 0xfe9ce);
    let rp = json!({"master_target": "mt-win-01", "process_server": "ps-azure-01"});
    let job = common::start_action(&p, "web01", "reprotect", &rp.to_string(), "fence-1").await;
    common::wait_until_moving(&p, &job).await;
    let (status, v) = common::post(&p.http, &format!("{}api/v1/jobs/{job}/cancel", p.url), "{}", "fence-c").await;
    assert_eq!(status, 200, "{v}");
    let j = common::wait_job(&p.http, &p.url, &job).await;
    assert_eq!(j["job"]["state"], "cancelled", "{j}");

    let url = common::database_url(&p.data_dir)
        .unwrap_or_else(|| format!("sqlite://{}?mode=ro", p.data_dir.join("homeward.db").display()));
    let db = orchestrator::db::Db::connect(&url, 1).await.unwrap();
    let states: Vec<String> = sqlx::query_scalar("select state from assignments where job_id = $1")
        .bind(&job)
        .fetch_all(&db.pool)
        .await
        .unwrap();
    assert!(!states.is_empty() && states.iter().all(|s| s == "cancelled"), "{states:?}");
    db.pool.close().await;
    // The receiver drops the link within a second or two of the fence going; from then on nothing is written.
    let target = estate.join("primary/vmfs-01/web01/disk0-flat.vmdk");
    let written = || std::fs::metadata(&target).map(|m| (m.blocks(), m.mtime_nsec(), m.mtime())).unwrap();
    tokio::time::sleep(Duration::from_secs(3)).await;
    let before = written();
    // An observation window: the absence of writes cannot be awaited, only watched.
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(written(), before, "the target disk still changes after the job was cancelled");
}

/// Across namespaces: the control plane in one, an on-premises agent in another, the link between them cut and
/// restored: three missed heartbeats show the agent offline (a warning, not a failure), and the same agent process
/// reconnects on its own.
#[test]
fn across_namespaces_an_agent_goes_offline_when_its_link_is_cut_and_comes_back() {
    let Some(mut s) = Sites::for_test("20mbit") else { return };
    let dir = tempfile::tempdir().unwrap();
    let vault = s.serve(&dir.path().join("vault"));
    s.agent(Sites::ONPREM, &vault, "mt-wan", "master-target", dir.path());
    let state = |s: &Sites| s.agents_json(&vault)["agents"][0]["state"].as_str().unwrap_or_default().to_owned();
    let wait = |s: &Sites, want: &str| {
        let deadline = Instant::now() + Duration::from_secs(40);
        while state(s) != want {
            assert!(Instant::now() < deadline, "the agent never became {want}");
            std::thread::sleep(Duration::from_millis(250));
        }
    };
    wait(&s, "online");
    s.onprem_to_cp(false);
    wait(&s, "offline");
    s.onprem_to_cp(true);
    wait(&s, "online");
    assert!(s.children[1].try_wait().unwrap().is_none(), "the agent kept running through the cut");
}

/// A vault in the control plane's namespace, a master target on-premises, a process server in the cloud, and a
/// cloud disk of `size` whose first `data` bytes hold incompressible data.
struct Link {
    dir: tempfile::TempDir,
    mt: std::path::PathBuf,
    ps: std::path::PathBuf,
    src: std::path::PathBuf,
    dst: std::path::PathBuf,
}

impl Link {
    fn new(s: &mut Sites, size: &str, data: usize) -> Link {
        let dir = tempfile::tempdir().unwrap();
        let vault = s.serve(&dir.path().join("vault"));
        let mt = s.agent(Sites::ONPREM, &vault, "mt-01", "master-target", dir.path());
        let ps = s.agent(Sites::CLOUD, &vault, "ps-01", "process-server", dir.path());
        let (src, dst) = (dir.path().join("cloud-disk0.vmdk"), dir.path().join("onprem-disk0.vmdk"));
        let out = Command::new(BIN).args(["disk", "create", "--format", "vmdk", "--size", size]).arg(&src).output();
        assert!(out.unwrap().status.success());
        fill_random(&dir.path().join("cloud-disk0-flat.vmdk"), 0, data, 0x9e37_79b9_7f4a_7c15);
        Link { dir, mt, ps, src, dst }
    }
}

/// A process server sends to a master target straight over the WAN (mutual TLS, shaped to 100 Mbit/s); the WAN
/// is cut mid-cycle: both halves fail within seconds, and the next cycle resumes from the target's durable cursor,
/// re-sending at most one chunk, and verifies.
#[test]
fn a_process_server_sends_to_a_master_target_over_the_shaped_wan_and_resumes_after_the_link_is_cut() {
    let Some(mut s) = Sites::for_test("100mbit") else { return };
    // A 96 MiB disk with 64 MiB of data on the cloud side: about 5.5 s at 100 Mbit/s.
    let Link { dir, mt, ps, src, dst } = Link::new(&mut s, "96M", 64 << 20);

    // Checkpoints every 4 MiB, so that the cut falls well after the first durable cursor.
    let sync = |s: &Sites, addr: &str| {
        s.homeward(Sites::CLOUD, &["disk", "sync", "--json", "--mode", "full", "--chunk-size", "4M", "--agent-dir"])
            .arg(&ps)
            .arg(&src)
            .arg(format!("tls://mt-01@{addr}"))
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap()
    };

    // First try: the WAN is cut once a quarter of the data has arrived.
    let (receiver, addr) = s.receive(&mt, &dst);
    let sender = sync(&s, &addr);
    let dst_data = dir.path().join("onprem-disk0-flat.vmdk");
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        use std::os::unix::fs::MetadataExt;
        let written = std::fs::metadata(&dst_data).map(|m| m.blocks() * 512).unwrap_or(0);
        if written >= 16 << 20 {
            break;
        }
        assert!(Instant::now() < deadline, "the cycle never got going ({written} bytes written)");
        std::thread::sleep(Duration::from_millis(20));
    }
    s.wan(false);
    // Both halves notice the dead link within seconds (TCP user timeout and keepalive), not minutes.
    let (code, _, err) = finished(sender, Duration::from_secs(60));
    assert_ne!(code, 0, "the cut cycle cannot succeed: {err}");
    let (code, _, err) = finished(receiver, Duration::from_secs(60));
    assert_ne!(code, 0, "the cut cycle cannot succeed: {err}");
    s.wan(true);

    // Second try: resumes from the durable cursor, re-sends at most one 4 MiB chunk, and verifies.
    let (receiver, addr) = s.receive(&mt, &dst);
    let (code, out, err) = finished(sync(&s, &addr), Duration::from_secs(120));
    assert_eq!(code, 0, "{err}");
    let (rcode, rout, rerr) = finished(receiver, Duration::from_secs(30));
    assert_eq!(rcode, 0, "{rerr}");
    assert!(rout.contains("on the wire (TLS included)"), "{rout}");
    let r: Value = serde_json::from_str(out.lines().last().unwrap()).unwrap();
    let resumed = r["resumed_from_block"].as_u64().unwrap_or_else(|| panic!("not resumed: {r}"));
    let block = r["block_size"].as_u64().unwrap();
    assert!(resumed * block >= 12 << 20, "resumed from {} MiB only", (resumed * block) >> 20);
    let data_sent = r["data_bytes"].as_u64().unwrap();
    let remaining = (64u64 << 20) - resumed * block;
    assert!(data_sent <= remaining + (4 << 20), "re-sent more than one chunk: {data_sent} for {remaining} left");
    // The wire carried the data plus TLS's overhead, a few percent at most.
    let wire = r["wire_bytes_sent"].as_u64().unwrap();
    assert!(wire >= data_sent && wire < r["bytes_sent"].as_u64().unwrap() * 105 / 100 + 65_536, "{r}");
    common::same_disk(&src, "vmdk", &dst, "vmdk", "after the resumed cycle");
    eprintln!(
        "resumed at {} MiB of 64; re-sent {} KiB beyond what was left; {} bytes on the wire for {} of data",
        (resumed * block) >> 20,
        data_sent.saturating_sub(remaining) >> 10,
        wire,
        data_sent
    );
}

/// The sending agent's process is killed (SIGKILL) mid-cycle; the receiver notices the dead stream, and the next
/// cycle resumes from the target's durable cursor and verifies.
#[test]
fn a_sender_killed_mid_cycle_resumes_from_the_durable_cursor() {
    let Some(mut s) = Sites::for_test("100mbit") else { return };
    let Link { dir, mt, ps, src, dst } = Link::new(&mut s, "64M", 48 << 20);

    let (receiver, addr) = s.receive(&mt, &dst);
    let target = format!("tls://mt-01@{addr}");
    let mut sender = s.send("full", "--agent-dir", &ps, &src, &target);
    let dst_data = dir.path().join("onprem-disk0-flat.vmdk");
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        use std::os::unix::fs::MetadataExt;
        let written = std::fs::metadata(&dst_data).map(|m| m.blocks() * 512).unwrap_or(0);
        if written >= 40 << 20 {
            break;
        }
        assert!(Instant::now() < deadline, "the cycle never got going ({written} bytes written)");
        std::thread::sleep(Duration::from_millis(20));
    }
    // `ip netns exec` execs the binary: this is the sending process itself.
    sender.kill().unwrap();
    let _ = sender.wait();
    let (code, _, err) = finished(receiver, Duration::from_secs(60));
    assert_ne!(code, 0, "a cycle whose sender died cannot verify: {err}");

    let (receiver, addr) = s.receive(&mt, &dst);
    let r = cycle(s.send("auto", "--agent-dir", &ps, &src, &format!("tls://mt-01@{addr}")), receiver);
    let resumed = r["resumed_from_block"].as_u64().unwrap_or_else(|| panic!("not resumed: {r}"));
    assert!(resumed * r["block_size"].as_u64().unwrap() >= 8 << 20, "{r}");
    common::same_disk(&src, "vmdk", &dst, "vmdk", "after the resumed cycle");
}

/// An Administrator caps the bytes per second an agent sends: its next cycle honours the cap and says so; lifted
/// from the CLI, the next one runs uncapped. Only an Administrator sets it, and not below 64 KiB/s.
#[tokio::test]
async fn an_agents_rate_cap_is_set_by_an_administrator_and_honoured_by_its_cycles() {
    let p = Portal::start(&[]);
    let dir = tempfile::tempdir().unwrap();
    let mut running = Vec::new();
    let mut folders = Vec::new();
    for (name, role) in [("mt-01", "master-target"), ("ps-01", "process-server")] {
        let (code, e) = enroll(&p, &p.http, name, role).await;
        assert_eq!(code, 201, "{e}");
        let folder = dir.path().join(name);
        let mut args = args_of(e["command"].as_str().unwrap());
        args.extend(["--data-dir".into(), folder.display().to_string(), "--heartbeat-seconds".into(), "1".into()]);
        let argv: Vec<&str> = args.iter().map(String::as_str).collect();
        running.push(agent(&argv));
        wait_state(&p, name, "online").await;
        folders.push(folder);
    }
    let url = format!("{}api/v1/agents/ps-01/rate-cap", p.url);
    let reader = common::client_with_token(&p.add_user("rita", "reader"));
    let cap = |c: &reqwest::Client, body: Value| c.post(&url).json(&body).send();
    assert_eq!(cap(&reader, json!({"max_bytes_per_s": 4 << 20})).await.unwrap().status().as_u16(), 403);
    assert_eq!(cap(&p.http, json!({"max_bytes_per_s": 1000})).await.unwrap().status().as_u16(), 422);
    assert_eq!(cap(&p.http, json!({"max_bytes": 1})).await.unwrap().status().as_u16(), 400);
    assert_eq!(cap(&p.http, json!({})).await.unwrap().status().as_u16(), 400);
    let r = cap(&p.http, json!({"max_bytes_per_s": 4 << 20})).await.unwrap();
    assert_eq!(r.status().as_u16(), 200);
    assert_eq!(agent_named(&p, "ps-01").await["max_bytes_per_s"], 4 << 20);

    let src = dir.path().join("disk0.vmdk");
    let out =
        Command::new(BIN).args(["disk", "create", "--format", "vmdk", "--size", "16M"]).arg(&src).output().unwrap();
    assert!(out.status.success());
    fill_random(&dir.path().join("disk0-flat.vmdk"), 0, 8 << 20, 0xca9);
    let one_cycle = |dst: &str| {
        let mut receiver = Command::new(BIN)
            .args(["disk", "receive", "--listen", "127.0.0.1:0", "--agent-dir"])
            .arg(&folders[0])
            .arg(dir.path().join(dst))
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let mut first = String::new();
        std::io::BufRead::read_line(&mut std::io::BufReader::new(receiver.stdout.as_mut().unwrap()), &mut first)
            .unwrap();
        let addr = first.split_whitespace().nth(2).unwrap().to_owned();
        let sender = Command::new(BIN)
            .args(["disk", "sync", "--json", "--mode", "full", "--agent-dir"])
            .arg(&folders[1])
            .arg(&src)
            .arg(format!("tls://mt-01@{addr}"))
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        cycle(sender, receiver)
    };
    let capped = one_cycle("capped.vmdk");
    assert_eq!(capped["rate_cap"], 4 << 20, "{capped}");
    // 8 MiB at 4 MiB/s: the pacing cannot let it finish in much under two seconds.
    assert!(capped["elapsed_ms"].as_u64().unwrap() >= 1900, "the cap was not honoured: {capped}");

    let out = common::run_homeward(&[
        "agents",
        "rate-cap",
        "ps-01",
        "none",
        "--server",
        p.url.trim_end_matches('/'),
        "--token",
        &p.token,
    ]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stdout).contains("ps-01: no rate cap"));
    let free = one_cycle("free.vmdk");
    assert!(free["rate_cap"].is_null(), "{free}");
    let audit = common::get(&p.http, &format!("{}api/v1/audit?target=ps-01", p.url)).await;
    let caps = audit["entries"].as_array().unwrap().iter().filter(|e| e["action"] == "agent-rate-cap").count();
    assert!(caps >= 3, "the cap changes and the refusals are audited: {audit}");
}

/// The article through the API with the agents in their own namespaces, every byte crossing the shaped WAN:
/// reprotect (ps-azure-01 in the cloud → mt-win-01 on-premises) with the WAN cut mid-sync — the cycle fails, the
/// job shows the retry, and the next attempt resumes from the target's cursor, re-sending at most one chunk; then
/// failover and commit; then re-protect to the cloud (cs-01 on-premises → ps-azure-01), where the sending agent is
/// killed with SIGKILL mid-sync and restarted: its restart gives the cycle up at once and the job's next attempt
/// resumes. `qemu-img compare` proves the disks each time.
#[test]
fn the_article_runs_through_agents_across_namespaces_surviving_a_cut_link_and_a_killed_agent() {
    let Some(mut s) = Sites::for_test("8mbit") else { return };
    s.shape_onprem_wan("8mbit");
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("vault");
    let vault = s.serve(&data);
    let estate = data.join("estate");
    let disks = estate.display().to_string();
    let (cloud_link, onprem_link) =
        (format!("{}:0", s.addr(Sites::ONPREM_WAN - 1)), format!("{}:0", s.addr(Sites::ONPREM_WAN)));
    let with = |link: &str| vec!["--disks".to_owned(), disks.clone(), "--link-listen".to_owned(), link.to_owned()];
    let args = with(&cloud_link);
    s.agent_with(Sites::CLOUD, &vault, "ps-azure-01", "process-server", dir.path(), &strs(&args));
    let args = with(&onprem_link);
    s.agent_with(Sites::ONPREM, &vault, "mt-win-01", "master-target", dir.path(), &strs(&args));
    let cs = s.agent_with(Sites::ONPREM, &vault, "cs-01", "process-server", dir.path(), &strs(&args));
    let cs_index = s.children.len() - 1;
    // Sixteen MiB the on-premises copy lacks: about 17 s over the 8 Mbit/s WAN.
    let cloud_disk = estate.join("recovery/rg-dr/web01/disk0.vhd");
    let onprem_disk = estate.join("primary/vmfs-01/web01/disk0.vmdk");

    let api = format!("http://127.0.0.1:{}/api/v1/", vault.port);
    let token = vault.token.clone();
    let (cs_log, cs_folder) = (dir.path().join("cs-01.log"), cs.display().to_string());
    let body = move |sites: &mut Sites| {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        rt.block_on(async {
            let c = common::client_with_token(&token);
            let post = |path: String, body: Value| {
                let c = c.clone();
                let url = format!("{api}{path}");
                async move {
                    let r = c.post(&url).json(&body).send().await.unwrap();
                    let status = r.status().as_u16();
                    (status, r.json::<Value>().await.unwrap_or(Value::Null))
                }
            };
            let job = |id: String| {
                let c = c.clone();
                let url = format!("{api}jobs/{id}");
                async move { common::get(&c, &url).await }
            };
            for name in ["ps-azure-01", "mt-win-01", "cs-01"] {
                let deadline = Instant::now() + Duration::from_secs(30);
                loop {
                    let v = common::get(&c, &format!("{api}agents")).await;
                    let a = v["agents"].as_array().unwrap().iter().find(|a| a["name"] == name).cloned();
                    let online = a
                        .as_ref()
                        .is_some_and(|a| a["state"] == "online" && a["inventory"]["link_endpoint"].as_str().is_some());
                    if online {
                        break;
                    }
                    assert!(Instant::now() < deadline, "{name} never came online: {v}");
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
            }
            post("infrastructure/faults".into(), json!({"guest_bytes_per_tick": 0})).await;
            fill_random(&cloud_disk, 0, 16 << 20, 0x5eed);

            // Reprotect; the WAN is cut once a third of the disk has crossed it, until the attempt has failed.
            let rp = json!({"master_target": "mt-win-01", "process_server": "ps-azure-01"});
            let (status, started) = post("items/web01/reprotect".into(), rp).await;
            assert_eq!(status, 202, "{started}");
            let id = started["job_id"].as_str().unwrap().to_owned();
            let sync_task = |j: &Value, step: &str| {
                j["job"]["tasks"].as_array().unwrap().iter().find(|t| t["step"] == step).cloned().unwrap()
            };
            let wait_for = |what: &'static str, id: String, step: &'static str, done: fn(&Value) -> bool| {
                let job = &job;
                async move {
                    let deadline = Instant::now() + Duration::from_secs(120);
                    loop {
                        let j = job(id.clone()).await;
                        if done(&sync_task(&j, step)) {
                            return j;
                        }
                        assert!(Instant::now() < deadline, "{what}: {j}");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                }
            };
            wait_for("the sync never got a third through", id.clone(), "initial-replication", |t| {
                t["progress"][0].as_u64().unwrap_or(0) >= 6 << 20
            })
            .await;
            sites.wan(false);
            let j = wait_for("the cut cycle never failed", id.clone(), "initial-replication", |t| {
                t["error"].as_str().is_some()
            })
            .await;
            let t = sync_task(&j, "initial-replication");
            assert!(t["error"].as_str().unwrap().contains("ps-azure-01 → mt-win-01"), "{t}");
            sites.wan(true);
            let j = common::wait_job(&c, &api.replace("api/v1/", ""), &id).await;
            assert_eq!(j["job"]["state"], "succeeded", "{j}");
            let t = sync_task(&j, "initial-replication");
            assert!(t["attempts"].as_i64().unwrap() >= 2, "the job shows the retry: {t}");
            let r: Value = serde_json::from_str(t["result"].as_str().unwrap()).unwrap();
            assert_eq!(r["agents"], "ps-azure-01 → mt-win-01", "{r}");
            let d = &r["disks"][0];
            let resumed = d["resumed_from_block"].as_u64().unwrap_or_else(|| panic!("not resumed: {r}")) << 16;
            assert!(resumed >= 4 << 20, "resumed from {resumed} only: {r}");
            let left = (16u64 << 20) - resumed;
            assert!(d["data_bytes"].as_u64().unwrap() <= left + (4 << 20), "re-sent more than one chunk: {r}");
            common::same_disk(&cloud_disk, "vpc", &onprem_disk, "vmdk", "after the resumed reprotect");

            for (action, body) in [("failover", json!({"point": {"type": "latest-processed"}})), ("commit", json!({}))]
            {
                let (status, v) = post(format!("items/web01/{action}"), body).await;
                assert_eq!(status, 202, "{v}");
                let j = common::wait_job(&c, &api.replace("api/v1/", ""), v["job_id"].as_str().unwrap()).await;
                assert_eq!(j["job"]["state"], "succeeded", "{action}: {j}");
            }
            post("infrastructure/faults".into(), json!({"register_agent": "web01"})).await;

            // Re-protect to the cloud; cs-01 is killed mid-sync and started again.
            let (status, v) = post("items/web01/reprotect-to-cloud".into(), json!({"process_server": "cs-01"})).await;
            assert_eq!(status, 202, "{v}");
            let id = v["job_id"].as_str().unwrap().to_owned();
            wait_for("the sync to the cloud never got going", id.clone(), "initial-replication-to-cloud", |t| {
                t["progress"][0].as_u64().unwrap_or(0) >= 6 << 20
            })
            .await;
            let victim = &mut sites.children[cs_index];
            victim.kill().unwrap();
            let _ = victim.wait();
            let restart = ["agent", "--role", "process-server", "--data-dir", &cs_folder, "--heartbeat-seconds", "1"];
            let args: Vec<&str> = restart.iter().copied().chain(strs(&args)).collect();
            sites.start_agent(Sites::ONPREM, &args, &cs_log);
            let j = common::wait_job(&c, &api.replace("api/v1/", ""), &id).await;
            assert_eq!(j["job"]["state"], "succeeded", "{j}");
            let t = sync_task(&j, "initial-replication-to-cloud");
            assert!(t["attempts"].as_i64().unwrap() >= 2, "the job shows the retry: {t}");
            let r: Value = serde_json::from_str(t["result"].as_str().unwrap()).unwrap();
            assert_eq!(r["agents"], "cs-01 → ps-azure-01", "{r}");
            assert!(r["disks"][0]["resumed_from_block"].as_u64().is_some(), "resumed from the cursor: {r}");
            common::same_disk(
                &onprem_disk,
                "vmdk",
                &estate.join("recovery/web01/reprotected-disk0.vhd"),
                "vpc",
                "after the resumed re-protect",
            );
        })
    };
    let ns = s.ns_path(Sites::CP);
    common::netns::within(&ns, || body(&mut s));
}

fn strs(v: &[String]) -> Vec<&str> {
    v.iter().map(String::as_str).collect()
}
