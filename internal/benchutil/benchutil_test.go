package benchutil

import (
	"testing"
	"time"

	"github.com/transmanager/transmanager/async"
)

func TestEnvInt(t *testing.T) {
	t.Setenv("TXM_BENCHUTIL_N", "")
	if got := EnvInt(t, "TXM_BENCHUTIL_N", 7); got != 7 {
		t.Fatalf("unset: got %d, want the default 7", got)
	}
	t.Setenv("TXM_BENCHUTIL_N", "1200")
	if got := EnvInt(t, "TXM_BENCHUTIL_N", 7); got != 1200 {
		t.Fatalf("set: got %d, want 1200", got)
	}
}

func TestEnvDuration(t *testing.T) {
	t.Setenv("TXM_BENCHUTIL_D", "")
	if got := EnvDuration(t, "TXM_BENCHUTIL_D", time.Second); got != time.Second {
		t.Fatalf("unset: got %v, want the default 1s", got)
	}
	t.Setenv("TXM_BENCHUTIL_D", "-1ms")
	if got := EnvDuration(t, "TXM_BENCHUTIL_D", time.Second); got != -time.Millisecond {
		t.Fatalf("set: got %v, want -1ms", got)
	}
}

func TestDelivery(t *testing.T) {
	at := time.Now()
	msg := async.NewMessage("orders.placed", "OrderPlaced", []byte(`{}`))
	d := Delivery{Message: msg, At: at}
	if d.ID() != msg.ID() || !d.ReceivedAt().Equal(at) {
		t.Fatalf("delivery %s at %v: want message %s at %v", d.ID(), d.ReceivedAt(), msg.ID(), at)
	}
	for _, f := range []func() error{d.Ack, d.NAck, d.Extend, d.Kill} {
		if err := f(); err != nil {
			t.Fatal(err)
		}
	}
}
