//! Converts per-actor state from the first rollup layout (one key per
//! figure: `p` engagement counters, `ad` day markers, `ae`/`af` events by
//! name and features, `afu` funnel progress, `as` the open session as
//! JSON) into one [`ActorState`] record per actor (`a`, with an empty
//! `as` mark while a session is open), as [`Analytics::open`] starts.
//!
//! Nothing is recounted: the figures move as they are. Each batch of
//! actors is converted in one atomic sled batch (their records written,
//! their old keys removed), so an upgrade cut short resumes where it
//! stopped on the next start.
//!
//! [`Analytics::open`]: super::Analytics::open

use std::collections::BTreeMap;

use super::AnalyticsError;
use super::activity::{FunnelPass, OpenSession};
use super::actor::ActorState;
use super::keys::{decode_counters, key, parts};
use super::layout::{self, profile};

/// Actors converted per batch.
const BATCH_ACTORS: usize = 1000;

/// The old families, each keyed by the actor first.
const OLD_FAMILIES: [&str; 6] = ["p", "ad", "ae", "af", "afu", "as"];

/// What one old key says about its actor.
enum OldRecord {
    Profile(Vec<i64>),
    Day(jiff::civil::Date),
    Events(String, Vec<i64>),
    Feature(String, i64),
    Funnel(String, FunnelPass),
    OpenSession(OpenSession),
}

/// Converts every actor still in the old layout; returns how many. A
/// tree already marked [`layout::ACTOR_RECORDS`] is not read, so a start
/// does not walk the open-session marks every time.
pub fn upgrade(tree: &sled::Tree) -> Result<usize, AnalyticsError> {
    if tree.get(layout::LAYOUT)?.as_deref() == Some(&[layout::ACTOR_RECORDS][..]) {
        return Ok(0);
    }
    let mut old: BTreeMap<String, (Vec<sled::IVec>, Vec<OldRecord>)> = BTreeMap::new();
    for family in OLD_FAMILIES {
        for entry in tree.scan_prefix(key(family, &[])) {
            let (record_key, value) = entry?;
            let Some(record) = read_old(family, &record_key, &value)? else {
                continue;
            };
            let actor = parts(&record_key).into_iter().next().unwrap_or_default();
            let (keys, records) = old.entry(actor).or_default();
            keys.push(record_key);
            records.push(record);
        }
    }
    let converted = old.len();
    if converted > 0 {
        tracing::info!(
            actors = converted,
            "converting analytics actor state to one record per actor"
        );
    }
    let mut actors = old.into_iter().peekable();
    while actors.peek().is_some() {
        let mut batch = sled::Batch::default();
        for (actor, (old_keys, records)) in actors.by_ref().take(BATCH_ACTORS) {
            let mut state = match tree.get(layout::actor_key(&actor))? {
                Some(bytes) => ActorState::decode(&bytes)?,
                None => ActorState::new(),
            };
            for record in records {
                apply(&mut state, record);
            }
            state.profile[profile::ACTIVE_DAYS] = state.detail.days.len() as i64;
            for old_key in old_keys {
                batch.remove(old_key);
            }
            if state.detail.open_session.is_some() {
                batch.insert(layout::open_session_key(&actor), Vec::new());
            }
            batch.insert(layout::actor_key(&actor), state.encode()?);
        }
        tree.apply_batch(batch)?;
    }
    tree.insert(layout::LAYOUT, &[layout::ACTOR_RECORDS])?;
    Ok(converted)
}

/// Reads an old-layout record; `None` for a key that is not one (an
/// `as` mark of the new layout is empty).
fn read_old(
    family: &str,
    record_key: &[u8],
    value: &[u8],
) -> Result<Option<OldRecord>, AnalyticsError> {
    let corrupt = |what: &str| {
        AnalyticsError::Corrupt(format!(
            "old {what} record {}",
            String::from_utf8_lossy(record_key)
        ))
    };
    let second = || parts(record_key).into_iter().nth(1).unwrap_or_default();
    Ok(Some(match family {
        "p" => OldRecord::Profile(decode_counters(value)),
        "ad" => OldRecord::Day(second().parse().map_err(|_| corrupt("day"))?),
        "ae" => OldRecord::Events(second(), decode_counters(value)),
        "af" => OldRecord::Feature(
            second(),
            decode_counters(value).first().copied().unwrap_or(0),
        ),
        "afu" => OldRecord::Funnel(
            second(),
            serde_json::from_slice(value).map_err(|_| corrupt("funnel"))?,
        ),
        "as" if value.is_empty() => return Ok(None),
        "as" => {
            OldRecord::OpenSession(serde_json::from_slice(value).map_err(|_| corrupt("session"))?)
        }
        _ => return Ok(None),
    }))
}

