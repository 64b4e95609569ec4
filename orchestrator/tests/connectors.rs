//! The site connectors against the real APIs' emulators: govmomi's vCenter simulator (vim25 SOAP) and Azurite
//! (Azure Storage page blobs), each started per test on a free loopback port.

#[path = "../../tests/support/emulators.rs"]
mod emulators;

use std::path::Path;
use std::process::Command;

use base64::Engine as _;
use emulators::{Azurite, Vcsim, AZURITE_ACCOUNT, AZURITE_KEY};
use orchestrator::connectors::azure_blob::{Container, Credential, StorageConfig};
use orchestrator::connectors::vsphere::{PowerState, Vcenter, VcenterConfig};
use orchestrator::connectors::{ConnectorError, Thumbprint};

fn vcenter_config(sim: &Vcsim) -> VcenterConfig {
    VcenterConfig {
        url: sim.url.clone(),
        user: sim.user.clone(),
        password: sim.password.clone(),
        thumbprint: Some(Thumbprint::parse(&sim.thumbprint).unwrap()),
    }
}

/// The site connections of a throw-away vault (SQLite) in `dir`.
async fn connections_in(dir: &Path) -> orchestrator::connections::Connections {
    use orchestrator::connections::{Connections, Sealer};
    let db =
        orchestrator::db::Db::connect(&format!("sqlite://{}?mode=rwc", dir.join("v.db").display()), 2).await.unwrap();
    db.migrate().await.unwrap();
    Connections::new(db, Sealer::load_or_create(dir).unwrap())
}

/// A port nothing listens on.
fn closed_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

#[tokio::test]
async fn a_vcenter_session_reads_the_inventory_and_runs_power_tasks() {
    let sim = Vcsim::start();
    let vc = Vcenter::connect(vcenter_config(&sim)).await.unwrap();
    assert!(vc.about().full_name.contains("vCenter Server"), "{:?}", vc.about());

    let inv = vc.inventory().await.unwrap();
    assert_eq!(inv.datacenters, vec!["DC0"]);
    assert_eq!(inv.clusters, vec!["DC0_C0"]);
    assert_eq!(inv.hosts.len(), 2, "{:?}", inv.hosts);
    for host in &inv.hosts {
        assert_eq!(host.cluster.as_deref(), Some("DC0_C0"));
        assert_eq!(host.connection_state, "connected");
        assert!(!host.datastores.is_empty());
    }
    assert_eq!(inv.datastores.len(), 2);
    for ds in &inv.datastores {
        let folder = &sim.datastores.iter().find(|(n, _)| *n == ds.name).expect("a datastore the simulator made").1;
        assert!(ds.accessible && ds.capacity_bytes > 0 && ds.free_bytes <= ds.capacity_bytes, "{ds:?}");
        assert!(ds.url.contains(folder.to_str().unwrap()), "{} should name {}", ds.url, folder.display());
    }
    assert!(inv.vms.len() >= 2, "{:?}", inv.vms);
    let vm = inv.vms.iter().find(|v| v.power == PowerState::On).expect("a running VM").clone();
    assert!(vm.host.as_ref().is_some_and(|h| inv.hosts.iter().any(|x| &x.name == h)), "{vm:?}");
    let disk = vm.disks.first().expect("a disk");
    assert!(disk.file.starts_with(&format!("[{}] ", disk.datastore)) && disk.file.ends_with(".vmdk"), "{disk:?}");
    assert!(disk.capacity_bytes > 0 && !disk.rdm);

    vc.power_off(&vm.id).await.unwrap();
    let after = vc.inventory().await.unwrap();
    assert_eq!(after.vms.iter().find(|v| v.id == vm.id).unwrap().power, PowerState::Off);
    // A task's error is the step's error: vCenter's fault and message, named.
    match vc.power_off(&vm.id).await {
        Err(ConnectorError::Refused { operation, fault, message, .. }) => {
            assert_eq!(operation, "PowerOffVM_Task");
            assert_eq!(fault, "InvalidPowerState");
            assert!(!message.is_empty());
        }
        other => panic!("powering off a VM that is off should fail its task: {other:?}"),
    }
    vc.power_on(&vm.id).await.unwrap();
    let again = vc.inventory().await.unwrap();
    assert_eq!(again.vms.iter().find(|v| v.id == vm.id).unwrap().power, PowerState::On);
    vc.logout().await.unwrap();
}

