//! `tokentap.agent.start_time`: when this agent process started (unix seconds). Counters start
//! from 0 with each agent process; a backend's reader (`tokentap report --prometheus`) sees a
//! restart as a change of this value even when a counter is already above its old value at the
//! first scrape after the restart (which a drop of the counter alone cannot show).
use std::time::{SystemTime, UNIX_EPOCH};

use opentelemetry::metrics::Meter;

pub fn register(meter: &Meter) {
    // Milliseconds: two runs started within one second stay apart.
    let started = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as f64 / 1000.0).unwrap_or(0.0);
    meter
        .f64_observable_gauge("tokentap.agent.start_time")
        .with_unit("s")
        .with_description("When this agent process started, unix seconds (counters restart from 0 with it)")
        .with_callback(move |o| o.observe(started, &[]))
        .build();
}
