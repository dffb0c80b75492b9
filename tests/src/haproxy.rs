//! HAProxy as a real peer for tests: run in the foreground on a config written to a
//! temporary directory, stopped by its PID when dropped; or, as a site's load balancer,
//! inside a lab namespace ([`InLab`]), where the lab owns the process.

use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

use crate::netns::{Host, Lab};

/// How long HAProxy may take to bind its listeners.
const START_LIMIT: Duration = Duration::from_secs(15);

/// Put before every test config: one thread (the machine is shared), HTTP mode and
/// bounded timeouts.
const PREAMBLE: &str = "global\n    nbthread 1\n\ndefaults\n    mode http\n    timeout connect 5s\n    timeout client 30s\n    timeout server 30s\n\n";

/// Whether an `haproxy` binary is on PATH (scripts/install-test-deps.sh installs it).
pub fn available() -> bool {
    Command::new("haproxy")
        .arg("-v")
        .stdin(Stdio::null())
        .output()
        .is_ok_and(|o| o.status.success())
}

/// A complete configuration: the test preamble, then `sections`.
pub fn config(sections: &str) -> String {
    format!("{PREAMBLE}{sections}")
}

/// A running HAProxy.
pub struct Haproxy {
    child: Child,
    pub config: PathBuf,
    pub log: PathBuf,
}

impl Haproxy {
    /// Writes `sections` (frontends, backends, listens) after a preamble to
    /// `dir/<name>.cfg` and starts HAProxy on it; returns once every address in `binds`
    /// accepts connections.
    pub fn start(dir: &Path, name: &str, sections: &str, binds: &[SocketAddr]) -> Result<Self> {
        let config = dir.join(format!("{name}.cfg"));
        std::fs::write(&config, self::config(sections))?;
        let log = dir.join(format!("{name}.log"));
        let out = std::fs::File::create(&log)?;
        let child = Command::new("haproxy")
            .arg("-db") // foreground: the child is HAProxy itself, its PID ours to stop
            .arg("-f")
            .arg(&config)
            .stdin(Stdio::null())
            .stdout(out.try_clone()?)
            .stderr(out)
            .spawn()
            .context("spawn haproxy (install it: scripts/install-test-deps.sh)")?;
        let mut h = Self { child, config, log };
        h.wait_bound(binds)?;
        Ok(h)
    }

    fn wait_bound(&mut self, binds: &[SocketAddr]) -> Result<()> {
        let start = Instant::now();
        while start.elapsed() < START_LIMIT {
            if let Some(status) = self.child.try_wait()? {
                bail!("haproxy exited with {status}:\n{}", self.log_text());
            }
            let up = binds
                .iter()
                .all(|a| TcpStream::connect_timeout(a, Duration::from_millis(200)).is_ok());
            if up {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        bail!(
            "haproxy did not bind {binds:?} within {START_LIMIT:?}:\n{}",
            self.log_text()
        )
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

/// HAProxy running inside a lab host's namespace (the lab kills it on drop).
#[derive(Debug)]
pub struct InLab {
    pub pid: u32,
    pub config: PathBuf,
    pub log: PathBuf,
}

impl InLab {
    /// Writes `text` (a complete haproxy.cfg) to `dir/<name>.cfg`, checks it with
    /// `haproxy -c`, starts HAProxy in `host`'s namespace from `dir` (`-C`: relative
    /// paths such as `crt` files are found there) and returns once it listens on
    /// every address of `binds` (seen from the namespace's socket table, so an address
    /// the host does not hold yet counts too).
    pub fn start(
        lab: &Lab,
        host: &Host,
        dir: &Path,
        name: &str,
        text: &str,
        binds: &[SocketAddr],
    ) -> Result<Self> {
        let config = dir.join(format!("{name}.cfg"));
        std::fs::write(&config, text)?;
        let config_arg = config.to_string_lossy().to_string();
        let dir_arg = dir.to_string_lossy().to_string();
        lab.exec_in(
            &host.ns,
            &["haproxy", "-c", "-q", "-C", &dir_arg, "-f", &config_arg],
        )
        .context("haproxy -c")?;
        let log = dir.join(format!("{name}.log"));
        let program = which("haproxy")?;
        let pid = lab.spawn(
            host,
            &program,
            &["-db", "-C", &dir_arg, "-f", &config_arg],
            &log,
        )?;
        let h = Self { pid, config, log };
        let start = Instant::now();
        while start.elapsed() < START_LIMIT {
            if binds.iter().all(|a| lab.listening(host, *a)) {
                return Ok(h);
            }
            if lab.wait_exit(pid, Duration::from_millis(50)).is_ok() {
                bail!("haproxy exited:\n{}", h.log_text());
            }
        }
        bail!(
            "haproxy did not bind {binds:?} within {START_LIMIT:?}:\n{}",
            h.log_text()
        )
    }

    /// Stops it with `signal` (`USR1`: soft stop, finishing open connections; `TERM`:
    /// at once) and waits until it has exited.
    pub fn stop(&self, lab: &Lab, signal: &str) -> Result<()> {
        lab.signal(self.pid, signal)?;
        lab.wait_exit(self.pid, Duration::from_secs(10))
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

fn which(program: &str) -> Result<PathBuf> {
    std::env::var_os("PATH")
        .into_iter()
        .flat_map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .chain(["/usr/sbin".into(), "/usr/local/sbin".into()])
        .map(|d| d.join(program))
        .find(|p| p.exists())
        .with_context(|| format!("{program} not found (scripts/install-test-deps.sh)"))
}

impl Drop for Haproxy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
