//! Site connections: the vCenter of the primary site and the storage account (a container of page blobs) of the
//! recovery site, as an Administrator adds them. A connection is checked against the real API before it is saved
//! (a wrong password, an unreachable address, a thumbprint that does not match or an expired SAS is refused with
//! what to fix), its credential is sealed with a key that lives in the data dir, never in the database, and no
//! answer, log line or audit entry carries the credential. Each check keeps what the API reported: the vCenter's
//! inventory, the container's disks.

use std::path::Path;
use std::sync::Arc;

use base64::Engine as _;
use ring::aead::{Aad, LessSafeKey, Nonce, UnboundKey, CHACHA20_POLY1305, NONCE_LEN};
use ring::rand::{SecureRandom, SystemRandom};
use serde::{Deserialize, Serialize};

use crate::connectors::azure_blob::{Container, Credential, StorageConfig};
use crate::connectors::azure_compute::{AzureVm, Compute, ComputeConfig};
use crate::connectors::vsphere::{About, Inventory, Vcenter, VcenterConfig};
use crate::connectors::{ConnectorError, Thumbprint};
use crate::db::{self, Db, Unique};
use crate::domain::Millis;

/// How often each connection is checked again in the background, so a vCenter that went away shows as failing
/// before anyone acts on it.
pub const CHECK_EVERY_MS: Millis = 5 * 60 * 1000;

/// The file in the data dir holding the key that seals connection credentials. Nodes sharing one vault need the
/// same file (copy it with the `pki` folder).
pub const KEY_FILE: &str = "connections.key";

#[derive(Debug, thiserror::Error)]
pub enum ConnectionError {
    #[error("{0}")]
    Invalid(String),
    #[error("a site connection named {0} exists already; choose another name or remove that connection first")]
    NameTaken(String),
    #[error("no site connection {0}")]
    NotFound(String),
    /// The connection could not be made: the cause, in words to act on.
    #[error(transparent)]
    Connector(#[from] ConnectorError),
    #[error("the credential of connection {0} cannot be opened with this node's {KEY_FILE}: copy the file from the node that added it, or remove and add the connection again")]
    Sealed(String),
    #[error("the connections key {path}: {cause}")]
    Key { path: String, cause: String },
    #[error("database: {0}")]
    Db(#[from] sqlx::Error),
}

/// What an Administrator enters to add a connection. Secrets are only in here, on their way to being sealed.
#[derive(Clone, Deserialize)]
#[serde(tag = "kind", rename_all = "kebab-case", deny_unknown_fields)]
pub enum NewConnection {
    Vcenter {
        name: String,
        url: String,
        user: String,
        password: String,
        /// The certificate's SHA-1 or SHA-256 thumbprint; without it the answer names the one presented.
        #[serde(default)]
        thumbprint: Option<String>,
    },
    StorageAccount {
        name: String,
        url: String,
        container: String,
        #[serde(default)]
        account_key: Option<String>,
        #[serde(default)]
        sas: Option<String>,
        #[serde(default)]
        thumbprint: Option<String>,
    },
    AzureSubscription {
        name: String,
        /// The directory (tenant) id.
        tenant: String,
        /// The service principal: its application (client) id and a client secret.
        client_id: String,
        client_secret: String,
        subscription: String,
        resource_group: String,
        /// `https://management.azure.com` unless another cloud's.
        #[serde(default)]
        management_url: Option<String>,
        /// `https://login.microsoftonline.com` unless another cloud's.
        #[serde(default)]
        authority_url: Option<String>,
        #[serde(default)]
        thumbprint: Option<String>,
    },
}

pub const AZURE_MANAGEMENT: &str = "https://management.azure.com";
pub const AZURE_AUTHORITY: &str = "https://login.microsoftonline.com";

impl std::fmt::Debug for NewConnection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            NewConnection::Vcenter { name, url, user, .. } => {
                write!(f, "Vcenter {{ name: {name:?}, url: {url:?}, user: {user:?}, password: <hidden> }}")
            }
            NewConnection::StorageAccount { name, url, container, .. } => {
                write!(
                    f,
                    "StorageAccount {{ name: {name:?}, url: {url:?}, container: {container:?}, credential: <hidden> }}"
                )
            }
            NewConnection::AzureSubscription { name, subscription, resource_group, client_id, .. } => write!(
                f,
                "AzureSubscription {{ name: {name:?}, subscription: {subscription:?}, resource_group: \
                 {resource_group:?}, client_id: {client_id:?}, client_secret: <hidden> }}"
            ),
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ConnectionKind {
    Vcenter,
    StorageAccount,
    AzureSubscription,
}

impl ConnectionKind {
    pub fn as_str(self) -> &'static str {
        match self {
            ConnectionKind::Vcenter => "vcenter",
            ConnectionKind::StorageAccount => "storage-account",
            ConnectionKind::AzureSubscription => "azure-subscription",
        }
    }

    pub fn title(self) -> &'static str {
        match self {
            ConnectionKind::Vcenter => "vCenter Server",
            ConnectionKind::StorageAccount => "Azure storage account",
            ConnectionKind::AzureSubscription => "Azure subscription",
        }
    }
}

