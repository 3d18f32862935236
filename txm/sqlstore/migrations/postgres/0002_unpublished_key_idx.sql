-- The unpublished messages of each partition key in save order: a locked
-- claim (Outbox.ClaimLocked) takes a keyed message only when no earlier
-- message of its key is unpublished. Saves of keyed messages add to it;
-- messages without a key do not.
CREATE INDEX IF NOT EXISTS {{.OutboxName "unpublished_key_idx"}}
    ON {{.Outbox}} (partition_key, seq)
    WHERE state <> 'published' AND partition_key IS NOT NULL;
