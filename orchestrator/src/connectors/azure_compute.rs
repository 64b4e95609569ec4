//! The recovery site's VMs through Azure Resource Manager (`Microsoft.Compute`): a service principal's token from
//! Microsoft Entra ID (OAuth 2.0 client credentials), the VMs of one resource group, power off and start, delete a
//! VM and its managed disks. Long-running operations answer 202 with an `Azure-AsyncOperation` (or `Location`)
//! address that is polled until the operation ends; a failed operation's error is the step's error.
//!
//! There is no local emulator of Azure Compute: the requests and answers follow the REST API specification's
//! examples (VirtualMachines Get / List / PowerOff / Start / Delete, Disks Delete), and the tests replay them.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::Value;

use super::tls::{public_or_pinned, Seen};
use super::{http_client, transport_cause, ConnectorError, Thumbprint};

const SERVICE: &str = "Azure Resource Manager";
/// The `api-version` of the virtual-machine operations.
pub const COMPUTE_API: &str = "2024-07-01";
/// The `api-version` of the managed-disk operations.
pub const DISKS_API: &str = "2024-03-02";
/// How long a long-running operation may take before the step gives up on it (it goes on in Azure).
const OPERATION_DEADLINE: Duration = Duration::from_secs(30 * 60);

/// A resource group of a subscription, reached with a service principal's secret.
#[derive(Clone)]
pub struct ComputeConfig {
    /// `https://management.azure.com` (or a sovereign cloud's, or a test's).
    pub management: String,
    /// `https://login.microsoftonline.com` (or a sovereign cloud's, or a test's).
    pub authority: String,
    pub tenant: String,
    pub client_id: String,
    pub client_secret: String,
    pub subscription: String,
    pub resource_group: String,
    /// Trust exactly this certificate instead of the system's roots (a private endpoint, a test).
    pub thumbprint: Option<Thumbprint>,
}

impl std::fmt::Debug for ComputeConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ComputeConfig")
            .field("management", &self.management)
            .field("tenant", &self.tenant)
            .field("client_id", &self.client_id)
            .field("client_secret", &"<hidden>")
            .field("subscription", &self.subscription)
            .field("resource_group", &self.resource_group)
            .finish()
    }
}

/// A VM as Azure Resource Manager describes it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AzureVm {
    pub name: String,
    pub id: String,
    pub provisioning_state: String,
    /// `running`, `stopped`, `deallocated`, … from the instance view's `PowerState/…` status; `None` when the
    /// answer carried no instance view (a listing).
    pub power: Option<String>,
    /// The resource ids of its managed disks, OS disk first.
    pub managed_disks: Vec<String>,
    /// The page blobs of its unmanaged disks (`vhd.uri`), OS disk first.
    pub vhds: Vec<String>,
}

impl AzureVm {
    fn from_json(v: &Value) -> AzureVm {
        let storage = &v["properties"]["storageProfile"];
        let disks: Vec<&Value> = std::iter::once(&storage["osDisk"])
            .chain(storage["dataDisks"].as_array().into_iter().flatten())
            .filter(|d| d.is_object())
            .collect();
        let text = |v: &Value| v.as_str().map(str::to_owned);
        AzureVm {
            name: v["name"].as_str().unwrap_or("").to_owned(),
            id: v["id"].as_str().unwrap_or("").to_owned(),
            provisioning_state: v["properties"]["provisioningState"].as_str().unwrap_or("").to_owned(),
            power: v["properties"]["instanceView"]["statuses"]
                .as_array()
                .into_iter()
                .flatten()
                .find_map(|s| s["code"].as_str()?.strip_prefix("PowerState/").map(str::to_owned)),
            managed_disks: disks.iter().filter_map(|d| text(&d["managedDisk"]["id"])).collect(),
            vhds: disks.iter().filter_map(|d| text(&d["vhd"]["uri"])).collect(),
        }
    }
}

/// A client for the VMs of one resource group.
pub struct Compute {
    http: reqwest::Client,
    config: ComputeConfig,
    token: tokio::sync::Mutex<Option<(String, Instant)>>,
    seen: Seen,
}

impl std::fmt::Debug for Compute {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Compute").field("config", &self.config).finish()
    }
}

/// One answer: status, headers and the JSON body (`Null` when empty).
struct Answer {
    status: u16,
    headers: reqwest::header::HeaderMap,
    json: Value,
}

