//! The replicated item's lifecycle, the operations it allows (and why not), and the dry run of an operation.

use serde::{Deserialize, Serialize};

use crate::domain::*;
use crate::points::{self, PointChoice};
use crate::rules::{self, Check, CheckOutcome, Refusal};

/// Protection state of a replicated item. The article starts at `CommittedInCloud`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum State {
    ProtectedToCloud,
    FailoverToCloudInProgress,
    FailedOverToCloud,
    CommittedInCloud,
    ReprotectInProgress,
    /// Replicating recovery → primary (see `initial_sync_percent` and `health`).
    ProtectedToPrimary,
    FailbackInProgress,
    FailedBackCommitPending,
    CommitInProgress,
    /// Back on-premises, unprotected.
    CommittedOnPrimary,
    ReprotectToCloudInProgress,
    /// Both copies changed after a failover: the passive VM ran outside Homeward beside the active one. Nothing
    /// replicates until the operator chooses the copy that wins.
    SplitBrain,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Operation {
    FailoverToCloud,
    CommitInCloud,
    /// Recovery → primary replication (R-W1).
    Reprotect,
    /// Failback: recovery → primary failover (R-W2).
    Failover,
    /// Delete the cloud copy after failback (R-W3).
    Commit,
    CancelFailover,
    ChangeRecoveryPoint,
    /// Primary → recovery replication after commit (R-W4).
    ReprotectToCloud,
    /// A drill: a copy of the VM on the primary site from a recovery point, on an isolated network; the cloud VM
    /// and replication go on.
    TestFailover,
    /// Removes the drill's VM and records the operator's notes.
    CleanupTestFailover,
    /// Ends a split-brain with the cloud copy winning: the on-premises VM's divergent blocks are kept, it is shut
    /// down and its replica is brought back to the cloud's; the item is protected to on-premises again.
    KeepCloudCopy,
    /// Ends a split-brain with the on-premises copy winning: the cloud VM's divergent blocks are kept and it is
    /// shut down; the item waits for commit, as after a failback.
    KeepOnPremisesCopy,
    /// Re-reads the on-premises replica and compares every block with the hash its last cycle recorded (a scrub);
    /// a difference drops those hashes, so the next cycle compares the whole replica with the cloud copy.
    VerifyReplica,
}

pub const OPERATIONS: [Operation; 13] = [
    Operation::FailoverToCloud,
    Operation::CommitInCloud,
    Operation::Reprotect,
    Operation::Failover,
    Operation::Commit,
    Operation::CancelFailover,
    Operation::ChangeRecoveryPoint,
    Operation::ReprotectToCloud,
    Operation::TestFailover,
    Operation::CleanupTestFailover,
    Operation::KeepCloudCopy,
    Operation::KeepOnPremisesCopy,
    Operation::VerifyReplica,
];

impl Operation {
    /// A drill leaves the item's state and its replication alone; only the Drill operator's permission is needed.
    pub fn is_drill(self) -> bool {
        matches!(self, Operation::TestFailover | Operation::CleanupTestFailover)
    }

    /// The operations that end a split-brain, one per winning copy.
    pub fn resolves_split_brain(self) -> bool {
        matches!(self, Operation::KeepCloudCopy | Operation::KeepOnPremisesCopy)
    }

    /// What the operation does to machines and data, so every face asks the same confirmation for it.
    pub fn impact(self) -> Impact {
        match self {
            // Deletes the cloud VM, the replication disks with their points, or the drill's VM: no way back.
            Operation::Commit | Operation::CommitInCloud | Operation::CleanupTestFailover => Impact::Destroys,
            // Shuts a running VM down, or overwrites what a VM wrote since a point.
            Operation::Reprotect
            | Operation::Failover
            | Operation::ChangeRecoveryPoint
            | Operation::CancelFailover
            | Operation::FailoverToCloud
            | Operation::KeepCloudCopy
            | Operation::KeepOnPremisesCopy => Impact::Disrupts,
            // Production keeps running as it is: new replication, a copy on an isolated network, a read.
            Operation::ReprotectToCloud | Operation::TestFailover | Operation::VerifyReplica => Impact::Harmless,
        }
    }
}

