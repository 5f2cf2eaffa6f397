-- Evals (issue "Agents as governed, versioned code"): each evaluation of an agent's
-- version run by the server, with its totals and, as JSON, every case's result;
-- cost in micro-credits, times in unix micros, key_id the key that asked for it.
CREATE TABLE evals (
	id          TEXT PRIMARY KEY,
	org_id      TEXT NOT NULL,
	agent_id    TEXT NOT NULL,
	version     INTEGER NOT NULL,
	status      TEXT NOT NULL CHECK (status IN ('passed', 'failed')),
	passed      INTEGER NOT NULL,
	failed      INTEGER NOT NULL,
	cost        INTEGER NOT NULL,
	started_at  INTEGER NOT NULL,
	finished_at INTEGER NOT NULL,
	key_id      TEXT NOT NULL,
	cases       TEXT NOT NULL
);
CREATE INDEX evals_version ON evals (org_id, agent_id, version, finished_at);

-- The runs an eval made: ordinary, metered and ledgered runs, marked here so that
-- usage can tell eval spend from the rest (a join on ledger.run_id).
CREATE TABLE eval_runs (
	run_id  TEXT PRIMARY KEY,
	eval_id TEXT NOT NULL REFERENCES evals (id) ON DELETE CASCADE
);
CREATE INDEX eval_runs_eval ON eval_runs (eval_id);
