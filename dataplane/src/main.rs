use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use std::process::ExitCode;

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};
use halo_crds::render::NodeInfo;
use halo_dataplane::admin;
use halo_dataplane::cli::{AdminArgs, ClientArgs, ReloadArgs};
use halo_dataplane::config::file;
use halo_dataplane::config::stream::ControllerClient;
use halo_dataplane::metrics::Metrics;
use halo_dataplane::runtime::Runtime;
use halo_dataplane::signals::{self, Signals};

#[derive(Parser)]
#[command(
    name = "halo-dataplane",
    version,
    about = "Halo data plane: highly available VIPs with an L4/L7 load balancer"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

// Parsed once at start; boxing the big `run` variant would buy nothing.
#[allow(clippy::large_enum_variant)]
#[derive(Subcommand)]
enum Command {
    /// Serve the VirtualIP / LoadBalancer objects of a manifest file (no Kubernetes
    /// needed), or follow a controller's config stream with --controller.
    Run {
        /// Multi-document YAML of VirtualIP and LoadBalancer objects.
        #[arg(
            long,
            short,
            required_unless_present = "controller",
            conflicts_with = "controller"
        )]
        config: Option<PathBuf>,
        /// Controller base URL, e.g. https://halo-controller.halo-system.svc:9443.
        #[arg(long, env = "HALO_CONTROLLER")]
        controller: Option<String>,
        /// ServiceAccount token presented to the controller (re-read on every connect).
        #[arg(long, default_value = "/var/run/secrets/halo/token")]
        token_file: PathBuf,
        /// CA bundle that signed the controller's serving certificate.
        #[arg(long, default_value = "/etc/halo/ca.crt")]
        ca_file: PathBuf,
        /// Where the last good config is kept across restarts.
        #[arg(long, default_value = "/var/lib/halo")]
        state_dir: PathBuf,
        /// This node's name, as used in spec.priorities and spec.peers.
        #[arg(long, env = "NODE_NAME")]
        node: Option<String>,
        /// Address of the admin listener (/metrics, /healthz, /status).
        #[arg(long, default_value = "127.0.0.1:9100")]
        admin: SocketAddr,
        /// How often to look at the file for changes.
        #[arg(long, default_value = "1s", value_parser = parse_duration)]
        poll: Duration,
        /// Proxy event loops (one per core). Default: the CPUs this process may use.
        #[arg(long, env = "HALO_WORKERS")]
        workers: Option<usize>,
        /// When L4 sessions and tunnels forward with splice(2) through kernel pipes
        /// instead of copying: `auto` switches a direction once it carries bulk.
        #[arg(long, env = "HALO_SPLICE", value_enum, default_value_t = halo_dataplane::proxy::splice::Mode::Auto)]
        splice: halo_dataplane::proxy::splice::Mode,
        /// Largest HTTP request head (request line and fields) in bytes; larger → 431.
        #[arg(long, default_value_t = 16 * 1024, value_parser = clap::value_parser!(u32).range(1024..=1024 * 1024))]
        max_request_head: u32,
        /// Most header fields in an HTTP request; more → 431.
        #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u16).range(1..=128))]
        max_request_headers: u16,
        /// Longest HTTP request target in bytes; longer → 414.
        #[arg(long, default_value_t = 8 * 1024, value_parser = clap::value_parser!(u32).range(64..=1024 * 1024))]
        max_uri: u32,
        #[command(flatten)]
        reload: ReloadArgs,
        #[command(flatten)]
        admin_args: AdminArgs,
    },
    /// Show a running data plane's VIPs, listeners and backends (exit 1 when not ready).
    Status {
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Move a VirtualIP to this node now (planned handover), through the admin listener.
    Takeover {
        /// The VirtualIP's name.
        vip: String,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Turn a haproxy.cfg and keepalived.conf files into Halo manifests, with a report of
    /// what carried over (exit 0: everything; 3: something approximated or unsupported;
    /// 2: a file that cannot be parsed).
    Import(halo_dataplane::import::ImportArgs),
    /// Validate a manifest file and print the NodeConfig it renders to.
    Check {
        #[arg(long, short)]
        config: PathBuf,
        #[arg(long, env = "NODE_NAME")]
        node: Option<String>,
    },
}

fn parse_duration(text: &str) -> Result<Duration, String> {
    halo_crds::duration::parse(text).map_err(|e| e.to_string())
}

fn node_info(name: Option<String>) -> NodeInfo {
    let name = name.unwrap_or_else(|| {
        std::fs::read_to_string("/proc/sys/kernel/hostname")
            .map(|h| h.trim().to_string())
            .unwrap_or_else(|_| "localhost".into())
    });
    NodeInfo {
        name,
        ..NodeInfo::default()
    }
}

fn main() -> Result<ExitCode> {
    // Before any thread exists: a signal during start-up waits for its handler.
    signals::block();
    async_main()
}

#[tokio::main]
async fn async_main() -> Result<ExitCode> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let command = Cli::parse().command;
    if let Command::Run {
        splice,
        max_request_head,
        max_request_headers,
        max_uri,
        ..
    } = &command
    {
        halo_dataplane::proxy::splice::set_mode(*splice);
        halo_dataplane::proxy::h1::head::configure(halo_dataplane::proxy::h1::head::Limits {
            max_head: *max_request_head as usize,
            max_headers: usize::from(*max_request_headers),
            max_uri: *max_uri as usize,
        });
    }
    if !matches!(command, Command::Run { .. }) {
        signals::unblock();
    }
    match command {
        Command::Check { config, node } => {
            let rendered = file::load(&config, &node_info(node))?;
            for l in &rendered.listeners {
                halo_dataplane::runtime::check_listener(l)?;
            }
            println!("{}", serde_json::to_string_pretty(&rendered.sealed(1))?);
            Ok(ExitCode::SUCCESS)
        }
        Command::Import(args) => Ok(halo_dataplane::import::run(&args)),
        Command::Status { client } => Ok(halo_dataplane::cli::status(&client).await),
        Command::Takeover { vip, client } => Ok(halo_dataplane::cli::takeover(&client, &vip).await),
        Command::Run {
            config: Some(config),
            node,
            admin,
            poll,
            reload,
            admin_args,
            state_dir,
            workers,
            ..
        } => {
            let signals = Signals::install()?;
            let options = admin_args.options(&state_dir, admin);
            let watch = file::WatchOptions {
                poll,
                settle: reload.settle.unwrap_or(poll * 2),
                allow_empty: reload.allow_empty_reload,
            };
            let workers = worker_count(workers);
            run(
                config,
                node_info(node),
                admin,
                options,
                watch,
                signals,
                workers,
            )
            .await
        }
        Command::Run {
            controller: Some(url),
            node,
            admin,
            token_file,
            ca_file,
            state_dir,
            admin_args,
            workers,
            ..
        } => {
            let signals = Signals::install()?;
            let options = admin_args.options(&state_dir, admin);
            let client = ControllerClient::new(
                &url,
                &node_info(node).name,
                &token_file,
                &ca_file,
                &state_dir,
            )?;
            follow(client, admin, options, signals, worker_count(workers)).await
        }
        Command::Run { .. } => anyhow::bail!("give --config FILE or --controller URL"),
    }
}

