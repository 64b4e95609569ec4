//! A recovery plan's reprotect, commit and cancel failover, from the plan page: each asks for a reason and says what
//! it does to every item; commit, which deletes every cloud VM, names them and is styled as the irreversible step it
//! is; the reprotect's dry run lists each item's master target and data to move.

use leptos::prelude::*;

use crate::actions::PlanOperate;
use crate::model::*;
use crate::ui::*;

/// The items of the plan that do not allow `op` now, with why (the first refusal of each).
fn not_ready(plan: &PlanRow, op: &str) -> Vec<String> {
    plan.groups
        .iter()
        .flatten()
        .filter(|i| !i.allowed.iter().any(|a| a == op))
        .map(|i| match i.refused.iter().find(|r| r.operation == op) {
            Some(r) => format!("{}: {}", i.name, r.message),
            None => format!("{}: not possible now", i.name),
        })
        .collect()
}

#[component]
pub(crate) fn PlanCommit(plan: PlanRow, may: bool, denied: String) -> impl IntoView {
    let commit = RwSignal::new(false);
    let cancel = RwSignal::new(false);
    let reason = RwSignal::new(String::new());
    let key = RwSignal::new(String::new());
    let ack = RwSignal::new(false);
    let act = ServerAction::<PlanOperate>::new();
    let navigate = leptos_router::hooks::use_navigate();
    Effect::new(move |_| {
        if let Some(Ok(job)) = act.value().get() {
            navigate(&format!("/jobs/{job}"), Default::default());
        }
    });
    let names: Vec<String> = plan.groups.iter().flatten().map(|i| i.name.clone()).collect();
    let why = |op: &str| {
        let blocked = not_ready(&plan, op);
        (!blocked.is_empty()).then(|| blocked.join("\n"))
    };
    let (commit_why, cancel_why) = (why("commit"), why("cancel-failover"));
    let button = move |op: &'static str, label: &'static str, blocked: Option<String>, open: RwSignal<bool>| {
        let title = if may { blocked.clone().unwrap_or_default() } else { denied.clone() };
        view! {
            <button type="button" class=op_class(op) data-testid=format!("plan-{op}") disabled=!may || blocked.is_some() title=title
                on:click=move |_| { key.set(new_key()); ack.set(false); open.set(true); }>{label}</button>
        }
    };
    let (plan_id, plan_name) = (plan.id.clone(), plan.name.clone());
    let dialog = move |op: &'static str,
                       open: RwSignal<bool>,
                       title: String,
                       warning: String,
                       confirm: &'static str| {
        let pid = plan_id.clone();
        view! {
            <Modal open=open title=title id=format!("plan-{op}-dialog")>
                <p class="warning" data-testid="warning">{warning}</p>
                {acknowledgement(op, ack)}
                {crate::item::reason_field(reason)}
                {move || act.value().get().and_then(|r| r.err()).map(|e| portal_error(&e))}
                <div class="actions">
                    <button type="button" on:click=move |_| open.set(false)>"Keep it as it is"</button>
                    <button type="button" class=confirm_class(op) data-testid="confirm" disabled=move || !acknowledged(op, ack) || reason.get().trim().is_empty() || act.pending().get()
                        on:click=move |_| { act.dispatch(PlanOperate { plan: pid.clone(), op: op.into(), reason: reason.get(), key: key.get() }); }>
                        {move || if act.pending().get() { "Starting…" } else { confirm }}
                    </button>
                </div>
            </Modal>
        }
    };
    let all = names.join(", ");
    view! {
        {button("commit", "Commit…", commit_why, commit)}
        {button("cancel-failover", "Cancel failover…", cancel_why, cancel)}
        {dialog("commit", commit, format!("Commit the recovery plan {plan_name}"),
            format!("Commit deletes the cloud VM of every item of this plan, with its disks, in Azure (R-W3): {all}. It cannot be undone. Afterwards they run only on-premises, unprotected until you re-protect them to Azure."),
            "Delete the cloud VMs and commit")}
        {dialog("cancel-failover", cancel, format!("Cancel the failover of the recovery plan {plan_name}"),
            format!("Every item of this plan goes back to the cloud, group after group: its on-premises VM is shut down, its cloud VM runs again and replication to on-premises resumes ({all}). What the on-premises VMs wrote since the failover is not kept."),
            "Cancel the plan's failover")}
    }
}

