use std::time::Duration;

use jiff::{SignedDuration, Timestamp};

use super::*;

async fn store() -> (tempfile::TempDir, DeviceStore) {
    let dir = tempfile::tempdir().unwrap();
    let stores = crate::storage::Stores::open_embedded(dir.path())
        .await
        .unwrap();
    (dir, stores.devices)
}

fn token(platform: Platform, token: &str) -> NewDevice {
    NewDevice {
        platform,
        token: Some(token.to_owned()),
        subscription: None,
        label: None,
    }
}

fn web_push(endpoint: &str) -> NewDevice {
    NewDevice {
        platform: Platform::WebPush,
        token: None,
        subscription: Some(Subscription {
            endpoint: endpoint.to_owned(),
            keys: SubscriptionKeys {
                p256dh: "BNcRdreALRFXTkOOUHK1EtK2wtaz5Ry4YfYCA_0QTpQtUbVlUls0VJXg7A8u-Ts1XbjhazAkj7I99e8QcYP7DkM".into(),
                auth: "tBHItJI5svbpez7KI4CCXg".into(),
            },
        }),
        label: Some("Firefox".into()),
    }
}

fn at(seconds: i64) -> Timestamp {
    Timestamp::from_second(1_800_000_000 + seconds).unwrap()
}

#[tokio::test]
async fn registering_the_same_token_twice_keeps_one_record() {
    let (_dir, store) = store().await;
    let first = store
        .register("u1", &token(Platform::Apns, "aa11"), at(0))
        .await
        .unwrap();
    let second = store
        .register("u1", &token(Platform::Apns, "aa11"), at(60))
        .await
        .unwrap();
    assert_eq!(first.id, second.id);
    assert_eq!(second.created_at, at(0));
    assert_eq!(second.last_seen_at, at(60));
    assert_eq!(store.list("u1").await.unwrap().len(), 1);
}

#[tokio::test]
async fn the_same_token_on_another_platform_is_another_device() {
    let (_dir, store) = store().await;
    store
        .register("u1", &token(Platform::Apns, "tok"), at(0))
        .await
        .unwrap();
    store
        .register("u1", &token(Platform::Fcm, "tok"), at(0))
        .await
        .unwrap();
    assert_eq!(store.list("u1").await.unwrap().len(), 2);
    assert_eq!(store.active("u1", Platform::Fcm).await.unwrap().len(), 1);
}

#[tokio::test]
async fn a_token_registered_by_another_user_moves_to_them() {
    let (_dir, store) = store().await;
    store
        .register("alice", &token(Platform::Fcm, "shared-phone"), at(0))
        .await
        .unwrap();
    let moved = store
        .register("bob", &token(Platform::Fcm, "shared-phone"), at(10))
        .await
        .unwrap();
    assert!(store.list("alice").await.unwrap().is_empty());
    assert_eq!(store.list("bob").await.unwrap(), vec![moved.clone()]);
    // A provider's "gone" now deactivates bob's record.
    let recipient = moved.recipient().unwrap();
    let deactivated = store
        .deactivate_address(ChannelKind::Fcm, &recipient, "UNREGISTERED", at(20))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(deactivated.user_id, "bob");
}

#[tokio::test]
async fn an_invalid_address_is_deactivated_and_left_out_of_planning() {
    let (_dir, store) = store().await;
    let phone = store
        .register("u1", &token(Platform::Apns, "dead"), at(0))
        .await
        .unwrap();
    store
        .register("u1", &token(Platform::Apns, "alive"), at(0))
        .await
        .unwrap();
    let gone = store
        .deactivate_address(
            ChannelKind::Apns,
            &phone.recipient().unwrap(),
            "410 Unregistered",
            at(5),
        )
        .await
        .unwrap()
        .unwrap();
    assert!(!gone.active);
    assert_eq!(gone.deactivated_reason.as_deref(), Some("410 Unregistered"));
    assert_eq!(gone.deactivated_at, Some(at(5)));
    let active = store.active("u1", Platform::Apns).await.unwrap();
    assert_eq!(active.len(), 1);
    assert_eq!(active[0].token.as_deref(), Some("alive"));
    // Re-registering (the app got a fresh token for the same value)
    // reactivates it.
    let back = store
        .register("u1", &token(Platform::Apns, "dead"), at(9))
        .await
        .unwrap();
    assert!(back.active);
    assert_eq!(back.deactivated_reason, None);
}

