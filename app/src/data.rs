//! Server functions that read what the pages show. Thin adapters over `orchestrator::service`: they shape the
//! core's data into [`crate::model`] rows; filters, sorting and pagination happen here, on the server, so a page of
//! 5 000 items sends 50 rows.

use leptos::prelude::*;

use crate::model::*;

/// Rows per page of the items, jobs and audit tables.
pub const PER_PAGE: usize = 50;

#[cfg(feature = "ssr")]
pub(crate) mod server {
    use std::sync::{Arc, Mutex};
    use std::time::{Duration, Instant};

    use leptos::prelude::*;
    use orchestrator::accounts::User;
    pub use orchestrator::alerts::AlertKind;
    use orchestrator::domain::{ReplicatedItem, Site};
    use orchestrator::lifecycle::{self, Operation};
    use orchestrator::rules::Refusal;
    use orchestrator::service::Service;

    use crate::model::*;

    pub fn ctx() -> Result<crate::ServerContext, ServerFnError> {
        use_context::<crate::ServerContext>()
            .ok_or_else(|| ServerFnError::new("the server did not provide its context"))
    }

    pub fn service() -> Result<Arc<Service>, ServerFnError> {
        Ok(ctx()?.service)
    }

    /// Who is signed in: the auth middleware put the account into the request's extensions.
    pub fn user() -> Option<User> {
        use_context::<http::request::Parts>().and_then(|p| p.extensions.get::<User>().cloned())
    }

    pub use orchestrator::domain::wire_name as words;

    /// A server fault: the cause goes to the log (its line names the request id), not to the browser.
    pub fn internal(e: impl std::fmt::Display) -> ServerFnError {
        tracing::error!(error = %e, "portal request failed");
        ServerFnError::new("The server could not complete this request; the server log has the cause.")
    }

