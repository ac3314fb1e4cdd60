#!/usr/bin/env bash
# Retrieval service, `featlearn serve` vs the FastAPI + uvicorn peer (bench/peer_serve.py), same model weights,
# same gallery vectors, same index type, on loopback, loaded with `hey`, in the same run.
#
#   bench/serve_side_by_side.sh
#     Options (environment variables):
#       MODEL_DIR=output/emoji_r18/inference     exported model (scripts/quickstart.sh makes it)
#       IMAGE_ROOT=dataset/emoji_reid  GALLERY_LIST=$IMAGE_ROOT/test_list.txt   gallery (path label ... lines)
#       SYNTHETIC=auto   1: make a small synthetic gallery and a 1-epoch model (for testing; also used when
#                        MODEL_DIR or the gallery is missing and SYNTHETIC=auto)
#       INDEX_METHOD=HNSW32  EF_SEARCH=128  NPROBE=16  TOP_K=5
#       DURATION=15s   each hey run lasts this long (hey -z); DURATION= (empty) sends REQUESTS=2000 instead
#       CONCURRENCY="1 8 32"  WARMUP=50
#       PEER_CONFIGS="threadpool/1/C threadpool/1/1 executor/1/C inline/1/C threadpool/2/1 inline/2/1"
#                      peer configurations tried, MODE/WORKERS/THREADS (uvicorn --workers, torch + FAISS threads
#                      per worker; C = all cores); the table compares featlearn with the best one per row
#       FEATLEARN_SERVE_ARGS=   extra `featlearn serve` flags (e.g. "--max-wait-us 0 --max-batch 8")
#       PORT_FEATLEARN, PORT_PEER (default: free ports)  BUILD=build  WORK=<build>/bench_results/serve
#
# Steps: `featlearn index build -c CFG` (the featlearn index), `featlearn extract` (the same vectors, for the
# peer's FAISS index), a 64x64 PNG query (the first gallery image, resized) and the same image's feature as a
# {"vector": [...]} body; both services answer one query and the top results are compared; then for each
# service configuration and concurrency, `hey -z DURATION -c C` POSTs the PNG (and the JSON vector) to
# /search?top_k=TOP_K. Prints one table (requests/s, latency p50/p99, featlearn/peer ratios against the best
# peer configuration at each row) and writes <WORK>/serve_side_by_side.json.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/.." && pwd)"
build="${BUILD:-$root/build}"
fl="$build/featlearn"
py=/usr/bin/python3
[[ -x "$fl" ]] || { echo "serve_side_by_side: $fl not found (cmake --build build --target featlearn_cli)" >&2; exit 1; }
command -v hey > /dev/null || { echo "serve_side_by_side: hey not found (apt-get install -y hey)" >&2; exit 1; }
command -v curl > /dev/null || { echo "serve_side_by_side: curl not found" >&2; exit 1; }

MODEL_DIR=${MODEL_DIR:-$root/output/emoji_r18/inference}
IMAGE_ROOT=${IMAGE_ROOT:-$root/dataset/emoji_reid}
GALLERY_LIST=${GALLERY_LIST:-$IMAGE_ROOT/test_list.txt}
SYNTHETIC=${SYNTHETIC:-auto}
INDEX_METHOD=${INDEX_METHOD:-HNSW32} EF_SEARCH=${EF_SEARCH:-128} NPROBE=${NPROBE:-16} TOP_K=${TOP_K:-5}
DURATION=${DURATION-15s} REQUESTS=${REQUESTS:-2000} CONCURRENCY=${CONCURRENCY:-"1 8 32"} WARMUP=${WARMUP:-50}
PEER_CONFIGS=${PEER_CONFIGS:-"threadpool/1/C threadpool/1/1 executor/1/C inline/1/C threadpool/2/1 inline/2/1"}
free_port() { $py -c "import socket; s = socket.socket(); s.bind(('127.0.0.1', 0)); print(s.getsockname()[1])"; }
PORT_FEATLEARN=${PORT_FEATLEARN:-$(free_port)} PORT_PEER=${PORT_PEER:-$(free_port)}
WORK=${WORK:-$build/bench_results/serve}
export OPENBLAS_CORETYPE=${OPENBLAS_CORETYPE:-$(grep -qw avx512bw /proc/cpuinfo && echo SkylakeX || { grep -qw avx2 /proc/cpuinfo && echo Haswell; } || true)}
mkdir -p "$WORK"
cores=$(nproc)

pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2> /dev/null || true; done
  for p in "${pids[@]}"; do wait "$p" 2> /dev/null || true; done
}
trap cleanup EXIT

