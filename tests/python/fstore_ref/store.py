"""The Python reference feature store, written and read with h5py exactly as the original
pipeline does (docs/reference-store.md), with small random data.

Tests import it (`from fstore_ref import store`) to produce stores that fstore must read,
and to read stores back the way the reference reader does. It can also run as a script,
for C++ tests:

    /usr/bin/python3 store.py write OUT.h5 [--train 5 --val 3 --test 2 --dim 8 --tokens 4
                                            --concept-templates 2 --label-templates 1
                                            --text-tokens 6 --seed 0 --break KIND]

KIND (see BREAKAGES) damages the store after writing, for `verify` tests.
"""

import argparse
import hashlib
import json
import os
import time

import h5py
import numpy as np

import sys

# BloodMNIST defaults (reference-store.md "Template ids and prompts"): one copy, in prompts.py.
try:
    from .prompts import CONCEPT_TEMPLATES, LABEL_TEMPLATES
    from .prompts import CONCEPT_TEXTS as CONCEPTS, LABEL_TEXTS as LABELS
except ImportError:  # run as a script: make the package importable
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    from fstore_ref.prompts import CONCEPT_TEMPLATES, LABEL_TEMPLATES
    from fstore_ref.prompts import CONCEPT_TEXTS as CONCEPTS, LABEL_TEXTS as LABELS

SPLITS = ("train", "val", "test")
STR = h5py.string_dtype("utf-8")


def texts_hash(texts):
    """hex SHA-256 over each text's UTF-8 bytes followed by one zero byte."""
    h = hashlib.sha256()
    for t in texts:
        h.update(t.encode("utf-8"))
        h.update(b"\0")
    return h.hexdigest()


def now():
    return time.strftime("%Y-%m-%d %H:%M:%S")


def open_store(path, D=1152, T_img=729):
    """Opens (creating or repairing) a store as the reference writer does."""
    f = h5py.File(path, "a")
    if "image_features" not in f:
        f.create_dataset("image_features", shape=(0, D), maxshape=(None, D), dtype="float16",
                         chunks=(64, D), compression="lzf")
    if "image_token_features" not in f:
        f.create_dataset("image_token_features", shape=(0, T_img, D), maxshape=(None, T_img, D),
                         dtype="float16", chunks=(4, T_img, D), compression="lzf")
    n = f["image_features"].shape[0]
    if "ids" not in f:
        f.create_dataset("ids", data=np.arange(n, dtype=np.int64), maxshape=(None,),
                         dtype="int64", chunks=(4096,), compression="lzf")
    if "labels" not in f:
        f.create_dataset("labels", data=np.full(n, -1, dtype=np.int64), maxshape=(None,),
                         dtype="int64", chunks=(4096,), compression="lzf")
    if "split" not in f:
        f.create_dataset("split", data=np.array(["unspecified"] * n, dtype=object), maxshape=(None,),
                         dtype=STR, chunks=(4096,), compression="lzf")
    if "templates" not in f:
        f.create_group("templates")
    if "D" not in f.attrs:
        f.attrs["D"] = np.int64(D)
        f.attrs["T_img"] = np.int64(T_img)
        f.attrs["created_at"] = now()
        f.attrs["version"] = "1.0"
    return f


def write_template(f, template_id, texts, features, token_features=None):
    """Writes templates/<id> whole, replacing an existing group (reference behaviour)."""
    group = f["templates"]
    if template_id in group:
        del group[template_id]
    g = group.create_group(template_id)
    g.create_dataset("text_features", data=np.asarray(features, dtype=np.float32), compression="lzf")
    if token_features is not None:
        g.create_dataset("text_token_features", data=np.asarray(token_features, dtype=np.float32),
                         compression="lzf")
    g.create_dataset("texts", data=np.array(texts, dtype=object), dtype=STR, compression="lzf")
    g.attrs["K"] = np.int64(len(texts))
    g.attrs["D"] = np.int64(np.asarray(features).shape[1])
    g.attrs["T_txt"] = np.int64(-1 if token_features is None else np.asarray(token_features).shape[1])
    g.attrs["texts_hash"] = texts_hash(texts)
    g.attrs["created_at"] = now()


def append_rows(f, features, token_features, labels, split_name):
    """Appends one batch to the five datasets (ids = running row number)."""
    b = features.shape[0]
    n0 = f["image_features"].shape[0]
    n1 = n0 + b
    for name in ("image_features", "image_token_features", "ids", "labels", "split"):
        ds = f[name]
        ds.resize((n1,) + ds.shape[1:])
    f["image_features"][n0:n1] = features.astype(np.float16)
    f["image_token_features"][n0:n1] = token_features.astype(np.float16)
    f["ids"][n0:n1] = np.arange(n0, n1, dtype=np.int64)
    f["labels"][n0:n1] = np.asarray(labels, dtype=np.int64)
    f["split"][n0:n1] = np.array([split_name] * b, dtype=object)


