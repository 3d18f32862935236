package main

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// The -json output of two runs, cut down to what compare reads: the old
// one has workers 1 and 4, the new one workers 1 and 2.
const (
	compareOld = `{
  "machine": {"cores": 8, "gomaxprocs": 8, "go_version": "go1.26.0", "os": "linux", "arch": "amd64",
    "postgres_version": "17.2", "nats_version": "2.11.0"},
  "store": "PostgreSQL postgres://x", "broker": "NATS JetStream nats://y",
  "messages": 20000, "payload_bytes": 256, "count": 3,
  "rows": [
    {"impl": "loop", "batch": 100, "runs": [], "msgs_per_s": 10000, "min_msgs_per_s": 9500, "max_msgs_per_s": 10400},
    {"impl": "relay", "workers": 1, "batch": 100, "claims": "lease", "runs": [],
      "msgs_per_s": 8000, "min_msgs_per_s": 7900, "max_msgs_per_s": 8100,
      "commit_to_handled": {"p99_ms": 10}, "min_handled_p99_ms": 9, "max_handled_p99_ms": 11},
    {"impl": "relay", "workers": 1, "batch": 100, "claims": "lock", "runs": [],
      "msgs_per_s": 7000, "min_msgs_per_s": 6800, "max_msgs_per_s": 7200,
      "commit_to_handled": {"p99_ms": 8}, "min_handled_p99_ms": 7, "max_handled_p99_ms": 9},
    {"impl": "relay", "workers": 4, "batch": 100, "claims": "lease", "runs": [],
      "msgs_per_s": 12000, "min_msgs_per_s": 11000, "max_msgs_per_s": 13000}
  ]
}`
	compareNew = `{
  "machine": {"cores": 8, "gomaxprocs": 8, "go_version": "go1.26.0", "os": "linux", "arch": "amd64",
    "postgres_version": "18.1", "nats_version": "2.11.0"},
  "store": "PostgreSQL postgres://x", "broker": "NATS JetStream nats://y",
  "messages": 20000, "payload_bytes": 256, "count": 3,
  "rows": [
    {"impl": "loop", "batch": 100, "runs": [], "msgs_per_s": 10200, "min_msgs_per_s": 10000, "max_msgs_per_s": 10500},
    {"impl": "relay", "workers": 1, "batch": 100, "claims": "lease", "runs": [],
      "msgs_per_s": 10000, "min_msgs_per_s": 9800, "max_msgs_per_s": 10300,
      "commit_to_handled": {"p99_ms": 5}, "min_handled_p99_ms": 4.5, "max_handled_p99_ms": 5.5},
    {"impl": "relay", "workers": 1, "batch": 100, "claims": "lock", "runs": [],
      "msgs_per_s": 6300, "min_msgs_per_s": 6000, "max_msgs_per_s": 6500,
      "commit_to_handled": {"p99_ms": 8.5}, "min_handled_p99_ms": 7.5, "max_handled_p99_ms": 9.5},
    {"impl": "relay", "workers": 2, "batch": 100, "claims": "lease", "runs": [],
      "msgs_per_s": 11000, "min_msgs_per_s": 10800, "max_msgs_per_s": 11100}
  ]
}`
)

func TestWriteBenchCompare(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	oldPath := filepath.Join(dir, "old.json")
	if err := os.WriteFile(oldPath, []byte(compareOld), 0o644); err != nil {
		t.Fatal(err)
	}
	old, err := readBenchReport(oldPath)
	if err != nil {
		t.Fatal(err)
	}
	var cur benchReport
	if err := json.Unmarshal([]byte(compareNew), &cur); err != nil {
		t.Fatal(err)
	}
	var buf bytes.Buffer
	if err := writeBenchCompare(&buf, "old.json", old, &cur); err != nil {
		t.Fatal(err)
	}
	want := `compared with old.json: 20000 messages of 256 B, medians of 3 repetitions, PostgreSQL postgres://x, NATS JetStream nats://y
note: PostgreSQL differs: old "17.2", new "18.1"

point                         old msgs/s  [min–max]       new msgs/s  [min–max]        change         old p99 ms       new p99 ms     change
loop batch 100                10,000      [9,500–10,400]  10,200      [10,000–10,500]  +2.0% ~        -                -              -
workers 1, batch 100, leases  8,000       [7,900–8,100]   10,000      [9,800–10,300]   +25.0% faster  10.0 [9.0–11.0]  5.0 [4.5–5.5]  -50.0% lower
workers 1, batch 100, locks   7,000       [6,800–7,200]   6,300       [6,000–6,500]    -10.0% slower  8.0 [7.0–9.0]    8.5 [7.5–9.5]  +6.2% ~
~: the [min–max] ranges overlap, no clear change
only in old: workers 4, batch 100, leases
only in new: workers 2, batch 100, leases
`
	if got := buf.String(); got != want {
		t.Errorf("compare:\n%s\nwant\n%s", got, want)
	}
}