/// What the last successful check read.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum Snapshot {
    Vcenter {
        about: AboutView,
        inventory: InventoryView,
    },
    /// `blobs`: the first [`BLOBS_KEPT`] names, in the service's order; `blob_count`: all of them.
    StorageAccount {
        account: String,
        blobs: Vec<String>,
        #[serde(default)]
        blob_count: usize,
    },
    AzureSubscription {
        subscription: String,
        resource_group: String,
        vms: Vec<AzureVmView>,
    },
}

/// A VM of the subscription's resource group, as its last check listed it.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct AzureVmView {
    pub name: String,
    pub provisioning_state: String,
    /// Its managed disks' names, then its unmanaged disks' blobs.
    pub disks: Vec<String>,
}

impl AzureVmView {
    fn of(vm: &AzureVm) -> AzureVmView {
        let last = |s: &String| s.rsplit('/').next().unwrap_or(s).to_owned();
        AzureVmView {
            name: vm.name.clone(),
            provisioning_state: vm.provisioning_state.clone(),
            disks: vm.managed_disks.iter().chain(&vm.vhds).map(last).collect(),
        }
    }
}

/// Blob names kept per check: enough to recognise a VM's disks, bounded for a container shared by thousands.
pub const BLOBS_KEPT: usize = 1000;

