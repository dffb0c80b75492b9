//! Periodic track checks of the VRRP instances: one task per check, started and stopped
//! with its VirtualIP and restarted only when its own config changes, so a reload keeps
//! the state of the checks it does not touch.

pub mod probe;
pub mod rise_fall;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use halo_crds::node_config::{TrackCheckConfig, TrackEffect, VipConfig};
use serde::Serialize;
use tokio::task::JoinHandle;

use self::probe::Outcome;
use self::rise_fall::{CheckState, RiseFall, Transition};
use crate::metrics::{Labels, Metrics, with};

/// What `/status` shows of one check.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct CheckStatus {
    pub name: String,
    /// `http`, `tcp` or `exec`.
    pub kind: &'static str,
    pub state: CheckState,
    /// What failing does: `weight N` or `fault`.
    pub effect: String,
    pub runs: u64,
    /// Results in a row against the state (towards `rise` or `fall`).
    pub streak: u32,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
    pub since_ms_ago: u64,
    #[serde(skip)]
    pub since: Option<Instant>,
}

struct Running {
    config: TrackCheckConfig,
    status: Arc<Mutex<CheckStatus>>,
    task: JoinHandle<()>,
}

impl Drop for Running {
    fn drop(&mut self) {
        // Dropping the task's future drops a running program too (kill_on_drop).
        self.task.abort();
    }
}

/// The running checks, by (VirtualIP, check name).
#[derive(Default)]
pub struct Checks {
    running: Mutex<BTreeMap<(String, String), Running>>,
}

impl Checks {
    /// Starts new and changed checks of `vips`, stops the ones gone; unchanged ones keep
    /// running with their state.
    pub fn apply(&self, vips: &[VipConfig], metrics: &Arc<Metrics>) {
        let wanted: BTreeMap<(String, String), &TrackCheckConfig> = vips
            .iter()
            .filter_map(|v| v.vrrp.as_ref().map(|r| (v, r)))
            .flat_map(|(v, r)| {
                r.track
                    .checks
                    .iter()
                    .map(move |c| ((v.name.clone(), c.name.clone()), c))
            })
            .collect();
        let mut running = self.lock();
        let gone: Vec<(String, String)> = running
            .iter()
            .filter(|(key, r)| wanted.get(*key).is_none_or(|c| **c != r.config))
            .map(|(key, _)| key.clone())
            .collect();
        for key in gone {
            running.remove(&key);
            if !wanted.contains_key(&key) {
                forget(metrics, &key.0, &key.1);
            }
        }
        for (key, config) in wanted {
            if running.contains_key(&key) {
                continue;
            }
            tracing::info!(vip = %key.0, check = %key.1, kind = config.kind.label(), "track check started");
            let status = Arc::new(Mutex::new(CheckStatus {
                name: config.name.clone(),
                kind: config.kind.label(),
                state: CheckState::Unknown,
                effect: effect_text(config.effect),
                runs: 0,
                streak: 0,
                last_error: None,
                since_ms_ago: 0,
                since: None,
            }));
            let task = tokio::spawn(run(
                key.0.clone(),
                config.clone(),
                status.clone(),
                metrics.clone(),
            ));
            running.insert(
                key,
                Running {
                    config: config.clone(),
                    status,
                    task,
                },
            );
        }
    }

    /// The checks that count as failed now (not passing), by VirtualIP.
    pub fn failed(&self) -> BTreeMap<String, BTreeSet<String>> {
        let mut out: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
        for ((vip, check), r) in self.lock().iter() {
            let failed = r
                .status
                .lock()
                .map_or(true, |s| s.state != CheckState::Passing);
            if failed {
                out.entry(vip.clone()).or_default().insert(check.clone());
            }
        }
        out
    }

    /// The checks of `vip`, in config order of names.
    pub fn status(&self, vip: &str) -> Vec<CheckStatus> {
        self.lock()
            .iter()
            .filter(|((v, _), _)| v == vip)
            .filter_map(|(_, r)| r.status.lock().ok().map(|s| s.clone()))
            .map(|mut s| {
                s.since_ms_ago = s.since.map_or(0, |t| {
                    u64::try_from(t.elapsed().as_millis()).unwrap_or(u64::MAX)
                });
                s
            })
            .collect()
    }

    pub fn stop_all(&self) {
        self.lock().clear();
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<(String, String), Running>> {
        // Every step replaces whole entries: a panic elsewhere leaves them consistent.
        self.running
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

pub fn effect_text(effect: TrackEffect) -> String {
    match effect {
        TrackEffect::Weight(w) => format!("weight {w}"),
        TrackEffect::Fault => "fault".into(),
    }
}

fn labels(vip: &str, check: &str) -> Labels {
    vec![("vip", vip.to_string()), ("check", check.to_string())]
}

fn forget(metrics: &Metrics, vip: &str, check: &str) {
    let l = labels(vip, check);
    metrics.track_check_up.remove(&l);
    for result in ["pass", "fail", "timeout"] {
        metrics
            .track_check_runs
            .remove(&with(l.clone(), "result", result));
    }
}

/// One check's loop: run, judge with rise/fall, publish; log only transitions.
async fn run(
    vip: String,
    config: TrackCheckConfig,
    status: Arc<Mutex<CheckStatus>>,
    metrics: Arc<Metrics>,
) {
    let mut judge = RiseFall::new(config.rise, config.fall);
    let timeout = Duration::from_millis(config.timeout_ms);
    let mut tick = tokio::time::interval(Duration::from_millis(config.interval_ms.max(1)));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let l = labels(&vip, &config.name);
    loop {
        tick.tick().await;
        let (outcome, output) = probe::run(&config.kind, timeout).await;
        metrics
            .track_check_runs
            .get_or_create(&with(l.clone(), "result", outcome.label()))
            .inc();
        let transition = judge.observe(outcome.ok());
        metrics
            .track_check_up
            .get_or_create(&l)
            .set(i64::from(!judge.failed()));
        let error = match &outcome {
            Outcome::Pass => None,
            Outcome::Fail(e) => Some(e.clone()),
            Outcome::Timeout => Some(format!("no result within {timeout:?}")),
        };
        if let Ok(mut s) = status.lock() {
            s.runs += 1;
            s.state = judge.state();
            s.streak = judge.streak();
            if error.is_some() {
                s.last_error.clone_from(&error);
            }
            if transition.is_some() {
                s.since = Some(Instant::now());
            }
        }
        match transition {
            Some(Transition::Failing) => tracing::warn!(
                %vip, check = %config.name, error = error.as_deref().unwrap_or(""), %output,
                "track check failing"
            ),
            Some(Transition::Passing) => {
                tracing::info!(%vip, check = %config.name, %output, "track check passing");
            }
            None => {}
        }
    }
}
