//! A real Kubernetes control plane for tests, as controller-runtime's envtest runs one: etcd
//! and kube-apiserver on free loopback ports, started here and stopped by their PIDs.
//!
//! kube-apiserver and kubectl come from `scripts/build-k8s-tools.sh`, which builds the release
//! pinned in `tests/k8s/go.mod` into `target/k8s/<version>/`; etcd comes from PATH.
//! Everything a control plane writes stays in its directory: `etcd/` (data), `certs/` (the
//! API server's self-signed serving certificate), service-account keys, the admin token,
//! `kubeconfig`, one log per process, and `pids`.

use std::ffi::OsStr;
use std::fs::{self, OpenOptions};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener};
use std::os::unix::fs::OpenOptionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

use crate::process::http_get_blocking;

/// The module that pins the Kubernetes release; its version names the binary cache directory.
const GO_MOD: &str = include_str!("../k8s/go.mod");
const WORKSPACE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/..");

const ETCD_READY_LIMIT: Duration = Duration::from_secs(30);
const APISERVER_READY_LIMIT: Duration = Duration::from_secs(60);
const STOP_GRACE: Duration = Duration::from_secs(10);
const KILL_WAIT: Duration = Duration::from_secs(5);
/// For one kubectl call; `kubectl wait --timeout` needs less than this.
pub const KUBECTL_LIMIT: Duration = Duration::from_secs(120);
const SERVICE_CIDR: &str = "10.0.0.0/24";

/// The Kubernetes release the tests run (`v1.34.x`), as pinned in tests/k8s/go.mod.
pub fn k8s_version() -> Result<&'static str> {
    GO_MOD
        .lines()
        .find_map(|l| l.trim().strip_prefix("require k8s.io/kubernetes "))
        .map(str::trim)
        .context("tests/k8s/go.mod requires no k8s.io/kubernetes version")
}

/// Where kube-apiserver and kubectl are: `HALO_K8S_BIN_DIR`, else `target/k8s/<version>/`.
pub fn bin_dir() -> Result<PathBuf> {
    if let Some(dir) = std::env::var_os("HALO_K8S_BIN_DIR") {
        return Ok(PathBuf::from(dir));
    }
    Ok(Path::new(WORKSPACE).join("target/k8s").join(k8s_version()?))
}

fn k8s_binary(name: &str) -> Result<PathBuf> {
    let path = bin_dir()?.join(name);
    if !path.is_file() {
        bail!(
            "{} not found: run scripts/build-k8s-tools.sh (builds kube-apiserver and kubectl \
             once, installs etcd)",
            path.display()
        );
    }
    Ok(path)
}

fn etcd_binary() -> Result<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .map(|dir| dir.join("etcd"))
        .find(|p| p.is_file())
        .context("etcd not found on PATH: run scripts/build-k8s-tools.sh")
}

/// Whether the processes outlive this `ControlPlane` value.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Lifetime {
    /// Stopped by `stop()` or on drop: for tests.
    Owned,
    /// Own process group, left running on drop, stopped by `stop_dir`: for `halo-lab`.
    Detached,
}

struct Proc {
    name: &'static str,
    pid: u32,
    child: Child,
    log: PathBuf,
}

/// How a process was started, so `resume` can start it again the same way.
struct Spec {
    name: &'static str,
    program: PathBuf,
    args: Vec<String>,
    lifetime: Lifetime,
}

/// A running etcd + kube-apiserver pair.
pub struct ControlPlane {
    dir: PathBuf,
    server_url: String,
    etcd_url: String,
    admin_token: String,
    kubeconfig: PathBuf,
    kubectl: PathBuf,
    procs: Vec<Proc>,
    specs: Vec<Spec>,
    stop_on_drop: bool,
}

impl ControlPlane {
    /// Starts etcd and kube-apiserver with their state in `dir` and waits until the API server
    /// is ready. They are stopped by `stop()` or when the value is dropped.
    pub fn start(dir: &Path) -> Result<Self> {
        Self::start_with(dir, Lifetime::Owned)
    }

    /// Like `start`, but the processes run in their own process group and keep running after
    /// this value is dropped (and after this program exits); `stop_dir(dir)` stops them.
    pub fn start_detached(dir: &Path) -> Result<Self> {
        Self::start_with(dir, Lifetime::Detached)
    }

