package async

import (
	"regexp"
	"sort"
	"sync"
	"testing"

	"github.com/google/uuid"
)

var uuidV7Text = regexp.MustCompile(`^[0-9a-f]{8}-[0-9a-f]{4}-7[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$`)

func TestNewIDIsUUIDv7AndSortsByCreation(t *testing.T) {
	const n = 10000
	ids := make([]string, n)
	for i := range ids {
		ids[i] = NewID()
		if !uuidV7Text.MatchString(ids[i]) {
			t.Fatalf("ID %q is not a canonical UUIDv7", ids[i])
		}
		u, err := uuid.Parse(ids[i])
		if err != nil || u.Version() != 7 || u.Variant() != uuid.RFC4122 {
			t.Fatalf("uuid.Parse(%q) = version %v variant %v, %v", ids[i], u.Version(), u.Variant(), err)
		}
	}
	if !sort.StringsAreSorted(ids) {
		t.Error("IDs made one after another do not sort in creation order")
	}
}

func TestNewIDUniqueAcrossGoroutines(t *testing.T) {
	var mu sync.Mutex
	seen := map[string]bool{}
	var wg sync.WaitGroup
	for range 8 {
		wg.Go(func() {
			local := make([]string, 2000)
			for i := range local {
				local[i] = NewMessage("t", "n", nil).ID()
			}
			mu.Lock()
			defer mu.Unlock()
			for _, id := range local {
				if seen[id] {
					t.Errorf("duplicate ID %s", id)
				}
				seen[id] = true
			}
		})
	}
	wg.Wait()
}
