#!/usr/bin/env bash
# Soak: meridian under steady load for a long time, with everything that could make it leak,
# drift or crash happening at once:
#   - valid queries (static, balanced, CNAME, referral, NXDOMAIN, ANY, TCP) at 50 % of the
#     peak measured first, from 127.0.0.1 (RRL-exempt, so the rate is really served);
#   - malformed and random packets from 127.0.0.9 (bench/soak_noise.py), which RRL does limit;
#   - a SIGHUP every 10 s (a full reload of config, zone and GeoIP database);
#   - an endpoint whose health URL flips between 200 and 503 every 2 s.
# Every SEGMENT seconds it records RSS, answered QPS, p50/p99 and lost queries. At the end it
# reports RSS drift after the first minute, panics, and every WARN/ERROR line in the log.
# Usage: bash bench/soak.sh [MINUTES]   (default 10). Server on core 0, load on core 1.
# Everything listens on 127.0.0.1 only and stops by itself.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
repo="$(dirname "$here")"
MINUTES="${1:-${MINUTES:-10}}"
SEGMENT="${SEGMENT:-30}"
W="${WORK:-/tmp/meridian-soak}"
PORT=5331 HEALTH_PORT=5332
command -v dnsperf >/dev/null || { echo "soak: needs dnsperf (apt-get install dnsperf)" >&2; exit 2; }

(cd "$repo" && cargo build --release --locked --bin meridian)
bin="$repo/target/release/meridian"
rm -rf "$W" && mkdir -p "$W/zones"
cp "$repo/zones/example.com.zone" "$W/zones/"
pids=()
cleanup() { for p in "${pids[@]:-}"; do [ -n "$p" ] && kill "$p" 2>/dev/null || true; done; }
trap cleanup EXIT

# The shipped config, on its own port, plus RRL, cookies and a flapping service.
sed -e "s#^listen = \\[\"127.0.0.1:5300\"\\].*#listen = [\"127.0.0.1:$PORT\"]#" \
    -e "s#\"\\.\\./zones\"#\"zones\"#" \
    -e "s#\"\\.\\./geoip/#\"$repo/geoip/#" \
    -e "s#^listen = \"127.0.0.1:9053\"#listen = \"127.0.0.1:5333\"#" \
    "$repo/config/meridian.toml" >"$W/meridian.toml"
cat >>"$W/meridian.toml" <<EOF

[rrl]
responses_per_second = 20
nxdomains_per_second = 20
errors_per_second = 20
window = "5s"
slip = 2
exempt = ["127.0.0.1/32"]

[health.flap]
kind = "http"
path = "/health"
port = $HEALTH_PORT
interval = "1s"
timeout = "500ms"
rise = 1
fall = 1

[[service]]
name = "flap.example.com"
policy = "failover"
ttl = 30
health = "flap"
endpoints = [
  { address = "127.0.0.1", priority = 1 },
  { address = "127.0.0.2", priority = 2, check = "http://127.0.0.1:$HEALTH_PORT/always" },
]
EOF
"$bin" check --config "$W/meridian.toml"

# A health server whose /health flips every 2 s; /always stays up.
cat >"$W/flap.py" <<'EOF'
import http.server, sys, time
class H(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        up = self.path == "/always" or int(time.time() / 2) % 2 == 0
        self.send_response(200 if up else 503)
        self.send_header("Content-Length", "2")
        self.end_headers()
        self.wfile.write(b"ok" if up else b"no")
    def log_message(self, *a):
        pass
http.server.ThreadingHTTPServer(("127.0.0.1", int(sys.argv[1])), H).serve_forever()
EOF
taskset -c 1 python3 "$W/flap.py" "$HEALTH_PORT" &
pids+=($!)

# The valid mix: every kind of answer the server gives.
awk 'BEGIN {
  srand(17)
  split("www.example.com A|www.example.com AAAA|api.example.com A|mail.example.com A|mail.example.com AAAA|example.com SOA|example.com NS|example.com MX|example.com TXT|example.com ANY|flap.example.com A|host.lab.example.com A|_imaps._tcp.example.com SRV|mail.example.com TXT", q, "|")
  for (i = 0; i < 100000; i++) {
    if (i % 5 == 0) printf "nx-%08d.example.com A\n", int(rand() * 100000000)
    else print q[1 + int(rand() * 14)]
  }
}' >"$W/q-mix.txt"

