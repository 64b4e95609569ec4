//! The vault's pages: server-rendered from the orchestration service's data, then hydrated.

use leptos::prelude::*;
use leptos_meta::Title;
use leptos_router::hooks::use_params_map;

use crate::data::{self, ItemRow, JobRow};
use crate::VaultResource;

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

/// `1795697352825` → `2026-11-26 13:12:05 UTC`; the same text on the server and in the browser (no hydration
/// mismatch, no time zone guess).
pub(crate) fn fmt_time(ms: u64) -> String {
    let secs = ms / 1000;
    let (days, rem) = (secs / 86_400, secs % 86_400);
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!("{y:04}-{m:02}-{d:02} {:02}:{:02}:{:02} UTC", rem / 3600, rem % 3600 / 60, rem % 60)
}

fn words(s: &str) -> String {
    s.replace('-', " ")
}

fn loading(what: &'static str) -> impl IntoView {
    view! { <section class="panel" aria-busy="true"><p>{format!("Loading {what}…")}</p></section> }
}

#[component]
pub(crate) fn Overview() -> impl IntoView {
    let overview = expect_context::<VaultResource>();
    let items = Resource::new(|| (), |_| data::list_items());
    view! {
        <Title text="Overview · Homeward"/>
        <h1>"Overview"</h1>
        <Suspense fallback=|| loading("the vault")>
            {move || Suspend::new(async move {
                overview.await.map(|o| view! {
                    <section class="panel" aria-labelledby="vault-h">
                        <h2 id="vault-h">"Vault"</h2>
                        <dl class="props">
                            <dt>"Name"</dt><dd data-testid="vault-name">{o.name}</dd>
                            <dt>"Created"</dt><dd><time datetime=o.created_at.clone()>{o.created_at.clone()}</time></dd>
                            <dt>"Database"</dt><dd>{o.database}</dd>
                            <dt>"Schema version"</dt><dd data-testid="schema-version">{o.schema_version}</dd>
                        </dl>
                    </section>
                })
            })}
        </Suspense>
        <Suspense fallback=|| loading("replicated items")>
            {move || Suspend::new(async move {
                items.await.map(|items| {
                    let mut states: Vec<(String, usize)> = Vec::new();
                    for i in &items {
                        match states.iter_mut().find(|(s, _)| *s == i.state) {
                            Some((_, n)) => *n += 1,
                            None => states.push((i.state.clone(), 1)),
                        }
                    }
                    let attention: Vec<ItemRow> = items.iter().filter(|i| i.health != "normal").cloned().collect();
                    view! {
                        <section class="panel" aria-labelledby="states-h">
                            <h2 id="states-h">{format!("Replicated items: {}", items.len())}</h2>
                            <ul class="counts">
                                {states.into_iter().map(|(s, n)| view! { <li><strong>{n}</strong>" "{words(&s)}</li> }).collect_view()}
                            </ul>
                        </section>
                        <section class="panel" aria-labelledby="attention-h">
                            <h2 id="attention-h">"Needing attention"</h2>
                            {if attention.is_empty() {
                                view! { <p>"Every item's replication health is normal."</p> }.into_any()
                            } else {
                                view! { <ul>{attention.into_iter().map(|i| view! { <li><strong>{i.id}</strong>": "{i.health_errors.join("; ")}</li> }).collect_view()}</ul> }.into_any()
                            }}
                        </section>
                    }
                })
            })}
        </Suspense>
    }
}