/// [`About`] as stored (the connector's types are for the wire to vCenter, these for ours).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct AboutView {
    pub full_name: String,
    pub api_version: String,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct InventoryView {
    pub datacenters: Vec<String>,
    pub clusters: Vec<String>,
    pub hosts: Vec<HostView>,
    pub datastores: Vec<DatastoreView>,
    pub networks: Vec<String>,
    pub vms: Vec<VmView>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct HostView {
    pub name: String,
    pub cluster: Option<String>,
    pub connection_state: String,
    pub maintenance: bool,
    /// The datastores it mounts (absent from checks stored before they were kept).
    #[serde(default)]
    pub datastores: Vec<String>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct DatastoreView {
    pub name: String,
    pub kind: String,
    pub capacity_bytes: u64,
    pub free_bytes: u64,
    pub accessible: bool,
    /// `ds:///vmfs/volumes/…`, or the folder backing it on the simulator.
    #[serde(default)]
    pub url: String,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct VmView {
    pub name: String,
    pub power: String,
    pub host: Option<String>,
    pub tools: String,
    pub disks: Vec<String>,
    /// Each disk's capacity, in the order of `disks` (absent from checks stored before they were kept).
    #[serde(default)]
    pub disk_bytes: Vec<u64>,
    pub snapshots: usize,
}

fn snapshot_of(about: &About, inv: Inventory) -> Snapshot {
    Snapshot::Vcenter {
        about: AboutView { full_name: about.full_name.clone(), api_version: about.api_version.clone() },
        inventory: InventoryView {
            datacenters: inv.datacenters,
            clusters: inv.clusters,
            hosts: inv
                .hosts
                .into_iter()
                .map(|h| HostView {
                    name: h.name,
                    cluster: h.cluster,
                    connection_state: h.connection_state,
                    maintenance: h.maintenance,
                    datastores: h.datastores,
                })
                .collect(),
            datastores: inv
                .datastores
                .into_iter()
                .map(|d| DatastoreView {
                    name: d.name,
                    kind: d.kind,
                    capacity_bytes: d.capacity_bytes,
                    free_bytes: d.free_bytes,
                    accessible: d.accessible,
                    url: d.url,
                })
                .collect(),
            networks: inv.networks,
            vms: inv
                .vms
                .into_iter()
                .map(|v| VmView {
                    name: v.name,
                    power: crate::domain::wire_name(&v.power),
                    host: v.host,
                    tools: v.tools,
                    disk_bytes: v.disks.iter().map(|d| d.capacity_bytes).collect(),
                    disks: v.disks.into_iter().map(|d| d.file).collect(),
                    snapshots: v.snapshots.len(),
                })
                .collect(),
        },
    }
}

/// A connection as everyone may see it: never the credential.
#[derive(Clone, Debug, Serialize)]
pub struct Connection {
    pub id: String,
    pub kind: ConnectionKind,
    pub name: String,
    pub url: String,
    pub user: Option<String>,
    pub container: Option<String>,
    /// The identity provider's address with the tenant (Azure subscriptions).
    pub authority: Option<String>,
    /// `password`, `shared-key`, `sas` or `client-secret`: which kind of credential is sealed, not the credential.
    pub credential: String,
    pub thumbprint: Option<String>,
    pub created_at: Millis,
    pub created_by: String,
    pub checked_at: Millis,
    pub last_ok_at: Option<Millis>,
    /// Why the last check failed (then the inventory is the last good one, from `last_ok_at`).
    pub last_error: Option<String>,
    pub inventory: Option<Snapshot>,
}

crate::row! {
    struct ConnectionRow {
        id: String,
        kind: String,
        name: String,
        url: String,
        user_name: Option<String>,
        container: Option<String>,
        authority: Option<String>,
        credential_kind: String,
        secret_sealed: String,
        thumbprint: Option<String>,
        created_at: i64,
        created_by: String,
        checked_at: i64,
        last_ok_at: Option<i64>,
        last_error: Option<String>,
        inventory: Option<String>,
    }
}

const COLUMNS: &str =
    "id, kind, name, url, user_name, container, authority, credential_kind, secret_sealed, thumbprint, \
                       created_at, created_by, checked_at, last_ok_at, last_error, inventory";

impl ConnectionRow {
    fn view(&self) -> Connection {
        Connection {
            id: self.id.clone(),
            kind: kind_of(&self.kind),
            name: self.name.clone(),
            url: self.url.clone(),
            user: self.user_name.clone(),
            container: self.container.clone(),
            authority: self.authority.clone(),
            credential: self.credential_kind.clone(),
            thumbprint: self.thumbprint.clone(),
            created_at: self.created_at as Millis,
            created_by: self.created_by.clone(),
            checked_at: self.checked_at as Millis,
            last_ok_at: self.last_ok_at.map(|t| t as Millis),
            last_error: self.last_error.clone(),
            inventory: self.inventory.as_deref().and_then(|j| serde_json::from_str(j).ok()),
        }
    }
}

/// Seals credentials with ChaCha20-Poly1305 under the data dir's key; the connection's id is the associated data,
/// so a sealed credential copied onto another row does not open.
pub struct Sealer {
    key: LessSafeKey,
    rng: SystemRandom,
}

impl Sealer {
    /// Reads `<dir>/connections.key`, or creates it (32 random bytes, mode 0600, synced with its folder).
    pub fn load_or_create(dir: &Path) -> Result<Sealer, ConnectionError> {
        use std::io::Write;
        use std::os::unix::fs::OpenOptionsExt;
        let path = dir.join(KEY_FILE);
        let err = |e: std::io::Error| ConnectionError::Key { path: path.display().to_string(), cause: e.to_string() };
        let rng = SystemRandom::new();
        let bytes = match std::fs::read(&path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let mut b = vec![0u8; 32];
                rng.fill(&mut b).map_err(|_| err(std::io::Error::other("no randomness")))?;
                let tmp = dir.join(format!("{KEY_FILE}.{}.new", std::process::id()));
                let mut f = std::fs::OpenOptions::new()
                    .write(true)
                    .create(true)
                    .truncate(true)
                    .mode(0o600)
                    .open(&tmp)
                    .map_err(err)?;
                f.write_all(&b).and_then(|_| f.sync_all()).map_err(err)?;
                // Another node or process may have made one meanwhile: the first one wins, everyone reads it.
                match std::fs::hard_link(&tmp, &path) {
                    Ok(()) => {}
                    Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
                    Err(e) => return Err(err(e)),
                }
                let _ = std::fs::remove_file(&tmp);
                std::fs::File::open(dir).and_then(|d| d.sync_all()).map_err(err)?;
                std::fs::read(&path).map_err(err)?
            }
            Err(e) => return Err(err(e)),
        };
        if bytes.len() != 32 {
            return Err(err(std::io::Error::other(format!("it holds {} bytes, not 32", bytes.len()))));
        }
        let key = UnboundKey::new(&CHACHA20_POLY1305, &bytes).map_err(|_| err(std::io::Error::other("not a key")))?;
        Ok(Sealer { key: LessSafeKey::new(key), rng })
    }

    pub(crate) fn seal(&self, id: &str, secret: &str) -> Result<String, ConnectionError> {
        let mut nonce = [0u8; NONCE_LEN];
        self.rng.fill(&mut nonce).map_err(|_| ConnectionError::Sealed(id.to_owned()))?;
        let mut data = secret.as_bytes().to_vec();
        self.key
            .seal_in_place_append_tag(Nonce::assume_unique_for_key(nonce), Aad::from(id.as_bytes()), &mut data)
            .map_err(|_| ConnectionError::Sealed(id.to_owned()))?;
        let mut out = nonce.to_vec();
        out.extend_from_slice(&data);
        Ok(base64::engine::general_purpose::STANDARD.encode(out))
    }

    pub(crate) fn open(&self, id: &str, sealed: &str) -> Result<String, ConnectionError> {
        let fail = || ConnectionError::Sealed(id.to_owned());
        let mut data = base64::engine::general_purpose::STANDARD.decode(sealed).map_err(|_| fail())?;
        if data.len() < NONCE_LEN {
            return Err(fail());
        }
        let mut rest = data.split_off(NONCE_LEN);
        let nonce = Nonce::try_assume_unique_for_key(&data).map_err(|_| fail())?;
        let plain = self.key.open_in_place(nonce, Aad::from(id.as_bytes()), &mut rest).map_err(|_| fail())?;
        String::from_utf8(plain.to_vec()).map_err(|_| fail())
    }
}

fn kind_of(text: &str) -> ConnectionKind {
    match text {
        "vcenter" => ConnectionKind::Vcenter,
        "azure-subscription" => ConnectionKind::AzureSubscription,
        _ => ConnectionKind::StorageAccount,
    }
}

/// A validated connection, ready to be checked and stored.
struct Parsed {
    kind: ConnectionKind,
    name: String,
    url: String,
    user: Option<String>,
    container: Option<String>,
    authority: Option<String>,
    credential_kind: &'static str,
    secret: String,
    thumbprint: Option<Thumbprint>,
}

fn parse_name(name: &str) -> Result<String, ConnectionError> {
    let n = name.trim();
    let ok = !n.is_empty()
        && n.len() <= 64
        && n.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | ' '));
    if ok {
        Ok(n.to_owned())
    } else {
        Err(ConnectionError::Invalid(format!(
            "name: {name:?} is not a connection name; use 1 to 64 letters, digits, spaces, dots, hyphens or underscores"
        )))
    }
}

