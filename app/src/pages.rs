//! The vault's pages. Until the orchestration core lands, the pages other than the overview say plainly that the
//! vault holds nothing of their kind yet; they never show invented data.

use leptos::prelude::*;
use leptos_meta::Title;

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

#[component]
pub(crate) fn Overview() -> impl IntoView {
    let overview = expect_context::<VaultResource>();
    view! {
        <Title text="Overview · Homeward"/>
        <h1>"Overview"</h1>
        <Suspense fallback=|| view! { <section class="panel" aria-busy="true"><p>"Loading the vault…"</p></section> }>
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
        <Empty what="replicated items" next="Replicated items appear here once the primary and recovery sites are registered with this vault."/>
    }
}

#[component]
pub(crate) fn ReplicatedItems() -> impl IntoView {
    view! {
        <Title text="Replicated items · Homeward"/>
        <h1>"Replicated items"</h1>
        <p class="lead">"Virtual machines and physical servers this vault protects, their direction, health and latest recovery point."</p>
        <Empty what="replicated items" next="Register the primary site (configuration server, vCenter) under Site Recovery infrastructure first."/>
    }
}

#[component]
pub(crate) fn RecoveryPlans() -> impl IntoView {
    view! {
        <Title text="Recovery plans · Homeward"/>
        <h1>"Recovery plans"</h1>
        <p class="lead">"Ordered groups of replicated items that fail over and fail back together."</p>
        <Empty what="recovery plans" next="A recovery plan needs replicated items to group."/>
    }
}

#[component]
pub(crate) fn Jobs() -> impl IntoView {
    view! {
        <Title text="Jobs · Homeward"/>
        <h1>"Site Recovery jobs"</h1>
        <p class="lead">"Every reprotect, failover, commit and re-protect runs as a job with tasks and a link you can share."</p>
        <Empty what="jobs" next="Jobs appear here when an operator starts an action on a replicated item."/>
    }
}

#[component]
pub(crate) fn Infrastructure() -> impl IntoView {
    view! {
        <Title text="Site Recovery infrastructure · Homeward"/>
        <h1>"Site Recovery infrastructure"</h1>
        <p class="lead">"Configuration server, vCenter servers and ESXi hosts, datastores, master targets and process servers."</p>
        <Empty what="registered servers" next="Servers appear here once a site is registered with this vault."/>
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

/// An honest empty state: what is missing and what makes it appear.
#[component]
fn Empty(what: &'static str, next: &'static str) -> impl IntoView {
    view! {
        <section class="panel empty">
            <p class="empty-title">"No " {what} " in this vault yet."</p>
            <p>{next}</p>
        </section>
    }
}
