//! The recovery site through a storage account the vault is connected to.
//!
//! Azure keeps a VM's disks as page blobs holding fixed VHDs. An item whose cloud disks are blobs in a connected
//! storage account's container — named `<item>-<disk file>`: `web01-disk0.vhd` for the estate's
//! `recovery/web01/disk0.vhd` — is bound to that account at its reprotect's first step ([`find`]). From then on the
//! blob *is* the cloud disk, and the estate's file of the same name is this node's cache of it, as Azure Site
//! Recovery's process server keeps a cache disk:
//! - a cycle that reads the cloud disk first [`RecoverySite::pull`]s the blob into the cache: from a snapshot of the
//!   blob (one instant of a disk the cloud VM may be writing), reading only its written pages (Get Page Ranges), and
//!   not at all while the blob's ETag is the one the cache was taken at;
//! - a cycle that writes the cloud disk [`RecoverySite::push`]es the blocks that changed since the last push (Put
//!   Page; Clear Page for blocks that became zeros), found by comparing block hashes with the ones pushed last, and
//!   the whole disk when someone else wrote the blob since;
//! - commit deletes the blobs ([`RecoverySite::delete`]).
//!
//! The replicator's sync engine reads and writes files, so the cache is what keeps it — its journal of recovery
//! points, its durability rules — unchanged in front of a cloud API.

use std::collections::HashSet;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::connections::{ConnectionError, Connections};
use crate::connectors::azure_blob::{Container, MAX_PUT, PAGE};
use crate::connectors::azure_compute::Compute;
use crate::connectors::ConnectorError;
use crate::domain::CloudVm;
use crate::jobs::TaskFailure;

/// The unit of change between two pushes: the replicator's block size.
const BLOCK: u64 = 64 << 10;

/// The blob that holds a cloud disk of the estate: `recovery/<item>/<file>` → `<item>-<file>`.
pub fn blob_name(cloud_disk: &str) -> String {
    let path = Path::new(cloud_disk);
    let file = path.file_name().map(|f| f.to_string_lossy().into_owned()).unwrap_or_default();
    match path.parent().and_then(|d| d.file_name()) {
        Some(item) => format!("{}-{file}", item.to_string_lossy()),
        None => file,
    }
}

/// The storage account whose container holds every one of `cloud_disks` as a blob, by the last check of each
/// connection (asked again when its listing was cut short); `None` when none does (the local estate's disks).
pub async fn find(connections: &Connections, cloud_disks: &[String]) -> Result<Option<String>, TaskFailure> {
    if cloud_disks.is_empty() {
        return Ok(None);
    }
    let names: Vec<String> = cloud_disks.iter().map(|d| blob_name(d)).collect();
    let accounts = connections.storage_accounts().await.map_err(|e| {
        TaskFailure::retryable(format!("the site connections cannot be read: {e}"), "Check the database.")
    })?;
    let mut holders = Vec::new();
    for (conn, listed, count) in accounts {
        let listed: HashSet<&str> = listed.iter().map(String::as_str).collect();
        let mut all = names.iter().all(|n| listed.contains(n.as_str()));
        if !all && count > listed.len() {
            // The check kept only the first blobs' names: ask the account.
            let site = RecoverySite::open(connections, &conn.name).await?;
            all = true;
            for n in &names {
                match site.container.properties(n).await {
                    Ok(_) => {}
                    Err(ConnectorError::NotFound { .. }) => all = false,
                    Err(e) => return Err(site.failure("read the blob's properties")(e)),
                }
            }
        }
        if all {
            holders.push(conn.name);
        }
    }
    if holders.len() > 1 {
        return Err(TaskFailure::fatal(
            format!("the cloud disks {} are in the storage accounts {}", names.join(", "), holders.join(" and ")),
            "Remove the storage-account connection that does not hold the cloud VM's disks, then restart the job.",
        ));
    }
    Ok(holders.pop())
}

/// What the cache knows of its blob: the ETag it was taken at or pushed to, and the pushed blocks' hashes.
#[derive(Serialize, Deserialize)]
struct CacheState {
    etag: String,
    size: u64,
    /// One BLAKE3 hash per [`BLOCK`] of what the blob holds; empty after a pull (nothing was hashed).
    #[serde(skip)]
    hashes: Vec<[u8; 32]>,
}

fn state_path(cache: &Path) -> PathBuf {
    let mut name = cache.file_name().unwrap_or_default().to_os_string();
    name.push(".homeward");
    cache.with_file_name(name).join("blob.state")
}

