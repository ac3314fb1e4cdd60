#!/usr/bin/python3
"""Peer for bench_eval: retrieval metrics the way PaddleClas computes them, in PyTorch.

Mirrors ppcls/engine/evaluation/retrieval.py (non-re-ranking path) and ppcls/metric/metrics.py: queries in
blocks of sim_block_size, similarity block = q_block @ g.T, keep_mask = label differs | camera differs, and
every metric (Recallk, mAP, mINP) does its own full argsort of the block's similarity rows, gathers the gallery
labels in ranked order and works on cumulative sums of the match flags. Paddle ops are replaced by their
torch equivalents (argsort, index_sample -> gather, cumsum, ...); the work done is the same.

--semantics paddle  reproduces PaddleClas's numbers, including what featlearn treats as bugs: excluded items
                    get similarity 0 but stay in the ranking; each block's mean is weighted by the block's size;
                    mINP divides by the 0-based index of the hardest match, found in float32 (wrong beyond a
                    few thousand gallery positions).
--semantics fixed   (default) same operations and cost, but excluded items are ranked last (similarity -inf),
                    metrics are averaged over all queries with a match, mINP uses the 1-based rank; these are
                    featlearn's definitions, so the values must agree with bench_eval.

Prints one JSON object (time, peak RSS via getrusage, metrics). --write-data DIR also writes the generated data
for bench_eval --data DIR (raw float32/int64 + meta.json); --data DIR reads it back.
"""
import argparse
import json
import os
import resource
import time

import numpy as np
import torch


def generate(q, g, d, labels, cams, seed, signal=0.0):
    rng = np.random.default_rng(seed)
    ql, gl = rng.integers(0, labels, q, dtype=np.int64), rng.integers(0, labels, g, dtype=np.int64)
    qf = rng.standard_normal((q, d), dtype=np.float32)
    gf = rng.standard_normal((g, d), dtype=np.float32)
    if signal > 0:  # pull each item towards a random centre of its label, so the metrics are not near zero
        centres = rng.standard_normal((labels, d), dtype=np.float32) * np.float32(signal)
        qf += centres[ql]
        gf += centres[gl]
    qf /= np.linalg.norm(qf, axis=1, keepdims=True)
    gf /= np.linalg.norm(gf, axis=1, keepdims=True)
    return dict(q_feat=qf, g_feat=gf,
                q_label=ql, g_label=gl,
                q_cam=rng.integers(0, cams, q, dtype=np.int64), g_cam=rng.integers(0, cams, g, dtype=np.int64))


FILES = dict(q_feat="q_feat.f32", g_feat="g_feat.f32", q_label="q_label.i64", g_label="g_label.i64",
             q_cam="q_cam.i64", g_cam="g_cam.i64")


def write_data(data, out_dir):
    os.makedirs(out_dir, exist_ok=True)
    for k, f in FILES.items():
        np.ascontiguousarray(data[k]).tofile(os.path.join(out_dir, f))
    meta = dict(queries=data["q_feat"].shape[0], gallery=data["g_feat"].shape[0], dim=data["q_feat"].shape[1])
    with open(os.path.join(out_dir, "meta.json"), "w") as fh:
        json.dump(meta, fh)


def read_data(in_dir):
    with open(os.path.join(in_dir, "meta.json")) as fh:
        meta = json.load(fh)
    out = {}
    for k, f in FILES.items():
        dtype = np.float32 if f.endswith("f32") else np.int64
        a = np.fromfile(os.path.join(in_dir, f), dtype=dtype)
        if k.endswith("feat"):
            a = a.reshape(-1, meta["dim"])
        out[k] = a
    return out


def ranked_flags(sim, q_label, g_label, keep_mask):
    """One metric's preamble in PaddleClas: argsort, index_sample of labels, equal & keep."""
    idx = torch.argsort(sim, dim=1, descending=True)
    chosen = torch.gather(g_label.view(1, -1).expand(idx.shape[0], -1), 1, idx)
    flag = chosen == q_label.view(-1, 1)
    if keep_mask is not None:
        flag = flag & torch.gather(keep_mask, 1, idx)
    return flag.float()


def recallk(sim, ql, gl, keep, topk):
    flag = ranked_flags(sim, ql, gl, keep)
    valid = (flag.sum(1) > 0)
    cmc = (torch.cumsum(flag, 1) > 0).float()
    return {f"recall{k}": cmc[valid, k - 1] for k in topk}, valid


def mean_ap(sim, ql, gl, keep):
    flag = ranked_flags(sim, ql, gl, keep)
    valid = flag.sum(1) > 0
    flag = flag[valid]
    prec = torch.cumsum(flag, 1) / torch.arange(1, flag.shape[1] + 1, dtype=torch.float32)
    return (flag * prec).sum(1) / flag.sum(1)