    pub fn site(s: Site) -> &'static str {
        match s {
            Site::Primary => "on-premises",
            Site::Recovery => "Azure",
        }
    }

    pub fn refused_rows(op: Operation, rs: &[Refusal]) -> Vec<Refused> {
        rs.iter()
            .map(|r| Refused {
                operation: words(&op),
                rule: r.rule.clone(),
                message: r.message.clone(),
                action: r.recommended_action.clone(),
            })
            .collect()
    }

    pub fn attention_row(a: orchestrator::attention::Attention) -> AttentionRow {
        use orchestrator::attention::Clear;
        let (operation, link) = match a.clear {
            Some(Clear::Operation { operation }) => (Some(words(&operation)), None),
            Some(Clear::Job { job }) => (None, Some((format!("/jobs/{job}"), "Open the failed job".to_owned()))),
            Some(Clear::Infrastructure) => {
                (None, Some(("/infrastructure".to_owned(), "Open the infrastructure".to_owned())))
            }
            Some(Clear::Alerts) => (None, Some(("/alerts".to_owned(), "Open the alerts".to_owned()))),
            None => (None, None),
        };
        AttentionRow {
            kind: words(&a.kind),
            title: a.kind.title().to_owned(),
            detail: a.detail,
            critical: a.kind.critical(),
            operation,
            link,
        }
    }

    pub fn item_row(
        item: &ReplicatedItem,
        ops: &[(Operation, Vec<Refusal>)],
        active_job: Option<String>,
        rpo_breached: bool,
        now: u64,
    ) -> ItemRow {
        let latest = item.recovery_points.iter().max_by_key(|p| p.time);
        let direction = lifecycle::direction(item.state);
        ItemRow {
            id: item.id.clone(),
            name: item.name.clone(),
            machine: words(&item.machine),
            os: item.os.name.clone(),
            direction: direction.map(|(a, b)| format!("{} → {}", site(a), site(b))).unwrap_or_else(|| "—".into()),
            state: words(&item.state),
            health: words(&item.health),
            health_errors: item.health_errors.clone(),
            failed_job: item.last_failure.as_ref().map(|f| f.job.clone()),
            location: site(lifecycle::active_site(item.state)).into(),
            points: item.recovery_points.len(),
            latest_point: latest.map(|p| (words(&p.kind), p.time)),
            rpo_ms: direction.and(latest).map(|p| now.saturating_sub(p.time)),
            initial_sync_percent: item.initial_sync_percent,
            replication_group: item.replication_group.clone(),
            active_job,
            attention: orchestrator::attention::attention(item, ops, rpo_breached).map(attention_row),
            allowed: ops.iter().filter(|(_, r)| r.is_empty()).map(|(op, _)| words(op)).collect(),
            // The split-brain's two ways out are offered by its banner only, where the item is in one: a row needs
            // no sentence on why every other item is not.
            refused: ops
                .iter()
                .filter(|(op, _)| !op.resolves_split_brain())
                .flat_map(|(op, rs)| refused_rows(*op, rs))
                .collect(),
        }
    }

    /// The items table for every item, rebuilt when the estate file changes or after two seconds (ages and the
    /// agent's registration move with the clock). Thousands of items then cost a filter and a sort per request.
    /// (built at, estate version, rows).
    type Cached = (Instant, i64, Arc<Vec<ItemRow>>);
    static CACHE: Mutex<Option<Cached>> = Mutex::new(None);
    const FRESH: Duration = Duration::from_secs(2);

    pub async fn all_rows() -> Result<Arc<Vec<ItemRow>>, ServerFnError> {
        let s = service()?;
        let stamp = s.estate.version().await.map_err(internal)?;
        if let Some((at, key, rows)) = CACHE.lock().map_err(internal)?.as_ref() {
            if *key == stamp && at.elapsed() < FRESH {
                return Ok(rows.clone());
            }
        }
        let active = s.jobs.active_jobs_by_item().await.map_err(internal)?;
        let breached = s.alerts().open_subjects(AlertKind::RpoBreached).await.map_err(internal)?;
        let now = (s.clock)();
        let rows: Vec<ItemRow> = s
            .all_items()
            .await
            .map_err(internal)?
            .iter()
            .map(|(item, ops)| item_row(item, ops, active.get(&item.id).cloned(), breached.contains(&item.id), now))
            .collect();
        let rows = Arc::new(rows);
        *CACHE.lock().map_err(internal)? = Some((Instant::now(), stamp, rows.clone()));
        Ok(rows)
    }

    /// Forgets the cached table: an action just changed an item.
    pub fn invalidate() {
        if let Ok(mut c) = CACHE.lock() {
            *c = None;
        }
    }

    pub fn drill_row(d: orchestrator::drills::Drill) -> DrillRow {
        DrillRow {
            point_kind: words(&d.point.kind),
            point_id: d.point.id,
            point_time: d.point.time,
            point_age_ms: d.point_age_ms,
            id: d.id,
            item: d.item,
            item_name: d.item_name,
            vm: d.vm,
            host: d.host,
            network: d.network,
            started_at: d.started_at,
            time_to_power_on_ms: d.time_to_power_on_ms,
            checks: d
                .checks
                .into_iter()
                .map(|c| DrillCheckRow { name: c.name, passed: c.passed, detail: c.detail })
                .collect(),
            cleaned_at: d.cleaned_at,
            cleanup_job: d.cleanup_job,
            notes: d.notes,
            started_by: d.started_by,
            cleaned_by: d.cleaned_by,
            status: d.status.to_owned(),
        }
    }

    pub fn job_row(j: orchestrator::jobs::Job) -> JobRow {
        JobRow {
            allowed_actions: j.allowed_actions().iter().map(words).collect(),
            target_kind: if j.item_id.is_some() { "item".into() } else { "plan".into() },
            target: j.item_id.clone().or(j.plan_id.clone()).unwrap_or_default(),
            id: j.id,
            kind: j.kind,
            state: j.state.as_str().to_owned(),
            created_at: j.created_at,
            started_at: j.started_at,
            finished_at: j.finished_at,
            error: j.error,
            action: j.recommended_action,
            tasks: j
                .tasks
                .into_iter()
                .map(|t| {
                    let result = t.result.as_deref().and_then(|r| serde_json::from_str::<serde_json::Value>(r).ok());
                    TaskRow {
                        link: result.as_ref().and_then(|v| {
                            Some((v.get("agents")?.as_str()?.to_owned(), v.get("wire_bytes")?.as_u64().unwrap_or(0)))
                        }),
                        name: t.name,
                        state: t.state.as_str().to_owned(),
                        attempts: t.attempts,
                        bytes: t.bytes,
                        started_at: t.started_at,
                        finished_at: t.finished_at,
                        error: t.error,
                        action: t.recommended_action,
                        progress: t.progress,
                        next_attempt_at: t.next_attempt_at,
                        steps: result
                            .as_ref()
                            .and_then(|v| v.get("steps").and_then(|s| s.as_array()))
                            .map(|steps| {
                                steps
                                    .iter()
                                    .map(|s| {
                                        let n = |k: &str| s[k].as_u64().unwrap_or(0);
                                        (s["name"].as_str().unwrap_or_default().to_owned(), n("bytes"), n("ms"))
                                    })
                                    .collect()
                            })
                            .unwrap_or_default(),
                    }
                })
                .collect(),
        }
    }

    /// Process servers that can send data to Azure (on-premises ones), the others disabled with R-W4.
    pub async fn cloud_process_servers() -> Result<Vec<Choice>, ServerFnError> {
        // The inventory alone: no item's record (the items page and every item page ask for this).
        let doc = service()?.doc_of(&[]).await.map_err(internal)?;
        Ok(process_server_choices(&doc.inventory.process_servers, orchestrator::rules::r_w4_process_server_on_premises))
    }

    /// Every process server, disabled with the refusal of `rule` (R-W1 for reprotect, R-W4 for re-protect).
    pub fn process_server_choices(
        servers: &[orchestrator::domain::ProcessServer],
        rule: fn(&orchestrator::domain::ProcessServer) -> orchestrator::rules::Check,
    ) -> Vec<Choice> {
        servers
            .iter()
            .map(|p| Choice {
                id: p.id.clone(),
                label: format!("{} ({}, {} MiB/s)", p.id, site(p.site), p.bandwidth_bytes_per_s >> 20),
                disabled: refused(rule(p)),
                reach: vec![],
            })
            .collect()
    }

    /// A check's refusal as the wizard shows it: rule, sentence, what to do.
    pub fn refused(check: orchestrator::rules::Check) -> Option<String> {
        check.err().map(|r| format!("{}: {} {}", r.rule, r.message, r.recommended_action))
    }

    pub fn point_row(p: &orchestrator::domain::RecoveryPoint, latest: u64) -> PointRow {
        PointRow { id: p.id.clone(), kind: words(&p.kind), time: p.time, data_loss_ms: latest.saturating_sub(p.time) }
    }
}

/// The job as the portal shows it; the live-progress stream sends the same shape.
#[cfg(feature = "ssr")]
pub fn job_row(j: orchestrator::jobs::Job) -> JobRow {
    server::job_row(j)
}

#[server(endpoint = "portal/me", input = leptos::server_fn::codec::GetUrl)]
pub async fn whoami() -> Result<Option<Me>, ServerFnError> {
    use orchestrator::access::Permission;
    Ok(server::user().map(|u| Me {
        role: u.role.as_str().into(),
        role_title: u.role.title().into(),
        may_operate: u.role.may(Permission::Operate).is_ok(),
        may_administer: u.role.may(Permission::Administer).is_ok(),
        operate_denied: u.role.may(Permission::Operate).err().map(|d| d.to_string()),
        may_drill: u.role.may(Permission::TestFailover).is_ok(),
        drill_denied: u.role.may(Permission::TestFailover).err().map(|d| d.to_string()),
        name: u.name,
    }))
}

