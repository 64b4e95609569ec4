//! The steps of every workflow (reprotect, failover, commit, cancel failover, re-protect, a recovery plan's
//! failover) as one task executor over the local estate and the replicator. Each step is idempotent: after a crash
//! or a lost lease the interrupted step runs again, and a sync resumes from its durable cursor.

use std::collections::HashMap;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use crate::agent_cycle::Route;
use crate::assignments::BlobAccess;
use crate::assignments::Fence;
use crate::domain::*;
use crate::estate::{EstateError, ItemRecord};
use crate::jobs::{self, Job, JobError, JobState, Task, TaskExecutor, TaskFailure, TaskOutcome};
use crate::lifecycle::{self, Context, DataEstimate, Event, Operation, Request, State, Step};
use crate::points::PointChoice;
use crate::primary_site::VcenterSite;
use crate::recovery_site::{CloudVmSite, RecoverySite};
use crate::service::{plan_item_task, JobRequest, PlanJobRequest, Service, ServiceError, BLOCK_SIZE};

/// A failure only a person can cure: the job ends with it at once.
pub(crate) fn fail(error: impl Into<String>, action: impl Into<String>) -> TaskFailure {
    TaskFailure::fatal(error, action)
}

/// A plan task whose item may not take its operation now: the item, every refusal with its rule, and the first
/// refusal's recommended action.
fn refused(id: &str, plan: &lifecycle::Plan) -> TaskFailure {
    let r = plan.refusals();
    fail(
        format!("{id}: {}", r.iter().map(|r| format!("{} ({})", r.message, r.rule)).collect::<Vec<_>>().join("; ")),
        r.first().map(|r| r.recommended_action.clone()).unwrap_or_default(),
    )
}

pub(crate) fn outcome(bytes: u64, result: serde_json::Value) -> TaskOutcome {
    TaskOutcome { bytes: bytes as i64, result: result.to_string() }
}

/// Cloud disks that are page blobs: the estate's path of each → the storage-account connection that holds it.
pub(crate) type Blobs = HashMap<String, String>;

/// The item's cloud disks that are page blobs (all of them once it is bound to a storage account), plus `extra`
/// disks it is about to have there.
pub(crate) fn blobs_of(rec: &ItemRecord, extra: &[String]) -> Blobs {
    match &rec.cloud_storage {
        Some(conn) => rec.cloud_disks.iter().chain(extra).map(|d| (d.clone(), conn.clone())).collect(),
        None => Blobs::new(),
    }
}

fn blob_access(
    account: &str,
    c: &crate::connectors::azure_blob::Container,
    blob: &str,
    sas: String,
    snapshot: Option<String>,
    etag: String,
    size: u64,
) -> BlobAccess {
    let config = c.config_with_sas(sas);
    BlobAccess {
        account: account.to_owned(),
        url: config.url,
        container: config.container,
        blob: blob.to_owned(),
        sas: match config.credential {
            crate::connectors::azure_blob::Credential::Sas(s) => s,
            crate::connectors::azure_blob::Credential::SharedKey(_) => String::new(),
        },
        thumbprint: config.thumbprint.map(|t| t.to_string()),
        snapshot,
        etag,
        size,
    }
}

/// The running task's latest progress, shared by the task (writer) and the heartbeat thread (which persists it).
/// The running tasks' progress by task, flushed by the job's heartbeat.
pub(crate) type ProgressSlot = Arc<Mutex<std::collections::BTreeMap<i64, jobs::TaskProgress>>>;

pub(crate) struct Workflows<'a> {
    pub(crate) service: &'a Service,
    pub(crate) progress: ProgressSlot,
    /// The task being run, so the replicator's progress is recorded against it.
    current_task: AtomicI64,
    /// Set when the step must stop now (lease lost, job cancelled, node shutting down): the sync checks it at every
    /// chunk.
    pub(crate) cancel: Arc<AtomicBool>,
    /// Set when the node is shutting down: a step stopped by it is handed back, not failed.
    pub(crate) stopping: Arc<AtomicBool>,
    /// Milliseconds the running task has spent moving disk bytes (syncs, restores).
    data_ms: AtomicU64,
    /// The claim this executor runs under, handed to the agents with each cycle so that they stop when it is lost.
    pub(crate) fence: Option<Fence>,
    /// How the running task's last cycle went between agents (added to the task's result).
    link: Mutex<Option<serde_json::Value>>,
    /// The group of each item of the recovery plan job being run (read from its request once).
    plan_groups: Mutex<Option<(String, HashMap<String, usize>)>>,
}

impl<'a> Workflows<'a> {
    pub(crate) fn new(
        service: &'a Service,
        cancel: Arc<AtomicBool>,
        stopping: Arc<AtomicBool>,
        fence: Option<Fence>,
    ) -> Workflows<'a> {
        Workflows {
            service,
            progress: ProgressSlot::default(),
            current_task: AtomicI64::new(-1),
            cancel,
            stopping,
            data_ms: AtomicU64::new(0),
            fence,
            link: Mutex::new(None),
            plan_groups: Mutex::new(None),
        }
    }

    /// An executor for one of several tasks that run at once: the same claim, cancel and progress, its own task.
    fn fork(&self) -> Workflows<'a> {
        let mut w = Workflows::new(self.service, self.cancel.clone(), self.stopping.clone(), self.fence.clone());
        w.progress = self.progress.clone();
        w
    }

    pub(crate) fn current_task(&self) -> i64 {
        self.current_task.load(Ordering::Relaxed)
    }

    pub(crate) fn add_data_ms(&self, ms: u64) {
        self.data_ms.fetch_add(ms, Ordering::Relaxed);
    }

    pub(crate) fn note_link(&self, v: serde_json::Value) {
        *self.link.lock().unwrap_or_else(|p| p.into_inner()) = Some(v);
    }
}

