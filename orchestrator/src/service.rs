//! The runtime around the pure core: it reads the estate, asks the rules, creates jobs, runs their tasks through
//! the estate and the replicator, and moves items through the lifecycle. Server functions and the REST API call
//! this, never the rules directly.

use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::domain::*;
use crate::estate::{Estate, EstateDoc, EstateError, ItemRecord};
use crate::jobs::{self, Job, JobError, JobState, JobStore, NewJob, Task, TaskExecutor, TaskFailure, TaskOutcome};
use crate::lifecycle::{self, Context, DataEstimate, Event, Operation, Plan, Request, State, Step};
use crate::points::PointChoice;
use crate::rules::Refusal;

pub const BLOCK_SIZE: u32 = 64 << 10;
const LEASE_MS: Millis = 30_000;

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
}

/// Items replicated in one cycle: (group key, state, item ids, disk pairs source → target).
type CycleUnit = (String, State, Vec<String>, Vec<(String, String)>);

/// Task step prefix of a recovery plan's per-item failover tasks.
const PLAN_ITEM_FAILOVER: &str = "plan-item-failover/";

/// A recovery plan's failover job: the plan and the point chosen for each item (R-RP1/R-RP2).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PlanJobRequest {
    pub plan: String,
    pub choice: PointChoice,
    pub points: Vec<(String, String)>,
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
    pub clock: fn() -> Millis,
}

pub fn system_clock() -> Millis {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_millis() as Millis).unwrap_or(0)
}

impl Service {
    pub fn doc(&self) -> Result<EstateDoc, ServiceError> {
        Ok(self.estate.load()?)
    }

    pub async fn context(&self, item: &str) -> Result<Context, ServiceError> {
        Ok(Context { now: (self.clock)(), active_job: self.jobs.active_job_for_item(item).await? })
    }

    /// The item with its allowed operations and, for the others, why not.
    pub async fn item(&self, id: &str) -> Result<(ReplicatedItem, Vec<(Operation, Vec<Refusal>)>), ServiceError> {
        let doc = self.doc()?;
        let item = self.estate.view(&doc, id, (self.clock)())?;
        let ctx = self.context(id).await?;
        let ops = lifecycle::allowed_operations(&item, &doc.inventory, &ctx);
        Ok((item, ops))
    }

    /// Every item with its allowed operations: one read of the estate, one query for the active jobs.
    pub async fn all_items(&self) -> Result<Vec<(ReplicatedItem, Vec<(Operation, Vec<Refusal>)>)>, ServiceError> {
        let doc = self.doc()?;
        let now = (self.clock)();
        let active = self.jobs.active_jobs_by_item().await?;
        doc.items
            .iter()
            .map(|rec| {
                let item = self.estate.view(&doc, &rec.item.id, now)?;
                let ctx = Context { now, active_job: active.get(&rec.item.id).cloned() };
                let ops = lifecycle::allowed_operations(&item, &doc.inventory, &ctx);
                Ok((item, ops))
            })
            .collect()
    }

    /// Applies fault knobs to the estate; names an unknown item or datastore.
    pub async fn apply_faults(&self, knobs: &crate::estate::FaultKnobs) -> Result<(), ServiceError> {
        Ok(self.estate.update(|doc| knobs.apply(doc)).await?)
    }

    fn estimate(&self, rec: &ItemRecord) -> DataEstimate {
        let mut est = DataEstimate::default();
        let mut changed = 0u64;
        let mut known = true;
        for (i, c) in rec.cloud_disks.iter().enumerate() {
            let cloud = self.estate.path(c);
            // A full copy sends every block holding allocated data.
            if let Ok(bytes) = replicator::sync::estimate_full(&cloud, BLOCK_SIZE) {
                est.allocated_bytes += bytes;
            }
            match rec.onprem_disks.get(i).map(|d| self.estate.path(d)) {
                Some(onprem) if onprem.exists() => {
                    changed += replicator::sync::estimate_changes(&cloud, &onprem, BLOCK_SIZE).unwrap_or(0)
                }
                _ => known = false,
            }
        }
        est.changed_bytes = known.then_some(changed);
        est
    }

    pub async fn dry_run(&self, id: &str, op: Operation, req: &Request) -> Result<Plan, ServiceError> {
        let doc = self.doc()?;
        let item = self.estate.view(&doc, id, (self.clock)())?;
        let rec = doc.items.iter().find(|r| r.item.id == id).expect("view found it");
        let ctx = self.context(id).await?;
        Ok(lifecycle::dry_run(&item, &doc.inventory, op, req, &ctx, &self.estimate(rec)))
    }

