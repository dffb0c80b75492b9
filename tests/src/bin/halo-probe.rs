//! Probes an HTTP address (or, with `--tcp`, a TCP echo backend) at a fixed pace and prints a JSON summary of who answered
//! (see `halo_tests::probe`). Bounded by duration and count; loopback or lab addresses only.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Result;
use clap::Parser;

#[derive(Parser)]
#[command(name = "halo-probe")]
struct Args {
    /// ADDRESS:PORT to GET from.
    target: SocketAddr,
    /// The path to GET (`/slow?ms=N` on a lab backend: requests that take a while).
    #[arg(long, default_value = "/")]
    path: String,
    /// Probe a TCP echo backend instead: its greeting names it, a line must come back.
    #[arg(long)]
    tcp: bool,
    /// With `--tcp`: how long to keep the connection between the greeting and the line.
    #[arg(long, default_value = "0ms", value_parser = parse)]
    hold: Duration,
    #[arg(long, default_value = "10ms", value_parser = parse)]
    interval: Duration,
    #[arg(long, default_value = "5s", value_parser = parse)]
    duration: Duration,
    #[arg(long, default_value = "100ms", value_parser = parse)]
    timeout: Duration,
    #[arg(long, default_value_t = 100_000)]
    max_probes: u32,
    /// Stop early once this file exists.
    #[arg(long)]
    stop_file: Option<PathBuf>,
}

fn parse(text: &str) -> Result<Duration, String> {
    let (digits, unit) = text.split_at(
        text.find(|c: char| !c.is_ascii_digit())
            .unwrap_or(text.len()),
    );
    let n: u64 = digits
        .parse()
        .map_err(|_| format!("bad duration {text:?}"))?;
    match unit {
        "ms" => Ok(Duration::from_millis(n)),
        "s" => Ok(Duration::from_secs(n)),
        _ => Err(format!("bad duration {text:?}: use ms or s")),
    }
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<()> {
    let a = Args::parse();
    let ask = if a.tcp {
        halo_tests::probe::Ask::Echo { hold: a.hold }
    } else {
        halo_tests::probe::Ask::Get(a.path.clone())
    };
    let summary = halo_tests::probe::probe(
        a.target,
        &ask,
        a.interval,
        a.duration,
        a.timeout,
        a.max_probes,
        a.stop_file.as_deref(),
    )
    .await;
    println!("{}", serde_json::to_string(&summary)?);
    Ok(())
}
