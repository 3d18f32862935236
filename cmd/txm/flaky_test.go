package main

import (
	"context"
	"errors"
	"testing"

	"github.com/transmanager/transmanager/async"
)

// batchRecorder is a broker that publishes batches: it records every
// message it was given and fails the IDs in fail.
type batchRecorder struct {
	got  []string
	fail map[string]bool
}

func (b *batchRecorder) Publish(context.Context, string, async.Message) error {
	return errors.New("the batch path should have been used")
}

func (b *batchRecorder) PublishBatch(_ context.Context, msgs []async.Message) ([]error, error) {
	errs := make([]error, len(msgs))
	for i, m := range msgs {
		b.got = append(b.got, m.ID())
		if b.fail[m.ID()] {
			errs[i] = errors.New("nack")
		}
	}
	return errs, nil
}

// The demo's flaky network in front of a batch-publishing broker keeps the
// batch path: the injected failures and lost confirmations land on the
// same publish numbers as on the one-at-a-time path, and the broker's own
// per-message errors come back in their places.
func TestFlakyNetworkKeepsTheBatchPath(t *testing.T) {
	rec := &batchRecorder{fail: map[string]bool{}}
	pub, flaky := newFlakyNetwork(rec)
	ap, ok := pub.(async.AsyncPublisher)
	if !ok {
		t.Fatal("the flaky network hides the broker's batch publishing")
	}
	msgs := make([]async.Message, 10)
	for i := range msgs {
		msgs[i] = async.NewMessage("orders", "OrderPlaced", nil)
	}
	rec.fail[msgs[6].ID()] = true // the broker itself rejects the 7th
	errs, err := ap.PublishBatch(context.Background(), msgs)
	if err != nil {
		t.Fatal(err)
	}
	for i, e := range errs {
		n := i + 1 // publish numbers start at 1
		wantFail := n%9 == 4 || i == 6
		if (e != nil) != wantFail {
			t.Errorf("message %d: error %v, want failure %v", n, e, wantFail)
		}
	}
	// Sent: all but the 4th; sent again: the 5th and the 10th.
	if len(rec.got) != 9+2 {
		t.Errorf("the broker got %d publishes, want 11", len(rec.got))
	}
	if flaky.failed != 1 || flaky.duplicated != 2 {
		t.Errorf("failed %d, duplicated %d; want 1 and 2", flaky.failed, flaky.duplicated)
	}
	if len(flaky.confirmed) != 8 || flaky.confirmed[msgs[6].ID()] || flaky.confirmed[msgs[3].ID()] {
		t.Errorf("confirmed %d messages (the 4th: %v, the 7th: %v); want 8, neither", len(flaky.confirmed),
			flaky.confirmed[msgs[3].ID()], flaky.confirmed[msgs[6].ID()])
	}
}
