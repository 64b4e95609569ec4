//! The durable job engine against real databases — every test runs on SQLite and on a throw-away PostgreSQL:
//! idempotency, one active job per item (R-W5), claims with leases and fencing in database time, resume after a
//! crash without running a finished task twice, state derived from tasks, cancel and restart, retries with
//! backoff, a panicking step, concurrent workers, and the item leases that keep replication rounds and jobs apart.

#[path = "../../tests/support/postgres.rs"]
mod postgres;

use std::cell::RefCell;
use std::collections::{HashMap, HashSet};

use orchestrator::db::{Backend, Db};
use orchestrator::jobs::*;

/// A migrated database of each engine.
async fn databases() -> Vec<(Db, Option<tempfile::TempDir>)> {
    let dir = tempfile::tempdir().unwrap();
    let sqlite = Db::connect(&format!("sqlite://{}?mode=rwc", dir.path().join("jobs.db").display()), 8).await.unwrap();
    let pg = Db::connect(&postgres::Cluster::get().database(), 8).await.unwrap();
    let mut out = vec![(sqlite, Some(dir)), (pg, None)];
    for (db, _) in &mut out {
        db.migrate().await.unwrap();
    }
    out
}

async fn stores() -> Vec<(JobStore, Option<tempfile::TempDir>)> {
    databases().await.into_iter().map(|(db, d)| (JobStore::new(db), d)).collect()
}

fn new_job(id: &str, item: &str, key: &str, tasks: &[&str]) -> NewJob {
    NewJob {
        id: id.into(),
        kind: "reprotect".into(),
        item_id: Some(item.into()),
        plan_id: None,
        request: format!("{{\"item\":\"{item}\"}}"),
        idempotency_key: key.into(),
        tasks: tasks.iter().map(|t| (t.replace(' ', "-"), t.to_string())).collect(),
        items: Vec::new(),
    }
}

/// The lease of `job` runs out now, as if its worker had died long ago.
async fn expire_lease(s: &JobStore, job: &str) {
    sqlx::query("update jobs set lease_expires_at = 0 where id = $1").bind(job).execute(&s.db.pool).await.unwrap();
}

const LEASE: u64 = 60_000;

/// Records every task it runs; fails the tasks named in `fail` (retryable ones in `flaky`, that many times).
#[derive(Default)]
struct Recorder {
    ran: RefCell<Vec<String>>,
    fail: Vec<String>,
    flaky: RefCell<HashMap<String, u32>>,
    panic_on: Option<String>,
}

impl TaskExecutor for Recorder {
    async fn run(&self, job: &Job, task: &Task) -> Result<TaskOutcome, TaskFailure> {
        self.ran.borrow_mut().push(format!("{}:{}", job.id, task.name));
        if self.panic_on.as_deref() == Some(task.name.as_str()) {
            panic!("index out of bounds: the len is 0 but the index is 3");
        }
        if self.fail.contains(&task.name) {
            return Err(TaskFailure::fatal(
                format!("{} failed: vCenter vc1 is disconnected", task.name),
                "Reconnect vCenter vc1, then restart the job.",
            ));
        }
        if let Some(left) = self.flaky.borrow_mut().get_mut(&task.name).filter(|n| **n > 0) {
            *left -= 1;
            return Err(TaskFailure::retryable("the process server's link dropped", "Check the link."));
        }
        Ok(TaskOutcome { bytes: 4096, result: format!("{{\"task\":\"{}\"}}", task.name) })
    }
}

