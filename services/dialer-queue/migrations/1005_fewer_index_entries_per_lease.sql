-- A lease changes lease_id, so it is never a HOT update: the new row version gets an entry in
-- every index whose predicate it meets. Each entry written per lease is paid on the busiest
-- statement of the system (measured at saturation: ~115 buffer touches per lease).
--
-- * queue_lease goes: a lease is always looked up with its agent
--   (`lease_id = $ AND leased_by = $`), and an agent holds one call: queue_agent finds it.
-- * queue_window covers free calls only: only they are returned when their window closes (a
--   call being worked stays with its agent). Its predicate is on lease_id, not leased_by: the
--   closures' `DELETE … WHERE contact_id = ANY($1) AND leased_by IS NULL` must not be able to
--   use it (on stale statistics the planner scanned all of it, 1,358 buffers a batch, instead of
--   looking each contact up in queue_contact).
-- * queue_expiry stays: the sweeper reading leased calls through queue_agent instead walked
--   every entry of queue_agent, dead ones included (measured at 1,000 agents: 2,700 buffers and
--   25 ms every second), where queue_expiry stops at the first lease not yet expired.
DROP INDEX IF EXISTS queue_lease;
DROP INDEX IF EXISTS queue_window;
CREATE INDEX queue_window ON queue (window_end) WHERE lease_id IS NULL;
