//! The vault's list pages, the job page with live progress, plans, infrastructure, audit and sign-in.

use leptos::prelude::*;
use leptos_meta::Title;
use leptos_router::components::Form;
use leptos_router::hooks::{use_params_map, use_query_map};

use crate::actions::{
    AddAzureSubscription, AddStorageAccount, AddVcenter, EnrollAgent, JobAction, PlanFailover, RefreshConnection,
    RemoveConnection, RevokeAgent, SetAgentRateCap, SetFault,
};
use crate::data;
use crate::model::*;
use crate::ui::*;
use crate::MeResource;

pub(crate) fn error_list(errors: ArcRwSignal<Errors>) -> impl IntoView {
    view! {
        <section class="panel error" role="alert">
            <h2>"Something went wrong"</h2>
            <ul>
                {move || errors.get().into_iter().map(|(_, e)| view! { <li>{e.to_string()}</li> }).collect_view()}
            </ul>
            <p>"Reload the page; if the problem stays, check the server log."</p>
        </section>
    }
}

/// One item's RPO over the window as a labelled chart (inline SVG: no library, nothing to download): time runs
/// left to right to "now", the dashed line is the item's alert threshold, and the scale's top is written at the
/// left. Each sample is the age of the newest recovery point at that minute; samples before the first point are
/// absent.
fn rpo_chart(r: &RpoSeries, window_min: u32) -> impl IntoView {
    let (w, h) = (320.0_f64, 66.0_f64);
    let (top, bottom, left, right) = (8.0, 50.0, 2.0, w - 2.0);
    let highest = r.samples.iter().map(|(_, s)| *s).max().unwrap_or(0);
    // The scale always shows the threshold, with room above it, so a breach reads as "above the line".
    let max = highest.max(r.threshold_s + r.threshold_s / 4).max(60);
    // A round top for the scale: whole minutes, or five of them past ten.
    let step = if max > 600 { 300 } else { 60 };
    let max = max.div_ceil(step) * step;
    let max = max as f64;
    let x = |ago: u32| right - (ago as f64 / window_min as f64) * (right - left);
    let y = |s: u64| bottom - (s as f64 / max) * (bottom - top);
    let pts = r.samples.iter().map(|(ago, s)| format!("{:.1},{:.1}", x(*ago), y(*s))).collect::<Vec<_>>().join(" ");
    let last = r.samples.last().map(|(ago, s)| (x(*ago), y(*s), *s > r.threshold_s));
    let ty = y(r.threshold_s);
    let hours = |m: u32| if m.is_multiple_of(60) { format!("{} h ago", m / 60) } else { format!("{m} min ago") };
    let label = format!(
        "RPO of {} over the last {}: highest {}, now {}; alert above {}",
        r.item,
        fmt_duration(u64::from(window_min) * 60_000),
        fmt_duration(highest * 1000),
        r.samples.last().map(|(_, s)| fmt_duration(s * 1000)).unwrap_or_else(|| "unknown".into()),
        fmt_duration(r.threshold_s * 1000)
    );
    view! {
        <svg class="spark" viewBox=format!("0 0 {w} {h}") width="320" height="66" role="img" aria-label=label>
            <line x1=left y1=bottom x2=right y2=bottom class="axis"/>
            <line x1=left y1=ty x2=right y2=ty class="target"/>
            <text x=left + 2.0 y=top - 1.0 class="tick">{fmt_duration(max as u64 * 1000)}</text>
            <text x=right - 2.0 y=ty - 2.0 class="tick" text-anchor="end">{format!("alert above {}", fmt_duration(r.threshold_s * 1000))}</text>
            <text x=left y=h - 3.0 class="tick">{hours(window_min)}</text>
            <text x=(left + right) / 2.0 y=h - 3.0 class="tick" text-anchor="middle">{hours(window_min / 2)}</text>
            <text x=right y=h - 3.0 class="tick" text-anchor="end">"now"</text>
            <polyline points=pts fill="none" stroke="currentColor" stroke-width="1.5"/>
            {last.map(|(cx, cy, breached)| view! { <circle cx=cx cy=cy r="3" class=if breached { "breached" } else { "" } fill="currentColor"/> })}
        </svg>
    }
}

/// Machine types as the portal names them.
pub(crate) fn machine_label(m: &str) -> &'static str {
    match m {
        "vmware-vm" => "VMware VM",
        "physical-server" => "Physical server",
        _ => "Machine",
    }
}

#[component]
pub(crate) fn Overview() -> impl IntoView {
    let data = Resource::new(|| (), |_| data::overview());
    let summary = expect_context::<crate::VaultResource>();
    view! {
        <Title text="Overview · Homeward"/>
        <h1>"Overview"</h1>
        <Suspense fallback=|| loading("the vault")>
            {move || Suspend::new(async move {
                let o = summary.await?;
                let d = data.await?;
                Ok::<_, ServerFnError>(view! {
                    <div class="cards">
                        <section class="panel card" aria-labelledby="vault-h">
                            <h2 id="vault-h">"Vault"</h2>
                            <dl class="props">
                                <dt>"Name"</dt><dd data-testid="vault-name">{o.name}</dd>
                                <dt>"Database"</dt><dd>{o.database}" · schema "<span data-testid="schema-version">{o.schema_version}</span></dd>
                                <dt>"Replicated items"</dt><dd data-testid="item-count">{d.total}</dd>
                            </dl>
                        </section>
                        <section class="panel card" aria-labelledby="states-h">
                            <h2 id="states-h">"Protection state"</h2>
                            <ul class="counts">
                                {d.by_state.into_iter().map(|(s, n)| view! {
                                    <li><a href=format!("/replicated-items?state={s}")><strong>{n}</strong>" "{state_badge(&s)}</a></li>
                                }).collect_view()}
                            </ul>
                        </section>
                        <section class="panel card" aria-labelledby="health-h">
                            <h2 id="health-h">"Replication health"</h2>
                            <ul class="counts">
                                {d.by_health.into_iter().map(|(s, n)| view! {
                                    <li class=format!("health {s}")><a href=format!("/replicated-items?health={s}")><strong>{n}</strong>" "{s.clone()}</a></li>
                                }).collect_view()}
                            </ul>
                        </section>
                    </div>
                    <p data-testid="open-alerts">{match d.open_alerts {
                        (0, _) => view! { "No open alert." }.into_any(),
                        (n, c) => view! { <a href="/alerts"><strong>{format!("{n} open alert{}", if n == 1 { "" } else { "s" })}</strong>{(c > 0).then(|| format!(", {c} critical"))}</a>"." }.into_any(),
                    }}</p>
                    <p data-testid="last-drill">{match d.last_drill.clone() {
                        Some((id, item, at)) => view! { "Last drill: "<a href=format!("/drills/{id}")>{format!("{item}, {} ago", fmt_duration(d.now.saturating_sub(at)))}</a>"." }.into_any(),
                        None => view! { "No drill yet: a test failover proves a failback works without touching production." }.into_any(),
                    }}</p>
                    <section class="panel" aria-labelledby="running-h">
                        <h2 id="running-h">"Running jobs"</h2>
                        {if d.running.is_empty() {
                            view! { <p class="muted">"No job is running."</p> }.into_any()
                        } else {
                            view! { <ul>{d.running.into_iter().map(|j| view! {
                                <li><a href=format!("/jobs/{}", j.id)>{format!("{} · {}", words(&j.kind), j.target)}</a>" "{badge(&j.state)}</li>
                            }).collect_view()}</ul> }.into_any()
                        }}
                    </section>
                    <section class="panel" aria-labelledby="attention-h">
                        <h2 id="attention-h">{format!("Needing attention ({})", d.needing_attention)}</h2>
                        {if d.attention.is_empty() {
                            view! { <p class="muted">"Nothing: every item is healthy, within its RPO and able to fail over or back."</p> }.into_any()
                        } else {
                            view! { <ul data-testid="attention">{d.attention.into_iter().map(|(id, why)| view! {
                                <li><a href=format!("/replicated-items/{id}")><strong>{id.clone()}</strong></a>": "{why}</li>
                            }).collect_view()}</ul> }.into_any()
                        }}
                    </section>
                    <section class="panel" aria-labelledby="rpo-h">
                        <h2 id="rpo-h">{format!("RPO over the last {} hours", d.rpo_window_min / 60)}</h2>
                        {if d.rpo.is_empty() {
                            view! { <p class="muted">"No item replicates now; RPO appears once reprotect has produced recovery points."</p> }.into_any()
                        } else {
                            let window = d.rpo_window_min;
                            view! { <div class="table-wrap" tabindex="0" role="region" aria-label="RPO of each item"><table class="grid compact" data-testid="rpo">
                                <thead><tr><th scope="col">"Item"</th><th scope="col">"RPO over the window"</th><th scope="col">"Now"</th><th scope="col">"Alert above"</th></tr></thead>
                                <tbody>{d.rpo.into_iter().map(|r| {
                                    let breached = r.samples.last().is_some_and(|(_, v)| *v > r.threshold_s);
                                    let now = r.samples.last().map(|(_, v)| fmt_duration(v * 1000)).unwrap_or_else(|| "—".into());
                                    view! { <tr>
                                        <th scope="row"><a href=format!("/replicated-items/{}", r.item)>{r.item.clone()}</a></th>
                                        <td>{rpo_chart(&r, window)}</td>
                                        <td class=if breached { "health critical" } else { "" }>{now}{breached.then_some(" (breached)")}</td>
                                        <td>{fmt_duration(r.threshold_s * 1000)}</td>
                                    </tr> }
                                }).collect_view()}</tbody>
                            </table></div> }.into_any()
                        }}
                    </section>
                })
            })}
        </Suspense>
    }
}

