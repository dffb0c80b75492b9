//! One event loop per core: each worker thread runs a current-thread runtime with its own
//! listening sockets (SO_REUSEPORT), connections and backend pools, so the request path
//! takes no lock another core contends for.

use std::cell::Cell;
use std::sync::OnceLock;

use tokio::runtime::Handle;
use tokio::sync::oneshot;

thread_local! {
    static INDEX: Cell<Option<usize>> = const { Cell::new(None) };
}

/// The number of workers, fixed for the process once the first pool is started.
static COUNT: OnceLock<usize> = OnceLock::new();

/// Worker count for this process: `--workers`, or the CPUs it may run on (affinity and
/// cgroup quota respected, as `available_parallelism` does).
pub fn default_count() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

/// How many workers there are (1 before any started, for code outside workers).
pub fn count() -> usize {
    COUNT.get().copied().unwrap_or(1)
}

/// The index of the worker this thread is, if it is one.
pub fn current() -> Option<usize> {
    INDEX.with(Cell::get)
}

/// How often a worker gives memory back after a peak.
const UPKEEP: std::time::Duration = std::time::Duration::from_secs(2);

/// Frees pooled buffers beyond a few, and (once for the process) returns freed heap
/// pages to the kernel, so RSS falls again after a burst of connections.
async fn upkeep(index: usize) {
    let mut tick = tokio::time::interval(UPKEEP);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        super::bufpool::shrink();
        if index == 0 {
            release_free_heap();
        }
    }
}

#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn release_free_heap() {
    // SAFETY: malloc_trim only walks the allocator's own free lists; any pad is valid.
    unsafe {
        libc::malloc_trim(0);
    }
}

/// Other allocators (musl's) give memory back by themselves.
#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn release_free_heap() {}

pub struct Workers {
    handles: Vec<Handle>,
    stops: Vec<oneshot::Sender<()>>,
}

impl Workers {
    /// Starts `n` worker threads (at least one).
    pub fn start(n: usize) -> std::io::Result<Self> {
        let n = *COUNT.get_or_init(|| n.max(1));
        let mut handles = Vec::with_capacity(n);
        let mut stops = Vec::with_capacity(n);
        for index in 0..n {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            handles.push(runtime.handle().clone());
            let (stop, stopped) = oneshot::channel::<()>();
            stops.push(stop);
            std::thread::Builder::new()
                .name(format!("halo-worker-{index}"))
                .spawn(move || {
                    INDEX.with(|i| i.set(Some(index)));
                    runtime.block_on(async {
                        tokio::select! {
                            _ = stopped => {}
                            () = upkeep(index) => {}
                        }
                    });
                })?;
        }
        Ok(Self { handles, stops })
    }

    pub fn len(&self) -> usize {
        self.handles.len()
    }

    pub fn is_empty(&self) -> bool {
        self.handles.is_empty()
    }

    pub fn handle(&self, index: usize) -> Option<&Handle> {
        self.handles.get(index)
    }
}

impl Drop for Workers {
    fn drop(&mut self) {
        for stop in self.stops.drain(..) {
            let _ = stop.send(());
        }
    }
}
