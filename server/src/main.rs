//! The `homeward` binary. Only this crate knows axum, the listener and the process: it parses the command line,
//! opens the database, and mounts the portal (`app`) and the health endpoint.

mod api;
mod cli;
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
