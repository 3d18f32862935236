package main

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"io/fs"
	"os"
	"slices"
	"sort"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/transmanager/transmanager/txm"
	"github.com/transmanager/transmanager/txm/sqlstore"
	"github.com/transmanager/transmanager/txm/sqlstore/mysql"
	"github.com/transmanager/transmanager/txm/sqlstore/postgres"
	"github.com/transmanager/transmanager/txm/sqlstore/sqlite"
)

// storeFlags selects the store an admin command works on.
type storeFlags struct {
	sqlite, postgres, mysql, schema string
}

func (f *storeFlags) register(fs *flag.FlagSet) {
	fs.StringVar(&f.sqlite, "sqlite", "", "SQLite database file")
	fs.StringVar(&f.postgres, "postgres", "", "PostgreSQL URL")
	fs.StringVar(&f.mysql, "mysql", "", "MySQL or MariaDB DSN (github.com/go-sql-driver/mysql), e.g. user:pass@tcp(host:3306)/db")
	fs.StringVar(&f.schema, "schema", "", "PostgreSQL schema of the tables (default: the search path)")
}

// given counts the stores the flags name.
func (f *storeFlags) given() int {
	n := 0
	for _, v := range []string{f.sqlite, f.postgres, f.mysql} {
		if v != "" {
			n++
		}
	}
	return n
}

// check reports a missing or contradictory selection as a usage error.
func (f *storeFlags) check() error {
	switch {
	case f.given() > 1:
		return usagef("give one of -sqlite, -postgres and -mysql")
	case f.given() == 0:
		return usagef("give -sqlite PATH, -postgres URL or -mysql DSN")
	case f.sqlite != "" && f.schema != "":
		return usagef("-schema is for PostgreSQL; SQLite has none")
	case f.mysql != "" && f.schema != "":
		return usagef("-schema is for PostgreSQL; MySQL's database is the DSN's")
	}
	return nil
}

// adminStore is an open store and what the admin commands read beside its
// API.
type adminStore struct {
	*sqlstore.Store
	tables outboxTables
	close  func()
}

// open opens the selected store. create allows a SQLite file that does not
// exist yet (migrate creates it); the other commands refuse it rather than
// leave an empty file behind.
func (f *storeFlags) open(ctx context.Context, create bool) (*adminStore, error) {
	if err := f.check(); err != nil {
		return nil, err
	}
	if f.sqlite != "" {
		if !create && isFilePath(f.sqlite) {
			if _, err := os.Stat(f.sqlite); errors.Is(err, fs.ErrNotExist) {
				return nil, fmt.Errorf("no SQLite database at %s (txm migrate -sqlite %s creates one)", f.sqlite, f.sqlite)
			} else if err != nil {
				return nil, err
			}
		}
		s, err := sqlite.Open(ctx, f.sqlite, sqlstore.Config{PollOnly: true})
		if err != nil {
			return nil, err
		}
		return &adminStore{Store: s, tables: newOutboxTables(s.DB(), "", quoteIdent), close: func() { _ = s.Close() }}, nil
	}
	if f.mysql != "" {
		s, err := mysql.Open(ctx, f.mysql, sqlstore.Config{})
		if err != nil {
			return nil, err
		}
		return &adminStore{Store: s.Store, tables: newOutboxTables(s.DB(), "", quoteMySQL), close: func() { _ = s.Close() }}, nil
	}
	db, err := sql.Open("pgx", f.postgres)
	if err != nil {
		return nil, err
	}
	s, err := postgres.NewDB(db, sqlstore.Config{Schema: f.schema, PollOnly: true})
	if err != nil {
		_ = db.Close()
		return nil, err
	}
	return &adminStore{Store: s.Store, tables: newOutboxTables(db, f.schema, quoteIdent), close: func() { _ = s.Close(); _ = db.Close() }}, nil
}

// baseStore returns the Store of a LockingStore and err, for the commands
// that do not claim.
func baseStore(s *sqlstore.LockingStore, err error) (*sqlstore.Store, error) {
	if err != nil {
		return nil, err
	}
	return s.Store, nil
}

