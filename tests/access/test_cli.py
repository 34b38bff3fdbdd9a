"""fstore-access, end to end: the real binary on (a) a store written by the h5py reference
writer (tests/python/fstore_ref/store.py) and (b) one written by fstore's FeatureStore
(fstore_access_make_store). Every value the CLI prints or writes is compared with h5py's
read of the same file; numpy is the oracle for index semantics.

Run by ctest (fstore_access_cli) with Debian's python3; needs FSTORE_BINARY_DIR and
FSTORE_SOURCE_DIR in the environment.
"""

import contextlib
import errno
import hashlib
import io
import json
import math
import os
import random
import re
import resource
import shutil
import signal
import stat
import struct
import subprocess
import sys
import tempfile
import zipfile
import threading
import unittest

import h5py
import numpy as np

SOURCE_DIR = os.environ["FSTORE_SOURCE_DIR"]
BINARY_DIR = os.environ["FSTORE_BINARY_DIR"]
sys.path.insert(0, os.path.join(SOURCE_DIR, "tests", "python"))
from fstore_ref import store as ref  # noqa: E402

BIN = os.path.join(BINARY_DIR, "apps", "fstore-access")
MAKE_STORE = os.path.join(BINARY_DIR, "tests", "access", "fstore_access_make_store")
ROWS = {"train": 70, "val": 9, "test": 7}  # crosses the 64-row CLS chunk and 4-row token chunks
D, T = 8, 4

EXIT_FINDINGS, EXIT_USAGE, EXIT_NOT_FOUND, EXIT_FORMAT, EXIT_LOCKED = 1, 2, 3, 4, 5
EXIT_DATA, EXIT_IO = 7, 10
HUGE = "99999999999999999999"  # past int64


def run(path, *args, binary=BIN, **kwargs):
    cmd = [binary] + (["--path", path] if path is not None else []) + list(args)
    options = {"capture_output": True, "text": True, "timeout": 60}
    options.update(kwargs)
    return subprocess.run(cmd, **options)


def run_json(test, path, *args):
    p = run(path, *args, "--json")
    test.assertEqual(p.returncode, 0, p.stderr)
    return json.loads(p.stdout)


def sha(path):
    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


def oracle_selection(idx):
    """What numpy's a[...] takes for an --idx argument list."""
    if not idx:
        return slice(None)
    if len(idx) == 1 and ":" in idx[0]:
        return slice(*[int(p) if p else None for p in idx[0].split(":")])
    return np.array([int(i) for i in idx], dtype=np.int64)


def h5_column(stored, feature):
    return {"image": stored["image_features"], "patches": stored["image_token_features"],
            "label": stored["labels"]}[feature]


def write_fstore_store(path):
    subprocess.run([MAKE_STORE, path, "--train", str(ROWS["train"]), "--val", str(ROWS["val"]),
                    "--test", str(ROWS["test"]), "--dim", str(D), "--tokens", str(T)], check=True)


def write_h5py_store(path):
    ref.write_reference_store(path, ROWS, D=D, T=T, concept_templates=2, label_templates=1, text_tokens=6)