fn parse_thumbprint(t: Option<&str>) -> Result<Option<Thumbprint>, ConnectionError> {
    match t.map(str::trim).filter(|t| !t.is_empty()) {
        None => Ok(None),
        Some(t) => Thumbprint::parse(t).map(Some).map_err(|e| ConnectionError::Invalid(format!("thumbprint: {e}"))),
    }
}

fn required(field: &str, value: &str, hint: &str) -> Result<String, ConnectionError> {
    let v = value.trim();
    if v.is_empty() {
        Err(ConnectionError::Invalid(format!("{field}: required; {hint}")))
    } else {
        Ok(v.to_owned())
    }
}

impl NewConnection {
    fn parse(self) -> Result<Parsed, ConnectionError> {
        match self {
            NewConnection::Vcenter { name, url, user, password, thumbprint } => {
                if password.is_empty() {
                    return Err(ConnectionError::Invalid(
                        "password: required; the password of the vCenter account".into(),
                    ));
                }
                Ok(Parsed {
                    kind: ConnectionKind::Vcenter,
                    name: parse_name(&name)?,
                    url: crate::connectors::vsphere::sdk_url(&required(
                        "url",
                        &url,
                        "such as https://vcenter.example",
                    )?)?,
                    user: Some(required("user", &user, "such as administrator@vsphere.local")?),
                    container: None,
                    authority: None,
                    credential_kind: "password",
                    secret: password,
                    thumbprint: parse_thumbprint(thumbprint.as_deref())?,
                })
            }
            NewConnection::StorageAccount { name, url, container, account_key, sas, thumbprint } => {
                let key = account_key.filter(|k| !k.trim().is_empty());
                let sas = sas.filter(|s| !s.trim().is_empty());
                let (credential_kind, secret) = match (key, sas) {
                    (Some(k), None) => ("shared-key", k.trim().to_owned()),
                    (None, Some(s)) => ("sas", s.trim().trim_start_matches('?').to_owned()),
                    _ => {
                        return Err(ConnectionError::Invalid(
                            "account_key, sas: give exactly one, the account's access key or a SAS token".into(),
                        ))
                    }
                };
                Ok(Parsed {
                    kind: ConnectionKind::StorageAccount,
                    name: parse_name(&name)?,
                    url: required("url", &url, "such as https://<account>.blob.core.windows.net")?
                        .trim_end_matches('/')
                        .to_owned(),
                    user: None,
                    container: Some(required("container", &container, "the container holding the cloud VM's disks")?),
                    authority: None,
                    credential_kind,
                    secret,
                    thumbprint: parse_thumbprint(thumbprint.as_deref())?,
                })
            }
            NewConnection::AzureSubscription {
                name,
                tenant,
                client_id,
                client_secret,
                subscription,
                resource_group,
                management_url,
                authority_url,
                thumbprint,
            } => {
                if client_secret.is_empty() {
                    return Err(ConnectionError::Invalid(
                        "client_secret: required; a client secret of the app registration".into(),
                    ));
                }
                let tenant = required("tenant", &tenant, "the directory (tenant) id of the app registration")?;
                let subscription = required("subscription", &subscription, "the subscription id of the cloud VMs")?;
                let resource_group =
                    required("resource_group", &resource_group, "the resource group holding the cloud VMs")?;
                let endpoint = |v: Option<String>, default: &str| {
                    v.map(|u| u.trim().trim_end_matches('/').to_owned())
                        .filter(|u| !u.is_empty())
                        .unwrap_or_else(|| default.to_owned())
                };
                let management = endpoint(management_url, AZURE_MANAGEMENT);
                let authority = endpoint(authority_url, AZURE_AUTHORITY);
                Ok(Parsed {
                    kind: ConnectionKind::AzureSubscription,
                    name: parse_name(&name)?,
                    url: format!("{management}/subscriptions/{subscription}/resourceGroups/{resource_group}"),
                    user: Some(required(
                        "client_id",
                        &client_id,
                        "the application (client) id of the app registration",
                    )?),
                    container: None,
                    authority: Some(format!("{authority}/{tenant}")),
                    credential_kind: "client-secret",
                    secret: client_secret,
                    thumbprint: parse_thumbprint(thumbprint.as_deref())?,
                })
            }
        }
    }
}

