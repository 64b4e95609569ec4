#![recursion_limit = "256"]
//! The `homeward` binary. Only this crate knows axum, the listener and the process: it parses the command line,
//! opens the database, and mounts the portal (`app`) and the health endpoint.

mod agent;
mod agent_link;
mod agent_plane;
mod agent_work;
mod api;
mod auth;
mod cli;
mod client;
mod db;
mod disk;
mod events;
mod https;
mod pki;
mod serve;
mod throttle;

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let cli = match cli::Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => return cli::report_usage_error(e),
    };
    init_tracing();
    // Every TLS configuration names its provider; this one is for clients built without one (the CLI over https).
    let _ = rustls::crypto::ring::default_provider().install_default();
    let args = match cli.command {
        cli::Command::Disk(cmd) => {
            return match disk::run(cmd) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("error: {e}");
                    ExitCode::from(disk::exit_code(&e))
                }
            }
        }
        cli::Command::Demo(cli::DemoCommand::Init { db, estate_dir, fleet, fleet_plan }) => {
            return demo_init(&db, estate_dir.as_deref(), fleet, fleet_plan)
        }
        cli::Command::Users(cmd) => return users(cmd),
        cli::Command::Agent(args) => return agent(args),
        cli::Command::Serve(args) => args,
        other => return run_client(other),
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::from(1);
        }
    };
    let result = runtime.block_on(serve::run(args));
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(e.exit_code())
        }
    }
}