class StoreCases:
    """Read-only checks, run on both writers' stores. The store must be unchanged after each."""

    writer = None

    @classmethod
    def setUpClass(cls):
        cls.tmp = tempfile.mkdtemp(prefix="fstore_access_cli_")
        cls.path = os.path.join(cls.tmp, "store.h5")
        cls.writer(cls.path)
        cls.stored = ref.read_store(cls.path)
        cls.n = len(cls.stored["ids"])
        cls.checksum = sha(cls.path)

    @classmethod
    def tearDownClass(cls):
        shutil.rmtree(cls.tmp, ignore_errors=True)

    def tearDown(self):
        self.assertEqual(sha(self.path), self.checksum, "a read-only command changed the store")

    def fail_with(self, code, *args, path=None, needle=None):
        p = run(self.path if path is None else path, *args)
        self.assertEqual(p.returncode, code, f"{args}: stdout={p.stdout!r} stderr={p.stderr!r}")
        lines = p.stderr.strip().splitlines()
        self.assertEqual(len(lines), 1, f"{args}: want one stderr line, got {p.stderr!r}")
        if needle:
            self.assertIn(needle, lines[0])
        return lines[0]

    # ---- summarize / templates ----------------------------------------------------------
    def test_summarize_json(self):
        j = run_json(self, self.path, "summarize")
        with h5py.File(self.path, "r") as f:
            self.assertEqual(j["rows"], f["image_features"].shape[0])
            self.assertEqual(j["image_features_shape"], list(f["image_features"].shape))
            self.assertEqual(j["D"], int(f.attrs["D"]))
            self.assertEqual(j["T_img"], int(f.attrs["T_img"]))
            self.assertEqual(j["split_counts"], json.loads(f.attrs["split_counts"]))
            self.assertEqual(j["first_ids"], f["ids"][:5].tolist())
            self.assertEqual(j["templates"], sorted(f["templates"].keys())[:3])
            self.assertEqual(j["template_count"], len(f["templates"]))
            self.assertEqual(sorted(j["attributes"]), sorted(f.attrs.keys()))
            self.assertEqual(j["attributes"]["concept_texts"], f.attrs["concept_texts"])
        self.assertEqual(run_json(self, self.path, "summarize", "--max-templates", "1")["templates"],
                         sorted(self.stored["templates"])[:1])

    def test_summarize_split_counts_in_store_order(self):
        # Store order (first appearance in /split), not alphabetical (test, train, val).
        self.assertIn("split counts: train=70 val=9 test=7\n", run(self.path, "summarize").stdout)
        self.assertEqual(list(run_json(self, self.path, "summarize")["split_counts"]), ["train", "val", "test"])

    def test_summarize_text_has_tree(self):
        p = run(self.path, "summarize")
        self.assertEqual(p.returncode, 0, p.stderr)
        out = p.stdout
        self.assertIn(f"image_features: ({self.n}, {D}) float16", out)
        self.assertIn("├── ", out)
        self.assertIn("└── ", out)
        self.assertIn("│   ", out)
        self.assertIn(f"image_token_features  ({self.n}, {T}, {D}) float16", out)
        self.assertIn(f"ids  ({self.n},) int64", out)
        self.assertIn(f"split  ({self.n},) str", out)
        self.assertIn("[attrs: ", out)
        self.assertIn("texts_hash", out)  # template group attribute names
        for tid in self.stored["templates"]:
            self.assertIn(tid + "/", out)

    def test_templates(self):
        self.assertEqual(run_json(self, self.path, "templates"), {"templates": sorted(self.stored["templates"])})
        p = run(None, "--h5", self.path, "templates")  # alias of --path
        self.assertEqual(p.stdout.split(), sorted(self.stored["templates"]))

    # ---- sample -----------------------------------------------------------------------------
    def test_sample(self):
        for index in (0, 5, self.n - 1, -1, -self.n):
            with self.subTest(index=index):
                j = run_json(self, self.path, "sample", str(index))
                row = index % self.n
                self.assertEqual(set(j), {"index", "id", "label", "split", "image_feature_shape",
                                          "image_token_feature_shape"})
                self.assertEqual(j["index"], row)
                self.assertEqual(j["id"], int(self.stored["ids"][row]))
                self.assertEqual(j["label"], int(self.stored["labels"][row]))
                self.assertEqual(j["split"], self.stored["split"][row])
                self.assertEqual(j["image_feature_shape"], [D])
                self.assertEqual(j["image_token_feature_shape"], [T, D])

    def test_sample_out(self):
        out = os.path.join(self.tmp, "sample.npz")
        p = run(self.path, "sample", "-3", "--out", out)
        self.assertEqual(p.returncode, 0, p.stderr)
        z = np.load(out)
        self.assertEqual(sorted(z.files), ["image_feature", "image_token_feature"])
        for key, column in (("image_feature", "image_features"), ("image_token_feature", "image_token_features")):
            want = self.stored[column][-3]
            self.assertEqual(z[key].dtype, np.float16)
            self.assertEqual(z[key].shape, want.shape)
            self.assertTrue(np.array_equal(z[key].view(np.uint16), want.view(np.uint16)))

    # ---- batch ------------------------------------------------------------------------------
    def check_batch(self, split, feature, idx):
        args = ["batch", "--split", split, "--feature", feature]
        if idx:
            args += ["--idx"] + idx
        j = run_json(self, self.path, *args)
        self.assertEqual(set(j), {"shape", "dtype", "data"})
        want = h5_column(self.stored, feature)[ref.split_rows(self.stored, split)][oracle_selection(idx)]
        self.assertEqual(j["shape"], list(want.shape))
        self.assertEqual(j["dtype"], str(want.dtype))
        got = np.array(j["data"], dtype=np.float64).reshape(want.shape)
        self.assertTrue(np.array_equal(got, want.astype(np.float64)), f"{args}")
        return want

    def test_batch_values_match_h5py(self):
        idx_forms = [[], ["0"], ["0", "2", "-1"], ["1:4"], [":10"], ["-5:"], ["::2"], ["::-1"], ["5:1:-2"],
                     ["-100:100:3"], ["7:2"], ["3:" + HUGE], ["::-" + HUGE], ["-" + HUGE + "::" + HUGE]]
        # Slice semantics are checked exhaustively against numpy in the gtests; here every
        # split x feature is read once and two pairs go through every --idx form.
        for split in ("all", "train", "val", "test"):
            for feature in ("image", "patches", "label"):
                forms = idx_forms if (split, feature) in (("train", "image"), ("val", "patches")) else [["0", "2", "-1"]]
                for idx in forms:
                    with self.subTest(split=split, feature=feature, idx=idx):
                        self.check_batch(split, feature, idx)

    def test_batch_out_npy(self):
        for feature, idx in (("image", ["-5:"]), ("patches", ["::-3"]), ("label", ["4", "0", "-1"]),
                             ("patches", [])):
            with self.subTest(feature=feature, idx=idx):
                out = os.path.join(self.tmp, f"batch_{feature}.npy")
                args = ["batch", "--split", "train", "--feature", feature, "--out", out]
                if idx:
                    args += ["--idx"] + idx
                p = run(self.path, *args)
                self.assertEqual(p.returncode, 0, p.stderr)
                got = np.load(out)
                want = h5_column(self.stored, feature)[ref.split_rows(self.stored, "train")][oracle_selection(idx)]
                self.assertEqual(got.dtype, want.dtype)
                self.assertEqual(got.shape, want.shape)
                self.assertTrue(np.array_equal(got, want))
                # --json with --out writes the same file
                run_json(self, self.path, *args)
                self.assertTrue(np.array_equal(np.load(out), want))

    # ---- fetch ------------------------------------------------------------------------------
    def expected_shape(self, tid, tokens=False):
        t = self.stored["templates"][tid]
        return list((t["text_token_features"] if tokens else t["text_features"]).shape)

    def test_fetch_shapes(self):
        ids = sorted(self.stored["templates"])
        j = run_json(self, self.path, "fetch")
        self.assertEqual(j, {"templates": {tid: {"shape": self.expected_shape(tid)} for tid in ids}})
        j = run_json(self, self.path, "fetch", "--concept")
        self.assertEqual(sorted(j["templates"]), [t for t in ids if t.startswith("concept")])
        j = run_json(self, self.path, "fetch", "--label")
        self.assertEqual(sorted(j["templates"]), [t for t in ids if t.startswith("label")])
        j = run_json(self, self.path, "fetch", "--template", ids[1], ids[0])
        self.assertEqual(sorted(j["templates"]), [ids[0], ids[1]])
        j = run_json(self, self.path, "fetch", "--concept", "--feature", "tokens")
        for tid, v in j["templates"].items():
            self.assertEqual(v["shape"], self.expected_shape(tid, tokens=True))
        p = run(self.path, "fetch", "--template", ids[0])
        self.assertIn(f"{ids[0]}: ({self.expected_shape(ids[0])[0]}, {D})", p.stdout)

    def test_fetch_concept_list_out(self):
        with h5py.File(self.path, "r") as f:
            concepts = json.loads(f.attrs["concept_texts"])
        names = [concepts[-1], "not a concept", concepts[0]]
        out = os.path.join(self.tmp, "fetch.npz")
        p = run(self.path, "fetch", "--concept", "--concept-list", *names, "--out", out, "--json")
        self.assertEqual(p.returncode, 0, p.stderr)
        self.assertIn("not a concept", p.stderr)  # a warning names the unknown concept
        j = json.loads(p.stdout)
        z = np.load(out)
        concept_ids = sorted(t for t in self.stored["templates"] if t.startswith("concept"))
        self.assertEqual(sorted(z.files), concept_ids)
        for tid in concept_ids:
            want = self.stored["templates"][tid]["text_features"][[len(concepts) - 1, 0]]
            self.assertEqual(j["templates"][tid]["shape"], list(want.shape))
            self.assertEqual(z[tid].dtype, np.float32)
            self.assertTrue(np.array_equal(z[tid], want))

    def test_fetch_out_all_tokens(self):
        out = os.path.join(self.tmp, "tokens.npz")
        p = run(self.path, "fetch", "--concept", "--feature", "tokens", "--out", out)
        self.assertEqual(p.returncode, 0, p.stderr)
        z = np.load(out)
        for tid in z.files:
            self.assertTrue(np.array_equal(z[tid], self.stored["templates"][tid]["text_token_features"]))

    # ---- bad arguments on a good store --------------------------------------------------------
    def test_usage_errors(self):
        line = self.fail_with(EXIT_USAGE, "sample", str(self.n))
        self.assertIn(f"-{self.n}..{self.n - 1}", line)
        self.fail_with(EXIT_USAGE, "sample", str(-self.n - 1), needle=f"-{self.n}..{self.n - 1}")
        self.fail_with(EXIT_USAGE, "batch", "--split", "val", "--idx", "9", needle="-9..8")
        self.fail_with(EXIT_USAGE, "batch", "--split", "holdout", needle="holdout")
        self.fail_with(EXIT_USAGE, "batch", "--feature", "pixels")
        self.fail_with(EXIT_USAGE, "batch", "--idx", "1:2:0", needle="step")
        self.fail_with(EXIT_USAGE, "batch", "--idx", "1:3", "5")
        self.fail_with(EXIT_USAGE, "fetch", "--template", "no_such_template", needle="no_such_template")
        self.fail_with(EXIT_USAGE, "fetch", "--concept", "--label")
        self.fail_with(EXIT_USAGE, "fetch", "--feature", "pixels")
        self.fail_with(EXIT_USAGE, "fetch", "--concept-list", "nothing known")
        self.fail_with(EXIT_USAGE, "--log-level", "loud", "templates")
        self.fail_with(EXIT_USAGE, "frobnicate")
        self.fail_with(EXIT_USAGE, "sample")
        self.fail_with(EXIT_USAGE)
        out = os.path.join(self.tmp, "never.npy")
        self.fail_with(EXIT_USAGE, "batch", "--idx", "1000", "--out", out)
        self.assertFalse(os.path.exists(out), "a failed batch left an --out file")

    def test_numbers_are_parsed_alike(self):
        valid = f"-{self.n}..{self.n - 1}"
        for typed in (HUGE, "-" + HUGE):
            self.fail_with(EXIT_USAGE, "sample", typed, needle=f"index {typed} is out of range for the store ({self.n} rows): use {valid}")
            self.fail_with(EXIT_USAGE, "batch", "--idx", typed, needle=f"index {typed} is out of range for the store ({self.n} rows): use {valid}")
        self.fail_with(EXIT_USAGE, "batch", "--split", "val", "--idx", "0", HUGE, needle=f"index {HUGE} is out of range for split 'val' (9 rows): use -9..8")
        self.fail_with(EXIT_USAGE, "sample", "1x", needle="bad index value '1x'")
        self.fail_with(EXIT_USAGE, "batch", "--idx", "1x", needle="bad --idx value '1x'")
        self.fail_with(EXIT_USAGE, "summarize", "--max-templates", "-1", needle="--max-templates must be 0 or more, not -1")
        # A '+' sign, as Python's int() and fstore build's options take it; not "+-1".
        self.assertEqual(run_json(self, self.path, "sample", "+1")["index"], 1)
        self.assertEqual(run_json(self, self.path, "batch", "--feature", "label", "--idx", "+2:")["shape"][0], self.n - 2)
        self.fail_with(EXIT_USAGE, "sample", "+-1", needle="bad index value '+-1'")
        self.fail_with(EXIT_USAGE, "summarize", "--max-templates", "-" + HUGE, needle="--max-templates must be 0 or more")
        self.fail_with(EXIT_USAGE, "summarize", "--max-templates", "x", needle="bad --max-templates value 'x'")
        self.assertEqual(run_json(self, self.path, "summarize", "--max-templates", HUGE)["templates"],
                         sorted(self.stored["templates"]))

    def test_option_taken_as_a_value(self):
        self.fail_with(EXIT_USAGE, "batch", "--idx", "--json", needle="--idx needs values (got option '--json')")
        self.fail_with(EXIT_USAGE, "fetch", "--template", "--json", needle="--template needs values (got option '--json')")
        self.fail_with(EXIT_USAGE, "fetch", "--concept-list", "--json", needle="--concept-list needs values (got option '--json')")
        self.fail_with(EXIT_USAGE, "summarize", "--max-templates", "--json", needle="--max-templates needs a value (got option '--json')")
        # Global and path options too: never a store named '--json'.
        self.fail_with(EXIT_USAGE, "templates", path="--json", needle="--path needs a value (got option '--json')")

    def test_concept_list_needs_a_concept_template(self):
        with h5py.File(self.path, "r") as f:
            concept = json.loads(f.attrs["concept_texts"])[0]
        label_id = sorted(t for t in self.stored["templates"] if t.startswith("label"))[0]
        self.fail_with(EXIT_USAGE, "fetch", "--template", label_id, "--concept-list", concept,
                       needle=f"--concept-list selects rows of concept templates, but the selection holds none ({label_id})")
        self.fail_with(EXIT_USAGE, "fetch", "--label", "--concept-list", concept, needle="drop --label")

    def test_out_names(self):
        before = set(os.listdir(self.tmp))
        self.fail_with(EXIT_USAGE, "batch", "--out", "", needle="--out needs a file name")
        self.fail_with(EXIT_USAGE, "sample", "0", "--out", "", needle="--out needs a file name")
        self.fail_with(EXIT_USAGE, "fetch", "--out", "", needle="--out needs a file name")
        self.fail_with(EXIT_USAGE, "batch", "--out", os.path.join(self.tmp, "x.txt"), needle="must end in .npy")
        self.fail_with(EXIT_USAGE, "batch", "--out", os.path.join(self.tmp, "x.npz"), needle="must end in .npy")
        self.fail_with(EXIT_USAGE, "sample", "0", "--out", os.path.join(self.tmp, "s.npy"), needle="must end in .npz")
        self.fail_with(EXIT_USAGE, "fetch", "--out", os.path.join(self.tmp, "f.npy"), needle="must end in .npz")
        self.fail_with(EXIT_USAGE, "sample", "0", "--out", "--json", needle="--out needs a value (got option '--json')")
        self.assertEqual(set(os.listdir(self.tmp)), before, "a refused --out created a file")

    def test_verify_clean(self):
        j = run_json(self, self.path, "verify")
        self.assertEqual(j["findings"], [])
        self.assertIs(j["ok"], True)
        p = run(self.path, "verify")
        self.assertEqual(p.returncode, 0, p.stdout + p.stderr)
        # --data reads every row and template too: more checks, still clean.
        data = run_json(self, self.path, "verify", "--data")
        self.assertEqual(data["findings"], [])
        self.assertIn("every feature and label row can be read", data["checks"])
        self.assertGreater(len(data["checks"]), len(j["checks"]))


