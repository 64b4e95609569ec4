//! The durable job engine: jobs with ordered tasks in the database, leases with heartbeat and a fencing token,
//! every transition a compare-and-set. A job's state is derived from its tasks' recorded results, never set by
//! hand, so a job cannot say "succeeded" while a task did not ("phantom complete").
//!
//! After a crash a job whose lease expired is claimed again and resumes at its first task not yet succeeded; the
//! task that was running is run again (workflow steps are idempotent: syncs resume from their cursor, deletes and
//! power operations check state first). A worker that lost its lease is fenced off: its late writes change nothing.

use crate::db::{self, Db, Unique};
use crate::domain::Millis;
use serde::{Deserialize, Serialize};

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
    /// After a retryable failure: when the next attempt starts (its error is kept until then).
    #[serde(default)]
    pub next_attempt_at: Option<Millis>,
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
    /// The items a recovery plan's job works on: each is busy while the job is active, as if its own job ran (R-W5).
    pub items: Vec<String>,
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
    #[error("job {active_job} is still running on {item} (R-W5); wait for it or cancel it")]
    ItemBusy { item: String, active_job: String },
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

impl JobError {
    /// A database error that a retry after a pause may cure (the database restarting, a dropped connection).
    pub fn is_transient(&self) -> bool {
        matches!(self, JobError::Db(e) if db::is_transient(e))
    }
}

/// A new job id: a UUIDv7, unique across nodes and ordered by creation time.
pub fn new_id() -> String {
    uuid::Uuid::now_v7().to_string()
}

/// How often a task whose failure is retryable is tried, and how long to wait between attempts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RetryPolicy {
    pub max_attempts: i64,
    pub first_backoff_ms: Millis,
    pub max_backoff_ms: Millis,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy { max_attempts: 4, first_backoff_ms: 2_000, max_backoff_ms: 60_000 }
    }
}

impl RetryPolicy {
    /// The wait after failed attempt `attempt` (1-based): doubling from the first backoff, capped.
    pub fn backoff(&self, attempt: i64) -> Millis {
        let doublings = attempt.clamp(1, 20) as u32 - 1;
        self.first_backoff_ms.saturating_mul(1 << doublings).min(self.max_backoff_ms)
    }
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

/// A value bound to a fenced task update.
enum Value {
    Int(i64),
    Text(String),
}

const ACTIVE: &str = "('not-started', 'in-progress', 'suspended')";

crate::row! {
    /// A job row, decoded by column name.
    struct JobRow {
        id: String,
        kind: String,
        item_id: Option<String>,
        plan_id: Option<String>,
        state: String,
        request: String,
        error: Option<String>,
        recommended_action: Option<String>,
        cancel_requested: i64,
        created_at: i64,
        started_at: Option<i64>,
        finished_at: Option<i64>,
    }
}

const JOB_COLUMNS: &str = "id, kind, item_id, plan_id, state, request, error, recommended_action, \
                           cancel_requested, created_at, started_at, finished_at";

crate::row! {
    struct TaskRow {
        job_id: String,
        seq: i64,
        step: String,
        name: String,
        state: String,
        attempts: i64,
        started_at: Option<i64>,
        finished_at: Option<i64>,
        bytes: i64,
        result: Option<String>,
        error: Option<String>,
        recommended_action: Option<String>,
        progress_done: Option<i64>,
        progress_total: Option<i64>,
        next_attempt_at: Option<i64>,
    }
}

const TASK_COLUMNS: &str = "job_id, seq, step, name, state, attempts, started_at, finished_at, bytes, result, error, \
                            recommended_action, progress_done, progress_total, next_attempt_at";

fn state_of(s: &str) -> JobState {
    // The schema's check constraint admits only known states.
    JobState::parse(s).unwrap_or(JobState::Failed)
}

impl From<TaskRow> for Task {
    fn from(t: TaskRow) -> Task {
        Task {
            seq: t.seq,
            step: t.step,
            name: t.name,
            state: state_of(&t.state),
            attempts: t.attempts,
            started_at: t.started_at.map(|v| v as Millis),
            finished_at: t.finished_at.map(|v| v as Millis),
            bytes: t.bytes,
            result: t.result,
            error: t.error,
            recommended_action: t.recommended_action,
            progress: match (t.progress_done, t.progress_total) {
                (Some(d), Some(n)) => Some((d as u64, n as u64)),
                _ => None,
            },
            next_attempt_at: t.next_attempt_at.map(|v| v as Millis),
        }
    }
}

impl JobRow {
    fn into_job(self, tasks: Vec<Task>) -> Job {
        Job {
            id: self.id,
            kind: self.kind,
            item_id: self.item_id,
            plan_id: self.plan_id,
            state: state_of(&self.state),
            request: self.request,
            error: self.error,
            recommended_action: self.recommended_action,
            cancel_requested: self.cancel_requested != 0,
            created_at: self.created_at as Millis,
            started_at: self.started_at.map(|v| v as Millis),
            finished_at: self.finished_at.map(|v| v as Millis),
            tasks,
        }
    }
}

/// The owners whose jobs a claimer may take back at once, without waiting for their leases to run out: the
/// workers of an earlier run of the same node (`node/boot/worker` → `node/%` but not `node/boot/%`).
fn reclaim_patterns(owner: &str) -> (String, String) {
    let mut parts = owner.splitn(3, '/');
    match (parts.next(), parts.next(), parts.next()) {
        (Some(node), Some(boot), Some(_)) => (format!("{node}/%"), format!("{node}/{boot}/%")),
        // An owner without a node and boot never reclaims early.
        _ => (String::new(), String::new()),
    }
}

#[derive(Clone, Debug)]
pub struct JobStore {
    pub db: Db,
    pub retry: RetryPolicy,
}

impl JobStore {
    pub fn new(db: Db) -> JobStore {
        JobStore { db, retry: RetryPolicy::default() }
    }

