//! The accounts page: everyone changes their own password; an Administrator lists the accounts, creates them,
//! changes roles, disables and enables them, and signs them out everywhere. Every change goes through
//! `orchestrator::acting::Actor` (role check and audit line), as the REST API's do.

use leptos::prelude::*;
use leptos_meta::Title;
use serde::{Deserialize, Serialize};

use crate::model::PortalError;
use crate::ui::{fmt_time, loading, portal_error};
use crate::MeResource;

/// One account as the Administrator's table shows it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct AccountRow {
    pub name: String,
    /// The wire name (`operator`), for the role picker.
    pub role: String,
    pub created_at: u64,
    pub disabled_at: Option<u64>,
    pub sessions: u64,
    pub tokens: u64,
    pub token_used_at: Option<u64>,
}

/// The roles an account can have: wire name and title, lowest first.
const ROLES: [(&str, &str); 4] = [
    ("reader", "Reader"),
    ("drill-operator", "Drill operator"),
    ("operator", "Operator"),
    ("administrator", "Administrator"),
];

#[cfg(feature = "ssr")]
mod server {
    use orchestrator::accounts::{AccountError, User};
    use orchestrator::acting::{ActError, Actor};
    use orchestrator::service::ServiceError;

    use crate::actions::server::{server_fault, signed_in, status};
    use crate::model::PortalError;
    use crate::ServerContext;

    /// The signed-in person and the server's context, to act through an `Actor`.
    pub fn caller() -> Result<(User, ServerContext), PortalError> {
        let who = signed_in()?;
        let c = crate::data::server::ctx().map_err(|e| PortalError::Server(e.to_string()))?;
        Ok((who, c))
    }

    pub fn actor<'a>(who: &'a User, c: &'a ServerContext) -> Actor<'a> {
        Actor { user: who, accounts: &c.accounts, service: &c.service }
    }

    pub fn account_error(e: ActError) -> PortalError {
        use http::StatusCode as S;
        let (code, text) = match e {
            ActError::Denied(d) => {
                status(S::FORBIDDEN);
                return PortalError::Denied(d.to_string());
            }
            ActError::Service(ServiceError::Account(a)) => match a {
                AccountError::UnknownUser(_) => (S::NOT_FOUND, a.to_string()),
                AccountError::Invalid(_) | AccountError::WrongPassword => (S::UNPROCESSABLE_ENTITY, a.to_string()),
                AccountError::NameTaken(_) | AccountError::LastAdministrator(_) => (S::CONFLICT, a.to_string()),
                other => return server_fault(other),
            },
            other => return server_fault(other),
        };
        status(code);
        // The core's sentences start lower-case (they are also used mid-sentence in logs).
        let mut text = text;
        if let Some(first) = text.get(..1) {
            text = format!("{}{}.", first.to_uppercase(), &text[1..]);
        }
        PortalError::Conflict(text)
    }

    pub fn role(r: &str) -> Result<orchestrator::access::Role, PortalError> {
        orchestrator::access::Role::parse(r).ok_or_else(|| {
            status(http::StatusCode::BAD_REQUEST);
            PortalError::Conflict(format!(
                "{r:?} is not a role: choose reader, drill-operator, operator or administrator"
            ))
        })
    }
}

/// The accounts (Administrator).
#[server(endpoint = "portal/accounts", input = leptos::server_fn::codec::GetUrl)]
pub async fn list_accounts() -> Result<Vec<AccountRow>, PortalError> {
    let (who, c) = server::caller()?;
    server::actor(&who, &c).accounts().await.map_err(server::account_error).map(|list| {
        list.into_iter()
            .map(|a| AccountRow {
                name: a.name,
                role: a.role.as_str().into(),
                created_at: a.created_at,
                disabled_at: a.disabled_at,
                sessions: a.sessions,
                tokens: a.tokens,
                token_used_at: a.token_used_at,
            })
            .collect()
    })
}

/// Creates an account (Administrator). An empty password makes the vault generate one, returned once.
#[server(endpoint = "portal/accounts/create", input = leptos::server_fn::codec::Json)]
pub async fn create_account(name: String, role: String, password: String) -> Result<Option<String>, PortalError> {
    let role = server::role(&role)?;
    let password = Some(password).filter(|p| !p.is_empty());
    let (who, c) = server::caller()?;
    let created = server::actor(&who, &c).create_account(&name, role, password.as_deref()).await;
    created.map(|(_, pw)| pw).map_err(server::account_error)
}

/// Gives an account another role (Administrator).
#[server(endpoint = "portal/accounts/role", input = leptos::server_fn::codec::Json)]
pub async fn set_account_role(name: String, role: String) -> Result<(), PortalError> {
    let role = server::role(&role)?;
    let (who, c) = server::caller()?;
    server::actor(&who, &c).set_account_role(&name, role).await.map(|_| ()).map_err(server::account_error)
}