/// A recovery plan's reprotect to on-premises: a master target for each operating system (each item takes the one
/// that runs its own), the process server in Azure, a datastore for items whose original VM is gone. The dry run
/// lists each item's master target, location and data to move; it answers the choices it was asked with, so a
/// changed choice hides it and Start waits for a new one.
#[component]
pub(crate) fn PlanReprotect(plan: PlanRow, may: bool, denied: String) -> impl IntoView {
    let open = RwSignal::new(false);
    let (windows, linux) = (RwSignal::new(String::new()), RwSignal::new(String::new()));
    let (ps, ds) = (RwSignal::new(String::new()), RwSignal::new(String::new()));
    let reason = RwSignal::new(String::new());
    let key = RwSignal::new(String::new());
    let ack = RwSignal::new(false);
    let preview = ServerAction::<crate::actions::PlanReprotectPreview>::new();
    let act = ServerAction::<crate::actions::PlanReprotect>::new();
    let navigate = leptos_router::hooks::use_navigate();
    Effect::new(move |_| {
        if let Some(Ok(job)) = act.value().get() {
            navigate(&format!("/jobs/{job}"), Default::default());
        }
    });
    // Protection settings for every item: the plan's to start with; empty keeps each item's own.
    let (retention, app, rpo) = (
        RwSignal::new(plan.protection.retention_min),
        RwSignal::new(plan.protection.app_consistent_every_min),
        RwSignal::new(plan.protection.rpo_threshold_min),
    );
    let protection = move || PlanProtection {
        retention_min: retention.get(),
        app_consistent_every_min: app.get(),
        rpo_threshold_min: rpo.get(),
    };
    let choices = move || (ps.get(), vec![windows.get(), linux.get()], ds.get(), protection());
    let asked = RwSignal::new(None::<(String, Vec<String>, String, PlanProtection)>);
    let fresh = move || !preview.pending().get() && asked.get().is_some_and(|a| a == choices());
    let allowed = move || fresh() && preview.value().get().is_some_and(|r| r.is_ok_and(|v| v.allowed));
    let blocked = not_ready(&plan, "reprotect");
    let why = (!blocked.is_empty()).then(|| blocked.join("\n"));
    let title = if may { why.clone().unwrap_or_default() } else { denied };
    let opts = plan.reprotect.clone();
    let (p1, p2) = (plan.id.clone(), plan.id.clone());
    view! {
        <button type="button" class=op_class("reprotect") data-testid="plan-reprotect" disabled=!may || why.is_some() title=title
            on:click=move |_| { key.set(new_key()); ack.set(false); asked.set(None); open.set(true); }>"Reprotect…"</button>
        <Modal open=open title=format!("Reprotect the recovery plan {}", plan.name) id="plan-reprotect-dialog">
            <p class="direction">"Direction: "<strong>"from Azure → on-premises"</strong>". The process server sends each item's disks to its master target: into its original VM (only what changed) or, where that VM is gone, a new one on the datastore below (a full copy). A group's items replicate side by side; the next group starts when they are protected."</p>
            {crate::item::select("Master target for Windows VMs", "master_target_windows", opts.windows_master_targets, windows)}
            {crate::item::select("Master target for Linux VMs", "master_target_linux", opts.linux_master_targets, linux)}
            {crate::item::select("Process server (in Azure)", "process_server", opts.process_servers, ps)}
            {crate::item::select("Datastore (only for items whose original VM is gone)", "datastore", opts.datastores, ds)}
            <p class="muted" data-testid="plan-protection-words">{match plan.protection.words() {
                w if w.is_empty() => "Protection settings: each item keeps its own (the plan sets none; Edit… sets them).".to_owned(),
                w => format!("Protection settings the plan gives every item: {w}."),
            }}</p>
            <details class="protection-choices" data-testid="plan-protection"><summary>"Recovery points and RPO alert for every item (minutes; empty keeps each item's own)"</summary>
                <div class="form-grid">
                    {plan_minutes("Keep recovery points for", "retention_min", retention)}
                    {plan_minutes("App-consistent point every", "app_consistent_every_min", app)}
                    {plan_minutes("Alert when the RPO exceeds", "rpo_threshold_min", rpo)}
                </div>
            </details>
            {crate::item::reason_field(reason)}
            <div class="actions">
                <button type="button" data-testid="review" disabled=move || preview.pending().get()
                    on:click=move |_| {
                        let (process_server, master_targets, datastore, protection) = choices();
                        asked.set(Some(choices()));
                        preview.dispatch(crate::actions::PlanReprotectPreview { plan: p1.clone(), process_server, master_targets, datastore, protection });
                    }>
                    {move || if preview.pending().get() { "Checking…" } else { "Review (dry run)" }}
                </button>
            </div>
            {move || fresh().then(|| preview.value().get()).flatten().map(|r| match r {
                Ok(v) => plan_preview_view(v).into_any(),
                Err(e) => portal_error(&e),
            })}
            {acknowledgement("reprotect", ack)}
            {move || act.value().get().and_then(|r| r.err()).map(|e| portal_error(&e))}
            <div class="actions">
                <button type="button" on:click=move |_| open.set(false)>"Cancel"</button>
                <button type="button" class=confirm_class("reprotect") data-testid="confirm"
                    disabled=move || !allowed() || !acknowledged("reprotect", ack) || reason.get().trim().is_empty() || act.pending().get()
                    on:click=move |_| {
                        let (process_server, master_targets, datastore, protection) = choices();
                        act.dispatch(crate::actions::PlanReprotect { plan: p2.clone(), process_server, master_targets, datastore, protection, reason: reason.get(), key: key.get() });
                    }>
                    {move || if act.pending().get() { "Starting…" } else { "Start the plan's reprotect" }}
                </button>
            </div>
        </Modal>
    }
}