    fn sql(&self, template: &str) -> String {
        template.replace("{now}", self.db.now_ms())
    }

    /// Creates a job with its tasks, or returns the job already created with the same idempotency key and request.
    pub async fn create(&self, new: NewJob) -> Result<(Job, bool), JobError> {
        if let Some(existing) = self.by_idempotency_key(&new.idempotency_key).await? {
            if existing.request == new.request && existing.kind == new.kind && existing.item_id == new.item_id {
                return Ok((existing, false));
            }
            return Err(JobError::IdempotencyConflict { key: new.idempotency_key, job: existing.id });
        }
        let mut tx = self.db.pool.begin().await?;
        if let Some(lock) = self.db.items_claim_lock() {
            sqlx::query(lock).execute(&mut *tx).await?;
        }
        let inserted = sqlx::query(&self.sql(
            "insert into jobs (id, kind, item_id, plan_id, state, idempotency_key, request, created_at) \
             values ($1, $2, $3, $4, 'not-started', $5, $6, {now})",
        ))
        .bind(&new.id)
        .bind(&new.kind)
        .bind(&new.item_id)
        .bind(&new.plan_id)
        .bind(&new.idempotency_key)
        .bind(&new.request)
        .execute(&mut *tx)
        .await;
        if let Err(e) = inserted {
            drop(tx);
            return Err(self.explain_conflict(e, new.item_id.as_deref(), &new.idempotency_key).await);
        }
        for (seq, (step, name)) in new.tasks.iter().enumerate() {
            sqlx::query("insert into tasks (job_id, seq, step, name, state) values ($1, $2, $3, $4, 'not-started')")
                .bind(&new.id)
                .bind(seq as i64)
                .bind(step)
                .bind(name)
                .execute(&mut *tx)
                .await?;
        }
        for item in &new.items {
            sqlx::query("insert into job_items (job_id, item_id) values ($1, $2)")
                .bind(&new.id)
                .bind(item)
                .execute(&mut *tx)
                .await?;
        }
        let items: Vec<&str> = new.item_id.iter().chain(&new.items).map(String::as_str).collect();
        if let Some((item, active_job)) = Self::busy_item(&mut tx, &new.id, &items).await? {
            drop(tx);
            return Err(JobError::ItemBusy { item, active_job });
        }
        match tx.commit().await {
            Ok(()) => Ok((self.get(&new.id).await?, true)),
            // PostgreSQL may report a unique violation only at commit.
            Err(e) => Err(self.explain_conflict(e, new.item_id.as_deref(), &new.idempotency_key).await),
        }
    }

    /// The first of `items` that an active job other than `job` works on, with that job: a recovery plan's job
    /// holds its items, which the index of one active job per item cannot see (one query per item).
    async fn busy_item(
        tx: &mut sqlx::Transaction<'_, sqlx::Any>,
        job: &str,
        items: &[&str],
    ) -> Result<Option<(String, String)>, JobError> {
        for item in items {
            let active: Option<String> = sqlx::query_scalar(&format!(
                "select id from jobs where item_id = $1 and id <> $2 and state in {ACTIVE} \
                 union all select j.id from jobs j join job_items ji on ji.job_id = j.id \
                 where ji.item_id = $1 and j.id <> $2 and j.state in {ACTIVE} limit 1"
            ))
            .bind(item)
            .bind(job)
            .fetch_optional(&mut **tx)
            .await?;
            if let Some(active_job) = active {
                return Ok(Some((item.to_string(), active_job)));
            }
        }
        Ok(None)
    }

    /// Maps a violated unique constraint, by its name, to the client error it means.
    async fn explain_conflict(&self, e: sqlx::Error, item: Option<&str>, key: &str) -> JobError {
        match db::unique_violation(&e) {
            Some(Unique::OneActiveJobPerItem) => {
                if let Some(item) = item {
                    if let Ok(Some(active)) = self.active_job_for_item(item).await {
                        return JobError::ItemBusy { item: item.to_owned(), active_job: active };
                    }
                }
            }
            Some(Unique::JobIdempotencyKey) => {
                if let Ok(Some(j)) = self.by_idempotency_key(key).await {
                    return JobError::IdempotencyConflict { key: key.to_owned(), job: j.id };
                }
            }
            _ => {}
        }
        JobError::Db(e)
    }

    /// The active job that works on `item`: its own, or a recovery plan's that includes it.
    pub async fn active_job_for_item(&self, item: &str) -> Result<Option<String>, JobError> {
        Ok(sqlx::query_scalar(&format!(
            "select id from jobs where item_id = $1 and state in {ACTIVE} \
             union all select j.id from jobs j join job_items ji on ji.job_id = j.id \
             where ji.item_id = $1 and j.state in {ACTIVE} limit 1"
        ))
        .bind(item)
        .fetch_optional(&self.db.pool)
        .await?)
    }

