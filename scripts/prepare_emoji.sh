#!/usr/bin/env bash
# Builds the Emoji-4vendor ReID benchmark (shared/benchmarks/emoji-reid.md) with the featlearn program:
# npm pack of the four pinned packages, rsvg-convert for the SVG vendor, lists in VeriWild format.
# Usage: scripts/prepare_emoji.sh [--out dataset/emoji_reid] [--cache dataset/.npm_cache]
# Idempotent: a complete output directory is detected by its .emoji_prep_done marker and reused.
set -euo pipefail
cd "$(dirname "$0")/.."
BUILD_DIR=${BUILD_DIR:-build}
if [ ! -x "$BUILD_DIR/featlearn" ]; then
  echo "prepare_emoji: $BUILD_DIR/featlearn not found; build it first (scripts/setup.sh)" >&2
  exit 1
fi
exec "$BUILD_DIR/featlearn" prepare-emoji "$@"
