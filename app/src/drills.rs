//! Drills in the portal: the test failover dialog (an isolated network, a recovery point, the dry run), the item's
//! live drill with its cleanup, the drills list and a drill's report (JSON and CSV downloads), and the networks an
//! Administrator marks isolated.

use leptos::prelude::*;
use leptos_meta::Title;
use leptos_router::hooks::use_params_map;

use crate::actions::{DryRun, StartAction};
use crate::model::*;
use crate::ui::*;

#[server(endpoint = "portal/drills", input = leptos::server_fn::codec::GetUrl)]
pub async fn list_drills(item: String) -> Result<Vec<DrillRow>, ServerFnError> {
    use crate::data::server::*;
    let s = service()?;
    let item = (!item.is_empty()).then_some(item);
    Ok(s.drills().list(item.as_deref(), 200).await.map_err(internal)?.into_iter().map(drill_row).collect())
}

#[server(endpoint = "portal/drill", input = leptos::server_fn::codec::GetUrl)]
pub async fn get_drill(id: String) -> Result<Option<DrillRow>, ServerFnError> {
    use crate::data::server::*;
    let s = service()?;
    Ok(s.drills().get(&id).await.map_err(internal)?.map(drill_row))
}

/// Marks a network isolated (drills may use it) or production (Administrator).
#[server(endpoint = "portal/network-isolation", input = leptos::server_fn::codec::Json)]
pub async fn set_network_isolation(name: String, isolated: bool) -> Result<(), PortalError> {
    use crate::actions::server;
    use orchestrator::acting::Actor;
    let user = server::signed_in()?;
    let c = server::service_ctx()?;
    let actor = Actor { user: &user, accounts: &c.accounts, service: &c.service };
    actor
        .set_network_isolation(&name, isolated)
        .await
        .map_err(|e| server::portal_error(orchestrator::lifecycle::Operation::TestFailover, e))?;
    crate::data::server::invalidate();
    Ok(())
}

fn status_words(s: &str) -> &'static str {
    match s {
        "running" => "test VM running",
        "checks-failed" => "checks failed",
        "not-running" => "test VM not running",
        "cleaned-up" => "cleaned up",
        _ => "unknown",
    }
}

fn checks_summary(d: &DrillRow) -> String {
    let passed = d.checks.iter().filter(|c| c.passed).count();
    if d.checks.is_empty() {
        "not run".into()
    } else {
        format!("{passed} of {} passed", d.checks.len())
    }
}

pub(crate) fn drill_table(rows: Vec<DrillRow>, with_item: bool) -> impl IntoView {
    view! {
        <div class="table-wrap" tabindex="0" role="region" aria-label="Drills"><table class="grid compact" data-testid="drills">
            <thead><tr>
                <th scope="col">"Started"</th>
                {with_item.then(|| view! { <th scope="col">"Item"</th> })}
                <th scope="col">"Status"</th><th scope="col">"Network"</th><th scope="col">"Recovery point"</th>
                <th scope="col">"Powered on after"</th><th scope="col">"Checks"</th><th scope="col">"Report"</th>
            </tr></thead>
            <tbody>{rows.into_iter().map(|d| {
                let link = format!("/drills/{}", d.id);
                view! { <tr>
                    <td>{fmt_time(d.started_at)}</td>
                    {with_item.then(|| view! { <td><a href=format!("/replicated-items/{}", d.item)>{d.item_name.clone()}</a></td> })}
                    <td><span class=format!("badge {}", d.status)>{status_words(&d.status)}</span></td>
                    <td>{d.network.clone()}</td>
                    <td>{format!("{} · {} old", words(&d.point_kind), fmt_duration(d.point_age_ms))}</td>
                    <td>{d.time_to_power_on_ms.map(fmt_duration).unwrap_or_else(|| "—".into())}</td>
                    <td>{checks_summary(&d)}</td>
                    <td><a href=link>"Open the report"</a></td>
                </tr> }
            }).collect_view()}</tbody>
        </table></div>
    }
}

