#!/usr/bin/python3
"""`fstore build --download` end to end against a local HTTP server (127.0.0.1 only).

The server hands out a generated BloodMNIST-format file, so its MD5 cannot match the
official one: the build must fail with exit 9 and one line naming the checksum, leave no
.part or .npz behind and write no image rows. A missing file (404) fails the same way.
(A successful, resumed, MD5-checked download is tested in tests/image/test_download.cpp.)"""
import os
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import pipeline_testlib as t  # noqa: E402

NETWORK = 9
SERVER = os.path.join(t.SOURCE_DIR, "tests", "image", "range_server.py")


def start_server(root, tmp):
    port_file, log_file = os.path.join(tmp, "port"), os.path.join(tmp, "requests.log")
    server = subprocess.Popen([sys.executable, SERVER, root, port_file, log_file])
    for _ in range(200):
        if os.path.exists(port_file):
            with open(port_file) as f:
                return server, "http://127.0.0.1:%s" % f.read().strip(), log_file
        time.sleep(0.05)
    server.kill()
    raise AssertionError("the test HTTP server did not start")


def main():
    with tempfile.TemporaryDirectory(prefix="fstore-download-") as tmp:
        served = os.path.join(tmp, "served")
        t.make_data(served, train=3, val=1, test=1)  # writes served/bloodmnist.npz (size 28)
        server, base, log_file = start_server(served, tmp)
        try:
            env = {"FSTORE_MEDMNIST_URL_BASE": base}
            root = os.path.join(tmp, "root")
            os.makedirs(root)
            h5 = os.path.join(tmp, "s.h5")
            p = t.run(t.build_cmd(h5, root, "--run-image", "--download"), env=env, check_rc=NETWORK)
            lines = p.stderr.strip().splitlines()
            assert len(lines) == 1 and "MD5" in lines[0].upper(), p.stderr
            assert sorted(os.listdir(root)) == [], "left behind: %s" % os.listdir(root)
            with open(log_file) as f:
                assert "/bloodmnist.npz" in f.read(), "the build did not ask the server for the file"
            if os.path.exists(h5):
                t.verify(h5)
                import h5py
                with h5py.File(h5, "r") as f:
                    assert f["ids"].shape[0] == 0, "rows were written without data"

            # The server has no 64 px file: 404.
            p = t.run(t.build_cmd(h5, root, "--run-image", "--download", size=64), env=env,
                      check_rc=NETWORK)
            assert len(p.stderr.strip().splitlines()) == 1 and "404" in p.stderr, p.stderr
            assert sorted(os.listdir(root)) == [], "left behind: %s" % os.listdir(root)
        finally:
            server.kill()
            server.wait()
    print("download: 2 passed, 0 failed")


if __name__ == "__main__":
    main()