class H5pyStore(StoreCases, unittest.TestCase):
    writer = staticmethod(write_h5py_store)


class FstoreStore(StoreCases, unittest.TestCase):
    writer = staticmethod(write_fstore_store)


class WritingCommands(unittest.TestCase):
    def setUp(self):
        self.tmp = tempfile.mkdtemp(prefix="fstore_access_cli_w_")

    def tearDown(self):
        shutil.rmtree(self.tmp, ignore_errors=True)

    def test_clear_templates_keeps_image_data(self):
        for name, writer in (("h5py", write_h5py_store), ("fstore", write_fstore_store)):
            with self.subTest(writer=name):
                path = os.path.join(self.tmp, name + ".h5")
                writer(path)
                before = ref.read_store(path)
                self.assertTrue(before["templates"])
                j = run_json(self, path, "clear-templates")
                self.assertEqual(j["removed"], sorted(before["templates"]))
                after = ref.read_store(path)
                self.assertEqual(after["templates"], {})
                with h5py.File(path, "r") as f:
                    self.assertIsInstance(f["templates"], h5py.Group)
                for key in ("image_features", "image_token_features", "ids", "labels"):
                    self.assertTrue(np.array_equal(after[key], before[key]), key)
                self.assertEqual(after["split"], before["split"])
                self.assertEqual(after["attrs"]["split_counts"], before["attrs"]["split_counts"])
                self.assertEqual(run_json(self, path, "templates"), {"templates": []})
                self.assertEqual(run(path, "verify").returncode, 0)

    def test_fetch_shapes_are_the_data_shapes(self):
        # Attributes K and T_txt that disagree with the datasets (verify reports them) do not
        # change what fetch prints: the shape of what it reads, also with --out.
        for kind, feature in (("template_k", "text"), ("template_t", "tokens")):
            with self.subTest(kind=kind):
                path = os.path.join(self.tmp, kind + ".h5")
                write_h5py_store(path)
                ref.break_store(path, kind)
                with h5py.File(path, "r") as f:
                    tid = sorted(f["templates"])[0]
                    name = "text_features" if feature == "text" else "text_token_features"
                    want = list(f["templates"][tid][name].shape)
                j = run_json(self, path, "fetch", "--template", tid, "--feature", feature)
                self.assertEqual(j["templates"][tid]["shape"], want)
                out = os.path.join(self.tmp, kind + ".npz")
                self.assertEqual(run(path, "fetch", "--template", tid, "--feature", feature, "--out", out).returncode, 0)
                self.assertEqual(list(np.load(out)[tid].shape), want)

    def test_summarize_draws_links_and_named_types_as_what_they_are(self):
        path = os.path.join(self.tmp, "links.h5")
        write_h5py_store(path)
        with h5py.File(path, "a") as f:
            f["extra/soft"] = h5py.SoftLink("/ids")
            f["extra/ext"] = h5py.ExternalLink("other.h5", "/x")
            f["extra/named_type"] = np.dtype("f4")
        text = run(path, "summarize").stdout
        for line in ("soft  -> soft link to /ids", "ext  -> external link to other.h5:/x",
                     "named_type  (named datatype)"):
            self.assertIn(line, text)
        extra = next(c for c in run_json(self, path, "summarize")["tree"]["children"] if c["name"] == "extra")
        kinds = {c["name"]: c["kind"] for c in extra["children"]}
        self.assertEqual(kinds, {"ext": "link", "named_type": "datatype", "soft": "link"})
        self.assertEqual(run(path, "verify").returncode, 0)

    def test_summarize_json_keeps_non_finite_attributes(self):
        path = os.path.join(self.tmp, "nan.h5")
        write_h5py_store(path)
        with h5py.File(path, "a") as f:
            f.attrs["logit_scale"] = float("nan")
            f.attrs["logit_bias"] = float("-inf")
            f.attrs["note"] = "NaN"
        attrs = run_json(self, path, "summarize")["attributes"]
        self.assertTrue(math.isnan(attrs["logit_scale"]), attrs)
        self.assertEqual(attrs["logit_bias"], float("-inf"))
        self.assertEqual(attrs["note"], "NaN")

    def test_features_stored_as_another_float_type_are_read_without_rounding(self):
        # The format says IEEE float16; a float32 store (or one typed bfloat16 by hand) is
        # read as float32, exactly, and named by its type in summarize and verify.
        path = os.path.join(self.tmp, "f32.h5")
        write_h5py_store(path)
        with h5py.File(path, "a") as f:
            values = f["image_features"][()].astype(np.float32) + np.float32(1e-4)  # not a half value
            del f["image_features"]
            f.create_dataset("image_features", data=values, maxshape=(None, values.shape[1]))
        j = run_json(self, path, "batch", "--feature", "image", "--idx", "0:2")
        self.assertEqual(j["dtype"], "float32")
        self.assertEqual(np.array(j["data"], dtype=np.float32).tolist(), values[0:2].tolist())
        self.assertEqual(run_json(self, path, "summarize")["image_features_dtype"], "float32")
        p = run(path, "verify")
        self.assertEqual(p.returncode, EXIT_FINDINGS)
        self.assertIn("dataset /image_features has type float32, expected float16", p.stdout)

        bf16 = os.path.join(self.tmp, "bf16.h5")
        write_h5py_store(bf16)
        with h5py.File(bf16, "a") as f:
            n, d = f["image_features"].shape
            bits = (np.arange(n * d, dtype=np.uint32).reshape(n, d) * 977 % 65536).astype(np.uint16)
            del f["image_features"]
            tid = h5py.h5t.IEEE_F32LE.copy()
            tid.set_fields(15, 7, 8, 0, 7)
            tid.set_size(2)
            tid.set_ebias(127)
            space = h5py.h5s.create_simple((n, d), (h5py.h5s.UNLIMITED, d))
            dcpl = h5py.h5p.create(h5py.h5p.DATASET_CREATE)
            dcpl.set_chunk((64, d))
            ds = h5py.h5d.create(f.id, b"image_features", tid, space, dcpl)
            ds.write(h5py.h5s.ALL, h5py.h5s.ALL, bits, mtype=tid)
        decoded = (bits.astype(np.uint32) << 16).view(np.float32)
        j = run_json(self, bf16, "batch", "--feature", "image", "--idx", "3")
        self.assertEqual(j["dtype"], "float32")
        got, want = np.array(j["data"], dtype=np.float32).reshape(-1), decoded[3]
        finite = np.isfinite(want)
        self.assertEqual(got[finite].tolist(), want[finite].tolist())
        self.assertEqual(run_json(self, bf16, "summarize")["image_features_dtype"], "bfloat16")
        p = run(bf16, "verify")
        self.assertEqual(p.returncode, EXIT_FINDINGS)
        self.assertIn("dataset /image_features has type bfloat16, expected float16", p.stdout)

    def test_concept_list_refuses_templates_of_an_earlier_prompt_set(self):
        # Rows are picked by the concept's index in concept_texts: a template made from
        # another list (the reference keeps them) would give another concept's rows.
        for kind, stale in (("stale_template", "concept_prompts_t02"), ("stale_concepts", "concept_prompts_t01")):
            with self.subTest(kind=kind):
                path = os.path.join(self.tmp, kind + ".h5")
                write_h5py_store(path)
                ref.break_store(path, kind)
                concept = json.loads(ref.read_store(path)["attrs"]["concept_texts"])[0]
                p = run(path, "fetch", "--concept-list", concept, "--json")
                self.assertEqual(p.returncode, EXIT_DATA, p.stdout + p.stderr)
                self.assertEqual(p.stderr.strip().splitlines(), [
                    f"fstore-access: error: template '{stale}' was not made from the store's concept_texts (left by "
                    "an earlier prompt set?), so --concept-list cannot pick its rows: `fstore build --run-text "
                    "--no-resume` (with --prompts FILE for a prompt set other than BloodMNIST's) rebuilds the "
                    "templates, or fetch it without --concept-list"])
                # Whole templates are still there to fetch.
                self.assertEqual(run(path, "fetch", "--template", stale, "--json").returncode, 0)

    def test_prompt_attributes_are_expanded_as_the_reference_did(self):
        # A template without "{}" (the reference stores it as its own text, fstore's prompt
        # files refuse it) must not switch off the stale-template checks of fetch and verify.
        path = os.path.join(self.tmp, "no_placeholder.h5")
        write_h5py_store(path)
        ref.break_store(path, "stale_concepts")
        with h5py.File(path, "a") as f:
            f.attrs["prompt_temp_for_labels"] = json.dumps(["a photo"])
            k = f["templates/label_prompts_t01"].attrs["K"]
            del f["templates/label_prompts_t01/texts"]
            texts = ["a photo"] * int(k)
            f["templates/label_prompts_t01"].create_dataset("texts", data=texts, dtype=h5py.string_dtype("utf-8"))
            f["templates/label_prompts_t01"].attrs["texts_hash"] = ref.texts_hash(texts)
        concept = json.loads(ref.read_store(path)["attrs"]["concept_texts"])[0]
        p = run(path, "fetch", "--concept-list", concept, "--json")
        self.assertEqual(p.returncode, EXIT_DATA, p.stdout + p.stderr)
        self.assertIn("template 'concept_prompts_t01' was not made from the store's concept_texts", p.stderr)
        j = json.loads(run(path, "verify", "--json").stdout)
        self.assertIn("templates hold the texts of the prompt attributes", j["checks"])
        self.assertIn("template 'concept_prompts_t01' holds other texts than the store's prompt attributes give",
                      " ".join(j["findings"]))
        self.assertNotIn("label_prompts_t01", " ".join(j["findings"]))

        # Prompt attributes that do not parse: verify says so, fetch --concept-list refuses.
        with h5py.File(path, "a") as f:
            f.attrs["prompt_temp_for_concepts"] = "[not json"
        p = run(path, "fetch", "--concept-list", concept, "--json")
        self.assertEqual(p.returncode, EXIT_FORMAT, p.stdout + p.stderr)
        self.assertIn("cannot check that template 'concept_prompts_t01' was made from concept_texts", p.stderr)
        self.assertIn("prompt_temp_for_concepts is not a JSON list of strings", p.stderr)
        p = run(path, "verify", "--json")
        self.assertEqual(p.returncode, EXIT_FINDINGS, p.stdout + p.stderr)
        self.assertIn("prompt_temp_for_concepts is not a JSON list of strings", " ".join(json.loads(p.stdout)["findings"]))

    def test_template_name_that_is_not_utf8_cannot_be_an_npz_member(self):
        path = os.path.join(self.tmp, "bytes_name.h5")
        write_h5py_store(path)
        with h5py.File(path, "a") as f:
            f["templates"].copy("concept_prompts_t01", b"concept_prompts_\xff")
        out = os.path.join(self.tmp, "all.npz")
        p = run(path, "fetch", "--out", out)
        self.assertEqual(p.returncode, EXIT_FORMAT, p.stdout + p.stderr)
        self.assertEqual(len(p.stderr.strip().splitlines()), 1, p.stderr)
        self.assertIn("member name 'concept_prompts_\\xFF.npy' is not valid UTF-8", p.stderr)
        self.assertFalse(os.path.exists(out))
        self.assertEqual(run(path, "fetch", "--template", "concept_prompts_t01", "--out", out).returncode, 0)

    def test_entries_of_templates_that_are_not_templates(self):
        path = os.path.join(self.tmp, "odd_templates.h5")
        write_h5py_store(path)
        with h5py.File(path, "a") as f:
            good = sorted(f["templates"])[0]
            f["templates/dangling"] = h5py.SoftLink("/nowhere")
            f["templates/a_dataset"] = np.zeros(3)
            f["templates/loop"] = f["/"]  # a hard-link cycle: summarize must still end
            f.create_group("templates/featureless")
        p = run(path, "fetch")
        self.assertEqual(p.returncode, 4, p.stderr)
        self.assertIn("not a template", p.stderr)
        self.assertIn("clear-templates", p.stderr)
        self.assertEqual(len(p.stderr.strip().splitlines()), 1, p.stderr)
        self.assertEqual(run(path, "fetch", "--template", good).returncode, 0)
        s = run(path, "summarize", timeout=30)
        self.assertEqual(s.returncode, 0, s.stderr)
        self.assertIn("loop/  (hard link to /)", s.stdout)
        self.assertIn("dangling  -> soft link to /nowhere (dangling)", s.stdout)
        tree = run_json(self, path, "summarize")["tree"]
        templates = next(c for c in tree["children"] if c["name"] == "templates")
        dangling = next(c for c in templates["children"] if c["name"] == "dangling")
        self.assertEqual((dangling["kind"], dangling["link"]), ("link", "soft link to /nowhere (dangling)"))
        v = run(path, "verify", "--json")
        self.assertEqual(v.returncode, EXIT_FINDINGS)
        findings = json.loads(v.stdout)["findings"]
        self.assertEqual(sum("'dangling'" in x for x in findings), 1, findings)
        # The structure check names what the featureless group lacks; the content check adds
        # no second "unreadable" finding for it.
        self.assertIn("template 'featureless': dataset text_features is missing", findings)
        self.assertFalse([x for x in findings if "'featureless' is unreadable" in x], findings)
        run_json(self, path, "clear-templates")
        self.assertEqual(run_json(self, path, "templates"), {"templates": []})

    def test_split_stored_as_ascii_or_fixed_length_strings(self):
        # h5py can also write /split as vlen ASCII or as fixed-length bytes ('S8');
        # reads take them as they are stored.
        for kind in ("ascii", "fixed"):
            with self.subTest(kind=kind):
                path = os.path.join(self.tmp, "split_%s.h5" % kind)
                write_h5py_store(path)
                with h5py.File(path, "a") as f:
                    names = [x.decode() for x in f["split"][()]]
                    del f["split"]
                    dtype = h5py.string_dtype("ascii") if kind == "ascii" else "S8"
                    f.create_dataset("split", data=np.array([n.encode() for n in names], dtype=dtype),
                                     maxshape=(None,), chunks=(4096,))
                    labels = f["labels"][()]
                want = [int(labels[i]) for i, n in enumerate(names) if n == "val"]
                self.assertTrue(want)
                self.assertEqual(run_json(self, path, "batch", "--split", "val", "--feature", "label")["data"], want)
                self.assertEqual(run_json(self, path, "sample", "0")["split"], names[0])

    def test_batch_json_keeps_non_finite_values(self):
        # fp16 overflows to inf; JSON has no such numbers, and null would lose which it was.
        # They print as Python's json.dumps writes them, which json.loads reads back.
        path = os.path.join(self.tmp, "nonfinite.h5")
        write_h5py_store(path)
        with h5py.File(path, "r+") as f:
            row = f["image_features"][0]
            row[:3] = [np.nan, np.inf, -np.inf]
            f["image_features"][0] = row
            want = f["image_features"][0:2].astype(np.float64)
        p = run(path, "batch", "--idx", "0:2", "--json")
        self.assertEqual(p.returncode, 0, p.stderr)
        self.assertIn("[[NaN,Infinity,-Infinity,", p.stdout)
        got = np.array(json.loads(p.stdout)["data"], dtype=np.float64)
        self.assertTrue(np.array_equal(got, want, equal_nan=True))

    def test_clear_templates_leaves_a_torn_tail_as_found(self):
        # A killed reference writer leaves datasets of different lengths (here /labels is 3
        # rows short) or a wrong last id: only a build may trim those rows, never
        # clear-templates, whose contract is that image data is not touched.
        for breakage in ("short_labels", "wrong_last_id"):
            with self.subTest(breakage=breakage):
                path = os.path.join(self.tmp, breakage + ".h5")
                write_h5py_store(path)
                with h5py.File(path, "r+") as f:
                    if breakage == "short_labels":
                        f["labels"].resize((f["labels"].shape[0] - 3,))
                    else:
                        f["ids"][-1] = 999
                with h5py.File(path, "r") as f:
                    before = {k: f[k][()] for k in ("image_features", "image_token_features", "ids", "labels", "split")}
                    counts_before = f.attrs["split_counts"]
                j = run_json(self, path, "clear-templates")
                self.assertTrue(j["removed"])
                with h5py.File(path, "r") as f:
                    self.assertEqual(list(f["templates"]), [])
                    self.assertEqual(f.attrs["split_counts"], counts_before)
                    for key, value in before.items():
                        self.assertTrue(np.array_equal(f[key][()], value), key)

    def test_verify_broken_stores(self):
        good = os.path.join(self.tmp, "good.h5")
        write_h5py_store(good)
        for kind in sorted(ref.BREAKAGES):
            with self.subTest(kind=kind):
                path = os.path.join(self.tmp, kind + ".h5")
                shutil.copyfile(good, path)
                ref.break_store(path, kind)
                checksum = sha(path)
                p = run(path, "verify", "--json")
                self.assertEqual(p.returncode, EXIT_FINDINGS, p.stdout + p.stderr)
                j = json.loads(p.stdout)
                self.assertIs(j["ok"], False)
                self.assertTrue(j["findings"])
                p = run(path, "verify")
                self.assertEqual(p.returncode, EXIT_FINDINGS)
                self.assertIn("FINDING: ", p.stdout)
                self.assertEqual(sha(path), checksum)
        # /templates that is not a group: readers name the fix, which works.
        path = os.path.join(self.tmp, "templates_dataset.h5")
        self.assertIn("run fstore-access clear-templates", run(path, "templates").stderr)
        self.assertEqual(run(path, "clear-templates").returncode, 0)
        self.assertEqual(run(path, "verify").returncode, 0)
        self.assertEqual(run_json(self, path, "templates")["templates"], [])


