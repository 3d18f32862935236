package natsjs_test

import (
	"context"
	"log"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/transmanager/transmanager/async"
	"github.com/transmanager/transmanager/async/natsjs"
)

// This example sets up a stream, publishes a message and consumes it in a
// consumer group. It needs a NATS server with JetStream, so it is compiled
// but not run by go test.
func Example() {
	ctx := context.Background()
	nc, err := nats.Connect(nats.DefaultURL, nats.MaxReconnects(-1))
	if err != nil {
		log.Fatal(err)
	}
	defer nc.Drain()
	js, err := jetstream.New(nc)
	if err != nil {
		log.Fatal(err)
	}

	// Streams are created explicitly. The duplicate window covers the
	// relay's retries of one message.
	if _, err := natsjs.EnsureStream(ctx, js, jetstream.StreamConfig{
		Name:       "ORDERS",
		Subjects:   []string{"orders.>"},
		Storage:    jetstream.FileStorage,
		Duplicates: 10 * time.Minute,
	}); err != nil {
		log.Fatal(err)
	}

	sub := natsjs.NewSubscriber(js, natsjs.SubscriberConfig{DeadLetterPrefix: "dead"})
	defer sub.Close()
	_, err = sub.Subscribe(ctx, "orders.placed", async.MessageHandlerFunc(
		func(ctx context.Context, msg async.IncomingMessage) error {
			log.Printf("%s %s: %s", msg.MessageName(), msg.ID(), msg.Data())
			return nil // acks
		}),
		async.GroupName("billing"), async.MaxRedeliveries(5), async.Concurrency(4))
	if err != nil {
		log.Fatal(err)
	}

	pub := natsjs.NewPublisher(js, natsjs.PublisherConfig{})
	msg := async.NewMessage("orders.placed", "OrderPlaced", []byte(`{"id":42}`),
		async.WithMetadata(async.Metadata{async.MetaContentType: "application/json"}))
	if err := pub.Publish(ctx, "orders.placed", msg); err != nil {
		log.Fatal(err)
	}
}

// PublishBatch reports a result per message; a relay marks the confirmed
// ones published and retries the others.
func ExamplePublisher_PublishBatch() {
	nc, err := nats.Connect(nats.DefaultURL)
	if err != nil {
		log.Fatal(err)
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		log.Fatal(err)
	}
	pub := natsjs.NewPublisher(js, natsjs.PublisherConfig{MaxPending: 500})
	msgs := []async.Message{
		async.NewMessage("orders.placed", "OrderPlaced", []byte(`{"id":1}`)),
		async.NewMessage("orders.placed", "OrderPlaced", []byte(`{"id":2}`)),
	}
	errs, err := pub.PublishBatch(context.Background(), msgs)
	if err != nil {
		log.Fatal(err) // nothing counts as confirmed
	}
	for i, err := range errs {
		if err != nil {
			log.Printf("retry %s later: %v", msgs[i].ID(), err)
		}
	}
}