fn https(field: &str, url: &str) -> Result<String, ConnectorError> {
    let url = url.trim().trim_end_matches('/').to_owned();
    match url.strip_prefix("https://") {
        Some(rest) if !rest.is_empty() && !rest.contains(['?', '#', '@', ' ']) => Ok(url),
        Some(_) => Err(ConnectorError::Protocol {
            service: SERVICE,
            operation: "connect".into(),
            detail: format!("{field} {url:?} is not an endpoint such as https://management.azure.com"),
        }),
        None => Err(ConnectorError::NotHttps { url }),
    }
}

/// Subscription and tenant ids are GUIDs; a resource group's name is letters, digits and `-_.()`.
fn name_like(field: &str, value: &str, resource_group: bool) -> Result<String, ConnectorError> {
    let v = value.trim();
    let ok = if resource_group {
        (1..=90).contains(&v.len())
            && v.chars().all(|c| c.is_alphanumeric() || "-_.()".contains(c))
            && !v.ends_with('.')
    } else {
        !v.is_empty() && v.len() <= 64 && v.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '.')
    };
    if ok {
        Ok(v.to_owned())
    } else {
        Err(ConnectorError::Protocol {
            service: SERVICE,
            operation: "connect".into(),
            detail: format!("{field} {v:?} is not valid: copy it from the Azure portal"),
        })
    }
}

impl Compute {
    /// Checks the configuration locally; [`Compute::list_vms`] checks it against Azure.
    pub fn new(mut config: ComputeConfig) -> Result<Compute, ConnectorError> {
        config.management = https("management", &config.management)?;
        config.authority = https("authority", &config.authority)?;
        config.tenant = name_like("tenant", &config.tenant, false)?;
        config.subscription = name_like("subscription", &config.subscription, false)?;
        config.resource_group = name_like("resource group", &config.resource_group, true)?;
        if config.client_id.trim().is_empty() || config.client_secret.is_empty() {
            return Err(ConnectorError::Protocol {
                service: SERVICE,
                operation: "connect".into(),
                detail: "a service principal's application (client) id and secret are both required".into(),
            });
        }
        let seen: Seen = Arc::new(Mutex::new(None));
        Ok(Compute {
            http: http_client(public_or_pinned(config.thumbprint.clone(), seen.clone())),
            config,
            token: tokio::sync::Mutex::new(None),
            seen,
        })
    }

    /// The resource group's address: `/subscriptions/{id}/resourceGroups/{name}`.
    pub fn scope(&self) -> String {
        format!("/subscriptions/{}/resourceGroups/{}", self.config.subscription, self.config.resource_group)
    }

    fn vm_path(&self, name: &str) -> String {
        format!("{}/providers/Microsoft.Compute/virtualMachines/{}", self.scope(), encode(name))
    }

    /// A bearer token for the management endpoint, fetched again five minutes before it expires.
    async fn token(&self, fresh: bool) -> Result<String, ConnectorError> {
        let mut held = self.token.lock().await;
        if let Some((token, until)) = held.as_ref() {
            if !fresh && Instant::now() < *until {
                return Ok(token.clone());
            }
        }
        let url = format!("{}/{}/oauth2/v2.0/token", self.config.authority, self.config.tenant);
        let scope = format!("{}/.default", self.config.management);
        let form = [
            ("grant_type", "client_credentials"),
            ("client_id", self.config.client_id.as_str()),
            ("client_secret", self.config.client_secret.as_str()),
            ("scope", scope.as_str()),
        ];
        let response =
            self.http.post(&url).form(&form).send().await.map_err(|e| self.transport(&self.config.authority, &e))?;
        let status = response.status().as_u16();
        let body: Value = response.json().await.unwrap_or(Value::Null);
        if status != 200 {
            // Entra ID answers `{"error": "invalid_client", "error_description": "AADSTS7000215: …"}`.
            let code = body["error"].as_str().unwrap_or("");
            let description = body["error_description"].as_str().unwrap_or("").lines().next().unwrap_or("");
            return Err(match code {
                "invalid_client" | "unauthorized_client" => ConnectorError::Credentials {
                    service: "Microsoft Entra ID",
                    account: format!("application {}", self.config.client_id),
                },
                "invalid_request" if description.contains("AADSTS90002") => ConnectorError::NotFound {
                    what: format!("the tenant {}", self.config.tenant),
                    hint: ": check the directory (tenant) id on the app registration's overview".into(),
                },
                _ => ConnectorError::Refused {
                    service: "Microsoft Entra ID",
                    operation: "a token".into(),
                    fault: if code.is_empty() { format!("HTTP {status}") } else { code.to_owned() },
                    message: description.to_owned(),
                },
            });
        }
        let token = body["access_token"].as_str().unwrap_or("").to_owned();
        if token.is_empty() {
            return Err(ConnectorError::Protocol {
                service: "Microsoft Entra ID",
                operation: "a token".into(),
                detail: "the answer holds no access_token".into(),
            });
        }
        let lifetime = body["expires_in"].as_u64().unwrap_or(3600).saturating_sub(300).max(60);
        *held = Some((token.clone(), Instant::now() + Duration::from_secs(lifetime)));
        Ok(token)
    }

