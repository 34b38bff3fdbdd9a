#!/usr/bin/python3
"""Crash-safety harness for `fstore build`: SIGKILL it at random moments, resume, compare.

1. Writes a small BloodMNIST-format .npz and builds a reference store without interruption.
2. Builds a second store, killing `fstore build` with SIGKILL again and again. Kill points
   cycle through the phases (store open/create, text stage, image encoding, row commits):
   the harness reads the build's debug log as it runs and kills a random few milliseconds
   after a randomly chosen event of the wanted phase. Each run resumes the previous one.
3. After every kill, `fstore-access verify` must pass (it rolls back an unfinished commit)
   and the rows on disk must be exactly the first rows of the reference store (no
   duplicates, no gaps, ids 0..n-1, same features, bit for bit).
4. Finally the build is run to completion and must equal the reference store row by row,
   templates and attributes included.

    /usr/bin/python3 scripts/kill_harness.py --kills 12            # ctest (tens of seconds)
    /usr/bin/python3 scripts/kill_harness.py --kills 300 --seed 7  # the long version

Options: --build-dir (default: build), --seed, --kills, --batch-size, --train/--val/--test,
--step-delay-ms (FSTORE_TEST_STEP_DELAY_MS: widens each phase so kills can land in it),
--work DIR (kept; default: a temporary directory, removed on success).
Exit status 0 when every check passed; 1 with a message otherwise.
"""
import argparse
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time

import h5py
import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "tests", "python"))
from fstore_ref import medmnist  # noqa: E402

PHASES = ("open", "text", "image", "commit")
# The debug line that opens a window of each phase.
TRIGGERS = {
    "open": "info: model ",                 # next: open/create the store, identity commit
    "text": "debug: text: encoding template",
    "image": "debug: image: encoding",
    "commit": "debug: image: committing rows",
}
COLUMNS = ("image_features", "image_token_features", "ids", "labels", "split")


class Failure(Exception):
    pass


def classify(lines):
    """The phase the process was in, from the last log line it wrote."""
    for line in reversed(lines):
        if "image: committing rows" in line:
            return "commit"
        if "image: " in line:
            return "image"
        if "text: " in line or "text stage" in line:
            return "text"
        if "info: model " in line or "info: store " in line or "info: split " in line:
            return "open"
        if "loading model" in line:
            return "startup"
    return "startup"


def read_store(path):
    out = {"templates": {}}
    with h5py.File(path, "r") as f:
        for c in COLUMNS:
            out[c] = f[c][()]
        out["split"] = [s.decode() if isinstance(s, bytes) else s for s in out["split"]]
        out["attrs"] = {k: (v.item() if hasattr(v, "item") else v) for k, v in f.attrs.items()
                        if k != "created_at"}
        for tid, g in f["templates"].items():
            out["templates"][tid] = {name: g[name][()] for name in g}
            out["templates"][tid]["attrs"] = {k: (v.item() if hasattr(v, "item") else v)
                                              for k, v in g.attrs.items() if k != "created_at"}
    return out


def check_prefix(store, ref, what):
    """store's rows must be exactly ref's first rows."""
    n = len(store["ids"])
    if n > len(ref["ids"]):
        raise Failure("%s: %d rows, more than the %d of an uninterrupted build (duplicates)"
                      % (what, n, len(ref["ids"])))
    if not np.array_equal(store["ids"], np.arange(n)):
        raise Failure("%s: ids are not 0..%d: %s" % (what, n - 1, store["ids"]))
    for c in ("labels", "ids"):
        if not np.array_equal(store[c], ref[c][:n]):
            raise Failure("%s: column %s differs from the reference's first %d rows" % (what, c, n))
    if store["split"] != ref["split"][:n]:
        raise Failure("%s: split column differs from the reference's first %d rows" % (what, n))
    for c in ("image_features", "image_token_features"):
        if not np.array_equal(store[c].view(np.uint16), ref[c][:n].view(np.uint16)):
            raise Failure("%s: %s differ from the reference's first %d rows" % (what, c, n))
    counts = json.loads(store["attrs"].get("split_counts", "{}"))
    expected = {}
    for s in store["split"]:
        expected[s] = expected.get(s, 0) + 1
    if counts != expected:
        raise Failure("%s: split_counts %s but the split column holds %s" % (what, counts, expected))
    return n


