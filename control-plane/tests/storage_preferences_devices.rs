//! The conformance suite of the preference and device stores: every case
//! runs on SQLite and on PostgreSQL (`support::Backend`), against the
//! promises of `control-plane/src/storage/{preferences,devices}.rs` and of
//! the domain stores over them (`preferences::PreferenceStore`,
//! `devices::DeviceStore`): defaults without a document, compare-and-swap
//! updates that lose nothing under concurrency, one record per address
//! that moves between users, the per-user device limit (deactivated
//! first, then least recently seen; never exceeded by concurrent
//! registrations), cleanup, erasure, and data that outlives a reopen.

mod support;

use std::time::Duration;

use jiff::{SignedDuration, Timestamp};
use nudge_control_plane::channels::{ChannelKind, Recipient};
use nudge_control_plane::devices::{
    CleanupReport, DeviceStore, NewDevice, Platform, Subscription, SubscriptionKeys,
};
use nudge_control_plane::preferences::{
    Frequency, OperatorDefaults, PreferenceStore, QuietHours, UserPreferences,
};
use nudge_control_plane::storage::{StorageMetrics, Stores};
use support::{Backend, fresh_settings};

fn at(second: i64) -> Timestamp {
    Timestamp::from_second(1_800_000_000 + second).unwrap()
}

fn token(platform: Platform, token: &str) -> NewDevice {
    NewDevice {
        platform,
        token: Some(token.to_owned()),
        subscription: None,
        label: None,
    }
}

/// A Web Push registration whose 16-byte `auth` secret is `label` padded
/// with `-` (registration checks the keys' form).
fn web_push(endpoint: &str, label: &str) -> NewDevice {
    NewDevice {
        platform: Platform::WebPush,
        token: None,
        subscription: Some(Subscription {
            endpoint: endpoint.to_owned(),
            keys: SubscriptionKeys {
                p256dh: "BNcRdreALRFXTkOOUHK1EtK2wtaz5Ry4YfYCA_0QTpQtUbVlUls0VJXg7A8u-Ts1XbjhazAkj7I99e8QcYP7DkM".into(),
                auth: auth_secret(label),
            },
        }),
        label: None,
    }
}

/// `label` padded to 16 bytes, in base64url: a well-formed `auth`.
fn auth_secret(label: &str) -> String {
    use base64::Engine;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(format!("{label:-<16}"))
}

/// The stores on a fresh database, and the dir that must outlive them.
async fn open(backend: Backend) -> (tempfile::TempDir, Stores) {
    let dir = tempfile::tempdir().unwrap();
    let stores = support::fresh_stores(backend, dir.path()).await;
    (dir, stores)
}

/// The device store with a limit of `max` per user and platform.
fn limited(stores: &Stores, max: usize) -> DeviceStore {
    let mut devices = stores.devices.clone();
    devices.set_max_per_user(max);
    devices
}

async fn tokens_of(devices: &DeviceStore, user: &str) -> Vec<String> {
    let mut tokens: Vec<String> = devices
        .list(user)
        .await
        .unwrap()
        .into_iter()
        .map(|device| {
            device
                .token
                .or(device.subscription.map(|s| s.endpoint))
                .unwrap()
        })
        .collect();
    tokens.sort();
    tokens
}

/// The user's FCM tokens, active or not, sorted.
async fn fcm_tokens(devices: &DeviceStore, user: &str) -> Vec<String> {
    let mut tokens: Vec<String> = devices
        .list(user)
        .await
        .unwrap()
        .into_iter()
        .filter(|device| device.platform == Platform::Fcm)
        .filter_map(|device| device.token)
        .collect();
    tokens.sort();
    tokens
}

async fn a_user_without_a_document_has_the_defaults(backend: Backend) {
    let (_dir, stores) = open(backend).await;
    let store: &PreferenceStore = &stores.preferences;
    assert_eq!(store.get("u1").await.unwrap(), UserPreferences::default());
    assert_eq!(store.stored("u1").await.unwrap(), None);
    assert!(!store.erase_user("u1").await.unwrap());
}

