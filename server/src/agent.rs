//! `homeward agent`: a site agent. The first start enrolls — a new key, a certificate request redeemed with the
//! one-time token, the vault's CA checked against the fingerprint the Administrator was given — and from then on
//! the agent heartbeats its inventory to the control plane over mutual TLS. A revoked agent stops (exit 3).

use std::path::{Path, PathBuf};
use std::time::Duration;

use orchestrator::agents::{AgentDisk, AgentRole, Inventory};
use serde::{Deserialize, Serialize};

use crate::agent_plane::{EnrollRequest, Enrolled, Heartbeat};
use crate::cli::AgentArgs;
use crate::pki::{self, Identity};

/// Exit codes: 1 a failure while running, 2 bad configuration or a refused enrollment, 3 revoked.
#[derive(Debug)]
pub struct AgentFailure {
    pub code: u8,
    pub message: String,
}

fn fail(code: u8, message: impl Into<String>) -> AgentFailure {
    AgentFailure { code, message: message.into() }
}

/// What the agent remembers between starts (beside its key and certificates).
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct State {
    pub agent_id: String,
    pub name: String,
    pub role: AgentRole,
    /// `host:port` of the control plane's agents' endpoint.
    pub endpoint: String,
}

/// An enrolled agent's state and identity from its folder (for `homeward disk … --agent-dir`).
pub fn load(dir: &Path) -> Result<(State, Identity), AgentFailure> {
    let state = read_state(dir)?.ok_or_else(|| {
        fail(2, format!("{}: no enrolled agent here; enroll it first with `homeward agent`", dir.display()))
    })?;
    let identity =
        Identity { key_pem: read(&dir.join(KEY))?, cert_pem: read(&dir.join(CERT))?, ca_pem: read(&dir.join(CA))? };
    Ok((state, identity))
}

const STATE: &str = "agent.json";
const KEY: &str = "agent.key";
const CERT: &str = "agent.pem";
const CA: &str = "ca.pem";

