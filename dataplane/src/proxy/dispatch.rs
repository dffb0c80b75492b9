//! A backend slot for one request or connection: its pin (cookie or client address),
//! else the balancer's pick, reserved atomically under the backend's maxConnections;
//! when every backend it may use is full, a place in the group's FIFO queue until a
//! slot frees (or `timeouts.queue`, or `maxQueue` waiting already: 503).

use std::net::IpAddr;
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use halo_crds::node_config::PersistenceConfig;
use tokio::sync::oneshot;

use super::Group;
use super::backend::{ActiveGuard, clock_ms};
use super::balance::{self, Candidate};
use super::queue::{self, Admission, Class, Queue, Served, Waiter};

pub type GroupQueue = Queue<Want, ActiveGuard, Refused>;

/// Why a request got no backend slot (each answered 503).
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Refused {
    #[error("no backend is up")]
    NoBackend,
    #[error("every backend is at its connection limit and the queue is full")]
    QueueFull,
    #[error("no backend had a free connection slot within the queue timeout")]
    QueueTimeout,
}

/// What a queued request needs, to be served by whoever frees a slot.
pub struct Want {
    group: Weak<Group>,
    client: IpAddr,
    cookie: Option<usize>,
    excluded: Vec<bool>,
    class: Class,
}

/// A request's place in the queue.
struct Place {
    ticket: u64,
    rx: oneshot::Receiver<Result<ActiveGuard, Refused>>,
    since: Instant,
}

/// Waits for a slot (or a failure) to be handed over, at most `limit`.
async fn wait(
    queue: &GroupQueue,
    mut place: Place,
    limit: Duration,
) -> Result<ActiveGuard, Refused> {
    match tokio::time::timeout(limit, &mut place.rx).await {
        Ok(Ok(outcome)) => outcome,
        Ok(Err(_)) => Err(Refused::NoBackend),
        Err(_) => {
            let left = queue.leave(place.ticket);
            // Served just as the wait ran out: take it.
            if let Ok(outcome) = place.rx.try_recv() {
                return outcome;
            }
            if left {
                queue
                    .metrics
                    .wait
                    .observe(place.since.elapsed().as_secs_f64());
            }
            queue.metrics.timeouts.inc();
            Err(Refused::QueueTimeout)
        }
    }
}

enum Take {
    Got(ActiveGuard),
    /// Every backend it may use is at its limit.
    Full,
    /// No backend it may use is up.
    NoneUp,
}

impl Group {
    /// Reserves a slot on a backend for a request of `client` whose persistence cookie
    /// names backend `cookie`, avoiding `excluded` ones; waits in the group's queue up
    /// to `queue_wait` when all are full.
    pub async fn acquire(
        &self,
        client: IpAddr,
        cookie: Option<usize>,
        excluded: &[bool],
        queue_wait: Duration,
    ) -> Result<ActiveGuard, Refused> {
        let Some(queue) = &self.queue else {
            // No backend has a limit: nothing is ever full, nothing waits.
            return match self.take(client, cookie, excluded) {
                Take::Got(guard) => Ok(guard),
                Take::Full | Take::NoneUp => Err(Refused::NoBackend),
            };
        };
        let place = match self.join(queue, client, cookie, excluded) {
            Ok(place) => place,
            Err(Err(Refused::QueueFull)) => {
                queue.metrics.overflows.inc();
                return Err(Refused::QueueFull);
            }
            Err(done) => return done,
        };
        // Requests ahead may not need what is free: this one may be served at once.
        run(queue);
        wait(queue, place, queue_wait).await
    }

    /// Takes a slot at once when nobody waits and one is free; else a place at the end
    /// of the queue, unless it is full.
    fn join(
        &self,
        queue: &GroupQueue,
        client: IpAddr,
        cookie: Option<usize>,
        excluded: &[bool],
    ) -> Result<Place, Result<ActiveGuard, Refused>> {
        queue.with(|next, list| {
            // Requests that stopped waiting (their task was dropped) hold no place.
            list.retain(|w| !w.reply.is_closed());
            if list.is_empty() {
                match self.take(client, cookie, excluded) {
                    Take::Got(guard) => return Err(Ok(guard)),
                    Take::NoneUp => return Err(Err(Refused::NoBackend)),
                    Take::Full => {}
                }
            }
            if queue::admit(list.len(), self.config.max_queue) == Admission::Overflow {
                return Err(Err(Refused::QueueFull));
            }
            let (reply, rx) = oneshot::channel();
            *next += 1;
            let since = Instant::now();
            list.push_back(Waiter {
                ticket: *next,
                want: self.want(client, cookie, excluded),
                since,
                reply,
            });
            Ok(Place {
                ticket: *next,
                rx,
                since,
            })
        })
    }

    fn want(&self, client: IpAddr, cookie: Option<usize>, excluded: &[bool]) -> Want {
        let particular = cookie.is_some()
            || excluded.iter().any(|&e| e)
            || self.config.persistence == Some(PersistenceConfig::SourceIp);
        Want {
            group: self.me.clone(),
            client,
            cookie,
            excluded: excluded.to_vec(),
            class: if particular {
                Class::Specific
            } else {
                Class::Any
            },
        }
    }

