//! VRRP state machine (RFC 5798 §6, with RFC 3768 timing for v2).
//!
//! Pure logic: the driver feeds in events with the current time (a
//! `Duration` since any fixed origin) and executes the returned actions in
//! order. It must call `on_timer` once `next_deadline` has passed.

use std::net::IpAddr;
use std::time::Duration;

pub use super::packet::Version;

/// Priority of the address owner; it is never changed by tracking.
pub const OWNER_PRIORITY: u8 = 255;

// Smallest interval v3 can express (1 cs); also guards against a zero
// interval turning the Adver_Timer into a busy loop.
const MIN_INTERVAL: Duration = Duration::from_millis(10);

/// Longest hold of a planned takeover's first advert (see [`Machine::takeover`]).
const MAX_TAKEOVER_DRAIN: Duration = Duration::from_secs(1);

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum State {
    Initialize,
    Backup,
    Master,
    /// Forced down (admin or tracking): holds no address, sends nothing,
    /// ignores adverts until cleared.
    Fault,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    pub version: Version,
    /// 1..=255; 255 means this node owns the addresses. 0 is treated as 1.
    pub priority: u8,
    pub advert_interval: Duration,
    pub preempt: bool,
    pub preempt_delay: Duration,
    pub accept_mode: bool,
    /// This node's source address, used for the equal-priority tie-break.
    pub primary_address: IpAddr,
}

/// Side effects for the driver, to be executed in the order returned.
///
/// Ordering rule: `SplitBrain` (an observation about the received advert)
/// comes first, then `StateChanged`, then `SendAdvert`, then address changes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Action {
    SendAdvert {
        priority: u8,
    },
    /// Add the virtual addresses and send gratuitous ARP / unsolicited NA.
    TakeAddresses,
    /// Announce the addresses again (gratuitous ARP / NA) while keeping them.
    Announce,
    ReleaseAddresses,
    StateChanged {
        from: State,
        to: State,
    },
    /// Another node was also Master. `kept` is true when we stayed Master.
    SplitBrain {
        kept: bool,
        peer: IpAddr,
        peer_priority: u8,
    },
}

/// Armed preempt delay: when it fires, and the priority of the lower
/// master that armed it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Preempt {
    deadline: Duration,
    peer_priority: u8,
}

#[derive(Debug, Clone)]
pub struct Machine {
    config: Config,
    state: State,
    priority: u8,
    fault: bool,
    master_adver_interval: Duration,
    adver_timer: Option<Duration>,
    master_down_timer: Option<Duration>,
    preempt: Option<Preempt>,
    /// Priority carried by the last advert from the current master (Backup only).
    last_master_priority: Option<u8>,
    /// A planned takeover holds its first advert until the Adver_Timer fires.
    draining: bool,
}

/// v3 Skew_Time = ((256 - priority) * Master_Adver_Interval) / 256;
/// v2 Skew_Time = (256 - priority) / 256 seconds.
///
/// Computed in nanoseconds rather than truncated to centiseconds so that
/// nearby priorities still get distinct, correctly ordered skews.
pub fn skew_time(version: Version, priority: u8, master_adver_interval: Duration) -> Duration {
    let base = match version {
        Version::V3 => master_adver_interval,
        Version::V2 => Duration::from_secs(1),
    };
    scale_256(base, 256 - u32::from(priority))
}

/// Master_Down_Interval = 3 * interval + Skew_Time. For v2 the interval is
/// always the locally configured one.
pub fn master_down_interval(version: Version, priority: u8, interval: Duration) -> Duration {
    interval
        .saturating_mul(3)
        .saturating_add(skew_time(version, priority, interval))
}

fn scale_256(d: Duration, num: u32) -> Duration {
    let nanos = d.as_nanos() * u128::from(num) / 256;
    // num <= 256, so the result never exceeds `d` and the seconds fit u64.
    let secs = u64::try_from(nanos / 1_000_000_000).unwrap_or(u64::MAX);
    let sub = u32::try_from(nanos % 1_000_000_000).unwrap_or(0);
    Duration::new(secs, sub)
}

