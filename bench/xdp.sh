#!/usr/bin/env bash
# The AF_XDP bench of issue 23 (docs/performance.md, "AF_XDP"): meridian over AF_XDP and over
# its UDP sockets, Knot 3.2 in XDP mode and over UDP, in a veth lab between two network
# namespaces, with kxdpgun (Debian knot-dnsutils) as the generator.
#
#   client namespace: vc 192.0.2.2, kxdpgun on core 1 (and vc's NAPI thread)
#   server namespace: vs 192.0.2.1, the server and vs's NAPI thread pinned to core 0
#
# Native XDP on veth in copy mode, TSO off, GRO on, threaded NAPI (so the receive work is on a
# thread we can pin, not on the sender's CPU). For each server: fixed offered loads (LOADS),
# then the peak (kxdpgun at PEAK). "busy" is the CPU time of the server's threads and of vs's
# NAPI thread over the run's wall time, in % of one core (so other work on the shared machine
# does not count); "per-core" is replies/s per busy core. Root only.
#
# Usage: bash bench/xdp.sh   (env: LOADS="150000 300000 400000" PEAK=2000000 DURATION=10
#        SERVERS="meridian-xdp meridian-udp knot-xdp knot-udp" MERIDIAN=path)
set -uo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
repo="$(cd "$here/.." && pwd)"
LOADS="${LOADS:-150000 300000 400000}"
PEAK="${PEAK:-2000000}"
DUR="${DURATION:-10}"
SERVERS="${SERVERS:-meridian-xdp meridian-udp knot-xdp knot-udp}"
[ "$(id -u)" -eq 0 ] || { echo "bench/xdp.sh: needs root"; exit 1; }
for t in kxdpgun knotd ethtool taskset ip; do
  command -v "$t" >/dev/null || { echo "bench/xdp.sh: needs $t (apt-get install knot knot-dnsutils ethtool)"; exit 1; }
done
if [ -z "${MERIDIAN:-}" ]; then
  (cd "$repo" && cargo build --release --locked --features xdp --bin meridian) || exit 1
  MERIDIAN="$repo/target/release/meridian"
fi