taskset -c 0 "$bin" serve --config "$W/meridian.toml" >"$W/meridian.log" 2>&1 &
mp=$!
pids+=("$mp")
for _ in $(seq 50); do dig +time=1 +tries=1 @127.0.0.1 -p "$PORT" example.com SOA >/dev/null 2>&1 && break; sleep 0.2; done

peak=$(taskset -c 1 dnsperf -s 127.0.0.1 -p "$PORT" -d "$W/q-mix.txt" -l 10 -c 4 -q 200 2>&1 | awk '/Queries per second/ {printf "%d", $4}')
rate=$((peak / 2))
echo "peak $peak QPS; soaking at $rate QPS (50 %) for $MINUTES min, segments of $SEGMENT s"

end=$(($(date +%s) + MINUTES * 60))
( while [ "$(date +%s)" -lt "$end" ]; do sleep 10; kill -HUP "$mp" 2>/dev/null || exit 0; done ) &
pids+=($!)
taskset -c 1 python3 "$here/soak_noise.py" 127.0.0.1 "$PORT" 127.0.0.9 $((MINUTES * 60)) 2000 >"$W/noise.txt" 2>&1 &
pids+=($!)
taskset -c 1 timeout $((MINUTES * 60 + 30)) dnsperf -m tcp -s 127.0.0.1 -p "$PORT" -d "$W/q-mix.txt" -l $((MINUTES * 60)) -c 8 -Q 500 >"$W/tcp.txt" 2>&1 &
pids+=($!)

printf 't_s\trss_kb\tqps\tp50_ms\tp99_ms\tlost\n' | tee "$W/soak.tsv"
t0=$(date +%s)
while [ "$(date +%s)" -lt "$end" ]; do
  taskset -c 1 timeout $((SEGMENT + 15)) dnsperf -s 127.0.0.1 -p "$PORT" -d "$W/q-mix.txt" -l "$SEGMENT" -c 4 -Q "$rate" -v >"$W/seg.txt" 2>&1 || true
  rss=$(awk '/VmRSS/ {print $2}' "/proc/$mp/status")
  # Percentiles from a 10 us histogram of dnsperf's per-query latencies (no sort of millions).
  awk -v t=$(($(date +%s) - t0)) -v rss="$rss" '
    /^> / { b = int($NF * 100000); h[b]++; n++ }
    /Queries per second/ { qps = $4 }
    /Queries lost/ { lost = $3 }
    END {
      c = 0; p50 = p99 = -1
      for (b = 0; b <= 1000000 && p99 < 0; b++) { c += h[b]; if (p50 < 0 && c >= n * 0.5) p50 = b; if (c >= n * 0.99) p99 = b }
      printf "%d\t%d\t%.0f\t%.3f\t%.3f\t%s\n", t, rss, qps, p50 / 100, p99 / 100, lost
    }' "$W/seg.txt" | tee -a "$W/soak.tsv"
done
sleep 2

echo "== TCP load: $(grep -E 'Queries (completed|lost)' "$W/tcp.txt" | tr -s ' ' | tr '\n' ' ')"
echo "== noise: $(tail -1 "$W/noise.txt")"
kill -0 "$mp" 2>/dev/null && echo "== server alive after $MINUTES min" || echo "== SERVER DIED"
awk -F'\t' 'NR > 1 && $1 >= 60 { if (!base) base = $2; if ($2 < lo || !lo) lo = $2; if ($2 > hi) hi = $2; p[++n] = $5 }
  END { if (base) printf "RSS after the first minute: %d..%d kB (%.1f%% .. %+.1f%% of %d kB); p99 %.3f..%.3f ms\n", lo, hi, (lo - base) * 100 / base, (hi - base) * 100 / base, base, p[1], p[n] }' "$W/soak.tsv"
echo "reloads: $(grep -c 'reload' "$W/meridian.log" || true) log lines mention reload"
echo "panics: $(grep -c 'panicked' "$W/meridian.log" || true)"
echo "WARN/ERROR lines by message (health flaps are expected):"
grep -E ' (WARN|ERROR) ' "$W/meridian.log" | sed -E 's/^[^ ]+ +//; s/[0-9]+(\.[0-9]+)?(ms|s|µs)?/N/g' | sort | uniq -c | sort -rn | head -20 || true
