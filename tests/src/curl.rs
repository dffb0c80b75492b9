//! The curl and h2load command-line clients, run bounded in time, for tests that want
//! an HTTP client independent of the proxy's own libraries.

use std::process::{Command, Stdio};

use anyhow::{Context, Result, bail};

/// What `curl -s -w` printed: the body, then `HTTP_VERSION STATUS` on the last line.
pub struct Reply {
    pub version: String,
    pub status: u16,
    pub body: Vec<u8>,
}

impl Reply {
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// Runs `curl -s --max-time 20 ARGS -w '\n%{http_version} %{http_code}'`.
pub fn curl(args: &[&str]) -> Result<Reply> {
    run(Command::new("curl"), args)
}

/// [`curl`] inside network namespace `ns` (a lab host).
pub fn curl_in(ns: &str, args: &[&str]) -> Result<Reply> {
    let mut cmd = Command::new("ip");
    cmd.args(["netns", "exec", ns, "curl"]);
    run(cmd, args)
}

fn run(mut cmd: Command, args: &[&str]) -> Result<Reply> {
    let out = cmd
        .args(["-s", "--max-time", "20"])
        .args(args)
        .args(["-w", "\n%{http_version} %{http_code}"])
        .stdin(Stdio::null())
        .output()
        .context("running curl")?;
    let text = out.stdout;
    let split = text
        .iter()
        .rposition(|&b| b == b'\n')
        .context("curl printed no status line")?;
    let last = String::from_utf8_lossy(&text[split + 1..]).into_owned();
    let (version, status) = last
        .split_once(' ')
        .with_context(|| format!("curl status line {last:?}"))?;
    let status: u16 = status
        .parse()
        .with_context(|| format!("status {status:?}"))?;
    if status == 0 {
        bail!(
            "curl got no response (exit {:?}): {}",
            out.status.code(),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(Reply {
        version: version.to_string(),
        status,
        body: text[..split].to_vec(),
    })
}

/// `curl` on a blocking thread, so a test's own event loop (serving its backends) keeps
/// running meanwhile.
pub async fn curl_async(args: Vec<String>) -> Result<Reply> {
    tokio::task::spawn_blocking(move || {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        curl(&args)
    })
    .await
    .context("curl thread")?
}

/// h2load's counts: requests succeeded and failed (its `requests:` summary line).
pub struct Load {
    pub succeeded: u64,
    pub failed: u64,
    pub errored: u64,
    pub output: String,
}

/// Runs `h2load ARGS` (bounded by its own `-n`; killed after 120 s by `timeout`).
pub fn h2load(args: &[&str]) -> Result<Load> {
    let out = Command::new("timeout")
        .arg("120")
        .arg("h2load")
        .args(args)
        .stdin(Stdio::null())
        .output()
        .context("running h2load")?;
    let output = String::from_utf8_lossy(&out.stdout).into_owned();
    let line = output
        .lines()
        .find(|l| l.starts_with("requests:"))
        .with_context(|| format!("no summary in h2load output: {output}"))?;
    let count = |word: &str| -> Option<u64> {
        let words: Vec<&str> = line.split([' ', ',']).filter(|w| !w.is_empty()).collect();
        let i = words.iter().position(|w| *w == word)?;
        words.get(i.checked_sub(1)?)?.parse().ok()
    };
    Ok(Load {
        succeeded: count("succeeded").context("succeeded count")?,
        failed: count("failed").context("failed count")?,
        errored: count("errored").context("errored count")?,
        output,
    })
}