impl Workflows<'_> {
    pub(crate) async fn update(
        &self,
        item: &str,
        f: impl FnOnce(&mut ItemRecord, &Inventory) -> Result<(), TaskFailure>,
    ) -> Result<(), TaskFailure> {
        let mut failure = None;
        self.service
            .estate
            .update_item(item, |rec, inv| {
                if let Err(e) = f(rec, inv) {
                    failure = Some(e);
                }
                Ok(())
            })
            .await
            .map_err(|e| fail(e.to_string(), "Check the database and the server log."))?;
        failure.map_or(Ok(()), Err)
    }

    pub(crate) async fn record(&self, item: &str) -> Result<(ItemRecord, Inventory), TaskFailure> {
        self.service.estate.item(item).await.map_err(|e| match e {
            EstateError::UnknownItem(_) => fail(format!("no item {item}"), "Refresh the item list."),
            other => TaskFailure::retryable(other.to_string(), "Check the database and the server log."),
        })
    }

    /// One replication cycle over every disk pair, sharing one point id. A failure is worth retrying (the sync
    /// resumes from its cursor), unless the cycle was stopped on purpose.
    pub(crate) async fn cycle(
        &self,
        route: &Route,
        pairs: &[(String, String)],
        mode: replicator::Mode,
        consistency: replicator::Consistency,
        blobs: &Blobs,
        retention: replicator::journal::Retention,
    ) -> Result<(u64, String), TaskFailure> {
        let bandwidth = self.service.estate.policy().await.ok().and_then(|p| p.replication_bytes_per_s);
        let on_blobs = pairs.iter().any(|(s, d)| blobs.contains_key(s) || blobs.contains_key(d));
        if let Some((sender, receiver)) = self.agents_for(route).await? {
            if let Some(named) = self.through_agents(pairs, &sender, &receiver).await? {
                // Cloud disks that are page blobs: the agents hold their cache, each handed a SAS for its blob.
                let (access, snapshots) = self.blob_access(pairs, blobs).await?;
                let disks = named
                    .into_iter()
                    .zip(access)
                    .map(|((source, target), (source_blob, target_blob))| crate::assignments::DiskPair {
                        source,
                        target,
                        source_blob,
                        target_blob,
                    })
                    .collect();
                let how = crate::agent_cycle::CycleTerms { mode, consistency, bandwidth, retention };
                let done = self.agent_cycle(&sender, &receiver, disks, how).await;
                for (site, blob, snapshot) in snapshots {
                    if let Err(e) = site.container().delete_snapshot(&blob, &snapshot).await {
                        tracing::warn!(blob, snapshot, error = %e, "a snapshot of a cloud disk could not be deleted");
                    }
                }
                return done;
            }
        }
        let mut sites: HashMap<String, RecoverySite> = HashMap::new();
        let mut blob_read = 0;
        for (s, _) in pairs {
            if let Some(conn) = blobs.get(s) {
                if !sites.contains_key(conn) {
                    sites.insert(conn.clone(), RecoverySite::open(&self.service.connections, conn).await?);
                }
                blob_read += sites[conn].pull(s, &self.service.estate.path(s)).await?;
            }
        }
        let paths: Vec<(std::path::PathBuf, std::path::PathBuf)> =
            pairs.iter().map(|(s, d)| (self.service.estate.path(s), self.service.estate.path(d))).collect();
        let seq = self.current_task.load(Ordering::Relaxed);
        let slot = self.progress.clone();
        let progress: Option<replicator::sync::ProgressFn> = (seq >= 0).then(|| {
            std::sync::Arc::new(move |p: &replicator::Progress| {
                if let Ok(mut s) = slot.lock() {
                    s.insert(seq, jobs::TaskProgress { seq, done: p.done, total: p.total, sent: p.sent });
                }
            }) as replicator::sync::ProgressFn
        });
        let opts = replicator::SyncOptions {
            mode,
            block_size: BLOCK_SIZE,
            consistency,
            bandwidth,
            retention,
            progress,
            cancel: Some(self.cancel.clone()),
            ..Default::default()
        };
        let started = std::time::Instant::now();
        // Disk-bound: off the async threads, so the other items of a recovery plan's group sync at the same time.
        let reports = tokio::task::spawn_blocking(move || {
            let refs: Vec<(&Path, &Path)> = paths.iter().map(|(s, d)| (s.as_path(), d.as_path())).collect();
            replicator::sync::sync_vm(&refs, &opts)
        })
        .await
        .unwrap_or_else(|e| Err(replicator::Error::Invalid(format!("the sync stopped on an internal error: {e}"))));
        self.data_ms.fetch_add(started.elapsed().as_millis() as u64, Ordering::Relaxed);
        let reports = reports.map_err(|e| {
            if self.cancel.load(Ordering::Relaxed) {
                fail(
                    format!("replication stopped: {e}"),
                    "Nothing to do: the sync resumes from its cursor when the job runs again.",
                )
            } else {
                TaskFailure::retryable(
                    format!("replication failed: {e}"),
                    "Fix the cause named above, then restart the job; the sync resumes where it stopped.",
                )
            }
        })?;
        let bytes = reports.iter().map(|r| r.data_bytes).sum();
        let point = reports.first().map(|r| r.point.id.clone()).unwrap_or_default();
        let mut blob_written = 0;
        for (_, d) in pairs {
            if let Some(conn) = blobs.get(d) {
                if !sites.contains_key(conn) {
                    sites.insert(conn.clone(), RecoverySite::open(&self.service.connections, conn).await?);
                }
                blob_written += sites[conn].push(d, &self.service.estate.path(d)).await?;
            }
        }
        if on_blobs {
            // What crossed to and from the storage account, beside what the sync moved between the two copies.
            let account: Vec<&String> = sites.keys().collect();
            self.note_link(serde_json::json!({
                "storage_account": account, "blob_bytes_read": blob_read, "blob_bytes_written": blob_written,
            }));
        }
        Ok((bytes, point))
    }
}