fn run_client(cmd: cli::Command) -> ExitCode {
    let Ok(rt) = tokio::runtime::Builder::new_current_thread().enable_all().build() else {
        eprintln!("error: cannot start the async runtime");
        return ExitCode::from(1);
    };
    let result = rt.block_on(async {
        match &cmd {
            cli::Command::Items { id, server } => client::items(server, id.as_deref()).await,
            cli::Command::Reprotect(a) => client::action("reprotect", a).await,
            cli::Command::Failover(a) => client::action("failover", a).await,
            cli::Command::Commit(a) => client::action("commit", a).await,
            cli::Command::CancelFailover(a) => client::action("cancel-failover", a).await,
            cli::Command::ChangeRecoveryPoint(a) => client::action("change-recovery-point", a).await,
            cli::Command::ReprotectToCloud(a) => client::action("reprotect-to-cloud", a).await,
            cli::Command::FailoverToCloud(a) => client::action("failover-to-cloud", a).await,
            cli::Command::CommitInCloud(a) => client::action("commit-in-cloud", a).await,
            cli::Command::TestFailover(a) => client::test_failover(a).await,
            cli::Command::CleanupTestFailover(a) => client::cleanup_test_failover(a).await,
            cli::Command::VerifyReplica(a) => client::item_op(a, "verify-replica").await,
            cli::Command::Drills(a) => client::drills(a).await,
            cli::Command::ResolveSplitBrain(a) => client::resolve_split_brain(a).await,
            cli::Command::Networks(cmd) => client::networks(cmd).await,
            cli::Command::Plans(cmd) => client::plans(cmd).await,
            cli::Command::Protection(cmd) => client::protection(cmd).await,
            cli::Command::Alerts(cmd) => client::alerts(cmd).await,
            cli::Command::Webhooks(cmd) => client::webhooks(cmd).await,
            cli::Command::PlanFailover(a) => client::plan_failover(a).await,
            cli::Command::PlanTestFailover(a) => client::plan_test_failover(a).await,
            cli::Command::PlanCleanupTestFailover(a) => client::plan_cleanup_test_failover(a).await,
            cli::Command::PlanReprotect(a) => client::plan_reprotect(a).await,
            cli::Command::PlanCommit(a) => client::plan_op(a, "commit").await,
            cli::Command::PlanCancelFailover(a) => client::plan_op(a, "cancel-failover").await,
            cli::Command::Jobs { id, wait, server } => client::jobs(server, id.as_deref(), *wait).await,
            cli::Command::JobAction { id, action, wait, server } => client::job_action(server, id, action, *wait).await,
            cli::Command::Agents(cmd) => client::agents(cmd).await,
            cli::Command::Connections(cmd) => client::connections(cmd).await,
            cli::Command::Password { server } => client::change_password(server).await,
            _ => Err(client::Failure { code: 2, message: "not a client command".into() }),
        }
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(f) => {
            eprintln!("{}", if f.code == 3 { f.message } else { format!("error: {}", f.message) });
            ExitCode::from(f.code)
        }
    }
}

fn agent(args: cli::AgentArgs) -> ExitCode {
    let Ok(rt) = tokio::runtime::Builder::new_current_thread().enable_all().build() else {
        eprintln!("error: cannot start the async runtime");
        return ExitCode::from(1);
    };
    match rt.block_on(agent::run(args)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(f) => {
            eprintln!("error: {}", f.message);
            ExitCode::from(f.code)
        }
    }
}

fn users(cmd: cli::UsersCommand) -> ExitCode {
    use cli::UsersCommand;
    use orchestrator::accounts::{random_password, Accounts};
    let Ok(rt) = tokio::runtime::Builder::new_current_thread().enable_all().build() else {
        eprintln!("error: cannot start the async runtime");
        return ExitCode::from(1);
    };
    let db = match &cmd {
        UsersCommand::Add { db, .. }
        | UsersCommand::Token { db, .. }
        | UsersCommand::Revoke { db, .. }
        | UsersCommand::Disable { db, .. }
        | UsersCommand::Enable { db, .. }
        | UsersCommand::Role { db, .. }
        | UsersCommand::List { db } => db,
    };
    let result: Result<(), String> = rt.block_on(async {
        let db = db::open(db.database_url.as_ref(), &db.data_dir).await.map_err(|e| e.to_string())?;
        let accounts = Accounts::new(db);
        let now = orchestrator::service::system_clock();
        match &cmd {
            UsersCommand::Add { name, role, .. } => {
                let preset = std::env::var("HOMEWARD_NEW_PASSWORD").ok().filter(|p| !p.is_empty());
                let pw = preset.clone().unwrap_or_else(random_password);
                let u = accounts.create_user(name, *role, &pw, now).await.map_err(|e| e.to_string())?;
                println!("created {} ({})", u.name, u.role.title());
                if preset.is_none() {
                    println!("password (shown once): {pw}");
                }
            }
            UsersCommand::Token { name, label, days, .. } => {
                println!("{}", accounts.create_token(name, label, *days, now).await.map_err(|e| e.to_string())?);
            }
            UsersCommand::Disable { name, .. } => {
                let (sessions, tokens) = accounts.disable(name, now).await.map_err(|e| e.to_string())?;
                println!("{name}: disabled; {sessions} session(s) ended, {tokens} API token(s) deleted");
            }
            UsersCommand::Role { name, role, .. } => {
                let u = accounts.set_role(name, *role).await.map_err(|e| e.to_string())?;
                println!("{}: {}", u.name, u.role.title());
            }
            UsersCommand::Enable { name, .. } => {
                accounts.enable(name).await.map_err(|e| e.to_string())?;
                println!("{name}: enabled; it signs in with its password again");
            }
            UsersCommand::Revoke { name, .. } => {
                let (sessions, tokens) = accounts.revoke(name).await.map_err(|e| e.to_string())?;
                println!("{name}: {sessions} session(s) ended, {tokens} API token(s) deleted");
            }
            UsersCommand::List { .. } => {
                for a in accounts.accounts(now).await.map_err(|e| e.to_string())? {
                    let disabled = if a.disabled_at.is_some() { "\tdisabled" } else { "" };
                    println!("{}\t{}{disabled}", a.name, a.role.as_str());
                }
            }
        }
        Ok(())
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(2)
        }
    }
}

fn demo_init(db: &cli::DbArgs, estate_dir: Option<&std::path::Path>, fleet: usize, fleet_plan: bool) -> ExitCode {
    let Ok(rt) = tokio::runtime::Builder::new_current_thread().enable_all().build() else {
        eprintln!("error: cannot start the async runtime");
        return ExitCode::from(1);
    };
    let result: Result<String, String> = rt.block_on(async {
        let pool = db::open(db.database_url.as_ref(), &db.data_dir).await.map_err(|e| e.to_string())?;
        let root = estate_dir.map(std::path::Path::to_path_buf).unwrap_or_else(|| db.data_dir.join("estate"));
        let estate = orchestrator::estate::Estate::new(&root, pool);
        let created = estate
            .create_once(|e| {
                let mut doc = orchestrator::demo::seed(e)?;
                orchestrator::demo::add_fleet(e, &mut doc, fleet)?;
                if fleet_plan {
                    orchestrator::demo::add_fleet_plan(&mut doc);
                }
                Ok(doc)
            })
            .await
            .map_err(|e| e.to_string())?;
        if created.is_none() {
            return Err(format!("the vault of {} has an estate already; use a new data dir", db.data_dir.display()));
        }
        let doc = estate.load().await.map_err(|e| e.to_string())?;
        Ok(format!(
            "seeded the demo estate in {}: {} replicated items, {} recovery plan(s)",
            estate.root.display(),
            doc.items.len(),
            doc.plans.len()
        ))
    });
    match result {
        Ok(line) => {
            println!("{line}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(2)
        }
    }
}

fn init_tracing() {
    use tracing_subscriber::EnvFilter;
    // Logs go to stderr so that stdout carries only what scripts read (the portal URL).
    let filter = EnvFilter::try_from_env("HOMEWARD_LOG").unwrap_or_else(|_| EnvFilter::new("info"));
    tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).init();
}
