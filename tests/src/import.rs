//! Running `halo-dataplane import` and `check` on the import fixtures under
//! `tests/import/` (shared by the import tests and the keepalived interop lab test).

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result, bail};

/// `tests/import/keepalived/<rel>` in the source tree.
pub fn keepalived_fixture(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("import/keepalived")
        .join(rel)
}

/// What one run of the command gave.
#[derive(Debug)]
pub struct Run {
    pub code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
}

/// `BIN import --keepalived F ... [extra]`.
pub fn import_keepalived(bin: &Path, files: &[PathBuf], extra: &[&str]) -> Result<Run> {
    let mut cmd = Command::new(bin);
    cmd.arg("import");
    for f in files {
        cmd.arg("--keepalived").arg(f);
    }
    cmd.args(extra);
    let out = cmd.output().context("run halo-dataplane import")?;
    Ok(Run {
        code: out.status.code(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    })
}

/// `BIN check -c MANIFEST --node NODE`: the rendered NodeConfig.
pub fn check(bin: &Path, manifest: &Path, node: &str) -> Result<serde_json::Value> {
    let out = Command::new(bin)
        .arg("check")
        .arg("-c")
        .arg(manifest)
        .args(["--node", node])
        .output()
        .context("run halo-dataplane check")?;
    if !out.status.success() {
        bail!(
            "check --node {node} refused {}:\n{}",
            manifest.display(),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(serde_json::from_slice(&out.stdout)?)
}

/// The rendered VRRP settings of VirtualIP `vip` in a NodeConfig.
pub fn vrrp_of<'a>(config: &'a serde_json::Value, vip: &str) -> Option<&'a serde_json::Value> {
    config["vips"]
        .as_array()?
        .iter()
        .find(|v| v["name"] == vip)
        .map(|v| &v["vrrp"])
}
