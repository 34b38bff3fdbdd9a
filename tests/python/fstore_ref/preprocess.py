"""Reference image preprocessing: what HF's (slow) SiglipImageProcessor does with PIL.

For a uint8 image: convert to RGB (gray replicated, alpha dropped), `Image.resize((S, S),
BICUBIC)`, rescale by 1/255 (float64 product stored as float32), then per channel
`(x - mean) / std` in float32, channels first. fstore's Preprocessor must match this.

    /usr/bin/python3 -m fstore_ref.preprocess IN.png --size 384   # prints shape and stats
"""
import argparse

import numpy as np
from PIL import Image

RESAMPLE = {"bicubic": Image.BICUBIC, "bilinear": Image.BILINEAR}


def to_pil(pixels):
    """uint8 array (H, W), (H, W, 1), (H, W, 3) or (H, W, 4) -> PIL image ("L", "RGB", "RGBA")."""
    a = np.ascontiguousarray(pixels, dtype=np.uint8)
    if a.ndim == 3 and a.shape[2] == 1:
        a = a[:, :, 0]
    return Image.fromarray(a)


def pil_resize(pixels, width, height, resample="bicubic"):
    """PIL's resize of a uint8 image, channels kept (the C++ Resizer's reference)."""
    out = to_pil(pixels).resize((width, height), RESAMPLE[resample])
    return np.asarray(out, dtype=np.uint8)


def resize_rgb(pixels, image_size, resample="bicubic"):
    """convert("RGB") then resize: the uint8 image the processor normalizes."""
    img = to_pil(pixels).convert("RGB")
    return np.asarray(img.resize((image_size, image_size), RESAMPLE[resample]), dtype=np.uint8)


def preprocess(pixels, image_size, mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5), resample="bicubic"):
    """uint8 image -> float32 (3, S, S), as the HF processor computes it."""
    rgb = resize_rgb(pixels, image_size, resample)
    x = (rgb.astype(np.float64) * (1 / 255)).astype(np.float32)
    x = (x - np.asarray(mean, dtype=np.float32)) / np.asarray(std, dtype=np.float32)
    return np.ascontiguousarray(x.transpose(2, 0, 1))


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("image")
    ap.add_argument("--size", type=int, default=384)
    ap.add_argument("--resample", default="bicubic", choices=sorted(RESAMPLE))
    ap.add_argument("--out", help="write the float32 CHW result here (.npy)")
    args = ap.parse_args()
    x = preprocess(np.asarray(Image.open(args.image)), args.size, resample=args.resample)
    print(x.shape, x.dtype, float(x.min()), float(x.max()), float(x.mean()))
    if args.out:
        np.save(args.out, x)


if __name__ == "__main__":
    main()
