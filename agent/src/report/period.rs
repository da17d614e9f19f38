//! The report period from `--month`, `--from`/`--to` and `--tz`. Months and dates are
//! calendar ones in `--tz` (midnight there), so "November in Europe/Paris" starts at
//! 2026-10-31T23:00:00Z; RFC 3339 times are exact instants whatever the zone. Every error names
//! the argument it is about.
use jiff::civil::Date;
use jiff::tz::{Offset, TimeZone};
use jiff::Timestamp;

use super::rows::Period;

/// The raw arguments, apart from the CLI struct so that tests give `now`.
#[derive(Debug, Default, Clone, Copy)]
pub struct PeriodArgs<'a> {
    pub month: Option<&'a str>,
    pub from: Option<&'a str>,
    pub to: Option<&'a str>,
    pub tz: Option<&'a str>,
}

/// `[from, to)`. Default: the current month (in `--tz`); `--to` defaults to `now`.
pub fn resolve(args: PeriodArgs<'_>, now: Timestamp) -> Result<Period, String> {
    let tz = match args.tz {
        None => TimeZone::UTC,
        Some(name) => TimeZone::get(name.trim())
            .map_err(|e| format!("--tz: unknown time zone {name:?} (an IANA name such as Europe/Paris): {e}"))?,
    };
    let (from, to) = match (args.month, args.from, args.to) {
        (Some(_), Some(_), _) | (Some(_), _, Some(_)) => {
            return Err("--month: give either --month or --from/--to, not both".into());
        }
        (Some(m), None, None) => month(m, &tz)?,
        (None, None, None) => {
            let first = now.to_zoned(tz.clone()).date().first_of_month();
            month_from(first, &tz).map_err(|e| format!("--month: the current month: {e}"))?
        }
        (None, None, Some(_)) => return Err("--to: needs --from (or use --month)".into()),
        (None, Some(f), t) => {
            let from = instant("--from", f, &tz)?;
            let to = match t {
                Some(t) => instant("--to", t, &tz)?,
                None => now,
            };
            (from, to)
        }
    };
    if from >= to {
        return Err(format!("empty period: --from {} is not before --to {}", rfc3339(from, &tz), rfc3339(to, &tz)));
    }
    Ok(Period { from, to, tz })
}

/// `YYYY-MM` → its first midnight and the next month's, in `tz`.
fn month(text: &str, tz: &TimeZone) -> Result<(Timestamp, Timestamp), String> {
    let bad = || format!("--month: {text:?} is not a month (YYYY-MM, e.g. 2026-11)");
    let (y, m) = text.trim().split_once('-').ok_or_else(bad)?;
    if y.len() != 4 || m.len() != 2 {
        return Err(bad());
    }
    let (y, m): (i16, i8) = (y.parse().map_err(|_| bad())?, m.parse().map_err(|_| bad())?);
    let first = Date::new(y, m, 1).map_err(|_| bad())?;
    month_from(first, tz).map_err(|e| format!("--month: {text}: {e}"))
}

fn month_from(first: Date, tz: &TimeZone) -> Result<(Timestamp, Timestamp), String> {
    let next = first.last_of_month().tomorrow().map_err(|e| e.to_string())?;
    Ok((midnight(first, tz)?, midnight(next, tz)?))
}

/// The start of `date` in `tz` (where midnight does not exist, the first instant after the gap).
fn midnight(date: Date, tz: &TimeZone) -> Result<Timestamp, String> {
    date.to_zoned(tz.clone()).map(|z| z.timestamp()).map_err(|e| e.to_string())
}

/// A date (`YYYY-MM-DD`, midnight in `tz`) or an RFC 3339 time with its own offset.
fn instant(arg: &str, text: &str, tz: &TimeZone) -> Result<Timestamp, String> {
    let t = text.trim();
    if t.len() == 10 {
        let date: Date =
            t.parse().map_err(|_| format!("{arg}: {text:?} is not a date (YYYY-MM-DD) or an RFC 3339 time"))?;
        return midnight(date, tz).map_err(|e| format!("{arg}: {text}: {e}"));
    }
    t.parse::<Timestamp>().map_err(|_| {
        format!("{arg}: {text:?} is not an RFC 3339 time (e.g. 2026-11-01T00:00:00Z or 2026-11-01T09:30:00+01:00) or a date (YYYY-MM-DD)")
    })
}

