// Package sqlstore keeps the transactional outbox and inbox in a SQL
// database. A store is built by the package of its database, so that a
// program links only the drivers it uses:
// [github.com/transmanager/transmanager/txm/sqlstore/postgres] (PostgreSQL
// through pgx, a [pgxpool.Pool], or through database/sql with pgx's stdlib
// driver), [github.com/transmanager/transmanager/txm/sqlstore/sqlite]
// (SQLite through the pure-Go modernc.org/sqlite driver) and
// [github.com/transmanager/transmanager/txm/sqlstore/mysql] (MySQL 8.0+ and
// MariaDB 10.6+ through github.com/go-sql-driver/mysql). The SQLite
// package returns a [*Store], the PostgreSQL and MySQL packages a
// [*LockingStore]: the same Store, whose outbox can also claim by locking.
// What differs per database (its SQL text, its claim, its migrations and
// how it wakes relays) is the database's engine.
//
// A [Store] has two sides. [Store.Outbox] returns an [Outbox], which
// implements [txm.OutboxStore] and the relay's optional capabilities
// ([txm.Transactor], [txm.Claimer], [txm.DeadLetterStore], [txm.BatchSaver],
// [txm.StatsReporter], [txm.Purger], [txm.FullWaker], [txm.Scheduler],
// [txm.DueReporter]); a LockingStore's [LockingStore.Outbox] returns a
// [LockingOutbox], which implements [txm.LockingClaimer] as well. A store
// that cannot claim by locking does not implement it, so that a relay with
// [txm.ProcessorConfig.LockClaims] refuses SQLite when it is built.
// Scheduled messages ([txm.WithDeliverAt]) keep their delivery time in
// next_attempt_at, on the database's clock (see [Outbox.Cancel]). [Store.Inbox] returns the [Inbox] of one consumer
// group, which implements [txm.InboxStore] and
// [txm.Transactor]: two groups each process the same message once.
//
// # Opening a store
//
//	pool, err := pgxpool.New(ctx, "postgres://app@db/app")
//	store, err := postgres.New(pool, sqlstore.Config{})
//	err = store.Migrate(ctx) // or apply store.MigrationSQL() with your tool
//
//	db, err := sql.Open("pgx", "postgres://app@db/app") // github.com/jackc/pgx/v5/stdlib
//	store, err := postgres.NewDB(db, sqlstore.Config{})
//
//	store, err := sqlite.Open(ctx, "app.db", sqlstore.Config{})
//	defer store.Close()
//
//	store, err := mysql.Open(ctx, "app@tcp(db:3306)/app", sqlstore.Config{})
//	defer store.Close()
//
// The constructors do no I/O and nothing global: several stores, on one
// database (with other table names or schemas) or on several, live side by
// side. [Config] documents every setting and its default; table names are
// checked to be plain identifiers and always quoted.
//
// # Transactions
//
// A message must be saved in the transaction that makes the business
// change, so the stores run their statements in the transaction that the
// context carries. Put yours there with [WithPgxTx] (pgx) or [WithTx]
// (database/sql); you commit it. With pgx:
//
//	tx, err := pool.Begin(ctx)
//	defer tx.Rollback(ctx)
//	_, err = tx.Exec(ctx, "INSERT INTO orders (id, total) VALUES ($1, $2)", id, total)
//	err = store.Outbox().Save(sqlstore.WithPgxTx(ctx, tx), msg)
//	err = tx.Commit(ctx) // the order and the message, or neither
//
// With database/sql:
//
//	tx, err := db.BeginTx(ctx, nil)
//	defer tx.Rollback()
//	_, err = tx.ExecContext(ctx, "INSERT INTO orders (id, total) VALUES ($1, $2)", id, total)
//	err = store.Outbox().Save(sqlstore.WithTx(ctx, tx), msg)
//	err = tx.Commit()
//
// Or let the store begin and end the transaction: [Store.InTx] runs a
// function in one, commits when it returns nil and rolls back when it fails
// or panics; the function's own statements take the transaction from
// [PgxTxFromContext] or [TxFromContext]. [txm.InboxHandler] uses InTx to
// record an incoming message and run the handler in one transaction.
//
// Without a transaction in the context, each call commits on its own. A
// Publish through [txm.OutboxPublisher] (or a typed [txm.Outbox] on it)
// refuses that, with an error matching [txm.ErrNoTransaction] and nothing
// saved, since the outbox implements [txm.TxReporter] ([Outbox.InTransaction]):
// a forgotten WithPgxTx would otherwise commit the event of a business
// change that rolls back. Mark a save meant to commit on its own with
// [txm.Standalone].
//
// A duplicate ID does not break the transaction: saves insert with ON
// CONFLICT DO NOTHING and report [txm.ErrDuplicateMessage] when nothing was
// inserted, so the caller's transaction can still commit.
//
// # Migrations
//
// The schema is a list of versioned SQL files embedded in the package
// (migrations/postgres/*.sql, migrations/sqlite/*.sql,
// migrations/mysql/*.sql), templated with the configured table names.
// [Store.Migrate] creates [Config.Schema] when it does not exist
// (PostgreSQL), applies the versions that the migrations table does not
// record yet, in one transaction, and records them; processes that start
// together may all call it (PostgreSQL: a transaction-scoped advisory lock;
// SQLite: BEGIN IMMEDIATE; MySQL: GET_LOCK on a connection of its own, and,
// since MySQL commits DDL as it runs, statements that are each safe to run
// again instead of one transaction). [Store.MigrationSQL] returns the same
// statements for your own migration tool, as one script, and
// [Store.MigrationFS] as one file per version (golang-migrate, goose,
// Atlas); they are idempotent, so Migrate after them changes nothing.
//
// An outbox or inbox operation on a database without the store's tables
// fails with an error matching [ErrNotMigrated], which says to run Migrate.
//
// # The outbox table
//
// A message is pending from its save, claimed by one relay with a lease
// (claimed_until, from the database clock), then published, or back to
// pending with attempts+1 and a next_attempt_at after a failure, or dead
// with its last error after too many; [Outbox.Replay] makes dead messages
// pending again. [Outbox.MarkPublished] deletes a published message's row,
// which writes no new row version and no index entry; with
// [Config.KeepPublished] it marks the row published instead, and the row
// stays until [Outbox.Purge] deletes it. Messages that a claim of the same
// store returned are marked by their seq, found in pending_idx, rather than
// by their text ID.
//
// IDs are text: UUIDv7 strings by default, but [async.WithID] allows any
// string, so a uuid column would reject valid IDs. The payload is bytea
// (SQLite: BLOB). Metadata is JSON (jsonb; SQLite: TEXT), so it reads back
// as JSON values: strings stay strings, numbers come back as float64, times
// as RFC 3339 strings (which [async.Metadata.GetTime] parses). The partition
// key is also kept in a column of its own.
//
// Save order is a sequence: an identity column on PostgreSQL, the rowid on
// SQLite. Measured against a clock_timestamp() column ordered with the ID,
// inserts cost the same or less with concurrent savers and the index is
// smaller (8 bytes against a timestamp and the text ID). jsonb metadata
// costs no more to insert than bytea within the noise of the measurement,
// and can be queried.
//
// Four partial indexes, besides the primary key, each serve one query of
// the relay:
//
//   - pending_idx (seq) WHERE state = 'pending': the claim's scan in save
//     order. With unpublished_key_idx for keyed messages, the only index a
//     save adds to.
//   - held_idx (partition_key, seq) over the messages that may hold their
//     key back (leased, waiting for a retry, or dead): the claim's per-key
//     lookup, and DeadLetters. Saves add nothing to it.
//   - unpublished_key_idx (partition_key, seq) over unpublished keyed
//     messages: the locked claim's lookup of each keyed message's
//     predecessor (see Locked claims). Saves of keyed messages add to it.
//   - published_idx (published_at) WHERE state = 'published' (rows kept with
//     Config.KeepPublished): Purge, which
//     therefore reads only the rows it deletes. Without it, purging would
//     scan the young published rows on every batch.
//
// The inbox has its primary key (consumer_group, id), which does the
// deduplication, and (consumer_group, created_at) for [Inbox.PurgeInbox].
//
// [Outbox.SaveMany] on a pgx store writes a batch of 32 messages or more
// with COPY, as fast as a raw COPY of the same rows (BenchmarkStoreSaveMany
// compares them, see bench/README.md). COPY cannot skip a
// duplicate ID: the whole COPY fails, under a savepoint when it runs in a
// transaction so that the transaction stays usable, and SaveMany inserts
// the batch again from unnest() over one array per column with ON CONFLICT
// DO NOTHING, which skips the duplicates. A batch with a duplicate thus
// costs a failed COPY more. Smaller batches, and every batch of a
// database/sql store (which has no COPY), take the unnest() insert at once:
// it is slower than COPY, but as a single statement it needs no savepoint
// and NOTIFYs in the same round trip. On SQLite SaveMany runs multi-row
// inserts of 500 messages in one transaction.
//
// The benchmarks in bench/ measure these paths against hand-written SQL;
// bench/README.md has the commands and the current figures.
//
// # Claiming
//
// [Outbox.Claim] returns, in save order, pending messages that are due and
// not leased, none of which comes after a message of its partition key that
// is not published and not in the same result: a key whose earliest
// unpublished message is leased, waiting for a retry or dead is parked,
// while other keys go on. Messages without a key are independent.
//
// Concurrent relays are made safe in two layers. On PostgreSQL, a claim
// first takes a transaction-scoped advisory lock (pg_advisory_xact_lock)
// that serialises the claims on one outbox table, and then, in a second
// statement, chooses and leases its messages. Under READ COMMITTED that
// statement sees every claim committed before it, so relay B never takes
// message k2 while relay A holds k1 of the same key in a claim B could not
// see yet. Claims are short — publishing happens outside them — and with
// pgx both statements go in one round trip (a batch in an implicit
// transaction). Second, the statement locks its candidates with FOR UPDATE
// SKIP LOCKED and drops, per key, every candidate after one it could not
// lock or that changed meanwhile (a late MarkFailed after the lease ran out,
// ExtendClaims, Replay), so nothing but claims can make it hand a key out of
// order either. On SQLite, which has one writer at a time, a claim is a
// single UPDATE ... RETURNING. A claim made in a transaction of the
// caller's holds the advisory lock until that transaction ends; the relay
// claims without one. On MySQL a claim reads its candidates, locks them
// with FOR UPDATE SKIP LOCKED in a second statement, rechecks each on the
// row as locked, and leases, per key, the candidates before the first one
// it could not lock or that changed: the same guarantee without the
// advisory lock. While its claims meet partition keys, a MySQL claim first
// reads the keys held now (leased, retrying or dead, from the index of
// held messages) and passes over the ready messages of those keys in its
// read of candidates as a list, with the keys of the store's own batches
// in flight: a claim made while every key of the backlog is held reads
// the index past them, instead of looking up a holder for each message.
// A locked claim of the relay (LockingOutbox.InTx, READ COMMITTED) on a
// backlog without keys, where no held message is due again, is one locking
// read of the primary key from the first message ready, which passes over
// the rows other claims hold; when it meets a keyed message the claim
// falls back to reading candidates, in the same transaction.
//
// The claim scans pending messages from the oldest, looks up each key's
// first holding message in held_idx (memoized per key), and stops after
// limit messages, so its cost grows with the limit and the parked keys it
// meets, not with the backlog. Messages parked behind a dead or retrying
// message are scanned past on every claim, so replay dead letters rather
// than let their keys grow.
//
// pgx and database/sql prepare statements, and after five executions
// PostgreSQL may switch to a generic plan: planned without the parameters
// (it assumes a LIMIT $1 keeps a tenth of the rows) and with the
// statistics of that moment, then kept while the table changes. On a
// freshly migrated table that plan is a sequential scan: MarkPublished kept
// one while the outbox grew to 100,000 rows, and the relay's latency grew
// with it. So every statement that reads or changes existing rows either
// runs a generic plan pinned to index scans (the claim, and on pgx the
// updates by ID, below) or runs unnamed (pgx's QueryExecModeCacheDescribe),
// planned for its arguments and the table as it is on each call, at a
// small planning cost per call; TestPostgresNoStaleGenericPlans EXPLAINs every cached
// generic plan of the store and fails on a sequential scan. Inserts keep
// their prepared statements. The statements
// also select the rows to change first and change them through
// id = ANY(ARRAY(subquery)), an index lookup. (Written as IN or a join, the
// generic plan of the claim scanned the whole table.)
// The claim was not robust enough for generic plans under load: with a
// producer saving 4,000 messages a second, its generic plan (built once per
// connection, with the statistics of the moment, for any limit) and, with
// statistics taken while the relay was caught up, a bitmap scan of every
// pending row made each claim O(backlog), so a relay once behind never
// caught up. A claim the
// store runs in its own transaction therefore turns bitmap and sequential
// scans off for that transaction and locks and leases each candidate by
// TID: the only
// plan left reads pending_idx in save order and stops at the limit,
// whatever the statistics. It then runs one cached generic plan
// (plan_cache_mode force_generic_plan), not planned again on every call (a
// custom plan's planning is a large share of an idle relay's claim),
// and the limit is written into the statement's text, one statement per
// limit (the relay's batch size): a generic plan for LIMIT $1, not knowing
// the limit, halved the speed of a drain. A claim in a
// transaction of the caller's leaves the caller's settings alone. The
// updates by ID (MarkPublished, ExtendClaims, ReleaseClaims, MarkFailed,
// MarkDead) run on pgx in one round trip after a set_config that turns
// sequential scans off and keeps their one generic plan: no planning per
// call, and no sequential scan kept from a plan built while the table
// looked empty.
//
// That transaction also commits with synchronous_commit off: it does not
// wait for its lease to reach the disk, which would add to the
// commit-to-publish latency on a busy machine. If the database crashes
// before the WAL writer flushes it (within 3 × wal_writer_delay, 600 ms by
// default) the lease is lost and the message can be claimed and published
// a second time, as after a relay crash; JetStream's duplicate window or
// the consumer's inbox absorbs it. Saves and MarkPublished stay
// synchronous, so nothing saved is lost and nothing is recorded as
// published that was not, and a later synchronous commit (the batch's
// MarkPublished) flushes the lease with it.
// Purge and PurgeInbox take their oldest rows by index, so a batch costs
// the rows it deletes, not the size of the table.
//
// # Locked claims
//
// [LockingOutbox.ClaimLocked] (PostgreSQL and MySQL; the relay's
// [txm.ProcessorConfig.LockClaims]) claims without a lease: a SELECT ...
// FOR UPDATE SKIP LOCKED in a transaction that the relay keeps open while
// it publishes the batch, and in which it then records the outcome. The
// row locks are the claim, so a batch costs one commit instead of two and
// no lease write (the claim's new row version and its index entries), and
// a relay that dies frees its batch as soon as PostgreSQL ends its
// transaction. The LIMIT counts only rows the claim locked, so rows that
// another claim holds are passed over. A row lock cannot be seen from
// another transaction's snapshot, so the claim reads, with each keyed
// message, the previous unpublished message of its key in the statement's
// snapshot (from unpublished_key_idx, migration 2), and keeps a keyed
// message only when there is none or it kept that one: a chain from the
// key's head, every link locked by this claim. A published message never
// becomes unpublished, so no later commit can add a link the snapshot
// missed. Messages behind one that holds its key (leased, retrying or
// dead) are left out before the LIMIT through held_idx, as in a lease
// claim, so parked keys cost nothing; the later messages of a key whose
// head another transaction holds locked are locked and left out, until
// the claim's transaction ends. Locked and leasing relays may share an
// outbox: a lease claim skips locked rows and drops the rest of their
// keys, as it does for any row it cannot lock; a locked claim skips leased
// messages and their keys' later messages.
// In a transaction begun by [Store.InTx], ClaimLocked pins its plan as a
// lease claim does (TestPostgresClaimLockedPlan); in the caller's own
// transaction it leaves the settings alone, but for the idle limit the
// caller passes: the transaction's idle_in_transaction_session_timeout,
// after which PostgreSQL ends a claim whose relay stopped responding, as a
// lease would expire. [Outbox.ExtendClaims] in the
// same transaction writes a lease that lasts past it (the relay holds a
// topic whose circuit is open that way). The relay runs its locked claims
// in [LockingOutbox.InTx], which on MySQL begins the transaction at READ
// COMMITTED: at InnoDB's default, REPEATABLE READ, a claim that passes
// over a row another relay holds at the end of the table locks the gap
// after it, and every save would wait for the claim to end.
//
// Order within a key is save order: the order of the sequence values, taken
// when each message is inserted. For messages of one key saved by
// concurrent transactions that is commit order when the transactions
// serialise on the key's business rows, as they usually do (an order's
// events are written while the order row is locked); when they do not, a
// later message may be published before an earlier one that commits after
// it was claimed.
//
// # Wake-ups
//
// [Outbox.Wakeups] tells the relay that messages were committed. Saves
// that commit on their own, and [Store.InTx] after its commit, signal it at
// once within the process, as do Replay and ReleaseClaims, and a retry
// scheduled by MarkFailed when it falls due (so the relay need not wait for
// its next poll to retry). On PostgreSQL, unless [Config.PollOnly], every
// save also sends NOTIFY on [Config.NotifyChannel] in the same statement
// (PostgreSQL delivers it at commit, so a rollback sends nothing), and the
// first call of Wakeups starts a LISTEN on a connection of the store's own,
// which wakes relays of every process, including for saves in your own
// transaction; it reconnects with exponential backoff and stops on Close.
//
// NOTIFY has a cost: PostgreSQL serialises the commits of notifying
// transactions, so a NOTIFY in every save slows a single saver and costs
// concurrent savers much of their throughput (BenchmarkStoreWrite; see
// "Write path" in bench/README.md). So saves notify at most once per
// [Config.NotifyInterval] (2ms) per store: a save
// within the interval of the last notification does not notify, and one
// trailing NOTIFY follows at the end of the interval for the saves that
// did not. Set PollOnly behind a pooler in transaction mode, which cannot
// keep a LISTEN session.
//
// SQLite and MySQL signal within the process only: a save in your own
// transaction ([WithTx]) or another process's reaches the relay on its
// next poll.
//
// [Outbox.WakesForAllSaves] reports whether the wake-ups cover every save
// of every process: on PostgreSQL, unless PollOnly, while the LISTEN
// connection listens. While it does, a relay that claimed fewer messages
// than its batch size waits for the next wake-up; otherwise it claims again
// at once (see [txm.FullWaker]).
//
// # SQLite
//
// SQLite runs in the process, so the process clock is the database clock;
// times are stored as Unix microseconds. sqlite.Open sets WAL, a busy
// timeout, foreign keys and IMMEDIATE transactions, and keeps the pool
// small: writers take turns anyway. A claim first reads whether there is
// anything to claim, which in WAL mode waits for no writer, and takes the
// write lock only when there is: an idle relay neither slows the savers
// down nor waits behind a long transaction.
//
// # Engines
//
// The core of this package (transactions, saves, claims, marks, dead
// letters, retention, migrations) is written once; what differs per
// database is the database's engine, in files of its own with its SQL text
// and its migrations: postgres*.go, sqlite.go and mysql.go. The packages
// postgres, sqlite and mysql build a store on their engine through
// [Build]; a new database is one engine file set, its migrations and such
// a package (see the README).
//
// # Errors
//
// Errors name the operation and wrap their cause with %w: errors.Is finds
// [txm.ErrDuplicateMessage], [async.ErrClosed] after Close, and the
// context's error (context.Canceled, context.DeadlineExceeded) when the
// context ended, whatever the driver reported.
package sqlstore