#[component]
pub(crate) fn DrillsPage() -> impl IntoView {
    let drills = Resource::new(|| (), |_| list_drills(String::new()));
    view! {
        <Title text="Drills · Homeward"/>
        <h1>"Drills"</h1>
        <p class="lead">"Test failovers: a copy of a protected VM brought up on-premises from a recovery point, on an isolated network, while the cloud VM runs and replication goes on. Each leaves a report."</p>
        <Suspense fallback=|| loading("the drills")>
            {move || Suspend::new(async move {
                let rows = drills.await?;
                Ok::<_, ServerFnError>(if rows.is_empty() {
                    view! { <p class="muted">"No drill yet. Open a replicated item protected to on-premises and choose "<strong>"Test failover"</strong>"."</p> }.into_any()
                } else {
                    drill_table(rows, true).into_any()
                })
            })}
        </Suspense>
    }
}

#[component]
pub(crate) fn DrillReportPage() -> impl IntoView {
    let params = use_params_map();
    let id = Memo::new(move |_| params.read().get("id").unwrap_or_default());
    let drill = Resource::new(move || id.get(), get_drill);
    view! {
        <Title text="Drill report · Homeward"/>
        <Suspense fallback=|| loading("the drill report")>
            {move || Suspend::new(async move {
                let Some(d) = drill.await? else {
                    return Ok::<_, ServerFnError>(view! {
                        <h1>"Drill not found"</h1>
                        <p>"No drill has this id. Open "<a href="/drills">"Drills"</a>" for the list."</p>
                    }.into_any());
                };
                let api = format!("/api/v1/drills/{}", d.id);
                Ok(view! {
                    <h1>{format!("Drill of {}", d.item_name)}" "<small><span class=format!("badge {}", d.status) data-testid="drill-status">{status_words(&d.status)}</span></small></h1>
                    <p class="actions">
                        <a class="button" href=api.clone() download=format!("drill-{}-{}.json", d.item_name, d.id)>"Download JSON"</a>" "
                        <a class="button" data-testid="csv" href=format!("{api}?format=csv")>"Download CSV"</a>
                    </p>
                    <div class="cards">
                        <section class="panel card"><h2>"Test VM"</h2>
                            <dl class="props">
                                <dt>"Item"</dt><dd><a href=format!("/replicated-items/{}", d.item)>{d.item_name.clone()}</a></dd>
                                <dt>"Test VM"</dt><dd>{format!("{} on {}", d.vm, d.host)}</dd>
                                <dt>"Network"</dt><dd data-testid="drill-network">{d.network.clone()}</dd>
                                <dt>"Started"</dt><dd>{fmt_time(d.started_at)}{d.started_by.clone().map(|u| format!(" by {u}"))}</dd>
                                <dt>"Time to power on"</dt><dd data-testid="power-on">{d.time_to_power_on_ms.map(fmt_duration).unwrap_or_else(|| "did not power on".into())}</dd>
                                <dt>"Job"</dt><dd><a href=format!("/jobs/{}", d.id)>"Test failover job"</a></dd>
                            </dl>
                        </section>
                        <section class="panel card"><h2>"Recovery point"</h2>
                            <dl class="props">
                                <dt>"Point"</dt><dd><code>{d.point_id.clone()}</code></dd>
                                <dt>"Type"</dt><dd>{words(&d.point_kind)}</dd>
                                <dt>"Taken"</dt><dd>{fmt_time(d.point_time)}</dd>
                                <dt>"Age at the drill"</dt><dd data-testid="point-age">{fmt_duration(d.point_age_ms)}</dd>
                            </dl>
                        </section>
                        <section class="panel card"><h2>"Cleanup"</h2>
                            {match d.cleaned_at {
                                Some(t) => view! { <dl class="props">
                                    <dt>"Cleaned up"</dt><dd>{fmt_time(t)}{d.cleaned_by.clone().map(|u| format!(" by {u}"))}</dd>
                                    {d.cleanup_job.clone().map(|j| view! { <dt>"Job"</dt><dd><a href=format!("/jobs/{j}")>"Cleanup job"</a></dd> })}
                                </dl> }.into_any(),
                                None => view! { <p>"The test VM still exists. Clean it up from "<a href=format!("/replicated-items/{}", d.item)>"the item's page"</a>"."</p> }.into_any(),
                            }}
                        </section>
                    </div>
                    <section class="panel"><h2>{format!("Checks ({})", checks_summary(&d))}</h2>
                        {if d.checks.is_empty() { view! { <p class="muted">"The test failover ended before its checks ran: its job says why."</p> }.into_any() } else {
                            view! { <ul class="checks" data-testid="drill-checks">{d.checks.iter().map(|c| view! {
                                <li class=if c.passed { "pass" } else { "fail" }>
                                    <span aria-hidden="true">{if c.passed { "✓ " } else { "✗ " }}</span>
                                    <strong>{c.name.clone()}</strong>": "{c.detail.clone()}
                                </li>
                            }).collect_view()}</ul> }.into_any()
                        }}
                    </section>
                    <section class="panel"><h2>"Notes"</h2>
                        <p data-testid="drill-notes">{d.notes.clone().unwrap_or_else(|| "No notes.".into())}</p>
                    </section>
                }.into_any())
            })}
        </Suspense>
    }
}

