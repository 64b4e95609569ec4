//! The facade over the pure core: it reads the estate, asks the rules, creates jobs and moves items through the
//! lifecycle when their jobs end. Server functions and the REST API call this, never the rules directly. The
//! jobs' steps run in [`crate::workflows`], on the workers of [`crate::worker`]; continuous replication in
//! [`crate::replication`].

use serde::{Deserialize, Serialize};

use crate::domain::*;
use crate::estate::{Estate, EstateDoc, EstateError, ItemRecord};
use crate::jobs::{self, Job, JobError, JobState, JobStore, NewJob};
use crate::lifecycle::{self, Context, DataEstimate, Event, Operation, Plan, Request};
use crate::points::PointChoice;
use crate::rules::{CheckOutcome, Refusal};

pub const BLOCK_SIZE: u32 = 64 << 10;

#[derive(Debug, thiserror::Error)]
pub enum ServiceError {
    #[error("refused: {}", .0.iter().map(|r| format!("{} ({})", r.message, r.rule)).collect::<Vec<_>>().join("; "))]
    Refused(Vec<Refusal>),
    #[error(transparent)]
    Estate(#[from] EstateError),
    #[error(transparent)]
    Job(#[from] JobError),
    #[error(transparent)]
    Replicator(#[from] replicator::Error),
    #[error(transparent)]
    Agent(#[from] crate::agents::AgentError),
    #[error(transparent)]
    Connection(#[from] crate::connections::ConnectionError),
    #[error(transparent)]
    Account(#[from] crate::accounts::AccountError),
    /// Something named that the vault does not have (a network, a drill), in words.
    #[error("{0}")]
    NotFound(String),
    /// Values that do not hold, with what to enter instead.
    #[error("{0}")]
    Invalid(String),
    #[error(transparent)]
    Alert(#[from] crate::alerts::AlertError),
    #[error(transparent)]
    Webhook(#[from] crate::webhooks::WebhookError),
}

/// Task step prefixes of a recovery plan's per-item tasks, one per operation a plan runs as a whole.
pub(crate) const PLAN_ITEM_REPROTECT: &str = "plan-item-reprotect/";
pub(crate) const PLAN_ITEM_FAILOVER: &str = "plan-item-failover/";
pub(crate) const PLAN_ITEM_TEST_FAILOVER: &str = "plan-item-test-failover/";
pub(crate) const PLAN_ITEM_CLEANUP: &str = "plan-item-cleanup-test-failover/";
pub(crate) const PLAN_ITEM_COMMIT: &str = "plan-item-commit/";
pub(crate) const PLAN_ITEM_CANCEL: &str = "plan-item-cancel-failover/";

/// The operations a recovery plan runs as a whole.
pub const PLAN_OPERATIONS: [Operation; 6] = [
    Operation::Reprotect,
    Operation::Failover,
    Operation::Commit,
    Operation::CancelFailover,
    Operation::TestFailover,
    Operation::CleanupTestFailover,
];

fn plan_task_prefix(op: Operation) -> &'static str {
    match op {
        Operation::TestFailover => PLAN_ITEM_TEST_FAILOVER,
        Operation::CleanupTestFailover => PLAN_ITEM_CLEANUP,
        Operation::Commit => PLAN_ITEM_COMMIT,
        Operation::CancelFailover => PLAN_ITEM_CANCEL,
        Operation::Reprotect => PLAN_ITEM_REPROTECT,
        _ => PLAN_ITEM_FAILOVER,
    }
}

/// Whether a plan-level operation chooses a recovery point for each item (R-RP1/R-RP2 over the plan).
fn plan_needs_point(op: Operation) -> bool {
    matches!(op, Operation::Failover | Operation::TestFailover)
}

/// A plan job's kind, e.g. `plan-test-failover`.
pub fn plan_kind(op: Operation) -> String {
    format!("plan-{}", wire_name(&op))
}

/// The item task of a plan job, by its step: the item and the operation.
pub(crate) fn plan_item_task(step: &str) -> Option<(&str, Operation)> {
    [
        (PLAN_ITEM_REPROTECT, Operation::Reprotect),
        (PLAN_ITEM_FAILOVER, Operation::Failover),
        (PLAN_ITEM_TEST_FAILOVER, Operation::TestFailover),
        (PLAN_ITEM_CLEANUP, Operation::CleanupTestFailover),
        (PLAN_ITEM_COMMIT, Operation::Commit),
        (PLAN_ITEM_CANCEL, Operation::CancelFailover),
    ]
    .into_iter()
    .find_map(|(prefix, op)| step.strip_prefix(prefix).map(|item| (item, op)))
}

/// What a plan-level operation was asked with: the point choice (R-RP1/R-RP2), for drills the isolated network
/// and the cleanup's notes, and for a reprotect what each item's reprotect is given.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct PlanAction {
    pub choice: PointChoice,
    pub network: Option<String>,
    pub notes: Option<String>,
    #[serde(default)]
    pub reprotect: PlanReprotect,
}

/// A plan's reprotect: one process server for every item; master targets of which each item takes the first that
/// runs its operating system (R-W1); a datastore for items whose original VM is gone; and protection settings for
/// every item (each keeps its own where one is not given).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct PlanReprotect {
    pub process_server: Option<String>,
    pub master_targets: Vec<String>,
    pub datastore: Option<String>,
    pub retention_min: Option<u32>,
    pub app_consistent_every_min: Option<u32>,
    pub rpo_threshold_min: Option<u32>,
}

impl PlanReprotect {
    /// One item's reprotect request: the first listed master target that runs the item's operating system, or the
    /// first listed (whose refusal then names R-W1 and what to choose); the settings given, else the plan's.
    pub fn request_for(
        &self,
        item: &ReplicatedItem,
        inv: &crate::domain::Inventory,
        plan_defaults: &ProtectionSettings,
    ) -> Request {
        let fits = |m: &&String| inv.master_target(m).is_some_and(|mt| mt.os == item.os.family);
        let master_target = self.master_targets.iter().find(fits).or(self.master_targets.first()).cloned();
        Request {
            master_target,
            process_server: self.process_server.clone(),
            datastore: self.datastore.clone(),
            retention_min: self.retention_min.or(plan_defaults.retention_min),
            app_consistent_every_min: self.app_consistent_every_min.or(plan_defaults.app_consistent_every_min),
            rpo_threshold_min: self.rpo_threshold_min.or(plan_defaults.rpo_threshold_min),
            ..Request::default()
        }
    }

    pub fn is_empty(&self) -> bool {
        self == &PlanReprotect::default()
    }
}

/// A recovery plan's job: the plan and the point chosen for each item (R-RP1/R-RP2), and a drill's network and
/// notes.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PlanJobRequest {
    pub plan: String,
    pub choice: PointChoice,
    pub points: Vec<(String, String)>,
    #[serde(default)]
    pub network: Option<String>,
    #[serde(default)]
    pub notes: Option<String>,
    /// The items of each group, in the plan's order: a group's items run side by side, and the next group starts
    /// when they have all succeeded. Absent from jobs of earlier versions, whose items run one after the other.
    #[serde(default)]
    pub groups: Vec<Vec<String>>,
    /// A reprotect's request for each item (its master target, process server, datastore and settings).
    #[serde(default)]
    pub requests: std::collections::BTreeMap<String, Request>,
}

/// A plan failover's dry run (`?dry_run=true` on the plan's failover).
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct PlanPreview {
    pub plan: String,
    pub name: String,
    pub choice: PointChoice,
    /// Whether the plan may fail over as a whole (every item allowed, every item with a point).
    pub allowed: bool,
    pub refusals: Vec<Refusal>,
    /// In the order the job runs them: a group's items side by side, and a group starts when the previous one has
    /// finished.
    pub groups: Vec<Vec<PlanItemPreview>>,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct PlanItemPreview {
    pub item: String,
    pub name: String,
    /// A reprotect's: the master target the item takes, where its disks go and what crosses the link.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub master_target: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub location: Option<lifecycle::Location>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub transfer: Option<lifecycle::Transfer>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub bytes_to_move: Option<u64>,
    pub point: Option<RecoveryPoint>,
    pub data_loss_ms: Option<Millis>,
    pub allowed: bool,
    pub checks: Vec<crate::rules::CheckOutcome>,
    pub tasks: Vec<lifecycle::PlannedTask>,
}

/// What a job's request carries, so a worker in another process can run it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct JobRequest {
    pub item: String,
    pub operation: Operation,
    pub request: Request,
    /// The dry run's decisions the tasks act on.
    pub plan: Plan,
}

#[derive(Clone, Debug)]
pub struct Service {
    pub estate: Estate,
    pub jobs: JobStore,
    /// The site agents: an item whose process server or master target has an offline agent shows a warning.
    pub agents: crate::agents::Agents,
    /// The vCenters and storage accounts an Administrator connected.
    pub connections: crate::connections::Connections,
    pub clock: fn() -> Millis,
}

/// A reprotect's initial replication reports its progress on its task; the item shows the same figure (the R-C3
/// refusal quotes it), never 0 while bytes move.
fn with_sync_progress(item: &mut ReplicatedItem, progress: Option<&(u64, u64)>) {
    if let (lifecycle::State::ReprotectInProgress, Some(&(done, total))) = (item.state, progress) {
        // Rounded up: a sync that has moved a byte never reads 0 %; it reads 100 % only once its job has ended.
        let pct = (done.min(total) * 100).div_ceil(total.max(1));
        item.initial_sync_percent = item.initial_sync_percent.max(pct as u8).min(99);
    }
}

pub fn system_clock() -> Millis {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_millis() as Millis).unwrap_or(0)
}

impl Service {
    /// The estate as the rules see it: the local estate, with the primary site as each connected vCenter last
    /// reported it ([`crate::primary_site::overlay`]).
    pub async fn doc(&self) -> Result<EstateDoc, ServiceError> {
        let doc = self.estate.load().await?;
        self.overlaid(doc).await
    }

    /// [`Service::doc`] with only the items `ids` (see [`crate::estate::Estate::load_items`]): a replication round
    /// reads each unit's few items again under its holds, not the whole estate once per unit.
    pub async fn doc_of(&self, ids: &[String]) -> Result<EstateDoc, ServiceError> {
        let doc = self.estate.load_items(ids).await?;
        self.overlaid(doc).await
    }

    async fn overlaid(&self, mut doc: EstateDoc) -> Result<EstateDoc, ServiceError> {
        for (c, inv) in self.connections.vcenters().await? {
            crate::primary_site::overlay(&mut doc.inventory, &c.name, &inv, c.last_error.is_none());
            crate::primary_site::overlay_items(&mut doc.items, &c.name, &inv);
            if let Some(at) = c.last_ok_at {
                crate::primary_site::overlay_power(&mut doc.items, &inv, at);
            }
        }
        Ok(doc)
    }

    /// The drills' records (their reports).
    pub fn drills(&self) -> crate::drills::Drills {
        crate::drills::Drills::new(self.estate.db.clone())
    }

    pub async fn context(&self, item: &str) -> Result<Context, ServiceError> {
        Ok(Context { now: (self.clock)(), active_job: self.jobs.active_job_for_item(item).await? })
    }

    /// The item with its allowed operations and, for the others, why not.
    pub async fn item(&self, id: &str) -> Result<(ReplicatedItem, Vec<(Operation, Vec<Refusal>)>), ServiceError> {
        // Only this item's record: reading the whole estate made one item cost as much as the list.
        let doc = self.doc_of(&[id.to_owned()]).await?;
        let now = (self.clock)();
        let mut item = self.estate.view(&doc, id, now)?;
        with_sync_progress(&mut item, self.jobs.initial_sync_progress(Some(id)).await?.get(id));
        crate::agents::apply_agent_health(&mut item, &self.agents.list(now).await?);
        let ctx = self.context(id).await?;
        let ops = lifecycle::allowed_operations(&item, &doc.inventory, &ctx);
        Ok((item, ops))
    }

    /// Every item with its allowed operations: one read of the estate, one query for the active jobs.
    pub async fn all_items(&self) -> Result<Vec<(ReplicatedItem, Vec<(Operation, Vec<Refusal>)>)>, ServiceError> {
        Ok(self.items_page(|_| true, None, 0, usize::MAX).await?.0)
    }

    /// The items `keep` accepts (and, with `allows`, that allow that operation now), from the `offset`-th on, at
    /// most `limit`, with their operations; and how many matched in all. Only the page's items get their refusals
    /// written out (unless `allows` needs them to filter): on a large vault that is most of a list's cost.
    pub async fn items_page(
        &self,
        keep: impl Fn(&ReplicatedItem) -> bool,
        allows: Option<Operation>,
        offset: usize,
        limit: usize,
    ) -> Result<(Vec<(ReplicatedItem, Vec<(Operation, Vec<Refusal>)>)>, usize), ServiceError> {
        let doc = self.doc().await?;
        let now = (self.clock)();
        let active = self.jobs.active_jobs_by_item().await?;
        let syncing = self.jobs.initial_sync_progress(None).await?;
        let agents = self.agents.list(now).await?;
        let mut page = Vec::new();
        let mut matched = 0;
        for rec in &doc.items {
            let mut item = self.estate.view_of(&doc, rec, now)?;
            with_sync_progress(&mut item, syncing.get(&rec.item.id));
            crate::agents::apply_agent_health(&mut item, &agents);
            if !keep(&item) {
                continue;
            }
            let in_page = matched >= offset && page.len() < limit;
            if in_page || allows.is_some() {
                let ctx = Context { now, active_job: active.get(&rec.item.id).cloned() };
                let ops = lifecycle::allowed_operations(&item, &doc.inventory, &ctx);
                if allows.is_some_and(|a| !ops.iter().any(|(op, r)| *op == a && r.is_empty())) {
                    continue;
                }
                if in_page {
                    page.push((item, ops));
                }
            }
            matched += 1;
        }
        Ok((page, matched))
    }

    /// Changes how an item is protected (retention, app-consistent frequency, RPO threshold); `None` fields go back
    /// to the vault's defaults. Takes effect at its next replication cycle.
    pub async fn set_protection(
        &self,
        id: &str,
        settings: ProtectionSettings,
    ) -> Result<ProtectionSettings, ServiceError> {
        let problems = settings.problems();
        if !problems.is_empty() {
            return Err(ServiceError::Invalid(format!(
                "The protection settings do not hold: {}.",
                problems.join("; ")
            )));
        }
        self.estate
            .update_item(id, |rec, _| {
                rec.item.protection = settings;
                Ok(())
            })
            .await?;
        Ok(settings)
    }

    /// Marks a network of the primary site (the estate's or a connected vCenter's) isolated, where drills may put
    /// their VMs, or production.
    pub async fn set_network_isolation(&self, name: &str, isolated: bool) -> Result<Network, ServiceError> {
        let doc = self.doc().await?;
        let Some(found) = doc.inventory.network(name).cloned() else {
            let known: Vec<&str> = doc.inventory.networks.iter().map(|n| n.id.as_str()).collect();
            return Err(ServiceError::NotFound(format!(
                "There is no network {name:?} on the primary site; it has {}.",
                if known.is_empty() { "none".to_owned() } else { known.join(", ") }
            )));
        };
        let marked = Network { isolated, ..found };
        let keep = marked.clone();
        self.estate
            .update(move |doc| {
                match doc.inventory.networks.iter_mut().find(|n| n.id == keep.id) {
                    Some(n) => n.isolated = keep.isolated,
                    None => doc.inventory.networks.push(keep),
                }
                Ok(())
            })
            .await?;
        Ok(marked)
    }

    /// Applies fault knobs to the estate; names an unknown item or datastore.
    pub async fn apply_faults(&self, knobs: &crate::estate::FaultKnobs) -> Result<(), ServiceError> {
        Ok(self.estate.update(|doc| knobs.apply(doc)).await?)
    }

    /// What a reprotect would move, read from the disks: on a blocking thread (it hashes both sides of each disk),
    /// never on the web runtime's threads.
    async fn estimate(&self, rec: &ItemRecord) -> DataEstimate {
        let disks: Vec<(std::path::PathBuf, Option<std::path::PathBuf>)> = rec
            .cloud_disks
            .iter()
            .enumerate()
            .map(|(i, c)| (self.estate.path(c), rec.onprem_disks.get(i).map(|d| self.estate.path(d))))
            .collect();
        tokio::task::spawn_blocking(move || {
            let mut est = DataEstimate::default();
            let mut changed = 0u64;
            let mut known = true;
            for (cloud, onprem) in &disks {
                // A full copy sends every block holding allocated data.
                if let Ok(bytes) = replicator::sync::estimate_full(cloud, BLOCK_SIZE) {
                    est.allocated_bytes += bytes;
                }
                match onprem {
                    Some(onprem) if onprem.exists() => {
                        changed += replicator::sync::estimate_changes(cloud, onprem, BLOCK_SIZE).unwrap_or(0)
                    }
                    _ => known = false,
                }
            }
            est.changed_bytes = known.then_some(changed);
            est
        })
        .await
        .unwrap_or_default()
    }

    pub async fn dry_run(&self, id: &str, op: Operation, req: &Request) -> Result<Plan, ServiceError> {
        // Only this item's record: its rules read the item and the inventory, never the other items.
        let doc = self.doc_of(&[id.to_owned()]).await?;
        let item = self.estate.view(&doc, id, (self.clock)())?;
        let rec = doc.items.iter().find(|r| r.item.id == id).expect("view found it");
        let ctx = self.context(id).await?;
        // Only the operations that copy whole disks quote bytes and an ETA; the others answer without reading disks.
        let est = if lifecycle::moves_disks(op) { self.estimate(rec).await } else { DataEstimate::default() };
        let mut plan = lifecycle::dry_run(&item, &doc.inventory, op, req, &ctx, &est);
        if op == Operation::VerifyReplica {
            let agent = match item.master_target.as_deref() {
                Some(mt) => self.agents.find(mt, ctx.now).await.ok(),
                None => None,
            };
            let check = match agent {
                None => Ok(()),
                Some(a) => Err(Refusal::new(
                    "VR-1",
                    format!(
                        "The replica of {} is written by master target {}'s agent, on its machine; the control plane \
                         verifies only the replicas it writes itself.",
                        item.name, a.name
                    ),
                    "Nothing to do here: every cycle through the agents already compares the replica's whole-disk \
                     digest, computed from its own bytes, with the cloud copy's.",
                )),
            };
            plan.checks.push(CheckOutcome {
                rule: "VR-1".into(),
                check: "the control plane writes the replica".into(),
                passed: check.is_ok(),
                refusal: check.err(),
            });
            plan.allowed = plan.checks.iter().all(|c| c.passed);
        }
        Ok(plan)
    }

    /// Starts `op` on the item as a job, or refuses with every rule that blocks it. Idempotent per key.
    pub async fn start(&self, id: &str, op: Operation, req: &Request, key: &str) -> Result<Job, ServiceError> {
        // A retried request (same key) gets the job it already started, whatever happened since.
        if let Some(job) = self.jobs.by_idempotency_key(key).await? {
            let same = serde_json::from_str::<JobRequest>(&job.request)
                .is_ok_and(|r| r.item == id && r.operation == op && &r.request == req);
            if same {
                return Ok(job);
            }
            return Err(JobError::IdempotencyConflict { key: key.to_owned(), job: job.id }.into());
        }
        let plan = self.dry_run(id, op, req).await?;
        if !plan.allowed {
            return Err(ServiceError::Refused(plan.refusals()));
        }
        let tasks = plan.tasks.iter().map(|t| (t.step.code(), t.name.clone())).collect();
        let request = JobRequest { item: id.to_owned(), operation: op, request: req.clone(), plan };
        let new = NewJob {
            id: jobs::new_id(),
            kind: wire_name(&op),
            item_id: Some(id.to_owned()),
            plan_id: None,
            request: serde_json::to_string(&request).unwrap(),
            idempotency_key: key.to_owned(),
            tasks,
            items: Vec::new(),
        };
        let (job, created) = self.jobs.create(new).await?;
        if created {
            self.transition(id, Event::Started(op)).await?;
        }
        Ok(job)
    }

    /// The dry run of a plan failover: the groups in order, each item's point, data loss, checks and tasks, and
    /// whether the plan may fail over as a whole. Starts nothing.
    pub async fn plan_failover_preview(
        &self,
        plan_id: &str,
        choice: &PointChoice,
    ) -> Result<PlanPreview, ServiceError> {
        let what = PlanAction { choice: choice.clone(), ..PlanAction::default() };
        self.plan_preview(plan_id, Operation::Failover, &what).await
    }

    /// The dry run of a plan-level operation (failover, test failover, test failover cleanup): every item's point
    /// (R-RP1/R-RP2 over the plan), checks and tasks, group by group. A cleanup covers the items that have a test
    /// VM; the others are left out.
    pub async fn plan_preview(
        &self,
        plan_id: &str,
        op: Operation,
        what: &PlanAction,
    ) -> Result<PlanPreview, ServiceError> {
        let doc = self.doc().await?;
        let plan = doc.plans.iter().find(|p| p.id == plan_id).ok_or_else(|| {
            ServiceError::NotFound(format!("There is no recovery plan {plan_id}; GET /api/v1/plans lists them."))
        })?;
        let now = (self.clock)();
        let ids: Vec<&String> = plan.groups.iter().flatten().collect();
        let mut items = ids.iter().map(|id| self.estate.view(&doc, id, now)).collect::<Result<Vec<_>, _>>()?;
        if op == Operation::CleanupTestFailover {
            items.retain(|i| i.drill.is_some());
        }
        let refs: Vec<&ReplicatedItem> = items.iter().collect();
        let needs_point = plan_needs_point(op);
        let (chosen, mut refusals) = if !needs_point {
            (None, Vec::new())
        } else {
            match crate::points::plan_points(&refs, &what.choice) {
                Ok(c) => (Some(c), Vec::new()),
                Err(r) => (None, vec![r]),
            }
        };
        if items.is_empty() && op == Operation::CleanupTestFailover {
            refusals.push(Refusal::new(
                "DR-3",
                format!("No item of {} has a test failover to clean up.", plan.name),
                "Run a test failover of the plan first; its cleanup removes the test VMs.",
            ));
        }
        let mut previews = std::collections::HashMap::new();
        for item in &items {
            let point = chosen.as_ref().and_then(|c| c.iter().find(|(i, _)| i == &item.id)).map(|(_, p)| p);
            let req = self.plan_item_request(op, what, plan, item, &doc.inventory, point);
            let ctx = self.context(&item.id).await?;
            // A reprotect quotes what crosses the link for each item, as its own dry run does.
            let est = match doc.items.iter().find(|r| r.item.id == item.id) {
                Some(rec) if lifecycle::moves_disks(op) => self.estimate(rec).await,
                _ => DataEstimate::default(),
            };
            let p = lifecycle::dry_run(item, &doc.inventory, op, &req, &ctx, &est);
            refusals.extend(p.refusals());
            let reprotect = op == Operation::Reprotect;
            previews.insert(
                item.id.clone(),
                PlanItemPreview {
                    item: item.id.clone(),
                    name: item.name.clone(),
                    master_target: req.master_target.clone().filter(|_| reprotect),
                    location: p.location.filter(|_| reprotect),
                    transfer: p.transfer.filter(|_| reprotect),
                    bytes_to_move: Some(p.bytes_to_move).filter(|_| reprotect),
                    point: point.cloned(),
                    data_loss_ms: point.and(p.data_loss_ms),
                    allowed: p.allowed && (point.is_some() || !needs_point),
                    checks: p.checks,
                    tasks: p.tasks,
                },
            );
        }
        // One refusal said once, though several items share it (a production network, a disconnected vCenter).
        let mut seen = std::collections::HashSet::new();
        refusals.retain(|r| seen.insert((r.rule.clone(), r.message.clone())));
        let groups = plan.groups.iter().map(|g| g.iter().filter_map(|id| previews.remove(id)).collect()).collect();
        Ok(PlanPreview {
            plan: plan.id.clone(),
            name: plan.name.clone(),
            choice: what.choice.clone(),
            allowed: refusals.is_empty(),
            refusals,
            groups,
        })
    }

    /// What one item of a plan-level operation is asked: its point, the drill's network and notes, or its reprotect.
    fn plan_item_request(
        &self,
        op: Operation,
        what: &PlanAction,
        plan: &crate::estate::RecoveryPlan,
        item: &ReplicatedItem,
        inv: &crate::domain::Inventory,
        point: Option<&RecoveryPoint>,
    ) -> Request {
        if op == Operation::Reprotect {
            return what.reprotect.request_for(item, inv, &plan.protection);
        }
        Request {
            point: point.map(|p| PointChoice::Specific(p.id.clone())),
            network: what.network.clone(),
            notes: what.notes.clone(),
            ..Request::default()
        }
    }

    /// Fails a recovery plan over, group after group, each item to the point R-RP1/R-RP2 choose; refused as a
    /// whole (R-RP3: every item needs a point) when any item may not fail over.
    pub async fn start_plan_failover(
        &self,
        plan_id: &str,
        choice: PointChoice,
        key: &str,
    ) -> Result<Job, ServiceError> {
        let what = PlanAction { choice, ..PlanAction::default() };
        self.start_plan_action(plan_id, Operation::Failover, what, key).await
    }

    /// Runs a plan-level operation (`PLAN_OPERATIONS`) as one job: a task per item, a group's items side by side,
    /// group after group; refused as a whole when any item may not.
    pub async fn start_plan_action(
        &self,
        plan_id: &str,
        op: Operation,
        what: PlanAction,
        key: &str,
    ) -> Result<Job, ServiceError> {
        if let Some(job) = self.jobs.by_idempotency_key(key).await? {
            if job.plan_id.as_deref() == Some(plan_id) && job.kind == plan_kind(op) {
                return Ok(job);
            }
            return Err(JobError::IdempotencyConflict { key: key.to_owned(), job: job.id }.into());
        }
        let preview = self.plan_preview(plan_id, op, &what).await?;
        if !preview.allowed {
            return Err(ServiceError::Refused(preview.refusals));
        }
        let mut tasks = Vec::new();
        let mut points = Vec::new();
        let mut requests = std::collections::BTreeMap::new();
        let doc = if op == Operation::Reprotect { Some(self.doc().await?) } else { None };
        for (g, group) in preview.groups.iter().enumerate() {
            for it in group {
                let pid = it.point.as_ref().map(|p| p.id.clone()).unwrap_or_default();
                if let Some(doc) = &doc {
                    let item = self.estate.view(doc, &it.item, (self.clock)())?;
                    let defaults = doc.plans.iter().find(|p| p.id == plan_id).map(|p| p.protection).unwrap_or_default();
                    requests.insert(it.item.clone(), what.reprotect.request_for(&item, &doc.inventory, &defaults));
                }
                let name = match op {
                    Operation::Reprotect => format!(
                        "Group {}: reprotect {} to on-premises through master target {}",
                        g + 1,
                        it.item,
                        it.master_target.as_deref().unwrap_or("?")
                    ),
                    Operation::TestFailover => format!("Group {}: test failover of {} at point {pid}", g + 1, it.item),
                    Operation::CleanupTestFailover => format!("Group {}: clean up the test VM of {}", g + 1, it.item),
                    Operation::Commit => format!("Group {}: commit {}, deleting its cloud VM", g + 1, it.item),
                    Operation::CancelFailover => {
                        format!("Group {}: cancel the failback of {}; its cloud VM runs again", g + 1, it.item)
                    }
                    _ => format!("Group {}: fail over {} to point {pid}", g + 1, it.item),
                };
                tasks.push((format!("{}{}", plan_task_prefix(op), it.item), name));
                points.push((it.item.clone(), pid));
            }
        }
        let request = PlanJobRequest {
            plan: plan_id.to_owned(),
            choice: what.choice,
            points,
            network: what.network,
            notes: what.notes,
            groups: preview.groups.iter().map(|g| g.iter().map(|it| it.item.clone()).collect()).collect(),
            requests,
        };
        let new = NewJob {
            id: jobs::new_id(),
            kind: plan_kind(op),
            item_id: None,
            plan_id: Some(plan_id.to_owned()),
            request: serde_json::to_string(&request).unwrap(),
            idempotency_key: key.to_owned(),
            tasks,
            items: request.groups.iter().flatten().cloned().collect(),
        };
        Ok(self.jobs.create(new).await?.0)
    }

    pub(crate) async fn transition(&self, id: &str, event: Event) -> Result<(), ServiceError> {
        self.estate
            .update_item(id, |rec, _| {
                if let Ok(next) = lifecycle::next(rec.item.state, event) {
                    rec.item.state = next;
                }
                crate::split_brain::settle(rec);
                // A drill is no answer to a failed production job: that failure stays on the item.
                if matches!(event, Event::Started(op) if !op.is_drill()) {
                    rec.item.last_failure = None;
                }
                Ok(())
            })
            .await?;
        Ok(())
    }

    pub(crate) async fn settle(&self, job: &Job, end: JobState) -> Result<(), ServiceError> {
        let mut tx = self.estate.db.pool.begin().await.map_err(EstateError::from)?;
        Service::settle_on(&mut tx, job, end).await?;
        tx.commit().await.map_err(EstateError::from)?;
        Ok(())
    }

    /// Moves the job's item to where the job's end takes it, inside `tx` (the transaction recording the end).
    pub(crate) async fn settle_on(tx: &mut sqlx::AnyConnection, job: &Job, end: JobState) -> Result<(), EstateError> {
        if !matches!(end, JobState::Succeeded | JobState::Failed | JobState::Cancelled) {
            return Ok(());
        }
        let req = serde_json::from_str::<JobRequest>(&job.request).ok();
        let words = req.as_ref().map_or("recovery plan job", |r| lifecycle::operation_words(r.operation));
        // A failed job stays on its item until the next one starts or succeeds: the item page says what happened
        // and what to do, whatever replication reports meanwhile.
        let failure = match end {
            JobState::Failed => Some(Self::failure_of(tx, job, words).await?),
            _ => None,
        };
        // The webhooks that take job ends hear of it exactly when it is recorded: in this transaction.
        let now = system_clock();
        let payload = serde_json::json!({
            "event": "job.ended",
            "at": now,
            "job": {
                "id": job.id, "kind": job.kind, "item": job.item_id, "plan": job.plan_id, "state": end,
                "failed_task": failure.as_ref().map(|f| &f.task), "error": failure.as_ref().map(|f| &f.error),
                "recommended_action": failure.as_ref().map(|f| &f.recommended_action),
            },
        });
        crate::webhooks::Webhooks::enqueue_on(tx, crate::webhooks::EventKind::Job, "job.ended", &payload, now).await?;
        let Some(req) = req else { return Ok(()) };
        let event = match end {
            JobState::Succeeded => Event::Succeeded(req.operation),
            _ => Event::Failed(req.operation),
        };
        // A crash between creating the job and moving the item may have skipped `Started`: apply it first.
        Estate::update_item_on(tx, &req.item, |rec, _| {
            let started = lifecycle::next(rec.item.state, Event::Started(req.operation)).unwrap_or(rec.item.state);
            if let Ok(next) = lifecycle::next(started, event) {
                rec.item.state = next;
            }
            crate::split_brain::settle(rec);
            // A failed drill stays on its job page and its report: it must not make the item's health worse, where
            // R-C3 would then refuse a real failover; nor may a drill's success hide a failed production job.
            if !req.operation.is_drill() {
                rec.item.last_failure = failure.clone();
            }
            Ok(())
        })
        .await
    }

    /// The failed task of an ended job (its name, error and action), read in the transaction that ended it.
    async fn failure_of(
        tx: &mut sqlx::AnyConnection,
        job: &Job,
        operation: &str,
    ) -> Result<crate::domain::JobFailure, EstateError> {
        crate::row! {
            struct Failed {
                name: Option<String>,
                error: Option<String>,
                recommended_action: Option<String>,
                finished_at: Option<i64>,
            }
        }
        let row: Option<Failed> = sqlx::query_as(
            "select t.name as name, coalesce(t.error, j.error) as error, \
             coalesce(t.recommended_action, j.recommended_action) as recommended_action, j.finished_at as finished_at \
             from jobs j left join tasks t on t.job_id = j.id and t.state = 'failed' \
             where j.id = $1 order by t.seq limit 1",
        )
        .bind(&job.id)
        .fetch_optional(&mut *tx)
        .await?;
        let row = row.unwrap_or(Failed { name: None, error: None, recommended_action: None, finished_at: None });
        Ok(crate::domain::JobFailure {
            job: job.id.clone(),
            operation: operation.to_owned(),
            task: row.name.unwrap_or_default(),
            error: row.error.unwrap_or_else(|| "the job failed".into()),
            recommended_action: row.recommended_action.unwrap_or_default(),
            at: row.finished_at.unwrap_or(0).max(0) as Millis,
        })
    }

    /// Restarts a failed or cancelled job from its first unfinished task; its item is in that operation again.
    pub async fn restart_job(&self, id: &str) -> Result<JobState, ServiceError> {
        self.jobs.restart(id).await?;
        let job = self.jobs.get(id).await?;
        if let Ok(req) = serde_json::from_str::<JobRequest>(&job.request) {
            self.transition(&req.item, Event::Started(req.operation)).await?;
        }
        Ok(JobState::NotStarted)
    }

    /// Cancels a job. One that had not started ends at once, and its item goes back to the state it had before
    /// (a running one is settled by its worker when it stops).
    pub async fn cancel_job(&self, id: &str) -> Result<JobState, ServiceError> {
        let state = self.jobs.cancel(id).await?;
        if state == JobState::Cancelled {
            let job = self.jobs.get(id).await?;
            self.settle(&job, JobState::Cancelled).await?;
        }
        Ok(state)
    }

    /// After a restart: an item left "in progress" by a job that has ended takes that job's outcome.
    pub async fn reconcile(&self) -> Result<(), ServiceError> {
        for job in self.jobs.list(1000).await? {
            if job.state.is_terminal() {
                if let Ok(req) = serde_json::from_str::<JobRequest>(&job.request) {
                    let doc = self.doc().await?;
                    let Some(rec) = doc.items.iter().find(|r| r.item.id == req.item) else { continue };
                    // A drill leaves the state as it was: nothing of it can be left "in progress".
                    let in_progress = !req.operation.is_drill()
                        && lifecycle::next(rec.item.state, Event::Succeeded(req.operation)).is_ok();
                    let newer_active = self.jobs.active_job_for_item(&req.item).await?.is_some();
                    if in_progress && !newer_active {
                        self.settle(&job, job.state).await?;
                    }
                }
            }
        }
        Ok(())
    }
}
