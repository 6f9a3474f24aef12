#!/usr/bin/env bash
# A random-subdomain flood with DO against a signed zone, and what it does to other clients
# (issue 21 "Speed": "a random-subdomain DO flood's effect on other clients"). Every flood name
# is new, so each answer (compact denial: an NSEC at the query name and the SOA) needs a fresh
# signature: a signing flood. The per-zone budget (`[[dnssec]] signatures_per_second`) caps the
# signing; past it the flood gets TC=1 (a real resolver would come back over TCP, where cookies
# and the TCP limits apply). Other clients ask names whose signatures are cached and so never
# touch the budget.
#
# Three runs of DURATION s each, meridian pinned to core 0, the dnsperfs on core 1, loopback only:
#   1. legit alone:    static names and the balanced www with DO, at LEGIT_QPS offered
#   2. legit + flood:  the same, while a second dnsperf sends FLOOD_QPS random names with DO
#   3. legit + flood, budget off (signatures_per_second = 0): what the budget protects from
# For each: the legit clients' answered QPS, lost queries and mean latency; the flood's answers,
# and from /metrics the signatures made and refused.
#
#   bash bench/dnssec_flood.sh                       # DURATION=10 LEGIT_QPS=20000 FLOOD_QPS=60000
#   MERIDIAN_BIN=/path/meridian bash bench/dnssec_flood.sh
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
repo="$(dirname "$here")"
harness="${HARNESS:-$repo/../shared/bench}"
for t in dnsperf dnssec-keygen curl taskset; do
  command -v "$t" >/dev/null || PATH="$PATH:/usr/sbin:/sbin"
  command -v "$t" >/dev/null || { echo "bench: missing $t (apt-get install dnsperf bind9-utils curl)" >&2; exit 1; }
done
[ -f "$harness/configs/zone-static.inc" ] || { echo "bench: no harness zone at $harness" >&2; exit 1; }
if [ -z "${MERIDIAN_BIN:-}" ]; then
  (cd "$repo" && cargo build --release --locked --bin meridian)
fi
bin="${MERIDIAN_BIN:-$repo/target/release/meridian}"
DURATION="${DURATION:-10}" LEGIT_QPS="${LEGIT_QPS:-20000}" FLOOD_QPS="${FLOOD_QPS:-60000}"
port="${PORT:-5316}" admin="${ADMIN_PORT:-5317}"
work="${WORK:-/tmp/dns-flood}"
rm -rf "$work" && mkdir -p "$work/zones" "$work/keys"
cp "$harness/configs/zone-static.inc" "$work/zones/example.com.zone"
csk=$(dnssec-keygen -K "$work/keys" -q -a ECDSAP256SHA256 -f KSK example.com)

config() {   # config BUDGET
  sed -e "s|@PORT@|$port|" -e "s|@ZONES@|$work/zones|" "$here/meridian-bench.toml.in"
  printf '\n[admin]\nlisten = "127.0.0.1:%s"\n' "$admin"
  printf '\n[[dnssec]]\nzone = "example.com"\nkeys = ["%s"]\nsignatures_per_second = %s\n' \
    "$work/keys/$csk.private" "$1"
}

# Legit clients: the static names and the balanced www (cached signatures after the first).
for _ in $(seq 100); do
  printf '%s\n' "example.com SOA" "example.com MX" "mail.example.com A" "api.example.com A" \
    "txt.example.com TXT" "static.example.com A" "www.example.com A" "www.example.com A"
done > "$work/legit.txt"
# The flood: names that do not exist, each once (dnsperf loops over the file; 2M names outlast
# FLOOD_QPS x DURATION, so none repeats within a run).
python3 - "$work/flood.txt" "$((FLOOD_QPS * DURATION * 3 / 2))" <<'PY'
import random, sys
n = int(sys.argv[2]); r = random.Random(21)
with open(sys.argv[1], "w") as f:
    for i in range(n):
        f.write("%08x%04x.example.com A\n" % (r.getrandbits(32), i & 0xffff))
PY

metric() {   # metric NAME_REGEX
  curl -s "http://127.0.0.1:$admin/metrics" | awk -v re="$1" '$1 ~ re {s += $2} END {printf "%d", s}'
}
field() { awk -v k="$2" 'index($0, k) {print $(NF-0); exit}' "$1"; }

report="$work/report.md"
{
  echo "# DO flood against a signed zone ($(date -u +%FT%TZ), $(nproc) cores, meridian $($bin --version 2>/dev/null | head -1))"
  echo
  echo "legit: $LEGIT_QPS QPS offered (static names + balanced www, DO); flood: $FLOOD_QPS QPS offered of new random names (DO); ${DURATION} s each; meridian on core 0, dnsperf on core 1."
  echo
  echo "| run | legit answered QPS | legit lost | legit mean latency | flood answered QPS | signatures made | refused by the budget |"
  echo "|---|---:|---:|---:|---:|---:|---:|"
} > "$report"

run() {   # run LABEL BUDGET FLOOD(0|1)
  local label=$1 budget=$2 flood=$3 f
  f=$(printf '%s' "$label" | tr -c 'a-z0-9' '-')
  config "$budget" > "$work/meridian.toml"
  taskset -c 0 "$bin" serve --config "$work/meridian.toml" > "$work/serve.log" 2>&1 &
  local pid=$!
  for _ in $(seq 50); do
    dig +short +time=1 +tries=1 -p "$port" @127.0.0.1 example.com SOA > /dev/null 2>&1 && break
    sleep 0.2
  done
  # Warm the legit names' signatures (the first answer of each signs it).
  timeout 10 dnsperf -s 127.0.0.1 -p "$port" -d "$work/legit.txt" -D -n 1 > /dev/null 2>&1 || true
  local made0 refused0
  made0=$(metric '^meridian_dnssec_signatures_total.*cache="miss"')
  refused0=$(metric '^meridian_dnssec_signatures_refused_total')
  local fpid=""
  if [ "$flood" = 1 ]; then
    timeout $((DURATION + 10)) taskset -c 1 dnsperf -s 127.0.0.1 -p "$port" -d "$work/flood.txt" -D \
      -l "$DURATION" -Q "$FLOOD_QPS" -c 8 -t 1 > "$work/flood-$f.txt" 2>&1 &
    fpid=$!
  fi
  timeout $((DURATION + 10)) taskset -c 1 dnsperf -s 127.0.0.1 -p "$port" -d "$work/legit.txt" -D \
    -l "$DURATION" -Q "$LEGIT_QPS" -c 4 -t 1 > "$work/legit-$f.txt" 2>&1 || true
  [ -n "$fpid" ] && wait "$fpid" || true
  local made refused
  made=$(( $(metric '^meridian_dnssec_signatures_total.*cache="miss"') - made0 ))
  refused=$(( $(metric '^meridian_dnssec_signatures_refused_total') - refused0 ))
  kill "$pid" 2>/dev/null || true
  wait "$pid" 2>/dev/null || true
  local lq ll lat fq="-"
  lq=$(awk '/Queries per second/ {print $4}' "$work/legit-$f.txt")
  ll=$(awk '/Queries lost/ {print $3 " " $4}' "$work/legit-$f.txt")
  lat=$(awk '/Average Latency/ {print $4 " s"}' "$work/legit-$f.txt")
  [ "$flood" = 1 ] && fq=$(awk '/Queries per second/ {print $4}' "$work/flood-$f.txt")
  echo "| $label | $lq | $ll | $lat | $fq | $made | $refused |" >> "$report"
}

run "legit alone" 10000 0
run "legit + flood, budget 10000/s" 10000 1
run "legit + flood, no budget" 0 1
cat "$report"
