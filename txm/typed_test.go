package txm_test

import (
	"context"
	"errors"
	"testing"

	"github.com/transmanager/transmanager/async"
	"github.com/transmanager/transmanager/codec"
	"github.com/transmanager/transmanager/codec/testpb"
	"github.com/transmanager/transmanager/txm"
)

type orderPlaced struct {
	ID    string   `json:"id" msgpack:"id"`
	Cents int64    `json:"cents" msgpack:"cents"`
	Items []string `json:"items" msgpack:"items"`
}

// capture is a publisher that keeps what it is given.
type capture struct{ msgs []async.Message }

func (c *capture) Publish(_ context.Context, _ string, m async.Message) error {
	c.msgs = append(c.msgs, m)
	return nil
}

func TestTypedRoundTripPerCodec(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	reg := codec.NewRegistry(codec.JSON())
	if err := reg.Register("orders.msgpack", codec.Msgpack()); err != nil {
		t.Fatal(err)
	}
	out := txm.NewOutbox[orderPlaced](nil, txm.WithCodecs(reg))
	for _, tc := range []struct {
		topic, contentType string
	}{
		{"orders.json", "application/json"},
		{"orders.msgpack", "application/msgpack"},
	} {
		want := orderPlaced{ID: "o-1", Cents: 1250, Items: []string{"tea", "cup"}}
		msg, err := out.Message(tc.topic, want, txm.WithPartitionKey("o-1"), txm.WithHeaders(async.Metadata{"tenant": "acme"}))
		if err != nil {
			t.Fatal(err)
		}
		md := msg.Metadata()
		if md.ContentType() != tc.contentType || md.PartitionKey() != "o-1" || md.GetString("tenant") != "acme" {
			t.Errorf("%s: metadata = %v", tc.topic, md)
		}
		if msg.MessageName() != "orderPlaced" {
			t.Errorf("message name = %q, want the type's name", msg.MessageName())
		}
		var got orderPlaced
		in := txm.NewInbox(func(_ context.Context, p orderPlaced, m async.IncomingMessage) error {
			got = p
			return nil
		}, txm.WithCodecs(reg))
		if err := in.HandleMessage(ctx, incoming(msg)); err != nil {
			t.Fatal(err)
		}
		if got.ID != want.ID || got.Cents != want.Cents || len(got.Items) != 2 {
			t.Errorf("%s: decoded %+v, want %+v", tc.topic, got, want)
		}
	}
}

func TestTypedProtobuf(t *testing.T) {
	t.Parallel()
	reg := codec.NewRegistry(codec.JSON())
	if err := reg.Register("orders.*", codec.Protobuf()); err != nil {
		t.Fatal(err)
	}
	out := txm.NewOutbox[*testpb.OrderPlaced](nil, txm.WithCodecs(reg))
	msg, err := out.Message("orders.placed", &testpb.OrderPlaced{Id: "o-9", AmountCents: 99})
	if err != nil {
		t.Fatal(err)
	}
	if msg.MessageName() != "OrderPlaced" {
		t.Errorf("name = %q", msg.MessageName())
	}
	var got *testpb.OrderPlaced
	in := txm.NewInbox(func(_ context.Context, p *testpb.OrderPlaced, _ async.IncomingMessage) error {
		got = p
		return nil
	}, txm.WithCodecs(reg))
	if err := in.HandleMessage(context.Background(), incoming(msg)); err != nil {
		t.Fatal(err)
	}
	if got.GetId() != "o-9" || got.GetAmountCents() != 99 {
		t.Errorf("decoded %v", got)
	}
	// A non-proto type on a protobuf topic is a clear encoding error.
	bad := txm.NewOutbox[orderPlaced](nil, txm.WithCodecs(reg))
	if _, err := bad.Message("orders.placed", orderPlaced{}); !errors.Is(err, codec.ErrUnsupportedType) {
		t.Errorf("encoding a struct with protobuf = %v, want ErrUnsupportedType", err)
	}
}

func TestTypedInboxKillsUndecodable(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name string
		msg  async.Message
		want error
	}{
		{"malformed json", async.NewMessage("orders", "X", []byte("{not json"),
			async.WithMetadata(async.Metadata{async.MetaContentType: "application/json"})), codec.ErrMalformed},
		{"unknown content type", async.NewMessage("orders", "X", []byte("<xml/>"),
			async.WithMetadata(async.Metadata{async.MetaContentType: "application/xml"})), codec.ErrUnknownContentType},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			called := false
			in := txm.NewInbox(func(context.Context, orderPlaced, async.IncomingMessage) error {
				called = true
				return nil
			})
			delivery := incoming(tc.msg)
			err := in.HandleMessage(context.Background(), delivery)
			var derr *txm.DecodeError
			if !errors.As(err, &derr) || !errors.Is(err, tc.want) {
				t.Fatalf("HandleMessage = %v, want a DecodeError wrapping %v", err, tc.want)
			}
			if derr.MessageID != tc.msg.ID() {
				t.Errorf("DecodeError.MessageID = %q", derr.MessageID)
			}
			if delivery.kills != 1 {
				t.Errorf("message killed %d times, want 1 (dead letter, no retry)", delivery.kills)
			}
			if called {
				t.Error("handler called with an undecodable payload")
			}
		})
	}
}

func TestOutboxPublishThroughOutboxPublisherSavesOnly(t *testing.T) {
	t.Parallel()
	c := &capture{}
	out := txm.NewOutbox[orderPlaced](c)
	if err := out.Publish(context.Background(), "orders.placed", orderPlaced{ID: "1"}, txm.WithMessageID("fixed")); err != nil {
		t.Fatal(err)
	}
	if len(c.msgs) != 1 || c.msgs[0].ID() != "fixed" || c.msgs[0].Subject() != "orders.placed" {
		t.Fatalf("published %v", c.msgs)
	}
}
