//! # app — Homeward's portal
//!
//! Leptos components (rendered on the server, then hydrated in the browser by `frontend`) and the server functions
//! they call: [`data`] reads, [`actions`] acts. [`model`] holds the plain types both sides share; [`ui`] the small
//! widgets every page uses; `pages` and `item` the pages and their dialogs.
//!
//! Architecture Invariant: `app` never depends on `server` or on axum; the server hands it what it needs
//! ([`ServerContext`], and the signed-in account in the request's extensions) through Leptos context.
//!
//! Architecture Invariant: with feature `hydrate`, `app` does not pull in `orchestrator`: every decision (rules,
//! roles) is made on the server and arrives as data ([`model::Refused`], [`model::Me`]).

mod accounts;
pub mod actions;
mod alerts;
pub mod data;
mod drills;
mod faults;
mod item;
pub mod model;
mod pages;
mod plans;
mod rules;
mod split_brain;
pub mod ui;
pub mod vault;

use leptos::prelude::*;
use leptos_meta::provide_meta_context;
#[cfg(feature = "ssr")]
use leptos_meta::MetaTags;
use leptos_router::components::{Route, Router, Routes, A};
use leptos_router::path;

#[cfg(feature = "ssr")]
pub use vault::ServerContext;
pub use vault::{get_vault_summary, VaultSummary};

/// Name of the generated JS/wasm files under `<site-root>/pkg` (`homeward.js`, `homeward_bg.wasm`,
/// `homeward.css`). The site build script and the server's Leptos options both use it.
pub const OUTPUT_NAME: &str = "homeward";

/// The HTML document around [`App`]; only the server renders it.
#[cfg(feature = "ssr")]
pub fn shell(options: LeptosOptions) -> impl IntoView {
    view! {
        <!DOCTYPE html>
        <html lang="en">
            <head>
                <meta charset="utf-8"/>
                <meta name="viewport" content="width=device-width, initial-scale=1"/>
                <meta name="color-scheme" content="light dark"/>
                <link rel="stylesheet" href="/pkg/homeward.css"/>
                <AutoReload options=options.clone()/>
                <HydrationScripts options/>
                <MetaTags/>
            </head>
            // Busy until the wasm has hydrated the page: the script-driven buttons do nothing before then, so the style
            // sheet makes them look and act inert (a click on them would be lost).
            <body aria-busy="true">
                <App/>
            </body>
        </html>
    }
}

pub(crate) type VaultResource = Resource<Result<VaultSummary, ServerFnError>>;
pub(crate) type MeResource = Resource<Result<Option<model::Me>, ServerFnError>>;

/// The vault: header, left navigation and the routed page.
#[component]
pub fn App() -> impl IntoView {
    provide_meta_context();
    // One request each for the vault summary and the signed-in account, shared by the header and the pages.
    let overview: VaultResource = Resource::new(|| (), |_| get_vault_summary());
    provide_context(overview);
    let me: MeResource = Resource::new(|| (), |_| data::whoami());
    provide_context(me);

    // Effects run only in the browser, after hydration: tests and scripts use the attribute to tell a hydrated page
    // from server-rendered HTML.
    Effect::new(|_| {
        #[cfg(feature = "hydrate")]
        if let Some(body) = document().body() {
            let _ = body.set_attribute("data-hydrated", "true");
            let _ = body.remove_attribute("aria-busy");
            // Epoch ms, for the benchmark's navigation-to-interactive figure.
            let _ = body.set_attribute("data-hydrated-at", &ui::now_ms().to_string());
        }
    });

    view! {
        <Router>
            <a class="skip" href="#main">"Skip to content"</a>
            <div class="layout">
                <header class="topbar">
                    <a class="brand" href="/">"Homeward"</a>
                    <span class="sep" aria-hidden="true">"/"</span>
                    <VaultName/>
                    <Account/>
                </header>
                <nav class="sidebar" aria-label="Vault">
                    <ul>
                        <li><A href="/" exact=true>"Overview"</A></li>
                        <li><A href="/replicated-items">"Replicated items"</A></li>
                        <li><A href="/recovery-plans">"Recovery plans"</A></li>
                        <li><A href="/jobs">"Jobs"</A></li>
                        <li><A href="/alerts">"Alerts"</A></li>
                        <li><A href="/drills">"Drills"</A></li>
                        <li><A href="/infrastructure">"Site Recovery infrastructure"</A></li>
                        <li><A href="/audit">"Audit log"</A></li>
                        <li><A href="/accounts">"Accounts"</A></li>
                        <li><A href="/rules">"Rules"</A></li>
                    </ul>
                </nav>
                <main id="main">
                    <ErrorBoundary fallback=pages::error_list>
                        <Routes fallback=pages::NotFound>
                            <Route path=path!("/") view=pages::Overview/>
                            <Route path=path!("/replicated-items") view=pages::ReplicatedItems/>
                            <Route path=path!("/replicated-items/:id") view=item::ItemPage/>
                            <Route path=path!("/recovery-plans") view=pages::RecoveryPlans/>
                            <Route path=path!("/recovery-plans/:id") view=pages::PlanPage/>
                            <Route path=path!("/jobs") view=pages::Jobs/>
                            <Route path=path!("/jobs/:id") view=pages::JobPage/>
                            <Route path=path!("/infrastructure") view=pages::Infrastructure/>
                            <Route path=path!("/drills") view=drills::DrillsPage/>
                            <Route path=path!("/alerts") view=alerts::AlertsPage/>
                            <Route path=path!("/drills/:id") view=drills::DrillReportPage/>
                            <Route path=path!("/audit") view=pages::Audit/>
                            <Route path=path!("/accounts") view=accounts::AccountsPage/>
                            <Route path=path!("/rules") view=rules::RulesPage/>
                            <Route path=path!("/login") view=pages::Login/>
                        </Routes>
                    </ErrorBoundary>
                </main>
            </div>
        </Router>
    }
}

#[component]
fn VaultName() -> impl IntoView {
    let overview = expect_context::<VaultResource>();
    view! {
        <Suspense fallback=|| view! { <span class="vault-name" aria-busy="true">"Loading vault…"</span> }>
            {move || Suspend::new(async move {
                match overview.await {
                    Ok(o) => view! { <span class="vault-name" title="Recovery Services vault">{o.name}</span> }.into_any(),
                    Err(_) => view! { <span class="vault-name error">"Vault unavailable"</span> }.into_any(),
                }
            })}
        </Suspense>
    }
}

/// Who is signed in, with the role, and the sign-out button (a form post: works without the wasm too).
#[component]
fn Account() -> impl IntoView {
    let me = expect_context::<MeResource>();
    view! {
        <Suspense fallback=|| view! { <span class="account" aria-busy="true"></span> }>
            {move || Suspend::new(async move {
                match me.await {
                    Ok(Some(m)) => view! {
                        <span class="account">
                            <span data-testid="me">{m.name.clone()}</span>
                            <span class="badge role" data-testid="role">{m.role_title.clone()}</span>
                            <form method="post" action="/auth/logout"><button type="submit" class="link">"Sign out"</button></form>
                        </span>
                    }.into_any(),
                    _ => view! { <span class="account"><a href="/login">"Sign in"</a></span> }.into_any(),
                }
            })}
        </Suspense>
    }
}
