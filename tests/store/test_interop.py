"""Interop between fstore's stores and h5py / HDF5 tools.

usage: test_interop.py <fstore_store_tool> <plugin_dir>

(a) a store written by fstore reads back in h5py with identical values, dtypes, chunks,
    compression and attributes;
(b) a store written by h5py (reference schema; lzf chunks that compress and random chunks
    that HDF5 stores raw) reads back identically through fstore's filter;
(c) h5dump prints both stores' data with HDF5_PLUGIN_PATH at fstore's plugin, and no data
    without it.
"""
import hashlib
import json
import os
import re
import subprocess
import sys
import tempfile

import h5py
import numpy as np

TOOL, PLUGIN_DIR = sys.argv[1], sys.argv[2]
D, T = 8, 5


def run_tool(*args):
    subprocess.run([TOOL, *args], check=True)


def raw(path, dtype):
    return np.fromfile(path, dtype=dtype)


def same_bits(a, b):
    a, b = np.asarray(a), np.asarray(b)
    assert a.shape == b.shape, (a.shape, b.shape)
    assert a.tobytes() == b.tobytes(), "values differ"


def chunk_masks(dset):
    return {dset.id.get_chunk_info(i).filter_mask for i in range(dset.id.get_num_chunks())}


def h5py_chunks_for(shape, dtype):
    """The chunk shape h5py itself picks for create_dataset(data=..., compression='lzf')."""
    with h5py.File("mem.h5", "w", driver="core", backing_store=False) as f:
        return f.create_dataset("x", shape=shape, dtype=dtype, compression="lzf").chunks


def texts_hash(texts):
    h = hashlib.sha256()
    for t in texts:
        h.update(t.encode("utf-8") + b"\0")
    return h.hexdigest()