/// How far an operation reaches: the portal styles and confirms by it (danger and an acknowledgement for all but
/// harmless ones).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Impact {
    /// Deletes a VM or data that nothing can bring back.
    Destroys,
    /// Stops a running VM or overwrites what it wrote; the item can be brought back by another operation.
    Disrupts,
    Harmless,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Event {
    Started(Operation),
    Succeeded(Operation),
    Failed(Operation),
    /// The passive copy was found running beside the active one (the cloud VM started again before commit, or the
    /// on-premises VM powered on outside Homeward while protected to on-premises).
    Diverged,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InvalidTransition {
    pub state: State,
    pub event: Event,
}

/// The state machine. Every job moves its item with `Started`, then `Succeeded` or `Failed`.
pub fn next(state: State, event: Event) -> Result<State, InvalidTransition> {
    use Event::*;
    use Operation as O;
    use State as S;
    let to = match (state, event) {
        (S::ProtectedToCloud, Started(O::FailoverToCloud)) => S::FailoverToCloudInProgress,
        (S::FailoverToCloudInProgress, Succeeded(O::FailoverToCloud)) => S::FailedOverToCloud,
        (S::FailoverToCloudInProgress, Failed(O::FailoverToCloud)) => S::ProtectedToCloud,
        (S::FailedOverToCloud, Started(O::CommitInCloud)) => S::FailedOverToCloud,
        (S::FailedOverToCloud, Succeeded(O::CommitInCloud)) => S::CommittedInCloud,
        (S::FailedOverToCloud, Failed(O::CommitInCloud)) => S::FailedOverToCloud,
        (S::CommittedInCloud, Started(O::Reprotect)) => S::ReprotectInProgress,
        (S::ReprotectInProgress, Succeeded(O::Reprotect)) => S::ProtectedToPrimary,
        (S::ReprotectInProgress, Failed(O::Reprotect)) => S::CommittedInCloud,
        (S::ProtectedToPrimary, Started(O::Failover)) => S::FailbackInProgress,
        (S::FailbackInProgress, Succeeded(O::Failover)) => S::FailedBackCommitPending,
        (S::FailbackInProgress, Failed(O::Failover)) => S::ProtectedToPrimary,
        (S::FailedBackCommitPending, Started(O::ChangeRecoveryPoint | O::CancelFailover)) => S::FailbackInProgress,
        (S::FailbackInProgress, Succeeded(O::ChangeRecoveryPoint)) => S::FailedBackCommitPending,
        (S::FailbackInProgress, Failed(O::ChangeRecoveryPoint | O::CancelFailover)) => S::FailedBackCommitPending,
        (S::FailbackInProgress, Succeeded(O::CancelFailover)) => S::ProtectedToPrimary,
        (S::FailedBackCommitPending, Started(O::Commit)) => S::CommitInProgress,
        (S::CommitInProgress, Succeeded(O::Commit)) => S::CommittedOnPrimary,
        (S::CommitInProgress, Failed(O::Commit)) => S::FailedBackCommitPending,
        (S::CommittedOnPrimary, Started(O::ReprotectToCloud)) => S::ReprotectToCloudInProgress,
        (S::ReprotectToCloudInProgress, Succeeded(O::ReprotectToCloud)) => S::ProtectedToCloud,
        (S::ReprotectToCloudInProgress, Failed(O::ReprotectToCloud)) => S::CommittedOnPrimary,
        // Drills run beside the replication to on-premises: the item stays protected whatever they do.
        (S::ProtectedToPrimary, Started(O::TestFailover | O::CleanupTestFailover)) => S::ProtectedToPrimary,
        (S::ProtectedToPrimary, Succeeded(O::TestFailover | O::CleanupTestFailover)) => S::ProtectedToPrimary,
        (S::ProtectedToPrimary, Failed(O::TestFailover | O::CleanupTestFailover)) => S::ProtectedToPrimary,
        // A verification reads the replica beside the replication; whatever it finds, the item stays protected.
        (S::ProtectedToPrimary, Started(O::VerifyReplica) | Succeeded(O::VerifyReplica) | Failed(O::VerifyReplica)) => {
            S::ProtectedToPrimary
        }
        // Split-brain: entered when both copies change, left only by the operator's choice of the winning copy.
        (S::ProtectedToPrimary | S::FailedBackCommitPending, Diverged) => S::SplitBrain,
        (S::SplitBrain, Started(O::KeepCloudCopy | O::KeepOnPremisesCopy)) => S::SplitBrain,
        (S::SplitBrain, Failed(O::KeepCloudCopy | O::KeepOnPremisesCopy)) => S::SplitBrain,
        (S::SplitBrain, Succeeded(O::KeepCloudCopy)) => S::ProtectedToPrimary,
        (S::SplitBrain, Succeeded(O::KeepOnPremisesCopy)) => S::FailedBackCommitPending,
        _ => return Err(InvalidTransition { state, event }),
    };
    Ok(to)
}

/// Which way the item replicates in `state`, if it replicates at all.
pub fn direction(state: State) -> Option<(Site, Site)> {
    match state {
        State::ProtectedToCloud | State::FailoverToCloudInProgress | State::ReprotectToCloudInProgress => {
            Some((Site::Primary, Site::Recovery))
        }
        State::ReprotectInProgress | State::ProtectedToPrimary | State::FailbackInProgress => {
            Some((Site::Recovery, Site::Primary))
        }
        _ => None,
    }
}

/// Where the machine runs in `state`: the cloud until a failback completes.
pub fn active_site(state: State) -> Site {
    match state {
        State::FailedOverToCloud
        | State::CommittedInCloud
        | State::ReprotectInProgress
        | State::ProtectedToPrimary
        | State::FailbackInProgress => Site::Recovery,
        _ => Site::Primary,
    }
}

/// The state an operation starts from.
pub fn required_state(op: Operation) -> State {
    match op {
        Operation::FailoverToCloud => State::ProtectedToCloud,
        Operation::CommitInCloud => State::FailedOverToCloud,
        Operation::Reprotect => State::CommittedInCloud,
        Operation::Failover | Operation::TestFailover | Operation::CleanupTestFailover | Operation::VerifyReplica => {
            State::ProtectedToPrimary
        }
        Operation::Commit | Operation::CancelFailover | Operation::ChangeRecoveryPoint => {
            State::FailedBackCommitPending
        }
        Operation::ReprotectToCloud => State::CommittedOnPrimary,
        Operation::KeepCloudCopy | Operation::KeepOnPremisesCopy => State::SplitBrain,
    }
}

/// The rule that names each operation's lifecycle precondition.
fn lifecycle_rule(op: Operation) -> &'static str {
    match op {
        Operation::Reprotect => "R-W1",
        Operation::Failover | Operation::TestFailover | Operation::CleanupTestFailover | Operation::VerifyReplica => {
            "R-W2"
        }
        Operation::Commit | Operation::CancelFailover | Operation::ChangeRecoveryPoint => "R-W3",
        // R-W4: once re-protected, the VM "can be failed over again".
        Operation::ReprotectToCloud | Operation::FailoverToCloud | Operation::CommitInCloud => "R-W4",
        Operation::KeepCloudCopy | Operation::KeepOnPremisesCopy => "SB-1",
    }
}

/// Whether a job's kind is a drill's: an item's test failover or its cleanup, or a plan's (`plan-test-failover`).
pub fn is_drill_kind(kind: &str) -> bool {
    let op = kind.strip_prefix("plan-").unwrap_or(kind);
    serde_json::from_value::<Operation>(serde_json::Value::String(op.to_owned())).is_ok_and(Operation::is_drill)
}

