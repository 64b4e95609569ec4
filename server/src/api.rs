//! The REST API `/api/v1`: thin handlers over `orchestrator::service`. Errors are JSON with a stable code, the rule
//! ID where one applies, the message and the recommended action: a refused action is 409, an unknown id 404,
//! malformed input 400 or 422.

use std::collections::HashSet;
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Extension, Json, Router};
use orchestrator::access::Role;
use orchestrator::accounts::{AccountError, Accounts, SessionToken, User};
use orchestrator::acting::{ActError, Actor};
use orchestrator::agents::{AgentError, AgentRole, SiteKind};
use orchestrator::connections::{ConnectionError, NewConnection};

use orchestrator::estate::EstateError;
use orchestrator::jobs::JobError;
use orchestrator::lifecycle::{Operation, Request};
use orchestrator::service::{Service, ServiceError};
use serde::Deserialize;
use serde_json::{json, Value};

use crate::agent_plane::AgentPlane;

type Svc = Arc<Service>;

/// One error enum for the API layer, each with its status.
#[derive(Debug)]
pub enum ApiError {
    NotFound(String),
    BadRequest(String),
    /// The caller's role may not do this.
    Forbidden(String),
    Unprocessable(String),
    Refused(Vec<orchestrator::rules::Refusal>),
    Conflict {
        code: &'static str,
        message: String,
        action: String,
    },
    /// The database is busy or unreachable (a pause may cure it): 503 with Retry-After.
    Unavailable(String),
    /// A fault of the server: its text goes to the log, never to the client.
    Internal(String),
}

/// A database error as the client sees it: unavailable when a retry may cure it, else internal.
fn db_error(e: &sqlx::Error, text: String) -> ApiError {
    if orchestrator::db::is_transient(e) {
        ApiError::Unavailable(text)
    } else {
        ApiError::Internal(text)
    }
}

impl ApiError {
    fn status_code(&self) -> StatusCode {
        match self {
            ApiError::NotFound(_) => StatusCode::NOT_FOUND,
            ApiError::BadRequest(_) => StatusCode::BAD_REQUEST,
            ApiError::Forbidden(_) => StatusCode::FORBIDDEN,
            ApiError::Unprocessable(_) => StatusCode::UNPROCESSABLE_ENTITY,
            ApiError::Refused(_) | ApiError::Conflict { .. } => StatusCode::CONFLICT,
            ApiError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }
}

impl From<ServiceError> for ApiError {
    fn from(e: ServiceError) -> ApiError {
        match e {
            ServiceError::Refused(r) => ApiError::Refused(r),
            ServiceError::Estate(EstateError::UnknownItem(id)) => {
                ApiError::NotFound(format!("no replicated item {id}"))
            }
            ServiceError::Job(j) => j.into(),
            ServiceError::Agent(a) => a.into(),
            ServiceError::Connection(c) => c.into(),
            ServiceError::Account(a) => a.into(),
            ServiceError::NotFound(m) => ApiError::NotFound(m),
            ServiceError::Invalid(m) => ApiError::Unprocessable(m),
            ServiceError::Alert(a) => match a {
                orchestrator::alerts::AlertError::NotFound(_) => ApiError::NotFound(a.to_string()),
                orchestrator::alerts::AlertError::Resolved(_) => ApiError::Conflict {
                    code: "alert-resolved",
                    message: a.to_string(),
                    action: "Nothing to do: GET /api/v1/alerts lists the open ones.".into(),
                },
                orchestrator::alerts::AlertError::Db(d) => db_error(&d, d.to_string()),
            },
            ServiceError::Webhook(w) => match w {
                orchestrator::webhooks::WebhookError::Invalid(m) => ApiError::Unprocessable(m),
                orchestrator::webhooks::WebhookError::NotFound(_) => ApiError::NotFound(w.to_string()),
                orchestrator::webhooks::WebhookError::Db(d) => db_error(&d, d.to_string()),
                other @ orchestrator::webhooks::WebhookError::Sealed => ApiError::Internal(other.to_string()),
            },
            ServiceError::Estate(EstateError::Db(d)) => db_error(&d, d.to_string()),
            other => ApiError::Internal(other.to_string()),
        }
    }
}

impl From<AgentError> for ApiError {
    fn from(e: AgentError) -> ApiError {
        match e {
            AgentError::NotFound(_) => ApiError::NotFound(e.to_string()),
            AgentError::Invalid(_) => ApiError::Unprocessable(e.to_string()),
            AgentError::NameTaken(_) => ApiError::Conflict {
                code: "name-taken",
                message: e.to_string(),
                action: "Choose another name, or revoke the agent that has it.".into(),
            },
            AgentError::Db(d) => db_error(&d, d.to_string()),
            other => ApiError::Internal(other.to_string()),
        }
    }
}

impl From<ConnectionError> for ApiError {
    fn from(e: ConnectionError) -> ApiError {
        match e {
            ConnectionError::Invalid(m) => ApiError::BadRequest(m),
            ConnectionError::NotFound(_) => ApiError::NotFound(e.to_string()),
            ConnectionError::NameTaken(_) => ApiError::Conflict {
                code: "name-taken",
                message: e.to_string(),
                action: "Choose another name, or remove the connection that has it.".into(),
            },
            // The connection cannot be made as entered: the connector's sentence says why and what to do.
            ConnectionError::Connector(c) => ApiError::Unprocessable(c.to_string()),
            ConnectionError::Sealed(_) => ApiError::Conflict {
                code: "credential-sealed",
                message: e.to_string(),
                action: "Copy connections.key from the node that added the connection, or add it again.".into(),
            },
            ConnectionError::Db(d) => db_error(&d, d.to_string()),
            other @ ConnectionError::Key { .. } => ApiError::Internal(other.to_string()),
        }
    }
}

impl From<AccountError> for ApiError {
    fn from(e: AccountError) -> ApiError {
        match e {
            AccountError::UnknownUser(_) => ApiError::NotFound(e.to_string()),
            AccountError::Invalid(m) => ApiError::Unprocessable(m),
            AccountError::WrongPassword => ApiError::Unprocessable(e.to_string()),
            AccountError::NameTaken(_) => ApiError::Conflict {
                code: "name-taken",
                message: e.to_string(),
                action: "Choose another name, or enable the account that has it.".into(),
            },
            AccountError::LastAdministrator(_) => ApiError::Conflict {
                code: "last-administrator",
                message: e.to_string(),
                action: "Give another enabled account the Administrator role first.".into(),
            },
            AccountError::Db(d) => db_error(&d, d.to_string()),
            other @ (AccountError::BadCredentials | AccountError::Hash(_)) => ApiError::Internal(other.to_string()),
        }
    }
}

impl From<ActError> for ApiError {
    fn from(e: ActError) -> ApiError {
        match e {
            ActError::Denied(d) => ApiError::Forbidden(d.to_string()),
            ActError::Service(s) => s.into(),
        }
    }
}

impl From<JobError> for ApiError {
    fn from(e: JobError) -> ApiError {
        match e {
            JobError::NotFound(id) => ApiError::NotFound(format!("no job {id}")),
            // The same shape as the dry run's R-W5 refusal: one cause, one answer, whichever check saw it first.
            JobError::ItemBusy { item, active_job } => ApiError::Refused(vec![orchestrator::rules::Refusal::new(
                "R-W5",
                format!("Job {active_job} is still running on {item}."),
                format!("Wait for job {active_job} to finish, or cancel it from its job page."),
            )]),
            e @ JobError::IdempotencyConflict { .. } => ApiError::Conflict {
                code: "idempotency-conflict",
                message: e.to_string(),
                action: "Use a new Idempotency-Key for a different request.".into(),
            },
            e @ JobError::NotAllowed { .. } => ApiError::Conflict {
                code: "not-allowed",
                message: e.to_string(),
                action: "See the job's allowed actions.".into(),
            },
            JobError::Db(d) => db_error(&d, d.to_string()),
            other => ApiError::Internal(other.to_string()),
        }
    }
}

/// Query parameters, refused with 400 and the parameter's name when unknown or malformed (axum's own `Query`
/// answers in plain text, and a misspelled `dry_run` must not start a real job).
struct Params<T>(T);

impl<S: Send + Sync, T: serde::de::DeserializeOwned> axum::extract::FromRequestParts<S> for Params<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut axum::http::request::Parts, _: &S) -> Result<Self, Self::Rejection> {
        Query::<T>::try_from_uri(&parts.uri).map(|Query(t)| Params(t)).map_err(|e| {
            let text = e.body_text();
            ApiError::BadRequest(text.replace("Failed to deserialize query string: ", "query parameter: "))
        })
    }
}

