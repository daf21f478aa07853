#!/usr/bin/env bash
# One relay with many children: enrollment time, time until all are online,
# heap and goroutines per client, the relay's connections, and whether
# anything was trimmed after the connection manager's grace period.
#   scripts/bench/enroll.sh                 # 1,000 clients, TCP only, all in one process
#   scripts/bench/enroll.sh -quic           # every node listens on TCP and QUIC
#   scripts/bench/enroll.sh -n 100 -idle 5s # a quick check
#   scripts/bench/enroll.sh -profile /tmp/p # also write goroutine and heap profiles
#   scripts/bench/enroll.sh --processes     # server and relay as 'swdist run' processes:
#                                           # the relay's own RSS, the clients' own heap
# Needs about 4 open files per client: the limit is raised to the hard limit.
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
