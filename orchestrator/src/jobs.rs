//! The durable job engine: jobs with ordered tasks in the database, leases with heartbeat and a fencing token,
//! every transition a compare-and-set. A job's state is derived from its tasks' recorded results, never set by
//! hand, so a job cannot say "succeeded" while a task did not ("phantom complete").
//!
//! After a crash a job whose lease expired is claimed again and resumes at its first task not yet succeeded; the
//! task that was running is run again (workflow steps are idempotent: syncs resume from their cursor, deletes and
//! power operations check state first). A worker that lost its lease is fenced off: its late writes change nothing.

use serde::{Deserialize, Serialize};
use sqlx::{Row, SqlitePool};

use crate::domain::Millis;

pub static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("../migrations");

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum JobState {
    NotStarted,
    InProgress,
    Succeeded,
    Failed,
    Cancelled,
    Suspended,
}

impl JobState {
    pub fn as_str(self) -> &'static str {
        match self {
            JobState::NotStarted => "not-started",
            JobState::InProgress => "in-progress",
            JobState::Succeeded => "succeeded",
            JobState::Failed => "failed",
            JobState::Cancelled => "cancelled",
            JobState::Suspended => "suspended",
        }
    }
    pub fn parse(s: &str) -> Option<JobState> {
        [
            JobState::NotStarted,
            JobState::InProgress,
            JobState::Succeeded,
            JobState::Failed,
            JobState::Cancelled,
            JobState::Suspended,
        ]
        .into_iter()
        .find(|j| j.as_str() == s)
    }
    pub fn is_terminal(self) -> bool {
        matches!(self, JobState::Succeeded | JobState::Failed | JobState::Cancelled)
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Task {
    pub seq: i64,
    /// What the workflow runs (a stable code); `name` is what the job page shows.
    pub step: String,
    pub name: String,
    pub state: JobState,
    pub attempts: i64,
    pub started_at: Option<Millis>,
    pub finished_at: Option<Millis>,
    pub bytes: i64,
    pub result: Option<String>,
    pub error: Option<String>,
    pub recommended_action: Option<String>,
    /// While it runs: bytes of the disk examined so far, and the total.
    #[serde(default)]
    pub progress: Option<(u64, u64)>,
}

/// What a running task reports while it works; the worker persists it beside its heartbeat.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TaskProgress {
    pub seq: i64,
    pub done: u64,
    pub total: u64,
    /// Bytes sent to the target so far.
    pub sent: u64,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Job {
    pub id: String,
    pub kind: String,
    pub item_id: Option<String>,
    pub plan_id: Option<String>,
    pub state: JobState,
    pub request: String,
    pub error: Option<String>,
    pub recommended_action: Option<String>,
    pub cancel_requested: bool,
    pub created_at: Millis,
    pub started_at: Option<Millis>,
    pub finished_at: Option<Millis>,
    pub tasks: Vec<Task>,
}

/// Actions the job page offers (ASR's allowedActions).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum JobAction {
    Cancel,
    Restart,
    Resume,
}

impl Job {
    pub fn allowed_actions(&self) -> Vec<JobAction> {
        match self.state {
            JobState::NotStarted | JobState::InProgress if !self.cancel_requested => vec![JobAction::Cancel],
            JobState::Suspended => vec![JobAction::Resume, JobAction::Cancel],
            JobState::Failed | JobState::Cancelled => vec![JobAction::Restart],
            _ => vec![],
        }
    }
}

pub struct NewJob {
    pub id: String,
    pub kind: String,
    pub item_id: Option<String>,
    pub plan_id: Option<String>,
    pub request: String,
    pub idempotency_key: String,
    /// (step code, display name), in order.
    pub tasks: Vec<(String, String)>,
}

/// A claim on a job: valid while the fencing token is the job's current one.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Lease {
    pub job_id: String,
    pub owner: String,
    pub token: i64,
}

