-- When each campaign closed (projected from CampaignChanged by the shared closure projection of
-- cnmas_runtime::rights): contact-level rows expire a retention period after it.
CREATE TABLE campaign_closures (
    campaign_id uuid        PRIMARY KEY,
    fund_code   text        NOT NULL,
    state       text        NOT NULL,
    closed_at   timestamptz NOT NULL
);
CREATE INDEX campaign_closures_closed ON campaign_closures (closed_at);

-- What the retention purge removed: which campaign, which table, how many rows, when, by whom
-- (a token subject or "schedule"). Queryable by auditors (PersonDataService.ListPurges).
CREATE TABLE purge_log (
    id                 bigserial   PRIMARY KEY,
    campaign_id        uuid,
    table_name         text        NOT NULL,
    rows               bigint      NOT NULL,
    actor              text        NOT NULL,
    campaign_closed_at timestamptz,
    at                 timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX purge_log_campaign ON purge_log (campaign_id, at);

-- Purging pressure history by age.
CREATE INDEX person_attempts_at ON person_attempts (at);

-- The latest rectification of each contact's derived data (from intake's ContactRectified), so
-- a plan created after the rectification takes it too.
CREATE TABLE rectified_contacts (
    contact_id   uuid        PRIMARY KEY,
    campaign_id  uuid        NOT NULL,
    person_key   text        NOT NULL,
    territory    text        NOT NULL,
    department   text        NOT NULL,
    priority_key bigint      NOT NULL,
    rectified_at timestamptz NOT NULL
);
CREATE INDEX rectified_contacts_campaign ON rectified_contacts (campaign_id);
