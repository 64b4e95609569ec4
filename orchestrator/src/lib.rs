//! # orchestrator — the decision-making core of Homeward
//!
//! This crate will own (see ARCHITECTURE.md and the orchestration-core issue):
//!
//! * the **domain** in the product's own words: vault, primary site (configuration server, vCenter servers, ESXi
//!   hosts, datastores, master targets, process servers), recovery site (cloud VMs and their disks), replicated
//!   items, recovery points, replication groups and recovery plans;
//! * the **seed rules** of `../shared/mission/requirements.md` (R-W1 … R-I1), each a named check that answers
//!   *allowed* or *refused, why, and what to do next*;
//! * the **lifecycle state machine** of a replicated item (reprotect → failover → commit → re-protect);
//! * the **durable job engine**: jobs with ordered tasks, leases with heartbeat and fencing tokens, compare-and-set
//!   transitions.
//!
//! Architecture Invariant: the rules and the state machine do no IO. The clock, identifiers and the inventory are
//! inputs, so every rule is a fast table-driven test. Only the job runtime around them touches the database, the
//! estate and the replicator.
//!
//! Nothing is implemented yet: the crate exists so that the workspace, its dependency direction and its build are
//! in place before the core lands.