/// Why each operation an item does not allow now is refused: the first rule of each, with what to do. An items
/// table row's menu asks for it when it opens. An unknown item has none.
#[server(endpoint = "portal/items/refusals", input = leptos::server_fn::codec::GetUrl)]
pub async fn item_refusals(id: String) -> Result<Vec<Refused>, ServerFnError> {
    let all = server::all_rows().await?;
    Ok(all.iter().find(|r| r.id == id).map(|r| r.refused.clone()).unwrap_or_default())
}

/// One page of replicated items. `sort`: name, machine, os, state, health, location, latest, rpo.
#[server(endpoint = "portal/items", input = leptos::server_fn::codec::GetUrl)]
pub async fn list_items(
    q: String,
    state: String,
    health: String,
    sort: String,
    desc: bool,
    page: usize,
) -> Result<ItemPage, ServerFnError> {
    let all = server::all_rows().await?;
    let needle = q.trim().to_lowercase();
    let mut rows: Vec<&ItemRow> = all
        .iter()
        .filter(|r| {
            needle.is_empty()
                || r.name.to_lowercase().contains(&needle)
                || r.id.to_lowercase().contains(&needle)
                || r.os.to_lowercase().contains(&needle)
        })
        .filter(|r| state.is_empty() || r.state == state)
        .filter(|r| health.is_empty() || r.health == health)
        .collect();
    match sort.as_str() {
        "machine" => rows.sort_by(|a, b| a.machine.cmp(&b.machine).then(a.name.cmp(&b.name))),
        "os" => rows.sort_by(|a, b| a.os.cmp(&b.os).then(a.name.cmp(&b.name))),
        "state" => rows.sort_by(|a, b| a.state.cmp(&b.state).then(a.name.cmp(&b.name))),
        "health" => rows.sort_by(|a, b| a.health.cmp(&b.health).then(a.name.cmp(&b.name))),
        "location" => rows.sort_by(|a, b| a.location.cmp(&b.location).then(a.name.cmp(&b.name))),
        "latest" => rows.sort_by_key(|r| r.latest_point.as_ref().map(|p| p.1)),
        "rpo" => rows.sort_by_key(|r| r.rpo_ms),
        _ => rows.sort_by(|a, b| a.name.cmp(&b.name)),
    }
    if desc {
        rows.reverse();
    }
    let mut states: Vec<String> = all.iter().map(|r| r.state.clone()).collect();
    states.sort();
    states.dedup();
    let total = rows.len();
    let pages = total.div_ceil(PER_PAGE).max(1);
    let page = page.clamp(1, pages);
    Ok(ItemPage {
        // Without the refusals' texts: a row's menu asks for them when it opens (`item_refusals`).
        rows: rows
            .into_iter()
            .skip((page - 1) * PER_PAGE)
            .take(PER_PAGE)
            .map(|r| ItemRow { refused: Vec::new(), health_errors: Vec::new(), ..r.clone() })
            .collect(),
        total,
        vault_total: all.len(),
        page,
        per_page: PER_PAGE,
        states,
        process_servers_to_cloud: server::cloud_process_servers().await?,
    })
}

