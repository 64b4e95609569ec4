//! The verify-replica job's step: every on-premises replica disk is read again and compared with the block hashes
//! its last cycle recorded ([`replicator::verify`]). What it finds is kept on the item; differing blocks make the
//! item's health critical and open an alert (see `alerts`) until the next cycle — a delta, since the verification
//! dropped the hashes it could no longer trust — has rewritten them from the cloud copy.

use crate::domain::{Health, ReplicaVerification};
use crate::jobs::{TaskFailure, TaskOutcome};
use crate::service::JobRequest;
use crate::workflows::{fail, outcome, Workflows};

impl Workflows<'_> {
    pub(crate) async fn verify_replica(&self, job_id: &str, req: &JobRequest) -> Result<TaskOutcome, TaskFailure> {
        let id = req.item.as_str();
        let (rec, inv) = self.record(id).await?;
        if rec.replica_disks.is_empty() {
            return Err(fail(
                format!("{} has no on-premises replica disks to verify", rec.item.name),
                "Reprotect the item to on-premises first.",
            ));
        }
        let route = self.route(&rec, &inv, true, req);
        if let Some((sender, receiver)) = self.agents_for(&route).await? {
            let pairs: Vec<(String, String)> =
                rec.cloud_disks.iter().cloned().zip(rec.replica_disks.iter().cloned()).collect();
            if self.through_agents(&pairs, &sender, &receiver).await?.is_some() {
                return Err(fail(
                    format!(
                        "the replica of {} is written by master target {}'s agent, on its machine: the control plane \
                         verifies only the replicas it writes itself",
                        rec.item.name, receiver.name
                    ),
                    "Nothing to do here: every cycle through the agents already compares the replica's whole-disk \
                     digest, computed from its own bytes, with the cloud copy's.",
                ));
            }
        }
        let disks: Vec<(String, std::path::PathBuf)> =
            rec.replica_disks.iter().map(|d| (d.clone(), self.service.estate.path(d))).collect();
        let cancel = self.cancel.clone();
        let started = std::time::Instant::now();
        // Reads whole disks: off the async threads.
        let reports = tokio::task::spawn_blocking(move || {
            disks
                .into_iter()
                .map(|(name, path)| {
                    replicator::verify::verify_replica(&path, Some(&cancel)).map(|r| (name, r)).map_err(|e| (path, e))
                })
                .collect::<Result<Vec<_>, _>>()
        })
        .await
        .map_err(|e| fail(format!("the verification stopped on an internal error: {e}"), "Run it again."))?;
        self.add_data_ms(started.elapsed().as_millis() as u64);
        let reports = reports.map_err(|(path, e)| match e {
            replicator::Error::Cancelled => {
                fail("the verification was stopped", "Nothing to undo: a verification changes no bytes.")
            }
            e => TaskFailure::retryable(
                format!("{} cannot be verified: {e}", path.display()),
                "Fix the cause named above (the datastore's folder must be readable), then restart the job.",
            ),
        })?;
        let mut unverifiable = Vec::new();
        let mut v = ReplicaVerification {
            job: job_id.to_owned(),
            finished_at: (self.service.clock)(),
            blocks: 0,
            bytes_read: 0,
            mismatched_blocks: 0,
            damaged_disks: Vec::new(),
            repaired_at: None,
        };
        let mut per_disk = Vec::new();
        for (disk, report) in &reports {
            match report {
                None => unverifiable.push(disk.clone()),
                Some(r) => {
                    v.blocks += r.blocks;
                    v.bytes_read += r.bytes_read;
                    v.mismatched_blocks += r.mismatched_blocks;
                    if !r.intact() {
                        v.damaged_disks.push(disk.clone());
                    }
                    per_disk.push(serde_json::json!({
                        "disk": disk,
                        "blocks": r.blocks,
                        "block_size": r.block_size,
                        "bytes_read": r.bytes_read,
                        "mismatched_blocks": r.mismatched_blocks,
                        "first_mismatched_blocks": r.first_mismatches,
                        "hashes_match_newest_point": r.table_matches_point,
                    }));
                }
            }
        }
        // A table that disagrees with its own point counts as damage even with no differing block.
        let damaged = !v.damaged_disks.is_empty();
        let summary = v.clone();
        let partial = unverifiable.clone();
        self.update(id, move |r, _| {
            if damaged {
                r.item.health = Health::Critical;
                r.item.health_errors.insert(
                    0,
                    format!(
                        "Verification found {} block(s) of the on-premises replica ({}) that differ from their \
                         recorded hashes. The next replication cycle rewrites them from the cloud copy: fail back \
                         only after it has run.",
                        summary.mismatched_blocks,
                        summary.damaged_disks.join(", ")
                    ),
                );
            }
            // A verification with a disk it could not read is no finding of "intact"; damage found on the others
            // still counts (their hashes are gone already).
            if damaged || partial.is_empty() {
                r.item.verification = Some(summary);
            }
            Ok(())
        })
        .await?;
        if !unverifiable.is_empty() {
            // Nothing recorded to compare with: its last cycle did not finish, and the next one compares the whole
            // replica with the cloud copy anyway. Claiming "verified" here would be a lie.
            return Err(fail(
                format!(
                    "{} has no recorded block hashes to compare with (its last replication cycle did not finish)",
                    unverifiable.join(", ")
                ),
                "Wait for the item's next replication cycle to finish (it compares the whole replica with the cloud \
                 copy), then verify again.",
            ));
        }
        Ok(outcome(
            0,
            serde_json::json!({
                "intact": !damaged,
                "blocks": v.blocks,
                "bytes_read": v.bytes_read,
                "mismatched_blocks": v.mismatched_blocks,
                "disks": per_disk,
                "next_cycle": if damaged { "delta: the whole replica is compared with the cloud copy" } else { "as usual" },
            }),
        ))
    }
}
