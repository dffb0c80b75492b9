//! Decides what a `vrrp_script`'s `script` becomes in Halo: the data plane's own
//! listener tracking for a check of the local proxy process, an `http` or `tcp` check for
//! the usual `curl -f`/`wget`/`nc -z`/`/dev/tcp` one-liners, and an `exec` check (argv,
//! no shell) for everything else. Only a command whose meaning is certain becomes a
//! native check; anything with options this does not know stays an `exec`.

use std::net::IpAddr;

use super::lexer;

/// The processes whose liveness check means "the local proxy is up".
const PROXIES: &[&str] = &["haproxy", "nginx"];

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Check {
    /// Only checks that the local proxy process runs.
    Proxy {
        process: String,
    },
    Http {
        url: String,
    },
    Tcp {
        address: String,
    },
    Exec {
        command: String,
        args: Vec<String>,
        /// Set when the meaning changes, with how.
        approximated: Option<String>,
    },
}

/// Classifies a script command line as keepalived 2.x would run it (split into argv,
/// no shell).
pub fn classify(script: &str) -> Result<Check, String> {
    let argv = lexer::argv(script)?;
    if argv.is_empty() {
        return Err("empty script".into());
    }
    if let Some((shell, inner)) = shell_wrapper(&argv) {
        return Ok(classify_shell(shell, inner));
    }
    if needs_shell(&argv) {
        if let Some(address) = dev_tcp(script.trim()) {
            return Ok(Check::Tcp { address });
        }
        return Ok(Check::Exec {
            command: "/bin/sh".into(),
            args: vec!["-c".into(), script.trim().to_string()],
            approximated: Some(
                "it uses shell syntax, which keepalived 2.x passes to the program as plain \
                 arguments; Halo runs it with /bin/sh -c as a keepalived 1.x config meant"
                    .into(),
            ),
        });
    }
    Ok(classify_argv(&argv))
}

fn classify_argv(argv: &[String]) -> Check {
    let program = basename(&argv[0]);
    let args = &argv[1..];
    let native = match program {
        "killall" | "pidof" | "pgrep" => process_check(program, args),
        "curl" => curl(args).map(|url| Check::Http { url }),
        "wget" => wget(args).map(|url| Check::Http { url }),
        "nc" | "ncat" | "netcat" => nc(args).map(|address| Check::Tcp { address }),
        _ => None,
    };
    native.unwrap_or_else(|| exec(argv))
}

/// An exec check of argv as it stands; a bare program name is looked up on `PATH` by
/// `/usr/bin/env`, as keepalived looks it up when it loads the config.
fn exec(argv: &[String]) -> Check {
    if argv[0].starts_with('/') {
        Check::Exec {
            command: argv[0].clone(),
            args: argv[1..].to_vec(),
            approximated: None,
        }
    } else {
        Check::Exec {
            command: "/usr/bin/env".into(),
            args: argv.to_vec(),
            approximated: None,
        }
    }
}

fn basename(path: &str) -> &str {
    path.rsplit('/').next().unwrap_or(path)
}

/// `sh -c '...'` / `bash -c "..."`: the shell and its command.
fn shell_wrapper(argv: &[String]) -> Option<(&str, &str)> {
    match argv {
        [shell, flag, inner] if flag == "-c" && matches!(basename(shell), "sh" | "bash") => {
            Some((shell.as_str(), inner.as_str()))
        }
        _ => None,
    }
}

fn classify_shell(shell: &str, inner: &str) -> Check {
    if let Some(address) = dev_tcp(inner.trim()) {
        return Check::Tcp { address };
    }
    if let Ok(argv) = lexer::argv(inner)
        && !argv.is_empty()
        && !needs_shell(&argv)
        && !inner.contains(['$', '`', '*', '?', '~'])
    {
        let check = classify_argv(&argv);
        if !matches!(check, Check::Exec { .. }) {
            return check;
        }
    }
    let command = if shell.starts_with('/') {
        shell.to_string()
    } else {
        format!("/bin/{shell}")
    };
    Check::Exec {
        command,
        args: vec!["-c".into(), inner.to_string()],
        approximated: None,
    }
}

/// Whether a word is shell syntax (keepalived 2.x would pass it to the program as is).
fn needs_shell(argv: &[String]) -> bool {
    argv.iter().any(|w| {
        matches!(w.as_str(), "|" | "||" | "&&" | ";" | "&")
            || w.starts_with(['<', '>'])
            || w.starts_with("2>")
            || w.starts_with("&>")
            || w.contains("$(")
            || w.contains('`')
            || w.ends_with(';')
    })
}

/// `</dev/tcp/HOST/PORT` (bash's connect-and-exit idiom), also as `cat < ...`/`echo > ...`
/// free forms: the address it connects to.
fn dev_tcp(command: &str) -> Option<String> {
    let rest = command
        .strip_prefix('<')
        .or_else(|| command.strip_prefix("echo >"))
        .or_else(|| command.strip_prefix("echo>"))
        .or_else(|| command.strip_prefix("exec <>"))?;
    let rest = rest.trim().strip_prefix("/dev/tcp/")?;
    let (host, port) = rest.rsplit_once('/')?;
    tcp_address(host, port)
}

