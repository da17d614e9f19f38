//! Budgets: per entitlement, the usage settled in the current window, the estimates of calls
//! in flight (reservations, keyed by call), the warning state and the overrun. Amounts are
//! integers (tokens, requests or pico-USD): no float ever decides a verdict.
use std::collections::{BTreeMap, HashMap};
use std::hash::Hash;

use jiff::Timestamp;

use super::policy::{Entitlement, Labels, LimitKind, Policy};
pub use super::status::State;
use super::window::{minute_of, Bounds};

/// What a call used, or is estimated to use.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Usage {
    pub input_tokens: u64,
    pub output_tokens: u64,
    pub requests: u64,
    /// Exact cost in pico-USD (0 when the model is not priced).
    pub cost_pico: u128,
}

impl Usage {
    /// One call's worth: a request and its tokens.
    pub fn call(input_tokens: u64, output_tokens: u64, cost_pico: u128) -> Usage {
        Usage { input_tokens, output_tokens, requests: 1, cost_pico }
    }

    pub fn amount(&self, kind: LimitKind) -> u128 {
        match kind {
            LimitKind::TotalTokens => u128::from(self.input_tokens) + u128::from(self.output_tokens),
            LimitKind::InputTokens => u128::from(self.input_tokens),
            LimitKind::OutputTokens => u128::from(self.output_tokens),
            LimitKind::CostUsd => self.cost_pico,
            LimitKind::Requests => u128::from(self.requests),
        }
    }
}

/// How tightly an entitlement's targets must be held (the kernel mode follows from it and
/// the action): free, every request approved one by one, or refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Level {
    Free,
    Gate,
    Exhausted,
}

/// One entitlement's counters.
#[derive(Debug, Clone)]
pub struct Counter<K> {
    pub entitlement: Entitlement,
    bounds: Bounds,
    /// Fixed windows: the window's total. Sliding windows: the sum of `buckets`.
    used: u128,
    /// Sliding windows: usage per minute (minute index → amount).
    buckets: BTreeMap<i64, u128>,
    reserved: HashMap<K, u128>,
    /// Usage of the other nodes (cluster scope), as last reported by the cluster sync.
    remote: u128,
    warned: bool,
    /// The largest `used − limit` seen in this window.
    overrun: u128,
}

impl<K: Eq + Hash + Clone> Counter<K> {
    fn new(entitlement: Entitlement, now: Timestamp) -> Counter<K> {
        let bounds = entitlement.window.bounds(now);
        Counter {
            entitlement,
            bounds,
            used: 0,
            buckets: BTreeMap::new(),
            reserved: HashMap::new(),
            remote: 0,
            warned: false,
            overrun: 0,
        }
    }

    pub fn limit(&self) -> u128 {
        self.entitlement.limit.amount
    }

    /// Settled usage in the window: this node's and, for cluster scope, the others'.
    pub fn used(&self) -> u128 {
        self.used + self.remote
    }

    /// This node's own settled usage (what the cluster sync publishes).
    pub fn local_used(&self) -> u128 {
        self.used
    }

    pub fn reserved(&self) -> u128 {
        self.reserved.values().sum()
    }

    pub fn remaining(&self) -> u128 {
        self.limit().saturating_sub(self.used() + self.reserved())
    }

    pub fn bounds(&self) -> Bounds {
        self.bounds
    }

    pub fn overrun(&self) -> u128 {
        self.overrun
    }

    pub fn state(&self) -> State {
        let used = self.used();
        if used >= self.limit() {
            State::Exhausted
        } else if self.entitlement.warn_at_bp.is_some_and(|bp| used * 10_000 >= self.limit() * u128::from(bp)) {
            State::Warning
        } else {
            State::Ok
        }
    }

    /// Whether a new call must be refused now: the budget is used up, or what is in flight
    /// already covers it.
    pub fn refuses(&self) -> bool {
        self.used() + self.reserved() >= self.limit()
    }

