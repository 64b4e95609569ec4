//! An action taken by a signed-in person: the role check, the action through the [`Service`], and the audit line —
//! the same for the REST API and the portal's server functions, so neither can forget a step.

use crate::access::Role;
use crate::access::{Denied, Permission};
use crate::accounts::{Account, Accounts, AuditEntry, User};
use crate::agents::{Agent, AgentRole, Agents, Enrollment, SiteKind};
use crate::connections::{Connection, Connections, NewConnection};
use crate::domain::wire_name as words;
use crate::jobs::{Job, JobAction, JobState};
use crate::lifecycle::{Operation, Request};
use crate::points::PointChoice;
use crate::service::{Service, ServiceError};

#[derive(Debug, thiserror::Error)]
pub enum ActError {
    #[error(transparent)]
    Denied(#[from] Denied),
    #[error(transparent)]
    Service(#[from] ServiceError),
}

pub struct Actor<'a> {
    pub user: &'a User,
    pub accounts: &'a Accounts,
    pub service: &'a Service,
}

impl Actor<'_> {
    fn entry(&self, action: &str, target: &str, reason: Option<&str>) -> AuditEntry {
        AuditEntry {
            at: (self.service.clock)(),
            user_name: self.user.name.clone(),
            role: self.user.role.as_str().into(),
            action: action.into(),
            target: target.into(),
            reason: reason.map(str::trim).filter(|r| !r.is_empty()).map(str::to_owned),
            ..AuditEntry::default()
        }
    }

    /// Writes the audit line for `result`. The action's own result wins: a failed audit write goes to the log.
    async fn record<T>(&self, mut e: AuditEntry, result: &Result<T, ActError>, job: Option<&str>) {
        match result {
            Ok(_) if e.outcome.is_empty() => e.outcome = "started".into(),
            Ok(_) => {}
            Err(ActError::Denied(d)) => {
                e.outcome = "denied".into();
                e.detail = Some(d.to_string());
            }
            Err(ActError::Service(ServiceError::Refused(r))) => {
                e.outcome = "refused".into();
                e.detail = Some(r.iter().map(|r| format!("{}: {}", r.rule, r.message)).collect::<Vec<_>>().join("; "));
            }
            Err(other) => {
                e.outcome = "failed".into();
                e.detail = Some(other.to_string());
            }
        }
        e.job_id = job.map(str::to_owned);
        if let Err(err) = self.accounts.audit(&e).await {
            tracing::error!(error = %err, "audit log write failed");
        }
    }

    /// Starts `op` on an item (Operator or Administrator; a drill, a Drill operator too).
    pub async fn item_action(
        &self,
        id: &str,
        op: Operation,
        req: &Request,
        key: &str,
        reason: Option<&str>,
    ) -> Result<Job, ActError> {
        let needs = if op.is_drill() { Permission::TestFailover } else { Permission::Operate };
        let result = match self.user.role.may(needs) {
            Ok(()) => self.service.start(id, op, req, key).await.map_err(ActError::from),
            Err(d) => Err(d.into()),
        };
        let job = result.as_ref().ok().map(|j| j.id.clone());
        self.record(self.entry(&words(&op), id, reason), &result, job.as_deref()).await;
        result
    }

    /// Fails a recovery plan over (Operator or Administrator).
    pub async fn plan_failover(
        &self,
        plan: &str,
        choice: PointChoice,
        key: &str,
        reason: Option<&str>,
    ) -> Result<Job, ActError> {
        let what = crate::service::PlanAction { choice, ..Default::default() };
        self.plan_action(plan, Operation::Failover, what, key, reason).await
    }

    /// Runs a plan-level operation: failover (Operator or Administrator), test failover or its cleanup (a Drill
    /// operator too).
    pub async fn plan_action(
        &self,
        plan: &str,
        op: Operation,
        what: crate::service::PlanAction,
        key: &str,
        reason: Option<&str>,
    ) -> Result<Job, ActError> {
        let needs = if op.is_drill() { Permission::TestFailover } else { Permission::Operate };
        let result = match self.user.role.may(needs) {
            Ok(()) => self.service.start_plan_action(plan, op, what, key).await.map_err(ActError::from),
            Err(d) => Err(d.into()),
        };
        let job = result.as_ref().ok().map(|j| j.id.clone());
        self.record(self.entry(&crate::service::plan_kind(op), plan, reason), &result, job.as_deref()).await;
        result
    }

