//! The two sites' real APIs for tests: govmomi's vCenter simulator (built by `./x setup` into target/tools/vcsim)
//! and Azurite, the Azure Storage emulator (npm). Each test starts its own on a free loopback port with a temp dir;
//! both are children that die with the test's thread (a parent-death signal) and are stopped on drop.

#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Child, ChildStdin, Command, Stdio};
use std::time::{Duration, Instant};

fn workspace() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).parent().expect("a workspace").to_owned()
}

fn with_parent_death_signal(cmd: &mut Command) {
    // SAFETY: prctl is async-signal-safe; nothing else runs between fork and exec.
    unsafe {
        cmd.pre_exec(|| {
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
            Ok(())
        });
    }
}

/// The first line of a child's stdout that `accept` turns into a value, within 60 s. A thread keeps draining the
/// rest so the child never blocks on a full pipe.
fn wait_for_line<T>(child: &mut Child, what: &str, mut accept: impl FnMut(&str) -> Option<T>) -> T {
    let stdout = child.stdout.take().expect("piped stdout");
    let (tx, rx) = std::sync::mpsc::channel::<Option<String>>();
    std::thread::spawn(move || {
        let mut reader = BufReader::new(stdout);
        let mut line = String::new();
        let mut listening = true;
        loop {
            line.clear();
            match reader.read_line(&mut line) {
                Ok(0) | Err(_) => {
                    let _ = tx.send(None);
                    return;
                }
                Ok(_) if listening => listening = tx.send(Some(line.clone())).is_ok(),
                Ok(_) => {}
            }
        }
    });
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut printed = String::new();
    loop {
        match rx.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
            Ok(Some(line)) => {
                if let Some(v) = accept(line.trim()) {
                    return v;
                }
                printed.push_str(&line);
            }
            Ok(None) => panic!("{what} stopped before it was ready; it printed:\n{printed}"),
            Err(_) => {
                let _ = child.kill();
                panic!("{what} was not ready within 60 s; it printed:\n{printed}");
            }
        }
    }
}

/// govmomi's simulator: one datacenter, a cluster of two ESXi hosts, two local datastores, two VMs.
pub struct Vcsim {
    child: Child,
    stdin: Option<ChildStdin>,
    _dir: tempfile::TempDir,
    pub url: String,
    pub user: String,
    pub password: String,
    pub thumbprint: String,
    /// Datastore name → the folder backing it.
    pub datastores: Vec<(String, PathBuf)>,
}

impl Vcsim {
    pub fn start() -> Vcsim {
        Vcsim::start_with(&[])
    }

    /// With the simulator's options: `--vms a,b` names its VMs, `--vsan NAME` reports that datastore as vSAN.
    pub fn start_with(options: &[&str]) -> Vcsim {
        let bin = std::env::var_os("HOMEWARD_VCSIM")
            .map(PathBuf::from)
            .unwrap_or_else(|| workspace().join("target/tools/vcsim"));
        assert!(bin.exists(), "the vSphere simulator is not built at {}: run ./x setup", bin.display());
        let dir = tempfile::tempdir().expect("a temp dir");
        let password = format!("pw-{}", std::process::id());
        let mut cmd = Command::new(&bin);
        cmd.args(["--user", "administrator@vsphere.local", "--password", &password])
            .args(options)
            .env("TMPDIR", dir.path())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit());
        with_parent_death_signal(&mut cmd);
        let mut child = cmd.spawn().expect("start the vSphere simulator");
        let stdin = child.stdin.take();
        let ready = wait_for_line(&mut child, "the vSphere simulator", |line| {
            serde_json::from_str::<serde_json::Value>(line).ok()
        });
        let datastores = ready["datastores"]
            .as_object()
            .expect("datastores")
            .iter()
            .map(|(k, v)| (k.clone(), PathBuf::from(v.as_str().expect("a folder"))))
            .collect();
        Vcsim {
            child,
            stdin,
            _dir: dir,
            url: ready["url"].as_str().expect("url").to_owned(),
            user: "administrator@vsphere.local".into(),
            password,
            thumbprint: ready["thumbprint_sha1"].as_str().expect("thumbprint").to_owned(),
            datastores,
        }
    }
}