/// A plan reprotect's dry run: its refusals, then each item's choice, group by group.
fn plan_preview_view(v: PlanPreviewView) -> impl IntoView {
    view! {
        <section class="dry-run" data-testid="dry-run" aria-live="polite">
            <h3>{if v.allowed { "Dry run: every item may be reprotected" } else { "Dry run: refused" }}</h3>
            {(!v.refusals.is_empty()).then(|| refusal_list(v.refusals.clone()))}
            <table class="grid compact">
                <thead><tr><th scope="col">"Group"</th><th scope="col">"Item"</th><th scope="col">"Master target"</th><th scope="col">"Location"</th><th scope="col">"Copy"</th><th scope="col">"Data to move"</th><th scope="col">"Checks"</th></tr></thead>
                <tbody>{v.items.into_iter().map(|l| view! {
                    <tr data-item=l.item.clone()>
                        <td>{l.group}</td><th scope="row">{l.item.clone()}</th><td>{l.master_target.clone()}</td>
                        <td>{l.location.clone()}</td><td>{l.transfer.clone()}</td><td>{fmt_bytes(l.bytes)}</td>
                        <td>{if l.allowed { "passed" } else { "refused" }}</td>
                    </tr>
                }).collect_view()}</tbody>
            </table>
        </section>
    }
}

/// Every replicated item as the plan editor offers it: (id, name).
#[server(endpoint = "portal/plan-items", input = leptos::server_fn::codec::GetUrl)]
pub async fn plan_items() -> Result<Vec<(String, String)>, PortalError> {
    crate::actions::server::signed_in()?;
    let rows = crate::data::server::all_rows().await.map_err(|e| PortalError::Server(e.to_string()))?;
    Ok(rows.iter().map(|r| (r.id.clone(), r.name.clone())).collect())
}

/// Creates a plan (`id` empty) or replaces plan `id`'s name, groups and protection settings (Operator); returns the
/// plan's id.
#[server(endpoint = "portal/plan-save", input = leptos::server_fn::codec::Json)]
pub async fn save_plan(
    id: String,
    name: String,
    groups: Vec<Vec<String>>,
    protection: PlanProtection,
) -> Result<String, PortalError> {
    use crate::actions::server;
    use orchestrator::acting::Actor;
    use orchestrator::lifecycle::Operation;
    let user = server::signed_in()?;
    let c = server::service_ctx()?;
    let protection = orchestrator::domain::ProtectionSettings {
        retention_min: protection.retention_min,
        app_consistent_every_min: protection.app_consistent_every_min,
        rpo_threshold_min: protection.rpo_threshold_min,
    };
    let spec = orchestrator::plans::PlanSpec { name, groups, protection };
    let actor = Actor { user: &user, accounts: &c.accounts, service: &c.service };
    let existing = (!id.is_empty()).then_some(id.as_str());
    let (action, target) =
        if existing.is_some() { ("plan-change", id.clone()) } else { ("plan-create", spec.name.clone()) };
    let plan = actor
        .edit_plan(action, &target, spec.words(), c.service.save_plan(existing, spec.clone()))
        .await
        .map_err(|e| server::portal_error(Operation::Failover, e))?;
    crate::data::server::invalidate();
    Ok(plan.id)
}

/// Removes a plan (Operator).
#[server(endpoint = "portal/plan-remove", input = leptos::server_fn::codec::Json)]
pub async fn remove_plan(id: String) -> Result<(), PortalError> {
    use crate::actions::server;
    use orchestrator::acting::Actor;
    use orchestrator::lifecycle::Operation;
    let user = server::signed_in()?;
    let c = server::service_ctx()?;
    let actor = Actor { user: &user, accounts: &c.accounts, service: &c.service };
    actor
        .edit_plan("plan-remove", &id, format!("plan {id} removed"), c.service.remove_plan(&id))
        .await
        .map_err(|e| server::portal_error(Operation::Failover, e))?;
    crate::data::server::invalidate();
    Ok(())
}