def minp(sim, ql, gl, keep, paddle_semantics):
    flag = ranked_flags(sim, ql, gl, keep)
    valid = flag.sum(1) > 0
    flag = flag[valid]
    # PaddleClas finds the last match as argmax of flag * (1 - 1/(i+2)) in float32, which cannot tell positions
    # beyond a few thousand apart (1 - 1/(i+2) rounds to equal values) and then picks an earlier match; the
    # fixed semantics does the same in float64.
    dtype = torch.float32 if paddle_semantics else torch.float64
    flag = flag.to(dtype)
    aux = flag - flag / (torch.arange(flag.shape[1], dtype=dtype) + 2)
    hard = torch.argmax(aux, 1).to(dtype)  # 0-based index of the last match
    return flag.sum(1) / (hard if paddle_semantics else hard + 1)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--queries", type=int, default=20000)
    ap.add_argument("--gallery", type=int, default=200000)
    ap.add_argument("--dim", type=int, default=512)
    ap.add_argument("--labels", type=int, default=1000)
    ap.add_argument("--cams", type=int, default=8)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--signal", type=float, default=0.0, help="label-centre strength (0: pure noise features)")
    ap.add_argument("--block", type=int, default=64)
    ap.add_argument("--threads", type=int, default=os.cpu_count())
    ap.add_argument("--data", help="read data written by --write-data")
    ap.add_argument("--write-data", help="write the generated data to this directory and exit")
    ap.add_argument("--max-queries", type=int, default=0, help="evaluate only the first N queries")
    ap.add_argument("--semantics", choices=["fixed", "paddle"], default="fixed")
    a = ap.parse_args()
    torch.set_num_threads(a.threads)

    data = read_data(a.data) if a.data else generate(a.queries, a.gallery, a.dim, a.labels, a.cams, a.seed, a.signal)
    if a.write_data:
        write_data(data, a.write_data)
        return
    qf, gf = torch.from_numpy(data["q_feat"]), torch.from_numpy(data["g_feat"])
    ql, gl = torch.from_numpy(data["q_label"]), torch.from_numpy(data["g_label"])
    qc, gc = torch.from_numpy(data["q_cam"]), torch.from_numpy(data["g_cam"])
    if a.max_queries > 0:
        qf, ql, qc = qf[:a.max_queries], ql[:a.max_queries], qc[:a.max_queries]
    paddle = a.semantics == "paddle"

    rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0
    t0 = time.perf_counter()
    nq = qf.shape[0]
    topk = [1, 5]
    # paddle: Σ block_mean * block_size / num_query; fixed: Σ over valid queries / #valid
    acc = {f"recall{k}": 0.0 for k in topk}
    acc.update(mAP=0.0, mINP=0.0)
    n_valid = 0
    for b in range(0, nq, a.block):
        qb, lb, cb = qf[b:b + a.block], ql[b:b + a.block], qc[b:b + a.block]
        sim = qb @ gf.t()
        keep = (lb.view(-1, 1) != gl.view(1, -1)) | (cb.view(-1, 1) != gc.view(1, -1))
        if paddle:
            sim = keep.float() * sim
        else:
            sim = sim.masked_fill(~keep, float("-inf"))
        rec, valid = recallk(sim, lb, gl, keep, topk)
        aps = mean_ap(sim, lb, gl, keep)
        inps = minp(sim, lb, gl, keep, paddle)
        nv = int(valid.sum())
        if paddle:
            w = qb.shape[0] / nq
            for k in topk:
                acc[f"recall{k}"] += float(rec[f"recall{k}"].mean()) * w
            acc["mAP"] += float(aps.mean()) * w
            acc["mINP"] += float(inps.mean()) * w
        else:
            for k in topk:
                acc[f"recall{k}"] += float(rec[f"recall{k}"].sum())
            acc["mAP"] += float(aps.double().sum())
            acc["mINP"] += float(inps.double().sum())
        n_valid += nv
    if not paddle:
        acc = {k: v / n_valid for k, v in acc.items()}
    seconds = time.perf_counter() - t0
    out = dict(impl="peer-argsort-" + a.semantics, queries=nq, gallery=gf.shape[0], dim=gf.shape[1], threads=a.threads,
               block=a.block, seconds=round(seconds, 3), peak_rss_before_eval_mb=round(rss_before, 1),
               peak_rss_mb=round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0, 1),
               queries_without_match=nq - n_valid, metrics={k: acc[k] for k in ["recall1", "recall5", "mAP", "mINP"]})
    print(json.dumps(out))


if __name__ == "__main__":
    main()