    /// Cancels, restarts or resumes a job (Operator or Administrator).
    pub async fn job_action(&self, id: &str, action: JobAction, reason: Option<&str>) -> Result<JobState, ActError> {
        // A drill's job is the Drill operator's to cancel, restart or resume, as the drill itself is.
        let needs = match self.service.jobs.get(id).await {
            Ok(job) if crate::lifecycle::is_drill_kind(&job.kind) => Permission::TestFailover,
            _ => Permission::Operate,
        };
        let result = match self.user.role.may(needs) {
            Ok(()) => {
                let jobs = &self.service.jobs;
                let r: Result<JobState, ServiceError> = match action {
                    JobAction::Cancel => self.service.cancel_job(id).await,
                    JobAction::Restart => self.service.restart_job(id).await,
                    JobAction::Resume => jobs.resume(id).await.map(|_| JobState::NotStarted).map_err(Into::into),
                };
                r.map_err(ActError::Service)
            }
            Err(d) => Err(d.into()),
        };
        self.record(self.entry(&format!("job-{}", words(&action)), id, reason), &result, Some(id)).await;
        result
    }

    /// Enrolls a site agent (Administrator): its site defaults to the role's usual one. The token is in the
    /// answer only; the audit line names the agent, never the token.
    pub async fn enroll_agent(
        &self,
        agents: &Agents,
        name: &str,
        role: AgentRole,
        site: Option<SiteKind>,
    ) -> Result<Enrollment, ActError> {
        let site = site.unwrap_or_else(|| SiteKind::usual_for(role));
        let detail = format!("{} at the {} site", role.title(), site.as_str());
        let now = (self.service.clock)();
        let change = async { Ok(agents.enroll(name, role, site, &self.user.name, now).await?) };
        self.administer("agent-enroll-token", name.trim(), detail, change).await
    }

    /// The agent an administrative `action` names; an unknown one is audited as that action's failure.
    async fn find_agent(&self, agents: &Agents, id_or_name: &str, action: &str) -> Result<Agent, ActError> {
        let result = agents.find(id_or_name, (self.service.clock)()).await.map_err(|e| ActError::Service(e.into()));
        if result.is_err() {
            self.record(self.entry(action, id_or_name, None), &result, None).await;
        }
        result
    }

    /// Revokes a site agent by id or name (Administrator): its certificate and token are refused from now on.
    pub async fn revoke_agent(&self, agents: &Agents, id_or_name: &str) -> Result<Agent, ActError> {
        let now = (self.service.clock)();
        let target = self.find_agent(agents, id_or_name, "agent-revoke").await?;
        let change = async { Ok(agents.revoke(&target.id, now).await?) };
        self.administer("agent-revoke", &target.name, format!("agent {}", target.id), change).await
    }

    /// Caps the bytes per second a site agent sends on its replication links, or lifts the cap (Administrator).
    pub async fn set_agent_rate_cap(
        &self,
        agents: &Agents,
        id_or_name: &str,
        cap: Option<u64>,
    ) -> Result<Agent, ActError> {
        let now = (self.service.clock)();
        let target = self.find_agent(agents, id_or_name, "agent-rate-cap").await?;
        let detail = cap.map_or_else(|| "no cap".to_owned(), |c| format!("{c} bytes per second"));
        let change = async { Ok(agents.set_rate_cap(&target.id, cap, now).await?) };
        self.administer("agent-rate-cap", &target.name, detail, change).await
    }

    /// Adds a site connection after checking it against its API (Administrator). The audit line names the
    /// connection and its address, never the credential.
    pub async fn add_connection(&self, connections: &Connections, new: NewConnection) -> Result<Connection, ActError> {
        let (target, detail) = match &new {
            NewConnection::Vcenter { name, url, user, .. } => {
                (name.trim().to_owned(), format!("vCenter {url} as {user}"))
            }
            NewConnection::StorageAccount { name, url, container, sas, .. } => (
                name.trim().to_owned(),
                format!(
                    "storage account {url}, container {container}, with {}",
                    if sas.is_some() { "a SAS" } else { "the account key" }
                ),
            ),
            NewConnection::AzureSubscription { name, subscription, resource_group, client_id, .. } => (
                name.trim().to_owned(),
                format!(
                    "Azure subscription {subscription}, resource group {resource_group}, as application {client_id}"
                ),
            ),
        };
        let now = (self.service.clock)();
        let change = async { Ok(connections.add(new, &self.user.name, now).await?) };
        self.administer("connection-add", &target, detail, change).await
    }

