//! The per-group FIFO queue of requests waiting for a backend under its maxConnections.
//! The order and admission decisions are pure (`admit`, `serve_in_order`); `Queue` holds
//! the waiters, and whoever frees a slot (a request ending, a backend coming up, a
//! reload) hands slots to them in arrival order.

use std::collections::VecDeque;
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use tokio::sync::oneshot;

/// What a request that found every backend it may use at its limit does.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Admission {
    Wait,
    /// The queue is at maxQueue: 503 now.
    Overflow,
}

/// `waiting` requests are queued already; the group allows `max_queue`.
pub fn admit(waiting: usize, max_queue: u32) -> Admission {
    if waiting < max_queue as usize {
        Admission::Wait
    } else {
        Admission::Overflow
    }
}

/// How particular a waiter is about its backend.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Class {
    /// Any backend the balancer would pick: once one such waiter finds no slot, none
    /// behind it will.
    Any,
    /// Pinned to one backend, or avoiding some (a retry): may be served while an `Any`
    /// ahead of it waits.
    Specific,
}

/// What trying to serve one waiter came to.
#[derive(Debug, PartialEq, Eq)]
pub enum Served<S, F> {
    Slot(S),
    /// Still nothing for it: it keeps its place.
    Wait,
    /// It cannot be served at all any more (nothing up, or it gave up): it leaves.
    Fail(F),
}

/// Offers slots to `waiters` in arrival order: each one served or failed leaves the
/// queue (returned with its outcome), the others keep their order. `try_serve` is not
/// asked for an `Any` waiter once an earlier `Any` one had to wait.
pub fn serve_in_order<W, S, F>(
    waiters: &mut VecDeque<W>,
    class: impl Fn(&W) -> Class,
    mut try_serve: impl FnMut(&W) -> Served<S, F>,
) -> Vec<(W, Result<S, F>)> {
    let mut done = Vec::new();
    let mut kept = VecDeque::with_capacity(waiters.len());
    let mut any_blocked = false;
    while let Some(w) = waiters.pop_front() {
        let c = class(&w);
        if c == Class::Any && any_blocked {
            kept.push_back(w);
            continue;
        }
        match try_serve(&w) {
            Served::Slot(s) => done.push((w, Ok(s))),
            Served::Fail(f) => done.push((w, Err(f))),
            Served::Wait => {
                any_blocked |= c == Class::Any;
                kept.push_back(w);
            }
        }
    }
    *waiters = kept;
    done
}

/// One queued request.
pub struct Waiter<W, S, F> {
    pub ticket: u64,
    pub want: W,
    pub since: Instant,
    pub reply: oneshot::Sender<Result<S, F>>,
}

/// Queue metrics of one group of one listener.
#[derive(Clone)]
pub struct QueueMetrics {
    pub length: Gauge,
    pub wait: Histogram,
    pub timeouts: Counter,
    pub overflows: Counter,
}

/// The last ticket handed out, and the waiters in arrival order.
type Line<W, S, F> = (u64, VecDeque<Waiter<W, S, F>>);

/// The waiters of one backend group, carried over a reload of the same group.
pub struct Queue<W, S, F> {
    waiters: Mutex<Line<W, S, F>>,
    /// How many wait, readable without the lock: a freed slot with nobody waiting (the
    /// common case) costs one load.
    waiting: AtomicUsize,
    pub metrics: QueueMetrics,
}

impl<W, S, F> Queue<W, S, F> {
    pub fn new(metrics: QueueMetrics) -> Self {
        Self {
            waiters: Mutex::new((0, VecDeque::new())),
            waiting: AtomicUsize::new(0),
            metrics,
        }
    }

    /// Runs `f` on the waiters (with the next ticket number) under the queue's lock,
    /// then updates the length gauge.
    pub fn with<R>(&self, f: impl FnOnce(&mut u64, &mut VecDeque<Waiter<W, S, F>>) -> R) -> R {
        let mut guard = self
            .waiters
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let (next, list) = &mut *guard;
        let r = f(next, list);
        // SeqCst, paired with the release of a slot: either the releaser sees this
        // waiter, or this waiter's own dispatch sees the freed slot.
        self.waiting.store(list.len(), Ordering::SeqCst);
        self.metrics.length.set(list.len() as i64);
        r
    }

