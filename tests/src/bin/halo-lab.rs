//! The lab's command line: `demo` runs the data plane on the example manifest in front of
//! two real web servers; `backend` runs one such server; `control-plane up|down` runs a real
//! etcd + kube-apiserver on loopback in the background.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use clap::{Parser, Subcommand};
use halo_tests::{backends, client, control_plane, process};

#[derive(Parser)]
#[command(
    name = "halo-lab",
    about = "Halo lab: demo, backends, test infrastructure"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Start two web servers and the data plane on deploy/examples/standalone.yaml.
    Demo {
        #[arg(long, default_value = "deploy/examples/standalone.yaml")]
        config: PathBuf,
        #[arg(long, default_value = "127.0.0.1:9100")]
        admin: SocketAddr,
        /// Send this many requests through the VIP, print who answered, and exit.
        #[arg(long)]
        requests: Option<u32>,
    },
    /// Run one HTTP backend that answers with its name (and, with `--tcp-listen`, a TCP
    /// echo backend that greets with it).
    Backend {
        #[arg(long)]
        listen: SocketAddr,
        #[arg(long)]
        name: String,
        #[arg(long)]
        tcp_listen: Option<SocketAddr>,
    },
    /// Send forged VRRP adverts (well-formed or with one defect) out of a link of the
    /// current network namespace; run it with `ip netns exec` in a lab host.
    VrrpForge {
        #[arg(long, value_enum)]
        defect: halo_tests::vrrp_forge::Defect,
        #[arg(long, default_value = "eth0")]
        interface: String,
        /// The sender's own address (the packet's source).
        #[arg(long)]
        source: std::net::Ipv4Addr,
        #[arg(long)]
        vrid: u8,
        #[arg(long, default_value_t = 1)]
        priority: u8,
        /// The addresses the advert lists (the router's VIPs).
        #[arg(long, required = true)]
        address: Vec<std::net::Ipv4Addr>,
        /// How many to send, 20 ms apart (at most 1,000).
        #[arg(long, default_value_t = 5)]
        count: u16,
    },
    /// A real Kubernetes control plane (etcd + kube-apiserver) on loopback ports.
    ControlPlane {
        #[command(subcommand)]
        action: ControlPlaneAction,
    },
}

#[derive(Subcommand)]
enum ControlPlaneAction {
    /// Start it in the background with its state, kubeconfig, logs and PIDs in DIR; it keeps
    /// running after this command exits.
    Up {
        #[arg(long)]
        dir: PathBuf,
    },
    /// Stop the processes recorded in DIR/pids (DIR itself is kept).
    Down {
        #[arg(long)]
        dir: PathBuf,
    },
}

#[tokio::main]
async fn main() -> Result<()> {
    match Cli::parse().command {
        Command::Backend {
            listen,
            name,
            tcp_listen,
        } => {
            let _server = backends::http(&name, listen).await?;
            let _echo = match tcp_listen {
                Some(addr) => Some(backends::tcp_echo(&name, addr).await?),
                None => None,
            };
            println!("{name} listening on {listen}");
            tokio::signal::ctrl_c().await?;
            Ok(())
        }
        Command::Demo {
            config,
            admin,
            requests,
        } => demo(config, admin, requests).await,
        Command::VrrpForge {
            defect,
            interface,
            source,
            vrid,
            priority,
            address,
            count,
        } => {
            let forge = halo_tests::vrrp_forge::Forge {
                src: source,
                vrid,
                priority,
                interval_cs: 10,
                addresses: address,
            };
            let packet = forge.packet(defect);
            let count = count.min(1000);
            for _ in 0..count {
                halo_tests::vrrp_forge::send(&interface, &packet)?;
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            println!("sent {count} {defect:?} adverts for VRID {vrid} on {interface}");
            Ok(())
        }
        Command::ControlPlane { action } => match action {
            ControlPlaneAction::Up { dir } => control_plane_up(&dir),
            ControlPlaneAction::Down { dir } => control_plane_down(&dir),
        },
    }
}

fn control_plane_up(dir: &std::path::Path) -> Result<()> {
    let cp = control_plane::ControlPlane::start_detached(dir)?;
    for (name, pid) in cp.pids() {
        println!("{name}: pid {pid}, log {}", cp.log_path(name).display());
    }
    println!(
        "kube-apiserver {} (etcd {})",
        cp.server_url(),
        cp.etcd_url()
    );
    println!("kubeconfig: {}", cp.kubeconfig().display());
    println!(
        "stop it with: halo-lab control-plane down --dir {}\n",
        cp.dir().display()
    );
    println!("export KUBECONFIG={}", cp.kubeconfig().display());
    // Detached: dropping `cp` leaves the processes running.
    Ok(())
}

fn control_plane_down(dir: &std::path::Path) -> Result<()> {
    let stopped = control_plane::stop_dir(dir)?;
    if stopped.is_empty() {
        println!("nothing was running in {}", dir.display());
    }
    for (name, pid) in stopped {
        println!("stopped {name} (pid {pid})");
    }
    Ok(())
}

async fn demo(config: PathBuf, admin: SocketAddr, requests: Option<u32>) -> Result<()> {
    let _web1 = backends::http("web-1", "127.0.0.1:9001".parse()?)
        .await
        .context("start web-1 on 127.0.0.1:9001")?;
    let _web2 = backends::http("web-2", "127.0.0.1:9002".parse()?)
        .await
        .context("start web-2 on 127.0.0.1:9002")?;
    let log = std::env::temp_dir().join(format!("halo-demo-{}.log", std::process::id()));
    let binary = process::binary("halo-dataplane")?;
    let dataplane = process::DataPlane::start(&binary, &config, "demo", admin, &log)?;
    let vip: SocketAddr = "127.0.0.10:8080".parse()?;

    println!(
        "halo-dataplane is serving {} (pid {}, log {})",
        config.display(),
        dataplane.pid(),
        log.display()
    );
    println!("backends web-1 on 127.0.0.1:9001 and web-2 on 127.0.0.1:9002\n");
    println!("try:");
    println!(
        "  for i in 1 2 3 4; do curl -s http://{vip}/; done     # HTTP listener, alternates web-1 / web-2"
    );
    println!("  curl -s http://127.0.0.10:8081/                       # TCP listener");
    println!(
        "  curl -s http://{admin}/status                         # backends, health, config version"
    );
    println!("  curl -s http://{admin}/metrics");
    println!(
        "edit {} and save: the data plane reloads it (a bad edit is refused and logged)\n",
        config.display()
    );

    match requests {
        Some(n) => {
            let mut answers = Vec::new();
            for _ in 0..n {
                let reply = client::get(vip, "/").await?;
                println!("{} {}", reply.status.as_u16(), reply.body.trim());
                answers.push(reply.body.trim().to_string());
            }
            let alternates = answers.windows(2).all(|w| w[0] != w[1]);
            if n >= 2 && !alternates {
                bail!("responses did not alternate between the backends: {answers:?}");
            }
            Ok(())
        }
        None => {
            println!("Ctrl-C stops everything.");
            tokio::signal::ctrl_c().await?;
            drop(dataplane);
            tokio::time::sleep(Duration::from_millis(50)).await;
            Ok(())
        }
    }
}
