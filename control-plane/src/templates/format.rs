//! Dates, times, numbers and money in the user's locale and time zone:
//! the `date`, `datetime`, `time`, `number` and `money` template filters.
//!
//! # Promises
//!
//! * **CLDR's formats for the user's `locale`** (ICU4X's compiled data:
//!   `icu_datetime`, `icu_decimal`): `{{ data.due | date }}` is
//!   `Dec 7, 2026` for `en`, `07.12.2026` for `de`; `{{ 1234.5 | number }}`
//!   is `1,234.5` for `en`, `1.234,5` for `de`. A locale CLDR lacks falls
//!   back to its language, then to the root locale's formats.
//! * **In the user's time zone**: the template's `timezone` (the user's
//!   preferences' zone, else their `timezone` trait, else UTC), or a
//!   `tz="Europe/Berlin"` argument. A time is an RFC 3339 string or a
//!   number of seconds since 1970.
//! * **Money** is the amount rounded to the currency's minor unit (two
//!   decimals; none for the ISO 4217 currencies that have none, such as
//!   JPY), formatted as a number of the locale, followed by the currency's
//!   ISO code: `{{ 1234.5 | money("EUR") }}` is `1,234.50 EUR` in `en`,
//!   `1.234,50 EUR` in `de`. Currency symbols and their placement are not
//!   localized (ICU4X's currency formatter is still experimental).
//! * **Bad input is an error naming the filter and the value** (the
//!   channel is then skipped with that reason, like any render error),
//!   never a guess.

use icu_datetime::DateTimeFormatter;
use icu_datetime::fieldsets::{T, YMD};
use icu_datetime::input::{Date, DateTime, Time};
use icu_datetime::options::Length;
use icu_decimal::DecimalFormatter;
use icu_decimal::input::Decimal;
use icu_locale_core::Locale;
use minijinja::value::{Kwargs, Value};
use minijinja::{Error, ErrorKind, State};

use super::locale::{DEFAULT, canonical};

/// ISO 4217 currencies without a minor unit.
const NO_MINOR_UNIT: [&str; 16] = [
    "BIF", "CLP", "DJF", "GNF", "ISK", "JPY", "KMF", "KRW", "PYG", "RWF", "UGX", "UYI", "VND",
    "VUV", "XAF", "XOF",
];

fn invalid(message: String) -> Error {
    Error::new(ErrorKind::InvalidOperation, message)
}

/// The template's locale as ICU4X reads it (`en` when it has none or an
/// unreadable one).
fn locale_of(state: &State) -> Locale {
    let tag = state
        .lookup("locale")
        .and_then(|locale| locale.as_str().and_then(canonical))
        .unwrap_or_else(|| DEFAULT.to_owned());
    Locale::try_from_str(&tag).unwrap_or(icu_locale_core::locale!("en"))
}

/// The time zone to show times in: `tz=` if given, else the template's
/// `timezone`, else UTC.
fn zone_of(state: &State, options: &Kwargs, filter: &str) -> Result<jiff::tz::TimeZone, Error> {
    let asked: Option<String> = options.get("tz")?;
    let name = asked.or_else(|| {
        state
            .lookup("timezone")
            .and_then(|zone| zone.as_str().map(str::to_owned))
    });
    match name {
        None => Ok(jiff::tz::TimeZone::UTC),
        Some(name) => crate::preferences::Tz::new(&name)
            .map(|tz| tz.time_zone().clone())
            .map_err(|_| invalid(format!("{filter}: unknown time zone {name:?}"))),
    }
}

/// `value` as an instant: an RFC 3339 string, or seconds since 1970.
fn instant(value: &Value, filter: &str) -> Result<jiff::Timestamp, Error> {
    if let Some(text) = value.as_str() {
        return text.parse::<jiff::Timestamp>().map_err(|error| {
            invalid(format!(
                "{filter}: {text:?} is not an RFC 3339 time ({error})"
            ))
        });
    }
    let seconds = i64::try_from(value.clone()).map_err(|_| {
        invalid(format!(
            "{filter} needs an RFC 3339 time or unix seconds, got {value}"
        ))
    })?;
    jiff::Timestamp::from_second(seconds)
        .map_err(|error| invalid(format!("{filter}: {seconds} is out of range ({error})")))
}

/// The formatting length of `length=` (`short`, `medium`, `long`).
fn length_of(options: &Kwargs, filter: &str, default: Length) -> Result<Length, Error> {
    let asked: Option<String> = options.get("length")?;
    match asked.as_deref() {
        None => Ok(default),
        Some("short") => Ok(Length::Short),
        Some("medium") => Ok(Length::Medium),
        Some("long") => Ok(Length::Long),
        Some(other) => Err(invalid(format!(
            "{filter}: length {other:?} is not short, medium or long"
        ))),
    }
}