#[tokio::test]
async fn r_w5_an_item_has_at_most_one_active_job_and_requests_are_idempotent() {
    for (s, _d) in stores().await {
        let (j, created) = s.create(new_job("j1", "web01", "k1", &["a", "b"])).await.unwrap();
        assert!(created);
        assert_eq!(j.state, JobState::NotStarted);
        assert_eq!(j.tasks.len(), 2);
        // The same request again (a retried POST) returns the same job.
        let (again, created) = s.create(new_job("j1-retry", "web01", "k1", &["a", "b"])).await.unwrap();
        assert_eq!((again.id.as_str(), created), ("j1", false));
        // The same key for another request is refused.
        let mut other = new_job("j2", "db01", "k1", &["a"]);
        other.request = "{}".into();
        assert!(matches!(s.create(other).await, Err(JobError::IdempotencyConflict { job, .. }) if job == "j1"));
        // A second job on the same item is refused, naming the active one — the constraint is recognised by its
        // name on either engine.
        let e = s.create(new_job("j3", "web01", "k3", &["a"])).await.unwrap_err();
        assert!(matches!(&e, JobError::ItemBusy { active_job, .. } if active_job == "j1"), "{:?}: {e}", s.db.backend);
        assert!(e.to_string().contains("R-W5"));
        // Once the first ends, the item takes a new job.
        let lease = s.claim("w1", LEASE).await.unwrap().unwrap();
        run_job(&s, &lease, &Recorder::default(), LEASE).await.unwrap();
        s.create(new_job("j4", "web01", "k4", &["a"])).await.unwrap();
    }
}

/// An item's page lists its own jobs, each with its tasks, whatever other items' jobs the vault holds.
#[tokio::test]
async fn an_items_jobs_are_listed_by_the_item_with_their_tasks() {
    for (s, _dir) in stores().await {
        s.create(new_job("j1", "web01", "k1", &["a", "b"])).await.unwrap();
        let lease = s.claim("w1", LEASE).await.unwrap().unwrap();
        run_job(&s, &lease, &Recorder::default(), LEASE).await.unwrap();
        s.create(new_job("j2", "web01", "k2", &["c"])).await.unwrap();
        s.create(new_job("j3", "sql01", "k3", &["d"])).await.unwrap();
        let web = s.list_for_item("web01", 10).await.unwrap();
        let ids: HashSet<&str> = web.iter().map(|j| j.id.as_str()).collect();
        assert_eq!(ids, HashSet::from(["j1", "j2"]), "{:?}", s.db.backend);
        let j1 = web.iter().find(|j| j.id == "j1").unwrap();
        assert_eq!(j1.tasks.iter().map(|t| t.step.as_str()).collect::<Vec<_>>(), ["a", "b"]);
        assert!(web.iter().all(|j| j.tasks.iter().all(|t| t.step != "d")), "no other item's tasks");
        assert_eq!(s.list_for_item("web01", 1).await.unwrap().len(), 1);
        let sql = s.list_for_item("sql01", 10).await.unwrap();
        assert_eq!(sql.iter().map(|j| j.id.as_str()).collect::<Vec<_>>(), ["j3"]);
        assert!(s.list_for_item("nothing", 10).await.unwrap().is_empty());
    }
}

fn plan_job(id: &str, key: &str, items: &[&str]) -> NewJob {
    NewJob {
        id: id.into(),
        kind: "plan-failover".into(),
        item_id: None,
        plan_id: Some("plan-erp".into()),
        request: "{}".into(),
        idempotency_key: key.into(),
        tasks: items.iter().map(|i| (format!("plan-item-failover/{i}"), format!("Group 1: fail over {i}"))).collect(),
        items: items.iter().map(|i| i.to_string()).collect(),
    }
}

