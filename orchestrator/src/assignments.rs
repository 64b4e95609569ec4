//! Assignments: one replication cycle handed to two site agents. A job's step (or a continuous-replication round)
//! writes an assignment — which agent sends which source disks, which agent receives them into which target disks,
//! the mode, the consistency and the recovery point's id — and waits for it to end. The sending agent takes it
//! with a long poll, connects to the receiving agent over mutual TLS and streams the disks; the receiving agent asks
//! here which target path a stream is for. Both report every second while the bytes flow.
//!
//! Architecture Invariant: an assignment carries the fence of whoever created it — a job's fencing token, or a
//! replication round's item lease. Every call either agent makes about it (take, accept, progress, finish) checks
//! that fence in the same statement; once it is no longer current (the job was cancelled, another worker took the
//! job over, a job wants the round's item), each call is refused and the agent stops the stream at its next chunk.
//! Fencing therefore stops the bytes on the wire and on the target disk, not only the rows.

use serde::{Deserialize, Serialize};

use crate::db::Db;
use crate::domain::Millis;

/// Whose claim an assignment runs under.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Fence {
    /// A job's step: valid while the job is in progress under this fencing token and no cancel was requested.
    Job { id: String, token: i64 },
    /// A replication round: valid while the round holds the item's lease and no job wants the item.
    Item { item: String, holder: String, token: i64 },
}

/// One disk of a cycle, as paths relative to each agent's disk root.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DiskPair {
    pub source: String,
    pub target: String,
    /// The source is a cloud disk held as a page blob: the sender first brings its cache (`source`) up to this
    /// snapshot of the blob.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source_blob: Option<BlobAccess>,
    /// The target is a cloud disk held as a page blob: the receiver pushes its cache (`target`) to the blob after
    /// the cycle's point is committed, before the sender hears of it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target_blob: Option<BlobAccess>,
}

/// One blob (or one snapshot of it) of a connected storage account, as a site agent reaches it: with a shared
/// access signature for that blob alone, valid for the assignment's life.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BlobAccess {
    /// The storage-account connection's name (for messages).
    pub account: String,
    pub url: String,
    pub container: String,
    pub blob: String,
    pub sas: String,
    pub thumbprint: Option<String>,
    /// The snapshot to read, its blob's ETag then and its size.
    pub snapshot: Option<String>,
    pub etag: String,
    pub size: u64,
}

/// What the sending agent runs.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CycleSpec {
    pub disks: Vec<DiskPair>,
    pub mode: replicator::Mode,
    pub consistency: replicator::Consistency,
    /// Shared by every disk of the cycle (R-RP2's common points).
    pub point_id: String,
    pub block_size: u32,
    /// A durable checkpoint on the target after every this many bytes: the most a resume sends again.
    pub chunk_bytes: u64,
    /// The vault's replication bandwidth policy; the sender's own rate cap applies too (the lower wins).
    pub bandwidth: Option<u64>,
    /// The replicator's stream secret: both halves must present it, so a stream is bound to its assignment.
    pub stream_token: String,
    /// How long the target keeps recovery points (the item's retention); older ones are pruned at commit.
    #[serde(default)]
    pub retention_ms: Option<u64>,
}

/// Where an assignment is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum AssignmentState {
    Pending,
    Sending,
    Done,
    Failed,
    Cancelled,
}

impl AssignmentState {
    pub fn as_str(self) -> &'static str {
        match self {
            AssignmentState::Pending => "pending",
            AssignmentState::Sending => "sending",
            AssignmentState::Done => "done",
            AssignmentState::Failed => "failed",
            AssignmentState::Cancelled => "cancelled",
        }
    }
    fn parse(s: &str) -> Option<AssignmentState> {
        [Self::Pending, Self::Sending, Self::Done, Self::Failed, Self::Cancelled].into_iter().find(|x| x.as_str() == s)
    }
}

/// What one disk's stream did, as the sender reports it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DiskResult {
    pub source: String,
    pub mode: String,
    pub data_bytes: u64,
    pub resumed_from_block: Option<u64>,
    pub digest: String,
    pub point_id: String,
}

