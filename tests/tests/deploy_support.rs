//! Shared by the `deploy_*` tests, which include it with `#[path = "deploy_support.rs"] mod
//! support;`. Built on its own as a test target too, where it has no tests.
//!
//! Helm comes from `scripts/build-helm.sh` (`target/helm/<version>/helm`, or `$HALO_HELM`);
//! kube-apiserver, kubectl and etcd from `scripts/build-k8s-tools.sh`. Every process runs
//! bounded in time and talks to loopback only.

#![allow(dead_code)]

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use halo_tests::backends;
use halo_tests::control_plane::{self, ControlPlane};
use serde_json::Value;

pub const ROOT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/..");
/// The namespace the plain manifests use, and the tests install the chart into.
pub const NS: &str = "halo-system";
/// For one helm call (an install against a fresh API server takes seconds).
pub const HELM_LIMIT: Duration = Duration::from_secs(180);

const BUILD_HELM: &str = include_str!("../../scripts/build-helm.sh");

pub fn root() -> PathBuf {
    PathBuf::from(ROOT)
}

pub fn chart_dir() -> PathBuf {
    root().join("deploy/helm/halo")
}

/// The Helm release `scripts/build-helm.sh` builds (its `helm_version=` line).
pub fn helm_version() -> Result<&'static str> {
    BUILD_HELM
        .lines()
        .find_map(|l| l.trim().strip_prefix("helm_version="))
        .map(str::trim)
        .context("scripts/build-helm.sh has no helm_version= line")
}

/// `$HALO_HELM`, else `target/helm/<version>/helm`.
pub fn helm_binary() -> Result<PathBuf> {
    if let Some(path) = std::env::var_os("HALO_HELM") {
        return Ok(PathBuf::from(path));
    }
    let path = root()
        .join("target/helm")
        .join(helm_version()?)
        .join("helm");
    if !path.is_file() {
        bail!(
            "{} not found: run scripts/build-helm.sh (builds Helm once)",
            path.display()
        );
    }
    Ok(path)
}

pub fn kubectl_binary() -> Result<PathBuf> {
    let path = control_plane::bin_dir()?.join("kubectl");
    if !path.is_file() {
        bail!(
            "{} not found: run scripts/build-k8s-tools.sh",
            path.display()
        );
    }
    Ok(path)
}

