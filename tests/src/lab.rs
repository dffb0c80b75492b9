//! The guard every lab test starts with: it skips the test without root, fails it loudly
//! when a reference daemon the test needs is missing, and keeps timing-sensitive labs to
//! themselves.

use std::sync::{PoisonError, RwLock, RwLockReadGuard, RwLockWriteGuard};

/// A program a lab test needs besides iproute2.
#[derive(Debug, Clone, Copy)]
pub enum Tool {
    Keepalived,
    Haproxy,
    Nft,
}

impl Tool {
    fn available(self) -> bool {
        match self {
            Tool::Keepalived => crate::keepalived::available(),
            Tool::Haproxy => crate::haproxy::available(),
            Tool::Nft => std::process::Command::new("nft")
                .arg("--version")
                .output()
                .is_ok_and(|o| o.status.success()),
        }
    }

    fn package(self) -> &'static str {
        match self {
            Tool::Keepalived => "keepalived",
            Tool::Haproxy => "haproxy",
            Tool::Nft => "nftables",
        }
    }
}

/// Whether other lab tests of the same binary may run meanwhile.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Share {
    /// Beside other shared labs.
    Shared,
    /// Alone: the test asserts on handover or failover times, which should be those of
    /// the system under test and not of a machine starved by a neighbouring lab.
    Alone,
}

/// Held for the length of a lab test.
pub enum Entered {
    Shared(RwLockReadGuard<'static, ()>),
    Alone(RwLockWriteGuard<'static, ()>),
}

static LABS: RwLock<()> = RwLock::new(());

/// `None` (and a line saying why) when the machine cannot run lab tests; panics with
/// the install hint when one of `tools` is missing.
pub fn enter(tools: &[Tool], share: Share) -> Option<Entered> {
    if !crate::netns::available() {
        eprintln!("skipped: lab tests need root and iproute2");
        return None;
    }
    let missing: Vec<&str> = tools
        .iter()
        .filter(|t| !t.available())
        .map(|t| t.package())
        .collect();
    assert!(
        missing.is_empty(),
        "missing: apt-get install {} (scripts/install-test-deps.sh)",
        missing.join(" ")
    );
    Some(match share {
        Share::Shared => Entered::Shared(LABS.read().unwrap_or_else(PoisonError::into_inner)),
        Share::Alone => Entered::Alone(LABS.write().unwrap_or_else(PoisonError::into_inner)),
    })
}
