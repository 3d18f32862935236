package testenv

import "testing"

func TestURL(t *testing.T) {
	const env = "TXM_TESTENV_PROBE"
	t.Setenv(env, "nats://127.0.0.1:1")
	if got := URL(t, env); got != "nats://127.0.0.1:1" {
		t.Errorf("URL = %q, want the variable's value", got)
	}

	t.Setenv(env, "")
	t.Setenv(Require, "")
	var skipped, failed bool
	t.Run("unset", func(t *testing.T) {
		defer func() { skipped, failed = t.Skipped(), t.Failed() }()
		URL(t, env)
		t.Error("URL returned for an unset variable")
	})
	if !skipped || failed {
		t.Errorf("unset, not required: skipped %v, failed %v; want a skip", skipped, failed)
	}

	// Required: a benchmark still skips (CI runs no benchmarks).
	t.Setenv(Require, "1")
	skipped, failed = false, false
	testing.Benchmark(func(b *testing.B) {
		defer func() { skipped, failed = b.Skipped(), b.Failed() }()
		URL(b, env)
		b.Error("URL returned for an unset variable")
	})
	if !skipped || failed {
		t.Errorf("unset, required, benchmark: skipped %v, failed %v; want a skip", skipped, failed)
	}
}
