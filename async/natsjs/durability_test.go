package natsjs_test

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/transmanager/transmanager/async"
	"github.com/transmanager/transmanager/async/natsjs"
	"github.com/transmanager/transmanager/internal/testenv"
)

// varzImport gives the account APP, which the test connects as, the
// system account's VARZ service, so the server can tell it how it syncs.
const varzImport = `
accounts {
  SYS: { users: [{user: sys, password: sys}], exports: [{service: "$SYS.REQ.SERVER.*.VARZ"}] }
  APP: { jetstream: enabled, users: [{user: app, password: app}], imports: [{service: {account: SYS, subject: "$SYS.REQ.SERVER.*.VARZ"}}] }
}
system_account: SYS
`

// noVarz has the same accounts without the import.
const noVarz = `
accounts {
  SYS: { users: [{user: sys, password: sys}] }
  APP: { jetstream: enabled, users: [{user: app, password: app}] }
}
system_account: SYS
`

type logBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *logBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *logBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// TestLazySyncWarning starts servers that sync always and lazily, with and
// without the VARZ import: SyncAlways reports what the server says or
// ErrSyncUnknown, and NewPublisher warns once, only when the server says
// it syncs lazily.
func TestLazySyncWarning(t *testing.T) {
	testenv.URL(t, testenv.NATS) // runs with the other service tests
	for _, tc := range []struct {
		name       string
		cfg        testenv.NATSConfig
		wantAlways bool
		wantErr    error
		wantWarn   bool
	}{
		{"lazy", testenv.NATSConfig{Config: varzImport}, false, nil, true},
		{"always", testenv.NATSConfig{SyncAlways: true, Config: varzImport}, true, nil, false},
		{"cannot tell", testenv.NATSConfig{Config: noVarz}, false, natsjs.ErrSyncUnknown, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			srv := testenv.StartNATSWith(t, tc.cfg)
			nc, err := nats.Connect(srv.URL(), nats.UserInfo("app", "app"))
			if err != nil {
				t.Fatal(err)
			}
			defer nc.Close()
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			always, err := natsjs.SyncAlways(ctx, nc)
			if !errors.Is(err, tc.wantErr) || (tc.wantErr == nil && err != nil) {
				t.Fatalf("SyncAlways: %v, want %v", err, tc.wantErr)
			}
			if always != tc.wantAlways {
				t.Errorf("SyncAlways = %v, want %v", always, tc.wantAlways)
			}

			var logs logBuffer
			js, err := jetstream.New(nc)
			if err != nil {
				t.Fatal(err)
			}
			logger := slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelInfo}))
			pub := natsjs.NewPublisher(js, natsjs.PublisherConfig{Logger: logger})
			if _, err := js.CreateStream(ctx, jetstream.StreamConfig{Name: "SYNC", Subjects: []string{"sync.>"}}); err != nil {
				t.Fatal(err)
			}
			if err := pub.Publish(ctx, "sync.a", async.NewMessage("sync.a", "Sync", []byte("x"))); err != nil {
				t.Fatal(err)
			}
			warns := strings.Count(logs.String(), "level=WARN")
			if tc.wantWarn && (warns != 1 || !strings.Contains(logs.String(), "sync_interval: always")) {
				t.Errorf("want one warning naming sync_interval: always, got:\n%s", logs.String())
			}
			if !tc.wantWarn && warns != 0 {
				t.Errorf("want no warning, got:\n%s", logs.String())
			}
		})
	}
}
