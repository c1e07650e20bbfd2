-- What the dialer knows of each campaign (projected from the scheduler's CampaignChanged).
CREATE TABLE campaigns (
    campaign_id      uuid   PRIMARY KEY,
    fund_code        text   NOT NULL,
    theme            text   NOT NULL,
    state            text   NOT NULL,
    presented_number text   NOT NULL,
    -- "" legal default, "all_hours", or a JSON calling policy (to validate callbacks).
    calling_policy   text   NOT NULL,
    version          bigint NOT NULL
);

CREATE TABLE agents (
    agent_id     text        PRIMARY KEY,
    display_name text        NOT NULL,
    team         text        NOT NULL DEFAULT '',
    created_at   timestamptz NOT NULL DEFAULT now()
);

-- Habilitations: the campaigns each agent may work.
CREATE TABLE agent_campaigns (
    agent_id    text NOT NULL REFERENCES agents (agent_id) ON DELETE CASCADE,
    campaign_id uuid NOT NULL,
    PRIMARY KEY (agent_id, campaign_id)
);
CREATE INDEX agent_campaigns_campaign ON agent_campaigns (campaign_id);

-- The live queue: due calls, and the lease of the agent working one.
CREATE TABLE queue (
    call_id           text        PRIMARY KEY,
    contact_id        uuid        NOT NULL,
    campaign_id       uuid        NOT NULL,
    fund_code         text        NOT NULL,
    person_key        text        NOT NULL,
    attempt_number    integer     NOT NULL,
    due_at            timestamptz NOT NULL,
    window_end        timestamptz NOT NULL,
    priority_key      bigint      NOT NULL,
    territory         text        NOT NULL,
    department        text        NOT NULL,
    callback_agent_id text        NOT NULL DEFAULT '',
    lease_id          uuid,
    leased_by         text,
    leased_at         timestamptz,
    lease_expires_at  timestamptz
);
CREATE INDEX queue_next ON queue (campaign_id, priority_key, due_at);
CREATE INDEX queue_contact ON queue (contact_id);
CREATE INDEX queue_lease ON queue (lease_id) WHERE lease_id IS NOT NULL;
CREATE INDEX queue_agent ON queue (leased_by) WHERE leased_by IS NOT NULL;

-- Contacts closed by the scheduler: a late CallDue for them is dropped.
CREATE TABLE closed_contacts (
    contact_id uuid        PRIMARY KEY,
    closed_at  timestamptz NOT NULL DEFAULT now()
);

-- Every attempt: who called whom (by id), when, with what outcome.
CREATE TABLE attempts (
    attempt_id     uuid        PRIMARY KEY,
    call_id        text        NOT NULL UNIQUE,
    contact_id     uuid        NOT NULL,
    campaign_id    uuid        NOT NULL,
    agent_id       text        NOT NULL,
    attempt_number integer     NOT NULL,
    outcome        text        NOT NULL,
    leased_at      timestamptz NOT NULL,
    recorded_at    timestamptz NOT NULL,
    callback_at    timestamptz
);
CREATE INDEX attempts_campaign ON attempts (campaign_id, recorded_at);
CREATE INDEX attempts_agent ON attempts (agent_id, recorded_at);