fn tcp_address(host: &str, port: &str) -> Option<String> {
    let port: u16 = port.parse().ok().filter(|p| *p > 0)?;
    let host = if host == "localhost" {
        "127.0.0.1"
    } else {
        host
    };
    match host.trim_matches(['[', ']']).parse::<IpAddr>().ok()? {
        IpAddr::V4(a) => Some(format!("{a}:{port}")),
        IpAddr::V6(a) => Some(format!("[{a}]:{port}")),
    }
}

/// `killall -0 haproxy`, `pidof [-s|-x] nginx`, `pgrep [-x] haproxy`.
fn process_check(program: &str, args: &[String]) -> Option<Check> {
    let names: Vec<&String> = match program {
        "killall" => match args {
            [zero, name] if zero == "-0" => vec![name],
            _ => return None,
        },
        _ => {
            let allowed: &[&str] = if program == "pidof" {
                &["-s", "-x"]
            } else {
                &["-x"]
            };
            let (flags, names): (Vec<&String>, Vec<&String>) =
                args.iter().partition(|a| a.starts_with('-'));
            if flags.iter().any(|f| !allowed.contains(&f.as_str())) {
                return None;
            }
            if program == "pgrep" && names.len() != 1 {
                return None;
            }
            names
        }
    };
    let all_proxies = !names.is_empty() && names.iter().all(|n| PROXIES.contains(&n.as_str()));
    all_proxies.then(|| Check::Proxy {
        process: names
            .iter()
            .map(|n| n.as_str())
            .collect::<Vec<_>>()
            .join(" "),
    })
}

/// `curl -f` with only options that do not change what passes: the URL.
fn curl(args: &[String]) -> Option<String> {
    let mut fail = false;
    let mut url = None;
    let mut i = 0;
    while i < args.len() {
        let a = args[i].as_str();
        match a {
            "--fail" => fail = true,
            "--silent" | "--show-error" | "--insecure" => {}
            "--output" | "--max-time" | "--connect-timeout" => {
                let v = args.get(i + 1)?;
                if a == "--output" && v != "/dev/null" {
                    return None;
                }
                i += 1;
            }
            _ if a.starts_with("--") => return None,
            _ if a.starts_with('-') && a.len() > 1 => {
                for (j, c) in a[1..].chars().enumerate() {
                    match c {
                        'f' => fail = true,
                        's' | 'S' | 'k' | 'q' => {}
                        // The option's value is the next word (only as the last letter).
                        'o' | 'm' if j == a.len() - 2 => {
                            let v = args.get(i + 1)?;
                            if c == 'o' && v != "/dev/null" {
                                return None;
                            }
                            i += 1;
                        }
                        _ => return None,
                    }
                }
            }
            _ if url.is_none() => url = Some(a.to_string()),
            _ => return None,
        }
        i += 1;
    }
    let url = url?;
    (fail && http_url(&url)).then_some(url)
}

/// `wget -q -O /dev/null URL` / `wget --spider URL`: wget fails on 4xx and 5xx as
/// `curl -f` does.
fn wget(args: &[String]) -> Option<String> {
    let mut url = None;
    let mut i = 0;
    while i < args.len() {
        let a = args[i].as_str();
        match a {
            "-q" | "--quiet" | "--spider" | "-O-" | "-O/dev/null" => {}
            "-O" | "-T" | "-t" => {
                let v = args.get(i + 1)?;
                if a == "-O" && v != "/dev/null" && v != "-" {
                    return None;
                }
                i += 1;
            }
            _ if a.starts_with("--timeout=") || a.starts_with("--tries=") => {}
            _ if a.starts_with('-') => return None,
            _ if url.is_none() => url = Some(a.to_string()),
            _ => return None,
        }
        i += 1;
    }
    url.filter(|u| http_url(u))
}

/// `http://` with an IP address or `localhost` as host (what `track.checks[].http` takes).
fn http_url(url: &str) -> bool {
    let Some(rest) = url.strip_prefix("http://") else {
        return false;
    };
    let authority = rest.split(['/', '?']).next().unwrap_or(rest);
    let host = if let Some(v6) = authority.strip_prefix('[') {
        v6.split(']').next().unwrap_or(v6)
    } else {
        authority.split(':').next().unwrap_or(authority)
    };
    host == "localhost" || host.parse::<IpAddr>().is_ok()
}

