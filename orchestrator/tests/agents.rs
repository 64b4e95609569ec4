//! The agent registry against real databases (SQLite and a throw-away PostgreSQL): a token enrolls once, expires,
//! is bound to its role; revoking refuses the certificate; states follow the heartbeats.

#[path = "../../tests/support/postgres.rs"]
mod postgres;

use orchestrator::agents::*;
use orchestrator::db::Db;

async fn registries() -> Vec<(Agents, Option<tempfile::TempDir>)> {
    let dir = tempfile::tempdir().unwrap();
    let sqlite =
        Db::connect(&format!("sqlite://{}?mode=rwc", dir.path().join("agents.db").display()), 8).await.unwrap();
    let pg = Db::connect(&postgres::Cluster::get().database(), 8).await.unwrap();
    let mut out = vec![(sqlite, Some(dir)), (pg, None)];
    for (db, _) in &mut out {
        db.migrate().await.unwrap();
    }
    out.into_iter().map(|(db, d)| (Agents::new(db), d)).collect()
}

const T0: u64 = 1_700_000_000_000;

#[tokio::test]
async fn a_token_enrolls_one_agent_once_for_its_role_until_it_expires() {
    for (reg, _dir) in registries().await {
        let e = reg.enroll("mt-01", AgentRole::MasterTarget, SiteKind::OnPremises, "admin", T0).await.unwrap();
        assert!(e.token.starts_with("hwe_") && e.token.len() == 68, "{}", e.token);
        assert_eq!(e.agent.state, AgentState::AwaitingAgent);
        assert!(matches!(
            reg.enroll("mt-01", AgentRole::MasterTarget, SiteKind::OnPremises, "admin", T0).await,
            Err(AgentError::NameTaken(_))
        ));

        let wrong = reg.redeem(&e.token, AgentRole::ProcessServer, "fp-a", "1", T0 + 1).await.unwrap_err();
        assert!(wrong.to_string().contains("--role master-target"), "{wrong}");
        let a = reg.redeem(&e.token, AgentRole::MasterTarget, "fp-a", "1.0", T0 + 2).await.unwrap();
        assert_eq!((a.state, a.enrolled_at), (AgentState::Offline, Some(T0 + 2)));
        // Replayed: the token is gone, whoever presents it.
        assert!(matches!(
            reg.redeem(&e.token, AgentRole::MasterTarget, "fp-b", "1.0", T0 + 3).await,
            Err(AgentError::UnknownToken)
        ));
        assert_eq!(reg.authenticate("fp-a", T0 + 4).await.unwrap().id, a.id);
        assert!(reg.authenticate("fp-b", T0 + 4).await.is_err());

        let late = reg.enroll("ps-01", AgentRole::ProcessServer, SiteKind::Cloud, "admin", T0).await.unwrap();
        assert_eq!(reg.get(&late.agent.id, T0 + ENROLL_MS).await.unwrap().state, AgentState::EnrollmentExpired);
        assert!(matches!(
            reg.redeem(&late.token, AgentRole::ProcessServer, "fp-c", "1", T0 + ENROLL_MS).await,
            Err(AgentError::TokenExpired)
        ));
    }
}

#[tokio::test]
async fn heartbeats_make_an_agent_online_and_revoking_refuses_it_at_once() {
    for (reg, _dir) in registries().await {
        let e = reg.enroll("ps-01", AgentRole::ProcessServer, SiteKind::Cloud, "admin", T0).await.unwrap();
        let a = reg.redeem(&e.token, AgentRole::ProcessServer, "fp-ps", "1", T0).await.unwrap();
        let inv = Inventory {
            disks: vec![AgentDisk { name: "disk0.vhd".into(), size_bytes: 1 << 20 }],
            free_bytes: 10,
            total_bytes: 20,
            heartbeat_ms: 1_000,
            link_endpoint: Some("10.0.0.2:4000".into()),
            datastores: vec!["LocalDS_0".into()],
        };
        reg.heartbeat(&a.id, "1.1", &inv, T0 + 1_000).await.unwrap();
        let now = reg.get(&a.id, T0 + 2_000).await.unwrap();
        assert_eq!(
            (now.state, now.version.as_deref(), now.inventory.as_ref()),
            (AgentState::Online, Some("1.1"), Some(&inv))
        );
        // Three missed periods (plus slack) later it is offline, not failed.
        assert_eq!(reg.get(&a.id, T0 + 1_000 + 5_001).await.unwrap().state, AgentState::Offline);

        reg.revoke(&a.id, T0 + 6_000).await.unwrap();
        assert!(matches!(reg.authenticate("fp-ps", T0 + 6_001).await, Err(AgentError::Revoked(_))));
        assert!(reg.heartbeat(&a.id, "1.1", &inv, T0 + 6_002).await.is_err());
        assert_eq!(reg.list(T0 + 7_000).await.unwrap()[0].state, AgentState::Revoked);
        assert!(matches!(reg.revoke("agt-none", T0).await, Err(AgentError::NotFound(_))));

        // A rate cap: set, refused below the floor, lifted.
        assert_eq!(reg.set_rate_cap(&a.id, Some(1 << 20), T0).await.unwrap().max_bytes_per_s, Some(1 << 20));
        assert!(matches!(reg.set_rate_cap(&a.id, Some(1000), T0).await, Err(AgentError::Invalid(_))));
        assert_eq!(reg.set_rate_cap(&a.id, None, T0).await.unwrap().max_bytes_per_s, None);

        // An unused enrollment can be revoked too: its token stops working.
        let e2 = reg.enroll("ps-02", AgentRole::ProcessServer, SiteKind::Cloud, "admin", T0).await.unwrap();
        reg.revoke(&e2.agent.id, T0 + 1).await.unwrap();
        assert!(reg.redeem(&e2.token, AgentRole::ProcessServer, "fp-x", "1", T0 + 2).await.is_err());
    }
}

