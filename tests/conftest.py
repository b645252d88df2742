"""Shared fixtures: tiny synthetic sources and configs (tests/synthetic.py), so tests never need
real datasets, and the command line run in this process (tests/cli_helpers.py has the rest)."""

import logging
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import pytest  # noqa: E402
from cli_helpers import write_npz_source  # noqa: E402
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


@pytest.fixture(scope="session")
def npz_source(tmp_path_factory):
    """Path of a `write_npz_source` archive: 120 train / 40 test 28x28 blobs, labels 0-9."""
    path = tmp_path_factory.mktemp("npz") / "blobs.npz"
    write_npz_source(path)
    return str(path)


@pytest.fixture
def run_cli(capsys, monkeypatch):
    """`run_cli(*args)` -> (exit status, stdout, stderr) of main.py's flag parsing and `main`,
    run in this process; log lines go to pytest's log capture (`caplog`)."""
    from absl import flags

    import main
    from aur_tf import cli

    # main() would attach a handler to this test's captured stdout on every call.
    monkeypatch.setattr(cli, "configure_logging", lambda: None)

    def run(*args):
        flags.FLAGS.unparse_flags()
        try:
            cli.parse_flags(["main.py", *args])
            main.main(["main.py"])
            status = 0
        except SystemExit as exit_:
            status = exit_.code
        out, err = capsys.readouterr()
        return status, out, err

    return run