func TestReadBenchReportErrors(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	for name, content := range map[string]string{"bad.json": "machine: 8 cores", "empty.json": `{"rows": []}`} {
		path := filepath.Join(dir, name)
		if err := os.WriteFile(path, []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
		if _, err := readBenchReport(path); err == nil || !strings.Contains(err.Error(), "bench -json") {
			t.Errorf("%s: %v", name, err)
		}
	}
	if _, err := readBenchReport(filepath.Join(dir, "missing.json")); err == nil {
		t.Errorf("missing file: no error")
	}
	// A bad -compare file fails before the sweep.
	code, _, errOut := cli(context.Background(), "bench", "-compare", filepath.Join(dir, "bad.json"))
	if code != exitFailure || strings.Contains(errOut, "msgs/s") {
		t.Errorf("bench -compare bad.json: exit %d: %s", code, errOut)
	}
}

// TestBenchCompareEmbedded compares a tiny sweep on the embedded default
// with an earlier one of a partly different grid.
func TestBenchCompareEmbedded(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	oldPath := filepath.Join(t.TempDir(), "old.json")
	savePath := filepath.Join(t.TempDir(), "new.json")
	code, out, errOut := cli(ctx, "bench", "-messages", "100", "-rate", "100", "-duration", "200ms", "-path-messages", "0", "-workers", "1,2", "-batch", "50", "-count", "1", "-json")
	if code != exitOK {
		t.Fatalf("bench -json: exit %d: %s", code, errOut)
	}
	if err := os.WriteFile(oldPath, []byte(out), 0o644); err != nil {
		t.Fatal(err)
	}
	code, out, errOut = cli(ctx, "bench", "-messages", "100", "-rate", "100", "-duration", "200ms", "-path-messages", "0", "-workers", "1,4", "-batch", "50", "-count", "1", "-compare", oldPath, "-save", savePath)
	if code != exitOK {
		t.Fatalf("bench -compare: exit %d: %s", code, errOut)
	}
	// -save keeps the report as -json prints it, beside the table.
	if saved, err := readBenchReport(savePath); err != nil || len(saved.Rows) != 2 || saved.Rows[1].Workers != 4 ||
		!strings.Contains(errOut, "report written to "+savePath) {
		t.Errorf("-save: %v, %+v; stderr %s", err, saved, errOut)
	}
	for _, want := range []string{"recommended: ", "compared with " + oldPath, "\nworkers 1, batch 50, leases ",
		"only in old: workers 2, batch 50, leases", "only in new: workers 4, batch 50, leases"} {
		if !strings.Contains(out, want) {
			t.Errorf("output lacks %q:\n%s", want, out)
		}
	}
	// With -json, stdout stays JSON and the comparison goes to stderr.
	code, out, errOut = cli(ctx, "bench", "-messages", "100", "-rate", "100", "-duration", "200ms", "-path-messages", "0", "-workers", "1", "-batch", "50", "-count", "1", "-json", "-compare", oldPath)
	var r benchReport
	if code != exitOK || json.Unmarshal([]byte(out), &r) != nil || !strings.Contains(errOut, "only in old: workers 2") {
		t.Errorf("bench -json -compare: exit %d:\n%s\nstderr:\n%s", code, out, errOut)
	}
}
