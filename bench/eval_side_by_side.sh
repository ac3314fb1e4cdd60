#!/usr/bin/env bash
# Evaluation speed, featlearn vs the PaddleClas-style argsort peer, on the same data in the same run.
#
#   bench/eval_side_by_side.sh [BUILD_DIR] [-- options]
#     BUILD_DIR (default: build) holds bench_eval. Options (environment variables):
#       Q=20000 G=200000 D=512 LABELS=1000 CAMS=8 SEED=0 SIGNAL=0 BLOCK=64 THREADS=<nproc>
#       PEER_MAX_Q=<Q>   the peer evaluates only its first PEER_MAX_Q queries (its cost is linear in the number
#                        of queries; featlearn is then also run on the same subset, plus once on all of them)
#       DATA_DIR=<tmp>   where the shared data is written (kept when given)
#
# The data is generated once (peer_eval_argsort.py --write-data) and read by both programs. Prints both JSON
# lines, then time / peak-memory ratios and whether the metric values agree (relative 1e-5).
#
# OpenBLAS 0.3.21 (Debian) falls back to its generic "Prescott" kernels on CPUs it does not recognise, which
# makes every GEMM ~4x slower. Set OPENBLAS_CORETYPE (e.g. SkylakeX, Haswell) to override; both programs use the
# same OpenBLAS, so the comparison is fair either way, and the value in use is printed.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
build="${1:-$here/../build}"
bench="$build/bench_eval"
[[ -x "$bench" ]] || { echo "eval_side_by_side: $bench not found (build the bench_eval target)" >&2; exit 1; }
py=/usr/bin/python3
peer="$here/peer_eval_argsort.py"

Q=${Q:-20000} G=${G:-200000} D=${D:-512} LABELS=${LABELS:-1000} CAMS=${CAMS:-8} SEED=${SEED:-0}
SIGNAL=${SIGNAL:-0} BLOCK=${BLOCK:-64} THREADS=${THREADS:-$(nproc)} PEER_MAX_Q=${PEER_MAX_Q:-$Q}
if [[ -n "${DATA_DIR:-}" ]]; then data="$DATA_DIR"; keep=1; else data="$(mktemp -d)"; keep=0; fi
cleanup() { [[ $keep == 1 ]] || rm -rf "$data"; }
trap cleanup EXIT

echo "# OPENBLAS_CORETYPE=${OPENBLAS_CORETYPE:-<auto>}  threads=$THREADS  block=$BLOCK"
echo "# data: Q=$Q G=$G D=$D labels=$LABELS cams=$CAMS seed=$SEED signal=$SIGNAL -> $data"
$py "$peer" --queries "$Q" --gallery "$G" --dim "$D" --labels "$LABELS" --cams "$CAMS" --seed "$SEED" \
  --signal "$SIGNAL" --write-data "$data"

common=(--data "$data" --block "$BLOCK" --threads "$THREADS")
ours_sub=$("$bench" "${common[@]}" --max-queries "$PEER_MAX_Q")
echo "$ours_sub"
peer_out=$($py "$peer" "${common[@]}" --max-queries "$PEER_MAX_Q")
echo "$peer_out"
ours_full=""
if (( PEER_MAX_Q < Q )); then
  ours_full=$("$bench" "${common[@]}")
  echo "$ours_full"
fi

$py - "$ours_sub" "$peer_out" "$ours_full" <<'EOF'
import json, sys
ours, peer = json.loads(sys.argv[1]), json.loads(sys.argv[2])
full = json.loads(sys.argv[3]) if sys.argv[3] else None
def extra(r): return r["peak_rss_mb"] - r["peak_rss_before_eval_mb"]
print(f"\n{'':28}{'featlearn':>12}{'peer':>12}{'peer/featlearn':>16}")
print(f"{'queries x gallery':28}{ours['queries']:>6} x {ours['gallery']:<6}")
print(f"{'time (s)':28}{ours['seconds']:>12.2f}{peer['seconds']:>12.2f}{peer['seconds'] / ours['seconds']:>16.1f}")
print(f"{'peak RSS (MB)':28}{ours['peak_rss_mb']:>12.0f}{peer['peak_rss_mb']:>12.0f}{peer['peak_rss_mb'] / ours['peak_rss_mb']:>16.2f}")
print(f"{'eval RSS growth (MB)':28}{extra(ours):>12.0f}{extra(peer):>12.0f}{extra(peer) / max(extra(ours), 1):>16.2f}")
ok = True
for k, v in ours["metrics"].items():
    p = peer["metrics"][k]
    same = abs(v - p) <= 1e-5 * max(abs(v), abs(p)) + 1e-9
    ok &= same
    print(f"  {k:26}{v:>12.6f}{p:>12.6f}{'  agree' if same else '  DIFFER':>16}")
print("metric values agree" if ok else "METRIC VALUES DIFFER")
if full:
    rate_peer = peer["seconds"] / peer["queries"]
    est = rate_peer * full["queries"]
    print(f"\nfull size {full['queries']} x {full['gallery']}: featlearn {full['seconds']:.1f} s, peak RSS "
          f"{full['peak_rss_mb']:.0f} MB; peer extrapolated (linear in queries) {est:.0f} s -> ratio {est / full['seconds']:.1f}x")
sys.exit(0 if ok else 1)
EOF
