//! The primary site's vCenter through the vim25 SOAP API: a session (Login, its cookie, a new Login when vCenter
//! forgets it), the inventory in one property-collector pass over a container view, power operations as tasks, and
//! a task's error surfaced as the cause of the step that waited for it.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use roxmltree::{Document, Node};
use serde::Serialize;

use super::tls::{pinned, Seen};
use super::xml::{child, children, escape, find, text, xsi_type};
use super::{http_client, transport_cause, ConnectorError, Thumbprint};

const SERVICE: &str = "vCenter";
/// The vim25 types of SCSI controllers a disk can hang off.
const SCSI_CONTROLLERS: [&str; 4] = [
    "ParaVirtualSCSIController",
    "VirtualLsiLogicSASController",
    "VirtualLsiLogicController",
    "VirtualBusLogicController",
];
/// Objects per property-collector page: large inventories arrive in pages instead of one huge answer.
const PAGE: u32 = 500;

/// How to reach a vCenter. The password is only ever sent inside the Login request.
#[derive(Clone)]
pub struct VcenterConfig {
    /// `https://vcenter.example` or its SDK endpoint `https://vcenter.example/sdk`.
    pub url: String,
    pub user: String,
    pub password: String,
    /// The certificate's thumbprint; without one the connection is refused with the thumbprint to confirm.
    pub thumbprint: Option<Thumbprint>,
}

impl std::fmt::Debug for VcenterConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VcenterConfig")
            .field("url", &self.url)
            .field("user", &self.user)
            .field("password", &"<hidden>")
            .field("thumbprint", &self.thumbprint)
            .finish()
    }
}

/// A managed object reference: its type and its id (`vm-38`, `datastore-61`).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize)]
pub struct MoRef {
    pub kind: String,
    pub id: String,
}

impl MoRef {
    fn new(kind: &str, id: &str) -> MoRef {
        MoRef { kind: kind.to_owned(), id: id.to_owned() }
    }

    fn xml(&self, element: &str) -> String {
        format!("<{element} type=\"{}\">{}</{element}>", escape(&self.kind), escape(&self.id))
    }

    fn from_node(node: Node) -> Option<MoRef> {
        Some(MoRef::new(node.attribute("type")?, node.text()?))
    }
}