    /// Every active job by item, in one query (the items list shows them for thousands of items).
    pub async fn active_jobs_by_item(&self) -> Result<std::collections::HashMap<String, String>, JobError> {
        crate::row! {
            struct Active {
                item_id: String,
                id: String,
            }
        }
        let rows: Vec<Active> = sqlx::query_as(&format!(
            "select item_id, id from jobs where item_id is not null and state in {ACTIVE} \
             union all select ji.item_id as item_id, j.id as id from jobs j join job_items ji on ji.job_id = j.id \
             where j.state in {ACTIVE}"
        ))
        .fetch_all(&self.db.pool)
        .await?;
        Ok(rows.into_iter().map(|r| (r.item_id, r.id)).collect())
    }

    /// How far each running initial replication is, by item: (bytes examined, bytes in all), as its worker last
    /// reported — an item's own reprotect, or its task in a recovery plan's reprotect (step
    /// `plan-item-reprotect/<item>`). One query for every item, or for one.
    pub async fn initial_sync_progress(
        &self,
        item: Option<&str>,
    ) -> Result<std::collections::HashMap<String, (u64, u64)>, JobError> {
        crate::row! {
            struct Progress {
                item_id: String,
                progress_done: i64,
                progress_total: i64,
            }
        }
        const ITEM: &str = "coalesce(j.item_id, substr(t.step, 21))"; // 21: just past `plan-item-reprotect/`
        let rows: Vec<Progress> = sqlx::query_as(&format!(
            "select {ITEM} as item_id, t.progress_done as progress_done, t.progress_total as progress_total \
             from jobs j join tasks t on t.job_id = j.id \
             where j.state = 'in-progress' and (cast($1 as text) is null or {ITEM} = $1) \
             and ((j.item_id is not null and t.step = 'initial-replication') \
               or (j.item_id is null and t.step like 'plan-item-reprotect/%')) \
             and t.state = 'in-progress' and t.progress_done is not null and t.progress_total > 0",
        ))
        .bind(item)
        .fetch_all(&self.db.pool)
        .await?;
        Ok(rows.into_iter().map(|r| (r.item_id, (r.progress_done.max(0) as u64, r.progress_total as u64))).collect())
    }

    pub async fn by_idempotency_key(&self, key: &str) -> Result<Option<Job>, JobError> {
        let id: Option<String> = sqlx::query_scalar("select id from jobs where idempotency_key = $1")
            .bind(key)
            .fetch_optional(&self.db.pool)
            .await?;
        match id {
            Some(id) => Ok(Some(self.get(&id).await?)),
            None => Ok(None),
        }
    }

    pub async fn get(&self, id: &str) -> Result<Job, JobError> {
        let row: JobRow = sqlx::query_as(&format!("select {JOB_COLUMNS} from jobs where id = $1"))
            .bind(id)
            .fetch_optional(&self.db.pool)
            .await?
            .ok_or_else(|| JobError::NotFound(id.to_owned()))?;
        let tasks: Vec<TaskRow> =
            sqlx::query_as(&format!("select {TASK_COLUMNS} from tasks where job_id = $1 order by seq"))
                .bind(id)
                .fetch_all(&self.db.pool)
                .await?;
        Ok(row.into_job(tasks.into_iter().map(Task::from).collect()))
    }

    /// The newest jobs with their tasks, in two queries.
    pub async fn list(&self, limit: i64) -> Result<Vec<Job>, JobError> {
        let rows: Vec<JobRow> =
            sqlx::query_as(&format!("select {JOB_COLUMNS} from jobs order by created_at desc, id limit $1"))
                .bind(limit)
                .fetch_all(&self.db.pool)
                .await?;
        let tasks: Vec<TaskRow> = sqlx::query_as(&format!(
            "select {TASK_COLUMNS} from tasks where job_id in \
             (select id from jobs order by created_at desc, id limit $1) order by job_id, seq"
        ))
        .bind(limit)
        .fetch_all(&self.db.pool)
        .await?;
        Ok(with_tasks(rows, tasks))
    }

    /// The newest `limit` jobs of one item (its own, not its plans'), with their tasks: two indexed queries, however
    /// many jobs the vault holds.
    pub async fn list_for_item(&self, item: &str, limit: i64) -> Result<Vec<Job>, JobError> {
        let rows: Vec<JobRow> = sqlx::query_as(&format!(
            "select {JOB_COLUMNS} from jobs where item_id = $1 order by created_at desc, id limit $2"
        ))
        .bind(item)
        .bind(limit)
        .fetch_all(&self.db.pool)
        .await?;
        let tasks: Vec<TaskRow> = sqlx::query_as(&format!(
            "select {TASK_COLUMNS} from tasks where job_id in \
             (select id from jobs where item_id = $1 order by created_at desc, id limit $2) order by job_id, seq"
        ))
        .bind(item)
        .bind(limit)
        .fetch_all(&self.db.pool)
        .await?;
        Ok(with_tasks(rows, tasks))
    }

