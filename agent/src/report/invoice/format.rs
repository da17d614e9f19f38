//! Text shared by the HTML and CSV forms, so both say exactly the same thing.
use crate::money::UnitPrice;
use crate::report::rows::Period;

/// The period's ends in its time zone (RFC 3339 with offset) and the zone's name.
pub fn period_ends(p: &Period) -> (String, String, String) {
    let fmt = |t: jiff::Timestamp| t.to_zoned(p.tz.clone()).strftime("%Y-%m-%dT%H:%M:%S%:z").to_string();
    (fmt(p.from), fmt(p.to), tz_name(p))
}

pub fn tz_name(p: &Period) -> String {
    match p.tz.iana_name() {
        Some(name) => name.to_string(),
        // A fixed offset or a zone read from a file without a name: its offset at the start.
        None => p.tz.to_offset(p.from).to_string(),
    }
}

/// USD per 1M tokens as a plain decimal; empty for no price.
pub fn price_text(p: Option<UnitPrice>) -> String {
    p.map(|p| p.to_decimal()).unwrap_or_default()
}
