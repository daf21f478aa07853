#!/usr/bin/env bash
# The WAN benchmark, in Linux network namespaces (needs root): a server
# behind a shaped uplink, sites behind a router each with its own shaped
# uplink, a relay and clients at each site on a 1 Gbit/s LAN, every node a
# real 'swdist run' process with its own home, enrolled with real tokens.
# One package of incompressible bytes goes to every client by a signed
# transfer job; it prints the time until the last client holds it
# verified, the topology's lower bound, the bytes each uplink carried per
# package size, and the same for a plain HTTP download by every client.
#   scripts/bench/wan.sh                  # 3 sites x (relay + 5 clients), 64 MiB, 50/20 Mbit/s
#   scripts/bench/wan.sh -quick           # 8 MiB, 2 clients per site: a check in a minute or two
#   scripts/bench/wan.sh -resume          # kill a client at 50 % of its fetch, restart it: bytes fetched again
#   scripts/bench/wan.sh -no-http -qlog   # also each WAN connection's wire bytes, congestion window and RTT (quic-go's qlogs)
#   scripts/bench/wan.sh -no-http -late-relay 20s   # the last site's relay stopped from just before the job until 20 s after
#   scripts/bench/wan.sh -no-http -stall-relay 20s  # the last site's relay stopped 2 s into the job, for 20 s
#   scripts/bench/wan.sh -no-http -hang-relay-disk 3m  # the last site's relay's disk stops answering 2 s into the job, for 3 min
#   scripts/bench/wan.sh -sites 3 -clients 10 -server-up 50 -site-up 20 -size 64 -timeout 10m
#   scripts/bench/wan.sh -h               # every flag
# Everything it creates (namespaces wan-XXXXXX-*, processes, the work
# directory) is removed on exit, failure, Ctrl-C or timeout; -keep-dir keeps
# the homes and logs.
set -euo pipefail
cd "$(dirname "$0")/../.."
if [[ $(id -u) != 0 ]]; then
  echo "wan.sh: needs root (network namespaces, tc)" >&2
  exit 2
fi
for tool in ip tc timeout; do
  command -v "$tool" >/dev/null || { echo "wan.sh: needs $tool" >&2; exit 2; }
done
keep=0
args=()
for a in "$@"; do
  case "$a" in
    -keep-dir|--keep-dir) keep=1 ;;
    *) args+=("$a") ;;
  esac
done
work=$(mktemp -d /tmp/swdist-wan.XXXXXX)
chmod 755 "$work"
done_cleanup=0
cleanup() {
  [[ $done_cleanup == 1 ]] && return
  done_cleanup=1
  if [[ -x "$work/wan" ]]; then
    "$work/wan" cleanup -dir "$work" || true
  fi
  if [[ $keep == 1 ]]; then
    echo "Kept $work"
  else
    rm -rf "$work"
  fi
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM
echo "Building swdist and the benchmark..."
go build -o "$work/swdist" ./cmd/swdist
go build -o "$work/wan" ./scripts/bench/wan
secs=$("$work/wan" deadline "${args[@]}") || exit 2
# --foreground: Ctrl-C reaches the benchmark, which stops its daemons and
# removes its namespaces; the trap above removes whatever is left.
rc=0
timeout --foreground -k 30 "$secs" "$work/wan" -dir "$work" -swdist "$work/swdist" "${args[@]}" || rc=$?
exit $rc
