package sqlstore

import (
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// TestBuildWithoutSQLite builds a program that imports only the PostgreSQL
// and MySQL stores (testdata/nosqlite) and checks, with go version -m,
// that its binary links their drivers and not modernc.org/sqlite.
func TestBuildWithoutSQLite(t *testing.T) {
	if testing.Short() {
		t.Skip("builds a program")
	}
	t.Parallel()
	bin := filepath.Join(t.TempDir(), "nosqlite")
	if out, err := exec.Command("go", "build", "-o", bin, "./testdata/nosqlite").CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	out, err := exec.Command("go", "version", "-m", bin).CombinedOutput()
	if err != nil {
		t.Fatalf("go version -m: %v\n%s", err, out)
	}
	deps := string(out)
	for _, want := range []string{"github.com/jackc/pgx/v5", "github.com/go-sql-driver/mysql"} {
		if !strings.Contains(deps, "\t"+want+"\t") {
			t.Errorf("the binary does not link %s:\n%s", want, deps)
		}
	}
	for _, unwanted := range []string{"modernc.org/sqlite", "modernc.org/libc"} {
		if strings.Contains(deps, "\t"+unwanted+"\t") {
			t.Errorf("a program without the SQLite store links %s:\n%s", unwanted, deps)
		}
	}
}
