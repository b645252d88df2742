"""The separators that ship with aur_tf: named, loadable without training, with their records."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest
from cli_helpers import ROOT
from PIL import Image

from aur_tf.separator import SHIPPED, SHIPPED_DIR, Separator, shipped_path


@pytest.mark.parametrize("name", sorted(SHIPPED))
def test_each_shipped_separator_loads_by_name_and_separates(name):
    separator = Separator.load(name, provider="cpu")
    assert separator.path == os.path.join(SHIPPED_DIR, SHIPPED[name])
    mixtures = np.random.default_rng(0).random((3, 32, 32, 1), np.float32) / 2
    source_a, source_b = separator.separate(mixtures)
    assert source_a.shape == source_b.shape == (3, 32, 32, 1)
    np.testing.assert_allclose(source_a + source_b, 2 * mixtures, atol=1e-5)


def test_the_shipped_metadata_carries_the_runs_validation_and_test_figures():
    separator = Separator.load("mnist", provider="cpu")
    with open(os.path.join(SHIPPED_DIR, "mnist", "export.json")) as f:
        record = json.load(f)
    assert record["metadata"].items() <= separator.metadata.items()
    assert separator.metadata["eval_split"] == "validation"
    figures = {
        key: float(separator.metadata[key])
        for key in ("eval_psnr_db", "eval_ssim", "test_psnr_db", "test_ssim")
    }
    assert figures["test_psnr_db"] > 20.4 and figures["test_ssim"] > 0.9
    assert json.loads(separator.metadata["training_config"])["source_a"] == "mnist?labels=0-4"


def test_a_path_is_never_taken_for_a_shipped_name(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "mnist").write_bytes(b"a file of the user's")
    assert shipped_path("mnist") == "mnist"
    assert shipped_path("runs/x/separator.onnx") == "runs/x/separator.onnx"


@pytest.mark.slow
def test_separating_with_a_shipped_model_needs_no_training(tmp_path):
    Image.fromarray(np.full((32, 32), 120, np.uint8)).save(tmp_path / "mix.png")
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "export.separate",
            "--model=mnist",
            f"--out={tmp_path / 'out'}",
            "--provider=cpu",
            str(tmp_path / "mix.png"),
        ],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr
    assert sorted(os.listdir(tmp_path / "out")) == ["mix_a.png", "mix_b.png"]