/// The sender's last word on an assignment.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Outcome {
    pub disks: Vec<DiskResult>,
    /// Bytes that crossed the network, both directions, TLS included.
    pub wire_bytes: u64,
    /// The rate cap the sender honoured, if any.
    pub rate_cap: Option<u64>,
}

/// An assignment as the control plane and the agents see it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Assignment {
    pub id: String,
    pub job_id: Option<String>,
    pub sender_id: String,
    pub receiver_id: String,
    pub spec: CycleSpec,
    pub state: AssignmentState,
    pub done_bytes: u64,
    pub total_bytes: u64,
    pub wire_bytes: u64,
    pub outcome: Option<Outcome>,
    pub error: Option<String>,
    /// Milliseconds since it was created, and since either agent last reported on it (database time).
    pub age_ms: u64,
    pub silent_ms: u64,
}

#[derive(Debug, thiserror::Error)]
pub enum AssignmentError {
    /// The fence is gone, the assignment ended, or it is another agent's: the caller must stop.
    #[error("assignment {0} is no longer valid for this agent (cancelled, ended, or its job moved on): stop")]
    Fenced(String),
    #[error("no assignment {0}")]
    NotFound(String),
    #[error("{0}")]
    Invalid(String),
    #[error("database: {0}")]
    Db(#[from] sqlx::Error),
}

crate::row! {
    struct Row {
        id: String,
        job_id: Option<String>,
        sender_id: String,
        receiver_id: String,
        spec: String,
        state: String,
        done_bytes: i64,
        total_bytes: i64,
        wire_bytes: i64,
        result: Option<String>,
        error: Option<String>,
        age_ms: i64,
        silent_ms: i64,
    }
}

impl Row {
    fn decode(self) -> Result<Assignment, AssignmentError> {
        let bad = |what: &str, e: String| AssignmentError::Invalid(format!("assignment {}: {what}: {e}", self.id));
        let spec = serde_json::from_str(&self.spec).map_err(|e| bad("spec", e.to_string()))?;
        let state = AssignmentState::parse(&self.state).ok_or_else(|| bad("state", self.state.clone()))?;
        let outcome = match &self.result {
            Some(j) => Some(serde_json::from_str(j).map_err(|e| bad("result", e.to_string()))?),
            None => None,
        };
        Ok(Assignment {
            id: self.id,
            job_id: self.job_id,
            sender_id: self.sender_id,
            receiver_id: self.receiver_id,
            spec,
            state,
            done_bytes: self.done_bytes.max(0) as u64,
            total_bytes: self.total_bytes.max(0) as u64,
            wire_bytes: self.wire_bytes.max(0) as u64,
            outcome,
            error: self.error,
            age_ms: self.age_ms.max(0) as u64,
            silent_ms: self.silent_ms.max(0) as u64,
        })
    }
}

#[derive(Clone, Debug)]
pub struct Assignments {
    pub db: Db,
}

/// The fence check, on an assignment aliased `a`: its creator's claim is still the current one.
const FENCE: &str = "((a.fence_kind = 'job' and exists (select 1 from jobs j where j.id = a.fence_key \
     and j.fencing_token = a.fence_token and j.state = 'in-progress' and j.cancel_requested = 0)) \
  or (a.fence_kind = 'item' and exists (select 1 from item_leases l where l.item_id = a.fence_key \
     and l.holder = a.fence_holder and l.token = a.fence_token and l.expires_at > {now}) \
     and not exists (select 1 from jobs j where j.item_id = a.fence_key \
     and j.state in ('not-started', 'in-progress', 'suspended'))))";

impl Assignments {
    pub fn new(db: Db) -> Assignments {
        Assignments { db }
    }

    fn sql(&self, template: &str) -> String {
        template.replace("{fence}", FENCE).replace("{now}", self.db.now_ms())
    }

    fn select(&self, filter: &str) -> String {
        self.sql(&format!(
            "select a.id, a.job_id, a.sender_id, a.receiver_id, a.spec, a.state, a.done_bytes, a.total_bytes, \
             a.wire_bytes, a.result, a.error, {{now}} - a.created_at as age_ms, {{now}} - a.updated_at as silent_ms \
             from assignments a where {filter}"
        ))
    }

