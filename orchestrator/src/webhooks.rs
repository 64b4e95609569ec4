//! Webhooks: alerts (opened, resolved) and job ends POSTed as JSON to the addresses an Administrator added, each
//! signed with HMAC-SHA256 under the webhook's own secret (`X-Homeward-Signature: sha256=<hex>` over
//! `<timestamp>.<body>`, the timestamp in `X-Homeward-Timestamp`, so a receiver can refuse replays). A delivery is a
//! row written with its event (a job's end in the very transaction that ends it); it is claimed by one node with a
//! compare-and-set on its attempt count, retried with doubling backoff, and kept as the delivery log.

use std::sync::Arc;

use serde::Serialize;

use crate::connections::Sealer;
use crate::db::Db;
use crate::domain::Millis;

/// Attempts before a delivery is given up; the waits double from one second (about four minutes in all).
pub const MAX_ATTEMPTS: i64 = 8;
/// How long a node that claimed a delivery has to finish it before another may try.
const CLAIM_MS: i64 = 60_000;
/// A receiver that does not answer within this is counted as a failed attempt.
const TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum EventKind {
    /// An alert opened or resolved.
    Alert,
    /// A job ended (succeeded, failed or cancelled).
    Job,
}

#[derive(Clone, Debug, Serialize)]
pub struct Webhook {
    pub id: String,
    pub url: String,
    pub events: Vec<EventKind>,
    pub created_at: Millis,
    pub created_by: String,
}

#[derive(Clone, Debug, Serialize)]
pub struct Delivery {
    pub id: String,
    pub webhook_id: String,
    pub event: String,
    pub state: String,
    pub attempts: i64,
    pub next_attempt_at: Option<Millis>,
    pub last_status: Option<i64>,
    pub last_error: Option<String>,
    pub created_at: Millis,
    pub delivered_at: Option<Millis>,
}

crate::row! {
    struct WebhookRow {
        id: String,
        url: String,
        secret_sealed: String,
        events: String,
        created_at: i64,
        created_by: String,
    }
}

impl WebhookRow {
    fn view(&self) -> Webhook {
        Webhook {
            id: self.id.clone(),
            url: self.url.clone(),
            events: serde_json::from_str(&self.events).unwrap_or_default(),
            created_at: self.created_at.max(0) as Millis,
            created_by: self.created_by.clone(),
        }
    }
}

crate::row! {
    struct DeliveryRow {
        id: String,
        webhook_id: String,
        event: String,
        payload: String,
        state: String,
        attempts: i64,
        next_attempt_at: i64,
        last_status: Option<i64>,
        last_error: Option<String>,
        created_at: i64,
        delivered_at: Option<i64>,
    }
}

