package blocks

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/ipfs/go-cid"
)

func testStore(t testing.TB) *Store {
	t.Helper()
	s, err := Open(t.TempDir() + "/blocks")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

func testBlock(t testing.TB, i int) (cid.Cid, []byte) {
	t.Helper()
	data := []byte(fmt.Sprintf("block %d", i))
	c, err := CID(Raw, data)
	if err != nil {
		t.Fatal(err)
	}
	return c, data
}

func told(ch <-chan struct{}) bool {
	select {
	case <-ch:
		return true
	default:
		return false
	}
}

// A Put tells the waiters for that block, once however often it comes, and
// no one else; a waiter that stopped is not told and leaves nothing behind.
func TestNotifyTellsOnlyTheWaitersOfABlock(t *testing.T) {
	ctx := context.Background()
	s := testStore(t)
	a, dataA := testBlock(t, 1)
	b, dataB := testBlock(t, 2)
	forA, stopA := s.Notify([]cid.Cid{a})
	forB, stopB := s.Notify([]cid.Cid{b})
	forBoth, stopBoth := s.Notify([]cid.Cid{a, b})
	for _, step := range []struct {
		name             string
		put              []byte
		c                cid.Cid
		stop             func()
		wantA, wantB, ab bool
	}{
		{"a stored", dataA, a, nil, true, false, true},
		{"a stored twice before anyone looked", dataA, a, nil, true, false, true},
		{"b stored after the waiter for a stopped", dataB, b, stopA, false, true, true},
		{"a stored after every waiter stopped", dataA, a, func() { stopB(); stopBoth() }, false, false, false},
	} {
		if step.stop != nil {
			step.stop()
		}
		if err := s.Put(ctx, step.c, step.put); err != nil {
			t.Fatal(err)
		}
		if step.name == "a stored twice before anyone looked" {
			if err := s.Put(ctx, step.c, step.put); err != nil {
				t.Fatal(err)
			}
		}
		if got := told(forA); got != step.wantA {
			t.Errorf("%s: waiter for a told %v, want %v", step.name, got, step.wantA)
		}
		if got := told(forB); got != step.wantB {
			t.Errorf("%s: waiter for b told %v, want %v", step.name, got, step.wantB)
		}
		if got := told(forBoth); got != step.ab {
			t.Errorf("%s: waiter for both told %v, want %v", step.name, got, step.ab)
		}
	}
	if len(s.waiters) != 0 {
		t.Errorf("%d blocks still have waiters after every waiter stopped", len(s.waiters))
	}
}

// BenchmarkPutBesideWaiters stores blocks while many requests wait for
// two blocks each that are not here yet (a relay's children asking for
// what it is still fetching), the blocks stored being none of theirs: the
// cost that other requests' waiting adds to each block stored. "notify" is
// how the exchange waits now (Notify: no one is woken, and the benchmark
// only checks each request's channel); "every_request_looks" is what it
// did before, when every stored block woke every waiting request to look
// for all its blocks again. Compare the two side by side in one run.
func BenchmarkPutBesideWaiters(b *testing.B) {
	ctx := context.Background()
	for _, waiting := range []int{10, 1000} {
		for _, every := range []bool{false, true} {
			name := fmt.Sprintf("waiting=%d/notify", waiting)
			if every {
				name = fmt.Sprintf("waiting=%d/every_request_looks", waiting)
			}
			b.Run(name, func(b *testing.B) {
				s := testStore(b)
				type request struct {
					want    []cid.Cid
					arrived <-chan struct{}
				}
				reqs := make([]request, waiting)
				for i := range reqs {
					c1, _ := testBlock(b, -2*i-1)
					c2, _ := testBlock(b, -2*i-2)
					reqs[i].want = []cid.Cid{c1, c2}
					var stop func()
					reqs[i].arrived, stop = s.Notify(reqs[i].want)
					defer stop()
				}
				look := func(r request) {
					for _, c := range r.want {
						if _, err := s.Get(ctx, c); err == nil {
							b.Fatal("a block nobody stored is here")
						}
					}
				}
				b.ResetTimer()
				for i := 0; i < b.N; i++ {
					c, data := testBlock(b, i)
					if err := s.Put(ctx, c, data); err != nil {
						b.Fatal(err)
					}
					for _, r := range reqs {
						if every || told(r.arrived) {
							look(r)
						}
					}
				}
			})
		}
	}
}

// TestStalled: the store is stalled while a read or write has been under
// way for longer than asked, and not once it ended. (An operation that
// began a minute ago is made by hand: a disk that stops answering cannot
// be had here.)
func TestStalled(t *testing.T) {
	s := testStore(t)
	c, data := testBlock(t, 1)
	if err := s.Put(context.Background(), c, data); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Get(context.Background(), c); err != nil {
		t.Fatal(err)
	}
	if s.Stalled(time.Second) {
		t.Fatal("stalled after operations that ended")
	}
	end := s.op()
	s.opMu.Lock()
	for id := range s.ops {
		s.ops[id] = time.Now().Add(-time.Minute)
	}
	s.opMu.Unlock()
	if !s.Stalled(30*time.Second) || s.Stalled(2*time.Minute) {
		t.Fatalf("an operation under way for a minute: stalled(30s)=%v, stalled(2m)=%v; want true, false", s.Stalled(30*time.Second), s.Stalled(2*time.Minute))
	}
	end()
	if s.Stalled(0) {
		t.Fatal("stalled after the operation ended")
	}
}