    /// Starts `op` on the item as a job, or refuses with every rule that blocks it. Idempotent per key.
    pub async fn start(&self, id: &str, op: Operation, req: &Request, key: &str) -> Result<Job, ServiceError> {
        if matches!(op, Operation::FailoverToCloud | Operation::CommitInCloud) {
            return Err(ServiceError::Refused(vec![Refusal::new(
                "R-W4",
                "The local estate runs failback; the forward failover to the cloud is not one of its operations.",
                "After re-protect (R-W4), fail over to the cloud from the cloud provider's tooling.",
            )]));
        }
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
        let now = (self.clock)();
        let tasks = plan.tasks.iter().map(|t| (t.step.code(), t.name.clone())).collect();
        let request = JobRequest { item: id.to_owned(), operation: op, request: req.clone(), plan };
        let new = NewJob {
            id: job_id(now, key),
            kind: serde_json::to_value(op).unwrap().as_str().unwrap_or_default().to_owned(),
            item_id: Some(id.to_owned()),
            plan_id: None,
            request: serde_json::to_string(&request).unwrap(),
            idempotency_key: key.to_owned(),
            tasks,
        };
        let (job, created) = self.jobs.create(new, now).await?;
        if created {
            self.transition(id, Event::Started(op)).await?;
        }
        Ok(job)
    }

    /// Fails a recovery plan over, group after group, each item to the point R-RP1/R-RP2 choose; refused as a
    /// whole (R-RP3: every item needs a point) when any item may not fail over.
    pub async fn start_plan_failover(
        &self,
        plan_id: &str,
        choice: PointChoice,
        key: &str,
    ) -> Result<Job, ServiceError> {
        if let Some(job) = self.jobs.by_idempotency_key(key).await? {
            if job.plan_id.as_deref() == Some(plan_id) {
                return Ok(job);
            }
            return Err(JobError::IdempotencyConflict { key: key.to_owned(), job: job.id }.into());
        }
        let doc = self.doc()?;
        let plan = doc
            .plans
            .iter()
            .find(|p| p.id == plan_id)
            .ok_or_else(|| EstateError::UnknownItem(format!("recovery plan {plan_id}")))?;
        let now = (self.clock)();
        let ids: Vec<&String> = plan.groups.iter().flatten().collect();
        let items = ids.iter().map(|id| self.estate.view(&doc, id, now)).collect::<Result<Vec<_>, _>>()?;
        let refs: Vec<&ReplicatedItem> = items.iter().collect();
        let chosen = crate::points::plan_points(&refs, &choice).map_err(|r| ServiceError::Refused(vec![r]))?;
        let mut refusals = Vec::new();
        for (item, (_, point)) in items.iter().zip(&chosen) {
            let req = Request { point: Some(PointChoice::Specific(point.id.clone())), ..Request::default() };
            let ctx = self.context(&item.id).await?;
            let p = lifecycle::dry_run(item, &doc.inventory, Operation::Failover, &req, &ctx, &DataEstimate::default());
            refusals.extend(p.refusals());
        }
        if !refusals.is_empty() {
            return Err(ServiceError::Refused(refusals));
        }
        let mut tasks = Vec::new();
        for (g, group) in plan.groups.iter().enumerate() {
            for id in group {
                let pid = chosen.iter().find(|(i, _)| i == id).map(|(_, p)| p.id.clone()).unwrap_or_default();
                tasks.push((
                    format!("{PLAN_ITEM_FAILOVER}{id}"),
                    format!("Group {}: fail over {id} to point {pid}", g + 1),
                ));
            }
        }
        let points = chosen.into_iter().map(|(i, p)| (i, p.id)).collect();
        let request = PlanJobRequest { plan: plan_id.to_owned(), choice, points };
        let new = NewJob {
            id: job_id(now, key),
            kind: "plan-failover".into(),
            item_id: None,
            plan_id: Some(plan_id.to_owned()),
            request: serde_json::to_string(&request).unwrap(),
            idempotency_key: key.to_owned(),
            tasks,
        };
        Ok(self.jobs.create(new, now).await?.0)
    }

    async fn transition(&self, id: &str, event: Event) -> Result<(), ServiceError> {
        self.estate
            .update(|doc| {
                let rec = doc.item_mut(id)?;
                if let Ok(next) = lifecycle::next(rec.item.state, event) {
                    rec.item.state = next;
                }
                Ok(())
            })
            .await?;
        Ok(())
    }

