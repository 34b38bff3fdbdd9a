#!/usr/bin/python3
"""Writes the benchmark's input pool: ROWS rows of T x D float16 drawn from N(0, 1), like
model token features (lzf does not shrink them). usage: gen_pool.py OUT ROWS [T D]"""
import sys

import numpy as np

out, rows = sys.argv[1], int(sys.argv[2])
t, d = (int(sys.argv[3]), int(sys.argv[4])) if len(sys.argv) > 4 else (729, 1152)
rng = np.random.default_rng(0)
with open(out, "wb") as f:
    for _ in range(rows):
        rng.standard_normal((t, d), dtype=np.float32).astype(np.float16).tofile(f)
