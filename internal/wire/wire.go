// Package wire frames swdist's request/response messages on libp2p streams:
// each message is a varint length followed by canonical CBOR, bounded in
// size, under a deadline, so a peer that sends garbage, too much or nothing
// costs a bounded amount and gets a closed stream.
package wire

import (
	"errors"
	"fmt"
	"io"
	"time"

	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-msgio"

	"github.com/swdist/swdist/hierarchy/cert"
)

// DefaultTimeout bounds one request and its response.
const DefaultTimeout = 30 * time.Second

// Write encodes v and writes it as one frame.
func Write(w io.Writer, v any) error {
	data, err := cert.Marshal(v)
	if err != nil {
		return fmt.Errorf("encode message: %w", err)
	}
	return msgio.NewVarintWriter(w).WriteMsg(data)
}

// Read reads one frame of at most max bytes and decodes it into v.
func Read(r io.Reader, max int, v any) error {
	rd := msgio.NewVarintReaderSize(r, max)
	data, err := rd.ReadMsg()
	if err != nil {
		if errors.Is(err, msgio.ErrMsgTooLarge) {
			return fmt.Errorf("message larger than %d bytes", max)
		}
		return fmt.Errorf("read message: %w", err)
	}
	defer rd.ReleaseMsg(data)
	if err := cert.Unmarshal(data, v); err != nil {
		return fmt.Errorf("decode message: %w", err)
	}
	return nil
}

// Response is a frame that is either a result or an ErrorMsg.
type Response[T any] struct {
	OK    *T     `cbor:"0,keyasint,omitempty"`
	Error string `cbor:"1,keyasint,omitempty"`
}

// Call writes req on a fresh stream, reads one response of at most max bytes
// and closes the stream. A refusal by the remote handler comes back as a
// *RemoteError carrying its text.
func Call[Req, Resp any](s network.Stream, req Req, max int) (Resp, error) {
	var zero Resp
	defer s.Close()
	_ = s.SetDeadline(time.Now().Add(DefaultTimeout))
	if err := Write(s, req); err != nil {
		s.Reset()
		return zero, err
	}
	if err := s.CloseWrite(); err != nil {
		s.Reset()
		return zero, fmt.Errorf("close write: %w", err)
	}
	var r Response[Resp]
	if err := Read(s, max, &r); err != nil {
		s.Reset()
		return zero, err
	}
	if r.Error != "" {
		return zero, &RemoteError{Msg: r.Error}
	}
	if r.OK == nil {
		return zero, errors.New("empty response")
	}
	return *r.OK, nil
}

// Serve reads one request of at most max bytes, calls f and writes its result
// or its error. Errors that must not reach the peer should be logged by f
// and replaced with a short public text.
func Serve[Req, Resp any](s network.Stream, max int, f func(Req) (Resp, error)) error {
	defer s.Close()
	_ = s.SetDeadline(time.Now().Add(DefaultTimeout))
	var req Req
	if err := Read(s, max, &req); err != nil {
		s.Reset()
		return err
	}
	resp, ferr := f(req)
	var out Response[Resp]
	if ferr != nil {
		out.Error = ferr.Error()
	} else {
		out.OK = &resp
	}
	if err := Write(s, out); err != nil {
		s.Reset()
		return err
	}
	return ferr
}

// RemoteError is a refusal the remote handler answered with: the request
// arrived and was judged, unlike a broken stream.
type RemoteError struct{ Msg string }

func (e *RemoteError) Error() string { return e.Msg }
