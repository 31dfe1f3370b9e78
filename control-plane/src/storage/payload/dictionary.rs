//! The preset dictionary of stored events (tag [`super::ZSTD_DICTIONARY_1`]).
//!
//! A stored event is a few hundred bytes of JSON, too short for a
//! compressor to find much to repeat within it: most of its bytes are key
//! names and values every event shares. Compression may start from a
//! preset dictionary instead (a zstd "raw content" dictionary: matches
//! reach back into it), so those bytes code as short references. On the
//! README's events this halves what is stored (README, storage
//! benchmark).
//!
//! What is in it: the keys of the stored [`crate::event::Event`] in the
//! order they are written, the Segment spec's common `context` fields,
//! identify traits, e-commerce events and properties, its libraries'
//! names, and browsers' user agents. Nothing from any one deployment or
//! benchmark. Nearer references code in fewer bits, so what nearly every
//! event holds comes last.
//!
//! **Never edit these bytes.** Every payload stored with this tag needs
//! exactly them to be read back; a test pins their SHA-256. A better
//! dictionary is a new constant with a new tag, and decoding keeps both.

/// The dictionary's bytes (3.6 KB: larger ones cost more to prepare and
/// to keep in cache, for little more on events this size).
pub const DICTIONARY_1: &[u8] = concat!(
    // Browsers' user agents (`context.userAgent`).
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) ",
    "Chrome/131.0.0.0 Safari/537.36 Edg/",
    "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/605.1.15 (KHTML, like Gecko) ",
    "Version/18.1 Safari/605.1.15",
    "Mozilla/5.0 (iPhone; CPU iPhone OS 18_1 like Mac OS X) AppleWebKit/605.1.15 ",
    "(KHTML, like Gecko) Version/18.1 Mobile/15E148 Safari/604.1",
    "Mozilla/5.0 (Linux; Android 14; K) AppleWebKit/537.36 (KHTML, like Gecko) ",
    "Chrome/131.0.0.0 Mobile Safari/537.36",
    "Mozilla/5.0 (X11; Linux x86_64; rv:133.0) Gecko/20100101 Firefox/133.0",
    // The spec's e-commerce, mobile and B2B events.
    r#""Products Searched","Product List Viewed","Product Clicked","Product Viewed","#,
    r#""Product Added","Product Removed","Cart Viewed","Checkout Started","#,
    r#""Checkout Step Viewed","Checkout Step Completed","Payment Info Entered","#,
    r#""Order Completed","Order Updated","Order Refunded","Order Cancelled","Coupon Applied","#,
    r#""Promotion Viewed","Promotion Clicked","Application Installed","Application Opened","#,
    r#""Application Backgrounded","Application Updated","Signed Up","Signed In","Signed Out","#,
    r#""Account Created","Trial Started","Subscription Started","#,
    // Their properties.
    r#""products":[{"product_id":"","sku":"","category":"","name":"","brand":"","variant":"","#,
    r#""price":0,"quantity":1,"coupon":"","position":1,"url":"https://","image_url":"https://"}],"#,
    r#""order_id":"","checkout_id":"","affiliation":"","subtotal":0,"shipping":0,"tax":0,"#,
    r#""discount":0,"coupon":"","revenue":0,"value":0,"total":0.00,"currency":"USD","#,
    r#""currency":"EUR","#,
    // Identify traits.
    r#""traits":{"email":"@gmail.com","name":"","first_name":"","last_name":"","firstName":"","#,
    r#""lastName":"","phone":"+1","plan":"","company":{"name":""},"address":{"city":"","#,
    r#""country":"","postal_code":"","state":"","street":""},"created_at":"20","createdAt":"20","#,
    r#""logins":1,"title":"","username":"","website":"https://"},"#,
    // Context: the spec's mobile and web fields.
    r#""context":{"active":true,"app":{"name":"","version":"","build":"","namespace":"com."},"#,
    r#""device":{"id":"","advertisingId":"","adTrackingEnabled":false,"manufacturer":"Apple","#,
    r#""model":"iPhone","name":"","type":"ios","type":"android","token":""},"#,
    r#""os":{"name":"iOS","name":"Android","version":""},"#,
    r#""screen":{"width":390,"height":844,"density":3},"#,
    r#""network":{"bluetooth":false,"carrier":"","cellular":false,"wifi":true},"#,
    r#""location":{"city":"","country":"","latitude":0,"longitude":0},"#,
    r#""timezone":"Europe/","timezone":"America/","locale":"en-US","ip":"","groupId":"","#,
    r#""campaign":{"name":"","source":"google","medium":"cpc","term":"","content":""},"#,
    r#""referrer":{"id":"","type":""},"#,
    r#""userAgentData":{"brands":[{"brand":"Chromium","version":"131"}],"mobile":false,"#,
    r#""platform":"Windows"},"#,
    r#""page":{"path":"/","referrer":"https://www.google.com/","search":"?","title":"","#,
    r#""url":"https://www."},"userAgent":"Mozilla/5.0 ("#,
    // The spec's libraries.
    r#""library":{"name":"analytics-node","version":"2."}},"#,
    r#""library":{"name":"analytics-ruby","version":"2."}},"#,
    r#""library":{"name":"analytics-go","version":"3."}},"#,
    r#""library":{"name":"analytics-java","version":"3."}},"#,
    r#""library":{"name":"analytics-ios","version":"4."}},"#,
    r#""library":{"name":"analytics-kotlin","version":"1."}},"#,
    r#""library":{"name":"analytics-python","version":"2."}},"#,
    r#""library":{"name":"analytics.js","version":"next-1."}},"#,
    // The other kinds' bodies (Nudge's sessions, alias, group, screen,
    // page, identify).
    r#""type":"session_start","session_id":"","type":"session_end","#,
    r#""type":"alias","previous_id":"","type":"group","group_id":"","#,
    r#""type":"screen","name":"","category":"","properties":{},"#,
    r#""type":"page","name":"","category":"","properties":{"path":"/","referrer":"","#,
    r#""search":"","title":"","url":"https://"}}"#,
    r#""integrations":{},"type":"identify","traits":{"email":""#,
    // The stored event's own keys, in the order they are written, with a
    // track body: what every event holds.
    r#"{"id":"","user_id":"","anonymous_id":"","timestamp":"20","sent_at":"20","#,
    r#""received_at":"20","ingested_at":"20","agent_id":"","write_key":"","#,
    r#""context":{"library":{"name":"","version":""}},"integrations":{},"#,
    r#""type":"track","event":"","properties":{""#,
)
.as_bytes();
