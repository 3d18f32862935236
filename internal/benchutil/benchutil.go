// Package benchutil holds what more than one benchmark family under bench/
// needs and the scenarios (internal/scenario) do not: reading a benchmark's
// size from the environment, and a received message that needs no broker.
package benchutil

import (
	"os"
	"strconv"
	"testing"
	"time"

	"github.com/transmanager/transmanager/async"
)

// EnvInt returns the positive integer in the environment variable name, or
// def when it is unset. Anything else fails tb.
func EnvInt(tb testing.TB, name string, def int) int {
	tb.Helper()
	v := os.Getenv(name)
	if v == "" {
		return def
	}
	n, err := strconv.Atoi(v)
	if err != nil || n <= 0 {
		tb.Fatalf("%s=%q: want a positive integer", name, v)
	}
	return n
}

// EnvDuration returns the Go duration in the environment variable name, or
// def when it is unset. Anything else fails tb.
func EnvDuration(tb testing.TB, name string, def time.Duration) time.Duration {
	tb.Helper()
	v := os.Getenv(name)
	if v == "" {
		return def
	}
	d, err := time.ParseDuration(v)
	if err != nil {
		tb.Fatalf("%s=%q: want a Go duration: %v", name, v, err)
	}
	return d
}

// Delivery is msg as a consumer receives it, at At, from a broker that
// needs no acknowledgement: Ack, NAck, Extend and Kill do nothing.
type Delivery struct {
	async.Message
	At time.Time
}

var _ async.IncomingMessage = Delivery{}

func (d Delivery) ReceivedAt() time.Time { return d.At }
func (Delivery) Ack() error              { return nil }
func (Delivery) NAck() error             { return nil }
func (Delivery) Extend() error           { return nil }
func (Delivery) Kill() error             { return nil }
