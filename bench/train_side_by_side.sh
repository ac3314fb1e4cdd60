#!/usr/bin/env bash
# Side-by-side training benchmark on Emoji-4vendor (same recipe, data, machine, one run after the other):
#   1. compute-only rate (fixed tensor): featlearn bench_train_step vs bench/peer_train_step.py
#   2. end-to-end `featlearn train` vs /work/shared/benchmarks/peer_reid.py (accuracy + images/s)
# Usage: bench/train_side_by_side.sh [EPOCHS=20] [SEED=0]
set -euo pipefail
cd "$(dirname "$0")/.."
EPOCHS=${1:-20}; SEED=${2:-0}
# featlearn picks the OpenBLAS core type for this CPU itself; give the peer (same Debian OpenBLAS) the same.
export OPENBLAS_CORETYPE=${OPENBLAS_CORETYPE:-$(grep -qw avx512bw /proc/cpuinfo && echo SkylakeX || { grep -qw avx2 /proc/cpuinfo && echo Haswell; } || true)}
ROOT=dataset/emoji_reid
PEER=${PEER_REID:-../shared/benchmarks/peer_reid.py}
[ -f $ROOT/train_list.txt ] || build/featlearn prepare-emoji --out $ROOT
OUT=output/bench_train_s$SEED
mkdir -p $OUT
echo "== compute only (fixed batch of 64, 64x64) =="
build/bench/bench_train_step -c configs/emoji/ResNet18_reid.yaml --iters 20 | tee $OUT/featlearn_step.json
/usr/bin/python3 bench/peer_train_step.py --iters 20 | tee $OUT/peer_step.json
echo "== end to end, $EPOCHS epochs, seed $SEED =="
/usr/bin/time -v build/featlearn train -c configs/emoji/ResNet18_reid.yaml -o Global.epochs=$EPOCHS \
  -o Global.seed=$SEED -o Global.output_dir=$OUT/featlearn/ -o Global.eval_interval=$EPOCHS \
  > $OUT/featlearn_train.log 2> $OUT/featlearn_time.txt
grep -E '\[Train\] done|\[Eval\]' $OUT/featlearn_train.log | tail -3
/usr/bin/python3 "$PEER" --root $ROOT --epochs $EPOCHS --seed $SEED > $OUT/peer.log
tail -1 $OUT/peer.log
/usr/bin/python3 - "$OUT" <<'PY'
import json, re, sys
out = sys.argv[1]
log = open(f"{out}/featlearn_train.log").read()
fl_ips = float(re.findall(r"\[Train\] done: \d+ images in [0-9:]+: ([0-9.]+) images/s", log)[-1])
ev = json.load(open(f"{out}/featlearn/eval_metrics.json")) if False else None
m = re.findall(r"\[Eval\]\[Epoch \d+\] (.*) time", log)[-1]
fl = {k: float(v) for k, v in re.findall(r"(\w+): ([0-9.]+),", m)}
peer = json.loads(open(f"{out}/peer.log").read().strip().splitlines()[-1])
fs = json.load(open(f"{out}/featlearn_step.json")); ps = json.load(open(f"{out}/peer_step.json"))
print(f"featlearn: R@1 {100*fl['recall1']:.2f} R@5 {100*fl['recall5']:.2f} mAP {100*fl['mAP']:.2f} mINP {100*fl['mINP']:.2f} train {fl_ips:.1f} img/s")
print(f"peer     : R@1 {100*peer['recall1']:.2f} R@5 {100*peer['recall5']:.2f} mAP {100*peer['mAP']:.2f} mINP {100*peer['mINP']:.2f} train {peer['train_img_per_s']:.1f} img/s")
print(f"end-to-end speed ratio featlearn/peer: {fl_ips/peer['train_img_per_s']:.2f}x")
print(f"compute-only: featlearn {fs['train_step_img_per_s']} vs peer {ps['train_step_img_per_s']} img/s "
      f"(ratio {fs['train_step_img_per_s']/ps['train_step_img_per_s']:.2f}x); featlearn end-to-end / peer compute-only "
      f"{fl_ips/ps['train_step_img_per_s']:.2f}")
PY
