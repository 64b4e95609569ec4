//! Site agents in the vault's database: process servers (cloud side: read source disks, send) and master targets
//! (on-premises: receive, keep recovery points, write target disks).
//!
//! An Administrator *enrolls* an agent: a row with its name, role and site and the digest of a one-time token. The
//! agent redeems the token once with a certificate request; the control plane's CA signs it and this registry keeps
//! only the certificate's SHA-256 fingerprint. From then on the agent is known by that fingerprint on every mutual
//! TLS connection; revoking it refuses the fingerprint at once. No cryptography here: the `server` crate holds the
//! CA and the listeners.
//!
//! Architecture Invariant: no enrollment token is stored in the clear, and a token enrolls at most one agent (the
//! redeeming update is a compare-and-set on the token's digest).

use serde::{Deserialize, Serialize};

use crate::accounts::random_secret;
use crate::db::{self, Db, Unique};
use crate::domain::Millis;

/// How long an enrollment token can be redeemed: long enough to install an agent on another machine.
pub const ENROLL_MS: Millis = 24 * 3600 * 1000;
/// Heartbeat period an agent uses unless told otherwise.
pub const HEARTBEAT_MS: Millis = 10_000;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum AgentRole {
    /// Cloud side of a failback: reads the cloud VM's disks and sends their changes.
    ProcessServer,
    /// On-premises side: receives, keeps the recovery points, writes the VMDKs.
    MasterTarget,
}

impl AgentRole {
    pub const ALL: [AgentRole; 2] = [AgentRole::ProcessServer, AgentRole::MasterTarget];

    pub fn as_str(self) -> &'static str {
        match self {
            AgentRole::ProcessServer => "process-server",
            AgentRole::MasterTarget => "master-target",
        }
    }

    pub fn parse(s: &str) -> Option<AgentRole> {
        AgentRole::ALL.into_iter().find(|r| r.as_str() == s)
    }

    pub fn title(self) -> &'static str {
        match self {
            AgentRole::ProcessServer => "Process server",
            AgentRole::MasterTarget => "Master target",
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum SiteKind {
    /// The recovery site (Azure).
    Cloud,
    /// The primary site (the owner's datacenter).
    OnPremises,
}

impl SiteKind {
    pub const ALL: [SiteKind; 2] = [SiteKind::Cloud, SiteKind::OnPremises];

    pub fn as_str(self) -> &'static str {
        match self {
            SiteKind::Cloud => "cloud",
            SiteKind::OnPremises => "on-premises",
        }
    }

    pub fn parse(s: &str) -> Option<SiteKind> {
        SiteKind::ALL.into_iter().find(|r| r.as_str() == s)
    }

    /// Where an agent of `role` normally runs in a failback.
    pub fn usual_for(role: AgentRole) -> SiteKind {
        match role {
            AgentRole::ProcessServer => SiteKind::Cloud,
            AgentRole::MasterTarget => SiteKind::OnPremises,
        }
    }
}

/// What an agent reports with each heartbeat.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Inventory {
    /// The agent's disk folder: each image with its size.
    pub disks: Vec<AgentDisk>,
    pub free_bytes: u64,
    pub total_bytes: u64,
    /// The agent's heartbeat period, so the control plane knows when it is late.
    pub heartbeat_ms: u64,
    /// `host:port` where the agent takes replication streams from its peers (mutual TLS).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub link_endpoint: Option<String>,
    /// The vCenter datastores the agent mounts (`--datastore`): the disks on them go through it.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub datastores: Vec<String>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AgentDisk {
    pub name: String,
    pub size_bytes: u64,
}

/// An agent's state as people read it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum AgentState {
    /// Enrolled by an Administrator; the agent has not redeemed its token yet.
    AwaitingAgent,
    /// The token was never redeemed and has expired.
    EnrollmentExpired,
    /// Heartbeating.
    Online,
    /// Enrolled, but no heartbeat for three periods.
    Offline,
    Revoked,
}

