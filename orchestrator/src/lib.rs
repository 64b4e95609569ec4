//! # orchestrator — the decision-making core of Homeward
//!
//! * [`domain`]: the estate in the product's own words — configuration server, vCenter servers, ESXi hosts,
//!   datastores, master targets, process servers on the primary site; cloud VMs on the recovery site; replicated
//!   items with their recovery points and replication groups; recovery plans.
//! * [`rules`]: every rule of `../shared/mission/requirements.md` (R-W1 … R-I1) as a named check that answers
//!   *passed* or *refused: rule ID, a plain sentence, the recommended action*.
//! * [`lifecycle`]: the replicated item's state machine (reprotect → failover → commit → re-protect), the allowed
//!   operations with the reason for each refused one, and the dry run of an operation (checks, original or
//!   alternate location, bytes to move, ETA, the tasks the job will run).
//! * [`points`]: which recovery point a failover uses (R-RP1 … R-RP4), for one item or a recovery plan.
//! * [`attention`]: what on an item needs a person, and the one action that clears it.
//!
//! * [`agents`]: the site agents (process servers, master targets), their enrollment and heartbeats.
//! * [`assignments`]: a cycle handed to two agents, fenced by the job or round that created it.
//! * [`connectors`]: the sites' real APIs (vCenter's vim25 SOAP, Azure Storage page blobs); [`connections`]: the
//!   vCenters and storage accounts an Administrator added, checked against those APIs, credentials sealed;
//!   [`primary_site`]: a connected vCenter as the primary site the rules see and the jobs act on.
//! * [`access`]: the roles (Reader, Drill operator, Operator, Administrator) and what each may do.
//!
//! Architecture Invariant: the modules above do no IO. The clock ([`domain::Millis`]), identifiers and the inventory are
//! inputs; the job runtime around this crate reads the estate, calls the replicator and persists jobs. Every rule is
//! therefore a fast table-driven test. Around them the runtime does the IO: [`db`] (SQLite or PostgreSQL, the one
//! place they differ), [`jobs`] (the durable job engine), [`estate`], [`accounts`], [`service`] (the facade),
//! [`workflows`] (the steps; a drill's in `drill_steps`), [`drills`] (drill reports), [`worker`] (the node's
//! workers, heartbeats, supervision) and [`replication`] (continuous replication beside the jobs).

pub mod access;
pub mod accounts;
pub mod acting;
pub mod agent_cycle;
pub mod agents;
pub mod alerts;
pub mod assignments;
pub mod attention;
pub mod connections;
pub mod connectors;
pub mod db;
pub mod demo;
pub mod domain;
mod drill_steps;
pub mod drills;
pub mod estate;
pub mod jobs;
pub mod lifecycle;
pub mod plans;
pub mod points;
pub mod primary_site;
pub mod recovery_site;
pub mod replication;
pub mod rule_catalogue;
pub mod rules;
pub mod service;
pub mod split_brain;
mod verify_replica;
pub mod webhooks;
pub mod worker;
pub mod workflows;
