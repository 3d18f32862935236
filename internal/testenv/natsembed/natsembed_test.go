package natsembed

import (
	"context"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// TestRestartKeepsTheStore publishes, restarts the server and finds the
// message still in the stream.
func TestRestartKeepsTheStore(t *testing.T) {
	s := Start(t)
	nc, err := nats.Connect(s.URL(), nats.MaxReconnects(-1), nats.ReconnectWait(50*time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	js, _ := jetstream.New(nc)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if _, err := js.CreateStream(ctx, jetstream.StreamConfig{Name: "E", Subjects: []string{"e"}, Storage: jetstream.FileStorage}); err != nil {
		t.Fatal(err)
	}
	if _, err := js.Publish(ctx, "e", []byte("x")); err != nil {
		t.Fatal(err)
	}
	s.Stop()
	s.Start()
	var info *jetstream.StreamInfo
	// Each attempt has a second of its own: a request sent before the
	// client has reconnected would otherwise wait out the whole deadline.
	attempt := func() (*jetstream.StreamInfo, error) {
		actx, cancel := context.WithTimeout(ctx, time.Second)
		defer cancel()
		st, err := js.Stream(actx, "E")
		if err != nil {
			return nil, err
		}
		return st.Info(actx)
	}
	for {
		if info, err = attempt(); err == nil {
			break
		}
		if ctx.Err() != nil {
			t.Fatalf("stream after restart: %v", err)
		}
		time.Sleep(50 * time.Millisecond)
	}
	if info.State.Msgs != 1 {
		t.Errorf("after restart the stream has %d messages, want 1", info.State.Msgs)
	}
}