impl AgentState {
    pub fn title(self) -> &'static str {
        match self {
            AgentState::AwaitingAgent => "awaiting the agent",
            AgentState::EnrollmentExpired => "enrollment expired",
            AgentState::Online => "online",
            AgentState::Offline => "offline",
            AgentState::Revoked => "revoked",
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Agent {
    pub id: String,
    pub name: String,
    pub role: AgentRole,
    pub site: SiteKind,
    pub state: AgentState,
    pub created_at: Millis,
    pub created_by: String,
    pub enroll_expires_at: Millis,
    pub enrolled_at: Option<Millis>,
    pub last_heartbeat_at: Option<Millis>,
    pub version: Option<String>,
    pub inventory: Option<Inventory>,
    pub revoked_at: Option<Millis>,
    /// SHA-256 of the agent's certificate (hex), once enrolled.
    pub cert_fingerprint: Option<String>,
    /// The most bytes per second it may send on its replication links; none: as fast as the link goes.
    pub max_bytes_per_s: Option<u64>,
    /// Its replication streams of the last ten minutes (filled by [`Agents::list`]).
    #[serde(default)]
    pub activity: Activity,
}

/// An agent's share of the assignments of the last ten minutes, sending or receiving.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Activity {
    /// Streams running now.
    pub streams: u32,
    /// Bytes on the wire over the time spent streaming; none when it streamed nothing lately.
    pub throughput_bytes_per_s: Option<u64>,
}

/// How far back [`Activity`] looks.
pub const ACTIVITY_MS: Millis = 10 * 60 * 1000;

/// The smallest rate cap: below it a cycle of a small disk would take hours.
pub const MIN_RATE_CAP: u64 = 64 << 10;

/// A new enrollment: the token is shown once.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Enrollment {
    pub agent: Agent,
    pub token: String,
}

#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    #[error("an agent named {0} exists already; choose another name or revoke that agent first")]
    NameTaken(String),
    #[error("{0}")]
    Invalid(String),
    #[error("no agent {0}")]
    NotFound(String),
    #[error("the enrollment token is unknown or was used already; ask an Administrator for a new one")]
    UnknownToken,
    #[error("the enrollment token expired; ask an Administrator for a new one")]
    TokenExpired,
    #[error("this token enrolls a {enrolled} but the agent was started as a {presented}; start it with --role {}",
        .enrolled)]
    WrongRole { enrolled: &'static str, presented: &'static str },
    #[error("agent {0} is revoked; enroll a new agent")]
    Revoked(String),
    #[error("database: {0}")]
    Db(#[from] sqlx::Error),
}

/// An item replicates through its process server and its master target. When an agent is enrolled under one of
/// those names and has stopped heartbeating (or was revoked), the item's health turns to a warning that says which
/// one and since when — a warning, not a failed job: the agent may come back on its own.
pub fn apply_agent_health(item: &mut crate::domain::ReplicatedItem, agents: &[Agent]) {
    let roles = [(item.process_server.clone(), "process server"), (item.master_target.clone(), "master target")];
    for (name, what) in roles {
        let Some(name) = name else { continue };
        let Some(a) = agents.iter().find(|a| a.name == name) else { continue };
        let since = a.last_heartbeat_at.map_or_else(|| "it enrolled".to_owned(), crate::domain::utc_text);
        let text = match a.state {
            AgentState::Offline => format!(
                "The {what} {name}'s agent has sent no heartbeat since {since}: replication through it is stalled. \
                 Check that machine and its link to the control plane; it is counted online again at its next \
                 heartbeat."
            ),
            AgentState::Revoked => format!(
                "The {what} {name}'s agent was revoked: nothing replicates through it. Enroll a new agent for {name} \
                 on the Infrastructure page."
            ),
            _ => continue,
        };
        item.health = crate::domain::Health::Warning.max(item.health);
        item.health_errors.push(text);
    }
}

/// The command that starts an enrolled agent on its machine; `endpoint` is the agents' endpoint as that machine
/// reaches it.
pub fn start_command(e: &Enrollment, endpoint: &str, ca_fingerprint: &str) -> String {
    format!(
        "homeward agent --role {} --control-plane {endpoint} --token {} --ca-fingerprint {ca_fingerprint}",
        e.agent.role.as_str(),
        e.token
    )
}

/// `host:port` of the agents' endpoint for a machine that reached the portal by `host_header` (the request's
/// `Host`, with or without its port).
pub fn endpoint_for(host_header: Option<&str>, agent_port: u16) -> String {
    let host = host_header.unwrap_or("127.0.0.1");
    let host = host.rsplit_once(':').filter(|(_, port)| port.parse::<u16>().is_ok()).map_or(host, |(h, _)| h);
    format!("{host}:{agent_port}")
}

/// A name people give an agent: 1–63 of `a-z 0-9 . _ -`, starting with a letter or digit (it goes into the
/// agent's certificate and the audit log).
pub fn parse_agent_name(s: &str) -> Result<String, AgentError> {
    let s = s.trim();
    let ok = !s.is_empty()
        && s.len() <= 63
        && s.chars().next().is_some_and(|c| c.is_ascii_alphanumeric())
        && s.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '.' | '_' | '-'));
    if ok {
        Ok(s.to_owned())
    } else {
        Err(AgentError::Invalid(format!(
            "agent name {s:?}: use 1 to 63 lower-case letters, digits, '.', '_' or '-', starting with a letter or digit"
        )))
    }
}

