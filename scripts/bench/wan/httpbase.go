package main

import (
	"bufio"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"time"
)

// serveHTTP is 'wan serve-http -addr A -file F': Go's file server for one
// file, in the server's namespace. It prints "ready" once it listens.
func serveHTTP(args []string) error {
	fs := flag.NewFlagSet("serve-http", flag.ExitOnError)
	addr := fs.String("addr", "", "listen address")
	file := fs.String("file", "", "the file to serve")
	_ = fs.Parse(args)
	ln, err := net.Listen("tcp", *addr)
	if err != nil {
		return err
	}
	name := "/" + filepath.Base(*file)
	fmt.Println("ready")
	return http.Serve(ln, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != name {
			http.NotFound(w, r)
			return
		}
		http.ServeFile(w, r, *file)
	}))
}

type got struct {
	Bytes   int64   `json:"bytes"`
	Seconds float64 `json:"seconds"`
}

// getHTTP is 'wan get-http -url U -sha256 H': downloads U, checks its
// digest and prints what it got (JSON).
func getHTTP(args []string) error {
	fs := flag.NewFlagSet("get-http", flag.ExitOnError)
	u := fs.String("url", "", "what to fetch")
	sum := fs.String("sha256", "", "the digest it must have")
	timeout := fs.Duration("timeout", 10*time.Minute, "give up after this long")
	_ = fs.Parse(args)
	ctx, cancel := context.WithTimeout(context.Background(), *timeout)
	defer cancel()
	start := time.Now()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, *u, nil)
	if err != nil {
		return err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("GET %s: %s", *u, resp.Status)
	}
	h := sha256.New()
	n, err := io.Copy(h, resp.Body)
	if err != nil {
		return err
	}
	if d := hex.EncodeToString(h.Sum(nil)); d != *sum {
		return fmt.Errorf("GET %s: digest %s, want %s", *u, d, *sum)
	}
	return json.NewEncoder(os.Stdout).Encode(got{Bytes: n, Seconds: time.Since(start).Seconds()})
}

type httpResult struct {
	last, first, median time.Duration
	up                  uplinks
}

// httpBaseline serves file from the server's namespace and has every
// client download it at once: time to the last client, and the uplinks'
// bytes.
func httpBaseline(ctx context.Context, t *topo, c *cluster, l *ledger, file, digest string) (httpResult, error) {
	self, err := os.Executable()
	if err != nil {
		return httpResult{}, err
	}
	addr := t.serverIP() + ":8080"
	srv := exec.Command("ip", "netns", "exec", t.server, self, "serve-http", "-addr", addr, "-file", file)
	srv.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	srv.Stderr = os.Stderr
	out, err := srv.StdoutPipe()
	if err != nil {
		return httpResult{}, err
	}
	if err := srv.Start(); err != nil {
		return httpResult{}, err
	}
	l.add("pid", fmt.Sprint(srv.Process.Pid))
	defer func() { _ = srv.Process.Signal(syscall.SIGTERM); _ = srv.Wait() }()
	line, err := bufio.NewReader(out).ReadString('\n')
	if err != nil || strings.TrimSpace(line) != "ready" {
		return httpResult{}, fmt.Errorf("HTTP server in %s did not start: %q %v", t.server, line, err)
	}
	before, err := t.readUplinks(ctx)
	if err != nil {
		return httpResult{}, err
	}
	clients := c.allClients()
	type end struct {
		name string
		at   time.Duration
		err  error
	}
	ends := make(chan end, len(clients))
	url := "http://" + addr + "/" + filepath.Base(file)
	start := time.Now()
	for _, cl := range clients {
		cmd := exec.CommandContext(ctx, "ip", "netns", "exec", cl.ns, self, "get-http", "-url", url, "-sha256", digest)
		cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
		var stderr strings.Builder
		cmd.Stderr = &stderr
		if err := cmd.Start(); err != nil {
			return httpResult{}, err
		}
		l.add("pid", fmt.Sprint(cmd.Process.Pid))
		go func() {
			err := cmd.Wait()
			if err != nil {
				err = fmt.Errorf("%s: %v: %s", cl.name, err, strings.TrimSpace(stderr.String()))
			}
			ends <- end{name: cl.name, at: time.Since(start), err: err}
		}()
	}
	var times []time.Duration
	var errs []string
	for range clients {
		e := <-ends
		if e.err != nil {
			errs = append(errs, e.err.Error())
			continue
		}
		times = append(times, e.at)
	}
	if len(errs) > 0 {
		return httpResult{}, fmt.Errorf("HTTP downloads failed: %s", strings.Join(errs, "; "))
	}
	after, err := t.readUplinks(ctx)
	if err != nil {
		return httpResult{}, err
	}
	first, median, last := spread(times)
	return httpResult{last: last, first: first, median: median, up: after.since(before)}, nil
}
