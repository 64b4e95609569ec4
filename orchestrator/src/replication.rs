//! Continuous replication, side by side with the jobs: every protected item whose interval has passed gets a
//! cycle (app-consistent when that interval has passed too), and running VMs write (the simulated guests).
//!
//! A round works on an item only while it holds the item's lease (`item_leases`): it takes it only when the item
//! has no active job, renews it every second, and gives it up — stopping its sync at the next chunk — as soon as
//! a job wants the item. So any node may run rounds, and a failover never waits behind one for long.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use crate::agent_cycle::Route;
use crate::assignments::Fence;
use crate::domain::*;
use crate::lifecycle::State;
use crate::service::{Service, ServiceError, BLOCK_SIZE};
use crate::worker::{Keeper, Node};
use crate::workflows::Workflows;

/// How long a round's hold on an item lasts without renewal.
const ROUND_LEASE_MS: Millis = 10_000;

/// Items replicated in one cycle: a replication group's due members (one shared point id, so the group has
/// common points for R-RP2), or one item.
struct Unit {
    key: String,
    state: State,
    items: Vec<String>,
}

impl Service {
    /// One round over every item that has work: guest writes on running VMs, a cycle where one is due. Items with
    /// an active job are left to the job. `holder` names this node's replication in the item leases.
    pub async fn replication_round(&self, holder: &str, shutdown: &Arc<AtomicBool>) -> Result<(), ServiceError> {
        let doc = self.doc().await?;
        let now = (self.clock)();
        let active = self.jobs.active_jobs_by_item().await?;
        let mut units: Vec<Unit> = Vec::new();
        for rec in &doc.items {
            if active.contains_key(&rec.item.id) {
                continue;
            }
            // A copy running where it may not: stop before a cycle overwrites what it wrote (nothing resyncs on its
            // own after a split-brain).
            if crate::split_brain::intruder(rec).is_some() {
                self.enter_split_brain(&rec.item.id, now, rec.onprem_power).await?;
                continue;
            }
            let protected = matches!(rec.item.state, State::ProtectedToPrimary | State::ProtectedToCloud);
            let due = protected && now.saturating_sub(rec.last_cycle_at) >= doc.replication.crash_consistent_every_ms;
            let writes = doc.replication.guest_bytes_per_tick > 0 && (rec.cloud_power || rec.onprem_power);
            if !due && !writes {
                continue;
            }
            let key = rec.item.replication_group.clone().unwrap_or_else(|| format!("item:{}", rec.item.id));
            match units.iter_mut().find(|u| u.key == key && u.state == rec.item.state) {
                Some(u) => u.items.push(rec.item.id.clone()),
                None => units.push(Unit { key, state: rec.item.state, items: vec![rec.item.id.clone()] }),
            }
        }
        for unit in units {
            if shutdown.load(Ordering::Relaxed) {
                break;
            }
            self.replicate_unit(&unit.items, holder, shutdown).await?;
        }
        Ok(())
    }

    /// Takes every item of the unit (or none), then writes and cycles under those holds.
    async fn replicate_unit(
        &self,
        items: &[String],
        holder: &str,
        shutdown: &Arc<AtomicBool>,
    ) -> Result<(), ServiceError> {
        let mut held: Vec<(String, i64)> = Vec::new();
        for id in items {
            match self.jobs.take_item_for_round(id, holder, ROUND_LEASE_MS).await? {
                Some(token) => held.push((id.clone(), token)),
                None => break,
            }
        }
        if held.len() == items.len() {
            let cancel = Arc::new(AtomicBool::new(false));
            let keeper = {
                let (held, holder, cancel, shutdown) =
                    (held.clone(), holder.to_owned(), cancel.clone(), shutdown.clone());
                Keeper::start("replication-lease", Duration::from_secs(1), self.jobs.clone(), move |rt, store| {
                    let kept = held.iter().all(|(id, token)| {
                        rt.block_on(store.renew_item_round(id, &holder, *token, ROUND_LEASE_MS)).unwrap_or(false)
                    });
                    if !kept || shutdown.load(Ordering::Relaxed) {
                        // A job wants one of the items (or the hold was lost): stop at the next chunk.
                        cancel.store(true, Ordering::Relaxed);
                        return false;
                    }
                    true
                })
            };
            // Agents running this cycle stop once the first item's hold is lost (the holds are taken and lost
            // together: a job wanting any of them ends the round).
            let fence = held.first().map(|(item, token)| Fence::Item {
                item: item.clone(),
                holder: holder.to_owned(),
                token: *token,
            });
            let result = self.write_and_cycle(items, cancel, fence).await;
            drop(keeper);
            for (id, token) in &held {
                self.jobs.release_item_round(id, holder, *token).await?;
            }
            return result;
        }
        for (id, token) in &held {
            self.jobs.release_item_round(id, holder, *token).await?;
        }
        Ok(())
    }

