//! The article end to end through the core on the demo estate: reprotect (original location: bytes sent ≈ changed
//! bytes; alternate: full) → failover with the app-consistent point → commit → re-protect to the cloud, each a job
//! whose tasks really move disk bytes; `qemu-img compare` checks the disks at each step.

use std::process::Command;

use orchestrator::db::Db;
use orchestrator::estate::Estate;
use orchestrator::jobs::{JobState, JobStore};
use orchestrator::lifecycle::{Location, Operation, Request, State, Transfer};
use orchestrator::points::PointChoice;
use orchestrator::service::{system_clock, Service, ServiceError};
#[path = "../../tests/support/postgres.rs"]
mod postgres;

/// The demo estate with its description in SQLite, or in PostgreSQL when `postgres`.
async fn service(dir: &std::path::Path, postgres: bool) -> Service {
    let url = if postgres {
        postgres::Cluster::get().database()
    } else {
        format!("sqlite://{}?mode=rwc", dir.join("homeward.db").display())
    };
    let db = Db::connect(&url, 4).await.unwrap();
    db.migrate().await.unwrap();
    let estate = Estate::new(&dir.join("estate"), db.clone());
    assert!(estate.create_once(orchestrator::demo::seed).await.unwrap().is_some());
    Service {
        estate,
        jobs: JobStore::new(db.clone()),
        agents: orchestrator::agents::Agents::new(db.clone()),
        connections: orchestrator::connections::Connections::new(
            db,
            orchestrator::connections::Sealer::load_or_create(dir).unwrap(),
        ),
        clock: system_clock,
    }
}

fn same_disk(a: &std::path::Path, fa: &str, b: &std::path::Path, fb: &str) {
    let out =
        Command::new("qemu-img").args(["compare", "-q", "-f", fa, "-F", fb]).arg(a).arg(b).output().expect("qemu-img");
    assert!(
        out.status.success(),
        "{} and {} differ: {}",
        a.display(),
        b.display(),
        String::from_utf8_lossy(&out.stderr)
    );
}

fn req(mt: &str, ps: &str, ds: Option<&str>) -> Request {
    Request {
        master_target: Some(mt.into()),
        process_server: Some(ps.into()),
        datastore: ds.map(Into::into),
        ..Request::default()
    }
}

async fn run(s: &Service, item: &str, op: Operation, r: &Request, key: &str) -> orchestrator::jobs::Job {
    let job = s.start(item, op, r, key).await.unwrap_or_else(|e| panic!("{op:?} on {item}: {e}"));
    assert!(s.work_once("test-worker").await.unwrap(), "a job to run");
    let job = s.jobs.get(&job.id).await.unwrap();
    assert_eq!(job.state, JobState::Succeeded, "{op:?} on {item}: {:?}", job.tasks);
    job
}

async fn state(s: &Service, item: &str) -> State {
    s.doc().await.unwrap().items.iter().find(|r| r.item.id == item).unwrap().item.state
}

#[tokio::test]
async fn the_whole_article_through_the_core_on_the_demo_estate_on_sqlite() {
    the_whole_article(false).await;
}

#[tokio::test]
async fn the_whole_article_through_the_core_on_the_demo_estate_on_postgresql() {
    the_whole_article(true).await;
}

