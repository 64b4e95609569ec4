//! Small pieces every page uses: formatting (the same text on the server and in the browser, so hydration never
//! mismatches), badges, the loading state, refusals, pagination links and the modal dialog.

use leptos::prelude::*;
use leptos_router::hooks::use_query_map;

/// `1795697352825` → `2026-11-26 13:12:05 UTC`; no time zone guess.
pub fn fmt_time(ms: u64) -> String {
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

/// `95_000` → `1 min 35 s`.
pub fn fmt_duration(ms: u64) -> String {
    let s = ms / 1000;
    match s {
        0 if ms > 0 => format!("{ms} ms"),
        0..=59 => format!("{s} s"),
        // Whole minutes and hours without a trailing "0 s" / "0 min": thresholds read as they were set.
        60..=3599 if s.is_multiple_of(60) => format!("{} min", s / 60),
        60..=3599 => format!("{} min {} s", s / 60, s % 60),
        _ if s % 3600 < 60 => format!("{} h", s / 3600),
        _ => format!("{} h {} min", s / 3600, s % 3600 / 60),
    }
}

pub fn fmt_bytes(b: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = b as f64;
    let mut u = 0;
    while v >= 1024.0 && u < UNITS.len() - 1 {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{b} B")
    } else {
        format!("{v:.1} {}", UNITS[u])
    }
}

/// `failed-back-commit-pending` → `failed back commit pending`.
pub fn words(s: &str) -> String {
    s.replace('-', " ")
}

pub fn badge(state: &str) -> impl IntoView {
    view! { <span class=format!("badge {state}")>{words(state)}</span> }
}

/// A protection state as a badge: a shape and a colour for its kind, and the state in words. Protected (a filled
/// circle), moving (a ring: a job or the initial replication runs), waiting on a person (a square), at rest with
/// nothing replicating (an outlined square), split-brain (a diamond). Shapes as well as colours, for colour blindness.
pub fn state_badge(state: &str) -> impl IntoView {
    let kind = match state {
        "protected-to-cloud" | "protected-to-primary" => "protected",
        "split-brain" => "danger",
        "failed-back-commit-pending" | "failed-over-to-cloud" => "waiting",
        s if s.ends_with("-in-progress") => "moving",
        _ => "rest",
    };
    view! { <span class=format!("state state-{kind}") data-state=state.to_owned()>{words(state)}</span> }
}

/// An item's status when it needs a person: icon, colour and words, a link to the item, whose banner says what to
/// do; the sentence is its tooltip, which is also its accessible description.
pub fn attention_badge(id: &str, a: &crate::model::AttentionRow) -> impl IntoView {
    let severity = if a.critical { "critical" } else { "waiting" };
    view! {
        <a class=format!("status {severity}") href=format!("/replicated-items/{id}") title=a.detail.clone()
            data-attention=a.kind.clone()>
            <span class="status-icon" aria-hidden="true">{if a.critical { "!" } else { "i" }}</span>{a.title.clone()}
        </a>
    }
}

/// How far an item operation reaches — `destroys`, `disrupts` or `harmless` — as the core classifies it
/// (`orchestrator::Operation::impact`; a test keeps the two equal). Every face styles and confirms by it.
pub fn op_impact(op: &str) -> &'static str {
    match op {
        "commit" | "commit-in-cloud" | "cleanup-test-failover" => "destroys",
        "reprotect-to-cloud" | "test-failover" | "verify-replica" => "harmless",
        // Failover, change of point, cancel, reprotect, failover to Azure, and choosing a split-brain's winner.
        _ => "disrupts",
    }
}

/// The class of an operation's button: destructive ones stand out from their harmless neighbours wherever they
/// are offered (toolbar, row menu, banner, plan page), and every confirm button of a non-harmless one is red.
pub fn op_class(op: &str) -> &'static str {
    match op_impact(op) {
        "destroys" => "danger",
        _ => "primary",
    }
}

