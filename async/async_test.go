package async_test

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/transmanager/transmanager/async"
)

func TestNewMessage(t *testing.T) {
	t.Parallel()
	at := time.Date(2026, 1, 2, 3, 4, 5, 6, time.UTC)
	md := async.Metadata{async.MetaPartitionKey: "k"}
	m := async.NewMessage("orders", "OrderPlaced", []byte("x"), async.WithID("id-1"), async.WithSentAt(at), async.WithMetadata(md))
	if m.ID() != "id-1" || m.Subject() != "orders" || m.MessageName() != "OrderPlaced" || !m.SentAt().Equal(at) || string(m.Data()) != "x" {
		t.Errorf("fields = %s %s %s %v %q", m.ID(), m.Subject(), m.MessageName(), m.SentAt(), m.Data())
	}
	md[async.MetaPartitionKey] = "changed"
	if m.Metadata().PartitionKey() != "k" {
		t.Error("WithMetadata kept the caller's map instead of copying it")
	}
	d := async.NewMessage("t", "n", nil)
	if d.ID() == "" || d.SentAt().IsZero() || d.Metadata() == nil {
		t.Errorf("defaults: id %q, sent %v, metadata %v", d.ID(), d.SentAt(), d.Metadata())
	}
	e := async.NewMessageFromEnvelope(async.Envelope{Subject: "t", Name: "n"})
	if len(e.ID()) != 36 || e.SentAt().IsZero() || e.Metadata() == nil {
		t.Errorf("envelope defaults: id %q, sent %v, metadata %v", e.ID(), e.SentAt(), e.Metadata())
	}
}

func TestClone(t *testing.T) {
	t.Parallel()
	data := []byte("abc")
	m := async.NewMessage("t", "n", data, async.WithMetadata(async.Metadata{"a": "1"}))
	c := async.Clone(m)
	data[0] = 'X'
	m.Metadata()["a"] = "2"
	if string(c.Data()) != "abc" || c.Metadata().GetString("a") != "1" || c.ID() != m.ID() {
		t.Errorf("clone shares state: data %q, a=%s", c.Data(), c.Metadata().GetString("a"))
	}
}

type stringer struct{}

func (stringer) String() string { return "str" }

func TestMetadataGetters(t *testing.T) {
	t.Parallel()
	at := time.Date(2026, 11, 26, 12, 0, 0, 500, time.UTC)
	md := async.Metadata{
		"s": "text", "b": []byte("bytes"), "st": stringer{}, "i": 42, "i64": int64(7), "f": 3.0, "fx": 3.5,
		"is": "12", "bad": "x", "bool": true, "bs": "true", "t": at, "ts": at.Format(time.RFC3339Nano),
	}
	for key, want := range map[string]string{"s": "text", "b": "bytes", "st": "str", "i": "42", "missing": "", "bool": "true"} {
		if got := md.GetString(key); got != want {
			t.Errorf("GetString(%s) = %q, want %q", key, got, want)
		}
	}
	for key, want := range map[string]struct {
		n  int
		ok bool
	}{"i": {42, true}, "i64": {7, true}, "f": {3, true}, "fx": {0, false}, "is": {12, true}, "bad": {0, false}, "missing": {0, false}} {
		if n, ok := md.GetInt(key); n != want.n || ok != want.ok {
			t.Errorf("GetInt(%s) = %d, %v; want %d, %v", key, n, ok, want.n, want.ok)
		}
	}
	if b, ok := md.GetBool("bool"); !b || !ok {
		t.Error("GetBool(bool)")
	}
	if b, ok := md.GetBool("bs"); !b || !ok {
		t.Error("GetBool(bs)")
	}
	if _, ok := md.GetBool("s"); ok {
		t.Error("GetBool of text succeeded")
	}
	for _, key := range []string{"t", "ts"} {
		if got, ok := md.GetTime(key); !ok || !got.Equal(at) {
			t.Errorf("GetTime(%s) = %v, %v", key, got, ok)
		}
	}
	if _, ok := md.GetTime("s"); ok {
		t.Error("GetTime of text succeeded")
	}
	md.Set(async.MetaContentType, "application/json")
	if md.ContentType() != "application/json" || md.Get(async.MetaContentType) != "application/json" {
		t.Error("Set/ContentType")
	}
	md.Del(async.MetaContentType)
	if md.ContentType() != "" {
		t.Error("Del")
	}
	if got := md.Strings()["i"]; got != "42" {
		t.Errorf("Strings()[i] = %q", got)
	}
}

func TestChainsRunFirstMiddlewareOutermost(t *testing.T) {
	t.Parallel()
	var trace []string
	mwH := func(name string) async.MessageHandlerMiddleware {
		return func(next async.MessageHandler) async.MessageHandler {
			return async.MessageHandlerFunc(func(ctx context.Context, msg async.IncomingMessage) error {
				trace = append(trace, name)
				return next.HandleMessage(ctx, msg)
			})
		}
	}
	h := async.ChainHandler(async.MessageHandlerFunc(func(context.Context, async.IncomingMessage) error {
		trace = append(trace, "handler")
		return nil
	}), mwH("first"), mwH("second"))
	if err := h.HandleMessage(context.Background(), nil); err != nil {
		t.Fatal(err)
	}
	mwP := func(name string) async.MessagePublisherMiddleware {
		return func(next async.MessagePublisher) async.MessagePublisher {
			return async.MessagePublisherFunc(func(ctx context.Context, topic string, msg async.Message) error {
				trace = append(trace, name)
				return next.Publish(ctx, topic, msg)
			})
		}
	}
	boom := errors.New("boom")
	p := async.ChainPublisher(async.MessagePublisherFunc(func(context.Context, string, async.Message) error {
		trace = append(trace, "publisher")
		return boom
	}), mwP("first"), mwP("second"))
	if err := p.Publish(context.Background(), "t", nil); !errors.Is(err, boom) {
		t.Fatalf("Publish = %v", err)
	}
	if got := strings.Join(trace, ","); got != "first,second,handler,first,second,publisher" {
		t.Errorf("order = %s", got)
	}
}

func TestNewSubscriberConfig(t *testing.T) {
	t.Parallel()
	c, err := async.NewSubscriberConfig(async.GroupName("g"), async.AckWait(time.Second), async.MaxRedeliveries(3),
		async.RedeliveryDelay(time.Millisecond), async.Concurrency(4))
	if err != nil {
		t.Fatal(err)
	}
	if c != (async.SubscriberConfig{GroupName: "g", AckWait: time.Second, MaxRedeliveries: 3, RedeliveryDelay: time.Millisecond, Concurrency: 4}) {
		t.Errorf("config = %+v", c)
	}
	for name, opt := range map[string]async.SubscriberOption{
		"AckWait": async.AckWait(-1), "RedeliveryDelay": async.RedeliveryDelay(-1), "Concurrency": async.Concurrency(-1),
	} {
		if _, err := async.NewSubscriberConfig(opt); err == nil || !strings.Contains(err.Error(), name) {
			t.Errorf("negative %s: error %v, want one naming the field", name, err)
		}
	}
}