    /// Claims one runnable job in one statement: not started; or in progress with its lease run out (its worker
    /// died, or it waits for a retry whose time has come); or held by a worker of an earlier run of this same node
    /// (a restarted node takes its own jobs back at once). Times are the database's.
    pub async fn claim(&self, owner: &str, lease_ms: Millis) -> Result<Option<Lease>, JobError> {
        let (node, this_boot) = reclaim_patterns(owner);
        let sql = self.sql(&format!(
            "update jobs set state = 'in-progress', lease_owner = $1, lease_expires_at = {{now}} + $2, \
             fencing_token = fencing_token + 1, epoch = epoch + 1, started_at = coalesce(started_at, {{now}}) \
             where id = (select id from jobs where state = 'not-started' or (state = 'in-progress' and \
               (lease_expires_at is null or lease_expires_at <= {{now}} \
                or ($3 <> '' and lease_owner like $3 and lease_owner not like $4))) \
             order by created_at, id limit 1{}) \
             returning id, fencing_token",
            self.db.skip_locked()
        ));
        crate::row! {
            struct Claimed {
                id: String,
                fencing_token: i64,
            }
        }
        let claimed: Option<Claimed> = sqlx::query_as(&sql)
            .bind(owner)
            .bind(lease_ms as i64)
            .bind(&node)
            .bind(&this_boot)
            .fetch_optional(&self.db.pool)
            .await?;
        Ok(claimed.map(|c| Lease { job_id: c.id, owner: owner.to_owned(), token: c.fencing_token }))
    }

    /// Renews the lease; answers whether a cancel was requested meanwhile. Fenced when the lease was lost.
    pub async fn heartbeat(&self, lease: &Lease, lease_ms: Millis) -> Result<bool, JobError> {
        let cancel: Option<i64> = sqlx::query_scalar(&self.sql(
            "update jobs set lease_expires_at = {now} + $3 where id = $1 and fencing_token = $2 \
             and state = 'in-progress' returning cancel_requested",
        ))
        .bind(&lease.job_id)
        .bind(lease.token)
        .bind(lease_ms as i64)
        .fetch_optional(&self.db.pool)
        .await?;
        cancel.map(|c| c != 0).ok_or_else(|| JobError::Fenced(lease.job_id.clone()))
    }

    /// Whether a cancel was requested, read without renewing; fenced when the lease was lost.
    pub async fn cancel_requested(&self, lease: &Lease) -> Result<bool, JobError> {
        let cancel: Option<i64> = sqlx::query_scalar(
            "select cancel_requested from jobs where id = $1 and fencing_token = $2 and state = 'in-progress'",
        )
        .bind(&lease.job_id)
        .bind(lease.token)
        .fetch_optional(&self.db.pool)
        .await?;
        cancel.map(|c| c != 0).ok_or_else(|| JobError::Fenced(lease.job_id.clone()))
    }

    /// Updates task `seq` of the lease's job only while the lease's fencing token is current. `set` may use
    /// `{now}`, and `$4`, `$5`, … for `values`.
    async fn fenced_task_update(
        &self,
        lease: &Lease,
        seq: i64,
        set: &str,
        from_states: &str,
        values: Vec<Value>,
    ) -> Result<(), JobError> {
        let sql = self.sql(&format!(
            "update tasks set {set} where job_id = $1 and seq = $2 and state in {from_states} \
             and exists (select 1 from jobs where id = $1 and fencing_token = $3 and state = 'in-progress')"
        ));
        let mut q = sqlx::query(&sql).bind(&lease.job_id).bind(seq).bind(lease.token);
        for v in values {
            q = match v {
                Value::Int(i) => q.bind(i),
                Value::Text(t) => q.bind(t),
            };
        }
        let r = q.execute(&self.db.pool).await?;
        if r.rows_affected() == 1 {
            Ok(())
        } else {
            Err(JobError::Fenced(lease.job_id.clone()))
        }
    }

    /// Records a running task's progress (and the bytes sent so far; the task's result replaces them).
    pub async fn task_progress(&self, lease: &Lease, p: &TaskProgress) -> Result<(), JobError> {
        let set = "progress_done = $4, progress_total = $5, bytes = $6";
        let values = vec![Value::Int(p.done as i64), Value::Int(p.total as i64), Value::Int(p.sent as i64)];
        self.fenced_task_update(lease, p.seq, set, "('in-progress')", values).await
    }

    pub async fn start_task(&self, lease: &Lease, seq: i64) -> Result<(), JobError> {
        let set = "state = 'in-progress', attempts = attempts + 1, started_at = {now}, next_attempt_at = null";
        self.fenced_task_update(lease, seq, set, "('not-started', 'in-progress')", vec![]).await
    }

    /// Records a task's verified result.
    pub async fn complete_task(&self, lease: &Lease, seq: i64, bytes: i64, result: &str) -> Result<(), JobError> {
        let set = "state = 'succeeded', finished_at = {now}, bytes = $4, result = $5, error = null, \
                   recommended_action = null";
        let values = vec![Value::Int(bytes), Value::Text(result.to_owned())];
        self.fenced_task_update(lease, seq, set, "('in-progress')", values).await
    }

    pub async fn fail_task(&self, lease: &Lease, seq: i64, error: &str, action: &str) -> Result<(), JobError> {
        let set = "state = 'failed', finished_at = {now}, error = $4, recommended_action = $5, next_attempt_at = null";
        let values = vec![Value::Text(error.to_owned()), Value::Text(action.to_owned())];
        self.fenced_task_update(lease, seq, set, "('in-progress')", values).await
    }