/// The plan editor: a name and ordered groups of items — add an item to a group, move it to the group before or
/// after, remove it; add or remove a group. The server checks the whole plan when it is saved and says every
/// problem at once (an item twice, an empty group, a replication group split).
#[component]
pub(crate) fn PlanEditor(
    /// The plan to change, or none for a new one.
    plan: Option<PlanRow>,
    open: RwSignal<bool>,
) -> impl IntoView {
    let id = plan.as_ref().map(|p| p.id.clone()).unwrap_or_default();
    let name = RwSignal::new(plan.as_ref().map(|p| p.name.clone()).unwrap_or_default());
    let start: Vec<Vec<String>> = match &plan {
        Some(p) => p.groups.iter().map(|g| g.iter().map(|i| i.id.clone()).collect()).collect(),
        None => vec![Vec::new()],
    };
    let groups = RwSignal::new(start);
    let chosen = plan.as_ref().map(|p| p.protection).unwrap_or_default();
    let retention = RwSignal::new(chosen.retention_min);
    let app = RwSignal::new(chosen.app_consistent_every_min);
    let rpo = RwSignal::new(chosen.rpo_threshold_min);
    // Each group's "add an item" choice, set back to "choose…" once the item is added (the list is rebuilt in place,
    // and a select keeps its selected position otherwise). At most 7 groups.
    let picks: [RwSignal<String>; 7] = std::array::from_fn(|_| RwSignal::new(String::new()));
    let items = Resource::new(|| (), |_| plan_items());
    let save = ServerAction::<SavePlan>::new();
    let navigate = leptos_router::hooks::use_navigate();
    Effect::new(move |_| {
        if let Some(Ok(saved)) = save.value().get() {
            open.set(false);
            navigate(&format!("/recovery-plans/{saved}"), Default::default());
        }
    });
    let title = if plan.is_some() { "Edit the recovery plan" } else { "New recovery plan" };
    let label_of = move |all: &[(String, String)], id: &str| {
        all.iter().find(|(i, _)| i == id).map_or_else(|| id.to_owned(), |(_, n)| n.clone())
    };
    view! {
        <Modal open=open title=title.to_owned() id="plan-editor">
            <label class="block">"Name"
                <input type="text" name="plan-name" maxlength="100" prop:value=move || name.get() on:input=move |ev| name.set(event_target_value(&ev))/>
            </label>
            <Suspense fallback=|| loading("the replicated items")>
                {move || Suspend::new(async move {
                    // Unreadable, the list is empty: the items already in the plan still show, by id.
                    let all = items.await.unwrap_or_default();
                    view! {
                        <ol class="editor-groups" data-testid="plan-groups">
                            {move || {
                                let gs = groups.get();
                                let n = gs.len();
                                let placed: Vec<String> = gs.iter().flatten().cloned().collect();
                                gs.into_iter().enumerate().map(|(g, members)| {
                                    let all = all.clone();
                                    let free: Vec<(String, String)> = all.iter().filter(|(i, _)| !placed.contains(i)).cloned().collect();
                                    view! {
                                        <li class="panel" data-group={g + 1}>
                                            <h3>{format!("Group {}", g + 1)}</h3>
                                            {if members.is_empty() { view! { <p class="muted">"No item yet."</p> }.into_any() } else {
                                                view! { <ul>{members.into_iter().map(|m| {
                                                    let (m1, m2, m3) = (m.clone(), m.clone(), m.clone());
                                                    view! { <li data-item=m.clone()>{label_of(&all, &m)}" "
                                                        <button type="button" disabled={g == 0} aria-label=format!("Move {m} to the group before")
                                                            on:click=move |_| groups.update(|gs| if g > 0 { gs[g].retain(|i| *i != m1); gs[g - 1].push(m1.clone()); })>"↑"</button>
                                                        <button type="button" disabled={g + 1 == n} aria-label=format!("Move {m} to the group after")
                                                            on:click=move |_| groups.update(|gs| if g + 1 < gs.len() { gs[g].retain(|i| *i != m2); gs[g + 1].push(m2.clone()); })>"↓"</button>
                                                        <button type="button" aria-label=format!("Remove {m} from the plan")
                                                            on:click=move |_| groups.update(|gs| gs[g].retain(|i| *i != m3))>"Remove"</button>
                                                    </li> }
                                                }).collect_view()}</ul> }.into_any()
                                            }}
                                            <label>"Add an item "
                                                <select name=format!("add-to-group-{}", g + 1) prop:value=move || picks[g.min(6)].get() on:change=move |ev| {
                                                    let v = event_target_value(&ev);
                                                    if !v.is_empty() { groups.update(|gs| gs[g].push(v)); }
                                                    picks[g.min(6)].set(String::new());
                                                }>
                                                    <option value="">"choose…"</option>
                                                    {free.into_iter().map(|(i, label)| view! { <option value=i>{label}</option> }).collect_view()}
                                                </select>
                                            </label>
                                            {(n > 1).then(|| view! { <button type="button" on:click=move |_| groups.update(|gs| { gs.remove(g); })>"Remove this group"</button> })}
                                        </li>
                                    }
                                }).collect_view()
                            }}
                        </ol>
                    }
                })}
            </Suspense>
            <button type="button" data-testid="add-group" disabled=move || groups.with(|gs| gs.len() >= 7)
                on:click=move |_| groups.update(|gs| gs.push(Vec::new()))>"Add a group"</button>
            <p class="muted">"Groups run in order: a group starts when the previous one has finished, and a group's items run side by side. At most 7 groups; each item once; a replication group's items together."</p>
            <fieldset data-testid="plan-protection">
                <legend>"Protection the plan's reprotect gives each item (minutes; empty: the item's own)"</legend>
                {plan_minutes("Keep recovery points for", "retention_min", retention)}
                {plan_minutes("Take an app-consistent point every", "app_consistent_every_min", app)}
                {plan_minutes("Alert when the RPO passes", "rpo_threshold_min", rpo)}
            </fieldset>
            {move || save.value().get().and_then(|r| r.err()).map(|e| portal_error(&e))}
            <div class="actions">
                <button type="button" on:click=move |_| open.set(false)>"Cancel"</button>
                <button type="button" class="primary" data-testid="save-plan" disabled=move || name.get().trim().is_empty() || save.pending().get()
                    on:click=move |_| {
                        let protection = PlanProtection { retention_min: retention.get(), app_consistent_every_min: app.get(), rpo_threshold_min: rpo.get() };
                        save.dispatch(SavePlan { id: id.clone(), name: name.get(), groups: groups.get(), protection });
                    }>
                    {move || if save.pending().get() { "Saving…" } else { "Save the plan" }}
                </button>
            </div>
        </Modal>
    }
}

