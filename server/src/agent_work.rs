//! An agent's share of the jobs: as a sender it takes assignments from the control plane (a long poll) and streams
//! each disk to the receiving agent; as a receiver it listens for those streams and writes the target disks. Both
//! report to the control plane every second, and both stop — the sender at its next chunk, the receiver by dropping
//! the link — as soon as the control plane refuses the assignment (its job was cancelled or taken over: fenced).
//!
//! A stream opens with one line from the sender (`{"assignment": …, "disk": …}`) and one answer line from the
//! receiver (`ok`, or `refused: why`); then the replicator's own framed protocol runs over the same TLS session.

use std::path::{Component, Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use orchestrator::assignments::{DiskResult, Outcome};
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use crate::agent::State;
use crate::agent_link::{self, Counted, WireBytes};
use crate::agent_plane::{Finish, ProgressReport, ReceiveCheck, ReceiveGrant, Taken};
use crate::pki::{self, Identity};

/// What the agent's tasks share.
pub struct Ctx {
    pub state: State,
    pub identity: Identity,
    /// Mutual TLS to the control plane.
    pub client: reqwest::Client,
    /// The root the assignments' disk paths are relative to.
    pub disks: PathBuf,
    /// The vCenter datastores this agent mounts: a disk path `[name] folder/file.vmdk` lives there.
    pub datastores: Vec<(String, PathBuf)>,
}

impl Ctx {
    /// Where an assignment's disk path is on this agent: under its disk folder, or `[datastore] path` under the
    /// folder that datastore is mounted at.
    fn resolve(&self, path: &str) -> Result<PathBuf, String> {
        match path.strip_prefix('[').and_then(|p| p.split_once("] ")) {
            Some((name, rel)) => {
                let root = self.datastores.iter().find(|(n, _)| n == name).map(|(_, d)| d).ok_or_else(|| {
                    format!("this agent mounts no datastore {name}: start it with --datastore {name}=<folder>")
                })?;
                under(root, rel)
            }
            None => under(&self.disks, path),
        }
    }
}

impl Ctx {
    fn url(&self, path: &str) -> String {
        format!("https://{}/agent/v1/{path}", self.state.endpoint)
    }
}

/// Cycles one sender runs at once.
const PARALLEL: usize = 4;
/// With no answer from the control plane this long, a transfer stops: nothing may write unfenced.
const UNCONFIRMED: Duration = Duration::from_secs(20);

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct StreamHello {
    assignment: String,
    disk: usize,
}

/// A client for the one blob an assignment names, with the shared access signature it carries.
fn blob_site(b: &orchestrator::assignments::BlobAccess) -> Result<orchestrator::recovery_site::RecoverySite, String> {
    use orchestrator::connectors::azure_blob::{Container, Credential, StorageConfig};
    let thumbprint = match b.thumbprint.as_deref() {
        Some(t) => Some(orchestrator::connectors::Thumbprint::parse(t).map_err(|e| format!("thumbprint: {e}"))?),
        None => None,
    };
    let config = StorageConfig {
        url: b.url.clone(),
        container: b.container.clone(),
        credential: Credential::Sas(b.sas.clone()),
        thumbprint,
    };
    let container = Container::new(config).map_err(|e| e.to_string())?;
    Ok(orchestrator::recovery_site::RecoverySite::with_container(&b.account, container))
}

fn task_text(f: orchestrator::jobs::TaskFailure) -> String {
    format!("{} {}", f.error, f.recommended_action)
}

/// `rel` under `root`: refused when absolute or climbing out with `..`.
fn under(root: &Path, rel: &str) -> Result<PathBuf, String> {
    let p = Path::new(rel);
    if rel.is_empty() || p.components().any(|c| !matches!(c, Component::Normal(_))) {
        return Err(format!("disk path {rel:?} is not a plain path under this agent's disk folder"));
    }
    Ok(root.join(p))
}

/// Reads one line of at most 4 KiB, a byte at a time so that nothing after it is consumed. With `json`, a line
/// that does not open a JSON object is refused at its first byte (a peer speaking the replicator's protocol
/// straight away, without an assignment, is told at once).
async fn read_line<S: AsyncRead + Unpin>(s: &mut S, json: bool) -> Result<String, String> {
    let mut line = Vec::new();
    loop {
        let b = s.read_u8().await.map_err(|e| format!("the peer hung up: {e}"))?;
        if json && line.is_empty() && b != b'{' {
            return Err("the stream did not open with a hello naming its assignment".into());
        }
        if b == b'\n' {
            return String::from_utf8(line).map_err(|_| "the peer sent a line that is not UTF-8".into());
        }
        if line.len() >= 4096 {
            return Err("the peer's line is too long".into());
        }
        line.push(b);
    }
}

async fn write_line<S: AsyncWrite + Unpin>(s: &mut S, line: &str) -> Result<(), String> {
    s.write_all(format!("{line}\n").as_bytes()).await.map_err(|e| e.to_string())?;
    s.flush().await.map_err(|e| e.to_string())
}

/// A JSON call to the control plane; `Ok(None)` on 409/404 (the assignment is no longer this agent's to work on).
async fn call<T: Serialize, R: serde::de::DeserializeOwned>(
    ctx: &Ctx,
    path: &str,
    body: &T,
) -> Result<Option<R>, String> {
    let r = ctx
        .client
        .post(ctx.url(path))
        .json(body)
        .send()
        .await
        .map_err(|e| format!("the control plane at {} does not answer: {e}", ctx.state.endpoint))?;
    let status = r.status();
    if status == reqwest::StatusCode::CONFLICT || status == reqwest::StatusCode::NOT_FOUND {
        return Ok(None);
    }
    if !status.is_success() {
        let v: serde_json::Value = r.json().await.unwrap_or_default();
        return Err(format!("the control plane answers {status}: {}", v["message"].as_str().unwrap_or("?")));
    }
    r.json().await.map(Some).map_err(|e| format!("the control plane's answer: {e}"))
}

// ---- receiving -------------------------------------------------------------------------------------------------

/// Takes replication streams on `listener` until the task is aborted.
pub async fn serve_links(ctx: Arc<Ctx>, listener: TcpListener) {
    let acceptor = match ctx.identity.link_server() {
        Ok(c) => tokio_rustls::TlsAcceptor::from(Arc::new(c)),
        Err(e) => return tracing::error!(error = %e, "cannot take replication streams"),
    };
    loop {
        let (tcp, from) = match listener.accept().await {
            Ok(c) => c,
            Err(e) => {
                tracing::warn!(error = %e, "link listener: accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let (ctx, acceptor) = (ctx.clone(), acceptor.clone());
        tokio::spawn(async move {
            match receive_stream(&ctx, &acceptor, tcp).await {
                Ok(()) => tracing::info!(%from, "replication stream received"),
                Err(e) => tracing::warn!(%from, error = %e, "replication stream ended without completing"),
            }
        });
    }
}

async fn receive_stream(ctx: &Ctx, acceptor: &tokio_rustls::TlsAcceptor, tcp: TcpStream) -> Result<(), String> {
    agent_link::tune(&tcp);
    let wire = WireBytes::default();
    let mut tls = tokio::time::timeout(Duration::from_secs(20), acceptor.accept(Counted { inner: tcp, wire }))
        .await
        .map_err(|_| "the TLS handshake timed out".to_owned())?
        .map_err(|e| format!("TLS refused: {e}"))?;
    let fp = agent_link::peer_fingerprint(tls.get_ref().1.peer_certificates())?;
    let hello = tokio::time::timeout(Duration::from_secs(10), read_line(&mut tls, true))
        .await
        .map_err(|_| "no stream hello within 10 s".to_owned())??;
    let hello: StreamHello = serde_json::from_str(&hello).map_err(|e| format!("stream hello: {e}"))?;
    let check = ReceiveCheck { sender_fingerprint: fp };
    let path = format!("assignments/{}/receive", hello.assignment);
    let target = async {
        let grant: ReceiveGrant = call(ctx, &path, &check)
            .await?
            .ok_or_else(|| format!("the control plane refuses this stream for {}", hello.assignment))?;
        let disk = grant.spec.disks.get(hello.disk).ok_or_else(|| format!("no disk {} in it", hello.disk))?;
        let target = ctx.resolve(&disk.target)?;
        if let Some(parent) = target.parent() {
            std::fs::create_dir_all(parent).map_err(|e| format!("{}: {e}", parent.display()))?;
        }
        let retention = replicator::journal::Retention { max_age_ms: grant.spec.retention_ms, max_points: None };
        Ok::<_, String>((target, grant.spec.stream_token, disk.target_blob.clone(), retention))
    }
    .await;
    let (target, token, target_blob, retention) = match target {
        Ok(t) => t,
        Err(why) => {
            let _ = write_line(&mut tls, &format!("refused: {why}")).await;
            return Err(why);
        }
    };
    write_line(&mut tls, "ok").await?;
    tracing::info!(assignment = %hello.assignment, disk = hello.disk, target = %target.display(), "receiving");
    let (end, relay) = agent_link::relay(tls)?;
    // Every second: is the assignment still fenced in? If not, the link is dropped and nothing more is written.
    let watch = {
        let abort = relay.abort_handle();
        let (ctx_url, client, check, endpoint) =
            (ctx.url(&path), ctx.client.clone(), check, ctx.state.endpoint.clone());
        tokio::spawn(async move {
            let mut confirmed = Instant::now();
            loop {
                tokio::time::sleep(Duration::from_secs(1)).await;
                match client.post(&ctx_url).json(&check).send().await {
                    Ok(r) if r.status().is_success() => confirmed = Instant::now(),
                    Ok(r)
                        if r.status() == reqwest::StatusCode::CONFLICT
                            || r.status() == reqwest::StatusCode::NOT_FOUND =>
                    {
                        tracing::warn!("the control plane fenced this stream off; dropping the link");
                        abort.abort();
                        return;
                    }
                    Ok(_) | Err(_) if confirmed.elapsed() > UNCONFIRMED => {
                        tracing::warn!(%endpoint, "the control plane has not confirmed this stream for 20 s; dropping it");
                        abort.abort();
                        return;
                    }
                    _ => {}
                }
            }
        })
    };
    // A cloud disk held as a page blob: the committed cycle reaches the blob before the sender hears of it.
    let after_commit = target_blob.map(|b| {
        let runtime = tokio::runtime::Handle::current();
        std::sync::Arc::new(move |path: &Path| {
            let site = blob_site(&b)?;
            runtime.block_on(site.push_blob(&b.blob, path)).map(|_| ()).map_err(task_text)
        }) as replicator::sync::AfterCommit
    });
    let opts = replicator::sync::TargetOptions { token, after_commit, retention };
    let result = tokio::task::spawn_blocking(move || replicator::sync::run_target(&target, end, &opts))
        .await
        .map_err(|e| e.to_string());
    watch.abort();
    let _ = relay.await;
    result?.map_err(|e| e.to_string())
}

// ---- sending ---------------------------------------------------------------------------------------------------

/// Asks the control plane for work, forever; runs up to [`PARALLEL`] assignments at once.
pub async fn take_assignments(ctx: Arc<Ctx>) {
    let slots = Arc::new(tokio::sync::Semaphore::new(PARALLEL));
    // Whatever this agent was sending before it (re)started is lost with that process: say so at once.
    loop {
        match call::<_, serde_json::Value>(&ctx, "assignments/abandon", &serde_json::json!({})).await {
            Ok(Some(v)) if v["abandoned"].as_u64() > Some(0) => {
                tracing::warn!(count = %v["abandoned"], "cycles interrupted by this agent's restart were given up");
                break;
            }
            Ok(_) => break,
            Err(e) => {
                tracing::debug!(error = %e, "cannot reach the control plane yet");
                tokio::time::sleep(Duration::from_secs(2)).await;
            }
        }
    }
    loop {
        let Ok(permit) = slots.clone().acquire_owned().await else { return };
        let r = ctx
            .client
            .post(ctx.url("assignments/next"))
            .timeout(Duration::from_secs(40))
            .json(&serde_json::json!({}))
            .send()
            .await;
        match r {
            Ok(r) if r.status() == reqwest::StatusCode::OK => match r.json::<Taken>().await {
                Ok(taken) => {
                    let ctx = ctx.clone();
                    tokio::spawn(async move {
                        run_assignment(&ctx, taken).await;
                        drop(permit);
                    });
                }
                Err(e) => tracing::warn!(error = %e, "an unreadable assignment"),
            },
            Ok(r) if r.status() == reqwest::StatusCode::NO_CONTENT => {}
            Ok(r) => {
                tracing::warn!(status = %r.status(), "asking for work was refused; retrying");
                tokio::time::sleep(Duration::from_secs(2)).await;
            }
            Err(e) => {
                tracing::debug!(error = %e, "asking for work failed; retrying");
                tokio::time::sleep(Duration::from_secs(2)).await;
            }
        }
    }
}

/// What a sender's reporter reads: bytes done and to do over the whole cycle, and bytes on the wire.
#[derive(Default)]
struct Tally {
    done: AtomicU64,
    total: AtomicU64,
    wire_before: AtomicU64,
    current: Mutex<Option<WireBytes>>,
}

impl Tally {
    fn wire(&self) -> u64 {
        let cur = self.current.lock().unwrap_or_else(|p| p.into_inner()).as_ref().map_or(0, |w| {
            let (s, r) = w.totals();
            s + r
        });
        self.wire_before.load(Ordering::Relaxed) + cur
    }
}

async fn run_assignment(ctx: &Ctx, taken: Taken) {
    let id = taken.id.clone();
    tracing::info!(assignment = %id, receiver = %taken.receiver_name, disks = taken.spec.disks.len(), "sending a cycle");
    let cancel = Arc::new(AtomicBool::new(false));
    let tally = Arc::new(Tally::default());
    // Every second: the progress, and the control plane's word that the assignment still holds.
    let reporter = {
        let (url, client, cancel, tally) =
            (ctx.url(&format!("assignments/{id}/progress")), ctx.client.clone(), cancel.clone(), tally.clone());
        tokio::spawn(async move {
            let mut confirmed = Instant::now();
            loop {
                tokio::time::sleep(Duration::from_secs(1)).await;
                let p = ProgressReport {
                    done: tally.done.load(Ordering::Relaxed),
                    total: tally.total.load(Ordering::Relaxed),
                    wire_bytes: tally.wire(),
                };
                match client.post(&url).json(&p).send().await {
                    Ok(r) if r.status().is_success() => confirmed = Instant::now(),
                    Ok(r)
                        if r.status() == reqwest::StatusCode::CONFLICT
                            || r.status() == reqwest::StatusCode::NOT_FOUND =>
                    {
                        tracing::warn!("the control plane fenced this cycle off; stopping at the next chunk");
                        cancel.store(true, Ordering::Relaxed);
                        return;
                    }
                    Ok(_) | Err(_) if confirmed.elapsed() > UNCONFIRMED => {
                        tracing::warn!("the control plane has not confirmed this cycle for 20 s; stopping it");
                        cancel.store(true, Ordering::Relaxed);
                        return;
                    }
                    _ => {}
                }
            }
        })
    };
    let result = send_cycle(ctx, &taken, &cancel, &tally).await;
    reporter.abort();
    let finish = match result {
        Ok(outcome) => Finish { outcome: Some(outcome), error: None },
        Err(e) if cancel.load(Ordering::Relaxed) => Finish { outcome: None, error: Some(format!("stopped: {e}")) },
        Err(e) => Finish { outcome: None, error: Some(e) },
    };
    match call::<_, serde_json::Value>(ctx, &format!("assignments/{id}/finish"), &finish).await {
        Ok(Some(_)) => tracing::info!(assignment = %id, ok = finish.error.is_none(), "cycle reported"),
        Ok(None) => tracing::warn!(assignment = %id, "the cycle's result was refused: fenced off meanwhile"),
        Err(e) => tracing::warn!(assignment = %id, error = %e, "the cycle's result could not be reported"),
    }
}

async fn send_cycle(ctx: &Ctx, taken: &Taken, cancel: &Arc<AtomicBool>, tally: &Arc<Tally>) -> Result<Outcome, String> {
    let cap = agent_link::rate_cap(&ctx.state, &ctx.identity).await?;
    let bandwidth = match (taken.spec.bandwidth, cap) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    };
    let mut disks = Vec::new();
    let mut totals_before = 0u64;
    for (i, disk) in taken.spec.disks.iter().enumerate() {
        let src = ctx.resolve(&disk.source)?;
        if let Some(b) = &disk.source_blob {
            // A cloud disk held as a page blob: the cache first becomes the snapshot the control plane took.
            let snapshot = b.snapshot.as_deref().ok_or("the assignment names no snapshot of the source blob")?;
            blob_site(b)?.pull_snapshot(&b.blob, snapshot, &b.etag, b.size, &src).await.map_err(task_text)?;
        }
        let (tls, wire) = connect(ctx, &taken.receiver_name, &taken.receiver_link).await?;
        *tally.current.lock().unwrap_or_else(|p| p.into_inner()) = Some(wire.clone());
        let mut tls = tls;
        let hello = serde_json::to_string(&StreamHello { assignment: taken.id.clone(), disk: i }).unwrap_or_default();
        write_line(&mut tls, &hello).await?;
        let answer = tokio::time::timeout(Duration::from_secs(20), read_line(&mut tls, false))
            .await
            .map_err(|_| format!("{} did not answer the stream hello", taken.receiver_name))??;
        if answer != "ok" {
            return Err(format!("{} refused the stream: {answer}", taken.receiver_name));
        }
        let progress: replicator::sync::ProgressFn = {
            let tally = tally.clone();
            Arc::new(move |p: &replicator::Progress| {
                tally.done.store(totals_before + p.done, Ordering::Relaxed);
                tally.total.store(totals_before + p.total, Ordering::Relaxed);
            })
        };
        let opts = replicator::SyncOptions {
            mode: taken.spec.mode,
            block_size: taken.spec.block_size,
            chunk_bytes: taken.spec.chunk_bytes,
            consistency: taken.spec.consistency,
            point_id: Some(taken.spec.point_id.clone()),
            bandwidth,
            token: taken.spec.stream_token.clone(),
            progress: Some(progress),
            cancel: Some(cancel.clone()),
            ..Default::default()
        };
        let (end, relay) = agent_link::relay(tls)?;
        let report = tokio::task::spawn_blocking(move || {
            let image = replicator::DiskImage::open(&src)?;
            replicator::sync::run_source(&image, end, &opts)
        })
        .await
        .map_err(|e| e.to_string())?;
        let _ = relay.await;
        let (s, r) = wire.totals();
        tally.wire_before.fetch_add(s + r, Ordering::Relaxed);
        *tally.current.lock().unwrap_or_else(|p| p.into_inner()) = None;
        let report = report.map_err(|e| format!("disk {}: {e}", disk.source))?;
        totals_before += report.size;
        disks.push(DiskResult {
            source: disk.source.clone(),
            mode: report.mode.name().to_owned(),
            data_bytes: report.data_bytes,
            resumed_from_block: report.resumed_from_block,
            digest: report.digest.clone(),
            point_id: report.point.id.clone(),
        });
    }
    Ok(Outcome { disks, wire_bytes: tally.wire(), rate_cap: cap })
}

/// A TLS session to the receiving agent `name` at `addr`, vouched for by the control plane.
async fn connect(
    ctx: &Ctx,
    name: &str,
    addr: &str,
) -> Result<(tokio_rustls::client::TlsStream<Counted>, WireBytes), String> {
    let connector = tokio_rustls::TlsConnector::from(Arc::new(ctx.identity.link_client().map_err(|e| e.to_string())?));
    let server_name = pki::agent_server_name(name).map_err(|e| e.to_string())?;
    let tcp = tokio::time::timeout(Duration::from_secs(20), TcpStream::connect(addr))
        .await
        .map_err(|_| format!("cannot connect to {name} at {addr}: timed out"))?
        .map_err(|e| format!("cannot connect to {name} at {addr}: {e}"))?;
    agent_link::tune(&tcp);
    let wire = WireBytes::default();
    let tls = tokio::time::timeout(
        Duration::from_secs(20),
        connector.connect(server_name, Counted { inner: tcp, wire: wire.clone() }),
    )
    .await
    .map_err(|_| format!("{addr}: the TLS handshake timed out"))?
    .map_err(|e| format!("{addr}: TLS refused ({e}); is {name} the agent listening there?"))?;
    let fp = agent_link::peer_fingerprint(tls.get_ref().1.peer_certificates())?;
    let (vouched, _) = agent_link::vouch_any(&ctx.state, &ctx.identity, &fp).await?;
    if vouched != name {
        return Err(format!("the control plane says the peer at {addr} is {vouched}, not {name}"));
    }
    Ok((tls, wire))
}

#[cfg(test)]
mod tests {
    use super::under;
    use std::path::Path;

    #[test]
    fn disk_paths_stay_under_the_disk_folder() {
        let root = Path::new("/srv/disks");
        assert_eq!(under(root, "primary/ds1/vm/disk0.vmdk").unwrap(), root.join("primary/ds1/vm/disk0.vmdk"));
        for bad in ["", "/etc/passwd", "../x", "a/../../x", "./a"] {
            assert!(under(root, bad).is_err(), "{bad:?} must be refused");
        }
    }
}
