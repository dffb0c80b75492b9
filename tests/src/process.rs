//! Starts `halo-dataplane` as a real process and stops it by its PID.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

/// The directory holding the workspace binaries (next to the test executable's `deps/`),
/// unless `HALO_BIN_DIR` says otherwise.
pub fn bin_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("HALO_BIN_DIR") {
        return PathBuf::from(dir);
    }
    let exe = std::env::current_exe().unwrap_or_default();
    let mut dir = exe.parent().map(Path::to_path_buf).unwrap_or_default();
    if dir.ends_with("deps") {
        dir.pop();
    }
    dir
}

pub fn binary(name: &str) -> Result<PathBuf> {
    let path = bin_dir().join(name);
    if !path.exists() {
        bail!(
            "{} not found: run `cargo build --workspace --bins` first",
            path.display()
        );
    }
    Ok(path)
}

pub struct DataPlane {
    child: Child,
    pub admin: SocketAddr,
    pub log: PathBuf,
}

impl DataPlane {
    /// Starts `halo-dataplane run` on `config` and waits until it serves /healthz.
    pub fn start(
        binary: &Path,
        config: &Path,
        node: &str,
        admin: SocketAddr,
        log: &Path,
    ) -> Result<Self> {
        Self::start_with(binary, config, node, admin, log, &[])
    }

    pub fn start_with(
        binary: &Path,
        config: &Path,
        node: &str,
        admin: SocketAddr,
        log: &Path,
        extra: &[&str],
    ) -> Result<Self> {
        let log_file =
            std::fs::File::create(log).with_context(|| format!("create {}", log.display()))?;
        let child = Command::new(binary)
            .args(["run", "--config"])
            .arg(config)
            .args(["--node", node, "--admin", &admin.to_string()])
            .args(if extra.contains(&"--poll") {
                &[][..]
            } else {
                &["--poll", "100ms"][..]
            })
            .args(extra)
            .env(
                "RUST_LOG",
                std::env::var("RUST_LOG").unwrap_or_else(|_| "info".into()),
            )
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log_file)
            .spawn()
            .with_context(|| format!("spawn {}", binary.display()))?;
        let mut dp = Self {
            child,
            admin,
            log: log.to_path_buf(),
        };
        dp.wait_healthy(Duration::from_secs(20))?;
        Ok(dp)
    }

    fn wait_healthy(&mut self, limit: Duration) -> Result<()> {
        let start = Instant::now();
        while start.elapsed() < limit {
            if let Some(status) = self.child.try_wait()? {
                bail!("halo-dataplane exited with {status}:\n{}", self.log_text());
            }
            if http_get_blocking(self.admin, "/healthz").is_ok_and(|(code, _)| code == 200) {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        bail!(
            "halo-dataplane not healthy within {limit:?}:\n{}",
            self.log_text()
        )
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    pub fn status_json(&self) -> Result<String> {
        let (_, body) = http_get_blocking(self.admin, "/status")?;
        Ok(body)
    }

    pub fn metrics(&self) -> Result<String> {
        let (_, body) = http_get_blocking(self.admin, "/metrics")?;
        Ok(body)
    }

    /// Sends a signal to this process (by its PID).
    pub fn signal(&self, sig: &str) -> Result<()> {
        let status = Command::new("kill")
            .args(["-s", sig, &self.pid().to_string()])
            .status()?;
        if !status.success() {
            bail!("kill -s {sig} failed");
        }
        Ok(())
    }

    /// Waits for the process to exit by itself.
    pub fn wait_exit(&mut self, limit: Duration) -> Result<std::process::ExitStatus> {
        let start = Instant::now();
        while start.elapsed() < limit {
            if let Some(status) = self.child.try_wait()? {
                return Ok(status);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        bail!("process {} still running after {limit:?}", self.pid())
    }
}

impl Drop for DataPlane {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Minimal blocking GET for admin endpoints (status code, body).
pub fn http_get_blocking(addr: SocketAddr, path: &str) -> Result<(u16, String)> {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(2))?;
    stream.set_read_timeout(Some(Duration::from_secs(5)))?;
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )?;
    let mut raw = String::new();
    stream.read_to_string(&mut raw)?;
    let code = raw
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .context("no status line")?;
    let body = raw
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    Ok((code, body))
}