mod assignments {
    use super::*;
    use orchestrator::assignments::*;
    use orchestrator::jobs::{JobStore, NewJob};

    fn job(id: &str, item: &str) -> NewJob {
        NewJob {
            id: id.into(),
            kind: "reprotect".into(),
            item_id: Some(item.into()),
            plan_id: None,
            request: "{}".into(),
            idempotency_key: format!("k-{id}"),
            tasks: vec![("initial-replication".into(), "Initial replication".into())],
            items: Vec::new(),
        }
    }

    fn spec() -> CycleSpec {
        CycleSpec {
            disks: vec![DiskPair {
                source: "recovery/vm/disk0.vhd".into(),
                target: "primary/ds/vm/disk0.vmdk".into(),
                source_blob: None,
                target_blob: None,
            }],
            mode: replicator::Mode::Delta,
            consistency: replicator::Consistency::CrashConsistent,
            point_id: "rp-1".into(),
            block_size: 65_536,
            chunk_bytes: 4 << 20,
            bandwidth: None,
            stream_token: "secret".into(),
            retention_ms: Some(86_400_000),
        }
    }

    /// Two enrolled agents: a process server (certificate "fp-ps") and a master target ("fp-mt").
    async fn pair(reg: &Agents) -> (Agent, Agent) {
        let mut out = Vec::new();
        for (name, role, site, fp) in [
            ("ps-01", AgentRole::ProcessServer, SiteKind::Cloud, "fp-ps"),
            ("mt-01", AgentRole::MasterTarget, SiteKind::OnPremises, "fp-mt"),
        ] {
            let e = reg.enroll(name, role, site, "admin", T0).await.unwrap();
            out.push(reg.redeem(&e.token, role, fp, "1", T0).await.unwrap());
        }
        let mt = out.pop().unwrap();
        (out.pop().unwrap(), mt)
    }

    fn fenced<T: std::fmt::Debug>(r: Result<T, AssignmentError>) {
        assert!(matches!(r, Err(AssignmentError::Fenced(_))), "expected fenced, got {r:?}");
    }