    fn add(&mut self, ts: Timestamp, amount: u128) {
        if ts >= self.bounds.end {
            // A record that arrives before the tick noticed the new window opens it.
            self.roll(ts);
        }
        if amount == 0 || ts < self.bounds.start {
            // A late record of a past window does not count against this one.
            return;
        }
        if self.entitlement.window.sliding {
            *self.buckets.entry(minute_of(ts)).or_default() += amount;
        }
        self.used += amount;
        self.overrun = self.overrun.max(self.used().saturating_sub(self.limit()));
    }

    /// Moves to the window `now` is in. Returns whether the window changed.
    fn roll(&mut self, now: Timestamp) -> bool {
        let bounds = self.entitlement.window.bounds(now);
        if bounds == self.bounds {
            return false;
        }
        self.bounds = bounds;
        if self.entitlement.window.sliding {
            let first = minute_of(bounds.start);
            self.buckets = self.buckets.split_off(&first);
            self.used = self.buckets.values().sum();
            if self.state() == State::Ok {
                self.warned = false;
            }
        } else {
            self.used = 0;
            self.remote = 0;
            self.warned = false;
            self.overrun = 0;
        }
        true
    }
}

/// All entitlements' counters, generic over the key of an in-flight call.
#[derive(Debug)]
pub struct Budgets<K> {
    counters: Vec<Counter<K>>,
    /// Gate from this fraction of the limit (basis points).
    hold_at_bp: u32,
    /// Output tokens reserved for a call that names no maximum.
    default_max_output_tokens: u64,
}

impl<K: Eq + Hash + Clone> Budgets<K> {
    pub fn new(policy: &Policy, hold_at: f64, default_max_output_tokens: u64, now: Timestamp) -> Budgets<K> {
        Budgets {
            counters: policy.entitlements.iter().map(|e| Counter::new(e.clone(), now)).collect(),
            hold_at_bp: (hold_at.clamp(0.0, 1.0) * 10_000.0).round() as u32,
            default_max_output_tokens,
        }
    }

    /// Installs a new policy. An entitlement that counts the same way (same name, match,
    /// limit kind, window and scope) keeps its counters; its limit, action, warning and
    /// exemptions take effect at once. Returns the names whose counters were kept.
    pub fn replace_policy(&mut self, policy: &Policy, now: Timestamp) -> Vec<String> {
        let mut old: Vec<Option<Counter<K>>> = std::mem::take(&mut self.counters).into_iter().map(Some).collect();
        let mut kept = Vec::new();
        for e in &policy.entitlements {
            let prev = old.iter_mut().find(|c| c.as_ref().is_some_and(|c| c.entitlement.same_counting(e)));
            let counter = match prev.and_then(Option::take) {
                Some(mut c) => {
                    kept.push(e.name.clone());
                    c.entitlement = e.clone();
                    // A raised limit or warning threshold re-arms the warning.
                    if c.state() == State::Ok {
                        c.warned = false;
                    }
                    c
                }
                None => Counter::new(e.clone(), now),
            };
            self.counters.push(counter);
        }
        kept
    }

    pub fn counters(&self) -> &[Counter<K>] {
        &self.counters
    }

    pub fn counter_mut(&mut self, name: &str) -> Option<&mut Counter<K>> {
        self.counters.iter_mut().find(|c| c.entitlement.name == name)
    }

    /// Indices of the entitlements a call with these labels counts against.
    pub fn matching(&self, labels: &Labels) -> Vec<usize> {
        (0..self.counters.len()).filter(|&i| self.counters[i].entitlement.matcher.matches(labels)).collect()
    }

    /// Advances every window to `now`; returns the names whose window rolled over.
    pub fn roll(&mut self, now: Timestamp) -> Vec<String> {
        self.counters.iter_mut().filter_map(|c| c.roll(now).then(|| c.entitlement.name.clone())).collect()
    }

