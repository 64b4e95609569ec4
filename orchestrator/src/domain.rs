//! The estate as the rules see it: a snapshot handed in by the runtime, never read from disk here.

use serde::{Deserialize, Serialize};

/// Milliseconds since the Unix epoch: the clock is an input.
pub type Millis = u64;

pub const MINUTE: Millis = 60_000;

/// The name a unit enum variant has on the wire (its serde name, e.g. `protected-to-primary`); empty for values
/// that do not serialise to a string.
pub fn wire_name<T: Serialize>(v: &T) -> String {
    serde_json::to_value(v).ok().and_then(|v| v.as_str().map(str::to_owned)).unwrap_or_default()
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum OsFamily {
    Windows,
    Linux,
}

/// A guest or server operating system, e.g. Windows "Windows Server 2008 R2 SP1" or Linux "Ubuntu 22.04".
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Os {
    pub family: OsFamily,
    pub name: String,
}

impl Os {
    /// Windows Server 2008 R2 with Service Pack 1, however the inventory spells it.
    pub fn is_windows_2008_r2_sp1(&self) -> bool {
        let n = self.name.to_ascii_lowercase().replace(' ', "");
        self.family == OsFamily::Windows && n.contains("2008r2") && n.contains("sp1")
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum MachineType {
    VmwareVm,
    PhysicalServer,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Site {
    /// On-premises: vCenter, ESXi hosts, configuration server, master targets.
    Primary,
    /// The cloud.
    Recovery,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Hypervisor {
    Esxi,
    HyperV,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum DatastoreKind {
    Vmfs,
    Vsan,
    Rdm,
    /// NFS 3 or 4.1, as vCenter reports it.
    Nfs,
    /// Any other type vCenter reports (vVols, PMem, a simulator's local folder …).
    Other,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Health {
    Normal,
    Warning,
    Critical,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConfigurationServer {
    pub id: String,
    pub ip_address: String,
    /// VMs registered in the configuration server's database. A set: R-C1 looks every item up in it, and a list
    /// made that quadratic (5 000 items: a fifth of the items API's time in string compares).
    pub registered_vms: std::collections::BTreeSet<String>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct VCenter {
    pub id: String,
    pub connected: bool,
    /// The configuration server the vCenter was added to.
    pub configuration_server: String,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Host {
    pub id: String,
    /// `None` for a standalone ESXi host.
    pub vcenter: Option<String>,
    pub hypervisor: Hypervisor,
    /// Discovery by the configuration server is complete.
    pub discovered: bool,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Datastore {
    pub id: String,
    pub kind: DatastoreKind,
    /// Hosts that can reach the datastore.
    pub hosts: Vec<String>,
    pub capacity_bytes: u64,
    pub free_bytes: u64,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct MasterTarget {
    pub id: String,
    pub os: OsFamily,
    /// The ESXi host the master target runs on.
    pub host: String,
    pub snapshots: u32,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProcessServer {
    pub id: String,
    pub site: Site,
    /// Replication rate the dry run's ETA assumes.
    pub bandwidth_bytes_per_s: u64,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CloudVm {
    pub id: String,
    pub resource_group: String,
    /// The resource group the VM was failed over into.
    pub original_resource_group: String,
    pub deleted: bool,
    pub migration_completed: bool,
    pub running: bool,
    /// The storage-account connection whose container holds the VM's disks as page blobs; none while its disks
    /// are the local estate's files.
    #[serde(default)]
    pub storage_account: Option<String>,
    /// The page blobs of its disks in that container.
    #[serde(default)]
    pub blobs: Vec<String>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct OnPremDisk {
    pub id: String,
    pub datastore: String,
    pub size_bytes: u64,
    /// Attached to the on-premises VM (matters for vSAN and RDM disks, R-L7).
    pub attached: bool,
}

/// The VM on the primary site the item came from.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct OnPremVm {
    pub id: String,
    pub host: String,
    /// Whether the VM still exists on-premises (decides original vs alternate location).
    pub exists: bool,
    pub disks: Vec<OnPremDisk>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum PointKind {
    CrashConsistent,
    AppConsistent,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RecoveryPoint {
    /// Shared by every VM of a replication group for multi-VM consistent points.
    pub id: String,
    pub time: Millis,
    pub kind: PointKind,
}

/// A machine protected by the vault.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReplicatedItem {
    pub id: String,
    pub name: String,
    pub machine: MachineType,
    pub os: Os,
    pub state: crate::lifecycle::State,
    pub health: Health,
    /// What made the health worse than normal, newest first.
    #[serde(default)]
    pub health_errors: Vec<String>,
    /// Percentage of the initial sync done while protected recovery → primary.
    pub initial_sync_percent: u8,
    pub onprem: Option<OnPremVm>,
    /// The vCenter and configuration server the item was protected from (R-L3).
    pub original_vcenter: Option<String>,
    pub original_configuration_server: String,
    pub cloud_vm: Option<CloudVm>,
    /// Oldest first.
    pub recovery_points: Vec<RecoveryPoint>,
    pub replication_group: Option<String>,
    /// Chosen at reprotect: the master target and process server the item replicates through.
    pub master_target: Option<String>,
    pub process_server: Option<String>,
    /// When the on-premises VM last booted, and whether its agent has registered since (R-A1).
    pub booted_at: Option<Millis>,
    pub agent_registered: bool,
    /// Bytes of the item's disks, for estimates.
    pub disk_bytes: u64,
    /// The last job on the item that failed, until the next one starts or succeeds: what happened and what to do.
    #[serde(default)]
    pub last_failure: Option<JobFailure>,
    /// The test failover whose VM exists now, until it is cleaned up (a real failover cleans it up first).
    #[serde(default)]
    pub drill: Option<LiveDrill>,
    /// How its recovery points are kept and taken, and when its RPO alerts.
    #[serde(default)]
    pub protection: ProtectionSettings,
    /// While in split-brain: when it was found and each copy's last write.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub split_brain: Option<SplitBrain>,
    /// The divergent blocks of copies that lost a split-brain, kept until the next commit.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub kept_copies: Vec<KeptCopy>,
    /// The last verification of the on-premises replica against its recorded block hashes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub verification: Option<ReplicaVerification>,
}

/// What the last verification of an item's on-premises replica found.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReplicaVerification {
    /// The verifying job's id.
    pub job: String,
    pub finished_at: Millis,
    pub blocks: u64,
    pub bytes_read: u64,
    /// Blocks whose bytes differed from their recorded hash (0: the replica is intact).
    pub mismatched_blocks: u64,
    /// The disks with differing blocks (or whose recorded hashes disagree with their newest point's digest).
    pub damaged_disks: Vec<String>,
    /// When the next replication cycle compared the whole replica with the cloud copy and rewrote those blocks.
    pub repaired_at: Option<Millis>,
}

impl ReplicaVerification {
    /// Damage that no cycle has rewritten yet: a failback now could boot from it.
    pub fn damaged(&self) -> bool {
        !self.damaged_disks.is_empty() && self.repaired_at.is_none()
    }
}

/// Both copies of an item changed after a failover: what was seen, for the operator who chooses the winner.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SplitBrain {
    pub detected_at: Millis,
    /// The state the item was in: protected to on-premises (the on-premises VM was powered on outside Homeward) or
    /// failed back waiting for commit (the cloud VM was started again).
    pub from: crate::lifecycle::State,
    /// The copy that ran when it should not have.
    pub intruder: Site,
    /// When each copy was last seen written (a running VM writes); none when it has not run since the split was
    /// found.
    pub cloud_last_write_at: Option<Millis>,
    pub onprem_last_write_at: Option<Millis>,
}

/// What a split-brain's losing copy had that the winner has not: its differing blocks, at their offsets.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeptCopy {
    /// The resolving job's id.
    pub job: String,
    /// The copy that lost.
    pub site: Site,
    pub kept_at: Millis,
    pub reason: String,
    /// One file per disk (relative to the estate root): the loser's differing blocks at their offsets, the rest
    /// unallocated.
    pub files: Vec<String>,
    /// Per disk (relative to the estate root): the offsets of the kept blocks, little-endian u64s, so a failover can
    /// lay exactly those blocks over a recovery point. Empty for copies kept before there were maps: they cannot be
    /// chosen as a point.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub block_maps: Vec<String>,
    pub blocks: u64,
    pub bytes: u64,
}

impl KeptCopy {
    /// Whether a failover can use it: a block map per disk file.
    pub fn selectable(&self) -> bool {
        !self.files.is_empty() && self.block_maps.len() == self.files.len()
    }
}

/// Recovery points are kept this long unless an item says otherwise (Azure Site Recovery's default is a day).
pub const DEFAULT_RETENTION_MIN: u32 = 24 * 60;
/// An item whose newest point is older than this alerts, unless it says otherwise.
pub const DEFAULT_RPO_THRESHOLD_MIN: u32 = 15;

/// How an item is protected: how long its recovery points are kept, how often an app-consistent one is taken, and
/// the RPO past which it alerts. `None` is the vault's default. Minutes, as Azure Site Recovery's policies count.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProtectionSettings {
    #[serde(default)]
    pub retention_min: Option<u32>,
    #[serde(default)]
    pub app_consistent_every_min: Option<u32>,
    #[serde(default)]
    pub rpo_threshold_min: Option<u32>,
}

impl ProtectionSettings {
    pub fn retention_ms(&self) -> Millis {
        Millis::from(self.retention_min.unwrap_or(DEFAULT_RETENTION_MIN)) * MINUTE
    }

    /// How often an app-consistent point is taken: the item's choice, else the vault's replication policy.
    pub fn app_consistent_every_ms(&self, vault_default: Millis) -> Millis {
        self.app_consistent_every_min.map_or(vault_default, |m| Millis::from(m) * MINUTE)
    }

    pub fn rpo_threshold_ms(&self) -> Millis {
        Millis::from(self.rpo_threshold_min.unwrap_or(DEFAULT_RPO_THRESHOLD_MIN)) * MINUTE
    }

    /// The settings `other` chooses, over these.
    pub fn with(&self, other: &ProtectionSettings) -> ProtectionSettings {
        ProtectionSettings {
            retention_min: other.retention_min.or(self.retention_min),
            app_consistent_every_min: other.app_consistent_every_min.or(self.app_consistent_every_min),
            rpo_threshold_min: other.rpo_threshold_min.or(self.rpo_threshold_min),
        }
    }

    /// What is wrong with the settings, in words that say what to enter instead.
    pub fn problems(&self) -> Vec<String> {
        let mut out = Vec::new();
        let range = |name: &str, v: Option<u32>, max: u32, out: &mut Vec<String>| {
            if let Some(v) = v {
                if v == 0 || v > max {
                    out.push(format!("{name} is {v} minutes; enter 1 to {max}"));
                }
            }
        };
        range("the retention", self.retention_min, 30 * 24 * 60, &mut out);
        range("the app-consistent frequency", self.app_consistent_every_min, 12 * 60, &mut out);
        range("the RPO threshold", self.rpo_threshold_min, 24 * 60, &mut out);
        if let (Some(app), retention) =
            (self.app_consistent_every_min, self.retention_min.unwrap_or(DEFAULT_RETENTION_MIN))
        {
            if app > retention {
                out.push(format!(
                    "the retention ({retention} minutes) is shorter than the app-consistent frequency ({app} \
                     minutes): at times no app-consistent point would be left; keep points at least as long"
                ));
            }
        }
        out
    }
}

/// A test failover's VM on the primary site, while it exists: a copy of the item at a recovery point, on an
/// isolated network, beside the replication that goes on.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LiveDrill {
    /// The test failover's job id; the drill report's link.
    pub id: String,
    /// The test VM's name.
    pub vm: String,
    pub host: String,
    pub network: String,
    pub point: RecoveryPoint,
    pub started_at: Millis,
    /// The test VM's disks (relative to the estate root, or absolute in a connected vCenter's datastore).
    pub disks: Vec<String>,
    /// The job whose split-brain's kept blocks were laid over the point (SB-3), if the drill chose them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kept_copy: Option<String>,
}

/// A failed job as its item shows it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct JobFailure {
    pub job: String,
    /// The operation in words, e.g. "failover".
    pub operation: String,
    /// The task that failed, as the job names it.
    pub task: String,
    pub error: String,
    pub recommended_action: String,
    pub at: Millis,
}

/// A VM network of the primary site. Drills run only on networks an Administrator marked isolated: a test VM is a
/// second copy of a production machine, with its name and addresses.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Network {
    pub id: String,
    pub isolated: bool,
    /// The connected vCenter that reports it; none for the local estate's.
    #[serde(default)]
    pub vcenter: Option<String>,
}

/// The estate around the items.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Inventory {
    pub configuration_server: Option<ConfigurationServer>,
    pub vcenters: Vec<VCenter>,
    pub hosts: Vec<Host>,
    pub datastores: Vec<Datastore>,
    pub master_targets: Vec<MasterTarget>,
    pub process_servers: Vec<ProcessServer>,
    #[serde(default)]
    pub networks: Vec<Network>,
}

impl Inventory {
    pub fn host(&self, id: &str) -> Option<&Host> {
        self.hosts.iter().find(|h| h.id == id)
    }
    pub fn vcenter(&self, id: &str) -> Option<&VCenter> {
        self.vcenters.iter().find(|v| v.id == id)
    }
    pub fn datastore(&self, id: &str) -> Option<&Datastore> {
        self.datastores.iter().find(|d| d.id == id)
    }
    pub fn master_target(&self, id: &str) -> Option<&MasterTarget> {
        self.master_targets.iter().find(|m| m.id == id)
    }
    pub fn network(&self, id: &str) -> Option<&Network> {
        self.networks.iter().find(|n| n.id == id)
    }
    pub fn process_server(&self, id: &str) -> Option<&ProcessServer> {
        self.process_servers.iter().find(|p| p.id == id)
    }
}

/// A time as people read it in messages: `2026-11-28 12:34 UTC` (the portal shows times the same way).
pub fn utc_text(ms: Millis) -> String {
    match time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000) {
        Ok(t) => {
            format!("{:04}-{:02}-{:02} {:02}:{:02} UTC", t.year(), u8::from(t.month()), t.day(), t.hour(), t.minute())
        }
        Err(_) => format!("{ms} ms after 1970"),
    }
}
