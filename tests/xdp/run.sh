#!/usr/bin/env bash
# End-to-end test of the AF_XDP path (SPEC "Answers at the NIC", issue 23) with the real
# meridian binary built with `--features xdp`, in two network namespaces joined by a veth pair:
#
#   client namespace  vc 192.0.2.2/24 2001:db8::2/64  ──veth──  vs 192.0.2.1/24 2001:db8::1/64
#   (dig, kdig, dnscmp.py)                                       server namespace:
#                                                                 meridian A: xdp = ["vs"], port 53
#                                                                 meridian B: sockets, port 5300
#
# A and B have the same config but for the port and `xdp`, so every query must get the same
# bytes from both (tests/xdp/dnscmp.py: fast path, reference, NSID, CHAOS, TC=1, cookies,
# FORMERR, RRL slips and drops; IPv4 and IPv6). The server namespace's kernel UDP counters show
# which path answered: they must not move for queries to A. TCP, ping and UDP to an address
# that is not a listen address must still reach the kernel. The program must be gone after
# SIGTERM and after SIGKILL, and an interface that cannot do XDP must fall back to sockets.
#
# Needs root, ip netns, python3, dig, kdig, ping. Without root or network namespaces it skips
# LOUDLY (exit 0) on a developer's machine and FAILS (exit 1) under CI=true, like
# tests/anycast/run.sh. A missing tool is a failure everywhere. Prints "xdp: N passed, N
# failed" last; exit 1 on any failure. MERIDIAN=path overrides the binary (default: built here
# with --features xdp). KEEP=1 keeps the logs (kept anyway when a check fails).
set -uo pipefail

HERE="$(cd "$(dirname "$0")" && pwd)"
ROOT="$(cd "$HERE/../.." && pwd)"
T0=$(date +%s)
LAB=xdp
LAB_TITLE="The AF_XDP end-to-end test"
# shellcheck source=tests/lab.sh
. "$ROOT/tests/lab.sh"
quiet() { "$@" >/dev/null 2>&1; }

need_root_and ip python3 dig kdig ping timeout

ID=$$
S=mrd-xs-$ID C=mrd-xc-$ID
ip netns add "$S" 2>/dev/null || skip "cannot create a network namespace (ip netns add)"
ip netns add "$C" || { ip netns del "$S"; skip "cannot create network namespaces"; }

