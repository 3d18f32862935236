// Command txm runs the transmanager demo and administers outbox stores.
//
//	txm demo     [-db path] [-postgres url] [-nats url] [-orders n]
//	txm migrate  [-sqlite path | -postgres url] [-print]
//	txm inspect  [-sqlite path | -postgres url]
//	txm replay   [-sqlite path | -postgres url] [-id id]... [-topic t] [-all]
//
// Without -postgres and -nats, demo runs on the embedded default: a SQLite
// file and the in-process broker, with no service to start.
package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"os/signal"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()
	if err := run(ctx, os.Args[1:], os.Stdout); err != nil {
		fmt.Fprintln(os.Stderr, "txm:", err)
		os.Exit(1)
	}
}

const usage = `usage: txm <command> [flags]

commands:
  demo      run an order service, the relay and a consumer, and report what happened
  migrate   apply the store's schema, or print it with -print
  inspect   show the outbox backlog, the oldest pending message and dead letters per topic
  replay    move dead letters back to pending (-id, -topic or -all)

Run "txm <command> -h" for a command's flags.`

func run(ctx context.Context, args []string, stdout io.Writer) error {
	if len(args) == 0 {
		return fmt.Errorf("no command\n%s", usage)
	}
	switch args[0] {
	case "demo":
		return runDemo(ctx, args[1:], stdout)
	case "migrate":
		return runMigrate(ctx, args[1:], stdout)
	case "inspect":
		return runInspect(ctx, args[1:], stdout)
	case "replay":
		return runReplay(ctx, args[1:], stdout)
	case "-h", "-help", "--help", "help":
		fmt.Fprintln(stdout, usage)
		return nil
	default:
		return fmt.Errorf("unknown command %q\n%s", args[0], usage)
	}
}
