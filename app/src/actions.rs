//! Server functions that act: each goes through `orchestrator::acting::Actor`, which checks the signed-in role,
//! runs the action through the orchestration service and writes the audit line. Refusals come back as
//! [`PortalError`] with the rule ID, the sentence and the recommended action. Inputs are JSON (nested choices
//! such as [`ActionInput`] with every field empty do not survive URL encoding).

use leptos::prelude::*;

use crate::model::*;

#[cfg(feature = "ssr")]
pub(crate) mod server {
    use orchestrator::acting::ActError;
    use orchestrator::estate::EstateError;
    use orchestrator::jobs::JobError;
    use orchestrator::lifecycle::{Operation, Request};
    use orchestrator::points::PointChoice;
    use orchestrator::service::ServiceError;

    use crate::data::server::{ctx, refused_rows};
    use crate::model::*;

    pub fn signed_in() -> Result<orchestrator::accounts::User, PortalError> {
        crate::data::server::user().ok_or_else(|| PortalError::Denied("Sign in first.".into()))
    }

    /// The response's status for an error the client can act on (a server function answers 500 otherwise).
    pub fn status(code: http::StatusCode) {
        if let Some(r) = use_context_response() {
            r.set_status(code);
        }
    }

    pub fn portal_error(op: Operation, e: ActError) -> PortalError {
        use http::StatusCode as S;
        match e {
            ActError::Denied(d) => {
                status(S::FORBIDDEN);
                PortalError::Denied(d.to_string())
            }
            ActError::Service(ServiceError::Refused(r)) => {
                status(S::CONFLICT);
                PortalError::Refused(refused_rows(op, &r))
            }
            // The same answer as the dry run's R-W5 refusal: one cause, one shape.
            ActError::Service(ServiceError::Job(JobError::ItemBusy { item, active_job })) => {
                status(S::CONFLICT);
                PortalError::Refused(refused_rows(
                    op,
                    &[orchestrator::rules::Refusal::new(
                        "R-W5",
                        format!("Job {active_job} is still running on {item}."),
                        format!("Wait for job {active_job} to finish, or cancel it from its job page."),
                    )],
                ))
            }
            ActError::Service(ServiceError::Job(JobError::NotFound(id))) => {
                status(S::NOT_FOUND);
                PortalError::Conflict(format!("No job {id}. Check the link."))
            }
            ActError::Service(ServiceError::Job(e @ JobError::NotAllowed { .. })) => {
                status(S::CONFLICT);
                PortalError::Conflict(format!("{e}. The job page lists the actions it allows now."))
            }
            ActError::Service(ServiceError::Estate(EstateError::UnknownItem(id))) => {
                status(S::NOT_FOUND);
                PortalError::Conflict(format!("No replicated item {id} in this vault."))
            }
            ActError::Service(ServiceError::NotFound(m)) => {
                status(S::NOT_FOUND);
                PortalError::Conflict(m)
            }
            ActError::Service(ServiceError::Invalid(m)) => {
                status(S::UNPROCESSABLE_ENTITY);
                PortalError::Conflict(m)
            }
            ActError::Service(ServiceError::Alert(a @ orchestrator::alerts::AlertError::NotFound(_))) => {
                status(S::NOT_FOUND);
                PortalError::Conflict(a.to_string())
            }
            ActError::Service(ServiceError::Alert(a @ orchestrator::alerts::AlertError::Resolved(_))) => {
                status(S::CONFLICT);
                PortalError::Conflict(a.to_string())
            }
            ActError::Service(ServiceError::Webhook(w @ orchestrator::webhooks::WebhookError::Invalid(_))) => {
                status(S::UNPROCESSABLE_ENTITY);
                PortalError::Conflict(w.to_string())
            }
            ActError::Service(ServiceError::Webhook(w @ orchestrator::webhooks::WebhookError::NotFound(_))) => {
                status(S::NOT_FOUND);
                PortalError::Conflict(w.to_string())
            }
            other => server_fault(other),
        }
    }

