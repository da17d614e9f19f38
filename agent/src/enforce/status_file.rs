//! The engine's budgets as the quota status (`status::QuotaStatus`), written each tick for
//! `tokentap quota status`, `tokentap top` and the quota metrics. Costs are counted in exact
//! pico-USD and shown in USD.
use std::collections::BTreeMap;

use jiff::Timestamp;

use super::engine::Engine;
use super::policy::LimitKind;
use super::status::{EntitlementStatus, QuotaStatus};

/// Per entitlement: actions taken and warnings raised since start.
pub type Tally = BTreeMap<String, (u64, u64)>;

pub fn render(engine: &Engine, now: Timestamp, host: &str, tally: &Tally) -> QuotaStatus {
    let entitlements = engine
        .budgets
        .counters()
        .iter()
        .map(|c| {
            let e = &c.entitlement;
            let b = c.bounds();
            // Display only: the verdicts are taken on the integers.
            let show = |v: u128| match e.limit.kind {
                LimitKind::CostUsd => v as f64 / crate::money::PICO_PER_USD as f64,
                _ => v as f64,
            };
            let (actions_taken, warnings) = tally.get(&e.name).copied().unwrap_or_default();
            EntitlementStatus {
                name: e.name.clone(),
                scope: e.scope.as_str().to_string(),
                limit_kind: e.limit.kind.as_str().to_string(),
                unit: match e.limit.kind {
                    LimitKind::CostUsd => "usd",
                    LimitKind::Requests => "requests",
                    _ => "tokens",
                }
                .to_string(),
                limit: show(c.limit()),
                used: show(c.used()),
                reserved: show(c.reserved()),
                remaining: show(c.remaining()),
                window_start: b.start.to_string(),
                window_end: b.end.to_string(),
                state: c.state(),
                action: e.action.as_str().to_string(),
                actions_taken,
                warnings,
                overrun: show(c.overrun()),
            }
        })
        .collect();
    QuotaStatus { written_at: now.to_string(), host: host.to_string(), entitlements }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::enforce::budget::Usage;
    use crate::enforce::policy::{Labels, Policy};

    #[test]
    fn status_names_every_entitlement() {
        let p = Policy::parse(
            "p.toml",
            "[[entitlement]]\nname = \"b\"\nmatch = { team = \"b\" }\nlimit = { cost_usd = 1 }\nwindow = \"1d\"\naction = \"deny\"\n",
        )
        .unwrap();
        let now: Timestamp = "2026-11-28T14:00:00Z".parse().unwrap();
        let mut e = Engine::new(&p, 0.5, 10, now);
        let labels = Labels { team: "b".into(), ..Default::default() };
        e.budgets.settle(None, &labels, Usage::call(1, 1, 250_000_000_000), now);
        let tally = Tally::from([("b".to_string(), (2, 1))]);
        let s = render(&e, now, "h", &tally);
        let x = &s.entitlements[0];
        assert_eq!((x.name.as_str(), x.unit.as_str(), x.used, x.remaining), ("b", "usd", 0.25, 0.75));
        assert_eq!(
            (x.state, x.window_end.as_str(), x.scope.as_str()),
            (crate::enforce::status::State::Ok, "2026-11-29T00:00:00Z", "host")
        );
        assert_eq!((x.actions_taken, x.warnings), (2, 1));
    }
}
