//! The durable job engine against a real SQLite database: idempotency, one active job per item (R-W5), leases
//! with fencing, resume after a crash without running a finished task twice, state derived from tasks, cancel and
//! restart.

use std::cell::RefCell;
use std::collections::HashMap;

use orchestrator::jobs::*;
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions};

async fn store() -> (JobStore, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let opts = SqliteConnectOptions::new()
        .filename(dir.path().join("jobs.db"))
        .create_if_missing(true)
        .journal_mode(SqliteJournalMode::Wal);
    let pool = SqlitePoolOptions::new().max_connections(4).connect_with(opts).await.unwrap();
    MIGRATOR.run(&pool).await.unwrap();
    (JobStore::new(pool), dir)
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
    }
}

/// Records every task it runs; fails the tasks named in `fail`.
#[derive(Default)]
struct Recorder {
    ran: RefCell<Vec<String>>,
    fail: Vec<String>,
}

impl TaskExecutor for Recorder {
    async fn run(&self, job: &Job, task: &Task) -> Result<TaskOutcome, TaskFailure> {
        self.ran.borrow_mut().push(format!("{}:{}", job.id, task.name));
        if self.fail.contains(&task.name) {
            return Err(TaskFailure {
                error: format!("{} failed: vCenter vc1 is disconnected", task.name),
                recommended_action: "Reconnect vCenter vc1, then restart the job.".into(),
            });
        }
        Ok(TaskOutcome { bytes: 4096, result: format!("{{\"task\":\"{}\"}}", task.name) })
    }
}

#[tokio::test]
async fn r_w5_an_item_has_at_most_one_active_job_and_requests_are_idempotent() {
    let (s, _d) = store().await;
    let (j, created) = s.create(new_job("j1", "web01", "k1", &["a", "b"]), 1).await.unwrap();
    assert!(created);
    assert_eq!(j.state, JobState::NotStarted);
    assert_eq!(j.tasks.len(), 2);
    // The same request again (a retried POST) returns the same job.
    let (again, created) = s.create(new_job("j1-retry", "web01", "k1", &["a", "b"]), 2).await.unwrap();
    assert_eq!((again.id.as_str(), created), ("j1", false));
    // The same key for another request is refused.
    let mut other = new_job("j2", "db01", "k1", &["a"]);
    other.request = "{}".into();
    assert!(matches!(s.create(other, 3).await, Err(JobError::IdempotencyConflict { job, .. }) if job == "j1"));
    // A second job on the same item is refused, naming the active one.
    let e = s.create(new_job("j3", "web01", "k3", &["a"]), 4).await.unwrap_err();
    assert!(matches!(&e, JobError::ItemBusy { active_job } if active_job == "j1"), "{e}");
    assert!(e.to_string().contains("R-W5"));
    // Once the first ends, the item takes a new job.
    let lease = s.claim("w1", 10, 1000).await.unwrap().unwrap();
    run_job(&s, &lease, &Recorder::default(), &|| 20, 1000).await.unwrap();
    s.create(new_job("j4", "web01", "k4", &["a"]), 30).await.unwrap();
}

#[tokio::test]
async fn only_one_worker_wins_a_claim_and_a_fenced_worker_changes_nothing() {
    let (s, _d) = store().await;
    s.create(new_job("j1", "web01", "k1", &["a", "b"]), 1).await.unwrap();
    let a = s.claim("w1", 10, 100).await.unwrap().unwrap();
    assert_eq!(s.claim("w2", 20, 100).await.unwrap(), None, "the lease is held");
    // w1 stalls past its lease; w2 takes over with a new fencing token.
    let b = s.claim("w2", 200, 100).await.unwrap().unwrap();
    assert!(b.token > a.token);
    assert!(matches!(s.heartbeat(&a, 210, 100).await, Err(JobError::Fenced(_))));
    assert!(matches!(s.start_task(&a, 0, 210).await, Err(JobError::Fenced(_))));
    s.start_task(&b, 0, 210).await.unwrap();
    assert!(matches!(s.complete_task(&a, 0, 1, "{}", 220).await, Err(JobError::Fenced(_))));
    s.complete_task(&b, 0, 1, "{}", 220).await.unwrap();
    assert!(matches!(s.finish(&a, 230).await, Err(JobError::Fenced(_))));
}

