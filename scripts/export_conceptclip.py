#!/usr/bin/env python3
"""Exports ConceptCLIP (Hugging Face JerrryNie/ConceptCLIP) as an fstore model archive.

The archive (docs/model-format.md) is one TorchScript file with encode_image / encode_text
exactly as the reference pipeline used them (normalize=True; tokens through image_proj /
text_proj), the four logit scalars, fstore/config.json built from the HF processor, and the
tokenizer file. After saving, the archive is loaded back and compared with the HF model on a
few prompts and images; the max differences are printed.

Needs (not available in fstore's CI): torch, transformers, PIL, access to the model:
    pip install torch transformers pillow
    huggingface-cli login        # if the model requires it
    python3 scripts/export_conceptclip.py --out models/conceptclip.pt
Then: fstore model-info --model models/conceptclip.pt

Use a PyTorch no newer than the LibTorch fstore links (archives from newer versions may not
load in an older LibTorch). The functions below are driven by tests/model/
test_export_conceptclip.py with stand-in modules, since the real model cannot be fetched there.
"""
import argparse
import json
import os
import sys
from typing import Dict, List, Optional, Tuple

import torch
import torch.nn as nn

FORMAT = "fstore-clip/1"
CONFIG_KEYS = ("format", "name", "embed_dim", "image_tokens", "image_size", "resample",
               "image_mean", "image_std", "context_length", "tokenizer")
LOGIT_NAMES = ("logit_scale", "logit_bias", "concept_logit_scale", "concept_logit_bias")
PIL_RESAMPLE = {0: "nearest", 1: "lanczos", 2: "bilinear", 3: "bicubic", 4: "box", 5: "hamming"}
DEFAULT_PROMPTS = ["a microscopic image of a neutrophil cell", "a photo of a blood cell with Pale cytoplasm",
                   "a bloodcell of immature granulocytes", "chest X-ray"]


# ----------------------------------------------------------------------------- wrapping

def _first_two(out) -> Tuple[torch.Tensor, torch.Tensor]:
    """ConceptCLIP's encode_* return (pooled, tokens); accept a dict/ModelOutput too."""
    if isinstance(out, (tuple, list)):
        return out[0], out[1]
    values = list(out.values()) if hasattr(out, "values") else None
    if values and len(values) >= 2:
        return values[0], values[1]
    raise TypeError("encode_image/encode_text must return (cls, tokens); got " + type(out).__name__)