/// An operation as the portal names it, for sentences.
pub fn operation_words(op: Operation) -> &'static str {
    match op {
        Operation::FailoverToCloud => "failover to the cloud",
        Operation::CommitInCloud => "commit in the cloud",
        Operation::Reprotect => "reprotect",
        Operation::Failover => "failover",
        Operation::Commit => "commit",
        Operation::CancelFailover => "cancel failover",
        Operation::ChangeRecoveryPoint => "change recovery point",
        Operation::ReprotectToCloud => "re-protect to the cloud",
        Operation::TestFailover => "test failover",
        Operation::CleanupTestFailover => "test failover cleanup",
        Operation::KeepCloudCopy => "keep the cloud copy",
        Operation::KeepOnPremisesCopy => "keep the on-premises copy",
        Operation::VerifyReplica => "replica verification",
    }
}

pub fn state_words(s: State) -> &'static str {
    match s {
        State::ProtectedToCloud => "protected to the cloud",
        State::FailoverToCloudInProgress => "failing over to the cloud",
        State::FailedOverToCloud => "failed over to the cloud, not committed",
        State::CommittedInCloud => "running in the cloud (failover committed)",
        State::ReprotectInProgress => "being reprotected to on-premises",
        State::ProtectedToPrimary => "protected from the cloud to on-premises",
        State::FailbackInProgress => "failing back",
        State::FailedBackCommitPending => "failed back, waiting for commit",
        State::CommitInProgress => "committing",
        State::CommittedOnPrimary => "back on-premises, unprotected",
        State::ReprotectToCloudInProgress => "being re-protected to the cloud",
        State::SplitBrain => "in split-brain: both copies changed",
    }
}

fn state_check(item: &ReplicatedItem, op: Operation) -> Check {
    let want = required_state(op);
    if item.state == want {
        return Ok(());
    }
    let action = match op {
        Operation::Reprotect => "Reprotect starts once the VM runs in the cloud with its failover committed.",
        Operation::Failover => "Reprotect the item to on-premises first and wait until it is protected and healthy.",
        Operation::Commit | Operation::CancelFailover | Operation::ChangeRecoveryPoint => {
            "Fail the item back to on-premises first (failover); then commit, cancel or change its recovery point."
        }
        Operation::ReprotectToCloud => "Commit the failback first; then re-protect the item to the cloud.",
        Operation::FailoverToCloud => "Re-protect the item to the cloud first and wait for its first recovery point.",
        Operation::CommitInCloud => "Fail the item over to the cloud first; then commit.",
        Operation::TestFailover | Operation::CleanupTestFailover => {
            "Reprotect the item to on-premises first and wait until it is protected; drills run from its recovery \
             points."
        }
        Operation::KeepCloudCopy | Operation::KeepOnPremisesCopy => {
            "Nothing to resolve: only an item whose cloud and on-premises copies both changed is in split-brain."
        }
        Operation::VerifyReplica => {
            "Reprotect the item to on-premises first and wait until it is protected: verification reads the replica \
             a failback would start from."
        }
    };
    Err(Refusal::new(
        lifecycle_rule(op),
        format!(
            "{} is {}; {} needs it {}.",
            item.name,
            state_words(item.state),
            operation_words(op),
            state_words(want)
        ),
        action,
    ))
}

/// The parameters of a request. Ones the operation does not use are ignored; unknown ones are refused (a
/// misspelled `point` must not silently fail over to the default point).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Request {
    pub master_target: Option<String>,
    pub process_server: Option<String>,
    pub datastore: Option<String>,
    pub point: Option<PointChoice>,
    /// Test failover: the isolated network the test VM joins.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub network: Option<String>,
    /// Test failover cleanup: what the drill showed, for its report.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub notes: Option<String>,
    /// Split-brain resolution: why this copy wins, typed by the operator (kept with the divergent blocks).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// Reprotect and re-protect: how long recovery points are kept, how often an app-consistent one is taken, the
    /// RPO past which the item alerts (minutes; the vault's defaults when absent).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retention_min: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub app_consistent_every_min: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rpo_threshold_min: Option<u32>,
}

impl Request {
    /// The protection settings the request chooses (none chosen: the item keeps its own).
    pub fn protection(&self) -> ProtectionSettings {
        ProtectionSettings {
            retention_min: self.retention_min,
            app_consistent_every_min: self.app_consistent_every_min,
            rpo_threshold_min: self.rpo_threshold_min,
        }
    }
}

/// The item's protection settings with the request's over them: entered values that make sense.
fn protection_check(item: &ReplicatedItem, req: &Request) -> Check {
    let problems = item.protection.with(&req.protection()).problems();
    if problems.is_empty() {
        return Ok(());
    }
    Err(Refusal::new(
        "PS-1",
        format!("The protection settings do not hold: {}.", problems.join("; ")),
        "Correct the retention, the app-consistent frequency or the RPO threshold as said.",
    ))
}

/// What the runtime knows around a decision: the clock and the job in flight.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Context {
    pub now: Millis,
    pub active_job: Option<String>,
}

/// Bytes a transfer would move, measured by the runtime (the replicator's hashes, or the allocated size).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DataEstimate {
    /// Changed bytes between the cloud disks and an existing on-premises VM, when known.
    pub changed_bytes: Option<u64>,
    /// Allocated bytes of the cloud disks (a full transfer).
    pub allocated_bytes: u64,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Location {
    /// R-L1: to the existing on-premises VM; only changes move.
    Original,
    /// R-L2: a new VM on the master target's host; a full download first.
    Alternate,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Transfer {
    Delta,
    Full,
}

/// One step a job runs, as the workflow knows it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Step {
    PowerOffOnPrem,
    CreateOnPremVm,
    InitialReplication,
    StartReplication,
    ShutDownCloudVm,
    FinalCycle,
    MaterialiseDisks,
    ReattachDisks,
    VmwareTools,
    PowerOnOnPrem,
    DeleteCloudVm,
    MarkCommitted,
    ShutDownOnPrem,
    RestartCloudVm,
    ResumeReplication,
    CheckAgent,
    InitialReplicationToCloud,
    StartReplicationToCloud,
    ShutDownOnPremForCloud,
    CreateCloudVm,
    CommitInCloud,
    CreateTestVm,
    PowerOnTestVm,
    CheckTestVm,
    RemoveTestVm,
    RecordCleanup,
    /// Split-brain: the losing copy's blocks that differ from the winner's, kept until the next commit.
    KeepDivergentBlocks,
    /// Every block of the on-premises replica read again and compared with its recorded hash.
    VerifyReplica,
}

