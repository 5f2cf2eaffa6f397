-- Agents as governed, versioned code: see the SQLite migration 0010_versions.sql.
ALTER TABLE agent_versions ADD COLUMN note TEXT NOT NULL DEFAULT '';
ALTER TABLE agent_versions ADD COLUMN author_key_id TEXT NOT NULL DEFAULT '';
ALTER TABLE agent_versions ADD COLUMN eval_status TEXT CHECK (eval_status IN ('passed', 'failed'));

ALTER TABLE agents ADD COLUMN canary_version INTEGER;
ALTER TABLE agents ADD COLUMN canary_percent DOUBLE PRECISION NOT NULL DEFAULT 0;
