//! Split-brain: both copies of an item changed after a failover — the cloud VM was started again before commit, or
//! the on-premises VM was powered on outside Homeward while protected to on-premises. The replication rounds find it
//! and stop: nothing resyncs on its own. The operator chooses the copy that wins, with a typed reason; the loser's
//! divergent blocks are kept (one file per disk, the differing blocks at their offsets) until the next commit.

use std::path::{Path, PathBuf};

use crate::domain::*;
use crate::estate::ItemRecord;
use crate::jobs::{TaskFailure, TaskOutcome};
use crate::lifecycle::{self, Event, Operation, State};
use crate::service::{JobRequest, Service, ServiceError, BLOCK_SIZE};
use crate::workflows::{fail, outcome, Workflows};

/// Whether the cloud VM of the record runs (a deleted one never does).
fn cloud_runs(rec: &ItemRecord) -> bool {
    rec.cloud_power && !rec.item.cloud_vm.as_ref().is_some_and(|v| v.deleted)
}

/// The copy that runs when only the other one may: the on-premises VM while the item is protected to on-premises
/// (it writes the replica the cloud's changes go to), or the cloud VM after a failback, before commit. Pure.
pub fn intruder(rec: &ItemRecord) -> Option<Site> {
    match rec.item.state {
        State::ProtectedToPrimary if rec.onprem_power => Some(Site::Primary),
        State::FailedBackCommitPending if cloud_runs(rec) => Some(Site::Recovery),
        _ => None,
    }
}

/// What a split-brain does to the item's health: critical, with what to do, for as long as it lasts.
fn health_error(intruder: Site) -> String {
    let what = if intruder == Site::Primary {
        "the on-premises VM was powered on outside Homeward while protected to on-premises"
    } else {
        "the cloud VM was started again before commit"
    };
    format!("Split-brain: {what}, so both copies changed — choose the copy that wins on the item's page.")
}

/// Once the item has left split-brain (its resolution succeeded), the record and the health it set go.
pub(crate) fn settle(rec: &mut ItemRecord) {
    if rec.item.state != State::SplitBrain {
        if let Some(sb) = rec.item.split_brain.take() {
            let ours = health_error(sb.intruder);
            rec.item.health_errors.retain(|e| *e != ours);
            if rec.item.health_errors.is_empty() {
                rec.item.health = Health::Normal;
            }
        }
    }
}

/// The side that loses when `op` resolves a split-brain.
fn loser(op: Operation) -> Site {
    if op == Operation::KeepCloudCopy {
        Site::Primary
    } else {
        Site::Recovery
    }
}

impl Service {
    /// Puts the item in split-brain if one of its copies runs when it may not (checked again inside the update, so
    /// a job that started meanwhile wins). Returns whether it did.
    /// `seen_onprem_power`: the on-premises VM as the round saw it, a connected vCenter's report included.
    pub(crate) async fn enter_split_brain(
        &self,
        id: &str,
        now: Millis,
        seen_onprem_power: bool,
    ) -> Result<bool, ServiceError> {
        let entered = self
            .estate
            .update_item(id, |rec, _| {
                if seen_onprem_power && rec.item.state == State::ProtectedToPrimary {
                    // vCenter found it running: that is a fact about the VM, recorded as Homeward's own switches are.
                    rec.onprem_power = true;
                }
                let Some(intruder) = intruder(rec) else { return Ok(false) };
                let from = rec.item.state;
                let Ok(next) = lifecycle::next(from, Event::Diverged) else { return Ok(false) };
                rec.item.state = next;
                rec.item.health = Health::Critical;
                rec.item.health_errors.insert(0, health_error(intruder));
                rec.item.split_brain = Some(SplitBrain {
                    detected_at: now,
                    from,
                    intruder,
                    cloud_last_write_at: cloud_runs(rec).then_some(now),
                    onprem_last_write_at: rec.onprem_power.then_some(now),
                });
                Ok(true)
            })
            .await?;
        if entered {
            tracing::warn!(item = id, "split-brain: both copies changed; waiting for the operator's choice");
        }
        Ok(entered)
    }

