#!/usr/bin/env bash
# An install job through a 3-level tree of real libp2p hosts in one process:
# time from submitting it to every client's "succeeded" at the server, and
# what the server handled (blocks sent, report batches, manifest copies).
#   scripts/bench/install.sh                              # 10 relays x 100 clients, 10 MiB
#   scripts/bench/install.sh -relays 3 -clients 10 -size 1048576
set -euo pipefail
cd "$(dirname "$0")/../.."
ulimit -n "$(ulimit -Hn)"
go run ./scripts/bench/install "$@"
