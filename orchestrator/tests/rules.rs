//! Table-driven tests of every seed rule (R-W1 … R-I1) and of the lifecycle, on a small estate built here.

use orchestrator::domain::*;
use orchestrator::lifecycle::*;
use orchestrator::points::{self, PointChoice};

fn host(id: &str, vcenter: Option<&str>, hypervisor: Hypervisor) -> Host {
    Host { id: id.into(), vcenter: vcenter.map(Into::into), hypervisor, discovered: true }
}

fn ds(id: &str, kind: DatastoreKind, hosts: &[&str]) -> Datastore {
    Datastore {
        id: id.into(),
        kind,
        hosts: hosts.iter().map(|h| h.to_string()).collect(),
        capacity_bytes: 1 << 40,
        free_bytes: 1 << 39,
    }
}

fn inventory() -> Inventory {
    Inventory {
        configuration_server: Some(ConfigurationServer {
            id: "cs1".into(),
            ip_address: "10.0.0.5".into(),
            registered_vms: ["web01", "lin01", "phys16", "phys08"].iter().map(|s| s.to_string()).collect(),
        }),
        vcenters: vec![
            VCenter { id: "vc1".into(), connected: true, configuration_server: "cs1".into() },
            VCenter { id: "vc2".into(), connected: true, configuration_server: "cs1".into() },
        ],
        hosts: vec![
            host("esx1", Some("vc1"), Hypervisor::Esxi),
            host("esx2", Some("vc1"), Hypervisor::Esxi),
            host("esx-other-vc", Some("vc2"), Hypervisor::Esxi),
            host("esx-standalone", None, Hypervisor::Esxi),
            host("hv1", None, Hypervisor::HyperV),
        ],
        datastores: vec![
            ds("vmfs1", DatastoreKind::Vmfs, &["esx1", "esx2", "esx-standalone", "esx-other-vc", "hv1"]),
            ds("vmfs-esx2", DatastoreKind::Vmfs, &["esx2"]),
            ds("vsan1", DatastoreKind::Vsan, &["esx1"]),
            ds("rdm1", DatastoreKind::Rdm, &["esx1"]),
        ],
        master_targets: vec![
            MasterTarget { id: "mt-win".into(), os: OsFamily::Windows, host: "esx1".into(), snapshots: 0 },
            MasterTarget { id: "mt-lin".into(), os: OsFamily::Linux, host: "esx1".into(), snapshots: 0 },
            MasterTarget { id: "mt-esx2".into(), os: OsFamily::Windows, host: "esx2".into(), snapshots: 0 },
            MasterTarget { id: "mt-other-vc".into(), os: OsFamily::Windows, host: "esx-other-vc".into(), snapshots: 0 },
            MasterTarget {
                id: "mt-standalone".into(),
                os: OsFamily::Windows,
                host: "esx-standalone".into(),
                snapshots: 0,
            },
            MasterTarget { id: "mt-hv".into(), os: OsFamily::Windows, host: "hv1".into(), snapshots: 0 },
        ],
        process_servers: vec![
            ProcessServer { id: "ps-cloud".into(), site: Site::Recovery, bandwidth_bytes_per_s: 100 << 20 },
            ProcessServer { id: "ps-onprem".into(), site: Site::Primary, bandwidth_bytes_per_s: 100 << 20 },
        ],
        networks: vec![
            Network { id: "prod".into(), isolated: false, vcenter: Some("vc1".into()) },
            Network { id: "bubble".into(), isolated: true, vcenter: Some("vc1".into()) },
        ],
    }
}

fn point(id: &str, time: Millis, kind: PointKind) -> RecoveryPoint {
    RecoveryPoint { id: id.into(), time, kind }
}

/// A Windows VMware VM running in the cloud (failover committed) whose on-premises original still exists.
fn web01() -> ReplicatedItem {
    ReplicatedItem {
        id: "web01".into(),
        name: "web01".into(),
        machine: MachineType::VmwareVm,
        os: Os { family: OsFamily::Windows, name: "Windows Server 2016".into() },
        state: State::CommittedInCloud,
        health: Health::Normal,
        health_errors: Vec::new(),
        initial_sync_percent: 100,
        onprem: Some(OnPremVm {
            id: "vm-web01".into(),
            host: "esx1".into(),
            exists: true,
            disks: vec![OnPremDisk { id: "d0".into(), datastore: "vmfs1".into(), size_bytes: 1 << 30, attached: true }],
        }),
        original_vcenter: Some("vc1".into()),
        original_configuration_server: "cs1".into(),
        cloud_vm: Some(CloudVm {
            id: "az-web01".into(),
            resource_group: "rg-dr".into(),
            original_resource_group: "rg-dr".into(),
            deleted: false,
            migration_completed: false,
            running: true,
            storage_account: None,
            blobs: Vec::new(),
        }),
        recovery_points: vec![
            point("rp-1", 1_000, PointKind::AppConsistent),
            point("rp-2", 2_000, PointKind::CrashConsistent),
            point("rp-3", 3_000, PointKind::AppConsistent),
            point("rp-4", 4_500, PointKind::CrashConsistent),
        ],
        replication_group: None,
        master_target: Some("mt-win".into()),
        process_server: Some("ps-cloud".into()),
        booted_at: None,
        agent_registered: true,
        last_failure: None,
        drill: None,
        split_brain: None,
        kept_copies: Vec::new(),
        verification: None,
        protection: Default::default(),
        disk_bytes: 1 << 30,
    }
}