def write_reference_store(path, rows_per_split=None, D=8, T=4, concept_templates=2,
                          label_templates=1, text_tokens=6, seed=0, batch_size=3):
    """Writes a complete small store like the reference pipeline (text stage, then the
    image stage in train/val/test order, then split_counts). Returns what was written:
    {"image_features", "image_token_features", "ids", "labels", "split", "templates":
    {id: {"texts", "text_features", "text_token_features"}}}.
    text_tokens=None writes templates without token features. An existing file at `path`
    is replaced (this helper writes fresh stores; it does not resume)."""
    if os.path.exists(path):
        os.remove(path)
    if rows_per_split is None:
        rows_per_split = {"train": 5, "val": 3, "test": 2}
    rng = np.random.default_rng(seed)
    written = {"templates": {}}
    f = open_store(path, D=D, T_img=T)
    try:
        plans = [("concept", CONCEPTS, CONCEPT_TEMPLATES[:concept_templates]),
                 ("label", LABELS, LABEL_TEMPLATES[:label_templates])]
        for kind, vocab, templates in plans:
            for j, template in enumerate(templates, start=1):
                tid = "%s_prompts_t%02d" % (kind, j)
                texts = [template.format(v) for v in vocab]
                feats = rng.standard_normal((len(texts), D)).astype(np.float32)
                feats /= np.linalg.norm(feats, axis=1, keepdims=True)
                tokens = None
                if text_tokens is not None:
                    tokens = rng.standard_normal((len(texts), text_tokens, D)).astype(np.float32)
                write_template(f, tid, texts, feats, tokens)
                written["templates"][tid] = {"texts": texts, "text_features": feats,
                                             "text_token_features": tokens}
        f.attrs["label_texts"] = json.dumps(LABELS)
        f.attrs["prompt_temp_for_labels"] = json.dumps(LABEL_TEMPLATES[:label_templates])
        f.attrs["concept_texts"] = json.dumps(CONCEPTS)
        f.attrs["prompt_temp_for_concepts"] = json.dumps(CONCEPT_TEMPLATES[:concept_templates])
        f.attrs["logit_scale"] = float(np.log(100.0))
        f.attrs["logit_bias"] = -10.0
        f.attrs["concept_logit_scale"] = float(np.log(50.0))
        f.attrs["concept_logit_bias"] = -10.0
        f.attrs["dataset"] = json.dumps("bloodmnist")

        counts = {}
        for split_name in SPLITS:
            n = rows_per_split.get(split_name, 0)
            for start in range(0, n, batch_size):
                b = min(batch_size, n - start)
                feats = rng.standard_normal((b, D)).astype(np.float16)
                tokens = rng.standard_normal((b, T, D)).astype(np.float16)
                labels = rng.integers(0, len(LABELS), size=b)
                append_rows(f, feats, tokens, labels, split_name)
            if n:
                counts[split_name] = n
        f.attrs["split_counts"] = json.dumps(counts)
    finally:
        f.close()
    stored = read_store(path)
    for key in ("image_features", "image_token_features", "ids", "labels", "split"):
        written[key] = stored[key]
    return written


def read_store(path):
    """Reads everything the way the reference reader does (strings decoded)."""
    out = {"templates": {}}
    with h5py.File(path, "r") as f:
        out["image_features"] = f["image_features"][()]
        out["image_token_features"] = f["image_token_features"][()]
        out["ids"] = f["ids"][()]
        out["labels"] = f["labels"][()]
        out["split"] = [s.decode("utf-8") if isinstance(s, bytes) else s for s in f["split"][()]]
        out["attrs"] = {k: (v.item() if hasattr(v, "item") else v) for k, v in f.attrs.items()}
        for tid, g in f["templates"].items():
            out["templates"][tid] = {
                "texts": [s.decode("utf-8") if isinstance(s, bytes) else s for s in g["texts"][()]],
                "text_features": g["text_features"][()],
                "text_token_features": g["text_token_features"][()] if "text_token_features" in g else None,
                "attrs": {k: (v.item() if hasattr(v, "item") else v) for k, v in g.attrs.items()},
            }
    return out