    /// One request to the management endpoint (`path` from `/subscriptions/…`, or an absolute URL it gave us); a
    /// 401 fetches a new token once.
    async fn call(&self, method: reqwest::Method, path: &str, operation: &str) -> Result<Answer, ConnectorError> {
        let url =
            if path.starts_with("https://") { path.to_owned() } else { format!("{}{path}", self.config.management) };
        if !url.starts_with(&self.config.management) {
            // The address of an operation to poll comes from the answer: never send the token elsewhere.
            return Err(ConnectorError::Protocol {
                service: SERVICE,
                operation: operation.to_owned(),
                detail: "it pointed to an address outside the management endpoint".into(),
            });
        }
        let mut fresh = false;
        loop {
            let token = self.token(fresh).await?;
            let mut request = self.http.request(method.clone(), &url).bearer_auth(&token);
            if method == reqwest::Method::POST {
                request = request.header("Content-Length", "0");
            }
            let response = request.send().await.map_err(|e| self.transport(&self.config.management, &e))?;
            let status = response.status().as_u16();
            let headers = response.headers().clone();
            let bytes = response.bytes().await.map_err(|e| self.transport(&self.config.management, &e))?;
            let json: Value =
                if bytes.is_empty() { Value::Null } else { serde_json::from_slice(&bytes).unwrap_or(Value::Null) };
            if status == 401 && !fresh {
                fresh = true;
                continue;
            }
            if (200..300).contains(&status) {
                return Ok(Answer { status, headers, json });
            }
            return Err(self.failure(status, &json, operation));
        }
    }

    fn failure(&self, status: u16, body: &Value, operation: &str) -> ConnectorError {
        let code = body["error"]["code"].as_str().unwrap_or("").to_owned();
        let message = body["error"]["message"].as_str().unwrap_or("").lines().next().unwrap_or("").to_owned();
        match (status, code.as_str()) {
            (401, _) | (_, "InvalidAuthenticationToken" | "ExpiredAuthenticationToken") => {
                ConnectorError::Credentials {
                    service: SERVICE,
                    account: format!("application {}", self.config.client_id),
                }
            }
            (404, _) | (_, "ResourceNotFound" | "ResourceGroupNotFound" | "NotFound") => ConnectorError::NotFound {
                what: format!("{operation}: {}", if message.is_empty() { "the resource" } else { &message }),
                hint: String::new(),
            },
            (403, _) | (_, "AuthorizationFailed") => ConnectorError::Refused {
                service: SERVICE,
                operation: operation.to_owned(),
                fault: if code.is_empty() { "AuthorizationFailed".into() } else { code },
                message: format!(
                    "the application {} may not do this in resource group {} (give it the Virtual Machine \
                     Contributor and Disk Snapshot Contributor roles there)",
                    self.config.client_id, self.config.resource_group
                ),
            },
            _ => ConnectorError::Refused {
                service: SERVICE,
                operation: operation.to_owned(),
                fault: if code.is_empty() { format!("HTTP {status}") } else { code },
                message: if message.is_empty() { format!("HTTP {status}") } else { message },
            },
        }
    }

    fn transport(&self, url: &str, e: &reqwest::Error) -> ConnectorError {
        if let Some(seen) = self.seen.lock().unwrap_or_else(|p| p.into_inner()).take() {
            let expected = match &self.config.thumbprint {
                Some(t) => format!(", not the {t} entered"),
                None => String::new(),
            };
            return ConnectorError::Thumbprint { url: url.to_owned(), seen, expected };
        }
        ConnectorError::Unreachable { service: SERVICE, url: url.to_owned(), cause: transport_cause(e) }
    }