// Deadlines saturate rather than panic on absurd times or intervals.
fn after(now: Duration, d: Duration) -> Duration {
    now.saturating_add(d)
}

impl Machine {
    pub fn new(config: Config) -> Machine {
        let mut config = config;
        config.priority = config.priority.max(1);
        config.advert_interval = config.advert_interval.max(MIN_INTERVAL);
        Machine {
            state: State::Initialize,
            priority: config.priority,
            fault: false,
            master_adver_interval: config.advert_interval,
            adver_timer: None,
            master_down_timer: None,
            preempt: None,
            last_master_priority: None,
            draining: false,
            config,
        }
    }

    pub fn config(&self) -> &Config {
        &self.config
    }

    pub fn state(&self) -> State {
        self.state
    }

    pub fn effective_priority(&self) -> u8 {
        self.priority
    }

    pub fn accept_mode(&self) -> bool {
        self.config.accept_mode
    }

    /// The interval the current master advertises (v3) or our own (v2).
    pub fn master_adver_interval(&self) -> Duration {
        self.master_adver_interval
    }

    pub fn skew_time(&self) -> Duration {
        skew_time(
            self.config.version,
            self.priority,
            self.master_adver_interval,
        )
    }

    pub fn master_down_interval(&self) -> Duration {
        master_down_interval(
            self.config.version,
            self.priority,
            self.master_adver_interval,
        )
    }

    /// Earliest time at which `on_timer` has work to do.
    pub fn next_deadline(&self) -> Option<Duration> {
        match self.state {
            State::Master => self.adver_timer,
            State::Backup => {
                let p = self.preempt.map(|p| p.deadline);
                match (self.master_down_timer, p) {
                    (Some(a), Some(b)) => Some(a.min(b)),
                    (a, b) => a.or(b),
                }
            }
            State::Initialize | State::Fault => None,
        }
    }

    /// RFC 5798 §6.4.1. Only acts from Initialize; a pending fault parks the
    /// machine in Fault instead.
    pub fn startup(&mut self, now: Duration) -> Vec<Action> {
        if self.state != State::Initialize {
            return Vec::new();
        }
        if self.fault {
            return vec![self.transition(State::Fault)];
        }
        self.start(now)
    }

    fn start(&mut self, now: Duration) -> Vec<Action> {
        if self.priority == OWNER_PRIORITY {
            self.become_master(now)
        } else {
            self.master_adver_interval = self.config.advert_interval;
            let from = self.enter_backup();
            self.master_down_timer = Some(after(now, self.master_down_interval()));
            vec![Action::StateChanged {
                from,
                to: State::Backup,
            }]
        }
    }

    /// RFC 5798 §6.4.2/§6.4.3 Shutdown. Master announces its departure with
    /// priority 0 so backups take over after Skew_Time.
    pub fn shutdown(&mut self, _now: Duration) -> Vec<Action> {
        self.stop(State::Initialize)
    }

    /// Enters or leaves Fault. Leaving behaves like startup.
    pub fn set_fault(&mut self, now: Duration, fault: bool) -> Vec<Action> {
        self.fault = fault;
        match (fault, self.state) {
            (true, State::Master | State::Backup) => self.stop(State::Fault),
            (false, State::Fault) => self.start(now),
            _ => Vec::new(),
        }
    }

    fn stop(&mut self, to: State) -> Vec<Action> {
        let was = self.state;
        if was == to || was == State::Initialize {
            return Vec::new();
        }
        let mut out = vec![self.transition(to)];
        if was == State::Master {
            out.push(Action::SendAdvert { priority: 0 });
            out.push(Action::ReleaseAddresses);
        }
        out
    }

