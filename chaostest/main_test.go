package chaostest

import (
	"flag"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// The suite's size, from flags whose defaults come from the environment.
var (
	flagKills     = flag.Int("chaos.kills", envInt("TXM_CHAOS_KILLS", 30), "processes killed per crash-cycle run")
	flagKillEvery = flag.Duration("chaos.kill-every", envDuration("TXM_CHAOS_KILL_EVERY", 1500*time.Millisecond), "mean time between kills")
	flagRate      = flag.Int("chaos.rate", envInt("TXM_CHAOS_RATE", 300), "messages per second the producers try to commit")
	flagRelays    = flag.Int("chaos.relays", envInt("TXM_CHAOS_RELAYS", 3), "relay processes (every other one with locked claims)")
	flagConsumers = flag.Int("chaos.consumers", envInt("TXM_CHAOS_CONSUMERS", 2), "consumer processes")
	flagKeys      = flag.Int("chaos.keys", envInt("TXM_CHAOS_KEYS", 64), "partition keys")
	flagDrain     = flag.Duration("chaos.drain", envDuration("TXM_CHAOS_DRAIN", 3*time.Minute), "how long the end may take to deliver everything")
	flagBroker    = flag.String("chaos.broker", envString("TXM_CHAOS_BROKER", "private"), "private (module nats-server, sync always), system (/usr/sbin/nats-server) or url (TXM_NATS_URL)")
	flagKeep      = flag.Bool("chaos.keep", false, "keep the schema and stream afterwards")
)

func envString(name, def string) string {
	if v := os.Getenv(name); v != "" {
		return v
	}
	return def
}

func envInt(name string, def int) int {
	if v, err := strconv.Atoi(os.Getenv(name)); err == nil {
		return v
	}
	return def
}

func envDuration(name string, def time.Duration) time.Duration {
	if v, err := time.ParseDuration(os.Getenv(name)); err == nil {
		return v
	}
	return def
}

// binDir holds the binaries the suite builds, for this test process.
var binDir string

func TestMain(m *testing.M) {
	flag.Parse()
	// The library's default-logger records (retention passes) at INFO
	// would drown the suite's figures.
	slog.SetDefault(slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn})))
	dir, err := os.MkdirTemp("", "chaostest-bin-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	binDir = dir
	code := m.Run()
	_ = os.RemoveAll(dir)
	os.Exit(code)
}

var builds sync.Map // package path -> *buildResult

type buildResult struct {
	once sync.Once
	path string
	err  error
}

// binary builds the main package pkg (once per test process) and returns
// the path of the binary.
func binary(t testing.TB, pkg string) string {
	t.Helper()
	v, _ := builds.LoadOrStore(pkg, &buildResult{})
	b := v.(*buildResult)
	b.once.Do(func() {
		b.path = filepath.Join(binDir, filepath.Base(pkg))
		out, err := exec.Command("go", "build", "-o", b.path, pkg).CombinedOutput()
		if err != nil {
			b.err = fmt.Errorf("go build %s: %w: %s", pkg, err, strings.TrimSpace(string(out)))
		}
	})
	if b.err != nil {
		t.Fatal(b.err)
	}
	return b.path
}
