package exchange

import (
	"errors"
	"os"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p/core/network"
)

// fakeStream is the part of a stream an idleReader uses, with what the
// peer sends in data, and a read deadline that can only be set to the
// past (which the watchdog does): a fake, as the pauses of this node's
// own process below cannot be had with a real one.
type fakeStream struct {
	network.Stream
	data    chan string
	once    sync.Once
	expired chan struct{}
}

func newFakeStream() *fakeStream {
	return &fakeStream{data: make(chan string, 4), expired: make(chan struct{})}
}

func (s *fakeStream) SetReadDeadline(t time.Time) error {
	if !t.After(time.Now()) {
		s.once.Do(func() { close(s.expired) })
	}
	return nil
}

func (s *fakeStream) Read(b []byte) (int, error) {
	select { // a deadline that passed first, as QUIC has it
	case <-s.expired:
		return 0, os.ErrDeadlineExceeded
	default:
	}
	select {
	case d := <-s.data:
		return copy(b, d), nil
	case <-s.expired:
		return 0, os.ErrDeadlineExceeded
	}
}

// TestIdleReader: a read that gets nothing from the peer for stuck fails
// with ErrStuck, and not before: not while other answers of the peer's go
// on, not for the time the asker spends between reads, of this answer or
// another of the peer's, and not for a pause of its own process (its
// clock jumps).
func TestIdleReader(t *testing.T) {
	const stuck = 400 * time.Millisecond
	tests := []struct {
		name string
		// run acts as the peer, and as this node between reads and its
		// clock, while read reads; it returns what the last read got.
		run func(s *fakeStream, peer *lastHeard, clock func() int64, skew *atomic.Int64, read func() (string, error)) (string, error)
	}{
		{"silent", func(s *fakeStream, _ *lastHeard, _ func() int64, _ *atomic.Int64, read func() (string, error)) (string, error) {
			return read()
		}},
		{"between reads", func(s *fakeStream, _ *lastHeard, _ func() int64, _ *atomic.Int64, read func() (string, error)) (string, error) {
			s.data <- "a"
			if got, err := read(); err != nil {
				return got, err
			}
			time.Sleep(3 * stuck) // this node's rate limit, say
			s.data <- "b"
			return read()
		}},
		{"paused", func(s *fakeStream, _ *lastHeard, _ func() int64, skew *atomic.Int64, read func() (string, error)) (string, error) {
			go func() {
				time.Sleep(stuck / 2)
				skew.Add(int64(5 * stuck)) // stopped for a while
				time.Sleep(stuck / 2)
				s.data <- "b"
			}()
			return read()
		}},
		{"this node's own waits", func(s *fakeStream, peer *lastHeard, _ func() int64, _ *atomic.Int64, read func() (string, error)) (string, error) {
			// Another request to the peer waits on this node's rate
			// limit, its data unread: over QUIC, this one's can't come.
			end := peer.busy()
			go func() {
				time.Sleep(3 * stuck)
				end()
				s.data <- "b"
			}()
			return read()
		}},
		{"others go on", func(s *fakeStream, peer *lastHeard, clock func() int64, _ *atomic.Int64, read func() (string, error)) (string, error) {
			go func() {
				for range 12 {
					peer.at.Store(clock()) // a byte of another answer
					time.Sleep(stuck / 4)
				}
				s.data <- "b"
			}()
			return read()
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			base := time.Now()
			var skew atomic.Int64
			clock := func() int64 { return int64(time.Since(base)) + skew.Load() + 1 }
			s, peer := newFakeStream(), &lastHeard{}
			r := watchIdle(s, peer, clock, stuck)
			defer r.close()
			read := func() (string, error) {
				b := make([]byte, 16)
				n, err := r.Read(b)
				return string(b[:n]), err
			}
			got, err := tt.run(s, peer, clock, &skew, read)
			if tt.name == "silent" {
				if !errors.Is(err, ErrStuck) {
					t.Fatalf("read %q, %v; want ErrStuck", got, err)
				}
				return
			}
			if err != nil || got != "b" {
				t.Fatalf("read %q, %v; want %q", got, err, "b")
			}
		})
	}
}

// TestStuckForAll: once one request's watchdog found the peer stuck, the
// reads of the node's other requests to it fail too, however recently
// they began.
func TestStuckForAll(t *testing.T) {
	const stuck = 400 * time.Millisecond
	base := time.Now()
	clock := func() int64 { return int64(time.Since(base)) + 1 }
	peer := &lastHeard{}
	first := watchIdle(newFakeStream(), peer, clock, stuck)
	defer first.close()
	if _, err := first.Read(make([]byte, 1)); !errors.Is(err, ErrStuck) {
		t.Fatalf("first request: %v; want ErrStuck", err)
	}
	// A later request to the same peer: with 20 s of its own, it fails
	// at its watchdog's first look, 5 s on.
	later := watchIdle(newFakeStream(), peer, clock, 20*time.Second)
	defer later.close()
	done := make(chan error, 1)
	go func() { _, err := later.Read(make([]byte, 1)); done <- err }()
	select {
	case err := <-done:
		if !errors.Is(err, ErrStuck) {
			t.Fatalf("later request: %v; want ErrStuck", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the later request to a peer found stuck still waits after half its Stuck")
	}
}
