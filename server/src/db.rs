//! Opening the vault's database: the SQLite file in the data dir by default, or the URL given; migrations at
//! start; the vault row created once. What differs between the engines is in `orchestrator::db`.

use std::path::Path;

use orchestrator::db::{Db, DbError};

use crate::cli::{DatabaseUrl, VaultName};

/// Connections per node: the workers, the replication rounds and the web requests share them.
const MAX_CONNECTIONS: u32 = 16;

/// The URL of the embedded default: `<data_dir>/homeward.db`, created if missing.
pub fn default_url(data_dir: &Path) -> String {
    format!("sqlite://{}?mode=rwc", data_dir.join("homeward.db").display())
}

/// Opens the database named by `url`, or `<data_dir>/homeward.db`, and brings its schema up to date (a schema
/// newer than this binary is refused).
pub async fn open(url: Option<&DatabaseUrl>, data_dir: &Path) -> Result<Db, DbError> {
    if url.is_none() {
        // The vault holds password hashes, token digests and the audit log: readable by its owner only. SQLite
        // gives its WAL and shared-memory files the database file's mode.
        let path = data_dir.join("homeward.db");
        let created =
            tokio::fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(&path).await.map(drop);
        match created {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
            Err(e) => {
                return Err(DbError::Open { target: path.display().to_string(), reason: e.to_string() });
            }
        }
    }
    let url = url.map(|u| u.as_str().to_owned()).unwrap_or_else(|| default_url(data_dir));
    let db = Db::connect(&url, MAX_CONNECTIONS).await?;
    db.migrate().await?;
    Ok(db)
}

/// Creates the vault row on first start; an existing vault keeps its name.
pub async fn ensure_vault(db: &Db, name: &VaultName, now_rfc3339: &str) -> Result<(), DbError> {
    sqlx::query("insert into vault (id, name, created_at) values (1, $1, $2) on conflict (id) do nothing")
        .bind(name.as_str())
        .bind(now_rfc3339)
        .execute(&db.pool)
        .await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn open_creates_wal_database_migrates_and_keeps_the_first_vault_name() {
        let dir = tempfile::tempdir().unwrap();
        let db = open(None, dir.path()).await.unwrap();
        assert!(dir.path().join("homeward.db").exists());
        let mode: String = sqlx::query_scalar("pragma journal_mode").fetch_one(&db.pool).await.unwrap();
        assert_eq!(mode, "wal");
        // FULL (2): every committed transition survives power loss.
        let sync: i64 = sqlx::query_scalar("pragma synchronous").fetch_one(&db.pool).await.unwrap();
        assert_eq!(sync, 2);

        ensure_vault(&db, &"first".parse().unwrap(), "2026-01-01T00:00:00Z").await.unwrap();
        ensure_vault(&db, &"second".parse().unwrap(), "2026-02-01T00:00:00Z").await.unwrap();
        let o = app::vault::read_summary(&db).await.unwrap();
        assert_eq!((o.name.as_str(), o.created_at.as_str()), ("first", "2026-01-01T00:00:00Z"));
        let newest = orchestrator::db::SQLITE_MIGRATOR.iter().map(|m| m.version).max().unwrap();
        assert_eq!(o.schema_version, newest);
        assert_eq!(o.database, "SQLite");
        db.pool.close().await;

        // Reopening an existing database is a no-op migration, not an error.
        let db = open(None, dir.path()).await.unwrap();
        assert_eq!(app::vault::read_summary(&db).await.unwrap().name, "first");
    }

    #[tokio::test]
    async fn schema_refuses_an_empty_vault_name() {
        let dir = tempfile::tempdir().unwrap();
        let db = open(None, dir.path()).await.unwrap();
        let err = sqlx::query("insert into vault (id, name, created_at) values (1, '', 'x')")
            .execute(&db.pool)
            .await
            .unwrap_err();
        assert!(err.to_string().contains("CHECK"), "{err}");
    }

    #[tokio::test]
    async fn a_schema_newer_than_the_binary_is_refused_not_migrated_down() {
        let dir = tempfile::tempdir().unwrap();
        let db = open(None, dir.path()).await.unwrap();
        sqlx::query(
            "insert into _sqlx_migrations (version, description, success, checksum, execution_time) \
             values (9999, 'from the future', true, x'00', 0)",
        )
        .execute(&db.pool)
        .await
        .unwrap();
        db.pool.close().await;
        let e = open(None, dir.path()).await.unwrap_err();
        assert!(matches!(e, DbError::NewerSchema { found: 9999, .. }), "{e}");
        assert!(e.to_string().contains("newer than this homeward"), "{e}");
    }
}