/// What the vCenter says it is.
#[derive(Debug, Clone, Serialize)]
pub struct About {
    pub full_name: String,
    pub api_version: String,
    pub instance_uuid: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct Inventory {
    pub datacenters: Vec<String>,
    pub clusters: Vec<String>,
    pub hosts: Vec<Host>,
    pub datastores: Vec<Datastore>,
    pub networks: Vec<String>,
    pub vms: Vec<Vm>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Host {
    pub id: String,
    pub name: String,
    /// The cluster it belongs to, if any.
    pub cluster: Option<String>,
    /// `connected`, `disconnected` or `notResponding`, as vCenter reports it.
    pub connection_state: String,
    pub maintenance: bool,
    /// Names of the datastores it mounts.
    pub datastores: Vec<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Datastore {
    pub id: String,
    pub name: String,
    /// `VMFS`, `NFS`, `vsan`, `VVOL` …, as vCenter reports it.
    pub kind: String,
    pub capacity_bytes: u64,
    pub free_bytes: u64,
    pub accessible: bool,
    /// The datastore's URL (`ds:///vmfs/volumes/…`, or the folder backing it on the simulator).
    pub url: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum PowerState {
    On,
    Off,
    Suspended,
}

#[derive(Debug, Clone, Serialize)]
pub struct Vm {
    pub id: String,
    pub name: String,
    pub power: PowerState,
    /// The ESXi host it runs on.
    pub host: Option<String>,
    /// VMware Tools as vCenter reports it (`guestToolsRunning`, `guestToolsNotRunning`, …).
    pub tools: String,
    pub disks: Vec<Disk>,
    /// Names of the VM's snapshots, the whole tree flattened.
    pub snapshots: Vec<String>,
    /// Device keys of its SCSI controllers, where disks attach.
    pub scsi_controllers: Vec<i64>,
    /// Names of the networks its network adapters are on.
    pub networks: Vec<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Disk {
    /// The device key inside the VM.
    pub key: i64,
    /// The backing file as vSphere writes it: `[datastore] folder/name.vmdk`.
    pub file: String,
    pub datastore: String,
    pub capacity_bytes: u64,
    /// A raw device mapping rather than a VMDK on a datastore.
    pub rdm: bool,
    pub controller_key: i64,
    pub unit_number: i64,
}

/// A VM to create on the primary site (an alternate-location failback).
#[derive(Debug, Clone)]
pub struct NewVm<'a> {
    pub name: &'a str,
    /// The ESXi host's name, as the inventory shows it.
    pub host: &'a str,
    /// The datastore's name; the VM's folder and files go there.
    pub datastore: &'a str,
    /// vSphere's guest OS identifier, e.g. `windows9Server64Guest`, `rhel8_64Guest`.
    pub guest_id: &'a str,
    pub cpus: u32,
    pub memory_mb: u64,
    /// The network its one adapter joins (a test failover's isolated network); no adapter when `None`.
    pub network: Option<&'a str>,
}

/// An object met while placing a VM: its reference, its reference-valued properties, its name.
type Placed = (MoRef, HashMap<String, Option<MoRef>>, String);

struct Placement {
    host: MoRef,
    pool: MoRef,
    folder: MoRef,
}

/// The service content's references the connector uses.
#[derive(Debug, Clone)]
struct Content {
    root_folder: MoRef,
    property_collector: MoRef,
    view_manager: MoRef,
    session_manager: MoRef,
}

/// A logged-in session with one vCenter.
pub struct Vcenter {
    http: reqwest::Client,
    sdk: String,
    config: VcenterConfig,
    seen: Seen,
    content: Content,
    about: About,
    cookie: Mutex<Option<String>>,
}

impl std::fmt::Debug for Vcenter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Vcenter").field("sdk", &self.sdk).field("about", &self.about).finish()
    }
}

/// `https://host[:port][/sdk]` → the SDK endpoint; anything but HTTPS is refused.
pub fn sdk_url(url: &str) -> Result<String, ConnectorError> {
    let trimmed = url.trim().trim_end_matches('/');
    let Some(rest) = trimmed.strip_prefix("https://") else {
        return Err(ConnectorError::NotHttps { url: trimmed.to_owned() });
    };
    if rest.is_empty() || rest.contains(['?', '#', '@', ' ']) {
        return Err(ConnectorError::Protocol {
            service: SERVICE,
            operation: "connect".into(),
            detail: format!("{trimmed:?} is not an address such as https://vcenter.example or https://10.0.0.5/sdk"),
        });
    }
    Ok(if rest.contains('/') { trimmed.to_owned() } else { format!("{trimmed}/sdk") })
}

fn envelope(body: &str) -> String {
    format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?><soapenv:Envelope \
         xmlns:soapenv=\"http://schemas.xmlsoap.org/soap/envelope/\" \
         xmlns:xsi=\"http://www.w3.org/2001/XMLSchema-instance\" \
         xmlns:xsd=\"http://www.w3.org/2001/XMLSchema\"><soapenv:Body>{body}</soapenv:Body></soapenv:Envelope>"
    )
}

/// A SOAP fault: the vim25 fault type (`InvalidLogin`, `NotAuthenticated`, `InvalidPowerState` …) and its text.
fn fault(doc: &Document) -> Option<(String, String)> {
    let f = find(doc.root(), "Fault")?;
    let message = text(f, "faultstring").to_owned();
    let kind = child(f, "detail")
        .and_then(|d| d.children().find(|n| n.is_element()))
        .map(|d| {
            let t = xsi_type(d);
            if t.is_empty() {
                d.tag_name().name().trim_end_matches("Fault").to_owned()
            } else {
                t.to_owned()
            }
        })
        .unwrap_or_default();
    Some((kind, message))
}

fn parse<'a>(body: &'a str, operation: &str) -> Result<Document<'a>, ConnectorError> {
    Document::parse(body).map_err(|e| ConnectorError::Protocol {
        service: SERVICE,
        operation: operation.to_owned(),
        detail: format!("not XML: {e}"),
    })
}

fn protocol(operation: &str, detail: &str) -> ConnectorError {
    ConnectorError::Protocol { service: SERVICE, operation: operation.to_owned(), detail: detail.to_owned() }
}

