#!/usr/bin/python3
"""Writes random-weight (seeded) TorchScript models with exactly fstore's archive interface.

The archive contract is docs/model-format.md: methods encode_image / encode_text, the four
logit attributes, and the extra files fstore/config.json + a tokenizer file. These models
let fstore build, test and benchmark without ConceptCLIP's weights (see models/README.md).

Presets:
  tiny        32x32 images, patch 8 -> 16 tokens, D=32, 2 layers, WordPiece vocab (ms to run)
  tiny-spm    the same with a SentencePiece tokenizer (trained here, deterministically)
  wide-cheap  ConceptCLIP's output shapes (384 px, 729x1152 tokens) from a near-zero-cost
              encoder: for benchmarking the writer, not the model
  so400m      SigLIP So400m/14@384 + BERT-base text tower with random weights (~2 GB):
              ConceptCLIP's real compute cost, for benchmarks; generate on demand

Usage: /usr/bin/python3 scripts/make_test_model.py PRESET OUT.pt [--seed N]
Run with Debian's /usr/bin/python3 (torch 1.13, sentencepiece).
"""
import argparse
import io
import json
import math
import os
import re
import sys
from typing import Dict, List, Tuple

import torch
import torch.nn as nn
import torch.nn.functional as F

FORMAT = "fstore-clip/1"

# BloodMNIST vocabulary (reference-store.md): the tokenizer files cover these prompts.
LABELS = ["basophil", "eosinophil", "erythroblast", "immature granulocytes", "lymphocyte",
          "monocyte", "neutrophil", "platelet"]
CONCEPTS = ["Segmented nucleus", "Band nucleus (band form)", "Reniform / indented nucleus",
            "Round nucleus", "Fine azurophilic granules", "Eosinophilic granules",
            "Basophilic granules", "Basophilic cytoplasm", "Cytoplasmic vacuoles",
            "High nuclear-to-cytoplasmic ratio", "Pale cytoplasm",
            "Nucleated erythrocyte (erythroblast)", "Platelet fragments / clumps",
            "Stain precipitate (artifact)", "Overlapping cell clumps (artifact)"]
CONCEPT_TEMPLATES = ["a cell photo with sign of {}", "a photo of a cell with {}",
                     "a cell image indicating {}", "an image of a cell showing {}",
                     "blood cell with {}", "a blood cell photo with sign of {}",
                     "a photo of a blood cell with {}", "a blood cell image indicating {}",
                     "an image of blood cell showing {}"]
LABEL_TEMPLATES = ["a microscopic image of a {} cell", "a peripheral blood smear image of a {}",
                   "a bloodcell of {}"]


def bloodmnist_prompts() -> List[str]:
    texts = [t.format(c) for t in CONCEPT_TEMPLATES for c in CONCEPTS]
    texts += [t.format(label) for t in LABEL_TEMPLATES for label in LABELS]
    return texts


# ----------------------------------------------------------------------------- towers

