#!/usr/bin/env bash
# DNSViz against the shipped zone as meridian serves it on loopback: prints every finding at
# warning level or above and exits 1 if there is any. Needs Debian's dnsviz (installed if missing).
#   bash tests/external/dnsviz.sh [path/to/meridian]
set -euo pipefail
repo="$(cd "$(dirname "$0")/../.." && pwd)"
bin="${1:-$repo/target/release/meridian}"
port="${PORT:-5391}"
command -v dnsviz >/dev/null || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq dnsviz >/dev/null; }
[ -x "$bin" ] || (cd "$repo" && cargo build --release --bin meridian)
work="$(mktemp -d)"
trap 'kill "$pid" 2>/dev/null || true; rm -rf "$work"' EXIT
sed -e "s|^listen = \\[\"127.0.0.1:5300\"\\]|listen = [\"127.0.0.1:$port\"]|" \
    -e "s|\"../zones\"|\"$repo/zones\"|" -e "s|\"../geoip/|\"$repo/geoip/|" \
    -e "s|^listen = \"127.0.0.1:9053\"|listen = \"127.0.0.1:0\"|" \
    "$repo/config/meridian.toml" >"$work/meridian.toml"
MERIDIAN_LOG=warn "$bin" serve --config "$work/meridian.toml" &
pid=$!
sleep 1
servers="ns1.example.com=127.0.0.1:$port,ns2.example.com=127.0.0.1:$port"
timeout 300 dnsviz probe -A -x "example.com+:$servers" \
  example.com www.example.com api.example.com mail.example.com _imaps._tcp.example.com \
  >"$work/probe.json"
findings="$(timeout 120 dnsviz grok -l warning <"$work/probe.json")"
if [ -n "$findings" ]; then
  echo "$findings"
  exit 1
fi
echo "dnsviz: no findings at warning level or above for $(python3 -c 'import json,sys; print(", ".join(k for k in json.load(open(sys.argv[1])) if k != "_meta._dnsviz."))' "$work/probe.json")"
