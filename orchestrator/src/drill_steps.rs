//! The steps of a drill: a test failover makes a copy of the item's VM on the primary site from a recovery point of
//! its replica (the journal undoes the newer writes into new disks; the replica itself is only read), on an isolated
//! network, powers it on and checks it; its cleanup (or a real failover, first) powers it off and deletes it. The
//! cloud VM keeps running and replication resumes as soon as the job lets go of the item.

use std::path::{Path, PathBuf};

use crate::domain::*;
use crate::drills::DrillCheck;
use crate::jobs::{TaskFailure, TaskOutcome};
use crate::lifecycle::{self, Operation, State};
use crate::primary_site::VcenterSite;
use crate::service::JobRequest;
use crate::workflows::{fail, outcome, Workflows};

fn db_failure(e: sqlx::Error) -> TaskFailure {
    TaskFailure::retryable(format!("the drill record cannot be written: {e}"), "Check the database.")
}

impl Workflows<'_> {
    /// The live drill of the item, or the failure that says it is gone.
    async fn live_drill(&self, id: &str) -> Result<LiveDrill, TaskFailure> {
        let (rec, _) = self.record(id).await?;
        rec.item.drill.ok_or_else(|| {
            fail(format!("{id} has no test VM any more"), "Look at the item's drills; start a new test failover.")
        })
    }

    /// The connected vCenter whose host runs the test VM, with a session; `None` on the local estate.
    async fn vcenter_for(&self, host: &str) -> Result<Option<VcenterSite>, TaskFailure> {
        match VcenterSite::for_host(&self.service.connections, host).await? {
            Some(conn) => Ok(Some(VcenterSite::open(&self.service.connections, &conn.name).await?)),
            None => Ok(None),
        }
    }

    pub(crate) async fn create_test_vm(&self, job_id: &str, req: &JobRequest) -> Result<TaskOutcome, TaskFailure> {
        let id = req.item.as_str();
        let (rec, _) = self.record(id).await?;
        let again = "Start the test failover again.";
        let network = req.request.network.clone().ok_or_else(|| fail("no isolated network was chosen", again))?;
        let point = req.plan.point.clone().ok_or_else(|| fail("no recovery point to test (R-RP3)", "Wait for one."))?;
        let vm = rec.item.onprem.clone().ok_or_else(|| fail(format!("{id} has no on-premises VM"), again))?;
        let ds = vm.disks.first().map(|d| d.datastore.clone()).unwrap_or_default();
        let name = lifecycle::test_vm_name(&rec.item);
        let drill = match &rec.item.drill {
            // A rerun after a crash or a failure takes over the drill this job recorded.
            Some(d) if d.id == job_id => d.clone(),
            Some(d) => {
                return Err(fail(
                    format!("{id} has another test failover ({}, VM {})", d.id, d.vm),
                    "Clean that test failover up first.",
                ))
            }
            None => {
                let disks = match self.vcenter_for(&vm.host).await? {
                    Some(vc) => {
                        let mut sizes = Vec::new();
                        for r in &rec.replica_disks {
                            sizes.push(
                                replicator::DiskImage::open(&self.service.estate.path(r))
                                    .map_err(|e| fail(e.to_string(), "Check the replica disk."))?
                                    .size,
                            );
                        }
                        let created =
                            vc.create_vm(&name, rec.item.os.family, &vm.host, &ds, &sizes, Some(&network)).await;
                        vc.close().await;
                        created?.disks.iter().map(|p| p.display().to_string()).collect()
                    }
                    None => {
                        (0..rec.replica_disks.len()).map(|i| format!("primary/{ds}/{id}-test/disk{i}.vmdk")).collect()
                    }
                };
                let d = LiveDrill {
                    id: job_id.to_owned(),
                    vm: name.clone(),
                    host: vm.host.clone(),
                    network: network.clone(),
                    point: point.clone(),
                    started_at: (self.service.clock)(),
                    disks,
                    kept_copy: match &req.request.point {
                        Some(crate::points::PointChoice::KeptCopy(job)) => Some(job.clone()),
                        _ => None,
                    },
                };
                // Recorded before a byte is written: whatever fails from here on, the cleanup knows what to remove.
                self.service.drills().start(&rec.item, &d).await.map_err(db_failure)?;
                self.update(id, |r, _| {
                    r.item.drill = Some(d.clone());
                    Ok(())
                })
                .await?;
                d
            }
        };
        let kept = self.kept_overlay(&rec, req)?;
        let mut bytes = 0;
        let mut files = Vec::new();
        for (i, (replica, disk)) in rec.replica_disks.iter().zip(&drill.disks).enumerate() {
            let path = self.service.estate.path(disk);
            if let Some(dir) = path.parent() {
                std::fs::create_dir_all(dir)
                    .map_err(|e| fail(format!("{}: {e}", dir.display()), "Check the datastore."))?;
            }
            let no_space = format!("Free space on datastore {ds}, then restart the job.");
            let overlay = kept.as_ref().map(|k| (k.files[i].as_str(), k.block_maps[i].as_str()));
            bytes += self.materialise(replica, &point.id, disk, &no_space, overlay).await?;
            files.push(path);
        }
        if let Some(vc) = self.vcenter_for(&drill.host).await? {
            let done = vc.use_disks(&drill.vm, &files).await;
            vc.close().await;
            done?;
        }
        Ok(outcome(
            bytes,
            serde_json::json!({"vm": drill.vm, "network": drill.network, "point": point.id, "disks": drill.disks,
                "kept_copy": kept.map(|k| serde_json::json!({"job": k.job, "site": k.site, "blocks": k.blocks}))}),
        ))
    }

    pub(crate) async fn power_on_test_vm(&self, id: &str) -> Result<TaskOutcome, TaskFailure> {
        let d = self.live_drill(id).await?;
        if let Some(vc) = self.vcenter_for(&d.host).await? {
            let done = vc.power(&d.vm, true).await;
            vc.close().await;
            done?;
        }
        let now = (self.service.clock)();
        self.service.drills().powered_on(&d.id, now).await.map_err(db_failure)?;
        Ok(outcome(
            0,
            serde_json::json!({"vm": d.vm, "powered_on": true, "ms_since_start": now.saturating_sub(d.started_at)}),
        ))
    }

    /// What a drill proves, each check recorded in its report: the test VM's disks hold the point's bytes, it is on
    /// an isolated network and runs, and production was left alone.
    pub(crate) async fn check_test_vm(&self, id: &str) -> Result<TaskOutcome, TaskFailure> {
        let (rec, inv) = self.record(id).await?;
        let d = rec
            .item
            .drill
            .clone()
            .ok_or_else(|| fail(format!("{id} has no test VM any more"), "Start a new test failover."))?;
        let mut checks = Vec::new();
        let mut check = |name: &str, passed: bool, detail: String| {
            checks.push(DrillCheck { name: name.to_owned(), passed, detail });
        };

        // The disks, hashed again now that the VM has them: the same digest the point recorded at the replica.
        let mut mismatched = Vec::new();
        let kept = match &d.kept_copy {
            Some(job) => Some(
                crate::points::kept_copy(&rec.item, job)
                    .map_err(|r| fail(r.message, "Clean up the test failover; the kept blocks are gone."))?
                    .clone(),
            ),
            None => None,
        };
        for (i, (replica, disk)) in rec.replica_disks.iter().zip(&d.disks).enumerate() {
            let (r, t, point) = (self.service.estate.path(replica), self.service.estate.path(disk), d.point.id.clone());
            let overlay = kept.as_ref().and_then(|k| {
                Some((self.service.estate.path(k.files.get(i)?), self.service.estate.path(k.block_maps.get(i)?)))
            });
            // Hashing a whole disk: off the async threads, as the other items of a plan's group go on meanwhile.
            let matched = tokio::task::spawn_blocking(move || disk_matches_point(&r, &t, &point, overlay))
                .await
                .unwrap_or_else(|e| Err(replicator::Error::Invalid(format!("the check stopped: {e}"))));
            match matched {
                Ok(true) => {}
                Ok(false) => mismatched.push(format!("{disk} differs from the point")),
                Err(e) => mismatched.push(format!("{disk}: {e}")),
            }
        }
        check(
            "disks hold the recovery point",
            mismatched.is_empty(),
            if mismatched.is_empty() {
                match &kept {
                    None => format!("{} disk(s) hash to recovery point {}'s digest", d.disks.len(), d.point.id),
                    Some(k) => format!(
                        "{} disk(s) hold the {} blocks kept by job {} and, everywhere else, recovery point {}",
                        d.disks.len(),
                        k.blocks,
                        k.job,
                        d.point.id
                    ),
                }
            } else {
                mismatched.join("; ")
            },
        );

        let marked = inv.network(&d.network).is_some_and(|n| n.isolated);
        let (on_network, running) = match self.vcenter_for(&d.host).await? {
            Some(vc) => {
                let found = vc.find_vm(&d.vm, "check the test VM").await;
                vc.close().await;
                match found? {
                    Some(v) => (
                        Ok(v.networks.clone()),
                        (
                            v.power == crate::connectors::vsphere::PowerState::On,
                            format!("vCenter reports {:?}", v.power),
                        ),
                    ),
                    None => {
                        (Err("vCenter no longer has the VM".to_owned()), (false, "vCenter no longer has the VM".into()))
                    }
                }
            }
            None => {
                let on = self.service.drills().get(&d.id).await.map_err(db_failure)?.and_then(|r| r.powered_on_at);
                (Ok(vec![d.network.clone()]), (on.is_some(), "powered on by this test failover".to_owned()))
            }
        };
        let (isolated, detail) = match on_network {
            Ok(nets) if nets == vec![d.network.clone()] && marked => {
                (true, format!("its one adapter is on {}, marked isolated", d.network))
            }
            Ok(nets) if nets == vec![d.network.clone()] => {
                (false, format!("{} is no longer marked isolated", d.network))
            }
            Ok(nets) => (false, format!("its adapters are on {}, not only {}", nets.join(", "), d.network)),
            Err(e) => (false, e),
        };
        check("on an isolated network", isolated, detail);
        check("the test VM runs", running.0, running.1);
        let untouched = rec.item.state == State::ProtectedToPrimary && rec.cloud_power;
        check(
            "production left alone",
            untouched,
            if untouched {
                "the cloud VM runs and the item is still protected to on-premises".to_owned()
            } else {
                format!(
                    "the item is {} and its cloud VM {}",
                    lifecycle::state_words(rec.item.state),
                    if rec.cloud_power { "runs" } else { "is off" }
                )
            },
        );
        self.service.drills().set_checks(&d.id, &checks).await.map_err(db_failure)?;
        let failed: Vec<String> =
            checks.iter().filter(|c| !c.passed).map(|c| format!("{}: {}", c.name, c.detail)).collect();
        if !failed.is_empty() {
            return Err(fail(
                format!("the drill's checks failed — {}", failed.join("; ")),
                "Read the drill report, clean up the test failover, fix the cause and test again.",
            ));
        }
        Ok(outcome(0, serde_json::json!({"checks": checks})))
    }

    pub(crate) async fn remove_test_vm(&self, id: &str) -> Result<TaskOutcome, TaskFailure> {
        let (rec, _) = self.record(id).await?;
        let Some(d) = rec.item.drill else { return Ok(outcome(0, serde_json::json!({"already": true}))) };
        let mut in_vcenter = false;
        if let Some(vc) = self.vcenter_for(&d.host).await? {
            let done = vc.destroy(&d.vm).await;
            vc.close().await;
            in_vcenter = done?;
        }
        let mut removed = Vec::new();
        for disk in &d.disks {
            let path = self.service.estate.path(disk);
            removed.extend(remove_disk(&path).map_err(|e| {
                fail(format!("cannot delete {}: {e}", path.display()), "Check the datastore folder's permissions.")
            })?);
        }
        // The test VM's own folder, when nothing else is in it.
        if let Some(dir) =
            d.disks.first().map(|p| self.service.estate.path(p)).and_then(|p| p.parent().map(Path::to_path_buf))
        {
            let _ = std::fs::remove_dir(dir);
        }
        Ok(outcome(0, serde_json::json!({"vm": d.vm, "deleted_in_vcenter": in_vcenter, "deleted": removed})))
    }

    pub(crate) async fn record_cleanup(&self, job_id: &str, req: &JobRequest) -> Result<TaskOutcome, TaskFailure> {
        let id = req.item.as_str();
        let (rec, _) = self.record(id).await?;
        let Some(d) = rec.item.drill else { return Ok(outcome(0, serde_json::json!({"already": true}))) };
        let notes = match req.operation {
            Operation::Failover => Some(format!("Cleaned up by the failover of {} (job {job_id}).", rec.item.name)),
            _ => req.request.notes.as_deref().map(str::trim).filter(|n| !n.is_empty()).map(str::to_owned),
        };
        let now = (self.service.clock)();
        self.service.drills().cleaned(&d.id, job_id, now, notes.as_deref()).await.map_err(db_failure)?;
        self.update(id, |r, _| {
            r.item.drill = None;
            Ok(())
        })
        .await?;
        Ok(outcome(0, serde_json::json!({"drill": d.id, "notes": notes})))
    }
}