/// The item's live drill, with the link to its report; and its last drills.
pub(crate) fn drill_panel(d: &ItemDetail) -> impl IntoView {
    let live = d.drill.clone();
    let past = d.drills.clone();
    (live.is_some() || !past.is_empty()).then(|| {
        view! {
            <section class="panel" data-testid="drill-panel"><h2>"Drills"</h2>
                {live.map(|l| view! {
                    <p class="notice" data-testid="live-drill">
                        {format!("Test VM {} runs on the isolated network {} since {}, from the {} point of {}. ", l.vm, l.network, fmt_time(l.started_at), words(&l.point_kind), fmt_time(l.point_time))}
                        <a href=format!("/drills/{}", l.id)>"Open its report"</a>". Clean it up when the drill is done; a failover cleans it up first."
                    </p>
                })}
                {(!past.is_empty()).then(|| drill_table(past.clone(), false))}
                <p><a href="/drills">"All drills"</a></p>
            </section>
        }
    })
}

/// Test failover: an isolated network, a recovery point, the dry run (stale as soon as a choice changes), a reason.
#[component]
pub(crate) fn TestFailoverDialog(open: RwSignal<bool>, d: ItemDetail) -> impl IntoView {
    let network = RwSignal::new(String::new());
    let point = RwSignal::new("latest-processed".to_owned());
    let reason = RwSignal::new(String::new());
    let key = RwSignal::new(String::new());
    let dry = ServerAction::<DryRun>::new();
    let act = crate::item::start_action();
    Effect::new(move |_| {
        if open.get() {
            key.set(new_key());
            dry.value().set(None);
        }
    });
    // A dry run answers for the choices it was made with: any change makes it stale.
    Effect::new(move |_| {
        network.track();
        point.track();
        dry.value().set(None);
    });
    let input =
        move || ActionInput { network: Some(network.get()), point: Some(point.get()), ..ActionInput::default() };
    let (id, id2) = (d.row.id.clone(), d.row.id.clone());
    let networks = d.networks.clone();
    let points = d.points.clone();
    // A split-brain's kept blocks over the newest point: a drill is how to look at them before choosing them.
    let kept: Vec<(String, String)> = d
        .choices
        .iter()
        .filter(|c| c.choice.starts_with("kept:"))
        .map(|c| (c.choice.clone(), c.label.clone()))
        .collect();
    view! {
        <Modal open=open title=format!("Test failover: {}", d.row.name) id="test-failover-dialog">
            <p class="direction">"A drill: a copy of "<strong>{d.row.name.clone()}</strong>" starts on-premises from a recovery point, on an isolated network. The cloud VM keeps running and replication goes on; nothing of production changes."</p>
            <div class="form-grid">
                {crate::item::select("Network (isolated)", "network", networks, network)}
                <label class="block">"Recovery point"
                    <select name="point" on:change=move |ev| point.set(event_target_value(&ev)) prop:value=move || point.get()>
                        <option value="latest-processed">"Latest processed"</option>
                        <option value="latest-app-consistent">"Latest app-consistent"</option>
                        {kept.into_iter().map(|(v, l)| view! { <option value=v>{l}</option> }).collect_view()}
                        {points.into_iter().map(|p| view! { <option value=p.id.clone()>{format!("{} · {}", fmt_time(p.time), words(&p.kind))}</option> }).collect_view()}
                    </select>
                </label>
            </div>
            {crate::item::reason_field(reason)}
            <div class="actions">
                <button type="button" data-testid="review" disabled=move || network.get().is_empty() || dry.pending().get()
                    on:click=move |_| { dry.dispatch(DryRun { id: id.clone(), op: "test-failover".into(), input: input() }); }>
                    {move || if dry.pending().get() { "Checking…" } else { "Review (dry run)" }}
                </button>
            </div>
            {move || dry.value().get().map(|r| match r { Ok(v) => crate::item::dry_run_view(v).into_any(), Err(e) => portal_error(&e) })}
            {move || act.value().get().and_then(|r| r.err()).map(|e| portal_error(&e))}
            <div class="actions">
                <button type="button" on:click=move |_| open.set(false)>"Cancel"</button>
                <button type="button" class="primary" data-testid="confirm"
                    disabled=move || !dry.value().get().is_some_and(|r| r.is_ok_and(|v| v.allowed)) || reason.get().trim().is_empty() || act.pending().get()
                    on:click=move |_| { act.dispatch(StartAction { id: id2.clone(), op: "test-failover".into(), input: input(), reason: reason.get(), key: key.get() }); }>
                    {move || if act.pending().get() { "Starting…" } else { "Start the test failover" }}
                </button>
            </div>
        </Modal>
    }
}

