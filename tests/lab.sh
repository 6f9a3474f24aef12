# Shared by the namespace labs (tests/anycast/run.sh, tests/xdp/run.sh), sourced after they set
# LAB (the name in their last line, e.g. "anycast"), LAB_TITLE (what a skip says did not run)
# and T0: the pass/fail tally, its last line and exit status, and the skip that is loud on a
# developer's machine and a failure under CI=true (where .ci/run runs the labs as root, so a
# skip would hide that nothing was checked).
PASSED=0
FAILED=0

pass() { PASSED=$((PASSED + 1)); echo "  ok   $*"; }
fail() { FAILED=$((FAILED + 1)); echo "  FAIL $*"; }
check() { local what=$1; shift; if "$@"; then pass "$what"; else fail "$what"; fi; }
finish() {
  echo "$LAB: $PASSED passed, $FAILED failed ($(($(date +%s) - T0)) s)"
  [ "$FAILED" -eq 0 ]
  exit $?
}

skip() {
  if [ "${CI:-}" = true ]; then
    echo "!! tests/$LAB/run.sh cannot run under CI=true: $*"
    echo "$LAB: 0 passed, 1 failed (could not run: $*)"
    exit 1
  fi
  echo "################################################################################"
  echo "## SKIPPED: tests/$LAB/run.sh: $*"
  echo "## $LAB_TITLE did NOT run."
  echo "################################################################################"
  echo "$LAB: 0 passed, 0 failed (skipped)"
  exit 0
}

# need_root_and TOOL...: root (else skip) and every tool (a missing one fails everywhere).
need_root_and() {
  [ "$(id -u)" -eq 0 ] || skip "needs root for network namespaces"
  local tool
  for tool in "$@"; do
    command -v "$tool" >/dev/null 2>&1 || { echo "tests/$LAB: $tool is not installed"; FAILED=1; finish; }
  done
}