impl Vcenter {
    /// Connects and logs in: the certificate must carry the pinned thumbprint, the credentials must be accepted.
    pub async fn connect(config: VcenterConfig) -> Result<Vcenter, ConnectorError> {
        let sdk = sdk_url(&config.url)?;
        let seen: Seen = Arc::new(Mutex::new(None));
        let http = http_client(pinned(config.thumbprint.clone(), seen.clone()));
        let mut vc = Vcenter {
            http,
            sdk,
            config,
            seen,
            content: Content {
                root_folder: MoRef::new("Folder", ""),
                property_collector: MoRef::new("PropertyCollector", ""),
                view_manager: MoRef::new("ViewManager", ""),
                session_manager: MoRef::new("SessionManager", ""),
            },
            about: About { full_name: String::new(), api_version: String::new(), instance_uuid: String::new() },
            cookie: Mutex::new(None),
        };
        let op = "RetrieveServiceContent";
        let body = vc
            .post(op, "<RetrieveServiceContent xmlns=\"urn:vim25\"><_this type=\"ServiceInstance\">ServiceInstance</_this></RetrieveServiceContent>")
            .await?;
        let doc = parse(&body, op)?;
        let rv = find(doc.root(), "returnval").ok_or_else(|| protocol(op, "no service content"))?;
        let mor = |name: &str| child(rv, name).and_then(MoRef::from_node).ok_or_else(|| protocol(op, name));
        vc.content = Content {
            root_folder: mor("rootFolder")?,
            property_collector: mor("propertyCollector")?,
            view_manager: mor("viewManager")?,
            session_manager: mor("sessionManager")?,
        };
        let about = child(rv, "about").ok_or_else(|| protocol(op, "no about"))?;
        if text(about, "apiType") != "VirtualCenter" {
            return Err(protocol(op, &format!("{} is not a vCenter Server", text(about, "fullName"))));
        }
        vc.about = About {
            full_name: text(about, "fullName").to_owned(),
            api_version: text(about, "apiVersion").to_owned(),
            instance_uuid: text(about, "instanceUuid").to_owned(),
        };
        vc.login().await?;
        Ok(vc)
    }

    pub fn about(&self) -> &About {
        &self.about
    }

    async fn login(&self) -> Result<(), ConnectorError> {
        let body = format!(
            "<Login xmlns=\"urn:vim25\">{}<userName>{}</userName><password>{}</password></Login>",
            self.content.session_manager.xml("_this"),
            escape(&self.config.user),
            escape(&self.config.password)
        );
        *self.cookie.lock().unwrap_or_else(|p| p.into_inner()) = None;
        match self.post("Login", &body).await {
            Err(ConnectorError::Refused { fault, .. }) if fault == "InvalidLogin" || fault == "NoPermission" => {
                Err(ConnectorError::Credentials { service: SERVICE, account: self.config.user.clone() })
            }
            other => other.map(|_| ()),
        }
    }

    /// Ends the session on the vCenter (sessions are a counted resource there).
    pub async fn logout(self) -> Result<(), ConnectorError> {
        let body = format!("<Logout xmlns=\"urn:vim25\">{}</Logout>", self.content.session_manager.xml("_this"));
        self.post("Logout", &body).await.map(|_| ())
    }

    /// One SOAP call: the answer's body, or the fault as a refusal; transport failures name their cause.
    async fn post(&self, operation: &str, body: &str) -> Result<String, ConnectorError> {
        let mut request = self
            .http
            .post(&self.sdk)
            .header("Content-Type", "text/xml; charset=utf-8")
            .header("SOAPAction", "urn:vim25/6.5")
            .body(envelope(body));
        if let Some(cookie) = self.cookie.lock().unwrap_or_else(|p| p.into_inner()).clone() {
            request = request.header("Cookie", cookie);
        }
        let response = request.send().await.map_err(|e| self.transport(&e))?;
        if let Some(set) = response.headers().get("set-cookie").and_then(|v| v.to_str().ok()) {
            if let Some(session) = set.split(';').next().filter(|c| c.starts_with("vmware_soap_session=")) {
                *self.cookie.lock().unwrap_or_else(|p| p.into_inner()) = Some(session.to_owned());
            }
        }
        let status = response.status();
        let answer = response.text().await.map_err(|e| self.transport(&e))?;
        let doc = parse(&answer, operation).map_err(|e| {
            if status.is_success() {
                e
            } else {
                protocol(operation, &format!("HTTP {}", status.as_u16()))
            }
        })?;
        if let Some((fault, message)) = fault(&doc) {
            return Err(ConnectorError::Refused { service: SERVICE, operation: operation.to_owned(), fault, message });
        }
        if !status.is_success() {
            return Err(protocol(operation, &format!("HTTP {}", status.as_u16())));
        }
        Ok(answer)
    }

    /// A call that logs in again once when vCenter has forgotten the session (idle timeout, restart).
    async fn call(&self, operation: &str, body: &str) -> Result<String, ConnectorError> {
        match self.post(operation, body).await {
            Err(ConnectorError::Refused { fault, .. }) if fault == "NotAuthenticated" => {
                self.login().await?;
                self.post(operation, body).await
            }
            other => other,
        }
    }

