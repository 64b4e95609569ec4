//! A replicated item's page and its dialogs: the reprotect wizard (R-W1), confirm failover (R-W2), commit (R-W3),
//! cancel failover, and re-protect to Azure (R-W4), alone or for several selected items.

use leptos::prelude::*;
use leptos_meta::Title;
use leptos_router::hooks::{use_navigate, use_params_map};

use crate::actions::{DryRun, ReprotectMany, ReprotectManyDryRun, SetProtection, StartAction};
use crate::data;
use crate::model::*;
use crate::pages::{job_table, op_label, why_not, ITEM_OPERATIONS};
use crate::ui::*;
use crate::MeResource;

#[component]
pub(crate) fn ItemPage() -> impl IntoView {
    let params = use_params_map();
    let me = expect_context::<MeResource>();
    let id = Memo::new(move |_| params.read().get("id").unwrap_or_default());
    let item = Resource::new(move || id.get(), data::get_item);
    let action = query_param("action");
    let dialogs: [(&'static str, RwSignal<bool>); 11] = ITEM_OPERATIONS.map(|op| (op, RwSignal::new(false)));
    // `?action=failover` (the row menu's links) opens that dialog once the page is interactive.
    Effect::new(move |_| {
        let a = action.get();
        if let Some((_, open)) = dialogs.iter().find(|(op, _)| *op == a) {
            open.set(true);
        }
    });
    let open_of = move |op: &str| dialogs.iter().find(|(o, _)| *o == op).map(|(_, s)| *s).expect("known dialog");
    view! {
        <Title text="Replicated item · Homeward"/>
        <Suspense fallback=|| loading("the replicated item")>
            {move || Suspend::new(async move {
                let me = me.await.ok().flatten();
                let Some(d) = item.await? else {
                    return Ok::<_, ServerFnError>(view! {
                        <h1>"Replicated item not found"</h1>
                        <p>"No item has this id in the vault. Check the link, or open "<a href="/replicated-items">"Replicated items"</a>"."</p>
                    }.into_any());
                };
                let r = d.row.clone();
                let may = me.as_ref().is_some_and(|m| m.may_operate);
                let denied = me.as_ref().and_then(|m| m.operate_denied.clone()).unwrap_or_default();
                Ok(view! {
                    <h1>{r.name.clone()}" "<small>{state_badge(&r.state)}</small></h1>
                    // What needs a person, with the one action that clears it (split-brain has its own panel below).
                    {r.attention.clone().filter(|a| a.kind != "split-brain").map(|a| {
                        let severity = if a.critical { "critical" } else { "waiting" };
                        let action = match (a.operation.as_deref().and_then(|op| ITEM_OPERATIONS.into_iter().find(|o| *o == op)), a.link.clone()) {
                            (Some(op), _) if may => {
                                let open = open_of(op);
                                Some(view! { <button type="button" class=op_class(op) data-testid="attention-action" on:click=move |_| open.set(true)>{format!("{}…", op_label(op))}</button> }.into_any())
                            }
                            (Some(_), _) => Some(view! { <span class="muted small">{denied.clone()}</span> }.into_any()),
                            (None, Some((href, text))) => Some(view! { <a data-testid="attention-action" href=href>{text}</a> }.into_any()),
                            (None, None) => None,
                        };
                        view! {
                            <section class=format!("panel banner {severity}") role="status" data-testid="attention" data-kind=a.kind.clone()>
                                <p><span class=format!("status {severity}")><span class="status-icon" aria-hidden="true">{if a.critical { "!" } else { "i" }}</span>{a.title.clone()}</span>" "{a.detail.clone()}</p>
                                {action.map(|v| view! { <p>{v}</p> })}
                            </section>
                        }
                    })}
                    <div class="toolbar" role="toolbar" aria-label="Operations" data-testid="item-toolbar">
                        {ITEM_OPERATIONS.into_iter().map(|op| {
                            let open = open_of(op);
                            match why_not(&r, op, me.as_ref()) {
                                Some(why) => {
                                    view! { <span class="op-wrap"><button type="button" disabled=true data-op=op title=why.line() aria-describedby=format!("why-{op}")>{op_label(op)}</button><span class="tooltip" role="tooltip" id=format!("why-{op}")>{why.line()}</span></span> }.into_any()
                                }
                                None => view! { <button type="button" class=op_class(op) data-op=op on:click=move |_| open.set(true)>{op_label(op)}</button> }.into_any(),
                            }
                        }).collect_view()}
                    </div>
                    {(!may).then(|| view! { <p class="why-inline" data-testid="role-note">{denied.clone()}</p> })}
                    // The reasons in the open, for keyboards and touch screens (a disabled button takes no focus and
                    // a phone cannot hover): one per operation, the first that applies, with its rule's link.
                    {
                        let reasons: Vec<(&'static str, crate::pages::WhyNot)> = ITEM_OPERATIONS.into_iter().filter_map(|op| why_not(&r, op, me.as_ref()).filter(|w| w.rule.is_some()).map(|w| (op, w))).collect();
                        (!reasons.is_empty()).then(|| view! {
                            <details class="why-not" data-testid="why-not">
                                <summary>{format!("Why {} of {} operations are not available now", reasons.len(), ITEM_OPERATIONS.len())}</summary>
                                <ul>{reasons.into_iter().map(|(op, w)| view! {
                                    <li data-op=op><strong>{op_label(op)}</strong>": "{w.reason.clone()}" "{w.rule.clone().map(rule_link)}
                                        {(w.more > 0).then(|| view! { <span class="muted small">{format!(" ({} more once this is met)", w.more)}</span> })}</li>
                                }).collect_view()}</ul>
                            </details>
                        })
                    }
                    <crate::split_brain::SplitBrainPanel d=d.clone() may=may denied=denied.clone()/>
                    {r.active_job.clone().map(|j| view! { <p class="notice">"A job is running on this item: "<a href=format!("/jobs/{j}")>{j.clone()}</a></p> })}
                    {d.initial_sync.clone().map(|sync| {
                        // Measured progress when the worker has reported it; the dry run's estimate until then.
                        let (pct, text) = match sync.reported {
                            Some((done, total, sent)) if total > 0 => {
                                let rate = done as f64 / sync.elapsed_s.max(1) as f64;
                                let left = ((total - done.min(total)) as f64 / rate.max(1.0)) as u64;
                                (done * 100 / total, format!("{} of {} examined, {} sent · about {} left", fmt_bytes(done), fmt_bytes(total), fmt_bytes(sent), fmt_duration(left * 1000)))
                            }
                            _ => {
                                let eta = sync.eta_s.unwrap_or(0).max(1);
                                ((sync.elapsed_s * 100 / eta).min(99), format!("{} to move · about {} left (estimated from the process server's rate)", fmt_bytes(sync.bytes_to_move), fmt_duration(eta.saturating_sub(sync.elapsed_s) * 1000)))
                            }
                        };
                        view! {
                            <section class="panel" data-testid="initial-sync"><h2>"Initial replication"</h2>
                                <progress max="100" value=pct>{format!("{pct} %")}</progress>" "{format!("{pct} % · {text}")}
                                <p><a href=format!("/jobs/{}", sync.job)>"Follow the job live"</a></p>
                            </section>
                        }
                    })}
                    <div class="cards">
                        <section class="panel card"><h2>"Properties"</h2>
                            <dl class="props">{d.properties.iter().map(|(k, v)| view! { <dt>{k.clone()}</dt><dd>{v.clone()}</dd> }).collect_view()}</dl>
                        </section>
                        <section class="panel card"><h2>"Health"</h2>
                            <p class=format!("health {}", r.health)>{r.health.clone()}</p>
                            {if r.health_errors.is_empty() { view! { <p class="muted">"No replication errors."</p> }.into_any() } else {
                                view! { <ul>{r.health_errors.iter().map(|e| view! { <li>{e.clone()}</li> }).collect_view()}</ul> }.into_any()
                            }}
                            {r.failed_job.clone().map(|j| view! { <p><a data-testid="failed-job" href=format!("/jobs/{j}")>"Open the failed job to restart it"</a></p> })}
                            <p>"RPO now: "<strong>{r.rpo_ms.map(fmt_duration).unwrap_or_else(|| "— (not replicating)".into())}</strong></p>
                        </section>
                    </div>
                    <section class="panel"><h2>"Disks"</h2>
                        {if d.disks.is_empty() { view! { <p class="muted">"No on-premises disks (the VM is re-created at an alternate location by reprotect)."</p> }.into_any() } else {
                            view! { <table class="grid compact"><thead><tr><th scope="col">"Disk"</th><th scope="col">"Size"</th><th scope="col">"Datastore"</th></tr></thead><tbody>
                                {d.disks.iter().map(|k| view! { <tr><td>{k.name.clone()}</td><td>{fmt_bytes(k.size_bytes)}</td><td>{k.datastore.clone()}</td></tr> }).collect_view()}
                            </tbody></table> }.into_any()
                        }}
                    </section>
                    <section class="panel"><h2>{format!("Recovery points ({})", d.points.len())}</h2>
                        {if d.points.is_empty() { view! { <p class="muted">"No recovery point yet: failback needs one (R-RP3)."</p> }.into_any() } else {
                            view! { <div class="table-wrap scroll" tabindex="0" role="region" aria-label="Recovery points"><table class="grid compact" data-testid="points"><thead><tr><th scope="col">"Time"</th><th scope="col">"Type"</th><th scope="col">"Data lost against the latest"</th><th scope="col">"Id"</th></tr></thead><tbody>
                                {d.points.iter().take(50).map(|p| view! { <tr><td>{fmt_time(p.time)}</td><td>{words(&p.kind)}</td><td>{if p.data_loss_ms == 0 { "none (latest)".into() } else { fmt_duration(p.data_loss_ms) }}</td><td><code>{p.id.clone()}</code></td></tr> }).collect_view()}
                            </tbody></table></div> }.into_any()
                        }}
                    </section>
                    <ProtectionPanel d=d.clone() may=may changed=Callback::new(move |()| item.refetch())/>
                    {crate::drills::drill_panel(&d)}
                    {crate::split_brain::kept_copies_panel(&d)}
                    {verification_panel(&d)}
                    <section class="panel"><h2>"Jobs"</h2>{job_table(d.jobs.clone())}<p><a href=format!("/jobs?item={}", r.id)>"All jobs of this item"</a></p></section>
                    <ReprotectWizard open=open_of("reprotect") d=d.clone()/>
                    <FailoverDialog open=open_of("failover") d=d.clone() op="failover"/>
                    <FailoverDialog open=open_of("change-recovery-point") d=d.clone() op="change-recovery-point"/>
                    <ConfirmDialog open=open_of("commit") d=d.clone() op="commit" title="Commit failback"
                        warning=match &d.cloud_vm {
                            Some((vm, rg)) => format!("Commit deletes the cloud VM {vm} in resource group {rg}, with its disks, in Azure (R-W3). It cannot be undone. Afterwards {} runs only on-premises, unprotected until you re-protect it to Azure.", r.name),
                            None => "Commit removes the failed-over copy in Azure (R-W3).".into(),
                        }
                        confirm="Delete the cloud VM and commit"/>
                    <ConfirmDialog open=open_of("cancel-failover") d=d.clone() op="cancel-failover" title="Cancel failover"
                        warning=format!("Cancel failover shuts down the on-premises VM of {}, restarts the cloud VM, and resumes replication from Azure: what the on-premises VM wrote since the failback is overwritten by the next replication cycle. Nothing is deleted in Azure.", r.name)
                        confirm="Cancel the failover"/>
                    <ConfirmDialog open=open_of("reprotect-to-cloud") d=d.clone() op="reprotect-to-cloud" title="Re-protect to Azure"
                        warning=format!("Starts replicating {} from on-premises to Azure (R-W4). Its agent must be registered with the configuration server (R-A1).", r.name)
                        confirm="Re-protect"/>
                    <ConfirmDialog open=open_of("failover-to-cloud") d=d.clone() op="failover-to-cloud" title="Failover to Azure"
                        warning=format!("Shuts down the on-premises VM of {} and starts it in Azure from the newest processed recovery point of the replication to Azure (R-W4). What the on-premises VM wrote after that point is not in Azure.", r.name)
                        confirm="Fail over to Azure"/>
                    <ConfirmDialog open=open_of("commit-in-cloud") d=d.clone() op="commit-in-cloud" title="Commit in Azure"
                        warning=format!("Commits the failover of {} to Azure: the replication disks it was started from are deleted, and its recovery points with them. Afterwards reprotect brings it back under protection to on-premises.", r.name)
                        confirm="Commit"/>
                    <crate::drills::TestFailoverDialog open=open_of("test-failover") d=d.clone()/>
                    <ConfirmDialog open=open_of("cleanup-test-failover") d=d.clone() op="cleanup-test-failover" title="Clean up test failover"
                        warning=match &d.drill {
                            Some(l) => format!("Powers off and deletes the test VM {} and its disks on {}. The drill's report stays, with the notes below. Production is not touched.", l.vm, l.host),
                            None => "There is no test VM to clean up.".into(),
                        }
                        confirm="Delete the test VM" notes=true/>
                    <ConfirmDialog open=open_of("verify-replica") d=d.clone() op="verify-replica" title="Verify the on-premises replica"
                        warning=format!("Reads every block of {}'s on-premises replica and compares it with the hash its last replication cycle recorded. Nothing is written; replication waits while it reads. If a block differs, the item turns critical, an alert opens, and the next cycle compares the whole replica with the cloud copy and rewrites what differs.", r.name)
                        confirm="Verify"/>
                }.into_any())
            })}
        </Suspense>
    }
}

/// A minutes field: empty is the vault's default.
fn minutes_field(label: &'static str, name: &'static str, value: RwSignal<Option<u32>>, default: u64) -> impl IntoView {
    view! {
        <label class="block">{label}
            <input type="number" min="1" name=name placeholder=format!("default: {default}")
                prop:value=move || value.get().map(|v| v.to_string()).unwrap_or_default()
                on:input=move |ev| value.set(event_target_value(&ev).trim().parse().ok())/>
        </label>
    }
}

/// How the item's points are kept and taken, and its RPO threshold; an Operator changes them here.
#[component]
fn ProtectionPanel(d: ItemDetail, may: bool, changed: Callback<()>) -> impl IntoView {
    let p = d.protection.clone();
    let retention = RwSignal::new(p.retention_min);
    let app = RwSignal::new(p.app_consistent_every_min);
    let rpo = RwSignal::new(p.rpo_threshold_min);
    let save = ServerAction::<SetProtection>::new();
    Effect::new(move |_| {
        if let Some(Ok(())) = save.value().get() {
            changed.run(());
        }
    });
    let id = d.row.id.clone();
    let shown = |chosen: Option<u32>, effective: u64| match chosen {
        Some(m) => fmt_duration(u64::from(m) * 60_000),
        None => format!("{} (vault default)", fmt_duration(effective * 60_000)),
    };
    view! {
        <section class="panel" data-testid="protection"><h2>"Protection"</h2>
            <dl class="props">
                <dt>"Recovery points kept"</dt><dd data-testid="retention">{shown(p.retention_min, p.effective_retention_min)}</dd>
                <dt>"App-consistent point every"</dt><dd>{shown(p.app_consistent_every_min, p.effective_app_consistent_every_min)}</dd>
                <dt>"RPO threshold"</dt><dd>{shown(p.rpo_threshold_min, p.effective_rpo_threshold_min)}
                    {p.rpo_breached.then(|| view! { <strong class="loss" data-testid="rpo-breached">" · breached now"</strong> })}</dd>
            </dl>
            {may.then(|| view! {
                <details><summary>"Change (minutes; empty is the vault's default)"</summary>
                    <div class="form-grid">
                        {minutes_field("Keep recovery points for", "retention_min", retention, p.effective_retention_min)}
                        {minutes_field("App-consistent point every", "app_consistent_every_min", app, p.effective_app_consistent_every_min)}
                        {minutes_field("Alert when the RPO exceeds", "rpo_threshold_min", rpo, p.effective_rpo_threshold_min)}
                    </div>
                    {move || save.value().get().map(|r| match r { Ok(()) => view! { <p class="notice">"Saved: the next replication cycle applies it."</p> }.into_any(), Err(e) => portal_error(&e) })}
                    <div class="actions"><button type="button" class="primary" data-testid="save-protection" disabled=move || save.pending().get()
                        on:click=move |_| { save.dispatch(SetProtection { id: id.clone(), retention_min: retention.get(), app_consistent_every_min: app.get(), rpo_threshold_min: rpo.get() }); }>
                        "Save"
                    </button></div>
                </details>
            })}
        </section>
    }
}

/// Starts the action and goes to its job page; shared by every dialog.
pub(crate) fn start_action() -> ServerAction<StartAction> {
    let act = ServerAction::<StartAction>::new();
    let navigate = use_navigate();
    Effect::new(move |_| {
        if let Some(Ok(job)) = act.value().get() {
            navigate(&format!("/jobs/{job}"), Default::default());
        }
    });
    act
}

pub(crate) fn reason_field(reason: RwSignal<String>) -> impl IntoView {
    view! {
        <label class="block">"Reason (recorded in the audit log)"
            <textarea name="reason" rows="2" required=true placeholder="e.g. datacenter power restored; change CHG-1234"
                prop:value=move || reason.get() on:input=move |ev| reason.set(event_target_value(&ev))></textarea>
        </label>
    }
}

pub(crate) fn dry_run_view(v: DryRunView) -> impl IntoView {
    view! {
        <section class="dry-run" data-testid="dry-run" aria-live="polite">
            <h3>{if v.allowed { "Dry run: every check passed" } else { "Dry run: refused" }}</h3>
            <dl class="props">
                {v.location.clone().map(|l| view! { <dt>"Location"</dt><dd data-testid="dry-location">{format!("{l} location")}</dd> })}
                {v.location_note.clone().map(|n| view! { <dt>"Why"</dt><dd>{n}</dd> })}
                {v.transfer.clone().map(|t| view! { <dt>"Transfer"</dt><dd>{words(&t)}</dd> })}
                // Only an operation that copies between the sites moves data (not a failover, a commit or a drill).
                {v.transfer.is_some().then(|| view! {
                    <dt>"Data to move"</dt><dd data-testid="dry-bytes">{fmt_bytes(v.bytes_to_move)}</dd>
                    <dt>"Estimated time"</dt><dd>{v.eta_seconds.map(|s| fmt_duration(s * 1000)).unwrap_or_else(|| "—".into())}</dd>
                })}
                {v.target_host.clone().map(|h| view! { <dt>"Target host"</dt><dd>{h}</dd> })}
                {v.target_datastore.clone().map(|h| view! { <dt>"Target datastore"</dt><dd>{h}</dd> })}
            </dl>
            <ul class="checks">
                {v.checks.into_iter().map(|c| view! {
                    <li class=if c.passed { "pass" } else { "fail" }>
                        <span aria-hidden="true">{if c.passed { "✓ " } else { "✗ " }}</span>
                        {c.check.clone()}" "{rule_link(c.rule.clone())}
                        {(!c.passed).then(|| view! { <div>{c.message.clone()}" "<em class="todo">{c.action.clone()}</em></div> })}
                    </li>
                }).collect_view()}
            </ul>
            <details><summary>{format!("The job's {} tasks", v.tasks.len())}</summary><ol>{v.tasks.into_iter().map(|t| view! { <li>{t}</li> }).collect_view()}</ol></details>
        </section>
    }
}

pub(crate) fn select(
    label: &'static str,
    name: &'static str,
    choices: Vec<Choice>,
    value: RwSignal<String>,
) -> impl IntoView {
    view! {
        <label class="block">{label}
            <select name=name on:change=move |ev| value.set(event_target_value(&ev)) prop:value=move || value.get()>
                <option value="">"choose…"</option>
                {choices.into_iter().map(|c| {
                    let why = c.disabled.clone();
                    view! { <option value=c.id.clone() disabled=why.is_some() title=why.clone().unwrap_or_default()>{c.label.clone()}{why.clone().map(|w| format!(" — {w}"))}</option> }
                }).collect_view()}
            </select>
        </label>
    }
}

/// R-W1: master target matching the VM's OS, a process server in Azure, a reachable datastore; then the dry run.
#[component]
fn ReprotectWizard(open: RwSignal<bool>, d: ItemDetail) -> impl IntoView {
    let mt = RwSignal::new(String::new());
    let ps = RwSignal::new(String::new());
    let ds = RwSignal::new(String::new());
    let retention = RwSignal::new(d.protection.retention_min);
    let app = RwSignal::new(d.protection.app_consistent_every_min);
    let rpo = RwSignal::new(d.protection.rpo_threshold_min);
    let reason = RwSignal::new(String::new());
    let key = RwSignal::new(String::new());
    let ack = RwSignal::new(false);
    let dry = ServerAction::<DryRun>::new();
    let act = start_action();
    let id = d.row.id.clone();
    let opts = d.reprotect.clone();
    let defaults = d.protection.clone();
    // The dry run answers for the choices it was made with: a change makes it stale.
    Effect::new(move |_| {
        mt.track();
        ps.track();
        ds.track();
        retention.track();
        app.track();
        rpo.track();
        dry.value().set(None);
    });
    Effect::new(move |_| {
        if open.get() {
            key.set(new_key());
            ack.set(false);
            dry.value().set(None);
        }
    });
    let input = move || ActionInput {
        master_target: Some(mt.get()),
        process_server: Some(ps.get()),
        datastore: Some(ds.get()),
        retention_min: retention.get(),
        app_consistent_every_min: app.get(),
        rpo_threshold_min: rpo.get(),
        ..ActionInput::default()
    };
    let hosts = opts.master_target_hosts.clone();
    let all_ds = opts.datastores.clone();
    // Every datastore, those the chosen master target's host cannot reach disabled with that reason (not hidden:
    // the operator looking for one sees why it is not offered).
    let reachable = Memo::new(move |_| {
        let host = hosts.iter().find(|(m, _)| *m == mt.get()).map(|(_, h)| h.clone());
        all_ds
            .iter()
            .map(|c| match &host {
                Some(h) if !c.reach.contains(h) && c.disabled.is_none() => {
                    Choice { disabled: Some(format!("not reachable from {h}, the host of {}", mt.get())), ..c.clone() }
                }
                _ => c.clone(),
            })
            .collect::<Vec<_>>()
    });
    // A datastore chosen before the master target changed, that its host cannot reach, is chosen no more.
    Effect::new(move |_| {
        let list = reachable.get();
        if list.iter().any(|c| c.id == ds.get_untracked() && c.disabled.is_some()) {
            ds.set(String::new());
        }
    });
    let (id2, id3) = (id.clone(), id.clone());
    let location = opts.location.clone();
    view! {
        <Modal open=open title=format!("Reprotect {} to on-premises", d.row.name) id="reprotect-dialog">
            <p class="direction">"Direction: "<strong>"from Azure → on-premises"</strong>". "
                {if location == "original" { "The original VM still exists: original location recovery, only changes move (R-L1)." } else { "No original VM to return to: alternate location recovery, the VM is re-created and its disks fully downloaded first (R-L2, R-L10). This takes longer." }}
            </p>
            <div class="form-grid">
                {select("Master target (matching the VM's OS)", "master_target", opts.master_targets.clone(), mt)}
                {select("Process server (in Azure)", "process_server", opts.process_servers.clone(), ps)}
                {move || select("Datastore (reachable from the master target's host)", "datastore", reachable.get(), ds)}
            </div>
            <details class="protection-choices"><summary>"Recovery points and RPO alert (minutes; empty is the vault's default)"</summary>
                <div class="form-grid">
                    {minutes_field("Keep recovery points for", "retention_min", retention, defaults.effective_retention_min)}
                    {minutes_field("App-consistent point every", "app_consistent_every_min", app, defaults.effective_app_consistent_every_min)}
                    {minutes_field("Alert when the RPO exceeds", "rpo_threshold_min", rpo, defaults.effective_rpo_threshold_min)}
                </div>
            </details>
            {reason_field(reason)}
            <div class="actions">
                <button type="button" data-testid="review" disabled=move || mt.get().is_empty() || ps.get().is_empty() || ds.get().is_empty() || dry.pending().get()
                    on:click=move |_| { dry.dispatch(DryRun { id: id2.clone(), op: "reprotect".into(), input: input() }); }>
                    {move || if dry.pending().get() { "Checking…" } else { "Review (dry run)" }}
                </button>
            </div>
            {move || dry.value().get().map(|r| match r { Ok(v) => dry_run_view(v).into_any(), Err(e) => portal_error(&e) })}
            {acknowledgement("reprotect", ack)}
            {move || act.value().get().and_then(|r| r.err()).map(|e| portal_error(&e))}
            <div class="actions">
                <button type="button" on:click=move |_| open.set(false)>"Cancel"</button>
                <button type="button" class=confirm_class("reprotect") data-testid="confirm"
                    disabled=move || !dry.value().get().is_some_and(|r| r.is_ok_and(|v| v.allowed)) || !acknowledged("reprotect", ack) || reason.get().trim().is_empty() || act.pending().get()
                    on:click=move |_| { act.dispatch(StartAction { id: id3.clone(), op: "reprotect".into(), input: input(), reason: reason.get(), key: key.get() }); }>
                    {move || if act.pending().get() { "Starting…" } else { "Start reprotect" }}
                </button>
            </div>
        </Modal>
    }
}

/// R-W2: the direction spelled out, the recovery point with its time and data-loss window (R-RP4), the
/// acknowledgement that the cloud VM shuts down, and the reason. The same dialog changes the recovery point of a
/// failback that is not committed yet.
#[component]
fn FailoverDialog(open: RwSignal<bool>, d: ItemDetail, op: &'static str) -> impl IntoView {
    let change = op == "change-recovery-point";
    let drill = d.drill.clone().filter(|_| !change);
    let choice = RwSignal::new("latest-processed".to_owned());
    let specific = RwSignal::new(String::new());
    let ack = RwSignal::new(false);
    let reason = RwSignal::new(String::new());
    let key = RwSignal::new(String::new());
    let act = start_action();
    Effect::new(move |_| {
        if open.get() {
            key.set(new_key());
            ack.set(false);
        }
    });
    let id = d.row.id.clone();
    // The choices and points as they are now: read again every 5 s while the dialog is open, so that a point taken
    // meanwhile is offered, and the data loss said is the one the failover will have.
    let live = RwSignal::new((d.choices.clone(), d.points.clone()));
    #[cfg(feature = "hydrate")]
    {
        let id = id.clone();
        let refresh = move || {
            if !open.get_untracked() {
                return;
            }
            let id = id.clone();
            leptos::task::spawn_local(async move {
                if let Ok(Some(d)) = crate::data::get_item(id).await {
                    if live.get_untracked() != (d.choices.clone(), d.points.clone()) {
                        live.set((d.choices, d.points));
                    }
                }
            });
        };
        if let Ok(handle) = set_interval_with_handle(refresh, std::time::Duration::from_secs(5)) {
            on_cleanup(move || handle.clear());
        }
    }
    let cloud = d
        .cloud_vm
        .clone()
        .map(|(vm, rg)| format!("{vm} (resource group {rg})"))
        .unwrap_or_else(|| "the cloud VM".into());
    let point = move || if choice.get() == "specific" { specific.get() } else { choice.get() };
    view! {
        <Modal open=open title=format!("{}: {}", if change { "Change recovery point" } else { "Confirm failover" }, d.row.name) id=format!("{op}-dialog")>
            <p class="direction" data-testid="direction">"Failover direction: "<strong>"from Azure → on-premises"</strong>
                {if change { " (the failback is not committed yet: the on-premises VM restarts from another point)." } else { " (unplanned failover of the failback)." }}</p>
            {drill.map(|l| view! { <p class="warning" data-testid="drill-first">{format!("A test failover exists: its VM {} on network {} is powered off and deleted first, as the failover's first tasks. Its report stays.", l.vm, l.network)}</p> })}
            <fieldset>
                <legend>"Recovery point"</legend>
                {move || live.get().0.into_iter().map(|c| {
                    let (v, v2) = (c.choice.clone(), c.choice.clone());
                    view! {
                        <label class="choice" data-choice=c.choice.clone()>
                            <input type="radio" name=format!("{op}-point") value=c.choice.clone() prop:checked=move || choice.get() == v on:change=move |_| choice.set(v2.clone())/>
                            <strong>{c.label.clone()}</strong>
                            {c.point.clone().map(|p| view! { <span class="muted" data-testid="point-time">{format!(" · {} · {}", fmt_time(p.time), words(&p.kind))}</span>{if p.data_loss_ms == 0 { view! { <span>" · no data lost against the latest point"</span> }.into_any() } else { view! { <span class="loss">{format!(" · loses the last {}", fmt_duration(p.data_loss_ms))}</span> }.into_any() }} })}
                            <div class="muted small">{c.note.clone()}</div>
                        </label>
                    }
                }).collect_view()}
                {move || {
                    let pts = live.get().1;
                    (!pts.is_empty()).then(|| view! {
                        <label class="choice">
                            <input type="radio" name=format!("{op}-point") value="specific" prop:checked=move || choice.get() == "specific" on:change=move |_| choice.set("specific".into())/>
                            <strong>"A specific point"</strong>
                            <select aria-label="Recovery point" on:change=move |ev| { specific.set(event_target_value(&ev)); choice.set("specific".into()); }>
                                <option value="">"choose…"</option>
                                {pts.into_iter().map(|p| { let id = p.id.clone(); view! { <option value=p.id.clone() selected=move || specific.get() == id>{format!("{} · {} · loses {}", fmt_time(p.time), words(&p.kind), if p.data_loss_ms == 0 { "nothing".into() } else { fmt_duration(p.data_loss_ms) })}</option> } }).collect_view()}
                            </select>
                        </label>
                    })
                }}
            </fieldset>
            // Said again beside the button, from the points as they are now.
            <p data-testid="loss-now" aria-live="polite">{move || {
                let (choices, points) = live.get();
                let chosen = if choice.get() == "specific" {
                    points.into_iter().find(|p| p.id == specific.get())
                } else {
                    choices.into_iter().find(|c| c.choice == choice.get()).and_then(|c| c.point)
                };
                match chosen {
                    Some(p) if p.data_loss_ms == 0 => format!("Starts from {} ({}): nothing lost against the latest point.", fmt_time(p.time), words(&p.kind)),
                    Some(p) => format!("Starts from {} ({}): loses the last {} written in Azure.", fmt_time(p.time), words(&p.kind), fmt_duration(p.data_loss_ms)),
                    None => "Choose a recovery point.".to_owned(),
                }
            }}</p>
            <label class="check"><input type="checkbox" data-testid="ack" prop:checked=move || ack.get() on:change=move |ev| ack.set(event_target_checked(&ev))/>
                {if change {
                    " I understand that the on-premises VM restarts from the chosen recovery point and loses what it wrote since the failback.".to_owned()
                } else {
                    format!(" I understand that {cloud} will be shut down, and that the on-premises VM starts from the chosen recovery point.")
                }}</label>
            {reason_field(reason)}
            {move || act.value().get().and_then(|r| r.err()).map(|e| portal_error(&e))}
            <div class="actions">
                <button type="button" on:click=move |_| open.set(false)>"Cancel"</button>
                <button type="button" class="primary danger" data-testid="confirm"
                    disabled=move || !ack.get() || reason.get().trim().is_empty() || point().is_empty() || act.pending().get()
                    on:click=move |_| { act.dispatch(StartAction { id: id.clone(), op: op.into(), input: ActionInput { point: Some(point()), ..ActionInput::default() }, reason: reason.get(), key: key.get() }); }>
                    {move || if act.pending().get() { "Starting…" } else if change { "Change the recovery point" } else { "Fail over" }}
                </button>
            </div>
        </Modal>
    }
}

/// Commit, cancel failover and re-protect: what will happen (and be deleted) in words, the dry run's checks and
/// tasks, a reason, and the confirmation.
#[component]
pub(crate) fn ConfirmDialog(
    open: RwSignal<bool>,
    d: ItemDetail,
    op: &'static str,
    title: &'static str,
    #[prop(into)] warning: String,
    confirm: &'static str,
    /// A notes field for the drill's report (the cleanup of a test failover).
    #[prop(optional)]
    notes: bool,
) -> impl IntoView {
    let note = RwSignal::new(String::new());
    let reason = RwSignal::new(String::new());
    let key = RwSignal::new(String::new());
    let ps = RwSignal::new(String::new());
    let ack = RwSignal::new(false);
    let dry = ServerAction::<DryRun>::new();
    let act = start_action();
    let id = d.row.id.clone();
    let id2 = id.clone();
    let needs_ps = op == "reprotect-to-cloud";
    // Choosing a split-brain's winner: the reason goes to the core too (SB-2), kept with the loser's blocks.
    let resolves = matches!(op, "keep-cloud-copy" | "keep-on-premises-copy");
    let input = move || ActionInput {
        process_server: needs_ps.then(|| ps.get()),
        notes: notes.then(|| note.get()),
        // Untracked: the dry run follows the reason's presence (below), not every keystroke.
        reason: resolves.then(|| reason.get_untracked()),
        ..ActionInput::default()
    };
    let id3 = id2.clone();
    Effect::new(move |_| {
        if open.get() {
            key.set(new_key());
            ack.set(false);
            dry.dispatch(DryRun { id: id2.clone(), op: op.into(), input: input() });
        }
    });
    // The dry run again once a split-brain's reason is typed (or erased): its SB-2 check depends on it.
    let has_reason = Memo::new(move |_| !reason.get().trim().is_empty());
    Effect::new(move |before: Option<bool>| {
        let now = has_reason.get();
        if resolves && before.is_some_and(|b| b != now) && open.get_untracked() {
            dry.dispatch(DryRun { id: id3.clone(), op: op.into(), input: input() });
        }
        now
    });
    let choices = d.cloud_process_servers.clone();
    view! {
        <Modal open=open title=format!("{title}: {}", d.row.name) id=format!("{op}-dialog")>
            <p class="warning" data-testid="warning">{warning}</p>
            {needs_ps.then(|| select("Process server (on-premises, sends data to Azure)", "process_server", choices.clone(), ps))}
            {notes.then(|| view! {
                <label class="block">"Notes for the drill report: what worked, what did not"
                    <textarea name="notes" rows="3" maxlength="4000" placeholder="e.g. the application answered on the isolated network; logins worked"
                        prop:value=move || note.get() on:input=move |ev| note.set(event_target_value(&ev))></textarea>
                </label>
            })}
            {move || dry.value().get().map(|r| match r { Ok(v) => dry_run_view(v).into_any(), Err(e) => portal_error(&e) })}
            {acknowledgement(op, ack)}
            {reason_field(reason)}
            {move || act.value().get().and_then(|r| r.err()).map(|e| portal_error(&e))}
            <div class="actions">
                <button type="button" on:click=move |_| open.set(false)>"Keep it as it is"</button>
                <button type="button" class=confirm_class(op) data-testid="confirm"
                    disabled=move || !acknowledged(op, ack) || reason.get().trim().is_empty() || act.pending().get() || (needs_ps && ps.get().is_empty())
                    on:click=move |_| { act.dispatch(StartAction { id: id.clone(), op: op.into(), input: input(), reason: reason.get(), key: key.get() }); }>
                    {move || if act.pending().get() { "Starting…".to_owned() } else { confirm.to_owned() }}
                </button>
            </div>
        </Modal>
    }
}

/// R-W4 for several items at once: one process server, one reason, one job per item.
#[component]
pub(crate) fn BulkReprotect(
    open: RwSignal<bool>,
    selected: RwSignal<Vec<String>>,
    choices: Vec<Choice>,
) -> impl IntoView {
    let ps = RwSignal::new(String::new());
    let reason = RwSignal::new(String::new());
    let key = RwSignal::new(String::new());
    let dry = ServerAction::<ReprotectManyDryRun>::new();
    let act = ServerAction::<ReprotectMany>::new();
    Effect::new(move |_| {
        if open.get() {
            key.set(new_key());
            act.value().set(None);
            dry.value().set(None);
        }
    });
    // The dry run answers for the items and the process server it was made with: a change makes it stale.
    Effect::new(move |_| {
        selected.track();
        ps.track();
        dry.value().set(None);
    });
    // The items the dry run passed: only those start.
    let ready = move || -> Vec<String> {
        dry.value()
            .get()
            .and_then(|r| r.ok())
            .map(|rows| rows.into_iter().filter(|r| r.allowed).map(|r| r.id).collect())
            .unwrap_or_default()
    };
    view! {
        <Modal open=open title="Re-protect selected items to Azure" id="bulk-dialog">
            <p>"Items: "<strong>{move || selected.get().join(", ")}</strong></p>
            {select("Process server (on-premises, sends data to Azure)", "process_server", choices.clone(), ps)}
            <p><button type="button" data-testid="bulk-review" disabled=move || ps.get().is_empty() || dry.pending().get()
                on:click=move |_| { dry.dispatch(ReprotectManyDryRun { ids: selected.get(), process_server: ps.get() }); }>
                {move || if dry.pending().get() { "Reviewing…" } else { "Review" }}</button>
                <span class="muted small">" Each item's checks and the data it moves, before anything starts."</span></p>
            {move || dry.value().get().map(|r| match r {
                Ok(rows) => view! {
                    <div class="table-wrap" tabindex="0" role="region" aria-label="Dry run of each item" aria-live="polite">
                        <table class="grid compact" data-testid="bulk-dry-run">
                            <thead><tr><th scope="col">"Item"</th><th scope="col">"Dry run"</th><th scope="col">"Data to move"</th><th scope="col">"Estimated time"</th></tr></thead>
                            <tbody>{rows.into_iter().map(|r| view! {
                                <tr data-item=r.id.clone()>
                                    <th scope="row">{r.id.clone()}</th>
                                    <td>{match r.why_not.clone() {
                                        None => view! { <span class="badge succeeded">"ready"</span> }.into_any(),
                                        Some(w) => view! { <span class="badge failed">"refused"</span>" "{w.message}" "<em class="todo">{w.action}</em>" "{rule_link(w.rule)} }.into_any(),
                                    }}</td>
                                    <td>{if r.allowed { fmt_bytes(r.bytes_to_move) } else { "—".into() }}</td>
                                    <td>{r.eta_seconds.filter(|_| r.allowed).map(|s| fmt_duration(s * 1000)).unwrap_or_else(|| "—".into())}</td>
                                </tr>
                            }).collect_view()}</tbody>
                        </table>
                    </div>
                }.into_any(),
                Err(e) => portal_error(&e),
            })}
            {reason_field(reason)}
            {move || act.value().get().map(|r| match r {
                Ok(rows) => view! { <ul class="results" data-testid="bulk-results">{rows.into_iter().map(|(id, r)| match r {
                    Ok(job) => view! { <li>{id}": job "<a href=format!("/jobs/{job}")>{job.clone()}</a></li> }.into_any(),
                    Err(e) => view! { <li class="why-inline">{id}": "{e}</li> }.into_any(),
                }).collect_view()}</ul> }.into_any(),
                Err(e) => portal_error(&e),
            })}
            <div class="actions">
                <button type="button" on:click=move |_| open.set(false)>"Close"</button>
                <button type="button" class="primary" disabled=move || ready().is_empty() || reason.get().trim().is_empty() || act.pending().get() || act.value().get().is_some()
                    title="Review first: only the items whose dry run passed start"
                    on:click=move |_| { act.dispatch(ReprotectMany { ids: ready(), process_server: ps.get(), reason: reason.get(), key: key.get() }); }>
                    {move || match (dry.value().get().is_some(), ready().len()) {
                        (false, _) => "Re-protect (review first)".to_owned(),
                        (true, n) => format!("Re-protect {n} item(s) that passed"),
                    }}
                </button>
            </div>
        </Modal>
    }
}

/// The last verification of the on-premises replica: when, what it read, and whether it found damage that the next
/// cycle has yet to rewrite.
fn verification_panel(d: &ItemDetail) -> impl IntoView {
    d.verification.clone().map(|v| {
        let (class, words) = match (v.damaged_disks.is_empty(), v.repaired_at) {
            (true, _) => ("health normal", format!("Intact: {} blocks compared, {} read.", v.blocks, fmt_bytes(v.bytes_read))),
            (false, None) => ("health critical", format!("Damaged: {} block(s) on {} differ from their recorded hashes. The next replication cycle rewrites them from the cloud copy; fail back only after it has run.", v.mismatched_blocks, v.damaged_disks.join(", "))),
            (false, Some(at)) => ("health warning", format!("{} block(s) differed on {}; rewritten from the cloud copy by the cycle of {}. Verify again to confirm.", v.mismatched_blocks, v.damaged_disks.join(", "), fmt_time(at))),
        };
        view! {
            <section class="panel" data-testid="verification"><h2>"Replica verification"</h2>
                <p class=class>{words}</p>
                <p class="muted">"Last verified "<a href=format!("/jobs/{}", v.job)>{fmt_time(v.finished_at)}</a></p>
            </section>
        }
    })
}
