-- A lease changes lease_id, so it is never a HOT update: the new row version gets an entry in
-- every index whose predicate it meets. Each entry written per lease is paid on the busiest
-- statement of the system (measured at saturation: ~115 buffer touches per lease).
--
-- * queue_lease: a lease is always looked up with its agent (`lease_id = $ AND leased_by = $`),
--   and an agent holds one call: queue_agent finds it.
-- * queue_expiry: the sweeper reads the leased calls through queue_agent instead (one entry per
--   agent holding a call, a few thousand at most); renewals become HOT updates as a bonus.
-- * queue_window: only free calls are returned when their window closes (a call being worked
--   stays with its agent), so the index covers free calls only. Its predicate is on lease_id,
--   not leased_by: the closures' `DELETE … WHERE contact_id = ANY($1) AND leased_by IS NULL`
--   must not be able to use it (on stale statistics the planner scanned all of it, 1,358
--   buffers a batch, instead of looking each contact up in queue_contact).
DROP INDEX IF EXISTS queue_lease;
DROP INDEX IF EXISTS queue_expiry;
DROP INDEX IF EXISTS queue_window;
CREATE INDEX queue_window ON queue (window_end) WHERE lease_id IS NULL;