/// The ARM settings of an Azure-subscription connection, from its saved address and authority.
fn compute_config(p: &Parsed) -> Result<ComputeConfig, ConnectorError> {
    let bad = |detail: String| ConnectorError::Protocol {
        service: "Azure Resource Manager",
        operation: "connect".into(),
        detail,
    };
    let (management, scope) =
        p.url.split_once("/subscriptions/").ok_or_else(|| bad(format!("{} names no subscription", p.url)))?;
    let (subscription, resource_group) =
        scope.split_once("/resourceGroups/").ok_or_else(|| bad(format!("{} names no resource group", p.url)))?;
    let authority = p.authority.clone().unwrap_or_default();
    let (authority, tenant) = authority.rsplit_once('/').ok_or_else(|| bad(format!("{authority} names no tenant")))?;
    Ok(ComputeConfig {
        management: management.to_owned(),
        authority: authority.to_owned(),
        tenant: tenant.to_owned(),
        client_id: p.user.clone().unwrap_or_default(),
        client_secret: p.secret.clone(),
        subscription: subscription.to_owned(),
        resource_group: resource_group.to_owned(),
        thumbprint: p.thumbprint.clone(),
    })
}

/// Checks a connection against its API: the snapshot on success.
async fn check(p: &Parsed) -> Result<Snapshot, ConnectorError> {
    match p.kind {
        ConnectionKind::Vcenter => {
            let vc = Vcenter::connect(VcenterConfig {
                url: p.url.clone(),
                user: p.user.clone().unwrap_or_default(),
                password: p.secret.clone(),
                thumbprint: p.thumbprint.clone(),
            })
            .await?;
            let inventory = vc.inventory().await;
            let about = vc.about().clone();
            // A session left open counts against vCenter's limit until it times out.
            let _ = vc.logout().await;
            Ok(snapshot_of(&about, inventory?))
        }
        ConnectionKind::StorageAccount => {
            let container = storage(p)?;
            container.probe().await?;
            let mut blobs = container.list().await?;
            let blob_count = blobs.len();
            blobs.truncate(BLOBS_KEPT);
            Ok(Snapshot::StorageAccount { account: container.account().to_owned(), blobs, blob_count })
        }
        ConnectionKind::AzureSubscription => {
            let config = compute_config(p)?;
            let (subscription, resource_group) = (config.subscription.clone(), config.resource_group.clone());
            let vms = Compute::new(config)?.list_vms().await?;
            Ok(Snapshot::AzureSubscription {
                subscription,
                resource_group,
                vms: vms.iter().map(AzureVmView::of).collect(),
            })
        }
    }
}

