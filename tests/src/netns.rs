//! A lab of network namespaces: a switch namespace with a bridge, and hosts each joined
//! to it by a veth pair. Every name is unique to the lab, every address lives inside the
//! lab's own namespaces, and dropping the lab kills its processes (by PID) and deletes
//! its namespaces, also when the test failed.

use std::net::Ipv4Addr;
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

/// The lab's subnet (TEST-NET-1, never routed): hosts get .1, .2, ...
pub const PREFIX_LEN: u8 = 24;

pub fn subnet_addr(host: u8) -> Ipv4Addr {
    Ipv4Addr::new(192, 0, 2, host)
}

/// The lab's IPv6 subnet (unique local): hosts get fd00:6c61:6200::<index>/64.
pub fn subnet_addr_v6(host: u8) -> std::net::Ipv6Addr {
    std::net::Ipv6Addr::new(0xfd00, 0x6c61, 0x6200, 0, 0, 0, 0, u16::from(host))
}

pub struct Lab {
    tag: String,
    switch: String,
    hosts: Vec<Host>,
    children: std::sync::Mutex<Vec<(String, Child)>>,
}

#[derive(Clone, Debug)]
pub struct Host {
    pub name: String,
    pub ns: String,
    pub addr: Ipv4Addr,
    /// Name of this host's port on the bridge, in the switch namespace.
    port: String,
}

/// Whether lab tests can run here (root and iproute2).
pub fn available() -> bool {
    let root = Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| o.stdout.trim_ascii() == b"0");
    root && Command::new("ip")
        .arg("-V")
        .output()
        .is_ok_and(|o| o.status.success())
}

