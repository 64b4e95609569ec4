//! What the vault's pages show, read through the orchestration service by server functions. These types travel
//! to the browser, so they are plain strings and numbers; the decisions stay on the server.

use leptos::prelude::*;
use serde::{Deserialize, Serialize};

/// An operation the item does not allow now, and why.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Refused {
    pub operation: String,
    pub rule: String,
    pub message: String,
    pub action: String,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ItemRow {
    pub id: String,
    pub machine: String,
    pub os: String,
    pub state: String,
    pub health: String,
    pub health_errors: Vec<String>,
    pub points: usize,
    /// Newest point: kind and creation time (epoch ms).
    pub latest_point: Option<(String, u64)>,
    pub allowed: Vec<String>,
    pub refused: Vec<Refused>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TaskRow {
    pub name: String,
    pub state: String,
    pub attempts: i64,
    pub bytes: i64,
    pub started_at: Option<u64>,
    pub finished_at: Option<u64>,
    pub error: Option<String>,
    pub action: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct JobRow {
    pub id: String,
    pub kind: String,
    pub target: String,
    pub state: String,
    pub created_at: u64,
    pub error: Option<String>,
    pub action: Option<String>,
    pub allowed_actions: Vec<String>,
    pub tasks: Vec<TaskRow>,
}

/// One table of the infrastructure page.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Section {
    pub title: String,
    pub columns: Vec<String>,
    pub rows: Vec<Vec<String>>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PlanRow {
    pub id: String,
    pub name: String,
    pub groups: Vec<Vec<String>>,
}

#[cfg(feature = "ssr")]
fn service() -> Result<std::sync::Arc<orchestrator::service::Service>, ServerFnError> {
    use_context::<crate::ServerContext>()
        .map(|c| c.service)
        .ok_or_else(|| ServerFnError::new("the server did not provide its service context"))
}

#[cfg(feature = "ssr")]
fn words<T: Serialize>(v: &T) -> String {
    serde_json::to_value(v).ok().and_then(|v| v.as_str().map(str::to_owned)).unwrap_or_default()
}

#[cfg(feature = "ssr")]
fn internal(e: impl std::fmt::Display) -> ServerFnError {
    ServerFnError::new(format!("{e}. Check the server log."))
}

#[server(endpoint = "portal/items", input = leptos::server_fn::codec::GetUrl)]
pub async fn list_items() -> Result<Vec<ItemRow>, ServerFnError> {
    let s = service()?;
    let doc = s.doc().map_err(internal)?;
    let mut out = Vec::new();
    for rec in &doc.items {
        let (item, ops) = s.item(&rec.item.id).await.map_err(internal)?;
        let latest = item.recovery_points.iter().max_by_key(|p| p.time);
        out.push(ItemRow {
            id: item.id.clone(),
            machine: words(&item.machine),
            os: item.os.name.clone(),
            state: words(&item.state),
            health: words(&item.health),
            health_errors: item.health_errors.clone(),
            points: item.recovery_points.len(),
            latest_point: latest.map(|p| (words(&p.kind), p.time)),
            allowed: ops.iter().filter(|(_, r)| r.is_empty()).map(|(op, _)| words(op)).collect(),
            refused: ops
                .iter()
                .flat_map(|(op, rs)| {
                    rs.iter().map(move |r| Refused {
                        operation: words(op),
                        rule: r.rule.clone(),
                        message: r.message.clone(),
                        action: r.recommended_action.clone(),
                    })
                })
                .collect(),
        });
    }
    Ok(out)
}

/// The job as the portal shows it; the live-progress stream sends the same shape.
#[cfg(feature = "ssr")]
pub fn job_row(j: orchestrator::jobs::Job) -> JobRow {
    JobRow {
        allowed_actions: j.allowed_actions().iter().map(words).collect(),
        target: j.item_id.clone().or(j.plan_id.clone()).unwrap_or_default(),
        id: j.id,
        kind: j.kind,
        state: j.state.as_str().to_owned(),
        created_at: j.created_at,
        error: j.error,
        action: j.recommended_action,
        tasks: j
            .tasks
            .into_iter()
            .map(|t| TaskRow {
                name: t.name,
                state: t.state.as_str().to_owned(),
                attempts: t.attempts,
                bytes: t.bytes,
                started_at: t.started_at,
                finished_at: t.finished_at,
                error: t.error,
                action: t.recommended_action,
            })
            .collect(),
    }
}

#[server(endpoint = "portal/jobs", input = leptos::server_fn::codec::GetUrl)]
pub async fn list_jobs() -> Result<Vec<JobRow>, ServerFnError> {
    let s = service()?;
    Ok(s.jobs.list(200).await.map_err(internal)?.into_iter().map(job_row).collect())
}

#[server(endpoint = "portal/job", input = leptos::server_fn::codec::GetUrl)]
pub async fn get_job(id: String) -> Result<Option<JobRow>, ServerFnError> {
    let s = service()?;
    match s.jobs.get(&id).await {
        Ok(j) => Ok(Some(job_row(j))),
        Err(orchestrator::jobs::JobError::NotFound(_)) => Ok(None),
        Err(e) => Err(internal(e)),
    }
}

#[server(endpoint = "portal/plans", input = leptos::server_fn::codec::GetUrl)]
pub async fn list_plans() -> Result<Vec<PlanRow>, ServerFnError> {
    let s = service()?;
    let doc = s.doc().map_err(internal)?;
    Ok(doc.plans.into_iter().map(|p| PlanRow { id: p.id, name: p.name, groups: p.groups }).collect())
}

#[server(endpoint = "portal/infrastructure", input = leptos::server_fn::codec::GetUrl)]
pub async fn infrastructure() -> Result<Vec<Section>, ServerFnError> {
    let s = service()?;
    let inv = s.doc().map_err(internal)?.inventory;
    let yes = |b: bool| if b { "yes".to_owned() } else { "no".to_owned() };
    let cols = |c: &[&str]| c.iter().map(|x| x.to_string()).collect::<Vec<_>>();
    Ok(vec![
        Section {
            title: "Configuration server".into(),
            columns: cols(&["Name", "IP address", "Registered machines"]),
            rows: inv
                .configuration_server
                .iter()
                .map(|c| vec![c.id.clone(), c.ip_address.clone(), c.registered_vms.len().to_string()])
                .collect(),
        },
        Section {
            title: "vCenter servers".into(),
            columns: cols(&["Name", "Connected", "Configuration server"]),
            rows: inv
                .vcenters
                .iter()
                .map(|v| vec![v.id.clone(), yes(v.connected), v.configuration_server.clone()])
                .collect(),
        },
        Section {
            title: "ESXi hosts".into(),
            columns: cols(&["Name", "vCenter", "Hypervisor", "Discovered"]),
            rows: inv
                .hosts
                .iter()
                .map(|h| {
                    vec![
                        h.id.clone(),
                        h.vcenter.clone().unwrap_or("standalone".into()),
                        words(&h.hypervisor),
                        yes(h.discovered),
                    ]
                })
                .collect(),
        },
        Section {
            title: "Datastores".into(),
            columns: cols(&["Name", "Type", "Reachable from", "Free"]),
            rows: inv
                .datastores
                .iter()
                .map(|d| {
                    vec![
                        d.id.clone(),
                        words(&d.kind).to_uppercase(),
                        d.hosts.join(", "),
                        format!("{} GiB", d.free_bytes >> 30),
                    ]
                })
                .collect(),
        },
        Section {
            title: "Master targets".into(),
            columns: cols(&["Name", "OS", "Host", "Snapshots"]),
            rows: inv
                .master_targets
                .iter()
                .map(|m| vec![m.id.clone(), words(&m.os), m.host.clone(), m.snapshots.to_string()])
                .collect(),
        },
        Section {
            title: "Process servers".into(),
            columns: cols(&["Name", "Site", "Rate"]),
            rows: inv
                .process_servers
                .iter()
                .map(|p| vec![p.id.clone(), words(&p.site), format!("{} MiB/s", p.bandwidth_bytes_per_s >> 20)])
                .collect(),
        },
    ])
}
