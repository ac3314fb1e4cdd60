#!/usr/bin/env bash
# Feature extraction throughput, `featlearn extract` vs the PyTorch peer (bench/peer_extract.py: torchvision
# ResNet50, torch DataLoader with PIL decode/resize/normalize, eval + inference_mode, all cores) and the exported
# model.onnx in OpenCV DNN (bench/bench_onnx_opencv.cpp, when built and the export wrote model.onnx), same JPEGs,
# same counts, in the same run. PPLCNet_x2_5 has no torchvision peer: featlearn (graph and eager) and OpenCV DNN.
#
#   bench/extract_side_by_side.sh
#     Options (environment variables):
#       COUNT=256      images (the first COUNT of the Emoji-4vendor test list, written as SIZE_JPEG x SIZE_JPEG
#                      JPEGs, quality 90, so that decode and resize are real work)
#       SIZE=224  SIZE_JPEG=256  BATCH=32  WORKERS=2 (loader threads / DataLoader workers, both programs)
#       REPS=2         repetitions, interleaved (featlearn, featlearn eager, OpenCV DNN, peer channels_last,
#                      peer contiguous)
#       MODELS="ResNet50 PPLCNet_x2_5"
#       IMAGE_ROOT=dataset/emoji_reid  (scripts/quickstart.sh: featlearn prepare-emoji)  BUILD=build
#       WORK=<build>/bench_results/extract
# Steps: a config per model (random weights: a 1-epoch train on 8 images, then featlearn export), then for
# each repetition `featlearn extract` (the optimized CPU graph), the same with FEATLEARN_EAGER=1, OpenCV DNN, and
# the PyTorch peer in both memory layouts (the table compares featlearn with the faster one). Every program reports images/s from the end of its first batch to the end (warm-up
# and the graph's trace excluded). Prints a table with featlearn / best-peer ratios; writes
# <WORK>/extract_side_by_side.json.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/.." && pwd)"
build="${BUILD:-$root/build}"
fl="$build/featlearn"
py=/usr/bin/python3
[[ -x "$fl" ]] || { echo "extract_side_by_side: $fl not found (ninja -C build featlearn_cli)" >&2; exit 1; }
COUNT=${COUNT:-256} SIZE=${SIZE:-224} SIZE_JPEG=${SIZE_JPEG:-256} BATCH=${BATCH:-32} WORKERS=${WORKERS:-2}
REPS=${REPS:-2} MODELS=${MODELS:-"ResNet50 PPLCNet_x2_5"}
IMAGE_ROOT=${IMAGE_ROOT:-$root/dataset/emoji_reid}
WORK=${WORK:-$build/bench_results/extract}
# Debian's OpenBLAS needs the core type named on recent CPUs (src/engine/runtime.cpp): both programs get it.
export OPENBLAS_CORETYPE=${OPENBLAS_CORETYPE:-$(grep -qw avx512bw /proc/cpuinfo && echo SkylakeX || { grep -qw avx2 /proc/cpuinfo && echo Haswell; } || true)}
mkdir -p "$WORK"
[[ -f "$IMAGE_ROOT/test_list.txt" ]] || { echo "extract_side_by_side: no $IMAGE_ROOT/test_list.txt (build/featlearn prepare-emoji --out dataset/emoji_reid --cache dataset/.npm_cache)" >&2; exit 1; }

# ---- the JPEGs ------------------------------------------------------------------------------------------------
jpg="$WORK/jpeg_${SIZE_JPEG}"
if [[ ! -f "$jpg/list_$COUNT.txt" ]]; then
  $py - "$IMAGE_ROOT" "$jpg" "$COUNT" "$SIZE_JPEG" <<'PYEOF'