S=mrd-bs-$$ C=mrd-bc-$$
W="$(mktemp -d /tmp/meridian-xdpbench.XXXXXX)"
SPID=
cleanup() {
  [ -n "$SPID" ] && kill "$SPID" 2>/dev/null
  for ns in "$S" "$C"; do
    for p in $(ip netns pids "$ns" 2>/dev/null); do kill -9 "$p" 2>/dev/null; done
    ip netns del "$ns" 2>/dev/null
  done
  echo "bench/xdp.sh: logs in $W"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

ip netns add "$S" && ip netns add "$C" || exit 1
ip -n "$S" link add vs type veth peer name vc netns "$C"
ip -n "$S" addr add 192.0.2.1/24 dev vs
ip -n "$C" addr add 192.0.2.2/24 dev vc
for ns in "$S" "$C"; do ip -n "$ns" link set lo up; done
ip -n "$S" link set vs up
ip -n "$C" link set vc up
ip netns exec "$S" ethtool -K vs tso off gro on >/dev/null 2>&1
ip netns exec "$C" ethtool -K vc tso off gro on >/dev/null 2>&1
if [ "${THREADED:-1}" = 1 ]; then
  ip netns exec "$S" sh -c 'echo 1 > /sys/class/net/vs/threaded'
fi
# The client side's NAPI: threaded and pinned beside kxdpgun only when asked (CLIENT_THREADED=1):
# kxdpgun keeps core 1 busy, and a NAPI thread pinned there starves and drops replies.
[ "${CLIENT_THREADED:-0}" = 1 ] && ip netns exec "$C" sh -c 'echo 1 > /sys/class/net/vc/threaded'
ip netns exec "$C" ping -q -c 1 -W 2 192.0.2.1 >/dev/null # ARP both ways before kxdpgun

mkdir -p "$W/m/zones" "$W/k/zones" "$W/k/db" "$W/k/run"
cp "$repo/tests/xdp/example.net.zone" "$W/m/zones/"
cp "$repo/tests/xdp/example.net.zone" "$W/k/zones/"
for i in $(seq 100); do echo "static.example.net. A"; done >"$W/queries.txt"
mconf() { # xdp-line
  cat <<EOC
[server]
listen = ["192.0.2.1:53"]
zones = "zones"
udp_sockets = 1
$1
EOC
}
kconf() { # xdp-section
  cat <<EOC
server:
    rundir: "$W/k/run"
    listen: 192.0.2.1@53
    udp-workers: 1
    tcp-workers: 1
    background-workers: 1
$1
log:
  - target: stderr
    any: warning
database:
    storage: "$W/k/db"
template:
  - id: default
    storage: "$W/k/zones"
    file: "%s.zone"
    zonefile-sync: -1
    journal-content: none
zone:
  - domain: example.net.
EOC
}
mconf 'xdp = ["vs"]' >"$W/m/xdp.toml"
mconf '' >"$W/m/udp.toml"
kconf $'xdp:\n    listen: vs\n    udp: on' >"$W/k/xdp.conf"
kconf '' >"$W/k/udp.conf"

pin_napi() { # core: pins this lab's NAPI threads (vs to core 0, vc to core 1)
  local p
  for p in $(ps -eo pid=,comm= | awk '$2 ~ /^napi\/vs-/ { print $1 }'); do taskset -p -c 0 "$p" >/dev/null; done
  for p in $(ps -eo pid=,comm= | awk '$2 ~ /^napi\/vc-/ { print $1 }'); do taskset -p -c 1 "$p" >/dev/null; done
}
start() { # name
  case $1 in
    meridian-xdp) ip netns exec "$S" taskset -c 0 "$MERIDIAN" serve --config "$W/m/xdp.toml" 2>"$W/$1.log" & ;;
    meridian-udp) ip netns exec "$S" taskset -c 0 "$MERIDIAN" serve --config "$W/m/udp.toml" 2>"$W/$1.log" & ;;
    knot-xdp) ip netns exec "$S" knotd -c "$W/k/xdp.conf" 2>"$W/$1.log" & ;;
    knot-udp) ip netns exec "$S" knotd -c "$W/k/udp.conf" 2>"$W/$1.log" & ;;
  esac
  SPID=$!
  sleep 2
  # knotd sets its own threads' affinity: pin every thread after the start.
  taskset -a -p -c 0 "$SPID" >/dev/null
  pin_napi
}
stop() { kill "$SPID"; wait "$SPID" 2>/dev/null; SPID=; sleep 1; }
# CPU ticks (user + system) of the server's threads and of vs's NAPI threads: what serving
# costs, whatever else runs on the shared core.
ticks() {
  local p
  { cat /proc/"$SPID"/task/*/stat 2>/dev/null
    for p in $(ps -eo pid=,comm= | awk '$2 ~ /^napi\/vs-/ { print $1 }'); do cat /proc/"$p"/stat; done
  } | awk '{ sub(/^.*\) /, ""); t += $12 + $13 } END { print t + 0 }'
}
run() { # server load: prints "server load replies/s busy% qps/busy-core"
  local out replies t0 t1 w0 w1
  t0=$(ticks); w0=$(date +%s.%N)
  out="$(ip netns exec "$C" kxdpgun -t "$DUR" -Q "$2" -F 1 -I vc -i "$W/queries.txt" 192.0.2.1 2>&1)"
  t1=$(ticks); w1=$(date +%s.%N)
  echo "$out" >>"$W/$1.kxdpgun"
  replies=$(sed -n 's/^total replies: *[0-9]* (\([0-9]*\) pps).*/\1/p' <<<"$out")
  awk -v s="$1" -v l="$2" -v r="${replies:-0}" -v t="$((t1 - t0))" -v w="$w1 - $w0" -v hz="$(getconf CLK_TCK)" \
    'BEGIN { split(w, x, " - "); b = 100 * t / hz / (x[1] - x[2]); pc = (b > 0) ? r / (b / 100) : 0
             printf "%-13s %8s %9d %6.1f %10.0f\n", s, l, r, b, pc }'
}

printf '%-13s %8s %9s %6s %10s\n' server offered replies/s busy% per-core
for s in $SERVERS; do
  start "$s"
  for l in $LOADS; do run "$s" "$l"; done
  run "$s" "$PEAK"
  stop
done | tee "$W/results.txt"