impl Workflows<'_> {
    /// The disk pairs as the two agents name them, or `None` when this node moves the cycle itself: a disk on a
    /// connected vCenter's datastore (an absolute path in the folder this node reaches) goes through the agents only
    /// when the agent at its end mounts that datastore (`--datastore`), and is then named `[datastore] path`.
    pub(crate) async fn through_agents(
        &self,
        pairs: &[(String, String)],
        sender: &crate::agents::Agent,
        receiver: &crate::agents::Agent,
    ) -> Result<Option<Vec<(String, String)>>, TaskFailure> {
        if !pairs.iter().any(|(s, d)| Path::new(s).is_absolute() || Path::new(d).is_absolute()) {
            return Ok(Some(pairs.to_vec()));
        }
        let vcenters = self.service.connections.vcenters().await.map_err(|e| {
            TaskFailure::retryable(format!("the site connections cannot be read: {e}"), "Check the database.")
        })?;
        let name = |path: &str, agent: &crate::agents::Agent| -> Option<String> {
            if !Path::new(path).is_absolute() {
                return Some(path.to_owned());
            }
            let (datastore, named) = crate::primary_site::in_datastore(&vcenters, Path::new(path))?;
            let mounts = agent.inventory.as_ref().is_some_and(|i| i.datastores.contains(&datastore));
            mounts.then_some(named)
        };
        Ok(pairs.iter().map(|(s, d)| Some((name(s, sender)?, name(d, receiver)?))).collect())
    }

    /// What the agents need to reach the page blobs among `pairs`: a snapshot of each source blob (one instant of a
    /// disk the cloud VM may be writing) with a SAS to read it, and a SAS to write each target blob; plus the
    /// snapshots to delete once the cycle has ended.
    #[allow(clippy::type_complexity)]
    async fn blob_access(
        &self,
        pairs: &[(String, String)],
        blobs: &Blobs,
    ) -> Result<(Vec<(Option<BlobAccess>, Option<BlobAccess>)>, Vec<(RecoverySite, String, String)>), TaskFailure> {
        let until = time::OffsetDateTime::now_utc() + time::Duration::hours(6);
        let mut access = Vec::new();
        let mut snapshots = Vec::new();
        for (s, d) in pairs {
            let mut pair = (None, None);
            if let Some(conn) = blobs.get(s) {
                let site = RecoverySite::open(&self.service.connections, conn).await?;
                let blob = crate::recovery_site::blob_name(s);
                let c = site.container();
                let failure = |e| {
                    fail(
                        format!("storage account {conn}, read {blob}: {e}"),
                        format!("Fix the cause in storage account {conn}, then restart the job."),
                    )
                };
                let props = c.properties(&blob).await.map_err(failure)?;
                let snapshot = c.snapshot(&blob).await.map_err(failure)?;
                let sas = c.blob_sas(&blob, Some(&snapshot), "r", until);
                pair.0 = Some(blob_access(conn, c, &blob, sas, Some(snapshot.clone()), props.etag, props.size));
                snapshots.push((site, blob, snapshot));
            }
            if let Some(conn) = blobs.get(d) {
                let site = RecoverySite::open(&self.service.connections, conn).await?;
                let blob = crate::recovery_site::blob_name(d);
                let sas = site.container().blob_sas(&blob, None, "rcw", until);
                pair.1 = Some(blob_access(conn, site.container(), &blob, sas, None, String::new(), 0));
            }
            access.push(pair);
        }
        Ok((access, snapshots))
    }

    /// The agents that move an item's cycle in one direction, by the reprotect's choices or the item's record.
    pub(crate) fn route(&self, rec: &ItemRecord, inv: &Inventory, to_primary: bool, req: &JobRequest) -> Route {
        let (ps, mt) = (req.request.process_server.as_deref(), req.request.master_target.as_deref());
        Route::for_item(&rec.item, inv, to_primary, ps, mt)
    }
}

impl Workflows<'_> {
    /// One cycle of the item's disk `pairs` through `route`, with its page blobs (and `extra` disks about to be
    /// blobs) and its retention.
    async fn item_cycle(
        &self,
        rec: &ItemRecord,
        route: &Route,
        pairs: &[(String, String)],
        mode: replicator::Mode,
        consistency: replicator::Consistency,
        extra: &[String],
    ) -> Result<(u64, String), TaskFailure> {
        let done = self.cycle(route, pairs, mode, consistency, &blobs_of(rec, extra), retention(rec)).await?;
        // A job's cycle is the item's latest one: the replication rounds count their interval from it.
        let now = (self.service.clock)();
        self.update(&rec.item.id, |r, _| {
            r.last_cycle_at = now;
            if consistency == replicator::Consistency::AppConsistent {
                r.last_app_cycle_at = now;
            }
            Ok(())
        })
        .await?;
        Ok(done)
    }
}

/// How long the item's replica keeps recovery points (its protection settings).
pub(crate) fn retention(rec: &ItemRecord) -> replicator::journal::Retention {
    replicator::journal::Retention { max_age_ms: Some(rec.item.protection.retention_ms()), max_points: None }
}

/// The VM an alternate-location reprotect made: on `host`, one disk per size on datastore `ds`.
fn new_vm(id: String, host: String, ds: &str, sizes: &[u64]) -> OnPremVm {
    let disks = sizes
        .iter()
        .enumerate()
        .map(|(i, &size_bytes)| OnPremDisk {
            id: format!("disk{i}"),
            datastore: ds.to_owned(),
            size_bytes,
            attached: true,
        })
        .collect();
    OnPremVm { id, host, exists: true, disks }
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
    async fn on_finish(&self, tx: &mut sqlx::AnyConnection, job: &Job, end: JobState) -> Result<(), JobError> {
        Service::settle_on(tx, job, end).await.map_err(|e| match e {
            EstateError::Db(d) => JobError::Db(d),
            other => JobError::NotAllowed { job: format!("{} ({other})", job.id), state: "ending", action: "settle" },
        })
    }

    fn item_of(&self, job: &Job, task: &Task) -> Option<String> {
        plan_item_task(&task.step).map(|(item, _)| item.to_owned()).or_else(|| job.item_id.clone())
    }

    fn stopping(&self) -> bool {
        self.stopping.load(Ordering::Relaxed)
    }

    /// A recovery plan's items of one group run side by side.
    fn side_by_side(&self, job: &Job, task: &Task) -> Option<String> {
        let (item, _) = plan_item_task(&task.step)?;
        let mut cached = self.plan_groups.lock().unwrap_or_else(|p| p.into_inner());
        if cached.as_ref().is_none_or(|(id, _)| id != &job.id) {
            let groups = serde_json::from_str::<PlanJobRequest>(&job.request).map(|r| r.groups).unwrap_or_default();
            let of = groups.into_iter().enumerate().flat_map(|(g, items)| items.into_iter().map(move |i| (i, g)));
            *cached = Some((job.id.clone(), of.collect()));
        }
        cached.as_ref().and_then(|(_, of)| of.get(item)).map(|g| format!("group {}", g + 1))
    }

    /// Each task with an executor of its own (its progress, bytes and link), all on this claim. The disk-bound
    /// parts of the steps run on blocking threads, so the items really move at the same time.
    async fn run_together(&self, job: &Job, tasks: &[&Task]) -> Vec<Result<TaskOutcome, TaskFailure>> {
        let forks: Vec<Workflows> = tasks.iter().map(|_| self.fork()).collect();
        let runs = forks.iter().zip(tasks).map(|(w, t)| jobs::guarded(job, t, w.run(job, t)));
        futures_util::future::join_all(runs).await
    }

    async fn run(&self, job: &Job, task: &Task) -> Result<TaskOutcome, TaskFailure> {
        self.current_task.store(task.seq, Ordering::Relaxed);
        self.data_ms.store(0, Ordering::Relaxed);
        *self.link.lock().unwrap_or_else(|p| p.into_inner()) = None;
        let mut out = if let Some((item, op)) = plan_item_task(&task.step) {
            match op {
                Operation::Failover => self.plan_item_failover(job, item).await?,
                Operation::TestFailover | Operation::CleanupTestFailover => self.plan_item_drill(job, item, op).await?,
                _ => self.plan_item_op(job, item, op).await?,
            }
        } else {
            let req: JobRequest = serde_json::from_str(&job.request)
                .map_err(|e| fail(format!("unreadable job request: {e}"), "Start the action again."))?;
            let step = Step::parse(&task.step)
                .ok_or_else(|| fail(format!("unknown step {}", task.step), "Start the action again."))?;
            self.exec_step(&job.id, &req, step).await?
        };
        // The time the task spent moving disk bytes, so the rest — the orchestration's own cost — can be told.
        if let Ok(serde_json::Value::Object(mut m)) = serde_json::from_str(&out.result) {
            m.insert("data_ms".into(), self.data_ms.load(Ordering::Relaxed).into());
            // Through the site agents: which two, and the bytes on the wire (TLS included).
            if let Some(serde_json::Value::Object(link)) = self.link.lock().unwrap_or_else(|p| p.into_inner()).take() {
                m.extend(link);
            }
            out.result = serde_json::Value::Object(m).to_string();
        }
        Ok(out)
    }
}

