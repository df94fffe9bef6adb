//! A private PostgreSQL cluster run from the system's server binaries.
//!
//! `mart` uses it when no `DATABASE_URL` is set, and the tests use it for their
//! throwaway databases. The server never runs as root: when we are root it runs as
//! the `postgres` system user (or `nobody`), which owns the data directory.
//!
//! The server is started from a dedicated thread that waits on it and asks the
//! kernel to stop it (parent-death signal) when that thread ends, so a killed
//! `mart` or test process never leaves a server behind.

use std::net::TcpListener;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use nix::sys::signal::{self, Signal};
use nix::unistd::{Gid, Pid, Uid, User};

/// Why the embedded server could not be started.
#[derive(Debug, thiserror::Error)]
pub enum EmbeddedError {
    #[error(
        "no PostgreSQL server binaries found (looked in MART_PG_BIN, /usr/lib/postgresql/*/bin and PATH): \
         install the `postgresql` package or set DATABASE_URL"
    )]
    NoBinaries,
    #[error("embedded PostgreSQL in {dir}: {reason}")]
    Failed { dir: PathBuf, reason: String },
}

/// How hard the server tries to keep data across a machine crash.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Durability {
    /// fsync on: what `mart` uses for its own data.
    Durable,
    /// fsync off: fast throwaway clusters for tests.
    Throwaway,
}

/// A running private PostgreSQL server.
#[derive(Debug)]
pub struct EmbeddedPostgres {
    dir: PathBuf,
    port: u16,
    password: String,
    /// `None` when we attached to a server another `mart` process runs.
    owned: Option<Owned>,
}

#[derive(Debug)]
struct Owned {
    pid: Pid,
    exited: std::sync::Mutex<std::sync::mpsc::Receiver<()>>,
}

impl EmbeddedPostgres {
    /// Starts (and on first use initialises) the cluster kept in `dir`.
    /// Blocking: call it from start-up code or `spawn_blocking`.
    pub fn start(dir: &Path, durability: Durability) -> Result<Self, EmbeddedError> {
        let bin = find_bin_dir().ok_or(EmbeddedError::NoBinaries)?;
        let fail = |reason: String| EmbeddedError::Failed {
            dir: dir.to_owned(),
            reason,
        };
        std::fs::create_dir_all(dir).map_err(|e| fail(format!("cannot create directory: {e}")))?;
        let dir = dir
            .canonicalize()
            .map_err(|e| fail(format!("cannot resolve directory: {e}")))?;
        let owner = server_user().map_err(&fail)?;
        let data = dir.join("pgdata");
        let password_file = dir.join("pg-password");

        if !data.join("PG_VERSION").exists() {
            init(&bin, &dir, durability, owner).map_err(&fail)?;
        } else {
            chown_tree(&data, owner).map_err(&fail)?;
        }
        let password = std::fs::read_to_string(&password_file)
            .map_err(|e| fail(format!("cannot read {}: {e}", password_file.display())))?
            .trim()
            .to_owned();

        if let Some(port) = running_port(&data) {
            // Another mart process (say `mart serve` while we run `mart migrate`)
            // already runs this cluster: use its server rather than fail on the lock.
            return Ok(Self {
                dir,
                port,
                password,
                owned: None,
            });
        }
        let port = free_port().map_err(|e| fail(format!("no free port: {e}")))?;
        let (pid, exit_rx) = launch(&bin, &dir, &data, port, durability, owner).map_err(&fail)?;
        let pg = Self {
            dir: dir.clone(),
            port,
            password,
            owned: Some(Owned {
                pid: Pid::from_raw(i32::try_from(pid).map_err(|e| fail(e.to_string()))?),
                exited: std::sync::Mutex::new(exit_rx),
            }),
        };
        pg.wait_until_accepting(Duration::from_secs(60))?;
        Ok(pg)
    }

    /// The URL of database `db` on this server.
    pub fn url(&self, db: &str) -> String {
        format!(
            "postgresql://postgres:{}@127.0.0.1:{}/{db}",
            self.password, self.port
        )
    }

    /// The directory holding the cluster.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Stops the server ("fast" shutdown: running transactions roll back, all
    /// committed data is flushed) and waits for it to exit.
    pub fn stop(self) {
        let Some(owned) = self.owned else {
            return;
        };
        let _ = signal::kill(owned.pid, Signal::SIGINT);
        if let Ok(exited) = owned.exited.lock() {
            let _ = exited.recv_timeout(Duration::from_secs(30));
        }
    }

