#!/usr/bin/env bash
# Runs meridian side by side with gdnsd and Knot (and PowerDNS if asked) under dnsperf, using
# the shared harness in ../shared/bench. One command on a fresh machine of this kind:
#   bash bench/run.sh                     # pinned + ecs + tcp + tcp1 + unpinned, 3 interleaved reps
#   QUICK=1 bash bench/run.sh             # harness check: 1 rep x 5 s
#   MERIDIAN_BIN=/path/meridian bash bench/run.sh  # another build (e.g. before a change) in the
#                                         # same harness; bench/compare.sh alternates two
#   SERVERS="gdnsd knot ours" MODES="pinned ecs" REPS=3 bash bench/run.sh
#   SERVERS="gdnsd ours" MODES="tcp tcp1" REPS=3 TCP_REPS=3 bash bench/run.sh
#                                         # TCP both ways: tcp = dnsperf -m tcp (4 connections,
#                                         # pipelined); tcp1 = one query per connection
#                                         # (examples/tcp1perf.rs, TCP1_CONNS=64 at once)
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

(cd "$repo" && cargo build --release --locked --bin meridian --example tcp1perf)

export WORK="${WORK:-/tmp/dns-anchors}"
export OURS_PORT="${OURS_PORT:-5314}"
mkdir -p "$WORK/meridian"
sed -e "s|@PORT@|$OURS_PORT|" -e "s|@ZONES@|$WORK/ours|" \
  -e "s|^tcp_max_queries = .*|tcp_max_queries = ${TCP_MAX_QUERIES:-1000000000}|" \
  "$here/meridian-bench.toml.in" > "$WORK/meridian/meridian.toml"
if [ "${RRL:-0}" = 1 ]; then
  # shellcheck source=bench/common.sh
  . "$here/common.sh"
  rrl_config "$WORK/meridian/meridian.toml"
  export DNSPERF_EXTRA="${DNSPERF_EXTRA:-} $COOKIE_ARGS"
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
export OURS_CMD="${MERIDIAN_BIN:-$repo/target/release/meridian} serve --config $WORK/meridian/meridian.toml"
export OURS_NAME="${OURS_NAME:-meridian}"
export MERIDIAN_LOG="${MERIDIAN_LOG:-warn}"
export SERVERS="${SERVERS:-gdnsd knot ours}"
export MODES="${MODES:-pinned ecs tcp tcp1 unpinned}"
case " $MODES " in
  *" tcp1 "*)
    # The shared harness knows dnsperf's modes only. A copy of it gets a mode tcp1 that runs
    # the same way as tcp (server core 0, client core 1, same CPU accounting and summary) with
    # examples/tcp1perf in dnsperf's place: a `dnsperf` first in PATH hands the run to it when
    # DNSPERF_AS=tcp1 and is the real dnsperf otherwise (warm-up, other modes).
    patched="$WORK/harness+tcp1"
    rm -rf "$patched" && mkdir -p "$patched/bin"
    cp -r "$harness"/*.sh "$harness/configs" "$patched/"
    sed -i '/^ *tcp) *pre=(taskset/a\        tcp1)     pre=(taskset -c "$CLIENT_CPU" env DNSPERF_AS=tcp1) ;;' "$patched/run.sh"
    grep -q 'DNSPERF_AS=tcp1' "$patched/run.sh" || { echo "bench: cannot add tcp1 to the harness" >&2; exit 1; }
    REAL_DNSPERF="$(command -v dnsperf)"
    export REAL_DNSPERF TCP1PERF="$repo/target/release/examples/tcp1perf" TCP1_CONNS="${TCP1_CONNS:-64}"
    cp "$here/tcp1-dnsperf" "$patched/bin/dnsperf"
    export PATH="$patched/bin:$PATH"
    exec bash "$patched/run.sh" ;;
esac
exec bash "$harness/run.sh"
