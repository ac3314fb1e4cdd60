#!/usr/bin/python3
"""Peer compute-only training rate: the peer_reid.py model (torchvision ResNet18 + 1x1 conv neck + ArcMargin,
CE + SupCon) forward + backward + SGD step on a fixed random P×K batch. Prints JSON."""
import argparse, json, math, os, time
import torch, torch.nn as nn, torch.nn.functional as F, torchvision
p = argparse.ArgumentParser()
p.add_argument("--iters", type=int, default=20); p.add_argument("--batch", type=int, default=64)
p.add_argument("--k", type=int, default=2); p.add_argument("--size", type=int, default=64)
p.add_argument("--classes", type=int, default=1017); p.add_argument("--threads", type=int, default=os.cpu_count())
a = p.parse_args()
torch.set_num_threads(a.threads); torch.manual_seed(0)
r = torchvision.models.resnet18()
backbone = nn.Sequential(*list(r.children())[:-1]); neck = nn.Conv2d(512, 256, 1)
w = nn.Parameter(torch.empty(256, a.classes)); nn.init.xavier_normal_(w)
params = list(backbone.parameters()) + list(neck.parameters()) + [w]
opt = torch.optim.SGD(params, lr=0.05, momentum=0.9, weight_decay=5e-4)
x = torch.randn(a.batch, 3, a.size, a.size); y = torch.arange(a.batch // a.k).repeat_interleave(a.k)
def arc(f, m=0.15, s=32.0):
    cos = F.normalize(f, dim=1) @ F.normalize(w, dim=0); sin = (1 - cos.pow(2)).clamp(0, 1).sqrt()
    phi = torch.where(cos > -math.cos(m), cos * math.cos(m) - sin * math.sin(m), cos - m * math.sin(m))
    oh = F.one_hot(y, a.classes).float(); return s * (oh * phi + (1 - oh) * cos)
def supcon(f, t=0.07):
    f = F.normalize(f, dim=1); n = f.shape[0]; eye = torch.eye(n)
    sim = f @ f.t() / t; sim = sim - sim.max(1, keepdim=True)[0].detach()
    logp = sim - torch.log((torch.exp(sim) * (1 - eye)).sum(1, keepdim=True))
    pos = (y[:, None] == y[None, :]).float() * (1 - eye)
    return -(pos * logp).sum(1).div(pos.sum(1).clamp(min=1)).mean()
def step():
    f = neck(backbone(x)).flatten(1); loss = F.cross_entropy(arc(f), y) + supcon(f)
    opt.zero_grad(); loss.backward(); opt.step()
for _ in range(3): step()
t = time.time()
for _ in range(a.iters): step()
print(json.dumps({"impl": "pytorch-python", "threads": a.threads, "batch": a.batch,
                  "train_step_img_per_s": round(a.iters * a.batch / (time.time() - t), 1)}))