fn sort_link(label: &'static str, key: &'static str, sort: &str, desc: bool) -> impl IntoView {
    let active = sort == key || (sort.is_empty() && key == "name");
    let next_desc = active && !desc;
    let href = query_with(&[
        ("sort", key.to_owned()),
        ("desc", if next_desc { "1".into() } else { String::new() }),
        ("page", String::new()),
    ]);
    let aria = if active {
        if desc {
            "descending"
        } else {
            "ascending"
        }
    } else {
        "none"
    };
    view! {
        <th scope="col" aria-sort=aria><a href=href>{label}{active.then_some(if desc { " ▼" } else { " ▲" })}</a></th>
    }
}

/// The operations menu of one row: allowed ones as links that open the dialog on the item page; the others
/// disabled with the first reason in one line. A popover: it opens in the top layer, anchored to its button, so the
/// table's scroll box neither clips it nor scrolls under it; the browser keeps one open at a time and closes it on
/// Escape or a click elsewhere, giving the focus back to the button; the arrow keys move between the entries.
///
/// Fifty rows of eleven entries, with the rules' reasons, would be most of the page's weight: the entries are made
/// the first time the menu opens (its button is inert until the page is hydrated anyway), and the reasons are asked
/// for then. A role's reason is known here already.
pub(crate) fn ops_menu(r: &ItemRow, me: Option<&Me>) -> impl IntoView {
    // A CSS dashed identifier and an element id from the item id, whatever characters it has.
    let key: String = r.id.chars().map(|c| if c.is_ascii_alphanumeric() { c } else { '-' }).collect();
    let menu = format!("ops-{key}");
    let opened = RwSignal::new(false);
    let reasons = RwSignal::new(None::<Vec<Refused>>);
    let on_toggle = {
        let id = r.id.clone();
        move |ev: leptos::ev::Event| {
            #[cfg(feature = "hydrate")]
            {
                use wasm_bindgen::JsCast;
                let Some(menu) = ev.target().and_then(|t| t.dyn_into::<web_sys::HtmlElement>().ok()) else { return };
                if !menu.matches(":popover-open").unwrap_or(false) {
                    return;
                }
                opened.set(true);
                if reasons.get_untracked().is_none() {
                    let id = id.clone();
                    reasons.set(Some(Vec::new()));
                    leptos::task::spawn_local(async move {
                        match crate::data::item_refusals(id).await {
                            Ok(list) => reasons.set(Some(list)),
                            // Asked again at the next opening.
                            Err(_) => reasons.set(None),
                        }
                    });
                }
                // The entries render after this handler: focus the first one on the next frame.
                request_animation_frame(move || focus_first_entry(&menu));
            }
            #[cfg(not(feature = "hydrate"))]
            let _ = (ev, &id, opened, reasons);
        }
    };
    let (id, allowed, me) = (r.id.clone(), r.allowed.clone(), me.cloned());
    let entries = move || {
        ITEM_OPERATIONS.into_iter().map(|op| {
            let label = op_label(op);
            let role = role_denied(op, me.as_ref());
            if role.is_none() && allowed.iter().any(|a| a == op) {
                return view! { <li role="none"><a role="menuitem" class=(op_impact(op) == "destroys").then_some("danger") href=format!("/replicated-items/{id}?action={op}")>{label}</a></li> }.into_any();
            }
            let why = move || match &role {
                Some(w) => w.line(),
                None => reasons.with(|list| {
                    list.iter().flatten().find(|x| x.operation == op).map(|f| format!("{} {} ({})", f.message, f.action, f.rule)).unwrap_or_default()
                }),
            };
            let why2 = why.clone();
            view! {
                <li role="none" class="disabled"><span role="menuitem" aria-disabled="true" tabindex="-1" title=why>
                    {label}<span class="why">{why2}</span></span></li>
            }.into_any()
        }).collect_view()
    };
    view! {
        <div class="row-menu">
            <button type="button" class="menu-button" popovertarget=menu.clone() aria-haspopup="menu"
                aria-label=format!("Operations for {}", r.name) style=format!("anchor-name: --{menu}")>"⋯"</button>
            <ul role="menu" id=menu.clone() popover="auto" aria-label=format!("Operations for {}", r.name)
                style=format!("position-anchor: --{menu}") on:toggle=on_toggle on:keydown=arrow_keys_move>
                {move || opened.get().then(entries.clone())}
            </ul>
        </div>
    }
}

/// A menu that opens puts the focus on its first entry, from where the arrow keys move.
#[cfg(feature = "hydrate")]
fn focus_first_entry(menu: &web_sys::HtmlElement) {
    use wasm_bindgen::JsCast;
    if let Some(first) =
        menu.query_selector("[role=menuitem]").ok().flatten().and_then(|e| e.dyn_into::<web_sys::HtmlElement>().ok())
    {
        let _ = first.focus();
    }
}

/// Up and down arrows (and Home, End) move the focus between a menu's entries, wrapping round, as menus do.
fn arrow_keys_move(ev: leptos::ev::KeyboardEvent) {
    #[cfg(feature = "hydrate")]
    {
        use wasm_bindgen::JsCast;
        let key = ev.key();
        if !matches!(key.as_str(), "ArrowDown" | "ArrowUp" | "Home" | "End") {
            return;
        }
        let Some(menu) = ev.current_target().and_then(|t| t.dyn_into::<web_sys::Element>().ok()) else { return };
        let Ok(entries) = menu.query_selector_all("[role=menuitem]") else { return };
        let n = entries.length();
        if n == 0 {
            return;
        }
        ev.prevent_default();
        let active: Option<web_sys::Node> =
            web_sys::window().and_then(|w| w.document()).and_then(|d| d.active_element()).map(Into::into);
        let at = (0..n).find(|i| entries.item(*i).is_some_and(|e| Some(e) == active));
        let next = match (key.as_str(), at) {
            ("ArrowDown", Some(i)) => (i + 1) % n,
            ("ArrowUp", Some(i)) => (i + n - 1) % n,
            ("End", _) | ("ArrowUp", None) => n - 1,
            _ => 0,
        };
        if let Some(e) = entries.item(next).and_then(|e| e.dyn_into::<web_sys::HtmlElement>().ok()) {
            let _ = e.focus();
        }
    }
    #[cfg(not(feature = "hydrate"))]
    let _ = ev;
}

/// Why an operation is not offered: the first reason that applies (the item's state before the rest), in words,
/// with its rule; how many more reasons the rules gave.
#[derive(Clone)]
pub(crate) struct WhyNot {
    pub reason: String,
    pub rule: Option<String>,
    pub more: usize,
}

impl WhyNot {
    /// One line for a tooltip: the reason, then the rule.
    pub fn line(&self) -> String {
        match &self.rule {
            Some(rule) => format!("{} ({rule})", self.reason),
            None => self.reason.clone(),
        }
    }
}

pub(crate) fn why_not(r: &ItemRow, op: &str, me: Option<&Me>) -> Option<WhyNot> {
    let mut refused = r.refused.iter().filter(|x| x.operation == op);
    if let Some(first) = refused.next() {
        return Some(WhyNot {
            reason: format!("{} {}", first.message, first.action),
            rule: Some(first.rule.clone()),
            more: refused.count(),
        });
    }
    role_denied(op, me)
}

/// Why this person's role may not run `op` at all, whatever the item's state.
pub(crate) fn role_denied(op: &str, me: Option<&Me>) -> Option<WhyNot> {
    let drill = matches!(op, "test-failover" | "cleanup-test-failover");
    let denied = |m: Option<String>| Some(WhyNot { reason: m.unwrap_or_default(), rule: None, more: 0 });
    match me {
        Some(m) if drill && m.may_drill => None,
        Some(m) if drill => denied(m.drill_denied.clone()),
        Some(m) if m.may_operate => None,
        Some(m) => denied(m.operate_denied.clone()),
        None => denied(Some("Sign in to act on replicated items.".into())),
    }
}

/// Every operation of a replicated item, in the order of its lifecycle; the toolbar and the row menu offer these.
pub(crate) const ITEM_OPERATIONS: [&str; 11] = [
    "reprotect",
    "failover",
    "change-recovery-point",
    "commit",
    "cancel-failover",
    "reprotect-to-cloud",
    "failover-to-cloud",
    "commit-in-cloud",
    "test-failover",
    "cleanup-test-failover",
    "verify-replica",
];

pub(crate) fn op_label(op: &str) -> &'static str {
    match op {
        "reprotect" => "Reprotect",
        "failover" => "Unplanned failover",
        "commit" => "Commit",
        "cancel-failover" => "Cancel failover",
        "change-recovery-point" => "Change recovery point",
        "reprotect-to-cloud" => "Re-protect to Azure",
        "failover-to-cloud" => "Failover to Azure",
        "commit-in-cloud" => "Commit in Azure",
        "test-failover" => "Test failover",
        "cleanup-test-failover" => "Clean up test failover",
        "verify-replica" => "Verify replica",
        _ => "Operation",
    }
}

