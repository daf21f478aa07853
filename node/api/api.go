// Package api is the control API that the CLI talks to: HTTP over a Unix
// socket in the node's home (mode 0600, so only the node's owner can use
// it). Its JSON documents are the ones `--json` prints; they are stable.
package api

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"strconv"
	"time"

	"github.com/swdist/swdist/hierarchy/tree"
)

// ID is what `swdist id` shows.
type ID struct {
	PeerID       string    `json:"peer_id"`
	Role         string    `json:"role"`
	Site         string    `json:"site"`
	Parent       string    `json:"parent"`
	Groups       []string  `json:"groups"`
	Addrs        []string  `json:"addrs"`
	Org          string    `json:"org"`
	CertNotAfter time.Time `json:"cert_not_after"`
	Version      string    `json:"version"`
}

// Peer is one entry of `swdist peers`.
type Peer struct {
	PeerID   string    `json:"peer_id"`
	Role     string    `json:"role"`
	Site     string    `json:"site"`
	Relation string    `json:"relation"` // parent, child or peer
	Addrs    []string  `json:"addrs"`
	Since    time.Time `json:"since"`
}

// TokenRequest asks for a join token.
type TokenRequest struct {
	Role   string   `json:"role"`
	Parent string   `json:"parent"` // empty: this node
	Site   string   `json:"site"`   // empty: the parent's site
	Groups []string `json:"groups"`
	TTL    string   `json:"ttl"` // empty: the configured default
}

// Token is a minted join token.
type Token struct {
	Token     string    `json:"token"`
	ExpiresAt time.Time `json:"expires_at"`
	Parent    string    `json:"parent"`
	Role      string    `json:"role"`
	Site      string    `json:"site"`
	Groups    []string  `json:"groups"`
}

// RevokeRequest asks to revoke a node below this one.
type RevokeRequest struct {
	Peer   string `json:"peer"`
	Reason string `json:"reason"`
}

// Revocation reports a revocation.
type Revocation struct {
	Peer      string    `json:"peer"`
	RevokedBy string    `json:"revoked_by"`
	RevokedAt time.Time `json:"revoked_at"`
	Reason    string    `json:"reason,omitempty"`
}

// Backend is what the API serves; the node implements it.
type Backend interface {
	ID(ctx context.Context) (ID, error)
	Peers(ctx context.Context) ([]Peer, error)
	Tree(ctx context.Context, depth int) (tree.Node, error)
	CreateToken(ctx context.Context, req TokenRequest) (Token, error)
	Revoke(ctx context.Context, req RevokeRequest) (Revocation, error)
	CertifyAdmin(ctx context.Context, req AdminRequest) (AdminCert, error)
	SubmitJob(ctx context.Context, req JobSubmit) (JobCreated, error)
	ListJobs(ctx context.Context) ([]Job, error)
	ShowJob(ctx context.Context, id string) (JobDetail, error)
	// JobStatus, with destinations, also lists each destination's state.
	JobStatus(ctx context.Context, id string, destinations bool) (JobStatus, error)
	// JobDestination is one destination of a job: peer is its ID or a
	// unique part of it.
	JobDestination(ctx context.Context, id, peer string) (DestStatus, error)
	InventoryBackend
	PackageBackend
	CollectBackend
	Bandwidth(ctx context.Context) (Bandwidth, error)
}

// Error is a failed request: the status and what to tell the operator.
type Error struct {
	Status  int    `json:"-"`
	Message string `json:"error"`
}

func (e *Error) Error() string { return e.Message }

// BadRequest wraps a message as a 400 error: the operator's input was wrong.
func BadRequest(format string, args ...any) error {
	return &Error{Status: http.StatusBadRequest, Message: fmt.Sprintf(format, args...)}
}

// Server serves the API on a Unix socket.
type Server struct {
	ln  net.Listener
	srv *http.Server
	log *slog.Logger
}

// Answering reports whether a daemon answers on the socket at path.
func Answering(path string) bool {
	c, err := net.DialTimeout("unix", path, time.Second)
	if err == nil {
		c.Close()
	}
	return err == nil
}