    /// Claims and runs one job, then moves its item on. Returns whether there was one.
    pub async fn work_once(&self, worker: &str) -> Result<bool, ServiceError> {
        let Some(lease) = self.jobs.claim(worker, (self.clock)(), LEASE_MS).await? else { return Ok(false) };
        let exec = Workflows::new(self);
        // Tasks do blocking disk IO; the lease is renewed (and progress recorded) from a thread of its own meanwhile.
        let beat = Heartbeat::start(self.jobs.clone(), lease.clone(), self.clock, exec.progress.clone());
        let end = jobs::run_job(&self.jobs, &lease, &exec, &self.clock, LEASE_MS).await;
        beat.stop();
        end?;
        Ok(true)
    }

    async fn settle(&self, job: &Job, end: JobState) -> Result<(), ServiceError> {
        let Ok(req) = serde_json::from_str::<JobRequest>(&job.request) else { return Ok(()) };
        let event = match end {
            JobState::Succeeded => Event::Succeeded(req.operation),
            JobState::Failed | JobState::Cancelled => Event::Failed(req.operation),
            _ => return Ok(()),
        };
        // A crash between creating the job and moving the item may have skipped `Started`: apply it first.
        let id = req.item.clone();
        self.estate
            .update(|doc| {
                let rec = doc.item_mut(&id)?;
                let started = lifecycle::next(rec.item.state, Event::Started(req.operation)).unwrap_or(rec.item.state);
                if let Ok(next) = lifecycle::next(started, event) {
                    rec.item.state = next;
                }
                Ok(())
            })
            .await?;
        Ok(())
    }

    /// One round of continuous replication: running VMs write (the guest workload), and every protected item
    /// whose interval has passed gets a cycle — app-consistent when that interval has passed too. Items with a job
    /// are left to the job.
    pub async fn tick(&self) -> Result<(), ServiceError> {
        let doc = self.doc()?;
        let now = (self.clock)();
        let policy = doc.replication.clone();
        // Units of one cycle: an item, or all due members of a replication group (one shared point id, so the
        // group has common points for R-RP2).
        let mut units: Vec<CycleUnit> = Vec::new();
        let active = self.jobs.active_jobs_by_item().await?;
        for rec in &doc.items {
            if active.contains_key(&rec.item.id) {
                continue;
            }
            let running = if rec.cloud_power && !rec.item.cloud_vm.as_ref().is_some_and(|v| v.deleted) {
                &rec.cloud_disks
            } else if rec.onprem_power {
                &rec.onprem_disks
            } else {
                &Vec::new()
            };
            if policy.guest_bytes_per_tick > 0 {
                for d in running {
                    let Ok(img) = replicator::DiskImage::open(&self.estate.path(d)) else { continue };
                    let pattern = replicator::workload::Pattern::HotSpot { hot_fraction: 0.05, hot_share: 0.9 };
                    let mut w = replicator::workload::GuestWriter::open(&img, BLOCK_SIZE, pattern, now)?;
                    w.step(policy.guest_bytes_per_tick)?;
                    w.quiesce()?;
                }
            }
            let pairs: Vec<(String, String)> = match rec.item.state {
                State::ProtectedToPrimary => {
                    rec.cloud_disks.iter().cloned().zip(rec.replica_disks.iter().cloned()).collect()
                }
                State::ProtectedToCloud => {
                    rec.onprem_disks.iter().cloned().zip(rec.cloud_disks.iter().cloned()).collect()
                }
                _ => continue,
            };
            if pairs.is_empty() || now.saturating_sub(rec.last_cycle_at) < policy.crash_consistent_every_ms {
                continue;
            }
            let key = rec.item.replication_group.clone().unwrap_or_else(|| format!("item:{}", rec.item.id));
            match units.iter_mut().find(|u| u.0 == key && u.1 == rec.item.state) {
                Some(u) => {
                    u.2.push(rec.item.id.clone());
                    u.3.extend(pairs);
                }
                None => units.push((key, rec.item.state, vec![rec.item.id.clone()], pairs)),
            }
        }
        for (_, _, ids, pairs) in units {
            let app = ids.iter().all(|id| {
                doc.items
                    .iter()
                    .find(|r| &r.item.id == id)
                    .is_some_and(|r| now.saturating_sub(r.last_app_cycle_at) >= policy.app_consistent_every_ms)
            });
            let consistency =
                if app { replicator::Consistency::AppConsistent } else { replicator::Consistency::CrashConsistent };
            let exec = Workflows::new(self);
            let result = exec.cycle(&pairs, replicator::Mode::Auto, consistency);
            self.estate
                .update(|doc| {
                    for r in doc.items.iter_mut().filter(|r| ids.contains(&r.item.id)) {
                        r.last_cycle_at = now;
                        match &result {
                            Ok(_) => {
                                if app {
                                    r.last_app_cycle_at = now;
                                }
                                r.item.health = Health::Normal;
                                r.item.health_errors.clear();
                            }
                            // A failed cycle shows on the item (and blocks failover by R-C3) until one succeeds.
                            Err(f) => {
                                r.item.health = Health::Warning;
                                r.item.health_errors = vec![format!("{} — {}", f.error, f.recommended_action)];
                            }
                        }
                    }
                    Ok(())
                })
                .await?;
        }
        Ok(())
    }

