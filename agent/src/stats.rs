//! The agent's own health: losses, failures, attachments. Counted, reported, never payload.
use std::collections::BTreeMap;

use crate::{capture::KernelCounters, completeness::Completeness};

#[derive(Debug, Default, Clone)]
pub struct Stats {
    pub records: u64,
    pub estimated_records: u64,
    pub truncated_records: u64,
    /// Parse failures by reason.
    pub parse_failures: BTreeMap<&'static str, u64>,
    pub connections_ignored: u64,
    /// Responses completed by their connection's close (clients that stop reading a stream).
    pub cut_responses: u64,
    pub kernel: KernelCounters,
    pub libraries_attached: usize,
    pub library_attach_failures: usize,
    /// Executables with their own TLS stack that got no probes: calls the agent cannot see.
    pub unprobed_executables: usize,
    pub output_errors: u64,
    /// Calls no mapping rule matched (team `unattributed`) by reason: `no_rule_matched` (owners
    /// to find), or an identity the agent could not complete (`process_gone_no_exec`,
    /// `cgroup_unknown`: calls that would escape every team's quota).
    pub unattributed: BTreeMap<&'static str, u64>,
    /// OTLP exports that failed.
    pub export_failures: u64,
    /// Mapping file edits rejected as invalid.
    pub mapping_rejections: u64,
    /// AI calls by outcome per TLS stack.
    pub completeness: Completeness,
    /// Stopped target processes resumed after lost hold notices (the enforcer's sweep).
    pub stopped_resumed: u64,
    /// Cgroups made enforcement targets before any of their processes called.
    pub cgroups_discovered: u64,
}

impl Stats {
    pub fn failure(&mut self, reason: &'static str) {
        *self.parse_failures.entry(reason).or_default() += 1;
    }

    pub fn unattributed(&mut self, reason: &'static str) {
        *self.unattributed.entry(reason).or_default() += 1;
    }

    /// Enforcement events for the metrics, by the names `tokentap.enforcement.events` uses; none
    /// without a policy (the counter then reports nothing).
    pub fn enforcement_events(&self, enforcing: bool) -> BTreeMap<&'static str, u64> {
        if !enforcing {
            return BTreeMap::new();
        }
        let k = &self.kernel;
        BTreeMap::from([
            ("held", k.held),
            ("signalled", k.signalled),
            ("connect_refused", k.connect_denied),
            ("failed", k.enforce_failed),
            ("stopped_resumed", self.stopped_resumed),
            ("cgroup_discovered", self.cgroups_discovered),
        ])
    }

    /// One line for logs and the summary footer.
    pub fn line(&self) -> String {
        let failures: u64 = self.parse_failures.values().sum();
        let unattributed: u64 = self.unattributed.values().sum();
        let mut s = format!(
            "calls={} unattributed={} estimated={} truncated={} parse_failures={} ignored_connections={} libraries={} events_lost={} calls_truncated_in_kernel={}",
            self.records,
            unattributed,
            self.estimated_records,
            self.truncated_records,
            failures,
            self.connections_ignored,
            self.libraries_attached,
            self.kernel.data_lost + self.kernel.proc_lost,
            self.kernel.calls_truncated,
        );
        // By reason: an identity gap (a call no team quota can see) is not an owner to find.
        if unattributed > 0 {
            let by: Vec<String> = self.unattributed.iter().map(|(r, n)| format!("{r}:{n}")).collect();
            s.push_str(&format!(" unattributed[{}]", by.join(",")));
        }
        if self.unprobed_executables > 0 {
            s.push_str(&format!(" unprobed_executables={}", self.unprobed_executables));
        }
        if failures > 0 {
            let by: Vec<String> = self.parse_failures.iter().map(|(r, n)| format!("{r}:{n}")).collect();
            s.push_str(&format!(" ({})", by.join(",")));
        }
        let k = &self.kernel;
        if k.held + k.signalled + k.connect_denied + k.enforce_failed > 0 {
            s.push_str(&format!(
                " held={} signalled={} connects_denied={} enforce_failed={}",
                k.held, k.signalled, k.connect_denied, k.enforce_failed
            ));
        }
        if self.stopped_resumed + self.cgroups_discovered > 0 {
            s.push_str(&format!(
                " stopped_resumed={} cgroups_discovered={}",
                self.stopped_resumed, self.cgroups_discovered
            ));
        }
        let seen = self.completeness.line();
        if !seen.is_empty() {
            s.push_str(&format!(" capture[{seen}]"));
        }
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unattributed_calls_show_their_total_and_reasons() {
        let mut s = Stats::default();
        assert!(s.line().contains(" unattributed=0 "), "{}", s.line());
        assert!(!s.line().contains("unattributed["), "{}", s.line());
        s.unattributed("no_rule_matched");
        s.unattributed("no_rule_matched");
        s.unattributed("cgroup_unknown");
        let line = s.line();
        assert!(line.contains(" unattributed=3 "), "{line}");
        assert!(line.contains(" unattributed[cgroup_unknown:1,no_rule_matched:2]"), "{line}");
    }
}