/// The primary site's networks; an Administrator marks each isolated or production.
#[component]
pub(crate) fn NetworksPanel(networks: Vec<NetworkRow>, admin: bool, changed: Callback<()>) -> impl IntoView {
    let set = ServerAction::<SetNetworkIsolation>::new();
    Effect::new(move |_| {
        if let Some(Ok(())) = set.value().get() {
            changed.run(());
        }
    });
    view! {
        <section class="panel" aria-labelledby="networks-h" data-testid="networks">
            <h2 id="networks-h">"Networks"</h2>
            <p class="muted">"Test failovers put their VM on an isolated network only: a copy on a production network would answer for the real machine. Administrators mark them; every change is audited."</p>
            <div class="table-wrap" tabindex="0" role="region" aria-label="Table of networks"><table class="grid">
                <thead><tr><th scope="col">"Network"</th><th scope="col">"vCenter"</th><th scope="col">"Isolation"</th>{admin.then(|| view! { <th scope="col">"Change"</th> })}</tr></thead>
                <tbody>{networks.into_iter().map(|n| {
                    let name = n.name.clone();
                    let isolated = n.isolated;
                    view! { <tr>
                        <td>{n.name.clone()}</td>
                        <td>{n.vcenter.clone().unwrap_or_else(|| "—".into())}</td>
                        <td><span class=if isolated { "badge succeeded" } else { "badge" }>{if isolated { "isolated: drills may use it" } else { "production" }}</span></td>
                        {admin.then(|| view! { <td><button type="button" data-network=name.clone()
                            on:click=move |_| { set.dispatch(SetNetworkIsolation { name: name.clone(), isolated: !isolated }); }>
                            {if isolated { "Mark production" } else { "Mark isolated" }}
                        </button></td> })}
                    </tr> }
                }).collect_view()}</tbody>
            </table></div>
            {move || set.value().get().and_then(|r| r.err()).map(|e| portal_error(&e))}
        </section>
    }
}

