//! A throw-away PostgreSQL cluster for tests: Debian's server binaries (installed by `./x setup`), a temp dir, a
//! free loopback port. One cluster per test binary, started on first use; every test gets a database of its own.
//!
//! The server is a direct child of the test process with a parent-death signal, so it stops even when the test
//! binary is killed; a normal exit stops it and removes its folder. As root it runs as the `postgres` user, since
//! PostgreSQL refuses to run as root.

#![allow(dead_code)]

use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

pub struct Cluster {
    pub port: u16,
    dir: PathBuf,
    child: Mutex<Option<Child>>,
}

static CLUSTER: OnceLock<Cluster> = OnceLock::new();
static NEXT_DB: AtomicU32 = AtomicU32::new(0);

/// Which engine the end-to-end suites use: `HOMEWARD_TEST_DATABASE=postgres`, else SQLite.
pub fn wanted() -> bool {
    std::env::var("HOMEWARD_TEST_DATABASE").is_ok_and(|v| v == "postgres" || v == "postgresql")
}

fn bin_dir() -> PathBuf {
    let mut versions: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .map(|d| {
            d.filter_map(|e| e.ok()).map(|e| e.path().join("bin")).filter(|p| p.join("postgres").exists()).collect()
        })
        .unwrap_or_default();
    versions.sort();
    versions.pop().expect("PostgreSQL's server is not installed: run ./x setup (it installs Debian's postgresql)")
}

/// uid and gid of `postgres` when we are root (PostgreSQL refuses root), else none.
fn run_as() -> Option<(u32, u32)> {
    // SAFETY: getuid has no preconditions.
    if unsafe { libc::getuid() } != 0 {
        return None;
    }
    let name = std::ffi::CString::new("postgres").unwrap();
    // SAFETY: a valid C string; the result is read at once, before any other getpwnam call in this process.
    let pw = unsafe { libc::getpwnam(name.as_ptr()) };
    assert!(!pw.is_null(), "running as root, but there is no 'postgres' user to run PostgreSQL: run ./x setup");
    // SAFETY: non-null pointer returned by getpwnam.
    unsafe { Some(((*pw).pw_uid, (*pw).pw_gid)) }
}

