//! Replication between two agents: the replicator's stream over mutual TLS, directly from a process server to a
//! master target (never through the control plane). Each side presents its agent certificate, checks the other's
//! against the vault's CA, and asks the control plane which agent the other is — a revoked or unknown peer is
//! refused even though its certificate still verifies. The replicator keeps its blocking halves: they talk to a
//! local socket pair whose other end a task relays to TLS, and that task counts the bytes on the wire, TLS
//! included.

use std::path::Path;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use orchestrator::agents::AgentRole;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;

use crate::agent::{self, State};
use crate::agent_plane::PeerQuery;
use crate::pki::{self, Identity};

/// Bytes that crossed the network on one link, TLS records and handshake included.
#[derive(Clone, Debug, Default)]
pub struct WireBytes {
    pub sent: Arc<AtomicU64>,
    pub received: Arc<AtomicU64>,
}

impl WireBytes {
    pub fn totals(&self) -> (u64, u64) {
        (self.sent.load(Ordering::Relaxed), self.received.load(Ordering::Relaxed))
    }
}

/// A TCP stream that counts what it reads and writes.
pub(crate) struct Counted {
    pub(crate) inner: TcpStream,
    pub(crate) wire: WireBytes,
}

impl AsyncRead for Counted {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let r = Pin::new(&mut self.inner).poll_read(cx, buf);
        self.wire.received.fetch_add((buf.filled().len() - before) as u64, Ordering::Relaxed);
        r
    }
}

