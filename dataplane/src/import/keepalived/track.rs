//! keepalived's tracking (`vrrp_script` + `track_script`, `track_interface`) in Halo
//! terms. keepalived's weight rules, mapped exactly: a negative weight lowers the priority
//! by |w| while the check fails (Halo `weight: |w|`); a positive one raises it by w while
//! the check passes (Halo: the node's priority is w higher and `weight: w` takes it off
//! on failure); 0 or none takes the instance out (Halo `fault: true`).

use halo_crds::duration::format_ms;
use halo_crds::virtual_ip::{ExecTrack, HttpTrack, TcpTrack, TrackAction, TrackCheck};

use super::config::{Item, Script};
use super::script::{self, Check};
use crate::import::Report;

/// keepalived's defaults: a script runs every second and may take the whole interval.
const DEFAULT_INTERVAL_MS: u64 = 1_000;

/// What a weight does in Halo.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Effect {
    /// Halo `weight` (lowered on failure), or `None` for `fault: true`.
    pub weight: Option<u8>,
    /// Added to the node's base priority (keepalived's positive weights).
    pub bonus: u8,
}

pub fn effect(weight: i32) -> Effect {
    let magnitude = u8::try_from(weight.unsigned_abs().min(254)).unwrap_or(254);
    match weight {
        0 => Effect {
            weight: None,
            bonus: 0,
        },
        w if w > 0 => Effect {
            weight: Some(magnitude),
            bonus: magnitude,
        },
        _ => Effect {
            weight: Some(magnitude),
            bonus: 0,
        },
    }
}

/// The sentence the report gives for a weight.
pub fn explain(weight: i32) -> String {
    match weight {
        0 => "fault: true (keepalived's weight 0: a failure takes the node out of the election)"
            .to_string(),
        w if w > 0 => format!(
            "weight: {w} and {w} added to the node's priority (keepalived adds {w} while it \
             passes; Halo starts {w} higher and takes {w} off while it fails)"
        ),
        w => format!(
            "weight: {} (lowered by {} while it fails, as in keepalived)",
            -w, -w
        ),
    }
}

pub fn action(e: Effect) -> TrackAction {
    TrackAction {
        weight: e.weight,
        fault: e.weight.is_none().then_some(true),
    }
}

/// What a `vrrp_script` becomes.
#[derive(Debug, Clone, PartialEq)]
pub enum Target {
    /// The local proxy's liveness: Halo's own `bindFailure` tracking.
    BindFailure { process: String },
    /// A `track.checks[]` entry (its weight/fault still unset).
    Check {
        check: TrackCheck,
        /// How an exec check differs, when it does.
        approximated: Option<String>,
    },
}

/// Builds the target of a script; `Err` when its command cannot be read.
pub fn target(s: &Script) -> Result<Target, String> {
    let command = s
        .script
        .as_ref()
        .ok_or_else(|| "has no `script` line".to_string())?;
    let classified = script::classify(&command.value)?;
    let mut check = TrackCheck {
        name: check_name(&s.name),
        http: None,
        tcp: None,
        exec: None,
        interval: None,
        timeout: None,
        rise: None,
        fall: None,
        weight: None,
        fault: None,
    };
    let mut approximated = None;
    match classified {
        Check::Proxy { process } => return Ok(Target::BindFailure { process }),
        Check::Http { url } => {
            check.http = Some(HttpTrack {
                url,
                expect_status: None,
            })
        }
        Check::Tcp { address } => check.tcp = Some(TcpTrack { address }),
        Check::Exec {
            command,
            args,
            approximated: a,
        } => {
            if args.len() > 32 || args.iter().any(|a| a.len() > 1024) || command.len() > 1024 {
                return Err(
                    "the command is longer than an exec check takes (32 arguments of \
                     1024 bytes); put it in a script file"
                        .into(),
                );
            }
            approximated = a;
            check.exec = Some(ExecTrack { command, args });
        }
    }
    let interval = s
        .interval_ms
        .as_ref()
        .map_or(DEFAULT_INTERVAL_MS, |i| i.value);
    let interval = interval.max(10);
    let timeout = s
        .timeout_ms
        .as_ref()
        .map_or(interval, |t| t.value.min(interval));
    check.interval = Some(format_ms(interval));
    check.timeout = Some(format_ms(timeout.max(1)));
    check.rise = s.rise.as_ref().map(|r| clamp_count(r.value));
    check.fall = s.fall.as_ref().map(|f| clamp_count(f.value));
    Ok(Target::Check {
        check,
        approximated,
    })
}