impl CacheState {
    /// The header as a JSON line, then the hashes.
    fn save(&self, cache: &Path) -> std::io::Result<()> {
        let path = state_path(cache);
        std::fs::create_dir_all(path.parent().expect("a state file has a folder"))?;
        let mut bytes = serde_json::to_vec(self).map_err(std::io::Error::other)?;
        bytes.push(b'\n');
        for h in &self.hashes {
            bytes.extend_from_slice(h);
        }
        replicator::fileio::write_atomic(&path, &bytes)
    }

    fn load(cache: &Path) -> Option<CacheState> {
        let bytes = std::fs::read(state_path(cache)).ok()?;
        let line = bytes.iter().position(|&b| b == b'\n')?;
        let mut state: CacheState = serde_json::from_slice(&bytes[..line]).ok()?;
        let rest = &bytes[line + 1..];
        if rest.len() % 32 != 0 {
            return None;
        }
        state.hashes = rest.chunks_exact(32).map(|c| c.try_into().expect("32 bytes")).collect();
        Some(state)
    }
}

/// A job step's client for the storage account that holds an item's cloud disks.
pub struct RecoverySite {
    pub name: String,
    container: Container,
}

fn local(path: &Path, verb: &'static str) -> impl Fn(std::io::Error) -> TaskFailure {
    let path = path.display().to_string();
    move |e| {
        TaskFailure::retryable(
            format!("the process server's cache {path} could not be {verb}: {e}"),
            "Free space in the cloud folder of this node, then restart the job.",
        )
    }
}

/// Runs disk IO off the async runtime's threads.
async fn blocking<T: Send + 'static>(f: impl FnOnce() -> std::io::Result<T> + Send + 'static) -> std::io::Result<T> {
    tokio::task::spawn_blocking(f).await.map_err(|e| std::io::Error::other(e.to_string()))?
}

impl RecoverySite {
    pub async fn open(connections: &Connections, name: &str) -> Result<RecoverySite, TaskFailure> {
        match connections.storage_container(name).await {
            Ok(container) => Ok(RecoverySite { name: name.to_owned(), container }),
            Err(ConnectionError::Connector(e)) => Err(task_failure(name, "connect", e)),
            Err(e) => Err(TaskFailure::fatal(
                format!("storage account {name}: {e}"),
                "Check the storage account on the Infrastructure page, then restart the job.",
            )),
        }
    }

    /// A client for one storage account already made (a site agent's, with the SAS it was handed); `name` is
    /// what its errors call it.
    pub fn with_container(name: &str, container: Container) -> RecoverySite {
        RecoverySite { name: name.to_owned(), container }
    }

    pub fn container(&self) -> &Container {
        &self.container
    }

    fn failure(&self, operation: &str) -> impl Fn(ConnectorError) -> TaskFailure {
        let (name, operation) = (self.name.clone(), operation.to_owned());
        move |e| task_failure(&name, &operation, e)
    }

    /// Makes the cache file `cache` hold what the blob of cloud disk `disk` holds now. Returns the bytes read from
    /// the storage account (0 when the blob has not changed since the cache was taken).
    pub async fn pull(&self, disk: &str, cache: &Path) -> Result<u64, TaskFailure> {
        let blob = blob_name(disk);
        let props = self.container.properties(&blob).await.map_err(self.failure(&format!("read {blob}")))?;
        if cache_holds(cache, &props.etag, props.size).await {
            return Ok(0);
        }
        let snapshot = self.container.snapshot(&blob).await.map_err(self.failure(&format!("snapshot {blob}")))?;
        let copied = self.pull_snapshot(&blob, &snapshot, &props.etag, props.size, cache).await;
        // A snapshot left behind is billed; failing to delete it does not make the copy wrong.
        if let Err(e) = self.container.delete_snapshot(&blob, &snapshot).await {
            tracing::warn!(blob, snapshot, error = %e, "a snapshot of a cloud disk could not be deleted");
        }
        copied
    }

