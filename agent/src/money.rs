//! Exact money. Prices are integers of micro-USD per million tokens, which is also pico-USD per
//! token, so `tokens × price` is an exact amount in pico-USD: the ledger, reports and invoices
//! add integers and round once, to cents, where a human reads the number. Floats only ever
//! carry a cost to metrics, which are approximate by nature.
use std::fmt;

/// Pico-USD in one USD.
pub const PICO_PER_USD: i128 = 1_000_000_000_000;
const PICO_PER_CENT: i128 = PICO_PER_USD / 100;

/// A unit price: micro-USD per 1M tokens (= pico-USD per token). `2.50` USD/1M is `2_500_000`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct UnitPrice(pub i64);

impl UnitPrice {
    /// From a decimal literal in USD per 1M tokens (`2.50`, `0.075`, `15`, `1.5e-1`, `1_000`).
    /// `None` for anything else, for a negative price, or for more than 6 decimal places (a
    /// price that cannot be held exactly is refused rather than rounded).
    pub fn parse_usd_per_million(text: &str) -> Option<UnitPrice> {
        let text: String = text.trim().chars().filter(|&c| c != '_').collect();
        let text = text.strip_prefix('+').unwrap_or(&text);
        let (mantissa, exponent) = match text.find(['e', 'E']) {
            Some(i) => (&text[..i], text[i + 1..].parse::<i32>().ok()?),
            None => (text, 0),
        };
        let (int, frac) = mantissa.split_once('.').unwrap_or((mantissa, ""));
        if int.is_empty() && frac.is_empty() || !int.chars().chain(frac.chars()).all(|c| c.is_ascii_digit()) {
            return None;
        }
        let digits: String = format!("{int}{frac}");
        let digits = digits.trim_start_matches('0');
        let mut value: i128 = if digits.is_empty() { 0 } else { digits.parse().ok()? };
        // value × 10^(exponent − frac_len) USD = value × 10^(exponent − frac_len + 6) micro-USD.
        let shift = exponent - frac.len() as i32 + 6;
        if shift >= 0 {
            for _ in 0..shift {
                value = value.checked_mul(10)?;
            }
        } else {
            for _ in 0..-shift {
                if value % 10 != 0 {
                    return None;
                }
                value /= 10;
            }
        }
        i64::try_from(value).ok().map(UnitPrice)
    }

    /// From a float (a price computed elsewhere): exact when it has at most 6 decimals.
    pub fn from_usd_per_million(usd: f64) -> Option<UnitPrice> {
        if !usd.is_finite() || usd < 0.0 {
            return None;
        }
        // `{}` prints the shortest text that reads back as the same float: 0.075, not 0.07499….
        UnitPrice::parse_usd_per_million(&format!("{usd}"))
    }

    pub fn usd_per_million(self) -> f64 {
        self.0 as f64 / 1e6
    }

    /// The exact amount for `tokens` tokens.
    pub fn amount(self, tokens: u64) -> Pico {
        Pico(i128::from(self.0) * i128::from(tokens))
    }

    /// USD per 1M tokens as a plain decimal without trailing zeros (`2.5`, `0.075`, `15`).
    pub fn to_decimal(self) -> String {
        trim_decimal(i128::from(self.0), 6)
    }
}

impl fmt::Display for UnitPrice {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_decimal())
    }
}

/// An exact amount in pico-USD (i128: no sum of calls can overflow it).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Pico(pub i128);

impl Pico {
    pub fn usd(self) -> f64 {
        self.0 as f64 / PICO_PER_USD as f64
    }

    /// Rounded to the cent, halves away from zero (the commercial rule).
    pub fn round_cents(self) -> Cents {
        Cents(self.round_to(2))
    }

    /// In units of 10^-`decimals` USD (`decimals` ≤ 12), rounded halves away from zero.
    pub fn round_to(self, decimals: u32) -> i128 {
        div_round(self.0, 10i128.pow(12 - decimals))
    }

    /// USD with exactly `decimals` places (`12.35`, `0.000125`), rounded as [`Pico::round_to`].
    pub fn to_fixed(self, decimals: u32) -> String {
        let q = self.round_to(decimals);
        let sign = if q < 0 { "-" } else { "" };
        if decimals == 0 {
            return format!("{sign}{}", q.abs());
        }
        let scale = 10i128.pow(decimals);
        format!("{sign}{}.{:0w$}", q.abs() / scale, q.abs() % scale, w = decimals as usize)
    }

    /// The exact USD value as a decimal without trailing zeros (`0.000125`, `12.5`).
    pub fn to_decimal(self) -> String {
        trim_decimal(self.0, 12)
    }
}

impl std::ops::Add for Pico {
    type Output = Pico;
    fn add(self, o: Pico) -> Pico {
        Pico(self.0 + o.0)
    }
}

impl std::ops::AddAssign for Pico {
    fn add_assign(&mut self, o: Pico) {
        self.0 += o.0;
    }
}

impl std::iter::Sum for Pico {
    fn sum<I: Iterator<Item = Pico>>(iter: I) -> Pico {
        Pico(iter.map(|p| p.0).sum())
    }
}

