//! The vault summary the portal shell shows: read from the database by a server function.

use leptos::prelude::*;
use serde::{Deserialize, Serialize};

/// What the overview page and the header show about the vault.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct VaultSummary {
    pub name: String,
    /// RFC 3339, UTC.
    pub created_at: String,
    /// Version of the newest applied database migration.
    pub schema_version: i64,
    /// Human name of the storage engine, e.g. "SQLite".
    pub database: String,
}

/// What the server hands to server functions through Leptos context: one pool for the whole process, never a
/// connection per call.
#[cfg(feature = "ssr")]
#[derive(Clone, Debug)]
pub struct ServerContext {
    pub db: orchestrator::db::Db,
    /// The orchestration runtime: items, jobs, the estate.
    pub service: std::sync::Arc<orchestrator::service::Service>,
    /// Accounts and the audit log.
    pub accounts: orchestrator::accounts::Accounts,
    /// The site agents, the vault CA's fingerprint and the agents' endpoint's port (for enrollment commands).
    pub agents: orchestrator::agents::Agents,
    pub ca_fingerprint: String,
    pub agent_port: u16,
}

// A read: GET, so the URL can be opened or scripted directly.
#[server(endpoint = "vault/summary", input = leptos::server_fn::codec::GetUrl)]
pub async fn get_vault_summary() -> Result<VaultSummary, ServerFnError> {
    let ctx = use_context::<ServerContext>()
        .ok_or_else(|| ServerFnError::new("the server did not provide its database context"))?;
    read_summary(&ctx.db).await.map_err(|e| {
        tracing::error!(error = %e, "reading the vault summary failed");
        ServerFnError::new("Could not read the vault from the database; the server log has the cause.")
    })
}

#[cfg(feature = "ssr")]
pub async fn read_summary(db: &orchestrator::db::Db) -> Result<VaultSummary, sqlx::Error> {
    orchestrator::row! {
        struct Vault {
            name: String,
            created_at: String,
        }
    }
    let v: Vault = sqlx::query_as("select name, created_at from vault where id = 1").fetch_one(&db.pool).await?;
    let schema_version = db.applied_version().await?.unwrap_or(0);
    Ok(VaultSummary { name: v.name, created_at: v.created_at, schema_version, database: db.backend.title().into() })
}
