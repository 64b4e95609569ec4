//! What travels between the server functions and the pages: plain strings and numbers, so the wasm module never
//! needs the orchestration core. The decisions stay on the server.

use leptos::prelude::{FromServerFnError, ServerFnErrorErr};
use leptos::server_fn::codec::JsonEncoding;
use serde::{Deserialize, Serialize};

/// An operation refused by a rule or by the operator's role: what the portal shows in "why not" tooltips, dialogs
/// and errors.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Refused {
    pub operation: String,
    pub rule: String,
    pub message: String,
    pub action: String,
}

/// Errors of the portal's action server functions.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, thiserror::Error)]
pub enum PortalError {
    /// The signed-in role may not do this.
    #[error("{0}")]
    Denied(String),
    /// Rules refused the action; each with its rule ID and what to do.
    #[error("refused: {}", .0.iter().map(|r| format!("{} ({})", r.message, r.rule)).collect::<Vec<_>>().join("; "))]
    Refused(Vec<Refused>),
    /// Another job holds the item, an unknown id, a malformed choice.
    #[error("{0}")]
    Conflict(String),
    #[error("{0}")]
    Server(String),
}

impl FromServerFnError for PortalError {
    type Encoder = JsonEncoding;
    fn from_server_fn_error(value: ServerFnErrorErr) -> Self {
        // On the server, arguments that do not parse are the client's mistake: 400 (413 past the body limit), with
        // what went wrong, instead of the server-function layer's 500.
        #[cfg(feature = "ssr")]
        if let ServerFnErrorErr::Args(why)
        | ServerFnErrorErr::MissingArg(why)
        | ServerFnErrorErr::Deserialization(why) = &value
        {
            let code = if why.contains("length limit exceeded") {
                http::StatusCode::PAYLOAD_TOO_LARGE
            } else {
                http::StatusCode::BAD_REQUEST
            };
            if let Some(r) = leptos::prelude::use_context::<leptos_axum::ResponseOptions>() {
                r.set_status(code);
            }
            return PortalError::Conflict(format!(
                "the request could not be read ({why}); send the fields the portal's forms send"
            ));
        }
        PortalError::Server(value.to_string())
    }
}

/// The signed-in person.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Me {
    pub name: String,
    pub role: String,
    pub role_title: String,
    pub may_operate: bool,
    pub may_administer: bool,
    /// The sentence shown where an operation is not offered to this role.
    pub operate_denied: Option<String>,
    /// Test failovers (drills): a Drill operator's, an Operator's and an Administrator's.
    pub may_drill: bool,
    pub drill_denied: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ItemRow {
    pub id: String,
    pub name: String,
    pub machine: String,
    pub os: String,
    /// "Azure → on-premises", "on-premises → Azure", or "—".
    pub direction: String,
    pub state: String,
    pub health: String,
    pub health_errors: Vec<String>,
    /// The last job that failed on the item (until another starts): the page links to it for a restart.
    pub failed_job: Option<String>,
    /// Where the machine runs now: "Azure" or "on-premises".
    pub location: String,
    pub points: usize,
    /// Newest point: kind and creation time (epoch ms).
    pub latest_point: Option<(String, u64)>,
    /// Age of the newest point while replicating: the recovery point objective met right now.
    pub rpo_ms: Option<u64>,
    pub initial_sync_percent: u8,
    pub replication_group: Option<String>,
    pub active_job: Option<String>,
    pub allowed: Vec<String>,
    pub refused: Vec<Refused>,
    /// What needs a person, if anything (the first kind that applies).
    pub attention: Option<AttentionRow>,
}

/// What on an item needs a person, and the one action that clears it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct AttentionRow {
    /// e.g. `commit-pending`, for styling and tests.
    pub kind: String,
    /// Two or three words: "Waiting for commit".
    pub title: String,
    pub detail: String,
    /// Stops protection or recovery now (shown as critical) rather than waiting on a person.
    pub critical: bool,
    /// The item's operation that clears it (its dialog), e.g. `commit`.
    pub operation: Option<String>,
    /// Otherwise the page where it is cleared: (address, link text).
    pub link: Option<(String, String)>,
}

