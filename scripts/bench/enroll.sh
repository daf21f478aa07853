#!/usr/bin/env bash
# One relay with many children, in one process on loopback: enrollment
# time, time until all are online, heap and goroutines per client, and
# whether anything was trimmed after the connection manager's grace period.
#   scripts/bench/enroll.sh            # 1,000 clients over TCP
#   scripts/bench/enroll.sh -quic      # TCP and QUIC listeners
#   scripts/bench/enroll.sh -n 100 -idle 5s
set -euo pipefail
cd "$(dirname "$0")/../.."
ulimit -n "$(ulimit -Hn)"
exec go run ./scripts/bench/enroll "$@"
