"""Writes the .npz files test_npz reads, and what numpy reads from them.

usage: make_npz_cases.py OUT_DIR
Good files <stem>.npz come with <stem>.<split>.images / .labels: numpy's view of the
split as raw uint8 pixels and int64 labels (first label column). Bad files are listed
in bad.txt as "<file> <expected error kind>". corrupt.txt gives, per file, one byte
offset inside the train images' compressed data.
"""
import io
import os
import struct
import sys
import zipfile

import numpy as np

from fstore_ref.medmnist import make_arrays, write_npz

out = sys.argv[1]
os.makedirs(out, exist_ok=True)


def dump(stem, arrays):
    with np.load(os.path.join(out, stem + ".npz")) as d:
        for key in d.files:
            if not key.endswith("_images"):
                continue
            split = key[: -len("_images")]
            d[key].astype(np.uint8).tofile(os.path.join(out, f"{stem}.{split}.images"))
            labels = d[split + "_labels"]
            (labels[:, 0] if labels.ndim == 2 else labels).astype(np.int64).tofile(os.path.join(out, f"{stem}.{split}.labels"))


COUNTS = {"train": 7, "val": 3, "test": 5}
good = []
for i, mode in enumerate(("savez", "savez_compressed", "zip-stored", "zip-deflated")):
    stem = "mode_" + mode
    write_npz(os.path.join(out, stem + ".npz"), make_arrays(28, COUNTS, seed=i), mode)
    good.append(stem)

# Gray (N, H, W) images, int64 (N, 1) labels.
write_npz(os.path.join(out, "gray.npz"), make_arrays(16, COUNTS, seed=7, gray=True, label_dtype=np.int64))
good.append("gray")
# Non-square images, big-endian int32 (N,) labels with negative values, .npy version 2.
rng = np.random.default_rng(9)
with zipfile.ZipFile(os.path.join(out, "odd.npz"), "w", zipfile.ZIP_DEFLATED) as z:
    for split, n in COUNTS.items():
        imgs = rng.integers(0, 256, size=(n, 12, 20, 3), dtype=np.uint8)
        labels = rng.integers(-3, 1000, size=(n,)).astype(">i4")
        for key, arr in ((split + "_images", imgs), (split + "_labels", labels)):
            with z.open(key + ".npy", "w") as m:
                np.lib.format.write_array(m, arr, version=(2, 0))
good.append("odd")
# An empty val split.
write_npz(os.path.join(out, "empty_val.npz"), make_arrays(8, {"train": 4, "val": 0, "test": 2}, seed=3))
good.append("empty_val")

for stem in good:
    dump(stem, None)
with open(os.path.join(out, "good.txt"), "w") as f:
    f.write("\n".join(good) + "\n")

# Fingerprints: mode_savez's arrays repacked deflated in reverse member order (same
# content), and the same with one pixel changed.
same = make_arrays(28, COUNTS, seed=0)
for name, arrays in (("reordered.npz", same), ("one_pixel.npz", dict(same, val_images=same["val_images"].copy()))):
    if name == "one_pixel.npz":
        arrays["val_images"][1, 2, 3, 0] ^= 1
    with zipfile.ZipFile(os.path.join(out, name), "w", zipfile.ZIP_DEFLATED) as z:
        for key in reversed(list(arrays)):
            with z.open(key + ".npy", "w") as m:
                np.lib.format.write_array(m, arrays[key])

# Streaming: ~210 MB of train pixels that deflate to almost nothing; image i starts with i % 251.
big = np.zeros((1400, 224, 224, 3), dtype=np.uint8)
big[:, 0, 0, 0] = np.arange(1400) % 251
write_npz(os.path.join(out, "big.npz"), {"train_images": big, "train_labels": (np.arange(1400) % 8).astype(np.uint8).reshape(-1, 1)},
          "savez_compressed")
del big

# Bad files.
bad = []


def bad_file(name, kind, arrays, mode="savez_compressed"):
    write_npz(os.path.join(out, name), arrays, mode)
    bad.append(f"{name} {kind}")


base = make_arrays(8, COUNTS, seed=5)
a = dict(base); a["train_images"] = a["train_images"].astype(np.float32)
bad_file("wrong_dtype.npz", "format", a)
a = dict(base); a["train_images"] = np.asfortranarray(a["train_images"])
bad_file("fortran.npz", "format", a)
a = dict(base); a["val_labels"] = a["val_labels"][:-1]
bad_file("length_mismatch.npz", "data", a)
a = {k: v for k, v in base.items() if not k.startswith("val_")}
bad_file("missing_val.npz", "data", a)
a = dict(base); a["test_labels"] = a["test_labels"].astype(np.float64)
bad_file("float_labels.npz", "format", a)
a = dict(base); a["train_images"] = a["train_images"][..., :2]
bad_file("two_channels.npz", "format", a)


def raw_member_file(name, kind, replace):
    """Like `base`, with some members' bytes replaced."""
    with zipfile.ZipFile(os.path.join(out, name), "w", zipfile.ZIP_DEFLATED) as z:
        for key, arr in base.items():
            buf = io.BytesIO()
            np.lib.format.write_array(buf, arr)
            z.writestr(key + ".npy", replace.get(key, lambda b: b)(buf.getvalue()))
    bad.append(f"{name} {kind}")


raw_member_file("bad_magic.npz", "format", {"val_images": lambda b: b"\x93NUMPX" + b[6:]})
raw_member_file("bad_version.npz", "format", {"val_images": lambda b: b[:6] + b"\x07" + b[7:]})
# Header promises 7 images, the member holds 6 and a half.
raw_member_file("short_member.npz", "format", {"train_images": lambda b: b[: len(b) - 100]})
with open(os.path.join(out, "not_a_zip.npz"), "wb") as f:
    f.write(b"this is not a zip archive\n" * 100)
bad.append("not_a_zip.npz format")
with open(os.path.join(out, "bad.txt"), "w") as f:
    f.write("\n".join(bad) + "\n")

# Where to flip bytes inside train_images' data (after the .npy header).
with open(os.path.join(out, "corrupt.txt"), "w") as f:
    for stem in ("mode_savez", "mode_savez_compressed"):
        path = os.path.join(out, stem + ".npz")
        with zipfile.ZipFile(path) as z:
            info = z.getinfo("train_images.npy")
        with open(path, "rb") as fh:
            fh.seek(info.header_offset)
            hdr = fh.read(30)
        name_len, extra_len = struct.unpack("<HH", hdr[26:30])
        data = info.header_offset + 30 + name_len + extra_len
        f.write(f"{stem} {data + info.compress_size // 2}\n")