impl Drop for Vcsim {
    fn drop(&mut self) {
        // Closing stdin asks it to stop and remove its datastore folders; kill if it does not within 5 s.
        drop(self.stdin.take());
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The well-known development account every Azurite serves.
pub const AZURITE_ACCOUNT: &str = "devstoreaccount1";
pub const AZURITE_KEY: &str =
    "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw==";

/// Azurite's blob service over HTTPS with a certificate made for the test.
pub struct Azurite {
    child: Child,
    _dir: tempfile::TempDir,
    /// `https://127.0.0.1:<port>/devstoreaccount1`
    pub url: String,
    /// The SHA-1 thumbprint of its certificate.
    pub thumbprint: String,
}

impl Azurite {
    pub fn start() -> Azurite {
        let dir = tempfile::tempdir().expect("a temp dir");
        let key = rcgen::KeyPair::generate().expect("a key");
        let cert = rcgen::CertificateParams::new(vec!["127.0.0.1".to_owned(), "localhost".to_owned()])
            .expect("params")
            .self_signed(&key)
            .expect("a certificate");
        let digest = ring::digest::digest(&ring::digest::SHA1_FOR_LEGACY_USE_ONLY, cert.der());
        let thumbprint = digest.as_ref().iter().map(|b| format!("{b:02X}")).collect::<Vec<_>>().join(":");
        let cert_path = dir.path().join("cert.pem");
        let key_path = dir.path().join("key.pem");
        std::fs::write(&cert_path, cert.pem()).expect("write the certificate");
        std::fs::write(&key_path, key.serialize_pem()).expect("write the key");
        let data = dir.path().join("data");
        std::fs::create_dir(&data).expect("a data folder");
        let mut cmd = Command::new("azurite-blob");
        cmd.args(["--blobHost", "127.0.0.1", "--blobPort", "0", "--skipApiVersionCheck", "--disableTelemetry"])
            .args(match std::env::var_os("HOMEWARD_AZURITE_DEBUG") {
                // A file for Azurite's debug log (what it computed for each request), when a test needs looking into.
                Some(log) => vec![std::ffi::OsString::from("--debug"), log],
                None => vec![std::ffi::OsString::from("--silent")],
            })
            .arg("--location")
            .arg(&data)
            .arg("--cert")
            .arg(&cert_path)
            .arg("--key")
            .arg(&key_path)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit());
        with_parent_death_signal(&mut cmd);
        let mut child = match cmd.spawn() {
            Ok(c) => c,
            Err(e) => panic!("could not start azurite-blob ({e}): run ./x setup (it installs npm azurite)"),
        };
        let port = wait_for_line(&mut child, "Azurite", |line| {
            line.strip_prefix("Azurite Blob service successfully listens on https://127.0.0.1:").map(str::to_owned)
        });
        Azurite { child, _dir: dir, url: format!("https://127.0.0.1:{port}/{AZURITE_ACCOUNT}"), thumbprint }
    }
}

impl Drop for Azurite {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A TCP relay in front of an emulator that a test closes and opens again on the same loopback port: the service
/// stops answering (connections refused, open ones cut) and comes back with its state intact, as a vCenter behind a
/// failed link does.
pub struct Gate {
    /// The emulator's URL with the gate's port in place of its own.
    pub url: String,
    port: u16,
    target: std::net::SocketAddr,
    open: Option<(std::sync::Arc<std::sync::atomic::AtomicBool>, std::thread::JoinHandle<()>)>,
    streams: std::sync::Arc<std::sync::Mutex<Vec<std::net::TcpStream>>>,
}

impl Gate {
    /// A gate in front of `url` (`https://127.0.0.1:<port>/…`), open.
    pub fn new(url: &str) -> Gate {
        let rest = url.strip_prefix("https://").expect("an https URL");
        let (authority, path) = rest.split_once('/').unwrap_or((rest, ""));
        let target: std::net::SocketAddr = authority.parse().expect("an ip:port authority");
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let mut gate = Gate {
            url: format!("https://127.0.0.1:{port}/{path}"),
            port,
            target,
            open: None,
            streams: Default::default(),
        };
        gate.open();
        gate
    }

    /// Accepts again on the same port.
    pub fn open(&mut self) {
        if self.open.is_some() {
            return;
        }
        // std sets SO_REUSEADDR on Unix: the port is taken again at once, whatever lingers in TIME_WAIT.
        let listener = std::net::TcpListener::bind(("127.0.0.1", self.port)).expect("the gate's port");
        listener.set_nonblocking(true).unwrap();
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let (flag, target, streams) = (stop.clone(), self.target, self.streams.clone());
        let accept = std::thread::spawn(move || {
            while !flag.load(std::sync::atomic::Ordering::Relaxed) {
                match listener.accept() {
                    Ok((client, _)) => {
                        client.set_nonblocking(false).unwrap();
                        let Ok(server) = std::net::TcpStream::connect(target) else { continue };
                        let mut kept = streams.lock().unwrap();
                        kept.push(client.try_clone().unwrap());
                        kept.push(server.try_clone().unwrap());
                        for (mut from, mut to) in
                            [(client.try_clone().unwrap(), server.try_clone().unwrap()), (server, client)]
                        {
                            std::thread::spawn(move || {
                                let _ = std::io::copy(&mut from, &mut to);
                                let _ = to.shutdown(std::net::Shutdown::Both);
                            });
                        }
                    }
                    // Polled so that closing the gate drops the listener within 10 ms.
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                        std::thread::sleep(Duration::from_millis(10))
                    }
                    Err(_) => break,
                }
            }
        });
        self.open = Some((stop, accept));
    }

    /// Refuses new connections and cuts the open ones.
    pub fn close(&mut self) {
        if let Some((stop, accept)) = self.open.take() {
            stop.store(true, std::sync::atomic::Ordering::Relaxed);
            let _ = accept.join();
        }
        for s in self.streams.lock().unwrap().drain(..) {
            let _ = s.shutdown(std::net::Shutdown::Both);
        }
    }
}

impl Drop for Gate {
    fn drop(&mut self) {
        self.close();
    }
}
