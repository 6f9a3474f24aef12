#!/usr/bin/env bash
# End-to-end anycast test (SPEC "Anycast") with real BIRD 2, real ExaBGP and the real meridian
# binary in network namespaces:
#
#              client 203.0.113.10
#                    |
#   upstream (BIRD, AS 65000) 203.0.113.1 ---------------------------.
#        | 192.0.2.1/30                            | 192.0.2.5/30     |
#        | 192.0.2.2/30                            | 192.0.2.6/30     |
#   site A (AS 65001)                         site B (AS 65002)
#   meridian -> BIRD control socket           ExaBGP runs meridian as its API process
#   -> static protocol -> BGP                 (path prepended at the upstream: A wins)
#   198.51.100.53/32 on anycast0              198.51.100.53/32 on anycast0
#
# Needs root, ip netns, bird/birdc, exabgp, iptables, python3. Without root or network
# namespaces it skips LOUDLY (exit 0) on a developer's machine, and FAILS (exit 1) under
# CI=true, where .ci/run runs it as root and a skip would hide that nothing was checked. A
# missing tool is a failure everywhere. Prints "anycast: N passed, N failed" last; exit 1 on
# any failure.
# MERIDIAN=path overrides the binary (default: target/debug/meridian, built first). KEEP=1 keeps
# the logs (they are kept anyway when a check fails).
set -uo pipefail

HERE="$(cd "$(dirname "$0")" && pwd)"
ROOT="$(cd "$HERE/../.." && pwd)"
T0=$(date +%s)
LAB=anycast
LAB_TITLE="The anycast end-to-end test"
# shellcheck source=tests/lab.sh
. "$ROOT/tests/lab.sh"
now() { date +%s.%N; }
# Seconds between two `now` stamps, 2 decimals.
secs() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2f", b - a }'; }
le() { awk -v a="$1" -v b="$2" 'BEGIN { exit !(a <= b) }'; }

need_root_and ip bird birdc exabgp iptables python3 timeout

ID=$$
UP=mrd-up-$ID A=mrd-a-$ID B=mrd-b-$ID C=mrd-c-$ID
ip netns add "$UP" 2>/dev/null || skip "cannot create a network namespace (ip netns add)"
ip netns add "$A" && ip netns add "$B" && ip netns add "$C" || { ip netns del "$UP"; skip "cannot create network namespaces"; }

