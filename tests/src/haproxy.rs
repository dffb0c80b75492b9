//! HAProxy as a real peer for tests: run in the foreground on a config written to a
//! temporary directory, stopped by its PID when dropped.

use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

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
        std::fs::write(&config, format!("{PREAMBLE}{sections}"))?;
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

impl Drop for Haproxy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