    /// Offers slots to the waiters in order, then replies to those served or failed
    /// outside the lock (a reply nobody takes drops its slot, which may free it for the
    /// next waiter: that must not happen under the lock).
    pub fn dispatch(
        &self,
        class: impl Fn(&W) -> Class,
        mut try_serve: impl FnMut(&W) -> Served<S, F>,
    ) {
        if self.waiting.load(Ordering::SeqCst) == 0 {
            return;
        }
        let done = self.with(|_, list| {
            // Waiters that gave up leave first, so no slot goes to them.
            list.retain(|w| !w.reply.is_closed());
            if list.is_empty() {
                return Vec::new();
            }
            let mut plain: VecDeque<Waiter<W, S, F>> = std::mem::take(list);
            let done = serve_in_order(&mut plain, |w| class(&w.want), |w| try_serve(&w.want));
            *list = plain;
            done
        });
        for (w, outcome) in done {
            self.metrics.wait.observe(w.since.elapsed().as_secs_f64());
            // A waiter gone meanwhile: its slot comes back here and is dropped.
            let _ = w.reply.send(outcome);
        }
    }

    /// Removes the waiter with `ticket` (it timed out); false when it had left already.
    pub fn leave(&self, ticket: u64) -> bool {
        self.with(|_, list| {
            let before = list.len();
            list.retain(|w| w.ticket != ticket);
            list.len() != before
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn admission_is_bounded_by_max_queue() {
        let cases = [
            (0, 0, Admission::Overflow),
            (0, 1, Admission::Wait),
            (1, 1, Admission::Overflow),
            (1023, 1024, Admission::Wait),
            (1024, 1024, Admission::Overflow),
        ];
        for (waiting, max, want) in cases {
            assert_eq!(admit(waiting, max), want, "{waiting} {max}");
        }
    }

    /// A waiter: its name and the backend it is pinned to (None: any).
    type W = (&'static str, Option<usize>);

    /// Serves `waiters` from `free` slots per backend (any backend: the first free).
    fn run(waiters: &[W], free: &mut [u32], down: bool) -> (Vec<&'static str>, Vec<&'static str>) {
        let mut q: VecDeque<W> = waiters.iter().copied().collect();
        let class = |w: &W| {
            if w.1.is_some() {
                Class::Specific
            } else {
                Class::Any
            }
        };
        let done = serve_in_order(&mut q, class, |w| {
            if down {
                return Served::Fail("down");
            }
            let slot = match w.1 {
                Some(i) => (free[i] > 0).then_some(i),
                None => free.iter().position(|&f| f > 0),
            };
            match slot {
                Some(i) => {
                    free[i] -= 1;
                    Served::Slot(i)
                }
                None => Served::Wait,
            }
        });
        (
            done.iter().map(|(w, _)| w.0).collect(),
            q.iter().map(|w| w.0).collect(),
        )
    }

    #[test]
    fn slots_go_in_arrival_order_without_head_of_line_blocking() {
        /// Waiters, free slots per backend, served, still waiting.
        type Case<'a> = (&'a [W], Vec<u32>, &'a [&'a str], &'a [&'a str]);
        let cases: [Case<'_>; 5] = [
            (&[("a", None), ("b", None)], vec![1, 0], &["a"], &["b"]),
            (&[("a", None), ("b", None)], vec![1, 1], &["a", "b"], &[]),
            (
                &[("a", None), ("b", None), ("c", None)],
                vec![0, 0],
                &[],
                &["a", "b", "c"],
            ),
            // A pinned waiter whose backend is busy does not hold up the others...
            (&[("p", Some(0)), ("a", None)], vec![0, 1], &["a"], &["p"]),
            // ...and one whose backend has room goes although others wait.
            (
                &[("p0", Some(0)), ("p1", Some(1)), ("a", None)],
                vec![0, 1],
                &["p1"],
                &["p0", "a"],
            ),
        ];
        for (waiters, mut free, served, waiting) in cases {
            let (s, w) = run(waiters, &mut free, false);
            assert_eq!(
                (s.as_slice(), w.as_slice()),
                (served, waiting),
                "{waiters:?}"
            );
        }
    }

    #[test]
    fn nothing_up_fails_every_waiter() {
        let (served, waiting) = run(&[("a", None), ("p", Some(0))], &mut [0], true);
        assert_eq!(served, vec!["a", "p"]);
        assert!(waiting.is_empty());
    }

    #[test]
    fn an_any_waiter_behind_a_blocked_one_is_not_tried() {
        let mut q: VecDeque<u8> = [1, 2, 3].into_iter().collect();
        let mut asked = Vec::new();
        let done = serve_in_order::<_, (), ()>(
            &mut q,
            |_| Class::Any,
            |w| {
                asked.push(*w);
                Served::Wait
            },
        );
        assert!(done.is_empty());
        assert_eq!(asked, vec![1]);
        assert_eq!(q, [1, 2, 3]);
    }
}
