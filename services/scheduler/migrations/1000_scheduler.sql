CREATE TABLE campaigns (
    campaign_id      uuid        PRIMARY KEY,
    fund_code        text        NOT NULL,
    name             text        NOT NULL,
    theme            text        NOT NULL,
    state            text        NOT NULL,
    starts_on        date        NOT NULL,
    ends_on          date        NOT NULL,
    presented_number text        NOT NULL,
    max_attempts     integer     NOT NULL,
    -- JSON of the domain CallingPolicy; NULL means the legal default.
    calling_policy   jsonb,
    policy_override_reason text  NOT NULL DEFAULT '',
    version          bigint      NOT NULL,
    created_at       timestamptz NOT NULL DEFAULT now(),
    updated_at       timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX campaigns_fund ON campaigns (fund_code);

-- Every change of a campaign: who, when, what.
CREATE TABLE campaign_audit (
    id          bigserial   PRIMARY KEY,
    campaign_id uuid        NOT NULL,
    actor       text        NOT NULL,
    action      text        NOT NULL,
    detail      jsonb       NOT NULL,
    at          timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX campaign_audit_campaign ON campaign_audit (campaign_id, at);

-- One row per contact: where it stands in its campaign's plan.
CREATE TABLE plans (
    contact_id        uuid        PRIMARY KEY,
    campaign_id       uuid        NOT NULL,
    fund_code         text        NOT NULL,
    person_key        text        NOT NULL,
    theme             text        NOT NULL,
    territory         text        NOT NULL,
    department        text        NOT NULL,
    priority_key      bigint      NOT NULL,
    arrival           bigserial,
    -- planned: waiting for next_due_at; queued: CallDue sent; closed: finished.
    status            text        NOT NULL,
    attempts          integer     NOT NULL DEFAULT 0,
    next_due_at       timestamptz,
    callback_agent_id text,
    final_status      text,
    updated_at        timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX plans_due ON plans (next_due_at) WHERE status = 'planned';
CREATE INDEX plans_campaign ON plans (campaign_id, status);
CREATE INDEX plans_person ON plans (person_key) WHERE status <> 'closed';

-- Attempts per person across all campaigns, for the pressure limits (4 per 30 days, 60 quiet
-- days after a refusal in conversation).
CREATE TABLE person_attempts (
    person_key text        NOT NULL,
    at         timestamptz NOT NULL,
    refused    boolean     NOT NULL,
    attempt_id text        PRIMARY KEY
);
CREATE INDEX person_attempts_person ON person_attempts (person_key, at);