    /// Items waiting for commit whose cloud VM is in a connected Azure subscription: Azure is asked for each VM's
    /// power state (its instance view). One found running again — started in the Azure portal, say — while its item
    /// waits for commit and no job of Homeward's works on it is a split-brain, as the demo estate's switch makes one.
    /// Returns how many items it put in split-brain. A VM Azure cannot be asked about is left for the next call.
    pub async fn watch_cloud_power(&self) -> Result<usize, ServiceError> {
        let doc = self.doc().await?;
        let active = self.jobs.active_jobs_by_item().await?;
        let mut found = 0;
        for rec in &doc.items {
            if rec.item.state != State::FailedBackCommitPending || rec.cloud_power || active.contains_key(&rec.item.id)
            {
                continue;
            }
            let Some(vm) = rec.item.cloud_vm.as_ref().filter(|v| !v.deleted) else { continue };
            let running = match crate::recovery_site::CloudVmSite::for_vm(&self.connections, vm).await {
                Ok(Some(site)) => site.running().await,
                Ok(None) => continue,
                Err(e) => Err(e),
            };
            match running {
                Ok(true) => {}
                Ok(false) => continue,
                Err(e) => {
                    tracing::warn!(item = %rec.item.id, error = %e.error, "the cloud VM's power state could not be read");
                    continue;
                }
            }
            // Checked again inside the update: a job that started meanwhile (a cancelled failover starts the VM
            // itself) has moved the item on, and wins.
            let marked = self
                .estate
                .update_item(&rec.item.id, |r, _| {
                    let still = r.item.state == State::FailedBackCommitPending && !r.cloud_power;
                    if still {
                        r.cloud_power = true;
                    }
                    Ok(still)
                })
                .await?;
            if marked && self.enter_split_brain(&rec.item.id, (self.clock)(), false).await? {
                found += 1;
            }
        }
        Ok(found)
    }

    /// While in split-brain, the copies that run keep writing: their last write times move with them.
    pub(crate) async fn note_split_brain_writes(&self, id: &str, now: Millis) -> Result<(), ServiceError> {
        self.estate
            .update_item(id, |rec, _| {
                let (cloud, onprem) = (cloud_runs(rec), rec.onprem_power);
                if let Some(sb) = rec.item.split_brain.as_mut() {
                    if cloud {
                        sb.cloud_last_write_at = Some(now);
                    }
                    if onprem {
                        sb.onprem_last_write_at = Some(now);
                    }
                }
                Ok(())
            })
            .await?;
        Ok(())
    }
}

