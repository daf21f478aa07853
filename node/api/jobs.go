package api

import "time"

// AdminRequest asks a managing node to certify an administrator's key.
type AdminRequest struct {
	Name     string `json:"name"`
	PubKey   string `json:"pubkey"` // PEM, as written by 'swdist admin keygen'
	Scope    string `json:"scope"`  // empty: this node
	Lifetime string `json:"lifetime"`
}

// AdminCert is a certified administrator.
type AdminCert struct {
	Name     string    `json:"name"`
	Scope    string    `json:"scope"`
	Issuer   string    `json:"issuer"`
	NotAfter time.Time `json:"not_after"`
	Cert     string    `json:"cert"` // PEM, to give to the administrator
}

// JobSubmit carries a signed manifest.
type JobSubmit struct {
	Manifest []byte `json:"manifest"`
}

// JobCreated is what 'swdist job create' prints.
type JobCreated struct {
	ID      string   `json:"id"`
	Seq     uint64   `json:"seq"`
	Targets []string `json:"targets"`
}

// Job is one entry of 'swdist job ls'.
type Job struct {
	ID          string `json:"id"`
	Type        string `json:"type"`
	Admin       string `json:"admin"`
	Target      string `json:"target"`
	ForThisNode bool   `json:"for_this_node"`
	// State is "held", or "expired" for a job that reached this node only
	// after it expired: it will not run here.
	State     string    `json:"state"`
	CreatedAt time.Time `json:"created_at"`
	ExpiresAt time.Time `json:"expires_at"`
}

// JobDetail is 'swdist job show': the decoded manifest, its signer and scope.
type JobDetail struct {
	ID          string            `json:"id"`
	Seq         uint64            `json:"seq"`
	Type        string            `json:"type"`
	Params      map[string]string `json:"params"`
	Targets     []string          `json:"targets"`
	CreatedAt   time.Time         `json:"created_at"`
	NotBefore   time.Time         `json:"not_before"`
	ExpiresAt   time.Time         `json:"expires_at"`
	Admin       string            `json:"admin"`
	AdminScope  string            `json:"admin_scope"`
	AdminIssuer string            `json:"admin_issuer"`
	PackageCID  string            `json:"package_cid,omitempty"`
	PackageSize uint64            `json:"package_size,omitempty"`
}

// JobStatus is 'swdist job status': where each destination stands.
type JobStatus struct {
	ID string `json:"id"`
	// Expected is the number of destinations this node's view of its
	// subtree holds for the job; those that have not reported yet are
	// counted as "not reported".
	Expected    int             `json:"expected"`
	Counts      map[string]int  `json:"counts"`
	DonePercent float64         `json:"done_percent"`
	Subtrees    []SubtreeStatus `json:"subtrees"`
	Failed      []FailedDest    `json:"failed"`
	// Skipped lists the destinations that skipped the job, and why (a
	// condition not met, a version already installed).
	Skipped []FailedDest `json:"skipped"`
	// Done: every destination is in a final state.
	Done bool `json:"done"`
	// Destinations, when asked for, is each expected destination's state.
	Destinations map[string]string `json:"destinations,omitempty"`
	// Fetching sums the package bytes of the destinations fetching now.
	Fetching *FetchBytes `json:"fetching,omitempty"`
	// Progress, with Destinations, is each fetching destination's bytes.
	Progress map[string]FetchBytes `json:"progress,omitempty"`
}

// FetchBytes is how far fetching destinations got with a job's package:
// bytes held of the total (summed over Destinations).
type FetchBytes struct {
	Destinations int   `json:"destinations"`
	Held         int64 `json:"held_bytes"`
	Total        int64 `json:"total_bytes"`
}

// Add counts one more fetching destination.
func (f *FetchBytes) Add(held, total int64) {
	f.Destinations++
	f.Held += held
	f.Total += total
}

// SubtreeStatus is the status within the subtree of one child of this node.
type SubtreeStatus struct {
	PeerID   string         `json:"peer_id"`
	Expected int            `json:"expected"`
	Counts   map[string]int `json:"counts"`
	// Fetching: the bytes of this subtree's destinations fetching now.
	Fetching *FetchBytes `json:"fetching,omitempty"`
}

// FailedDest is a destination whose run failed.
type FailedDest struct {
	PeerID string `json:"peer_id"`
	Reason string `json:"reason"`
	Exit   int    `json:"exit_code"`
	Output string `json:"output_tail"`
}

// DestStatus is 'swdist job status ID --peer P': where one destination of
// a job stands, what it said last and how it got there.
type DestStatus struct {
	JobID  string `json:"job_id"`
	PeerID string `json:"peer_id"`
	// State is "not reported" for an expected destination that has not.
	State  string    `json:"state"`
	At     time.Time `json:"at"` // of the state, by the destination's clock
	Reason string    `json:"reason"`
	Exit   int       `json:"exit_code"`
	// Output is the tail of what the command or script printed, kept for
	// every run that ended, succeeded or not.
	Output string `json:"output_tail"`
	// Via is the child of this node it reported through (this node's own
	// ID for itself and its offline children it holds the job for).
	Via string `json:"via"`
	// Held and Total, while fetching: bytes of the package held there.
	Held    int64            `json:"held_bytes,omitempty"`
	Total   int64            `json:"total_bytes,omitempty"`
	History []DestTransition `json:"history"`
}

// DestTransition is one move of a destination's state.
type DestTransition struct {
	State  string    `json:"state"`
	At     time.Time `json:"at"`
	Reason string    `json:"reason,omitempty"`
	Exit   int       `json:"exit_code,omitempty"`
	Held   int64     `json:"held_bytes,omitempty"`
	Total  int64     `json:"total_bytes,omitempty"`
}
