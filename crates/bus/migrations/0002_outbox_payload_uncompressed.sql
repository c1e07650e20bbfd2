-- Set events (decision 0008) make payloads of up to 256 KiB; PostgreSQL would compress each on
-- insert, only for the relay to delete it moments later. Stored out of line, uncompressed.
ALTER TABLE bus_outbox ALTER COLUMN payload SET STORAGE EXTERNAL;
