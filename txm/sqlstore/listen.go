package sqlstore

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
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
// that are not PollOnly.
func (s *Store) startListener() {
	if s.dialect != postgres || s.cfg.PollOnly {
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