def split_rows(stored, split_name):
    """Store rows of one split ('all' = every row), as batch's --split selects them."""
    if split_name == "all":
        return np.arange(len(stored["ids"]))
    return np.array([i for i, s in enumerate(stored["split"]) if s == split_name], dtype=np.int64)


def _break_lengths(f):
    ds = f["labels"]
    ds.resize((ds.shape[0] - 1,))


def _break_ids(f):
    ids = f["ids"][()]
    ids[1] = 7
    f["ids"][:] = ids


def _break_split_counts(f):
    counts = json.loads(f.attrs["split_counts"])
    counts["train"] = counts.get("train", 0) + 1
    f.attrs["split_counts"] = json.dumps(counts)


def _break_torn_tail(f):
    # A reference writer killed after resizing all five datasets and writing only the
    # features of its last batch: ids stay 0 and split stays empty there.
    n = f["ids"].shape[0]
    for key in ("image_features", "image_token_features", "ids", "labels", "split"):
        f[key].resize(n + 3, axis=0)
    f["image_features"][n:] = 1


def _first_template(f):
    return f["templates"][sorted(f["templates"].keys())[0]]


def _break_template_k(f):
    g = _first_template(f)
    g.attrs["K"] = np.int64(g.attrs["K"] + 1)


def _break_template_t(f):
    g = _first_template(f)
    g.attrs["T_txt"] = np.int64(g.attrs["T_txt"] + 2)


def _break_texts_hash(f):
    _first_template(f).attrs["texts_hash"] = "0" * 64


def _break_stale_template(f):
    # What the reference leaves after a run with fewer concept templates: the prompt
    # attributes name one, the group of the second is still there.
    f.attrs["prompt_temp_for_concepts"] = json.dumps(json.loads(f.attrs["prompt_temp_for_concepts"])[:1])


def _break_stale_concepts(f):
    # ... and after a run with the concepts in another order: the groups hold the old rows.
    f.attrs["concept_texts"] = json.dumps(json.loads(f.attrs["concept_texts"])[::-1])


def _break_split_bytes(f):
    # A hand-made store whose last split name is not UTF-8 (bytes in an S8 dataset): the
    # counts in split_counts then cannot match; verify reports it (it used to exit 70).
    names = [s.decode() if isinstance(s, bytes) else s for s in f["split"][:]]
    del f["split"]
    data = [n.encode() for n in names[:-1]] + [b"v\xe4l"]
    f.create_dataset("split", data=np.array(data, dtype="S8"), maxshape=(None,))


def _break_templates_dataset(f):
    # /templates replaced by a dataset (a script that wrote over the group).
    del f["templates"]
    f["templates"] = np.arange(3)


BREAKAGES = {
    "lengths": _break_lengths,            # labels one row shorter than the others
    "ids": _break_ids,                    # ids not 0..N-1
    "split_counts": _break_split_counts,  # attribute disagrees with /split
    "torn_tail": _break_torn_tail,        # last rows grown but never completed
    "template_k": _break_template_k,      # K attribute != rows
    "template_t": _break_template_t,      # T_txt attribute != tokens
    "texts_hash": _break_texts_hash,      # hash does not match texts
    "stale_template": _break_stale_template,  # a template of an earlier prompt set
    "stale_concepts": _break_stale_concepts,  # templates of an earlier concept list
    "split_bytes": _break_split_bytes,    # a split name that is not UTF-8
    "templates_dataset": _break_templates_dataset,  # /templates is not a group
}


def break_store(path, kind):
    with h5py.File(path, "a") as f:
        BREAKAGES[kind](f)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    w = sub.add_parser("write", help="write a small reference store")
    w.add_argument("path")
    w.add_argument("--train", type=int, default=5)
    w.add_argument("--val", type=int, default=3)
    w.add_argument("--test", type=int, default=2)
    w.add_argument("--dim", type=int, default=8)
    w.add_argument("--tokens", type=int, default=4)
    w.add_argument("--concept-templates", type=int, default=2)
    w.add_argument("--label-templates", type=int, default=1)
    w.add_argument("--text-tokens", type=int, default=6, help="0: no token features")
    w.add_argument("--seed", type=int, default=0)
    w.add_argument("--break", dest="breakage", choices=sorted(BREAKAGES))
    args = parser.parse_args()
    write_reference_store(args.path, {"train": args.train, "val": args.val, "test": args.test},
                          D=args.dim, T=args.tokens, concept_templates=args.concept_templates,
                          label_templates=args.label_templates,
                          text_tokens=args.text_tokens or None, seed=args.seed)
    if args.breakage:
        break_store(args.path, args.breakage)


if __name__ == "__main__":
    main()
