//! What on a replicated item needs a person, and the one action that clears it. The overview's list, the items
//! table's status and the item page's banner all read this, so they cannot disagree. Pure: the item, its operations
//! with their refusals, and whether its RPO alert is open.

use serde::{Deserialize, Serialize};

use crate::domain::{Health, ReplicatedItem};
use crate::lifecycle::{Operation, State};
use crate::rules::Refusal;

/// The kinds, in the order they are looked for: an item shows the first that applies.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum AttentionKind {
    SplitBrain,
    JobFailed,
    Unhealthy,
    RpoBreached,
    BlockedByInfrastructure,
    CommitPending,
    NeverFailsBack,
    Unprotected,
}

impl AttentionKind {
    /// A status of two or three words, for a badge.
    pub fn title(self) -> &'static str {
        match self {
            AttentionKind::SplitBrain => "Split-brain",
            AttentionKind::JobFailed => "Job failed",
            AttentionKind::Unhealthy => "Replication unhealthy",
            AttentionKind::RpoBreached => "RPO breached",
            AttentionKind::BlockedByInfrastructure => "Failover blocked",
            AttentionKind::CommitPending => "Waiting for commit",
            AttentionKind::NeverFailsBack => "Cannot fail back",
            AttentionKind::Unprotected => "Unprotected",
        }
    }

    /// Whether it stops the item's protection or recovery now (shown as critical), rather than waiting on a person.
    pub fn critical(self) -> bool {
        matches!(
            self,
            AttentionKind::SplitBrain
                | AttentionKind::JobFailed
                | AttentionKind::Unhealthy
                | AttentionKind::RpoBreached
                | AttentionKind::BlockedByInfrastructure
        )
    }
}