fn in_state(mut item: ReplicatedItem, s: State) -> ReplicatedItem {
    item.state = s;
    item
}

fn req(mt: &str, ps: &str, datastore: Option<&str>) -> Request {
    Request {
        master_target: Some(mt.into()),
        process_server: Some(ps.into()),
        datastore: datastore.map(Into::into),
        ..Request::default()
    }
}

fn ctx() -> Context {
    Context { now: 10 * MINUTE * 1000, active_job: None }
}

const EST: DataEstimate = DataEstimate { changed_bytes: Some(10 << 20), allocated_bytes: 800 << 20 };

fn plan(item: &ReplicatedItem, inv: &Inventory, op: Operation, r: &Request) -> Plan {
    dry_run(item, inv, op, r, &ctx(), &EST)
}

/// The rule IDs a plan refuses with.
fn refused(p: &Plan) -> Vec<String> {
    p.refusals().into_iter().map(|r| r.rule).collect()
}

fn assert_refused_by(p: &Plan, rule: &str) {
    let r = refused(p);
    assert!(r.iter().any(|x| x == rule), "expected a refusal by {rule}, got {r:?}");
    assert!(!p.allowed);
    let refusal = p.refusals().into_iter().find(|x| x.rule == rule).unwrap();
    assert!(!refusal.message.is_empty() && !refusal.recommended_action.is_empty(), "{refusal:?}");
}

fn reprotect_ok() -> Request {
    req("mt-win", "ps-cloud", None)
}

#[test]
fn r_w1_reprotect_needs_a_committed_cloud_vm_a_matching_master_target_and_a_cloud_process_server() {
    let inv = inventory();
    let p = plan(&web01(), &inv, Operation::Reprotect, &reprotect_ok());
    assert!(p.allowed, "{:?}", p.refusals());
    assert!(p.tasks[0].name.contains("Power off on-premises VM vm-web01"), "{:?}", p.tasks);
    assert!(p.tasks.iter().any(|t| t.name.contains("continuous replication")));
    let cases: Vec<(ReplicatedItem, Request)> = vec![
        (in_state(web01(), State::ProtectedToPrimary), reprotect_ok()),
        (web01(), req("mt-lin", "ps-cloud", None)),
        (web01(), req("mt-win", "ps-onprem", None)),
        (web01(), Request { master_target: None, ..reprotect_ok() }),
        (web01(), req("mt-nope", "ps-cloud", None)),
    ];
    for (item, r) in cases {
        assert_refused_by(&plan(&item, &inv, Operation::Reprotect, &r), "R-W1");
    }
    // A Linux VM takes the Linux master target.
    let mut lin = web01();
    lin.os = Os { family: OsFamily::Linux, name: "Ubuntu 22.04".into() };
    lin.id = "lin01".into();
    assert!(plan(&lin, &inv, Operation::Reprotect, &req("mt-lin", "ps-cloud", None)).allowed);
    assert_refused_by(&plan(&lin, &inv, Operation::Reprotect, &reprotect_ok()), "R-W1");
}

#[test]
fn r_w2_failover_only_when_protected_to_primary() {
    let inv = inventory();
    let ok = in_state(web01(), State::ProtectedToPrimary);
    let p = plan(&ok, &inv, Operation::Failover, &Request::default());
    assert!(p.allowed, "{:?}", p.refusals());
    assert_eq!(p.tasks[0].name, "Shut down the cloud VM");
    for s in [State::CommittedInCloud, State::ReprotectInProgress, State::FailedBackCommitPending] {
        assert_refused_by(&plan(&in_state(web01(), s), &inv, Operation::Failover, &Request::default()), "R-W2");
    }
}

#[test]
fn r_w3_commit_only_after_failback_and_it_deletes_the_cloud_vm() {
    let inv = inventory();
    let p = plan(&in_state(web01(), State::FailedBackCommitPending), &inv, Operation::Commit, &Request::default());
    assert!(p.allowed);
    assert!(p.tasks[0].name.contains("Delete cloud VM az-web01"), "{:?}", p.tasks);
    assert_refused_by(
        &plan(&in_state(web01(), State::ProtectedToPrimary), &inv, Operation::Commit, &Request::default()),
        "R-W3",
    );
    // Until commit the cloud copy exists, so the failback can still be cancelled.
    assert!(
        plan(&in_state(web01(), State::FailedBackCommitPending), &inv, Operation::CancelFailover, &Request::default())
            .allowed
    );
    assert_refused_by(
        &plan(&in_state(web01(), State::CommittedOnPrimary), &inv, Operation::CancelFailover, &Request::default()),
        "R-W3",
    );
}

