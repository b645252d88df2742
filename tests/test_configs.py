import json
import pathlib

import pytest
from cli_helpers import config_from_flags
from synthetic import tiny_config

from aur_tf.config import Config
from aur_tf.errors import UserError

REPOSITORY = pathlib.Path(__file__).resolve().parents[1]
# Settings each run gave on its own command line (workdir, seed, keep_checkpoints) or that do not
# change what it learns (both kernel kinds train alike: tests/test_train_lib.py).
NOT_FROM_THE_FLAGFILE = {"workdir", "seed", "keep_checkpoints", "conv_kernels"}


def _settings_of_flagfile(flagfile):
    return config_from_flags(f"--flagfile={flagfile}").to_dict()


# A flagfile read by another (mnist.cfg reads mnist_paper.cfg) changes both: each must still give
# the settings of the results the README quotes for it.
@pytest.mark.parametrize(
    "flagfile, record",
    [
        ("configs/mnist_paper.cfg", "mnist_paper_b32_beta09_seed0"),
        ("configs/mnist.cfg", "mnist_fast_test_seed0"),
        ("configs/fashion_shoes_bags.cfg", "fashion_shoes_bags_fade_seed0"),
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


def test_the_defaults_are_the_papers_mnist_setup(monkeypatch):
    """A run without flags is configs/mnist_paper.cfg's, in its workdir, so it can never take
    the workdir of the recommended configs/mnist.cfg (a resume there would refuse the width)."""
    monkeypatch.chdir(REPOSITORY)
    assert Config().to_dict() == _settings_of_flagfile("configs/mnist_paper.cfg")


def test_shoes_bags_flagfile_is_the_papers_mnist_setup_on_shoes_and_bags(monkeypatch):
    """Sec. 5: 64x64 RGB, inverted, 10k training and 5k test mixtures; all else the paper's MNIST
    setup's (mnist_paper.cfg)."""
    monkeypatch.chdir(REPOSITORY)
    settings = _settings_of_flagfile("configs/shoes_bags.cfg")
    mnist = _settings_of_flagfile("configs/mnist_paper.cfg")
    data = {
        "source_a": "folder:data/shoes",
        "source_b": "folder:data/handbags",
        "image_size": 64,
        "channels": 3,
        "invert": True,
        "train_mixtures": 10_000,
        "validation_mixtures": 5_000,
        "test_mixtures": 5_000,
    }
    assert {name: settings[name] for name in data} == data
    differing = {
        name: (value, mnist[name])
        for name, value in settings.items()
        if name not in {"workdir", *data} and mnist[name] != value
    }
    assert differing == {}
    assert (settings["mask_width"], settings["disc_width"]) == (64, 64)


@pytest.mark.parametrize(
    "settings, message",
    [
        ({"trials": 0}, "--trials=0 must be a positive integer"),
        ({"trials": 3}, "--trials=3 needs --trial_steps in 1 .. --train_steps=6, .*now 0"),
        ({"trials": 3, "trial_steps": 7}, "--trials=3 needs --trial_steps in 1 .. .*now 7"),
        ({"trial_steps": -1}, r"--trial_steps=-1 must be in 0 \.\. 1000000000"),
        ({"trial_rounds": 0}, "--trial_rounds=0 must be a positive integer"),
        ({"trial_min_score_db": float("nan")}, "--trial_min_score_db=nan must be finite"),
        ({"trial_min_score_db": -1.0}, "--trial_min_score_db=-1.0 must be finite and >= 0"),
        (
            {"trials": 3, "trial_steps": 3, "mode": "supervised"},
            "--trials=3 compares seeds by an unsupervised score: it needs --mode=unsupervised",
        ),
        (
            {"trials": 3, "trial_steps": 3, "strategy": "multi_worker"},
            "--trials=3 runs on one machine",
        ),
        (
            {"trials": 3, "trial_steps": 3, "unsupervised_mixtures": 0},
            "remix consistency and judge AUC, which need --unsupervised_mixtures",
        ),
        (
            {"trials": 3, "trial_steps": 3, "validation_mixtures": 3},
            "which need --unsupervised_mixtures and --validation_mixtures of at least 4",
        ),
        (
            {"trials": 3, "trial_steps": 3, "trial_rounds": 2, "seed": 2**32 - 3},
            "would use seeds up to 4294967298, past 4294967295",
        ),
    ],
)
def test_bad_seed_trial_settings_are_one_line_errors(tmp_path, settings, message):
    with pytest.raises(UserError, match=message) as refused:
        tiny_config(tmp_path, **settings)
    assert "\n" not in str(refused.value)


def test_seed_trial_settings_at_their_limits_are_accepted(tmp_path):
    tiny_config(tmp_path, trials=3, trial_steps=6, trial_rounds=2, trial_min_score_db=18.5)
    tiny_config(tmp_path, trials=2, trial_steps=1, seed=2**32 - 2)
    tiny_config(tmp_path, trial_steps=1000, mode="supervised", strategy="multi_worker")


def test_a_bad_seed_trial_flag_is_one_line_on_the_command_line(run_cli, tmp_path):
    status, _, err = run_cli(f"--workdir={tmp_path / 'run'}", "--trials=4")
    assert status == 2
    assert err == (
        "error: --trials=4 needs --trial_steps in 1 .. --train_steps=25000, the steps each "
        "trial trains (now 0)\n"
    )


@pytest.mark.parametrize(
    "settings, message",
    [
        ({"beta_fade_start": -1}, r"--beta_fade_start=-1 must be in 0 \.\. 1000000000"),
        ({"beta_fade_steps": -5}, r"--beta_fade_steps=-5 must be in 0 \.\. 1000000000"),
        ({"beta_fade_steps": 10**9 + 1}, r"--beta_fade_steps=1000000001 must be in 0 \.\. "),
        (
            {"learning_rate_decay_start": -1},
            r"--learning_rate_decay_start=-1 must be in 0 \.\. 1000000000",
        ),
        (
            {"learning_rate_decay_steps": 10**9 + 1},
            r"--learning_rate_decay_steps=1000000001 must be in 0 \.\. ",
        ),
        ({"instance_noise": -0.1}, r"--instance_noise=-0\.1 must be finite and >= 0"),
        ({"instance_noise": float("nan")}, r"--instance_noise=nan must be finite and >= 0"),
        ({"instance_noise_steps": -1}, r"--instance_noise_steps=-1 must be in 0 \.\. 1000000000"),
    ],
)
def test_bad_fade_and_decay_settings_are_one_line_errors(tmp_path, settings, message):
    with pytest.raises(UserError, match=message) as refused:
        tiny_config(tmp_path, **settings)
    assert "\n" not in str(refused.value)


def test_fade_and_decay_settings_at_their_limits_are_accepted(tmp_path):
    tiny_config(tmp_path, beta_fade_start=0, beta_fade_steps=0)
    tiny_config(tmp_path, beta_fade_start=10**9, beta_fade_steps=10**9)
    # A fade that changes nothing (no energy term, or none to fade) is allowed.
    tiny_config(tmp_path, beta=0.0, beta_fade_steps=100)
    tiny_config(tmp_path, energy="none", beta_fade_steps=100)
    tiny_config(tmp_path, learning_rate_decay_start=10**9, learning_rate_decay_steps=10**9)
    tiny_config(tmp_path, instance_noise=0.0, instance_noise_steps=10**9)
