//! Transition vectors for the RFC 5798 §6 state machine.
//!
//! Unless a row says otherwise: v3, 1000 ms interval, local priority 192,
//! so Skew_Time = 64/256 s = 250 ms and Master_Down_Interval = 3250 ms.

use std::net::{IpAddr, Ipv4Addr};
use std::time::Duration;

use halo_dataplane::vrrp::machine::{Action, Config, Machine, State, Version};

// Numerically 10.0.0.10 > 10.0.0.9 although it sorts lower as a string.
const LOCAL: IpAddr = IpAddr::V4(Ipv4Addr::new(10, 0, 0, 9));
const HI: IpAddr = IpAddr::V4(Ipv4Addr::new(10, 0, 0, 10));
const LO: IpAddr = IpAddr::V4(Ipv4Addr::new(10, 0, 0, 8));

#[derive(Debug, Clone, Copy)]
enum In {
    Startup,
    Shutdown,
    Timer,
    Advert { prio: u8, int_ms: u64, src: IpAddr },
    SetPriority(u8),
    Fault(bool),
}

struct Cfg {
    priority: u8,
    preempt: bool,
    preempt_delay_ms: u64,
    interval_ms: u64,
    version: Version,
}

struct Step {
    at_ms: u64,
    input: In,
    state: State,
    actions: Vec<Action>,
    next_ms: Option<u64>,
}

struct Vector {
    name: &'static str,
    cfg: Cfg,
    steps: Vec<Step>,
}

use Action::{ReleaseAddresses as RELEASE, TakeAddresses as TAKE};
use In::{Fault, SetPriority, Shutdown, Startup, Timer};
use State::{Backup as B, Fault as F, Initialize as I, Master as M};

fn cfg(
    priority: u8,
    preempt: bool,
    preempt_delay_ms: u64,
    interval_ms: u64,
    version: Version,
) -> Cfg {
    Cfg {
        priority,
        preempt,
        preempt_delay_ms,
        interval_ms,
        version,
    }
}

fn std_cfg() -> Cfg {
    cfg(192, true, 0, 1000, Version::V3)
}

fn adv(prio: u8, int_ms: u64, src: IpAddr) -> In {
    In::Advert { prio, int_ms, src }
}

fn step(at_ms: u64, input: In, state: State, actions: Vec<Action>, next_ms: Option<u64>) -> Step {
    Step {
        at_ms,
        input,
        state,
        actions,
        next_ms,
    }
}

fn sc(from: State, to: State) -> Action {
    Action::StateChanged { from, to }
}

fn send(priority: u8) -> Action {
    Action::SendAdvert { priority }
}

fn split(kept: bool, peer: IpAddr, peer_priority: u8) -> Action {
    Action::SplitBrain {
        kept,
        peer,
        peer_priority,
    }
}

fn to_master(from: State, prio: u8) -> Vec<Action> {
    vec![sc(from, M), send(prio), TAKE]
}

// Brings a priority-192 node to Master via the down timer at 3250 ms.
fn become_master() -> Vec<Step> {
    vec![
        step(0, Startup, B, vec![sc(I, B)], Some(3250)),
        step(3250, Timer, M, to_master(B, 192), Some(4250)),
    ]
}

fn with(mut prefix: Vec<Step>, rest: Vec<Step>) -> Vec<Step> {
    prefix.extend(rest);
    prefix
}

