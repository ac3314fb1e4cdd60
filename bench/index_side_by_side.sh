#!/usr/bin/env bash
# Gallery index, featlearn (bench_index: GalleryIndex over FAISS + SQLite) vs a competent Python FAISS user
# (peer_index.py: index_factory + IDMap2 + write_index + pickle), on the same data in the same run.
#
#   bench/index_side_by_side.sh [N=1000000] [DIM=256]
#     Options (environment variables):
#       METHODS=Flat,HNSW32,IVF  QUERIES=1000  CLUSTERS=0 (N/1000)  SIGMA=1.0  SEED=0  THREADS=<nproc>
#       NLIST=0 (round(4 sqrt N); -1: PaddleClas's min(N/8, 65536))  EF_CONSTRUCTION=40  TARGET=0.95
#       SINGLE_SECONDS=5 (time budget of each single-query loop)  BUILD=build (holds bench/bench_index)
#       DATA_DIR=<build>/bench_results/index_data_N_DIM (generated once, reused while its meta.json matches)
#
# Each method runs in its own process on each side, so peak RSS is per method. Results (both JSON lines per
# method and the combined table as JSON) go to <build>/bench_results/; the table is printed.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
N=${1:-1000000} DIM=${2:-256}
build="${BUILD:-$here/../build}"
bench="$build/bench/bench_index"
[[ -x "$bench" ]] || { echo "index_side_by_side: $bench not found (cmake --build build --target bench_index)" >&2; exit 1; }
py=/usr/bin/python3  # Debian's python3-faiss
peer="$here/peer_index.py"
METHODS=${METHODS:-Flat,HNSW32,IVF} QUERIES=${QUERIES:-1000} CLUSTERS=${CLUSTERS:-0} SIGMA=${SIGMA:-1.0}
SEED=${SEED:-0} THREADS=${THREADS:-$(nproc)} EF_CONSTRUCTION=${EF_CONSTRUCTION:-40} TARGET=${TARGET:-0.95}
SINGLE_SECONDS=${SINGLE_SECONDS:-5}
if [[ "${NLIST:-0}" == 0 ]]; then NLIST=$($py -c "import math; print(round(4 * math.sqrt($N)))")
elif [[ "$NLIST" == -1 ]]; then NLIST=$(( N / 8 > 65536 ? 65536 : (N / 8 > 1 ? N / 8 : 1) )); fi
# featlearn re-executes itself with the OpenBLAS core type for this CPU; give the peer (same OpenBLAS) the same.
export OPENBLAS_CORETYPE=${OPENBLAS_CORETYPE:-$(grep -qw avx512bw /proc/cpuinfo && echo SkylakeX || { grep -qw avx2 /proc/cpuinfo && echo Haswell; } || true)}

results="$build/bench_results"
data="${DATA_DIR:-$results/index_data_${N}_${DIM}}"
run_dir="$results/index_${N}_${DIM}"
mkdir -p "$results" "$run_dir"
want="{\"n\": $N, \"dim\": $DIM, \"queries\": $QUERIES, \"sigma\": $SIGMA, \"seed\": $SEED}"
if ! $py - "$data/meta.json" "$want" "$CLUSTERS" <<'EOF'
import json, sys
try:
    have = json.load(open(sys.argv[1]))
except OSError:
    sys.exit(1)
want = json.loads(sys.argv[2])
ok = all(have.get(k) == v for k, v in want.items()) and (int(sys.argv[3]) in (0, have["clusters"]))
sys.exit(0 if ok else 1)
EOF
then
  echo "# generating data: N=$N DIM=$DIM queries=$QUERIES clusters=$CLUSTERS sigma=$SIGMA seed=$SEED -> $data"
  $py "$peer" --write-data "$data" --n "$N" --dim "$DIM" --queries "$QUERIES" --clusters "$CLUSTERS" \
    --sigma "$SIGMA" --seed "$SEED" --threads "$THREADS"
fi
echo "# data $data; threads=$THREADS nlist=$NLIST efConstruction=$EF_CONSTRUCTION target recall@10=$TARGET" \
     "OPENBLAS_CORETYPE=${OPENBLAS_CORETYPE:-<auto>}"

common=(--data "$data" --nlist "$NLIST" --ef-construction "$EF_CONSTRUCTION" --target "$TARGET"
        --single-seconds "$SINGLE_SECONDS" --threads "$THREADS")
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
IFS=, read -ra methods <<< "$METHODS"
for m in "${methods[@]}"; do
  echo "# $m: featlearn ..." >&2
  "$bench" "${common[@]}" --methods "$m" --work "$work/featlearn" --out "$run_dir/featlearn_$m.json" > /dev/null
  rm -rf "$work/featlearn"
  echo "# $m: peer ..." >&2
  $py "$peer" "${common[@]}" --methods "$m" --work "$work/peer_$m" --out "$run_dir/peer_$m.json" > /dev/null
  rm -rf "$work/peer_$m"
done

$py - "$run_dir" "$results/index_side_by_side_${N}_${DIM}.json" "$METHODS" <<'EOF'
import json, sys
run_dir, out_path, methods = sys.argv[1], sys.argv[2], sys.argv[3].split(",")
rows, combined = [], {"methods": {}}
for m in methods:
    f = json.load(open(f"{run_dir}/featlearn_{m}.json"))
    p = json.load(open(f"{run_dir}/peer_{m}.json"))
    combined.update(n=f["n"], dim=f["dim"], queries=f["queries"], threads=f["threads"], target=f["target"])
    fm, pm = f["methods"][0], p["methods"][0]
    combined["methods"][m] = {"featlearn": fm, "peer": pm}
    rows.append((m, fm, pm))

