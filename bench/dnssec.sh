#!/usr/bin/env bash
# Signed answers side by side (issue 21 "Speed"): meridian signing online, PowerDNS 4.7 with the
# same zone `pdnsutil secure-zone`d and `www` a LUA record (signed at answer time), Knot 3.2 with
# `dnssec-signing: on` (signed at load), under dnsperf with DO set on every query, in the shared
# harness (../shared/bench), pinned mode: server on core 0, dnsperf on core 1, so the summary's
# "QPS per server core" is the per-core figure. Three invocations of the harness:
#   balanced: 100 % `www.example.com A` with DO   - meridian (weighted, signed at answer time
#             from its signature cache) vs PowerDNS (LUA pickwrandom, signed at answer time);
#             Knot answers its static www set, for scale
#   static:   the harness's static names with DO  - meridian vs Knot vs PowerDNS
#   static without DO, meridian only (same signed config): what DO costs on static names
# Then a separate meridian with one service of 20 endpoints and max_answers = 2, asked for it
# with DO for DURATION s: the signature cache's hit rate (from /metrics) and the RSS.
#
#   bash bench/dnssec.sh                 # REPS=3 DURATION=15 (~8 min on an idle machine)
#   QUICK=1 bash bench/dnssec.sh         # 1 rep x 5 s: harness check
#   MERIDIAN_BIN=/path/meridian bash bench/dnssec.sh
# Results: $WORK/results/<timestamp>/summary.md for each invocation, and
# $WORK/dnssec-report.md with all three summaries and the cache/RSS lines.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
repo="$(dirname "$here")"
harness="${HARNESS:-$repo/../shared/bench}"
[ -x "$harness/run.sh" ] || { echo "bench: no harness at $harness" >&2; exit 1; }
for t in dnsperf knotd pdns_server pdnsutil dnssec-keygen curl; do
  command -v "$t" >/dev/null || PATH="$PATH:/usr/sbin:/sbin"
  command -v "$t" >/dev/null || { echo "bench: missing $t (bash $harness/install.sh; apt-get install bind9-utils curl)" >&2; exit 1; }
done

if [ -z "${MERIDIAN_BIN:-}" ]; then
  (cd "$repo" && cargo build --release --locked --bin meridian)
fi
bin="${MERIDIAN_BIN:-$repo/target/release/meridian}"

export WORK="${WORK:-/tmp/dns-anchors}"
export OURS_PORT="${OURS_PORT:-5314}"
report="$WORK/dnssec-report.md"
mkdir -p "$WORK/meridian"

# --- meridian: the harness's config plus one key (a CSK, ECDSA P-256, as the others use) ---
keys="$WORK/meridian/keys"
rm -rf "$keys" && mkdir -p "$keys"
csk=$(dnssec-keygen -K "$keys" -q -a ECDSAP256SHA256 -f KSK example.com)
sed -e "s|@PORT@|$OURS_PORT|" -e "s|@ZONES@|$WORK/ours|" \
  "$here/meridian-bench.toml.in" > "$WORK/meridian/meridian.toml"
printf '\n[[dnssec]]\nzone = "example.com"\nkeys = ["%s"]\n' "$keys/$csk.private" >> "$WORK/meridian/meridian.toml"
export OURS_CMD="$bin serve --config $WORK/meridian/meridian.toml"
export MERIDIAN_LOG="${MERIDIAN_LOG:-warn}"

