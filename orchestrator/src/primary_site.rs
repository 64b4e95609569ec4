//! The primary site through a vCenter the vault is connected to.
//!
//! A vCenter connection named after a vCenter of the estate (the items' original vCenter, `vcenter-01` in the demo)
//! makes that vCenter real: the rules see its hosts, datastores and master targets as its last check read them
//! ([`overlay`]), so R-C4, R-C2, R-L8 and R-L9 refuse from what vCenter reports; and a job whose VM lives on one of
//! its hosts acts through the vim25 API ([`VcenterSite`]): `CreateVM_Task` for an alternate location, power tasks,
//! disks attached with `ReconfigVM_Task`. The disks' bytes go to the datastore's folder as VMDK files, which this
//! node must reach (the simulator's datastores are local folders; a real VMFS volume is reached by a master-target
//! agent).

use std::path::{Path, PathBuf};

use crate::connections::{Connection, ConnectionError, InventoryView};
use crate::connectors::vsphere::{self, NewVm, PowerState, Vcenter};
use crate::connectors::ConnectorError;
use crate::domain::*;
use crate::estate::ItemRecord;
use crate::jobs::TaskFailure;

/// A disk file in a connected vCenter's datastore as vCenter names it, `[datastore] folder/file.vmdk`, with the
/// datastore's name: from the folder each datastore is reached at (its URL as this node mounts it).
pub fn in_datastore(vcenters: &[(Connection, InventoryView)], file: &Path) -> Option<(String, String)> {
    vcenters.iter().flat_map(|(_, inv)| &inv.datastores).find_map(|d| {
        let rel = file.strip_prefix(datastore_folder(&d.url)?).ok()?;
        Some((d.name.clone(), format!("[{}] {}", d.name, rel.to_str()?)))
    })
}

/// vCenter's datastore type → the kind the rules know.
pub fn datastore_kind(vsphere_type: &str) -> DatastoreKind {
    match vsphere_type.to_ascii_lowercase().as_str() {
        "vmfs" => DatastoreKind::Vmfs,
        "vsan" => DatastoreKind::Vsan,
        "nfs" | "nfs41" => DatastoreKind::Nfs,
        _ => DatastoreKind::Other,
    }
}

/// Puts what vCenter `name` reported in its last check into the inventory the rules see: the vCenter itself
/// (connected while its checks succeed), its hosts (discovered when connected and not in maintenance), its
/// datastores (reachable from the hosts that mount them, none when inaccessible), and the host and snapshot count of
/// every master target that is one of its VMs. An entry of the estate with the same name is replaced.
pub fn overlay(inv: &mut Inventory, name: &str, view: &InventoryView, connected: bool) {
    let estate = inv.vcenter(name).cloned();
    let configuration_server = estate
        .as_ref()
        .map(|v| v.configuration_server.clone())
        .or_else(|| inv.configuration_server.as_ref().map(|c| c.id.clone()))
        .unwrap_or_default();
    // The estate's own flag still counts: the demo's "vCenter disconnected" switch keeps working beside a real one.
    let connected = connected && estate.is_none_or(|v| v.connected);
    inv.vcenters.retain(|v| v.id != name);
    inv.vcenters.push(VCenter { id: name.to_owned(), connected, configuration_server });

    let hosts: std::collections::HashSet<&str> = view.hosts.iter().map(|h| h.name.as_str()).collect();
    inv.hosts.retain(|h| !hosts.contains(h.id.as_str()));
    inv.hosts.extend(view.hosts.iter().map(|h| Host {
        id: h.name.clone(),
        vcenter: Some(name.to_owned()),
        hypervisor: Hypervisor::Esxi,
        discovered: h.connection_state == "connected" && !h.maintenance,
    }));

    let datastores: std::collections::HashSet<&str> = view.datastores.iter().map(|d| d.name.as_str()).collect();
    inv.datastores.retain(|d| !datastores.contains(d.id.as_str()));
    inv.datastores.extend(view.datastores.iter().map(|d| Datastore {
        id: d.name.clone(),
        kind: datastore_kind(&d.kind),
        hosts: if d.accessible {
            view.hosts.iter().filter(|h| h.datastores.contains(&d.name)).map(|h| h.name.clone()).collect()
        } else {
            Vec::new()
        },
        capacity_bytes: d.capacity_bytes,
        free_bytes: d.free_bytes,
    }));

    // vCenter's networks, each isolated only when an Administrator marked it so (the mark is the estate's).
    for n in &view.networks {
        match inv.networks.iter_mut().find(|e| &e.id == n) {
            Some(e) => e.vcenter = Some(name.to_owned()),
            None => inv.networks.push(Network { id: n.clone(), isolated: false, vcenter: Some(name.to_owned()) }),
        }
    }

    for mt in &mut inv.master_targets {
        if let Some(vm) = view.vms.iter().find(|v| v.name == mt.id) {
            mt.host = vm.host.clone().unwrap_or_default();
            mt.snapshots = vm.snapshots as u32;
        }
    }
}