    /// Changes an item's protection settings (Operator or Administrator), audited with the values.
    pub async fn set_protection(
        &self,
        id: &str,
        settings: crate::domain::ProtectionSettings,
        reason: Option<&str>,
    ) -> Result<crate::domain::ProtectionSettings, ActError> {
        let result = match self.user.role.may(Permission::Operate) {
            Ok(()) => self.service.set_protection(id, settings).await.map_err(ActError::from),
            Err(d) => Err(d.into()),
        };
        let mut e = self.entry("protection-settings", id, reason);
        e.outcome = "applied".into();
        let minutes = |v: Option<u32>| v.map_or("the vault's default".to_owned(), |m| format!("{m} min"));
        e.detail = Some(format!(
            "retention {}, app-consistent every {}, RPO threshold {}",
            minutes(settings.retention_min),
            minutes(settings.app_consistent_every_min),
            minutes(settings.rpo_threshold_min)
        ));
        self.record(e, &result, None).await;
        result
    }

    /// Acknowledges an alert (Operator or Administrator): someone is on it; it stays until its condition clears.
    pub async fn acknowledge_alert(&self, id: &str) -> Result<crate::alerts::Alert, ActError> {
        let now = (self.service.clock)();
        let result = match self.user.role.may(Permission::Operate) {
            Ok(()) => self
                .service
                .alerts()
                .acknowledge(id, &self.user.name, now)
                .await
                .map_err(|e| ActError::Service(e.into())),
            Err(d) => Err(d.into()),
        };
        let mut e = self.entry("alert-acknowledge", id, None);
        e.outcome = "applied".into();
        if let Ok(a) = &result {
            e.detail = Some(a.message.clone());
        }
        self.record(e, &result, None).await;
        result
    }

    /// Adds a webhook (Administrator); its signing secret is answered once. The audit line names the address only.
    pub async fn add_webhook(
        &self,
        url: &str,
        secret: Option<&str>,
        events: &[crate::webhooks::EventKind],
    ) -> Result<(crate::webhooks::Webhook, String), ActError> {
        let now = (self.service.clock)();
        let names: Vec<String> = events.iter().map(words).collect();
        let change = async { Ok(self.service.webhooks().add(url, secret, events, &self.user.name, now).await?) };
        self.administer("webhook-add", url.trim(), format!("events: {}", names.join(", ")), change).await
    }

    /// Removes a webhook (Administrator); its pending deliveries are given up, its log stays.
    pub async fn remove_webhook(&self, id: &str) -> Result<(), ActError> {
        let change = async { Ok(self.service.webhooks().remove(id).await?) };
        self.administer("webhook-remove", id, "pending deliveries given up".into(), change).await
    }

    /// Marks a network of the primary site isolated (drills may use it) or production (Administrator).
    pub async fn set_network_isolation(&self, name: &str, isolated: bool) -> Result<crate::domain::Network, ActError> {
        let detail = if isolated { "marked isolated: test failovers may use it" } else { "marked production" };
        let change = self.service.set_network_isolation(name, isolated);
        self.administer("network-isolation", name, detail.into(), change).await
    }

    /// Checks a site connection again and keeps what its API reports (Administrator).
    pub async fn refresh_connection(
        &self,
        connections: &Connections,
        id_or_name: &str,
    ) -> Result<Connection, ActError> {
        let now = (self.service.clock)();
        let change = async { Ok(connections.refresh(id_or_name, now).await?) };
        self.administer("connection-refresh", id_or_name, "checked against its API".into(), change).await
    }

    /// Forgets a site connection and its sealed credential (Administrator).
    pub async fn remove_connection(&self, connections: &Connections, id_or_name: &str) -> Result<Connection, ActError> {
        let change = async { Ok(connections.remove(id_or_name).await?) };
        self.administer("connection-remove", id_or_name, "its credential is deleted".into(), change).await
    }

