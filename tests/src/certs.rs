//! Test certificates made with the openssl command line: a private CA and leaf
//! certificates it signs for a list of DNS names, written as PEM files in a directory.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// A CA (`<stem>.crt`, `<stem>.key`) in `dir`.
pub struct Ca {
    pub cert: PathBuf,
    pub key: PathBuf,
    dir: PathBuf,
}

fn openssl(args: &[&str]) {
    let out = Command::new("openssl")
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("run openssl");
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn text(p: &Path) -> &str {
    p.to_str().expect("utf-8 path")
}

impl Ca {
    /// A fresh EC CA named `cn`.
    pub fn new(dir: &Path, stem: &str, cn: &str) -> Self {
        let (cert, key) = (
            dir.join(format!("{stem}.crt")),
            dir.join(format!("{stem}.key")),
        );
        openssl(&[
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-days",
            "2",
            "-subj",
            &format!("/CN={cn}"),
            "-addext",
            "basicConstraints=critical,CA:TRUE",
            "-addext",
            "keyUsage=critical,keyCertSign,cRLSign",
            "-keyout",
            text(&key),
            "-out",
            text(&cert),
        ]);
        Self {
            cert,
            key,
            dir: dir.to_path_buf(),
        }
    }

    /// A leaf for `names` (the first is also its CN), as `<stem>.crt` and `<stem>.key`,
    /// each put in place by a rename so a watcher never reads half of one.
    pub fn issue(&self, stem: &str, names: &[&str]) -> (PathBuf, PathBuf) {
        let (cert, key) = (
            self.dir.join(format!("{stem}.crt")),
            self.dir.join(format!("{stem}.key")),
        );
        let (cert_tmp, key_tmp, csr) = (
            self.dir.join(format!("{stem}.crt.tmp")),
            self.dir.join(format!("{stem}.key.tmp")),
            self.dir.join(format!("{stem}.csr")),
        );
        let san: Vec<String> = names.iter().map(|n| format!("DNS:{n}")).collect();
        let ext = self.dir.join(format!("{stem}.ext"));
        std::fs::write(
            &ext,
            format!(
                "subjectAltName={}\nbasicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n",
                san.join(",")
            ),
        )
        .expect("write extensions");
        openssl(&[
            "req",
            "-new",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-subj",
            &format!("/CN={}", names[0]),
            "-keyout",
            text(&key_tmp),
            "-out",
            text(&csr),
        ]);
        openssl(&[
            "x509",
            "-req",
            "-in",
            text(&csr),
            "-CA",
            text(&self.cert),
            "-CAkey",
            text(&self.key),
            "-CAcreateserial",
            "-days",
            "2",
            "-extfile",
            text(&ext),
            "-out",
            text(&cert_tmp),
        ]);
        std::fs::rename(&key_tmp, &key).expect("rename key");
        std::fs::rename(&cert_tmp, &cert).expect("rename cert");
        (cert, key)
    }
}

/// `openssl s_client` against `addr` with `args` (e.g. `-servername`, `-alpn`,
/// `-tls1_3`), stdin closed so it quits after the handshake, bounded by `timeout`.
/// Whether a session was established, and everything it printed.
pub fn s_client(addr: std::net::SocketAddr, args: &[&str]) -> (bool, String) {
    let out = Command::new("timeout")
        .args(["10", "openssl", "s_client", "-connect", &addr.to_string()])
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("run openssl s_client");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let established =
        out.status.success() && text.contains("Cipher is ") && !text.contains("Cipher is (NONE)");
    (established, text)
}

/// Sends `input` over a TLS connection made by `openssl s_client` (after the handshake,
/// then waits until the server closes, at most 10 s): what the server answered.
pub fn s_client_send(addr: std::net::SocketAddr, args: &[&str], input: &[u8]) -> Vec<u8> {
    use std::io::Write as _;
    let mut child = Command::new("timeout")
        .args(["10", "openssl", "s_client", "-quiet", "-ign_eof"])
        .args(["-connect", &addr.to_string()])
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("run openssl s_client");
    if let Some(mut stdin) = child.stdin.take() {
        stdin.write_all(input).expect("write to s_client");
    }
    child.wait_with_output().expect("s_client output").stdout
}

/// The served leaf certificate's subject line (`subject=CN = a.test`) in s_client output.
pub fn subject(text: &str) -> Option<&str> {
    text.lines().find(|l| l.starts_with("subject="))
}

/// The served leaf certificate (its PEM block) in s_client output.
pub fn served_pem(text: &str) -> Option<&str> {
    let start = text.find("-----BEGIN CERTIFICATE-----")?;
    let end = text[start..].find("-----END CERTIFICATE-----")? + start;
    Some(&text[start..end])
}

/// `openssl s_server -www` on `port` with a certificate and key: a TLS backend that
/// answers any request with a status page. Killed when dropped.
pub struct SServer {
    child: std::process::Child,
}

impl SServer {
    pub fn start(port: u16, cert: &Path, key: &Path) -> Self {
        let child = Command::new("openssl")
            .args(["s_server", "-www", "-quiet", "-accept"])
            .arg(format!("127.0.0.1:{port}"))
            .arg("-cert")
            .arg(cert)
            .arg("-key")
            .arg(key)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start openssl s_server");
        // Bounded wait until it listens.
        for _ in 0..100 {
            if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        Self { child }
    }
}

impl Drop for SServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A TLS client connection to `addr` for `server_name`, trusting only the CA in
/// `ca_pem` and offering `alpn`, within 5 s.
pub async fn tls_connect(
    addr: std::net::SocketAddr,
    server_name: &str,
    ca_pem: &str,
    alpn: &[&str],
) -> anyhow::Result<tokio_rustls::client::TlsStream<tokio::net::TcpStream>> {
    use std::sync::Arc;

    use tokio_rustls::rustls;
    use tokio_rustls::rustls::pki_types::pem::PemObject;
    use tokio_rustls::rustls::pki_types::{CertificateDer, ServerName};
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(ca_pem.as_bytes()) {
        roots.add(cert?)?;
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = alpn.iter().map(|p| p.as_bytes().to_vec()).collect();
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let name = ServerName::try_from(server_name.to_string())?;
    let limit = std::time::Duration::from_secs(5);
    let tcp = tokio::time::timeout(limit, tokio::net::TcpStream::connect(addr)).await??;
    Ok(tokio::time::timeout(limit, connector.connect(name, tcp)).await??)
}