/// A recovery plan's job works on several items: while it is active each of them is as busy as under a job of its
/// own, both ways round, and a restarted job takes its items back only when they are free.
#[tokio::test]
async fn r_w5_a_plans_job_holds_its_items_like_their_own_jobs() {
    for (s, _d) in stores().await {
        s.create(plan_job("p1", "k1", &["erp-db", "erp-app"])).await.unwrap();
        let busy = |e: JobError| match e {
            JobError::ItemBusy { item, active_job } => (item, active_job),
            e => panic!("{:?}: {e}", s.db.backend),
        };
        let e = s.create(new_job("j1", "erp-app", "k2", &["a"])).await.unwrap_err();
        assert_eq!(busy(e), ("erp-app".into(), "p1".into()));
        assert_eq!(s.active_job_for_item("erp-db").await.unwrap().as_deref(), Some("p1"));
        let by_item = s.active_jobs_by_item().await.unwrap();
        assert_eq!((by_item.get("erp-db"), by_item.get("erp-app")), (Some(&"p1".into()), Some(&"p1".into())));
        // Another plan sharing one item waits its turn; an item outside the plan is free.
        let e = s.create(plan_job("p2", "k3", &["web01", "erp-db"])).await.unwrap_err();
        assert_eq!(busy(e), ("erp-db".into(), "p1".into()));
        s.create(new_job("j2", "web01", "k4", &["a"])).await.unwrap();
        // Nothing of a refused job is left behind.
        assert!(matches!(s.get("p2").await, Err(JobError::NotFound(_))));
        assert!(matches!(s.get("j1").await, Err(JobError::NotFound(_))));

        // The plan's job ends: its items take jobs again, and restarting it is refused while one of them has one.
        s.cancel("p1").await.unwrap();
        assert_eq!(s.active_job_for_item("erp-db").await.unwrap(), None);
        s.create(new_job("j3", "erp-db", "k5", &["a"])).await.unwrap();
        let e = s.restart("p1").await.unwrap_err();
        assert_eq!(busy(e), ("erp-db".into(), "j3".into()));
        assert_eq!(s.get("p1").await.unwrap().state, JobState::Cancelled, "a refused restart changes nothing");
        s.cancel("j3").await.unwrap();
        s.restart("p1").await.unwrap();
        assert_eq!(s.active_job_for_item("erp-app").await.unwrap().as_deref(), Some("p1"));
        // A single item's job restarted while a plan holds its item is refused the same way.
        let e = s.restart("j3").await.unwrap_err();
        assert_eq!(busy(e), ("erp-db".into(), "p1".into()));

        // Racing plans and single jobs over one item: exactly one wins, the others are told which job holds it
        // (rounds, since one round may not overlap the racers' transactions at all).
        for round in 0..10 {
            let (a, b) = (format!("race{round}-a"), format!("race{round}-b"));
            let racers = (0..8).map(|i| {
                let (s, a, b) = (s.clone(), a.clone(), b.clone());
                async move {
                    let id = format!("race{round}-{i}");
                    let new = if i % 2 == 0 { plan_job(&id, &id, &[&a, &b]) } else { new_job(&id, &b, &id, &["a"]) };
                    s.create(new).await.map(|(j, _)| j.id)
                }
            });
            let results = futures_util::future::join_all(racers).await;
            let won: Vec<&String> = results.iter().filter_map(|r| r.as_ref().ok()).collect();
            assert_eq!(won.len(), 1, "{:?}: {results:?}", s.db.backend);
            for r in &results {
                if let Err(e) = r {
                    assert!(matches!(e, JobError::ItemBusy { active_job, .. } if active_job == won[0]), "{e}");
                }
            }
        }
    }
}

#[tokio::test]
async fn only_one_worker_wins_a_claim_and_a_fenced_worker_changes_nothing() {
    for (s, _d) in stores().await {
        s.create(new_job("j1", "web01", "k1", &["a", "b"])).await.unwrap();
        let a = s.claim("w1", LEASE).await.unwrap().unwrap();
        assert_eq!(s.claim("w2", LEASE).await.unwrap(), None, "the lease is held");
        // The lease is in the database's time: it ends about LEASE from the database's now.
        let (expires, now): (i64, i64) = (
            sqlx::query_scalar("select lease_expires_at from jobs where id = 'j1'")
                .fetch_one(&s.db.pool)
                .await
                .unwrap(),
            s.db.now().await.unwrap(),
        );
        assert!((expires - now - LEASE as i64).abs() < 5_000, "{:?}: {expires} vs {now}", s.db.backend);
        // w1 stalls past its lease; w2 takes over with a new fencing token.
        expire_lease(&s, "j1").await;
        let b = s.claim("w2", LEASE).await.unwrap().unwrap();
        assert!(b.token > a.token);
        assert!(matches!(s.heartbeat(&a, LEASE).await, Err(JobError::Fenced(_))));
        assert!(matches!(s.start_task(&a, 0).await, Err(JobError::Fenced(_))));
        s.start_task(&b, 0).await.unwrap();
        assert!(matches!(s.complete_task(&a, 0, 1, "{}").await, Err(JobError::Fenced(_))));
        s.complete_task(&b, 0, 1, "{}").await.unwrap();
        assert!(matches!(s.finish(&a).await, Err(JobError::Fenced(_))));
    }
}

