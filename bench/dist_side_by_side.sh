#!/usr/bin/env bash
# Side-by-side distributed-training benchmark on Emoji-4vendor (configs/emoji/ResNet18_reid.yaml's recipe, same
# data and machine, one run after the other):
#   1. featlearn train, 1 process, batch 64
#   2. featlearn launch --nproc-per-node 2 -- train, batch 32 per process (global 64, same lr and global steps)
#   3. bench/peer_ddp_reid.py: PyTorch DistributedDataParallel, Gloo, 2 processes, batch 32 per process
# Every process keeps the config's 2 loader workers; intra-op threads are cores / processes in each run.
# Prints R@1, R@5, mAP, mINP, global train images/s and all-reduce ms/step of each, and the throughput ratios.
# Usage: bench/dist_side_by_side.sh [EPOCHS=20] [SEED=0]   (logs in output/bench_dist_s<SEED>/)
set -euo pipefail
cd "$(dirname "$0")/.."
EPOCHS=${1:-20}; SEED=${2:-0}
# featlearn picks the OpenBLAS core type for this CPU itself; give the peer (same Debian OpenBLAS) the same.
export OPENBLAS_CORETYPE=${OPENBLAS_CORETYPE:-$(grep -qw avx512bw /proc/cpuinfo && echo SkylakeX || { grep -qw avx2 /proc/cpuinfo && echo Haswell; } || true)}
ROOT=dataset/emoji_reid
CFG=configs/emoji/ResNet18_reid.yaml
[ -f $ROOT/train_list.txt ] || build/featlearn prepare-emoji --out $ROOT
OUT=output/bench_dist_s$SEED
rm -rf $OUT/one $OUT/two
mkdir -p $OUT
# One copy of the binary for both featlearn runs, so a rebuild of build/featlearn meanwhile cannot mix versions.
FL=$OUT/featlearn
cp build/featlearn $FL
free_port() { /usr/bin/python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
load() { echo "$(date -u +%FT%TZ) $1: $(cut -d' ' -f1-3 /proc/loadavg) (load 1/5/15 min, $(nproc) cores)" | tee -a $OUT/load.txt; }
COMMON=(-c $CFG -o Global.epochs=$EPOCHS -o Global.seed=$SEED -o Global.eval_interval=$EPOCHS)
: > $OUT/load.txt

load "featlearn 1 process start"
echo "== featlearn, 1 process, batch 64, $EPOCHS epochs, seed $SEED =="
/usr/bin/time -v $FL train "${COMMON[@]}" -o Global.output_dir=$OUT/one \
  > $OUT/one.log 2> $OUT/one_time.txt
grep -E '\[Train\] done|\[Eval\]' $OUT/one.log | tail -2

load "featlearn 2 processes start"
echo "== featlearn launch, 2 processes, batch 32 each =="
/usr/bin/time -v $FL launch --nproc-per-node 2 --master-port "$(free_port)" -- train "${COMMON[@]}" \
  -o DataLoader.Train.sampler.batch_size=32 -o Global.output_dir=$OUT/two > $OUT/two.log 2> $OUT/two_time.txt
grep -E '\[Train\] done|\[Train\] gradient all-reduce|^\[Eval\]' $OUT/two.log | tail -3

load "peer DDP start"
echo "== PyTorch DDP peer, 2 processes, batch 32 each =="
/usr/bin/time -v /usr/bin/python3 bench/peer_ddp_reid.py --root $ROOT --epochs $EPOCHS --seed $SEED --bs 64 \
  --world 2 --workers 2 > $OUT/peer_ddp.log 2> $OUT/peer_ddp_time.txt
tail -1 $OUT/peer_ddp.log
load "end"

/usr/bin/python3 - "$OUT" <<'PY' | tee $OUT/summary.txt
import json, re, sys
out = sys.argv[1]

def featlearn(run):
    log = open(f"{out}/{run}.log").read()
    e2e = float(re.findall(r"\[Train\] done: \d+ images in [0-9:]+: ([0-9.]+) images/s", log)[-1])
    m = re.findall(r"^\[Eval\]\[Epoch \d+\] (.*) time", log, re.M)[-1]
    r = {k: float(v) for k, v in re.findall(r"(\w+): ([0-9.]+),", m)}
    recs = [json.loads(l) for l in open(f"{out}/{run}/metrics.jsonl")]
    ep = [j for j in recs if j.get("phase") == "train_epoch"]
    steps = [j for j in recs if j.get("phase") == "train"]
    # global images per epoch = the epoch's images/s * its seconds (TrainLog counts every rank's images)
    imgs = sum(j["ips"] * j["seconds"] for j in ep)
    r["ips"] = imgs / sum(j["seconds"] for j in ep)  # training epochs only (no evaluation, no checkpoints)
    r["ips_e2e"] = e2e  # featlearn's "[Train] done" rate: wall time including checkpoints and the final evaluation
    ar = [j for j in recs if j.get("phase") == "allreduce"]
    r["allreduce"] = ar[-1]["ms_per_step"] if ar else None
    return r

def usage(run):  # /usr/bin/time -v of the whole run (all processes, startup and final evaluation included)
    t = open(f"{out}/{run}_time.txt").read()
    cpu = sum(float(v) for v in re.findall(r"(?:User|System) time \(seconds\): ([0-9.]+)", t)[-2:])
    wall = re.findall(r"Elapsed \(wall clock\) time \(h:mm:ss or m:ss\): ([0-9:.]+)", t)[-1].split(":")
    return cpu, sum(float(x) * 60 ** i for i, x in enumerate(reversed(wall)))

one, two = featlearn("one"), featlearn("two")
peer = json.loads(open(f"{out}/peer_ddp.log").read().strip().splitlines()[-1])
peer.update(ips=peer["train_img_per_s"], ips_e2e=None, allreduce=peer["ddp_comm_exposed_ms"])
fmt = lambda v, f="{:.1f}": "-" if v is None else f.format(v)
print(f"{'run':<24}{'R@1':>7}{'R@5':>7}{'mAP':>7}{'mINP':>7}{'train img/s':>13}{'(end to end)':>14}"
      f"{'all-reduce ms/step':>20}{'CPU s':>9}{'wall s':>9}")
for name, run, r in [("featlearn 1 process", "one", one), ("featlearn 2 processes", "two", two),
                     ("PyTorch DDP 2 processes", "peer_ddp", peer)]:
    cpu, wall = usage(run)
    print(f"{name:<24}{100*r['recall1']:7.2f}{100*r['recall5']:7.2f}{100*r['mAP']:7.2f}{100*r['mINP']:7.2f}"
          f"{r['ips']:13.1f}{fmt(r['ips_e2e']):>14}{fmt(r['allreduce'], '{:.2f}'):>20}{cpu:9.0f}{wall:9.0f}")
print(f"throughput featlearn 2 proc / featlearn 1 proc: {two['ips']/one['ips']:.2f}x "
      f"(end to end {two['ips_e2e']/one['ips_e2e']:.2f}x)")
print(f"throughput featlearn 2 proc / PyTorch DDP 2 proc: {two['ips']/peer['ips']:.2f}x")
print("train img/s: global images / seconds of the training epochs (featlearn: sum of its train_epoch seconds; "
      "peer: train loop wall time on rank 0). all-reduce: featlearn = rank 0's time waiting for the gradient "
      "all-reduce after backward (the part of it that did not overlap backward); peer = DDP's exposed communication (avg_backward_comm_time - "
      f"avg_backward_compute_comm_overlap_time) = {peer['ddp_comm_exposed_ms']:.2f} ms; DDP's whole communication "
      f"span, overlapped with backward, is {peer['ddp_backward_comm_ms']:.2f} ms/step "
      f"(backward compute {peer['ddp_backward_compute_ms']:.2f} ms/step). CPU s / wall s: /usr/bin/time of the "
      "whole command (every process, startup and the final evaluation included).")
PY