    /// Sets the effective priority (e.g. from tracking), clamped to 1..=254.
    /// The owner's 255 is fixed.
    pub fn set_priority(&mut self, now: Duration, priority: u8) -> Vec<Action> {
        if self.config.priority == OWNER_PRIORITY {
            return Vec::new();
        }
        let new = priority.clamp(1, OWNER_PRIORITY - 1);
        if new == self.priority {
            return Vec::new();
        }
        let old_skew = self.skew_time();
        self.priority = new;
        match self.state {
            State::Master => {
                // Advertise at once so a preempting backup reacts to a drop
                // without waiting a full interval.
                self.adver_timer = Some(after(now, self.config.advert_interval));
                vec![Action::SendAdvert { priority: new }]
            }
            State::Backup => {
                // Both Master_Down_Interval and Skew_Time change by exactly
                // the skew delta, so shifting the armed timer keeps it
                // measured from the last advert (or priority-0 advert).
                let new_skew = self.skew_time();
                if let Some(t) = self.master_down_timer {
                    self.master_down_timer = Some(if new_skew >= old_skew {
                        t.saturating_add(new_skew - old_skew)
                    } else {
                        t.saturating_sub(old_skew - new_skew)
                    });
                }
                // A lower master we no longer outrank cannot be preempted.
                if self.preempt.is_some_and(|p| new <= p.peer_priority) {
                    self.preempt = None;
                }
                Vec::new()
            }
            State::Initialize | State::Fault => Vec::new(),
        }
    }

    /// Planned handover to this node: a Backup raises its priority just above the
    /// current master's and becomes Master now: it takes and announces the addresses, so
    /// new connections come here, but holds its first advert for one advert interval (at
    /// most [`MAX_TAKEOVER_DRAIN`]). Until that advert makes the old master yield, it
    /// keeps the addresses too and can still answer the requests it is serving (a node
    /// that drops an address cannot send from it any more); the old master's adverts
    /// are ignored meanwhile. Returns nothing unless Backup. The raised priority stays
    /// (a later takeover elsewhere goes above it).
    pub fn takeover(&mut self, now: Duration) -> Vec<Action> {
        if self.state != State::Backup {
            return Vec::new();
        }
        if self.config.priority != OWNER_PRIORITY {
            let above_master = self
                .last_master_priority
                .map_or(self.priority, |p| p.saturating_add(1));
            self.priority = self.priority.max(above_master).min(OWNER_PRIORITY - 1);
        }
        let mut actions = self.become_master(now);
        actions.retain(|a| !matches!(a, Action::SendAdvert { .. }));
        self.adver_timer = Some(after(
            now,
            self.config.advert_interval.min(MAX_TAKEOVER_DRAIN),
        ));
        self.draining = true;
        actions
    }

    /// A master that has handed its addresses over (its priority-0 advert was answered,
    /// or nobody answered in time) becomes Backup and lets them go. With no successor it
    /// takes them back when Master_Down_Interval passes, like any backup. Returns
    /// nothing unless Master.
    pub fn resign(&mut self, now: Duration) -> Vec<Action> {
        if self.state != State::Master {
            return Vec::new();
        }
        self.draining = false;
        let from = self.enter_backup();
        self.master_down_timer = Some(after(now, self.master_down_interval()));
        vec![
            Action::StateChanged {
                from,
                to: State::Backup,
            },
            Action::ReleaseAddresses,
        ]
    }

    /// Handles a received, already validated advertisement.
    ///
    /// `max_advert_interval` is the interval carried in the packet (used
    /// only by v3). Adverts from our own primary address are looped-back
    /// copies of our own and are ignored.
    pub fn on_advert(
        &mut self,
        now: Duration,
        priority: u8,
        max_advert_interval: Duration,
        src: IpAddr,
    ) -> Vec<Action> {
        if src == self.config.primary_address {
            return Vec::new();
        }
        match self.state {
            State::Backup => self.backup_advert(now, priority, max_advert_interval),
            State::Master => self.master_advert(now, priority, max_advert_interval, src),
            State::Initialize | State::Fault => Vec::new(),
        }
    }

