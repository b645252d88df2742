"""The export suite's shared session fixture `exported`.

It trains one tiny run on synthetic strokes (horizontal vs vertical, loaded through npz sources so
the parity check rebuilds real test mixtures) and exports it once; an inverted twin shares its
checkpoint. Every export test reuses it, so the suite trains and exports only once.
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
                image[at, start:stop + 2] = 1.0
            else:
                image[start:stop + 2, at] = 1.0
    return images


@dataclasses.dataclass(frozen=True)
class ExportedRun:
    config: Config
    workdir: Path
    report: dict
    log: list
    inverted_workdir: Path
    inverted_report: dict
    mixtures: np.ndarray  # [8, 32, 32, 1] float32 natural test mixtures

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


def build_exported_run(root):
    """Trains and exports the shared tiny run under `root`."""
    root = Path(root)
    root.mkdir()
    rng = np.random.default_rng(0)
    sources = []
    for name, horizontal in (("a", True), ("b", False)):
        path = root / f"{name}.npz"
        np.savez(path, x_train=_strokes(rng, 64, horizontal), x_test=_strokes(rng, 16, horizontal))
        sources.append(f"npz:{path}")
    config = Config(workdir=str(root / "run"), source_a=sources[0], source_b=sources[1],
                    train_mixtures=64, test_mixtures=16, mask_width=4, disc_width=4,
                    batch_pairs=8, train_steps=4, eval_every=4, checkpoint_every=4, log_every=4,
                    cache_dir=str(root / "cache"))
    train_lib.train(config)
    log = []
    report = export_onnx.export_run(config.workdir, fp16=True, log=log.append)

    # The inverted twin: the same checkpoint, declared as trained on inverted images.
    inverted = root / "inverted_run"
    shutil.copytree(Path(config.workdir) / "checkpoints", inverted / "checkpoints")
    (inverted / "config.json").write_text(
        json.dumps({**config.to_dict(), "workdir": str(inverted), "invert": True}))
    inverted_report = export_onnx.export_run(str(inverted), log=lambda line: None)
    mixtures, _ = export_onnx.parity_mixtures(config, count=8)
    return ExportedRun(config, Path(config.workdir), report, log, inverted, inverted_report,
                       mixtures)


@pytest.fixture(scope="session")
def exported(tmp_path_factory):
    return build_exported_run(str(tmp_path_factory.getbasetemp() / "exported_run"))


# --- parity and artifacts ---------------------------------------------------------------------
