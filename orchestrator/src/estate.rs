//! The local estate (embedded default): both sites as folders under the data dir, with real disk images — VMDK on
//! the primary site, fixed VHD in the cloud — and an inventory document. The runtime reads it to build the
//! snapshot the rules decide on, and the workflows change it.
//!
//! Recovery points are not stored here: they are read from the replicator's journal on the replica disks, so the
//! estate never disagrees with the bytes.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::domain::*;
use crate::lifecycle::State;

/// One replicated item with what the estate knows beyond the domain: where its disks are and what is powered on.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ItemRecord {
    pub item: ReplicatedItem,
    /// Cloud disks (fixed VHD), relative to the estate root.
    pub cloud_disks: Vec<String>,
    /// The on-premises VM's disks as attached now (VMDK), relative to the estate root.
    pub onprem_disks: Vec<String>,
    /// The replica disks that reprotect keeps in sync (VMDK), relative to the estate root.
    pub replica_disks: Vec<String>,
    pub cloud_power: bool,
    pub onprem_power: bool,
    /// "enabled"/"disabled" (Windows) or "installed"/"uninstalled" (Linux) (R-T1).
    pub vmware_tools: String,
    /// The recovery point the last failback materialised.
    pub failed_back_point: Option<String>,
    /// When continuous replication last ran a cycle, and an app-consistent one.
    #[serde(default)]
    pub last_cycle_at: Millis,
    #[serde(default)]
    pub last_app_cycle_at: Millis,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RecoveryPlan {
    pub id: String,
    pub name: String,
    /// Ordered groups of item ids: a group starts when the previous one has finished.
    pub groups: Vec<Vec<String>>,
}

/// Fault knobs for tests and demos.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Faults {
    /// Minutes an agent takes to register after the VM boots (R-A1).
    pub agent_registration_delay_min: u64,
}

/// Changes to the estate for drills, demos and tests: the failures the article warns about, on demand.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FaultKnobs {
    pub vcenter_connected: Option<bool>,
    pub master_target_snapshots: Option<u32>,
    /// Marks the agent of this item registered with the configuration server.
    pub register_agent: Option<String>,
    pub delete_original_vm: Option<String>,
    pub agent_registration_delay_min: Option<u64>,
    /// Leaves no free space on this datastore.
    pub fill_datastore: Option<String>,
    pub guest_bytes_per_tick: Option<u64>,
    pub crash_consistent_every_ms: Option<u64>,
    pub app_consistent_every_ms: Option<u64>,
    /// Caps replication at this many bytes per second; 0 lifts the cap.
    pub replication_bytes_per_s: Option<u64>,
}

impl FaultKnobs {
    pub fn apply(&self, doc: &mut EstateDoc) -> Result<(), EstateError> {
        if let Some(ds) = &self.fill_datastore {
            let d = doc.inventory.datastores.iter_mut().find(|d| &d.id == ds);
            d.ok_or_else(|| EstateError::UnknownItem(format!("datastore {ds}")))?.free_bytes = 0;
        }
        if let Some(id) = &self.register_agent {
            doc.item_mut(id)?.item.agent_registered = true;
        }
        if let Some(id) = &self.delete_original_vm {
            let r = doc.item_mut(id)?;
            if let Some(vm) = &mut r.item.onprem {
                vm.exists = false;
            }
            r.onprem_disks.clear();
        }
        if let Some(c) = self.vcenter_connected {
            doc.inventory.vcenters.iter_mut().for_each(|v| v.connected = c);
        }
        if let Some(n) = self.master_target_snapshots {
            doc.inventory.master_targets.iter_mut().for_each(|m| m.snapshots = n);
        }
        if let Some(d) = self.agent_registration_delay_min {
            doc.faults.agent_registration_delay_min = d;
        }
        if let Some(b) = self.guest_bytes_per_tick {
            doc.replication.guest_bytes_per_tick = b;
        }
        if let Some(ms) = self.crash_consistent_every_ms {
            doc.replication.crash_consistent_every_ms = ms;
        }
        if let Some(ms) = self.app_consistent_every_ms {
            doc.replication.app_consistent_every_ms = ms;
        }
        if let Some(rate) = self.replication_bytes_per_s {
            doc.replication.replication_bytes_per_s = (rate > 0).then_some(rate);
        }
        Ok(())
    }
}

/// Continuous replication of protected items, and the simulated guests' writes.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ReplicationPolicy {
    /// A crash-consistent point this often.
    pub crash_consistent_every_ms: Millis,
    /// An app-consistent point (guest quiesced) this often.
    pub app_consistent_every_ms: Millis,
    /// Bytes each running VM writes per worker tick (about a second), so there are real changes to replicate.
    pub guest_bytes_per_tick: u64,
    /// Cap on the replication rate of every cycle, as a congested process server link would impose; none when
    /// absent.
    #[serde(default)]
    pub replication_bytes_per_s: Option<u64>,
}

