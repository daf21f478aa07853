package inventory

import (
	"context"
	"errors"
	"maps"
	"slices"
	"testing"
	"time"
)

// TestAgentFailingCollector drives the Agent through collections in which
// a collector (a fake Owner) works, fails, hangs and works again, applying
// each delta as the managing node does: while it fails, the node keeps its
// values and sees error.NAME; when it works again, its changes go up.
func TestAgentFailingCollector(t *testing.T) {
	var (
		reported Reported
		has      bool
		server   Inventory // what the managing node holds
	)
	behave := func(context.Context, *Inventory) error { return nil }
	a := NewAgent(AgentConfig{
		Collectors: []Collector{
			fakeCollector{"host", ok(setAll("hostname", "h"))},
			ownerCollector{fakeCollector{"app", func(ctx context.Context, inv *Inventory) error { return behave(ctx, inv) }}, "app."},
		},
		Timeout: 200 * time.Millisecond,
		Load:    func(context.Context) (Reported, bool, error) { return reported, has, nil },
		Commit: func(_ context.Context, d Delta, next Reported) error {
			if !d.Full && !SameDigest(d.Base, server.Digest()) {
				t.Errorf("delta %d on a base the server does not hold", d.Seq)
			}
			server.Apply(d)
			reported, has = next, true
			return nil
		},
	})
	block := make(chan struct{})
	defer close(block)
	steps := []struct {
		name   string
		behave func(context.Context, *Inventory) error
		want   map[string]string // what the server holds after
		del    int               // fields the delta removes
	}{
		{"works", ok(setAll("app.a", "1", "app.b", "2")), map[string]string{"hostname": "h", "app.a": "1", "app.b": "2"}, 0},
		{"fails", func(context.Context, *Inventory) error { return errors.New("no app") },
			map[string]string{"hostname": "h", "app.a": "1", "app.b": "2", "error.app": "no app"}, 0},
		{"hangs", func(context.Context, *Inventory) error { <-block; return nil },
			map[string]string{"hostname": "h", "app.a": "1", "app.b": "2", "error.app": "timed out after 200ms"}, 0},
		{"works again without app.b", ok(setAll("app.a", "1")), map[string]string{"hostname": "h", "app.a": "1"}, 2},
	}
	for _, s := range steps {
		behave = s.behave
		d, err := a.CollectNow(context.Background(), s.name)
		if err != nil {
			t.Fatalf("%s: %v", s.name, err)
		}
		if !maps.Equal(server.Fields, s.want) {
			t.Errorf("%s: the server holds %v, want %v", s.name, server.Fields, s.want)
		}
		if len(d.Unset) != s.del {
			t.Errorf("%s: the delta removes %v", s.name, slices.Sorted(slices.Values(d.Unset)))
		}
	}
}
