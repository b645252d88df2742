"""The command line: flags -> Config -> train, and one-line errors with exit status 2."""

import json
import re

import pytest
from cli_helpers import assert_one_line_error, run_main


def _assert_one_line_error(result, expected):
    assert_one_line_error(result.returncode, result.stderr, re.escape(expected))


@pytest.mark.slow
def test_flagfile_run_writes_eval_json(tmp_path, npz_source):
    flagfile = tmp_path / "tiny.cfg"
    flagfile.write_text(
        "\n".join(
            [
                f"--source_a=npz:{npz_source}?labels=0-4",
                f"--source_b=npz:{npz_source}?labels=5-9",
                "--train_mixtures=60",
                "--test_mixtures=20",
                "--mask_width=4",
                "--disc_width=4",
                "--batch_pairs=4",
                "--train_steps=4",
                "--eval_every=2",
                "--checkpoint_every=2",
                "--log_every=2",
            ]
        )
    )
    workdir = tmp_path / "run"
    result = run_main(f"--flagfile={flagfile}", f"--workdir={workdir}")
    assert result.returncode == 0, result.stderr
    assert "step 4/4" in result.stdout and "steps/s" in result.stdout and "ETA" in result.stdout
    assert "done: step 4" in result.stdout
    assert re.search(
        r"on 1 replica\(s\), transposed convolutions (by phases|native)\n", result.stdout
    )
    with open(workdir / "eval.json") as f:
        assert json.load(f)["step"] == 4


@pytest.mark.parametrize(
    "args, expected",
    [
        (["--no_such_flag=1"], "no_such_flag"),
        (["--train_steps=many"], "train_steps"),
        (["--image_size=48"], "--image_size=48 is not one of: 32, 64"),
        (["--energy=sum"], "--energy=sum"),
        (["--conv_kernels=fast"], "--conv_kernels=fast is not one of: auto, phases, native"),
        (["--batch_pairs=100", "--train_mixtures=50"], "--batch_pairs=100"),
        (["stray_argument"], "unexpected arguments"),
        (["--source_a=oops:thing"], "unknown source kind 'oops'"),
    ],
)
def test_bad_flags_are_one_line_errors(tmp_path, args, expected):
    _assert_one_line_error(run_main(f"--workdir={tmp_path / 'run'}", *args), expected)


def test_label_filter_selecting_nothing_is_a_one_line_error(tmp_path, npz_source):
    result = run_main(
        f"--workdir={tmp_path / 'run'}",
        f"--source_a=npz:{npz_source}?labels=42",
        f"--source_b=npz:{npz_source}?labels=5-9",
        "--train_mixtures=60",
        "--test_mixtures=20",
        "--batch_pairs=4",
    )
    _assert_one_line_error(result, "42")


def test_wrong_channel_count_is_a_one_line_error(tmp_path, npz_source):
    result = run_main(
        f"--workdir={tmp_path / 'run'}",
        f"--source_a=npz:{npz_source}?labels=0-4",
        f"--source_b=npz:{npz_source}?labels=5-9",
        "--channels=3",
        "--train_mixtures=60",
        "--test_mixtures=20",
        "--batch_pairs=4",
    )
    _assert_one_line_error(result, "--channels=3")


def test_ctrl_c_says_how_to_resume(run_cli, monkeypatch, tmp_path):
    from aur_tf import train_lib

    def interrupted(config):
        raise KeyboardInterrupt

    monkeypatch.setattr(train_lib, "train", interrupted)
    status, _, err = run_cli(f"--workdir={tmp_path / 'run'}")
    assert status == 130
    assert err == "interrupted: run the same command to resume from the last checkpoint\n"


def test_trials_go_through_the_seed_trials(run_cli, monkeypatch, tmp_path):
    from aur_tf import train_lib, trials

    chosen = []
    scores = {"psnr_db": 20.0, "ssim": 0.9, "half_mask_psnr_db": 16.0, "half_mask_ssim": 0.6}

    def train_with_trials(config):
        chosen.append(config)
        return {**scores, "step": config.train_steps, "test": scores}

    monkeypatch.setattr(trials, "train_with_trials", train_with_trials)
    monkeypatch.setattr(train_lib, "train", lambda config: pytest.fail("trained without trials"))
    status, out, err = run_cli(f"--workdir={tmp_path / 'run'}", "--trials=3", "--trial_steps=500")
    assert status == 0, err
    assert [(c.trials, c.trial_steps) for c in chosen] == [(3, 500)]
    assert out.startswith("done: step 25000, validation 20.00 dB PSNR, 0.900 SSIM; test 20.00 dB")