#[test]
fn r_w4_reprotect_to_cloud_after_commit_through_an_on_premises_process_server() {
    let inv = inventory();
    let item = in_state(web01(), State::CommittedOnPrimary);
    let r = Request { process_server: Some("ps-onprem".into()), ..Request::default() };
    let p = plan(&item, &inv, Operation::ReprotectToCloud, &r);
    assert!(p.allowed, "{:?}", p.refusals());
    assert_eq!(p.bytes_to_move, EST.allocated_bytes);
    assert_refused_by(
        &plan(
            &item,
            &inv,
            Operation::ReprotectToCloud,
            &Request { process_server: Some("ps-cloud".into()), ..r.clone() },
        ),
        "R-W4",
    );
    assert_refused_by(&plan(&item, &inv, Operation::ReprotectToCloud, &Request::default()), "R-W4");
    assert_refused_by(
        &plan(&in_state(web01(), State::FailedBackCommitPending), &inv, Operation::ReprotectToCloud, &r),
        "R-W4",
    );
}

#[test]
fn r_w5_one_job_at_a_time_per_item() {
    let inv = inventory();
    let busy = Context { now: 0, active_job: Some("job-42".into()) };
    let p = dry_run(&web01(), &inv, Operation::Reprotect, &reprotect_ok(), &busy, &EST);
    assert_refused_by(&p, "R-W5");
    assert!(p.refusals().iter().any(|r| r.recommended_action.contains("job-42")));
    // Each operation describes the tasks its job will run.
    for op in OPERATIONS {
        let item = in_state(web01(), required_state(op));
        let p = dry_run(&item, &inv, op, &reprotect_ok(), &ctx(), &EST);
        assert!(!p.tasks.is_empty(), "{op:?} has no tasks");
    }
}

#[test]
fn r_l1_original_location_replicates_only_the_changes() {
    let p = plan(&web01(), &inventory(), Operation::Reprotect, &reprotect_ok());
    assert_eq!(p.location, Some(Location::Original));
    assert_eq!(p.transfer, Some(Transfer::Delta));
    assert_eq!(p.bytes_to_move, 10 << 20, "the delta estimate, not the disk size");
    assert_eq!(p.eta_seconds, Some(1), "10 MiB at 100 MiB/s");
    assert!(p.location_note.unwrap().contains("R-L1"));
}

#[test]
fn r_l2_alternate_location_when_the_original_vm_is_gone_and_it_says_so_before_starting() {
    let mut item = web01();
    item.onprem.as_mut().unwrap().exists = false;
    let p = plan(&item, &inventory(), Operation::Reprotect, &req("mt-win", "ps-cloud", Some("vmfs1")));
    assert!(p.allowed, "{:?}", p.refusals());
    assert_eq!(p.location, Some(Location::Alternate));
    assert_eq!(p.bytes_to_move, 800 << 20);
    let note = p.location_note.unwrap();
    assert!(note.contains("R-L2") && note.contains("takes longer"), "{note}");
    assert!(p.tasks[0].name.starts_with("Create VM web01"), "{:?}", p.tasks);
}

#[test]
fn r_l3_failback_only_to_the_original_vcenter_and_configuration_server() {
    let inv = inventory();
    assert_refused_by(&plan(&web01(), &inv, Operation::Reprotect, &req("mt-other-vc", "ps-cloud", None)), "R-L3");
    let mut new_cs = inventory();
    new_cs.configuration_server.as_mut().unwrap().id = "cs-new".into();
    assert_refused_by(&plan(&web01(), &new_cs, Operation::Reprotect, &reprotect_ok()), "R-L3");
}

#[test]
fn r_l4_original_location_master_target_host_must_reach_the_vm_datastore() {
    let mut item = web01();
    item.onprem.as_mut().unwrap().disks[0].datastore = "vmfs-esx2".into();
    assert_refused_by(&plan(&item, &inventory(), Operation::Reprotect, &reprotect_ok()), "R-L4");
    assert!(plan(&item, &inventory(), Operation::Reprotect, &req("mt-esx2", "ps-cloud", None)).allowed);
}

#[test]
fn r_l5_standalone_esxi_vm_disks_must_be_on_a_datastore_the_master_target_host_reaches() {
    let mut item = web01();
    item.original_vcenter = None;
    let vm = item.onprem.as_mut().unwrap();
    vm.host = "esx-standalone".into();
    vm.disks[0].datastore = "vmfs-esx2".into();
    assert_refused_by(&plan(&item, &inventory(), Operation::Reprotect, &reprotect_ok()), "R-L5");
}

#[test]
fn r_l6_standalone_vm_or_physical_server_needs_the_master_target_host_discovered() {
    let mut item = web01();
    item.original_vcenter = None;
    item.onprem.as_mut().unwrap().host = "esx-standalone".into();
    let mut inv = inventory();
    inv.hosts.iter_mut().find(|h| h.id == "esx1").unwrap().discovered = false;
    let p = plan(&item, &inv, Operation::Reprotect, &reprotect_ok());
    assert_refused_by(&p, "R-L6");
    // A vCenter-managed VM is not subject to R-L6 (R-P3 still asks for discovery).
    assert!(!refused(&plan(&web01(), &inv, Operation::Reprotect, &reprotect_ok())).contains(&"R-L6".to_owned()));
}

#[test]
fn r_l7_original_location_to_vsan_or_rdm_needs_the_disks_attached() {
    for store in ["vsan1", "rdm1"] {
        let mut item = web01();
        let d = &mut item.onprem.as_mut().unwrap().disks[0];
        d.datastore = store.into();
        assert!(plan(&item, &inventory(), Operation::Reprotect, &reprotect_ok()).allowed, "{store} attached is fine");
        item.onprem.as_mut().unwrap().disks[0].attached = false;
        assert_refused_by(&plan(&item, &inventory(), Operation::Reprotect, &reprotect_ok()), "R-L7");
    }
}