fn apply(state: &mut ActorState, record: OldRecord) {
    match record {
        OldRecord::Profile(values) => {
            for (index, value) in values.into_iter().enumerate() {
                if index >= state.profile.len() {
                    state.profile.resize(index + 1, 0);
                }
                state.profile[index] = value;
            }
        }
        OldRecord::Day(day) => {
            state.mark_day(day);
        }
        OldRecord::Events(name, counts) => {
            let at = |index: usize| counts.get(index).copied().unwrap_or(0);
            state.detail.events.insert(name, [at(0), at(1)]);
        }
        OldRecord::Feature(feature, count) => {
            state.detail.features.insert(feature, count);
        }
        OldRecord::Funnel(funnel, pass) => {
            state.detail.funnels.insert(funnel, pass);
        }
        OldRecord::OpenSession(open) => state.detail.open_session = Some(open),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::analytics::keys::encode_counters;

    fn put(tree: &sled::Tree, family: &str, parts: &[&str], value: Vec<u8>) {
        tree.insert(key(family, parts), value).unwrap();
    }

    #[test]
    fn old_actor_keys_become_one_record() {
        let db = sled::Config::new().temporary(true).open().unwrap();
        let tree = db.open_tree("analytics").unwrap();
        let ann = "u:ann";
        put(
            &tree,
            "p",
            &[ann],
            encode_counters(&[9, 2, 60_000, 2, 1_000, 90_000]),
        );
        put(&tree, "ad", &[ann, "2026-11-20"], Vec::new());
        put(&tree, "ad", &[ann, "2026-11-22"], Vec::new());
        put(&tree, "ae", &[ann, "view"], encode_counters(&[7, 2]));
        put(&tree, "af", &[ann, "search"], encode_counters(&[2]));
        let pass = r#"{"step":1,"entered_at":"2026-11-22T10:00:00Z","entry_day":"2026-11-22"}"#;
        put(&tree, "afu", &[ann, "checkout"], pass.as_bytes().to_vec());
        let open = r#"{"key":"s-1","start":"2026-11-22T10:00:00Z","last":"2026-11-22T10:05:00Z","events":3,"explicit":true}"#;
        put(&tree, "as", &[ann], open.as_bytes().to_vec());
        // Another actor with engagement only, and figures that stay.
        put(
            &tree,
            "p",
            &["a:visitor"],
            encode_counters(&[1, 1, 0, 1, 5, 5]),
        );
        put(&tree, "ad", &["a:visitor", "2026-11-21"], Vec::new());
        put(
            &tree,
            "sum",
            &["d", "2026-11-22"],
            encode_counters(&[10, 2, 2]),
        );

        assert_eq!(upgrade(&tree).unwrap(), 2);

        let state =
            ActorState::decode(&tree.get(layout::actor_key(ann)).unwrap().unwrap()).unwrap();
        assert_eq!(state.profile, vec![9, 2, 60_000, 2, 1_000, 90_000]);
        assert_eq!(
            state.detail.days,
            vec![
                "2026-11-20".parse::<jiff::civil::Date>().unwrap(),
                "2026-11-22".parse().unwrap()
            ]
        );
        assert_eq!(state.detail.events["view"], [7, 2]);
        assert_eq!(state.detail.features["search"], 2);
        assert_eq!(state.detail.funnels["checkout"].step, 1);
        assert_eq!(state.detail.open_session.as_ref().unwrap().key, "s-1");
        // The open session is marked for the sweep, with an empty value.
        assert_eq!(
            tree.get(layout::open_session_key(ann))
                .unwrap()
                .unwrap()
                .len(),
            0
        );
        let visitor =
            ActorState::decode(&tree.get(layout::actor_key("a:visitor")).unwrap().unwrap())
                .unwrap();
        assert_eq!(visitor.profile[profile::EVENTS], 1);
        assert!(
            tree.get(layout::open_session_key("a:visitor"))
                .unwrap()
                .is_none()
        );

        for family in ["p", "ad", "ae", "af", "afu"] {
            assert_eq!(tree.scan_prefix(key(family, &[])).count(), 0, "{family}");
        }
        assert!(
            tree.get(key("sum", &["d", "2026-11-22"]))
                .unwrap()
                .is_some()
        );
        // Converted once: a second start finds nothing to do.
        assert_eq!(upgrade(&tree).unwrap(), 0);
    }
}
