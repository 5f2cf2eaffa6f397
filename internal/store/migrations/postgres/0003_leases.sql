-- Reservations that replicas share (store/leases.go): session turn leases and
-- Idempotency-Keys in flight. Every row belongs to one replica, which renews its
-- expires_at (Unix microseconds) by heartbeat while the run it stands for lives;
-- a row whose expires_at has passed is dead whoever looks, and is swept. Keys are
-- stored base64url-encoded: the callers' keys contain NUL bytes, which TEXT
-- cannot hold. expires_at is in no index, so that heartbeats update rows in place
-- (HOT) instead of touching indexes.

-- One ticket per turn that holds or waits for a session. Tickets are numbered in
-- arrival order (taken under a per-key advisory lock, so that a smaller ticket is
-- always committed before a larger one of its key exists); a key's holder is its
-- smallest unexpired ticket.
CREATE TABLE session_queue (
    ticket     BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    lease_key  TEXT NOT NULL,
    replica    TEXT NOT NULL,
    expires_at BIGINT NOT NULL
);
CREATE INDEX session_queue_key ON session_queue(lease_key, ticket);

-- One row per Idempotency-Key whose run is in flight. token tells one Begin from
-- the next of the same key, so that a late end removes only its own mark.
CREATE TABLE inflight (
    id         TEXT PRIMARY KEY,
    token      TEXT NOT NULL,
    replica    TEXT NOT NULL,
    expires_at BIGINT NOT NULL
);
