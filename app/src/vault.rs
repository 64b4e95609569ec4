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
    pub pool: sqlx::SqlitePool,
    /// The orchestration runtime: items, jobs, the estate.
    pub service: std::sync::Arc<orchestrator::service::Service>,
    /// Accounts and the audit log.
    pub accounts: orchestrator::accounts::Accounts,
}

// A read: GET, so the URL can be opened or scripted directly.
#[server(endpoint = "vault/summary", input = leptos::server_fn::codec::GetUrl)]
pub async fn get_vault_summary() -> Result<VaultSummary, ServerFnError> {
    let ctx = use_context::<ServerContext>()
        .ok_or_else(|| ServerFnError::new("the server did not provide its database context"))?;
    read_summary(&ctx.pool).await.map_err(|e| {
        tracing::error!(error = %e, "reading the vault summary failed");
        ServerFnError::new(format!("Could not read the vault from the database ({e}). Check the server log."))
    })
}

#[cfg(feature = "ssr")]
pub async fn read_summary(pool: &sqlx::SqlitePool) -> Result<VaultSummary, sqlx::Error> {
    let (name, created_at): (String, String) =
        sqlx::query_as("select name, created_at from vault where id = 1").fetch_one(pool).await?;
    let schema_version = schema_version(pool).await?;
    Ok(VaultSummary { name, created_at, schema_version, database: "SQLite".into() })
}

/// Newest successfully applied migration, 0 before any.
#[cfg(feature = "ssr")]
pub async fn schema_version(pool: &sqlx::SqlitePool) -> Result<i64, sqlx::Error> {
    let (v,): (Option<i64>,) =
        sqlx::query_as("select max(version) from _sqlx_migrations where success").fetch_one(pool).await?;
    Ok(v.unwrap_or(0))
}