    /// An agent action's error: a denial, a taken name, an unknown agent or a bad name are the client's to fix.
    pub fn agent_error(e: ActError) -> PortalError {
        use http::StatusCode as S;
        use orchestrator::agents::AgentError;
        match e {
            ActError::Denied(d) => {
                status(S::FORBIDDEN);
                PortalError::Denied(d.to_string())
            }
            ActError::Service(ServiceError::Agent(a @ AgentError::NameTaken(_))) => {
                status(S::CONFLICT);
                PortalError::Conflict(a.to_string())
            }
            ActError::Service(ServiceError::Agent(a @ AgentError::NotFound(_))) => {
                status(S::NOT_FOUND);
                PortalError::Conflict(a.to_string())
            }
            ActError::Service(ServiceError::Agent(a @ AgentError::Invalid(_))) => {
                status(S::BAD_REQUEST);
                PortalError::Conflict(a.to_string())
            }
            other => server_fault(other),
        }
    }

    pub fn connection_error(e: ActError) -> PortalError {
        use http::StatusCode as S;
        use orchestrator::connections::ConnectionError as C;
        let (code, text) = match e {
            ActError::Denied(d) => {
                status(S::FORBIDDEN);
                return PortalError::Denied(d.to_string());
            }
            ActError::Service(ServiceError::Connection(c)) => match c {
                C::Invalid(_) => (S::BAD_REQUEST, c.to_string()),
                C::NotFound(_) => (S::NOT_FOUND, c.to_string()),
                C::NameTaken(_) | C::Sealed(_) => (S::CONFLICT, c.to_string()),
                C::Connector(_) => (S::UNPROCESSABLE_ENTITY, c.to_string()),
                other => return server_fault(other),
            },
            other => return server_fault(other),
        };
        status(code);
        PortalError::Conflict(text)
    }

    /// A server fault: the cause goes to the log (its line names the request id), not to the browser.
    pub fn server_fault(e: impl std::fmt::Display) -> PortalError {
        tracing::error!(error = %e, "portal action failed");
        PortalError::Server("The server could not complete this request; the server log has the cause.".into())
    }

    fn use_context_response() -> Option<leptos_axum::ResponseOptions> {
        leptos::prelude::use_context::<leptos_axum::ResponseOptions>()
    }

    pub fn operation(op: &str) -> Result<Operation, PortalError> {
        serde_json::from_value(serde_json::Value::String(op.to_owned())).map_err(|_| {
            status(http::StatusCode::BAD_REQUEST);
            PortalError::Conflict(format!("{op} is not an operation of a replicated item."))
        })
    }

    pub fn point_choice(p: &str) -> PointChoice {
        match p {
            "latest-processed" => PointChoice::LatestProcessed,
            "latest" => PointChoice::Latest,
            "latest-app-consistent" => PointChoice::LatestAppConsistent,
            kept if kept.starts_with("kept:") => PointChoice::KeptCopy(kept["kept:".len()..].to_owned()),
            id => PointChoice::Specific(id.to_owned()),
        }
    }

    pub fn request(input: &ActionInput) -> Request {
        let some = |v: &Option<String>| v.clone().filter(|s| !s.is_empty());
        Request {
            master_target: some(&input.master_target),
            process_server: some(&input.process_server),
            datastore: some(&input.datastore),
            point: some(&input.point).map(|p| point_choice(&p)),
            network: some(&input.network),
            notes: some(&input.notes),
            retention_min: input.retention_min,
            app_consistent_every_min: input.app_consistent_every_min,
            rpo_threshold_min: input.rpo_threshold_min,
            reason: some(&input.reason),
        }
    }

    /// A key per confirmed dialog: a double click or a retried request returns the job already started.
    pub fn key(user: &str, key: &str, what: &str) -> String {
        if key.trim().is_empty() {
            format!("portal-{user}-{what}-{}", orchestrator::accounts::random_secret())
        } else {
            format!("portal-{user}-{}", key.trim())
        }
    }

    pub fn service_ctx() -> Result<crate::ServerContext, PortalError> {
        ctx().map_err(|e| PortalError::Server(e.to_string()))
    }
}

