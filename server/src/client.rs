//! Command-line clients of the REST API: `homeward items`, `homeward reprotect|failover|commit|cancel-failover|
//! change-recovery-point|reprotect-to-cloud|failover-to-cloud|commit-in-cloud`, `homeward test-failover|
//! cleanup-test-failover`, `homeward resolve-split-brain`, `homeward drills`, `homeward networks`,
//! `homeward plan-failover`, `homeward jobs`, `homeward job-action`. They only call `/api/v1`; every decision stays
//! on the server.

use std::time::Duration;

use clap::Args;
use serde_json::{json, Value};

#[derive(Debug, Args)]
pub struct Server {
    /// The Homeward server.
    #[arg(long, env = "HOMEWARD_SERVER", default_value = "http://127.0.0.1:3000", value_name = "URL")]
    pub server: String,
    /// Print the API's JSON instead of a summary.
    #[arg(long)]
    pub json: bool,
    /// A personal API token (`homeward users token <name>`).
    #[arg(long, env = "HOMEWARD_TOKEN", value_name = "TOKEN", hide_env_values = true)]
    pub token: Option<String>,
}

/// How an action command runs, for an item's operation and a plan's alike.
#[derive(Debug, Args)]
pub struct RunArgs {
    /// Show what the action would do — its checks and tasks — and start nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Wait for the job to end and print its tasks.
    #[arg(long)]
    pub wait: bool,
    /// Makes a retried command return the job it already started.
    #[arg(long)]
    pub idempotency_key: Option<String>,
}

#[derive(Debug, Args)]
pub struct ActionArgs {
    pub item: String,
    #[command(flatten)]
    pub server: Server,
    #[command(flatten)]
    pub run: RunArgs,
    #[arg(long)]
    pub master_target: Option<String>,
    #[arg(long)]
    pub process_server: Option<String>,
    #[arg(long)]
    pub datastore: Option<String>,
    /// latest-processed, latest, latest-app-consistent, a recovery point id, or kept:JOB (the newest point with the
    /// blocks a split-brain's losing copy kept, by the resolving job's id).
    #[arg(long)]
    pub point: Option<String>,
}

#[derive(Debug, Args)]
pub struct PlanArgs {
    /// The recovery plan's id (`GET /api/v1/plans` lists them).
    pub plan: String,
    #[command(flatten)]
    pub server: Server,
    #[command(flatten)]
    pub run: RunArgs,
    /// latest-processed (each VM its newest point) or latest-app-consistent (one shared app-consistent point).
    #[arg(long, default_value = "latest-processed", value_parser = ["latest-processed", "latest-app-consistent"])]
    pub point: String,
    /// Why: recorded in the audit log.
    #[arg(long)]
    pub reason: Option<String>,
}

#[derive(Debug, Args)]
pub struct TestFailoverArgs {
    pub item: String,
    #[command(flatten)]
    pub server: Server,
    #[command(flatten)]
    pub run: RunArgs,
    /// The isolated network the test VM joins (`homeward networks list` shows which are).
    #[arg(long)]
    pub network: String,
    /// latest-processed (the default), latest-app-consistent, a recovery point id, or kept:JOB (the newest point with
    /// the blocks a split-brain's losing copy kept).
    #[arg(long)]
    pub point: Option<String>,
    /// Why: recorded in the audit log.
    #[arg(long)]
    pub reason: Option<String>,
}

/// An item action that takes nothing but the item.
#[derive(Debug, Args)]
pub struct ItemOpArgs {
    pub item: String,
    #[command(flatten)]
    pub server: Server,
    #[command(flatten)]
    pub run: RunArgs,
}

#[derive(Debug, Args)]
pub struct CleanupArgs {
    pub item: String,
    #[command(flatten)]
    pub server: Server,
    #[command(flatten)]
    pub run: RunArgs,
    /// What the drill showed, kept in its report (at most 4000 characters).
    #[arg(long)]
    pub notes: Option<String>,
}

#[derive(Debug, Args)]
pub struct SplitBrainArgs {
    pub item: String,
    #[command(flatten)]
    pub server: Server,
    #[command(flatten)]
    pub run: RunArgs,
    /// The copy that wins: cloud (the on-premises VM is shut down and its replica brought back to the cloud's) or
    /// on-premises (the cloud VM is shut down; the item then waits for commit). The other copy's divergent blocks
    /// are kept until the next commit.
    #[arg(long, value_parser = ["cloud", "on-premises"])]
    pub keep: String,
    /// Why this copy wins (required; kept with the other copy's blocks and in the audit log).
    #[arg(long)]
    pub reason: String,
}

#[derive(Debug, Args)]
pub struct DrillsArgs {
    /// A drill's id (its test failover's job id); without it, the list.
    pub id: Option<String>,
    /// Only this item's drills.
    #[arg(long, conflicts_with = "id")]
    pub item: Option<String>,
    /// Print the drill's report as CSV.
    #[arg(long, requires = "id")]
    pub csv: bool,
    #[command(flatten)]
    pub server: Server,
}

#[derive(Debug, clap::Subcommand)]
pub enum NetworksCommand {
    /// The networks with their isolation.
    List {
        #[command(flatten)]
        server: Server,
    },
    /// Mark a network isolated: test failovers may put their VMs on it.
    Isolate {
        name: String,
        #[command(flatten)]
        server: Server,
    },
    /// Mark a network production: no test failover may use it.
    Production {
        name: String,
        #[command(flatten)]
        server: Server,
    },
}

#[derive(Debug, clap::Subcommand)]
pub enum PlansCommand {
    /// The recovery plans with their groups.
    List {
        #[command(flatten)]
        server: Server,
    },
    /// Create a plan (Operator): --group takes the item ids of one group, comma-separated, in order.
    Create {
        name: String,
        #[arg(long = "group", value_name = "ITEM,ITEM…", required = true)]
        groups: Vec<String>,
        #[command(flatten)]
        protection: PlanProtectionArgs,
        #[command(flatten)]
        server: Server,
    },
    /// Replace a plan's groups (and its name with --name, its protection settings with theirs) (Operator).
    Edit {
        id: String,
        #[arg(long)]
        name: Option<String>,
        #[arg(long = "group", value_name = "ITEM,ITEM…", required = true)]
        groups: Vec<String>,
        #[command(flatten)]
        protection: PlanProtectionArgs,
        #[command(flatten)]
        server: Server,
    },
    /// Remove a plan (Operator); its items and jobs stay.
    Remove {
        id: String,
        #[command(flatten)]
        server: Server,
    },
}

