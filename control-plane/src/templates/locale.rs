//! Locales in templates: which locale's template a user gets, and the
//! `plural` filter that words counts by the user's language.
//!
//! # Promises
//!
//! * **A fallback chain from the user's `locale` trait.** `de-AT` tries
//!   `de-AT`, then `de`, then the type's own templates; `pt_BR.UTF-8`
//!   (a POSIX locale, as some apps store it) is read as `pt-BR`. Tags
//!   compare case-insensitively (`de-at` is `de-AT`). A user without a
//!   `locale`, or with one that is not a language tag, gets the type's own
//!   templates. Within a locale the channel's template comes before the
//!   locale's fallback: a German fallback beats an English email template.
//! * **Locale keys are checked on the way in**: a key that is not a BCP 47
//!   language tag (`de`, `de-AT`, `zh-Hant-TW`, `es-419`), or two keys
//!   that are the same tag in different case, refuse the whole type with
//!   [`TemplateError::InvalidLocale`].
//! * **Plural words by CLDR's rules** for the user's language
//!   (`intl_pluralrules`): `{{ count | plural(one="# comment", other="#
//!   comments") }}` picks `zero`, `one`, `two`, `few`, `many` or `other`
//!   (Polish has `few` and `many`, Arabic all six), falling back to
//!   `other`, which is required; `#` in the chosen text is the number. A
//!   language without rules uses English's.
//!
//! Dates, times, numbers and money have filters of their own
//! (`super::format`).

use intl_pluralrules::{PluralCategory, PluralRuleType, PluralRules};
use minijinja::value::{Kwargs, Value};
use minijinja::{Error, ErrorKind, State};
use unic_langid::LanguageIdentifier;

use super::TemplateError;

/// The locale templates see (`locale`) and plural rules use for a user
/// without one.
pub const DEFAULT: &str = "en";

/// The canonical, lowercase form of a BCP 47 language tag (`de-at`), or
/// `None` when `tag` is not one. A POSIX locale's `_` and its `.codeset`
/// or `@modifier` are accepted (`de_AT.UTF-8` is `de-at`).
pub fn canonical(tag: &str) -> Option<String> {
    let tag = tag.split(['.', '@']).next().unwrap_or_default();
    let mut subtags = tag.split(['-', '_']);
    let language = subtags.next()?;
    let letters = |s: &str, range: std::ops::RangeInclusive<usize>| {
        range.contains(&s.len()) && s.bytes().all(|b| b.is_ascii_alphabetic())
    };
    if !letters(language, 2..=3) {
        return None;
    }
    let mut canonical = language.to_ascii_lowercase();
    for subtag in subtags {
        let ok =
            (1..=8).contains(&subtag.len()) && subtag.bytes().all(|b| b.is_ascii_alphanumeric());
        if !ok {
            return None;
        }
        canonical.push('-');
        canonical.push_str(&subtag.to_ascii_lowercase());
    }
    Some(canonical)
}

/// The locales to try for `tag`, most specific first, canonical:
/// `de-AT-1996` → `de-at-1996`, `de-at`, `de`. Empty when `tag` is not a
/// language tag.
pub fn chain(tag: &str) -> Vec<String> {
    let Some(full) = canonical(tag) else {
        return Vec::new();
    };
    let mut chain = vec![full.clone()];
    let mut rest = full.as_str();
    while let Some((shorter, _)) = rest.rsplit_once('-') {
        chain.push(shorter.to_owned());
        rest = shorter;
    }
    chain
}

/// The user's `locale` trait, when it is a language tag (as written).
pub fn of_user(user: &serde_json::Value) -> Option<String> {
    let tag = user.get("locale")?.as_str()?;
    canonical(tag).map(|_| tag.to_owned())
}

