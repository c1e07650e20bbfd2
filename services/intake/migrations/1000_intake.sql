-- What intake knows of each campaign (projected from the scheduler's CampaignChanged).
CREATE TABLE campaigns (
    campaign_id uuid   PRIMARY KEY,
    fund_code   text   NOT NULL,
    theme       text   NOT NULL,
    state       text   NOT NULL,
    ends_on     date,
    version     bigint NOT NULL
);

-- The personal-data vault: one row per accepted contact. Personal fields are sealed with an
-- AEAD cipher under the key `key_id`; only ids and derived, non-identifying data are clear.
CREATE TABLE contacts (
    contact_id     uuid        PRIMARY KEY,
    campaign_id    uuid        NOT NULL,
    fund_code      text        NOT NULL,
    submission_ref text        NOT NULL,
    person_key     text        NOT NULL,
    theme          text        NOT NULL,
    territory      text        NOT NULL,
    department     text        NOT NULL,
    priority_key   bigint      NOT NULL,
    key_id         text        NOT NULL,
    nonce          bytea       NOT NULL,
    sealed         bytea       NOT NULL,
    created_at     timestamptz NOT NULL DEFAULT now(),
    UNIQUE (campaign_id, submission_ref),
    UNIQUE (campaign_id, person_key)
);

-- Every view of a call card, and every reveal of a credential: who, when, which contact.
CREATE TABLE card_audit (
    id          bigserial   PRIMARY KEY,
    contact_id  uuid        NOT NULL,
    campaign_id uuid        NOT NULL,
    agent_id    text        NOT NULL,
    lease_id    text        NOT NULL,
    action      text        NOT NULL,
    at          timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX card_audit_contact ON card_audit (contact_id, at);
CREATE INDEX card_audit_agent ON card_audit (agent_id, at);
