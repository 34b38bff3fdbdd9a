#!/usr/bin/python3
"""scripts/export_conceptclip.py without transformers: its wrapping, tracing, config building
and archive check run against a stand-in ConceptCLIP (random towers from make_test_model.py)
and a stand-in HF processor; the exported archive must then load in fstore (C++)."""
import json
import os
import py_compile
import subprocess
import sys
import tempfile
from types import SimpleNamespace

import torch
import torch.nn as nn
import torch.nn.functional as F

src = os.environ["FSTORE_SOURCE_DIR"]
sys.path.insert(0, os.path.join(src, "scripts"))
# Compiled into a temporary file: py_compile writes scripts/__pycache__ by default, which a
# read-only checkout refuses (and PYTHONDONTWRITEBYTECODE does not stop).
with tempfile.TemporaryDirectory(prefix="fstore-pyc-") as pyc_dir:
    py_compile.compile(os.path.join(src, "scripts", "export_conceptclip.py"),
                       cfile=os.path.join(pyc_dir, "export_conceptclip.pyc"), doraise=True)
import export_conceptclip as ex  # noqa: E402
import make_test_model as mtm  # noqa: E402

failures = []


def check(cond, what):
    print(("ok   " if cond else "FAIL ") + what)
    if not cond:
        failures.append(what)


