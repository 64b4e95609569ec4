//! Test failovers (drills) as records: one row per drill, created by the test failover's first step and kept after
//! its cleanup as the drill's report — the point used and its age, when the test VM powered on, the checks run, who
//! ran and cleaned it up (from the audit log), the operator's notes.

use serde::Serialize;

use crate::db::Db;
use crate::domain::*;

/// One check the test failover ran on its VM.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct DrillCheck {
    pub name: String,
    pub passed: bool,
    pub detail: String,
}

/// A drill as its report shows it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Drill {
    /// The test failover's job id; `<plan job>.<item>` for an item of a recovery plan's test failover.
    pub id: String,
    pub item: String,
    pub item_name: String,
    /// The test VM's name.
    pub vm: String,
    pub host: String,
    pub network: String,
    pub point: RecoveryPoint,
    /// How old the point was when the drill started: the data the drill's copy lacks against that moment.
    pub point_age_ms: Millis,
    pub disks: Vec<String>,
    pub started_at: Millis,
    pub powered_on_at: Option<Millis>,
    /// From the drill's start to its VM running.
    pub time_to_power_on_ms: Option<Millis>,
    pub checks: Vec<DrillCheck>,
    pub cleaned_at: Option<Millis>,
    /// The job that removed the test VM: its cleanup, or the failover that cleaned it up first.
    pub cleanup_job: Option<String>,
    pub notes: Option<String>,
    /// Who started the test failover and who cleaned it up, as the audit log has it.
    pub started_by: Option<String>,
    pub cleaned_by: Option<String>,
    /// `running`, `checks-failed`, `not-running` (its job failed before the VM ran) or `cleaned-up`.
    pub status: &'static str,
}

crate::row! {
    struct DrillRow {
        id: String,
        item_id: String,
        item_name: String,
        vm: String,
        host: String,
        network: String,
        point_id: String,
        point_time: i64,
        point_kind: String,
        disks: String,
        started_at: i64,
        powered_on_at: Option<i64>,
        checks: String,
        cleaned_at: Option<i64>,
        cleanup_job_id: Option<String>,
        notes: Option<String>,
        started_by: Option<String>,
        cleaned_by: Option<String>,
    }
}

const SELECT: &str = "select d.id as id, d.item_id as item_id, d.item_name as item_name, d.vm as vm, d.host as host, \
     d.network as network, d.point_id as point_id, d.point_time as point_time, d.point_kind as point_kind, \
     d.disks as disks, d.started_at as started_at, d.powered_on_at as powered_on_at, d.checks as checks, \
     d.cleaned_at as cleaned_at, d.cleanup_job_id as cleanup_job_id, d.notes as notes, \
     (select a.user_name from audit a where a.job_id = substr(d.id, 1, 36) and a.outcome = 'started' \
       order by a.id limit 1) as started_by, \
     (select a.user_name from audit a where a.job_id = d.cleanup_job_id and a.outcome = 'started' order by a.id \
       limit 1) as cleaned_by \
     from drills d";

impl DrillRow {
    fn into_drill(self) -> Drill {
        let ms = |v: i64| v.max(0) as Millis;
        let checks: Vec<DrillCheck> = serde_json::from_str(&self.checks).unwrap_or_default();
        let powered_on_at = self.powered_on_at.map(ms);
        let status = if self.cleaned_at.is_some() {
            "cleaned-up"
        } else if checks.iter().any(|c| !c.passed) {
            "checks-failed"
        } else if powered_on_at.is_some() {
            "running"
        } else {
            "not-running"
        };
        Drill {
            point: RecoveryPoint {
                id: self.point_id,
                time: ms(self.point_time),
                kind: if self.point_kind == "app-consistent" {
                    PointKind::AppConsistent
                } else {
                    PointKind::CrashConsistent
                },
            },
            point_age_ms: ms(self.started_at).saturating_sub(ms(self.point_time)),
            time_to_power_on_ms: powered_on_at.map(|p| p.saturating_sub(ms(self.started_at))),
            id: self.id,
            item: self.item_id,
            item_name: self.item_name,
            vm: self.vm,
            host: self.host,
            network: self.network,
            disks: serde_json::from_str(&self.disks).unwrap_or_default(),
            started_at: ms(self.started_at),
            powered_on_at,
            checks,
            cleaned_at: self.cleaned_at.map(ms),
            cleanup_job: self.cleanup_job_id,
            notes: self.notes,
            started_by: self.started_by,
            cleaned_by: self.cleaned_by,
            status,
        }
    }
}

#[derive(Clone, Debug)]
pub struct Drills {
    pub db: Db,
}

impl Drills {
    pub fn new(db: Db) -> Drills {
        Drills { db }
    }

