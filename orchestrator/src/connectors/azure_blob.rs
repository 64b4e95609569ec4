//! The recovery site's disks: page blobs holding fixed VHDs (Azure's managed-disk format: the data, then a 512-byte
//! footer), through the Azure Storage REST API. Requests are signed with the account's Shared Key, or carry a SAS.
//!
//! Reads of a whole disk ask Get Page Ranges first, so only written pages cross the network; writes go in aligned
//! Put Page calls of at most 4 MiB, and all-zero pages are skipped on a new blob (a new page blob reads as zeros).

use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use base64::Engine as _;
use roxmltree::Document;

use super::tls::{public_or_pinned, Seen};
use super::xml::{children, find, text};
use super::{http_client, transport_cause, ConnectorError, Thumbprint};

const SERVICE: &str = "Azure Storage";
/// The REST API version every request asks for (page ranges with continuation markers need 2020-10-02 or later).
const API_VERSION: &str = "2021-12-02";
/// Page blobs are written in 512-byte pages.
pub const PAGE: u64 = 512;
/// The largest range one Put Page call may carry.
pub const MAX_PUT: u64 = 4 << 20;

/// How the requests are authorised.
#[derive(Clone)]
pub enum Credential {
    /// The account's access key (base64), signing every request.
    SharedKey(String),
    /// A shared access signature: the query string Azure gives (`sv=…&se=…&sig=…`), without the leading `?`.
    Sas(String),
}

/// A container in a storage account, where the cloud VM's disks live as page blobs.
#[derive(Clone)]
pub struct StorageConfig {
    /// `https://<account>.blob.core.windows.net`, or an emulator's `https://127.0.0.1:10000/<account>`.
    pub url: String,
    pub container: String,
    pub credential: Credential,
    /// Trust exactly this certificate instead of the system's roots (an emulator or a private endpoint).
    pub thumbprint: Option<Thumbprint>,
}

impl std::fmt::Debug for StorageConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let kind = match self.credential {
            Credential::SharedKey(_) => "shared key <hidden>",
            Credential::Sas(_) => "SAS <hidden>",
        };
        f.debug_struct("StorageConfig")
            .field("url", &self.url)
            .field("container", &self.container)
            .field("credential", &kind)
            .field("thumbprint", &self.thumbprint)
            .finish()
    }
}

/// A blob's size and whether something holds a lease on it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BlobProperties {
    pub size: u64,
    pub leased: bool,
    /// Changes with every write to the blob: a copy taken at one ETag is still the blob while it is unchanged.
    pub etag: String,
}

/// A client for one container.
pub struct Container {
    http: reqwest::Client,
    /// `https://host[:port][/account]`, no trailing slash.
    base: String,
    account: String,
    /// The path part of `base` (`/account` on an emulator, empty on Azure), for the canonicalised resource.
    base_path: String,
    container: String,
    credential: Credential,
    key: Option<Vec<u8>>,
    seen: Seen,
    thumbprint: Option<Thumbprint>,
}

impl std::fmt::Debug for Container {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Container").field("base", &self.base).field("container", &self.container).finish()
    }
}

/// One failed answer: HTTP status, `x-ms-error-code`, and the message from the XML body.
struct Failure {
    status: u16,
    code: String,
    message: String,
}