#[derive(Debug, thiserror::Error)]
pub enum JobError {
    #[error("job {active_job} is still running on this item (R-W5); wait for it or cancel it")]
    ItemBusy { active_job: String },
    #[error("the idempotency key {key} was already used for a different request (job {job})")]
    IdempotencyConflict { key: String, job: String },
    #[error("no job {0}")]
    NotFound(String),
    #[error("this worker's lease on job {0} was taken over; it must stop")]
    Fenced(String),
    #[error("job {job} is {state}; {action} is not possible")]
    NotAllowed { job: String, state: &'static str, action: &'static str },
    #[error("database: {0}")]
    Db(#[from] sqlx::Error),
}

/// The state a job ends in, from its tasks: one failed → failed (with that task's error); all succeeded →
/// succeeded; cancel requested → cancelled; otherwise it has not ended.
pub fn derived_end(job: &Job) -> Option<(JobState, Option<String>, Option<String>)> {
    if let Some(t) = job.tasks.iter().find(|t| t.state == JobState::Failed) {
        Some((JobState::Failed, t.error.clone(), t.recommended_action.clone()))
    } else if job.tasks.iter().all(|t| t.state == JobState::Succeeded) {
        Some((JobState::Succeeded, None, None))
    } else if job.cancel_requested {
        Some((JobState::Cancelled, Some("Cancelled by an operator.".to_owned()), None))
    } else {
        None
    }
}

/// An update of one task (`job_id`, `seq`) that applies only while the caller's fencing token is current.
macro_rules! fenced_task_sql {
    ($set:literal, $from:literal) => {
        concat!(
            "update tasks set ",
            $set,
            " where job_id = ? and seq = ? and state in ",
            $from,
            " and exists (select 1 from jobs where id = ? and fencing_token = ? and state = 'in-progress')"
        )
    };
}

const ACTIVE: &str = "('not-started', 'in-progress', 'suspended')";

#[derive(Clone, Debug)]
pub struct JobStore {
    pub pool: SqlitePool,
}

impl JobStore {
    pub fn new(pool: SqlitePool) -> JobStore {
        JobStore { pool }
    }

