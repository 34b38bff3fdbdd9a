#!/usr/bin/python3
"""Resume semantics of `fstore build`: a partial run (--limit) then a full one equals an
uninterrupted run; resuming with another model or image size is refused (exit 8) unless
--no-resume; Ctrl-C (SIGINT) stops after the batch in hand with exit 130 and a resume
hint, and the next run completes the store."""
import os
import signal
import subprocess
import sys
import tempfile
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import pipeline_testlib as t  # noqa: E402

MISMATCH = 8
INTERRUPTED = 130


def main():
    with tempfile.TemporaryDirectory(prefix="fstore-resume-") as tmp:
        data = os.path.join(tmp, "data")
        t.make_data(data, train=7, val=3, test=4, seed=5)
        full_path = os.path.join(tmp, "full.h5")
        t.run(t.build_cmd(full_path, data))
        full = t.read(full_path)
        n = len(full["ids"])
        assert n == 14

        # 1. --splits train --limit 3, then everything: the partial run is a prefix, so the
        #    result equals the uninterrupted store row by row.
        prefix_path = os.path.join(tmp, "prefix.h5")
        t.run(t.build_cmd(prefix_path, data, "--splits", "train", "--limit", "3"))
        part = t.read(prefix_path)
        assert part["split"] == ["train"] * 3, part["split"]
        t.run(t.build_cmd(prefix_path, data))
        t.verify(prefix_path)
        resumed = t.read(prefix_path)
        t.compare_rows(resumed, full, "--limit then full vs uninterrupted")
        t.compare_templates(resumed, full, "--limit then full vs uninterrupted")

        # 2. --limit 2 over all splits, then everything: per split the same rows in the same
        #    order (rows of a split are contiguous per run), ids 0..N-1, nothing twice.
        limit_path = os.path.join(tmp, "limit.h5")
        t.run(t.build_cmd(limit_path, data, "--limit", "2"))
        assert t.read(limit_path)["split"] == ["train", "train", "val", "val", "test", "test"]
        p = t.run(t.build_cmd(limit_path, data))
        assert "train: 5 new (resumed after 2 on disk), 7 total" in p.stdout, p.stdout
        t.verify(limit_path)
        lim = t.read(limit_path)
        np.testing.assert_array_equal(lim["ids"], np.arange(n))
        a_rows, b_rows = t.per_split(lim), t.per_split(full)
        assert {k: len(v) for k, v in a_rows.items()} == {k: len(v) for k, v in b_rows.items()}
        for split in b_rows:
            for col in ("image_features", "image_token_features", "labels"):
                x, y = lim[col][a_rows[split]], full[col][b_rows[split]]
                if col == "labels":
                    np.testing.assert_array_equal(x, y)
                else:
                    t.assert_half_close(x, y, "%s %s" % (split, col))

        # 3. Another model (same D/T_img, different archive): refused, store untouched.
        before = t.read(full_path)
        p = t.run(t.build_cmd(full_path, data, model=t.TINY_SPM), check_rc=MISMATCH)
        assert "--no-resume" in p.stderr and "model" in p.stderr, p.stderr
        assert len(p.stderr.strip().splitlines()) == 1, "one-line error expected: %r" % p.stderr
        t.compare_rows(t.read(full_path), before, "store after a refused resume", exact=True)

        # 4. Another image size: refused; with --no-resume the image rows start afresh.
        data64 = os.path.join(tmp, "data64")
        t.make_data(data64, size=64, train=2, val=1, test=1, seed=9)
        p = t.run(t.build_cmd(full_path, data64, "--run-image", size=64), check_rc=MISMATCH)
        assert "image size '28', not '64'" in p.stderr, p.stderr
        t.run(t.build_cmd(full_path, data64, "--run-image", "--no-resume", size=64))
        fresh = t.read(full_path)
        assert len(fresh["ids"]) == 4 and fresh["attrs"]["fstore_image_size"] == "64"
        np.testing.assert_array_equal(fresh["ids"], np.arange(4))
        t.verify(full_path)

        # 5. SIGINT: stops after the current batch, exit 130, prints how to resume.
        sig_path = os.path.join(tmp, "sigint.h5")
        cmd = t.build_cmd(sig_path, data, "--log-level", "debug", batch_size=2)
        env = dict(os.environ, FSTORE_TEST_STEP_DELAY_MS="150")
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
        stderr_lines = []
        for line in proc.stderr:
            stderr_lines.append(line)
            if "image: committed" in line:
                proc.send_signal(signal.SIGINT)
                break
        out, rest = proc.communicate(timeout=60)
        stderr = "".join(stderr_lines) + rest
        assert proc.returncode == INTERRUPTED, "exit %d\n%s" % (proc.returncode, stderr)
        assert "Resume with:" in stderr and "--h5 " + sig_path in stderr, stderr
        # Said once, on stderr (with the command that resumes), not also in the summary on stdout.
        assert "interrupted" not in out.lower(), out
        assert stderr.lower().count("interrupted") == 1, stderr
        t.verify(sig_path)
        partial = t.read(sig_path)
        assert 0 < len(partial["ids"]) < n, len(partial["ids"])
        p = t.run(t.build_cmd(sig_path, data, batch_size=2))
        t.verify(sig_path)
        done = t.read(sig_path)
        t.compare_rows(done, full_before_changes(tmp, data), "SIGINT then resume vs uninterrupted")

        # 6. A reader during a build is refused (exit 5), also with HDF5's own locking off
        #    (HDF5_USE_FILE_LOCKING=FALSE, common on clusters): between two commits no journal
        #    is there to say a writer is at work, only the writer's lock.
        live_path = os.path.join(tmp, "live.h5")
        env = dict(os.environ, FSTORE_TEST_STEP_DELAY_MS="300", HDF5_USE_FILE_LOCKING="FALSE")
        proc = subprocess.Popen(t.build_cmd(live_path, data, "--log-level", "debug", batch_size=2),
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
        try:
            for line in proc.stderr:
                if "image: committed" in line:
                    break
            proc.send_signal(signal.SIGSTOP)  # held between two commits while the readers try
            for command in (["verify"], ["summarize", "--json"], ["batch", "--feature", "label"]):
                p = subprocess.run([t.FSTORE_ACCESS, "--path", live_path] + command, capture_output=True,
                                   text=True, env=env, timeout=60)
                assert p.returncode == 5 and "being written by another process" in p.stderr, (command, p.returncode,
                                                                                               p.stderr)
        finally:
            proc.send_signal(signal.SIGCONT)
            proc.send_signal(signal.SIGINT)
            proc.communicate(timeout=60)
        t.verify(live_path)
    print("ok")


def full_before_changes(tmp, data):
    """A fresh uninterrupted store with batch size 2 (the SIGINT run's)."""
    path = os.path.join(tmp, "full_b2.h5")
    t.run(t.build_cmd(path, data, batch_size=2))
    return t.read(path)


if __name__ == "__main__":
    main()
