package main

import (
	"context"
	"fmt"
	"io"

	"github.com/transmanager/transmanager/txm"
)

func runPurge(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlagSet("purge", "(-sqlite PATH | -postgres URL [-schema S] | -mysql DSN) [-published AGE] [-inbox-group G -inbox AGE] [-batch N]", `
Delete old rows once, in batches of -batch rows a statement, and say how many
were removed: with -published, the published outbox messages published more
than AGE ago (they are kept only with sqlstore's Config.KeepPublished); with
-inbox-group and -inbox, the inbox records of that consumer group saved more
than AGE ago. AGE is a Go duration, such as 168h or 90m. Keep inbox records
longer than the broker may redeliver a message: a redelivered message whose
record was purged is handled again. For retention on a schedule, see
txm.ProcessorConfig.Retention and txm.RunRetention.`)
	var sf storeFlags
	sf.register(fs)
	published := fs.Duration("published", 0, "delete published outbox messages older than this (0: none)")
	group := fs.String("inbox-group", "", "consumer group whose inbox records -inbox purges")
	inbox := fs.Duration("inbox", 0, "delete the -inbox-group's inbox records older than this (0: none)")
	batch := fs.Int("batch", 1000, "rows deleted per statement")
	if err := parseFlags(fs, args, stdout, stderr); err != nil {
		return err
	}
	switch {
	case *published < 0 || *inbox < 0:
		return usagef("purge: -published and -inbox must not be negative")
	case *batch <= 0:
		return usagef("purge: -batch must be positive, got %d", *batch)
	case (*group == "") != (*inbox == 0):
		return usagef("purge: -inbox-group and -inbox go together")
	case *published == 0 && *inbox == 0:
		return usagef("purge: say what to purge: -published AGE, or -inbox-group G -inbox AGE")
	}
	if err := sf.check(); err != nil {
		return err
	}
	store, err := sf.open(ctx, false)
	if err != nil {
		return fmt.Errorf("purge: %w", err)
	}
	defer store.close()
	if *published > 0 {
		n, err := txm.PurgeOlder(ctx, store.Outbox().Purge, *published, *batch)
		if err != nil {
			return fmt.Errorf("purge: published messages (%d removed before the error): %w", n, err)
		}
		fmt.Fprintf(stdout, "removed %s published more than %s ago\n", plural(n, "outbox message", "outbox messages"), *published)
	}
	if *inbox > 0 {
		n, err := txm.PurgeOlder(ctx, store.Inbox(*group).PurgeInbox, *inbox, *batch)
		if err != nil {
			return fmt.Errorf("purge: inbox of %s (%d removed before the error): %w", *group, n, err)
		}
		fmt.Fprintf(stdout, "removed %s of group %s saved more than %s ago\n", plural(n, "inbox record", "inbox records"), *group, *inbox)
	}
	return nil
}