/// The local date and time of `value` in the zone the filter uses.
fn local(
    state: &State,
    value: &Value,
    options: &Kwargs,
    filter: &str,
) -> Result<DateTime<icu_calendar::Iso>, Error> {
    let zone = zone_of(state, options, filter)?;
    let civil = instant(value, filter)?.to_zoned(zone).datetime();
    let out_of_range = |error| invalid(format!("{filter}: {value} cannot be shown ({error:?})"));
    let date = Date::try_new_iso(
        i32::from(civil.year()),
        u8::try_from(civil.month()).unwrap_or(1),
        u8::try_from(civil.day()).unwrap_or(1),
    )
    .map_err(out_of_range)?;
    let time = Time::try_new(
        u8::try_from(civil.hour()).unwrap_or(0),
        u8::try_from(civil.minute()).unwrap_or(0),
        u8::try_from(civil.second()).unwrap_or(0),
        0,
    )
    .map_err(|error| invalid(format!("{filter}: {value} cannot be shown ({error:?})")))?;
    Ok(DateTime { date, time })
}

/// `{{ t | date }}`, `{{ t | date(length="long") }}`: the day of `t`.
#[allow(clippy::needless_pass_by_value)]
pub(super) fn date(state: &State, value: Value, options: Kwargs) -> Result<String, Error> {
    let length = length_of(&options, "date", Length::Medium)?;
    let at = local(state, &value, &options, "date")?;
    options.assert_all_used()?;
    let formatter = DateTimeFormatter::try_new(locale_of(state).into(), YMD::for_length(length))
        .map_err(|error| invalid(format!("date: {error}")))?;
    Ok(formatter.format(&at.date).to_string())
}

/// `{{ t | datetime }}`: the day and the time (hours and minutes) of `t`.
#[allow(clippy::needless_pass_by_value)]
pub(super) fn datetime(state: &State, value: Value, options: Kwargs) -> Result<String, Error> {
    let length = length_of(&options, "datetime", Length::Medium)?;
    let at = local(state, &value, &options, "datetime")?;
    options.assert_all_used()?;
    let fields = YMD::for_length(length).with_time_hm();
    let formatter = DateTimeFormatter::try_new(locale_of(state).into(), fields)
        .map_err(|error| invalid(format!("datetime: {error}")))?;
    Ok(formatter.format(&at).to_string())
}

/// `{{ t | time }}`: the time of day (hours and minutes) of `t`.
#[allow(clippy::needless_pass_by_value)]
pub(super) fn time(state: &State, value: Value, options: Kwargs) -> Result<String, Error> {
    let at = local(state, &value, &options, "time")?;
    options.assert_all_used()?;
    let formatter = DateTimeFormatter::try_new(locale_of(state).into(), T::hm())
        .map_err(|error| invalid(format!("time: {error}")))?;
    Ok(formatter.format(&at.time).to_string())
}

/// `value` as an exact decimal: a number, or a decimal string ("12.30").
fn decimal(value: &Value, filter: &str) -> Result<Decimal, Error> {
    let text = match value.as_str() {
        Some(text) => text.to_owned(),
        None if value.is_number() => value.to_string(),
        None => return Err(invalid(format!("{filter} needs a number, got {value}"))),
    };
    Decimal::try_from_str(text.trim())
        .map_err(|_| invalid(format!("{filter}: {text:?} is not a decimal number")))
}

fn format_decimal(state: &State, number: &Decimal, filter: &str) -> Result<String, Error> {
    let formatter = DecimalFormatter::try_new(locale_of(state).into(), Default::default())
        .map_err(|error| invalid(format!("{filter}: {error}")))?;
    Ok(formatter.format(number).to_string())
}

/// `{{ n | number }}`, `{{ n | number(decimals=2) }}`: `n` with the
/// locale's digits, grouping and decimal sign (rounded half-even to
/// `decimals` places and padded to them, when given).
#[allow(clippy::needless_pass_by_value)]
pub(super) fn number(state: &State, value: Value, options: Kwargs) -> Result<String, Error> {
    let mut number = decimal(&value, "number")?;
    let decimals: Option<u8> = options.get("decimals")?;
    options.assert_all_used()?;
    if let Some(decimals) = decimals {
        let position = -i16::from(decimals.min(20));
        number.round(position);
        number.pad_end(position);
    }
    format_decimal(state, &number, "number")
}

