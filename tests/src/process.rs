//! Starts `halo-dataplane` as a real process and stops it by its PID.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
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
    /// The admin token file (`--admin-token-file`), next to the log.
    pub token_file: PathBuf,
}

impl DataPlane {
    /// Starts `halo-dataplane run` on `config` and waits until it has applied it.
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
        let mut dp = Self::spawn(binary, config, node, admin, log, extra, None)?;
        dp.wait_started(Duration::from_secs(20))?;
        Ok(dp)
    }

    /// Starts `halo-dataplane run` without waiting; `nofile` lowers its RLIMIT_NOFILE.
    pub fn spawn(
        binary: &Path,
        config: &Path,
        node: &str,
        admin: SocketAddr,
        log: &Path,
        extra: &[&str],
        nofile: Option<u64>,
    ) -> Result<Self> {
        let log_file =
            std::fs::File::create(log).with_context(|| format!("create {}", log.display()))?;
        let token_file = log.with_extension("token");
        let mut command = Command::new(binary);
        command.args(["run", "--config"]).arg(config);
        if !extra.contains(&"--admin-token-file") {
            command.arg("--admin-token-file").arg(&token_file);
        }
        if let Some(n) = nofile {
            limit_nofile(&mut command, n);
        }
        let child = command
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
        Ok(Self {
            child,
            admin,
            log: log.to_path_buf(),
            token_file,
        })
    }

    /// Waits until /healthz says a config is applied (ready, or not ready naming why).
    pub fn wait_started(&mut self, limit: Duration) -> Result<()> {
        let start = Instant::now();
        while start.elapsed() < limit {
            if let Some(status) = self.child.try_wait()? {
                bail!("halo-dataplane exited with {status}:\n{}", self.log_text());
            }
            // Its own log line first: a port picked free can be taken by another test's
            // data plane, whose /healthz must not count as this one's.
            let own = self.log_text();
            let up = own.contains("halo-dataplane running")
                || own.contains("halo-dataplane following the controller");
            if up
                && http_get_blocking(self.admin, "/healthz").is_ok_and(|(code, body)| {
                    code == 200 || (code == 503 && !body.starts_with("no config"))
                })
            {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        bail!(
            "halo-dataplane not started within {limit:?}:\n{}",
            self.log_text()
        )
    }

    /// Whether the process is still running.
    pub fn running(&mut self) -> Result<bool> {
        Ok(self.child.try_wait()?.is_none())
    }

    /// The admin token the data plane made at start.
    pub fn token(&self) -> Result<String> {
        let text = std::fs::read_to_string(&self.token_file)
            .with_context(|| format!("read {}", self.token_file.display()))?;
        Ok(text.trim().to_string())
    }

    /// An authenticated POST to the admin listener (status code, body).
    pub fn admin_post(&self, path: &str) -> Result<(u16, String)> {
        let auth = format!("Bearer {}", self.token()?);
        http_request_blocking(self.admin, "POST", path, &[("Authorization", &auth)])
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

/// Lowers the child's RLIMIT_NOFILE (soft and hard) to `n` before it runs.
fn limit_nofile(command: &mut Command, n: u64) {
    use std::os::unix::process::CommandExt;
    let limit = libc::rlimit {
        rlim_cur: n,
        rlim_max: n,
    };
    // SAFETY: setrlimit is async-signal-safe and touches only the child being exec'd.
    unsafe {
        command.pre_exec(move || {
            if libc::setrlimit(libc::RLIMIT_NOFILE, &limit) == 0 {
                Ok(())
            } else {
                Err(std::io::Error::last_os_error())
            }
        });
    }
}

/// Minimal blocking GET for admin endpoints (status code, body).
pub fn http_get_blocking(addr: SocketAddr, path: &str) -> Result<(u16, String)> {
    http_request_blocking(addr, "GET", path, &[])
}

/// Minimal blocking request with extra headers (status code, body). The Host header is
/// `addr` unless `headers` has one.
pub fn http_request_blocking(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
) -> Result<(u16, String)> {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(2))?;
    stream.set_read_timeout(Some(Duration::from_secs(5)))?;
    let mut head = format!("{method} {path} HTTP/1.1\r\n");
    if !headers.iter().any(|(k, _)| k.eq_ignore_ascii_case("host")) {
        head.push_str(&format!("Host: {addr}\r\n"));
    }
    for (k, v) in headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    head.push_str("Content-Length: 0\r\nConnection: close\r\n\r\n");
    stream.write_all(head.as_bytes())?;
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

/// A finished command's status and both outputs, for an assertion message.
pub fn describe(out: &Output) -> String {
    format!(
        "{}\nstdout:\n{}\nstderr:\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// Asserts that the command `what` succeeded; its standard output.
#[track_caller]
pub fn succeeds(what: &str, out: Output) -> String {
    assert!(out.status.success(), "{what} failed: {}", describe(&out));
    String::from_utf8_lossy(&out.stdout).into_owned()
}