fn command(bin: &Path, user: Option<(u32, u32)>) -> Command {
    let mut c = Command::new(bin);
    if let Some((uid, gid)) = user {
        c.uid(uid).gid(gid);
    }
    c.env_remove("PGDATA");
    c
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// The parent-death signal fires when the *thread* that spawned the child ends, and test threads end with their
/// test: spawn from a thread that lives as long as the process.
fn spawn_from_a_thread_that_lives(mut cmd: Command) -> Child {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::Builder::new()
        .name("postgres-parent".into())
        .spawn(move || {
            let _ = tx.send(cmd.spawn());
            loop {
                std::thread::park();
            }
        })
        .expect("a thread");
    rx.recv().expect("the spawning thread answers").expect("postgres")
}

extern "C" fn stop_at_exit() {
    if let Some(c) = CLUSTER.get() {
        c.stop();
    }
}

impl Cluster {
    /// The cluster of this test binary, started on first use.
    pub fn get() -> &'static Cluster {
        CLUSTER.get_or_init(|| {
            let c = Cluster::start();
            // SAFETY: registering a plain extern "C" function.
            unsafe { libc::atexit(stop_at_exit) };
            c
        })
    }

    /// A cluster of one's own (for a test that stops and restarts the server), stopped and removed on drop.
    pub fn dedicated() -> Cluster {
        Cluster::start()
    }

    fn start() -> Cluster {
        let user = run_as();
        let dir = std::env::temp_dir().join(format!("homeward-pg-{}-{}", std::process::id(), free_port()));
        std::fs::create_dir_all(&dir).unwrap();
        if let Some((uid, gid)) = user {
            std::os::unix::fs::chown(&dir, Some(uid), Some(gid)).unwrap();
        }
        let out = command(&bin_dir().join("initdb"), user)
            .args(["-D"])
            .arg(dir.join("data"))
            .args(["-U", "homeward", "--auth=trust", "-E", "UTF8", "--no-sync", "--no-instructions"])
            .output()
            .expect("initdb");
        assert!(out.status.success(), "initdb failed: {}", String::from_utf8_lossy(&out.stderr));
        let mut cluster = Cluster { port: 0, dir, child: Mutex::new(None) };
        for _ in 0..5 {
            cluster.port = free_port();
            if cluster.start_server() {
                return cluster;
            }
        }
        panic!("PostgreSQL did not start on any port: see {}", cluster.dir.join("server.log").display());
    }

    /// Starts the server on the cluster's port; false when it exited at once (the port was taken meanwhile).
    fn start_server(&self) -> bool {
        let (bin, user, port, dir) = (bin_dir(), run_as(), self.port, &self.dir);
        let mut cmd = command(&bin.join("postgres"), user);
        cmd.arg("-D").arg(dir.join("data")).args(["-p", &port.to_string(), "-k"]).arg(dir).args([
            "-c",
            "listen_addresses=127.0.0.1",
            // A test cluster: durability is the engine's business, not these tests'.
            "-c",
            "fsync=off",
            "-c",
            "synchronous_commit=off",
            "-c",
            "full_page_writes=off",
            "-c",
            "max_connections=300",
        ]);
        let log = std::fs::OpenOptions::new().create(true).append(true).open(dir.join("server.log")).unwrap();
        cmd.stdout(Stdio::null()).stderr(Stdio::from(log));
        // SAFETY: prctl in the child before exec; stops the server when this test process dies.
        unsafe {
            cmd.pre_exec(|| {
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGQUIT);
                Ok(())
            });
        }
        let mut child = spawn_from_a_thread_that_lives(cmd);
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
                // Accepting connections; wait until it also accepts sessions (startup finished).
                let ready = command(&bin.join("pg_isready"), None)
                    .args(["-h", "127.0.0.1", "-p", &port.to_string(), "-U", "homeward", "-d", "postgres"])
                    .output()
                    .is_ok_and(|o| o.status.success());
                if ready {
                    *self.child.lock().unwrap() = Some(child);
                    return true;
                }
            }
            if let Ok(Some(_)) = child.try_wait() {
                return false;
            }
            assert!(Instant::now() < deadline, "PostgreSQL did not start: see {}", dir.join("server.log").display());
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Stops the server (fast shutdown: sessions are cut, as when a database host goes away).
    pub fn stop_server(&self) {
        if let Some(mut child) = self.child.lock().ok().and_then(|mut c| c.take()) {
            // SAFETY: signalling our own child by pid.
            unsafe { libc::kill(child.id() as i32, libc::SIGINT) };
            let _ = child.wait();
        }
    }

    /// Starts the server again on the same port and data.
    pub fn restart_server(&self) {
        assert!(self.start_server(), "PostgreSQL did not come back on port {}", self.port);
    }

    /// A new empty database on the cluster; its URL.
    pub fn database(&self) -> String {
        let name = format!("t{}_{}", std::process::id(), NEXT_DB.fetch_add(1, Ordering::Relaxed));
        let out = command(&bin_dir().join("createdb"), None)
            .args(["-h", "127.0.0.1", "-p", &self.port.to_string(), "-U", "homeward", &name])
            .output()
            .expect("createdb");
        assert!(out.status.success(), "createdb failed: {}", String::from_utf8_lossy(&out.stderr));
        format!("postgres://homeward@127.0.0.1:{}/{name}", self.port)
    }

    fn stop(&self) {
        if let Some(mut child) = self.child.lock().ok().and_then(|mut c| c.take()) {
            // SAFETY: signalling our own child by pid.
            unsafe { libc::kill(child.id() as i32, libc::SIGQUIT) };
            let _ = child.wait();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        self.stop();
    }
}