#[rustfmt::skip]
fn vectors() -> Vec<Vector> {
    vec![
        Vector {
            name: "startup priority 255 (owner) becomes master at once",
            cfg: cfg(255, true, 0, 1000, Version::V3),
            steps: vec![
                step(0, Startup, M, to_master(I, 255), Some(1000)),
                step(500, Timer, M, vec![], Some(1000)),
                step(1000, Timer, M, vec![send(255)], Some(2000)),
                step(2000, Timer, M, vec![send(255)], Some(3000)),
            ],
        },
        Vector {
            name: "startup priority < 255 becomes backup; repeat startup is a no-op",
            cfg: std_cfg(),
            steps: vec![
                step(0, Startup, B, vec![sc(I, B)], Some(3250)),
                step(10, Startup, B, vec![], Some(3250)),
            ],
        },
        Vector {
            name: "backup: master-down timer expiry makes it master",
            cfg: std_cfg(),
            steps: vec![
                step(0, Startup, B, vec![sc(I, B)], Some(3250)),
                step(3249, Timer, B, vec![], Some(3250)),
                step(3250, Timer, M, to_master(B, 192), Some(4250)),
                step(4250, Timer, M, vec![send(192)], Some(5250)),
            ],
        },
        Vector {
            name: "backup: higher-priority adverts reset the master-down timer",
            cfg: std_cfg(),
            steps: vec![
                step(0, Startup, B, vec![sc(I, B)], Some(3250)),
                step(1000, adv(224, 1000, HI), B, vec![], Some(4250)),
                step(2000, adv(224, 1000, HI), B, vec![], Some(5250)),
                step(5250, Timer, M, to_master(B, 192), Some(6250)),
            ],
        },
        Vector {
            name: "backup: priority 0 takes over after Skew_Time, not 3x interval",
            cfg: std_cfg(),
            steps: vec![
                step(0, Startup, B, vec![sc(I, B)], Some(3250)),
                step(500, adv(224, 1000, HI), B, vec![], Some(3750)),
                step(1000, adv(0, 1000, HI), B, vec![], Some(1250)),
                step(1250, Timer, M, to_master(B, 192), Some(2250)),
            ],
        },
        Vector {
            name: "backup v3 learns Master_Adver_Interval; master uses its own",
            cfg: std_cfg(),
            steps: vec![
                step(0, Startup, B, vec![sc(I, B)], Some(3250)),
                // 3 * 2000 + 64/256 * 2000 = 6500
                step(100, adv(224, 2000, HI), B, vec![], Some(6600)),
                // Priority 0 skew also uses the learned interval: 500 ms.
                step(1000, adv(0, 2000, HI), B, vec![], Some(1500)),
                step(1500, Timer, M, to_master(B, 192), Some(2500)),
            ],
        },
        Vector {
            name: "backup v2 ignores the advertised interval; skew is (256-p)/256 s",
            cfg: cfg(192, true, 0, 2000, Version::V2),
            steps: vec![
                // 3 * 2000 + 250 (v3 would give 6500)
                step(0, Startup, B, vec![sc(I, B)], Some(6250)),
                step(100, adv(224, 3000, HI), B, vec![], Some(6350)),
                step(1000, adv(0, 3000, HI), B, vec![], Some(1250)),
                step(1250, Timer, M, to_master(B, 192), Some(3250)),
            ],
        },
        Vector {
            name: "backup with preempt discards lower priority and takes over",
            cfg: std_cfg(),
            steps: vec![
                step(0, Startup, B, vec![sc(I, B)], Some(3250)),
                step(1000, adv(128, 1000, LO), B, vec![], Some(3250)),
                step(2000, adv(128, 1000, HI), B, vec![], Some(3250)),
                step(3250, Timer, M, to_master(B, 192), Some(4250)),
            ],
        },
        Vector {
            name: "backup without preempt accepts lower priority",
            cfg: cfg(192, false, 0, 1000, Version::V3),
            steps: vec![
                step(0, Startup, B, vec![sc(I, B)], Some(3250)),
                step(1000, adv(128, 1000, LO), B, vec![], Some(4250)),
                step(2000, adv(128, 1000, LO), B, vec![], Some(5250)),
                step(3250, Timer, B, vec![], Some(5250)),
            ],
        },
        Vector {
            name: "backup with preempt accepts equal priority (tie-break is master-only)",
            cfg: std_cfg(),
            steps: vec![
                step(0, Startup, B, vec![sc(I, B)], Some(3250)),
                step(1000, adv(192, 1000, LO), B, vec![], Some(4250)),
            ],
        },
        Vector {
            name: "preempt_delay: lower master tolerated until the deadline",
            cfg: cfg(192, true, 5000, 1000, Version::V3),
            steps: vec![
                step(0, Startup, B, vec![sc(I, B)], Some(3250)),
                // First lower advert arms the deadline at 6000.
                step(1000, adv(128, 1000, LO), B, vec![], Some(4250)),
                step(2000, adv(128, 1000, LO), B, vec![], Some(5250)),
                step(3000, adv(128, 1000, LO), B, vec![], Some(6000)),
                step(5000, adv(128, 1000, LO), B, vec![], Some(6000)),
                step(6000, Timer, M, to_master(B, 192), Some(7000)),
            ],
        },
        Vector {
            name: "preempt_delay: cancelled by a higher master, re-armed afresh",
            cfg: cfg(192, true, 5000, 1000, Version::V3),
            steps: vec![
                step(0, Startup, B, vec![sc(I, B)], Some(3250)),
                step(1000, adv(128, 1000, LO), B, vec![], Some(4250)),
                step(2000, adv(224, 1000, HI), B, vec![], Some(5250)),
                // New deadline 8000.
                step(3000, adv(128, 1000, LO), B, vec![], Some(6250)),
                step(5000, adv(128, 1000, LO), B, vec![], Some(8000)),
                step(6000, Timer, B, vec![], Some(8000)),
                step(8000, Timer, M, to_master(B, 192), Some(9000)),
            ],
        },
        Vector {
            name: "preempt_delay: a silent lower master still trips the down timer",
            cfg: cfg(192, true, 5000, 1000, Version::V3),
            steps: vec![
                step(0, Startup, B, vec![sc(I, B)], Some(3250)),
                step(1000, adv(128, 1000, LO), B, vec![], Some(4250)),
                step(4250, Timer, M, to_master(B, 192), Some(5250)),
            ],
        },
        Vector {
            name: "preempt_delay: lower advert after the deadline is discarded",
            cfg: cfg(192, true, 5000, 1000, Version::V3),
            steps: vec![
                step(0, Startup, B, vec![sc(I, B)], Some(3250)),
                step(1000, adv(128, 1000, LO), B, vec![], Some(4250)),
                step(3500, adv(128, 1000, LO), B, vec![], Some(6000)),
                step(6500, adv(128, 1000, LO), B, vec![], Some(6000)),
                step(6500, Timer, M, to_master(B, 192), Some(7500)),
            ],
        },
        Vector {
            name: "preempt_delay: dropping below the master's priority cancels it",
            cfg: cfg(192, true, 5000, 1000, Version::V3),
            steps: vec![
                step(0, Startup, B, vec![sc(I, B)], Some(3250)),
                step(1000, adv(128, 1000, LO), B, vec![], Some(4250)),
                // Priority 128: skew 500, timer 1000 + 3500.
                step(1500, SetPriority(128), B, vec![], Some(4500)),
                step(2000, adv(128, 1000, LO), B, vec![], Some(5500)),
            ],
        },
        Vector {
            name: "master yields to higher priority and learns its interval",
            cfg: std_cfg(),
            steps: with(become_master(), vec![
                // 3 * 2000 + 500 = 6500 after 3500.
                step(3500, adv(224, 2000, HI), B,
                     vec![split(false, HI, 224), sc(M, B), send(192), RELEASE], Some(10000)),
                step(10000, Timer, M, to_master(B, 192), Some(11000)),
            ]),
        },
        Vector {
            name: "master tie-break: equal priority, numerically higher peer wins",
            cfg: std_cfg(),
            steps: with(become_master(), vec![
                step(3500, adv(192, 1000, HI), B,
                     vec![split(false, HI, 192), sc(M, B), send(192), RELEASE], Some(6750)),
            ]),
        },
        Vector {
            name: "master tie-break: equal priority, lower peer loses",
            cfg: std_cfg(),
            steps: with(become_master(), vec![
                step(3500, adv(192, 1000, LO), M, vec![split(true, LO, 192), send(192), Action::Announce], Some(4500)),
                step(4500, Timer, M, vec![send(192)], Some(5500)),
            ]),
        },
        Vector {
            name: "master receiving priority 0 advertises immediately",
            cfg: std_cfg(),
            steps: with(become_master(), vec![
                step(3500, adv(0, 1000, HI), M, vec![send(192)], Some(4500)),
                step(4500, Timer, M, vec![send(192)], Some(5500)),
            ]),
        },
        Vector {
            name: "master keeps against lower priority and reports split brain",
            cfg: std_cfg(),
            steps: with(become_master(), vec![
                step(3500, adv(128, 1000, LO), M, vec![split(true, LO, 128), send(192), Action::Announce], Some(4500)),
                // Priority beats address.
                step(3600, adv(128, 1000, HI), M, vec![split(true, HI, 128), send(192), Action::Announce], Some(4600)),
            ]),
        },
        Vector {
            name: "master ignores its own looped-back advert",
            cfg: std_cfg(),
            steps: with(become_master(), vec![
                step(3500, adv(255, 1000, LOCAL), M, vec![], Some(4250)),
            ]),
        },
        Vector {
            name: "shutdown from master sends priority 0 and releases",
            cfg: std_cfg(),
            steps: with(become_master(), vec![
                step(4000, Shutdown, I, vec![sc(M, I), send(0), RELEASE], None),
                step(5000, Timer, I, vec![], None),
                step(5000, adv(224, 1000, HI), I, vec![], None),
                step(5000, Shutdown, I, vec![], None),
            ]),
        },
        Vector {
            name: "shutdown from backup cancels timers; startup again",
            cfg: std_cfg(),
            steps: vec![
                step(0, Startup, B, vec![sc(I, B)], Some(3250)),
                step(1000, Shutdown, I, vec![sc(B, I)], None),
                step(4000, Timer, I, vec![], None),
                step(5000, Startup, B, vec![sc(I, B)], Some(8250)),
            ],
        },
        Vector {
            name: "fault from master: priority 0, release, deaf until cleared",
            cfg: std_cfg(),
            steps: with(become_master(), vec![
                step(4000, Fault(true), F, vec![sc(M, F), send(0), RELEASE], None),
                step(4500, adv(128, 1000, LO), F, vec![], None),
                step(5000, Timer, F, vec![], None),
                step(5000, Startup, F, vec![], None),
                step(5000, SetPriority(100), F, vec![], None),
                // Priority 100 now: skew 609.375 ms is not whole ms, so go back.
                step(5000, SetPriority(192), F, vec![], None),
                step(6000, Fault(false), B, vec![sc(F, B)], Some(9250)),
            ]),
        },
        Vector {
            name: "fault from backup and back; repeated fault is a no-op",
            cfg: std_cfg(),
            steps: vec![
                step(0, Startup, B, vec![sc(I, B)], Some(3250)),
                step(100, Fault(true), F, vec![sc(B, F)], None),
                step(200, Fault(true), F, vec![], None),
                step(300, Fault(false), B, vec![sc(F, B)], Some(3550)),
                step(400, Fault(false), B, vec![], Some(3550)),
            ],
        },
        Vector {
            name: "owner leaving fault goes straight to master",
            cfg: cfg(255, true, 0, 1000, Version::V3),
            steps: vec![
                step(0, Startup, M, to_master(I, 255), Some(1000)),
                step(100, Fault(true), F, vec![sc(M, F), send(0), RELEASE], None),
                step(200, Fault(false), M, to_master(F, 255), Some(1200)),
            ],
        },
        Vector {
            name: "fault before startup parks in Fault; shutdown from Fault",
            cfg: std_cfg(),
            steps: vec![
                step(0, Fault(true), I, vec![], None),
                step(10, Startup, F, vec![sc(I, F)], None),
                step(20, Shutdown, I, vec![sc(F, I)], None),
                step(30, Startup, F, vec![sc(I, F)], None),
                step(40, Fault(false), B, vec![sc(F, B)], Some(3290)),
            ],
        },
        Vector {
            name: "set_priority on master advertises the new priority",
            cfg: std_cfg(),
            steps: with(become_master(), vec![
                step(3500, SetPriority(128), M, vec![send(128)], Some(4500)),
                step(3600, SetPriority(128), M, vec![], Some(4500)),
                step(4500, Timer, M, vec![send(128)], Some(5500)),
                // Now a 192 peer outranks us.
                step(4600, adv(192, 1000, LO), B,
                     vec![split(false, LO, 192), sc(M, B), send(128), RELEASE], Some(8100)),
            ]),
        },
        Vector {
            name: "set_priority on backup recomputes skew and the armed timer",
            cfg: std_cfg(),
            steps: vec![
                step(0, Startup, B, vec![sc(I, B)], Some(3250)),
                // Priority 128: skew 500 ms; timer still measured from 0.
                step(100, SetPriority(128), B, vec![], Some(3500)),
                step(1000, adv(224, 1000, HI), B, vec![], Some(4500)),
                // Priority 224: skew 125 ms.
                step(1100, SetPriority(224), B, vec![], Some(4125)),
                step(2000, adv(224, 1000, HI), B, vec![], Some(5125)),
                // Now outranking a 192 master with preempt: discard.
                step(3000, adv(192, 1000, HI), B, vec![], Some(5125)),
            ],
        },
        Vector {
            name: "owner priority is not changed by tracking",
            cfg: cfg(255, true, 0, 1000, Version::V3),
            steps: vec![
                step(0, Startup, M, to_master(I, 255), Some(1000)),
                step(100, SetPriority(100), M, vec![], Some(1000)),
                step(1000, Timer, M, vec![send(255)], Some(2000)),
            ],
        },
        Vector {
            name: "initialize ignores adverts and timers",
            cfg: std_cfg(),
            steps: vec![
                step(0, adv(224, 1000, HI), I, vec![], None),
                step(0, Timer, I, vec![], None),
                step(0, Shutdown, I, vec![], None),
            ],
        },
    ]
}