impl Step {
    pub fn code(self) -> String {
        wire_name(&self)
    }
    pub fn parse(code: &str) -> Option<Step> {
        serde_json::from_value(serde_json::Value::String(code.to_owned())).ok()
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PlannedTask {
    pub step: Step,
    pub name: String,
}

fn t(step: Step, name: impl Into<String>) -> PlannedTask {
    PlannedTask { step, name: name.into() }
}

/// The dry run of an operation: every check, and what the job would do.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Plan {
    pub item: String,
    pub operation: Operation,
    pub allowed: bool,
    pub checks: Vec<CheckOutcome>,
    pub location: Option<Location>,
    /// Plain words about the location decision, shown before the job starts (R-L1/R-L2).
    pub location_note: Option<String>,
    pub target_host: Option<String>,
    pub target_datastore: Option<String>,
    pub transfer: Option<Transfer>,
    pub bytes_to_move: u64,
    pub eta_seconds: Option<u64>,
    pub point: Option<RecoveryPoint>,
    /// Writes lost by the chosen point against the newest one (R-RP4).
    pub data_loss_ms: Option<Millis>,
    /// The job's tasks, in order.
    pub tasks: Vec<PlannedTask>,
}

impl Plan {
    pub fn refusals(&self) -> Vec<Refusal> {
        self.checks.iter().filter_map(|c| c.refusal.clone()).collect()
    }
}

struct Checks(Vec<CheckOutcome>);

impl Checks {
    fn add(&mut self, name: &str, rule: &str, c: Check) {
        let passed = c.is_ok();
        let refusal = c.err();
        let rule = refusal.as_ref().map_or(rule.to_owned(), |r| r.rule.clone());
        self.0.push(CheckOutcome { rule, check: name.into(), passed, refusal });
    }
}

/// Original location when the on-premises VM of a VMware item still exists (R-L1); else alternate (R-L2), always
/// for physical servers (R-P1).
pub fn location_for(item: &ReplicatedItem) -> Location {
    match (&item.machine, &item.onprem) {
        (MachineType::VmwareVm, Some(vm)) if vm.exists => Location::Original,
        _ => Location::Alternate,
    }
}

/// Dry run: evaluates every rule for `op` on `item` with `req` and describes the job. Pure.
/// Whether `op`'s dry run quotes bytes to move (and so needs the disks read): the two reprotects, which copy whole
/// disks between the sites. Failover, commit, cancel and change of recovery point work on what is already there.
pub fn moves_disks(op: Operation) -> bool {
    match op {
        Operation::Reprotect | Operation::ReprotectToCloud => true,
        Operation::Failover
        | Operation::Commit
        | Operation::CancelFailover
        | Operation::ChangeRecoveryPoint
        | Operation::FailoverToCloud
        | Operation::CommitInCloud
        | Operation::TestFailover
        | Operation::CleanupTestFailover
        | Operation::KeepCloudCopy
        | Operation::KeepOnPremisesCopy
        | Operation::VerifyReplica => false,
    }
}

pub fn dry_run(
    item: &ReplicatedItem,
    inv: &Inventory,
    op: Operation,
    req: &Request,
    ctx: &Context,
    est: &DataEstimate,
) -> Plan {
    let mut c = Checks(Vec::new());
    let mut plan = Plan {
        item: item.id.clone(),
        operation: op,
        allowed: false,
        checks: Vec::new(),
        location: None,
        location_note: None,
        target_host: None,
        target_datastore: None,
        transfer: None,
        bytes_to_move: 0,
        eta_seconds: None,
        point: None,
        data_loss_ms: None,
        tasks: Vec::new(),
    };
    c.add("no other job runs on the item", "R-W5", rules::r_w5_no_active_job(item, ctx.active_job.as_deref()));
    c.add("lifecycle state", lifecycle_rule(op), state_check(item, op));
    if matches!(op, Operation::Reprotect | Operation::ReprotectToCloud) {
        c.add("protection settings", "PS-1", protection_check(item, req));
    }
    match op {
        Operation::Reprotect => reprotect(item, inv, req, est, &mut c, &mut plan),
        Operation::Failover | Operation::ChangeRecoveryPoint => failover(item, inv, req, &mut c, &mut plan, op),
        Operation::Commit => {
            let vm = item.cloud_vm.as_ref().map_or("the cloud VM".to_owned(), |v| format!("cloud VM {}", v.id));
            plan.tasks = vec![
                t(Step::DeleteCloudVm, format!("Delete {vm} and its disks")),
                t(
                    Step::MarkCommitted,
                    if item.kept_copies.is_empty() {
                        "Mark the item committed on-premises"
                    } else {
                        "Mark the item committed on-premises; remove the blocks kept from its split-brain"
                    },
                ),
            ];
        }
        Operation::CancelFailover => {
            plan.tasks = vec![
                t(Step::ShutDownOnPrem, "Shut down the on-premises VM"),
                t(Step::RestartCloudVm, "Restart the cloud VM"),
                t(Step::ResumeReplication, "Resume replication to on-premises"),
            ];
        }
        Operation::ReprotectToCloud => {
            let ps = req.process_server.as_deref().and_then(|id| inv.process_server(id));
            match (req.process_server.as_deref(), ps) {
                (None, _) => c.add(
                    "process server chosen",
                    "R-W4",
                    Err(Refusal::new(
                        "R-W4",
                        "Re-protect needs the process server that will send data to the cloud.",
                        "Choose the on-premises process server.",
                    )),
                ),
                (Some(id), None) => c.add("process server exists", "R-W4", Err(unknown("process server", id))),
                (Some(_), Some(ps)) => {
                    c.add("process server on-premises", "R-W4", rules::r_w4_process_server_on_premises(ps));
                    plan.eta_seconds = eta(est.allocated_bytes, ps);
                }
            }
            c.add("agent registered", "R-A1", rules::r_a1_agent_registered(item, ctx.now));
            plan.transfer = Some(Transfer::Full);
            plan.bytes_to_move = est.allocated_bytes;
            plan.tasks = vec![
                t(Step::CheckAgent, "Check the agent's registration"),
                t(Step::InitialReplicationToCloud, "Initial replication to the cloud"),
                t(Step::StartReplicationToCloud, "Start continuous replication to the cloud"),
            ];
        }
        Operation::FailoverToCloud => failover_to_cloud(item, req, &mut c, &mut plan),
        Operation::CommitInCloud => {
            plan.tasks = vec![t(Step::CommitInCloud, "Commit the failover: delete the cloud replication disks")]
        }
        Operation::TestFailover => test_failover(item, inv, req, &mut c, &mut plan),
        Operation::KeepCloudCopy | Operation::KeepOnPremisesCopy => split_brain(item, op, req, &mut c, &mut plan),
        Operation::VerifyReplica => {
            plan.tasks = vec![t(
                Step::VerifyReplica,
                "Read every block of the on-premises replica and compare it with the hash its last cycle recorded",
            )]
        }
        Operation::CleanupTestFailover => {
            match &item.drill {
                None => {
                    c.add("a test failover exists", "DR-3", Err(no_drill(item)));
                    plan.tasks = cleanup_tasks(&test_vm_name(item));
                }
                Some(d) => {
                    c.add("a test failover exists", "DR-3", Ok(()));
                    plan.tasks = cleanup_tasks(&d.vm);
                    plan.target_host = Some(d.host.clone());
                }
            }
            c.add("notes are short", "DR-4", notes_check(req.notes.as_deref()));
        }
    }
    plan.checks = c.0;
    plan.allowed = plan.checks.iter().all(|c| c.passed);
    plan
}

fn unknown(what: &str, id: &str) -> Refusal {
    Refusal::new(
        "R-W1",
        format!("There is no {what} {id}."),
        format!("Choose a {what} from Site Recovery infrastructure."),
    )
}

fn eta(bytes: u64, ps: &ProcessServer) -> Option<u64> {
    (ps.bandwidth_bytes_per_s > 0).then(|| bytes.div_ceil(ps.bandwidth_bytes_per_s))
}

fn reprotect(
    item: &ReplicatedItem,
    inv: &Inventory,
    req: &Request,
    est: &DataEstimate,
    c: &mut Checks,
    plan: &mut Plan,
) {
    c.add("not a Windows Server 2008 R2 SP1 physical server", "R-P2", rules::r_p2_no_2008_r2_sp1_physical(item));
    c.add("cloud VM present, not moved, not migrated", "R-B1", rules::r_b1_cloud_vm_usable(item));
    c.add("registered in the configuration server", "R-C1", rules::r_c1_registered_in_configuration_server(item, inv));
    let mt = match req.master_target.as_deref() {
        None => {
            c.add(
                "master target chosen",
                "R-W1",
                Err(Refusal::new(
                    "R-W1",
                    "Reprotect needs a master target.",
                    "Choose a master target of the VM's operating system family.",
                )),
            );
            None
        }
        Some(id) => match inv.master_target(id) {
            None => {
                let none_at_all =
                    rules::r_p3_master_target_discovered(inv, None).err().filter(|_| inv.master_targets.is_empty());
                c.add("master target exists", "R-P3", Err(none_at_all.unwrap_or_else(|| unknown("master target", id))));
                None
            }
            Some(mt) => Some(mt),
        },
    };
    let mt_host = mt.and_then(|m| inv.host(&m.host));
    if let Some(mt) = mt {
        c.add("master target matches the OS", "R-W1", rules::r_w1_master_target_matches_os(item, mt));
        c.add("master target and its host discovered", "R-P3", rules::r_p3_master_target_discovered(inv, mt_host));
    }
    match req.process_server.as_deref() {
        None => c.add(
            "process server chosen",
            "R-W1",
            Err(Refusal::new(
                "R-W1",
                "Reprotect needs a process server in the cloud.",
                "Choose the process server deployed in the cloud.",
            )),
        ),
        Some(id) => match inv.process_server(id) {
            None => c.add("process server exists", "R-W1", Err(unknown("process server", id))),
            Some(ps) => {
                c.add("process server in the cloud", "R-W1", rules::r_w1_process_server_in_recovery(ps));
                let location = location_for(item);
                let bytes = match location {
                    Location::Original => est.changed_bytes.unwrap_or(est.allocated_bytes),
                    Location::Alternate => est.allocated_bytes,
                };
                plan.bytes_to_move = bytes;
                plan.eta_seconds = eta(bytes, ps);
            }
        },
    }
    let ds = req.datastore.as_deref().and_then(|id| inv.datastore(id));
    if let Some(host) = mt_host {
        c.add("ESXi, not Hyper-V", "R-B2", rules::r_b2_no_hyper_v(host));
        c.add(
            "original vCenter and configuration server",
            "R-L3",
            rules::r_l3_original_vcenter_and_configuration_server(item, inv, host),
        );
        c.add("host discovery complete", "R-L6", rules::r_l6_standalone_needs_discovery(item, inv, host));
    }
    let location = location_for(item);
    plan.location = Some(location);
    match location {
        Location::Original => {
            let vm = item.onprem.as_ref().expect("original location implies an on-premises VM");
            plan.transfer = Some(Transfer::Delta);
            plan.target_host = Some(vm.host.clone());
            plan.target_datastore = vm.disks.first().map(|d| d.datastore.clone());
            plan.location_note = Some(format!(
                "Original location recovery (R-L1): {} still exists on-premises, so only the changes are replicated back.",
                vm.id
            ));
            if let Some(host) = mt_host {
                let managed = inv.host(&vm.host).is_some_and(|h| h.vcenter.is_some());
                c.add(
                    "master target's host reaches the VM's datastores",
                    if managed { "R-L4" } else { "R-L5" },
                    rules::r_l4_l5_host_reaches_vm_datastores(vm, inv, host),
                );
            }
            c.add("vSAN/RDM disks exist and are attached", "R-L7", rules::r_l7_vsan_rdm_disks_attached(vm, inv));
            plan.tasks = vec![
                t(Step::PowerOffOnPrem, format!("Power off on-premises VM {}", vm.id)),
                t(Step::InitialReplication, "Initial replication: changed blocks only (delta)"),
                t(Step::StartReplication, "Start continuous replication (crash-consistent and app-consistent points)"),
            ];
        }
        Location::Alternate => {
            plan.transfer = Some(Transfer::Full);
            plan.target_host = mt_host.map(|h| h.id.clone());
            plan.target_datastore = req.datastore.clone();
            let why = if item.machine == MachineType::PhysicalServer {
                "a physical server fails back only as a VMware VM (P2A2V, R-P1)".to_owned()
            } else {
                "the on-premises VM no longer exists".to_owned()
            };
            plan.location_note = Some(format!(
                "Alternate location recovery (R-L2): {why}; a new VM is created on the master target's host and all \
                 data is downloaded first (R-L10), which takes longer than original location recovery."
            ));
            match (req.datastore.as_deref(), ds) {
                (None, _) => c.add(
                    "datastore chosen",
                    "R-L8",
                    Err(Refusal::new(
                        "R-L8",
                        "Alternate location recovery needs a datastore for the new VM's disks.",
                        "Choose a VMFS datastore the master target's host can access.",
                    )),
                ),
                (Some(id), None) => c.add("datastore exists", "R-L8", Err(unknown("datastore", id))),
                (Some(_), Some(ds)) => {
                    c.add("VMFS datastore", "R-L9", rules::r_l9_alternate_location_needs_vmfs(ds));
                    if let Some(host) = mt_host {
                        c.add(
                            "datastore reachable from the master target's host",
                            "R-L8",
                            rules::r_l8_datastore_reachable_from_master_target(ds, host),
                        );
                    }
                    c.add("room on the datastore", "R-L8", rules::datastore_has_room(ds, item.disk_bytes));
                }
            }
            plan.tasks = vec![
                t(
                    Step::CreateOnPremVm,
                    format!(
                        "Create VM {} on host {} with new VMDKs on datastore {}",
                        item.name,
                        plan.target_host.as_deref().unwrap_or("?"),
                        plan.target_datastore.as_deref().unwrap_or("?")
                    ),
                ),
                t(Step::InitialReplication, "Initial replication: full copy"),
                t(Step::StartReplication, "Start continuous replication (crash-consistent and app-consistent points)"),
            ];
        }
    }
}

fn tools_task_to_cloud(item: &ReplicatedItem) -> &'static str {
    match item.os.family {
        OsFamily::Windows => "Disable VMware Tools (R-T1)",
        OsFamily::Linux => "Uninstall VMware Tools (R-T1)",
    }
}

