-- The fund's reference of each accepted contact.
CREATE TABLE contacts (
    contact_id     uuid        PRIMARY KEY,
    campaign_id    uuid        NOT NULL,
    fund_code      text        NOT NULL,
    submission_ref text        NOT NULL,
    accepted_at    timestamptz NOT NULL DEFAULT now()
);

-- The attempt history (times and outcomes only; no agent notes).
CREATE TABLE attempts (
    attempt_id     uuid        PRIMARY KEY,
    contact_id     uuid        NOT NULL,
    campaign_id    uuid        NOT NULL,
    attempt_number integer     NOT NULL,
    at             timestamptz NOT NULL,
    outcome        integer     NOT NULL
);
CREATE INDEX attempts_contact ON attempts (contact_id);
CREATE INDEX attempts_campaign ON attempts (campaign_id, at);

-- What the person said in an interview (the InterviewCompleted message, as received).
CREATE TABLE interviews (
    attempt_id     uuid        PRIMARY KEY,
    contact_id     uuid        NOT NULL,
    offer_decision integer     NOT NULL,
    message        bytea       NOT NULL,
    at             timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX interviews_contact ON interviews (contact_id, at);

-- How each contact ended, as the scheduler (or consent) decided.
CREATE TABLE closures (
    contact_id   uuid        PRIMARY KEY,
    campaign_id  uuid        NOT NULL,
    fund_code    text        NOT NULL,
    final_status integer     NOT NULL,
    attempts     integer     NOT NULL,
    reason       text        NOT NULL,
    closed_at    timestamptz NOT NULL
);

-- One final result per contact (or per rejected submission), as delivered to its fund.
CREATE TABLE results (
    result_id      text        PRIMARY KEY,
    contact_id     uuid        UNIQUE,
    campaign_id    uuid,
    fund_code      text        NOT NULL,
    submission_ref text        NOT NULL,
    final_status   integer     NOT NULL,
    offer_decision integer     NOT NULL,
    attempts       integer     NOT NULL,
    published_at   timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX results_campaign ON results (campaign_id, final_status);
