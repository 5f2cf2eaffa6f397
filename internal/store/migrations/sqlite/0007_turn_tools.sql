-- A session turn's tool results, images and tool calls (agentd.TurnTools) as
-- JSON; NULL for a plain exchange.
ALTER TABLE session_turns ADD COLUMN tools TEXT;
-- An agent version's tools and response format, in OpenAI's JSON; NULL for none.
ALTER TABLE agent_versions ADD COLUMN tools TEXT;
ALTER TABLE agent_versions ADD COLUMN response_format TEXT;