fn tools_task_back(item: &ReplicatedItem) -> &'static str {
    match item.os.family {
        OsFamily::Windows => "Re-enable VMware Tools (R-T1)",
        OsFamily::Linux => "Reinstall VMware Tools (R-T1)",
    }
}

fn failover(item: &ReplicatedItem, inv: &Inventory, req: &Request, c: &mut Checks, plan: &mut Plan, op: Operation) {
    if op == Operation::Failover {
        c.add("reprotect complete and healthy", "R-C3", rules::r_c3_reprotect_complete_and_healthy(item));
        c.add("not a Windows Server 2008 R2 SP1 physical server", "R-P2", rules::r_p2_no_2008_r2_sp1_physical(item));
        c.add("cloud VM present, not moved, not migrated", "R-B1", rules::r_b1_cloud_vm_usable(item));
        c.add(
            "registered in the configuration server",
            "R-C1",
            rules::r_c1_registered_in_configuration_server(item, inv),
        );
        let mt = item.master_target.as_deref().and_then(|id| inv.master_target(id));
        let host = mt.and_then(|m| inv.host(&m.host));
        c.add("master target and its host discovered", "R-P3", rules::r_p3_master_target_discovered(inv, host));
        if let Some(mt) = mt {
            c.add("master target has no snapshots", "R-C2", rules::r_c2_master_target_has_no_snapshots(mt));
        }
        // The VM's host after failback: the original VM's host (original location) or the master target's.
        let target_host = match location_for(item) {
            Location::Original => item.onprem.as_ref().and_then(|vm| inv.host(&vm.host)),
            Location::Alternate => host,
        };
        if let Some(h) = target_host {
            c.add("vCenter connected", "R-C4", rules::r_c4_vcenter_connected(inv, h));
            plan.target_host = Some(h.id.clone());
        }
        plan.location = Some(location_for(item));
    }
    let choice = req.point.clone().unwrap_or(PointChoice::LatestProcessed);
    choose_point(item, &choice, c, plan);
    let mut tasks = Vec::new();
    if let (Operation::Failover, Some(d)) = (op, &item.drill) {
        // A drill does not hold a real failover back: its VM goes first, as the confirmation says.
        tasks.extend(cleanup_tasks(&d.vm));
    }
    if op == Operation::Failover {
        tasks.push(t(Step::ShutDownCloudVm, "Shut down the cloud VM"));
        if choice == PointChoice::Latest {
            tasks.push(t(Step::FinalCycle, "Replicate the pending changes (one more cycle)"));
        }
    }
    tasks.push(t(
        Step::MaterialiseDisks,
        format!(
            "Materialise the disks at recovery point {}{}",
            plan.point.as_ref().map_or("?".to_owned(), |p| p.id.clone()),
            kept_text(item, &choice)
        ),
    ));
    tasks.push(t(Step::ReattachDisks, "Detach and re-attach the disks (vCenter)"));
    tasks.push(t(Step::VmwareTools, tools_task_back(item)));
    tasks.push(t(Step::PowerOnOnPrem, "Power on the on-premises VM"));
    plan.tasks = tasks;
}