impl Container {
    /// Checks the address and credential locally; [`Container::probe`] checks them against the service.
    pub fn new(config: StorageConfig) -> Result<Container, ConnectorError> {
        let url = config.url.trim().trim_end_matches('/').to_owned();
        let Some(rest) = url.strip_prefix("https://") else {
            return Err(ConnectorError::NotHttps { url });
        };
        let bad = |detail: String| ConnectorError::Protocol { service: SERVICE, operation: "connect".into(), detail };
        if rest.is_empty() || rest.contains(['?', '#', '@', ' ']) {
            return Err(bad(format!("{url:?} is not a blob endpoint such as https://<account>.blob.core.windows.net")));
        }
        let (host, path) = rest.split_once('/').map(|(h, p)| (h, format!("/{p}"))).unwrap_or((rest, String::new()));
        let account = match host.split_once(".blob.") {
            Some((name, _)) if path.is_empty() => name.to_owned(),
            _ => path.trim_start_matches('/').split('/').next().unwrap_or("").to_owned(),
        };
        if account.is_empty() {
            return Err(bad(format!(
                "{url:?} names no storage account: use https://<account>.blob.core.windows.net, or the emulator's \
                 https://host:port/<account>"
            )));
        }
        let container = config.container.trim().to_owned();
        let valid = (3..=63).contains(&container.len())
            && container.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
            && !container.starts_with('-')
            && !container.contains("--");
        if !valid {
            return Err(bad(format!(
                "{container:?} is not a container name: 3 to 63 lower-case letters, digits and single hyphens"
            )));
        }
        let key = match &config.credential {
            Credential::SharedKey(k) => Some(
                base64::engine::general_purpose::STANDARD
                    .decode(k.trim())
                    .map_err(|_| bad("the account key is not base64 (copy it whole from Access keys)".into()))?,
            ),
            Credential::Sas(sas) => {
                if !sas.contains("sig=") {
                    return Err(bad("the SAS has no signature (sig=…): copy the whole token".into()));
                }
                None
            }
        };
        let credential = match config.credential {
            Credential::Sas(s) => Credential::Sas(s.trim_start_matches('?').to_owned()),
            other => other,
        };
        let seen: Seen = Arc::new(Mutex::new(None));
        Ok(Container {
            http: http_client(public_or_pinned(config.thumbprint.clone(), seen.clone())),
            base: url,
            account,
            base_path: path,
            container,
            credential,
            key,
            seen,
            thumbprint: config.thumbprint,
        })
    }

    pub fn account(&self) -> &str {
        &self.account
    }

    /// The container's settings for a client that is to use `sas` instead of this one's credential.
    pub fn config_with_sas(&self, sas: String) -> StorageConfig {
        StorageConfig {
            url: self.base.clone(),
            container: self.container.clone(),
            credential: Credential::Sas(sas),
            thumbprint: self.thumbprint.clone(),
        }
    }

    /// A shared access signature for one blob of this container, with `permissions` (of `rcwd`) until `expiry`, over
    /// HTTPS only: what a site agent is handed so that it reaches that blob and nothing else. A container reached
    /// with a SAS hands that SAS on (it cannot sign a narrower one).
    /// With `snapshot`, the SAS reaches only that snapshot of the blob.
    pub fn blob_sas(
        &self,
        blob: &str,
        snapshot: Option<&str>,
        permissions: &str,
        expiry: time::OffsetDateTime,
    ) -> String {
        let Some(key) = &self.key else {
            return match &self.credential {
                Credential::Sas(sas) => sas.clone(),
                Credential::SharedKey(_) => String::new(),
            };
        };
        let expiry = expiry.to_offset(time::UtcOffset::UTC).replace_nanosecond(0).unwrap_or(expiry);
        let se = expiry.format(&time::format_description::well_known::Rfc3339).unwrap_or_default();
        let resource = format!("/blob/{}/{}/{blob}", self.account, self.container);
        // The service SAS's string to sign (version 2020-12-06 and later): permissions, start, expiry, resource,
        // identifier, IP, protocol, version, resource type, snapshot time, encryption scope, five response headers.
        let kind = if snapshot.is_some() { "bs" } else { "b" };
        let at = snapshot.unwrap_or("");
        let fields = [permissions, "", &se, &resource, "", "", "https", API_VERSION, kind, at, "", "", "", "", "", ""];
        let tag = ring::hmac::sign(&ring::hmac::Key::new(ring::hmac::HMAC_SHA256, key), fields.join("\n").as_bytes());
        let sig = base64::engine::general_purpose::STANDARD.encode(tag.as_ref());
        format!(
            "sv={API_VERSION}&sr={kind}&sp={permissions}&se={}&spr=https&sig={}",
            encode_query(&se),
            encode_query(&sig)
        )
    }

