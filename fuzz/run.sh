#!/usr/bin/env bash
# Builds the fuzz targets and runs each for SECONDS (default 60); exits non-zero when any target
# finds a crash, a hang or a differential mismatch (the input is left in fuzz/artifacts/TARGET/).
# Usage: fuzz/run.sh [SECONDS]. See docs/fuzzing.md.
set -euo pipefail
cd "$(dirname "$0")"
secs="${1:-60}"
# cargo-fuzz passes -Z flags to rustc; there is no nightly toolchain here, so let stable take them.
export RUSTC_BOOTSTRAP=1
export CARGO_TERM_COLOR="${CARGO_TERM_COLOR:-never}"
command -v cargo-fuzz >/dev/null 2>&1 || cargo install cargo-fuzz --locked

# No sanitizer: the code under test is safe Rust, where ASan finds nothing that a panic would not,
# and it halves the executions per second. Debug assertions (-a) make overflows panic.
# 16 codegen units: the dependency tree (tokio, axum, rustls, hickory) builds in about half the
# time on two cores, for a few per cent fewer executions per second.
flags=(-O -a -s none --codegen-units 16)
targets=(packet zone config transfer copy)
echo "fuzz: building ${targets[*]}"
cargo fuzz build "${flags[@]}" >/dev/null 2>build.log || { cat build.log; exit 1; }

failed=()
for t in "${targets[@]}"; do
  # New inputs go to corpus-run/ (not in git); the small seed corpus in corpus/ is only read.
  mkdir -p "corpus-run/$t" "artifacts/$t"
  log="artifacts/$t/run.log"
  echo "fuzz: $t for ${secs}s"
  if cargo fuzz run "${flags[@]}" "$t" "corpus-run/$t" "corpus/$t" -- \
      -max_total_time="$secs" -timeout=10 -max_len=4096 -print_final_stats=1 >"$log" 2>&1; then
    # The last status line has the coverage reached.
    grep -E '^#[0-9]+' "$log" | tail -n 1 | sed "s/^/fuzz: $t /" | cut -c1-160
  else
    failed+=("$t")
    grep -v -E '^#[0-9]+' "$log" | tail -n 60
    echo "fuzz: $t FAILED; input in fuzz/artifacts/$t/ (log $log)"
  fi
done
if [ ${#failed[@]} -gt 0 ]; then
  echo "fuzz: failures in ${failed[*]}"
  exit 1
fi
echo "fuzz: no crash in ${targets[*]}"