@contextlib.contextmanager
def full_disk(parent):
    """A directory holding old.npy and old.npz (b"old") in which every further write fails as
    on a full disk, and the preexec_fn to run commands with: a full 64 KiB tmpfs where
    mounting works (root), else a 256-byte file-size limit in the child (EFBIG)."""
    directory = os.path.join(parent, "full_disk")
    os.mkdir(directory)
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", directory],
                             capture_output=True).returncode == 0
    try:
        for name in ("old.npy", "old.npz"):
            with open(os.path.join(directory, name), "wb") as f:
                f.write(b"old")
        if mounted:
            filler = os.open(os.path.join(directory, "filler"), os.O_WRONLY | os.O_CREAT, 0o644)
            try:
                while True:
                    os.write(filler, b"\0" * 4096)
            except OSError as e:
                if e.errno != errno.ENOSPC:
                    raise
            finally:
                os.close(filler)
            yield directory, None
        else:
            print("no tmpfs (mount failed): a file-size limit stands in for the full disk", file=sys.stderr)

            def file_size_limit():
                signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # EFBIG from write(2), not a kill
                resource.setrlimit(resource.RLIMIT_FSIZE, (256, 256))
            yield directory, file_size_limit
    finally:
        if mounted:
            subprocess.run(["umount", directory], check=True)