async fn the_whole_article(postgres: bool) {
    let dir = tempfile::tempdir().unwrap();
    let s = service(dir.path(), postgres).await;
    let root = dir.path().join("estate");

    // Reprotect, original location (R-L1): only the changes travel.
    let r = req("mt-win-01", "ps-azure-01", None);
    let plan = s.dry_run("web01", Operation::Reprotect, &r).await.unwrap();
    assert!(plan.allowed, "{:?}", plan.refusals());
    assert_eq!((plan.location, plan.transfer), (Some(Location::Original), Some(Transfer::Delta)));
    let estimate = plan.bytes_to_move;
    assert!(estimate > 0 && estimate < orchestrator::demo::DISK_BYTES / 4, "estimate {estimate}");
    let job = run(&s, "web01", Operation::Reprotect, &r, "k-reprotect").await;
    let sent = job.tasks.iter().find(|t| t.step == "initial-replication").unwrap().bytes as u64;
    assert_eq!(sent, estimate, "the delta sends what the dry run estimated");
    assert_eq!(state(&s, "web01").await, State::ProtectedToPrimary);
    // The same request again does not start a second job.
    let again = s.start("web01", Operation::Reprotect, &r, "k-reprotect").await;
    assert_eq!(again.unwrap().id, job.id);

    // Failover with the app-consistent point (R-W2, R-RP2): the on-premises disk equals the cloud disk then.
    let (item, _) = s.item("web01").await.unwrap();
    let app = item
        .recovery_points
        .iter()
        .rev()
        .find(|p| p.kind == orchestrator::domain::PointKind::AppConsistent)
        .unwrap()
        .clone();
    let fr = Request { point: Some(PointChoice::LatestAppConsistent), ..Request::default() };
    let job = run(&s, "web01", Operation::Failover, &fr, "k-failover").await;
    assert!(job.tasks.iter().any(|t| t.name == "Re-enable VMware Tools (R-T1)"));
    assert_eq!(state(&s, "web01").await, State::FailedBackCommitPending);
    let doc = s.doc().await.unwrap();
    let rec = doc.items.iter().find(|r| r.item.id == "web01").unwrap();
    assert_eq!(rec.failed_back_point.as_deref(), Some(app.id.as_str()));
    assert!(rec.onprem_power && !rec.cloud_power);
    let onprem = root.join(&rec.onprem_disks[0]);
    let cloud = root.join(&rec.cloud_disks[0]);
    same_disk(&onprem, "vmdk", &cloud, "vpc");

    // Commit (R-W3) deletes the cloud copy.
    run(&s, "web01", Operation::Commit, &Request::default(), "k-commit").await;
    assert_eq!(state(&s, "web01").await, State::CommittedOnPrimary);
    assert!(!cloud.exists());

    // Re-protect to the cloud (R-W4): refused while the agent registers (R-A1), then done.
    let rr = Request { process_server: Some("cs-01".into()), ..Request::default() };
    match s.start("web01", Operation::ReprotectToCloud, &rr, "k-rtc").await {
        Err(ServiceError::Refused(r)) => {
            assert!(r.iter().any(|x| x.rule == "R-A1" && x.recommended_action.contains("Retry in")))
        }
        other => panic!("expected R-A1, got {other:?}"),
    }
    s.estate
        .update(|d| {
            d.items.iter_mut().find(|r| r.item.id == "web01").unwrap().item.agent_registered = true;
            Ok(())
        })
        .await
        .unwrap();
    run(&s, "web01", Operation::ReprotectToCloud, &rr, "k-rtc-2").await;
    assert_eq!(state(&s, "web01").await, State::ProtectedToCloud);
    let doc = s.doc().await.unwrap();
    let rec = doc.items.iter().find(|r| r.item.id == "web01").unwrap();
    same_disk(&root.join(&rec.onprem_disks[0]), "vmdk", &root.join(&rec.cloud_disks[0]), "vpc");

    // Alternate location (R-L2, R-L10): a new VM, a full copy.
    let r = req("mt-win-01", "ps-azure-01", Some("vmfs-02"));
    let plan = s.dry_run("app02", Operation::Reprotect, &r).await.unwrap();
    assert_eq!((plan.location, plan.transfer), (Some(Location::Alternate), Some(Transfer::Full)));
    assert!(!plan.allowed, "esxi-01 cannot reach vmfs-02 (R-L8)");
    let r = req("mt-win-01", "ps-azure-01", Some("vmfs-01"));
    run(&s, "app02", Operation::Reprotect, &r, "k-app02").await;
    let doc = s.doc().await.unwrap();
    let rec = doc.items.iter().find(|r| r.item.id == "app02").unwrap();
    same_disk(&root.join(&rec.replica_disks[0]), "vmdk", &root.join(&rec.cloud_disks[0]), "vpc");

    // The refused scenarios of the demo estate say why.
    for (item, rule) in [("phys08", "R-P2"), ("mig01", "R-B1")] {
        let r = req("mt-win-01", "ps-azure-01", Some("vmfs-01"));
        match s.start(item, Operation::Reprotect, &r, &format!("k-{item}")).await {
            Err(ServiceError::Refused(r)) => assert!(r.iter().any(|x| x.rule == rule), "{item}: {r:?}"),
            other => panic!("{item} should be refused by {rule}: {other:?}"),
        }
    }
}

