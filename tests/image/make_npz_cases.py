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
import warnings
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



def npy_bytes(arr):
    buf = io.BytesIO()
    np.lib.format.write_array(buf, arr)
    return buf.getvalue()


def npy_header(descr, shape, version=(1, 0), after_dict=""):
    """A .npy header written by hand (numpy writes only valid ones)."""
    text = "{'descr': '%s', 'fortran_order': False, 'shape': %s, }%s" % (descr, shape, after_dict)
    text += " " * (63 - (10 + len(text)) % 64) + "\n"
    return b"\x93NUMPY" + bytes(version) + struct.pack("<H", len(text)) + text.encode()


crafted = make_arrays(8, COUNTS, seed=11)
# As np.load reads them: of two members of one name the last (zipfile's way of updating an
# archive), members without the .npy suffix, bytes after the array data, '\r' in the header.
warnings.simplefilter("ignore", UserWarning)  # zipfile: "Duplicate name"
with zipfile.ZipFile(os.path.join(out, "duplicates.npz"), "w", zipfile.ZIP_DEFLATED) as z:
    z.writestr("train_labels.npy", npy_bytes(np.zeros((7, 1), np.uint8) + 5))
    z.writestr("train_images.npy", npy_bytes(np.zeros_like(crafted["train_images"])))
    z.writestr("train_images.npy", npy_bytes(crafted["train_images"]))
    z.writestr("train_labels.npy", npy_bytes(crafted["train_labels"]))
    for key in ("val_images", "val_labels", "test_images", "test_labels"):
        z.writestr(key + ".npy", npy_bytes(crafted[key]))
with zipfile.ZipFile(os.path.join(out, "no_suffix.npz"), "w", zipfile.ZIP_DEFLATED) as z:
    for key, arr in crafted.items():
        z.writestr(key, npy_bytes(arr))
with zipfile.ZipFile(os.path.join(out, "trailing.npz"), "w", zipfile.ZIP_STORED) as z:
    for key, arr in crafted.items():
        z.writestr(key + ".npy", npy_bytes(arr) + b"0123456789abcdef")
with zipfile.ZipFile(os.path.join(out, "cr_header.npz"), "w", zipfile.ZIP_DEFLATED) as z:
    for key, arr in crafted.items():
        raw = npy_bytes(arr)
        z.writestr(key + ".npy", raw[:20] + raw[20:].replace(b" ", b"\r", 3))
good += ["duplicates", "no_suffix", "trailing", "cr_header"]
with np.load(os.path.join(out, "duplicates.npz")) as d:
    assert (d["train_labels"] == crafted["train_labels"]).all() and d["train_images"].any()

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


def crafted_file(name, kind, members, sizes=None, method=zipfile.ZIP_DEFLATED):
    """Train members given as bytes (val and test as `crafted`); `sizes` overrides the sizes
    the zip entries declare."""
    members = dict({k + ".npy": npy_bytes(v) for k, v in crafted.items() if not k.startswith("train")}, **members)
    with zipfile.ZipFile(os.path.join(out, name), "w", method) as z:
        for key, data in members.items():
            z.writestr(key, data)
        for info in z.filelist:
            if sizes and info.filename in sizes:
                info.file_size = sizes[info.filename]
    bad.append(f"{name} {kind}")


images, labels = crafted["train_images"], crafted["train_labels"]
per_image = images[0].nbytes
# Header and zip entry both say 1000 images, the data holds 7 (with a valid CRC): found
# before the first sample, as numpy refuses the file ("EOF: reading array data").
head = npy_header("|u1", (1000,) + images.shape[1:])
crafted_file("entry_too_long.npz", "format early", {
    "train_images.npy": head + images.tobytes(), "train_labels.npy": npy_bytes(np.zeros((1000, 1), np.uint8))},
    {"train_images.npy": len(head) + 1000 * per_image})
# Header and zip entry say 4 images, the deflated data holds 7.
head = npy_header("|u1", (4,) + images.shape[1:])
crafted_file("entry_too_short.npz", "format early", {
    "train_images.npy": head + images.tobytes(), "train_labels.npy": npy_bytes(labels[:4])},
    {"train_images.npy": len(head) + 4 * per_image})
# Labels that claim 7 x 2^40 bytes (header and zip entry agree): refused on their data, not
# by allocating that much.
head = npy_header("|u1", (7, 1 << 40))
crafted_file("labels_claim_terabytes.npz", "format early", {
    "train_images.npy": npy_bytes(images), "train_labels.npy": head + bytes(64)},
    {"train_labels.npy": len(head) + (7 << 40)})
# A shape whose byte count wraps past 2^64 to a small number.
crafted_file("shape_wraps.npz", "format early", {
    "train_images.npy": npy_header("|u1", (122546928635932, 224, 224, 3)) + bytes(20480),
    "train_labels.npy": npy_bytes(labels)})
# Headers numpy refuses: text after the dict, a shape without commas, "(7)" (an int, not a
# tuple), format version 1.5.
for name, header in (("text_after_dict.npz", npy_header("|u1", images.shape, after_dict="garbage")),
                     ("shape_no_commas.npz", npy_header("|u1", "(7 8 8 3)")),
                     ("shape_not_tuple.npz", npy_header("<i8", "(7)"))):
    body = images.tobytes() if "shape_not" not in name else labels.astype("<i8").tobytes()
    members = {"train_images.npy": npy_bytes(images), "train_labels.npy": npy_bytes(labels.astype("<i8").ravel())}
    members["train_labels.npy" if "shape_not" in name else "train_images.npy"] = header + body
    crafted_file(name, "format early", members)
crafted_file("version_1_5.npz", "format early", {
    "train_images.npy": npy_header("|u1", images.shape, version=(1, 5)) + images.tobytes(),
    "train_labels.npy": npy_bytes(labels)})
for name in ("text_after_dict.npz", "shape_no_commas.npz", "shape_not_tuple.npz", "version_1_5.npz"):
    try:
        np.load(os.path.join(out, name))["train_images" if "shape_not" not in name else "train_labels"]
        raise AssertionError(name + ": numpy reads it")
    except ValueError:
        pass
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