#[server(endpoint = "portal/item", input = leptos::server_fn::codec::GetUrl)]
pub async fn get_item(id: String) -> Result<Option<ItemDetail>, ServerFnError> {
    use orchestrator::estate::EstateError;
    use orchestrator::lifecycle;
    use orchestrator::service::ServiceError;
    use server::*;

    let s = service()?;
    let (item, ops) = match s.item(&id).await {
        Ok(x) => x,
        Err(ServiceError::Estate(EstateError::UnknownItem(_))) => return Ok(None),
        Err(e) => return Err(internal(e)),
    };
    // The inventory with this one item: the page needs no other item's record (a vault holds thousands).
    let doc = s.doc_of(std::slice::from_ref(&id)).await.map_err(internal)?;
    let inv = &doc.inventory;
    let now = (s.clock)();
    let active = s.jobs.active_job_for_item(&id).await.map_err(internal)?;
    let breached = s.alerts().open_subjects(AlertKind::RpoBreached).await.map_err(internal)?.contains(&id);
    let row = item_row(&item, &ops, active, breached, now);
    let latest = item.recovery_points.iter().map(|p| p.time).max().unwrap_or(0);
    let mut points: Vec<PointRow> = item.recovery_points.iter().map(|p| point_row(p, latest)).collect();
    points.sort_by_key(|p| std::cmp::Reverse(p.time));

    let mut choices: Vec<PointChoiceRow> = orchestrator::points::options(&item)
        .into_iter()
        .map(|o| {
            let (choice, label, note) = match &o.choice {
                orchestrator::points::PointChoice::KeptCopy(job) => {
                    let k = item.kept_copies.iter().find(|k| &k.job == job);
                    let site = match k.map(|k| k.site) {
                        Some(orchestrator::domain::Site::Primary) => "on-premises",
                        _ => "cloud",
                    };
                    (
                        format!("kept:{job}"),
                        format!("Latest, with the {site} copy's kept blocks"),
                        format!(
                            "The newest point with the {} blocks the {site} copy wrote during its split-brain (kept {}) \
                             laid over it: what that copy wrote comes back; elsewhere the disks are the point's (SB-3).",
                            k.map_or(0, |k| k.blocks),
                            k.map_or(String::new(), |k| crate::ui::fmt_time(k.kept_at))
                        ),
                    )
                }
                orchestrator::points::PointChoice::LatestAppConsistent => (
                    "latest-app-consistent".to_owned(),
                    "Latest app-consistent".to_owned(),
                    if o.data_loss_ms == 0 {
                        "The newest point is app-consistent: no writes are lost against the latest point.".to_owned()
                    } else {
                        format!(
                            "Applications were quiesced at this point; writes of the last {} are lost (R-RP4).",
                            crate::ui::fmt_duration(o.data_loss_ms)
                        )
                    },
                ),
                _ => (
                    "latest-processed".to_owned(),
                    "Latest processed".to_owned(),
                    format!(
                        "The newest point already processed: no wait ({}; R-RP1, R-RP4).",
                        words(&o.point.kind).replace('-', " ")
                    ),
                ),
            };
            PointChoiceRow {
                choice,
                label,
                point: Some(point_row(&o.point, latest)),
                note,
            }
        })
        .collect();
    if !item.recovery_points.is_empty() {
        choices.insert(
            1,
            PointChoiceRow {
                choice: "latest".into(),
                label: "Latest".into(),
                point: None,
                note: "Processes the data still pending first (one more replication cycle), then fails over to that \
                       new point: the least data lost, a little more time."
                    .into(),
            },
        );
    }

    let onprem_ds = |d: &str| d.to_owned();
    let disks = match &item.onprem {
        Some(vm) => vm
            .disks
            .iter()
            .map(|d| DiskRow { name: d.id.clone(), size_bytes: d.size_bytes, datastore: onprem_ds(&d.datastore) })
            .collect(),
        None => Vec::new(),
    };

    let location = lifecycle::location_for(&item);
    let alternate = location == lifecycle::Location::Alternate;
    // The wizard offers what the rules allow; a disabled choice carries the refusal the dry run would give.
    use orchestrator::rules;
    let master_targets = inv
        .master_targets
        .iter()
        .filter(|m| rules::r_w1_master_target_matches_os(&item, m).is_ok())
        .map(|m| Choice {
            id: m.id.clone(),
            label: format!("{} ({} on {})", m.id, words(&m.os), m.host),
            disabled: refused(rules::r_c2_master_target_has_no_snapshots(m)),
            reach: vec![m.host.clone()],
        })
        .collect();
    let datastores = inv
        .datastores
        .iter()
        .map(|d| {
            let check = rules::datastore_has_room(d, if alternate { item.disk_bytes } else { 0 }).and_then(|()| {
                if alternate {
                    rules::r_l9_alternate_location_needs_vmfs(d)
                } else {
                    Ok(())
                }
            });
            Choice {
                id: d.id.clone(),
                label: format!("{} ({}, {} GiB free)", d.id, words(&d.kind).to_uppercase(), d.free_bytes >> 30),
                disabled: refused(check),
                reach: d.hosts.clone(),
            }
        })
        .collect();
    let reprotect = ReprotectOptions {
        location: words(&location),
        master_targets,
        process_servers: process_server_choices(&inv.process_servers, rules::r_w1_process_server_in_recovery),
        datastores,
        master_target_hosts: inv.master_targets.iter().map(|m| (m.id.clone(), m.host.clone())).collect(),
    };

    let mut props = vec![
        ("Name".to_owned(), item.name.clone()),
        ("Machine type".into(), crate::pages::machine_label(&words(&item.machine)).into()),
        ("Operating system".into(), item.os.name.clone()),
        ("Protection state".into(), crate::ui::words(&words(&item.state))),
        ("Replication direction".into(), row.direction.clone()),
        ("Active location".into(), row.location.clone()),
        ("Configuration server".into(), item.original_configuration_server.clone()),
        (
            "vCenter".into(),
            item.original_vcenter.clone().unwrap_or_else(|| "none (standalone host or physical)".into()),
        ),
        (
            "Cloud disks".into(),
            match item.cloud_vm.as_ref() {
                Some(vm) if vm.deleted => "deleted with the cloud VM".into(),
                Some(vm) => match &vm.storage_account {
                    Some(account) => format!("page blobs {} in storage account {account}", vm.blobs.join(", ")),
                    None => "files of the local estate".into(),
                },
                None => "—".into(),
            },
        ),
        ("Master target".into(), item.master_target.clone().unwrap_or_else(|| "—".into())),
        ("Process server".into(), item.process_server.clone().unwrap_or_else(|| "—".into())),
        ("Replication group".into(), item.replication_group.clone().unwrap_or_else(|| "—".into())),
        (
            "Original location".into(),
            match &item.onprem {
                Some(vm) if vm.exists => format!("{} on {}", vm.id, vm.host),
                Some(vm) => format!("{} (deleted on-premises)", vm.id),
                None => "none (re-created at an alternate location)".into(),
            },
        ),
    ];
    if item.state == lifecycle::State::CommittedOnPrimary || item.booted_at.is_some() {
        props.push((
            "Agent".into(),
            if item.agent_registered {
                "registered with the configuration server".into()
            } else {
                "not registered yet".into()
            },
        ));
    }
    let cloud_vm = item.cloud_vm.as_ref().filter(|v| !v.deleted).map(|v| (v.id.clone(), v.resource_group.clone()));
    let item_jobs: Vec<orchestrator::jobs::Job> = s.jobs.list_for_item(&id, 20).await.map_err(internal)?;
    // A running reprotect: how far its initial replication should be, by the dry run's estimate.
    let initial_sync = item_jobs.iter().find(|j| !j.state.is_terminal() && j.kind == "reprotect").and_then(|j| {
        let req: orchestrator::service::JobRequest = serde_json::from_str(&j.request).ok()?;
        let task = j.tasks.iter().find(|t| t.step == "initial-replication")?;
        let started = task.started_at?;
        Some(InitialSync {
            job: j.id.clone(),
            reported: task.progress.map(|(done, total)| (done, total, task.bytes.max(0) as u64)),
            elapsed_s: now.saturating_sub(started) / 1000,
            bytes_to_move: req.plan.bytes_to_move,
            eta_s: req.plan.eta_seconds,
        })
    });
    let jobs: Vec<JobRow> = item_jobs.into_iter().map(job_row).collect();
    let drills: Vec<DrillRow> =
        s.drills().list(Some(&id), 5).await.map_err(internal)?.into_iter().map(drill_row).collect();
    let drill = item.drill.as_ref().and_then(|live| drills.iter().find(|d| d.id == live.id).cloned());
    let policy = s.estate.policy().await.map_err(internal)?;
    let p = item.protection;
    let protection = ProtectionView {
        retention_min: p.retention_min,
        app_consistent_every_min: p.app_consistent_every_min,
        rpo_threshold_min: p.rpo_threshold_min,
        effective_retention_min: p.retention_ms() / 60_000,
        effective_app_consistent_every_min: p.app_consistent_every_ms(policy.app_consistent_every_ms) / 60_000,
        effective_rpo_threshold_min: p.rpo_threshold_ms() / 60_000,
        rpo_breached: row.rpo_ms.is_some_and(|r| r > p.rpo_threshold_ms()),
    };
    let networks = network_choices(inv);
    Ok(Some(ItemDetail {
        row,
        properties: props,
        disks,
        points,
        choices,
        jobs,
        reprotect,
        cloud_vm,
        cloud_process_servers: cloud_process_servers().await?,
        initial_sync,
        drill,
        networks,
        drills,
        protection,
        split_brain: item.split_brain.as_ref().filter(|_| item.state == lifecycle::State::SplitBrain).map(|sb| {
            SplitBrainView {
                detected_at: sb.detected_at,
                cause: if sb.intruder == orchestrator::domain::Site::Primary {
                    "the on-premises VM was powered on outside Homeward while the item was protected to on-premises"
                } else {
                    "the cloud VM was started again after the failback, before commit"
                }
                .into(),
                cloud_last_write_at: sb.cloud_last_write_at,
                onprem_last_write_at: sb.onprem_last_write_at,
            }
        }),
        kept_copies: item
            .kept_copies
            .iter()
            .map(|k| KeptCopyView {
                job: k.job.clone(),
                site: if k.site == orchestrator::domain::Site::Primary { "on-premises" } else { "cloud" }.into(),
                kept_at: k.kept_at,
                reason: k.reason.clone(),
                blocks: k.blocks,
                bytes: k.bytes,
                files: k.files.clone(),
            })
            .collect(),
        verification: item.verification.as_ref().map(|v| VerificationView {
            job: v.job.clone(),
            finished_at: v.finished_at,
            blocks: v.blocks,
            bytes_read: v.bytes_read,
            mismatched_blocks: v.mismatched_blocks,
            damaged_disks: v.damaged_disks.clone(),
            repaired_at: v.repaired_at,
        }),
    }))
}

