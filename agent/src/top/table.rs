//! The table of a view as text cells: which columns, their titles (the sorted one marked),
//! widths, and which columns are left out when the terminal is too narrow. Pure, so the live
//! view and `--once` print the same numbers.
use super::rates::{self, Group, GroupKey, Sort, SortCol, View};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Col {
    Team,
    Model,
    Pid,
    Comm,
    Exe,
    Calls,
    CallsPerS,
    InTok,
    OutTok,
    InPerS,
    OutPerS,
    CostPerH,
    Cost,
    Errors,
}

impl Col {
    pub fn title(self) -> &'static str {
        match self {
            Col::Team => "TEAM",
            Col::Model => "MODEL",
            Col::Pid => "PID",
            Col::Comm => "COMM",
            Col::Exe => "EXE",
            Col::Calls => "CALLS",
            Col::CallsPerS => "CALLS/S",
            Col::InTok => "IN TOK",
            Col::OutTok => "OUT TOK",
            Col::InPerS => "IN/S",
            Col::OutPerS => "OUT/S",
            Col::CostPerH => "$/H",
            Col::Cost => "$ WINDOW",
            Col::Errors => "ERR",
        }
    }

    /// Lower is kept longer when the terminal is narrow.
    fn priority(self) -> u8 {
        match self {
            Col::Team | Col::Model | Col::Comm => 0,
            Col::Calls | Col::Pid => 1,
            Col::CostPerH => 2,
            Col::InTok | Col::OutTok => 3,
            Col::CallsPerS => 4,
            Col::InPerS | Col::OutPerS => 5,
            Col::Cost => 6,
            Col::Errors => 7,
            Col::Exe => 8,
        }
    }

    /// Text columns take the width left over (and are cut to fit); numbers keep theirs.
    fn flexible(self) -> bool {
        matches!(self, Col::Team | Col::Model | Col::Exe)
    }

    /// The narrowest a flexible column gets before it is left out.
    fn min_width(self) -> usize {
        match self {
            Col::Team => 10,
            Col::Model => 14,
            Col::Exe => 12,
            _ => 0,
        }
    }

    pub fn right_aligned(self) -> bool {
        !matches!(self, Col::Team | Col::Model | Col::Comm | Col::Exe)
    }

    fn sort(self) -> Option<SortCol> {
        Some(match self {
            // Processes sort by name on comm (then pid): the arrow goes there.
            Col::Team | Col::Model | Col::Comm => SortCol::Name,
            Col::Calls | Col::CallsPerS => SortCol::Calls,
            Col::InTok | Col::InPerS => SortCol::Input,
            Col::OutTok | Col::OutPerS => SortCol::Output,
            Col::CostPerH | Col::Cost => SortCol::Cost,
            Col::Errors => SortCol::Errors,
            Col::Exe | Col::Pid => return None,
        })
    }
}

const NUMBERS: [Col; 9] = [
    Col::Calls,
    Col::CallsPerS,
    Col::InTok,
    Col::OutTok,
    Col::InPerS,
    Col::OutPerS,
    Col::CostPerH,
    Col::Cost,
    Col::Errors,
];

/// The view's columns, in display order.
pub fn columns(view: View) -> Vec<Col> {
    let mut cols = match view {
        View::Team => vec![Col::Team],
        View::Model => vec![Col::Model],
        View::Process => vec![Col::Pid, Col::Comm],
    };
    cols.extend(NUMBERS);
    if view == View::Process {
        cols.push(Col::Exe);
    }
    cols
}

/// A cell's text; an empty name shows as "-" so that no column looks shifted.
pub fn cell(col: Col, g: &Group, window_s: u64) -> String {
    let text = raw_cell(col, g, window_s);
    if text.is_empty() {
        "-".into()
    } else {
        text
    }
}

fn raw_cell(col: Col, g: &Group, window_s: u64) -> String {
    let s = &g.sums;
    let r = rates::rates(s, window_s);
    match (col, &g.key) {
        (Col::Team, GroupKey::Team(t)) => t.clone(),
        (Col::Model, GroupKey::Model(m)) => m.clone().unwrap_or_else(|| "(none)".into()),
        (Col::Pid, GroupKey::Process { pid, .. }) => pid.to_string(),
        (Col::Comm, GroupKey::Process { comm, .. }) => comm.clone(),
        (Col::Exe, GroupKey::Process { exe, .. }) => exe.clone(),
        (Col::Calls, _) => s.calls.to_string(),
        (Col::CallsPerS, _) => format!("{:.2}", r.calls_per_s),
        (Col::InTok, _) => s.input_tokens.to_string(),
        (Col::OutTok, _) => s.output_tokens.to_string(),
        (Col::InPerS, _) => rates::rate(r.input_per_s),
        (Col::OutPerS, _) => rates::rate(r.output_per_s),
        // Unpriced calls make a cost unknown, not zero: marked so nobody reads it as complete.
        (Col::CostPerH, _) => priced(rates::usd(r.cost_per_h), s.unpriced),
        (Col::Cost, _) => priced(rates::usd(s.cost), s.unpriced),
        (Col::Errors, _) => s.errors.to_string(),
        _ => String::new(),
    }
}

