//! # app — Homeward's portal
//!
//! Leptos components (rendered on the server, then hydrated in the browser by `frontend`) and the server functions
//! they call. Server functions are thin adapters: they read what the portal shows and, in later work, hand actions
//! to the orchestration core. Built with feature `ssr` inside the `homeward` binary and with `hydrate` inside the
//! wasm module.
//!
//! Architecture Invariant: `app` never depends on `server` or on axum; the server hands it what it needs
//! ([`ServerContext`]) through Leptos context.

pub mod data;
mod pages;
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
            <body>
                <App/>
            </body>
        </html>
    }
}

/// The vault: header, left navigation and the routed page.
#[component]
pub fn App() -> impl IntoView {
    provide_meta_context();
    // One request for the vault summary, shared by the header and the overview page.
    let overview: VaultResource = Resource::new(|| (), |_| get_vault_summary());
    provide_context(overview);

    // Effects run only in the browser, after hydration: tests and scripts use the attribute to tell a hydrated page
    // from server-rendered HTML.
    Effect::new(|_| {
        #[cfg(feature = "hydrate")]
        if let Some(body) = document().body() {
            let _ = body.set_attribute("data-hydrated", "true");
        }
    });

    view! {
        <Router>
            <div class="layout">
                <header class="topbar">
                    <a class="brand" href="/">"Homeward"</a>
                    <span class="sep" aria-hidden="true">"/"</span>
                    <VaultName/>
                </header>
                <nav class="sidebar" aria-label="Vault">
                    <ul>
                        <li><A href="/" exact=true>"Overview"</A></li>
                        <li><A href="/replicated-items">"Replicated items"</A></li>
                        <li><A href="/recovery-plans">"Recovery plans"</A></li>
                        <li><A href="/jobs">"Jobs"</A></li>
                        <li><A href="/infrastructure">"Site Recovery infrastructure"</A></li>
                    </ul>
                </nav>
                <main id="main">
                    <ErrorBoundary fallback=pages::error_list>
                        <Routes fallback=pages::NotFound>
                            <Route path=path!("/") view=pages::Overview/>
                            <Route path=path!("/replicated-items") view=pages::ReplicatedItems/>
                            <Route path=path!("/recovery-plans") view=pages::RecoveryPlans/>
                            <Route path=path!("/jobs") view=pages::Jobs/>
                            <Route path=path!("/jobs/:id") view=pages::JobPage/>
                            <Route path=path!("/infrastructure") view=pages::Infrastructure/>
                        </Routes>
                    </ErrorBoundary>
                </main>
            </div>
        </Router>
    }
}

pub(crate) type VaultResource = Resource<Result<VaultSummary, ServerFnError>>;

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
