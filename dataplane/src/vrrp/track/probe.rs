//! One run of a track check (thin drivers): an HTTP GET with hyper, a TCP connect, or a
//! program run without a shell. Each is bounded by the check's timeout.

use std::net::SocketAddr;
use std::process::{ExitStatus, Stdio};
use std::time::Duration;

use bytes::Bytes;
use halo_crds::node_config::CheckKind;
use http_body_util::Empty;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncReadExt};
use tokio::net::TcpStream;

/// What an exec check keeps of each of stdout and stderr, for the log.
pub const OUTPUT_LIMIT: usize = 4096;

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    Pass,
    Fail(String),
    Timeout,
}

impl Outcome {
    pub fn ok(&self) -> bool {
        matches!(self, Self::Pass)
    }

    /// The `result` label of `halo_track_check_runs_total`.
    pub fn label(&self) -> &'static str {
        match self {
            Self::Pass => "pass",
            Self::Fail(_) => "fail",
            Self::Timeout => "timeout",
        }
    }
}

/// The result and, for exec checks, what the program printed (bounded).
pub async fn run(kind: &CheckKind, timeout: Duration) -> (Outcome, String) {
    match kind {
        CheckKind::Http {
            address,
            host,
            path,
            expect_status,
        } => (
            bounded(timeout, http(*address, host, path, *expect_status)).await,
            String::new(),
        ),
        CheckKind::Tcp { address } => (
            bounded(timeout, async {
                TcpStream::connect(address)
                    .await
                    .map(drop)
                    .map_err(|e| format!("connect: {e}"))
            })
            .await,
            String::new(),
        ),
        CheckKind::Exec { command, args } => exec(command, args, timeout).await,
    }
}

async fn bounded(
    timeout: Duration,
    f: impl std::future::Future<Output = Result<(), String>>,
) -> Outcome {
    match tokio::time::timeout(timeout, f).await {
        Ok(Ok(())) => Outcome::Pass,
        Ok(Err(e)) => Outcome::Fail(e),
        Err(_) => Outcome::Timeout,
    }
}

/// Passes on `expect_status`, else on any status below 400; the body is not read.
async fn http(
    address: SocketAddr,
    host: &str,
    path: &str,
    expect_status: Option<u16>,
) -> Result<(), String> {
    let stream = TcpStream::connect(address)
        .await
        .map_err(|e| format!("connect: {e}"))?;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|e| format!("handshake: {e}"))?;
    let request = http::Request::get(path)
        .header(http::header::HOST, host)
        .header(http::header::USER_AGENT, "halo-track-check")
        .header(http::header::CONNECTION, "close")
        .body(Empty::<Bytes>::new())
        .map_err(|e| format!("request: {e}"))?;
    // The connection is driven here, not spawned, so the timeout drops all of it.
    let response = {
        let send = sender.send_request(request);
        tokio::pin!(conn, send);
        tokio::select! {
            r = &mut send => r,
            // With `Connection: close` the connection may end as it hands the response
            // over: the request's future has it (or the reason there is none).
            c = &mut conn => match c {
                Ok(()) => send.await,
                Err(e) => return Err(format!("connection: {e}")),
            },
        }
        .map_err(|e| format!("request: {e}"))?
    };
    let status = response.status().as_u16();
    let ok = expect_status.map_or(status < 400, |want| status == want);
    if ok {
        Ok(())
    } else {
        Err(format!("status {status}"))
    }
}

/// Runs `command` with `args` (no shell, stdin null, in its own process group). Past
/// the timeout, or when the run is dropped, the whole group is killed (and reaped by
/// tokio, kill_on_drop).
async fn exec(command: &str, args: &[String], timeout: Duration) -> (Outcome, String) {
    let mut cmd = tokio::process::Command::new(command);
    cmd.args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .current_dir("/")
        .process_group(0)
        .kill_on_drop(true);
    let mut child = match cmd.spawn() {
        Ok(c) => c,
        Err(e) => {
            return (
                Outcome::Fail(format!("cannot run {command}: {e}")),
                String::new(),
            );
        }
    };
    let mut group = Group(child.id().and_then(|p| libc::pid_t::try_from(p).ok()));
    let (stdout, stderr) = (child.stdout.take(), child.stderr.take());
    let finished = tokio::time::timeout(timeout, async {
        tokio::join!(read_bounded(stdout), read_bounded(stderr), child.wait())
    })
    .await;
    match finished {
        Ok((out, err, status)) => {
            // Done: what it left running on purpose is not ours to kill.
            group.0 = None;
            let output = printed(&out, &err);
            match status {
                Ok(s) if s.success() => (Outcome::Pass, output),
                Ok(s) => (Outcome::Fail(exit_text(s)), output),
                Err(e) => (Outcome::Fail(format!("wait: {e}")), output),
            }
        }
        Err(_) => {
            drop(group);
            // SIGKILL cannot be refused: the wait is short, and bounded anyway.
            let _ = tokio::time::timeout(Duration::from_secs(1), child.wait()).await;
            (Outcome::Timeout, String::new())
        }
    }
}

/// The process group of a running check program, killed when dropped: on the timeout,
/// and when the check itself stops (its task aborted mid-run).
struct Group(Option<libc::pid_t>);

impl Drop for Group {
    fn drop(&mut self) {
        if let Some(pgid) = self.0 {
            // SAFETY: kill(2) with a negative pid signals that process group and touches
            // no memory of ours. The group is the child's own (process_group(0)).
            unsafe {
                libc::kill(-pgid, libc::SIGKILL);
            }
        }
    }
}