/// The confirm button's class in an operation's dialog.
pub fn confirm_class(op: &str) -> &'static str {
    match op_impact(op) {
        "harmless" => "primary",
        _ => "primary danger",
    }
}

/// What the person confirming a destructive or disruptive operation ticks first, in the operation's own words;
/// none for a harmless one.
pub fn acknowledgement_text(op: &str) -> Option<&'static str> {
    Some(match op {
        "commit" => "I understand that the cloud VM and its disks are deleted in Azure and cannot be brought back.",
        "commit-in-cloud" => {
            "I understand that the replication disks and their recovery points are deleted and cannot be brought back."
        }
        "cleanup-test-failover" => "I understand that the test VMs and their disks are deleted.",
        "reprotect" => "I understand that the target VM's disks on-premises are overwritten with the cloud VM's data.",
        "failover" | "change-recovery-point" => {
            "I understand that the cloud VM is shut down and the on-premises VM starts from the chosen recovery point."
        }
        "cancel-failover" => {
            "I understand that the on-premises VM shuts down and what it wrote since the failback is overwritten."
        }
        "failover-to-cloud" => {
            "I understand that the on-premises VM shuts down and what it wrote after the recovery point is not in Azure."
        }
        "keep-cloud-copy" => "I understand that the on-premises VM shuts down and its replica goes back to the cloud copy.",
        "keep-on-premises-copy" => "I understand that the cloud VM shuts down.",
        _ => return None,
    })
}

/// The acknowledgement's checkbox (`data-testid=ack`) for a non-harmless operation; the dialog keeps its confirm
/// button disabled until it is ticked (see `acknowledged`).
pub fn acknowledgement(op: &str, ack: RwSignal<bool>) -> Option<impl IntoView + use<>> {
    acknowledgement_text(op).map(|text| {
        view! {
            <label class="check ack"><input type="checkbox" data-testid="ack" prop:checked=move || ack.get()
                on:change=move |ev| ack.set(event_target_checked(&ev))/>" "{text}</label>
        }
    })
}

/// Whether the dialog of `op` may confirm: ticked, or nothing to tick.
pub fn acknowledged(op: &str, ack: RwSignal<bool>) -> bool {
    acknowledgement_text(op).is_none() || ack.get()
}

pub fn loading(what: &'static str) -> impl IntoView {
    view! { <section class="panel" aria-busy="true"><p>{format!("Loading {what}…")}</p></section> }
}

/// A rule ID as a small link to what the rule says, on the rules page.
pub fn rule_link(rule: String) -> impl IntoView {
    view! { <a class="rule" href=format!("/rules#{rule}") title="What this rule says">{rule.clone()}</a> }
}

/// Refusals as the portal shows them everywhere: the sentence, what to do, then the rule.
pub fn refusal_list(rs: Vec<crate::model::Refused>) -> impl IntoView {
    view! {
        <ul class="refusals">
            {rs.into_iter().map(|r| view! {
                <li>{r.message}" "<em class="todo">{r.action}</em>" "{rule_link(r.rule)}</li>
            }).collect_view()}
        </ul>
    }
}

/// An action's error, in plain words, inside a dialog or a toolbar.
pub fn portal_error(e: &crate::model::PortalError) -> AnyView {
    use crate::model::PortalError;
    match e {
        PortalError::Refused(rs) => view! {
            <div class="alert" role="alert"><strong>"Refused by the vault's rules"</strong>{refusal_list(rs.clone())}</div>
        }
        .into_any(),
        PortalError::Denied(m) => {
            view! { <div class="alert" role="alert" data-testid="denied"><strong>"Not allowed: "</strong>{m.clone()}</div> }
                .into_any()
        }
        PortalError::Conflict(m) | PortalError::Server(m) => {
            view! { <div class="alert" role="alert">{m.clone()}</div> }.into_any()
        }
    }
}

