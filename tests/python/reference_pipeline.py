#!/usr/bin/python3
"""The reference writer, in Python: what the original feature_store_main does, as
docs/reference-store.md ("Writer behaviour") states it, with h5py + torch.jit + PIL.

fstore's end-to-end parity test runs the same model archive and data through this script
and through `fstore build` and compares the stores row by row; the benchmarks time it as
the baseline. It follows the reference faithfully, flaws included: `split_counts` is
written only after the whole image stage, so a run killed mid-way re-appends duplicates.

    /usr/bin/python3 tests/python/reference_pipeline.py --model models/tiny.pt \\
        --h5 ref.h5 --data-root DIR --size 28 [--run-text] [--run-image] [--prompts P.json]
        [--splits train,val,test] [--batch-size 64] [--limit N] [--no-resume] [--threads N]
        [--device cpu|cuda] [--precision fp32|fp16|bf16] [--json]

Pieces it shares with the other reference helpers (tests/python/fstore_ref): the store
schema (store.py), tokenizers (tokenize.py), preprocessing (preprocess.py), prompts
(prompts.py). Only the model archive's own TorchScript code computes features.
"""
import argparse
import json
import os
import sys
import time

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from fstore_ref import preprocess as ref_preprocess  # noqa: E402
from fstore_ref import prompts as ref_prompts  # noqa: E402
from fstore_ref import store as ref_store  # noqa: E402
from fstore_ref import tokenize as ref_tokenize  # noqa: E402

SPLITS = ("train", "val", "test")


DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}


def load_archive(path, device="cpu", precision="fp32"):
    """torch.jit.load + fstore/config.json + the tokenizer file it names (extra files of
    the archive, read from its zip directory so the model is loaded once)."""
    import zipfile
    with zipfile.ZipFile(path) as z:
        extra = {n.split("/extra/", 1)[1]: n for n in z.namelist() if "/extra/" in n}
        config = json.loads(z.read(extra["fstore/config.json"]).decode("utf-8"))
        tok_bytes = z.read(extra[config["tokenizer"]["file"]])
    model = torch.jit.load(path, map_location=device)
    model.eval()
    if precision != "fp32":
        model.to(DTYPES[precision])
    return model, config, tok_bytes


def load_prompts(path):
    if not path:
        return ref_prompts.bloodmnist_prompts()
    with open(path, encoding="utf-8") as f:
        data = json.load(f)
    return {k: list(data[k]) for k in ("label_texts", "label_templates", "concept_texts", "concept_templates")}


def logit_scalars(model):
    out = {}
    for name in ("logit_scale", "logit_bias", "concept_logit_scale", "concept_logit_bias"):
        if hasattr(model, name):
            out[name] = float(getattr(model, name))
    return out


def text_stage(f, model, config, tok_bytes, prompts, args):
    tokenizer = ref_tokenize.from_config(config["tokenizer"], tok_bytes, config["context_length"])
    written = []
    for template_id, texts in ref_prompts.expand(prompts):
        ids, _ = tokenizer.encode_batch(texts)
        with torch.no_grad():
            cls, tokens = model.encode_text(torch.tensor(ids, dtype=torch.int64, device=args.device))
        ref_store.write_template(f, template_id, texts, cls.float().cpu().numpy(), tokens.float().cpu().numpy())
        written.append((template_id, len(texts)))
    for name, value in ref_prompts.prompt_attributes(prompts).items():
        f.attrs[name] = value
    for name, value in logit_scalars(model).items():
        f.attrs[name] = np.float64(value)
    return written


def image_stage(f, model, config, args):
    """Splits in order, shuffle=False, batches; resume from the split_counts attribute."""
    counts = json.loads(f.attrs.get("split_counts", "{}")) if args.resume else {}
    name = ref_store_file_name(args.dataset, args.size)
    data = np.load(os.path.join(args.data_root, name))
    size, mean, std = config["image_size"], config["image_mean"], config["image_std"]
    appended = {}
    for split in args.splits:
        images, labels = data[f"{split}_images"], data[f"{split}_labels"]
        n = len(images) if args.limit < 0 else min(args.limit, len(images))
        start = int(counts.get(split, 0))
        new = 0
        for b0 in range(start, n, args.batch_size):
            b1 = min(b0 + args.batch_size, n)
            pixels = np.stack([ref_preprocess.preprocess(images[i], size, mean, std, config["resample"])
                               for i in range(b0, b1)])
            with torch.no_grad():
                x = torch.from_numpy(pixels).to(args.device, DTYPES[args.precision])
                cls, tokens = model.encode_image(x)
            lab = labels[b0:b1, 0].astype(np.int64) if labels.ndim == 2 else labels[b0:b1].astype(np.int64)
            ref_store.append_rows(f, cls.float().cpu().numpy(), tokens.float().cpu().numpy(), lab, split)
            new += b1 - b0
        appended[split] = new
        counts[split] = start + new
    # The reference's flaw, kept on purpose: progress is recorded only here, at the end.
    f.attrs["split_counts"] = json.dumps(counts)
    return appended


def ref_store_file_name(name, size):
    return f"{name}.npz" if size == 28 else f"{name}_{size}.npz"


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--run-text", action="store_true")
    ap.add_argument("--run-image", action="store_true")
    ap.add_argument("--h5", "--output-path", dest="h5", default="./conceptclip_features.h5")
    ap.add_argument("--model", default="models/conceptclip.pt")
    ap.add_argument("--dataset", default="bloodmnist")
    ap.add_argument("--size", "--image-size", dest="size", type=int, default=224)
    ap.add_argument("--data-root", default=os.path.expanduser("~/.medmnist"))
    ap.add_argument("--prompts")
    ap.add_argument("--splits", default="train,val,test")
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--limit", type=int, default=-1)
    ap.add_argument("--no-resume", dest="resume", action="store_false")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--device", default="cpu", help="torch device: cpu, cuda, cuda:N")
    ap.add_argument("--precision", choices=sorted(DTYPES), default="fp32")
    ap.add_argument("--json", action="store_true",
                    help="end with one JSON line: images_per_second of the image stage (benchmarks)")
    args = ap.parse_args(argv)
    args.splits = [s for s in args.splits.split(",") if s]
    if not args.run_text and not args.run_image:
        args.run_text = args.run_image = True
    torch.set_num_threads(max(1, args.threads))

    started = time.time()
    model, config, tok_bytes = load_archive(args.model, args.device, args.precision)
    f = ref_store.open_store(args.h5, D=config["embed_dim"], T_img=config["image_tokens"])
    try:
        f.attrs["dataset"] = json.dumps(args.dataset)
        templates, appended = [], {}
        if args.run_text:
            templates = text_stage(f, model, config, tok_bytes, load_prompts(args.prompts), args)
        image_seconds = 0.0
        if args.run_image:
            image_started = time.time()
            appended = image_stage(f, model, config, args)
            image_seconds = time.time() - image_started
    finally:
        f.close()
    for template_id, k in templates:
        print(f"stored template {template_id}: {k} texts")
    for split, n in appended.items():
        print(f"appended {n} samples to split {split}")
    total = sum(appended.values())
    print(f"total new samples: {total} in {time.time() - started:.2f} s")
    if args.json:
        print(json.dumps({"total_new": total, "image_seconds": image_seconds,
                          "images_per_second": total / image_seconds if image_seconds > 0 else 0.0}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
