//! HAProxy value syntax turned into Halo's: times, addresses, names and cipher names.

use std::net::IpAddr;

/// An HAProxy time (`us`, `ms`, `s`, `m`, `h`, `d`; a bare number is milliseconds) as a
/// Halo duration; `Err` for a malformed one. Microseconds round up to a millisecond.
pub fn duration(text: &str) -> Result<String, String> {
    let digits_end = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (digits, unit) = text.split_at(digits_end);
    let n: u64 = digits
        .parse()
        .map_err(|_| format!("{text:?} is not an HAProxy time"))?;
    let ms = match unit {
        "" | "ms" => n,
        "us" => n.div_ceil(1000),
        "s" => n * 1000,
        "m" => n * 60_000,
        "h" => n * 3_600_000,
        "d" => n * 86_400_000,
        _ => return Err(format!("{text:?} is not an HAProxy time")),
    };
    Ok(format_ms(ms))
}

fn format_ms(ms: u64) -> String {
    for (unit, size) in [("h", 3_600_000), ("m", 60_000), ("s", 1000)] {
        if ms > 0 && ms.is_multiple_of(size) {
            return format!("{}{unit}", ms / size);
        }
    }
    format!("{ms}ms")
}

/// Where a `bind` listens: `None` address for all addresses (`:80`, `*:80`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BindAddr {
    pub ip: Option<IpAddr>,
    pub port: u16,
}

/// One `bind` address (`10.0.0.1:443`, `:80`, `*:80`, `[::1]:80`, `::1:80`, `ipv4@...`).
pub fn bind_addr(text: &str) -> Result<BindAddr, String> {
    let text = text
        .strip_prefix("ipv4@")
        .or_else(|| text.strip_prefix("ipv6@"))
        .unwrap_or(text);
    if text.contains('@') || text.starts_with('/') {
        return Err(format!("{text:?}: only IP addresses can be bound"));
    }
    let (host, port) = host_port(text).ok_or_else(|| format!("{text:?} has no port"))?;
    if port.contains('-') {
        return Err(format!("{text:?}: port ranges are not supported"));
    }
    let port: u16 = port
        .parse()
        .ok()
        .filter(|p| *p > 0)
        .ok_or_else(|| format!("{text:?}: bad port"))?;
    let ip = match host {
        "" | "*" | "0.0.0.0" => None,
        h => Some(
            h.parse()
                .map_err(|_| format!("{h:?} is not an IP address"))?,
        ),
    };
    Ok(BindAddr { ip, port })
}

/// A `server` address: an IP and a port (a name to resolve or a missing port is an error).
pub fn server_addr(text: &str) -> Result<(IpAddr, u16), String> {
    let (host, port) = host_port(text)
        .ok_or_else(|| format!("{text:?} has no port (HAProxy would reuse the client's)"))?;
    let ip: IpAddr = host
        .parse()
        .map_err(|_| format!("{host:?} is not an IP address (Halo does not resolve names)"))?;
    let digits = !port.is_empty() && port.bytes().all(|b| b.is_ascii_digit());
    let port = port
        .parse::<u16>()
        .ok()
        .filter(|p| digits && *p > 0)
        .ok_or_else(|| format!("{text:?}: port {port:?} is not a fixed port"))?;
    Ok((ip, port))
}

fn host_port(text: &str) -> Option<(&str, &str)> {
    if let Some(rest) = text.strip_prefix('[') {
        let (host, tail) = rest.split_once(']')?;
        return Some((host, tail.strip_prefix(':')?));
    }
    let (host, port) = text.rsplit_once(':')?;
    (!port.is_empty()).then_some((host, port))
}

/// A DNS label from any HAProxy name (`be_App.1` → `be-app-1`).
pub fn dns_label(text: &str) -> String {
    dns_label_or(text, "x")
}

/// [`dns_label`] with `fallback` for a text that has no letter or digit.
pub fn dns_label_or(text: &str, fallback: &str) -> String {
    let mut out: String = text
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_lowercase()
            } else {
                '-'
            }
        })
        .collect();
    while out.contains("--") {
        out = out.replace("--", "-");
    }
    let mut out = out.trim_matches('-').to_string();
    out.truncate(63);
    let out = out.trim_end_matches('-').to_string();
    if out.is_empty() { fallback.into() } else { out }
}