fn priced(usd: String, unpriced: u64) -> String {
    if unpriced > 0 {
        format!("{usd}+?")
    } else {
        usd
    }
}

/// A laid-out table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Table {
    pub cols: Vec<Col>,
    pub titles: Vec<String>,
    pub widths: Vec<usize>,
    pub rows: Vec<Vec<String>>,
}

/// Columns separated by one space; `width`: `None` for no limit (plain text).
pub fn layout(view: View, groups: &[Group], sort: Sort, window_s: u64, width: Option<usize>) -> Table {
    let mut cols = columns(view);
    // The first column of the sort key carries the arrow.
    let marked = cols.iter().position(|c| c.sort() == Some(sort.col));
    let arrow = if sort.descending { "▼" } else { "▲" };
    let title = |i: usize, c: Col| {
        if Some(i) == marked {
            format!("{}{arrow}", c.title())
        } else {
            c.title().to_string()
        }
    };
    let mut titles: Vec<String> = cols.iter().enumerate().map(|(i, &c)| title(i, c)).collect();
    let mut rows: Vec<Vec<String>> =
        groups.iter().map(|g| cols.iter().map(|&c| cell(c, g, window_s)).collect()).collect();
    let natural = |i: usize, titles: &[String], rows: &[Vec<String>]| {
        rows.iter().map(|r| r[i].chars().count()).chain([titles[i].chars().count()]).max().unwrap_or(0)
    };
    let mut widths: Vec<usize> = (0..cols.len()).map(|i| natural(i, &titles, &rows)).collect();
    let Some(width) = width else {
        return Table { cols, titles, widths, rows };
    };
    // Leave out the least important columns until the rest fits at their minimum widths.
    let need = |cols: &[Col], widths: &[usize]| -> usize {
        let w: usize = cols.iter().zip(widths).map(|(c, &w)| if c.flexible() { c.min_width().min(w) } else { w }).sum();
        w + cols.len().saturating_sub(1)
    };
    while cols.len() > 1 && need(&cols, &widths) > width {
        let drop = (0..cols.len()).max_by_key(|&i| (cols[i].priority(), i)).unwrap_or(0);
        cols.remove(drop);
        titles.remove(drop);
        widths.remove(drop);
        rows.iter_mut().for_each(|r| {
            r.remove(drop);
        });
    }
    // Flexible columns share what is left, up to their natural width; the rest stays blank.
    let fixed: usize = cols.iter().zip(&widths).filter(|(c, _)| !c.flexible()).map(|(_, w)| w).sum();
    let mut spare = width.saturating_sub(fixed + cols.len().saturating_sub(1));
    let flex: Vec<usize> = (0..cols.len()).filter(|&i| cols[i].flexible()).collect();
    for (n, &i) in flex.iter().enumerate() {
        let share = spare / (flex.len() - n);
        let w = widths[i].min(share.max(1));
        widths[i] = w;
        spare -= w.min(spare);
    }
    for (i, c) in cols.iter().enumerate() {
        for r in rows.iter_mut() {
            r[i] = fit(&r[i], widths[i], *c == Col::Exe);
        }
        titles[i] = fit(&titles[i], widths[i], false);
    }
    Table { cols, titles, widths, rows }
}

/// Cuts text to `width` characters with an ellipsis: paths keep their end (the file name).
pub fn fit(s: &str, width: usize, keep_end: bool) -> String {
    let n = s.chars().count();
    if n <= width {
        return s.to_string();
    }
    if width == 0 {
        return String::new();
    }
    if keep_end {
        let tail: String = s.chars().skip(n - (width - 1)).collect();
        format!("…{tail}")
    } else {
        let head: String = s.chars().take(width - 1).collect();
        format!("{head}…")
    }
}

