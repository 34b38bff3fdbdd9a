"""Checks tests/python/fstore_ref/medmnist.py: CLI, MedMNIST layout, member compression."""
import os
import struct
import subprocess
import sys
import tempfile
import zipfile

import numpy as np

sys.path.insert(0, os.path.join(os.environ.get("FSTORE_SOURCE_DIR", os.path.join(os.path.dirname(__file__), "..", "..")),
                                "tests", "python"))
from fstore_ref.medmnist import make_dataset  # noqa: E402

src = os.environ.get("FSTORE_SOURCE_DIR", os.path.join(os.path.dirname(__file__), "..", ".."))
script = os.path.join(src, "tests", "python", "fstore_ref", "medmnist.py")


def run(out, *args):
    res = subprocess.run([sys.executable, script, "--out", out, *args], check=True, capture_output=True, text=True)
    return res.stdout.strip()


def local_extra(path, member):
    with zipfile.ZipFile(path) as z:
        info = z.getinfo(member)
    with open(path, "rb") as f:
        f.seek(info.header_offset)
        hdr = f.read(30)
        name_len, extra_len = struct.unpack("<HH", hdr[26:30])
        f.read(name_len)
        return f.read(extra_len)


with tempfile.TemporaryDirectory() as tmp:
    expect_method = {"savez": zipfile.ZIP_STORED, "savez_compressed": zipfile.ZIP_DEFLATED,
                     "zip-stored": zipfile.ZIP_STORED, "zip-deflated": zipfile.ZIP_DEFLATED}
    for size, mode in ((28, "savez"), (64, "savez_compressed"), (28, "zip-stored"), (32, "zip-deflated")):
        out = os.path.join(tmp, mode)
        if mode.startswith("savez"):  # the CLI
            path = run(out, "--size", str(size), "--train", "11", "--val", "2", "--test", "3", "--seed", "5", "--mode", mode)
        else:
            path, _ = make_dataset(out, size, {"train": 11, "val": 2, "test": 3}, seed=5, mode=mode)
        assert os.path.basename(path) == ("bloodmnist.npz" if size == 28 else f"bloodmnist_{size}.npz"), path
        with np.load(path) as d:
            assert sorted(d.files) == sorted(f"{s}_{k}" for s in ("train", "val", "test") for k in ("images", "labels"))
            for split, n in (("train", 11), ("val", 2), ("test", 3)):
                im, lb = d[f"{split}_images"], d[f"{split}_labels"]
                assert im.shape == (n, size, size, 3) and im.dtype == np.uint8, (im.shape, im.dtype)
                assert lb.shape == (n, 1) and lb.dtype == np.uint8, (lb.shape, lb.dtype)
                assert lb.min() >= 0 and lb.max() < 8
        with zipfile.ZipFile(path) as z:
            assert all(i.compress_type == expect_method[mode] for i in z.infolist()), mode
        has_zip64 = local_extra(path, "train_images.npy")[:2] == b"\x01\x00"
        assert has_zip64 == mode.startswith("savez"), (mode, has_zip64)

    # Same seed, same cells; another seed, other cells.
    a, _ = make_dataset(os.path.join(tmp, "a"), seed=1)
    b, _ = make_dataset(os.path.join(tmp, "b"), seed=1)
    c, _ = make_dataset(os.path.join(tmp, "c"), seed=2)
    with np.load(a) as da, np.load(b) as db, np.load(c) as dc:
        assert np.array_equal(da["train_images"], db["train_images"])
        assert not np.array_equal(da["train_images"], dc["train_images"])
    g = run(os.path.join(tmp, "g"), "--gray", "--label-dtype", "int64", "--train", "4")
    with np.load(g) as d:
        assert d["train_images"].shape == (4, 28, 28) and d["train_labels"].dtype == np.int64
print("ok")