/// A JSON body into `T`: unknown fields are a 400 naming the field, other mismatches a 422.
fn body_into<T: serde::de::DeserializeOwned>(v: Value) -> Result<T, ApiError> {
    serde_json::from_value(v).map_err(|e| {
        let m = e.to_string();
        if m.starts_with("unknown field") {
            ApiError::BadRequest(format!("body: {m}"))
        } else {
            ApiError::Unprocessable(format!("invalid request: {m}"))
        }
    })
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = self.status_code();
        let body = match self {
            ApiError::Refused(refusals) => {
                let first = refusals.first().cloned();
                json!({
                    "code": "refused",
                    "rule": first.as_ref().map(|r| r.rule.clone()),
                    "message": first.as_ref().map(|r| r.message.clone()),
                    "recommended_action": first.as_ref().map(|r| r.recommended_action.clone()),
                    "refusals": refusals,
                })
            }
            ApiError::Conflict { code, message, action } => {
                json!({"code": code, "message": message, "recommended_action": action})
            }
            ApiError::NotFound(m) => json!({"code": "not-found", "message": m, "recommended_action": "Check the id."}),
            ApiError::BadRequest(m) => {
                json!({"code": "bad-request", "message": m, "recommended_action": "Fix the request."})
            }
            ApiError::Forbidden(m) => {
                json!({"code": "forbidden", "message": m, "recommended_action": "Ask an Operator or Administrator."})
            }
            ApiError::Unprocessable(m) => {
                json!({"code": "invalid-input", "message": m, "recommended_action": "Fix the request body."})
            }
            // The cause goes to the log (its line names the request id); the client gets the id to quote.
            ApiError::Unavailable(m) => {
                tracing::warn!(error = %m, "API request failed: the database is busy or unreachable");
                json!({
                    "code": "unavailable",
                    "message": "The vault's database is busy or unreachable; the request may not have completed.",
                    "recommended_action": "Retry in a few seconds. If it persists, check the database; the server \
                                           log has the cause under this response's X-Request-Id.",
                })
            }
            ApiError::Internal(m) => {
                tracing::error!(error = %m, "API request failed");
                json!({
                    "code": "internal",
                    "message": "The server could not complete this request.",
                    "recommended_action": "The server log has the cause under this response's X-Request-Id; \
                                           quote it when reporting the problem.",
                })
            }
        };
        if status == StatusCode::SERVICE_UNAVAILABLE {
            return (status, [(axum::http::header::RETRY_AFTER, "5")], Json(body)).into_response();
        }
        (status, Json(body)).into_response()
    }
}

pub fn router(service: Svc, accounts: Accounts, plane: AgentPlane) -> Router {
    Router::new()
        .route("/me", get(me))
        .route("/me/password", post(change_password))
        .route("/accounts", get(list_accounts).post(create_account))
        .route("/accounts/{name}/{action}", post(account_action))
        .route("/audit", get(audit))
        .route("/openapi.json", get(openapi))
        .route("/items", get(list_items))
        .route("/items/{id}", get(get_item))
        .route("/items/{id}/points", get(item_points))
        .route("/items/{id}/protection", get(get_protection).put(put_protection))
        .route("/items/{id}/{action}", post(item_action))
        .route("/plans", get(list_plans).post(create_plan))
        .route("/plans/{id}", get(get_plan).put(update_plan).delete(remove_plan))
        .route("/plans/{id}/{action}", post(plan_action))
        .route("/jobs", get(list_jobs))
        .route("/jobs/{id}", get(get_job))
        .route("/jobs/{id}/{action}", post(job_action))
        .route("/infrastructure", get(infrastructure))
        .route("/infrastructure/faults", post(faults))
        .route("/infrastructure/networks/{name}", post(set_network_isolation))
        .route("/alerts", get(list_alerts))
        .route("/alerts/{id}/acknowledge", post(acknowledge_alert))
        .route("/webhooks", get(list_webhooks).post(add_webhook))
        .route("/webhooks/{id}", axum::routing::delete(remove_webhook))
        .route("/webhooks/{id}/deliveries", get(webhook_deliveries))
        .route("/drills", get(list_drills))
        .route("/drills/{id}", get(get_drill))
        .route("/agents", get(list_agents).post(enroll_agent))
        .route("/agents/{id}/revoke", post(revoke_agent))
        .route("/agents/{id}/rate-cap", post(set_rate_cap))
        .route("/connections", get(list_connections).post(add_connection))
        .route("/connections/{id}", get(get_connection).delete(remove_connection))
        .route("/connections/{id}/refresh", post(refresh_connection))
        .with_state(service)
        .layer(Extension(accounts))
        .layer(Extension(plane))
}

