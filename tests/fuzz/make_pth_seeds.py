#!/usr/bin/env python3
"""Writes the seed inputs of the `pth` fuzz target (docs/testing.md): tiny torch.save'd state dicts in the zip
and the legacy format, with the dtypes, views and wrappers io/state_dict.h reads."""
import collections
import os
import sys

import torch

out = sys.argv[1] if len(sys.argv) > 1 else os.path.join(os.path.dirname(__file__), "corpus", "pth")
os.makedirs(out, exist_ok=True)
torch.manual_seed(0)

base = torch.arange(12, dtype=torch.float32)
sd = collections.OrderedDict()
sd["conv.weight"] = torch.randn(2, 1, 2, 2)
sd["bn.running_mean"] = torch.zeros(2)
sd["bn.num_batches_tracked"] = torch.tensor(3, dtype=torch.int64)
sd["view.t"] = base[2:8].view(2, 3).t()  # a strided view into a shared storage, with an offset
sd["view.same_storage"] = base[:4]
sd["half"] = torch.ones(3, dtype=torch.float16)
sd["flags"] = torch.tensor([True, False])
sd["bytes"] = torch.tensor([1, 2, 3], dtype=torch.uint8)

torch.save(sd, os.path.join(out, "zip_state_dict.pth"))
torch.save(sd, os.path.join(out, "legacy_state_dict.pth"), _use_new_zipfile_serialization=False)
torch.save({"state_dict": dict(list(sd.items())[:2])}, os.path.join(out, "zip_wrapped.pth"))
torch.save({"model": {"w": torch.ones(1, dtype=torch.float64)}}, os.path.join(out, "legacy_wrapped.pth"),
           _use_new_zipfile_serialization=False)
torch.save(collections.OrderedDict(), os.path.join(out, "zip_empty.pth"))
