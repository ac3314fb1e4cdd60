#!/usr/bin/env bash
# The test command (README): installs what is missing, builds, generates the reference fixtures with Debian's
# python3-torch/torchvision (once), and runs every GoogleTest suite with ctest.
set -euo pipefail
cd "$(dirname "$0")/.."
BUILD_DIR=${BUILD_DIR:-build}
export BUILD_DIR
bash scripts/setup.sh
if [ -f tests/fixtures/make_fixtures.py ]; then
  /usr/bin/python3 tests/fixtures/make_fixtures.py --out "$BUILD_DIR/fixtures"
fi
(cd "$BUILD_DIR" && ctest --output-on-failure -j"$(nproc)" "$@")
# The unit tests again under ASan + UBSan, and every fuzz target for FUZZ_SECONDS (default 20) each, in
# build-san/ (docs/testing.md); a sanitizer report or a fuzz finding fails the run. FEATLEARN_SKIP_FUZZ=1 skips.
if [ "${FEATLEARN_SKIP_FUZZ:-0}" != 1 ]; then
  bash scripts/fuzz.sh --with-tests "${FUZZ_SECONDS:-20}"
fi