fn storage(p: &Parsed) -> Result<Container, ConnectorError> {
    Container::new(StorageConfig {
        url: p.url.clone(),
        container: p.container.clone().unwrap_or_default(),
        credential: if p.credential_kind == "sas" {
            Credential::Sas(p.secret.clone())
        } else {
            Credential::SharedKey(p.secret.clone())
        },
        thumbprint: p.thumbprint.clone(),
    })
}

#[derive(Clone)]
pub struct Connections {
    db: Db,
    sealer: Arc<Sealer>,
}

impl std::fmt::Debug for Connections {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Connections")
    }
}

impl Connections {
    pub fn new(db: Db, sealer: Sealer) -> Connections {
        Connections { db, sealer: Arc::new(sealer) }
    }

    /// The data dir's sealer, for other secrets kept in the vault (webhooks' signing secrets).
    pub(crate) fn sealer(&self) -> Arc<Sealer> {
        self.sealer.clone()
    }

    /// Checks the connection against its API, then saves it with its credential sealed.
    pub async fn add(&self, new: NewConnection, by: &str, now: Millis) -> Result<Connection, ConnectionError> {
        let p = new.parse()?;
        let taken: Option<(String,)> = sqlx::query_as("select id from site_connections where name = $1")
            .bind(&p.name)
            .fetch_optional(&self.db.pool)
            .await?;
        if taken.is_some() {
            return Err(ConnectionError::NameTaken(p.name));
        }
        let snapshot = check(&p).await?;
        let id = format!("con-{}", &crate::accounts::random_secret()[..16]);
        let sealed = self.sealer.seal(&id, &p.secret)?;
        let res = sqlx::query(
            "insert into site_connections (id, kind, name, url, user_name, container, credential_kind, secret_sealed, \
             thumbprint, created_at, created_by, checked_at, last_ok_at, last_error, inventory, authority) \
             values ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, null, $14, $15)",
        )
        .bind(&id)
        .bind(p.kind.as_str())
        .bind(&p.name)
        .bind(&p.url)
        .bind(&p.user)
        .bind(&p.container)
        .bind(p.credential_kind)
        .bind(&sealed)
        .bind(p.thumbprint.as_ref().map(|t| t.to_string()))
        .bind(now as i64)
        .bind(by)
        .bind(now as i64)
        .bind(now as i64)
        .bind(serde_json::to_string(&snapshot).unwrap_or_default())
        .bind(&p.authority)
        .execute(&self.db.pool)
        .await;
        match res {
            Ok(_) => self.get(&id).await,
            Err(e) if db::unique_violation(&e) == Some(Unique::ConnectionName) => {
                Err(ConnectionError::NameTaken(p.name))
            }
            Err(e) => Err(e.into()),
        }
    }

    pub async fn list(&self) -> Result<Vec<Connection>, ConnectionError> {
        let sql = format!("select {COLUMNS} from site_connections order by kind, name");
        let rows: Vec<ConnectionRow> = sqlx::query_as(&sql).fetch_all(&self.db.pool).await?;
        Ok(rows.iter().map(ConnectionRow::view).collect())
    }

    async fn row(&self, id_or_name: &str) -> Result<ConnectionRow, ConnectionError> {
        let sql = format!("select {COLUMNS} from site_connections where id = $1 or name = $1");
        let row: Option<ConnectionRow> = sqlx::query_as(&sql).bind(id_or_name).fetch_optional(&self.db.pool).await?;
        row.ok_or_else(|| ConnectionError::NotFound(id_or_name.to_owned()))
    }

