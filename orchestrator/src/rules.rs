//! The seed rules as named checks. Each check returns `Ok(())` or a [`Refusal`] carrying the rule ID, a sentence
//! saying what blocks the action, and what to do next. `lifecycle` combines them per operation.

use serde::{Deserialize, Serialize};

use crate::domain::*;

/// Why an operation cannot run, in words an operator can act on.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Refusal {
    pub rule: String,
    pub message: String,
    pub recommended_action: String,
}

impl Refusal {
    pub fn new(rule: &str, message: impl Into<String>, action: impl Into<String>) -> Refusal {
        Refusal { rule: rule.into(), message: message.into(), recommended_action: action.into() }
    }
}

/// One check of a dry run: which rule, what it looked at, and whether it passed.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CheckOutcome {
    pub rule: String,
    pub check: String,
    pub passed: bool,
    pub refusal: Option<Refusal>,
}

pub type Check = Result<(), Refusal>;

fn refuse(rule: &str, message: impl Into<String>, action: impl Into<String>) -> Check {
    Err(Refusal::new(rule, message, action))
}

/// R-W5: one job at a time per item, so two actions never race on the same disks.
pub fn r_w5_no_active_job(item: &ReplicatedItem, active_job: Option<&str>) -> Check {
    match active_job {
        Some(job) => refuse(
            "R-W5",
            format!("Job {job} is still running on {}.", item.name),
            format!("Wait for job {job} to finish, or cancel it from its job page."),
        ),
        None => Ok(()),
    }
}

/// R-B1: the cloud copy must still be there, in its resource group, and not a completed migration.
pub fn r_b1_cloud_vm_usable(item: &ReplicatedItem) -> Check {
    let Some(vm) = &item.cloud_vm else {
        return refuse(
            "R-B1",
            format!("{} has no VM in the cloud to fail back from.", item.name),
            "Failback needs the failed-over VM in the cloud; protect the on-premises machine again instead.",
        );
    };
    if vm.deleted {
        return refuse(
            "R-B1",
            format!("The cloud VM {} was deleted, so {} cannot fail back.", vm.id, item.name),
            "Restore the cloud VM from backup, or protect the machine again from scratch.",
        );
    }
    if vm.migration_completed {
        return refuse(
            "R-B1",
            format!("The migration of {} was completed; a migrated VM does not fail back.", item.name),
            "Protect the VM afresh from the cloud if you need it on-premises.",
        );
    }
    if vm.resource_group != vm.original_resource_group {
        return refuse(
            "R-B1",
            format!(
                "The cloud VM was moved from resource group {} to {}; failback is not possible after a move.",
                vm.original_resource_group, vm.resource_group
            ),
            format!("Move the VM back to resource group {} and try again.", vm.original_resource_group),
        );
    }
    Ok(())
}

/// R-P2: a Windows Server 2008 R2 SP1 physical server that failed over cannot fail back.
pub fn r_p2_no_2008_r2_sp1_physical(item: &ReplicatedItem) -> Check {
    if item.machine == MachineType::PhysicalServer && item.os.is_windows_2008_r2_sp1() {
        return refuse(
            "R-P2",
            format!("{} is a physical Windows Server 2008 R2 SP1 server; failback is not supported for it.", item.name),
            "Keep it running in the cloud, or rebuild the server on-premises and migrate its data.",
        );
    }
    Ok(())
}

/// R-C1: a configuration server, with the VM in its database.
pub fn r_c1_registered_in_configuration_server(item: &ReplicatedItem, inv: &Inventory) -> Check {
    let Some(cs) = &inv.configuration_server else {
        return refuse(
            "R-C1",
            "No configuration server is registered on-premises.",
            "Restore the configuration server from its scheduled backup, with the same IP address.",
        );
    };
    if !cs.registered_vms.contains(&item.id) {
        return refuse(
            "R-C1",
            format!("{} is not in the configuration server's database ({}).", item.name, cs.ip_address),
            "Restore the configuration server from its latest backup (same IP address) so it knows the VM again.",
        );
    }
    Ok(())
}

/// R-L3: only to the original configuration server and the original vCenter.
pub fn r_l3_original_vcenter_and_configuration_server(item: &ReplicatedItem, inv: &Inventory, host: &Host) -> Check {
    if let Some(cs) = &inv.configuration_server {
        if cs.id != item.original_configuration_server {
            return refuse(
                "R-L3",
                format!(
                    "The configuration server is {}, but {} was protected through {}; a new configuration server \
                     cannot be a failback target.",
                    cs.id, item.name, item.original_configuration_server
                ),
                "Restore the original configuration server from its backup (same IP address).",
            );
        }
    }
    if let (Some(original), Some(target)) = (&item.original_vcenter, &host.vcenter) {
        if original != target {
            return refuse(
                "R-L3",
                format!(
                    "Host {} is managed by vCenter {target}, not by {original}, the VM's original vCenter.",
                    host.id
                ),
                format!("Choose a master target on a host managed by vCenter {original}."),
            );
        }
    }
    Ok(())
}