/// RFC 3339 with the offset `tz` has at that instant (`Z` in UTC).
pub fn rfc3339(t: Timestamp, tz: &TimeZone) -> String {
    let offset = tz.to_offset(t);
    if offset == Offset::UTC {
        t.to_string()
    } else {
        t.display_with_offset(offset).to_string()
    }
}

/// The calendar day (in the period's zone) an instant falls on.
pub fn day(t: Timestamp, tz: &TimeZone) -> Date {
    t.to_zoned(tz.clone()).date()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn now() -> Timestamp {
        "2026-11-28T11:30:00Z".parse().unwrap()
    }

    fn p(month: Option<&str>, from: Option<&str>, to: Option<&str>, tz: Option<&str>) -> Result<Period, String> {
        resolve(PeriodArgs { month, from, to, tz }, now())
    }

    fn ts(s: &str) -> Timestamp {
        s.parse().unwrap()
    }

    #[test]
    fn months_are_calendar_months_in_the_zone() {
        let utc = p(Some("2026-02"), None, None, None).unwrap();
        assert_eq!((utc.from, utc.to), (ts("2026-02-01T00:00:00Z"), ts("2026-03-01T00:00:00Z")));
        let paris = p(Some("2026-11"), None, None, Some("Europe/Paris")).unwrap();
        assert_eq!((paris.from, paris.to), (ts("2026-10-31T23:00:00Z"), ts("2026-11-30T23:00:00Z")));
        assert_eq!(rfc3339(paris.from, &paris.tz), "2026-11-01T00:00:00+01:00");
        let dec = p(Some("2026-12"), None, None, None).unwrap();
        assert_eq!(dec.to, ts("2027-01-01T00:00:00Z"));
        // Default: the current month.
        let cur = p(None, None, None, None).unwrap();
        assert_eq!((cur.from, cur.to), (ts("2026-11-01T00:00:00Z"), ts("2026-12-01T00:00:00Z")));
        assert_eq!(rfc3339(cur.from, &cur.tz), "2026-11-01T00:00:00Z");
    }

    #[test]
    fn from_and_to_take_dates_in_the_zone_or_exact_times() {
        let d = p(None, Some("2026-03-29"), Some("2026-03-30"), Some("Europe/Paris")).unwrap();
        // The day summer time starts has 23 hours.
        assert_eq!((d.from, d.to), (ts("2026-03-28T23:00:00Z"), ts("2026-03-29T22:00:00Z")));
        let t = p(None, Some("2026-11-02T10:00:00+02:00"), Some("2026-11-02T09:00:00Z"), Some("Asia/Tokyo")).unwrap();
        assert_eq!((t.from, t.to), (ts("2026-11-02T08:00:00Z"), ts("2026-11-02T09:00:00Z")));
        let open = p(None, Some("2026-11-01"), None, None).unwrap();
        assert_eq!(open.to, now());
    }

    #[test]
    fn errors_name_the_argument() {
        let e = |r: Result<Period, String>| r.unwrap_err();
        assert!(e(p(Some("2026-13"), None, None, None)).starts_with("--month:"));
        assert!(e(p(Some("nov"), None, None, None)).starts_with("--month:"));
        assert!(e(p(Some("2026-11"), Some("2026-11-01"), None, None)).starts_with("--month:"));
        assert!(e(p(None, Some("yesterday"), None, None)).starts_with("--from:"));
        assert!(e(p(None, Some("2026-11-01"), Some("2026-11-31"), None)).starts_with("--to:"));
        assert!(e(p(None, None, Some("2026-11-01"), None)).starts_with("--to:"));
        assert!(e(p(None, None, None, Some("Mars/Olympus"))).starts_with("--tz:"));
        let empty = e(p(None, Some("2026-11-02"), Some("2026-11-02"), None));
        assert!(empty.contains("empty period") && empty.contains("--from 2026-11-02T00:00:00Z"), "{empty}");
        assert!(e(p(None, Some("2026-11-03"), Some("2026-11-02"), None)).contains("empty period"));
    }
}