    /// Makes the cache file `cache` hold snapshot `snapshot` of `blob`, taken when the blob's ETag was `etag` and
    /// its size `size` (a site agent is handed these with a SAS for that snapshot). Nothing is read when the cache
    /// was taken at that ETag already.
    pub async fn pull_snapshot(
        &self,
        blob: &str,
        snapshot: &str,
        etag: &str,
        size: u64,
        cache: &Path,
    ) -> Result<u64, TaskFailure> {
        if cache_holds(cache, etag, size).await {
            return Ok(0);
        }
        let read = self.copy_snapshot(blob, snapshot, size, cache).await?;
        let state = CacheState { etag: etag.to_owned(), size, hashes: Vec::new() };
        let at = cache.to_owned();
        blocking(move || state.save(&at)).await.map_err(local(cache, "written"))?;
        Ok(read)
    }

    async fn copy_snapshot(&self, blob: &str, snapshot: &str, size: u64, cache: &Path) -> Result<u64, TaskFailure> {
        let ranges =
            self.container.page_ranges_at(blob, Some(snapshot)).await.map_err(self.failure(&format!("read {blob}")))?;
        let file = {
            let (path, ranges) = (cache.to_owned(), ranges.clone());
            blocking(move || {
                if let Some(dir) = path.parent() {
                    std::fs::create_dir_all(dir)?;
                }
                let file =
                    std::fs::OpenOptions::new().read(true).write(true).create(true).truncate(false).open(&path)?;
                file.set_len(size)?;
                // What the blob never wrote reads as zeros: so does a hole, without storing them.
                let mut at = 0;
                for &(start, len) in ranges.iter().chain(std::iter::once(&(size, 0))) {
                    let start = start.min(size);
                    if start > at {
                        replicator::fileio::punch_hole(&file, at, start - at)?;
                    }
                    at = at.max(start + len);
                }
                Ok(Arc::new(file))
            })
            .await
            .map_err(local(cache, "written"))?
        };
        let mut read = 0;
        for (start, len) in ranges {
            let end = (start + len).min(size);
            let mut at = start;
            while at < end {
                let n = MAX_PUT.min(end - at);
                let data = self
                    .container
                    .read_at(blob, Some(snapshot), at, n)
                    .await
                    .map_err(self.failure(&format!("read {blob}")))?;
                let f = file.clone();
                blocking(move || f.write_all_at(&data, at)).await.map_err(local(cache, "written"))?;
                read += n;
                at += n;
            }
        }
        blocking(move || file.sync_all()).await.map_err(local(cache, "written"))?;
        Ok(read)
    }

    /// Makes the blob of cloud disk `disk` hold what the cache file `cache` holds: the blocks that changed since
    /// the last push, or every written block when the blob is new or someone else wrote it since. Returns the
    /// bytes written to the storage account.
    pub async fn push(&self, disk: &str, cache: &Path) -> Result<u64, TaskFailure> {
        self.push_blob(&blob_name(disk), cache).await
    }

    /// Makes `blob` hold what the cache file `cache` holds (see [`Self::push`]).
    pub async fn push_blob(&self, blob: &str, cache: &Path) -> Result<u64, TaskFailure> {
        let disk = cache.display().to_string();
        let blob = blob.to_owned();
        let write = self.failure(&format!("write {blob}"));
        let (file, size, known) = {
            let path = cache.to_owned();
            blocking(move || {
                let file = std::fs::File::open(&path)?;
                let size = file.metadata()?.len();
                Ok((Arc::new(file), size, CacheState::load(&path)))
            })
            .await
            .map_err(local(cache, "read"))?
        };
        if size % PAGE != 0 {
            return Err(TaskFailure::fatal(
                format!("the cloud disk {disk} is {size} bytes, not a whole number of 512-byte pages"),
                "A page blob holds a fixed VHD: check the disk's format.",
            ));
        }
        let current = match self.container.properties(&blob).await {
            Ok(p) => Some(p),
            Err(ConnectorError::NotFound { .. }) => None,
            Err(e) => return Err(write(e)),
        };
        let fresh = current.as_ref().is_none_or(|p| p.size != size);
        if fresh {
            // A new page blob reads as zeros: only written blocks need sending.
            self.container.create_page_blob(&blob, size).await.map_err(&write)?;
        }
        let known: Vec<[u8; 32]> = match (known, current) {
            (Some(k), Some(p)) if !fresh && k.etag == p.etag && k.size == size => k.hashes,
            _ => Vec::new(),
        };
        let mut hashes = Vec::with_capacity(size.div_ceil(BLOCK) as usize);
        let mut sent = 0;
        let mut offset = 0;
        while offset < size {
            let len = MAX_PUT.min(size - offset);
            let (window, f) = (vec![0u8; len as usize], file.clone());
            let window = blocking(move || {
                let mut w = window;
                f.read_exact_at(&mut w, offset).map(|_| w)
            })
            .await
            .map_err(local(cache, "read"))?;
            // Runs of changed blocks, each to be written (data) or cleared (zeros).
            let mut runs: Vec<(usize, usize, bool)> = Vec::new();
            for (i, block) in window.chunks(BLOCK as usize).enumerate() {
                let h = replicator::hashes::hash_block(block);
                let index = hashes.len();
                hashes.push(h);
                if known.get(index) == Some(&h) {
                    continue;
                }
                let zero = replicator::hashes::is_zero(block);
                if zero && fresh {
                    continue;
                }
                let (start, end) = (i * BLOCK as usize, i * BLOCK as usize + block.len());
                match runs.last_mut() {
                    Some(last) if last.1 == start && last.2 == zero => last.1 = end,
                    _ => runs.push((start, end, zero)),
                }
            }
            for (start, end, zero) in runs {
                let at = offset + start as u64;
                if zero {
                    self.container.clear_pages(&blob, at, (end - start) as u64).await.map_err(&write)?;
                } else {
                    self.container.put_pages(&blob, at, window[start..end].to_vec()).await.map_err(&write)?;
                    sent += (end - start) as u64;
                }
            }
            offset += len;
        }
        let etag = self.container.properties(&blob).await.map_err(&write)?.etag;
        let state = CacheState { etag, size, hashes };
        let at = cache.to_owned();
        blocking(move || state.save(&at)).await.map_err(local(cache, "written"))?;
        Ok(sent)
    }

