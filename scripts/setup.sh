#!/usr/bin/env bash
# Installs every Debian package featlearn needs (idempotent), then configures and builds.
# Usage: scripts/setup.sh [--no-build | --target TARGET]
set -euo pipefail
cd "$(dirname "$0")/.."

PKGS=(build-essential cmake ninja-build pkg-config
      libtorch-dev libgloo-dev libopenblas0-openmp
      libopencv-dev libyaml-cpp-dev libfaiss-dev libcli11-dev nlohmann-json3-dev
      libspdlog-dev libfmt-dev zlib1g-dev
      libcpp-httplib-dev libssl-dev libsqlite3-dev libxxhash-dev libonnx-dev libprotobuf-dev protobuf-compiler libcrcutil-dev
      libgtest-dev libgmock-dev libbenchmark-dev clang llvm
      librsvg2-bin curl chromium   # chromium: the report's headless browser test
      python3-torch python3-torchvision    # python: test fixtures and side-by-side peers only
      python3-pil python3-numpy python3-protobuf python3-crc32c python3-faiss python3-fastapi python3-uvicorn python3-uvloop hey)

missing=()
for p in "${PKGS[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  echo "setup: installing ${missing[*]}"
  $SUDO apt-get update
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y --no-install-recommends "${missing[@]}"
fi

[ "${1:-}" = "--no-build" ] && exit 0
# --target T builds only T (the quickstart builds just the program, not the tests).
TARGET_ARGS=()
[ "${1:-}" = "--target" ] && TARGET_ARGS=(--target "$2")
BUILD_DIR=${BUILD_DIR:-build}
cmake -S . -B "$BUILD_DIR" -G Ninja -DCMAKE_BUILD_TYPE=Release
cmake --build "$BUILD_DIR" -j"$(nproc)" "${TARGET_ARGS[@]}"