/// Direction and active site per state, as the replicated items table shows them.
#[test]
fn direction_and_active_site_follow_the_lifecycle() {
    use orchestrator::domain::Site::{Primary, Recovery};
    use orchestrator::lifecycle::{active_site, direction, State as S};
    let table = [
        (S::ProtectedToCloud, Some((Primary, Recovery)), Primary),
        (S::CommittedInCloud, None, Recovery),
        (S::ReprotectInProgress, Some((Recovery, Primary)), Recovery),
        (S::ProtectedToPrimary, Some((Recovery, Primary)), Recovery),
        (S::FailedBackCommitPending, None, Primary),
        (S::CommittedOnPrimary, None, Primary),
        (S::ReprotectToCloudInProgress, Some((Primary, Recovery)), Primary),
    ];
    for (state, dir, site) in table {
        assert_eq!(direction(state), dir, "{state:?}");
        assert_eq!(active_site(state), site, "{state:?}");
    }
}

/// A job cancelled before any worker took it ends at once, and its item is back where it was.
#[tokio::test]
async fn cancelling_a_job_that_has_not_started_puts_the_item_back() {
    let dir = tempfile::tempdir().unwrap();
    let s = service(dir.path(), false).await;
    let job = s.start("web01", Operation::Reprotect, &req("mt-win-01", "ps-azure-01", None), "k").await.unwrap();
    assert_eq!(state(&s, "web01").await, State::ReprotectInProgress);
    assert_eq!(s.cancel_job(&job.id).await.unwrap(), JobState::Cancelled);
    assert_eq!(state(&s, "web01").await, State::CommittedInCloud);
    assert!(!s.work_once("w").await.unwrap(), "nothing left to run");
}

