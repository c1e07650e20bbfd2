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

-- Every rectification of a contact by its fund: which fields changed (never the values), who,
-- when, and the fund's reference of the request.
CREATE TABLE rectification_audit (
    id             bigserial   PRIMARY KEY,
    contact_id     uuid        NOT NULL,
    campaign_id    uuid        NOT NULL,
    fund_code      text        NOT NULL,
    actor          text        NOT NULL,
    fields_changed text[]      NOT NULL,
    reason         text        NOT NULL,
    at             timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX rectification_audit_contact ON rectification_audit (contact_id, at);
CREATE INDEX rectification_audit_campaign ON rectification_audit (campaign_id);
CREATE INDEX contacts_person ON contacts (person_key);
CREATE INDEX card_audit_campaign ON card_audit (campaign_id);