/// Whether the item's on-premises disks are files of a vCenter datastore already (named by absolute path).
pub fn bound_to_vcenter(rec: &ItemRecord) -> bool {
    rec.onprem_disks.iter().any(|d| Path::new(d).is_absolute())
}

/// The items protected from vCenter `name` whose reprotect to on-premises is next or under way, whose VM (by the
/// item's name) is in its inventory, and that the estate has not bound to it yet: their on-premises VM as vCenter
/// reports it (host, disks on their datastores) and their disks' files in the datastores' folders — none when this
/// node cannot reach a datastore's files. The dry run of the reprotect so sees the real VM (original location,
/// R-L4/R-L5/R-L7 on its datastores), and the job's first step binds it.
pub fn overlay_items(items: &mut [ItemRecord], name: &str, view: &InventoryView) {
    // By name once: thousands of items against thousands of VMs must not be a search per item.
    let vms: std::collections::HashMap<&str, &crate::connections::VmView> =
        view.vms.iter().map(|v| (v.name.as_str(), v)).collect();
    for rec in items.iter_mut() {
        // Only where a reprotect to on-premises is the next step: an item replicating to the local estate's disks
        // keeps them.
        use crate::lifecycle::State;
        let waiting = matches!(rec.item.state, State::CommittedInCloud | State::ReprotectInProgress);
        if !waiting || rec.item.original_vcenter.as_deref() != Some(name) || bound_to_vcenter(rec) {
            continue;
        }
        let Some(vm) = vms.get(rec.item.name.as_str()) else { continue };
        let Some(host) = vm.host.clone() else { continue };
        let files: Option<Vec<String>> =
            vm.disks.iter().map(|d| file_of(view, d).map(|p| p.display().to_string())).collect();
        rec.onprem_disks = files.unwrap_or_default();
        rec.item.onprem = Some(OnPremVm {
            id: vm.name.clone(),
            host,
            exists: true,
            disks: vm
                .disks
                .iter()
                .enumerate()
                .map(|(i, d)| OnPremDisk {
                    id: format!("disk{i}"),
                    datastore: d
                        .strip_prefix('[')
                        .and_then(|r| r.split_once(']'))
                        .map(|(ds, _)| ds.to_owned())
                        .unwrap_or_default(),
                    size_bytes: vm.disk_bytes.get(i).copied().unwrap_or(0),
                    attached: true,
                })
                .collect(),
        });
    }
}

/// The items protected to on-premises whose VM in vCenter `name` its check at `reported_at` found powered on, after
/// Homeward last powered it on or off: the VM runs outside Homeward, writing the replica the cloud's changes go to.
/// Their record says so (`onprem_power`), and the next replication round puts them in split-brain. Pure.
pub fn overlay_power(items: &mut [ItemRecord], view: &InventoryView, reported_at: Millis) {
    let vms: std::collections::HashMap<&str, &crate::connections::VmView> =
        view.vms.iter().map(|v| (v.name.as_str(), v)).collect();
    for rec in items.iter_mut() {
        if rec.item.state != crate::lifecycle::State::ProtectedToPrimary
            || rec.onprem_power
            || !bound_to_vcenter(rec)
            || reported_at <= rec.onprem_power_set_at
        {
            continue;
        }
        let Some(vm) = rec.item.onprem.as_ref().and_then(|vm| vms.get(vm.id.as_str())) else { continue };
        // vCenter names a host only for a VM on one of its own hosts: the same name in another vCenter is another VM.
        let on_its_host = vm.host.as_deref() == rec.item.onprem.as_ref().map(|v| v.host.as_str());
        if vm.power == "on" && on_its_host {
            rec.onprem_power = true;
        }
    }
}

