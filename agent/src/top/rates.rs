//! The numbers `top` shows, from the ledger's rows of the window: sums per group (team, model or
//! process), rates over the window, and the order of the rows. Pure: no I/O, no clock.
use std::cmp::Ordering;

use crate::money::{div_round, Pico, PICO_PER_USD};

/// What the ledger holds for one (team, model, process) in the window: exact sums.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct WindowRow {
    pub team: String,
    /// `coalesce(response_model, request_model)`; `None`: the call named no model.
    pub model: Option<String>,
    pub pid: u32,
    pub comm: String,
    pub exe: String,
    pub sums: Sums,
}

/// Exact sums over calls.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Sums {
    pub calls: u64,
    pub errors: u64,
    pub input_tokens: u64,
    pub output_tokens: u64,
    /// Unpriced calls add nothing.
    pub cost: Pico,
    /// Calls whose model was not in the pricing table (their cost is unknown, not zero).
    pub unpriced: u64,
}

impl std::ops::AddAssign for Sums {
    fn add_assign(&mut self, o: Sums) {
        self.calls += o.calls;
        self.errors += o.errors;
        self.input_tokens += o.input_tokens;
        self.output_tokens += o.output_tokens;
        self.cost += o.cost;
        self.unpriced += o.unpriced;
    }
}

/// Which grouping the table shows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum View {
    #[default]
    Team,
    Model,
    Process,
}

impl View {
    pub const ALL: [View; 3] = [View::Team, View::Model, View::Process];

    pub fn title(self) -> &'static str {
        match self {
            View::Team => "Team",
            View::Model => "Model",
            View::Process => "Process",
        }
    }

    pub fn next(self) -> View {
        let i = View::ALL.iter().position(|&v| v == self).unwrap_or(0);
        View::ALL[(i + 1) % View::ALL.len()]
    }

    pub fn prev(self) -> View {
        let i = View::ALL.iter().position(|&v| v == self).unwrap_or(0);
        View::ALL[(i + View::ALL.len() - 1) % View::ALL.len()]
    }
}

/// A group's identity: the team, the model, or the process (pid, comm, exe).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum GroupKey {
    Team(String),
    Model(Option<String>),
    /// comm first, so that sorting by name puts a program's processes together.
    Process {
        comm: String,
        pid: u32,
        exe: String,
    },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Group {
    pub key: GroupKey,
    pub sums: Sums,
}

/// Sums the window's rows by the view's key, in key order.
pub fn group(rows: &[WindowRow], view: View) -> Vec<Group> {
    let mut out: std::collections::BTreeMap<GroupKey, Sums> = std::collections::BTreeMap::new();
    for r in rows {
        let key = match view {
            View::Team => GroupKey::Team(r.team.clone()),
            View::Model => GroupKey::Model(r.model.clone()),
            View::Process => GroupKey::Process { comm: r.comm.clone(), pid: r.pid, exe: r.exe.clone() },
        };
        *out.entry(key).or_default() += r.sums;
    }
    out.into_iter().map(|(key, sums)| Group { key, sums }).collect()
}

/// All rows together (the header's window line).
pub fn total(rows: &[WindowRow]) -> Sums {
    let mut s = Sums::default();
    for r in rows {
        s += r.sums;
    }
    s
}

/// Per-second and per-hour rates over a window of `window_s` seconds (> 0).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Rates {
    pub calls_per_s: f64,
    pub input_per_s: f64,
    pub output_per_s: f64,
    /// Exact: the window's cost × 3600 / window, rounded to the pico-USD.
    pub cost_per_h: Pico,
}

pub fn rates(s: &Sums, window_s: u64) -> Rates {
    let w = window_s.max(1);
    Rates {
        calls_per_s: s.calls as f64 / w as f64,
        input_per_s: s.input_tokens as f64 / w as f64,
        output_per_s: s.output_tokens as f64 / w as f64,
        cost_per_h: Pico(div_round(s.cost.0 * 3600, i128::from(w))),
    }
}

