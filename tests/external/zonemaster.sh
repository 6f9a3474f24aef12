#!/usr/bin/env bash
# Zonemaster against the shipped zone, with meridian on port 53 of the zone's own NS addresses
# inside a network namespace made for the run (nothing leaves the machine). Run as root.
#   bash tests/external/zonemaster.sh [path/to/meridian]
# Exits 1 on any finding at WARNING or above other than the two the shipped zone has by design:
#   ADDRESS01  the NS addresses are documentation prefixes (RFC 5737, RFC 3849): an example zone
#              must not point at anyone's real hosts;
#   ADDRESS02  no PTR for those addresses: reverse lookups go to the root, which the isolated
#              namespace cannot reach (and the reverse zones of documentation prefixes exist
#              nowhere).
set -euo pipefail
repo="$(cd "$(dirname "$0")/../.." && pwd)"
bin="${1:-$repo/target/release/meridian}"
ns=meridian-zm-$$
command -v zonemaster-cli >/dev/null || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq zonemaster-cli iproute2 >/dev/null; }
[ -x "$bin" ] || (cd "$repo" && cargo build --release --bin meridian)
work="$(mktemp -d)"
cleanup() { ip netns pids "$ns" 2>/dev/null | xargs -r kill 2>/dev/null || true; ip netns del "$ns" 2>/dev/null || true; rm -rf "$work"; }
trap cleanup EXIT
ip netns add "$ns"
ip -n "$ns" link set lo up
for a in 192.0.2.53/32 198.51.100.53/32; do ip -n "$ns" addr add "$a" dev lo; done
for a in 2001:db8::53/128 2001:db8:1::53/128; do ip -n "$ns" -6 addr add "$a" dev lo nodad; done
sed -e 's|^listen = \["127.0.0.1:5300"\]|listen = ["192.0.2.53:53", "198.51.100.53:53", "[2001:db8::53]:53", "[2001:db8:1::53]:53"]|' \
    -e "s|\"../zones\"|\"$repo/zones\"|" -e "s|\"../geoip/|\"$repo/geoip/|" \
    "$repo/config/meridian.toml" >"$work/meridian.toml"
MERIDIAN_LOG=warn ip netns exec "$ns" "$bin" serve --config "$work/meridian.toml" &
sleep 1
timeout 600 ip netns exec "$ns" zonemaster-cli example.com \
  --ns ns1.example.com/192.0.2.53 --ns ns1.example.com/2001:db8::53 \
  --ns ns2.example.com/198.51.100.53 --ns ns2.example.com/2001:db8:1::53 \
  --level WARNING --show-testcase | tee "$work/out.txt"
unexpected="$(grep -E ' (WARNING|ERROR|CRITICAL) ' "$work/out.txt" | grep -vE ' ADDRESS0[12] ' || true)"
if [ -n "$unexpected" ]; then
  echo "zonemaster: findings beyond the documented ones:"; echo "$unexpected"; exit 1
fi
echo "zonemaster: nothing at WARNING or above apart from ADDRESS01/ADDRESS02 (documentation addresses, see the header)"