    fn start_with(dir: &Path, lifetime: Lifetime) -> Result<Self> {
        fs::create_dir_all(dir).with_context(|| format!("create {}", dir.display()))?;
        // Absolute, so the PIDs' command lines name it (stop_dir checks that).
        let dir = fs::canonicalize(dir)?;
        let running = running_pids(&dir)?;
        if !running.is_empty() {
            bail!(
                "a control plane already runs in {} (pids {running:?}): stop it first",
                dir.display()
            );
        }
        let etcd = etcd_binary()?;
        let apiserver = k8s_binary("kube-apiserver")?;
        let kubectl = k8s_binary("kubectl")?;

        let credentials = Credentials::ensure(&dir)?;
        let [etcd_port, peer_port, api_port] = free_ports()?;
        let etcd_url = format!("http://127.0.0.1:{etcd_port}");
        let peer_url = format!("http://127.0.0.1:{peer_port}");
        let server_url = format!("https://127.0.0.1:{api_port}");
        let kubeconfig = dir.join("kubeconfig");
        write_private(
            &kubeconfig,
            &kubeconfig_yaml(
                &server_url,
                &dir.join("certs/apiserver.crt"),
                &credentials.admin_token,
            )?,
        )?;

        // Until it is ready, a failure stops whatever was started (Drop), whatever the lifetime.
        let mut cp = Self {
            dir: dir.clone(),
            server_url,
            etcd_url: etcd_url.clone(),
            admin_token: credentials.admin_token.clone(),
            kubeconfig,
            kubectl,
            procs: Vec::new(),
            specs: Vec::new(),
            stop_on_drop: true,
        };

        let mut etcd_args = vec![
            "--name=halo".to_string(),
            format!("--data-dir={}", dir.join("etcd").display()),
            format!("--listen-client-urls={etcd_url}"),
            format!("--advertise-client-urls={etcd_url}"),
            format!("--listen-peer-urls={peer_url}"),
            format!("--initial-advertise-peer-urls={peer_url}"),
            format!("--initial-cluster=halo={peer_url}"),
            "--logger=zap".to_string(),
            "--log-outputs=stderr".to_string(),
        ];
        // A test cluster needs no durability; etcd 3.4 (Debian 12) lacks the flag.
        if etcd_supports(&etcd, "--unsafe-no-fsync") {
            etcd_args.push("--unsafe-no-fsync".to_string());
        }
        cp.spawn("etcd", &etcd, &etcd_args, lifetime)?;
        cp.wait_etcd(etcd_port)?;

        let apiserver_args = vec![
            format!("--etcd-servers={etcd_url}"),
            format!("--secure-port={api_port}"),
            "--bind-address=127.0.0.1".to_string(),
            // Else it looks for a host address through the default route, which a test
            // machine may not have.
            "--advertise-address=127.0.0.1".to_string(),
            format!("--cert-dir={}", dir.join("certs").display()),
            format!("--service-cluster-ip-range={SERVICE_CIDR}"),
            "--authorization-mode=RBAC".to_string(),
            format!("--token-auth-file={}", credentials.token_file.display()),
            "--service-account-issuer=https://localhost".to_string(),
            format!(
                "--service-account-key-file={}",
                credentials.sa_public.display()
            ),
            format!(
                "--service-account-signing-key-file={}",
                credentials.sa_private.display()
            ),
            "--allow-privileged=true".to_string(),
            // Pods then need no service-account token (no controller manager creates them).
            "--disable-admission-plugins=ServiceAccount".to_string(),
            "--enable-priority-and-fairness=false".to_string(),
            // A loopback address is no valid endpoint for the `kubernetes` Service.
            "--endpoint-reconciler-type=none".to_string(),
        ];
        cp.spawn("kube-apiserver", &apiserver, &apiserver_args, lifetime)?;
        cp.wait_apiserver()?;

        cp.stop_on_drop = lifetime == Lifetime::Owned;
        Ok(cp)
    }

    /// `https://127.0.0.1:<port>`.
    pub fn server_url(&self) -> &str {
        &self.server_url
    }

    pub fn etcd_url(&self) -> &str {
        &self.etcd_url
    }

