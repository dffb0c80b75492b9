//! halo-controller: watches VirtualIPs, LoadBalancers, Services, EndpointSlices, Nodes
//! and the TLS Secrets LoadBalancers reference, renders one NodeConfig per node, streams
//! it to that node's data plane, and writes status. Two replicas elect a leader on a Lease.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context as _, Result, bail};
use clap::Parser;
use halo_controller::lease::{self, Leader, LeaseConfig};
use halo_controller::metrics::{self, Metrics};
use halo_controller::observed::Observed;
use halo_controller::reconcile::Renderer;
use halo_controller::status::{self, Context};
use halo_controller::stream::{self, Auth, Hub, StreamServer};
use halo_controller::{index::Index, serving_cert, tls};
use kube::runtime::events::{Recorder, Reporter};

#[derive(Parser)]
#[command(name = "halo-controller", version, about = "Halo controller")]
struct Args {
    /// Kubeconfig to use instead of the in-cluster configuration / $KUBECONFIG.
    #[arg(long)]
    kubeconfig: Option<PathBuf>,
    /// Namespace of the controller (Lease, Secrets for VRRP passwords).
    #[arg(long, env = "POD_NAMESPACE", default_value = "halo-system")]
    namespace: String,
    /// Name of this replica in the Lease.
    #[arg(long, env = "POD_NAME")]
    identity: Option<String>,
    /// Config stream listener (HTTPS).
    #[arg(long, default_value = "0.0.0.0:9443")]
    listen: SocketAddr,
    /// Serving certificate (PEM) of the config stream; with --tls-key.
    #[arg(long, requires = "tls_key", conflicts_with = "tls_secret")]
    tls_cert: Option<PathBuf>,
    #[arg(long, requires = "tls_cert")]
    tls_key: Option<PathBuf>,
    /// Instead of files: the Secret (in --namespace) holding tls.crt, tls.key and ca.crt,
    /// created with a new CA and certificate when it does not exist.
    #[arg(long, required_unless_present = "tls_cert")]
    tls_secret: Option<String>,
    /// The Service the data planes dial: its DNS names go into a created certificate.
    #[arg(long, default_value = "halo-controller")]
    tls_service: String,
    #[arg(long, default_value = "cluster.local")]
    cluster_domain: String,
    /// Validity of a created CA and certificate, in days.
    #[arg(long, default_value_t = 3650, value_parser = clap::value_parser!(u32).range(1..=36500))]
    tls_validity_days: u32,
    /// Plain-HTTP /metrics and /healthz.
    #[arg(long, default_value = "0.0.0.0:9090")]
    metrics: SocketAddr,
    /// ServiceAccount (in --namespace) the data planes run as.
    #[arg(long, default_value = "halo-dataplane")]
    dataplane_service_account: String,
    /// Audience data plane tokens must be issued for.
    #[arg(long, default_value = "halo-controller")]
    token_audience: String,
    /// VRIDs handed out to VirtualIPs without one, e.g. 1-255.
    #[arg(long, default_value = "1-255", value_parser = parse_range)]
    vrid_range: (u8, u8),
    #[arg(long, default_value = "halo-controller")]
    lease_name: String,
    #[arg(long, default_value = "15s", value_parser = parse_duration)]
    lease_duration: Duration,
    #[arg(long, default_value = "5s", value_parser = parse_duration)]
    heartbeat: Duration,
    /// Let VirtualIPs run `exec` track checks: each is a program run on every node the
    /// VirtualIP selects, so they are refused (Ready=False) unless this is given.
    #[arg(long)]
    allow_track_exec: bool,
}

/// The config stream's TLS from files, or from the Secret the controller keeps.
async fn serving_tls(args: &Args, client: &kube::Client) -> Result<tokio_rustls::TlsAcceptor> {
    if let (Some(cert), Some(key)) = (&args.tls_cert, &args.tls_key) {
        return tls::acceptor(cert, key);
    }
    let Some(name) = &args.tls_secret else {
        bail!("give --tls-cert and --tls-key, or --tls-secret");
    };
    let names = serving_cert::dns_names(&args.tls_service, &args.namespace, &args.cluster_domain);
    // Bounded: a controller that cannot reach the API server at start is restarted by its
    // liveness probe, which is the clearer signal.
    let material = tokio::time::timeout(
        Duration::from_secs(60),
        serving_cert::ensure(
            client.clone(),
            &args.namespace,
            name,
            &names,
            Duration::from_secs(u64::from(args.tls_validity_days) * 86_400),
        ),
    )
    .await
    .context("the serving certificate's Secret took too long")??;
    tls::acceptor_from_pem(material.cert.as_bytes(), material.key.as_bytes())
        .with_context(|| format!("Secret {}/{name}", args.namespace))
}

fn parse_duration(text: &str) -> Result<Duration, String> {
    halo_crds::duration::parse(text).map_err(|e| e.to_string())
}

