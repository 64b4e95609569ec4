//! Local accounts, browser sessions, personal API tokens and the audit log, in the vault's database.
//!
//! Architecture Invariant: no secret is stored in the clear. Passwords are argon2id PHC strings; session and API
//! tokens are 256-bit random values of which only the BLAKE3 digest is kept, so a copy of the database signs
//! nobody in.

use argon2::password_hash::rand_core::{OsRng, RngCore};
use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::Argon2;
use serde::{Deserialize, Serialize};
use sqlx::Row;

use crate::access::Role;
use crate::db::{self, Db, Unique};
use crate::domain::Millis;

/// How long a browser session lasts without signing in again: one working shift.
pub const SESSION_MS: Millis = 12 * 3600 * 1000;

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct User {
    pub id: i64,
    pub name: String,
    pub role: Role,
}

#[derive(Debug, thiserror::Error)]
pub enum AccountError {
    #[error("the user name or the password is wrong")]
    BadCredentials,
    #[error("a user named {0} already exists")]
    NameTaken(String),
    #[error("no user named {0}")]
    UnknownUser(String),
    #[error("{0} is the last enabled Administrator; enable or add another Administrator first")]
    LastAdministrator(String),
    #[error("the current password is wrong")]
    WrongPassword,
    #[error("{0}")]
    Invalid(String),
    #[error("password hashing failed: {0}")]
    Hash(String),
    #[error("database: {0}")]
    Db(#[from] sqlx::Error),
}

/// The browser session a request came with (the auth layer puts it beside the [`User`]): what a password change
/// keeps while it ends the account's other sessions.
#[derive(Clone, Debug)]
pub struct SessionToken(pub String);

/// An account as the Administrator's list shows it; never a secret.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Account {
    pub name: String,
    pub role: Role,
    pub created_at: Millis,
    /// When it was disabled; `None` while it may sign in.
    pub disabled_at: Option<Millis>,
    /// Browser sessions not yet expired.
    pub sessions: u64,
    /// API tokens not yet expired.
    pub tokens: u64,
    /// The last use of any of its API tokens (to the minute).
    pub token_used_at: Option<Millis>,
}

/// One line of the audit log.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditEntry {
    pub at: Millis,
    pub user_name: String,
    pub role: String,
    /// e.g. `failover`, `commit`, `sign-in`, `job-cancel`, `faults`.
    pub action: String,
    /// The item, plan, job or account acted on.
    pub target: String,
    pub reason: Option<String>,
    pub job_id: Option<String>,
    /// `started`, `refused`, `denied`, `failed`, `succeeded`.
    pub outcome: String,
    pub detail: Option<String>,
}

