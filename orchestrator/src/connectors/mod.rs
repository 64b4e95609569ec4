//! Connectors: the real APIs of the two sites, spoken over HTTPS.
//!
//! * [`vsphere`]: the primary site's vCenter through the vim25 SOAP API (sessions, the property collector for the
//!   inventory, tasks and their errors).
//! * [`azure_blob`]: the recovery site's disks as page blobs holding fixed VHDs, through the Azure Storage REST API
//!   (Shared Key or SAS).
//!
//! Both are small hand-written clients on `reqwest` rather than generated SDKs: `vim_rs` speaks the VI/JSON API that
//! vCenter 8.0 U1 added (govmomi's simulator in Debian serves SOAP only, and its generated types compile for minutes
//! on two cores), and the official `azure_storage_blob` crate pulls a second HTTP stack and an async runtime
//! abstraction for the four page-blob calls we need. Each client turns what the service answers into a
//! [`ConnectorError`] that names the cause and what to do; credentials never appear in one.

pub mod azure_blob;
pub mod azure_compute;
pub(crate) mod tls;
pub mod vsphere;
mod xml;

pub use tls::{provider, Thumbprint};

/// What went wrong talking to a site's API, in the words an administrator acts on. No variant carries a password,
/// key or SAS token.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConnectorError {
    #[error("{service} at {url} cannot be reached ({cause}). Check the address and port, and that this server can reach it through firewalls and DNS.")]
    Unreachable { service: &'static str, url: String, cause: String },
    #[error("{service} refused the credentials of {account}. Check the user name and password (or account key), and that the account is neither locked nor expired.")]
    Credentials { service: &'static str, account: String },
    #[error("{url} presents a certificate with SHA-1 thumbprint {seen}{expected}. Compare it with the thumbprint shown on the server's console; if it is the right server, enter this thumbprint.")]
    Thumbprint { url: String, seen: String, expected: String },
    #[error("{url} requires HTTPS. Use an https:// address: credentials are never sent in clear.")]
    NotHttps { url: String },
    #[error("the shared access signature for {account} has expired (it was valid until {expiry}). Create a new SAS with read, write, create, delete and list permissions and update the storage account.")]
    SasExpired { account: String, expiry: String },
    #[error("the shared access signature for {account} does not allow {operation}. Create a SAS with read, write, create, delete and list permissions on blobs and containers.")]
    SasPermission { account: String, operation: String },
    #[error("{what} has an active lease held by another process, so it cannot be {verb}. Find what holds the lease (a running VM or copy), stop it, or break the lease in the storage account, then retry.")]
    LeaseHeld { what: String, verb: &'static str },
    #[error("{what} does not exist{hint}.")]
    NotFound { what: String, hint: String },
    #[error("{service} refused {operation}: {message}")]
    Refused { service: &'static str, operation: String, fault: String, message: String },
    #[error("the local disk {path} could not be {verb}: {cause}. Check the master target's or process server's disk space and permissions.")]
    LocalDisk { path: String, verb: &'static str, cause: String },
    #[error("{service} answered {operation} with something Homeward cannot read ({detail}). Check that the address is the service's API endpoint.")]
    Protocol { service: &'static str, operation: String, detail: String },
}

impl ConnectorError {
    /// Whether the cause is in what the administrator entered (address, credentials, thumbprint, SAS) rather than
    /// in the service's state: the API answers those with a 4xx when a connection is added.
    pub fn is_configuration(&self) -> bool {
        matches!(
            self,
            ConnectorError::Unreachable { .. }
                | ConnectorError::Credentials { .. }
                | ConnectorError::Thumbprint { .. }
                | ConnectorError::NotHttps { .. }
                | ConnectorError::SasExpired { .. }
                | ConnectorError::SasPermission { .. }
        )
    }
}

/// The HTTP client every connector uses: TLS through rustls (ring), bounded connect and request times.
fn http_client(tls: rustls::ClientConfig) -> reqwest::Client {
    reqwest::Client::builder()
        .use_preconfigured_tls(tls)
        .connect_timeout(std::time::Duration::from_secs(10))
        .timeout(std::time::Duration::from_secs(120))
        .build()
        .expect("a reqwest client with a preconfigured rustls config always builds")
}

/// The cause of a transport error without the URL's query (a SAS token lives there).
fn transport_cause(e: &reqwest::Error) -> String {
    let mut cause = if e.is_timeout() {
        "timed out".to_owned()
    } else if e.is_connect() {
        "connection failed".to_owned()
    } else {
        "the request failed".to_owned()
    };
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        let text = s.to_string();
        if !text.contains('?') {
            cause = format!("{cause}: {text}");
        }
        source = s.source();
    }
    cause
}
