package main

// With -qlog, the server and the relays write a qlog of each QUIC
// connection (quic-go does, through go-libp2p, when QLOGDIR is set), and
// the benchmark sums the WAN ones: what each connection carried on the
// wire beside its stream bytes, and how its congestion window and round
// trip went while it sent. This is how one sees whether a link that was
// not full was short of requests or held back by its transport.

import (
	"bufio"
	"cmp"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"text/tabwriter"
	"time"
)

// wireExtra is what a UDP datagram costs on the veth beyond its QUIC
// bytes: Ethernet (14), IPv4 (20) and UDP (8) headers.
const wireExtra = 42

// qlogDir is where node n's qlogs go.
func qlogDir(n *node) string { return n.home + ".qlog" }

// qlogConn is one connection's sums, from one end's qlog.
type qlogConn struct {
	from, to     string     // node names: the sender is the qlog's own node
	stream, wire int64      // bytes sent: stream frames' data, whole frames on the wire
	ackOnly      int        // packets sent with nothing but ACKs
	lost         int        // packets it declared lost
	sent         []sentMark // each packet with stream data: when, and the stream bytes up to it
	metrics      []metricMark
	maxPacket    int // its largest packet's QUIC bytes (path MTU discovery)
}

type sentMark struct {
	at  time.Time
	cum int64
}

// by is when q had sent frac of its stream bytes (zero if it sent none).
func (q qlogConn) by(frac float64) time.Time {
	if len(q.sent) == 0 {
		return time.Time{}
	}
	i, _ := slices.BinarySearchFunc(q.sent, int64(frac*float64(q.stream)), func(m sentMark, n int64) int {
		return cmp.Compare(m.cum, n)
	})
	return q.sent[min(i, len(q.sent)-1)].at
}

// A metricMark is the congestion window and the bytes in flight (bytes)
// and the smoothed RTT (ms) after an update of any of them.
type metricMark struct {
	at                  time.Time
	cwnd, inflight, rtt float64
}

// maxDatagram is the largest QUIC packet quic-go sends: bytes in flight
// within one of the window are as many as it allows.
const maxDatagram = 1452

// means are q's congestion window and smoothed RTT from one time to
// another, each value weighted by how long it held (the last update
// before from holds from then), and the part of that time its bytes in
// flight were at the window: sending as fast as congestion control let
// it.
func (q qlogConn) means(from, to time.Time) (cwnd, rtt, atWindow float64) {
	var span float64
	for i, m := range q.metrics {
		start, end := m.at, to
		if i+1 < len(q.metrics) {
			end = q.metrics[i+1].at
		}
		if start.Before(from) {
			start = from
		}
		if end.After(to) {
			end = to
		}
		d := end.Sub(start).Seconds()
		if d <= 0 {
			continue
		}
		span += d
		cwnd += m.cwnd * d
		rtt += m.rtt * d
		if m.inflight+maxDatagram >= m.cwnd {
			atWindow += d
		}
	}
	if span == 0 {
		return 0, 0, 0
	}
	return cwnd / span, rtt / span, atWindow / span
}

type qlogEvent struct {
	Time float64         `json:"time"` // ms since the trace's reference time
	Name string          `json:"name"`
	Data json.RawMessage `json:"data"`
}

type qlogHeader struct {
	Trace struct {
		CommonFields struct {
			ReferenceTime struct {
				WallClockTime time.Time `json:"wall_clock_time"`
			} `json:"reference_time"`
		} `json:"common_fields"`
	} `json:"trace"`
}

type qlogStarted struct {
	Local struct {
		IPv4 string `json:"ip_v4"`
	} `json:"local"`
	Remote struct {
		IPv4 string `json:"ip_v4"`
	} `json:"remote"`
}

type qlogSent struct {
	Raw struct {
		Length int `json:"length"`
	} `json:"raw"`
	Frames []struct {
		Type   string `json:"frame_type"`
		Length int    `json:"length"`
	} `json:"frames"`
}

type qlogMetrics struct {
	CongestionWindow *float64 `json:"congestion_window"`
	BytesInFlight    *float64 `json:"bytes_in_flight"`
	SmoothedRTT      *float64 `json:"smoothed_rtt"`
}