/// `nc -z [-v] [-w N] HOST PORT`.
fn nc(args: &[String]) -> Option<String> {
    let mut zero_io = false;
    let mut positional = Vec::new();
    let mut i = 0;
    while i < args.len() {
        let a = args[i].as_str();
        if let Some(flags) = a.strip_prefix('-') {
            for (j, c) in flags.chars().enumerate() {
                match c {
                    'z' => zero_io = true,
                    'v' | 'n' => {}
                    'w' if j == flags.len() - 1 => i += 1,
                    'w' => break,
                    _ => return None,
                }
            }
        } else {
            positional.push(a);
        }
        i += 1;
    }
    match (zero_io, positional.as_slice()) {
        (true, [host, port]) => tcp_address(host, port),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn proxy(p: &str) -> Check {
        Check::Proxy { process: p.into() }
    }
    fn http(u: &str) -> Check {
        Check::Http { url: u.into() }
    }
    fn tcp(a: &str) -> Check {
        Check::Tcp { address: a.into() }
    }
    fn exec(c: &str, args: &[&str]) -> Check {
        Check::Exec {
            command: c.into(),
            args: args.iter().map(|a| a.to_string()).collect(),
            approximated: None,
        }
    }

    #[test]
    fn scripts_become_the_right_check() {
        let cases = [
            ("killall -0 haproxy", proxy("haproxy")),
            ("/usr/bin/killall -0 nginx", proxy("nginx")),
            ("pidof haproxy", proxy("haproxy")),
            ("pidof -s haproxy nginx", proxy("haproxy nginx")),
            ("pgrep -x nginx", proxy("nginx")),
            (
                "killall -0 sshd",
                exec("/usr/bin/env", &["killall", "-0", "sshd"]),
            ),
            (
                "pgrep -f haproxy",
                exec("/usr/bin/env", &["pgrep", "-f", "haproxy"]),
            ),
            (
                "curl -f http://localhost/health",
                http("http://localhost/health"),
            ),
            (
                "curl -sSf -o /dev/null --max-time 2 http://127.0.0.1:8080/healthz",
                http("http://127.0.0.1:8080/healthz"),
            ),
            (
                "/usr/bin/curl --fail --silent http://[::1]:81/",
                http("http://[::1]:81/"),
            ),
            // Without -f curl passes on any status: kept as the command itself.
            (
                "curl -s http://127.0.0.1/",
                exec("/usr/bin/env", &["curl", "-s", "http://127.0.0.1/"]),
            ),
            (
                "curl -f -H Host:x http://127.0.0.1/",
                exec(
                    "/usr/bin/env",
                    &["curl", "-f", "-H", "Host:x", "http://127.0.0.1/"],
                ),
            ),
            (
                "curl -f http://web.internal/",
                exec("/usr/bin/env", &["curl", "-f", "http://web.internal/"]),
            ),
            (
                "curl -f https://127.0.0.1/",
                exec("/usr/bin/env", &["curl", "-f", "https://127.0.0.1/"]),
            ),
            (
                "wget -q -O /dev/null http://127.0.0.1/ping",
                http("http://127.0.0.1/ping"),
            ),
            (
                "wget --spider -q http://localhost/",
                http("http://localhost/"),
            ),
            ("nc -z 127.0.0.1 3306", tcp("127.0.0.1:3306")),
            ("nc -zv -w 2 localhost 80", tcp("127.0.0.1:80")),
            ("nc -z ::1 443", tcp("[::1]:443")),
            (
                "nc 127.0.0.1 80",
                exec("/usr/bin/env", &["nc", "127.0.0.1", "80"]),
            ),
            ("</dev/tcp/127.0.0.1/80", tcp("127.0.0.1:80")),
            (
                "/bin/bash -c '</dev/tcp/127.0.0.1/443'",
                tcp("127.0.0.1:443"),
            ),
            ("bash -c 'echo > /dev/tcp/10.0.0.5/25'", tcp("10.0.0.5:25")),
            ("/bin/sh -c 'killall -0 haproxy'", proxy("haproxy")),
            (
                "/bin/sh -c 'test -f /run/ok && pidof haproxy'",
                exec("/bin/sh", &["-c", "test -f /run/ok && pidof haproxy"]),
            ),
            ("bash -c 'exit 0'", exec("/bin/bash", &["-c", "exit 0"])),
            (
                "/etc/keepalived/check_apiserver.sh",
                exec("/etc/keepalived/check_apiserver.sh", &[]),
            ),
            (
                "/usr/bin/systemctl is-active haproxy.service",
                exec("/usr/bin/systemctl", &["is-active", "haproxy.service"]),
            ),
        ];
        for (script, want) in cases {
            assert_eq!(classify(script).unwrap(), want, "{script}");
        }
    }

    #[test]
    fn shell_syntax_runs_through_sh_and_says_so() {
        let c = classify("pidof haproxy || exit 1").unwrap();
        let Check::Exec {
            command,
            args,
            approximated,
        } = c
        else {
            panic!("{c:?}");
        };
        assert_eq!(command, "/bin/sh");
        assert_eq!(args, ["-c", "pidof haproxy || exit 1"]);
        assert!(approximated.unwrap().contains("shell"));
        assert!(classify("a 'b").is_err());
        assert!(classify("  ").is_err());
    }
}
