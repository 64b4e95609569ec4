//! The local estate (embedded default): both sites as folders under the estate folder, with real disk images —
//! VMDK on the primary site, fixed VHD in the cloud — described in the vault's database (inventory, replicated
//! items with their lifecycle state, recovery plans, replication policy, fault knobs). The runtime reads it to
//! build the snapshot the rules decide on, and the workflows change it, each change one transaction that every
//! node sees.
//!
//! Recovery points are not stored here: they are read from the replicator's journal on the replica disks, so the
//! estate never disagrees with the bytes.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use serde::{Deserialize, Serialize};

use crate::db::Db;
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
    /// When Homeward last powered the on-premises VM on or off: a vCenter report from before then says nothing new.
    #[serde(default)]
    pub onprem_power_set_at: Millis,
    /// "enabled"/"disabled" (Windows) or "installed"/"uninstalled" (Linux) (R-T1).
    pub vmware_tools: String,
    /// The recovery point the last failback materialised.
    pub failed_back_point: Option<String>,
    /// When continuous replication last ran a cycle, and an app-consistent one.
    #[serde(default)]
    pub last_cycle_at: Millis,
    #[serde(default)]
    pub last_app_cycle_at: Millis,
    /// The storage-account connection whose container holds the cloud VM's disks as page blobs; the cloud disks
    /// above are then this node's cache of them (see `recovery_site`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cloud_storage: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RecoveryPlan {
    pub id: String,
    pub name: String,
    /// Ordered groups of item ids: a group starts when the previous one has finished.
    pub groups: Vec<Vec<String>>,
    /// What the plan's reprotect gives each item unless it is given its own settings.
    #[serde(default)]
    pub protection: crate::domain::ProtectionSettings,
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
    /// Gives this datastore half its capacity free again.
    #[serde(default)]
    pub free_datastore: Option<String>,
    pub guest_bytes_per_tick: Option<u64>,
    pub crash_consistent_every_ms: Option<u64>,
    pub app_consistent_every_ms: Option<u64>,
    /// Caps replication at this many bytes per second; 0 lifts the cap.
    pub replication_bytes_per_s: Option<u64>,
    /// Starts this item's cloud VM outside Homeward, as someone in the Azure portal would.
    #[serde(default)]
    pub start_cloud_vm: Option<String>,
    /// Powers this item's on-premises VM on outside Homeward, as someone in the vSphere client would.
    #[serde(default)]
    pub start_onprem_vm: Option<String>,
}