W="$(mktemp -d /tmp/meridian-anycast.XXXXXX)"
PIDS=()
cleanup() {
  exec 2>/dev/null # no "Killed" job notices for what we stop here
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null; done
  sleep 0.3
  for p in "${PIDS[@]}"; do kill -9 "$p" 2>/dev/null; done
  # Anything still running inside our namespaces (ExaBGP's child, a restarted BIRD).
  for ns in "$UP" "$A" "$B" "$C"; do
    for p in $(ip netns pids "$ns" 2>/dev/null); do kill -9 "$p" 2>/dev/null; done
    ip netns del "$ns" 2>/dev/null
  done
  if [ "$FAILED" -ne 0 ] || [ -n "${KEEP:-}" ]; then
    echo "tests/anycast: logs kept in $W"
  else
    rm -rf "$W"
  fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

if [ -z "${MERIDIAN:-}" ]; then
  # The debug build: the same one `cargo test` makes, so CI compiles nothing twice.
  (cd "$ROOT" && cargo build --locked --quiet --bin meridian) || { fail "cargo build"; finish; }
  MERIDIAN="$ROOT/target/debug/meridian"
fi

echo "== anycast: topology in $W"
for ns in "$UP" "$A" "$B" "$C"; do
  ip -n "$ns" link set lo up
  # Replies leave a site toward a client whose route may point elsewhere: no reverse-path filter.
  ip netns exec "$ns" sysctl -qw net.ipv4.conf.all.rp_filter=0 net.ipv4.conf.default.rp_filter=0
done
ip netns exec "$UP" sysctl -qw net.ipv4.ip_forward=1
ip -n "$UP" link add ua type veth peer name au netns "$A"
ip -n "$UP" link add ub type veth peer name bu netns "$B"
ip -n "$UP" link add uc type veth peer name cu netns "$C"
ip -n "$UP" addr add 192.0.2.1/30 dev ua
ip -n "$UP" addr add 192.0.2.5/30 dev ub
ip -n "$UP" addr add 203.0.113.1/24 dev uc
for l in ua ub uc; do ip -n "$UP" link set "$l" up; done
ip -n "$A" addr add 192.0.2.2/30 dev au && ip -n "$A" link set au up && ip -n "$A" route add default via 192.0.2.1
ip -n "$B" addr add 192.0.2.6/30 dev bu && ip -n "$B" link set bu up && ip -n "$B" route add default via 192.0.2.5
ip -n "$C" addr add 203.0.113.10/24 dev cu && ip -n "$C" link set cu up && ip -n "$C" route add default via 203.0.113.1
for ns in "$A" "$B"; do
  # The service address on a dummy interface; kernels without the dummy driver get a veth
  # pair kept inside the site instead (any local address is answered alike).
  if ! ip -n "$ns" link add anycast0 type dummy 2>/dev/null; then
    ip -n "$ns" link add anycast0 type veth peer name anycast0p
    ip -n "$ns" link set anycast0p up
  fi
  ip -n "$ns" addr add 198.51.100.53/32 dev anycast0
  ip -n "$ns" link set anycast0 up
done

# Configs from the templates beside this script (the ones docs/anycast.md shows).
mkdir -p "$W/up" "$W/a/zones" "$W/b/zones" "$W/a/www" "$W/b/www"
cp "$HERE/upstream.bird.conf" "$W/up/bird.conf"
cp "$HERE/site-a.bird.conf" "$W/a/bird.conf"
sed -e "s|@MERIDIAN@|$MERIDIAN|" -e "s|@DIR@|$W|" "$HERE/site-b.exabgp.conf" > "$W/b/exabgp.conf"
for s in a b; do
  cp "$HERE/example.net.zone" "$W/$s/zones/"
  echo ok > "$W/$s/www/health"
done
sed -e 's|@SITE_ID@|site-a|' -e 's|@SITE_LOCATION@|{ lat = 50.11, lon = 8.68 }|' -e 's|@SITE_REGION@|eu-central|' \
    -e "s|@SPEAKER@|speaker = \"bird\"\nbird_socket = \"$W/a/bird.ctl\"\nbird_protocol = \"meridian_anycast\"|" \
    "$HERE/meridian.toml.in" > "$W/a/meridian.toml"
sed -e 's|@SITE_ID@|site-b|' -e 's|@SITE_LOCATION@|{ lat = 38.9, lon = -77.0 }|' -e 's|@SITE_REGION@|us-east|' \
    -e 's|@SPEAKER@|speaker = "exabgp"|' \
    "$HERE/meridian.toml.in" > "$W/b/meridian.toml"

check "meridian check validates [anycast] without BIRD running" "$MERIDIAN" check --config "$W/a/meridian.toml"

start_bird() { # namespace dir
  ip netns exec "$1" bird -f -c "$2/bird.conf" -s "$2/bird.ctl" -P "$2/bird.pid" >>"$2/bird.log" 2>&1 &
  PIDS+=($!)
  BIRD_PID=$!
  for _ in $(seq 50); do [ -S "$2/bird.ctl" ] && return 0; sleep 0.1; done
  return 1
}
start_http() { # namespace dir
  ip netns exec "$1" python3 -m http.server 18080 --bind 127.0.0.1 --directory "$2/www" >>"$2/http.log" 2>&1 &
  PIDS+=($!)
  HTTP_PID=$!
}
start_meridian_a() {
  ip netns exec "$A" "$MERIDIAN" serve --config "$W/a/meridian.toml" >>"$W/a/stdout" 2>>"$W/a/meridian.log" &
  PIDS+=($!)
  MA=$!
}
admin() { # namespace path
  ip netns exec "$1" python3 - "$2" <<'EOF'
import sys, urllib.request
r = urllib.request.Request("http://127.0.0.1:9053" + sys.argv[1], method="POST", data=b"",
                           headers={"Authorization": "Bearer anycast-test-token"})
print(urllib.request.urlopen(r, timeout=5).read().decode())
EOF
}
status_field() { # namespace field
  ip netns exec "$1" python3 -c '
import json, sys, urllib.request
s = json.load(urllib.request.urlopen("http://127.0.0.1:9053/status", timeout=5))
print(json.dumps(s["anycast"][sys.argv[1]]) if s.get("anycast") else "null")' "$2"
}
up_routes() { birdc -s "$W/up/bird.ctl" show route 198.51.100.53/32 2>/dev/null; }
# The protocols the upstream has a route from, e.g. "site_a site_b"; the preferred one first.
up_from() {
  up_routes | awk '/unicast \[/ { sub(/^.*unicast \[/, ""); split($0, f, " "); p[f[1]] = ($0 ~ /\*/) }
                   END { for (k in p) if (p[k]) printf "%s ", k; for (k in p) if (!p[k]) printf "%s ", k }' | sed 's/ $//'
}
has_route_from() { up_from | tr ' ' '\n' | grep -qx "$1"; }
nsid() { ip netns exec "$C" python3 "$HERE/dnsq.py" ask 198.51.100.53 "${1:-example.net}"; }
wait_for() { # seconds command...: true when the command succeeds within the time; prints the time
  local deadline; deadline=$(awk -v n="$(now)" -v t="$1" 'BEGIN { printf "%.3f", n + t }'); shift
  while :; do
    if "$@" >/dev/null 2>&1; then now; return 0; fi
    le "$(now)" "$deadline" || return 1
    sleep 0.05
  done
}
client_wait() { # nsid seconds: prints the Unix time the client was first answered by it
  ip netns exec "$C" python3 "$HERE/dnsq.py" wait 198.51.100.53 "$1" "$2"
}
not_from_a() { ! has_route_from site_a; }
both_sites() { has_route_from site_a && has_route_from site_b; }

echo "== anycast: starting BIRD (upstream, site A), ExaBGP + meridian (site B), meridian (site A)"
start_bird "$UP" "$W/up" || fail "upstream BIRD did not start"
start_bird "$A" "$W/a" || fail "site A BIRD did not start"
BIRD_A=$BIRD_PID
start_http "$A" "$W/a"; HTTP_A=$HTTP_PID
start_http "$B" "$W/b"
ip netns exec "$B" env exabgp.daemon.user=root exabgp.daemon.daemonize=false exabgp.api.cli=false \
  exabgp.log.destination=stderr exabgp.tcp.bind= exabgp "$W/b/exabgp.conf" >>"$W/b/exabgp.log" 2>&1 &
PIDS+=($!)
start_meridian_a

# Both sites announce within the BGP start-up time plus rise × interval.
wait_for 20 both_sites >/dev/null
routes="$(up_from)"
check "upstream learns 198.51.100.53/32 from both sites, A preferred ($routes)" test "$routes" = "site_a site_b"
up_routes | sed 's/^/    /'
read -r ns geo <<<"$(nsid geo.example.net)"
check "client reaches site A (NSID $ns)" test "$ns" = site-a
check "geo answer from site A is the eu-central endpoint ($geo)" test "$geo" = 192.0.2.110
check "/status anycast at A: announced, speaker bird" test "$(status_field "$A" announced) $(status_field "$A" speaker)" = 'true "bird"'
check "site A's stdout is empty (logs go to stderr)" test ! -s "$W/a/stdout"
# Site B's stdout is ExaBGP's API pipe: every line ExaBGP read must have been a route command.
check "ExaBGP took meridian's announce line" grep -q "route added .*198.51.100.53/32 next-hop self" "$W/b/exabgp.log"
check "ExaBGP saw nothing on meridian's stdout but commands" bash -c "! grep -qi 'not understood\|could not\|invalid\|unknown command' '$W/b/exabgp.log'"

# --- 1. require unmet: A's application health endpoint goes down.
echo "== anycast: A's service health endpoint stops (require = every-service)"
t_fail=$(now)
kill "$HTTP_A"
t_gone=$(wait_for 6 not_from_a)
t_b=$(client_wait site-b 6)
if [ -n "$t_gone" ] && [ -n "$t_b" ]; then
  FAIL_ROUTE=$(secs "$t_fail" "$t_gone"); FAIL_CLIENT=$(secs "$t_fail" "$t_b")
  echo "    failure -> route gone at upstream: ${FAIL_ROUTE} s; failure -> client answered by B: ${FAIL_CLIENT} s"
  # Budget: interval × fall + 2 s, plus the health probe's own interval to see the endpoint down.
  check "route and client moved to B within 0.5 s × 2 + 2 s + probe 0.25 s" le "$FAIL_CLIENT" 3.25
else
  fail "route from A not withdrawn / client not moved to B within 6 s ($(up_from))"
fi
check "/status at A says services" test "$(status_field "$A" reason)" = '"services"'
read -r ns geo <<<"$(nsid geo.example.net)"
check "client answered by B (NSID $ns)" test "$ns" = site-b
check "geo answer from site B is the us-east endpoint ($geo)" test "$geo" = 192.0.2.120
t_rec=$(now)
start_http "$A" "$W/a"; HTTP_A=$HTTP_PID
t_a=$(client_wait site-a 6)
if [ -n "$t_a" ]; then
  RECOVER=$(secs "$t_rec" "$t_a")
  echo "    recovery -> back to A: ${RECOVER} s"
  check "back to A within 0.5 s × 2 + 2 s + probe" le "$RECOVER" 3.5
else
  fail "client not back on A within 6 s"
fi

# --- 2. the DNS self-check itself fails: A's own queries to its listener are dropped.
if ip netns exec "$A" iptables -A INPUT -i lo -p udp --dport 53 -j DROP 2>/dev/null; then
  echo "== anycast: A's self-check queries dropped (iptables on lo)"
  t_fail=$(now)
  t_b=$(client_wait site-b 6)
  if [ -n "$t_b" ]; then
    SELF_CLIENT=$(secs "$t_fail" "$t_b")
    echo "    self-check failure -> client answered by B: ${SELF_CLIENT} s"
    check "self-check failure moves the client to B within 0.5 s × 2 + 2 s" le "$SELF_CLIENT" 3
  else
    fail "self-check failure did not move the client to B within 6 s"
  fi
  check "/status at A says self-check" test "$(status_field "$A" reason)" = '"self-check"'
  ip netns exec "$A" iptables -D INPUT -i lo -p udp --dport 53 -j DROP
  t_a=$(client_wait site-a 6)
  check "back to A after the self-check recovers" test -n "$t_a"
else
  fail "iptables could not drop A's self-check queries: the DNS self-check stall was not exercised"
fi

# --- 3. withdraw file and the admin API.
echo "== anycast: withdraw file"
touch "$W/a/withdraw"
t_b=$(client_wait site-b 4); check "withdraw file moves the client to B" test -n "$t_b"
check "/status at A says withdraw-file" test "$(status_field "$A" reason)" = '"withdraw-file"'
rm -f "$W/a/withdraw"
t_a=$(client_wait site-a 4); check "removing it brings the client back to A" test -n "$t_a"

echo "== anycast: admin API withdraw / announce"
admin "$A" /api/v1/anycast/withdraw >/dev/null
t_b=$(client_wait site-b 4); check "POST /api/v1/anycast/withdraw moves the client to B" test -n "$t_b"
check "/status at A says manual" test "$(status_field "$A" reason) $(status_field "$A" announced)" = '"manual" false'
admin "$A" /api/v1/anycast/announce >/dev/null
t_a=$(client_wait site-a 4); check "POST /api/v1/anycast/announce brings it back" test -n "$t_a"
metrics="$(ip netns exec "$A" python3 -c 'import urllib.request; print(urllib.request.urlopen("http://127.0.0.1:9053/metrics").read().decode())')"
check "metrics: meridian_anycast_announced 1" grep -qx 'meridian_anycast_announced 1' <<<"$metrics"
check "metrics: a manual withdraw was counted" grep -q 'meridian_anycast_transitions_total{to="withdrawn",reason="manual"} 1' <<<"$metrics"

# --- 4. BIRD on site A restarts: meridian re-asserts enable and the route comes back.
echo "== anycast: BIRD at site A restarted"
kill "$BIRD_A"; wait "$BIRD_A" 2>/dev/null
t_gone=$(wait_for 6 not_from_a)
check "route from A gone while its BIRD is down" test -n "$t_gone"
t_restart=$(now)
start_bird "$A" "$W/a" || fail "site A BIRD did not restart"
BIRD_A=$BIRD_PID
t_back=$(wait_for 20 has_route_from site_a)
if [ -n "$t_back" ]; then
  BIRD_BACK=$(secs "$t_restart" "$t_back")
  echo "    BIRD restart -> route from A back at upstream: ${BIRD_BACK} s"
  pass "meridian re-enabled the protocol in the restarted BIRD"
else
  fail "route from A did not come back after BIRD's restart"
fi
check "meridian logged BIRD going away" grep -q "cannot connect to BIRD\|BIRD closed\|cannot send" "$W/a/meridian.log"
t_a=$(client_wait site-a 6); check "client back on A" test -n "$t_a"

# --- 5. ExaBGP restarts meridian at site B (ExaBGP respawns a process that died).
echo "== anycast: meridian at site B killed; ExaBGP starts a fresh one"
MB=$(ip netns pids "$B" | while read -r p; do [ "$(readlink /proc/"$p"/exe 2>/dev/null)" = "$MERIDIAN" ] && echo "$p"; done | head -1)
# ExaBGP need not withdraw a dead API process's routes, so B's route proves nothing by itself:
# wait for a meridian with another pid and for one more announce line from it.
announces() { grep -c "route added .*198.51.100.53/32 next-hop self" "$W/b/exabgp.log"; }
new_meridian_b() {
  local p
  for p in $(ip netns pids "$B"); do
    [ "$p" != "$MB" ] && [ "$(readlink /proc/"$p"/exe 2>/dev/null)" = "$MERIDIAN" ] && return 0
  done
  return 1
}
more_announces() { [ "$(announces)" -gt "$1" ]; }
if [ -n "$MB" ]; then
  n_before=$(announces)
  kill -9 "$MB"
  t_new=$(wait_for 15 new_meridian_b)
  check "ExaBGP started a new meridian process (old pid $MB)" test -n "$t_new"
  t_ann=$(wait_for 15 more_announces "$n_before")
  check "ExaBGP took a new announce line from it ($n_before before)" test -n "$t_ann"
  t_back=$(wait_for 15 has_route_from site_b)
  check "route from B is there after ExaBGP restarted meridian" test -n "$t_back"
else
  fail "no meridian process found in site B"
fi

# --- 6. planned restart of A under load: SIGTERM, zero lost queries.
echo "== anycast: SIGTERM of site A under 250 queries/s"
LOAD="$W/load.out"
ip netns exec "$C" python3 "$HERE/dnsq.py" load 198.51.100.53 250 8 >"$LOAD" &
LOADER=$!
sleep 2
kill -TERM "$MA"
t_term=$(now)
wait "$MA"; rc=$?
t_exit=$(now)
check "meridian A exits 0 after SIGTERM (rc $rc)" test "$rc" -eq 0
EXIT_AFTER=$(secs "$t_term" "$t_exit")
echo "    SIGTERM -> exit: ${EXIT_AFTER} s (shutdown_grace 2 s)"
wait "$LOADER"
echo "    client: $(cat "$LOAD")"
LOST=$(awk '{ print $6 }' "$LOAD")
check "no query lost across the planned restart (lost ${LOST:-?})" test "${LOST:-1}" = 0
check "queries were answered by both sites during it" grep -q 'site-a=[0-9]* site-b=[0-9]*' "$LOAD"
start_meridian_a
t_a=$(client_wait site-a 10); check "restarted site A takes traffic back" test -n "$t_a"

echo "== anycast: measured"
echo "    failure -> route gone at upstream:   ${FAIL_ROUTE:-?} s"
echo "    failure -> client answered by B:     ${FAIL_CLIENT:-?} s"
echo "    self-check failure -> client on B:   ${SELF_CLIENT:-?} s"
echo "    recovery -> back to A:               ${RECOVER:-?} s"
echo "    BIRD restart -> route back:          ${BIRD_BACK:-?} s"
echo "    SIGTERM -> exit:                     ${EXIT_AFTER:-?} s"
echo "    queries lost across planned restart: ${LOST:-?}"
finish
