#!/usr/bin/python3
"""Baseline writers for the writer benchmark, fed the same pool and batches as
fstore_bench_writer (batch k = pool rows starting at (k*3) % (P - B + 1)).

usage: h5py_writer.py h5py OUT POOL ROWS BATCH   the reference's way: h5py, five datasets
                                                 with the reference chunks and lzf, resize +
                                                 slice assignment per batch
       h5py_writer.py seq  OUT POOL ROWS BATCH   the same payload bytes written sequentially
                                                 to a plain file (the disk's limit)
Both fdatasync the file at the end, inside the timing. Prints one JSON line."""
import json
import os
import resource
import sys
import time

import numpy as np

mode, out, pool_path, rows, batch = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4]), int(sys.argv[5])
T, D = 729, 1152
pool = np.fromfile(pool_path, dtype=np.float16).reshape(-1, T, D)
cls_pool = np.ascontiguousarray(pool[:, 0, :])
P = pool.shape[0]
if os.path.exists(out):
    os.remove(out)

t0 = time.perf_counter()
written = 0
if mode == "h5py":
    import h5py
    f = h5py.File(out, "w")
    dsets = {
        "image_features": f.create_dataset("image_features", (0, D), maxshape=(None, D), dtype="float16",
                                           chunks=(64, D), compression="lzf"),
        "image_token_features": f.create_dataset("image_token_features", (0, T, D), maxshape=(None, T, D),
                                                 dtype="float16", chunks=(4, T, D), compression="lzf"),
        "ids": f.create_dataset("ids", (0,), maxshape=(None,), dtype="int64", chunks=(4096,), compression="lzf"),
        "labels": f.create_dataset("labels", (0,), maxshape=(None,), dtype="int64", chunks=(4096,), compression="lzf"),
        "split": f.create_dataset("split", (0,), maxshape=(None,), dtype=h5py.string_dtype("utf-8"),
                                  chunks=(4096,), compression="lzf"),
    }
    f.create_group("templates")
    f.attrs["D"], f.attrs["T_img"], f.attrs["version"] = D, T, "1.0"
    k = 0
    while written < rows:
        n = min(batch, rows - written)
        first = (k * 3) % (P - n + 1)
        for d in dsets.values():
            d.resize(written + n, axis=0)
        dsets["image_features"][written:written + n] = cls_pool[first:first + n]
        dsets["image_token_features"][written:written + n] = pool[first:first + n]
        dsets["ids"][written:written + n] = np.arange(written, written + n)
        dsets["labels"][written:written + n] = np.full(n, k % 8)
        dsets["split"][written:written + n] = ["train" if written < rows * 7 // 10 else "test"] * n
        written += n
        k += 1
    f.attrs["split_counts"] = json.dumps({"train": rows * 7 // 10, "test": rows - rows * 7 // 10})
    f.close()
    fd = os.open(out, os.O_RDONLY)
elif mode == "seq":
    fd = os.open(out, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    k = 0
    while written < rows:
        n = min(batch, rows - written)
        first = (k * 3) % (P - n + 1)
        os.write(fd, memoryview(pool[first:first + n]).cast("B"))
        os.write(fd, memoryview(cls_pool[first:first + n]).cast("B"))
        os.write(fd, np.zeros(2 * n, np.int64).tobytes())
        written += n
        k += 1
else:
    sys.exit("mode must be h5py or seq")
os.fdatasync(fd)
os.close(fd)
seconds = time.perf_counter() - t0
payload = written * ((T * D + D) * 2 + 16)
print(json.dumps({"rows": written, "batch": batch, "seconds": round(seconds, 3), "payload_bytes": payload,
                  "mb_per_s": round(payload / seconds / 1e6, 1), "file_bytes": os.path.getsize(out),
                  "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
                  "input_mb": round(pool.nbytes / 1e6, 1)}))