    /// Picks and reserves without waiting. A reservation lost to a concurrent request
    /// looks again with fresh load (bounded by the number of backends).
    fn take(&self, client: IpAddr, cookie: Option<usize>, excluded: &[bool]) -> Take {
        let now = clock_ms();
        let source = (self.config.persistence == Some(PersistenceConfig::SourceIp))
            .then(|| super::source_hash(client));
        for _ in 0..=self.backends.len() {
            let candidates: Vec<Candidate> = self
                .backends
                .iter()
                .map(|b| b.candidate(now, self.config.slow_start_ms))
                .collect();
            let pinned = balance::pinned(&candidates, excluded, cookie, source);
            let chosen = match pinned {
                Some(i) => Some(i),
                None => self.pick_from(&candidates, excluded, client),
            };
            let Some(i) = chosen else {
                return if balance::tier(&candidates, excluded).is_empty() {
                    Take::NoneUp
                } else {
                    Take::Full
                };
            };
            match self.backends[i].try_reserve() {
                Some(guard) => return Take::Got(guard),
                // A pinned request waits for its own backend.
                None if pinned.is_some() => return Take::Full,
                None => {}
            }
        }
        Take::Full
    }
}

/// Hands what is free now to the queue's waiters, in order.
pub fn run(queue: &GroupQueue) {
    queue.dispatch(
        |w| w.class,
        |w| match w.group.upgrade() {
            None => Served::Fail(Refused::NoBackend),
            Some(group) => match group.take(w.client, w.cookie, &w.excluded) {
                Take::Got(guard) => Served::Slot(guard),
                Take::Full => Served::Wait,
                Take::NoneUp => Served::Fail(Refused::NoBackend),
            },
        },
    );
}

/// A new queue (for a group with a backend limit) or the previous group's one.
pub fn queue_for(
    group: &halo_crds::node_config::GroupConfig,
    previous: Option<Arc<GroupQueue>>,
    metrics: impl FnOnce() -> queue::QueueMetrics,
) -> Option<Arc<GroupQueue>> {
    if !group.backends.iter().any(|b| b.max_connections.is_some()) {
        return None;
    }
    Some(previous.unwrap_or_else(|| Arc::new(Queue::new(metrics()))))
}

#[cfg(test)]
mod tests {
    use std::net::{IpAddr, Ipv4Addr};
    use std::sync::Arc;
    use std::time::Duration;

    use halo_crds::node_config::ListenerConfig;

    use super::Refused;
    use crate::metrics::Metrics;
    use crate::proxy::{Build, Service};

    const CLIENT: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);
    const LONG: Duration = Duration::from_secs(30);

    /// A listener whose one group has `n` backends of maxConnections 1 (never dialled).
    fn service(n: usize, max_queue: u32) -> Arc<Service> {
        let backends: Vec<_> = (0..n)
            .map(|i| {
                serde_json::json!({"name": format!("b{i}"), "address": "127.0.0.1",
                    "port": 1, "weight": 1, "backup": false, "maxConnections": 1})
            })
            .collect();
        let config: ListenerConfig = serde_json::from_value(serde_json::json!({
            "name": "t", "addresses": [], "port": 1, "protocol": "HTTP", "routes": [],
            "groups": [{"name": "default", "algorithm": "RoundRobin", "backends": backends,
                        "retries": 0, "maxQueue": max_queue}],
            "timeouts": {"connectMs": 1, "clientMs": 1, "serverMs": 1, "httpRequestMs": 1, "idleMs": 1},
        }))
        .expect("config");
        Service::new(
            config,
            None,
            Arc::new(Metrics::new()),
            Build { ramp_new: false },
        )
    }

    #[tokio::test]
    async fn a_freed_slot_goes_to_the_waiter_and_the_excess_is_refused() {
        let s = service(1, 1);
        let g = &s.groups[0];
        let first = g.acquire(CLIENT, None, &[false], LONG).await.expect("free");
        let waiter = {
            let s = s.clone();
            tokio::spawn(async move { s.groups[0].acquire(CLIENT, None, &[false], LONG).await })
        };
        tokio::task::yield_now().await;
        // One waits already: maxQueue 1 refuses the next at once.
        let over = g.acquire(CLIENT, None, &[false], LONG).await;
        assert_eq!(over.err(), Some(Refused::QueueFull));
        assert_eq!(g.backends[0].active(), 1);
        drop(first);
        let second = waiter.await.expect("task").expect("handed over");
        assert_eq!(g.backends[0].active(), 1);
        drop(second);
        assert_eq!(g.backends[0].active(), 0);
    }

    #[tokio::test]
    async fn a_wait_ends_at_the_queue_timeout() {
        let s = service(1, 8);
        let g = &s.groups[0];
        let _held = g.acquire(CLIENT, None, &[false], LONG).await.expect("free");
        let waited = g
            .acquire(CLIENT, None, &[false], Duration::from_millis(30))
            .await;
        assert_eq!(waited.err(), Some(Refused::QueueTimeout));
        assert_eq!(g.backends[0].active(), 1);
    }

    #[tokio::test]
    async fn a_waiter_pinned_to_a_busy_backend_does_not_hold_up_others() {
        let s = service(2, 8);
        let g = &s.groups[0];
        let on0 = g
            .acquire(CLIENT, Some(0), &[false; 2], LONG)
            .await
            .expect("0");
        let on1 = g
            .acquire(CLIENT, Some(1), &[false; 2], LONG)
            .await
            .expect("1");
        let pinned = {
            let s = s.clone();
            tokio::spawn(async move {
                s.groups[0]
                    .acquire(CLIENT, Some(0), &[false; 2], LONG)
                    .await
            })
        };
        tokio::task::yield_now().await;
        let any = {
            let s = s.clone();
            tokio::spawn(async move { s.groups[0].acquire(CLIENT, None, &[false; 2], LONG).await })
        };
        tokio::task::yield_now().await;
        drop(on1);
        let got = any.await.expect("task").expect("served");
        assert!(Arc::ptr_eq(got.backend(), &g.backends[1]));
        assert!(!pinned.is_finished());
        drop(on0);
        let got = pinned.await.expect("task").expect("served");
        assert!(Arc::ptr_eq(got.backend(), &g.backends[0]));
    }
}