pub async fn run(args: AgentArgs) -> Result<(), AgentFailure> {
    let dir = args.data_dir.clone();
    prepare(&dir).map_err(|e| fail(2, format!("{}: {e}", dir.display())))?;
    let disks = args.disks.clone().unwrap_or_else(|| dir.join("disks"));
    std::fs::create_dir_all(&disks).map_err(|e| fail(2, format!("{}: {e}", disks.display())))?;
    let mut state = match read_state(&dir)? {
        Some(s) => {
            if args.token.is_some() {
                eprintln!(
                    "note: this agent is enrolled already (as {}); --token is used only by a first start",
                    s.name
                );
            }
            s
        }
        None => enroll(&args).await?,
    };
    if state.role != args.role {
        return Err(fail(
            2,
            format!(
                "this agent ({}) was enrolled as a {}; start it with --role {}",
                state.name,
                state.role.as_str(),
                state.role.as_str()
            ),
        ));
    }
    // A control plane that moved: the new address wins (its CA still has to be the vault's).
    if let Some(moved) = args.control_plane.as_deref().filter(|e| *e != state.endpoint) {
        state.endpoint = moved.to_owned();
        let json = serde_json::to_string_pretty(&state).map_err(|e| fail(1, e.to_string()))?;
        pki::write_private(&dir.join(STATE), json.as_bytes()).map_err(|e| fail(2, e.to_string()))?;
    }
    let identity =
        Identity { key_pem: read(&dir.join(KEY))?, cert_pem: read(&dir.join(CERT))?, ca_pem: read(&dir.join(CA))? };
    let tls = identity.control_plane_client().map_err(|e| fail(2, e.to_string()))?;
    let client = reqwest::Client::builder()
        .use_preconfigured_tls(tls)
        .timeout(Duration::from_secs(10))
        .build()
        .map_err(|e| fail(2, format!("the TLS client: {e}")))?;
    let listen = match args.link_listen {
        Some(a) => a,
        None => std::net::SocketAddr::new(source_ip_towards(&state.endpoint), 0),
    };
    let links =
        tokio::net::TcpListener::bind(listen).await.map_err(|e| fail(2, format!("cannot listen on {listen}: {e}")))?;
    let link_endpoint = links.local_addr().map_err(|e| fail(2, e.to_string()))?.to_string();
    println!(
        "Homeward agent {} ({}), {}: heartbeating to {} every {} s; replication streams on {link_endpoint}",
        state.name,
        state.agent_id,
        state.role.title().to_lowercase(),
        state.endpoint,
        args.heartbeat_seconds
    );
    let url = format!("https://{}/agent/v1/heartbeat", state.endpoint);
    let ctx = std::sync::Arc::new(crate::agent_work::Ctx {
        state: state.clone(),
        identity,
        client: client.clone(),
        disks: disks.clone(),
        datastores: args.datastores.clone(),
    });
    // Aborted when this function returns (revoked, or shut down): no stream outlives the agent's standing.
    let _work = Aborting(vec![
        tokio::spawn(crate::agent_work::serve_links(ctx.clone(), links)),
        tokio::spawn(crate::agent_work::take_assignments(ctx.clone())),
    ]);
    let period = Duration::from_secs(args.heartbeat_seconds);
    let mut stop = std::pin::pin!(shutdown());
    loop {
        let d = disks.clone();
        let period_ms = period.as_millis() as u64;
        let mut inventory =
            tokio::task::spawn_blocking(move || inventory(&d, period_ms)).await.map_err(|e| fail(1, e.to_string()))?;
        inventory.link_endpoint = Some(link_endpoint.clone());
        inventory.datastores = args.datastores.iter().map(|(name, _)| name.clone()).collect();
        let beat = Heartbeat { version: env!("CARGO_PKG_VERSION").into(), inventory };
        match client.post(&url).json(&beat).send().await {
            Ok(r) if r.status().is_success() => tracing::debug!("heartbeat accepted"),
            Ok(r) if r.status() == reqwest::StatusCode::FORBIDDEN => {
                let v: serde_json::Value = r.json().await.unwrap_or_default();
                return Err(fail(
                    3,
                    format!(
                        "the control plane refuses this agent: {}",
                        v["message"].as_str().unwrap_or("revoked or unknown")
                    ),
                ));
            }
            Ok(r) => tracing::warn!(status = %r.status(), "heartbeat refused; retrying"),
            Err(e) => {
                tracing::warn!(error = %e, endpoint = %state.endpoint, "the control plane is unreachable; retrying")
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(period) => {}
            _ = &mut stop => return Ok(()),
        }
    }
}

/// Tasks aborted when dropped.
struct Aborting(Vec<tokio::task::JoinHandle<()>>);

impl Drop for Aborting {
    fn drop(&mut self) {
        for t in &self.0 {
            t.abort();
        }
    }
}

/// The local address this machine would use to reach `endpoint` (no packet is sent): the address peers on the
/// same network reach this agent by. Loopback when it cannot be told.
fn source_ip_towards(endpoint: &str) -> std::net::IpAddr {
    use std::net::ToSocketAddrs;
    let local = std::net::IpAddr::from([127, 0, 0, 1]);
    let Some(target) = endpoint.to_socket_addrs().ok().and_then(|mut a| a.next()) else { return local };
    let bind: std::net::SocketAddr = if target.is_ipv4() { ([0, 0, 0, 0], 0).into() } else { ([0u16; 8], 0).into() };
    std::net::UdpSocket::bind(bind)
        .and_then(|s| s.connect(target).and_then(|()| s.local_addr()))
        .map(|a| a.ip())
        .unwrap_or(local)
}

/// First start: a key made here (it never leaves this folder), a certificate from the vault's CA for it.
async fn enroll(args: &AgentArgs) -> Result<State, AgentFailure> {
    let missing = |what: &str| {
        fail(
            2,
            format!(
                "this agent is not enrolled yet: pass {what} (an Administrator gets the whole command from \
                 `homeward agents enroll` or the portal's Infrastructure page)"
            ),
        )
    };
    let endpoint = args.control_plane.as_deref().ok_or_else(|| missing("--control-plane"))?;
    let token = args.token.as_deref().ok_or_else(|| missing("--token"))?;
    let pin = args.ca_fingerprint.as_deref().ok_or_else(|| missing("--ca-fingerprint"))?;
    let pin = pin.replace(':', "").to_ascii_lowercase();
    let (key_pem, csr) = pki::agent_request("homeward-agent").map_err(|e| fail(1, e.to_string()))?;
    let req =
        EnrollRequest { token: token.to_owned(), role: args.role, csr, version: env!("CARGO_PKG_VERSION").into() };
    let tls = pki::enrollment_client(&pin).map_err(|e| fail(1, e.to_string()))?;
    let client = reqwest::Client::builder()
        .use_preconfigured_tls(tls)
        .timeout(Duration::from_secs(30))
        .build()
        .map_err(|e| fail(1, e.to_string()))?;
    let url = format!("https://{endpoint}/agent/v1/enroll");
    let resp = client.post(&url).json(&req).send().await.map_err(|e| {
        // The pinned CA's refusal sits deep in the error's sources: say it, not only "error sending request".
        let why = error_chain(&e);
        let code = if why.contains("refusing to trust it") { 2 } else { 1 };
        fail(code, format!("cannot enroll at {endpoint}: {why}"))
    })?;
    let status = resp.status();
    let text = resp.text().await.map_err(|e| fail(1, e.to_string()))?;
    if !status.is_success() {
        let v: serde_json::Value = serde_json::from_str(&text).unwrap_or_default();
        return Err(fail(2, format!("enrollment refused: {}", v["message"].as_str().unwrap_or(&text))));
    }
    let enrolled: Enrolled =
        serde_json::from_str(&text).map_err(|e| fail(1, format!("the control plane's answer: {e}")))?;
    let got = pki::fingerprint(&pki::cert_der(&enrolled.ca_certificate).map_err(|e| fail(1, e.to_string()))?);
    if got != pin {
        return Err(fail(1, format!("the control plane answered with a CA {got} other than the pinned {pin}")));
    }
    let dir = &args.data_dir;
    let write = |name: &str, text: &str| pki::write_private(&dir.join(name), text.as_bytes());
    let state =
        State { agent_id: enrolled.agent_id, name: enrolled.name, role: args.role, endpoint: endpoint.to_owned() };
    let json = serde_json::to_string_pretty(&state).map_err(|e| fail(1, e.to_string()))?;
    // The state file last: its presence means the key and both certificates are in place.
    write(KEY, &key_pem)
        .and_then(|()| write(CERT, &enrolled.certificate))
        .and_then(|()| write(CA, &enrolled.ca_certificate))
        .and_then(|()| write(STATE, &json))
        .map_err(|e| fail(1, e.to_string()))?;
    println!("enrolled as {} ({}); the vault's CA is {got}", state.name, state.agent_id);
    Ok(state)
}

/// An error with its sources, which is where TLS and connection errors say what went wrong.
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut cur = e.source();
    while let Some(s) = cur {
        out.push_str(": ");
        out.push_str(&s.to_string());
        cur = s.source();
    }
    out
}

