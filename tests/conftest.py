"""Shared fixtures: tiny synthetic sources and configs, so tests never need real datasets, and
helpers that run the command line (in a subprocess, or in this process to save TensorFlow's start).
"""
import logging
import os
import re
import subprocess
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402
import pytest  # noqa: E402

from aur_tf.config import Config  # noqa: E402
from aur_tf.data.mixtures import MixtureDataset, mix_split  # noqa: E402


def color_strokes(count, channel, rng, image_size=32):
    """`[count, S, S, 3]` images of two bright bars each, all in one colour channel.

    Two sources drawn in different channels are the easy golden case: the true separation is a
    per-channel mask that an unsupervised run finds within a few hundred steps.
    """
    images = np.zeros((count, image_size, image_size, 3), np.float32)
    for image in images:
        for _ in range(2):
            row = rng.integers(2, image_size - 4)
            start = rng.integers(0, image_size // 2)
            image[row:row + 2, start:start + rng.integers(12, image_size // 2 + 1), channel] = 1.0
    return images


def stroke_dataset(train_count=256, test_count=64, seed=0):
    """A `MixtureDataset` of red bars (source a) mixed with green bars (source b), 32x32x3."""
    rng = np.random.default_rng(seed)
    pools = {name: color_strokes(train_count + test_count, channel, rng)
             for name, channel in (("a", 0), ("b", 1))}
    return MixtureDataset(
        train=mix_split(pools["a"][:train_count], pools["b"][:train_count], train_count, rng),
        test=mix_split(pools["a"][train_count:], pools["b"][train_count:], test_count, rng))


def tiny_config(workdir, **overrides):
    """A Config for `stroke_dataset()` with narrow nets and short schedules."""
    settings = dict(workdir=str(workdir), channels=3, train_mixtures=256, test_mixtures=64,
                    mask_width=4, disc_width=4, batch_pairs=8, train_steps=6, eval_every=3,
                    checkpoint_every=3, log_every=3, cache_dir=str(workdir) + "_cache")
    settings.update(overrides)
    return Config(**settings)


@pytest.fixture(autouse=True)
def _quiet_aur_tf_logs():
    logging.getLogger("aur_tf").setLevel(logging.WARNING)


@pytest.fixture(scope="session")
def stroke_data():
    return stroke_dataset()


@pytest.fixture
def make_config(tmp_path):
    """`make_config(**overrides)` -> a tiny Config whose workdir is under this test's tmp_path."""
    def make(name="run", **overrides):
        return tiny_config(overrides.pop("workdir", tmp_path / name), **overrides)
    return make


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


@pytest.fixture(scope="session")
def npz_source(tmp_path_factory):
    """Path of a `write_npz_source` archive: 120 train / 40 test 28x28 blobs, labels 0-9."""
    path = tmp_path_factory.mktemp("npz") / "blobs.npz"
    write_npz_source(path)
    return str(path)


ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def run_main(*args, cwd=ROOT):
    """`python main.py ARGS` in a subprocess; the `subprocess.CompletedProcess`."""
    return subprocess.run([sys.executable, os.path.join(ROOT, "main.py"), *args], cwd=cwd,
                          capture_output=True, text=True, timeout=600)


def assert_one_line_error(status, stderr, pattern):
    """Exit status 2 and exactly one `error:` line, matching regex `pattern`, no traceback."""
    assert "Traceback" not in stderr, stderr
    assert status == 2, stderr
    errors = [line for line in stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1, stderr
    assert re.search(pattern, errors[0]), errors[0]


@pytest.fixture
def run_cli(capsys, monkeypatch):
    """`run_cli(*args)` -> (exit status, stdout, stderr) of main.py's flag parsing and `main`,
    run in this process; log lines go to pytest's log capture (`caplog`)."""
    import main

    # main() would attach a handler to this test's captured stdout on every call.
    monkeypatch.setattr(main, "configure_logging", lambda: None)

    def run(*args):
        main.FLAGS.unparse_flags()
        try:
            main.parse_flags(["main.py", *args])
            main.main(["main.py"])
            status = 0
        except SystemExit as exit_:
            status = exit_.code
        out, err = capsys.readouterr()
        return status, out, err
    return run
