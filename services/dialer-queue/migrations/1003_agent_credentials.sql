-- Console sign-in: supervisors are agents with the flag; passwords as argon2id PHC strings;
-- consecutive failed sign-ins lock the account for a while (counted per identifier).
ALTER TABLE agents
    ADD COLUMN supervisor            boolean     NOT NULL DEFAULT false,
    ADD COLUMN password_hash         text,
    ADD COLUMN password_set_at       timestamptz,
    ADD COLUMN failed_sign_ins       integer     NOT NULL DEFAULT 0,
    ADD COLUMN sign_in_locked_until  timestamptz;