// Listen binds the socket at path, refusing if a daemon already answers there.
func Listen(path string, b Backend, log *slog.Logger) (*Server, error) {
	if Answering(path) {
		return nil, fmt.Errorf("a daemon is already running on %s", path)
	}
	_ = os.Remove(path) // a stale socket from a daemon that died
	ln, err := net.Listen("unix", path)
	if err != nil {
		return nil, fmt.Errorf("listen on control socket: %w", err)
	}
	if err := os.Chmod(path, 0o600); err != nil {
		ln.Close()
		return nil, fmt.Errorf("restrict control socket: %w", err)
	}
	mux := http.NewServeMux()
	handle(mux, "GET /v1/id", func(r *http.Request) (any, error) { return b.ID(r.Context()) })
	handle(mux, "GET /v1/peers", func(r *http.Request) (any, error) { return b.Peers(r.Context()) })
	handle(mux, "GET /v1/tree", func(r *http.Request) (any, error) {
		depth := -1
		if d := r.URL.Query().Get("depth"); d != "" {
			v, err := strconv.Atoi(d)
			if err != nil {
				return nil, BadRequest("depth %q: want a whole number", d)
			}
			depth = v
		}
		return b.Tree(r.Context(), depth)
	})
	handle(mux, "POST /v1/tokens", func(r *http.Request) (any, error) {
		var req TokenRequest
		if err := decode(r, &req); err != nil {
			return nil, err
		}
		return b.CreateToken(r.Context(), req)
	})
	handle(mux, "POST /v1/revocations", func(r *http.Request) (any, error) {
		var req RevokeRequest
		if err := decode(r, &req); err != nil {
			return nil, err
		}
		return b.Revoke(r.Context(), req)
	})
	handle(mux, "POST /v1/admins", func(r *http.Request) (any, error) {
		var req AdminRequest
		if err := decode(r, &req); err != nil {
			return nil, err
		}
		return b.CertifyAdmin(r.Context(), req)
	})
	handle(mux, "POST /v1/jobs", func(r *http.Request) (any, error) {
		var req JobSubmit
		if err := decode(r, &req); err != nil {
			return nil, err
		}
		return b.SubmitJob(r.Context(), req)
	})
	handle(mux, "GET /v1/jobs", func(r *http.Request) (any, error) { return b.ListJobs(r.Context()) })
	handle(mux, "GET /v1/jobs/{id}", func(r *http.Request) (any, error) { return b.ShowJob(r.Context(), r.PathValue("id")) })
	handle(mux, "GET /v1/jobs/{id}/status", func(r *http.Request) (any, error) {
		return b.JobStatus(r.Context(), r.PathValue("id"), r.URL.Query().Get("destinations") == "1")
	})
	handle(mux, "GET /v1/jobs/{id}/destinations/{peer}", func(r *http.Request) (any, error) {
		return b.JobDestination(r.Context(), r.PathValue("id"), r.PathValue("peer"))
	})
	inventoryRoutes(mux, b)
	statsRoutes(mux, b)
	packageRoutes(mux, b)
	collectRoutes(mux, b)
	return &Server{ln: ln, srv: &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}, log: log}, nil
}

func decode(r *http.Request, v any) error {
	dec := json.NewDecoder(http.MaxBytesReader(nil, r.Body, 1<<20))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return BadRequest("request body: %v", err)
	}
	return nil
}

func handle(mux *http.ServeMux, pattern string, f func(*http.Request) (any, error)) {
	mux.HandleFunc(pattern, func(w http.ResponseWriter, r *http.Request) {
		v, err := f(r)
		w.Header().Set("Content-Type", "application/json")
		if err != nil {
			var e *Error
			if !errors.As(err, &e) {
				e = &Error{Status: http.StatusInternalServerError, Message: err.Error()}
			}
			w.WriteHeader(e.Status)
			_ = json.NewEncoder(w).Encode(e)
			return
		}
		_ = json.NewEncoder(w).Encode(v)
	})
}

// Serve answers requests until ctx ends.
func (s *Server) Serve(ctx context.Context) error {
	go func() {
		<-ctx.Done()
		s.Close()
	}()
	if err := s.srv.Serve(s.ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	return nil
}

// Close stops the server and removes its socket.
func (s *Server) Close() {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	_ = s.srv.Shutdown(ctx)
	_ = s.ln.Close()
}