fn clamp_count(v: u32) -> u8 {
    u8::try_from(v.clamp(1, 100)).unwrap_or(100)
}

/// A `track.checks[].name` (at most 63 characters).
pub fn check_name(name: &str) -> String {
    name.chars().take(63).collect()
}

/// Reports a `vrrp_script` block's lines once per file. `tracked`: whether an instance
/// of this file tracks it (keepalived runs only those).
pub fn report_script(s: &Script, tracked: bool, report: &mut Report) {
    let h = &s.header;
    if !tracked {
        report.mapped(
            h.at.clone(),
            &h.text,
            "nothing (no vrrp_instance tracks it, so keepalived never runs it)",
        );
        return;
    }
    if s.reverse {
        report.unsupported(
            h.at.clone(),
            &h.text,
            "its weight is reversed (`weight N reverse`), which Halo's checks cannot express",
        );
    }
    let target = match target(s) {
        _ if s.reverse => {
            if let Some(w) = &s.weight {
                report.unsupported(
                    w.at.clone(),
                    &w.text,
                    "Halo has no reversed checks: invert the program's exit status",
                );
            }
            return;
        }
        Ok(t) => t,
        Err(why) => {
            report.unsupported(h.at.clone(), &h.text, why);
            return;
        }
    };
    let base = format!("spec.vrrp.track.checks[{}]", check_name(&s.name));
    match &target {
        Target::BindFailure { process } => {
            report.mapped(
                h.at.clone(),
                &h.text,
                "spec.vrrp.track.bindFailure of each VirtualIP tracking it",
            );
            if let Some(c) = &s.script {
                report.mapped(
                    c.at.clone(),
                    &c.text,
                    &format!(
                        "spec.vrrp.track.bindFailure (it only checks that {process} runs; in \
                         Halo the data plane is the proxy, and a listener that cannot bind \
                         its port is the proxy not serving; the process itself being gone \
                         stops VRRP too, so the address moves anyway)"
                    ),
                );
            }
            for i in [&s.interval_ms, &s.timeout_ms].into_iter().flatten() {
                not_polled(i, report);
            }
            for i in [&s.rise, &s.fall].into_iter().flatten() {
                not_polled(i, report);
            }
        }
        Target::Check {
            check,
            approximated,
        } => {
            report.mapped(
                h.at.clone(),
                &h.text,
                &format!("{base} of each VirtualIP tracking it"),
            );
            if let Some(c) = &s.script {
                let kind = if check.http.is_some() {
                    "http.url"
                } else if check.tcp.is_some() {
                    "tcp.address"
                } else {
                    "exec"
                };
                let mut field = format!("{base}.{kind}");
                if check.exec.is_some() {
                    field.push_str(" (in a cluster, only with halo-controller --allow-track-exec)");
                }
                match approximated {
                    Some(how) => report.approximated(c.at.clone(), &c.text, &field, how),
                    None => report.mapped(c.at.clone(), &c.text, &field),
                }
            }
            report_timing(s, &base, report);
        }
    }
    if let Some(w) = &s.weight {
        if s.reverse {
            report.unsupported(
                w.at.clone(),
                &w.text,
                "Halo has no reversed checks: invert the program's exit status",
            );
        } else {
            report.mapped(w.at.clone(), &w.text, &explain(w.value));
        }
    }
}

fn not_polled<T>(i: &Item<T>, report: &mut Report) {
    report.approximated(
        i.at.clone(),
        &i.text,
        "spec.vrrp.track.bindFailure",
        "Halo notices a listener that cannot bind at once, with no polling interval, \
         timeout or rise/fall counts",
    );
}

