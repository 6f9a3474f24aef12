#!/usr/bin/env bash
# Zone transfers under load (issue 17, SPEC "Trust boundaries"), against a real Knot primary on
# loopback:
#   ixfr: a 100,000-record IXFR (50,000 deletions + 50,000 additions into a 200,000-record zone)
#         applied while `dnsperf -m tcp` queries the server and a loop scrapes the admin API's
#         /metrics every 50 ms. Prints the largest TCP answer delay (dnsperf's max latency) and
#         the largest admin latency over the run, and the same without a transfer (baseline).
#         Target: <= 100 ms.
#   axfr: a fresh server transfers a 1,000,000-record zone by AXFR; prints the server's peak
#         RSS (VmHWM) against its RSS before and the size of the copy written. Target: peak
#         growth <= 3x the copy.
# Usage: [XFR_BIN=binary] bench/xfr.sh [ixfr|axfr|all] (default all). Needs knotd, knotc, kdig, dnsperf, curl.
# Results go to stdout; docs/secondary.md has the figures of the last run.
set -euo pipefail
cd "$(dirname "$0")/.."
what="${1:-all}"
for t in knotd knotc kdig dnsperf curl; do
  command -v "$t" >/dev/null || { echo "xfr.sh: $t is missing (apt-get install knot knot-dnsutils dnsperf curl)"; exit 1; }
done
# XFR_BIN=path measures another build (e.g. the binary of an older commit) as it is.
if [ -n "${XFR_BIN:-}" ]; then BIN="$XFR_BIN"; else
  cargo build --release --locked -q
  BIN="$PWD/target/release/meridian"
fi
WORK=$(mktemp -d)
PIDS=()
cleanup() {
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$WORK"
}
trap cleanup EXIT

port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
KPORT=$(port); MPORT=$(port); APORT=$(port)

# zone SERIAL FROM TO: xfr.test with SOA, NS, glue and A records h<FROM>..h<TO-1>.
zone() {
  awk -v s="$1" -v a="$2" -v b="$3" 'BEGIN {
    print "$ORIGIN xfr.test."
    print "$TTL 300"
    print "@ SOA ns1 hostmaster " s " 3600 600 1209600 300"
    print "@ NS ns1"
    print "ns1 A 192.0.2.53"
    for (i = a; i < b; i++) printf "h%07d A 10.%d.%d.%d\n", i, int(i / 65536) % 256, int(i / 256) % 256, i % 256
  }'
}

start_knot() {
  mkdir -p "$WORK/knot/db"
  cat >"$WORK/knot/knot.conf" <<EOF
server:
    rundir: "$WORK/knot"
    listen: 127.0.0.1@$KPORT
database:
    storage: "$WORK/knot/db"
control:
    listen: "$WORK/knot/knot.sock"
remote:
  - id: meridian
    address: 127.0.0.1@$MPORT
acl:
  - id: xfr
    address: 127.0.0.0/8
    action: transfer
template:
  - id: default
    storage: "$WORK/knot"
    file: "%s.zone"
    zonefile-sync: -1
    zonefile-load: difference
    journal-content: changes
    journal-max-usage: 512M
    semantic-checks: off
zone:
  - domain: xfr.test
    notify: meridian
    acl: xfr
EOF
  knotd -c "$WORK/knot/knot.conf" >"$WORK/knot/knotd.log" 2>&1 &
  PIDS+=($!)
  for _ in $(seq 200); do kdig +tcp +short @127.0.0.1 -p "$KPORT" xfr.test SOA 2>/dev/null | grep -q . && return; sleep 0.1; done
  echo "knotd did not start"; cat "$WORK/knot/knotd.log"; exit 1
}

start_meridian() {
  rm -rf "$WORK/m"; mkdir -p "$WORK/m/zones" "$WORK/m/state"
  cat >"$WORK/m/meridian.toml" <<EOF
[server]
listen = ["127.0.0.1:$MPORT"]
zones = "zones"
state_dir = "state"
tcp_max_queries = 1000000000

[admin]
listen = "127.0.0.1:$APORT"

[site]
id = "bench"

[[secondary]]
zone = "xfr.test"
primaries = ["127.0.0.1:$KPORT"]
max_records = 2000000
EOF
  "$BIN" serve --config "$WORK/m/meridian.toml" 2>"$WORK/m/log" &
  MPID=$!
  PIDS+=($MPID)
}

serial() { kdig +tcp +short @127.0.0.1 -p "$1" xfr.test SOA 2>/dev/null | awk '{print $3}'; }
wait_serial() { # PORT SERIAL SECONDS
  for _ in $(seq $(($3 * 10))); do [ "$(serial "$1")" = "$2" ] && return 0; sleep 0.1; done
  echo "serial $2 not served on port $1 within $3 s"; tail -5 "$WORK/m/log"; return 1
}