fn digest(token: &str) -> String {
    blake3::hash(token.as_bytes()).to_hex().to_string()
}

crate::row! {
    struct AgentRow {
        id: String,
        name: String,
        role: String,
        site: String,
        created_at: i64,
        created_by: String,
        enroll_expires_at: i64,
        cert_fingerprint: Option<String>,
        enrolled_at: Option<i64>,
        last_heartbeat_at: Option<i64>,
        version: Option<String>,
        inventory: Option<String>,
        revoked_at: Option<i64>,
        max_bytes_per_s: Option<i64>,
    }
}

const COLUMNS: &str = "id, name, role, site, created_at, created_by, enroll_expires_at, cert_fingerprint, \
                       enrolled_at, last_heartbeat_at, version, inventory, revoked_at, max_bytes_per_s";

impl AgentRow {
    fn into_agent(self, now: Millis) -> Result<Agent, AgentError> {
        let bad = |what: &str, v: &str| AgentError::Invalid(format!("unknown agent {what} {v:?} in the database"));
        let role = AgentRole::parse(&self.role).ok_or_else(|| bad("role", &self.role))?;
        let site = SiteKind::parse(&self.site).ok_or_else(|| bad("site", &self.site))?;
        let inventory: Option<Inventory> = self.inventory.as_deref().and_then(|j| serde_json::from_str(j).ok());
        let ms = |v: Option<i64>| v.map(|v| v.max(0) as Millis);
        let last = ms(self.last_heartbeat_at);
        let period = inventory.as_ref().map(|i| i.heartbeat_ms).filter(|p| *p > 0).unwrap_or(HEARTBEAT_MS);
        let state = if self.revoked_at.is_some() {
            AgentState::Revoked
        } else if self.enrolled_at.is_none() {
            if now >= self.enroll_expires_at as Millis {
                AgentState::EnrollmentExpired
            } else {
                AgentState::AwaitingAgent
            }
        } else {
            // Three missed heartbeats (and a little slack for a busy control plane) make it offline.
            match last {
                Some(t) if now.saturating_sub(t) <= 3 * period + 2_000 => AgentState::Online,
                _ => AgentState::Offline,
            }
        };
        Ok(Agent {
            id: self.id,
            name: self.name,
            role,
            site,
            state,
            created_at: self.created_at.max(0) as Millis,
            created_by: self.created_by,
            enroll_expires_at: self.enroll_expires_at.max(0) as Millis,
            enrolled_at: ms(self.enrolled_at),
            last_heartbeat_at: last,
            version: self.version,
            inventory,
            revoked_at: ms(self.revoked_at),
            cert_fingerprint: self.cert_fingerprint,
            max_bytes_per_s: self.max_bytes_per_s.map(|v| v.max(0) as u64),
            activity: Activity::default(),
        })
    }
}

#[derive(Clone, Debug)]
pub struct Agents {
    pub db: Db,
}

impl Agents {
    pub fn new(db: Db) -> Agents {
        Agents { db }
    }

    /// A new enrollment for an agent called `name`; the token (shown once) is valid for [`ENROLL_MS`].
    pub async fn enroll(
        &self,
        name: &str,
        role: AgentRole,
        site: SiteKind,
        by: &str,
        now: Millis,
    ) -> Result<Enrollment, AgentError> {
        let name = parse_agent_name(name)?;
        let token = format!("hwe_{}", random_secret());
        let id = format!("agt-{}", &random_secret()[..16]);
        let res = sqlx::query(
            "insert into agents (id, name, role, site, created_at, created_by, enroll_token_hash, enroll_expires_at) \
             values ($1, $2, $3, $4, $5, $6, $7, $8)",
        )
        .bind(&id)
        .bind(&name)
        .bind(role.as_str())
        .bind(site.as_str())
        .bind(now as i64)
        .bind(by)
        .bind(digest(&token))
        .bind((now + ENROLL_MS) as i64)
        .execute(&self.db.pool)
        .await;
        match res {
            Ok(_) => Ok(Enrollment { agent: self.get(&id, now).await?, token }),
            Err(e) if db::unique_violation(&e) == Some(Unique::AgentName) => Err(AgentError::NameTaken(name)),
            Err(e) => Err(e.into()),
        }
    }

