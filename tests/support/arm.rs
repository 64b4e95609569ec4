//! Azure Resource Manager and Microsoft Entra ID as a test's stand-in, over TLS on a free loopback port: there is no
//! local emulator of Azure Compute. Its answers follow the REST API specification's examples for the calls Homeward
//! makes — the client-credentials token, VirtualMachines List / Get (with the instance view) / PowerOff / Start /
//! Delete, Disks Delete — including their long-running form: 202 with `Azure-AsyncOperation` (VM operations) or
//! `Location` (disk deletion) and `Retry-After`, then the operation's status. It checks what a real endpoint checks
//! (the bearer token, the api-version, the service principal's secret) and records every request.

#![allow(dead_code)]

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use axum::body::Bytes;
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use serde_json::{json, Value};

pub const TENANT: &str = "72f988bf-86f1-41af-91ab-2d7cd011db47";
pub const SUBSCRIPTION: &str = "f1b2c3d4-0000-4000-8000-00000000dr01";
pub const CLIENT_ID: &str = "homeward-failback";
pub const CLIENT_SECRET: &str = "a-client-secret-for-tests";

#[derive(Clone, Debug)]
pub struct MockVm {
    pub power: String,
    pub managed_disks: Vec<String>,
}

#[derive(Default)]
struct State {
    base: String,
    resource_group: String,
    vms: BTreeMap<String, MockVm>,
    disks: Vec<String>,
    /// Operation id → (status, error) its poll answers.
    operations: BTreeMap<String, (String, Option<Value>)>,
    requests: Vec<String>,
    tokens: usize,
    /// A VM whose power-off operation ends `Failed` (as when a resource lock forbids it).
    refuse_power_off: Option<String>,
}

pub struct Arm {
    /// `https://127.0.0.1:<port>`: both the management endpoint and the identity provider.
    pub url: String,
    pub thumbprint: String,
    state: Arc<Mutex<State>>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Arm {
    /// A resource group with the given VMs (each running, with one managed OS disk `<vm>_OsDisk`).
    pub fn start(resource_group: &str, vms: &[&str]) -> Arm {
        let key = rcgen::KeyPair::generate().expect("a key");
        let cert = rcgen::CertificateParams::new(vec!["127.0.0.1".to_owned()])
            .expect("params")
            .self_signed(&key)
            .expect("a certificate");
        let digest = ring::digest::digest(&ring::digest::SHA1_FOR_LEGACY_USE_ONLY, cert.der());
        let thumbprint = digest.as_ref().iter().map(|b| format!("{b:02X}")).collect::<Vec<_>>().join(":");
        let chain = vec![cert.der().clone()];
        let private = rustls::pki_types::PrivateKeyDer::Pkcs8(key.serialize_der().into());
        let mut config =
            rustls::ServerConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
                .with_safe_default_protocol_versions()
                .unwrap()
                .with_no_client_auth()
                .with_single_cert(chain, private)
                .expect("a TLS configuration");
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("a port");
        listener.set_nonblocking(true).unwrap();
        let url = format!("https://127.0.0.1:{}", listener.local_addr().unwrap().port());
        let mut state = State { base: url.clone(), resource_group: resource_group.to_owned(), ..Default::default() };
        for vm in vms {
            let disk = disk_id(resource_group, &format!("{vm}_OsDisk"));
            state.vms.insert((*vm).to_owned(), MockVm { power: "running".into(), managed_disks: vec![disk.clone()] });
            state.disks.push(disk);
        }
        let state = Arc::new(Mutex::new(state));
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let shared = state.clone();
        let thread = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().unwrap();
            rt.block_on(async move {
                let listener = tokio::net::TcpListener::from_std(listener).unwrap();
                let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
                let app =
                    axum::Router::new().fallback(move |method: Method, uri: Uri, headers: HeaderMap, body: Bytes| {
                        let state = shared.clone();
                        async move { answer(&state, method, uri, headers, body) }
                    });
                tokio::pin!(stopped);
                loop {
                    let (tcp, _) = tokio::select! {
                        a = listener.accept() => match a { Ok(c) => c, Err(_) => continue },
                        _ = &mut stopped => break,
                    };
                    let (acceptor, app) = (acceptor.clone(), app.clone());
                    tokio::spawn(async move {
                        let Ok(tls) = acceptor.accept(tcp).await else { return };
                        let svc = hyper_util::service::TowerToHyperService::new(app);
                        let _ = hyper::server::conn::http1::Builder::new()
                            .serve_connection(hyper_util::rt::TokioIo::new(tls), svc)
                            .await;
                    });
                }
            });
        });
        Arm { url, thumbprint, state, stop: Some(stop), thread: Some(thread) }
    }

    /// Every request so far: `METHOD path?query`.
    pub fn requests(&self) -> Vec<String> {
        self.state.lock().unwrap().requests.clone()
    }

    pub fn vm(&self, name: &str) -> Option<MockVm> {
        self.state.lock().unwrap().vms.get(name).cloned()
    }

    pub fn disks(&self) -> Vec<String> {
        self.state.lock().unwrap().disks.clone()
    }

    pub fn tokens_issued(&self) -> usize {
        self.state.lock().unwrap().tokens
    }

    /// Sets a VM's power state as someone in the Azure portal would (`running`, `stopped`, `deallocated`).
    pub fn set_power(&self, vm: &str, power: &str) {
        if let Some(v) = self.state.lock().unwrap().vms.get_mut(vm) {
            v.power = power.to_owned();
        }
    }

    pub fn refuse_power_off(&self, vm: &str) {
        self.state.lock().unwrap().refuse_power_off = Some(vm.to_owned());
    }
}