fn prepare(dir: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::create_dir_all(dir)?;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
}

fn read(path: &Path) -> Result<String, AgentFailure> {
    std::fs::read_to_string(path).map_err(|e| fail(2, format!("{}: {e}", path.display())))
}

fn read_state(dir: &Path) -> Result<Option<State>, AgentFailure> {
    let path: PathBuf = dir.join(STATE);
    match std::fs::read_to_string(&path) {
        Ok(text) => serde_json::from_str(&text)
            .map(Some)
            .map_err(|e| fail(2, format!("{}: {e}; enroll this agent again in a new folder", path.display()))),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(fail(2, format!("{}: {e}", path.display()))),
    }
}

/// The disk images in `disks` and the free space of their filesystem.
fn inventory(disks: &Path, heartbeat_ms: u64) -> Inventory {
    let mut list: Vec<AgentDisk> = std::fs::read_dir(disks)
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let m = e.metadata().ok()?;
            m.is_file().then(|| AgentDisk { name: e.file_name().to_string_lossy().into_owned(), size_bytes: m.len() })
        })
        .collect();
    list.sort_by(|a, b| a.name.cmp(&b.name));
    let (free_bytes, total_bytes) = space(disks).unwrap_or((0, 0));
    Inventory { disks: list, free_bytes, total_bytes, heartbeat_ms, link_endpoint: None, datastores: Vec::new() }
}

