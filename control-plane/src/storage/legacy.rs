//! The sled database that still holds the engine's records while they
//! move to SQL (see the storage module's doc). Opened once, in the data
//! dir, by [`super::Stores::open`].

use std::path::Path;

/// Opens (or creates) the sled database in `dir` with its page cache
/// bounded to `cache_bytes`. Blocks on disk.
pub(super) fn open(dir: &Path, cache_bytes: u64) -> Result<sled::Db, sled::Error> {
    sled::Config::new()
        .path(dir)
        .cache_capacity(cache_bytes)
        // Durability comes from the explicit flushes of each store before
        // it answers; the background flush only bounds how much an idle
        // crash could lose of writes nobody acked.
        .flush_every_ms(Some(1000))
        .open()
}