    /// Lists at most one blob: proves the address, the credential (and a SAS's list permission) and the container.
    pub async fn probe(&self) -> Result<(), ConnectorError> {
        self.send(
            reqwest::Method::GET,
            None,
            &[("comp", "list"), ("maxresults", "1"), ("restype", "container")],
            &[],
            None,
            "list the container",
        )
        .await
        .map(|_| ())
    }

    /// Creates the container (an administrator's first step for a new storage account).
    pub async fn create_container(&self) -> Result<(), ConnectorError> {
        self.send(
            reqwest::Method::PUT,
            None,
            &[("restype", "container")],
            &[],
            Some(Vec::new()),
            "create the container",
        )
        .await
        .map(|_| ())
    }

    /// The names of the container's blobs.
    pub async fn list(&self) -> Result<Vec<String>, ConnectorError> {
        let mut names = Vec::new();
        let mut marker = String::new();
        loop {
            let mut query = vec![("comp", "list"), ("restype", "container")];
            if !marker.is_empty() {
                query.push(("marker", marker.as_str()));
            }
            let body = self.send(reqwest::Method::GET, None, &query, &[], None, "list the container").await?.text;
            let doc = xml(&body, "list the container")?;
            names.extend(
                doc.descendants()
                    .filter(|n| n.is_element() && n.tag_name().name() == "Blob")
                    .map(|b| text(b, "Name").to_owned()),
            );
            marker = find(doc.root(), "NextMarker").and_then(|n| n.text()).unwrap_or("").to_owned();
            if marker.is_empty() {
                return Ok(names);
            }
        }
    }

    /// Creates (or replaces) an empty page blob of `size` bytes, a multiple of 512.
    pub async fn create_page_blob(&self, blob: &str, size: u64) -> Result<(), ConnectorError> {
        if !size.is_multiple_of(PAGE) {
            return Err(ConnectorError::Refused {
                service: SERVICE,
                operation: format!("create {blob}"),
                fault: "InvalidSize".into(),
                message: format!("a page blob's size is a multiple of 512 bytes; {size} is not"),
            });
        }
        let size = size.to_string();
        self.send(
            reqwest::Method::PUT,
            Some(blob),
            &[],
            &[("x-ms-blob-type", "PageBlob"), ("x-ms-blob-content-length", &size)],
            Some(Vec::new()),
            "create the page blob",
        )
        .await
        .map(|_| ())
    }

    /// Writes `data` at `offset`; both 512-aligned, `data` at most 4 MiB.
    pub async fn put_pages(&self, blob: &str, offset: u64, data: Vec<u8>) -> Result<(), ConnectorError> {
        let len = data.len() as u64;
        if !offset.is_multiple_of(PAGE) || !len.is_multiple_of(PAGE) || len == 0 || len > MAX_PUT {
            return Err(unaligned(blob, "write pages", offset, len));
        }
        let range = format!("bytes={}-{}", offset, offset + len - 1);
        self.send(
            reqwest::Method::PUT,
            Some(blob),
            &[("comp", "page")],
            &[("x-ms-page-write", "update"), ("x-ms-range", &range)],
            Some(data),
            "write pages",
        )
        .await
        .map(|_| ())
    }

    /// Returns `len` bytes at `offset` to zeros (and to unallocated, so they no longer count as written).
    pub async fn clear_pages(&self, blob: &str, offset: u64, len: u64) -> Result<(), ConnectorError> {
        if !offset.is_multiple_of(PAGE) || !len.is_multiple_of(PAGE) || len == 0 {
            return Err(unaligned(blob, "clear pages", offset, len));
        }
        let range = format!("bytes={}-{}", offset, offset + len - 1);
        self.send(
            reqwest::Method::PUT,
            Some(blob),
            &[("comp", "page")],
            &[("x-ms-page-write", "clear"), ("x-ms-range", &range)],
            Some(Vec::new()),
            "clear pages",
        )
        .await
        .map(|_| ())
    }

    /// The written ranges of a page blob, as `(offset, length)`, in order.
    pub async fn page_ranges(&self, blob: &str) -> Result<Vec<(u64, u64)>, ConnectorError> {
        self.page_ranges_at(blob, None).await
    }

