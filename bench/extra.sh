#!/usr/bin/env bash
# The performance targets the shared harness does not cover, measured on loopback:
#   static  - a 100,000-record zone: existing names and random NXDOMAIN labels, meridian vs Knot,
#             pinned (server core 0, dnsperf core 1), REPS interleaved runs, QPS per server core
#   rrl     - the cost of [rrl] and DNS cookies: two meridians on core 0, one plain and one with
#             [rrl] on (nothing limited, every response accounted); REPS rounds of four runs:
#             plain, rrl + client cookie (the issue's "RRL and cookies on"), plain + client
#             cookie, rrl, all at 80 % of plain's peak rate; CPU per query of each against the
#             plain run of its round, median over the rounds (REPS=21 DURATION=3, see bench_rrl);
#             RRL_QUERIES=static: on the 100k-record zone's random names (keys over the table)
#   floor   - meridian vs the reflector (examples/reflector.rs: the same UDP loop, no DNS work)
#             on the harness's query mix: CPU per query as a multiple of the floor
#   latency - p99 at 50 % of meridian's peak rate (dnsperf -Q with -v, per-query latencies)
#   reload  - SIGHUP with the 100,000-record zone under a steady query load: reload time from
#             the log, lost queries from dnsperf
#   rss     - RSS with the shipped config (country GeoIP database) after 10 s of ECS queries
#   probing - DNS p99 at 50 % of peak with and without 10,000 endpoints probed at 1 s (http, each
#             its own URL on examples/http_target.rs, which runs on dnsperf's core); PROBE_BUDGET
#             sets [prober] cpu_budget (default: the config's default), and the stretch the
#             prober came to is printed from its log
#   memory  - zones of 100,000 and 1,000,000 A records (MEMORY_SIZES): steady RSS of Knot and
#             meridian on each, load time (wall and CPU until the last name answers), and a
#             SIGHUP reload under 20,000 QPS: peak RSS (VmRSS sampled every 10 ms, and VmHWM
#             after a reset) against the steady RSS, and the queries dnsperf lost (MEMORY_DUR s)
# Usage: bash bench/extra.sh [static rrl floor latency reload rss probing memory]   (default: all)
# Everything listens on 127.0.0.1 only; every run is bounded by dnsperf -l and timeout.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
repo="$(dirname "$here")"
harness="${HARNESS:-$repo/../shared/bench}"
W="${WORK:-/tmp/meridian-extra}"
REPS="${REPS:-3}"
DUR="${DURATION:-10}"
PORT_M=5321 PORT_K=5322 PORT_R=5323 PORT_L=5324
# shellcheck source=bench/common.sh
. "$here/common.sh"
what=("$@")
[ ${#what[@]} -gt 0 ] || what=(static rrl floor latency reload rss probing memory)

command -v dnsperf >/dev/null && command -v knotd >/dev/null || bash "$harness/install.sh"
(cd "$repo" && cargo build --release --locked --bin meridian --example reflector --example http_target)
bin="${MERIDIAN_BIN:-$repo/target/release/meridian}" # MERIDIAN_BIN: another build, for before/after
refl="$repo/target/release/examples/reflector"
mkdir -p "$W"
pids=()
cleanup() { for p in "${pids[@]:-}"; do [ -n "$p" ] && kill "$p" 2>/dev/null || true; done; }
trap cleanup EXIT

# run_dnsperf LABEL PID PORT QUERYFILE [dnsperf args...] -> one TSV line: label qps cpu% qps/core lost
run_dnsperf() {
  local label=$1 qps cpu lost; shift
  IFS=$'\t' read -r qps cpu lost < <(dnsperf_point "$@")
  awk -v l="$label" -v q="$qps" -v c="$cpu" -v lo="$lost" 'BEGIN {printf "%s\t%.0f\t%s\t%.0f\t%s\n", l, q, c, (c > 0 ? q / (c / 100) : 0), lo}'
}

start_pinned() { # start_pinned LOGFILE CMD... ; echoes the pid once the port answers
  local log=$1; shift
  taskset -c 0 "$@" >"$log" 2>&1 &
  local pid=$!
  pids+=("$pid")
  sleep 1
  # Servers may pin their own workers (Knot does): put every thread back on core 0.
  taskset -a -p -c 0 "$pid" >/dev/null 2>&1 || true
  echo "$pid"
}

median() { sort -n | awk '{a[NR] = $1} END {print (NR % 2) ? a[(NR + 1) / 2] : (a[NR / 2] + a[NR / 2 + 1]) / 2}'; }

# ---- the 100k-record zone -------------------------------------------------------------------
make_big_zone() {
  mkdir -p "$W/big/zones" "$W/knot/zones" "$W/knot/db" "$W/knot/run"
  awk 'BEGIN {
    srand(7)
    print "$TTL 300"
    print "@ IN SOA ns1.example.com. hostmaster.example.com. 1 7200 1800 1209600 300"
    print "@ IN NS ns1.example.com."
    print "ns1 IN A 192.0.2.53"
    for (i = 0; i < 100000; i++) printf "h%06d IN A 10.%d.%d.%d\n", i, int(i / 65536) % 256, int(i / 256) % 256, i % 256
  }' >"$W/big/zones/example.com.zone"
  cp "$W/big/zones/example.com.zone" "$W/knot/zones/example.com.zone"
  awk 'BEGIN { srand(11); for (i = 0; i < 200000; i++) printf "h%06d.example.com A\n", int(rand() * 100000) }' >"$W/q-static.txt"
  awk 'BEGIN { srand(13); for (i = 0; i < 200000; i++) printf "nx-%08d.example.com A\n", int(rand() * 100000000) }' >"$W/q-nx.txt"
  cat >"$W/big/meridian.toml" <<EOF
[server]
listen = ["127.0.0.1:$PORT_M"]
zones = "zones"
EOF
  sed -e "s|@DIR@|$W/knot|g" -e "s|@PORT@|$PORT_K|g" "$harness/configs/knot/knot.conf" >"$W/knot/knot.conf"
}

bench_static() {
  make_big_zone
  local mp kp
  mp=$(MERIDIAN_LOG=warn start_pinned "$W/big/meridian.log" "$bin" serve --config "$W/big/meridian.toml")
  kp=$(start_pinned "$W/knot/knot.log" knotd -c "$W/knot/knot.conf")
  sleep 2
  : >"$W/static.tsv"
  for rep in $(seq "$REPS"); do
    for q in static nx; do
      run_dnsperf "meridian/$q" "$mp" "$PORT_M" "$W/q-$q.txt" | tee -a "$W/static.tsv"
      run_dnsperf "knot/$q" "$kp" "$PORT_K" "$W/q-$q.txt" | tee -a "$W/static.tsv"
    done
  done
  echo "RSS meridian (100k zone): $(awk '/VmRSS/ {print $2, $3}' /proc/$mp/status)  knot: $(awk '/VmRSS/ {print $2, $3}' /proc/$kp/status)"
  for s in meridian/static knot/static meridian/nx knot/nx; do
    printf '%s\tmedian QPS per core %s\n' "$s" "$(awk -v s="$s" '$1 == s {print $4}' "$W/static.tsv" | median)"
  done
  kill "$mp" "$kp" 2>/dev/null || true
  wait "$mp" "$kp" 2>/dev/null || true
}

# ---- meridian on the harness mix, and the reflector floor ------------------------------------
harness_config() {
  mkdir -p "$W/mix/zones"
  cp "$harness/configs/zone-static.inc" "$W/mix/zones/example.com.zone"
  sed -e "s|@PORT@|$PORT_M|" -e "s|@ZONES@|zones|" "$here/meridian-bench.toml.in" >"$W/mix/meridian.toml"
  [ -s "$W/q-mix.txt" ] || bash "$harness/gen_queries.sh" 100000 42 >"$W/q-mix.txt"
}

bench_floor() {
  harness_config
  local mp rp
  mp=$(MERIDIAN_LOG=warn start_pinned "$W/mix/meridian.log" "$bin" serve --config "$W/mix/meridian.toml")
  rp=$(start_pinned "$W/reflector.log" "$refl" "127.0.0.1:$PORT_R")
  : >"$W/floor.tsv"
  for rep in $(seq "$REPS"); do
    run_dnsperf meridian "$mp" "$PORT_M" "$W/q-mix.txt" | tee -a "$W/floor.tsv"
    run_dnsperf reflector "$rp" "$PORT_R" "$W/q-mix.txt" | tee -a "$W/floor.tsv"
  done
  local m r
  m=$(awk '$1 == "meridian" {print $3 / $2 * 10000}' "$W/floor.tsv" | median)
  r=$(awk '$1 == "reflector" {print $3 / $2 * 10000}' "$W/floor.tsv" | median)
  awk -v m="$m" -v r="$r" 'BEGIN {printf "CPU per query: meridian %.2f us, reflector %.2f us, ratio %.2f\n", m, r, m / r}'
  kill "$mp" "$rp" 2>/dev/null || true
  wait "$mp" "$rp" 2>/dev/null || true
}

bench_rrl() {
  # RRL_QUERIES=static: the 100,000-record zone and its random names instead of the harness
  # mix, so that the keys spread over the whole table and its lines come from memory.
  local d=mix qf="$W/q-mix.txt"
  if [ "${RRL_QUERIES:-mix}" = static ]; then
    make_big_zone
    d=big qf="$W/q-static.txt"
  else
    harness_config
  fi
  mkdir -p "$W/rrl"
  sed -e "s|^listen = .*|listen = [\"127.0.0.1:$PORT_L\"]|" -e "s|^zones = .*|zones = \"$W/$d/zones\"|" \
    "$W/$d/meridian.toml" >"$W/rrl/meridian.toml"
  rrl_config "$W/rrl/meridian.toml"
  local mp lp
  mp=$(MERIDIAN_LOG=warn start_pinned "$W/$d/meridian.log" "$bin" serve --config "$W/$d/meridian.toml")
  lp=$(MERIDIAN_LOG=warn start_pinned "$W/rrl/meridian.log" "$bin" serve --config "$W/rrl/meridian.toml")
  sleep 1
  # This VM's speed drifts by 10-20 % over minutes, more than the cost measured. So each round
  # runs the four variants back to back, and each is compared with the plain run of its own
  # round. (Loading both servers at once instead puts them on one core in turns, and each
  # then finds the other's data in the caches: user space cost 0.28 us more per query there,
  # against 0.08 us in `cargo bench --bench handle`.)
  # All at one offered rate, 80 % of plain's peak: dnsperf on its core is the bottleneck, and
  # at full speed the variants whose queries cost dnsperf more (a cookie option to write, a
  # longer reply to read) arrive more slowly, in smaller recvmmsg batches, so the server spent
  # more per query for the client's sake (cookies alone came out at +7 % that way).
  local peak rate rep
  peak=$(run_dnsperf peak "$mp" "$PORT_M" "$qf" | cut -f2)
  rate=$((peak * 8 / 10))
  echo "plain peak $peak QPS; every run at $rate QPS"
  : >"$W/rrl.tsv"
  for rep in $(seq "$REPS"); do
    run_dnsperf plain "$mp" "$PORT_M" "$qf" -Q "$rate" | tee -a "$W/rrl.tsv"
    # shellcheck disable=SC2086 # COOKIE_ARGS is two words
    run_dnsperf rrl+cookie "$lp" "$PORT_L" "$qf" -Q "$rate" $COOKIE_ARGS | tee -a "$W/rrl.tsv"
    # shellcheck disable=SC2086
    run_dnsperf cookie "$mp" "$PORT_M" "$qf" -Q "$rate" $COOKIE_ARGS | tee -a "$W/rrl.tsv"
    run_dnsperf rrl "$lp" "$PORT_L" "$qf" -Q "$rate" | tee -a "$W/rrl.tsv"
  done
  local v r
  for v in rrl+cookie cookie rrl; do
    r=$(awk -v v="$v" '$1 == "plain" {p = $3 / $2} $1 == v {print ($3 / $2) / p}' "$W/rrl.tsv" | median)
    awk -v v="$v" -v r="$r" -v n="$REPS" \
      'BEGIN {printf "%-10s CPU per query x%.3f of plain (%+.1f %%), median of %d rounds\n", v, r, (r - 1) * 100, n}'
  done
  kill "$mp" "$lp" 2>/dev/null || true
  wait "$mp" "$lp" 2>/dev/null || true
}

bench_latency() {
  harness_config
  local mp peak half
  mp=$(MERIDIAN_LOG=warn start_pinned "$W/mix/meridian.log" "$bin" serve --config "$W/mix/meridian.toml")
  peak=$(run_dnsperf peak "$mp" "$PORT_M" "$W/q-mix.txt" | cut -f2)
  half=$((peak / 2))
  timeout $((DUR + 15)) taskset -c 1 dnsperf -s 127.0.0.1 -p "$PORT_M" -d "$W/q-mix.txt" -l "$DUR" -c 4 -Q "$half" -v >"$W/latency.txt" 2>&1 || true
  awk '/^> / {print $NF}' "$W/latency.txt" | sort -n | awk -v peak="$peak" -v half="$half" '
    {a[NR] = $1}
    END {printf "peak %d QPS; at %d QPS (50%%): %d queries, p50 %.3f ms, p99 %.3f ms, p99.9 %.3f ms, max %.3f ms\n",
      peak, half, NR, a[int(NR * 0.5)] * 1000, a[int(NR * 0.99)] * 1000, a[int(NR * 0.999)] * 1000, a[NR] * 1000}'
  grep -E "Queries lost" "$W/latency.txt" || true
  kill "$mp" 2>/dev/null || true
  wait "$mp" 2>/dev/null || true
}

bench_reload() {
  [ -s "$W/big/zones/example.com.zone" ] || make_big_zone
  local mp out
  mp=$(MERIDIAN_LOG=info start_pinned "$W/big/reload.log" "$bin" serve --config "$W/big/meridian.toml")
  sleep 1
  (sleep 2; for i in 1 2 3; do kill -HUP "$mp"; sleep 2; done) &
  out=$(timeout $((DUR + 15)) taskset -c 1 dnsperf -s 127.0.0.1 -p "$PORT_M" -d "$W/q-static.txt" -l "$DUR" -c 4 -Q 20000 -t 1 2>&1)
  wait
  grep -o 'took_ms=[0-9.]*' "$W/big/reload.log" | sed 's/took_ms=/reload of the 100k-record zone (ms): /'
  grep -E "Queries (sent|completed|lost)" <<<"$out"
  kill "$mp" 2>/dev/null || true
  wait "$mp" 2>/dev/null || true
}

bench_rss() {
  mkdir -p "$W/shipped"
  sed -e "s|^listen = \\[\"127.0.0.1:5300\"\\]|listen = [\"127.0.0.1:$PORT_M\"]|" \
      -e "s|\"../zones\"|\"$repo/zones\"|" -e "s|\"../geoip/|\"$repo/geoip/|" \
      -e "s|^listen = \"127.0.0.1:9053\"|listen = \"127.0.0.1:0\"|" \
      "$repo/config/meridian.toml" >"$W/shipped/meridian.toml"
  awk 'BEGIN { srand(17); for (i = 0; i < 100000; i++) print "www.example.com A" }' >"$W/q-www.txt"
  local mp
  mp=$(MERIDIAN_LOG=warn start_pinned "$W/shipped/meridian.log" "$bin" serve --config "$W/shipped/meridian.toml")
  echo "RSS after start: $(awk '/VmRSS/ {print $2, $3}' /proc/$mp/status)"
  # Client addresses spread over the database through the source address is not possible on
  # loopback; ECS with a fixed subnet per run, several runs.
  for ecs in 00011800510245 00011800d8a053 00011800d60001 00011800af10c7; do
    run_dnsperf "rss-$ecs" "$mp" "$PORT_M" "$W/q-www.txt" -e -E "8:$ecs" >/dev/null
  done
  echo "RSS after the runs (shipped config, country GeoIP database): $(awk '/VmRSS/ {print $2, $3}' /proc/$mp/status)"
  kill "$mp" 2>/dev/null || true
  wait "$mp" 2>/dev/null || true
}

# p99 of one dnsperf run at a fixed rate against the server on PORT_M.
p99_at() {
  timeout $((DUR + 15)) taskset -c 1 dnsperf -s 127.0.0.1 -p "$PORT_M" -d "$W/q-mix.txt" -l "$DUR" -c 4 -Q "$1" -v >"$W/p99.txt" 2>&1 || true
  awk '/^> / {print $NF}' "$W/p99.txt" | sort -n | awk '{a[NR] = $1} END {printf "%.3f", a[int(NR * 0.99)] * 1000}'
}

bench_probing() {
  harness_config
  local mp base probed cpu0 cpu1 rate=${PROBE_RATE:-150000}
  mkdir -p "$W/probing"
  cp -r "$W/mix/zones" "$W/probing/"
  {
    sed -e "s|@PORT@|$PORT_M|" -e "s|@ZONES@|zones|" "$here/meridian-bench.toml.in"
    [ -z "${PROBE_BUDGET:-}" ] || printf '[prober]\ncpu_budget = "%s"\n' "$PROBE_BUDGET"
    printf '[health.h]\nkind = "http"\ninterval = "1s"\ntimeout = "1s"\nexpect_body = "ok"\n'
    awk -v port="$PORT_R" 'BEGIN {
      for (s = 0; s < 100; s++) {
        printf "[[service]]\nname = \"p%d.example.com\"\npolicy = \"latency\"\nhealth = \"h\"\nendpoints = [\n", s
        for (e = 0; e < 100; e++) printf "  { address = \"10.%d.%d.%d\", check = \"http://127.0.0.1:%s/p%d/e%d\" },\n", int(s / 256), s % 256, e, port, s, e
        print "]"
      }
    }'
  } >"$W/probing/meridian.toml"
  sed -e "s|@PORT@|$PORT_M|" -e "s|@ZONES@|zones|" "$here/meridian-bench.toml.in" >"$W/probing/plain.toml"
  taskset -c "${TARGET_CORE:-1}" "$repo/target/release/examples/http_target" "127.0.0.1:$PORT_R" >"$W/probing/target.log" 2>&1 &
  pids+=("$!")
  # Interleaved: without probing, with, REPS times, so that a change of the machine's load
  # touches both sides alike. The prober's CPU is measured with no DNS load first.
  : >"$W/probing.tsv"
  for rep in $(seq "$REPS"); do
    mp=$(MERIDIAN_LOG=warn start_pinned "$W/probing/plain.log" "$bin" serve --config "$W/probing/plain.toml")
    base=$(p99_at "$rate")
    kill "$mp"; wait "$mp" 2>/dev/null || true
    mp=$(MERIDIAN_LOG=warn start_pinned "$W/probing/probed.log" "$bin" serve --config "$W/probing/meridian.toml")
    sleep 3
    cpu0=$(cpu_ticks "$mp"); sleep 5; cpu1=$(cpu_ticks "$mp")
    probed=$(p99_at "$rate")
    kill "$mp"; wait "$mp" 2>/dev/null || true
    awk -v a="$cpu0" -v b="$cpu1" -v t="$TICKS" -v p="$base" -v q="$probed" -v l="$(cut -d' ' -f1 /proc/loadavg)" \
      'BEGIN {printf "%.1f\t%s\t%s\t%s\n", (b - a) / t / 5 * 100, p, q, l}' | tee -a "$W/probing.tsv"
  done
  awk -F'\t' '{print $1}' "$W/probing.tsv" | median | xargs printf 'meridian CPU while probing 10,000 endpoints at 1 s with no DNS load (median): %s %% of a core\n'
  base=$(awk -F'\t' '{print $2}' "$W/probing.tsv" | median)
  probed=$(awk -F'\t' '{print $3}' "$W/probing.tsv" | median)
  awk -v p="$base" -v q="$probed" -v r="$rate" 'BEGIN {printf "DNS p99 at %d QPS (median of the runs): %.3f ms without probing, %.3f ms while probing (%+.0f %%)\n", r, p, q, (q / p - 1) * 100}'
  echo "(columns above: prober CPU %, p99 without, p99 with, 1-min load)"
  grep -h -o 'probe intervals stretched x[0-9.]*\|stretched to the most allowed' "$W/probing/probed.log" | sort | uniq -c || true
}

