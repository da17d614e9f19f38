//! The HTML report's trend chart: calls' cost (or, when nothing is priced, tokens) per day in
//! the period's time zone, as inline SVG bars. Every bar carries its day and exact numbers as
//! data attributes, and a `<title>` tooltip.
use std::collections::BTreeMap;

use jiff::civil::Date;
use jiff::{Timestamp, ToSpan};

use super::html::esc;
use super::{usd_human, Report};
use crate::report::period::day;
use crate::report::rows::Counters;

/// Past this many days, bars are months (a daily bar would be under a pixel wide).
const MAX_DAYS: i64 = 400;

/// Counters per bucket (a day, or a month for long periods), every bucket of the period
/// present (days without calls are zero bars, so gaps show).
pub fn buckets(r: &Report) -> (Vec<(Date, Counters)>, bool) {
    let tz = &r.period.tz;
    let first = day(r.period.from, tz);
    let last_instant = r.period.to.checked_sub(1.nanosecond()).unwrap_or(r.period.to);
    let last = day(last_instant, tz);
    let monthly = first.until(last).map(|s| i64::from(s.get_days())).unwrap_or(0) > MAX_DAYS;
    let key = |d: Date| if monthly { d.first_of_month() } else { d };
    let mut out: BTreeMap<Date, Counters> = BTreeMap::new();
    let mut d = key(first);
    while d <= last {
        out.insert(d, Counters::default());
        d = match if monthly { d.checked_add(1.month()) } else { d.tomorrow() } {
            Ok(n) => n,
            Err(_) => break,
        };
    }
    for row in &r.rows {
        let Ok(t) = Timestamp::from_second(row.hour) else { continue };
        // An hour that starts before the period (a rollup in a half-hour zone) joins day one.
        let k = key(day(t.max(r.period.from), tz));
        *out.entry(k).or_default() += row.counters;
    }
    (out.into_iter().collect(), monthly)
}

/// Token total shown for a bucket when nothing is priced.
fn tokens(c: &Counters) -> u64 {
    c.input_tokens + c.output_tokens
}

pub fn svg(r: &Report) -> String {
    let (buckets, monthly) = buckets(r);
    let by_cost = buckets.iter().any(|(_, c)| c.cost.0 > 0);
    let value = |c: &Counters| if by_cost { c.cost.0 as f64 } else { tokens(c) as f64 };
    let max = buckets.iter().map(|(_, c)| value(c)).fold(0.0, f64::max);
    let (w, h, left, bottom, top) = (820.0, 260.0, 70.0, 30.0, 12.0);
    let plot_w = w - left - 10.0;
    let plot_h = h - bottom - top;
    let n = buckets.len().max(1) as f64;
    let slot = plot_w / n;
    let bar = (slot * 0.8).max(0.5);
    let unit = if monthly { "month" } else { "day" };
    let measure = if by_cost { "cost (USD)" } else { "tokens (input + output)" };
    let mut s = format!(
        "<svg id=\"trend\" xmlns=\"http://www.w3.org/2000/svg\" viewBox=\"0 0 {w} {h}\" width=\"{w}\" height=\"{h}\" role=\"img\" data-bucket=\"{unit}\" data-measure=\"{}\">\n<title>{} per {unit}</title>\n",
        if by_cost { "cost_usd" } else { "tokens" },
        esc(measure)
    );
    // Axes and the maximum's label.
    let max_label = if by_cost { format!("${}", usd_human(crate::money::Pico(max as i128))) } else { format!("{max}") };
    s.push_str(&format!(
        "<line x1=\"{left}\" y1=\"{top}\" x2=\"{left}\" y2=\"{y0}\" class=\"axis\"/><line x1=\"{left}\" y1=\"{y0}\" x2=\"{x1}\" y2=\"{y0}\" class=\"axis\"/>\n<text x=\"{lx}\" y=\"{ty}\" class=\"lbl\" text-anchor=\"end\">{}</text><text x=\"{lx}\" y=\"{y0}\" class=\"lbl\" text-anchor=\"end\">0</text>\n",
        esc(&max_label),
        y0 = top + plot_h,
        x1 = left + plot_w,
        lx = left - 4.0,
        ty = top + 10.0,
    ));
    let label_every = (buckets.len() / 10).max(1);
    for (i, (d, c)) in buckets.iter().enumerate() {
        let v = value(c);
        let bh = if max > 0.0 { v / max * plot_h } else { 0.0 };
        let x = left + slot * i as f64 + (slot - bar) / 2.0;
        let y = top + plot_h - bh;
        let name = if monthly { d.strftime("%Y-%m").to_string() } else { d.to_string() };
        s.push_str(&format!(
            "<rect class=\"bar\" x=\"{x:.2}\" y=\"{y:.2}\" width=\"{bar:.2}\" height=\"{bh:.2}\" data-day=\"{name}\" data-calls=\"{}\" data-tokens=\"{}\" data-cost=\"{}\"><title>{name}: {} calls, {} tokens, ${}</title></rect>\n",
            c.calls,
            tokens(c),
            c.cost.to_decimal(),
            c.calls,
            tokens(c),
            usd_human(c.cost),
        ));
        if i % label_every == 0 {
            let short = if monthly { name.clone() } else { d.strftime("%m-%d").to_string() };
            s.push_str(&format!(
                "<text x=\"{:.2}\" y=\"{}\" class=\"lbl\" text-anchor=\"middle\">{short}</text>\n",
                x + bar / 2.0,
                top + plot_h + 16.0
            ));
        }
    }
    s.push_str("</svg>\n");
    s
}