fn report_timing(s: &Script, base: &str, report: &mut Report) {
    if let Some(i) = &s.interval_ms {
        if i.value < 10 {
            report.approximated(
                i.at.clone(),
                &i.text,
                &format!("{base}.interval"),
                "raised to 10ms",
            );
        } else {
            report.mapped(i.at.clone(), &i.text, &format!("{base}.interval"));
        }
    }
    if let Some(t) = &s.timeout_ms {
        let interval = s
            .interval_ms
            .as_ref()
            .map_or(DEFAULT_INTERVAL_MS, |i| i.value);
        if t.value > interval {
            report.approximated(
                t.at.clone(),
                &t.text,
                &format!("{base}.timeout"),
                "a Halo check's timeout is at most its interval: cut to the interval",
            );
        } else {
            report.mapped(t.at.clone(), &t.text, &format!("{base}.timeout"));
        }
    }
    for (i, field) in [(&s.rise, "rise"), (&s.fall, "fall")] {
        let Some(i) = i else { continue };
        if i.value > 100 {
            report.approximated(
                i.at.clone(),
                &i.text,
                &format!("{base}.{field}"),
                "at most 100 in Halo",
            );
        } else {
            report.mapped(i.at.clone(), &i.text, &format!("{base}.{field}"));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::import::Source;

    fn it<T>(value: T, line: usize, text: &str) -> Option<Item<T>> {
        Some(Item {
            value,
            at: Source {
                file: "n1.conf".into(),
                line,
            },
            text: text.into(),
        })
    }

    fn script(command: &str) -> Script {
        Script {
            name: "chk".into(),
            header: it((), 1, "vrrp_script chk").unwrap(),
            script: it(command.to_string(), 2, "script"),
            interval_ms: it(2000, 3, "interval 2"),
            timeout_ms: None,
            weight: it(-20, 4, "weight -20"),
            reverse: false,
            rise: it(3, 5, "rise 3"),
            fall: None,
        }
    }

    #[test]
    fn weights_map_exactly() {
        let cases = [
            (0, None, 0),
            (-20, Some(20), 0),
            (5, Some(5), 5),
            (254, Some(254), 254),
            (-300, Some(254), 0),
        ];
        for (w, weight, bonus) in cases {
            assert_eq!(effect(w), Effect { weight, bonus }, "{w}");
        }
        assert_eq!(action(effect(0)).fault, Some(true));
        assert_eq!(action(effect(-3)).weight, Some(3));
        assert!(explain(5).contains("added to the node's priority"));
    }

    #[test]
    fn script_targets() {
        assert_eq!(
            target(&script("killall -0 haproxy")).unwrap(),
            Target::BindFailure {
                process: "haproxy".into()
            }
        );
        let Target::Check { check, .. } = target(&script("curl -f http://127.0.0.1/h")).unwrap()
        else {
            panic!()
        };
        assert_eq!(check.http.unwrap().url, "http://127.0.0.1/h");
        assert_eq!(check.interval.as_deref(), Some("2s"));
        // keepalived's timeout defaults to the interval.
        assert_eq!(check.timeout.as_deref(), Some("2s"));
        assert_eq!(check.rise, Some(3));
        let mut s = script("/usr/local/bin/check db");
        s.interval_ms = None;
        s.timeout_ms = it(5000, 6, "timeout 5");
        let Target::Check { check, .. } = target(&s).unwrap() else {
            panic!()
        };
        let exec = check.exec.unwrap();
        assert_eq!(
            (exec.command.as_str(), exec.args),
            ("/usr/local/bin/check", vec!["db".to_string()])
        );
        assert_eq!(check.interval.as_deref(), Some("1s"));
        assert_eq!(check.timeout.as_deref(), Some("1s"));
        s.script = None;
        assert!(target(&s).is_err());
    }

    #[test]
    fn script_report_lines() {
        let mut r = Report::default();
        report_script(&script("pidof nginx"), true, &mut r);
        let text = r.to_string();
        assert!(text.contains("n1.conf:2: script: mapped to spec.vrrp.track.bindFailure (it only checks that nginx runs"), "{text}");
        assert!(
            text.contains("n1.conf:3: interval 2: approximated"),
            "{text}"
        );
        assert!(
            text.contains("n1.conf:4: weight -20: mapped to weight: 20"),
            "{text}"
        );
        let mut r = Report::default();
        report_script(&script("nc -z 127.0.0.1 3306"), false, &mut r);
        assert_eq!(r.entries.len(), 1);
        assert!(r.to_string().contains("never runs it"));
    }
}
