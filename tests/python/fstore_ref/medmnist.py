"""Writes MedMNIST-format .npz files (BloodMNIST layout) with random pixels, for tests and demos.

Same member names, dtypes and shapes as the real files: `{split}_images.npy` (N, S, S, 3)
uint8 and `{split}_labels.npy` (N, 1) uint8 with labels in 0..7, named like MedMNIST's
files (`bloodmnist.npz` for size 28, `bloodmnist_{S}.npz` otherwise), so fstore reads it
with `--data-root DIR`.

    /usr/bin/python3 tests/python/fstore_ref/medmnist.py --out DIR --size 28 \\
        --train 100 --val 20 --test 30 --seed 0 [--mode savez_compressed]

Modes: `savez` (numpy, stored members with zip64 extras), `savez_compressed` (numpy,
deflated + zip64, like the published files), `zip-stored` / `zip-deflated` (plain
zipfile members without zip64 extras).
"""
import argparse
import os
import zipfile

import numpy as np

MODES = ("savez", "savez_compressed", "zip-stored", "zip-deflated")
N_CLASSES = {"bloodmnist": 8}


def file_name(name, size):
    return f"{name}.npz" if size == 28 else f"{name}_{size}.npz"


def write_npz(path, arrays, mode="savez_compressed"):
    """Writes {member_stem: array} as an .npz in one of MODES."""
    if mode == "savez":
        with open(path, "wb") as f:
            np.savez(f, **arrays)
    elif mode == "savez_compressed":
        with open(path, "wb") as f:
            np.savez_compressed(f, **arrays)
    elif mode in ("zip-stored", "zip-deflated"):
        method = zipfile.ZIP_STORED if mode == "zip-stored" else zipfile.ZIP_DEFLATED
        with zipfile.ZipFile(path, "w", compression=method) as z:
            for key, arr in arrays.items():
                with z.open(key + ".npy", "w") as member:
                    np.lib.format.write_array(member, np.asanyarray(arr), allow_pickle=False)
    else:
        raise ValueError(f"unknown mode {mode!r}; use one of {MODES}")
    return path


def make_arrays(size, counts, seed=0, n_classes=8, gray=False, label_dtype=np.uint8):
    """{'train_images': ..., 'train_labels': ..., ...} with random cells (a deterministic
    function of seed)."""
    rng = np.random.default_rng(seed)
    arrays = {}
    for split, n in counts.items():
        shape = (n, size, size) if gray else (n, size, size, 3)
        arrays[f"{split}_images"] = rng.integers(0, 256, size=shape, dtype=np.uint8)
        arrays[f"{split}_labels"] = rng.integers(0, n_classes, size=(n, 1)).astype(label_dtype)
    return arrays


def make_dataset(out_dir, size=28, counts=None, seed=0, mode="savez_compressed", name="bloodmnist",
                 gray=False, label_dtype=np.uint8):
    """Writes {out_dir}/{file_name(name, size)}; returns (path, arrays)."""
    counts = counts if counts is not None else {"train": 100, "val": 20, "test": 30}
    os.makedirs(out_dir, exist_ok=True)
    arrays = make_arrays(size, counts, seed, N_CLASSES.get(name, 8), gray, label_dtype)
    path = os.path.join(out_dir, file_name(name, size))
    write_npz(path, arrays, mode)
    return path, arrays


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", required=True, help="directory to write into")
    ap.add_argument("--name", default="bloodmnist")
    ap.add_argument("--size", type=int, default=28)
    ap.add_argument("--train", type=int, default=100)
    ap.add_argument("--val", type=int, default=20)
    ap.add_argument("--test", type=int, default=30)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--mode", default="savez_compressed", choices=MODES)
    ap.add_argument("--gray", action="store_true", help="(N, S, S) images instead of RGB")
    ap.add_argument("--label-dtype", default="uint8", help="numpy dtype of the labels (uint8, int64, ...)")
    args = ap.parse_args()
    counts = {"train": args.train, "val": args.val, "test": args.test}
    path, _ = make_dataset(args.out, args.size, counts, args.seed, args.mode, args.name, args.gray,
                           np.dtype(args.label_dtype))
    print(path)


if __name__ == "__main__":
    main()
