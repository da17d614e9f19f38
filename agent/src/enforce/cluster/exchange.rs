//! The engine's side of the cluster sync: this node's settled usage of every cluster
//! entitlement goes out, the other nodes' usage comes back into the budgets. Called from the
//! event loop; it only touches memory (the Redis round trips are the sync thread's).
use std::hash::Hash;

use super::{Cluster, Share};
use crate::enforce::{budget::Budgets, policy::Scope};

/// Publishes this node's usage and sets each cluster counter's remote share from the last
/// sync; in `fail_mode = "closed"` with Redis down past the bound the remote share is the
/// whole limit (the entitlement is exhausted until Redis answers). Returns whether a remote
/// share changed, i.e. whether verdicts must be recomputed.
pub fn exchange<K: Eq + Hash + Clone>(cluster: &Cluster, budgets: &mut Budgets<K>) -> bool {
    let mut shares = Vec::new();
    let mut remotes = Vec::new();
    for c in budgets.counters().iter().filter(|c| c.entitlement.scope == Scope::Cluster) {
        let bounds = c.bounds();
        let share = Share {
            entitlement: c.entitlement.name.clone(),
            window_start: bounds.start.as_second(),
            window_end: bounds.end.as_second(),
            value: c.local_used(),
        };
        let remote = cluster.others(&share.entitlement, share.window_start).unwrap_or(c.limit());
        let current = c.used() - c.local_used();
        if remote != current {
            remotes.push((share.entitlement.clone(), bounds.start, remote));
        }
        shares.push(share);
    }
    if !shares.is_empty() {
        cluster.publish(shares);
    }
    let changed = !remotes.is_empty();
    for (name, start, remote) in remotes {
        budgets.set_remote(&name, start, remote);
    }
    changed
}