# ---- memory: steady RSS beside Knot, load time, reload peak ---------------------------------
kb() { awk -v k="$2:" '$1 == k {print $2}' "/proc/$1/status"; }

# Waits until the server on PORT answers NAME; prints the seconds since T0.
answered_after() {
  local port=$1 name=$2 t0=$3
  until dig +short +tries=1 +time=1 @127.0.0.1 -p "$port" "$name" A 2>/dev/null | grep -q .; do sleep 0.02; done
  awk -v a="$t0" -v b="$(date +%s.%N)" 'BEGIN {printf "%.2f", b - a}'
}

start_bg() { # start_bg LOGFILE CMD... ; echoes the pid at once
  local log=$1; shift
  taskset -c 0 "$@" >"$log" 2>&1 &
  pids+=("$!")
  echo "$!"
}

bench_memory() {
  local n d last t0 kp mp kload mload mcpu krss mrss peak hwm out took
  printf 'records\tknot_rss_kb\tmeridian_rss_kb\tratio\tknot_load_s\tmeridian_load_s\tmeridian_load_cpu_s\treload_ms\treload_peak_kb\tpeak/steady\thwm_kb\tsent\tlost\n' >"$W/memory.tsv"
  for n in ${MEMORY_SIZES:-100000 1000000}; do
    d="$W/mem-$n"
    mkdir -p "$d/m/zones" "$d/k/zones" "$d/k/db" "$d/k/run"
    numbered_zone "$n" >"$d/m/zones/example.com.zone"
    cp "$d/m/zones/example.com.zone" "$d/k/zones/"
    awk -v n="$n" 'BEGIN { srand(19); for (i = 0; i < 200000; i++) printf "h%07d.example.com A\n", int(rand() * n) }' >"$d/q.txt"
    printf '[server]\nlisten = ["127.0.0.1:%s"]\nzones = "zones"\n' "$PORT_M" >"$d/m/meridian.toml"
    sed -e "s|@DIR@|$d/k|g" -e "s|@PORT@|$PORT_K|g" "$harness/configs/knot/knot.conf" >"$d/k/knot.conf"
    last=$(printf 'h%07d.example.com' $((n - 1)))
    sync; echo 1 >/proc/sys/vm/drop_caches 2>/dev/null || true

    t0=$(date +%s.%N)
    kp=$(start_bg "$d/k/knot.log" knotd -c "$d/k/knot.conf")
    kload=$(answered_after "$PORT_K" "$last" "$t0")
    t0=$(date +%s.%N)
    mp=$(MERIDIAN_LOG=info start_bg "$d/m/meridian.log" "$bin" serve --config "$d/m/meridian.toml")
    mload=$(answered_after "$PORT_M" "$last" "$t0")
    mcpu=$(awk -v t="$TICKS" '{printf "%.2f", ($14 + $15) / t}' "/proc/$mp/stat")
    sleep 3
    krss=$(kb "$kp" VmRSS); mrss=$(kb "$mp" VmRSS)
    kill "$kp"; wait "$kp" 2>/dev/null || true

    # Reload under load: reset the high-water mark, sample RSS, SIGHUP two seconds in.
    echo 5 >"/proc/$mp/clear_refs"
    (while kill -0 "$mp" 2>/dev/null; do kb "$mp" VmRSS; sleep 0.01; done) >"$d/rss-samples.txt" &
    local sampler=$!
    (sleep 2; kill -HUP "$mp") &
    # Long enough to cover the whole reload, which a loaded machine stretches.
    out=$(timeout $((${MEMORY_DUR:-30} + 15)) taskset -c 1 dnsperf -s 127.0.0.1 -p "$PORT_M" -d "$d/q.txt" -l "${MEMORY_DUR:-30}" -c 4 -Q 20000 -t 1 2>&1)
    wait $!
    hwm=$(kb "$mp" VmHWM)
    kill "$mp"; wait "$mp" 2>/dev/null || true
    wait "$sampler" 2>/dev/null || true
    peak=$(sort -n "$d/rss-samples.txt" | tail -1)
    took=$(grep -o 'took_ms=[0-9.]*' "$d/m/meridian.log" | tail -1 | cut -d= -f2)
    printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$n" "$krss" "$mrss" \
      "$(awk -v a="$mrss" -v b="$krss" 'BEGIN {printf "%.2f", a / b}')" "$kload" "$mload" "$mcpu" "${took:-?}" "$peak" \
      "$(awk -v a="$peak" -v b="$mrss" 'BEGIN {printf "%.2f", a / b}')" "$hwm" \
      "$(awk '/Queries sent/ {print $3}' <<<"$out")" "$(awk '/Queries lost/ {print $3}' <<<"$out")" >>"$W/memory.tsv"
  done
  column -t "$W/memory.tsv"
}

for w in "${what[@]}"; do
  echo "== $w ($(date -u '+%F %T') UTC)"
  "bench_$w"
done
