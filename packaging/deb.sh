#!/usr/bin/env bash
# Builds the Debian package and proves that it installs and works on this machine (CI is root):
#   release build -> man pages (meridian man) -> cargo deb --no-build -> dpkg -i ->
#   checks of what got installed -> systemd-analyze verify of the installed unit -> dpkg --purge.
# Run by .ci/run (CI=true: not root is a failure); by hand: `bash packaging/deb.sh` (the install
# half needs root, else skipped).
# Leaves target/debian/meridian_*.deb (and meridian-dbgsym_*.ddeb, the symbols) behind.
set -euo pipefail
cd "$(dirname "$0")/.."

command -v cargo-deb >/dev/null 2>&1 || cargo install cargo-deb --locked

echo "== package: release build"
# With [fleet] support: the package is how most operators get it (it needs protoc to build).
cargo build --release --locked --features fleet --bin meridian
# Pages from the binary being packaged, so they describe exactly its subcommands.
rm -rf target/man
target/release/meridian man --out target/man
# The example recipes, as installed: the repo's point at ../../geoip/, which the package keeps in
# /usr/share/meridian/geoip/ (not beside the examples), so the packaged copies say so.
rm -rf target/examples
mkdir -p target/examples/configs/anycast
for f in examples/configs/*.toml examples/configs/anycast/*; do
  sed 's#"\(\.\./\)*geoip/#"/usr/share/meridian/geoip/#' "$f" >"target/${f}"
done
echo "== package: cargo deb"
# --no-build: the binary above is the one packaged; cargo deb would otherwise build it again.
# It prints the path of each file it wrote: the .deb, and the .ddeb of the debug symbols.
built="$(cargo deb --no-build --locked --fast --features fleet)"
deb="$(printf '%s\n' "$built" | grep '\.deb$' | tail -n 1 || true)"
[ -f "$deb" ] || { echo "cargo deb printed no package path: $deb" >&2; exit 1; }
printf 'built %s\n' $built
dpkg-deb --info "$deb" | sed -n '/Package:/,/Description:/p'
dpkg-deb --contents "$deb" | awk '{print $6}'

if [ "$(id -u)" -ne 0 ]; then
  # Under CI=true (.ci/run, as root) a skipped install check would pass having proved nothing.
  if [ "${CI:-}" = true ]; then
    echo "!! package: not root under CI=true: the install check cannot run" >&2
    exit 1
  fi
  echo "== package: not root, install check skipped"
  exit 0
fi

if ! command -v systemd-analyze >/dev/null 2>&1; then
  echo "== package: installing systemd (for systemd-analyze verify)"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq -o DPkg::Lock::Timeout=300 --no-install-recommends systemd >/dev/null
fi

fail() { echo "package check failed: $*" >&2; exit 1; }
# dpkg does not wait for its lock; an apt run elsewhere on the machine (another build's
# installs, unattended-upgrades) holds it for a while. Retry on that error only, for up to 5 min.
dpkg_waiting() {
  local out
  for _ in $(seq 150); do
    if out="$(dpkg "$@" 2>&1)"; then printf '%s\n' "$out"; return 0; fi
    grep -qE 'frontend lock|database is locked|lock-frontend' <<<"$out" || { printf '%s\n' "$out" >&2; return 1; }
    sleep 2
  done
  printf '%s\n' "$out" >&2
  return 1
}
# Whatever happens below, the machine is left without the package.
trap 'dpkg_waiting --purge meridian >/dev/null 2>&1 || true' EXIT

echo "== package: dpkg -i"
dpkg_waiting -i "$deb"
getent passwd meridian >/dev/null || fail "postinst did not create the meridian user"
[ "$(stat -c '%U:%G %a' /etc/meridian/meridian.toml)" = "root:meridian 640" ] ||
  fail "/etc/meridian/meridian.toml is $(stat -c '%U:%G %a' /etc/meridian/meridian.toml), want root:meridian 640"
conffiles="$(dpkg-query -W -f='${Conffiles}\n' meridian)"
for f in /etc/meridian/meridian.toml /etc/meridian/zones/example.com.zone; do
  grep -q " $f " <<<"$conffiles" || fail "$f is not a conffile"
done
for f in /usr/bin/meridian /usr/share/man/man1/meridian.1.gz /usr/share/man/man1/meridian-serve.1.gz \
         /usr/share/meridian/geoip/default.mmdb /usr/share/doc/meridian/running.md \
         /usr/share/doc/meridian/examples/configs/geo.toml; do
  [ -e "$f" ] || fail "$f is not installed"
done
# The installed config, read as the user the unit runs as: paths and permissions both right.
runuser -u meridian -- /usr/bin/meridian check --config /etc/meridian/meridian.toml
# The installed example recipes work where they are installed (GeoIP path included).
for f in /usr/share/doc/meridian/examples/configs/*.toml /usr/share/doc/meridian/examples/configs/anycast/*.toml; do
  /usr/bin/meridian check --config "$f" >/dev/null || fail "installed example $f does not pass check"
done
unit="$(dpkg -L meridian | grep '/meridian\.service$')"
echo "== package: systemd-analyze verify $unit"
# verify also checks that the ExecStart/ExecReload binaries exist, which they now do.
verify="$(systemd-analyze verify "$unit" 2>&1)" || { echo "$verify"; fail "systemd-analyze verify"; }
[ -z "$verify" ] || { echo "$verify"; fail "systemd-analyze verify warned"; }
# The sandbox's exposure score, for the log (offline: no running manager is needed).
systemd-analyze security --offline=true "$unit" 2>/dev/null | tail -n 1 || true

echo "== package: dpkg --purge"
trap - EXIT
dpkg_waiting --purge meridian
for f in /usr/bin/meridian /etc/meridian /var/lib/meridian; do
  [ ! -e "$f" ] || fail "$f is left after purge"
done
echo "package ok: $deb"