# --- a copy of the harness that signs PowerDNS and Knot, and takes our query file ---
patched="$WORK/harness+dnssec"
rm -rf "$patched" && mkdir -p "$patched"
cp -r "$harness"/*.sh "$harness/configs" "$patched/"
sed -i 's|^"\$HERE/gen_queries.sh" "\$NQUERIES" > "\$QFILE"$|cp "$DNSSEC_QUERIES" "$QFILE"|' "$patched/run.sh"
grep -q 'DNSSEC_QUERIES' "$patched/run.sh" || { echo "bench: cannot give the harness our queries" >&2; exit 1; }
cat >> "$patched/lib.sh" <<'EOF'

# bench/dnssec.sh: after the harness's own configs, sign the zone in PowerDNS (a DNSSEC db for
# the bind backend; pdnsutil secure-zone with 4.7's defaults: one ECDSA P-256 key, flags 257,
# NSEC; LUA answers signed as they are made) and in Knot (dnssec-signing: on, its default
# policy: ECDSA P-256 KSK+ZSK, NSEC, signed at load).
eval "$(declare -f prepare_configs | sed '1s/prepare_configs/prepare_configs_unsigned/')"
prepare_configs() {
    prepare_configs_unsigned
    local d="$WORK/pdns"
    printf 'bind-dnssec-db=%s\n' "$d/dnssec.db" >> "$d/pdns.conf"
    pdnsutil --config-dir="$d" create-bind-db "$d/dnssec.db" > /dev/null
    pdnsutil --config-dir="$d" secure-zone example.com > /dev/null
    pdnsutil --config-dir="$d" rectify-zone example.com > /dev/null 2>&1 || true
    d="$WORK/knot"
    printf '    dnssec-signing: on\n' >> "$d/knot.conf"
}
EOF

# --- query files ---
qdir="$WORK/dnssec-queries"
mkdir -p "$qdir"
for _ in $(seq 1000); do echo "www.example.com A"; done > "$qdir/balanced.txt"
# The static names of the harness's mix (gen_queries.sh), in turn.
for _ in $(seq 100); do
  printf '%s\n' "example.com SOA" "example.com NS" "example.com MX" "example.com TXT" "example.com A" \
    "mail.example.com A" "ns1.example.com AAAA" "api.example.com A" "api.example.com AAAA" \
    "txt.example.com TXT" "static.example.com A"
done > "$qdir/static.txt"

results=()
run_harness() {   # run_harness LABEL QUERYFILE DNSPERF_EXTRA SERVERS OURS_NAME
  local label=$1 q=$2 extra=$3 servers=$4 name=$5 before
  echo "== $label: SERVERS=\"$servers\" DNSPERF_EXTRA=\"$extra\" queries $(basename "$q")" >&2
  before=$(ls "$WORK/results" 2>/dev/null | sort | tail -n 1 || true)
  DNSSEC_QUERIES="$q" DNSPERF_EXTRA="$extra" SERVERS="$servers" OURS_NAME="$name" \
    MODES="${MODES:-pinned}" bash "$patched/run.sh"
  local latest
  latest=$(ls "$WORK/results" | sort | tail -n 1)
  [ "$latest" != "$before" ] || { echo "bench: $label left no results" >&2; exit 1; }
  results+=("$label|$WORK/results/$latest")
}

run_harness "balanced, DO" "$qdir/balanced.txt" "-D" "${BALANCED_SERVERS:-ours pdns knot}" "meridian-signed"
run_harness "static, DO" "$qdir/static.txt" "-D" "${STATIC_SERVERS:-ours knot pdns}" "meridian-signed"
run_harness "static, no DO" "$qdir/static.txt" "" "ours" "meridian-signed-noDO"

# --- the signature cache and RSS for a service of 20 endpoints, max_answers = 2 ---
cache_dir="$WORK/meridian-20"
rm -rf "$cache_dir" && mkdir -p "$cache_dir/zones"
cp "$harness/configs/zone-static.inc" "$cache_dir/zones/example.com.zone"
admin_port="${ADMIN_PORT:-5399}"
{
  printf '[server]\nlisten = ["127.0.0.1:%s"]\nzones = "zones"\n\n' "$OURS_PORT"
  printf '[admin]\nlisten = "127.0.0.1:%s"\ntoken = "bench"\n\n' "$admin_port"
  printf '[[service]]\nname = "www.example.com"\npolicy = "weighted"\nmax_answers = 2\nttl = 30\nendpoints = [\n'
  for i in $(seq 1 20); do printf '  { address = "192.0.2.%d" },\n' "$i"; done
  printf ']\n\n[[dnssec]]\nzone = "example.com"\nkeys = ["%s"]\n' "$keys/$csk.private"
} > "$cache_dir/meridian.toml"
taskset -c 0 "$bin" serve --config "$cache_dir/meridian.toml" > "$cache_dir/serve.log" 2>&1 &
pid=$!
trap 'kill "$pid" 2>/dev/null || true' EXIT
for _ in $(seq 100); do
  dig +time=1 +tries=1 -p "$OURS_PORT" @127.0.0.1 example.com SOA +short 2>/dev/null | grep -q . && break
  sleep 0.2
done
rss0=$(ps -o rss= -p "$pid" | tr -d ' ')
dur="${DURATION:-15}"
[ -n "${QUICK:-}" ] && dur=5
timeout $((dur + 10)) taskset -c 1 dnsperf -s 127.0.0.1 -p "$OURS_PORT" -d "$qdir/balanced.txt" -l "$dur" -c 4 -D \
  > "$cache_dir/dnsperf.txt" 2>&1 || true
rss1=$(ps -o rss= -p "$pid" | tr -d ' ')
metrics=$(curl -s "http://127.0.0.1:$admin_port/metrics" || true)
hits=$(awk -F' ' '/^meridian_dnssec_signatures_total\{.*cache="hit"/ {print $2}' <<<"$metrics")
misses=$(awk -F' ' '/^meridian_dnssec_signatures_total\{.*cache="miss"/ {print $2}' <<<"$metrics")
refused=$(awk -F' ' '/^meridian_dnssec_signatures_refused_total / {print $2}' <<<"$metrics")
qps=$(awk '/Queries per second/ {print $4}' "$cache_dir/dnsperf.txt")
kill "$pid" 2>/dev/null || true
wait "$pid" 2>/dev/null || true
trap - EXIT
cache_line=$(awk -v h="${hits:-0}" -v m="${misses:-0}" 'BEGIN { t = h + m; printf "hits %d, misses %d, hit rate %s", h, m, (t > 0 ? sprintf("%.4f", h / t) : "n/a") }')

{
  echo "# bench/dnssec.sh, $(date -u '+%Y-%m-%d %H:%M UTC'), meridian $("$bin" --version 2>/dev/null | head -n 1) ($bin)"
  echo
  for r in "${results[@]}"; do
    echo "## ${r%%|*}"
    echo
    cat "${r#*|}/summary.md"
    echo
  done
  echo "## 20 endpoints, max_answers = 2, www A with DO for ${dur} s (meridian on core 0, dnsperf on core 1)"
  echo
  echo "- QPS ${qps:-?}; signature cache: $cache_line; refused by the signing budget: ${refused:-?}"
  echo "- RSS: ${rss0} kB after start, ${rss1} kB after the run"
  [ -n "$hits$misses" ] || echo "- (no meridian_dnssec_signatures_total in /metrics)"
} | tee "$report"
echo "report: $report" >&2
