#!/usr/bin/env bash
# The main job (README command 1): on a fresh Debian 12 machine, install + build, prepare the Emoji-4vendor
# ReID benchmark from npm packages, train the seed recipe (ResNet18, 64x64, 20 epochs), evaluate, export the
# inference model, and print Recall@1/5, mAP and mINP.
#   scripts/quickstart.sh [extra -o overrides for train/eval, e.g. -o Global.epochs=2]
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh --target featlearn_cli
CFG=configs/emoji/ResNet18_reid.yaml
OUT=output/emoji_r18
build/featlearn prepare-emoji --out dataset/emoji_reid --cache dataset/.npm_cache
build/featlearn train -c "$CFG" -o Global.output_dir=$OUT/ "$@"
build/featlearn eval -c "$CFG" -o Global.output_dir=$OUT/ -o Global.pretrained_model=$OUT/RecModel/latest "$@"
build/featlearn export -c "$CFG" -o Global.output_dir=$OUT/ -o Global.pretrained_model=$OUT/RecModel/latest \
  -o Global.save_inference_dir=inference/emoji_r18 "$@"
echo
echo "Emoji-4vendor ReID (test split, query = gallery, same id + same vendor excluded):"
cat $OUT/eval_metrics.json
