package main

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/swdist/swdist/node"
	"github.com/swdist/swdist/node/api"
)

// demoCollects is how many machines the demo's collect job targets.
const demoCollects = 3

// demoCollect has alice collect a small log file from site c's clients:
// each archives it and reports its root up, the server fetches the files
// through relay-a and relay-c, and 'swdist job files' writes them out.
func (a *app) demoCollect(ctx context.Context, dir string, nodes map[string]*node.Node, say func(string, ...any)) (api.JobFiles, error) {
	logs := filepath.Join(dir, "var-log-shop")
	if err := os.MkdirAll(logs, 0o755); err != nil {
		return api.JobFiles{}, err
	}
	if err := os.WriteFile(filepath.Join(logs, "till.log"), []byte("09:00 till opened\n09:02 sale 4.20\n"), 0o644); err != nil {
		return api.JobFiles{}, err
	}
	server := nodes["server"]
	f := jobFlags{typ: "collect", paths: []string{filepath.Join(logs, "*.log")}, maxSize: "1M", expires: time.Hour,
		targets: []string{"site=c", "role=client"}, signKey: filepath.Join(dir, "alice.key")}
	st, m, err := demoSubmit(ctx, server, f, demoCollects)
	if err != nil {
		return api.JobFiles{}, err
	}
	say("\nAlice collects %s from %s (job %s, 'swdist job create --type collect --path ...'): %s.",
		f.paths[0], m.Target, short(m.JobID), statusLine(st))
	jf, err := server.JobFiles(ctx, m.JobID, true)
	if err != nil {
		return jf, err
	}
	out := filepath.Join(dir, "collected")
	if jf.Written, err = node.WriteJobFiles(ctx, filepath.Join(dir, "server", "blocks"), jf, out); err != nil {
		return jf, err
	}
	jf.Out = out
	say("The server fetched them through the relays ('swdist job files %s --out %s'):\n", short(m.JobID), out)
	if !a.json {
		printJobFiles(a.out, jf)
	}
	if len(jf.Written) != demoCollects {
		return jf, fmt.Errorf("the demo's collect job: %d of %d destinations' files written", len(jf.Written), demoCollects)
	}
	return jf, nil
}
