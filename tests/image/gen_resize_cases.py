"""Writes PIL reference resizes and processor outputs for test_preprocess.

usage: gen_resize_cases.py OUT_DIR
  OUT_DIR/resize.txt      name in_h in_w channels out_w out_h resample
  OUT_DIR/<name>.in/.pil  raw uint8 input (HWC) / PIL's resize of it
  OUT_DIR/preprocess.txt  name in_h in_w channels size resample mean0 mean1 mean2 std0 std1 std2
  OUT_DIR/<name>.in/.f32  raw uint8 input / fstore_ref.preprocess output (float32 CHW)
"""
import os
import sys

import numpy as np

from fstore_ref import preprocess as ref

out = sys.argv[1]
os.makedirs(out, exist_ok=True)
rng = np.random.default_rng(1234)


def image(h, w, c, kind="noise"):
    if kind == "noise":
        a = rng.integers(0, 256, size=(h, w, c), dtype=np.uint8)
    else:  # smooth gradients with a sharp edge: exercises the interpolating lobes
        y, x = np.mgrid[0:h, 0:w]
        base = (x * 255 // max(w - 1, 1) + y * 97 // max(h - 1, 1)) % 256
        a = np.stack([(base + 40 * k) % 256 for k in range(c)], axis=-1).astype(np.uint8)
        a[h // 3: h // 2, :] = 255
    return a


RESIZE = [
    # name, h, w, c, out_w, out_h, resample, kind
    ("rgb28_384", 28, 28, 3, 384, 384, "bicubic", "noise"),
    ("rgb28_32", 28, 28, 3, 32, 32, "bicubic", "noise"),
    ("rgb224_384", 224, 224, 3, 384, 384, "bicubic", "noise"),
    ("rgb224_384_smooth", 224, 224, 3, 384, 384, "bicubic", "smooth"),
    ("rgb384_224", 384, 384, 3, 224, 224, "bicubic", "noise"),
    ("rgb64_32", 64, 64, 3, 32, 32, "bicubic", "noise"),
    ("rgb100_37", 100, 100, 3, 37, 37, "bicubic", "smooth"),
    ("gray100_37", 100, 100, 1, 37, 37, "bicubic", "noise"),
    ("gray28_384", 28, 28, 1, 384, 384, "bicubic", "smooth"),
    ("rgb_nonsquare_down", 50, 90, 3, 61, 37, "bicubic", "noise"),
    ("rgb_nonsquare_up", 50, 90, 3, 120, 200, "bicubic", "noise"),
    ("rgb_horizontal_only", 30, 40, 3, 60, 30, "bicubic", "noise"),
    ("rgb_vertical_only", 30, 40, 3, 40, 13, "bicubic", "noise"),
    ("gray1x1_5", 1, 1, 1, 5, 5, "bicubic", "noise"),
    ("rgb1x7_3x4", 1, 7, 3, 3, 4, "bicubic", "noise"),
    ("rgb7x1_384", 7, 1, 3, 384, 384, "bicubic", "noise"),
    ("rgb_to_1px", 33, 17, 3, 1, 1, "bicubic", "noise"),
    ("rgba20x30_16", 20, 30, 4, 16, 16, "bicubic", "noise"),
    ("rgb_same", 28, 28, 3, 28, 28, "bicubic", "noise"),
    ("bilinear100_37", 100, 100, 3, 37, 37, "bilinear", "noise"),
    ("bilinear28_64", 28, 28, 3, 64, 64, "bilinear", "smooth"),
]

with open(os.path.join(out, "resize.txt"), "w") as f:
    for name, h, w, c, ow, oh, rs, kind in RESIZE:
        a = image(h, w, c, kind)
        if c in (2, 4):
            # The Resizer treats every channel alike; PIL's RGBA resize premultiplies alpha
            # instead, so the reference is PIL's resize of each channel as an "L" image.
            r = np.stack([ref.pil_resize(a[:, :, k], ow, oh, rs) for k in range(c)], axis=-1)
        else:
            r = ref.pil_resize(a, ow, oh, rs)
        assert r.shape[:2] == (oh, ow)
        a.tofile(os.path.join(out, name + ".in"))
        r.tofile(os.path.join(out, name + ".pil"))
        f.write(f"{name} {h} {w} {c} {ow} {oh} {rs}\n")

CLIP_MEAN, CLIP_STD = (0.48145466, 0.4578275, 0.40821073), (0.26862954, 0.26130258, 0.27577711)
HALF = (0.5, 0.5, 0.5)
PREPROCESS = [
    # name, h, w, c, size, resample, mean, std
    ("pre_rgb224_384", 224, 224, 3, 384, "bicubic", HALF, HALF),
    ("pre_gray28_32", 28, 28, 1, 32, "bicubic", CLIP_MEAN, CLIP_STD),
    ("pre_rgba40x30_64", 40, 30, 4, 64, "bicubic", CLIP_MEAN, CLIP_STD),
    ("pre_rgb_same", 48, 48, 3, 48, "bicubic", HALF, HALF),
    ("pre_rgb_nonsquare", 70, 45, 3, 56, "bilinear", CLIP_MEAN, CLIP_STD),
]
with open(os.path.join(out, "preprocess.txt"), "w") as f:
    for name, h, w, c, size, rs, mean, std in PREPROCESS:
        a = image(h, w, c, "noise")
        x = ref.preprocess(a, size, mean, std, rs)
        assert x.shape == (3, size, size) and x.dtype == np.float32
        a.tofile(os.path.join(out, name + ".in"))
        x.tofile(os.path.join(out, name + ".f32"))
        f.write(" ".join(map(str, [name, h, w, c, size, rs, *mean, *std])) + "\n")