#[component]
pub(crate) fn ReplicatedItems() -> impl IntoView {
    let me = expect_context::<MeResource>();
    let (q, state, health, sort, desc, page) = (
        query_param("q"),
        query_param("state"),
        query_param("health"),
        query_param("sort"),
        query_param("desc"),
        query_param("page"),
    );
    let items = Resource::new(
        move || {
            (
                q.get(),
                state.get(),
                health.get(),
                sort.get(),
                desc.get() == "1",
                page.get().parse::<usize>().unwrap_or(1),
            )
        },
        |(q, state, health, sort, desc, page)| data::list_items(q, state, health, sort, desc, page),
    );
    let selected = RwSignal::new(Vec::<String>::new());
    let bulk_open = RwSignal::new(false);
    view! {
        <Title text="Replicated items · Homeward"/>
        <h1>"Replicated items"</h1>
        <p class="lead">"Virtual machines and physical servers this vault protects. Operations an item does not allow say why: the rule, and what to do."</p>
        <Form method="GET" action="" attr:class="filters" attr:role="search">
            <label>"Search "<input type="search" name="q" value=move || q.get() placeholder="name, id or OS"/></label>
            <label>"State "
                <select name="state">
                    <option value="" selected=move || state.get().is_empty()>"any"</option>
                    {["committed-in-cloud", "reprotect-in-progress", "protected-to-primary", "failback-in-progress", "failed-back-commit-pending", "committed-on-primary", "reprotect-to-cloud-in-progress", "protected-to-cloud", "split-brain"].into_iter().map(|s| view! {
                        <option value=s selected=move || state.get() == s>{words(s)}</option>
                    }).collect_view()}
                </select>
            </label>
            <label>"Health "
                <select name="health">
                    <option value="" selected=move || health.get().is_empty()>"any"</option>
                    {["normal", "warning", "critical"].into_iter().map(|s| view! { <option value=s selected=move || health.get() == s>{s}</option> }).collect_view()}
                </select>
            </label>
            <input type="hidden" name="sort" value=move || sort.get()/>
            <input type="hidden" name="desc" value=move || desc.get()/>
            <button type="submit">"Apply"</button>
            <a href="/replicated-items">"Clear"</a>
        </Form>
        <div class="toolbar" role="toolbar" aria-label="Selected items">
            <button type="button" data-testid="bulk-reprotect" disabled=move || selected.get().is_empty() on:click=move |_| bulk_open.set(true)>
                {move || format!("Re-protect selected to Azure ({})", selected.get().len())}
            </button>
            <span class="muted">"Select items that are back on-premises (committed) to re-protect them together (R-W4)."</span>
        </div>
        <Suspense fallback=|| loading("replicated items")>
            {move || Suspend::new(async move {
                let me = me.await.ok().flatten();
                let p = items.await?;
                let (s, d) = (sort.get_untracked(), desc.get_untracked() == "1");
                if p.rows.is_empty() {
                    return Ok::<_, ServerFnError>(view! {
                        <section class="panel empty">
                            <p class="empty-title">{if p.vault_total == 0 { "No replicated items in this vault yet." } else { "No item matches these filters." }}</p>
                            <p><a href="/replicated-items">"Show all items"</a></p>
                        </section>
                    }.into_any());
                }
                Ok(view! {
                    <crate::item::BulkReprotect open=bulk_open selected=selected choices=p.process_servers_to_cloud.clone()/>
                    <div class="table-wrap" tabindex="0" role="region" aria-label="Replicated items">
                        <table class="grid" data-testid="items">
                            <thead><tr>
                                <th scope="col"><span class="sr-only">"Select"</span></th>
                                {sort_link("Name", "name", &s, d)}{sort_link("Machine", "machine", &s, d)}{sort_link("OS", "os", &s, d)}
                                <th scope="col">"Direction"</th>
                                {sort_link("Protection state", "state", &s, d)}{sort_link("Health", "health", &s, d)}
                                {sort_link("Active location", "location", &s, d)}{sort_link("Latest recovery point", "latest", &s, d)}
                                {sort_link("RPO", "rpo", &s, d)}
                                <th scope="col"><span class="sr-only">"Operations"</span></th>
                            </tr></thead>
                            <tbody>
                                {p.rows.iter().map(|r| {
                                    let id = r.id.clone();
                                    let id2 = r.id.clone();
                                    let can = r.allowed.iter().any(|a| a == "reprotect-to-cloud");
                                    let latest = r.latest_point.clone().map(|(k, t)| format!("{} · {}", words(&k), fmt_time(t))).unwrap_or_else(|| "none yet".into());
                                    view! {
                                        <tr data-item=r.id.clone()>
                                            <td><input type="checkbox" aria-label=format!("Select {}", r.name) disabled=!can
                                                title=if can { String::new() } else { "Only items back on-premises and committed can be re-protected (R-W4).".into() }
                                                prop:checked=move || selected.get().contains(&id2)
                                                on:change=move |ev| { let on = event_target_checked(&ev); let id = id.clone(); selected.update(|v| { v.retain(|x| *x != id); if on { v.push(id); } }); }/></td>
                                            <th scope="row"><a href=format!("/replicated-items/{}", r.id)>{r.name.clone()}</a></th>
                                            <td>{machine_label(&r.machine)}</td>
                                            <td>{r.os.clone()}</td>
                                            <td>{r.direction.clone()}</td>
                                            <td>{state_badge(&r.state)}{r.active_job.clone().map(|j| view! { " "<a class="badge in-progress" href=format!("/jobs/{j}")>"job running"</a> })}
                                                {r.attention.as_ref().map(|a| view! { <br/>{attention_badge(&r.id, a)} })}</td>
                                            <td class=format!("health {}", r.health)>{r.health.clone()}</td>
                                            <td>{r.location.clone()}</td>
                                            <td>{latest}</td>
                                            <td>{r.rpo_ms.map(fmt_duration).unwrap_or_else(|| "—".into())}</td>
                                            <td>{ops_menu(r, me.as_ref())}</td>
                                        </tr>
                                    }
                                }).collect_view()}
                            </tbody>
                        </table>
                    </div>
                    {pager(p.page, p.per_page, p.total, "items")}
                }.into_any())
            })}
        </Suspense>
    }
}

#[component]
pub(crate) fn RecoveryPlans() -> impl IntoView {
    let plans = Resource::new(|| (), |_| data::list_plans());
    let me = expect_context::<MeResource>();
    let new_plan = RwSignal::new(false);
    view! {
        <Title text="Recovery plans · Homeward"/>
        <h1>"Recovery plans"</h1>
        <p class="lead">"Ordered groups of replicated items that fail over together: a group starts when the previous one has finished."</p>
        <Suspense fallback=|| ()>
            {move || Suspend::new(async move {
                let me = me.await.ok().flatten();
                let may = me.as_ref().is_some_and(|m| m.may_operate);
                let denied = me.as_ref().and_then(|m| m.operate_denied.clone()).unwrap_or_default();
                view! {
                    <div class="toolbar" role="toolbar">
                        <button type="button" data-testid="new-plan" disabled=!may title=denied on:click=move |_| new_plan.set(true)>"New plan…"</button>
                    </div>
                    {may.then(|| view! { <crate::plans::PlanEditor plan=None open=new_plan/> })}
                }
            })}
        </Suspense>
        <Suspense fallback=|| loading("recovery plans")>
            {move || Suspend::new(async move {
                let plans = plans.await?;
                if plans.is_empty() {
                    return Ok::<_, ServerFnError>(view! { <section class="panel empty"><p class="empty-title">"No recovery plans in this vault yet."</p></section> }.into_any());
                }
                Ok(view! {
                    <div class="table-wrap" tabindex="0" role="region" aria-label="Recovery plans"><table class="grid" data-testid="plans">
                        <thead><tr><th scope="col">"Plan"</th><th scope="col">"Groups"</th><th scope="col">"Items"</th></tr></thead>
                        <tbody>{plans.into_iter().map(|p| view! {
                            <tr>
                                <th scope="row"><a href=format!("/recovery-plans/{}", p.id)>{p.name.clone()}</a></th>
                                <td>{p.groups.len()}</td>
                                <td>{p.groups.iter().map(|g| g.iter().map(|i| i.name.clone()).collect::<Vec<_>>().join(", ")).collect::<Vec<_>>().join(" → ")}</td>
                            </tr>
                        }).collect_view()}</tbody>
                    </table></div>
                }.into_any())
            })}
        </Suspense>
    }
}