/// The dry run of an operation: every check, the location, the bytes to move, the ETA and the tasks.
#[server(endpoint = "portal/dry-run", input = leptos::server_fn::codec::Json)]
pub async fn dry_run(id: String, op: String, input: ActionInput) -> Result<DryRunView, PortalError> {
    use crate::data::server::{point_row, words};
    server::signed_in()?;
    let c = server::service_ctx()?;
    let operation = server::operation(&op)?;
    let plan = c
        .service
        .dry_run(&id, operation, &server::request(&input))
        .await
        .map_err(|e| server::portal_error(operation, e.into()))?;
    Ok(DryRunView {
        allowed: plan.allowed,
        location: plan.location.map(|l| words(&l)),
        location_note: plan.location_note.clone(),
        transfer: plan.transfer.map(|t| words(&t)),
        bytes_to_move: plan.bytes_to_move,
        eta_seconds: plan.eta_seconds,
        target_host: plan.target_host.clone(),
        target_datastore: plan.target_datastore.clone(),
        point: plan.point.as_ref().map(|p| point_row(p, p.time + plan.data_loss_ms.unwrap_or(0))),
        checks: plan
            .checks
            .iter()
            .map(|c| CheckRow {
                rule: c.rule.clone(),
                check: c.check.clone(),
                passed: c.passed,
                message: c.refusal.as_ref().map(|r| r.message.clone()).unwrap_or_default(),
                action: c.refusal.as_ref().map(|r| r.recommended_action.clone()).unwrap_or_default(),
            })
            .collect(),
        tasks: plan.tasks.iter().map(|t| t.name.clone()).collect(),
    })
}

/// Starts an operation on a replicated item; returns the job id.
#[server(endpoint = "portal/act", input = leptos::server_fn::codec::Json)]
pub async fn start_action(
    id: String,
    op: String,
    input: ActionInput,
    reason: String,
    key: String,
) -> Result<String, PortalError> {
    use orchestrator::acting::Actor;
    let user = server::signed_in()?;
    let c = server::service_ctx()?;
    let operation = server::operation(&op)?;
    let actor = Actor { user: &user, accounts: &c.accounts, service: &c.service };
    let key = server::key(&user.name, &key, &format!("{id}-{op}"));
    let job = actor
        .item_action(&id, operation, &server::request(&input), &key, Some(reason.as_str()))
        .await
        .map_err(|e| server::portal_error(operation, e))?;
    crate::data::server::invalidate();
    Ok(job.id)
}

/// Replaces an item's protection settings (Operator); `None` goes back to the vault's default.
#[server(endpoint = "portal/protection", input = leptos::server_fn::codec::Json)]
pub async fn set_protection(
    id: String,
    retention_min: Option<u32>,
    app_consistent_every_min: Option<u32>,
    rpo_threshold_min: Option<u32>,
) -> Result<(), PortalError> {
    use orchestrator::acting::Actor;
    let user = server::signed_in()?;
    let c = server::service_ctx()?;
    let actor = Actor { user: &user, accounts: &c.accounts, service: &c.service };
    let settings =
        orchestrator::domain::ProtectionSettings { retention_min, app_consistent_every_min, rpo_threshold_min };
    actor
        .set_protection(&id, settings, None)
        .await
        .map_err(|e| server::portal_error(orchestrator::lifecycle::Operation::Reprotect, e))?;
    crate::data::server::invalidate();
    Ok(())
}

/// Items per bulk request at most: one request may not become thousands of jobs, dry runs and audit lines.
#[cfg(feature = "ssr")]
const BULK_MAX_ITEMS: usize = 500;

/// The dry run of re-protecting several items to the cloud (R-W4) with one process server: each item's checks,
/// the first failed one said, and the data to move. Nothing starts.
#[server(endpoint = "portal/reprotect-many-dry-run", input = leptos::server_fn::codec::Json)]
pub async fn reprotect_many_dry_run(ids: Vec<String>, process_server: String) -> Result<Vec<BulkDryRow>, PortalError> {
    use orchestrator::lifecycle::Operation;
    server::signed_in()?;
    let c = server::service_ctx()?;
    if ids.len() > BULK_MAX_ITEMS {
        server::status(http::StatusCode::BAD_REQUEST);
        return Err(PortalError::Conflict(format!(
            "{} items in one request; at most {BULK_MAX_ITEMS}. Select fewer and repeat.",
            ids.len()
        )));
    }
    let input = ActionInput { process_server: Some(process_server), ..ActionInput::default() };
    let request = server::request(&input);
    let mut rows = Vec::with_capacity(ids.len());
    for id in ids {
        let plan = c
            .service
            .dry_run(&id, Operation::ReprotectToCloud, &request)
            .await
            .map_err(|e| server::portal_error(Operation::ReprotectToCloud, e.into()))?;
        let why_not = plan.checks.iter().find_map(|c| c.refusal.as_ref()).map(|r| Refused {
            operation: "reprotect-to-cloud".into(),
            rule: r.rule.clone(),
            message: r.message.clone(),
            action: r.recommended_action.clone(),
        });
        rows.push(BulkDryRow {
            id,
            allowed: plan.allowed,
            why_not,
            bytes_to_move: plan.bytes_to_move,
            eta_seconds: plan.eta_seconds,
        });
    }
    Ok(rows)
}

