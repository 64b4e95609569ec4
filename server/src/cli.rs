//! Command line: typed values that parse, so a bad value is refused before anything starts.

use std::fmt;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::str::FromStr;

use clap::{Args, Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(name = "homeward", version, about = "Fail virtual machines back from the cloud to your own datacenter.")]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the vault portal and its API.
    Serve(ServeArgs),
    /// Disk images, replication cycles, recovery points and the data-plane benchmark.
    #[command(subcommand)]
    Disk(crate::disk::DiskCommand),
    /// The demo estate.
    #[command(subcommand)]
    Demo(DemoCommand),
    /// List replicated items (or show one) with their allowed operations, through the API.
    Items {
        id: Option<String>,
        #[command(flatten)]
        server: crate::client::Server,
    },
    /// Reprotect an item from the cloud to on-premises (R-W1).
    Reprotect(crate::client::ActionArgs),
    /// Fail an item back from the cloud (R-W2); --point chooses the recovery point.
    Failover(crate::client::ActionArgs),
    /// Commit a failback: deletes the cloud VM (R-W3).
    Commit(crate::client::ActionArgs),
    /// Cancel a failback before commit.
    CancelFailover(crate::client::ActionArgs),
    /// Fail a failed-back item over again from another recovery point, before commit (R-W3).
    ChangeRecoveryPoint(crate::client::ActionArgs),
    /// Re-protect an item from on-premises to the cloud (R-W4).
    ReprotectToCloud(crate::client::ActionArgs),
    /// Fail a re-protected item over to the cloud again (R-W4); --point chooses the recovery point.
    FailoverToCloud(crate::client::ActionArgs),
    /// Commit a failover to the cloud: deletes the cloud replication disks it was made from.
    CommitInCloud(crate::client::ActionArgs),
    /// A drill: bring a copy of a protected item up on-premises from a recovery point, on an isolated network,
    /// while the cloud VM runs and replication goes on (Drill operator or above).
    TestFailover(crate::client::TestFailoverArgs),
    /// End a drill: power off and delete its test VM; --notes go into the drill's report.
    CleanupTestFailover(crate::client::CleanupArgs),
    /// Verify an item's on-premises replica: every block read again and compared with the hash its last cycle
    /// recorded; a difference makes the next cycle compare the whole replica with the cloud copy (Operator).
    VerifyReplica(crate::client::ItemOpArgs),
    /// End an item's split-brain: --keep names the copy that wins, --reason says why; the other copy's divergent
    /// blocks are kept until the next commit.
    ResolveSplitBrain(crate::client::SplitBrainArgs),
    /// List drills (test failovers) with their reports, or show one; --csv prints a report as CSV.
    Drills(crate::client::DrillsArgs),
    /// Alerts, through the API: list the open ones (or all), acknowledge one.
    #[command(subcommand)]
    Alerts(crate::client::AlertsCommand),
    /// Webhooks, through the API (Administrator): add one (prints its signing secret once), list them, show one's
    /// delivery log, remove one.
    #[command(subcommand)]
    Webhooks(crate::client::WebhooksCommand),
    /// An item's protection settings, through the API: show them, or set the retention, the app-consistent
    /// frequency and the RPO threshold (minutes; a value left out goes back to the vault's default).
    #[command(subcommand)]
    Protection(crate::client::ProtectionCommand),
    /// The primary site's networks, through the API: list them, or mark one isolated (drills may use it) or
    /// production (Administrator).
    #[command(subcommand)]
    Networks(crate::client::NetworksCommand),
    /// Recovery plans, through the API: list them; create, edit or remove one (Operator).
    #[command(subcommand)]
    Plans(crate::client::PlansCommand),
    /// Reprotect a recovery plan to on-premises, a group's items side by side, group after group: each item takes
    /// the first --master-target that runs its operating system; --dry-run shows each one's choice and data to move.
    PlanReprotect(crate::client::PlanReprotectArgs),
    /// Fail a recovery plan back, group after group; --dry-run shows each item's point and checks.
    PlanFailover(crate::client::PlanArgs),
    /// A drill of a whole recovery plan: each item's test VM from its point, group after group, on an isolated
    /// network (Drill operator or above).
    PlanTestFailover(crate::client::PlanDrillArgs),
    /// End a recovery plan's drill: every test VM of its items is powered off and deleted.
    PlanCleanupTestFailover(crate::client::PlanCleanupArgs),
    /// Commit a failed-back recovery plan: every item's cloud VM is deleted, group after group (R-W3).
    PlanCommit(crate::client::PlanOpArgs),
    /// Cancel a recovery plan's failback before commit: every item's cloud VM runs again, group after group.
    PlanCancelFailover(crate::client::PlanOpArgs),
    /// Run a site agent: a process server (cloud side) or a master target (on-premises). The first start enrolls
    /// with the token an Administrator made (`homeward agents enroll`); later starts reuse the agent's certificate.
    Agent(AgentArgs),
    /// The vault's site agents, through the API: enroll one (prints its one-time token), list them, revoke one.
    #[command(subcommand)]
    Agents(AgentsCommand),
    /// The sites' real APIs, through the API: add a vCenter or a storage account (checked before it is saved), list
    /// them with what they report, check one again, remove one.
    #[command(subcommand)]
    Connections(ConnectionsCommand),
    /// Local accounts and personal API tokens, written straight into the vault's database.
    #[command(subcommand)]
    Users(UsersCommand),
    /// Change your own password, through the API (the token's account): two lines on standard input, the current
    /// password then the new one. Your other browser sessions end.
    Password {
        #[command(flatten)]
        server: crate::client::Server,
    },
    /// List jobs, or show (and --wait for) one.
    Jobs {
        id: Option<String>,
        #[arg(long)]
        wait: bool,
        #[command(flatten)]
        server: crate::client::Server,
    },
    /// Act on a job as its page does: cancel it, restart a failed or cancelled one from its failed task, or resume
    /// a suspended one.
    JobAction {
        id: String,
        #[arg(value_parser = ["cancel", "restart", "resume"])]
        action: String,
        /// Wait for the job to end and print its tasks.
        #[arg(long)]
        wait: bool,
        #[command(flatten)]
        server: crate::client::Server,
    },
}