impl Drop for Arm {
    fn drop(&mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn disk_id(resource_group: &str, name: &str) -> String {
    format!("/subscriptions/{SUBSCRIPTION}/resourceGroups/{resource_group}/providers/Microsoft.Compute/disks/{name}")
}

fn error(status: StatusCode, code: &str, message: &str) -> Response {
    (status, axum::Json(json!({"error": {"code": code, "message": message}}))).into_response()
}

fn vm_json(rg: &str, name: &str, vm: &MockVm, instance_view: bool) -> Value {
    let id =
        format!("/subscriptions/{SUBSCRIPTION}/resourceGroups/{rg}/providers/Microsoft.Compute/virtualMachines/{name}");
    let os = vm.managed_disks.first().cloned().unwrap_or_default();
    let mut v = json!({
        "name": name, "id": id, "type": "Microsoft.Compute/virtualMachines", "location": "westeurope",
        "properties": {
            "vmId": "0f47b100-583c-48e3-a4c0-aefc2c9bbcc1",
            "hardwareProfile": {"vmSize": "Standard_D2s_v3"},
            "storageProfile": {
                "osDisk": {"osType": "Windows", "name": os.rsplit('/').next().unwrap_or(""), "createOption": "Attach",
                           "caching": "ReadWrite", "managedDisk": {"storageAccountType": "Premium_LRS", "id": os},
                           "diskSizeGB": 30},
                "dataDisks": []
            },
            "networkProfile": {"networkInterfaces": [{"id": format!("{id}-nic")}]},
            "provisioningState": "Succeeded"
        }
    });
    if instance_view {
        v["properties"]["instanceView"] = json!({
            "computerName": name, "osName": "Windows Server 2019 Datacenter",
            "statuses": [
                {"code": "ProvisioningState/succeeded", "level": "Info", "displayStatus": "Provisioning succeeded"},
                {"code": format!("PowerState/{}", vm.power), "level": "Info", "displayStatus": format!("VM {}", vm.power)}
            ]
        });
    }
    v
}

fn answer(state: &Mutex<State>, method: Method, uri: Uri, headers: HeaderMap, body: Bytes) -> Response {
    let mut s = state.lock().unwrap();
    let path = uri.path().to_owned();
    let query: BTreeMap<String, String> = uri
        .query()
        .unwrap_or("")
        .split('&')
        .filter_map(|p| p.split_once('=').map(|(k, v)| (k.to_owned(), v.replace("%24", "$"))))
        .collect();
    s.requests.push(format!("{method} {}", uri.path_and_query().map(|p| p.as_str()).unwrap_or("")));

    // Microsoft Entra ID: the client-credentials grant.
    if path == format!("/{TENANT}/oauth2/v2.0/token") && method == Method::POST {
        let form: BTreeMap<String, String> = String::from_utf8_lossy(&body)
            .split('&')
            .filter_map(|p| p.split_once('='))
            .map(|(k, v)| (k.to_owned(), v.replace("%2F", "/").replace("%3A", ":").replace('+', " ")))
            .collect();
        let get = |k: &str| form.get(k).map(String::as_str).unwrap_or("");
        if get("grant_type") != "client_credentials" || get("scope") != format!("{}/.default", s.base) {
            return (
                StatusCode::BAD_REQUEST,
                axum::Json(json!({"error": "invalid_request",
                "error_description": "AADSTS900144: The request body must contain the following parameter: 'scope'."})),
            )
                .into_response();
        }
        if get("client_id") != CLIENT_ID || get("client_secret") != CLIENT_SECRET {
            return (StatusCode::UNAUTHORIZED, axum::Json(json!({"error": "invalid_client",
                "error_description": "AADSTS7000215: Invalid client secret provided. Ensure the secret being sent in the request is the client secret value, not the client secret ID."})))
                .into_response();
        }
        s.tokens += 1;
        let token = format!("tok-{}", s.tokens);
        return axum::Json(
            json!({"token_type": "Bearer", "expires_in": 3599, "ext_expires_in": 3599, "access_token": token}),
        )
        .into_response();
    }
    if path.starts_with('/') && path[1..].starts_with(|c: char| c.is_ascii_hexdigit()) && path.contains("/oauth2/") {
        return (
            StatusCode::BAD_REQUEST,
            axum::Json(json!({"error": "invalid_request",
            "error_description": "AADSTS90002: Tenant not found."})),
        )
            .into_response();
    }

    // Azure Resource Manager: a bearer token from the grant above.
    let bearer = headers.get("authorization").and_then(|v| v.to_str().ok()).unwrap_or("");
    if !bearer.starts_with("Bearer tok-") {
        return error(
            StatusCode::UNAUTHORIZED,
            "AuthenticationFailed",
            "Authentication failed. The 'Authorization' header is missing.",
        );
    }
    let api = query.get("api-version").map(String::as_str).unwrap_or("");
    let operations =
        format!("/subscriptions/{SUBSCRIPTION}/providers/Microsoft.Compute/locations/westeurope/operations/");
    if let Some(op) = path.strip_prefix(&operations) {
        return match s.operations.get(op) {
            Some((status, err)) => {
                let mut v = json!({"name": op, "startTime": "2026-11-29T10:00:00.0000000+00:00", "status": status});
                if let Some(e) = err {
                    v["error"] = e.clone();
                }
                axum::Json(v).into_response()
            }
            None => error(StatusCode::NOT_FOUND, "NotFound", "no such operation"),
        };
    }
    let group =
        format!("/subscriptions/{SUBSCRIPTION}/resourceGroups/{}/providers/Microsoft.Compute/", s.resource_group);
    let Some(rest) = path.strip_prefix(&group) else {
        return error(StatusCode::NOT_FOUND, "ResourceGroupNotFound", "Resource group could not be found.");
    };
    let rg = s.resource_group.clone();
    let op_id = format!("op-{}", s.requests.len());
    let accepted = |s: &mut State, op_id: &str, status: &str, err: Option<Value>, location_only: bool| {
        s.operations.insert(op_id.to_owned(), (status.to_owned(), err));
        let poll = format!("{}{operations}{op_id}?api-version={api}", s.base);
        let mut r = StatusCode::ACCEPTED.into_response();
        let h = r.headers_mut();
        if !location_only {
            h.insert("azure-asyncoperation", poll.parse().unwrap());
        }
        h.insert("location", format!("{poll}&monitor=true").parse().unwrap());
        h.insert("retry-after", "1".parse().unwrap());
        r
    };
    if let Some(rest) = rest.strip_prefix("virtualMachines") {
        if api != "2024-07-01" {
            return error(
                StatusCode::BAD_REQUEST,
                "InvalidApiVersionParameter",
                &format!("The api-version '{api}' is invalid."),
            );
        }
        let (name, action) = match rest.trim_start_matches('/').split_once('/') {
            Some((n, a)) => (n.to_owned(), a.to_owned()),
            None => (rest.trim_start_matches('/').to_owned(), String::new()),
        };
        if name.is_empty() && method == Method::GET {
            let value: Vec<Value> = s.vms.iter().map(|(n, vm)| vm_json(&rg, n, vm, false)).collect();
            return axum::Json(json!({"value": value})).into_response();
        }
        let not_found = || {
            error(
                StatusCode::NOT_FOUND,
                "ResourceNotFound",
                &format!("The Resource 'Microsoft.Compute/virtualMachines/{name}' under resource group '{rg}' was not found."),
            )
        };
        match (method.clone(), action.as_str()) {
            (Method::GET, "") => match s.vms.get(&name) {
                Some(vm) => axum::Json(vm_json(
                    &rg,
                    &name,
                    vm,
                    query.get("$expand").map(String::as_str) == Some("instanceView"),
                ))
                .into_response(),
                None => not_found(),
            },
            (Method::POST, "powerOff" | "start") => {
                if !s.vms.contains_key(&name) {
                    return not_found();
                }
                if action == "powerOff" && s.refuse_power_off.as_deref() == Some(name.as_str()) {
                    let err = json!({"code": "ScopeLocked", "message": format!("The scope '{name}' cannot perform write operation because of a lock.")});
                    return accepted(&mut s, &op_id, "Failed", Some(err), false);
                }
                s.vms.get_mut(&name).unwrap().power = if action == "start" { "running" } else { "stopped" }.into();
                accepted(&mut s, &op_id, "Succeeded", None, false)
            }
            (Method::DELETE, "") => {
                if s.vms.remove(&name).is_none() {
                    return StatusCode::NO_CONTENT.into_response();
                }
                accepted(&mut s, &op_id, "Succeeded", None, false)
            }
            _ => error(StatusCode::METHOD_NOT_ALLOWED, "MethodNotAllowed", "not part of this stand-in"),
        }
    } else if let Some(name) = rest.strip_prefix("disks/") {
        if api != "2024-03-02" {
            return error(
                StatusCode::BAD_REQUEST,
                "InvalidApiVersionParameter",
                &format!("The api-version '{api}' is invalid."),
            );
        }
        if method != Method::DELETE {
            return error(StatusCode::METHOD_NOT_ALLOWED, "MethodNotAllowed", "not part of this stand-in");
        }
        let id = disk_id(&rg, name);
        if s.vms.values().any(|vm| vm.managed_disks.contains(&id)) {
            return error(StatusCode::CONFLICT, "OperationNotAllowed", &format!("Disk {name} is attached to a VM."));
        }
        let before = s.disks.len();
        s.disks.retain(|d| *d != id);
        if s.disks.len() == before {
            return StatusCode::NO_CONTENT.into_response();
        }
        accepted(&mut s, &op_id, "Succeeded", None, true)
    } else {
        error(StatusCode::NOT_FOUND, "NotFound", "not part of this stand-in")
    }
}