/// The test VM's name beside the production VM's.
pub fn test_vm_name(item: &ReplicatedItem) -> String {
    format!("{}-test", item.name)
}

fn no_drill(item: &ReplicatedItem) -> Refusal {
    Refusal::new(
        "DR-3",
        format!("{} has no test failover to clean up.", item.name),
        "Run a test failover first; its cleanup removes the test VM.",
    )
}

/// What the operator writes at cleanup goes into the drill's report: plain text of reasonable length.
fn notes_check(notes: Option<&str>) -> Check {
    match notes {
        Some(n) if n.chars().count() > 4000 => Err(Refusal::new(
            "DR-4",
            format!("The notes have {} characters; a drill report keeps at most 4000.", n.chars().count()),
            "Shorten the notes, or link a longer document from them.",
        )),
        _ => Ok(()),
    }
}

/// The typed reason a split-brain resolution needs: it says later why one side's writes were set aside.
fn reason_check(reason: Option<&str>) -> Check {
    let n = reason.map_or(0, |r| r.trim().chars().count());
    if n == 0 {
        return Err(Refusal::new(
            "SB-2",
            "Choosing the copy that wins a split-brain needs a reason.",
            "Type why this copy wins (what ran where, who decided); it is kept with the other copy's blocks.",
        ));
    }
    if n > 4000 {
        return Err(Refusal::new(
            "SB-2",
            format!("The reason has {n} characters; at most 4000 are kept."),
            "Shorten the reason to 4000 characters or fewer.",
        ));
    }
    Ok(())
}

