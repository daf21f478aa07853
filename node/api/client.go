package api

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"syscall"

	"github.com/swdist/swdist/hierarchy/tree"
)

// ErrNotRunning says no daemon answers on the socket.
var ErrNotRunning = errors.New("the swdist daemon is not running")

// Client calls a node's control API.
type Client struct {
	socket string
	http   *http.Client
}

// NewClient makes a client for the socket at path.
func NewClient(path string) *Client {
	return &Client{socket: path, http: &http.Client{Transport: &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, "unix", path)
		},
	}}}
}

func (c *Client) do(ctx context.Context, method, path string, in, out any) error {
	var body io.Reader
	if in != nil {
		data, err := json.Marshal(in)
		if err != nil {
			return err
		}
		body = bytes.NewReader(data)
	}
	req, err := http.NewRequestWithContext(ctx, method, "http://swdist"+path, body)
	if err != nil {
		return err
	}
	resp, err := c.http.Do(req)
	if err != nil {
		if errors.Is(err, syscall.ENOENT) || errors.Is(err, syscall.ECONNREFUSED) {
			return fmt.Errorf("%w (no answer on %s)", ErrNotRunning, c.socket)
		}
		return fmt.Errorf("call the daemon: %w", err)
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(io.LimitReader(resp.Body, 64<<20))
	if err != nil {
		return fmt.Errorf("read the daemon's answer: %w", err)
	}
	if resp.StatusCode != http.StatusOK {
		e := &Error{Status: resp.StatusCode}
		if json.Unmarshal(data, e) != nil || e.Message == "" {
			e.Message = fmt.Sprintf("daemon answered %s", resp.Status)
		}
		return e
	}
	if err := json.Unmarshal(data, out); err != nil {
		return fmt.Errorf("decode the daemon's answer: %w", err)
	}
	return nil
}

// Raw returns the JSON document of a GET, as the daemon sent it.
func (c *Client) Raw(ctx context.Context, path string) (json.RawMessage, error) {
	var out json.RawMessage
	return out, c.do(ctx, http.MethodGet, path, nil, &out)
}

// ID calls GET /v1/id.
func (c *Client) ID(ctx context.Context) (ID, error) {
	var out ID
	return out, c.do(ctx, http.MethodGet, "/v1/id", nil, &out)
}

// Peers calls GET /v1/peers.
func (c *Client) Peers(ctx context.Context) ([]Peer, error) {
	var out []Peer
	return out, c.do(ctx, http.MethodGet, "/v1/peers", nil, &out)
}

// Tree calls GET /v1/tree.
func (c *Client) Tree(ctx context.Context, depth int) (tree.Node, error) {
	var out tree.Node
	q := url.Values{"depth": {strconv.Itoa(depth)}}
	return out, c.do(ctx, http.MethodGet, "/v1/tree?"+q.Encode(), nil, &out)
}

// CreateToken calls POST /v1/tokens.
func (c *Client) CreateToken(ctx context.Context, req TokenRequest) (Token, error) {
	var out Token
	return out, c.do(ctx, http.MethodPost, "/v1/tokens", req, &out)
}

// Revoke calls POST /v1/revocations.
func (c *Client) Revoke(ctx context.Context, req RevokeRequest) (Revocation, error) {
	var out Revocation
	return out, c.do(ctx, http.MethodPost, "/v1/revocations", req, &out)
}

// CertifyAdmin calls POST /v1/admins.
func (c *Client) CertifyAdmin(ctx context.Context, req AdminRequest) (AdminCert, error) {
	var out AdminCert
	return out, c.do(ctx, http.MethodPost, "/v1/admins", req, &out)
}

// SubmitJob calls POST /v1/jobs.
func (c *Client) SubmitJob(ctx context.Context, req JobSubmit) (JobCreated, error) {
	var out JobCreated
	return out, c.do(ctx, http.MethodPost, "/v1/jobs", req, &out)
}

// ListJobs calls GET /v1/jobs.
func (c *Client) ListJobs(ctx context.Context) ([]Job, error) {
	var out []Job
	return out, c.do(ctx, http.MethodGet, "/v1/jobs", nil, &out)
}

// ShowJob calls GET /v1/jobs/{id}.
func (c *Client) ShowJob(ctx context.Context, id string) (JobDetail, error) {
	var out JobDetail
	return out, c.do(ctx, http.MethodGet, "/v1/jobs/"+url.PathEscape(id), nil, &out)
}

// JobDestination calls GET /v1/jobs/{id}/destinations/{peer}.
func (c *Client) JobDestination(ctx context.Context, id, peer string) (DestStatus, error) {
	var out DestStatus
	return out, c.do(ctx, http.MethodGet, "/v1/jobs/"+url.PathEscape(id)+"/destinations/"+url.PathEscape(peer), nil, &out)
}

// JobStatus calls GET /v1/jobs/{id}/status.
func (c *Client) JobStatus(ctx context.Context, id string, destinations bool) (JobStatus, error) {
	var out JobStatus
	q := ""
	if destinations {
		q = "?destinations=1"
	}
	return out, c.do(ctx, http.MethodGet, "/v1/jobs/"+url.PathEscape(id)+"/status"+q, nil, &out)
}