    /// The VMs of the resource group (`nextLink` followed).
    pub async fn list_vms(&self) -> Result<Vec<AzureVm>, ConnectorError> {
        let mut vms = Vec::new();
        let mut next =
            Some(format!("{}/providers/Microsoft.Compute/virtualMachines?api-version={COMPUTE_API}", self.scope()));
        while let Some(url) = next.take() {
            let answer = self.call(reqwest::Method::GET, &url, "list the resource group's VMs").await?;
            vms.extend(answer.json["value"].as_array().into_iter().flatten().map(AzureVm::from_json));
            next = answer.json["nextLink"].as_str().map(str::to_owned);
        }
        Ok(vms)
    }

    /// A VM with its instance view (power state).
    pub async fn vm(&self, name: &str) -> Result<AzureVm, ConnectorError> {
        let url = format!("{}?api-version={COMPUTE_API}&$expand=instanceView", self.vm_path(name));
        let answer = self.call(reqwest::Method::GET, &url, &format!("read VM {name}")).await?;
        Ok(AzureVm::from_json(&answer.json))
    }

    /// Powers a VM off (it keeps its resources) and waits for the operation.
    pub async fn power_off(&self, name: &str) -> Result<(), ConnectorError> {
        let operation = format!("power off VM {name}");
        let url = format!("{}/powerOff?api-version={COMPUTE_API}", self.vm_path(name));
        let answer = self.call(reqwest::Method::POST, &url, &operation).await?;
        self.wait(answer, &operation).await
    }

    /// Starts a VM and waits for the operation.
    pub async fn start(&self, name: &str) -> Result<(), ConnectorError> {
        let operation = format!("start VM {name}");
        let url = format!("{}/start?api-version={COMPUTE_API}", self.vm_path(name));
        let answer = self.call(reqwest::Method::POST, &url, &operation).await?;
        self.wait(answer, &operation).await
    }