impl AsyncWrite for Counted {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<std::io::Result<usize>> {
        let r = Pin::new(&mut self.inner).poll_write(cx, buf);
        if let Poll::Ready(Ok(n)) = &r {
            self.wire.sent.fetch_add(*n as u64, Ordering::Relaxed);
        }
        r
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// A WAN link that dies silently (a cut cable, a dropped route) must fail the cycle in seconds, not after the
/// kernel's 15 minutes of retransmissions: unacknowledged data times out after 20 s, an idle link is probed.
pub(crate) fn tune(tcp: &TcpStream) {
    use std::os::fd::AsRawFd;
    let _ = tcp.set_nodelay(true);
    let fd = tcp.as_raw_fd();
    let set = |level: libc::c_int, name: libc::c_int, value: libc::c_int| {
        // SAFETY: `fd` is an open socket for the lifetime of `tcp`; the option value is a plain int.
        unsafe {
            libc::setsockopt(
                fd,
                level,
                name,
                (&value as *const libc::c_int).cast(),
                std::mem::size_of::<libc::c_int>() as libc::socklen_t,
            )
        }
    };
    set(libc::IPPROTO_TCP, libc::TCP_USER_TIMEOUT, 20_000);
    set(libc::SOL_SOCKET, libc::SO_KEEPALIVE, 1);
    set(libc::IPPROTO_TCP, libc::TCP_KEEPIDLE, 5);
    set(libc::IPPROTO_TCP, libc::TCP_KEEPINTVL, 2);
    set(libc::IPPROTO_TCP, libc::TCP_KEEPCNT, 5);
}

/// The replicator's end of a relayed link, and the task relaying its other end to `tls`.
pub(crate) fn relay<S>(tls: S) -> Result<(replicator::wire::End, tokio::task::JoinHandle<()>), String>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let (ours, theirs) = std::os::unix::net::UnixStream::pair().map_err(|e| format!("socket pair: {e}"))?;
    theirs.set_nonblocking(true).map_err(|e| e.to_string())?;
    let mut theirs = tokio::net::UnixStream::from_std(theirs).map_err(|e| e.to_string())?;
    let task = tokio::spawn(async move {
        let mut tls = tls;
        if let Err(e) = tokio::io::copy_bidirectional(&mut tls, &mut theirs).await {
            tracing::warn!(error = %e, "replication link ended");
        }
    });
    Ok((replicator::wire::unix(ours).map_err(|e| e.to_string())?, task))
}

fn control_plane(identity: &Identity) -> Result<reqwest::Client, String> {
    let tls = identity.control_plane_client().map_err(|e| e.to_string())?;
    reqwest::Client::builder()
        .use_preconfigured_tls(tls)
        .timeout(Duration::from_secs(10))
        .build()
        .map_err(|e| e.to_string())
}

/// The rate cap an Administrator set for this agent, if any.
pub(crate) async fn rate_cap(state: &State, identity: &Identity) -> Result<Option<u64>, String> {
    let url = format!("https://{}/agent/v1/self", state.endpoint);
    let r = control_plane(identity)?
        .get(&url)
        .send()
        .await
        .map_err(|e| format!("the control plane at {} does not answer: {e}", state.endpoint))?;
    let status = r.status();
    let v: serde_json::Value = r.json().await.unwrap_or_default();
    if !status.is_success() {
        return Err(format!("the control plane refuses this agent: {}", v["message"].as_str().unwrap_or("?")));
    }
    Ok(v["max_bytes_per_s"].as_u64())
}

/// Which agent the control plane says holds the certificate with `fingerprint`; refused when it is unknown,
/// revoked, or not of `role`.
async fn vouch(state: &State, identity: &Identity, fingerprint: &str, role: AgentRole) -> Result<String, String> {
    let (name, of) = vouch_any(state, identity, fingerprint).await?;
    if of != role.as_str() {
        return Err(format!("the peer {name} is a {of}, not a {}", role.as_str()));
    }
    Ok(name)
}

/// Which enrolled, unrevoked agent holds the certificate with `fingerprint`: its name and role.
pub(crate) async fn vouch_any(
    state: &State,
    identity: &Identity,
    fingerprint: &str,
) -> Result<(String, String), String> {
    let client = control_plane(identity)?;
    let url = format!("https://{}/agent/v1/peer", state.endpoint);
    let r = client
        .post(&url)
        .json(&PeerQuery { fingerprint: fingerprint.to_owned() })
        .send()
        .await
        .map_err(|e| format!("the control plane at {} cannot vouch for the peer: {e}", state.endpoint))?;
    let status = r.status();
    let v: serde_json::Value = r.json().await.unwrap_or_default();
    let why = v["message"].as_str().unwrap_or("no reason given").to_owned();
    if status == reqwest::StatusCode::FORBIDDEN {
        return Err(format!("the control plane refuses this agent ({}): {why}", state.name));
    }
    if !status.is_success() {
        return Err(format!("the control plane refuses the peer: {why}"));
    }
    let name = v["name"].as_str().unwrap_or_default().to_owned();
    Ok((name, v["role"].as_str().unwrap_or("?").to_owned()))
}

pub(crate) fn peer_fingerprint(certs: Option<&[rustls::pki_types::CertificateDer<'_>]>) -> Result<String, String> {
    certs.and_then(|c| c.first()).map(|c| pki::fingerprint(c)).ok_or_else(|| "the peer presented no certificate".into())
}

/// `homeward disk receive --agent-dir`: a master target takes one cycle from an enrolled process server.
pub async fn receive(
    agent_dir: &Path,
    listen: std::net::SocketAddr,
    dst: &Path,
    opts: replicator::sync::TargetOptions,
) -> Result<WireBytes, String> {
    let (state, identity) = agent::load(agent_dir).map_err(|f| f.message)?;
    if state.role != AgentRole::MasterTarget {
        return Err(format!("{} is a {}: only a master target receives", state.name, state.role.as_str()));
    }
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(identity.link_server().map_err(|e| e.to_string())?));
    let listener =
        tokio::net::TcpListener::bind(listen).await.map_err(|e| format!("cannot listen on {listen}: {e}"))?;
    let addr = listener.local_addr().map_err(|e| e.to_string())?;
    // The first line on stdout: scripts (and tests) read the address from it.
    println!("receiving on {addr} as {}", state.name);
    let (tcp, from) = listener.accept().await.map_err(|e| format!("accept: {e}"))?;
    tune(&tcp);
    let wire = WireBytes::default();
    let tls =
        tokio::time::timeout(Duration::from_secs(20), acceptor.accept(Counted { inner: tcp, wire: wire.clone() }))
            .await
            .map_err(|_| format!("{from}: the TLS handshake timed out"))?
            .map_err(|e| format!("{from}: TLS refused: {e}"))?;
    let fp = peer_fingerprint(tls.get_ref().1.peer_certificates())?;
    let peer = vouch(&state, &identity, &fp, AgentRole::ProcessServer).await?;
    tracing::info!(peer = %peer, from = %from, "receiving a replication cycle");
    let (end, relay) = relay(tls)?;
    let dst = dst.to_path_buf();
    let result = tokio::task::spawn_blocking(move || replicator::sync::run_target(&dst, end, &opts))
        .await
        .map_err(|e| e.to_string())?;
    let _ = relay.await;
    result.map_err(|e| e.to_string())?;
    Ok(wire)
}

/// What a cycle between agents reports beside the replicator's own report.
pub struct LinkReport {
    pub wire: WireBytes,
    /// The control plane's rate cap for the sending agent, when one applied.
    pub rate_cap: Option<u64>,
}

/// `homeward disk sync --agent-dir SRC tls://AGENT@HOST:PORT`: a process server sends one cycle to a master
/// target, no faster than the cap an Administrator set for it (or the command's own --bwlimit, the lower).
pub async fn send(
    agent_dir: &Path,
    target: &str,
    src: &Path,
    mut opts: replicator::sync::SyncOptions,
) -> Result<(replicator::sync::SyncReport, LinkReport), String> {
    let (peer_name, addr) = target
        .split_once('@')
        .ok_or_else(|| format!("tls://{target}: name the master target, as tls://NAME@HOST:PORT"))?;
    let (state, identity) = agent::load(agent_dir).map_err(|f| f.message)?;
    if state.role != AgentRole::ProcessServer {
        return Err(format!("{} is a {}: only a process server sends", state.name, state.role.as_str()));
    }
    let connector = tokio_rustls::TlsConnector::from(Arc::new(identity.link_client().map_err(|e| e.to_string())?));
    let name = pki::agent_server_name(peer_name).map_err(|e| e.to_string())?;
    let tcp = tokio::time::timeout(Duration::from_secs(20), TcpStream::connect(addr))
        .await
        .map_err(|_| format!("cannot connect to {addr}: timed out"))?
        .map_err(|e| format!("cannot connect to {addr}: {e}"))?;
    tune(&tcp);
    let wire = WireBytes::default();
    let tls = tokio::time::timeout(
        Duration::from_secs(20),
        connector.connect(name, Counted { inner: tcp, wire: wire.clone() }),
    )
    .await
    .map_err(|_| format!("{addr}: the TLS handshake timed out"))?
    .map_err(|e| format!("{addr}: TLS refused ({e}); is {peer_name} the agent listening there?"))?;
    let fp = peer_fingerprint(tls.get_ref().1.peer_certificates())?;
    let vouched = vouch(&state, &identity, &fp, AgentRole::MasterTarget).await?;
    if vouched != peer_name {
        return Err(format!("the control plane says the peer is {vouched}, not {peer_name}"));
    }
    let cap = rate_cap(&state, &identity).await?;
    if let Some(cap) = cap {
        opts.bandwidth = Some(opts.bandwidth.map_or(cap, |own| own.min(cap)));
    }
    let image = replicator::DiskImage::open(src).map_err(|e| e.to_string())?;
    let (end, relay) = relay(tls)?;
    let result = tokio::task::spawn_blocking(move || replicator::sync::run_source(&image, end, &opts))
        .await
        .map_err(|e| e.to_string())?;
    let _ = relay.await;
    Ok((result.map_err(|e| e.to_string())?, LinkReport { wire, rate_cap: cap }))
}