    fn transport(&self, e: &reqwest::Error) -> ConnectorError {
        if let Some(seen) = self.seen.lock().unwrap_or_else(|p| p.into_inner()).take() {
            let expected = match &self.config.thumbprint {
                Some(t) => format!(", not the {t} entered"),
                None => ", and no thumbprint was entered".to_owned(),
            };
            return ConnectorError::Thumbprint { url: self.sdk.clone(), seen, expected };
        }
        ConnectorError::Unreachable { service: SERVICE, url: self.sdk.clone(), cause: transport_cause(e) }
    }

    /// Every page of a property-collector retrieval (`RetrievePropertiesEx`, then `ContinueRetrievePropertiesEx`).
    async fn retrieve(&self, spec: &str) -> Result<Vec<String>, ConnectorError> {
        let pc = self.content.property_collector.xml("_this");
        let op = "RetrievePropertiesEx";
        let first = self
            .call(
                op,
                &format!(
                    "<RetrievePropertiesEx xmlns=\"urn:vim25\">{pc}<specSet>{spec}</specSet>\
                     <options><maxObjects>{PAGE}</maxObjects></options></RetrievePropertiesEx>"
                ),
            )
            .await?;
        let mut pages = vec![first];
        loop {
            let token = {
                let doc = parse(pages.last().expect("one page"), op)?;
                find(doc.root(), "returnval").map(|rv| text(rv, "token").to_owned()).unwrap_or_default()
            };
            if token.is_empty() {
                return Ok(pages);
            }
            let next = self
                .call(
                    "ContinueRetrievePropertiesEx",
                    &format!(
                        "<ContinueRetrievePropertiesEx xmlns=\"urn:vim25\">{pc}<token>{}</token>\
                         </ContinueRetrievePropertiesEx>",
                        escape(&token)
                    ),
                )
                .await?;
            pages.push(next);
        }
    }

    /// The properties `props` (`<propSet>`s) of every object of `types` in the inventory: a container view over the
    /// root folder, one property-collector retrieval through it (all pages), and the view released whatever happened.
    async fn retrieve_everywhere(&self, types: &[&str], props: &str) -> Result<Vec<String>, ConnectorError> {
        let op = "CreateContainerView";
        let types: String = types.iter().map(|t| format!("<type>{t}</type>")).collect();
        let view = {
            let body = self
                .call(
                    op,
                    &format!(
                        "<CreateContainerView xmlns=\"urn:vim25\">{}{}{types}<recursive>true</recursive>\
                         </CreateContainerView>",
                        self.content.view_manager.xml("_this"),
                        self.content.root_folder.xml("container")
                    ),
                )
                .await?;
            let doc = parse(&body, op)?;
            find(doc.root(), "returnval").and_then(MoRef::from_node).ok_or_else(|| protocol(op, "no view"))?
        };
        let spec = format!(
            "{props}<objectSet>{}<skip>true</skip><selectSet xsi:type=\"TraversalSpec\"><name>view</name>\
             <type>ContainerView</type><path>view</path><skip>false</skip></selectSet></objectSet>",
            view.xml("obj")
        );
        let pages = self.retrieve(&spec).await;
        // The view is a server-side object of this session: release it whatever the retrieval gave.
        let destroy = format!("<DestroyView xmlns=\"urn:vim25\">{}</DestroyView>", view.xml("_this"));
        let _ = self.call("DestroyView", &destroy).await;
        pages
    }

    /// The inventory the workflows need, in one pass of the property collector over a container view.
    pub async fn inventory(&self) -> Result<Inventory, ConnectorError> {
        const TYPES: [(&str, &[&str]); 7] = [
            ("Datacenter", &["name"]),
            ("ClusterComputeResource", &["name"]),
            ("HostSystem", &["name", "parent", "runtime.connectionState", "runtime.inMaintenanceMode", "datastore"]),
            ("Datastore", &["summary"]),
            ("Network", &["name"]),
            (
                "VirtualMachine",
                &[
                    "name",
                    "runtime.powerState",
                    "runtime.host",
                    "guest.toolsRunningStatus",
                    "config.hardware.device",
                    "snapshot",
                    "network",
                ],
            ),
            ("ComputeResource", &["name"]),
        ];
        let types: Vec<&str> = TYPES.iter().map(|(t, _)| *t).collect();
        let props: String = TYPES
            .iter()
            .map(|(t, paths)| {
                let paths: String = paths.iter().map(|p| format!("<pathSet>{p}</pathSet>")).collect();
                format!("<propSet><type>{t}</type>{paths}</propSet>")
            })
            .collect();
        let pages = self.retrieve_everywhere(&types, &props).await?;
        read_inventory(&pages)
    }

    /// Powers a VM on and waits for the task.
    pub async fn power_on(&self, vm: &str) -> Result<(), ConnectorError> {
        self.vm_task("PowerOnVM_Task", vm, "").await
    }

