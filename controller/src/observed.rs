//! What the controller has observed, shared by the render loop, the config stream server
//! and the status writer: the last render's plan, problems and Service addresses, the
//! Secrets that are unusable, the Node names, and each node's latest report with its
//! age. Data with methods: no lock leaves this module.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use arc_swap::{ArcSwap, ArcSwapOption};
use futures::channel::mpsc::UnboundedSender;
use halo_crds::protocol::NodeReport;
use halo_crds::render::ObjectRef;

use crate::assign::Plan;
use crate::material::SecretProblem;
use crate::services::Allocations;

/// How long a node's report still counts after its last config stream closed: long
/// enough for a reconnect, short enough that a dead master leaves the status quickly.
pub const CLOSED_STREAM_GRACE: Duration = Duration::from_millis(500);

/// How long a report counts without a newer one: data planes send one at least every
/// 30 s, so two missed refreshes. It bounds a report whose stream never looked broken
/// (a node cut off without a reset, a stream this replica ended itself).
pub const REPORT_TTL: Duration = Duration::from_secs(65);

/// A node's config streams: how many are open, and when the last one closed.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Presence {
    pub open: usize,
    pub closed_at: Option<Instant>,
}

/// Whether a node's report, received at `received`, counts at `now`: for `REPORT_TTL`,
/// and meanwhile while the node holds a stream, when its stream never broke (reports
/// may come first; this replica may have ended it), and for `CLOSED_STREAM_GRACE`
/// after its last stream broke. A data plane that died keeps no `Master` in status.
pub fn report_counts(presence: Option<&Presence>, received: Instant, now: Instant) -> bool {
    if now.saturating_duration_since(received) >= REPORT_TTL {
        return false;
    }
    match presence {
        Some(Presence {
            open: 0,
            closed_at: Some(at),
        }) => now.saturating_duration_since(*at) < CLOSED_STREAM_GRACE,
        _ => true,
    }
}

/// One consistent look at the observations, for the pure status functions.
#[derive(Clone, Debug, Default)]
pub struct View {
    pub plan: Arc<Plan>,
    /// Problems per object, as "field: message", deduplicated across nodes.
    pub problems: Arc<BTreeMap<ObjectRef, Vec<String>>>,
    /// Referenced Secrets that are missing or invalid now, per LoadBalancer. Render may
    /// not see them: it gets the last valid contents while there are some.
    pub secret_problems: Arc<BTreeMap<ObjectRef, Vec<SecretProblem>>>,
    /// The reports that count, by node.
    pub reports: BTreeMap<String, NodeReport>,
}

/// What one render concluded.
pub struct RenderResult {
    pub plan: Plan,
    pub problems: BTreeMap<ObjectRef, Vec<String>>,
    pub allocations: Allocations,
    pub nodes: BTreeSet<String>,
    /// What the Gateway API translation concluded.
    pub gateway: crate::gateway::Reports,
}

#[derive(Default)]
pub struct Observed {
    plan: ArcSwap<Plan>,
    problems: ArcSwap<BTreeMap<ObjectRef, Vec<String>>>,
    secret_problems: ArcSwap<BTreeMap<ObjectRef, Vec<SecretProblem>>>,
    allocations: ArcSwap<Allocations>,
    gateway: ArcSwap<crate::gateway::Reports>,
    /// The Node objects at the last render (`None` before it): a deleted node's report
    /// is dropped then.
    nodes: ArcSwapOption<BTreeSet<String>>,
    reports: Mutex<BTreeMap<String, (NodeReport, Instant)>>,
    streams: Mutex<BTreeMap<String, Presence>>,
    triggers: Mutex<Vec<UnboundedSender<()>>>,
}

impl Observed {
    /// `tx` hears every change the status writer should look at.
    pub fn add_trigger(&self, tx: UnboundedSender<()>) {
        if let Ok(mut t) = self.triggers.lock() {
            t.push(tx);
        }
    }

    /// Asks every status writer loop to look at all its objects again.
    pub fn trigger(&self) {
        if let Ok(t) = self.triggers.lock() {
            for tx in t.iter() {
                let _ = tx.unbounded_send(());
            }
        }
    }

    pub fn plan(&self) -> Arc<Plan> {
        self.plan.load_full()
    }

    pub fn allocations(&self) -> Arc<Allocations> {
        self.allocations.load_full()
    }

    pub fn gateway_reports(&self) -> Arc<crate::gateway::Reports> {
        self.gateway.load_full()
    }

    /// Stores a render's conclusions and drops the reports of nodes that are gone.
    pub fn record_render(&self, result: RenderResult) {
        if let Ok(mut r) = self.reports.lock() {
            r.retain(|node, _| result.nodes.contains(node));
        }
        self.nodes.store(Some(Arc::new(result.nodes)));
        self.plan.store(Arc::new(result.plan));
        self.problems.store(Arc::new(result.problems));
        self.allocations.store(Arc::new(result.allocations));
        self.gateway.store(Arc::new(result.gateway));
        self.trigger();
    }

    pub fn record_secret_problems(&self, problems: BTreeMap<ObjectRef, Vec<SecretProblem>>) {
        self.secret_problems.store(Arc::new(problems));
    }

