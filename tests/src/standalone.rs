//! One data plane process in standalone mode on a manifest file in a temporary directory,
//! and the manifest builder the loopback proxy tests share.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::backends::{self, free_port};
use crate::process::DataPlane;

/// A temporary directory holding the manifest, the log and the admin address of one data
/// plane; removed when dropped.
pub struct Lab {
    pub bin: PathBuf,
    pub dir: PathBuf,
    pub config: PathBuf,
    pub admin: SocketAddr,
}

impl Lab {
    /// `bin` is the `halo-dataplane` binary (integration tests pass
    /// `env!("CARGO_BIN_EXE_halo-dataplane")`).
    pub fn new(bin: &str, name: &str) -> Self {
        let dir = std::env::temp_dir().join(backends::unique(&format!("halo-{name}-")));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let admin = SocketAddr::from(([127, 0, 0, 1], free_port().expect("port")));
        Self {
            bin: PathBuf::from(bin),
            config: dir.join("halo.yaml"),
            dir,
            admin,
        }
    }

    pub fn write(&self, yaml: &str) {
        // Write then rename so the watcher never sees half a file.
        let tmp = self.dir.join("halo.yaml.tmp");
        std::fs::write(&tmp, yaml).expect("write config");
        std::fs::rename(&tmp, &self.config).expect("rename config");
    }

    /// Truncates and writes in place, as an editor without atomic save does.
    pub fn overwrite(&self, yaml: &str) {
        std::fs::write(&self.config, yaml).expect("overwrite config");
    }

    /// A fresh self-signed EC certificate for `cn` and its key (openssl), written as
    /// `<stem>.crt` and `<stem>.key` in the lab directory, each replaced by a rename so a
    /// watcher never reads half of one.
    pub fn self_signed(&self, stem: &str, cn: &str) -> (PathBuf, PathBuf) {
        let (cert, key) = (
            self.dir.join(format!("{stem}.crt")),
            self.dir.join(format!("{stem}.key")),
        );
        let (cert_tmp, key_tmp) = (
            self.dir.join(format!("{stem}.crt.tmp")),
            self.dir.join(format!("{stem}.key.tmp")),
        );
        let out = std::process::Command::new("openssl")
            .args(["req", "-x509", "-newkey", "ec", "-pkeyopt"])
            .args(["ec_paramgen_curve:prime256v1", "-nodes", "-days", "2"])
            .args(["-subj", &format!("/CN={cn}"), "-addext"])
            .arg(format!("subjectAltName=DNS:{cn}"))
            .arg("-keyout")
            .arg(&key_tmp)
            .arg("-out")
            .arg(&cert_tmp)
            .stdin(std::process::Stdio::null())
            .output()
            .expect("run openssl");
        assert!(
            out.status.success(),
            "openssl: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        std::fs::rename(&key_tmp, &key).expect("rename key");
        std::fs::rename(&cert_tmp, &cert).expect("rename cert");
        (cert, key)
    }

    pub fn start(&self, yaml: &str) -> DataPlane {
        self.start_with(yaml, &[])
    }

    /// Writes `yaml` and starts the data plane without waiting for it; `nofile` lowers
    /// its RLIMIT_NOFILE.
    pub fn spawn(&self, yaml: &str, args: &[&str], nofile: Option<u64>) -> DataPlane {
        self.write(yaml);
        DataPlane::spawn(
            Path::new(&self.bin),
            &self.config,
            "node-a",
            self.admin,
            &self.dir.join("dataplane.log"),
            args,
            nofile,
        )
        .expect("data plane spawns")
    }

    /// `start` with extra `halo-dataplane run` arguments.
    pub fn start_with(&self, yaml: &str, args: &[&str]) -> DataPlane {
        self.write(yaml);
        DataPlane::start_with(
            Path::new(&self.bin),
            &self.config,
            "node-a",
            self.admin,
            &self.dir.join("dataplane.log"),
            args,
        )
        .expect("data plane starts")
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A `LoadBalancer` named `test/site` on 127.0.0.1 with one listener `main` (so its
/// metrics label is `listener="test/site/main"`). `extra` is inserted verbatim into the
/// listener, indented by six spaces, one field a line.
pub fn lb(port: u16, protocol: &str, extra: &str, backends: &[(&str, u16)]) -> String {
    let mut list = String::new();
    for (name, p) in backends {
        list.push_str(&format!(
            "        - {{name: {name}, address: 127.0.0.1, port: {p}}}\n"
        ));
    }
    format!(
        "apiVersion: halo.dev/v1alpha1\nkind: LoadBalancer\nmetadata: {{name: site, namespace: test}}\nspec:\n  addresses: [127.0.0.1]\n  listeners:\n    - name: main\n      port: {port}\n      protocol: {protocol}\n{extra}      backends:\n{list}"
    )
}

/// The listener address of `lb(port, ..)`.
pub fn front(port: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], port))
}

/// Polls `f` every 20 ms until it holds or `limit` passes.
pub async fn wait_until(limit: Duration, mut f: impl FnMut() -> bool) -> bool {
    let start = Instant::now();
    while start.elapsed() < limit {
        if f() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    false
}

/// Sum of the samples of metric `name` (Prometheus text format) whose labels include all
/// of `labels`; 0 when there is none.
pub fn metric_sum(text: &str, name: &str, labels: &[(&str, &str)]) -> f64 {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| {
            let (series, value) = l.rsplit_once(' ')?;
            let (metric, rest) = match series.split_once('{') {
                Some((m, r)) => (m, r.strip_suffix('}')?),
                None => (series, ""),
            };
            if metric != name {
                return None;
            }
            let ok = labels
                .iter()
                .all(|(k, v)| rest.contains(&format!("{k}=\"{v}\"")));
            ok.then(|| value.parse::<f64>().ok()).flatten()
        })
        .sum()
}

/// The values of label `label` over the samples of `name` that are above zero.
pub fn metric_label_values(text: &str, name: &str, label: &str) -> Vec<String> {
    let key = format!("{label}=\"");
    text.lines()
        .filter(|l| l.starts_with(&format!("{name}{{")))
        .filter(|l| {
            l.rsplit_once(' ')
                .and_then(|(_, v)| v.parse::<f64>().ok())
                .is_some_and(|v| v > 0.0)
        })
        .filter_map(|l| {
            let start = l.find(&key)? + key.len();
            let end = start + l[start..].find('"')?;
            Some(l[start..end].to_string())
        })
        .collect()
}