/// `disable`, `enable` or `revoke` (sign out everywhere) an account (Administrator).
#[server(endpoint = "portal/accounts/act", input = leptos::server_fn::codec::Json)]
pub async fn account_action(name: String, action: String) -> Result<(), PortalError> {
    let (who, c) = server::caller()?;
    let a = server::actor(&who, &c);
    let done = match action.as_str() {
        "disable" => a.disable_account(&name).await.map(|_| ()),
        "enable" => a.enable_account(&name).await,
        "revoke" => a.revoke_account(&name).await.map(|_| ()),
        other => {
            crate::actions::server::status(http::StatusCode::BAD_REQUEST);
            return Err(PortalError::Conflict(format!(
                "{other:?} is not an account action: use disable, enable or revoke"
            )));
        }
    };
    done.map_err(server::account_error)
}

/// Changes the signed-in person's password; their other sessions end, this one stays.
#[server(endpoint = "portal/me/password", input = leptos::server_fn::codec::Json)]
pub async fn change_password(current: String, new: String, repeat: String) -> Result<u64, PortalError> {
    if new != repeat {
        crate::actions::server::status(http::StatusCode::UNPROCESSABLE_ENTITY);
        return Err(PortalError::Conflict("The two new passwords differ; type the same one twice.".into()));
    }
    let keep = use_context::<http::request::Parts>()
        .and_then(|p| p.extensions.get::<orchestrator::accounts::SessionToken>().map(|t| t.0.clone()));
    let (who, c) = server::caller()?;
    server::actor(&who, &c).change_own_password(&current, &new, keep.as_deref()).await.map_err(server::account_error)
}

#[component]
pub(crate) fn AccountsPage() -> impl IntoView {
    let me = expect_context::<MeResource>();
    view! {
        <Title text="Accounts · Homeward"/>
        <h1>"Accounts"</h1>
        <p class="lead">"Your password, and — for Administrators — who may use this vault and with which role."</p>
        <PasswordPanel/>
        <Suspense fallback=|| loading("your account")>
            {move || Suspend::new(async move {
                let admin = me.await.ok().flatten().is_some_and(|m| m.may_administer);
                if admin {
                    view! { <AccountsPanel/> }.into_any()
                } else {
                    view! { <p class="why-inline">"Only an Administrator manages accounts."</p> }.into_any()
                }
            })}
        </Suspense>
    }
}

#[component]
fn PasswordPanel() -> impl IntoView {
    let change = ServerAction::<ChangePassword>::new();
    let (current, new, repeat) =
        (RwSignal::new(String::new()), RwSignal::new(String::new()), RwSignal::new(String::new()));
    // A changed password clears the form: no password lingers in the page.
    Effect::new(move |_| {
        if let Some(Ok(_)) = change.value().get() {
            for f in [current, new, repeat] {
                f.set(String::new());
            }
        }
    });
    let field = move |label: &'static str, name: &'static str, auto: &'static str, sig: RwSignal<String>| {
        view! {
            <label>{label}" "<input type="password" name=name autocomplete=auto required=true prop:value=move || sig.get() on:input=move |ev| sig.set(event_target_value(&ev))/></label>
        }
    };
    view! {
        <section class="panel" aria-labelledby="password-h" data-testid="change-password">
            <h2 id="password-h">"Change your password"</h2>
            <p class="muted">"At least 12 characters. Your other browser sessions end; this one stays signed in."</p>
            <form class="knobs" on:submit=move |ev| {
                ev.prevent_default();
                change.dispatch(ChangePassword { current: current.get_untracked(), new: new.get_untracked(), repeat: repeat.get_untracked() });
            }>
                {field("Current password", "current", "current-password", current)}
                {field("New password", "new", "new-password", new)}
                {field("New password again", "repeat", "new-password", repeat)}
                <button type="submit" class="primary">"Change password"</button>
            </form>
            {move || change.value().get().map(|r| match r {
                Ok(n) => view! { <p role="status" data-testid="password-changed">{format!("Password changed; {n} other session(s) ended.")}</p> }.into_any(),
                Err(e) => portal_error(&e),
            })}
        </section>
    }
}

