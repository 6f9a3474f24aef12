#!/usr/bin/env bash
# Issue 22 (performance, third round) in one run, on a quiet machine, beside gdnsd:
#   1. the harness: pinned (UDP mix), tcp (pipelined), tcp1 (one query per connection), 3 reps
#   2. tcp1 against its floor: bench/tcp1_floor.c (the six system calls of such a connection and
#      nothing else), meridian and gdnsd in turn, each after the loopback's TIME_WAIT drained
#   3. CPU per query against the reflector (bench/extra.sh floor)
#   4. the probing p99 pair at a 20 % budget, at 100k QPS (half of the server's per-core peak)
#      and at 150k (the figure of earlier rounds, where the server's core is already ~80 % busy)
#   5. the endpoint axis of bench/scale.sh for this build (bench/results/scale-round3.tsv; the
#      plots in docs/ come from a full `bash bench/scale.sh`)
# Usage: bash bench/round3.sh        (~25 min on an idle 2-core machine)
# Output: bench/results/round3-<UTC stamp>.log
set -uo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
repo="$(dirname "$here")"
cd "$repo" || exit 1
log="$repo/bench/results/round3-$(date -u +%Y%m%dT%H%M%SZ).log"
mkdir -p "$repo/bench/results"
exec > >(tee "$log") 2>&1
say() { printf '\n==== %s (%s UTC, load %s)\n' "$1" "$(date -u +%H:%M:%S)" "$(cut -d' ' -f1-3 /proc/loadavg)"; }

say "commit $(git rev-parse --short HEAD)"
cargo build --release --locked --bin meridian --example tcp1perf --example reflector --example http_target 2>&1 | tail -1

say "1. harness: pinned, tcp, tcp1"
SERVERS="gdnsd ours" MODES="pinned tcp tcp1" REPS=3 TCP_REPS=3 DURATION=10 bash bench/run.sh 2>&1 |
  grep -vE '^\s+(Compiling|Finished)'

say "2. tcp1 against the floor of its system calls"
W=/tmp/dns-anchors
gcc -O2 -Wall -o /tmp/tcp1_floor bench/tcp1_floor.c
drained() { for _ in $(seq 1 90); do [ "$(ss -tan state time-wait | wc -l)" -lt 3000 ] && return; sleep 1; done; }
# tcp1_point NAME PORT CMD...: server on core 0, tcp1perf on core 1, QPS per server core.
tcp1_point() {
  local name=$1 port=$2 spid t0 t1 s0 s1 out qps; shift 2
  drained
  taskset -c 0 "$@" >"/tmp/round3-$name.log" 2>&1 &
  spid=$!
  sleep 1.5
  [ "$name" = gdnsd ] && spid=$(pgrep -n gdnsd)
  t0=$(awk '{print $14 + $15}' "/proc/$spid/stat"); s0=$(date +%s.%N)
  out=$(taskset -c 1 target/release/examples/tcp1perf -s 127.0.0.1 -p "$port" -d "$W/queries.txt" -l 8 -c 64 -t 2 2>&1)
  t1=$(awk '{print $14 + $15}' "/proc/$spid/stat"); s1=$(date +%s.%N)
  qps=$(echo "$out" | awk '/Queries per second/ {print $4}')
  kill "$spid" 2>/dev/null; sleep 0.3; kill -9 "$spid" 2>/dev/null
  awk -v n="$name" -v q="${qps:-0}" -v c="$((t1 - t0))" -v a="$s0" -v b="$s1" -v hz="$(getconf CLK_TCK)" \
    'BEGIN {cpu = c / hz / (b - a); printf "%s\tqps %.0f\tcpu %.1f%%\tper core %.0f\n", n, q, cpu * 100, (cpu > 0 ? q / cpu : 0)}'
}
for _ in 1 2 3; do
  tcp1_point floor 5399 /tmp/tcp1_floor 5399
  tcp1_point meridian 5314 target/release/meridian serve --config "$W/meridian/meridian.toml"
  tcp1_point gdnsd 5311 gdnsd -c "$W/gdnsd" -f start
done

say "3. CPU per query against the reflector"
REPS=5 DURATION=10 bash bench/extra.sh floor 2>&1 | grep -vE '^\s+(Compiling|Finished)'

say "4a. probing p99 pair, 100k QPS, 20 % budget"
PROBE_RATE=100000 PROBE_BUDGET=20% REPS=3 DURATION=10 bash bench/extra.sh probing 2>&1 | grep -vE '^\s+(Compiling|Finished)'
say "4b. probing p99 pair, 150k QPS, 20 % budget"
PROBE_RATE=150000 PROBE_BUDGET=20% REPS=3 DURATION=10 bash bench/extra.sh probing 2>&1 | grep -vE '^\s+(Compiling|Finished)'

say "5. endpoint curves"
TAG=round3 AXES=endpoints bash bench/scale.sh 2>&1 | grep -vE '^\s+(Compiling|Finished)'

say "done: $log"