def check_equal(store, ref, what):
    n = check_prefix(store, ref, what)
    if n != len(ref["ids"]):
        raise Failure("%s: %d rows, the reference has %d (gap)" % (what, n, len(ref["ids"])))
    if sorted(store["templates"]) != sorted(ref["templates"]):
        raise Failure("%s: templates %s vs %s" % (what, sorted(store["templates"]), sorted(ref["templates"])))
    for tid, t in ref["templates"].items():
        for name, value in t.items():
            other = store["templates"][tid][name]
            same = other == value if name == "attrs" else np.array_equal(other, value)
            if not same:
                raise Failure("%s: template %s/%s differs" % (what, tid, name))
    for k, v in ref["attrs"].items():
        if store["attrs"].get(k) != v:
            raise Failure("%s: attribute %s = %r, reference %r" % (what, k, store["attrs"].get(k), v))


class Harness:
    def __init__(self, args):
        self.args = args
        self.rng = random.Random(args.seed)
        build = os.path.abspath(args.build_dir)
        self.fstore = os.path.join(build, "apps", "fstore")
        self.access = os.path.join(build, "apps", "fstore-access")
        for exe in (self.fstore, self.access):
            if not os.path.exists(exe):
                raise Failure("%s not found: build it first (cmake --build %s)" % (exe, build))
        self.work = args.work or tempfile.mkdtemp(prefix="fstore-kill-")
        os.makedirs(self.work, exist_ok=True)
        self.data = os.path.join(self.work, "data")
        self.kills = {p: 0 for p in PHASES + ("startup",)}
        self.completions = 0
        self.rollbacks = 0  # kills that left a journal: a commit was cut short

    def command(self, h5):
        return [self.fstore, "build", "--model", self.args.model, "--h5", h5, "--data-root", self.data,
                "--size", "28", "--batch-size", str(self.args.batch_size), "--threads", "1",
                "--loader-threads", "1", "--no-progress", "--log-level", "debug"]

    def env(self):
        env = dict(os.environ)
        env["FSTORE_TEST_STEP_DELAY_MS"] = str(self.args.step_delay_ms)
        return env

    def verify(self, h5, what):
        p = subprocess.run([self.access, "--path", h5, "verify"], capture_output=True, text=True)
        if p.returncode != 0:
            raise Failure("%s: fstore-access verify exit %d: %s%s" % (what, p.returncode, p.stdout, p.stderr))

    def run_to_end(self, h5, what):
        p = subprocess.run(self.command(h5), capture_output=True, text=True, env=self.env())
        if p.returncode != 0:
            raise Failure("%s: fstore build exit %d:\n%s" % (what, p.returncode, p.stderr[-3000:]))

    def run_and_kill(self, h5, phase):
        """Starts a build, kills it in `phase`. Returns (killed, phase it was in)."""
        seen = {"n": 0}
        nth = self.rng.randint(1, 12 if phase == "text" else 3 if phase != "open" else 1)
        delay = self.rng.uniform(0, 0.0015 if phase == "commit" else self.args.step_delay_ms / 1000 + 0.02)
        lines = []
        fire = threading.Event()
        proc = subprocess.Popen(self.command(h5), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                                env=self.env(), text=True, bufsize=1)

        def reader():
            for line in proc.stderr:
                lines.append(line.rstrip("\n"))
                if TRIGGERS[phase] in line and not fire.is_set():
                    seen["n"] += 1
                    if seen["n"] >= nth:
                        fire.set()
            fire.set()  # EOF: the process ended on its own

        t = threading.Thread(target=reader, daemon=True)
        t.start()
        fire.wait(timeout=120)
        if delay > 0:
            time.sleep(delay)
        killed = proc.poll() is None
        if killed:
            proc.send_signal(signal.SIGKILL)
        rc = proc.wait()
        t.join(timeout=10)
        if not killed and rc != 0:
            raise Failure("fstore build failed (exit %d):\n%s" % (rc, "\n".join(lines[-30:])))
        return killed and rc == -signal.SIGKILL, classify(lines)

    def main(self):
        a = self.args
        medmnist.make_dataset(self.data, size=28, counts={"train": a.train, "val": a.val, "test": a.test},
                              seed=a.seed)
        ref_path = os.path.join(self.work, "reference.h5")
        self.run_to_end(ref_path, "uninterrupted build")
        self.verify(ref_path, "uninterrupted build")
        ref = read_store(ref_path)

        target = os.path.join(self.work, "killed.h5")
        done = 0
        started = time.time()
        while done < a.kills:
            phase = PHASES[done % len(PHASES)]
            # A commit lasts a few milliseconds: aim again at a phase no kill has landed in yet.
            missing = [p for p in ("text", "image", "commit") if self.kills[p] == 0]
            if done >= len(PHASES) and missing:
                phase = missing[0]
            killed, actual = self.run_and_kill(target, phase)
            if not os.path.exists(target):
                # Killed before the store was created (startup): nothing to check yet.
                if killed:
                    done += 1
                    self.kills["startup"] += 1
                continue
            what = "after kill %d (%s)" % (done + 1, actual) if killed else "completed run"
            if killed and os.path.exists(target + ".journal"):
                self.rollbacks += 1
            self.verify(target, what)
            store = read_store(target)
            if killed:
                done += 1
                self.kills[actual] += 1
                check_prefix(store, ref, what)
            else:
                # It finished before the chosen moment: it must be complete; start over.
                check_equal(store, ref, what)
                self.completions += 1
                for suffix in ("", ".journal"):
                    if os.path.exists(target + suffix):
                        os.remove(target + suffix)
            if a.verbose:
                print("kill %3d: wanted %-6s got %-7s rows on disk %d" % (done, phase, actual if killed else "done",
                                                                         len(store["ids"])), flush=True)
        self.run_to_end(target, "final resume")
        self.verify(target, "final resume")
        check_equal(read_store(target), ref, "final resumed store")
        spread = ", ".join("%s %d" % (k, v) for k, v in self.kills.items())
        print("kill harness: %d SIGKILLs (%s), %d left a journal to roll back, %d runs completed before their kill point; "
              "every interrupted store verified and was a prefix of the reference; final store "
              "equals the uninterrupted build (%d rows, %d templates) [%.1f s]"
              % (a.kills, spread, self.rollbacks, self.completions, len(ref["ids"]), len(ref["templates"]),
                 time.time() - started))
        missing = [p for p in ("text", "image", "commit") if self.kills[p] == 0]
        if a.kills >= 10 and missing:
            raise Failure("no kill landed in phase(s) %s: raise --step-delay-ms" % ", ".join(missing))


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--build-dir", default=os.environ.get("FSTORE_BINARY_DIR", os.path.join(ROOT, "build")))
    ap.add_argument("--model", default=os.path.join(ROOT, "models", "tiny.pt"))
    ap.add_argument("--kills", type=int, default=12)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--batch-size", type=int, default=2)
    ap.add_argument("--train", type=int, default=12)
    ap.add_argument("--val", type=int, default=4)
    ap.add_argument("--test", type=int, default=4)
    ap.add_argument("--step-delay-ms", type=int, default=15)
    ap.add_argument("--work")
    ap.add_argument("--verbose", action="store_true")
    args = ap.parse_args(argv)
    harness = None
    try:
        harness = Harness(args)
        harness.main()
    except Failure as e:
        where = " (files kept in %s)" % harness.work if harness else ""
        print("kill harness FAILED: %s%s" % (e, where), file=sys.stderr)
        return 1
    if not args.work:
        shutil.rmtree(harness.work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