class Block(nn.Module):
    """Pre-LN transformer block with plain-matmul attention (same ops in Python and C++)."""

    def __init__(self, width: int, heads: int, mlp: int):
        super().__init__()
        self.heads = heads
        self.ln1 = nn.LayerNorm(width)
        self.qkv = nn.Linear(width, 3 * width)
        self.out = nn.Linear(width, width)
        self.ln2 = nn.LayerNorm(width)
        self.fc1 = nn.Linear(width, mlp)
        self.fc2 = nn.Linear(mlp, width)

    def attend(self, x: torch.Tensor, key_mask: torch.Tensor) -> torch.Tensor:
        b, n, w = x.shape
        h = self.heads
        q, k, v = self.qkv(x).reshape(b, n, 3, h, w // h).permute(2, 0, 3, 1, 4).unbind(0)
        scores = (q @ k.transpose(-2, -1)) * (1.0 / math.sqrt(w // h))
        # key_mask [B,N] True = attend; masked keys get a large negative score.
        scores = scores.masked_fill(~key_mask[:, None, None, :], -1e4)
        y = scores.softmax(dim=-1) @ v
        return self.out(y.transpose(1, 2).reshape(b, n, w))

    def forward(self, x: torch.Tensor, key_mask: torch.Tensor) -> torch.Tensor:
        x = x + self.attend(self.ln1(x), key_mask)
        return x + self.fc2(F.gelu(self.fc1(self.ln2(x))))


class FusedVisionBlock(Block):
    """Block whose attention is PyTorch's fused scaled_dot_product_attention (2.0 and later),
    as timm's SigLIP towers run it. For vision only: image tokens have no padding, so the
    (all-true) key mask is not applied."""

    def attend(self, x: torch.Tensor, key_mask: torch.Tensor) -> torch.Tensor:
        b, n, w = x.shape
        h = self.heads
        q, k, v = self.qkv(x).reshape(b, n, 3, h, w // h).permute(2, 0, 3, 1, 4).unbind(0)
        y = F.scaled_dot_product_attention(q, k, v)
        return self.out(y.transpose(1, 2).reshape(b, n, w))


class AttentionPool(nn.Module):
    """SigLIP's "map" head: one learned query attends over the patch tokens."""

    def __init__(self, width: int, heads: int, mlp: int):
        super().__init__()
        self.heads = heads
        self.probe = nn.Parameter(torch.randn(1, 1, width) * 0.02)
        self.q = nn.Linear(width, width)
        self.kv = nn.Linear(width, 2 * width)
        self.out = nn.Linear(width, width)
        self.ln = nn.LayerNorm(width)
        self.fc1 = nn.Linear(width, mlp)
        self.fc2 = nn.Linear(mlp, width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, w = x.shape
        h = self.heads
        q = self.q(self.probe.expand(b, 1, w)).reshape(b, 1, h, w // h).transpose(1, 2)
        k, v = self.kv(x).reshape(b, n, 2, h, w // h).permute(2, 0, 3, 1, 4).unbind(0)
        a = ((q @ k.transpose(-2, -1)) * (1.0 / math.sqrt(w // h))).softmax(dim=-1)
        y = self.out((a @ v).transpose(1, 2).reshape(b, 1, w))
        y = y + self.fc2(F.gelu(self.fc1(self.ln(y))))
        return y[:, 0]


class VisionTower(nn.Module):
    """ViT without class token + attention-pool head, like timm's SigLIP towers."""

    def __init__(self, image_size: int, patch: int, width: int, depth: int, heads: int, mlp: int,
                 fused: bool = False):
        super().__init__()
        self.patch_embed = nn.Conv2d(3, width, kernel_size=patch, stride=patch)
        grid = image_size // patch
        self.pos = nn.Parameter(torch.randn(1, grid * grid, width) * 0.02)
        block = FusedVisionBlock if fused else Block
        self.blocks = nn.ModuleList([block(width, heads, mlp) for _ in range(depth)])
        self.norm = nn.LayerNorm(width)
        self.head = AttentionPool(width, heads, mlp)

    def forward(self, pixels: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        x = self.patch_embed(pixels).flatten(2).transpose(1, 2) + self.pos
        mask = torch.ones(x.shape[0], x.shape[1], dtype=torch.bool, device=x.device)
        for block in self.blocks:
            x = block(x, mask)
        x = self.norm(x)
        return self.head(x), x


class TextTower(nn.Module):
    """BERT-like encoder: token + position embeddings, blocks, padding mask from the ids."""

    def __init__(self, vocab: int, context: int, width: int, depth: int, heads: int, mlp: int):
        super().__init__()
        self.tok = nn.Embedding(vocab, width)
        self.pos = nn.Parameter(torch.randn(1, context, width) * 0.02)
        self.ln = nn.LayerNorm(width)
        self.blocks = nn.ModuleList([Block(width, heads, mlp) for _ in range(depth)])

    def forward(self, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        x = self.ln(self.tok(ids) + self.pos[:, : ids.shape[1]])
        for block in self.blocks:
            x = block(x, mask)
        return x


def mlp_proj(inp: int, dim: int) -> nn.Module:
    # ConceptCLIP's image_proj / text_proj: Linear, GELU, Linear, no biases.
    return nn.Sequential(nn.Linear(inp, dim, bias=False), nn.GELU(), nn.Linear(dim, dim, bias=False))


class ClipArchive(nn.Module):
    """The archive interface of docs/model-format.md over a vision and a text tower."""

    def __init__(self, vision: nn.Module, text: nn.Module, vision_width: int, text_width: int,
                 dim: int, pad_id: int):
        super().__init__()
        self.pad_id = pad_id
        self.vision = vision
        self.text = text
        self.image_proj = mlp_proj(vision_width, dim)
        self.text_pool_proj = nn.Linear(text_width, dim, bias=False)
        self.text_proj = mlp_proj(text_width, dim)
        # As ConceptCLIP holds them: scales in log space, biases raw (initialised at -10).
        self.logit_scale = nn.Parameter(torch.tensor(math.log(10.0)))
        self.logit_bias = nn.Parameter(torch.tensor(-10.0))
        self.concept_logit_scale = nn.Parameter(torch.tensor(math.log(10.0)))
        self.concept_logit_bias = nn.Parameter(torch.tensor(-10.0))

    @torch.jit.export
    def encode_image(self, pixel_values: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        pooled, tokens = self.vision(pixel_values)
        return F.normalize(pooled, dim=-1), self.image_proj(tokens)

    @torch.jit.export
    def encode_text(self, input_ids: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        mask = input_ids != self.pad_id
        hidden = self.text(input_ids, mask)
        m = mask.unsqueeze(-1).to(hidden.dtype)
        pooled = (hidden * m).sum(dim=1) / m.sum(dim=1).clamp(min=1.0)
        return F.normalize(self.text_pool_proj(pooled), dim=-1), self.text_proj(hidden)

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        return self.encode_image(pixel_values)[0]


class CheapVision(nn.Module):
    """Real output shapes at near-zero cost: 2x2 average of each patch -> one small linear,
    plus a fixed random per-token offset so the features look like real (incompressible) ones."""

    def __init__(self, image_size: int, patch: int, dim: int):
        super().__init__()
        self.grid = image_size // patch
        self.patch = patch
        self.lin = nn.Linear(12, dim)
        self.pos = nn.Parameter(torch.randn(1, self.grid * self.grid, dim))

    def forward(self, pixels: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        x = F.adaptive_avg_pool2d(pixels, (self.grid * 2, self.grid * 2))  # [B,3,2g,2g]
        b = x.shape[0]
        x = x.reshape(b, 3, self.grid, 2, self.grid, 2).permute(0, 2, 4, 1, 3, 5)
        x = x.reshape(b, self.grid * self.grid, 12)
        tokens = self.lin(x) + self.pos
        return tokens.mean(dim=1), tokens


class CheapArchive(ClipArchive):
    """wide-cheap: the image tokens skip image_proj (1152x1152 matmuls would dominate)."""

    @torch.jit.export
    def encode_image(self, pixel_values: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        pooled, tokens = self.vision(pixel_values)
        return F.normalize(pooled, dim=-1), tokens


# ----------------------------------------------------------------------------- tokenizers

SPECIALS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]  # [CLS] id 2 as in PubMedBERT


def wordpiece_vocab(size: int = 0) -> List[str]:
    """A BERT-style uncased vocab covering the BloodMNIST prompts: specials, every prompt word,
    single characters and ## continuations (so any lowercase ASCII text tokenizes), then
    [unusedN] filler up to `size`."""
    vocab = list(SPECIALS)
    chars = [chr(c) for c in range(33, 127) if not chr(c).isupper()]
    vocab += chars
    vocab += ["##" + c for c in chars if c.isalnum()]
    words = []
    for text in bloodmnist_prompts():
        for w in re.findall(r"[a-z0-9]+|[^a-z0-9\s]", text.lower()):
            if w not in words and w not in vocab:
                words.append(w)
    vocab += words
    i = 0
    while len(vocab) < size:
        vocab.append(f"[unused{i}]")
        i += 1
    return vocab


def sentencepiece_model(vocab_size: int = 120) -> bytes:
    import sentencepiece as spm
    model = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(bloodmnist_prompts() * 4), model_writer=model,
        vocab_size=vocab_size, model_type="unigram", character_coverage=1.0,
        pad_id=0, eos_id=1, unk_id=2, bos_id=-1, num_threads=1, seed_sentencepiece_size=10000,
        shuffle_input_sentence=False, minloglevel=2)
    return model.getvalue()


def wordpiece_tokenizer_config() -> Dict:
    return {"type": "wordpiece", "file": "fstore/vocab.txt", "lowercase": True,
            "strip_accents": True, "padding": "longest", "cls_token": "[CLS]",
            "sep_token": "[SEP]", "pad_token": "[PAD]", "unk_token": "[UNK]"}


def sentencepiece_tokenizer_config(pad_id: int) -> Dict:
    return {"type": "sentencepiece", "file": "fstore/spiece.model", "lowercase": False,
            "padding": "max_length", "add_bos": False, "add_eos": True, "pad_id": pad_id}


def archive_config(name: str, dim: int, tokens: int, image_size: int, context: int,
                   tokenizer: Dict, mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5)) -> Dict:
    """fstore/config.json: exactly the key set of docs/model-format.md."""
    return {"format": FORMAT, "name": name, "embed_dim": dim, "image_tokens": tokens,
            "image_size": image_size, "resample": "bicubic", "image_mean": list(mean),
            "image_std": list(std), "context_length": context, "tokenizer": tokenizer}


# ----------------------------------------------------------------------------- presets

def build(preset: str, seed: int = 0) -> Tuple[nn.Module, Dict, Dict[str, bytes]]:
    """Returns (eager module, config dict, tokenizer files {archive name: bytes})."""
    torch.manual_seed(seed)
    if preset in ("tiny", "tiny-spm"):
        size, patch, vw, tw, dim, depth, heads, context = 32, 8, 32, 48, 32, 2, 4, 32
        if preset == "tiny":
            vocab = wordpiece_vocab()
            files = {"fstore/vocab.txt": ("\n".join(vocab) + "\n").encode()}
            tok, pad, n_vocab = wordpiece_tokenizer_config(), 0, len(vocab)
        else:
            files = {"fstore/spiece.model": sentencepiece_model()}
            tok, pad, n_vocab = sentencepiece_tokenizer_config(0), 0, 120
        vision = VisionTower(size, patch, vw, depth, heads, 2 * vw)
        text = TextTower(n_vocab, context, tw, depth, heads, 2 * tw)
        module = ClipArchive(vision, text, vw, tw, dim, pad)
        tokens = (size // patch) ** 2
        name = "fstore-test-" + preset
    elif preset == "wide-cheap":
        size, patch, dim, tw, context = 384, 14, 1152, 32, 77
        vocab = wordpiece_vocab()
        files = {"fstore/vocab.txt": ("\n".join(vocab) + "\n").encode()}
        text = TextTower(len(vocab), context, tw, 1, 4, 2 * tw)
        module = CheapArchive(CheapVision(size, patch, dim), text, dim, tw, dim, 0)
        tok, tokens, name = wordpiece_tokenizer_config(), (size // patch) ** 2, "fstore-test-wide-cheap"
    elif preset == "so400m":
        size, patch, dim, context = 384, 14, 1152, 77
        vocab = wordpiece_vocab(30522)
        files = {"fstore/vocab.txt": ("\n".join(vocab) + "\n").encode()}
        # Fused attention where this PyTorch has it (2.0+), like the real tower: it decides
        # what a GPU spends on the 729x729 attention maps.
        fused = hasattr(F, "scaled_dot_product_attention")
        vision = VisionTower(size, patch, 1152, 27, 16, 4304, fused=fused)
        text = TextTower(len(vocab), context, 768, 12, 12, 3072)
        module = ClipArchive(vision, text, 1152, 768, dim, 0)
        tok, tokens, name = wordpiece_tokenizer_config(), (size // patch) ** 2, "fstore-test-so400m"
    else:
        raise SystemExit(f"unknown preset '{preset}': use tiny, tiny-spm, wide-cheap or so400m")
    config = archive_config(name, dim, tokens, size, context, tok)
    return module.eval(), config, files


def save(module: nn.Module, config: Dict, files: Dict[str, bytes], path: str,
         script: bool = True) -> None:
    """Scripts `module` and saves it with fstore/config.json and the tokenizer files."""
    scripted = torch.jit.script(module) if script else module
    extra = {"fstore/config.json": json.dumps(config, indent=1).encode()}
    extra.update(files)
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    torch.jit.save(scripted, path, _extra_files=extra)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("preset", choices=["tiny", "tiny-spm", "wide-cheap", "so400m"])
    parser.add_argument("out", help="output archive (.pt)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    torch.set_num_threads(max(1, os.cpu_count() or 1))
    with torch.no_grad():
        module, config, files = build(args.preset, args.seed)
        save(module, config, files, args.out)
    print(f"wrote {args.out} ({os.path.getsize(args.out) / 1e6:.2f} MB): {config['name']}, "
          f"D={config['embed_dim']}, T_img={config['image_tokens']}, S={config['image_size']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