/// Jobs, newest first. `since`: `1h`, `24h`, `7d` or empty for all.
#[server(endpoint = "portal/jobs", input = leptos::server_fn::codec::GetUrl)]
pub async fn list_jobs(
    item: String,
    plan: String,
    state: String,
    kind: String,
    since: String,
    page: usize,
) -> Result<JobPage, ServerFnError> {
    use server::*;
    let s = service()?;
    let now = (s.clock)();
    let window = match since.as_str() {
        "1h" => Some(3_600_000),
        "24h" => Some(86_400_000),
        "7d" => Some(7 * 86_400_000),
        _ => None,
    };
    let rows: Vec<JobRow> = s
        .jobs
        .list(5000)
        .await
        .map_err(internal)?
        .into_iter()
        .filter(|j| item.is_empty() || j.item_id.as_deref() == Some(item.as_str()))
        .filter(|j| plan.is_empty() || j.plan_id.as_deref() == Some(plan.as_str()))
        .filter(|j| state.is_empty() || j.state.as_str() == state)
        .filter(|j| kind.is_empty() || j.kind == kind)
        .filter(|j| window.is_none_or(|w| j.created_at + w >= now))
        .map(job_row)
        .collect();
    let total = rows.len();
    let page = page.clamp(1, total.div_ceil(PER_PAGE).max(1));
    Ok(JobPage {
        rows: rows.into_iter().skip((page - 1) * PER_PAGE).take(PER_PAGE).collect(),
        total,
        page,
        per_page: PER_PAGE,
    })
}

#[server(endpoint = "portal/job", input = leptos::server_fn::codec::GetUrl)]
pub async fn get_job(id: String) -> Result<Option<JobRow>, ServerFnError> {
    let s = server::service()?;
    match s.jobs.get(&id).await {
        Ok(j) => Ok(Some(server::job_row(j))),
        Err(orchestrator::jobs::JobError::NotFound(_)) => Ok(None),
        Err(e) => Err(server::internal(e)),
    }
}

/// The job's story for its page: title in words, who started it and why, the point and data loss chosen, and once it
/// has ended what its item allows next.
#[server(endpoint = "portal/job-story", input = leptos::server_fn::codec::GetUrl)]
pub async fn get_job_story(id: String) -> Result<Option<JobStory>, ServerFnError> {
    use orchestrator::service::JobRequest;
    let c = server::ctx()?;
    let j = match c.service.jobs.get(&id).await {
        Ok(j) => j,
        Err(orchestrator::jobs::JobError::NotFound(_)) => return Ok(None),
        Err(e) => return Err(server::internal(e)),
    };
    let (log, _) = c.accounts.audit_log(None, Some(&id), 20, 0).await.map_err(server::internal)?;
    let started = log.into_iter().find(|e| e.outcome == "started" && e.job_id.as_deref() == Some(id.as_str()));
    let what = {
        let w = j.kind.replace('-', " ");
        let mut chars = w.chars();
        chars.next().map(|f| f.to_uppercase().chain(chars).collect::<String>()).unwrap_or_default()
    };
    let target = match (&j.item_id, &j.plan_id) {
        (Some(item), _) => item.clone(),
        (None, Some(plan)) => {
            let doc = c.service.doc().await.map_err(server::internal)?;
            doc.plans.iter().find(|p| &p.id == plan).map_or_else(|| plan.clone(), |p| p.name.clone())
        }
        _ => String::new(),
    };
    let request = serde_json::from_str::<JobRequest>(&j.request).ok();
    let point = request.as_ref().and_then(|r| r.plan.point.as_ref()).map(|p| {
        format!("{} point of {}", server::words(&p.kind).replace('-', " "), orchestrator::domain::utc_text(p.time))
    });
    let mut next = Vec::new();
    if j.state.is_terminal() {
        if let Some(item) = &j.item_id {
            if let Ok((_, ops)) = c.service.item(item).await {
                next = ops.iter().filter(|(_, why)| why.is_empty()).map(|(op, _)| server::words(op)).collect();
            }
        }
    }
    Ok(Some(JobStory {
        title: format!("{what} of {target}"),
        started_by: started.as_ref().map(|e| format!("{} ({})", e.user_name, e.role)),
        reason: started.and_then(|e| e.reason),
        point,
        data_loss_ms: request.as_ref().and_then(|r| r.plan.data_loss_ms),
        next,
        item: j.item_id.clone(),
    }))
}

