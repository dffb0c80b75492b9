//! Command-line pieces shared by `halo-dataplane run` (admin listener and reload options)
//! and the client commands `halo-dataplane status` / `halo-dataplane takeover`, which talk
//! to a running data plane's admin listener.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use http::{Method, StatusCode};

use crate::admin::{self, client, token};

/// Where the admin token lives by default (inside the default state directory).
pub const DEFAULT_TOKEN_FILE: &str = "/var/lib/halo/admin-token";

fn parse_duration(text: &str) -> Result<Duration, String> {
    halo_crds::duration::parse(text).map_err(|e| e.to_string())
}

/// How the admin listener of `run` guards itself.
#[derive(clap::Args, Debug, Clone)]
pub struct AdminArgs {
    /// Bearer token for POST endpoints (takeover); made (mode 0600) if absent.
    /// Default: admin-token in --state-dir.
    #[arg(long)]
    pub admin_token_file: Option<PathBuf>,
    /// A Host name accepted on the admin listener besides localhost and its own address
    /// (repeat for more), e.g. the node's DNS name for a Prometheus scrape.
    #[arg(long = "admin-allow-host", value_name = "NAME")]
    pub admin_allow_hosts: Vec<String>,
    /// Open admin connections at most (also never more than 1/16 of RLIMIT_NOFILE).
    #[arg(long, default_value_t = 32)]
    pub admin_max_connections: usize,
    /// Time to send a request head, and idle time allowed between requests.
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    pub admin_timeout: Duration,
}

impl AdminArgs {
    /// The listener's options, with the token loaded or made now.
    pub fn options(&self, state_dir: &Path, addr: SocketAddr) -> admin::Options {
        let path = self
            .admin_token_file
            .clone()
            .unwrap_or_else(|| state_dir.join("admin-token"));
        let token = admin::load_token(&path);
        if let Some(warning) = admin::exposure_warning(addr, token.is_some()) {
            tracing::warn!(admin = %addr, "{warning}");
        }
        admin::Options {
            token,
            allowed_hosts: self.admin_allow_hosts.clone(),
            max_connections: self.admin_max_connections,
            timeout: self.admin_timeout,
        }
    }
}

/// How a changed config file is picked up.
#[derive(clap::Args, Debug, Clone, Copy)]
pub struct ReloadArgs {
    /// How long a changed file must stay unchanged before it is loaded (default: 2 × --poll).
    #[arg(long, value_parser = parse_duration)]
    pub settle: Option<Duration>,
    /// Apply a file that removes every listener or every VirtualIP even without the
    /// halo.dev/allow-empty: "true" annotation.
    #[arg(long)]
    pub allow_empty_reload: bool,
}

/// Where a client command finds the data plane.
#[derive(clap::Args, Debug, Clone)]
pub struct ClientArgs {
    /// Address of the data plane's admin listener.
    #[arg(long, default_value = "127.0.0.1:9100")]
    pub admin: SocketAddr,
    /// The admin token (needed for takeover).
    #[arg(long, default_value = DEFAULT_TOKEN_FILE)]
    pub admin_token_file: PathBuf,
}

/// Exit codes of the client commands.
const OK: u8 = 0;
/// The data plane answered, but no (not ready, refused, unknown VIP, bad token).
const REFUSED: u8 = 1;
/// It could not be asked (unreachable, no token file).
const FAILED: u8 = 2;

/// `halo-dataplane status`: 0 ready, 1 not ready, 2 unreachable.
pub async fn status(args: &ClientArgs) -> ExitCode {
    let get = |path: &'static str| client::request(args.admin, Method::GET, path, None);
    let (code, body) = match get("/status").await {
        Ok(r) => r,
        Err(e) => return fail(FAILED, &e.to_string()),
    };
    if code != StatusCode::OK {
        return fail(FAILED, &format!("/status answered {code}: {}", body.trim()));
    }
    let status: serde_json::Value = match serde_json::from_str(&body) {
        Ok(v) => v,
        Err(e) => return fail(FAILED, &format!("/status is not JSON: {e}")),
    };
    let health = match get("/healthz").await {
        Ok(r) => r,
        Err(e) => return fail(FAILED, &e.to_string()),
    };
    print!("{}", client::render_status(&status, (health.0, &health.1)));
    ExitCode::from(if health.0 == StatusCode::OK {
        OK
    } else {
        REFUSED
    })
}

/// `halo-dataplane takeover <vip>`: 0 taken over, 1 refused, 2 could not ask.
pub async fn takeover(args: &ClientArgs, vip: &str) -> ExitCode {
    let token = match token::read(&args.admin_token_file) {
        Ok(t) => t,
        Err(e) => {
            return fail(
                FAILED,
                &format!("{e} (run as the data plane's user, or pass --admin-token-file)"),
            );
        }
    };
    let path = format!("/vrrp/{vip}/takeover");
    match client::request(args.admin, Method::POST, &path, Some(&token)).await {
        Ok((StatusCode::OK, body)) => {
            print!("{body}");
            ExitCode::from(OK)
        }
        Ok((code, body)) => fail(REFUSED, &format!("refused ({code}): {}", body.trim())),
        Err(e) => fail(FAILED, &e.to_string()),
    }
}

fn fail(code: u8, message: &str) -> ExitCode {
    eprintln!("halo-dataplane: {message}");
    ExitCode::from(code)
}