impl Workflows<'_> {
    /// The kept blocks a failover or drill lays over its point, when its request chose a kept copy (SB-3), checked
    /// against the item's disks as they are now.
    pub(crate) fn kept_overlay(&self, rec: &ItemRecord, req: &JobRequest) -> Result<Option<KeptCopy>, TaskFailure> {
        let Some(PointChoice::KeptCopy(job)) = &req.request.point else { return Ok(None) };
        let k = crate::points::kept_copy(&rec.item, job).map_err(|r| fail(r.message, r.recommended_action))?;
        if k.files.len() != rec.replica_disks.len() {
            return Err(fail(
                format!("job {job} kept {} disks' blocks; the replica has {}", k.files.len(), rec.replica_disks.len()),
                "Choose a recovery point instead.",
            ));
        }
        Ok(Some(k.clone()))
    }

    /// Writes recovery point `point_id` of the disk `from` (its journal undoes the newer writes) as a new image
    /// `to`, in the format its name gives; returns the disk's size. Idempotent: a rerun after a crash starts over.
    /// Disk-bound: it runs off the async threads, so the other items of a recovery plan's group go on meanwhile.
    /// `overlay`: a split-brain's kept blocks and their map (relative to the estate), laid over the point afterwards.
    pub(crate) async fn materialise(
        &self,
        from: &str,
        point_id: &str,
        to: &str,
        no_space: &str,
        overlay: Option<(&str, &str)>,
    ) -> Result<u64, TaskFailure> {
        let (source, target) = (self.service.estate.path(from), self.service.estate.path(to));
        let overlay = overlay.map(|(k, m)| (self.service.estate.path(k), self.service.estate.path(m)));
        let (from, point_id, to, no_space) = (from.to_owned(), point_id.to_owned(), to.to_owned(), no_space.to_owned());
        let (size, ms) = tokio::task::spawn_blocking(move || {
            let disk = replicator::DiskImage::open(&source)
                .map_err(|e| fail(e.to_string(), format!("Check the disk {from}.")))?;
            let journal = replicator::journal::Journal::open(&disk.state_dir().join("points"))
                .map_err(|e| fail(e.to_string(), format!("Check the recovery-point journal of {from}.")))?;
            let seq = journal.points().iter().find(|p| p.id == point_id).map(|p| p.seq).ok_or_else(|| {
                fail(format!("point {point_id} is gone from {from}"), "Choose another recovery point.")
            })?;
            let _ = std::fs::remove_file(&target);
            if to.ends_with(".vmdk") {
                let stem = target.file_stem().unwrap_or_default().to_string_lossy().into_owned();
                let _ = std::fs::remove_file(target.with_file_name(format!("{stem}-flat.vmdk")));
            }
            let started = std::time::Instant::now();
            journal.restore(&disk, seq, &target).map_err(|e| fail(e.to_string(), &no_space))?;
            if let Some((kept, map)) = &overlay {
                crate::split_brain::lay_kept_blocks(kept, map, &target).map_err(|e| {
                    fail(e.to_string(), format!("Check the kept blocks in {}; {no_space}", kept.display()))
                })?;
            }
            Ok::<_, TaskFailure>((disk.size, started.elapsed().as_millis() as u64))
        })
        .await
        .map_err(|e| fail(format!("the restore stopped on an internal error: {e}"), "Restart the job."))??;
        self.data_ms.fetch_add(ms, Ordering::Relaxed);
        Ok(size)
    }

    /// Original location on a connected vCenter: the item's VM there (by the item's name, as the rules saw it in the
    /// dry run) becomes the item's on-premises VM in the estate, and its disks the files in their datastores'
    /// folders. Nothing to do for a VM of the local estate or one bound already.
    async fn bind_vcenter_vm(&self, id: &str) -> Result<(), TaskFailure> {
        let doc = self
            .service
            .doc()
            .await
            .map_err(|e| TaskFailure::retryable(e.to_string(), "Check the database and the server log."))?;
        let Some(seen) = doc.items.iter().find(|r| r.item.id == id) else { return Ok(()) };
        let (rec, _) = self.record(id).await?;
        if seen.item.onprem == rec.item.onprem && seen.onprem_disks == rec.onprem_disks {
            return Ok(());
        }
        let vm = seen.item.onprem.clone();
        if seen.onprem_disks.is_empty() {
            let name = vm.as_ref().map(|v| v.id.clone()).unwrap_or_default();
            return Err(fail(
                format!("the disks of VM {name} are on datastores whose files this node cannot reach"),
                "Mount the datastores' folders on this node, or move the disks through a master-target agent.",
            ));
        }
        let disks = seen.onprem_disks.clone();
        self.update(id, |r, _| {
            r.item.onprem = vm;
            r.onprem_disks = disks;
            Ok(())
        })
        .await
    }

    /// The cloud VM's disks as page blobs of a connected storage account: the item is bound to the account whose
    /// container holds them all (its cloud disk files become this node's cache of them), and the cache is brought up
    /// to the blobs. Nothing to do for an item whose cloud disks are the local estate's.
    async fn bind_cloud_blobs(&self, id: &str) -> Result<(), TaskFailure> {
        let (rec, _) = self.record(id).await?;
        let conn = match &rec.cloud_storage {
            Some(c) => c.clone(),
            None => {
                let Some(c) = crate::recovery_site::find(&self.service.connections, &rec.cloud_disks).await? else {
                    return Ok(());
                };
                self.update(id, |r, _| {
                    r.cloud_storage = Some(c.clone());
                    Ok(())
                })
                .await?;
                c
            }
        };
        let site = RecoverySite::open(&self.service.connections, &conn).await?;
        for d in &rec.cloud_disks {
            site.pull(d, &self.service.estate.path(d)).await?;
        }
        Ok(())
    }

    /// An alternate-location failback into a connected vCenter: the VM made by `CreateVM_Task` on the master
    /// target's host, its new VMDKs (the cloud disks' sizes) in its folder on the chosen datastore.
    async fn create_vm_in_vcenter(
        &self,
        rec: &ItemRecord,
        vcenter: &str,
        host: &str,
        ds: &str,
    ) -> Result<TaskOutcome, TaskFailure> {
        let id = rec.item.id.as_str();
        let mut sizes = Vec::new();
        for c in &rec.cloud_disks {
            // The new VMDK has the cloud disk's size (a fixed VHD's size is its data's).
            sizes.push(
                replicator::DiskImage::open(&self.service.estate.path(c))
                    .map_err(|e| fail(e.to_string(), "Check the cloud disk."))?
                    .size,
            );
        }
        let vc = VcenterSite::open(&self.service.connections, vcenter).await?;
        let created = vc.create_vm(&rec.item.name, rec.item.os.family, host, ds, &sizes, None).await;
        vc.close().await;
        let created = created?;
        let disks: Vec<String> = created.disks.iter().map(|p| p.display().to_string()).collect();
        let (vm, host, ds) = (created.name.clone(), host.to_owned(), ds.to_owned());
        let now = (self.service.clock)();
        self.update(id, |r, _| {
            r.replica_disks = disks.clone();
            r.onprem_disks = disks.clone();
            r.item.onprem = Some(new_vm(vm.clone(), host, &ds, &sizes));
            // The new VM is made powered off: it runs only once failed back to.
            r.onprem_power = false;
            r.onprem_power_set_at = now;
            Ok(())
        })
        .await?;
        Ok(outcome(0, serde_json::json!({"created": disks, "vm": vm, "vcenter": vcenter})))
    }

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
        let (rec, _) = self.record(id).await?;
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
        let doc = self.service.doc().await.map_err(estate_err)?;
        let mut item = self.service.estate.view(&doc, id, now).map_err(|e| estate_err(e.into()))?;
        item.state = State::ProtectedToPrimary;
        let ctx = Context { now, active_job: None };
        let plan =
            lifecycle::dry_run(&item, &doc.inventory, Operation::Failover, &request, &ctx, &DataEstimate::default());
        if !plan.allowed && !resumed {
            return Err(refused(id, &plan));
        }
        if !resumed {
            self.service.transition(id, Event::Started(Operation::Failover)).await.map_err(estate_err)?;
        }
        let sub = JobRequest { item: id.to_owned(), operation: Operation::Failover, request, plan };
        let (bytes, steps) = self.item_steps(&job.id, &sub).await?;
        Ok(outcome(bytes, serde_json::json!({"item": id, "point": point, "steps": steps})))
    }

    /// A plan task's item through its own steps, as its own job would run them (the item was moved by `Started`):
    /// `Succeeded` at the end, `Failed` at the first failure, which names the item and the step. Returns the bytes
    /// and the steps' names, bytes and times, kept in the plan task's result so the job page shows them under it.
    async fn item_steps(&self, job_id: &str, sub: &JobRequest) -> Result<(u64, Vec<serde_json::Value>), TaskFailure> {
        let (id, op) = (sub.item.as_str(), sub.operation);
        let mut bytes = 0u64;
        let mut steps = Vec::new();
        for t in sub.plan.tasks.clone() {
            let (started, at) = (std::time::Instant::now(), (self.service.clock)());
            match self.exec_step(job_id, sub, t.step).await {
                Ok(o) => {
                    bytes += o.bytes as u64;
                    let ms = started.elapsed().as_millis() as u64;
                    steps.push(serde_json::json!({"name": t.name, "bytes": o.bytes, "started_at": at, "ms": ms}));
                }
                Err(mut f) => {
                    let _ = self.service.transition(id, Event::Failed(op)).await;
                    f.error = format!("{id} at \u{201c}{}\u{201d}: {}", t.name, f.error);
                    return Err(f);
                }
            }
        }
        self.service
            .transition(id, Event::Succeeded(op))
            .await
            .map_err(|e| fail(e.to_string(), "Check the database and the server log."))?;
        Ok((bytes, steps))
    }

    /// One item of a recovery plan's reprotect, commit or cancel failover: the item's own steps, with the request
    /// the plan chose for it (a reprotect's master target, process server and settings). Idempotent after a crash:
    /// an item already where the operation takes it is done, one left half-way runs its (idempotent) steps again.
    async fn plan_item_op(&self, job: &Job, id: &str, op: Operation) -> Result<TaskOutcome, TaskFailure> {
        let estate_err = |e: ServiceError| fail(e.to_string(), "Check the database and the server log.");
        let preq: PlanJobRequest = serde_json::from_str(&job.request)
            .map_err(|e| fail(format!("unreadable plan job: {e}"), "Start the plan's action again."))?;
        let request = preq.requests.get(id).cloned().unwrap_or_default();
        let (rec, _) = self.record(id).await?;
        let (running, done) = match op {
            Operation::Commit => (State::CommitInProgress, State::CommittedOnPrimary),
            Operation::Reprotect => (State::ReprotectInProgress, State::ProtectedToPrimary),
            _ => (State::FailbackInProgress, State::ProtectedToPrimary),
        };
        if rec.item.state == done {
            return Ok(outcome(0, serde_json::json!({"item": id, "already": true})));
        }
        let resumed = rec.item.state == running;
        let now = (self.service.clock)();
        let doc = self.service.doc().await.map_err(estate_err)?;
        let mut item = self.service.estate.view(&doc, id, now).map_err(|e| estate_err(e.into()))?;
        if resumed {
            // Planned again from where the operation started, as its first run planned it.
            item.state = lifecycle::required_state(op);
        }
        let ctx = Context { now, active_job: None };
        let plan = lifecycle::dry_run(&item, &doc.inventory, op, &request, &ctx, &DataEstimate::default());
        if !plan.allowed && !resumed {
            return Err(refused(id, &plan));
        }
        if !resumed {
            self.service.transition(id, Event::Started(op)).await.map_err(estate_err)?;
        }
        let sub = JobRequest { item: id.to_owned(), operation: op, request, plan };
        let (bytes, steps) = self.item_steps(&job.id, &sub).await?;
        Ok(outcome(bytes, serde_json::json!({"item": id, "steps": steps})))
    }

    /// One item of a recovery plan's test failover or its cleanup: the item's own drill steps. Each item's drill is
    /// named `<plan job>.<item>`, so its report has a link of its own.
    async fn plan_item_drill(&self, job: &Job, id: &str, op: Operation) -> Result<TaskOutcome, TaskFailure> {
        let again = "Start the plan's test failover again.";
        let preq: PlanJobRequest =
            serde_json::from_str(&job.request).map_err(|e| fail(format!("unreadable plan job: {e}"), again))?;
        let drill_id = format!("{}.{id}", job.id);
        let (rec, _) = self.record(id).await?;
        let point = preq.points.iter().find(|(i, _)| i == id).map(|(_, p)| p.clone()).filter(|p| !p.is_empty());
        let mine = rec.item.drill.as_ref().is_some_and(|d| d.id == drill_id);
        let request = Request {
            point: point.clone().map(PointChoice::Specific),
            network: preq.network.clone(),
            notes: preq.notes.clone(),
            ..Request::default()
        };
        let now = (self.service.clock)();
        let estate_err = |e: ServiceError| fail(e.to_string(), "Check the database and the server log.");
        let doc = self.service.doc().await.map_err(estate_err)?;
        let item = self.service.estate.view(&doc, id, now).map_err(|e| estate_err(e.into()))?;
        let plan = lifecycle::dry_run(
            &item,
            &doc.inventory,
            op,
            &request,
            &Context { now, active_job: None },
            &DataEstimate::default(),
        );
        let done_already = match op {
            // A rerun after a crash: the drill this job started continues where it was.
            Operation::TestFailover => mine,
            _ => rec.item.drill.is_none(),
        };
        if done_already && op == Operation::CleanupTestFailover {
            return Ok(outcome(0, serde_json::json!({"item": id, "already": true})));
        }
        if !plan.allowed && !done_already {
            return Err(refused(id, &plan));
        }
        let sub = JobRequest { item: id.to_owned(), operation: op, request, plan };
        let step_job = if op == Operation::TestFailover { drill_id.as_str() } else { job.id.as_str() };
        let mut bytes = 0u64;
        let mut steps = Vec::new();
        for t in sub.plan.tasks.clone() {
            let (started, at) = (std::time::Instant::now(), (self.service.clock)());
            let o = self.exec_step(step_job, &sub, t.step).await.map_err(|mut f| {
                f.error = format!("{id} at \u{201c}{}\u{201d}: {}", t.name, f.error);
                f
            })?;
            bytes += o.bytes as u64;
            let ms = started.elapsed().as_millis() as u64;
            steps.push(serde_json::json!({"name": t.name, "bytes": o.bytes, "started_at": at, "ms": ms}));
        }
        let mut result = serde_json::json!({"item": id, "point": point, "steps": steps});
        if op == Operation::TestFailover {
            result["drill"] = drill_id.into();
        }
        Ok(outcome(bytes, result))
    }

    /// The item's primary site when it is a connected vCenter: a session with it, and the VM's name there.
    async fn vcenter_of(&self, rec: &ItemRecord) -> Result<Option<(VcenterSite, String)>, TaskFailure> {
        let Some(vm) = &rec.item.onprem else { return Ok(None) };
        let Some(conn) = VcenterSite::for_host(&self.service.connections, &vm.host).await? else { return Ok(None) };
        Ok(Some((VcenterSite::open(&self.service.connections, &conn.name).await?, vm.id.clone())))
    }

    /// Powers the item's VM on one site on or off (through vCenter when the primary site is a connected one, and
    /// through Azure Resource Manager when the cloud VM is in a connected subscription).
    async fn power(&self, id: &str, site: Site, on: bool) -> Result<TaskOutcome, TaskFailure> {
        let mut azure = None;
        if site == Site::Primary {
            let (rec, _) = self.record(id).await?;
            if let Some((vc, vm)) = self.vcenter_of(&rec).await? {
                let done = vc.power(&vm, on).await;
                vc.close().await;
                done?;
            }
        } else {
            let (rec, _) = self.record(id).await?;
            if let Some(vm) = rec.item.cloud_vm.as_ref().filter(|v| !v.deleted) {
                if let Some(cloud) = CloudVmSite::for_vm(&self.service.connections, vm).await? {
                    azure = Some(cloud.power(on).await?);
                }
            }
        }
        let now = (self.service.clock)();
        self.update(id, |r, _| {
            match site {
                Site::Primary => {
                    r.onprem_power = on;
                    r.onprem_power_set_at = now;
                }
                Site::Recovery => r.cloud_power = on,
            }
            Ok(())
        })
        .await?;
        let key = if site == Site::Primary { "onprem_power" } else { "cloud_power" };
        let mut result = serde_json::json!({ key: on });
        if let Some(a) = azure {
            result["azure"] = a;
        }
        Ok(outcome(0, result))
    }

    async fn exec_step(&self, job_id: &str, req: &JobRequest, step: Step) -> Result<TaskOutcome, TaskFailure> {
        let id = req.item.as_str();
        let plan = &req.plan;
        match step {
            Step::VerifyReplica => self.verify_replica(job_id, req).await,
            Step::PowerOffOnPrem => {
                // The first step of an original-location reprotect: the VM in a connected vCenter becomes the item's,
                // and the disks in a connected storage account the cloud VM's.
                self.bind_vcenter_vm(id).await?;
                self.bind_cloud_blobs(id).await?;
                self.power(id, Site::Primary, false).await
            }
            Step::ShutDownOnPrem | Step::ShutDownOnPremForCloud => self.power(id, Site::Primary, false).await,
            Step::CreateOnPremVm => {
                // The first step of an alternate-location reprotect: the new VM's disks get the blobs' sizes.
                self.bind_cloud_blobs(id).await?;
                let (rec, _) = self.record(id).await?;
                let ds = plan.target_datastore.clone().unwrap_or_default();
                let host = plan.target_host.clone().unwrap_or_default();
                if let Some(conn) = VcenterSite::for_host(&self.service.connections, &host).await? {
                    return self.create_vm_in_vcenter(&rec, &conn.name, &host, &ds).await;
                }
                let mut disks = Vec::new();
                let mut sizes = Vec::new();
                for (i, c) in rec.cloud_disks.iter().enumerate() {
                    let rel = format!("primary/{ds}/{id}/disk{i}.vmdk");
                    let path = self.service.estate.path(&rel);
                    // The new VMDK has the cloud disk's size (a fixed VHD's size is its data's).
                    let size = replicator::DiskImage::open(&self.service.estate.path(c))
                        .map_err(|e| fail(e.to_string(), "Check the cloud disk."))?
                        .size;
                    if !path.exists() {
                        std::fs::create_dir_all(path.parent().unwrap())
                            .map_err(|e| fail(e.to_string(), "Check the datastore folder."))?;
                        replicator::DiskImage::create(&path, replicator::Format::Vmdk, size)
                            .map_err(|e| fail(e.to_string(), "Free space on the datastore."))?;
                    }
                    disks.push(rel);
                    sizes.push(size);
                }
                let now = (self.service.clock)();
                self.update(id, |r, _| {
                    r.replica_disks = disks.clone();
                    r.onprem_disks = disks.clone();
                    r.item.onprem = Some(new_vm(format!("vm-{id}"), host, &ds, &sizes));
                    // The new VM is made powered off: it runs only once failed back to.
                    r.onprem_power = false;
                    r.onprem_power_set_at = now;
                    Ok(())
                })
                .await?;
                Ok(outcome(0, serde_json::json!({"created": disks})))
            }
            Step::InitialReplication | Step::ResumeReplication => {
                // The protection settings chosen with the reprotect apply from its first point on.
                let chosen = req.request.protection();
                self.update(id, |r, _| {
                    if r.replica_disks.is_empty() {
                        // Original location: the on-premises VM's own disks become the replica.
                        r.replica_disks = r.onprem_disks.clone();
                    }
                    r.item.protection = r.item.protection.with(&chosen);
                    Ok(())
                })
                .await?;
                let (rec, inv) = self.record(id).await?;
                let pairs: Vec<(String, String)> =
                    rec.cloud_disks.iter().cloned().zip(rec.replica_disks.iter().cloned()).collect();
                let route = self.route(&rec, &inv, true, req);
                let mode = if plan.transfer == Some(lifecycle::Transfer::Full) {
                    replicator::Mode::Full
                } else {
                    replicator::Mode::Delta
                };
                let (bytes, point) =
                    self.item_cycle(&rec, &route, &pairs, mode, replicator::Consistency::CrashConsistent, &[]).await?;
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
                let (rec, inv) = self.record(id).await?;
                let route = self.route(&rec, &inv, step == Step::StartReplication, req);
                let pairs: Vec<(String, String)> = if step == Step::StartReplication {
                    rec.cloud_disks.iter().cloned().zip(rec.replica_disks.iter().cloned()).collect()
                } else {
                    rec.onprem_disks.iter().cloned().zip(rec.cloud_disks.iter().cloned()).collect()
                };
                let (bytes, point) = self
                    .item_cycle(
                        &rec,
                        &route,
                        &pairs,
                        replicator::Mode::Auto,
                        replicator::Consistency::AppConsistent,
                        &[],
                    )
                    .await?;
                Ok(outcome(bytes, serde_json::json!({"point": point, "consistency": "app-consistent"})))
            }
            Step::ShutDownCloudVm => self.power(id, Site::Recovery, false).await,
            Step::FinalCycle => {
                let (rec, inv) = self.record(id).await?;
                let route = self.route(&rec, &inv, req.operation != Operation::FailoverToCloud, req);
                // The last changes of the side that was running, in the direction the item replicates.
                let pairs: Vec<(String, String)> = if req.operation == Operation::FailoverToCloud {
                    rec.onprem_disks.iter().cloned().zip(rec.cloud_disks.iter().cloned()).collect()
                } else {
                    rec.cloud_disks.iter().cloned().zip(rec.replica_disks.iter().cloned()).collect()
                };
                let (bytes, point) = self
                    .item_cycle(
                        &rec,
                        &route,
                        &pairs,
                        replicator::Mode::Auto,
                        replicator::Consistency::CrashConsistent,
                        &[],
                    )
                    .await?;
                Ok(outcome(bytes, serde_json::json!({"point": point})))
            }
            Step::MaterialiseDisks => {
                let (rec, _) = self.record(id).await?;
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
                let kept = self.kept_overlay(&rec, req)?;
                let mut out = Vec::new();
                let mut bytes = 0;
                for (i, r) in rec.replica_disks.iter().enumerate() {
                    let rel = r.replace(".vmdk", "-failback.vmdk");
                    let overlay = kept.as_ref().map(|k| (k.files[i].as_str(), k.block_maps[i].as_str()));
                    bytes += self
                        .materialise(r, &point_id, &rel, "Free space on the datastore, then restart the job.", overlay)
                        .await?;
                    out.push(rel);
                }
                self.update(id, |r, _| {
                    r.failed_back_point = Some(point_id.clone());
                    Ok(())
                })
                .await?;
                let mut result = serde_json::json!({"point": point_id, "disks": out});
                if let Some(k) = &kept {
                    result["kept_copy"] = serde_json::json!({"job": k.job, "site": k.site, "blocks": k.blocks});
                }
                Ok(outcome(bytes, result))
            }
            Step::ReattachDisks => {
                let (rec, inv) = self.record(id).await?;
                let host = rec.item.onprem.as_ref().map(|v| v.host.clone()).unwrap_or_default();
                if let Some((vc, vm)) = self.vcenter_of(&rec).await? {
                    let files: Vec<std::path::PathBuf> = rec
                        .replica_disks
                        .iter()
                        .map(|d| self.service.estate.path(&d.replace(".vmdk", "-failback.vmdk")))
                        .collect();
                    let done = vc.use_disks(&vm, &files).await;
                    vc.close().await;
                    done?;
                } else {
                    vcenter_check(&inv, &host)?;
                }
                self.update(id, |r, _| {
                    r.onprem_disks = r.replica_disks.iter().map(|d| d.replace(".vmdk", "-failback.vmdk")).collect();
                    Ok(())
                })
                .await?;
                Ok(outcome(0, serde_json::json!({"attached": true})))
            }
            Step::VmwareTools => {
                let (rec, _) = self.record(id).await?;
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
                let (rec, _) = self.record(id).await?;
                if let Some((vc, vm)) = self.vcenter_of(&rec).await? {
                    let done = vc.power(&vm, true).await;
                    vc.close().await;
                    done?;
                }
                let now = (self.service.clock)();
                self.update(id, |r, _| {
                    r.onprem_power = true;
                    r.onprem_power_set_at = now;
                    r.item.booted_at = Some(now);
                    r.item.agent_registered = false;
                    Ok(())
                })
                .await?;
                Ok(outcome(0, serde_json::json!({"onprem_power": true})))
            }
            Step::DeleteCloudVm => {
                let (rec, _) = self.record(id).await?;
                let mut in_azure = Vec::new();
                if let Some(vm) = rec.item.cloud_vm.as_ref().filter(|v| !v.deleted) {
                    // The VM in Azure first: it holds leases on its disks' blobs while it exists.
                    if let Some(cloud) = CloudVmSite::for_vm(&self.service.connections, vm).await? {
                        in_azure = cloud.delete().await?;
                    }
                }
                if let Some(conn) = &rec.cloud_storage {
                    // The cloud VM's disks in the storage account first: a lease held refuses before anything goes.
                    let site = RecoverySite::open(&self.service.connections, conn).await?;
                    for c in &rec.cloud_disks {
                        site.delete(c).await?;
                    }
                }
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
                Ok(outcome(0, serde_json::json!({"deleted": rec.cloud_disks, "deleted_in_azure": in_azure})))
            }
            Step::MarkCommitted => {
                // What lost a split-brain is kept until this commit.
                let (rec, _) = self.record(id).await?;
                let kept = rec.item.kept_copies.clone();
                if !kept.is_empty() {
                    let root = self.service.estate.path("");
                    let removed = kept.clone();
                    tokio::task::spawn_blocking(move || crate::split_brain::remove_kept(&root, &removed))
                        .await
                        .map_err(|e| fail(format!("removing the kept blocks stopped: {e}"), "Restart the job."))?
                        .map_err(|e| fail(format!("cannot remove the kept blocks: {e}"), "Check the estate folder."))?;
                    self.update(id, |r, _| {
                        r.item.kept_copies.clear();
                        Ok(())
                    })
                    .await?;
                }
                let files: Vec<&String> = kept.iter().flat_map(|k| &k.files).collect();
                Ok(outcome(0, serde_json::json!({"kept_copies_removed": files})))
            }
            Step::CommitInCloud => {
                // The cloud VM runs on its own disks since the failover; the replication copies it was made from
                // are not needed any more (a later reprotect starts from the running VM's disks).
                let (rec, _) = self.record(id).await?;
                let mut deleted = Vec::new();
                for i in 0..rec.cloud_disks.len() {
                    let copy = format!("recovery/{id}/reprotected-disk{i}.vhd");
                    if rec.cloud_disks.contains(&copy) {
                        continue;
                    }
                    if let Some(conn) = &rec.cloud_storage {
                        if RecoverySite::open(&self.service.connections, conn).await?.delete(&copy).await? {
                            deleted.push(crate::recovery_site::blob_name(&copy));
                        }
                    }
                    let p = self.service.estate.path(&copy);
                    if let Ok(img) = replicator::DiskImage::open(&p) {
                        let _ = std::fs::remove_dir_all(img.state_dir());
                    }
                    match std::fs::remove_file(&p) {
                        Ok(()) => deleted.push(copy),
                        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                        Err(e) => {
                            return Err(fail(
                                format!("cannot delete {copy}: {e}"),
                                "Check the cloud folder's permissions, then restart the job.",
                            ))
                        }
                    }
                }
                Ok(outcome(0, serde_json::json!({"deleted": deleted})))
            }
            Step::RestartCloudVm => {
                // The on-premises VM goes back to its replica disks; the cloud VM runs again.
                let (rec, _) = self.record(id).await?;
                if let Some((vc, vm)) = self.vcenter_of(&rec).await? {
                    let files: Vec<std::path::PathBuf> =
                        rec.replica_disks.iter().map(|d| self.service.estate.path(d)).collect();
                    let done = vc.use_disks(&vm, &files).await;
                    vc.close().await;
                    done?;
                }
                self.update(id, |r, _| {
                    r.onprem_disks = r.replica_disks.clone();
                    Ok(())
                })
                .await?;
                self.power(id, Site::Recovery, true).await
            }
            Step::CreateTestVm => self.create_test_vm(job_id, req).await,
            Step::PowerOnTestVm => self.power_on_test_vm(id).await,
            Step::CheckTestVm => self.check_test_vm(id).await,
            Step::RemoveTestVm => self.remove_test_vm(id).await,
            Step::RecordCleanup => self.record_cleanup(job_id, req).await,
            Step::KeepDivergentBlocks => self.keep_divergent(job_id, req).await,
            Step::CheckAgent => {
                let now = (self.service.clock)();
                let doc = self.service.doc().await.map_err(|e| fail(e.to_string(), "Check the estate folder."))?;
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
                let chosen = req.request.protection();
                self.update(id, |r, _| {
                    r.item.protection = r.item.protection.with(&chosen);
                    Ok(())
                })
                .await?;
                let (rec, inv) = self.record(id).await?;
                let route = self.route(&rec, &inv, false, req);
                let mut cloud = Vec::new();
                for (i, _) in rec.onprem_disks.iter().enumerate() {
                    cloud.push(format!("recovery/{id}/reprotected-disk{i}.vhd"));
                }
                let pairs: Vec<(String, String)> =
                    rec.onprem_disks.iter().cloned().zip(cloud.iter().cloned()).collect();
                for (_, c) in &pairs {
                    let _ = std::fs::create_dir_all(self.service.estate.path(c).parent().unwrap());
                }
                // Bound to a storage account, the re-protected copies are page blobs there too.
                let (bytes, point) = self
                    .item_cycle(
                        &rec,
                        &route,
                        &pairs,
                        replicator::Mode::Auto,
                        replicator::Consistency::CrashConsistent,
                        &cloud,
                    )
                    .await?;
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
            Step::CreateCloudVm => {
                // The cloud VM's disks are the chosen point of the cloud replication, materialised beside it; the
                // replication copies stay untouched until commit.
                let (rec, _) = self.record(id).await?;
                let point_id = plan.point.as_ref().map(|p| p.id.clone()).ok_or_else(|| {
                    fail("no recovery point to fail over to (R-RP3)", "Wait for the first recovery point.")
                })?;
                let point_id = match &req.request.point {
                    // "Latest" ran one more cycle just now: its point is the newest.
                    Some(PointChoice::Latest) => self
                        .service
                        .estate
                        .points(&rec)
                        .ok()
                        .and_then(|p| p.last().map(|p| p.id.clone()))
                        .unwrap_or(point_id),
                    _ => point_id,
                };
                let mut disks = Vec::new();
                let mut bytes = 0;
                for (i, c) in rec.cloud_disks.iter().enumerate() {
                    let rel = format!("recovery/{id}/failover-disk{i}.vhd");
                    bytes += self
                        .materialise(c, &point_id, &rel, "Free space in the cloud folder, then restart the job.", None)
                        .await?;
                    disks.push(rel);
                }
                if let Some(conn) = &rec.cloud_storage {
                    // The new cloud VM's disks are page blobs in the storage account the item replicates to.
                    let site = RecoverySite::open(&self.service.connections, conn).await?;
                    for d in &disks {
                        site.push(d, &self.service.estate.path(d)).await?;
                    }
                }
                self.update(id, |r, _| {
                    r.cloud_disks = disks.clone();
                    r.cloud_power = true;
                    if let Some(vm) = &mut r.item.cloud_vm {
                        vm.deleted = false;
                        vm.running = true;
                    }
                    Ok(())
                })
                .await?;
                Ok(outcome(bytes, serde_json::json!({"point": point_id, "disks": disks, "cloud_power": true})))
            }
        }
    }
}