/// A minutes field of the plan's protection settings; empty is none.
fn plan_minutes(label: &'static str, name: &'static str, value: RwSignal<Option<u32>>) -> impl IntoView {
    view! {
        <label class="block">{label}
            <input type="number" min="1" name=name placeholder="the item's own"
                prop:value=move || value.get().map(|v| v.to_string()).unwrap_or_default()
                on:input=move |ev| value.set(event_target_value(&ev).trim().parse().ok())/>
        </label>
    }
}

/// The plan page's Edit… and Remove… buttons, with the editor and the removal's confirmation.
#[component]
pub(crate) fn PlanEdit(plan: PlanRow, may: bool, denied: String) -> impl IntoView {
    let editing = RwSignal::new(false);
    let removing = RwSignal::new(false);
    let remove = ServerAction::<RemovePlan>::new();
    let navigate = leptos_router::hooks::use_navigate();
    Effect::new(move |_| {
        if let Some(Ok(())) = remove.value().get() {
            removing.set(false);
            navigate("/recovery-plans", Default::default());
        }
    });
    let id = plan.id.clone();
    let name = plan.name.clone();
    view! {
        <button type="button" data-testid="edit-plan" disabled=!may title=denied.clone() on:click=move |_| editing.set(true)>"Edit…"</button>
        <button type="button" data-testid="remove-plan" disabled=!may title=denied on:click=move |_| removing.set(true)>"Remove…"</button>
        {may.then(|| view! { <PlanEditor plan=Some(plan.clone()) open=editing/> })}
        <Modal open=removing title=format!("Remove the recovery plan {name}") id="remove-plan-dialog">
            <p class="warning">"The plan goes; its items, their protection and the plan's past jobs stay."</p>
            {move || remove.value().get().and_then(|r| r.err()).map(|e| portal_error(&e))}
            <div class="actions">
                <button type="button" on:click=move |_| removing.set(false)>"Keep it"</button>
                <button type="button" class="primary danger" data-testid="confirm" disabled=move || remove.pending().get()
                    on:click=move |_| { remove.dispatch(RemovePlan { id: id.clone() }); }>"Remove the plan"</button>
            </div>
        </Modal>
    }
}