    /// The accounts with their roles and live sign-ins (Administrator; a read, so not audited).
    pub async fn accounts(&self) -> Result<Vec<Account>, ActError> {
        self.user.role.may(Permission::Administer)?;
        Ok(self.accounts.accounts((self.service.clock)()).await.map_err(ServiceError::from)?)
    }

    /// Creates an account (Administrator). Without a password one is generated and returned, to hand over once.
    pub async fn create_account(
        &self,
        name: &str,
        role: Role,
        password: Option<&str>,
    ) -> Result<(User, Option<String>), ActError> {
        let now = (self.service.clock)();
        let generated = password.is_none().then(crate::accounts::random_password);
        let pw = password.map(str::to_owned).or_else(|| generated.clone()).unwrap_or_default();
        let change = async { Ok(self.accounts.create_user(name, role, &pw, now).await?) };
        let user = self.administer("account-create", name.trim(), format!("role {}", role.title()), change).await?;
        Ok((user, generated))
    }

    /// Gives an account another role (Administrator); the last enabled Administrator keeps its role.
    pub async fn set_account_role(&self, name: &str, role: Role) -> Result<User, ActError> {
        let change = async { Ok(self.accounts.set_role(name, role).await?) };
        self.administer("account-role", name, format!("role {}", role.title()), change).await
    }

    /// Disables an account (Administrator): it signs in by no means, its sessions end and its tokens are deleted.
    pub async fn disable_account(&self, name: &str) -> Result<(u64, u64), ActError> {
        let now = (self.service.clock)();
        let change = async { Ok(self.accounts.disable(name, now).await?) };
        self.administer("account-disable", name, "sessions ended, API tokens deleted".into(), change).await
    }

    /// Lets a disabled account sign in with its password again (Administrator).
    pub async fn enable_account(&self, name: &str) -> Result<(), ActError> {
        let change = async { Ok(self.accounts.enable(name).await?) };
        self.administer("account-enable", name, "may sign in again".into(), change).await
    }

    /// Signs an account out everywhere (Administrator): its sessions end and its API tokens are deleted.
    pub async fn revoke_account(&self, name: &str) -> Result<(u64, u64), ActError> {
        let change = async { Ok(self.accounts.revoke(name).await?) };
        self.administer("account-revoke", name, "sessions ended, API tokens deleted".into(), change).await
    }

    /// Changes the caller's own password (any role); its other sessions end, `keep_session` (the caller's) stays.
    /// Audited without either password.
    pub async fn change_own_password(
        &self,
        current: &str,
        new: &str,
        keep_session: Option<&str>,
    ) -> Result<u64, ActError> {
        let result = self
            .accounts
            .change_password(self.user, current, new, keep_session)
            .await
            .map_err(|e| ActError::Service(e.into()));
        let mut e = self.entry("password-change", &self.user.name, None);
        e.outcome = "applied".into();
        if let Ok(n) = &result {
            e.detail = Some(format!("{n} other session(s) ended"));
        }
        self.record(e, &result, None).await;
        result
    }

    /// Creates, changes or removes a recovery plan (Operator or Administrator), and records it with `detail` (the
    /// plan as entered).
    pub async fn edit_plan<T>(
        &self,
        action: &str,
        target: &str,
        detail: String,
        change: impl std::future::Future<Output = Result<T, ServiceError>>,
    ) -> Result<T, ActError> {
        self.change(Permission::Operate, action, target, detail, change).await
    }

    /// Applies an administrative change (fault knobs, accounts) after checking the role, and records it.
    pub async fn administer<T>(
        &self,
        action: &str,
        target: &str,
        detail: String,
        change: impl std::future::Future<Output = Result<T, ServiceError>>,
    ) -> Result<T, ActError> {
        self.change(Permission::Administer, action, target, detail, change).await
    }

    /// A change that is not a job, after checking `needs`, recorded with `detail`.
    async fn change<T>(
        &self,
        needs: Permission,
        action: &str,
        target: &str,
        detail: String,
        change: impl std::future::Future<Output = Result<T, ServiceError>>,
    ) -> Result<T, ActError> {
        let result = match self.user.role.may(needs) {
            Ok(()) => change.await.map_err(ActError::from),
            Err(d) => Err(d.into()),
        };
        let mut e = self.entry(action, target, None);
        e.outcome = "applied".into();
        e.detail = Some(detail);
        self.record(e, &result, None).await;
        result
    }
}
