package natsjs

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/nats-io/nats.go"
)

// ErrSyncUnknown reports that the server did not say how it writes
// JetStream to disk: the connection's account cannot ask the system
// account's VARZ service ($SYS.REQ.SERVER.<id>.VARZ), which only the system
// account and accounts that import that service can, or the server did
// not answer in time.
var ErrSyncUnknown = errors.New("natsjs: the server does not say how it syncs JetStream to disk")

// syncCheckTimeout bounds the question [NewPublisher] asks the server.
const syncCheckTimeout = 500 * time.Millisecond

// SyncAlways asks the server nc is connected to whether JetStream flushes
// its store to disk before each acknowledgement (sync_interval: always in
// the server's jetstream block). false means the server syncs lazily, by
// default every two minutes: a message it acknowledged can be lost by an
// operating system crash or a power cut before the next sync, and a
// message the relay marked published on such an acknowledgement with it.
// A server older than 2.10 has no such setting and always syncs lazily.
//
// The answer comes from the server's VARZ, which only the system account
// may ask for unless an account imports the service
// ($SYS.REQ.SERVER.*.VARZ) from it; when the connection's account cannot
// ask, the error matches [ErrSyncUnknown]. Nothing is guessed.
func SyncAlways(ctx context.Context, nc *nats.Conn) (bool, error) {
	id := nc.ConnectedServerId()
	if id == "" {
		return false, fmt.Errorf("%w: not connected", ErrSyncUnknown)
	}
	msg, err := nc.RequestWithContext(ctx, "$SYS.REQ.SERVER."+id+".VARZ", nil)
	if err != nil {
		return false, fmt.Errorf("%w: %w", ErrSyncUnknown, err)
	}
	var resp struct {
		Data *struct {
			JetStream *struct {
				Config *struct {
					SyncAlways bool `json:"sync_always"`
				} `json:"config"`
			} `json:"jetstream"`
		} `json:"data"`
		Error *struct {
			Description string `json:"description"`
		} `json:"error"`
	}
	if err := json.Unmarshal(msg.Data, &resp); err != nil {
		return false, fmt.Errorf("%w: decode VARZ: %w", ErrSyncUnknown, err)
	}
	switch {
	case resp.Error != nil:
		return false, fmt.Errorf("%w: %s", ErrSyncUnknown, resp.Error.Description)
	case resp.Data == nil || resp.Data.JetStream == nil || resp.Data.JetStream.Config == nil:
		return false, fmt.Errorf("%w: VARZ has no JetStream configuration", ErrSyncUnknown)
	}
	return resp.Data.JetStream.Config.SyncAlways, nil
}

// warnLazySync logs, once per publisher, a warning when the server says
// it syncs JetStream lazily; when it does not say, it logs that at debug
// level only.
func warnLazySync(nc *nats.Conn, logger *slog.Logger) {
	if nc == nil || !nc.IsConnected() {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), syncCheckTimeout)
	defer cancel()
	always, err := SyncAlways(ctx, nc)
	switch {
	case err != nil:
		logger.LogAttrs(ctx, slog.LevelDebug, "natsjs: cannot tell how the server syncs JetStream to disk",
			slog.String("error", err.Error()))
	case !always:
		logger.LogAttrs(ctx, slog.LevelWarn,
			"natsjs: the NATS server syncs JetStream to disk lazily: a message it acknowledged, and the relay marked published, can be lost by an OS crash or power cut; set sync_interval: always in the server's jetstream block",
			slog.String("server", nc.ConnectedServerName()), slog.String("version", nc.ConnectedServerVersion()))
	}
}