#[tokio::test]
async fn unknown_addresses_deactivate_nothing() {
    let (_dir, store) = store().await;
    let recipient = Recipient::DeviceToken {
        token: "never-registered".into(),
    };
    assert_eq!(
        store
            .deactivate_address(ChannelKind::Apns, &recipient, "gone", at(0))
            .await
            .unwrap(),
        None
    );
    let email = Recipient::Email {
        address: "a@example.com".into(),
        name: None,
    };
    assert_eq!(
        store
            .deactivate_address(ChannelKind::Email, &email, "gone", at(0))
            .await
            .unwrap(),
        None
    );
}

#[tokio::test]
async fn web_push_subscriptions_are_keyed_by_endpoint_and_keep_fresh_keys() {
    let (_dir, store) = store().await;
    let first = store
        .register("u1", &web_push("https://push.example/ep/1"), at(0))
        .await
        .unwrap();
    let mut rotated = web_push("https://push.example/ep/1");
    rotated.subscription.as_mut().unwrap().keys.auth = "bmV3LWF1dGgtc2VjcmV0IQ".into();
    let second = store.register("u1", &rotated, at(1)).await.unwrap();
    assert_eq!(first.id, second.id);
    match second.recipient().unwrap() {
        Recipient::WebPush { endpoint, auth, .. } => {
            assert_eq!(endpoint, "https://push.example/ep/1");
            assert_eq!(auth, "bmV3LWF1dGgtc2VjcmV0IQ");
        }
        other => panic!("unexpected recipient {other:?}"),
    }
}

#[tokio::test]
async fn registrations_missing_their_address_are_refused() {
    let (_dir, store) = store().await;
    let cases = [
        NewDevice {
            token: None,
            ..token(Platform::Apns, "")
        },
        token(Platform::Fcm, "   "),
        token(Platform::Fcm, "has space"),
        token(Platform::WebPush, "not-a-subscription"),
        web_push("ftp://push.example/1"),
        NewDevice {
            subscription: web_push("https://x.example").subscription,
            ..token(Platform::Apns, "tok")
        },
        token(Platform::Apns, &"a".repeat(3000)),
    ];
    for case in cases {
        let error = store.register("u1", &case, at(0)).await.unwrap_err();
        assert!(
            matches!(error, DeviceError::Invalid(_)),
            "{case:?}: {error}"
        );
    }
    assert!(store.list("u1").await.unwrap().is_empty());
    assert!(matches!(
        store.register("", &token(Platform::Apns, "t"), at(0)).await,
        Err(DeviceError::Invalid(_))
    ));
}

#[tokio::test]
async fn delete_removes_the_record_and_its_owner_entry() {
    let (_dir, store) = store().await;
    let device = store
        .register("u1", &token(Platform::Fcm, "t1"), at(0))
        .await
        .unwrap();
    assert!(
        !store.delete("u2", &device.id).await.unwrap(),
        "not u2's device"
    );
    assert!(store.delete("u1", &device.id).await.unwrap());
    assert!(!store.delete("u1", &device.id).await.unwrap());
    assert_eq!(
        store
            .deactivate_address(ChannelKind::Fcm, &device.recipient().unwrap(), "x", at(1))
            .await
            .unwrap(),
        None
    );
}

