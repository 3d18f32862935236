-- transmanager outbox and inbox tables.
--
-- Times are Unix microseconds (UTC). The outbox keeps every message from
-- its save to its purge. state is 'pending' (waiting, or leased to a relay
-- while claimed_until is in the future), 'published' or 'dead'. seq (the
-- rowid) is the save order that the relay keeps within a partition key.
-- next_attempt_at is NULL until a publish fails; then it is when the
-- message is due again.
CREATE TABLE IF NOT EXISTS {{.Outbox}} (
    seq             INTEGER PRIMARY KEY,
    id              TEXT    NOT NULL,
    topic           TEXT    NOT NULL,
    name            TEXT    NOT NULL,
    partition_key   TEXT,
    metadata        TEXT    NOT NULL,
    payload         BLOB    NOT NULL,
    sent_at         INTEGER NOT NULL,
    created_at      INTEGER NOT NULL,
    state           TEXT    NOT NULL DEFAULT 'pending',
    attempts        INTEGER NOT NULL DEFAULT 0,
    next_attempt_at INTEGER,
    claimed_until   INTEGER,
    last_error      TEXT,
    published_at    INTEGER,
    dead_at         INTEGER,
    CONSTRAINT {{.OutboxName "id_key"}} UNIQUE (id),
    CONSTRAINT {{.OutboxName "state_check"}} CHECK (state IN ('pending', 'published', 'dead'))
) STRICT;

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
    consumer_group TEXT    NOT NULL,
    id             TEXT    NOT NULL,
    topic          TEXT    NOT NULL,
    name           TEXT    NOT NULL,
    metadata       TEXT    NOT NULL,
    payload        BLOB    NOT NULL,
    sent_at        INTEGER NOT NULL,
    received_at    INTEGER NOT NULL,
    created_at     INTEGER NOT NULL,
    PRIMARY KEY (consumer_group, id)
) STRICT;

-- Retention: a group's records by age.
CREATE INDEX IF NOT EXISTS {{.InboxName "created_idx"}}
    ON {{.Inbox}} (consumer_group, created_at);