    /// Deletes the blob of cloud disk `disk` (and its snapshots); `false` when it was gone already.
    pub async fn delete(&self, disk: &str) -> Result<bool, TaskFailure> {
        let blob = blob_name(disk);
        match self.container.delete(&blob).await {
            Ok(()) => Ok(true),
            Err(ConnectorError::NotFound { .. }) => Ok(false),
            Err(e) => Err(self.failure(&format!("delete {blob}"))(e)),
        }
    }
}

/// An item's cloud VM in a connected Azure subscription: the subscription connection whose resource group is the
/// VM's and whose last check listed a VM of that name. Failovers power it off, a cancelled failover starts it again
/// and commit deletes it with its managed disks, through Azure Resource Manager; without such a connection the
/// cloud VM is the local estate's.
pub struct CloudVmSite {
    pub name: String,
    vm: String,
    compute: Compute,
}

impl CloudVmSite {
    pub async fn for_vm(connections: &Connections, vm: &CloudVm) -> Result<Option<CloudVmSite>, TaskFailure> {
        let subscriptions = connections.azure_subscriptions().await.map_err(|e| {
            TaskFailure::retryable(format!("the site connections cannot be read: {e}"), "Check the database.")
        })?;
        let Some((conn, _, _)) = subscriptions.into_iter().find(|(_, group, vms)| {
            group.eq_ignore_ascii_case(&vm.resource_group) && vms.iter().any(|v| v.name.eq_ignore_ascii_case(&vm.id))
        }) else {
            return Ok(None);
        };
        let compute = connections.azure_compute(&conn.name).await.map_err(|e| match e {
            ConnectionError::Connector(e) => arm_failure(&conn.name, "connect", e),
            other => TaskFailure::fatal(
                format!("Azure subscription {}: {other}", conn.name),
                "Check the subscription on the Infrastructure page, then restart the job.",
            ),
        })?;
        Ok(Some(CloudVmSite { name: conn.name, vm: vm.id.clone(), compute }))
    }

    /// Whether Azure reports the cloud VM running (or starting), from its instance view.
    pub async fn running(&self) -> Result<bool, TaskFailure> {
        let failure = |e| arm_failure(&self.name, &format!("read the power state of VM {}", self.vm), e);
        let state = self.compute.vm(&self.vm).await.map_err(failure)?.power.unwrap_or_default();
        Ok(state == "running" || state == "starting")
    }

    /// Powers the cloud VM off or starts it; nothing is sent when it is in that state already.
    pub async fn power(&self, on: bool) -> Result<serde_json::Value, TaskFailure> {
        let operation = if on { "start" } else { "power off" };
        let failure = |e| arm_failure(&self.name, &format!("{operation} VM {}", self.vm), e);
        let state = self.compute.vm(&self.vm).await.map_err(failure)?.power.unwrap_or_default();
        let already =
            if on { state == "running" || state == "starting" } else { state == "stopped" || state == "deallocated" };
        if !already {
            if on {
                self.compute.start(&self.vm).await.map_err(failure)?;
            } else {
                self.compute.power_off(&self.vm).await.map_err(failure)?;
            }
        }
        Ok(serde_json::json!({"azure_subscription": self.name, "vm": self.vm, "was": state, "changed": !already}))
    }

