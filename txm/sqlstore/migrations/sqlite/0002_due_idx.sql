-- The messages with a next attempt time: scheduled messages (saved with a
-- delivery time, which is their first attempt time) and messages waiting
-- for a retry. An idle relay asks for the earliest (Outbox.NextDue) to
-- wake for it. Saves of unscheduled messages add nothing to it.
CREATE INDEX IF NOT EXISTS {{.OutboxName "due_idx"}}
    ON {{.Outbox}} (next_attempt_at)
    WHERE state = 'pending' AND next_attempt_at IS NOT NULL;
