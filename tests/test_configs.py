import json
import pathlib

import pytest

REPOSITORY = pathlib.Path(__file__).resolve().parents[1]
# Settings each run gave on its own command line (workdir, seed) or that do not change what it
# learns (both kernel kinds train alike: tests/test_train_lib.py).
NOT_FROM_THE_FLAGFILE = {"workdir", "seed", "conv_kernels"}


def _settings_of_flagfile(flagfile):
    from absl import flags

    import main  # noqa: F401 (defines the flags)
    from aur_tf import cli
    from aur_tf.config import Config

    flags.FLAGS.unparse_flags()
    cli.parse_flags(["main.py", f"--flagfile={flagfile}"])
    return cli.settings_from_flags(Config).to_dict()


# A flagfile read by another (mnist_fast.cfg reads mnist.cfg) changes both: each must still give
# the settings of the results the README quotes for it.
@pytest.mark.parametrize(
    "flagfile, record",
    [
        ("configs/mnist.cfg", "mnist_paper_b32_beta09_seed0"),
        ("configs/mnist_fast.cfg", "mnist_fast_seed0"),
    ],
)
def test_each_flagfile_gives_the_settings_of_its_committed_results(flagfile, record, monkeypatch):
    monkeypatch.chdir(REPOSITORY)
    settings = _settings_of_flagfile(flagfile)
    with open(REPOSITORY / "docs/results/runs" / record / "eval.json") as f:
        recorded = json.load(f)["config"]
    # A setting the record predates (validation_mixtures) cannot have differed.
    differing = {
        name: (value, recorded[name])
        for name, value in settings.items()
        if name not in NOT_FROM_THE_FLAGFILE and name in recorded and recorded[name] != value
    }
    assert differing == {}


@pytest.mark.parametrize(
    "flagfile",
    sorted(p.relative_to(REPOSITORY).as_posix() for p in (REPOSITORY / "configs").glob("*.cfg")),
)
def test_every_flagfile_gives_valid_settings(flagfile, monkeypatch):
    monkeypatch.chdir(REPOSITORY)
    settings = _settings_of_flagfile(flagfile)
    assert settings["workdir"].startswith("runs/")
    assert settings["workdir"] != "runs/mnist" or flagfile == "configs/mnist.cfg"