impl FaultKnobs {
    pub fn apply(&self, doc: &mut EstateDoc) -> Result<(), EstateError> {
        if let Some(ds) = &self.fill_datastore {
            let d = doc.inventory.datastores.iter_mut().find(|d| &d.id == ds);
            d.ok_or_else(|| EstateError::UnknownItem(format!("datastore {ds}")))?.free_bytes = 0;
        }
        if let Some(ds) = &self.free_datastore {
            let d = doc.inventory.datastores.iter_mut().find(|d| &d.id == ds);
            let d = d.ok_or_else(|| EstateError::UnknownItem(format!("datastore {ds}")))?;
            d.free_bytes = d.capacity_bytes / 2;
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
            r.onprem_power = false;
        }
        // Someone starts a VM behind Homeward's back (the Azure portal, the vSphere client): where only the other
        // copy may run, the next replication round finds a split-brain.
        if let Some(id) = &self.start_cloud_vm {
            let r = doc.item_mut(id)?;
            if r.item.cloud_vm.as_ref().is_none_or(|v| v.deleted) {
                return Err(EstateError::UnknownItem(format!("cloud VM of {id}")));
            }
            r.cloud_power = true;
        }
        if let Some(id) = &self.start_onprem_vm {
            let r = doc.item_mut(id)?;
            if !r.item.onprem.as_ref().is_some_and(|v| v.exists) || r.onprem_disks.is_empty() {
                return Err(EstateError::UnknownItem(format!("on-premises VM of {id}")));
            }
            r.onprem_power = true;
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

/// How an estate came to be at the first start.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Created {
    /// From the estate.json an earlier version kept in the folder.
    Imported,
    /// Built anew (the demo estate).
    Built,
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
    #[error(
        "the estate's {what} in the database is unreadable ({problem}); restore the vault's database from its backup"
    )]
    CorruptRow { what: String, problem: String },
    #[error("the vault has no estate yet")]
    Missing,
    #[error("no replicated item {0}")]
    UnknownItem(String),
    #[error(
        "the estate folder {} holds disks, but the vault's database has no estate: it was deleted or replaced. \
         Restore the database (homeward.db) from its backup, or point --database-url at the vault's database; to \
         start a new vault instead, move that folder away first",
        path.display()
    )]
    Orphaned { path: PathBuf },
    #[error(transparent)]
    Replicator(#[from] replicator::Error),
    #[error("database: {0}")]
    Db(#[from] sqlx::Error),
}

/// Present in the estate folder while a first start seeds it: a start that finds it knows the seeding died.
const SEEDING_MARKER: &str = ".seeding";

/// The estate: its description in the vault's database, its disks under `root`.
#[derive(Clone, Debug)]
pub struct Estate {
    pub root: PathBuf,
    pub db: Db,
    decoded: Arc<Decoded>,
}

/// The item records this process decoded last, with the JSON text each came from. A read of the whole estate
/// still fetches every row (so it sees every node's changes), but parses only the rows whose text changed: with
/// thousands of items, parsing was most of a list's cost. Keyed by the text itself, not a version: a row changed
/// by any writer, or damaged, is parsed (and refused) again.
#[derive(Debug, Default)]
struct Decoded(Mutex<HashMap<String, (String, ItemRecord)>>);

impl Decoded {
    fn items(&self, rows: Vec<ItemRow>) -> Result<Vec<ItemRecord>, EstateError> {
        // Taken out for the walk, so a concurrent read never waits on this one (it parses for itself meanwhile).
        let mut before = std::mem::take(&mut *self.0.lock().unwrap_or_else(|p| p.into_inner()));
        let mut now = HashMap::with_capacity(rows.len());
        let mut items = Vec::with_capacity(rows.len());
        for row in rows {
            let rec = match before.remove(&row.id) {
                Some((text, rec)) if text == row.record => rec,
                _ => decode(&format!("item {}", row.id), &row.record)?,
            };
            items.push(rec.clone());
            now.insert(row.id, (row.record, rec));
        }
        *self.0.lock().unwrap_or_else(|p| p.into_inner()) = now;
        Ok(items)
    }
}

crate::row! {
    struct SettingsRow {
        inventory: String,
        faults: String,
        replication: String,
    }
}

crate::row! {
    struct PlacedItemRow {
        position: i64,
        record: String,
    }
}

crate::row! {
    struct ItemRow {
        id: String,
        record: String,
    }
}

crate::row! {
    struct PlanRow {
        id: String,
        name: String,
        groups: String,
        protection: String,
    }
}

fn decode<T: serde::de::DeserializeOwned>(what: &str, json: &str) -> Result<T, EstateError> {
    serde_json::from_str(json).map_err(|e| EstateError::CorruptRow { what: what.to_owned(), problem: e.to_string() })
}

fn encode<T: Serialize>(v: &T) -> String {
    serde_json::to_string(v).expect("the estate serialises")
}

/// Reads the whole description on `conn` (inside the caller's transaction, if any).
async fn read(conn: &mut sqlx::AnyConnection, decoded: &Decoded) -> Result<EstateDoc, EstateError> {
    let settings: SettingsRow =
        sqlx::query_as("select inventory, faults, replication from estate_settings where id = 1")
            .fetch_optional(&mut *conn)
            .await?
            .ok_or(EstateError::Missing)?;
    let items: Vec<ItemRow> =
        sqlx::query_as("select id, record from estate_items order by position, id").fetch_all(&mut *conn).await?;
    let plans: Vec<PlanRow> =
        sqlx::query_as("select id, name, groups, protection from recovery_plans order by position, id")
            .fetch_all(&mut *conn)
            .await?;
    Ok(EstateDoc {
        inventory: decode("inventory", &settings.inventory)?,
        faults: decode("fault knobs", &settings.faults)?,
        replication: decode("replication policy", &settings.replication)?,
        items: decoded.items(items)?,
        plans: plans
            .into_iter()
            .map(|p| {
                Ok(RecoveryPlan {
                    groups: decode(&format!("plan {}", p.id), &p.groups)?,
                    protection: decode(&format!("plan {}'s protection", p.id), &p.protection)?,
                    id: p.id,
                    name: p.name,
                })
            })
            .collect::<Result<_, EstateError>>()?,
    })
}

async fn read_item(conn: &mut sqlx::AnyConnection, id: &str) -> Result<(ItemRecord, Inventory), EstateError> {
    let record: String = sqlx::query_scalar("select record from estate_items where id = $1")
        .bind(id)
        .fetch_optional(&mut *conn)
        .await?
        .ok_or_else(|| EstateError::UnknownItem(id.to_owned()))?;
    let inventory: String = sqlx::query_scalar("select inventory from estate_settings where id = 1")
        .fetch_optional(&mut *conn)
        .await?
        .ok_or(EstateError::Missing)?;
    Ok((decode(&format!("item {id}"), &record)?, decode("inventory", &inventory)?))
}

/// Writes what differs between `before` and `after` (every row when `before` is `None`).
async fn write(
    conn: &mut sqlx::AnyConnection,
    before: Option<&EstateDoc>,
    after: &EstateDoc,
) -> Result<(), EstateError> {
    let settings = (encode(&after.inventory), encode(&after.faults), encode(&after.replication));
    let old = before.map(|b| (encode(&b.inventory), encode(&b.faults), encode(&b.replication)));
    if old.as_ref() != Some(&settings) {
        sqlx::query(
            "insert into estate_settings (id, inventory, faults, replication, version) values (1, $1, $2, $3, 1) \
             on conflict (id) do update set inventory = $1, faults = $2, replication = $3",
        )
        .bind(&settings.0)
        .bind(&settings.1)
        .bind(&settings.2)
        .execute(&mut *conn)
        .await?;
    }
    let old_items: std::collections::HashMap<&str, (usize, &ItemRecord)> = before
        .map(|b| b.items.iter().enumerate().map(|(i, r)| (r.item.id.as_str(), (i, r))).collect())
        .unwrap_or_default();
    for (position, rec) in after.items.iter().enumerate() {
        if old_items.get(rec.item.id.as_str()).is_some_and(|(p, r)| *p == position && *r == rec) {
            continue;
        }
        sqlx::query(
            "insert into estate_items (id, position, state, health, record) values ($1, $2, $3, $4, $5) \
             on conflict (id) do update set position = $2, state = $3, health = $4, record = $5",
        )
        .bind(&rec.item.id)
        .bind(position as i64)
        .bind(wire_name(&rec.item.state))
        .bind(wire_name(&rec.item.health))
        .bind(encode(rec))
        .execute(&mut *conn)
        .await?;
    }
    let kept: std::collections::HashSet<&str> = after.items.iter().map(|r| r.item.id.as_str()).collect();
    for gone in old_items.keys().filter(|id| !kept.contains(*id)) {
        sqlx::query("delete from estate_items where id = $1").bind(*gone).execute(&mut *conn).await?;
    }
    if before.map(|b| &b.plans) != Some(&after.plans) {
        sqlx::query("delete from recovery_plans").execute(&mut *conn).await?;
        for (position, p) in after.plans.iter().enumerate() {
            sqlx::query(
                "insert into recovery_plans (id, position, name, groups, protection) values ($1, $2, $3, $4, $5)",
            )
            .bind(&p.id)
            .bind(position as i64)
            .bind(&p.name)
            .bind(encode(&p.groups))
            .bind(encode(&p.protection))
            .execute(&mut *conn)
            .await?;
        }
    }
    Ok(())
}

impl Estate {
    pub fn new(root: &Path, db: Db) -> Estate {
        Estate { root: root.to_path_buf(), db, decoded: Arc::default() }
    }

    pub fn path(&self, rel: &str) -> PathBuf {
        self.root.join(rel)
    }

    /// An `estate.json` written by an earlier version, imported at the first start.
    fn legacy_doc_path(&self) -> PathBuf {
        self.root.join("estate.json")
    }

    pub async fn exists(&self) -> Result<bool, EstateError> {
        let n: i64 = sqlx::query_scalar("select count(*) from estate_settings").fetch_one(&self.db.pool).await?;
        Ok(n > 0)
    }

    /// Bumped by every change, for readers that cache.
    pub async fn version(&self) -> Result<i64, EstateError> {
        let v: Option<i64> = sqlx::query_scalar("select version from estate_settings where id = 1")
            .fetch_optional(&self.db.pool)
            .await?;
        v.ok_or(EstateError::Missing)
    }

    pub async fn load(&self) -> Result<EstateDoc, EstateError> {
        let mut conn = self.db.pool.acquire().await?;
        read(&mut conn, &self.decoded).await
    }

    /// The estate with only the items `ids` (those that exist, in the estate's order) and no plans: what a step
    /// acting on a few items needs, without decoding every item's record.
    pub async fn load_items(&self, ids: &[String]) -> Result<EstateDoc, EstateError> {
        let mut conn = self.db.pool.acquire().await?;
        let settings: SettingsRow =
            sqlx::query_as("select inventory, faults, replication from estate_settings where id = 1")
                .fetch_optional(&mut *conn)
                .await?
                .ok_or(EstateError::Missing)?;
        let mut items: Vec<(i64, ItemRecord)> = Vec::with_capacity(ids.len());
        for id in ids {
            let row: Option<PlacedItemRow> = sqlx::query_as("select position, record from estate_items where id = $1")
                .bind(id)
                .fetch_optional(&mut *conn)
                .await?;
            if let Some(row) = row {
                items.push((row.position, decode(&format!("item {id}"), &row.record)?));
            }
        }
        items.sort_by(|a, b| (a.0, &a.1.item.id).cmp(&(b.0, &b.1.item.id)));
        Ok(EstateDoc {
            inventory: decode("inventory", &settings.inventory)?,
            faults: decode("fault knobs", &settings.faults)?,
            replication: decode("replication policy", &settings.replication)?,
            items: items.into_iter().map(|(_, r)| r).collect(),
            plans: Vec::new(),
        })
    }

    /// Describes a new estate, once, even when several nodes start together: from the `estate.json` an earlier
    /// version left in the folder (kept, renamed `estate.json.imported`), else from `build` (which makes the
    /// disks). Returns how the estate came to be, or `None` when it existed already.
    pub async fn create_once(
        &self,
        build: impl FnOnce(&Estate) -> Result<EstateDoc, EstateError>,
    ) -> Result<Option<Created>, EstateError> {
        let mut tx = self.db.pool.begin().await?;
        // A write first: the creator holds the row; a node starting at the same moment waits here, then finds it.
        let claimed = sqlx::query(
            "insert into estate_settings (id, inventory, faults, replication, version) values (1, '', '', '', 0) \
             on conflict (id) do nothing",
        )
        .execute(&mut *tx)
        .await?;
        let marker = self.root.join(SEEDING_MARKER);
        if claimed.rows_affected() == 0 {
            // A seeding that committed but died before removing its marker: the marker must not outlive it (it
            // would let a later start with a lost database wipe the estate's disks).
            let _ = std::fs::remove_file(&marker);
            return Ok(None);
        }
        let legacy = self.legacy_doc_path();
        let seeding = !legacy.is_file();
        if seeding {
            let io = |path: &Path| {
                let path = path.to_owned();
                move |source| EstateError::Io { path, source }
            };
            if marker.exists() {
                // An earlier first start died while seeding: its half-made disks are ours to make again.
                std::fs::remove_dir_all(&self.root).map_err(io(&self.root))?;
            } else if std::fs::read_dir(&self.root).is_ok_and(|mut d| d.next().is_some()) {
                // Disks but no estate in the database: the database was lost or replaced. Seeding a new vault
                // over them would hide that (and the disks' owner) — refuse, and say what to do.
                return Err(EstateError::Orphaned { path: self.root.clone() });
            }
            std::fs::create_dir_all(&self.root).map_err(io(&self.root))?;
            std::fs::write(&marker, b"").map_err(io(&marker))?;
        }
        let (doc, how) = if !seeding {
            let bytes = std::fs::read(&legacy).map_err(|source| EstateError::Io { path: legacy.clone(), source })?;
            let doc: EstateDoc = serde_json::from_slice(&bytes)
                .map_err(|e| EstateError::Corrupt { path: legacy.clone(), problem: e.to_string() })?;
            (doc, Created::Imported)
        } else {
            (build(self)?, Created::Built)
        };
        write(&mut tx, None, &doc).await?;
        tx.commit().await?;
        if seeding {
            std::fs::remove_file(&marker).map_err(|source| EstateError::Io { path: marker.clone(), source })?;
        }
        if how == Created::Imported {
            let kept = legacy.with_extension("json.imported");
            std::fs::rename(&legacy, &kept).map_err(|source| EstateError::Io { path: legacy, source })?;
        }
        Ok(Some(how))
    }

    /// Applies `f` to the description and writes what it changed, in one transaction; concurrent updates from
    /// any node are serialised. An error from `f` changes nothing.
    pub async fn update<T>(&self, f: impl FnOnce(&mut EstateDoc) -> Result<T, EstateError>) -> Result<T, EstateError> {
        let mut tx = self.db.pool.begin().await?;
        // A write first: SQLite takes its write lock, PostgreSQL locks the row — the read below is then current.
        let bumped =
            sqlx::query("update estate_settings set version = version + 1 where id = 1").execute(&mut *tx).await?;
        if bumped.rows_affected() == 0 {
            return Err(EstateError::Missing);
        }
        let before = read(&mut tx, &self.decoded).await?;
        let mut doc = before.clone();
        let out = f(&mut doc)?;
        write(&mut tx, Some(&before), &doc).await?;
        tx.commit().await?;
        Ok(out)
    }

    /// The replication policy alone (one row), for every cycle's bandwidth cap.
    pub async fn policy(&self) -> Result<ReplicationPolicy, EstateError> {
        let json: String = sqlx::query_scalar("select replication from estate_settings where id = 1")
            .fetch_optional(&self.db.pool)
            .await?
            .ok_or(EstateError::Missing)?;
        decode("replication policy", &json)
    }

    /// One item's record and the inventory: two rows, for the steps that read one item.
    pub async fn item(&self, id: &str) -> Result<(ItemRecord, Inventory), EstateError> {
        let mut conn = self.db.pool.acquire().await?;
        read_item(&mut conn, id).await
    }

    /// Applies `f` to one item's record in one transaction, serialised with every other change like `update`, but
    /// reading and writing that item's row only (the workflows' steps change one item at a time).
    pub async fn update_item<T>(
        &self,
        id: &str,
        f: impl FnOnce(&mut ItemRecord, &Inventory) -> Result<T, EstateError>,
    ) -> Result<T, EstateError> {
        let mut tx = self.db.pool.begin().await?;
        let out = Estate::update_item_on(&mut tx, id, f).await?;
        tx.commit().await?;
        Ok(out)
    }

    /// `update_item` inside the caller's transaction `tx` (a job's end records its item's new state with it).
    pub async fn update_item_on<T>(
        tx: &mut sqlx::AnyConnection,
        id: &str,
        f: impl FnOnce(&mut ItemRecord, &Inventory) -> Result<T, EstateError>,
    ) -> Result<T, EstateError> {
        let bumped =
            sqlx::query("update estate_settings set version = version + 1 where id = 1").execute(&mut *tx).await?;
        if bumped.rows_affected() == 0 {
            return Err(EstateError::Missing);
        }
        let (before, inventory) = read_item(tx, id).await?;
        let mut rec = before.clone();
        let out = f(&mut rec, &inventory)?;
        if rec != before {
            sqlx::query("update estate_items set state = $2, health = $3, record = $4 where id = $1")
                .bind(id)
                .bind(wire_name(&rec.item.state))
                .bind(wire_name(&rec.item.health))
                .bind(encode(&rec))
                .execute(&mut *tx)
                .await?;
        }
        Ok(out)
    }

    /// The item as the rules see it at `now`, with its recovery points read from the replica's journal and its
    /// agent registered once the registration delay after boot has passed (R-A1).
    pub fn view(&self, doc: &EstateDoc, id: &str, now: Millis) -> Result<ReplicatedItem, EstateError> {
        let rec = doc.items.iter().find(|r| r.item.id == id).ok_or_else(|| EstateError::UnknownItem(id.to_owned()))?;
        self.view_of(doc, rec, now)
    }

    /// The item of a record in hand (a list walks the records once; looking each up by id again is quadratic).
    pub fn view_of(&self, doc: &EstateDoc, rec: &ItemRecord, now: Millis) -> Result<ReplicatedItem, EstateError> {
        let mut item = rec.item.clone();
        item.recovery_points = self.points(rec)?;
        // The power state the workflows keep is the one truth; the item's copy of it is never written apart.
        if let Some(vm) = &mut item.cloud_vm {
            vm.running = rec.cloud_power && !vm.deleted;
            vm.storage_account = rec.cloud_storage.clone();
            if rec.cloud_storage.is_some() && !vm.deleted {
                vm.blobs = rec.cloud_disks.iter().map(|d| crate::recovery_site::blob_name(d)).collect();
            }
        }
        // A failed job is the first thing its item's health says, with what to do; worst when the VM now runs
        // nowhere (a failover that failed after shutting the cloud VM down).
        if let Some(f) = &item.last_failure {
            let nowhere = !rec.cloud_power && !rec.onprem_power;
            item.health = if nowhere { Health::Critical } else { Health::Warning.max(item.health) };
            let mut text = format!(
                "The {} job {} failed at \u{201c}{}\u{201d}: {} {} Then restart the job from its page: it continues \
                 from that task.",
                f.operation, f.job, f.task, f.error, f.recommended_action
            );
            if nowhere {
                text.push_str(
                    " Until then the machine runs nowhere: its cloud VM is shut down and the on-premises VM is off.",
                );
            }
            item.health_errors.insert(0, text);
        }
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