/// `n / d` rounded half away from zero (`d` > 0).
/// A sortable column. Sorting by calls also orders calls/s (same window), and so on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SortCol {
    Name,
    Calls,
    Errors,
    Input,
    Output,
    Cost,
}

impl SortCol {
    /// Names read ascending, numbers biggest first.
    pub fn default_descending(self) -> bool {
        self != SortCol::Name
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Sort {
    pub col: SortCol,
    pub descending: bool,
}

impl Default for Sort {
    /// Who costs the most first.
    fn default() -> Sort {
        Sort { col: SortCol::Cost, descending: true }
    }
}

impl Sort {
    /// Choosing the column already sorted on reverses it; another column starts in its
    /// natural direction.
    pub fn choose(self, col: SortCol) -> Sort {
        if col == self.col {
            Sort { col, descending: !self.descending }
        } else {
            Sort { col, descending: col.default_descending() }
        }
    }
}

/// Orders the groups; ties (and the name column) by key, so the order is stable each second.
pub fn sort(groups: &mut [Group], sort: Sort) {
    groups.sort_by(|a, b| {
        let by_col = match sort.col {
            SortCol::Name => a.key.cmp(&b.key),
            SortCol::Calls => a.sums.calls.cmp(&b.sums.calls),
            SortCol::Errors => a.sums.errors.cmp(&b.sums.errors),
            SortCol::Input => a.sums.input_tokens.cmp(&b.sums.input_tokens),
            SortCol::Output => a.sums.output_tokens.cmp(&b.sums.output_tokens),
            SortCol::Cost => a.sums.cost.cmp(&b.sums.cost),
        };
        let by_col = if sort.descending { by_col.reverse() } else { by_col };
        match by_col {
            Ordering::Equal => a.key.cmp(&b.key),
            o => o,
        }
    });
}

/// USD with a precision that keeps small amounts readable: 2 decimals from $1, 4 from
/// $0.01, else 6; rounded half away from zero from the exact amount.
pub fn usd(p: Pico) -> String {
    let abs = p.0.abs();
    let decimals = if abs >= PICO_PER_USD {
        2
    } else if abs >= PICO_PER_USD / 100 {
        4
    } else {
        6
    };
    usd_fixed(p, decimals)
}

/// USD rounded to `decimals` (≤ 12) places, half away from zero.
pub fn usd_fixed(p: Pico, decimals: u32) -> String {
    p.to_fixed(decimals)
}

/// A rate with one decimal below 100, none above (columns stay narrow).
pub fn rate(x: f64) -> String {
    if x < 100.0 {
        format!("{x:.1}")
    } else {
        format!("{x:.0}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `who`: team, model, pid, comm; `sums`: calls, input, output, cost.
    fn row(who: (&str, &str, u32, &str), sums: (u64, u64, u64, i128)) -> WindowRow {
        let ((team, model, pid, comm), (calls, input, output, cost)) = (who, sums);
        WindowRow {
            team: team.into(),
            model: Some(model.into()),
            pid,
            comm: comm.into(),
            exe: format!("/usr/bin/{comm}"),
            sums: Sums { calls, errors: 0, input_tokens: input, output_tokens: output, cost: Pico(cost), unpriced: 0 },
        }
    }

    fn rows() -> Vec<WindowRow> {
        vec![
            row(("a", "m1", 10, "curl"), (1, 100, 10, 5)),
            row(("a", "m2", 11, "python3"), (2, 300, 30, 50)),
            row(("b", "m1", 10, "curl"), (4, 40, 400, 7)),
        ]
    }

    #[test]
    fn groups_sum_by_the_view_key() {
        let teams = group(&rows(), View::Team);
        assert_eq!(teams.len(), 2);
        assert_eq!(teams[0].key, GroupKey::Team("a".into()));
        assert_eq!((teams[0].sums.calls, teams[0].sums.input_tokens, teams[0].sums.cost), (3, 400, Pico(55)));
        let models = group(&rows(), View::Model);
        assert_eq!(models[0].key, GroupKey::Model(Some("m1".into())));
        assert_eq!((models[0].sums.calls, models[0].sums.output_tokens), (5, 410));
        let procs = group(&rows(), View::Process);
        assert_eq!(procs.len(), 2);
        assert_eq!(procs[0].key, GroupKey::Process { comm: "curl".into(), pid: 10, exe: "/usr/bin/curl".into() });
        assert_eq!(procs[0].sums.calls, 5);
        assert_eq!(total(&rows()).calls, 7);
    }

    #[test]
    fn rates_divide_by_the_window_and_cost_per_hour_is_exact() {
        let s = Sums { calls: 30, input_tokens: 600, output_tokens: 45, cost: Pico(7), ..Sums::default() };
        let r = rates(&s, 60);
        assert_eq!((r.calls_per_s, r.input_per_s, r.output_per_s), (0.5, 10.0, 0.75));
        // 7 × 3600 / 60 = 420 exactly.
        assert_eq!(r.cost_per_h, Pico(420));
        // 1 × 3600 / 7 = 514.28… → 514; 5 × 3600 / 7 = 2571.43 → 2571; halves round away.
        assert_eq!(rates(&Sums { cost: Pico(1), ..Sums::default() }, 7).cost_per_h, Pico(514));
        assert_eq!(rates(&Sums { cost: Pico(1), ..Sums::default() }, 7200).cost_per_h, Pico(1));
        assert_eq!(rates(&Sums::default(), 0).calls_per_s, 0.0, "a zero window does not divide by zero");
    }

    #[test]
    fn sorting_by_column_reverses_on_the_same_column_and_breaks_ties_by_name() {
        let mut g = group(&rows(), View::Process);
        sort(&mut g, Sort::default());
        assert_eq!(g[0].key, GroupKey::Process { comm: "python3".into(), pid: 11, exe: "/usr/bin/python3".into() });
        let s = Sort::default().choose(SortCol::Calls);
        assert!(s.descending);
        sort(&mut g, s);
        assert_eq!(g[0].sums.calls, 5);
        sort(&mut g, s.choose(SortCol::Calls));
        assert_eq!(g[0].sums.calls, 2, "same column again: ascending");
        let name = s.choose(SortCol::Name);
        assert!(!name.descending);
        sort(&mut g, name);
        assert!(matches!(&g[0].key, GroupKey::Process { comm, .. } if comm == "curl"));
        // Equal counts: by key, whatever the direction.
        let mut t = group(&[row(("z", "m", 1, "c"), (1, 1, 1, 1)), row(("y", "m", 1, "c"), (1, 1, 1, 1))], View::Team);
        sort(&mut t, Sort { col: SortCol::Calls, descending: true });
        assert_eq!(t[0].key, GroupKey::Team("y".into()));
    }

    #[test]
    fn views_cycle() {
        assert_eq!(View::Team.next(), View::Model);
        assert_eq!(View::Process.next(), View::Team);
        assert_eq!(View::Team.prev(), View::Process);
    }

    #[test]
    fn money_is_rounded_from_the_exact_amount() {
        assert_eq!(usd(Pico(12_345_000_000_000)), "12.35");
        assert_eq!(usd(Pico(12_344_999_999_999)), "12.34");
        assert_eq!(usd(Pico(15_000_000_000)), "0.0150");
        assert_eq!(usd(Pico(125_000_000)), "0.000125");
        assert_eq!(usd(Pico(0)), "0.000000");
        assert_eq!(usd(Pico(-2_500_000_000_000)), "-2.50");
        assert_eq!(usd_fixed(Pico(5_000_000_000), 2), "0.01", "half a cent rounds up");
        assert_eq!(usd_fixed(Pico(4_999_999_999), 2), "0.00");
        assert_eq!(rate(2.26), "2.3");
        assert_eq!(rate(1234.4), "1234");
    }
}
