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


@pytest.mark.parametrize(
    "name, record, source_a",
    [
        ("mnist", "mnist_fast_test_seed0", "mnist?labels=0-4"),
        ("fashion_shoes_bags", "fashion_shoes_bags_fade_seed0", "fashion_mnist?labels=5,7,9"),
    ],
)
def test_the_shipped_metadata_carries_the_runs_validation_and_test_figures(name, record, source_a):
    separator = Separator.load(name, provider="cpu")
    with open(os.path.join(SHIPPED_DIR, name, "export.json")) as f:
        exported = json.load(f)
    assert exported["metadata"].items() <= separator.metadata.items()
    assert separator.metadata["eval_split"] == "validation"
    with open(os.path.join(ROOT, "docs", "results", "runs", record, "eval.json")) as f:
        run = json.load(f)
    # The shipped file is the net the committed run's test scored (the average of its newest
    # checkpoints), with that run's figures.
    assert separator.metadata["averaged_steps"] == ",".join(
        str(step) for step in run["selected"]["averaged_steps"]
    )
    assert float(separator.metadata["eval_psnr_db"]) == run["selected"]["psnr_db"]
    assert float(separator.metadata["test_psnr_db"]) == run["test"]["psnr_db"]
    assert float(separator.metadata["test_ssim"]) == run["test"]["ssim"]
    assert run["test"]["psnr_db"] > run["test"]["half_mask_psnr_db"] + 3
    assert json.loads(separator.metadata["training_config"])["source_a"] == source_a


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
