//! The sync thread: every `sync_interval` (sooner when a new window appears) one round trip
//! writes this node's shares and reads the cluster totals; while Redis is unreachable it
//! reconnects with a backoff capped at one second, so that a Redis back from a restart is seen
//! within about a second.
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use super::{store::Store, Shared, State, Synced, EXPIRY_MARGIN_MS};

const BACKOFF_FIRST: Duration = Duration::from_millis(100);
const BACKOFF_MAX: Duration = Duration::from_secs(1);

pub(super) fn run(shared: &Shared, mut store: Store) {
    let interval = shared.cfg.sync_interval;
    let mut backoff = BACKOFF_FIRST;
    let mut next = Instant::now();
    loop {
        let shares = {
            let mut st = shared.lock();
            loop {
                if st.stop {
                    return;
                }
                let now = Instant::now();
                // A new window is synced at once, but never faster than the backoff allows.
                let due = if st.urgent && store.connected() { now } else { next };
                if now >= due {
                    break;
                }
                st = shared.wake.wait_timeout(st, due - now).unwrap_or_else(|p| p.into_inner()).0;
            }
            st.urgent = false;
            prune(&mut st, unix_ms());
            st.shares.values().cloned().collect::<Vec<_>>()
        };
        let started = Instant::now();
        let result = store.sync(&shares);
        let mut st = shared.lock();
        match result {
            Ok(reply) => {
                if !st.health.up {
                    tracing::info!(node = %shared.cfg.node, "enforcement: Redis reachable, cluster totals synced");
                }
                let h = &mut st.health;
                h.up = true;
                h.syncs += 1;
                h.operations += reply.commands;
                h.last_success = Some(SystemTime::now());
                if let Some(e) = reply.bad_reply {
                    h.failures += 1;
                    h.last_error = Some(e);
                }
                // The totals describe Redis as it was when the round trip began.
                st.last_success_at = Some(started);
                for (share, total) in shares.into_iter().zip(reply.totals) {
                    if let Some(total) = total {
                        let id = (share.entitlement, share.window_start);
                        st.synced.insert(id, Synced { total, own: share.value });
                    }
                }
                backoff = BACKOFF_FIRST;
                next = started + interval;
            }
            Err(e) => {
                store.disconnect();
                let h = &mut st.health;
                if h.up || h.syncs == 0 && h.failures == 0 {
                    tracing::warn!(node = %shared.cfg.node, error = %e,
                        "enforcement: Redis unreachable, cluster entitlements follow fail_mode = {:?}",
                        shared.cfg.fail_mode);
                }
                h.up = false;
                h.failures += 1;
                h.last_error = Some(e.to_string());
                next = Instant::now() + backoff;
                backoff = (backoff * 2).min(BACKOFF_MAX);
            }
        }
        drop(st);
        shared.changes.send_modify(|g| *g = g.wrapping_add(1));
    }
}

/// Forgets windows whose key has expired in Redis: they can no longer change anything.
fn prune(st: &mut State, now_ms: i64) {
    let live = |window_end: i64| window_end.saturating_mul(1000).saturating_add(EXPIRY_MARGIN_MS) > now_ms;
    st.shares.retain(|_, s| live(s.window_end));
    let shares = &st.shares;
    st.synced.retain(|id, _| shares.contains_key(id));
}

fn unix_ms() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as i64)
}
