// Command txm runs the transmanager demo and administers outbox stores.
//
//	txm demo     [-db path | -postgres url | -mysql dsn] [-nats url] [-orders n] [-timeout d]
//	txm migrate  [-sqlite path | -postgres url [-schema s] | -mysql dsn]
//	txm migrate  -print [-sqlite path | -postgres url | -mysql dsn | -dialect sqlite|postgres|mysql] [-schema s]
//	txm inspect  [-sqlite path | -postgres url [-schema s] | -mysql dsn] [-dead n] [-retrying n] [-json]
//	txm replay   [-sqlite path | -postgres url [-schema s] | -mysql dsn] (-id id... | -topic t | -all) [-json]
//	txm bench    [-postgres url -nats url] [-workers n,...] [-batch n,...] [-claims lease,lock] [-messages n] [-rate n] [-p99 d] [-count n] [-json | -csv] [-chart f] [-compare old.json]
//	txm purge    [-sqlite path | -postgres url [-schema s] | -mysql dsn] [-published age] [-inbox-group g -inbox age] [-batch n]
//	txm relay    (-sqlite path | -postgres url [-schema s]) -nats url [-stream name -subjects s,...] [-http addr] [-workers n] ...
//
// relay runs the relay as a process of its own until SIGTERM or SIGINT; each
// of its flags can also be set by an environment variable (TXM_RELAY_ and
// the flag's name, such as TXM_RELAY_BATCHES_IN_FLIGHT).
//
// Without -postgres and -nats, demo and bench run on the embedded default: a SQLite
// file and the in-process broker, with no service to start.
//
// "txm <command> -h" prints a command's flags. The exit status is 0 on
// success (and for -h), 1 when the command failed, and 2 for a usage error:
// an unknown command or flag, a missing or contradictory flag.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strings"
	"syscall"
)

// Exit statuses.
const (
	exitOK      = 0
	exitFailure = 1
	exitUsage   = 2
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := runMain(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}

// runMain runs the command args names, reports its error on stderr and
// returns the exit status.
func runMain(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	err := run(ctx, args, stdout, stderr)
	var usage *usageError
	var logged *loggedError
	switch {
	case err == nil, errors.Is(err, flag.ErrHelp):
		return exitOK
	case errors.Is(err, errReported): // the flag set printed the error and the usage
		return exitUsage
	case errors.As(err, &logged): // the command logged it in its own format
		return exitFailure
	case errors.As(err, &usage):
		fmt.Fprintln(stderr, "txm:", err)
		if usage.help != "" {
			fmt.Fprintln(stderr, usage.help)
		}
		return exitUsage
	default:
		fmt.Fprintln(stderr, "txm:", err)
		return exitFailure
	}
}

// usageError is a command line the command cannot run: exit status 2.
type usageError struct {
	msg  string
	help string // printed after the message; "" for none
}

func (e *usageError) Error() string { return e.msg }

func usagef(format string, args ...any) error {
	return &usageError{msg: fmt.Sprintf(format, args...)}
}

// loggedError is a failure the command logged already: exit status 1.
type loggedError struct{ err error }

func (e *loggedError) Error() string { return e.err.Error() }
func (e *loggedError) Unwrap() error { return e.err }

// errReported is a usage error already printed, with the command's usage.
var errReported = errors.New("usage error reported")

const usage = `usage: txm <command> [flags]

commands:
  demo      run an order service, the relay and a consumer, and report what happened
  migrate   apply the store's schema, or print it with -print
  inspect   show the outbox: backlog and oldest pending message per topic, retrying
            messages, parked partition keys and dead letters (-json for JSON)
  replay    move dead letters back to pending (-id, -topic or -all; -json for JSON)
  purge     delete old published outbox messages (-published AGE) and inbox records
            (-inbox-group G -inbox AGE), in batches (-batch N)
  relay     run the relay as a process: publish the outbox to NATS JetStream until
            SIGTERM, with JSON logs, /healthz and /metrics (-http ADDR)
  bench     size the relay: sweep workers, batch sizes and claim modes, and
            recommend the smallest configuration within 5% of the best throughput

Run "txm <command> -h" for a command's flags. Exit status: 0 success, 1 failure, 2 usage error.`

func run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 {
		return &usageError{msg: "no command", help: usage}
	}
	switch args[0] {
	case "demo":
		return runDemo(ctx, args[1:], stdout, stderr)
	case "migrate":
		return runMigrate(ctx, args[1:], stdout, stderr)
	case "inspect":
		return runInspect(ctx, args[1:], stdout, stderr)
	case "replay":
		return runReplay(ctx, args[1:], stdout, stderr)
	case "purge":
		return runPurge(ctx, args[1:], stdout, stderr)
	case "bench":
		return runBench(ctx, args[1:], stdout, stderr)
	case "relay":
		return runRelay(ctx, args[1:], stdout, stderr)
	case "-h", "-help", "--help", "help":
		if len(args) > 1 && args[0] == "help" {
			return run(ctx, []string{args[1], "-h"}, stdout, stderr)
		}
		fmt.Fprintln(stdout, usage)
		return nil
	default:
		return &usageError{msg: fmt.Sprintf("unknown command %q", args[0]), help: usage}
	}
}

// newFlagSet returns the flag set of a command, whose usage prints synopsis
// (the text after "txm <command> ") and the flags.
func newFlagSet(name, synopsis, about string) *flag.FlagSet {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.Usage = func() {
		out := fs.Output()
		fmt.Fprintf(out, "usage: txm %s %s\n\n%s\n\nflags:\n", name, synopsis, strings.TrimSpace(about))
		fs.PrintDefaults()
	}
	return fs
}

// parseFlags parses a command's flags. -h prints the usage on stdout and
// returns flag.ErrHelp (exit status 0); a bad flag prints its error and the
// usage once, on stderr, and returns errReported (exit status 2). A command
// takes no positional arguments.
func parseFlags(fs *flag.FlagSet, args []string, stdout, stderr io.Writer) error {
	fs.SetOutput(io.Discard) // the errors are printed here, once
	err := fs.Parse(args)
	switch {
	case errors.Is(err, flag.ErrHelp):
		fs.SetOutput(stdout)
		fs.Usage()
		return flag.ErrHelp
	case err == nil && fs.NArg() > 0:
		err = fmt.Errorf("unexpected argument %q", fs.Arg(0))
	}
	if err != nil {
		fs.SetOutput(stderr)
		fmt.Fprintf(stderr, "txm %s: %v\n", fs.Name(), err)
		fs.Usage()
		return errReported
	}
	return nil
}
