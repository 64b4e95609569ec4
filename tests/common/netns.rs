//! Three network namespaces made by a test — the control plane, the cloud site, the on-premises site — joined by
//! veth pairs: each site to the control plane, and the two sites to each other by the WAN, shaped at the cloud's
//! end with `tc … tbf`. Everything runs on addresses inside them; they are deleted on drop, whatever happened.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use super::BIN;

pub fn run(cmd: &str, args: &[&str]) -> Result<(), String> {
    let out = Command::new(cmd).args(args).output().map_err(|e| format!("{cmd}: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!("{cmd} {}: {}", args.join(" "), String::from_utf8_lossy(&out.stderr).trim()))
    }
}

pub fn ip(args: &[&str]) -> Result<(), String> {
    run("ip", args)
}

pub struct Sites {
    names: [String; 3],
    /// The interfaces of the WAN's cloud end and of the on-premises site's link to the control plane.
    wan_cloud_if: String,
    onprem_cp_if: String,
    pub children: Vec<Child>,
    octet: u32,
}

/// A vault served in the control plane's namespace: its port and an Administrator's API token.
pub struct Vault {
    pub port: String,
    pub token: String,
}

impl Sites {
    pub const CP: usize = 0;
    pub const CLOUD: usize = 1;
    pub const ONPREM: usize = 2;
    /// Host numbers of each link's ends in 10.232.<octet>.0/24.
    pub const CP_TO_ONPREM: u32 = 1;
    pub const CP_TO_CLOUD: u32 = 5;
    pub const ONPREM_WAN: u32 = 10;

    /// The namespaces with the WAN shaped to `wan_rate` (a tc rate, e.g. "100mbit"); Err (with the reason) only
    /// where the machine refuses namespaces — any later failure panics, so a test never passes by skipping.
    pub fn create(wan_rate: &str) -> Result<Sites, String> {
        use std::sync::atomic::{AtomicU32, Ordering};
        // Unique per process and per call: tests of one binary run in parallel.
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let n = NEXT.fetch_add(1, Ordering::Relaxed) % 10;
        let id = format!("{}{n}", std::process::id() % 100_000);
        let names = [format!("hw{id}x"), format!("hw{id}y"), format!("hw{id}z")];
        let octet = (std::process::id() * 10 + n) % 250 + 1;
        ip(&["netns", "add", &names[0]])?;
        // From here on, whatever fails, dropping `sites` deletes what was made.
        let sites = Sites {
            names: names.clone(),
            wan_cloud_if: format!("hw{id}yw"),
            onprem_cp_if: format!("hw{id}zx"),
            children: Vec::new(),
            octet,
        };
        let must = |r: Result<(), String>| r.unwrap_or_else(|e| panic!("setting up the namespaces: {e}"));
        for n in &names[1..] {
            must(ip(&["netns", "add", n]));
        }
        for n in &names {
            must(ip(&["-n", n, "link", "set", "lo", "up"]));
        }
        let links = [
            (Self::CP, format!("hw{id}xz"), 1, Self::ONPREM, format!("hw{id}zx"), 2),
            (Self::CP, format!("hw{id}xy"), 5, Self::CLOUD, format!("hw{id}yx"), 6),
            (Self::CLOUD, format!("hw{id}yw"), 9, Self::ONPREM, format!("hw{id}zw"), 10),
        ];
        for (a, a_if, a_host, b, b_if, b_host) in &links {
            ip(&["link", "add", a_if, "type", "veth", "peer", "name", b_if])?;
            for (ns, dev, host) in [(&names[*a], a_if, a_host), (&names[*b], b_if, b_host)] {
                ip(&["link", "set", dev, "netns", ns])?;
                ip(&["-n", ns, "addr", "add", &format!("10.232.{octet}.{host}/30"), "dev", dev])?;
                ip(&["-n", ns, "link", "set", dev, "up"])?;
            }
        }
        let wan = sites.wan_cloud_if.clone();
        let cloud = &names[Self::CLOUD];
        run(
            "ip",
            &[
                "netns", "exec", cloud, "tc", "qdisc", "add", "dev", &wan, "root", "tbf", "rate", wan_rate, "burst",
                "64kbit", "latency", "400ms",
            ],
        )?;
        Ok(sites)
    }

    /// For a test: the namespaces, or None (saying why) on a machine that refuses them, and in the PostgreSQL
    /// pass — the vault inside the namespace is on SQLite whatever the pass, and the SQLite pass ran the test.
    pub fn for_test(wan_rate: &str) -> Option<Sites> {
        if super::postgres::wanted() {
            return None;
        }
        match Sites::create(wan_rate) {
            Ok(s) => Some(s),
            Err(why) => {
                eprintln!("SKIPPED: this machine refuses network namespaces ({why})");
                None
            }
        }
    }

    pub fn addr(&self, host: u32) -> String {
        format!("10.232.{}.{host}", self.octet)
    }

    /// `homeward args…` inside a site's namespace, on SQLite (the tests' PostgreSQL listens outside).
    pub fn homeward(&self, site: usize, args: &[&str]) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &self.names[site], BIN]).args(args).env_remove("HOMEWARD_DATABASE_URL");
        c
    }

    /// Cuts or restores the WAN between the two sites.
    pub fn wan(&self, up: bool) {
        let state = if up { "up" } else { "down" };
        ip(&["-n", &self.names[Self::CLOUD], "link", "set", &self.wan_cloud_if, state]).unwrap();
    }

    /// Cuts or restores the on-premises site's link to the control plane.
    pub fn onprem_to_cp(&self, up: bool) {
        let state = if up { "up" } else { "down" };
        ip(&["-n", &self.names[Self::ONPREM], "link", "set", &self.onprem_cp_if, state]).unwrap();
    }

    /// `homeward serve` in the control plane's namespace, on all its addresses, with its vault in `data`.
    pub fn serve(&mut self, data: &Path) -> Vault {
        let mut serve = self
            .homeward(Self::CP, &["serve", "--listen", "0.0.0.0:0", "--agent-listen", "0.0.0.0:0", "--data-dir"])
            .arg(data)
            .env("HOMEWARD_ADMIN_PASSWORD", super::ADMIN_PASSWORD)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let mut lines = std::io::BufRead::lines(std::io::BufReader::new(serve.stdout.take().unwrap()));
        self.children.push(serve);
        let portal = lines.next().unwrap().unwrap();
        let port = portal.trim_end_matches('/').rsplit(':').next().unwrap().to_owned();
        std::thread::spawn(move || for _ in lines {});
        let out = self.homeward(Self::CP, &["users", "token", "admin", "--data-dir"]).arg(data).output().unwrap();
        let token = String::from_utf8(out.stdout).unwrap().trim().to_owned();
        Vault { port, token }
    }

    /// The portal's URL as a site sees it (the control plane's address on that site's link).
    pub fn portal_for(&self, site: usize, vault: &Vault) -> String {
        let host = if site == Self::CLOUD { Self::CP_TO_CLOUD } else { Self::CP_TO_ONPREM };
        format!("http://{}:{}", self.addr(host), vault.port)
    }

    /// Enrolls `name` through the API as `site` reaches it (so the command names the control plane's address on
    /// that site's link), starts it there heartbeating every second, waits for it to enroll; its folder.
    pub fn agent(&mut self, site: usize, vault: &Vault, name: &str, role: &str, dir: &Path) -> PathBuf {
        self.agent_with(site, vault, name, role, dir, &[])
    }

    /// Like [`Sites::agent`], with more arguments for `homeward agent`; its log goes to `<dir>/<name>.log`.
    pub fn agent_with(
        &mut self,
        site: usize,
        vault: &Vault,
        name: &str,
        role: &str,
        dir: &Path,
        extra: &[&str],
    ) -> PathBuf {
        let server = self.portal_for(site, vault);
        let out = self
            .homeward(Self::CP, &["agents", "enroll", name, "--role", role, "--json", "--server", &server, "--token"])
            .arg(&vault.token)
            .output()
            .unwrap();
        assert!(out.status.success(), "enroll {name}: {}", String::from_utf8_lossy(&out.stderr));
        let e: Value = serde_json::from_slice(&out.stdout).unwrap();
        let folder = dir.join(name);
        let mut args: Vec<String> =
            e["command"].as_str().unwrap().split_whitespace().skip(1).map(str::to_owned).collect();
        args.extend(["--data-dir".into(), folder.display().to_string(), "--heartbeat-seconds".into(), "1".into()]);
        args.extend(extra.iter().map(|a| a.to_string()));
        let argv: Vec<&str> = args.iter().map(String::as_str).collect();
        self.start_agent(site, &argv, &dir.join(format!("{name}.log")));
        let deadline = Instant::now() + Duration::from_secs(30);
        while !folder.join("agent.json").exists() {
            assert!(Instant::now() < deadline, "{name} did not enroll");
            std::thread::sleep(Duration::from_millis(50));
        }
        folder
    }

    /// The agents as `homeward agents list --json` prints them, from the control plane's namespace.
    /// Starts `homeward agent ARGS` in `site`, its stderr appended to `log`; answers its index in `children`.
    pub fn start_agent(&mut self, site: usize, args: &[&str], log: &Path) -> usize {
        let log = std::fs::OpenOptions::new().create(true).append(true).open(log).unwrap();
        let child = self.homeward(site, args).stdout(Stdio::null()).stderr(log).spawn().unwrap();
        self.children.push(child);
        self.children.len() - 1
    }

    /// Shapes the WAN in the other direction too (on-premises → cloud), at `rate`.
    pub fn shape_onprem_wan(&self, rate: &str) {
        let dev = self.wan_cloud_if.replace("yw", "zw");
        run(
            "ip",
            &[
                "netns",
                "exec",
                &self.names[Self::ONPREM],
                "tc",
                "qdisc",
                "add",
                "dev",
                &dev,
                "root",
                "tbf",
                "rate",
                rate,
                "burst",
                "64kbit",
                "latency",
                "400ms",
            ],
        )
        .unwrap();
    }

    /// The file naming `site`'s network namespace, for [`within`].
    pub fn ns_path(&self, site: usize) -> String {
        format!("/var/run/netns/{}", self.names[site])
    }

    pub fn agents_json(&self, vault: &Vault) -> Value {
        let server = format!("http://{}:{}", self.addr(Self::CP_TO_ONPREM), vault.port);
        let out = self
            .homeward(Self::CP, &["agents", "list", "--json", "--server", &server, "--token"])
            .arg(&vault.token)
            .output()
            .unwrap();
        assert!(out.status.success(), "agents list: {}", String::from_utf8_lossy(&out.stderr));
        serde_json::from_slice(&out.stdout).unwrap()
    }

    /// Starts `disk receive --agent-dir` in the on-premises namespace on its WAN address; the child and the
    /// address it listens on.
    pub fn receive(&self, agent_dir: &Path, dst: &Path) -> (Child, String) {
        self.receive_with("--agent-dir", agent_dir, dst)
    }

    /// The same with `--agent-dir DIR` (mutual TLS) or `--token-file FILE` (plain TCP).
    pub fn receive_with(&self, flag: &str, path: &Path, dst: &Path) -> (Child, String) {
        let listen = format!("{}:0", self.addr(Self::ONPREM_WAN));
        let mut child = self
            .homeward(Self::ONPREM, &["disk", "receive", "--listen", &listen, flag])
            .arg(path)
            .arg(dst)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let mut first = String::new();
        std::io::BufRead::read_line(&mut std::io::BufReader::new(child.stdout.as_mut().unwrap()), &mut first).unwrap();
        let addr = first.split_whitespace().nth(2).unwrap_or_else(|| panic!("unexpected: {first}")).to_owned();
        (child, addr)
    }

    /// Starts `disk sync --json --mode MODE FLAG PATH SRC TARGET` in the cloud's namespace.
    pub fn send(&self, mode: &str, flag: &str, path: &Path, src: &Path, target: &str) -> Child {
        self.homeward(Self::CLOUD, &["disk", "sync", "--json", "--mode", mode, flag])
            .arg(path)
            .arg(src)
            .arg(target)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap()
    }
}