/// What a plan's reprotect gives each item unless it is given its own (minutes; left out: the vault's default, or
/// on edit the plan's current one).
#[derive(Debug, Args)]
pub struct PlanProtectionArgs {
    #[arg(long)]
    pub retention_min: Option<u32>,
    #[arg(long)]
    pub app_consistent_every_min: Option<u32>,
    #[arg(long)]
    pub rpo_threshold_min: Option<u32>,
}

impl PlanProtectionArgs {
    /// The settings as JSON, each given one over `current`'s.
    fn over(&self, current: &Value) -> Value {
        let mut out = json!({});
        for (field, given) in [
            ("retention_min", self.retention_min),
            ("app_consistent_every_min", self.app_consistent_every_min),
            ("rpo_threshold_min", self.rpo_threshold_min),
        ] {
            if let Some(v) = given.map(Value::from).or_else(|| current.get(field).filter(|v| !v.is_null()).cloned()) {
                out[field] = v;
            }
        }
        out
    }
}

#[derive(Debug, clap::Subcommand)]
pub enum ProtectionCommand {
    /// The item's settings: as chosen and as they apply.
    Show {
        item: String,
        #[command(flatten)]
        server: Server,
    },
    /// Replace the item's settings; each one left out goes back to the vault's default.
    Set {
        item: String,
        /// Minutes recovery points are kept (1 to 43200; default 1440).
        #[arg(long)]
        retention_min: Option<u32>,
        /// Minutes between app-consistent points (1 to 720; default: the vault's policy).
        #[arg(long)]
        app_consistent_every_min: Option<u32>,
        /// The RPO, in minutes, past which the item alerts (1 to 1440; default 15).
        #[arg(long)]
        rpo_threshold_min: Option<u32>,
        /// Why: recorded in the audit log.
        #[arg(long)]
        reason: Option<String>,
        #[command(flatten)]
        server: Server,
    },
}

pub async fn protection(cmd: &ProtectionCommand) -> Result<(), Failure> {
    let (s, item, v) = match cmd {
        ProtectionCommand::Show { item, server } => {
            let url = format!("{}/items/{}/protection", base(server), urlencoding(item));
            (server, item, call(server, reqwest::Method::GET, &url, None, None).await?.1)
        }
        ProtectionCommand::Set { item, retention_min, app_consistent_every_min, rpo_threshold_min, reason, server } => {
            let url = format!("{}/items/{}/protection", base(server), urlencoding(item));
            let body = json!({"retention_min": retention_min, "app_consistent_every_min": app_consistent_every_min,
                              "rpo_threshold_min": rpo_threshold_min, "reason": reason});
            (server, item, call(server, reqwest::Method::PUT, &url, Some(body), None).await?.1)
        }
    };
    if s.json {
        println!("{v}");
        return Ok(());
    }
    let line = |name: &str, key: &str| {
        let chosen = &v["chosen"][key];
        let effective = v["effective"][key].as_u64().unwrap_or(0);
        let how = if chosen.is_null() { " (vault default)" } else { "" };
        println!("  {name}: {effective} min{how}");
    };
    println!("protection of {item}:");
    line("recovery points kept", "retention_min");
    line("app-consistent point every", "app_consistent_every_min");
    line("RPO threshold", "rpo_threshold_min");
    Ok(())
}

#[derive(Debug, clap::Subcommand)]
pub enum AlertsCommand {
    /// The open alerts, newest first (with --all the resolved ones too).
    List {
        #[arg(long)]
        all: bool,
        #[command(flatten)]
        server: Server,
    },
    /// Acknowledge an open alert: it stays listed until its condition clears.
    Ack {
        id: String,
        #[command(flatten)]
        server: Server,
    },
}

pub async fn alerts(cmd: &AlertsCommand) -> Result<(), Failure> {
    match cmd {
        AlertsCommand::List { all, server } => {
            let url = format!("{}/alerts{}", base(server), if *all { "?state=all" } else { "" });
            let (_, v) = call(server, reqwest::Method::GET, &url, None, None).await?;
            if server.json {
                println!("{v}");
                return Ok(());
            }
            let list = v["alerts"].as_array().cloned().unwrap_or_default();
            if list.is_empty() {
                println!("no {}alerts", if *all { "" } else { "open " });
            }
            for a in list {
                println!(
                    "{} {:<13} {:<8} {:<22} {}\n  {}",
                    a["id"].as_str().unwrap_or(""),
                    a["state"].as_str().unwrap_or(""),
                    a["severity"].as_str().unwrap_or(""),
                    a["kind"].as_str().unwrap_or(""),
                    a["subject"].as_str().unwrap_or(""),
                    a["message"].as_str().unwrap_or("")
                );
            }
            Ok(())
        }
        AlertsCommand::Ack { id, server } => {
            let url = format!("{}/alerts/{}/acknowledge", base(server), urlencoding(id));
            let (_, v) = call(server, reqwest::Method::POST, &url, None, None).await?;
            if server.json {
                println!("{v}");
            } else {
                println!("alert {id} acknowledged by {}", v["alert"]["acknowledged_by"].as_str().unwrap_or(""));
            }
            Ok(())
        }
    }
}

#[derive(Debug, clap::Subcommand)]
pub enum WebhooksCommand {
    /// Add a webhook: alerts and job ends are POSTed to URL, signed with HMAC-SHA256 (the secret is printed once).
    Add {
        url: String,
        /// alert, job, or both (the default).
        #[arg(long, value_delimiter = ',', value_parser = ["alert", "job"])]
        events: Vec<String>,
        /// The signing secret (at least 16 characters); made when left out.
        #[arg(long, env = "HOMEWARD_WEBHOOK_SECRET", hide_env_values = true)]
        secret: Option<String>,
        #[command(flatten)]
        server: Server,
    },
    /// The webhooks (never their secrets).
    List {
        #[command(flatten)]
        server: Server,
    },
    /// A webhook's delivery log, newest first.
    Deliveries {
        id: String,
        #[command(flatten)]
        server: Server,
    },
    /// Remove a webhook; its pending deliveries are given up.
    Remove {
        id: String,
        #[command(flatten)]
        server: Server,
    },
}

