//! Alerts: conditions that need a person, apart from job failures — an item's RPO past its threshold, a site
//! connection or an agent that stopped answering, a datastore nearly full. [`conditions`] decides them from the
//! vault's state (pure); [`Alerts::reconcile`] keeps one open alert per kind and subject in SQL: it opens when its
//! condition appears, resolves itself when it clears, and a person may acknowledge it meanwhile. Any node may
//! reconcile: a partial unique index keeps one open alert per condition, and a resolution is a compare-and-set.

use serde::Serialize;

use crate::db::Db;
use crate::domain::*;
use crate::lifecycle::State;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum AlertKind {
    RpoBreached,
    ConnectionFailing,
    AgentOffline,
    DatastoreNearlyFull,
    /// Both copies of an item changed after a failover; it waits for the operator's choice.
    SplitBrain,
    /// A verification found blocks of an item's on-premises replica that differ from their recorded hashes, and no
    /// cycle has rewritten them yet.
    ReplicaDamaged,
}

impl AlertKind {
    pub fn parse(s: &str) -> Option<AlertKind> {
        serde_json::from_value(serde_json::Value::String(s.to_owned())).ok()
    }
}

/// A condition as evaluated now.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Condition {
    pub kind: AlertKind,
    /// What it is about: an item's, a connection's, an agent's or a datastore's name.
    pub subject: String,
    pub severity: Health,
    /// What is wrong and what to do, in words.
    pub message: String,
}

/// Below this share of its capacity free, a datastore alerts.
pub const DATASTORE_FREE_PERCENT: u64 = 10;

