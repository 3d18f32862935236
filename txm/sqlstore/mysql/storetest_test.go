package mysql_test

import (
	"testing"

	"github.com/transmanager/transmanager/internal/testenv"
	"github.com/transmanager/transmanager/txm"
	"github.com/transmanager/transmanager/txm/sqlstore"
	"github.com/transmanager/transmanager/txm/storetest"
)

// TestConformance runs the stores' conformance suite on MySQL/MariaDB with
// the default configuration, which deletes published messages, and the
// outbox part again with Config.KeepPublished.
func TestConformance(t *testing.T) {
	for _, keep := range []bool{false, true} {
		name := "default"
		if keep {
			name = "keep-published"
		}
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			testenv.URL(t, testenv.MySQL)
			h := storetest.Harness{
				New: func(t *testing.T) storetest.Stores {
					s := newStore(t, sqlstore.Config{KeepPublished: keep})
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
