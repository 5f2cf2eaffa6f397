-- Finds sessions gone idle (SweepIdleSessions) without reading every turn: the
-- sweep walks only turns older than the idle cutoff. Appends at its right edge, as
-- turns arrive in time order.
CREATE INDEX session_turns_created ON session_turns(created_at);
