#!/usr/bin/python3
"""`fstore embed` and `fstore model-info` end to end, and parity: for the shipped tiny models,
fstore's text/image CLS and token outputs equal the same archive run from Python
(torch.jit.load + fstore_ref tokenization + PIL preprocessing) to 1e-5 in fp32."""
import hashlib
import io
import json
import os
import resource
import signal
import subprocess
import sys
import tempfile
import zipfile

import numpy as np
import torch
from PIL import Image

src = os.environ["FSTORE_SOURCE_DIR"]
fstore = os.path.join(os.environ["FSTORE_BINARY_DIR"], "apps", "fstore")
sys.path.insert(0, os.path.join(src, "tests", "python"))
from fstore_ref import preprocess as ref_pre  # noqa: E402
from fstore_ref import tokenize as ref_tok  # noqa: E402

failures = []


def check(cond, what):
    print(("ok   " if cond else "FAIL ") + what)
    if not cond:
        failures.append(what)


def run(*args, **kwargs):
    return subprocess.run([fstore, *args], capture_output=True, text=True, **kwargs)


def full_disk():
    """preexec_fn: files may not grow past 256 bytes, as on a full disk (EFBIG, no SIGXFSZ)."""
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    resource.setrlimit(resource.RLIMIT_FSIZE, (256, 256))


def extras(path):
    with zipfile.ZipFile(path) as z:
        prefix = z.namelist()[0].split("/")[0] + "/extra/"
        return {n[len(prefix):]: z.read(n) for n in z.namelist() if n.startswith(prefix)}


TEXTS = ["a photo of a blood cell with Pale cytoplasm", "a bloodcell of immature granulocytes",
         "High nuclear-to-cytoplasmic ratio (artifact)!", "x"]
rng = np.random.default_rng(5)