async fn preferences_round_trip_reset_and_erase(backend: Backend) {
    let (_dir, stores) = open(backend).await;
    let store = &stores.preferences;
    let defaults = OperatorDefaults::default();
    let mut prefs = UserPreferences {
        quiet_hours: Some(QuietHours::new("22:00", "07:00", "Europe/Berlin").unwrap()),
        ..UserPreferences::default()
    };
    prefs.set_channel(ChannelKind::Sms, false);
    prefs
        .set_frequency(&defaults, "comment", Frequency::Daily)
        .unwrap();
    store.put("u1", &prefs).await.unwrap();
    assert_eq!(store.get("u1").await.unwrap(), prefs);
    assert_eq!(store.stored("u1").await.unwrap(), Some(prefs.clone()));
    assert_eq!(store.get("u2").await.unwrap(), UserPreferences::default());

    let reset = store.reset_type("u1", "comment").await.unwrap();
    assert!(reset.types.is_empty());
    assert_eq!(reset.quiet_hours, prefs.quiet_hours);
    let reset = store.reset_all("u1").await.unwrap();
    assert_eq!(reset, UserPreferences::default());

    assert!(store.erase_user("u1").await.unwrap());
    assert_eq!(store.stored("u1").await.unwrap(), None);
    assert!(!store.erase_user("u1").await.unwrap());
}

async fn concurrent_updates_of_one_user_lose_nothing(backend: Backend) {
    let (_dir, stores) = open(backend).await;
    let defaults = OperatorDefaults::default();
    let updates = (0..16).map(|n| {
        let (store, defaults) = (stores.preferences.clone(), defaults.clone());
        tokio::spawn(async move {
            store
                .update("u1", |prefs| {
                    prefs.set_frequency(&defaults, &format!("type-{n}"), Frequency::Hourly)
                })
                .await
                .unwrap();
        })
    });
    for update in updates.collect::<Vec<_>>() {
        update.await.unwrap();
    }
    let prefs = stores.preferences.get("u1").await.unwrap();
    assert_eq!(prefs.types.len(), 16, "{prefs:?}");
}

async fn a_refused_change_stores_nothing(backend: Backend) {
    let (_dir, stores) = open(backend).await;
    let mut defaults = OperatorDefaults::default();
    defaults.types.insert(
        "payment_failed".into(),
        nudge_control_plane::preferences::TypeDefaults {
            critical: true,
            ..Default::default()
        },
    );
    let refused = stores
        .preferences
        .update("u1", |prefs| {
            prefs.set_type_channel(&defaults, "payment_failed", ChannelKind::Email, false)
        })
        .await;
    assert!(refused.is_err());
    assert_eq!(stores.preferences.stored("u1").await.unwrap(), None);
}

async fn registering_again_refreshes_the_one_record(backend: Backend) {
    let (_dir, stores) = open(backend).await;
    let devices = &stores.devices;
    let first = devices
        .register(
            "u1",
            &NewDevice {
                label: Some("Anna's phone".into()),
                ..token(Platform::Apns, "aa11")
            },
            at(0),
        )
        .await
        .unwrap();
    devices
        .set_active("u1", &first.id, false, "410 Unregistered", at(5))
        .await
        .unwrap();
    let second = devices
        .register("u1", &token(Platform::Apns, "aa11"), at(60))
        .await
        .unwrap();
    assert_eq!(second.id, first.id);
    assert_eq!(second.created_at, at(0));
    assert_eq!(second.last_seen_at, at(60));
    assert_eq!(second.label.as_deref(), Some("Anna's phone"), "kept");
    assert!(second.active);
    assert_eq!(second.deactivated_reason, None);
    assert_eq!(second.deactivated_at, None);
    assert_eq!(devices.list("u1").await.unwrap(), vec![second.clone()]);
    assert_eq!(
        devices.get("u1", &first.id).await.unwrap(),
        Some(second.clone())
    );

    // Web Push: keyed by endpoint, fresh keys replace the old ones.
    let push = devices
        .register("u1", &web_push("https://push.example/1", "old"), at(1))
        .await
        .unwrap();
    let rotated = devices
        .register("u1", &web_push("https://push.example/1", "new"), at(2))
        .await
        .unwrap();
    assert_eq!(rotated.id, push.id);
    assert_eq!(rotated.subscription.unwrap().keys.auth, auth_secret("new"));
    assert_eq!(
        devices.active("u1", Platform::WebPush).await.unwrap().len(),
        1
    );
    assert_eq!(devices.active("u1", Platform::Apns).await.unwrap().len(), 1);
    assert!(
        devices
            .active("u1", Platform::Fcm)
            .await
            .unwrap()
            .is_empty()
    );
}

