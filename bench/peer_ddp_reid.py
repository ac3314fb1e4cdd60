#!/usr/bin/python3
"""Peer anchor for 2-process training: /work/shared/benchmarks/peer_reid.py's recipe (torchvision ResNet + 1x1 conv
neck, ArcMargin, CE + SupCon, PK batches, SGD momentum with per-iteration cosine lr, ReID evaluation) written as a
PyTorch user would with DistributedDataParallel: Gloo on 127.0.0.1, torch.multiprocessing.spawn, each rank drawing
its own PK batches of --bs / world (seed + rank), len(dataset) // --bs steps per epoch (the global steps of a
1-process run with batch --bs), torch.set_num_threads(cores // world). Rank 0 evaluates the full test list with
peer_reid.py's protocol and prints one JSON line (train_img_per_s = global images / train wall seconds), with DDP's
own communication timings (its logging data, collected every iteration here)."""
import argparse, time, random, math, os, json, socket
import torch, torch.nn as nn, torch.nn.functional as F, torchvision
import torch.distributed as dist, torch.multiprocessing as mp
import torchvision.transforms as T
from torch.nn.parallel import DistributedDataParallel as DDP
from PIL import Image

p = argparse.ArgumentParser()
p.add_argument("--root", required=True); p.add_argument("--epochs", type=int, default=20)
p.add_argument("--size", type=int, default=64); p.add_argument("--bs", type=int, default=64, help="global batch")
p.add_argument("--k", type=int, default=2); p.add_argument("--lr", type=float, default=0.05)
p.add_argument("--workers", type=int, default=2, help="DataLoader workers per process")
p.add_argument("--arch", default="resnet18"); p.add_argument("--emb", type=int, default=256)
p.add_argument("--seed", type=int, default=0); p.add_argument("--world", type=int, default=2)
p.add_argument("--threads", type=int, default=None, help="intra-op threads per process (default cores // world)")
p.add_argument("--port", type=int, default=0, help="rendezvous port (0: a free one)")
p.add_argument("--steps", type=int, default=0, help="steps per epoch (0: len(train) // bs); for smoke tests")
a = p.parse_args()


def read(f): return [(l.split()[0], int(l.split()[1]), int(l.split()[2])) for l in open(os.path.join(a.root, f))]


norm = T.Normalize([0.485, 0.456, 0.406], [0.229, 0.224, 0.225])
ttf = T.Compose([T.Resize((a.size, a.size)), T.RandomHorizontalFlip(), T.ToTensor(), norm,
                 T.RandomErasing(p=0.5, scale=(0.02, 0.4), ratio=(0.3, 3.33))])
etf = T.Compose([T.Resize((a.size, a.size)), T.ToTensor(), norm])


class DS(torch.utils.data.Dataset):
    def __init__(s, items, tf): s.items, s.tf = items, tf
    def __len__(s): return len(s.items)
    def __getitem__(s, i):
        pth, l, c = s.items[i]
        return s.tf(Image.open(os.path.join(a.root, pth)).convert("RGB")), l, c


class PK(torch.utils.data.Sampler):
    """peer_reid.py's PK sampler (ids drawn proportional to their image count, k images each), `steps` batches
    of bs per epoch; each rank has its own Python RNG state (seeded seed + rank), so ranks draw different batches."""
    def __init__(s, items, bs, k, steps):
        s.by = {}
        for i, (_, l, _) in enumerate(items): s.by.setdefault(l, []).append(i)
        s.ids = list(s.by); s.w = [len(s.by[l]) for l in s.ids]
        s.bs, s.k, s.steps = bs, k, steps
    def __iter__(s):
        for _ in range(len(s)):
            chosen = set()
            while len(chosen) < s.bs // s.k: chosen.add(random.choices(s.ids, weights=s.w)[0])
            batch = []
            for l in chosen:
                idx = s.by[l]; batch += random.sample(idx, s.k) if len(idx) >= s.k else random.choices(idx, k=s.k)
            yield batch
    def __len__(s): return s.steps


class Rec(nn.Module):
    """Backbone + neck + ArcMargin head in one module, so DDP owns (and all-reduces) the head weight too."""
    def __init__(s, C):
        super().__init__()
        r = getattr(torchvision.models, a.arch)()
        s.backbone = nn.Sequential(*list(r.children())[:-1])
        s.neck = nn.Conv2d(r.fc.in_features, a.emb, 1)
        s.w = nn.Parameter(torch.empty(a.emb, C)); nn.init.xavier_normal_(s.w)
        s.C = C
    def forward(s, x, y=None, m=0.15, sc=32.0):
        f = s.neck(s.backbone(x)).flatten(1)
        if y is None: return f
        cos = F.normalize(f, dim=1) @ F.normalize(s.w, dim=0)
        sin = (1 - cos.pow(2)).clamp(0, 1).sqrt()
        phi = cos * math.cos(m) - sin * math.sin(m)
        phi = torch.where(cos > -math.cos(m), phi, cos - m * math.sin(m))
        oh = F.one_hot(y, s.C).float()
        return f, sc * (oh * phi + (1 - oh) * cos)


def supcon(f, y, t=0.07):
    f = F.normalize(f, dim=1); n = f.shape[0]; eye = torch.eye(n)
    sim = f @ f.t() / t; sim = sim - sim.max(1, keepdim=True)[0].detach()
    logp = sim - torch.log((torch.exp(sim) * (1 - eye)).sum(1, keepdim=True))
    pos = (y[:, None] == y[None, :]).float() * (1 - eye)
    return -(pos * logp).sum(1).div(pos.sum(1).clamp(min=1)).mean()


