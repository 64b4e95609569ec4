//! The end-to-end suites, one module each, in one test binary: one compile of the shared support code and one link
//! instead of nine, and the suites' tests share the test threads instead of waiting for each other's slowest test.
//! `HOMEWARD_E2E=1` turns on the slow ones; `./x test` filters the PostgreSQL pass by module (`api::`, `cli::` …).

#[path = "support/arm.rs"]
mod arm;
mod common;
#[path = "support/emulators.rs"]
mod emulators;

mod agents;
mod api;
mod browser;
mod cli;
mod concurrency;
mod crash;
mod disk;
mod nodes;
mod serve;