// isFilePath reports whether a -sqlite value names a plain file, not an
// in-memory database or a "file:" URI.
func isFilePath(p string) bool {
	return p != ":memory:" && !strings.HasPrefix(p, "file:")
}

func runMigrate(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlagSet("migrate", "[-sqlite PATH | -postgres URL [-schema S] | -mysql DSN] [-print [-dialect sqlite|postgres|mysql]]", `
Apply the store's schema: the migrations its migrations table does not record
yet, in one transaction (MySQL: under a lock, statement by statement, each
one safe to run again), then say which were applied. A SQLite file that does
not exist is created. With -print, print the SQL instead, for your own
migration tool; it connects to nothing, so -dialect (or -sqlite / -postgres /
-mysql, whose value is not used) says which SQL.`)
	var sf storeFlags
	sf.register(fs)
	print := fs.Bool("print", false, "print the SQL instead of applying it; connects to nothing")
	dialect := fs.String("dialect", "", `with -print: "sqlite", "postgres" or "mysql" (default: the one -sqlite, -postgres or -mysql names)`)
	if err := parseFlags(fs, args, stdout, stderr); err != nil {
		return err
	}
	if *print {
		sql, err := migrationSQL(sf, *dialect)
		if err != nil {
			return err
		}
		fmt.Fprint(stdout, sql)
		return nil
	}
	if *dialect != "" {
		return usagef("migrate: -dialect goes with -print")
	}
	store, err := sf.open(ctx, true)
	if err != nil {
		return fmt.Errorf("migrate: %w", err)
	}
	defer store.close()
	before, _ := store.tables.migrations(ctx) // none before the first migration
	if err := store.Migrate(ctx); err != nil {
		return fmt.Errorf("migrate: %w", err)
	}
	after, err := store.tables.migrations(ctx)
	if err != nil {
		return fmt.Errorf("migrate: read the applied versions: %w", err)
	}
	var applied []string
	for _, m := range after {
		if !slices.Contains(before, m) {
			applied = append(applied, m.String())
		}
	}
	latest := 0
	if len(after) > 0 {
		latest = after[len(after)-1].version
	}
	if len(applied) == 0 {
		fmt.Fprintf(stdout, "nothing to apply: the schema is at version %d\n", latest)
		return nil
	}
	fmt.Fprintf(stdout, "applied %s: the schema is at version %d\n", strings.Join(applied, ", "), latest)
	return nil
}

// migrationSQL returns the SQL of the dialect that dialect, or else the
// store flags, name, without connecting to anything.
func migrationSQL(sf storeFlags, dialect string) (string, error) {
	if dialect == "" {
		switch {
		case sf.given() > 1:
			return "", usagef("migrate: give one of -sqlite, -postgres and -mysql")
		case sf.sqlite != "":
			dialect = "sqlite"
		case sf.postgres != "":
			dialect = "postgres"
		case sf.mysql != "":
			dialect = "mysql"
		default:
			return "", usagef("migrate -print: say which SQL: -dialect sqlite|postgres|mysql")
		}
	}
	var (
		store *sqlstore.Store
		err   error
	)
	switch dialect {
	case "sqlite":
		if sf.schema != "" {
			return "", usagef("-schema is for PostgreSQL; SQLite has none")
		}
		db, oerr := sql.Open("sqlite", ":memory:") // opens no connection
		if oerr != nil {
			return "", oerr
		}
		defer db.Close()
		store, err = sqlite.New(db, sqlstore.Config{})
	case "postgres":
		db, oerr := sql.Open("pgx", "") // opens no connection
		if oerr != nil {
			return "", oerr
		}
		defer db.Close()
		store, err = baseStore(postgres.NewDB(db, sqlstore.Config{Schema: sf.schema, PollOnly: true}))
	case "mysql":
		if sf.schema != "" {
			return "", usagef("-schema is for PostgreSQL; MySQL's database is the DSN's")
		}
		db, oerr := sql.Open("mysql", "/") // opens no connection
		if oerr != nil {
			return "", oerr
		}
		defer db.Close()
		store, err = baseStore(mysql.New(db, sqlstore.Config{}))
	default:
		return "", usagef("migrate: unknown -dialect %q: sqlite, postgres or mysql", dialect)
	}
	if err != nil {
		return "", fmt.Errorf("migrate: %w", err)
	}
	defer store.Close()
	return store.MigrationSQL(), nil
}

