#!/usr/bin/python3
"""`fstore build --images DIR --labels CSV`: every split of the CSV is encoded unless
--splits narrows it (then a warning counts the rows left out); resume skips by CSV rows, so
an image that was unreadable before and is fixed since cannot shift the rows (no
duplicates), rows handled by an earlier run are not reported as skipped again, and images
beyond --limit are not decoded at all."""
import hashlib
import json
import os
import subprocess
import sys
import tempfile

import numpy as np
from PIL import Image

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import pipeline_testlib as t  # noqa: E402


def write_image(path, seed):
    rng = np.random.default_rng(seed)
    Image.fromarray(rng.integers(0, 256, (18 + seed % 5, 22, 3), dtype=np.uint8)).save(path)


def write_broken(path):
    with open(path, "w") as f:
        f.write("not an image")


def write_csv(path, rows):
    with open(path, "w") as f:
        f.write("path,label,split\n" + "".join("%s,%d,%s\n" % r for r in rows))


def folder_cmd(h5, images, csv, *extra):
    return [t.FSTORE, "build", "--model", t.TINY, "--h5", h5, "--images", images, "--labels", csv,
            "--threads", "1", "--no-progress", "--run-image", "--json", *extra]


def main():
    with tempfile.TemporaryDirectory(prefix="fstore-folder-") as tmp:
        images = os.path.join(tmp, "images")
        os.makedirs(images)

        # 1. Splits other than train/val/test: all encoded by default, train/val/test first,
        #    then the others in order of first appearance.
        rows = [("a0.png", 0, "train"), ("a1.png", 1, "validation"), ("a2.png", 2, "holdout"),
                ("a3.png", 3, "train"), ("a4.png", 4, "validation")]
        for i, (name, _, _) in enumerate(rows):
            write_image(os.path.join(images, name), i)
        csv = os.path.join(tmp, "splits.csv")
        write_csv(csv, rows)
        h5 = os.path.join(tmp, "all.h5")
        summary = json.loads(t.run(folder_cmd(h5, images, csv)).stdout)
        assert summary["total_new"] == 5, summary
        store = t.read(h5)
        assert store["split"] == ["train", "train", "validation", "validation", "holdout"], store["split"]
        assert store["labels"].tolist() == [0, 3, 1, 4, 2], store["labels"]
        t.verify(h5)

        # --splits given: only those, and one warning line with what was left out.
        p = t.run(folder_cmd(os.path.join(tmp, "train.h5"), images, csv, "--splits", "train"))
        assert json.loads(p.stdout)["total_new"] == 2, p.stdout
        warned = [line for line in p.stderr.splitlines() if "leaves out" in line]
        assert len(warned) == 1, p.stderr
        assert "3 CSV rows" in warned[0] and "validation: 2" in warned[0] and "holdout: 1" in warned[0], warned
        p = t.run(folder_cmd(os.path.join(tmp, "every.h5"), images, csv, "--splits", "validation,train,holdout"))
        assert "leaves out" not in p.stderr, p.stderr
        # A name the CSV lacks: the one error line, without a warning about the others first.
        p = t.run(folder_cmd(os.path.join(tmp, "val.h5"), images, csv, "--splits", "train,val"), check_rc=2)
        assert len(p.stderr.strip().splitlines()) == 1 and "'val'" in p.stderr, p.stderr

        # 2. An unreadable image before the resume point, fixed between runs.
        rows = [("c0.png", 0, "train"), ("b1.png", 1, "train"), ("c2.png", 2, "train"),
                ("c3.png", 3, "train"), ("b4.png", 4, "train")]
        for name, label, _ in rows:
            if name.startswith("c"):
                write_image(os.path.join(images, name), 10 + label)
            else:
                write_broken(os.path.join(images, name))
        csv = os.path.join(tmp, "broken.csv")
        write_csv(csv, rows)
        h5 = os.path.join(tmp, "resume.h5")
        p = t.run(folder_cmd(h5, images, csv, "--limit", "2"))
        summary = json.loads(p.stdout)
        # b4 lies beyond --limit: never decoded, so never reported.
        assert summary["total_new"] == 2 and summary["skipped_images"] == 1, summary
        assert "b1.png" in p.stderr and "b4.png" not in p.stderr, p.stderr
        assert t.read(h5)["labels"].tolist() == [0, 2]

        # Without --no-progress (stderr is not a terminal: log lines), the split's last
        # progress line counts the unreadable images as done: 5/5, not 3/5. Also with one
        # image per batch (b4, unreadable, comes after the last row), and resumed after
        # --limit 2 (the bar starts at the 3 entries those rows consumed).
        progress_h5 = os.path.join(tmp, "progress.h5")
        runs = (([], True, "5/5"), (["--batch-size", "1"], True, "5/5"),
                (["--batch-size", "1", "--limit", "2"], True, "2/2"), (["--batch-size", "1"], False, "5/5"))
        for extra, fresh, want in runs:
            if fresh and os.path.exists(progress_h5):
                os.remove(progress_h5)
            p = t.run([a for a in folder_cmd(progress_h5, images, csv, *extra) if a != "--no-progress"])
            last = [line for line in p.stderr.splitlines() if line.startswith("train: ")][-1]
            assert last.startswith("train: %s (100%%)" % want), (extra, p.stderr)

        write_image(os.path.join(images, "b1.png"), 11)  # fixed: readable now
        p = t.run(folder_cmd(h5, images, csv))
        summary = json.loads(p.stdout)
        store = t.read(h5)
        # b1 lies in the part already written (it was left out then): rows go on after c2.
        assert store["labels"].tolist() == [0, 2, 3], store["labels"]
        np.testing.assert_array_equal(store["ids"], np.arange(3))
        assert summary["total_new"] == 1 and summary["skipped_images"] == 1, summary
        assert "b4.png" in p.stderr and "b1.png" not in p.stderr, p.stderr
        t.verify(h5)

        # The same CSV with images from another folder: resumed (moving a folder is common),
        #    with one warning naming both folders.
        moved = os.path.join(tmp, "moved")
        import shutil
        shutil.copytree(images, moved)
        p = t.run(folder_cmd(h5, moved, csv))
        warned = [line for line in p.stderr.splitlines() if "were read from images in" in line]
        assert len(warned) == 1 and os.path.realpath(images) in warned[0] and os.path.realpath(moved) in warned[0], \
            p.stderr
        assert t.read(h5)["attrs"]["fstore_images_dir"] == os.path.realpath(moved)
        p = t.run(folder_cmd(h5, moved, csv))
        assert "were read from images in" not in p.stderr, p.stderr

        # 3. Resuming a complete store: rows handled before are neither decoded nor
        #    reported again.
        p = t.run(folder_cmd(h5, moved, csv))
        summary = json.loads(p.stdout)
        assert summary["total_new"] == 0 and summary["skipped_images"] == 0, summary
        assert "b4.png" not in p.stderr, p.stderr
        assert t.read(h5)["labels"].tolist() == [0, 2, 3]

        # 4. An unreadable image at the end of a split, after a full batch: its entry is on
        #    record as it is after a bigger batch, so the store does not depend on
        #    --batch-size: not decoded again, and once fixed not appended.
        for size in ("2", "64"):
            tail_csv = os.path.join(tmp, "tail.csv")
            write_image(os.path.join(images, "t0.png"), 20)
            write_image(os.path.join(images, "t1.png"), 21)
            write_broken(os.path.join(images, "t2.png"))
            write_csv(tail_csv, [("t0.png", 0, "train"), ("t1.png", 1, "train"), ("t2.png", 2, "train")])
            tail_h5 = os.path.join(tmp, "tail-%s.h5" % size)
            summary = json.loads(t.run(folder_cmd(tail_h5, images, tail_csv, "--batch-size", size)).stdout)
            assert summary["total_new"] == 2 and summary["skipped_images"] == 1, (size, summary)
            p = t.run(folder_cmd(tail_h5, images, tail_csv, "--batch-size", size))
            assert json.loads(p.stdout)["skipped_images"] == 0 and "t2.png" not in p.stderr, (size, p.stderr)
            write_image(os.path.join(images, "t2.png"), 22)
            assert json.loads(t.run(folder_cmd(tail_h5, images, tail_csv, "--batch-size", size)).stdout)[
                "total_new"] == 0, size
            assert t.read(tail_h5)["labels"].tolist() == [0, 1], size
            t.verify(tail_h5)

        # 5. The labels CSV from a pipe (--labels <(...), /dev/stdin): read once, its digest is
        #    of the bytes parsed, so the store resumes from the same CSV as a file.
        pipe_h5 = os.path.join(tmp, "pipe.h5")
        with open(tail_csv, "rb") as f:
            csv_bytes = f.read()
        p = subprocess.run(folder_cmd(pipe_h5, images, "/dev/stdin"), input=csv_bytes, capture_output=True,
                           timeout=120)
        assert p.returncode == 0, p.stderr
        assert json.loads(p.stdout)["total_new"] == 3
        import h5py
        with h5py.File(pipe_h5, "r") as f:
            assert f.attrs["fstore_labels_sha256"] == hashlib.sha256(csv_bytes).hexdigest()
        assert json.loads(t.run(folder_cmd(pipe_h5, images, tail_csv)).stdout)["total_new"] == 0
        t.verify(pipe_h5)
    print("ok")


if __name__ == "__main__":
    main()