/// Re-protects several failed-back items to the cloud (R-W4): one job each. Returns (item, job id or why not).
#[server(endpoint = "portal/reprotect-many", input = leptos::server_fn::codec::Json)]
pub async fn reprotect_many(
    ids: Vec<String>,
    process_server: String,
    reason: String,
    key: String,
) -> Result<Vec<(String, Result<String, String>)>, PortalError> {
    use orchestrator::acting::Actor;
    use orchestrator::lifecycle::Operation;
    const MAX_ITEMS: usize = BULK_MAX_ITEMS;
    let user = server::signed_in()?;
    let c = server::service_ctx()?;
    let mut seen = std::collections::HashSet::new();
    let ids: Vec<String> = ids.into_iter().filter(|id| seen.insert(id.clone())).collect();
    if ids.len() > MAX_ITEMS {
        server::status(http::StatusCode::BAD_REQUEST);
        return Err(PortalError::Conflict(format!(
            "{} items in one request; at most {MAX_ITEMS}. Select fewer and repeat.",
            ids.len()
        )));
    }
    // Every id checked before anything starts: unknown ones refuse the request whole, with no job and no audit line.
    let doc = c.service.doc().await.map_err(server::server_fault)?;
    let known: std::collections::HashSet<&str> = doc.items.iter().map(|r| r.item.id.as_str()).collect();
    let unknown: Vec<&str> = ids.iter().map(String::as_str).filter(|id| !known.contains(id)).collect();
    if !unknown.is_empty() {
        server::status(http::StatusCode::NOT_FOUND);
        let shown = unknown.iter().take(5).copied().collect::<Vec<_>>().join(", ");
        let more = if unknown.len() > 5 { format!(" and {} more", unknown.len() - 5) } else { String::new() };
        return Err(PortalError::Conflict(format!(
            "No replicated item {shown}{more} in this vault; nothing was started. Reload the list and select again."
        )));
    }
    let actor = Actor { user: &user, accounts: &c.accounts, service: &c.service };
    let input = ActionInput { process_server: Some(process_server), ..ActionInput::default() };
    let mut out = Vec::new();
    for id in ids {
        let k = server::key(&user.name, &format!("{key}-{id}"), &id);
        let r = actor.item_action(&id, Operation::ReprotectToCloud, &server::request(&input), &k, Some(&reason)).await;
        match r {
            Ok(job) => out.push((id, Ok(job.id))),
            Err(e) => match server::portal_error(Operation::ReprotectToCloud, e) {
                // The role decides for every item alike: refuse the whole request.
                PortalError::Denied(d) => return Err(PortalError::Denied(d)),
                other => out.push((id, Err(other.to_string()))),
            },
        }
    }
    crate::data::server::invalidate();
    Ok(out)
}

/// A recovery plan's drill (`test-failover`, with an isolated network and a point choice) or its cleanup
/// (`cleanup-test-failover`, with notes); returns the job id.
#[server(endpoint = "portal/plan-drill", input = leptos::server_fn::codec::Json)]
pub async fn plan_drill(
    plan: String,
    op: String,
    choice: String,
    network: String,
    notes: String,
    reason: String,
    key: String,
) -> Result<String, PortalError> {
    use orchestrator::acting::Actor;
    let user = server::signed_in()?;
    let c = server::service_ctx()?;
    let operation = server::operation(&op)?;
    if !operation.is_drill() {
        server::status(http::StatusCode::BAD_REQUEST);
        return Err(PortalError::Conflict(format!("{op} is not a drill of a recovery plan.")));
    }
    let some = |s: String| Some(s.trim().to_owned()).filter(|s| !s.is_empty());
    let what = orchestrator::service::PlanAction {
        choice: server::point_choice(&choice),
        network: some(network),
        notes: some(notes),
        ..Default::default()
    };
    let actor = Actor { user: &user, accounts: &c.accounts, service: &c.service };
    let key = server::key(&user.name, &key, &format!("{plan}-{op}"));
    let job = actor
        .plan_action(&plan, operation, what, &key, Some(&reason))
        .await
        .map_err(|e| server::portal_error(operation, e))?;
    crate::data::server::invalidate();
    Ok(job.id)
}