/// Whole cents.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Cents(pub i128);

impl fmt::Display for Cents {
    /// `12.34`, `-0.05`, `0.00`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let sign = if self.0 < 0 { "-" } else { "" };
        write!(f, "{sign}{}.{:02}", self.0.abs() / 100, self.0.abs() % 100)
    }
}

impl std::iter::Sum for Cents {
    fn sum<I: Iterator<Item = Cents>>(iter: I) -> Cents {
        Cents(iter.map(|c| c.0).sum())
    }
}

/// `n / d` rounded halves away from zero (`d` > 0).
pub fn div_round(n: i128, d: i128) -> i128 {
    let (q, r) = (n / d, n % d);
    if r.abs() * 2 >= d {
        q + n.signum()
    } else {
        q
    }
}

/// Rounds each amount to cents so that the rounded amounts add up to the rounded total
/// (largest remainder): every line is within a cent of its exact amount, and an invoice's
/// total is both the sum of its lines and its exact cost rounded once. Ties go to the earlier
/// line, so the result depends only on the order given.
pub fn allocate_cents(amounts: &[Pico]) -> Vec<Cents> {
    let total: Pico = amounts.iter().copied().sum();
    let floors: Vec<i128> = amounts.iter().map(|a| a.0.div_euclid(PICO_PER_CENT)).collect();
    let mut missing = total.round_cents().0 - floors.iter().sum::<i128>();
    let mut order: Vec<usize> = (0..amounts.len()).collect();
    order.sort_by_key(|&i| std::cmp::Reverse(amounts[i].0.rem_euclid(PICO_PER_CENT)));
    let mut cents = floors;
    for &i in order.iter().cycle().take(amounts.len() * 2) {
        if missing == 0 {
            break;
        }
        let step = missing.signum();
        cents[i] += step;
        missing -= step;
    }
    cents.into_iter().map(Cents).collect()
}

fn trim_decimal(value: i128, scale: u32) -> String {
    let unit = 10i128.pow(scale);
    let sign = if value < 0 { "-" } else { "" };
    let (int, frac) = (value.abs() / unit, value.abs() % unit);
    if frac == 0 {
        return format!("{sign}{int}");
    }
    let frac = format!("{frac:0width$}", width = scale as usize);
    format!("{sign}{int}.{}", frac.trim_end_matches('0'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prices_parse_exactly_or_not_at_all() {
        let p = |s| UnitPrice::parse_usd_per_million(s).map(|p| p.0);
        assert_eq!(p("2.50"), Some(2_500_000));
        assert_eq!(p("0.075"), Some(75_000));
        assert_eq!(p("15"), Some(15_000_000));
        assert_eq!(p("1_000"), Some(1_000_000_000));
        assert_eq!(p("1.5e-1"), Some(150_000));
        assert_eq!(p("2E3"), Some(2_000_000_000));
        assert_eq!(p("0.0000001"), None, "7 decimals cannot be held exactly");
        assert_eq!(p("-1"), None);
        assert_eq!(p("abc"), None);
        assert_eq!(p("."), None);
        assert_eq!(UnitPrice::from_usd_per_million(0.075).map(|p| p.0), Some(75_000));
        assert_eq!(UnitPrice(75_000).to_decimal(), "0.075");
        assert_eq!(UnitPrice(15_000_000).to_decimal(), "15");
    }

    #[test]
    fn amounts_are_exact_and_round_half_away_from_zero() {
        // 1234 tokens at 0.15 USD/1M = 0.0001851 USD.
        let a = UnitPrice(150_000).amount(1234);
        assert_eq!(a.to_decimal(), "0.0001851");
        assert_eq!(Pico(PICO_PER_CENT / 2).round_cents(), Cents(1));
        assert_eq!(Pico(PICO_PER_CENT / 2 - 1).round_cents(), Cents(0));
        assert_eq!(Pico(-PICO_PER_CENT / 2).round_cents(), Cents(-1));
        assert_eq!(Pico(125_000_000).to_fixed(6), "0.000125");
        assert_eq!(Pico(-2_500_000_000_000).to_fixed(2), "-2.50");
        assert_eq!(Pico(-400_000).to_fixed(6), "0.000000", "no sign on what rounds to zero");
        assert_eq!(Cents(1234).to_string(), "12.34");
        assert_eq!(Cents(-5).to_string(), "-0.05");
        assert_eq!(Cents(0).to_string(), "0.00");
    }

    #[test]
    fn allocated_cents_add_up_to_the_rounded_total() {
        let third = Pico(PICO_PER_CENT / 3); // 0.333… cent each
        let lines = [third, third, third, Pico(PICO_PER_CENT * 250 + PICO_PER_CENT * 6 / 10)];
        let cents = allocate_cents(&lines);
        let total: Pico = lines.iter().copied().sum();
        assert_eq!(cents.iter().copied().sum::<Cents>(), total.round_cents());
        for (c, a) in cents.iter().zip(lines) {
            assert!((c.0 * PICO_PER_CENT - a.0).abs() < PICO_PER_CENT, "{c} vs {}", a.to_decimal());
        }
        assert_eq!(allocate_cents(&[]), vec![]);
    }
}
