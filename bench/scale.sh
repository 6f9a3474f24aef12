#!/usr/bin/env bash
# Curves, not points: meridian's QPS per server core and RSS as one dimension grows at a time.
#   zone      - a zone of N A records (1k .. 1M), random existing names; also the time to load
#               (start until the first answer) and to reload (SIGHUP, `took_ms` in the log)
#   services  - N balanced services (10 .. 100k), weighted, 2 endpoints each, random names
#   endpoints - one service of E endpoints (2 .. 1,000) for each policy, each queried alone
#   geoip     - a geo service located through no database, the shipped country database and
#               the MaxMind city test databases, ECS from four subnets in turn
# No health checks anywhere (every endpoint is up, nothing probes), so the curves show the
# query path. Server pinned to core 0, dnsperf to core 1, DURATION seconds per point; QPS per
# core = QPS / the server's CPU share over the run (utime + stime from /proc).
# Usage: bash bench/scale.sh                 # everything, ~10 min on an idle 2-core machine
#        SHORT=1 bash bench/scale.sh         # smoke run: fewer, smaller points, 2 s each
#        AXES="endpoints" bash bench/scale.sh
#        MERIDIAN_BIN=/tmp/old/meridian TAG=before AXES=endpoints bash bench/scale.sh
#                                            # another build, into bench/results/scale-TAG.tsv
# Results: bench/results/scale.tsv (and a timestamped copy), PNGs in docs/scale-*.png.
# Everything listens on 127.0.0.1 only; every run is bounded by dnsperf -l and timeout.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
repo="$(dirname "$here")"
harness="${HARNESS:-$repo/../shared/bench}"
W="${WORK:-/tmp/meridian-scale}"
PORT="${PORT:-5397}"
SHORT="${SHORT:-0}"
# shellcheck source=bench/common.sh
. "$here/common.sh"
if [ "$SHORT" = 1 ]; then
  DUR="${DURATION:-2}"
  ZONE_SIZES="${ZONE_SIZES:-1000 10000}"
  SERVICE_COUNTS="${SERVICE_COUNTS:-10 1000}"
  ENDPOINT_COUNTS="${ENDPOINT_COUNTS:-2 1000}"
else
  DUR="${DURATION:-5}"
  ZONE_SIZES="${ZONE_SIZES:-1000 10000 100000 1000000}"
  SERVICE_COUNTS="${SERVICE_COUNTS:-10 100 1000 10000 100000}"
  ENDPOINT_COUNTS="${ENDPOINT_COUNTS:-2 10 100 1000}"
fi
AXES="${AXES:-zone services endpoints geoip}"
POLICIES="round-robin weighted geo failover hash latency least-loaded"

# Tools: dnsperf (the shared harness installs it), dig, matplotlib for the plots.
command -v dnsperf >/dev/null || bash "$harness/install.sh"
command -v dig >/dev/null || apt-get install -y bind9-dnsutils
# Debian's python3 (a pyenv or venv python3 earlier in PATH would not see Debian's matplotlib).
PY=/usr/bin/python3
$PY -c 'import matplotlib' 2>/dev/null || DEBIAN_FRONTEND=noninteractive apt-get install -y python3-matplotlib
# MERIDIAN_BIN=path: an already built server (e.g. an older commit's, for before/after curves).
if [ -n "${MERIDIAN_BIN:-}" ]; then
  bin="$MERIDIAN_BIN"
else
  (cd "$repo" && cargo build --release --locked --bin meridian)
  bin="$repo/target/release/meridian"
fi
mkdir -p "$W" "$repo/bench/results"
stamp=$(date -u +%Y%m%dT%H%M%SZ)
TAG="${TAG:-}"
if [ -n "$TAG" ]; then tsv="$repo/bench/results/scale-$TAG.tsv"; else tsv="$repo/bench/results/scale-$stamp.tsv"; fi
printf 'axis\tseries\tx\tqps\tcpu_pct\tqps_per_core\trss_kb\tload_ms\treload_ms\tlost\n' >"$tsv"

pid=""
cleanup() { [ -n "$pid" ] && kill "$pid" 2>/dev/null || true; }
trap cleanup EXIT

rss_kb() { awk '/VmRSS/ {print $2}' "/proc/$1/status"; }
now_ms() { date +%s%3N; }