    /// The enrollment `token` belongs to, if it can still be redeemed by an agent of `role`; checked before the CA
    /// spends any work on the agent's certificate request.
    pub async fn pending(&self, token: &str, role: AgentRole, now: Millis) -> Result<Agent, AgentError> {
        let sql = format!("select {COLUMNS} from agents where enroll_token_hash = $1");
        let row: Option<AgentRow> = sqlx::query_as(&sql).bind(digest(token)).fetch_optional(&self.db.pool).await?;
        let agent = row.ok_or(AgentError::UnknownToken)?.into_agent(now)?;
        match agent.state {
            AgentState::Revoked => Err(AgentError::Revoked(agent.name)),
            AgentState::EnrollmentExpired => Err(AgentError::TokenExpired),
            _ if agent.role != role => {
                Err(AgentError::WrongRole { enrolled: agent.role.as_str(), presented: role.as_str() })
            }
            _ => Ok(agent),
        }
    }

    /// Redeems `token` for the certificate with `fingerprint`: at most once, however many agents race for it.
    pub async fn redeem(
        &self,
        token: &str,
        role: AgentRole,
        fingerprint: &str,
        version: &str,
        now: Millis,
    ) -> Result<Agent, AgentError> {
        let agent = self.pending(token, role, now).await?;
        let r = sqlx::query(
            "update agents set enroll_token_hash = null, cert_fingerprint = $1, enrolled_at = $2, version = $3 \
             where id = $4 and enroll_token_hash = $5 and revoked_at is null",
        )
        .bind(fingerprint)
        .bind(now as i64)
        .bind(version)
        .bind(&agent.id)
        .bind(digest(token))
        .execute(&self.db.pool)
        .await?;
        if r.rows_affected() != 1 {
            return Err(AgentError::UnknownToken);
        }
        self.get(&agent.id, now).await
    }

    /// The enrolled, unrevoked agent whose certificate has `fingerprint`.
    pub async fn authenticate(&self, fingerprint: &str, now: Millis) -> Result<Agent, AgentError> {
        let sql = format!("select {COLUMNS} from agents where cert_fingerprint = $1");
        let row: Option<AgentRow> = sqlx::query_as(&sql).bind(fingerprint).fetch_optional(&self.db.pool).await?;
        let agent = row.ok_or_else(|| AgentError::NotFound(format!("with certificate {fingerprint}")))?;
        let agent = agent.into_agent(now)?;
        if agent.revoked_at.is_some() {
            return Err(AgentError::Revoked(agent.name));
        }
        Ok(agent)
    }

    /// Records a heartbeat with the agent's version and inventory.
    pub async fn heartbeat(
        &self,
        id: &str,
        version: &str,
        inventory: &Inventory,
        now: Millis,
    ) -> Result<(), AgentError> {
        let json = serde_json::to_string(inventory).map_err(|e| AgentError::Invalid(e.to_string()))?;
        let r = sqlx::query(
            "update agents set last_heartbeat_at = $1, version = $2, inventory = $3 \
             where id = $4 and revoked_at is null and enrolled_at is not null",
        )
        .bind(now as i64)
        .bind(version)
        .bind(json)
        .bind(id)
        .execute(&self.db.pool)
        .await?;
        if r.rows_affected() != 1 {
            return Err(AgentError::Revoked(id.to_owned()));
        }
        Ok(())
    }

    /// Revokes an agent (or an unused enrollment): its certificate and token are refused from now on.
    pub async fn revoke(&self, id: &str, now: Millis) -> Result<Agent, AgentError> {
        let r = sqlx::query(
            "update agents set revoked_at = coalesce(revoked_at, $1), enroll_token_hash = null where id = $2",
        )
        .bind(now as i64)
        .bind(id)
        .execute(&self.db.pool)
        .await?;
        self.updated(id, r.rows_affected(), now).await
    }

    /// The agent after an update of `rows` rows by id: none means no such agent.
    async fn updated(&self, id: &str, rows: u64, now: Millis) -> Result<Agent, AgentError> {
        if rows == 0 {
            return Err(AgentError::NotFound(id.to_owned()));
        }
        self.get(id, now).await
    }

