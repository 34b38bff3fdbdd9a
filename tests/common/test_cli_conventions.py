#!/usr/bin/python3
"""The conventions both tools share, end to end on the real binaries: usage errors are one
line "<tool>: error: <what> (see <tool> <subcommand> --help)" with exit 2, runtime errors
carry the tool's own name, --version, the last value of a repeated option or flag wins,
every integer option says its range (never a 300-digit double), help names the bare tool
and shows each subcommand its own examples, JSON is one line (a failure's too), and a store that may not be
written is an I/O error (exit 10) that says so. Permissions are checked as user nobody
(setpriv): root bypasses them.

Usage: test_cli_conventions.py fstore|fstore-access  (ctest runs it for each tool built).
"""
import json
import os
import re
import resource
import shutil
import signal
import stat
import subprocess
import sys
import tempfile
import unittest

SOURCE_DIR = os.environ["FSTORE_SOURCE_DIR"]
BINARY_DIR = os.environ["FSTORE_BINARY_DIR"]
MAKE_STORE = os.path.join(BINARY_DIR, "tests", "access", "fstore_access_make_store")
TINY = os.path.join(SOURCE_DIR, "models", "tiny.pt")
# Root bypasses permissions: drop to nobody for the checks that need them to apply.
NOBODY = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"] if os.geteuid() == 0 else []
USAGE, NOT_FOUND, BAD_FORMAT, IO = 2, 3, 4, 10


def project_version():
    with open(os.path.join(SOURCE_DIR, "CMakeLists.txt")) as f:
        return re.search(r"project\(fstore VERSION ([0-9.]+)", f.read()).group(1)


