package sqlstore

import (
	"fmt"
	"log/slog"
	"regexp"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
)

// Config configures a [Store]. The zero value is usable: every zero field
// takes the default its comment names.
type Config struct {
	// Schema is the PostgreSQL schema that holds the tables. "" means no
	// schema qualification: the tables are found through the connection's
	// search_path (normally "public"). [Store.Migrate] creates the schema
	// when it does not exist (CREATE SCHEMA IF NOT EXISTS), as do
	// [Store.MigrationSQL] and [Store.MigrationFS]. It must be "" for
	// SQLite.
	Schema string

	// OutboxTable names the outbox table. Default "txm_outbox".
	OutboxTable string

	// InboxTable names the inbox table, shared by every consumer group.
	// Default "txm_inbox".
	InboxTable string

	// MigrationsTable names the table where [Store.Migrate] records the
	// versions it applied. Default "txm_migrations". Stores with other
	// outbox or inbox tables can share it: versions are recorded per pair
	// of tables.
	MigrationsTable string

	// KeepPublished keeps published messages in the outbox table, in the
	// state 'published', until [Outbox.Purge] removes them. By default
	// MarkPublished deletes them: a delete writes no new row version and no
	// index entry, where marking a row published writes both, and this is
	// most of the database's work per relayed message. Without the row,
	// saving the same message ID again after its publication is accepted
	// (duplicate IDs are refused while the message is unpublished or dead);
	// JetStream's duplicate window and the consumer's inbox absorb such a
	// repeat. Set it to inspect what was published, or to refuse an ID for
	// as long as its row is kept.
	KeepPublished bool

	// DefaultLease is the lease FindUnpublished takes on the messages it
	// returns (the relay's Claim passes its own). Default 30s.
	DefaultLease time.Duration

	// NotifyChannel is the PostgreSQL NOTIFY/LISTEN channel that saves
	// signal and the [Outbox.Wakeups] listener waits on. Default
	// "txm_outbox". Ignored by SQLite.
	NotifyChannel string

	// PollOnly turns NOTIFY and LISTEN off (PostgreSQL): saves do not
	// notify and Wakeups reports only the saves of this process, so relays
	// in other processes learn of new messages on their next poll. Set it
	// behind a pooler in transaction mode (such as PgBouncer), which does
	// not keep a LISTEN session. Default false. SQLite is always poll-only
	// across processes.
	PollOnly bool

	// NotifyInterval throttles NOTIFY (PostgreSQL, unless PollOnly): a save
	// notifies in its own statement only when this store sent no
	// notification within the interval. PostgreSQL serialises the commits
	// of notifying transactions, so notifying on every save costs
	// concurrent savers most of their throughput. A save that skipped its
	// NOTIFY is followed by one: after the commit for a transaction that
	// [Store.InTx] began, at the end of the interval for a save without a
	// transaction, and at the end of the interval and again 50ms later for
	// a save in a caller's transaction, whose commit the store cannot see
	// (if that commit comes later still, relays find the message on their
	// next notification or poll). Default 2ms; a negative value notifies
	// on every save.
	NotifyInterval time.Duration

	// Logger receives the store's own logs (the LISTEN connection's
	// failures and reconnections). Default: slog.Default().
	Logger *slog.Logger

	// quoteIdent is the engine's quote, set by withDefaults.
	quoteIdent func(string) string
}

// Defaults of [Config].
const (
	DefaultOutboxTable     = "txm_outbox"
	DefaultInboxTable      = "txm_inbox"
	DefaultMigrationsTable = "txm_migrations"
	DefaultNotifyChannel   = "txm_outbox"
	DefaultLease           = 30 * time.Second
	DefaultNotifyInterval  = 2 * time.Millisecond
)

// maxIdentLen leaves room for the index name suffixes within PostgreSQL's
// 63-byte identifiers.
const maxIdentLen = 48

var identRE = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]*$`)

func checkIdent(field, v string) error {
	switch {
	case len(v) > maxIdentLen:
		return fmt.Errorf("sqlstore: Config.%s: %q is longer than %d bytes", field, v, maxIdentLen)
	case !identRE.MatchString(v):
		return fmt.Errorf("sqlstore: Config.%s: %q is not a plain identifier (letters, digits and _, not starting with a digit)", field, v)
	}
	return nil
}

// withDefaults validates c and fills in its defaults.
func (c Config) withDefaults(e engine) (Config, error) {
	if c.OutboxTable == "" {
		c.OutboxTable = DefaultOutboxTable
	}
	if c.InboxTable == "" {
		c.InboxTable = DefaultInboxTable
	}
	if c.MigrationsTable == "" {
		c.MigrationsTable = DefaultMigrationsTable
	}
	if c.NotifyChannel == "" {
		c.NotifyChannel = DefaultNotifyChannel
	}
	if c.DefaultLease == 0 {
		c.DefaultLease = DefaultLease
	}
	if c.NotifyInterval == 0 {
		c.NotifyInterval = DefaultNotifyInterval
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	c.quoteIdent = e.quote
	if c.DefaultLease < 0 {
		return c, fmt.Errorf("sqlstore: Config.DefaultLease must not be negative, got %v", c.DefaultLease)
	}
	if err := e.checkConfig(c); err != nil {
		return c, err
	}
	if c.Schema != "" {
		if err := checkIdent("Schema", c.Schema); err != nil {
			return c, err
		}
	}
	for _, f := range []struct{ name, v string }{
		{"OutboxTable", c.OutboxTable},
		{"InboxTable", c.InboxTable},
		{"MigrationsTable", c.MigrationsTable},
		{"NotifyChannel", c.NotifyChannel},
	} {
		if err := checkIdent(f.name, f.v); err != nil {
			return c, err
		}
	}
	if strings.EqualFold(c.OutboxTable, c.InboxTable) || strings.EqualFold(c.OutboxTable, c.MigrationsTable) ||
		strings.EqualFold(c.InboxTable, c.MigrationsTable) {
		return c, fmt.Errorf("sqlstore: Config: OutboxTable %q, InboxTable %q and MigrationsTable %q must differ",
			c.OutboxTable, c.InboxTable, c.MigrationsTable)
	}
	return c, nil
}

// quoteIdent quotes an identifier that checkIdent accepted, as PostgreSQL
// and SQLite do.
func quoteIdent(s string) string { return `"` + strings.ReplaceAll(s, `"`, `""`) + `"` }

// quote quotes an identifier that checkIdent accepted for the store's
// database.
func (c Config) quote(s string) string {
	if c.quoteIdent == nil {
		return quoteIdent(s)
	}
	return c.quoteIdent(s)
}

// qualified returns the quoted, schema-qualified name of a table.
func (c Config) qualified(table string) string {
	if c.Schema == "" {
		return c.quote(table)
	}
	return c.quote(c.Schema) + "." + c.quote(table)
}

// identifier returns a table's name, schema-qualified, for pgx's CopyFrom.
func (c Config) identifier(table string) pgx.Identifier {
	if c.Schema == "" {
		return pgx.Identifier{table}
	}
	return pgx.Identifier{c.Schema, table}
}