async fn list_accounts(
    State(s): State<Svc>,
    Extension(user): Extension<User>,
    Extension(accounts): Extension<Accounts>,
) -> Result<Json<Value>, ApiError> {
    let actor = Actor { user: &user, accounts: &accounts, service: &s };
    Ok(Json(json!({"accounts": actor.accounts().await?})))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NewAccountBody {
    name: String,
    role: Role,
    /// Generated (and returned once) when absent.
    password: Option<String>,
}

/// Creates an account (Administrator); a generated password is in the answer, once.
async fn create_account(
    State(s): State<Svc>,
    Extension(user): Extension<User>,
    Extension(accounts): Extension<Accounts>,
    body: Bytes,
) -> Result<Response, ApiError> {
    let b: NewAccountBody = body_into(json_body(&body)?)?;
    let actor = Actor { user: &user, accounts: &accounts, service: &s };
    let (created, password) = actor.create_account(&b.name, b.role, b.password.as_deref()).await?;
    let mut answer = json!({"account": {"name": created.name, "role": created.role}});
    if let Some(p) = password {
        answer["password"] = json!(p);
    }
    Ok((StatusCode::CREATED, Json(answer)).into_response())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RoleBody {
    role: Role,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NoBody {}

/// An action that takes no body: none, or `{}`; anything else is refused rather than ignored.
fn no_body(body: &Bytes) -> Result<(), ApiError> {
    if !body.iter().all(u8::is_ascii_whitespace) {
        let _: NoBody = body_into(json_body(body)?)?;
    }
    Ok(())
}

/// `role` (body {role}), `disable`, `enable` or `revoke` an account (Administrator).
async fn account_action(
    State(s): State<Svc>,
    Extension(user): Extension<User>,
    Extension(accounts): Extension<Accounts>,
    Path((name, action)): Path<(String, String)>,
    body: Bytes,
) -> Result<Json<Value>, ApiError> {
    let actor = Actor { user: &user, accounts: &accounts, service: &s };
    let v = if body.iter().all(u8::is_ascii_whitespace) { json!({}) } else { json_body(&body)? };
    let answer = match action.as_str() {
        "role" => {
            let b: RoleBody = body_into(v)?;
            let u = actor.set_account_role(&name, b.role).await?;
            json!({"account": {"name": u.name, "role": u.role}})
        }
        "disable" | "revoke" => {
            let _: NoBody = body_into(v)?;
            let (sessions, tokens) = if action == "disable" {
                actor.disable_account(&name).await?
            } else {
                actor.revoke_account(&name).await?
            };
            json!({"account": name, "sessions_ended": sessions, "tokens_deleted": tokens})
        }
        "enable" => {
            let _: NoBody = body_into(v)?;
            actor.enable_account(&name).await?;
            json!({"account": name, "enabled": true})
        }
        other => {
            return Err(ApiError::NotFound(format!("no account action {other:?}; use role, disable, enable or revoke")))
        }
    };
    Ok(Json(answer))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PasswordBody {
    current_password: String,
    new_password: String,
}

/// Changes the caller's own password; its other browser sessions end (the one making the request stays).
async fn change_password(
    State(s): State<Svc>,
    Extension(user): Extension<User>,
    Extension(accounts): Extension<Accounts>,
    session: Option<Extension<SessionToken>>,
    body: Bytes,
) -> Result<Json<Value>, ApiError> {
    let b: PasswordBody = body_into(json_body(&body)?)?;
    let actor = Actor { user: &user, accounts: &accounts, service: &s };
    let keep = session.as_ref().map(|Extension(t)| t.0.as_str());
    let ended = actor.change_own_password(&b.current_password, &b.new_password, keep).await?;
    Ok(Json(json!({"account": user.name, "sessions_ended": ended})))
}

fn json_body(body: &Bytes) -> Result<Value, ApiError> {
    serde_json::from_slice(body).map_err(|e| ApiError::BadRequest(format!("the body is not JSON: {e}")))
}

async fn list_agents(Extension(plane): Extension<AgentPlane>, State(s): State<Svc>) -> Result<Json<Value>, ApiError> {
    let agents = plane.agents.list((s.clock)()).await?;
    Ok(Json(json!({"agents": agents, "ca_fingerprint": plane.ca.fingerprint()})))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct EnrollBody {
    name: String,
    role: AgentRole,
    /// The role's usual site when absent.
    site: Option<SiteKind>,
}

/// Enrolls an agent (Administrator): the answer carries the one-time token and the command that starts the agent
/// on its machine, with the portal's address as this request reached it.
async fn enroll_agent(
    State(s): State<Svc>,
    Extension(user): Extension<User>,
    Extension(accounts): Extension<Accounts>,
    Extension(plane): Extension<AgentPlane>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    let v: Value = json_body(&body)?;
    let b: EnrollBody = body_into(v)?;
    let actor = Actor { user: &user, accounts: &accounts, service: &s };
    let e = actor.enroll_agent(&plane.agents, &b.name, b.role, b.site).await?;
    let fp = plane.ca.fingerprint();
    let command = orchestrator::agents::start_command(&e, &plane.endpoint_for(&headers), &fp);
    Ok((
        StatusCode::CREATED,
        Json(json!({"agent": e.agent, "token": e.token, "ca_fingerprint": fp, "command": command})),
    )
        .into_response())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RateCapBody {
    /// Bytes per second; null lifts the cap.
    max_bytes_per_s: Option<u64>,
}

/// Caps the bytes per second an agent sends on its replication links, or lifts the cap (Administrator).
async fn set_rate_cap(
    State(s): State<Svc>,
    Extension(user): Extension<User>,
    Extension(accounts): Extension<Accounts>,
    Extension(plane): Extension<AgentPlane>,
    Path(id): Path<String>,
    body: Bytes,
) -> Result<Json<Value>, ApiError> {
    let v: Value = json_body(&body)?;
    if v.get("max_bytes_per_s").is_none() {
        return Err(ApiError::BadRequest("body: send max_bytes_per_s (a number, or null to lift the cap)".into()));
    }
    let b: RateCapBody = body_into(v)?;
    let actor = Actor { user: &user, accounts: &accounts, service: &s };
    let agent = actor.set_agent_rate_cap(&plane.agents, &id, b.max_bytes_per_s).await?;
    Ok(Json(json!({"agent": agent})))
}

/// Revokes an agent by id or name (Administrator).
async fn revoke_agent(
    State(s): State<Svc>,
    Extension(user): Extension<User>,
    Extension(accounts): Extension<Accounts>,
    Extension(plane): Extension<AgentPlane>,
    Path(id): Path<String>,
    body: Bytes,
) -> Result<Json<Value>, ApiError> {
    no_body(&body)?;
    let actor = Actor { user: &user, accounts: &accounts, service: &s };
    let revoked = actor.revoke_agent(&plane.agents, &id).await?;
    Ok(Json(json!({"agent": revoked})))
}

async fn list_connections(State(s): State<Svc>) -> Result<Json<Value>, ApiError> {
    Ok(Json(json!({"connections": s.connections.list().await?})))
}

async fn get_connection(State(s): State<Svc>, Path(id): Path<String>) -> Result<Json<Value>, ApiError> {
    Ok(Json(json!({"connection": s.connections.get(&id).await?})))
}

/// Adds a vCenter or a storage account (Administrator): checked against its API first; 422 says why it could not
/// be made (unreachable, credentials, thumbprint, SAS), and the answer never carries the credential.
async fn add_connection(
    State(s): State<Svc>,
    Extension(user): Extension<User>,
    Extension(accounts): Extension<Accounts>,
    body: Bytes,
) -> Result<Response, ApiError> {
    let v: Value = json_body(&body)?;
    match v.get("kind").and_then(Value::as_str) {
        Some("vcenter" | "storage-account" | "azure-subscription") => {}
        _ => {
            return Err(ApiError::BadRequest(
                "body: kind must be \"vcenter\", \"storage-account\" or \"azure-subscription\"".into(),
            ))
        }
    }
    let new: NewConnection = body_into(v)?;
    let actor = Actor { user: &user, accounts: &accounts, service: &s };
    let c = actor.add_connection(&s.connections, new).await?;
    Ok((StatusCode::CREATED, Json(json!({"connection": c}))).into_response())
}

/// Checks a connection again (Administrator); a failed check is in the answer's `last_error`, not an error.
async fn refresh_connection(
    State(s): State<Svc>,
    Extension(user): Extension<User>,
    Extension(accounts): Extension<Accounts>,
    Path(id): Path<String>,
    body: Bytes,
) -> Result<Json<Value>, ApiError> {
    no_body(&body)?;
    let actor = Actor { user: &user, accounts: &accounts, service: &s };
    Ok(Json(json!({"connection": actor.refresh_connection(&s.connections, &id).await?})))
}

async fn remove_connection(
    State(s): State<Svc>,
    Extension(user): Extension<User>,
    Extension(accounts): Extension<Accounts>,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let actor = Actor { user: &user, accounts: &accounts, service: &s };
    Ok(Json(json!({"connection": actor.remove_connection(&s.connections, &id).await?})))
}

async fn me(Extension(user): Extension<User>) -> Json<Value> {
    Json(json!({"name": user.name, "role": user.role}))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct AuditQuery {
    user: Option<String>,
    target: Option<String>,
    #[serde(default)]
    offset: i64,
}

async fn audit(Extension(acc): Extension<Accounts>, Params(q): Params<AuditQuery>) -> Result<Json<Value>, ApiError> {
    let (entries, total) = acc
        .audit_log(q.user.as_deref(), q.target.as_deref(), 200, q.offset.max(0))
        .await
        .map_err(|e| ApiError::Internal(e.to_string()))?;
    Ok(Json(json!({"entries": entries, "total": total})))
}

type ItemAndOperations = (orchestrator::domain::ReplicatedItem, Vec<(Operation, Vec<orchestrator::rules::Refusal>)>);

/// An item as the API answers it: the item, its latest point, what it allows now and why the rest is refused.
/// Serialised straight from the core's types (no JSON tree in between: 5 000 of them are 13 MiB).
#[derive(serde::Serialize)]
struct ItemView<'a> {
    item: &'a orchestrator::domain::ReplicatedItem,
    latest_recovery_point: Option<&'a orchestrator::domain::RecoveryPoint>,
    allowed_operations: Vec<Operation>,
    refused_operations: Vec<RefusedOperation<'a>>,
    /// What needs a person, if anything, and what clears it (the portal's status and banner).
    attention: Option<orchestrator::attention::Attention>,
}

#[derive(serde::Serialize)]
struct RefusedOperation<'a> {
    operation: Operation,
    refusals: &'a [orchestrator::rules::Refusal],
}

impl<'a> ItemView<'a> {
    fn of((item, ops): &'a ItemAndOperations, rpo_breached: &HashSet<String>) -> ItemView<'a> {
        ItemView {
            attention: orchestrator::attention::attention(item, ops, rpo_breached.contains(&item.id)),
            item,
            latest_recovery_point: item.recovery_points.iter().max_by_key(|p| p.time),
            allowed_operations: ops.iter().filter(|(_, r)| r.is_empty()).map(|(op, _)| *op).collect(),
            refused_operations: ops
                .iter()
                .filter(|(_, r)| !r.is_empty())
                .map(|(operation, refusals)| RefusedOperation { operation: *operation, refusals })
                .collect(),
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ItemQuery {
    /// Protection state, e.g. `protected-to-primary`; an unknown one is a 400 listing the states.
    state: Option<orchestrator::lifecycle::State>,
    health: Option<orchestrator::domain::Health>,
    /// Items that allow this operation now, e.g. `failover`.
    allows: Option<Operation>,
    /// Substring of the item's name.
    q: Option<String>,
    /// The first matching item to answer (0 by default).
    #[serde(default)]
    offset: usize,
    /// Items per answer, 1 to [`ITEMS_MAX_LIMIT`] ([`ITEMS_DEFAULT_LIMIT`] by default); `next` names the rest.
    limit: Option<usize>,
}

/// A page of the items list: enough for a screen or a script's batch, small enough to answer in milliseconds on a
/// vault of thousands (each item carries every refused operation's explanation).
const ITEMS_DEFAULT_LIMIT: usize = 500;
const ITEMS_MAX_LIMIT: usize = 5000;

impl ItemQuery {
    fn keeps(&self, item: &orchestrator::domain::ReplicatedItem) -> bool {
        self.state.is_none_or(|s| item.state == s)
            && self.health.is_none_or(|h| item.health == h)
            && self.q.as_ref().is_none_or(|q| item.name.contains(q.as_str()))
    }

    fn limit(&self) -> Result<usize, ApiError> {
        match self.limit {
            None => Ok(ITEMS_DEFAULT_LIMIT),
            Some(n @ 1..=ITEMS_MAX_LIMIT) => Ok(n),
            Some(n) => Err(ApiError::BadRequest(format!("limit: {n} is out of range; give 1 to {ITEMS_MAX_LIMIT}"))),
        }
    }

    /// The same query from `offset` on.
    fn at(&self, offset: usize, limit: usize) -> String {
        use orchestrator::domain::wire_name;
        let mut pairs: Vec<(&str, String)> = Vec::new();
        if let Some(s) = &self.state {
            pairs.push(("state", wire_name(s)));
        }
        if let Some(h) = &self.health {
            pairs.push(("health", wire_name(h)));
        }
        if let Some(a) = &self.allows {
            pairs.push(("allows", wire_name(a)));
        }
        if let Some(t) = &self.q {
            pairs.push(("q", t.clone()));
        }
        pairs.push(("offset", offset.to_string()));
        pairs.push(("limit", limit.to_string()));
        let query: Vec<String> = pairs.iter().map(|(k, v)| format!("{k}={}", percent_encoded(v))).collect();
        format!("/api/v1/items?{}", query.join("&"))
    }
}

/// A query value with everything but the unreserved characters percent-encoded.
fn percent_encoded(v: &str) -> String {
    let mut out = String::with_capacity(v.len());
    for b in v.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[derive(serde::Serialize)]
struct ItemList<'a> {
    items: Vec<ItemView<'a>>,
    /// How many items match the filters in all.
    total: usize,
    offset: usize,
    limit: usize,
    /// The next page's address, while there is one.
    next: Option<String>,
}

async fn list_items(State(s): State<Svc>, Params(f): Params<ItemQuery>) -> Result<Response, ApiError> {
    let limit = f.limit()?;
    // One read of the estate, the active jobs and the agents for the whole list (one per item was quadratic); the
    // refusals only for the page.
    let (page, total) = s.items_page(|i| f.keeps(i), f.allows, f.offset, limit).await?;
    let end = f.offset.saturating_add(page.len());
    let breached = rpo_breached(&s).await?;
    let list = ItemList {
        items: page.iter().map(|i| ItemView::of(i, &breached)).collect(),
        total,
        offset: f.offset,
        limit,
        next: (end < total).then(|| f.at(end, limit)),
    };
    Ok(Json(list).into_response())
}

async fn get_item(State(s): State<Svc>, Path(id): Path<String>) -> Result<Response, ApiError> {
    let found = s.item(&id).await?;
    Ok(Json(ItemView::of(&found, &rpo_breached(&s).await?)).into_response())
}

/// The items whose RPO alert is open.
async fn rpo_breached(s: &Svc) -> Result<HashSet<String>, ApiError> {
    s.alerts()
        .open_subjects(orchestrator::alerts::AlertKind::RpoBreached)
        .await
        .map_err(|e| ApiError::Internal(e.to_string()))
}

async fn item_points(State(s): State<Svc>, Path(id): Path<String>) -> Result<Json<Value>, ApiError> {
    let (item, _) = s.item(&id).await?;
    Ok(Json(json!({ "points": item.recovery_points, "choices": orchestrator::points::options(&item) })))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ActionQuery {
    #[serde(default)]
    dry_run: bool,
}

/// The item actions by their wire names, in the lifecycle's order.
fn item_actions() -> Vec<String> {
    orchestrator::lifecycle::OPERATIONS.iter().map(orchestrator::domain::wire_name).collect()
}

fn parse_operation(action: &str) -> Result<Operation, ApiError> {
    orchestrator::lifecycle::OPERATIONS
        .into_iter()
        .find(|op| orchestrator::domain::wire_name(op) == action)
        .ok_or_else(|| ApiError::NotFound(format!("no action {action:?}; use one of {}", item_actions().join(", "))))
}

#[allow(clippy::too_many_arguments)]
async fn item_action(
    State(s): State<Svc>,
    Extension(user): Extension<User>,
    Extension(accounts): Extension<Accounts>,
    Path((id, action)): Path<(String, String)>,
    Params(q): Params<ActionQuery>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    let op = parse_operation(&action)?;
    let mut reason = None;
    let req: Request = if body.iter().all(u8::is_ascii_whitespace) {
        Request::default()
    } else {
        let mut v: Value =
            serde_json::from_slice(&body).map_err(|e| ApiError::BadRequest(format!("the body is not JSON: {e}")))?;
        // The operator's reason goes to the audit log, not to the core.
        if let Some(r) = v.as_object_mut().and_then(|o| o.remove("reason")) {
            if !r.is_null() {
                reason =
                    Some(r.as_str().map(str::to_owned).ok_or(ApiError::Unprocessable("reason must be text".into()))?);
            }
        }
        body_into(v)?
    };
    // Choosing a split-brain's winner needs the reason in the core too (SB-2): it is kept with the loser's blocks.
    let req = if op.resolves_split_brain() { Request { reason: reason.clone(), ..req } } else { req };
    if q.dry_run {
        let plan = s.dry_run(&id, op, &req).await?;
        return Ok(Json(plan).into_response());
    }
    // Without a key every POST is a new request; with one, a retry returns the same job.
    let key = match headers.get("idempotency-key") {
        Some(v) => v.to_str().map_err(|_| ApiError::BadRequest("Idempotency-Key must be text".into()))?.to_owned(),
        // No key: a fresh one, so two requests at the same instant never share one.
        None => format!("auto-{}", orchestrator::jobs::new_id()),
    };
    let actor = Actor { user: &user, accounts: &accounts, service: &s };
    let job = actor.item_action(&id, op, &req, &key, reason.as_deref()).await?;
    let location = format!("/api/v1/jobs/{}", job.id);
    Ok((StatusCode::ACCEPTED, [("location", location.clone())], Json(json!({"job_id": job.id, "location": location})))
        .into_response())
}

async fn list_plans(State(s): State<Svc>) -> Result<Json<Value>, ApiError> {
    Ok(Json(json!({ "plans": s.doc().await?.plans })))
}

async fn get_plan(State(s): State<Svc>, Path(id): Path<String>) -> Result<Json<Value>, ApiError> {
    let doc = s.doc().await?;
    let plan =
        doc.plans.into_iter().find(|p| p.id == id).ok_or_else(|| {
            ApiError::NotFound(format!("There is no recovery plan {id}; GET /api/v1/plans lists them."))
        })?;
    Ok(Json(json!({ "plan": plan })))
}

/// A new recovery plan (Operator): `{"name", "groups": [["item", …], …], "protection"?}`, checked whole (422 with
/// every problem).
async fn create_plan(
    State(s): State<Svc>,
    Extension(user): Extension<User>,
    Extension(accounts): Extension<Accounts>,
    body: Bytes,
) -> Result<Response, ApiError> {
    let spec: orchestrator::plans::PlanSpec = body_into(json_body(&body)?)?;
    let actor = Actor { user: &user, accounts: &accounts, service: &s };
    let plan = actor.edit_plan("plan-create", spec.name.trim(), spec.words(), s.save_plan(None, spec.clone())).await?;
    Ok((StatusCode::CREATED, Json(json!({ "plan": plan }))).into_response())
}

/// Replaces a plan's name, groups and protection settings (Operator); refused while one of its jobs runs.
async fn update_plan(
    State(s): State<Svc>,
    Extension(user): Extension<User>,
    Extension(accounts): Extension<Accounts>,
    Path(id): Path<String>,
    body: Bytes,
) -> Result<Json<Value>, ApiError> {
    let spec: orchestrator::plans::PlanSpec = body_into(json_body(&body)?)?;
    let actor = Actor { user: &user, accounts: &accounts, service: &s };
    let plan = actor.edit_plan("plan-change", &id, spec.words(), s.save_plan(Some(&id), spec.clone())).await?;
    Ok(Json(json!({ "plan": plan })))
}

async fn remove_plan(
    State(s): State<Svc>,
    Extension(user): Extension<User>,
    Extension(accounts): Extension<Accounts>,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let actor = Actor { user: &user, accounts: &accounts, service: &s };
    actor.edit_plan("plan-remove", &id, format!("plan {id} removed"), s.remove_plan(&id)).await?;
    Ok(Json(json!({ "removed": id })))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PlanBody {
    point: Option<orchestrator::points::PointChoice>,
    /// Test failover: the isolated network.
    network: Option<String>,
    /// Test failover cleanup: the notes for each drill's report.
    notes: Option<String>,
    /// Reprotect: the process server, the master targets (each item takes the first that runs its operating
    /// system), a datastore for items whose original VM is gone, and protection settings for every item.
    process_server: Option<String>,
    master_targets: Option<Vec<String>>,
    datastore: Option<String>,
    retention_min: Option<u32>,
    app_consistent_every_min: Option<u32>,
    rpo_threshold_min: Option<u32>,
    reason: Option<String>,
}

/// A plan-level operation: `reprotect`, `failover`, `commit`, `cancel-failover`, `test-failover` or
/// `cleanup-test-failover`; `?dry_run=true` previews it.
async fn plan_action(
    State(s): State<Svc>,
    Extension(user): Extension<User>,
    Extension(accounts): Extension<Accounts>,
    Path((id, action)): Path<(String, String)>,
    Params(q): Params<ActionQuery>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    let op = match action.as_str() {
        "reprotect" => Operation::Reprotect,
        "failover" => Operation::Failover,
        "commit" => Operation::Commit,
        "cancel-failover" => Operation::CancelFailover,
        "test-failover" => Operation::TestFailover,
        "cleanup-test-failover" => Operation::CleanupTestFailover,
        other => {
            return Err(ApiError::NotFound(format!(
                "no plan action {other:?}; use reprotect, failover, commit, cancel-failover, test-failover or \
                 cleanup-test-failover"
            )))
        }
    };
    let b: PlanBody =
        if body.iter().all(u8::is_ascii_whitespace) { body_into(json!({}))? } else { body_into(json_body(&body)?)? };
    if op == Operation::Failover && b.point.is_none() {
        return Err(ApiError::BadRequest(
            "body: send point, e.g. {\"point\": {\"type\": \"latest-processed\"}}".into(),
        ));
    }
    let reprotect = orchestrator::service::PlanReprotect {
        process_server: b.process_server,
        master_targets: b.master_targets.unwrap_or_default(),
        datastore: b.datastore,
        retention_min: b.retention_min,
        app_consistent_every_min: b.app_consistent_every_min,
        rpo_threshold_min: b.rpo_threshold_min,
    };
    // A field the action does not take is refused, not ignored.
    let given = [
        ("point", b.point.is_some(), matches!(op, Operation::Failover | Operation::TestFailover)),
        ("network", b.network.is_some(), op == Operation::TestFailover),
        ("notes", b.notes.is_some(), op == Operation::CleanupTestFailover),
        (
            "process_server, master_targets, datastore and the settings",
            !reprotect.is_empty(),
            op == Operation::Reprotect,
        ),
    ];
    if let Some((field, _, _)) = given.iter().find(|(_, sent, takes)| *sent && !takes) {
        return Err(ApiError::BadRequest(format!("body: {field}: not taken by the plan's {action}; leave it out")));
    }
    let what = orchestrator::service::PlanAction {
        choice: b.point.unwrap_or_default(),
        network: b.network,
        notes: b.notes,
        reprotect,
    };
    if q.dry_run {
        let preview = s.plan_preview(&id, op, &what).await?;
        return Ok(Json(preview).into_response());
    }
    let key = match headers.get("idempotency-key") {
        Some(v) => v.to_str().map_err(|_| ApiError::BadRequest("Idempotency-Key must be text".into()))?.to_owned(),
        None => format!("auto-{}", orchestrator::jobs::new_id()),
    };
    let actor = Actor { user: &user, accounts: &accounts, service: &s };
    let job = actor.plan_action(&id, op, what, &key, b.reason.as_deref()).await?;
    let location = format!("/api/v1/jobs/{}", job.id);
    Ok((StatusCode::ACCEPTED, [("location", location.clone())], Json(json!({"job_id": job.id, "location": location})))
        .into_response())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct JobQuery {
    item: Option<String>,
    state: Option<String>,
    kind: Option<String>,
}

async fn list_jobs(State(s): State<Svc>, Params(q): Params<JobQuery>) -> Result<Json<Value>, ApiError> {
    let jobs: Vec<_> = s
        .jobs
        .list(500)
        .await?
        .into_iter()
        .filter(|j| q.item.as_ref().is_none_or(|i| j.item_id.as_ref() == Some(i)))
        .filter(|j| q.state.as_ref().is_none_or(|st| j.state.as_str() == st))
        .filter(|j| q.kind.as_ref().is_none_or(|k| &j.kind == k))
        .map(|j| json!({"job": j, "allowed_actions": j.allowed_actions()}))
        .collect();
    Ok(Json(json!({ "jobs": jobs })))
}

async fn get_job(State(s): State<Svc>, Path(id): Path<String>) -> Result<Json<Value>, ApiError> {
    let j = s.jobs.get(&id).await?;
    let actions = j.allowed_actions();
    Ok(Json(json!({"job": j, "allowed_actions": actions})))
}

async fn job_action(
    State(s): State<Svc>,
    Extension(user): Extension<User>,
    Extension(accounts): Extension<Accounts>,
    Path((id, action)): Path<(String, String)>,
    body: Bytes,
) -> Result<Json<Value>, ApiError> {
    no_body(&body)?;
    let action: orchestrator::jobs::JobAction = serde_json::from_value(Value::String(action.clone()))
        .map_err(|_| ApiError::NotFound(format!("no job action {action:?}; use cancel, restart or resume")))?;
    let actor = Actor { user: &user, accounts: &accounts, service: &s };
    let st = actor.job_action(&id, action, None).await?;
    Ok(Json(json!({"job_id": id, "state": st})))
}

async fn infrastructure(State(s): State<Svc>) -> Result<Json<Value>, ApiError> {
    let doc = s.doc().await?;
    Ok(Json(json!({"inventory": doc.inventory, "plans": doc.plans, "faults": doc.faults})))
}

async fn faults(
    State(s): State<Svc>,
    Extension(user): Extension<User>,
    Extension(accounts): Extension<Accounts>,
    body: Bytes,
) -> Result<Json<Value>, ApiError> {
    let knobs: orchestrator::estate::FaultKnobs =
        serde_json::from_slice(&body).map_err(|e| ApiError::Unprocessable(format!("invalid fault knobs: {e}")))?;
    let actor = Actor { user: &user, accounts: &accounts, service: &s };
    let detail = serde_json::to_string(&knobs).unwrap_or_default();
    actor.administer("faults", "estate", detail, s.apply_faults(&knobs)).await?;
    infrastructure(State(s)).await
}

/// The item's protection settings as chosen (`null`: the vault's default) and as they apply.
fn protection_view(p: &orchestrator::domain::ProtectionSettings, vault_app_ms: u64) -> Value {
    json!({
        "chosen": p,
        "effective": {
            "retention_min": p.retention_ms() / 60_000,
            "app_consistent_every_min": p.app_consistent_every_ms(vault_app_ms) / 60_000,
            "rpo_threshold_min": p.rpo_threshold_ms() / 60_000,
        }
    })
}

async fn get_protection(State(s): State<Svc>, Path(id): Path<String>) -> Result<Json<Value>, ApiError> {
    let (item, _) = s.item(&id).await?;
    let policy = s.estate.policy().await.map_err(ServiceError::from)?;
    Ok(Json(protection_view(&item.protection, policy.app_consistent_every_ms)))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ProtectionBody {
    retention_min: Option<u32>,
    app_consistent_every_min: Option<u32>,
    rpo_threshold_min: Option<u32>,
    reason: Option<String>,
}

/// Replaces the item's protection settings: a field absent or null goes back to the vault's default.
async fn put_protection(
    State(s): State<Svc>,
    Extension(user): Extension<User>,
    Extension(accounts): Extension<Accounts>,
    Path(id): Path<String>,
    body: Bytes,
) -> Result<Json<Value>, ApiError> {
    let v: Value = json_body(&body)?;
    let b: ProtectionBody = body_into(v)?;
    let settings = orchestrator::domain::ProtectionSettings {
        retention_min: b.retention_min,
        app_consistent_every_min: b.app_consistent_every_min,
        rpo_threshold_min: b.rpo_threshold_min,
    };
    let actor = Actor { user: &user, accounts: &accounts, service: &s };
    let set = actor.set_protection(&id, settings, b.reason.as_deref()).await?;
    let policy = s.estate.policy().await.map_err(ServiceError::from)?;
    Ok(Json(protection_view(&set, policy.app_consistent_every_ms)))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NetworkIsolation {
    isolated: bool,
}

/// Marks a network of the primary site isolated (drills may use it) or production (Administrator).
async fn set_network_isolation(
    State(s): State<Svc>,
    Extension(user): Extension<User>,
    Extension(accounts): Extension<Accounts>,
    Path(name): Path<String>,
    body: Bytes,
) -> Result<Json<Value>, ApiError> {
    let v: Value = json_body(&body)?;
    let NetworkIsolation { isolated } = body_into(v)?;
    let actor = Actor { user: &user, accounts: &accounts, service: &s };
    let network = actor.set_network_isolation(&name, isolated).await?;
    Ok(Json(json!({ "network": network })))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct AlertQuery {
    /// `open` (the default: open and acknowledged) or `all`.
    state: Option<String>,
    limit: Option<u32>,
}

fn limit_of(limit: Option<u32>) -> Result<u32, ApiError> {
    match limit {
        None => Ok(100),
        Some(n @ 1..=1000) => Ok(n),
        Some(n) => Err(ApiError::BadRequest(format!("limit {n} is out of range; use 1 to 1000"))),
    }
}

async fn list_alerts(State(s): State<Svc>, Params(q): Params<AlertQuery>) -> Result<Json<Value>, ApiError> {
    let all = match q.state.as_deref() {
        None | Some("open") => false,
        Some("all") => true,
        Some(other) => return Err(ApiError::BadRequest(format!("state {other:?} is unknown; use open or all"))),
    };
    let alerts = s.alerts().list(all, limit_of(q.limit)?).await.map_err(|e| db_error(&e, e.to_string()))?;
    Ok(Json(json!({ "alerts": alerts })))
}

async fn acknowledge_alert(
    State(s): State<Svc>,
    Extension(user): Extension<User>,
    Extension(accounts): Extension<Accounts>,
    Path(id): Path<String>,
    body: Bytes,
) -> Result<Json<Value>, ApiError> {
    no_body(&body)?;
    let actor = Actor { user: &user, accounts: &accounts, service: &s };
    let alert = actor.acknowledge_alert(&id).await?;
    Ok(Json(json!({ "alert": alert })))
}

async fn list_webhooks(State(s): State<Svc>, Extension(user): Extension<User>) -> Result<Json<Value>, ApiError> {
    user.role.may(orchestrator::access::Permission::Administer).map_err(|d| ApiError::Forbidden(d.to_string()))?;
    let hooks = s.webhooks().list().await.map_err(ServiceError::from)?;
    Ok(Json(json!({ "webhooks": hooks })))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NewWebhook {
    url: String,
    secret: Option<String>,
    events: Option<Vec<orchestrator::webhooks::EventKind>>,
}

async fn add_webhook(
    State(s): State<Svc>,
    Extension(user): Extension<User>,
    Extension(accounts): Extension<Accounts>,
    body: Bytes,
) -> Result<Response, ApiError> {
    let v: Value = json_body(&body)?;
    let b: NewWebhook = body_into(v)?;
    let events = b
        .events
        .unwrap_or_else(|| vec![orchestrator::webhooks::EventKind::Alert, orchestrator::webhooks::EventKind::Job]);
    let actor = Actor { user: &user, accounts: &accounts, service: &s };
    let (hook, secret) = actor.add_webhook(&b.url, b.secret.as_deref(), &events).await?;
    // The secret is shown this once: the receiver needs it to check signatures.
    Ok((StatusCode::CREATED, Json(json!({ "webhook": hook, "secret": secret }))).into_response())
}

async fn remove_webhook(
    State(s): State<Svc>,
    Extension(user): Extension<User>,
    Extension(accounts): Extension<Accounts>,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let actor = Actor { user: &user, accounts: &accounts, service: &s };
    actor.remove_webhook(&id).await?;
    Ok(Json(json!({ "removed": id })))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct DeliveryQuery {
    limit: Option<u32>,
}

async fn webhook_deliveries(
    State(s): State<Svc>,
    Extension(user): Extension<User>,
    Path(id): Path<String>,
    Params(q): Params<DeliveryQuery>,
) -> Result<Json<Value>, ApiError> {
    user.role.may(orchestrator::access::Permission::Administer).map_err(|d| ApiError::Forbidden(d.to_string()))?;
    let hooks = s.webhooks();
    if !hooks.list().await.map_err(ServiceError::from)?.iter().any(|h| h.id == id) {
        return Err(ApiError::NotFound(format!("no webhook {id}; GET /api/v1/webhooks lists them")));
    }
    let deliveries = hooks.deliveries(&id, limit_of(q.limit)?).await.map_err(ServiceError::from)?;
    Ok(Json(json!({ "deliveries": deliveries })))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct DrillQuery {
    item: Option<String>,
    limit: Option<u32>,
}

async fn list_drills(State(s): State<Svc>, Params(q): Params<DrillQuery>) -> Result<Json<Value>, ApiError> {
    let limit = limit_of(q.limit)?;
    let drills = s.drills().list(q.item.as_deref(), limit).await.map_err(|e| db_error(&e, e.to_string()))?;
    Ok(Json(json!({ "drills": drills })))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ReportQuery {
    format: Option<String>,
}

/// A drill's report: JSON, or CSV to download (`?format=csv`).
async fn get_drill(
    State(s): State<Svc>,
    Path(id): Path<String>,
    Params(q): Params<ReportQuery>,
) -> Result<Response, ApiError> {
    let drill = s
        .drills()
        .get(&id)
        .await
        .map_err(|e| db_error(&e, e.to_string()))?
        .ok_or_else(|| ApiError::NotFound(format!("no drill {id}; GET /api/v1/drills lists them")))?;
    match q.format.as_deref() {
        None | Some("json") => Ok(Json(json!({ "drill": drill })).into_response()),
        Some("csv") => {
            let name = format!("attachment; filename=\"drill-{}-{}.csv\"", drill.item_name, drill.id);
            Ok((
                [
                    (axum::http::header::CONTENT_TYPE, "text/csv; charset=utf-8".to_owned()),
                    (axum::http::header::CONTENT_DISPOSITION, name),
                ],
                orchestrator::drills::report_csv(&drill),
            )
                .into_response())
        }
        Some(other) => Err(ApiError::BadRequest(format!("format {other:?} is unknown; use json or csv"))),
    }
}

async fn openapi() -> Json<Value> {
    Json(complete_openapi(openapi_paths()))
}

/// What every operation shares, added to the paths below so that none is forgotten: the path parameters its address
/// names (with the values an `{action}` takes there), a request body for each POST (an empty object where the
/// action takes none; unknown fields are refused), and the error answer for any status it does not list.
fn complete_openapi(mut doc: Value) -> Value {
    let text = |v: &str| json!({"type": "string", "description": v});
    let point = json!({"oneOf": [
        {"type": "object", "required": ["type"], "additionalProperties": false, "properties": {
            "type": {"type": "string", "enum": ["latest-processed", "latest", "latest-app-consistent"]}}},
        {"type": "object", "required": ["type", "id"], "additionalProperties": false, "properties": {
            "type": {"type": "string", "enum": ["specific"]}, "id": {"type": "string", "description": "The recovery point's id"}}},
        {"type": "object", "required": ["type", "id"], "additionalProperties": false, "properties": {
            "type": {"type": "string", "enum": ["kept-copy"]},
            "id": {"type": "string", "description": "The id of the job that resolved a split-brain: its kept blocks laid over the newest processed point (failover, change-recovery-point, test-failover; SB-3)"}}}]});
    let role = json!({"type": "string", "enum": ["reader", "drill-operator", "operator", "administrator"]});
    let thumbprint = json!({"type": "string", "description": "the certificate's SHA-1 or SHA-256 thumbprint, e.g. 2C:11:ED:…",
                            "pattern": "^$|^(([0-9A-Fa-f]{2}[: ]?){19}|([0-9A-Fa-f]{2}[: ]?){31})[0-9A-Fa-f]{2}$"});
    let connection_name = json!({"type": "string", "pattern": "^[A-Za-z0-9._-]([A-Za-z0-9._ -]{0,62}[A-Za-z0-9._-])?$", "description": "the connection's name"});
    let object = |props: Value, required: &[&str]| {
        // What a client may leave out it may also send as null (the server reads both as absent).
        let mut props = props;
        if let Some(p) = props.as_object_mut() {
            for (name, schema) in p.iter_mut() {
                if !required.contains(&name.as_str()) && schema.get("oneOf").is_none() {
                    schema["nullable"] = json!(true);
                    // OpenAPI 3.0: an enum must list null itself for `nullable` to admit it.
                    if let Some(values) = schema.get_mut("enum").and_then(Value::as_array_mut) {
                        values.push(Value::Null);
                    }
                }
            }
        }
        let mut o = json!({"type": "object", "additionalProperties": false, "properties": props});
        // OpenAPI 3.0's schema dialect wants `required` absent rather than empty.
        if !required.is_empty() {
            o["required"] = json!(required);
        }
        o
    };
    let body_of = |path: &str| -> Value {
        match path {
            "/api/v1/items/{id}/{action}" => object(
                json!({"master_target": text("reprotect: the master target"), "process_server": text("reprotect, reprotect-to-cloud: the process server"),
                       "datastore": text("reprotect at an alternate location: the datastore"), "point": point.clone(),
                       "network": text("test-failover: the isolated network the test VM joins"),
                       "retention_min": {"type": "integer", "minimum": 1, "maximum": 43200, "description": "reprotect, reprotect-to-cloud: minutes recovery points are kept (default 1440)"},
                       "app_consistent_every_min": {"type": "integer", "minimum": 1, "maximum": 720, "description": "reprotect, reprotect-to-cloud: minutes between app-consistent points (default: the vault's policy)"},
                       "rpo_threshold_min": {"type": "integer", "minimum": 1, "maximum": 1440, "description": "reprotect, reprotect-to-cloud: the RPO past which the item alerts (default 15)"},
                       "notes": {"type": "string", "maxLength": 4000, "description": "cleanup-test-failover: what the drill showed, for its report"},
                       "reason": text("Why, for the audit log; keep-cloud-copy and keep-on-premises-copy require it (SB-2) and keep it with the losing copy's blocks")}),
                &[],
            ),
            "/api/v1/plans/{id}/{action}" => object(
                json!({"point": point.clone(), "network": text("test-failover: the isolated network"),
                       "notes": {"type": "string", "maxLength": 4000, "description": "cleanup-test-failover: for each drill's report"},
                       "process_server": text("reprotect: the process server in Azure that sends every item's disks"),
                       "master_targets": {"type": "array", "items": {"type": "string"}, "description": "reprotect: master targets on-premises; each item takes the first that runs its operating system (R-W1)"},
                       "datastore": text("reprotect: for items whose original VM is gone, where the re-created VM's disks go"),
                       "retention_min": {"type": "integer", "minimum": 1, "maximum": 43200, "description": "reprotect: minutes every item's recovery points are kept"},
                       "app_consistent_every_min": {"type": "integer", "minimum": 1, "maximum": 720, "description": "reprotect: every item's app-consistent frequency"},
                       "rpo_threshold_min": {"type": "integer", "minimum": 1, "maximum": 1440, "description": "reprotect: every item's RPO threshold"},
                       "reason": text("Why, for the audit log")}),
                &[],
            ),
            "/api/v1/infrastructure/faults" => object(
                json!({"vcenter_connected": {"type": "boolean"}, "master_target_snapshots": {"type": "integer", "minimum": 0, "maximum": u32::MAX},
                       "register_agent": text("an item id"), "delete_original_vm": text("an item id"),
                       "agent_registration_delay_min": {"type": "integer", "minimum": 0, "maximum": u64::MAX}, "fill_datastore": text("a datastore of the local estate"), "free_datastore": text("a datastore of the local estate: half its capacity free again"),
                       "guest_bytes_per_tick": {"type": "integer", "minimum": 0, "maximum": u64::MAX}, "crash_consistent_every_ms": {"type": "integer", "minimum": 0, "maximum": u64::MAX},
                       "app_consistent_every_ms": {"type": "integer", "minimum": 0, "maximum": u64::MAX}, "replication_bytes_per_s": {"type": "integer", "minimum": 0, "maximum": u64::MAX}}),
                &[],
            ),
            "/api/v1/agents" => object(
                json!({"name": {"type": "string", "pattern": "^[a-z0-9][a-z0-9._-]{0,62}$", "description": "the agent's name"},
                       "role": {"type": "string", "enum": ["process-server", "master-target"]},
                       "site": {"type": "string", "enum": ["cloud", "on-premises"]}}),
                &["name", "role"],
            ),
            "/api/v1/agents/{id}/rate-cap" => object(
                json!({"max_bytes_per_s": {"type": "integer", "minimum": 65536, "maximum": u64::MAX, "nullable": true}}),
                &["max_bytes_per_s"],
            ),
            "/api/v1/connections" => {
                let storage = |secret: &str| {
                    let mut props = json!({"kind": {"type": "string", "enum": ["storage-account"]}, "name": connection_name.clone(),
                                           "url": {"type": "string", "pattern": "^https://[^/?#@ ]+", "description": "https://<account>.blob.core.windows.net"},
                                           "container": {"type": "string", "minLength": 1, "description": "the container of the cloud VM's disks"},
                                           "thumbprint": thumbprint.clone()});
                    props[secret] = json!({"type": "string", "minLength": 1, "description": "the account's key or a SAS token: exactly one"});
                    object(props, &["kind", "name", "url", "container", secret])
                };
                json!({"oneOf": [
                    object(json!({"kind": {"type": "string", "enum": ["vcenter"]}, "name": connection_name.clone(),
                                  "url": {"type": "string", "pattern": "^https://[^/?#@ ]+", "description": "https://vcenter.example"},
                                  "user": {"type": "string", "minLength": 1, "description": "a vCenter account"},
                                  "password": {"type": "string", "minLength": 1, "description": "its password"},
                                  "thumbprint": thumbprint.clone()}),
                           &["kind", "name", "url", "user", "password"]),
                    storage("account_key"),
                    storage("sas"),
                    object(json!({"kind": {"type": "string", "enum": ["azure-subscription"]}, "name": connection_name.clone(),
                                  "tenant": {"type": "string", "pattern": "^[A-Za-z0-9.-]{1,64}$", "description": "the directory (tenant) id"},
                                  "client_id": {"type": "string", "minLength": 1, "description": "the service principal's application (client) id"},
                                  "client_secret": {"type": "string", "minLength": 1, "description": "a client secret of that application"},
                                  "subscription": {"type": "string", "pattern": "^[A-Za-z0-9.-]{1,64}$", "description": "the subscription id of the cloud VMs"},
                                  "resource_group": {"type": "string", "pattern": "^[-\\w.()]{1,90}$", "description": "the resource group of the cloud VMs"},
                                  "management_url": {"type": "string", "pattern": "^https://[^/?#@ ]+", "nullable": true, "description": "https://management.azure.com unless another cloud's"},
                                  "authority_url": {"type": "string", "pattern": "^https://[^/?#@ ]+", "nullable": true, "description": "https://login.microsoftonline.com unless another cloud's"},
                                  "thumbprint": thumbprint.clone()}),
                           &["kind", "name", "tenant", "client_id", "client_secret", "subscription", "resource_group"])]})
            }
            "/api/v1/me/password" => object(
                json!({"current_password": text("your password now"), "new_password": text("at least 12 characters")}),
                &["current_password", "new_password"],
            ),
            "/api/v1/accounts" => object(
                json!({"name": {"type": "string", "pattern": "^[A-Za-z0-9._@-]{1,64}$", "description": "the account's name"},
                       "role": role.clone(), "password": {"type": "string", "minLength": 12, "description": "generated and answered once when absent"}}),
                &["name", "role"],
            ),
            "/api/v1/accounts/{name}/{action}" => object(json!({"role": role.clone()}), &[]),
            "/api/v1/infrastructure/networks/{name}" => object(json!({"isolated": {"type": "boolean"}}), &["isolated"]),
            _ => object(json!({}), &[]),
        }
    };
    let item_actions = item_actions();
    let actions = |path: &str| -> Option<Vec<&str>> {
        match path {
            "/api/v1/items/{id}/{action}" => Some(item_actions.iter().map(String::as_str).collect()),
            "/api/v1/jobs/{id}/{action}" => Some(vec!["cancel", "restart", "resume"]),
            "/api/v1/plans/{id}/{action}" => Some(vec![
                "reprotect",
                "failover",
                "commit",
                "cancel-failover",
                "test-failover",
                "cleanup-test-failover",
            ]),
            "/api/v1/accounts/{name}/{action}" => Some(vec!["role", "disable", "enable", "revoke"]),
            _ => None,
        }
    };
    let error = json!({"description": "An error: code and message; a refusal adds the rule and the recommended action",
                       "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}});
    let Some(paths) = doc.get_mut("paths").and_then(Value::as_object_mut) else { return doc };
    for (path, ops) in paths.iter_mut() {
        let names: Vec<&str> =
            path.split('/').filter_map(|seg| seg.strip_prefix('{').and_then(|x| x.strip_suffix('}'))).collect();
        let Some(ops) = ops.as_object_mut() else { continue };
        for (method, op) in ops.iter_mut() {
            let Some(op) = op.as_object_mut() else { continue };
            let params = op.entry("parameters").or_insert_with(|| json!([]));
            if let Some(list) = params.as_array_mut() {
                for name in &names {
                    let schema = match (*name, actions(path)) {
                        ("action", Some(values)) => json!({"type": "string", "enum": values}),
                        _ => json!({"type": "string"}),
                    };
                    list.push(json!({"name": name, "in": "path", "required": true, "schema": schema}));
                }
            }
            if method == "post" && !op.contains_key("requestBody") {
                // An item's action and the bodiless actions take an empty body; the others need theirs.
                let required = !(path == "/api/v1/items/{id}/{action}"
                    || path == "/api/v1/plans/{id}/{action}"
                    || body_of(path) == object(json!({}), &[]));
                op.insert(
                    "requestBody".into(),
                    json!({"required": required, "content": {"application/json": {"schema": body_of(path)}}}),
                );
            }
            if let Some(responses) = op.get_mut("responses").and_then(Value::as_object_mut) {
                responses.entry("401").or_insert_with(|| json!({"description": "No valid session or token"}));
                responses.entry("default").or_insert_with(|| error.clone());
            }
        }
    }
    doc
}

fn openapi_paths() -> Value {
    let err = json!({"$ref": "#/components/schemas/Error"});
    let plan_spec = json!({"type": "object", "additionalProperties": false, "required": ["name", "groups"], "properties": {
        "name": {"type": "string", "minLength": 1, "maxLength": 100},
        "groups": {"type": "array", "minItems": 1, "maxItems": 7, "items": {"type": "array", "minItems": 1, "items": {"type": "string"}}},
        "protection": {"type": "object", "additionalProperties": false, "description": "What the plan's reprotect gives each item unless it is given its own (minutes; absent: the vault's default)", "properties": {
            "retention_min": {"type": "integer", "minimum": 1, "maximum": 43200, "nullable": true},
            "app_consistent_every_min": {"type": "integer", "minimum": 1, "maximum": 720, "nullable": true},
            "rpo_threshold_min": {"type": "integer", "minimum": 1, "maximum": 1440, "nullable": true}}}}});
    let path = |summary: &str, method: &str| json!({ method: {"summary": summary, "responses": {"200": {"description": "OK"}, "404": {"description": "Unknown id", "content": {"application/json": {"schema": err}}}}}});
    json!({
        "openapi": "3.0.3",
        "info": {"title": "Homeward API", "version": "1"},
        "paths": {
            "/api/v1/items": {"get": {
                "summary": "List replicated items with their allowed operations and the reasons for refused ones, a page at a time: total counts every match, next names the following page",
                "parameters": [
                    {"name": "state", "in": "query", "schema": {"type": "string", "enum": [
                        "protected-to-cloud", "failover-to-cloud-in-progress", "failed-over-to-cloud", "committed-in-cloud",
                        "reprotect-in-progress", "protected-to-primary", "failback-in-progress", "failed-back-commit-pending",
                        "commit-in-progress", "committed-on-primary", "reprotect-to-cloud-in-progress", "split-brain"]}},
                    {"name": "health", "in": "query", "schema": {"type": "string", "enum": ["normal", "warning", "critical"]}},
                    {"name": "allows", "in": "query", "schema": {"type": "string", "enum": item_actions()}},
                    {"name": "q", "in": "query", "description": "Part of the item's name", "schema": {"type": "string"}},
                    {"name": "offset", "in": "query", "schema": {"type": "integer", "minimum": 0, "default": 0}},
                    {"name": "limit", "in": "query", "schema": {"type": "integer", "minimum": 1, "maximum": ITEMS_MAX_LIMIT, "default": ITEMS_DEFAULT_LIMIT}}
                ],
                "responses": {"200": {"description": "{items, total, offset, limit, next}"}, "400": {"description": "An unknown parameter or value, or a limit out of range", "content": {"application/json": {"schema": err}}}}
            }},
            "/api/v1/items/{id}": path("One replicated item", "get"),
            "/api/v1/items/{id}/points": path("Recovery points and the failover choices with their data-loss windows", "get"),
            "/api/v1/items/{id}/{action}": {"post": {
                "summary": "reprotect | failover | commit | cancel-failover | change-recovery-point | reprotect-to-cloud | failover-to-cloud | commit-in-cloud | test-failover (a drill: body {network, point?}; Drill operator or above) | cleanup-test-failover (body {notes?}); ?dry_run=true returns the plan; unknown parameters and body fields are refused (400)",
                "parameters": [{"name": "dry_run", "in": "query", "schema": {"type": "boolean"}}, {"name": "Idempotency-Key", "in": "header", "schema": {"type": "string"}}],
                "responses": {"202": {"description": "Job started; Location names it"}, "200": {"description": "Dry-run plan"}, "409": {"description": "Refused, with the rule ID", "content": {"application/json": {"schema": err}}}, "400": {"description": "Malformed"}, "422": {"description": "Invalid"}}
            }},
            "/api/v1/plans": {"get": {"summary": "Recovery plans with their ordered groups", "responses": {"200": {"description": "{plans}"}}},
                "post": {"summary": "Create a recovery plan (Operator): a name and up to 7 ordered groups of item ids; every item once, a replication group whole and in one group",
                    "requestBody": {"required": true, "content": {"application/json": {"schema": plan_spec.clone()}}},
                    "responses": {"201": {"description": "{plan}"}, "400": {"description": "Malformed or unknown field"}, "403": {"description": "Not an Operator"}, "422": {"description": "The plan does not hold: every problem, with what to enter", "content": {"application/json": {"schema": err}}}}}},
            "/api/v1/plans/{id}": {"get": {"summary": "One recovery plan", "responses": {"200": {"description": "{plan}"}, "404": {"description": "Unknown plan", "content": {"application/json": {"schema": err}}}}},
                "put": {"summary": "Replace a recovery plan's name and groups (Operator); refused while one of its jobs runs",
                    "requestBody": {"required": true, "content": {"application/json": {"schema": plan_spec}}},
                    "responses": {"200": {"description": "{plan}"}, "400": {"description": "Malformed or unknown field"}, "403": {"description": "Not an Operator"}, "404": {"description": "Unknown plan", "content": {"application/json": {"schema": err}}}, "422": {"description": "The plan does not hold, or one of its jobs runs", "content": {"application/json": {"schema": err}}}}},
                "delete": {"summary": "Remove a recovery plan (Operator); its items and jobs stay", "responses": {"200": {"description": "{removed}"}, "403": {"description": "Not an Operator"}, "404": {"description": "Unknown plan", "content": {"application/json": {"schema": err}}}, "422": {"description": "One of its jobs runs", "content": {"application/json": {"schema": err}}}}}},
            "/api/v1/plans/{id}/{action}": path("reprotect: reprotect every item to on-premises, a group's items side by side (body: {process_server, master_targets: [..], datastore?, retention_min?, app_consistent_every_min?, rpo_threshold_min?}) | failover: fail a recovery plan over, group by group (body: {point: {type: latest-processed | latest-app-consistent}}) | commit: commit every item, group by group | cancel-failover: cancel every item's failback, group by group | test-failover: a drill of every item, group by group, on an isolated network (body: {network, point?}; a Drill operator may) | cleanup-test-failover: remove the plan's test VMs (body: {notes?}); ?dry_run=true returns the preview: groups in order, each item's point, data loss, checks and tasks", "post"),
            "/api/v1/jobs": path("List jobs (filters: item, state, kind)", "get"),
            "/api/v1/jobs/{id}": path("A job with its tasks and allowed actions", "get"),
            "/api/v1/jobs/{id}/{action}": path("cancel | restart | resume", "post"),
            "/api/v1/infrastructure": path("Configuration server, vCenters, hosts, datastores, master targets, process servers", "get"),
            "/api/v1/infrastructure/faults": path("Fault knobs of the local estate (Administrator)", "post"),
            "/api/v1/items/{id}/protection": {
                "get": {"summary": "The item's protection settings: as chosen (null: the vault's default) and as they apply", "responses": {"200": {"description": "{chosen, effective}"}, "404": {"description": "Unknown item", "content": {"application/json": {"schema": err}}}}},
                "put": {"summary": "Replace the item's protection settings (Operator): retention, app-consistent frequency, RPO threshold, in minutes; absent or null goes back to the vault's default; applies from the next cycle",
                    "requestBody": {"required": true, "content": {"application/json": {"schema": {"type": "object", "additionalProperties": false, "properties": {
                        "retention_min": {"type": "integer", "minimum": 1, "maximum": 43200, "nullable": true},
                        "app_consistent_every_min": {"type": "integer", "minimum": 1, "maximum": 720, "nullable": true},
                        "rpo_threshold_min": {"type": "integer", "minimum": 1, "maximum": 1440, "nullable": true},
                        "reason": {"type": "string", "nullable": true}}}}}},
                    "responses": {"200": {"description": "{chosen, effective}"}, "400": {"description": "Malformed or unknown field"}, "403": {"description": "Not an Operator"}, "404": {"description": "Unknown item", "content": {"application/json": {"schema": err}}}, "422": {"description": "Values that do not hold, with what to enter", "content": {"application/json": {"schema": err}}}}}},
            "/api/v1/infrastructure/networks/{name}": {"post": {"summary": "Mark a network of the primary site isolated, where test failovers may put their VMs, or production (Administrator; body: {isolated: bool})", "responses": {"200": {"description": "The network"}, "400": {"description": "Malformed or unknown field"}, "403": {"description": "Not an Administrator"}, "404": {"description": "No such network", "content": {"application/json": {"schema": err}}}}}},
            "/api/v1/alerts": {"get": {"summary": "Alerts, newest first: an RPO past its item's threshold, a site connection failing, an agent offline, a datastore nearly full; each opens when its condition appears and resolves itself when it clears",
                "parameters": [{"name": "state", "in": "query", "schema": {"type": "string", "enum": ["open", "all"], "default": "open"}}, {"name": "limit", "in": "query", "schema": {"type": "integer", "minimum": 1, "maximum": 1000, "default": 100}}],
                "responses": {"200": {"description": "{alerts}"}, "400": {"description": "An unknown parameter or value", "content": {"application/json": {"schema": err}}}}}},
            "/api/v1/alerts/{id}/acknowledge": {"post": {"summary": "Acknowledge an open alert (Operator): it stays listed until its condition clears", "responses": {"200": {"description": "{alert}"}, "403": {"description": "Not an Operator"}, "404": {"description": "Unknown alert", "content": {"application/json": {"schema": err}}}, "409": {"description": "Resolved already", "content": {"application/json": {"schema": err}}}}}},
            "/api/v1/webhooks": {"get": {"summary": "Webhooks (Administrator); never their secrets", "responses": {"200": {"description": "{webhooks}"}, "403": {"description": "Not an Administrator"}}},
                "post": {"summary": "Add a webhook (Administrator; body: {url, secret?, events?: [alert, job]}): alerts opening and resolving and jobs ending are POSTed as JSON, signed X-Homeward-Signature: sha256=HMAC-SHA256(secret, timestamp + '.' + body) with X-Homeward-Timestamp; retried with doubling backoff; the secret (made when absent) is answered once",
                    "requestBody": {"required": true, "content": {"application/json": {"schema": {"type": "object", "additionalProperties": false, "required": ["url"], "properties": {
                        "url": {"type": "string", "pattern": "^https?://[^/?#@ ]+", "description": "http:// or https://, no user or password"},
                        "secret": {"type": "string", "minLength": 16, "nullable": true},
                        "events": {"type": "array", "minItems": 1, "items": {"type": "string", "enum": ["alert", "job"]}, "nullable": true}}}}}},
                    "responses": {"201": {"description": "{webhook, secret}"}, "400": {"description": "Malformed or unknown field"}, "403": {"description": "Not an Administrator"}, "422": {"description": "An address or secret that does not hold", "content": {"application/json": {"schema": err}}}}}},
            "/api/v1/webhooks/{id}": {"delete": {"summary": "Remove a webhook (Administrator); its pending deliveries are given up, its log stays", "responses": {"200": {"description": "Removed"}, "403": {"description": "Not an Administrator"}, "404": {"description": "Unknown webhook", "content": {"application/json": {"schema": err}}}}}},
            "/api/v1/webhooks/{id}/deliveries": {"get": {"summary": "A webhook's delivery log, newest first (Administrator): event, state, attempts, last status or error",
                "parameters": [{"name": "limit", "in": "query", "schema": {"type": "integer", "minimum": 1, "maximum": 1000, "default": 100}}],
                "responses": {"200": {"description": "{deliveries}"}, "400": {"description": "An unknown parameter", "content": {"application/json": {"schema": err}}}, "403": {"description": "Not an Administrator"}, "404": {"description": "Unknown webhook", "content": {"application/json": {"schema": err}}}}}},
            "/api/v1/drills": {"get": {"summary": "Drills (test failovers), newest first, each with its report: point and its age, time to power on, checks, cleanup and notes",
                "parameters": [{"name": "item", "in": "query", "schema": {"type": "string"}}, {"name": "limit", "in": "query", "schema": {"type": "integer", "minimum": 1, "maximum": 1000, "default": 100}}],
                "responses": {"200": {"description": "{drills}"}, "400": {"description": "An unknown parameter, or a limit out of range", "content": {"application/json": {"schema": err}}}}}},
            "/api/v1/drills/{id}": {"get": {"summary": "A drill's report (its id is the test failover's job id); ?format=csv downloads it as CSV",
                "parameters": [{"name": "format", "in": "query", "schema": {"type": "string", "enum": ["json", "csv"]}}],
                "responses": {"200": {"description": "{drill}, or text/csv"}, "400": {"description": "An unknown parameter or format", "content": {"application/json": {"schema": err}}}, "404": {"description": "Unknown drill", "content": {"application/json": {"schema": err}}}}}},
            "/api/v1/agents": {"get": {"summary": "Site agents (process servers, master targets) with state, last heartbeat, version, inventory (with the link address) and activity (streams now, throughput over ten minutes); the vault CA's fingerprint", "responses": {"200": {"description": "OK"}}},
                "post": {"summary": "Enroll an agent (Administrator; body: {name, role: process-server | master-target, site?: cloud | on-premises}); returns the one-time token and the command that starts the agent", "responses": {"201": {"description": "Enrolled"}, "400": {"description": "Malformed or unknown field"}, "403": {"description": "Not an Administrator"}, "409": {"description": "Name taken", "content": {"application/json": {"schema": err}}}, "422": {"description": "Invalid name, role or site"}}}},
            "/api/v1/agents/{id}/rate-cap": path("Cap the bytes per second an agent sends on its replication links (Administrator; body: {max_bytes_per_s: number | null}; at least 65536)", "post"),
            "/api/v1/agents/{id}/revoke": path("Revoke an agent by id or name (Administrator): its certificate and token are refused at once", "post"),
            "/api/v1/connections": {"get": {"summary": "Site connections (vCenters, storage accounts) with what their APIs reported at the last check; never a credential", "responses": {"200": {"description": "OK"}}},
                "post": {"summary": "Add a vCenter (body: {kind: vcenter, name, url, user, password, thumbprint?}) a storage account (body: {kind: storage-account, name, url, container, account_key | sas, thumbprint?}) or an Azure subscription's resource group (body: {kind: azure-subscription, name, tenant, client_id, client_secret, subscription, resource_group, management_url?, authority_url?, thumbprint?}) (Administrator); checked against its API first", "responses": {"201": {"description": "Connected"}, "400": {"description": "Malformed, unknown field, or a field that does not parse (named)"}, "403": {"description": "Not an Administrator"}, "409": {"description": "Name taken", "content": {"application/json": {"schema": err}}}, "422": {"description": "The connection cannot be made: unreachable, credentials refused, thumbprint mismatch, SAS expired or without permission, container missing", "content": {"application/json": {"schema": err}}}}}},
            "/api/v1/connections/{id}": {"get": {"summary": "One connection by id or name", "responses": {"200": {"description": "OK"}, "404": {"description": "Unknown"}}},
                "delete": {"summary": "Remove a connection and its sealed credential (Administrator)", "responses": {"200": {"description": "Removed"}, "403": {"description": "Not an Administrator"}, "404": {"description": "Unknown"}}}},
            "/api/v1/connections/{id}/refresh": path("Check a connection against its API again (Administrator): a new inventory, or last_error with the cause beside the last good one", "post"),
            "/api/v1/me": path("The account the token belongs to, with its role", "get"),
            "/api/v1/me/password": {"post": {"summary": "Change your own password (body: {current_password, new_password}; at least 12 characters); your other browser sessions end, the one making the request stays", "responses": {"200": {"description": "Changed; sessions_ended counts the others"}, "400": {"description": "Malformed or unknown field"}, "422": {"description": "The current password is wrong, or the new one is too short or unchanged", "content": {"application/json": {"schema": err}}}}}},
            "/api/v1/accounts": {"get": {"summary": "The accounts with role, disabled_at, live sessions and API tokens (Administrator); never a secret", "responses": {"200": {"description": "OK"}, "403": {"description": "Not an Administrator"}}},
                "post": {"summary": "Create an account (Administrator; body: {name, role: reader | drill-operator | operator | administrator, password?}); without a password one is generated and answered once", "responses": {"201": {"description": "Created"}, "400": {"description": "Malformed or unknown field"}, "403": {"description": "Not an Administrator"}, "409": {"description": "Name taken", "content": {"application/json": {"schema": err}}}, "422": {"description": "Invalid name, role or password"}}}},
            "/api/v1/accounts/{name}/{action}": {"post": {"summary": "role (body: {role}) | disable | enable | revoke (sign out everywhere: sessions end, API tokens deleted) (Administrator); the last enabled Administrator can be neither demoted nor disabled (409 last-administrator)", "responses": {"200": {"description": "Applied"}, "400": {"description": "Unknown field"}, "403": {"description": "Not an Administrator"}, "404": {"description": "Unknown account or action"}, "409": {"description": "The last enabled Administrator", "content": {"application/json": {"schema": err}}}}}},
            "/api/v1/audit": path("The audit log, newest first (filters: user, target; offset)", "get"),
        },
        "security": [{"token": []}],
        "components": {"securitySchemes": {"token": {"type": "http", "scheme": "bearer", "description": "A personal API token: `homeward users token <name>`. Reads need any role; actions need Operator; fault knobs Administrator."}}, "schemas": {"Error": {"type": "object", "required": ["code", "message"], "properties": {
            "code": {"type": "string"}, "rule": {"type": "string"}, "message": {"type": "string"}, "recommended_action": {"type": "string"}
        }}}}
    })
}
