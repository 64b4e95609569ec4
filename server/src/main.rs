//! The `homeward` binary. Only this crate knows axum, the listener and the process: it parses the command line,
//! opens the database, and mounts the portal (`app`) and the health endpoint.

mod api;
mod cli;
mod client;
mod db;
mod disk;
mod serve;

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let cli = match cli::Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => return cli::report_usage_error(e),
    };
    init_tracing();
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
        cli::Command::Demo(cli::DemoCommand::Init { data_dir }) => return demo_init(&data_dir),
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
            cli::Command::ReprotectToCloud(a) => client::action("reprotect-to-cloud", a).await,
            cli::Command::Jobs { id, wait, server } => client::jobs(server, id.as_deref(), *wait).await,
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

fn demo_init(data_dir: &std::path::Path) -> ExitCode {
    let estate = orchestrator::estate::Estate::new(&data_dir.join("estate"));
    if estate.exists() {
        eprintln!("error: {} already holds an estate; remove that folder to start over", estate.root.display());
        return ExitCode::from(2);
    }
    match orchestrator::demo::seed(&estate) {
        Ok(doc) => {
            println!(
                "seeded the demo estate in {}: {} replicated items, {} recovery plan(s)",
                estate.root.display(),
                doc.items.len(),
                doc.plans.len()
            );
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