/// Where the vault's database is, for commands that open it directly.
#[derive(Debug, Args)]
pub struct DbArgs {
    #[arg(long, env = "HOMEWARD_DATA_DIR", default_value = "homeward-data", value_name = "DIR")]
    pub data_dir: PathBuf,
    #[arg(long, env = "HOMEWARD_DATABASE_URL", value_name = "URL")]
    pub database_url: Option<DatabaseUrl>,
}

#[derive(Debug, Subcommand)]
pub enum UsersCommand {
    /// Create an account. The password is read from HOMEWARD_NEW_PASSWORD, or generated and printed once.
    Add {
        name: String,
        /// reader, drill-operator, operator or administrator.
        #[arg(long, value_parser = parse_role)]
        role: orchestrator::access::Role,
        #[command(flatten)]
        db: DbArgs,
    },
    /// Create a personal API token for an account; printed once (the vault keeps only its hash).
    Token {
        name: String,
        #[arg(long, default_value = "cli")]
        label: String,
        /// Days until the token expires (1 to 3650).
        #[arg(long, default_value_t = 90, value_parser = clap::value_parser!(u32).range(1..=3650))]
        days: u32,
        #[command(flatten)]
        db: DbArgs,
    },
    /// Sign an account out everywhere: end its sessions and delete its API tokens.
    Revoke {
        name: String,
        #[command(flatten)]
        db: DbArgs,
    },
    /// Disable an account: no sign-in by password, session or token until enabled (its sessions end, its tokens
    /// are deleted). The last enabled Administrator cannot be disabled.
    Disable {
        name: String,
        #[command(flatten)]
        db: DbArgs,
    },
    /// Give an account another role; the last enabled Administrator keeps its role.
    Role {
        name: String,
        /// reader, drill-operator, operator or administrator.
        #[arg(long, value_parser = parse_role)]
        role: orchestrator::access::Role,
        #[command(flatten)]
        db: DbArgs,
    },
    /// Let a disabled account sign in again with its password.
    Enable {
        name: String,
        #[command(flatten)]
        db: DbArgs,
    },
    /// List the accounts and their roles.
    List {
        #[command(flatten)]
        db: DbArgs,
    },
}

