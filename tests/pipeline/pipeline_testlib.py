"""Shared helpers of the `fstore build` tests: paths, data generation, running the tools,
and a row-by-row store comparison. Run by Debian's /usr/bin/python3 (h5py, numpy)."""
import json
import os
import subprocess
import sys

import h5py
import numpy as np

SOURCE_DIR = os.environ.get("FSTORE_SOURCE_DIR", os.path.abspath(os.path.join(os.path.dirname(__file__), "..", "..")))
BINARY_DIR = os.environ.get("FSTORE_BINARY_DIR", os.path.join(SOURCE_DIR, "build"))
FSTORE = os.path.join(BINARY_DIR, "apps", "fstore")
FSTORE_ACCESS = os.path.join(BINARY_DIR, "apps", "fstore-access")
TINY = os.path.join(SOURCE_DIR, "models", "tiny.pt")
TINY_SPM = os.path.join(SOURCE_DIR, "models", "tiny-spm.pt")
REFERENCE = os.path.join(SOURCE_DIR, "tests", "python", "reference_pipeline.py")

sys.path.insert(0, os.path.join(SOURCE_DIR, "tests", "python"))
from fstore_ref import medmnist  # noqa: E402

COLUMNS = ("image_features", "image_token_features", "ids", "labels", "split")


def make_data(root, size=28, train=10, val=4, test=5, seed=0):
    """A BloodMNIST-format .npz under root; returns its arrays."""
    _, arrays = medmnist.make_dataset(root, size=size, counts={"train": train, "val": val, "test": test}, seed=seed)
    return arrays


def build_cmd(h5, data_root, *extra, model=TINY, size=28, batch_size=4):
    return [FSTORE, "build", "--model", model, "--h5", h5, "--data-root", data_root, "--size", str(size),
            "--batch-size", str(batch_size), "--threads", "1", "--no-progress", *extra]


def run(cmd, env=None, check_rc=0, timeout=120):
    full_env = dict(os.environ)
    full_env.update(env or {})
    p = subprocess.run(cmd, capture_output=True, text=True, env=full_env, timeout=timeout)
    if check_rc is not None and p.returncode != check_rc:
        raise AssertionError("%s\nexit %d (expected %d)\nstdout:\n%s\nstderr:\n%s"
                             % (" ".join(cmd), p.returncode, check_rc, p.stdout, p.stderr))
    return p


def verify(h5):
    p = run([FSTORE_ACCESS, "--path", h5, "verify"], check_rc=None)
    assert p.returncode == 0, "fstore-access verify failed on %s:\n%s%s" % (h5, p.stdout, p.stderr)


def read(path):
    """Everything in a store, strings decoded."""
    out = {"templates": {}, "attrs": {}}
    with h5py.File(path, "r") as f:
        for c in COLUMNS:
            out[c] = f[c][()]
        out["split"] = [s.decode() if isinstance(s, bytes) else s for s in out["split"]]
        out["attrs"] = {k: (v.item() if hasattr(v, "item") else v) for k, v in f.attrs.items()}
        for tid, g in f["templates"].items():
            out["templates"][tid] = {
                "texts": [s.decode() if isinstance(s, bytes) else s for s in g["texts"][()]],
                "text_features": g["text_features"][()],
                "text_token_features": g["text_token_features"][()] if "text_token_features" in g else None,
                "attrs": {k: (v.item() if hasattr(v, "item") else v) for k, v in g.attrs.items()},
            }
        out["dtypes"] = {c: f[c].dtype for c in COLUMNS}
        out["chunks"] = {c: f[c].chunks for c in COLUMNS}
    return out


def assert_half_close(a, b, what):
    """fp16 features from the same fp32 computation may differ by rounding only."""
    a = a.astype(np.float32)
    b = b.astype(np.float32)
    assert a.shape == b.shape, "%s: shape %s vs %s" % (what, a.shape, b.shape)
    np.testing.assert_allclose(a, b, rtol=2e-3, atol=2e-3, err_msg=what)


def compare_rows(a, b, what="stores", exact=False):
    """Row by row: ids, labels, split equal; features equal (exact) or within fp16 rounding."""
    n = len(a["ids"])
    assert len(b["ids"]) == n, "%s: %d rows vs %d" % (what, n, len(b["ids"]))
    np.testing.assert_array_equal(a["ids"], np.arange(n), err_msg=what + ": ids are not 0..N-1")
    np.testing.assert_array_equal(a["ids"], b["ids"], err_msg=what + ": ids")
    np.testing.assert_array_equal(a["labels"], b["labels"], err_msg=what + ": labels")
    assert a["split"] == b["split"], "%s: split columns differ" % what
    for c in ("image_features", "image_token_features"):
        assert a[c].dtype == np.float16 and b[c].dtype == np.float16, c
        if exact:
            np.testing.assert_array_equal(a[c].view(np.uint16), b[c].view(np.uint16), err_msg="%s: %s" % (what, c))
        else:
            assert_half_close(a[c], b[c], "%s: %s" % (what, c))


def compare_templates(a, b, what="stores", exact=False):
    assert sorted(a["templates"]) == sorted(b["templates"]), "%s: template ids differ" % what
    for tid in a["templates"]:
        ta, tb = a["templates"][tid], b["templates"][tid]
        assert ta["texts"] == tb["texts"], "%s: %s texts" % (what, tid)
        for key in ("text_features", "text_token_features"):
            assert (ta[key] is None) == (tb[key] is None), "%s: %s %s presence" % (what, tid, key)
            if ta[key] is None:
                continue
            assert ta[key].dtype == np.float32 and tb[key].dtype == np.float32
            assert ta[key].shape == tb[key].shape, "%s: %s %s shape" % (what, tid, key)
            if exact:
                np.testing.assert_array_equal(ta[key], tb[key], err_msg="%s: %s %s" % (what, tid, key))
            else:
                np.testing.assert_allclose(ta[key], tb[key], rtol=1e-4, atol=1e-5, err_msg="%s: %s %s" % (what, tid, key))
        for k in ("K", "D", "T_txt", "texts_hash"):
            assert ta["attrs"][k] == tb["attrs"][k], "%s: %s attribute %s: %r vs %r" % (what, tid, k, ta["attrs"][k], tb["attrs"][k])


REFERENCE_ATTRS = ("D", "T_img", "version", "label_texts", "prompt_temp_for_labels", "concept_texts",
                   "prompt_temp_for_concepts", "logit_scale", "logit_bias", "concept_logit_scale",
                   "concept_logit_bias", "dataset")


def compare_attrs(a, b, what="stores", names=REFERENCE_ATTRS):
    for k in names:
        assert k in a["attrs"], "%s: first store lacks attribute %s" % (what, k)
        assert k in b["attrs"], "%s: second store lacks attribute %s" % (what, k)
        va, vb = a["attrs"][k], b["attrs"][k]
        assert type(va) == type(vb) and va == vb, "%s: attribute %s: %r (%s) vs %r (%s)" % (
            what, k, va, type(va).__name__, vb, type(vb).__name__)
    assert json.loads(a["attrs"]["split_counts"]) == json.loads(b["attrs"]["split_counts"]), what + ": split_counts"


def per_split(store):
    """{split: [row indices in order]}."""
    out = {}
    for i, s in enumerate(store["split"]):
        out.setdefault(s, []).append(i)
    return out