#[tokio::test]
async fn after_a_crash_the_job_resumes_from_its_last_completed_task_and_no_task_runs_twice() {
    let (s, _d) = store().await;
    s.create(new_job("j1", "web01", "k1", &["power off", "sync", "start replication", "done"]), 1).await.unwrap();
    let lease = s.claim("w1", 10, 100).await.unwrap().unwrap();
    // w1 completes two tasks, starts the third, then dies.
    for seq in 0..2 {
        s.start_task(&lease, seq, 11).await.unwrap();
        s.complete_task(&lease, seq, 10, "{}", 12).await.unwrap();
    }
    s.start_task(&lease, 2, 13).await.unwrap();
    let rec = Recorder::default();
    let lease2 = s.claim("w2", 500, 100).await.unwrap().expect("an expired lease is claimable");
    assert_eq!(run_job(&s, &lease2, &rec, &|| 600, 100).await.unwrap(), JobState::Succeeded);
    assert_eq!(*rec.ran.borrow(), vec!["j1:start replication", "j1:done"], "finished tasks are not run again");
    let job = s.get("j1").await.unwrap();
    assert_eq!(job.state, JobState::Succeeded);
    assert_eq!(job.tasks[2].attempts, 2, "the interrupted task ran again, once");
    assert_eq!(job.tasks[0].attempts, 1);
    assert_eq!(s.claim("w3", 10_000, 100).await.unwrap(), None, "nothing left to run");
}

#[tokio::test]
async fn a_job_is_failed_by_its_task_with_the_recommended_action_and_can_restart_from_there() {
    let (s, _d) = store().await;
    s.create(new_job("j1", "web01", "k1", &["shut down cloud VM", "attach disks", "power on"]), 1).await.unwrap();
    let lease = s.claim("w1", 10, 100).await.unwrap().unwrap();
    let rec = Recorder { fail: vec!["attach disks".into()], ..Default::default() };
    assert_eq!(run_job(&s, &lease, &rec, &|| 20, 100).await.unwrap(), JobState::Failed);
    let job = s.get("j1").await.unwrap();
    assert_eq!(job.tasks[1].state, JobState::Failed);
    assert_eq!(job.tasks[2].state, JobState::NotStarted, "a later task never ran");
    assert!(job.recommended_action.as_deref().unwrap().contains("Reconnect vCenter"));
    assert_eq!(job.allowed_actions(), vec![JobAction::Restart]);
    // Not "succeeded" while a task has not: finishing early is refused.
    s.restart("j1").await.unwrap();
    let lease = s.claim("w1", 30, 100).await.unwrap().unwrap();
    assert!(s.finish(&lease, 31).await.is_err(), "no phantom completion");
    let rec = Recorder::default();
    assert_eq!(run_job(&s, &lease, &rec, &|| 40, 100).await.unwrap(), JobState::Succeeded);
    assert_eq!(*rec.ran.borrow(), vec!["j1:attach disks", "j1:power on"]);
}

#[tokio::test]
async fn cancel_ends_a_waiting_job_at_once_and_a_running_one_before_its_next_task() {
    let (s, _d) = store().await;
    s.create(new_job("j1", "web01", "k1", &["a", "b"]), 1).await.unwrap();
    assert_eq!(s.cancel("j1", 2).await.unwrap(), JobState::Cancelled);
    assert_eq!(s.get("j1").await.unwrap().state, JobState::Cancelled);
    assert!(s.cancel("j1", 3).await.is_err(), "a finished job cannot be cancelled");

    s.create(new_job("j2", "db01", "k2", &["a", "b", "c"]), 5).await.unwrap();
    let lease = s.claim("w1", 10, 100).await.unwrap().unwrap();
    s.start_task(&lease, 0, 11).await.unwrap();
    s.complete_task(&lease, 0, 0, "{}", 12).await.unwrap();
    assert_eq!(s.cancel("j2", 13).await.unwrap(), JobState::InProgress, "running: it stops at the next task");
    let rec = Recorder::default();
    assert_eq!(run_job(&s, &lease, &rec, &|| 14, 100).await.unwrap(), JobState::Cancelled);
    assert!(rec.ran.borrow().is_empty());
    let job = s.get("j2").await.unwrap();
    let states: HashMap<i64, JobState> = job.tasks.iter().map(|t| (t.seq, t.state)).collect();
    assert_eq!(states[&0], JobState::Succeeded);
    assert_eq!(states[&1], JobState::Cancelled);
}
