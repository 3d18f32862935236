-- transmanager outbox and inbox tables.
--
-- Times are DATETIME(6) in UTC, taken from the database's clock
-- (UTC_TIMESTAMP(6)). The outbox keeps every message from its save to its
-- purge. state is 'pending' (waiting, or leased to a relay while
-- claimed_until is in the future), 'published' or 'dead'. seq is the save
-- order that the relay keeps within a partition key, and the clustered
-- primary key. next_attempt_at is NULL until a publish fails; then it is
-- when the message is due again. IDs, groups and keys compare as bytes
-- (utf8mb4_bin): "a" and "A" are two IDs. MySQL has no partial indexes,
-- and its DDL commits at once: every statement here can run again.
CREATE TABLE IF NOT EXISTS {{.Outbox}} (
    seq             BIGINT       NOT NULL AUTO_INCREMENT,
    id              VARCHAR(255) NOT NULL,
    topic           TEXT         NOT NULL,
    name            TEXT         NOT NULL,
    partition_key   VARCHAR(255) NULL,
    metadata        LONGTEXT     NOT NULL,
    payload         LONGBLOB     NOT NULL,
    sent_at         DATETIME(6)  NOT NULL,
    created_at      DATETIME(6)  NOT NULL,
    state           VARCHAR(16)  NOT NULL DEFAULT 'pending',
    attempts        INT          NOT NULL DEFAULT 0,
    next_attempt_at DATETIME(6)  NULL,
    claimed_until   DATETIME(6)  NULL,
    last_error      TEXT         NULL,
    published_at    DATETIME(6)  NULL,
    dead_at         DATETIME(6)  NULL,
    -- The key of a message that may hold back its partition key, or ''
    -- when it has none: leased, waiting for a retry or its time, or dead;
    -- NULL for the others, which are published or ready to publish. MySQL
    -- has no partial index: indexed, this column stands for one
    -- (claim_idx). It is stored: MariaDB 10.11's consistent reads of an
    -- index on a virtual column were seen to miss rows that had just moved
    -- within it.
    held_key        VARCHAR(255) GENERATED ALWAYS AS (CASE WHEN state <> 'published'
        AND (state = 'dead' OR claimed_until IS NOT NULL OR next_attempt_at IS NOT NULL)
        THEN COALESCE(partition_key, '') END) STORED,
    PRIMARY KEY (seq),
    CONSTRAINT {{.OutboxName "id_key"}} UNIQUE KEY (id),
    -- The one other index, since InnoDB writes every index of a row when
    -- it is saved, claimed, marked and purged: the relay's scan (pending
    -- messages ready to publish, in save order, with their keys:
    -- published_at is NULL until a message is published), the holders of a
    -- key (pending or dead, by key in save order), the dead letters, and
    -- retention (published messages, whose held_key is NULL, by age).
    KEY {{.OutboxName "claim_idx"}} (state, held_key, published_at, seq, partition_key),
    CONSTRAINT {{.OutboxName "state_check"}} CHECK (state IN ('pending', 'published', 'dead'))
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_bin;

-- The inbox: one row per consumer group and message ID.
CREATE TABLE IF NOT EXISTS {{.Inbox}} (
    consumer_group VARCHAR(255) NOT NULL,
    id             VARCHAR(255) NOT NULL,
    topic          TEXT         NOT NULL,
    name           TEXT         NOT NULL,
    metadata       LONGTEXT     NOT NULL,
    payload        LONGBLOB     NOT NULL,
    sent_at        DATETIME(6)  NOT NULL,
    received_at    DATETIME(6)  NOT NULL,
    created_at     DATETIME(6)  NOT NULL,
    PRIMARY KEY (consumer_group, id),
    -- Retention: a group's records by age.
    KEY {{.InboxName "created_idx"}} (consumer_group, created_at)
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_bin;