    /// Powers a VM off (hard) and waits for the task.
    pub async fn power_off(&self, vm: &str) -> Result<(), ConnectorError> {
        self.vm_task("PowerOffVM_Task", vm, "").await
    }

    /// Creates an empty VM (a paravirtual SCSI controller, no disk) on `host`, its files on `datastore`, in the
    /// datacenter's VM folder and the host's (or its cluster's) resource pool. Returns the new VM's id.
    pub async fn create_vm(&self, vm: &NewVm<'_>) -> Result<String, ConnectorError> {
        let op = "CreateVM_Task";
        let place = self.placement(vm.host).await?;
        let nic = vm
            .network
            .map(|n| {
                format!(
                    "<deviceChange><operation>add</operation><device xsi:type=\"VirtualVmxnet3\"><key>-101</key>\
                     <backing xsi:type=\"VirtualEthernetCardNetworkBackingInfo\"><deviceName>{}</deviceName>\
                     </backing><connectable><startConnected>true</startConnected>\
                     <allowGuestControl>true</allowGuestControl><connected>true</connected></connectable>\
                     <addressType>generated</addressType></device></deviceChange>",
                    escape(n)
                )
            })
            .unwrap_or_default();
        let body = format!(
            "<CreateVM_Task xmlns=\"urn:vim25\">{}<config><name>{}</name><guestId>{}</guestId>\
             <files><vmPathName>[{}]</vmPathName></files><numCPUs>{}</numCPUs><memoryMB>{}</memoryMB>\
             <deviceChange><operation>add</operation><device xsi:type=\"ParaVirtualSCSIController\"><key>-100</key>\
             <busNumber>0</busNumber><sharedBus>noSharing</sharedBus></device></deviceChange>{nic}</config>{}{}\
             </CreateVM_Task>",
            place.folder.xml("_this"),
            escape(vm.name),
            escape(vm.guest_id),
            escape(vm.datastore),
            vm.cpus,
            vm.memory_mb,
            place.pool.xml("pool"),
            place.host.xml("host"),
        );
        let answer = self.call(op, &body).await?;
        let task = {
            let doc = parse(&answer, op)?;
            find(doc.root(), "returnval").and_then(MoRef::from_node).ok_or_else(|| protocol(op, "no task"))?
        };
        let created = self.wait(&task, op, Duration::from_secs(600)).await?;
        created.map(|m| m.id).ok_or_else(|| protocol(op, "the task succeeded without naming the new VM"))
    }

    /// Attaches an existing VMDK (`[datastore] folder/name.vmdk`, written by the master target) to a VM, on its
    /// first SCSI controller's next free unit.
    pub async fn attach_disk(&self, vm: &str, file: &str) -> Result<(), ConnectorError> {
        let op = "ReconfigVM_Task";
        let inv = self.inventory().await?;
        let target = inv
            .vms
            .iter()
            .find(|v| v.id == vm)
            .ok_or_else(|| ConnectorError::NotFound { what: format!("the VM {vm} in vCenter"), hint: String::new() })?;
        let controller = *target.scsi_controllers.first().ok_or_else(|| ConnectorError::Refused {
            service: SERVICE,
            operation: op.into(),
            fault: "NoController".into(),
            message: format!("{} has no SCSI controller to attach a disk to", target.name),
        })?;
        let used: Vec<i64> =
            target.disks.iter().filter(|d| d.controller_key == controller).map(|d| d.unit_number).collect();
        // Unit 7 is the controller's own.
        let unit = (0..16).find(|u| *u != 7 && !used.contains(u)).ok_or_else(|| ConnectorError::Refused {
            service: SERVICE,
            operation: op.into(),
            fault: "NoFreeUnit".into(),
            message: format!("the SCSI controller of {} has no free unit", target.name),
        })?;
        let args = format!(
            "<spec><deviceChange><operation>add</operation><device xsi:type=\"VirtualDisk\"><key>-1</key>\
             <backing xsi:type=\"VirtualDiskFlatVer2BackingInfo\"><fileName>{}</fileName><diskMode>persistent</diskMode>\
             </backing><controllerKey>{controller}</controllerKey><unitNumber>{unit}</unitNumber>\
             <capacityInKB>0</capacityInKB></device></deviceChange></spec>",
            escape(file)
        );
        self.vm_task(op, vm, &args).await
    }