// inspectReport is what inspect shows; -json prints it as it is.
type inspectReport struct {
	Topics      []topicReport `json:"topics"`
	Total       topicReport   `json:"total"`
	Retrying    []retrying    `json:"retrying"`
	ParkedKeys  []parkedKey   `json:"parked_keys"`
	DeadLetters []deadReport  `json:"dead_letters"`
}

type topicReport struct {
	Topic         string     `json:"topic,omitempty"`
	Pending       int64      `json:"pending"`
	Scheduled     int64      `json:"scheduled"`
	Dead          int64      `json:"dead"`
	OldestPending *time.Time `json:"oldest_pending,omitempty"`
	NextDue       *time.Time `json:"next_due,omitempty"`
}

func newTopicReport(topic string, ts txm.TopicStats) topicReport {
	return topicReport{Topic: topic, Pending: ts.Pending, Scheduled: ts.Scheduled, Dead: ts.Dead,
		OldestPending: optTime(ts.OldestPending), NextDue: optTime(ts.NextDue)}
}

type deadReport struct {
	ID        string    `json:"id"`
	Topic     string    `json:"topic"`
	Key       string    `json:"partition_key,omitempty"`
	Attempts  int       `json:"attempts"`
	DeadAt    time.Time `json:"dead_at"`
	LastError string    `json:"last_error"`
}

func optTime(t time.Time) *time.Time {
	if t.IsZero() {
		return nil
	}
	return &t
}

func runInspect(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlagSet("inspect", "(-sqlite PATH | -postgres URL [-schema S] | -mysql DSN) [-dead N] [-retrying N] [-json]", `
Show the outbox: pending (due), scheduled and dead messages, the oldest pending
message and the next scheduled delivery per topic; the messages waiting for a retry (attempts, next attempt, last error);
the partition keys parked behind a failed or dead message, with how many
messages wait behind it; and the dead letters.`)
	var sf storeFlags
	sf.register(fs)
	deadLimit := fs.Int("dead", 20, "dead letters to list")
	retryLimit := fs.Int("retrying", 20, "retrying messages and parked keys to list")
	asJSON := fs.Bool("json", false, "print the report as JSON")
	if err := parseFlags(fs, args, stdout, stderr); err != nil {
		return err
	}
	if *deadLimit < 0 || *retryLimit < 0 {
		return usagef("inspect: -dead and -retrying must not be negative")
	}
	store, err := sf.open(ctx, false)
	if err != nil {
		return fmt.Errorf("inspect: %w", err)
	}
	defer store.close()
	rep, err := inspect(ctx, store, *deadLimit, *retryLimit)
	if err != nil {
		return fmt.Errorf("inspect: %w", err)
	}
	if *asJSON {
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		return enc.Encode(rep)
	}
	return printInspect(stdout, rep, *deadLimit, *retryLimit, time.Now())
}

func inspect(ctx context.Context, store *adminStore, deadLimit, retryLimit int) (inspectReport, error) {
	rep := inspectReport{Topics: []topicReport{}, Retrying: []retrying{}, ParkedKeys: []parkedKey{}, DeadLetters: []deadReport{}}
	out := store.Outbox()
	stats, err := out.Stats(ctx)
	if err != nil {
		return rep, err
	}
	for t, ts := range stats.ByTopic {
		rep.Topics = append(rep.Topics, newTopicReport(t, ts))
	}
	sort.Slice(rep.Topics, func(i, j int) bool { return rep.Topics[i].Topic < rep.Topics[j].Topic })
	rep.Total = newTopicReport("", stats.TopicStats)
	if retryLimit > 0 {
		if rep.Retrying, err = store.tables.retrying(ctx, retryLimit); err != nil {
			return rep, err
		}
		if rep.ParkedKeys, err = store.tables.parkedKeys(ctx, retryLimit); err != nil {
			return rep, err
		}
	}
	if deadLimit > 0 {
		dead, err := out.DeadLetters(ctx, txm.DeadLetterFilter{Limit: deadLimit})
		if err != nil {
			return rep, err
		}
		for _, d := range dead {
			rep.DeadLetters = append(rep.DeadLetters, deadReport{ID: d.Message.ID(), Topic: d.Message.Subject(),
				Key: d.Message.Metadata().PartitionKey(), Attempts: d.Attempts, DeadAt: d.DeadAt, LastError: d.LastError})
		}
	}
	return rep, nil
}