/// One page of the replicated items table.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ItemPage {
    pub rows: Vec<ItemRow>,
    /// Items matching the filters (all pages).
    pub total: usize,
    /// Items in the vault.
    pub vault_total: usize,
    pub page: usize,
    pub per_page: usize,
    /// Protection states present, for the filter.
    pub states: Vec<String>,
    /// On-premises process servers, for re-protecting selected items to Azure (R-W4).
    pub process_servers_to_cloud: Vec<Choice>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PointRow {
    pub id: String,
    pub kind: String,
    pub time: u64,
    /// Writes lost against the newest point.
    pub data_loss_ms: u64,
}

/// A choice offered in the confirm failover dialog, with its point (R-RP4).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PointChoiceRow {
    /// `latest-processed`, `latest`, `latest-app-consistent` or `specific`.
    pub choice: String,
    pub label: String,
    pub point: Option<PointRow>,
    pub note: String,
}

/// An option in a wizard's list; disabled ones say why.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Choice {
    pub id: String,
    pub label: String,
    pub disabled: Option<String>,
    /// For datastores: the hosts that reach it.
    pub reach: Vec<String>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ReprotectOptions {
    /// `original` or `alternate`.
    pub location: String,
    pub master_targets: Vec<Choice>,
    pub process_servers: Vec<Choice>,
    pub datastores: Vec<Choice>,
    /// Master target id → its ESXi host, to show only reachable datastores.
    pub master_target_hosts: Vec<(String, String)>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct DiskRow {
    pub name: String,
    pub size_bytes: u64,
    pub datastore: String,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ItemDetail {
    pub row: ItemRow,
    pub properties: Vec<(String, String)>,
    pub disks: Vec<DiskRow>,
    /// Newest first.
    pub points: Vec<PointRow>,
    pub choices: Vec<PointChoiceRow>,
    pub jobs: Vec<JobRow>,
    pub reprotect: ReprotectOptions,
    /// The cloud VM commit deletes, and the resource group it is in.
    pub cloud_vm: Option<(String, String)>,
    /// Process servers for re-protect to the cloud.
    pub cloud_process_servers: Vec<Choice>,
    /// While a reprotect's initial replication runs: the progress of its sync (bytes examined, total, bytes
    /// sent, seconds elapsed) when the worker has reported it, and the dry run's bytes to move and ETA (from the
    /// process server's rate).
    pub initial_sync: Option<InitialSync>,
    /// The test failover whose VM exists now.
    pub drill: Option<DrillRow>,
    /// The networks a test VM may join: the isolated ones enabled, production ones disabled with the reason.
    pub networks: Vec<Choice>,
    /// The item's last drills, newest first.
    pub drills: Vec<DrillRow>,
    pub protection: ProtectionView,
    /// While both copies have changed: what was seen, for the choice of the winning copy.
    pub split_brain: Option<SplitBrainView>,
    /// The divergent blocks of copies that lost a split-brain, kept until the next commit.
    pub kept_copies: Vec<KeptCopyView>,
    /// The last verification of the on-premises replica.
    pub verification: Option<VerificationView>,
}

/// What the last verification of an item's on-premises replica found.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct VerificationView {
    pub job: String,
    pub finished_at: u64,
    pub blocks: u64,
    pub bytes_read: u64,
    pub mismatched_blocks: u64,
    pub damaged_disks: Vec<String>,
    /// When the next cycle rewrote the differing blocks from the cloud copy.
    pub repaired_at: Option<u64>,
}

/// A split-brain as the item page shows it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SplitBrainView {
    pub detected_at: u64,
    /// In words: "the on-premises VM was powered on outside Homeward while protected to on-premises".
    pub cause: String,
    pub cloud_last_write_at: Option<u64>,
    pub onprem_last_write_at: Option<u64>,
}

/// What a split-brain's losing copy had, kept until the next commit.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct KeptCopyView {
    pub job: String,
    /// `cloud` or `on-premises`.
    pub site: String,
    pub kept_at: u64,
    pub reason: String,
    pub blocks: u64,
    pub bytes: u64,
    pub files: Vec<String>,
}