    /// Detaches a disk from a VM and keeps its file (the replica stays on the datastore).
    pub async fn detach_disk(&self, vm: &str, disk_key: i64) -> Result<(), ConnectorError> {
        let args = format!(
            "<spec><deviceChange><operation>remove</operation><device xsi:type=\"VirtualDisk\"><key>{disk_key}</key>\
             <controllerKey>0</controllerKey><capacityInKB>0</capacityInKB></device></deviceChange></spec>"
        );
        self.vm_task("ReconfigVM_Task", vm, &args).await
    }

    /// Deletes a VM and the files in its folder (`Destroy_Task`); it must be powered off.
    pub async fn destroy_vm(&self, vm: &str) -> Result<(), ConnectorError> {
        self.vm_task("Destroy_Task", vm, "").await
    }

    /// Where a new VM on `host` goes: its datacenter's VM folder and the resource pool of its compute resource.
    async fn placement(&self, host: &str) -> Result<Placement, ConnectorError> {
        let op = "RetrievePropertiesEx";
        let props = "<propSet><type>HostSystem</type><pathSet>name</pathSet><pathSet>parent</pathSet></propSet>\
                     <propSet><type>ComputeResource</type><pathSet>resourcePool</pathSet><pathSet>parent</pathSet>\
                     </propSet><propSet><type>Folder</type><pathSet>parent</pathSet></propSet>\
                     <propSet><type>Datacenter</type><pathSet>vmFolder</pathSet></propSet>";
        let types = ["HostSystem", "ComputeResource", "ClusterComputeResource", "Datacenter", "Folder"];
        let pages = self.retrieve_everywhere(&types, props).await?;
        let docs: Vec<Document> = pages.iter().map(|p| parse(p, op)).collect::<Result<_, _>>()?;
        // Every object's properties by id, then walk host → compute resource → … → datacenter.
        let mut objects: HashMap<String, Placed> = HashMap::new();
        for doc in &docs {
            for obj in doc.descendants().filter(|n| n.is_element() && n.tag_name().name() == "objects") {
                let Some(r) = child(obj, "obj").and_then(MoRef::from_node) else { continue };
                let mut props = HashMap::new();
                let mut name = String::new();
                for ps in children(obj, "propSet") {
                    let val = child(ps, "val");
                    if text(ps, "name") == "name" {
                        name = val.and_then(|v| v.text()).unwrap_or("").to_owned();
                    } else {
                        props.insert(text(ps, "name").to_owned(), val.and_then(MoRef::from_node));
                    }
                }
                objects.insert(r.id.clone(), (r, props, name));
            }
        }
        let not_found =
            || ConnectorError::NotFound { what: format!("the ESXi host {host} in vCenter"), hint: String::new() };
        let (host_ref, host_props, _) =
            objects.values().find(|(r, _, n)| r.kind == "HostSystem" && n == host).ok_or_else(not_found)?;
        let compute = host_props.get("parent").cloned().flatten().ok_or_else(not_found)?;
        let (_, compute_props, _) = objects.get(&compute.id).ok_or_else(not_found)?;
        let pool = compute_props
            .get("resourcePool")
            .cloned()
            .flatten()
            .ok_or_else(|| protocol(op, "the host has no resource pool"))?;
        let mut at = compute_props.get("parent").cloned().flatten();
        for _ in 0..32 {
            let Some(r) = at else { break };
            let (_, props, _) = objects.get(&r.id).ok_or_else(not_found)?;
            if r.kind == "Datacenter" {
                let folder = props
                    .get("vmFolder")
                    .cloned()
                    .flatten()
                    .ok_or_else(|| protocol(op, "the datacenter has no VM folder"))?;
                return Ok(Placement { host: host_ref.clone(), pool, folder });
            }
            at = props.get("parent").cloned().flatten();
        }
        Err(protocol(op, &format!("no datacenter above the host {host}")))
    }

    async fn vm_task(&self, method: &str, vm: &str, args: &str) -> Result<(), ConnectorError> {
        let this = MoRef::new("VirtualMachine", vm).xml("_this");
        let body = self.call(method, &format!("<{method} xmlns=\"urn:vim25\">{this}{args}</{method}>")).await?;
        let task = {
            let doc = parse(&body, method)?;
            find(doc.root(), "returnval").and_then(MoRef::from_node).ok_or_else(|| protocol(method, "no task"))?
        };
        self.wait(&task, method, Duration::from_secs(600)).await.map(|_| ())
    }