    /// Retryable failures with attempts left (`(seq, error, recommended action)`): each task keeps its error and
    /// waits; the job lets go of its lease until the next attempt's time, when any worker may claim it. Returns
    /// that time.
    pub async fn retry_tasks_later(
        &self,
        lease: &Lease,
        tasks: &[(i64, String, String)],
        backoff_ms: Millis,
    ) -> Result<Millis, JobError> {
        let mut tx = self.db.pool.begin().await?;
        let at: Option<i64> = sqlx::query_scalar(&self.sql(
            "update jobs set lease_owner = null, lease_expires_at = {now} + $3, epoch = epoch + 1 \
             where id = $1 and fencing_token = $2 and state = 'in-progress' returning lease_expires_at",
        ))
        .bind(&lease.job_id)
        .bind(lease.token)
        .bind(backoff_ms as i64)
        .fetch_optional(&mut *tx)
        .await?;
        let Some(at) = at else { return Err(JobError::Fenced(lease.job_id.clone())) };
        for (seq, error, action) in tasks {
            sqlx::query(
                "update tasks set state = 'not-started', finished_at = null, error = $3, recommended_action = $4, \
                 next_attempt_at = $5, progress_done = null, progress_total = null \
                 where job_id = $1 and seq = $2 and state = 'in-progress'",
            )
            .bind(&lease.job_id)
            .bind(seq)
            .bind(error)
            .bind(action)
            .bind(at)
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(at as Millis)
    }

    /// Lets go of a job without recording anything: any worker may claim it at once and run its interrupted task
    /// again (a node shutting down).
    pub async fn release(&self, lease: &Lease) -> Result<(), JobError> {
        sqlx::query(&self.sql(
            "update jobs set lease_owner = null, lease_expires_at = {now}, epoch = epoch + 1 \
             where id = $1 and fencing_token = $2 and state = 'in-progress'",
        ))
        .bind(&lease.job_id)
        .bind(lease.token)
        .execute(&self.db.pool)
        .await?;
        Ok(())
    }

    /// Ends the job in the state its tasks imply: all succeeded → succeeded; one failed → failed with that task's
    /// error; cancel requested → cancelled (remaining tasks too). Anything else is not an end: an error.
    pub async fn finish(&self, lease: &Lease) -> Result<JobState, JobError> {
        self.finish_with(lease, &NothingElse).await
    }

    /// `finish`, with what the end changes beyond the job recorded in the same transaction (`exec.on_finish`).
    pub async fn finish_with(&self, lease: &Lease, exec: &impl TaskExecutor) -> Result<JobState, JobError> {
        let job = self.get(&lease.job_id).await?;
        let Some((state, error, action)) = derived_end(&job) else {
            let token: Option<i64> =
                sqlx::query_scalar("select fencing_token from jobs where id = $1 and state = 'in-progress'")
                    .bind(&lease.job_id)
                    .fetch_optional(&self.db.pool)
                    .await?;
            if token != Some(lease.token) {
                return Err(JobError::Fenced(lease.job_id.clone()));
            }
            return Err(JobError::NotAllowed { job: job.id, state: "unfinished", action: "finish" });
        };
        // Writes only, each guarded by the token, so the transaction never reads before it writes (SQLite would
        // have to upgrade a read lock, which can fail under concurrent writers).
        let mut tx = self.db.pool.begin().await?;
        let r = sqlx::query(&self.sql(
            "update jobs set state = $3, error = $4, recommended_action = $5, finished_at = {now}, \
             lease_owner = null, lease_expires_at = null, epoch = epoch + 1 \
             where id = $1 and fencing_token = $2 and state = 'in-progress'",
        ))
        .bind(&lease.job_id)
        .bind(lease.token)
        .bind(state.as_str())
        .bind(error)
        .bind(action)
        .execute(&mut *tx)
        .await?;
        if r.rows_affected() != 1 {
            return Err(JobError::Fenced(lease.job_id.clone()));
        }
        if state == JobState::Cancelled {
            sqlx::query(
                "update tasks set state = 'cancelled' where job_id = $1 and state in ('not-started', 'in-progress')",
            )
            .bind(&lease.job_id)
            .execute(&mut *tx)
            .await?;
        }
        sqlx::query("delete from item_leases where holder = $1").bind(&lease.job_id).execute(&mut *tx).await?;
        exec.on_finish(&mut tx, &job, state).await?;
        tx.commit().await?;
        Ok(state)
    }

    /// Cancel: a job not started (or suspended) ends at once; a running one is asked to stop — its worker's
    /// heartbeat sees the request and stops the running step at its next chunk; a job waiting for a retry is made
    /// claimable now so a worker ends it promptly (and settles its item).
    pub async fn cancel(&self, id: &str) -> Result<JobState, JobError> {
        let mut tx = self.db.pool.begin().await?;
        // The job first, compared on its state: losing the race to a claim changes nothing, and we look again.
        let ended = sqlx::query(&self.sql(
            "update jobs set state = 'cancelled', cancel_requested = 1, finished_at = {now}, epoch = epoch + 1, \
             error = 'Cancelled by an operator.' where id = $1 and state in ('not-started', 'suspended')",
        ))
        .bind(id)
        .execute(&mut *tx)
        .await?;
        if ended.rows_affected() == 1 {
            sqlx::query("update tasks set state = 'cancelled' where job_id = $1 and state <> 'succeeded'")
                .bind(id)
                .execute(&mut *tx)
                .await?;
            tx.commit().await?;
            return Ok(JobState::Cancelled);
        }
        let asked = sqlx::query(&self.sql(
            "update jobs set cancel_requested = 1, epoch = epoch + 1, \
             lease_expires_at = case when lease_owner is null then {now} else lease_expires_at end \
             where id = $1 and state = 'in-progress'",
        ))
        .bind(id)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        if asked.rows_affected() == 1 {
            return Ok(JobState::InProgress);
        }
        let job = self.get(id).await?;
        Err(JobError::NotAllowed { job: id.to_owned(), state: job.state.as_str(), action: "cancel" })
    }

    /// Restart a failed or cancelled job from its first task not yet succeeded.
    pub async fn restart(&self, id: &str) -> Result<(), JobError> {
        let job = self.get(id).await?;
        if !matches!(job.state, JobState::Failed | JobState::Cancelled) {
            return Err(JobError::NotAllowed { job: id.to_owned(), state: job.state.as_str(), action: "restart" });
        }
        let mut tx = self.db.pool.begin().await?;
        if let Some(lock) = self.db.items_claim_lock() {
            sqlx::query(lock).execute(&mut *tx).await?;
        }
        let r = sqlx::query(
            "update jobs set state = 'not-started', error = null, recommended_action = null, cancel_requested = 0, \
             finished_at = null, epoch = epoch + 1 where id = $1 and state in ('failed', 'cancelled')",
        )
        .bind(id)
        .execute(&mut *tx)
        .await;
        match r {
            Ok(r) if r.rows_affected() == 1 => {
                sqlx::query(
                    "update tasks set state = 'not-started', error = null, recommended_action = null, \
                     next_attempt_at = null, attempts = 0 where job_id = $1 and state <> 'succeeded'",
                )
                .bind(id)
                .execute(&mut *tx)
                .await?;
                // A job takes its items back only if no other job (a plan's included) started on one meanwhile.
                let items: Vec<String> = sqlx::query_scalar("select item_id from job_items where job_id = $1")
                    .bind(id)
                    .fetch_all(&mut *tx)
                    .await?;
                let items: Vec<&str> = job.item_id.iter().chain(&items).map(String::as_str).collect();
                if let Some((item, active_job)) = Self::busy_item(&mut tx, id, &items).await? {
                    drop(tx);
                    return Err(JobError::ItemBusy { item, active_job });
                }
                tx.commit().await?;
                Ok(())
            }
            Ok(_) => {
                drop(tx);
                let now = self.get(id).await?;
                Err(JobError::NotAllowed { job: id.to_owned(), state: now.state.as_str(), action: "restart" })
            }
            Err(e) => {
                drop(tx);
                Err(self.explain_conflict(e, job.item_id.as_deref(), "").await)
            }
        }
    }

    /// Resume a suspended job: it is claimed again and continues at its first task not yet succeeded.
    pub async fn resume(&self, id: &str) -> Result<(), JobError> {
        let r = sqlx::query(
            "update jobs set state = 'not-started', epoch = epoch + 1 where id = $1 and state = 'suspended'",
        )
        .bind(id)
        .execute(&self.db.pool)
        .await?;
        if r.rows_affected() == 1 {
            return Ok(());
        }
        let job = self.get(id).await?;
        Err(JobError::NotAllowed { job: id.to_owned(), state: job.state.as_str(), action: "resume" })
    }

    /// Takes the right to write an item's disks for a job. `false` while a replication round holds it; the round
    /// lets go at its next heartbeat, as it sees the job.
    pub async fn take_item_for_job(&self, item: &str, job: &str) -> Result<bool, JobError> {
        let taken: Option<i64> = sqlx::query_scalar(&self.sql(
            "insert into item_leases (item_id, holder, token, expires_at) values ($1, $2, 1, 0) \
             on conflict (item_id) do update set holder = $2, token = item_leases.token + 1, expires_at = 0 \
             where item_leases.holder = $2 \
               or (item_leases.holder like 'replication/%' and item_leases.expires_at <= {now}) \
               or (item_leases.holder not like 'replication/%' and not exists (select 1 from jobs j \
                 where j.id = item_leases.holder and j.state in ('not-started', 'in-progress', 'suspended'))) \
             returning token",
        ))
        .bind(item)
        .bind(job)
        .fetch_optional(&self.db.pool)
        .await?;
        Ok(taken.is_some())
    }

    /// Takes an item for one replication round, only while it has no active job and nobody else holds it.
    /// Returns the lease's token.
    pub async fn take_item_for_round(
        &self,
        item: &str,
        holder: &str,
        lease_ms: Millis,
    ) -> Result<Option<i64>, JobError> {
        Ok(sqlx::query_scalar(&self.sql(&format!(
            "insert into item_leases (item_id, holder, token, expires_at) \
             select $1, $2, 1, {{now}} + $3 where not exists \
               (select 1 from jobs where item_id = $1 and state in {ACTIVE}) \
             on conflict (item_id) do update set holder = $2, token = item_leases.token + 1, \
               expires_at = {{now}} + $3 \
             where (item_leases.holder like 'replication/%' and item_leases.expires_at <= {{now}}) \
               or (item_leases.holder not like 'replication/%' and not exists (select 1 from jobs j \
                 where j.id = item_leases.holder and j.state in {ACTIVE})) \
             returning token"
        )))
        .bind(item)
        .bind(holder)
        .bind(lease_ms as i64)
        .fetch_optional(&self.db.pool)
        .await?)
    }

    /// Renews a round's hold on an item; `false` when it must stop now: a job wants the item, or the hold was lost.
    pub async fn renew_item_round(
        &self,
        item: &str,
        holder: &str,
        token: i64,
        lease_ms: Millis,
    ) -> Result<bool, JobError> {
        let r = sqlx::query(&self.sql(&format!(
            "update item_leases set expires_at = {{now}} + $4 where item_id = $1 and holder = $2 and token = $3 \
             and not exists (select 1 from jobs where item_id = $1 and state in {ACTIVE})"
        )))
        .bind(item)
        .bind(holder)
        .bind(token)
        .bind(lease_ms as i64)
        .execute(&self.db.pool)
        .await?;
        Ok(r.rows_affected() == 1)
    }

    /// Ends a round's hold on an item (a no-op when it was lost meanwhile).
    pub async fn release_item_round(&self, item: &str, holder: &str, token: i64) -> Result<(), JobError> {
        sqlx::query("delete from item_leases where item_id = $1 and holder = $2 and token = $3")
            .bind(item)
            .bind(holder)
            .bind(token)
            .execute(&self.db.pool)
            .await?;
        Ok(())
    }
}

/// What a task run reports: bytes moved and a verified result to record.
pub struct TaskOutcome {
    pub bytes: i64,
    pub result: String,
}

/// A task that could not be done, with what the operator should do.
#[derive(Debug)]
pub struct TaskFailure {
    pub error: String,
    pub recommended_action: String,
    /// Worth another attempt by itself (a dropped link, a busy disk); otherwise the job fails at once with this
    /// error, since only a person can fix the cause (a disconnected vCenter, a refused rule).
    pub retryable: bool,
}

impl TaskFailure {
    pub fn fatal(error: impl Into<String>, action: impl Into<String>) -> TaskFailure {
        TaskFailure { error: error.into(), recommended_action: action.into(), retryable: false }
    }
    pub fn retryable(error: impl Into<String>, action: impl Into<String>) -> TaskFailure {
        TaskFailure { error: error.into(), recommended_action: action.into(), retryable: true }
    }
}

/// Does the work of one task; the engine records the outcome. Implementations must be idempotent: after a crash
/// the interrupted task runs again.
#[allow(async_fn_in_trait)]
pub trait TaskExecutor {
    async fn run(&self, job: &Job, task: &Task) -> Result<TaskOutcome, TaskFailure>;

