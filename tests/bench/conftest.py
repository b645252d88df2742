"""The bench scripts as modules, one fixture each (they are scripts, not a package)."""

import importlib.util
import os

import pytest
from cli_helpers import ROOT, write_npz_source
from synthetic import tiny_config


def _load_script(name):
    spec = importlib.util.spec_from_file_location(name, os.path.join(ROOT, "bench", f"{name}.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="session")
def train_speed():
    return _load_script("train_speed")


@pytest.fixture(scope="session")
def class_assignment():
    return _load_script("class_assignment")


@pytest.fixture(scope="session")
def unsupervised_score():
    return _load_script("unsupervised_score")


@pytest.fixture(scope="session")
def export_speed():
    return _load_script("export_speed")


@pytest.fixture(scope="session")
def shipped_model():
    return _load_script("shipped_model")


@pytest.fixture(scope="session")
def checkpoint_averaging():
    return _load_script("checkpoint_averaging")


@pytest.fixture
def labelled_npz_config(tmp_path):
    """`labelled_npz_config(labels_a, labels_b, **overrides)` -> a tiny grayscale Config whose two
    sources are label filters (e.g. "0-4") of one npz archive of 60 train / 40 test 28x28 blobs
    with labels 0-9 in turn, so that a bench script can rebuild the run's mixtures."""
    archive = tmp_path / "digits.npz"
    write_npz_source(archive, train_count=60, test_count=40)

    def make(labels_a, labels_b, **overrides):
        settings = dict(
            source_a=f"npz:{archive}?labels={labels_a}",
            source_b=f"npz:{archive}?labels={labels_b}",
            channels=1,
            train_mixtures=12,
            validation_mixtures=8,
            test_mixtures=8,
            batch_pairs=4,
        )
        return tiny_config(tmp_path / "run", **dict(settings, **overrides))

    return make