fn exit_text(status: ExitStatus) -> String {
    use std::os::unix::process::ExitStatusExt;
    match (status.code(), status.signal()) {
        (Some(code), _) => format!("exit status {code}"),
        (None, Some(sig)) => format!("killed by signal {sig}"),
        _ => "exited".into(),
    }
}

/// Reads a pipe to its end, keeping the first [`OUTPUT_LIMIT`] bytes (the rest is read
/// and dropped, so a chatty program does not block on a full pipe).
async fn read_bounded<R: AsyncRead + Unpin>(pipe: Option<R>) -> Vec<u8> {
    let mut kept = Vec::new();
    let Some(mut pipe) = pipe else {
        return kept;
    };
    let mut buf = [0u8; 1024];
    while let Ok(n) = pipe.read(&mut buf).await {
        if n == 0 {
            break;
        }
        let room = OUTPUT_LIMIT.saturating_sub(kept.len());
        kept.extend_from_slice(&buf[..n.min(room)]);
    }
    kept
}

fn printed(out: &[u8], err: &[u8]) -> String {
    let mut text = String::from_utf8_lossy(out).trim_end().to_string();
    let err = String::from_utf8_lossy(err);
    if !err.trim().is_empty() {
        if !text.is_empty() {
            text.push('\n');
        }
        text.push_str(err.trim_end());
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    fn exec_kind(command: &str, args: &[&str]) -> CheckKind {
        CheckKind::Exec {
            command: command.into(),
            args: args.iter().map(|a| (*a).to_string()).collect(),
        }
    }

    #[tokio::test]
    async fn exec_passes_on_status_zero_and_keeps_bounded_output() {
        let t = Duration::from_secs(5);
        assert_eq!(run(&exec_kind("/bin/true", &[]), t).await.0, Outcome::Pass);
        let (outcome, _) = run(&exec_kind("/bin/false", &[]), t).await;
        assert_eq!(outcome, Outcome::Fail("exit status 1".into()));
        let (outcome, _) = run(&exec_kind("/nonexistent/program", &[]), t).await;
        assert!(
            matches!(outcome, Outcome::Fail(ref e) if e.starts_with("cannot run")),
            "{outcome:?}"
        );
        // argv goes as given: no shell splits or expands it.
        let (outcome, output) = run(&exec_kind("/bin/echo", &["a  b", "$HOME"]), t).await;
        assert_eq!((outcome, output.as_str()), (Outcome::Pass, "a  b $HOME"));
        let big = "x".repeat(3 * OUTPUT_LIMIT);
        let (_, output) = run(&exec_kind("/bin/echo", &[&big]), t).await;
        assert_eq!(output.len(), OUTPUT_LIMIT);
    }

    fn running(argv: &[&str]) -> usize {
        let want: Vec<u8> = argv.iter().flat_map(|a| a.bytes().chain([0])).collect();
        std::fs::read_dir("/proc")
            .into_iter()
            .flatten()
            .flatten()
            .filter(|e| std::fs::read(e.path().join("cmdline")).is_ok_and(|c| c == want))
            .count()
    }

    /// `timeout` runs `sleep` as its child: killing only the program would leave the
    /// sleep behind, killing the group takes both.
    #[tokio::test]
    async fn exec_past_the_timeout_is_killed_with_its_children() {
        let nap = format!("30.{}", std::process::id());
        let (outcome, _) = run(
            &exec_kind("/usr/bin/timeout", &["60", "/usr/bin/sleep", &nap]),
            Duration::from_millis(300),
        )
        .await;
        assert_eq!(outcome, Outcome::Timeout);
        let mut left = usize::MAX;
        for _ in 0..20 {
            left = running(&["/usr/bin/sleep", &nap]);
            if left == 0 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert_eq!(left, 0, "the program's child outlived the timeout");
    }

    #[tokio::test]
    async fn tcp_and_http_against_a_local_listener() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let address = listener.local_addr().expect("addr");
        tokio::spawn(async move {
            while let Ok((mut s, _)) = listener.accept().await {
                tokio::spawn(async move {
                    use tokio::io::AsyncWriteExt;
                    let mut buf = [0u8; 1024];
                    let n = s.read(&mut buf).await.unwrap_or(0);
                    let head = String::from_utf8_lossy(&buf[..n]).to_string();
                    let status = if head.starts_with("GET /ok ") && head.contains("host: app:1\r\n")
                    {
                        "204 No Content"
                    } else {
                        "503 Service Unavailable"
                    };
                    let _ = s
                        .write_all(
                            format!("HTTP/1.1 {status}\r\ncontent-length: 0\r\n\r\n").as_bytes(),
                        )
                        .await;
                });
            }
        });
        let t = Duration::from_secs(2);
        assert_eq!(run(&CheckKind::Tcp { address }, t).await.0, Outcome::Pass);
        let get = |path: &str, expect: Option<u16>| CheckKind::Http {
            address,
            host: "app:1".into(),
            path: path.into(),
            expect_status: expect,
        };
        assert_eq!(run(&get("/ok", None), t).await.0, Outcome::Pass);
        assert_eq!(run(&get("/ok", Some(204)), t).await.0, Outcome::Pass);
        assert_eq!(
            run(&get("/ok", Some(200)), t).await.0,
            Outcome::Fail("status 204".into())
        );
        assert_eq!(
            run(&get("/other", None), t).await.0,
            Outcome::Fail("status 503".into())
        );
    }
}
