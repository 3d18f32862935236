package async_test

import (
	"context"
	"testing"

	"github.com/transmanager/transmanager/async"
)

func TestGroupContext(t *testing.T) {
	t.Parallel()
	for _, tt := range []struct {
		name string
		ctx  context.Context
		want string
		ok   bool
	}{
		{"none", context.Background(), "", false},
		{"group", async.WithGroup(context.Background(), "billing"), "billing", true},
		{"private hides an outer group", async.WithGroup(async.WithGroup(context.Background(), "billing"), ""), "", false},
		{"inner wins", async.WithGroup(async.WithGroup(context.Background(), "billing"), "shipping"), "shipping", true},
	} {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			got, ok := async.GroupFromContext(tt.ctx)
			if got != tt.want || ok != tt.ok {
				t.Errorf("GroupFromContext = %q, %v; want %q, %v", got, ok, tt.want, tt.ok)
			}
		})
	}
}