/// A drill (test failover) as its report shows it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct DrillRow {
    pub id: String,
    pub item: String,
    pub item_name: String,
    pub vm: String,
    pub host: String,
    pub network: String,
    pub point_id: String,
    pub point_kind: String,
    pub point_time: u64,
    pub point_age_ms: u64,
    pub started_at: u64,
    pub time_to_power_on_ms: Option<u64>,
    pub checks: Vec<DrillCheckRow>,
    pub cleaned_at: Option<u64>,
    pub cleanup_job: Option<String>,
    pub notes: Option<String>,
    pub started_by: Option<String>,
    pub cleaned_by: Option<String>,
    /// `running`, `checks-failed`, `not-running` or `cleaned-up` (the badge's class).
    pub status: String,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct DrillCheckRow {
    pub name: String,
    pub passed: bool,
    pub detail: String,
}

/// A network of the primary site and whether drills may use it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct NetworkRow {
    pub name: String,
    pub isolated: bool,
    pub vcenter: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct InitialSync {
    pub job: String,
    /// (examined, total, sent) as last reported by the worker.
    pub reported: Option<(u64, u64, u64)>,
    pub elapsed_s: u64,
    pub bytes_to_move: u64,
    pub eta_s: Option<u64>,
}

/// A request's parameters as the dialogs collect them.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct ActionInput {
    pub master_target: Option<String>,
    pub process_server: Option<String>,
    pub datastore: Option<String>,
    /// `latest-processed`, `latest`, `latest-app-consistent` or a point id.
    pub point: Option<String>,
    /// Test failover: the isolated network.
    #[serde(default)]
    pub network: Option<String>,
    /// Test failover cleanup: the operator's notes for the drill report.
    #[serde(default)]
    pub notes: Option<String>,
    /// Reprotect: minutes recovery points are kept, between app-consistent points, and the RPO threshold.
    #[serde(default)]
    pub retention_min: Option<u32>,
    #[serde(default)]
    pub app_consistent_every_min: Option<u32>,
    #[serde(default)]
    pub rpo_threshold_min: Option<u32>,
    /// Split-brain: why the chosen copy wins (kept with the other copy's blocks).
    #[serde(default)]
    pub reason: Option<String>,
}

/// An item's protection settings as the item page shows them: chosen (none: the vault's default) and effective.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct ProtectionView {
    pub retention_min: Option<u32>,
    pub app_consistent_every_min: Option<u32>,
    pub rpo_threshold_min: Option<u32>,
    pub effective_retention_min: u64,
    pub effective_app_consistent_every_min: u64,
    pub effective_rpo_threshold_min: u64,
    /// The newest point's age against the threshold, while the item replicates.
    pub rpo_breached: bool,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CheckRow {
    pub rule: String,
    pub check: String,
    pub passed: bool,
    pub message: String,
    pub action: String,
}

/// One item of a bulk re-protect's dry run: whether it would start, and if not the first reason; what it moves.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct BulkDryRow {
    pub id: String,
    pub allowed: bool,
    /// The first failed check: sentence and what to do, with its rule.
    pub why_not: Option<Refused>,
    pub bytes_to_move: u64,
    pub eta_seconds: Option<u64>,
}

