//! `halo-dataplane import`: turns a haproxy.cfg and per-node keepalived.conf files into
//! VirtualIP and LoadBalancer manifests, with a report of what carried over and what did not.

pub mod haproxy;
pub mod keepalived;
pub mod output;
pub mod report;

use std::path::{Path, PathBuf};

use halo_crds::{LoadBalancer, VirtualIP};

pub use self::report::{Outcome, Report, Source};

/// Where a node's name comes from when several keepalived files are merged.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum NodeNameFrom {
    /// The file name without its extension (`node1.conf` → `node1`).
    #[default]
    File,
    /// `global_defs { router_id ... }`, falling back to the file name.
    RouterId,
}

#[derive(Debug, Clone, Default)]
pub struct Options {
    pub haproxy: Option<PathBuf>,
    pub keepalived: Vec<PathBuf>,
    /// Cluster mode: objects and certificate Secrets go into this namespace; without it the
    /// output is a standalone manifest with certificate files next to it.
    pub namespace: Option<String>,
    pub node_name_from: NodeNameFrom,
}

/// A certificate (and key) that a `crt` directive referenced, to be written out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Certificate {
    /// Name used for the file (standalone) or the Secret (cluster).
    pub name: String,
    pub cert_pem: String,
    pub key_pem: String,
}

/// Everything an import produced.
#[derive(Debug, Clone, Default)]
pub struct Imported {
    pub virtual_ips: Vec<VirtualIP>,
    pub load_balancers: Vec<LoadBalancer>,
    pub certificates: Vec<Certificate>,
    pub report: Report,
}

/// A source file that cannot be read or parsed (exit status 2).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{file}:{line}: {message}")]
pub struct ParseError {
    pub file: String,
    /// 1-based; 0 when the file could not be read at all.
    pub line: usize,
    pub message: String,
}

impl ParseError {
    pub fn new(file: &str, line: usize, message: impl Into<String>) -> Self {
        Self {
            file: file.to_string(),
            line,
            message: message.into(),
        }
    }
}

/// Reads a source file, naming it in the error.
pub fn read_source(path: &Path) -> Result<String, ParseError> {
    std::fs::read_to_string(path)
        .map_err(|e| ParseError::new(&path.display().to_string(), 0, format!("cannot read: {e}")))
}

/// Runs both importers and joins their results: a LoadBalancer whose addresses are a
/// VirtualIP's refers to it by name.
pub fn import(options: &Options) -> Result<Imported, ParseError> {
    let mut imported = Imported::default();
    if !options.keepalived.is_empty() {
        let vips = keepalived::import(&options.keepalived, options.node_name_from)?;
        imported.virtual_ips = vips.virtual_ips;
        imported.report.extend(vips.report);
    }
    if let Some(path) = &options.haproxy {
        let lbs = haproxy::import(path)?;
        imported.load_balancers = lbs.load_balancers;
        imported.certificates = lbs.certificates;
        imported.report.extend(lbs.report);
    }
    link_addresses(&imported.virtual_ips, &mut imported.load_balancers);
    if let Some(ns) = &options.namespace {
        for lb in &mut imported.load_balancers {
            lb.metadata.namespace = Some(ns.clone());
        }
    }
    Ok(imported)
}

/// A LoadBalancer binding exactly the addresses of one VirtualIP names that VirtualIP, so
/// the listeners follow the address when it moves.
fn link_addresses(vips: &[VirtualIP], lbs: &mut [LoadBalancer]) {
    for lb in lbs {
        let Some(addresses) = &lb.spec.addresses else {
            continue;
        };
        let owner = vips.iter().find(|v| {
            let hosts: Vec<&str> = v
                .spec
                .addresses
                .iter()
                .map(|a| a.split('/').next().unwrap_or(a))
                .collect();
            !addresses.is_empty() && addresses.iter().all(|a| hosts.contains(&a.as_str()))
        });
        if let Some(vip) = owner {
            lb.spec.virtual_ip = vip.metadata.name.clone();
            lb.spec.addresses = None;
        }
    }
}

/// `halo-dataplane import` arguments.
#[derive(clap::Args, Debug, Clone)]
pub struct ImportArgs {
    /// An haproxy.cfg to turn into LoadBalancers.
    #[arg(long)]
    pub haproxy: Option<PathBuf>,
    /// A keepalived.conf, one per node (repeat); merged into one VirtualIP per VRID.
    #[arg(long)]
    pub keepalived: Vec<PathBuf>,
    /// Write objects (and certificate Secrets) for this namespace instead of a standalone
    /// manifest with certificate files.
    #[arg(long)]
    pub namespace: Option<String>,
    /// Write the manifest here instead of to standard output.
    #[arg(long, short)]
    pub output: Option<PathBuf>,
    /// How the report on standard error is printed.
    #[arg(long, value_enum, default_value_t = output::ReportFormat::Text)]
    pub report: output::ReportFormat,
    /// Where a node's name comes from when merging keepalived files.
    #[arg(long, value_enum, default_value_t = NodeNameFrom::File)]
    pub node_name_from: NodeNameFrom,
}

/// Runs the command: 0 everything mapped, 3 something approximated or unsupported, 2 a
/// file that cannot be read or parsed (or the output cannot be written).
pub fn run(args: &ImportArgs) -> std::process::ExitCode {
    use std::process::ExitCode;
    if args.haproxy.is_none() && args.keepalived.is_empty() {
        eprintln!("halo-dataplane import: give --haproxy and/or --keepalived");
        return ExitCode::from(report::EXIT_PARSE_ERROR);
    }
    let options = Options {
        haproxy: args.haproxy.clone(),
        keepalived: args.keepalived.clone(),
        namespace: args.namespace.clone(),
        node_name_from: args.node_name_from,
    };
    let mut imported = match import(&options) {
        Ok(i) => i,
        Err(e) => {
            eprintln!("halo-dataplane import: {e}");
            return ExitCode::from(report::EXIT_PARSE_ERROR);
        }
    };
    let written = place_certificates(&mut imported, args).and_then(|secrets| {
        let yaml = output::manifest_yaml(&imported)?;
        Ok(format!("{yaml}{secrets}"))
    });
    let written = written.and_then(|yaml| match &args.output {
        Some(path) => output::write_file(path, &yaml),
        None => {
            print!("{yaml}");
            Ok(())
        }
    });
    if let Err(e) = written {
        eprintln!("halo-dataplane import: {e}");
        return ExitCode::from(report::EXIT_PARSE_ERROR);
    }
    match args.report {
        output::ReportFormat::Text => eprint!("{}", imported.report),
        output::ReportFormat::Json => eprintln!("{}", imported.report.to_json()),
    }
    ExitCode::from(imported.report.exit_code())
}

/// Certificates as Secret documents (cluster mode, returned) or as files next to the
/// output (standalone mode, which therefore needs `--output`).
fn place_certificates(
    imported: &mut Imported,
    args: &ImportArgs,
) -> Result<String, output::OutputError> {
    if let Some(ns) = &args.namespace {
        return output::secrets_yaml(imported, ns);
    }
    match &args.output {
        Some(path) => output::write_certificates(imported, path).map(|()| String::new()),
        None if imported.certificates.is_empty() => Ok(String::new()),
        None => Err(output::OutputError::Write {
            path: "(standard output)".into(),
            source: std::io::Error::other(
                "certificates are written next to the manifest: give --output FILE (or --namespace for Secrets)",
            ),
        }),
    }
}
