#!/usr/bin/env bash
# The query log's cost (SPEC "Observability", budget: sample:100 <= 3 % of QPS per core, dnstap
# of every query <= 15 %), measured with the shared harness in the pinned mode: logging off,
# [log] queries = "sample:100", and dnstap of all queries to a file, interleaved rep by rep so
# that a busy spell of a shared machine hits every variant alike. Prints each run (the
# harness's runs.tsv columns after the variant) and the medians of QPS and of QPS per server
# core (qps / server_cpu_pct * 100). Usage: REPS=3 DURATION=10 bash bench/querylog.sh
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
REPS="${REPS:-3}"
VARIANTS="${VARIANTS:-off sample:100 dnstap}"
export DURATION="${DURATION:-10}" SERVERS=ours MODES=pinned
export WORK="${WORK:-/tmp/dns-anchors}"
out="${OUT:-/tmp/meridian-querylog-bench.tsv}"
: > "$out"
for rep in $(seq 1 "$REPS"); do
  for v in $VARIANTS; do
    log="$(mktemp)"
    QUERYLOG="$v" REPS=1 bash "$here/run.sh" > "$log" 2>&1 || { cat "$log" >&2; exit 1; }
    res="$(ls -td "$WORK"/results/*/ | head -1)"
    tail -n +2 "$res/runs.tsv" | sed "s|^|$v\t|" | tee -a "$out"
    rm -f "$log" "$WORK/meridian/bench.dnstap" "$WORK/meridian/bench.dnstap.1"
  done
done
echo "variant  median_qps  median_qps_per_core  runs"
for v in $VARIANTS; do
  awk -F'\t' -v v="$v" '$1 == v { q[n + 0] = $5; c[n + 0] = ($11 > 0 ? $5 / $11 * 100 : 0); n++ }
    function med(a, n,   i, j, t) { for (i = 0; i < n; i++) for (j = i + 1; j < n; j++)
      if (a[j] < a[i]) { t = a[i]; a[i] = a[j]; a[j] = t } return n ? a[int((n - 1) / 2)] : 0 }
    END { printf "%-8s %10.0f %12.0f %6d\n", v, med(q, n), med(c, n), n }' "$out"
done