impl DeliveryRow {
    fn view(self) -> Delivery {
        let ms = |v: i64| v.max(0) as Millis;
        Delivery {
            next_attempt_at: (self.state == "pending").then(|| ms(self.next_attempt_at)),
            id: self.id,
            webhook_id: self.webhook_id,
            event: self.event,
            state: self.state,
            attempts: self.attempts,
            last_status: self.last_status,
            last_error: self.last_error,
            created_at: ms(self.created_at),
            delivered_at: self.delivered_at.map(ms),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum WebhookError {
    #[error("{0}")]
    Invalid(String),
    #[error("no webhook {0}; GET /api/v1/webhooks lists them")]
    NotFound(String),
    #[error("the webhook's secret cannot be sealed or opened with this node's connections.key")]
    Sealed,
    #[error(transparent)]
    Db(#[from] sqlx::Error),
}

/// The signature a receiver checks: HMAC-SHA256 under the secret over `<timestamp>.<body>`, hex.
pub fn signature(secret: &str, timestamp: Millis, body: &str) -> String {
    let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, secret.as_bytes());
    let tag = ring::hmac::sign(&key, format!("{timestamp}.{body}").as_bytes());
    tag.as_ref().iter().map(|b| format!("{b:02x}")).collect()
}

/// An address a webhook may POST to: http or https, a host, no credentials in it.
pub fn parse_url(url: &str) -> Result<String, WebhookError> {
    let u = reqwest::Url::parse(url.trim()).map_err(|e| {
        WebhookError::Invalid(format!("{url:?} is not an address ({e}); e.g. https://hooks.example/dr"))
    })?;
    if !matches!(u.scheme(), "http" | "https") || u.host_str().is_none_or(str::is_empty) {
        return Err(WebhookError::Invalid(format!("{url:?}: use an http:// or https:// address with a host")));
    }
    if !u.username().is_empty() || u.password().is_some() {
        return Err(WebhookError::Invalid(
            "the address may not carry a user or password: the signature authenticates the vault to the receiver"
                .into(),
        ));
    }
    Ok(u.to_string())
}

#[derive(Clone)]
pub struct Webhooks {
    db: Db,
    sealer: Arc<Sealer>,
}

impl std::fmt::Debug for Webhooks {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Webhooks")
    }
}

impl Webhooks {
    pub fn new(db: Db, sealer: Arc<Sealer>) -> Webhooks {
        Webhooks { db, sealer }
    }

    /// Adds a webhook. Without a secret one is made; either way it is answered here once and sealed at rest.
    pub async fn add(
        &self,
        url: &str,
        secret: Option<&str>,
        events: &[EventKind],
        by: &str,
        now: Millis,
    ) -> Result<(Webhook, String), WebhookError> {
        let url = parse_url(url)?;
        if events.is_empty() {
            return Err(WebhookError::Invalid("choose at least one event: alert, job".into()));
        }
        let secret = match secret.map(str::trim) {
            Some(s) if s.len() < 16 => {
                return Err(WebhookError::Invalid(
                    "a secret has at least 16 characters; leave it out to get one".into(),
                ))
            }
            Some(s) => s.to_owned(),
            None => crate::accounts::random_secret(),
        };
        let id = format!("whk-{}", uuid::Uuid::now_v7());
        let sealed = self.sealer.seal(&id, &secret).map_err(|_| WebhookError::Sealed)?;
        let mut events = events.to_vec();
        events.dedup();
        sqlx::query(
            "insert into webhooks (id, url, secret_sealed, events, created_at, created_by) values ($1, $2, $3, $4, $5, $6)",
        )
        .bind(&id)
        .bind(&url)
        .bind(&sealed)
        .bind(serde_json::to_string(&events).unwrap_or_default())
        .bind(now as i64)
        .bind(by)
        .execute(&self.db.pool)
        .await?;
        Ok((Webhook { id, url, events, created_at: now, created_by: by.to_owned() }, secret))
    }

    pub async fn list(&self) -> Result<Vec<Webhook>, WebhookError> {
        let rows: Vec<WebhookRow> = sqlx::query_as(
            "select id, url, secret_sealed, events, created_at, created_by from webhooks order by created_at",
        )
        .fetch_all(&self.db.pool)
        .await?;
        Ok(rows.iter().map(WebhookRow::view).collect())
    }

    /// Removes a webhook; its pending deliveries go with it, its log stays.
    pub async fn remove(&self, id: &str) -> Result<(), WebhookError> {
        let mut tx = self.db.pool.begin().await?;
        let done = sqlx::query("delete from webhooks where id = $1").bind(id).execute(&mut *tx).await?;
        if done.rows_affected() == 0 {
            return Err(WebhookError::NotFound(id.to_owned()));
        }
        sqlx::query(
            "update webhook_deliveries set state = 'failed', last_error = 'the webhook was removed' \
             where webhook_id = $1 and state = 'pending'",
        )
        .bind(id)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(())
    }

    pub async fn deliveries(&self, webhook: &str, limit: u32) -> Result<Vec<Delivery>, WebhookError> {
        let rows: Vec<DeliveryRow> = sqlx::query_as(
            "select id, webhook_id, event, payload, state, attempts, next_attempt_at, last_status, last_error, \
             created_at, delivered_at from webhook_deliveries where webhook_id = $1 \
             order by created_at desc, id desc limit $2",
        )
        .bind(webhook)
        .bind(i64::from(limit))
        .fetch_all(&self.db.pool)
        .await?;
        Ok(rows.into_iter().map(DeliveryRow::view).collect())
    }

    /// Queues `event` for every webhook that takes `kind`, inside `tx` (so it exists exactly when the event does).
    pub async fn enqueue_on(
        tx: &mut sqlx::AnyConnection,
        kind: EventKind,
        event: &str,
        payload: &serde_json::Value,
        now: Millis,
    ) -> Result<usize, sqlx::Error> {
        let hooks: Vec<(String, String)> =
            sqlx::query_as("select id, events from webhooks").fetch_all(&mut *tx).await?;
        let mut n = 0;
        for (id, events) in hooks {
            let events: Vec<EventKind> = serde_json::from_str(&events).unwrap_or_default();
            if !events.contains(&kind) {
                continue;
            }
            sqlx::query(
                "insert into webhook_deliveries (id, webhook_id, event, payload, state, next_attempt_at, created_at) \
                 values ($1, $2, $3, $4, 'pending', $5, $5)",
            )
            .bind(format!("dlv-{}", uuid::Uuid::now_v7()))
            .bind(&id)
            .bind(event)
            .bind(payload.to_string())
            .bind(now as i64)
            .execute(&mut *tx)
            .await?;
            n += 1;
        }
        Ok(n)
    }

    pub async fn enqueue(
        &self,
        kind: EventKind,
        event: &str,
        payload: &serde_json::Value,
        now: Millis,
    ) -> Result<usize, sqlx::Error> {
        let mut tx = self.db.pool.begin().await?;
        let n = Self::enqueue_on(&mut tx, kind, event, payload, now).await?;
        tx.commit().await?;
        Ok(n)
    }

    /// Sends the deliveries that are due (at most `max`), each claimed first so no other node sends it too; returns
    /// how many were attempted.
    pub async fn deliver_due(&self, http: &reqwest::Client, now: Millis, max: u32) -> Result<usize, sqlx::Error> {
        let due: Vec<DeliveryRow> = sqlx::query_as(
            "select id, webhook_id, event, payload, state, attempts, next_attempt_at, last_status, last_error, \
             created_at, delivered_at from webhook_deliveries where state = 'pending' and next_attempt_at <= $1 \
             order by next_attempt_at limit $2",
        )
        .bind(now as i64)
        .bind(i64::from(max))
        .fetch_all(&self.db.pool)
        .await?;
        let mut sent = 0;
        for d in due {
            // The claim: this attempt is ours only if nobody counted it first.
            let claimed = sqlx::query(
                "update webhook_deliveries set attempts = attempts + 1, next_attempt_at = $3 \
                 where id = $1 and state = 'pending' and attempts = $2",
            )
            .bind(&d.id)
            .bind(d.attempts)
            .bind(now as i64 + CLAIM_MS)
            .execute(&self.db.pool)
            .await?;
            if claimed.rows_affected() != 1 {
                continue;
            }
            sent += 1;
            let attempt = d.attempts + 1;
            let hook: Option<WebhookRow> = sqlx::query_as(
                "select id, url, secret_sealed, events, created_at, created_by from webhooks where id = $1",
            )
            .bind(&d.webhook_id)
            .fetch_optional(&self.db.pool)
            .await?;
            let result = match hook {
                None => Err((None, "the webhook was removed".to_owned())),
                Some(h) => match self.sealer.open(&h.id, &h.secret_sealed) {
                    Err(_) => Err((None, WebhookError::Sealed.to_string())),
                    Ok(secret) => post(http, &h.url, &secret, &d, now).await,
                },
            };
            match result {
                Ok(status) => {
                    sqlx::query(
                        "update webhook_deliveries set state = 'delivered', delivered_at = $2, last_status = $3, \
                         last_error = null where id = $1",
                    )
                    .bind(&d.id)
                    .bind(now as i64)
                    .bind(i64::from(status))
                    .execute(&self.db.pool)
                    .await?;
                }
                Err((status, error)) => {
                    let gone = status.is_none() && error == "the webhook was removed";
                    let (state, next) = if attempt >= MAX_ATTEMPTS || gone {
                        ("failed", now as i64)
                    } else {
                        ("pending", now as i64 + 1000 * (1i64 << (attempt - 1)))
                    };
                    sqlx::query(
                        "update webhook_deliveries set state = $2, next_attempt_at = $3, last_status = $4, \
                         last_error = $5 where id = $1",
                    )
                    .bind(&d.id)
                    .bind(state)
                    .bind(next)
                    .bind(status.map(i64::from))
                    .bind(&error)
                    .execute(&self.db.pool)
                    .await?;
                }
            }
        }
        Ok(sent)
    }
}

/// One attempt: the status of a 2xx answer, or the status (if any) and what went wrong.
async fn post(
    http: &reqwest::Client,
    url: &str,
    secret: &str,
    d: &DeliveryRow,
    now: Millis,
) -> Result<u16, (Option<u16>, String)> {
    let answer = http
        .post(url)
        .timeout(TIMEOUT)
        .header("content-type", "application/json")
        .header("user-agent", concat!("homeward/", env!("CARGO_PKG_VERSION")))
        .header("x-homeward-event", &d.event)
        .header("x-homeward-delivery", &d.id)
        .header("x-homeward-timestamp", now.to_string())
        .header("x-homeward-signature", format!("sha256={}", signature(secret, now, &d.payload)))
        .body(d.payload.clone())
        .send()
        .await;
    match answer {
        Ok(r) if r.status().is_success() => Ok(r.status().as_u16()),
        Ok(r) => Err((Some(r.status().as_u16()), format!("the receiver answered {}", r.status()))),
        Err(e) if e.is_timeout() => Err((None, format!("no answer within {} s", TIMEOUT.as_secs()))),
        Err(e) => Err((None, format!("cannot reach {url}: {e}"))),
    }
}

/// The client deliveries go out with: the system's trusted roots for https, no redirects (a redirect would carry
/// the signed body elsewhere).
pub fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .use_preconfigured_tls(crate::connectors::tls::public_or_pinned(None, Default::default()))
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap_or_default()
}