#[test]
fn r_l8_alternate_location_goes_to_the_master_target_host_and_the_chosen_datastore() {
    let mut item = web01();
    item.onprem.as_mut().unwrap().exists = false;
    let p = plan(&item, &inventory(), Operation::Reprotect, &req("mt-esx2", "ps-cloud", Some("vmfs-esx2")));
    assert!(p.allowed, "{:?}", p.refusals());
    assert_eq!((p.target_host.as_deref(), p.target_datastore.as_deref()), (Some("esx2"), Some("vmfs-esx2")));
    assert_refused_by(
        &plan(&item, &inventory(), Operation::Reprotect, &req("mt-win", "ps-cloud", Some("vmfs-esx2"))),
        "R-L8",
    );
    assert_refused_by(&plan(&item, &inventory(), Operation::Reprotect, &req("mt-win", "ps-cloud", None)), "R-L8");
    let mut full = inventory();
    full.datastores[0].free_bytes = 1 << 20;
    assert_refused_by(&plan(&item, &full, Operation::Reprotect, &req("mt-win", "ps-cloud", Some("vmfs1"))), "R-L8");
}

#[test]
fn r_l9_alternate_location_needs_vmfs() {
    let mut item = web01();
    item.onprem = None;
    for store in ["vsan1", "rdm1"] {
        assert_refused_by(
            &plan(&item, &inventory(), Operation::Reprotect, &req("mt-win", "ps-cloud", Some(store))),
            "R-L9",
        );
    }
    assert!(plan(&item, &inventory(), Operation::Reprotect, &req("mt-win", "ps-cloud", Some("vmfs1"))).allowed);
}

#[test]
fn r_l10_alternate_location_reprotect_is_one_full_transfer_then_changes() {
    let mut item = web01();
    item.onprem = None;
    let p = plan(&item, &inventory(), Operation::Reprotect, &req("mt-win", "ps-cloud", Some("vmfs1")));
    assert_eq!(p.transfer, Some(Transfer::Full));
    assert_eq!(p.tasks[1].name, "Initial replication: full copy");
    assert!(p.tasks[2].name.contains("continuous replication"));
    assert_eq!(p.eta_seconds, Some(8), "800 MiB at 100 MiB/s");
}

fn physical(os: &str, id: &str) -> ReplicatedItem {
    let mut item = web01();
    item.id = id.into();
    item.name = id.into();
    item.machine = MachineType::PhysicalServer;
    item.os = Os { family: OsFamily::Windows, name: os.into() };
    item.onprem = None;
    item.original_vcenter = None;
    item
}

#[test]
fn r_p1_a_physical_server_fails_back_only_as_a_vmware_vm_through_alternate_location() {
    let item = physical("Windows Server 2016", "phys16");
    let p = plan(&item, &inventory(), Operation::Reprotect, &req("mt-win", "ps-cloud", Some("vmfs1")));
    assert!(p.allowed, "{:?}", p.refusals());
    assert_eq!(p.location, Some(Location::Alternate));
    assert!(p.location_note.unwrap().contains("P2A2V"));
    assert_eq!(location_for(&item), Location::Alternate);
}

#[test]
fn r_p2_a_windows_server_2008_r2_sp1_physical_server_cannot_fail_back() {
    let item = physical("Windows Server 2008 R2 SP1", "phys08");
    assert_refused_by(
        &plan(&item, &inventory(), Operation::Reprotect, &req("mt-win", "ps-cloud", Some("vmfs1"))),
        "R-P2",
    );
    let listed = allowed_operations(&item, &inventory(), &ctx());
    let (_, why) = listed.iter().find(|(op, _)| *op == Operation::Reprotect).unwrap();
    assert!(why.iter().any(|r| r.rule == "R-P2"), "the toolbar explains it: {why:?}");
    // The same OS as a VMware VM is not affected, nor 2008 R2 without SP1 spelled differently.
    let mut vm = web01();
    vm.os.name = "Windows Server 2008 R2 SP1".into();
    assert!(!refused(&plan(&vm, &inventory(), Operation::Reprotect, &reprotect_ok())).contains(&"R-P2".to_owned()));
}

#[test]
fn r_p3_a_discovered_master_target_is_needed_before_failback() {
    let mut none = inventory();
    none.master_targets.clear();
    assert_refused_by(&plan(&web01(), &none, Operation::Reprotect, &reprotect_ok()), "R-P3");
    let mut undiscovered = inventory();
    undiscovered.hosts[0].discovered = false;
    assert_refused_by(&plan(&web01(), &undiscovered, Operation::Reprotect, &reprotect_ok()), "R-P3");
    assert_refused_by(
        &plan(&in_state(web01(), State::ProtectedToPrimary), &undiscovered, Operation::Failover, &Request::default()),
        "R-P3",
    );
}

