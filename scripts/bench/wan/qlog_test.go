package main

import (
	"math"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// The lines are as quic-go v0.64 writes them (JSON-SEQ: each record after
// an RS byte), cut down to the fields readQlog reads; the last one is cut
// short, as when a process ends mid-write.
const qlogSample = "\x1e" + `{"qlog_format":"JSON-SEQ","qlog_version":"0.3","trace":{"vantage_point":{"type":"client"},"common_fields":{"reference_time":{"clock_type":"monotonic","epoch":"unknown","wall_clock_time":"2026-12-01T17:43:36Z"}}}}
` + "\x1e" + `{"time":0.01,"name":"transport:connection_started","data":{"local":{"ip_v4":"10.0.0.1","port_v4":7400},"remote":{"ip_v4":"10.0.0.2","port_v4":7400}}}
` + "\x1e" + `{"time":1,"name":"transport:packet_sent","data":{"raw":{"length":1280},"frames":[{"frame_type":"crypto","offset":0,"length":1233}]}}
` + "\x1e" + `{"time":1.5,"name":"recovery:metrics_updated","data":{"congestion_window":40960,"bytes_in_flight":1280}}
` + "\x1e" + `{"time":2,"name":"recovery:metrics_updated","data":{"smoothed_rtt":20}}
` + "\x1e" + `{"time":100,"name":"transport:packet_sent","data":{"raw":{"length":1441},"frames":[{"frame_type":"ack","ack_delay":1},{"frame_type":"stream","stream_id":4,"offset":0,"length":1000}]}}
` + "\x1e" + `{"time":200,"name":"recovery:metrics_updated","data":{"congestion_window":81920,"bytes_in_flight":81000,"smoothed_rtt":40}}
` + "\x1e" + `{"time":300,"name":"transport:packet_sent","data":{"raw":{"length":50},"frames":[{"frame_type":"ack","ack_delay":1}]}}
` + "\x1e" + `{"time":400,"name":"transport:packet_sent","data":{"raw":{"length":1441},"frames":[{"frame_type":"stream","stream_id":4,"offset":1000,"length":3000}]}}
` + "\x1e" + `{"time":450,"name":"recovery:packet_lost","data":{"header":{"packet_number":9}}}
` + "\x1e" + `{"time":500,"name":"transport:packet_sent","data":{"raw":{"len`

func TestReadQlog(t *testing.T) {
	path := filepath.Join(t.TempDir(), "c.sqlog")
	if err := os.WriteFile(path, []byte(qlogSample), 0o644); err != nil {
		t.Fatal(err)
	}
	ref := time.Date(2026, 12, 1, 17, 43, 36, 0, time.UTC)
	tests := []struct {
		name  string
		names map[string]string
		ok    bool
	}{
		{"between two WAN nodes", map[string]string{"10.0.0.1": "relay-s1", "10.0.0.2": "relay-s2"}, true},
		{"to a node not on the WAN", map[string]string{"10.0.0.1": "relay-s1"}, false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			q, ok, err := readQlog(path, tc.names)
			if err != nil {
				t.Fatal(err)
			}
			if ok != tc.ok {
				t.Fatalf("ok = %v, want %v", ok, tc.ok)
			}
			if !ok {
				return
			}
			if q.from != "relay-s1" || q.to != "relay-s2" {
				t.Errorf("from %q to %q, want relay-s1 to relay-s2", q.from, q.to)
			}
			if q.stream != 4000 {
				t.Errorf("stream bytes %d, want 4000", q.stream)
			}
			if want := int64(1280 + 1441 + 50 + 1441 + 4*wireExtra); q.wire != want {
				t.Errorf("wire bytes %d, want %d", q.wire, want)
			}
			if q.ackOnly != 1 || q.lost != 1 || q.maxPacket != 1441 {
				t.Errorf("ack-only %d, lost %d, largest %d; want 1, 1, 1441", q.ackOnly, q.lost, q.maxPacket)
			}
			if got := q.by(0.01); !got.Equal(ref.Add(100 * time.Millisecond)) {
				t.Errorf("1 %% sent at %v, want 100 ms after the reference", got.Sub(ref))
			}
			if got := q.by(0.99); !got.Equal(ref.Add(400 * time.Millisecond)) {
				t.Errorf("99 %% sent at %v, want 400 ms after the reference", got.Sub(ref))
			}
			// From 100 to 400 ms: 40 KiB, 20 ms and 1280 bytes in flight
			// (the update at 2 ms) for 100 ms, then 80 KiB, 40 ms and
			// 81000 bytes in flight, within a packet of the window, for
			// 200 ms.
			cwnd, rtt, at := q.means(q.by(0.01), q.by(0.99))
			if math.Abs(cwnd-(40960*0.1+81920*0.2)/0.3) > 1e-6 || math.Abs(rtt-(20*0.1+40*0.2)/0.3) > 1e-9 || math.Abs(at-2.0/3) > 1e-9 {
				t.Errorf("means %v bytes, %v ms, at the window %v of the time; want 68267, 33.3, 0.667", cwnd, rtt, at)
			}
		})
	}
}

func TestByWithoutStreamData(t *testing.T) {
	if got := (qlogConn{}).by(0.5); !got.IsZero() {
		t.Errorf("by on a connection with no stream data = %v, want the zero time", got)
	}
}

func TestReadQlogBadHeader(t *testing.T) {
	path := filepath.Join(t.TempDir(), "c.sqlog")
	if err := os.WriteFile(path, []byte("not json\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, _, err := readQlog(path, nil); err == nil || !strings.Contains(err.Error(), "header") {
		t.Fatalf("err = %v, want one about the header", err)
	}
}