#[component]
fn AccountsPanel() -> impl IntoView {
    let create = ServerAction::<CreateAccount>::new();
    let set_role = ServerAction::<SetAccountRole>::new();
    let act = ServerAction::<AccountAction>::new();
    let list = Resource::new(
        move || (create.version().get(), set_role.version().get(), act.version().get()),
        |_| list_accounts(),
    );
    let (name, role, password) =
        (RwSignal::new(String::new()), RwSignal::new("operator".to_owned()), RwSignal::new(String::new()));
    Effect::new(move |_| {
        if let Some(Ok(_)) = create.value().get() {
            name.set(String::new());
            password.set(String::new());
        }
    });
    let confirming = RwSignal::new(None::<(String, &'static str)>);
    view! {
        <section class="panel" aria-labelledby="accounts-h" data-testid="accounts">
            <h2 id="accounts-h">"Accounts"</h2>
            <Suspense fallback=|| loading("the accounts")>
                {move || Suspend::new(async move {
                    let rows = match list.await {
                        Ok(rows) => rows,
                        Err(e) => return portal_error(&e),
                    };
                    view! {
                        <div class="table-wrap" tabindex="0" role="region" aria-label="Table of accounts"><table class="grid">
                            <thead><tr>
                                <th scope="col">"Account"</th><th scope="col">"Role"</th><th scope="col">"State"</th>
                                <th scope="col">"Signed in"</th><th scope="col">"Created"</th><th scope="col">"Actions"</th>
                            </tr></thead>
                            <tbody>{rows.into_iter().map(|a| {
                                let disabled = a.disabled_at.is_some();
                                let (n1, n2, n3, n4) = (a.name.clone(), a.name.clone(), a.name.clone(), a.name.clone());
                                let current = a.role.clone();
                                let state = match a.disabled_at {
                                    Some(t) => format!("disabled since {}", fmt_time(t)),
                                    None => "enabled".to_owned(),
                                };
                                let signed_in = format!(
                                    "{} session(s), {} API token(s){}",
                                    a.sessions,
                                    a.tokens,
                                    a.token_used_at.map(|t| format!(", a token used {}", fmt_time(t))).unwrap_or_default()
                                );
                                view! {
                                    <tr data-testid="account" data-name=a.name.clone()>
                                        <th scope="row">{a.name.clone()}</th>
                                        <td><label><span class="sr-only">{format!("Role of {}", a.name)}</span>
                                            <select name="role" on:change=move |ev| { set_role.dispatch(SetAccountRole { name: n1.clone(), role: event_target_value(&ev) }); }>
                                                {ROLES.iter().map(|(r, t)| view! { <option value=*r selected=*r == current>{*t}</option> }).collect_view()}
                                            </select></label>
                                        </td>
                                        <td data-testid="account-state">{state}</td>
                                        <td>{signed_in}</td>
                                        <td>{fmt_time(a.created_at)}</td>
                                        <td class="knobs">
                                            {if disabled {
                                                view! { <button type="button" on:click=move |_| { act.dispatch(AccountAction { name: n2.clone(), action: "enable".into() }); }>"Enable"</button> }.into_any()
                                            } else {
                                                view! { <button type="button" on:click=move |_| confirming.set(Some((n2.clone(), "disable")))>"Disable…"</button> }.into_any()
                                            }}
                                            <button type="button" on:click=move |_| confirming.set(Some((n3.clone(), "revoke")))>"Sign out everywhere…"</button>
                                            <Show when=move || confirming.get().is_some_and(|(n, _)| n == n4)>
                                                {move || confirming.get().map(|(n, what)| {
                                                    let text = if what == "disable" {
                                                        format!("Disable {n}? It cannot sign in until enabled; its sessions end and its API tokens are deleted. ")
                                                    } else {
                                                        format!("Sign {n} out everywhere? Its sessions end and its API tokens are deleted; its password still works. ")
                                                    };
                                                    let label = if what == "disable" { "Disable" } else { "Sign out everywhere" };
                                                    view! {
                                                        <span class="confirm" role="group">{text}
                                                            <button type="button" class="danger" on:click=move |_| { act.dispatch(AccountAction { name: n.clone(), action: what.into() }); confirming.set(None); }>{label}</button>
                                                            <button type="button" on:click=move |_| confirming.set(None)>"Keep"</button>
                                                        </span>
                                                    }
                                                })}
                                            </Show>
                                        </td>
                                    </tr>
                                }
                            }).collect_view()}</tbody>
                        </table></div>
                    }.into_any()
                })}
            </Suspense>
            {move || set_role.value().get().and_then(|r| r.err()).map(|e| portal_error(&e))}
            {move || act.value().get().and_then(|r| r.err()).map(|e| portal_error(&e))}
            <h3>"Add an account"</h3>
            <form class="knobs" data-testid="add-account" on:submit=move |ev| {
                ev.prevent_default();
                create.dispatch(CreateAccount { name: name.get_untracked(), role: role.get_untracked(), password: password.get_untracked() });
            }>
                <label>"Name "<input type="text" name="name" autocomplete="off" required=true prop:value=move || name.get() on:input=move |ev| name.set(event_target_value(&ev))/></label>
                <label>"Role "<select name="role" on:change=move |ev| role.set(event_target_value(&ev))>
                    {ROLES.iter().map(|(r, t)| view! { <option value=*r selected=*r == "operator">{*t}</option> }).collect_view()}
                </select></label>
                <label>"Password (empty: generate one) "<input type="password" name="password" autocomplete="new-password" prop:value=move || password.get() on:input=move |ev| password.set(event_target_value(&ev))/></label>
                <button type="submit" class="primary">"Add account"</button>
            </form>
            {move || create.value().get().map(|r| match r {
                Ok(Some(pw)) => view! { <p role="status" data-testid="generated-password">"Account added. Its password, shown this once: "<code>{pw}</code></p> }.into_any(),
                Ok(None) => view! { <p role="status">"Account added with the password you chose."</p> }.into_any(),
                Err(e) => portal_error(&e),
            })}
        </section>
    }
}