fn machine(c: &Cfg) -> Machine {
    Machine::new(Config {
        version: c.version,
        priority: c.priority,
        advert_interval: Duration::from_millis(c.interval_ms),
        preempt: c.preempt,
        preempt_delay: Duration::from_millis(c.preempt_delay_ms),
        accept_mode: false,
        primary_address: LOCAL,
    })
}

fn apply(m: &mut Machine, now: Duration, input: In) -> Vec<Action> {
    match input {
        Startup => m.startup(now),
        Shutdown => m.shutdown(now),
        Timer => m.on_timer(now),
        In::Advert { prio, int_ms, src } => {
            m.on_advert(now, prio, Duration::from_millis(int_ms), src)
        }
        SetPriority(p) => m.set_priority(now, p),
        Fault(f) => m.set_fault(now, f),
    }
}

#[test]
fn transition_vectors() {
    let table = vectors();
    for v in &table {
        let mut m = machine(&v.cfg);
        assert_eq!(m.state(), I, "{}: initial state", v.name);
        for (i, s) in v.steps.iter().enumerate() {
            let ctx = format!("{} / step {i} at {} ms: {:?}", v.name, s.at_ms, s.input);
            let got = apply(&mut m, Duration::from_millis(s.at_ms), s.input);
            assert_eq!(got, s.actions, "{ctx}: actions");
            assert_eq!(m.state(), s.state, "{ctx}: state");
            assert_eq!(
                m.next_deadline(),
                s.next_ms.map(Duration::from_millis),
                "{ctx}: next deadline"
            );
        }
    }
    assert_eq!(table.len(), 31);
}