pub async fn webhooks(cmd: &WebhooksCommand) -> Result<(), Failure> {
    match cmd {
        WebhooksCommand::Add { url, events, secret, server } => {
            let mut body = json!({ "url": url });
            if !events.is_empty() {
                body["events"] = json!(events);
            }
            if let Some(s) = secret {
                body["secret"] = json!(s);
            }
            let (_, v) =
                call(server, reqwest::Method::POST, &format!("{}/webhooks", base(server)), Some(body), None).await?;
            if server.json {
                println!("{v}");
            } else {
                println!(
                    "webhook {} added for {}",
                    v["webhook"]["id"].as_str().unwrap_or(""),
                    v["webhook"]["url"].as_str().unwrap_or("")
                );
                println!("signing secret (shown once): {}", v["secret"].as_str().unwrap_or(""));
            }
            Ok(())
        }
        WebhooksCommand::List { server } => {
            let (_, v) = call(server, reqwest::Method::GET, &format!("{}/webhooks", base(server)), None, None).await?;
            if server.json {
                println!("{v}");
                return Ok(());
            }
            for h in v["webhooks"].as_array().into_iter().flatten() {
                let events: Vec<&str> =
                    h["events"].as_array().into_iter().flatten().filter_map(Value::as_str).collect();
                println!(
                    "{} {} ({})",
                    h["id"].as_str().unwrap_or(""),
                    h["url"].as_str().unwrap_or(""),
                    events.join(", ")
                );
            }
            Ok(())
        }
        WebhooksCommand::Deliveries { id, server } => {
            let url = format!("{}/webhooks/{}/deliveries", base(server), urlencoding(id));
            let (_, v) = call(server, reqwest::Method::GET, &url, None, None).await?;
            if server.json {
                println!("{v}");
                return Ok(());
            }
            for d in v["deliveries"].as_array().into_iter().flatten() {
                println!(
                    "{} {:<15} {:<9} attempts {} {}",
                    d["id"].as_str().unwrap_or(""),
                    d["event"].as_str().unwrap_or(""),
                    d["state"].as_str().unwrap_or(""),
                    d["attempts"],
                    d["last_error"].as_str().unwrap_or("")
                );
            }
            Ok(())
        }
        WebhooksCommand::Remove { id, server } => {
            let url = format!("{}/webhooks/{}", base(server), urlencoding(id));
            call(server, reqwest::Method::DELETE, &url, None, None).await?;
            println!("webhook {id} removed");
            Ok(())
        }
    }
}

fn point_body(p: &str) -> Value {
    match p {
        "latest-processed" | "latest" | "latest-app-consistent" => json!({"type": p}),
        kept if kept.starts_with("kept:") => json!({"type": "kept-copy", "id": &kept["kept:".len()..]}),
        id => json!({"type": "specific", "id": id}),
    }
}

pub async fn test_failover(a: &TestFailoverArgs) -> Result<(), Failure> {
    let mut body = json!({"network": a.network});
    if let Some(p) = &a.point {
        body["point"] = point_body(p);
    }
    if let Some(r) = &a.reason {
        body["reason"] = json!(r);
    }
    let url = format!("{}/items/{}/test-failover", base(&a.server), a.item);
    Run { server: &a.server, args: &a.run }.post(&url, body, print_plan).await
}

pub async fn cleanup_test_failover(a: &CleanupArgs) -> Result<(), Failure> {
    let mut body = json!({});
    if let Some(n) = &a.notes {
        body["notes"] = json!(n);
    }
    let url = format!("{}/items/{}/cleanup-test-failover", base(&a.server), a.item);
    Run { server: &a.server, args: &a.run }.post(&url, body, print_plan).await
}

pub async fn item_op(a: &ItemOpArgs, op: &str) -> Result<(), Failure> {
    let url = format!("{}/items/{}/{op}", base(&a.server), a.item);
    Run { server: &a.server, args: &a.run }.post(&url, json!({}), print_plan).await
}

pub async fn resolve_split_brain(a: &SplitBrainArgs) -> Result<(), Failure> {
    let op = if a.keep == "cloud" { "keep-cloud-copy" } else { "keep-on-premises-copy" };
    let url = format!("{}/items/{}/{op}", base(&a.server), a.item);
    Run { server: &a.server, args: &a.run }.post(&url, json!({"reason": a.reason}), print_plan).await
}

fn seconds(ms: &Value) -> String {
    ms.as_u64().map_or("-".to_owned(), |ms| format!("{:.1} s", ms as f64 / 1000.0))
}

pub async fn drills(a: &DrillsArgs) -> Result<(), Failure> {
    let s = &a.server;
    if let Some(id) = &a.id {
        if a.csv {
            let url = format!("{}/drills/{id}?format=csv", base(s));
            let (_, v) = call(s, reqwest::Method::GET, &url, None, None).await?;
            print!("{}", v.as_str().unwrap_or_default());
            return Ok(());
        }
        let (_, v) = call(s, reqwest::Method::GET, &format!("{}/drills/{id}", base(s)), None, None).await?;
        if s.json {
            println!("{v}");
            return Ok(());
        }
        let d = &v["drill"];
        println!(
            "drill {} of {}: {} (test VM {} on {}, network {})",
            d["id"].as_str().unwrap_or(""),
            d["item_name"].as_str().unwrap_or(""),
            d["status"].as_str().unwrap_or(""),
            d["vm"].as_str().unwrap_or(""),
            d["host"].as_str().unwrap_or(""),
            d["network"].as_str().unwrap_or("")
        );
        println!(
            "  point {} ({}), {} old at the start; powered on after {}",
            d["point"]["id"].as_str().unwrap_or(""),
            d["point"]["kind"].as_str().unwrap_or(""),
            seconds(&d["point_age_ms"]),
            seconds(&d["time_to_power_on_ms"])
        );
        for c in d["checks"].as_array().into_iter().flatten() {
            let mark = if c["passed"] == true { "ok  " } else { "FAIL" };
            println!("  [{mark}] {}: {}", c["name"].as_str().unwrap_or(""), c["detail"].as_str().unwrap_or(""));
        }
        if let Some(n) = d["notes"].as_str() {
            println!("  notes: {n}");
        }
        return Ok(());
    }
    let url = match &a.item {
        Some(item) => format!("{}/drills?item={}", base(s), urlencoding(item)),
        None => format!("{}/drills", base(s)),
    };
    let (_, v) = call(s, reqwest::Method::GET, &url, None, None).await?;
    if s.json {
        println!("{v}");
        return Ok(());
    }
    println!("{:<38} {:<10} {:<12} {:<16} {:<10} checks", "drill", "item", "status", "network", "power-on");
    for d in v["drills"].as_array().into_iter().flatten() {
        let checks = d["checks"].as_array().map_or(0, Vec::len);
        let passed = d["checks"].as_array().into_iter().flatten().filter(|c| c["passed"] == true).count();
        println!(
            "{:<38} {:<10} {:<12} {:<16} {:<10} {passed}/{checks} passed",
            d["id"].as_str().unwrap_or(""),
            d["item_name"].as_str().unwrap_or(""),
            d["status"].as_str().unwrap_or(""),
            d["network"].as_str().unwrap_or(""),
            seconds(&d["time_to_power_on_ms"])
        );
    }
    Ok(())
}

