package memory_test

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/transmanager/transmanager/async"
	"github.com/transmanager/transmanager/async/memory"
)

// A subscription in a consumer group receives the topic's messages; a
// failed message is redelivered after the redelivery delay, and a killed
// one goes to the dead letters.
func Example() {
	ctx := context.Background()
	b := memory.New(memory.Config{RedeliveryDelay: 50 * time.Millisecond})
	defer b.Close()

	var wg sync.WaitGroup
	wg.Add(2) // the order handled, the poison killed
	attempts := 0
	handler := async.MessageHandlerFunc(func(_ context.Context, msg async.IncomingMessage) error {
		if string(msg.Data()) == "poison" {
			fmt.Println("killing", msg.MessageName())
			defer wg.Done()
			return msg.Kill()
		}
		attempts++
		if attempts == 1 {
			fmt.Println("first attempt fails:", string(msg.Data()))
			return errors.New("database busy")
		}
		fmt.Println("handled on attempt", attempts, "-", string(msg.Data()))
		wg.Done()
		return nil
	})
	sub, err := b.Subscribe(ctx, "orders", handler, async.GroupName("billing"))
	if err != nil {
		fmt.Println(err)
		return
	}
	defer sub.Unsubscribe()

	_ = b.Publish(ctx, "orders", async.NewMessage("orders", "OrderPlaced", []byte("order 1")))
	_ = b.Publish(ctx, "orders", async.NewMessage("orders", "OrderBroken", []byte("poison")))
	wg.Wait()

	for _, dl := range b.DeadLetters("orders") {
		fmt.Printf("dead letter: %s in group %s after %d delivery: %s\n", dl.Message.MessageName(), dl.Group, dl.Deliveries, dl.Reason)
	}
	// Output:
	// first attempt fails: order 1
	// killing OrderBroken
	// handled on attempt 2 - order 1
	// dead letter: OrderBroken in group billing after 1 delivery: killed
}