/// A random secret, as 64 hex characters.
pub fn random_secret() -> String {
    let mut b = [0u8; 32];
    OsRng.fill_bytes(&mut b);
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// A password people can type from a terminal: 20 characters without look-alikes.
pub fn random_password() -> String {
    const ALPHABET: &[u8] = b"abcdefghjkmnpqrstuvwxyzABCDEFGHJKLMNPQRSTUVWXYZ23456789";
    let mut b = [0u8; 20];
    OsRng.fill_bytes(&mut b);
    b.iter().map(|x| ALPHABET[*x as usize % ALPHABET.len()] as char).collect()
}

fn digest(token: &str) -> String {
    blake3::hash(token.as_bytes()).to_hex().to_string()
}

fn hash_password(password: &str) -> Result<String, AccountError> {
    if password.chars().count() < 12 {
        return Err(AccountError::Invalid("a password needs at least 12 characters".into()));
    }
    let salt = SaltString::generate(&mut OsRng);
    Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(|e| AccountError::Hash(e.to_string()))
}

fn verify(password: &str, phc: &str) -> bool {
    PasswordHash::new(phc).is_ok_and(|h| Argon2::default().verify_password(password.as_bytes(), &h).is_ok())
}

/// How precisely an API token's last use is recorded.
const TOKEN_USE_RESOLUTION_MS: i64 = 60_000;

fn user_from(row: &sqlx::any::AnyRow) -> Result<User, AccountError> {
    let role: String = row.try_get("role")?;
    Ok(User {
        id: row.try_get("id")?,
        name: row.try_get("name")?,
        role: Role::parse(&role)
            .ok_or_else(|| AccountError::Invalid(format!("unknown role {role} in the database")))?,
    })
}

/// Refuses a change (inside its transaction, after its write) that leaves no enabled Administrator: nobody could
/// administer the vault then.
async fn an_administrator_is_left(tx: &mut sqlx::AnyConnection, name: &str) -> Result<(), AccountError> {
    let left: i64 =
        sqlx::query_scalar("select count(*) from users where role = 'administrator' and disabled_at is null")
            .fetch_one(&mut *tx)
            .await?;
    if left == 0 {
        return Err(AccountError::LastAdministrator(name.to_owned()));
    }
    Ok(())
}

#[derive(Clone, Debug)]
pub struct Accounts {
    pub db: Db,
}

impl Accounts {
    pub fn new(db: Db) -> Accounts {
        Accounts { db }
    }

    /// Creates a local account. Hashing takes tens of milliseconds of CPU, so it runs off the async threads.
    pub async fn create_user(&self, name: &str, role: Role, password: &str, now: Millis) -> Result<User, AccountError> {
        let name = crate::access::parse_user_name(name).map_err(AccountError::Invalid)?;
        let pw = password.to_owned();
        let phc = tokio::task::spawn_blocking(move || hash_password(&pw))
            .await
            .map_err(|e| AccountError::Hash(e.to_string()))??;
        let res: Result<i64, _> = sqlx::query_scalar(
            "insert into users (name, role, password_hash, created_at) values ($1, $2, $3, $4) returning id",
        )
        .bind(&name)
        .bind(role.as_str())
        .bind(&phc)
        .bind(now as i64)
        .fetch_one(&self.db.pool)
        .await;
        match res {
            Ok(id) => Ok(User { id, name, role }),
            Err(e) if db::unique_violation(&e) == Some(Unique::UserName) => Err(AccountError::NameTaken(name)),
            Err(e) => Err(e.into()),
        }
    }

    /// On a vault without accounts, creates `admin` (Administrator) with `password` or a generated one, which is
    /// returned so the first start can print it once. `None` when accounts exist already.
    pub async fn ensure_admin(&self, password: Option<String>, now: Millis) -> Result<Option<String>, AccountError> {
        let n: i64 = sqlx::query_scalar("select count(*) from users").fetch_one(&self.db.pool).await?;
        if n > 0 {
            return Ok(None);
        }
        let pw = password.unwrap_or_else(random_password);
        match self.create_user("admin", Role::Administrator, &pw, now).await {
            Ok(_) => Ok(Some(pw)),
            // Another node sharing the database created it first.
            Err(AccountError::NameTaken(_)) => Ok(None),
            Err(e) => Err(e),
        }
    }

    pub async fn users(&self) -> Result<Vec<User>, AccountError> {
        let rows = sqlx::query("select id, name, role from users order by name").fetch_all(&self.db.pool).await?;
        rows.iter().map(user_from).collect()
    }

    /// Whether `name` is an account's (the audit log keeps a typed name only then).
    pub async fn is_account(&self, name: &str) -> Result<bool, AccountError> {
        Ok(self.user_by_name(name.trim()).await?.is_some())
    }

    /// The account and its password hash, unless it is disabled (then it is as if unknown: same answer, same time).
    async fn enabled_user_by_name(&self, name: &str) -> Result<Option<(User, String)>, AccountError> {
        let row =
            sqlx::query("select id, name, role, password_hash from users where name = $1 and disabled_at is null")
                .bind(name)
                .fetch_optional(&self.db.pool)
                .await?;
        row.map(|r| Ok((user_from(&r)?, r.try_get("password_hash")?))).transpose()
    }

    async fn user_by_name(&self, name: &str) -> Result<Option<(User, String)>, AccountError> {
        let row = sqlx::query("select id, name, role, password_hash from users where name = $1")
            .bind(name)
            .fetch_optional(&self.db.pool)
            .await?;
        row.map(|r| Ok((user_from(&r)?, r.try_get("password_hash")?))).transpose()
    }

    /// Checks a password. An unknown name costs the same hashing work as a wrong password, so timing does not
    /// tell which names exist.
    pub async fn verify_password(&self, name: &str, password: &str) -> Result<User, AccountError> {
        let found = self.enabled_user_by_name(name.trim()).await?;
        let phc = found.as_ref().map(|(_, h)| h.clone()).unwrap_or_else(|| {
            "$argon2id$v=19$m=19456,t=2,p=1$c29tZXNhbHRzb21lc2FsdA$5dA6uXIqAlrh3dJf8LrsOcVn6Bc2Iq0ibW0xNmmTbbk".into()
        });
        let pw = password.to_owned();
        let ok = tokio::task::spawn_blocking(move || verify(&pw, &phc)).await.unwrap_or(false);
        match found {
            Some((user, _)) if ok => Ok(user),
            _ => Err(AccountError::BadCredentials),
        }
    }

    /// Starts a browser session; returns the token for the cookie.
    pub async fn create_session(&self, user: &User, now: Millis) -> Result<String, AccountError> {
        let token = random_secret();
        sqlx::query("delete from sessions where expires_at <= $1").bind(now as i64).execute(&self.db.pool).await?;
        sqlx::query("insert into sessions (token_hash, user_id, created_at, expires_at) values ($1, $2, $3, $4)")
            .bind(digest(&token))
            .bind(user.id)
            .bind(now as i64)
            .bind((now + SESSION_MS) as i64)
            .execute(&self.db.pool)
            .await?;
        Ok(token)
    }

    pub async fn session_user(&self, token: &str, now: Millis) -> Result<Option<User>, AccountError> {
        let row = sqlx::query(
            "select u.id, u.name, u.role from sessions s join users u on u.id = s.user_id \
             where s.token_hash = $1 and s.expires_at > $2 and u.disabled_at is null",
        )
        .bind(digest(token))
        .bind(now as i64)
        .fetch_optional(&self.db.pool)
        .await?;
        row.as_ref().map(user_from).transpose()
    }

    pub async fn end_session(&self, token: &str) -> Result<(), AccountError> {
        sqlx::query("delete from sessions where token_hash = $1").bind(digest(token)).execute(&self.db.pool).await?;
        Ok(())
    }

    /// A personal API token for `name`, valid for `days`, shown once: `hwt_` and 64 hex characters.
    pub async fn create_token(&self, name: &str, label: &str, days: u32, now: Millis) -> Result<String, AccountError> {
        let (user, _) =
            self.enabled_user_by_name(name).await?.ok_or_else(|| AccountError::UnknownUser(name.to_owned()))?;
        let token = format!("hwt_{}", random_secret());
        sqlx::query(
            "insert into api_tokens (token_hash, user_id, label, created_at, expires_at) values ($1, $2, $3, $4, $5)",
        )
        .bind(digest(&token))
        .bind(user.id)
        .bind(label)
        .bind(now as i64)
        .bind((now + u64::from(days) * 86_400_000) as i64)
        .execute(&self.db.pool)
        .await?;
        Ok(token)
    }

    pub async fn token_user(&self, token: &str, now: Millis) -> Result<Option<User>, AccountError> {
        let h = digest(token);
        let row = sqlx::query(
            "select u.id, u.name, u.role, t.last_used_at from api_tokens t join users u on u.id = t.user_id \
             where t.token_hash = $1 and t.expires_at > $2 and u.disabled_at is null",
        )
        .bind(&h)
        .bind(now as i64)
        .fetch_optional(&self.db.pool)
        .await?;
        let last: Option<i64> = row.as_ref().map(|r| r.try_get("last_used_at")).transpose()?.flatten();
        if row.is_some() && last.is_none_or(|t| now as i64 - t >= TOKEN_USE_RESOLUTION_MS) {
            // Off the request's path and at most once a minute: a read must never wait for, or fail with, a write
            // (a busy or full database still serves reads).
            let pool = self.db.pool.clone();
            tokio::spawn(async move {
                let r = sqlx::query("update api_tokens set last_used_at = $1 where token_hash = $2")
                    .bind(now as i64)
                    .bind(&h)
                    .execute(&pool)
                    .await;
                if let Err(e) = r {
                    tracing::warn!(error = %e, "recording an API token's last use failed");
                }
            });
        }
        row.as_ref().map(user_from).transpose()
    }

    /// Ends every session and deletes every API token of `name` (a lost laptop, a person who left). Returns how
    /// many of each were removed.
    pub async fn revoke(&self, name: &str) -> Result<(u64, u64), AccountError> {
        let (user, _) = self.user_by_name(name).await?.ok_or_else(|| AccountError::UnknownUser(name.to_owned()))?;
        let mut tx = self.db.pool.begin().await?;
        let s = sqlx::query("delete from sessions where user_id = $1").bind(user.id).execute(&mut *tx).await?;
        let t = sqlx::query("delete from api_tokens where user_id = $1").bind(user.id).execute(&mut *tx).await?;
        tx.commit().await?;
        Ok((s.rows_affected(), t.rows_affected()))
    }

    /// Disables `name`: no sign-in by any means (its sessions end, its tokens are deleted) until enabled again.
    /// The last enabled Administrator cannot be disabled (nobody could administer the vault then).
    pub async fn disable(&self, name: &str, now: Millis) -> Result<(u64, u64), AccountError> {
        let (user, _) = self.user_by_name(name).await?.ok_or_else(|| AccountError::UnknownUser(name.to_owned()))?;
        let mut tx = self.db.pool.begin().await?;
        // The write first, so that two concurrent disables of the last two Administrators serialise here.
        sqlx::query("update users set disabled_at = coalesce(disabled_at, $1) where id = $2")
            .bind(now as i64)
            .bind(user.id)
            .execute(&mut *tx)
            .await?;
        if user.role == Role::Administrator {
            an_administrator_is_left(&mut tx, &user.name).await?;
        }
        let s = sqlx::query("delete from sessions where user_id = $1").bind(user.id).execute(&mut *tx).await?;
        let t = sqlx::query("delete from api_tokens where user_id = $1").bind(user.id).execute(&mut *tx).await?;
        tx.commit().await?;
        Ok((s.rows_affected(), t.rows_affected()))
    }

    /// Lets a disabled account sign in again (with its password; its old tokens stay deleted).
    pub async fn enable(&self, name: &str) -> Result<(), AccountError> {
        let r = sqlx::query("update users set disabled_at = null where name = $1")
            .bind(name)
            .execute(&self.db.pool)
            .await?;
        if r.rows_affected() == 0 {
            return Err(AccountError::UnknownUser(name.to_owned()));
        }
        Ok(())
    }

    /// Every account as an Administrator manages it: role, whether disabled, and its live sign-ins.
    pub async fn accounts(&self, now: Millis) -> Result<Vec<Account>, AccountError> {
        crate::row! {
            struct Row {
                name: String,
                role: String,
                created_at: i64,
                disabled_at: Option<i64>,
                sessions: i64,
                tokens: i64,
                token_used_at: Option<i64>,
            }
        }
        let rows: Vec<Row> = sqlx::query_as(
            "select u.name as name, u.role as role, u.created_at as created_at, u.disabled_at as disabled_at, \
               (select count(*) from sessions s where s.user_id = u.id and s.expires_at > $1) as sessions, \
               (select count(*) from api_tokens t where t.user_id = u.id and t.expires_at > $1) as tokens, \
               (select max(t.last_used_at) from api_tokens t where t.user_id = u.id) as token_used_at \
             from users u order by u.name",
        )
        .bind(now as i64)
        .fetch_all(&self.db.pool)
        .await?;
        rows.into_iter()
            .map(|r| {
                Ok(Account {
                    role: Role::parse(&r.role)
                        .ok_or_else(|| AccountError::Invalid(format!("unknown role {} in the database", r.role)))?,
                    name: r.name,
                    created_at: r.created_at as Millis,
                    disabled_at: r.disabled_at.map(|t| t as Millis),
                    sessions: r.sessions as u64,
                    tokens: r.tokens as u64,
                    token_used_at: r.token_used_at.map(|t| t as Millis),
                })
            })
            .collect()
    }

    /// Gives `name` another role. The last enabled Administrator keeps its role (nobody could administer the
    /// vault otherwise); the change applies to its next request, sessions and tokens included.
    pub async fn set_role(&self, name: &str, role: Role) -> Result<User, AccountError> {
        let (user, _) = self.user_by_name(name).await?.ok_or_else(|| AccountError::UnknownUser(name.to_owned()))?;
        let mut tx = self.db.pool.begin().await?;
        // The write first, so that two concurrent demotions of the last two Administrators serialise here.
        sqlx::query("update users set role = $1 where id = $2")
            .bind(role.as_str())
            .bind(user.id)
            .execute(&mut *tx)
            .await?;
        an_administrator_is_left(&mut tx, &user.name).await?;
        tx.commit().await?;
        Ok(User { role, ..user })
    }

    /// Changes the signed-in person's own password after checking the current one. Every other session of the
    /// account ends (whoever else knew the old password is signed out); `keep_session`, the caller's own, stays.
    /// Returns how many sessions ended.
    pub async fn change_password(
        &self,
        user: &User,
        current: &str,
        new: &str,
        keep_session: Option<&str>,
    ) -> Result<u64, AccountError> {
        if self.verify_password(&user.name, current).await.is_err() {
            return Err(AccountError::WrongPassword);
        }
        if current == new {
            return Err(AccountError::Invalid("the new password is the current one; choose another".into()));
        }
        let pw = new.to_owned();
        let phc = tokio::task::spawn_blocking(move || hash_password(&pw))
            .await
            .map_err(|e| AccountError::Hash(e.to_string()))??;
        let mut tx = self.db.pool.begin().await?;
        sqlx::query("update users set password_hash = $1 where id = $2")
            .bind(&phc)
            .bind(user.id)
            .execute(&mut *tx)
            .await?;
        let keep = keep_session.map(digest).unwrap_or_default();
        let ended = sqlx::query("delete from sessions where user_id = $1 and token_hash <> $2")
            .bind(user.id)
            .bind(&keep)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(ended.rows_affected())
    }

    pub async fn audit(&self, e: &AuditEntry) -> Result<(), AccountError> {
        sqlx::query(
            "insert into audit (at, user_name, role, action, target, reason, job_id, outcome, detail) \
             values ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
        )
        .bind(e.at as i64)
        .bind(&e.user_name)
        .bind(&e.role)
        .bind(&e.action)
        .bind(&e.target)
        .bind(&e.reason)
        .bind(&e.job_id)
        .bind(&e.outcome)
        .bind(&e.detail)
        .execute(&self.db.pool)
        .await?;
        Ok(())
    }

    /// Newest first; `user` and `target` filter exactly when given.
    pub async fn audit_log(
        &self,
        user: Option<&str>,
        target: Option<&str>,
        limit: i64,
        offset: i64,
    ) -> Result<(Vec<AuditEntry>, i64), AccountError> {
        let cond = "($1 is null or user_name = $1) and ($2 is null or target = $2 or job_id = $2)";
        let total: i64 = sqlx::query_scalar(&format!("select count(*) from audit where {cond}"))
            .bind(user)
            .bind(target)
            .fetch_one(&self.db.pool)
            .await?;
        let rows = sqlx::query(&format!(
            "select at, user_name, role, action, target, reason, job_id, outcome, detail from audit where {cond} \
             order by id desc limit $3 offset $4"
        ))
        .bind(user)
        .bind(target)
        .bind(limit)
        .bind(offset)
        .fetch_all(&self.db.pool)
        .await?;
        let entries = rows
            .iter()
            .map(|r| {
                Ok(AuditEntry {
                    at: r.try_get::<i64, _>("at")? as Millis,
                    user_name: r.try_get("user_name")?,
                    role: r.try_get("role")?,
                    action: r.try_get("action")?,
                    target: r.try_get("target")?,
                    reason: r.try_get("reason")?,
                    job_id: r.try_get("job_id")?,
                    outcome: r.try_get("outcome")?,
                    detail: r.try_get("detail")?,
                })
            })
            .collect::<Result<Vec<_>, sqlx::Error>>()?;
        Ok((entries, total))
    }
}