#[tokio::test]
async fn a_restarted_node_takes_its_own_jobs_back_at_once_but_never_a_sibling_workers() {
    for (s, _d) in stores().await {
        s.create(new_job("j1", "web01", "k1", &["a"])).await.unwrap();
        s.claim("node1/boot1/w0", LEASE).await.unwrap().unwrap();
        assert_eq!(s.claim("node1/boot1/w1", LEASE).await.unwrap(), None, "a sibling worker of the same run");
        assert_eq!(s.claim("node2/bootx/w0", LEASE).await.unwrap(), None, "another node waits for the lease");
        let back = s.claim("node1/boot2/w3", LEASE).await.unwrap();
        assert!(back.is_some(), "{:?}: the same node after a restart takes it back at once", s.db.backend);
    }
}

#[tokio::test]
async fn after_a_crash_the_job_resumes_from_its_last_completed_task_and_no_task_runs_twice() {
    for (s, _d) in stores().await {
        s.create(new_job("j1", "web01", "k1", &["power off", "sync", "start replication", "done"])).await.unwrap();
        let lease = s.claim("w1", LEASE).await.unwrap().unwrap();
        // w1 completes two tasks, starts the third, then dies.
        for seq in 0..2 {
            s.start_task(&lease, seq).await.unwrap();
            s.complete_task(&lease, seq, 10, "{}").await.unwrap();
        }
        s.start_task(&lease, 2).await.unwrap();
        let rec = Recorder::default();
        expire_lease(&s, "j1").await;
        let lease2 = s.claim("w2", LEASE).await.unwrap().expect("an expired lease is claimable");
        assert_eq!(run_job(&s, &lease2, &rec, LEASE).await.unwrap(), JobState::Succeeded);
        assert_eq!(*rec.ran.borrow(), vec!["j1:start replication", "j1:done"], "finished tasks are not run again");
        let job = s.get("j1").await.unwrap();
        assert_eq!(job.state, JobState::Succeeded);
        assert_eq!(job.tasks[2].attempts, 2, "the interrupted task ran again, once");
        assert_eq!(job.tasks[0].attempts, 1);
        assert!(job.started_at.is_some() && job.finished_at >= job.started_at);
        assert_eq!(s.claim("w3", LEASE).await.unwrap(), None, "nothing left to run");
    }
}

#[tokio::test]
async fn a_fatal_failure_ends_the_job_at_once_with_the_recommended_action_and_it_can_restart_from_there() {
    for (s, _d) in stores().await {
        s.create(new_job("j1", "web01", "k1", &["shut down cloud VM", "attach disks", "power on"])).await.unwrap();
        let lease = s.claim("w1", LEASE).await.unwrap().unwrap();
        let rec = Recorder { fail: vec!["attach disks".into()], ..Default::default() };
        assert_eq!(run_job(&s, &lease, &rec, LEASE).await.unwrap(), JobState::Failed);
        let job = s.get("j1").await.unwrap();
        assert_eq!(job.tasks[1].state, JobState::Failed);
        assert_eq!(job.tasks[1].attempts, 1, "a fatal failure is not retried");
        assert_eq!(job.tasks[2].state, JobState::NotStarted, "a later task never ran");
        assert!(job.recommended_action.as_deref().unwrap().contains("Reconnect vCenter"));
        assert_eq!(job.allowed_actions(), vec![JobAction::Restart]);
        // Not "succeeded" while a task has not: finishing early is refused.
        s.restart("j1").await.unwrap();
        let lease = s.claim("w1", LEASE).await.unwrap().unwrap();
        assert!(s.finish(&lease).await.is_err(), "no phantom completion");
        let rec = Recorder::default();
        assert_eq!(run_job(&s, &lease, &rec, LEASE).await.unwrap(), JobState::Succeeded);
        assert_eq!(*rec.ran.borrow(), vec!["j1:attach disks", "j1:power on"]);
    }
}

