//! The workers of one node. Several threads claim jobs and run them side by side. Each running job has a
//! heartbeat that keeps its lease and, when the lease is lost, the job is cancelled or the node shuts down, sets
//! the running step's cancel flag (the sync stops at its next chunk). A supervisor restarts a worker that died.
//! The node's identity is stable across restarts and never shared by two running processes.

use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde::Serialize;

use crate::assignments::Fence;
use crate::domain::Millis;
use crate::jobs::{self, JobError, JobStore, Lease};
use crate::service::{Service, ServiceError};
use crate::workflows::{ProgressSlot, Workflows};

/// How long a job's lease lasts without a heartbeat, by default: a node that dies loses its jobs to another after
/// this.
pub const LEASE_MS: Millis = 30_000;

#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    #[error("{path}: {source}")]
    Io { path: std::path::PathBuf, source: std::io::Error },
    #[error(
        "another homeward process is running on the data dir {0} (node {1}); stop it, or give this one its own \
         --data-dir (nodes share the database, never a data dir)"
    )]
    InUse(String, String),
}

/// This node: an id kept in the data dir (so a restarted node takes its own interrupted jobs back at once) and the
/// boot, new at each start. The data dir stays locked while the node runs.
pub struct Node {
    pub id: String,
    pub boot: String,
    _lock: replicator::fileio::FileLock,
}

impl Node {
    pub fn acquire(data_dir: &Path) -> Result<Node, NodeError> {
        let io = |path: &Path| {
            let path = path.to_path_buf();
            move |source| NodeError::Io { path, source }
        };
        let id_path = data_dir.join("node-id");
        let id = match std::fs::read_to_string(&id_path) {
            Ok(s) if !s.trim().is_empty() => s.trim().to_owned(),
            Ok(_) | Err(_) => {
                let id = uuid::Uuid::now_v7().simple().to_string();
                replicator::fileio::write_atomic(&id_path, id.as_bytes()).map_err(io(&id_path))?;
                id
            }
        };
        let lock_path = data_dir.join("node.lock");
        let file = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .map_err(io(&lock_path))?;
        let lock = replicator::fileio::FileLock::try_exclusive(file)
            .map_err(io(&lock_path))?
            .ok_or_else(|| NodeError::InUse(data_dir.display().to_string(), id.clone()))?;
        Ok(Node { id, boot: uuid::Uuid::now_v7().simple().to_string()[20..].to_owned(), _lock: lock })
    }

    /// `node/boot/wN`: unique among all workers of all nodes; the claim query reads the node and boot from it.
    pub fn worker_id(&self, n: usize) -> String {
        format!("{}/{}/w{n}", self.id, self.boot)
    }
}

/// Runs a keeper's database calls: on the process's runtime, or on a keeper's own when that runtime cannot.
pub(crate) enum Driver {
    Own(tokio::runtime::Runtime),
    Shared(tokio::runtime::Handle),
}

impl Driver {
    pub(crate) fn block_on<F: std::future::Future>(&self, f: F) -> F::Output {
        match self {
            Driver::Own(rt) => rt.block_on(f),
            Driver::Shared(h) => h.block_on(f),
        }
    }
}