    /// Creates a job with its tasks, or returns the job already created with the same idempotency key and request.
    pub async fn create(&self, new: NewJob, now: Millis) -> Result<(Job, bool), JobError> {
        if let Some(existing) = self.by_idempotency_key(&new.idempotency_key).await? {
            if existing.request == new.request && existing.kind == new.kind && existing.item_id == new.item_id {
                return Ok((existing, false));
            }
            return Err(JobError::IdempotencyConflict { key: new.idempotency_key, job: existing.id });
        }
        let mut tx = self.pool.begin().await?;
        let inserted = sqlx::query(
            "insert into jobs (id, kind, item_id, plan_id, state, idempotency_key, request, created_at) \
             values (?, ?, ?, ?, 'not-started', ?, ?, ?)",
        )
        .bind(&new.id)
        .bind(&new.kind)
        .bind(&new.item_id)
        .bind(&new.plan_id)
        .bind(&new.idempotency_key)
        .bind(&new.request)
        .bind(now as i64)
        .execute(&mut *tx)
        .await;
        if let Err(e) = inserted {
            drop(tx);
            return Err(self.explain_insert_error(e, &new).await);
        }
        for (seq, (step, name)) in new.tasks.iter().enumerate() {
            sqlx::query("insert into tasks (job_id, seq, step, name, state) values (?, ?, ?, ?, 'not-started')")
                .bind(&new.id)
                .bind(seq as i64)
                .bind(step)
                .bind(name)
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        Ok((self.get(&new.id).await?, true))
    }

    /// Maps constraint violations to client errors.
    async fn explain_insert_error(&self, e: sqlx::Error, new: &NewJob) -> JobError {
        let msg = e.as_database_error().map(|d| d.message().to_owned()).unwrap_or_default();
        if msg.contains("jobs.item_id") || msg.contains("jobs_one_active_per_item") {
            if let Some(item) = &new.item_id {
                if let Ok(Some(active)) = self.active_job_for_item(item).await {
                    return JobError::ItemBusy { active_job: active };
                }
            }
        }
        if msg.contains("idempotency_key") {
            if let Ok(Some(j)) = self.by_idempotency_key(&new.idempotency_key).await {
                return JobError::IdempotencyConflict { key: new.idempotency_key.clone(), job: j.id };
            }
        }
        JobError::Db(e)
    }

    pub async fn active_job_for_item(&self, item: &str) -> Result<Option<String>, JobError> {
        let row = sqlx::query(&format!("select id from jobs where item_id = ? and state in {ACTIVE}"))
            .bind(item)
            .fetch_optional(&self.pool)
            .await?;
        Ok(row.map(|r| r.get::<String, _>(0)))
    }

    /// Every active job by item, in one query (the items list shows them for thousands of items).
    pub async fn active_jobs_by_item(&self) -> Result<std::collections::HashMap<String, String>, JobError> {
        let rows =
            sqlx::query(&format!("select item_id, id from jobs where item_id is not null and state in {ACTIVE}"))
                .fetch_all(&self.pool)
                .await?;
        Ok(rows.into_iter().map(|r| (r.get::<String, _>(0), r.get::<String, _>(1))).collect())
    }

    pub async fn by_idempotency_key(&self, key: &str) -> Result<Option<Job>, JobError> {
        let row =
            sqlx::query("select id from jobs where idempotency_key = ?").bind(key).fetch_optional(&self.pool).await?;
        match row {
            Some(r) => Ok(Some(self.get(&r.get::<String, _>(0)).await?)),
            None => Ok(None),
        }
    }

    pub async fn get(&self, id: &str) -> Result<Job, JobError> {
        let r = sqlx::query(
            "select id, kind, item_id, plan_id, state, request, error, recommended_action, cancel_requested, \
             created_at, started_at, finished_at from jobs where id = ?",
        )
        .bind(id)
        .fetch_optional(&self.pool)
        .await?
        .ok_or_else(|| JobError::NotFound(id.to_owned()))?;
        let tasks = sqlx::query(
            "select seq, name, state, attempts, started_at, finished_at, bytes, result, error, recommended_action, \
             step, progress_done, progress_total from tasks where job_id = ? order by seq",
        )
        .bind(id)
        .fetch_all(&self.pool)
        .await?
        .into_iter()
        .map(|t| Task {
            seq: t.get(0),
            step: t.get(10),
            name: t.get(1),
            state: JobState::parse(t.get::<&str, _>(2)).unwrap_or(JobState::Failed),
            attempts: t.get(3),
            started_at: t.get::<Option<i64>, _>(4).map(|v| v as Millis),
            finished_at: t.get::<Option<i64>, _>(5).map(|v| v as Millis),
            bytes: t.get(6),
            result: t.get(7),
            error: t.get(8),
            recommended_action: t.get(9),
            progress: match (t.get::<Option<i64>, _>(11), t.get::<Option<i64>, _>(12)) {
                (Some(d), Some(n)) => Some((d as u64, n as u64)),
                _ => None,
            },
        })
        .collect();
        Ok(Job {
            id: r.get(0),
            kind: r.get(1),
            item_id: r.get(2),
            plan_id: r.get(3),
            state: JobState::parse(r.get::<&str, _>(4)).unwrap_or(JobState::Failed),
            request: r.get(5),
            error: r.get(6),
            recommended_action: r.get(7),
            cancel_requested: r.get::<i64, _>(8) != 0,
            created_at: r.get::<i64, _>(9) as Millis,
            started_at: r.get::<Option<i64>, _>(10).map(|v| v as Millis),
            finished_at: r.get::<Option<i64>, _>(11).map(|v| v as Millis),
            tasks,
        })
    }

    /// Claims one runnable job: not started, or in progress with an expired lease (its worker died), or held by
    /// this same worker identity before a restart (a restarted worker takes its own jobs back at once).
    pub async fn claim(&self, owner: &str, now: Millis, lease_ms: Millis) -> Result<Option<Lease>, JobError> {
        loop {
            let candidate = sqlx::query(
                "select id, epoch from jobs where (state = 'not-started' or (state = 'in-progress' and \
                 (lease_expires_at is null or lease_expires_at < ? or lease_owner = ?))) \
                 order by created_at, id limit 1",
            )
            .bind(now as i64)
            .bind(owner)
            .fetch_optional(&self.pool)
            .await?;
            let Some(c) = candidate else { return Ok(None) };
            let (id, epoch): (String, i64) = (c.get(0), c.get(1));
            let updated = sqlx::query(
                "update jobs set state = 'in-progress', lease_owner = ?, lease_expires_at = ?, \
                 fencing_token = fencing_token + 1, epoch = epoch + 1, started_at = coalesce(started_at, ?) \
                 where id = ? and epoch = ?",
            )
            .bind(owner)
            .bind((now + lease_ms) as i64)
            .bind(now as i64)
            .bind(&id)
            .bind(epoch)
            .execute(&self.pool)
            .await?;
            if updated.rows_affected() == 1 {
                let token: i64 = sqlx::query_scalar("select fencing_token from jobs where id = ?")
                    .bind(&id)
                    .fetch_one(&self.pool)
                    .await?;
                return Ok(Some(Lease { job_id: id, owner: owner.to_owned(), token }));
            }
            // Another worker won this one; look again.
        }
    }

    async fn fenced(&self, lease: &Lease, r: sqlx::sqlite::SqliteQueryResult) -> Result<(), JobError> {
        if r.rows_affected() == 1 {
            Ok(())
        } else {
            Err(JobError::Fenced(lease.job_id.clone()))
        }
    }

    pub async fn heartbeat(&self, lease: &Lease, now: Millis, lease_ms: Millis) -> Result<(), JobError> {
        let r = sqlx::query(
            "update jobs set lease_expires_at = ? where id = ? and fencing_token = ? and state = 'in-progress'",
        )
        .bind((now + lease_ms) as i64)
        .bind(&lease.job_id)
        .bind(lease.token)
        .execute(&self.pool)
        .await?;
        self.fenced(lease, r).await
    }

    /// Runs one `fenced_task_sql!` update: the task changes only while the lease's token is the job's current one.
    async fn fenced_task_update<'q>(
        &self,
        lease: &'q Lease,
        seq: i64,
        sql: &'static str,
        bind: impl FnOnce(
            sqlx::query::Query<'q, sqlx::Sqlite, sqlx::sqlite::SqliteArguments<'q>>,
        ) -> sqlx::query::Query<'q, sqlx::Sqlite, sqlx::sqlite::SqliteArguments<'q>>,
    ) -> Result<(), JobError> {
        let r = bind(sqlx::query(sql))
            .bind(&lease.job_id)
            .bind(seq)
            .bind(&lease.job_id)
            .bind(lease.token)
            .execute(&self.pool)
            .await?;
        self.fenced(lease, r).await
    }