    /// A saved connection as it was entered, its credential unsealed: what a check or a client is made from.
    fn parsed(&self, row: &ConnectionRow) -> Result<Parsed, ConnectionError> {
        Ok(Parsed {
            kind: row.view().kind,
            name: row.name.clone(),
            url: row.url.clone(),
            user: row.user_name.clone(),
            container: row.container.clone(),
            authority: row.authority.clone(),
            credential_kind: match row.credential_kind.as_str() {
                "sas" => "sas",
                "shared-key" => "shared-key",
                "client-secret" => "client-secret",
                _ => "password",
            },
            secret: self.sealer.open(&row.id, &row.secret_sealed)?,
            thumbprint: row.thumbprint.as_deref().and_then(|t| Thumbprint::parse(t).ok()),
        })
    }

    pub async fn get(&self, id_or_name: &str) -> Result<Connection, ConnectionError> {
        Ok(self.row(id_or_name).await?.view())
    }

    /// Checks a saved connection again: a new inventory, or the cause of the failure beside the last good one.
    pub async fn refresh(&self, id_or_name: &str, now: Millis) -> Result<Connection, ConnectionError> {
        let row = self.row(id_or_name).await?;
        let p = self.parsed(&row)?;
        match check(&p).await {
            Ok(snapshot) => {
                sqlx::query(
                    "update site_connections set checked_at = $2, last_ok_at = $2, last_error = null, inventory = $3 \
                     where id = $1",
                )
                .bind(&row.id)
                .bind(now as i64)
                .bind(serde_json::to_string(&snapshot).unwrap_or_default())
                .execute(&self.db.pool)
                .await?;
            }
            Err(e) => {
                tracing::warn!(connection = %row.name, error = %e, "a site connection's check failed");
                sqlx::query("update site_connections set checked_at = $2, last_error = $3 where id = $1")
                    .bind(&row.id)
                    .bind(now as i64)
                    .bind(e.to_string())
                    .execute(&self.db.pool)
                    .await?;
            }
        }
        self.get(&row.id).await
    }

    /// Checks again every connection whose last check is older than [`CHECK_EVERY_MS`]; returns how many. A node
    /// claims each one by moving its `checked_at` first (compare-and-set), so nodes sharing the vault do not check
    /// the same connection twice in one period.
    pub async fn check_due(&self, now: Millis) -> Result<usize, ConnectionError> {
        let due: Vec<(String, i64)> =
            sqlx::query_as("select id, checked_at from site_connections where checked_at <= $1")
                .bind(now.saturating_sub(CHECK_EVERY_MS) as i64)
                .fetch_all(&self.db.pool)
                .await?;
        let mut checked = 0;
        for (id, at) in due {
            let claim = sqlx::query("update site_connections set checked_at = $2 where id = $1 and checked_at = $3")
                .bind(&id)
                .bind(now as i64)
                .bind(at)
                .execute(&self.db.pool)
                .await?;
            if claim.rows_affected() == 1 {
                self.refresh(&id, now).await?;
                checked += 1;
            }
        }
        Ok(checked)
    }

    /// The vCenter connections with the inventory of their last good check, and whether the last check succeeded.
    pub async fn vcenters(&self) -> Result<Vec<(Connection, InventoryView)>, ConnectionError> {
        Ok(self
            .list()
            .await?
            .into_iter()
            .filter_map(|c| match c.inventory.clone() {
                Some(Snapshot::Vcenter { inventory, .. }) => Some((c, inventory)),
                _ => None,
            })
            .collect())
    }

    /// A logged-in session with a connected vCenter, for a job's steps on the primary site.
    pub async fn vcenter_session(&self, id_or_name: &str) -> Result<Vcenter, ConnectionError> {
        let row = self.row(id_or_name).await?;
        if row.kind != ConnectionKind::Vcenter.as_str() {
            return Err(ConnectionError::Invalid(format!("{} is a storage account, not a vCenter", row.name)));
        }
        Ok(Vcenter::connect(VcenterConfig {
            url: row.url.clone(),
            user: row.user_name.clone().unwrap_or_default(),
            password: self.sealer.open(&row.id, &row.secret_sealed)?,
            thumbprint: row.thumbprint.as_deref().and_then(|t| Thumbprint::parse(t).ok()),
        })
        .await?)
    }

    /// The storage-account connections with the blobs their last good check listed (at most [`BLOBS_KEPT`]) and
    /// how many there were.
    pub async fn storage_accounts(&self) -> Result<Vec<(Connection, Vec<String>, usize)>, ConnectionError> {
        Ok(self
            .list()
            .await?
            .into_iter()
            .filter_map(|c| match c.inventory.clone() {
                Some(Snapshot::StorageAccount { blobs, blob_count, .. }) => Some((c, blobs, blob_count)),
                _ => None,
            })
            .collect())
    }