#[tokio::test]
async fn vcenter_connection_mistakes_are_named_without_the_password() {
    let sim = Vcsim::start();

    let mut wrong = vcenter_config(&sim);
    wrong.password = "not-the-password".into();
    let e = Vcenter::connect(wrong).await.unwrap_err();
    assert!(matches!(e, ConnectorError::Credentials { .. }), "{e:?}");
    assert!(e.is_configuration());
    assert!(e.to_string().contains("administrator@vsphere.local") && !e.to_string().contains("not-the-password"));

    let mut unpinned = vcenter_config(&sim);
    unpinned.thumbprint = None;
    match Vcenter::connect(unpinned).await.unwrap_err() {
        ConnectorError::Thumbprint { seen, expected, .. } => {
            assert_eq!(seen, sim.thumbprint);
            assert!(expected.contains("no thumbprint"));
        }
        other => panic!("{other:?}"),
    }

    let mut impostor = vcenter_config(&sim);
    impostor.thumbprint = Some(Thumbprint::parse(&format!("{}AB", "AB:".repeat(19))).unwrap());
    let e = Vcenter::connect(impostor).await.unwrap_err();
    assert!(matches!(&e, ConnectorError::Thumbprint { seen, .. } if *seen == sim.thumbprint), "{e:?}");
    assert!(e.to_string().contains("not the AB:AB"), "{e}");

    let mut gone = vcenter_config(&sim);
    gone.url = format!("https://127.0.0.1:{}/sdk", closed_port());
    let e = Vcenter::connect(gone).await.unwrap_err();
    assert!(matches!(e, ConnectorError::Unreachable { .. }), "{e:?}");

    let mut clear = vcenter_config(&sim);
    clear.url = sim.url.replace("https://", "http://");
    assert!(matches!(Vcenter::connect(clear).await.unwrap_err(), ConnectorError::NotHttps { .. }));

    // The configuration's Debug never shows the password either (it ends up in logs).
    assert!(!format!("{:?}", vcenter_config(&sim)).contains(&sim.password));
}

fn storage(az: &Azurite, container: &str, credential: Credential) -> Container {
    Container::new(StorageConfig {
        url: az.url.clone(),
        container: container.into(),
        credential,
        thumbprint: Some(Thumbprint::parse(&az.thumbprint).unwrap()),
    })
    .unwrap()
}

/// An account SAS for the blob service signed with the account key, as the portal or `az` would make one.
fn account_sas(permissions: &str, expiry: time::OffsetDateTime) -> String {
    let se = expiry.format(&time::format_description::well_known::Rfc3339).unwrap();
    let se = se.split('.').next().unwrap().trim_end_matches('Z').to_owned() + "Z";
    let version = "2021-12-02";
    let to_sign = format!("{AZURITE_ACCOUNT}\n{permissions}\nb\nsco\n\n{se}\n\nhttps\n{version}\n\n");
    let key = base64::engine::general_purpose::STANDARD.decode(AZURITE_KEY).unwrap();
    let tag = ring::hmac::sign(&ring::hmac::Key::new(ring::hmac::HMAC_SHA256, &key), to_sign.as_bytes());
    let sig = base64::engine::general_purpose::STANDARD.encode(tag.as_ref());
    let enc =
        |s: &str| s.replace('%', "%25").replace(':', "%3A").replace('+', "%2B").replace('/', "%2F").replace('=', "%3D");
    format!("sv={version}&ss=b&srt=sco&sp={permissions}&se={}&spr=https&sig={}", enc(&se), enc(&sig))
}

/// Creates a container with the account key (the connectors use one; making it is the administrator's job).
async fn create_container(az: &Azurite, name: &str) {
    let c = storage(az, name, Credential::SharedKey(AZURITE_KEY.into()));
    c.create_container().await.unwrap();
}

fn qemu_img(args: &[&str]) -> std::process::Output {
    Command::new("qemu-img").args(args).output().expect("qemu-img (qemu-utils, installed by ./x setup)")
}

fn write_at(path: &Path, offset: u64, data: &[u8]) {
    use std::os::unix::fs::FileExt;
    std::fs::OpenOptions::new().write(true).open(path).unwrap().write_all_at(data, offset).unwrap();
}