#[server(endpoint = "portal/plans", input = leptos::server_fn::codec::GetUrl)]
pub async fn list_plans() -> Result<Vec<PlanRow>, ServerFnError> {
    use server::*;
    let s = service()?;
    let doc = s.doc().await.map_err(internal)?;
    let all = all_rows().await?;
    let mut out = Vec::new();
    for p in doc.plans {
        out.push(plan_row(&s, &all, p, false).await?);
    }
    Ok(out)
}

#[server(endpoint = "portal/plan", input = leptos::server_fn::codec::GetUrl)]
pub async fn get_plan(id: String) -> Result<Option<PlanRow>, ServerFnError> {
    use server::*;
    let s = service()?;
    let doc = s.doc().await.map_err(internal)?;
    let Some(p) = doc.plans.iter().find(|p| p.id == id).cloned() else { return Ok(None) };
    let members: std::collections::HashSet<&String> = p.groups.iter().flatten().collect();
    let drilled = doc.items.iter().filter(|r| members.contains(&r.item.id) && r.item.drill.is_some()).count();
    let networks = network_choices(&doc.inventory);
    let inv = &doc.inventory;
    let master_targets = |os: orchestrator::domain::OsFamily| {
        inv.master_targets
            .iter()
            .filter(|m| m.os == os)
            .map(|m| Choice {
                id: m.id.clone(),
                label: format!("{} (on {})", m.id, m.host),
                disabled: refused(orchestrator::rules::r_c2_master_target_has_no_snapshots(m)),
                reach: vec![m.host.clone()],
            })
            .collect()
    };
    let reprotect = PlanReprotectOptions {
        windows_master_targets: master_targets(orchestrator::domain::OsFamily::Windows),
        linux_master_targets: master_targets(orchestrator::domain::OsFamily::Linux),
        process_servers: process_server_choices(
            &inv.process_servers,
            orchestrator::rules::r_w1_process_server_in_recovery,
        ),
        datastores: inv
            .datastores
            .iter()
            .map(|d| Choice {
                id: d.id.clone(),
                label: format!("{} ({}, {} GiB free)", d.id, words(&d.kind).to_uppercase(), d.free_bytes >> 30),
                disabled: None,
                reach: d.hosts.clone(),
            })
            .collect(),
    };
    let all = all_rows().await?;
    let mut row = plan_row(&s, &all, p, true).await?;
    row.networks = networks;
    row.drilled = drilled;
    row.reprotect = reprotect;
    Ok(Some(row))
}

/// The networks a test VM may join: the isolated ones; a production one is shown, disabled, with the reason.
#[cfg(feature = "ssr")]
fn network_choices(inv: &orchestrator::domain::Inventory) -> Vec<Choice> {
    inv.networks
        .iter()
        .map(|n| Choice {
            id: n.id.clone(),
            label: format!("{}{}", n.id, if n.isolated { " (isolated)" } else { " (production)" }),
            disabled: (!n.isolated).then(|| {
                "a production network: the copy would answer for the real VM; an Administrator can mark an isolated \
                 one on the Infrastructure page"
                    .to_owned()
            }),
            reach: Vec::new(),
        })
        .collect()
}

#[cfg(feature = "ssr")]
async fn plan_row(
    s: &orchestrator::service::Service,
    all: &[ItemRow],
    p: orchestrator::estate::RecoveryPlan,
    detail: bool,
) -> Result<PlanRow, ServerFnError> {
    use orchestrator::points::{plan_points, PointChoice};
    use server::*;
    let groups = p
        .groups
        .iter()
        .map(|g| g.iter().filter_map(|id| all.iter().find(|r| &r.id == id).cloned()).collect())
        .collect();
    let mut choices = Vec::new();
    let mut jobs = Vec::new();
    if detail {
        let doc = s.doc().await.map_err(internal)?;
        let now = (s.clock)();
        let items = p
            .groups
            .iter()
            .flatten()
            .map(|id| s.estate.view(&doc, id, now))
            .collect::<Result<Vec<_>, _>>()
            .map_err(internal)?;
        let refs: Vec<_> = items.iter().collect();
        for (choice, code, label) in [
            (PointChoice::LatestProcessed, "latest-processed", "Latest processed"),
            (PointChoice::LatestAppConsistent, "latest-app-consistent", "Latest app-consistent"),
        ] {
            let (points, refused) = match plan_points(&refs, &choice) {
                Ok(pts) => (pts.into_iter().map(|(i, pt)| (i, pt.id, pt.time)).collect(), None),
                Err(r) => (
                    Vec::new(),
                    Some(Refused {
                        operation: "failover".into(),
                        rule: r.rule,
                        message: r.message,
                        action: r.recommended_action,
                    }),
                ),
            };
            choices.push(PlanChoiceRow { choice: code.into(), label: label.into(), points, refused });
        }
        jobs = s
            .jobs
            .list(500)
            .await
            .map_err(internal)?
            .into_iter()
            .filter(|j| j.plan_id.as_deref() == Some(p.id.as_str()))
            .take(20)
            .map(job_row)
            .collect();
    }
    let reprotect = PlanReprotectOptions::default();
    let protection = PlanProtection {
        retention_min: p.protection.retention_min,
        app_consistent_every_min: p.protection.app_consistent_every_min,
        rpo_threshold_min: p.protection.rpo_threshold_min,
    };
    Ok(PlanRow {
        id: p.id,
        name: p.name,
        groups,
        choices,
        jobs,
        networks: Vec::new(),
        drilled: 0,
        reprotect,
        protection,
    })
}

