package main

// Multi-process tests: the real binary, one process per node, each in its
// own home, talking over loopback; checked through the CLI's --json output.

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/swdist/swdist/hierarchy/tree"
	"github.com/swdist/swdist/node/api"
)

var binary string // built once by TestMain

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "swbin")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	binary = filepath.Join(dir, "swdist")
	if out, err := exec.Command("go", "build", "-o", binary, ".").CombinedOutput(); err != nil {
		fmt.Fprintf(os.Stderr, "build swdist: %v\n%s", err, out)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

type result struct {
	stdout, stderr string
	code           int
}

// cli runs the binary with --home and args, bounded in time.
func cli(t *testing.T, home string, args ...string) result {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, binary, append(args, "--home", home)...)
	var out, errOut bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errOut
	err := cmd.Run()
	code := 0
	if ee, ok := err.(*exec.ExitError); ok {
		code = ee.ExitCode()
	} else if err != nil {
		t.Fatalf("run swdist %v: %v", args, err)
	}
	return result{out.String(), errOut.String(), code}
}

// must runs cli and fails the test unless it exits 0; it decodes --json
// output into v when v is not nil.
func must(t *testing.T, v any, home string, args ...string) {
	t.Helper()
	r := cli(t, home, args...)
	if r.code != 0 {
		t.Fatalf("swdist %v exited %d:\n%s", args, r.code, r.stderr)
	}
	if v != nil {
		if err := json.Unmarshal([]byte(r.stdout), v); err != nil {
			t.Fatalf("swdist %v: output is not JSON: %v\n%s", args, err, r.stdout)
		}
	}
}

// shortDir returns a directory with a path short enough for Unix sockets.
func shortDir(t *testing.T) string {
	t.Helper()
	d, err := os.MkdirTemp("", "sw")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(d) })
	return d
}

// daemon is a running 'swdist run' process.
type daemon struct {
	home string
	cmd  *exec.Cmd
	log  string
	done chan error
}

func startDaemon(t *testing.T, home string) *daemon {
	t.Helper()
	d := &daemon{home: home, log: home + ".log", done: make(chan error, 1)}
	logf, err := os.OpenFile(d.log, os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o644)
	if err != nil {
		t.Fatal(err)
	}
	d.cmd = exec.Command(binary, "run", "--home", home)
	d.cmd.Stdout, d.cmd.Stderr = logf, logf
	dieWithParent(d.cmd) // no daemon outlives a test binary that panics or times out
	if err := d.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { d.done <- d.cmd.Wait(); logf.Close() }()
	// Cleanups run last-in first-out: the log is shown after the stop.
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("log of the daemon for %s:\n%s", home, d.logText())
		}
	})
	t.Cleanup(func() { d.stop(t) })
	deadline := time.Now().Add(20 * time.Second)
	for cli(t, home, "id", "--json").code != 0 {
		if time.Now().After(deadline) {
			t.Fatalf("daemon for %s did not answer within 20 s; log:\n%s", home, d.logText())
		}
		time.Sleep(100 * time.Millisecond)
	}
	return d
}

func (d *daemon) logText() string {
	b, _ := os.ReadFile(d.log)
	return string(b)
}

// stop sends SIGTERM and expects a clean exit; SIGKILL after 10 s.
func (d *daemon) stop(t *testing.T) {
	t.Helper()
	if d.cmd.ProcessState != nil || d.cmd.Process == nil {
		return // already gone (killed by the test)
	}
	_ = d.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case err := <-d.done:
		if err != nil {
			t.Errorf("daemon for %s exited with %v after SIGTERM; log:\n%s", d.home, err, d.logText())
		}
	case <-time.After(10 * time.Second):
		_ = d.cmd.Process.Kill()
		<-d.done
		t.Errorf("daemon for %s ignored SIGTERM for 10 s", d.home)
	}
}

// procTree is server S → relay R → clients C1, C2, one process each.
type procTree struct {
	homes   map[string]string
	ids     map[string]string
	daemons map[string]*daemon
}

var loopbackListen = []string{"--listen", "/ip4/127.0.0.1/tcp/0"}

