#!/usr/bin/python3
"""scripts/make_test_model.py regenerates the shipped models/tiny.pt and models/tiny-spm.pt:
same config, same tokenizer file, same outputs (seeded weights), and the archive interface."""
import json
import os
import subprocess
import sys
import tempfile
import zipfile

import sentencepiece as spm
import torch

src = os.environ["FSTORE_SOURCE_DIR"]
script = os.path.join(src, "scripts", "make_test_model.py")


def extras(path):
    with zipfile.ZipFile(path) as z:
        names = z.namelist()
        prefix = names[0].split("/")[0]
        return {n[len(prefix) + len("/extra/"):]: z.read(n) for n in names if n.startswith(prefix + "/extra/")}


failures = []


def check(cond, what):
    print(("ok   " if cond else "FAIL ") + what)
    if not cond:
        failures.append(what)


with tempfile.TemporaryDirectory() as tmp:
    for preset in ("tiny", "tiny-spm"):
        fresh = os.path.join(tmp, preset + ".pt")
        subprocess.run([sys.executable, script, preset, fresh], check=True)
        shipped = os.path.join(src, "models", preset + ".pt")
        a, b = extras(fresh), extras(shipped)
        check(a == b, f"{preset}: config and tokenizer file equal the shipped ones")
        config = json.loads(a["fstore/config.json"])
        check(set(config) == {"format", "name", "embed_dim", "image_tokens", "image_size", "resample",
                              "image_mean", "image_std", "context_length", "tokenizer"},
              f"{preset}: exact config key set")
        check(config["tokenizer"]["file"] in a, f"{preset}: tokenizer file is in the archive")

        m_fresh, m_shipped = torch.jit.load(fresh), torch.jit.load(shipped)
        torch.manual_seed(7)
        s, d = config["image_size"], config["embed_dim"]
        x = torch.randn(2, 3, s, s)
        ids = torch.randint(5, 100, (2, 7))
        ids[1, 5:] = 0  # padding
        with torch.no_grad():
            ci, ti = m_fresh.encode_image(x)
            ci2, ti2 = m_shipped.encode_image(x)
            ct, tt = m_fresh.encode_text(ids)
            ct2, tt2 = m_shipped.encode_text(ids)
        check(ci.shape == (2, d) and ti.shape == (2, config["image_tokens"], d), f"{preset}: image shapes")
        check(ct.shape == (2, d) and tt.shape == (2, 7, d), f"{preset}: text shapes")
        check(torch.equal(ci, ci2) and torch.equal(ti, ti2) and torch.equal(ct, ct2) and torch.equal(tt, tt2),
              f"{preset}: regenerated weights give the shipped model's outputs")
        check(torch.allclose(ci.norm(dim=-1), torch.ones(2), atol=1e-5) and
              torch.allclose(ct.norm(dim=-1), torch.ones(2), atol=1e-5), f"{preset}: CLS L2-normalized")
        # The text CLS is a mean over non-pad positions: padding more must not change it.
        padded = torch.cat([ids, torch.zeros(2, 3, dtype=torch.int64)], dim=1)
        with torch.no_grad():
            ct3, _ = m_fresh.encode_text(padded)
        check(torch.allclose(ct, ct3, atol=1e-5), f"{preset}: text CLS ignores padding")
        for attr in ("logit_scale", "logit_bias", "concept_logit_scale", "concept_logit_bias"):
            check(getattr(m_fresh, attr).dim() == 0, f"{preset}: attribute {attr} is a 0-dim tensor")
        if preset == "tiny":
            vocab = a["fstore/vocab.txt"].decode().split("\n")
            check(vocab[:4] == ["[PAD]", "[UNK]", "[CLS]", "[SEP]"], "tiny: vocab specials, [CLS] id 2")
            check(all(w in vocab for w in ["erythroblast", "granules", "cytoplasm", "nucleus"]),
                  "tiny: vocab covers BloodMNIST words")
        else:
            sp = spm.SentencePieceProcessor(model_proto=a["fstore/spiece.model"])
            check(sp.pad_id() == config["tokenizer"]["pad_id"] == 0, "tiny-spm: pad id matches the config")
            check(sp.unk_id() not in sp.encode("a blood cell image indicating Pale cytoplasm"),
                  "tiny-spm: covers BloodMNIST prompts without unknown pieces")

sys.exit(1 if failures else 0)