#[derive(Debug, Args)]
pub struct AgentArgs {
    /// process-server or master-target; must be the role the agent was enrolled for.
    #[arg(long, value_parser = parse_agent_role)]
    pub role: orchestrator::agents::AgentRole,
    /// The control plane's agents' endpoint, HOST:PORT (printed by `homeward serve` and in the enrollment
    /// command); needed by the first start, and again only if the control plane moves.
    #[arg(long, env = "HOMEWARD_CONTROL_PLANE", value_name = "HOST:PORT", value_parser = parse_endpoint)]
    pub control_plane: Option<String>,
    /// The one-time enrollment token (first start only).
    #[arg(long, env = "HOMEWARD_AGENT_TOKEN", value_name = "TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// SHA-256 fingerprint of the vault's CA, printed with the token: the agent trusts no other CA (first start only).
    #[arg(long, env = "HOMEWARD_CA_FINGERPRINT", value_name = "HEX")]
    pub ca_fingerprint: Option<String>,
    /// Folder for the agent's key, certificate and state; created if missing.
    #[arg(long, env = "HOMEWARD_AGENT_DIR", default_value = "homeward-agent", value_name = "DIR")]
    pub data_dir: PathBuf,
    /// Folder of the disk images this agent reads or writes; defaults to <data-dir>/disks.
    #[arg(long, env = "HOMEWARD_AGENT_DISKS", value_name = "DIR")]
    pub disks: Option<PathBuf>,
    /// A vCenter datastore this agent reaches as a folder (the master target's mount of it): its VMDKs are
    /// read and written there. Repeat for each datastore.
    #[arg(long = "datastore", value_name = "NAME=DIR", value_parser = parse_datastore)]
    pub datastores: Vec<(String, PathBuf)>,
    /// Seconds between heartbeats (1 to 300); three missed ones show the agent offline.
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u64).range(1..=300))]
    pub heartbeat_seconds: u64,
    /// Where this agent takes replication streams from its peers (mutual TLS), IP:PORT; by default the address
    /// it reaches the control plane from, on a free port. Peers learn it through the control plane.
    #[arg(long, env = "HOMEWARD_AGENT_LINK_LISTEN", value_name = "IP:PORT")]
    pub link_listen: Option<std::net::SocketAddr>,
}

#[derive(Debug, Subcommand)]
pub enum AgentsCommand {
    /// Enroll an agent (Administrator): prints its one-time token and the command to start it with.
    Enroll {
        /// The agent's name: lower-case letters, digits, '.', '_' or '-'.
        name: String,
        /// process-server or master-target.
        #[arg(long, value_parser = parse_agent_role)]
        role: orchestrator::agents::AgentRole,
        /// cloud or on-premises; by default the role's usual site (process server: cloud; master target:
        /// on-premises).
        #[arg(long, value_parser = parse_site)]
        site: Option<orchestrator::agents::SiteKind>,
        #[command(flatten)]
        server: crate::client::Server,
    },
    /// List the agents with their state, last heartbeat and version.
    List {
        #[command(flatten)]
        server: crate::client::Server,
    },
    /// Cap the bytes per second an agent sends on its replication links (Administrator), e.g. 50M; "none" lifts
    /// the cap.
    RateCap {
        /// The agent's id or name.
        agent: String,
        /// Bytes per second (K, M, G suffixes), at least 64K; or none.
        #[arg(value_parser = parse_rate_cap)]
        rate: RateCap,
        #[command(flatten)]
        server: crate::client::Server,
    },
    /// Revoke an agent (Administrator): its certificate is refused from its next request on.
    Revoke {
        /// The agent's id or name.
        agent: String,
        #[command(flatten)]
        server: crate::client::Server,
    },
}

/// Where a connection's secret comes from: never the command line, where `ps` and the shell history would show it.
#[derive(Debug, Args)]
pub struct SecretArgs {
    /// A file holding the password, account key or SAS token ("-": standard input). Without it the secret is read
    /// from HOMEWARD_CONNECTION_SECRET.
    #[arg(long, value_name = "FILE")]
    pub secret_file: Option<std::path::PathBuf>,
}