# ---- fixture: synthetic gallery + 1-epoch model when the quickstart's are missing --------------------------
if [[ $SYNTHETIC == 1 || ( $SYNTHETIC == auto && ( ! -f "$MODEL_DIR/inference.yaml" || ! -f "$GALLERY_LIST" ) ) ]]; then
  IMAGE_ROOT="$WORK/synthetic"
  GALLERY_LIST="$IMAGE_ROOT/list.txt"
  MODEL_DIR="$WORK/synthetic_model"
  echo "# synthetic fixture in $IMAGE_ROOT (quickstart model or gallery not found, or SYNTHETIC=1)"
  if [[ ! -f "$GALLERY_LIST" ]]; then
    $py - "$IMAGE_ROOT" <<'EOF'
import os, sys
import numpy as np
from PIL import Image, ImageDraw
out = sys.argv[1]
os.makedirs(f"{out}/images", exist_ok=True)
rng = np.random.default_rng(0)
labels = 50
with open(f"{out}/list.txt", "w") as fh:
    for i in range(400):  # 50 labels x 8: a coloured background + a contrasting disc, noise per image
        lab = i % labels
        base = np.array([(lab * 37) % 256, (lab * 91) % 256, (lab * 53) % 256])
        img = Image.fromarray(np.clip(base + rng.normal(0, 25, (64, 64, 3)), 0, 255).astype(np.uint8))
        x, y = rng.integers(4, 40, 2)
        ImageDraw.Draw(img).ellipse([x, y, x + 20, y + 20], fill=tuple(int(v) for v in 255 - base))
        img.save(f"{out}/images/{i:05d}.png")
        fh.write(f"images/{i:05d}.png {lab} {i % 4}\n")
EOF
  fi
  if [[ ! -f "$MODEL_DIR/inference.yaml" ]]; then
    r="$IMAGE_ROOT" l="$GALLERY_LIST"
    "$fl" train -c "$root/configs/emoji/ResNet18_reid.yaml" -o Global.epochs=1 -o Global.eval_during_train=False \
      -o Global.output_dir="$WORK/synthetic_train/" -o Arch.Head.class_num=50 \
      -o DataLoader.Train.dataset.image_root="$r" -o DataLoader.Train.dataset.cls_label_path="$l" \
      -o DataLoader.Eval.Query.dataset.image_root="$r" -o DataLoader.Eval.Query.dataset.cls_label_path="$l" \
      -o DataLoader.Eval.Gallery.dataset.image_root="$r" -o DataLoader.Eval.Gallery.dataset.cls_label_path="$l" \
      > "$WORK/synthetic_train.log" 2>&1
    "$fl" export -c "$WORK/synthetic_train/config.yaml" -o Global.pretrained_model="$WORK/synthetic_train/RecModel/latest" \
      -o Global.save_inference_dir="$MODEL_DIR" | tail -1
  fi
fi
[[ -f "$MODEL_DIR/inference.yaml" ]] || { echo "serve_side_by_side: no model in $MODEL_DIR" >&2; exit 1; }

# ---- index (featlearn) and the same vectors for the peer ----------------------------------------------------
cfg="$WORK/serve.yaml"
cat > "$cfg" <<EOF
Global:
  rec_inference_model_dir: $MODEL_DIR
  batch_size: 1
  use_gpu: False
  cpu_num_threads: 0
IndexProcess:
  index_method: $INDEX_METHOD
  dist_type: IP
  index_dir: $WORK/index
  image_root: $IMAGE_ROOT
  data_file: $GALLERY_LIST
  delimiter: ' '
  return_k: $TOP_K
  ef_search: $EF_SEARCH
  nprobe: $NPROBE
EOF
echo "# model $MODEL_DIR, gallery $GALLERY_LIST ($(grep -c . "$GALLERY_LIST") images), $INDEX_METHOD," \
     "cores=$cores OPENBLAS_CORETYPE=${OPENBLAS_CORETYPE:-<auto>}"
"$fl" index build -c "$cfg" | tail -1
"$fl" extract --model "$MODEL_DIR" --image-root "$IMAGE_ROOT" --list "$GALLERY_LIST" --out "$WORK/gallery_features.npy" | tail -1
first=$(awk 'NF {print $1; exit}' "$GALLERY_LIST")
$py - "$IMAGE_ROOT/$first" "$WORK" <<'EOF'
import json, sys
import numpy as np
from PIL import Image
img, work = sys.argv[1], sys.argv[2]
Image.open(img).convert("RGB").resize((64, 64), Image.BILINEAR).save(f"{work}/query64.png")
f = np.load(f"{work}/gallery_features.npy")[0]
json.dump({"vector": [float(x) for x in f]}, open(f"{work}/query_vector.json", "w"))
EOF