func printInspect(w io.Writer, rep inspectReport, deadLimit, retryLimit int, now time.Time) error {
	ago := func(t *time.Time) string {
		if t == nil {
			return "-"
		}
		return now.Sub(*t).Round(time.Millisecond).String()
	}
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	in := func(t *time.Time) string {
		if t == nil {
			return "-"
		}
		return "in " + t.Sub(now).Truncate(time.Second).String()
	}
	fmt.Fprintln(tw, "TOPIC\tPENDING\tSCHEDULED\tDEAD\tOLDEST PENDING\tNEXT SCHEDULED")
	for _, t := range rep.Topics {
		fmt.Fprintf(tw, "%s\t%d\t%d\t%d\t%s\t%s\n", t.Topic, t.Pending, t.Scheduled, t.Dead, ago(t.OldestPending), in(t.NextDue))
	}
	fmt.Fprintf(tw, "(all)\t%d\t%d\t%d\t%s\t%s\n", rep.Total.Pending, rep.Total.Scheduled, rep.Total.Dead, ago(rep.Total.OldestPending), in(rep.Total.NextDue))
	if err := tw.Flush(); err != nil {
		return err
	}
	if retryLimit > 0 {
		if len(rep.Retrying) == 0 {
			fmt.Fprintln(w, "\nno messages waiting for a retry")
		} else {
			fmt.Fprintf(w, "\nwaiting for a retry (up to %d):\n", retryLimit)
			fmt.Fprintln(tw, "ID\tTOPIC\tKEY\tATTEMPTS\tNEXT ATTEMPT\tLAST ERROR")
			for _, r := range rep.Retrying {
				next := "due"
				if r.NextAttempt != nil && r.NextAttempt.After(now) {
					next = "in " + r.NextAttempt.Sub(now).Round(time.Millisecond).String()
				}
				fmt.Fprintf(tw, "%s\t%s\t%s\t%d\t%s\t%s\n", r.ID, r.Topic, dash(r.Key), r.Attempts, next, oneLine(r.LastError))
			}
			if err := tw.Flush(); err != nil {
				return err
			}
		}
		if len(rep.ParkedKeys) == 0 {
			fmt.Fprintln(w, "\nno parked partition keys")
		} else {
			fmt.Fprintf(w, "\nparked partition keys (up to %d): each waits for the message that holds it\n", retryLimit)
			fmt.Fprintln(tw, "KEY\tHELD BY\tSTATE\tWAITING BEHIND")
			for _, p := range rep.ParkedKeys {
				state := p.State
				if p.State == "dead" {
					state = "dead (txm replay -id " + p.HeldBy + ")"
				}
				fmt.Fprintf(tw, "%s\t%s\t%s\t%d\n", p.Key, p.HeldBy, state, p.Waiting)
			}
			if err := tw.Flush(); err != nil {
				return err
			}
		}
	}
	if deadLimit == 0 {
		return nil
	}
	if len(rep.DeadLetters) == 0 {
		fmt.Fprintln(w, "\nno dead letters")
		return nil
	}
	fmt.Fprintf(w, "\ndead letters (up to %d):\n", deadLimit)
	fmt.Fprintln(tw, "ID\tTOPIC\tATTEMPTS\tDEAD FOR\tLAST ERROR")
	for _, d := range rep.DeadLetters {
		fmt.Fprintf(tw, "%s\t%s\t%d\t%s\t%s\n", d.ID, d.Topic, d.Attempts, ago(&d.DeadAt), oneLine(d.LastError))
	}
	return tw.Flush()
}

