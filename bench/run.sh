#!/usr/bin/env bash
# Runs meridian side by side with gdnsd and Knot (and PowerDNS if asked) under dnsperf, using
# the shared harness in ../shared/bench. One command on a fresh machine of this kind:
#   bash bench/run.sh                     # pinned + ecs + tcp + unpinned, 3 interleaved reps
#   QUICK=1 bash bench/run.sh             # harness check: 1 rep x 5 s
#   SERVERS="gdnsd knot ours" MODES="pinned ecs" REPS=3 bash bench/run.sh
#   RRL=1 bash bench/run.sh               # meridian with [rrl] on (rates high enough that
#                                         # nothing is limited: every query pays the accounting)
#                                         # and a client cookie on every query (each reply
#                                         # computes a server cookie); compare against a run
#                                         # without, gdnsd being the anchor in both
#   QUERYLOG=sample:100 bash bench/run.sh # meridian with [log] queries = "sample:100" (lines on
#                                         # the server's stderr, i.e. its harness log file)
#   QUERYLOG=all bash bench/run.sh        # every query as a log line
#   QUERYLOG=dnstap bash bench/run.sh     # every query as dnstap into $WORK/meridian/bench.dnstap
#                                         # (bench/querylog.sh interleaves off/sample/dnstap)
# Results: /tmp/dns-anchors/results/<timestamp>/summary.md (printed at the end).
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
repo="$(dirname "$here")"
harness="${HARNESS:-$repo/../shared/bench}"
[ -x "$harness/run.sh" ] || { echo "bench: no harness at $harness" >&2; exit 1; }

if ! command -v dnsperf >/dev/null || ! command -v gdnsd >/dev/null || ! command -v knotd >/dev/null; then
  bash "$harness/install.sh"
fi

(cd "$repo" && cargo build --release --locked)

export WORK="${WORK:-/tmp/dns-anchors}"
export OURS_PORT="${OURS_PORT:-5314}"
mkdir -p "$WORK/meridian"
sed -e "s|@PORT@|$OURS_PORT|" -e "s|@ZONES@|$WORK/ours|" \
  "$here/meridian-bench.toml.in" > "$WORK/meridian/meridian.toml"
if [ "${RRL:-0}" = 1 ]; then
  sed -i 's|^\[site\]|cookie_secret = "000102030405060708090a0b0c0d0e0f"\n\n[site]|' "$WORK/meridian/meridian.toml"
  cat >> "$WORK/meridian/meridian.toml" <<'EOF'

[rrl]
responses_per_second = 1000000
nxdomains_per_second = 1000000
errors_per_second = 1000000
window = "5s"
slip = 2
EOF
  export DNSPERF_EXTRA="${DNSPERF_EXTRA:-} -E 10:0102030405060708"
  export OURS_NAME="${OURS_NAME:-meridian+rrl+cookies}"
fi
case "${QUERYLOG:-}" in
  "" | off) ;;
  dnstap)
    printf '\n[log]\nqueries = "all"\ndnstap = "file:%s"\n' "$WORK/meridian/bench.dnstap" \
      >> "$WORK/meridian/meridian.toml"
    export OURS_NAME="${OURS_NAME:-meridian+dnstap}" ;;
  *)
    printf '\n[log]\nqueries = "%s"\n' "$QUERYLOG" >> "$WORK/meridian/meridian.toml"
    export OURS_NAME="${OURS_NAME:-meridian+querylog-${QUERYLOG/:/}}" ;;
esac
export OURS_CMD="$repo/target/release/meridian serve --config $WORK/meridian/meridian.toml"
export OURS_NAME="${OURS_NAME:-meridian}"
export MERIDIAN_LOG="${MERIDIAN_LOG:-warn}"
export SERVERS="${SERVERS:-gdnsd knot ours}"
export MODES="${MODES:-pinned ecs tcp unpinned}"
exec bash "$harness/run.sh"
