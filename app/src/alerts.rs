//! Alerts in the portal: the open ones first (acknowledge), the resolved ones below; and, for Administrators, the
//! webhooks that hear of alerts and job ends, with each one's delivery log.

use leptos::prelude::*;
use leptos_meta::Title;

use crate::model::*;
use crate::ui::*;
use crate::MeResource;

#[server(endpoint = "portal/alerts", input = leptos::server_fn::codec::GetUrl)]
pub async fn list_alerts(all: bool) -> Result<Vec<AlertRow>, ServerFnError> {
    use crate::data::server::*;
    let s = service()?;
    Ok(s.alerts()
        .list(all, 200)
        .await
        .map_err(internal)?
        .into_iter()
        .map(|a| AlertRow {
            id: a.id,
            kind: words(&a.kind),
            subject: a.subject,
            severity: words(&a.severity),
            message: a.message,
            started_at: a.started_at,
            resolved_at: a.resolved_at,
            acknowledged_at: a.acknowledged_at,
            acknowledged_by: a.acknowledged_by,
            state: a.state.to_owned(),
        })
        .collect())
}

#[server(endpoint = "portal/alerts/ack", input = leptos::server_fn::codec::Json)]
pub async fn acknowledge_alert(id: String) -> Result<(), PortalError> {
    use crate::actions::server;
    use orchestrator::acting::Actor;
    let user = server::signed_in()?;
    let c = server::service_ctx()?;
    let actor = Actor { user: &user, accounts: &c.accounts, service: &c.service };
    actor
        .acknowledge_alert(&id)
        .await
        .map_err(|e| server::portal_error(orchestrator::lifecycle::Operation::Failover, e))?;
    Ok(())
}

#[server(endpoint = "portal/webhooks", input = leptos::server_fn::codec::GetUrl)]
pub async fn list_webhooks() -> Result<Vec<WebhookRow>, ServerFnError> {
    use crate::data::server::*;
    let user = crate::actions::server::signed_in().map_err(|e| ServerFnError::new(e.to_string()))?;
    if user.role.may(orchestrator::access::Permission::Administer).is_err() {
        return Ok(Vec::new());
    }
    let s = service()?;
    Ok(s.webhooks()
        .list()
        .await
        .map_err(internal)?
        .into_iter()
        .map(|h| WebhookRow {
            id: h.id,
            url: h.url,
            events: h.events.iter().map(words).collect(),
            created_at: h.created_at,
            created_by: h.created_by,
        })
        .collect())
}

/// Adds a webhook (Administrator); answers its id and its signing secret, shown once.
#[server(endpoint = "portal/webhooks/add", input = leptos::server_fn::codec::Json)]
pub async fn add_webhook(url: String, alerts: bool, jobs: bool) -> Result<(String, String), PortalError> {
    use crate::actions::server;
    use orchestrator::acting::Actor;
    use orchestrator::webhooks::EventKind;
    let user = server::signed_in()?;
    let c = server::service_ctx()?;
    let actor = Actor { user: &user, accounts: &c.accounts, service: &c.service };
    let events: Vec<EventKind> = [(alerts, EventKind::Alert), (jobs, EventKind::Job)]
        .into_iter()
        .filter(|(on, _)| *on)
        .map(|(_, e)| e)
        .collect();
    let (hook, secret) = actor
        .add_webhook(&url, None, &events)
        .await
        .map_err(|e| server::portal_error(orchestrator::lifecycle::Operation::Failover, e))?;
    Ok((hook.id, secret))
}

#[server(endpoint = "portal/webhooks/remove", input = leptos::server_fn::codec::Json)]
pub async fn remove_webhook(id: String) -> Result<(), PortalError> {
    use crate::actions::server;
    use orchestrator::acting::Actor;
    let user = server::signed_in()?;
    let c = server::service_ctx()?;
    let actor = Actor { user: &user, accounts: &c.accounts, service: &c.service };
    actor.remove_webhook(&id).await.map_err(|e| server::portal_error(orchestrator::lifecycle::Operation::Failover, e))
}