/// The file behind `[datastore] folder/name.vmdk`, when this node reaches the datastore's folder.
fn file_of(view: &InventoryView, backing: &str) -> Option<PathBuf> {
    let (ds, rel) = backing.strip_prefix('[')?.split_once(']')?;
    let folder = datastore_folder(&view.datastores.iter().find(|d| d.name == ds)?.url)?;
    Some(folder.join(rel.trim()))
}

/// The folder a datastore's URL names, when this node can reach it (a local path, with or without `ds://`).
pub fn datastore_folder(url: &str) -> Option<PathBuf> {
    let path = url.strip_prefix("ds://").unwrap_or(url);
    let path = Path::new(path);
    (path.is_absolute() && path.is_dir()).then(|| path.to_path_buf())
}

/// vSphere's guest OS identifier for a new VM of this family.
fn guest_id(os: OsFamily) -> &'static str {
    match os {
        OsFamily::Windows => "windows9Server64Guest",
        OsFamily::Linux => "otherLinux64Guest",
    }
}

/// A connector failure as a task's failure: a vCenter that cannot be reached is worth retrying (the job backs off
/// and tries again); anything else needs a person.
fn task_failure(vcenter: &str, operation: &str, e: impl std::fmt::Display, unreachable: bool) -> TaskFailure {
    let error = format!("vCenter {vcenter}, {operation}: {e}");
    let action = format!("Fix the cause in vCenter {vcenter}, then restart the job.");
    if unreachable {
        TaskFailure::retryable(error, action)
    } else {
        TaskFailure::fatal(error, action)
    }
}

fn connector(vcenter: &str, operation: &str) -> impl Fn(ConnectorError) -> TaskFailure {
    let (vcenter, operation) = (vcenter.to_owned(), operation.to_owned());
    move |e| {
        let unreachable = matches!(e, ConnectorError::Unreachable { .. });
        task_failure(&vcenter, &operation, e, unreachable)
    }
}

/// The new VM of an alternate-location failback: its name in vCenter and its disks' files.
pub struct CreatedVm {
    pub name: String,
    /// Absolute paths of the new VMDKs, in the cloud disks' order.
    pub disks: Vec<PathBuf>,
}

/// A job's session with the vCenter of the primary site. Ends the session when dropped through [`Self::close`].
pub struct VcenterSite {
    pub name: String,
    vc: Vcenter,
}

impl VcenterSite {
    /// The connected vCenter that manages `host`, by the last check of each connection; `None` when no connection
    /// knows the host (the local estate's hosts).
    pub async fn for_host(
        connections: &crate::connections::Connections,
        host: &str,
    ) -> Result<Option<Connection>, TaskFailure> {
        let all = connections.vcenters().await.map_err(|e| {
            TaskFailure::retryable(format!("the site connections cannot be read: {e}"), "Check the database.")
        })?;
        Ok(all.into_iter().find(|(_, inv)| inv.hosts.iter().any(|h| h.name == host)).map(|(c, _)| c))
    }

    pub async fn open(connections: &crate::connections::Connections, name: &str) -> Result<VcenterSite, TaskFailure> {
        match connections.vcenter_session(name).await {
            Ok(vc) => Ok(VcenterSite { name: name.to_owned(), vc }),
            Err(ConnectionError::Connector(e)) => Err(connector(name, "log in")(e)),
            Err(e) => Err(task_failure(name, "log in", e, false)),
        }
    }

    /// Ends the session (vCenter counts them).
    pub async fn close(self) {
        let _ = self.vc.logout().await;
    }

    async fn inventory(&self, operation: &str) -> Result<vsphere::Inventory, TaskFailure> {
        self.vc.inventory().await.map_err(connector(&self.name, operation))
    }

    async fn vm(&self, name: &str, operation: &str) -> Result<vsphere::Vm, TaskFailure> {
        let inv = self.inventory(operation).await?;
        inv.vms.into_iter().find(|v| v.name == name).ok_or_else(|| {
            TaskFailure::fatal(
                format!("vCenter {}, {operation}: the VM {name} is not in its inventory", self.name),
                format!("Check whether {name} was removed or renamed in vCenter {}.", self.name),
            )
        })
    }