# load_run SECONDS ACTION: dnsperf over TCP and an admin scrape loop for SECONDS; ACTION runs
# after 3 s. Prints "tcp_max_ms admin_max_ms qps".
load_run() {
  local secs=$1 action=$2
  awk 'BEGIN { for (i = 50000; i < 200000; i += 7) printf "h%07d.xfr.test A\n", i }' >"$WORK/q.txt"
  (
    end=$((SECONDS + secs))
    while [ $SECONDS -lt $end ]; do
      curl -s -o /dev/null -w '%{time_total}\n' --max-time 5 "http://127.0.0.1:$APORT/metrics" || echo 5
      sleep 0.05
    done
  ) >"$WORK/admin.txt" &
  local scr=$!
  dnsperf -m tcp -s 127.0.0.1 -p "$MPORT" -d "$WORK/q.txt" -l "$secs" -c 4 -q 20 -t 5 >"$WORK/dnsperf.txt" 2>&1 &
  local dp=$!
  sleep 3
  $action
  wait "$dp" || true
  wait "$scr" || true
  local tmax qps amax
  tmax=$(awk '/Average Latency/ { gsub(/[(),]/, ""); for (i = 1; i <= NF; i++) if ($i == "max") print $(i + 1) * 1000 }' "$WORK/dnsperf.txt" | head -1)
  qps=$(awk '/Queries per second/ {print $4}' "$WORK/dnsperf.txt" | head -1)
  amax=$(sort -g "$WORK/admin.txt" | tail -1 | awk '{print $1 * 1000}')
  cp "$WORK/dnsperf.txt" "$WORK/admin.txt" "${XFR_KEEP:-/tmp}/" 2>/dev/null || true
  echo "${tmax:-?} ${amax:-?} ${qps:-?} $(wc -l <"$WORK/admin.txt")" | tr '\n' ' '
  echo
}

noop() { :; }
apply_ixfr() {
  zone 2 50000 250000 >"$WORK/knot/xfr.test.zone"
  T0=$(date +%s.%N)
  knotc -s "$WORK/knot/knot.sock" zone-reload xfr.test >/dev/null
  wait_serial "$MPORT" 2 60
  T1=$(date +%s.%N)
  echo "$T0 $T1" >"$WORK/ixfr-time.txt"
}

if [ "$what" = ixfr ] || [ "$what" = all ]; then
  mkdir -p "$WORK/knot"
  zone 1 0 200000 >"$WORK/knot/xfr.test.zone"
  start_knot
  start_meridian
  wait_serial "$MPORT" 1 120
  read -r bt ba bq bn <<<"$(load_run 10 noop)"
  echo "ixfr baseline (no transfer, 10 s): largest TCP answer delay ${bt} ms, largest admin latency ${ba} ms over ${bn} scrapes, ${bq} q/s"
  # Peak RSS of the IXFR alone: reset the high-water mark (clear_refs 5) just before.
  rss0=$(awk '/VmRSS/ {print $2}' "/proc/$MPID/status")
  echo 5 >"/proc/$MPID/clear_refs" 2>/dev/null || true
  read -r tt ta tq tn <<<"$(load_run 20 apply_ixfr)"
  hwm=$(awk '/VmHWM/ {print $2}' "/proc/$MPID/status")
  copy=$(stat -c %s "$WORK/m/state/secondary/xfr.test.copy")
  awk -v b="$rss0" -v h="$hwm" -v c="$copy" 'BEGIN {
    printf "ixfr RSS before %.0f MB, peak during the run %.0f MB (growth %.0f MB = %.2fx the %.1f MB copy)\n", b / 1024, h / 1024, (h - b) / 1024, (h - b) * 1024 / c, c / 1e6 }'
  read -r t0 t1 <"$WORK/ixfr-time.txt"
  kind=$(curl -s "http://127.0.0.1:$APORT/status" | python3 -c 'import json,sys; print([z.get("last_transfer_kind") for z in json.load(sys.stdin)["secondary"]])')
  echo "ixfr 100,000 changes into 200,000 records ($kind): applied and served $(awk -v a="$t0" -v b="$t1" 'BEGIN {printf "%.2f", b - a}') s after zone-reload on the primary"
  echo "ixfr during the transfer (20 s): largest TCP answer delay ${tt} ms, largest admin latency ${ta} ms over ${tn} scrapes, ${tq} q/s"
  kill "$MPID" 2>/dev/null || true
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  PIDS=()
  rm -rf "$WORK/knot"
fi

if [ "$what" = axfr ] || [ "$what" = all ]; then
  mkdir -p "$WORK/knot"
  zone 1 0 1000000 >"$WORK/knot/xfr.test.zone"
  # meridian first, its primary still down (its first refresh fails), so that "before" is
  # the RSS of the server without the zone; then Knot, and a NOTIFY starts the AXFR.
  start_meridian
  sleep 2
  before=$(awk '/VmRSS/ {print $2}' "/proc/$MPID/status")
  start_knot
  t0=$(date +%s.%N)
  knotc -s "$WORK/knot/knot.sock" zone-notify xfr.test >/dev/null
  wait_serial "$MPORT" 1 300
  t1=$(date +%s.%N)
  sleep 1
  hwm=$(awk '/VmHWM/ {print $2}' "/proc/$MPID/status")
  after=$(awk '/VmRSS/ {print $2}' "/proc/$MPID/status")
  copy=$(stat -c %s "$WORK/m/state/secondary/xfr.test.copy")
  text=$(stat -c %s "$WORK/knot/xfr.test.zone")
  awk -v b="$before" -v h="$hwm" -v a="$after" -v c="$copy" -v t="$text" -v d0="$t0" -v d1="$t1" 'BEGIN {
    printf "axfr 1,000,000 records: served %.1f s after the NOTIFY; copy %.1f MB (the master file: %.1f MB)\n", d1 - d0, c / 1e6, t / 1e6
    printf "axfr RSS before %.0f MB, peak %.0f MB, after %.0f MB: peak growth %.0f MB = %.2fx the copy (peak %.2fx)\n", b / 1024, h / 1024, a / 1024, (h - b) / 1024, (h - b) * 1024 / c, h * 1024 / c
  }'
fi
