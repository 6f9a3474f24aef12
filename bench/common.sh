# Helpers that bench/extra.sh and bench/scale.sh share; sourced, not run. Both set DUR (seconds
# per dnsperf run) before calling dnsperf_point.

TICKS=$(getconf CLK_TCK)

# CPU ticks (user + system) a process has used so far.
cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }

# dnsperf_point PID PORT QUERYFILE [dnsperf args...] -> "qps<TAB>server_cpu_pct<TAB>lost":
# one dnsperf run pinned to core 1, with the server's CPU share over the same span.
dnsperf_point() {
  local pid=$1 port=$2 file=$3; shift 3
  local t0 t1 out qps lost
  t0=$(cpu_ticks "$pid")
  out=$(timeout $((DUR + 15)) taskset -c 1 dnsperf -s 127.0.0.1 -p "$port" -d "$file" -l "$DUR" -c 4 "$@" 2>&1)
  t1=$(cpu_ticks "$pid")
  qps=$(awk '/Queries per second/ {print $4}' <<<"$out")
  lost=$(awk '/Queries lost/ {print $3}' <<<"$out")
  awk -v a="$t0" -v b="$t1" -v t="$TICKS" -v d="$DUR" -v q="$qps" -v l="$lost" \
    'BEGIN {printf "%s\t%.1f\t%s\n", q, (b - a) / t / d * 100, l}'
}

# numbered_zone N: example.com with its SOA, NS and glue, plus N A records h0000000..
numbered_zone() {
  awk -v n="$1" 'BEGIN {
    print "$TTL 300"
    print "@ IN SOA ns1.example.com. hostmaster.example.com. 1 7200 1800 1209600 300"
    print "@ IN NS ns1.example.com."
    print "ns1 IN A 192.0.2.53"
    for (i = 0; i < n; i++) printf "h%07d IN A 10.%d.%d.%d\n", i, int(i / 65536) % 256, int(i / 256) % 256, i % 256
  }'
}

# rrl_config FILE: [rrl] on with rates high enough that nothing is limited (every response pays
# the accounting), and a fixed cookie_secret; bench/run.sh (RRL=1) and bench/extra.sh rrl.
# The client cookie that goes with it: dnsperf $COOKIE_ARGS (each reply computes a server cookie).
COOKIE_ARGS="-E 10:0102030405060708"
rrl_config() {
  sed -i 's|^\[site\]|cookie_secret = "000102030405060708090a0b0c0d0e0f"\n\n[site]|' "$1"
  cat >>"$1" <<'EOT'

[rrl]
responses_per_second = 1000000
nxdomains_per_second = 1000000
errors_per_second = 1000000
window = "5s"
slip = 2
EOT
}