/// One cycle that must succeed: waits (bounded) for the sender, then the receiver; the sender's JSON report.
/// Runs `f` on a thread that has moved into the network namespace `ns` names (only that thread moves), so that
/// the test can reach a vault's API there.
pub fn within<R: Send>(ns: &str, f: impl FnOnce() -> R + Send) -> R {
    use std::os::fd::AsRawFd;
    std::thread::scope(|scope| {
        scope
            .spawn(move || {
                let file = std::fs::File::open(ns).unwrap_or_else(|e| panic!("{ns}: {e}"));
                // SAFETY: a valid namespace fd; CLONE_NEWNET moves only the calling thread.
                assert_eq!(unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) }, 0, "setns {ns}");
                f()
            })
            .join()
            .unwrap_or_else(|p| std::panic::resume_unwind(p))
    })
}

pub fn cycle(sender: Child, receiver: Child) -> Value {
    let (code, out, err) = finished(sender, Duration::from_secs(1800));
    assert_eq!(code, 0, "{err}");
    let (code, _, err) = finished(receiver, Duration::from_secs(60));
    assert_eq!(code, 0, "{err}");
    serde_json::from_str(out.lines().last().unwrap()).unwrap()
}

impl Drop for Sites {
    fn drop(&mut self) {
        for c in &mut self.children {
            let _ = c.kill();
            let _ = c.wait();
        }
        // Deleting a namespace deletes its ends of the veth pairs, and with them the other ends.
        for n in &self.names {
            let _ = ip(&["netns", "del", n]);
        }
    }
}

/// Waits (bounded) for `child` to exit; its code and both outputs.
pub fn finished(mut child: Child, within: Duration) -> (i32, String, String) {
    let deadline = Instant::now() + within;
    while child.try_wait().unwrap().is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("did not exit within {within:?}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let out = child.wait_with_output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Fills `len` bytes at `offset` of `path` with pseudo-random (incompressible) bytes.
pub fn fill_random(path: &Path, offset: u64, len: usize, seed: u64) {
    let mut bytes = vec![0u8; len];
    let mut x = seed | 1;
    for chunk in bytes.chunks_mut(8) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let b = x.to_le_bytes();
        chunk.copy_from_slice(&b[..chunk.len()]);
    }
    let f = std::fs::OpenOptions::new().write(true).open(path).unwrap();
    std::os::unix::fs::FileExt::write_all_at(&f, &bytes, offset).unwrap();
}