#[test]
fn r_b1_no_failback_after_migration_a_resource_group_move_or_deletion() {
    type Mutate = fn(&mut CloudVm);
    let cases: [(&str, Mutate); 3] = [
        ("migration completed", |v| v.migration_completed = true),
        ("moved to another resource group", |v| v.resource_group = "rg-other".into()),
        ("deleted", |v| v.deleted = true),
    ];
    for (what, mutate) in cases {
        let mut item = web01();
        mutate(item.cloud_vm.as_mut().unwrap());
        assert_refused_by(&plan(&item, &inventory(), Operation::Reprotect, &reprotect_ok()), "R-B1");
        let mut protected = in_state(item, State::ProtectedToPrimary);
        protected.state = State::ProtectedToPrimary;
        let p = plan(&protected, &inventory(), Operation::Failover, &Request::default());
        assert!(refused(&p).contains(&"R-B1".to_owned()), "{what}: {:?}", refused(&p));
    }
}

#[test]
fn r_b2_a_vmware_vm_cannot_fail_back_to_hyper_v() {
    let mut item = web01();
    item.onprem = None;
    item.original_vcenter = None;
    assert_refused_by(
        &plan(&item, &inventory(), Operation::Reprotect, &req("mt-hv", "ps-cloud", Some("vmfs1"))),
        "R-B2",
    );
}

#[test]
fn r_c1_the_vm_must_be_in_the_configuration_server_database() {
    let mut forgotten = inventory();
    forgotten.configuration_server.as_mut().unwrap().registered_vms.clear();
    assert_refused_by(&plan(&web01(), &forgotten, Operation::Reprotect, &reprotect_ok()), "R-C1");
    let mut missing = inventory();
    missing.configuration_server = None;
    let p = plan(&in_state(web01(), State::ProtectedToPrimary), &missing, Operation::Failover, &Request::default());
    assert_refused_by(&p, "R-C1");
    assert!(p.refusals().iter().any(|r| r.recommended_action.contains("same IP address")));
}

#[test]
fn r_c2_the_master_target_must_have_no_snapshots_at_failback() {
    let mut inv = inventory();
    inv.master_targets[0].snapshots = 2;
    let p = plan(&in_state(web01(), State::ProtectedToPrimary), &inv, Operation::Failover, &Request::default());
    assert_refused_by(&p, "R-C2");
}

#[test]
fn r_c3_failback_needs_reprotect_complete_and_health_ok() {
    let mut syncing = in_state(web01(), State::ProtectedToPrimary);
    syncing.initial_sync_percent = 40;
    let p = plan(&syncing, &inventory(), Operation::Failover, &Request::default());
    assert_refused_by(&p, "R-C3");
    assert!(p.refusals().iter().any(|r| r.message.contains("40%")));
    let mut sick = in_state(web01(), State::ProtectedToPrimary);
    sick.health = Health::Critical;
    assert_refused_by(&plan(&sick, &inventory(), Operation::Failover, &Request::default()), "R-C3");
}

#[test]
fn r_c4_and_r_i1_vcenter_must_be_connected_before_failback() {
    let mut inv = inventory();
    inv.vcenters[0].connected = false;
    let p = plan(&in_state(web01(), State::ProtectedToPrimary), &inv, Operation::Failover, &Request::default());
    assert_refused_by(&p, "R-C4");
    assert!(p.refusals().iter().any(|r| r.message.contains("R-I1") && r.recommended_action.contains("Reconnect")));
}

#[test]
fn r_rp1_latest_processed_gives_every_vm_its_own_latest_point_even_in_a_replication_group() {
    let mut a = web01();
    a.replication_group = Some("rg1".into());
    let mut b = web01();
    b.id = "db01".into();
    b.replication_group = Some("rg1".into());
    b.recovery_points.push(point("rp-b5", 5_000, PointKind::CrashConsistent));
    let chosen = points::plan_points(&[&a, &b], &PointChoice::LatestProcessed).unwrap();
    assert_eq!(chosen[0].1.id, "rp-4");
    assert_eq!(chosen[1].1.id, "rp-b5");
}

#[test]
fn r_rp2_app_consistent_single_vm_latest_and_group_common_point() {
    assert_eq!(points::choose(&web01(), &PointChoice::LatestAppConsistent).unwrap().id, "rp-3");
    let mut a = web01();
    a.replication_group = Some("rg1".into());
    let mut b = web01();
    b.id = "db01".into();
    b.replication_group = Some("rg1".into());
    b.recovery_points.retain(|p| p.id != "rp-3"); // db01 missed the group's newest app-consistent point
    let mut solo = web01();
    solo.id = "solo".into();
    let chosen = points::plan_points(&[&a, &b, &solo], &PointChoice::LatestAppConsistent).unwrap();
    assert_eq!(chosen[0].1.id, "rp-1", "the group recovers to its common app-consistent point");
    assert_eq!(chosen[1].1.id, "rp-1");
    assert_eq!(chosen[2].1.id, "rp-3", "an item outside the group takes its own");
    let mut crash_only = web01();
    crash_only.recovery_points.retain(|p| p.kind == PointKind::CrashConsistent);
    let e = points::choose(&crash_only, &PointChoice::LatestAppConsistent).unwrap_err();
    assert_eq!(e.rule, "R-RP2");
}