/// Copies the blocks of `loser` that differ from `winner` into a new raw file `out` of the loser's size, at their
/// offsets (the rest stays a hole), and their offsets into `map` (little-endian u64s: a hole cannot tell a kept
/// block of zeros from one not kept); makes both durable. Returns the blocks and bytes kept. Blocking IO.
pub fn keep_divergent_blocks(
    loser: &Path,
    winner: &Path,
    out: &Path,
    map: &Path,
) -> Result<(u64, u64), replicator::Error> {
    use replicator::fileio;
    let l = replicator::DiskImage::open(loser)?;
    let w = replicator::DiskImage::open(winner)?;
    let (lf, wf) = (l.open_data_read()?, w.open_data_read()?);
    if let Some(dir) = out.parent() {
        std::fs::create_dir_all(dir).map_err(|e| replicator::Error::io(dir, e))?;
    }
    let of = std::fs::File::create(out).map_err(|e| replicator::Error::io(out, e))?;
    // A raw image is a whole number of sectors.
    of.set_len(l.size.div_ceil(512) * 512).map_err(|e| replicator::Error::io(out, e))?;
    let bs = BLOCK_SIZE as u64;
    let (mut a, mut b) = (vec![0u8; BLOCK_SIZE as usize], vec![0u8; BLOCK_SIZE as usize]);
    let (mut blocks, mut bytes) = (0u64, 0u64);
    let mut offsets: Vec<u8> = Vec::new();
    let mut at = 0u64;
    while at < l.size {
        let n = bs.min(l.size - at) as usize;
        fileio::read_at(&lf, &mut a[..n], at).map_err(|e| replicator::Error::io(loser, e))?;
        let theirs = if at + n as u64 <= w.size {
            fileio::read_at(&wf, &mut b[..n], at).map_err(|e| replicator::Error::io(winner, e))?;
            &b[..n]
        } else {
            // Past the winner's end: only the loser's non-zero data differs.
            b[..n].fill(0);
            let have = w.size.saturating_sub(at) as usize;
            if have > 0 {
                fileio::read_at(&wf, &mut b[..have], at).map_err(|e| replicator::Error::io(winner, e))?;
            }
            &b[..n]
        };
        if a[..n] != *theirs {
            fileio::write_at(&of, &a[..n], at).map_err(|e| replicator::Error::io(out, e))?;
            offsets.extend_from_slice(&at.to_le_bytes());
            blocks += 1;
            bytes += n as u64;
        }
        at += n as u64;
    }
    of.sync_all().map_err(|e| replicator::Error::io(out, e))?;
    fileio::write_atomic(map, &offsets).map_err(|e| replicator::Error::io(map, e))?;
    fileio::sync_parent(out).map_err(|e| replicator::Error::io(out, e))?;
    Ok((blocks, bytes))
}

/// Lays the blocks kept in `kept` (their offsets in `map`) over the disk image `target`, and makes it durable: a
/// recovery point with what a split-brain's losing copy wrote on top. Returns the bytes written. Blocking IO.
pub fn lay_kept_blocks(kept: &Path, map: &Path, target: &Path) -> Result<u64, replicator::Error> {
    use replicator::fileio;
    let offsets = std::fs::read(map).map_err(|e| replicator::Error::io(map, e))?;
    if offsets.len() % 8 != 0 {
        return Err(replicator::Error::io(
            map,
            std::io::Error::new(std::io::ErrorKind::InvalidData, "a block map is a list of 8-byte offsets"),
        ));
    }
    let kf = std::fs::File::open(kept).map_err(|e| replicator::Error::io(kept, e))?;
    let kept_len = kf.metadata().map_err(|e| replicator::Error::io(kept, e))?.len();
    let img = replicator::DiskImage::open(target)?;
    let tf = img.open_data_rw()?;
    let mut buf = vec![0u8; BLOCK_SIZE as usize];
    let mut bytes = 0u64;
    for chunk in offsets.chunks_exact(8) {
        let at = u64::from_le_bytes(chunk.try_into().expect("chunks of 8"));
        // The last block of a disk whose size is not a whole number of blocks is shorter.
        let n = (BLOCK_SIZE as u64).min(img.size.saturating_sub(at)).min(kept_len.saturating_sub(at)) as usize;
        if n == 0 {
            return Err(replicator::Error::io(
                target,
                std::io::Error::new(
                    std::io::ErrorKind::InvalidInput,
                    format!("kept block at {at} lies past the disk's end ({} bytes)", img.size),
                ),
            ));
        }
        fileio::read_at(&kf, &mut buf[..n], at).map_err(|e| replicator::Error::io(kept, e))?;
        fileio::write_at(&tf, &buf[..n], at).map_err(|e| replicator::Error::io(target, e))?;
        bytes += n as u64;
    }
    tf.sync_all().map_err(|e| replicator::Error::io(target, e))?;
    Ok(bytes)
}