class OutTargets(unittest.TestCase):
    """What --out does with what is already at its path: regular files are replaced
    atomically (through symlinks, keeping their mode), devices, FIFOs and /dev/stdout are
    written in place, and write failures are I/O errors (exit 10) in one line."""

    @classmethod
    def setUpClass(cls):
        cls.tmp = tempfile.mkdtemp(prefix="fstore_access_cli_out_")
        os.chmod(cls.tmp, 0o755)  # readable by the unprivileged user of test_out_directories
        # ... who may not reach the build tree (a checkout in root's 0700 home): a copy.
        cls.binary = shutil.copy(BIN, os.path.join(cls.tmp, "fstore-access"))
        cls.path = os.path.join(cls.tmp, "store.h5")
        write_fstore_store(cls.path)
        os.chmod(cls.path, 0o644)
        cls.stored = ref.read_store(cls.path)

    @classmethod
    def tearDownClass(cls):
        shutil.rmtree(cls.tmp, ignore_errors=True)

    def setUp(self):
        self.dir = tempfile.mkdtemp(dir=self.tmp)
        os.chmod(self.dir, 0o755)

    def tearDown(self):
        self.assertEqual([n for n in os.listdir(self.dir) if ".partial-" in n], [], "a temporary file was left")
        shutil.rmtree(self.dir, ignore_errors=True)

    def test_partials_of_killed_writers_are_removed(self):
        # Ctrl-C or SIGKILL during --out leaves <out>.partial-PID (no destructor runs); the
        # next write to that path removes those of dead processes, never a live one's.
        out = os.path.join(self.dir, "tokens.npy")
        gone = subprocess.Popen(["true"])
        gone.wait()
        stale = [out + ".partial-%d" % gone.pid, out + ".partial-%d-3" % gone.pid]
        live = out + ".partial-%d" % os.getpid()
        other = os.path.join(self.dir, "other.npy.partial-%d" % gone.pid)
        for name in stale + [live, other]:
            with open(name, "wb") as f:
                f.write(b"x" * 1000)
        p = run(self.path, "batch", "--feature", "image", "--idx", "0:2", "--out", out)
        self.assertEqual(p.returncode, 0, p.stderr)
        self.assertTrue(np.array_equal(np.load(out), self.stored["image_features"][0:2]))
        for name in stale:
            self.assertFalse(os.path.exists(name), name)
        self.assertTrue(os.path.exists(live) and os.path.exists(other))
        os.remove(live)
        os.remove(other)

    def fails(self, code, needle, *args, **kwargs):
        p = run(self.path, *args, **kwargs)
        self.assertEqual(p.returncode, code, f"{args}: {p.stdout!r} {p.stderr!r}")
        lines = p.stderr.strip().splitlines()
        self.assertEqual(len(lines), 1, p.stderr)
        self.assertIn(needle, lines[0])

    def test_symlinked_file_is_replaced_behind_the_link_keeping_its_mode(self):
        for args, name in ((["batch"], "batch.npy"), (["sample", "-1"], "sample.npz")):
            real, link = os.path.join(self.dir, "real_" + name), os.path.join(self.dir, name)
            with open(real, "w") as f:
                f.write("old")
            os.chmod(real, 0o640)
            os.symlink("real_" + name, link)
            p = run(self.path, *args, "--out", link)
            self.assertEqual(p.returncode, 0, p.stderr)
            self.assertTrue(os.path.islink(link), "the symlink was replaced")
            self.assertEqual(os.readlink(link), "real_" + name)
            self.assertEqual(stat.S_IMODE(os.stat(real).st_mode), 0o640)
            if name.endswith(".npy"):
                self.assertTrue(np.array_equal(np.load(real), self.stored["image_features"]))
            else:
                self.assertTrue(np.array_equal(np.load(real)["image_feature"], self.stored["image_features"][-1]))

    def test_fifo_is_written_in_place(self):
        fifo = os.path.join(self.dir, "out.fifo")  # any name: it is no regular file
        os.mkfifo(fifo)
        for args in (["batch", "--feature", "patches"], ["sample", "-1"]):
            got = {}

            def read_all():
                with open(fifo, "rb") as f:
                    got["bytes"] = f.read()
            reader = threading.Thread(target=read_all, daemon=True)
            reader.start()
            p = run(self.path, *args, "--out", fifo)
            reader.join(timeout=30)
            self.assertEqual(p.returncode, 0, p.stderr)
            self.assertFalse(reader.is_alive(), "nothing was written into the FIFO")
            self.assertTrue(stat.S_ISFIFO(os.lstat(fifo).st_mode), "the FIFO was replaced")
            data = np.load(io.BytesIO(got["bytes"]))
            if args[0] == "batch":
                self.assertTrue(np.array_equal(data, self.stored["image_token_features"]))
            else:
                self.assertTrue(np.array_equal(data["image_token_feature"], self.stored["image_token_features"][-1]))

    def test_stdout(self):
        # Never /dev/stdout itself: a wrong writer would replace it for the whole machine.
        # A private link of the same kind, and the descriptor path it leads to, cannot be
        # renamed onto (procfs) or are this test's own.
        stdout_link = os.path.join(self.dir, "stdout")
        os.symlink("/proc/self/fd/1", stdout_link)
        for out in (stdout_link, "/proc/self/fd/1"):
            p = run(self.path, "batch", "--idx", "0:3", "--out", out, text=False)
            self.assertEqual(p.returncode, 0, p.stderr)
            self.assertTrue(np.array_equal(np.load(io.BytesIO(p.stdout)), self.stored["image_features"][0:3]))
            # Nothing but the array: no "wrote ..." line after it.
            self.assertEqual(len(p.stdout), 128 + 3 * self.stored["image_features"].shape[1] * 2)
        self.assertEqual(os.readlink(stdout_link), "/proc/self/fd/1")
        for args in (["sample", "1"], ["fetch"]):
            p = run(self.path, *args, "--out", stdout_link, text=False)
            self.assertEqual(p.returncode, 0, p.stderr)
            with zipfile.ZipFile(io.BytesIO(p.stdout)) as archive:
                self.assertIsNone(archive.testzip())
            # Nothing after the archive (zipfile itself would read past a "wrote ..." line):
            # the end-of-central-directory record (22 bytes, no comment) ends the output.
            self.assertEqual(p.stdout.rfind(b"PK\x05\x06"), len(p.stdout) - 22, args)
            # --json would print into the archive: refused before anything is written.
            p = run(self.path, *args, "--out", stdout_link, "--json")
            self.assertEqual(p.returncode, EXIT_USAGE, p.stderr)
            self.assertEqual(p.stdout, "")
            self.assertIn("is standard output, where --json prints too: give --out a file, or drop --json", p.stderr)
        # A device stdout also is (scripts send both to /dev/null), or a file --out replaces
        # by rename, cannot mix the two: --json is fine there.
        with open(os.devnull, "w") as null:
            p = subprocess.run([BIN, "--path", self.path, "sample", "0", "--out", os.devnull, "--json"], stdout=null,
                               stderr=subprocess.PIPE, text=True, timeout=60)
        self.assertEqual(p.returncode, 0, p.stderr)
        same = os.path.join(self.dir, "same.npz")
        with open(same, "w") as f:
            p = subprocess.run([BIN, "--path", self.path, "sample", "0", "--out", same, "--json"], stdout=f,
                               stderr=subprocess.PIPE, text=True, timeout=60)
        self.assertEqual(p.returncode, 0, p.stderr)

    def test_write_error_on_a_device_fails(self):
        # A private node of /dev/full's device (1, 7): a wrong writer could only replace this
        # node, never /dev/full. Creating it needs CAP_MKNOD; without it, stdout on a pipe
        # whose reader has gone fails the same way (EPIPE).
        node = os.path.join(self.dir, "full")
        try:
            os.mknod(node, 0o666 | stat.S_IFCHR, os.makedev(1, 7))
        except PermissionError:
            print("no CAP_MKNOD: checking stdout on a closed pipe instead", file=sys.stderr)
            reader, writer = os.pipe()
            os.close(reader)
            try:
                # restore_signals=False: SIGPIPE stays ignored, as Python has it, so write(2) says EPIPE.
                p = subprocess.run([BIN, "--path", self.path, "batch", "--out", "/proc/self/fd/1"], stdout=writer,
                                   stderr=subprocess.PIPE, text=True, timeout=60, restore_signals=False)
            finally:
                os.close(writer)
            self.assertEqual(p.returncode, EXIT_IO, p.stderr)
            self.assertIn("cannot write '/proc/self/fd/1': Broken pipe", p.stderr)
            return
        for args in (["batch"], ["sample", "0"], ["fetch"]):
            self.fails(EXIT_IO, f"cannot write '{node}': No space left on device: free space or choose another --out",
                       *args, "--out", node)
            self.assertTrue(stat.S_ISCHR(os.lstat(node).st_mode), "the device node was replaced")

    def test_disk_full(self):
        with full_disk(self.dir) as (directory, limit):
            for args, name in ((["batch", "--feature", "patches"], "old.npy"), (["sample", "0"], "old.npz"),
                               (["fetch"], "old.npz")):
                out = os.path.join(directory, name)
                self.fails(EXIT_IO, f"cannot write '{out}': ", *args, "--out", out, preexec_fn=limit)
                self.fails(EXIT_IO, ": free space or choose another --out", *args, "--out", out, preexec_fn=limit)
                with open(out, "rb") as f:
                    self.assertEqual(f.read(), b"old", "a failed write changed the existing file")
            self.assertEqual([n for n in os.listdir(directory) if ".partial-" in n], [])

    def test_out_directories(self):
        missing = os.path.join(self.dir, "missing", "x.npy")
        self.fails(EXIT_NOT_FOUND, f"directory '{os.path.dirname(missing)}' does not exist", "batch", "--out", missing)
        locked = os.path.join(self.dir, "locked")
        os.mkdir(locked, 0o555)
        os.chmod(locked, 0o555)
        user = 65534 if os.geteuid() == 0 else None  # root writes anywhere: run as nobody
        for args, name in ((["batch"], "x.npy"), (["sample", "0"], "x.npz"), (["fetch"], "x.npz")):
            out = os.path.join(locked, name)
            self.fails(EXIT_IO, f"cannot write '{out}': directory '{locked}' is not writable (Permission denied): "
                       "choose another --out", *args, "--out", out, user=user, binary=self.binary)


