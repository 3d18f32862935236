package sqlstore

import (
	"context"
	"testing"
	"time"

	"github.com/transmanager/transmanager/async"
	"github.com/transmanager/transmanager/txm"
)

// dbNow returns the store's clock: the database's on PostgreSQL, the
// process's on SQLite (which is how the SQLite store takes its time).
func (ts *testStore) dbNow() (time.Time, error) {
	if ts.pg == nil {
		return time.Now(), nil
	}
	var now time.Time
	err := ts.pg.pool.QueryRow(context.Background(), "SELECT clock_timestamp()").Scan(&now)
	return now, err
}

// TestScheduledPublishWithin100ms: with a poll interval of a minute, only
// the relay's wake-up for the store's next due message (Outbox.NextDue)
// can publish a scheduled message in time; it goes out within 100 ms of
// its delivery time, both read on the database's clock.
func TestScheduledPublishWithin100ms(t *testing.T) {
	forEachKind(t, func(t *testing.T, kind backendKind) {
		ts := newTestStore(t, kind, Config{NotifyChannel: randomName("txm_sched_")})
		got := make(chan time.Time, 1)
		pub := async.MessagePublisherFunc(func(context.Context, string, async.Message) error {
			now, err := ts.dbNow()
			if err != nil {
				return err // retried: the test then fails on the time
			}
			select {
			case got <- now:
			default:
			}
			return nil
		})
		relay, err := txm.NewOutboxProcessorWithConfig(pub, ts.Outbox(), txm.ProcessorConfig{
			PollInterval: time.Minute, Logger: discardLogger()})
		if err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan error, 1)
		go func() { done <- relay.Start(ctx) }()
		defer func() {
			cancel()
			if err := <-done; err != nil {
				t.Errorf("Start: %v", err)
			}
		}()
		now, err := ts.dbNow()
		if err != nil {
			t.Fatalf("read the database clock: %v", err)
		}
		due := now.Add(400 * time.Millisecond)
		msg := async.NewMessage("reminders", "Remind", nil, async.WithMetadata(async.Metadata{
			async.MetaDeliverAt: async.FormatTime(due), async.MetaPartitionKey: "k"}))
		if err := ts.InTx(context.Background(), func(ctx context.Context) error { return ts.Outbox().Save(ctx, msg) }); err != nil {
			t.Fatal(err)
		}
		var at time.Time
		select {
		case at = <-got:
		case <-time.After(20 * time.Second):
			t.Fatal("the scheduled message was not published within 20s")
		}
		late := at.Sub(due)
		if late < 0 || late > 100*time.Millisecond {
			t.Fatalf("published %v after its delivery time on the database's clock, want within [0, 100ms]", late)
		}
		t.Logf("published %v after its delivery time", late)
	})
}