/// The table as plain text lines, columns padded and aligned.
pub fn plain_lines(t: &Table) -> Vec<String> {
    let line = |cells: &[String]| {
        let parts: Vec<String> = cells
            .iter()
            .enumerate()
            .map(|(i, c)| {
                if t.cols[i].right_aligned() {
                    format!("{c:>w$}", w = t.widths[i])
                } else {
                    format!("{c:<w$}", w = t.widths[i])
                }
            })
            .collect();
        parts.join(" ").trim_end().to_string()
    };
    std::iter::once(line(&t.titles)).chain(t.rows.iter().map(|r| line(r))).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::money::Pico;
    use crate::top::rates::Sums;

    fn g(key: GroupKey, calls: u64, cost: i128, unpriced: u64) -> Group {
        Group {
            key,
            sums: Sums { calls, errors: 1, input_tokens: 1200, output_tokens: 34, cost: Pico(cost), unpriced },
        }
    }

    fn proc_group() -> Group {
        let exe = "/very/long/path/to/some/python3.12".to_string();
        g(GroupKey::Process { comm: "python3".into(), pid: 4242, exe }, 3, 2_000_000_000_000, 0)
    }

    #[test]
    fn wide_terminals_show_every_column_with_the_sort_arrow() {
        let t = layout(
            View::Team,
            &[g(GroupKey::Team("platform".into()), 6, 1_000_000_000, 0)],
            Sort::default(),
            60,
            Some(200),
        );
        assert_eq!(t.cols, columns(View::Team));
        assert_eq!(t.titles[t.cols.iter().position(|&c| c == Col::CostPerH).unwrap()], "$/H▼");
        let row = &t.rows[0];
        // 6 calls in 60 s; $0.001 in 60 s is $0.06 an hour.
        assert_eq!(row[0], "platform");
        assert_eq!((row[1].as_str(), row[2].as_str(), row[3].as_str()), ("6", "0.10", "1200"));
        assert_eq!(row[7], "0.0600");
        assert_eq!(row[8], "0.001000");
    }

    #[test]
    fn narrow_terminals_drop_the_least_important_columns_first() {
        let groups = [proc_group()];
        let wide = layout(View::Process, &groups, Sort::default(), 60, None);
        assert!(wide.cols.contains(&Col::Exe));
        for width in [120, 80, 60, 40, 20, 5] {
            let t = layout(View::Process, &groups, Sort::default(), 60, Some(width));
            let used: usize = t.widths.iter().sum::<usize>() + t.cols.len() - 1;
            assert!(used <= width.max(t.widths[0]), "width {width}: {used} used: {t:?}");
            assert!(t.cols.contains(&Col::Comm), "the name stays at {width}");
            for line in plain_lines(&t) {
                assert!(line.chars().count() <= width.max(t.widths[0]), "{width}: {line:?}");
            }
        }
        let t40 = layout(View::Process, &groups, Sort::default(), 60, Some(40));
        assert!(t40.cols.contains(&Col::Calls) && t40.cols.contains(&Col::CostPerH), "{:?}", t40.cols);
        assert!(!t40.cols.contains(&Col::Errors) && !t40.cols.contains(&Col::Exe), "{:?}", t40.cols);
        let t = layout(
            View::Team,
            &[g(GroupKey::Team("a-very-long-team-name-indeed".into()), 1, 0, 0)],
            Sort::default(),
            60,
            Some(60),
        );
        assert!(t.rows[0][0].ends_with('…') && t.rows[0][0].chars().count() == t.widths[0], "{t:?}");
    }

    #[test]
    fn paths_keep_their_file_name_and_unpriced_costs_are_marked() {
        assert_eq!(fit("/usr/local/bin/python3", 9, true), "…/python3");
        assert_eq!(fit("platform", 5, false), "plat…");
        assert_eq!(fit("abc", 3, false), "abc");
        let t = layout(View::Model, &[g(GroupKey::Model(None), 1, 0, 1)], Sort::default(), 3600, None);
        assert_eq!(t.rows[0][0], "(none)");
        assert!(t.rows[0][7].ends_with("+?"), "{:?}", t.rows[0]);
        // An empty name (identity lost) is "-", so that the columns after it do not shift.
        let unnamed = g(GroupKey::Process { comm: String::new(), pid: 1, exe: String::new() }, 1, 0, 0);
        let t = layout(View::Process, &[unnamed], Sort::default(), 60, None);
        assert_eq!((t.rows[0][1].as_str(), t.rows[0].last().unwrap().as_str()), ("-", "-"));
    }
}
