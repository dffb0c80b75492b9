//! A client that probes a URL at a fixed pace and summarises who answered and how long
//! it went unanswered: the measure of a failover as a user sees it.

use std::net::SocketAddr;
use std::path::Path;
use std::time::{Duration, Instant};

use serde::Serialize;

#[derive(Debug, Clone, Serialize, serde::Deserialize, PartialEq, Eq)]
pub struct Run {
    /// The answering backend's name, or "-" for failed probes.
    pub who: String,
    pub count: u32,
    pub start_ms: u64,
    pub end_ms: u64,
}

#[derive(Debug, Clone, Serialize, serde::Deserialize, Default)]
pub struct Summary {
    pub ok: u32,
    pub failed: u32,
    /// Longest time between two successful probes that had failures between them.
    pub longest_outage_ms: u64,
    pub runs: Vec<Run>,
    /// Why probes failed (the first [`MAX_FAILURES_KEPT`]), so a failing test says
    /// whether a request timed out, was refused or reset, or got an error status.
    #[serde(default)]
    pub failures: Vec<Failure>,
}

/// One failed probe: when it started and what the client saw.
#[derive(Debug, Clone, Serialize, serde::Deserialize, PartialEq, Eq)]
pub struct Failure {
    pub at_ms: u64,
    pub reason: String,
}

pub const MAX_FAILURES_KEPT: usize = 20;

impl Summary {
    fn record(&mut self, who: &str, at_ms: u64) {
        if who == "-" {
            self.failed += 1;
        } else {
            self.ok += 1;
        }
        match self.runs.last_mut() {
            Some(run) if run.who == who => {
                run.count += 1;
                run.end_ms = at_ms;
            }
            _ => self.runs.push(Run {
                who: who.to_string(),
                count: 1,
                start_ms: at_ms,
                end_ms: at_ms,
            }),
        }
    }

    fn finish(&mut self) {
        for w in self.runs.windows(3) {
            if w[1].who == "-" && w[0].who != "-" && w[2].who != "-" {
                self.longest_outage_ms = self.longest_outage_ms.max(w[2].start_ms - w[0].end_ms);
            }
        }
    }

    /// Backends in the order they answered (failures left out).
    pub fn answered(&self) -> Vec<&str> {
        self.runs
            .iter()
            .filter(|r| r.who != "-")
            .map(|r| r.who.as_str())
            .collect()
    }
}

/// What each probe asks.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Ask {
    /// GET this path; the body's first line names the backend.
    Get(String),
    /// Connect to a TCP echo backend: it names itself in its first line, then, `hold`
    /// later (a client logging in before its query), must echo a line back (a
    /// database-like stand-in for L4).
    Echo { hold: Duration },
}

/// One probe on a fresh connection: the backend's name, or the reason it failed.
async fn once(addr: SocketAddr, ask: &Ask, timeout: Duration) -> Result<String, String> {
    let path = match ask {
        Ask::Get(path) => path.as_str(),
        Ask::Echo { hold } => {
            return match tokio::time::timeout(timeout, echo(addr, *hold)).await {
                Err(_) => Err(format!("no answer within {} ms", timeout.as_millis())),
                Ok(result) => result,
            };
        }
    };
    let reply = match tokio::time::timeout(timeout, crate::client::get(addr, path)).await {
        Err(_) => return Err(format!("no answer within {} ms", timeout.as_millis())),
        Ok(Err(e)) => return Err(format!("{e:#}")),
        Ok(Ok(reply)) => reply,
    };
    if reply.status != 200 {
        return Err(format!("status {}", reply.status));
    }
    Ok(reply.body.lines().next().unwrap_or("").to_string())
}

/// Reads the echo backend's name, waits `hold`, sends a line and reads it back.
async fn echo(addr: SocketAddr, hold: Duration) -> Result<String, String> {
    use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
    let stream = tokio::net::TcpStream::connect(addr)
        .await
        .map_err(|e| format!("connect: {e}"))?;
    let mut stream = BufReader::new(stream);
    let mut name = String::new();
    stream
        .read_line(&mut name)
        .await
        .map_err(|e| format!("greeting: {e}"))?;
    if name.is_empty() {
        return Err("closed before the greeting".into());
    }
    tokio::time::sleep(hold).await;
    stream
        .get_mut()
        .write_all(b"ping\n")
        .await
        .map_err(|e| format!("write: {e}"))?;
    let mut back = String::new();
    stream
        .read_line(&mut back)
        .await
        .map_err(|e| format!("echo: {e}"))?;
    if back != "ping\n" {
        return Err(format!("echoed {back:?}"));
    }
    Ok(name.trim_end().to_string())
}

/// Probes with `ask` every `interval` for `duration` (bounded by `max_probes`), or until
/// the file `stop` exists (a step of a procedure whose length is not known in advance).
#[allow(clippy::too_many_arguments)]
pub async fn probe(
    addr: SocketAddr,
    ask: &Ask,
    interval: Duration,
    duration: Duration,
    timeout: Duration,
    max_probes: u32,
    stop: Option<&Path>,
) -> Summary {
    let start = Instant::now();
    let mut summary = Summary::default();
    let mut next = start;
    for _ in 0..max_probes {
        if start.elapsed() >= duration || stop.is_some_and(Path::exists) {
            break;
        }
        let at = u64::try_from(start.elapsed().as_millis()).unwrap_or(u64::MAX);
        match once(addr, ask, timeout).await {
            Ok(who) => summary.record(&who, at),
            Err(reason) => {
                summary.record("-", at);
                if summary.failures.len() < MAX_FAILURES_KEPT {
                    summary.failures.push(Failure { at_ms: at, reason });
                }
            }
        }
        next += interval;
        tokio::time::sleep_until(next.into()).await;
    }
    summary.finish();
    summary
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn outage_is_the_gap_between_successes_around_failures() {
        let mut s = Summary::default();
        for (who, at) in [
            ("a", 0),
            ("a", 10),
            ("-", 20),
            ("-", 30),
            ("b", 45),
            ("b", 55),
        ] {
            s.record(who, at);
        }
        s.finish();
        assert_eq!((s.ok, s.failed, s.longest_outage_ms), (4, 2, 35));
        assert_eq!(s.answered(), ["a", "b"]);
    }
}
