package scenario

import (
	"os"
	"path/filepath"
	"testing"
)

func TestProcTicks(t *testing.T) {
	dir := t.TempDir()
	for _, tc := range []struct {
		stat  string
		name  string
		ticks int64
		ok    bool
	}{
		// utime 11, stime 22, cutime 33, cstime 44: fields 14 to 17.
		{"42 (postgres) S 1 42 42 0 -1 4194560 100 0 0 0 11 22 33 44 20 0 1 0 5 100 10", "postgres", 110, true},
		{"7 (a (b) c) R 1 7 7 0 -1 0 0 0 0 0 1 2 3 4 20 0 1 0 5 100 10", "a (b) c", 10, true},
		{"7 (short) R 1 2 3", "", 0, false},
		{"no parentheses", "", 0, false},
	} {
		path := filepath.Join(dir, "stat")
		if err := os.WriteFile(path, []byte(tc.stat), 0o644); err != nil {
			t.Fatal(err)
		}
		name, ticks, ok := procTicks(path)
		if name != tc.name || ticks != tc.ticks || ok != tc.ok {
			t.Errorf("procTicks(%q) = %q, %d, %v; want %q, %d, %v", tc.stat, name, ticks, ok, tc.name, tc.ticks, tc.ok)
		}
	}
}

func TestReadCPUCountsThisProcess(t *testing.T) {
	before, err := ReadCPU()
	if err != nil {
		t.Fatal(err)
	}
	x := 0
	for i := range 50_000_000 {
		x ^= i
	}
	_ = x
	after, err := ReadCPU()
	if err != nil {
		t.Fatal(err)
	}
	if d := after.Sub(before); d.Self <= 0 || d.Total() < d.Self {
		t.Fatalf("CPU used by a busy loop: %+v", d)
	}
}