#[server(endpoint = "portal/webhooks/deliveries", input = leptos::server_fn::codec::GetUrl)]
pub async fn webhook_deliveries(id: String) -> Result<Vec<DeliveryRow>, ServerFnError> {
    use crate::data::server::*;
    let user = crate::actions::server::signed_in().map_err(|e| ServerFnError::new(e.to_string()))?;
    if user.role.may(orchestrator::access::Permission::Administer).is_err() {
        return Ok(Vec::new());
    }
    let s = service()?;
    Ok(s.webhooks()
        .deliveries(&id, 50)
        .await
        .map_err(internal)?
        .into_iter()
        .map(|d| DeliveryRow {
            id: d.id,
            event: d.event,
            state: d.state,
            attempts: d.attempts,
            last_status: d.last_status,
            last_error: d.last_error,
            created_at: d.created_at,
            delivered_at: d.delivered_at,
        })
        .collect())
}

fn kind_words(kind: &str) -> &'static str {
    match kind {
        "rpo-breached" => "RPO breached",
        "connection-failing" => "site connection failing",
        "agent-offline" => "agent offline",
        "datastore-nearly-full" => "datastore nearly full",
        _ => "alert",
    }
}

#[component]
pub(crate) fn AlertsPage() -> impl IntoView {
    let me = expect_context::<MeResource>();
    let all = RwSignal::new(false);
    let alerts = Resource::new(move || all.get(), list_alerts);
    let ack = ServerAction::<AcknowledgeAlert>::new();
    Effect::new(move |_| {
        if let Some(Ok(())) = ack.value().get() {
            alerts.refetch();
        }
    });
    view! {
        <Title text="Alerts · Homeward"/>
        <h1>"Alerts"</h1>
        <p class="lead">"What needs a person apart from failed jobs: an RPO past its item's threshold, a site connection or agent that stopped answering, a datastore nearly full. Each resolves itself when its condition clears."</p>
        <label class="check"><input type="checkbox" data-testid="all-alerts" prop:checked=move || all.get() on:change=move |ev| all.set(event_target_checked(&ev))/>" Show resolved alerts too"</label>
        {move || ack.value().get().and_then(|r| r.err()).map(|e| portal_error(&e))}
        <Suspense fallback=|| loading("the alerts")>
            {move || Suspend::new(async move {
                let may = me.await.ok().flatten().is_some_and(|m| m.may_operate);
                let rows = alerts.await?;
                Ok::<_, ServerFnError>(if rows.is_empty() {
                    view! { <p class="muted" data-testid="no-alerts">"No open alert: every item keeps its RPO, every site connection and agent answers, every datastore has room."</p> }.into_any()
                } else {
                    view! {
                        <div class="table-wrap" tabindex="0" role="region" aria-label="Alerts"><table class="grid" data-testid="alerts">
                            <thead><tr><th scope="col">"Since"</th><th scope="col">"Severity"</th><th scope="col">"What"</th><th scope="col">"About"</th><th scope="col">"Details and what to do"</th><th scope="col">"State"</th></tr></thead>
                            <tbody>{rows.into_iter().map(|a| {
                                let id = a.id.clone();
                                view! { <tr data-alert=a.id.clone()>
                                    <td>{fmt_time(a.started_at)}</td>
                                    <td><span class=format!("health {}", a.severity)>{a.severity.clone()}</span></td>
                                    <td>{kind_words(&a.kind)}</td>
                                    <td>{a.subject.clone()}</td>
                                    <td>{a.message.clone()}</td>
                                    <td>{match a.state.as_str() {
                                        "open" if may => view! { <button type="button" data-testid="ack" on:click=move |_| { ack.dispatch(AcknowledgeAlert { id: id.clone() }); }>"Acknowledge"</button> }.into_any(),
                                        "open" => view! { "open" }.into_any(),
                                        "acknowledged" => view! { {format!("acknowledged by {}", a.acknowledged_by.clone().unwrap_or_default())} }.into_any(),
                                        _ => view! { {format!("resolved {}", a.resolved_at.map(fmt_time).unwrap_or_default())} }.into_any(),
                                    }}</td>
                                </tr> }
                            }).collect_view()}</tbody>
                        </table></div>
                    }.into_any()
                })
            })}
        </Suspense>
        <WebhooksPanel/>
    }
}

