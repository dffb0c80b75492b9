//! Per-thread free lists of I/O buffers: a connection holds a buffer only while a message
//! is in flight, so idle connections cost no buffer and busy ones allocate nothing.

use std::cell::RefCell;

/// Buffer for a request head; grown (and then not pooled) for the rare larger one.
pub const HEAD: usize = 4 * 1024;
/// Buffer for response heads and HTTP bodies (HAProxy's bufsize).
pub const SMALL: usize = 16 * 1024;
/// Buffer for L4 streams and tunnels: fewer system calls for bulk transfers.
pub const LARGE: usize = 64 * 1024;
const SIZES: [usize; 3] = [HEAD, SMALL, LARGE];
/// Buffers kept per size per thread while busy; more are freed.
const KEEP: usize = 32;
/// Buffers kept per size per thread once traffic has calmed down (see `shrink`).
const KEEP_IDLE: usize = 4;

thread_local! {
    static FREE: RefCell<[Vec<Vec<u8>>; 3]> =
        const { RefCell::new([Vec::new(), Vec::new(), Vec::new()]) };
}

fn class(capacity: usize) -> Option<usize> {
    SIZES.iter().position(|&s| s == capacity)
}

/// An empty buffer with room for exactly `capacity` bytes (`HEAD`, `SMALL` or `LARGE`).
pub fn take(capacity: usize) -> Vec<u8> {
    class(capacity)
        .and_then(|c| FREE.with(|free| free.borrow_mut()[c].pop()))
        .unwrap_or_else(|| Vec::with_capacity(capacity))
}

/// Hands a buffer back for reuse.
pub fn give(mut buf: Vec<u8>) {
    let Some(c) = class(buf.capacity()) else {
        return;
    };
    buf.clear();
    FREE.with(|free| {
        let list = &mut free.borrow_mut()[c];
        if list.len() < KEEP {
            list.push(buf);
        }
    });
}

/// Frees what this thread keeps beyond a few buffers per size; run when traffic is low
/// so memory goes back after a peak.
pub fn shrink() {
    FREE.with(|free| {
        for list in free.borrow_mut().iter_mut() {
            list.truncate(KEEP_IDLE);
            list.shrink_to_fit();
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buffers_are_reused_and_bounded() {
        let a = take(SMALL);
        let ptr = a.as_ptr();
        give(a);
        let b = take(SMALL);
        assert_eq!(b.as_ptr(), ptr);
        assert!(b.is_empty() && b.capacity() >= SMALL);
        let many: Vec<_> = (0..KEEP + 10).map(|_| take(LARGE)).collect();
        many.into_iter().for_each(give);
        FREE.with(|f| assert_eq!(f.borrow()[2].len(), KEEP));
        shrink();
        FREE.with(|f| assert_eq!(f.borrow()[2].len(), KEEP_IDLE));
        // A buffer that grew past its class is not kept.
        let mut grown = take(SMALL);
        grown.reserve(SMALL * 2);
        give(grown);
    }
}