// readQlog sums one qlog file; names maps the WAN nodes' IPs to their
// names. ok is false for a connection that is not between two of them.
func readQlog(path string, names map[string]string) (c qlogConn, ok bool, err error) {
	f, err := os.Open(path)
	if err != nil {
		return c, false, err
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 1<<20), 16<<20)
	var ref time.Time
	first := true
	var cwnd, inflight, rtt float64
	for sc.Scan() {
		line := strings.TrimLeft(sc.Text(), "\x1e")
		if line == "" {
			continue
		}
		if first {
			first = false
			var h qlogHeader
			if err := json.Unmarshal([]byte(line), &h); err != nil {
				return c, false, fmt.Errorf("%s: header: %w", path, err)
			}
			ref = h.Trace.CommonFields.ReferenceTime.WallClockTime
			continue
		}
		var e qlogEvent
		if json.Unmarshal([]byte(line), &e) != nil {
			continue // a line cut short when the process ended
		}
		at := ref.Add(time.Duration(e.Time * float64(time.Millisecond)))
		switch e.Name {
		case "transport:connection_started":
			var s qlogStarted
			if json.Unmarshal(e.Data, &s) != nil {
				return c, false, nil
			}
			from, ok1 := names[s.Local.IPv4]
			to, ok2 := names[s.Remote.IPv4]
			if !ok1 || !ok2 {
				return c, false, nil // a LAN connection
			}
			c.from, c.to, ok = from, to, true
		case "transport:packet_sent":
			var s qlogSent
			if json.Unmarshal(e.Data, &s) != nil {
				continue
			}
			data, onlyAcks := 0, len(s.Frames) > 0
			for _, fr := range s.Frames {
				if fr.Type == "stream" {
					data += fr.Length
				}
				onlyAcks = onlyAcks && fr.Type == "ack"
			}
			c.wire += int64(s.Raw.Length + wireExtra)
			c.maxPacket = max(c.maxPacket, s.Raw.Length)
			if onlyAcks {
				c.ackOnly++
			}
			if data > 0 {
				c.stream += int64(data)
				c.sent = append(c.sent, sentMark{at, c.stream})
			}
		case "recovery:metrics_updated":
			var m qlogMetrics
			if json.Unmarshal(e.Data, &m) != nil {
				continue
			}
			if m.CongestionWindow != nil {
				cwnd = *m.CongestionWindow
			}
			if m.BytesInFlight != nil {
				inflight = *m.BytesInFlight
			}
			if m.SmoothedRTT != nil {
				rtt = *m.SmoothedRTT
			}
			if cwnd > 0 && rtt > 0 {
				c.metrics = append(c.metrics, metricMark{at, cwnd, inflight, rtt})
			}
		case "recovery:packet_lost":
			c.lost++
		}
	}
	if err := sc.Err(); err != nil {
		return c, false, fmt.Errorf("read %s: %w", path, err)
	}
	return c, ok, nil
}

// printQlog prints the WAN connections' sums from the qlogs of the server
// and the relays, times from the job's creation at t0.
func printQlog(c *cluster, t0 time.Time) error {
	wan := append([]*node{c.server}, c.relays...)
	names := map[string]string{}
	for _, n := range wan {
		names[n.ip] = n.name
	}
	var conns []qlogConn
	for _, n := range wan {
		files, err := filepath.Glob(filepath.Join(qlogDir(n), "*.sqlog"))
		if err != nil {
			return err
		}
		for _, f := range files {
			q, ok, err := readQlog(f, names)
			if err != nil {
				// One unreadable file costs its row, not the run.
				fmt.Fprintln(os.Stderr, "wan: qlog:", err)
				continue
			}
			if ok && q.wire >= 64<<10 { // not the ones that carried only a hello
				conns = append(conns, q)
			}
		}
	}
	slices.SortFunc(conns, func(a, b qlogConn) int {
		return strings.Compare(a.from+" "+a.to, b.from+" "+b.to)
	})
	fmt.Println("\nWAN connections, from each sender's qlog (-qlog): what each sent (stream bytes count retransmissions too), and, from 1 % to 99 % of its stream bytes after the job was created, its congestion window and smoothed RTT (means over time) and the part of that time its bytes in flight were at the window:")
	w := tabwriter.NewWriter(os.Stdout, 2, 8, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(w, "FROM\tTO\tSTREAM MiB\tWIRE MiB\t+ %\tACK-ONLY PKTS\tLOST PKTS\tLARGEST PKT\tCWND KiB\tSRTT ms\tAT CWND %\t1-99 % SENT s\t")
	for _, q := range conns {
		if len(q.sent) == 0 {
			fmt.Fprintf(w, "%s\t%s\t0.0\t%s\t\t%d\t%d\t%d\t\t\t\t\t\n", q.from, q.to, mib(q.wire), q.ackOnly, q.lost, q.maxPacket)
			continue
		}
		from, to := q.by(0.01), q.by(0.99)
		cwnd, rtt, at := q.means(from, to)
		fmt.Fprintf(w, "%s\t%s\t%s\t%s\t%.1f\t%d\t%d\t%d\t%.0f\t%.0f\t%.0f\t%.1f-%.1f\t\n",
			q.from, q.to, mib(q.stream), mib(q.wire), 100*(float64(q.wire)/float64(q.stream)-1),
			q.ackOnly, q.lost, q.maxPacket, cwnd/1024, rtt, 100*at, from.Sub(t0).Seconds(), to.Sub(t0).Seconds())
	}
	return w.Flush()
}
