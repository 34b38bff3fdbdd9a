#!/usr/bin/python3
"""`fstore build` on bad inputs: each fails with its documented exit code and one line
that names the problem and the fix; custom image folders skip (or, --strict, refuse)
unreadable images."""
import json
import os
import shutil
import struct
import sys
import tempfile
import zipfile

import h5py
import numpy as np
from PIL import Image

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import pipeline_testlib as t  # noqa: E402

USAGE, NOT_FOUND, BAD_FORMAT, MODEL, DATA = 2, 3, 4, 6, 7


def one_line_error(p, *needles):
    lines = p.stderr.strip().splitlines()
    assert len(lines) == 1, "expected one error line, got:\n%s" % p.stderr
    for n in needles:
        assert n in lines[0], "%r not in %r" % (n, lines[0])


def main():
    with tempfile.TemporaryDirectory(prefix="fstore-errors-") as tmp:
        data = os.path.join(tmp, "data")
        t.make_data(data, train=3, val=1, test=1)
        h5 = os.path.join(tmp, "s.h5")

        p = t.run(t.build_cmd(h5, data, model=os.path.join(tmp, "nope.pt")), check_rc=NOT_FOUND)
        one_line_error(p, "nope.pt", "export_conceptclip.py")
        assert not os.path.exists(h5), "no store may be created when the model is missing"
        loop = os.path.join(tmp, "loop.pt")
        os.symlink(loop, loop)
        p = t.run(t.build_cmd(h5, data, model=loop), check_rc=NOT_FOUND)
        one_line_error(p, "loop.pt", "loop of symbolic links")
        # The model is checked before the data is fetched: a wrong --model fails at once,
        # not after a --download (which would fail here: the URL leads nowhere).
        p = t.run(t.build_cmd(h5, os.path.join(tmp, "no-data"), "--download", model=os.path.join(tmp, "nope.pt")),
                  env={"FSTORE_MEDMNIST_URL_BASE": "http://127.0.0.1:9/"}, check_rc=NOT_FOUND)
        one_line_error(p, "nope.pt")

        p = t.run(t.build_cmd(h5, os.path.join(tmp, "empty"), "--run-image"), check_rc=NOT_FOUND)
        one_line_error(p, "bloodmnist.npz", "--download")

        bad = os.path.join(tmp, "bad.json")
        with open(bad, "w") as f:
            f.write('{"label_texts": ["a",')
        p = t.run(t.build_cmd(h5, data, "--prompts", bad), check_rc=BAD_FORMAT)
        one_line_error(p, "bad.json")
        with open(bad, "w") as f:
            json.dump({"label_texts": ["a"], "label_templates": ["{}"], "concept_texts": ["b"]}, f)
        p = t.run(t.build_cmd(h5, data, "--prompts", bad), check_rc=BAD_FORMAT)
        one_line_error(p, "concept_templates")
        p = t.run(t.build_cmd(h5, data, "--prompts", os.path.join(tmp, "missing.json")), check_rc=NOT_FOUND)
        one_line_error(p, "missing.json")
        # Without the text stage, --prompts is not read: said, not silently dropped.
        p = t.run(t.build_cmd(os.path.join(tmp, "images-only.h5"), data, "--run-image", "--prompts", bad))
        assert "--prompts '%s' is ignored" % bad in p.stderr and "--run-text" in p.stderr, p.stderr

        # An extra key is read past with a warning: on stderr, as a log line of the tool, never
        # inside the --json on stdout; --log-level off silences it.
        extra = os.path.join(tmp, "extra.json")
        with open(extra, "w") as f:
            json.dump({"label_texts": ["a"], "label_templates": ["{}"], "concept_texts": ["b"],
                       "concept_templates": ["{} x"], "_comment": "mine"}, f)
        p = t.run(t.build_cmd(os.path.join(tmp, "extra.h5"), data, "--run-text", "--prompts", extra, "--json"))
        assert len(p.stdout.splitlines()) == 1 and json.loads(p.stdout)["templates"], p.stdout
        assert "fstore: warning: prompts '%s': ignoring key \"_comment\"" % extra in p.stderr, p.stderr
        p = t.run(t.build_cmd(os.path.join(tmp, "extra.h5"), data, "--run-text", "--prompts", extra, "--json",
                              "--log-level", "off"))
        assert p.stderr == "" and json.loads(p.stdout), (p.stdout, p.stderr)

        for extra, needle in ((["--size", "100"], "--size 100"), (["--batch-size", "0"], "--batch-size"),
                              (["--splits", "train,holdout"], "holdout"), (["--images", tmp], "--labels"),
                              (["--skip-text", "--skip-image"], "nothing to do")):
            cmd = [c for c in t.build_cmd(h5, data) if c not in ()]
            if "--size" in extra:
                i = cmd.index("--size")
                del cmd[i:i + 2]
            p = t.run(cmd + extra, check_rc=USAGE)
            assert needle in p.stderr, (extra, p.stderr)

        # Custom folder + CSV: an unreadable image is reported and skipped; --strict refuses.
        images = os.path.join(tmp, "images")
        os.makedirs(images)
        rng = np.random.default_rng(0)
        rows = ["path,label,split"]
        for i in range(4):
            Image.fromarray(rng.integers(0, 256, (20 + i, 24, 3), dtype=np.uint8)).save(
                os.path.join(images, "c%d.png" % i))
            rows.append("c%d.png,%d,%s" % (i, i, "train" if i < 3 else "test"))
        with open(os.path.join(images, "broken.png"), "w") as f:
            f.write("not a png")
        rows.insert(2, "broken.png,7,train")
        csv = os.path.join(tmp, "labels.csv")
        with open(csv, "w") as f:
            f.write("\n".join(rows) + "\n")
        folder_cmd = [t.FSTORE, "build", "--model", t.TINY, "--h5", os.path.join(tmp, "folder.h5"),
                      "--images", images, "--labels", csv, "--threads", "1", "--no-progress", "--run-image", "--json"]
        p = t.run(folder_cmd)
        summary = json.loads(p.stdout)
        assert summary["skipped_images"] == 1 and summary["total_new"] == 4, summary
        assert "broken.png" in p.stderr, p.stderr
        store = t.read(os.path.join(tmp, "folder.h5"))
        assert store["labels"].tolist() == [0, 1, 2, 3] and store["split"] == ["train"] * 3 + ["test"]
        assert json.loads(store["attrs"]["dataset"]) == "custom"
        t.verify(os.path.join(tmp, "folder.h5"))
        # Resuming skips exactly the images on disk, unreadable ones accounted for.
        p = t.run(folder_cmd)
        assert json.loads(p.stdout)["total_new"] == 0, p.stdout
        # A folder store whose /split was lost is refused as an npz store is (the CSV has no
        # split named 'unspecified'), not given every sample again.
        lost_folder = os.path.join(tmp, "lost-folder.h5")
        shutil.copy(os.path.join(tmp, "folder.h5"), lost_folder)
        with h5py.File(lost_folder, "a") as f:
            del f["split"]
        p = t.run([c if c != os.path.join(tmp, "folder.h5") else lost_folder for c in folder_cmd], check_rc=8)
        assert "'unspecified'" in p.stderr.strip().splitlines()[-1], p.stderr
        assert t.read(lost_folder)["ids"].shape[0] == 4
        strict = [c if c != os.path.join(tmp, "folder.h5") else os.path.join(tmp, "strict.h5") for c in folder_cmd]
        p = t.run(strict + ["--strict"], check_rc=DATA)
        one_line_error(p, "broken.png")
        # The wrong --images folder: every image is unreadable, which is an error (exit 7),
        # not an empty success.
        wrong = os.path.join(tmp, "wrong")
        os.makedirs(wrong)
        empty_run = [c if c != images else wrong for c in folder_cmd]
        empty_run[empty_run.index(os.path.join(tmp, "folder.h5"))] = os.path.join(tmp, "wrong.h5")
        p = t.run(empty_run, check_rc=DATA)
        assert "none of the 5 images" in p.stderr and "--images" in p.stderr, p.stderr
        assert json.loads(p.stdout) == {"error": {"exit_code": DATA, "message": p.stderr.split("error: ", 1)[1].strip()}}, \
            p.stdout  # --json: the failure, not a summary of an empty success

        # Image data is checked before the model loads: a missing .npz fails at once and
        # creates no store (the text stage would otherwise run first).
        fail_fast = os.path.join(tmp, "fail-fast.h5")
        p = t.run(t.build_cmd(fail_fast, os.path.join(tmp, "no-data")), check_rc=NOT_FOUND)
        one_line_error(p, "bloodmnist.npz")
        assert "loading model" not in p.stderr and not os.path.exists(fail_fast), p.stderr
        # ... and so is an .npz whose images do not have the size its name says (exit 7).
        small = os.path.join(tmp, "size64")
        t.make_data(small, size=28, train=2, val=1, test=1)
        os.rename(os.path.join(small, "bloodmnist.npz"), os.path.join(small, "bloodmnist_64.npz"))
        p = t.run(t.build_cmd(fail_fast, small, size=64), check_rc=DATA)
        one_line_error(p, "28x28 images, not 64x64", "--size")
        assert not os.path.exists(fail_fast)

        # A byte flipped in the pixels of train sample 5 of a stored (np.savez) member: the
        # CRC check fails before any row of that member is committed, so a rerun on a good
        # copy cannot resume past rows encoded from the bad pixels.
        arrays = t.make_data(os.path.join(tmp, "good"), train=12, val=1, test=1)
        corrupt_dir = os.path.join(tmp, "corrupt")
        os.makedirs(corrupt_dir)
        corrupt = os.path.join(corrupt_dir, "bloodmnist.npz")
        np.savez(corrupt, **arrays)
        with zipfile.ZipFile(corrupt) as z:
            info = z.getinfo("train_images.npy")
        with open(corrupt, "r+b") as f:
            f.seek(info.header_offset + 26)
            name_len, extra_len = struct.unpack("<HH", f.read(4))
            npy_header = 128  # numpy pads the .npy header of these arrays to 128 bytes
            at = info.header_offset + 30 + name_len + extra_len + npy_header + 5 * 28 * 28 * 3 + 7
            f.seek(at)
            byte = f.read(1)
            f.seek(at)
            f.write(bytes([byte[0] ^ 0xFF]))
        crc_h5 = os.path.join(tmp, "crc.h5")
        p = t.run(t.build_cmd(crc_h5, corrupt_dir, "--run-image", batch_size=2), check_rc=BAD_FORMAT)
        one_line_error(p, "train_images.npy", "CRC", "re-download")
        assert t.read(crc_h5)["ids"].shape[0] == 0, "rows were committed from a corrupt member"

        # A store whose /split was deleted: the repair fills "unspecified" (the reference's
        # way), and a resume, which cannot tell which samples those rows are, is refused
        # rather than appending every sample again; --no-resume re-encodes them.
        lost = os.path.join(tmp, "lost-split.h5")
        t.run(t.build_cmd(lost, data, "--run-image"))
        with h5py.File(lost, "a") as f:
            rows = f["ids"].shape[0]
            del f["split"]
        # Both stages: refused before the text stage does its work (inputs are checked first).
        p = t.run(t.build_cmd(lost, data), check_rc=8)
        last = p.stderr.strip().splitlines()[-1]  # after the repair's warning
        assert "'unspecified'" in last and "--no-resume" in last, p.stderr
        store = t.read(lost)
        assert store["ids"].shape[0] == rows and store["split"] == ["unspecified"] * rows, store["split"]
        assert store["templates"] == {}, "the refused run encoded templates: %s" % sorted(store["templates"])
        t.run(t.build_cmd(lost, data, "--run-image", "--no-resume"))
        assert t.read(lost)["split"] == ["train"] * 3 + ["val"] + ["test"]

        # A model whose tokenizer cannot be built (its cls_token is not in the vocabulary):
        # refused at load, before --no-resume may clear a row of the store.
        bad_tok = os.path.join(tmp, "bad-tokenizer.pt")
        with_config(t.TINY, bad_tok, lambda c: c["tokenizer"].update({"cls_token": "[NOPE]"}))
        kept = os.path.join(tmp, "kept.h5")
        t.run(t.build_cmd(kept, data))
        before = t.read(kept)
        p = t.run(t.build_cmd(kept, data, "--no-resume", model=bad_tok), check_rc=MODEL)
        one_line_error(p, "[NOPE]")
        after = t.read(kept)
        t.compare_rows(after, before, "rows after a refused --no-resume", exact=True)
        t.compare_templates(after, before, "templates after a refused --no-resume", exact=True)
        p = t.run([t.FSTORE, "model-info", "--model", bad_tok], check_rc=MODEL)
        one_line_error(p, "[NOPE]")
    print("ok")


def with_config(source, target, edit):
    """A copy of the model archive `source` whose fstore/config.json went through `edit`."""
    with zipfile.ZipFile(source) as z:
        members = [(info, z.read(info.filename)) for info in z.infolist()]
    with zipfile.ZipFile(target, "w", zipfile.ZIP_STORED) as z:
        for info, data in members:
            if info.filename.endswith("/extra/fstore/config.json"):
                config = json.loads(data)
                edit(config)
                data = json.dumps(config).encode()
            z.writestr(info.filename, data)


if __name__ == "__main__":
    main()