    /// The written ranges of a page blob, or of one of its snapshots.
    pub async fn page_ranges_at(&self, blob: &str, snapshot: Option<&str>) -> Result<Vec<(u64, u64)>, ConnectorError> {
        let mut ranges = Vec::new();
        let mut marker = String::new();
        loop {
            let mut query = vec![("comp", "pagelist")];
            if let Some(at) = snapshot {
                query.push(("snapshot", at));
            }
            if !marker.is_empty() {
                query.push(("marker", marker.as_str()));
            }
            let body = self.send(reqwest::Method::GET, Some(blob), &query, &[], None, "get page ranges").await?.text;
            let doc = xml(&body, "get page ranges")?;
            if let Some(list) = find(doc.root(), "PageList") {
                for r in children(list, "PageRange") {
                    let start: u64 = text(r, "Start").parse().unwrap_or(0);
                    let end: u64 = text(r, "End").parse().unwrap_or(0);
                    if end >= start {
                        ranges.push((start, end - start + 1));
                    }
                }
            }
            marker = find(doc.root(), "NextMarker").and_then(|n| n.text()).unwrap_or("").to_owned();
            if marker.is_empty() {
                return Ok(ranges);
            }
        }
    }

    /// `len` bytes at `offset` (a ranged GET).
    pub async fn read(&self, blob: &str, offset: u64, len: u64) -> Result<Vec<u8>, ConnectorError> {
        self.read_at(blob, None, offset, len).await
    }

    /// `len` bytes at `offset` of a blob, or of one of its snapshots.
    pub async fn read_at(
        &self,
        blob: &str,
        snapshot: Option<&str>,
        offset: u64,
        len: u64,
    ) -> Result<Vec<u8>, ConnectorError> {
        if len == 0 {
            return Ok(Vec::new());
        }
        let range = format!("bytes={}-{}", offset, offset + len - 1);
        let query: Vec<(&str, &str)> = snapshot.map(|at| ("snapshot", at)).into_iter().collect();
        let answer = self
            .send(reqwest::Method::GET, Some(blob), &query, &[("x-ms-range", &range)], None, "read the blob")
            .await?;
        if answer.bytes.len() as u64 != len {
            return Err(ConnectorError::Protocol {
                service: SERVICE,
                operation: format!("read {blob}"),
                detail: format!("asked for {len} bytes at {offset}, got {}", answer.bytes.len()),
            });
        }
        Ok(answer.bytes)
    }

    pub async fn properties(&self, blob: &str) -> Result<BlobProperties, ConnectorError> {
        let answer = self.send(reqwest::Method::HEAD, Some(blob), &[], &[], None, "read the blob's properties").await?;
        let header = |name: &str| answer.headers.get(name).and_then(|v| v.to_str().ok()).unwrap_or("").to_owned();
        Ok(BlobProperties {
            size: header("content-length").parse().unwrap_or(0),
            leased: header("x-ms-lease-state") == "leased",
            etag: header("etag"),
        })
    }

    /// Takes a read-only snapshot of a blob: one instant of a disk the cloud VM may still be writing. Returns the
    /// snapshot's timestamp, which names it.
    pub async fn snapshot(&self, blob: &str) -> Result<String, ConnectorError> {
        let answer = self
            .send(reqwest::Method::PUT, Some(blob), &[("comp", "snapshot")], &[], Some(Vec::new()), "snapshot the blob")
            .await?;
        match answer.headers.get("x-ms-snapshot").and_then(|v| v.to_str().ok()) {
            Some(at) if !at.is_empty() => Ok(at.to_owned()),
            _ => Err(ConnectorError::Protocol {
                service: SERVICE,
                operation: format!("snapshot {blob}"),
                detail: "the answer names no snapshot (x-ms-snapshot)".into(),
            }),
        }
    }