/// Whether the test disk hashes to the digest the replica's journal recorded for the point.
/// Whether `disk` holds point `point` of `replica` — with, when `overlay` names a split-brain's kept blocks and
/// their map, exactly those blocks in their places: the kept blocks are compared byte for byte, and the disk's digest
/// with the point's own blocks put back where they lie must be the point's.
fn disk_matches_point(
    replica: &Path,
    disk: &Path,
    point: &str,
    overlay: Option<(PathBuf, PathBuf)>,
) -> Result<bool, replicator::Error> {
    use replicator::hashes;
    let img = replicator::DiskImage::open(replica)?;
    let journal = replicator::journal::Journal::open(&img.state_dir().join("points"))?;
    let Some(p) = journal.points().iter().find(|p| p.id == point).cloned() else {
        return Err(replicator::Error::Invalid(format!("point {point} is gone from the replica's journal")));
    };
    let test = replicator::DiskImage::open(disk)?;
    let Some((kept, map)) = overlay else {
        return Ok(replicator::journal::image_digest(&test, p.block_size)? == p.digest);
    };
    let geom = hashes::Geometry::new(test.size, p.block_size)?;
    let offsets = std::fs::read(&map).map_err(|e| replicator::Error::io(&map, e))?;
    let mut blocks = std::collections::HashSet::new();
    for c in offsets.chunks_exact(8) {
        let at = u64::from_le_bytes(c.try_into().expect("chunks of 8"));
        if at % p.block_size as u64 != 0 {
            return Err(replicator::Error::Invalid(format!("kept block at {at} is not on a block boundary")));
        }
        blocks.insert(at / p.block_size as u64);
    }
    let at_point = journal.blocks_at(&img, p.seq, &blocks)?;
    let kf = std::fs::File::open(&kept).map_err(|e| replicator::Error::io(&kept, e))?;
    let tf = test.open_data_read()?;
    let (mut hs, mut kept_in_place) = (Vec::with_capacity(geom.blocks() as usize), true);
    let mut want = vec![0u8; p.block_size as usize];
    hashes::scan(&tf, &test.data_path, geom, 0, geom.blocks(), |b, data| {
        match at_point.get(&b) {
            Some(theirs) => {
                let n = geom.len(b);
                replicator::fileio::read_at(&kf, &mut want[..n], geom.offset(b))
                    .map_err(|e| replicator::Error::io(&kept, e))?;
                kept_in_place &= data.map_or_else(|| hashes::is_zero(&want[..n]), |d| d == &want[..n]);
                hs.push(hashes::hash_block(theirs));
            }
            None => hs.push(data.map_or_else(|| geom.zero_hash(b), hashes::hash_block)),
        }
        Ok(())
    })?;
    Ok(kept_in_place && hashes::hex(&hashes::disk_digest(geom, &hs)) == p.digest)
}

/// Deletes a disk image (its descriptor, its data file and its bookkeeping); the paths removed.
fn remove_disk(path: &Path) -> std::io::Result<Vec<PathBuf>> {
    let mut gone = Vec::new();
    let mut files = vec![path.to_path_buf()];
    if let Ok(img) = replicator::DiskImage::open(path) {
        let _ = std::fs::remove_dir_all(img.state_dir());
        if img.data_path != img.path {
            files.push(img.data_path.clone());
        }
    }
    for f in files {
        match std::fs::remove_file(&f) {
            Ok(()) => gone.push(f),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
    }
    Ok(gone)
}
