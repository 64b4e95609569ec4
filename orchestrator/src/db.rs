//! The vault's database, SQLite (embedded default) or PostgreSQL (several nodes), behind one code path.
//!
//! Every query in Homeward is written once, with `$1`-style placeholders that both engines accept, and runs on a
//! `sqlx::AnyPool`. What really differs between the two engines lives here and nowhere else: how to connect and
//! tune the connection, the migrations folder, the expression for the database's clock, row locking for claims,
//! how a constraint violation names its constraint, and which errors are worth retrying.

use std::sync::LazyLock;
use std::time::Duration;

use sqlx::any::AnyPoolOptions;
use sqlx::migrate::{Migration, MigrationType, Migrator};
use sqlx::{AnyPool, Executor};

/// Migrations per engine: the same versions, with each engine's own types (identity columns, bigint).
pub static SQLITE_MIGRATOR: LazyLock<Migrator> = LazyLock::new(|| embedded(embedded::SQLITE));
pub static POSTGRES_MIGRATOR: LazyLock<Migrator> = LazyLock::new(|| embedded(embedded::POSTGRES));

/// The migration files, compiled in by build.rs: `(version, description, sql, no_transaction)` in version order.
mod embedded {
    include!(concat!(env!("OUT_DIR"), "/migrations.rs"));
}

/// What `sqlx::migrate!` builds, without sqlx's proc macros: those compile both database drivers a second time, for
/// the compiler's host, which cost a fresh `./x test` most of a minute. The checksums are the SQL's SHA-384 either
/// way, so vaults migrated by the macro's migrator see no change.
fn embedded(files: &'static [(i64, &'static str, &'static str, bool)]) -> Migrator {
    let migrations = files
        .iter()
        .map(|&(version, description, sql, no_tx)| {
            Migration::new(version, description.into(), MigrationType::Simple, sql.into(), no_tx)
        })
        .collect::<Vec<_>>();
    // The fields the macro sets; Migrator::new would read the same list through an async source.
    Migrator { migrations: migrations.into(), ..Migrator::DEFAULT }
}

/// A struct decoded from a row by column name, as `#[derive(sqlx::FromRow)]` does (without sqlx's proc macros,
/// see [`embedded`]): every field is read with `try_get` by its own name, so a renamed or missing column is an
/// error naming it, never a value read from the wrong position.
#[macro_export]
macro_rules! row {
    ($(#[$meta:meta])* $vis:vis struct $name:ident { $($(#[$fmeta:meta])* $fvis:vis $field:ident : $ty:ty),* $(,)? }) => {
        $(#[$meta])* $vis struct $name { $($(#[$fmeta])* $fvis $field: $ty),* }

        impl<'r> ::sqlx::FromRow<'r, ::sqlx::any::AnyRow> for $name {
            fn from_row(row: &'r ::sqlx::any::AnyRow) -> ::std::result::Result<Self, ::sqlx::Error> {
                use ::sqlx::Row as _;
                Ok(Self { $($field: row.try_get(stringify!($field))?),* })
            }
        }
    };
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

impl Backend {
    /// What `/healthz` and the portal call it.
    pub fn name(self) -> &'static str {
        match self {
            Backend::Sqlite => "sqlite",
            Backend::Postgres => "postgresql",
        }
    }

    pub fn title(self) -> &'static str {
        match self {
            Backend::Sqlite => "SQLite",
            Backend::Postgres => "PostgreSQL",
        }
    }

    pub fn of_url(url: &str) -> Option<Backend> {
        if url.starts_with("sqlite:") {
            Some(Backend::Sqlite)
        } else if url.starts_with("postgres:") || url.starts_with("postgresql:") {
            Some(Backend::Postgres)
        } else {
            None
        }
    }

    pub fn migrator(self) -> &'static sqlx::migrate::Migrator {
        match self {
            Backend::Sqlite => &SQLITE_MIGRATOR,
            Backend::Postgres => &POSTGRES_MIGRATOR,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum DbError {
    #[error("{0}: expected a URL starting with sqlite: or postgres://")]
    UnknownScheme(String),
    #[error("cannot open the database {target}: {reason}")]
    Open { target: String, reason: String },
    #[error(
        "the database {target} has schema version {found}, newer than this homeward knows ({known}); \
         run the newer homeward that migrated it (schemas are never migrated down)"
    )]
    NewerSchema { target: String, found: i64, known: i64 },
    #[error("cannot migrate the database {target}: {source}")]
    Migrate { target: String, source: sqlx::migrate::MigrateError },
    #[error("database: {0}")]
    Query(#[from] sqlx::Error),
}

/// A pool and the engine behind it.
#[derive(Clone, Debug)]
pub struct Db {
    pub pool: AnyPool,
    pub backend: Backend,
    /// The URL without its password, for messages.
    pub target: String,
}

/// The URL as it may be shown: a password in it is replaced by `***`.
pub fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(s), Some(at)) if at > s => {
            let creds = &url[s + 3..at];
            match creds.find(':') {
                Some(c) => format!("{}{}:***{}", &url[..s + 3], &creds[..c], &url[at..]),
                None => url.to_owned(),
            }
        }
        _ => url.to_owned(),
    }
}