class FakeConceptCLIP(nn.Module):
    """The HF model's surface the exporter uses: encode_image/encode_text(normalize=...)
    returning (pooled, unprojected tokens), image_proj, text_proj and the logit parameters."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(3)
        self.visual = mtm.VisionTower(32, 8, 24, 1, 4, 48)
        self.text = mtm.TextTower(200, 40, 16, 1, 4, 32)
        self.text_pool = nn.Linear(16, 24, bias=False)
        self.image_proj = mtm.mlp_proj(24, 24)
        self.text_proj = mtm.mlp_proj(16, 24)
        self.logit_scale = nn.Parameter(torch.tensor(2.5))
        self.logit_bias = nn.Parameter(torch.tensor(-10.0))
        self.concept_logit_scale = nn.Parameter(torch.tensor(2.0))
        self.concept_logit_bias = nn.Parameter(torch.tensor(-9.0))

    def encode_image(self, pixel_values, normalize=False):
        pooled, tokens = self.visual(pixel_values)
        return (F.normalize(pooled, dim=-1) if normalize else pooled), tokens

    def encode_text(self, input_ids, normalize=False):
        mask = input_ids != 0
        hidden = self.text(input_ids, mask)
        m = mask.unsqueeze(-1).float()
        pooled = self.text_pool((hidden * m).sum(1) / m.sum(1))
        return (F.normalize(pooled, dim=-1) if normalize else pooled), hidden


class FakeBertTokenizer:
    def __init__(self):
        self.vocab = {t: i for i, t in enumerate(["[PAD]", "[UNK]", "[CLS]", "[SEP]"] +
                                                    [f"w{i}" for i in range(196)])}
        self.do_lower_case = True
        self.basic_tokenizer = SimpleNamespace(strip_accents=None)
        self.cls_token, self.sep_token, self.pad_token, self.unk_token = "[CLS]", "[SEP]", "[PAD]", "[UNK]"
        self.vocab_file = "/nonexistent/vocab.txt"

    def get_vocab(self):
        return dict(self.vocab)

    def __call__(self, texts, padding, truncation, max_length, return_tensors):
        rows = [[2] + [4 + (sum(map(ord, w)) % 190) for w in t.lower().split()][: max_length - 2] + [3]
                for t in texts]
        n = max(map(len, rows))
        return {"input_ids": torch.tensor([r + [0] * (n - len(r)) for r in rows])}


processor = SimpleNamespace(
    image_processor=SimpleNamespace(size={"height": 32, "width": 32}, resample=3, image_mean=[0.5, 0.5, 0.5],
                                    image_std=[0.5, 0.5, 0.5], do_center_crop=False),
    tokenizer=FakeBertTokenizer())

model = FakeConceptCLIP().eval()
wrapper = ex.ConceptClipArchive(model).eval()
ids = ex.tokenize(processor, ["a blood cell", "x"], 40)
embed_dim, image_tokens = ex.probe_shapes(wrapper, 32, ids)
check((embed_dim, image_tokens) == (24, 16), f"probe shapes (D, T_img) = {(embed_dim, image_tokens)}")

config, files = ex.build_config(processor, "FakeCLIP", embed_dim, image_tokens, 40)
check(list(config) == list(ex.CONFIG_KEYS), "config has exactly the contract's keys, in order")
check(config["image_size"] == 32 and config["resample"] == "bicubic" and config["image_std"] == [0.5] * 3,
      "image settings from the processor")
tok = config["tokenizer"]
check(tok == {"type": "wordpiece", "file": "fstore/vocab.txt", "lowercase": True, "strip_accents": True,
              "padding": "longest", "cls_token": "[CLS]", "sep_token": "[SEP]", "pad_token": "[PAD]",
              "unk_token": "[UNK]"}, "wordpiece tokenizer object")
vocab_lines = files["fstore/vocab.txt"].decode().split("\n")
check(vocab_lines[2] == "[CLS]" and vocab_lines[199] == "w195" and len(vocab_lines) == 201,
      "vocab.txt written in id order")

with tempfile.TemporaryDirectory() as tmp:
    path = os.path.join(tmp, "fake.pt")
    example = torch.rand(2, 3, 32, 32) * 2 - 1
    ex.save_archive(ex.to_torchscript(wrapper, example, ids), config, files, path)
    # Other batch sizes and text lengths than the traced ones: tracing must not freeze shapes.
    batches = [(torch.randn(3, 3, 32, 32), ex.tokenize(processor, ["a b c d e f", "g", "h i"], 40)),
               (torch.randn(1, 3, 32, 32), ex.tokenize(processor, ["one two three four five six seven"], 40))]
    diff = ex.compare(path, wrapper, batches)
    check(diff < 1e-5, f"archive matches the wrapped model (max diff {diff:.2g})")
    archive = torch.jit.load(path)
    with torch.no_grad():
        cls, tokens = archive.encode_image(batches[0][0])
        want = model.image_proj(model.encode_image(batches[0][0])[1])
    check(torch.allclose(tokens, want, atol=1e-5), "image tokens went through image_proj")
    check(torch.allclose(cls.norm(dim=-1), torch.ones(3), atol=1e-5), "image CLS normalized")
    check(abs(float(archive.logit_scale) - 2.5) < 1e-6 and abs(float(archive.concept_logit_bias) + 9) < 1e-6,
          "logit scalars carried as attributes")

    # A wrong archive must be caught by compare().
    other = ex.ConceptClipArchive(FakeConceptCLIP()).eval()
    with torch.no_grad():
        for p in other.model.image_proj.parameters():
            p.add_(0.1)
    check(ex.compare(path, other, batches[:1]) > 1e-3, "compare() detects a mismatching model")

    fstore = os.path.join(os.environ.get("FSTORE_BINARY_DIR", ""), "apps", "fstore")
    if os.path.exists(fstore):
        r = subprocess.run([fstore, "model-info", "--model", path, "--json", "--device", "cpu"],
                           capture_output=True, text=True)
        check(r.returncode == 0, "fstore model-info loads the exported archive: " + r.stderr.strip())
        if r.returncode == 0:
            info = json.loads(r.stdout)
            check(info["embed_dim"] == 24 and abs(info["concept_logit_scale"] - 2.0) < 1e-6,
                  "fstore reads the exported config and scalars")

# Processor settings fstore cannot reproduce are refused.
for bad, what in ((dict(do_center_crop=True), "center crop"), (dict(resample=2), "bilinear"),
                  (dict(size={"height": 32, "width": 48}), "non-square size")):
    ip = SimpleNamespace(**{**vars(processor.image_processor), **bad})
    try:
        ex.image_settings(ip)
        check(False, f"refuses {what}")
    except ValueError:
        check(True, f"refuses {what}")

# SentencePiece tokenizers: the model file is embedded as-is.
with tempfile.TemporaryDirectory() as tmp:
    spm_path = os.path.join(tmp, "spiece.model")
    with open(spm_path, "wb") as f:
        f.write(mtm.sentencepiece_model())
    sp_tok = SimpleNamespace(vocab_file=spm_path, pad_token_id=0, do_lower_case=False, add_eos_token=True)
    cfg, fl = ex.tokenizer_settings(sp_tok)
    check(cfg["type"] == "sentencepiece" and cfg["pad_id"] == 0 and cfg["add_eos"] is True and
          set(cfg) == {"type", "file", "lowercase", "padding", "add_bos", "add_eos", "pad_id"},
          "sentencepiece tokenizer object")
    check(fl["fstore/spiece.model"] == open(spm_path, "rb").read(), "spiece.model embedded unchanged")

sys.exit(1 if failures else 0)