func buildTree(t *testing.T) *procTree {
	t.Helper()
	dir := shortDir(t)
	p := &procTree{homes: map[string]string{}, ids: map[string]string{}, daemons: map[string]*daemon{}}
	for _, n := range []string{"S", "R", "C1", "C2"} {
		p.homes[n] = filepath.Join(dir, n)
	}
	must(t, nil, p.homes["S"], append([]string{"init", "--role", "server", "--site", "hq", "--json"}, loopbackListen...)...)
	p.start(t, "S")
	var tok api.Token
	must(t, &tok, p.homes["S"], "token", "create", "--role", "relay", "--site", "a", "--json")
	must(t, nil, p.homes["R"], append([]string{"join", tok.Token, "--json"}, loopbackListen...)...)
	p.start(t, "R")
	// C1's token is minted by its parent, C2's by the server for the relay.
	must(t, &tok, p.homes["R"], "token", "create", "--role", "client", "--json")
	must(t, nil, p.homes["C1"], append([]string{"join", tok.Token, "--json"}, loopbackListen...)...)
	must(t, &tok, p.homes["S"], "token", "create", "--role", "client", "--parent", p.ids["R"], "--group", "tills", "--json")
	if tok.Site != "a" {
		t.Errorf("a token for a child of the relay got site %q, want the relay's (a)", tok.Site)
	}
	must(t, nil, p.homes["C2"], append([]string{"join", tok.Token, "--json"}, loopbackListen...)...)
	for _, c := range []string{"C1", "C2"} {
		p.start(t, c)
	}
	p.waitTree(t, 30*time.Second, func(top tree.Node) bool { return top.CountOnline() == 4 })
	return p
}

func (p *procTree) start(t *testing.T, name string) {
	t.Helper()
	p.daemons[name] = startDaemon(t, p.homes[name])
	var id api.ID
	must(t, &id, p.homes[name], "id", "--json")
	p.ids[name] = id.PeerID
}

func (p *procTree) tree(t *testing.T, home string, args ...string) tree.Node {
	t.Helper()
	var top tree.Node
	must(t, &top, home, append([]string{"tree", "--json"}, args...)...)
	return top
}

