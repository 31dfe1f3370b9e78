//! [`Money`]: an amount of the operator's one currency, exact to a
//! millionth of a unit.
//!
//! Costs per message are fractions of a cent (an SMS at 0.0079, an email
//! at 0.0001) and are summed millions of times, so they are kept as
//! integer micro-units, never floats: a sum of a million 0.0001 costs is
//! exactly 100.00. Amounts are written as decimal strings ("0.0079",
//! "25.00"; JSON and TOML numbers are accepted too) with at most six
//! decimals; more precision is refused rather than rounded, so what an
//! operator configured is what is counted.
//!
//! Amounts that come from outside (a notify's cost, an outcome's amount)
//! are bounded by [`Money::MAX`] in absolute value (nudge-proto's
//! `MAX_AMOUNT_UNITS`, refused at intake); sums never wrap: they use
//! [`Money::checked_add`] or saturate.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Micro-units of the configured currency (1.00 = 1,000,000).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Money(pub i64);

/// Micro-units in one unit.
pub const MICROS: i64 = 1_000_000;

/// [`Money::MAX`] in micro-units.
const MAX_MICROS: i64 = nudge_proto::validate::MAX_AMOUNT_UNITS as i64 * MICROS;

impl Money {
    pub const ZERO: Money = Money(0);
    /// The largest amount accepted from outside (one billion units).
    pub const MAX: Money = Money(MAX_MICROS);

    /// Whether this is an amount accepted from outside: within ±[`Money::MAX`].
    pub fn in_bounds(self) -> bool {
        self.0.checked_abs().is_some_and(|abs| abs <= MAX_MICROS)
    }

    pub fn micros(self) -> i64 {
        self.0
    }

    /// As a float, for rates and ratios only (never summed back).
    pub fn as_f64(self) -> f64 {
        self.0 as f64 / MICROS as f64
    }

    /// From a JSON number an application sent (an outcome's amount):
    /// rounded to the nearest micro-unit; `None` when not finite or beyond
    /// ±[`Money::MAX`].
    pub fn from_f64(value: f64) -> Option<Money> {
        let micros = (value * MICROS as f64).round();
        (micros.is_finite() && micros.abs() <= MAX_MICROS as f64).then_some(Money(micros as i64))
    }

    pub fn checked_add(self, other: Money) -> Option<Money> {
        self.0.checked_add(other.0).map(Money)
    }

    pub fn saturating_add(self, other: Money) -> Money {
        Money(self.0.saturating_add(other.0))
    }
}

/// Why an amount was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MoneyError {
    #[error("`{0}` is not a decimal amount (e.g. \"0.0079\")")]
    NotDecimal(String),
    #[error("`{0}` has more than 6 decimals")]
    TooPrecise(String),
    #[error("`{0}` is too large")]
    TooLarge(String),
}

impl FromStr for Money {
    type Err = MoneyError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let not_decimal = || MoneyError::NotDecimal(text.to_owned());
        let (negative, digits) = match text.strip_prefix('-') {
            Some(rest) => (true, rest),
            None => (false, text),
        };
        let (whole, fraction) = digits.split_once('.').unwrap_or((digits, ""));
        let all_digits = |part: &str| part.bytes().all(|byte| byte.is_ascii_digit());
        if whole.is_empty() || !all_digits(whole) || !all_digits(fraction) {
            return Err(not_decimal());
        }
        if digits.ends_with('.') {
            return Err(not_decimal());
        }
        if fraction.len() > 6 {
            return Err(MoneyError::TooPrecise(text.to_owned()));
        }
        let too_large = || MoneyError::TooLarge(text.to_owned());
        let whole: i64 = whole.parse().map_err(|_| too_large())?;
        let mut fraction_micros: i64 = 0;
        for (place, byte) in fraction.bytes().enumerate() {
            fraction_micros += i64::from(byte - b'0') * 10_i64.pow(5 - place as u32);
        }
        let micros = whole
            .checked_mul(MICROS)
            .and_then(|micros| micros.checked_add(fraction_micros))
            .ok_or_else(too_large)?;
        Ok(Money(if negative { -micros } else { micros }))
    }
}