async fn an_address_moves_to_the_user_who_registers_it(backend: Backend) {
    let (_dir, stores) = open(backend).await;
    let devices = &stores.devices;
    let alice = devices
        .register(
            "alice",
            &NewDevice {
                label: Some("alice's".into()),
                ..token(Platform::Fcm, "shared")
            },
            at(0),
        )
        .await
        .unwrap();
    let bob = devices
        .register("bob", &token(Platform::Fcm, "shared"), at(10))
        .await
        .unwrap();
    assert_eq!(bob.id, alice.id);
    assert_eq!(bob.created_at, at(10), "a new device for bob");
    assert_eq!(bob.label, None, "alice's label stays with alice");
    assert!(devices.list("alice").await.unwrap().is_empty());
    assert!(devices.get("alice", &alice.id).await.unwrap().is_none());
    assert!(!devices.delete("alice", &alice.id).await.unwrap());
    let gone = devices
        .deactivate_address(
            ChannelKind::Fcm,
            &bob.recipient().unwrap(),
            "UNREGISTERED",
            at(20),
        )
        .await
        .unwrap()
        .unwrap();
    assert_eq!(gone.user_id, "bob");
    assert!(!gone.active);
    assert_eq!(gone.deactivated_reason.as_deref(), Some("UNREGISTERED"));
    assert_eq!(gone.deactivated_at, Some(at(20)));
    let unknown = Recipient::DeviceToken {
        token: "never".into(),
    };
    assert_eq!(
        devices
            .deactivate_address(ChannelKind::Fcm, &unknown, "gone", at(20))
            .await
            .unwrap(),
        None
    );
}

async fn the_limit_evicts_deactivated_then_least_recently_seen(backend: Backend) {
    let (_dir, stores) = open(backend).await;
    let devices = limited(&stores, 3);
    let fcm = |name: &str| token(Platform::Fcm, name);
    for (n, name) in ["t1", "t2", "t3"].into_iter().enumerate() {
        devices
            .register("u1", &fcm(name), at(i64::try_from(n).unwrap()))
            .await
            .unwrap();
    }
    let t2 = devices.register("u1", &fcm("t2"), at(3)).await.unwrap();
    devices
        .set_active("u1", &t2.id, false, "operator", at(4))
        .await
        .unwrap();
    // Another user and another platform have budgets of their own.
    devices.register("u2", &fcm("other"), at(0)).await.unwrap();
    for n in 0..3 {
        devices
            .register(
                "u1",
                &web_push(&format!("https://push.example/{n}"), "a"),
                at(0),
            )
            .await
            .unwrap();
    }

    // One over: the deactivated t2 goes, although t1 is older.
    devices.register("u1", &fcm("t4"), at(10)).await.unwrap();
    assert_eq!(fcm_tokens(&devices, "u1").await, ["t1", "t3", "t4"]);
    // Refreshing one the user holds evicts nothing.
    devices.register("u1", &fcm("t1"), at(11)).await.unwrap();
    assert_eq!(devices.active("u1", Platform::Fcm).await.unwrap().len(), 3);
    // Then the least recently seen: t3 (t1 was just refreshed).
    devices.register("u1", &fcm("t5"), at(12)).await.unwrap();
    assert_eq!(fcm_tokens(&devices, "u1").await, ["t1", "t4", "t5"]);
    assert_eq!(
        devices.active("u1", Platform::WebPush).await.unwrap().len(),
        3
    );
    assert_eq!(tokens_of(&devices, "u2").await, ["other"]);
}

async fn concurrent_registrations_never_exceed_the_limit(backend: Backend) {
    let (_dir, stores) = open(backend).await;
    let devices = limited(&stores, 3);
    let registrations: Vec<_> = (0..12)
        .map(|n| {
            let devices = devices.clone();
            tokio::spawn(async move {
                devices
                    .register("u1", &token(Platform::Fcm, &format!("t{n}")), at(n))
                    .await
                    .unwrap();
            })
        })
        .collect();
    for registration in registrations {
        registration.await.unwrap();
    }
    assert_eq!(devices.list("u1").await.unwrap().len(), 3);
}

async fn cleanup_deactivates_stale_devices_then_deletes_them(backend: Backend) {
    let (_dir, stores) = open(backend).await;
    let devices = &stores.devices;
    let day = 86_400;
    devices
        .register("u1", &token(Platform::Fcm, "old"), at(0))
        .await
        .unwrap();
    devices
        .register("u1", &token(Platform::Fcm, "fresh"), at(50 * day))
        .await
        .unwrap();
    let stale_after = Duration::from_secs(60 * 86_400);
    let delete_after = Duration::from_secs(30 * 86_400);
    let now = at(61 * day);
    let report = devices
        .cleanup(now, stale_after, delete_after)
        .await
        .unwrap();
    assert_eq!(
        report,
        CleanupReport {
            deactivated: 1,
            deleted: 0
        }
    );
    let old = devices
        .list("u1")
        .await
        .unwrap()
        .into_iter()
        .find(|d| d.token.as_deref() == Some("old"))
        .unwrap();
    assert!(!old.active);
    assert_eq!(old.deactivated_reason.as_deref(), Some("inactive"));
    assert_eq!(old.deactivated_at, Some(now));

    let later = now
        .checked_add(SignedDuration::from_secs(30 * day + 1))
        .unwrap();
    let report = devices
        .cleanup(later, stale_after, delete_after)
        .await
        .unwrap();
    assert_eq!(
        report,
        CleanupReport {
            deactivated: 0,
            deleted: 1
        }
    );
    assert_eq!(tokens_of(devices, "u1").await, ["fresh"]);
}