    /// The replicated item whose disks the task writes, if any: the engine takes the item from continuous
    /// replication before the task starts.
    fn item_of(&self, job: &Job, _task: &Task) -> Option<String> {
        job.item_id.clone()
    }

    /// True while the node shuts down: a step that stops then is handed back to be run again, not failed.
    fn stopping(&self) -> bool {
        false
    }

    /// Tasks that follow one another in the job with the same key run side by side (the items of one group of a
    /// recovery plan); `None` runs the task on its own.
    fn side_by_side(&self, _job: &Job, _task: &Task) -> Option<String> {
        None
    }

    /// Runs several tasks at once, each result in its task's place. By default one after the other: an executor
    /// whose tasks share state overrides it with one that gives each task its own.
    async fn run_together(&self, job: &Job, tasks: &[&Task]) -> Vec<Result<TaskOutcome, TaskFailure>> {
        let mut out = Vec::with_capacity(tasks.len());
        for t in tasks {
            out.push(guarded(job, t, self.run(job, t)).await);
        }
        out
    }

    /// Records what the job's end changes (the item's lifecycle state) on `tx`, the transaction that records the
    /// job's end: both happen, or neither.
    async fn on_finish(&self, _tx: &mut sqlx::AnyConnection, _job: &Job, _end: JobState) -> Result<(), JobError> {
        Ok(())
    }
}

/// Runs `op` again while it fails with a transient database error, backing off, for up to about half a minute:
/// a database restart or a dropped connection does not fail the job (its lease is renewed by the heartbeat, which
/// rides out the same errors).
pub async fn db_retry<T, F, Fut>(what: &str, mut op: F) -> Result<T, JobError>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, JobError>>,
{
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    let mut wait = std::time::Duration::from_millis(100);
    loop {
        match op().await {
            Err(e) if e.is_transient() && std::time::Instant::now() < deadline => {
                tracing::warn!(error = %e, "{what}: the database is not answering; trying again in {wait:?}");
                tokio::time::sleep(wait).await;
                wait = (wait * 2).min(std::time::Duration::from_secs(5));
            }
            other => return other,
        }
    }
}

async fn end_job(store: &JobStore, lease: &Lease, exec: &impl TaskExecutor) -> Result<JobState, JobError> {
    db_retry("ending the job", || store.finish_with(lease, exec)).await
}

/// An executor with nothing to record at a job's end, for `JobStore::finish`.
struct NothingElse;

impl TaskExecutor for NothingElse {
    async fn run(&self, _: &Job, _: &Task) -> Result<TaskOutcome, TaskFailure> {
        Err(TaskFailure::fatal("nothing runs here", "Run jobs with a real executor."))
    }
}

/// A task's run with a panic in its step turned into the task's failure, so one defect fails its task rather than
/// the worker.
pub async fn guarded(
    job: &Job,
    task: &Task,
    run: impl std::future::Future<Output = Result<TaskOutcome, TaskFailure>>,
) -> Result<TaskOutcome, TaskFailure> {
    use futures_util::FutureExt;
    // On the heap: a workflow's step is a deep future, and the thread polling it (a worker's, a test's) has an
    // ordinary stack.
    match std::panic::AssertUnwindSafe(Box::pin(run)).catch_unwind().await {
        Ok(done) => done,
        Err(payload) => {
            let msg = panic_message(payload.as_ref());
            tracing::error!(job = %job.id, task = %task.name, panic = %msg, "a workflow step panicked");
            Err(TaskFailure::fatal(
                format!("the step stopped on an internal error: {msg}"),
                "This is a defect in Homeward: send the server log with the job's id to support, then restart the \
                 job.",
            ))
        }
    }
}

/// The text of a panic's payload.
fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    payload
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "a panic without a message".into())
}