    fn wait_until_accepting(&self, limit: Duration) -> Result<(), EmbeddedError> {
        let started = Instant::now();
        loop {
            let exited = self.owned.as_ref().is_some_and(|owned| {
                owned
                    .exited
                    .lock()
                    .is_ok_and(|exited| exited.try_recv().is_ok())
            });
            if exited {
                return Err(EmbeddedError::Failed {
                    dir: self.dir.clone(),
                    reason: format!(
                        "postgres exited during start-up; see {}",
                        self.dir.join("postgres.log").display()
                    ),
                });
            }
            // `pg_isready` would need another binary; a log line is authoritative.
            let log = std::fs::read_to_string(self.dir.join("postgres.log")).unwrap_or_default();
            if log.contains("ready to accept connections") {
                return Ok(());
            }
            if started.elapsed() > limit {
                return Err(EmbeddedError::Failed {
                    dir: self.dir.clone(),
                    reason: "postgres did not become ready within 60 s".into(),
                });
            }
            std::thread::sleep(Duration::from_millis(25));
        }
    }
}

/// Creates the cluster in `dir/pgdata`, with a random password for `postgres`.
fn init(
    bin: &Path,
    dir: &Path,
    durability: Durability,
    owner: Option<(Uid, Gid)>,
) -> Result<(), String> {
    let data = dir.join("pgdata");
    let password_file = dir.join("pg-password");
    let password = random_password();
    write_private(&password_file, &password).map_err(|e| e.to_string())?;
    if let Some((uid, gid)) = owner {
        // The server user reads the password once, during initdb only.
        nix::unistd::chown(&password_file, Some(uid), Some(gid))
            .map_err(|e| format!("chown: {e}"))?;
    }
    std::fs::create_dir_all(&data).map_err(|e| e.to_string())?;
    chown_tree(dir, owner)?;
    let mut initdb = Command::new(bin.join("initdb"));
    initdb
        .arg("-D")
        .arg(&data)
        .args(["-U", "postgres", "-E", "UTF8", "--locale=C.UTF-8"])
        .args(["--auth-local=trust", "--auth-host=scram-sha-256"])
        .arg(format!("--pwfile={}", password_file.display()));
    if durability == Durability::Throwaway {
        initdb.arg("-N");
    }
    as_user(&mut initdb, owner);
    let out = initdb
        .output()
        .map_err(|e| format!("cannot run initdb: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "initdb failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    if owner.is_some() {
        // Back to us only: the server no longer needs it.
        nix::unistd::chown(
            &password_file,
            Some(Uid::effective()),
            Some(Gid::effective()),
        )
        .map_err(|e| format!("chown: {e}"))?;
    }
    Ok(())
}

/// Runs the server on `data` in a thread of its own; its pid, and a channel
/// that hears when it exits.
fn launch(
    bin: &Path,
    dir: &Path,
    data: &Path,
    port: u16,
    durability: Durability,
    owner: Option<(Uid, Gid)>,
) -> Result<(u32, std::sync::mpsc::Receiver<()>), String> {
    let log = std::fs::File::create(dir.join("postgres.log"))
        .map_err(|e| format!("cannot create log: {e}"))?;
    if let Some((uid, gid)) = owner {
        let _ = nix::unistd::chown(&dir.join("postgres.log"), Some(uid), Some(gid));
    }
    let mut server = Command::new(bin.join("postgres"));
    server
        .arg("-D")
        .arg(data)
        .args(["-p", &port.to_string()])
        .args(["-c", "listen_addresses=127.0.0.1"])
        .args(["-c", "unix_socket_directories="])
        .args(["-c", "max_connections=400"])
        .stdin(Stdio::null())
        .stdout(log.try_clone().map_err(|e| e.to_string())?)
        .stderr(log);
    if durability == Durability::Throwaway {
        server.args(["-c", "fsync=off", "-c", "synchronous_commit=off"]);
        server.args(["-c", "full_page_writes=off"]);
    }
    as_user(&mut server, owner);
    die_with_parent(&mut server);

    // The thread that spawns the server must outlive it: the parent-death
    // signal fires when the spawning *thread* exits.
    let (pid_tx, pid_rx) = std::sync::mpsc::channel();
    let (exit_tx, exit_rx) = std::sync::mpsc::channel();
    std::thread::Builder::new()
        .name("embedded-postgres".into())
        .spawn(move || match server.spawn() {
            Ok(mut child) => {
                let _ = pid_tx.send(Ok(child.id()));
                let _ = child.wait();
                let _ = exit_tx.send(());
            }
            Err(e) => {
                let _ = pid_tx.send(Err(e));
            }
        })
        .map_err(|e| format!("cannot start thread: {e}"))?;
    let pid = pid_rx
        .recv()
        .map_err(|e| e.to_string())?
        .map_err(|e| format!("cannot run postgres: {e}"))?;
    Ok((pid, exit_rx))
}

/// The port of a live server already running on `data`, from its lock file
/// (line 1 is the postmaster's pid, line 4 its port).
fn running_port(data: &Path) -> Option<u16> {
    let lock = std::fs::read_to_string(data.join("postmaster.pid")).ok()?;
    let mut lines = lock.lines();
    let pid: i32 = lines.next()?.trim().parse().ok()?;
    let port = lines.nth(2)?.trim().parse().ok()?;
    // EPERM still means the process exists (it belongs to another user).
    let alive = !matches!(
        signal::kill(Pid::from_raw(pid), None),
        Err(nix::errno::Errno::ESRCH)
    );
    alive.then_some(port)
}

/// The newest server binaries: `MART_PG_BIN`, Debian's versioned directories,
/// then whatever `initdb` is on the PATH.
fn find_bin_dir() -> Option<PathBuf> {
    if let Some(dir) = std::env::var_os("MART_PG_BIN") {
        let dir = PathBuf::from(dir);
        return dir.join("postgres").exists().then_some(dir);
    }
    let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|entry| {
            let version = entry.file_name().to_str()?.parse().ok()?;
            let bin = entry.path().join("bin");
            bin.join("postgres").exists().then_some((version, bin))
        })
        .collect();
    versions.sort();
    if let Some((_, bin)) = versions.pop() {
        return Some(bin);
    }
    std::env::var_os("PATH").and_then(|path| {
        std::env::split_paths(&path)
            .find(|dir| dir.join("initdb").exists() && dir.join("postgres").exists())
    })
}

/// Who the server runs as: ourselves, unless we are root, which PostgreSQL refuses.
fn server_user() -> Result<Option<(Uid, Gid)>, String> {
    if !Uid::effective().is_root() {
        return Ok(None);
    }
    for name in ["postgres", "nobody"] {
        if let Ok(Some(user)) = User::from_name(name) {
            return Ok(Some((user.uid, user.gid)));
        }
    }
    Err("running as root and no `postgres` or `nobody` user exists to run the server".into())
}

fn as_user(cmd: &mut Command, owner: Option<(Uid, Gid)>) {
    if let Some((uid, gid)) = owner {
        cmd.uid(uid.as_raw()).gid(gid.as_raw());
        // Keep HOME and friends from pointing at root's files.
        cmd.env_remove("HOME").current_dir("/");
    }
}

#[allow(unsafe_code)]
fn die_with_parent(cmd: &mut Command) {
    // SAFETY: the closure runs in the forked child before exec and only makes the
    // async-signal-safe prctl(2) call. It runs after the uid switch, which would
    // otherwise clear the parent-death signal.
    unsafe {
        cmd.pre_exec(|| {
            nix::sys::prctl::set_pdeathsig(Signal::SIGINT).map_err(std::io::Error::from)
        });
    }
}

fn chown_tree(path: &Path, owner: Option<(Uid, Gid)>) -> Result<(), String> {
    let Some((uid, gid)) = owner else {
        return Ok(());
    };
    nix::unistd::chown(path, Some(uid), Some(gid))
        .map_err(|e| format!("chown {}: {e}", path.display()))?;
    if path.is_dir() {
        for entry in std::fs::read_dir(path).map_err(|e| e.to_string())? {
            let entry = entry.map_err(|e| e.to_string())?;
            if entry.file_type().map_err(|e| e.to_string())?.is_symlink() {
                continue;
            }
            chown_tree(&entry.path(), owner)?;
        }
    }
    Ok(())
}

fn free_port() -> std::io::Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

fn random_password() -> String {
    uuid::Uuid::new_v4().simple().to_string()
}

fn write_private(path: &Path, contents: &str) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)?;
    file.write_all(contents.as_bytes())
}