impl fmt::Display for Money {
    /// At least two decimals, more only where the amount has them:
    /// "25.00", "0.0079", "-1.50".
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let sign = if self.0 < 0 { "-" } else { "" };
        let abs = self.0.unsigned_abs();
        let whole = abs / MICROS as u64;
        let mut fraction = format!("{:06}", abs % MICROS as u64);
        while fraction.len() > 2 && fraction.ends_with('0') {
            fraction.pop();
        }
        write!(f, "{sign}{whole}.{fraction}")
    }
}

impl Serialize for Money {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Money {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Written {
            Text(String),
            Integer(i64),
            Float(f64),
        }
        match Written::deserialize(deserializer)? {
            Written::Text(text) => text.parse().map_err(serde::de::Error::custom),
            Written::Integer(units) => units
                .checked_mul(MICROS)
                .map(Money)
                .ok_or_else(|| serde::de::Error::custom(format!("`{units}` is too large"))),
            // A float is read through its shortest decimal form, so 0.0079
            // in TOML is exactly 7,900 micro-units.
            Written::Float(value) => value.to_string().parse().map_err(serde::de::Error::custom),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_prints_exactly() {
        for (text, micros, shown) in [
            ("0.0079", 7_900, "0.0079"),
            ("25", 25_000_000, "25.00"),
            ("25.5", 25_500_000, "25.50"),
            ("-1.25", -1_250_000, "-1.25"),
            ("0.000001", 1, "0.000001"),
        ] {
            let money: Money = text.parse().unwrap();
            assert_eq!(money, Money(micros), "{text}");
            assert_eq!(money.to_string(), shown, "{text}");
        }
    }

    #[test]
    fn refuses_what_it_cannot_hold_exactly() {
        for text in ["", ".5", "1.", "1.2.3", "abc", "1e3", "+1", " 1"] {
            assert!(
                matches!(text.parse::<Money>(), Err(MoneyError::NotDecimal(_))),
                "{text}"
            );
        }
        assert!(matches!(
            "0.0000001".parse::<Money>(),
            Err(MoneyError::TooPrecise(_))
        ));
        assert!(matches!(
            "99999999999999999".parse::<Money>(),
            Err(MoneyError::TooLarge(_))
        ));
    }

    #[test]
    fn bounds_and_checked_sums() {
        assert_eq!("1000000000".parse::<Money>().unwrap(), Money::MAX);
        assert!(Money::MAX.in_bounds() && Money(-MAX_MICROS).in_bounds());
        assert!(!Money(MAX_MICROS + 1).in_bounds() && !Money(i64::MIN).in_bounds());
        assert_eq!(Money::from_f64(1e9), Some(Money::MAX));
        assert_eq!(Money::from_f64(1e9 + 1.0), None);
        assert_eq!(Money::from_f64(f64::NAN), None);
        assert_eq!(Money(i64::MAX).checked_add(Money(1)), None);
        assert_eq!(Money(i64::MAX).saturating_add(Money(1)), Money(i64::MAX));
    }

    #[test]
    fn a_million_small_costs_sum_exactly() {
        let cost: Money = "0.0001".parse().unwrap();
        let total = (0..1_000_000).fold(Money::ZERO, |sum, _| sum.saturating_add(cost));
        assert_eq!(total.to_string(), "100.00");
    }

    #[test]
    fn reads_toml_and_json_numbers() {
        #[derive(Deserialize)]
        struct Row {
            cost: Money,
        }
        let row: Row = toml::from_str("cost = 0.0079").unwrap();
        assert_eq!(row.cost, Money(7_900));
        let row: Row = serde_json::from_str(r#"{"cost": 3}"#).unwrap();
        assert_eq!(row.cost, Money(3_000_000));
        let row: Row = serde_json::from_str(r#"{"cost": "0.05"}"#).unwrap();
        assert_eq!(row.cost, Money(50_000));
    }
}
