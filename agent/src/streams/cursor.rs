//! Accounting for one direction of one connection: which bytes of each library call arrived.
//!
//! The kernel ships a call as ordered chunks and may drop some (ring buffer full) or all past
//! the per-call cap. The parser must then be told how many bytes it missed, so that framing
//! (Content-Length, chunk sizes) stays right; this turns chunk headers into those gaps.

/// What to feed the HTTP parser for one chunk: a gap, the chunk's bytes, another gap.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Feed {
    pub gap_before: u64,
    /// False for a duplicate or out-of-order chunk whose bytes must not be fed.
    pub use_data: bool,
    pub gap_after: u64,
}

#[derive(Debug, Default, Clone)]
pub struct CallCursor {
    call_len: u64,
    received: u64,
    active: bool,
}

impl CallCursor {
    /// `cap` is the per-call capture cap the kernel was configured with.
    pub fn on_chunk(&mut self, offset: u64, len: u64, call_len: u64, cap: u64) -> Feed {
        let mut feed = Feed { use_data: true, ..Feed::default() };
        if offset == 0 {
            // A new call: whatever the previous one still owed was lost.
            feed.gap_before = self.pending();
            *self = CallCursor { call_len, received: 0, active: true };
        } else if !self.active || call_len != self.call_len {
            // The call's first chunk was lost.
            feed.gap_before = self.pending();
            *self = CallCursor { call_len, received: 0, active: true };
        }
        if offset < self.received {
            feed.use_data = false;
            return feed;
        }
        feed.gap_before += offset - self.received;
        self.received = offset + len;
        let shipped = call_len.min(cap);
        if self.received >= shipped {
            feed.gap_after = call_len.saturating_sub(self.received);
            self.received = call_len;
            self.active = false;
        }
        feed
    }

    /// Bytes of the current call not yet accounted for (lost if no chunk follows).
    pub fn pending(&self) -> u64 {
        if self.active {
            self.call_len.saturating_sub(self.received)
        } else {
            0
        }
    }

    /// Declares the rest of the current call lost (the connection closed or went idle).
    pub fn take_pending(&mut self) -> u64 {
        let p = self.pending();
        self.active = false;
        p
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const CAP: u64 = 100;

    #[test]
    fn whole_calls_have_no_gaps() {
        let mut c = CallCursor::default();
        assert_eq!(c.on_chunk(0, 10, 10, CAP), Feed { gap_before: 0, use_data: true, gap_after: 0 });
        assert_eq!(c.on_chunk(0, 40, 80, CAP), Feed { gap_before: 0, use_data: true, gap_after: 0 });
        assert_eq!(c.pending(), 40);
        assert_eq!(c.on_chunk(40, 40, 80, CAP), Feed { gap_before: 0, use_data: true, gap_after: 0 });
        assert_eq!(c.pending(), 0);
    }

    #[test]
    fn truncated_call_reports_the_rest_as_gap() {
        let mut c = CallCursor::default();
        c.on_chunk(0, 50, 250, CAP);
        let f = c.on_chunk(50, 50, 250, CAP);
        assert_eq!(f.gap_after, 150);
        assert_eq!(c.pending(), 0);
    }

    #[test]
    fn lost_chunks_become_gaps() {
        let mut c = CallCursor::default();
        c.on_chunk(0, 10, 40, CAP);
        // chunk 10..20 lost
        assert_eq!(c.on_chunk(20, 10, 40, CAP).gap_before, 10);
        // tail 30..40 lost, then a new call
        assert_eq!(c.on_chunk(0, 5, 5, CAP).gap_before, 10);
        // a call whose first chunk was lost
        let f = c.on_chunk(10, 5, 20, CAP);
        assert_eq!(f.gap_before, 10);
        assert!(f.use_data);
        // a stale chunk from before what was already accounted
        assert!(!c.on_chunk(5, 1, 20, CAP).use_data);
        c.on_chunk(0, 10, 30, CAP);
        assert_eq!(c.take_pending(), 20);
        assert_eq!(c.pending(), 0);
    }
}