    /// Records a running task's progress (and the bytes sent so far; the task's result replaces them).
    pub async fn task_progress(&self, lease: &Lease, p: &TaskProgress) -> Result<(), JobError> {
        let sql = fenced_task_sql!("progress_done = ?, progress_total = ?, bytes = ?", "('in-progress')");
        self.fenced_task_update(lease, p.seq, sql, |q| q.bind(p.done as i64).bind(p.total as i64).bind(p.sent as i64))
            .await
    }

    pub async fn start_task(&self, lease: &Lease, seq: i64, now: Millis) -> Result<(), JobError> {
        let sql = fenced_task_sql!(
            "state = 'in-progress', attempts = attempts + 1, started_at = ?",
            "('not-started', 'in-progress')"
        );
        self.fenced_task_update(lease, seq, sql, |q| q.bind(now as i64)).await
    }

    /// Records a task's verified result.
    pub async fn complete_task(
        &self,
        lease: &Lease,
        seq: i64,
        bytes: i64,
        result: &str,
        now: Millis,
    ) -> Result<(), JobError> {
        let sql = fenced_task_sql!(
            "state = 'succeeded', finished_at = ?, bytes = ?, result = ?, error = null",
            "('in-progress')"
        );
        let result = result.to_owned();
        self.fenced_task_update(lease, seq, sql, |q| q.bind(now as i64).bind(bytes).bind(result)).await
    }

    pub async fn fail_task(
        &self,
        lease: &Lease,
        seq: i64,
        error: &str,
        action: &str,
        now: Millis,
    ) -> Result<(), JobError> {
        let sql =
            fenced_task_sql!("state = 'failed', finished_at = ?, error = ?, recommended_action = ?", "('in-progress')");
        let (error, action) = (error.to_owned(), action.to_owned());
        self.fenced_task_update(lease, seq, sql, |q| q.bind(now as i64).bind(error).bind(action)).await
    }