/// Removes the kept copies' files (at commit). Blocking IO.
pub fn remove_kept(root: &Path, kept: &[KeptCopy]) -> std::io::Result<()> {
    for k in kept {
        for f in k.files.iter().chain(&k.block_maps) {
            replicator::fileio::remove_durably(&root.join(f))?;
        }
        if let Some(dir) = k.files.first().and_then(|f| root.join(f).parent().map(Path::to_path_buf)) {
            // Empty now; a folder left by hand stays.
            let _ = std::fs::remove_dir(dir);
        }
    }
    Ok(())
}

impl Workflows<'_> {
    /// The first step of a split-brain resolution: the losing copy's blocks that differ from the winner's are kept
    /// until the next commit, with the operator's reason. When the on-premises VM ran on the replica itself, the
    /// replica's recovery points are forgotten too: undoing the logged cycles no longer leads back to them.
    pub(crate) async fn keep_divergent(&self, job_id: &str, req: &JobRequest) -> Result<TaskOutcome, TaskFailure> {
        let id = req.item.as_str();
        let (rec, _) = self.record(id).await?;
        let Some(sb) = rec.item.split_brain.clone() else {
            return Err(fail(
                format!("{id} is not in split-brain any more"),
                "Refresh the item and look at its state.",
            ));
        };
        let lost = loser(req.operation);
        let root = self.service.estate.path("");
        let mut triples: Vec<(PathBuf, PathBuf, String, String)> = Vec::new();
        for (i, (c, o)) in rec.cloud_disks.iter().zip(&rec.onprem_disks).enumerate() {
            let (c, o) = (self.service.estate.path(c), self.service.estate.path(o));
            let (l, w) = if lost == Site::Primary { (o, c) } else { (c, o) };
            let stem = format!("kept/{id}/{job_id}/{}-disk{i}", wire_name(&lost));
            triples.push((l, w, format!("{stem}.raw"), format!("{stem}.blocks")));
        }
        let replica_written = sb.from == State::ProtectedToPrimary;
        let replicas: Vec<PathBuf> = rec.replica_disks.iter().map(|d| self.service.estate.path(d)).collect();
        let work = {
            let (triples, root) = (triples.clone(), root.clone());
            move || -> Result<(u64, u64, usize), replicator::Error> {
                let (mut blocks, mut bytes) = (0, 0);
                for (l, w, out, map) in &triples {
                    let (b, n) = keep_divergent_blocks(l, w, &root.join(out), &root.join(map))?;
                    blocks += b;
                    bytes += n;
                }
                let mut forgotten = 0;
                if replica_written {
                    for r in &replicas {
                        let img = replicator::DiskImage::open(r)?;
                        forgotten +=
                            replicator::journal::Journal::open(&img.state_dir().join("points"))?.discard_all()?;
                    }
                }
                Ok((blocks, bytes, forgotten))
            }
        };
        let (blocks, bytes, forgotten) = tokio::task::spawn_blocking(work)
            .await
            .map_err(|e| fail(format!("keeping the divergent blocks stopped: {e}"), "Restart the job."))?
            .map_err(|e| fail(e.to_string(), "Free space in the estate folder, then restart the job."))?;
        let kept = KeptCopy {
            job: job_id.to_owned(),
            site: lost,
            kept_at: (self.service.clock)(),
            reason: req.request.reason.clone().unwrap_or_default(),
            files: triples.iter().map(|(_, _, f, _)| f.clone()).collect(),
            block_maps: triples.iter().map(|(_, _, _, m)| m.clone()).collect(),
            blocks,
            bytes,
        };
        let files = kept.files.clone();
        self.update(id, |r, _| {
            // A restarted job replaces what its first attempt kept.
            r.item.kept_copies.retain(|k| k.job != kept.job);
            r.item.kept_copies.push(kept.clone());
            Ok(())
        })
        .await?;
        Ok(outcome(
            0,
            serde_json::json!({"loser": lost, "files": files, "blocks": blocks, "bytes": bytes,
                "points_forgotten": forgotten}),
        ))
    }
}