/// A recovery plan's drill and its cleanup, from the plan page: the isolated network, the point choice (each VM its
/// newest, or one shared app-consistent point), a reason; the cleanup's notes go to every item's report.
#[component]
pub(crate) fn PlanDrill(plan: PlanRow, may: bool, denied: String) -> impl IntoView {
    let test = RwSignal::new(false);
    let clean = RwSignal::new(false);
    let network = RwSignal::new(String::new());
    let choice = RwSignal::new("latest-processed".to_owned());
    let notes = RwSignal::new(String::new());
    let reason = RwSignal::new(String::new());
    let key = RwSignal::new(String::new());
    let ack = RwSignal::new(false);
    let act = ServerAction::<crate::actions::PlanDrill>::new();
    let navigate = leptos_router::hooks::use_navigate();
    Effect::new(move |_| {
        if let Some(Ok(job)) = act.value().get() {
            navigate(&format!("/jobs/{job}"), Default::default());
        }
    });
    let (p1, p2) = (plan.id.clone(), plan.id.clone());
    let drilled = plan.drilled;
    let cleanup_why = if drilled == 0 { "No item of this plan has a test VM." } else { "" };
    view! {
        <button type="button" class=op_class("test-failover") data-testid="plan-test-failover" disabled=!may title=denied.clone()
            on:click=move |_| { key.set(new_key()); test.set(true); }>"Test failover"</button>
        <button type="button" class=op_class("cleanup-test-failover") data-testid="plan-cleanup" disabled=!may || drilled == 0 title=if may { cleanup_why.to_owned() } else { denied.clone() }
            on:click=move |_| { key.set(new_key()); ack.set(false); clean.set(true); }>{format!("Clean up test failover ({drilled})")}</button>
        <Modal open=test title=format!("Test failover of the recovery plan {}", plan.name) id="plan-test-failover-dialog">
            <p class="direction">"A drill of every item, group after group: each one's copy starts on-premises from its recovery point, on an isolated network. The cloud VMs keep running and replication goes on."</p>
            {crate::item::select("Network (isolated)", "network", plan.networks.clone(), network)}
            <fieldset>
                <legend>"Recovery point"</legend>
                {[("latest-processed", "Latest processed: each VM its newest point"), ("latest-app-consistent", "Latest app-consistent: one point shared by a replication group")].into_iter().map(|(v, label)| view! {
                    <label class="choice"><input type="radio" name="plan-drill-point" value=v prop:checked=move || choice.get() == v on:change=move |_| choice.set(v.to_owned())/>" "{label}</label>
                }).collect_view()}
            </fieldset>
            {crate::item::reason_field(reason)}
            {move || act.value().get().and_then(|r| r.err()).map(|e| portal_error(&e))}
            <div class="actions">
                <button type="button" on:click=move |_| test.set(false)>"Cancel"</button>
                <button type="button" class="primary" data-testid="confirm" disabled=move || network.get().is_empty() || reason.get().trim().is_empty() || act.pending().get()
                    on:click=move |_| { act.dispatch(crate::actions::PlanDrill { plan: p1.clone(), op: "test-failover".into(), choice: choice.get(), network: network.get(), notes: String::new(), reason: reason.get(), key: key.get() }); }>
                    {move || if act.pending().get() { "Starting…" } else { "Start the plan's test failover" }}
                </button>
            </div>
        </Modal>
        <Modal open=clean title=format!("Clean up the test failover of {}", plan.name) id="plan-cleanup-dialog">
            <p class="warning">{format!("Powers off and deletes the test VMs of {drilled} item(s) of this plan, with their disks. Each drill's report stays, with the notes below. Production is not touched.")}</p>
            <label class="block">"Notes for the drill reports"
                <textarea name="notes" rows="3" maxlength="4000" prop:value=move || notes.get() on:input=move |ev| notes.set(event_target_value(&ev))></textarea>
            </label>
            {acknowledgement("cleanup-test-failover", ack)}
            {crate::item::reason_field(reason)}
            {move || act.value().get().and_then(|r| r.err()).map(|e| portal_error(&e))}
            <div class="actions">
                <button type="button" on:click=move |_| clean.set(false)>"Keep them"</button>
                <button type="button" class=confirm_class("cleanup-test-failover") data-testid="confirm" disabled=move || !acknowledged("cleanup-test-failover", ack) || reason.get().trim().is_empty() || act.pending().get()
                    on:click=move |_| { act.dispatch(crate::actions::PlanDrill { plan: p2.clone(), op: "cleanup-test-failover".into(), choice: String::new(), network: String::new(), notes: notes.get(), reason: reason.get(), key: key.get() }); }>
                    {move || if act.pending().get() { "Starting…" } else { "Delete the test VMs" }}
                </button>
            </div>
        </Modal>
    }
}