    /// Deletes a VM (not its disks) and waits for the operation; `false` when it was gone already.
    pub async fn delete_vm(&self, name: &str) -> Result<bool, ConnectorError> {
        let operation = format!("delete VM {name}");
        let url = format!("{}?api-version={COMPUTE_API}", self.vm_path(name));
        match self.call(reqwest::Method::DELETE, &url, &operation).await {
            Ok(answer) if answer.status == 204 => Ok(false),
            Ok(answer) => self.wait(answer, &operation).await.map(|_| true),
            Err(ConnectorError::NotFound { .. }) => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Deletes a managed disk by its resource id and waits for the operation; `false` when it was gone already.
    pub async fn delete_disk(&self, id: &str) -> Result<bool, ConnectorError> {
        let name = id.rsplit('/').next().unwrap_or(id);
        let operation = format!("delete disk {name}");
        let inside = id
            .to_ascii_lowercase()
            .starts_with(&format!("/subscriptions/{}/", self.config.subscription).to_ascii_lowercase());
        if !inside || !id.contains("/providers/Microsoft.Compute/disks/") {
            return Err(ConnectorError::Refused {
                service: SERVICE,
                operation,
                fault: "OutsideSubscription".into(),
                message: format!("{id} is not a managed disk of subscription {}", self.config.subscription),
            });
        }
        let url = format!("{id}?api-version={DISKS_API}");
        match self.call(reqwest::Method::DELETE, &url, &operation).await {
            Ok(answer) if answer.status == 204 => Ok(false),
            Ok(answer) => self.wait(answer, &operation).await.map(|_| true),
            Err(ConnectorError::NotFound { .. }) => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Follows a long-running operation: a 200 is done; a 202 names an `Azure-AsyncOperation` address (its
    /// `status` ends as `Succeeded`, `Failed` or `Canceled`) or a `Location` (202 while it runs, then 200/204).
    /// `Retry-After` paces the polls (within 1–30 s).
    async fn wait(&self, answer: Answer, operation: &str) -> Result<(), ConnectorError> {
        if answer.status != 202 {
            return Ok(());
        }
        let header =
            |h: &reqwest::header::HeaderMap, name: &str| h.get(name).and_then(|v| v.to_str().ok()).map(str::to_owned);
        let pause = |h: &reqwest::header::HeaderMap| {
            let s = header(h, "retry-after").and_then(|v| v.parse::<u64>().ok()).unwrap_or(1);
            Duration::from_secs(s.clamp(1, 30))
        };
        let deadline = Instant::now() + OPERATION_DEADLINE;
        let (async_op, location) =
            (header(&answer.headers, "azure-asyncoperation"), header(&answer.headers, "location"));
        let mut wait = pause(&answer.headers);
        loop {
            if Instant::now() + wait > deadline {
                return Err(ConnectorError::Refused {
                    service: SERVICE,
                    operation: operation.to_owned(),
                    fault: "Timeout".into(),
                    message: format!(
                        "it had not ended after {} minutes; it goes on in Azure: check the VM in the Azure portal",
                        OPERATION_DEADLINE.as_secs() / 60
                    ),
                });
            }
            tokio::time::sleep(wait).await;
            if let Some(url) = &async_op {
                let poll = self.call(reqwest::Method::GET, url, operation).await?;
                match poll.json["status"].as_str().unwrap_or("") {
                    "Succeeded" => return Ok(()),
                    "Failed" | "Canceled" => return Err(self.failure(409, &poll.json, operation)),
                    _ => wait = pause(&poll.headers),
                }
            } else if let Some(url) = &location {
                let poll = self.call(reqwest::Method::GET, url, operation).await?;
                if poll.status != 202 {
                    return Ok(());
                }
                wait = pause(&poll.headers);
            } else {
                // A 202 without an address to follow: Azure has accepted it, nothing more can be known here.
                return Ok(());
            }
        }
    }
}

fn encode(text: &str) -> String {
    let mut out = String::new();
    for b in text.bytes() {
        if b.is_ascii_alphanumeric() || b"-_.".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_vm_is_read_with_its_power_state_and_its_disks() {
        let v = serde_json::json!({
            "name": "myVM", "id": "/subscriptions/s/resourceGroups/rg/providers/Microsoft.Compute/virtualMachines/myVM",
            "properties": {
                "provisioningState": "Succeeded",
                "storageProfile": {
                    "osDisk": {"name": "myOsDisk", "managedDisk": {"id": "/subscriptions/s/resourceGroups/rg/providers/Microsoft.Compute/disks/myOsDisk"}},
                    "dataDisks": [{"lun": 0, "vhd": {"uri": "https://acct.blob.core.windows.net/vhds/data0.vhd"}}]
                },
                "instanceView": {"statuses": [
                    {"code": "ProvisioningState/succeeded"}, {"code": "PowerState/running"}
                ]}
            }
        });
        let vm = AzureVm::from_json(&v);
        assert_eq!(vm.power.as_deref(), Some("running"));
        assert_eq!(vm.managed_disks, ["/subscriptions/s/resourceGroups/rg/providers/Microsoft.Compute/disks/myOsDisk"]);
        assert_eq!(vm.vhds, ["https://acct.blob.core.windows.net/vhds/data0.vhd"]);
    }

    #[test]
    fn mistakes_in_the_settings_are_named_before_any_request() {
        let config = |f: &dyn Fn(&mut ComputeConfig)| {
            let mut c = ComputeConfig {
                management: "https://management.azure.com".into(),
                authority: "https://login.microsoftonline.com".into(),
                tenant: "72f988bf-86f1-41af-91ab-2d7cd011db47".into(),
                client_id: "app".into(),
                client_secret: "s3cret".into(),
                subscription: "00000000-0000-0000-0000-000000000000".into(),
                resource_group: "rg-dr".into(),
                thumbprint: None,
            };
            f(&mut c);
            Compute::new(c)
        };
        assert!(config(&|_| {}).is_ok());
        assert!(matches!(
            config(&|c| c.management = "http://management.azure.com".into()),
            Err(ConnectorError::NotHttps { .. })
        ));
        let e = config(&|c| c.resource_group = "rg dr".into()).unwrap_err().to_string();
        assert!(e.contains("resource group \"rg dr\""), "{e}");
        let e = config(&|c| c.client_secret = String::new()).unwrap_err().to_string();
        assert!(e.contains("secret") && !e.contains("s3cret"), "{e}");
        assert!(!format!("{:?}", config(&|_| {}).unwrap()).contains("s3cret"));
    }
}