#[derive(Debug, Subcommand)]
pub enum ConnectionsCommand {
    /// List the connections: state, last check, and what their API reported.
    List {
        #[command(flatten)]
        server: crate::client::Server,
    },
    /// Add the primary site's vCenter (Administrator). The password comes from --secret-file or
    /// HOMEWARD_CONNECTION_SECRET. Without --thumbprint the answer shows the certificate's to confirm.
    AddVcenter {
        /// A name for the connection, e.g. vc-prod.
        name: String,
        /// https://vcenter.example (the SDK endpoint /sdk is added).
        #[arg(long)]
        url: String,
        /// e.g. administrator@vsphere.local
        #[arg(long)]
        user: String,
        /// The certificate's SHA-1 (or SHA-256) thumbprint, as vCenter's console shows it.
        #[arg(long)]
        thumbprint: Option<String>,
        #[command(flatten)]
        secret: SecretArgs,
        #[command(flatten)]
        server: crate::client::Server,
    },
    /// Add the recovery site's storage account, the container holding the cloud VM's disks (Administrator). The
    /// account key, or with --sas a SAS token, comes from --secret-file or HOMEWARD_CONNECTION_SECRET.
    AddStorage {
        name: String,
        /// https://<account>.blob.core.windows.net
        #[arg(long)]
        url: String,
        #[arg(long)]
        container: String,
        /// The secret is a SAS token rather than the account key.
        #[arg(long)]
        sas: bool,
        /// Trust exactly the certificate with this thumbprint (a private endpoint or an emulator).
        #[arg(long)]
        thumbprint: Option<String>,
        #[command(flatten)]
        secret: SecretArgs,
        #[command(flatten)]
        server: crate::client::Server,
    },
    /// Add the recovery site's Azure subscription (Administrator): the resource group of the cloud VMs, which
    /// failovers power off and commits delete through Azure Resource Manager. The service principal's client secret
    /// comes from --secret-file or HOMEWARD_CONNECTION_SECRET.
    AddAzure {
        name: String,
        /// The directory (tenant) id of the app registration.
        #[arg(long)]
        tenant: String,
        /// The application (client) id of the app registration.
        #[arg(long)]
        client_id: String,
        #[arg(long)]
        subscription: String,
        #[arg(long)]
        resource_group: String,
        /// Another cloud's management endpoint (default https://management.azure.com).
        #[arg(long)]
        management_url: Option<String>,
        /// Another cloud's identity provider (default https://login.microsoftonline.com).
        #[arg(long)]
        authority_url: Option<String>,
        /// Trust exactly the certificate with this thumbprint (a private endpoint).
        #[arg(long)]
        thumbprint: Option<String>,
        #[command(flatten)]
        secret: SecretArgs,
        #[command(flatten)]
        server: crate::client::Server,
    },
    /// Check a connection against its API again (Administrator).
    Refresh {
        /// The connection's id or name.
        connection: String,
        #[command(flatten)]
        server: crate::client::Server,
    },
    /// Remove a connection and its sealed credential (Administrator).
    Remove {
        connection: String,
        #[command(flatten)]
        server: crate::client::Server,
    },
}

/// A rate cap on the command line: bytes per second, or none.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct RateCap(pub Option<u64>);

fn parse_rate_cap(s: &str) -> Result<RateCap, String> {
    if s.eq_ignore_ascii_case("none") {
        return Ok(RateCap(None));
    }
    let n = replicator::parse_size(s).map_err(|_| format!("{s:?}: expected bytes per second like 50M, or none"))?;
    if n < orchestrator::agents::MIN_RATE_CAP {
        return Err(format!("{s}: at least 64K bytes per second (or none to lift the cap)"));
    }
    Ok(RateCap(Some(n)))
}

fn parse_endpoint(s: &str) -> Result<String, String> {
    match s.rsplit_once(':') {
        Some((host, port)) if !host.is_empty() && !host.contains('/') && port.parse::<u16>().is_ok_and(|p| p > 0) => {
            Ok(s.to_owned())
        }
        _ => Err("expected HOST:PORT of the agents' endpoint, e.g. 10.0.0.5:3443".into()),
    }
}

fn parse_datastore(s: &str) -> Result<(String, PathBuf), String> {
    match s.split_once('=') {
        Some((name, dir)) if !name.trim().is_empty() && !dir.is_empty() && !name.contains([']', '[']) => {
            Ok((name.trim().to_owned(), PathBuf::from(dir)))
        }
        _ => Err("expected NAME=DIR: the datastore's name in vCenter and the folder it is mounted at".into()),
    }
}

fn parse_agent_role(s: &str) -> Result<orchestrator::agents::AgentRole, String> {
    orchestrator::agents::AgentRole::parse(s).ok_or_else(|| "expected process-server or master-target".to_owned())
}

fn parse_site(s: &str) -> Result<orchestrator::agents::SiteKind, String> {
    orchestrator::agents::SiteKind::parse(s).ok_or_else(|| "expected cloud or on-premises".to_owned())
}

fn parse_role(s: &str) -> Result<orchestrator::access::Role, String> {
    orchestrator::access::Role::parse(s)
        .ok_or_else(|| "expected reader, drill-operator, operator or administrator".to_owned())
}