fn run(args: &[&str]) -> Result<Output> {
    let out = Command::new(args[0])
        .args(&args[1..])
        .output()
        .with_context(|| format!("run {}", args.join(" ")))?;
    if !out.status.success() {
        bail!(
            "{} failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(out)
}

impl Lab {
    /// A switch namespace with bridge `br0`, up.
    pub fn new(label: &str) -> Result<Self> {
        static N: AtomicU32 = AtomicU32::new(0);
        let tag = format!(
            "halo-{label}-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        );
        let switch = format!("{tag}-sw");
        let lab = Self {
            tag,
            switch: switch.clone(),
            hosts: Vec::new(),
            children: std::sync::Mutex::new(Vec::new()),
        };
        run(&["ip", "netns", "add", &switch])?;
        lab.exec_in(&switch, &["ip", "link", "add", "br0", "type", "bridge"])?;
        lab.exec_in(&switch, &["ip", "link", "set", "br0", "up"])?;
        lab.exec_in(&switch, &["ip", "link", "set", "lo", "up"])?;
        Ok(lab)
    }

    /// Adds a host namespace with `eth0` at 192.0.2.`index`/24 on the bridge.
    pub fn add_host(&mut self, name: &str, index: u8) -> Result<Host> {
        let ns = format!("{}-{name}", self.tag);
        let port = format!("p{index}");
        run(&["ip", "netns", "add", &ns])?;
        // Addresses usable at once: no duplicate address detection inside the lab.
        self.exec_in(
            &ns,
            &[
                "sysctl",
                "-qw",
                "net.ipv6.conf.default.accept_dad=0",
                "net.ipv6.conf.all.accept_dad=0",
            ],
        )?;
        let host = Host {
            name: name.to_string(),
            ns: ns.clone(),
            addr: subnet_addr(index),
            port: port.clone(),
        };
        self.hosts.push(host.clone());
        // Create the pair inside the switch namespace, then move one end to the host.
        self.exec_in(
            &self.switch,
            &[
                "ip", "link", "add", &port, "type", "veth", "peer", "name", "eth0",
            ],
        )?;
        self.exec_in(&self.switch, &["ip", "link", "set", "eth0", "netns", &ns])?;
        self.exec_in(
            &self.switch,
            &["ip", "link", "set", &port, "master", "br0", "up"],
        )?;
        self.exec_in(&ns, &["ip", "link", "set", "lo", "up"])?;
        self.exec_in(
            &ns,
            &[
                "ip",
                "addr",
                "add",
                &format!("{}/{PREFIX_LEN}", host.addr),
                "dev",
                "eth0",
            ],
        )?;
        let v6 = format!("{}/64", subnet_addr_v6(index));
        self.exec_in(
            &ns,
            &["ip", "-6", "addr", "add", &v6, "dev", "eth0", "nodad"],
        )?;
        self.exec_in(&ns, &["ip", "link", "set", "eth0", "up"])?;
        Ok(host)
    }

    pub fn host(&self, name: &str) -> Option<&Host> {
        self.hosts.iter().find(|h| h.name == name)
    }

    pub fn exec_in(&self, ns: &str, args: &[&str]) -> Result<Output> {
        let mut full = vec!["ip", "netns", "exec", ns];
        full.extend_from_slice(args);
        run(&full)
    }

    /// Starts a long-running process inside `host`'s namespace; the lab kills it on drop.
    pub fn spawn(&self, host: &Host, program: &Path, args: &[&str], log: &Path) -> Result<u32> {
        let log_file = std::fs::File::create(log)?;
        let child = Command::new("ip")
            .args(["netns", "exec", &host.ns])
            .arg(program)
            .args(args)
            .stdin(Stdio::null())
            .stdout(log_file.try_clone()?)
            .stderr(log_file)
            .spawn()
            .with_context(|| format!("spawn {} in {}", program.display(), host.ns))?;
        let pid = child.id();
        self.children_mut().push((host.name.clone(), child));
        Ok(pid)
    }

    /// Sends `signal` to a process this lab started.
    pub fn signal(&self, pid: u32, signal: &str) -> Result<()> {
        if !self.children_mut().iter().any(|(_, c)| c.id() == pid) {
            bail!("pid {pid} was not started by this lab");
        }
        run(&["kill", "-s", signal, &pid.to_string()])?;
        Ok(())
    }

    /// Waits (bounded) for a process this lab started to exit.
    pub fn wait_exit(&self, pid: u32, limit: Duration) -> Result<()> {
        let start = Instant::now();
        while start.elapsed() < limit {
            if let Some((_, child)) = self.children_mut().iter_mut().find(|(_, c)| c.id() == pid)
                && child.try_wait()?.is_some()
            {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        bail!("pid {pid} still running after {limit:?}")
    }

    /// Takes a host's link down (or up) on the switch side: its cable is pulled.
    pub fn set_link(&self, host: &Host, up: bool) -> Result<()> {
        self.exec_in(
            &self.switch,
            &[
                "ip",
                "link",
                "set",
                &host.port,
                if up { "up" } else { "down" },
            ],
        )?;
        Ok(())
    }

    /// Drops VRRP multicast on the bridge (multicast-hostile network).
    pub fn block_multicast(&self) -> Result<()> {
        self.exec_in(&self.switch, &["nft", "add", "table", "bridge", "lab"])?;
        self.exec_in(
            &self.switch,
            &[
                "nft",
                "add",
                "chain",
                "bridge",
                "lab",
                "vrrp_forward",
                "{ type filter hook forward priority 0; policy accept; }",
            ],
        )?;
        self.exec_in(
            &self.switch,
            &[
                "nft",
                "add",
                "rule",
                "bridge",
                "lab",
                "vrrp_forward",
                "ip",
                "daddr",
                "224.0.0.18",
                "drop",
            ],
        )?;
        Ok(())
    }

    /// Whether a TCP socket listens on `addr` in `host`'s namespace (also on an address
    /// the host does not hold: IP_FREEBIND, `ip_nonlocal_bind`).
    pub fn listening(&self, host: &Host, addr: std::net::SocketAddr) -> bool {
        let filter = format!("src {addr}");
        self.exec_in(&host.ns, &["ss", "-Hltn", &filter])
            .is_ok_and(|o| !o.stdout.trim_ascii().is_empty())
    }

    /// Sets a (namespace-local) sysctl in `host`'s namespace, e.g.
    /// `net.ipv4.ip_nonlocal_bind=1`.
    pub fn sysctl(&self, host: &Host, setting: &str) -> Result<()> {
        self.exec_in(&host.ns, &["sysctl", "-qw", setting])?;
        Ok(())
    }

    /// The IPv4 and IPv6 addresses on a host's eth0, with prefix lengths.
    pub fn addresses(&self, host: &Host) -> Result<Vec<String>> {
        let out = self.exec_in(&host.ns, &["ip", "-o", "addr", "show", "dev", "eth0"])?;
        Ok(String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter_map(|l| {
                l.split_whitespace()
                    .skip_while(|w| *w != "inet" && *w != "inet6")
                    .nth(1)
                    .map(str::to_string)
            })
            .collect())
    }
}

impl Lab {
    fn children_mut(&self) -> std::sync::MutexGuard<'_, Vec<(String, Child)>> {
        self.children
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        for (_, child) in self.children_mut().iter_mut() {
            let _ = child.kill();
            let _ = child.wait();
        }
        for host in &self.hosts {
            let _ = Command::new("ip").args(["netns", "del", &host.ns]).output();
        }
        let _ = Command::new("ip")
            .args(["netns", "del", &self.switch])
            .output();
    }
}

/// Binds a TCP listener inside namespace `ns` (the socket stays in that namespace while
/// this process keeps using it): a way into the lab for a relay, without touching the
/// host's own network configuration.
pub fn listen_in(ns: &str, addr: std::net::SocketAddr) -> Result<std::net::TcpListener> {
    use std::os::fd::AsRawFd;
    let path = format!("/var/run/netns/{ns}");
    let handle = std::thread::spawn(move || -> Result<std::net::TcpListener> {
        let file = std::fs::File::open(&path).with_context(|| format!("open {path}"))?;
        // SAFETY: setns on a namespace file we just opened; it only affects this
        // short-lived thread, which ends right after binding.
        if unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
            bail!("setns {path}: {}", std::io::Error::last_os_error());
        }
        Ok(std::net::TcpListener::bind(addr)?)
    });
    handle
        .join()
        .map_err(|_| anyhow::anyhow!("namespace thread panicked"))?
}

/// Relays connections accepted in `ns` at `inside` to `target` on this host's loopback,
/// until the returned task is aborted.
pub fn relay_into(
    ns: &str,
    inside: std::net::SocketAddr,
    target: std::net::SocketAddr,
) -> Result<tokio::task::JoinHandle<()>> {
    relay_to_any(ns, inside, vec![target])
}

/// Like [`relay_into`], but spreads connections over `targets` in turn, skipping a
/// target that refuses (what a Service in front of several replicas does).
pub fn relay_to_any(
    ns: &str,
    inside: std::net::SocketAddr,
    targets: Vec<std::net::SocketAddr>,
) -> Result<tokio::task::JoinHandle<()>> {
    let listener = listen_in(ns, inside)?;
    listener.set_nonblocking(true)?;
    let listener = tokio::net::TcpListener::from_std(listener)?;
    Ok(tokio::spawn(async move {
        let mut connections = tokio::task::JoinSet::new();
        let mut next = 0usize;
        loop {
            let Ok((mut inbound, _)) = listener.accept().await else {
                continue;
            };
            while connections.try_join_next().is_some() {}
            let order: Vec<_> = (0..targets.len())
                .map(|k| targets[(next + k) % targets.len()])
                .collect();
            next = next.wrapping_add(1);
            connections.spawn(async move {
                for target in order {
                    if let Ok(mut outbound) = tokio::net::TcpStream::connect(target).await {
                        let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                        return;
                    }
                }
            });
        }
    }))
}
