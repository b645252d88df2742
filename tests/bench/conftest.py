"""The bench scripts as modules, one fixture each (they are scripts, not a package)."""

import importlib.util
import os

import pytest
from cli_helpers import ROOT


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