    /// Writes a new assignment for `sender` → `receiver` (agent ids) under `fence`; answers its id.
    pub async fn create(
        &self,
        job_id: Option<&str>,
        fence: &Fence,
        sender: &str,
        receiver: &str,
        spec: &CycleSpec,
    ) -> Result<String, AssignmentError> {
        let id = format!("asg-{}", uuid::Uuid::now_v7());
        let (kind, key, holder, token) = match fence {
            Fence::Job { id, token } => ("job", id.as_str(), id.as_str(), *token),
            Fence::Item { item, holder, token } => ("item", item.as_str(), holder.as_str(), *token),
        };
        let spec = serde_json::to_string(spec).map_err(|e| AssignmentError::Invalid(e.to_string()))?;
        sqlx::query(&self.sql(
            "insert into assignments (id, job_id, fence_kind, fence_key, fence_holder, fence_token, sender_id, \
             receiver_id, spec, state, created_at, updated_at) \
             values ($1, $2, $3, $4, $5, $6, $7, $8, $9, 'pending', {now}, {now})",
        ))
        .bind(&id)
        .bind(job_id)
        .bind(kind)
        .bind(key)
        .bind(holder)
        .bind(token)
        .bind(sender)
        .bind(receiver)
        .bind(spec)
        .execute(&self.db.pool)
        .await?;
        Ok(id)
    }

    pub async fn get(&self, id: &str) -> Result<Assignment, AssignmentError> {
        let row: Option<Row> = sqlx::query_as(&self.select("a.id = $1")).bind(id).fetch_optional(&self.db.pool).await?;
        row.ok_or_else(|| AssignmentError::NotFound(id.to_owned()))?.decode()
    }

    /// The sender's long poll: its oldest pending assignment whose fence holds, now marked as being sent.
    pub async fn take(&self, sender: &str) -> Result<Option<Assignment>, AssignmentError> {
        let sql = self.sql(&format!(
            "update assignments set state = 'sending', taken_at = {{now}}, updated_at = {{now}} \
             where id = (select a.id from assignments a where a.sender_id = $1 and a.state = 'pending' and {{fence}} \
                         order by a.created_at limit 1{}) \
               and state = 'pending' returning id",
            self.db.skip_locked()
        ));
        let taken: Option<String> = sqlx::query_scalar(&sql).bind(sender).fetch_optional(&self.db.pool).await?;
        match taken {
            Some(id) => Ok(Some(self.get(&id).await?)),
            None => Ok(None),
        }
    }

    /// The sender's progress: refused (and the sender must stop) once the fence is gone or the assignment ended.
    pub async fn progress(
        &self,
        id: &str,
        sender: &str,
        done: u64,
        total: u64,
        wire: u64,
    ) -> Result<(), AssignmentError> {
        let sql = self.sql(
            "update assignments set done_bytes = $3, total_bytes = $4, wire_bytes = $5, updated_at = {now} \
             where id = $1 and sender_id = $2 and state = 'sending' \
               and exists (select 1 from assignments a where a.id = $1 and {fence})",
        );
        let r = sqlx::query(&sql)
            .bind(id)
            .bind(sender)
            .bind(done as i64)
            .bind(total as i64)
            .bind(wire as i64)
            .execute(&self.db.pool)
            .await?;
        if r.rows_affected() == 1 {
            Ok(())
        } else {
            Err(AssignmentError::Fenced(id.to_owned()))
        }
    }

    /// The receiver's check, at a stream's start and every second after: the assignment is its, being sent, and
    /// fenced in. When `sender_fingerprint` is given, the stream's peer must be the assignment's sender.
    pub async fn check_receiver(
        &self,
        id: &str,
        receiver: &str,
        sender_fingerprint: Option<&str>,
    ) -> Result<Assignment, AssignmentError> {
        let sql = self.select(
            "a.id = $1 and a.receiver_id = $2 and a.state = 'sending' and {fence} \
             and ($3 = '' or exists (select 1 from agents g where g.id = a.sender_id \
                                     and g.cert_fingerprint = $3 and g.revoked_at is null))",
        );
        let row: Option<Row> = sqlx::query_as(&sql)
            .bind(id)
            .bind(receiver)
            .bind(sender_fingerprint.unwrap_or(""))
            .fetch_optional(&self.db.pool)
            .await?;
        row.ok_or_else(|| AssignmentError::Fenced(id.to_owned()))?.decode()
    }