    /// Under the unit's holds: the guests write, then a cycle runs if one is due (read again now, since another
    /// node may have just run it).
    async fn write_and_cycle(
        &self,
        ids: &[String],
        cancel: Arc<AtomicBool>,
        fence: Option<Fence>,
    ) -> Result<(), ServiceError> {
        let doc = self.doc_of(ids).await?;
        let now = (self.clock)();
        let policy = doc.replication.clone();
        let mut pairs: Vec<(String, String)> = Vec::new();
        let mut cycled: Vec<String> = Vec::new();
        let mut blobs = crate::workflows::Blobs::new();
        // A group replicates through its first member's agents (a group shares its process server).
        let mut route: Option<Route> = None;
        let mut app = true;
        let mut keep_ms: Millis = 0;
        for rec in doc.items.iter().filter(|r| ids.contains(&r.item.id)) {
            // Found running where it may not since the round began: the next round puts it in split-brain.
            if crate::split_brain::intruder(rec).is_some() {
                continue;
            }
            let cloud_runs = rec.cloud_power && !rec.item.cloud_vm.as_ref().is_some_and(|v| v.deleted);
            let split = rec.item.state == State::SplitBrain;
            // In split-brain both VMs run and both write; otherwise the one that runs.
            let running: Vec<&String> = if split {
                let cloud = rec.cloud_disks.iter().filter(|_| cloud_runs);
                cloud.chain(rec.onprem_disks.iter().filter(|_| rec.onprem_power)).collect()
            } else if cloud_runs {
                rec.cloud_disks.iter().collect()
            } else if rec.onprem_power {
                rec.onprem_disks.iter().collect()
            } else {
                Vec::new()
            };
            if split && (cloud_runs || rec.onprem_power) {
                self.note_split_brain_writes(&rec.item.id, now).await?;
            }
            if policy.guest_bytes_per_tick > 0 {
                // A cloud VM whose disks are page blobs runs in Azure: nothing here simulates its guest.
                for d in running.into_iter().filter(|d| !(rec.cloud_storage.is_some() && rec.cloud_disks.contains(d))) {
                    let Ok(img) = replicator::DiskImage::open(&self.estate.path(d)) else { continue };
                    let pattern = replicator::workload::Pattern::HotSpot { hot_fraction: 0.05, hot_share: 0.9 };
                    // Two guests (a split-brain's) write their own data: the on-premises one from another seed.
                    let seed = if rec.onprem_disks.contains(d) { now ^ 0x5eed } else { now };
                    let mut w = replicator::workload::GuestWriter::open(&img, BLOCK_SIZE, pattern, seed)?;
                    w.step(policy.guest_bytes_per_tick)?;
                    w.quiesce()?;
                }
            }
            let item_pairs: Vec<(String, String)> = match rec.item.state {
                State::ProtectedToPrimary => {
                    rec.cloud_disks.iter().cloned().zip(rec.replica_disks.iter().cloned()).collect()
                }
                State::ProtectedToCloud => {
                    rec.onprem_disks.iter().cloned().zip(rec.cloud_disks.iter().cloned()).collect()
                }
                _ => continue,
            };
            if item_pairs.is_empty() || now.saturating_sub(rec.last_cycle_at) < policy.crash_consistent_every_ms {
                continue;
            }
            app &= now.saturating_sub(rec.last_app_cycle_at)
                >= rec.item.protection.app_consistent_every_ms(policy.app_consistent_every_ms);
            // A group keeps its points as long as its longest-keeping member asks: its common points (R-RP2) are
            // pruned together.
            keep_ms = keep_ms.max(rec.item.protection.retention_ms());
            let to_primary = rec.item.state == State::ProtectedToPrimary;
            route.get_or_insert_with(|| Route::for_item(&rec.item, &doc.inventory, to_primary, None, None));
            blobs.extend(crate::workflows::blobs_of(rec, &[]));
            pairs.extend(item_pairs);
            cycled.push(rec.item.id.clone());
        }
        if cycled.is_empty() {
            return Ok(());
        }
        let consistency =
            if app { replicator::Consistency::AppConsistent } else { replicator::Consistency::CrashConsistent };
        let exec = Workflows::new(self, cancel.clone(), Arc::new(AtomicBool::new(false)), fence);
        let retention = replicator::journal::Retention { max_age_ms: Some(keep_ms), max_points: None };
        let result = exec
            .cycle(&route.unwrap_or_default(), &pairs, replicator::Mode::Auto, consistency, &blobs, retention)
            .await;
        if result.is_err() && cancel.load(Ordering::Relaxed) {
            // Given up for a job (or a shutdown): not a failure of the item's replication.
            return Ok(());
        }
        self.estate
            .update(|doc| {
                for r in doc.items.iter_mut().filter(|r| cycled.contains(&r.item.id)) {
                    r.last_cycle_at = now;
                    match &result {
                        Ok(_) => {
                            if app {
                                r.last_app_cycle_at = now;
                            }
                            r.item.health = Health::Normal;
                            r.item.health_errors.clear();
                            // A verification dropped the replica's hashes: this cycle compared all of it with the
                            // cloud copy and rewrote what differed.
                            if let Some(v) = r.item.verification.as_mut().filter(|v| v.damaged()) {
                                if r.item.state == State::ProtectedToPrimary {
                                    v.repaired_at = Some(now);
                                }
                            }
                        }
                        // A failed cycle shows on the item (and blocks failover by R-C3) until one succeeds.
                        Err(f) => {
                            r.item.health = Health::Warning;
                            r.item.health_errors = vec![format!("{} — {}", f.error, f.recommended_action)];
                        }
                    }
                }
                Ok(())
            })
            .await?;
        Ok(())
    }
}