def check_fstore_store_in_h5py(work):
    store, rawdir = os.path.join(work, "fstore.h5"), os.path.join(work, "raw")
    run_tool("write", store, rawdir)
    cls = raw(f"{rawdir}/image_features.bin", "<f2").reshape(-1, D)
    tokens = raw(f"{rawdir}/image_token_features.bin", "<f2").reshape(-1, T, D)
    labels = raw(f"{rawdir}/labels.bin", "<i8")
    splits = json.load(open(f"{rawdir}/splits.json"))
    n = len(labels)
    with h5py.File(store, "r") as f:
        expected = {
            "image_features": (np.float16, (n, D), (64, D), (None, D)),
            "image_token_features": (np.float16, (n, T, D), (4, T, D), (None, T, D)),
            "ids": (np.int64, (n,), (4096,), (None,)),
            "labels": (np.int64, (n,), (4096,), (None,)),
        }
        for name, (dtype, shape, chunks, maxshape) in expected.items():
            d = f[name]
            assert d.dtype == dtype and d.dtype.byteorder in "<=", (name, d.dtype)
            assert d.shape == shape and d.chunks == chunks and d.maxshape == maxshape, (name, d.shape, d.chunks)
            assert d.compression == "lzf", (name, d.compression)
        s = f["split"]
        assert h5py.check_string_dtype(s.dtype).encoding == "utf-8"
        assert s.chunks == (4096,) and s.compression == "lzf" and s.maxshape == (None,)
        same_bits(f["image_features"][()], cls)
        same_bits(f["image_token_features"][()], tokens)
        assert (f["ids"][()] == np.arange(n)).all()
        assert (f["labels"][()] == labels).all()
        assert list(s.asstr()[()]) == splits
        # Random token chunks do not shrink and are stored raw (mask 1); constant ones compress.
        assert chunk_masks(f["image_token_features"]) == {0, 1}, chunk_masks(f["image_token_features"])

        a = f.attrs
        assert a["D"] == D and isinstance(a["D"], np.int64) and a["T_img"] == T and isinstance(a["T_img"], np.int64)
        assert a["version"] == "1.0"
        assert re.fullmatch(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d", a["created_at"]), a["created_at"]
        assert a["split_counts"] == '{"train": 50, "val": 10, "test": 10}', a["split_counts"]
        assert json.loads(a["dataset"]) == "bloodmnist" and a["dataset"] == json.dumps("bloodmnist")
        assert a["label_texts"] == json.dumps(["basophil", "eosinophil"])
        assert isinstance(a["logit_scale"], np.float64) and a["logit_scale"] == 4.605170249938965

        for tid, has_tokens in (("concept_prompts_t01", True), ("label_prompts_t03", False)):
            g = f["templates"][tid]
            texts = json.load(open(f"{rawdir}/{tid}.texts.json"))
            feats = raw(f"{rawdir}/{tid}.features.bin", "<f4").reshape(len(texts), D)
            tf = g["text_features"]
            assert tf.dtype == np.float32 and tf.compression == "lzf"
            assert tf.chunks == h5py_chunks_for(tf.shape, np.float32), (tf.chunks,)
            same_bits(tf[()], feats)
            assert list(g["texts"].asstr()[()]) == texts
            assert h5py.check_string_dtype(g["texts"].dtype).encoding == "utf-8"
            assert g["texts"].compression == "lzf"
            assert g["texts"].chunks == h5py_chunks_for(g["texts"].shape, h5py.string_dtype())
            assert g.attrs["K"] == len(texts) and g.attrs["D"] == D
            assert g.attrs["texts_hash"] == texts_hash(texts)
            assert re.fullmatch(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d", g.attrs["created_at"])
            if has_tokens:
                tt = g["text_token_features"]
                assert tt.dtype == np.float32 and tt.compression == "lzf" and tt.shape == (len(texts), 4, D)
                assert tt.chunks == h5py_chunks_for(tt.shape, np.float32)
                same_bits(tt[()], raw(f"{rawdir}/{tid}.tokens.bin", "<f4").reshape(len(texts), 4, D))
                assert g.attrs["T_txt"] == 4
            else:
                assert "text_token_features" not in g and g.attrs["T_txt"] == -1
    return store, cls, tokens


def write_reference_store(path, rng):
    """A store the way the Python reference writes it (h5py, lzf, resize + assign)."""
    n = 37
    cls = (np.arange(n * D).reshape(n, D) % 6).astype(np.float16)  # compressible
    tokens = np.zeros((n, T, D), np.float16)
    tokens[8:20] = rng.standard_normal((12, T, D)).astype(np.float16)  # incompressible chunks
    labels = rng.integers(0, 8, n).astype(np.int64)
    splits = ["train"] * 20 + ["val"] * 10 + ["test"] * 7
    with h5py.File(path, "w") as f:
        f.create_dataset("image_features", shape=(0, D), maxshape=(None, D), dtype="float16", chunks=(64, D), compression="lzf")
        f.create_dataset("image_token_features", shape=(0, T, D), maxshape=(None, T, D), dtype="float16", chunks=(4, T, D), compression="lzf")
        for name in ("ids", "labels"):
            f.create_dataset(name, shape=(0,), maxshape=(None,), dtype="int64", chunks=(4096,), compression="lzf")
        f.create_dataset("split", shape=(0,), maxshape=(None,), dtype=h5py.string_dtype("utf-8"), chunks=(4096,), compression="lzf")
        f.create_group("templates")
        f.attrs["D"], f.attrs["T_img"], f.attrs["version"] = D, T, "1.0"
        for lo, hi in ((0, 13), (13, n)):
            for name in ("image_features", "image_token_features", "ids", "labels", "split"):
                f[name].resize(hi, axis=0)
            f["image_features"][lo:hi] = cls[lo:hi]
            f["image_token_features"][lo:hi] = tokens[lo:hi]
            f["ids"][lo:hi] = np.arange(lo, hi)
            f["labels"][lo:hi] = labels[lo:hi]
            f["split"][lo:hi] = splits[lo:hi]
        f.attrs["split_counts"] = json.dumps({"train": 20, "val": 10, "test": 7})
        g = f["templates"].create_group("concept_prompts_t02")
        texts = ["a photo of a cell with Round nucleus", "a photo of a cell with \u00e9"]
        tf = rng.standard_normal((2, D)).astype(np.float32)
        g.create_dataset("text_features", data=tf, compression="lzf")
        g.create_dataset("texts", data=texts, dtype=h5py.string_dtype("utf-8"), compression="lzf")
        g.attrs["K"], g.attrs["D"], g.attrs["T_txt"] = 2, D, -1
        g.attrs["texts_hash"] = texts_hash(texts)
        assert chunk_masks(f["image_token_features"]) == {0, 1}
    return cls, tokens, labels, splits, texts, tf


def check_h5py_store_in_fstore(work, rng):
    store, out = os.path.join(work, "h5py.h5"), os.path.join(work, "dump")
    cls, tokens, labels, splits, texts, tf = write_reference_store(store, rng)
    before = open(store, "rb").read()
    run_tool("dump", store, out)
    assert open(store, "rb").read() == before, "a read-only open modified the file"
    n = len(labels)
    same_bits(raw(f"{out}/image_features.bin", "<f2").reshape(n, D), cls)
    same_bits(raw(f"{out}/image_token_features.bin", "<f2").reshape(n, T, D), tokens)
    assert (raw(f"{out}/ids.bin", "<i8") == np.arange(n)).all()
    assert (raw(f"{out}/labels.bin", "<i8") == labels).all()
    assert json.load(open(f"{out}/splits.json")) == splits
    picks = json.load(open(f"{out}/picks.json"))
    same_bits(raw(f"{out}/picks_tokens.bin", "<f2").reshape(len(picks), T, D), tokens[picks])
    meta = json.load(open(f"{out}/meta.json"))
    assert meta["rows"] == n and meta["D"] == D and meta["T_img"] == T
    assert meta["split_counts"] == {"train": 20, "val": 10, "test": 7}
    assert meta["templates"] == ["concept_prompts_t02"]
    info = meta["template_info"]["concept_prompts_t02"]
    assert info == {"K": 2, "D": D, "T_txt": -1, "texts_hash": texts_hash(texts)}, info
    same_bits(raw(f"{out}/concept_prompts_t02.features.bin", "<f4").reshape(2, D), tf)
    assert json.load(open(f"{out}/concept_prompts_t02.texts.json")) == texts
    assert meta["attrs"]["version"] == "1.0" and meta["attrs"]["D"] == D
    return store, cls, tokens


def h5dump_values(path, dataset, plugin_dir):
    env = dict(os.environ, HDF5_PLUGIN_PATH=plugin_dir)
    r = subprocess.run(["h5dump", "-d", dataset, path], env=env, capture_output=True, text=True)
    body = r.stdout.split("DATA {", 1)[1].rsplit("}", 2)[0] if "DATA {" in r.stdout else ""
    numbers = re.sub(r"\(\d+(,\d+)*\):", " ", body)
    return [float(x) for x in re.findall(r"-?\d+(?:\.\d+)?(?:e[-+]?\d+)?", numbers)]


def check_h5dump(stores, work):
    empty = os.path.join(work, "no-plugins")
    os.makedirs(empty, exist_ok=True)
    for path, cls, tokens in stores:
        for name, expected in (("/image_features", cls), ("/image_token_features", tokens)):
            values = h5dump_values(path, name, PLUGIN_DIR)
            assert len(values) == expected.size, (path, name, len(values), expected.size)
            # h5dump prints halves with limited digits: compare within half precision.
            assert np.allclose(values, expected.astype(np.float64).ravel(), rtol=2e-3, atol=1e-3), (path, name)
        # Without the plugin, the compressed chunks cannot be read: no data is printed.
        assert h5dump_values(path, "/image_features", empty) == [], path


def main():
    rng = np.random.default_rng(5)
    with tempfile.TemporaryDirectory(prefix="fstore_interop_") as work:
        a = check_fstore_store_in_h5py(work)
        b = check_h5py_store_in_fstore(work, rng)
        check_h5dump([a, b], work)
    print("interop: ok")


if __name__ == "__main__":
    main()