/// A thread that calls `beat` about every `every` until the keeper is dropped or `beat` says stop. Dropping it
/// stops and joins the thread, so nothing outlives the step it guards — a panicking step included.
pub(crate) struct Keeper {
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Keeper {
    /// `beat` runs its database calls with `rt.block_on` through the store it is given: on the process's runtime
    /// and pool when that runtime has worker threads (one runtime drives every connection's IO, so no connection
    /// waits on a thread that is busy elsewhere); else on a small runtime and a one-connection pool of the keeper's
    /// own (see `Db::own_pool`).
    pub(crate) fn start<F>(name: &str, every: Duration, store: JobStore, mut beat: F) -> Keeper
    where
        F: FnMut(&Driver, &JobStore) -> bool + Send + 'static,
    {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let current = tokio::runtime::Handle::current();
        let thread = std::thread::Builder::new()
            .name(name.to_owned())
            .spawn(move || {
                // A current-thread runtime (a test's) drives IO only inside its own block_on, which may be waiting
                // for this thread to stop: such a keeper gets a runtime and a connection of its own instead.
                let (rt, store) = match current.runtime_flavor() {
                    tokio::runtime::RuntimeFlavor::CurrentThread => {
                        let Ok(rt) = tokio::runtime::Builder::new_current_thread().enable_all().build() else {
                            return;
                        };
                        let own = {
                            let _in = rt.enter();
                            JobStore { db: store.db.own_pool(), ..store }
                        };
                        (Driver::Own(rt), own)
                    }
                    _ => (Driver::Shared(current), store),
                };
                while !flag.load(Ordering::Relaxed) {
                    if !beat(&rt, &store) {
                        break;
                    }
                    // Sleep in small steps so a drop is never kept waiting long.
                    let until = Instant::now() + every;
                    while !flag.load(Ordering::Relaxed) && Instant::now() < until {
                        std::thread::sleep(Duration::from_millis(20).min(every));
                    }
                }
                if let Driver::Own(_) = rt {
                    rt.block_on(store.db.pool.close());
                }
            })
            .ok();
        Keeper { stop, thread }
    }
}

impl Drop for Keeper {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// The heartbeat of a running job: renews the lease a few times per lease period and persists the step's progress
/// a few times a second. It sets `cancel` — the running step stops at its next chunk — when the job is cancelled,
/// the lease is lost (or could not be renewed for a whole lease period), or the node shuts down. Transient
/// database errors are retried at the next beat.
fn heartbeat(
    store: JobStore,
    lease: Lease,
    lease_ms: Millis,
    progress: ProgressSlot,
    cancel: Arc<AtomicBool>,
    shutdown: Arc<AtomicBool>,
) -> Keeper {
    let mut last_renewed = Instant::now();
    let mut next_renewal = Instant::now() + Duration::from_millis(lease_ms / 3);
    let mut next_look = Instant::now();
    let mut flushed = std::collections::BTreeMap::new();
    Keeper::start("lease-heartbeat", Duration::from_millis(300), store, move |rt, store| {
        if shutdown.load(Ordering::Relaxed) {
            cancel.store(true, Ordering::Relaxed);
        }
        // Renew a few times per lease period; in between, look for a cancel every second (a read), so a
        // cancelled sync stops within about a second.
        let renew = Instant::now() >= next_renewal;
        if renew || Instant::now() >= next_look {
            next_look = Instant::now() + Duration::from_secs(1);
            let beat = if renew {
                rt.block_on(store.heartbeat(&lease, lease_ms))
            } else {
                rt.block_on(store.cancel_requested(&lease))
            };
            match beat {
                Ok(cancel_requested) => {
                    if renew {
                        last_renewed = Instant::now();
                        next_renewal = last_renewed + Duration::from_millis(lease_ms / 3);
                    }
                    if cancel_requested {
                        cancel.store(true, Ordering::Relaxed);
                    }
                }
                Err(e) if e.is_transient() => {
                    tracing::warn!(job = %lease.job_id, error = %e, "cannot renew the lease; trying again");
                    next_renewal = Instant::now() + Duration::from_secs(1);
                    if last_renewed.elapsed() >= Duration::from_millis(lease_ms) {
                        // Another node may hold the job by now: stop writing.
                        cancel.store(true, Ordering::Relaxed);
                    }
                }
                Err(e) => {
                    tracing::warn!(job = %lease.job_id, error = %e, "the lease is lost: stopping the running step");
                    cancel.store(true, Ordering::Relaxed);
                    return false;
                }
            }
        }
        // Every running task's progress that moved since the last beat (several run at once in a plan's group).
        let now = progress.lock().map(|p| p.clone()).unwrap_or_default();
        for (seq, p) in now {
            if flushed.get(&seq) != Some(&p) {
                // Best effort: a task that ended meanwhile refuses it, and its result replaces it anyway.
                let _ = rt.block_on(store.task_progress(&lease, &p));
                flushed.insert(seq, p);
            }
        }
        true
    })
}

impl Service {
    /// Claims one job and runs it (or its next attempt) with a heartbeat. Returns whether there was one.
    pub async fn work_once(&self, worker: &str) -> Result<bool, ServiceError> {
        self.work_once_until(worker, LEASE_MS, &Arc::new(AtomicBool::new(false)), None).await
    }