    /// Waits for a task to end; its error becomes a refusal naming the operation, the fault and vCenter's message.
    /// Returns the task's result when it is a managed object (the new VM of `CreateVM_Task`).
    pub async fn wait(&self, task: &MoRef, operation: &str, limit: Duration) -> Result<Option<MoRef>, ConnectorError> {
        let started = Instant::now();
        let spec = format!(
            "<propSet><type>Task</type><pathSet>info.state</pathSet><pathSet>info.error</pathSet>\
             <pathSet>info.result</pathSet></propSet>\
             <objectSet>{}<skip>false</skip></objectSet>",
            task.xml("obj")
        );
        let mut pause = Duration::from_millis(50);
        loop {
            let pages = self.retrieve(&spec).await?;
            let doc = parse(&pages[0], operation)?;
            let mut state = String::new();
            let mut error = None;
            let mut result = None;
            for ps in doc.descendants().filter(|n| n.is_element() && n.tag_name().name() == "propSet") {
                let Some(val) = child(ps, "val") else { continue };
                match text(ps, "name") {
                    "info.state" => state = val.text().unwrap_or("").to_owned(),
                    "info.result" => result = MoRef::from_node(val),
                    "info.error" => {
                        let kind = child(val, "fault").map(xsi_type).unwrap_or("").to_owned();
                        error = Some((kind, text(val, "localizedMessage").to_owned()));
                    }
                    _ => {}
                }
            }
            match state.as_str() {
                "success" => return Ok(result),
                "error" => {
                    let (fault, message) = error.unwrap_or_default();
                    let message = if message.is_empty() { fault.clone() } else { message };
                    return Err(ConnectorError::Refused {
                        service: SERVICE,
                        operation: operation.to_owned(),
                        fault,
                        message,
                    });
                }
                "queued" | "running" => {}
                other => return Err(protocol(operation, &format!("task state {other:?}"))),
            }
            if started.elapsed() > limit {
                return Err(ConnectorError::Refused {
                    service: SERVICE,
                    operation: operation.to_owned(),
                    fault: "Timeout".into(),
                    message: format!(
                        "the task {} did not end within {} s; it may still be running",
                        task.id,
                        limit.as_secs()
                    ),
                });
            }
            tokio::time::sleep(pause).await;
            pause = (pause * 2).min(Duration::from_secs(2));
        }
    }
}

/// The inventory from the property collector's pages: every object by reference first, then names resolved.
fn read_inventory(pages: &[String]) -> Result<Inventory, ConnectorError> {
    let op = "RetrievePropertiesEx";
    let docs: Vec<Document> = pages.iter().map(|p| parse(p, op)).collect::<Result<_, _>>()?;
    let mut names: HashMap<String, String> = HashMap::new();
    let mut objects: Vec<(MoRef, Node)> = Vec::new();
    for doc in &docs {
        for obj in doc.descendants().filter(|n| n.is_element() && n.tag_name().name() == "objects") {
            let Some(r) = child(obj, "obj").and_then(MoRef::from_node) else { continue };
            objects.push((r, obj));
        }
    }
    for (r, obj) in &objects {
        let name = match r.kind.as_str() {
            "Datastore" => prop(*obj, "summary").map(|s| text(s, "name").to_owned()),
            _ => prop(*obj, "name").and_then(|v| v.text()).map(str::to_owned),
        };
        if let Some(name) = name {
            names.insert(r.id.clone(), name);
        }
    }
    let name_of = |id: &str| names.get(id).cloned().unwrap_or_else(|| id.to_owned());
    let mut inv = Inventory {
        datacenters: vec![],
        clusters: vec![],
        hosts: vec![],
        datastores: vec![],
        networks: vec![],
        vms: vec![],
    };
    for (r, obj) in &objects {
        let obj = *obj;
        let value = |name: &str| prop(obj, name).and_then(|v| v.text()).unwrap_or("").to_owned();
        match r.kind.as_str() {
            "Datacenter" => inv.datacenters.push(name_of(&r.id)),
            "ClusterComputeResource" => inv.clusters.push(name_of(&r.id)),
            "Network" => inv.networks.push(name_of(&r.id)),
            "HostSystem" => {
                let parent = prop(obj, "parent").and_then(MoRef::from_node);
                inv.hosts.push(Host {
                    id: r.id.clone(),
                    name: name_of(&r.id),
                    cluster: parent.filter(|p| p.kind == "ClusterComputeResource").map(|p| name_of(&p.id)),
                    connection_state: value("runtime.connectionState"),
                    maintenance: value("runtime.inMaintenanceMode") == "true",
                    datastores: prop(obj, "datastore")
                        .map(|v| children(v, "ManagedObjectReference").filter_map(|m| m.text()).map(name_of).collect())
                        .unwrap_or_default(),
                });
            }
            "Datastore" => {
                let Some(s) = prop(obj, "summary") else { continue };
                inv.datastores.push(Datastore {
                    id: r.id.clone(),
                    name: text(s, "name").to_owned(),
                    kind: text(s, "type").to_owned(),
                    capacity_bytes: text(s, "capacity").parse().unwrap_or(0),
                    free_bytes: text(s, "freeSpace").parse().unwrap_or(0),
                    accessible: text(s, "accessible") == "true",
                    url: text(s, "url").to_owned(),
                });
            }
            "VirtualMachine" => {
                let power = match value("runtime.powerState").as_str() {
                    "poweredOn" => PowerState::On,
                    "suspended" => PowerState::Suspended,
                    _ => PowerState::Off,
                };
                let controllers = prop(obj, "config.hardware.device")
                    .map(|v| {
                        v.children()
                            .filter(|d| d.is_element() && SCSI_CONTROLLERS.contains(&xsi_type(*d)))
                            .filter_map(|d| text(d, "key").parse().ok())
                            .collect()
                    })
                    .unwrap_or_default();
                let disks = prop(obj, "config.hardware.device")
                    .map(|v| {
                        v.children()
                            .filter(|d| d.is_element() && xsi_type(*d) == "VirtualDisk")
                            .map(read_disk)
                            .collect()
                    })
                    .unwrap_or_default();
                let mut snapshots = Vec::new();
                if let Some(tree) = prop(obj, "snapshot") {
                    for n in tree.descendants().filter(|n| {
                        n.is_element() && matches!(n.tag_name().name(), "rootSnapshotList" | "childSnapshotList")
                    }) {
                        snapshots.push(text(n, "name").to_owned());
                    }
                }
                inv.vms.push(Vm {
                    id: r.id.clone(),
                    name: name_of(&r.id),
                    power,
                    host: prop(obj, "runtime.host").and_then(|h| h.text()).map(name_of),
                    tools: value("guest.toolsRunningStatus"),
                    disks,
                    snapshots,
                    scsi_controllers: controllers,
                    networks: prop(obj, "network")
                        .map(|v| children(v, "ManagedObjectReference").filter_map(|m| m.text()).map(name_of).collect())
                        .unwrap_or_default(),
                });
            }
            _ => {}
        }
    }
    Ok(inv)
}

