//! The lines above the table: what is shown, the whole window's rates, and the totals since
//! midnight and this month. Pure text, shared by the live view and `--once`.
use super::query::Snapshot;
use super::rates::{self, Sums};

/// `unpriced` calls make the cost a lower bound: "+?" says so.
fn cost(s: &Sums, amount: crate::money::Pico) -> String {
    let mark = if s.unpriced > 0 { "+?" } else { "" };
    format!("${}{mark}", rates::usd(amount))
}

pub fn title(ledger: &str, window_s: u64, clock: &str) -> String {
    format!("tokentap top  {ledger}  window {window_s}s  {clock}")
}

/// The first of `forms` that fits in `width` characters (else the last, the shortest).
fn fitting(forms: Vec<String>, width: usize) -> String {
    let n = forms.len();
    forms
        .into_iter()
        .enumerate()
        .find(|(i, f)| f.chars().count() <= width || i + 1 == n)
        .map(|(_, f)| f)
        .unwrap_or_default()
}

/// The window's totals over all groups, as long as fits in `width`.
pub fn window_line(snap: &Snapshot, window_s: u64, width: usize) -> String {
    let s = rates::total(&snap.rows);
    let r = rates::rates(&s, window_s);
    let (cps, inps, outps, cph) = (
        format!("{:.2}", r.calls_per_s),
        rates::rate(r.input_per_s),
        rates::rate(r.output_per_s),
        cost(&s, r.cost_per_h),
    );
    let (calls, errors) = (s.calls, s.errors);
    fitting(
        vec![
            format!("last {window_s}s: {calls} calls  {cps} calls/s  in {inps} tok/s  out {outps} tok/s  {cph}/h  {errors} err"),
            format!("{window_s}s: {calls} calls {cps}/s  in {inps}/s  out {outps}/s  {cph}/h  {errors} err"),
            format!("{window_s}s: {cps} calls/s {cph}/h"),
        ],
        width,
    )
}

/// Calls, tokens and cost since midnight and this month, as long as fits in `width`.
pub fn totals_line(snap: &Snapshot, width: usize) -> String {
    let long = |name: &str, s: &Sums| {
        format!("{name}: {} calls  in {} out {} tok  {}", s.calls, s.input_tokens, s.output_tokens, cost(s, s.cost))
    };
    let short = |name: &str, s: &Sums| format!("{name}: {} calls  {}", s.calls, cost(s, s.cost));
    let (d, m) = (&snap.today, &snap.month);
    fitting(
        vec![
            format!("{}  |  {}", long("today", d), long("month", m)),
            format!("{}  |  {}", short("today", d), short("month", m)),
            short("today", d),
        ],
        width,
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::money::Pico;
    use crate::top::rates::WindowRow;

    #[test]
    fn header_lines_carry_the_window_and_totals() {
        let row = |calls, cost, unpriced| WindowRow {
            sums: Sums { calls, errors: 1, input_tokens: 600, output_tokens: 60, cost: Pico(cost), unpriced },
            ..WindowRow::default()
        };
        let snap = Snapshot {
            rows: vec![row(2, 500_000_000, 0), row(1, 500_000_000, 0)],
            today: Sums {
                calls: 9,
                input_tokens: 90,
                output_tokens: 9,
                cost: Pico(2_345_000_000_000),
                ..Sums::default()
            },
            month: Sums { calls: 90, cost: Pico(12_000_000_000_000), unpriced: 1, ..Sums::default() },
        };
        assert_eq!(
            window_line(&snap, 60, 200),
            "last 60s: 3 calls  0.05 calls/s  in 20.0 tok/s  out 2.0 tok/s  $0.0600/h  2 err"
        );
        assert_eq!(window_line(&snap, 60, 60), "60s: 3 calls 0.05/s  in 20.0/s  out 2.0/s  $0.0600/h  2 err");
        assert_eq!(window_line(&snap, 60, 10), "60s: 0.05 calls/s $0.0600/h");
        assert_eq!(
            totals_line(&snap, 200),
            "today: 9 calls  in 90 out 9 tok  $2.35  |  month: 90 calls  in 0 out 0 tok  $12.00+?"
        );
        assert_eq!(totals_line(&snap, 60), "today: 9 calls  $2.35  |  month: 90 calls  $12.00+?");
        assert_eq!(totals_line(&snap, 20), "today: 9 calls  $2.35");
        assert_eq!(title("/l.db", 60, "12:00:00"), "tokentap top  /l.db  window 60s  12:00:00");
    }
}