    /// `running` is told which job runs now (for `/healthz`).
    async fn work_once_until(
        &self,
        worker: &str,
        lease_ms: Millis,
        shutdown: &Arc<AtomicBool>,
        running: Option<&Mutex<Option<String>>>,
    ) -> Result<bool, ServiceError> {
        let Some(lease) = self.jobs.claim(worker, lease_ms).await? else { return Ok(false) };
        let show = |job: Option<String>| {
            if let Some(slot) = running {
                *slot.lock().unwrap_or_else(|p| p.into_inner()) = job;
            }
        };
        show(Some(lease.job_id.clone()));
        let cancel = Arc::new(AtomicBool::new(false));
        let fence = Fence::Job { id: lease.job_id.clone(), token: lease.token };
        let exec = Workflows::new(self, cancel.clone(), shutdown.clone(), Some(fence));
        let beat =
            heartbeat(self.jobs.clone(), lease.clone(), lease_ms, exec.progress.clone(), cancel, shutdown.clone());
        let end = jobs::run_job(&self.jobs, &lease, &exec, lease_ms).await;
        drop(beat);
        show(None);
        match end {
            Ok(_) => Ok(true),
            Err(JobError::Fenced(job)) => {
                tracing::warn!(%job, worker, "another worker took the job over; this one stopped");
                Ok(true)
            }
            Err(e) => Err(e.into()),
        }
    }
}

/// What `/healthz` says of one worker.
#[derive(Clone, Debug, Serialize)]
pub struct WorkerHealth {
    pub id: String,
    pub alive: bool,
    pub job: Option<String>,
    pub restarts: u32,
}

struct WorkerStatus {
    id: String,
    alive: AtomicBool,
    job: Mutex<Option<String>>,
    restarts: AtomicU32,
}

/// Marks a worker dead when its thread ends, however it ends.
struct AliveGuard(Arc<WorkerStatus>);

impl Drop for AliveGuard {
    fn drop(&mut self) {
        self.0.alive.store(false, Ordering::Relaxed);
    }
}

/// The node's job workers.
pub struct Workers {
    statuses: Vec<Arc<WorkerStatus>>,
    shutdown: Arc<AtomicBool>,
    supervisors: Mutex<Vec<std::thread::JoinHandle<()>>>,
}

impl Workers {
    /// Starts `count` workers, each under a supervisor that starts it again if it dies; their jobs' leases last
    /// `lease_ms` without a heartbeat. Each worker is a thread of its own (steps do blocking disk IO) whose
    /// database calls run on `rt`, the process's runtime.
    pub fn spawn(
        service: Arc<Service>,
        node: &Node,
        count: usize,
        lease_ms: Millis,
        shutdown: Arc<AtomicBool>,
        rt: tokio::runtime::Handle,
    ) -> Arc<Workers> {
        let statuses: Vec<Arc<WorkerStatus>> = (0..count.max(1))
            .map(|n| {
                Arc::new(WorkerStatus {
                    id: node.worker_id(n),
                    alive: AtomicBool::new(false),
                    job: Mutex::new(None),
                    restarts: AtomicU32::new(0),
                })
            })
            .collect();
        let mut supervisors = Vec::new();
        for (n, status) in statuses.iter().enumerate() {
            let (service, status, shutdown, rt) = (service.clone(), status.clone(), shutdown.clone(), rt.clone());
            let spawned = std::thread::Builder::new().name(format!("worker-{n}-supervisor")).spawn(move || {
                while !shutdown.load(Ordering::Relaxed) {
                    let (service, st, stop, rt) = (service.clone(), status.clone(), shutdown.clone(), rt.clone());
                    let worker = std::thread::Builder::new()
                        .name(format!("job-worker-{n}"))
                        .spawn(move || worker_loop(&service, st, lease_ms, &stop, &rt));
                    match worker.map(|h| h.join()) {
                        Ok(Ok(())) => return,
                        Ok(Err(_)) => tracing::error!(worker = %status.id, "the worker died; starting it again"),
                        Err(e) => tracing::error!(worker = %status.id, error = %e, "cannot start the worker thread"),
                    }
                    status.restarts.fetch_add(1, Ordering::Relaxed);
                    std::thread::sleep(Duration::from_secs(1));
                }
            });
            match spawned {
                Ok(h) => supervisors.push(h),
                Err(e) => tracing::error!(error = %e, "cannot start a worker supervisor"),
            }
        }
        Arc::new(Workers { statuses, shutdown, supervisors: Mutex::new(supervisors) })
    }

