//! keepalived as a VRRP peer inside a lab namespace, for interop tests and the failover
//! benchmark. Only the VRRP subsystem runs (`--vrrp`), in the foreground, logging to a
//! file in the test's own directory, with its pid files there too: the system's
//! keepalived service is never touched.
//!
//! keepalived forks a VRRP child that dies *gracefully* (priority 0, VIPs removed) when
//! its parent dies (PR_SET_PDEATHSIG), so a crash is modelled by SIGKILL on the child
//! first, then on the parent. The child's PID comes from the `-r` pid file and is only
//! signalled after checking that its parent is the keepalived this lab started.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

use crate::netns::{Host, Lab};

pub const PROGRAM: &str = "keepalived";

/// Whether keepalived is installed.
pub fn available() -> bool {
    Command::new(PROGRAM)
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success() || !o.stderr.is_empty())
}

/// One `vrrp_instance` of a keepalived configuration.
#[derive(Clone, Debug)]
pub struct Conf {
    pub instance: String,
    pub interface: String,
    pub vrid: u8,
    pub priority: u8,
    /// 2 or 3.
    pub version: u8,
    /// keepalived's `advert_int` in seconds: "1", "0.1", "0.01".
    pub advert_int: String,
    /// With prefix, e.g. `192.0.2.100/24`.
    pub vips: Vec<String>,
    pub nopreempt: bool,
    /// `preempt_delay` in seconds.
    pub preempt_delay: Option<u32>,
    /// `authentication { auth_type PASS auth_pass ... }` (v2).
    pub auth_pass: Option<String>,
    /// `unicast_src_ip` and `unicast_peer` addresses.
    pub unicast: Option<(String, Vec<String>)>,
}

impl Conf {
    /// VRRPv3 on eth0 for `vip`, instance `web`.
    pub fn v3(vrid: u8, priority: u8, advert_int: &str, vip: &str) -> Self {
        Self {
            instance: "web".into(),
            interface: "eth0".into(),
            vrid,
            priority,
            version: 3,
            advert_int: advert_int.into(),
            vips: vec![vip.into()],
            nopreempt: false,
            preempt_delay: None,
            auth_pass: None,
            unicast: None,
        }
    }

    /// VRRPv2, 1 s adverts, simple password.
    pub fn v2_pass(vrid: u8, priority: u8, password: &str, vip: &str) -> Self {
        Self {
            version: 2,
            advert_int: "1".into(),
            auth_pass: Some(password.into()),
            ..Self::v3(vrid, priority, "1", vip)
        }
    }

    pub fn render(&self, router_id: &str) -> String {
        let mut s = String::new();
        let _ = writeln!(s, "global_defs {{\n  router_id {router_id}\n}}");
        let _ = writeln!(s, "vrrp_instance {} {{", self.instance);
        let _ = writeln!(s, "  state BACKUP");
        let _ = writeln!(s, "  interface {}", self.interface);
        let _ = writeln!(s, "  virtual_router_id {}", self.vrid);
        let _ = writeln!(s, "  priority {}", self.priority);
        let _ = writeln!(s, "  advert_int {}", self.advert_int);
        let _ = writeln!(s, "  version {}", self.version);
        if self.nopreempt {
            let _ = writeln!(s, "  nopreempt");
        }
        if let Some(d) = self.preempt_delay {
            let _ = writeln!(s, "  preempt_delay {d}");
        }
        if let Some(p) = &self.auth_pass {
            let _ = writeln!(
                s,
                "  authentication {{\n    auth_type PASS\n    auth_pass {p}\n  }}"
            );
        }
        if let Some((src, peers)) = &self.unicast {
            let _ = writeln!(s, "  unicast_src_ip {src}");
            let _ = writeln!(s, "  unicast_peer {{");
            for p in peers {
                let _ = writeln!(s, "    {p}");
            }
            let _ = writeln!(s, "  }}");
        }
        let _ = writeln!(s, "  virtual_ipaddress {{");
        for v in &self.vips {
            let _ = writeln!(s, "    {v} dev {}", self.interface);
        }
        let _ = writeln!(s, "  }}\n}}");
        s
    }
}

/// A keepalived started by a [`Lab`] (which owns the parent process).
#[derive(Debug)]
pub struct Keepalived {
    pub parent: u32,
    pub conf_file: PathBuf,
    pub pid_file: PathBuf,
    pub vrrp_pid_file: PathBuf,
    pub log: PathBuf,
}

fn ppid(pid: u32) -> Option<u32> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // pid (comm) state ppid ...; comm may hold spaces, so split after the last ')'.
    let rest = stat.rsplit_once(')')?.1;
    rest.split_whitespace().nth(1)?.parse().ok()
}

fn alive(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| {
            s.rsplit_once(')')
                .and_then(|(_, r)| r.split_whitespace().next().map(|st| st != "Z"))
        })
        .unwrap_or(false)
}

impl Keepalived {
    /// Writes the configuration to `dir` and starts keepalived in `host`'s namespace.
    /// `tag` names the files (unique within `dir`).
    pub fn start(lab: &mut Lab, host: &Host, dir: &Path, tag: &str, conf: &Conf) -> Result<Self> {
        let conf_file = dir.join(format!("{tag}.conf"));
        std::fs::write(&conf_file, conf.render(tag))?;
        Self::start_file(lab, host, dir, tag, &conf_file)
    }

