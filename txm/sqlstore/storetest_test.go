package sqlstore

import (
	"testing"

	"github.com/transmanager/transmanager/internal/testenv"
	"github.com/transmanager/transmanager/txm"
	"github.com/transmanager/transmanager/txm/storetest"
)

// TestConformance runs the stores' conformance suite on SQLite, and on
// PostgreSQL through pgx and through database/sql.
func TestConformance(t *testing.T) {
	for _, kind := range allKinds {
		t.Run(string(kind), func(t *testing.T) {
			t.Parallel()
			if kind != kindSQLite {
				testenv.URL(t, testenv.Postgres) // skip the whole kind without a database
			}
			storetest.Run(t, storetest.Harness{
				New: func(t *testing.T) storetest.Stores {
					s := newTestStore(t, kind, Config{})
					return storetest.Stores{
						Outbox: s.Outbox(),
						Inbox:  func(group string) txm.InboxStore { return s.Inbox(group) },
					}
				},
			})
		})
	}
}