#[tokio::test]
async fn a_retryable_failure_is_tried_again_after_a_growing_backoff_up_to_the_attempt_cap() {
    for (mut s, _d) in stores().await {
        s.retry = RetryPolicy { max_attempts: 3, first_backoff_ms: 60_000, max_backoff_ms: 600_000 };
        assert_eq!((s.retry.backoff(1), s.retry.backoff(2), s.retry.backoff(9)), (60_000, 120_000, 600_000));
        s.create(new_job("j1", "web01", "k1", &["sync", "done"])).await.unwrap();
        let rec = Recorder::default();
        rec.flaky.borrow_mut().insert("sync".into(), 5);
        // Attempt 1 fails: the job is handed back, the task shows its error and when it runs next.
        let lease = s.claim("w1", LEASE).await.unwrap().unwrap();
        assert_eq!(run_job(&s, &lease, &rec, LEASE).await.unwrap(), JobState::InProgress);
        let job = s.get("j1").await.unwrap();
        let t = &job.tasks[0];
        assert_eq!((job.state, t.state, t.attempts), (JobState::InProgress, JobState::NotStarted, 1));
        assert!(t.error.as_deref().unwrap().contains("attempt 1 of 3"), "{:?}", t.error);
        let now = s.db.now().await.unwrap() as u64;
        let next = t.next_attempt_at.expect("the next attempt's time");
        assert!(next > now + 50_000 && next <= now + 61_000, "{:?}: next {next}, now {now}", s.db.backend);
        assert_eq!(s.claim("w2", LEASE).await.unwrap(), None, "not before its time");
        // Its time comes: attempt 2 fails, then attempt 3 fails for good.
        for attempt in 2..=3 {
            expire_lease(&s, "j1").await;
            let lease = s.claim("w2", LEASE).await.unwrap().expect("claimable once the backoff is over");
            let end = run_job(&s, &lease, &rec, LEASE).await.unwrap();
            assert_eq!(end, if attempt < 3 { JobState::InProgress } else { JobState::Failed });
        }
        let job = s.get("j1").await.unwrap();
        assert_eq!((job.state, job.tasks[0].attempts), (JobState::Failed, 3));
        assert_eq!(job.tasks[1].state, JobState::NotStarted);
        assert_eq!(rec.ran.borrow().len(), 3);
    }
}

/// A recovery plan's engine in miniature: tasks named `gN …` belong to group N and run side by side with the rest
/// of their group; a task of group 2 on its first attempt waits until its group's other task has started too, so
/// running them one after the other times out.
struct Grouped {
    rec: Recorder,
    together: tokio::sync::Barrier,
}

impl TaskExecutor for Grouped {
    async fn run(&self, job: &Job, task: &Task) -> Result<TaskOutcome, TaskFailure> {
        if task.name.starts_with("g2 ") && task.attempts == 0 {
            let met = tokio::time::timeout(std::time::Duration::from_secs(5), self.together.wait()).await;
            if met.is_err() {
                return Err(TaskFailure::fatal(format!("{} ran alone", task.name), "Run the group together."));
            }
        }
        self.rec.run(job, task).await
    }

    fn side_by_side(&self, _job: &Job, task: &Task) -> Option<String> {
        task.name.split(' ').next().map(str::to_owned)
    }