# ---- helpers ------------------------------------------------------------------------------------------------
wait_health() {  # port pid
  for _ in $(seq 1 600); do
    curl -sf "http://127.0.0.1:$1/health" > /dev/null 2>&1 && return 0
    kill -0 "$2" 2> /dev/null || { echo "serve_side_by_side: server on port $1 exited" >&2; return 1; }
    sleep 0.2
  done
  echo "serve_side_by_side: no /health on port $1 after 120 s" >&2; return 1
}
rss_mb() {  # pid: resident set of it and its children, MB
  local total=0 p
  for p in "$1" $(pgrep -P "$1" || true); do
    total=$(( total + $(awk '/VmRSS/ {print $2}' "/proc/$p/status" 2> /dev/null || echo 0) ))
  done
  echo $(( total / 1024 ))
}
stop() {  # pid
  kill "$1" 2> /dev/null || true
  wait "$1" 2> /dev/null || true
  local keep=() p
  for p in "${pids[@]}"; do [[ $p == "$1" ]] || keep+=("$p"); done
  pids=("${keep[@]}")
}
results="$WORK/hey"
mkdir -p "$results"
run_hey() {  # name port
  local name=$1 port=$2 c
  hey -n "$WARMUP" -c 4 -m POST -T image/png -D "$WORK/query64.png" "http://127.0.0.1:$port/search?top_k=$TOP_K" > /dev/null
  for c in $CONCURRENCY; do
    local load=(-z "$DURATION")
    [[ -n $DURATION ]] || load=(-n $(( REQUESTS > c ? REQUESTS : c )))
    echo "#   $name image c=$c" >&2
    hey "${load[@]}" -c "$c" -m POST -T image/png -D "$WORK/query64.png" \
      "http://127.0.0.1:$port/search?top_k=$TOP_K" > "$results/${name}_image_c$c.txt"
    echo "#   $name vector c=$c" >&2
    hey "${load[@]}" -c "$c" -m POST -T application/json -D "$WORK/query_vector.json" \
      "http://127.0.0.1:$port/search?top_k=$TOP_K" > "$results/${name}_vector_c$c.txt"
  done
}
answer() {  # port -> the JSON answer to the image query
  curl -sf -X POST -H "Content-Type: image/png" --data-binary "@$WORK/query64.png" \
    "http://127.0.0.1:$1/search?top_k=$TOP_K"
}

# ---- featlearn ----------------------------------------------------------------------------------------------
# shellcheck disable=SC2086  # FEATLEARN_SERVE_ARGS is a list of flags
"$fl" serve -c "$cfg" --host 127.0.0.1 --port "$PORT_FEATLEARN" ${FEATLEARN_SERVE_ARGS:-} > "$WORK/featlearn_serve.log" 2>&1 &
fpid=$!
pids+=("$fpid")
wait_health "$PORT_FEATLEARN" "$fpid"
answer "$PORT_FEATLEARN" > "$WORK/answer_featlearn.json"
echo "# featlearn serve ${FEATLEARN_SERVE_ARGS:-} up (rss $(rss_mb "$fpid") MB)"
run_hey featlearn "$PORT_FEATLEARN"
echo "featlearn rss_mb $(rss_mb "$fpid")" > "$WORK/rss.txt"
stop "$fpid"

# ---- peer configurations ------------------------------------------------------------------------------------
rm -f "$results"/peer_*.txt
for conf in $PEER_CONFIGS; do
    IFS=/ read -r mode workers threads <<< "$conf"
    [[ $threads == C ]] && threads=$cores
    name="peer_${mode}_w${workers}_t$threads"
    PEER_MODEL_DIR="$MODEL_DIR" PEER_FEATURES="$WORK/gallery_features.npy" PEER_LIST="$GALLERY_LIST" \
      PEER_DELIMITER="" PEER_INDEX="$INDEX_METHOD" PEER_EF_SEARCH="$EF_SEARCH" PEER_NPROBE="$NPROBE" \
      PEER_MODE="$mode" PEER_WORKERS="$workers" PEER_THREADS="$threads" PYTHONDONTWRITEBYTECODE=1 \
      $py -m uvicorn peer_serve:app --app-dir "$here" --host 127.0.0.1 --port "$PORT_PEER" --workers "$workers" \
        --log-level warning --no-access-log > "$WORK/${name}.log" 2>&1 &
    ppid=$!
    pids+=("$ppid")
    wait_health "$PORT_PEER" "$ppid"
    answer "$PORT_PEER" > "$WORK/answer_${name}.json"
    echo "# $name up (rss $(rss_mb "$ppid") MB)"
    run_hey "$name" "$PORT_PEER"
    echo "$name rss_mb $(rss_mb "$ppid")" >> "$WORK/rss.txt"
    stop "$ppid"
done

# ---- table --------------------------------------------------------------------------------------------------
$py - "$WORK" "$CONCURRENCY" "${DURATION:-$REQUESTS requests}" <<'EOF'
import glob, json, os, re, sys
work, conc, load = sys.argv[1], [int(c) for c in sys.argv[2].split()], sys.argv[3]

