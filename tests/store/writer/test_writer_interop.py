"""The chunk writer's stores against h5py's, chunk by chunk.

usage: test_writer_interop.py <fstore_writer_tool>

For each case the same rows are appended in the same batch sizes (a) by fstore
(FeatureStore::append_batch -> parallel lzf + H5Dwrite_chunk) and (b) by h5py the reference's
way (resize + slice assignment, HDF5's own lzf filter). Then:
  - h5py reads identical values from both;
  - with incompressible detection off, every chunk has the same filter mask and the same
    stored bytes (read_direct_chunk) as HDF5 produced: compressed chunks (mask 0) for
    zeros / repeated data, raw chunks (mask 1) for random data, padded partial chunks;
  - with detection on, random data gives the same masks/bytes (HDF5 stores it raw too) and
    the writer reports skipped attempts.
Cases cross chunk boundaries (batches 3, 5, 64, 67; 4-row token chunks, 64-row CLS chunks)
and resume mid-chunk (reopen after 6 rows).
"""
import json
import os
import subprocess
import sys
import tempfile

import h5py
import numpy as np

TOOL = sys.argv[1]


def make_rows(kind, n, t, d, seed):
    rng = np.random.default_rng(seed)
    if kind == "zeros":
        tokens = np.zeros((n, t, d), np.float16)
        cls = np.zeros((n, d), np.float16)
    elif kind == "repeated":  # compressible, non-trivial: small integers, repeated per row
        base = (np.arange(t * d) % 7).astype(np.float16).reshape(t, d)
        tokens = np.stack([base + np.float16(i % 3) for i in range(n)])
        cls = np.tile((np.arange(d) % 5).astype(np.float16), (n, 1))
    elif kind == "random":  # uniform random bits: never shrinks
        tokens = rng.integers(0, 2**16, (n, t, d), dtype=np.uint16).view(np.float16)
        cls = rng.integers(0, 2**16, (n, d), dtype=np.uint16).view(np.float16)
    elif kind == "normal":  # like model outputs
        tokens = rng.standard_normal((n, t, d)).astype(np.float16)
        cls = rng.standard_normal((n, d)).astype(np.float16)
    elif kind == "mixed":  # zeros rows, random-bit rows, zeros rows
        tokens = np.zeros((n, t, d), np.float16)
        cls = np.zeros((n, d), np.float16)
        a, b = n // 3, 2 * n // 3
        tokens[a:b] = rng.integers(0, 2**16, (b - a, t, d), dtype=np.uint16).view(np.float16)
        cls[a:b] = rng.integers(0, 2**16, (b - a, d), dtype=np.uint16).view(np.float16)
    else:
        raise ValueError(kind)
    # Rows crossing the writer's chunk boundaries must differ from each other.
    tokens[:, 0, 0] = np.arange(n, dtype=np.float16) if kind != "random" else tokens[:, 0, 0]
    return tokens, cls


def write_h5py(path, tokens, cls, batches):
    n_total, t, d = tokens.shape
    with h5py.File(path, "w") as f:
        tok = f.create_dataset("image_token_features", shape=(0, t, d), maxshape=(None, t, d),
                               dtype="float16", chunks=(4, t, d), compression="lzf")
        img = f.create_dataset("image_features", shape=(0, d), maxshape=(None, d),
                               dtype="float16", chunks=(64, d), compression="lzf")
        n = 0
        for b in batches:
            tok.resize(n + b, axis=0)
            img.resize(n + b, axis=0)
            tok[n:n + b] = tokens[n:n + b]
            img[n:n + b] = cls[n:n + b]
            n += b
            f.flush()


def chunks_of(dset):
    out = []
    for i in range(dset.id.get_num_chunks()):
        info = dset.id.get_chunk_info(i)
        mask, data = dset.id.read_direct_chunk(info.chunk_offset)
        out.append((info.chunk_offset, mask, data))
    return sorted(out)


