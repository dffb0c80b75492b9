//! A Halo cluster for end-to-end tests: a real control plane with Halo's CRDs, two Nodes
//! (each with a pod that data plane tokens are bound to), the controller's serving
//! certificate, and the controller and data plane processes started against it.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use halo_crds::NodeConfig;

use crate::backends;
use crate::control_plane::ControlPlane;
use crate::pki;
use crate::process::{binary, http_get_blocking};

/// The file a data plane following the controller keeps its last applied config in,
/// inside its `--state-dir`.
const LAST_GOOD: &str = "last-good.json";

/// A child process killed (by its PID) and reaped when dropped.
pub struct Proc(pub Child);

impl Proc {
    pub fn pid(&self) -> u32 {
        self.0.id()
    }

    /// Its exit status if it has ended on its own.
    pub fn exited(&mut self) -> Option<std::process::ExitStatus> {
        self.0.try_wait().ok().flatten()
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The control plane and a temporary directory for everything else (certificates,
/// tokens, logs, data plane state); removed when dropped unless `keep` says otherwise.
pub struct Cluster {
    pub cp: ControlPlane,
    pub dir: PathBuf,
    keep: bool,
}

/// The Gateway API release whose CRDs the tests install (`scripts/fetch-gateway-api.sh`).
pub const GATEWAY_API_VERSION: &str = "v1.5.1";

/// The kubectl calls that install the Gateway API CRDs `scripts/fetch-gateway-api.sh`
/// fetched and wait until they are served.
pub fn gateway_api_steps() -> Result<Vec<Vec<String>>> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join(format!("../target/gateway-api/{GATEWAY_API_VERSION}"));
    if !dir
        .join("gateway.networking.k8s.io_httproutes.yaml")
        .exists()
    {
        anyhow::bail!(
            "no Gateway API CRDs in {}: run scripts/fetch-gateway-api.sh",
            dir.display()
        );
    }
    let crds = [
        "gatewayclasses",
        "gateways",
        "httproutes",
        "referencegrants",
    ]
    .map(|k| format!("crd/{k}.gateway.networking.k8s.io"));
    let mut wait: Vec<String> = ["wait", "--for", "condition=established", "--timeout=60s"]
        .map(String::from)
        .to_vec();
    wait.extend(crds);
    // Server-side: the CRDs are too large for the last-applied annotation.
    let apply = ["apply", "--server-side", "-f"].map(String::from).to_vec();
    Ok(vec![
        [apply, vec![dir.to_string_lossy().into_owned()]].concat(),
        wait,
    ])
}

/// The Nodes every cluster has, with their InternalIP.
pub const NODES: [(&str, &str); 2] = [("node-a", "192.0.2.1"), ("node-b", "192.0.2.2")];

impl Cluster {
    /// The cluster of the end-to-end tests: the two [`NODES`], each with a pod.
    pub fn start(label: &str) -> Result<Self> {
        let nodes: Vec<(String, String)> = NODES
            .iter()
            .map(|(n, ip)| (n.to_string(), ip.to_string()))
            .collect();
        Self::start_with(&format!("e2e-{label}"), &nodes, true)
    }

    /// A control plane with the CRDs, namespace halo-system, the data plane's
    /// ServiceAccount, `nodes` (name, InternalIP) and, with `pods`, a pod `dp-<node>` on
    /// each to bind tokens to; plus a CA and a serving certificate for the controller.
    pub fn start_with(label: &str, nodes: &[(String, String)], pods: bool) -> Result<Self> {
        let dir = std::env::temp_dir().join(backends::unique(&format!("halo-{label}-")));
        std::fs::create_dir_all(&dir)?;
        let cp = ControlPlane::start(&dir.join("cp"))?;
        let c = Self {
            cp,
            dir,
            keep: false,
        };
        c.kubectl_ok(&[
            "apply",
            "-f",
            &format!("{}/../deploy/crds", env!("CARGO_MANIFEST_DIR")),
        ])?;
        c.kubectl_ok(&[
            "wait",
            "--for",
            "condition=established",
            "--timeout=60s",
            "crd/virtualips.halo.dev",
            "crd/loadbalancers.halo.dev",
        ])?;
        c.apply(
            "apiVersion: v1\nkind: Namespace\nmetadata: {name: halo-system}\n---\napiVersion: v1\nkind: ServiceAccount\nmetadata: {name: halo-dataplane, namespace: halo-system}\n---\napiVersion: v1\nkind: ServiceAccount\nmetadata: {name: intruder, namespace: halo-system}\n",
        )?;
        for (node, ip) in nodes {
            c.apply(&format!("apiVersion: v1\nkind: Node\nmetadata: {{name: {node}, labels: {{kubernetes.io/hostname: {node}}}}}\n"))?;
            c.kubectl_ok(&[
                "patch", "node", node, "--subresource=status", "--type=merge", "-p",
                &format!("{{\"status\":{{\"addresses\":[{{\"type\":\"InternalIP\",\"address\":\"{ip}\"}}]}}}}"),
            ])?;
            // A pod on that node, so tokens can be bound to it (and so to the node).
            if pods {
                c.apply(&format!(
                    "apiVersion: v1\nkind: Pod\nmetadata: {{name: dp-{node}, namespace: halo-system}}\nspec:\n  nodeName: {node}\n  serviceAccountName: halo-dataplane\n  containers: [{{name: dp, image: halo}}]\n"
                ))?;
            }
        }
        // The controller's stream port: a CA (the data planes' --ca-file) and a serving
        // certificate it signs.
        let ca = pki::ca(&c.dir, "ca", "halo-test-ca")?;
        pki::signed(
            &c.dir,
            &ca,
            "tls",
            "halo-controller",
            "IP:127.0.0.1,DNS:localhost",
        )?;
        Ok(c)
    }

    /// Installs the Gateway API CRDs (standard channel) that `scripts/fetch-gateway-api.sh`
    /// fetched, and waits until they are served.
    pub fn install_gateway_api(&self) -> Result<()> {
        let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join(format!("../target/gateway-api/{GATEWAY_API_VERSION}"));
        if !dir
            .join("gateway.networking.k8s.io_httproutes.yaml")
            .exists()
        {
            anyhow::bail!(
                "no Gateway API CRDs in {}: run scripts/fetch-gateway-api.sh",
                dir.display()
            );
        }
        // Server-side: the CRDs are too large for the last-applied annotation.
        self.kubectl_ok(&["apply", "--server-side", "-f", &dir.to_string_lossy()])?;
        self.kubectl_ok(&[
            "wait",
            "--for",
            "condition=established",
            "--timeout=60s",
            "crd/gatewayclasses.gateway.networking.k8s.io",
            "crd/gateways.gateway.networking.k8s.io",
            "crd/httproutes.gateway.networking.k8s.io",
            "crd/referencegrants.gateway.networking.k8s.io",
        ])?;
        Ok(())
    }

    pub fn kubectl_ok(&self, args: &[&str]) -> Result<String> {
        let out = self.cp.kubectl(args)?;
        if !out.status.success() {
            bail!(
                "kubectl {}: {}",
                args.join(" "),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// `kubectl apply -f -` with `yaml`.
    pub fn apply(&self, yaml: &str) -> Result<()> {
        let out = self.cp.kubectl_with_stdin(["apply", "-f", "-"], yaml)?;
        if !out.status.success() {
            bail!(
                "kubectl apply: {}\n{yaml}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        Ok(())
    }

    /// A token for `account` in halo-system with the controller's audience, bound to
    /// `pod` if given; written to a file whose path is returned.
    pub fn token(&self, account: &str, pod: Option<&str>) -> Result<PathBuf> {
        let mut args = vec![
            "create",
            "token",
            account,
            "-n",
            "halo-system",
            "--audience",
            "halo-controller",
            "--duration",
            "1h",
        ];
        if let Some(p) = pod {
            args.extend(["--bound-object-kind", "Pod", "--bound-object-name", p]);
        }
        let token = self.kubectl_ok(&args)?;
        let path = self
            .dir
            .join(format!("token-{account}-{}", pod.unwrap_or("none")));
        std::fs::write(&path, token.trim())?;
        Ok(path)
    }

    /// `halo-controller` as `name`, streaming on `port`, metrics on `metrics`; its log
    /// is `log(name)`.
    pub fn controller(&self, name: &str, port: u16, metrics: u16) -> Result<Proc> {
        self.controller_with(name, port, metrics, &[])
    }

    /// [`Cluster::controller`] with `extra` arguments, e.g. `--allow-track-exec`.
    pub fn controller_with(
        &self,
        name: &str,
        port: u16,
        metrics: u16,
        extra: &[&str],
    ) -> Result<Proc> {
        let log = std::fs::File::create(self.log_path(name))?;
        let child = Command::new(binary("halo-controller")?)
            .arg("--kubeconfig")
            .arg(self.cp.kubeconfig())
            .args(["--namespace", "halo-system", "--identity", name])
            .args([
                "--listen",
                &format!("127.0.0.1:{port}"),
                "--metrics",
                &format!("127.0.0.1:{metrics}"),
            ])
            .arg("--tls-cert")
            .arg(self.dir.join("tls.crt"))
            .arg("--tls-key")
            .arg(self.dir.join("tls.key"))
            .args(["--lease-duration", "3s", "--heartbeat", "1s"])
            .args(extra)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()?;
        Ok(Proc(child))
    }

    /// `halo-dataplane` for `node` following the controller on `controller_port`; its
    /// log is `log("dp-<node>")`, its state in `state_dir(node)`.
    pub fn dataplane(
        &self,
        node: &str,
        controller_port: u16,
        admin: SocketAddr,
        token: &Path,
    ) -> Result<Proc> {
        let log = std::fs::File::create(self.log_path(&format!("dp-{node}")))?;
        let child = Command::new(binary("halo-dataplane")?)
            .args([
                "run",
                "--controller",
                &format!("https://127.0.0.1:{controller_port}"),
                "--node",
                node,
            ])
            .arg("--token-file")
            .arg(token)
            .arg("--ca-file")
            .arg(self.dir.join("ca.crt"))
            .arg("--state-dir")
            .arg(self.state_dir(node))
            .args(["--admin", &admin.to_string()])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()?;
        Ok(Proc(child))
    }

    pub fn state_dir(&self, node: &str) -> PathBuf {
        self.dir.join(format!("state-{node}"))
    }

    /// The config the data plane of `node` (started by `dataplane`) last applied and
    /// persisted; `None` before its first one.
    pub fn node_config(&self, node: &str) -> Option<NodeConfig> {
        let text = std::fs::read(self.state_dir(node).join(LAST_GOOD)).ok()?;
        serde_json::from_slice(&text).ok()
    }

    pub fn log_path(&self, name: &str) -> PathBuf {
        self.dir.join(format!("{name}.log"))
    }

    pub fn log(&self, name: &str) -> String {
        std::fs::read_to_string(self.log_path(name)).unwrap_or_default()
    }

    /// Whether the working directory (logs, certificates, state) outlives the cluster.
    pub fn keep(&mut self, keep: bool) {
        self.keep = keep;
    }

    /// HTTPS request to the controller's stream port with a token; returns the status code.
    pub fn stream_status(&self, port: u16, node: &str, token: Option<&Path>) -> Result<u16> {
        let mut cmd = Command::new("curl");
        cmd.args([
            "-s",
            "-o",
            "/dev/null",
            "-w",
            "%{http_code}",
            "--max-time",
            "3",
            "--cacert",
        ])
        .arg(self.dir.join("ca.crt"));
        if let Some(t) = token {
            let value = std::fs::read_to_string(t).with_context(|| format!("{}", t.display()))?;
            cmd.args(["-H", &format!("Authorization: Bearer {}", value.trim())]);
        }
        cmd.arg(format!("https://127.0.0.1:{port}/v1/nodes/{node}/status"))
            .args(["-X", "POST", "-d", "{}"]);
        let out = cmd.output()?;
        Ok(String::from_utf8_lossy(&out.stdout)
            .trim()
            .parse()
            .unwrap_or(0))
    }

    /// `jsonpath` of one object (`kubectl get KIND NAME -n NS -o jsonpath=...`).
    pub fn jsonpath(&self, kind: &str, name: &str, namespace: &str, path: &str) -> Result<String> {
        self.kubectl_ok(&[
            "get",
            kind,
            name,
            "-n",
            namespace,
            "-o",
            &format!("jsonpath={path}"),
        ])
    }

    /// The reasons of the Events about object `name` of `kind` in `namespace`.
    pub fn event_reasons(&self, kind: &str, name: &str, namespace: &str) -> Result<Vec<String>> {
        self.event_field(kind, name, namespace, "reason")
    }

    /// The messages of the Events about object `name` of `kind` in `namespace`, one each.
    pub fn event_messages(&self, kind: &str, name: &str, namespace: &str) -> Result<Vec<String>> {
        self.event_field(kind, name, namespace, "message")
    }

    fn event_field(
        &self,
        kind: &str,
        name: &str,
        namespace: &str,
        field: &str,
    ) -> Result<Vec<String>> {
        let text = self.kubectl_ok(&[
            "get",
            "events",
            "-n",
            namespace,
            "--field-selector",
            &format!("involvedObject.kind={kind},involvedObject.name={name}"),
            "-o",
            &format!("jsonpath={{range .items[*]}}{{.{field}}}{{\"\\n\"}}{{end}}"),
        ])?;
        Ok(text.lines().map(str::to_string).collect())
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        if self.keep {
            eprintln!(
                "   (working directory and logs kept in {})",
                self.dir.display()
            );
        } else {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

/// Polls `f` every 50 ms until it holds or `limit` passes.
pub fn wait_for(limit: Duration, mut f: impl FnMut() -> bool) -> bool {
    let start = Instant::now();
    while start.elapsed() < limit {
        if f() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    false
}

/// A data plane's `/status` as JSON (`Null` when it does not answer).
pub fn dp_status(admin: SocketAddr) -> serde_json::Value {
    http_get_blocking(admin, "/status")
        .ok()
        .and_then(|(_, body)| serde_json::from_str(&body).ok())
        .unwrap_or_default()
}
