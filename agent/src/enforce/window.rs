//! Budget windows: fixed windows aligned to calendar units in UTC or a time zone (a `1d` window
//! of `Europe/Paris` starts at local midnight, DST included), and sliding windows summed from
//! per-minute buckets.
use jiff::{tz::TimeZone, Timestamp, ToSpan, Zoned};

/// The length of a window.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Span {
    Minute,
    Hour,
    Day,
    /// `7d`: fixed weeks start on Monday 00:00.
    Week,
    Month,
}

impl Span {
    pub fn parse(text: &str) -> Option<Span> {
        Some(match text {
            "1m" => Span::Minute,
            "1h" => Span::Hour,
            "1d" => Span::Day,
            "7d" => Span::Week,
            "month" => Span::Month,
            _ => return None,
        })
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Span::Minute => "1m",
            Span::Hour => "1h",
            Span::Day => "1d",
            Span::Week => "7d",
            Span::Month => "month",
        }
    }

    /// Minutes in a sliding window of this span (months do not slide).
    pub fn minutes(self) -> Option<i64> {
        match self {
            Span::Minute => Some(1),
            Span::Hour => Some(60),
            Span::Day => Some(1440),
            Span::Week => Some(7 * 1440),
            Span::Month => None,
        }
    }
}

/// A window definition from the policy.
#[derive(Debug, Clone, PartialEq)]
pub struct Window {
    pub span: Span,
    /// Where fixed windows are aligned; UTC when unset.
    pub time_zone: Option<TimeZone>,
    /// The last `span` (minute granularity) instead of the current calendar unit.
    pub sliding: bool,
}

/// One instance of a window: `[start, end)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Bounds {
    pub start: Timestamp,
    pub end: Timestamp,
}

/// The minute index (minutes since the Unix epoch) of `t`, the key of sliding buckets.
pub fn minute_of(t: Timestamp) -> i64 {
    t.as_second().div_euclid(60)
}

/// The timestamp at which minute `m` starts.
pub fn minute_start(m: i64) -> Timestamp {
    Timestamp::from_second(m * 60).unwrap_or(Timestamp::UNIX_EPOCH)
}

impl Window {
    pub fn fixed(span: Span) -> Window {
        Window { span, time_zone: None, sliding: false }
    }

    /// The window `now` is in. Sliding: the last `span` whole minutes up to the end of the
    /// current minute (the buckets it sums). Fixed: the calendar unit containing `now`.
    pub fn bounds(&self, now: Timestamp) -> Bounds {
        if self.sliding {
            let mins = self.span.minutes().unwrap_or(1);
            let m = minute_of(now);
            return Bounds { start: minute_start(m - mins + 1), end: minute_start(m + 1) };
        }
        let tz = self.time_zone.clone().unwrap_or(TimeZone::UTC);
        let z = now.to_zoned(tz);
        // An instant that has no local time (a DST gap) cannot arise from truncating downward
        // except at midnight in a few zones; fall back to the UTC window rather than fail.
        self.fixed_bounds(&z).unwrap_or_else(|| {
            Window::fixed(self.span).fixed_bounds(&now.to_zoned(TimeZone::UTC)).expect("UTC has no gaps")
        })
    }

    fn fixed_bounds(&self, z: &Zoned) -> Option<Bounds> {
        let start = match self.span {
            Span::Minute => z.with().second(0).subsec_nanosecond(0).build().ok()?,
            Span::Hour => z.with().minute(0).second(0).subsec_nanosecond(0).build().ok()?,
            Span::Day => z.start_of_day().ok()?,
            Span::Week => {
                let back = z.weekday().to_monday_zero_offset();
                z.start_of_day().ok()?.checked_sub((back as i64).days()).ok()?.start_of_day().ok()?
            }
            Span::Month => z.first_of_month().ok()?.start_of_day().ok()?,
        };
        let end = match self.span {
            Span::Minute => start.checked_add(1.minute()).ok()?,
            Span::Hour => start.checked_add(1.hour()).ok()?,
            Span::Day => start.checked_add(1.day()).ok()?,
            Span::Week => start.checked_add(7.days()).ok()?,
            Span::Month => start.checked_add(1.month()).ok()?,
        };
        Some(Bounds { start: start.timestamp(), end: end.timestamp() })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ts(s: &str) -> Timestamp {
        s.parse().unwrap()
    }

    #[test]
    fn fixed_windows_align_to_utc() {
        let now = ts("2026-11-28T14:23:17.5Z");
        let b = |s| Window::fixed(s).bounds(now);
        assert_eq!(b(Span::Minute), Bounds { start: ts("2026-11-28T14:23:00Z"), end: ts("2026-11-28T14:24:00Z") });
        assert_eq!(b(Span::Hour), Bounds { start: ts("2026-11-28T14:00:00Z"), end: ts("2026-11-28T15:00:00Z") });
        assert_eq!(b(Span::Day), Bounds { start: ts("2026-11-28T00:00:00Z"), end: ts("2026-11-29T00:00:00Z") });
        // 2026-11-28 is a Saturday: the week began on Monday the 23rd.
        assert_eq!(b(Span::Week), Bounds { start: ts("2026-11-23T00:00:00Z"), end: ts("2026-11-30T00:00:00Z") });
        assert_eq!(b(Span::Month), Bounds { start: ts("2026-11-01T00:00:00Z"), end: ts("2026-12-01T00:00:00Z") });
    }

    #[test]
    fn time_zones_shift_days_and_follow_dst() {
        let paris = TimeZone::get("Europe/Paris").unwrap();
        let w = Window { span: Span::Day, time_zone: Some(paris.clone()), sliding: false };
        // 23:30 UTC on the 28th is 00:30 on the 29th in Paris (UTC+1 in winter).
        let b = w.bounds(ts("2026-11-28T23:30:00Z"));
        assert_eq!(b, Bounds { start: ts("2026-11-28T23:00:00Z"), end: ts("2026-11-29T23:00:00Z") });
        // The day clocks go forward (2026-03-29) lasts 23 hours.
        let b = w.bounds(ts("2026-03-29T12:00:00Z"));
        assert_eq!(b, Bounds { start: ts("2026-03-28T23:00:00Z"), end: ts("2026-03-29T22:00:00Z") });
        let m = Window { span: Span::Month, time_zone: Some(paris), sliding: false };
        assert_eq!(m.bounds(ts("2026-11-30T23:30:00Z")).start, ts("2026-11-30T23:00:00Z"));
    }

    #[test]
    fn sliding_windows_cover_the_last_whole_minutes() {
        let w = Window { span: Span::Hour, time_zone: None, sliding: true };
        let b = w.bounds(ts("2026-11-28T14:23:17Z"));
        assert_eq!(b, Bounds { start: ts("2026-11-28T13:24:00Z"), end: ts("2026-11-28T14:24:00Z") });
        assert_eq!(minute_of(ts("1970-01-01T00:02:59Z")), 2);
        assert_eq!(minute_start(2), ts("1970-01-01T00:02:00Z"));
    }

    #[test]
    fn spans_parse() {
        for s in ["1m", "1h", "1d", "7d", "month"] {
            assert_eq!(Span::parse(s).unwrap().as_str(), s);
        }
        assert_eq!(Span::parse("2d"), None);
        assert_eq!(Span::Month.minutes(), None);
    }
}