#[component]
pub(crate) fn ReplicatedItems() -> impl IntoView {
    let items = Resource::new(|| (), |_| data::list_items());
    view! {
        <Title text="Replicated items · Homeward"/>
        <h1>"Replicated items"</h1>
        <p class="lead">"Virtual machines and physical servers this vault protects. Operations an item does not allow show why, with the rule and what to do."</p>
        <Suspense fallback=|| loading("replicated items")>
            {move || Suspend::new(async move {
                items.await.map(|items| view! {
                    <div class="table-wrap">
                        <table class="grid" data-testid="items">
                            <thead><tr>
                                <th scope="col">"Name"</th><th scope="col">"Machine"</th><th scope="col">"OS"</th>
                                <th scope="col">"Protection state"</th><th scope="col">"Health"</th>
                                <th scope="col">"Latest recovery point"</th><th scope="col">"Allowed operations"</th>
                            </tr></thead>
                            <tbody>
                                {items.into_iter().map(|i| {
                                    let latest = i.latest_point.clone().map(|(k, t)| format!("{} · {}", words(&k), fmt_time(t))).unwrap_or_else(|| "none yet".into());
                                    let refused: Vec<_> = i.refused.iter().filter(|r| r.operation == "reprotect" || r.operation == "failover" || r.operation == "commit" || r.operation == "reprotect-to-cloud").cloned().collect();
                                    view! {
                                        <tr data-item=i.id.clone()>
                                            <th scope="row">{i.id.clone()}</th>
                                            <td>{words(&i.machine)}</td>
                                            <td>{i.os.clone()}</td>
                                            <td>{words(&i.state)}</td>
                                            <td class=format!("health {}", i.health)>{i.health.clone()}</td>
                                            <td>{latest}" ("{i.points}")"</td>
                                            <td>
                                                {if i.allowed.is_empty() { "—".to_owned() } else { i.allowed.iter().map(|a| words(a)).collect::<Vec<_>>().join(", ") }}
                                                {(!refused.is_empty()).then(|| view! {
                                                    <details class="why-not">
                                                        <summary>"Why not others"</summary>
                                                        <ul>{refused.into_iter().map(|r| view! {
                                                            <li><strong>{words(&r.operation)}</strong>" ("{r.rule.clone()}"): "{r.message.clone()}" "<em>{r.action.clone()}</em></li>
                                                        }).collect_view()}</ul>
                                                    </details>
                                                })}
                                            </td>
                                        </tr>
                                    }
                                }).collect_view()}
                            </tbody>
                        </table>
                    </div>
                })
            })}
        </Suspense>
    }
}

#[component]
pub(crate) fn RecoveryPlans() -> impl IntoView {
    let plans = Resource::new(|| (), |_| data::list_plans());
    view! {
        <Title text="Recovery plans · Homeward"/>
        <h1>"Recovery plans"</h1>
        <p class="lead">"Ordered groups of replicated items that fail over together: a group starts when the previous one has finished."</p>
        <Suspense fallback=|| loading("recovery plans")>
            {move || Suspend::new(async move {
                plans.await.map(|plans| {
                    if plans.is_empty() {
                        return view! { <section class="panel empty"><p class="empty-title">"No recovery plans in this vault yet."</p></section> }.into_any();
                    }
                    plans.into_iter().map(|p| view! {
                        <section class="panel">
                            <h2>{p.name.clone()}" "<small>{p.id.clone()}</small></h2>
                            <ol>{p.groups.into_iter().enumerate().map(|(n, g)| view! { <li>{format!("Group {}: {}", n + 1, g.join(", "))}</li> }).collect_view()}</ol>
                        </section>
                    }).collect_view().into_any()
                })
            })}
        </Suspense>
    }
}

fn job_state_badge(state: &str) -> impl IntoView {
    view! { <span class=format!("badge {state}")>{words(state)}</span> }
}

#[component]
pub(crate) fn Jobs() -> impl IntoView {
    let jobs = Resource::new(|| (), |_| data::list_jobs());
    view! {
        <Title text="Jobs · Homeward"/>
        <h1>"Site Recovery jobs"</h1>
        <p class="lead">"Every reprotect, failover, commit and re-protect runs as a job with tasks and a link you can share."</p>
        <Suspense fallback=|| loading("jobs")>
            {move || Suspend::new(async move {
                jobs.await.map(|jobs| {
                    if jobs.is_empty() {
                        return view! {
                            <section class="panel empty">
                                <p class="empty-title">"No jobs in this vault yet."</p>
                                <p>"Jobs appear here when an operator starts an action on a replicated item."</p>
                            </section>
                        }.into_any();
                    }
                    view! {
                        <div class="table-wrap">
                            <table class="grid">
                                <thead><tr><th scope="col">"Job"</th><th scope="col">"Operation"</th><th scope="col">"Target"</th><th scope="col">"State"</th><th scope="col">"Started"</th></tr></thead>
                                <tbody>{jobs.into_iter().map(|j| view! {
                                    <tr>
                                        <td><a href=format!("/jobs/{}", j.id)>{j.id.clone()}</a></td>
                                        <td>{words(&j.kind)}</td>
                                        <td>{j.target.clone()}</td>
                                        <td>{job_state_badge(&j.state)}</td>
                                        <td>{fmt_time(j.created_at)}</td>
                                    </tr>
                                }).collect_view()}</tbody>
                            </table>
                        </div>
                    }.into_any()
                })
            })}
        </Suspense>
    }
}