#[server(endpoint = "portal/infrastructure", input = leptos::server_fn::codec::GetUrl)]
pub async fn infrastructure() -> Result<InfraView, ServerFnError> {
    use server::*;
    let s = service()?;
    let doc = s.doc().await.map_err(internal)?;
    let inv = &doc.inventory;
    let real: std::collections::HashSet<String> = s
        .connections
        .vcenters()
        .await
        .map_err(internal)?
        .into_iter()
        .flat_map(|(_, v)| v.datastores.into_iter().map(|d| d.name))
        .collect();
    let yes = |b: bool| if b { "yes".to_owned() } else { "no".to_owned() };
    let cols = |c: &[&str]| c.iter().map(|x| x.to_string()).collect::<Vec<_>>();
    let networks = inv
        .networks
        .iter()
        .map(|n| NetworkRow { name: n.id.clone(), isolated: n.isolated, vcenter: n.vcenter.clone() })
        .collect();
    let sections = vec![
        Section {
            title: "Configuration server".into(),
            columns: cols(&["Name", "IP address", "Registered machines"]),
            rows: inv
                .configuration_server
                .iter()
                .map(|c| vec![c.id.clone(), c.ip_address.clone(), c.registered_vms.len().to_string()])
                .collect(),
        },
        Section {
            title: "vCenter servers".into(),
            columns: cols(&["Name", "Connected", "Configuration server"]),
            rows: inv
                .vcenters
                .iter()
                .map(|v| vec![v.id.clone(), yes(v.connected), v.configuration_server.clone()])
                .collect(),
        },
        Section {
            title: "ESXi hosts".into(),
            columns: cols(&["Name", "vCenter", "Hypervisor", "Discovered"]),
            rows: inv
                .hosts
                .iter()
                .map(|h| {
                    vec![
                        h.id.clone(),
                        h.vcenter.clone().unwrap_or("standalone".into()),
                        words(&h.hypervisor),
                        yes(h.discovered),
                    ]
                })
                .collect(),
        },
        Section {
            title: "Datastores".into(),
            columns: cols(&["Name", "Type", "Reachable from", "Free"]),
            rows: inv
                .datastores
                .iter()
                .map(|d| {
                    vec![
                        d.id.clone(),
                        words(&d.kind).to_uppercase(),
                        d.hosts.join(", "),
                        format!("{} GiB", d.free_bytes >> 30),
                    ]
                })
                .collect(),
        },
        Section {
            title: "Master targets".into(),
            columns: cols(&["Name", "OS", "Host", "Snapshots"]),
            rows: inv
                .master_targets
                .iter()
                .map(|m| vec![m.id.clone(), words(&m.os), m.host.clone(), m.snapshots.to_string()])
                .collect(),
        },
        Section {
            title: "Process servers".into(),
            columns: cols(&["Name", "Site", "Rate"]),
            rows: inv
                .process_servers
                .iter()
                .map(|p| vec![p.id.clone(), site(p.site).into(), format!("{} MiB/s", p.bandwidth_bytes_per_s >> 20)])
                .collect(),
        },
    ];
    Ok(InfraView {
        sections,
        networks,
        // The demo's "fill a datastore" switch acts on the local estate's datastores, not on a real vCenter's.
        datastores: inv
            .datastores
            .iter()
            .filter(|d| !real.contains(&d.id))
            .map(|d| (d.id.clone(), d.free_bytes == 0))
            .collect(),
        items: doc.items.iter().map(|r| r.item.id.clone()).collect(),
        vcenter_connected: inv.vcenters.iter().all(|v| v.connected),
        master_target_snapshots: inv.master_targets.iter().map(|m| m.snapshots).max().unwrap_or(0),
        agent_registration_delay_min: doc.faults.agent_registration_delay_min,
    })
}

#[server(endpoint = "portal/agents", input = leptos::server_fn::codec::GetUrl)]
pub async fn agents() -> Result<AgentsView, ServerFnError> {
    let c = server::ctx()?;
    let now = (c.service.clock)();
    let list = c.agents.list(now).await.map_err(server::internal)?;
    let rows = list
        .into_iter()
        .map(|a| AgentRow {
            id: a.id,
            name: a.name,
            role: a.role.title().into(),
            site: a.site.as_str().into(),
            state: server::words(&a.state),
            state_title: a.state.title().into(),
            last_heartbeat_at: a.last_heartbeat_at,
            version: a.version,
            disks: a.inventory.as_ref().map_or(0, |i| i.disks.len()),
            free_bytes: a.inventory.as_ref().map(|i| i.free_bytes),
            rate_cap: a.max_bytes_per_s,
            streams: a.activity.streams,
            throughput: a.activity.throughput_bytes_per_s,
        })
        .collect();
    Ok(AgentsView { rows, ca_fingerprint: c.ca_fingerprint })
}