/// Runs `cmd` with `stdin`, capturing its output; kills it (our child, by its PID) after
/// `limit`.
pub fn run_bounded(mut cmd: Command, stdin: &str, limit: Duration) -> Result<Output> {
    use std::io::Write;
    cmd.stdin(if stdin.is_empty() {
        Stdio::null()
    } else {
        Stdio::piped()
    })
    .stdout(Stdio::piped())
    .stderr(Stdio::piped());
    let program = cmd.get_program().to_string_lossy().into_owned();
    let mut child = cmd.spawn().with_context(|| format!("spawn {program}"))?;
    let writer = child.stdin.take().map(|mut pipe| {
        let data = stdin.as_bytes().to_vec();
        std::thread::spawn(move || {
            let _ = pipe.write_all(&data);
        })
    });
    let mut out_pipe = child.stdout.take().context("stdout")?;
    let mut err_pipe = child.stderr.take().context("stderr")?;
    let out_reader = std::thread::spawn(move || {
        let mut buf = Vec::new();
        let _ = out_pipe.read_to_end(&mut buf);
        buf
    });
    let err_reader = std::thread::spawn(move || {
        let mut buf = Vec::new();
        let _ = err_pipe.read_to_end(&mut buf);
        buf
    });
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
    Ok(Output {
        status,
        stdout: out_reader.join().unwrap_or_default(),
        stderr: err_reader.join().unwrap_or_default(),
    })
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// A scratch directory, removed on drop unless the test failed (then its path is printed).
pub struct Scratch {
    pub dir: PathBuf,
}

impl Scratch {
    pub fn new(label: &str) -> Result<Self> {
        let dir = std::env::temp_dir().join(backends::unique(&format!("halo-deploy-{label}-")));
        std::fs::create_dir_all(&dir)?;
        Ok(Self { dir })
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("test failed: kept {}", self.dir.display());
        } else {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

/// Helm with its cache, config and data in `home` (nothing from the user's environment).
pub fn helm_command(home: &Path) -> Result<Command> {
    let mut cmd = Command::new(helm_binary()?);
    for (var, sub) in [
        ("HELM_CACHE_HOME", "cache"),
        ("HELM_CONFIG_HOME", "config"),
        ("HELM_DATA_HOME", "data"),
    ] {
        cmd.env(var, home.join(sub));
    }
    cmd.env_remove("KUBECONFIG").env_remove("HELM_NAMESPACE");
    Ok(cmd)
}

/// `helm template` (no cluster needed): the rendered YAML, or the error.
pub fn helm_template(home: &Path, chart: &Path, extra: &[&str]) -> Result<String> {
    let mut cmd = helm_command(home)?;
    cmd.args(["template", "halo"])
        .arg(chart)
        .args(["--namespace", NS])
        .args(extra);
    let out = run_bounded(cmd, "", HELM_LIMIT)?;
    if !out.status.success() {
        bail!("helm template {}: {}", extra.join(" "), text(&out.stderr));
    }
    Ok(text(&out.stdout))
}

/// A control plane in its own scratch directory, with helpers for kubectl and helm.
pub struct Cluster {
    // Declared first: dropped (stopped) before the directory goes.
    pub cp: ControlPlane,
    pub scratch: Scratch,
}

impl Cluster {
    pub fn start(label: &str) -> Result<Self> {
        let scratch = Scratch::new(label)?;
        let cp = ControlPlane::start(&scratch.dir.join("cp"))?;
        Ok(Self { cp, scratch })
    }

    pub fn dir(&self) -> &Path {
        &self.scratch.dir
    }

    pub fn kubectl_ok(&self, args: &[&str]) -> Result<String> {
        let out = self.cp.kubectl(args)?;
        if !out.status.success() {
            bail!("kubectl {}: {}", args.join(" "), text(&out.stderr));
        }
        Ok(text(&out.stdout))
    }

    pub fn kubectl_stdin_ok(&self, args: &[&str], stdin: &str) -> Result<String> {
        let out = self.cp.kubectl_with_stdin(args, stdin)?;
        if !out.status.success() {
            bail!("kubectl {}: {}", args.join(" "), text(&out.stderr));
        }
        Ok(text(&out.stdout))
    }

    pub fn apply(&self, yaml: &str) -> Result<()> {
        self.kubectl_stdin_ok(&["apply", "-f", "-"], yaml)
            .with_context(|| format!("applying:\n{yaml}"))?;
        Ok(())
    }

    /// Parses multi-document YAML into objects the way kubectl does (client-side dry run,
    /// which needs the API server only to know the kinds).
    pub fn parse(&self, yaml: &str) -> Result<Vec<Value>> {
        let json = self.kubectl_stdin_ok(
            &["create", "--dry-run=client", "-o", "json", "-f", "-"],
            yaml,
        )?;
        // One JSON document per object (or a List).
        let mut objects = Vec::new();
        for value in serde_json::Deserializer::from_str(&json).into_iter::<Value>() {
            let value = value.context("kubectl printed something else than JSON")?;
            match value["kind"].as_str() {
                Some("List") => {
                    objects.extend(value["items"].as_array().cloned().unwrap_or_default())
                }
                _ => objects.push(value),
            }
        }
        Ok(objects)
    }

    pub fn get_json(&self, args: &[&str]) -> Result<Value> {
        let mut all = vec!["get"];
        all.extend_from_slice(args);
        all.extend(["-o", "json"]);
        Ok(serde_json::from_str(&self.kubectl_ok(&all)?)?)
    }

    /// One key of a Secret in [`NS`], decoded.
    pub fn secret_text(&self, name: &str, key: &str) -> Result<String> {
        self.kubectl_ok(&[
            "get",
            "secret",
            name,
            "-n",
            NS,
            "-o",
            &format!("go-template={{{{index .data \"{key}\" | base64decode}}}}"),
        ])
    }

    pub fn wait_crds_established(&self) -> Result<()> {
        self.kubectl_ok(&[
            "wait",
            "--for",
            "condition=established",
            "--timeout=60s",
            "crd/virtualips.halo.dev",
            "crd/loadbalancers.halo.dev",
            "crd/virtualippools.halo.dev",
        ])?;
        Ok(())
    }

    pub fn helm(&self, args: &[&str]) -> Result<Output> {
        let mut cmd = helm_command(&self.dir().join("helm"))?;
        cmd.arg("--kubeconfig").arg(self.cp.kubeconfig()).args(args);
        run_bounded(cmd, "", HELM_LIMIT)
    }

    pub fn helm_ok(&self, args: &[&str]) -> Result<String> {
        let out = self.helm(args)?;
        if !out.status.success() {
            bail!("helm {}: {}", args.join(" "), text(&out.stderr));
        }
        Ok(text(&out.stdout))
    }

    /// `kubectl auth can-i VERB RESOURCE [extra]` as the ServiceAccount `account` of NS, with
    /// the groups its tokens carry.
    pub fn can_i(&self, account: &str, verb: &str, resource: &str, extra: &[&str]) -> bool {
        let user = format!("system:serviceaccount:{NS}:{account}");
        let group = format!("system:serviceaccounts:{NS}");
        let mut args = vec![
            "auth",
            "can-i",
            verb,
            resource,
            "--as",
            &user,
            "--as-group",
            "system:serviceaccounts",
            "--as-group",
            &group,
            "--as-group",
            "system:authenticated",
        ];
        args.extend_from_slice(extra);
        self.cp
            .kubectl(&args)
            .is_ok_and(|o| text(&o.stdout).trim() == "yes")
    }

    /// A kubeconfig for `account` (a token from `kubectl create token`), trusting the API
    /// server's certificate as the admin kubeconfig does.
    pub fn service_account_kubeconfig(&self, account: &str) -> Result<PathBuf> {
        let token = self.kubectl_ok(&["create", "token", account, "-n", NS, "--duration", "1h"])?;
        let ca = self.kubectl_ok(&[
            "config",
            "view",
            "--raw",
            "-o",
            "jsonpath={.clusters[0].cluster.certificate-authority}",
        ])?;
        let q = |s: &str| serde_json::to_string(s);
        let yaml = format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: test\n  cluster:\n    server: {}\n    certificate-authority: {}\nusers:\n- name: {account}\n  user:\n    token: {}\ncontexts:\n- name: test\n  context: {{cluster: test, user: {account}}}\ncurrent-context: test\n",
            q(self.cp.server_url())?,
            q(ca.trim())?,
            q(token.trim())?,
        );
        let path = self.dir().join(format!("kubeconfig-{account}"));
        std::fs::write(&path, yaml)?;
        Ok(path)
    }

    /// A Pod made from a workload's pod template (`kind`/`name` in NS), as its controller
    /// would create it, on `node`; created for real or as a server-side dry run.
    pub fn pod_from_template(
        &self,
        kind: &str,
        name: &str,
        pod: &str,
        node: &str,
        dry_run: bool,
    ) -> Result<()> {
        let workload = self.get_json(&[kind, name, "-n", NS])?;
        let template = &workload["spec"]["template"];
        let mut spec = template["spec"].clone();
        spec["nodeName"] = Value::from(node);
        let object = serde_json::json!({
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": pod, "namespace": NS, "labels": template["metadata"]["labels"]},
            "spec": spec,
        });
        let mut args = vec!["create", "-f", "-"];
        if dry_run {
            args.push("--dry-run=server");
        }
        self.kubectl_stdin_ok(&args, &object.to_string())
            .with_context(|| format!("Pod from {kind}/{name}"))?;
        Ok(())
    }

    /// A Node with an InternalIP (no kubelet runs: it only has to exist).
    pub fn node(&self, name: &str, ip: &str) -> Result<()> {
        self.apply(&format!(
            "apiVersion: v1\nkind: Node\nmetadata: {{name: {name}, labels: {{kubernetes.io/hostname: {name}}}}}\n"
        ))?;
        self.kubectl_ok(&[
            "patch",
            "node",
            name,
            "--subresource=status",
            "--type=merge",
            "-p",
            &format!("{{\"status\":{{\"addresses\":[{{\"type\":\"InternalIP\",\"address\":\"{ip}\"}}]}}}}"),
        ])?;
        Ok(())
    }
}

pub fn wait_for(limit: Duration, mut f: impl FnMut() -> bool) -> bool {
    let start = Instant::now();
    while start.elapsed() < limit {
        if f() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    f()
}

/// The `kind/name` of every object, for messages and set comparisons.
pub fn kinds_and_names(objects: &[Value]) -> Vec<String> {
    objects
        .iter()
        .map(|o| {
            format!(
                "{}/{}",
                o["kind"].as_str().unwrap_or("?"),
                o["metadata"]["name"].as_str().unwrap_or("?")
            )
        })
        .collect()
}

pub fn find<'a>(objects: &'a [Value], kind: &str, name: &str) -> Option<&'a Value> {
    objects
        .iter()
        .find(|o| o["kind"] == kind && o["metadata"]["name"] == name)
}

/// The shell block of deploy/README.md between `<!-- tls-steps ... -->` and
/// `<!-- /tls-steps -->`: the documented way to make the TLS Secret for the plain manifests.
pub fn readme_tls_steps() -> Result<String> {
    let readme = std::fs::read_to_string(root().join("deploy/README.md"))?;
    let start = readme
        .find("<!-- tls-steps")
        .context("deploy/README.md has no <!-- tls-steps --> block")?;
    let end = readme[start..]
        .find("<!-- /tls-steps -->")
        .context("deploy/README.md: unterminated tls-steps block")?
        + start;
    let block = &readme[start..end];
    let body = block
        .split_once("```sh\n")
        .and_then(|(_, rest)| rest.split_once("```"))
        .map(|(code, _)| code)
        .context("no ```sh block in tls-steps")?;
    Ok(body.to_string())
}

/// Runs the README's TLS steps in `dir` with the test's kubectl and kubeconfig; leaves ca.crt,
/// tls.crt and tls.key there and the Secret in the cluster.
pub fn run_readme_tls_steps(cluster: &Cluster, dir: &Path) -> Result<()> {
    std::fs::create_dir_all(dir)?;
    let kubectl_dir = kubectl_binary()?
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_default();
    let path = std::env::join_paths(std::iter::once(kubectl_dir).chain(std::env::split_paths(
        &std::env::var_os("PATH").unwrap_or_default(),
    )))?;
    let mut cmd = Command::new("bash");
    cmd.args(["-euo", "pipefail", "-c", &readme_tls_steps()?])
        .current_dir(dir)
        .env("PATH", path)
        .env("KUBECONFIG", cluster.cp.kubeconfig());
    let out = run_bounded(cmd, "", Duration::from_secs(120))?;
    if !out.status.success() {
        bail!(
            "the README's TLS steps failed:\n{}{}",
            text(&out.stdout),
            text(&out.stderr)
        );
    }
    Ok(())
}