with tempfile.TemporaryDirectory() as tmp:
    images = []
    for name, shape in (("color.png", (40, 48, 3)), ("gray.png", (20, 20)), ("rgba.png", (33, 17, 4))):
        path = os.path.join(tmp, name)
        Image.fromarray(rng.integers(0, 256, shape, dtype=np.uint8)).save(path)
        images.append(path)

    for model_name in ("tiny.pt", "tiny-spm.pt"):
        model_path = os.path.join(src, "models", model_name)
        files = extras(model_path)
        config = json.loads(files["fstore/config.json"])
        module = torch.jit.load(model_path)

        # ---- model-info --json
        r = run("model-info", "--model", model_path, "--json", "--threads", "1")
        check(r.returncode == 0, f"{model_name}: model-info exits 0 ({r.stderr.strip()})")
        info = json.loads(r.stdout)
        for key in config:
            check(info[key] == config[key], f"{model_name}: model-info {key} == config.json")
        for attr in ("logit_scale", "logit_bias", "concept_logit_scale", "concept_logit_bias"):
            check(abs(info[attr] - float(getattr(module, attr))) < 1e-6, f"{model_name}: model-info {attr}")
        check(info["sha256"] == hashlib.sha256(open(model_path, "rb").read()).hexdigest(),
              f"{model_name}: model-info sha256")
        check(info["device"] == ("cuda:0" if torch.cuda.is_available() else "cpu") and info["threads"] == 1,
              f"{model_name}: device and threads")

        # ---- embed --out, fp32, parity with Python
        out = os.path.join(tmp, model_name + ".npz")
        args = ["embed", "--model", model_path, "--device", "cpu", "--out", out]
        for t in TEXTS:
            args += ["--text", t]
        for p in images:
            args += ["--image", p]
        r = run(*args)
        check(r.returncode == 0, f"{model_name}: embed exits 0 ({r.stderr.strip()})")
        got = np.load(out)
        check(sorted(got.files) == ["image_cls", "image_tokens", "input_ids", "text_cls", "text_tokens"],
              f"{model_name}: npz members")
        tok = ref_tok.from_config(config["tokenizer"], files[config["tokenizer"]["file"]], config["context_length"])
        ids, _ = tok.encode_batch(TEXTS)
        ids = np.asarray(ids, dtype=np.int64)
        check(got["input_ids"].dtype == np.int64 and np.array_equal(got["input_ids"], ids),
              f"{model_name}: input_ids equal the reference tokenizer's")
        pixels = np.stack([ref_pre.preprocess(np.asarray(Image.open(p)), config["image_size"], config["image_mean"],
                                              config["image_std"]) for p in images])
        with torch.no_grad():
            want = {}
            want["text_cls"], want["text_tokens"] = module.encode_text(torch.from_numpy(ids))
            want["image_cls"], want["image_tokens"] = module.encode_image(torch.from_numpy(pixels))
        for key, w in want.items():
            g = got[key]
            diff = float(np.abs(g - w.numpy()).max()) if g.shape == tuple(w.shape) else float("inf")
            check(g.dtype == np.float32 and diff <= 1e-5, f"{model_name}: {key} {g.shape} matches Python (max diff {diff:.2g})")

        # ---- float16 output = float32 output rounded (cast on the device)
        out16 = os.path.join(tmp, model_name + ".f16.npz")
        r = run(*[a if a != out else out16 for a in args], "--dtype", "float16")
        h = np.load(out16)
        check(r.returncode == 0 and h["image_tokens"].dtype == np.float16, f"{model_name}: --dtype float16 output")
        for key in ("text_cls", "text_tokens", "image_cls", "image_tokens"):
            check(np.array_equal(h[key], got[key].astype(np.float16)), f"{model_name}: {key} half == float rounded")

    # ---- printing without --out, and errors (one line, documented exit codes)
    tiny = os.path.join(src, "models", "tiny.pt")
    r = run("embed", "--model", tiny, "--text", "platelet")
    check(r.returncode == 0 and "text_cls     (1, 32) float32: " in r.stdout and "input_ids    (1, 3) int64: " in r.stdout,
          "embed without --out prints numpy-style shapes: " + r.stdout.replace("\n", " | "))
    out = os.path.join(tmp, "json.npz")
    r = run("embed", "--model", tiny, "--text", "platelet", "--text", "a cell", "--image", images[0], "--out", out,
            "--dtype", "float16", "--json")
    lines = r.stdout.splitlines()
    check(r.returncode == 0 and len(lines) == 1, "embed --json prints one line: " + r.stdout)
    j = json.loads(lines[0]) if lines else {}
    z = np.load(out)
    check(j.get("out") == out and list(j.get("arrays", {})) == ["input_ids", "text_cls", "text_tokens", "image_cls",
                                                               "image_tokens"],
          f"embed --json names the output and every array in order: {j}")
    check(all(j["arrays"][name] == {"shape": list(z[name].shape), "dtype": str(z[name].dtype)} for name in z.files),
          "embed --json shapes and dtypes are the .npz's")
    r = run("embed", "--model", tiny, "--text", "platelet", "--json")
    check(r.returncode == 0 and json.loads(r.stdout)["out"] is None, "embed --json without --out: out is null")
    r = run("model-info", "--model", tiny, "--json", "--threads", "1")
    check(r.returncode == 0 and len(r.stdout.splitlines()) == 1, "model-info --json prints one line")
    not_zip = os.path.join(tmp, "not_zip.pt")
    open(not_zip, "w").write("hello\n")
    fifo = os.path.join(tmp, "fifo.pt")
    os.mkfifo(fifo)  # no writer: opening it to probe would hang
    for args, code, text in (
            (["model-info", "--model", os.path.join(tmp, "missing.pt")], 3, "export_conceptclip.py"),
            (["model-info", "--model", not_zip], 6, "not a zip file"),
            (["model-info", "--model", fifo], 6, "not a regular file"),
            (["embed", "--model", tiny, "--precision", "fp16", "--device", "cpu", "--text", "a"], 2, "fp16"),
            (["embed", "--model", tiny], 2, "nothing to embed"),
            (["embed", "--model", tiny, "--image", os.path.join(tmp, "missing.png")], 3, "missing.png"),
            (["embed", "--model", tiny, "--image", not_zip], 7, "cannot decode"),
            (["embed", "--model", tiny, "--image", tmp], 2, "is a directory"),
            # One prompt per --text; an option where a value belongs is a forgotten value.
            (["embed", "--model", tiny, "--text", "a", "photo"], 2, "not expected: photo"),
            (["embed", "--model", tiny, "--text", "--json"], 2, "--text needs a value (got option '--json')"),
            (["build", "--model", tiny, "--run-text", "--h5", "--json"], 2, "--h5 needs a value (got option '--json')"),
            (["model-info", "--model", tiny, "--device", "tpu"], 2, "--device"),
            # --out is checked as fstore-access's: a name, the .npz extension, its directory
            (["embed", "--model", tiny, "--text", "a", "--out", ""], 2, "--out needs a file name"),
            (["embed", "--model", tiny, "--text", "a", "--out", os.path.join(tmp, "e.npy")], 2, "must end in .npz"),
            (["embed", "--model", tiny, "--text", "a", "--out", os.path.join(tmp, "no", "e.npz")], 3, "does not exist"),
            # The archive goes to stdout: the JSON would land inside it.
            (["embed", "--model", tiny, "--text", "a", "--json", "--out", "/proc/self/fd/1"], 2,
             "is standard output, where --json prints too"),
    ):
        r = run(*args)
        lines = r.stderr.strip().splitlines()
        check(r.returncode == code and len(lines) == 1 and text in r.stderr,
              f"{' '.join(args[:1] + args[-2:])}: exit {r.returncode} (want {code}), stderr {lines}")
    # --device cuda: runs where LibTorch sees a GPU, else a usage error (exit 2), like fp16 on CPU.
    r = run("model-info", "--model", tiny, "--device", "cuda")
    check(r.returncode == 0 or (r.returncode == 2 and "sees no CUDA device" in r.stderr
                                and len(r.stderr.strip().splitlines()) == 1),
          f"model-info --device cuda: exit {r.returncode}, stderr {r.stderr.strip()}")

    # --out to stdout: the archive alone, nothing printed after it.
    r = subprocess.run([fstore, "embed", "--model", tiny, "--text", "a", "--out", "/proc/self/fd/1"],
                       capture_output=True, timeout=120)
    check(r.returncode == 0 and r.stdout.rfind(b"PK\x05\x06") == len(r.stdout) - 22
          and zipfile.ZipFile(io.BytesIO(r.stdout)).namelist()[0] == "input_ids.npy",
          f"embed --out /proc/self/fd/1 writes only the archive: exit {r.returncode}, tail {r.stdout[-40:]!r}")

    # A full disk (here: a file-size limit) is an I/O error (10), not a data error (7).
    full = os.path.join(tmp, "full.npz")
    r = run("embed", "--model", tiny, "--device", "cpu", "--text", "a", "--out", full, preexec_fn=full_disk)
    lines = r.stderr.strip().splitlines()
    check(r.returncode == 10 and len(lines) == 1 and f"cannot write '{full}'" in r.stderr
          and "free space or choose another --out" in r.stderr and not os.path.exists(full)
          and not [n for n in os.listdir(tmp) if ".partial-" in n],
          f"embed --out on a full disk: exit {r.returncode} (want 10), stderr {lines}")

sys.exit(1 if failures else 0)
