#!/usr/bin/python3
"""Peer for `featlearn serve`: the retrieval service a PyTorch user writes with FastAPI + uvicorn.

  POST /search?top_k=K   body: an image (Content-Type image/*) or {"vector": [...]} (application/json)
                         -> {"results": [{"id", "path", "label", "score"}, ...]} best first (featlearn's shape)
  GET  /health           -> {"status": "ok"}

Model: torchvision resnet18 truncated after avgpool + the 1x1 Conv2d neck (featlearn's RecModel with
BackboneStopLayer avg_pool + VehicleNeck), weights read from featlearn's exported inference.ckpt (a LibTorch
archive that torch.jit.load opens: keys model.backbone.* are torchvision's names, model.neck.conv.*), eval mode,
torch.no_grad, torch.set_num_threads(PEER_THREADS). Preprocessing as the exported transform_ops: decode (PIL,
RGB), resize to the model's image_shape (bilinear, as cv2.resize), x/255, ImageNet mean/std; features
L2-normalized. Index: FAISS with the gallery vectors that `featlearn extract` wrote (the same vectors featlearn's
index holds), same index_method / efSearch / nprobe, inner product; ids are 1-based list positions (featlearn's
ids for a freshly built index).

Run it the way users do: `python3 -m uvicorn peer_serve:app --app-dir bench --port P [--workers W]` with the
environment:
  PEER_MODEL_DIR   exported model directory (inference.yaml + inference.ckpt)
  PEER_FEATURES    .npy [N, D] float32 gallery features (featlearn extract --out)
  PEER_LIST        the gallery list (path label ... per line, PEER_DELIMITER, default whitespace)
  PEER_INDEX       Flat | HNSW<M> | IVF<nlist> (default HNSW32), PEER_EF_SEARCH (128), PEER_NPROBE (16)
  PEER_THREADS     torch + FAISS threads per worker (default: cores / workers as given by PEER_WORKERS)
  PEER_MODE        threadpool (default: plain `def` endpoint, FastAPI runs it in its thread pool) |
                   executor (async endpoint, model and search via loop.run_in_executor) |
                   inline (async endpoint computing on the event loop: one request at a time, no contention)
"""
import asyncio
import io
import json
import os

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
import torchvision
from fastapi import Depends, FastAPI, HTTPException, Request
from fastapi.responses import JSONResponse
from PIL import Image

import faiss

MEAN = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
STD = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)


def load_model(model_dir):
    """resnet18 up to avgpool + Conv2d(512, D, 1) with featlearn's exported weights. -> (model, [C, H, W])"""
    archive = torch.jit.load(os.path.join(model_dir, "inference.ckpt"), map_location="cpu")
    tensors = {k: v for k, v in list(archive.named_parameters()) + list(archive.named_buffers())}
    backbone = {k[len("model.backbone."):]: v for k, v in tensors.items() if k.startswith("model.backbone.")}
    neck_w = tensors["model.neck.conv.weight"]
    resnet = torchvision.models.resnet18()
    missing, unexpected = resnet.load_state_dict(backbone, strict=False)
    if unexpected or any(not k.startswith("fc.") for k in missing):
        raise SystemExit(f"peer_serve: weights do not fit resnet18: missing {missing}, unexpected {unexpected}")
    neck = nn.Conv2d(neck_w.shape[1], neck_w.shape[0], 1, bias="model.neck.conv.bias" in tensors)
    neck.weight.data.copy_(neck_w)
    if neck.bias is not None:
        neck.bias.data.copy_(tensors["model.neck.conv.bias"])
    model = nn.Sequential(*list(resnet.children())[:-1], neck, nn.Flatten(1)).eval()
    shape = [3, 224, 224]
    with open(os.path.join(model_dir, "inference.yaml")) as fh:  # image_shape: [C, H, W] (a YAML list)
        lines = fh.read().splitlines()
    for i, line in enumerate(lines):
        if line.startswith("image_shape:"):
            rest = line.split(":", 1)[1].strip()
            if rest:
                shape = json.loads(rest)
            else:
                shape = [int(l.strip().lstrip("- ")) for l in lines[i + 1:i + 4]]
    return model, shape


