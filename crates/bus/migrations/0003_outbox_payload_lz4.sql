-- Set events' payloads compressed with lz4 when they go out of line (decision 0017): a
-- million-contact pipeline wrote 930 MB of outbox payloads to the WAL uncompressed, 454 MB
-- with lz4, for a compression far cheaper than the pglz that 0002 avoided. Payloads under
-- about 2 KB (the events of single calls) stay inline and are not compressed. A server built
-- without lz4 keeps 0002's uncompressed storage.
DO $$
BEGIN
    ALTER TABLE bus_outbox ALTER COLUMN payload SET COMPRESSION lz4;
    ALTER TABLE bus_outbox ALTER COLUMN payload SET STORAGE EXTENDED;
EXCEPTION WHEN feature_not_supported THEN
    RAISE NOTICE 'lz4 not supported by this server: outbox payloads stay uncompressed';
END
$$;
