-- Agents as governed, versioned code (issue "Agents as governed, versioned code").
--
-- A version says why it was made (note), by which key (author_key_id; '' for
-- versions from before), and how its evaluation ended (eval_status: NULL never
-- evaluated, 'passed' or 'failed'; written by the evals). A version stored with
-- activate false is a draft: agents.version does not point at it until it is
-- activated.
ALTER TABLE agent_versions ADD COLUMN note TEXT NOT NULL DEFAULT '';
ALTER TABLE agent_versions ADD COLUMN author_key_id TEXT NOT NULL DEFAULT '';
ALTER TABLE agent_versions ADD COLUMN eval_status TEXT CHECK (eval_status IN ('passed', 'failed'));

-- An agent's canary: canary_percent of the runs that pin no version go to
-- canary_version (NULL: no canary).
ALTER TABLE agents ADD COLUMN canary_version INTEGER;
ALTER TABLE agents ADD COLUMN canary_percent REAL NOT NULL DEFAULT 0;