    /// A bearer token for a user in `system:masters`.
    pub fn admin_token(&self) -> &str {
        &self.admin_token
    }

    /// An admin kubeconfig that verifies the API server's self-signed certificate.
    pub fn kubeconfig(&self) -> &Path {
        &self.kubeconfig
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// (name, pid) of each process, in start order.
    pub fn pids(&self) -> Vec<(&'static str, u32)> {
        self.procs.iter().map(|p| (p.name, p.pid)).collect()
    }

    pub fn log_path(&self, name: &str) -> PathBuf {
        self.dir.join(format!("{name}.log"))
    }

    /// Runs the cached kubectl against this control plane (bounded by `KUBECTL_LIMIT`).
    pub fn kubectl<I, S>(&self, args: I) -> Result<Output>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        self.kubectl_with_stdin(args, "")
    }

    /// Runs kubectl with `stdin` as its standard input (for `apply -f -`).
    pub fn kubectl_with_stdin<I, S>(&self, args: I, stdin: &str) -> Result<Output>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        let mut cmd = Command::new(&self.kubectl);
        cmd.arg("--kubeconfig").arg(&self.kubeconfig).args(args);
        run_bounded(cmd, stdin.as_bytes(), KUBECTL_LIMIT)
    }

    /// Stops kube-apiserver, then etcd (SIGTERM, SIGKILL after a grace period). Keeps `dir`.
    pub fn stop(mut self) -> Result<()> {
        self.stop_procs()
    }

    /// Stops kube-apiserver and etcd like `stop`, but keeps what `resume` needs to start
    /// them again on the same ports with the same data (an outage of the control plane).
    pub fn pause(&mut self) -> Result<()> {
        self.stop_procs()
    }

    /// Starts again what `pause` stopped and waits until the API server is ready.
    pub fn resume(&mut self) -> Result<()> {
        if !self.procs.is_empty() {
            bail!("the control plane is running");
        }
        let specs = std::mem::take(&mut self.specs);
        let etcd_port: u16 = self
            .etcd_url
            .rsplit_once(':')
            .and_then(|(_, p)| p.parse().ok())
            .context("etcd URL without port")?;
        for spec in &specs {
            self.spawn(spec.name, &spec.program, &spec.args, spec.lifetime)?;
            if spec.name == "etcd" {
                self.wait_etcd(etcd_port)?;
            }
        }
        self.wait_apiserver()
    }

    fn stop_procs(&mut self) -> Result<()> {
        let mut failures = Vec::new();
        // Reverse start order: the API server goes before the etcd it uses.
        while let Some(mut p) = self.procs.pop() {
            if let Err(e) = terminate(p.name, p.pid, Some(&mut p.child)) {
                failures.push(format!("{e:#}"));
            }
        }
        if failures.is_empty() {
            let _ = fs::remove_file(self.dir.join("pids"));
            Ok(())
        } else {
            bail!("stopping the control plane: {}", failures.join("; "))
        }
    }

    fn spawn(
        &mut self,
        name: &'static str,
        program: &Path,
        args: &[String],
        lifetime: Lifetime,
    ) -> Result<()> {
        let log = self.log_path(name);
        // Appended to, so a resumed process keeps the log of its first run.
        let out = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log)
            .with_context(|| format!("create {}", log.display()))?;
        let mut cmd = Command::new(program);
        cmd.args(args)
            .current_dir(&self.dir)
            .stdin(Stdio::null())
            .stdout(out.try_clone()?)
            .stderr(out);
        if lifetime == Lifetime::Detached {
            // Out of the terminal's process group: Ctrl-C there does not reach it.
            cmd.process_group(0);
        }
        let child = cmd
            .spawn()
            .with_context(|| format!("spawn {}", program.display()))?;
        self.procs.push(Proc {
            name,
            pid: child.id(),
            child,
            log,
        });
        self.specs.push(Spec {
            name,
            program: program.to_path_buf(),
            args: args.to_vec(),
            lifetime,
        });
        // Written after each start, so a half-started control plane can still be stopped.
        let pids: String = self
            .procs
            .iter()
            .map(|p| format!("{} {}\n", p.name, p.pid))
            .collect();
        fs::write(self.dir.join("pids"), pids)?;
        Ok(())
    }

    /// An error if a process has exited, with the end of its log.
    fn check_alive(&mut self) -> Result<()> {
        for p in &mut self.procs {
            if let Some(status) = p.child.try_wait()? {
                bail!(
                    "{} exited with {status}; end of {}:\n{}",
                    p.name,
                    p.log.display(),
                    log_tail(&p.log, 40)
                );
            }
        }
        Ok(())
    }

    fn wait_etcd(&mut self, port: u16) -> Result<()> {
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        let start = Instant::now();
        while start.elapsed() < ETCD_READY_LIMIT {
            self.check_alive()?;
            if let Ok((200, body)) = http_get_blocking(addr, "/health")
                && body.contains("true")
            {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        bail!(
            "etcd not healthy within {ETCD_READY_LIMIT:?}; end of its log:\n{}",
            log_tail(&self.log_path("etcd"), 40)
        )
    }

    fn wait_apiserver(&mut self) -> Result<()> {
        let start = Instant::now();
        let mut last = String::new();
        while start.elapsed() < APISERVER_READY_LIMIT {
            self.check_alive()?;
            let mut cmd = Command::new(&self.kubectl);
            cmd.arg("--kubeconfig").arg(&self.kubeconfig).args([
                "--request-timeout=5s",
                "get",
                "--raw",
                "/readyz",
            ]);
            match run_bounded(cmd, b"", Duration::from_secs(10)) {
                Ok(out) if out.status.success() && String::from_utf8_lossy(&out.stdout) == "ok" => {
                    return Ok(());
                }
                Ok(out) => {
                    last = format!(
                        "{}{}",
                        String::from_utf8_lossy(&out.stdout),
                        String::from_utf8_lossy(&out.stderr)
                    );
                }
                Err(e) => last = format!("{e:#}"),
            }
            std::thread::sleep(Duration::from_millis(250));
        }
        bail!(
            "kube-apiserver not ready within {APISERVER_READY_LIMIT:?}: {}\nend of its log:\n{}",
            last.trim(),
            log_tail(&self.log_path("kube-apiserver"), 40)
        )
    }
}

impl Drop for ControlPlane {
    fn drop(&mut self) {
        if self.stop_on_drop {
            let _ = self.stop_procs();
        }
    }
}

/// Stops the processes recorded in `dir/pids` (by `start_detached`, or left by a test that was
/// killed). A PID is signalled only while its command line still names `dir`, so a PID reused
/// by another process is left alone. Returns what was stopped.
pub fn stop_dir(dir: &Path) -> Result<Vec<(String, u32)>> {
    let dir = fs::canonicalize(dir).with_context(|| format!("no directory {}", dir.display()))?;
    let mut stopped = Vec::new();
    let mut failures = Vec::new();
    // Reverse start order, as `stop` does.
    for (name, pid) in read_pids(&dir)?.into_iter().rev() {
        if !proc_alive(pid) || !names_dir(pid, &dir) {
            continue;
        }
        match terminate(&name, pid, None) {
            Ok(()) => stopped.push((name, pid)),
            Err(e) => failures.push(format!("{e:#}")),
        }
    }
    if !failures.is_empty() {
        bail!("stopping the control plane: {}", failures.join("; "));
    }
    let _ = fs::remove_file(dir.join("pids"));
    Ok(stopped)
}

/// The PIDs in `dir/pids` that still run a process of this control plane.
fn running_pids(dir: &Path) -> Result<Vec<u32>> {
    Ok(read_pids(dir)?
        .into_iter()
        .map(|(_, pid)| pid)
        .filter(|&pid| proc_alive(pid) && names_dir(pid, dir))
        .collect())
}

fn read_pids(dir: &Path) -> Result<Vec<(String, u32)>> {
    let path = dir.join("pids");
    let text = match fs::read_to_string(&path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e).with_context(|| format!("read {}", path.display())),
    };
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|line| {
            let (name, pid) = line
                .split_once(' ')
                .with_context(|| format!("{}: bad line {line:?}", path.display()))?;
            let pid = pid
                .trim()
                .parse()
                .with_context(|| format!("{}: bad pid in {line:?}", path.display()))?;
            Ok((name.to_string(), pid))
        })
        .collect()
}

