//! Drawing: the live screen (ratatui) and the plain-text snapshot of `--once`. Both print the
//! same text from [`super::table`] and [`super::header`]; the screen only adds emphasis, so
//! nothing depends on colours (a terminal over SSH may have none).
use ratatui::layout::{Constraint, Layout};
use ratatui::style::{Color, Modifier, Style};
use ratatui::text::{Line, Span};
use ratatui::widgets::Paragraph;
use ratatui::Frame;

use super::header;
use super::input::{State, HELP, HELP_SHORT};
use super::query::Snapshot;
use super::quota::{self, QuotaView};
use super::rates::{self, Group, Sort, View};
use super::table;

/// Everything one frame shows.
pub struct Screen<'a> {
    pub ledger: &'a str,
    pub window_s: u64,
    pub clock: &'a str,
    pub snap: &'a Snapshot,
    pub state: &'a State,
    /// The last read failed (the numbers shown are the previous ones).
    pub error: Option<&'a str>,
    /// The quota bars, when an enforcing agent's status file is there.
    pub quota: Option<&'a QuotaView>,
}

/// The view's groups in the chosen order.
pub fn groups(snap: &Snapshot, view: View, sort: Sort) -> Vec<Group> {
    let mut g = rates::group(&snap.rows, view);
    rates::sort(&mut g, sort);
    g
}

/// Draws a frame; returns how many table rows fit (a page, for scrolling).
pub fn draw(f: &mut Frame, s: &Screen) -> usize {
    let area = f.area();
    // Small terminals keep the table and the keys; the summary lines go first.
    let head = if area.height >= 12 { 3 } else { 0 };
    let w = usize::from(area.width);
    let bars = s.quota.map(|q| quota::lines(q, w));
    // The bars take at most a third of the screen, the table keeps the rest.
    let quota_h = bars.as_ref().map_or(0, |(_, rows)| (rows.len() + 1).min(usize::from(area.height / 3))) as u16;
    let [head_area, tabs_area, table_area, quota_area, foot_area] = Layout::vertical([
        Constraint::Length(head),
        Constraint::Length(1),
        Constraint::Min(1),
        Constraint::Length(quota_h),
        Constraint::Length(1),
    ])
    .areas(area);
    let bold = Style::default().add_modifier(Modifier::BOLD);
    if head > 0 {
        let first = match s.error {
            Some(e) => Line::styled(format!("read error: {e}"), bold.add_modifier(Modifier::REVERSED)),
            None => Line::styled(header::title(s.ledger, s.window_s, s.clock), bold),
        };
        let lines = vec![
            first,
            Line::raw(header::window_line(s.snap, s.window_s, w)),
            Line::raw(header::totals_line(s.snap, w)),
        ];
        f.render_widget(Paragraph::new(lines), head_area);
    }
    f.render_widget(Paragraph::new(tabs(s.state.view)), tabs_area);

    let g = groups(s.snap, s.state.view, s.state.sort);
    let t = table::layout(s.state.view, &g, s.state.sort, s.window_s, Some(usize::from(table_area.width)));
    let mut lines = table::plain_lines(&t).into_iter();
    let title = lines.next().unwrap_or_default();
    let page = usize::from(table_area.height.saturating_sub(1));
    let mut shown = vec![Line::styled(title, bold.add_modifier(Modifier::UNDERLINED))];
    if g.is_empty() {
        shown.push(Line::raw(format!("(no calls in the last {}s)", s.window_s)));
    }
    shown.extend(lines.skip(s.state.offset).take(page).map(Line::raw));
    f.render_widget(Paragraph::new(shown), table_area);

    if let (Some((title, rows)), true) = (bars, quota_h > 0) {
        let mut shown = vec![Line::styled(title, bold.add_modifier(Modifier::UNDERLINED))];
        shown.extend(rows.into_iter().map(|(text, state)| Line::styled(text, state_style(state))));
        f.render_widget(Paragraph::new(shown), quota_area);
    }

    let help = if usize::from(foot_area.width) >= HELP.chars().count() { HELP } else { HELP_SHORT };
    f.render_widget(Paragraph::new(Line::styled(help, Style::default().add_modifier(Modifier::REVERSED))), foot_area);
    page
}