// (version, priority, interval ms, Skew_Time ns, Master_Down_Interval ns)
#[rustfmt::skip]
const TIMING: &[(Version, u8, u64, u64, u64)] = &[
    (Version::V3, 1,   100,    99_609_375,    399_609_375),
    (Version::V3, 100, 100,    60_937_500,    360_937_500),
    (Version::V3, 254, 100,       781_250,    300_781_250),
    (Version::V3, 1,   1000,  996_093_750,  3_996_093_750),
    (Version::V3, 100, 1000,  609_375_000,  3_609_375_000),
    (Version::V3, 254, 1000,    7_812_500,  3_007_812_500),
    (Version::V2, 1,   1000,  996_093_750,  3_996_093_750),
    (Version::V2, 100, 1000,  609_375_000,  3_609_375_000),
    (Version::V2, 254, 1000,    7_812_500,  3_007_812_500),
    // v2 skew does not scale with the interval.
    (Version::V2, 100, 3000,  609_375_000,  9_609_375_000),
    (Version::V3, 100, 3000, 1_828_125_000, 10_828_125_000),
];

#[test]
fn skew_and_master_down_numbers() {
    for &(version, priority, int_ms, skew_ns, mdi_ns) in TIMING {
        let c = cfg(priority, true, 0, int_ms, version);
        let mut m = machine(&c);
        let ctx = format!("{version:?} p{priority} {int_ms} ms");
        assert_eq!(m.skew_time(), Duration::from_nanos(skew_ns), "{ctx}");
        assert_eq!(
            m.master_down_interval(),
            Duration::from_nanos(mdi_ns),
            "{ctx}"
        );
        // Startup arms exactly Master_Down_Interval.
        let t0 = Duration::from_secs(100);
        m.startup(t0);
        assert_eq!(
            m.next_deadline(),
            Some(t0 + Duration::from_nanos(mdi_ns)),
            "{ctx}"
        );
        // Priority 0 from the master: exactly Skew_Time.
        m.on_advert(t0, 0, Duration::from_millis(int_ms), LO);
        assert_eq!(
            m.next_deadline(),
            Some(t0 + Duration::from_nanos(skew_ns)),
            "{ctx}"
        );
    }
}

