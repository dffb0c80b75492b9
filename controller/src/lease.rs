//! Leader election on a coordination.k8s.io Lease: the leader serves data planes and
//! writes status; the other replica watches and renders, ready to take over once the
//! lease runs out.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use k8s_openapi::jiff::Timestamp;
use kube::api::{ObjectMeta, PostParams};
use kube::{Api, Client};

#[derive(Default)]
pub struct Leader {
    leading: AtomicBool,
    gained: tokio::sync::Notify,
}

impl Leader {
    pub fn is_leader(&self) -> bool {
        self.leading.load(Ordering::Relaxed)
    }

    /// Returns once this replica has become the leader (at once if it did since the last
    /// call): what was rendered before then was not written as status by anyone.
    pub async fn gained(&self) {
        self.gained.notified().await;
    }

    fn set(&self, leading: bool, identity: &str) {
        if self.leading.swap(leading, Ordering::Relaxed) != leading {
            if leading {
                tracing::info!(%identity, "became the leader");
                self.gained.notify_one();
            } else {
                tracing::warn!(%identity, "lost the leadership");
            }
        }
    }
}

pub struct LeaseConfig {
    pub namespace: String,
    pub name: String,
    pub identity: String,
    pub duration: Duration,
}

pub async fn run(client: Client, config: LeaseConfig, leader: Arc<Leader>) {
    let api: Api<Lease> = Api::namespaced(client, &config.namespace);
    let renew_every = config.duration / 3;
    let mut last_renewed: Option<std::time::Instant> = None;
    loop {
        match try_lead(&api, &config).await {
            Ok(true) => {
                last_renewed = Some(std::time::Instant::now());
                leader.set(true, &config.identity);
            }
            Ok(false) => leader.set(false, &config.identity),
            Err(e) => {
                tracing::warn!(error = %e, "lease update failed");
                // Without a successful renewal for a whole term, someone else may lead.
                if last_renewed.is_none_or(|t| t.elapsed() >= config.duration) {
                    leader.set(false, &config.identity);
                }
            }
        }
        tokio::time::sleep(renew_every).await;
    }
}

fn seconds(d: Duration) -> i32 {
    i32::try_from(d.as_secs()).unwrap_or(i32::MAX).max(1)
}

async fn try_lead(api: &Api<Lease>, config: &LeaseConfig) -> Result<bool, kube::Error> {
    let now = MicroTime(Timestamp::now());
    let Some(mut lease) = api.get_opt(&config.name).await? else {
        let lease = Lease {
            metadata: ObjectMeta {
                name: Some(config.name.clone()),
                ..Default::default()
            },
            spec: Some(LeaseSpec {
                holder_identity: Some(config.identity.clone()),
                lease_duration_seconds: Some(seconds(config.duration)),
                acquire_time: Some(now.clone()),
                renew_time: Some(now),
                lease_transitions: Some(0),
                ..Default::default()
            }),
        };
        return match api.create(&PostParams::default(), &lease).await {
            Ok(_) => Ok(true),
            Err(kube::Error::Api(e)) if e.code == 409 => Ok(false),
            Err(e) => Err(e),
        };
    };
    let spec = lease.spec.get_or_insert_with(Default::default);
    let mine = spec.holder_identity.as_deref() == Some(config.identity.as_str());
    let duration = spec.lease_duration_seconds.map_or(config.duration, |s| {
        Duration::from_secs(u64::try_from(s).unwrap_or(0))
    });
    let expired = spec.renew_time.as_ref().is_none_or(|t| {
        let age = Timestamp::now().duration_since(t.0);
        age.as_secs_f64() > duration.as_secs_f64()
    });
    if !mine && !expired {
        return Ok(false);
    }
    if !mine {
        spec.holder_identity = Some(config.identity.clone());
        spec.acquire_time = Some(now.clone());
        spec.lease_transitions = Some(spec.lease_transitions.unwrap_or(0) + 1);
        spec.lease_duration_seconds = Some(seconds(config.duration));
    }
    spec.renew_time = Some(now);
    // The resourceVersion in `lease` makes this a compare-and-swap.
    match api
        .replace(&config.name, &PostParams::default(), &lease)
        .await
    {
        Ok(_) => Ok(true),
        Err(kube::Error::Api(e)) if e.code == 409 => Ok(false),
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod gained_tests {
    use super::*;

    #[tokio::test]
    async fn becoming_the_leader_wakes_a_later_waiter_once() {
        let leader = Leader::default();
        leader.set(true, "a");
        // Renewals that keep the leadership do not wake anyone again.
        leader.set(true, "a");
        tokio::time::timeout(Duration::from_secs(1), leader.gained())
            .await
            .expect("woken for the gain");
        assert!(
            tokio::time::timeout(Duration::from_millis(50), leader.gained())
                .await
                .is_err()
        );
        leader.set(false, "a");
        leader.set(true, "a");
        tokio::time::timeout(Duration::from_secs(1), leader.gained())
            .await
            .expect("woken for the second gain");
    }
}
