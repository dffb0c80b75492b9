//! Per-thread free lists of I/O buffers: a connection holds a buffer only while a message
//! is in flight, so idle connections cost no buffer and busy ones allocate nothing.

use std::cell::RefCell;

/// Buffer for message heads and HTTP bodies (HAProxy's bufsize).
pub const SMALL: usize = 16 * 1024;
/// Buffer for L4 streams and tunnels: fewer system calls for bulk transfers.
pub const LARGE: usize = 64 * 1024;
/// Buffers kept per size per thread; more are freed, so memory returns after a peak.
const KEEP: usize = 256;

thread_local! {
    static FREE: RefCell<[Vec<Vec<u8>>; 2]> = const { RefCell::new([Vec::new(), Vec::new()]) };
}

fn class(capacity: usize) -> usize {
    usize::from(capacity > SMALL)
}

/// An empty buffer with room for at least `capacity` bytes (`SMALL` or `LARGE`).
pub fn take(capacity: usize) -> Vec<u8> {
    FREE.with(|free| free.borrow_mut()[class(capacity)].pop())
        .unwrap_or_else(|| Vec::with_capacity(capacity))
}

/// Hands a buffer back for reuse.
pub fn give(mut buf: Vec<u8>) {
    let cap = buf.capacity();
    if cap != SMALL && cap != LARGE {
        return;
    }
    buf.clear();
    FREE.with(|free| {
        let list = &mut free.borrow_mut()[class(cap)];
        if list.len() < KEEP {
            list.push(buf);
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
        FREE.with(|f| assert_eq!(f.borrow()[1].len(), KEEP));
        // A buffer that grew past its class is not kept.
        let mut grown = take(SMALL);
        grown.reserve(SMALL * 2);
        give(grown);
    }
}
