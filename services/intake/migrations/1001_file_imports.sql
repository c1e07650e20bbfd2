-- Contact files uploaded by the funds (FileImportService). Progress is committed in the same
-- transaction as the rows it covers, so an interrupted upload resumes at `next_offset` and no
-- row is applied twice.
CREATE TABLE imports (
    fund_code              text        NOT NULL,
    import_id              text        NOT NULL,
    campaign_id            uuid        NOT NULL,
    theme                  text        NOT NULL,
    state                  text        NOT NULL,   -- receiving, completed, failed
    file_name              text        NOT NULL DEFAULT '',
    file_size              bigint      NOT NULL,
    sha256                 text        NOT NULL,
    encoding               text        NOT NULL,
    delimiter              text        NOT NULL,
    columns                text[]      NOT NULL,   -- the header's column names (never values)
    next_offset            bigint      NOT NULL,   -- bytes committed: the end of the last row applied
    next_row               bigint      NOT NULL,   -- the number of the next row (header = 1)
    rows_read              bigint      NOT NULL DEFAULT 0,
    rows_accepted          bigint      NOT NULL DEFAULT 0,
    rows_rejected          bigint      NOT NULL DEFAULT 0,
    rows_duplicate         bigint      NOT NULL DEFAULT 0,
    rows_already_received  bigint      NOT NULL DEFAULT 0,
    failure_rule           text        NOT NULL DEFAULT '',
    failure_message        text        NOT NULL DEFAULT '',
    created_by             text        NOT NULL,
    created_at             timestamptz NOT NULL DEFAULT now(),
    updated_at             timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (fund_code, import_id)
);

-- The rejection report of each import: one line per reason (field, rule, message; never the
-- value refused).
CREATE TABLE import_rejections (
    fund_code      text   NOT NULL,
    import_id      text   NOT NULL,
    row_number     bigint NOT NULL,
    ordinal        int    NOT NULL,
    submission_ref text   NOT NULL,
    field          text   NOT NULL,
    rule           text   NOT NULL,
    message        text   NOT NULL,
    PRIMARY KEY (fund_code, import_id, row_number, ordinal)
);

-- The provisional AMELI code is a credential: erased from the vault when its campaign is
-- completed or cancelled. The rest of the contact stays (results, rights, retention).
ALTER TABLE contacts ADD COLUMN ameli_code_erased_at timestamptz;
CREATE INDEX contacts_ameli_code_to_erase ON contacts (campaign_id)
    WHERE theme = 'ameli_activation' AND ameli_code_erased_at IS NULL;

-- How many codes each closed campaign had erased, and when.
CREATE TABLE ameli_code_erasures (
    campaign_id    uuid        PRIMARY KEY,
    campaign_state text        NOT NULL,
    contacts       bigint      NOT NULL,
    first_at       timestamptz NOT NULL DEFAULT now(),
    last_at        timestamptz NOT NULL DEFAULT now()
);