impl Db {
    /// Connects and proves the database answers now, so a wrong URL fails at start with one clear line rather
    /// than on the first request.
    pub async fn connect(url: &str, max_connections: u32) -> Result<Db, DbError> {
        sqlx::any::install_default_drivers();
        let backend = Backend::of_url(url).ok_or_else(|| DbError::UnknownScheme(redact(url)))?;
        let target = redact(url);
        let open_err = |e: sqlx::Error| DbError::Open { target: target.clone(), reason: short_reason(&e) };
        let pool = Db::pool_options(backend, max_connections).connect(url).await.map_err(open_err)?;
        sqlx::query("select 1").execute(&pool).await.map_err(open_err)?;
        Ok(Db { pool, backend, target })
    }

    /// How every pool of ours opens its connections.
    fn pool_options(backend: Backend, max_connections: u32) -> AnyPoolOptions {
        AnyPoolOptions::new().max_connections(max_connections).acquire_timeout(Duration::from_secs(10)).after_connect(
            move |conn, _| {
                Box::pin(async move {
                    if backend == Backend::Sqlite {
                        // WAL lets the portal read while jobs write; FULL makes every committed transition survive
                        // power loss, which a DR tool's job log must.
                        conn.execute(
                            "pragma journal_mode = wal; pragma synchronous = full; pragma busy_timeout = 10000; \
                             pragma foreign_keys = on",
                        )
                        .await?;
                    }
                    Ok(())
                })
            },
        )
    }

    /// The same database through a pool of one connection of its own, opened on first use. A connection belongs to
    /// the runtime that opened it (its IO is driven there): a thread with a runtime of its own must not borrow
    /// the pool of another — a single-threaded runtime drives its connections only inside its own `block_on`.
    /// Call it inside the runtime that will use it (`Runtime::enter`).
    pub(crate) fn own_pool(&self) -> Db {
        let options = (*self.pool.connect_options()).clone();
        Db {
            pool: Db::pool_options(self.backend, 1).connect_lazy_with(options),
            backend: self.backend,
            target: self.target.clone(),
        }
    }

    /// Brings the schema up to date; a schema newer than this binary is refused, never migrated down.
    pub async fn migrate(&self) -> Result<(), DbError> {
        let migrator = self.backend.migrator();
        let known = migrator.iter().map(|m| m.version).max().unwrap_or(0);
        if let Some(found) = self.applied_version().await? {
            if found > known {
                return Err(DbError::NewerSchema { target: self.target.clone(), found, known });
            }
        }
        migrator.run(&self.pool).await.map_err(|source| DbError::Migrate { target: self.target.clone(), source })
    }

    /// The newest applied migration, `None` on a database never migrated.
    pub async fn applied_version(&self) -> Result<Option<i64>, sqlx::Error> {
        let exists = match self.backend {
            Backend::Sqlite => {
                "select count(*) as n from sqlite_master where type = 'table' and name = '_sqlx_migrations'"
            }
            Backend::Postgres => {
                "select count(*) as n from information_schema.tables where table_schema = current_schema() \
                 and table_name = '_sqlx_migrations'"
            }
        };
        let n: i64 = sqlx::query_scalar(exists).fetch_one(&self.pool).await?;
        if n == 0 {
            return Ok(None);
        }
        sqlx::query_scalar("select max(version) from _sqlx_migrations where success").fetch_one(&self.pool).await
    }