    /// Deletes one snapshot of a blob, leaving the blob.
    pub async fn delete_snapshot(&self, blob: &str, snapshot: &str) -> Result<(), ConnectorError> {
        self.send(reqwest::Method::DELETE, Some(blob), &[("snapshot", snapshot)], &[], None, "delete the snapshot")
            .await
            .map(|_| ())
    }

    /// Deletes a blob and its snapshots; a lease held by someone else refuses it.
    pub async fn delete(&self, blob: &str) -> Result<(), ConnectorError> {
        self.send(
            reqwest::Method::DELETE,
            Some(blob),
            &[],
            &[("x-ms-delete-snapshots", "include")],
            None,
            "delete the blob",
        )
        .await
        .map(|_| ())
    }

    /// Takes a lease on a blob for `seconds` (15–60) or forever (-1); the lease id is returned.
    pub async fn acquire_lease(&self, blob: &str, seconds: i32) -> Result<String, ConnectorError> {
        let duration = seconds.to_string();
        let answer = self
            .send(
                reqwest::Method::PUT,
                Some(blob),
                &[("comp", "lease")],
                &[("x-ms-lease-action", "acquire"), ("x-ms-lease-duration", &duration)],
                Some(Vec::new()),
                "lease the blob",
            )
            .await?;
        Ok(answer.headers.get("x-ms-lease-id").and_then(|v| v.to_str().ok()).unwrap_or("").to_owned())
    }