#[component]
pub(crate) fn PlanPage() -> impl IntoView {
    let params = use_params_map();
    let me = expect_context::<MeResource>();
    let plan = Resource::new(move || params.read().get("id").unwrap_or_default(), data::get_plan);
    let open = RwSignal::new(false);
    let choice = RwSignal::new("latest-processed".to_owned());
    let reason = RwSignal::new(String::new());
    // The same acknowledgement as a single item's failover: it shuts down production VMs.
    let ack = RwSignal::new(false);
    let key = RwSignal::new(String::new());
    let act = ServerAction::<PlanFailover>::new();
    let navigate = leptos_router::hooks::use_navigate();
    Effect::new(move |_| {
        if let Some(Ok(job)) = act.value().get() {
            navigate(&format!("/jobs/{job}"), Default::default());
        }
    });
    view! {
        <Title text="Recovery plan · Homeward"/>
        <Suspense fallback=|| loading("the recovery plan")>
            {move || Suspend::new(async move {
                let me = me.await.ok().flatten();
                let Some(p) = plan.await? else {
                    return Ok::<_, ServerFnError>(view! { <h1>"Recovery plan not found"</h1><p>"No plan has this id. Open the list of recovery plans."</p> }.into_any());
                };
                let may = me.as_ref().is_some_and(|m| m.may_operate);
                let denied = me.as_ref().and_then(|m| m.operate_denied.clone()).unwrap_or_default();
                let may_drill = me.as_ref().is_some_and(|m| m.may_drill);
                let drill_denied = me.as_ref().and_then(|m| m.drill_denied.clone()).unwrap_or_default();
                let drill_plan = p.clone();
                let end_plan = p.clone();
                let edited_plan = p.clone();
                let reprotect_plan = p.clone();
                let pid = p.id.clone();
                let choices = p.choices.clone();
                let members: usize = p.groups.iter().map(|g| g.len()).sum();
                Ok(view! {
                    <h1>{p.name.clone()}" "<small>{p.id.clone()}</small></h1>
                    <div class="toolbar" role="toolbar">
                        <crate::plans::PlanReprotect plan=reprotect_plan may=may denied=denied.clone()/>
                        <button type="button" class=op_class("failover") data-testid="plan-failover" disabled=!may title=denied.clone() on:click=move |_| { key.set(new_key()); open.set(true); }>"Failover (from Azure)"</button>
                        <crate::plans::PlanCommit plan=end_plan may=may denied=denied.clone()/>
                        <crate::plans::PlanEdit plan=edited_plan may=may denied=denied.clone()/>
                        <crate::drills::PlanDrill plan=drill_plan may=may_drill denied=drill_denied/>
                        {(!may).then(|| view! { <span class="why-inline">{denied.clone()}</span> })}
                    </div>
                    <ol class="groups">
                        {p.groups.into_iter().enumerate().map(|(n, g)| view! {
                            <li class="panel">
                                <h2>{format!("Group {}", n + 1)}</h2>
                                <table class="grid compact"><thead><tr><th scope="col">"Item"</th><th scope="col">"State"</th><th scope="col">"Health"</th><th scope="col">"Replication group"</th></tr></thead><tbody>{g.into_iter().map(|i| view! {
                                    <tr><th scope="row"><a href=format!("/replicated-items/{}", i.id)>{i.name.clone()}</a></th><td>{state_badge(&i.state)}</td><td class=format!("health {}", i.health)>{i.health.clone()}</td><td>{i.replication_group.clone().unwrap_or_default()}</td></tr>
                                }).collect_view()}</tbody></table>
                            </li>
                        }).collect_view()}
                    </ol>
                    <section class="panel"><h2>"Jobs of this plan"</h2>{crate::pages::job_table(p.jobs)}</section>
                    <Modal open=open title="Confirm failover of the recovery plan" id="plan-failover-dialog">
                        <p class="direction">"Direction: "<strong>"from Azure → on-premises"</strong>". Each item's cloud VM is shut down; groups fail over in order."</p>
                        <fieldset>
                            <legend>"Recovery point"</legend>
                            {choices.clone().into_iter().map(|c| {
                                let v = c.choice.clone();
                                let v2 = c.choice.clone();
                                view! {
                                    <label class="choice">
                                        <input type="radio" name="plan-point" value=c.choice.clone() prop:checked=move || choice.get() == v on:change=move |_| choice.set(v2.clone())/>
                                        <strong>{c.label.clone()}</strong>" "
                                        {match c.refused.clone() {
                                            Some(r) => view! { <span class="why-inline">{format!("{} {} ", r.message, r.action)}{rule_link(r.rule.clone())}</span> }.into_any(),
                                            None => view! { <ul class="muted small">{c.points.iter().map(|(i, id, t)| view! { <li>{format!("{i}: {id} ({})", fmt_time(*t))}</li> }).collect_view()}</ul> }.into_any(),
                                        }}
                                    </label>
                                }
                            }).collect_view()}
                        </fieldset>
                        <label class="check"><input type="checkbox" data-testid="ack" prop:checked=move || ack.get() on:change=move |ev| ack.set(event_target_checked(&ev))/>
                            {format!(" I understand that the cloud VMs of the plan's {members} items will be shut down, and that each on-premises VM starts from its chosen recovery point.")}</label>
                        <label>"Reason (goes to the audit log) "<textarea prop:value=move || reason.get() on:input=move |ev| reason.set(event_target_value(&ev)) required=true/></label>
                        {move || act.value().get().and_then(|r| r.err()).map(|e| portal_error(&e))}
                        <div class="actions">
                            <button type="button" on:click=move |_| open.set(false)>"Cancel"</button>
                            <button type="button" class="primary danger" data-testid="confirm" disabled=move || !ack.get() || act.pending().get() || reason.get().trim().is_empty()
                                on:click={let pid = pid.clone(); move |_| { act.dispatch(PlanFailover { plan: pid.clone(), choice: choice.get(), reason: reason.get(), key: key.get() }); }}>
                                {move || if act.pending().get() { "Starting…" } else { "Fail over the plan" }}
                            </button>
                        </div>
                    </Modal>
                }.into_any())
            })}
        </Suspense>
    }
}

pub(crate) fn job_table(jobs: Vec<JobRow>) -> AnyView {
    if jobs.is_empty() {
        return view! { <p class="muted">"No jobs yet."</p> }.into_any();
    }
    view! {
        <div class="table-wrap" tabindex="0" role="region" aria-label="Jobs">
            <table class="grid" data-testid="jobs">
                <thead><tr><th scope="col">"Job"</th><th scope="col">"Operation"</th><th scope="col">"Target"</th><th scope="col">"State"</th><th scope="col">"Started"</th><th scope="col">"Duration"</th></tr></thead>
                <tbody>{jobs.into_iter().map(|j| {
                    let target = if j.target_kind == "plan" { format!("/recovery-plans/{}", j.target) } else { format!("/replicated-items/{}", j.target) };
                    view! {
                        <tr data-job=j.id.clone()>
                            <td><a href=format!("/jobs/{}", j.id)>{j.id.clone()}</a></td>
                            <td>{words(&j.kind)}</td>
                            <td><a href=target>{j.target.clone()}</a></td>
                            <td>{badge(&j.state)}</td>
                            <td>{fmt_time(j.created_at)}</td>
                            <td>{j.finished_at.map(|f| fmt_duration(f.saturating_sub(j.started_at.unwrap_or(j.created_at)))).unwrap_or_default()}</td>
                        </tr>
                    }
                }).collect_view()}</tbody>
            </table>
        </div>
    }
    .into_any()
}

#[component]
pub(crate) fn Jobs() -> impl IntoView {
    let (item, plan, state, kind, since, page) = (
        query_param("item"),
        query_param("plan"),
        query_param("state"),
        query_param("kind"),
        query_param("since"),
        query_param("page"),
    );
    let jobs = Resource::new(
        move || {
            (item.get(), plan.get(), state.get(), kind.get(), since.get(), page.get().parse::<usize>().unwrap_or(1))
        },
        |(i, p, s, k, t, n)| data::list_jobs(i, p, s, k, t, n),
    );
    let select = |name: &'static str, current: Memo<String>, options: &'static [(&'static str, &'static str)]| {
        view! {
            <select name=name>
                {options.iter().map(|(v, l)| view! { <option value=*v selected=move || current.get() == *v>{*l}</option> }).collect_view()}
            </select>
        }
    };
    view! {
        <Title text="Jobs · Homeward"/>
        <h1>"Site Recovery jobs"</h1>
        <p class="lead">"Every reprotect, failover, commit and re-protect runs as a job with tasks. The filters are in the address: copy it to show a teammate the same view."</p>
        <Form method="GET" action="" attr:class="filters" attr:role="search">
            <label>"Item "<input type="text" name="item" value=move || item.get() size="10"/></label>
            <label>"Plan "<input type="text" name="plan" value=move || plan.get() size="10"/></label>
            <label>"State "{select("state", state, &[("", "any"), ("not-started", "not started"), ("in-progress", "in progress"), ("suspended", "suspended"), ("succeeded", "succeeded"), ("failed", "failed"), ("cancelled", "cancelled")])}</label>
            <label>"Type "{select("kind", kind, &[("", "any"), ("reprotect", "reprotect"), ("failover", "failover"), ("commit", "commit"), ("cancel-failover", "cancel failover"), ("change-recovery-point", "change recovery point"), ("reprotect-to-cloud", "re-protect to Azure"), ("failover-to-cloud", "failover to Azure"), ("commit-in-cloud", "commit in Azure"), ("test-failover", "test failover"), ("cleanup-test-failover", "test failover cleanup"), ("plan-failover", "plan failover")])}</label>
            <label>"Time "{select("since", since, &[("", "all time"), ("1h", "last hour"), ("24h", "last 24 hours"), ("7d", "last 7 days")])}</label>
            <button type="submit">"Apply"</button>
            <a href="/jobs">"Clear"</a>
        </Form>
        <Suspense fallback=|| loading("jobs")>
            {move || Suspend::new(async move {
                let p = jobs.await?;
                if p.total == 0 {
                    return Ok::<_, ServerFnError>(view! {
                        <section class="panel empty">
                            <p class="empty-title">"No jobs match."</p>
                            <p>"Jobs appear here when an operator starts an action on a replicated item or a recovery plan."</p>
                        </section>
                    }.into_any());
                }
                Ok(view! { {job_table(p.rows)}{pager(p.page, p.per_page, p.total, "jobs")} }.into_any())
            })}
        </Suspense>
    }
}