/// Retention per item (issue 12 §5): the retention chosen with the reprotect reaches the replica's journal. Points
/// older than it go at the next cycle, with their undo logs, and the journal's disk usage falls; newer ones stay.
#[tokio::test]
async fn an_items_retention_prunes_its_old_recovery_points_at_the_next_cycle() {
    let dir = tempfile::tempdir().unwrap();
    let s = service(dir.path(), false).await;
    // A cycle at every round, and a guest that writes between them: each undo log holds the bytes it overwrote.
    s.estate
        .update(|doc| {
            doc.replication.crash_consistent_every_ms = 0;
            doc.replication.guest_bytes_per_tick = 1 << 20;
            Ok(())
        })
        .await
        .unwrap();
    let r = Request { retention_min: Some(60), ..req("mt-win-01", "ps-azure-01", None) };
    run(&s, "web01", Operation::Reprotect, &r, "k-retention").await;
    let (item, _) = s.item("web01").await.unwrap();
    assert_eq!(item.protection.retention_min, Some(60), "the reprotect's choice is the item's");
    let shutdown = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    for _ in 0..3 {
        s.replication_round("replication/test", &shutdown).await.unwrap();
    }
    let before: Vec<String> = s.item("web01").await.unwrap().0.recovery_points.iter().map(|p| p.id.clone()).collect();
    assert!(before.len() >= 5, "{before:?}");

    let doc = s.doc().await.unwrap();
    let rec = doc.items.iter().find(|r| r.item.id == "web01").unwrap();
    let replica = replicator::DiskImage::open(&dir.path().join("estate").join(&rec.replica_disks[0])).unwrap();
    let journal = replica.state_dir().join("points");
    let undo_bytes = || -> u64 {
        std::fs::read_dir(&journal)
            .unwrap()
            .filter_map(Result::ok)
            .filter(|e| e.file_name().to_string_lossy().starts_with("undo-"))
            .map(|e| e.metadata().unwrap().len())
            .sum()
    };
    let used_before = undo_bytes();
    // Two hours pass for every point but the newest two, as the journal records when each was taken.
    let file = journal.join("points.json");
    let mut points: Vec<serde_json::Value> = serde_json::from_slice(&std::fs::read(&file).unwrap()).unwrap();
    let n = points.len();
    let mut aged = Vec::new();
    for p in &mut points[..n - 2] {
        let t = p["created_at_ms"].as_u64().unwrap();
        p["created_at_ms"] = (t - 2 * 3_600_000).into();
        aged.push(p["id"].as_str().unwrap().to_owned());
    }
    std::fs::write(&file, serde_json::to_vec(&points).unwrap()).unwrap();

    s.replication_round("replication/test", &shutdown).await.unwrap();
    let after: Vec<String> = s.item("web01").await.unwrap().0.recovery_points.iter().map(|p| p.id.clone()).collect();
    assert!(after.iter().all(|p| !aged.contains(p)), "points older than the retention are gone: {after:?}");
    assert_eq!(after.len(), 3, "the newest two and the new one stay: {after:?}");
    assert_eq!(&after[..2], &before[before.len() - 2..]);
    let used_after = undo_bytes();
    assert!(used_after < used_before, "the journal's undo logs shrank: {used_before} → {used_after} bytes");
}

/// A failed drill stays on its job and its report: the item's health and its failover are untouched (R-C3 would
/// refuse a real failover of an item whose health a drill had made worse), and its cleanup still removes the test
/// VM. Here the network stops being isolated between the drill's start and its checks.
#[tokio::test]
async fn a_failed_drill_leaves_the_items_health_and_its_failover_alone() {
    let dir = tempfile::tempdir().unwrap();
    let s = service(dir.path(), false).await;
    run(&s, "web01", Operation::Reprotect, &req("mt-win-01", "ps-azure-01", None), "k-r").await;
    let drill = Request { network: Some("drill-isolated".into()), ..Request::default() };
    let job = s.start("web01", Operation::TestFailover, &drill, "k-t").await.unwrap();
    s.set_network_isolation("drill-isolated", false).await.unwrap();
    assert!(s.work_once("test-worker").await.unwrap());
    let job = s.jobs.get(&job.id).await.unwrap();
    assert_eq!(job.state, JobState::Failed, "{:?}", job.tasks);
    let failed = job.tasks.iter().find(|t| t.state.as_str() == "failed").unwrap();
    assert_eq!(failed.step, "check-test-vm");
    assert!(failed.error.as_deref().unwrap_or("").contains("no longer marked isolated"), "{failed:?}");

    let (item, _) = s.item("web01").await.unwrap();
    assert_eq!(item.health, orchestrator::domain::Health::Normal, "{:?}", item.health_errors);
    assert!(item.last_failure.is_none(), "{:?}", item.last_failure);
    assert!(item.drill.is_some(), "the test VM exists until its cleanup");
    let report = s.drills().get(&job.id).await.unwrap().unwrap();
    assert_eq!(report.status, "checks-failed");
    let failover = s.dry_run("web01", Operation::Failover, &Request::default()).await.unwrap();
    assert!(failover.allowed, "{:?}", failover.refusals());
    run(&s, "web01", Operation::CleanupTestFailover, &Request::default(), "k-c").await;
    assert!(s.item("web01").await.unwrap().0.drill.is_none());
}