def ms(v, w=8):
    return f"{'-' if v is None else format(v, '.1f'):>{w}}"

def parse(path):
    t = open(path).read()
    rps = float(re.search(r"Requests/sec:\s+([0-9.]+)", t).group(1))
    lat = {p: float(v) * 1000 for p, v in re.findall(r"\s(\d+)%+ in ([0-9.]+) secs", t)}
    codes = {int(c): int(n) for c, n in re.findall(r"\[(\d+)\]\s+(\d+) responses", t)}
    errors = re.search(r"Error distribution:(.*)", t, re.S)
    return dict(rps=rps, p50_ms=lat.get("50"), p99_ms=lat.get("99"), codes=codes,
                ok=set(codes) == {200} and not errors)

runs = {}
for f in glob.glob(f"{work}/hey/*.txt"):
    name, kind, c = re.match(r"(.*)_(image|vector)_c(\d+)\.txt", os.path.basename(f)).groups()
    runs.setdefault(name, {})[(kind, int(c))] = parse(f)
rss = dict(line.split(" rss_mb ") for line in open(f"{work}/rss.txt").read().splitlines())
peers = sorted(n for n in runs if n != "featlearn")

# Same answer? (ids and scores of the image query)
fa = json.load(open(f"{work}/answer_featlearn.json"))["results"]
agree = {}
for p in peers:
    pa = json.load(open(f"{work}/answer_{p}.json"))["results"]
    agree[p] = dict(same_ids=[r["id"] for r in fa] == [r["id"] for r in pa],
                    max_score_diff=max((abs(a["score"] - b["score"]) for a, b in zip(fa, pa)), default=None))

print(f"\n{load} per row, POST /search?top_k=K on 127.0.0.1 (hey runs on the same cores)")
print("rps = requests/s (featlearn/peer > 1: featlearn faster); latency in ms; peer = its best configuration per row\n")
hdr = f"{'request':10}{'c':>4} | {'featlearn rps':>13}{'p50':>8}{'p99':>8} | {'peer rps':>9}{'p50':>8}{'p99':>8}  {'(best peer)':22} | {'rps ratio':>9}{'p99 ratio':>10}"
print(hdr)
print("-" * len(hdr))
table = []
for kind in ["image", "vector"]:
    for c in conc:
        f = runs["featlearn"].get((kind, c))
        cands = [(p, runs[p][(kind, c)]) for p in peers if (kind, c) in runs[p] and runs[p][(kind, c)]["ok"]]
        if not f:
            continue
        flag = "" if f["ok"] else "  (featlearn: non-200 answers or errors)"
        fl_cells = f"{f['rps']:>13.1f}{ms(f['p50_ms'])}{ms(f['p99_ms'])}"
        if not cands:
            print(f"{kind:10}{c:>4} | {fl_cells} | {'every peer configuration had errors':>49} |{flag}")
            table.append(dict(kind=kind, c=c, featlearn=f, best_peer=None))
            continue
        bp, b = max(cands, key=lambda x: x[1]["rps"])
        p99r = f"{f['p99_ms'] / b['p99_ms']:.2f}" if f["p99_ms"] and b["p99_ms"] else "-"
        print(f"{kind:10}{c:>4} | {fl_cells} | {b['rps']:>9.1f}"
              f"{ms(b['p50_ms'])}{ms(b['p99_ms'])}  {bp:22} | {f['rps'] / b['rps']:>9.2f}{p99r:>10}{flag}")
        table.append(dict(kind=kind, c=c, featlearn=f, best_peer=bp, peer=b, rps_ratio=f["rps"] / b["rps"]))
print("\nall peer configurations (rps, p50/p99 ms):")
for p in peers:
    cells = "  ".join(f"{k[0][:3]} c={k[1]}: {v['rps']:.0f} ({ms(v['p50_ms'], 0)}/{ms(v['p99_ms'], 0)})" + ("" if v["ok"] else " ERR")
                      for k, v in sorted(runs[p].items()))
    print(f"  {p:22} rss {rss.get(p, '?'):>5} MB  {cells}")
print(f"  {'featlearn':22} rss {rss.get('featlearn', '?'):>5} MB")
for p, a in agree.items():
    print(f"answers featlearn vs {p}: same ids {a['same_ids']}, max score difference {a['max_score_diff']:.2e}")
json.dump(dict(rows=table, runs={n: {f"{k}_c{c}": v for (k, c), v in r.items()} for n, r in runs.items()},
               rss_mb=rss, answers_agree=agree), open(f"{work}/serve_side_by_side.json", "w"), indent=1, default=str)
print(f"wrote {work}/serve_side_by_side.json")
EOF