    async fn run_together(&self, job: &Job, tasks: &[&Task]) -> Vec<Result<TaskOutcome, TaskFailure>> {
        futures_util::future::join_all(tasks.iter().map(|t| guarded(job, t, self.run(job, t)))).await
    }
}

#[tokio::test]
async fn a_groups_tasks_run_side_by_side_and_only_the_failed_ones_run_again() {
    for (s, _d) in stores().await {
        s.create(new_job("j1", "web01", "k1", &["g1 a", "g2 b", "g2 c", "g3 d"])).await.unwrap();
        let g = Grouped { rec: Recorder::default(), together: tokio::sync::Barrier::new(2) };
        g.rec.flaky.borrow_mut().insert("g2 c".into(), 1);
        // Group 2 runs together; c's retryable failure hands the job back, and b's success stays recorded.
        let lease = s.claim("w1", LEASE).await.unwrap().unwrap();
        assert_eq!(run_job(&s, &lease, &g, LEASE).await.unwrap(), JobState::InProgress);
        let job = s.get("j1").await.unwrap();
        let states: Vec<JobState> = job.tasks.iter().map(|t| t.state).collect();
        use JobState::*;
        assert_eq!(states, [Succeeded, Succeeded, NotStarted, NotStarted], "{:?}", job.tasks);
        assert!(job.tasks[2].error.as_deref().unwrap().contains("attempt 1 of"), "{:?}", job.tasks[2].error);
        // The next attempt runs only c, then group 3.
        expire_lease(&s, "j1").await;
        let lease = s.claim("w2", LEASE).await.unwrap().unwrap();
        assert_eq!(run_job(&s, &lease, &g, LEASE).await.unwrap(), JobState::Succeeded);
        let mut ran = g.rec.ran.borrow().clone();
        ran[1..3].sort(); // side by side: in either order
        assert_eq!(ran, ["j1:g1 a", "j1:g2 b", "j1:g2 c", "j1:g2 c", "j1:g3 d"]);

        // A fatal failure in a group: its other tasks finish and are recorded, later groups never start.
        s.create(new_job("j2", "db01", "k2", &["g2 e", "g2 f", "g3 h"])).await.unwrap();
        let g = Grouped {
            rec: Recorder { fail: vec!["g2 e".into()], ..Default::default() },
            together: tokio::sync::Barrier::new(2),
        };
        let lease = s.claim("w1", LEASE).await.unwrap().unwrap();
        assert_eq!(run_job(&s, &lease, &g, LEASE).await.unwrap(), JobState::Failed);
        let job = s.get("j2").await.unwrap();
        let states: Vec<JobState> = job.tasks.iter().map(|t| t.state).collect();
        assert_eq!(states, [Failed, Succeeded, NotStarted], "{:?}", job.tasks);
        assert!(job.error.as_deref().unwrap().contains("g2 e failed"), "{:?}", job.error);
        assert!(!g.rec.ran.borrow().iter().any(|t| t.ends_with("g3 h")));
    }
}

#[tokio::test]
async fn an_items_initial_sync_progress_is_read_from_its_own_reprotect_or_its_plans() {
    for (s, _d) in stores().await {
        s.create(new_job("j1", "web01", "k1", &["initial replication"])).await.unwrap();
        let plan = NewJob {
            id: "p1".into(),
            kind: "plan-reprotect".into(),
            item_id: None,
            plan_id: Some("plan-erp".into()),
            request: "{}".into(),
            idempotency_key: "k2".into(),
            tasks: vec![
                ("plan-item-reprotect/erp-db".into(), "Group 1: reprotect erp-db".into()),
                ("plan-item-reprotect/erp-app".into(), "Group 2: reprotect erp-app".into()),
            ],
            items: vec!["erp-db".into(), "erp-app".into()],
        };
        s.create(plan).await.unwrap();
        let mut leases = HashMap::new();
        for _ in 0..2 {
            let l = s.claim("w1", LEASE).await.unwrap().unwrap();
            leases.insert(l.job_id.clone(), l);
        }
        for (job, seq, done) in [("j1", 0, 10), ("p1", 0, 30)] {
            let lease = &leases[job];
            s.start_task(lease, seq).await.unwrap();
            s.task_progress(lease, &TaskProgress { seq, done, total: 100, sent: done }).await.unwrap();
        }
        let all = s.initial_sync_progress(None).await.unwrap();
        assert_eq!(
            (all.get("web01"), all.get("erp-db"), all.get("erp-app")),
            (Some(&(10, 100)), Some(&(30, 100)), None)
        );
        assert_eq!(s.initial_sync_progress(Some("erp-db")).await.unwrap().len(), 1);
    }
}