#[tokio::test]
async fn a_fixed_vhd_travels_through_a_page_blob_and_back_sending_only_written_pages() {
    let az = Azurite::start();
    create_container(&az, "disks").await;
    let disks = storage(&az, "disks", Credential::SharedKey(AZURITE_KEY.into()));
    disks.probe().await.unwrap();

    // A 64 MiB fixed VHD (Azure's managed-disk format) with data in three places.
    let dir = tempfile::tempdir().unwrap();
    let vhd = dir.path().join("os.vhd");
    let out =
        qemu_img(&["create", "-q", "-f", "vpc", "-o", "subformat=fixed,force_size=on", vhd.to_str().unwrap(), "64M"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let size = std::fs::metadata(&vhd).unwrap().len();
    assert_eq!(size, (64 << 20) + 512, "data then a 512-byte footer");
    write_at(&vhd, 0, &[0xA5; 1 << 20]);
    write_at(&vhd, 20 << 20, b"the boot sector of a VM that failed over to Azure");
    write_at(&vhd, (63 << 20) + 4096, &[7; 8192]);

    let sent = disks.upload_file("vm01-os.vhd", &vhd).await.unwrap();
    assert!(sent < 2 << 20, "only written pages and the footer cross the wire: {sent} bytes");
    let props = disks.properties("vm01-os.vhd").await.unwrap();
    assert_eq!(props.size, size);
    assert!(!props.leased);
    assert_eq!(disks.list().await.unwrap(), vec!["vm01-os.vhd"]);
    let ranges = disks.page_ranges("vm01-os.vhd").await.unwrap();
    let written: u64 = ranges.iter().map(|(_, l)| l).sum();
    assert_eq!(written, sent, "{ranges:?}");
    assert_eq!(ranges.last().unwrap().0 + ranges.last().unwrap().1, size, "the footer is the last page");

    let back = dir.path().join("back.vhd");
    let read = disks.download_file("vm01-os.vhd", &back).await.unwrap();
    assert_eq!(read, written, "a full copy reads only the written ranges");
    let cmp = qemu_img(&["compare", "-f", "vpc", "-F", "vpc", vhd.to_str().unwrap(), back.to_str().unwrap()]);
    assert!(cmp.status.success(), "{}{}", String::from_utf8_lossy(&cmp.stdout), String::from_utf8_lossy(&cmp.stderr));

    // A delta written in place, and a block returned to zeros, read back the same.
    disks.put_pages("vm01-os.vhd", 20 << 20, vec![0x5A; 4096]).await.unwrap();
    write_at(&vhd, 20 << 20, &[0x5A; 4096]);
    disks.clear_pages("vm01-os.vhd", 0, 1 << 20).await.unwrap();
    write_at(&vhd, 0, &vec![0; 1 << 20]);
    assert_eq!(disks.read("vm01-os.vhd", 20 << 20, 4).await.unwrap(), vec![0x5A; 4]);
    disks.download_file("vm01-os.vhd", &back).await.unwrap();
    let cmp = qemu_img(&["compare", "-f", "vpc", "-F", "vpc", vhd.to_str().unwrap(), back.to_str().unwrap()]);
    assert!(cmp.status.success(), "{}", String::from_utf8_lossy(&cmp.stdout));

    // Commit deletes the cloud disk; then it is gone, with a message that says so.
    disks.delete("vm01-os.vhd").await.unwrap();
    let e = disks.properties("vm01-os.vhd").await.unwrap_err();
    assert!(matches!(e, ConnectorError::NotFound { .. }), "{e:?}");
    assert!(disks.list().await.unwrap().is_empty());
}

#[tokio::test]
async fn storage_account_mistakes_and_held_leases_are_named_without_the_secret() {
    let az = Azurite::start();
    create_container(&az, "disks").await;

    // A valid SAS works; an expired one says so, with its expiry, and never echoes the signature.
    let later = time::OffsetDateTime::now_utc() + time::Duration::hours(1);
    storage(&az, "disks", Credential::Sas(account_sas("rwdlc", later))).probe().await.unwrap();
    let past = time::OffsetDateTime::now_utc() - time::Duration::hours(1);
    let expired_sas = account_sas("rwdlc", past);
    let e = storage(&az, "disks", Credential::Sas(expired_sas.clone())).probe().await.unwrap_err();
    assert!(matches!(e, ConnectorError::SasExpired { .. }), "{e:?}");
    assert!(e.is_configuration());
    let sig = expired_sas.split("sig=").nth(1).unwrap();
    assert!(!e.to_string().contains(sig) && !format!("{e:?}").contains(sig));

    // A read-only SAS cannot create a disk: the missing permission is named.
    let read_only = storage(&az, "disks", Credential::Sas(account_sas("rl", later)));
    read_only.probe().await.unwrap();
    let e = read_only.create_page_blob("x.vhd", 1 << 20).await.unwrap_err();
    assert!(matches!(e, ConnectorError::SasPermission { .. }), "{e:?}");

    // A wrong account key.
    let wrong_key = base64::engine::general_purpose::STANDARD.encode([7u8; 64]);
    let e = storage(&az, "disks", Credential::SharedKey(wrong_key.clone())).probe().await.unwrap_err();
    assert!(matches!(e, ConnectorError::Credentials { .. }), "{e:?}");
    assert!(!e.to_string().contains(&wrong_key));

    // A container that does not exist.
    let e = storage(&az, "nothere", Credential::SharedKey(AZURITE_KEY.into())).probe().await.unwrap_err();
    assert!(matches!(e, ConnectorError::NotFound { .. }) && e.to_string().contains("create it"), "{e:?}");

    // The wrong certificate, and nobody listening.
    let e = Container::new(StorageConfig {
        url: az.url.clone(),
        container: "disks".into(),
        credential: Credential::SharedKey(AZURITE_KEY.into()),
        thumbprint: Some(Thumbprint::parse(&"CD".repeat(20)).unwrap()),
    })
    .unwrap()
    .probe()
    .await
    .unwrap_err();
    assert!(matches!(&e, ConnectorError::Thumbprint { seen, .. } if *seen == az.thumbprint), "{e:?}");
    let e = Container::new(StorageConfig {
        url: format!("https://127.0.0.1:{}/{AZURITE_ACCOUNT}", closed_port()),
        container: "disks".into(),
        credential: Credential::SharedKey(AZURITE_KEY.into()),
        thumbprint: Some(Thumbprint::parse(&az.thumbprint).unwrap()),
    })
    .unwrap()
    .probe()
    .await
    .unwrap_err();
    assert!(matches!(e, ConnectorError::Unreachable { .. }), "{e:?}");

    // A disk leased by someone else (a running VM) can be neither written nor deleted.
    let disks = storage(&az, "disks", Credential::SharedKey(AZURITE_KEY.into()));
    disks.create_page_blob("vm01-os.vhd", 1 << 20).await.unwrap();
    disks.acquire_lease("vm01-os.vhd", -1).await.unwrap();
    assert!(disks.properties("vm01-os.vhd").await.unwrap().leased);
    let e = disks.delete("vm01-os.vhd").await.unwrap_err();
    assert!(matches!(e, ConnectorError::LeaseHeld { verb: "deleted", .. }), "{e:?}");
    let e = disks.put_pages("vm01-os.vhd", 0, vec![1; 512]).await.unwrap_err();
    assert!(matches!(e, ConnectorError::LeaseHeld { verb: "changed", .. }), "{e:?}");
}

/// A connection is checked again in the background once its last check is old enough, by one node: a vCenter that
/// went away then shows its cause while the last good inventory stays.
#[tokio::test]
async fn connections_are_checked_again_when_due_and_a_lost_vcenter_shows_why() {
    use orchestrator::connections::{NewConnection, CHECK_EVERY_MS};
    let dir = tempfile::tempdir().unwrap();
    let connections = connections_in(dir.path()).await;
    let sim = Vcsim::start();
    let t0 = 1_800_000_000_000;
    let new = NewConnection::Vcenter {
        name: "vc-prod".into(),
        url: sim.url.clone(),
        user: sim.user.clone(),
        password: sim.password.clone(),
        thumbprint: Some(sim.thumbprint.clone()),
    };
    let added = connections.add(new, "admin", t0).await.unwrap();
    assert!(added.last_error.is_none() && added.inventory.is_some());
    assert_eq!(connections.check_due(t0 + CHECK_EVERY_MS - 1).await.unwrap(), 0, "not due yet");
    drop(sim);
    let due = t0 + CHECK_EVERY_MS;
    assert_eq!(connections.check_due(due).await.unwrap(), 1);
    assert_eq!(connections.check_due(due).await.unwrap(), 0, "checked once per period");
    let after = connections.get("vc-prod").await.unwrap();
    assert_eq!(after.checked_at, due);
    assert_eq!(after.last_ok_at, Some(t0));
    assert!(after.last_error.unwrap().contains("cannot be reached"));
    assert!(after.inventory.is_some(), "the last good inventory stays");
}

/// The alternate-location failback through both real APIs: the cloud VM's disk is a page blob (a fixed VHD); a new
/// VM is created in vCenter on a host and datastore; the disk's bytes go into a VMDK in that VM's folder on the
/// datastore (only written pages are read); the VMDK is attached and the VM powers on; the VMDK holds exactly the
/// cloud disk's data. Then the disk is detached (its file stays) and the VM destroyed.
#[tokio::test]
async fn a_cloud_disk_becomes_a_vm_at_an_alternate_location_in_the_simulator() {
    use orchestrator::connectors::vsphere::NewVm;
    let az = Azurite::start();
    create_container(&az, "disks").await;
    let disks = storage(&az, "disks", Credential::SharedKey(AZURITE_KEY.into()));
    let dir = tempfile::tempdir().unwrap();
    let vhd = dir.path().join("cloud.vhd");
    let out =
        qemu_img(&["create", "-q", "-f", "vpc", "-o", "subformat=fixed,force_size=on", vhd.to_str().unwrap(), "32M"]);
    assert!(out.status.success());
    write_at(&vhd, 0, &[0x33; 65536]);
    write_at(&vhd, 17 << 20, b"cloud VM data written after the failover to Azure");
    disks.upload_file("vm01-os.vhd", &vhd).await.unwrap();

    let sim = Vcsim::start();
    let vc = Vcenter::connect(vcenter_config(&sim)).await.unwrap();
    let inv = vc.inventory().await.unwrap();
    let host = inv.hosts[1].name.clone();
    let datastore = inv.datastores.iter().find(|d| inv.hosts[1].datastores.contains(&d.name)).unwrap().clone();
    // Its one adapter on a network of the inventory (a test failover's isolated network).
    let network = inv.networks.iter().find(|n| n.as_str() == "VM Network").expect("the simulator's VM Network").clone();
    let vm = vc
        .create_vm(&NewVm {
            name: "vm01-failback",
            host: &host,
            datastore: &datastore.name,
            guest_id: "otherGuest64",
            cpus: 2,
            memory_mb: 2048,
            network: Some(&network),
        })
        .await
        .unwrap();

    // The master target writes the disk into the new VM's folder on the datastore.
    let folder = sim.datastores.iter().find(|(n, _)| *n == datastore.name).unwrap().1.join("vm01-failback");
    assert!(folder.is_dir(), "CreateVM_Task made the VM's folder on {}", datastore.name);
    let vmdk = folder.join("vm01-failback-disk0.vmdk");
    let image = replicator::DiskImage::create(&vmdk, replicator::Format::Vmdk, 32 << 20).unwrap();
    let read = disks.copy_into("vm01-os.vhd", &image.data_path, image.size).await.unwrap();
    assert!(read < 1 << 20, "only written pages were read: {read}");
    let cmp = qemu_img(&["compare", "-f", "vpc", "-F", "vmdk", vhd.to_str().unwrap(), vmdk.to_str().unwrap()]);
    assert!(cmp.status.success(), "{}", String::from_utf8_lossy(&cmp.stdout));

    let file = format!("[{}] vm01-failback/vm01-failback-disk0.vmdk", datastore.name);
    vc.attach_disk(&vm, &file).await.unwrap();
    vc.power_on(&vm).await.unwrap();
    let inv = vc.inventory().await.unwrap();
    let created = inv.vms.iter().find(|v| v.id == vm).expect("the new VM in the inventory");
    assert_eq!(
        (created.name.as_str(), created.power, created.host.as_deref()),
        ("vm01-failback", PowerState::On, Some(host.as_str()))
    );
    assert_eq!(created.disks.len(), 1, "{created:?}");
    assert_eq!(created.disks[0].file, file);
    assert_eq!(created.networks, vec![network.clone()], "its adapter is on the network asked for");

    // A disk that is not on the datastore is refused with vCenter's fault.
    match vc.attach_disk(&vm, &format!("[{}] nowhere/missing.vmdk", datastore.name)).await {
        Err(ConnectorError::Refused { fault, .. }) => assert_eq!(fault, "FileNotFound"),
        other => panic!("{other:?}"),
    }

    vc.power_off(&vm).await.unwrap();
    vc.detach_disk(&vm, created.disks[0].key).await.unwrap();
    assert!(vmdk.exists() && image.data_path.exists(), "detaching keeps the replica");
    let inv = vc.inventory().await.unwrap();
    assert!(inv.vms.iter().find(|v| v.id == vm).unwrap().disks.is_empty());
    vc.destroy_vm(&vm).await.unwrap();
    assert!(vc.inventory().await.unwrap().vms.iter().all(|v| v.id != vm));
    let e = vc
        .create_vm(&NewVm {
            name: "x",
            host: "no-such-host",
            datastore: &datastore.name,
            guest_id: "otherGuest64",
            cpus: 1,
            memory_mb: 512,
            network: None,
        })
        .await
        .unwrap_err();
    assert!(matches!(e, ConnectorError::NotFound { .. }), "{e:?}");
}

/// The process server's cache of a cloud disk that is a page blob: a push sends only the blocks that changed since
/// the last one (and clears blocks that became zeros), a pull reads only written pages from a snapshot and nothing
/// while the blob is unchanged, a blob written by someone else is sent whole again, and a held lease stops a push
/// with its cause. The item's binding comes from the account's listing.
#[tokio::test]
async fn the_cache_of_a_page_blob_moves_only_what_changed() {
    use orchestrator::connections::NewConnection;
    use orchestrator::recovery_site::{self, RecoverySite};
    let az = Azurite::start();
    create_container(&az, "disks").await;
    let blobs = storage(&az, "disks", Credential::SharedKey(AZURITE_KEY.into()));
    let dir = tempfile::tempdir().unwrap();
    let connections = connections_in(dir.path()).await;
    let new = NewConnection::StorageAccount {
        name: "azure-disks".into(),
        url: az.url.clone(),
        container: "disks".into(),
        account_key: Some(AZURITE_KEY.into()),
        sas: None,
        thumbprint: Some(az.thumbprint.clone()),
    };
    connections.add(new, "admin", 1).await.unwrap();
    let disk = "recovery/vm01/disk0.vhd".to_owned();
    assert_eq!(recovery_site::find(&connections, std::slice::from_ref(&disk)).await.unwrap(), None, "no blob yet");

    let cache = dir.path().join(&disk);
    std::fs::create_dir_all(cache.parent().unwrap()).unwrap();
    let img = replicator::DiskImage::create(&cache, replicator::Format::Vhd, 8 << 20).unwrap();
    write_at(&img.data_path, 0, &[0x11; 65536]);
    write_at(&img.data_path, 3 << 20, b"written in the cloud");
    let site = RecoverySite::open(&connections, "azure-disks").await.unwrap();
    let read_back = dir.path().join("read-back.vhd");
    let same = |what: &str| {
        let out = qemu_img(&[
            "compare",
            "-q",
            "-f",
            "vpc",
            "-F",
            "vpc",
            cache.to_str().unwrap(),
            read_back.to_str().unwrap(),
        ]);
        assert!(out.status.success(), "{what}");
    };

    // A new blob: the two written blocks and the VHD footer's page.
    assert_eq!(site.push(&disk, &cache).await.unwrap(), 2 * 65536 + 512);
    blobs.download_file("vm01-disk0.vhd", &read_back).await.unwrap();
    same("the new blob holds the disk");
    assert_eq!(site.push(&disk, &cache).await.unwrap(), 0, "nothing changed, nothing sent");
    write_at(&img.data_path, 5 << 20, b"one more block");
    write_at(&img.data_path, 0, &[0; 65536]);
    assert_eq!(site.push(&disk, &cache).await.unwrap(), 65536, "one block written, one cleared");
    blobs.download_file("vm01-disk0.vhd", &read_back).await.unwrap();
    same("the blob after a delta push");
    let ranges = blobs.page_ranges("vm01-disk0.vhd").await.unwrap();
    assert!(ranges.iter().all(|&(start, _)| start >= 65536), "block 0 is cleared, not written with zeros: {ranges:?}");

    // The cloud VM writes: the next pull reads the written pages from a snapshot; an unchanged blob is not read.
    blobs.put_pages("vm01-disk0.vhd", 7 << 20, vec![0x77; 4096]).await.unwrap();
    let read = site.pull(&disk, &cache).await.unwrap();
    assert!(read > 0 && read < 1 << 20, "only written pages: {read}");
    blobs.download_file("vm01-disk0.vhd", &read_back).await.unwrap();
    same("the cache holds what the cloud VM wrote");
    assert_eq!(site.pull(&disk, &cache).await.unwrap(), 0, "the blob's ETag has not changed");
    assert!(blobs.list().await.unwrap() == ["vm01-disk0.vhd"], "the pull's snapshot is gone");
    // After a pull nothing says which blocks the blob has as hashes: the next push sends every written block.
    assert_eq!(site.push(&disk, &cache).await.unwrap(), 3 * 65536 + 512);

    // The listing binds the disk to the account once the account is checked again.
    connections.refresh("azure-disks", 2).await.unwrap();
    assert_eq!(
        recovery_site::find(&connections, std::slice::from_ref(&disk)).await.unwrap().as_deref(),
        Some("azure-disks")
    );

    // A lease held by someone else stops the push with the cause and what to do.
    blobs.acquire_lease("vm01-disk0.vhd", -1).await.unwrap();
    write_at(&img.data_path, 6 << 20, b"blocked");
    let e = site.push(&disk, &cache).await.unwrap_err();
    assert!(e.error.contains("active lease") && e.error.contains("vm01-disk0.vhd"), "{e:?}");
    assert!(e.recommended_action.contains("azure-disks"), "{e:?}");
}

/// A SAS for one blob, signed with the account key, lets a site agent write that blob and nothing else in the
/// container; a SAS for one snapshot lets it read that snapshot (its page ranges and bytes) and not the blob.
#[tokio::test]
async fn a_blob_sas_reaches_its_blob_and_no_other() {
    let az = Azurite::start();
    create_container(&az, "disks").await;
    let owner = storage(&az, "disks", Credential::SharedKey(AZURITE_KEY.into()));
    owner.create_page_blob("other.vhd", 1 << 20).await.unwrap();
    let until = time::OffsetDateTime::now_utc() + time::Duration::hours(1);
    let sas = owner.blob_sas("vm01-disk0.vhd", None, "rcwd", until);
    assert!(sas.contains("sr=b&") && sas.contains("sp=rcwd") && !sas.contains(AZURITE_KEY), "{sas}");
    let agent = Container::new(owner.config_with_sas(sas)).unwrap();
    agent.create_page_blob("vm01-disk0.vhd", 1 << 20).await.unwrap();
    agent.put_pages("vm01-disk0.vhd", 4096, vec![7; 512]).await.unwrap();
    assert_eq!(agent.properties("vm01-disk0.vhd").await.unwrap().size, 1 << 20);
    let e = agent.put_pages("other.vhd", 0, vec![1; 512]).await.unwrap_err();
    assert!(matches!(e, ConnectorError::SasPermission { .. } | ConnectorError::Credentials { .. }), "{e:?}");

    let snap = owner.snapshot("vm01-disk0.vhd").await.unwrap();
    owner.put_pages("vm01-disk0.vhd", 8192, vec![9; 512]).await.unwrap();
    let reader =
        Container::new(owner.config_with_sas(owner.blob_sas("vm01-disk0.vhd", Some(&snap), "r", until))).unwrap();
    assert_eq!(reader.page_ranges_at("vm01-disk0.vhd", Some(&snap)).await.unwrap(), [(4096, 512)]);
    assert_eq!(reader.read_at("vm01-disk0.vhd", Some(&snap), 4096, 512).await.unwrap(), vec![7; 512]);
    assert!(reader.read("vm01-disk0.vhd", 8192, 512).await.is_err(), "the snapshot's SAS does not read the blob");
    owner.delete_snapshot("vm01-disk0.vhd", &snap).await.unwrap();
    let expired = Container::new(owner.config_with_sas(owner.blob_sas(
        "vm01-disk0.vhd",
        None,
        "r",
        time::OffsetDateTime::now_utc() - time::Duration::hours(1),
    )))
    .unwrap();
    assert!(matches!(expired.properties("vm01-disk0.vhd").await.unwrap_err(), ConnectorError::SasExpired { .. }));
}
