#!/usr/bin/env bash
# One relay with many children: enrollment time, time until all are online,
# heap and goroutines per client, the relay's memory, and whether anything
# was trimmed after the connection manager's grace period.
#   scripts/bench/enroll.sh                 # 1,000 clients over TCP, all in one process
#   scripts/bench/enroll.sh -quic           # clients listen on TCP and QUIC
#   scripts/bench/enroll.sh --processes     # server and relay as 'swdist run' processes:
#                                           # the relay's own RSS, the clients' own heap
#   scripts/bench/enroll.sh -n 100 -idle 5s
set -euo pipefail
cd "$(dirname "$0")/../.."
ulimit -n "$(ulimit -Hn)"
args=()
if [[ "${1:-}" == "--processes" ]]; then
  shift
  bindir=$(mktemp -d)
  trap 'rm -rf "$bindir"' EXIT
  go build -o "$bindir/swdist" ./cmd/swdist
  args+=(-swdist "$bindir/swdist")
fi
go run ./scripts/bench/enroll "${args[@]}" "$@"
