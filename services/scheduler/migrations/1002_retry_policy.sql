-- Per-campaign retry delays (JSON of the domain RetryPolicy); NULL means the defaults.
ALTER TABLE campaigns ADD COLUMN retry_policy jsonb;
