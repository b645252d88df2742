"""Helpers for tests that drive the command line: sources on disk, subprocess runs, error checks."""

import os
import re
import stat
import subprocess
import sys

import numpy as np


def write_npz_source(path, train_count=120, test_count=40, side=28, **changes):
    """A keras.datasets-style npz: `[N, side, side]` uint8 blobs, labels 0..9 in turn.

    `changes` replace arrays by name (x_train, y_train, x_test, y_test); None drops one.
    """
    rng = np.random.default_rng(0)
    arrays = {}
    for split, count in (("train", train_count), ("test", test_count)):
        arrays[f"x_{split}"] = (rng.random((count, side, side)) > 0.8).astype(np.uint8) * 255
        arrays[f"y_{split}"] = np.arange(count) % 10
    arrays.update(changes)
    np.savez(path, **{key: value for key, value in arrays.items() if value is not None})


ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def run_main(*args, cwd=ROOT):
    """`python main.py ARGS` in a subprocess; the `subprocess.CompletedProcess`."""
    return subprocess.run(
        [sys.executable, os.path.join(ROOT, "main.py"), *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=600,
    )


def config_from_flags(*args):
    """The `Config` that main.py's flags `args` (e.g. a --flagfile and overrides) give; paths in
    them, flagfiles included, are relative to the working directory."""
    from absl import flags

    import main  # noqa: F401 (defines the flags)
    from aur_tf import cli
    from aur_tf.config import Config

    flags.FLAGS.unparse_flags()
    cli.parse_flags(["main.py", *args])
    return cli.settings_from_flags(Config)


def assert_one_line_error(status, stderr, pattern, expected_status=2):
    """`expected_status` and exactly one `error:` line, matching regex `pattern`, no traceback."""
    assert "Traceback" not in stderr, stderr
    assert status == expected_status, stderr
    errors = [line for line in stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1, stderr
    assert re.search(pattern, errors[0]), errors[0]


def snapshot(root):
    """`{relative path: bytes}` of every file under `root` (symlinks by their target, FIFOs,
    sockets and devices by their type, since reading them could block)."""
    files = {}
    for directory, _, names in os.walk(root):
        for name in names:
            path = os.path.join(directory, name)
            relative = os.path.relpath(path, root)
            if os.path.islink(path):
                files[relative] = ("link", os.readlink(path))
            elif not stat.S_ISREG(os.stat(path).st_mode):
                files[relative] = ("special", stat.S_IFMT(os.stat(path).st_mode))
            else:
                with open(path, "rb") as f:
                    files[relative] = f.read()
    return files