    /// Copies a local fixed VHD (or any file of whole 512-byte pages) into a new page blob of the same size. Pages
    /// that are all zeros are not sent: a new page blob reads as zeros. Returns the bytes sent.
    pub async fn upload_file(&self, blob: &str, path: &Path) -> Result<u64, ConnectorError> {
        let local = |verb: &'static str, e: std::io::Error| ConnectorError::LocalDisk {
            path: path.display().to_string(),
            verb,
            cause: e.to_string(),
        };
        let file = Arc::new(std::fs::File::open(path).map_err(|e| local("read", e))?);
        let size = file.metadata().map_err(|e| local("read", e))?.len();
        if size % PAGE != 0 {
            return Err(local(
                "read",
                std::io::Error::other(format!("{size} bytes is not a whole number of 512-byte pages")),
            ));
        }
        self.create_page_blob(blob, size).await?;
        let mut sent = 0;
        let mut offset = 0;
        while offset < size {
            let len = MAX_PUT.min(size - offset);
            let window = {
                let file = file.clone();
                // File reads stay off the async runtime's threads.
                tokio::task::spawn_blocking(move || {
                    let mut buf = vec![0u8; len as usize];
                    file.read_exact_at(&mut buf, offset).map(|_| buf)
                })
                .await
                .map_err(|e| local("read", std::io::Error::other(e.to_string())))?
                .map_err(|e| local("read", e))?
            };
            for (start, end) in written_runs(&window) {
                self.put_pages(blob, offset + start as u64, window[start..end].to_vec()).await?;
                sent += (end - start) as u64;
            }
            offset += len;
        }
        Ok(sent)
    }

    /// Copies a page blob into a new local file of the same size, reading only the written ranges (the rest stays
    /// a hole) and syncing the file once at the end. Returns the bytes read.
    pub async fn download_file(&self, blob: &str, path: &Path) -> Result<u64, ConnectorError> {
        let size = self.properties(blob).await?.size;
        let file = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .open(path)
            .and_then(|f| f.set_len(size).map(|_| f))
            .map_err(|e| local_error(path, e))?;
        drop(file);
        self.copy_into(blob, path, size).await
    }

    /// Copies the first `len` bytes of a page blob into an existing local file (a fixed VHD's data into a VMDK's
    /// flat extent: the footer stays behind), reading only the written ranges and syncing once at the end.
    pub async fn copy_into(&self, blob: &str, path: &Path, len: u64) -> Result<u64, ConnectorError> {
        let file = Arc::new(std::fs::OpenOptions::new().write(true).open(path).map_err(|e| local_error(path, e))?);
        let ranges = self.page_ranges(blob).await?;
        let mut read = 0;
        for (start, n) in ranges {
            let end = (start + n).min(len);
            let mut at = start;
            while at < end {
                let step = MAX_PUT.min(end - at);
                let data = self.read(blob, at, step).await?;
                let file = file.clone();
                // File writes stay off the async runtime's threads.
                tokio::task::spawn_blocking(move || file.write_all_at(&data, at))
                    .await
                    .map_err(|e| local_error(path, std::io::Error::other(e.to_string())))?
                    .map_err(|e| local_error(path, e))?;
                read += step;
                at += step;
            }
        }
        let f = file.clone();
        tokio::task::spawn_blocking(move || f.sync_all())
            .await
            .map_err(|e| local_error(path, std::io::Error::other(e.to_string())))?
            .map_err(|e| local_error(path, e))?;
        Ok(read)
    }

    /// One request: signed or with the SAS, the answer on 2xx, else the service's error in the user's words.
    async fn send(
        &self,
        method: reqwest::Method,
        blob: Option<&str>,
        query: &[(&str, &str)],
        headers: &[(&str, &str)],
        body: Option<Vec<u8>>,
        operation: &str,
    ) -> Result<Answer, ConnectorError> {
        let mut path = format!("/{}", self.container);
        if let Some(b) = blob {
            path.push('/');
            path.push_str(&encode_path(b));
        }
        let mut query: Vec<(String, String)> = query.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect();
        query.sort();
        let mut url = format!("{}{}", self.base, path);
        let mut sep = '?';
        for (k, v) in &query {
            url.push(sep);
            url.push_str(&format!("{k}={}", encode_query(v)));
            sep = '&';
        }
        if let Credential::Sas(sas) = &self.credential {
            url.push(sep);
            url.push_str(sas);
        }
        let date = httpdate::fmt_http_date(SystemTime::now());
        let mut ms: Vec<(String, String)> =
            headers.iter().map(|(k, v)| (k.to_ascii_lowercase(), (*v).to_owned())).collect();
        ms.push(("x-ms-date".into(), date));
        ms.push(("x-ms-version".into(), API_VERSION.into()));
        ms.sort();
        let length = body.as_ref().map(|b| b.len()).unwrap_or(0);
        let mut request = self.http.request(method.clone(), &url);
        for (k, v) in &ms {
            request = request.header(k.as_str(), v.as_str());
        }
        if let Some(key) = &self.key {
            let content_length = if length == 0 { String::new() } else { length.to_string() };
            let content_type = if body.is_some() && length > 0 { "application/octet-stream" } else { "" };
            let mut to_sign = format!("{}\n\n\n{content_length}\n\n{content_type}\n\n\n\n\n\n\n", method.as_str());
            for (k, v) in &ms {
                to_sign.push_str(&format!("{k}:{v}\n"));
            }
            to_sign.push_str(&format!("/{}{}{}", self.account, self.base_path, path));
            for (k, v) in &query {
                to_sign.push_str(&format!("\n{}:{v}", k.to_ascii_lowercase()));
            }
            let tag = ring::hmac::sign(&ring::hmac::Key::new(ring::hmac::HMAC_SHA256, key), to_sign.as_bytes());
            let signature = base64::engine::general_purpose::STANDARD.encode(tag.as_ref());
            request = request.header("Authorization", format!("SharedKey {}:{signature}", self.account));
            if !content_type.is_empty() {
                request = request.header("Content-Type", content_type);
            }
        } else if body.as_ref().is_some_and(|b| !b.is_empty()) {
            request = request.header("Content-Type", "application/octet-stream");
        }
        if let Some(body) = body {
            request = request.header("Content-Length", length.to_string()).body(body);
        }
        let response = request.send().await.map_err(|e| self.transport(&e))?;
        let status = response.status();
        let headers = response.headers().clone();
        let bytes = response.bytes().await.map_err(|e| self.transport(&e))?.to_vec();
        if status.is_success() {
            let xml_answer =
                headers.get("content-type").and_then(|v| v.to_str().ok()).is_some_and(|t| t.contains("xml"));
            let text = if xml_answer { String::from_utf8_lossy(&bytes).into_owned() } else { String::new() };
            return Ok(Answer { headers, text, bytes });
        }
        let code = headers.get("x-ms-error-code").and_then(|v| v.to_str().ok()).unwrap_or("").to_owned();
        let body = String::from_utf8_lossy(&bytes);
        let (code, message) = match Document::parse(&body) {
            Ok(doc) => {
                let c = find(doc.root(), "Code").and_then(|n| n.text()).unwrap_or(&code).to_owned();
                let m = find(doc.root(), "Message").and_then(|n| n.text()).unwrap_or("").to_owned();
                (c, m.lines().next().unwrap_or("").to_owned())
            }
            Err(_) => (code, String::new()),
        };
        Err(self.failure(Failure { status: status.as_u16(), code, message }, blob, operation))
    }

    fn what(&self, blob: Option<&str>) -> String {
        match blob {
            Some(b) => format!("the blob {b} in container {} of {}", self.container, self.account),
            None => format!("the container {} in storage account {}", self.container, self.account),
        }
    }

    fn failure(&self, f: Failure, blob: Option<&str>, operation: &str) -> ConnectorError {
        match (f.status, f.code.as_str()) {
            (403, _) if self.sas_expiry().is_some_and(|(expired, _)| expired) => ConnectorError::SasExpired {
                account: self.account.clone(),
                expiry: self.sas_expiry().map(|(_, at)| at).unwrap_or_default(),
            },
            (
                403,
                "AuthorizationPermissionMismatch"
                | "AuthorizationResourceTypeMismatch"
                | "AuthorizationServiceMismatch",
            ) if matches!(self.credential, Credential::Sas(_)) => {
                ConnectorError::SasPermission { account: self.account.clone(), operation: operation.to_owned() }
            }
            (403, _) => ConnectorError::Credentials { service: SERVICE, account: self.account.clone() },
            (404, _) | (_, "ContainerNotFound" | "BlobNotFound" | "ResourceNotFound") => ConnectorError::NotFound {
                what: self.what(blob),
                hint: if blob.is_none() {
                    ": create it in the storage account, or enter the container that holds the cloud VM's disks".into()
                } else {
                    String::new()
                },
            },
            (
                409 | 412,
                "LeaseIdMissing"
                | "LeaseAlreadyPresent"
                | "LeaseIdMismatchWithBlobOperation"
                | "LeaseIdMismatchWithLeaseOperation",
            ) => ConnectorError::LeaseHeld {
                what: self.what(blob),
                verb: if operation.starts_with("delete") { "deleted" } else { "changed" },
            },
            _ => ConnectorError::Refused {
                service: SERVICE,
                operation: format!("{operation} ({})", self.what(blob)),
                fault: if f.code.is_empty() { format!("HTTP {}", f.status) } else { f.code },
                message: if f.message.is_empty() { format!("HTTP {}", f.status) } else { f.message },
            },
        }
    }

    /// A SAS's expiry (`se=`), and whether it has passed.
    fn sas_expiry(&self) -> Option<(bool, String)> {
        let Credential::Sas(sas) = &self.credential else { return None };
        let se = sas.split('&').find_map(|p| p.strip_prefix("se="))?;
        let se = percent_decode(se);
        let at = time::OffsetDateTime::parse(&se, &time::format_description::well_known::Rfc3339).ok()?;
        Some((at <= time::OffsetDateTime::now_utc(), se))
    }

    fn transport(&self, e: &reqwest::Error) -> ConnectorError {
        if let Some(seen) = self.seen.lock().unwrap_or_else(|p| p.into_inner()).take() {
            let expected = match &self.thumbprint {
                Some(t) => format!(", not the {t} entered"),
                None => String::new(),
            };
            return ConnectorError::Thumbprint { url: self.base.clone(), seen, expected };
        }
        ConnectorError::Unreachable { service: SERVICE, url: self.base.clone(), cause: transport_cause(e) }
    }
}

