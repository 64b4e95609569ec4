//! `homeward demo init`: a vault where every scenario of the article is present, with small real disks.
//! Every item starts as the article does: failed over to the cloud and committed there, the VM running in the
//! cloud and writing to its disk since.

use crate::domain::*;
use crate::estate::{Estate, EstateDoc, EstateError, Faults, ItemRecord, RecoveryPlan, ReplicationPolicy};
use crate::lifecycle::State;

/// Size of each demo disk.
pub const DISK_BYTES: u64 = 16 << 20;

struct Spec {
    id: &'static str,
    machine: MachineType,
    os: (OsFamily, &'static str),
    /// The on-premises original still exists, on this datastore.
    original_on: Option<&'static str>,
    migrated: bool,
    group: Option<&'static str>,
}

const SPECS: &[Spec] = &[
    Spec {
        id: "web01",
        machine: MachineType::VmwareVm,
        os: (OsFamily::Windows, "Windows Server 2019"),
        original_on: Some("vmfs-01"),
        migrated: false,
        group: None,
    },
    Spec {
        id: "sql01",
        machine: MachineType::VmwareVm,
        os: (OsFamily::Windows, "Windows Server 2019"),
        original_on: Some("vsan-01"),
        migrated: false,
        group: None,
    },
    Spec {
        id: "app02",
        machine: MachineType::VmwareVm,
        os: (OsFamily::Windows, "Windows Server 2016"),
        original_on: None,
        migrated: false,
        group: None,
    },
    Spec {
        id: "lin01",
        machine: MachineType::VmwareVm,
        os: (OsFamily::Linux, "Ubuntu 22.04"),
        original_on: Some("vmfs-01"),
        migrated: false,
        group: None,
    },
    Spec {
        id: "phys16",
        machine: MachineType::PhysicalServer,
        os: (OsFamily::Windows, "Windows Server 2016"),
        original_on: None,
        migrated: false,
        group: None,
    },
    Spec {
        id: "phys08",
        machine: MachineType::PhysicalServer,
        os: (OsFamily::Windows, "Windows Server 2008 R2 SP1"),
        original_on: None,
        migrated: false,
        group: None,
    },
    Spec {
        id: "mig01",
        machine: MachineType::VmwareVm,
        os: (OsFamily::Windows, "Windows Server 2016"),
        original_on: Some("vmfs-01"),
        migrated: true,
        group: None,
    },
    Spec {
        id: "erp-db",
        machine: MachineType::VmwareVm,
        os: (OsFamily::Windows, "Windows Server 2019"),
        original_on: Some("vmfs-01"),
        migrated: false,
        group: Some("rg-erp"),
    },
    Spec {
        id: "erp-app",
        machine: MachineType::VmwareVm,
        os: (OsFamily::Windows, "Windows Server 2019"),
        original_on: Some("vmfs-01"),
        migrated: false,
        group: Some("rg-erp"),
    },
    Spec {
        id: "erp-web",
        machine: MachineType::VmwareVm,
        os: (OsFamily::Linux, "RHEL 9"),
        original_on: Some("vmfs-01"),
        migrated: false,
        group: Some("rg-erp"),
    },
];

fn inventory() -> Inventory {
    let host = |id: &str, vc: Option<&str>| Host {
        id: id.into(),
        vcenter: vc.map(Into::into),
        hypervisor: Hypervisor::Esxi,
        discovered: true,
    };
    let ds = |id: &str, kind, hosts: &[&str]| Datastore {
        id: id.into(),
        kind,
        hosts: hosts.iter().map(|h| h.to_string()).collect(),
        capacity_bytes: 2 << 40,
        free_bytes: 1 << 40,
    };
    Inventory {
        configuration_server: Some(ConfigurationServer {
            id: "cs-01".into(),
            ip_address: "10.10.0.5".into(),
            registered_vms: SPECS.iter().map(|s| s.id.to_string()).collect(),
        }),
        vcenters: vec![VCenter { id: "vcenter-01".into(), connected: true, configuration_server: "cs-01".into() }],
        hosts: vec![
            host("esxi-01", Some("vcenter-01")),
            host("esxi-02", Some("vcenter-01")),
            host("esxi-standalone", None),
        ],
        datastores: vec![
            ds("vmfs-01", DatastoreKind::Vmfs, &["esxi-01", "esxi-02"]),
            ds("vmfs-02", DatastoreKind::Vmfs, &["esxi-02"]),
            ds("vsan-01", DatastoreKind::Vsan, &["esxi-01", "esxi-02"]),
        ],
        master_targets: vec![
            MasterTarget { id: "mt-win-01".into(), os: OsFamily::Windows, host: "esxi-01".into(), snapshots: 0 },
            MasterTarget { id: "mt-linux-01".into(), os: OsFamily::Linux, host: "esxi-01".into(), snapshots: 0 },
        ],
        process_servers: vec![
            ProcessServer { id: "ps-azure-01".into(), site: Site::Recovery, bandwidth_bytes_per_s: 50 << 20 },
            ProcessServer { id: "cs-01".into(), site: Site::Primary, bandwidth_bytes_per_s: 50 << 20 },
        ],
        networks: vec![
            Network { id: "VM Network".into(), isolated: false, vcenter: Some("vcenter-01".into()) },
            Network { id: "drill-isolated".into(), isolated: true, vcenter: Some("vcenter-01".into()) },
        ],
    }
}

/// The guest writes `bytes`, mostly within the first `hot_fraction` of the disk.
fn guest_writes(img: &replicator::DiskImage, hot_fraction: f64, seed: u64, bytes: u64) -> Result<(), EstateError> {
    let pattern = replicator::workload::Pattern::HotSpot { hot_fraction, hot_share: 0.9 };
    let mut w = replicator::workload::GuestWriter::open(img, 65536, pattern, seed)?;
    w.step(bytes)?;
    w.pause()?;
    Ok(())
}

/// Makes the demo estate's disks under `estate.root` and returns its description (which the caller stores, e.g.
/// with `Estate::create_once`).
pub fn seed(estate: &Estate) -> Result<EstateDoc, EstateError> {
    let io = |path: &std::path::Path, source| EstateError::Io { path: path.to_path_buf(), source };
    let mut items = Vec::new();
    for (n, s) in SPECS.iter().enumerate() {
        let cloud_rel = format!("recovery/rg-dr/{}/disk0.vhd", s.id);
        let cloud = estate.path(&cloud_rel);
        std::fs::create_dir_all(cloud.parent().unwrap()).map_err(|e| io(&cloud, e))?;
        let img = replicator::DiskImage::create(&cloud, replicator::Format::Vhd, DISK_BYTES)?;
        // The guest's data as it was when it failed over…
        guest_writes(&img, 1.0, n as u64 + 1, DISK_BYTES / 2)?;
        let mut onprem_disks = Vec::new();
        if let Some(ds) = s.original_on {
            let rel = format!("primary/{ds}/{}/disk0.vmdk", s.id);
            let p = estate.path(&rel);
            std::fs::create_dir_all(p.parent().unwrap()).map_err(|e| io(&p, e))?;
            let opts = replicator::SyncOptions { mode: replicator::Mode::Full, track: false, ..Default::default() };
            replicator::sync::sync(&cloud, &p, &opts)?;
            // The original's replica bookkeeping is not the demo's business: it starts as a plain VMDK.
            let _ = std::fs::remove_dir_all(replicator::DiskImage::open(&p)?.state_dir());
            onprem_disks.push(rel);
        }
        // …and what the VM wrote in the cloud since: a few percent of the disk.
        guest_writes(&img, 0.1, 100 + n as u64, DISK_BYTES / 32)?;
        let _ = std::fs::remove_dir_all(img.state_dir());
        let item = ReplicatedItem {
            id: s.id.into(),
            name: s.id.into(),
            machine: s.machine,
            os: Os { family: s.os.0, name: s.os.1.into() },
            state: State::CommittedInCloud,
            health: Health::Normal,
            health_errors: Vec::new(),
            initial_sync_percent: 0,
            onprem: s.original_on.map(|ds| OnPremVm {
                id: format!("vm-{}", s.id),
                host: "esxi-01".into(),
                exists: true,
                disks: vec![OnPremDisk {
                    id: "disk0".into(),
                    datastore: ds.into(),
                    size_bytes: DISK_BYTES,
                    attached: true,
                }],
            }),
            original_vcenter: (s.machine == MachineType::VmwareVm).then(|| "vcenter-01".into()),
            original_configuration_server: "cs-01".into(),
            cloud_vm: Some(CloudVm {
                id: format!("azvm-{}", s.id),
                resource_group: "rg-dr".into(),
                original_resource_group: "rg-dr".into(),
                deleted: false,
                migration_completed: s.migrated,
                running: true,
                storage_account: None,
                blobs: Vec::new(),
            }),
            recovery_points: Vec::new(),
            replication_group: s.group.map(Into::into),
            master_target: None,
            process_server: None,
            booted_at: None,
            agent_registered: true,
            last_failure: None,
            drill: None,
            split_brain: None,
            kept_copies: Vec::new(),
            verification: None,
            protection: Default::default(),
            disk_bytes: DISK_BYTES,
        };
        items.push(ItemRecord {
            item,
            cloud_disks: vec![cloud_rel],
            onprem_disks,
            replica_disks: Vec::new(),
            cloud_power: true,
            onprem_power: s.original_on.is_some(),
            onprem_power_set_at: 0,
            vmware_tools: match s.os.0 {
                OsFamily::Windows => "disabled".into(),
                OsFamily::Linux => "uninstalled".into(),
            },
            failed_back_point: None,
            last_cycle_at: 0,
            last_app_cycle_at: 0,
            cloud_storage: None,
        });
    }
    let doc = EstateDoc {
        inventory: inventory(),
        items,
        plans: vec![RecoveryPlan {
            id: "plan-erp".into(),
            name: "ERP failback".into(),
            groups: vec![vec!["erp-db".into()], vec!["erp-app".into(), "erp-web".into()]],
            protection: Default::default(),
        }],
        // Agents take a few minutes to register after a failback boots the VM (R-A1).
        faults: Faults { agent_registration_delay_min: 5 },
        replication: ReplicationPolicy::default(),
    };
    Ok(doc)
}

/// Size of each fleet disk: small, sparse; the fleet exists to exercise the portal at scale.
pub const FLEET_DISK_BYTES: u64 = 1 << 20;

/// Adds `n` more replicated items (`fleet-0001` …) to a seeded estate, each with a real (sparse) cloud disk,
/// failed over and committed in the cloud like the rest: the scale the portal must handle (thousands of items).
/// Their guests stay quiet, so the worker's continuous replication does not write thousands of disks a second.
pub fn add_fleet(estate: &Estate, doc: &mut EstateDoc, n: usize) -> Result<(), EstateError> {
    let io = |path: &std::path::Path, source| EstateError::Io { path: path.to_path_buf(), source };
    let start = doc.items.iter().filter(|r| r.item.id.starts_with("fleet-")).count();
    let oses = [
        (OsFamily::Windows, "Windows Server 2019"),
        (OsFamily::Windows, "Windows Server 2022"),
        (OsFamily::Linux, "Ubuntu 22.04"),
        (OsFamily::Linux, "RHEL 9"),
    ];
    for k in start..start + n {
        let id = format!("fleet-{:04}", k + 1);
        let cloud_rel = format!("recovery/rg-fleet/{id}/disk0.vhd");
        let cloud = estate.path(&cloud_rel);
        std::fs::create_dir_all(cloud.parent().unwrap()).map_err(|e| io(&cloud, e))?;
        replicator::DiskImage::create(&cloud, replicator::Format::Vhd, FLEET_DISK_BYTES)?;
        let (family, os) = oses[k % oses.len()];
        let machine = if k % 10 == 9 { MachineType::PhysicalServer } else { MachineType::VmwareVm };
        if let Some(cs) = &mut doc.inventory.configuration_server {
            cs.registered_vms.insert(id.clone());
        }
        doc.items.push(ItemRecord {
            item: ReplicatedItem {
                id: id.clone(),
                name: id.clone(),
                machine,
                os: Os { family, name: os.into() },
                state: State::CommittedInCloud,
                health: Health::Normal,
                health_errors: Vec::new(),
                initial_sync_percent: 0,
                onprem: None,
                original_vcenter: (machine == MachineType::VmwareVm).then(|| "vcenter-01".into()),
                original_configuration_server: "cs-01".into(),
                cloud_vm: Some(CloudVm {
                    id: format!("azvm-{id}"),
                    resource_group: "rg-fleet".into(),
                    original_resource_group: "rg-fleet".into(),
                    deleted: false,
                    migration_completed: false,
                    running: true,
                    storage_account: None,
                    blobs: Vec::new(),
                }),
                recovery_points: Vec::new(),
                replication_group: None,
                master_target: None,
                process_server: None,
                booted_at: None,
                agent_registered: true,
                last_failure: None,
                drill: None,
                split_brain: None,
                kept_copies: Vec::new(),
                verification: None,
                protection: Default::default(),
                disk_bytes: FLEET_DISK_BYTES,
            },
            cloud_disks: vec![cloud_rel],
            onprem_disks: Vec::new(),
            replica_disks: Vec::new(),
            cloud_power: true,
            onprem_power: false,
            onprem_power_set_at: 0,
            vmware_tools: match family {
                OsFamily::Windows => "disabled".into(),
                OsFamily::Linux => "uninstalled".into(),
            },
            failed_back_point: None,
            last_cycle_at: 0,
            last_app_cycle_at: 0,
            cloud_storage: None,
        });
    }
    doc.replication.guest_bytes_per_tick = 0;
    Ok(())
}

/// A recovery plan `plan-fleet` of every fleet item, in groups of 50: a large plan to fail over (`./x bench plan`).
pub fn add_fleet_plan(doc: &mut EstateDoc) {
    let ids: Vec<String> =
        doc.items.iter().filter(|r| r.item.id.starts_with("fleet-")).map(|r| r.item.id.clone()).collect();
    doc.plans.retain(|p| p.id != "plan-fleet");
    doc.plans.push(RecoveryPlan {
        id: "plan-fleet".into(),
        name: format!("Fleet failback ({} items)", ids.len()),
        groups: ids.chunks(50).map(<[String]>::to_vec).collect(),
        protection: Default::default(),
    });
}