#[derive(Debug, Subcommand)]
pub enum DemoCommand {
    /// Seed a vault with every scenario of the article under <data-dir>/estate (small real disks).
    Init {
        #[command(flatten)]
        db: DbArgs,
        /// The estate's folder; defaults to <data-dir>/estate.
        #[arg(long, env = "HOMEWARD_ESTATE_DIR", value_name = "DIR")]
        estate_dir: Option<PathBuf>,
        /// Also add this many `fleet-NNNN` items (1 MiB sparse disks, quiet guests), to try the portal at scale.
        #[arg(long, default_value_t = 0, value_name = "N")]
        fleet: usize,
        /// Also a recovery plan `plan-fleet` of every fleet item, in groups of 50.
        #[arg(long, requires = "fleet")]
        fleet_plan: bool,
    },
}

#[derive(Debug, Args)]
pub struct ServeArgs {
    /// Address to listen on; port 0 picks a free port (the chosen URL is printed on stdout).
    #[arg(long, env = "HOMEWARD_LISTEN", default_value = "127.0.0.1:3000", value_name = "ADDR")]
    pub listen: SocketAddr,
    /// Folder for the database and the local estate; created if missing.
    #[arg(long, env = "HOMEWARD_DATA_DIR", default_value = "homeward-data", value_name = "DIR")]
    pub data_dir: PathBuf,
    /// Database URL: sqlite://FILE, or postgres://… to share one database between several nodes; defaults to
    /// the SQLite file <data-dir>/homeward.db.
    #[arg(long, env = "HOMEWARD_DATABASE_URL", value_name = "URL")]
    pub database_url: Option<DatabaseUrl>,
    /// The local estate's folder (both sites' disks and inventory); defaults to <data-dir>/estate. Nodes that share
    /// one database share this folder too.
    #[arg(long, env = "HOMEWARD_ESTATE_DIR", value_name = "DIR")]
    pub estate_dir: Option<PathBuf>,
    /// How many jobs this node runs at once (default: two per core, at least four).
    #[arg(long, env = "HOMEWARD_WORKERS", value_name = "N")]
    pub workers: Option<WorkerCount>,
    /// Seconds a job's lease lasts without a heartbeat: when a node dies, another node takes its jobs over after
    /// this long (2 to 600).
    #[arg(long, env = "HOMEWARD_LEASE_SECONDS", default_value = "30", value_name = "S",
          value_parser = clap::value_parser!(u64).range(2..=600))]
    pub lease_seconds: u64,
    /// Seconds a request may take, reading its body included (1 to 600): a client that stops sending mid-request
    /// gets 408 instead of holding a connection and its handler forever.
    #[arg(long, env = "HOMEWARD_REQUEST_TIMEOUT_SECONDS", default_value = "30", value_name = "S",
          value_parser = clap::value_parser!(u64).range(1..=600))]
    pub request_timeout_seconds: u64,
    /// Folder holding the built site (pkg/homeward.js, pkg/homeward_bg.wasm, pkg/homeward.css); defaults to the
    /// `site` folder beside the binary's target directory, then ./target/site.
    #[arg(long, env = "HOMEWARD_SITE_ROOT", value_name = "DIR")]
    pub site_root: Option<PathBuf>,
    /// Address of the agents' endpoint (mutual TLS only; agents heartbeat there); defaults to the portal's address
    /// with port 3443, or a free port when the portal's port is 0. The chosen address is printed on stdout after
    /// the portal's URL.
    #[arg(long, env = "HOMEWARD_AGENT_LISTEN", value_name = "ADDR")]
    pub agent_listen: Option<SocketAddr>,
    /// Also run, inside this process, one agent for each process server and master target of the inventory,
    /// enrolled and connected exactly as agents on other machines are (the embedded default: `./x run`).
    #[arg(long, env = "HOMEWARD_EMBEDDED_AGENTS")]
    pub embedded_agents: bool,
    /// Name given to the vault when the database is created (an existing vault keeps its name).
    #[arg(long, env = "HOMEWARD_VAULT_NAME", default_value = "homeward-vault", value_name = "NAME")]
    pub vault_name: VaultName,
    /// Serve the portal and the API over HTTPS with this PEM certificate chain (leaf first; with --tls-key). The
    /// session cookie is then `Secure`. Without it the portal speaks plain HTTP: keep that on localhost or behind a
    /// TLS-terminating reverse proxy.
    #[arg(long, env = "HOMEWARD_TLS_CERT", value_name = "FILE", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,
    /// The PEM private key of --tls-cert (PKCS#8, PKCS#1 or SEC1).
    #[arg(long, env = "HOMEWARD_TLS_KEY", value_name = "FILE", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
}

