-- What a heap-only (HOT) lease write would save: the lease-writing claim of
-- the drain's hand-written loop (impl=baseline) on two copies of the outbox
-- with 100,000 pending rows of 256 bytes:
--   a: the store's indexes as migrated (held_idx's predicate names
--      claimed_until, so every lease write adds three index entries), fillfactor 100;
--   b: held_idx without claimed_until in its predicate, fillfactor 60, so the
--      lease write can stay on its page with no index entries.
-- Run: psql 'postgres://postgres@127.0.0.1:5432/test' -f bench/sql/lease-hot.sql
-- It creates and drops the schema txm_hotx. See "Why the defaults are what
-- they are" in bench/README.md (a heap-only lease was tried and not merged).
\set QUIET on
DROP SCHEMA IF EXISTS txm_hotx CASCADE;
CREATE SCHEMA txm_hotx;
CREATE TABLE txm_hotx.a (
    seq bigint GENERATED ALWAYS AS IDENTITY, id text PRIMARY KEY, topic text NOT NULL, name text NOT NULL,
    partition_key text, metadata jsonb NOT NULL, payload bytea NOT NULL, sent_at timestamptz NOT NULL,
    state text NOT NULL DEFAULT 'pending', attempts int NOT NULL DEFAULT 0, next_attempt_at timestamptz,
    claimed_until timestamptz, published_at timestamptz, dead_at timestamptz);
CREATE INDEX ON txm_hotx.a (seq) WHERE state = 'pending';
CREATE INDEX ON txm_hotx.a (partition_key, seq) WHERE state <> 'published'
    AND (state = 'dead' OR claimed_until IS NOT NULL OR next_attempt_at IS NOT NULL);
CREATE INDEX ON txm_hotx.a (published_at) WHERE state = 'published';
CREATE TABLE txm_hotx.b (LIKE txm_hotx.a INCLUDING DEFAULTS INCLUDING IDENTITY) WITH (fillfactor = 60);
ALTER TABLE txm_hotx.b ADD PRIMARY KEY (id);
CREATE INDEX ON txm_hotx.b (seq) WHERE state = 'pending';
CREATE INDEX ON txm_hotx.b (partition_key, seq) WHERE state <> 'published'
    AND (state = 'dead' OR next_attempt_at IS NOT NULL);
CREATE INDEX ON txm_hotx.b (published_at) WHERE state = 'published';
INSERT INTO txm_hotx.a (id, topic, name, metadata, payload, sent_at)
    SELECT gen_random_uuid()::text, 'orders', 'OrderPlaced', '{"content-type":"application/json"}',
        convert_to(repeat('x', 256), 'UTF8'), now()
    FROM generate_series(1, 100000);
INSERT INTO txm_hotx.b (id, topic, name, metadata, payload, sent_at)
    SELECT id, topic, name, metadata, payload, sent_at FROM txm_hotx.a ORDER BY seq;
VACUUM ANALYZE txm_hotx.a;
VACUUM ANALYZE txm_hotx.b;
-- The lease-writing claim of the drain's hand-written loop (impl=baseline)
-- on table txm_hotx.<t>; returns how many messages it leased.
CREATE FUNCTION txm_hotx.claim(t text) RETURNS bigint LANGUAGE plpgsql AS $$
DECLARE n bigint;
BEGIN
    EXECUTE format($q$
        WITH c AS (
            UPDATE txm_hotx.%1$I SET claimed_until = statement_timestamp() + interval '30 seconds'
            WHERE id = ANY (ARRAY(SELECT id FROM txm_hotx.%1$I
                WHERE state = 'pending' AND (claimed_until IS NULL OR claimed_until <= statement_timestamp())
                ORDER BY seq LIMIT 500 FOR UPDATE SKIP LOCKED))
            RETURNING id)
        SELECT count(*) FROM c$q$, t) INTO n;
    RETURN n;
END $$;
\set QUIET off
\timing on
\echo table a, then b: six claims of 500 each, each timed
SELECT format('SELECT txm_hotx.claim(%L)', t) FROM unnest('{a,b}'::text[]) t, generate_series(1, 6) ORDER BY t
\gexec
\timing off
SELECT pg_stat_force_next_flush();
SELECT relname, n_tup_upd, n_tup_hot_upd FROM pg_stat_user_tables WHERE schemaname = 'txm_hotx' ORDER BY relname;
DROP SCHEMA txm_hotx CASCADE;
