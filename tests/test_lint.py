"""The code passes ruff's lint and format checks, with the settings in pyproject.toml."""

import os
import shutil
import subprocess
import sys

import pytest
from cli_helpers import ROOT


def _ruff():
    """ruff beside this interpreter (the test extra installs it), else on PATH."""
    return shutil.which("ruff", path=os.path.dirname(sys.executable)) or shutil.which("ruff")


@pytest.mark.parametrize("command", [["check", "."], ["format", "--check", "."]])
def test_ruff(command):
    ruff = _ruff()
    assert ruff, "ruff is not installed: pip install -e '.[test]'"
    result = subprocess.run([ruff, *command], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
