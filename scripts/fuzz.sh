#!/usr/bin/env bash
# Fuzzing and sanitizer checks (docs/testing.md).
#   scripts/fuzz.sh [SECONDS]               every fuzz target for SECONDS each (default $FUZZ_SECONDS, else 20)
#   scripts/fuzz.sh --with-tests [SECONDS]  first the unit tests built with ASan + UBSan, then the fuzz targets
# Builds $SAN_BUILD_DIR (default build-san: clang, FEATLEARN_FUZZ=ON) when needed. FUZZ_TARGETS selects targets
# (default: all). New corpus inputs go to $SAN_BUILD_DIR/fuzz-work/<target> (tests/fuzz/corpus stays as checked
# in); a finding stops with a non-zero exit and leaves the input in $SAN_BUILD_DIR/fuzz-findings/.
set -euo pipefail
cd "$(dirname "$0")/.."

WITH_TESTS=0
if [ "${1:-}" = "--with-tests" ]; then WITH_TESTS=1; shift; fi
FUZZ_SECONDS=${1:-${FUZZ_SECONDS:-20}}
SAN_DIR=${SAN_BUILD_DIR:-build-san}
TARGETS=${FUZZ_TARGETS:-config lists image ckpt pth pdparams npy index serve}
NPROC=$(nproc)  # before OMP_NUM_THREADS=1 below, which GNU nproc honours
JOBS=${FUZZ_JOBS:-$NPROC}
# The unit tests run under the sanitizers (the suites with parsers and file formats; see docs/testing.md).
SAN_TESTS=(test_config test_io test_metric test_data test_index test_serve)
# Per suite, tests left out (their files are not even built there, CMakeLists.txt): IndexCommands exports
# models and builds indexes through the commands (a minute under ASan; the index files are fuzz target
# `index`), ServeCrash runs the featlearn program, which the sanitizer build does not build.
declare -A SAN_FILTER=(
  [test_index]="-IndexCommands.*"
  [test_serve]="-ServeCrash.*"
)

# Sanitizer options. LibTorch, OpenCV and FAISS are not instrumented; leak detection stays on for featlearn's
# code. halt_on_error makes every report a failure. A single allocation over 2 GiB fails (std::bad_alloc, as
# on a machine without that memory) instead of ending the run: code that reads sizes from a file must turn
# that into a featlearn::Error (FAISS's reader allocates what a damaged header asks for before reading it).
export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1:halt_on_error=1:abort_on_error=1:allocator_may_return_null=1:max_allocation_size_mb=2048}
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}
export LSAN_OPTIONS=${LSAN_OPTIONS:-suppressions=$PWD/tests/fuzz/lsan.supp:print_suppressions=0}
# OpenCV reads its decoded-pixel limit when it loads: image inputs beyond 4096 x 4096 end in its error.
export OPENCV_IO_MAX_IMAGE_PIXELS=${OPENCV_IO_MAX_IMAGE_PIXELS:-16777216}
export OMP_NUM_THREADS=1

build() {
  if [ ! -f "$SAN_DIR/build.ninja" ]; then
    CXX=clang++ CC=clang cmake -S . -B "$SAN_DIR" -G Ninja -DCMAKE_BUILD_TYPE=Release -DFEATLEARN_FUZZ=ON \
      -DFEATLEARN_BUILD_BENCH=OFF >/dev/null
  fi
  local targets=(featlearn_fuzz)
  [ "$WITH_TESTS" = 1 ] && targets+=("${SAN_TESTS[@]}")
  ninja -C "$SAN_DIR" -j"${SAN_BUILD_JOBS:-$NPROC}" "${targets[@]}"
}

run_tests() {
  local failed=0
  # The reference fixtures scripts/test.sh made for the main build (else made here).
  local fixtures_of=${BUILD_DIR:-build}
  if [ ! -f "$fixtures_of/fixtures/fixtures.stamp" ]; then
    fixtures_of=$SAN_DIR
    /usr/bin/python3 tests/fixtures/make_fixtures.py --out "$SAN_DIR/fixtures"
  fi
  fixtures_of=$(cd "$fixtures_of" && pwd)
  for t in "${SAN_TESTS[@]}"; do
    local filter=${SAN_FILTER[$t]:-}
    echo "== sanitizer tests: $t ${filter:+(--gtest_filter=$filter)}"
    local start=$SECONDS
    if ! (cd "$SAN_DIR" && FEATLEARN_BINARY_DIR=$fixtures_of ./"$t" --gtest_brief=1 ${filter:+--gtest_filter="$filter"} \
          >"fuzz-logs/$t.log" 2>&1); then
      echo "FAILED: $t (log: $SAN_DIR/fuzz-logs/$t.log)"; tail -40 "$SAN_DIR/fuzz-logs/$t.log"; failed=1
    fi
    echo "   $(grep -E '^\[  (PASSED|FAILED)' "$SAN_DIR/fuzz-logs/$t.log" | head -2 | tr '\n' ' ')($((SECONDS - start)) s)"
  done
  return $failed
}

fuzz_one() {
  local t=$1
  local work="$SAN_DIR/fuzz-work/$t"
  mkdir -p "$work" "$SAN_DIR/fuzz-findings"
  "$SAN_DIR/fuzz/fuzz_$t" -max_total_time="$FUZZ_SECONDS" -timeout=20 -rss_limit_mb=4096 -max_len=65536 \
    -print_final_stats=1 -artifact_prefix="$SAN_DIR/fuzz-findings/$t-" "$work" "tests/fuzz/corpus/$t" \
    >"$SAN_DIR/fuzz-logs/fuzz_$t.log" 2>&1
}

mkdir -p "$SAN_DIR/fuzz-logs"
build
status=0
if [ "$WITH_TESTS" = 1 ]; then run_tests || status=1; fi

echo "== fuzzing ${FUZZ_SECONDS}s per target, $JOBS at a time: $TARGETS"
export -f fuzz_one
export SAN_DIR FUZZ_SECONDS
# shellcheck disable=SC2086
if ! printf '%s\n' $TARGETS | xargs -P "$JOBS" -I{} bash -c 'fuzz_one {} || { echo "FINDING: fuzz_{} (log: $SAN_DIR/fuzz-logs/fuzz_{}.log)"; exit 1; }'; then
  status=1
fi
for t in $TARGETS; do
  log="$SAN_DIR/fuzz-logs/fuzz_$t.log"
  runs=$(grep -m1 -o 'stat::number_of_executed_units: [0-9]*' "$log" 2>/dev/null | grep -o '[0-9]*$' || echo "?")
  echo "   fuzz_$t: $runs executions, corpus $(ls "$SAN_DIR/fuzz-work/$t" 2>/dev/null | wc -l) new + $(ls "tests/fuzz/corpus/$t" | wc -l) seeds"
  if grep -qE '==[0-9]+==ERROR|FINDING|runtime error|deadly signal|ERROR: libFuzzer' "$log"; then
    echo "---- $log"; grep -E -A40 '==[0-9]+==ERROR|FINDING|runtime error|ERROR: libFuzzer' "$log" | head -80
    status=1
  fi
done
exit $status
