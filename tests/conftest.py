"""Shared fixtures: tiny synthetic sources and configs (tests/synthetic.py), so tests never need
real datasets."""
import logging
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import pytest  # noqa: E402

from synthetic import stroke_dataset, tiny_config  # noqa: E402


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