/// The dry run shown before confirming.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct DryRunView {
    pub allowed: bool,
    pub location: Option<String>,
    pub location_note: Option<String>,
    pub transfer: Option<String>,
    pub bytes_to_move: u64,
    pub eta_seconds: Option<u64>,
    pub target_host: Option<String>,
    pub target_datastore: Option<String>,
    pub point: Option<PointRow>,
    pub checks: Vec<CheckRow>,
    pub tasks: Vec<String>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TaskRow {
    pub name: String,
    pub state: String,
    pub attempts: i64,
    pub bytes: i64,
    pub started_at: Option<u64>,
    pub finished_at: Option<u64>,
    pub error: Option<String>,
    pub action: Option<String>,
    /// While it runs: bytes of the disk examined so far, and the total.
    pub progress: Option<(u64, u64)>,
    /// After a failure worth retrying: when the next attempt starts.
    pub next_attempt_at: Option<u64>,
    /// A recovery plan's task is one VM's failover: that VM's own steps (name, bytes, milliseconds).
    pub steps: Vec<(String, u64, u64)>,
    /// A cycle run by the site agents: "sender → receiver", and the bytes on the wire (TLS included).
    pub link: Option<(String, u64)>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct JobRow {
    pub id: String,
    pub kind: String,
    pub target: String,
    /// `item` or `plan`.
    pub target_kind: String,
    pub state: String,
    pub created_at: u64,
    pub started_at: Option<u64>,
    pub finished_at: Option<u64>,
    pub error: Option<String>,
    pub action: Option<String>,
    pub allowed_actions: Vec<String>,
    pub tasks: Vec<TaskRow>,
}

/// What a job's page tells a teammate who opens its link: what it is in words, who started it and why, the point
/// and the data loss chosen, and what the item allows next.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct JobStory {
    /// "Failover of web01", "Plan failover of ERP".
    pub title: String,
    /// "admin (Administrator)".
    pub started_by: Option<String>,
    /// The reason typed when it was started.
    pub reason: Option<String>,
    /// "app-consistent point of 2026-12-07 10:31:02 UTC".
    pub point: Option<String>,
    pub data_loss_ms: Option<u64>,
    /// Once the job has ended: the item's operations allowed now, as the item page offers them.
    pub next: Vec<String>,
    /// The item whose operations `next` names.
    pub item: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct JobPage {
    pub rows: Vec<JobRow>,
    pub total: usize,
    pub page: usize,
    pub per_page: usize,
}

/// One table of the infrastructure page.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Section {
    pub title: String,
    pub columns: Vec<String>,
    pub rows: Vec<Vec<String>>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct InfraView {
    pub sections: Vec<Section>,
    pub networks: Vec<NetworkRow>,
    /// The demo estate's datastores, and whether each is full (a fault knob).
    pub datastores: Vec<(String, bool)>,
    pub items: Vec<String>,
    pub vcenter_connected: bool,
    pub master_target_snapshots: u32,
    pub agent_registration_delay_min: u64,
}

/// A site agent as the Infrastructure page lists it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct AgentRow {
    pub id: String,
    pub name: String,
    /// "Process server" or "Master target".
    pub role: String,
    /// "cloud" or "on-premises".
    pub site: String,
    /// `online`, `offline`, `awaiting-agent`, `enrollment-expired`, `revoked` (the badge's class).
    pub state: String,
    pub state_title: String,
    pub last_heartbeat_at: Option<u64>,
    pub version: Option<String>,
    pub disks: usize,
    pub free_bytes: Option<u64>,
    /// Bytes per second it may send on its replication links; none: uncapped.
    pub rate_cap: Option<u64>,
    /// Replication streams it runs now, and its bytes per second on the wire over the last ten minutes.
    pub streams: u32,
    pub throughput: Option<u64>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct AgentsView {
    pub rows: Vec<AgentRow>,
    pub ca_fingerprint: String,
}

/// A site connection (a vCenter or a storage account) as the Infrastructure page shows it: never its credential.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ConnectionRow {
    pub id: String,
    /// "vCenter Server" or "Azure storage account".
    pub kind: String,
    pub name: String,
    pub url: String,
    /// The vCenter account, or the container.
    pub detail: String,
    /// "password", "account key" or "SAS".
    pub credential: String,
    pub thumbprint: Option<String>,
    pub checked_at: u64,
    pub last_ok_at: Option<u64>,
    pub last_error: Option<String>,
    /// One line: the product and the counts it reported.
    pub summary: String,
    /// (name, cluster, connection state, in maintenance)
    pub hosts: Vec<(String, String, String, bool)>,
    /// (name, type, free bytes, capacity bytes, accessible)
    pub datastores: Vec<(String, String, u64, u64, bool)>,
    /// (name, power, host, disks)
    pub vms: Vec<(String, String, String, Vec<String>)>,
    pub blobs: Vec<String>,
    /// An Azure subscription's VMs: (name, provisioning state, disks)
    pub cloud_vms: Vec<(String, String, Vec<String>)>,
}