/// A replication round per call, a cycle at every round and a guest that writes between them.
async fn busy_guests(s: &Service) {
    s.estate
        .update(|doc| {
            doc.replication.crash_consistent_every_ms = 0;
            doc.replication.guest_bytes_per_tick = 1 << 20;
            Ok(())
        })
        .await
        .unwrap();
}

async fn round(s: &Service) {
    let shutdown = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    s.replication_round("replication/test", &shutdown).await.unwrap();
}

fn knobs(json: serde_json::Value) -> orchestrator::estate::FaultKnobs {
    serde_json::from_value(json).unwrap()
}

/// The on-premises VM powered on outside Homeward while the item is protected to on-premises writes the replica:
/// the next round finds a split-brain and stops (no cycle overwrites those writes, no point is taken). The
/// operator keeps the cloud copy with a reason: the on-premises VM's divergent blocks are kept, it is shut down, the
/// replica is the cloud copy again and replication resumes on a new chain of points (the old ones cannot be
/// restored any more); the next commit removes what was kept.
#[tokio::test]
async fn a_split_brain_on_premises_is_found_and_ended_by_keeping_the_cloud_copy() {
    let dir = tempfile::tempdir().unwrap();
    let s = service(dir.path(), false).await;
    run(&s, "web01", Operation::Reprotect, &req("mt-win-01", "ps-azure-01", None), "k-r").await;
    busy_guests(&s).await;
    round(&s).await;
    let points_before = s.item("web01").await.unwrap().0.recovery_points.len();
    assert!(points_before >= 2, "{points_before}");

    s.apply_faults(&knobs(serde_json::json!({"start_onprem_vm": "web01"}))).await.unwrap();
    round(&s).await;
    let (item, _) = s.item("web01").await.unwrap();
    assert_eq!(item.state, State::SplitBrain);
    let sb = item.split_brain.clone().expect("the split-brain is recorded");
    assert_eq!(sb.from, State::ProtectedToPrimary);
    assert_eq!(sb.intruder, orchestrator::domain::Site::Primary);
    assert!(sb.cloud_last_write_at.is_some() && sb.onprem_last_write_at.is_some(), "{sb:?}");
    // Both VMs run and write; nothing replicates.
    round(&s).await;
    round(&s).await;
    let (item, _) = s.item("web01").await.unwrap();
    assert_eq!(item.recovery_points.len(), points_before, "no cycle in split-brain");
    assert!(item.split_brain.as_ref().unwrap().onprem_last_write_at >= sb.onprem_last_write_at);
    let changes = s.evaluate_alerts().await.unwrap();
    assert!(changes.iter().any(|c| format!("{c:?}").contains("split-brain")), "{changes:?}");

    let failover = s.dry_run("web01", Operation::Failover, &Request::default()).await.unwrap();
    assert!(failover.refusals().iter().any(|r| r.rule == "R-W2"), "{:?}", failover.refusals());
    let no_reason = s.dry_run("web01", Operation::KeepCloudCopy, &Request::default()).await.unwrap();
    assert!(!no_reason.allowed);
    assert_eq!(no_reason.refusals()[0].rule, "SB-2", "{:?}", no_reason.refusals());
    assert!(matches!(
        s.start("web01", Operation::KeepCloudCopy, &Request::default(), "k-none").await,
        Err(ServiceError::Refused(r)) if r[0].rule == "SB-2"
    ));

    let why = Request {
        reason: Some("the on-premises VM was started by mistake during patching".into()),
        ..Request::default()
    };
    let job = run(&s, "web01", Operation::KeepCloudCopy, &why, "k-keep").await;
    assert_eq!(job.tasks.len(), 4);
    let doc = s.doc().await.unwrap();
    let rec = doc.items.iter().find(|r| r.item.id == "web01").unwrap().clone();
    assert_eq!(rec.item.state, State::ProtectedToPrimary);
    assert!(rec.item.split_brain.is_none());
    assert!(!rec.onprem_power && rec.cloud_power);
    let kept = &rec.item.kept_copies;
    assert_eq!(kept.len(), 1, "{kept:?}");
    assert_eq!(kept[0].site, orchestrator::domain::Site::Primary);
    assert_eq!(kept[0].reason, why.reason.clone().unwrap());
    assert!(kept[0].blocks > 0 && kept[0].bytes >= kept[0].blocks, "{:?}", kept[0]);
    let root = dir.path().join("estate");
    let file = root.join(&kept[0].files[0]);
    assert!(file.exists(), "{}", file.display());
    // The replica is the cloud copy again, on a new chain: one point, from the resync.
    let cloud = replicator::DiskImage::open(&root.join(&rec.cloud_disks[0])).unwrap();
    let replica = replicator::DiskImage::open(&root.join(&rec.replica_disks[0])).unwrap();
    same_disk(&cloud.path, cloud.format.qemu_name(), &replica.path, replica.format.qemu_name());
    let points = s.item("web01").await.unwrap().0.recovery_points;
    assert_eq!(points.len(), 1, "only the resync's point: {points:?}");

    // SB-3: the kept blocks are a point a failover can choose — none other than the ones kept, and not for a plan.
    let wrong = Request { point: Some(PointChoice::KeptCopy("job-nope".into())), ..Request::default() };
    let plan = s.dry_run("web01", Operation::Failover, &wrong).await.unwrap();
    assert!(plan.refusals().iter().any(|r| r.rule == "SB-3" && r.message.contains("job-nope")), "{plan:?}");
    let options = orchestrator::points::options(&s.item("web01").await.unwrap().0);
    let kept_choice = PointChoice::KeptCopy(kept[0].job.clone());
    assert!(options.iter().any(|o| o.choice == kept_choice), "offered in the confirmation: {options:?}");
    let item = s.item("web01").await.unwrap().0;
    assert_eq!(orchestrator::points::plan_points(&[&item], &kept_choice).unwrap_err().rule, "SB-3");

    // Fail over to the newest point with the on-premises VM's kept blocks over it: what it wrote during the
    // split-brain is back, block for block, and every other block is the point's (the replica, as no cycle ran).
    let with_kept = Request { point: Some(kept_choice), ..Request::default() };
    let plan = s.dry_run("web01", Operation::Failover, &with_kept).await.unwrap();
    assert!(plan.allowed, "{:?}", plan.refusals());
    assert!(
        plan.tasks
            .iter()
            .any(|t| t.name.contains(&format!("{} blocks kept from the on-premises copy", kept[0].blocks))),
        "{:?}",
        plan.tasks
    );
    let map = std::fs::read(root.join(&kept[0].block_maps[0])).unwrap();
    let offsets: std::collections::HashSet<u64> =
        map.chunks_exact(8).map(|c| u64::from_le_bytes(c.try_into().unwrap())).collect();
    assert_eq!(offsets.len() as u64, kept[0].blocks);
    let replica = replica.open_data_read().unwrap();
    let kept_file = std::fs::File::open(&file).unwrap();
    let read = |f: &std::fs::File, at: u64| {
        use std::os::unix::fs::FileExt;
        let mut b = vec![0u8; 65536];
        let n = f.read_at(&mut b, at).unwrap();
        b.truncate(n);
        b
    };
    let is_point_with_kept_blocks = |disk: &std::path::Path| {
        let disk = replicator::DiskImage::open(disk).unwrap().open_data_read().unwrap();
        let (mut from_kept, mut from_point) = (0, 0);
        let mut at = 0;
        while at < cloud.size {
            if offsets.contains(&at) {
                assert_eq!(read(&disk, at), read(&kept_file, at), "kept block at {at}");
                from_kept += 1;
            } else {
                assert!(read(&disk, at) == read(&replica, at), "the point's block at {at}");
                from_point += 1;
            }
            at += 65536;
        }
        assert!(from_kept > 0 && from_point > from_kept, "{from_kept} kept, {from_point} from the point");
    };
    // A drill first, to look at them: its test VM's disks are the point with the kept blocks over it.
    let drill = Request { network: Some("drill-isolated".into()), ..with_kept.clone() };
    let job = run(&s, "web01", Operation::TestFailover, &drill, "k-t").await;
    assert!(job.tasks[0].result.as_deref().unwrap_or("").contains("kept_copy"), "{:?}", job.tasks);
    let test_vm = s.item("web01").await.unwrap().0.drill.expect("a live drill");
    is_point_with_kept_blocks(&root.join(&test_vm.disks[0]));
    // Then the failover (its first tasks clean the drill up).
    let job = run(&s, "web01", Operation::Failover, &with_kept, "k-f").await;
    assert!(job.tasks.iter().any(|t| t.result.as_deref().unwrap_or("").contains("kept_copy")), "{:?}", job.tasks);
    is_point_with_kept_blocks(&root.join(rec.replica_disks[0].replace(".vmdk", "-failback.vmdk")));

    // The commit removes what was kept, maps included.
    run(&s, "web01", Operation::Commit, &Request::default(), "k-c").await;
    assert!(!file.exists(), "the commit removed the kept blocks");
    assert!(!root.join(&kept[0].block_maps[0]).exists(), "and their map");
    assert!(s.item("web01").await.unwrap().0.kept_copies.is_empty());
}