    /// Creates the VM `name` on `host` with its files on `datastore`, and one new VMDK per size in the VM's folder.
    /// Refuses before anything is made when the datastore cannot hold the disks or a VM of that name exists that
    /// is not this job's. After a crash the VM this job made (its first VMDK is in its folder) is taken again.
    pub async fn create_vm(
        &self,
        name: &str,
        os: OsFamily,
        host: &str,
        datastore: &str,
        sizes: &[u64],
        network: Option<&str>,
    ) -> Result<CreatedVm, TaskFailure> {
        let op = "create the VM";
        let inv = self.inventory(op).await?;
        let ds = inv.datastores.iter().find(|d| d.name == datastore).ok_or_else(|| {
            TaskFailure::fatal(
                format!("vCenter {}: there is no datastore {datastore}", self.name),
                "Choose another datastore and start the reprotect again.",
            )
        })?;
        let folder = datastore_folder(&ds.url).ok_or_else(|| {
            TaskFailure::fatal(
                format!("the files of datastore {datastore} ({}) cannot be reached from this node", ds.url),
                "Choose a datastore whose folder this node mounts, or move the disks through a master-target agent.",
            )
        })?;
        let vm_folder = folder.join(name);
        let disk = |i: usize| vm_folder.join(format!("{name}-disk{i}.vmdk"));
        let ours = inv.vms.iter().any(|v| v.name == name) && disk(0).exists();
        if !ours {
            if inv.vms.iter().any(|v| v.name == name) {
                return Err(TaskFailure::fatal(
                    format!("vCenter {}: a VM named {name} exists already", self.name),
                    format!("Rename or remove that VM in vCenter {}, then restart the job.", self.name),
                ));
            }
            let need: u64 = sizes.iter().sum();
            if ds.free_bytes < need {
                return Err(TaskFailure::fatal(
                    format!(
                        "datastore {datastore} has {} free; the new VM's disks need {} (nothing was created)",
                        replicator::human_bytes(ds.free_bytes),
                        replicator::human_bytes(need)
                    ),
                    format!(
                        "Free space on datastore {datastore} or choose another one, then start the reprotect again."
                    ),
                ));
            }
            let new = NewVm { name, host, datastore, guest_id: guest_id(os), cpus: 2, memory_mb: 4096, network };
            self.vc.create_vm(&new).await.map_err(connector(&self.name, op))?;
        }
        std::fs::create_dir_all(&vm_folder).map_err(|e| {
            TaskFailure::fatal(format!("the VM folder {}: {e}", vm_folder.display()), "Check the datastore.")
        })?;
        let mut disks = Vec::new();
        for (i, &size) in sizes.iter().enumerate() {
            let path = disk(i);
            if !path.exists() {
                replicator::DiskImage::create(&path, replicator::Format::Vmdk, size).map_err(|e| {
                    TaskFailure::fatal(
                        format!("the new VMDK {}: {e}", path.display()),
                        format!("Free space on datastore {datastore}, then restart the job."),
                    )
                })?;
            }
            disks.push(path);
        }
        Ok(CreatedVm { name: name.to_owned(), disks })
    }

    /// The VM named `name` as vCenter reports it now, if it exists.
    pub async fn find_vm(&self, name: &str, operation: &str) -> Result<Option<vsphere::Vm>, TaskFailure> {
        Ok(self.inventory(operation).await?.vms.into_iter().find(|v| v.name == name))
    }

    /// Powers the VM off and deletes it with the files in its folder; nothing to do when it is gone already.
    pub async fn destroy(&self, name: &str) -> Result<bool, TaskFailure> {
        let op = "delete the VM";
        let Some(v) = self.find_vm(name, op).await? else { return Ok(false) };
        if v.power != PowerState::Off {
            self.vc.power_off(&v.id).await.map_err(connector(&self.name, op))?;
        }
        self.vc.destroy_vm(&v.id).await.map_err(connector(&self.name, op))?;
        Ok(true)
    }

