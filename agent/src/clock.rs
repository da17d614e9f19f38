//! Turning the kernel's monotonic timestamps into wall-clock time.
use time::{format_description::well_known::Rfc3339, OffsetDateTime};

pub struct Clock {
    /// Realtime minus monotonic, in nanoseconds, measured at start.
    offset_ns: i128,
}

fn now_ns(clock: libc::clockid_t) -> i128 {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: valid pointer to a timespec.
    unsafe { libc::clock_gettime(clock, &mut ts) };
    ts.tv_sec as i128 * 1_000_000_000 + ts.tv_nsec as i128
}

impl Clock {
    pub fn new() -> Clock {
        Clock { offset_ns: now_ns(libc::CLOCK_REALTIME) - now_ns(libc::CLOCK_MONOTONIC) }
    }

    /// `bpf_ktime_get_ns` uses CLOCK_MONOTONIC.
    pub fn monotonic_now_ns(&self) -> u64 {
        now_ns(libc::CLOCK_MONOTONIC) as u64
    }

    pub fn rfc3339(&self, monotonic_ns: u64) -> String {
        let wall = monotonic_ns as i128 + self.offset_ns;
        OffsetDateTime::from_unix_timestamp_nanos(wall).ok().and_then(|t| t.format(&Rfc3339).ok()).unwrap_or_default()
    }
}

impl Default for Clock {
    fn default() -> Self {
        Self::new()
    }
}