fn local_error(path: &Path, e: std::io::Error) -> ConnectorError {
    ConnectorError::LocalDisk { path: path.display().to_string(), verb: "written", cause: e.to_string() }
}

fn unaligned(blob: &str, operation: &str, offset: u64, len: u64) -> ConnectorError {
    ConnectorError::Refused {
        service: SERVICE,
        operation: format!("{operation} of {blob}"),
        fault: "Unaligned".into(),
        message: format!(
            "page writes cover whole 512-byte pages, at most {} MiB at a time; {len} bytes at {offset} do not",
            MAX_PUT >> 20
        ),
    }
}

/// The `[start, end)` byte runs of `window` whose 512-byte pages are not all zeros, merged.
fn written_runs(window: &[u8]) -> Vec<(usize, usize)> {
    let mut runs: Vec<(usize, usize)> = Vec::new();
    for (i, page) in window.chunks(PAGE as usize).enumerate() {
        if page.iter().all(|b| *b == 0) {
            continue;
        }
        let (start, end) = (i * PAGE as usize, i * PAGE as usize + page.len());
        match runs.last_mut() {
            Some(last) if last.1 == start => last.1 = end,
            _ => runs.push((start, end)),
        }
    }
    runs
}

struct Answer {
    headers: reqwest::header::HeaderMap,
    /// The body as text, for the XML answers (lists); empty for data.
    text: String,
    bytes: Vec<u8>,
}

