-- The release takes each campaign's most urgent due plans by walking one index in order
-- (decision 0008), instead of ranking every due plan of the campaign at each release; new
-- contacts are released on arrival when nothing older waits.
--
-- plans.priority_key is now the campaign's ordering key: the theme's key from intake, or 0
-- when the campaign is served first come, first served (arrival then orders). One index thus
-- serves both rules.
UPDATE plans p SET priority_key = 0
FROM campaigns c
WHERE c.campaign_id = p.campaign_id AND c.priority_rule = 'fifo' AND p.priority_key <> 0;

-- Callbacks go first; they are few, so they get their own small index.
CREATE INDEX plans_callbacks ON plans (campaign_id, next_due_at)
    WHERE status = 'planned' AND callback_agent_id IS NOT NULL;

-- Whether a campaign has a due plan waiting, in one index probe: new contacts are released
-- on arrival only when none waits (they would otherwise pass older ones).
CREATE INDEX plans_due_at ON plans (campaign_id, next_due_at) WHERE status = 'planned';

-- Unused now (the release reads plans_due_campaign; queued plans are counted through
-- plans_campaign): fewer index entries written per plan.
DROP INDEX plans_due;
DROP INDEX plans_queued;
