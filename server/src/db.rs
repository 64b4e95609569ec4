//! Opening the embedded database: WAL mode, migrations at start, the vault row created once.

use std::path::Path;
use std::str::FromStr;
use std::time::Duration;

use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sqlx::SqlitePool;

use crate::cli::{DatabaseUrl, VaultName};

/// Migrations are compiled into the binary so a deployed `homeward` needs no source tree.
pub use orchestrator::jobs::MIGRATOR;

#[derive(Debug, thiserror::Error)]
pub enum DbError {
    #[error("cannot open the database {target}: {source}")]
    Open { target: String, source: sqlx::Error },
    #[error("cannot migrate the database {target}: {source}")]
    Migrate { target: String, source: sqlx::migrate::MigrateError },
    #[error("cannot create the vault record: {0}")]
    Vault(sqlx::Error),
}

/// Opens (creating if missing) the database named by `url`, or `<data_dir>/homeward.db`, and brings its schema
/// up to date.
pub async fn open(url: Option<&DatabaseUrl>, data_dir: &Path) -> Result<SqlitePool, DbError> {
    let (target, options) = match url {
        Some(url) => (
            url.as_str().to_owned(),
            SqliteConnectOptions::from_str(url.as_str())
                .map_err(|source| DbError::Open { target: url.as_str().to_owned(), source })?,
        ),
        None => {
            let file = data_dir.join("homeward.db");
            (file.display().to_string(), SqliteConnectOptions::new().filename(file))
        }
    };
    let options = options
        .create_if_missing(true)
        // WAL lets the portal read while a job writes; NORMAL is durable across process crashes in WAL mode.
        .journal_mode(SqliteJournalMode::Wal)
        .synchronous(SqliteSynchronous::Normal)
        .busy_timeout(Duration::from_secs(5))
        .foreign_keys(true);
    let pool = SqlitePoolOptions::new()
        .max_connections(8)
        .connect_with(options)
        .await
        .map_err(|source| DbError::Open { target: target.clone(), source })?;
    MIGRATOR.run(&pool).await.map_err(|source| DbError::Migrate { target, source })?;
    Ok(pool)
}

/// Creates the vault row on first start; an existing vault keeps its name.
pub async fn ensure_vault(pool: &SqlitePool, name: &VaultName, now_rfc3339: &str) -> Result<(), DbError> {
    sqlx::query("insert into vault (id, name, created_at) values (1, ?, ?) on conflict (id) do nothing")
        .bind(name.as_str())
        .bind(now_rfc3339)
        .execute(pool)
        .await
        .map_err(DbError::Vault)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn open_creates_wal_database_migrates_and_keeps_the_first_vault_name() {
        let dir = tempfile::tempdir().unwrap();
        let pool = open(None, dir.path()).await.unwrap();
        assert!(dir.path().join("homeward.db").exists());
        let (mode,): (String,) = sqlx::query_as("pragma journal_mode").fetch_one(&pool).await.unwrap();
        assert_eq!(mode, "wal");

        ensure_vault(&pool, &"first".parse().unwrap(), "2026-01-01T00:00:00Z").await.unwrap();
        ensure_vault(&pool, &"second".parse().unwrap(), "2026-02-01T00:00:00Z").await.unwrap();
        let o = app::vault::read_summary(&pool).await.unwrap();
        assert_eq!((o.name.as_str(), o.created_at.as_str()), ("first", "2026-01-01T00:00:00Z"));
        let newest = MIGRATOR.iter().map(|m| m.version).max().unwrap();
        assert_eq!(o.schema_version, newest);
        pool.close().await;

        // Reopening an existing database is a no-op migration, not an error.
        let pool = open(None, dir.path()).await.unwrap();
        assert_eq!(app::vault::read_summary(&pool).await.unwrap().name, "first");
    }

    #[tokio::test]
    async fn schema_refuses_an_empty_vault_name() {
        let dir = tempfile::tempdir().unwrap();
        let pool = open(None, dir.path()).await.unwrap();
        let err = sqlx::query("insert into vault (id, name, created_at) values (1, '', 'x')")
            .execute(&pool)
            .await
            .unwrap_err();
        assert!(err.to_string().contains("CHECK"), "{err}");
    }
}
