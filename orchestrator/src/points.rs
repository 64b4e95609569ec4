//! Which recovery point a failover uses: R-RP1 … R-RP4, for one item or for the items of a recovery plan.

use serde::{Deserialize, Serialize};

use crate::domain::{KeptCopy, Millis, PointKind, RecoveryPoint, ReplicatedItem};
use crate::rules::Refusal;

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", tag = "type", content = "id")]
pub enum PointChoice {
    /// The newest point already processed (R-RP1): no wait, each VM its own point.
    #[default]
    LatestProcessed,
    /// Process what is pending first (one more cycle), then use that point: the least data lost.
    Latest,
    /// The newest app-consistent point (R-RP2); a replication group shares one.
    LatestAppConsistent,
    /// A point chosen by id.
    Specific(String),
    /// The newest processed point with the blocks kept from a split-brain's losing copy laid over it, by the
    /// resolving job's id: what that copy wrote, back in the VM.
    KeptCopy(String),
}

/// A choice offered in the confirmation, with what it costs (R-RP4).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PointOption {
    pub choice: PointChoice,
    pub point: RecoveryPoint,
    /// How much time of writes this point loses compared with the newest point.
    pub data_loss_ms: Millis,
}

/// The point `choice` selects for one item. R-RP3: none without a point; R-RP2: none without an app-consistent one.
pub fn choose(item: &ReplicatedItem, choice: &PointChoice) -> Result<RecoveryPoint, Refusal> {
    let latest = item.recovery_points.iter().max_by_key(|p| p.time).ok_or_else(|| no_point(item))?;
    match choice {
        PointChoice::LatestProcessed | PointChoice::Latest => Ok(latest.clone()),
        PointChoice::LatestAppConsistent => item
            .recovery_points
            .iter()
            .filter(|p| p.kind == PointKind::AppConsistent)
            .max_by_key(|p| p.time)
            .cloned()
            .ok_or_else(|| {
                Refusal::new(
                    "R-RP2",
                    format!("{} has no app-consistent recovery point yet.", item.name),
                    "Choose the latest processed point, or wait for the next app-consistent point (they are taken \
                     every few minutes while the VM is quiesced).",
                )
            }),
        PointChoice::Specific(id) => item.recovery_points.iter().find(|p| &p.id == id).cloned().ok_or_else(|| {
            Refusal::new(
                "R-RP4",
                format!("{} has no recovery point {id}.", item.name),
                "Pick one of the points listed for the item; older points may have been removed by retention.",
            )
        }),
        PointChoice::KeptCopy(job) => kept_copy(item, job).map(|_| latest.clone()),
    }
}

/// The blocks kept from the split-brain that job `job` resolved, when a failover can lay them over a point (SB-3).
pub fn kept_copy<'a>(item: &'a ReplicatedItem, job: &str) -> Result<&'a KeptCopy, Refusal> {
    let k = item.kept_copies.iter().find(|k| k.job == job).ok_or_else(|| {
        Refusal::new(
            "SB-3",
            format!("{} has no blocks kept from a split-brain resolved by job {job}.", item.name),
            if item.kept_copies.is_empty() {
                "Choose a recovery point: the item has no kept blocks (a commit removes them).".to_owned()
            } else {
                let jobs: Vec<&str> = item.kept_copies.iter().map(|k| k.job.as_str()).collect();
                format!("Choose one of the item's kept copies: {}.", jobs.join(", "))
            },
        )
    })?;
    if !k.selectable() {
        return Err(Refusal::new(
            "SB-3",
            format!(
                "The blocks {} kept with job {job} have no block map, so they cannot be laid over a point.",
                item.name
            ),
            "Choose a recovery point; the kept blocks stay in the estate folder until the next commit.",
        ));
    }
    Ok(k)
}

fn no_point(item: &ReplicatedItem) -> Refusal {
    Refusal::new(
        "R-RP3",
        format!("{} has no recovery point yet, so it cannot fail back.", item.name),
        "Wait until reprotect has finished its initial replication and produced the first recovery point.",
    )
}

/// The choices the confirmation shows, each with its time and data-loss window against the newest point (R-RP4:
/// the newest point is crash-consistent; an app-consistent point can be older and lose writes).
pub fn options(item: &ReplicatedItem) -> Vec<PointOption> {
    let Some(latest) = item.recovery_points.iter().max_by_key(|p| p.time) else { return Vec::new() };
    let mut out = vec![PointOption { choice: PointChoice::LatestProcessed, point: latest.clone(), data_loss_ms: 0 }];
    if let Ok(app) = choose(item, &PointChoice::LatestAppConsistent) {
        let data_loss_ms = latest.time.saturating_sub(app.time);
        out.push(PointOption { choice: PointChoice::LatestAppConsistent, point: app, data_loss_ms });
    }
    for k in item.kept_copies.iter().filter(|k| k.selectable()) {
        out.push(PointOption { choice: PointChoice::KeptCopy(k.job.clone()), point: latest.clone(), data_loss_ms: 0 });
    }
    out
}

/// Points for every item of a recovery plan. R-RP3: every item needs a point. R-RP1: latest processed gives each
/// item its own newest point, replication group or not. R-RP2: app-consistent gives each replication group the
/// newest app-consistent point all its members share, and each other item its own.
pub fn plan_points(items: &[&ReplicatedItem], choice: &PointChoice) -> Result<Vec<(String, RecoveryPoint)>, Refusal> {
    if let PointChoice::KeptCopy(job) = choice {
        return Err(Refusal::new(
            "SB-3",
            format!("Blocks kept from a split-brain (job {job}) belong to one item, not to a recovery plan."),
            "Fail the plan over to recovery points; choose the kept blocks in that item's own failover.",
        ));
    }
    if let Some(bare) = items.iter().find(|i| i.recovery_points.is_empty()) {
        return Err(Refusal::new(
            "R-RP3",
            format!("{} in this recovery plan has no recovery point yet, so the plan cannot fail back.", bare.name),
            "Wait until every item of the plan has finished its initial replication.",
        ));
    }
    let mut out = Vec::new();
    for item in items {
        let point = match (choice, &item.replication_group) {
            (PointChoice::LatestAppConsistent, Some(group)) => {
                let members: Vec<&&ReplicatedItem> =
                    items.iter().filter(|i| i.replication_group.as_ref() == Some(group)).collect();
                common_app_consistent(&members).ok_or_else(|| {
                    Refusal::new(
                        "R-RP2",
                        format!("Replication group {group} has no app-consistent point common to all its VMs."),
                        "Wait for the group's next app-consistent point, or fail over to the latest processed points.",
                    )
                })?
            }
            _ => choose(item, choice)?,
        };
        out.push((item.id.clone(), point));
    }
    Ok(out)
}

fn common_app_consistent(members: &[&&ReplicatedItem]) -> Option<RecoveryPoint> {
    let first = members.first()?;
    first
        .recovery_points
        .iter()
        .filter(|p| p.kind == PointKind::AppConsistent)
        .filter(|p| {
            members.iter().all(|m| m.recovery_points.iter().any(|q| q.id == p.id && q.kind == PointKind::AppConsistent))
        })
        .max_by_key(|p| p.time)
        .cloned()
}