#[component]
pub(crate) fn JobPage() -> impl IntoView {
    let params = use_params_map();
    let me = expect_context::<MeResource>();
    let id = Memo::new(move |_| params.read().get("id").unwrap_or_default());
    let job = Resource::new(move || id.get(), data::get_job);
    // Live progress: the server's event stream replaces the job as it changes.
    let live = RwSignal::new(None::<JobRow>);
    let connected = RwSignal::new(false);
    let generation = RwSignal::new(0u32);
    let act = ServerAction::<JobAction>::new();
    Effect::new(move |_| {
        if let Some(Ok(_)) = act.value().get() {
            generation.update(|g| *g += 1);
        }
    });
    // Read again when the job ends: what its item allows next is known only then.
    let ended = Memo::new(move |_| {
        live.get().is_some_and(|j| matches!(j.state.as_str(), "succeeded" | "failed" | "cancelled"))
    });
    let story = Resource::new(move || (id.get(), ended.get()), |(id, _)| data::get_job_story(id));
    #[cfg(feature = "hydrate")]
    Effect::new(move |_| {
        use wasm_bindgen::closure::Closure;
        use wasm_bindgen::JsCast;
        generation.track();
        let id = id.get();
        let Ok(es) = web_sys::EventSource::new(&format!("/events/jobs/{id}")) else { return };
        let es2 = es.clone();
        let on_job = Closure::<dyn FnMut(web_sys::MessageEvent)>::new(move |ev: web_sys::MessageEvent| {
            if let Some(j) = ev.data().as_string().and_then(|t| serde_json::from_str::<JobRow>(&t).ok()) {
                let done = matches!(j.state.as_str(), "succeeded" | "failed" | "cancelled");
                live.set(Some(j));
                connected.set(!done);
                if done {
                    es2.close();
                }
            }
        });
        let _ = es.add_event_listener_with_callback("job", on_job.as_ref().unchecked_ref());
        let guard = send_wrapper::SendWrapper::new((es, on_job));
        on_cleanup(move || {
            guard.0.close();
            drop(guard);
        });
    });
    view! {
        <Title text="Job · Homeward"/>
        <Suspense fallback=|| loading("the job")>
            {move || Suspend::new(async move {
                let me = me.await.ok().flatten();
                let first = job.await?;
                let Some(first) = first else {
                    return Ok::<_, ServerFnError>(view! {
                        <h1>"Job not found"</h1>
                        <p>"No job has this id in the vault. Check the link, or open the jobs list."</p>
                    }.into_any());
                };
                Ok(view! {
                    {move || job_view(live.get().unwrap_or_else(|| first.clone()), me.clone(), connected.get(), act)}
                }.into_any())
            })}
        </Suspense>
        <Suspense fallback=|| ()>
            {move || Suspend::new(async move { story.await.ok().flatten().map(story_view) })}
        </Suspense>
    }
}

/// Who started the job and why, the point and data loss chosen, and the item's next step.
fn story_view(s: JobStory) -> impl IntoView {
    let item = s.item.clone().unwrap_or_default();
    view! {
        <section class="panel" data-testid="job-story" aria-label=s.title.clone()>
            <dl class="props">
                <dt>"Started by"</dt><dd data-testid="started-by">{s.started_by.clone().unwrap_or_else(|| "— (not in the audit log)".into())}</dd>
                <dt>"Why"</dt><dd data-testid="why">{s.reason.clone().unwrap_or_else(|| "— (no reason given)".into())}</dd>
                {s.point.clone().map(|p| view! { <dt>"Recovery point"</dt><dd data-testid="point">{p}</dd> })}
                {s.data_loss_ms.map(|ms| view! { <dt>"Data loss chosen"</dt><dd data-testid="data-loss">{if ms == 0 { "none (the latest point)".to_owned() } else { fmt_duration(ms) }}</dd> })}
            </dl>
            {(!s.next.is_empty()).then(|| view! {
                <p class="next-steps" data-testid="next-steps">"Next for "{item.clone()}": "
                    {s.next.iter().map(|op| view! { <a class="button" data-op=op.clone() href=format!("/replicated-items/{item}?action={op}")>{op_label(op)}</a>" " }).collect_view()}
                </p>
            })}
        </section>
    }
}

fn job_view(j: JobRow, me: Option<Me>, live: bool, act: ServerAction<JobAction>) -> impl IntoView {
    let href = format!("/jobs/{}", j.id);
    let target = if j.target_kind == "plan" {
        format!("/recovery-plans/{}", j.target)
    } else {
        format!("/replicated-items/{}", j.target)
    };
    // A drill's job is the Drill operator's to act on too (the server's `Actor::job_action` decides; this only
    // offers the buttons it would accept).
    let drill = matches!(j.kind.trim_start_matches("plan-"), "test-failover" | "cleanup-test-failover");
    let may = me.as_ref().is_some_and(|m| m.may_operate || (drill && m.may_drill));
    let denied = me
        .as_ref()
        .and_then(|m| if drill { m.drill_denied.clone() } else { m.operate_denied.clone() })
        .unwrap_or_default();
    let terminal = matches!(j.state.as_str(), "succeeded" | "failed" | "cancelled");
    let done = j.tasks.iter().filter(|t| t.state == "succeeded").count();
    let total = j.tasks.len().max(1);
    view! {
        <h1>{job_title(&j.kind, &j.target)}</h1>
        <section class="panel">
            <dl class="props">
                <dt>"Job"</dt><dd data-testid="job-id">{j.id.clone()}</dd>
                <dt>"Target"</dt><dd><a href=target>{j.target.clone()}</a></dd>
                <dt>"State"</dt><dd data-testid="job-state" data-state=j.state.clone()>{badge(&j.state)}</dd>
                <dt>"Progress"</dt><dd><progress max=total value=done aria-label="Tasks done">{format!("{done} of {total}")}</progress>" "{format!("{done} of {total} tasks")}</dd>
                <dt>"Started"</dt><dd>{fmt_time(j.started_at.unwrap_or(j.created_at))}</dd>
                {j.finished_at.map(|f| view! { <dt>"Duration"</dt><dd>{fmt_duration(f.saturating_sub(j.started_at.unwrap_or(j.created_at)))}</dd> })}
            </dl>
            {j.error.clone().map(|e| view! { <p class="alert" role="alert">{e}" "<em class="todo">{j.action.clone().unwrap_or_default()}</em></p> })}
            <p class="live-status" data-testid="live-status">
                {if live {
                    view! { <span class="live-dot" aria-hidden="true"></span>"Live: this page updates as the job runs." }.into_any()
                } else if terminal {
                    view! { "The job has ended." }.into_any()
                } else {
                    view! { <a href=href.clone()>"Refresh"</a>" to see its latest state." }.into_any()
                }}
            </p>
            <div class="toolbar">
                {j.allowed_actions.iter().map(|a| {
                    let (id, a2) = (j.id.clone(), a.clone());
                    view! { <button type="button" disabled=!may title=denied.clone() on:click=move |_| { act.dispatch(JobAction { id: id.clone(), action: a2.clone() }); }>{match a.as_str() { "cancel" => "Cancel job", "restart" => "Restart job", _ => "Resume job" }}</button> }
                }).collect_view()}
                {(!may && !j.allowed_actions.is_empty()).then(|| view! { <span class="why-inline">{denied.clone()}</span> })}
                {move || act.value().get().and_then(|r| r.err()).map(|e| portal_error(&e))}
            </div>
        </section>
        <ol class="timeline" data-testid="tasks">
            {j.tasks.into_iter().map(|t| {
                let took = match (t.started_at, t.finished_at) {
                    (Some(a), Some(b)) => fmt_duration(b.saturating_sub(a)),
                    (Some(_), None) => "running".into(),
                    _ => String::new(),
                };
                view! {
                    <li class=format!("task {}", t.state)>
                        <span class="task-name">{t.name.clone()}</span>
                        " "{badge(&t.state)}
                        <span class="task-meta">{took}{(t.bytes > 0).then(|| format!(" · {}", fmt_bytes(t.bytes as u64)))}{(t.attempts > 1).then(|| format!(" · {} attempts", t.attempts))}{t.link.clone().map(|(agents, wire)| format!(" · through the site agents {agents}, {} on the wire", fmt_bytes(wire)))}</span>
                        {(t.state == "in-progress").then_some(t.progress).flatten().filter(|(_, n)| *n > 0).map(|(d, n)| view! {
                            <div class="task-progress" data-testid="task-progress"><progress max=n value=d>{format!("{} %", d * 100 / n)}</progress>" "{format!("{} of {} examined", fmt_bytes(d), fmt_bytes(n))}</div>
                        })}
                        {t.error.clone().map(|e| view! { <p class="alert">{e}" "<em class="todo">{t.action.clone().unwrap_or_default()}</em></p> })}
                        {t.next_attempt_at.map(|at| view! { <p class="task-meta" data-testid="next-attempt">"Next attempt at "{fmt_time(at)}</p> })}
                        {(!t.steps.is_empty()).then(|| view! {
                            <ol class="substeps" data-testid="substeps">{t.steps.iter().map(|(name, bytes, ms)| view! {
                                <li>{name.clone()}<span class="task-meta">{format!(" {}", fmt_duration(*ms))}{(*bytes > 0).then(|| format!(" · {}", fmt_bytes(*bytes)))}</span></li>
                            }).collect_view()}</ol>
                        })}
                    </li>
                }
            }).collect_view()}
        </ol>
    }
}