    /// Powers the VM on or off; nothing to do when it already is.
    pub async fn power(&self, vm: &str, on: bool) -> Result<(), TaskFailure> {
        let op = if on { "power on" } else { "power off" };
        let v = self.vm(vm, op).await?;
        match (v.power, on) {
            (PowerState::On, true) | (PowerState::Off, false) => Ok(()),
            (_, true) => self.vc.power_on(&v.id).await.map_err(connector(&self.name, op)),
            (_, false) => self.vc.power_off(&v.id).await.map_err(connector(&self.name, op)),
        }
    }

    /// Gives the VM exactly these VMDK files as its disks: those it has that are not among them are detached (their
    /// files stay on the datastore), the missing ones attached. Each must lie under a datastore's folder.
    pub async fn use_disks(&self, vm: &str, files: &[PathBuf]) -> Result<(), TaskFailure> {
        let op = "detach and re-attach the disks";
        let inv = self.inventory(op).await?;
        let v = inv.vms.iter().find(|v| v.name == vm).ok_or_else(|| {
            TaskFailure::fatal(
                format!("vCenter {}, {op}: the VM {vm} is not in its inventory", self.name),
                format!("Check whether {vm} was removed or renamed in vCenter {}.", self.name),
            )
        })?;
        let mut wanted = Vec::new();
        for file in files {
            wanted.push(datastore_path(&inv, file).ok_or_else(|| {
                TaskFailure::fatal(
                    format!("{} is on no datastore of vCenter {}", file.display(), self.name),
                    "Check the item's disks.",
                )
            })?);
        }
        for d in v.disks.iter().filter(|d| !wanted.contains(&d.file)) {
            self.vc.detach_disk(&v.id, d.key).await.map_err(connector(&self.name, op))?;
        }
        for name in wanted.iter().filter(|w| !v.disks.iter().any(|d| &&d.file == w)) {
            self.vc.attach_disk(&v.id, name).await.map_err(connector(&self.name, op))?;
        }
        Ok(())
    }
}