/// A path segment or query value with the characters a URL reserves escaped.
fn urlencoding(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

fn print_recovery_plan(p: &Value) {
    let groups: Vec<String> = p["groups"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|g| g.as_array().into_iter().flatten().filter_map(Value::as_str).collect::<Vec<_>>().join(", "))
        .collect();
    println!("{:<20} {:<24} {}", p["id"].as_str().unwrap_or(""), p["name"].as_str().unwrap_or(""), groups.join(" → "));
    let settings: Vec<String> = ["retention_min", "app_consistent_every_min", "rpo_threshold_min"]
        .iter()
        .filter_map(|f| p["protection"][f].as_u64().map(|v| format!("{} {v} min", f.trim_end_matches("_min"))))
        .collect();
    if !settings.is_empty() {
        println!("{:<20} reprotect defaults: {}", "", settings.join(", ").replace('_', " "));
    }
}

pub async fn plans(cmd: &PlansCommand) -> Result<(), Failure> {
    let split = |groups: &[String]| -> Vec<Vec<String>> {
        groups
            .iter()
            .map(|g| g.split(',').map(str::trim).filter(|i| !i.is_empty()).map(str::to_owned).collect())
            .collect()
    };
    let (s, v) = match cmd {
        PlansCommand::List { server } => {
            let (_, v) = call(server, reqwest::Method::GET, &format!("{}/plans", base(server)), None, None).await?;
            if server.json {
                println!("{v}");
            } else {
                println!("{:<20} {:<24} groups", "plan", "name");
                v["plans"].as_array().into_iter().flatten().for_each(print_recovery_plan);
            }
            return Ok(());
        }
        PlansCommand::Create { name, groups, protection, server } => {
            let body = json!({"name": name, "groups": split(groups), "protection": protection.over(&Value::Null)});
            (server, call(server, reqwest::Method::POST, &format!("{}/plans", base(server)), Some(body), None).await?.1)
        }
        PlansCommand::Edit { id, name, groups, protection, server } => {
            let url = format!("{}/plans/{}", base(server), urlencoding(id));
            let current = call(server, reqwest::Method::GET, &url, None, None).await?.1;
            let name = name.clone().unwrap_or_else(|| current["plan"]["name"].as_str().unwrap_or_default().to_owned());
            let settings = protection.over(&current["plan"]["protection"]);
            let body = json!({"name": name, "groups": split(groups), "protection": settings});
            (server, call(server, reqwest::Method::PUT, &url, Some(body), None).await?.1)
        }
        PlansCommand::Remove { id, server } => {
            let url = format!("{}/plans/{}", base(server), urlencoding(id));
            call(server, reqwest::Method::DELETE, &url, None, None).await?;
            println!("plan {id} removed");
            return Ok(());
        }
    };
    if s.json {
        println!("{v}");
    } else {
        print_recovery_plan(&v["plan"]);
    }
    Ok(())
}

pub async fn networks(cmd: &NetworksCommand) -> Result<(), Failure> {
    let (s, name, isolated) = match cmd {
        NetworksCommand::List { server } => {
            let (_, v) =
                call(server, reqwest::Method::GET, &format!("{}/infrastructure", base(server)), None, None).await?;
            let nets = &v["inventory"]["networks"];
            if server.json {
                println!("{}", json!({ "networks": nets }));
                return Ok(());
            }
            println!("{:<24} {:<12} vcenter", "network", "isolation");
            for n in nets.as_array().into_iter().flatten() {
                println!(
                    "{:<24} {:<12} {}",
                    n["id"].as_str().unwrap_or(""),
                    if n["isolated"] == true { "isolated" } else { "production" },
                    n["vcenter"].as_str().unwrap_or("-")
                );
            }
            return Ok(());
        }
        NetworksCommand::Isolate { name, server } => (server, name, true),
        NetworksCommand::Production { name, server } => (server, name, false),
    };
    let url = format!("{}/infrastructure/networks/{}", base(s), urlencoding(name));
    let (_, v) = call(s, reqwest::Method::POST, &url, Some(json!({ "isolated": isolated })), None).await?;
    if s.json {
        println!("{v}");
    } else {
        println!("network {name}: {}", if isolated { "isolated; test failovers may use it" } else { "production" });
    }
    Ok(())
}

#[derive(Debug, Args)]
pub struct PlanDrillArgs {
    /// The recovery plan's id (`GET /api/v1/plans` lists them).
    pub plan: String,
    #[command(flatten)]
    pub server: Server,
    #[command(flatten)]
    pub run: RunArgs,
    /// The isolated network the test VMs join.
    #[arg(long)]
    pub network: String,
    /// latest-processed (each VM its newest point) or latest-app-consistent (one shared app-consistent point).
    #[arg(long, default_value = "latest-processed", value_parser = ["latest-processed", "latest-app-consistent"])]
    pub point: String,
    /// Why: recorded in the audit log.
    #[arg(long)]
    pub reason: Option<String>,
}

#[derive(Debug, Args)]
pub struct PlanCleanupArgs {
    pub plan: String,
    #[command(flatten)]
    pub server: Server,
    #[command(flatten)]
    pub run: RunArgs,
    /// What the drill showed, kept in each item's drill report.
    #[arg(long)]
    pub notes: Option<String>,
}

#[derive(Debug, Args)]
pub struct PlanReprotectArgs {
    /// The recovery plan's id (`GET /api/v1/plans` lists them).
    pub plan: String,
    #[command(flatten)]
    pub server: Server,
    #[command(flatten)]
    pub run: RunArgs,
    /// The process server in the cloud that sends every item's disks.
    #[arg(long)]
    pub process_server: String,
    /// A master target on-premises; give one per operating system the plan's VMs run (Windows, Linux). Each item
    /// takes the first given that runs its own.
    #[arg(long = "master-target", required = true)]
    pub master_targets: Vec<String>,
    /// For items whose original VM is gone: the datastore their re-created VM's disks go to.
    #[arg(long)]
    pub datastore: Option<String>,
    // Protection settings for every item, in minutes (each keeps the plan's, else its own, where one is left out).
    #[command(flatten)]
    pub protection: PlanProtectionArgs,
    /// Why: recorded in the audit log.
    #[arg(long)]
    pub reason: Option<String>,
}

pub async fn plan_reprotect(a: &PlanReprotectArgs) -> Result<(), Failure> {
    // The given settings only: the plan's own defaults apply under them on the server.
    let mut body = a.protection.over(&json!({}));
    body["process_server"] = json!(a.process_server);
    body["master_targets"] = json!(a.master_targets);
    if let Some(d) = &a.datastore {
        body["datastore"] = json!(d);
    }
    if let Some(r) = &a.reason {
        body["reason"] = json!(r);
    }
    let url = format!("{}/plans/{}/reprotect", base(&a.server), urlencoding(&a.plan));
    Run { server: &a.server, args: &a.run }.post(&url, body, print_plan_preview).await
}

#[derive(Debug, Args)]
pub struct PlanOpArgs {
    /// The recovery plan's id (`GET /api/v1/plans` lists them).
    pub plan: String,
    #[command(flatten)]
    pub server: Server,
    #[command(flatten)]
    pub run: RunArgs,
    /// Why: recorded in the audit log.
    #[arg(long)]
    pub reason: Option<String>,
}

/// A recovery plan's commit or cancel failover (`op`), every item group after group.
pub async fn plan_op(a: &PlanOpArgs, op: &str) -> Result<(), Failure> {
    let mut body = json!({});
    if let Some(r) = &a.reason {
        body["reason"] = json!(r);
    }
    let url = format!("{}/plans/{}/{op}", base(&a.server), urlencoding(&a.plan));
    Run { server: &a.server, args: &a.run }.post(&url, body, print_plan_preview).await
}

pub async fn plan_test_failover(a: &PlanDrillArgs) -> Result<(), Failure> {
    let mut body = json!({"point": {"type": a.point}, "network": a.network});
    if let Some(r) = &a.reason {
        body["reason"] = json!(r);
    }
    let url = format!("{}/plans/{}/test-failover", base(&a.server), urlencoding(&a.plan));
    Run { server: &a.server, args: &a.run }.post(&url, body, print_plan_preview).await
}

pub async fn plan_cleanup_test_failover(a: &PlanCleanupArgs) -> Result<(), Failure> {
    let mut body = json!({});
    if let Some(n) = &a.notes {
        body["notes"] = json!(n);
    }
    let url = format!("{}/plans/{}/cleanup-test-failover", base(&a.server), urlencoding(&a.plan));
    Run { server: &a.server, args: &a.run }.post(&url, body, print_plan_preview).await
}

pub async fn plan_failover(a: &PlanArgs) -> Result<(), Failure> {
    let mut body = json!({"point": {"type": a.point}});
    if let Some(r) = &a.reason {
        body["reason"] = json!(r);
    }
    let url = format!("{}/plans/{}/failover", base(&a.server), a.plan);
    let run = Run { server: &a.server, args: &a.run };
    run.post(&url, body, print_plan_preview).await
}

/// An action command: a dry run printed (exit 3 when refused), or a job started and perhaps waited for.
struct Run<'a> {
    server: &'a Server,
    args: &'a RunArgs,
}