#[tokio::test]
async fn cleanup_deactivates_stale_devices_then_deletes_them() {
    let (_dir, store) = store().await;
    let day = 86_400;
    store
        .register("u1", &token(Platform::Fcm, "old"), at(0))
        .await
        .unwrap();
    store
        .register("u1", &token(Platform::Fcm, "fresh"), at(50 * day))
        .await
        .unwrap();
    let stale_after = Duration::from_secs(60 * day as u64);
    let delete_after = Duration::from_secs(30 * day as u64);

    let now = at(61 * day);
    let report = store.cleanup(now, stale_after, delete_after).await.unwrap();
    assert_eq!(
        report,
        CleanupReport {
            deactivated: 1,
            deleted: 0
        }
    );
    let old = store
        .list("u1")
        .await
        .unwrap()
        .into_iter()
        .find(|d| d.token.as_deref() == Some("old"))
        .unwrap();
    assert!(!old.active);
    assert_eq!(old.deactivated_reason.as_deref(), Some("inactive"));

    // 30 days after the deactivation it is deleted; the fresh one (seen
    // on day 50, 41 days before) stays active.
    let later = now
        .checked_add(SignedDuration::from_secs(30 * day + 1))
        .unwrap();
    let report = store
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
    let left = store.list("u1").await.unwrap();
    assert_eq!(left.len(), 1);
    assert!(left[0].active && left[0].token.as_deref() == Some("fresh"));
}

/// The keys a registration accepts are exactly those the OpenAPI
/// document's `SubscriptionKeys` patterns allow (an API fuzzer holds the
/// server to the document both ways), tried on real keys and on every
/// variant of the characters the patterns single out: the first two, whose
/// bits fix the `0x04` prefix, and the last, whose bits past the key's end
/// must be zero.
#[test]
fn subscription_keys_are_accepted_exactly_as_the_document_says() {
    let document: serde_json::Value =
        serde_json::from_str(include_str!("../../openapi.json")).unwrap();
    let mut schema = document["components"]["schemas"]["SubscriptionKeys"].clone();
    schema["components"] = document["components"].clone();
    let by_document = jsonschema::draft202012::new(&schema).unwrap();

    let p256dh =
        "BNcRdreALRFXTkOOUHK1EtK2wtaz5Ry4YfYCA_0QTpQtUbVlUls0VJXg7A8u-Ts1XbjhazAkj7I99e8QcYP7DkM";
    let auth = "tBHItJI5svbpez7KI4CCXg";
    let alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_+/= ";
    let mut cases = vec![
        (p256dh.to_owned(), auth.to_owned()),
        (format!("{p256dh}="), format!("{auth}==")),
        (format!("{p256dh}=="), format!("{auth}=")),
        (p256dh[1..].to_owned(), auth[1..].to_owned()),
        (format!("{p256dh}A"), format!("{auth}A")),
        (String::new(), String::new()),
        (format!(" {p256dh}"), format!("{auth} ")),
    ];
    for c in alphabet.chars() {
        let mut first = p256dh.to_owned();
        first.replace_range(0..1, &c.to_string());
        let mut second = p256dh.to_owned();
        second.replace_range(1..2, &c.to_string());
        let mut last = p256dh.to_owned();
        last.replace_range(86..87, &c.to_string());
        let mut auth_last = auth.to_owned();
        auth_last.replace_range(21..22, &c.to_string());
        cases.extend([
            (first, auth.to_owned()),
            (second, auth.to_owned()),
            (last, auth.to_owned()),
            (p256dh.to_owned(), auth_last),
        ]);
    }
    let mut accepted = 0;
    for (p256dh, auth) in cases {
        let mut device = web_push("https://push.example/s");
        device.subscription.as_mut().unwrap().keys = SubscriptionKeys {
            p256dh: p256dh.clone(),
            auth: auth.clone(),
        };
        let keys = serde_json::json!({ "p256dh": p256dh, "auth": auth });
        let server = device.validate().is_ok();
        assert_eq!(
            server,
            by_document.is_valid(&keys),
            "p256dh {p256dh:?}, auth {auth:?}: the server {} it",
            if server { "accepts" } else { "refuses" }
        );
        accepted += usize::from(server);
    }
    assert!(accepted > 30, "only {accepted} variants were accepted");
}
