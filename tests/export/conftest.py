"""The export suite's shared session fixtures `exported` and `trained_run`.

`exported` trains one tiny run on synthetic strokes (horizontal vs vertical, loaded through npz
sources so the parity check rebuilds real validation mixtures) and exports it once, with its
fp16 and int8 files; an inverted twin
shares its checkpoint. Most export tests reuse it, so the suite trains and exports it only once.
`trained_run` trains, once per width, the runs whose masks saturate as a finished run's do, for
the tests of the parity bound.
"""

import dataclasses
import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from aur_tf import train_lib
from aur_tf.config import Config
from export import onnx as export_onnx

IMAGE_SIZE = 32


def _strokes(rng, count, horizontal):
    """`[count, 32, 32, 1]` float32 images with two bright strokes each."""
    images = np.zeros((count, IMAGE_SIZE, IMAGE_SIZE, 1), np.float32)
    for image in images:
        for _ in range(2):
            at = rng.integers(4, IMAGE_SIZE - 4)
            start, stop = sorted(rng.integers(2, IMAGE_SIZE - 2, 2))
            if horizontal:
                image[at, start : stop + 2] = 1.0
            else:
                image[start : stop + 2, at] = 1.0
    return images


@dataclasses.dataclass(frozen=True)
class ExportedRun:
    config: Config
    workdir: Path
    report: dict
    log: list
    inverted_workdir: Path
    inverted_report: dict
    mixtures: np.ndarray  # [8, 32, 32, 1] float32 natural validation mixtures

    @property
    def out_dir(self):
        return Path(self.report["out_dir"])

    @property
    def onnx_path(self):
        return str(self.out_dir / export_onnx.ONNX_FILE)

    @property
    def saved_model_path(self):
        return str(self.out_dir / export_onnx.SAVED_MODEL)

    @property
    def inverted_onnx_path(self):
        return self.inverted_report["files"]["onnx"]


def stroke_run_config(root, **settings):
    """The config of a tiny run in `root/run` on strokes, writing its npz sources into `root`.

    `settings` override the defaults (width 4, 4 unsupervised steps of 8 pairs, 16 validation and
    16 test mixtures).
    """
    root = Path(root)
    root.mkdir()
    rng = np.random.default_rng(0)
    sources = []
    for name, horizontal in (("a", True), ("b", False)):
        path = root / f"{name}.npz"
        np.savez(path, x_train=_strokes(rng, 64, horizontal), x_test=_strokes(rng, 16, horizontal))
        sources.append(f"npz:{path}")
    defaults = dict(
        train_mixtures=64,
        validation_mixtures=16,
        test_mixtures=16,
        mask_width=4,
        disc_width=4,
        batch_pairs=8,
        train_steps=4,
        eval_every=4,
        checkpoint_every=4,
        log_every=4,
    )
    return Config(
        workdir=str(root / "run"),
        source_a=sources[0],
        source_b=sources[1],
        cache_dir=str(root / "cache"),
        **{**defaults, **settings},
    )


def build_exported_run(root):
    """Trains and exports the shared tiny run under `root`."""
    root = Path(root)
    config = stroke_run_config(root)
    train_lib.train(config)
    log = []
    report = export_onnx.export_run(config.workdir, fp16=True, int8=True, log=log.append)

    # The inverted twin: the same checkpoint, declared as trained on inverted images.
    inverted = root / "inverted_run"
    shutil.copytree(Path(config.workdir) / "checkpoints", inverted / "checkpoints")
    (inverted / "config.json").write_text(
        json.dumps({**config.to_dict(), "workdir": str(inverted), "invert": True})
    )
    inverted_report = export_onnx.export_run(str(inverted), log=lambda line: None)
    mixtures, _, _ = export_onnx.parity_mixtures(config, count=8)
    return ExportedRun(
        config, Path(config.workdir), report, log, inverted, inverted_report, mixtures
    )


@pytest.fixture(scope="session")
def exported(tmp_path_factory):
    return build_exported_run(str(tmp_path_factory.getbasetemp() / "exported_run"))


@pytest.fixture(scope="session")
def trained_run(tmp_path_factory):
    """`trained_run(width)`: the config of a stroke run of that mask width trained to saturated
    masks (supervised, learning rate 1e-2, 60 steps; see the export tests for why), trained once
    per width and session."""
    runs = {}

    def get(width):
        if width not in runs:
            root = tmp_path_factory.mktemp(f"trained_width{width}") / "sources"
            runs[width] = stroke_run_config(
                root,
                mode="supervised",
                mask_width=width,
                mask_learning_rate=1e-2,
                train_steps=60,
                eval_every=60,
                checkpoint_every=60,
                log_every=60,
            )
            train_lib.train(runs[width])
        return runs[width]

    return get


# --- parity and artifacts ---------------------------------------------------------------------
