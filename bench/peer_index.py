#!/usr/bin/python3
"""Peer for bench_index: a gallery index the way a competent FAISS user (or PaddleClas's build_gallery.py) writes it.

Per method (Flat, HNSW32, IVF):
  build    faiss.index_factory(d, "IDMap2,Flat" | "IDMap2,HNSW32" | "IVF{nlist},Flat", METRIC_INNER_PRODUCT)
           (IVF keeps ids natively, so no IDMap), train on the whole base, add_with_ids(base, ids 1..N)
  persist  faiss.write_index + pickle.dump of the id -> "path label" map (PaddleClas's vector.index + id_map.pkl)
  search   one batch of all queries, and one query at a time, top-10; efSearch / nprobe swept upward until
           recall@10 >= --target (against the exact top-10 in the data directory)
  append   add_with_ids of N/100 new vectors (+ id map), then persist again
  remove   remove_ids of N/100 ids (+ id map), then persist again. FAISS's HNSW has no remove_ids: it raises, and
           the peer's only option is a full rebuild from the vectors it kept (timed, as "rebuild").
Prints one JSON object (same shape as bench_index's): times, peak RSS (getrusage) and RSS growth of the build,
the sweep, the chosen value with batch and single-query QPS, append/remove times and recall after them.

--write-data DIR generates the shared data once (clustered, L2-normalized, exact ground truth) and exits;
bench_index and this script then both read DIR (numpy .npy files, see write_data()).
"""
import argparse
import json
import math
import os
import pickle
import resource
import shutil
import tempfile
import time

import numpy as np

import faiss

K = 10  # recall@10 against the exact top-10


# ---- data ---------------------------------------------------------------------------------------------------
def draw(rng, centres, n, sigma):
    """n points: a random centre (unit sphere) + isotropic Gaussian noise of expected norm sigma, L2-normalized."""
    d = centres.shape[1]
    label = rng.integers(0, centres.shape[0], n, dtype=np.int64)
    x = centres[label] + rng.standard_normal((n, d), dtype=np.float32) * np.float32(sigma / math.sqrt(d))
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    return np.ascontiguousarray(x, dtype=np.float32), label


def exact_topk(base, ids, queries, k, threads):
    faiss.omp_set_num_threads(threads)
    flat = faiss.IndexFlatIP(base.shape[1])
    flat.add(base)
    _, pos = flat.search(queries, k)
    return ids[pos]


