-- Open plans looked up by a 64-bit hash of the person key instead of its 64 hex characters
-- (decision 0018): the index is a quarter of the size, and its entries land on random pages
-- (an HMAC orders nothing), so at a million contacts it outgrew PostgreSQL's buffers and every
-- checkpoint made each of its pages be written to the WAL again. The lookup compares the keys
-- themselves too, so two keys with the same hash never mix; the hash never fails, whatever
-- an event carries.
DROP INDEX plans_person;
CREATE INDEX plans_person ON plans (hashtextextended(person_key, 0)) WHERE status <> 'closed';
