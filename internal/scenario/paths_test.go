package scenario

import (
	"context"
	"testing"
	"time"

	"github.com/transmanager/transmanager/internal/testenv"
)

func checkPath(t *testing.T, r PathResult, path, impl string, n int) {
	t.Helper()
	if r.Path != path || r.Impl != impl || r.Messages != n || r.MsgsPerSec <= 0 || r.SelfUS <= 0 || r.Allocs <= 0 {
		t.Errorf("%s/%s: result %+v", path, impl, r)
	}
}

func TestPathsEmbedded(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	for _, path := range []string{PathWrite, PathConsume} {
		for _, impl := range []string{ImplLibrary, ImplBaseline} {
			r, err := Path(ctx, path, impl, PathSpec{Dir: t.TempDir(), Messages: 300, Workers: 3, PayloadSize: 128})
			if err != nil {
				t.Fatalf("%s/%s: %v", path, impl, err)
			}
			checkPath(t, r, path, impl, 300)
			if r.PostgresUS != 0 || r.NATSUS != 0 {
				t.Errorf("%s/%s: server CPU counted on the embedded default: %+v", path, impl, r)
			}
		}
	}
}

func TestPathsMsgpack(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	for _, path := range []string{PathWrite, PathConsume} {
		for _, impl := range []string{ImplLibrary, ImplBaseline} {
			r, err := Path(ctx, path, impl, PathSpec{Dir: t.TempDir(), Messages: 100, Codec: CodecMsgpack})
			if err != nil {
				t.Fatalf("%s/%s: %v", path, impl, err)
			}
			checkPath(t, r, path, impl, 100)
		}
	}
	if _, err := Path(ctx, PathWrite, ImplLibrary, PathSpec{Messages: 1, Codec: "xml"}); err == nil {
		t.Error("codec xml: no error")
	}
}

func TestPathsServices(t *testing.T) {
	pg := testenv.URL(t, testenv.Postgres)
	ns := testenv.URL(t, testenv.NATS)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	for _, path := range []string{PathWrite, PathConsume} {
		for _, impl := range []string{ImplLibrary, ImplBaseline} {
			r, err := Path(ctx, path, impl, PathSpec{PostgresURL: pg, NATSURL: ns, Messages: 300, Workers: 4})
			if err != nil {
				t.Fatalf("%s/%s: %v", path, impl, err)
			}
			checkPath(t, r, path, impl, 300)
		}
	}
}

func TestPathsMySQL(t *testing.T) {
	my := testenv.URL(t, testenv.MySQL)
	ns := testenv.URL(t, testenv.NATS)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	for _, path := range []string{PathWrite, PathConsume} {
		impls := []string{ImplLibrary, ImplBaseline}
		if path == PathWrite {
			impls = append(impls, ImplBaselineOutbox, ImplBaselineMessage, ImplBaselineNarrow, ImplBaselinePrepared)
		}
		for _, impl := range impls {
			r, err := Path(ctx, path, impl, PathSpec{MySQLURL: my, NATSURL: ns, Messages: 300, Workers: 4})
			if err != nil {
				t.Fatalf("%s/%s: %v", path, impl, err)
			}
			checkPath(t, r, path, impl, 300)
			if r.MySQLUS <= 0 || r.PostgresUS != 0 {
				t.Errorf("%s/%s: want the CPU of MySQL and none of PostgreSQL: %+v", path, impl, r)
			}
			t.Logf("%s/%s: %.0f msgs/s, %.1f µs/msg (self %.1f, mysql %.1f, nats %.1f)",
				path, impl, r.MsgsPerSec, r.TotalUS, r.SelfUS, r.MySQLUS, r.NATSUS)
		}
	}
}

func TestPathRejectsBadSpecs(t *testing.T) {
	ctx := context.Background()
	for _, tc := range []struct {
		path, impl string
		s          PathSpec
	}{
		{"read", ImplLibrary, PathSpec{Messages: 1}},
		{PathWrite, "orm", PathSpec{Messages: 1}},
		{PathWrite, ImplLibrary, PathSpec{}},
		{PathWrite, ImplLibrary, PathSpec{Messages: 1, PostgresURL: "postgres://x"}},
		{PathWrite, ImplLibrary, PathSpec{Messages: 1, MySQLURL: "root@tcp(x)/db"}},
		{PathWrite, ImplLibrary, PathSpec{Messages: 1, NATSURL: "nats://x"}},
		{PathWrite, ImplLibrary, PathSpec{Messages: 1, PostgresURL: "postgres://x", MySQLURL: "root@tcp(x)/db"}},
		{PathWrite, ImplLibrary, PathSpec{Messages: 1, PostgresURL: "postgres://x", MySQLURL: "root@tcp(x)/db",
			NATSURL: "nats://x"}},
		{PathWrite, ImplBaselineOutbox, PathSpec{Messages: 1, PostgresURL: "postgres://x", NATSURL: "nats://x"}},
		{PathConsume, ImplBaselineOutbox, PathSpec{Messages: 1, MySQLURL: "root@tcp(x)/db", NATSURL: "nats://x"}},
		{PathWrite, ImplBaselineMessage, PathSpec{Messages: 1, PostgresURL: "postgres://x", NATSURL: "nats://x"}},
		{PathConsume, ImplBaselineMessage, PathSpec{Messages: 1, MySQLURL: "root@tcp(x)/db", NATSURL: "nats://x"}},
		{PathWrite, ImplBaselineNarrow, PathSpec{Messages: 1, NATSURL: "nats://x"}},
		{PathConsume, ImplBaselinePrepared, PathSpec{Messages: 1, MySQLURL: "root@tcp(x)/db", NATSURL: "nats://x"}},
	} {
		if _, err := Path(ctx, tc.path, tc.impl, tc.s); err == nil {
			t.Errorf("Path(%q, %q, %+v): no error", tc.path, tc.impl, tc.s)
		}
	}
}