/// The value of an object's property `name`.
fn prop<'a, 'i>(obj: Node<'a, 'i>, name: &str) -> Option<Node<'a, 'i>> {
    obj.children()
        .find(|ps| ps.is_element() && ps.tag_name().name() == "propSet" && text(*ps, "name") == name)
        .and_then(|ps| child(ps, "val"))
}

fn read_disk(device: Node) -> Disk {
    let backing = child(device, "backing");
    let file = backing.map(|b| text(b, "fileName")).unwrap_or("").to_owned();
    let datastore =
        file.strip_prefix('[').and_then(|f| f.split_once(']')).map(|(d, _)| d.to_owned()).unwrap_or_default();
    let bytes = text(device, "capacityInBytes").parse::<u64>().ok();
    let kib = text(device, "capacityInKB").parse::<u64>().unwrap_or(0);
    Disk {
        key: text(device, "key").parse().unwrap_or(0),
        file,
        datastore,
        capacity_bytes: bytes.unwrap_or(kib * 1024),
        rdm: backing.is_some_and(|b| xsi_type(b).starts_with("VirtualDiskRawDiskMapping")),
        controller_key: text(device, "controllerKey").parse().unwrap_or(0),
        unit_number: text(device, "unitNumber").parse().unwrap_or(0),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_https_addresses_are_accepted_and_the_sdk_path_is_added() {
        assert_eq!(sdk_url("https://vc.example").unwrap(), "https://vc.example/sdk");
        assert_eq!(sdk_url("https://10.0.0.5:8443/sdk/").unwrap(), "https://10.0.0.5:8443/sdk");
        assert!(matches!(sdk_url("http://vc.example"), Err(ConnectorError::NotHttps { .. })));
        assert!(matches!(sdk_url("https://user:pw@vc.example"), Err(ConnectorError::Protocol { .. })));
    }

    #[test]
    fn a_fault_names_its_vim25_type() {
        let body = r#"<?xml version="1.0"?><soapenv:Envelope xmlns:soapenv="http://schemas.xmlsoap.org/soap/envelope/" xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance"><soapenv:Body><soapenv:Fault><faultcode>ServerFaultCode</faultcode><faultstring>Login failure</faultstring><detail><InvalidLoginFault xmlns="urn:vim25" xsi:type="InvalidLogin"></InvalidLoginFault></detail></soapenv:Fault></soapenv:Body></soapenv:Envelope>"#;
        let doc = Document::parse(body).unwrap();
        assert_eq!(fault(&doc), Some(("InvalidLogin".to_owned(), "Login failure".to_owned())));
    }
}