#[component]
pub(crate) fn JobPage() -> impl IntoView {
    let params = use_params_map();
    let job = Resource::new(move || params.read().get("id").unwrap_or_default(), data::get_job);
    view! {
        <Title text="Job · Homeward"/>
        <Suspense fallback=|| loading("the job")>
            {move || Suspend::new(async move {
                job.await.map(|job| match job {
                    None => view! {
                        <h1>"Job not found"</h1>
                        <p>"No job has this id in the vault. Check the link, or open the jobs list."</p>
                    }.into_any(),
                    Some(j) => job_view(j).into_any(),
                })
            })}
        </Suspense>
    }
}

fn job_view(j: JobRow) -> impl IntoView {
    let href = format!("/jobs/{}", j.id);
    view! {
        <h1>{format!("{} · {}", words(&j.kind), j.target)}</h1>
        <section class="panel">
            <dl class="props">
                <dt>"Job"</dt><dd data-testid="job-id">{j.id.clone()}</dd>
                <dt>"State"</dt><dd data-testid="job-state">{job_state_badge(&j.state)}</dd>
                <dt>"Started"</dt><dd>{fmt_time(j.created_at)}</dd>
                <dt>"Allowed actions"</dt><dd>{if j.allowed_actions.is_empty() { "none".to_owned() } else { j.allowed_actions.join(", ") }}</dd>
            </dl>
            {j.error.clone().map(|e| view! { <p class="error-text" role="alert">{e}" — "<em>{j.action.clone().unwrap_or_default()}</em></p> })}
            <p><a href=href>"Refresh"</a>" to see its latest state."</p>
        </section>
        <ol class="timeline" data-testid="tasks">
            {j.tasks.into_iter().map(|t| {
                let took = match (t.started_at, t.finished_at) {
                    (Some(a), Some(b)) => format!("{:.1} s", (b.saturating_sub(a)) as f64 / 1000.0),
                    _ => String::new(),
                };
                view! {
                    <li class=format!("task {}", t.state)>
                        <span class="task-name">{t.name.clone()}</span>
                        " "{job_state_badge(&t.state)}
                        <span class="task-meta">{took}{(t.bytes > 0).then(|| format!(" · {} bytes", t.bytes))}{(t.attempts > 1).then(|| format!(" · {} attempts", t.attempts))}</span>
                        {t.error.clone().map(|e| view! { <p class="error-text">{e}" — "<em>{t.action.clone().unwrap_or_default()}</em></p> })}
                    </li>
                }
            }).collect_view()}
        </ol>
    }
}

#[component]
pub(crate) fn Infrastructure() -> impl IntoView {
    let infra = Resource::new(|| (), |_| data::infrastructure());
    view! {
        <Title text="Site Recovery infrastructure · Homeward"/>
        <h1>"Site Recovery infrastructure"</h1>
        <p class="lead">"Configuration server, vCenter servers and ESXi hosts, datastores, master targets and process servers."</p>
        <Suspense fallback=|| loading("the infrastructure")>
            {move || Suspend::new(async move {
                infra.await.map(|sections| sections.into_iter().map(|s| view! {
                    <section class="panel">
                        <h2>{s.title.clone()}</h2>
                        <div class="table-wrap"><table class="grid">
                            <thead><tr>{s.columns.iter().map(|c| view! { <th scope="col">{c.clone()}</th> }).collect_view()}</tr></thead>
                            <tbody>{s.rows.into_iter().map(|r| view! { <tr>{r.into_iter().map(|c| view! { <td>{c}</td> }).collect_view()}</tr> }).collect_view()}</tbody>
                        </table></div>
                    </section>
                }).collect_view())
            })}
        </Suspense>
    }
}

#[component]
pub(crate) fn NotFound() -> impl IntoView {
    view! {
        <Title text="Not found · Homeward"/>
        <h1>"Page not found"</h1>
        <p>"This address is not part of the vault. Use the navigation on the left."</p>
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn times_render_as_utc_calendar_dates() {
        assert_eq!(super::fmt_time(0), "1970-01-01 00:00:00 UTC");
        assert_eq!(super::fmt_time(951_782_400_000), "2000-02-29 00:00:00 UTC");
        assert_eq!(super::fmt_time(1_795_697_525_000), "2026-11-26 12:52:05 UTC");
    }
}