/// R-B2: failback goes to VMware, never to Hyper-V.
pub fn r_b2_no_hyper_v(host: &Host) -> Check {
    if host.hypervisor == Hypervisor::HyperV {
        return refuse(
            "R-B2",
            format!("Host {} runs Hyper-V; a VMware VM failed over to the cloud cannot fail back to Hyper-V.", host.id),
            "Choose a master target on an ESXi host.",
        );
    }
    Ok(())
}

/// R-P3: a master target exists and its ESXi host is discovered.
pub fn r_p3_master_target_discovered(inv: &Inventory, host: Option<&Host>) -> Check {
    if inv.master_targets.is_empty() {
        return refuse(
            "R-P3",
            "No master target server is registered.",
            "Deploy a master target (Windows for Windows VMs, Linux for Linux VMs) on an ESXi host and register it.",
        );
    }
    match host {
        Some(h) if h.discovered => Ok(()),
        Some(h) => refuse(
            "R-P3",
            format!("ESXi host {} of the master target is not discovered yet.", h.id),
            "Wait for the configuration server to finish discovering the host, or refresh the server's inventory.",
        ),
        None => {
            refuse("R-P3", "The master target's ESXi host is not in the inventory.", "Add the host and discover it.")
        }
    }
}

/// R-L6: a VM on a standalone ESXi host, and every physical server, needs the master target's host discovered.
pub fn r_l6_standalone_needs_discovery(item: &ReplicatedItem, inv: &Inventory, mt_host: &Host) -> Check {
    let standalone = item.machine == MachineType::PhysicalServer
        || item.onprem.as_ref().and_then(|vm| inv.host(&vm.host)).is_some_and(|h| h.vcenter.is_none());
    if standalone && !mt_host.discovered {
        return refuse(
            "R-L6",
            format!("Discovery of ESXi host {} (the master target's) is not complete.", mt_host.id),
            "Let the configuration server finish discovering the host before reprotect.",
        );
    }
    Ok(())
}

/// R-W1: a Windows master target for a Windows VM, a Linux one for a Linux VM.
pub fn r_w1_master_target_matches_os(item: &ReplicatedItem, mt: &MasterTarget) -> Check {
    if mt.os != item.os.family {
        let want = match item.os.family {
            OsFamily::Windows => "Windows",
            OsFamily::Linux => "Linux",
        };
        return refuse(
            "R-W1",
            format!("{} runs {}, so it needs a {want} master target; {} is not.", item.name, item.os.name, mt.id),
            format!("Choose a {want} master target."),
        );
    }
    Ok(())
}

/// R-W1: the process server of a reprotect sits on the recovery side.
pub fn r_w1_process_server_in_recovery(ps: &ProcessServer) -> Check {
    if ps.site != Site::Recovery {
        return refuse(
            "R-W1",
            format!("Process server {} is on-premises; reprotect sends data from the cloud.", ps.id),
            "Choose a process server deployed in the cloud.",
        );
    }
    Ok(())
}

/// R-W4: re-protect to the cloud sends through an on-premises process server.
pub fn r_w4_process_server_on_premises(ps: &ProcessServer) -> Check {
    if ps.site != Site::Primary {
        return refuse(
            "R-W4",
            format!("Process server {} is in the cloud; re-protect sends data from on-premises.", ps.id),
            "Choose the on-premises process server (the configuration server's, or a scale-out one).",
        );
    }
    Ok(())
}

/// R-L4 (VM managed by vCenter) and R-L5 (VM on a standalone host): for original location, the master target's
/// host must reach the datastores of the VM's disks.
pub fn r_l4_l5_host_reaches_vm_datastores(vm: &OnPremVm, inv: &Inventory, mt_host: &Host) -> Check {
    let managed = inv.host(&vm.host).is_some_and(|h| h.vcenter.is_some());
    let rule = if managed { "R-L4" } else { "R-L5" };
    for disk in &vm.disks {
        let reachable = inv.datastore(&disk.datastore).is_some_and(|d| d.hosts.iter().any(|h| h == &mt_host.id));
        if !reachable {
            return refuse(
                rule,
                format!(
                    "The master target's host {} cannot access datastore {} holding disk {} of {}.",
                    mt_host.id, disk.datastore, disk.id, vm.id
                ),
                format!(
                    "Choose a master target on a host that can access datastore {}, or grant access.",
                    disk.datastore
                ),
            );
        }
    }
    Ok(())
}

/// R-L7: original location onto vSAN or RDM only when those disks exist and are attached to the VM.
pub fn r_l7_vsan_rdm_disks_attached(vm: &OnPremVm, inv: &Inventory) -> Check {
    for disk in &vm.disks {
        let kind = inv.datastore(&disk.datastore).map(|d| d.kind);
        if matches!(kind, Some(DatastoreKind::Vsan | DatastoreKind::Rdm)) && !disk.attached {
            return refuse(
                "R-L7",
                format!("Disk {} is on vSAN/RDM but is not attached to {}.", disk.id, vm.id),
                "Attach the disk to the on-premises VM again, or fail back to an alternate location on VMFS.",
            );
        }
    }
    Ok(())
}

