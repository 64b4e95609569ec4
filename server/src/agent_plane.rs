//! The control plane's side of the site agents, on a port of its own, always TLS: enrollment (the one-time token
//! is the credential; the agent has pinned the vault CA's fingerprint, so the token only ever travels encrypted to
//! this vault) and every other route with mutual TLS, where an agent is known by its certificate's fingerprint,
//! checked against the registry on every request so that a revocation holds at once.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::{Request, State};
use axum::http::StatusCode;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Extension, Json, Router};
use orchestrator::accounts::{Accounts, AuditEntry};
use orchestrator::agents::{Agent, AgentError, AgentRole, Agents, Inventory};
use orchestrator::assignments::{AssignmentError, Assignments, CycleSpec, Outcome};
use orchestrator::service::system_clock;
use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::pki::{fingerprint, Ca};

/// What enrollment and the agents' endpoint share.
#[derive(Clone)]
pub struct AgentPlane {
    pub agents: Agents,
    pub accounts: Accounts,
    pub ca: Arc<Ca>,
    /// The port of the agents' endpoint (the enrollment command names it with the host the portal was reached by).
    pub agent_port: u16,
}

impl AgentPlane {
    /// `host:port` of the agents' endpoint as a machine that reached the portal by the request's `Host` reaches it.
    pub fn endpoint_for(&self, headers: &axum::http::HeaderMap) -> String {
        let host = headers.get(axum::http::header::HOST).and_then(|h| h.to_str().ok());
        orchestrator::agents::endpoint_for(host, self.agent_port)
    }
}

/// An agent's first request: its one-time token and a certificate request.
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EnrollRequest {
    pub token: String,
    pub role: AgentRole,
    pub csr: String,
    pub version: String,
}

