//! A replication cycle run by the site agents instead of inside the control plane: the route (which agent sends,
//! which receives), the choice between agents and the in-process replicator, and the step's side of an assignment
//! (write it, follow its progress, give it up when the step must stop or an agent goes silent).
//!
//! The rule: when an agent is enrolled under the name of the route's process server or master target, that cycle's
//! bytes go through the agents, and both ends must be enrolled and online; when neither is, the control plane moves
//! the bytes itself (the embedded estate without agents, as in the tests of the core).

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use crate::agents::{Agent, AgentError, AgentState};
use crate::assignments::{AssignmentError, AssignmentState, Assignments, CycleSpec, DiskPair, Fence, SILENCE_MS};
use crate::domain::{Inventory, ReplicatedItem, Site};
use crate::jobs::{self, TaskFailure};
use crate::service::{Service, BLOCK_SIZE};
use crate::workflows::{fail, Workflows};

/// Who moves a cycle's bytes, by the names the inventory gives them.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Route {
    pub sender: Option<String>,
    pub receiver: Option<String>,
}

/// Checkpoint interval of a cycle between agents.
pub const WAN_CHUNK_BYTES: u64 = 4 << 20;

impl Route {
    /// Cloud → on-premises: the cloud's process server sends (the reprotect's choice, else the item's, else the
    /// first in the cloud) and the master target receives. On-premises → cloud: the primary site's process server
    /// sends (the re-protect's choice, else the first on-premises) and the cloud's process server receives.
    pub fn for_item(
        item: &ReplicatedItem,
        inv: &Inventory,
        to_primary: bool,
        chosen_process_server: Option<&str>,
        chosen_master_target: Option<&str>,
    ) -> Route {
        let pick = |site: Site| {
            [chosen_process_server, item.process_server.as_deref()]
                .into_iter()
                .flatten()
                .find(|id| inv.process_server(id).is_some_and(|p| p.site == site))
                .map(str::to_owned)
                .or_else(|| inv.process_servers.iter().find(|p| p.site == site).map(|p| p.id.clone()))
        };
        if to_primary {
            let mt = chosen_master_target
                .map(str::to_owned)
                .or_else(|| item.master_target.clone())
                .or_else(|| inv.master_targets.first().map(|m| m.id.clone()));
            Route { sender: pick(Site::Recovery), receiver: mt }
        } else {
            Route { sender: pick(Site::Primary), receiver: pick(Site::Recovery) }
        }
    }
}

impl Service {
    pub fn assignments(&self) -> Assignments {
        Assignments::new(self.agents.db.clone())
    }
}

fn retry(error: impl Into<String>, action: impl Into<String>) -> TaskFailure {
    TaskFailure::retryable(error, action)
}

/// An agent that can take its part of a cycle now.
fn usable(a: &Agent, part: &str) -> Result<(), TaskFailure> {
    let why = match a.state {
        AgentState::Online => return Ok(()),
        AgentState::Offline => format!(
            "the {part}'s agent {} is offline (last heartbeat {})",
            a.name,
            a.last_heartbeat_at.map_or_else(|| "never".to_owned(), crate::domain::utc_text)
        ),
        AgentState::AwaitingAgent => format!("the {part}'s agent {} was enrolled but has not started yet", a.name),
        AgentState::EnrollmentExpired => format!("the {part}'s agent {} never redeemed its enrollment", a.name),
        AgentState::Revoked => format!("the {part}'s agent {} is revoked", a.name),
    };
    Err(retry(
        why,
        format!(
            "Start the agent {} (Infrastructure → Site agents shows its state); the job retries by itself.",
            a.name
        ),
    ))
}

/// How a cycle between agents runs: its mode and consistency, the vault's bandwidth policy, the target's retention.
pub(crate) struct CycleTerms {
    pub(crate) mode: replicator::Mode,
    pub(crate) consistency: replicator::Consistency,
    pub(crate) bandwidth: Option<u64>,
    pub(crate) retention: replicator::journal::Retention,
}