/// A plan reprotect's choices as the core takes them: one process server, the master targets chosen (each item
/// takes the one that runs its operating system), a datastore for items whose original VM is gone.
#[cfg(feature = "ssr")]
fn plan_reprotect_choice(
    process_server: String,
    master_targets: Vec<String>,
    datastore: String,
    protection: PlanProtection,
) -> orchestrator::service::PlanAction {
    let some = |s: String| Some(s.trim().to_owned()).filter(|s| !s.is_empty());
    let reprotect = orchestrator::service::PlanReprotect {
        process_server: some(process_server),
        master_targets: master_targets.into_iter().filter_map(some).collect(),
        datastore: some(datastore),
        retention_min: protection.retention_min,
        app_consistent_every_min: protection.app_consistent_every_min,
        rpo_threshold_min: protection.rpo_threshold_min,
    };
    orchestrator::service::PlanAction { reprotect, ..Default::default() }
}

/// A plan reprotect's dry run: each item's master target, location, transfer and data to move, and every refusal.
#[server(endpoint = "portal/plan-reprotect-preview", input = leptos::server_fn::codec::Json)]
pub async fn plan_reprotect_preview(
    plan: String,
    process_server: String,
    master_targets: Vec<String>,
    datastore: String,
    /// Settings every item gets (minutes; none: the plan's, else each item's own).
    protection: PlanProtection,
) -> Result<PlanPreviewView, PortalError> {
    use orchestrator::lifecycle::Operation;
    server::signed_in()?;
    let c = server::service_ctx()?;
    let what = plan_reprotect_choice(process_server, master_targets, datastore, protection);
    let p = c.service.plan_preview(&plan, Operation::Reprotect, &what).await.map_err(|e| match e {
        orchestrator::service::ServiceError::NotFound(m) => {
            server::status(http::StatusCode::NOT_FOUND);
            PortalError::Conflict(m)
        }
        other => PortalError::Server(other.to_string()),
    })?;
    let wire = |v: Option<String>| v.map(|s| s.replace('-', " ")).unwrap_or_default();
    let items = p
        .groups
        .iter()
        .enumerate()
        .flat_map(|(g, items)| {
            items.iter().map(move |it| PlanPreviewLine {
                group: g + 1,
                item: it.name.clone(),
                master_target: it.master_target.clone().unwrap_or_default(),
                location: wire(it.location.map(|l| orchestrator::domain::wire_name(&l))),
                transfer: wire(it.transfer.map(|t| orchestrator::domain::wire_name(&t))),
                bytes: it.bytes_to_move.unwrap_or(0),
                allowed: it.allowed,
            })
        })
        .collect();
    let refusals = crate::data::server::refused_rows(Operation::Reprotect, &p.refusals);
    Ok(PlanPreviewView { allowed: p.allowed, refusals, items })
}

/// Reprotects a recovery plan to on-premises, a group's items side by side, group after group; returns the job id.
#[server(endpoint = "portal/plan-reprotect", input = leptos::server_fn::codec::Json)]
pub async fn plan_reprotect(
    plan: String,
    process_server: String,
    master_targets: Vec<String>,
    datastore: String,
    protection: PlanProtection,
    reason: String,
    key: String,
) -> Result<String, PortalError> {
    use orchestrator::acting::Actor;
    use orchestrator::lifecycle::Operation;
    let user = server::signed_in()?;
    let c = server::service_ctx()?;
    let what = plan_reprotect_choice(process_server, master_targets, datastore, protection);
    let actor = Actor { user: &user, accounts: &c.accounts, service: &c.service };
    let key = server::key(&user.name, &key, &format!("{plan}-reprotect"));
    let job = actor
        .plan_action(&plan, Operation::Reprotect, what, &key, Some(&reason))
        .await
        .map_err(|e| server::portal_error(Operation::Reprotect, e))?;
    crate::data::server::invalidate();
    Ok(job.id)
}

