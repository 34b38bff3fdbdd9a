#!/usr/bin/python3
"""Build-time fixtures for test_model: broken archives (one defect each) and reference
outputs of models/tiny.pt computed by Python's torch.jit, for the C++ parity checks.

Usage: make_fixtures.py SOURCE_DIR OUT_DIR
"""
import hashlib
import os
import struct
import sys
import zipfile

import torch

source_dir, out_dir = sys.argv[1], sys.argv[2]
sys.path.insert(0, os.path.join(source_dir, "scripts"))
import make_test_model as mtm  # noqa: E402

os.makedirs(out_dir, exist_ok=True)
torch.manual_seed(1234)


def out(name):
    return os.path.join(out_dir, name)


def tiny_with(name, config_edit=None, wrapper=None):
    """Saves models/tiny.pt's model (seed 0) as `name`, its config through `config_edit`,
    the module through `wrapper` (a class that takes the tiny module)."""
    m, config, tok_files = mtm.build("tiny", seed=0)
    if config_edit:
        config_edit(config)
    mtm.save(wrapper(m) if wrapper else m, config, tok_files, out(name))


# Not a zip at all.
with open(out("not_zip.pt"), "w") as f:
    f.write("this is not a model\n")

# A zip, but written by torch.save (no TorchScript code).
torch.save({"w": torch.zeros(3)}, out("torch_save.pt"))

# TorchScript without fstore/config.json.
m, config, files = mtm.build("tiny")
torch.jit.save(torch.jit.script(m), out("no_config.pt"))

cases = {
    "missing_key.pt": lambda c: c.pop("image_size"),
    "extra_key.pt": lambda c: c.update({"color": "blue"}),
    "wrong_dim.pt": lambda c: c.update({"embed_dim": 16}),
    "wrong_tokens.pt": lambda c: c.update({"image_tokens": 20}),
    "bad_format.pt": lambda c: c.update({"format": "fstore-clip/9"}),
    "bad_tokenizer_file.pt": lambda c: c["tokenizer"].update({"file": "fstore/missing.txt"}),
}
for name, edit in cases.items():
    tiny_with(name, edit)


class ImageOnly(torch.nn.Module):
    """Has encode_image but no encode_text."""

    def __init__(self, inner):
        super().__init__()
        self.inner = inner

    @torch.jit.export
    def encode_image(self, pixel_values: torch.Tensor):
        return self.inner.encode_image(pixel_values)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.inner.encode_image(x)[0]


tiny_with("no_encode_text.pt", wrapper=ImageOnly)


class NoScalars(torch.nn.Module):
    """The tiny model's methods without the four logit attributes."""

    def __init__(self, inner):
        super().__init__()
        self.vision, self.text = inner.vision, inner.text
        self.image_proj, self.text_proj = inner.image_proj, inner.text_proj
        self.text_pool_proj, self.pad_id = inner.text_pool_proj, inner.pad_id

    @torch.jit.export
    def encode_image(self, pixel_values: torch.Tensor):
        pooled, tokens = self.vision(pixel_values)
        return torch.nn.functional.normalize(pooled, dim=-1), self.image_proj(tokens)

    @torch.jit.export
    def encode_text(self, input_ids: torch.Tensor):
        mask = input_ids != self.pad_id
        hidden = self.text(input_ids, mask)
        return torch.nn.functional.normalize(self.text_pool_proj(hidden.mean(dim=1)), dim=-1), self.text_proj(hidden)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.encode_image(x)[0]


tiny_with("no_scalars.pt", wrapper=NoScalars)


class Unnormalized(NoScalars):
    @torch.jit.export
    def encode_image(self, pixel_values: torch.Tensor):
        pooled, tokens = self.vision(pixel_values)
        return pooled * 3.0, self.image_proj(tokens)


tiny_with("unnormalized.pt", wrapper=Unnormalized)

class FrozenBatch(NoScalars):
    """What a trace at batch size 1 gives: one row whatever the batch."""

    @torch.jit.export
    def encode_image(self, pixel_values: torch.Tensor):
        pooled, tokens = self.vision(pixel_values)
        return torch.nn.functional.normalize(pooled, dim=-1)[:1], self.image_proj(tokens)[:1]


tiny_with("frozen_batch.pt", wrapper=FrozenBatch)


class MetaOutput(NoScalars):
    """Returns tensors of the right shape that hold no data."""

    @torch.jit.export
    def encode_image(self, pixel_values: torch.Tensor):
        b = pixel_values.size(0)
        return torch.empty([b, 32], device="meta"), torch.empty([b, 16, 32], device="meta")


tiny_with("meta_output.pt", wrapper=MetaOutput)


class ComplexOutput(NoScalars):
    @torch.jit.export
    def encode_image(self, pixel_values: torch.Tensor):
        pooled, tokens = self.vision(pixel_values)
        return torch.nn.functional.normalize(pooled, dim=-1).to(torch.complex64), self.image_proj(tokens)


tiny_with("complex_output.pt", wrapper=ComplexOutput)


class NanOnBrightImages(NoScalars):
    """Passes the load-time probe, then returns NaN for an image brighter than it."""

    @torch.jit.export
    def encode_image(self, pixel_values: torch.Tensor):
        pooled, tokens = self.vision(pixel_values)
        tokens = self.image_proj(tokens)
        if bool(pixel_values.mean() > 0.9):
            tokens = tokens * float("nan")
        return torch.nn.functional.normalize(pooled, dim=-1), tokens


tiny_with("nan_bright.pt", wrapper=NanOnBrightImages)

# fstore/config.json edited in place after saving: its bytes no longer match the CRC that
# the zip directory records for them.
tiny_with("stale_crc.pt")
with zipfile.ZipFile(out("stale_crc.pt")) as z:
    info = next(i for i in z.infolist() if i.filename.endswith("/extra/fstore/config.json"))
    config_bytes = z.read(info.filename)
with open(out("stale_crc.pt"), "r+b") as f:
    f.seek(info.header_offset + 26)
    name_len, extra_len = struct.unpack("<HH", f.read(4))
    at = info.header_offset + 30 + name_len + extra_len + config_bytes.index(b"0.5")
    f.seek(at)
    f.write(b"0.9")

# Reference outputs of the shipped tiny model, from Python.
tiny_path = os.path.join(source_dir, "models", "tiny.pt")
model = torch.jit.load(tiny_path)
pixels = torch.randn(3, 3, 32, 32)
ids = torch.tensor([[2, 40, 41, 42, 43, 3], [2, 50, 51, 3, 0, 0]], dtype=torch.int64)
with torch.no_grad():
    icls, itok = model.encode_image(pixels)
    tcls, ttok = model.encode_text(ids)
for name, t in [("ref_pixels", pixels), ("ref_image_cls", icls), ("ref_image_tokens", itok),
                ("ref_ids", ids), ("ref_text_cls", tcls), ("ref_text_tokens", ttok)]:
    t.contiguous().numpy().tofile(out(name + ".bin"))
with open(tiny_path, "rb") as f:
    with open(out("tiny_sha256.txt"), "w") as g:
        g.write(hashlib.sha256(f.read()).hexdigest())