    // RFC 5798 §6.4.2, extended with preempt_delay.
    //
    // Preempt delay rule (preempt && preempt_delay > 0): the first advert
    // from a lower-priority master arms a deadline at now + preempt_delay
    // and is accepted like any other (resets Master_Down_Timer, learns the
    // interval), so the down timer does not preempt early. Further lower
    // adverts are accepted without moving the deadline. When the deadline
    // passes, on_timer makes us Master. An advert with priority >= ours, a
    // priority-0 advert, a priority change that stops us outranking the
    // master, or leaving Backup cancels it. Lower adverts that arrive after
    // the deadline (before on_timer runs) are discarded as in the RFC. If
    // the lower master goes silent the down timer still fires as usual.
    fn backup_advert(&mut self, now: Duration, priority: u8, interval: Duration) -> Vec<Action> {
        if priority == 0 {
            self.preempt = None;
            self.master_down_timer = Some(after(now, self.skew_time()));
            return Vec::new();
        }
        self.last_master_priority = Some(priority);
        let lower = priority < self.priority;
        if self.config.preempt && lower {
            if self.config.preempt_delay.is_zero() {
                return Vec::new();
            }
            match self.preempt {
                None => {
                    self.preempt = Some(Preempt {
                        deadline: after(now, self.config.preempt_delay),
                        peer_priority: priority,
                    });
                }
                Some(p) if now >= p.deadline => return Vec::new(),
                Some(mut p) => {
                    // Track the latest peer priority for set_priority.
                    p.peer_priority = priority;
                    self.preempt = Some(p);
                }
            }
        } else if !lower {
            self.preempt = None;
        }
        self.learn_interval(interval);
        self.master_down_timer = Some(after(now, self.master_down_interval()));
        Vec::new()
    }

    // RFC 5798 §6.4.3.
    fn master_advert(
        &mut self,
        now: Duration,
        priority: u8,
        interval: Duration,
        src: IpAddr,
    ) -> Vec<Action> {
        if priority == 0 {
            self.draining = false;
            self.adver_timer = Some(after(now, self.config.advert_interval));
            return vec![Action::SendAdvert {
                priority: self.priority,
            }];
        }
        if self.draining && priority < self.priority {
            // The master a planned takeover is draining: it yields on our first advert.
            return Vec::new();
        }
        // IpAddr's ordering is numeric within a family.
        let peer_wins = priority > self.priority
            || (priority == self.priority && src > self.config.primary_address);
        let split = Action::SplitBrain {
            kept: !peer_wins,
            peer: src,
            peer_priority: priority,
        };
        if !peer_wins {
            // The other side may have taken the clients' ARP caches while it believed
            // itself master: advertise now and announce the addresses again (as
            // keepalived does), so they come back here at once.
            self.adver_timer = Some(after(now, self.config.advert_interval));
            return vec![
                split,
                Action::SendAdvert {
                    priority: self.priority,
                },
                Action::Announce,
            ];
        }
        self.learn_interval(interval);
        let from = self.enter_backup();
        self.master_down_timer = Some(after(now, self.master_down_interval()));
        // One last advert at our own, lower priority (beyond the RFC): the winner may
        // never have heard us, and it is the cue for it to announce the addresses
        // again to clients that followed us during the split.
        vec![
            split,
            Action::StateChanged {
                from,
                to: State::Backup,
            },
            Action::SendAdvert {
                priority: self.priority,
            },
            Action::ReleaseAddresses,
        ]
    }

    fn learn_interval(&mut self, interval: Duration) {
        // v2 adverts must carry our own interval, so nothing to learn; a
        // zero interval would be nonsense and is ignored.
        if self.config.version == Version::V3 && !interval.is_zero() {
            self.master_adver_interval = interval;
        }
    }

    /// Fires whichever timers are due at `now`.
    pub fn on_timer(&mut self, now: Duration) -> Vec<Action> {
        match self.state {
            State::Master => match self.adver_timer {
                Some(t) if t <= now => {
                    self.adver_timer = Some(after(now, self.config.advert_interval));
                    let advert = Action::SendAdvert {
                        priority: self.priority,
                    };
                    if std::mem::take(&mut self.draining) {
                        // The old master lets go now; clients it pulled back while both
                        // held the addresses come here again.
                        vec![advert, Action::Announce]
                    } else {
                        vec![advert]
                    }
                }
                _ => Vec::new(),
            },
            State::Backup => {
                let down = self.master_down_timer.is_some_and(|t| t <= now);
                let preempt = self.preempt.is_some_and(|p| p.deadline <= now);
                if down || preempt {
                    self.become_master(now)
                } else {
                    Vec::new()
                }
            }
            State::Initialize | State::Fault => Vec::new(),
        }
    }