    /// The estimate of a call in flight, before its request is parsed (at a hold) or from
    /// its request (input tokens counted, output capped by its maximum or the default).
    pub fn estimate(&self, input_tokens: u64, max_output_tokens: Option<u64>, cost_pico: u128) -> Usage {
        Usage::call(input_tokens, max_output_tokens.unwrap_or(self.default_max_output_tokens), cost_pico)
    }

    /// Reserves `estimate` under `key` in every entitlement matching `labels`, replacing what
    /// `replaces` (a provisional reservation) held.
    pub fn reserve(&mut self, key: K, labels: &Labels, estimate: Usage, replaces: Option<&K>) {
        if let Some(old) = replaces {
            self.release(old);
        }
        for i in self.matching(labels) {
            let c = &mut self.counters[i];
            c.reserved.insert(key.clone(), estimate.amount(c.entitlement.limit.kind));
        }
    }

    /// Drops a call's reservation (connection closed, process gone, idle, or refused).
    pub fn release(&mut self, key: &K) {
        for c in &mut self.counters {
            c.reserved.remove(key);
        }
    }

    /// Drops every reservation whose key `gone` says belongs to something that ended (a
    /// process that exited: its calls will never be settled).
    pub fn release_where(&mut self, gone: impl Fn(&K) -> bool) {
        for c in &mut self.counters {
            c.reserved.retain(|k, _| !gone(k));
        }
    }

    /// Whether `key` holds a reservation anywhere.
    pub fn is_reserved(&self, key: &K) -> bool {
        self.counters.iter().any(|c| c.reserved.contains_key(key))
    }

    /// Counts a completed call (its record) against every entitlement it matches, at `ts`,
    /// and drops its reservation.
    pub fn settle(&mut self, key: Option<&K>, labels: &Labels, usage: Usage, ts: Timestamp) {
        if let Some(k) = key {
            self.release(k);
        }
        for i in self.matching(labels) {
            let c = &mut self.counters[i];
            c.add(ts, usage.amount(c.entitlement.limit.kind));
        }
    }

    /// Adds usage to one entitlement by name (the ledger seed, per entitlement).
    pub fn add_to(&mut self, name: &str, usage: Usage, ts: Timestamp) {
        if let Some(c) = self.counter_mut(name) {
            c.add(ts, usage.amount(c.entitlement.limit.kind));
        }
    }

    /// Sets the other nodes' usage for a cluster entitlement in the window starting at
    /// `window_start` (ignored when this node has moved on to another window).
    pub fn set_remote(&mut self, name: &str, window_start: Timestamp, remote: u128) {
        if let Some(c) = self.counter_mut(name) {
            if c.bounds.start == window_start {
                c.remote = remote;
                c.overrun = c.overrun.max(c.used().saturating_sub(c.limit()));
            }
        }
    }

    /// The level of entitlement `i`: exhausted when used ≥ limit, gated when what is used and
    /// in flight reaches the hold fraction or the rest is below one default call.
    pub fn level(&self, i: usize) -> Level {
        let c = &self.counters[i];
        let (used, limit) = (c.used(), c.limit());
        if used >= limit {
            return Level::Exhausted;
        }
        let committed = used + c.reserved();
        let one_call = match c.entitlement.limit.kind {
            LimitKind::TotalTokens | LimitKind::OutputTokens => u128::from(self.default_max_output_tokens),
            LimitKind::InputTokens | LimitKind::Requests | LimitKind::CostUsd => 1,
        };
        if committed * 10_000 >= limit * u128::from(self.hold_at_bp) || limit - used <= one_call {
            Level::Gate
        } else {
            Level::Free
        }
    }

    /// Entitlements that crossed their warning threshold since the last call (once per
    /// window).
    pub fn take_warnings(&mut self) -> Vec<usize> {
        let mut out = Vec::new();
        for (i, c) in self.counters.iter_mut().enumerate() {
            if !c.warned && c.entitlement.warn_at_bp.is_some() && c.state() != State::Ok {
                c.warned = true;
                out.push(i);
            }
        }
        out
    }
}

#[cfg(test)]
#[path = "budget_tests.rs"]
mod tests;