def fmt(v, spec):
    return "-" if v is None else format(v, spec)

def pct(x):
    return f"{100 * x:.1f}%"

print(f"\nN={combined['n']} dim={combined['dim']} queries={combined['queries']} threads={combined['threads']} "
      f"target recall@10 >= {combined['target']}")
print("times: featlearn/peer < 1 = featlearn faster;  QPS: featlearn/peer > 1 = featlearn faster\n")
W = 34
for m, fm, pm in rows:
    extra = f"  nlist={fm['nlist']}" if fm.get("nlist") else ""
    extra += f"  efConstruction={fm['ef_construction']}" if fm.get("ef_construction") else ""
    print(f"== {m}{extra}  (peer: {pm['factory']})")
    print(f"{'':{W}}{'featlearn':>14}{'peer':>14}{'featlearn/peer':>16}")
    def line(name, a, b, spec=".3f", ratio=True):
        r = f"{a / b:.2f}" if ratio and a is not None and b not in (None, 0) else ""
        print(f"{name:{W}}{fmt(a, spec):>14}{fmt(b, spec):>14}{r:>16}")
    line("build, durable (s)", fm["total_build_s"], pm["total_build_s"])
    line("  of which snapshot/write_index (s)", fm["persist_s"], pm["persist_s"])
    line("peak RSS (MB)", fm["peak_rss_mb"], pm["peak_rss_mb"], ".0f")
    line("RSS growth during build (MB)", fm["rss_growth_build_mb"], pm["rss_growth_build_mb"], ".0f")
    line("on disk (MB)", fm["disk_mb"], pm["disk_mb"], ".1f")
    fc, pc = fm["chosen"], pm["chosen"]
    if fm["param"]:
        print(f"{fm['param'] + ' chosen':{W}}{fc['value']:>14}{pc['value']:>14}")
        fs = {s["value"]: s for s in fm["sweep"]}
        ps = {s["value"]: s for s in pm["sweep"]}
        sweep = " ".join(f"{v}:{fs[v]['recall']:.3f}/{ps[v]['recall']:.3f}" if v in ps else f"{v}:{fs[v]['recall']:.3f}/-"
                         for v in fs)
        print(f"{'  sweep recall featl/peer':{W}}{sweep}")
    line("recall@10", fc["recall"], pc["recall"], ".4f", False)
    line("QPS, batch of all queries", fc["qps_batch"], pc["qps_batch"], ".0f")
    line("QPS, one query per call", fc["qps_single"], pc["qps_single"], ".0f")
    if fm["param"] and fc["value"] != pc["value"]:
        # The chosen values differ, so the QPS above are at different search breadths; the sweeps give one
        # batch QPS per value: compare at the largest value both swept.
        both = sorted(set(fs) & set(ps))
        if both:
            v = both[-1]
            line(f"  QPS, batch, both at {fm['param']}={v}", fs[v]["qps"], ps[v]["qps"], ".0f")
    fa, pa = fm["append"], pm["append"]
    line(f"append {fa['n']}, durable (s)", fa["s"], pa["s"])
    print(f"{'  % of build':{W}}{pct(fa['frac_of_build']):>14}{pct(pa['frac_of_build']):>14}")
    line("  peer in memory only (s)", None, pa["mem_s"], ".3f", False)
    line("  featlearn snapshot after (s)", fa["snapshot_s"], None, ".3f", False)
    fr, pr = fm["remove"], pm["remove"]
    line(f"remove {fr['n']}, durable (s)", fr["s"], pr["s"])
    print(f"{'  % of build':{W}}{pct(fr['frac_of_build']):>14}{pct(pr['frac_of_build']):>14}")
    if not pr["supported"]:
        print(f"{'  peer':{W}}{pr['how']}")
    line("  peer in memory only (s)", None, pr["mem_s"], ".3f", False)
    line("  featlearn snapshot after (s)", fr["snapshot_s"], None, ".3f", False)
    line("recall@10 after append+remove", fm["recall_after_update"], pm["recall_after_update"], ".4f", False)
    line("removed ids returned", fm["removed_returned"], pm["removed_returned"], "d", False)
    line("reopen + first search (s)", fm["reopen_s"], pm["reopen_s"])
    target = combined["target"]
    notes = []
    for side, c in (("featlearn", fc), ("peer", pc)):
        if c["recall"] < target:
            notes.append(f"{side} never reached recall {target} (best {c['recall']:.4f})")
    for side, x in (("featlearn", fm), ("peer", pm)):
        rec = [round(s["recall"], 6) for s in x["sweep"]]
        if x["param"] and len(rec) > 2 and len(set(rec)) == 1:
            notes.append(f"{side}'s recall does not change with {x['param']}: the value does not reach FAISS")
    if fm["param"] and fc["value"] != pc["value"]:
        notes.append(f"the sides chose different {fm['param']} values: their QPS are at different recall")
    for side, x in (("featlearn", fm), ("peer", pm)):
        if x["removed_returned"]:
            notes.append(f"{side} returned removed ids")
    for n in notes:
        print(f"  NOTE: {n}")
    print()
json.dump(combined, open(out_path, "w"), indent=1)
print(f"wrote {out_path}")
EOF
