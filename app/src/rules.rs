//! The rules page: what every rule a refusal names says, grouped as the requirements group them, each row
//! addressable (`/rules#R-P2`) so that a refusal's rule ID links to its explanation.

use leptos::prelude::*;
use leptos_meta::Title;

use crate::ui::*;

/// (section, rules of it as (ID, text)).
pub type RuleSections = Vec<(String, Vec<(String, String)>)>;

#[server(endpoint = "portal/rules", input = leptos::server_fn::codec::GetUrl)]
pub async fn list_rules() -> Result<RuleSections, ServerFnError> {
    let mut out: RuleSections = Vec::new();
    for (section, id, text) in orchestrator::rule_catalogue::CATALOGUE {
        let rule = ((*id).to_owned(), (*text).to_owned());
        match out.last_mut() {
            Some((s, rules)) if s == section => rules.push(rule),
            _ => out.push(((*section).to_owned(), vec![rule])),
        }
    }
    Ok(out)
}

#[component]
pub(crate) fn RulesPage() -> impl IntoView {
    let rules = Resource::new(|| (), |_| list_rules());
    view! {
        <Title text="Rules · Homeward"/>
        <h1>"Rules"</h1>
        <p class="lead">"What the vault enforces. An operation it refuses names one of these rules, with what to do."</p>
        <Suspense fallback=|| loading("the rules")>
            {move || Suspend::new(async move {
                let sections = rules.await?;
                Ok::<_, ServerFnError>(sections.into_iter().map(|(section, rows)| view! {
                    <section class="panel">
                        <h2>{section.clone()}</h2>
                        <div class="table-wrap" tabindex="0" role="region" aria-label=format!("Rules: {section}")>
                            <table class="grid rules" data-testid="rules">
                                <thead><tr><th scope="col">"Rule"</th><th scope="col">"What it says"</th></tr></thead>
                                <tbody>{rows.into_iter().map(|(id, text)| view! {
                                    <tr id=id.clone()><th scope="row"><span class="rule">{id.clone()}</span></th><td>{text}</td></tr>
                                }).collect_view()}</tbody>
                            </table>
                        </div>
                    </section>
                }).collect_view())
            })}
        </Suspense>
    }
}