    /// The sender's last word. Recorded only while the fence holds: a fenced-off sender's late result changes
    /// nothing.
    pub async fn finish(&self, id: &str, sender: &str, result: Result<&Outcome, &str>) -> Result<(), AssignmentError> {
        let (state, json, error, wire) = match result {
            Ok(o) => {
                let j = serde_json::to_string(o).map_err(|e| AssignmentError::Invalid(e.to_string()))?;
                ("done", Some(j), None, o.wire_bytes as i64)
            }
            Err(e) => ("failed", None, Some(e.to_owned()), 0),
        };
        let sql = self.sql(
            "update assignments set state = $3, result = $4, error = $5, \
               wire_bytes = case when $6 > 0 then $6 else wire_bytes end, updated_at = {now} \
             where id = $1 and sender_id = $2 and state = 'sending' \
               and exists (select 1 from assignments a where a.id = $1 and {fence})",
        );
        let r = sqlx::query(&sql)
            .bind(id)
            .bind(sender)
            .bind(state)
            .bind(json)
            .bind(error)
            .bind(wire)
            .execute(&self.db.pool)
            .await?;
        if r.rows_affected() == 1 {
            Ok(())
        } else {
            Err(AssignmentError::Fenced(id.to_owned()))
        }
    }

    /// Ends an assignment that has not ended, with `why`; both agents are refused from their next call on.
    pub async fn cancel(&self, id: &str, why: &str) -> Result<(), AssignmentError> {
        sqlx::query(&self.sql(
            "update assignments set state = 'cancelled', error = $2, updated_at = {now} \
             where id = $1 and state in ('pending', 'sending')",
        ))
        .bind(id)
        .bind(why)
        .execute(&self.db.pool)
        .await?;
        Ok(())
    }

    /// A sending agent that restarted cannot finish what it was sending: those assignments fail now (the step
    /// retries and resumes from the target's cursor) instead of after a silence.
    pub async fn abandon(&self, sender: &str) -> Result<u64, AssignmentError> {
        let r = sqlx::query(&self.sql(
            "update assignments set state = 'failed', error = 'the sending agent restarted mid-cycle',              updated_at = {now} where sender_id = $1 and state = 'sending'",
        ))
        .bind(sender)
        .execute(&self.db.pool)
        .await?;
        Ok(r.rows_affected())
    }

    /// Forgets assignments last touched before `before_ms` (database time) — ended ones, and any left unended by a
    /// step that died, long past [`SILENCE_MS`]: a job keeps its own summary in its task's result, and continuous
    /// replication writes one per cycle, so the table must not grow forever.
    pub async fn prune(&self, before_ms: i64) -> Result<u64, AssignmentError> {
        let r =
            sqlx::query("delete from assignments where updated_at < $1").bind(before_ms).execute(&self.db.pool).await?;
        Ok(r.rows_affected())
    }

    /// The assignments of a job, oldest first (the job page's retries).
    pub async fn of_job(&self, job_id: &str) -> Result<Vec<Assignment>, AssignmentError> {
        let rows: Vec<Row> = sqlx::query_as(&(self.select("a.job_id = $1") + " order by a.created_at"))
            .bind(job_id)
            .fetch_all(&self.db.pool)
            .await?;
        rows.into_iter().map(Row::decode).collect()
    }
}

/// How long ended assignments are kept.
pub const KEEP_MS: Millis = 24 * 3600 * 1000;

/// Until when an assignment may wait for its sender to take it, or go without word from it, before the step gives
/// it up and retries: a few missed heartbeats of a healthy agent.
pub const SILENCE_MS: Millis = 30_000;
