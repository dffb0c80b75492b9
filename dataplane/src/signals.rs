//! SIGHUP, SIGTERM and SIGINT from the first instant of start-up: they are blocked before
//! the async runtime starts (its threads inherit the mask), and handled once the handlers
//! are installed, so a signal sent during start-up is kept, never the default "terminate".

use tokio::signal::unix::{Signal, SignalKind, signal};

fn stop_and_reload_set() -> libc::sigset_t {
    // SAFETY: sigemptyset/sigaddset only write the set we own.
    unsafe {
        let mut set = std::mem::zeroed::<libc::sigset_t>();
        libc::sigemptyset(&mut set);
        for sig in [libc::SIGHUP, libc::SIGTERM, libc::SIGINT] {
            libc::sigaddset(&mut set, sig);
        }
        set
    }
}

fn mask(how: libc::c_int) {
    let set = stop_and_reload_set();
    // SAFETY: pthread_sigmask reads a valid set; the old mask is not wanted.
    unsafe {
        libc::pthread_sigmask(how, &set, std::ptr::null_mut());
    }
}

/// Holds the signals pending on this thread (and on threads it starts from now on). Call
/// first thing in `main`, before the async runtime is built.
pub fn block() {
    mask(libc::SIG_BLOCK);
}

/// Default behaviour again on this thread (for the short-lived client commands).
pub fn unblock() {
    mask(libc::SIG_UNBLOCK);
}

/// The installed handlers.
pub struct Signals {
    hangup: Option<Signal>,
    terminate: Signal,
    interrupt: Signal,
}

impl Signals {
    /// Installs the handlers, then lets the signals through (a pending one is delivered
    /// now, to its handler). Must run on the thread that called [`block`], inside the
    /// runtime; its worker threads keep the signals blocked, so they all land here.
    pub fn install() -> std::io::Result<Self> {
        let signals = Self {
            hangup: Some(signal(SignalKind::hangup())?),
            terminate: signal(SignalKind::terminate())?,
            interrupt: signal(SignalKind::interrupt())?,
        };
        unblock();
        Ok(signals)
    }

    /// The SIGHUP stream, for the file watcher; left here, SIGHUP is caught and ignored.
    pub fn take_hangup(&mut self) -> Option<Signal> {
        self.hangup.take()
    }

    /// Waits for SIGTERM or SIGINT.
    pub async fn stopped(&mut self) {
        tokio::select! {
            _ = self.terminate.recv() => tracing::info!("SIGTERM: stopping"),
            _ = self.interrupt.recv() => tracing::info!("SIGINT: stopping"),
        }
    }
}