/// `{{ amount | money("EUR") }}` (or `currency="EUR"`): see the module
/// doc.
#[allow(clippy::needless_pass_by_value)]
pub(super) fn money(
    state: &State,
    value: Value,
    currency: Option<String>,
    options: Kwargs,
) -> Result<String, Error> {
    let named: Option<String> = options.get("currency")?;
    options.assert_all_used()?;
    let currency = currency
        .or(named)
        .ok_or_else(|| invalid("money needs a currency: money(\"EUR\")".to_owned()))?;
    if currency.len() != 3 || !currency.bytes().all(|b| b.is_ascii_uppercase()) {
        return Err(invalid(format!(
            "money: currency {currency:?} is not an ISO 4217 code such as \"EUR\""
        )));
    }
    let mut amount = decimal(&value, "money")?;
    let minor = if NO_MINOR_UNIT.contains(&currency.as_str()) {
        0
    } else {
        -2
    };
    amount.round(minor);
    amount.pad_end(minor);
    Ok(format!(
        "{} {currency}",
        format_decimal(state, &amount, "money")?
    ))
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::super::{RenderInput, Template, TemplateSet};
    use crate::channels::ChannelKind;

    /// `source` rendered as a title for a user with these traits.
    fn render(source: &str, user: &serde_json::Value) -> Result<String, String> {
        let mut set = TemplateSet::new();
        let template = Template {
            title: source.into(),
            ..Template::default()
        };
        set.set("t", None, template).map_err(|e| e.to_string())?;
        let data = json!({"due": "2026-12-07T08:30:00Z", "amount": 1234.5, "price": "0.5"});
        set.render(
            ChannelKind::InApp,
            RenderInput {
                notification_type: "t",
                notification_id: "n",
                data: &data,
                user,
            },
        )
        .map(|rendered| rendered.title)
        .map_err(|e| e.to_string())
    }

    #[test]
    fn dates_follow_the_locale_and_the_users_zone() {
        let en = json!({});
        let de = json!({"locale": "de-AT", "timezone": "Europe/Vienna"});
        let ja = json!({"locale": "ja", "timezone": "Asia/Tokyo"});
        assert_eq!(render("{{ data.due | date }}", &en).unwrap(), "Dec 7, 2026");
        assert_eq!(render("{{ data.due | date }}", &de).unwrap(), "07.12.2026");
        assert_eq!(
            render("{{ data.due | date(length=\"long\") }}", &de).unwrap(),
            "7. Dezember 2026"
        );
        assert_eq!(
            render("{{ data.due | date(length=\"long\") }}", &en).unwrap(),
            "December 7, 2026"
        );
        assert_eq!(
            render("{{ data.due | datetime }}", &en).unwrap(),
            "Dec 7, 2026, 8:30\u{202f}AM"
        );
        assert_eq!(
            render("{{ data.due | datetime }}", &de).unwrap(),
            "07.12.2026, 09:30"
        );
        // 08:30 UTC is 09:30 in Vienna and 17:30 in Tokyo.
        assert_eq!(render("{{ data.due | time }}", &de).unwrap(), "09:30");
        assert_eq!(
            render("{{ data.due | time }}", &en).unwrap(),
            "8:30\u{202f}AM"
        );
        assert_eq!(render("{{ data.due | time }}", &ja).unwrap(), "17:30");
        assert_eq!(
            render("{{ data.due | datetime(tz=\"America/New_York\") }}", &en).unwrap(),
            "Dec 7, 2026, 3:30\u{202f}AM"
        );
        // Unix seconds work too; the date changes with the zone.
        assert_eq!(
            render("{{ 1796592600 | date }}", &ja).unwrap(),
            "2026/12/07",
            "2026-12-06T23:30Z is the 7th in Tokyo"
        );
        assert_eq!(
            render("{{ 1796592600 | date }}", &en).unwrap(),
            "Dec 6, 2026"
        );
    }

    #[test]
    fn numbers_and_money_follow_the_locale() {
        let en = json!({});
        let de = json!({"locale": "de"});
        assert_eq!(
            render("{{ data.amount | number }}", &en).unwrap(),
            "1,234.5"
        );
        assert_eq!(
            render("{{ data.amount | number }}", &de).unwrap(),
            "1.234,5"
        );
        assert_eq!(
            render("{{ 2.345 | number(decimals=2) }}", &en).unwrap(),
            "2.34",
            "half-even"
        );
        assert_eq!(
            render("{{ data.amount | money(\"EUR\") }}", &de).unwrap(),
            "1.234,50 EUR"
        );
        assert_eq!(
            render("{{ data.price | money(currency=\"USD\") }}", &en).unwrap(),
            "0.50 USD"
        );
        assert_eq!(
            render("{{ data.amount | money(\"JPY\") }}", &en).unwrap(),
            "1,234 JPY",
            "no minor unit (half-even)"
        );
    }

    #[test]
    fn bad_input_is_an_error_naming_the_filter() {
        let user = json!({});
        for (source, wanted) in [
            ("{{ \"soon\" | date }}", "date: \"soon\""),
            ("{{ data | datetime }}", "datetime needs"),
            (
                "{{ data.due | date(tz=\"Mars/Base\") }}",
                "unknown time zone",
            ),
            ("{{ data.due | date(length=\"tiny\") }}", "length \"tiny\""),
            ("{{ \"x\" | number }}", "number: \"x\""),
            ("{{ 1 | money }}", "money needs a currency"),
            ("{{ 1 | money(\"euro\") }}", "ISO 4217"),
            ("{{ 1 | money(\"EUR\", rate=2) }}", "rate"),
        ] {
            let error = render(source, &user).unwrap_err();
            assert!(error.contains(wanted), "{source}: {error}");
        }
    }
}
