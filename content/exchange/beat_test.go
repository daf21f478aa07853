package exchange

import (
	"errors"
	"os"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p/core/network"
)

// pausedStream is a fake stream (its process's pauses cannot be had in a
// test): each Read takes the next of reads, and gives its bytes, or, if it
// has none (as after the last), times out at the read deadline, seen late
// by its pause.
type pausedStream struct {
	network.Stream
	dl    time.Time
	reads []pausedRead
}

type pausedRead struct {
	late time.Duration
	data string
}

func (s *pausedStream) SetReadDeadline(t time.Time) error { s.dl = t; return nil }

func (s *pausedStream) Read(b []byte) (int, error) {
	var r pausedRead
	if len(s.reads) > 0 {
		r, s.reads = s.reads[0], s.reads[1:]
	}
	if r.data != "" {
		return copy(b, r.data), nil
	}
	time.Sleep(time.Until(s.dl) + r.late)
	return 0, os.ErrDeadlineExceeded
}

// TestIdleReader: a read that times out after Stuck of silence fails with
// ErrStuck; one whose deadline passed long before this node saw it (its
// own process was stopped: here, a read that sees its deadline three
// times Stuck late) gives the peer a fresh Stuck, and what then comes is
// read.
func TestIdleReader(t *testing.T) {
	const stuck = 200 * time.Millisecond
	tests := []struct {
		name  string
		reads []pausedRead
		want  string // "" for ErrStuck
	}{
		{"silent", nil, ""},
		{"paused, then the bytes", []pausedRead{{late: 3 * stuck}, {data: "block"}}, "block"},
		{"paused, then silent", []pausedRead{{late: 3 * stuck}}, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := &idleReader{str: &pausedStream{reads: tt.reads}, last: &lastHeard{}, start: time.Now().UnixNano(), stuck: stuck}
			b := make([]byte, 16)
			n, err := r.Read(b)
			switch {
			case tt.want == "" && !errors.Is(err, ErrStuck):
				t.Fatalf("read %q, %v; want ErrStuck", b[:n], err)
			case tt.want != "" && (err != nil || string(b[:n]) != tt.want):
				t.Fatalf("read %q, %v; want %q", b[:n], err, tt.want)
			}
		})
	}
}