    /// A client for a storage account's container, for a job's steps on the recovery site.
    pub async fn storage_container(&self, id_or_name: &str) -> Result<Container, ConnectionError> {
        let row = self.row(id_or_name).await?;
        if row.kind != ConnectionKind::StorageAccount.as_str() {
            return Err(ConnectionError::Invalid(format!("{} is a vCenter, not a storage account", row.name)));
        }
        Ok(storage(&self.parsed(&row)?)?)
    }

    /// A client for an Azure subscription's resource group, for a job's steps on the recovery site.
    pub async fn azure_compute(&self, id_or_name: &str) -> Result<Compute, ConnectionError> {
        let row = self.row(id_or_name).await?;
        if row.kind != ConnectionKind::AzureSubscription.as_str() {
            return Err(ConnectionError::Invalid(format!("{} is not an Azure subscription", row.name)));
        }
        Ok(Compute::new(compute_config(&self.parsed(&row)?)?)?)
    }

    /// The Azure-subscription connections with the resource group and VMs of their last good check.
    pub async fn azure_subscriptions(&self) -> Result<Vec<(Connection, String, Vec<AzureVmView>)>, ConnectionError> {
        Ok(self
            .list()
            .await?
            .into_iter()
            .filter_map(|c| match c.inventory.clone() {
                Some(Snapshot::AzureSubscription { resource_group, vms, .. }) => Some((c, resource_group, vms)),
                _ => None,
            })
            .collect())
    }

    /// Forgets a connection and its sealed credential.
    pub async fn remove(&self, id_or_name: &str) -> Result<Connection, ConnectionError> {
        let row = self.row(id_or_name).await?;
        sqlx::query("delete from site_connections where id = $1").bind(&row.id).execute(&self.db.pool).await?;
        Ok(row.view())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_sealed_credential_opens_only_on_its_own_row_and_with_its_own_key() {
        let dir = tempfile::tempdir().unwrap();
        let s = Sealer::load_or_create(dir.path()).unwrap();
        let sealed = s.seal("con-1", "hunter2").unwrap();
        assert!(!sealed.contains("hunter2"));
        assert_eq!(s.open("con-1", &sealed).unwrap(), "hunter2");
        assert!(matches!(s.open("con-2", &sealed), Err(ConnectionError::Sealed(_))));
        // The same key after a restart; another data dir's key opens nothing.
        assert_eq!(Sealer::load_or_create(dir.path()).unwrap().open("con-1", &sealed).unwrap(), "hunter2");
        let other = tempfile::tempdir().unwrap();
        assert!(Sealer::load_or_create(other.path()).unwrap().open("con-1", &sealed).is_err());
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(dir.path().join(KEY_FILE)).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
    }

    #[test]
    fn what_an_administrator_enters_is_checked_field_by_field() {
        let v = |json: serde_json::Value| serde_json::from_value::<NewConnection>(json);
        let e = v(
            serde_json::json!({"kind": "vcenter", "name": "vc", "url": "https://vc", "user": "u", "password": "p", "pasword": "x"}),
        );
        assert!(e.err().unwrap().to_string().contains("pasword"));
        let no_secret = v(serde_json::json!({"kind": "storage-account", "name": "az", "url": "https://a.blob.core.windows.net", "container": "disks"})).unwrap();
        assert!(no_secret.parse().err().unwrap().to_string().contains("exactly one"));
        let http =
            v(serde_json::json!({"kind": "vcenter", "name": "vc", "url": "http://vc", "user": "u", "password": "p"}))
                .unwrap();
        assert!(matches!(http.parse(), Err(ConnectionError::Connector(ConnectorError::NotHttps { .. }))));
        let bad_name = v(
            serde_json::json!({"kind": "vcenter", "name": "vc/1", "url": "https://vc", "user": "u", "password": "p"}),
        )
        .unwrap();
        assert!(bad_name.parse().err().unwrap().to_string().starts_with("name:"));
        let bad_tp = v(serde_json::json!({"kind": "vcenter", "name": "vc", "url": "https://vc", "user": "u", "password": "p", "thumbprint": "12:34"})).unwrap();
        assert!(bad_tp.parse().err().unwrap().to_string().starts_with("thumbprint:"));
        let secret = v(serde_json::json!({"kind": "vcenter", "name": "vc", "url": "https://vc", "user": "u", "password": "hunter2"})).unwrap();
        assert!(!format!("{secret:?}").contains("hunter2"));
    }
}
