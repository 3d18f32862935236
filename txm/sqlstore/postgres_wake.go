package sqlstore

import (
	"context"
	"errors"
	"fmt"
	"hash/fnv"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/cenkalti/backoff/v4"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/stdlib"
)

// Backoff of the LISTEN connection's reconnections.
const (
	listenInitialBackoff = 100 * time.Millisecond
	listenMaxBackoff     = 10 * time.Second
)

// startListener starts the LISTEN goroutine once, for PostgreSQL stores
// that are not PollOnly (postgresEngine.listen).
func (s *Store) startListener() {
	if s.cfg.PollOnly {
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed.Load() || s.listenStarted {
		return
	}
	s.listenStarted = true
	s.listenWG.Add(1)
	go s.listen()
}

// listen keeps a connection that LISTENs on the notify channel and signals
// every notification, reconnecting with backoff until Close.
func (s *Store) listen() {
	defer s.listenWG.Done()
	ctx := s.closeCtx
	bo := backoff.NewExponentialBackOff()
	bo.InitialInterval = listenInitialBackoff
	bo.MaxInterval = listenMaxBackoff
	bo.MaxElapsedTime = 0 // never give up: Close stops the loop
	for {
		err := s.listenConn(ctx, bo)
		if ctx.Err() != nil {
			return
		}
		delay := bo.NextBackOff()
		s.cfg.Logger.LogAttrs(ctx, slog.LevelWarn, "sqlstore: LISTEN connection failed; relays fall back to polling until it is back",
			slog.String("channel", s.cfg.NotifyChannel), slog.Any("error", err), slog.Duration("retry_in", delay))
		t := time.NewTimer(delay)
		select {
		case <-t.C:
		case <-ctx.Done():
			t.Stop()
			return
		}
	}
}

// listenConn opens a connection, LISTENs and signals notifications until
// the connection fails or ctx ends.
func (s *Store) listenConn(ctx context.Context, bo backoff.BackOff) error {
	cc, err := s.connConfig(ctx)
	if err != nil {
		return err
	}
	conn, err := pgx.ConnectConfig(ctx, cc)
	if err != nil {
		return fmt.Errorf("connect: %w", err)
	}
	defer func() {
		cctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		_ = conn.Close(cctx)
	}()
	if _, err := conn.Exec(ctx, "LISTEN "+quoteIdent(s.cfg.NotifyChannel)); err != nil {
		return fmt.Errorf("listen: %w", err)
	}
	bo.Reset()
	s.listenUp.Store(true)
	defer s.listenUp.Store(false)
	s.listenReady.Do(func() { close(s.listening) })
	// Messages may have been saved while nobody listened.
	s.signal()
	for {
		if _, err := conn.WaitForNotification(ctx); err != nil {
			return fmt.Errorf("wait for notification: %w", err)
		}
		s.signal()
	}
}

// connConfig returns the configuration of a new connection to the store's
// database.
func (s *Store) connConfig(ctx context.Context) (*pgx.ConnConfig, error) {
	if s.pool != nil {
		return s.pool.Config().ConnConfig, nil
	}
	conn, err := s.db.Conn(ctx)
	if err != nil {
		return nil, fmt.Errorf("connect: %w", err)
	}
	defer conn.Close()
	var cc *pgx.ConnConfig
	err = conn.Raw(func(dc any) error {
		c, ok := dc.(*stdlib.Conn)
		if !ok {
			return fmt.Errorf("connection of driver %T is not pgx's", dc)
		}
		cc = c.Conn().Config()
		return nil
	})
	if err != nil {
		return nil, err
	}
	if cc == nil {
		return nil, errors.New("no connection configuration")
	}
	return cc, nil
}

// pgState is what a PostgreSQL store keeps besides the core's: its
// advisory lock keys, its claim statements per limit, its NOTIFY throttle
// and its LISTEN connection.
type pgState struct {
	claimKey int64 // advisory lock key of claims
	// claimByLimit caches the claim statement per limit (Store.claimSQL).
	claimMu      sync.Mutex
	claimByLimit map[claimKey]string
	migrateKey   int64 // advisory lock key of Migrate

	notifyMu   sync.Mutex  // guards lastNotify and trailing
	lastNotify time.Time   // when this store last notified
	trailing   *time.Timer // a trailing NOTIFY scheduled for skipped saves
	followUp   bool        // the trailing NOTIFY is followed by a later one
	notifyWG   sync.WaitGroup

	listenStarted bool // guarded by Store.mu
	listenWG      sync.WaitGroup
	listenReady   sync.Once
	listening     chan struct{} // closed once LISTEN first succeeds
	listenUp      atomic.Bool   // the LISTEN connection listens now
}

func newPGState(cfg Config) pgState {
	return pgState{
		claimKey:     lockKey("txm/claim/" + cfg.Schema + "/" + cfg.OutboxTable),
		claimByLimit: map[claimKey]string{},
		migrateKey:   lockKey("txm/migrate/" + cfg.Schema + "/" + cfg.MigrationsTable),
		listening:    make(chan struct{}),
	}
}

// stop cancels a trailing NOTIFY and waits for the NOTIFY and LISTEN
// goroutines, which the store's closeCtx ends. Store.Close calls it.
func (p *pgState) stop() {
	p.notifyMu.Lock()
	if p.trailing != nil && p.trailing.Stop() {
		p.notifyWG.Done()
	}
	p.trailing = nil
	p.notifyMu.Unlock()
	p.notifyWG.Wait()
	p.listenWG.Wait()
}

// lockKey returns a PostgreSQL advisory lock key for name.
func lockKey(name string) int64 {
	h := fnv.New64a()
	_, _ = h.Write([]byte(name))
	return int64(h.Sum64())
}

// claimNotify reports whether a save should NOTIFY in its own statement:
// when no notification went out within [Config.NotifyInterval]. A save that
// does not, and inserts, calls trailingNotify.
func (s *Store) claimNotify() bool {
	if s.cfg.NotifyInterval < 0 {
		return true
	}
	now := time.Now()
	s.notifyMu.Lock()
	defer s.notifyMu.Unlock()
	if now.Sub(s.lastNotify) >= s.cfg.NotifyInterval {
		s.lastNotify = now
		return true
	}
	return false
}

// throttledSave notes a save that skipped its NOTIFY. In a transaction
// that InTx began, the NOTIFY follows the commit; otherwise a trailing
// NOTIFY follows at the end of the interval, and, for a save in a caller's
// transaction, whose commit the store cannot see, a second one later.
func (s *Store) throttledSave(h *txHolder) {
	switch {
	case h != nil && h.owner == s:
		h.throttled.Store(true)
	default:
		s.trailingNotify(h != nil)
	}
}

// followUpDelay is how long after a trailing NOTIFY a second one goes out
// for saves in callers' transactions that may commit after the first.
const followUpDelay = 50 * time.Millisecond

// trailingNotify makes sure one NOTIFY follows at the end of the current
// interval, for the saves that did not notify themselves; with followUp, a
// second NOTIFY follows followUpDelay after it.
func (s *Store) trailingNotify(followUp bool) {
	s.notifyMu.Lock()
	defer s.notifyMu.Unlock()
	s.followUp = s.followUp || followUp
	if s.trailing != nil || s.closed.Load() {
		return
	}
	s.scheduleNotify(max(s.cfg.NotifyInterval-time.Since(s.lastNotify), 0))
}

// scheduleNotify sends a NOTIFY after wait. notifyMu must be held.
func (s *Store) scheduleNotify(wait time.Duration) {
	s.notifyWG.Add(1)
	s.trailing = time.AfterFunc(wait, func() {
		defer s.notifyWG.Done()
		ctx, cancel := context.WithTimeout(s.closeCtx, 5*time.Second)
		defer cancel()
		if _, err := s.be.exec(ctx, `SELECT pg_notify($1, '')`, s.cfg.NotifyChannel); err != nil && ctx.Err() == nil {
			s.cfg.Logger.Warn("sqlstore: trailing NOTIFY failed; relays in other processes will poll", "error", err)
		}
		s.notifyMu.Lock()
		defer s.notifyMu.Unlock()
		s.trailing = nil
		s.lastNotify = time.Now()
		if s.followUp && !s.closed.Load() {
			s.followUp = false
			s.scheduleNotify(followUpDelay)
		}
	})
}
