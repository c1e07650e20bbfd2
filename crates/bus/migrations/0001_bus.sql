-- Tables every service uses for exactly-once effects over at-least-once delivery.

-- Event ids already applied, per consumer: a redelivered event is acked and ignored.
CREATE TABLE IF NOT EXISTS bus_inbox (
    consumer     text        NOT NULL,
    event_id     text        NOT NULL,
    processed_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (consumer, event_id)
);
CREATE INDEX IF NOT EXISTS bus_inbox_processed_at ON bus_inbox (processed_at);

-- Events written in the same transaction as the state change that caused them; the relay
-- publishes them with Nats-Msg-Id = event_id and deletes them once JetStream acked.
CREATE TABLE IF NOT EXISTS bus_outbox (
    id          bigserial   PRIMARY KEY,
    event_id    text        NOT NULL,
    subject     text        NOT NULL,
    payload     bytea       NOT NULL,
    traceparent text,
    created_at  timestamptz NOT NULL DEFAULT now()
);