import os, sys
from PIL import Image
src, out, count, size = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
os.makedirs(f"{out}/images", exist_ok=True)
lines = [l.split() for l in open(f"{src}/test_list.txt") if l.strip()][:count]
with open(f"{out}/list_{count}.txt", "w") as fh:
    for i, (path, label, *rest) in enumerate(lines):
        name = f"images/{i:05d}.jpg"
        Image.open(f"{src}/{path}").convert("RGB").resize((size, size), Image.BICUBIC).save(f"{out}/{name}", quality=90)
        fh.write(f"{name} {label}\n")
PYEOF
fi
list="$jpg/list_$COUNT.txt"
head -8 "$list" | awk '{print $1, NR-1}' > "$jpg/train_8.txt"

# ---- models: random weights, exported ---------------------------------------------------------------------------
make_model() {  # $1 backbone -> $WORK/model_$1
  local arch=$1 dir="$WORK/model_$1"
  [[ -f "$dir/inference.yaml" ]] && return 0
  local cfg="$WORK/$arch.yaml"
  local ops="[{DecodeImage: {to_rgb: True, channel_first: False}}, {ResizeImage: {size: $SIZE}}, {NormalizeImage: {scale: 0.00392157, mean: [0.485, 0.456, 0.406], std: [0.229, 0.224, 0.225], order: ''}}]"
  local ds="{name: VeriWild, image_root: \"$jpg\", cls_label_path: \"$jpg/train_8.txt\", transform_ops: $ops}"
  local ev="{dataset: $ds, sampler: {name: DistributedBatchSampler, batch_size: 8, drop_last: False, shuffle: False}, loader: {num_workers: 1}}"
  cat > "$cfg" <<YEOF
Global: {checkpoints: null, pretrained_model: null, output_dir: "$WORK/train_$arch/", device: cpu, epochs: 1,
         save_interval: 1, eval_during_train: False, print_batch_step: 1, image_shape: [3, $SIZE, $SIZE],
         save_inference_dir: "$dir", eval_mode: retrieval, seed: 0}
Arch: {name: RecModel, infer_output_key: features, Backbone: {name: $arch, pretrained: False},
       BackboneStopLayer: {name: flatten}, Head: {name: FC, embedding_size: 0, class_num: 8}}
Loss: {Train: [{CELoss: {weight: 1.0}}], Eval: [{CELoss: {weight: 1.0}}]}
Optimizer: {name: Momentum, momentum: 0.9, lr: {name: Cosine, learning_rate: 0.0}}
DataLoader:
  Train: {dataset: $ds, sampler: {name: DistributedBatchSampler, batch_size: 8, drop_last: False, shuffle: False}, loader: {num_workers: 1}}
  Eval: {Query: $ev, Gallery: $ev}
Metric: {Eval: [{Recallk: {topk: [1]}}]}
YEOF
  local width
  width=$([[ $arch == ResNet50 ]] && echo 2048 || echo 1280)
  sed -i "s/embedding_size: 0/embedding_size: $width/" "$cfg"
  "$fl" train -c "$cfg" > "$WORK/train_$arch.log" 2>&1 || { tail -20 "$WORK/train_$arch.log" >&2; exit 1; }
  "$fl" export -c "$cfg" -o Global.pretrained_model="$WORK/train_$arch/RecModel/latest" > "$WORK/export_$arch.log" 2>&1 \
    || { tail -5 "$WORK/export_$arch.log" >&2; exit 1; }
}

fl_run() {  # $1 model dir, $2 label, [env...] -> JSON line
  local dir=$1 label=$2; shift 2
  local out
  out=$(env "$@" "$fl" extract --model "$dir" --image-root "$jpg" --list "$list" --out "$WORK/feat_$label.npy" \
          --batch-size "$BATCH" --workers "$WORKERS" 2>&1) || { echo "$out" >&2; exit 1; }
  echo "$out" | sed -n 's/^Extraction after the first batch: \([0-9]*\) images in \([0-9.]*\) s (\([0-9.]*\) images\/s)/{"program": "'"$label"'", "images_after_first": \1, "seconds": \2, "images_per_s": \3}/p'
}

