//! `homeward serve`: the portal (server-rendered Leptos routes and their server functions), the site's static
//! files, and `/healthz`.

use std::io;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;
use std::sync::Arc;

use app::{shell, App, ServerContext, OUTPUT_NAME};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use leptos::config::LeptosOptions;
use leptos::prelude::provide_context;
use leptos_axum::{generate_route_list, LeptosRoutes};
use orchestrator::accounts::Accounts;
use orchestrator::db::{Db, DbError};
use orchestrator::estate::{Created, Estate};
use orchestrator::jobs::JobStore;
use orchestrator::service::{system_clock, Service};
use orchestrator::worker::{Node, NodeError, Workers};
use tower_http::compression::CompressionLayer;
use tower_http::trace::TraceLayer;

use crate::agent_plane::AgentPlane;
use crate::cli::{ServeArgs, WorkerCount};

/// The agents' endpoint's port when the portal has a fixed one.
const DEFAULT_AGENT_PORT: u16 = 3443;
use crate::db;

#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error("data directory {path} is not usable: {source}")]
    DataDir { path: PathBuf, source: io::Error },
    #[error(transparent)]
    Db(#[from] DbError),
    #[error("cannot listen on {addr}: {source}")]
    Listen { addr: SocketAddr, source: io::Error },
    #[error("the server stopped: {0}")]
    Serve(io::Error),
    #[error("the local estate: {0}")]
    Estate(#[from] orchestrator::estate::EstateError),
    #[error("accounts: {0}")]
    Accounts(#[from] orchestrator::accounts::AccountError),
    #[error(transparent)]
    Node(#[from] NodeError),
    #[error("the vault's certificate authority: {0}")]
    Pki(#[from] crate::pki::PkiError),
    #[error("site connections: {0}")]
    Connections(#[from] orchestrator::connections::ConnectionError),
    #[error("HTTPS: {0}")]
    Tls(#[from] crate::https::TlsFileError),
}

impl ServeError {
    /// 2 for anything the operator can fix in the command line or the environment, 1 for a failure while running.
    pub fn exit_code(&self) -> u8 {
        match self {
            ServeError::Serve(_) => 1,
            _ => 2,
        }
    }
}

pub async fn run(args: ServeArgs) -> Result<(), ServeError> {
    // Before anything starts: a certificate that cannot serve is the operator's to fix (exit 2).
    let tls = match (&args.tls_cert, &args.tls_key) {
        (Some(cert), Some(key)) => Some(crate::https::load_config(cert, key)?),
        _ => None,
    };
    prepare_data_dir(&args.data_dir)?;
    let node = Node::acquire(&args.data_dir)?;
    let db = db::open(args.database_url.as_ref(), &args.data_dir).await?;
    db::ensure_vault(&db, &args.vault_name, &now_rfc3339()).await?;
    let accounts = Accounts::new(db.clone());
    // First start: an Administrator account. HOMEWARD_ADMIN_PASSWORD sets its password (automation, tests);
    // otherwise one is generated and printed once, right after the URL line.
    let preset = std::env::var("HOMEWARD_ADMIN_PASSWORD").ok().filter(|p| !p.is_empty());
    let generated = accounts.ensure_admin(preset.clone(), system_clock()).await?.filter(|_| preset.is_none());

    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .map_err(|source| ServeError::Listen { addr: args.listen, source })?;
    let addr = listener.local_addr().map_err(|source| ServeError::Listen { addr: args.listen, source })?;
    let site_root = args.site_root.clone().unwrap_or_else(default_site_root);
    if !site_root.join("pkg").join(format!("{OUTPUT_NAME}.js")).is_file() {
        tracing::warn!(
            site_root = %site_root.display(),
            "the site is not built there: pages render but will not become interactive; run `./x site` or pass --site-root"
        );
    }

    let estate = Estate::new(&args.estate_dir.clone().unwrap_or_else(|| args.data_dir.join("estate")), db.clone());
    // First start: the estate.json an earlier version left is imported; else a vault with every scenario of the
    // article is seeded, in seconds. Once, however many nodes start together.
    match estate.create_once(orchestrator::demo::seed).await? {
        Some(Created::Imported) => tracing::info!(estate = %estate.root.display(), "imported estate.json"),
        Some(Created::Built) => tracing::info!(estate = %estate.root.display(), "seeded the demo estate"),
        None => {}
    }
    // A damaged estate (a row that does not parse) is refused at start, naming the row, rather than served as
    // errors on every item call.
    estate.load().await?;
    let key_dir = args.data_dir.clone();
    let sealer = tokio::task::spawn_blocking(move || orchestrator::connections::Sealer::load_or_create(&key_dir))
        .await
        .map_err(|e| ServeError::Serve(io::Error::other(e.to_string())))??;
    let service = Arc::new(Service {
        estate,
        jobs: JobStore::new(db.clone()),
        agents: orchestrator::agents::Agents::new(db.clone()),
        connections: orchestrator::connections::Connections::new(db.clone(), sealer),
        clock: system_clock,
    });
    if let Err(e) = service.reconcile().await {
        tracing::error!(error = %e, "reconciling items with finished jobs failed");
    }
    let shutdown = Arc::new(AtomicBool::new(false));
    let workers_count = args.workers.unwrap_or_else(WorkerCount::from_cores).0;
    // Jobs and replication rounds run on threads of their own (their steps do blocking disk IO); their database
    // calls run on this runtime, which drives every connection of the pool.
    let rt = tokio::runtime::Handle::current();
    let workers =
        Workers::spawn(service.clone(), &node, workers_count, args.lease_seconds * 1000, shutdown.clone(), rt.clone());
    let replication = orchestrator::replication::spawn(service.clone(), &node, shutdown.clone(), rt);
    let health = Health { db: db.clone(), node: node.id.clone(), workers: workers.clone(), service: service.clone() };
    spawn_connection_checks(service.clone(), shutdown.clone());
    spawn_cloud_power_watch(service.clone(), shutdown.clone());
    orchestrator::alerts::spawn(service.clone(), shutdown.clone());

    // The agents' endpoint: mutual TLS with certificates of the vault's own CA.
    let agent_addr = args
        .agent_listen
        .unwrap_or_else(|| SocketAddr::new(addr.ip(), if args.listen.port() == 0 { 0 } else { DEFAULT_AGENT_PORT }));
    let agent_listener = tokio::net::TcpListener::bind(agent_addr)
        .await
        .map_err(|source| ServeError::Listen { addr: agent_addr, source })?;
    let agent_addr = agent_listener.local_addr().map_err(|source| ServeError::Listen { addr: agent_addr, source })?;
    let pki_dir = args.data_dir.join("pki");
    let ca = tokio::task::spawn_blocking(move || crate::pki::Ca::load_or_create(&pki_dir))
        .await
        .map_err(|e| ServeError::Pki(crate::pki::PkiError::Invalid(e.to_string())))??;
    let plane = AgentPlane {
        agents: service.agents.clone(),
        accounts: accounts.clone(),
        ca: Arc::new(ca),
        agent_port: agent_addr.port(),
    };
    let agent_endpoint = crate::agent_plane::spawn(agent_listener, plane.clone())?;
    let (embedded_service, ca_fingerprint) = (service.clone(), plane.ca.fingerprint());
    let router = router(db, &site_root, addr, service, accounts, health, plane).layer(
        tower_http::timeout::TimeoutLayer::with_status_code(
            StatusCode::REQUEST_TIMEOUT,
            std::time::Duration::from_secs(args.request_timeout_seconds),
        ),
    );

    // The first line on stdout: scripts and tests read the URL from it (port 0 picks a free port).
    println!("Homeward portal: {}://{addr}/", if tls.is_some() { "https" } else { "http" });
    println!("Agents' endpoint (mutual TLS): {agent_addr}");
    if let Some(pw) = generated {
        println!("First start: sign in as 'admin' with the one-time password {pw}");
        println!("It is shown only now and stored only as a hash. Create your own accounts with `homeward users add`.");
    }
    tracing::info!(%addr, data_dir = %args.data_dir.display(), site_root = %site_root.display(), node = %node.id,
        workers = workers_count, "serving");
    let embedded = if args.embedded_agents {
        crate::agent::spawn_embedded(&embedded_service, &args.data_dir, agent_addr, &ca_fingerprint)
            .await
            .unwrap_or_else(|e| {
                tracing::error!(error = %e, "the embedded agents did not start");
                Vec::new()
            })
    } else {
        Vec::new()
    };
    let served = match tls {
        Some(config) => crate::https::serve(listener, config, router, shutdown_signal()).await,
        None => {
            // The client's address, for the sign-in throttle.
            let app = router.into_make_service_with_connect_info::<std::net::SocketAddr>();
            axum::serve(listener, app).with_graceful_shutdown(shutdown_signal()).await
        }
    };
    agent_endpoint.abort();
    embedded.iter().for_each(|t| t.abort());
    // Running steps stop at their next chunk and their jobs are handed back for any node to take.
    tokio::task::spawn_blocking(move || {
        workers.shutdown();
        if let Some(r) = replication {
            let _ = r.join();
        }
    })
    .await
    .ok();
    drop(node);
    served.map_err(ServeError::Serve)
}

/// What `/healthz` reports: the database answers, the estate's description in it reads whole, and at least one
/// worker of this node is alive.
#[derive(Clone)]
pub struct Health {
    db: Db,
    node: String,
    workers: Arc<Workers>,
    service: Arc<Service>,
}

pub fn router(
    db: Db,
    site_root: &Path,
    addr: SocketAddr,
    service: Arc<Service>,
    accounts: Accounts,
    health: Health,
    plane: AgentPlane,
) -> Router {
    let options = LeptosOptions::builder()
        .output_name(OUTPUT_NAME)
        .site_root(site_root.to_string_lossy().into_owned())
        .site_pkg_dir("pkg")
        .site_addr(addr)
        .build();
    let context = ServerContext {
        db,
        service: service.clone(),
        accounts: accounts.clone(),
        agents: plane.agents.clone(),
        ca_fingerprint: plane.ca.fingerprint(),
        agent_port: plane.agent_port,
    };
    // Runs inside every page's render, after Leptos made the response's nonce.
    let provide = move || {
        provide_context(context.clone());
        page_security_policy();
    };
    let routes = generate_route_list(App);
    let router = Router::new()
        .route("/healthz", get(move || healthz(health.clone())))
        .route(
            "/auth/login",
            post(crate::auth::login)
                .with_state(crate::auth::SignIn { accounts: accounts.clone(), throttle: Default::default() }),
        )
        .route("/auth/logout", post(crate::auth::logout).with_state(accounts.clone()))
        .route("/events/jobs/{id}", get(crate::events::job_events).with_state(service.clone()))
        .nest_service("/api/v1", crate::api::router(service, accounts.clone(), plane))
        .leptos_routes_with_context(&options, routes, provide.clone(), {
            let options = options.clone();
            move || shell(options.clone())
        })
        .fallback(leptos_axum::file_and_error_handler_with_context(provide, shell))
        .with_state(options)
        .layer(axum::middleware::from_fn(server_fn_client_mistakes))
        .layer(axum::middleware::from_fn_with_state(accounts, crate::auth::authenticate));
    with_edge_layers(with_security_headers(router))
}

/// A server function whose arguments do not parse (malformed JSON, a missing field, a page number that is not
/// one, a body over the limit) answers 500 from the server-function layer; those are the client's mistakes: 400,
/// or 413 for a body over the limit. The body keeps its encoding (`Args|…`), so the portal still decodes it.
/// The portal's own error type sets its statuses itself (`PortalError`'s conversion).
async fn server_fn_client_mistakes(req: axum::extract::Request, next: axum::middleware::Next) -> Response {
    let res = next.run(req).await;
    let from_server_fn = res.headers().contains_key("serverfnerror");
    let plain = res
        .headers()
        .get(axum::http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("text/plain"));
    if res.status() != StatusCode::INTERNAL_SERVER_ERROR || !from_server_fn || !plain {
        return res;
    }
    let (mut parts, body) = res.into_parts();
    let Ok(bytes) = axum::body::to_bytes(body, 64 << 10).await else {
        return (StatusCode::INTERNAL_SERVER_ERROR, "the error could not be read").into_response();
    };
    let text = String::from_utf8_lossy(&bytes);
    let client = ["Args|", "MissingArg|", "Deserialization|"].iter().any(|p| text.starts_with(p));
    if client {
        parts.status = if text.contains("length limit exceeded") {
            StatusCode::PAYLOAD_TOO_LARGE
        } else {
            StatusCode::BAD_REQUEST
        };
    }
    Response::from_parts(parts, axum::body::Body::from(bytes))
}

/// The layers between the network and every route, innermost first:
/// * a panic in a handler answers a JSON 500 and is logged, instead of dropping the client's connection;
/// * every request gets an `X-Request-Id` (a client's own is kept), the response carries it back, every JSON error
///   body names it, and the server log's lines for the request carry it: a user reporting a failure can quote the
///   id that finds its cause in the log;
/// * compression last, so the error bodies above are still plain JSON when they are completed.
fn with_edge_layers(router: Router) -> Router {
    use tower_http::catch_panic::CatchPanicLayer;
    use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer};
    let trace = TraceLayer::new_for_http().make_span_with(|req: &axum::http::Request<_>| {
        let id = req.headers().get("x-request-id").and_then(|v| v.to_str().ok()).unwrap_or("-");
        tracing::info_span!("request", method = %req.method(), uri = %req.uri(), request_id = %id)
    });
    router
        .layer(CatchPanicLayer::custom(panicked))
        .layer(axum::middleware::from_fn(request_id_in_errors))
        .layer(trace)
        .layer(PropagateRequestIdLayer::x_request_id())
        .layer(SetRequestIdLayer::x_request_id(MakeRequestUuid))
        .layer(CompressionLayer::new())
}

/// The answer to a request whose handler panicked; the panic's text goes to the log (inside the request's span,
/// so under its id), never to the client.
fn panicked(payload: Box<dyn std::any::Any + Send + 'static>) -> Response {
    let what = payload
        .downcast_ref::<String>()
        .map(String::as_str)
        .or_else(|| payload.downcast_ref::<&str>().copied())
        .unwrap_or("(no message)");
    tracing::error!(panic = what, "a request's handler panicked");
    (
        StatusCode::INTERNAL_SERVER_ERROR,
        Json(serde_json::json!({
            "code": "internal",
            "message": "The server failed while handling this request.",
            "recommended_action": "Check the jobs and the audit log for what this request did, then retry; if it \
                fails again, report it with its request id (the server log has the cause under it).",
        })),
    )
        .into_response()
}

/// Adds `request_id` to every JSON error body that does not name it yet (the header carries it too, but a body is
/// what users paste into a ticket). Server functions' errors are left as they are: the portal decodes them as
/// its own error type, where an extra field would not parse (the header still carries the id).
async fn request_id_in_errors(req: axum::extract::Request, next: axum::middleware::Next) -> Response {
    use axum::http::header::{CONTENT_LENGTH, CONTENT_TYPE};
    let id = req.headers().get("x-request-id").and_then(|v| v.to_str().ok()).map(str::to_owned);
    let res = next.run(req).await;
    let id = id.filter(|_| !res.headers().contains_key("serverfnerror"));
    let json = res
        .headers()
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"));
    let (Some(id), true, true) = (id, json, res.status().is_client_error() || res.status().is_server_error()) else {
        return res;
    };
    let (mut parts, body) = res.into_parts();
    // Error bodies are small; one that is not is passed on as it came.
    let Ok(bytes) = axum::body::to_bytes(body, 1 << 20).await else {
        return (StatusCode::INTERNAL_SERVER_ERROR, "the error could not be read").into_response();
    };
    match serde_json::from_slice::<serde_json::Value>(&bytes) {
        Ok(serde_json::Value::Object(mut fields)) if !fields.contains_key("request_id") => {
            fields.insert("request_id".into(), id.into());
            parts.headers.remove(CONTENT_LENGTH);
            Response::from_parts(parts, axum::body::Body::from(serde_json::Value::Object(fields).to_string()))
        }
        _ => Response::from_parts(parts, axum::body::Body::from(bytes)),
    }
}

/// The Content-Security-Policy: scripts only from this site, plus, on a page, the inline ones carrying the
/// response's nonce (Leptos puts it on its hydration and streamed-resource scripts); WebAssembly compiled only by
/// those scripts; nothing fetched, framed, posted or based anywhere else; styles from the site and the components'
/// own `style` attributes. An injected `<script>` or `on…=` attribute does not run.
fn content_security_policy(nonce: Option<&str>) -> String {
    let nonce = nonce.map(|n| format!(" 'nonce-{n}'")).unwrap_or_default();
    format!(
        "default-src 'self'; script-src 'self'{nonce} 'wasm-unsafe-eval'; style-src 'self' 'unsafe-inline'; \
         img-src 'self' data:; object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
    )
}

/// A rendered page's policy names its own nonce (set from inside the render, where the nonce exists); every
/// other response gets the policy without one (see [`with_security_headers`]).
fn page_security_policy() {
    use axum::http::header::{HeaderValue, CONTENT_SECURITY_POLICY};
    let (Some(nonce), Some(response)) =
        (leptos::nonce::use_nonce(), leptos::prelude::use_context::<leptos_axum::ResponseOptions>())
    else {
        return;
    };
    if let Ok(policy) = HeaderValue::from_str(&content_security_policy(Some(&nonce))) {
        response.insert_header(CONTENT_SECURITY_POLICY, policy);
    }
}

/// Headers on every response: never framed, never sniffed, no referrer to other sites, scripts restricted (see
/// [`content_security_policy`]), and pages and API answers never stored (Back after sign-out must not show the
/// vault); the site's script, wasm and style stay cacheable.
fn with_security_headers(router: Router) -> Router {
    use axum::http::header::{
        HeaderName, HeaderValue, CACHE_CONTROL, CONTENT_SECURITY_POLICY, CONTENT_TYPE, REFERRER_POLICY,
        X_CONTENT_TYPE_OPTIONS, X_FRAME_OPTIONS,
    };
    use tower_http::set_header::SetResponseHeaderLayer as Set;
    let fixed = |name: HeaderName, value: &'static str| Set::overriding(name, HeaderValue::from_static(value));
    let no_store = |r: &axum::response::Response| {
        let ct = r.headers().get(CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or("");
        (ct.starts_with("text/html") || ct.starts_with("application/json"))
            .then(|| HeaderValue::from_static("no-store"))
    };
    router
        .layer(fixed(X_CONTENT_TYPE_OPTIONS, "nosniff"))
        .layer(fixed(X_FRAME_OPTIONS, "DENY"))
        .layer(Set::if_not_present(
            CONTENT_SECURITY_POLICY,
            HeaderValue::from_str(&content_security_policy(None)).expect("the policy is ASCII"),
        ))
        .layer(fixed(REFERRER_POLICY, "same-origin"))
        .layer(Set::if_not_present(CACHE_CONTROL, no_store))
}

async fn healthz(h: Health) -> impl IntoResponse {
    let workers = h.workers.health();
    let alive = workers.iter().filter(|w| w.alive).count();
    let estate = match h.service.estate.load().await {
        Err(
            e @ (orchestrator::estate::EstateError::CorruptRow { .. } | orchestrator::estate::EstateError::Missing),
        ) => Some(e),
        _ => None, // a database that does not answer is reported below
    };
    if let Some(e) = estate {
        tracing::error!(error = %e, "healthz: the estate does not read");
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(serde_json::json!({
                "status": "unavailable",
                "error": e.to_string(),
                "node": h.node, "workers": workers,
            })),
        );
    }
    match h.db.applied_version().await {
        Ok(v) if alive > 0 => (
            StatusCode::OK,
            Json(serde_json::json!({
                "status": "ok", "schema_version": v.unwrap_or(0), "database": h.db.backend.name(),
                "node": h.node, "workers": workers,
            })),
        ),
        Ok(_) => (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(serde_json::json!({
                "status": "unavailable", "error": "no job worker of this node is alive; see the server log",
                "node": h.node, "workers": workers,
            })),
        ),
        Err(e) => (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(serde_json::json!({
                "status": "unavailable", "error": format!("the database does not answer: {e}"),
                "node": h.node, "workers": workers,
            })),
        ),
    }
}

/// Checks the site connections again in the background (each one every few minutes, see
/// `orchestrator::connections::CHECK_EVERY_MS`), so a vCenter or storage account that went away shows as failing
/// on the Infrastructure page and in the API before anyone acts on it.
fn spawn_connection_checks(service: Arc<Service>, shutdown: Arc<AtomicBool>) {
    tokio::spawn(async move {
        while !shutdown.load(std::sync::atomic::Ordering::Relaxed) {
            if let Err(e) = service.connections.check_due((service.clock)()).await {
                tracing::warn!(error = %e, "checking the site connections failed");
            }
            tokio::time::sleep(std::time::Duration::from_secs(30)).await;
        }
    });
}

/// Asks Azure every few seconds for the power state of the cloud VMs whose items wait for commit: one started again
/// outside Homeward is a split-brain, found before the next replication cycle overwrites what it wrote.
fn spawn_cloud_power_watch(service: Arc<Service>, shutdown: Arc<AtomicBool>) {
    tokio::spawn(async move {
        while !shutdown.load(std::sync::atomic::Ordering::Relaxed) {
            if let Err(e) = service.watch_cloud_power().await {
                tracing::warn!(error = %e, "watching the cloud VMs' power failed");
            }
            tokio::time::sleep(std::time::Duration::from_secs(5)).await;
        }
    });
}

/// Creates the data directory and proves it is writable now, rather than failing on the first job.
fn prepare_data_dir(dir: &Path) -> Result<(), ServeError> {
    let err = |source| ServeError::DataDir { path: dir.to_path_buf(), source };
    std::fs::create_dir_all(dir).map_err(err)?;
    let probe = dir.join(".homeward-write-probe");
    std::fs::write(&probe, b"ok").map_err(err)?;
    std::fs::remove_file(&probe).map_err(err)
}

/// `target/<profile>/homeward` → `target/site`, where scripts/build-site.sh writes; else `./target/site`.
fn default_site_root() -> PathBuf {
    std::env::current_exe()
        .ok()
        .and_then(|exe| exe.parent()?.parent().map(|target| target.join("site")))
        .filter(|site| site.join("pkg").is_dir())
        .unwrap_or_else(|| PathBuf::from("target/site"))
}

fn now_rfc3339() -> String {
    time::OffsetDateTime::now_utc()
        .replace_nanosecond(0)
        .ok()
        .and_then(|t| t.format(&time::format_description::well_known::Rfc3339).ok())
        .unwrap_or_else(|| "1970-01-01T00:00:00Z".into())
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        if let Ok(mut s) = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            s.recv().await;
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! { _ = ctrl_c => {}, _ = term => {} }
    tracing::info!("shutting down");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn data_dir_under_a_file_is_refused_with_the_path() {
        let f = tempfile::NamedTempFile::new().unwrap();
        let bad = f.path().join("sub");
        let e = prepare_data_dir(&bad).unwrap_err();
        assert_eq!(e.exit_code(), 2);
        assert!(e.to_string().contains(&bad.display().to_string()), "{e}");
    }

    /// A handler's panic is a typed JSON 500 with the request's id, and the connection is answered, not dropped.
    #[tokio::test]
    async fn a_panicking_handler_answers_json_500_with_the_request_id() {
        use tower::ServiceExt;
        async fn boom() -> &'static str {
            panic!("a bug")
        }
        let app = with_edge_layers(
            Router::new()
                .route("/boom", get(boom))
                .route("/refused", get(|| async { (StatusCode::CONFLICT, Json(serde_json::json!({"code": "x"}))) }))
                .route(
                    "/server-fn",
                    get(|| async {
                        (StatusCode::CONFLICT, [("serverfnerror", "/api/x")], Json(serde_json::json!({"Refused": 1})))
                    }),
                ),
        );
        let req = |path: &str| axum::http::Request::get(path).body(axum::body::Body::empty()).unwrap();
        let res = app.clone().oneshot(req("/boom")).await.unwrap();
        assert_eq!(res.status(), StatusCode::INTERNAL_SERVER_ERROR);
        let id = res.headers()["x-request-id"].to_str().unwrap().to_owned();
        let body = axum::body::to_bytes(res.into_body(), 1 << 20).await.unwrap();
        let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!((v["code"].as_str(), v["request_id"].as_str()), (Some("internal"), Some(id.as_str())));
        assert!(!String::from_utf8_lossy(&body).contains("a bug"), "the panic's text stays in the log");
        // Every JSON error body names its request id; a client's own id is the one named.
        let mut r = req("/refused");
        r.headers_mut().insert("x-request-id", "ticket-9".parse().unwrap());
        let res = app.clone().oneshot(r).await.unwrap();
        assert_eq!(res.status(), StatusCode::CONFLICT);
        let v: serde_json::Value =
            serde_json::from_slice(&axum::body::to_bytes(res.into_body(), 1 << 20).await.unwrap()).unwrap();
        assert_eq!(v, serde_json::json!({"code": "x", "request_id": "ticket-9"}));
        // A server function's error is the portal's own type on the wire: left exactly as it is.
        let res = app.oneshot(req("/server-fn")).await.unwrap();
        let v: serde_json::Value =
            serde_json::from_slice(&axum::body::to_bytes(res.into_body(), 1 << 20).await.unwrap()).unwrap();
        assert_eq!(v, serde_json::json!({"Refused": 1}));
    }

    #[test]
    fn now_is_rfc3339_utc_without_fraction() {
        let s = now_rfc3339();
        assert!(s.ends_with('Z') && !s.contains('.'), "{s}");
        assert!(time::OffsetDateTime::parse(&s, &time::format_description::well_known::Rfc3339).is_ok());
    }
}