    /// Records a drill's start; a rerun of the step after a crash finds it there and changes nothing.
    pub async fn start(&self, item: &ReplicatedItem, d: &LiveDrill) -> Result<(), sqlx::Error> {
        sqlx::query(
            "insert into drills (id, item_id, item_name, vm, host, network, point_id, point_time, point_kind, disks, \
             started_at) values ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11) on conflict (id) do nothing",
        )
        .bind(&d.id)
        .bind(&item.id)
        .bind(&item.name)
        .bind(&d.vm)
        .bind(&d.host)
        .bind(&d.network)
        .bind(&d.point.id)
        .bind(d.point.time as i64)
        .bind(wire_name(&d.point.kind))
        .bind(serde_json::to_string(&d.disks).unwrap_or_default())
        .bind(d.started_at as i64)
        .execute(&self.db.pool)
        .await?;
        Ok(())
    }

    /// The first time the test VM ran (a rerun keeps the first).
    pub async fn powered_on(&self, id: &str, at: Millis) -> Result<(), sqlx::Error> {
        sqlx::query("update drills set powered_on_at = $2 where id = $1 and powered_on_at is null")
            .bind(id)
            .bind(at as i64)
            .execute(&self.db.pool)
            .await?;
        Ok(())
    }

    pub async fn set_checks(&self, id: &str, checks: &[DrillCheck]) -> Result<(), sqlx::Error> {
        sqlx::query("update drills set checks = $2 where id = $1")
            .bind(id)
            .bind(serde_json::to_string(checks).unwrap_or_default())
            .execute(&self.db.pool)
            .await?;
        Ok(())
    }

    /// The drill's end: when, by which job, and the operator's notes. A rerun keeps the first end.
    pub async fn cleaned(&self, id: &str, job: &str, at: Millis, notes: Option<&str>) -> Result<(), sqlx::Error> {
        sqlx::query(
            "update drills set cleaned_at = $2, cleanup_job_id = $3, notes = $4 where id = $1 and cleaned_at is null",
        )
        .bind(id)
        .bind(at as i64)
        .bind(job)
        .bind(notes)
        .execute(&self.db.pool)
        .await?;
        Ok(())
    }

    pub async fn get(&self, id: &str) -> Result<Option<Drill>, sqlx::Error> {
        let row: Option<DrillRow> =
            sqlx::query_as(&format!("{SELECT} where d.id = $1")).bind(id).fetch_optional(&self.db.pool).await?;
        Ok(row.map(DrillRow::into_drill))
    }

    /// Newest first, at most `limit`; only the item's when `item` is given.
    pub async fn list(&self, item: Option<&str>, limit: u32) -> Result<Vec<Drill>, sqlx::Error> {
        let rows: Vec<DrillRow> = match item {
            Some(i) => {
                sqlx::query_as(&format!("{SELECT} where d.item_id = $1 order by d.started_at desc, d.id desc limit $2"))
                    .bind(i)
                    .bind(i64::from(limit))
                    .fetch_all(&self.db.pool)
                    .await?
            }
            None => {
                sqlx::query_as(&format!("{SELECT} order by d.started_at desc, d.id desc limit $1"))
                    .bind(i64::from(limit))
                    .fetch_all(&self.db.pool)
                    .await?
            }
        };
        Ok(rows.into_iter().map(DrillRow::into_drill).collect())
    }
}

/// The drill report as CSV: one row per check, the drill's facts repeated on each (a spreadsheet filters it).
pub fn report_csv(d: &Drill) -> String {
    fn field(s: &str) -> String {
        // Quoted always; a leading =, +, - or @ would be a formula to a spreadsheet.
        let s = if s.starts_with(['=', '+', '-', '@']) { format!("'{s}") } else { s.to_owned() };
        format!("\"{}\"", s.replace('"', "\"\""))
    }
    let mut out = String::from(
        "drill,item,vm,host,network,point,point_kind,point_time_utc,point_age_s,started_utc,time_to_power_on_s,\
         status,cleaned_up_utc,started_by,cleaned_by,check,passed,detail,notes\r\n",
    );
    let opt_time = |t: Option<Millis>| t.map(utc_text).unwrap_or_default();
    let secs = |ms: Millis| format!("{:.1}", ms as f64 / 1000.0);
    let checks: Vec<Option<&DrillCheck>> =
        if d.checks.is_empty() { vec![None] } else { d.checks.iter().map(Some).collect() };
    for c in checks {
        let cols = [
            d.id.clone(),
            d.item_name.clone(),
            d.vm.clone(),
            d.host.clone(),
            d.network.clone(),
            d.point.id.clone(),
            wire_name(&d.point.kind),
            utc_text(d.point.time),
            secs(d.point_age_ms),
            utc_text(d.started_at),
            d.time_to_power_on_ms.map(secs).unwrap_or_default(),
            d.status.to_owned(),
            opt_time(d.cleaned_at),
            d.started_by.clone().unwrap_or_default(),
            d.cleaned_by.clone().unwrap_or_default(),
            c.map(|c| c.name.clone()).unwrap_or_default(),
            c.map(|c| if c.passed { "yes" } else { "no" }.to_owned()).unwrap_or_default(),
            c.map(|c| c.detail.clone()).unwrap_or_default(),
            d.notes.clone().unwrap_or_default(),
        ];
        out.push_str(&cols.iter().map(|c| field(c)).collect::<Vec<_>>().join(","));
        out.push_str("\r\n");
    }
    out
}
