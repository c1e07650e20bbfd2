-- Pacing and priority per campaign (issue 4).
-- pacing_ratio: queued calls kept per available agent; negative disables pacing.
ALTER TABLE campaigns ADD COLUMN pacing_ratio double precision NOT NULL DEFAULT 2.0;
-- priority_rule: '' (the theme's default ordering, intake's priority_key) or 'fifo'.
ALTER TABLE campaigns ADD COLUMN priority_rule text NOT NULL DEFAULT '';

-- The latest staffing of each campaign as published by the dialer (CampaignStaffing).
CREATE TABLE campaign_staffing (
    campaign_id      uuid        PRIMARY KEY,
    agents_available integer     NOT NULL,
    agents_signed_in integer     NOT NULL,
    at               timestamptz NOT NULL
);

-- Counting the queued plans of a campaign for its pacing budget.
CREATE INDEX plans_queued ON plans (campaign_id) WHERE status = 'queued';
-- Due plans per campaign in priority order.
CREATE INDEX plans_due_campaign ON plans (campaign_id, priority_key, arrival)
    WHERE status = 'planned';