    /// Ends the job in the state its tasks imply: all succeeded → succeeded; one failed → failed with that task's
    /// error; cancel requested → cancelled (remaining tasks too). Anything else is not an end: an error.
    pub async fn finish(&self, lease: &Lease, now: Millis) -> Result<JobState, JobError> {
        let current: Option<i64> =
            sqlx::query_scalar("select fencing_token from jobs where id = ? and state = 'in-progress'")
                .bind(&lease.job_id)
                .fetch_optional(&self.pool)
                .await?;
        if current != Some(lease.token) {
            return Err(JobError::Fenced(lease.job_id.clone()));
        }
        let job = self.get(&lease.job_id).await?;
        let Some((state, error, action)) = derived_end(&job) else {
            return Err(JobError::NotAllowed { job: job.id, state: "unfinished", action: "finish" });
        };
        let mut tx = self.pool.begin().await?;
        if state == JobState::Cancelled {
            sqlx::query(
                "update tasks set state = 'cancelled' where job_id = ? and state in ('not-started', 'in-progress')",
            )
            .bind(&lease.job_id)
            .execute(&mut *tx)
            .await?;
        }
        let r = sqlx::query(
            "update jobs set state = ?, error = ?, recommended_action = ?, finished_at = ?, lease_owner = null, \
             lease_expires_at = null, epoch = epoch + 1 where id = ? and fencing_token = ? and state = 'in-progress'",
        )
        .bind(state.as_str())
        .bind(error)
        .bind(action)
        .bind(now as i64)
        .bind(&lease.job_id)
        .bind(lease.token)
        .execute(&mut *tx)
        .await?;
        if r.rows_affected() != 1 {
            return Err(JobError::Fenced(lease.job_id.clone()));
        }
        tx.commit().await?;
        Ok(state)
    }

    /// Cancel: a job not started ends at once; a running one stops before its next task.
    pub async fn cancel(&self, id: &str, now: Millis) -> Result<JobState, JobError> {
        let job = self.get(id).await?;
        match job.state {
            JobState::NotStarted | JobState::Suspended => {
                let mut tx = self.pool.begin().await?;
                sqlx::query("update tasks set state = 'cancelled' where job_id = ? and state <> 'succeeded'")
                    .bind(id)
                    .execute(&mut *tx)
                    .await?;
                let r = sqlx::query(
                    "update jobs set state = 'cancelled', cancel_requested = 1, finished_at = ?, epoch = epoch + 1, \
                     error = 'Cancelled by an operator.' where id = ? and state in ('not-started', 'suspended')",
                )
                .bind(now as i64)
                .bind(id)
                .execute(&mut *tx)
                .await?;
                tx.commit().await?;
                if r.rows_affected() == 1 {
                    Ok(JobState::Cancelled)
                } else {
                    Box::pin(self.cancel(id, now)).await // it started meanwhile
                }
            }
            JobState::InProgress => {
                sqlx::query(
                    "update jobs set cancel_requested = 1, epoch = epoch + 1 where id = ? and state = 'in-progress'",
                )
                .bind(id)
                .execute(&self.pool)
                .await?;
                Ok(JobState::InProgress)
            }
            s => Err(JobError::NotAllowed { job: id.to_owned(), state: s.as_str(), action: "cancel" }),
        }
    }

    /// Restart a failed or cancelled job from its first task not yet succeeded.
    pub async fn restart(&self, id: &str) -> Result<(), JobError> {
        let job = self.get(id).await?;
        if !matches!(job.state, JobState::Failed | JobState::Cancelled) {
            return Err(JobError::NotAllowed { job: id.to_owned(), state: job.state.as_str(), action: "restart" });
        }
        let mut tx = self.pool.begin().await?;
        sqlx::query("update tasks set state = 'not-started', error = null, recommended_action = null where job_id = ? and state <> 'succeeded'")
            .bind(id)
            .execute(&mut *tx)
            .await?;
        let r = sqlx::query(
            "update jobs set state = 'not-started', error = null, recommended_action = null, cancel_requested = 0, \
             finished_at = null, epoch = epoch + 1 where id = ? and state in ('failed', 'cancelled')",
        )
        .bind(id)
        .execute(&mut *tx)
        .await;
        match r {
            Ok(_) => {
                tx.commit().await?;
                Ok(())
            }
            Err(e) => {
                drop(tx);
                let new = NewJob {
                    id: id.to_owned(),
                    kind: job.kind,
                    item_id: job.item_id,
                    plan_id: None,
                    request: job.request,
                    idempotency_key: String::new(),
                    tasks: vec![],
                };
                Err(self.explain_insert_error(e, &new).await)
            }
        }
    }

