//! The identify traits that say where a user's notifications go.
//!
//! The control plane sends email to a profile's `email` trait and SMS to its
//! `phone` trait (both merged from `identify` calls). The agent accepts
//! these traits only from trusted callers (a server key, or a backend that
//! sends no `Origin` header), since a page script holding the public write
//! key could otherwise redirect another user's notifications. Both programs
//! read the names from here, so a new address trait cannot be added to one
//! and forgotten in the other.

/// The identify trait holding the address email is sent to.
pub const EMAIL: &str = "email";

/// The identify trait holding the number SMS is sent to.
pub const PHONE: &str = "phone";

/// Every identify trait the control plane takes a recipient's address from.
pub const TRAITS: [&str; 2] = [EMAIL, PHONE];
