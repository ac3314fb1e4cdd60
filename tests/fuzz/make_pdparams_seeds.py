#!/usr/bin/env python3
"""Writes the seed inputs of the `pdparams` fuzz target (docs/testing.md): tiny paddle.save-format state dicts
(a pickle of name -> numpy array) under pickle protocols 2, 3 and 4, with the dtypes and forms io/pdparams.h
reads (numpy and pickle only; no Paddle)."""
import os
import pickle
import sys

import numpy as np

out = sys.argv[1] if len(sys.argv) > 1 else os.path.join(os.path.dirname(__file__), "corpus", "pdparams")
os.makedirs(out, exist_ok=True)
rng = np.random.default_rng(0)
sd = {
    "conv1.weight": rng.standard_normal((2, 1, 2, 2)).astype(np.float32),
    "bn1._mean": np.zeros(2, np.float32),
    "bn1._variance": np.ones(2, np.float32),
    "fc.weight": rng.standard_normal((3, 2)).astype(np.float16),
    "fc.bias": np.arange(2, dtype=np.float64),
    "steps": np.array(3, dtype=np.int64),
    "fortran": np.asfortranarray(np.arange(6, dtype=np.int32).reshape(2, 3)),
    "flags": np.array([True, False]),
    "empty": np.zeros((0, 4), np.float32),
    "StructuredToParameterName@@": {"conv1.weight": "conv2d_0.w_0"},
}
for proto in (2, 3, 4):
    with open(os.path.join(out, f"state_dict_p{proto}.pdparams"), "wb") as f:
        pickle.dump(sd, f, protocol=proto)
with open(os.path.join(out, "tuple_form.pdparams"), "wb") as f:  # values as (name, array)
    pickle.dump({"w": ("linear_0.w_0", np.ones((2, 2), np.float32))}, f, protocol=4)
