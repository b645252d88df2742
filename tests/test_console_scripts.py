"""The console scripts setup.cfg installs: each names a callable, and an installed one runs."""

import ast
import configparser
import importlib.util
import os
import subprocess
import sys

import pytest
from cli_helpers import ROOT


def _console_scripts():
    parser = configparser.ConfigParser()
    parser.read(os.path.join(ROOT, "setup.cfg"))
    lines = parser["options.entry_points"]["console_scripts"].strip().splitlines()
    return dict(line.replace(" ", "").split("=") for line in lines)


SCRIPTS = _console_scripts()


def test_every_user_command_has_a_console_script():
    assert set(SCRIPTS) == {
        "aur-tf-train",
        "aur-tf-baselines",
        "aur-tf-report",
        "aur-tf-score",
        "aur-tf-export",
        "aur-tf-separate",
    }


@pytest.mark.parametrize("name", sorted(SCRIPTS))
def test_each_console_script_names_a_function(name):
    """Read, not imported: entry modules define absl flags, which one process can hold once."""
    module, _, function = SCRIPTS[name].partition(":")
    path = importlib.util.find_spec(module).origin
    with open(path) as f:
        tree = ast.parse(f.read())
    assert function in {node.name for node in tree.body if isinstance(node, ast.FunctionDef)}


@pytest.mark.slow
def test_the_installed_training_script_runs_main(tmp_path):
    """pip wrote the script beside this interpreter (`pip install -e .`)."""
    script = os.path.join(os.path.dirname(sys.executable), "aur-tf-train")
    result = subprocess.run(
        [script, "--train_steps=0", f"--workdir={tmp_path}"],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=tmp_path,
    )
    assert result.returncode == 2
    assert result.stderr.strip() == "error: --train_steps=0 must be a positive integer"
