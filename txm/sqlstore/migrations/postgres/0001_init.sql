-- transmanager outbox and inbox tables.
--
-- The outbox keeps every message from its save to its purge. state is
-- 'pending' (waiting, or leased to a relay while claimed_until is in the
-- future), 'published' or 'dead'. seq is the save order that the relay
-- keeps within a partition key. next_attempt_at is NULL until a publish
-- fails; then it is when the message is due again.
CREATE TABLE IF NOT EXISTS {{.Outbox}} (
    seq             bigint      GENERATED ALWAYS AS IDENTITY,
    id              text        NOT NULL,
    topic           text        NOT NULL,
    name            text        NOT NULL,
    partition_key   text,
    metadata        jsonb       NOT NULL,
    payload         bytea       NOT NULL,
    sent_at         timestamptz NOT NULL,
    created_at      timestamptz NOT NULL DEFAULT statement_timestamp(),
    state           text        NOT NULL DEFAULT 'pending',
    attempts        integer     NOT NULL DEFAULT 0,
    next_attempt_at timestamptz,
    claimed_until   timestamptz,
    last_error      text,
    published_at    timestamptz,
    dead_at         timestamptz,
    CONSTRAINT {{.OutboxName "pkey"}} PRIMARY KEY (id),
    CONSTRAINT {{.OutboxName "state_check"}} CHECK (state IN ('pending', 'published', 'dead'))
);

-- The relay's scan: pending messages in save order.
CREATE INDEX IF NOT EXISTS {{.OutboxName "pending_idx"}}
    ON {{.Outbox}} (seq) WHERE state = 'pending';

-- The messages that may hold back their partition key: leased, waiting for
-- a retry or dead. Saves add nothing to it; it also serves DeadLetters.
CREATE INDEX IF NOT EXISTS {{.OutboxName "held_idx"}}
    ON {{.Outbox}} (partition_key, seq)
    WHERE state <> 'published'
      AND (state = 'dead' OR claimed_until IS NOT NULL OR next_attempt_at IS NOT NULL);

-- Retention: published messages by age.
CREATE INDEX IF NOT EXISTS {{.OutboxName "published_idx"}}
    ON {{.Outbox}} (published_at) WHERE state = 'published';

-- The inbox: one row per consumer group and message ID.
CREATE TABLE IF NOT EXISTS {{.Inbox}} (
    consumer_group text        NOT NULL,
    id             text        NOT NULL,
    topic          text        NOT NULL,
    name           text        NOT NULL,
    metadata       jsonb       NOT NULL,
    payload        bytea       NOT NULL,
    sent_at        timestamptz NOT NULL,
    received_at    timestamptz NOT NULL,
    created_at     timestamptz NOT NULL DEFAULT statement_timestamp(),
    CONSTRAINT {{.InboxName "pkey"}} PRIMARY KEY (consumer_group, id)
);

-- Retention: a group's records by age.
CREATE INDEX IF NOT EXISTS {{.InboxName "created_idx"}}
    ON {{.Inbox}} (consumer_group, created_at);