fn space(path: &Path) -> Option<(u64, u64)> {
    use std::os::unix::ffi::OsStrExt;
    let c = std::ffi::CString::new(path.as_os_str().as_bytes()).ok()?;
    let mut s: libc::statvfs = unsafe { std::mem::zeroed() };
    // SAFETY: `c` is a valid NUL-terminated path and `s` a properly sized out-parameter.
    if unsafe { libc::statvfs(c.as_ptr(), &mut s) } != 0 {
        return None;
    }
    let frsize = s.f_frsize as u64;
    Some((s.f_bavail as u64 * frsize, s.f_blocks as u64 * frsize))
}

async fn shutdown() {
    let term = async {
        if let Ok(mut s) = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            s.recv().await;
        }
    };
    tokio::select! { _ = tokio::signal::ctrl_c() => {}, _ = term => {} }
}

/// `homeward serve --embedded-agents`: one agent per process server and master target of the inventory, run as
/// tasks of the serving process but enrolled (token, certificate request, pinned CA) and heartbeating over mutual
/// TLS to the agents' endpoint like any other. An agent enrolled before keeps its folder and identity; one whose
/// row exists without its folder here (enrolled by another node, or its folder deleted) is left alone with a
/// warning, as is a revoked one.
pub async fn spawn_embedded(
    service: &orchestrator::service::Service,
    data_dir: &Path,
    endpoint: std::net::SocketAddr,
    ca_fingerprint: &str,
) -> Result<Vec<tokio::task::JoinHandle<()>>, String> {
    use orchestrator::agents::{AgentError, SiteKind};
    use orchestrator::domain::Site;
    let doc = service.doc().await.map_err(|e| e.to_string())?;
    let now = (service.clock)();
    let site = |s: Site| match s {
        Site::Primary => SiteKind::OnPremises,
        Site::Recovery => SiteKind::Cloud,
    };
    let wanted =
        doc.inventory.process_servers.iter().map(|p| (p.id.clone(), AgentRole::ProcessServer, site(p.site))).chain(
            doc.inventory.master_targets.iter().map(|m| (m.id.clone(), AgentRole::MasterTarget, SiteKind::OnPremises)),
        );
    let mut tasks = Vec::new();
    let disk_root = service.estate.path("");
    for (name, role, site) in wanted {
        let dir = data_dir.join("agents").join(&name);
        let enrolled_here = dir.join(STATE).exists();
        let token = match service.agents.find(&name, now).await {
            Ok(a) if a.revoked_at.is_some() => {
                tracing::warn!(agent = %name, "the embedded agent is revoked; enroll a new one to use it again");
                continue;
            }
            Ok(_) if enrolled_here => None,
            Ok(_) => {
                tracing::warn!(agent = %name, dir = %dir.display(),
                    "an agent of this name is enrolled but its folder is not here; not starting an embedded one");
                continue;
            }
            Err(AgentError::NotFound(_)) => Some(
                service.agents.enroll(&name, role, site, "homeward serve", now).await.map_err(|e| e.to_string())?.token,
            ),
            Err(e) => return Err(e.to_string()),
        };
        let args = AgentArgs {
            role,
            control_plane: Some(endpoint.to_string()),
            token,
            ca_fingerprint: Some(ca_fingerprint.to_owned()),
            data_dir: dir,
            // The estate's folder: the demo's cloud and on-premises disks both live under it.
            disks: Some(disk_root.clone()),
            datastores: Vec::new(),
            heartbeat_seconds: orchestrator::agents::HEARTBEAT_MS / 1000,
            link_listen: Some(([127, 0, 0, 1], 0).into()),
        };
        tasks.push(tokio::spawn(async move {
            if let Err(f) = run(args).await {
                tracing::error!(agent = %name, error = %f.message, "the embedded agent stopped");
            }
        }));
    }
    Ok(tasks)
}
