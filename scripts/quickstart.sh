#!/usr/bin/env bash
# The main job (README command 1): on a fresh Debian 12 machine, install + build, prepare the Emoji-4vendor
# ReID benchmark from npm packages, train the seed recipe (ResNet18, 64x64, 20 epochs), evaluate, export the
# inference model, print Recall@1/5, mAP and mINP, write the HTML report (output/emoji_r18/report.html); then build a gallery index of the test identities drawn by
# vendors 0-2 with the exported model, search it with vendor 3's drawings and print top-1 / top-5 accuracy.
#   scripts/quickstart.sh [extra -o overrides for train/eval, e.g. -o Global.epochs=2]
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh --target featlearn_cli
CFG=configs/emoji/ResNet18_reid.yaml
OUT=output/emoji_r18
build/featlearn prepare-emoji --out dataset/emoji_reid --cache dataset/.npm_cache
build/featlearn train -c "$CFG" -o Global.output_dir=$OUT/ "$@"
build/featlearn eval -c "$CFG" -o Global.output_dir=$OUT/ -o Global.pretrained_model=$OUT/RecModel/latest "$@"
build/featlearn export -c "$CFG" -o Global.output_dir=$OUT/ -o Global.pretrained_model=$OUT/RecModel/latest "$@"

# The visual report of the run: curves, metrics, CMC, ranked grids of the worst / random / best queries.
build/featlearn report $OUT "$@"

# Retrieval demo: gallery = test images of vendors (camid) 0-2, queries = vendor 3.
awk '$3 != 3' dataset/emoji_reid/test_list.txt > dataset/emoji_reid/gallery_vendor012.txt
awk '$3 == 3' dataset/emoji_reid/test_list.txt > dataset/emoji_reid/query_vendor3.txt
ICFG=configs/emoji/index_emoji.yaml
build/featlearn index build -c "$ICFG"

echo
echo "Emoji-4vendor ReID (test split, query = gallery, same id + same vendor excluded):"
cat $OUT/eval_metrics.json
echo
echo "Retrieval demo (featlearn index: gallery = test identities drawn by vendors 0-2, queries = vendor 3):"
build/featlearn index eval -c "$ICFG" --list dataset/emoji_reid/query_vendor3.txt --top-k 5 \
  --out $OUT/index_eval.json > /dev/null
echo "Report (open it in a browser; self-contained, no network): $OUT/report.html"
echo "TensorBoard curves: tensorboard --logdir $OUT/tensorboard"
echo "Serve it:  build/featlearn serve -c $ICFG --port 8080   (README: querying it with curl)"
