package sqlstore

import (
	"testing"

	"github.com/transmanager/transmanager/internal/testenv"
	"github.com/transmanager/transmanager/txm"
	"github.com/transmanager/transmanager/txm/storetest"
)

// TestConformance runs the stores' conformance suite on SQLite, and on
// PostgreSQL through pgx and through database/sql, with the default
// configuration, which deletes published messages, and the outbox part
// again with Config.KeepPublished.
func TestConformance(t *testing.T) {
	for _, keep := range []bool{false, true} {
		for _, kind := range allKinds {
			name := string(kind)
			if keep {
				name += "/keep-published"
			}
			t.Run(name, func(t *testing.T) {
				t.Parallel()
				if kind != kindSQLite {
					testenv.URL(t, testenv.Postgres) // skip the whole kind without a database
				}
				h := storetest.Harness{
					New: func(t *testing.T) storetest.Stores {
						s := newTestStore(t, kind, Config{KeepPublished: keep})
						return storetest.Stores{
							Outbox: s.Outbox(),
							Inbox:  func(group string) txm.InboxStore { return s.Inbox(group) },
						}
					},
					DeletesPublished: !keep,
				}
				if keep {
					storetest.RunOutbox(t, h)
					return
				}
				storetest.Run(t, h)
			})
		}
	}
}
