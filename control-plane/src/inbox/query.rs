//! What a notification-center listing asks for: filters, search, sort and
//! a cursor, and the page it gets back.
//!
//! Cursors are opaque to clients. For `newest` and `oldest` a cursor is the
//! last item id of the page; for `unread_first` it also says which half
//! (unread, then read) the page ended in, so pages never repeat or skip an
//! item while the user's items do not change. (When items change between
//! pages, an item can move between the halves: it is then shown twice or
//! not at all, as in any keyset pagination over a changing sort key.)

use jiff::Timestamp;
use serde::{Deserialize, Serialize};

use super::InboxItem;
use crate::storage::ItemRange;

/// Longest page a client may ask for.
pub const MAX_LIMIT: usize = 200;
pub const DEFAULT_LIMIT: usize = 20;

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Sort {
    #[default]
    Newest,
    Oldest,
    /// Unread items newest first, then read ones newest first.
    UnreadFirst,
}

/// Filters and paging of a listing. Every filter is optional; archived
/// and snoozed items are left out unless `archived` or `snoozed` asks for
/// them.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct InboxQuery {
    /// Any of these types (empty: all).
    pub types: Vec<String>,
    pub category: Option<String>,
    /// `Some(false)`: unread only; `Some(true)`: read only.
    pub read: Option<bool>,
    /// `None` or `Some(false)`: not archived; `Some(true)`: archived only.
    pub archived: Option<bool>,
    /// `None` or `Some(false)`: not snoozed; `Some(true)`: snoozed only.
    pub snoozed: Option<bool>,
    /// Created at or after.
    pub since: Option<Timestamp>,
    /// Created before.
    pub until: Option<Timestamp>,
    /// Case-insensitive text in the title or body.
    pub search: Option<String>,
    pub sort: Sort,
    pub cursor: Option<String>,
    pub limit: usize,
}

impl InboxQuery {
    /// Refuses filters no stored item can match and PostgreSQL cannot even
    /// compare: text with a NUL character (items are stored without one).
    /// A refusal, not an empty page, so the client learns its mistake.
    pub fn check(&self) -> Result<(), super::InboxError> {
        let with_nul = |text: &str| text.contains('\0');
        if self.types.iter().any(|t| with_nul(t)) {
            return Err(super::InboxError::Invalid(
                "type: contains a NUL character".into(),
            ));
        }
        if self.category.as_deref().is_some_and(with_nul) {
            return Err(super::InboxError::Invalid(
                "category: contains a NUL character".into(),
            ));
        }
        Ok(())
    }
}

/// One page of a listing. A listing examines a bounded number of items
/// ([`super::SCAN_BUDGET`]), so a page may hold fewer than `limit` items,
/// or none, and still carry a cursor: the scan stopped there, not the
/// listing. Only a page without a cursor is the last.
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
#[schema(
    description = "One page of the inbox listing. A short or empty page with `next_cursor` is not the end of the listing."
)]
pub struct Page {
    pub items: Vec<InboxItem>,
    /// Pass back as `cursor` for the next page; absent on the last page
    /// only. A page may hold fewer than `limit` items, or none, and still
    /// carry a cursor: the request's scan budget ran out before the page
    /// filled.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    pub next_cursor: Option<String>,
}

impl InboxQuery {
    /// Whether `item` passes every filter (not the cursor).
    pub fn matches(&self, item: &InboxItem) -> bool {
        if !self.types.is_empty() && !self.types.contains(&item.notification_type) {
            return false;
        }
        if let Some(category) = &self.category
            && item.category_name() != category
        {
            return false;
        }
        if self.read.is_some_and(|read| read != item.is_read()) {
            return false;
        }
        if self.archived.unwrap_or(false) != item.is_archived() {
            return false;
        }
        if self.snoozed.unwrap_or(false) != item.is_snoozed() {
            return false;
        }
        if self.since.is_some_and(|since| item.created_at < since) {
            return false;
        }
        if self.until.is_some_and(|until| item.created_at >= until) {
            return false;
        }
        if let Some(needle) = self.search.as_deref().filter(|n| !n.is_empty()) {
            let needle = needle.to_lowercase();
            if !item.title.to_lowercase().contains(&needle)
                && !item.body.to_lowercase().contains(&needle)
            {
                return false;
            }
        }
        true
    }

    /// What SQL can check of the filters, newest first from the start (the
    /// caller sets direction and cursor). Wider than [`Self::matches`],
    /// never narrower.
    pub(super) fn range(&self) -> ItemRange<'_> {
        ItemRange {
            newest: true,
            after: None,
            archived: self.archived.unwrap_or(false),
            snoozed: self.snoozed.unwrap_or(false),
            read: self.read,
            category: self.category.as_deref(),
            since: self.since,
            until: self.until,
            types: &self.types,
        }
    }

    /// Refuses a limit out of range; fills in the default.
    pub fn checked_limit(limit: Option<usize>) -> Result<usize, String> {
        match limit {
            None => Ok(DEFAULT_LIMIT),
            Some(n) if (1..=MAX_LIMIT).contains(&n) => Ok(n),
            Some(_) => Err(format!("limit must be between 1 and {MAX_LIMIT}")),
        }
    }
}

/// Where a listing resumes: after an item id, in a half of `unread_first`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Cursor {
    pub half: Half,
    pub after: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Half {
    /// `newest`/`oldest`, or the unread half of `unread_first`.
    First,
    /// The read half of `unread_first`.
    Second,
}

impl Cursor {
    pub fn encode(&self) -> String {
        match self.half {
            Half::First => format!("a.{}", self.after),
            Half::Second => format!("b.{}", self.after),
        }
    }

    pub fn decode(text: &str) -> Result<Cursor, String> {
        let bad = || format!("cursor {text:?} is not one this server gave out");
        let (half, after) = text.split_once('.').ok_or_else(bad)?;
        let half = match half {
            "a" => Half::First,
            "b" => Half::Second,
            _ => return Err(bad()),
        };
        if after.is_empty() || after.contains('\0') {
            return Err(bad());
        }
        Ok(Cursor {
            half,
            after: after.to_owned(),
        })
    }
}