class ConceptClipArchive(nn.Module):
    """The archive interface around a ConceptCLIP model (reference-store.md, "ConceptCLIP facts"):
    CLS from encode_*(normalize=True), token features through image_proj / text_proj."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model
        for name in LOGIT_NAMES:
            value = getattr(model, name, None)
            if isinstance(value, torch.Tensor):
                # 0-dim copies as the model holds them (scales in log space).
                setattr(self, name, nn.Parameter(value.detach().reshape(()).clone().float(), requires_grad=False))

    def encode_image(self, pixel_values: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        cls, tokens = _first_two(self.model.encode_image(pixel_values, normalize=True))
        return cls, self.model.image_proj(tokens)

    def encode_text(self, input_ids: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        # The model rebuilds its attention mask from input_ids != pad_id.
        cls, tokens = _first_two(self.model.encode_text(input_ids, normalize=True))
        return cls, self.model.text_proj(tokens)

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        return self.encode_image(pixel_values)[0]


def to_torchscript(wrapper: nn.Module, pixels: torch.Tensor, ids: torch.Tensor) -> torch.jit.ScriptModule:
    """Traces both methods (HF remote code is rarely scriptable). Tracing records the ops of
    one call: the check in `compare` runs other lengths/batches to prove nothing got frozen."""
    wrapper = wrapper.eval()
    with torch.no_grad():
        return torch.jit.trace_module(wrapper, {"encode_image": (pixels,), "encode_text": (ids,)},
                                      check_trace=False)


# ----------------------------------------------------------------------------- config

def _get(obj, name, default=None):
    if isinstance(obj, dict):
        return obj.get(name, default)
    return getattr(obj, name, default)


def image_settings(image_processor) -> Dict:
    size = _get(image_processor, "size")
    if isinstance(size, dict):
        h, w = size.get("height", size.get("shortest_edge")), size.get("width", size.get("shortest_edge"))
    elif isinstance(size, (list, tuple)):
        h, w = size
    else:
        h = w = size
    if h is None or h != w:
        raise ValueError(f"the processor resizes to {size}: fstore expects a square size")
    resample = _get(image_processor, "resample", 3)
    resample = PIL_RESAMPLE.get(int(resample), str(resample)) if not isinstance(resample, str) else resample
    if resample != "bicubic":
        raise ValueError(f"the processor resamples with {resample}: fstore reproduces PIL bicubic only")
    if _get(image_processor, "do_center_crop", False):
        raise ValueError("the processor center-crops: fstore squash-resizes only (reference-store.md)")
    mean = [float(v) for v in _get(image_processor, "image_mean")]
    std = [float(v) for v in _get(image_processor, "image_std")]
    return {"image_size": int(h), "resample": resample, "image_mean": mean, "image_std": std}


def tokenizer_settings(tokenizer) -> Tuple[Dict, Dict[str, bytes]]:
    """("tokenizer" object of config.json, {archive file name: bytes})."""
    vocab_file = _get(tokenizer, "vocab_file")
    if vocab_file and str(vocab_file).endswith(".model"):
        with open(vocab_file, "rb") as f:
            data = f.read()
        pad_id = _get(tokenizer, "pad_token_id")
        config = {"type": "sentencepiece", "file": "fstore/spiece.model",
                  "lowercase": bool(_get(tokenizer, "do_lower_case", False)), "padding": "longest",
                  "add_bos": bool(_get(tokenizer, "add_bos_token", False)),
                  "add_eos": bool(_get(tokenizer, "add_eos_token", True)),
                  "pad_id": int(pad_id if pad_id is not None else 0)}
        return config, {config["file"]: data}
    vocab = tokenizer.get_vocab() if hasattr(tokenizer, "get_vocab") else _get(tokenizer, "vocab")
    if not vocab:
        raise ValueError("the processor's tokenizer has neither a vocab nor a SentencePiece model")
    ordered = sorted(vocab.items(), key=lambda kv: kv[1])
    if [i for _, i in ordered] != list(range(len(ordered))):
        raise ValueError("the WordPiece vocab ids are not 0..N-1: cannot write it as vocab.txt")
    basic = _get(tokenizer, "basic_tokenizer")
    lowercase = bool(_get(tokenizer, "do_lower_case", True))
    strip = _get(basic, "strip_accents") if basic is not None else None
    config = {"type": "wordpiece", "file": "fstore/vocab.txt", "lowercase": lowercase,
              # BERT: strip_accents None means "follow lowercase".
              "strip_accents": bool(lowercase if strip is None else strip), "padding": "longest",
              "cls_token": str(_get(tokenizer, "cls_token")), "sep_token": str(_get(tokenizer, "sep_token")),
              "pad_token": str(_get(tokenizer, "pad_token")), "unk_token": str(_get(tokenizer, "unk_token"))}
    data = ("\n".join(token for token, _ in ordered) + "\n").encode("utf-8")
    return config, {config["file"]: data}


def build_config(processor, name: str, embed_dim: int, image_tokens: int,
                 context_length: int) -> Tuple[Dict, Dict[str, bytes]]:
    """fstore/config.json (exact key set) and the tokenizer file, from the HF processor."""
    image = image_settings(_get(processor, "image_processor"))
    tok_config, files = tokenizer_settings(_get(processor, "tokenizer"))
    config = {"format": FORMAT, "name": name, "embed_dim": int(embed_dim), "image_tokens": int(image_tokens),
              "image_size": image["image_size"], "resample": image["resample"],
              "image_mean": image["image_mean"], "image_std": image["image_std"],
              "context_length": int(context_length), "tokenizer": tok_config}
    assert tuple(config) == CONFIG_KEYS
    return config, files


def save_archive(scripted, config: Dict, files: Dict[str, bytes], path: str) -> None:
    extra = {"fstore/config.json": json.dumps(config, indent=1).encode("utf-8")}
    extra.update(files)
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    torch.jit.save(scripted, path, _extra_files=extra)


def probe_shapes(wrapper: nn.Module, image_size: int, ids: torch.Tensor) -> Tuple[int, int]:
    """(embed_dim, image_tokens) from one forward."""
    with torch.no_grad():
        cls, tokens = wrapper.encode_image(torch.zeros(1, 3, image_size, image_size))
        tcls, _ = wrapper.encode_text(ids)
    if tcls.shape[-1] != cls.shape[-1]:
        raise ValueError(f"image CLS width {cls.shape[-1]} != text CLS width {tcls.shape[-1]}")
    return int(cls.shape[-1]), int(tokens.shape[1])


def compare(archive_path: str, reference: nn.Module, batches: List[Tuple[torch.Tensor, torch.Tensor]]) -> float:
    """Max |archive - reference| over the CLS and token outputs of every (pixels, ids) batch."""
    archive = torch.jit.load(archive_path)
    worst = 0.0
    with torch.no_grad():
        for pixels, ids in batches:
            for got, want in ((archive.encode_image(pixels), reference.encode_image(pixels)),
                              (archive.encode_text(ids), reference.encode_text(ids))):
                for g, w in zip(got, want):
                    if g.shape != w.shape:
                        raise ValueError(f"archive output shape {tuple(g.shape)} != model's {tuple(w.shape)}")
                    worst = max(worst, float((g.float() - w.float()).abs().max()))
    return worst


def tokenize(processor, texts: List[str], context_length: int) -> torch.Tensor:
    return _get(processor, "tokenizer")(texts, padding="longest", truncation=True, max_length=context_length,
                                        return_tensors="pt")["input_ids"]


# ----------------------------------------------------------------------------- main

def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model-id", default="JerrryNie/ConceptCLIP")
    parser.add_argument("--out", default="models/conceptclip.pt")
    parser.add_argument("--name", default="ConceptCLIP")
    parser.add_argument("--context-length", type=int, default=77)
    parser.add_argument("--image", action="append", default=[], help="image file(s) for the check")
    parser.add_argument("--tolerance", type=float, default=1e-4)
    args = parser.parse_args(argv)

    from PIL import Image
    from transformers import AutoModel, AutoProcessor

    model = AutoModel.from_pretrained(args.model_id, trust_remote_code=True).eval().float()
    processor = AutoProcessor.from_pretrained(args.model_id, trust_remote_code=True)
    wrapper = ConceptClipArchive(model).eval()

    ids = tokenize(processor, DEFAULT_PROMPTS[:2], args.context_length)
    image_size = image_settings(processor.image_processor)["image_size"]
    embed_dim, image_tokens = probe_shapes(wrapper, image_size, ids)
    config, files = build_config(processor, args.name, embed_dim, image_tokens, args.context_length)

    example = torch.rand(2, 3, image_size, image_size) * 2 - 1
    save_archive(to_torchscript(wrapper, example, ids), config, files, args.out)

    images = [Image.open(p).convert("RGB") for p in args.image] or [
        Image.fromarray((torch.rand(96, 80, 3) * 255).to(torch.uint8).numpy())]
    pixels = processor(images=images, return_tensors="pt")["pixel_values"]
    batches = [(pixels, tokenize(processor, DEFAULT_PROMPTS, args.context_length)),
               (pixels[:1], tokenize(processor, DEFAULT_PROMPTS[3:], args.context_length))]
    diff = compare(args.out, wrapper, batches)
    print(f"wrote {args.out}: D={embed_dim}, T_img={image_tokens}, S={image_size}, "
          f"tokenizer={config['tokenizer']['type']}; max |archive - HF model| = {diff:.3g}")
    if diff > args.tolerance:
        print(f"error: difference above --tolerance {args.tolerance}: the traced archive does not match",
              file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
