#!/usr/bin/python3
"""fstore benchmarks against their Python/h5py baselines, run side by side in one invocation
(bench/bench.sh calls this with the build's programs). Prints a table; --results writes it
as markdown with the machine description.

Sections (issue #5, "Measure it"):
  writer   ROWS rows of 729x1152 half tokens + CLS + ids + labels + split, batches of 64:
           fstore_bench_writer (FeatureStore::append_batch) vs h5py the reference's way vs a
           sequential write of the same bytes; each ends with fdatasync. Plus peak RSS per
           batch size and for two dataset sizes.
  e2e      `fstore build --run-image` vs tests/python/reference_pipeline.py --run-image on
           generated BloodMNIST-format data (224 px): (a) the tiny model, (b) wide-cheap.
  memory   peak RSS of `fstore build` (wide-cheap) per batch size (16, 64, 256), each for a
           small and a 3x larger dataset: the ratio shows whether memory grows with the data.
  reads    on a store of READ_ROWS rows: fstore-access sample / batch / fetch vs h5py doing
           the same selection (process wall time, and h5py's in-process time).
  gpu      (not in the default set; bench/gpu_bench.sh runs it on a GPU machine) the
           So400m-shaped model at batch 64 on --device, per --precision: `fstore build`
           vs tests/python/reference_pipeline.py, against the encoder alone in PyTorch (the
           ceiling) and a bf16 matrix product (the GPU's peak), with the share of that peak.

The Python used for baselines and model generation is $FSTORE_PYTHON (default
/usr/bin/python3, Debian's): on a machine whose torch lives elsewhere, point it there.
"""
import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

PY = os.environ.get("FSTORE_PYTHON", "/usr/bin/python3")
HERE = os.path.dirname(os.path.abspath(__file__))
SRC = os.path.dirname(HERE)


def run_timed(cmd, env=None, cwd=None):
    """Runs cmd; returns (seconds, peak RSS MB of the child tree, stdout)."""
    t0 = time.perf_counter()
    with tempfile.TemporaryFile() as err_file:  # a file, not a pipe: no deadlock on chatty stderr
        p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=err_file, env=env, cwd=cwd)
        out = p.stdout.read()
        _, status, usage = os.wait4(p.pid, 0)
        err_file.seek(0)
        err = err_file.read()
    seconds = time.perf_counter() - t0
    p.returncode = os.waitstatus_to_exitcode(status)
    if p.returncode != 0:
        raise RuntimeError(f"{' '.join(map(str, cmd))} failed ({p.returncode}): {err.decode()[-2000:]}")
    return seconds, usage.ru_maxrss / 1024.0, out.decode()


def last_json(text):
    return json.loads([line for line in text.splitlines() if line.startswith("{")][-1])


def drop(path):
    if os.path.isdir(path):
        shutil.rmtree(path, ignore_errors=True)
    elif os.path.exists(path):
        os.remove(path)


class Table:
    def __init__(self):
        self.rows = []

    def add(self, section, what, value, unit, note=""):
        self.rows.append((section, what, value, unit, note))
        print(f"  {section:8s} {what:58s} {value:>10} {unit:8s} {note}", flush=True)

    def markdown(self):
        lines = ["| section | measurement | value | unit | note |", "|---|---|---:|---|---|"]
        lines += [f"| {s} | {w} | {v} | {u} | {n} |" for s, w, v, u, n in self.rows]
        return "\n".join(lines)


def fmt(x, digits=1):
    return f"{x:.{digits}f}"


# ---- writer -------------------------------------------------------------------------------