/// Commits a failed-back recovery plan, or cancels its failback (`op`: `commit` or `cancel-failover`), item after
/// item, group after group; refused as a whole when any item may not.
#[server(endpoint = "portal/plan-operate", input = leptos::server_fn::codec::Json)]
pub async fn plan_operate(plan: String, op: String, reason: String, key: String) -> Result<String, PortalError> {
    use orchestrator::acting::Actor;
    use orchestrator::lifecycle::Operation;
    let user = server::signed_in()?;
    let c = server::service_ctx()?;
    let operation = server::operation(&op)?;
    if !matches!(operation, Operation::Commit | Operation::CancelFailover) {
        server::status(http::StatusCode::BAD_REQUEST);
        return Err(PortalError::Conflict(format!("{op} is not a recovery plan's commit or cancel failover.")));
    }
    let actor = Actor { user: &user, accounts: &c.accounts, service: &c.service };
    let key = server::key(&user.name, &key, &format!("{plan}-{op}"));
    let job = actor
        .plan_action(&plan, operation, orchestrator::service::PlanAction::default(), &key, Some(&reason))
        .await
        .map_err(|e| server::portal_error(operation, e))?;
    crate::data::server::invalidate();
    Ok(job.id)
}

/// Fails a whole recovery plan over, group by group.
#[server(endpoint = "portal/plan-failover", input = leptos::server_fn::codec::Json)]
pub async fn plan_failover(plan: String, choice: String, reason: String, key: String) -> Result<String, PortalError> {
    use orchestrator::acting::Actor;
    use orchestrator::lifecycle::Operation;
    let user = server::signed_in()?;
    let c = server::service_ctx()?;
    let actor = Actor { user: &user, accounts: &c.accounts, service: &c.service };
    let key = server::key(&user.name, &key, &plan);
    let job = actor
        .plan_failover(&plan, server::point_choice(&choice), &key, Some(&reason))
        .await
        .map_err(|e| server::portal_error(Operation::Failover, e))?;
    crate::data::server::invalidate();
    Ok(job.id)
}

/// Cancels, restarts or resumes a job.
#[server(endpoint = "portal/job-action", input = leptos::server_fn::codec::Json)]
pub async fn job_action(id: String, action: String) -> Result<String, PortalError> {
    use orchestrator::acting::Actor;
    use orchestrator::jobs::JobAction;
    use orchestrator::lifecycle::Operation;
    let user = server::signed_in()?;
    let c = server::service_ctx()?;
    let a: JobAction = serde_json::from_value(serde_json::Value::String(action.clone()))
        .map_err(|_| PortalError::Conflict(format!("{action} is not a job action; use cancel, restart or resume.")))?;
    let actor = Actor { user: &user, accounts: &c.accounts, service: &c.service };
    let state = actor.job_action(&id, a, None).await.map_err(|e| server::portal_error(Operation::Failover, e))?;
    crate::data::server::invalidate();
    Ok(state.as_str().to_owned())
}

/// Turns one fault knob of the demo estate (Administrator): `vcenter_connected` (true/false),
/// `master_target_snapshots` (a number), `agent_registration_delay_min` (minutes), `fill_datastore`,
/// `free_datastore`, `delete_original_vm`, `register_agent`, `start_cloud_vm`, `start_onprem_vm` (an id).
#[server(endpoint = "portal/fault", input = leptos::server_fn::codec::Json)]
pub async fn set_fault(knob: String, value: String) -> Result<(), PortalError> {
    use orchestrator::acting::Actor;
    use orchestrator::estate::FaultKnobs;
    use orchestrator::lifecycle::Operation;
    let user = server::signed_in()?;
    let c = server::service_ctx()?;
    let v = value.trim();
    let json = match knob.as_str() {
        "vcenter_connected" => serde_json::json!({ knob.as_str(): v == "true" }),
        "master_target_snapshots" | "agent_registration_delay_min" => {
            let n: u64 = v.parse().map_err(|_| PortalError::Conflict(format!("{knob} needs a whole number")))?;
            serde_json::json!({ knob.as_str(): n })
        }
        _ => serde_json::json!({ knob.as_str(): v }),
    };
    let knobs: FaultKnobs =
        serde_json::from_value(json).map_err(|e| PortalError::Conflict(format!("unknown fault knob: {e}")))?;
    let actor = Actor { user: &user, accounts: &c.accounts, service: &c.service };
    actor
        .administer("faults", "estate", format!("{knob} = {v}"), c.service.apply_faults(&knobs))
        .await
        .map_err(|e| server::portal_error(Operation::Reprotect, e))?;
    crate::data::server::invalidate();
    Ok(())
}

