//! Pure decisions for file reloads: when a changed file has settled long enough to be read,
//! whether a rendered config may replace the running one, and the diff summary that is
//! logged with it. The file watcher in `config::file` is the thin driver around these.

use std::collections::BTreeMap;
use std::fmt;
use std::time::{Duration, Instant};

use halo_crds::NodeConfig;
use halo_crds::node_config::{ListenerConfig, VipConfig};

/// The annotation that lets a file remove every listener or every VirtualIP.
pub const ALLOW_EMPTY_ANNOTATION: &str = "halo.dev/allow-empty";

/// What the poll loop remembers about the file between looks.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Settle {
    /// Content (hash) last loaded, applied or not; `None` before the first load.
    handled: Option<Content>,
    /// A different content and when it was first seen, waiting to stay unchanged.
    pending: Option<(Content, Instant)>,
}

/// A file content's hash; `None` inside: the file could not be read.
pub type Content = Option<u64>;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Poll {
    /// Same as what was last loaded.
    Unchanged,
    /// Changed, but not yet unchanged for the settle period (just changed: `true`).
    Settling { just_changed: bool },
    /// Changed and stable for the settle period: load it now.
    Load,
}

impl Settle {
    /// The state after loading `content` at start-up or on SIGHUP.
    pub fn loaded(content: Content) -> Self {
        Self {
            handled: Some(content),
            pending: None,
        }
    }

    /// One look at the file: `seen` is its content now.
    pub fn poll(&mut self, seen: Content, now: Instant, settle: Duration) -> Poll {
        if self.handled == Some(seen) {
            self.pending = None;
            return Poll::Unchanged;
        }
        match self.pending {
            Some((content, since)) if content == seen => {
                if now.saturating_duration_since(since) >= settle {
                    *self = Self::loaded(seen);
                    Poll::Load
                } else {
                    Poll::Settling {
                        just_changed: false,
                    }
                }
            }
            _ => {
                self.pending = Some((seen, now));
                Poll::Settling { just_changed: true }
            }
        }
    }
}

/// Added, removed and changed names of one kind of object.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Changes {
    pub added: Vec<String>,
    pub removed: Vec<String>,
    pub changed: Vec<String>,
}

impl Changes {
    fn between<T: PartialEq>(old: &BTreeMap<&str, &T>, new: &BTreeMap<&str, &T>) -> Self {
        let mut out = Self::default();
        for (name, item) in new {
            match old.get(name) {
                None => out.added.push((*name).to_string()),
                Some(before) if before != item => out.changed.push((*name).to_string()),
                Some(_) => {}
            }
        }
        out.removed = old
            .keys()
            .filter(|n| !new.contains_key(*n))
            .map(|n| (*n).to_string())
            .collect();
        out
    }

    pub fn is_empty(&self) -> bool {
        self.added.is_empty() && self.removed.is_empty() && self.changed.is_empty()
    }
}

impl fmt::Display for Changes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.is_empty() {
            return write!(f, "unchanged");
        }
        let mut parts = Vec::new();
        for (sign, names) in [
            ("+", &self.added),
            ("-", &self.removed),
            ("~", &self.changed),
        ] {
            if !names.is_empty() {
                parts.push(format!("{sign}[{}]", names.join(", ")));
            }
        }
        write!(f, "{}", parts.join(" "))
    }
}

/// What a reload changes, by listener and VirtualIP name.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Diff {
    pub listeners: Changes,
    pub vips: Changes,
}

impl fmt::Display for Diff {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "listeners {}; VIPs {}", self.listeners, self.vips)
    }
}

/// The diff from `old` to `new` (an absent old config counts as empty).
pub fn diff(old: Option<&NodeConfig>, new: &NodeConfig) -> Diff {
    Diff {
        listeners: Changes::between(&listeners(old), &listeners(Some(new))),
        vips: Changes::between(&vips(old), &vips(Some(new))),
    }
}

fn listeners(c: Option<&NodeConfig>) -> BTreeMap<&str, &ListenerConfig> {
    c.iter()
        .flat_map(|c| &c.listeners)
        .map(|l| (l.name.as_str(), &**l))
        .collect()
}