fn xml<'a>(body: &'a str, operation: &str) -> Result<Document<'a>, ConnectorError> {
    Document::parse(body).map_err(|e| ConnectorError::Protocol {
        service: SERVICE,
        operation: operation.to_owned(),
        detail: format!("not XML: {e}"),
    })
}

fn encode(text: &str, keep: &[u8]) -> String {
    let mut out = String::new();
    for b in text.bytes() {
        if b.is_ascii_alphanumeric() || keep.contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

fn encode_path(blob: &str) -> String {
    encode(blob, b"-_.~/")
}

fn encode_query(value: &str) -> String {
    encode(value, b"-_.~")
}

fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' && i + 2 < bytes.len() {
            if let Ok(b) = u8::from_str_radix(&text[i + 1..i + 3], 16) {
                out.push(b);
                i += 3;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(url: &str, container: &str) -> StorageConfig {
        StorageConfig {
            url: url.into(),
            container: container.into(),
            credential: Credential::SharedKey("a2V5".into()),
            thumbprint: None,
        }
    }

    #[test]
    fn the_account_comes_from_the_host_on_azure_and_from_the_path_on_an_emulator() {
        assert_eq!(Container::new(config("https://acme.blob.core.windows.net/", "disks")).unwrap().account(), "acme");
        assert_eq!(
            Container::new(config("https://127.0.0.1:10000/devstoreaccount1", "disks")).unwrap().account(),
            "devstoreaccount1"
        );
        assert!(matches!(
            Container::new(config("http://acme.blob.core.windows.net", "disks")),
            Err(ConnectorError::NotHttps { .. })
        ));
        assert!(Container::new(config("https://127.0.0.1:10000", "disks"))
            .unwrap_err()
            .to_string()
            .contains("names no storage account"));
        assert!(Container::new(config("https://acme.blob.core.windows.net", "Disks"))
            .unwrap_err()
            .to_string()
            .contains("not a container name"));
        let mut bad_key = config("https://acme.blob.core.windows.net", "disks");
        bad_key.credential = Credential::SharedKey("not base64!".into());
        assert!(Container::new(bad_key).unwrap_err().to_string().contains("not base64"));
    }

    #[test]
    fn only_written_pages_are_sent() {
        let mut w = vec![0u8; 4096];
        w[10] = 1;
        w[600] = 1;
        w[3000] = 1;
        assert_eq!(written_runs(&w), vec![(0, 1024), (2560, 3072)]);
        assert!(written_runs(&[0u8; 1024]).is_empty());
    }

    #[test]
    fn percent_decoding_reads_a_sas_expiry() {
        assert_eq!(percent_decode("2026-11-28T23%3A40%3A00Z"), "2026-11-28T23:40:00Z");
        assert_eq!(percent_decode("100%"), "100%");
    }
}
