"""bench/run_bench.py's gpu section on the CPU with the tiny model: the code the GPU
machine runs (bench/gpu_bench.sh) works end to end before a GPU is ever lent: encoder
alone, fstore build with the store verified, the Python reference with --device and
--json, the ratios and the results table. The numbers themselves are not checked."""
import os
import re
import subprocess
import sys
import tempfile

import pipeline_testlib as t

RUN_BENCH = os.path.join(t.SOURCE_DIR, "bench", "run_bench.py")


def main():
    with tempfile.TemporaryDirectory(prefix="fstore-bench-gpu-") as work:
        results = os.path.join(work, "results.md")
        p = subprocess.run([sys.executable, RUN_BENCH, "--bench-writer", "unused", "--fstore", t.FSTORE,
                            "--access", t.FSTORE_ACCESS, "--work", work, "--only", "gpu", "--device", "cpu",
                            "--precisions", "fp32", "--gpu-model", "tiny", "--gpu-images", "96",
                            "--gpu-ref-images", "32", "--gpu-batch", "16", "--results", results],
                           capture_output=True, text=True, timeout=240)
        assert p.returncode == 0, p.stdout + p.stderr
        rows = {}
        for line in open(results, encoding="utf-8"):
            cells = [c.strip() for c in line.strip().strip("|").split("|")]
            if len(cells) == 5 and cells[0] == "gpu":
                rows[cells[1]] = cells
        expected = {
            "fp32: encoder alone (PyTorch, batch 16, device-resident input)": "img/s",
            "fp32: fstore build, 96 images, store written": "img/s",
            "fp32: fstore build / encoder alone": "x",
            "fp32: Python reference (torch.jit + PIL + h5py), 32 images": "img/s",
            "fp32: ratio fstore / Python reference": "x",
        }
        for what, unit in expected.items():
            assert what in rows, f"missing row {what!r} in {sorted(rows)}"
            value, got_unit = rows[what][2], rows[what][3]
            assert got_unit == unit and re.fullmatch(r"\d+\.\d+", value) and float(value) > 0, rows[what]
        assert rows["fp32: fstore-access verify of that store"][2] == "ok", rows
        # No GPU peak on a CPU: no share of it is claimed.
        assert not any("matmul" in what for what in rows), sorted(rows)
        assert "of the peak" not in open(results, encoding="utf-8").read()
    print("bench gpu section (cpu dry run): ok")


if __name__ == "__main__":
    main()