#[test]
fn r_rp3_no_failback_before_a_first_recovery_point_for_an_item_or_a_plan() {
    let mut bare = in_state(web01(), State::ProtectedToPrimary);
    bare.recovery_points.clear();
    assert_refused_by(&plan(&bare, &inventory(), Operation::Failover, &Request::default()), "R-RP3");
    let ok = web01();
    let e = points::plan_points(&[&ok, &bare], &PointChoice::LatestProcessed).unwrap_err();
    assert_eq!(e.rule, "R-RP3");
}

#[test]
fn r_rp4_latest_is_crash_consistent_and_app_consistent_shows_the_time_lost() {
    let opts = points::options(&web01());
    assert_eq!(opts[0].point.kind, PointKind::CrashConsistent);
    assert_eq!(opts[0].data_loss_ms, 0);
    assert_eq!(opts[1].choice, PointChoice::LatestAppConsistent);
    assert_eq!(opts[1].data_loss_ms, 1_500, "rp-3 at 3000 against rp-4 at 4500");
    let r = Request { point: Some(PointChoice::LatestAppConsistent), ..Request::default() };
    let p = plan(&in_state(web01(), State::ProtectedToPrimary), &inventory(), Operation::Failover, &r);
    assert_eq!(p.data_loss_ms, Some(1_500));
    let r = Request { point: Some(PointChoice::Specific("rp-404".into())), ..Request::default() };
    assert!(!plan(&in_state(web01(), State::ProtectedToPrimary), &inventory(), Operation::Failover, &r).allowed);
}

#[test]
fn r_t1_vmware_tools_are_re_enabled_on_windows_and_reinstalled_on_linux_at_failback() {
    let win =
        plan(&in_state(web01(), State::ProtectedToPrimary), &inventory(), Operation::Failover, &Request::default());
    assert!(win.tasks.iter().any(|t| t.name == "Re-enable VMware Tools (R-T1)"), "{:?}", win.tasks);
    let mut lin = in_state(web01(), State::ProtectedToPrimary);
    lin.os = Os { family: OsFamily::Linux, name: "RHEL 9".into() };
    lin.master_target = Some("mt-lin".into());
    let p = plan(&lin, &inventory(), Operation::Failover, &Request::default());
    assert!(p.tasks.iter().any(|t| t.name == "Reinstall VMware Tools (R-T1)"), "{:?}", p.tasks);
    let to_cloud =
        plan(&in_state(lin, State::ProtectedToCloud), &inventory(), Operation::FailoverToCloud, &Request::default());
    assert!(to_cloud.tasks.iter().any(|t| t.name == "Uninstall VMware Tools (R-T1)"));
}

#[test]
fn r_a1_re_protect_inside_the_agent_registration_window_is_refused_with_when_to_retry() {
    let mut item = in_state(web01(), State::CommittedOnPrimary);
    item.agent_registered = false;
    item.booted_at = Some(1_000_000);
    let now = 1_000_000 + 4 * MINUTE;
    let r = Request { process_server: Some("ps-onprem".into()), ..Request::default() };
    let p = dry_run(&item, &inventory(), Operation::ReprotectToCloud, &r, &Context { now, active_job: None }, &EST);
    assert_refused_by(&p, "R-A1");
    let refusal = p.refusals().into_iter().find(|x| x.rule == "R-A1").unwrap();
    // Booted at 1 000 000 ms: registration is due 15 min later, said as a time, never as an epoch number.
    assert_eq!(
        refusal.recommended_action,
        "Retry in a few minutes: agents register within 15 min of boot, so by 1970-01-01 00:31 UTC at the latest."
    );
    item.agent_registered = true;
    let p = dry_run(&item, &inventory(), Operation::ReprotectToCloud, &r, &Context { now, active_job: None }, &EST);
    assert!(p.allowed, "{:?}", p.refusals());
}

#[test]
fn the_lifecycle_walks_the_whole_article_and_refuses_anything_else() {
    use Event::*;
    use Operation as O;
    let path = [
        (State::CommittedInCloud, Started(O::Reprotect), State::ReprotectInProgress),
        (State::ReprotectInProgress, Succeeded(O::Reprotect), State::ProtectedToPrimary),
        (State::ProtectedToPrimary, Started(O::Failover), State::FailbackInProgress),
        (State::FailbackInProgress, Succeeded(O::Failover), State::FailedBackCommitPending),
        (State::FailedBackCommitPending, Started(O::ChangeRecoveryPoint), State::FailbackInProgress),
        (State::FailbackInProgress, Succeeded(O::ChangeRecoveryPoint), State::FailedBackCommitPending),
        (State::FailedBackCommitPending, Started(O::Commit), State::CommitInProgress),
        (State::CommitInProgress, Succeeded(O::Commit), State::CommittedOnPrimary),
        (State::CommittedOnPrimary, Started(O::ReprotectToCloud), State::ReprotectToCloudInProgress),
        (State::ReprotectToCloudInProgress, Succeeded(O::ReprotectToCloud), State::ProtectedToCloud),
        (State::ProtectedToCloud, Started(O::FailoverToCloud), State::FailoverToCloudInProgress),
        (State::FailoverToCloudInProgress, Succeeded(O::FailoverToCloud), State::FailedOverToCloud),
        (State::FailedOverToCloud, Succeeded(O::CommitInCloud), State::CommittedInCloud),
        // Failures go back to where the operation started; cancel before commit returns to protected.
        (State::FailbackInProgress, Failed(O::Failover), State::ProtectedToPrimary),
        (State::ReprotectInProgress, Failed(O::Reprotect), State::CommittedInCloud),
        (State::CommitInProgress, Failed(O::Commit), State::FailedBackCommitPending),
        (State::FailedBackCommitPending, Started(O::CancelFailover), State::FailbackInProgress),
        (State::FailbackInProgress, Succeeded(O::CancelFailover), State::ProtectedToPrimary),
    ];
    for (from, event, to) in path {
        assert_eq!(next(from, event), Ok(to), "{from:?} + {event:?}");
    }
    for (from, event) in [
        (State::CommittedInCloud, Started(O::Failover)),
        (State::ProtectedToPrimary, Started(O::Commit)),
        (State::CommittedOnPrimary, Started(O::Reprotect)),
        (State::ReprotectInProgress, Succeeded(O::Failover)),
    ] {
        assert!(next(from, event).is_err(), "{from:?} + {event:?} must be refused");
    }
    // Every operation's starting state accepts its Started event.
    for op in OPERATIONS {
        assert!(next(required_state(op), Started(op)).is_ok(), "{op:?}");
    }
}

