#!/usr/bin/env bash
# Two builds of meridian in one run, alternating, so the machine's drift falls on both alike:
#   OLD=/path/to/old/meridian bash bench/compare.sh          # NEW defaults to this checkout's build
#   ROUNDS=3 MODES="pinned tcp tcp1" DURATION=10 OLD=… NEW=… bash bench/compare.sh
# Each round runs bench/run.sh once per build (SERVERS=ours, REPS=1) and takes the "QPS per
# server core" of each mode from its summary; the table at the end has each build's median
# over the rounds and the ratio new/old per mode (issue 19: a refactor keeps it >= 0.97).
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
repo="$(cd "$here/.." && pwd)"
: "${OLD:?OLD=the path of the other meridian binary}"
NEW="${NEW:-$repo/target/release/meridian}"
ROUNDS="${ROUNDS:-3}"
export MODES="${MODES:-pinned tcp tcp1}" DURATION="${DURATION:-10}" REPS=1 SERVERS=ours
export WORK="${WORK:-/tmp/dns-anchors}"
(cd "$repo" && cargo build --release --locked --bin meridian --example tcp1perf)
out="$(mktemp -d /tmp/meridian-compare.XXXXXX)"
for r in $(seq 1 "$ROUNDS"); do
  for which in old new; do
    bin=$OLD; [ "$which" = new ] && bin=$NEW
    log="$out/$which-$r.log"
    echo "== round $r: $which ($bin)"
    MERIDIAN_BIN="$bin" bash "$here/run.sh" > "$log" 2>&1 || { tail -20 "$log"; exit 1; }
    # Summary rows: | mode | server | runs | median QPS | … | QPS per server core | …
    awk -F'|' -v w="$which" '$3 ~ /meridian/ && $2 !~ /mode/ && NF > 12 {
      gsub(/ /, "", $2); gsub(/ /, "", $12); print w, $2, $12 }' "$log" >> "$out/figures"
  done
done
python3 - "$out/figures" <<'PY'
import sys, statistics, collections
d = collections.defaultdict(list)
for line in open(sys.argv[1]):
    w, mode, v = line.split()
    d[(w, mode)].append(float(v))
modes = sorted({m for (_, m) in d}, key=lambda m: ["pinned", "ecs", "tcp", "tcp1", "unpinned"].index(m) if m in ["pinned", "ecs", "tcp", "tcp1", "unpinned"] else 9)
print("| mode | old QPS/core (median) | new QPS/core (median) | new/old | rounds |")
print("| --- | ---: | ---: | ---: | --- |")
for m in modes:
    o, n = d[("old", m)], d[("new", m)]
    if not o or not n:
        continue
    mo, mn = statistics.median(o), statistics.median(n)
    print(f"| {m} | {mo:,.0f} | {mn:,.0f} | {mn/mo:.3f} | old {', '.join(f'{x:,.0f}' for x in o)}; new {', '.join(f'{x:,.0f}' for x in n)} |")
PY
echo "logs: $out"