/// Refuses locale keys that are not language tags, or that name one tag
/// twice.
pub(super) fn check_keys<'a>(
    notification_type: &str,
    keys: impl Iterator<Item = &'a String>,
) -> Result<(), TemplateError> {
    let mut seen = std::collections::BTreeSet::new();
    for key in keys {
        let invalid = |detail: &str| TemplateError::InvalidLocale {
            notification_type: notification_type.to_owned(),
            locale: key.clone(),
            detail: detail.to_owned(),
        };
        // A key becomes part of template names: no POSIX extras there.
        if key.contains(['.', '@', '_']) {
            return Err(invalid(
                "use a BCP 47 language tag such as de, de-AT or pt-BR",
            ));
        }
        let canonical = canonical(key)
            .ok_or_else(|| invalid("use a BCP 47 language tag such as de, de-AT or pt-BR"))?;
        if !seen.insert(canonical) {
            return Err(invalid("the same tag is there twice (tags ignore case)"));
        }
    }
    Ok(())
}

/// The `plural` filter: the text of `value`'s CLDR plural category in the
/// template's `locale`, `#` replaced by the number.
// minijinja passes a filter's arguments by value.
#[allow(clippy::needless_pass_by_value)]
pub(super) fn plural(state: &State, value: Value, options: Kwargs) -> Result<String, Error> {
    let number: f64 = f64::try_from(value.clone()).map_err(|_| {
        Error::new(
            ErrorKind::InvalidOperation,
            format!("plural needs a number, got {value}"),
        )
    })?;
    let tag = state
        .lookup("locale")
        .and_then(|locale| locale.as_str().map(str::to_owned))
        .unwrap_or_else(|| DEFAULT.to_owned());
    let category = category(&tag, number);
    let name = match category {
        PluralCategory::ZERO => "zero",
        PluralCategory::ONE => "one",
        PluralCategory::TWO => "two",
        PluralCategory::FEW => "few",
        PluralCategory::MANY => "many",
        PluralCategory::OTHER => "other",
    };
    let text: Option<String> = options.get(name)?;
    let other: String = options.get("other")?;
    for known in ["zero", "one", "two", "few", "many"] {
        // Marks the optional ones as used (`other` is required).
        let _: Option<String> = options.get(known)?;
    }
    options.assert_all_used()?;
    let number = value.to_string();
    Ok(text.unwrap_or(other).replace('#', &number))
}

/// The CLDR cardinal category of `number` in the language of `tag`
/// (English's rules for a language CLDR has none for).
fn category(tag: &str, number: f64) -> PluralCategory {
    let rules = |tag: &str| {
        let language: LanguageIdentifier = canonical(tag)?.parse().ok()?;
        PluralRules::create(language, PluralRuleType::CARDINAL).ok()
    };
    let rules = rules(tag)
        .or_else(|| {
            // `de-AT` has no rules of its own: its language does.
            let language = tag.split(['-', '_']).next().unwrap_or_default();
            rules(language)
        })
        .or_else(|| rules(DEFAULT));
    rules
        .and_then(|rules| rules.select(number).ok())
        .unwrap_or(PluralCategory::OTHER)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tags_are_read_leniently_and_compared_in_one_case() {
        assert_eq!(canonical("de-AT").as_deref(), Some("de-at"));
        assert_eq!(canonical("pt_BR.UTF-8").as_deref(), Some("pt-br"));
        assert_eq!(canonical("zh-Hant-TW").as_deref(), Some("zh-hant-tw"));
        assert_eq!(canonical("es-419").as_deref(), Some("es-419"));
        for bad in ["", "d", "deutsch", "de--AT", "1de", "de-AT/x", "de AT"] {
            assert_eq!(canonical(bad), None, "{bad:?}");
        }
        assert_eq!(chain("de-AT-1996"), ["de-at-1996", "de-at", "de"]);
        assert_eq!(chain("fr"), ["fr"]);
        assert!(chain("klingon!").is_empty());
    }

    #[test]
    fn plural_categories_follow_cldr() {
        use PluralCategory::*;
        assert_eq!(category("en", 1.0), ONE);
        assert_eq!(category("en", 2.0), OTHER);
        assert_eq!(category("fr", 0.0), ONE, "French: 0 is singular");
        assert_eq!(category("pl", 3.0), FEW);
        assert_eq!(category("pl", 5.0), MANY);
        assert_eq!(category("ar", 0.0), ZERO);
        assert_eq!(category("ar", 2.0), TWO);
        assert_eq!(category("ja", 1.0), OTHER, "Japanese has one form");
        assert_eq!(category("de-AT", 1.0), ONE);
        assert_eq!(category("xx-unknown", 1.0), ONE, "English's rules");
    }
}