async fn erasing_a_user_removes_only_their_devices(backend: Backend) {
    let (_dir, stores) = open(backend).await;
    let devices = &stores.devices;
    for name in ["a", "b"] {
        devices
            .register("u1", &token(Platform::Apns, name), at(0))
            .await
            .unwrap();
    }
    devices
        .register("u2", &token(Platform::Apns, "c"), at(0))
        .await
        .unwrap();
    assert_eq!(devices.erase_user("u1").await.unwrap(), 2);
    assert_eq!(devices.erase_user("u1").await.unwrap(), 0);
    assert!(devices.list("u1").await.unwrap().is_empty());
    assert_eq!(tokens_of(devices, "u2").await, ["c"]);
}

async fn reopening_keeps_preferences_and_devices(backend: Backend) {
    let dir = tempfile::tempdir().unwrap();
    let settings = fresh_settings(backend, dir.path()).await;
    let mut prefs = UserPreferences::default();
    prefs.set_channel(ChannelKind::Email, false);
    let device = {
        let stores = Stores::open(&settings, dir.path(), StorageMetrics::new())
            .await
            .unwrap();
        stores.preferences.put("u1", &prefs).await.unwrap();
        let device = stores
            .devices
            .register("u1", &web_push("https://push.example/x", "k"), at(0))
            .await
            .unwrap();
        stores.close().await.unwrap();
        device
    };
    let stores = Stores::open(&settings, dir.path(), StorageMetrics::new())
        .await
        .unwrap();
    assert_eq!(stores.preferences.get("u1").await.unwrap(), prefs);
    assert_eq!(stores.devices.list("u1").await.unwrap(), vec![device]);
}

/// Each case once per engine.
macro_rules! on_both_engines {
    ($($case:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $case() {
                    super::$case(super::Backend::Sqlite).await;
                }
            )*
        }
        mod postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $case() {
                    super::$case(super::Backend::Postgres).await;
                }
            )*
        }
    };
}

/// Whether a registration is the user's first of the address (HTTP 201,
/// gRPC `created`) is decided in its transaction: of registrations racing
/// for one new address, exactly one is told it created it; a repeat is
/// not; an address moved from another user is new to its new holder.
async fn exactly_one_racing_registration_creates_the_device(backend: Backend) {
    let (_dir, stores) = open(backend).await;
    let racers: Vec<_> = (0..6)
        .map(|_| {
            let devices = stores.devices.clone();
            tokio::spawn(async move {
                devices
                    .register_telling_new("u1", &token(Platform::Apns, "aa11"), at(0))
                    .await
                    .unwrap()
                    .1
            })
        })
        .collect();
    let mut created = 0;
    for racer in racers {
        created += usize::from(racer.await.unwrap());
    }
    assert_eq!(created, 1);
    let again = stores
        .devices
        .register_telling_new("u1", &token(Platform::Apns, "aa11"), at(60))
        .await
        .unwrap();
    assert!(!again.1, "a refresh creates nothing");
    let moved = stores
        .devices
        .register_telling_new("u2", &token(Platform::Apns, "aa11"), at(120))
        .await
        .unwrap();
    assert!(moved.1, "new to its new holder");
}

on_both_engines!(
    exactly_one_racing_registration_creates_the_device,
    a_user_without_a_document_has_the_defaults,
    preferences_round_trip_reset_and_erase,
    concurrent_updates_of_one_user_lose_nothing,
    a_refused_change_stores_nothing,
    registering_again_refreshes_the_one_record,
    an_address_moves_to_the_user_who_registers_it,
    the_limit_evicts_deactivated_then_least_recently_seen,
    concurrent_registrations_never_exceed_the_limit,
    cleanup_deactivates_stale_devices_then_deletes_them,
    erasing_a_user_removes_only_their_devices,
    reopening_keeps_preferences_and_devices,
);
