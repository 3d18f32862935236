package txm

import (
	"context"
	"fmt"
	"log/slog"
	"time"
)

// RetentionConfig configures the removal of old rows: published outbox
// messages by the relay ([ProcessorConfig.Retention]), or any [PurgeFunc]
// by [RunRetention]. The zero value turns retention off.
type RetentionConfig struct {
	// Published is how long published messages are kept: the relay deletes
	// those published more than Published ago. It matters only for a store
	// that keeps published messages (sqlstore with Config.KeepPublished,
	// memstore); sqlstore deletes them at once by default. The store must
	// implement [Purger], or NewOutboxProcessorWithConfig fails. Zero (the
	// default) turns the relay's retention off; it must not be negative.
	// [RunRetention] ignores it: it takes the age as an argument.
	Published time.Duration

	// Interval is the time between two retention passes; the first runs
	// when the relay starts. Default 1 minute.
	Interval time.Duration

	// BatchSize is how many rows one purge statement deletes at most: a pass
	// calls it again while it deletes a full batch, so that no statement
	// holds many rows' locks or a long transaction. Default 1000.
	BatchSize int
}

const (
	defaultRetentionInterval  = time.Minute
	defaultRetentionBatchSize = 1000
)

func (c RetentionConfig) withDefaults(field string) (RetentionConfig, error) {
	switch {
	case c.Published < 0:
		return c, fmt.Errorf("txm: %s.Published must not be negative, got %v", field, c.Published)
	case c.Interval < 0:
		return c, fmt.Errorf("txm: %s.Interval must not be negative, got %v", field, c.Interval)
	case c.BatchSize < 0:
		return c, fmt.Errorf("txm: %s.BatchSize must not be negative, got %d", field, c.BatchSize)
	}
	if c.Interval == 0 {
		c.Interval = defaultRetentionInterval
	}
	if c.BatchSize == 0 {
		c.BatchSize = defaultRetentionBatchSize
	}
	return c, nil
}

// PurgeFunc deletes at most limit rows older than olderThan and returns how
// many it deleted: the shape of [Purger]'s Purge and of the stores' inbox
// PurgeInbox (sqlstore.Inbox, memstore.Inbox), so that a method value of
// either can be passed.
type PurgeFunc func(ctx context.Context, olderThan time.Duration, limit int) (int, error)

// PurgeOlder deletes the rows older than olderThan through purge, in
// batches of at most batchSize (1000 when zero or less), until a batch
// comes back short or ctx ends, and returns how many it deleted in all. On
// an error it returns the count so far with the error.
func PurgeOlder(ctx context.Context, purge PurgeFunc, olderThan time.Duration, batchSize int) (int, error) {
	if batchSize <= 0 {
		batchSize = defaultRetentionBatchSize
	}
	total := 0
	for {
		if err := ctx.Err(); err != nil {
			return total, err
		}
		n, err := purge(ctx, olderThan, batchSize)
		total += n
		if err != nil {
			return total, err
		}
		if n < batchSize {
			return total, nil
		}
	}
}

// RunRetention runs retention for the rows of one purge function until ctx
// ends, then returns ctx's error: a pass of [PurgeOlder] at once and every
// cfg.Interval after, deleting the rows older than olderThan in batches of
// cfg.BatchSize (cfg.Published is ignored). A failed pass is logged (WARN,
// slog.Default) and tried again at the next interval. Run it in a goroutine
// of your own, for what the relay does not purge: a consumer's inbox
// records,
//
//	go txm.RunRetention(ctx, store.Inbox("billing").PurgeInbox, 30*24*time.Hour, txm.RetentionConfig{Interval: time.Hour})
//
// Keep inbox records longer than the broker may redeliver a message: a
// redelivery after its record was purged is handled again. It returns an
// error at once, before any pass, for a nil purge function, an olderThan
// that is not positive or a negative field of cfg.
func RunRetention(ctx context.Context, purge PurgeFunc, olderThan time.Duration, cfg RetentionConfig) error {
	if purge == nil {
		return nilArgument("RunRetention", "purge")
	}
	if olderThan <= 0 {
		return fmt.Errorf("txm: RunRetention: olderThan must be positive, got %v", olderThan)
	}
	cfg, err := cfg.withDefaults("RunRetention: RetentionConfig")
	if err != nil {
		return err
	}
	retentionLoop(ctx, nil, systemClock{}, slog.Default(), "purge", purge, olderThan, cfg)
	return ctx.Err()
}

// retentionLoop runs a pass at once and one every cfg.Interval until ctx
// ends or stop is closed.
func retentionLoop(ctx context.Context, stop <-chan struct{}, clock Clock, logger *slog.Logger, what string,
	purge PurgeFunc, olderThan time.Duration, cfg RetentionConfig) {
	for {
		start := clock.Now()
		n, err := PurgeOlder(ctx, purge, olderThan, cfg.BatchSize)
		switch {
		case err != nil && ctx.Err() != nil:
			return
		case err != nil:
			logger.LogAttrs(ctx, slog.LevelWarn, "txm: retention failed; trying again at the next interval",
				slog.String("rows", what), slog.Int("deleted", n), slog.Duration("interval", cfg.Interval), slog.Any("error", err))
		case n > 0:
			logger.LogAttrs(ctx, slog.LevelInfo, "txm: retention",
				slog.String("rows", what), slog.Int("deleted", n), slog.Duration("older_than", olderThan),
				slog.Duration("took", clock.Now().Sub(start)))
		}
		select {
		case <-ctx.Done():
			return
		case <-stop:
			return
		case <-clock.After(cfg.Interval):
		}
	}
}

// startRetention starts the relay's retention of published messages, when
// configured, and returns a function that stops it and waits for it.
func (p *Processor) startRetention(ctx context.Context) (stop func()) {
	if p.purger == nil {
		return func() {}
	}
	ctx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() {
		defer close(done)
		retentionLoop(ctx, p.stopCh, p.cfg.Clock, p.cfg.Logger, "published outbox messages",
			p.purger.Purge, p.cfg.Retention.Published, p.cfg.Retention)
	}()
	return func() {
		cancel()
		<-done
	}
}