    /// Resume a suspended job: it is claimed again and continues at its first task not yet succeeded.
    pub async fn resume(&self, id: &str) -> Result<(), JobError> {
        let r = sqlx::query(
            "update jobs set state = 'not-started', epoch = epoch + 1 where id = ? and state = 'suspended'",
        )
        .bind(id)
        .execute(&self.pool)
        .await?;
        if r.rows_affected() == 1 {
            return Ok(());
        }
        let job = self.get(id).await?;
        Err(JobError::NotAllowed { job: id.to_owned(), state: job.state.as_str(), action: "resume" })
    }

    pub async fn list(&self, limit: i64) -> Result<Vec<Job>, JobError> {
        let ids: Vec<String> = sqlx::query_scalar("select id from jobs order by created_at desc, id limit ?")
            .bind(limit)
            .fetch_all(&self.pool)
            .await?;
        let mut out = Vec::with_capacity(ids.len());
        for id in ids {
            out.push(self.get(&id).await?);
        }
        Ok(out)
    }
}

/// What a task run reports: bytes moved and a verified result to record.
pub struct TaskOutcome {
    pub bytes: i64,
    pub result: String,
}

/// A task that could not be done, with what the operator should do.
pub struct TaskFailure {
    pub error: String,
    pub recommended_action: String,
}

/// Does the work of one task; the engine records the outcome. Implementations must be idempotent: after a crash
/// the interrupted task runs again.
#[allow(async_fn_in_trait)]
pub trait TaskExecutor {
    async fn run(&self, job: &Job, task: &Task) -> Result<TaskOutcome, TaskFailure>;

    /// Called with the job's end state just before it is recorded, so what the job changed (the item's lifecycle
    /// state) is in place when anyone sees the job ended. Must be idempotent: a crash may repeat it.
    async fn before_finish(&self, _job: &Job, _end: JobState) -> Result<(), JobError> {
        Ok(())
    }
}

async fn end_job(
    store: &JobStore,
    lease: &Lease,
    exec: &impl TaskExecutor,
    clock: &impl Fn() -> Millis,
) -> Result<JobState, JobError> {
    let job = store.get(&lease.job_id).await?;
    if let Some((end, _, _)) = derived_end(&job) {
        exec.before_finish(&job, end).await?;
    }
    store.finish(lease, clock()).await
}

/// Runs one claimed job to its end: each task not yet succeeded, in order; stops before the next task when a
/// cancel was requested; heartbeats the lease between tasks.
pub async fn run_job(
    store: &JobStore,
    lease: &Lease,
    exec: &impl TaskExecutor,
    clock: &impl Fn() -> Millis,
    lease_ms: Millis,
) -> Result<JobState, JobError> {
    loop {
        let job = store.get(&lease.job_id).await?;
        if job.cancel_requested {
            return end_job(store, lease, exec, clock).await;
        }
        let Some(task) = job.tasks.iter().find(|t| t.state != JobState::Succeeded).cloned() else {
            return end_job(store, lease, exec, clock).await;
        };
        if task.state == JobState::Failed {
            return end_job(store, lease, exec, clock).await;
        }
        store.heartbeat(lease, clock(), lease_ms).await?;
        store.start_task(lease, task.seq, clock()).await?;
        match exec.run(&job, &task).await {
            Ok(o) => store.complete_task(lease, task.seq, o.bytes, &o.result, clock()).await?,
            Err(f) => {
                store.fail_task(lease, task.seq, &f.error, &f.recommended_action, clock()).await?;
                return end_job(store, lease, exec, clock).await;
            }
        }
    }
}