/// The webhooks, for Administrators: add (the secret shown once), remove, each one's delivery log.
#[component]
fn WebhooksPanel() -> impl IntoView {
    let me = expect_context::<MeResource>();
    let hooks = Resource::new(|| (), |_| list_webhooks());
    let add = ServerAction::<AddWebhook>::new();
    let remove = ServerAction::<RemoveWebhook>::new();
    let url = RwSignal::new(String::new());
    let on_alerts = RwSignal::new(true);
    let on_jobs = RwSignal::new(true);
    let shown = RwSignal::new(None::<String>);
    Effect::new(move |_| {
        if add.value().get().is_some_and(|r| r.is_ok()) || remove.value().get().is_some_and(|r| r.is_ok()) {
            hooks.refetch();
        }
    });
    view! {
        <Suspense fallback=|| ()>
            {move || Suspend::new(async move {
                let admin = me.await.ok().flatten().is_some_and(|m| m.may_administer);
                let list = hooks.await?;
                Ok::<_, ServerFnError>(admin.then(|| view! {
                    <section class="panel" data-testid="webhooks" aria-labelledby="webhooks-h">
                        <h2 id="webhooks-h">"Notifications (webhooks)"</h2>
                        <p class="muted">"Alerts opening and resolving, and jobs ending, are POSTed as JSON to each address, signed: X-Homeward-Signature is sha256= the HMAC-SHA256 of the timestamp (X-Homeward-Timestamp), a dot and the body, under the webhook's secret. A failed delivery is retried with doubling waits, eight times."</p>
                        {if list.is_empty() { view! { <p class="muted">"No webhook yet."</p> }.into_any() } else {
                            view! { <ul class="webhooks">{list.into_iter().map(|h| {
                                let id = h.id.clone();
                                let open = RwSignal::new(false);
                                let log = Resource::new(move || open.get().then(|| id.clone()), |id| async move {
                                    match id { Some(id) => webhook_deliveries(id).await, None => Ok(Vec::new()) }
                                });
                                let rid = h.id.clone();
                                view! { <li data-webhook=h.id.clone()>
                                    <strong>{h.url.clone()}</strong>{format!(" · {} · added by {} {}", h.events.join(", "), h.created_by, fmt_time(h.created_at))}" "
                                    <button type="button" on:click=move |_| open.update(|o| *o = !*o)>{move || if open.get() { "Hide deliveries" } else { "Deliveries" }}</button>" "
                                    <button type="button" class="danger" on:click=move |_| { remove.dispatch(RemoveWebhook { id: rid.clone() }); }>"Remove"</button>
                                    <Suspense fallback=|| ()>{move || Suspend::new(async move {
                                        let rows = log.await?;
                                        Ok::<_, ServerFnError>((!rows.is_empty()).then(|| view! {
                                            <table class="grid compact" data-testid="deliveries"><thead><tr><th scope="col">"Queued"</th><th scope="col">"Event"</th><th scope="col">"State"</th><th scope="col">"Attempts"</th><th scope="col">"Last error"</th></tr></thead>
                                            <tbody>{rows.into_iter().map(|d| view! { <tr><td>{fmt_time(d.created_at)}</td><td>{d.event.clone()}</td><td>{d.state.clone()}</td><td>{d.attempts}</td><td>{d.last_error.clone().unwrap_or_default()}</td></tr> }).collect_view()}</tbody></table>
                                        }))
                                    })}</Suspense>
                                </li> }
                            }).collect_view()}</ul> }.into_any()
                        }}
                        <div class="form-grid">
                            <label class="block">"Address (http:// or https://)"<input type="url" name="webhook-url" placeholder="https://hooks.example/dr" prop:value=move || url.get() on:input=move |ev| url.set(event_target_value(&ev))/></label>
                        </div>
                        <label class="check"><input type="checkbox" prop:checked=move || on_alerts.get() on:change=move |ev| on_alerts.set(event_target_checked(&ev))/>" Alerts"</label>
                        <label class="check"><input type="checkbox" prop:checked=move || on_jobs.get() on:change=move |ev| on_jobs.set(event_target_checked(&ev))/>" Job ends"</label>
                        <div class="actions"><button type="button" class="primary" data-testid="add-webhook" disabled=move || url.get().trim().is_empty() || add.pending().get()
                            on:click=move |_| { shown.set(None); add.dispatch(AddWebhook { url: url.get(), alerts: on_alerts.get(), jobs: on_jobs.get() }); }>"Add webhook"</button></div>
                        {move || add.value().get().map(|r| match r {
                            Ok((id, secret)) => view! { <p class="notice" data-testid="webhook-secret">{format!("Webhook {id} added. Its signing secret, shown this once: ")}<code>{secret}</code></p> }.into_any(),
                            Err(e) => portal_error(&e),
                        })}
                        {move || remove.value().get().and_then(|r| r.err()).map(|e| portal_error(&e))}
                    </section>
                }))
            })}
        </Suspense>
    }
}
