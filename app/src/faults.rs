//! The demo estate's fault knobs on the Infrastructure page. What is a state (vCenter connected, a master target
//! snapshot, slow agent registration, a datastore full) is a switch that shows it and turns it back; what happens
//! once and cannot be turned back (the original VM deleted, a VM started outside Homeward) is chosen, then
//! confirmed in words.

use leptos::prelude::*;

use crate::actions::SetFault;
use crate::model::InfraView;
use crate::ui::*;

/// A switch for one state of the estate (`name`, for tests and styling): its label, whether it is on
/// (`aria-checked`), what that means, and the knob with the value that turns it the other way.
fn switch(
    name: String,
    label: String,
    on: bool,
    meaning: &'static str,
    set: ServerAction<SetFault>,
    (knob, value_when_clicked): (&'static str, String),
) -> impl IntoView {
    view! {
        <div class="switch-row">
            <button type="button" role="switch" class="switch" aria-checked=if on { "true" } else { "false" } data-knob=name
                disabled=move || set.pending().get()
                on:click=move |_| { set.dispatch(SetFault { knob: knob.into(), value: value_when_clicked.clone() }); }>
                <span class="switch-track" aria-hidden="true"><span class="switch-thumb"></span></span>
                {label}
                <span class="switch-state" aria-hidden="true">{if on { "On" } else { "Off" }}</span>
            </button>
            <span class="muted small">{meaning}</span>
        </div>
    }
}

/// One event that cannot be switched back: an item to choose, a button that asks first, and the confirmation that
/// says what happens.
fn one_shot(
    knob: &'static str,
    label: &'static str,
    button: &'static str,
    consequence: &'static str,
    items: Vec<String>,
    set: ServerAction<SetFault>,
    asking: RwSignal<Option<&'static str>>,
) -> impl IntoView {
    let chosen = RwSignal::new(String::new());
    view! {
        <div class="knob" data-knob=knob>
            <label>{label}" "<select name=knob on:change=move |ev| { chosen.set(event_target_value(&ev)); asking.set(None); }>
                <option value="">"choose…"</option>
                {items.into_iter().map(|d| view! { <option value=d.clone()>{d.clone()}</option> }).collect_view()}
            </select></label>" "
            <button type="button" class="danger" disabled=move || chosen.get().is_empty() || set.pending().get()
                on:click=move |_| asking.set(Some(knob))>{format!("{button}…")}</button>
            <Show when=move || asking.get() == Some(knob)>
                <p class="confirm" role="alert" data-testid="knob-confirm">
                    {move || format!("{button} for {}? {consequence} ", chosen.get())}
                    <button type="button" class="danger" data-testid="knob-confirm-yes"
                        on:click=move |_| { set.dispatch(SetFault { knob: knob.into(), value: chosen.get() }); asking.set(None); }>{button}</button>" "
                    <button type="button" on:click=move |_| asking.set(None)>"Keep it as it is"</button>
                </p>
            </Show>
        </div>
    }
}

/// The fault knobs for an Administrator; `set` is the page's action, whose success refreshes the page.
pub(crate) fn fault_knobs(i: &InfraView, set: ServerAction<SetFault>) -> impl IntoView {
    let asking = RwSignal::new(None::<&'static str>);
    let (vc, snaps, delay) = (i.vcenter_connected, i.master_target_snapshots, i.agent_registration_delay_min);
    view! {
        <div class="switches" data-testid="fault-switches">
            {switch("vcenter_connected".into(), "vCenter connected".into(), vc,
                "Off: every failover back is refused until it reconnects (R-C4).", set,
                ("vcenter_connected", (!vc).to_string()))}
            {switch("master_target_snapshots".into(), "Master target has a snapshot".into(), snaps > 0,
                "On: reprotect is refused while a master target has snapshots (R-C2).", set,
                ("master_target_snapshots", if snaps > 0 { "0".into() } else { "1".into() }))}
            {switch("agent_registration_delay_min".into(), "Agents take 5 min to register".into(), delay > 0,
                "On: an agent installed just now cannot be re-protected to Azure yet (R-A1).", set,
                ("agent_registration_delay_min", if delay > 0 { "0".into() } else { "5".into() }))}
            {i.datastores.iter().map(|(ds, full)| switch(format!("datastore-full-{ds}"), format!("Datastore {ds} full"), *full,
                "On: no free space left; replication to it stops and an alert opens.", set,
                (if *full { "free_datastore" } else { "fill_datastore" }, ds.clone()))).collect_view()}
        </div>
        <div class="one-shots">
            {one_shot("delete_original_vm", "The original VM of", "Delete the original VM",
                "Reprotect then re-creates it at an alternate location with a full copy (R-L2). This cannot be undone.",
                i.items.clone(), set, asking)}
            {one_shot("start_cloud_vm", "The cloud VM of", "Start the cloud VM outside Homeward",
                "If the item has failed back, both copies now run: a split-brain that only choosing a copy ends.",
                i.items.clone(), set, asking)}
            {one_shot("start_onprem_vm", "The on-premises VM of", "Power on the on-premises VM outside Homeward",
                "If the item is protected to on-premises, both copies now run: a split-brain that only choosing a copy ends.",
                i.items.clone(), set, asking)}
        </div>
        {move || set.value().get().and_then(|r| r.err()).map(|e| portal_error(&e))}
    }
}
