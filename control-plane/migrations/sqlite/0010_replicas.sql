-- Several control planes on one database (issue 13). See
-- control-plane/src/storage/leases.rs, engine/feed.rs and
-- storage/deliveries.rs.

-- Named, time-bounded ownership: a feed partition (`feed/NN`), a
-- singleton task (`job/NAME`) or a replica's heartbeat (`replica/ID`).
-- `expires_at_us` is the database's clock (unix microseconds): replicas'
-- own clocks never decide who holds what.
CREATE TABLE leases (
    name          TEXT PRIMARY KEY,
    holder        TEXT NOT NULL,
    expires_at_us INTEGER NOT NULL
);

-- Which feed partition an event belongs to: a stable hash of its user
-- (engine/feed.rs). Events stored before this migration are in
-- partition 0.
ALTER TABLE events ADD COLUMN feed_partition INTEGER NOT NULL DEFAULT 0;

-- Until when a `sending` delivery's claim holds (schedule clock, unix
-- microseconds); a claim whose holder died is requeued once it expires.
ALTER TABLE deliveries ADD COLUMN lease_until_us INTEGER;
CREATE INDEX deliveries_claim_expiry ON deliveries (lease_until_us) WHERE status = 'sending';