# start DIR: starts the server on DIR/meridian.toml, waits for it to answer; sets pid, load_ms.
start() {
  local dir=$1 t0 deadline
  if ss -Hlun "sport = :$PORT" | grep -q .; then
    echo "scale: something already listens on 127.0.0.1:$PORT (set PORT=...)" >&2
    exit 1
  fi
  t0=$(now_ms)
  MERIDIAN_LOG=info taskset -c 0 "$bin" serve --config "$dir/meridian.toml" >"$dir/server.log" 2>&1 &
  pid=$!
  deadline=$((t0 + 300000))
  # The SOA itself, not just any output: dig +short prints its timeouts and errors on stdout,
  # and the server binds its sockets before the zones are loaded. (A SIGHUP before it serves
  # would end it: the handler is installed once it serves.)
  until dig +time=1 +tries=1 +short @127.0.0.1 -p "$PORT" example.com SOA 2>/dev/null | grep -q '^ns1\.example\.com\. '; do
    kill -0 "$pid" 2>/dev/null || { echo "scale: server died, see $dir/server.log" >&2; tail -5 "$dir/server.log" >&2; exit 1; }
    [ "$(now_ms)" -lt "$deadline" ] || { echo "scale: server did not answer in 300 s" >&2; exit 1; }
    sleep 0.05
  done
  load_ms=$(($(now_ms) - t0))
}

stop() { kill "$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true; pid=""; }

# reload DIR: one SIGHUP; echoes the reload's took_ms from the log.
reload() {
  local log=$1/server.log n i
  n=$(grep -c 'took_ms=' "$log" || true)
  # SIGHUP's handler is installed only after the "serving" line (src/cli.rs): before that a
  # SIGHUP ends the server. Seen with the 1M-record zone.
  until grep -q 'serving' "$log"; do sleep 0.1; done
  sleep 1
  kill -HUP "$pid"
  for i in $(seq 3000); do
    [ "$(grep -c 'took_ms=' "$log" || true)" -gt "$n" ] && break
    kill -0 "$pid" 2>/dev/null || { echo "scale: server died during a reload, see $log" >&2; exit 1; }
    sleep 0.1
  done
  grep -o 'took_ms=[0-9.]*' "$log" | tail -1 | cut -d= -f2
}

# measure AXIS SERIES X QUERYFILE [dnsperf args]: one dnsperf run, one TSV line.
measure() {
  local axis=$1 series=$2 x=$3 file=$4 qps cpu lost; shift 4
  IFS=$'\t' read -r qps cpu lost < <(dnsperf_point "$pid" "$PORT" "$file" "$@")
  awk -v ax="$axis" -v s="$series" -v x="$x" -v q="$qps" -v c="$cpu" -v r="$(rss_kb "$pid")" \
      -v l="${load_ms:-}" -v rl="${reload_ms:-}" -v lo="$lost" \
      'BEGIN {printf "%s\t%s\t%s\t%.0f\t%s\t%.0f\t%s\t%s\t%s\t%s\n", ax, s, x, q, c, (c > 0 ? q / (c / 100) : 0), r, l, rl, lo}' |
    tee -a "$tsv"
}

config_head() {
  printf '[server]\nlisten = ["127.0.0.1:%s"]\nzones = "zones"\n\n[site]\nid = "scale"\n\n' "$PORT"
}

regions() { # eight regions around the world
  cat <<'EOF'
[regions.us-east]
location = { lat = 38.9, lon = -77.0 }
[regions.us-west]
location = { lat = 37.4, lon = -122.1 }
[regions.sa-east]
location = { lat = -23.5, lon = -46.6 }
[regions.eu-west]
location = { lat = 53.35, lon = -6.26 }
[regions.eu-central]
location = { lat = 50.11, lon = 8.68 }
[regions.ap-south]
location = { lat = 19.07, lon = 72.88 }
[regions.ap-northeast]
location = { lat = 35.68, lon = 139.69 }
[regions.ap-southeast]
location = { lat = 1.35, lon = 103.82 }

EOF
}

queries() { # queries N PREFIX COUNT FORMAT: COUNT random names PREFIX<i> of N
  awk -v n="$1" -v c="$3" -v fmt="$2" 'BEGIN { srand(7); for (i = 0; i < c; i++) printf fmt "\n", int(rand() * n) }'
}

# ---- zone size ----------------------------------------------------------------------------------
axis_zone() {
  local n d
  for n in $ZONE_SIZES; do
    d="$W/zone-$n"
    mkdir -p "$d/zones"
    numbered_zone "$n" >"$d/zones/example.com.zone"
    config_head >"$d/meridian.toml"
    queries "$n" "h%07d.example.com A" 200000 >"$d/q.txt"
    start "$d"
    reload_ms=$(reload "$d")
    reload_ms=$(reload "$d") # the second: steady state (the first also frees the start's garbage)
    measure zone records "$n" "$d/q.txt"
    stop
  done
  load_ms="" reload_ms=""
}

# ---- number of services -------------------------------------------------------------------------
axis_services() {
  local n d
  for n in $SERVICE_COUNTS; do
    d="$W/services-$n"
    mkdir -p "$d/zones"
    numbered_zone 0 >"$d/zones/example.com.zone"
    {
      config_head
      awk -v n="$n" 'BEGIN {
        for (s = 0; s < n; s++) {
          printf "[[service]]\nname = \"s%06d.example.com\"\npolicy = \"weighted\"\nendpoints = [\n", s
          printf "  { address = \"10.%d.%d.1\", weight = 3 },\n", int(s / 256) % 256, s % 256
          printf "  { address = \"10.%d.%d.2\", weight = 1 },\n]\n", int(s / 256) % 256, s % 256
        }
      }'
    } >"$d/meridian.toml"
    queries "$n" "s%06d.example.com A" 200000 >"$d/q.txt"
    start "$d"
    reload_ms=$(reload "$d")
    measure services weighted "$n" "$d/q.txt"
    stop
  done
  load_ms="" reload_ms=""
}