def bench_writer(a, table, work):
    pool = os.path.join(work, "pool.bin")
    pool_rows = 80
    if not os.path.exists(pool):
        subprocess.run([PY, os.path.join(HERE, "gen_pool.py"), pool, str(pool_rows)], check=True)
    rows, out = a.writer_rows, os.path.join(work, "writer.h5")
    cmds = {"seq": [PY, os.path.join(HERE, "h5py_writer.py"), "seq", out, pool, str(rows), "64"],
            "fstore": [a.bench_writer, out, pool, str(rows), "64"],
            "h5py": [PY, os.path.join(HERE, "h5py_writer.py"), "h5py", out, pool, str(rows), "64"]}
    # This VM's disk varies 2-3x from run to run: the two fast ones run interleaved,
    # `rounds` times, and the median counts; h5py (CPU-bound, ~1 min) runs once.
    runs = {name: [] for name in cmds}
    for _ in range(a.writer_rounds):
        for name in ("seq", "fstore"):
            runs[name].append(last_json(run_timed(cmds[name])[2]))
            drop(out)
    runs["h5py"].append(last_json(run_timed(cmds["h5py"])[2]))
    drop(out)
    results = {}
    for name, rs in runs.items():
        rs.sort(key=lambda r: r["mb_per_s"])
        results[name] = dict(rs[len(rs) // 2])
        results[name]["range"] = (rs[0]["mb_per_s"], rs[-1]["mb_per_s"])
    payload_mb = results["fstore"]["payload_bytes"] / 1e6
    table.add("writer", f"payload: {rows} rows x (729x1152+1152) half + ids/labels", fmt(payload_mb, 0), "MB")
    for name, label in (("fstore", "fstore ChunkWriter (append_batch, batch 64)"),
                        ("h5py", "h5py, reference way (lzf filter in HDF5)"),
                        ("seq", "sequential write of the same bytes (fdatasync)")):
        r = results[name]
        n = len(runs[name])
        spread = f"median of {n}, range {r['range'][0]:.0f}-{r['range'][1]:.0f}" if n > 1 else "1 run"
        table.add("writer", label, fmt(r["mb_per_s"]), "MB/s", f"{r['seconds']:.1f} s; {spread}")
    f, h, s = (results[k]["mb_per_s"] for k in ("fstore", "h5py", "seq"))
    table.add("writer", "ratio fstore / h5py (target >= 1.5)", fmt(f / h, 2), "x")
    table.add("writer", "ratio fstore / sequential limit (target >= 0.80)", fmt(f / s, 2), "x")
    r = results["fstore"]
    table.add("writer", "fstore chunks: compressed / raw / lzf attempts skipped",
              f"{r['compressed_chunks']}/{r['raw_chunks']}/{r['skipped_attempts']}", "chunks")
    # Peak RSS: per batch size, and for two dataset sizes at batch 64. The input pool
    # (fixed, 80 or more rows) is part of the process; the writer's own share is RSS - pool.
    for batch in a.rss_batches:
        big_pool = os.path.join(work, f"pool{batch}.bin")
        need = max(pool_rows, batch + 16)
        use_pool = pool
        if need > pool_rows:
            subprocess.run([PY, os.path.join(HERE, "gen_pool.py"), big_pool, str(need)], check=True)
            use_pool = big_pool
        _, _, text = run_timed([a.bench_writer, out, use_pool, str(a.rss_rows), str(batch)])
        r = last_json(text)
        drop(out)
        drop(big_pool) if use_pool == big_pool else None
        table.add("writer", f"peak RSS, batch {batch} ({a.rss_rows} rows)", fmt(r["peak_rss_mb"], 0), "MB",
                  f"input pool {r['input_mb']:.0f} MB; writer {r['peak_rss_mb'] - r['input_mb']:.0f} MB")
    for rows_n in (a.rss_rows // 2, a.rss_rows * 2):
        _, _, text = run_timed([a.bench_writer, out, pool, str(rows_n), "64"])
        r = last_json(text)
        drop(out)
        table.add("writer", f"peak RSS, batch 64, {rows_n} rows", fmt(r["peak_rss_mb"], 0), "MB",
                  f"{r['mb_per_s']:.0f} MB/s")
    return results


# ---- end to end ---------------------------------------------------------------------------

def test_model(work, preset):
    """scripts/make_test_model.py's `preset`, made once per work dir."""
    path = os.path.join(work, f"{preset}.pt")
    if not os.path.exists(path):
        subprocess.run([PY, os.path.join(SRC, "scripts", "make_test_model.py"), preset, path],
                       check=True, stdout=subprocess.DEVNULL)
    return path


def bloodmnist_data(work, n):
    """A data root holding a generated 224 px bloodmnist_224.npz of n images (70/10/20 %)."""
    data = os.path.join(work, f"data-{n}")
    if not os.path.isdir(data):
        os.makedirs(data)
        train, val = n * 7 // 10, n // 10
        subprocess.run([PY, os.path.join(SRC, "tests", "python", "fstore_ref", "medmnist.py"), "--out", data,
                        "--size", "224", "--train", str(train), "--val", str(val),
                        "--test", str(n - train - val), "--mode", "savez"], check=True)
    return data


def bench_memory(a, table, work):
    """Peak RSS of `fstore build` (ConceptCLIP output shapes) per batch size, for two
    dataset sizes: bounded queues should make it depend on the batch size only."""
    if not a.fstore or not os.path.exists(a.fstore):
        table.add("memory", "fstore build", "n/a", "", "fstore not built (needs LibTorch)")
        return
    model = test_model(work, "wide-cheap")
    small, large = a.memory_sizes
    for batch in a.memory_batches:
        peaks = {}
        for n in (small, large):
            store = os.path.join(work, f"memory-{batch}-{n}.h5")
            drop(store)
            t, rss, _ = run_timed([a.fstore, "build", "--model", model, "--threads", str(os.cpu_count()),
                                   "--run-image", "--h5", store, "--data-root", bloodmnist_data(work, n),
                                   "--size", "224", "--batch-size", str(batch), "--no-progress"])
            drop(store)
            peaks[n] = rss
            table.add("memory", f"fstore build peak RSS, batch {batch}, {n} images", f"{rss:.0f}", "MB",
                      f"{n / t:.1f} img/s")
        table.add("memory", f"batch {batch}: peak RSS {large} / {small} images (flat = 1.00)",
                  fmt(peaks[large] / peaks[small], 2), "x")


def bench_e2e(a, table, work):
    if not a.fstore or not os.path.exists(a.fstore):
        table.add("e2e", "fstore build", "n/a", "", "fstore not built (needs LibTorch)")
        return
    ref = os.path.join(SRC, "tests", "python", "reference_pipeline.py")
    if not os.path.exists(ref):
        table.add("e2e", "reference_pipeline.py", "n/a", "", "tests/python/reference_pipeline.py missing")
        return
    models = {preset: test_model(work, preset) for preset in ("tiny", "wide-cheap")}
    # glibc returns LibTorch's ~200 MB per-batch tensors to the kernel and page-faults them
    # back in every batch; these settings keep them in the heap. Measured for both programs.
    tuned = dict(os.environ, MALLOC_MMAP_THRESHOLD_="2147483647", MALLOC_TRIM_THRESHOLD_="4294967295",
                 MALLOC_TOP_PAD_="536870912")
    for label, preset, n, env in (("(a) tiny 224->32", "tiny", a.e2e_tiny, None),
                                  ("(b) wide-cheap 729x1152", "wide-cheap", a.e2e_wide, None),
                                  ("(b') wide-cheap, both with glibc malloc tuned", "wide-cheap", a.e2e_wide, tuned)):
        data = bloodmnist_data(work, n)
        ours, theirs = os.path.join(work, f"e2e-{preset}-fstore.h5"), os.path.join(work, f"e2e-{preset}-ref.h5")
        drop(ours), drop(theirs)
        t_f, rss_f, _ = run_timed([a.fstore, "build", "--model", models[preset], "--threads", str(os.cpu_count()),
                                   "--run-image", "--h5", ours, "--data-root", data, "--size", "224",
                                   "--batch-size", "64", "--no-progress"], env=env)
        t_r, rss_r, _ = run_timed([PY, ref, "--model", models[preset], "--run-image", "--h5", theirs,
                                   "--data-root", data, "--size", "224", "--batch-size", "64",
                                   "--threads", str(os.cpu_count())], env=env)
        table.add("e2e", f"{label}, {n} images: fstore build", fmt(n / t_f), "img/s",
                  f"{t_f:.1f} s, peak RSS {rss_f:.0f} MB")
        table.add("e2e", f"{label}, {n} images: Python reference", fmt(n / t_r), "img/s",
                  f"{t_r:.1f} s, peak RSS {rss_r:.0f} MB")
        table.add("e2e", f"{label}: ratio fstore / Python" + (" (target >= 2)" if label.startswith("(b)") else ""),
                  fmt(t_r / t_f, 2), "x")
        drop(ours), drop(theirs)


# ---- gpu ----------------------------------------------------------------------------------

# Multiply-adds x 2 of scripts/make_test_model.py's so400m vision tower + image_proj for one
# image: 27 blocks of (qkv, out, MLP, attention maps) over T = 729 tokens of width 1152,
# the 14x14 patch embedding, and the two 1152x1152 projections of the tokens. (The head is
# one query: negligible.)
def so400m_flop_per_image(t=729, w=1152, mlp=4304, depth=27, patch=14):
    block = 2 * t * w * 3 * w + 2 * t * w * w + 2 * 2 * t * w * mlp + 2 * 2 * t * t * w
    return depth * block + 2 * t * 3 * patch * patch * w + 2 * 2 * t * w * w


GPU_PEAK = r'''
import json, sys, time, torch
dev = sys.argv[1]
a = torch.randn(8192, 8192, device=dev, dtype=torch.bfloat16)
b = torch.randn(8192, 8192, device=dev, dtype=torch.bfloat16)
for _ in range(3):
    a @ b
torch.cuda.synchronize()
t0 = time.perf_counter()
for _ in range(10):
    a @ b
torch.cuda.synchronize()
s = (time.perf_counter() - t0) / 10
print(json.dumps({"tflops": 2 * 8192 ** 3 / s / 1e12, "gpu": torch.cuda.get_device_name(dev),
                  "torch": torch.__version__}))
'''

# The archive's encode_image alone, on device-resident random pixels: what the GPU gives
# with no data loading, preprocessing, copies back or writing.
ENCODER_ONLY = r'''
import json, sys, time, torch
path, dev, precision, batch, size = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4]), int(sys.argv[5])
dtype = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}[precision]
m = torch.jit.load(path, map_location=dev).eval().to(dtype)
x = torch.randn(batch, 3, size, size, device=dev, dtype=dtype)
sync = torch.cuda.synchronize if dev.startswith("cuda") else (lambda: None)
with torch.inference_mode():
    for _ in range(3):
        m.encode_image(x)
    sync()
    n, t0 = 0, time.perf_counter()
    while n < 8 or time.perf_counter() - t0 < 2.0:
        m.encode_image(x)
        n += 1
    sync()
    s = time.perf_counter() - t0
print(json.dumps({"images_per_second": n * batch / s}))
'''


def archive_config(path):
    """The archive's fstore/config.json (docs/model-format.md)."""
    import zipfile
    with zipfile.ZipFile(path) as z:
        name = next(n for n in z.namelist() if n.endswith("/extra/fstore/config.json"))
        return json.loads(z.read(name))


def bench_gpu(a, table, work):
    if not a.fstore or not os.path.exists(a.fstore):
        table.add("gpu", "fstore build", "n/a", "", "fstore not built (needs LibTorch)")
        return
    cuda = a.device.startswith("cuda")
    peak = None
    if cuda:
        peak = last_json(run_timed([PY, "-c", GPU_PEAK, a.device])[2])
        table.add("gpu", f"bf16 8192^3 matmul in PyTorch {peak['torch']} ({peak['gpu']})", fmt(peak["tflops"]),
                  "TFLOP/s", "the peak the shares below are of")
    started = time.perf_counter()
    model = test_model(work, a.gpu_model)
    table.add("gpu", f"model: make_test_model.py {a.gpu_model}", fmt(os.path.getsize(model) / 1e6), "MB",
              f"made or found in {time.perf_counter() - started:.0f} s")
    flop = so400m_flop_per_image() if a.gpu_model == "so400m" else None
    batch = str(a.gpu_batch)
    data = bloodmnist_data(work, a.gpu_images)
    ref_data = bloodmnist_data(work, a.gpu_ref_images)
    ref = os.path.join(SRC, "tests", "python", "reference_pipeline.py")

    def share(images_per_second):
        if not flop or not peak:
            return ""
        return f"{images_per_second * flop / 1e12:.0f} TFLOP/s = {images_per_second * flop / 1e12 / peak['tflops']:.0%} of the peak"

    size = str(archive_config(model)["image_size"])
    for precision in a.precisions:
        enc = last_json(run_timed([PY, "-c", ENCODER_ONLY, model, a.device, precision, batch, size])[2])
        enc_rate = enc["images_per_second"]
        table.add("gpu", f"{precision}: encoder alone (PyTorch, batch {batch}, device-resident input)",
                  fmt(enc_rate), "img/s", share(enc_rate))
        store = os.path.join(work, f"gpu-{precision}.h5")
        drop(store)
        t, rss, out = run_timed([a.fstore, "build", "--model", model, "--run-image", "--device", a.device,
                                 "--precision", precision, "--batch-size", batch, "--threads", str(os.cpu_count()),
                                 "--h5", store, "--data-root", data, "--size", "224", "--no-progress", "--json"])
        summary = last_json(out)
        rate = summary["images_per_second"]
        table.add("gpu", f"{precision}: fstore build, {summary['total_new']} images, store written", fmt(rate), "img/s",
                  f"image stage {summary['image_seconds']:.1f} s of {t:.1f} s wall; peak RSS {rss:.0f} MB; "
                  f"{share(rate)}")
        table.add("gpu", f"{precision}: fstore build / encoder alone", fmt(rate / enc_rate, 2), "x")
        if precision == a.precisions[0]:
            verify = subprocess.run([a.access, "--path", store, "verify", "--json"], capture_output=True, text=True)
            table.add("gpu", f"{precision}: fstore-access verify of that store",
                      "ok" if verify.returncode == 0 else f"exit {verify.returncode}", "",
                      "" if verify.returncode == 0 else (verify.stdout + verify.stderr).strip()[:300])
            ref_store = os.path.join(work, f"gpu-{precision}-ref.h5")
            drop(ref_store)
            t_r, rss_r, out_r = run_timed([PY, ref, "--model", model, "--run-image", "--device", a.device,
                                           "--precision", precision, "--batch-size", batch,
                                           "--threads", str(os.cpu_count()), "--h5", ref_store,
                                           "--data-root", ref_data, "--size", "224", "--json"])
            ref_rate = last_json(out_r)["images_per_second"]
            drop(ref_store)
            table.add("gpu", f"{precision}: Python reference (torch.jit + PIL + h5py), {a.gpu_ref_images} images",
                      fmt(ref_rate), "img/s", f"{t_r:.1f} s wall; peak RSS {rss_r:.0f} MB")
            table.add("gpu", f"{precision}: ratio fstore / Python reference", fmt(rate / ref_rate, 2), "x")
        drop(store)


# ---- reads --------------------------------------------------------------------------------

# The baseline: h5py reads the same selection and saves it as fstore-access --out does
# (.npy for batch, .npz for sample and fetch), so both end with the same file.
H5PY_READ = r'''
import json, sys, time
t0 = time.perf_counter()
import h5py, numpy as np
t1 = time.perf_counter()
op, path, save = sys.argv[1], sys.argv[2], sys.argv[-1]
with h5py.File(path, "r") as f:
    if op == "sample":
        i = int(sys.argv[3])
        np.savez(save, image_features=f["image_features"][i], image_token_features=f["image_token_features"][i])
    elif op == "batch-image-test":
        split = np.array([s.decode() for s in f["split"][()]])
        idx = np.nonzero(split == "test")[0]
        np.save(save, f["image_features"][idx])
    elif op == "batch-patches-0-64":
        np.save(save, f["image_token_features"][0:64])
    elif op == "fetch":
        np.savez(save, **{k: g["text_features"][()] for k, g in f["templates"].items()})
    elif op == "batch-patches-every-3rd":
        np.save(save, f["image_token_features"][1::3])
print(json.dumps({"in_process_s": time.perf_counter() - t1, "import_s": t1 - t0}))
'''


# A store another tool wrote, chunked across the row (h5py's chunks=True) and gzipped.
AUTOCHUNKED_STORE = r'''
import json, sys
import h5py, numpy as np
n, T, D = 3000, 64, 128
rng = np.random.default_rng(0)
with h5py.File(sys.argv[1], "w") as f:
    kw = dict(compression="gzip", chunks=True)
    f.create_dataset("image_features", data=rng.standard_normal((n, D)).astype("f2"), maxshape=(None, D), **kw)
    f.create_dataset("image_token_features", data=rng.standard_normal((n, T, D)).astype("f2"),
                     maxshape=(None, T, D), **kw)
    f.create_dataset("ids", data=np.arange(n), maxshape=(None,), **kw)
    f.create_dataset("labels", data=np.zeros(n, "i8"), maxshape=(None,), **kw)
    split = np.array(["train", "val", "test"], dtype=object)[np.arange(n) % 3]
    f.create_dataset("split", data=split, dtype=h5py.string_dtype(), maxshape=(None,), **kw)
    f.attrs["D"], f.attrs["T_img"] = D, T
    f.attrs["split_counts"] = json.dumps({"train": 1000, "val": 1000, "test": 1000})
    f.create_group("templates")
'''


def bench_reads(a, table, work):
    if not a.access or not os.path.exists(a.access):
        table.add("reads", "fstore-access", "n/a", "", "fstore-access not built")
        return
    store = os.path.join(work, f"reads-{a.read_rows}.h5")
    if not os.path.exists(store):
        pool = os.path.join(work, "pool.bin")
        if not os.path.exists(pool):
            subprocess.run([PY, os.path.join(HERE, "gen_pool.py"), pool, "80"], check=True)
        subprocess.run([a.bench_writer, store, pool, str(a.read_rows), "64", "--templates"], check=True,
                       stdout=subprocess.DEVNULL)
    script = os.path.join(work, "h5py_read.py")
    with open(script, "w") as f:
        f.write(H5PY_READ)
    row = str(min(1234, a.read_rows - 1))
    # With --out, so that fstore-access reads the data (printing shapes alone reads none);
    # h5py reads the same rows and saves them the same way.
    npy, npz = os.path.join(work, "read-out.npy"), os.path.join(work, "read-out.npz")
    ops = [(f"sample {row} --out x.npz", ["sample", row, "--out", npz], ["sample", row, npz]),
           ("batch --feature image --split test --out x.npy",
            ["batch", "--feature", "image", "--split", "test", "--out", npy], ["batch-image-test", npy]),
           ("batch --feature patches --idx 0:64 --out x.npy",
            ["batch", "--feature", "patches", "--idx", "0:64", "--out", npy], ["batch-patches-0-64", npy]),
           ("fetch (all templates, text) --out x.npz", ["fetch", "--out", npz], ["fetch", npz])]
    autochunked = os.path.join(work, "reads-autochunked.h5")
    if not os.path.exists(autochunked):
        subprocess.run([PY, "-c", AUTOCHUNKED_STORE, autochunked], check=True)
    ops.append(("h5py-chunked gzip store (3000x64x128): batch --feature patches --idx 1::3 --out x.npy",
                ["batch", "--feature", "patches", "--idx", "1::3", "--out", npy], ["batch-patches-every-3rd", npy],
                autochunked))
    startup = statistics.median(run_timed([a.access, "--help"])[0] for _ in range(5))
    table.add("reads", "fstore-access process start + exit (--help), for reference", f"{startup * 1000:.0f}", "ms")
    for label, ours, theirs, *other in ops:
        path = other[0] if other else store
        f_times, h_times, h_inproc = [], [], []
        for rep in range(a.read_reps + 1):  # the first run of each warms the page cache
            t, _, _ = run_timed([a.access, "--path", path] + ours)
            t2, _, text = run_timed([PY, script] + theirs[:1] + [path] + theirs[1:])
            if rep == 0:
                continue
            f_times.append(t)
            h_times.append(t2)
            h_inproc.append(last_json(text)["in_process_s"])
        f_t, h_t, h_i = statistics.median(f_times), statistics.median(h_times), statistics.median(h_inproc)
        table.add("reads", f"{label}: fstore-access / h5py (process)", f"{f_t * 1000:.0f}/{h_t * 1000:.0f}", "ms",
                  f"ratio {h_t / f_t:.2f}x; h5py in-process {h_i * 1000:.0f} ms ({h_i / f_t:.2f}x)")


# ---- machine ------------------------------------------------------------------------------

def machine(work):
    def sh(cmd):
        try:
            return subprocess.run(cmd, shell=True, capture_output=True, text=True).stdout.strip()
        except OSError:
            return "?"
    cpu = sh("grep -m1 'model name' /proc/cpuinfo | cut -d: -f2").strip()
    mem = sh("free -g | awk '/Mem:/{print $2\" GiB\"}'")
    disk = sh(f"df -h {work} | awk 'NR==2{{print $1\", \"$2\" total, \"$4\" free\"}}'")
    fs_type = sh(f"stat -f -c %T {work}")
    return {"nproc": os.cpu_count(), "cpu": cpu, "memory": mem, "disk": f"{disk} ({fs_type})",
            "kernel": platform.release(), "load": " ".join(f"{x:.2f}" for x in os.getloadavg())}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bench-writer", required=True)
    ap.add_argument("--fstore")
    ap.add_argument("--access")
    ap.add_argument("--work", required=True)
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--only", default="writer,e2e,memory,reads")
    ap.add_argument("--results", help="write the table + machine description (markdown) here")
    ap.add_argument("--device", default="cuda", help="gpu section: torch device (cpu for a dry run)")
    ap.add_argument("--precisions", default="bf16,fp16", help="gpu section: comma-separated")
    ap.add_argument("--gpu-model", default="so400m", help="gpu section: make_test_model.py preset")
    ap.add_argument("--gpu-images", type=int, default=2560, help="gpu section: images fstore encodes")
    ap.add_argument("--gpu-ref-images", type=int, default=640, help="gpu section: images the Python reference encodes")
    ap.add_argument("--gpu-batch", type=int, default=64)
    a = ap.parse_args()
    a.precisions = [p for p in a.precisions.split(",") if p]
    q = a.quick
    a.writer_rows, a.writer_rounds = (256, 1) if q else (2000, 3)
    a.rss_rows, a.rss_batches = (128, [16, 64]) if q else (512, [16, 64, 256])
    a.e2e_tiny, a.e2e_wide = (200, 64) if q else (1000, 640)
    a.read_rows, a.read_reps = (600, 1) if q else (5000, 3)
    a.memory_sizes, a.memory_batches = ((256, 768), [16, 64]) if q else ((1280, 3840), [16, 64, 256])
    os.makedirs(a.work, exist_ok=True)
    m = machine(a.work)
    print(f"machine: {m}", flush=True)
    table = Table()
    started = time.time()
    sections = a.only.split(",")
    if "writer" in sections:
        bench_writer(a, table, a.work)
    if "e2e" in sections:
        bench_e2e(a, table, a.work)
    if "memory" in sections:
        bench_memory(a, table, a.work)
    if "reads" in sections:
        bench_reads(a, table, a.work)
    if "gpu" in sections:
        bench_gpu(a, table, a.work)
    m["load_after"] = " ".join(f"{x:.2f}" for x in os.getloadavg())
    print(f"total {time.time() - started:.0f} s; load average at start {m['load']}, at end {m['load_after']}")
    if a.results:
        with open(a.results, "w") as f:
            f.write(f"## Run of {time.strftime('%Y-%m-%d %H:%M')} ({'quick' if q else 'full'}, "
                    f"{time.time() - started:.0f} s)\n\n")
            f.write("Machine: " + "; ".join(f"{k} {v}" for k, v in m.items()) + "\n\n")
            f.write(table.markdown() + "\n")


if __name__ == "__main__":
    main()