#[tokio::test]
async fn a_panicking_step_fails_its_task_with_the_panic_message_and_releases_the_item() {
    for (s, _d) in stores().await {
        s.create(new_job("j1", "web01", "k1", &["attach disks", "power on"])).await.unwrap();
        let lease = s.claim("w1", LEASE).await.unwrap().unwrap();
        let rec = Recorder { panic_on: Some("attach disks".into()), ..Default::default() };
        assert_eq!(run_job(&s, &lease, &rec, LEASE).await.unwrap(), JobState::Failed);
        let job = s.get("j1").await.unwrap();
        assert!(job.error.as_deref().unwrap().contains("index out of bounds"), "{:?}", job.error);
        assert!(job.recommended_action.as_deref().unwrap().contains("server log"));
        // The item is free for the next job, and this worker runs it.
        s.create(new_job("j2", "web01", "k2", &["a"])).await.unwrap();
        let lease = s.claim("w1", LEASE).await.unwrap().unwrap();
        assert_eq!(run_job(&s, &lease, &Recorder::default(), LEASE).await.unwrap(), JobState::Succeeded);
    }
}

#[tokio::test]
async fn cancel_ends_a_waiting_job_at_once_and_a_running_one_before_its_next_task() {
    for (s, _d) in stores().await {
        s.create(new_job("j1", "web01", "k1", &["a", "b"])).await.unwrap();
        assert_eq!(s.cancel("j1").await.unwrap(), JobState::Cancelled);
        assert_eq!(s.get("j1").await.unwrap().state, JobState::Cancelled);
        assert!(s.cancel("j1").await.is_err(), "a finished job cannot be cancelled");

        s.create(new_job("j2", "db01", "k2", &["a", "b", "c"])).await.unwrap();
        let lease = s.claim("w1", LEASE).await.unwrap().unwrap();
        s.start_task(&lease, 0).await.unwrap();
        s.complete_task(&lease, 0, 0, "{}").await.unwrap();
        assert_eq!(s.cancel("j2").await.unwrap(), JobState::InProgress, "running: it stops at the next task");
        assert!(s.heartbeat(&lease, LEASE).await.unwrap(), "the heartbeat tells the worker to stop its step");
        let rec = Recorder::default();
        assert_eq!(run_job(&s, &lease, &rec, LEASE).await.unwrap(), JobState::Cancelled);
        assert!(rec.ran.borrow().is_empty());
        let job = s.get("j2").await.unwrap();
        let states: HashMap<i64, JobState> = job.tasks.iter().map(|t| (t.seq, t.state)).collect();
        assert_eq!(states[&0], JobState::Succeeded);
        assert_eq!(states[&1], JobState::Cancelled);
    }
}

#[tokio::test]
async fn a_cancel_that_loses_the_race_to_a_claim_asks_the_running_job_to_stop_and_changes_no_task() {
    for (s, _d) in stores().await {
        s.create(new_job("j1", "web01", "k1", &["a", "b"])).await.unwrap();
        let lease = s.claim("w1", LEASE).await.unwrap().unwrap();
        // The claim won: the job runs, so cancel only asks; no task is marked cancelled behind the worker's back.
        assert_eq!(s.cancel("j1").await.unwrap(), JobState::InProgress);
        let job = s.get("j1").await.unwrap();
        assert!(job.cancel_requested && job.tasks.iter().all(|t| t.state == JobState::NotStarted));
        assert_eq!(run_job(&s, &lease, &Recorder::default(), LEASE).await.unwrap(), JobState::Cancelled);
    }
}