#[test]
fn allowed_operations_lists_only_what_the_state_allows_and_says_why_for_the_rest() {
    let ops = allowed_operations(&web01(), &inventory(), &ctx());
    let allowed: Vec<Operation> = ops.iter().filter(|(_, r)| r.is_empty()).map(|(op, _)| *op).collect();
    assert_eq!(allowed, vec![Operation::Reprotect]);
    for (op, why) in &ops {
        if *op != Operation::Reprotect {
            // The article's rules, and the split-brain's own (SB-1: only an item in one may be resolved).
            assert!(
                why.iter().all(|r| (r.rule.starts_with("R-") || r.rule == "SB-1") && !r.recommended_action.is_empty()),
                "{op:?}: {why:?}"
            );
        }
    }
    let protected = in_state(web01(), State::ProtectedToPrimary);
    let ops = allowed_operations(&protected, &inventory(), &ctx());
    assert!(ops.iter().any(|(op, r)| *op == Operation::Failover && r.is_empty()));
}

/// Only the reprotects quote bytes to move, so only their dry runs read the disks; commit, cancel, failover and a
/// change of point answer from the state alone.
#[test]
fn only_the_reprotects_dry_runs_read_the_disks() {
    let reading: Vec<Operation> = OPERATIONS.into_iter().filter(|op| moves_disks(*op)).collect();
    assert_eq!(reading, vec![Operation::Reprotect, Operation::ReprotectToCloud]);
}

/// Drills: a test failover needs the item protected to on-premises, a network marked isolated (a production or an
/// unknown one is refused, and the refusal names the isolated ones), a recovery point; one drill at a time; its
/// cleanup needs a drill and short notes; a real failover cleans a live drill up first; the item's state never moves.
#[test]
fn drills_need_an_isolated_network_run_one_at_a_time_and_never_move_the_state() {
    use Event::*;
    let item = in_state(web01(), State::ProtectedToPrimary);
    let run = |item: &ReplicatedItem, op, req: &Request| {
        dry_run(item, &inventory(), op, req, &ctx(), &DataEstimate::default())
    };
    let net = |n: &str| Request { network: Some(n.into()), ..Request::default() };
    let refused = |p: &Plan| p.refusals().into_iter().map(|r| r.rule).collect::<Vec<_>>();

    let p = run(&item, Operation::TestFailover, &Request::default());
    assert_eq!(refused(&p), ["DR-1"], "{p:?}");
    assert!(p.refusals()[0].recommended_action.contains("bubble"), "names the isolated networks: {p:?}");
    let p = run(&item, Operation::TestFailover, &net("prod"));
    assert_eq!(refused(&p), ["DR-1"]);
    assert!(p.refusals()[0].message.contains("production network"), "{p:?}");
    assert_eq!(refused(&run(&item, Operation::TestFailover, &net("nowhere"))), ["DR-1"]);
    let p = run(&item, Operation::TestFailover, &net("bubble"));
    assert!(p.allowed, "{p:?}");
    let steps: Vec<Step> = p.tasks.iter().map(|t| t.step).collect();
    assert_eq!(steps, [Step::CreateTestVm, Step::PowerOnTestVm, Step::CheckTestVm]);
    assert!(p.tasks[0].name.contains("web01-test") && p.tasks[0].name.contains("bubble"), "{:?}", p.tasks);

    // Not before the reprotect; not without a recovery point (R-RP3).
    assert_eq!(refused(&run(&web01(), Operation::TestFailover, &net("bubble")))[0], "R-W2");
    let mut pointless = item.clone();
    pointless.recovery_points.clear();
    assert!(refused(&run(&pointless, Operation::TestFailover, &net("bubble"))).contains(&"R-RP3".to_owned()));

    // Nothing to clean up yet; then a live drill: no second one, cleanup allowed, and a failover removes it first.
    assert_eq!(refused(&run(&item, Operation::CleanupTestFailover, &Request::default())), ["DR-3"]);
    let mut drilled = item.clone();
    drilled.drill = Some(LiveDrill {
        id: "job-1".into(),
        vm: "web01-test".into(),
        host: "esx1".into(),
        network: "bubble".into(),
        point: item.recovery_points[0].clone(),
        started_at: 1,
        disks: vec![],
        kept_copy: None,
    });
    assert_eq!(refused(&run(&drilled, Operation::TestFailover, &net("bubble"))), ["DR-3"]);
    assert!(run(&drilled, Operation::CleanupTestFailover, &Request::default()).allowed);
    let long = Request { notes: Some("n".repeat(4001)), ..Request::default() };
    assert_eq!(refused(&run(&drilled, Operation::CleanupTestFailover, &long)), ["DR-4"]);
    let f = run(&drilled, Operation::Failover, &Request::default());
    assert!(f.allowed, "a drill does not hold a failover back: {f:?}");
    assert_eq!(f.tasks[0].step, Step::RemoveTestVm);
    assert_eq!(f.tasks[1].step, Step::RecordCleanup);
    let ops = allowed_operations(&drilled, &inventory(), &ctx());
    let allowed: Vec<Operation> = ops.iter().filter(|(_, r)| r.is_empty()).map(|(op, _)| *op).collect();
    assert_eq!(allowed, [Operation::Failover, Operation::CleanupTestFailover, Operation::VerifyReplica]);

    for op in [Operation::TestFailover, Operation::CleanupTestFailover, Operation::VerifyReplica] {
        for event in [Started(op), Succeeded(op), Failed(op)] {
            assert_eq!(next(State::ProtectedToPrimary, event), Ok(State::ProtectedToPrimary), "{event:?}");
        }
        assert_eq!(op.is_drill(), op != Operation::VerifyReplica, "a verification is an Operator's, not a drill");
    }
}