#[test]
fn free_timer_functions_match_accessors() {
    use halo_dataplane::vrrp::machine::{master_down_interval, skew_time};
    for &(version, priority, int_ms, skew_ns, mdi_ns) in TIMING {
        let i = Duration::from_millis(int_ms);
        assert_eq!(
            skew_time(version, priority, i),
            Duration::from_nanos(skew_ns)
        );
        assert_eq!(
            master_down_interval(version, priority, i),
            Duration::from_nanos(mdi_ns)
        );
    }
}

#[test]
fn skew_orders_backups_by_priority() {
    let i = Duration::from_millis(100);
    for v in [Version::V2, Version::V3] {
        for p in 1u8..255 {
            let a = halo_dataplane::vrrp::machine::master_down_interval(v, p, i);
            let b = halo_dataplane::vrrp::machine::master_down_interval(v, p + 1, i);
            assert!(b < a, "{v:?}: priority {} must time out first", p + 1);
        }
    }
}

#[test]
fn set_priority_clamps_to_non_owner_range() {
    let mut m = machine(&std_cfg());
    m.startup(Duration::ZERO);
    m.set_priority(Duration::ZERO, 255);
    assert_eq!(m.effective_priority(), 254);
    m.set_priority(Duration::ZERO, 0);
    assert_eq!(m.effective_priority(), 1);
}