/// Enrolls a site agent (Administrator): `role` is `process-server` or `master-target`, `site` `cloud`,
/// `on-premises` or empty for the role's usual site. The token and the command come back once.
#[server(endpoint = "portal/agents/enroll", input = leptos::server_fn::codec::Json)]
pub async fn enroll_agent(name: String, role: String, site: String) -> Result<EnrolledView, PortalError> {
    use orchestrator::acting::Actor;
    use orchestrator::agents::{endpoint_for, start_command, AgentRole, SiteKind};
    let user = server::signed_in()?;
    let c = crate::data::server::ctx().map_err(|e| PortalError::Server(e.to_string()))?;
    let bad = |m: String| {
        server::status(http::StatusCode::BAD_REQUEST);
        PortalError::Conflict(m)
    };
    let role = AgentRole::parse(&role)
        .ok_or_else(|| bad(format!("{role:?} is not a role: choose process-server or master-target")))?;
    let site = match site.as_str() {
        "" => None,
        s => Some(SiteKind::parse(s).ok_or_else(|| bad(format!("{s:?} is not a site: choose cloud or on-premises")))?),
    };
    let actor = Actor { user: &user, accounts: &c.accounts, service: &c.service };
    let e = actor.enroll_agent(&c.agents, &name, role, site).await.map_err(server::agent_error)?;
    let host = use_context::<http::request::Parts>()
        .and_then(|p| p.headers.get(http::header::HOST).and_then(|h| h.to_str().ok()).map(str::to_owned));
    let command = start_command(&e, &endpoint_for(host.as_deref(), c.agent_port), &c.ca_fingerprint);
    Ok(EnrolledView { name: e.agent.name, token: e.token, command })
}

/// Revokes a site agent by id (Administrator).
#[server(endpoint = "portal/agents/revoke", input = leptos::server_fn::codec::Json)]
pub async fn revoke_agent(id: String) -> Result<(), PortalError> {
    use orchestrator::acting::Actor;
    let user = server::signed_in()?;
    let c = crate::data::server::ctx().map_err(|e| PortalError::Server(e.to_string()))?;
    let actor = Actor { user: &user, accounts: &c.accounts, service: &c.service };
    actor.revoke_agent(&c.agents, &id).await.map_err(server::agent_error)?;
    Ok(())
}

/// Caps the bytes per second an agent sends on its replication links (Administrator): `mib_per_s` in MiB/s, or
/// empty to lift the cap.
#[server(endpoint = "portal/agents/rate-cap", input = leptos::server_fn::codec::Json)]
pub async fn set_agent_rate_cap(id: String, mib_per_s: String) -> Result<(), PortalError> {
    use orchestrator::acting::Actor;
    let user = server::signed_in()?;
    let c = crate::data::server::ctx().map_err(|e| PortalError::Server(e.to_string()))?;
    let v = mib_per_s.trim();
    let cap = if v.is_empty() {
        None
    } else {
        let mib: f64 = v.parse().ok().filter(|m: &f64| m.is_finite() && *m > 0.0).ok_or_else(|| {
            server::status(http::StatusCode::BAD_REQUEST);
            PortalError::Conflict(format!("{v:?} is not a rate: give MiB per second, e.g. 50, or leave it empty"))
        })?;
        Some((mib * 1_048_576.0) as u64)
    };
    let actor = Actor { user: &user, accounts: &c.accounts, service: &c.service };
    actor.set_agent_rate_cap(&c.agents, &id, cap).await.map_err(server::agent_error)?;
    Ok(())
}