/// What clears it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", tag = "kind")]
pub enum Clear {
    /// An operation of the item itself (its dialog).
    Operation { operation: Operation },
    /// Restarting (or cancelling) the job that failed.
    Job { job: String },
    /// Mending a site connection, host or datastore.
    Infrastructure,
    /// Reading the item's open alert.
    Alerts,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Attention {
    pub kind: AttentionKind,
    /// One sentence: what is wrong, in the item's terms.
    pub detail: String,
    /// None where no action of Homeward's clears it (a machine that can never fail back).
    pub clear: Option<Clear>,
}

/// Rules whose refusal of a failover lies in the infrastructure, not in the item: vCenter (R-C4), the master target's
/// datastore (R-C2), its host (R-P3), the configuration server (R-I1).
const INFRASTRUCTURE_RULES: [&str; 4] = ["R-C4", "R-C2", "R-P3", "R-I1"];
/// Rules that refuse a reprotect for good: a physical server (R-P2) or an unsupported operating system (R-B1).
const NEVER_RULES: [&str; 2] = ["R-P2", "R-B1"];

pub fn attention(item: &ReplicatedItem, ops: &[(Operation, Vec<Refusal>)], rpo_breached: bool) -> Option<Attention> {
    let refusal = |op: Operation, rules: &[&str]| {
        ops.iter().filter(|(o, _)| *o == op).flat_map(|(_, rs)| rs.iter()).find(|r| rules.contains(&r.rule.as_str()))
    };
    // The operation that clears it when the rules allow it now; otherwise what stops it, said in the detail.
    let cleared_by = |op: Operation, detail: &str| -> (String, Option<Clear>) {
        match ops.iter().find(|(o, _)| *o == op).and_then(|(_, rs)| rs.first()) {
            None => (detail.to_owned(), Some(Clear::Operation { operation: op })),
            Some(r) => (format!("{detail} Not yet: {} {}", r.message, r.recommended_action), None),
        }
    };
    let (kind, detail, clear) = if item.state == State::SplitBrain {
        (
            AttentionKind::SplitBrain,
            "Both copies ran and changed: choose the copy to keep.".to_owned(),
            None, // its own panel offers the two ways out, with their consequences
        )
    } else if let Some(f) = &item.last_failure {
        (
            AttentionKind::JobFailed,
            format!("The {} failed at \"{}\": {}", f.operation, f.task, f.recommended_action),
            Some(Clear::Job { job: f.job.clone() }),
        )
    } else if item.health != Health::Normal {
        let detail = item.health_errors.first().cloned().unwrap_or_else(|| "Replication is degraded.".to_owned());
        (AttentionKind::Unhealthy, detail, None)
    } else if rpo_breached {
        (
            AttentionKind::RpoBreached,
            "The newest recovery point is older than the item's RPO threshold.".to_owned(),
            Some(Clear::Alerts),
        )
    } else if let Some(r) = refusal(Operation::Failover, &INFRASTRUCTURE_RULES) {
        (
            AttentionKind::BlockedByInfrastructure,
            format!("{} {}", r.message, r.recommended_action),
            Some(Clear::Infrastructure),
        )
    } else if item.state == State::FailedBackCommitPending {
        let (detail, clear) = cleared_by(
            Operation::Commit,
            "Failed back: the cloud VM still exists until the failback is committed (or cancelled).",
        );
        (AttentionKind::CommitPending, detail, clear)
    } else if let Some(r) = refusal(Operation::Reprotect, &NEVER_RULES) {
        (AttentionKind::NeverFailsBack, r.message.clone(), None)
    } else if item.state == State::CommittedOnPrimary {
        let (detail, clear) = cleared_by(
            Operation::ReprotectToCloud,
            "Back on-premises and not replicated anywhere: re-protect it to Azure.",
        );
        (AttentionKind::Unprotected, detail, clear)
    } else {
        return None;
    };
    Some(Attention { kind, detail, clear })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::{MachineType, Os, OsFamily};
    use crate::lifecycle;

    fn ops_of(refusals: &[(Operation, Refusal)]) -> Vec<(Operation, Vec<Refusal>)> {
        lifecycle::OPERATIONS
            .iter()
            .map(|op| (*op, refusals.iter().filter(|(o, _)| o == op).map(|(_, r)| r.clone()).collect()))
            .collect()
    }

    fn item(state: State) -> ReplicatedItem {
        ReplicatedItem {
            id: "web01".into(),
            name: "web01".into(),
            machine: MachineType::VmwareVm,
            os: Os { family: OsFamily::Windows, name: "Windows Server 2019".into() },
            state,
            health: Health::Normal,
            health_errors: Vec::new(),
            initial_sync_percent: 0,
            onprem: None,
            original_vcenter: Some("vcenter-01".into()),
            original_configuration_server: "cs-01".into(),
            cloud_vm: None,
            recovery_points: Vec::new(),
            replication_group: None,
            master_target: None,
            process_server: None,
            booted_at: None,
            agent_registered: true,
            last_failure: None,
            drill: None,
            split_brain: None,
            kept_copies: Vec::new(),
            verification: None,
            protection: Default::default(),
            disk_bytes: 0,
        }
    }

    #[test]
    fn a_healthy_item_needs_nobody() {
        let i = item(State::ProtectedToPrimary);
        assert_eq!(attention(&i, &ops_of(&[]), false), None);
    }

    #[test]
    fn the_first_kind_that_applies_is_shown_with_what_clears_it() {
        let i = item(State::FailedBackCommitPending);
        let a = attention(&i, &ops_of(&[]), false).unwrap();
        assert_eq!(a.kind, AttentionKind::CommitPending);
        assert_eq!(a.clear, Some(Clear::Operation { operation: Operation::Commit }));
        // An open RPO alert comes before it.
        assert_eq!(attention(&i, &ops_of(&[]), true).unwrap().kind, AttentionKind::RpoBreached);
        // A lost vCenter before that is the infrastructure's, and says what the rule says.
        let lost = Refusal::new("R-C4", "vCenter vc-01 is not connected.", "Reconnect it.");
        let a = attention(&i, &ops_of(&[(Operation::Failover, lost)]), false).unwrap();
        assert_eq!(a.kind, AttentionKind::BlockedByInfrastructure);
        assert_eq!(a.detail, "vCenter vc-01 is not connected. Reconnect it.");
        assert_eq!(a.clear, Some(Clear::Infrastructure));
        // A commit the rules refuse is not offered as the way out; what stops it is said instead.
        let held = Refusal::new("R-W5", "A job runs on web01.", "Wait for it.");
        let a = attention(&i, &ops_of(&[(Operation::Commit, held)]), false).unwrap();
        assert_eq!((a.kind, a.clear), (AttentionKind::CommitPending, None));
        assert!(a.detail.ends_with("Not yet: A job runs on web01. Wait for it."), "{}", a.detail);
    }

    #[test]
    fn a_failed_job_and_a_machine_that_never_fails_back() {
        let mut i = item(State::ProtectedToPrimary);
        i.last_failure = Some(crate::domain::JobFailure {
            job: "job-1".into(),
            operation: "failover".into(),
            task: "Reattach disks".into(),
            error: "vCenter lost".into(),
            recommended_action: "Restart the job once vCenter answers.".into(),
            at: 0,
        });
        let a = attention(&i, &ops_of(&[]), false).unwrap();
        assert_eq!(a.kind, AttentionKind::JobFailed);
        assert_eq!(a.clear, Some(Clear::Job { job: "job-1".into() }));
        assert!(a.detail.contains("Reattach disks"), "{}", a.detail);
        let i = item(State::CommittedInCloud);
        let physical = Refusal::new("R-P2", "A physical server fails back only as a VMware VM.", "Use a backup.");
        let a = attention(&i, &ops_of(&[(Operation::Reprotect, physical)]), false).unwrap();
        assert_eq!((a.kind, a.clear), (AttentionKind::NeverFailsBack, None));
        let i = item(State::CommittedOnPrimary);
        let a = attention(&i, &ops_of(&[]), false).unwrap();
        assert_eq!(a.clear, Some(Clear::Operation { operation: Operation::ReprotectToCloud }));
    }
}
