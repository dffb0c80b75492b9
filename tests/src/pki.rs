//! Test certificates made with the openssl command line in a test's own directory: a CA,
//! serving certificates it signs, self-signed ones, and lone keys (for mismatches).

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use anyhow::{Context, Result, bail};

/// One openssl run must not take longer than this (key generation is milliseconds).
const OPENSSL_LIMIT: Duration = Duration::from_secs(30);

/// Where a certificate and its key were written.
#[derive(Clone, Debug)]
pub struct Pair {
    pub cert: PathBuf,
    pub key: PathBuf,
}

impl Pair {
    /// The certificate, PEM, as written.
    pub fn cert_pem(&self) -> Result<String> {
        read(&self.cert)
    }

    /// The private key, PEM, as written.
    pub fn key_pem(&self) -> Result<String> {
        read(&self.key)
    }
}

fn read(path: &Path) -> Result<String> {
    std::fs::read_to_string(path).with_context(|| format!("read {}", path.display()))
}

/// EC P-256 keys: fast to make, and every TLS library here takes them.
const EC: [&str; 5] = [
    "-newkey",
    "ec",
    "-pkeyopt",
    "ec_paramgen_curve:prime256v1",
    "-nodes",
];

/// Runs `openssl ARGS` in `dir`, bounded in time; an error carries its stderr.
pub fn openssl(dir: &Path, args: &[&str]) -> Result<()> {
    openssl_output(dir, args).map(drop)
}

/// `openssl` with its standard output returned (outputs here are a few lines, so the
/// pipes never fill while it runs).
fn openssl_output(dir: &Path, args: &[&str]) -> Result<String> {
    use std::io::Read;
    let mut child = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .context("run openssl")?;
    let start = std::time::Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait()? {
            break status;
        }
        if start.elapsed() > OPENSSL_LIMIT {
            let _ = child.kill();
            let _ = child.wait();
            bail!("openssl {} took over {OPENSSL_LIMIT:?}", args.join(" "));
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    let drain = |pipe: Option<&mut dyn Read>| {
        let mut text = String::new();
        if let Some(p) = pipe {
            let _ = p.read_to_string(&mut text);
        }
        text
    };
    let out = drain(child.stdout.as_mut().map(|p| p as &mut dyn Read));
    if !status.success() {
        let err = drain(child.stderr.as_mut().map(|p| p as &mut dyn Read));
        bail!("openssl {}: {}", args.join(" "), err.trim());
    }
    Ok(out)
}

fn pair(dir: &Path, stem: &str) -> Pair {
    Pair {
        cert: dir.join(format!("{stem}.crt")),
        key: dir.join(format!("{stem}.key")),
    }
}

/// A `kubernetes.io/tls` Secret holding `cert` and `key` as given (the API server checks
/// only that both keys exist, so malformed contents get through, as from any client).
pub fn tls_secret_yaml(namespace: &str, name: &str, cert: &str, key: &str) -> String {
    let q = |s: &str| serde_json::to_string(s).unwrap_or_default();
    format!(
        "apiVersion: v1\nkind: Secret\nmetadata: {{name: {name}, namespace: {namespace}}}\ntype: kubernetes.io/tls\nstringData:\n  tls.crt: {}\n  tls.key: {}\n",
        q(cert),
        q(key)
    )
}

/// A CA certificate `<stem>.crt` and its key `<stem>.key` in `dir`, valid for a day.
pub fn ca(dir: &Path, stem: &str, cn: &str) -> Result<Pair> {
    let p = pair(dir, stem);
    let (crt, key) = (p.cert.to_string_lossy(), p.key.to_string_lossy());
    let subject = format!("/CN={cn}");
    let tail = [
        "-days", "1", "-subj", &subject, "-keyout", &key, "-out", &crt,
    ];
    openssl(dir, &[&["req", "-x509"][..], &EC[..], &tail[..]].concat())?;
    Ok(p)
}

/// A serving (end-entity) certificate for `cn` with subjectAltName `san` (e.g.
/// `IP:127.0.0.1,DNS:localhost`) signed by `ca`: rustls refuses a CA as end entity.
pub fn signed(dir: &Path, ca: &Pair, stem: &str, cn: &str, san: &str) -> Result<Pair> {
    let p = pair(dir, stem);
    let ext = dir.join(format!("{stem}.cnf"));
    std::fs::write(
        &ext,
        format!("subjectAltName={san}\nbasicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n"),
    )?;
    let csr = dir.join(format!("{stem}.csr"));
    let (crt, key, csr_s) = (
        p.cert.to_string_lossy(),
        p.key.to_string_lossy(),
        csr.to_string_lossy(),
    );
    let subject = format!("/CN={cn}");
    let tail = ["-subj", &subject, "-keyout", &key, "-out", &csr_s];
    openssl(dir, &[&["req"][..], &EC[..], &tail[..]].concat())?;
    openssl(
        dir,
        &[
            "x509",
            "-req",
            "-in",
            &csr_s,
            "-CA",
            &ca.cert.to_string_lossy(),
            "-CAkey",
            &ca.key.to_string_lossy(),
            "-CAcreateserial",
            "-days",
            "1",
            "-extfile",
            &ext.to_string_lossy(),
            "-out",
            &crt,
        ],
    )?;
    Ok(p)
}

/// A self-signed serving certificate for DNS name `cn` and its key.
pub fn self_signed(dir: &Path, stem: &str, cn: &str) -> Result<Pair> {
    let p = pair(dir, stem);
    let (crt, key) = (p.cert.to_string_lossy(), p.key.to_string_lossy());
    let subject = format!("/CN={cn}");
    let san = format!("subjectAltName=DNS:{cn}");
    let tail = [
        "-days", "1", "-subj", &subject, "-addext", &san, "-keyout", &key, "-out", &crt,
    ];
    openssl(dir, &[&["req", "-x509"][..], &EC[..], &tail[..]].concat())?;
    Ok(p)
}

/// The SHA-256 fingerprint openssl prints for the first certificate in `pem`
/// (`AB:CD:...`), to name a certificate in messages and compare two of them.
pub fn fingerprint(dir: &Path, pem: &str) -> Result<String> {
    let input = dir.join(format!("{}.pem", crate::backends::unique("fingerprint-")));
    std::fs::write(&input, pem)?;
    let input_s = input.to_string_lossy();
    let out = openssl_output(
        dir,
        &["x509", "-noout", "-fingerprint", "-sha256", "-in", &input_s],
    );
    let _ = std::fs::remove_file(&input);
    let text = out?;
    text.trim()
        .split_once('=')
        .map(|(_, fp)| fp.to_string())
        .with_context(|| format!("no fingerprint in {text:?}"))
}
