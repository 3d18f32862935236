-- The unpublished messages of each partition key in save order: a locked
-- claim (Outbox.ClaimLocked) looks up the previous unpublished message of
-- each keyed message it takes. Saves of keyed messages add to it; messages
-- without a key do not.
CREATE INDEX IF NOT EXISTS {{.OutboxName "unpublished_key_idx"}}
    ON {{.Outbox}} (partition_key, seq)
    WHERE state <> 'published' AND partition_key IS NOT NULL;