# ---- endpoints per service, per policy ----------------------------------------------------------
axis_endpoints() {
  local e d p
  for e in $ENDPOINT_COUNTS; do
    d="$W/endpoints-$e"
    mkdir -p "$d/zones"
    numbered_zone 0 >"$d/zones/example.com.zone"
    {
      config_head
      # The client (127.0.0.1) stands in Paris: geo measures distances from there.
      printf '[geoip]\nnetworks = [ { cidr = "127.0.0.0/8", location = { lat = 48.85, lon = 2.35 } } ]\n\n'
      regions
      for p in $POLICIES; do
        awk -v e="$e" -v p="$p" 'BEGIN {
          split("us-east us-west sa-east eu-west eu-central ap-south ap-northeast ap-southeast", r, " ")
          printf "[[service]]\nname = \"%s.example.com\"\npolicy = \"%s\"\nendpoints = [\n", p, p
          for (i = 0; i < e; i++)
            printf "  { region = \"%s\", address = \"10.%d.%d.%d\", weight = %d, priority = %d },\n", r[i % 8 + 1], 100 + int(i / 65536), int(i / 256) % 256, i % 256, 1 + i % 4, 1 + int(i / 2) % 2
          print "]"
        }'
      done
    } >"$d/meridian.toml"
    start "$d"
    for p in $POLICIES; do
      awk -v p="$p" 'BEGIN { for (i = 0; i < 1000; i++) printf "%s.example.com A\n", p }' >"$d/q-$p.txt"
      measure endpoints "$p" "$e" "$d/q-$p.txt"
    done
    stop
  done
}

# ---- GeoIP database ------------------------------------------------------------------------------
axis_geoip() {
  local d db name ecs size
  local testdata="$repo/tests/data/geoip"
  [ -d "$testdata" ] || testdata="$repo/../shared/geoip-testdata"
  for db in none "$repo/geoip/default.mmdb" "$testdata/GeoIP2-Country-Test.mmdb" \
      "$testdata/GeoIP2-City-Test.mmdb" "$testdata/GeoLite2-City-Test.mmdb"; do
    if [ "$db" = none ]; then name=none size=0; else name=$(basename "$db" .mmdb) size=$(stat -c %s "$db"); fi
    d="$W/geoip-$name"
    mkdir -p "$d/zones"
    numbered_zone 0 >"$d/zones/example.com.zone"
    {
      config_head
      [ "$db" = none ] || printf '[geoip]\ndatabase = "%s"\n\n' "$db"
      regions
      printf '[[service]]\nname = "www.example.com"\npolicy = "geo"\nendpoints = [\n'
      local i=10
      for r in us-east us-west sa-east eu-west eu-central ap-south ap-northeast ap-southeast; do
        printf '  { region = "%s", address = "192.0.2.%d" },\n' "$r" "$i"
        i=$((i + 1))
      done
      printf ']\n'
    } >"$d/meridian.toml"
    awk 'BEGIN { for (i = 0; i < 1000; i++) print "www.example.com A" }' >"$d/q.txt"
    start "$d"
    # ECS /24s: London, Milton (US), Changchun (CN) in the city test data; 214.0.1.0 nowhere.
    for ecs in 00011800510245 00011800d8a053 00011800af10c7 00011800d60001; do
      measure geoip "$name" "$size" "$d/q.txt" -e -E "8:$ecs"
    done
    stop
  done
}

echo "== bench/scale.sh $(date -u '+%F %T') UTC, load: $(cut -d' ' -f1-3 /proc/loadavg), ${DUR}s per point"
for a in $AXES; do
  echo "== $a"
  "axis_$a"
done
if [ -z "$TAG" ]; then
  cp "$tsv" "$repo/bench/results/scale.tsv"
  # The endpoints curves of the build before the policy index (bench/results/scale-before.tsv,
  # kept from when it was made) are drawn dashed beside the current ones.
  $PY "$here/scale_plot.py" "$repo/bench/results/scale.tsv" "$repo/docs" "$repo/bench/results/scale-before.tsv"
fi
echo "== done: $tsv, docs/scale-*.png; load now: $(cut -d' ' -f1-3 /proc/loadavg)"