class BadFiles(unittest.TestCase):
    """Inputs that are no usable store: one stderr line, the documented code, file untouched."""

    @classmethod
    def setUpClass(cls):
        cls.tmp = tempfile.mkdtemp(prefix="fstore_access_cli_bad_")
        cls.text = os.path.join(cls.tmp, "notes.h5")
        with open(cls.text, "w") as f:
            f.write("not an HDF5 file\n")
        cls.other = os.path.join(cls.tmp, "other.h5")
        with h5py.File(cls.other, "w") as f:
            f.create_dataset("x", data=np.arange(3))
        cls.good = os.path.join(cls.tmp, "good.h5")
        write_h5py_store(cls.good)

    @classmethod
    def tearDownClass(cls):
        shutil.rmtree(cls.tmp, ignore_errors=True)

    COMMANDS = (["summarize"], ["templates"], ["sample", "0"], ["batch"], ["fetch"], ["verify"],
                ["clear-templates"])

    def check(self, path, code, needle=None):
        checksum = sha(path) if os.path.isfile(path) else None
        for command in self.COMMANDS:
            with self.subTest(path=os.path.basename(path), command=command):
                p = run(path, *command)
                self.assertEqual(p.returncode, code, p.stdout + p.stderr)
                lines = p.stderr.strip().splitlines()
                self.assertEqual(len(lines), 1, p.stderr)
                if needle:
                    self.assertIn(needle, lines[0])
                self.assertNotIn("HDF5-DIAG", p.stderr)
                if checksum:
                    self.assertEqual(sha(path), checksum)

    def test_missing_file(self):
        self.check(os.path.join(self.tmp, "missing.h5"), EXIT_NOT_FOUND, "missing.h5")

    def test_directory(self):
        self.check(self.tmp, EXIT_NOT_FOUND, "directory")

    def test_not_hdf5(self):
        self.check(self.text, EXIT_FORMAT, "not an HDF5 file")

    def test_fifo_and_device(self):
        # A FIFO would block HDF5's open until someone writes to it: refused at once.
        fifo = os.path.join(self.tmp, "fifo.h5")
        os.mkfifo(fifo)
        try:
            self.check(fifo, EXIT_FORMAT, f"'{fifo}' is a FIFO, not a store file")
        finally:
            os.remove(fifo)
        self.check("/dev/null", EXIT_FORMAT, "'/dev/null' is a device, not a store file")

    def test_marked_open_by_a_crashed_hdf5_writer(self):
        # A version-3 superblock (libver='latest', as SWMR writers use) records that a writer
        # has the file open; one killed before closing leaves the mark for good.
        path = os.path.join(self.tmp, "marked.h5")
        subprocess.run([sys.executable, "-c", "import h5py, os, sys\n"
                        "with h5py.File(sys.argv[1], 'r') as src, h5py.File(sys.argv[2], 'w', libver='latest') as dst:\n"
                        "    for name in src: src.copy(src[name], dst, name)\n"
                        "    for k, v in src.attrs.items(): dst.attrs[k] = v\n"
                        "f = h5py.File(sys.argv[2], 'r+', libver='latest')\n"
                        "os._exit(0)\n", self.good, path], check=True)
        try:
            self.check(path, EXIT_LOCKED, f"is marked open for writing by an HDF5 program (an SWMR writer, or one "
                       f"that crashed): wait for it to finish; if none is running, clear the mark with h5clear -s '{path}'")
            subprocess.run(["h5clear", "-s", path], check=True)
            self.assertEqual(run(path, "verify").returncode, 0)
        finally:
            os.remove(path)

    def test_hdf5_but_not_a_store(self):
        self.check(self.other, EXIT_FORMAT, "not an fstore store")

    def test_default_path(self):
        p = subprocess.run([BIN, "templates"], capture_output=True, text=True, cwd=self.tmp)
        self.assertEqual(p.returncode, EXIT_NOT_FOUND)
        self.assertIn("conceptclip_features.h5", p.stderr)

    def hold(self, command):
        holder = subprocess.Popen(command, stdout=subprocess.PIPE, text=True)
        self.assertEqual(holder.stdout.readline().strip(), "ready")
        return holder

    def test_locked_by_writer(self):
        holders = {
            "h5py": [sys.executable, "-c",
                     "import h5py, sys, time\nf = h5py.File(sys.argv[1], 'r+')\nprint('ready', flush=True)\n"
                     "time.sleep(60)\n", self.good],
            "fstore": None,
        }
        fstore_path = os.path.join(self.tmp, "held.h5")
        write_fstore_store(fstore_path)
        holders["fstore"] = [MAKE_STORE, fstore_path, "--hold", "60"]
        for name, command in holders.items():
            path = self.good if name == "h5py" else fstore_path
            holder = self.hold(command)
            checksum = sha(path)  # after the holder opened it: HDF5 marks a file open for writing
            try:
                for args in (["templates"], ["sample", "0"], ["verify"], ["clear-templates"]):
                    with self.subTest(writer=name, command=args):
                        p = run(path, *args)
                        self.assertEqual(p.returncode, EXIT_LOCKED, p.stdout + p.stderr)
                        self.assertEqual(len(p.stderr.strip().splitlines()), 1, p.stderr)
                        self.assertIn("another process", p.stderr)
                self.assertEqual(sha(path), checksum)
            finally:
                holder.kill()
                holder.wait()


