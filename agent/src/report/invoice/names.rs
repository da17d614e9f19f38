//! File names for invoices: a key value becomes a name that cannot leave the output directory
//! (no `/`, no `..`, no hidden or control characters) and that no other value maps to, so two
//! cost centres never overwrite each other's invoice.
use jiff::{civil::Time, ToSpan};
use sha2::{Digest, Sha256};

use super::build::UNASSIGNED;
use crate::report::rows::{Dim, Period};

/// Longest encoded key kept whole; longer ones are cut and made unique by a digest (file
/// names are limited to 255 bytes).
const MAX_KEY: usize = 80;

/// The file name (without extension) of the invoice for `key` over `period`:
/// `invoice_<by>_<key>_<period>`.
pub fn stem(by: Dim, key: Option<&str>, period: &Period) -> String {
    format!("invoice_{}_{}_{}", by.name(), safe_key(key), period_label(period))
}

/// `[A-Za-z0-9-]` and `_` kept, every other byte written `~HH` (so `../x` is `~2E~2E~2Fx`):
/// injective, and never `.`/`..` or a path. Not `%HH`: browsers and web servers decode that in
/// a URL, and `file:///dir/%2E%2E%2Fx.html` is not the file. No value is [`UNASSIGNED`]: a
/// value spelled that way has its first letter encoded.
pub fn safe_key(key: Option<&str>) -> String {
    let Some(key) = key else { return UNASSIGNED.to_string() };
    let mut out = String::new();
    for (i, b) in key.bytes().enumerate() {
        let keep = b.is_ascii_alphanumeric() || b == b'-' || b == b'_';
        if keep && !(i == 0 && key == UNASSIGNED) {
            out.push(b as char);
        } else {
            out.push_str(&format!("~{b:02X}"));
        }
    }
    if out.is_empty() {
        // An empty value is not the absence of one.
        return "~".to_string();
    }
    if out.len() > MAX_KEY {
        let digest = Sha256::digest(key.as_bytes());
        let hex: String = digest.iter().take(8).map(|b| format!("{b:02x}")).collect();
        // Cut at a byte boundary that is not inside a ~HH escape; `~~` (which no escape
        // gives) then marks the digest.
        let mut cut = MAX_KEY - 20;
        while out.as_bytes()[..cut].iter().rev().take(2).any(|&b| b == b'~') {
            cut -= 1;
        }
        out.truncate(cut);
        out.push_str("~~");
        out.push_str(&hex);
    }
    out
}

/// `2026-11` for a calendar month in the period's time zone, else `<from>_<to>` with each end
/// a date (`2026-11-01`) at midnight or a date and time (`2026-11-01T1230`).
pub fn period_label(p: &Period) -> String {
    let from = p.from.to_zoned(p.tz.clone());
    let to = p.to.to_zoned(p.tz.clone());
    let midnight = |z: &jiff::Zoned| z.time() == Time::midnight();
    if midnight(&from) && midnight(&to) && from.day() == 1 {
        if let Ok(next) = from.checked_add(1.month()) {
            if next == to {
                return from.strftime("%Y-%m").to_string();
            }
        }
    }
    let end = |z: &jiff::Zoned| {
        if midnight(z) {
            z.strftime("%Y-%m-%d").to_string()
        } else if z.time().second() == 0 && z.time().subsec_nanosecond() == 0 {
            z.strftime("%Y-%m-%dT%H%M").to_string()
        } else {
            z.strftime("%Y-%m-%dT%H%M%S").to_string()
        }
    };
    format!("{}_{}", end(&from), end(&to))
}