/// The cloud VM started again after a failback, before commit: split-brain. Keeping the on-premises copy shuts the
/// cloud VM down and keeps its divergent blocks; the replica's points are untouched (nothing wrote the replica) and
/// the item waits for commit again.
#[tokio::test]
async fn a_split_brain_after_failback_is_ended_by_keeping_the_on_premises_copy() {
    let dir = tempfile::tempdir().unwrap();
    let s = service(dir.path(), false).await;
    run(&s, "web01", Operation::Reprotect, &req("mt-win-01", "ps-azure-01", None), "k-r").await;
    run(&s, "web01", Operation::Failover, &Request { point: Some(PointChoice::Latest), ..Request::default() }, "k-f")
        .await;
    busy_guests(&s).await;
    let points_before = s.item("web01").await.unwrap().0.recovery_points;
    s.apply_faults(&knobs(serde_json::json!({"start_cloud_vm": "web01"}))).await.unwrap();
    round(&s).await;
    let (item, _) = s.item("web01").await.unwrap();
    assert_eq!(item.state, State::SplitBrain);
    assert_eq!(item.split_brain.as_ref().unwrap().intruder, orchestrator::domain::Site::Recovery);
    round(&s).await;
    let commit = s.dry_run("web01", Operation::Commit, &Request::default()).await.unwrap();
    assert!(!commit.allowed, "no commit while both copies changed");

    let why = Request { reason: Some("on-premises is production since the failback".into()), ..Request::default() };
    run(&s, "web01", Operation::KeepOnPremisesCopy, &why, "k-keep").await;
    let doc = s.doc().await.unwrap();
    let rec = doc.items.iter().find(|r| r.item.id == "web01").unwrap();
    assert_eq!(rec.item.state, State::FailedBackCommitPending);
    assert!(!rec.cloud_power && rec.onprem_power);
    assert_eq!(rec.item.kept_copies[0].site, orchestrator::domain::Site::Recovery);
    assert!(rec.item.kept_copies[0].blocks > 0, "{:?}", rec.item.kept_copies);
    assert_eq!(s.item("web01").await.unwrap().0.recovery_points, points_before, "the replica's points stay");
    round(&s).await;
    assert_eq!(state(&s, "web01").await, State::FailedBackCommitPending, "no split-brain once the cloud VM is off");
}