class UserAttributes(unittest.TestCase):
    """summarize --json shows every root attribute as h5py reads it, user-added ones included."""

    def test_attributes_as_h5py_reads_them(self):
        with tempfile.TemporaryDirectory(prefix="fstore_access_attrs_") as tmp:
            path = os.path.join(tmp, "store.h5")
            write_h5py_store(path)
            with h5py.File(path, "a") as f:
                f.attrs["u64"] = np.uint64(2**63 + 5)
                f.attrs["i32_matrix"] = np.arange(6, dtype=np.int32).reshape(2, 3)
                f.attrs["flag"] = True
                f.attrs["flags"] = np.array([True, False])
                f.attrs["class_names"] = ["basophil", "eosinophil"]
                f.attrs["f16"] = np.float16(1.5)
                f.attrs["not_a_number"] = np.nan
                f.attrs["fixed"] = np.bytes_(b"xyz")
            got = run_json(self, path, "summarize")["attributes"]
            with h5py.File(path, "r") as f:
                want = {k: (v.decode() if isinstance(v, bytes) else v.tolist() if hasattr(v, "tolist") else v)
                        for k, v in f.attrs.items()}
            self.assertTrue(math.isnan(got.pop("not_a_number")) and math.isnan(want.pop("not_a_number")))
            self.assertEqual(got, want)
            self.assertEqual(got["u64"], 2**63 + 5)
            self.assertEqual(got["i32_matrix"], [[0, 1, 2], [3, 4, 5]])
            self.assertIs(got["flag"], True)