impl Run<'_> {
    async fn post(&self, url: &str, body: Value, print_dry_run: fn(&Value)) -> Result<(), Failure> {
        let url = if self.args.dry_run { format!("{url}?dry_run=true") } else { url.to_owned() };
        let key = self.args.idempotency_key.as_deref();
        let (_, v) = call(self.server, reqwest::Method::POST, &url, Some(body), key).await?;
        if self.args.dry_run {
            if self.server.json {
                println!("{v}");
            } else {
                print_dry_run(&v);
            }
            return if v["allowed"] == true {
                Ok(())
            } else {
                Err(failure(3, "the dry run found refusals (see above)"))
            };
        }
        let job = v["job_id"].as_str().unwrap_or_default().to_owned();
        println!("job {job} started: {}", v["location"].as_str().unwrap_or(""));
        if self.args.wait {
            return wait_job(self.server, &job).await;
        }
        Ok(())
    }
}

fn print_plan_preview(v: &Value) {
    println!("plan {}: {}", v["name"].as_str().unwrap_or(""), if v["allowed"] == true { "allowed" } else { "REFUSED" });
    for r in v["refusals"].as_array().into_iter().flatten() {
        println!(
            "  {} {} — {}",
            r["rule"].as_str().unwrap_or(""),
            r["message"].as_str().unwrap_or(""),
            r["recommended_action"].as_str().unwrap_or("")
        );
    }
    for (g, group) in v["groups"].as_array().into_iter().flatten().enumerate() {
        println!("  group {}:", g + 1);
        for it in group.as_array().into_iter().flatten() {
            let verdict = if it["allowed"] == true { "ok" } else { "REFUSED" };
            let name = it["name"].as_str().unwrap_or("");
            if let Some(mt) = it["master_target"].as_str() {
                // A reprotect: where each item goes and what crosses the link.
                let (location, transfer) =
                    (it["location"].as_str().unwrap_or("?"), it["transfer"].as_str().unwrap_or("?"));
                let mib = it["bytes_to_move"].as_u64().unwrap_or(0).div_ceil(1 << 20);
                println!("    {name} through {mt}, {location} location, {transfer} copy of {mib} MiB: {verdict}");
                continue;
            }
            let point = it["point"]["id"].as_str().unwrap_or("no point");
            let loss =
                it["data_loss_ms"].as_u64().map_or(String::new(), |ms| format!(", {} s of writes lost", ms / 1000));
            println!("    {name} at {point}{loss}: {verdict}");
        }
    }
}

/// Exit codes: 0 done, 1 server or network failure, 2 bad input or unknown id, 3 refused by a rule.
pub struct Failure {
    pub code: u8,
    pub message: String,
}

fn failure(code: u8, message: impl Into<String>) -> Failure {
    Failure { code, message: message.into() }
}

async fn call(
    s: &Server,
    method: reqwest::Method,
    url: &str,
    body: Option<Value>,
    key: Option<&str>,
) -> Result<(u16, Value), Failure> {
    let client =
        reqwest::Client::builder().timeout(Duration::from_secs(600)).build().map_err(|e| failure(1, e.to_string()))?;
    let mut req = client.request(method, url);
    if let Some(b) = body {
        req = req.header("content-type", "application/json").body(b.to_string());
    }
    if let Some(k) = key {
        req = req.header("idempotency-key", k);
    }
    if let Some(t) = &s.token {
        req = req.header("authorization", format!("Bearer {t}"));
    }
    let resp = req.send().await.map_err(|e| failure(1, format!("cannot reach the server at {url}: {e}")))?;
    let status = resp.status().as_u16();
    let text = resp.text().await.map_err(|e| failure(1, e.to_string()))?;
    let v = serde_json::from_str(&text).unwrap_or(Value::String(text));
    match status {
        200..=299 => Ok((status, v)),
        409 if v["code"] == "refused" => {
            let mut msg = String::new();
            for r in v["refusals"].as_array().into_iter().flatten() {
                msg.push_str(&format!(
                    "refused ({}): {}\n  what to do: {}\n",
                    r["rule"].as_str().unwrap_or("?"),
                    r["message"].as_str().unwrap_or(""),
                    r["recommended_action"].as_str().unwrap_or("")
                ));
            }
            Err(failure(3, msg.trim_end().to_owned()))
        }
        401 => Err(failure(
            2,
            format!(
                "{} Pass --token or set HOMEWARD_TOKEN; an administrator creates one with `homeward users token <name>`.",
                v["message"].as_str().unwrap_or("Sign in first.")
            ),
        )),
        400..=499 => Err(failure(
            2,
            format!(
                "{} — {}",
                v["message"].as_str().unwrap_or("request refused"),
                v["recommended_action"].as_str().unwrap_or("")
            ),
        )),
        _ => Err(failure(1, format!("the server answered {status}: {}", v["message"].as_str().unwrap_or("")))),
    }
}