// waitTree polls the server's tree until cond holds, for at most within.
func (p *procTree) waitTree(t *testing.T, within time.Duration, cond func(tree.Node) bool) tree.Node {
	t.Helper()
	deadline := time.Now().Add(within)
	for {
		top := p.tree(t, p.homes["S"])
		if cond(top) {
			return top
		}
		if time.Now().After(deadline) {
			t.Fatalf("tree never reached the expected state; last:\n%+v", top)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// view is the part of a tree node the tests compare.
type view struct {
	PeerID, Role, Site string
	Online             bool
	ChildrenCount      int
	Children           []view
}

func project(n tree.Node) view {
	v := view{PeerID: n.PeerID, Role: n.Role, Site: n.Site, Online: n.Online, ChildrenCount: n.ChildrenCount}
	for _, c := range n.Children {
		v.Children = append(v.Children, project(c))
	}
	return v
}

// sortByPeer orders siblings by peer ID: the tree's order is not part of
// what these tests check.
var sortByPeer = cmp.Transformer("sortByPeer", func(vs []view) []view {
	out := slices.Clone(vs)
	slices.SortFunc(out, func(a, b view) int { return strings.Compare(a.PeerID, b.PeerID) })
	return out
})

// want is the whole tree, every node online, with the peer IDs that each
// node's 'swdist id' reported.
func (p *procTree) want() view {
	clients := []view{
		{PeerID: p.ids["C1"], Role: "client", Site: "a", Online: true},
		{PeerID: p.ids["C2"], Role: "client", Site: "a", Online: true},
	}
	relay := view{PeerID: p.ids["R"], Role: "relay", Site: "a", Online: true, ChildrenCount: 2, Children: clients}
	return view{PeerID: p.ids["S"], Role: "server", Site: "hq", Online: true, ChildrenCount: 1, Children: []view{relay}}
}

func TestMultiProcessTree(t *testing.T) {
	p := buildTree(t)
	want := p.want()
	if diff := cmp.Diff(want, project(p.tree(t, p.homes["S"])), sortByPeer); diff != "" {
		t.Errorf("server's tree (-want +got):\n%s", diff)
	}
	// --depth 1: the relay with its count, its children not listed.
	shallow := want
	shallow.Children = []view{want.Children[0]}
	shallow.Children[0].Children = nil
	if diff := cmp.Diff(shallow, project(p.tree(t, p.homes["S"], "--depth", "1"))); diff != "" {
		t.Errorf("server's tree, depth 1 (-want +got):\n%s", diff)
	}
	// A relay answers for its own subtree.
	if diff := cmp.Diff(want.Children[0], project(p.tree(t, p.homes["R"])), sortByPeer); diff != "" {
		t.Errorf("relay's tree (-want +got):\n%s", diff)
	}
	var peers []api.Peer
	must(t, &peers, p.homes["R"], "peers", "--json")
	rel := map[string]string{}
	for _, pr := range peers {
		rel[pr.PeerID] = pr.Relation
	}
	if diff := cmp.Diff(map[string]string{p.ids["S"]: "parent", p.ids["C1"]: "child", p.ids["C2"]: "child"}, rel); diff != "" {
		t.Errorf("relay's peers (-want +got):\n%s", diff)
	}
	var id api.ID
	must(t, &id, p.homes["C2"], "id", "--json")
	if id.Parent != p.ids["R"] || id.Role != "client" || id.Site != "a" || !cmp.Equal(id.Groups, []string{"tills"}) {
		t.Errorf("C2's id: %+v", id)
	}
	// A second daemon on a home whose daemon runs refuses to start, and
	// the first one keeps answering.
	if r := cli(t, p.homes["R"], "run"); r.code != 1 || !strings.Contains(r.stderr, "already running") {
		t.Errorf("second daemon on R's home: exit %d, stderr:\n%s", r.code, r.stderr)
	}
	must(t, &id, p.homes["R"], "id", "--json")
	if id.PeerID != p.ids["R"] {
		t.Errorf("R's id after a second daemon tried its home: %+v", id)
	}
}

// TestRelayRestart stops the relay, keeps it down while its clients try
// their parent in vain, and starts it again on the same home: its clients
// reconnect by themselves, with the default backoff. SIGTERM is an
// operator's stop (the relay must exit 0); SIGKILL leaves a stale control
// socket and a database that was not closed.
func TestRelayRestart(t *testing.T) {
	for _, tc := range []struct {
		name string
		sig  syscall.Signal
	}{{"SIGTERM", syscall.SIGTERM}, {"SIGKILL", syscall.SIGKILL}} {
		t.Run(tc.name, func(t *testing.T) {
			p := buildTree(t)
			d := p.daemons["R"]
			if tc.sig == syscall.SIGTERM {
				d.stop(t) // fails the test unless it exits 0 within 10 s
			} else {
				if err := d.cmd.Process.Kill(); err != nil {
					t.Fatal(err)
				}
				<-d.done
			}
			p.waitTree(t, 30*time.Second, func(top tree.Node) bool {
				return len(top.Children) == 1 && !top.Children[0].Online && !top.Children[0].LastSeen.IsZero()
			})
			for _, c := range []string{"C1", "C2"} {
				waitNoParent(t, p.homes[c])
			}
			// Down long enough for a few failed redials at the default backoff.
			time.Sleep(3 * time.Second)
			p.start(t, "R")
			p.waitTree(t, 60*time.Second, func(top tree.Node) bool { return top.CountOnline() == 4 })
			if diff := cmp.Diff(p.want(), project(p.tree(t, p.homes["S"])), sortByPeer); diff != "" {
				t.Errorf("server's tree after the restart (-want +got):\n%s", diff)
			}
		})
	}
}

// waitNoParent waits until the node in home has no connection to its parent.
func waitNoParent(t *testing.T, home string) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for {
		var peers []api.Peer
		must(t, &peers, home, "peers", "--json")
		if !slices.ContainsFunc(peers, func(pr api.Peer) bool { return pr.Relation == "parent" }) {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s still lists its parent: %+v", home, peers)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func TestCLIErrors(t *testing.T) {
	dir := shortDir(t)
	empty := filepath.Join(dir, "empty")
	// A server whose daemon is not running, and a node home to corrupt.
	stopped := filepath.Join(dir, "stopped")
	must(t, nil, stopped, append([]string{"init", "--role", "server", "--site", "hq"}, loopbackListen...)...)

	cases := []struct {
		name     string
		home     string
		args     []string
		setup    func(t *testing.T)
		wantCode int
		wantErr  []string
	}{
		{name: "unknown command", home: empty, args: []string{"frobnicate"}, wantCode: 2, wantErr: []string{"unknown command"}},
		{name: "init without role", home: empty, args: []string{"init", "--site", "x"}, wantCode: 2, wantErr: []string{"--role"}},
		{name: "unknown flag", home: empty, args: []string{"tree", "--deep"}, wantCode: 2, wantErr: []string{"unknown flag"}},
		{name: "daemon not running", home: stopped, args: []string{"token", "create", "--role", "client"}, wantCode: 1,
			wantErr: []string{"not running", "swdist run"}},
		{name: "no node in the home", home: empty, args: []string{"id"}, wantCode: 1, wantErr: []string{"swdist init"}},
		{name: "garbage token", home: filepath.Join(dir, "g"), args: []string{"join", "swdist-join-AAAA"}, wantCode: 1,
			wantErr: []string{"invalid join token"}},
		{name: "not a token", home: filepath.Join(dir, "g2"), args: []string{"join", "hello"}, wantCode: 1,
			wantErr: []string{"invalid join token", "swdist token create"}},
		{name: "run --db of another database", home: filepath.Join(dir, "db"), args: []string{"run", "--db", "mysql://u:secret@x/y"}, wantCode: 2,
			wantErr: []string{`"mysql://u:xxxxx@x/y"`, "mysql: is not a database", "sqlite:PATH", "postgres://USER@HOST/DB"},
			setup: func(t *testing.T) {
				must(t, nil, filepath.Join(dir, "db"), append([]string{"init", "--role", "server", "--site", "hq"}, loopbackListen...)...)
			}},
		{name: "corrupt config", home: stopped, args: []string{"run"}, wantCode: 1,
			wantErr: []string{filepath.Join(stopped, "config.toml"), "line 1"},
			setup:   func(t *testing.T) { writeFile(t, filepath.Join(stopped, "config.toml"), "role = [\n", 0o644) }},
		{name: "world-readable key", home: filepath.Join(dir, "k"), args: []string{"run"}, wantCode: 1,
			wantErr: []string{"chmod 600 " + filepath.Join(dir, "k", "keys", "node.pem")},
			setup: func(t *testing.T) {
				home := filepath.Join(dir, "k")
				must(t, nil, home, append([]string{"init", "--role", "server", "--site", "hq"}, loopbackListen...)...)
				if err := os.Chmod(filepath.Join(home, "keys", "node.pem"), 0o644); err != nil {
					t.Fatal(err)
				}
			}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			if tc.setup != nil {
				tc.setup(t)
			}
			r := cli(t, tc.home, tc.args...)
			if r.code != tc.wantCode {
				t.Errorf("exit %d, want %d; stderr:\n%s", r.code, tc.wantCode, r.stderr)
			}
			for _, w := range tc.wantErr {
				if !strings.Contains(r.stderr, w) {
					t.Errorf("stderr does not mention %q:\n%s", w, r.stderr)
				}
			}
			if tc.wantCode != 0 && strings.HasPrefix(tc.args[0], "join") {
				if _, err := os.Stat(filepath.Join(tc.home, "config.toml")); err == nil {
					t.Error("a failed join wrote config.toml")
				}
			}
		})
	}
}

// TestTokens: a token is good once, and not after it expires.
func TestTokens(t *testing.T) {
	dir := shortDir(t)
	s := filepath.Join(dir, "S")
	must(t, nil, s, append([]string{"init", "--role", "server", "--site", "hq"}, loopbackListen...)...)
	startDaemon(t, s)
	var tok api.Token
	must(t, &tok, s, "token", "create", "--role", "client", "--json")
	must(t, nil, filepath.Join(dir, "a"), append([]string{"join", tok.Token}, loopbackListen...)...)
	r := cli(t, filepath.Join(dir, "b"), append([]string{"join", tok.Token}, loopbackListen...)...)
	if r.code != 1 || !strings.Contains(r.stderr, "already used") {
		t.Errorf("second use: exit %d, stderr:\n%s", r.code, r.stderr)
	}
	must(t, &tok, s, "token", "create", "--role", "client", "--ttl", "1s", "--json")
	time.Sleep(2100 * time.Millisecond)
	r = cli(t, filepath.Join(dir, "c"), append([]string{"join", tok.Token}, loopbackListen...)...)
	if r.code != 1 || !strings.Contains(r.stderr, "expired") {
		t.Errorf("expired token: exit %d, stderr:\n%s", r.code, r.stderr)
	}
	for _, h := range []string{"b", "c"} {
		if _, err := os.Stat(filepath.Join(dir, h, "config.toml")); err == nil {
			t.Errorf("refused join wrote home %s", h)
		}
	}
}

// waitStatus polls 'job status' on home until cond holds, bounded.
func waitStatus(t *testing.T, home, id, what string, cond func(api.JobStatus) bool) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		var st api.JobStatus
		must(t, &st, home, "job", "status", id, "--json")
		if cond(st) {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting until %s: %+v", what, st)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func writeFile(t *testing.T, path, content string, mode os.FileMode) {
	t.Helper()
	if err := os.WriteFile(path, []byte(content), mode); err != nil {
		t.Fatal(err)
	}
}

// TestJobsCLI drives admin keys and jobs through the real binary: keygen on
// the admin's side, certification on the server, a signed job submitted
// directly and one signed offline then submitted, and the errors.
func TestJobsCLI(t *testing.T) {
	p := buildTree(t)
	dir := shortDir(t)
	key := filepath.Join(dir, "alice.key")
	must(t, nil, p.homes["S"], "admin", "keygen", "--out", key)
	if fi, err := os.Stat(key); err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("admin key: %v, mode %v", err, fi.Mode())
	}
	var adm api.AdminCert
	must(t, &adm, p.homes["S"], "admin", "add", "--name", "alice", "--pubkey", key+".pub", "--out", key+".cert", "--json")
	if adm.Scope != p.ids["S"] {
		t.Errorf("admin scope %s, want the server %s", adm.Scope, p.ids["S"])
	}
	var created api.JobCreated
	must(t, &created, p.homes["S"], "job", "create", "--type", "run", "--command", "uname -a", "--target", "role=client",
		"--sign-key", key, "--json")
	if !cmp.Equal(created.Targets, []string{"role=client"}) || created.ID == "" {
		t.Errorf("job create: %+v", created)
	}
	// Signed offline, submitted later.
	file := filepath.Join(dir, "job.swj")
	var offline api.JobCreated
	must(t, &offline, p.homes["S"], "job", "create", "--type", "run", "--command", "true", "--target", "peer="+p.ids["C2"],
		"--sign-key", key, "--out", file, "--json")
	if offline.Seq <= created.Seq {
		t.Errorf("sequence numbers %d then %d: not increasing", created.Seq, offline.Seq)
	}
	must(t, nil, p.homes["S"], "job", "submit", file)
	want := map[string][]string{"C1": {created.ID}, "C2": {offline.ID, created.ID}}
	for name, ids := range want {
		deadline := time.Now().Add(20 * time.Second)
		for {
			var jobs []api.Job
			must(t, &jobs, p.homes[name], "job", "ls", "--json")
			var got []string
			for _, j := range jobs {
				if j.ForThisNode && j.State == "held" {
					got = append(got, j.ID)
				}
			}
			// In any order: the two may reach C2 either way round.
			slices.Sort(got)
			if cmp.Equal(got, slices.Sorted(slices.Values(ids))) {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("%s holds %v, want %v", name, got, ids)
			}
			time.Sleep(100 * time.Millisecond)
		}
	}
	// The clients run it ("uname -a") and report up: the server counts.
	deadline := time.Now().Add(20 * time.Second)
	for {
		var st api.JobStatus
		must(t, &st, p.homes["S"], "job", "status", created.ID, "--json")
		if st.Expected == 2 && st.Counts["succeeded"] == 2 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("job status at the server: %+v", st)
		}
		time.Sleep(100 * time.Millisecond)
	}
	// --watch ends when every destination is done: a line per change when
	// not on a terminal, a JSON document per change with --json.
	if r := cli(t, p.homes["S"], "job", "status", created.ID, "--watch"); r.code != 0 || !strings.Contains(r.stdout, "100% of 2 done: succeeded 2") {
		t.Errorf("job status --watch: exit %d\n%s%s", r.code, r.stdout, r.stderr)
	}
	r := cli(t, p.homes["S"], "job", "status", created.ID, "--watch", "--json")
	var last api.JobStatus
	if r.code != 0 || json.Unmarshal([]byte(r.stdout[strings.LastIndex(r.stdout, "\n{")+1:]), &last) != nil || !last.Done {
		t.Errorf("job status --watch --json: exit %d, last %+v\n%s", r.code, last, r.stdout)
	}
	// The tree with each node's state for the job: the relay holds the
	// one under it; the clients succeeded; the server is no destination.
	var tj struct {
		Tree tree.Node     `json:"tree"`
		Job  api.JobStatus `json:"job"`
	}
	must(t, &tj, p.homes["R"], "tree", "--job", created.ID, "--json")
	if tj.Job.Destinations[p.ids["C1"]] != "succeeded" || tj.Job.Destinations[p.ids["C2"]] != "succeeded" || len(tj.Job.Destinations) != 2 || !tj.Job.Done {
		t.Errorf("tree --job on the relay: %+v", tj.Job)
	}
	if r := cli(t, p.homes["S"], "tree", "--job", created.ID); r.code != 0 || !strings.Contains(r.stdout, "succeeded") {
		t.Errorf("tree --job: exit %d\n%s%s", r.code, r.stdout, r.stderr)
	}
	// One destination, by the part of its ID that 'job status' shows: the
	// output of "uname -a", which succeeded, reached the server.
	uname, _ := exec.Command("uname", "-s").Output()
	var ds api.DestStatus
	must(t, &ds, p.homes["S"], "job", "status", created.ID, "--peer", p.ids["C1"][len(p.ids["C1"])-10:], "--json")
	if ds.PeerID != p.ids["C1"] || ds.State != "succeeded" || !strings.Contains(ds.Output, strings.TrimSpace(string(uname))) ||
		ds.Via != p.ids["R"] || len(ds.History) < 3 {
		t.Errorf("job status --peer C1 --json at the server: %+v", ds)
	}
	if r := cli(t, p.homes["S"], "job", "status", created.ID, "--peer", "…"+p.ids["C2"][len(p.ids["C2"])-10:]); r.code != 0 ||
		!strings.Contains(r.stdout, "Output (tail):\n"+strings.TrimSpace(string(uname))) || !strings.Contains(r.stdout, "running") {
		t.Errorf("job status --peer C2: exit %d\n%s%s", r.code, r.stdout, r.stderr)
	}
	if r := cli(t, p.homes["S"], "job", "status", created.ID, "--peer", p.ids["S"]); r.code != 1 || !strings.Contains(r.stderr, "is not a destination") {
		t.Errorf("job status --peer (the server, no destination): exit %d\n%s", r.code, r.stderr)
	}
	if r := cli(t, p.homes["S"], "job", "status", created.ID, "--peer", "x", "--watch"); r.code != 2 {
		t.Errorf("job status --peer --watch: exit %d, want 2\n%s", r.code, r.stderr)
	}
	// A job for an hour from now is cancelled where it waits.
	var later api.JobCreated
	must(t, &later, p.homes["S"], "job", "create", "--type", "run", "--command", "true", "--target", "peer="+p.ids["C1"],
		"--not-before", "1h", "--expires", "2h", "--sign-key", key, "--json")
	waitStatus(t, p.homes["S"], later.ID, "C1 waits for the job's time", func(s api.JobStatus) bool { return s.Counts["scheduled"] == 1 })
	must(t, nil, p.homes["S"], "job", "cancel", later.ID, "--sign-key", key)
	waitStatus(t, p.homes["S"], later.ID, "C1 cancelled it", func(s api.JobStatus) bool { return s.Counts["cancelled"] == 1 && s.Done })

	// A job that fails on both clients is retried on both, as a new job.
	var bad, retried api.JobCreated
	must(t, &bad, p.homes["S"], "job", "create", "--type", "run", "--command", "exit 3", "--target", "role=client", "--sign-key", key, "--json")
	waitStatus(t, p.homes["S"], bad.ID, "both clients failed", func(s api.JobStatus) bool { return s.Counts["failed"] == 2 })
	must(t, &retried, p.homes["S"], "job", "retry", bad.ID, "--sign-key", key, "--json")
	if retried.ID == bad.ID || len(retried.Targets) != 1 || !strings.Contains(retried.Targets[0], p.ids["C1"]) || !strings.Contains(retried.Targets[0], p.ids["C2"]) {
		t.Errorf("retry: %+v", retried)
	}
	waitStatus(t, p.homes["S"], retried.ID, "the retry ran on both", func(s api.JobStatus) bool { return s.Expected == 2 && s.Counts["failed"] == 2 })
	if r := cli(t, p.homes["S"], "job", "retry", created.ID, "--sign-key", key); r.code != 1 || !strings.Contains(r.stderr, "failed nowhere") {
		t.Errorf("retry of a job that failed nowhere: exit %d, %s", r.code, r.stderr)
	}

	// A package added on the server, installed on both clients through the
	// relay, shows in the server's inventory.
	src := filepath.Join(dir, "pkgsrc")
	if err := os.MkdirAll(src, 0o755); err != nil {
		t.Fatal(err)
	}
	writeFile(t, filepath.Join(src, "tool.sh"), "#!/bin/sh\necho tool\n", 0o755)
	must(t, nil, p.homes["S"], "package", "add", src, "--name", "tool", "--version", "1.0")
	var inst api.JobCreated
	must(t, &inst, p.homes["S"], "job", "create", "--type", "install", "--package", "tool@1.0", "--script", "./tool.sh",
		"--target", "role=client", "--sign-key", key, "--json")
	waitStatus(t, p.homes["S"], inst.ID, "both clients installed tool", func(s api.JobStatus) bool { return s.Counts["succeeded"] == 2 })
	if _, err := os.Stat(filepath.Join(p.homes["C2"], "installed", "tool", "1.0", "tool.sh")); err != nil {
		t.Errorf("C2 has no tool installed: %v", err)
	}

	// A collect job brings a file from both clients to the server, which
	// writes each client's copy under its own directory.
	log := filepath.Join(dir, "logs", "app.log")
	if err := os.MkdirAll(filepath.Dir(log), 0o755); err != nil {
		t.Fatal(err)
	}
	writeFile(t, log, "started\nall well\n", 0o640)
	var col api.JobCreated
	must(t, &col, p.homes["S"], "job", "create", "--type", "collect", "--path", filepath.Join(dir, "logs", "*.log"), "--max-size", "1M",
		"--target", "role=client", "--sign-key", key, "--json")
	waitStatus(t, p.homes["S"], col.ID, "both clients collected", func(s api.JobStatus) bool { return s.Counts["succeeded"] == 2 })
	var files api.JobFiles
	out := filepath.Join(dir, "collected")
	must(t, &files, p.homes["S"], "job", "files", col.ID, "--out", out, "--json")
	if len(files.Peers) != 2 || len(files.Written) != 2 {
		t.Errorf("job files: %+v", files)
	}
	for _, e := range files.Peers {
		got, err := os.ReadFile(filepath.Join(out, e.Dir, strings.TrimPrefix(log, "/")))
		if e.State != "collected" || e.Files != 1 || err != nil || string(got) != "started\nall well\n" {
			t.Errorf("%s: %+v: %q, %v", e.PeerID, e, got, err)
		}
	}
	if r := cli(t, p.homes["S"], "job", "files", inst.ID); r.code != 1 || !strings.Contains(r.stderr, "only collect jobs") {
		t.Errorf("job files of an install job: exit %d, %s", r.code, r.stderr)
	}
	if r := cli(t, p.homes["S"], "job", "create", "--type", "collect", "--path", "logs/*.log", "--target", "all", "--sign-key", key); r.code != 2 || !strings.Contains(r.stderr, "absolute") {
		t.Errorf("collect of a relative path: exit %d, %s", r.code, r.stderr)
	}

	var d api.JobDetail
	must(t, &d, p.homes["C1"], "job", "show", created.ID, "--json")
	if d.Admin != "alice" || d.AdminScope != p.ids["S"] || d.Params["command"] != "uname -a" || d.Type != "run" {
		t.Errorf("job show: %+v", d)
	}
	for _, tc := range []struct {
		name string
		home string
		args []string
		code int
		msg  string
	}{
		{"no key", p.homes["S"], []string{"job", "create", "--type", "run", "--command", "x", "--target", "all"}, 2, "--sign-key"},
		{"bad target", p.homes["S"], []string{"job", "create", "--type", "run", "--command", "x", "--target", "colour=red", "--sign-key", key}, 2, "unknown key"},
		{"unknown type", p.homes["S"], []string{"job", "create", "--type", "reboot", "--target", "all", "--sign-key", key}, 2, "available: run, install, uninstall, transfer, delete, inventory"},
		{"install without package", p.homes["S"], []string{"job", "create", "--type", "install", "--target", "all", "--sign-key", key}, 2, "--package"},
		{"install of an unknown package", p.homes["S"], []string{"job", "create", "--type", "install", "--package", "nope@1", "--target", "all", "--sign-key", key}, 1, "no such package"},
		{"bad window", p.homes["S"], []string{"job", "create", "--type", "run", "--command", "x", "--target", "all", "--sign-key", key, "--window", "nightly"}, 2, "HH:MM-HH:MM"},
		{"spread past expiry", p.homes["S"], []string{"job", "create", "--type", "run", "--command", "x", "--target", "all", "--sign-key", key, "--spread", "48h"}, 2, "--spread"},
		{"submitted to a client", p.homes["C1"], []string{"job", "submit", file}, 1, "client"},
		{"unknown job", p.homes["C1"], []string{"job", "show", "00000000000000000000000000000000"}, 1, "no job"},
	} {
		r := cli(t, tc.home, tc.args...)
		if r.code != tc.code || !strings.Contains(r.stderr, tc.msg) {
			t.Errorf("%s: exit %d, stderr %q; want exit %d mentioning %q", tc.name, r.code, r.stderr, tc.code, tc.msg)
		}
	}
}

// TestKilledRelayGetsGossip: a relay killed with SIGKILL leaves its parent
// holding a QUIC connection that nothing closes until its idle timeout. When
// the relay comes back and dials again, the parent drops that stale
// connection, so that the next job reaches the relay and its client by
// gossip at once, not at the next catch-up a minute later.
func TestKilledRelayGetsGossip(t *testing.T) {
	dir := shortDir(t)
	quic := []string{"--listen", "/ip4/127.0.0.1/tcp/0", "--listen", "/ip4/127.0.0.1/udp/0/quic-v1"}
	homes := map[string]string{"S": filepath.Join(dir, "S"), "R": filepath.Join(dir, "R"), "C": filepath.Join(dir, "C")}
	must(t, nil, homes["S"], append([]string{"init", "--role", "server", "--site", "hq"}, quic...)...)
	startDaemon(t, homes["S"])
	var tok api.Token
	must(t, &tok, homes["S"], "token", "create", "--role", "relay", "--site", "a", "--json")
	// The relay listens on TCP only, so that its client links over TCP,
	// which tells the client at once that its relay died (over QUIC it
	// would find out at the idle timeout); the relay itself dials the
	// server over QUIC.
	must(t, nil, homes["R"], append([]string{"join", tok.Token}, loopbackListen...)...)
	r := startDaemon(t, homes["R"])
	must(t, &tok, homes["R"], "token", "create", "--role", "client", "--json")
	must(t, nil, homes["C"], append([]string{"join", tok.Token}, loopbackListen...)...)
	startDaemon(t, homes["C"])
	online := func(n int) func(tree.Node) bool { return func(top tree.Node) bool { return top.CountOnline() == n } }
	waitView(t, homes["S"], online(3))
	key := filepath.Join(dir, "alice.key")
	must(t, nil, homes["S"], "admin", "keygen", "--out", key)
	must(t, nil, homes["S"], "admin", "add", "--name", "alice", "--pubkey", key+".pub", "--out", key+".cert")

	if err := r.cmd.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	<-r.done
	startDaemon(t, homes["R"])
	waitView(t, homes["S"], online(3))
	var created api.JobCreated
	must(t, &created, homes["S"], "job", "create", "--type", "run", "--command", "true", "--target", "role=client",
		"--sign-key", key, "--json")
	// Within 10 s: the stale connection's idle timeout is 30 s, the
	// catch-up about a minute.
	deadline := time.Now().Add(10 * time.Second)
	for {
		var jobs []api.Job
		must(t, &jobs, homes["C"], "job", "ls", "--json")
		if slices.ContainsFunc(jobs, func(j api.Job) bool { return j.ID == created.ID }) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the client did not get the job by gossip within 10 s of its relay's restart")
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// waitView waits until the tree seen from home meets cond.
func waitView(t *testing.T, home string, cond func(tree.Node) bool) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		var top tree.Node
		must(t, &top, home, "tree", "--json")
		if cond(top) {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("the tree seen from %s: %+v", home, top)
		}
		time.Sleep(100 * time.Millisecond)
	}
}