/// The current URL's query with some keys replaced (empty value = removed): filters, sort and pages are links,
/// so a copied URL shows a teammate the same view.
pub fn query_with(changes: &[(&str, String)]) -> String {
    let q = use_query_map().get_untracked();
    let mut pairs: Vec<(String, String)> = Vec::new();
    for (k, v) in q.into_iter() {
        if !changes.iter().any(|(c, _)| *c == k) && !v.is_empty() {
            pairs.push((k.to_string(), v));
        }
    }
    for (k, v) in changes {
        if !v.is_empty() {
            pairs.push((k.to_string(), v.clone()));
        }
    }
    if pairs.is_empty() {
        return "?".into();
    }
    let enc = |s: &str| {
        s.bytes()
            .map(|b| match b {
                b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => (b as char).to_string(),
                _ => format!("%{b:02X}"),
            })
            .collect::<String>()
    };
    format!("?{}", pairs.iter().map(|(k, v)| format!("{}={}", enc(k), enc(v))).collect::<Vec<_>>().join("&"))
}

pub fn query_param(name: &'static str) -> Memo<String> {
    let q = use_query_map();
    Memo::new(move |_| q.read().get(name).unwrap_or_default())
}

/// "Page 2 of 100 · 4 950 items" with previous/next links that keep the other filters.
pub fn pager(page: usize, per_page: usize, total: usize, noun: &'static str) -> impl IntoView {
    let pages = total.div_ceil(per_page).max(1);
    let prev = (page > 1).then(|| query_with(&[("page", (page - 1).to_string())]));
    let next = (page < pages).then(|| query_with(&[("page", (page + 1).to_string())]));
    view! {
        <nav class="pager" aria-label="Pages">
            {match prev { Some(h) => view! { <a href=h rel="prev">"← Previous"</a> }.into_any(), None => view! { <span class="muted">"← Previous"</span> }.into_any() }}
            <span data-testid="pager">{format!("Page {page} of {pages} · {total} {noun}")}</span>
            {match next { Some(h) => view! { <a href=h rel="next">"Next →"</a> }.into_any(), None => view! { <span class="muted">"Next →"</span> }.into_any() }}
        </nav>
    }
}

/// A modal dialog: the browser's `<dialog>` opened with `showModal()`, which traps focus and closes on Escape.
/// Its content stays in the page while closed (hidden by the browser), so its form keeps what was typed.
#[component]
pub fn Modal(
    open: RwSignal<bool>,
    #[prop(into)] title: String,
    #[prop(into)] id: String,
    children: Children,
) -> impl IntoView {
    let node = NodeRef::<leptos::html::Dialog>::new();
    Effect::new(move |_| {
        let want = open.get();
        if let Some(d) = node.get() {
            if want && !d.open() {
                let _ = d.show_modal();
            } else if !want && d.open() {
                d.close();
            }
        }
    });
    let title_id = format!("{id}-title");
    let labelled_by = title_id.clone();
    view! {
        <dialog node_ref=node class="modal" id=id aria-labelledby=labelled_by on:close=move |_| open.set(false)>
            <header class="modal-head">
                <h2 id=title_id>{title}</h2>
                <button type="button" class="icon" aria-label="Close" on:click=move |_| open.set(false)>"×"</button>
            </header>
            <div class="modal-body">{children()}</div>
        </dialog>
    }
}

/// A random key per opened dialog, so a double submit starts one job.
pub fn new_key() -> String {
    #[cfg(feature = "hydrate")]
    {
        format!("{:x}{:x}", (js_sys_random() * 1e15) as u64, (js_sys_random() * 1e15) as u64)
    }
    #[cfg(not(feature = "hydrate"))]
    {
        String::new()
    }
}

#[cfg(feature = "hydrate")]
#[wasm_bindgen::prelude::wasm_bindgen]
extern "C" {
    #[wasm_bindgen(js_namespace = Math, js_name = random)]
    fn js_sys_random() -> f64;
    #[wasm_bindgen(js_namespace = Date, js_name = now)]
    fn js_date_now() -> f64;
}

/// Milliseconds since the epoch, from the browser's clock.
#[cfg(feature = "hydrate")]
pub fn now_ms() -> u64 {
    js_date_now() as u64
}