/// The control plane's answer: the agent's certificate, the CA to trust, and where to heartbeat.
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Enrolled {
    pub agent_id: String,
    pub name: String,
    pub certificate: String,
    pub ca_certificate: String,
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Heartbeat {
    pub version: String,
    pub inventory: Inventory,
}

fn refuse(status: StatusCode, code: &str, message: String, action: &str) -> Response {
    (status, Json(json!({"code": code, "message": message, "recommended_action": action}))).into_response()
}

fn agent_error(e: &AgentError) -> Response {
    match e {
        AgentError::UnknownToken | AgentError::TokenExpired | AgentError::Revoked(_) => {
            refuse(StatusCode::FORBIDDEN, "enrollment-refused", e.to_string(), "Enroll the agent again.")
        }
        AgentError::WrongRole { .. } => {
            refuse(StatusCode::CONFLICT, "wrong-role", e.to_string(), "Start the agent with the enrolled role.")
        }
        AgentError::Invalid(_) | AgentError::NameTaken(_) | AgentError::NotFound(_) => {
            refuse(StatusCode::BAD_REQUEST, "invalid", e.to_string(), "Fix the request.")
        }
        AgentError::Db(_) => {
            refuse(StatusCode::SERVICE_UNAVAILABLE, "unavailable", e.to_string(), "Retry; see the server log.")
        }
    }
}

async fn audit(accounts: &Accounts, action: &str, target: &str, outcome: &str, detail: Option<String>) {
    let e = AuditEntry {
        at: system_clock(),
        user_name: "(agent)".into(),
        role: "agent".into(),
        action: action.into(),
        target: target.into(),
        outcome: outcome.into(),
        detail,
        ..AuditEntry::default()
    };
    if let Err(err) = accounts.audit(&e).await {
        tracing::error!(error = %err, "audit log write failed");
    }
}

/// `POST /agent/v1/enroll`: the token is the credential; it is checked before the CA signs.
async fn enroll(State(plane): State<AgentPlane>, body: Bytes) -> Response {
    let req: EnrollRequest = match serde_json::from_slice(&body) {
        Ok(r) => r,
        Err(e) => {
            return refuse(StatusCode::BAD_REQUEST, "invalid", format!("body: {e}"), "Send token, role, csr, version.")
        }
    };
    let now = system_clock();
    let agent = match plane.agents.pending(&req.token, req.role, now).await {
        Ok(a) => a,
        Err(e) => {
            audit(&plane.accounts, "agent-enroll", "(token)", "refused", Some(e.to_string())).await;
            return agent_error(&e);
        }
    };
    let (ca, name, csr) = (plane.ca.clone(), agent.name.clone(), req.csr.clone());
    let signed = tokio::task::spawn_blocking(move || ca.sign_agent(&csr, &name)).await;
    let (cert, fp) = match signed {
        Ok(Ok(s)) => s,
        Ok(Err(e)) => return refuse(StatusCode::BAD_REQUEST, "invalid-csr", e.to_string(), "Send a PKCS #10 request."),
        Err(e) => return refuse(StatusCode::SERVICE_UNAVAILABLE, "unavailable", e.to_string(), "Retry."),
    };
    let agent = match plane.agents.redeem(&req.token, req.role, &fp, &req.version, now).await {
        Ok(a) => a,
        Err(e) => {
            audit(&plane.accounts, "agent-enroll", &agent.name, "refused", Some(e.to_string())).await;
            return agent_error(&e);
        }
    };
    audit(&plane.accounts, "agent-enroll", &agent.name, "succeeded", Some(format!("certificate sha256 {fp}"))).await;
    tracing::info!(agent = %agent.name, id = %agent.id, role = agent.role.as_str(), "agent enrolled");
    Json(Enrolled {
        agent_id: agent.id,
        name: agent.name,
        certificate: cert,
        ca_certificate: plane.ca.cert_pem.clone(),
    })
    .into_response()
}

/// Who is on the other end of an agent link: the certificate's fingerprint as the handshake verified it (none
/// before enrollment).
#[derive(Clone, Debug)]
struct Peer {
    fingerprint: Option<String>,
    addr: SocketAddr,
}

async fn identify(
    State(plane): State<AgentPlane>,
    Extension(peer): Extension<Peer>,
    mut req: Request,
    next: Next,
) -> Response {
    let Some(fingerprint) = peer.fingerprint else {
        return refuse(
            StatusCode::FORBIDDEN,
            "certificate-required",
            "this route needs the agent's certificate; only enrollment works without one".into(),
            "Enroll the agent first.",
        );
    };
    match plane.agents.authenticate(&fingerprint, system_clock()).await {
        Ok(agent) => {
            req.extensions_mut().insert(agent);
            next.run(req).await
        }
        Err(e @ (AgentError::Revoked(_) | AgentError::NotFound(_))) => {
            tracing::warn!(peer = %peer.addr, error = %e, "agent refused");
            let target = match &e {
                AgentError::Revoked(name) => name.clone(),
                _ => fingerprint.clone(),
            };
            audit(&plane.accounts, "agent-connect", &target, "refused", Some(format!("{e} (from {})", peer.addr)))
                .await;
            refuse(StatusCode::FORBIDDEN, "agent-refused", e.to_string(), "Enroll the agent again.")
        }
        Err(e) => agent_error(&e),
    }
}

async fn heartbeat(State(plane): State<AgentPlane>, Extension(agent): Extension<Agent>, body: Bytes) -> Response {
    let hb: Heartbeat = match serde_json::from_slice(&body) {
        Ok(h) => h,
        Err(e) => return refuse(StatusCode::BAD_REQUEST, "invalid", format!("body: {e}"), "Send version, inventory."),
    };
    match plane.agents.heartbeat(&agent.id, &hb.version, &hb.inventory, system_clock()).await {
        Ok(()) => Json(json!({"agent_id": agent.id, "name": agent.name})).into_response(),
        Err(e) => agent_error(&e),
    }
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PeerQuery {
    pub fingerprint: String,
}

/// Which agent holds the certificate with this fingerprint: an agent asks before it exchanges disk bytes with a
/// peer, so that a revoked or unknown peer is refused even though its certificate still verifies.
async fn peer(State(plane): State<AgentPlane>, Extension(asker): Extension<Agent>, body: Bytes) -> Response {
    let q: PeerQuery = match serde_json::from_slice(&body) {
        Ok(q) => q,
        Err(e) => return refuse(StatusCode::BAD_REQUEST, "invalid", format!("body: {e}"), "Send fingerprint."),
    };
    match plane.agents.authenticate(&q.fingerprint, system_clock()).await {
        Ok(a) => Json(json!({"id": a.id, "name": a.name, "role": a.role, "site": a.site})).into_response(),
        Err(e @ (AgentError::Revoked(_) | AgentError::NotFound(_))) => {
            audit(&plane.accounts, "agent-peer", &asker.name, "refused", Some(format!("peer {}: {e}", q.fingerprint)))
                .await;
            refuse(StatusCode::NOT_FOUND, "peer-refused", e.to_string(), "Do not exchange data with this peer.")
        }
        Err(e) => agent_error(&e),
    }
}

/// The calling agent as the control plane knows it, with the settings an Administrator gave it (its rate cap).
async fn whoami(Extension(agent): Extension<Agent>) -> Response {
    Json(json!({"id": agent.id, "name": agent.name, "role": agent.role, "max_bytes_per_s": agent.max_bytes_per_s}))
        .into_response()
}

/// A sender's assignment, as the long poll hands it over.
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Taken {
    pub id: String,
    pub spec: CycleSpec,
    pub receiver_name: String,
    /// `host:port` of the receiving agent's link listener.
    pub receiver_link: String,
}

#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProgressReport {
    pub done: u64,
    pub total: u64,
    pub wire_bytes: u64,
}

/// The sender's last word: an outcome, or the error that ended the cycle.
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Finish {
    pub outcome: Option<Outcome>,
    pub error: Option<String>,
}

/// A receiving agent asks whether it may take a stream for an assignment from the peer holding `sender_fingerprint`.
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReceiveCheck {
    pub sender_fingerprint: String,
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReceiveGrant {
    pub spec: CycleSpec,
}

/// How long a sender's poll for work is held open when there is none.
const LONG_POLL: Duration = Duration::from_secs(15);

fn assignment_error(e: &AssignmentError) -> Response {
    match e {
        AssignmentError::Fenced(_) => {
            refuse(StatusCode::CONFLICT, "fenced", e.to_string(), "Stop moving bytes for this assignment.")
        }
        AssignmentError::NotFound(_) | AssignmentError::Invalid(_) => {
            refuse(StatusCode::NOT_FOUND, "unknown-assignment", e.to_string(), "Stop; ask for new work.")
        }
        AssignmentError::Db(_) => {
            refuse(StatusCode::SERVICE_UNAVAILABLE, "unavailable", e.to_string(), "Retry; see the server log.")
        }
    }
}

/// A request body that does not parse: 400 with what to send.
struct BadBody {
    why: String,
    expected: &'static str,
}

impl IntoResponse for BadBody {
    fn into_response(self) -> Response {
        refuse(StatusCode::BAD_REQUEST, "invalid", format!("body: {}", self.why), &format!("Send {}.", self.expected))
    }
}

fn body<T: serde::de::DeserializeOwned>(bytes: &Bytes, expected: &'static str) -> Result<T, BadBody> {
    serde_json::from_slice(bytes).map_err(|e| BadBody { why: e.to_string(), expected })
}

/// `POST /agent/v1/assignments/next`: the sending agent's long poll for its next cycle (204 when none came).
async fn next_assignment(State(plane): State<AgentPlane>, Extension(agent): Extension<Agent>) -> Response {
    let store = Assignments::new(plane.agents.db.clone());
    let until = tokio::time::Instant::now() + LONG_POLL;
    loop {
        match store.take(&agent.id).await {
            Ok(Some(a)) => {
                let receiver = match plane.agents.get(&a.receiver_id, system_clock()).await {
                    Ok(r) => r,
                    Err(e) => {
                        let _ = store.cancel(&a.id, &format!("the receiving agent: {e}")).await;
                        return agent_error(&e);
                    }
                };
                let Some(link) = receiver.inventory.and_then(|i| i.link_endpoint) else {
                    let why = format!("the receiving agent {} has not reported its link address", receiver.name);
                    let _ = store.cancel(&a.id, &why).await;
                    return refuse(StatusCode::CONFLICT, "no-receiver", why, "Ask for new work.");
                };
                tracing::info!(assignment = %a.id, sender = %agent.name, receiver = %receiver.name, "cycle taken");
                return Json(Taken { id: a.id, spec: a.spec, receiver_name: receiver.name, receiver_link: link })
                    .into_response();
            }
            Ok(None) if tokio::time::Instant::now() < until => {
                tokio::time::sleep(Duration::from_millis(250)).await;
            }
            Ok(None) => return StatusCode::NO_CONTENT.into_response(),
            Err(e) => return assignment_error(&e),
        }
    }
}

async fn assignment_progress(
    State(plane): State<AgentPlane>,
    Extension(agent): Extension<Agent>,
    axum::extract::Path(id): axum::extract::Path<String>,
    bytes: Bytes,
) -> Response {
    let p: ProgressReport = match body(&bytes, "done, total, wire_bytes") {
        Ok(p) => p,
        Err(r) => return r.into_response(),
    };
    let store = Assignments::new(plane.agents.db.clone());
    match store.progress(&id, &agent.id, p.done, p.total, p.wire_bytes).await {
        Ok(()) => Json(json!({"continue": true})).into_response(),
        Err(e) => assignment_error(&e),
    }
}

async fn assignment_finish(
    State(plane): State<AgentPlane>,
    Extension(agent): Extension<Agent>,
    axum::extract::Path(id): axum::extract::Path<String>,
    bytes: Bytes,
) -> Response {
    let f: Finish = match body(&bytes, "outcome or error") {
        Ok(f) => f,
        Err(r) => return r.into_response(),
    };
    let store = Assignments::new(plane.agents.db.clone());
    let result = match (&f.outcome, &f.error) {
        (Some(o), None) => Ok(o),
        (None, Some(e)) => Err(e.as_str()),
        _ => {
            return refuse(
                StatusCode::BAD_REQUEST,
                "invalid",
                "send exactly one of outcome and error".into(),
                "Send outcome or error.",
            )
        }
    };
    match store.finish(&id, &agent.id, result).await {
        Ok(()) => Json(json!({"recorded": true})).into_response(),
        Err(e) => assignment_error(&e),
    }
}

/// `POST /agent/v1/assignments/abandon`: a sending agent that just started gives up what its previous run left.
async fn assignments_abandon(State(plane): State<AgentPlane>, Extension(agent): Extension<Agent>) -> Response {
    match Assignments::new(plane.agents.db.clone()).abandon(&agent.id).await {
        Ok(n) => Json(json!({"abandoned": n})).into_response(),
        Err(e) => assignment_error(&e),
    }
}

/// `POST /agent/v1/assignments/{id}/receive`: the receiving agent, at a stream's start and every second after.
async fn assignment_receive(
    State(plane): State<AgentPlane>,
    Extension(agent): Extension<Agent>,
    axum::extract::Path(id): axum::extract::Path<String>,
    bytes: Bytes,
) -> Response {
    let q: ReceiveCheck = match body(&bytes, "sender_fingerprint") {
        Ok(q) => q,
        Err(r) => return r.into_response(),
    };
    let store = Assignments::new(plane.agents.db.clone());
    match store.check_receiver(&id, &agent.id, Some(&q.sender_fingerprint)).await {
        Ok(a) => Json(ReceiveGrant { spec: a.spec }).into_response(),
        Err(e) => {
            if matches!(e, AssignmentError::Fenced(_)) {
                tracing::info!(assignment = %id, receiver = %agent.name, "stream refused or stopped: fenced");
            }
            assignment_error(&e)
        }
    }
}

fn agent_router(plane: AgentPlane) -> Router {
    let authenticated = Router::new()
        .route("/agent/v1/self", axum::routing::get(whoami))
        .route("/agent/v1/heartbeat", post(heartbeat))
        .route("/agent/v1/peer", post(peer))
        .route("/agent/v1/assignments/next", post(next_assignment))
        .route("/agent/v1/assignments/abandon", post(assignments_abandon))
        .route("/agent/v1/assignments/{id}/progress", post(assignment_progress))
        .route("/agent/v1/assignments/{id}/finish", post(assignment_finish))
        .route("/agent/v1/assignments/{id}/receive", post(assignment_receive))
        .layer(axum::middleware::from_fn_with_state(plane.clone(), identify));
    Router::new()
        .route("/agent/v1/enroll", post(enroll))
        .merge(authenticated)
        .layer(axum::extract::DefaultBodyLimit::max(1 << 20))
        .with_state(plane)
}

/// Serves the agents' endpoint on `listener` until the task is aborted. Every connection is TLS, its handshake
/// done within 10 s; a client certificate, when presented, must be of the vault's CA (else the handshake fails).
pub fn spawn(
    listener: tokio::net::TcpListener,
    plane: AgentPlane,
) -> Result<tokio::task::JoinHandle<()>, crate::pki::PkiError> {
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(plane.ca.control_plane_config()?));
    let router = agent_router(plane);
    Ok(tokio::spawn(async move {
        loop {
            let (tcp, addr) = match listener.accept().await {
                Ok(c) => c,
                Err(e) => {
                    tracing::warn!(error = %e, "agents' endpoint: accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            };
            let (acceptor, router) = (acceptor.clone(), router.clone());
            tokio::spawn(async move {
                let tls = match tokio::time::timeout(Duration::from_secs(10), acceptor.accept(tcp)).await {
                    Ok(Ok(tls)) => tls,
                    Ok(Err(e)) => return tracing::warn!(peer = %addr, error = %e, "agents' endpoint: TLS refused"),
                    Err(_) => return tracing::warn!(peer = %addr, "agents' endpoint: TLS handshake timed out"),
                };
                let fp = tls.get_ref().1.peer_certificates().and_then(|c| c.first()).map(|c| fingerprint(c));
                let svc = router.layer(Extension(Peer { fingerprint: fp, addr }));
                let svc = hyper_util::service::TowerToHyperService::new(svc);
                let io = hyper_util::rt::TokioIo::new(tls);
                if let Err(e) = hyper::server::conn::http1::Builder::new().serve_connection(io, svc).await {
                    tracing::debug!(peer = %addr, error = %e, "agents' endpoint: connection ended");
                }
            });
        }
    }))
}
