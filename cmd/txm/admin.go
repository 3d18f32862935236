package main

import (
	"context"
	"database/sql"
	"errors"
	"flag"
	"fmt"
	"io"
	"sort"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/transmanager/transmanager/txm"
	"github.com/transmanager/transmanager/txm/sqlstore"
)

// storeFlags selects the store an admin command works on.
type storeFlags struct {
	sqlite, postgres, schema string
}

func (f *storeFlags) register(fs *flag.FlagSet) {
	fs.StringVar(&f.sqlite, "sqlite", "", "SQLite database file")
	fs.StringVar(&f.postgres, "postgres", "", "PostgreSQL URL")
	fs.StringVar(&f.schema, "schema", "", "PostgreSQL schema of the tables (default: the search path)")
}

func (f *storeFlags) open(ctx context.Context) (*sqlstore.Store, func(), error) {
	switch {
	case f.sqlite != "" && f.postgres != "":
		return nil, nil, errors.New("give -sqlite or -postgres, not both")
	case f.sqlite != "":
		s, err := sqlstore.OpenSQLite(ctx, f.sqlite, sqlstore.Config{PollOnly: true})
		if err != nil {
			return nil, nil, err
		}
		return s, func() { _ = s.Close() }, nil
	case f.postgres != "":
		db, err := sql.Open("pgx", f.postgres)
		if err != nil {
			return nil, nil, err
		}
		s, err := sqlstore.NewPostgresDB(db, sqlstore.Config{Schema: f.schema, PollOnly: true})
		if err != nil {
			_ = db.Close()
			return nil, nil, err
		}
		return s, func() { _ = s.Close(); _ = db.Close() }, nil
	default:
		return nil, nil, errors.New("give -sqlite PATH or -postgres URL")
	}
}

func runMigrate(ctx context.Context, args []string, stdout io.Writer) error {
	fs := flag.NewFlagSet("migrate", flag.ContinueOnError)
	var sf storeFlags
	sf.register(fs)
	print := fs.Bool("print", false, "print the SQL instead of applying it")
	if err := fs.Parse(args); err != nil {
		return err
	}
	store, closeStore, err := sf.open(ctx)
	if err != nil {
		return fmt.Errorf("migrate: %w", err)
	}
	defer closeStore()
	if *print {
		fmt.Fprintln(stdout, store.MigrationSQL())
		return nil
	}
	if err := store.Migrate(ctx); err != nil {
		return fmt.Errorf("migrate: %w", err)
	}
	fmt.Fprintln(stdout, "schema up to date")
	return nil
}

func runInspect(ctx context.Context, args []string, stdout io.Writer) error {
	fs := flag.NewFlagSet("inspect", flag.ContinueOnError)
	var sf storeFlags
	sf.register(fs)
	limit := fs.Int("dead", 20, "dead letters to list")
	if err := fs.Parse(args); err != nil {
		return err
	}
	store, closeStore, err := sf.open(ctx)
	if err != nil {
		return fmt.Errorf("inspect: %w", err)
	}
	defer closeStore()
	out := store.Outbox()
	stats, err := out.Stats(ctx)
	if err != nil {
		return fmt.Errorf("inspect: %w", err)
	}
	now := time.Now()
	age := func(t time.Time) string {
		if t.IsZero() {
			return "-"
		}
		return now.Sub(t).Round(time.Millisecond).String()
	}
	tw := tabwriter.NewWriter(stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "TOPIC\tPENDING\tDEAD\tOLDEST PENDING")
	topics := make([]string, 0, len(stats.ByTopic))
	for t := range stats.ByTopic {
		topics = append(topics, t)
	}
	sort.Strings(topics)
	for _, t := range topics {
		ts := stats.ByTopic[t]
		fmt.Fprintf(tw, "%s\t%d\t%d\t%s\n", t, ts.Pending, ts.Dead, age(ts.OldestPending))
	}
	fmt.Fprintf(tw, "(all)\t%d\t%d\t%s\n", stats.Pending, stats.Dead, age(stats.OldestPending))
	if err := tw.Flush(); err != nil {
		return err
	}
	dead, err := out.DeadLetters(ctx, txm.DeadLetterFilter{Limit: *limit})
	if err != nil {
		return fmt.Errorf("inspect: %w", err)
	}
	if len(dead) == 0 {
		fmt.Fprintln(stdout, "\nno dead letters")
		return nil
	}
	fmt.Fprintf(stdout, "\ndead letters (up to %d):\n", *limit)
	tw = tabwriter.NewWriter(stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "ID\tTOPIC\tATTEMPTS\tDEAD FOR\tLAST ERROR")
	for _, d := range dead {
		fmt.Fprintf(tw, "%s\t%s\t%d\t%s\t%s\n", d.Message.ID(), d.Message.Subject(), d.Attempts, age(d.DeadAt), oneLine(d.LastError))
	}
	return tw.Flush()
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

func runReplay(ctx context.Context, args []string, stdout io.Writer) error {
	fs := flag.NewFlagSet("replay", flag.ContinueOnError)
	var sf storeFlags
	sf.register(fs)
	var ids idList
	fs.Var(&ids, "id", "dead letter ID to replay (repeatable)")
	topic := fs.String("topic", "", "replay the dead letters of this topic")
	all := fs.Bool("all", false, "replay every dead letter")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if len(ids) == 0 && *topic == "" && !*all {
		return errors.New("replay: say what to replay: -id, -topic or -all")
	}
	if *all && (len(ids) > 0 || *topic != "") {
		return errors.New("replay: -all cannot be combined with -id or -topic")
	}
	store, closeStore, err := sf.open(ctx)
	if err != nil {
		return fmt.Errorf("replay: %w", err)
	}
	defer closeStore()
	n, err := store.Outbox().Replay(ctx, txm.DeadLetterFilter{IDs: ids, Topic: *topic})
	if err != nil {
		return fmt.Errorf("replay: %w", err)
	}
	fmt.Fprintf(stdout, "%d dead letters moved back to pending\n", n)
	return nil
}