W="$(mktemp -d /tmp/meridian-xdp.XXXXXX)"
PIDS=()
cleanup() {
  exec 2>/dev/null
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null; done
  sleep 0.3
  for p in "${PIDS[@]}"; do kill -9 "$p" 2>/dev/null; done
  for ns in "$S" "$C"; do
    for p in $(ip netns pids "$ns" 2>/dev/null); do kill -9 "$p" 2>/dev/null; done
    ip netns del "$ns" 2>/dev/null
  done
  if [ "$FAILED" -ne 0 ] || [ -n "${KEEP:-}" ]; then
    echo "tests/xdp: logs kept in $W"
  else
    rm -rf "$W"
  fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

if [ -z "${MERIDIAN:-}" ]; then
  (cd "$ROOT" && cargo build --locked --quiet --features xdp --bin meridian) || { fail "cargo build --features xdp"; finish; }
  MERIDIAN="$ROOT/target/debug/meridian"
fi

echo "== xdp: veth lab in $W"
ip -n "$S" link add vs type veth peer name vc netns "$C"
ip -n "$S" addr add 192.0.2.1/24 dev vs
ip -n "$S" addr add 192.0.2.3/24 dev vs # ours too, but not a listen address
ip -n "$S" addr add 2001:db8::1/64 dev vs nodad
ip -n "$C" addr add 192.0.2.2/24 dev vc
ip -n "$C" addr add 2001:db8::2/64 dev vc nodad
for ns in "$S" "$C"; do ip -n "$ns" link set lo up; done
ip -n "$S" link set vs up
ip -n "$C" link set vc up

config() { # dir port admin-port xdp-line
  mkdir -p "$1/zones"
  cp "$HERE/example.net.zone" "$1/zones/"
  sed -e "s|@PORT@|$2|g" -e "s|@ADMIN@|$3|" -e "s|@XDP@|$4|" "$HERE/meridian.toml.in" >"$1/meridian.toml"
}
config "$W/a" 53 9053 'xdp = ["vs"]'
config "$W/b" 5300 9054 ''
config "$W/f" 5301 9055 'xdp = ["nosuch0"]'
# GET http://127.0.0.1:PORT/PATH inside the server namespace.
get() { ip netns exec "$S" python3 -c 'import sys, urllib.request; print(urllib.request.urlopen("http://127.0.0.1:" + sys.argv[1] + sys.argv[2], timeout=5).read().decode())' "$@"; }
xdp_status() { get "$1" /status | python3 -c 'import json, sys; print(json.dumps([{k: i[k] for k in ("interface", "queues", "mode")} for i in json.load(sys.stdin)["xdp"]]))'; }

start() { # dir: starts meridian in the server namespace; sets PID
  ip netns exec "$S" "$MERIDIAN" serve --config "$1/meridian.toml" >>"$1/stdout" 2>>"$1/log" &
  PID=$!
  PIDS+=($PID)
}
serving() { grep -q "serving" "$1/log"; }
wait_for() { # tenths command...
  local n=$1; shift
  for _ in $(seq "$n"); do "$@" >/dev/null 2>&1 && return 0; sleep 0.1; done
  return 1
}
xdp_attached() { ip -n "$S" link show dev vs | grep -q "prog/xdp.*meridian_xdp"; }
no_xdp() { ! ip -n "$S" link show dev vs | grep -q "xdp"; }
udp4() { ip netns exec "$S" awk '/^Udp:/ { getline; print $2 }' /proc/net/snmp; }
noports4() { ip netns exec "$S" awk '/^Udp:/ { getline; print $3 }' /proc/net/snmp; }
udp6() { ip netns exec "$S" awk '$1 == "Udp6InDatagrams" { print $2 }' /proc/net/snmp6; }
inc() { python3 "$HERE/dnscmp.py" ask "$@"; }
dig_c() { ip netns exec "$C" dig +tries=1 +time=2 +nocookie "$@"; }
kdig_c() { ip netns exec "$C" kdig +retry=0 +time=2 "$@"; }

warn="$("$MERIDIAN" check --config "$W/f/meridian.toml" 2>&1)"
check "check warns about an interface that is not there" grep -q "warning: server.xdp: no interface \`nosuch0\`" <<<"$warn"
check "check passes the lab config in the server namespace, no xdp warning" \
  bash -c "ip netns exec $S $MERIDIAN check --config $W/a/meridian.toml 2>&1 | { ! grep -q 'server.xdp'; }"

echo "== xdp: meridian A (AF_XDP on vs, port 53) and B (sockets, port 5300)"
start "$W/a"; A=$PID
start "$W/b"
wait_for 50 serving "$W/a" || fail "meridian A did not start"
wait_for 50 serving "$W/b" || fail "meridian B did not start"
check "A logs that it answers over AF_XDP on vs" grep -q "xdp: answering UDP .* on vs" "$W/a/log"
sed -n 's/.*xdp: answering/    answering/p' "$W/a/log"
check "the program is attached to vs" xdp_attached

u0=$(udp4)
out="$(dig_c @192.0.2.1 static.example.net A)"
check "dig gets the answer from the XDP path" grep -q "^static.example.net.*IN.*A.*192.0.2.99" <<<"$out"
out="$(kdig_c @192.0.2.1 static.example.net A)"
check "kdig gets the answer from the XDP path" grep -q "^static.example.net.*IN.*A.*192.0.2.99" <<<"$out"
out="$(dig_c @2001:db8::1 static.example.net AAAA)"
check "dig over IPv6 gets the answer from the XDP path" grep -q "^static.example.net.*IN.*AAAA.*2001:db8::99" <<<"$out"
check "the kernel's UDP stack saw none of those queries" test "$(udp4)" = "$u0"

echo "== xdp: the same bytes from both paths"
u0=$(udp4); v0=$(udp6)
ip netns exec "$C" python3 "$HERE/dnscmp.py" compare 192.0.2.1 2001:db8::1 53 5300 >"$W/compare.out"
rc=$?
sed 's/^/  /' "$W/compare.out"
PASSED=$((PASSED + $(grep -c '^ok' "$W/compare.out")))
FAILED=$((FAILED + $(grep -c '^FAIL' "$W/compare.out")))
[ "$rc" -eq 0 ] || grep -q '^FAIL' "$W/compare.out" || fail "dnscmp.py exited $rc"
read -r n4 n6 < <(sed -n 's/^socket-queries v4=\([0-9]*\) v6=\([0-9]*\)/\1 \2/p' "$W/compare.out")
d4=$(($(udp4) - u0)); d6=$(($(udp6) - v0))
check "kernel UDP counted only the socket path's queries: IPv4 $d4 of ${n4:-?}" test "$d4" = "${n4:-x}"
check "kernel UDP6 counted only the socket path's queries: IPv6 $d6 of ${n6:-?}" test "$d6" = "${n6:-x}"

st="$(xdp_status 9053)"
check "/status of A: xdp $st" test "$st" = '[{"interface": "vs", "queues": 1, "mode": "native"}]'
answered="$(get 9053 /metrics | sed -n 's/^meridian_xdp_answered_total{interface="vs"} //p')"
check "metrics of A count the replies sent on vs (${answered:-none})" test "${answered:-0}" -ge 60
line="$(ip netns exec "$S" "$MERIDIAN" status --admin 127.0.0.1:9053 2>&1 | grep '^xdp ')"
check "meridian status of A has an xdp line: ${line:-none}" grep -q 'vs: 1 queue(s), native copy, [0-9]* answered' <<<"$line"
st="$(xdp_status 9054)"
check "/status of B (no xdp): xdp $st" test "$st" = '[]'

echo "== xdp: everything else still reaches the kernel"
out="$(dig_c +tcp @192.0.2.1 static.example.net A)"
check "DNS over TCP to port 53 is answered (kernel, TCP listener)" grep -q "^static.example.net.*192.0.2.99" <<<"$out"
out="$(kdig_c +tcp @2001:db8::1 static.example.net AAAA)"
check "DNS over TCP/IPv6 is answered" grep -q "^static.example.net.*2001:db8::99" <<<"$out"
check "ping to the server (ICMP) is answered" quiet ip netns exec "$C" ping -q -c 2 -W 2 -i 0.2 192.0.2.1
check "ping over IPv6 is answered" quiet ip netns exec "$C" ping -q -6 -c 2 -W 2 -i 0.2 2001:db8::1
p0=$(noports4)
r="$(ip netns exec "$C" python3 "$HERE/dnscmp.py" ask 192.0.2.3 53 static.example.net A)"
check "UDP to port 53 of an address we do not listen on goes to the kernel (no socket: $r)" \
  test "$(($(noports4) - p0))" -ge 1
u0=$(udp4)
r="$(ip netns exec "$C" python3 "$HERE/dnscmp.py" ask 192.0.2.1 5300 static.example.net A)"
check "UDP to another port goes to the kernel ($r)" test "$(($(udp4) - u0))" -ge 1

echo "== xdp: SIGKILL, then a restart at once (5 times)"
# The kernel frees a killed process's AF_XDP socket a moment later: a restart at once (as
# systemd's Restart= does) must wait for the queue, not fall back to the sockets for good.
for round in 1 2 3 4 5; do
  kill -9 "$A"; wait "$A" 2>/dev/null
  check "round $round: no XDP program is left on vs after SIGKILL" wait_for 20 no_xdp
  : >"$W/a/log"
  start "$W/a"; A=$PID
  wait_for 50 serving "$W/a" || fail "meridian A did not restart"
  check "round $round: the restarted A attaches again" xdp_attached
  u0=$(udp4)
  out="$(dig_c @192.0.2.1 static.example.net A)"
  check "round $round: and answers over AF_XDP" bash -c "grep -q '192.0.2.99' <<<'$out' && test $(udp4) = $u0"
done

echo "== xdp: SIGTERM"
kill -TERM "$A"; wait "$A"; rc=$?
check "A exits 0 after SIGTERM (rc $rc)" test "$rc" -eq 0
check "no XDP program is left on vs after exit" no_xdp
check "A logged the detach" grep -q "xdp: program detached" "$W/a/log"

echo "== xdp: an interface that cannot do XDP falls back to sockets"
start "$W/f"
wait_for 50 serving "$W/f" || fail "meridian F did not start"
check "serve logs why XDP is not used on nosuch0" grep -q "xdp: not used on nosuch0: no interface named nosuch0" "$W/f/log"
st="$(xdp_status 9055)"
check "its /status shows no xdp interface: $st" test "$st" = '[]'
u0=$(udp4)
r="$(ip netns exec "$C" python3 "$HERE/dnscmp.py" ask 192.0.2.1 5301 static.example.net A)"
check "its queries are answered by the UDP sockets ($r)" bash -c "test '$r' = 'rcode=0 ancount=1' && test $(($(udp4) - u0)) -ge 1"
finish
