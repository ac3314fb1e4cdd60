#!/usr/bin/python3
"""Feature extraction peer for bench/extract_side_by_side.sh: torchvision ResNet50 (random weights, fc removed:
the 2048-d pooled features, as featlearn's ResNet50 with BackboneStopLayer flatten), L2-normalized, over a list
of `path label` lines, with a torch DataLoader (PIL decode, resize to SIZE x SIZE, to tensor, normalize), eval +
inference_mode, torch threads = all cores. Prints one JSON line: steady-state images/s from the end of the first
batch to the end (the same span `featlearn extract` reports)."""
import argparse
import json
import os
import time

import torch
import torchvision
from PIL import Image
from torch.utils.data import DataLoader, Dataset
from torchvision import transforms


class ListDataset(Dataset):
    def __init__(self, root, list_path, size):
        with open(list_path) as fh:
            self.items = [(os.path.join(root, ln.split()[0]), int(ln.split()[1])) for ln in fh if ln.strip()]
        # featlearn's ResizeImage(size) + NormalizeImage(scale 1/255, ImageNet mean/std) + CHW.
        self.tf = transforms.Compose([
            transforms.Resize((size, size)),
            transforms.ToTensor(),
            transforms.Normalize([0.485, 0.456, 0.406], [0.229, 0.224, 0.225]),
        ])

    def __len__(self):
        return len(self.items)

    def __getitem__(self, i):
        path, label = self.items[i]
        with Image.open(path) as im:
            return self.tf(im.convert("RGB")), label


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--image-root", required=True)
    ap.add_argument("--list", required=True)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--size", type=int, default=224)
    ap.add_argument("--threads", type=int, default=os.cpu_count())
    ap.add_argument("--channels-last", type=int, default=1, help="model and input in channels_last (1) or not (0)")
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    torch.manual_seed(0)
    model = torchvision.models.resnet50()
    model.fc = torch.nn.Identity()
    model.eval()
    if a.channels_last:
        model = model.to(memory_format=torch.channels_last)
    loader = DataLoader(ListDataset(a.image_root, a.list, a.size), batch_size=a.batch_size, shuffle=False,
                        num_workers=a.workers, persistent_workers=False)
    feats, n_after, t_first = [], 0, None
    with torch.inference_mode():
        for i, (x, _) in enumerate(loader):
            if a.channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
            feats.append(torch.nn.functional.normalize(model(x), dim=1))
            if i == 0:
                t_first = time.perf_counter()
            else:
                n_after += x.shape[0]
    s = time.perf_counter() - t_first
    f = torch.cat(feats)
    print(json.dumps({"program": "pytorch", "images": int(f.shape[0]), "dim": int(f.shape[1]),
                      "images_after_first": n_after, "seconds": round(s, 3),
                      "images_per_s": round(n_after / s, 2), "threads": torch.get_num_threads(),
                      "workers": a.workers, "channels_last": a.channels_last}))


if __name__ == "__main__":
    main()
