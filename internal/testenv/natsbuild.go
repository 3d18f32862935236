package testenv

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
)

// NATSServerBinEnv names a nats-server binary that [StartNATS] runs instead
// of building the module's, for a run against a server of one's own.
const NATSServerBinEnv = "TXM_NATS_SERVER_BIN"

// natsServerPkg is the small main around the module's nats-server.
const natsServerPkg = "github.com/transmanager/transmanager/internal/testenv/natsserver"

var built struct {
	once sync.Once
	path string
	err  error
}

// CurrentNATSServerBin returns the path of a nats-server binary of the
// module version in go.mod (github.com/nats-io/nats-server/v2), built once
// per test process into the user's cache directory (the build cache makes
// later builds a relink), or the binary TXM_NATS_SERVER_BIN names. A build
// that fails fails the test.
func CurrentNATSServerBin(t testing.TB) string {
	t.Helper()
	if p := os.Getenv(NATSServerBinEnv); p != "" {
		return p
	}
	built.once.Do(func() { built.path, built.err = buildNATSServer() })
	if built.err != nil {
		t.Fatalf("build the module's nats-server: %v", built.err)
	}
	return built.path
}

func buildNATSServer() (string, error) {
	cache, err := os.UserCacheDir()
	if err != nil {
		cache = os.TempDir()
	}
	dir := filepath.Join(cache, "transmanager-testenv")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return "", err
	}
	// Build under a name of this process's and rename: processes of
	// several test packages may build at once.
	tmp, err := os.CreateTemp(dir, "nats-server-*.tmp")
	if err != nil {
		return "", err
	}
	_ = tmp.Close()
	defer os.Remove(tmp.Name())
	cmd := exec.Command("go", "build", "-o", tmp.Name(), natsServerPkg)
	if out, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("go build %s: %w: %s", natsServerPkg, err, strings.TrimSpace(string(out)))
	}
	path := filepath.Join(dir, "nats-server")
	if err := os.Rename(tmp.Name(), path); err != nil {
		return "", err
	}
	return path, nil
}