/// Runs replication rounds about once a second on a thread of its own (cycles do blocking disk IO), with its
/// database calls on `rt`, the process's runtime, until `shutdown`.
pub fn spawn(
    service: Arc<Service>,
    node: &Node,
    shutdown: Arc<AtomicBool>,
    rt: tokio::runtime::Handle,
) -> Option<std::thread::JoinHandle<()>> {
    let holder = format!("replication/{}/{}", node.id, node.boot);
    std::thread::Builder::new()
        .name("replication".into())
        .spawn(move || {
            rt.block_on(async {
                let mut rounds: u64 = 0;
                while !shutdown.load(Ordering::Relaxed) {
                    let started = std::time::Instant::now();
                    // About once a minute: forget the agents' ended assignments of more than a day ago.
                    if rounds.is_multiple_of(60) {
                        let before = (service.clock)().saturating_sub(crate::assignments::KEEP_MS) as i64;
                        if let Err(e) = service.assignments().prune(before).await {
                            tracing::warn!(error = %e, "pruning old assignments failed");
                        }
                    }
                    rounds += 1;
                    let round = std::panic::AssertUnwindSafe(service.replication_round(&holder, &shutdown));
                    match futures_util::FutureExt::catch_unwind(round).await {
                        Ok(Ok(())) => {}
                        Ok(Err(e)) => tracing::error!(error = %e, "a continuous replication round failed"),
                        Err(_) => tracing::error!("a continuous replication round panicked"),
                    }
                    let rest = Duration::from_secs(1).saturating_sub(started.elapsed());
                    tokio::time::sleep(rest.max(Duration::from_millis(100))).await;
                }
            });
        })
        .map_err(|e| tracing::error!(error = %e, "cannot start continuous replication"))
        .ok()
}