    /// Starts keepalived on an existing configuration file (its includes are read
    /// relative to it); pid and log files go to `dir`, named after `tag`.
    pub fn start_file(
        lab: &mut Lab,
        host: &Host,
        dir: &Path,
        tag: &str,
        conf_file: &Path,
    ) -> Result<Self> {
        let conf_file = conf_file.to_path_buf();
        let pid_file = dir.join(format!("{tag}.pid"));
        let vrrp_pid_file = dir.join(format!("{tag}-vrrp.pid"));
        let _ = std::fs::remove_file(&pid_file);
        let _ = std::fs::remove_file(&vrrp_pid_file);
        let log = dir.join(format!("{tag}.log"));
        let program = which(PROGRAM)?;
        let args = [
            "--dont-fork",
            "--log-console",
            "--log-detail",
            "--no-syslog",
            "--dont-respawn",
            "--vrrp",
            "-f",
            &conf_file.to_string_lossy(),
            "-p",
            &pid_file.to_string_lossy(),
            "-r",
            &vrrp_pid_file.to_string_lossy(),
        ]
        .map(str::to_string);
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let parent = lab.spawn(host, &program, &args, &log)?;
        Ok(Self {
            parent,
            conf_file,
            pid_file,
            vrrp_pid_file,
            log,
        })
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// The VRRP child's PID, only if it is alive and its parent is ours.
    pub fn vrrp_pid(&self) -> Option<u32> {
        let pid: u32 = std::fs::read_to_string(&self.vrrp_pid_file)
            .ok()?
            .trim()
            .parse()
            .ok()?;
        (alive(pid) && ppid(pid) == Some(self.parent)).then_some(pid)
    }

    /// States entered, in order (`BACKUP`, `MASTER`, `FAULT`), from the log.
    pub fn states(&self) -> Vec<String> {
        self.log_text()
            .lines()
            .filter_map(|l| {
                let (_, rest) = l.split_once("Entering ")?;
                let (state, _) = rest.split_once(" STATE")?;
                Some(state.to_string())
            })
            .collect()
    }

    pub fn state(&self) -> Option<String> {
        self.states().pop()
    }

    pub fn count(&self, state: &str) -> usize {
        self.states().iter().filter(|s| *s == state).count()
    }

    /// Waits until the VRRP child runs and has entered some state.
    pub fn wait_started(&self, limit: Duration) -> Result<()> {
        let start = Instant::now();
        while start.elapsed() < limit {
            if self.vrrp_pid().is_some() && self.state().is_some() {
                return Ok(());
            }
            if !alive(self.parent) {
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        bail!(
            "keepalived did not start within {limit:?}:\n{}",
            self.log_text()
        )
    }

    /// Waits until keepalived's last state is `state`.
    pub fn wait_state(&self, state: &str, limit: Duration) -> bool {
        let start = Instant::now();
        while start.elapsed() < limit {
            if self.state().as_deref() == Some(state) {
                return true;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        false
    }

    /// A crash: SIGKILL on the VRRP child (no priority 0, VIPs stay), then the parent.
    pub fn crash(&self, lab: &mut Lab) -> Result<()> {
        let child = self
            .vrrp_pid()
            .context("keepalived VRRP child not running")?;
        kill(child, "KILL")?;
        lab.signal(self.parent, "KILL")?;
        lab.wait_exit(self.parent, Duration::from_secs(5))?;
        wait_gone(child, Duration::from_secs(5))
    }

    /// A graceful stop: SIGTERM on the parent, which stops the child (priority 0).
    pub fn stop(&self, lab: &mut Lab) -> Result<()> {
        let child = self.vrrp_pid();
        lab.signal(self.parent, "TERM")?;
        lab.wait_exit(self.parent, Duration::from_secs(10))?;
        if let Some(c) = child {
            wait_gone(c, Duration::from_secs(5))?;
        }
        Ok(())
    }

    /// Cleanup (also when a test failed): SIGKILL on a still running child of ours.
    /// The lab kills the parent itself.
    pub fn kill_child(&self) {
        if let Some(c) = self.vrrp_pid() {
            let _ = kill(c, "KILL");
            let _ = wait_gone(c, Duration::from_secs(2));
        }
    }
}

fn kill(pid: u32, signal: &str) -> Result<()> {
    let st = Command::new("kill")
        .args(["-s", signal, &pid.to_string()])
        .status()?;
    if !st.success() {
        bail!("kill -s {signal} {pid} failed");
    }
    Ok(())
}

fn wait_gone(pid: u32, limit: Duration) -> Result<()> {
    let start = Instant::now();
    while start.elapsed() < limit {
        if !alive(pid) {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    bail!("pid {pid} still running after {limit:?}")
}

fn which(program: &str) -> Result<PathBuf> {
    for dir in ["/usr/sbin", "/usr/bin", "/sbin", "/bin", "/usr/local/sbin"] {
        let p = Path::new(dir).join(program);
        if p.exists() {
            return Ok(p);
        }
    }
    bail!("{program} not found: apt-get install {program}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_v2_with_password() {
        let text = Conf::v2_pass(42, 100, "secret1", "192.0.2.100/24").render("node-b");
        assert!(text.contains("version 2"), "{text}");
        assert!(text.contains("auth_pass secret1"), "{text}");
        assert!(text.contains("advert_int 1\n"), "{text}");
        assert!(text.contains("192.0.2.100/24 dev eth0"), "{text}");
    }
}