    fn become_master(&mut self, now: Duration) -> Vec<Action> {
        let from = self.transition(State::Master);
        self.adver_timer = Some(after(now, self.config.advert_interval));
        vec![
            from,
            Action::SendAdvert {
                priority: self.priority,
            },
            Action::TakeAddresses,
        ]
    }

    fn enter_backup(&mut self) -> State {
        let from = self.state;
        self.transition(State::Backup);
        from
    }

    // Clears every timer; the caller arms what the new state needs.
    fn transition(&mut self, to: State) -> Action {
        let from = self.state;
        self.state = to;
        self.adver_timer = None;
        self.master_down_timer = None;
        self.preempt = None;
        self.last_master_priority = None;
        self.draining = false;
        Action::StateChanged { from, to }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A v3 backup (100, 100 ms) of 192.0.2.1 at 150, after one advert from it.
    fn backup_of_150() -> Machine {
        let mut m = Machine::new(Config {
            version: Version::V3,
            priority: 100,
            advert_interval: Duration::from_millis(100),
            preempt: false,
            preempt_delay: Duration::ZERO,
            accept_mode: true,
            primary_address: IpAddr::from([192, 0, 2, 2]),
        });
        let t0 = Duration::ZERO;
        m.startup(t0);
        m.on_advert(
            t0,
            150,
            Duration::from_millis(100),
            IpAddr::from([192, 0, 2, 1]),
        );
        m
    }

    const OLD_MASTER: [u8; 4] = [192, 0, 2, 1];

    #[test]
    fn takeover_outranks_the_current_master_and_takes_the_addresses_at_once() {
        let mut m = backup_of_150();
        let actions = m.takeover(Duration::from_millis(5));
        assert_eq!(m.state(), State::Master);
        assert_eq!(m.effective_priority(), 151);
        assert_eq!(
            actions,
            vec![
                Action::StateChanged {
                    from: State::Backup,
                    to: State::Master
                },
                Action::TakeAddresses,
            ]
        );
        // The first advert waits one interval: the old master drains until then.
        assert_eq!(m.next_deadline(), Some(Duration::from_millis(105)));
        // Not a Backup any more: nothing to do.
        assert!(m.takeover(Duration::from_millis(6)).is_empty());
    }

    #[test]
    fn takeover_drains_the_old_master_then_makes_it_yield() {
        let ms = Duration::from_millis;
        let old = IpAddr::from(OLD_MASTER);
        let mut m = backup_of_150();
        m.takeover(ms(5));
        // The old master still advertises while it drains: no split-brain reply.
        assert_eq!(m.on_advert(ms(50), 150, ms(100), old), vec![]);
        assert_eq!(m.on_timer(ms(104)), vec![]);
        assert_eq!(
            m.on_timer(ms(105)),
            vec![Action::SendAdvert { priority: 151 }, Action::Announce]
        );
        // After the drain a lower master is a split brain again.
        assert_eq!(
            m.on_advert(ms(120), 150, ms(100), old),
            vec![
                Action::SplitBrain {
                    kept: true,
                    peer: old,
                    peer_priority: 150
                },
                Action::SendAdvert { priority: 151 },
                Action::Announce,
            ]
        );
        assert_eq!(
            m.on_timer(ms(220)),
            vec![Action::SendAdvert { priority: 151 }]
        );
    }

    #[test]
    fn takeover_drain_ends_early_when_the_old_master_stops_or_a_higher_one_speaks() {
        let ms = Duration::from_millis;
        let old = IpAddr::from(OLD_MASTER);
        let mut m = backup_of_150();
        m.takeover(ms(5));
        assert_eq!(
            m.on_advert(ms(30), 0, ms(100), old),
            vec![Action::SendAdvert { priority: 151 }]
        );
        assert_eq!(
            m.on_timer(ms(130)),
            vec![Action::SendAdvert { priority: 151 }]
        );

        let mut m = backup_of_150();
        m.takeover(ms(5));
        let higher = IpAddr::from([192, 0, 2, 3]);
        let actions = m.on_advert(ms(30), 200, ms(100), higher);
        assert_eq!(m.state(), State::Backup);
        assert!(actions.contains(&Action::ReleaseAddresses), "{actions:?}");
    }

    #[test]
    fn a_resigning_master_becomes_backup_and_takes_back_only_if_nobody_answers() {
        let ms = Duration::from_millis;
        let mut m = backup_of_150();
        assert!(m.resign(ms(1)).is_empty(), "only a master resigns");
        m.takeover(ms(5));
        m.set_priority(ms(6), 1);
        assert_eq!(
            m.resign(ms(10)),
            vec![
                Action::StateChanged {
                    from: State::Master,
                    to: State::Backup
                },
                Action::ReleaseAddresses,
            ]
        );
        // A successor's adverts keep it Backup, even lower ones once it is at 1...
        let successor = IpAddr::from(OLD_MASTER);
        assert_eq!(m.on_advert(ms(100), 150, ms(100), successor), vec![]);
        assert_eq!(m.on_timer(ms(300)), vec![]);
        // ...and with nobody left it takes the addresses back after Master_Down_Interval.
        let down = ms(100) + m.master_down_interval();
        assert_eq!(m.next_deadline(), Some(down));
        let actions = m.on_timer(down);
        assert_eq!(m.state(), State::Master);
        assert!(actions.contains(&Action::TakeAddresses), "{actions:?}");
    }

    #[test]
    fn takeover_drain_is_at_most_a_second() {
        let mut m = Machine::new(Config {
            version: Version::V2,
            priority: 100,
            advert_interval: Duration::from_secs(3),
            preempt: true,
            preempt_delay: Duration::ZERO,
            accept_mode: true,
            primary_address: IpAddr::from([192, 0, 2, 2]),
        });
        m.startup(Duration::ZERO);
        m.on_advert(
            Duration::ZERO,
            150,
            Duration::from_secs(3),
            IpAddr::from(OLD_MASTER),
        );
        m.takeover(Duration::from_secs(1));
        assert_eq!(m.next_deadline(), Some(Duration::from_secs(2)));
    }

    #[test]
    fn skew_is_exact_fraction_of_interval() {
        let i = Duration::from_millis(1000);
        assert_eq!(
            skew_time(Version::V3, 255, i),
            Duration::from_nanos(3_906_250)
        );
        assert_eq!(skew_time(Version::V3, 128, i), Duration::from_millis(500));
        assert_eq!(
            skew_time(Version::V3, 1, i),
            Duration::from_nanos(996_093_750)
        );
    }

    #[test]
    fn v2_skew_ignores_interval() {
        let a = skew_time(Version::V2, 100, Duration::from_secs(1));
        let b = skew_time(Version::V2, 100, Duration::from_secs(7));
        assert_eq!(a, b);
        assert_eq!(a, Duration::from_micros(609_375));
    }

    #[test]
    fn master_down_is_three_intervals_plus_skew() {
        let i = Duration::from_millis(100);
        assert_eq!(
            master_down_interval(Version::V3, 192, i),
            Duration::from_millis(325)
        );
        assert_eq!(
            master_down_interval(Version::V2, 192, Duration::from_secs(2)),
            Duration::from_millis(6250)
        );
    }

    #[test]
    fn huge_interval_does_not_overflow() {
        let d = master_down_interval(Version::V3, 1, Duration::MAX);
        assert_eq!(d, Duration::MAX);
    }

    #[test]
    fn zero_priority_and_interval_are_clamped() {
        let m = Machine::new(Config {
            version: Version::V3,
            priority: 0,
            advert_interval: Duration::ZERO,
            preempt: true,
            preempt_delay: Duration::ZERO,
            accept_mode: false,
            primary_address: IpAddr::from([10, 0, 0, 1]),
        });
        assert_eq!(m.effective_priority(), 1);
        assert_eq!(m.master_adver_interval(), MIN_INTERVAL);
    }
}
