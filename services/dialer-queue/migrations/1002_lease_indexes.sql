-- NextCall reads free calls in priority order and stops at the first it may take: an index in
-- that order over free calls only, and one for agent-owned callbacks. Expired leases are freed
-- by the sweeper, so "free" is simply "lease_id IS NULL".
DROP INDEX IF EXISTS queue_next;
CREATE INDEX queue_free ON queue (campaign_id, priority_key, due_at) WHERE lease_id IS NULL;
CREATE INDEX queue_callbacks ON queue (callback_agent_id) WHERE callback_agent_id <> '' AND lease_id IS NULL;
CREATE INDEX queue_expiry ON queue (lease_expires_at) WHERE lease_id IS NOT NULL;
CREATE INDEX queue_window ON queue (window_end);