fn parse_range(text: &str) -> Result<(u8, u8), String> {
    let (a, b) = text.split_once('-').ok_or("expected FROM-TO, e.g. 1-255")?;
    let a: u8 = a.parse().map_err(|_| "FROM must be 1-255")?;
    let b: u8 = b.parse().map_err(|_| "TO must be 1-255")?;
    if a == 0 || a > b {
        return Err("expected 1 <= FROM <= TO <= 255".into());
    }
    Ok((a, b))
}

#[tokio::main]
async fn main() -> Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let args = Args::parse();
    let _ = tokio_rustls::rustls::crypto::ring::default_provider().install_default();

    let config = match &args.kubeconfig {
        Some(path) => {
            let kc = kube::config::Kubeconfig::read_from(path)
                .with_context(|| format!("read {}", path.display()))?;
            kube::Config::from_custom_kubeconfig(kc, &Default::default()).await?
        }
        None => kube::Config::infer().await?,
    };
    let client = kube::Client::try_from(config)?;
    let identity = args
        .identity
        .clone()
        .unwrap_or_else(|| format!("{}-{}", hostname(), std::process::id()));
    let acceptor = serving_tls(&args, &client).await?;

    let metrics = Arc::new(Metrics::new());
    let leader = Arc::new(Leader::default());
    let hub = Arc::new(Hub::default());
    let observed = Arc::new(Observed::default());

    tokio::spawn(lease::run(
        client.clone(),
        LeaseConfig {
            namespace: args.namespace.clone(),
            name: args.lease_name.clone(),
            identity: identity.clone(),
            duration: args.lease_duration,
        },
        leader.clone(),
    ));

    let gateway_api = halo_controller::index::gateway_api(&client).await;
    if gateway_api.core {
        tracing::info!(
            "Gateway API found: serving GatewayClasses of {}",
            halo_controller::gateway::CONTROLLER_NAME
        );
    } else {
        tracing::info!(
            "Gateway API CRDs not installed: Gateways are not served (restart after installing them)"
        );
    }
    let index = Index::start(&client, &args.namespace, gateway_api);
    tokio::time::timeout(Duration::from_secs(120), index.ready())
        .await
        .context("the initial list of watched objects took too long")??;
    let renderer = Renderer {
        index: index.clone(),
        hub: hub.clone(),
        observed: observed.clone(),
        metrics: metrics.clone(),
        vrid_range: args.vrid_range,
        options: halo_crds::render::RenderOptions {
            allow_track_exec: args.allow_track_exec,
        },
        resolver: Default::default(),
        memo: Default::default(),
    };
    renderer.load_material().await;
    renderer.render_once();
    tokio::spawn(renderer.run());
    // Status (Services' addresses, conditions) is written by the leader only: a new
    // leader renders again so what it saw before leading gets written.
    let (gained, changed) = (leader.clone(), index.changed.clone());
    tokio::spawn(async move {
        loop {
            gained.gained().await;
            changed.notify_one();
        }
    });

    let ctx = Arc::new(Context {
        client: client.clone(),
        virtual_ips: index.virtual_ips.clone(),
        load_balancers: index.load_balancers.clone(),
        pools: index.pools.clone(),
        services: index.services.clone(),
        gateway: index.gateway.clone(),
        observed: observed.clone(),
        leader: leader.clone(),
        metrics: metrics.clone(),
        recorder: Recorder::new(
            client.clone(),
            Reporter {
                controller: "halo-controller".into(),
                instance: Some(identity.clone()),
            },
        ),
    });
    let (status_tx, status_rx) = futures::channel::mpsc::unbounded();
    observed.add_trigger(status_tx);
    tokio::spawn(status::run(ctx, status_rx));

    let server = Arc::new(StreamServer {
        hub,
        observed,
        auth: Auth::new(
            client.clone(),
            args.token_audience.clone(),
            format!(
                "system:serviceaccount:{}:{}",
                args.namespace, args.dataplane_service_account
            ),
        ),
        leader: leader.clone(),
        metrics: metrics.clone(),
        refusal_log: std::sync::Mutex::new(halo_crds::throttle::Throttle::new(
            halo_controller::stream::REFUSAL_LOG_PERIOD,
        )),
        heartbeat: args.heartbeat,
    });
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("cannot listen on {}", args.listen))?;
    tokio::spawn(stream::serve(listener, acceptor, server));
    let metrics_addr = args.metrics;
    let metrics_task = tokio::spawn(metrics::serve(metrics_addr, metrics, leader));
    tracing::info!(%identity, listen = %args.listen, metrics = %metrics_addr, "halo-controller running");

    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    tokio::select! {
        _ = term.recv() => tracing::info!("SIGTERM: stopping"),
        _ = tokio::signal::ctrl_c() => tracing::info!("SIGINT: stopping"),
        r = metrics_task => match r {
            Ok(Err(e)) => bail!("metrics listener on {metrics_addr}: {e}"),
            _ => bail!("metrics listener stopped"),
        },
    }
    Ok(())
}

fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .unwrap_or_else(|_| "halo-controller".into())
}