#[component]
pub(crate) fn Infrastructure() -> impl IntoView {
    let me = expect_context::<MeResource>();
    let infra = Resource::new(|| (), |_| data::infrastructure());
    let set = ServerAction::<SetFault>::new();
    Effect::new(move |_| {
        if let Some(Ok(())) = set.value().get() {
            infra.refetch();
        }
    });
    view! {
        <Title text="Site Recovery infrastructure · Homeward"/>
        <h1>"Site Recovery infrastructure"</h1>
        <p class="lead">"Configuration server, vCenter servers and ESXi hosts, datastores, master targets, process servers and the site agents."</p>
        <Suspense fallback=|| loading("the infrastructure")>
            {move || Suspend::new(async move {
                let me = me.await.ok().flatten();
                let i = infra.await?;
                let admin = me.as_ref().is_some_and(|m| m.may_administer);
                let knobs = admin.then(|| crate::faults::fault_knobs(&i, set));
                Ok::<_, ServerFnError>(view! {
                    {i.sections.into_iter().map(|s| view! {
                        <section class="panel">
                            <h2>{s.title.clone()}</h2>
                            <div class="table-wrap" tabindex="0" role="region" aria-label=s.title.clone()><table class="grid">
                                <thead><tr>{s.columns.iter().map(|c| view! { <th scope="col">{c.clone()}</th> }).collect_view()}</tr></thead>
                                <tbody>{s.rows.into_iter().map(|r| view! { <tr>{r.into_iter().map(|c| view! { <td>{c}</td> }).collect_view()}</tr> }).collect_view()}</tbody>
                            </table></div>
                        </section>
                    }).collect_view()}
                    <crate::drills::NetworksPanel networks=i.networks.clone() admin=admin changed=Callback::new(move |()| infra.refetch())/>
                    <ConnectionsPanel admin=admin/>
                    <AgentsPanel admin=admin/>
                    <section class="panel" aria-labelledby="faults-h">
                        <h2 id="faults-h">"Fault knobs (demo estate)"</h2>
                        <p class="muted">"Reproduce what the article warns about, then watch the rules refuse with the reason. Administrators only; every change is audited."</p>
                        {if !admin {
                            view! { <p class="why-inline">"Your role cannot change the infrastructure. Ask an Administrator."</p> }.into_any()
                        } else {
                            knobs.into_any()

                        }}
                    </section>
                })
            })}
        </Suspense>
    }
}

