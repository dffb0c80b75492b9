//! The merged VirtualIP's `track`: every node's `track_interface` and `track_script`
//! lines in one spec (Halo tracks the same things on every node of a VirtualIP), and each
//! node's priority bonus from keepalived's positive weights.

use std::collections::BTreeMap;

use halo_crds::virtual_ip::{TrackAction, TrackInterface, TrackSpec};

use super::config::{Instance, Item, Tracked};
use super::merge::{Group, NodeFile, at};
use super::track::{self, Target};
use crate::import::Report;

/// Tracked interfaces and scripts, and each node's priority bonus from positive weights.
pub(super) fn tracking(
    name: &str,
    g: &Group<'_>,
    interface: Option<&str>,
    report: &mut Report,
) -> (Option<TrackSpec>, BTreeMap<String, u8>) {
    let mut spec = TrackSpec::default();
    let mut bonus: BTreeMap<String, u8> = BTreeMap::new();
    let mut origin: BTreeMap<String, String> = BTreeMap::new();
    for (n, i) in &g.members {
        let b = bonus.entry(n.name.clone()).or_default();
        for t in &i.track_interfaces {
            let missing = not_tracking(g, &t.value.name, |o| &o.track_interfaces);
            track_interface(name, t, interface, &missing, &mut spec, b, report);
        }
        for t in &i.track_scripts {
            let missing = not_tracking(g, &t.value.name, |o| &o.track_scripts);
            let script = Tracking {
                node: n,
                t,
                missing: &missing,
            };
            track_script(name, &script, &mut spec, b, &mut origin, report);
        }
    }
    let empty = spec == TrackSpec::default();
    ((!empty).then_some(spec), bonus)
}

/// The members whose instance does not track `what`.
fn not_tracking<'a>(
    g: &'a Group<'_>,
    what: &str,
    list: impl Fn(&Instance) -> &Vec<Item<Tracked>>,
) -> Vec<&'a str> {
    g.members
        .iter()
        .filter(|(_, o)| !list(o).iter().any(|t| t.value.name == what))
        .map(|(n, _)| n.name.as_str())
        .collect()
}

/// The report's note for tracking that only some nodes' files have.
fn partial(missing: &[&str]) -> Option<String> {
    (!missing.is_empty()).then(|| {
        format!(
            "Halo tracks it on every node of the VirtualIP, also on {} whose file does not",
            missing.join(", ")
        )
    })
}

fn track_interface(
    name: &str,
    t: &Item<Tracked>,
    interface: Option<&str>,
    missing: &[&str],
    spec: &mut TrackSpec,
    bonus: &mut u8,
    report: &mut Report,
) {
    if t.value.reverse {
        report.unsupported(t.at.clone(), &t.text, "Halo has no reversed tracking");
        return;
    }
    let weight = t.value.weight.unwrap_or(0);
    let e = track::effect(weight);
    *bonus = bonus.saturating_add(e.bonus);
    let action = track::action(e);
    let field = if Some(t.value.name.as_str()) == interface {
        spec.interface_down = Some(action);
        at(name, "spec.vrrp.track.interfaceDown")
    } else {
        let known = spec.interfaces.iter().any(|x| x.name == t.value.name);
        if !known && spec.interfaces.len() < 16 {
            spec.interfaces.push(TrackInterface {
                name: t.value.name.chars().take(15).collect(),
                weight: action.weight,
                fault: action.fault,
            });
        }
        at(
            name,
            &format!("spec.vrrp.track.interfaces[{}]", t.value.name),
        )
    };
    let field = format!("{field}: {}", track::explain(weight));
    match partial(missing) {
        Some(how) => report.approximated(t.at.clone(), &t.text, &field, how),
        None => report.mapped(t.at.clone(), &t.text, &field),
    }
}

/// One `track_script` line of one node.
struct Tracking<'a> {
    node: &'a NodeFile,
    t: &'a Item<Tracked>,
    /// Members whose files do not track this script.
    missing: &'a [&'a str],
}

fn track_script(
    name: &str,
    tracking: &Tracking<'_>,
    spec: &mut TrackSpec,
    bonus: &mut u8,
    origin: &mut BTreeMap<String, String>,
    report: &mut Report,
) {
    let (n, t) = (tracking.node, tracking.t);
    let Some(s) = n.conf.scripts.iter().find(|s| s.name == t.value.name) else {
        report.unsupported(
            t.at.clone(),
            &t.text,
            format!(
                "no vrrp_script {} in this node's configuration (keepalived ignores the line)",
                t.value.name
            ),
        );
        return;
    };
    if t.value.reverse || (t.value.weight.is_none() && s.reverse) {
        report.unsupported(
            t.at.clone(),
            &t.text,
            "Halo has no reversed checks: invert the program's exit status",
        );
        return;
    }
    let weight = t
        .value
        .weight
        .or(s.weight.as_ref().map(|w| w.value))
        .unwrap_or(0);
    let Ok(target) = track::target(s) else {
        report.unsupported(
            t.at.clone(),
            &t.text,
            "its vrrp_script cannot be imported (see that block)",
        );
        return;
    };
    let e = track::effect(weight);
    *bonus = bonus.saturating_add(e.bonus);
    let placed = place(name, target, track::action(e), &n.name, spec, origin);
    let (at_, text) = (t.at.clone(), &t.text);
    match placed {
        Placed::Field(field) => {
            let field = format!("{field}: {}", track::explain(weight));
            match partial(tracking.missing) {
                Some(how) => report.approximated(at_, text, &field, how),
                None => report.mapped(at_, text, &field),
            }
        }
        Placed::Differs(field, how) => report.approximated(at_, text, &field, how),
        Placed::Full => report.unsupported(at_, text, "at most 16 checks per VirtualIP"),
    }
}

/// Where a tracked script landed in the VirtualIP's `track`.
enum Placed {
    Field(String),
    /// Another node's definition was kept: field and how it differs.
    Differs(String, String),
    Full,
}

fn place(
    name: &str,
    target: Target,
    action: TrackAction,
    node: &str,
    spec: &mut TrackSpec,
    origin: &mut BTreeMap<String, String>,
) -> Placed {
    match target {
        Target::BindFailure { .. } => {
            let field = at(name, "spec.vrrp.track.bindFailure");
            match &spec.bind_failure {
                Some(existing) if *existing != action => Placed::Differs(
                    field,
                    "another proxy check already set bindFailure with another weight: that \
                     one is kept"
                        .into(),
                ),
                _ => {
                    spec.bind_failure = Some(action);
                    Placed::Field(field)
                }
            }
        }
        Target::Check { mut check, .. } => {
            check.weight = action.weight;
            check.fault = action.fault;
            let field = at(name, &format!("spec.vrrp.track.checks[{}]", check.name));
            match spec.checks.iter().find(|c| c.name == check.name) {
                Some(existing) if *existing != check => {
                    let first = origin.get(&check.name).cloned().unwrap_or_default();
                    let how = format!(
                        "node {first} defines or weighs this check differently; Halo runs \
                         {first}'s on every node"
                    );
                    Placed::Differs(field, how)
                }
                Some(_) => Placed::Field(field),
                None if spec.checks.len() >= 16 => Placed::Full,
                None => {
                    origin.insert(check.name.clone(), node.to_string());
                    spec.checks.push(check);
                    Placed::Field(field)
                }
            }
        }
    }
}