#[tokio::test]
async fn many_workers_claim_many_jobs_each_exactly_once_and_ids_never_collide() {
    for (s, _d) in stores().await {
        // Ids made at the same instant on many tasks are distinct.
        let ids: Vec<String> =
            futures_util::future::join_all((0..200).map(|_| async { new_id() })).await.into_iter().collect();
        assert_eq!(ids.iter().collect::<HashSet<_>>().len(), 200);
        for i in 0..40 {
            s.create(new_job(&format!("j{i:02}"), &format!("item{i}"), &format!("k{i}"), &["a"])).await.unwrap();
        }
        let claims = futures_util::future::join_all((0..8).map(|w| {
            let s = s.clone();
            async move {
                let (mut mine, me) = (Vec::new(), format!("w{w}"));
                while let Some(lease) = db_retry("claim", || s.claim(&me, LEASE)).await.unwrap() {
                    mine.push(lease.job_id);
                }
                mine
            }
        }))
        .await;
        let all: Vec<&String> = claims.iter().flatten().collect();
        assert_eq!(all.len(), 40, "{:?}: every job claimed", s.db.backend);
        assert_eq!(all.iter().collect::<HashSet<_>>().len(), 40, "{:?}: no job claimed twice", s.db.backend);
    }
}

#[tokio::test]
async fn a_replication_round_and_a_job_never_hold_an_item_at_once() {
    for (s, _d) in stores().await {
        let round = s.take_item_for_round("web01", "replication/n1/b1", 10_000).await.unwrap().expect("free item");
        s.create(new_job("j1", "web01", "k1", &["a"])).await.unwrap();
        // A job exists now: the round may not renew and must stop; the job waits until the round lets go.
        assert!(!s.renew_item_round("web01", "replication/n1/b1", round, 10_000).await.unwrap());
        assert!(!s.take_item_for_job("web01", "j1").await.unwrap(), "the round still holds it");
        s.release_item_round("web01", "replication/n1/b1", round).await.unwrap();
        assert!(s.take_item_for_job("web01", "j1").await.unwrap());
        assert!(s.take_item_for_job("web01", "j1").await.unwrap(), "taking it again is idempotent");
        // While the job is active no round takes the item; once it ends, rounds do again.
        assert_eq!(s.take_item_for_round("web01", "replication/n2/b2", 10_000).await.unwrap(), None);
        let lease = s.claim("w1", LEASE).await.unwrap().unwrap();
        run_job(&s, &lease, &Recorder::default(), LEASE).await.unwrap();
        assert!(s.take_item_for_round("web01", "replication/n2/b2", 10_000).await.unwrap().is_some());
        // A round whose node died is overtaken when its hold runs out.
        sqlx::query("update item_leases set expires_at = 0").execute(&s.db.pool).await.unwrap();
        assert!(s.take_item_for_round("web01", "replication/n3/b3", 10_000).await.unwrap().is_some());
    }
}

#[tokio::test]
async fn both_engines_apply_the_same_migrations() {
    for (db, _d) in databases().await {
        let known = db.backend.migrator().iter().map(|m| m.version).max().unwrap();
        assert_eq!(db.applied_version().await.unwrap(), Some(known));
        assert_eq!(
            orchestrator::db::SQLITE_MIGRATOR.iter().map(|m| m.version).collect::<Vec<_>>(),
            orchestrator::db::POSTGRES_MIGRATOR.iter().map(|m| m.version).collect::<Vec<_>>()
        );
        let title = if db.backend == Backend::Sqlite { "SQLite" } else { "PostgreSQL" };
        assert_eq!(db.backend.title(), title);
    }
}
