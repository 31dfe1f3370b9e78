//! How big a page of an admin list is: one default and one maximum for
//! every admin list route. The document states them as literals on each
//! query type's `limit` (utoipa's `maximum` takes literals only); the test
//! below checks every documented admin `limit` against these constants.

/// Items per page when the caller gives no `limit`.
pub const DEFAULT_LIMIT: usize = 100;
/// The largest `limit` an admin list accepts; more is a `400`.
pub const MAX_LIMIT: usize = 1000;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_documented_admin_limit_is_the_one_enforced() {
        let document: serde_json::Value =
            serde_json::from_str(crate::http::openapi::document()).unwrap();
        let mut checked = 0;
        for (path, item) in document["paths"].as_object().unwrap() {
            // Analytics reports have a row limit of their own
            // (`analytics::MAX_LIMIT`); they are not pages of a list.
            if !path.starts_with("/v1/admin/") || path.starts_with("/v1/admin/analytics/") {
                continue;
            }
            for operation in item.as_object().unwrap().values() {
                let parameters = operation["parameters"].as_array().into_iter().flatten();
                for parameter in parameters.filter(|p| p["name"] == "limit") {
                    let schema = &parameter["schema"];
                    assert_eq!(schema["minimum"], 1, "{path}");
                    assert_eq!(schema["maximum"], MAX_LIMIT, "{path}");
                    assert_eq!(schema["default"], DEFAULT_LIMIT, "{path}");
                    checked += 1;
                }
            }
        }
        // Events, parked events, dead letters, a user's notifications,
        // broadcasts and a topic's subscribers.
        assert!(checked >= 6, "only {checked} admin limits documented");
    }
}