#[test]
fn accept_mode_is_exposed() {
    let mut c = Config {
        version: Version::V3,
        priority: 100,
        advert_interval: Duration::from_secs(1),
        preempt: true,
        preempt_delay: Duration::ZERO,
        accept_mode: true,
        primary_address: LOCAL,
    };
    assert!(Machine::new(c.clone()).accept_mode());
    c.accept_mode = false;
    assert!(!Machine::new(c).accept_mode());
}

#[test]
fn master_down_learned_interval_is_exposed() {
    let mut m = machine(&std_cfg());
    m.startup(Duration::ZERO);
    m.on_advert(Duration::ZERO, 224, Duration::from_millis(500), HI);
    assert_eq!(m.master_adver_interval(), Duration::from_millis(500));
    assert_eq!(m.master_down_interval(), Duration::from_millis(1625));
}

mod invariants {
    use super::*;
    use proptest::prelude::*;

    pub const CASES: u32 = 3_000;

    fn any_input() -> impl Strategy<Value = In> {
        prop_oneof![
            1 => Just(Startup),
            1 => Just(Shutdown),
            6 => Just(Timer),
            6 => (any::<u8>(), 1u64..3000, prop_oneof![Just(HI), Just(LO), Just(LOCAL)])
                .prop_map(|(p, i, s)| adv(p, i, s)),
            2 => any::<u8>().prop_map(SetPriority),
            1 => any::<bool>().prop_map(Fault),
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(CASES))]

        // Addresses are held exactly while Master, StateChanged chains
        // correctly, and a timer due now is never left pending.
        #[test]
        fn random_event_sequences_keep_invariants(
            priority in 1u8..=255,
            preempt in any::<bool>(),
            delay_ms in prop_oneof![Just(0u64), 1u64..5000],
            version in prop_oneof![Just(Version::V2), Just(Version::V3)],
            ops in proptest::collection::vec((0u64..1500, any_input()), 1..60),
        ) {
            let mut m = machine(&cfg(priority, preempt, delay_ms, 1000, version));
            let mut now = Duration::ZERO;
            let mut held = false;
            let mut state = m.state();
            for (dt, input) in ops {
                now += Duration::from_millis(dt);
                for a in apply(&mut m, now, input) {
                    match a {
                        Action::TakeAddresses => {
                            prop_assert!(!held);
                            held = true;
                        }
                        Action::ReleaseAddresses => {
                            prop_assert!(held);
                            held = false;
                        }
                        Action::Announce => prop_assert!(held),
                        Action::StateChanged { from, to } => {
                            prop_assert_eq!(from, state);
                            prop_assert_ne!(from, to);
                            state = to;
                        }
                        Action::SendAdvert { priority: p } => {
                            prop_assert!(p == 0 || p == m.effective_priority());
                        }
                        Action::SplitBrain { .. } => {}
                    }
                }
                prop_assert_eq!(state, m.state());
                prop_assert_eq!(held, m.state() == M);
                if priority == 255 {
                    prop_assert_eq!(m.effective_priority(), 255);
                }
                if let Some(d) = m.next_deadline()
                    && d <= now
                {
                    // Only reachable when the input was not a timer tick.
                    prop_assert!(!matches!(input, Timer));
                }
            }
        }
    }
}
