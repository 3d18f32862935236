// Package testenv gives the project's tests the addresses of the services
// they need, read from the environment.
package testenv

import (
	"os"
	"testing"
)

// The environment variables that hold the services' addresses, and the one
// that makes a missing address an error.
const (
	Postgres = "TXM_POSTGRES_URL"
	NATS     = "TXM_NATS_URL"
	MySQL    = "TXM_MYSQL_URL"
	Require  = "TXM_REQUIRE_SERVICES"
)

// examples says what each variable holds.
var examples = map[string]string{
	Postgres: "a PostgreSQL URL, e.g. postgres://postgres@127.0.0.1:5432/test?sslmode=disable",
	NATS:     "a NATS server with JetStream, e.g. nats://127.0.0.1:4222",
	MySQL:    "a MySQL or MariaDB DSN of github.com/go-sql-driver/mysql, e.g. root@tcp(127.0.0.1:3306)/test?parseTime=true",
}

// URL returns the value of env. When it is unset the test is skipped with a
// message that says what to set, or fails when TXM_REQUIRE_SERVICES=1 (as
// in CI). A benchmark skips even then: CI does not run benchmarks.
func URL(tb testing.TB, env string) string {
	tb.Helper()
	if u := os.Getenv(env); u != "" {
		return u
	}
	what := examples[env]
	if what == "" {
		what = "the service's address"
	}
	if _, bench := tb.(*testing.B); !bench && os.Getenv(Require) == "1" {
		tb.Fatalf("%s is not set but %s=1: set it to %s", env, Require, what)
	}
	tb.Skipf("%s is not set: set it to %s to run this", env, what)
	return ""
}