/// Ends a split-brain: the loser's divergent blocks are kept first (nothing it wrote is lost), then the loser is
/// shut down; a winning cloud copy is replicated to on-premises again.
fn split_brain(item: &ReplicatedItem, op: Operation, req: &Request, c: &mut Checks, plan: &mut Plan) {
    c.add("a reason is given", "SB-2", reason_check(req.reason.as_deref()));
    let cloud = item.cloud_vm.as_ref().map_or("the cloud VM".to_owned(), |v| format!("cloud VM {}", v.id));
    // The resync's size is known only once both sides are hashed: the plan names no transfer (a delta follows).
    plan.tasks = if op == Operation::KeepCloudCopy {
        vec![
            t(Step::KeepDivergentBlocks, "Keep the on-premises VM's divergent blocks until the next commit"),
            t(Step::ShutDownOnPrem, "Shut down the on-premises VM"),
            t(Step::RestartCloudVm, format!("Attach the replica disks on-premises and keep {cloud} running")),
            t(Step::ResumeReplication, "Bring the replica back to the cloud copy and resume replication"),
        ]
    } else {
        vec![
            t(Step::KeepDivergentBlocks, format!("Keep the divergent blocks of {cloud} until the next commit")),
            t(Step::ShutDownCloudVm, format!("Shut down {cloud}")),
        ]
    };
}

fn cleanup_tasks(vm: &str) -> Vec<PlannedTask> {
    vec![
        t(Step::RemoveTestVm, format!("Power off and delete test VM {vm} and its disks")),
        t(Step::RecordCleanup, "Record the drill's cleanup and notes"),
    ]
}

/// A drill: the VM's copy on the primary site from a recovery point, on a network marked isolated, while the cloud
/// VM keeps running and replication goes on.
fn test_failover(item: &ReplicatedItem, inv: &Inventory, req: &Request, c: &mut Checks, plan: &mut Plan) {
    if let Some(d) = &item.drill {
        c.add(
            "no test failover exists",
            "DR-3",
            Err(Refusal::new(
                "DR-3",
                format!(
                    "{} has a test failover since {} (VM {} on network {}).",
                    item.name,
                    utc_text(d.started_at),
                    d.vm,
                    d.network
                ),
                "Clean up that test failover first; then start another.",
            )),
        );
    }
    match req.network.as_deref().map(|n| (n, inv.network(n))) {
        None => {
            let isolated: Vec<&str> = inv.networks.iter().filter(|n| n.isolated).map(|n| n.id.as_str()).collect();
            c.add(
                "isolated network chosen",
                "DR-1",
                Err(Refusal::new(
                    "DR-1",
                    "A test failover needs the network its VM joins.",
                    if isolated.is_empty() {
                        "Ask an Administrator to mark a network isolated on the Infrastructure page, then choose it."
                            .to_owned()
                    } else {
                        format!("Choose an isolated network: {}.", isolated.join(", "))
                    },
                )),
            )
        }
        Some((n, None)) => c.add(
            "isolated network chosen",
            "DR-1",
            Err(Refusal::new(
                "DR-1",
                format!("There is no network {n} on the primary site."),
                "Choose a network from the Infrastructure page.",
            )),
        ),
        Some((n, Some(net))) if !net.isolated => c.add(
            "isolated network chosen",
            "DR-1",
            Err(Refusal::new(
                "DR-1",
                format!("Network {n} is a production network: a test VM there would answer for the real machine."),
                "Choose a network marked isolated, or ask an Administrator to mark one isolated on the \
                 Infrastructure page.",
            )),
        ),
        Some(_) => c.add("isolated network chosen", "DR-1", Ok(())),
    }
    let vm = item.onprem.as_ref();
    let host = vm.and_then(|v| inv.host(&v.host));
    if let Some(h) = host {
        c.add("vCenter connected", "R-C4", rules::r_c4_vcenter_connected(inv, h));
        plan.target_host = Some(h.id.clone());
    }
    let ds = vm.and_then(|v| v.disks.first()).map(|d| d.datastore.clone());
    if let Some(d) = ds.as_deref().and_then(|d| inv.datastore(d)) {
        c.add("room on the datastore", "R-L8", rules::datastore_has_room(d, item.disk_bytes));
    }
    plan.target_datastore = ds;
    let choice = req.point.clone().unwrap_or(PointChoice::LatestProcessed);
    choose_point(item, &choice, c, plan);
    let name = test_vm_name(item);
    plan.tasks = vec![
        t(
            Step::CreateTestVm,
            format!(
                "Create test VM {name} from recovery point {}{} on network {}",
                plan.point.as_ref().map_or("?".to_owned(), |p| p.id.clone()),
                kept_text(item, &choice),
                req.network.as_deref().unwrap_or("?")
            ),
        ),
        t(Step::PowerOnTestVm, format!("Power on test VM {name}")),
        t(Step::CheckTestVm, "Check the test VM: its disks are the point's, its network is isolated, it runs"),
    ];
}