fn worker_count(flag: Option<usize>) -> usize {
    flag.filter(|n| *n > 0)
        .unwrap_or_else(halo_dataplane::proxy::workers::default_count)
}

fn new_runtime(workers: usize) -> Result<Arc<Runtime>> {
    let runtime = Runtime::new(Arc::new(Metrics::new()), workers)
        .context("cannot start the proxy workers")?;
    Ok(Arc::new(runtime))
}

async fn serve_admin(
    addr: SocketAddr,
    runtime: &Arc<Runtime>,
    options: admin::Options,
) -> Result<()> {
    let listener = admin::bind(addr)
        .await
        .with_context(|| format!("cannot bind the admin listener on {addr}"))?;
    tokio::spawn(admin::serve(listener, runtime.clone(), options));
    Ok(())
}

async fn follow(
    client: ControllerClient,
    admin_addr: SocketAddr,
    options: admin::Options,
    mut signals: Signals,
    workers: usize,
) -> Result<ExitCode> {
    let runtime = new_runtime(workers)?;
    serve_admin(admin_addr, &runtime, options).await?;
    runtime.start_background();
    tokio::spawn(client.run(runtime.clone()));
    if let Some(mut hangup) = signals.take_hangup() {
        // No file to reload here: SIGHUP only reopens the access log files.
        tokio::spawn(async move {
            while hangup.recv().await.is_some() {
                halo_dataplane::proxy::accesslog::reopen();
            }
        });
    }
    tracing::info!(admin = %admin_addr, "halo-dataplane following the controller");
    signals.stopped().await;
    runtime.shutdown().await;
    Ok(ExitCode::SUCCESS)
}

async fn run(
    path: PathBuf,
    node: NodeInfo,
    admin_addr: SocketAddr,
    options: admin::Options,
    watch: file::WatchOptions,
    mut signals: Signals,
    workers: usize,
) -> Result<ExitCode> {
    let runtime = new_runtime(workers)?;
    let first = file::load(&path, &node)?;
    runtime
        .apply(first.sealed(1))
        .await
        .context("cannot apply the initial config")?;
    runtime.start_background();
    serve_admin(admin_addr, &runtime, options).await?;
    tracing::info!(node = %node.name, admin = %admin_addr, config = %path.display(), "halo-dataplane running");
    let hangup = signals.take_hangup();
    tokio::spawn(file::watch(path, node, runtime.clone(), watch, hangup));

    signals.stopped().await;
    runtime.shutdown().await;
    Ok(ExitCode::SUCCESS)
}