func dash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

func oneLine(s string) string {
	s = strings.ReplaceAll(s, "\n", " ")
	if len(s) > 120 {
		s = s[:117] + "..."
	}
	return s
}

// idList collects repeated -id flags.
type idList []string

func (l *idList) String() string     { return strings.Join(*l, ",") }
func (l *idList) Set(v string) error { *l = append(*l, v); return nil }

// replayReport is what replay did; -json prints it.
type replayReport struct {
	Replayed int            `json:"replayed"`
	Messages []replayedItem `json:"messages"`
}

type replayedItem struct {
	ID    string `json:"id"`
	Topic string `json:"topic"`
}

func runReplay(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlagSet("replay", "(-sqlite PATH | -postgres URL [-schema S] | -mysql DSN) (-id ID... | -topic T | -all) [-json]", `
Move dead letters back to pending, due at once with their attempts reset, which
unparks their partition keys. -id may be repeated and may be combined with
-topic (both must hold); an -id that is not a dead letter fails the command
and nothing is replayed.`)
	var sf storeFlags
	sf.register(fs)
	var ids idList
	fs.Var(&ids, "id", "dead letter ID to replay (repeatable)")
	topic := fs.String("topic", "", "replay the dead letters of this topic")
	all := fs.Bool("all", false, "replay every dead letter")
	asJSON := fs.Bool("json", false, "print what was replayed as JSON")
	if err := parseFlags(fs, args, stdout, stderr); err != nil {
		return err
	}
	if len(ids) == 0 && *topic == "" && !*all {
		return usagef("replay: say what to replay: -id, -topic or -all")
	}
	if *all && (len(ids) > 0 || *topic != "") {
		return usagef("replay: -all cannot be combined with -id or -topic")
	}
	if err := sf.check(); err != nil {
		return err
	}
	store, err := sf.open(ctx, false)
	if err != nil {
		return fmt.Errorf("replay: %w", err)
	}
	defer store.close()
	filter := txm.DeadLetterFilter{IDs: ids, Topic: *topic}
	selected, err := store.Outbox().DeadLetters(ctx, filter)
	if err != nil {
		return fmt.Errorf("replay: %w", err)
	}
	if len(ids) > 0 {
		var missing []string
		for _, id := range ids {
			if !slices.ContainsFunc(selected, func(d txm.DeadLetter) bool { return d.Message.ID() == id }) {
				missing = append(missing, id)
			}
		}
		if len(missing) > 0 {
			what := "not a dead letter"
			if len(missing) > 1 {
				what = "not dead letters"
			}
			if *topic != "" {
				what += " of topic " + *topic
			}
			return fmt.Errorf("replay: %s: %s; nothing replayed", strings.Join(missing, ", "), what)
		}
	}
	n, err := store.Outbox().Replay(ctx, filter)
	if err != nil {
		return fmt.Errorf("replay: %w", err)
	}
	if *asJSON {
		rep := replayReport{Replayed: n, Messages: []replayedItem{}}
		for _, d := range selected {
			rep.Messages = append(rep.Messages, replayedItem{ID: d.Message.ID(), Topic: d.Message.Subject()})
		}
		return json.NewEncoder(stdout).Encode(rep)
	}
	switch {
	case n == 0 && *topic != "":
		fmt.Fprintf(stdout, "no dead letters of topic %s: nothing replayed\n", *topic)
	case n == 0:
		fmt.Fprintln(stdout, "no dead letters: nothing replayed")
	default:
		fmt.Fprintf(stdout, "%s moved back to pending\n", plural(n, "dead letter", "dead letters"))
	}
	return nil
}

func plural(n int, one, many string) string {
	if n == 1 {
		return "1 " + one
	}
	return fmt.Sprintf("%d %s", n, many)
}