results="$WORK/extract_side_by_side.jsonl"
: > "$results"
for arch in $MODELS; do make_model "$arch"; done
echo "# COUNT=$COUNT SIZE=$SIZE (JPEG ${SIZE_JPEG}x${SIZE_JPEG}) BATCH=$BATCH WORKERS=$WORKERS REPS=$REPS cores=$(nproc) OPENBLAS_CORETYPE=${OPENBLAS_CORETYPE:-<auto>}"
for rep in $(seq 1 "$REPS"); do
  for arch in $MODELS; do
    dir="$WORK/model_$arch"
    fl_run "$dir" "featlearn_$arch" | sed "s/}$/, \"arch\": \"$arch\", \"rep\": $rep}/" >> "$results"
    fl_run "$dir" "featlearn_eager_$arch" FEATLEARN_EAGER=1 | sed "s/}$/, \"arch\": \"$arch\", \"rep\": $rep}/" >> "$results"
    if [[ -x "$build/bench/bench_onnx_opencv" && -f "$dir/model.onnx" ]]; then
      if out=$("$build/bench/bench_onnx_opencv" "$dir/model.onnx" "$jpg" "$list" "$BATCH" "$SIZE" 2> "$WORK/opencv_$arch.log"); then
        echo "$out" | sed "s/}$/, \"arch\": \"$arch\", \"rep\": $rep}/" >> "$results"
      else
        echo "# OpenCV DNN could not run $dir/model.onnx: $(grep -m1 -o 'ERROR.*' "$WORK/opencv_$arch.log" || tail -1 "$WORK/opencv_$arch.log")"
      fi
    fi
    if [[ $arch == ResNet50 ]]; then
      for cl in 1 0; do
        $py "$here/peer_extract.py" --image-root "$jpg" --list "$list" --batch-size "$BATCH" --workers "$WORKERS" \
          --size "$SIZE" --channels-last $cl | sed "s/}$/, \"arch\": \"$arch\", \"rep\": $rep}/" >> "$results"
      done
    fi
  done
done
$py - "$results" "$WORK/extract_side_by_side.json" <<'PYEOF'
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
best = {}
for r in rows:
    name = r["program"] if r["program"] != "pytorch" else f"pytorch_cl{r['channels_last']}"
    key = (r["arch"], name.replace("_" + r["arch"], ""))
    best.setdefault(key, []).append(r["images_per_s"])
print(f"{'arch':<14} {'program':<18} {'images/s (each rep)':<24} {'best':>8}")
for (arch, name), v in sorted(best.items()):
    print(f"{arch:<14} {name:<18} {', '.join(f'{x:.2f}' for x in v):<24} {max(v):>8.2f}")
summary = {"rows": rows, "ratios": {}}
for arch in sorted({a for a, _ in best}):
    fl = max(best.get((arch, "featlearn"), [0]))
    eager = max(best.get((arch, "featlearn_eager"), [0]))
    peers = [max(v) for (a, n), v in best.items() if a == arch and n.startswith("pytorch")]
    if eager:
        print(f"{arch}: featlearn graph / featlearn eager = {fl / eager:.2f}")
        summary["ratios"][f"{arch}_graph_over_eager"] = round(fl / eager, 3)
    if peers:
        print(f"{arch}: featlearn / best PyTorch peer = {fl / max(peers):.2f}  (eager featlearn / peer {eager / max(peers):.2f})")
        summary["ratios"][f"{arch}_featlearn_over_peer"] = round(fl / max(peers), 3)
    cv = max(best.get((arch, "opencv_dnn"), [0]))
    if cv:
        print(f"{arch}: featlearn / model.onnx in OpenCV DNN = {fl / cv:.2f}")
        summary["ratios"][f"{arch}_featlearn_over_opencv_dnn"] = round(fl / cv, 3)
json.dump(summary, open(sys.argv[2], "w"), indent=1)
PYEOF
