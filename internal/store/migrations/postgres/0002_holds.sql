-- Holds in the database, for replicas: what runs in flight have set aside of an
-- organization's balance and of a key's budget. orgs.held and api_keys.held are
-- the sums of the live rows of holds (every change of one changes the other in the
-- same transaction); a hold is taken by a conditional update of them
-- (balance − held ≥ amount), which the replicas' writers run one at a time. A key
-- keeps what its holds hold whether or not it has a budget, so that a budget set
-- later counts the runs already in flight. SQLite keeps holds in the memory of
-- the one process that owns the file and has no such columns.

ALTER TABLE orgs ADD COLUMN held BIGINT NOT NULL DEFAULT 0 CHECK (held >= 0);
ALTER TABLE api_keys ADD COLUMN held BIGINT NOT NULL DEFAULT 0 CHECK (held >= 0);

CREATE TABLE holds (
    id         TEXT PRIMARY KEY,
    org_id     TEXT NOT NULL,
    key_id     TEXT NOT NULL, -- '' for a hold charged to no key
    amount     BIGINT NOT NULL CHECK (amount >= 0),
    created_at BIGINT NOT NULL,
    expires_at BIGINT NOT NULL -- the sweeper ends the hold of a run that never did after this
);
CREATE INDEX holds_expiry ON holds(expires_at);