/// Adds the primary site's vCenter (Administrator); it is checked against vCenter before it is saved.
#[server(endpoint = "portal/connections/add-vcenter", input = leptos::server_fn::codec::Json)]
pub async fn add_vcenter(
    name: String,
    url: String,
    user: String,
    password: String,
    thumbprint: String,
) -> Result<(), PortalError> {
    use orchestrator::acting::Actor;
    use orchestrator::connections::NewConnection;
    let who = server::signed_in()?;
    let c = crate::data::server::ctx().map_err(|e| PortalError::Server(e.to_string()))?;
    let new = NewConnection::Vcenter { name, url, user, password, thumbprint: Some(thumbprint) };
    let actor = Actor { user: &who, accounts: &c.accounts, service: &c.service };
    actor.add_connection(&c.service.connections, new).await.map_err(server::connection_error)?;
    Ok(())
}

/// Adds the recovery site's storage account (Administrator): `credential` is `account-key` or `sas`.
#[server(endpoint = "portal/connections/add-storage", input = leptos::server_fn::codec::Json)]
pub async fn add_storage_account(
    name: String,
    url: String,
    container: String,
    credential: String,
    secret: String,
    thumbprint: String,
) -> Result<(), PortalError> {
    use orchestrator::acting::Actor;
    use orchestrator::connections::NewConnection;
    let who = server::signed_in()?;
    let c = crate::data::server::ctx().map_err(|e| PortalError::Server(e.to_string()))?;
    let (account_key, sas) = match credential.as_str() {
        "account-key" => (Some(secret), None),
        "sas" => (None, Some(secret)),
        other => {
            server::status(http::StatusCode::BAD_REQUEST);
            return Err(PortalError::Conflict(format!("{other:?} is not a credential: choose account-key or sas")));
        }
    };
    let new = NewConnection::StorageAccount { name, url, container, account_key, sas, thumbprint: Some(thumbprint) };
    let actor = Actor { user: &who, accounts: &c.accounts, service: &c.service };
    actor.add_connection(&c.service.connections, new).await.map_err(server::connection_error)?;
    Ok(())
}

/// Adds the recovery site's Azure subscription (Administrator): the resource group of the cloud VMs, reached as a
/// service principal; empty endpoints mean Azure's public cloud.
#[allow(clippy::too_many_arguments)]
#[server(endpoint = "portal/connections/add-azure", input = leptos::server_fn::codec::Json)]
pub async fn add_azure_subscription(
    name: String,
    tenant: String,
    client_id: String,
    client_secret: String,
    subscription: String,
    resource_group: String,
    management_url: String,
    authority_url: String,
    thumbprint: String,
) -> Result<(), PortalError> {
    use orchestrator::acting::Actor;
    use orchestrator::connections::NewConnection;
    let who = server::signed_in()?;
    let c = crate::data::server::ctx().map_err(|e| PortalError::Server(e.to_string()))?;
    let new = NewConnection::AzureSubscription {
        name,
        tenant,
        client_id,
        client_secret,
        subscription,
        resource_group,
        management_url: Some(management_url),
        authority_url: Some(authority_url),
        thumbprint: Some(thumbprint),
    };
    let actor = Actor { user: &who, accounts: &c.accounts, service: &c.service };
    actor.add_connection(&c.service.connections, new).await.map_err(server::connection_error)?;
    Ok(())
}

/// Checks a connection against its API again (Administrator).
#[server(endpoint = "portal/connections/refresh", input = leptos::server_fn::codec::Json)]
pub async fn refresh_connection(id: String) -> Result<(), PortalError> {
    use orchestrator::acting::Actor;
    let who = server::signed_in()?;
    let c = crate::data::server::ctx().map_err(|e| PortalError::Server(e.to_string()))?;
    let actor = Actor { user: &who, accounts: &c.accounts, service: &c.service };
    actor.refresh_connection(&c.service.connections, &id).await.map_err(server::connection_error)?;
    Ok(())
}

/// Removes a connection and its sealed credential (Administrator).
#[server(endpoint = "portal/connections/remove", input = leptos::server_fn::codec::Json)]
pub async fn remove_connection(id: String) -> Result<(), PortalError> {
    use orchestrator::acting::Actor;
    let who = server::signed_in()?;
    let c = crate::data::server::ctx().map_err(|e| PortalError::Server(e.to_string()))?;
    let actor = Actor { user: &who, accounts: &c.accounts, service: &c.service };
    actor.remove_connection(&c.service.connections, &id).await.map_err(server::connection_error)?;
    Ok(())
}