    pub fn health(&self) -> Vec<WorkerHealth> {
        self.statuses
            .iter()
            .map(|s| WorkerHealth {
                id: s.id.clone(),
                alive: s.alive.load(Ordering::Relaxed),
                job: s.job.lock().ok().and_then(|j| j.clone()),
                restarts: s.restarts.load(Ordering::Relaxed),
            })
            .collect()
    }

    /// Stops claiming, stops the running steps at their next chunk (their jobs are handed back), and waits for
    /// the workers to end.
    pub fn shutdown(&self) {
        self.shutdown.store(true, Ordering::Relaxed);
        let handles = std::mem::take(&mut *self.supervisors.lock().unwrap_or_else(|p| p.into_inner()));
        for h in handles {
            let _ = h.join();
        }
    }
}

fn worker_loop(
    service: &Service,
    status: Arc<WorkerStatus>,
    lease_ms: Millis,
    shutdown: &Arc<AtomicBool>,
    rt: &tokio::runtime::Handle,
) {
    status.alive.store(true, Ordering::Relaxed);
    let _alive = AliveGuard(status.clone());
    let mut backoff = Duration::from_millis(100);
    rt.block_on(async {
        while !shutdown.load(Ordering::Relaxed) {
            match service.work_once_until(&status.id, lease_ms, shutdown, Some(&status.job)).await {
                Ok(true) => backoff = Duration::from_millis(100),
                Ok(false) => tokio::time::sleep(Duration::from_millis(200)).await,
                Err(e) => {
                    let transient = matches!(&e, ServiceError::Job(j) if j.is_transient());
                    if transient {
                        tracing::warn!(worker = %status.id, error = %e, "the database is not answering");
                    } else {
                        tracing::error!(worker = %status.id, error = %e, "a job run failed");
                    }
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(5));
                }
            }
        }
    });
}

#[cfg(test)]
#[path = "../../tests/support/postgres.rs"]
mod postgres;

#[cfg(test)]
mod tests {
    use super::*;

    /// A test's runtime drives its connections' IO only inside its own `block_on`. A keeper whose database call
    /// is in flight when the step it guards ends (and the drop joins it, blocking that runtime's thread) must
    /// still finish that call — on PostgreSQL, whose connections belong to the runtime that opened them, sharing
    /// the test's pool made the join wait forever.
    #[test]
    fn a_keeper_stopped_mid_call_on_a_single_threaded_runtime_ends() {
        let url = postgres::Cluster::get().database();
        let (done_tx, done_rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
            rt.block_on(async {
                let db = crate::db::Db::connect(&url, 4).await.unwrap();
                let store = JobStore::new(db);
                let in_call = Arc::new(AtomicBool::new(false));
                let flag = in_call.clone();
                let keeper = Keeper::start("test-keeper", Duration::from_millis(10), store, move |rt, store| {
                    flag.store(true, Ordering::Relaxed);
                    rt.block_on(sqlx::query("select pg_sleep(0.3)").execute(&store.db.pool)).unwrap();
                    true
                });
                while !in_call.load(Ordering::Relaxed) {
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
                drop(keeper);
            });
            let _ = done_tx.send(());
        });
        assert!(
            done_rx.recv_timeout(Duration::from_secs(30)).is_ok(),
            "the keeper's database call never ended once its runtime's thread waited for it"
        );
    }
}