fn vips(c: Option<&NodeConfig>) -> BTreeMap<&str, &VipConfig> {
    c.iter()
        .flat_map(|c| &c.vips)
        .map(|v| (v.name.as_str(), v))
        .collect()
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Decision {
    /// Same content hash as the running config.
    Unchanged,
    Apply(Diff),
    Refuse(String),
}

/// Whether `new` may replace `running`. A config that would take away every listener or
/// every VirtualIP of the running one is refused unless `allow_empty` (the file's
/// annotation or the operator's flag) says it is meant.
pub fn decide(running: Option<&NodeConfig>, new: &NodeConfig, allow_empty: bool) -> Decision {
    if running.is_some_and(|r| r.hash == new.hash) {
        return Decision::Unchanged;
    }
    let changes = diff(running, new);
    if allow_empty {
        return Decision::Apply(changes);
    }
    let Some(running) = running else {
        return Decision::Apply(changes);
    };
    let lost = |kind: &str, before: usize, after: usize, names: &[String]| {
        (before > 0 && after == 0).then(|| {
            format!(
                "the new file has no {kind} and would remove all {before} running ({})",
                names.join(", ")
            )
        })
    };
    let reasons: Vec<String> = [
        lost(
            "listeners",
            running.listeners.len(),
            new.listeners.len(),
            &changes.listeners.removed,
        ),
        lost(
            "VirtualIPs",
            running.vips.len(),
            new.vips.len(),
            &changes.vips.removed,
        ),
    ]
    .into_iter()
    .flatten()
    .collect();
    if reasons.is_empty() {
        Decision::Apply(changes)
    } else {
        Decision::Refuse(format!(
            "{}; a file caught mid-write looks like this. If it is meant, annotate an object \
             in it with {ALLOW_EMPTY_ANNOTATION}: \"true\" or run with --allow-empty-reload",
            reasons.join("; ")
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use halo_crds::render::NodeInfo;
    use std::path::Path;

    const VIP: &str = "apiVersion: halo.dev/v1alpha1\nkind: VirtualIP\nmetadata: {name: web}\nspec:\n  addresses: [127.0.0.80/8]\n  vrrp: {enabled: false}\n";

    fn lb(listeners: &[(&str, u16)]) -> String {
        let mut text = String::from(
            "---\napiVersion: halo.dev/v1alpha1\nkind: LoadBalancer\nmetadata: {name: site}\nspec:\n  virtualIP: web\n  listeners:\n",
        );
        for (name, port) in listeners {
            text.push_str(&format!(
                "    - {{name: {name}, port: {port}, protocol: TCP, backends: [{{address: 127.0.0.1, port: 9}}]}}\n"
            ));
        }
        text
    }

    fn config(text: &str) -> NodeConfig {
        let node = NodeInfo {
            name: "n".into(),
            ..NodeInfo::default()
        };
        crate::config::file::render_text(Path::new("t.yaml"), text, &node)
            .expect("valid")
            .sealed(1)
    }

    #[test]
    fn settle_waits_for_a_quiet_period_and_restarts_on_every_change() {
        let t0 = Instant::now();
        let ms = Duration::from_millis;
        let settle = ms(200);
        let mut s = Settle::loaded(Some(1));
        let steps: &[(u64, Content, Poll)] = &[
            (0, Some(1), Poll::Unchanged),
            (100, Some(2), Poll::Settling { just_changed: true }),
            (
                200,
                Some(2),
                Poll::Settling {
                    just_changed: false,
                },
            ),
            // Changed again before settling: the clock starts over.
            (250, Some(3), Poll::Settling { just_changed: true }),
            (
                400,
                Some(3),
                Poll::Settling {
                    just_changed: false,
                },
            ),
            (450, Some(3), Poll::Load),
            (500, Some(3), Poll::Unchanged),
            // Back to an older content is a change too; an unreadable file settles as well.
            (600, None, Poll::Settling { just_changed: true }),
            (800, None, Poll::Load),
            (900, Some(1), Poll::Settling { just_changed: true }),
            (
                950,
                Some(1),
                Poll::Settling {
                    just_changed: false,
                },
            ),
            (1100, Some(1), Poll::Load),
        ];
        for (at, seen, want) in steps {
            assert_eq!(s.poll(*seen, t0 + ms(*at), settle), *want, "at {at} ms");
        }
    }

    #[test]
    fn diff_names_added_removed_and_changed() {
        let old = config(&format!("{VIP}{}", lb(&[("a", 1001), ("b", 1002)])));
        let new = config(&format!("{VIP}{}", lb(&[("b", 2002), ("c", 1003)])));
        let d = diff(Some(&old), &new);
        assert_eq!(d.listeners.added, ["default/site/c"]);
        assert_eq!(d.listeners.removed, ["default/site/a"]);
        assert_eq!(d.listeners.changed, ["default/site/b"]);
        assert!(d.vips.is_empty());
        assert_eq!(
            d.to_string(),
            "listeners +[default/site/c] -[default/site/a] ~[default/site/b]; VIPs unchanged"
        );
    }

    /// (name, running config, new config, allow empty, expected decision).
    type Case<'a> = (
        &'a str,
        Option<&'a NodeConfig>,
        &'a NodeConfig,
        bool,
        fn(&Decision) -> bool,
    );

    #[test]
    fn table_of_reload_decisions() {
        let full = config(&format!("{VIP}{}", lb(&[("a", 1001)])));
        let more = config(&format!("{VIP}{}", lb(&[("a", 1001), ("b", 1002)])));
        let vip_only = config(VIP);
        let nothing = config("");
        let refused =
            |d: &Decision, what: &str| matches!(d, Decision::Refuse(r) if r.contains(what));
        let cases: Vec<Case> = vec![
            ("first config", None, &full, false, |d| {
                matches!(d, Decision::Apply(_))
            }),
            ("first config may be empty", None, &nothing, false, |d| {
                matches!(d, Decision::Apply(_))
            }),
            ("same hash", Some(&full), &full, false, |d| {
                *d == Decision::Unchanged
            }),
            ("growth", Some(&full), &more, false, |d| {
                matches!(d, Decision::Apply(_))
            }),
            ("shrink to one", Some(&more), &full, false, |d| {
                matches!(d, Decision::Apply(_))
            }),
            (
                "cut at ---: no listeners",
                Some(&full),
                &vip_only,
                false,
                |d| matches!(d, Decision::Refuse(r) if r.contains("no listeners") && r.contains("default/site/a")),
            ),
            (
                "empty file",
                Some(&full),
                &nothing,
                false,
                |d| matches!(d, Decision::Refuse(r) if r.contains("no listeners") && r.contains("no VirtualIPs")),
            ),
            ("allowed empty", Some(&full), &nothing, true, |d| {
                matches!(d, Decision::Apply(_))
            }),
            (
                "empty stays empty",
                Some(&vip_only),
                &vip_only,
                false,
                |d| *d == Decision::Unchanged,
            ),
        ];
        for (name, running, new, allow, ok) in cases {
            let d = decide(running, new, allow);
            assert!(ok(&d), "{name}: {d:?}");
        }
        assert!(refused(
            &decide(Some(&full), &nothing, false),
            "--allow-empty-reload"
        ));
    }
}
