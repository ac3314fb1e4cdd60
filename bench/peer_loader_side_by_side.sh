#!/usr/bin/env bash
# Side-by-side data loader benchmark: `featlearn bench-data` against the torchvision peer
# (shared/benchmarks/peer_loader.py: torchvision transforms + torch.utils.data.DataLoader), same list, same ops,
# same batch size, same worker count. Prints both images/s and the ratio for two workloads:
#   seed   the seed config's Train transform_ops (Resize 224, flip, AugMix, normalize, erasing) on synthetic
#          256x256 JPEGs generated here;
#   emoji  the Emoji-4vendor benchmark's Train ops (Resize 64, flip, normalize, erasing) on dataset/emoji_reid
#          when it exists, else on synthetic 64x64 PNGs.
# Usage: bench/peer_loader_side_by_side.sh [--workers W] [--iters N] [--bin path/to/featlearn] [--images N]
# Note: the peer's AugMix is torchvision's (severity 3, depth 1-3, all ops) while featlearn runs PaddleClas's
# (severity 1, depth 1); both mix three chains with probability 0.5, as the two configs say.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
PEER=${PEER_LOADER:-$ROOT/../shared/benchmarks/peer_loader.py}
[ -f "$PEER" ] || PEER=/work/shared/benchmarks/peer_loader.py
BIN=""
WORKERS=2
ITERS=30
NIMAGES=300
BS=64
while [ $# -gt 0 ]; do
  case "$1" in
    --workers) WORKERS=$2; shift 2 ;;
    --iters) ITERS=$2; shift 2 ;;
    --bin) BIN=$2; shift 2 ;;
    --images) NIMAGES=$2; shift 2 ;;
    *) echo "unknown argument $1" >&2; exit 2 ;;
  esac
done
if [ -z "$BIN" ]; then
  for b in "$ROOT"/build/featlearn "$ROOT"/build-*/featlearn; do
    if [ -x "$b" ]; then BIN=$b; break; fi
  done
fi
[ -x "$BIN" ] || { echo "featlearn binary not found; build it or pass --bin" >&2; exit 1; }
PY=/usr/bin/python3

TMP=$(mktemp -d)
trap 'rm -rf "$TMP"' EXIT

# Synthetic images: smooth random color fields (JPEG-realistic, not noise), `path label camid` lists.
make_images() {  # dir count size ext
  "$PY" - "$1" "$2" "$3" "$4" <<'EOF'
import sys, os, numpy as np
from PIL import Image
d, n, s, ext = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
os.makedirs(os.path.join(d, "img"), exist_ok=True)
rng = np.random.default_rng(0)
with open(os.path.join(d, "list.txt"), "w") as f:
    for i in range(n):
        small = rng.integers(0, 256, size=(8, 8, 3), dtype=np.uint8)
        img = Image.fromarray(small).resize((s, s), Image.BICUBIC)
        name = f"img/{i:05d}.{ext}"
        img.save(os.path.join(d, name), quality=90) if ext == "jpg" else img.save(os.path.join(d, name))
        f.write(f"{name} {i % max(1, n // 4)} {i % 4}\n")
EOF
}

ratio() { "$PY" -c "import sys; print(f'{float(sys.argv[1]) / float(sys.argv[2]):.2f}')" "$1" "$2"; }
ips() { grep -o '"img_per_s": [0-9.]*' | tail -1 | awk '{print $2}'; }

run_case() {  # label config root list size augmix_flag
  local label=$1 cfg=$2 root=$3 list=$4 size=$5 augmix=$6
  local ours peer
  ours=$("$BIN" bench-data -c "$cfg" --iters "$ITERS" --workers "$WORKERS" \
    -o "DataLoader.Train.dataset.image_root=$root" -o "DataLoader.Train.dataset.cls_label_path=$list" \
    -o "DataLoader.Train.sampler.batch_size=$BS" | ips)
  peer=$("$PY" "$PEER" --root "$root" --list "$list" --size "$size" $augmix --workers "$WORKERS" --bs "$BS" \
    --iters "$ITERS" | ips)
  printf '%-6s featlearn %8s img/s   torchvision %8s img/s   ratio %sx   (workers %s, batch %s)\n' \
    "$label" "$ours" "$peer" "$(ratio "$ours" "$peer")" "$WORKERS" "$BS"
}

echo "featlearn: $BIN"
make_images "$TMP/jpeg" "$NIMAGES" 256 jpg
run_case seed "$ROOT/configs/seed_config.yaml" "$TMP/jpeg" "$TMP/jpeg/list.txt" 224 --augmix

EMOJI=$ROOT/dataset/emoji_reid
if [ -f "$EMOJI/train_list.txt" ]; then
  run_case emoji "$ROOT/configs/emoji/ResNet18_reid.yaml" "$EMOJI" "$EMOJI/train_list.txt" 64 ""
else
  echo "(dataset/emoji_reid not found: emoji ops on synthetic 64x64 PNGs)"
  make_images "$TMP/png" "$NIMAGES" 64 png
  run_case emoji "$ROOT/configs/emoji/ResNet18_reid.yaml" "$TMP/png" "$TMP/png/list.txt" 64 ""
fi