/// A new enrollment: its token and the command to run, shown once.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct EnrolledView {
    pub name: String,
    pub token: String,
    pub command: String,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PlanRow {
    pub id: String,
    pub name: String,
    /// Ordered groups of items.
    pub groups: Vec<Vec<ItemRow>>,
    /// Failover choices for the whole plan, each with what it would pick, or the refusal.
    pub choices: Vec<PlanChoiceRow>,
    pub jobs: Vec<JobRow>,
    /// The networks a plan's drill may use (the plan page only).
    #[serde(default)]
    pub networks: Vec<Choice>,
    /// How many of its items have a test VM now.
    #[serde(default)]
    pub drilled: usize,
    /// What the plan's reprotect offers (the plan page only).
    #[serde(default)]
    pub reprotect: PlanReprotectOptions,
    /// What the plan's reprotect gives each item (minutes; none: the item's own).
    #[serde(default)]
    pub protection: PlanProtection,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct PlanProtection {
    pub retention_min: Option<u32>,
    pub app_consistent_every_min: Option<u32>,
    pub rpo_threshold_min: Option<u32>,
}

impl PlanProtection {
    /// The settings chosen, in words ("" when none is).
    pub fn words(&self) -> String {
        [
            ("recovery points kept", self.retention_min),
            ("an app-consistent point every", self.app_consistent_every_min),
            ("RPO threshold", self.rpo_threshold_min),
        ]
        .iter()
        .filter_map(|(what, v)| v.map(|m| format!("{what} {m} min")))
        .collect::<Vec<_>>()
        .join(", ")
    }
}

/// What a plan's reprotect offers: master targets of each operating system, the cloud's process servers, and
/// datastores for items whose original VM is gone.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct PlanReprotectOptions {
    pub windows_master_targets: Vec<Choice>,
    pub linux_master_targets: Vec<Choice>,
    pub process_servers: Vec<Choice>,
    pub datastores: Vec<Choice>,
}

/// A plan reprotect's dry run: whether it may start, why not, and each item's master target, location and data.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PlanPreviewView {
    pub allowed: bool,
    pub refusals: Vec<Refused>,
    pub items: Vec<PlanPreviewLine>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PlanPreviewLine {
    pub group: usize,
    pub item: String,
    pub master_target: String,
    pub location: String,
    pub transfer: String,
    pub bytes: u64,
    pub allowed: bool,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PlanChoiceRow {
    pub choice: String,
    pub label: String,
    /// (item, point id, point time) per item, or the rule that refuses the plan.
    pub points: Vec<(String, String, u64)>,
    pub refused: Option<Refused>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct AuditRow {
    pub at: u64,
    pub user: String,
    pub role: String,
    pub action: String,
    pub target: String,
    pub reason: Option<String>,
    pub job_id: Option<String>,
    pub outcome: String,
    pub detail: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct AuditPage {
    pub rows: Vec<AuditRow>,
    pub total: i64,
    pub page: usize,
    pub per_page: usize,
}

/// One item's RPO over the overview's window, against its alert threshold.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RpoSeries {
    pub item: String,
    /// (minutes ago, RPO seconds): the age of the newest recovery point at that minute; none before the first.
    pub samples: Vec<(u32, u64)>,
    /// The RPO above which the item alerts (its own setting or the default), seconds.
    pub threshold_s: u64,
}

/// The overview: counts, running jobs, attention, and each item's RPO over the last hours.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct OverviewData {
    pub total: usize,
    pub by_state: Vec<(String, usize)>,
    pub by_health: Vec<(String, usize)>,
    pub attention: Vec<(String, String)>,
    /// How many items need attention in all (`attention` lists the first 20).
    pub needing_attention: usize,
    pub running: Vec<JobRow>,
    /// Replicating items' RPO over the window, at most 12 items.
    pub rpo: Vec<RpoSeries>,
    pub rpo_window_min: u32,
    /// The newest drill: its id, the item's name, when it started.
    pub last_drill: Option<(String, String, u64)>,
    /// Alerts not resolved yet: (open, of them critical).
    pub open_alerts: (usize, usize),
    /// When the overview was made, for "N days ago".
    pub now: u64,
}

/// An alert as the portal lists it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct AlertRow {
    pub id: String,
    /// `rpo-breached`, `connection-failing`, `agent-offline`, `datastore-nearly-full`.
    pub kind: String,
    pub subject: String,
    /// `warning` or `critical`.
    pub severity: String,
    pub message: String,
    pub started_at: u64,
    pub resolved_at: Option<u64>,
    pub acknowledged_at: Option<u64>,
    pub acknowledged_by: Option<String>,
    /// `open`, `acknowledged`, `resolved`.
    pub state: String,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct WebhookRow {
    pub id: String,
    pub url: String,
    pub events: Vec<String>,
    pub created_at: u64,
    pub created_by: String,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct DeliveryRow {
    pub id: String,
    pub event: String,
    pub state: String,
    pub attempts: i64,
    pub last_status: Option<i64>,
    pub last_error: Option<String>,
    pub created_at: u64,
    pub delivered_at: Option<u64>,
}