/// R-L8: alternate location recovers to the master target's host; the chosen datastore must be reachable from it.
pub fn r_l8_datastore_reachable_from_master_target(ds: &Datastore, mt_host: &Host) -> Check {
    if !ds.hosts.iter().any(|h| h == &mt_host.id) {
        return refuse(
            "R-L8",
            format!(
                "The VM will be created on {}, the master target's host, which cannot access datastore {}.",
                mt_host.id, ds.id
            ),
            "Choose a datastore that the master target's host can access.",
        );
    }
    Ok(())
}

/// R-L9: alternate location only to VMFS.
pub fn r_l9_alternate_location_needs_vmfs(ds: &Datastore) -> Check {
    if ds.kind != DatastoreKind::Vmfs {
        let kind = match ds.kind {
            DatastoreKind::Vsan => "vSAN",
            DatastoreKind::Rdm => "RDM",
            DatastoreKind::Nfs => "NFS",
            DatastoreKind::Vmfs | DatastoreKind::Other => "not VMFS",
        };
        return refuse(
            "R-L9",
            format!("Datastore {} is {kind}; alternate-location recovery creates new VMDKs on VMFS only.", ds.id),
            "Choose a VMFS datastore.",
        );
    }
    Ok(())
}

/// Space for the new disks at an alternate location.
pub fn datastore_has_room(ds: &Datastore, bytes: u64) -> Check {
    if ds.free_bytes < bytes {
        return refuse(
            "R-L8",
            format!(
                "Datastore {} has {} free; the VM's disks need {}.",
                ds.id,
                replicator::human_bytes(ds.free_bytes),
                replicator::human_bytes(bytes)
            ),
            "Free space on the datastore or choose another one.",
        );
    }
    Ok(())
}

/// R-C2: no snapshots on the master target when failback starts.
pub fn r_c2_master_target_has_no_snapshots(mt: &MasterTarget) -> Check {
    if mt.snapshots > 0 {
        return refuse(
            "R-C2",
            format!("Master target {} has {} snapshot(s); failback would fail.", mt.id, mt.snapshots),
            "Delete the master target's snapshots in vCenter, then retry.",
        );
    }
    Ok(())
}

/// R-C3: failback needs reprotect complete: protected and healthy.
pub fn r_c3_reprotect_complete_and_healthy(item: &ReplicatedItem) -> Check {
    if item.initial_sync_percent < 100 {
        return refuse(
            "R-C3",
            format!("Reprotect of {} is still in initial replication ({}%).", item.name, item.initial_sync_percent),
            "Wait for the initial replication to finish; the item page shows its progress and ETA.",
        );
    }
    if item.health != Health::Normal {
        return refuse(
            "R-C3",
            format!("{} is protected but its replication health is {}.", item.name, wire_name(&item.health)),
            "Resolve the item's health errors (see its page), then fail over.",
        );
    }
    Ok(())
}

/// R-C4, also R-I1: vCenter connected before failback, or detaching and re-attaching disks fails.
pub fn r_c4_vcenter_connected(inv: &Inventory, host: &Host) -> Check {
    if let Some(vc_id) = &host.vcenter {
        match inv.vcenter(vc_id) {
            Some(vc) if vc.connected => {}
            _ => {
                return refuse(
                    "R-C4",
                    format!(
                        "vCenter {vc_id} is not connected; detaching and re-attaching disks would fail (see also R-I1)."
                    ),
                    format!("Reconnect vCenter {vc_id} on the configuration server, then retry."),
                )
            }
        }
    }
    Ok(())
}

/// R-A1: right after the on-premises VM boots its agent needs up to 15 minutes to register.
pub const AGENT_REGISTRATION_WINDOW: Millis = 15 * MINUTE;

pub fn r_a1_agent_registered(item: &ReplicatedItem, now: Millis) -> Check {
    if item.agent_registered {
        return Ok(());
    }
    match item.booted_at {
        Some(boot) if now < boot + AGENT_REGISTRATION_WINDOW => {
            // The article's window is an upper bound: agents often register sooner, so say both.
            let due = boot + AGENT_REGISTRATION_WINDOW;
            refuse(
                "R-A1",
                format!(
                    "The agent on {} has not registered with the configuration server yet (it booted {} min ago); \
                     re-protect would fail with \"agent not installed\".",
                    item.name,
                    (now - boot) / MINUTE
                ),
                format!(
                    "Retry in a few minutes: agents register within {} min of boot, so by {} at the latest.",
                    AGENT_REGISTRATION_WINDOW / MINUTE,
                    crate::domain::utc_text(due)
                ),
            )
        }
        _ => refuse(
            "R-A1",
            format!("The agent on {} is not registered with the configuration server.", item.name),
            "Check that the mobility agent service runs on the VM and can reach the configuration server, then retry.",
        ),
    }
}
