-- The opt-in / opt-out register: the latest decision per person, channel and scope
-- ('*' for every theme, or a theme code).
CREATE TABLE register (
    person_key text        NOT NULL,
    channel    text        NOT NULL,
    scope      text        NOT NULL,
    opted_out  boolean     NOT NULL,
    source     text        NOT NULL,
    fund_code  text        NOT NULL,
    evidence   text        NOT NULL DEFAULT '',
    changed_at timestamptz NOT NULL,
    PRIMARY KEY (person_key, channel, scope)
);

-- Every change ever made, for the proof of consent and subject access.
CREATE TABLE register_history (
    id         bigserial   PRIMARY KEY,
    person_key text        NOT NULL,
    channel    text        NOT NULL,
    scope      text        NOT NULL,
    opted_out  boolean     NOT NULL,
    source     text        NOT NULL,
    fund_code  text        NOT NULL,
    evidence   text        NOT NULL DEFAULT '',
    changed_at timestamptz NOT NULL
);
CREATE INDEX register_history_person ON register_history (person_key, changed_at);

-- The decision taken for each accepted contact.
CREATE TABLE decisions (
    contact_id  uuid        PRIMARY KEY,
    campaign_id uuid        NOT NULL,
    person_key  text        NOT NULL,
    theme       text        NOT NULL,
    decision    text        NOT NULL,
    decided_at  timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX decisions_person ON decisions (person_key);