    /// Deletes the cloud VM, then its managed disks (its unmanaged disks are blobs, deleted with the storage
    /// account's). Returns what was deleted; a VM gone already is not an error.
    pub async fn delete(&self) -> Result<Vec<String>, TaskFailure> {
        let failure = |what: &str| {
            let operation = format!("delete {what}");
            let name = self.name.clone();
            move |e| arm_failure(&name, &operation, e)
        };
        let vm = match self.compute.vm(&self.vm).await {
            Ok(vm) => Some(vm),
            Err(ConnectorError::NotFound { .. }) => None,
            Err(e) => return Err(failure(&format!("VM {}", self.vm))(e)),
        };
        let mut deleted = Vec::new();
        if let Some(vm) = vm {
            // The VM first: it holds leases on its disks until it is gone.
            if self.compute.delete_vm(&vm.name).await.map_err(failure(&format!("VM {}", vm.name)))? {
                deleted.push(format!("VM {}", vm.name));
            }
            for disk in &vm.managed_disks {
                let name = disk.rsplit('/').next().unwrap_or(disk);
                if self.compute.delete_disk(disk).await.map_err(failure(&format!("disk {name}")))? {
                    deleted.push(format!("disk {name}"));
                }
            }
        }
        Ok(deleted)
    }
}

fn arm_failure(subscription: &str, operation: &str, e: ConnectorError) -> TaskFailure {
    let unreachable = matches!(e, ConnectorError::Unreachable { .. });
    let error = format!("Azure subscription {subscription}, {operation}: {e}");
    let action = format!("Fix the cause in Azure subscription {subscription}, then restart the job.");
    if unreachable {
        TaskFailure::retryable(error, action)
    } else {
        TaskFailure::fatal(error, action)
    }
}

/// Whether the cache file was taken from its blob at `etag` and still has the blob's size.
async fn cache_holds(cache: &Path, etag: &str, size: u64) -> bool {
    let (cache, etag) = (cache.to_owned(), etag.to_owned());
    blocking(move || {
        let len = std::fs::metadata(&cache).map(|m| m.len()).unwrap_or(u64::MAX);
        Ok(CacheState::load(&cache).is_some_and(|s| s.etag == etag && s.size == size) && len == size)
    })
    .await
    .unwrap_or(false)
}

/// A connector failure as a task's failure: an account that cannot be reached is worth retrying (the job backs off
/// and tries again); anything else — credentials, an expired SAS, a lease held — needs a person.
fn task_failure(account: &str, operation: &str, e: ConnectorError) -> TaskFailure {
    let unreachable = matches!(e, ConnectorError::Unreachable { .. });
    let error = format!("storage account {account}, {operation}: {e}");
    let action = format!("Fix the cause in storage account {account}, then restart the job.");
    if unreachable {
        TaskFailure::retryable(error, action)
    } else {
        TaskFailure::fatal(error, action)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cloud_disk_is_named_after_its_item_in_the_container() {
        assert_eq!(blob_name("recovery/web01/disk0.vhd"), "web01-disk0.vhd");
        assert_eq!(blob_name("recovery/app02/reprotected-disk1.vhd"), "app02-reprotected-disk1.vhd");
    }

    #[test]
    fn the_cache_state_keeps_its_etag_and_hashes_across_a_restart() {
        let dir = tempfile::tempdir().unwrap();
        let cache = dir.path().join("disk0.vhd");
        let state = CacheState { etag: "\"0x1\"".into(), size: 3 * BLOCK, hashes: vec![[1; 32], [2; 32], [0; 32]] };
        state.save(&cache).unwrap();
        let back = CacheState::load(&cache).unwrap();
        assert_eq!((back.etag.as_str(), back.size, back.hashes), ("\"0x1\"", 3 * BLOCK, state.hashes));
        std::fs::write(state_path(&cache), b"{\"etag\":\"x\",\"size\":1}\nshort").unwrap();
        assert!(CacheState::load(&cache).is_none(), "a torn hash list is not trusted");
    }
}