def evaluate(m, test):
    m.eval()
    with torch.no_grad():
        el = torch.utils.data.DataLoader(DS(test, etf), batch_size=128, num_workers=a.workers)
        feats, ls, cs = [], [], []
        for x, y, c in el: feats.append(F.normalize(m(x), dim=1)); ls.append(y); cs.append(c)
        f = torch.cat(feats); l = torch.cat(ls); c = torch.cat(cs)
        sim = f @ f.t()
        keep = (l[:, None] != l[None, :]) | (c[:, None] != c[None, :])
        sim = sim.masked_fill(~keep, -1e9)
        order = sim.argsort(1, descending=True)
        match = (l[order] == l[:, None]) & keep.gather(1, order)
        valid = match.any(1)
        r1 = match[:, :1].any(1)[valid].float().mean().item(); r5 = match[:, :5].any(1)[valid].float().mean().item()
        mf = match[valid].float(); cum = mf.cumsum(1); ranks = torch.arange(1, mf.shape[1] + 1).float()
        ap = ((cum / ranks) * mf).sum(1) / mf.sum(1)
        last = mf.shape[1] - 1 - mf.flip(1).argmax(1)
        inp = mf.sum(1) / (last + 1).float()
    return r1, r5, ap.mean().item(), inp.mean().item()


def worker(rank, world, port):
    os.environ["MASTER_ADDR"], os.environ["MASTER_PORT"] = "127.0.0.1", str(port)
    dist.init_process_group("gloo", rank=rank, world_size=world)
    torch.set_num_threads(a.threads or max(1, (os.cpu_count() or 1) // world))
    train, test = read("train_list.txt"), read("test_list.txt")
    C = 1 + max(l for _, l, _ in train)
    torch.manual_seed(a.seed)  # the same initial model as peer_reid.py --seed (DDP broadcasts rank 0's anyway)
    m = DDP(Rec(C))
    m._set_ddp_runtime_logging_sample_rate(1)  # DDP times its communication on sampled iterations; sample all
    torch.manual_seed(a.seed + rank); random.seed(a.seed + rank)  # per-rank batches and augmentations
    opt = torch.optim.SGD(m.parameters(), lr=a.lr, momentum=0.9, weight_decay=5e-4)
    bs = a.bs // world
    steps_per_epoch = a.steps or len(train) // a.bs
    dl = torch.utils.data.DataLoader(DS(train, ttf), batch_sampler=PK(train, bs, a.k, steps_per_epoch),
                                     num_workers=a.workers, persistent_workers=a.workers > 0)
    steps = a.epochs * len(dl); it = 0
    dist.barrier()
    t_all = time.time(); n_all = 0
    for ep in range(a.epochs):
        m.train(); t0 = time.time(); n = 0; tot = 0
        for x, y, _ in dl:
            for g in opt.param_groups: g["lr"] = a.lr * 0.5 * (1 + math.cos(math.pi * it / steps))
            f, logits = m(x, y); loss = F.cross_entropy(logits, y) + supcon(f, y)
            opt.zero_grad(); loss.backward(); opt.step(); it += 1; n += len(y) * world; tot += loss.item()
        n_all += n
        if rank == 0: print(f"epoch {ep+1} loss(rank 0) {tot/len(dl):.3f} {n/(time.time()-t0):.1f} img/s", flush=True)
    train_s = time.time() - t_all
    ddp = m._get_ddp_logging_data()
    if rank == 0:
        t0 = time.time()
        r1, r5, mAP, mINP = evaluate(m.module, test)
        ns = lambda k: ddp.get(k, 0) / 1e6  # DDP reports nanoseconds
        print(json.dumps({
            "peer": "pytorch-python-ddp", "torch": torch.__version__, "arch": a.arch, "epochs": a.epochs,
            "world_size": world, "backend": "gloo", "batch_per_rank": bs, "steps_per_epoch": len(dl),
            "threads_per_rank": torch.get_num_threads(), "workers_per_rank": a.workers,
            "train_img_per_s": round(n_all / train_s, 1), "train_wall_s": round(train_s, 1),
            "recall1": round(r1, 4), "recall5": round(r5, 4), "mAP": round(mAP, 4), "mINP": round(mINP, 4),
            "eval_s": round(time.time() - t0, 2),
            # rank 0, per step: comm = first bucket's all-reduce launched .. all buckets reduced; overlap = the part
            # of that while backward was still computing; exposed = comm - overlap (waiting after backward).
            "ddp_backward_compute_ms": round(ns("avg_backward_compute_time"), 2),
            "ddp_backward_comm_ms": round(ns("avg_backward_comm_time"), 2),
            "ddp_comm_overlap_ms": round(ns("avg_backward_compute_comm_overlap_time"), 2),
            "ddp_comm_exposed_ms": round(ns("avg_backward_comm_time") - ns("avg_backward_compute_comm_overlap_time"), 2),
            "ddp_bucket_cap_mb": ddp.get("bucket_cap_bytes", 0) / 2**20,
        }), flush=True)
    dist.destroy_process_group()


if __name__ == "__main__":
    port = a.port
    if port == 0:
        with socket.socket() as s: s.bind(("127.0.0.1", 0)); port = s.getsockname()[1]
    mp.spawn(worker, args=(a.world, port), nprocs=a.world, join=True)