/// The site connections with what their APIs last reported.
#[server(endpoint = "portal/connections", input = leptos::server_fn::codec::GetUrl)]
pub async fn connections() -> Result<Vec<ConnectionRow>, ServerFnError> {
    use orchestrator::connections::{Connection, Snapshot};
    let c = server::ctx()?;
    let list = c.service.connections.list().await.map_err(server::internal)?;
    let row = |k: Connection| {
        let mut r = ConnectionRow {
            id: k.id,
            kind: k.kind.title().into(),
            name: k.name,
            url: k.url,
            detail: k
                .user
                .map(|u| format!("as {u}"))
                .or(k.container.map(|c| format!("container {c}")))
                .unwrap_or_default(),
            credential: match k.credential.as_str() {
                "shared-key" => "account key".into(),
                "sas" => "SAS".into(),
                "client-secret" => "client secret".into(),
                other => other.into(),
            },
            thumbprint: k.thumbprint,
            checked_at: k.checked_at,
            last_ok_at: k.last_ok_at,
            last_error: k.last_error,
            summary: String::new(),
            hosts: vec![],
            datastores: vec![],
            vms: vec![],
            blobs: vec![],
            cloud_vms: vec![],
        };
        match k.inventory {
            Some(Snapshot::Vcenter { about, inventory: i }) => {
                r.summary = format!(
                    "{}: {} datacenter{}, {} cluster{}, {} host{}, {} datastore{}, {} VM{}",
                    about.full_name,
                    i.datacenters.len(),
                    plural(i.datacenters.len()),
                    i.clusters.len(),
                    plural(i.clusters.len()),
                    i.hosts.len(),
                    plural(i.hosts.len()),
                    i.datastores.len(),
                    plural(i.datastores.len()),
                    i.vms.len(),
                    plural(i.vms.len())
                );
                r.hosts = i
                    .hosts
                    .into_iter()
                    .map(|h| (h.name, h.cluster.unwrap_or_default(), h.connection_state, h.maintenance))
                    .collect();
                r.datastores = i
                    .datastores
                    .into_iter()
                    .map(|d| (d.name, d.kind, d.free_bytes, d.capacity_bytes, d.accessible))
                    .collect();
                r.vms = i.vms.into_iter().map(|v| (v.name, v.power, v.host.unwrap_or_default(), v.disks)).collect();
            }
            Some(Snapshot::StorageAccount { account, blobs, blob_count }) => {
                let n = blob_count.max(blobs.len());
                r.summary = format!("storage account {account}: {n} disk blob{} in the container", plural(n));
                r.blobs = blobs;
            }
            Some(Snapshot::AzureSubscription { subscription, resource_group, vms }) => {
                r.summary = format!(
                    "subscription {subscription}, resource group {resource_group}: {} VM{}",
                    vms.len(),
                    plural(vms.len())
                );
                r.cloud_vms = vms.into_iter().map(|v| (v.name, v.provisioning_state, v.disks)).collect();
            }
            None => {}
        }
        r
    };
    Ok(list.into_iter().map(row).collect())
}

#[cfg(feature = "ssr")]
fn plural(n: usize) -> &'static str {
    if n == 1 {
        ""
    } else {
        "s"
    }
}

#[server(endpoint = "portal/audit", input = leptos::server_fn::codec::GetUrl)]
pub async fn audit_log(user: String, target: String, page: usize) -> Result<AuditPage, ServerFnError> {
    let acc = server::ctx()?.accounts;
    let page = page.max(1);
    let (entries, total) = acc
        .audit_log(
            Some(user.as_str()).filter(|u| !u.is_empty()),
            Some(target.as_str()).filter(|t| !t.is_empty()),
            PER_PAGE as i64,
            ((page - 1) * PER_PAGE) as i64,
        )
        .await
        .map_err(server::internal)?;
    Ok(AuditPage {
        rows: entries
            .into_iter()
            .map(|e| AuditRow {
                at: e.at,
                user: e.user_name,
                role: e.role,
                action: e.action,
                target: e.target,
                reason: e.reason,
                job_id: e.job_id,
                outcome: e.outcome,
                detail: e.detail,
            })
            .collect(),
        total,
        page,
        per_page: PER_PAGE,
    })
}

#[server(endpoint = "portal/overview", input = leptos::server_fn::codec::GetUrl)]
pub async fn overview() -> Result<OverviewData, ServerFnError> {
    use server::*;
    let s = service()?;
    let all = all_rows().await?;
    let count = |f: &dyn Fn(&ItemRow) -> String| {
        let mut v: Vec<(String, usize)> = Vec::new();
        for r in all.iter() {
            let k = f(r);
            match v.iter_mut().find(|(s, _)| *s == k) {
                Some((_, n)) => *n += 1,
                None => v.push((k, 1)),
            }
        }
        v.sort();
        v
    };
    let alerts = s.alerts().list(false, 1000).await.map_err(internal)?;
    // Every kind that needs a person, each item once with its first reason (orchestrator::attention).
    let attention: Vec<(String, String)> = all
        .iter()
        .filter_map(|r| r.attention.as_ref().map(|a| (r.id.clone(), format!("{}: {}", a.title, a.detail))))
        .collect();
    let needing_attention = attention.len();
    let attention = attention.into_iter().take(20).collect();
    let running =
        s.jobs.list(200).await.map_err(internal)?.into_iter().filter(|j| !j.state.is_terminal()).map(job_row).collect();
    // RPO over the last two hours, from the recovery points: at each moment, the age of the newest point then.
    const WINDOW_MIN: u32 = 120;
    let now = (s.clock)();
    // Only the records of the (at most 12) items the chart shows.
    let charted: Vec<String> = all.iter().filter(|r| r.rpo_ms.is_some()).take(12).map(|r| r.id.clone()).collect();
    let doc = s.doc_of(&charted).await.map_err(internal)?;
    let mut rpo = Vec::new();
    for id in &charted {
        let Ok(item) = s.estate.view(&doc, id, now) else { continue };
        let mut times: Vec<u64> = item.recovery_points.iter().map(|p| p.time).collect();
        times.sort_unstable();
        let series = (0..=WINDOW_MIN)
            .rev()
            .filter_map(|ago| {
                let t = now.saturating_sub(ago as u64 * 60_000);
                let newest = times.iter().rev().find(|p| **p <= t)?;
                Some((ago, (t - newest) / 1000))
            })
            .collect();
        rpo.push(RpoSeries {
            item: id.clone(),
            samples: series,
            threshold_s: item.protection.rpo_threshold_ms() / 1000,
        });
    }
    let last_drill =
        s.drills().list(None, 1).await.map_err(internal)?.into_iter().next().map(|d| (d.id, d.item_name, d.started_at));
    let critical = alerts.iter().filter(|a| a.severity == orchestrator::domain::Health::Critical).count();
    Ok(OverviewData {
        open_alerts: (alerts.len(), critical),
        last_drill,
        now,
        total: all.len(),
        by_state: count(&|r| r.state.clone()),
        by_health: count(&|r| r.health.clone()),
        attention,
        needing_attention,
        running,
        rpo,
        rpo_window_min: WINDOW_MIN,
    })
}