/// Halo's name for an OpenSSL cipher (TLS 1.2 `ciphers`, TLS 1.3 `ciphersuites`), or
/// `None` for one Halo does not offer.
pub fn cipher(openssl: &str) -> Option<&'static str> {
    Some(match openssl {
        "ECDHE-ECDSA-AES256-GCM-SHA384" => "TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384",
        "ECDHE-ECDSA-AES128-GCM-SHA256" => "TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256",
        "ECDHE-ECDSA-CHACHA20-POLY1305" => "TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256",
        "ECDHE-RSA-AES256-GCM-SHA384" => "TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384",
        "ECDHE-RSA-AES128-GCM-SHA256" => "TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256",
        "ECDHE-RSA-CHACHA20-POLY1305" => "TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256",
        "TLS_AES_256_GCM_SHA384" => "TLS13_AES_256_GCM_SHA384",
        "TLS_AES_128_GCM_SHA256" => "TLS13_AES_128_GCM_SHA256",
        "TLS_CHACHA20_POLY1305_SHA256" => "TLS13_CHACHA20_POLY1305_SHA256",
        _ => return None,
    })
}

/// A cipher list (`a:b:c`) split into the suites Halo offers and those it drops.
pub fn ciphers(list: &str) -> (Vec<String>, Vec<String>) {
    let (mut kept, mut dropped) = (Vec::new(), Vec::new());
    for name in list.split(':').filter(|n| !n.is_empty()) {
        match cipher(name) {
            Some(halo) => kept.push(halo.to_string()),
            None => dropped.push(name.to_string()),
        }
    }
    (kept, dropped)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn haproxy_times_become_halo_durations() {
        for (input, want) in [
            ("5000", "5s"),
            ("500ms", "500ms"),
            ("1500", "1500ms"),
            ("30s", "30s"),
            ("90s", "90s"),
            ("8h", "8h"),
            ("1d", "24h"),
            ("120m", "2h"),
            ("1500us", "2ms"),
            ("0", "0ms"),
        ] {
            assert_eq!(duration(input).as_deref(), Ok(want), "{input}");
        }
        for bad in ["", "s", "5x", "1.5s"] {
            assert!(duration(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn addresses_parse_like_haproxy() {
        let v4: IpAddr = "10.0.0.1".parse().expect("ip");
        let v6: IpAddr = "::1".parse().expect("ip");
        assert_eq!(
            bind_addr("10.0.0.1:443"),
            Ok(BindAddr {
                ip: Some(v4),
                port: 443
            })
        );
        assert_eq!(bind_addr(":80"), Ok(BindAddr { ip: None, port: 80 }));
        assert_eq!(bind_addr("*:80"), Ok(BindAddr { ip: None, port: 80 }));
        assert_eq!(
            bind_addr("[::1]:8080"),
            Ok(BindAddr {
                ip: Some(v6),
                port: 8080
            })
        );
        assert_eq!(
            bind_addr("ipv6@::1:8080"),
            Ok(BindAddr {
                ip: Some(v6),
                port: 8080
            })
        );
        for bad in [
            "10.0.0.1",
            "unix@/run/x.sock",
            "/run/x.sock",
            ":80-90",
            "host:80",
            ":0",
        ] {
            assert!(bind_addr(bad).is_err(), "{bad}");
        }
        assert_eq!(server_addr("10.0.0.1:8080"), Ok((v4, 8080)));
        assert_eq!(server_addr("[::1]:80"), Ok((v6, 80)));
        for bad in ["db1:3306", "10.0.0.1", "10.0.0.1:+1"] {
            assert!(server_addr(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn names_and_ciphers() {
        assert_eq!(dns_label("be_App.1"), "be-app-1");
        assert_eq!(dns_label("__"), "x");
        let (kept, dropped) =
            ciphers("ECDHE-RSA-AES128-GCM-SHA256:DHE-RSA-AES256-SHA:TLS_AES_128_GCM_SHA256");
        assert_eq!(
            kept,
            [
                "TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256",
                "TLS13_AES_128_GCM_SHA256"
            ]
        );
        assert_eq!(dropped, ["DHE-RSA-AES256-SHA"]);
    }
}