/// Split-brain (issue 12 §4): entered from protected-to-primary or from failed back waiting for commit when both
/// copies changed, left only by keeping one copy, with a reason (SB-2); nothing else is allowed meanwhile, and only an
/// item in split-brain may be resolved (SB-1).
#[test]
fn a_split_brain_is_left_only_by_keeping_one_copy_with_a_reason() {
    use Event::*;
    assert_eq!(next(State::ProtectedToPrimary, Diverged), Ok(State::SplitBrain));
    assert_eq!(next(State::FailedBackCommitPending, Diverged), Ok(State::SplitBrain));
    assert!(next(State::CommittedInCloud, Diverged).is_err());
    assert!(next(State::FailbackInProgress, Diverged).is_err(), "a running failback is not interrupted");
    assert_eq!(next(State::SplitBrain, Started(Operation::KeepCloudCopy)), Ok(State::SplitBrain));
    assert_eq!(next(State::SplitBrain, Succeeded(Operation::KeepCloudCopy)), Ok(State::ProtectedToPrimary));
    assert_eq!(next(State::SplitBrain, Succeeded(Operation::KeepOnPremisesCopy)), Ok(State::FailedBackCommitPending));
    assert_eq!(next(State::SplitBrain, Failed(Operation::KeepOnPremisesCopy)), Ok(State::SplitBrain));
    assert!(next(State::SplitBrain, Started(Operation::Commit)).is_err());

    let item = in_state(web01(), State::SplitBrain);
    let ops = allowed_operations(&item, &inventory(), &ctx());
    let allowed: Vec<Operation> = ops.iter().filter(|(_, r)| r.is_empty()).map(|(op, _)| *op).collect();
    assert_eq!(allowed, [Operation::KeepCloudCopy, Operation::KeepOnPremisesCopy]);
    let run = |item: &ReplicatedItem, op, reason: Option<&str>| {
        let req = Request { reason: reason.map(Into::into), ..Request::default() };
        dry_run(item, &inventory(), op, &req, &ctx(), &DataEstimate::default())
    };
    let p = run(&item, Operation::KeepCloudCopy, None);
    assert_eq!(p.refusals().iter().map(|r| r.rule.as_str()).collect::<Vec<_>>(), ["SB-2"]);
    assert_eq!(run(&item, Operation::KeepCloudCopy, Some("  ")).refusals()[0].rule, "SB-2");
    let p = run(&item, Operation::KeepCloudCopy, Some(&"x".repeat(4001)));
    assert!(p.refusals()[0].message.contains("4001"), "{p:?}");
    let p = run(&item, Operation::KeepOnPremisesCopy, Some("on-premises is production since the failback"));
    assert!(p.allowed, "{p:?}");
    assert_eq!(p.tasks.iter().map(|t| t.step).collect::<Vec<_>>(), [Step::KeepDivergentBlocks, Step::ShutDownCloudVm]);
    let p = run(&item, Operation::KeepCloudCopy, Some("the on-premises VM was started by mistake"));
    let steps: Vec<Step> = p.tasks.iter().map(|t| t.step).collect();
    assert_eq!(
        steps,
        [Step::KeepDivergentBlocks, Step::ShutDownOnPrem, Step::RestartCloudVm, Step::ResumeReplication],
        "the loser's blocks are kept before anything else"
    );
    let protected = in_state(web01(), State::ProtectedToPrimary);
    let p = run(&protected, Operation::KeepCloudCopy, Some("why"));
    assert_eq!(p.refusals()[0].rule, "SB-1", "{p:?}");
    assert!(p.refusals()[0].message.contains("split-brain"), "{p:?}");
}
