#!/usr/bin/env bash
# Inventory at scale and on the wire: store the full inventories of 10,000
# simulated clients (~1,500 software entries each) in SQLite through the
# server's own code, time the operator's queries, and count the bytes a
# daily re-inventory of an unchanged client sends up.
#   scripts/bench/inventory.sh                   # 10,000 clients
#   scripts/bench/inventory.sh -n 1000 -runs 3   # a quick check
set -euo pipefail
cd "$(dirname "$0")/../.."
go run ./scripts/bench/inventory "$@"