/// The sites' real APIs: the vCenter (primary) and the storage account (recovery) an Administrator connected, with
/// what each reported at its last check; Administrators add (checked before saving), check again and remove.
#[component]
fn ConnectionsPanel(admin: bool) -> impl IntoView {
    let add_vc = ServerAction::<AddVcenter>::new();
    let add_sa = ServerAction::<AddStorageAccount>::new();
    let add_az = ServerAction::<AddAzureSubscription>::new();
    let refresh = ServerAction::<RefreshConnection>::new();
    let remove = ServerAction::<RemoveConnection>::new();
    let list = Resource::new(
        move || {
            (
                add_vc.version().get(),
                add_sa.version().get(),
                add_az.version().get(),
                refresh.version().get(),
                remove.version().get(),
            )
        },
        |_| data::connections(),
    );
    let confirming = RwSignal::new(None::<String>);
    let field = || RwSignal::new(String::new());
    let (vc_name, vc_url, vc_user, vc_password, vc_thumb) = (field(), field(), field(), field(), field());
    let (sa_name, sa_url, sa_container, sa_secret, sa_thumb) = (field(), field(), field(), field(), field());
    let sa_kind = RwSignal::new("account-key".to_owned());
    let (az_name, az_tenant, az_client, az_secret, az_sub, az_rg) =
        (field(), field(), field(), field(), field(), field());
    let (az_management, az_authority, az_thumb) = (field(), field(), field());
    Effect::new(move |_| {
        if let Some(Ok(())) = add_az.value().get() {
            for f in [az_name, az_tenant, az_client, az_secret, az_sub, az_rg, az_management, az_authority, az_thumb] {
                f.set(String::new());
            }
        }
    });
    // A saved connection clears its form: the secret does not linger in the page.
    Effect::new(move |_| {
        if let Some(Ok(())) = add_vc.value().get() {
            for f in [vc_name, vc_url, vc_user, vc_password, vc_thumb] {
                f.set(String::new());
            }
        }
    });
    Effect::new(move |_| {
        if let Some(Ok(())) = add_sa.value().get() {
            for f in [sa_name, sa_url, sa_container, sa_secret, sa_thumb] {
                f.set(String::new());
            }
        }
    });
    let input = move |label: &'static str,
                      name: &'static str,
                      kind: &'static str,
                      sig: RwSignal<String>,
                      hint: &'static str| {
        view! {
            <label>{label}" "<input type=kind name=name autocomplete="off" placeholder=hint prop:value=move || sig.get() on:input=move |ev| sig.set(event_target_value(&ev))/></label>
        }
    };
    view! {
        <section class="panel" aria-labelledby="connections-h" data-testid="connections">
            <h2 id="connections-h">"Site connections"</h2>
            <p class="muted">"The primary site's vCenter Server (vSphere API) and the recovery site's storage account (the cloud VM's disks as page blobs). Each is checked against its API when added and when checked again; credentials are stored encrypted and never shown."</p>
            <Suspense fallback=|| loading("the connections")>
                {move || Suspend::new(async move {
                    let rows = list.await?;
                    let empty = rows.is_empty();
                    Ok::<_, ServerFnError>(view! {
                        {empty.then(|| view! { <p class="muted">"No vCenter or storage account is connected yet: the estate is the built-in demo."</p> })}
                        {rows.into_iter().map(|c| {
                            let (id, id2, id3, name) = (c.id.clone(), c.id.clone(), c.id.clone(), c.name.clone());
                            view! {
                                <article class="connection" data-testid="connection">
                                    <h3>{c.name.clone()}" "<span class="muted small">{format!("{} · {}", c.kind, c.id)}</span></h3>
                                    <p><code>{c.url.clone()}</code>" "{c.detail.clone()}<span class="muted small">{format!(" · {}", c.credential)}{c.thumbprint.clone().map(|t| format!(" · certificate {t}"))}</span></p>
                                    {match c.last_error.clone() {
                                        Some(e) => view! { <p class="alert" role="status"><span class="badge failed">"Failing"</span>" "{e}<span class="muted small">{format!(" (checked {}; last good check {})", fmt_time(c.checked_at), c.last_ok_at.map(fmt_time).unwrap_or_else(|| "never".into()))}</span></p> }.into_any(),
                                        None => view! { <p><span class="badge succeeded">"Connected"</span>" "{c.summary.clone()}<span class="muted small">{format!(" (checked {})", fmt_time(c.checked_at))}</span></p> }.into_any(),
                                    }}
                                    {(!c.hosts.is_empty()).then(|| view! {
                                        <details><summary>"Hosts, datastores and VMs"</summary>
                                            <div class="table-wrap" tabindex="0" role="region" aria-label="ESXi hosts"><table class="grid">
                                                <caption>"ESXi hosts"</caption>
                                                <thead><tr><th scope="col">"Host"</th><th scope="col">"Cluster"</th><th scope="col">"State"</th></tr></thead>
                                                <tbody>{c.hosts.iter().map(|(n, cl, st, m)| view! { <tr><td>{n.clone()}</td><td>{cl.clone()}</td><td>{if *m { format!("{st}, in maintenance") } else { st.clone() }}</td></tr> }).collect_view()}</tbody>
                                            </table></div>
                                            <div class="table-wrap" tabindex="0" role="region" aria-label="Datastores"><table class="grid">
                                                <caption>"Datastores"</caption>
                                                <thead><tr><th scope="col">"Datastore"</th><th scope="col">"Type"</th><th scope="col">"Free"</th><th scope="col">"Capacity"</th><th scope="col">"Accessible"</th></tr></thead>
                                                <tbody>{c.datastores.iter().map(|(n, k, f, cap, a)| view! { <tr><td>{n.clone()}</td><td>{k.clone()}</td><td>{fmt_bytes(*f)}</td><td>{fmt_bytes(*cap)}</td><td>{if *a { "yes" } else { "no" }}</td></tr> }).collect_view()}</tbody>
                                            </table></div>
                                            <div class="table-wrap" tabindex="0" role="region" aria-label="Virtual machines"><table class="grid">
                                                <caption>"Virtual machines"</caption>
                                                <thead><tr><th scope="col">"VM"</th><th scope="col">"Power"</th><th scope="col">"Host"</th><th scope="col">"Disks"</th></tr></thead>
                                                <tbody>{c.vms.iter().map(|(n, p, h, d)| view! { <tr><td>{n.clone()}</td><td>{p.clone()}</td><td>{h.clone()}</td><td>{d.join(", ")}</td></tr> }).collect_view()}</tbody>
                                            </table></div>
                                        </details>
                                    })}
                                    {(!c.cloud_vms.is_empty()).then(|| view! {
                                        <details><summary>"Cloud VMs"</summary>
                                            <div class="table-wrap" tabindex="0" role="region" aria-label="Cloud VMs"><table class="grid">
                                                <caption>"Virtual machines in the resource group"</caption>
                                                <thead><tr><th scope="col">"VM"</th><th scope="col">"Provisioning"</th><th scope="col">"Disks"</th></tr></thead>
                                                <tbody>{c.cloud_vms.iter().map(|(n, p, d)| view! { <tr><td>{n.clone()}</td><td>{p.clone()}</td><td>{d.join(", ")}</td></tr> }).collect_view()}</tbody>
                                            </table></div>
                                        </details>
                                    })}
                                    {(!c.blobs.is_empty()).then(|| view! {
                                        <details><summary>"Disk blobs"</summary><ul>{c.blobs.iter().map(|b| view! { <li><code>{b.clone()}</code></li> }).collect_view()}</ul></details>
                                    })}
                                    {admin.then(|| view! {
                                        <div class="knobs">
                                            <button type="button" on:click=move |_| { refresh.dispatch(RefreshConnection { id: id.clone() }); }>"Check again"</button>
                                            <Show when=move || confirming.get().as_deref() == Some(id2.as_str()) fallback=move || {
                                                let id = id3.clone();
                                                view! { <button type="button" on:click=move |_| confirming.set(Some(id.clone()))>"Remove…"</button> }
                                            }>
                                                <span class="confirm">{format!("Remove {name} and its stored credential? ")}
                                                    <button type="button" class="danger" on:click={ let id = c.id.clone(); move |_| { remove.dispatch(RemoveConnection { id: id.clone() }); confirming.set(None); } }>"Remove"</button>
                                                    <button type="button" on:click=move |_| confirming.set(None)>"Keep"</button>
                                                </span>
                                            </Show>
                                        </div>
                                    })}
                                </article>
                            }
                        }).collect_view()}
                    })
                })}
            </Suspense>
            {move || refresh.value().get().and_then(|r| r.err()).map(|e| portal_error(&e))}
            {move || remove.value().get().and_then(|r| r.err()).map(|e| portal_error(&e))}
            {if admin {
                view! {
                    <h3>"Add the primary site's vCenter"</h3>
                    <form class="knobs" data-testid="add-vcenter" on:submit=move |ev| {
                        ev.prevent_default();
                        add_vc.dispatch(AddVcenter { name: vc_name.get_untracked(), url: vc_url.get_untracked(), user: vc_user.get_untracked(), password: vc_password.get_untracked(), thumbprint: vc_thumb.get_untracked() });
                    }>
                        {input("Name", "name", "text", vc_name, "vc-prod")}
                        {input("Address", "url", "text", vc_url, "https://vcenter.example")}
                        {input("User", "user", "text", vc_user, "administrator@vsphere.local")}
                        {input("Password", "password", "password", vc_password, "")}
                        {input("Certificate thumbprint", "thumbprint", "text", vc_thumb, "SHA-1, e.g. 2C:11:…")}
                        <button type="submit" class="primary">"Connect vCenter"</button>
                    </form>
                    {move || add_vc.value().get().and_then(|r| r.err()).map(|e| portal_error(&e))}
                    <h3>"Add the recovery site's storage account"</h3>
                    <form class="knobs" data-testid="add-storage" on:submit=move |ev| {
                        ev.prevent_default();
                        add_sa.dispatch(AddStorageAccount { name: sa_name.get_untracked(), url: sa_url.get_untracked(), container: sa_container.get_untracked(), credential: sa_kind.get_untracked(), secret: sa_secret.get_untracked(), thumbprint: sa_thumb.get_untracked() });
                    }>
                        {input("Name", "name", "text", sa_name, "azure-disks")}
                        {input("Blob endpoint", "url", "text", sa_url, "https://<account>.blob.core.windows.net")}
                        {input("Container", "container", "text", sa_container, "vhds")}
                        <label>"Credential "<select name="credential" on:change=move |ev| sa_kind.set(event_target_value(&ev))>
                            <option value="account-key" selected=true>"Account key"</option>
                            <option value="sas">"SAS token"</option>
                        </select></label>
                        {input("Key or SAS", "secret", "password", sa_secret, "")}
                        {input("Certificate thumbprint (optional)", "thumbprint", "text", sa_thumb, "private endpoints only")}
                        <button type="submit" class="primary">"Connect storage account"</button>
                    </form>
                    {move || add_sa.value().get().and_then(|r| r.err()).map(|e| portal_error(&e))}
                    <h3>"Add the recovery site's Azure subscription"</h3>
                    <p class="muted small">"The resource group of the cloud VMs: failovers power them off and commits delete them (and their managed disks) through Azure Resource Manager, as an app registration with the Virtual Machine Contributor role there."</p>
                    <form class="knobs" data-testid="add-azure" on:submit=move |ev| {
                        ev.prevent_default();
                        add_az.dispatch(AddAzureSubscription { name: az_name.get_untracked(), tenant: az_tenant.get_untracked(), client_id: az_client.get_untracked(), client_secret: az_secret.get_untracked(), subscription: az_sub.get_untracked(), resource_group: az_rg.get_untracked(), management_url: az_management.get_untracked(), authority_url: az_authority.get_untracked(), thumbprint: az_thumb.get_untracked() });
                    }>
                        {input("Name", "name", "text", az_name, "azure-dr")}
                        {input("Tenant id", "tenant", "text", az_tenant, "directory (tenant) id")}
                        {input("Application id", "client_id", "text", az_client, "application (client) id")}
                        {input("Client secret", "client_secret", "password", az_secret, "")}
                        {input("Subscription id", "subscription", "text", az_sub, "")}
                        {input("Resource group", "resource_group", "text", az_rg, "rg-dr")}
                        {input("Management endpoint (optional)", "management_url", "text", az_management, "https://management.azure.com")}
                        {input("Identity provider (optional)", "authority_url", "text", az_authority, "https://login.microsoftonline.com")}
                        {input("Certificate thumbprint (optional)", "thumbprint", "text", az_thumb, "private endpoints only")}
                        <button type="submit" class="primary">"Connect subscription"</button>
                    </form>
                    {move || add_az.value().get().and_then(|r| r.err()).map(|e| portal_error(&e))}
                }.into_any()
            } else {
                view! { <p class="why-inline">"Your role cannot add or remove site connections. Ask an Administrator."</p> }.into_any()
            }}
        </section>
    }
}

