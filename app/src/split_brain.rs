//! An item in split-brain: the banner that says what was seen (when, which copy ran where it may not, each copy's
//! last write) with the two ways out, and the divergent blocks kept from a losing copy until the next commit.

use leptos::prelude::*;

use crate::item::ConfirmDialog;
use crate::model::*;
use crate::ui::*;

#[component]
pub(crate) fn SplitBrainPanel(d: ItemDetail, may: bool, denied: String) -> impl IntoView {
    let keep_cloud = RwSignal::new(false);
    let keep_onprem = RwSignal::new(false);
    let Some(sb) = d.split_brain.clone() else { return ().into_any() };
    let written = |t: Option<u64>| t.map(fmt_time).unwrap_or_else(|| "not since the split was found".into());
    let name = d.row.name.clone();
    let cloud_vm = d.cloud_vm.clone().map_or("the cloud VM".to_owned(), |(vm, _)| format!("cloud VM {vm}"));
    // The same words at the start of a sentence.
    let cloud_vm_first = d.cloud_vm.clone().map_or("The cloud VM".to_owned(), |(vm, _)| format!("Cloud VM {vm}"));
    view! {
        <section class="panel attention" role="alert" data-testid="split-brain">
            <h2>"Split-brain: both copies changed"</h2>
            <p>{format!("Found {}: {}. Nothing replicates until you choose the copy that wins; nothing resyncs on its own.", fmt_time(sb.detected_at), sb.cause)}</p>
            <dl class="props">
                <dt>"Cloud copy last written"</dt><dd data-testid="cloud-last-write">{written(sb.cloud_last_write_at)}</dd>
                <dt>"On-premises copy last written"</dt><dd data-testid="onprem-last-write">{written(sb.onprem_last_write_at)}</dd>
            </dl>
            <p>"The copy you do not keep is shut down. Its blocks that differ from the winner's are kept, with your reason, until the next commit."</p>
            <div class="actions">
                <button type="button" class="primary" data-op="keep-cloud-copy" disabled=!may title=denied.clone() on:click=move |_| keep_cloud.set(true)>"Keep the cloud copy…"</button>
                <button type="button" class="primary" data-op="keep-on-premises-copy" disabled=!may title=denied.clone() on:click=move |_| keep_onprem.set(true)>"Keep the on-premises copy…"</button>
            </div>
            {(!may).then(|| view! { <p class="why-inline">{denied.clone()}</p> })}
            <ConfirmDialog open=keep_cloud d=d.clone() op="keep-cloud-copy" title="Keep the cloud copy"
                warning=format!("{cloud_vm_first} keeps running as {name}. The on-premises VM is shut down, its divergent blocks are kept until the next commit, and its replica is brought back to the cloud copy: what the on-premises VM wrote since the split is no longer in the VM.")
                confirm="Keep the cloud copy"/>
            <ConfirmDialog open=keep_onprem d=d.clone() op="keep-on-premises-copy" title="Keep the on-premises copy"
                warning=format!("The on-premises VM keeps running as {name}. {cloud_vm} is shut down and its divergent blocks are kept until the next commit; the item then waits for commit, as after a failback.")
                confirm="Keep the on-premises copy"/>
        </section>
    }
    .into_any()
}

/// What lost a split-brain, kept until the next commit.
pub(crate) fn kept_copies_panel(d: &ItemDetail) -> impl IntoView {
    let kept = d.kept_copies.clone();
    (!kept.is_empty()).then(|| {
        view! {
            <section class="panel" data-testid="kept-copies"><h2>"Blocks kept from a split-brain"</h2>
                <p class="muted">"The losing copy's blocks that differed from the winner's, at their offsets; removed by the next commit."</p>
                <table class="grid compact"><thead><tr><th scope="col">"Kept"</th><th scope="col">"Copy that lost"</th><th scope="col">"Blocks"</th><th scope="col">"Reason"</th><th scope="col">"Files"</th></tr></thead><tbody>
                    {kept.into_iter().map(|k| view! {
                        <tr>
                            <td><a href=format!("/jobs/{}", k.job)>{fmt_time(k.kept_at)}</a></td>
                            <td>{k.site.clone()}</td>
                            <td>{format!("{} ({})", k.blocks, fmt_bytes(k.bytes))}</td>
                            <td>{k.reason.clone()}</td>
                            <td>{k.files.iter().map(|f| view! { <code>{f.clone()}</code>" " }).collect_view()}</td>
                        </tr>
                    }).collect_view()}
                </tbody></table>
            </section>
        }
    })
}
