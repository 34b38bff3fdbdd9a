#!/usr/bin/python3
"""fstore decodes every image format a folder may hold to exactly the pixels of PIL's
Image.open(path).convert("RGB") (gray kept as one channel), and refuses what PIL refuses
(truncated files) or what it cannot read unchanged, with a reason.

usage: test_decode_parity.py DECODE_DUMP"""
import os
import struct
import subprocess
import sys
import tempfile
import zlib

import numpy as np
from PIL import Image

DUMP = sys.argv[1]
rng = np.random.default_rng(7)


def rgb(h=23, w=31):
    return rng.integers(0, 256, (h, w, 3), dtype=np.uint8)


def decode(path):
    out = path + ".raw"
    p = subprocess.run([DUMP, path, out], capture_output=True, text=True)
    if p.returncode != 0:
        assert p.returncode in (1, 2), (path, p.returncode, p.stdout, p.stderr)
        return None, p.stdout.strip(), p.stderr
    h, w, c = map(int, p.stdout.split())
    with open(out, "rb") as f:
        pixels = np.frombuffer(f.read(), dtype=np.uint8).reshape(h, w, c)
    return pixels, "", p.stderr


def check_same_as_pil(path):
    pixels, reason, stderr = decode(path)
    assert pixels is not None, "%s: fstore refused what PIL reads: %s" % (path, reason)
    assert stderr == "", "%s: the decoder wrote to stderr: %r" % (path, stderr)
    expected = np.asarray(Image.open(path).convert("RGB"))
    got = np.repeat(pixels, 3, axis=2) if pixels.shape[2] == 1 else pixels
    assert got.shape == expected.shape, (path, got.shape, expected.shape)
    diff = np.abs(got.astype(int) - expected).max()
    assert diff == 0, "%s: pixels differ from PIL's by up to %d" % (path, diff)


def check_refused(path, *needles):
    pixels, reason, stderr = decode(path)
    assert pixels is None, "%s: decoded, expected a refusal" % path
    assert stderr == "", "%s: the decoder wrote to stderr: %r" % (path, stderr)
    for n in needles:
        assert n in reason, "%s: %r not in %r" % (path, n, reason)


def bmp16(path, values, masks=None):
    """A 1-row 16-bit BMP (5-5-5, or the bit-field layout `masks`)."""
    row = b"".join(struct.pack("<H", v) for v in values)
    row += b"\0" * ((4 - len(row) % 4) % 4)
    compression = 3 if masks else 0
    header = struct.pack("<IiiHHIIiiII", 40, len(values), 1, 1, 16, compression, len(row), 0, 0, 0, 0)
    if masks:
        header += struct.pack("<III", *masks)
    offset = 14 + len(header)
    with open(path, "wb") as f:
        f.write(b"BM" + struct.pack("<IHHI", offset + len(row), 0, 0, offset) + header + row)


def png_chunk(kind, data):
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def write_png(path, ihdr, raw, before_idat=b""):
    with open(path, "wb") as f:
        f.write(b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", ihdr) + before_idat + png_chunk(b"IDAT", zlib.compress(raw)) +
                png_chunk(b"IEND", b""))


def short_palette_png(path, bits, indices, colours):
    """A 1-row palette PNG whose pixels index past its PLTE entries (PIL: gray (i, i, i))."""
    per_byte = 8 // bits
    packed = bytearray()
    for start in range(0, len(indices), per_byte):
        byte = 0
        for k, index in enumerate(indices[start:start + per_byte]):
            byte |= index << (8 - bits * (k + 1))
        packed.append(byte)
    write_png(path, struct.pack(">IIBBBBB", len(indices), 1, bits, 3, 0, 0, 0), b"\0" + bytes(packed),
              png_chunk(b"PLTE", bytes(colours)))


def adam7_png(path, pixels):
    """An interlaced (Adam7) 8-bit RGB PNG, which PIL reads but cannot write."""
    h, w, _ = pixels.shape
    raw = b""
    for x0, y0, dx, dy in ((0, 0, 8, 8), (4, 0, 8, 8), (0, 4, 4, 8), (2, 0, 4, 4), (0, 2, 2, 4), (1, 0, 2, 2),
                           (0, 1, 1, 2)):
        sub = pixels[y0::dy, x0::dx]
        if sub.size:
            raw += b"".join(b"\0" + row.tobytes() for row in sub)  # filter type 0 per row
    write_png(path, struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 1), raw)