    /// Caps (or, with None, uncaps) the bytes per second agent `id` sends on its replication links.
    pub async fn set_rate_cap(&self, id: &str, cap: Option<u64>, now: Millis) -> Result<Agent, AgentError> {
        if let Some(c) = cap.filter(|c| *c < MIN_RATE_CAP) {
            return Err(AgentError::Invalid(format!(
                "a rate cap of {c} bytes per second is below the smallest, {MIN_RATE_CAP} (64 KiB/s); omit it to \
                 lift the cap"
            )));
        }
        let r = sqlx::query("update agents set max_bytes_per_s = $1 where id = $2")
            .bind(cap.map(|c| c as i64))
            .bind(id)
            .execute(&self.db.pool)
            .await?;
        self.updated(id, r.rows_affected(), now).await
    }

    pub async fn get(&self, id: &str, now: Millis) -> Result<Agent, AgentError> {
        let sql = format!("select {COLUMNS} from agents where id = $1");
        let row: Option<AgentRow> = sqlx::query_as(&sql).bind(id).fetch_optional(&self.db.pool).await?;
        row.ok_or_else(|| AgentError::NotFound(id.to_owned()))?.into_agent(now)
    }

    /// The agent with this id, else the one with this name.
    pub async fn find(&self, id_or_name: &str, now: Millis) -> Result<Agent, AgentError> {
        let sql = format!("select {COLUMNS} from agents where id = $1 or name = $2");
        let rows: Vec<AgentRow> =
            sqlx::query_as(&sql).bind(id_or_name).bind(id_or_name).fetch_all(&self.db.pool).await?;
        // An id wins over a name that happens to look like one.
        let row = rows.into_iter().min_by_key(|r| r.id != id_or_name);
        row.ok_or_else(|| AgentError::NotFound(id_or_name.to_owned()))?.into_agent(now)
    }

    /// Every agent, by site then name.
    pub async fn list(&self, now: Millis) -> Result<Vec<Agent>, AgentError> {
        let sql = format!("select {COLUMNS} from agents order by site, name");
        let rows: Vec<AgentRow> = sqlx::query_as(&sql).fetch_all(&self.db.pool).await?;
        let mut agents: Vec<Agent> = rows.into_iter().map(|r| r.into_agent(now)).collect::<Result<_, _>>()?;
        let recent: Vec<StreamRow> = sqlx::query_as(
            "select sender_id, receiver_id, state, wire_bytes, taken_at, updated_at from assignments \
             where taken_at is not null and updated_at >= $1",
        )
        .bind(now.saturating_sub(ACTIVITY_MS) as i64)
        .fetch_all(&self.db.pool)
        .await?;
        let mut by_agent: std::collections::HashMap<&str, (u32, u64, u64)> = std::collections::HashMap::new();
        for r in &recent {
            let ms = (r.updated_at - r.taken_at.unwrap_or(r.updated_at)).max(0) as u64;
            for id in [r.sender_id.as_str(), r.receiver_id.as_str()] {
                let e = by_agent.entry(id).or_default();
                e.0 += u32::from(r.state == "sending");
                e.1 += r.wire_bytes.max(0) as u64;
                e.2 += ms;
            }
        }
        for a in &mut agents {
            if let Some(&(streams, bytes, ms)) = by_agent.get(a.id.as_str()) {
                a.activity = Activity { streams, throughput_bytes_per_s: (ms > 0).then(|| bytes * 1000 / ms) };
            }
        }
        Ok(agents)
    }
}

crate::row! {
    /// An assignment as an agent's activity counts it.
    struct StreamRow {
        sender_id: String,
        receiver_id: String,
        state: String,
        wire_bytes: i64,
        taken_at: Option<i64>,
        updated_at: i64,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_checked_before_they_reach_a_certificate() {
        assert_eq!(parse_agent_name(" mt-01 ").unwrap(), "mt-01");
        for bad in ["", "-x", "MT", "a b", "a/b", &"x".repeat(64), "é"] {
            assert!(parse_agent_name(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn the_endpoint_keeps_the_portals_host_and_takes_the_agents_port() {
        assert_eq!(endpoint_for(Some("10.0.0.5:3000"), 3443), "10.0.0.5:3443");
        assert_eq!(endpoint_for(Some("vault.example"), 3443), "vault.example:3443");
        assert_eq!(endpoint_for(Some("[::1]:3000"), 9), "[::1]:9");
        assert_eq!(endpoint_for(None, 9), "127.0.0.1:9");
    }

    #[test]
    fn wire_names_round_trip() {
        for r in AgentRole::ALL {
            assert_eq!(AgentRole::parse(r.as_str()), Some(r));
            assert_eq!(crate::domain::wire_name(&r), r.as_str());
        }
        for s in SiteKind::ALL {
            assert_eq!(SiteKind::parse(s.as_str()), Some(s));
            assert_eq!(crate::domain::wire_name(&s), s.as_str());
        }
    }
}