    /// The agents' every call about an assignment holds only while the job's claim that created it does: once
    /// another worker takes the job over (or a cancel is asked), progress, the receiver's check and the result are
    /// all refused, and a late result records nothing.
    #[tokio::test]
    async fn an_assignment_holds_only_while_its_jobs_fence_does() {
        for (reg, _dir) in registries().await {
            let (ps, mt) = pair(&reg).await;
            let (jobs, store) = (JobStore::new(reg.db.clone()), Assignments::new(reg.db.clone()));
            jobs.create(job("j1", "vm1")).await.unwrap();
            let lease = jobs.claim("node/boot/w1", 60_000).await.unwrap().unwrap();
            let fence = Fence::Job { id: lease.job_id.clone(), token: lease.token };
            let id = store.create(Some("j1"), &fence, &ps.id, &mt.id, &spec()).await.unwrap();

            fenced(store.check_receiver(&id, &mt.id, Some("fp-ps")).await);
            assert!(store.take(&mt.id).await.unwrap().is_none(), "only the sender takes it");
            let a = store.take(&ps.id).await.unwrap().expect("the sender takes its assignment");
            assert_eq!((a.state, a.spec.clone()), (AssignmentState::Sending, spec()));
            assert!(store.take(&ps.id).await.unwrap().is_none(), "taken once");

            assert_eq!(store.check_receiver(&id, &mt.id, Some("fp-ps")).await.unwrap().id, id);
            fenced(store.check_receiver(&id, &mt.id, Some("fp-mt")).await);
            fenced(store.check_receiver(&id, &ps.id, Some("fp-ps")).await);
            store.progress(&id, &ps.id, 10, 100, 200).await.unwrap();
            fenced(store.progress(&id, &mt.id, 10, 100, 200).await);
            let a = store.get(&id).await.unwrap();
            assert_eq!((a.done_bytes, a.total_bytes, a.wire_bytes), (10, 100, 200));

            // Another worker takes the job over: the first claim's assignment is dead to both agents.
            sqlx::query("update jobs set lease_expires_at = 0 where id = 'j1'").execute(&reg.db.pool).await.unwrap();
            let second = jobs.claim("node/boot/w2", 60_000).await.unwrap().unwrap();
            assert_eq!(second.token, lease.token + 1);
            fenced(store.progress(&id, &ps.id, 20, 100, 300).await);
            fenced(store.check_receiver(&id, &mt.id, Some("fp-ps")).await);
            let outcome = Outcome { disks: vec![], wire_bytes: 5, rate_cap: None };
            fenced(store.finish(&id, &ps.id, Ok(&outcome)).await);
            let a = store.get(&id).await.unwrap();
            assert_eq!((a.state, a.done_bytes, a.outcome), (AssignmentState::Sending, 10, None));

            // Under the new claim it works, until a cancel is asked.
            let fence = Fence::Job { id: second.job_id.clone(), token: second.token };
            let id2 = store.create(Some("j1"), &fence, &ps.id, &mt.id, &spec()).await.unwrap();
            assert_eq!(store.take(&ps.id).await.unwrap().unwrap().id, id2);
            store.progress(&id2, &ps.id, 1, 2, 3).await.unwrap();
            jobs.cancel("j1").await.unwrap();
            fenced(store.progress(&id2, &ps.id, 2, 2, 3).await);
            store.cancel(&id2, "stopped").await.unwrap();
            assert_eq!(store.get(&id2).await.unwrap().state, AssignmentState::Cancelled);
            assert_eq!(store.of_job("j1").await.unwrap().len(), 2);
            // Pruning forgets what was last touched before the limit, ended or left behind by a dead step.
            assert_eq!(store.prune(0).await.unwrap(), 0);
            assert_eq!(store.prune(i64::MAX / 2).await.unwrap(), 2);
            assert!(store.of_job("j1").await.unwrap().is_empty());
        }
    }

    /// A replication round's assignment holds while the round holds the item, and ends as soon as a job wants it;
    /// a result under a live fence is recorded.
    #[tokio::test]
    async fn a_rounds_assignment_ends_when_a_job_wants_the_item() {
        for (reg, _dir) in registries().await {
            let (ps, mt) = pair(&reg).await;
            let (jobs, store) = (JobStore::new(reg.db.clone()), Assignments::new(reg.db.clone()));
            let holder = "replication/node/boot";
            let token = jobs.take_item_for_round("vm2", holder, 60_000).await.unwrap().unwrap();
            let fence = Fence::Item { item: "vm2".into(), holder: holder.into(), token };
            let id = store.create(None, &fence, &ps.id, &mt.id, &spec()).await.unwrap();
            store.take(&ps.id).await.unwrap().unwrap();
            let outcome = Outcome { disks: vec![], wire_bytes: 7, rate_cap: Some(65_536) };
            store.finish(&id, &ps.id, Ok(&outcome)).await.unwrap();
            let a = store.get(&id).await.unwrap();
            assert_eq!((a.state, a.wire_bytes, a.outcome), (AssignmentState::Done, 7, Some(outcome)));

            let id = store.create(None, &fence, &ps.id, &mt.id, &spec()).await.unwrap();
            store.take(&ps.id).await.unwrap().unwrap();
            store.progress(&id, &ps.id, 1, 2, 3).await.unwrap();
            // The sender restarts mid-cycle: what it was sending fails at once, with the reason.
            assert_eq!(store.abandon(&ps.id).await.unwrap(), 1);
            let a = store.get(&id).await.unwrap();
            assert_eq!(
                (a.state, a.error.as_deref()),
                (AssignmentState::Failed, Some("the sending agent restarted mid-cycle"))
            );
            fenced(store.progress(&id, &ps.id, 2, 2, 3).await);

            let id = store.create(None, &fence, &ps.id, &mt.id, &spec()).await.unwrap();
            store.take(&ps.id).await.unwrap().unwrap();
            jobs.create(job("j2", "vm2")).await.unwrap();
            fenced(store.progress(&id, &ps.id, 2, 2, 3).await);
            fenced(store.finish(&id, &ps.id, Err("late")).await);
        }
    }
}