/// What a task adds to its point when a split-brain's kept blocks go over it.
fn kept_text(item: &ReplicatedItem, choice: &PointChoice) -> String {
    match choice {
        PointChoice::KeptCopy(job) => match item.kept_copies.iter().find(|k| &k.job == job) {
            Some(k) => format!(
                ", with the {} blocks kept from the {} copy's split-brain (job {job}) laid over it",
                k.blocks,
                site_words(k.site)
            ),
            None => format!(", with the blocks kept by job {job}"),
        },
        _ => String::new(),
    }
}

/// A site as the user says it.
fn site_words(site: Site) -> &'static str {
    match site {
        Site::Primary => "on-premises",
        Site::Recovery => "cloud",
    }
}

/// The recovery point `choice` picks (R-RP3 when none), and the writes it loses against the newest (R-RP4).
fn choose_point(item: &ReplicatedItem, choice: &PointChoice, c: &mut Checks, plan: &mut Plan) {
    match points::choose(item, choice) {
        Ok(p) => {
            let latest = item.recovery_points.iter().map(|p| p.time).max().unwrap_or(p.time);
            plan.data_loss_ms = Some(latest.saturating_sub(p.time));
            plan.point = Some(p);
            c.add("recovery point available", "R-RP3", Ok(()));
        }
        Err(r) => c.add("recovery point available", "R-RP3", Err(r)),
    }
}

/// The article's last step: after re-protect the VM can fail over to the cloud again, from a recovery point of the
/// cloud replication (the newest processed one unless another is chosen).
fn failover_to_cloud(item: &ReplicatedItem, req: &Request, c: &mut Checks, plan: &mut Plan) {
    let choice = req.point.clone().unwrap_or(PointChoice::LatestProcessed);
    if let PointChoice::KeptCopy(job) = &choice {
        // Kept blocks are on-premises disks' business: the commit before re-protect removed them anyway.
        let refusal = Refusal::new(
            "SB-3",
            format!(
                "A failover to the cloud starts from the cloud replication's points, not from kept blocks (job {job})."
            ),
            "Choose a recovery point of the cloud replication.",
        );
        c.add("recovery point available", "SB-3", Err(refusal));
        return;
    }
    choose_point(item, &choice, c, plan);
    let mut tasks = vec![t(Step::ShutDownOnPremForCloud, "Shut down the on-premises VM")];
    if choice == PointChoice::Latest {
        tasks.push(t(Step::FinalCycle, "Replicate the pending changes to the cloud (one more cycle)"));
    }
    tasks.push(t(Step::VmwareTools, tools_task_to_cloud(item)));
    tasks.push(t(
        Step::CreateCloudVm,
        format!(
            "Create the cloud VM from recovery point {} and start it",
            plan.point.as_ref().map_or("?".to_owned(), |p| p.id.clone())
        ),
    ));
    plan.tasks = tasks;
}

/// Every operation with its verdict for the item (for the toolbar and the API). Parameter checks (which master
/// target, which datastore) are the dry run's; here only what the item itself allows.
pub fn allowed_operations(item: &ReplicatedItem, inv: &Inventory, ctx: &Context) -> Vec<(Operation, Vec<Refusal>)> {
    OPERATIONS
        .iter()
        .map(|&op| {
            let blocked = state_check(item, op).is_err() || ctx.active_job.is_some();
            let mut refusals = Vec::new();
            let mut push = |c: Check| {
                if let Err(r) = c {
                    refusals.push(r);
                }
            };
            push(state_check(item, op));
            push(rules::r_w5_no_active_job(item, ctx.active_job.as_deref()));
            // The operation's own rules only when the state and the item's jobs allow it: a refusal says what
            // stands in the way now, not what might later (a failover refused while a reprotect runs does not
            // also say that the master target is unknown; a reprotect after a normal commit does not advise
            // restoring the deleted cloud VM from backup).
            if blocked {
                return (op, refusals);
            }
            match op {
                Operation::Reprotect => {
                    push(rules::r_p2_no_2008_r2_sp1_physical(item));
                    push(rules::r_b1_cloud_vm_usable(item));
                    push(rules::r_c1_registered_in_configuration_server(item, inv));
                    if inv.master_targets.is_empty() {
                        push(rules::r_p3_master_target_discovered(inv, None));
                    }
                }
                Operation::Failover | Operation::FailoverToCloud => {
                    let plan = dry_run(item, inv, op, &Request::default(), ctx, &DataEstimate::default());
                    refusals = plan.refusals();
                }
                Operation::ReprotectToCloud => push(rules::r_a1_agent_registered(item, ctx.now)),
                Operation::TestFailover => {
                    if item.drill.is_some() || item.recovery_points.is_empty() {
                        let plan = dry_run(item, inv, op, &Request::default(), ctx, &DataEstimate::default());
                        // The network is the dialog's choice; what the item itself allows is the rest.
                        refusals = plan.refusals().into_iter().filter(|r| r.rule != "DR-1").collect();
                    }
                }
                Operation::CleanupTestFailover if item.drill.is_none() => push(Err(no_drill(item))),
                _ => {}
            }
            refusals.dedup();
            (op, refusals)
        })
        .collect()
}