def write_data(a):
    """base.npy [N, D] f32, base_label.npy [N] i64, queries.npy [Q, D], extra.npy [N/100, D] (appended, ids
    N+1..), extra_label.npy, remove_ids.npy [N/100] i64 (1-based ids of base items), gt.npy [Q, 10] i64 (exact
    top-10 ids over base), gt_after.npy [Q, 10] (over base - removed + extra), meta.json."""
    rng = np.random.default_rng(a.seed)
    a.clusters = a.clusters or max(10, a.n // 1000)  # ~1000 points per cluster at any N
    centres = rng.standard_normal((a.clusters, a.dim), dtype=np.float32)
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    base, base_label = draw(rng, centres, a.n, a.sigma)
    queries, _ = draw(rng, centres, a.queries, a.sigma)
    n_upd = max(1, a.n // 100)
    extra, extra_label = draw(rng, centres, n_upd, a.sigma)
    remove_ids = np.sort(rng.choice(a.n, n_upd, replace=False)).astype(np.int64) + 1
    ids = np.arange(1, a.n + 1, dtype=np.int64)
    gt = exact_topk(base, ids, queries, K, a.threads)
    keep = np.ones(a.n, dtype=bool)
    keep[remove_ids - 1] = False
    after = np.concatenate([base[keep], extra])
    after_ids = np.concatenate([ids[keep], np.arange(a.n + 1, a.n + 1 + n_upd, dtype=np.int64)])
    gt_after = exact_topk(after, after_ids, queries, K, a.threads)
    os.makedirs(a.write_data, exist_ok=True)
    for name, arr in dict(base=base, base_label=base_label, queries=queries, extra=extra, extra_label=extra_label,
                          remove_ids=remove_ids, gt=gt, gt_after=gt_after).items():
        np.save(os.path.join(a.write_data, name + ".npy"), arr)
    meta = dict(n=a.n, dim=a.dim, queries=a.queries, clusters=a.clusters, sigma=a.sigma, seed=a.seed, updates=n_upd)
    with open(os.path.join(a.write_data, "meta.json"), "w") as fh:
        json.dump(meta, fh)
    print(json.dumps(dict(wrote=a.write_data, **meta)))


def item_path(i, label):  # the metadata both sides store per item
    return f"gallery/c{label:04d}/{i:08d}.jpg"


# ---- measurement helpers --------------------------------------------------------------------------------------
def peak_rss_mb():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def rss_mb():
    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def recall(found, gt):
    return float(np.mean([len(set(f[f > 0].tolist()) & set(g.tolist())) / K for f, g in zip(found, gt)]))


def dir_mb(path):
    return sum(os.path.getsize(os.path.join(r, f)) for r, _, fs in os.walk(path) for f in fs) / 2**20


class Timer:
    def __enter__(self):
        self.t = time.perf_counter()
        return self

    def __exit__(self, *exc):
        self.s = time.perf_counter() - self.t


# ---- the peer -----------------------------------------------------------------------------------------------
def factory_string(method, nlist):
    if method == "Flat":
        return "IDMap2,Flat"
    if method.startswith("HNSW"):
        return "IDMap2," + method
    if method == "IVF":
        return f"IVF{nlist},Flat"  # IVF stores ids itself (add_with_ids / remove_ids work without IDMap)
    raise SystemExit(f"peer_index: unknown method {method!r} (Flat, HNSW<M>, IVF)")


def build(method, vectors, ids, a, nlist):
    index = faiss.index_factory(vectors.shape[1], factory_string(method, nlist), faiss.METRIC_INNER_PRODUCT)
    if method.startswith("HNSW"):
        faiss.downcast_index(index.index).hnsw.efConstruction = a.ef_construction
    if not index.is_trained:
        index.train(vectors)
    index.add_with_ids(vectors, ids)
    return index


def set_param(index, method, value):
    if method.startswith("HNSW"):
        faiss.downcast_index(index.index).hnsw.efSearch = value
    elif method == "IVF":
        index.nprobe = value


def persist(index, id_map, work):
    faiss.write_index(index, os.path.join(work, "vector.index"))
    with open(os.path.join(work, "id_map.pkl"), "wb") as fh:
        pickle.dump(id_map, fh)


def qps_batch(index, queries, repeat):
    best, ids = math.inf, None
    for _ in range(repeat):
        with Timer() as t:
            _, ids = index.search(queries, K)
        best = min(best, t.s)
    return queries.shape[0] / best, ids


def qps_single(index, queries, budget_s, passes=3):
    """Best of `passes` loops of one query per call, each over all queries or budget_s / passes seconds."""
    best, best_done = 0.0, 0
    for _ in range(passes):
        done, t0 = 0, time.perf_counter()
        for i in range(queries.shape[0]):
            index.search(queries[i:i + 1], K)
            done += 1
            if time.perf_counter() - t0 > budget_s / passes:
                break
        q = done / (time.perf_counter() - t0)
        if q > best:
            best, best_done = q, done
    return best, best_done


def sweep_values(method, nlist):
    if method.startswith("HNSW"):
        return "ef_search", [16, 32, 64, 128, 256, 512, 1024]
    if method == "IVF":
        vals, v = [], 1
        while v < nlist:
            vals.append(v)
            v *= 2
        return "nprobe", vals + [nlist]
    return None, [None]


def run_method(method, d, a, nlist, work):
    base, queries, gt = d["base"], d["queries"], d["gt"]
    n = base.shape[0]
    ids = np.arange(1, n + 1, dtype=np.int64)
    out = dict(method=method, factory=factory_string(method, nlist), nlist=nlist if method == "IVF" else None,
               ef_construction=a.ef_construction if method.startswith("HNSW") else None)
    rss0 = rss_mb()
    with Timer() as t_build:
        index = build(method, base, ids, a, nlist)
        id_map = {int(i): item_path(int(i), int(l)) + " " + str(int(l)) for i, l in zip(ids, d["base_label"])}
    with Timer() as t_persist:
        persist(index, id_map, work)
    out.update(build_s=t_build.s, persist_s=t_persist.s, total_build_s=t_build.s + t_persist.s,
               disk_mb=dir_mb(work), rss_growth_build_mb=rss_mb() - rss0)

    param, values = sweep_values(method, nlist)
    sweep, chosen = [], None
    for v in values:
        set_param(index, method, v)
        q, found = qps_batch(index, queries, 1)
        r = recall(found, gt)
        sweep.append(dict(value=v, recall=r, qps=q))
        if r >= a.target:
            chosen = v
            break
    if chosen is None:  # target not reached: the best recall of the sweep
        chosen = max(sweep, key=lambda s: s["recall"])["value"]
    set_param(index, method, chosen)
    q_batch, found = qps_batch(index, queries, 3)
    q_single, n_single = qps_single(index, queries, a.single_seconds)
    out.update(param=param, sweep=sweep, chosen=dict(value=chosen, recall=recall(found, gt), qps_batch=q_batch,
                                                     qps_single=q_single, single_queries=n_single))

    # append N/100
    extra, extra_label, remove_ids = d["extra"], d["extra_label"], d["remove_ids"]
    extra_ids = np.arange(n + 1, n + 1 + extra.shape[0], dtype=np.int64)
    with Timer() as t_add:
        index.add_with_ids(extra, extra_ids)
        for i, l in zip(extra_ids, extra_label):
            id_map[int(i)] = item_path(int(i), int(l)) + " " + str(int(l))
    with Timer() as t_add_p:
        persist(index, id_map, work)
    out["append"] = dict(n=int(extra.shape[0]), mem_s=t_add.s, persist_s=t_add_p.s, s=t_add.s + t_add_p.s,
                         frac_of_build=(t_add.s + t_add_p.s) / out["total_build_s"])

    # remove N/100
    how = "remove_ids"
    try:
        with Timer() as t_rm:
            index.remove_ids(remove_ids)
            for i in remove_ids:
                del id_map[int(i)]
    except RuntimeError as e:  # HNSW: "remove_ids not implemented for this type of index"
        how = "rebuild (remove_ids raised: " + str(e).strip().rsplit(": ", 1)[-1] + ")"
        keep = np.ones(n, dtype=bool)
        keep[remove_ids - 1] = False
        with Timer() as t_rm:
            vectors = np.concatenate([base[keep], extra])
            index = build(method, vectors, np.concatenate([ids[keep], extra_ids]), a, nlist)
            for i in remove_ids:
                del id_map[int(i)]
            del vectors
        set_param(index, method, chosen)
    with Timer() as t_rm_p:
        persist(index, id_map, work)
    out["remove"] = dict(n=int(remove_ids.shape[0]), how=how, supported=how == "remove_ids", mem_s=t_rm.s,
                         persist_s=t_rm_p.s, s=t_rm.s + t_rm_p.s,
                         frac_of_build=(t_rm.s + t_rm_p.s) / out["total_build_s"])
    _, found = index.search(queries, K)
    removed = set(remove_ids.tolist())
    out.update(recall_after_update=recall(found, d["gt_after"]),
               removed_returned=int(sum(1 for row in found for i in row.tolist() if i in removed)),
               size_after=int(index.ntotal))
    del index, id_map
    with Timer() as t_open:  # what a service does at start: read both files, first search
        index = faiss.read_index(os.path.join(work, "vector.index"))
        with open(os.path.join(work, "id_map.pkl"), "rb") as fh:
            id_map = pickle.load(fh)
        set_param(index, method, chosen)
        index.search(queries[:1], K)
    out.update(reopen_s=t_open.s, peak_rss_mb=peak_rss_mb())
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data", help="directory written by --write-data")
    ap.add_argument("--write-data", help="generate the data into this directory and exit")
    ap.add_argument("--n", type=int, default=1_000_000)
    ap.add_argument("--dim", type=int, default=256)
    ap.add_argument("--queries", type=int, default=1000)
    ap.add_argument("--clusters", type=int, default=0, help="cluster centres (0: max(10, N / 1000))")
    ap.add_argument("--sigma", type=float, default=1.0, help="noise norm relative to the unit centre")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--methods", default="Flat,HNSW32,IVF")
    ap.add_argument("--nlist", type=int, default=0, help="IVF lists (0: round(4*sqrt(N)))")
    ap.add_argument("--ef-construction", type=int, default=40)
    ap.add_argument("--target", type=float, default=0.95, help="recall@10 the sweep stops at")
    ap.add_argument("--single-seconds", type=float, default=5.0, help="time budget of the single-query loop")
    ap.add_argument("--threads", type=int, default=os.cpu_count())
    ap.add_argument("--work", help="directory for the index files (default: a temporary one, removed)")
    ap.add_argument("--out", help="also write the JSON here")
    a = ap.parse_args()
    faiss.omp_set_num_threads(a.threads)
    if a.write_data:
        write_data(a)
        return
    if not a.data:
        ap.error("--data DIR (or --write-data DIR) is required")
    t0 = time.perf_counter()
    d = {k: np.load(os.path.join(a.data, k + ".npy"))
         for k in ["base", "base_label", "queries", "extra", "extra_label", "remove_ids", "gt", "gt_after"]}
    load_s = time.perf_counter() - t0
    n = d["base"].shape[0]
    nlist = a.nlist or int(round(4 * math.sqrt(n)))
    result = dict(impl="peer-faiss-python", faiss=faiss.__version__, n=n, dim=int(d["base"].shape[1]),
                  queries=int(d["queries"].shape[0]), threads=a.threads, target=a.target, load_s=load_s,
                  rss_after_load_mb=rss_mb(), methods=[])
    for method in a.methods.split(","):
        work = a.work or tempfile.mkdtemp(prefix="peer_index_")
        os.makedirs(work, exist_ok=True)
        try:
            result["methods"].append(run_method(method, d, a, nlist, work))
        finally:
            if not a.work:
                shutil.rmtree(work, ignore_errors=True)
    result["peak_rss_mb"] = peak_rss_mb()
    text = json.dumps(result)
    if a.out:
        with open(a.out, "w") as fh:
            fh.write(text + "\n")
    print(text)


if __name__ == "__main__":
    main()