class DamagedStringHeap(unittest.TestCase):
    """Variable-length strings (/split, template texts, string attributes) live in HDF5's global
    heap, which HDF5 1.10 trusts: a damaged collection made every command (and h5py) segfault or
    hang. Each collection of both writers' stores is damaged in the ways that crashed it, and
    at random: every command must end with exit 0 (nothing it reads was hit) or 4 (one line
    naming the damage), never a signal or a hang."""

    COMMANDS = (["summarize", "--json"], ["templates"], ["sample", "0"], ["fetch"], ["verify", "--data"],
                ["clear-templates"])
    DAMAGE_MESSAGE = "the heap holding its strings is damaged"

    @staticmethod
    def collections(data):
        """(address, [(object offset, index)]) of each global heap collection in the file's bytes."""
        found = []
        for match in re.finditer(b"GCOL\x01", data):
            at = match.start()
            size = struct.unpack_from("<Q", data, at + 8)[0]
            objects, p = [], at + 16
            while p + 16 <= at + size:
                index, _, _, object_size = struct.unpack_from("<HHIQ", data, p)
                objects.append((p, index))
                if index == 0:
                    break
                p += 16 + ((object_size + 7) & ~7)
            found.append((at, objects))
        return found

    @classmethod
    def damages(cls, data):
        """(name, [(offset, bytes)]) patches: the shapes that crashed HDF5, then random flips."""
        cases = []
        for at, objects in cls.collections(data):
            cases += [(f"{at}:size 2^40", [(at + 8, struct.pack("<Q", 1 << 40))]),
                      (f"{at}:size 16", [(at + 8, struct.pack("<Q", 16))])]
            for p, index in objects[:2] + objects[-1:]:
                cases += [(f"{at}:object {index} size 2^40", [(p + 8, struct.pack("<Q", 1 << 40))]),
                          (f"{at}:object {index} size 0", [(p + 8, struct.pack("<Q", 0))]),
                          (f"{at}:object {index} size 100", [(p + 8, struct.pack("<Q", 100))]),
                          (f"{at}:object {index} index 65535", [(p, struct.pack("<H", 0xFFFF))])]
        rng = random.Random(5)
        for seed in range(30):
            at, _ = rng.choice(cls.collections(data))
            size = struct.unpack_from("<Q", data, at + 8)[0]
            cases.append((f"random {seed}", [(at + rng.randrange(min(size, 512)), bytes([rng.randrange(256)]))
                                             for _ in range(rng.randint(1, 4))]))
        return cases

    def check_store(self, write):
        with tempfile.TemporaryDirectory(prefix="fstore_access_heap_") as tmp:
            good = os.path.join(tmp, "good.h5")
            write(good)
            with open(good, "rb") as f:
                data = f.read()
            self.assertGreaterEqual(len(self.collections(data)), 1)
            path = os.path.join(tmp, "damaged.h5")
            reported = 0
            for name, patches in self.damages(data):
                damaged = bytearray(data)
                for offset, patch in patches:
                    damaged[offset:offset + len(patch)] = patch
                for command in self.COMMANDS:
                    with open(path, "wb") as f:
                        f.write(damaged)
                    with self.subTest(damage=name, command=command):
                        try:
                            p = run(path, *command, timeout=20)
                        except subprocess.TimeoutExpired:
                            self.fail("hung")
                        self.assertIn(p.returncode, (0, EXIT_FINDINGS, EXIT_FORMAT), p.stderr)
                        self.assertNotIn("HDF5-DIAG", p.stderr)
                        if p.returncode == EXIT_FORMAT:
                            self.assertEqual(len(p.stderr.strip().splitlines()), 1, p.stderr)
                        if self.DAMAGE_MESSAGE in p.stderr:
                            reported += 1
                            self.assertIn(f"store '{path}': cannot read ", p.stderr)
                            self.assertIn("restore the store from a copy, or rebuild it", p.stderr)
            self.assertGreater(reported, 0)

    def test_h5py_store(self):
        self.check_store(write_h5py_store)

    def test_fstore_store(self):
        self.check_store(write_fstore_store)

    def test_names_what_it_cannot_read(self):
        with tempfile.TemporaryDirectory(prefix="fstore_access_heap_") as tmp:
            path = os.path.join(tmp, "store.h5")
            # /split as fixed-length bytes: then split_counts is the root's only heap string.
            write_h5py_store(path)
            with h5py.File(path, "a") as f:
                splits = f["split"][()]
                del f["split"]
                f.create_dataset("split", data=splits.astype("S8"), maxshape=(None,), chunks=(4096,))
                for name in list(f.attrs):
                    if name != "split_counts":
                        del f.attrs[name]
                del f["templates"]
                f.create_group("templates")
            with open(path, "rb") as f:
                data = bytearray(f.read())
            value = data.rindex(b'{"train"')  # the attribute's string, in the heap
            at = max(at for at, _ in self.collections(data) if at < value)
            data[at + 8:at + 16] = struct.pack("<Q", 16)
            with open(path, "wb") as f:
                f.write(data)
            p = run(path, "summarize")
            self.assertEqual(p.returncode, EXIT_FORMAT, p.stderr)
            self.assertIn(f"store '{path}': cannot read attribute 'split_counts': {self.DAMAGE_MESSAGE} "
                          f"(the collection at byte {at}: it holds no object", p.stderr)
            # A size that fits in a (sparse, 3 GiB) file but no store's strings: not allocated.
            data[at + 8:at + 16] = struct.pack("<Q", 3 << 29)
            with open(path, "wb") as f:
                f.write(data)
                f.truncate(3 << 30)
            p = run(path, "summarize")
            self.assertEqual(p.returncode, EXIT_FORMAT, p.stderr)
            self.assertIn(f"(the collection at byte {at}: its size ({3 << 29} bytes) is implausible)", p.stderr)


class Help(unittest.TestCase):
    def test_help(self):
        p = run(None, "--help")
        self.assertEqual(p.returncode, 0)
        for word in ("summarize", "templates", "sample", "batch", "fetch", "clear-templates", "verify",
                     "--path", "--log-level", "Examples:", "Exit codes"):
            self.assertIn(word, p.stdout)
        p = run(None, "batch", "--help")
        self.assertEqual(p.returncode, 0)
        for word in ("--split", "--feature", "--idx", "--out", "--json"):
            self.assertIn(word, p.stdout)


if __name__ == "__main__":
    unittest.main(verbosity=2)