/// A database URL this build can open.
#[derive(Clone, Debug, PartialEq)]
pub struct DatabaseUrl(String);

impl DatabaseUrl {
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl FromStr for DatabaseUrl {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match orchestrator::db::Backend::of_url(s) {
            Some(_) => Ok(Self(s.to_owned())),
            None => Err("expected sqlite://FILE or postgres://USER:PASSWORD@HOST:PORT/DATABASE".into()),
        }
    }
}

/// How many jobs a node runs at once: 1 to 64.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct WorkerCount(pub usize);

impl FromStr for WorkerCount {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s.parse::<usize>() {
            Ok(n) if (1..=64).contains(&n) => Ok(WorkerCount(n)),
            _ => Err("expected a whole number of workers from 1 to 64".into()),
        }
    }
}

impl WorkerCount {
    /// Jobs mostly wait on disks and the network: two per core, at least four.
    pub fn from_cores() -> WorkerCount {
        let cores = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(2);
        WorkerCount((cores * 2).clamp(4, 64))
    }
}

/// A vault name: 1 to 80 characters, no control characters (it is shown in every page header).
#[derive(Clone, Debug, PartialEq)]
pub struct VaultName(String);

impl VaultName {
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl FromStr for VaultName {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let s = s.trim();
        match s.chars().count() {
            0 => Err("the vault name is empty".into()),
            n if n > 80 => Err(format!("the vault name has {n} characters; at most 80 are allowed")),
            _ if s.chars().any(char::is_control) => Err("the vault name contains control characters".into()),
            _ => Ok(Self(s.to_owned())),
        }
    }
}

impl fmt::Display for VaultName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Help and version go to stdout with exit 0; every other usage error is one line on stderr and exit 2.
pub fn report_usage_error(e: clap::Error) -> ExitCode {
    use clap::error::ErrorKind;
    match e.kind() {
        ErrorKind::DisplayHelp | ErrorKind::DisplayVersion | ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand => {
            let _ = e.print();
            if e.kind() == ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand {
                ExitCode::from(2)
            } else {
                ExitCode::SUCCESS
            }
        }
        _ => {
            // One line: the message, with the indented lines that complete it (e.g. the missing arguments' names).
            let rendered = e.render().to_string();
            let mut lines = rendered.lines().skip_while(|l| l.trim().is_empty());
            let mut message = lines.next().unwrap_or("error: invalid command line").trim_end().to_owned();
            for more in lines.take_while(|l| l.starts_with(char::is_whitespace) && !l.trim().is_empty()) {
                message.push(' ');
                message.push_str(more.trim());
            }
            eprintln!("{message} (see `homeward --help`)");
            ExitCode::from(2)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn database_url_accepts_sqlite_and_postgres_and_refuses_others_with_a_reason() {
        assert_eq!(DatabaseUrl::from_str("sqlite:///tmp/x.db").unwrap().as_str(), "sqlite:///tmp/x.db");
        assert!(DatabaseUrl::from_str("postgres://hw@127.0.0.1:5432/hw").is_ok());
        assert!(WorkerCount::from_str("0").is_err() && WorkerCount::from_str("8").is_ok());
        assert!(DatabaseUrl::from_str("mysql://h/db").unwrap_err().contains("sqlite://"));
    }

    #[test]
    fn vault_name_is_trimmed_and_bounded() {
        assert_eq!(VaultName::from_str("  contoso-dr ").unwrap().as_str(), "contoso-dr");
        assert!(VaultName::from_str("   ").is_err());
        assert!(VaultName::from_str(&"v".repeat(81)).unwrap_err().contains("81"));
        assert!(VaultName::from_str(&"v".repeat(80)).is_ok());
        assert!(VaultName::from_str("a\u{7}b").is_err());
    }

    #[test]
    fn bad_listen_value_is_a_usage_error() {
        let e = Cli::try_parse_from(["homeward", "serve", "--listen", "nope"]).unwrap_err();
        assert_eq!(e.kind(), clap::error::ErrorKind::ValueValidation);
        let ok = Cli::try_parse_from(["homeward", "serve", "--listen", "127.0.0.1:0"]).unwrap();
        let Command::Serve(args) = ok.command else { panic!("serve expected") };
        assert_eq!(args.listen.port(), 0);
    }
}
