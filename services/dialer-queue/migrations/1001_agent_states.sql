-- Agent states (signed out, available, on a call, wrap-up, pause) and the time spent in each.
ALTER TABLE agents
    ADD COLUMN state        text        NOT NULL DEFAULT 'signed_out',
    ADD COLUMN pause_reason text        NOT NULL DEFAULT '',
    ADD COLUMN state_since  timestamptz NOT NULL DEFAULT now(),
    -- The last call of the agent to the API: an agent silent for long is counted signed out.
    ADD COLUMN last_seen    timestamptz;

CREATE TABLE agent_state_log (
    id           bigserial   PRIMARY KEY,
    agent_id     text        NOT NULL,
    state        text        NOT NULL,
    pause_reason text        NOT NULL,
    started_at   timestamptz NOT NULL,
    ended_at     timestamptz NOT NULL
);
CREATE INDEX agent_state_log_agent ON agent_state_log (agent_id, started_at);