/// The site agents: state, last heartbeat, version, disks; Administrators enroll (the token and the command are
/// shown once) and revoke.
#[component]
fn AgentsPanel(admin: bool) -> impl IntoView {
    let enroll = ServerAction::<EnrollAgent>::new();
    let revoke = ServerAction::<RevokeAgent>::new();
    let cap = ServerAction::<SetAgentRateCap>::new();
    let list = Resource::new(
        move || (enroll.version().get(), revoke.version().get(), cap.version().get()),
        |_| data::agents(),
    );
    let (name, role, site) =
        (RwSignal::new(String::new()), RwSignal::new("master-target".to_owned()), RwSignal::new(String::new()));
    let confirming = RwSignal::new(None::<String>);
    view! {
        <section class="panel" aria-labelledby="agents-h" data-testid="agents">
            <h2 id="agents-h">"Site agents"</h2>
            <p class="muted">"Process servers in the cloud and master targets on-premises. Each one enrolls once with a one-time token, then talks to the vault over mutual TLS only; three missed heartbeats show it offline."</p>
            <Suspense fallback=|| loading("the agents")>
                {move || Suspend::new(async move {
                    let v = list.await?;
                    let empty = v.rows.is_empty();
                    Ok::<_, ServerFnError>(view! {
                        <p class="muted small">"Vault CA fingerprint (SHA-256): "<code>{v.ca_fingerprint.clone()}</code></p>
                        {empty.then(|| view! { <p class="muted">"No agent is enrolled yet."</p> })}
                        {(!empty).then(|| view! {
                            <div class="table-wrap" tabindex="0" role="region" aria-label="Agents"><table class="grid">
                                <thead><tr><th scope="col">"Name"</th><th scope="col">"Role"</th><th scope="col">"Site"</th><th scope="col">"State"</th><th scope="col">"Last heartbeat"</th><th scope="col">"Version"</th><th scope="col">"Disks"</th><th scope="col">"Free"</th><th scope="col">"Throughput"</th><th scope="col">"Rate cap"</th>{admin.then(|| view! { <th scope="col"><span class="sr-only">"Actions"</span></th> })}</tr></thead>
                                <tbody>{v.rows.into_iter().map(|a| {
                                    let (id, name) = (a.id.clone(), a.name.clone());
                                    let revocable = a.state != "revoked";
                                    view! {
                                        <tr>
                                            <td>{a.name.clone()}<div class="muted small">{a.id.clone()}</div></td>
                                            <td>{a.role.clone()}</td>
                                            <td>{a.site.clone()}</td>
                                            <td><span class=format!("badge agent-{}", a.state)>{a.state_title.clone()}</span></td>
                                            <td>{a.last_heartbeat_at.map(fmt_time).unwrap_or_else(|| "never".into())}</td>
                                            <td>{a.version.clone().unwrap_or_else(|| "–".into())}</td>
                                            <td>{a.disks}</td>
                                            <td>{a.free_bytes.map(fmt_bytes).unwrap_or_else(|| "–".into())}</td>
                                            <td title="Bytes on the wire per second over its replication streams of the last ten minutes">{match (a.throughput, a.streams) {
                                                (Some(t), 0) => format!("{}/s", fmt_bytes(t)),
                                                (Some(t), n) => format!("{}/s, {n} stream{} now", fmt_bytes(t), if n == 1 { "" } else { "s" }),
                                                (None, _) => "–".into(),
                                            }}</td>
                                            <td>{if admin && revocable {
                                                let id = id.clone();
                                                let text = RwSignal::new(a.rate_cap.map(|c| format!("{:.0}", c as f64 / 1_048_576.0)).unwrap_or_default());
                                                view! {
                                                    <form class="rate-cap" on:submit=move |ev| {
                                                        ev.prevent_default();
                                                        cap.dispatch(SetAgentRateCap { id: id.clone(), mib_per_s: text.get_untracked() });
                                                    }>
                                                        <label><span class="sr-only">{format!("Rate cap of {name}, MiB/s")}</span><input type="text" name="mib" size="5" inputmode="decimal" placeholder="none" prop:value=move || text.get() on:input=move |ev| text.set(event_target_value(&ev))/></label>" MiB/s "
                                                        <button type="submit">"Set"</button>
                                                    </form>
                                                }.into_any()
                                            } else {
                                                a.rate_cap.map(|c| format!("{}/s", fmt_bytes(c))).unwrap_or_else(|| "none".into()).into_any()
                                            }}</td>
                                            {admin.then(|| view! { <td>{revocable.then(|| {
                                                let (id2, id3) = (id.clone(), id.clone());
                                                view! {
                                                    <Show when=move || confirming.get().as_deref() == Some(id.as_str()) fallback=move || {
                                                        let id = id2.clone();
                                                        view! { <button type="button" on:click=move |_| confirming.set(Some(id.clone()))>"Revoke…"</button> }
                                                    }>
                                                        <span class="confirm">{format!("Revoke {name}? It is refused at its next request. ")}
                                                            <button type="button" class="danger" on:click={ let id = id3.clone(); move |_| { revoke.dispatch(RevokeAgent { id: id.clone() }); confirming.set(None); } }>"Revoke"</button>
                                                            <button type="button" on:click=move |_| confirming.set(None)>"Keep"</button>
                                                        </span>
                                                    </Show>
                                                }
                                            })}</td> })}
                                        </tr>
                                    }
                                }).collect_view()}</tbody>
                            </table></div>
                        })}
                    })
                })}
            </Suspense>
            {move || revoke.value().get().and_then(|r| r.err()).map(|e| portal_error(&e))}
            {move || cap.value().get().and_then(|r| r.err()).map(|e| portal_error(&e))}
            {if admin {
                view! {
                    <form class="knobs" data-testid="enroll-agent" on:submit=move |ev| {
                        ev.prevent_default();
                        enroll.dispatch(EnrollAgent { name: name.get_untracked(), role: role.get_untracked(), site: site.get_untracked() });
                    }>
                        <label>"Name "<input type="text" name="name" required=true size="14" placeholder="mt-01" prop:value=move || name.get() on:input=move |ev| name.set(event_target_value(&ev))/></label>
                        <label>"Role "<select name="role" on:change=move |ev| role.set(event_target_value(&ev))>
                            <option value="master-target" selected=true>"Master target (on-premises)"</option>
                            <option value="process-server">"Process server (cloud)"</option>
                        </select></label>
                        <label>"Site "<select name="site" on:change=move |ev| site.set(event_target_value(&ev))>
                            <option value="" selected=true>"the role's usual site"</option>
                            <option value="on-premises">"on-premises"</option>
                            <option value="cloud">"cloud"</option>
                        </select></label>
                        <button type="submit" class="primary">"Enroll agent"</button>
                    </form>
                    {move || enroll.value().get().map(|r| match r {
                        Ok(e) => view! {
                            <div class="enrolled" role="status" data-testid="enrolled">
                                <p>{format!("{} is enrolled. Its token is shown only now and works once, within 24 hours. On the agent's machine run:", e.name)}</p>
                                <pre><code>{e.command.clone()}</code></pre>
                            </div>
                        }.into_any(),
                        Err(e) => portal_error(&e),
                    })}
                }.into_any()
            } else {
                view! { <p class="why-inline">"Your role cannot enroll or revoke agents. Ask an Administrator."</p> }.into_any()
            }}
        </section>
    }
}

#[component]
pub(crate) fn Audit() -> impl IntoView {
    let (user, target, page) = (query_param("user"), query_param("target"), query_param("page"));
    let log = Resource::new(
        move || (user.get(), target.get(), page.get().parse::<usize>().unwrap_or(1)),
        |(u, t, p)| data::audit_log(u, t, p),
    );
    view! {
        <Title text="Audit log · Homeward"/>
        <h1>"Audit log"</h1>
        <p class="lead">"Who did what, when and why: every action, sign-in, refusal and denial, linked to its job."</p>
        <Form method="GET" action="" attr:class="filters" attr:role="search">
            <label>"User "<input type="text" name="user" value=move || user.get() size="10"/></label>
            <label>"Target "<input type="text" name="target" value=move || target.get() size="12" placeholder="item, plan or job"/></label>
            <button type="submit">"Apply"</button>
            <a href="/audit">"Clear"</a>
        </Form>
        <Suspense fallback=|| loading("the audit log")>
            {move || Suspend::new(async move {
                let p = log.await?;
                Ok::<_, ServerFnError>(view! {
                    <div class="table-wrap" tabindex="0" role="region" aria-label="Audit log"><table class="grid" data-testid="audit">
                        <thead><tr><th scope="col">"When"</th><th scope="col">"Who"</th><th scope="col">"Action"</th><th scope="col">"Target"</th><th scope="col">"Outcome"</th><th scope="col">"Reason"</th><th scope="col">"Job"</th></tr></thead>
                        <tbody>{p.rows.into_iter().map(|r| view! {
                            <tr>
                                <td>{fmt_time(r.at)}</td>
                                <td>{r.user.clone()}<small class="muted">{format!(" {}", words(&r.role))}</small></td>
                                <td>{words(&r.action)}</td>
                                <td>{r.target.clone()}</td>
                                <td><span class=format!("badge {}", r.outcome)>{r.outcome.clone()}</span>{r.detail.clone().map(|d| view! { <div class="muted small">{d}</div> })}</td>
                                <td>{r.reason.clone().unwrap_or_default()}</td>
                                <td>{r.job_id.clone().map(|j| view! { <a href=format!("/jobs/{j}")>{j.clone()}</a> })}</td>
                            </tr>
                        }).collect_view()}</tbody>
                    </table></div>
                    {pager(p.page, p.per_page, p.total as usize, "entries")}
                })
            })}
        </Suspense>
    }
}

/// Sign-in: a plain form posted to `/auth/login`, so it works before (and without) the wasm.
#[component]
pub(crate) fn Login() -> impl IntoView {
    let q = use_query_map();
    let next = move || q.read().get("next").unwrap_or_else(|| "/".into());
    let failed = move || q.read().get("error").is_some();
    view! {
        <Title text="Sign in · Homeward"/>
        <section class="panel login">
            <h1>"Sign in to the vault"</h1>
            {move || failed().then(|| view! { <p class="alert" role="alert" data-testid="login-error">"The user name or the password is wrong. Try again; an administrator can reset it with `homeward users`."</p> })}
            <form method="post" action="/auth/login">
                <input type="hidden" name="next" value=next/>
                <label>"User name"<input type="text" name="name" autocomplete="username" required=true autofocus=true/></label>
                <label>"Password"<input type="password" name="password" autocomplete="current-password" required=true/></label>
                <button type="submit" class="primary">"Sign in"</button>
            </form>
            <p class="muted small">"First start? The server printed a one-time password for 'admin' right after its URL."</p>
        </section>
    }
}

#[component]
pub(crate) fn NotFound() -> impl IntoView {
    #[cfg(feature = "ssr")]
    if let Some(r) = use_context::<leptos_axum::ResponseOptions>() {
        r.set_status(http::StatusCode::NOT_FOUND);
    }
    view! {
        <Title text="Not found · Homeward"/>
        <h1>"Page not found"</h1>
        <p>"This address is not part of the vault. Use the navigation on the left."</p>
    }
}

/// A job as a person names it: "Failover of web01", "Plan failover of plan-erp".
pub(crate) fn job_title(kind: &str, target: &str) -> String {
    let w = words(kind);
    let mut c = w.chars();
    let first = c.next().map(|f| f.to_uppercase().collect::<String>()).unwrap_or_default();
    format!("{first}{} of {target}", c.as_str())
}