impl Workflows<'_> {
    /// The two agents of `route`, when the cycle runs through agents; none when neither end has an agent.
    pub(crate) async fn agents_for(&self, route: &Route) -> Result<Option<(Agent, Agent)>, TaskFailure> {
        let now = (self.service.clock)();
        let find = |name: Option<String>| async move {
            let Some(name) = name else { return Ok(None) };
            match self.service.agents.find(&name, now).await {
                Ok(a) => Ok(Some(a)),
                Err(AgentError::NotFound(_)) => Ok(None),
                Err(e) => Err(retry(e.to_string(), "Check the database and the server log.")),
            }
        };
        let sender = find(route.sender.clone()).await?;
        let receiver = find(route.receiver.clone()).await?;
        match (sender, receiver) {
            (None, None) => Ok(None),
            (Some(s), Some(r)) => {
                usable(&s, "sending side")?;
                usable(&r, "receiving side")?;
                if r.inventory.as_ref().and_then(|i| i.link_endpoint.as_deref()).is_none() {
                    return Err(retry(
                        format!("the receiving agent {} has not said where it takes replication streams", r.name),
                        format!("Upgrade and restart the agent {}.", r.name),
                    ));
                }
                Ok(Some((s, r)))
            }
            (Some(one), None) | (None, Some(one)) => {
                let missing = if route.sender.as_deref() == Some(one.name.as_str()) {
                    route.receiver.clone()
                } else {
                    route.sender.clone()
                };
                let missing = missing.unwrap_or_else(|| "the other side".into());
                Err(fail(
                    format!(
                        "{} has a site agent but {missing} has none: a cycle runs through agents at both ends or \
                         at neither",
                        one.name
                    ),
                    format!("Enroll an agent named {missing} (Infrastructure → Site agents); then restart the failed job, if any."),
                ))
            }
        }
    }

    /// Runs one cycle through `sender` and `receiver`: writes the assignment under this step's fence and follows it
    /// until it ends. Answers the data bytes sent and the recovery point's id, like the in-process cycle.
    pub(crate) async fn agent_cycle(
        &self,
        sender: &Agent,
        receiver: &Agent,
        disks: Vec<DiskPair>,
        how: CycleTerms,
    ) -> Result<(u64, String), TaskFailure> {
        let CycleTerms { mode, consistency, bandwidth, retention } = how;
        let fence = self
            .fence
            .clone()
            .ok_or_else(|| fail("this step runs without a lease, so agents cannot be fenced", "Restart the job."))?;
        let job_id = match &fence {
            Fence::Job { id, .. } => Some(id.clone()),
            Fence::Item { .. } => None,
        };
        let spec = CycleSpec {
            disks,
            mode,
            consistency,
            point_id: replicator::sync::new_point_id(),
            block_size: BLOCK_SIZE,
            // Over a WAN a dropped link is the usual failure: small checkpoints keep a resume's re-send short.
            chunk_bytes: WAN_CHUNK_BYTES,
            bandwidth,
            stream_token: crate::accounts::random_secret(),
            retention_ms: retention.max_age_ms,
        };
        let store = self.service.assignments();
        let db = |e: AssignmentError| retry(e.to_string(), "Check the database and the server log.");
        let id = store.create(job_id.as_deref(), &fence, &sender.id, &receiver.id, &spec).await.map_err(db)?;
        let link = format!("{} → {}", sender.name, receiver.name);
        tracing::info!(assignment = %id, %link, disks = spec.disks.len(), "cycle assigned to the site agents");
        let started = Instant::now();
        let seq = self.current_task();
        let result = loop {
            tokio::time::sleep(Duration::from_millis(250)).await;
            if self.cancel.load(Ordering::Relaxed) {
                let _ = store.cancel(&id, "the step was stopped").await;
                break Err(fail(
                    format!("replication between {link} stopped"),
                    "Nothing to do: the sync resumes from its cursor when the job runs again.",
                ));
            }
            let a = match store.get(&id).await {
                Ok(a) => a,
                Err(e @ AssignmentError::Db(_)) if started.elapsed() < Duration::from_millis(SILENCE_MS) => {
                    tracing::warn!(error = %e, "reading the assignment failed; retrying");
                    continue;
                }
                Err(e) => break Err(db(e)),
            };
            if seq >= 0 && a.total_bytes > 0 {
                if let Ok(mut s) = self.progress.lock() {
                    s.insert(
                        seq,
                        jobs::TaskProgress { seq, done: a.done_bytes, total: a.total_bytes, sent: a.wire_bytes },
                    );
                }
            }
            match a.state {
                AssignmentState::Done => break Ok(a),
                AssignmentState::Failed => {
                    break Err(retry(
                        format!("replication between {link} failed: {}", a.error.unwrap_or_default()),
                        "The job retries by itself and resumes from the target's cursor; if it keeps failing, \
                         check both agents and the link between the sites.",
                    ))
                }
                AssignmentState::Cancelled => {
                    break Err(retry(
                        format!("the cycle between {link} was cancelled: {}", a.error.unwrap_or_default()),
                        "The job retries by itself.",
                    ))
                }
                AssignmentState::Pending if a.age_ms > SILENCE_MS => {
                    let _ = store.cancel(&id, "not taken in time").await;
                    break Err(retry(
                        format!(
                            "the sending agent {} did not take the cycle within {} s",
                            sender.name,
                            SILENCE_MS / 1000
                        ),
                        format!("Check that the agent {} is running and reaches the control plane.", sender.name),
                    ));
                }
                AssignmentState::Sending if a.silent_ms > SILENCE_MS => {
                    let _ = store.cancel(&id, "no word from the sending agent").await;
                    break Err(retry(
                        format!("no word from the sending agent {} for {} s mid-cycle", sender.name, SILENCE_MS / 1000),
                        "The job retries by itself and resumes from the target's cursor.",
                    ));
                }
                _ => {}
            }
        };
        self.add_data_ms(started.elapsed().as_millis() as u64);
        let wire = store.get(&id).await.map(|a| a.wire_bytes).unwrap_or(0);
        let a = result?;
        let outcome = a.outcome.unwrap_or_else(|| crate::assignments::Outcome {
            disks: vec![],
            wire_bytes: a.wire_bytes,
            rate_cap: None,
        });
        self.note_link(serde_json::json!({
            "agents": link,
            "assignment": id,
            "wire_bytes": wire.max(outcome.wire_bytes),
            "rate_cap": outcome.rate_cap,
            "disks": outcome.disks.iter().map(|d| serde_json::json!({
                "source": d.source,
                "mode": d.mode,
                "data_bytes": d.data_bytes,
                "resumed_from_block": d.resumed_from_block,
            })).collect::<Vec<_>>(),
        }));
        let bytes = outcome.disks.iter().map(|d| d.data_bytes).sum();
        // The point the target recorded (a resumed cursor keeps the id of the attempt that began it).
        let point = outcome.disks.first().map(|d| d.point_id.clone()).unwrap_or(spec.point_id);
        Ok((bytes, point))
    }
}