class Conventions:
    """Checks of one tool; subclasses name it and its commands."""

    tool = None
    subcommands = ()
    # A subcommand, the first words of a valid call of it, and an integer option's bad values
    # with the words the one error line must hold.
    numeric_cases = ()
    numbers_checked_by_parser = True  # their messages then point to the subcommand's --help

    @classmethod
    def setUpClass(cls):
        cls.binary = os.path.join(BINARY_DIR, "apps", cls.tool)
        cls.tiny = TINY
        cls.tmp = tempfile.mkdtemp(prefix="fstore_cli_conventions_")
        os.chmod(cls.tmp, 0o755)  # nobody must reach the files inside
        if NOBODY:
            # The checkout may sit where nobody cannot go (root's 0700 home): run copies.
            cls.binary = shutil.copy(cls.binary, os.path.join(cls.tmp, cls.tool))
            cls.tiny = shutil.copy(TINY, os.path.join(cls.tmp, "tiny.pt"))

    @classmethod
    def tearDownClass(cls):
        shutil.rmtree(cls.tmp, ignore_errors=True)

    def run_tool(self, *args, user=(), cwd=None):
        return subprocess.run([*user, self.binary, *args], capture_output=True, text=True, timeout=120,
                              cwd=cwd)

    def error_line(self, code, *args, user=()):
        p = self.run_tool(*args, user=user)
        self.assertEqual(p.returncode, code, f"{args}: stdout={p.stdout!r} stderr={p.stderr!r}")
        lines = p.stderr.splitlines()
        self.assertEqual(len(lines), 1, f"{args}: want one stderr line, got {p.stderr!r}")
        return lines[0]

    def make_store(self, name):
        path = os.path.join(self.tmp, name)
        subprocess.run([MAKE_STORE, path, "--train", "5", "--val", "2", "--test", "1", "--dim", "4",
                        "--tokens", "2"], check=True)
        return path

    def test_output_that_cannot_be_written_is_an_io_error(self):
        # stdout on a full disk: exit 10 and one line, not exit 0 with a cut-off result.
        for json_flag in ([], ["--json"]):
            with self.subTest(json=json_flag):
                with open("/dev/full", "w") as full:
                    p = subprocess.run([self.binary, *self.printing_args(), *json_flag], stdout=full,
                                       stderr=subprocess.PIPE, text=True, timeout=120)
                self.assertEqual(p.returncode, IO, p.stderr)
                self.assertEqual(p.stderr, f"{self.tool}: error: cannot write to standard output (No space left "
                                           "on device): what was printed is incomplete; free space or send the "
                                           "output elsewhere\n")

    def test_closed_pipe_with_sigpipe_ignored_says_broken_pipe(self):
        # `| head` where SIGPIPE is ignored (some shells, CI runners): exit 10 naming the
        # closed pipe, not "free space".
        read_end, write_end = os.pipe()
        os.close(read_end)
        try:
            p = subprocess.run([self.binary, *self.printing_args(), "--json"], stdout=write_end,
                               stderr=subprocess.PIPE, text=True, timeout=120,
                               preexec_fn=lambda: signal.signal(signal.SIGPIPE, signal.SIG_IGN))
        finally:
            os.close(write_end)
        self.assertEqual(p.returncode, IO, p.stderr)
        self.assertIn("its reader closed the pipe (broken pipe)", p.stderr)
        self.assertEqual(len(p.stderr.splitlines()), 1, p.stderr)

    def test_file_size_limit_is_an_io_error_not_a_signal(self):
        # ulimit -f: without SIGXFSZ ignored the tool would die silently mid-write (exit 153).
        out = os.path.join(self.tmp, "limited.json")

        def limit():
            resource.setrlimit(resource.RLIMIT_FSIZE, (16, 16))
        with open(out, "w") as f:
            p = subprocess.run([self.binary, *self.printing_args(), "--json"], stdout=f, stderr=subprocess.PIPE,
                               text=True, timeout=120, preexec_fn=limit)
        self.assertEqual(p.returncode, IO, p.stderr)
        self.assertIn("cannot write to standard output (File too large)", p.stderr)

    def test_json_failure_is_a_json_document_too(self):
        # A script reading --json's stdout gets a document on failure as well: the error's
        # exit code and its message (the stderr line's); without --json stdout stays empty.
        p = self.run_tool(*self.missing_file_args(), "--json")
        self.assertEqual(p.returncode, NOT_FOUND, p.stderr)
        self.assertEqual(len(p.stdout.splitlines()), 1, p.stdout)
        error = json.loads(p.stdout)["error"]
        self.assertEqual(error["exit_code"], NOT_FOUND)
        self.assertEqual(p.stderr, f"{self.tool}: error: {error['message']}\n")
        p = self.run_tool(*self.missing_file_args())
        self.assertEqual((p.returncode, p.stdout), (NOT_FOUND, ""))

    def test_log_level_off_still_prints_the_error(self):
        # The subclass's runtime error, with logs silenced: the one line stays.
        args = self.missing_file_args()
        for call in (["--log-level", "off", *args], [*args, "--log-level", "off"]):
            with self.subTest(call=call):
                p = self.run_tool(*call)
                self.assertEqual(p.returncode, NOT_FOUND, p.stderr)
                self.assertEqual(len(p.stderr.splitlines()), 1, p.stderr)
                self.assertIn("missing", p.stderr)

    def test_log_lines_on_a_terminal_clear_the_progress_bar_line(self):
        # A bar is redrawn with \r and no newline: on a terminal each log line first clears
        # the current line; in a pipe or file it is plain text.
        import pty
        master, slave = pty.openpty()
        try:
            p = subprocess.run([self.binary, *self.missing_file_args()], stdout=subprocess.DEVNULL, stderr=slave,
                               timeout=60)
            os.close(slave)
            slave = -1
            out = b""
            while True:
                try:
                    chunk = os.read(master, 4096)
                except OSError:
                    break
                if not chunk:
                    break
                out += chunk
        finally:
            if slave >= 0:
                os.close(slave)
            os.close(master)
        self.assertEqual(p.returncode, NOT_FOUND)
        self.assertTrue(out.startswith(b"\r\x1b[K" + self.tool.encode() + b": "), out)
        piped = self.run_tool(*self.missing_file_args())
        self.assertTrue(piped.stderr.startswith(self.tool + ": error: "), piped.stderr)

    # ---- usage errors -------------------------------------------------------------------
    def test_unknown_option_names_the_subcommands_help(self):
        sub = self.subcommands[0]
        self.assertEqual(self.error_line(USAGE, sub, "--bogus"),
                         f"{self.tool}: error: the following argument was not expected: --bogus "
                         f"(see {self.tool} {sub} --help)")

    def test_unknown_and_missing_subcommand_list_the_subcommands(self):
        names = ", ".join(self.subcommands)
        self.assertEqual(self.error_line(USAGE, "bogus"),
                         f"{self.tool}: error: unknown subcommand 'bogus': use one of {names} "
                         f"(see {self.tool} --help)")
        self.assertEqual(self.error_line(USAGE),
                         f"{self.tool}: error: a subcommand is required: use one of {names} "
                         f"(see {self.tool} --help)")

    def test_integer_options_say_their_range(self):
        for sub, words, value, needle in self.numeric_cases:
            with self.subTest(sub=sub, words=words, value=value):
                line = self.error_line(USAGE, sub, *words, value)
                self.assertIn(needle, line)
                if self.numbers_checked_by_parser:
                    self.assertTrue(line.endswith(f"(see {self.tool} {sub} --help)"), line)
                self.assertNotRegex(line, r"\d{25}", "a huge number in the message")

    # ---- version and help -------------------------------------------------------------------
    def test_version(self):
        p = self.run_tool("--version")
        self.assertEqual((p.returncode, p.stdout, p.stderr), (0, f"{self.tool} {project_version()}\n", ""))

    def test_help_names_the_tool_and_each_subcommand_shows_its_own_examples(self):
        top = self.run_tool("--help")
        self.assertEqual(top.returncode, 0, top.stderr)
        self.assertIn(f"Usage: {self.tool} [OPTIONS] SUBCOMMAND", top.stdout)
        self.assertNotIn(BINARY_DIR, top.stdout)
        self.assertIn("Exit codes", top.stdout)
        top_examples = top.stdout.split("Examples:\n")[1].split("\n\n")[0].splitlines()
        for sub in self.subcommands:
            with self.subTest(sub=sub):
                self.assertTrue(any(sub in example.split() for example in top_examples), top_examples)
                p = self.run_tool(sub, "--help")
                self.assertEqual(p.returncode, 0, p.stderr)
                self.assertIn(f"Usage: {self.tool} {sub} [OPTIONS]", p.stdout)
                self.assertNotIn("Excludes:", p.stdout)
                self.assertNotIn("Exit codes", p.stdout)
                examples = p.stdout.split("Examples:\n")[1].splitlines() if "Examples:" in p.stdout else []
                for example in examples:
                    self.assertIn(sub, example.split(), f"{sub} --help shows another subcommand's example")