def run_case(work, name, kind, t, d, batches, detect=True, reopen_after=None, exact=True):
    n = sum(batches)
    tokens, cls = make_rows(kind, n, t, d, seed=len(name))
    tok_bin, cls_bin = os.path.join(work, name + ".tok"), os.path.join(work, name + ".cls")
    tokens.tofile(tok_bin)
    cls.tofile(cls_bin)
    ours, theirs = os.path.join(work, name + "-fstore.h5"), os.path.join(work, name + "-h5py.h5")
    args = [TOOL, ours, str(t), str(d), tok_bin, cls_bin]
    if not detect:
        args.append("--no-detect")
    if reopen_after is not None:
        args += ["--reopen-after", str(reopen_after)]
    stats = json.loads(subprocess.run(args + [str(b) for b in batches], check=True,
                                      capture_output=True, text=True).stdout)
    write_h5py(theirs, tokens, cls, batches)
    with h5py.File(ours, "r") as a, h5py.File(theirs, "r") as b:
        assert a["image_token_features"].shape == (n, t, d)
        assert a["image_token_features"].chunks == (4, t, d)
        assert a["image_token_features"].compression == "lzf"
        for key, ref in (("image_token_features", tokens), ("image_features", cls)):
            got = a[key][()]
            assert got.dtype == np.float16
            assert got.tobytes() == ref.tobytes(), f"{name}: {key} values differ from the input"
            assert got.tobytes() == b[key][()].tobytes(), f"{name}: {key} differs from h5py's"
            ca, cb = chunks_of(a[key]), chunks_of(b[key])
            assert [c[0] for c in ca] == [c[0] for c in cb], f"{name}: {key} chunk sets differ"
            masks = sorted({c[1] for c in ca})
            if exact:
                for (off, ma, da), (_, mb, db) in zip(ca, cb):
                    assert ma == mb, f"{name}: {key} chunk {off}: mask {ma}, HDF5 wrote {mb}"
                    assert da == db, f"{name}: {key} chunk {off}: stored bytes differ from HDF5's"
            print(f"  {name:18s} {key:21s} chunks={len(ca):3d} masks={masks}")
        assert np.array_equal(a["ids"][()], np.arange(n))
    return stats


def main():
    with tempfile.TemporaryDirectory() as work:
        t, d = 9, 40  # small rows: a token chunk is 4 rows, a CLS chunk 64
        # Compressible, aligned and unaligned batches, resume mid-chunk.
        s = run_case(work, "zeros-odd", "zeros", t, d, [3, 5, 64, 67, 1], detect=False)
        assert s["compressed_chunks"] > 0 and s["raw_chunks"] == 0, s
        assert s["merged_chunks"] > 0, s  # 3, 5, 67 leave partial chunks
        s = run_case(work, "repeated-resume", "repeated", t, d, [6, 3, 5, 64, 67],
                     detect=False, reopen_after=1)
        assert s["merged_chunks"] > 0 and s["bytes_out"] < s["bytes_in"], s
        # Incompressible: HDF5 stores raw with mask 1; we must too, with or without detection.
        # (Zero-padded partial chunks do compress, in HDF5 as here: mask 0.)
        s = run_case(work, "random-nodetect", "random", t, d, [3, 5, 64, 67], detect=False)
        assert s["raw_chunks"] > 30 and s["skipped_attempts"] == 0, s
        s = run_case(work, "random-detect", "random", t, d, [64, 67, 3, 5, 64], detect=True,
                     reopen_after=2)
        assert s["raw_chunks"] > 30 and s["skipped_attempts"] > 20, s
        # Model-like normal halves: exact against HDF5 when every chunk is tried.
        run_case(work, "normal-nodetect", "normal", t, d, [64, 3, 64, 5], detect=False)
        # Mixed with detection: values identical, compressible chunks again compressed after
        # the re-check (masks may differ from HDF5's for the chunks in between).
        s = run_case(work, "mixed-detect", "mixed", t, d, [64] * 12, detect=True, exact=False)
        assert s["compressed_chunks"] > 0 and s["skipped_attempts"] > 0, s
        # The real ConceptCLIP row shape (729x1152), aligned + partial last chunk.
        run_case(work, "real-shape", "normal", 729, 1152, [4, 6, 3], detect=False)
        s = run_case(work, "real-shape-zeros", "zeros", 729, 1152, [5, 3], detect=True)
        assert s["compressed_chunks"] == s["chunks"], s
    print("writer interop: OK")


if __name__ == "__main__":
    main()
