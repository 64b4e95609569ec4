//! # replicator — the data plane of Homeward
//!
//! This crate will own (see ARCHITECTURE.md and the replicator issue):
//!
//! * **disk images** in real formats: sparse raw, VMDK `monolithicFlat` (on-premises side) and fixed VHD (cloud
//!   side), created, opened and validated here;
//! * **resync**: a source half and a target half that talk only through a framed, versioned byte stream, with
//!   `full`, `delta` (BLAKE3 block hashes) and `incremental` (changed-block tracking) modes, resumable after a crash,
//!   throttled, and reporting progress;
//! * **recovery points**: crash- and app-consistent points journalled on the target with retention, restorable to
//!   the exact bytes.
//!
//! Architecture Invariant: no database and no web here. The orchestrator drives this crate; this crate never calls
//! back into it.
//!
//! Nothing is implemented yet: the crate exists so that the workspace, its dependency direction and its build are
//! in place before the data plane lands.