def build_index(features, method, ef_search, nprobe):
    d = features.shape[1]
    factory = "Flat" if method == "Flat" else (f"{method},Flat" if method.startswith("IVF") else method)
    index = faiss.index_factory(d, factory, faiss.METRIC_INNER_PRODUCT)
    if not index.is_trained:
        index.train(features)
    index.add(features)
    if method.startswith("HNSW"):
        index.hnsw.efSearch = ef_search
    if method.startswith("IVF"):
        index.nprobe = nprobe
    return index


class Service:
    def __init__(self):
        workers = int(os.environ.get("PEER_WORKERS", "1"))
        threads = int(os.environ.get("PEER_THREADS", "0")) or max(1, (os.cpu_count() or 1) // workers)
        torch.set_num_threads(threads)
        faiss.omp_set_num_threads(threads)
        self.model, shape = load_model(os.environ["PEER_MODEL_DIR"])
        self.size = (int(shape[1]), int(shape[2]))
        feats = np.ascontiguousarray(np.load(os.environ["PEER_FEATURES"]), dtype=np.float32)
        feats /= np.maximum(np.linalg.norm(feats, axis=1, keepdims=True), 1e-12)
        self.dim = feats.shape[1]
        delim = os.environ.get("PEER_DELIMITER") or None
        with open(os.environ["PEER_LIST"]) as fh:
            rows = [line.rstrip("\n").split(delim) for line in fh if line.strip()]
        if len(rows) != feats.shape[0]:
            raise SystemExit(f"peer_serve: {len(rows)} list lines but {feats.shape[0]} feature rows")
        self.meta = [(r[0], r[1] if len(r) > 1 else "") for r in rows]
        self.index = build_index(feats, os.environ.get("PEER_INDEX", "HNSW32"),
                                 int(os.environ.get("PEER_EF_SEARCH", "128")), int(os.environ.get("PEER_NPROBE", "16")))

    def embed_image(self, data):
        try:
            img = Image.open(io.BytesIO(data)).convert("RGB")
        except Exception as e:  # noqa: BLE001 - any decoder error is the client's
            raise HTTPException(400, f"cannot decode the image: {e}")
        x = torch.from_numpy(np.asarray(img, dtype=np.float32)).permute(2, 0, 1).unsqueeze(0)
        if tuple(x.shape[2:]) != self.size:
            x = F.interpolate(x, size=self.size, mode="bilinear", align_corners=False)
        x = (x / 255.0 - MEAN) / STD
        with torch.no_grad():
            f = self.model(x)
        return F.normalize(f, dim=1).numpy()

    def search(self, q, top_k):
        scores, ids = self.index.search(q, top_k)
        return {"results": [{"id": int(i) + 1, "path": self.meta[i][0], "label": self.meta[i][1], "score": float(s)}
                            for s, i in zip(scores[0], ids[0]) if i >= 0]}

    def handle(self, body, content_type, top_k):
        if top_k <= 0:
            raise HTTPException(400, "top_k must be positive")
        if content_type.startswith("application/json"):
            try:
                v = np.asarray(json.loads(body)["vector"], dtype=np.float32).reshape(1, -1)
            except Exception as e:  # noqa: BLE001
                raise HTTPException(400, f"body: expected {{\"vector\": [...]}}: {e}")
            if v.shape[1] != self.dim:
                raise HTTPException(400, f"vector: expected {self.dim} values, got {v.shape[1]}")
            return self.search(v, top_k)
        return self.search(self.embed_image(body), top_k)


service = Service()
app = FastAPI()
MODE = os.environ.get("PEER_MODE", "threadpool")


async def raw_body(request: Request) -> bytes:
    return await request.body()


@app.get("/health")
async def health():
    return {"status": "ok"}


if MODE == "threadpool":
    @app.post("/search")
    def search(request: Request, top_k: int = 5, body: bytes = Depends(raw_body)):
        return JSONResponse(service.handle(body, request.headers.get("content-type", ""), top_k))
elif MODE == "executor":
    @app.post("/search")
    async def search(request: Request, top_k: int = 5):
        body = await request.body()
        loop = asyncio.get_running_loop()
        out = await loop.run_in_executor(None, service.handle, body, request.headers.get("content-type", ""), top_k)
        return JSONResponse(out)
elif MODE == "inline":
    @app.post("/search")
    async def search(request: Request, top_k: int = 5):
        body = await request.body()
        return JSONResponse(service.handle(body, request.headers.get("content-type", ""), top_k))
else:
    raise SystemExit(f"peer_serve: PEER_MODE must be threadpool, executor or inline, not {MODE!r}")