fn base(s: &Server) -> String {
    format!("{}/api/v1", s.server.trim_end_matches('/'))
}

pub async fn items(s: &Server, id: Option<&str>) -> Result<(), Failure> {
    let url = match id {
        Some(id) => format!("{}/items/{id}", base(s)),
        None => format!("{}/items", base(s)),
    };
    let (_, v) = call(s, reqwest::Method::GET, &url, None, None).await?;
    let list: Vec<Value> = match id {
        Some(_) => vec![v.clone()],
        None => {
            // The list comes a page at a time; `next` names the following one.
            let mut all = v["items"].as_array().cloned().unwrap_or_default();
            let mut next = v["next"].as_str().map(str::to_owned);
            while let Some(path) = next {
                let url = format!("{}{path}", s.server.trim_end_matches('/'));
                let (_, page) = call(s, reqwest::Method::GET, &url, None, None).await?;
                all.extend(page["items"].as_array().cloned().unwrap_or_default());
                next = page["next"].as_str().map(str::to_owned);
            }
            all
        }
    };
    if s.json {
        match id {
            Some(_) => println!("{v}"),
            None => println!("{}", serde_json::json!({"items": list, "total": list.len()})),
        }
        return Ok(());
    }
    println!("{:<10} {:<16} {:<28} {:<28} {:<8} allowed", "item", "machine", "os", "state", "health");
    for e in &list {
        let i = &e["item"];
        let allowed: Vec<&str> =
            e["allowed_operations"].as_array().into_iter().flatten().filter_map(|x| x.as_str()).collect();
        println!(
            "{:<10} {:<16} {:<28} {:<28} {:<8} {}",
            i["id"].as_str().unwrap_or(""),
            i["machine"].as_str().unwrap_or(""),
            i["os"]["name"].as_str().unwrap_or(""),
            i["state"].as_str().unwrap_or(""),
            i["health"].as_str().unwrap_or(""),
            if allowed.is_empty() { "-".to_owned() } else { allowed.join(", ") }
        );
        if id.is_some() {
            for r in e["refused_operations"].as_array().into_iter().flatten() {
                for why in r["refusals"].as_array().into_iter().flatten() {
                    println!(
                        "  {} not allowed ({}): {}",
                        r["operation"].as_str().unwrap_or(""),
                        why["rule"].as_str().unwrap_or(""),
                        why["message"].as_str().unwrap_or("")
                    );
                }
            }
        }
    }
    Ok(())
}

pub async fn action(action: &str, a: &ActionArgs) -> Result<(), Failure> {
    let point = a.point.as_deref().map(point_body);
    let mut body = json!({});
    for (k, v) in
        [("master_target", &a.master_target), ("process_server", &a.process_server), ("datastore", &a.datastore)]
    {
        if let Some(v) = v {
            body[k] = json!(v);
        }
    }
    if let Some(p) = point {
        body["point"] = p;
    }
    let url = format!("{}/items/{}/{action}", base(&a.server), a.item);
    let run = Run { server: &a.server, args: &a.run };
    run.post(&url, body, print_plan).await
}

fn print_plan(v: &Value) {
    println!(
        "{} of {}: {}",
        v["operation"].as_str().unwrap_or(""),
        v["item"].as_str().unwrap_or(""),
        if v["allowed"] == true { "allowed" } else { "REFUSED" }
    );
    if let Some(note) = v["location_note"].as_str() {
        println!("  {note}");
    }
    if let Some(b) = v["bytes_to_move"].as_u64() {
        println!(
            "  bytes to move: {} ({} s at the process server's rate)",
            replicator::human_bytes(b),
            v["eta_seconds"]
        );
    }
    for c in v["checks"].as_array().into_iter().flatten() {
        let mark = if c["passed"] == true { "ok  " } else { "FAIL" };
        println!("  [{mark}] {} {}", c["rule"].as_str().unwrap_or(""), c["check"].as_str().unwrap_or(""));
        if let Some(r) = c["refusal"].as_object() {
            println!(
                "         {} — {}",
                r["message"].as_str().unwrap_or(""),
                r["recommended_action"].as_str().unwrap_or("")
            );
        }
    }
    for (n, t) in v["tasks"].as_array().into_iter().flatten().enumerate() {
        println!("  {}. {}", n + 1, t["name"].as_str().unwrap_or(""));
    }
}

pub async fn job_action(s: &Server, id: &str, action: &str, wait: bool) -> Result<(), Failure> {
    let url = format!("{}/jobs/{id}/{action}", base(s));
    let (_, v) = call(s, reqwest::Method::POST, &url, Some(json!({})), None).await?;
    if s.json {
        println!("{v}");
    } else {
        println!("job {id}: {action} asked; it is {} now", v["state"].as_str().unwrap_or("?"));
    }
    if wait {
        return wait_job(s, id).await;
    }
    Ok(())
}

pub async fn jobs(s: &Server, id: Option<&str>, wait: bool) -> Result<(), Failure> {
    if let (Some(id), true) = (id, wait) {
        return wait_job(s, id).await;
    }
    let url = match id {
        Some(id) => format!("{}/jobs/{id}", base(s)),
        None => format!("{}/jobs", base(s)),
    };
    let (_, v) = call(s, reqwest::Method::GET, &url, None, None).await?;
    if s.json {
        println!("{v}");
        return Ok(());
    }
    match id {
        Some(_) => print_job(&v),
        None => {
            for j in v["jobs"].as_array().into_iter().flatten() {
                let j = &j["job"];
                println!(
                    "{:<34} {:<22} {:<10} {}",
                    j["id"].as_str().unwrap_or(""),
                    j["kind"].as_str().unwrap_or(""),
                    j["item_id"].as_str().or(j["plan_id"].as_str()).unwrap_or(""),
                    j["state"].as_str().unwrap_or("")
                );
            }
        }
    }
    Ok(())
}