impl Default for ReplicationPolicy {
    fn default() -> Self {
        ReplicationPolicy {
            crash_consistent_every_ms: 30_000,
            app_consistent_every_ms: 5 * MINUTE,
            guest_bytes_per_tick: 64 << 10,
            replication_bytes_per_s: None,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct EstateDoc {
    pub inventory: Inventory,
    pub items: Vec<ItemRecord>,
    pub plans: Vec<RecoveryPlan>,
    pub faults: Faults,
    #[serde(default)]
    pub replication: ReplicationPolicy,
}

impl EstateDoc {
    /// The record of item `id`, to change it.
    pub fn item_mut(&mut self, id: &str) -> Result<&mut ItemRecord, EstateError> {
        self.items.iter_mut().find(|r| r.item.id == id).ok_or_else(|| EstateError::UnknownItem(id.to_owned()))
    }
}

#[derive(Debug, thiserror::Error)]
pub enum EstateError {
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error("{path}: the estate inventory is unreadable: {problem}")]
    Corrupt { path: PathBuf, problem: String },
    #[error("no replicated item {0}")]
    UnknownItem(String),
    #[error(transparent)]
    Replicator(#[from] replicator::Error),
}

/// The estate on disk. Read-modify-write goes through `update`, serialised by one lock per process.
#[derive(Clone, Debug)]
pub struct Estate {
    pub root: PathBuf,
    lock: Arc<tokio::sync::Mutex<()>>,
}

impl Estate {
    pub fn new(root: &Path) -> Estate {
        Estate { root: root.to_path_buf(), lock: Arc::new(tokio::sync::Mutex::new(())) }
    }

    fn doc_path(&self) -> PathBuf {
        self.root.join("estate.json")
    }

    pub fn exists(&self) -> bool {
        self.doc_path().is_file()
    }

    pub fn path(&self, rel: &str) -> PathBuf {
        self.root.join(rel)
    }

    pub fn load(&self) -> Result<EstateDoc, EstateError> {
        let p = self.doc_path();
        let bytes = std::fs::read(&p).map_err(|source| EstateError::Io { path: p.clone(), source })?;
        serde_json::from_slice(&bytes).map_err(|e| EstateError::Corrupt { path: p, problem: e.to_string() })
    }

    pub fn save(&self, doc: &EstateDoc) -> Result<(), EstateError> {
        std::fs::create_dir_all(&self.root).map_err(|source| EstateError::Io { path: self.root.clone(), source })?;
        let p = self.doc_path();
        let body = serde_json::to_vec_pretty(doc).expect("the estate serialises");
        replicator::fileio::write_atomic(&p, &body).map_err(|source| EstateError::Io { path: p, source })
    }

    /// The lock the nodes sharing this estate folder take around a read-modify-write.
    fn file_lock(&self) -> Result<replicator::fileio::FileLock, EstateError> {
        std::fs::create_dir_all(&self.root).map_err(|source| EstateError::Io { path: self.root.clone(), source })?;
        let lock_path = self.root.join("estate.lock");
        let file = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .map_err(|source| EstateError::Io { path: lock_path.clone(), source })?;
        replicator::fileio::FileLock::exclusive(file).map_err(|source| EstateError::Io { path: lock_path, source })
    }

    /// Runs `seed` if the estate has no document yet — once, even when several nodes start together. Returns
    /// whether it ran.
    pub async fn seed_once(&self, seed: impl FnOnce(&Estate) -> Result<(), EstateError>) -> Result<bool, EstateError> {
        let _guard = self.lock.lock().await;
        let _file_lock = self.file_lock()?;
        if self.exists() {
            return Ok(false);
        }
        seed(self)?;
        Ok(true)
    }

    /// Applies `f` to the document and saves it, under the estate's lock: one per process for its tasks, and a
    /// file lock for the nodes that share the estate folder.
    pub async fn update<T>(&self, f: impl FnOnce(&mut EstateDoc) -> Result<T, EstateError>) -> Result<T, EstateError> {
        let _guard = self.lock.lock().await;
        let _file_lock = self.file_lock()?;
        let mut doc = self.load()?;
        let out = f(&mut doc)?;
        self.save(&doc)?;
        Ok(out)
    }

    /// The item as the rules see it at `now`, with its recovery points read from the replica's journal and its
    /// agent registered once the registration delay after boot has passed (R-A1).
    pub fn view(&self, doc: &EstateDoc, id: &str, now: Millis) -> Result<ReplicatedItem, EstateError> {
        let rec = doc.items.iter().find(|r| r.item.id == id).ok_or_else(|| EstateError::UnknownItem(id.to_owned()))?;
        let mut item = rec.item.clone();
        item.recovery_points = self.points(rec)?;
        let delay = doc.faults.agent_registration_delay_min * MINUTE;
        item.agent_registered |= item.booted_at.is_some_and(|b| now >= b + delay);
        Ok(item)
    }

    /// Points common to all disks of the item (multi-disk consistency: each point id exists on every disk).
    pub fn points(&self, rec: &ItemRecord) -> Result<Vec<RecoveryPoint>, EstateError> {
        let disks = match rec.item.state {
            State::ProtectedToCloud | State::FailoverToCloudInProgress | State::ReprotectToCloudInProgress => {
                &rec.cloud_disks
            }
            _ => &rec.replica_disks,
        };
        let mut common: Option<Vec<RecoveryPoint>> = None;
        for d in disks {
            let path = self.path(d);
            if !path.exists() {
                return Ok(Vec::new());
            }
            let img = replicator::DiskImage::open(&path)?;
            let journal = replicator::journal::Journal::open(&img.state_dir().join("points"))?;
            let pts: Vec<RecoveryPoint> = journal
                .points()
                .iter()
                .map(|p| RecoveryPoint {
                    id: p.id.clone(),
                    time: p.created_at_ms,
                    kind: match p.consistency {
                        replicator::Consistency::AppConsistent => PointKind::AppConsistent,
                        replicator::Consistency::CrashConsistent => PointKind::CrashConsistent,
                    },
                })
                .collect();
            common = Some(match common {
                None => pts,
                Some(prev) => prev.into_iter().filter(|p| pts.iter().any(|q| q.id == p.id)).collect(),
            });
        }
        Ok(common.unwrap_or_default())
    }
}