    pub fn record_report(&self, node: &str, report: NodeReport, now: Instant) {
        if let Ok(mut r) = self.reports.lock() {
            r.insert(node.to_string(), (report, now));
        }
        self.trigger();
    }

    pub fn stream_opened(&self, node: &str) {
        if let Ok(mut s) = self.streams.lock() {
            s.entry(node.to_string()).or_default().open += 1;
        }
        self.trigger();
    }

    /// A config stream of `node` ended at `now`; `gone`: the data plane went away (the
    /// stream broke), rather than this replica ending it (leadership lost, shutdown),
    /// which says nothing about the node.
    pub fn stream_closed(&self, node: &str, gone: bool, now: Instant) {
        if let Ok(mut s) = self.streams.lock() {
            let p = s.entry(node.to_string()).or_default();
            p.open = p.open.saturating_sub(1);
            p.closed_at = gone.then_some(now);
        }
        self.trigger();
    }

    /// The reports that count at `now` (see [`report_counts`]) of nodes that exist;
    /// reports past `REPORT_TTL` are dropped for good.
    pub fn reports(&self, now: Instant) -> BTreeMap<String, NodeReport> {
        let streams = self.streams.lock().map(|s| s.clone()).unwrap_or_default();
        let nodes = self.nodes.load();
        let Ok(mut reports) = self.reports.lock() else {
            return BTreeMap::new();
        };
        reports.retain(|_, (_, at)| now.saturating_duration_since(*at) < REPORT_TTL);
        reports
            .iter()
            .filter(|(node, _)| nodes.as_ref().is_none_or(|n| n.contains(*node)))
            .filter(|(node, (_, at))| report_counts(streams.get(*node), *at, now))
            .map(|(node, (report, _))| (node.clone(), report.clone()))
            .collect()
    }

    pub fn view(&self, now: Instant) -> View {
        View {
            plan: self.plan.load_full(),
            problems: self.problems.load_full(),
            secret_problems: self.secret_problems.load_full(),
            reports: self.reports(now),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_report_counts_until_its_broken_stream_is_past_the_grace_or_it_is_too_old() {
        let now = Instant::now();
        let ago = |d: Duration| now.checked_sub(d).unwrap_or(now);
        let broke = |d: Duration| Presence {
            open: 0,
            closed_at: now.checked_sub(d),
        };
        let open = Presence {
            open: 1,
            closed_at: now.checked_sub(Duration::from_secs(60)),
        };
        let fresh = Duration::from_secs(1);
        for (presence, age, counts) in [
            (None, fresh, true),
            (Some(Presence::default()), fresh, true),
            (Some(open), fresh, true),
            (Some(broke(Duration::ZERO)), fresh, true),
            (Some(broke(CLOSED_STREAM_GRACE / 2)), fresh, true),
            (Some(broke(CLOSED_STREAM_GRACE)), fresh, false),
            (Some(broke(Duration::from_secs(60))), fresh, false),
            // Too old counts nowhere, not even on a stream that looks open.
            (Some(open), REPORT_TTL, false),
            (Some(Presence::default()), REPORT_TTL, false),
            (None, REPORT_TTL - fresh, true),
        ] {
            assert_eq!(
                report_counts(presence.as_ref(), ago(age), now),
                counts,
                "{presence:?} {age:?}"
            );
        }
    }

    fn render_with_nodes(nodes: &[&str]) -> RenderResult {
        RenderResult {
            plan: Plan::default(),
            problems: BTreeMap::new(),
            allocations: Allocations::new(),
            nodes: nodes.iter().map(ToString::to_string).collect(),
            gateway: Default::default(),
        }
    }

    #[test]
    fn a_deleted_node_leaves_the_reports() {
        let observed = Observed::default();
        let now = Instant::now();
        observed.record_report("node-a", NodeReport::default(), now);
        observed.record_report("node-b", NodeReport::default(), now);
        assert_eq!(
            observed.reports(now).len(),
            2,
            "before any render all count"
        );
        observed.record_render(render_with_nodes(&["node-b"]));
        assert_eq!(
            observed.reports(now).keys().collect::<Vec<_>>(),
            vec!["node-b"]
        );
        // Gone for good: the Node coming back does not bring the old report back.
        observed.record_render(render_with_nodes(&["node-a", "node-b"]));
        assert_eq!(
            observed.reports(now).keys().collect::<Vec<_>>(),
            vec!["node-b"]
        );
    }

    #[test]
    fn a_dead_data_plane_leaves_the_reports_a_reconnected_one_returns() {
        let observed = Observed::default();
        let start = Instant::now();
        observed.record_report("node-a", NodeReport::default(), start);
        observed.stream_opened("node-a");
        observed.stream_closed("node-a", true, start);
        let later = start + CLOSED_STREAM_GRACE * 2;
        assert!(observed.reports(later).is_empty());
        observed.stream_opened("node-a");
        assert_eq!(observed.reports(later).len(), 1);
        // Ended by this replica (it lost the leadership): the report still counts...
        observed.stream_closed("node-a", false, later);
        assert_eq!(observed.reports(later).len(), 1);
        // ...until it is too old, and then it is gone.
        assert!(observed.reports(start + REPORT_TTL).is_empty());
        assert!(observed.reports(later).is_empty());
    }
}