fn print_job(v: &Value) {
    let j = &v["job"];
    println!(
        "job {} ({}): {}",
        j["id"].as_str().unwrap_or(""),
        j["kind"].as_str().unwrap_or(""),
        j["state"].as_str().unwrap_or("")
    );
    for t in j["tasks"].as_array().into_iter().flatten() {
        println!(
            "  [{:<11}] {} ({} bytes)",
            t["state"].as_str().unwrap_or(""),
            t["name"].as_str().unwrap_or(""),
            t["bytes"]
        );
        if let Some(e) = t["error"].as_str() {
            println!("      error: {e}\n      what to do: {}", t["recommended_action"].as_str().unwrap_or(""));
        }
        let result: Value = t["result"].as_str().and_then(|r| serde_json::from_str(r).ok()).unwrap_or_default();
        // A verification's finding is the point of its job.
        if let Some(intact) = result["intact"].as_bool() {
            let read = replicator::human_bytes(result["bytes_read"].as_u64().unwrap_or(0));
            if intact {
                println!("      replica intact: {} blocks compared, {read} read", result["blocks"]);
            } else {
                println!(
                    "      replica DAMAGED: {} of {} blocks differ from their recorded hashes; the next cycle \
                     compares the whole replica with the cloud copy and rewrites them",
                    result["mismatched_blocks"], result["blocks"]
                );
            }
        }
    }
}