    /// After a restart: an item left "in progress" by a job that has ended takes that job's outcome.
    pub async fn reconcile(&self) -> Result<(), ServiceError> {
        for job in self.jobs.list(1000).await? {
            if job.state.is_terminal() {
                if let Ok(req) = serde_json::from_str::<JobRequest>(&job.request) {
                    let doc = self.doc()?;
                    let Some(rec) = doc.items.iter().find(|r| r.item.id == req.item) else { continue };
                    let in_progress = lifecycle::next(rec.item.state, Event::Succeeded(req.operation)).is_ok();
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

struct Heartbeat {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Heartbeat {
    fn start(store: JobStore, lease: jobs::Lease, clock: fn() -> Millis, progress: ProgressSlot) -> Heartbeat {
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let flag = stop.clone();
        let thread = std::thread::Builder::new()
            .name("lease-heartbeat".into())
            .spawn(move || {
                let Ok(rt) = tokio::runtime::Builder::new_current_thread().enable_all().build() else { return };
                rt.block_on(async {
                    let mut flushed = None;
                    while !flag.load(std::sync::atomic::Ordering::Relaxed) {
                        if store.heartbeat(&lease, clock(), LEASE_MS).await.is_err() {
                            return; // fenced or finished: the runner finds out at its next write
                        }
                        for tick in 0..(LEASE_MS / 3 / 100) {
                            if flag.load(std::sync::atomic::Ordering::Relaxed) {
                                return;
                            }
                            // A few progress writes a second at most, and only when something moved.
                            let now = progress.lock().ok().and_then(|p| *p);
                            if tick % 3 == 0 && now.is_some() && now != flushed {
                                if let Some(p) = now {
                                    if store.task_progress(&lease, &p).await.is_ok() {
                                        flushed = now;
                                    }
                                }
                            }
                            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                        }
                    }
                });
            })
            .ok();
        Heartbeat { stop, thread }
    }

    fn stop(mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// A readable, unique job id: creation time plus the start of the idempotency key.
fn job_id(now: Millis, key: &str) -> String {
    format!("job-{now}-{}", key.chars().filter(char::is_ascii_alphanumeric).take(12).collect::<String>())
}

fn fail(error: impl Into<String>, action: impl Into<String>) -> TaskFailure {
    TaskFailure { error: error.into(), recommended_action: action.into() }
}

fn outcome(bytes: u64, result: serde_json::Value) -> TaskOutcome {
    TaskOutcome { bytes: bytes as i64, result: result.to_string() }
}

/// The running task's latest progress, shared by the task (writer) and the heartbeat thread (which persists it).
type ProgressSlot = std::sync::Arc<std::sync::Mutex<Option<jobs::TaskProgress>>>;

struct Workflows<'a> {
    service: &'a Service,
    progress: ProgressSlot,
    /// The task being run, so the replicator's progress is recorded against it.
    current_task: std::sync::atomic::AtomicI64,
}

impl<'a> Workflows<'a> {
    fn new(service: &'a Service) -> Workflows<'a> {
        Workflows { service, progress: ProgressSlot::default(), current_task: std::sync::atomic::AtomicI64::new(-1) }
    }
}

impl Workflows<'_> {
    async fn update(
        &self,
        item: &str,
        f: impl FnOnce(&mut ItemRecord, &Inventory) -> Result<(), TaskFailure>,
    ) -> Result<(), TaskFailure> {
        let mut failure = None;
        self.service
            .estate
            .update(|doc| {
                let inv = doc.inventory.clone();
                let rec = doc.item_mut(item)?;
                if let Err(e) = f(rec, &inv) {
                    failure = Some(e);
                }
                Ok(())
            })
            .await
            .map_err(|e| fail(e.to_string(), "Check the estate folder and the server log."))?;
        failure.map_or(Ok(()), Err)
    }

    fn record(&self, item: &str) -> Result<(ItemRecord, Inventory), TaskFailure> {
        let doc = self.service.doc().map_err(|e| fail(e.to_string(), "Check the estate folder."))?;
        let rec = doc
            .items
            .iter()
            .find(|r| r.item.id == item)
            .cloned()
            .ok_or_else(|| fail(format!("no item {item}"), "Refresh the item list."))?;
        Ok((rec, doc.inventory))
    }

    /// One replication cycle over every disk pair, sharing one point id.
    fn cycle(
        &self,
        pairs: &[(String, String)],
        mode: replicator::Mode,
        consistency: replicator::Consistency,
    ) -> Result<(u64, String), TaskFailure> {
        let paths: Vec<(std::path::PathBuf, std::path::PathBuf)> =
            pairs.iter().map(|(s, d)| (self.service.estate.path(s), self.service.estate.path(d))).collect();
        let refs: Vec<(&Path, &Path)> = paths.iter().map(|(s, d)| (s.as_path(), d.as_path())).collect();
        let bandwidth = self.service.doc().ok().and_then(|d| d.replication.replication_bytes_per_s);
        let seq = self.current_task.load(std::sync::atomic::Ordering::Relaxed);
        let slot = self.progress.clone();
        let progress: Option<replicator::sync::ProgressFn> = (seq >= 0).then(|| {
            std::sync::Arc::new(move |p: &replicator::Progress| {
                if let Ok(mut s) = slot.lock() {
                    *s = Some(jobs::TaskProgress { seq, done: p.done, total: p.total, sent: p.sent });
                }
            }) as replicator::sync::ProgressFn
        });
        let opts = replicator::SyncOptions {
            mode,
            block_size: BLOCK_SIZE,
            consistency,
            bandwidth,
            progress,
            ..Default::default()
        };
        let reports = replicator::sync::sync_vm(&refs, &opts).map_err(|e| {
            fail(
                format!("replication failed: {e}"),
                "Fix the cause named above, then restart the job; the sync resumes where it stopped.",
            )
        })?;
        let bytes = reports.iter().map(|r| r.data_bytes).sum();
        let point = reports.first().map(|r| r.point.id.clone()).unwrap_or_default();
        Ok((bytes, point))
    }
}

fn vcenter_check(inv: &Inventory, host: &str) -> Result<(), TaskFailure> {
    if let Some(h) = inv.host(host) {
        if let Err(r) = crate::rules::r_c4_vcenter_connected(inv, h) {
            return Err(fail(format!("{} ({})", r.message, r.rule), r.recommended_action));
        }
    }
    Ok(())
}

impl TaskExecutor for Workflows<'_> {
    async fn before_finish(&self, job: &Job, end: JobState) -> Result<(), JobError> {
        self.service.settle(job, end).await.map_err(|e| match e {
            ServiceError::Job(j) => j,
            other => JobError::NotAllowed { job: format!("{} ({other})", job.id), state: "ending", action: "settle" },
        })
    }

    async fn run(&self, job: &Job, task: &Task) -> Result<TaskOutcome, TaskFailure> {
        self.current_task.store(task.seq, std::sync::atomic::Ordering::Relaxed);
        if let Some(item) = task.step.strip_prefix(PLAN_ITEM_FAILOVER) {
            return self.plan_item_failover(job, item).await;
        }
        let req: JobRequest = serde_json::from_str(&job.request)
            .map_err(|e| fail(format!("unreadable job request: {e}"), "Start the action again."))?;
        let step = Step::parse(&task.step)
            .ok_or_else(|| fail(format!("unknown step {}", task.step), "Start the action again."))?;
        self.exec_step(&req, step).await
    }
}

impl Workflows<'_> {
    /// One item of a recovery plan's failover: the item's own failover steps, at the point the plan chose for it.
    async fn plan_item_failover(&self, job: &Job, id: &str) -> Result<TaskOutcome, TaskFailure> {
        let estate_err = |e: ServiceError| fail(e.to_string(), "Check the estate folder.");
        let preq: PlanJobRequest = serde_json::from_str(&job.request)
            .map_err(|e| fail(format!("unreadable plan job: {e}"), "Start the plan failover again."))?;
        let point = preq
            .points
            .iter()
            .find(|(i, _)| i == id)
            .map(|(_, p)| p.clone())
            .ok_or_else(|| fail(format!("{id} has no point in this plan job"), "Start the plan failover again."))?;
        let (rec, _) = self.record(id)?;
        // Idempotent after a crash: an item already failed back to this point is done.
        if rec.item.state == State::FailedBackCommitPending && rec.failed_back_point.as_deref() == Some(point.as_str())
        {
            return Ok(outcome(0, serde_json::json!({"item": id, "point": point, "already": true})));
        }
        let resumed = match rec.item.state {
            State::ProtectedToPrimary => false,
            // Interrupted half-way by a crash: the steps are idempotent, run them again from the top.
            State::FailbackInProgress => true,
            _ => {
                return Err(fail(
                    format!("{id} is no longer protected to on-premises"),
                    "Check the item's state and fail it over on its own.",
                ))
            }
        };
        let request = Request { point: Some(PointChoice::Specific(point.clone())), ..Request::default() };
        let now = (self.service.clock)();
        let doc = self.service.doc().map_err(estate_err)?;
        let mut item = self.service.estate.view(&doc, id, now).map_err(|e| estate_err(e.into()))?;
        item.state = State::ProtectedToPrimary;
        let ctx = Context { now, active_job: None };
        let plan =
            lifecycle::dry_run(&item, &doc.inventory, Operation::Failover, &request, &ctx, &DataEstimate::default());
        if !plan.allowed && !resumed {
            let r = plan.refusals();
            return Err(fail(
                r.iter().map(|r| format!("{} ({})", r.message, r.rule)).collect::<Vec<_>>().join("; "),
                r.first().map(|r| r.recommended_action.clone()).unwrap_or_default(),
            ));
        }
        if !resumed {
            self.service.transition(id, Event::Started(Operation::Failover)).await.map_err(estate_err)?;
        }
        let sub = JobRequest { item: id.to_owned(), operation: Operation::Failover, request, plan };
        let mut bytes = 0u64;
        for t in sub.plan.tasks.clone() {
            match self.exec_step(&sub, t.step).await {
                Ok(o) => bytes += o.bytes as u64,
                Err(f) => {
                    let _ = self.service.transition(id, Event::Failed(Operation::Failover)).await;
                    return Err(f);
                }
            }
        }
        self.service.transition(id, Event::Succeeded(Operation::Failover)).await.map_err(estate_err)?;
        Ok(outcome(bytes, serde_json::json!({"item": id, "point": point})))
    }

    /// Powers the item's VM on one site on or off.
    async fn power(&self, id: &str, site: Site, on: bool) -> Result<TaskOutcome, TaskFailure> {
        self.update(id, |r, _| {
            match site {
                Site::Primary => r.onprem_power = on,
                Site::Recovery => r.cloud_power = on,
            }
            Ok(())
        })
        .await?;
        let key = if site == Site::Primary { "onprem_power" } else { "cloud_power" };
        Ok(outcome(0, serde_json::json!({ key: on })))
    }

    async fn exec_step(&self, req: &JobRequest, step: Step) -> Result<TaskOutcome, TaskFailure> {
        let id = req.item.as_str();
        let plan = &req.plan;
        match step {
            Step::PowerOffOnPrem | Step::ShutDownOnPrem | Step::ShutDownOnPremForCloud => {
                self.power(id, Site::Primary, false).await
            }
            Step::CreateOnPremVm => {
                let (rec, _) = self.record(id)?;
                let ds = plan.target_datastore.clone().unwrap_or_default();
                let mut disks = Vec::new();
                for (i, c) in rec.cloud_disks.iter().enumerate() {
                    let rel = format!("primary/{ds}/{id}/disk{i}.vmdk");
                    let path = self.service.estate.path(&rel);
                    if !path.exists() {
                        let size = replicator::DiskImage::open(&self.service.estate.path(c))
                            .map_err(|e| fail(e.to_string(), "Check the cloud disk."))?
                            .size;
                        std::fs::create_dir_all(path.parent().unwrap())
                            .map_err(|e| fail(e.to_string(), "Check the datastore folder."))?;
                        replicator::DiskImage::create(&path, replicator::Format::Vmdk, size)
                            .map_err(|e| fail(e.to_string(), "Free space on the datastore."))?;
                    }
                    disks.push(rel);
                }
                let host = plan.target_host.clone().unwrap_or_default();
                self.update(id, |r, _| {
                    r.replica_disks = disks.clone();
                    r.onprem_disks = disks.clone();
                    r.item.onprem = Some(OnPremVm {
                        id: format!("vm-{id}"),
                        host,
                        exists: true,
                        disks: disks
                            .iter()
                            .enumerate()
                            .map(|(i, _)| OnPremDisk {
                                id: format!("disk{i}"),
                                datastore: ds.clone(),
                                size_bytes: 0,
                                attached: true,
                            })
                            .collect(),
                    });
                    Ok(())
                })
                .await?;
                Ok(outcome(0, serde_json::json!({"created": disks})))
            }
            Step::InitialReplication | Step::ResumeReplication => {
                let (rec, _) = self.record(id)?;
                if rec.replica_disks.is_empty() {
                    // Original location: the on-premises VM's own disks become the replica.
                    self.update(id, |r, _| {
                        r.replica_disks = r.onprem_disks.clone();
                        Ok(())
                    })
                    .await?;
                }
                let (rec, _) = self.record(id)?;
                let pairs: Vec<(String, String)> =
                    rec.cloud_disks.iter().cloned().zip(rec.replica_disks.iter().cloned()).collect();
                let mode = if plan.transfer == Some(lifecycle::Transfer::Full) {
                    replicator::Mode::Full
                } else {
                    replicator::Mode::Delta
                };
                let (bytes, point) = self.cycle(&pairs, mode, replicator::Consistency::CrashConsistent)?;
                self.update(id, |r, _| {
                    r.item.initial_sync_percent = 100;
                    r.item.master_target = req.request.master_target.clone().or(r.item.master_target.take());
                    r.item.process_server = req.request.process_server.clone().or(r.item.process_server.take());
                    Ok(())
                })
                .await?;
                Ok(outcome(bytes, serde_json::json!({"mode": format!("{mode}"), "bytes_sent": bytes, "point": point})))
            }
            Step::StartReplication | Step::StartReplicationToCloud => {
                // The first app-consistent point of the new direction, with the guest quiesced.
                let (rec, _) = self.record(id)?;
                let pairs: Vec<(String, String)> = if step == Step::StartReplication {
                    rec.cloud_disks.iter().cloned().zip(rec.replica_disks.iter().cloned()).collect()
                } else {
                    rec.onprem_disks.iter().cloned().zip(rec.cloud_disks.iter().cloned()).collect()
                };
                let (bytes, point) =
                    self.cycle(&pairs, replicator::Mode::Auto, replicator::Consistency::AppConsistent)?;
                Ok(outcome(bytes, serde_json::json!({"point": point, "consistency": "app-consistent"})))
            }
            Step::ShutDownCloudVm => self.power(id, Site::Recovery, false).await,
            Step::FinalCycle => {
                let (rec, _) = self.record(id)?;
                let pairs: Vec<(String, String)> =
                    rec.cloud_disks.iter().cloned().zip(rec.replica_disks.iter().cloned()).collect();
                let (bytes, point) =
                    self.cycle(&pairs, replicator::Mode::Auto, replicator::Consistency::CrashConsistent)?;
                Ok(outcome(bytes, serde_json::json!({"point": point})))
            }
            Step::MaterialiseDisks => {
                let (rec, _) = self.record(id)?;
                let point_id = match (&req.request.point, &plan.point) {
                    (Some(PointChoice::Latest), _) => self
                        .service
                        .estate
                        .points(&rec)
                        .map_err(|e| fail(e.to_string(), "Check the replica disks."))?
                        .last()
                        .map(|p| p.id.clone()),
                    (_, Some(p)) => Some(p.id.clone()),
                    _ => None,
                }
                .ok_or_else(|| {
                    fail("no recovery point to fail back to (R-RP3)", "Wait for the first recovery point.")
                })?;
                let mut out = Vec::new();
                let mut bytes = 0;
                for r in &rec.replica_disks {
                    let replica = replicator::DiskImage::open(&self.service.estate.path(r))
                        .map_err(|e| fail(e.to_string(), "Check the replica disk."))?;
                    let journal = replicator::journal::Journal::open(&replica.state_dir().join("points"))
                        .map_err(|e| fail(e.to_string(), "Check the replica's journal."))?;
                    let seq = journal.points().iter().find(|p| p.id == point_id).map(|p| p.seq).ok_or_else(|| {
                        fail(format!("point {point_id} is gone from {r}"), "Choose another recovery point.")
                    })?;
                    let rel = r.replace(".vmdk", "-failback.vmdk");
                    let target = self.service.estate.path(&rel);
                    // Idempotent: a rerun after a crash materialises again from scratch.
                    let _ = std::fs::remove_file(&target);
                    let _ = std::fs::remove_file(
                        target.with_file_name(format!("{}-flat.vmdk", target.file_stem().unwrap().to_string_lossy())),
                    );
                    journal
                        .restore(&replica, seq, &target)
                        .map_err(|e| fail(e.to_string(), "Free space on the datastore, then restart the job."))?;
                    bytes += replica.size;
                    out.push(rel);
                }
                self.update(id, |r, _| {
                    r.failed_back_point = Some(point_id.clone());
                    Ok(())
                })
                .await?;
                Ok(outcome(bytes, serde_json::json!({"point": point_id, "disks": out})))
            }
            Step::ReattachDisks => {
                let (rec, inv) = self.record(id)?;
                let host = rec.item.onprem.as_ref().map(|v| v.host.clone()).unwrap_or_default();
                vcenter_check(&inv, &host)?;
                self.update(id, |r, _| {
                    r.onprem_disks = r.replica_disks.iter().map(|d| d.replace(".vmdk", "-failback.vmdk")).collect();
                    Ok(())
                })
                .await?;
                Ok(outcome(0, serde_json::json!({"attached": true})))
            }
            Step::VmwareTools => {
                let (rec, _) = self.record(id)?;
                let (state, to_cloud) = (rec.item.os.family, req.operation == Operation::FailoverToCloud);
                let tools = match (state, to_cloud) {
                    (OsFamily::Windows, false) => "enabled",
                    (OsFamily::Linux, false) => "installed",
                    (OsFamily::Windows, true) => "disabled",
                    (OsFamily::Linux, true) => "uninstalled",
                };
                self.update(id, |r, _| {
                    r.vmware_tools = tools.into();
                    Ok(())
                })
                .await?;
                Ok(outcome(0, serde_json::json!({"vmware_tools": tools})))
            }
            Step::PowerOnOnPrem => {
                let now = (self.service.clock)();
                self.update(id, |r, _| {
                    r.onprem_power = true;
                    r.item.booted_at = Some(now);
                    r.item.agent_registered = false;
                    Ok(())
                })
                .await?;
                Ok(outcome(0, serde_json::json!({"onprem_power": true})))
            }
            Step::DeleteCloudVm => {
                let (rec, _) = self.record(id)?;
                for c in &rec.cloud_disks {
                    let p = self.service.estate.path(c);
                    if let Ok(img) = replicator::DiskImage::open(&p) {
                        let _ = std::fs::remove_dir_all(img.state_dir());
                    }
                    match std::fs::remove_file(&p) {
                        Ok(()) => {}
                        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                        Err(e) => {
                            return Err(fail(
                                format!("cannot delete {c}: {e}"),
                                "Check the cloud folder's permissions.",
                            ))
                        }
                    }
                }
                self.update(id, |r, _| {
                    if let Some(vm) = &mut r.item.cloud_vm {
                        vm.deleted = true;
                        vm.running = false;
                    }
                    r.cloud_power = false;
                    Ok(())
                })
                .await?;
                Ok(outcome(0, serde_json::json!({"deleted": rec.cloud_disks})))
            }
            Step::MarkCommitted | Step::CommitInCloud => Ok(outcome(0, serde_json::json!({}))),
            Step::RestartCloudVm => {
                // The on-premises VM goes back to its replica disks; the cloud VM runs again.
                self.update(id, |r, _| {
                    r.onprem_disks = r.replica_disks.clone();
                    Ok(())
                })
                .await?;
                self.power(id, Site::Recovery, true).await
            }
            Step::CheckAgent => {
                let now = (self.service.clock)();
                let doc = self.service.doc().map_err(|e| fail(e.to_string(), "Check the estate folder."))?;
                let item = self
                    .service
                    .estate
                    .view(&doc, id, now)
                    .map_err(|e| fail(e.to_string(), "Check the estate folder."))?;
                crate::rules::r_a1_agent_registered(&item, now)
                    .map_err(|r| fail(format!("{} ({})", r.message, r.rule), r.recommended_action))?;
                Ok(outcome(0, serde_json::json!({"agent_registered": true})))
            }
            Step::InitialReplicationToCloud => {
                let (rec, _) = self.record(id)?;
                let mut cloud = Vec::new();
                for (i, _) in rec.onprem_disks.iter().enumerate() {
                    cloud.push(format!("recovery/{id}/reprotected-disk{i}.vhd"));
                }
                let pairs: Vec<(String, String)> =
                    rec.onprem_disks.iter().cloned().zip(cloud.iter().cloned()).collect();
                for (_, c) in &pairs {
                    let _ = std::fs::create_dir_all(self.service.estate.path(c).parent().unwrap());
                }
                let (bytes, point) =
                    self.cycle(&pairs, replicator::Mode::Auto, replicator::Consistency::CrashConsistent)?;
                self.update(id, |r, _| {
                    r.cloud_disks = cloud.clone();
                    if let Some(vm) = &mut r.item.cloud_vm {
                        vm.deleted = false;
                        vm.running = false;
                    }
                    Ok(())
                })
                .await?;
                Ok(outcome(bytes, serde_json::json!({"point": point, "disks": cloud})))
            }
            Step::CreateCloudVm => Err(fail(
                "failover to the cloud is not available in the local estate yet",
                "Use the cloud provider's console for the forward failover.",
            )),
        }
    }
}