/// What the conditions are evaluated from: the items with their newest point, the site connections with the cause
/// of their last failed check, the agents, the inventory.
pub struct Inputs<'a> {
    pub items: &'a [ReplicatedItem],
    /// (kind in words, name, last error, since when it last answered)
    pub connections: Vec<(&'static str, String, Option<String>, Option<Millis>)>,
    /// (role in words, name, offline, last heartbeat)
    pub agents: Vec<(&'static str, String, bool, Option<Millis>)>,
    pub inventory: &'a Inventory,
    pub now: Millis,
}

fn minutes(ms: Millis) -> String {
    let m = ms / MINUTE;
    if m >= 120 {
        format!("{} h {} min", m / 60, m % 60)
    } else if m >= 1 {
        format!("{m} min")
    } else {
        format!("{} s", ms / 1000)
    }
}

/// Every condition that holds now. Pure.
pub fn conditions(i: &Inputs) -> Vec<Condition> {
    let mut out = Vec::new();
    for item in i.items {
        if let Some(sb) = item.split_brain.as_ref().filter(|_| item.state == State::SplitBrain) {
            let written = |t: Option<Millis>| t.map_or("before then".to_owned(), utc_text);
            out.push(Condition {
                kind: AlertKind::SplitBrain,
                subject: item.id.clone(),
                severity: Health::Critical,
                message: format!(
                    "{} is in split-brain since {}: both copies changed (cloud last written {}, on-premises {}). \
                     Nothing replicates until you choose the copy that wins on the item's page; the other copy's \
                     divergent blocks are kept until the next commit.",
                    item.name,
                    utc_text(sb.detected_at),
                    written(sb.cloud_last_write_at),
                    written(sb.onprem_last_write_at)
                ),
            });
        }
        if let Some(v) = item.verification.as_ref().filter(|v| v.damaged()) {
            out.push(Condition {
                kind: AlertKind::ReplicaDamaged,
                subject: item.id.clone(),
                severity: Health::Critical,
                message: format!(
                    "{}'s on-premises replica was damaged when verified at {}: {} block(s) of {} differ from their \
                     recorded hashes. Its next replication cycle compares the whole replica with the cloud copy and \
                     rewrites them; do not fail back before it has run.",
                    item.name,
                    utc_text(v.finished_at),
                    v.mismatched_blocks,
                    v.damaged_disks.join(", ")
                ),
            });
        }
        // Only an item that replicates and has finished its first sync has an RPO to keep.
        if !matches!(item.state, State::ProtectedToPrimary | State::ProtectedToCloud) {
            continue;
        }
        let Some(newest) = item.recovery_points.iter().map(|p| p.time).max() else { continue };
        let rpo = i.now.saturating_sub(newest);
        let threshold = item.protection.rpo_threshold_ms();
        if rpo > threshold {
            out.push(Condition {
                kind: AlertKind::RpoBreached,
                subject: item.id.clone(),
                severity: if rpo > 2 * threshold { Health::Critical } else { Health::Warning },
                message: format!(
                    "{}'s RPO is {}, past its threshold of {}: its newest recovery point is from {}. Check its \
                     replication health and the process server's link; a failover now loses what was written since.",
                    item.name,
                    minutes(rpo),
                    minutes(threshold),
                    utc_text(newest)
                ),
            });
        }
    }
    for (kind, name, error, last_ok) in &i.connections {
        if let Some(e) = error {
            out.push(Condition {
                kind: AlertKind::ConnectionFailing,
                subject: name.clone(),
                severity: Health::Critical,
                message: format!(
                    "The {kind} {name} does not answer as it should{}: {e}",
                    last_ok.map(|t| format!(" (last good check {})", utc_text(t))).unwrap_or_default()
                ),
            });
        }
    }
    for (role, name, offline, last) in &i.agents {
        if *offline {
            out.push(Condition {
                kind: AlertKind::AgentOffline,
                subject: name.clone(),
                severity: Health::Critical,
                message: format!(
                    "The {role} agent {name} sends no heartbeat{}: cycles through it cannot run. Check the agent's \
                     machine and its link to the vault.",
                    last.map(|t| format!(" since {}", utc_text(t))).unwrap_or_default()
                ),
            });
        }
    }
    for d in &i.inventory.datastores {
        if d.capacity_bytes > 0 && d.free_bytes * 100 < d.capacity_bytes * DATASTORE_FREE_PERCENT {
            out.push(Condition {
                kind: AlertKind::DatastoreNearlyFull,
                subject: d.id.clone(),
                severity: if d.free_bytes * 100 < d.capacity_bytes * 2 { Health::Critical } else { Health::Warning },
                message: format!(
                    "Datastore {} has {} free of {} ({}%): failbacks onto it and its replicas' recovery points need \
                     room. Free space or move VMs to another datastore.",
                    d.id,
                    replicator::human_bytes(d.free_bytes),
                    replicator::human_bytes(d.capacity_bytes),
                    d.free_bytes * 100 / d.capacity_bytes
                ),
            });
        }
    }
    out
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Alert {
    pub id: String,
    pub kind: AlertKind,
    pub subject: String,
    pub severity: Health,
    pub message: String,
    pub started_at: Millis,
    pub last_seen_at: Millis,
    pub resolved_at: Option<Millis>,
    pub acknowledged_at: Option<Millis>,
    pub acknowledged_by: Option<String>,
    /// `open`, `acknowledged` or `resolved`.
    pub state: &'static str,
}

crate::row! {
    struct AlertRow {
        id: String,
        kind: String,
        subject: String,
        severity: String,
        message: String,
        started_at: i64,
        last_seen_at: i64,
        resolved_at: Option<i64>,
        acknowledged_at: Option<i64>,
        acknowledged_by: Option<String>,
    }
}

const COLUMNS: &str =
    "id, kind, subject, severity, message, started_at, last_seen_at, resolved_at, acknowledged_at, acknowledged_by";

impl AlertRow {
    fn into_alert(self) -> Option<Alert> {
        let ms = |v: i64| v.max(0) as Millis;
        let state = match (self.resolved_at, self.acknowledged_at) {
            (Some(_), _) => "resolved",
            (None, Some(_)) => "acknowledged",
            (None, None) => "open",
        };
        Some(Alert {
            id: self.id,
            kind: AlertKind::parse(&self.kind)?,
            subject: self.subject,
            severity: if self.severity == "critical" { Health::Critical } else { Health::Warning },
            message: self.message,
            started_at: ms(self.started_at),
            last_seen_at: ms(self.last_seen_at),
            resolved_at: self.resolved_at.map(ms),
            acknowledged_at: self.acknowledged_at.map(ms),
            acknowledged_by: self.acknowledged_by,
            state,
        })
    }
}

/// An alert that changed in a reconciliation: it opened, or it resolved.
#[derive(Clone, Debug)]
pub struct Change {
    pub alert: Alert,
    /// `alert.opened` or `alert.resolved`, as webhooks name it.
    pub event: &'static str,
}

#[derive(Debug, thiserror::Error)]
pub enum AlertError {
    #[error("no alert {0}; GET /api/v1/alerts lists them")]
    NotFound(String),
    #[error("alert {0} is resolved already: its condition cleared, so there is nothing to acknowledge")]
    Resolved(String),
    #[error(transparent)]
    Db(#[from] sqlx::Error),
}

#[derive(Clone, Debug)]
pub struct Alerts {
    pub db: Db,
}

impl Alerts {
    pub fn new(db: Db) -> Alerts {
        Alerts { db }
    }

    async fn open_alerts(&self) -> Result<Vec<Alert>, sqlx::Error> {
        let rows: Vec<AlertRow> =
            sqlx::query_as(&format!("select {COLUMNS} from alerts where resolved_at is null order by started_at"))
                .fetch_all(&self.db.pool)
                .await?;
        Ok(rows.into_iter().filter_map(AlertRow::into_alert).collect())
    }

    async fn get(&self, id: &str) -> Result<Option<Alert>, sqlx::Error> {
        let mut conn = self.db.pool.acquire().await?;
        Self::get_on(&mut conn, id).await
    }

    async fn get_on(conn: &mut sqlx::AnyConnection, id: &str) -> Result<Option<Alert>, sqlx::Error> {
        let row: Option<AlertRow> = sqlx::query_as(&format!("select {COLUMNS} from alerts where id = $1"))
            .bind(id)
            .fetch_optional(&mut *conn)
            .await?;
        Ok(row.and_then(AlertRow::into_alert))
    }

    /// The alert that just opened or resolved, with its webhook deliveries queued in the same transaction: a
    /// webhook hears of every change that is recorded, and of none that is not.
    async fn announce(
        tx: &mut sqlx::AnyConnection,
        id: &str,
        event: &'static str,
        at: Millis,
    ) -> Result<Option<Change>, sqlx::Error> {
        let Some(alert) = Self::get_on(tx, id).await? else { return Ok(None) };
        let payload = serde_json::json!({"event": event, "at": at, "alert": alert});
        crate::webhooks::Webhooks::enqueue_on(tx, crate::webhooks::EventKind::Alert, event, &payload, at).await?;
        Ok(Some(Change { alert, event }))
    }

    /// Opens an alert for each new condition, refreshes the open ones that still hold, resolves those that do not;
    /// returns what opened and what resolved.
    pub async fn reconcile(&self, now: &[Condition], at: Millis) -> Result<Vec<Change>, sqlx::Error> {
        let open = self.open_alerts().await?;
        let mut changes = Vec::new();
        for c in now {
            let kind = wire_name(&c.kind);
            match open.iter().find(|a| a.kind == c.kind && a.subject == c.subject) {
                Some(a) => {
                    sqlx::query(
                        "update alerts set message = $2, severity = $3, last_seen_at = $4 \
                         where id = $1 and resolved_at is null",
                    )
                    .bind(&a.id)
                    .bind(&c.message)
                    .bind(wire_name(&c.severity))
                    .bind(at as i64)
                    .execute(&self.db.pool)
                    .await?;
                }
                None => {
                    let id = format!("alr-{}", uuid::Uuid::now_v7());
                    let mut tx = self.db.pool.begin().await?;
                    // Another node may have opened it a moment ago: the index keeps one, the loser changes nothing.
                    let done = sqlx::query(
                        "insert into alerts (id, kind, subject, severity, message, started_at, last_seen_at) \
                         values ($1, $2, $3, $4, $5, $6, $6) on conflict do nothing",
                    )
                    .bind(&id)
                    .bind(&kind)
                    .bind(&c.subject)
                    .bind(wire_name(&c.severity))
                    .bind(&c.message)
                    .bind(at as i64)
                    .execute(&mut *tx)
                    .await?;
                    if done.rows_affected() == 1 {
                        changes.extend(Self::announce(&mut tx, &id, "alert.opened", at).await?);
                    }
                    tx.commit().await?;
                }
            }
        }
        for a in open.iter().filter(|a| !now.iter().any(|c| c.kind == a.kind && c.subject == a.subject)) {
            let mut tx = self.db.pool.begin().await?;
            let done = sqlx::query("update alerts set resolved_at = $2 where id = $1 and resolved_at is null")
                .bind(&a.id)
                .bind(at as i64)
                .execute(&mut *tx)
                .await?;
            if done.rows_affected() == 1 {
                changes.extend(Self::announce(&mut tx, &a.id, "alert.resolved", at).await?);
            }
            tx.commit().await?;
        }
        Ok(changes)
    }

    /// Newest first; only those not resolved unless `all`.
    pub async fn list(&self, all: bool, limit: u32) -> Result<Vec<Alert>, sqlx::Error> {
        let filter = if all { "" } else { "where resolved_at is null" };
        let rows: Vec<AlertRow> = sqlx::query_as(&format!(
            "select {COLUMNS} from alerts {filter} order by started_at desc, id desc limit $1"
        ))
        .bind(i64::from(limit))
        .fetch_all(&self.db.pool)
        .await?;
        Ok(rows.into_iter().filter_map(AlertRow::into_alert).collect())
    }

    /// The subjects of every open alert of one kind (the items whose RPO is breached, say), however many.
    pub async fn open_subjects(&self, kind: AlertKind) -> Result<std::collections::HashSet<String>, sqlx::Error> {
        let subjects: Vec<String> =
            sqlx::query_scalar("select subject from alerts where resolved_at is null and kind = $1")
                .bind(wire_name(&kind))
                .fetch_all(&self.db.pool)
                .await?;
        Ok(subjects.into_iter().collect())
    }

    /// A person has seen it: it stays listed as acknowledged until its condition clears.
    pub async fn acknowledge(&self, id: &str, by: &str, at: Millis) -> Result<Alert, AlertError> {
        let alert = self.get(id).await?.ok_or_else(|| AlertError::NotFound(id.to_owned()))?;
        if alert.resolved_at.is_some() {
            return Err(AlertError::Resolved(id.to_owned()));
        }
        sqlx::query(
            "update alerts set acknowledged_at = $2, acknowledged_by = $3 \
             where id = $1 and resolved_at is null and acknowledged_at is null",
        )
        .bind(id)
        .bind(at as i64)
        .bind(by)
        .execute(&self.db.pool)
        .await?;
        self.get(id).await?.ok_or_else(|| AlertError::NotFound(id.to_owned()))
    }
}

impl crate::service::Service {
    pub fn alerts(&self) -> Alerts {
        Alerts::new(self.estate.db.clone())
    }

    pub fn webhooks(&self) -> crate::webhooks::Webhooks {
        crate::webhooks::Webhooks::new(self.estate.db.clone(), self.connections.sealer())
    }

    /// Evaluates the conditions now and reconciles the alerts with them; each alert that opened or resolved is
    /// queued for the webhooks that take alerts.
    pub async fn evaluate_alerts(&self) -> Result<Vec<Change>, crate::service::ServiceError> {
        let now = (self.clock)();
        let doc = std::sync::Arc::new(self.doc().await?);
        // Each item's recovery points come from its replica's journal: file reads, off the runtime's threads.
        let (estate, d) = (self.estate.clone(), doc.clone());
        let items = tokio::task::spawn_blocking(move || {
            d.items.iter().map(|rec| estate.view_of(&d, rec, now)).collect::<Result<Vec<_>, _>>()
        })
        .await
        .map_err(|e| crate::service::ServiceError::Invalid(format!("evaluating the alerts stopped: {e}")))??;
        let connections = self
            .connections
            .list()
            .await?
            .into_iter()
            .map(|c| {
                let kind = match c.kind {
                    crate::connections::ConnectionKind::Vcenter => "vCenter",
                    crate::connections::ConnectionKind::StorageAccount => "storage account",
                    crate::connections::ConnectionKind::AzureSubscription => "Azure subscription",
                };
                (kind, c.name, c.last_error, c.last_ok_at)
            })
            .collect();
        let agents = self
            .agents
            .list(now)
            .await?
            .into_iter()
            .map(|a| (a.role.title(), a.name, a.state == crate::agents::AgentState::Offline, a.last_heartbeat_at))
            .collect();
        let inputs = Inputs { items: &items, connections, agents, inventory: &doc.inventory, now };
        let found = conditions(&inputs);
        // Each change and its webhook deliveries commit together; one that fails is found again next time.
        Ok(self.alerts().reconcile(&found, now).await.map_err(crate::estate::EstateError::from)?)
    }
}

/// Evaluates the alerts every few seconds and sends the webhook deliveries that are due, on the runtime, until
/// `shutdown`.
pub fn spawn(
    service: std::sync::Arc<crate::service::Service>,
    shutdown: std::sync::Arc<std::sync::atomic::AtomicBool>,
) {
    tokio::spawn(async move {
        let http = crate::webhooks::client();
        let mut tick: u64 = 0;
        while !shutdown.load(std::sync::atomic::Ordering::Relaxed) {
            if tick.is_multiple_of(ALERT_EVERY_TICKS) {
                if let Err(e) = service.evaluate_alerts().await {
                    tracing::warn!(error = %e, "evaluating the alerts failed");
                }
            }
            tick += 1;
            if let Err(e) = service.webhooks().deliver_due(&http, (service.clock)(), 20).await {
                tracing::warn!(error = %e, "sending the webhook deliveries failed");
            }
            tokio::time::sleep(std::time::Duration::from_secs(1)).await;
        }
    });
}

/// Alerts are evaluated every this many seconds; webhook deliveries go out every second.
const ALERT_EVERY_TICKS: u64 = 3;