async fn wait_job(s: &Server, id: &str) -> Result<(), Failure> {
    let url = format!("{}/jobs/{id}", base(s));
    loop {
        let (_, v) = call(s, reqwest::Method::GET, &url, None, None).await?;
        let state = v["job"]["state"].as_str().unwrap_or("").to_owned();
        if matches!(state.as_str(), "succeeded" | "failed" | "cancelled") {
            if s.json {
                println!("{v}");
            } else {
                print_job(&v);
            }
            return if state == "succeeded" { Ok(()) } else { Err(failure(1, format!("job {id} {state}"))) };
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// `homeward agents enroll | list | revoke`.
pub async fn agents(cmd: &crate::cli::AgentsCommand) -> Result<(), Failure> {
    use crate::cli::AgentsCommand;
    match cmd {
        AgentsCommand::Enroll { name, role, site, server } => {
            let mut body = json!({"name": name, "role": role.as_str()});
            if let Some(site) = site {
                body["site"] = json!(site.as_str());
            }
            let (_, v) =
                call(server, reqwest::Method::POST, &format!("{}/agents", base(server)), Some(body), None).await?;
            if server.json {
                println!("{v}");
                return Ok(());
            }
            let a = &v["agent"];
            println!(
                "enrolled {} ({}), {} at the {} site; the token is shown only now and works once, within 24 hours.",
                a["name"].as_str().unwrap_or(""),
                a["id"].as_str().unwrap_or(""),
                a["role"].as_str().unwrap_or(""),
                a["site"].as_str().unwrap_or("")
            );
            println!("token: {}", v["token"].as_str().unwrap_or(""));
            println!("vault CA fingerprint (sha256): {}", v["ca_fingerprint"].as_str().unwrap_or(""));
            println!("on the agent's machine run:\n  {}", v["command"].as_str().unwrap_or(""));
        }
        AgentsCommand::List { server } => {
            let (_, v) = call(server, reqwest::Method::GET, &format!("{}/agents", base(server)), None, None).await?;
            if server.json {
                println!("{v}");
                return Ok(());
            }
            println!(
                "{:<20} {:<16} {:<15} {:<12} {:<18} {:<24} {:<8} {:<22} version",
                "id", "name", "role", "site", "state", "last heartbeat", "streams", "throughput (10 min)"
            );
            for a in v["agents"].as_array().into_iter().flatten() {
                let last =
                    a["last_heartbeat_at"].as_u64().map_or_else(|| "never".to_owned(), orchestrator::domain::utc_text);
                let rate = a["activity"]["throughput_bytes_per_s"]
                    .as_u64()
                    .map_or_else(|| "-".to_owned(), |r| format!("{:.1} MiB/s", r as f64 / 1_048_576.0));
                println!(
                    "{:<20} {:<16} {:<15} {:<12} {:<18} {:<24} {:<8} {:<22} {}",
                    a["id"].as_str().unwrap_or(""),
                    a["name"].as_str().unwrap_or(""),
                    a["role"].as_str().unwrap_or(""),
                    a["site"].as_str().unwrap_or(""),
                    a["state"].as_str().unwrap_or(""),
                    last,
                    a["activity"]["streams"].as_u64().unwrap_or(0),
                    rate,
                    a["version"].as_str().unwrap_or("-")
                );
            }
        }
        AgentsCommand::RateCap { agent, rate, server } => {
            let url = format!("{}/agents/{agent}/rate-cap", base(server));
            let (_, v) =
                call(server, reqwest::Method::POST, &url, Some(json!({"max_bytes_per_s": rate.0})), None).await?;
            if server.json {
                println!("{v}");
                return Ok(());
            }
            let name = v["agent"]["name"].as_str().unwrap_or("");
            match v["agent"]["max_bytes_per_s"].as_u64() {
                Some(c) => println!("{name}: sends at most {}/s on its replication links", replicator::human_bytes(c)),
                None => println!("{name}: no rate cap"),
            }
        }
        AgentsCommand::Revoke { agent, server } => {
            let url = format!("{}/agents/{agent}/revoke", base(server));
            let (_, v) = call(server, reqwest::Method::POST, &url, Some(json!({})), None).await?;
            if server.json {
                println!("{v}");
                return Ok(());
            }
            println!(
                "revoked {} ({}): its certificate is refused from its next request on",
                v["agent"]["name"].as_str().unwrap_or(""),
                v["agent"]["id"].as_str().unwrap_or("")
            );
        }
    }
    Ok(())
}

/// A connection's secret from `--secret-file` (a path, or "-" for standard input) or HOMEWARD_CONNECTION_SECRET.
fn read_secret(args: &crate::cli::SecretArgs) -> Result<String, Failure> {
    let text = match &args.secret_file {
        Some(p) if p.as_os_str() == "-" => {
            let mut s = String::new();
            std::io::Read::read_to_string(&mut std::io::stdin(), &mut s)
                .map_err(|e| failure(2, format!("could not read the secret from standard input: {e}")))?;
            s
        }
        Some(p) => std::fs::read_to_string(p)
            .map_err(|e| failure(2, format!("could not read the secret from {}: {e}", p.display())))?,
        None => std::env::var("HOMEWARD_CONNECTION_SECRET").map_err(|_| {
            failure(
                2,
                "give the secret with --secret-file FILE (\"-\" for standard input) or HOMEWARD_CONNECTION_SECRET",
            )
        })?,
    };
    let secret = text.trim_end_matches(['\r', '\n']).to_owned();
    if secret.is_empty() {
        return Err(failure(2, "the secret is empty"));
    }
    Ok(secret)
}

/// `homeward password`: the token's account changes its own password (current then new, one per line on stdin).
pub async fn change_password(server: &Server) -> Result<(), Failure> {
    let mut text = String::new();
    std::io::Read::read_to_string(&mut std::io::stdin(), &mut text)
        .map_err(|e| failure(2, format!("could not read standard input: {e}")))?;
    let mut lines = text.lines();
    let (Some(current), Some(new)) = (lines.next(), lines.next()) else {
        return Err(failure(2, "give two lines on standard input: the current password, then the new one"));
    };
    let body = json!({"current_password": current, "new_password": new});
    let (_, v) =
        call(server, reqwest::Method::POST, &format!("{}/me/password", base(server)), Some(body), None).await?;
    if server.json {
        println!("{v}");
    } else {
        println!("password changed; {} other browser session(s) ended", v["sessions_ended"].as_u64().unwrap_or(0));
    }
    Ok(())
}

fn print_connection(c: &Value) {
    let state = match c["last_error"].as_str() {
        Some(e) => format!("failing: {e}"),
        None => "connected".to_owned(),
    };
    println!(
        "{} ({}) {} {}{}",
        c["name"].as_str().unwrap_or(""),
        c["id"].as_str().unwrap_or(""),
        c["kind"].as_str().unwrap_or(""),
        c["url"].as_str().unwrap_or(""),
        c["container"].as_str().map(|k| format!(" container {k}")).unwrap_or_default()
    );
    println!(
        "  {state}; checked {}",
        c["checked_at"].as_u64().map_or_else(|| "never".to_owned(), orchestrator::domain::utc_text)
    );
    let inv = &c["inventory"];
    match inv["kind"].as_str() {
        Some("vcenter") => {
            let i = &inv["inventory"];
            let n = |k: &str| i[k].as_array().map_or(0, Vec::len);
            println!(
                "  {}: {} datacenter(s), {} cluster(s), {} host(s), {} datastore(s), {} VM(s)",
                inv["about"]["full_name"].as_str().unwrap_or(""),
                n("datacenters"),
                n("clusters"),
                n("hosts"),
                n("datastores"),
                n("vms")
            );
            for d in i["datastores"].as_array().into_iter().flatten() {
                println!(
                    "    datastore {} ({}): {} free of {}{}",
                    d["name"].as_str().unwrap_or(""),
                    d["kind"].as_str().unwrap_or(""),
                    replicator::human_bytes(d["free_bytes"].as_u64().unwrap_or(0)),
                    replicator::human_bytes(d["capacity_bytes"].as_u64().unwrap_or(0)),
                    if d["accessible"].as_bool() == Some(false) { ", not accessible" } else { "" }
                );
            }
        }
        Some("azure-subscription") => {
            let vms = inv["vms"].as_array().cloned().unwrap_or_default();
            println!(
                "  subscription {}, resource group {}: {} VM(s)",
                inv["subscription"].as_str().unwrap_or(""),
                inv["resource_group"].as_str().unwrap_or(""),
                vms.len()
            );
            for v in &vms {
                let disks: Vec<&str> = v["disks"].as_array().into_iter().flatten().filter_map(Value::as_str).collect();
                println!(
                    "    VM {} ({}): {}",
                    v["name"].as_str().unwrap_or(""),
                    v["provisioning_state"].as_str().unwrap_or(""),
                    disks.join(", ")
                );
            }
        }
        Some("storage-account") => println!(
            "  account {}: {} blob(s) in the container",
            inv["account"].as_str().unwrap_or(""),
            inv["blob_count"].as_u64().unwrap_or(0).max(inv["blobs"].as_array().map_or(0, Vec::len) as u64)
        ),
        _ => {}
    }
}

/// `homeward connections list | add-vcenter | add-storage | refresh | remove`.
pub async fn connections(cmd: &crate::cli::ConnectionsCommand) -> Result<(), Failure> {
    use crate::cli::ConnectionsCommand as C;
    let (server, method, path, body) = match cmd {
        C::List { server } => (server, reqwest::Method::GET, "/connections".to_owned(), None),
        C::AddVcenter { name, url, user, thumbprint, secret, server } => {
            let mut body =
                json!({"kind": "vcenter", "name": name, "url": url, "user": user, "password": read_secret(secret)?});
            if let Some(t) = thumbprint {
                body["thumbprint"] = json!(t);
            }
            (server, reqwest::Method::POST, "/connections".to_owned(), Some(body))
        }
        C::AddStorage { name, url, container, sas, thumbprint, secret, server } => {
            let field = if *sas { "sas" } else { "account_key" };
            let mut body = json!({"kind": "storage-account", "name": name, "url": url, "container": container});
            body[field] = json!(read_secret(secret)?);
            if let Some(t) = thumbprint {
                body["thumbprint"] = json!(t);
            }
            (server, reqwest::Method::POST, "/connections".to_owned(), Some(body))
        }
        C::AddAzure {
            name,
            tenant,
            client_id,
            subscription,
            resource_group,
            management_url,
            authority_url,
            thumbprint,
            secret,
            server,
        } => {
            let body = json!({"kind": "azure-subscription", "name": name, "tenant": tenant, "client_id": client_id,
                              "client_secret": read_secret(secret)?, "subscription": subscription,
                              "resource_group": resource_group, "management_url": management_url,
                              "authority_url": authority_url, "thumbprint": thumbprint});
            (server, reqwest::Method::POST, "/connections".to_owned(), Some(body))
        }
        C::Refresh { connection, server } => {
            (server, reqwest::Method::POST, format!("/connections/{connection}/refresh"), Some(json!({})))
        }
        C::Remove { connection, server } => {
            (server, reqwest::Method::DELETE, format!("/connections/{connection}"), None)
        }
    };
    let (_, v) = call(server, method, &format!("{}{path}", base(server)), body, None).await?;
    if server.json {
        println!("{v}");
        return Ok(());
    }
    match cmd {
        C::List { .. } => {
            let list = v["connections"].as_array().cloned().unwrap_or_default();
            if list.is_empty() {
                println!(
                    "no site connection; add one with `homeward connections add-vcenter`, `add-storage` or `add-azure`"
                );
            }
            list.iter().for_each(print_connection);
        }
        C::Remove { .. } => println!(
            "removed {} ({}) and its credential",
            v["connection"]["name"].as_str().unwrap_or(""),
            v["connection"]["id"].as_str().unwrap_or("")
        ),
        _ => print_connection(&v["connection"]),
    }
    Ok(())
}