    /// The database's clock in milliseconds since the Unix epoch, as an SQL expression. Leases and job times are
    /// taken from it, so nodes whose clocks disagree still agree on who holds a lease.
    pub fn now_ms(&self) -> &'static str {
        match self.backend {
            Backend::Sqlite => "cast((julianday('now') - 2440587.5) * 86400000.0 as bigint)",
            Backend::Postgres => "cast(extract(epoch from clock_timestamp()) * 1000 as bigint)",
        }
    }

    /// Appended to the sub-select that picks a row to claim: PostgreSQL locks the row and lets concurrent claimers
    /// skip it; SQLite needs nothing, as one statement holds the database's write lock from start to end.
    pub fn skip_locked(&self) -> &'static str {
        match self.backend {
            Backend::Sqlite => "",
            Backend::Postgres => " for update skip locked",
        }
    }

    /// Run first in a transaction that checks that items are free and then takes them for a job. On PostgreSQL
    /// such transactions wait for each other here, so each one's check sees what the one before committed; SQLite
    /// needs nothing, as the transaction's first statement is a write and holds the database's write lock.
    pub fn items_claim_lock(&self) -> Option<&'static str> {
        match self.backend {
            Backend::Sqlite => None,
            Backend::Postgres => Some("select pg_advisory_xact_lock(7158)"),
        }
    }

    pub async fn now(&self) -> Result<i64, sqlx::Error> {
        sqlx::query_scalar(&format!("select {} as now", self.now_ms())).fetch_one(&self.pool).await
    }
}

/// The unique constraints whose violation is a client's mistake, not a server fault.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Unique {
    JobIdempotencyKey,
    OneActiveJobPerItem,
    UserName,
    AgentName,
    ConnectionName,
}

impl Unique {
    /// (constraint, PostgreSQL's name for it, SQLite's "table.column" in its message).
    const ALL: [(Unique, &'static str, &'static str); 5] = [
        (Unique::JobIdempotencyKey, "jobs_idempotency_key", "jobs.idempotency_key"),
        (Unique::OneActiveJobPerItem, "jobs_one_active_per_item", "jobs.item_id"),
        (Unique::UserName, "users_name", "users.name"),
        (Unique::AgentName, "agents_name", "agents.name"),
        (Unique::ConnectionName, "site_connections_name", "site_connections.name"),
    ];
}

/// Which of our unique constraints `e` violated, named the way each engine reports it.
pub fn unique_violation(e: &sqlx::Error) -> Option<Unique> {
    let d = e.as_database_error()?;
    if !matches!(d.kind(), sqlx::error::ErrorKind::UniqueViolation) {
        return None;
    }
    let (name, msg) = (d.constraint().unwrap_or_default().to_owned(), d.message().to_owned());
    Unique::ALL.iter().find(|(_, pg, lite)| name == *pg || msg.contains(lite)).map(|(u, _, _)| *u)
}

/// Errors that a retry after a pause may cure: the database restarting, a dropped connection, a busy SQLite file,
/// a serialisation failure.
pub fn is_transient(e: &sqlx::Error) -> bool {
    match e {
        sqlx::Error::Io(_) | sqlx::Error::PoolTimedOut | sqlx::Error::Protocol(_) | sqlx::Error::Tls(_) => true,
        sqlx::Error::Database(d) => {
            let code = d.code().unwrap_or_default();
            // SQLite: 5 busy, 6 locked. PostgreSQL: 08 connection, 40001 serialisation, 40P01 deadlock,
            // 57P01-57P03 shutting down / cannot connect now.
            matches!(code.as_ref(), "5" | "6" | "40001" | "40P01" | "57P01" | "57P02" | "57P03")
                || code.starts_with("08")
                || d.message().contains("database is locked")
        }
        _ => false,
    }
}

/// The first line of a connection error, without the driver's debug noise.
fn short_reason(e: &sqlx::Error) -> String {
    let s = match e {
        sqlx::Error::Database(d) => d.message().to_owned(),
        other => other.to_string(),
    };
    s.lines().next().unwrap_or_default().to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_never_reach_messages() {
        assert_eq!(redact("postgres://hw:s3cret@127.0.0.1:5/db"), "postgres://hw:***@127.0.0.1:5/db");
        assert_eq!(redact("postgres://hw@h/db"), "postgres://hw@h/db");
        assert_eq!(redact("sqlite:///tmp/x.db"), "sqlite:///tmp/x.db");
    }

    #[test]
    fn backend_from_the_url_scheme() {
        assert_eq!(Backend::of_url("sqlite://x.db"), Some(Backend::Sqlite));
        assert_eq!(Backend::of_url("postgresql://h/db"), Some(Backend::Postgres));
        assert_eq!(Backend::of_url("mysql://h/db"), None);
    }
}