/// Running, and not a zombie waiting to be reaped.
fn proc_alive(pid: u32) -> bool {
    let Ok(stat) = fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return false;
    };
    // The state follows the parenthesised command name, which may itself hold spaces.
    let state = stat
        .rsplit_once(')')
        .and_then(|(_, rest)| rest.trim_start().chars().next());
    !matches!(state, Some('Z' | 'X') | None)
}

/// Whether the process's command line mentions `dir` (every process started here does).
fn names_dir(pid: u32, dir: &Path) -> bool {
    let Ok(cmdline) = fs::read(format!("/proc/{pid}/cmdline")) else {
        return false;
    };
    // With the separator, so a directory does not claim those of a sibling it prefixes.
    let dir = format!("{}/", dir.to_string_lossy());
    cmdline
        .split(|&b| b == 0)
        .any(|arg| String::from_utf8_lossy(arg).contains(&dir))
}

fn is_running(pid: u32, child: &mut Option<&mut Child>) -> bool {
    match child {
        Some(child) => matches!(child.try_wait(), Ok(None)),
        None => proc_alive(pid),
    }
}

fn wait_gone(pid: u32, child: &mut Option<&mut Child>, limit: Duration) -> bool {
    let start = Instant::now();
    while start.elapsed() < limit {
        if !is_running(pid, child) {
            return true;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    !is_running(pid, child)
}

/// SIGTERM, then SIGKILL if it is still there after `STOP_GRACE`. Only `pid` is signalled.
fn terminate(name: &str, pid: u32, mut child: Option<&mut Child>) -> Result<()> {
    if !is_running(pid, &mut child) {
        return Ok(());
    }
    signal(pid, "TERM")?;
    if wait_gone(pid, &mut child, STOP_GRACE) {
        return Ok(());
    }
    signal(pid, "KILL")?;
    if wait_gone(pid, &mut child, KILL_WAIT) {
        return Ok(());
    }
    bail!("{name} (pid {pid}) still runs after SIGKILL")
}

fn signal(pid: u32, sig: &str) -> Result<()> {
    let out = Command::new("kill")
        .args(["-s", sig, &pid.to_string()])
        .stderr(Stdio::piped())
        .output()
        .context("run kill")?;
    // It may have exited between the check and the signal.
    if !out.status.success() && proc_alive(pid) {
        bail!(
            "kill -s {sig} {pid}: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}

/// Three distinct free loopback ports: all bound at once so none is handed out twice.
fn free_ports() -> Result<[u16; 3]> {
    let listeners = [
        TcpListener::bind("127.0.0.1:0")?,
        TcpListener::bind("127.0.0.1:0")?,
        TcpListener::bind("127.0.0.1:0")?,
    ];
    let mut ports = [0; 3];
    for (port, l) in ports.iter_mut().zip(&listeners) {
        *port = l.local_addr()?.port();
    }
    Ok(ports)
}

fn etcd_supports(etcd: &Path, flag: &str) -> bool {
    let mut cmd = Command::new(etcd);
    cmd.arg("--help");
    run_bounded(cmd, b"", Duration::from_secs(10)).is_ok_and(|out| {
        String::from_utf8_lossy(&out.stdout).contains(flag)
            || String::from_utf8_lossy(&out.stderr).contains(flag)
    })
}

/// Service-account key pair and the static token file, made once per directory so a restarted
/// control plane keeps accepting the tokens it issued.
struct Credentials {
    sa_private: PathBuf,
    sa_public: PathBuf,
    token_file: PathBuf,
    admin_token: String,
}

impl Credentials {
    fn ensure(dir: &Path) -> Result<Self> {
        let sa_private = dir.join("sa.key");
        let sa_public = dir.join("sa.pub");
        if !sa_private.is_file() || !sa_public.is_file() {
            openssl(&[
                "genpkey",
                "-algorithm",
                "RSA",
                "-pkeyopt",
                "rsa_keygen_bits:2048",
                "-out",
                &sa_private.to_string_lossy(),
            ])?;
            openssl(&[
                "pkey",
                "-in",
                &sa_private.to_string_lossy(),
                "-pubout",
                "-out",
                &sa_public.to_string_lossy(),
            ])?;
        }
        let token_file = dir.join("tokens.csv");
        if !token_file.is_file() {
            let token = random_hex(16)?;
            // token,user,uid,"groups": system:masters passes every authorization check.
            write_private(
                &token_file,
                &format!("{token},halo-admin,halo-admin,\"system:masters\"\n"),
            )?;
        }
        let admin_token = fs::read_to_string(&token_file)?
            .split(',')
            .next()
            .map(str::to_string)
            .filter(|t| !t.is_empty())
            .with_context(|| format!("no token in {}", token_file.display()))?;
        Ok(Self {
            sa_private,
            sa_public,
            token_file,
            admin_token,
        })
    }
}

fn openssl(args: &[&str]) -> Result<()> {
    let mut cmd = Command::new("openssl");
    cmd.args(args);
    let out = run_bounded(cmd, b"", Duration::from_secs(30))
        .context("run openssl (install it: scripts/build-k8s-tools.sh)")?;
    if !out.status.success() {
        bail!(
            "openssl {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}

fn random_hex(bytes: usize) -> Result<String> {
    let mut buf = vec![0u8; bytes];
    fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut buf))
        .context("read /dev/urandom")?;
    Ok(buf.iter().map(|b| format!("{b:02x}")).collect())
}

fn kubeconfig_yaml(server: &str, ca: &Path, token: &str) -> Result<String> {
    // JSON strings are valid YAML scalars: no quoting questions for paths.
    let q = |s: &str| serde_json::to_string(s);
    Ok(format!(
        "apiVersion: v1
kind: Config
clusters:
- name: halo
  cluster:
    server: {server}
    certificate-authority: {ca}
users:
- name: halo-admin
  user:
    token: {token}
contexts:
- name: halo
  context:
    cluster: halo
    user: halo-admin
current-context: halo
",
        server = q(server)?,
        ca = q(&ca.to_string_lossy())?,
        token = q(token)?,
    ))
}

/// Writes a file only its owner can read (it holds a token or a key).
fn write_private(path: &Path, contents: &str) -> Result<()> {
    let mut f = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("create {}", path.display()))?;
    f.write_all(contents.as_bytes())?;
    Ok(())
}

fn log_tail(path: &Path, lines: usize) -> String {
    let text = fs::read_to_string(path).unwrap_or_default();
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

/// Runs `cmd` to completion with `stdin`, capturing its output; kills it (by its PID, it being
/// our child) if it takes longer than `limit`.
fn run_bounded(mut cmd: Command, stdin: &[u8], limit: Duration) -> Result<Output> {
    cmd.stdin(if stdin.is_empty() {
        Stdio::null()
    } else {
        Stdio::piped()
    })
    .stdout(Stdio::piped())
    .stderr(Stdio::piped());
    let program = cmd.get_program().to_string_lossy().into_owned();
    let mut child = cmd.spawn().with_context(|| format!("spawn {program}"))?;
    // Writer and readers on threads: no deadlock on a full pipe, whatever the sizes.
    let writer = child.stdin.take().map(|mut pipe| {
        let data = stdin.to_vec();
        std::thread::spawn(move || {
            let _ = pipe.write_all(&data);
        })
    });
    let reader = |pipe: Option<Box<dyn Read + Send>>| {
        pipe.map(|mut pipe| {
            std::thread::spawn(move || {
                let mut buf = Vec::new();
                let _ = pipe.read_to_end(&mut buf);
                buf
            })
        })
    };
    let stdout = reader(
        child
            .stdout
            .take()
            .map(|p| Box::new(p) as Box<dyn Read + Send>),
    );
    let stderr = reader(
        child
            .stderr
            .take()
            .map(|p| Box::new(p) as Box<dyn Read + Send>),
    );
    let start = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait()? {
            break status;
        }
        if start.elapsed() > limit {
            let _ = child.kill();
            let _ = child.wait();
            bail!("{program} did not finish within {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    if let Some(w) = writer {
        let _ = w.join();
    }
    let collect = |h: Option<std::thread::JoinHandle<Vec<u8>>>| {
        h.and_then(|h| h.join().ok()).unwrap_or_default()
    };
    Ok(Output {
        status,
        stdout: collect(stdout),
        stderr: collect(stderr),
    })
}
