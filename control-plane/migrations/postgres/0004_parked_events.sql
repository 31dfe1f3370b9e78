-- Events the engine could not plan for a reason retrying cannot fix (the
-- content is refused), parked so the feed moves on. One row per event,
-- keyed by its feed sequence; the event itself stays in `events`. Times
-- are unix milliseconds (UTC). See control-plane/src/storage/parked.rs.
CREATE TABLE parked_events (
    seq       BIGINT PRIMARY KEY,
    event_id  TEXT NOT NULL,
    user_id   TEXT,
    kind      TEXT NOT NULL,
    reason    TEXT NOT NULL,
    parked_at BIGINT NOT NULL
);
