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
