//! A recovery plan's commit and cancel failover, from the plan page: each asks for a reason and says what it does to
//! every item; commit, which deletes every cloud VM, names them and is styled as the irreversible step it is.

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
            <button type="button" data-testid=format!("plan-{op}") disabled=!may || blocked.is_some() title=title
                on:click=move |_| { key.set(new_key()); open.set(true); }>{label}</button>
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
                {crate::item::reason_field(reason)}
                {move || act.value().get().and_then(|r| r.err()).map(|e| portal_error(&e))}
                <div class="actions">
                    <button type="button" on:click=move |_| open.set(false)>"Keep it as it is"</button>
                    <button type="button" class="primary danger" data-testid="confirm" disabled=move || reason.get().trim().is_empty() || act.pending().get()
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