class FstoreAccess(Conventions, unittest.TestCase):
    tool = "fstore-access"
    subcommands = ("summarize", "templates", "sample", "batch", "fetch", "clear-templates", "verify")
    # fstore-access hands its numbers to the library as typed (tests/access covers the
    # ranges, which depend on the store); these fail before any store is opened.
    numeric_cases = (
        ("summarize", ["--max-templates"], "-1", "--max-templates must be 0 or more"),
        ("summarize", ["--max-templates"], "1e3", "--max-templates"),
        ("sample", [], "x", "bad index value 'x'"),
    )
    numbers_checked_by_parser = False

    def missing_file_args(self):
        return ["--path", os.path.join(self.tmp, "missing.h5"), "templates"]

    def printing_args(self):
        return ["--path", self.make_store("printed.h5"), "summarize"]

    def test_runtime_errors_carry_the_tools_name(self):
        line = self.error_line(NOT_FOUND, "--path", os.path.join(self.tmp, "missing.h5"), "templates")
        self.assertTrue(line.startswith("fstore-access: error: store "), line)

    def test_empty_path_is_refused(self):
        line = self.error_line(USAGE, "--path", "", "templates")
        self.assertIn("--path: needs a path, got an empty value", line)

    def test_contradicting_flags(self):
        line = self.error_line(USAGE, "fetch", "--concept", "--label")
        self.assertIn("--concept and --label contradict each other", line)
        self.assertIn("(see fstore-access fetch --help)", line)

    def test_last_value_wins_and_json_is_one_line(self):
        store = self.make_store("last.h5")
        p = self.run_tool("--path", "nope.h5", "--path", store, "summarize", "--max-templates", "0",
                          "--max-templates", "2", "--json", "--json")
        self.assertEqual(p.returncode, 0, p.stderr)
        self.assertEqual(len(p.stdout.splitlines()), 1, p.stdout)
        self.assertEqual(len(json.loads(p.stdout)["templates"]), 2)
        for args in (["templates"], ["sample", "0"], ["batch", "--idx", "0"], ["fetch"], ["verify"]):
            with self.subTest(args=args):
                p = self.run_tool("--path", store, *args, "--json")
                self.assertEqual(p.returncode, 0, p.stderr)
                self.assertEqual(len(p.stdout.splitlines()), 1, p.stdout)

    def test_store_not_writable_is_an_io_error(self):
        store = self.make_store("readonly.h5")
        os.chmod(store, 0o444)
        line = self.error_line(IO, "--path", store, "clear-templates", user=NOBODY)
        self.assertEqual(line, f"fstore-access: error: store '{store}' is not writable (permission denied): "
                               "check its permissions, or write to another --h5 path")
        self.assertEqual(self.run_tool("--path", store, "templates", user=NOBODY).returncode, 0)
        # Writable file, but its directory (where the rollback journal goes) is not.
        directory = os.path.join(self.tmp, "locked_dir")
        os.mkdir(directory)
        inside = os.path.join(directory, "store.h5")
        shutil.copyfile(store, inside)
        os.chmod(inside, 0o666)
        os.chmod(directory, 0o555)
        line = self.error_line(IO, "--path", inside, "clear-templates", user=NOBODY)
        self.assertIn(f"its directory '{directory}', where its rollback journal goes, is not (permission denied)",
                      line)

    def test_truncated_store_says_so_without_hdf5_internals(self):
        store = self.make_store("whole.h5")
        cut = os.path.join(self.tmp, "cut.h5")
        with open(store, "rb") as f, open(cut, "wb") as g:
            g.write(f.read(os.path.getsize(store) // 2))
        for args in (["templates"], ["clear-templates"]):
            with self.subTest(args=args):
                line = self.error_line(BAD_FORMAT, "--path", cut, *args)
                self.assertEqual(line, f"fstore-access: error: '{cut}' is truncated or corrupt (HDF5 end-of-file "
                                       "mismatch): restore it from a copy or rebuild it")


class Fstore(Conventions, unittest.TestCase):
    tool = "fstore"
    subcommands = ("build", "embed", "model-info")
    numeric_cases = (
        ("build", ["--limit"], "-1", "--limit must be 0 or more, not -1"),
        ("build", ["--limit"], "-5", "--limit must be 0 or more, not -5"),
        ("build", ["--loader-threads"], "-2", "--loader-threads must be between 0 and 1024, not -2"),
        ("build", ["--batch-size"], "99999999999", "--batch-size must be between 1 and 2147483647"),
        ("build", ["--batch-size"], "0", "--batch-size must be 1 or more"),
        ("build", ["--size"], "99999999999", "--size must be between 28 and 224"),
        ("build", ["--threads"], "-1", "--threads must be between 0 and 1024"),
        ("model-info", ["--threads"], "99999999999999999999999", "--threads must be between 0 and 1024"),
        ("embed", ["--threads"], "1.5", "--threads must be an integer, not '1.5'"),
    )

    def build(self, h5, *args, user=()):
        return self.run_tool("build", "--run-text", "--model", self.tiny, "--h5", h5, "--threads", "1",
                             "--no-progress", *args, user=user)

    def missing_file_args(self):
        return ["model-info", "--model", os.path.join(self.tmp, "missing.pt")]

    def printing_args(self):
        return ["model-info", "--model", self.tiny]

    def test_runtime_errors_carry_the_tools_name(self):
        line = self.error_line(NOT_FOUND, "model-info", "--model", os.path.join(self.tmp, "missing.pt"))
        self.assertTrue(line.startswith("fstore: error: model archive "), line)

    def test_unreadable_inputs_are_not_called_missing(self):
        # Exit 3 either way, but the message names the real problem: permissions.
        model = os.path.join(self.tmp, "locked.pt")
        shutil.copyfile(self.tiny, model)
        os.chmod(model, 0)
        locked_dir = os.path.join(self.tmp, "locked-data")
        os.makedirs(locked_dir, exist_ok=True)
        os.chmod(locked_dir, 0)
        try:
            line = self.error_line(NOT_FOUND, "model-info", "--model", model, user=NOBODY)
            self.assertIn("is not readable (permission denied)", line)
            line = self.error_line(NOT_FOUND, "build", "--run-image", "--model", self.tiny, "--data-root", locked_dir,
                                   "--size", "28", "--h5", os.path.join(self.tmp, "locked.h5"), user=NOBODY)
            self.assertIn("bloodmnist.npz' is not readable (permission denied)", line)
        finally:
            os.chmod(locked_dir, 0o755)

    def test_empty_paths_are_refused_not_taken_as_the_default(self):
        # "--images $DIR" with DIR unset would otherwise encode BloodMNIST instead.
        for option in ("--images", "--labels", "--prompts", "--data-root", "--h5", "--model"):
            with self.subTest(option=option):
                line = self.error_line(USAGE, "build", option, "")
                self.assertIn(f"{option}: needs a path, got an empty value", line)

    def test_contradicting_stage_flags(self):
        for stage in ("text", "image"):
            with self.subTest(stage=stage):
                line = self.error_line(USAGE, "build", f"--run-{stage}", f"--skip-{stage}")
                self.assertIn(f"--run-{stage} and --skip-{stage} contradict each other", line)

    def test_last_value_wins_and_json_is_one_line(self):
        p = self.run_tool("model-info", "--model", "nope.pt", "--model", self.tiny, "--threads", "3", "--threads", "1",
                          "--json", "--json")
        self.assertEqual(p.returncode, 0, p.stderr)
        self.assertEqual(len(p.stdout.splitlines()), 1, p.stdout)
        self.assertEqual(json.loads(p.stdout)["threads"], 1)
        p = self.build(os.path.join(self.tmp, "json.h5"), "--json", "--batch-size", "0", "--batch-size", "8")
        self.assertEqual(p.returncode, 0, p.stderr)
        self.assertEqual(len(p.stdout.splitlines()), 1, p.stdout)
        self.assertEqual(len(json.loads(p.stdout)["templates"]), 12)

    def test_store_not_writable_is_an_io_error(self):
        store = os.path.join(self.tmp, "s1.h5")
        self.assertEqual(self.build(store).returncode, 0)
        os.chmod(store, 0o444)
        p = self.build(store, user=NOBODY)
        self.assertEqual(p.returncode, IO, p.stderr)
        self.assertEqual(p.stderr, f"fstore: error: store '{store}' is not writable (permission denied): "
                                   "check its permissions, or write to another --h5 path\n")

    def test_store_in_a_read_only_directory_is_an_io_error(self):
        directory = os.path.join(self.tmp, "ro")
        os.mkdir(directory)
        os.chmod(directory, stat.S_IRUSR | stat.S_IXUSR | stat.S_IRGRP | stat.S_IXGRP | stat.S_IROTH | stat.S_IXOTH)
        new = os.path.join(directory, "new.h5")
        p = self.build(new, user=NOBODY)
        self.assertEqual(p.returncode, IO, p.stderr)
        self.assertEqual(p.stderr, f"fstore: error: cannot create store '{new}': permission denied in directory "
                                   f"'{directory}': choose a writable --h5 path\n")
        self.assertEqual(os.listdir(directory), [])


if __name__ == "__main__":
    tool = sys.argv.pop(1)
    suite = unittest.defaultTestLoader.loadTestsFromTestCase({"fstore": Fstore, "fstore-access": FstoreAccess}[tool])
    sys.exit(0 if unittest.TextTestRunner(verbosity=2).run(suite).wasSuccessful() else 1)
