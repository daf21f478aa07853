#!/usr/bin/env bash
# Manifest delivery through a 3-level tree of real libp2p hosts in one
# process: signing-to-delivery latency (p50/p99/max), copies received per
# node, and catch-up of clients that were offline during the send.
#   scripts/bench/gossip.sh                      # 1 + 10 relays + 990 clients
#   scripts/bench/gossip.sh -relays 3 -clients 10
set -euo pipefail
cd "$(dirname "$0")/../.."
ulimit -n "$(ulimit -Hn)"
go run ./scripts/bench/gossip "$@"
