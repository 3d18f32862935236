package retry_test

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/transmanager/transmanager/async"
	"github.com/transmanager/transmanager/retry"
)

func ExamplePolicy_Interval() {
	p := retry.Policy{InitialInterval: 100 * time.Millisecond, MaxInterval: time.Second}
	for attempt := 1; attempt <= 6; attempt++ {
		fmt.Printf("after failure %d: %v\n", attempt, p.Interval(attempt))
	}
	// Output:
	// after failure 1: 100ms
	// after failure 2: 200ms
	// after failure 3: 400ms
	// after failure 4: 800ms
	// after failure 5: 1s
	// after failure 6: 1s
}

func ExampleDoNotify() {
	p := retry.Policy{
		InitialInterval:     time.Millisecond,
		RandomizationFactor: retry.NoJitter,
		MaxAttempts:         5,
	}
	calls := 0
	err := retry.DoNotify(context.Background(), p, func(context.Context) error {
		calls++
		if calls < 3 {
			return errors.New("broker unavailable")
		}
		return nil
	}, func(err error, next time.Duration) {
		fmt.Printf("%v; retrying in %v\n", err, next)
	})
	fmt.Println("calls:", calls, "error:", err)
	// Output:
	// broker unavailable; retrying in 1ms
	// broker unavailable; retrying in 2ms
	// calls: 3 error: <nil>
}

func ExampleDo_exhausted() {
	p := retry.Policy{InitialInterval: time.Millisecond, MaxAttempts: 3}
	err := retry.Do(context.Background(), p, func(context.Context) error {
		return errors.New("connection refused")
	})
	fmt.Println(err)
	fmt.Println(errors.Is(err, retry.ErrExhausted))
	// Output:
	// retry: stopped after 3 attempts (retry: policy exhausted): connection refused
	// true
}

func ExamplePermanent() {
	errInvalid := errors.New("invalid order")
	calls := 0
	err := retry.Do(context.Background(), retry.DefaultPolicy(), func(context.Context) error {
		calls++
		return retry.Permanent(fmt.Errorf("validate: %w", errInvalid))
	})
	fmt.Println("calls:", calls)
	fmt.Println(err)
	fmt.Println(retry.IsPermanent(err), errors.Is(err, errInvalid))
	// Output:
	// calls: 1
	// validate: invalid order
	// true true
}

func ExamplePublisher() {
	failures := 2
	broker := async.MessagePublisherFunc(func(ctx context.Context, topic string, msg async.Message) error {
		if failures > 0 {
			failures--
			fmt.Println("publish to", topic, "failed")
			return errors.New("broker unavailable")
		}
		fmt.Println("published to", topic)
		return nil
	})
	p := retry.Policy{InitialInterval: time.Millisecond, MaxAttempts: 5}
	pub := async.ChainPublisher(broker, retry.Publisher(p))
	err := pub.Publish(context.Background(), "orders", async.NewMessage("orders", "OrderPlaced", []byte(`{"id":1}`)))
	fmt.Println("error:", err)
	// Output:
	// publish to orders failed
	// publish to orders failed
	// published to orders
	// error: <nil>
}
