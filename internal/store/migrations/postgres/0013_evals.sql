-- Evals: see the SQLite migration 0011_evals.sql.
CREATE TABLE evals (
	id          TEXT PRIMARY KEY,
	org_id      TEXT NOT NULL,
	agent_id    TEXT NOT NULL,
	version     INTEGER NOT NULL,
	status      TEXT NOT NULL CHECK (status IN ('passed', 'failed')),
	passed      INTEGER NOT NULL,
	failed      INTEGER NOT NULL,
	cost        BIGINT NOT NULL,
	started_at  BIGINT NOT NULL,
	finished_at BIGINT NOT NULL,
	key_id      TEXT NOT NULL,
	cases       TEXT NOT NULL
);
CREATE INDEX evals_version ON evals (org_id, agent_id, version, finished_at);

CREATE TABLE eval_runs (
	run_id  TEXT PRIMARY KEY,
	eval_id TEXT NOT NULL REFERENCES evals (id) ON DELETE CASCADE
);
CREATE INDEX eval_runs_eval ON eval_runs (eval_id);