/// Runs one claimed job: each task not yet succeeded, in order; stops before the next task when a cancel was
/// requested. A retryable failure with attempts left hands the job back until its next attempt (the result is
/// then `InProgress`); a fatal one, or a panic in the step, fails the task and ends the job.
pub async fn run_job(
    store: &JobStore,
    lease: &Lease,
    exec: &impl TaskExecutor,
    lease_ms: Millis,
) -> Result<JobState, JobError> {
    // Read once: while this worker holds the lease nobody else changes the tasks, and the heartbeat before each
    // batch answers whether a cancel was requested — a job of hundreds of tasks is not re-read per task.
    let job = db_retry("reading the job", || store.get(&lease.job_id)).await?;
    if job.cancel_requested {
        return end_job(store, lease, exec).await;
    }
    let left: Vec<&Task> = job.tasks.iter().filter(|t| t.state != JobState::Succeeded).collect();
    let mut at = 0;
    while at < left.len() {
        // The next batch: one task, or the tasks after it that run side by side with it.
        let key = exec.side_by_side(&job, left[at]);
        let mut until = at + 1;
        while key.is_some() && until < left.len() && exec.side_by_side(&job, left[until]) == key {
            until += 1;
        }
        let batch = &left[at..until];
        at = until;
        if batch.iter().any(|t| t.state == JobState::Failed) {
            return end_job(store, lease, exec).await;
        }
        if exec.stopping() {
            // The node is shutting down: no next task here; any node takes the job on from this point.
            db_retry("handing the job back", || store.release(lease)).await?;
            return Ok(JobState::InProgress);
        }
        if db_retry("renewing the lease", || store.heartbeat(lease, lease_ms)).await? {
            return end_job(store, lease, exec).await;
        }
        for task in batch {
            if let Some(item) = exec.item_of(&job, task) {
                // A replication round may be writing the item's disks: it lets go at its next heartbeat.
                while !db_retry("taking the item", || store.take_item_for_job(&item, &job.id)).await? {
                    if db_retry("renewing the lease", || store.heartbeat(lease, lease_ms)).await? {
                        return end_job(store, lease, exec).await;
                    }
                    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                }
            }
        }
        for task in batch {
            db_retry("starting the task", || store.start_task(lease, task.seq)).await?;
        }
        let ran = match batch {
            [task] => vec![guarded(&job, task, exec.run(&job, task)).await],
            _ => exec.run_together(&job, batch).await,
        };
        let mut failures = Vec::new();
        for (task, ran) in batch.iter().zip(ran) {
            match ran {
                Ok(o) => {
                    db_retry("recording the result", || store.complete_task(lease, task.seq, o.bytes, &o.result))
                        .await?
                }
                Err(f) => failures.push((*task, f)),
            }
        }
        if failures.is_empty() {
            continue;
        }
        if exec.stopping() {
            // The node is shutting down: the steps run again wherever the job is claimed next.
            tracing::info!(job = %job.id, "handing the job back: this node is shutting down");
            db_retry("handing the job back", || store.release(lease)).await?;
            return Ok(JobState::InProgress);
        }
        // Stopped because an operator cancelled: the job ends cancelled, not failed.
        if db_retry("reading the job", || store.get(&lease.job_id)).await?.cancel_requested {
            return end_job(store, lease, exec).await;
        }
        let again = |(task, f): &(&Task, TaskFailure)| f.retryable && task.attempts + 1 < store.retry.max_attempts;
        if failures.iter().all(again) {
            // Every failure is worth another attempt: the job waits for the longest backoff among them, and the
            // batch's failed tasks run again together (its succeeded ones are not run again).
            let backoff = failures.iter().map(|(t, _)| store.retry.backoff(t.attempts + 1)).max().unwrap_or(0);
            let retries: Vec<(i64, String, String)> = failures
                .iter()
                .map(|(t, f)| {
                    let error = format!("attempt {} of {}: {}", t.attempts + 1, store.retry.max_attempts, f.error);
                    (t.seq, error, f.recommended_action.clone())
                })
                .collect();
            let at =
                db_retry("scheduling the next attempt", || store.retry_tasks_later(lease, &retries, backoff)).await?;
            for (task, f) in &failures {
                tracing::warn!(job = %job.id, task = %task.name, error = %f.error, next_attempt_at = at,
                    "a task failed; it will be tried again");
            }
            return Ok(JobState::InProgress);
        }
        for (task, f) in &failures {
            db_retry("recording the failure", || store.fail_task(lease, task.seq, &f.error, &f.recommended_action))
                .await?;
        }
        return end_job(store, lease, exec).await;
    }
    end_job(store, lease, exec).await
}

/// Jobs in the rows' order, each with its tasks (in `seq` order as queried).
fn with_tasks(rows: Vec<JobRow>, tasks: Vec<TaskRow>) -> Vec<Job> {
    let mut by_job: std::collections::HashMap<String, Vec<Task>> = std::collections::HashMap::new();
    for t in tasks {
        by_job.entry(t.job_id.clone()).or_default().push(t.into());
    }
    rows.into_iter()
        .map(|r| {
            let tasks = by_job.remove(&r.id).unwrap_or_default();
            r.into_job(tasks)
        })
        .collect()
}