/// The state's colour; the state is also written out, for terminals without colour.
fn state_style(state: Option<crate::enforce::status::State>) -> Style {
    use crate::enforce::status::State;
    match state {
        Some(State::Ok) => Style::default().fg(Color::Green),
        Some(State::Warning) => Style::default().fg(Color::Yellow).add_modifier(Modifier::BOLD),
        Some(State::Exhausted) => Style::default().fg(Color::Red).add_modifier(Modifier::BOLD),
        None => Style::default().add_modifier(Modifier::REVERSED),
    }
}

/// The view names with their keys; the current one in brackets (readable without colour).
fn tabs(current: View) -> Line<'static> {
    let mut spans = Vec::new();
    for v in View::ALL {
        let key = v.title().chars().next().unwrap_or(' ').to_ascii_lowercase();
        if v == current {
            spans.push(Span::styled(
                format!("[{}]", v.title()),
                Style::default().add_modifier(Modifier::REVERSED | Modifier::BOLD),
            ));
        } else {
            spans.push(Span::raw(format!(" {} ", v.title())));
        }
        spans.push(Span::raw(format!("({key})  ")));
    }
    Line::from(spans)
}

/// The `--once` snapshot: the summary, then each view's table in full width, then the quota
/// bars if there are any.
pub fn snapshot_text(
    ledger: &str,
    window_s: u64,
    clock: &str,
    snap: &Snapshot,
    sort: Sort,
    quota: Option<&QuotaView>,
) -> String {
    let mut out = vec![
        header::title(ledger, window_s, clock),
        header::window_line(snap, window_s, usize::MAX),
        header::totals_line(snap, usize::MAX),
    ];
    for v in View::ALL {
        out.push(String::new());
        out.push(format!("== {} ==", v.title()));
        let g = groups(snap, v, sort);
        out.extend(table::plain_lines(&table::layout(v, &g, sort, window_s, None)));
    }
    if let Some(q) = quota {
        let (title, rows) = quota::lines(q, usize::MAX);
        out.push(String::new());
        out.push("== Quotas ==".into());
        out.push(title);
        out.extend(rows.into_iter().map(|(line, _)| line));
    }
    out.push(String::new());
    out.join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::money::Pico;
    use crate::top::rates::{Sums, WindowRow};
    use ratatui::backend::TestBackend;
    use ratatui::Terminal;

    fn snap() -> Snapshot {
        let row = |team: &str, comm: &str, pid, calls| WindowRow {
            team: team.into(),
            model: Some("gpt-4o-mini".into()),
            pid,
            comm: comm.into(),
            exe: format!("/usr/bin/{comm}"),
            sums: Sums {
                calls,
                input_tokens: 100 * calls,
                output_tokens: 10 * calls,
                cost: Pico(1_000_000_000 * i128::from(calls)),
                ..Sums::default()
            },
        };
        Snapshot { rows: vec![row("search", "curl", 7, 2), row("billing", "python3", 8, 5)], ..Snapshot::default() }
    }

    fn render(w: u16, h: u16, state: &State) -> Vec<String> {
        render_with(w, h, state, None)
    }

    fn render_with(w: u16, h: u16, state: &State, quota: Option<&QuotaView>) -> Vec<String> {
        let mut term = Terminal::new(TestBackend::new(w, h)).unwrap();
        let snap = snap();
        let screen =
            Screen { ledger: "/l.db", window_s: 60, clock: "12:00:00", snap: &snap, state, error: None, quota };
        term.draw(|f| {
            draw(f, &screen);
        })
        .unwrap();
        let buf = term.backend().buffer().clone();
        (0..h).map(|y| (0..w).map(|x| buf[(x, y)].symbol().to_string()).collect::<String>()).collect()
    }

    #[test]
    fn an_80x24_screen_shows_summary_table_and_keys() {
        let lines = render(80, 24, &State::default());
        assert!(lines[0].starts_with("tokentap top  /l.db  window 60s"), "{lines:#?}");
        assert!(lines[1].contains("7 calls"), "{lines:#?}");
        assert!(lines[3].contains("[Team]"), "{lines:#?}");
        assert!(lines[4].contains("TEAM") && lines[4].contains("CALLS") && lines[4].contains("$/H▼"), "{lines:#?}");
        // Sorted by cost: billing (5 calls) first.
        assert!(lines[5].starts_with("billing") && lines[6].starts_with("search"), "{lines:#?}");
        assert!(lines[23].starts_with("q quit"), "{lines:#?}");
    }

    #[test]
    fn narrow_and_short_screens_degrade() {
        let state = State { view: View::Process, ..State::default() };
        let lines = render(40, 8, &state);
        assert!(lines[0].contains("[Process]"), "no summary on 8 rows: {lines:#?}");
        assert!(lines[1].contains("COMM") && lines[1].contains("CALLS"), "{lines:#?}");
        assert!(lines.iter().any(|l| l.contains("python3")), "{lines:#?}");
        assert!(lines[7].starts_with("q quit"), "{lines:#?}");
    }

    #[test]
    fn once_prints_every_view() {
        let text = snapshot_text("/l.db", 60, "12:00:00", &snap(), Sort::default(), None);
        for want in ["== Team ==", "== Model ==", "== Process ==", "billing", "gpt-4o-mini", "/usr/bin/python3"] {
            assert!(text.contains(want), "{want}: {text}");
        }
    }

    fn quotas() -> QuotaView {
        use crate::enforce::status::{EntitlementStatus, QuotaStatus, State as Q};
        let e = |name: &str, used: f64, state| EntitlementStatus::sample(name, 1000.0, used, 0.0, state);
        QuotaView::Status(QuotaStatus {
            written_at: "2026-11-28T12:00:00Z".into(),
            host: "n1".into(),
            entitlements: vec![e("blue-daily", 250.0, Q::Ok), e("red-daily", 1000.0, Q::Exhausted)],
        })
    }

    #[test]
    fn quota_bars_sit_under_the_table_with_their_state_colour() {
        let q = quotas();
        let mut term = Terminal::new(TestBackend::new(80, 24)).unwrap();
        let snap = snap();
        let state = State::default();
        let screen = Screen {
            ledger: "/l.db",
            window_s: 60,
            clock: "12:00:00",
            snap: &snap,
            state: &state,
            error: None,
            quota: Some(&q),
        };
        term.draw(|f| {
            draw(f, &screen);
        })
        .unwrap();
        let buf = term.backend().buffer().clone();
        let line = |y: u16| (0..80).map(|x| buf[(x, y)].symbol().to_string()).collect::<String>();
        assert!(line(20).starts_with("QUOTAS  (status of n1"), "{}", line(20));
        assert!(line(21).starts_with("blue-daily  [#####---------------]  25%  250/1000 tokens  ok"), "{}", line(21));
        assert!(line(22).contains("100%") && line(22).contains("exhausted"), "{}", line(22));
        assert_eq!(buf[(0, 22)].fg, Color::Red);
        assert_eq!(buf[(0, 21)].fg, Color::Green);
        assert!(line(23).starts_with("q quit"));
        // The table still shows above the bars.
        let lines = render_with(80, 24, &state, Some(&q));
        assert!(lines[5].starts_with("billing"), "{lines:#?}");
    }

    #[test]
    fn once_ends_with_the_quota_bars() {
        let text = snapshot_text("/l.db", 60, "12:00:00", &snap(), Sort::default(), Some(&quotas()));
        let tail: Vec<&str> = text.lines().rev().take(4).collect();
        assert_eq!(tail[3], "== Quotas ==", "{text}");
        assert!(tail[0].starts_with("red-daily") && tail[0].ends_with("exhausted"), "{text}");
    }
}
