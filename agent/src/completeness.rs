//! How much of the AI traffic was seen: calls by outcome, per TLS stack. A user compares
//! `metered` with the rest to know how far the numbers can be trusted.
use std::collections::BTreeMap;

use crate::capture::TlsLibrary;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum CallOutcome {
    /// Usage as the provider reported it.
    Metered,
    /// Usage counted with a tokenizer: the response carried none.
    Estimated,
    /// An AI call (or its connection) whose bytes could not be parsed into usage.
    Unparseable,
    /// A record made from a prefix: a call was larger than the capture cap.
    Truncated,
    /// Library calls whose bytes never reached the agent (ring buffer full, unreadable memory).
    Lost,
}

impl CallOutcome {
    pub const ALL: [CallOutcome; 5] = [
        CallOutcome::Metered,
        CallOutcome::Estimated,
        CallOutcome::Unparseable,
        CallOutcome::Truncated,
        CallOutcome::Lost,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            CallOutcome::Metered => "metered",
            CallOutcome::Estimated => "estimated",
            CallOutcome::Unparseable => "unparseable",
            CallOutcome::Truncated => "truncated",
            CallOutcome::Lost => "lost",
        }
    }

    /// The outcome of a call that became a usage record: truncation first (its counts are a
    /// lower bound whatever their source), then the usage source.
    pub fn of_record(truncated: bool, usage_source: &str) -> CallOutcome {
        if truncated {
            CallOutcome::Truncated
        } else if usage_source == "estimated" {
            CallOutcome::Estimated
        } else {
            CallOutcome::Metered
        }
    }
}

/// Cumulative counts by (stack, outcome). Kernel losses are cumulative counters read from
/// the kernel, so they are set, not added.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Completeness {
    counts: BTreeMap<(&'static str, CallOutcome), u64>,
}

impl Completeness {
    pub fn add(&mut self, library: TlsLibrary, outcome: CallOutcome) {
        *self.counts.entry((library.as_str(), outcome)).or_default() += 1;
    }

    pub fn set_lost(&mut self, library: TlsLibrary, total: u64) {
        if total > 0 {
            self.counts.insert((library.as_str(), CallOutcome::Lost), total);
        }
    }

    /// `(library, outcome, count)` for every non-zero count.
    pub fn iter(&self) -> impl Iterator<Item = (&'static str, CallOutcome, u64)> + '_ {
        self.counts.iter().map(|(&(l, o), &n)| (l, o, n))
    }

    /// `openssl: metered=3 estimated=1; go: metered=2` — the summary's capture line.
    pub fn line(&self) -> String {
        let mut by_lib: BTreeMap<&str, Vec<String>> = BTreeMap::new();
        for (lib, outcome, n) in self.iter() {
            by_lib.entry(lib).or_default().push(format!("{}={n}", outcome.as_str()));
        }
        by_lib.into_iter().map(|(lib, parts)| format!("{lib}: {}", parts.join(" "))).collect::<Vec<_>>().join("; ")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn outcome_of_record_prefers_truncation() {
        assert_eq!(CallOutcome::of_record(true, "reported"), CallOutcome::Truncated);
        assert_eq!(CallOutcome::of_record(false, "estimated"), CallOutcome::Estimated);
        assert_eq!(CallOutcome::of_record(false, "reported"), CallOutcome::Metered);
    }

    #[test]
    fn counts_by_library_and_outcome() {
        let mut c = Completeness::default();
        c.add(TlsLibrary::OpenSsl, CallOutcome::Metered);
        c.add(TlsLibrary::OpenSsl, CallOutcome::Metered);
        c.add(TlsLibrary::Go, CallOutcome::Unparseable);
        c.set_lost(TlsLibrary::Go, 4);
        c.set_lost(TlsLibrary::Go, 5);
        c.set_lost(TlsLibrary::Plain, 0);
        assert_eq!(c.line(), "go: unparseable=1 lost=5; openssl: metered=2");
        assert_eq!(c.iter().count(), 3);
    }
}