/// `[datastore] folder/file.vmdk` for a file under a datastore's folder.
fn datastore_path(inv: &vsphere::Inventory, file: &Path) -> Option<String> {
    inv.datastores.iter().find_map(|d| {
        let rel = file.strip_prefix(datastore_folder(&d.url)?).ok()?;
        Some(format!("[{}] {}", d.name, rel.to_str()?))
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::connections::{DatastoreView, HostView, VmView};

    fn view(connected_host: &str, mt_snapshots: usize) -> InventoryView {
        InventoryView {
            datacenters: vec!["DC0".into()],
            clusters: vec!["C0".into()],
            hosts: vec![
                HostView {
                    name: "esx-a".into(),
                    cluster: Some("C0".into()),
                    connection_state: connected_host.into(),
                    maintenance: false,
                    datastores: vec!["ds-vmfs".into(), "ds-vsan".into()],
                },
                HostView {
                    name: "esx-b".into(),
                    cluster: Some("C0".into()),
                    connection_state: "connected".into(),
                    maintenance: false,
                    datastores: vec!["ds-vmfs".into()],
                },
            ],
            datastores: vec![
                DatastoreView {
                    name: "ds-vmfs".into(),
                    kind: "VMFS".into(),
                    capacity_bytes: 100 << 30,
                    free_bytes: 40 << 30,
                    accessible: true,
                    url: String::new(),
                },
                DatastoreView {
                    name: "ds-vsan".into(),
                    kind: "vsan".into(),
                    capacity_bytes: 100 << 30,
                    free_bytes: 90 << 30,
                    accessible: true,
                    url: String::new(),
                },
            ],
            networks: vec![],
            vms: vec![VmView {
                name: "mt-win".into(),
                power: "on".into(),
                host: Some("esx-a".into()),
                tools: "guestToolsRunning".into(),
                disks: vec![],
                disk_bytes: vec![],
                snapshots: mt_snapshots,
            }],
        }
    }

    fn estate() -> Inventory {
        Inventory {
            configuration_server: Some(ConfigurationServer {
                id: "cs".into(),
                ip_address: "10.0.0.5".into(),
                registered_vms: Default::default(),
            }),
            vcenters: vec![VCenter { id: "vc".into(), connected: true, configuration_server: "cs".into() }],
            hosts: vec![],
            datastores: vec![],
            master_targets: vec![MasterTarget {
                id: "mt-win".into(),
                os: OsFamily::Windows,
                host: "esxi-old".into(),
                snapshots: 0,
            }],
            process_servers: vec![],
            networks: vec![],
        }
    }

    #[test]
    fn what_vcenter_reports_is_what_the_rules_see() {
        let mut inv = estate();
        overlay(&mut inv, "vc", &view("connected", 0), true);
        assert_eq!(inv.vcenters.len(), 1, "the estate's vCenter of the same name is replaced");
        let host = inv.host("esx-a").unwrap().clone();
        assert_eq!(host.vcenter.as_deref(), Some("vc"));
        assert!(crate::rules::r_c4_vcenter_connected(&inv, &host).is_ok());
        let mt = inv.master_target("mt-win").unwrap().clone();
        assert_eq!(mt.host, "esx-a", "the master target's host is where vCenter runs its VM");
        assert!(crate::rules::r_c2_master_target_has_no_snapshots(&mt).is_ok());
        let vmfs = inv.datastore("ds-vmfs").unwrap();
        assert_eq!((vmfs.kind, vmfs.hosts.clone()), (DatastoreKind::Vmfs, vec!["esx-a".into(), "esx-b".into()]));
        assert!(crate::rules::r_l9_alternate_location_needs_vmfs(vmfs).is_ok());
        let vsan = inv.datastore("ds-vsan").unwrap();
        assert_eq!(crate::rules::r_l9_alternate_location_needs_vmfs(vsan).unwrap_err().rule, "R-L9");
        assert_eq!(crate::rules::datastore_has_room(vmfs, 41 << 30).unwrap_err().rule, "R-L8");

        // The last check failed: the vCenter is disconnected (R-C4); a snapshot on the master target (R-C2); a
        // host in another state is not discovered (R-P3).
        let mut inv = estate();
        overlay(&mut inv, "vc", &view("notResponding", 2), false);
        let host = inv.host("esx-a").unwrap().clone();
        assert_eq!(crate::rules::r_c4_vcenter_connected(&inv, &host).unwrap_err().rule, "R-C4");
        assert_eq!(
            crate::rules::r_c2_master_target_has_no_snapshots(inv.master_target("mt-win").unwrap()).unwrap_err().rule,
            "R-C2"
        );
        assert_eq!(crate::rules::r_p3_master_target_discovered(&inv, Some(&host)).unwrap_err().rule, "R-P3");
    }

    fn record(state: crate::lifecycle::State, onprem_disks: Vec<String>) -> ItemRecord {
        ItemRecord {
            item: ReplicatedItem {
                id: "web01".into(),
                name: "web01".into(),
                machine: MachineType::VmwareVm,
                os: Os { family: OsFamily::Windows, name: "Windows Server 2019".into() },
                state,
                health: Health::Normal,
                health_errors: vec![],
                initial_sync_percent: 0,
                onprem: Some(OnPremVm { id: "vm-web01".into(), host: "esxi-01".into(), exists: true, disks: vec![] }),
                original_vcenter: Some("vc".into()),
                original_configuration_server: "cs".into(),
                cloud_vm: None,
                recovery_points: vec![],
                replication_group: None,
                master_target: None,
                process_server: None,
                booted_at: None,
                agent_registered: true,
                disk_bytes: 16 << 20,
                last_failure: None,
                drill: None,
                split_brain: None,
                kept_copies: Vec::new(),
                verification: None,
                protection: Default::default(),
            },
            cloud_disks: vec!["recovery/web01/disk0.vhd".into()],
            onprem_disks,
            replica_disks: vec![],
            cloud_power: true,
            onprem_power: false,
            onprem_power_set_at: 0,
            vmware_tools: "disabled".into(),
            failed_back_point: None,
            last_cycle_at: 0,
            last_app_cycle_at: 0,
            cloud_storage: None,
        }
    }

    #[test]
    fn an_items_vm_in_vcenter_stands_in_for_it_until_the_reprotect_binds_it() {
        use crate::lifecycle::State;
        let dir = tempfile::tempdir().unwrap();
        let mut v = view("connected", 0);
        v.datastores[0].url = format!("ds://{}/", dir.path().display());
        v.vms.push(VmView {
            name: "web01".into(),
            power: "on".into(),
            host: Some("esx-b".into()),
            tools: "guestToolsRunning".into(),
            disks: vec!["[ds-vmfs] web01/web01.vmdk".into()],
            disk_bytes: vec![16 << 20],
            snapshots: 0,
        });
        let local = vec!["primary/vmfs-01/web01/disk0.vmdk".to_owned()];
        let mut items = vec![
            record(State::CommittedInCloud, local.clone()),
            record(State::ProtectedToPrimary, local.clone()),
            record(State::CommittedInCloud, vec!["/srv/ds/web01/web01.vmdk".into()]),
        ];
        overlay_items(&mut items, "vc", &v);
        let vm = items[0].item.onprem.clone().unwrap();
        assert_eq!((vm.id.as_str(), vm.host.as_str()), ("web01", "esx-b"));
        assert_eq!((vm.disks[0].datastore.as_str(), vm.disks[0].size_bytes), ("ds-vmfs", 16 << 20));
        assert_eq!(items[0].onprem_disks, [dir.path().join("web01/web01.vmdk").display().to_string()]);
        assert_eq!(items[1].onprem_disks, local, "an item replicating to the estate's disks keeps them");
        assert_eq!(items[2].onprem_disks, ["/srv/ds/web01/web01.vmdk"], "one bound already is left alone");

        // Another vCenter's item is not touched; a datastore this node cannot reach leaves no disk to write.
        let mut other = vec![record(State::CommittedInCloud, local.clone())];
        overlay_items(&mut other, "another-vc", &v);
        assert_eq!(other[0].onprem_disks, local);
        v.datastores[0].url = "ds:///vmfs/volumes/5f0c/".into();
        let mut far = vec![record(State::CommittedInCloud, local)];
        overlay_items(&mut far, "vc", &v);
        assert_eq!(far[0].item.onprem.as_ref().unwrap().host, "esx-b");
        assert!(far[0].onprem_disks.is_empty(), "the reprotect's first step then says why");
    }

    #[test]
    fn datastore_types_in_words() {
        assert_eq!(datastore_kind("VMFS"), DatastoreKind::Vmfs);
        assert_eq!(datastore_kind("vsan"), DatastoreKind::Vsan);
        assert_eq!(datastore_kind("NFS41"), DatastoreKind::Nfs);
        assert_eq!(datastore_kind("OTHER"), DatastoreKind::Other);
        let dir = tempfile::tempdir().unwrap();
        let url = format!("ds://{}", dir.path().display());
        assert_eq!(datastore_folder(&url).as_deref(), Some(dir.path()));
        assert_eq!(datastore_folder("ds:///vmfs/volumes/5f0c-…/"), None);
    }

    #[test]
    fn a_bound_vm_reported_powered_on_after_homeward_last_powered_it_runs_outside_homeward() {
        use crate::lifecycle::State;
        let mut v = view("connected", 0);
        let vm = |power: &str, host: &str| VmView {
            name: "vm-web01".into(),
            power: power.into(),
            host: Some(host.into()),
            tools: String::new(),
            disks: vec![],
            disk_bytes: vec![],
            snapshots: 0,
        };
        v.vms.push(vm("on", "esxi-01"));
        let bound = vec!["/srv/ds/web01/web01.vmdk".to_owned()];
        let item = |state: State, disks: Vec<String>, set_at: Millis| ItemRecord {
            onprem_power_set_at: set_at,
            ..record(state, disks)
        };
        let mut items = vec![
            item(State::ProtectedToPrimary, bound.clone(), 100),
            item(State::ProtectedToPrimary, bound.clone(), 300),
            item(State::FailedBackCommitPending, bound.clone(), 100),
            item(State::ProtectedToPrimary, vec!["primary/vmfs-01/web01/disk0.vmdk".into()], 100),
        ];
        overlay_power(&mut items, &v, 200);
        let on: Vec<bool> = items.iter().map(|r| r.onprem_power).collect();
        assert_eq!(on, [true, false, false, false], "a report older than Homeward's last power change says nothing");
        let mine = v.vms.len() - 1;
        v.vms[mine] = vm("off", "esxi-01");
        let mut items = vec![item(State::ProtectedToPrimary, bound.clone(), 100)];
        overlay_power(&mut items, &v, 200);
        assert!(!items[0].onprem_power);
        v.vms[mine] = vm("on", "esx-other");
        overlay_power(&mut items, &v, 200);
        assert!(!items[0].onprem_power, "a VM of that name on another host is another VM");
    }
}