def main():
    with tempfile.TemporaryDirectory(prefix="fstore-decode-") as tmp:
        def at(name):
            return os.path.join(tmp, name)

        same = []
        # PNG: every colour type and bit depth PIL writes.
        Image.fromarray(rgb()).save(at("rgb.png")); same.append("rgb.png")
        rgba = np.dstack([rgb(), rng.integers(0, 256, (23, 31), dtype=np.uint8)])
        Image.fromarray(rgba).save(at("rgba.png")); same.append("rgba.png")
        Image.fromarray(rgb()[..., 0]).save(at("gray.png")); same.append("gray.png")
        Image.fromarray(rgba[..., :2].copy(), "LA").save(at("la.png")); same.append("la.png")
        palette = Image.fromarray(rgb()).convert("P", palette=Image.ADAPTIVE, colors=200)
        palette.save(at("palette.png")); same.append("palette.png")
        palette.save(at("palette-trns.png"), transparency=3); same.append("palette-trns.png")
        palette.convert("P", palette=Image.ADAPTIVE, colors=16).save(at("palette4.png"), bits=4)
        same.append("palette4.png")
        short_palette_png(at("short-palette.png"), 8, list(range(256)), [10, 20, 30, 40, 50, 60, 70, 80, 90])
        short_palette_png(at("short-palette2.png"), 2, [0, 1, 2, 3, 3, 0], [10, 20, 30])
        same += ["short-palette.png", "short-palette2.png"]
        assert np.asarray(Image.open(at("short-palette.png")).convert("RGB"))[0, 200].tolist() == [200] * 3
        Image.fromarray(rgb()[..., 0] > 128).save(at("bilevel.png")); same.append("bilevel.png")
        Image.fromarray(np.zeros((1, 1_100_000), dtype=np.uint8)).save(at("wide.png")); same.append("wide.png")
        adam7_png(at("interlaced.png"), rgb(29, 37)); same.append("interlaced.png")
        assert Image.open(at("interlaced.png")).info.get("interlace") == 1
        # JPEG: subsamplings, progressive, gray, CMYK (PIL's Adobe polarity and conversion).
        Image.fromarray(rgb(40, 50)).save(at("q90.jpg"), quality=90); same.append("q90.jpg")
        Image.fromarray(rgb(40, 50)).save(at("444.jpg"), subsampling=0); same.append("444.jpg")
        Image.fromarray(rgb(41, 53)).save(at("prog.jpg"), progressive=True); same.append("prog.jpg")
        Image.fromarray(rgb(40, 50)[..., 1]).save(at("gray.jpg")); same.append("gray.jpg")
        Image.fromarray(rgb(40, 50)).convert("CMYK").save(at("cmyk.jpg")); same.append("cmyk.jpg")
        cmyk = Image.fromarray(rng.integers(0, 256, (40, 50, 4), dtype=np.uint8), "CMYK")
        cmyk.save(at("cmyk-ink.jpg"), quality=95); same.append("cmyk-ink.jpg")
        # BMP: 24/32-bit, palette, 16-bit 5-5-5 and 5-6-5 over every sample value.
        Image.fromarray(rgb()).save(at("rgb.bmp")); same.append("rgb.bmp")
        palette.save(at("palette.bmp")); same.append("palette.bmp")
        bmp16(at("555.bmp"), [v | (v << 5) | (v << 10) for v in range(32)]); same.append("555.bmp")
        bmp16(at("565.bmp"), [(v & 31) | (v << 5) | ((31 - (v & 31)) << 11) for v in range(64)],
              (0xF800, 0x07E0, 0x001F)); same.append("565.bmp")
        # TIFF: plain, compressed, gray, RGBA that is opaque.
        Image.fromarray(rgb()).save(at("rgb.tif")); same.append("rgb.tif")
        Image.fromarray(rgb()).save(at("lzw.tif"), compression="tiff_lzw"); same.append("lzw.tif")
        Image.fromarray(rgb()[..., 2]).save(at("gray.tif")); same.append("gray.tif")
        opaque = np.dstack([rgb(), np.full((23, 31), 255, dtype=np.uint8)])
        Image.fromarray(opaque).save(at("opaque.tif")); same.append("opaque.tif")
        # WebP, lossless and lossy.
        Image.fromarray(rgb()).save(at("lossless.webp"), lossless=True); same.append("lossless.webp")
        Image.fromarray(rgb()).save(at("lossy.webp"), quality=80); same.append("lossy.webp")
        # PNM: PIL scales samples of a maxval below 255 to 0..255; OpenCV alone does not.
        gray = rng.integers(0, 16, (9, 11), dtype=np.uint8)
        with open(at("max15.pgm"), "wb") as f:
            f.write(b"P5\n# a comment\n11 9\n15\n" + gray.tobytes())
        same.append("max15.pgm")
        with open(at("max15-ascii.pgm"), "w") as f:
            f.write("P2\n11 9\n15\n" + "\n".join(" ".join(map(str, r)) for r in gray) + "\n")
        same.append("max15-ascii.pgm")
        color = rng.integers(0, 101, (9, 11, 3), dtype=np.uint8)
        with open(at("max100.ppm"), "wb") as f:
            f.write(b"P6 11 9 100\n" + color.tobytes())
        same.append("max100.ppm")
        Image.fromarray(rgb()).save(at("rgb.ppm")); same.append("rgb.ppm")
        tall = rng.integers(0, 201, (1_000_001, 1), dtype=np.uint8)  # a 7-digit height
        with open(at("tall-max200.pgm"), "wb") as f:
            f.write(b"P5 1 1000001 200\n" + tall.tobytes())
        same.append("tall-max200.pgm")

        for name in same:
            check_same_as_pil(at(name))

        # What PIL refuses, fstore refuses: a JPEG cut short (even by its end marker alone),
        # a PNG cut short; no decoder message reaches stderr.
        jpeg = open(at("q90.jpg"), "rb").read()
        for name, data in [("cut.jpg", jpeg[: len(jpeg) * 9 // 10]), ("no-eoi.jpg", jpeg[:-2])]:
            with open(at(name), "wb") as f:
                f.write(data)
            try:
                Image.open(at(name)).convert("RGB")
                raise AssertionError("PIL decoded " + name)
            except OSError:
                pass
            check_refused(at(name), "truncated")
        png = open(at("rgb.png"), "rb").read()
        with open(at("cut.png"), "wb") as f:
            f.write(png[: len(png) * 9 // 10])
        check_refused(at("cut.png"), "PNG", "truncated")
        # What OpenCV cannot give unchanged is refused rather than decoded differently:
        # TIFF transparency (premultiplied by libtiff), 16-bit samples; GIF is not decoded.
        Image.fromarray(rgba).save(at("rgba.tif"))
        check_refused(at("rgba.tif"), "TIFF with transparency")
        Image.fromarray(rng.integers(0, 65536, (5, 6), dtype=np.uint16)).save(at("16bit.png"))
        check_refused(at("16bit.png"), "16-bit samples")
        # A 1 KB RLE bitmap that declares 32767 x 32767 pixels: refused before OpenCV
        # allocates 3 GB, at PIL's limit.
        header = struct.pack("<IiiHHIIiiII", 40, 32767, 32767, 1, 8, 1, 2, 0, 0, 256, 0)
        offset = 14 + len(header) + 1024
        with open(at("bomb.bmp"), "wb") as f:
            f.write(b"BM" + struct.pack("<IHHI", offset + 2, 0, 0, offset) + header + b"\0" * 1024 + b"\x00\x01")
        check_refused(at("bomb.bmp"), "32767x32767 pixels, more than PIL opens")
        Image.fromarray(rgb()).save(at("still.gif"))
        check_refused(at("still.gif"), "GIF", "convert it to PNG")
        open(at("empty.png"), "wb").close()
        check_refused(at("empty.png"), "empty file")
        with open(at("text.png"), "w") as f:
            f.write("not a png")
        check_refused(at("text.png"), "not a readable image")
        os.mkdir(at("folder.png"))
        check_refused(at("folder.png"), "a directory")
        check_refused(at("missing.png"), "file not found")
    print("ok: %d formats decode as PIL does" % len(same))


if __name__ == "__main__":
    main()
