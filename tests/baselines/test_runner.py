"""The baselines runner: eval.json with train_lib's fields, samples.npz, the command line."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from aur_tf import evaluation, machine, rundir
from aur_tf.baselines import METHODS, glo, runner
from aur_tf.errors import UserError
from aur_tf.unsupervised import runs, scores

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
# The fields of train_lib's eval.json that apply to a method without a training history.
SHARED_FIELDS = {
    "psnr_db",
    "ssim",
    "psnr_db_a",
    "psnr_db_b",
    "ssim_a",
    "ssim_b",
    "permutation",
    "energy_share",
    "swapped_fraction",
    "collapsed",
    "half_mask_psnr_db",
    "half_mask_ssim",
    "step",
    "train_seconds",
    "config",
    "machines",
}
TINY_GLO = glo.GloSettings(
    glo_latent_dim=4, glo_width=4, glo_batch_size=16, glo_train_steps=4, glo_test_steps=2
)
TINY_JUDGE = scores.JudgeSettings(width=4, steps=5, batch=8)


@pytest.mark.parametrize("method", METHODS)
def test_every_method_writes_eval_json_and_samples(method, make_config, stroke_data):
    config = make_config(method)
    results = runner.run_baseline(
        method, config, glo_settings=TINY_GLO, data=stroke_data, judge=TINY_JUDGE
    )
    with open(os.path.join(config.workdir, "eval.json")) as f:
        written = json.load(f)
    assert SHARED_FIELDS | {"method", "method_settings", "test_seconds"} <= set(written)
    assert written["method"] == method and written["psnr_db"] == results["psnr_db"]
    assert written["config"]["source_a"] == config.source_a
    assert "mask_width" not in written["config"]
    assert written["step"] == (4 if method == "glo" else 0)
    assert written["machines"] == [machine.describe()]
    with np.load(os.path.join(config.workdir, rundir.SAMPLES_FILE)) as samples:
        assert samples["estimates_a"].shape == (rundir.SAMPLE_COUNT, 32, 32, 3)
        np.testing.assert_array_equal(
            samples["sources_b"], stroke_data.validation.sources_b[: rundir.SAMPLE_COUNT]
        )
    with open(os.path.join(config.workdir, runs.SCORES_FILE)) as f:
        unsupervised = json.load(f)
    assert unsupervised["settings"] == runs.settings_of(runs.MIXTURES, TINY_JUDGE)
    [entry] = unsupervised["checkpoints"]
    assert set(entry) == {
        "step",
        "remix_consistency_db",
        "judge_auc",
        "energy_share",
        "mask_confidence",
    }
    assert entry["step"] == written["step"]


def test_reference_rows_score_as_their_definitions(make_config, stroke_data):
    half = runner.run_baseline("half_mask", make_config("half"), data=stroke_data, judge=TINY_JUDGE)
    assert half["psnr_db"] == pytest.approx(half["half_mask_psnr_db"])
    identity = runner.run_baseline(
        "identity", make_config("identity"), data=stroke_data, judge=TINY_JUDGE
    )
    assert identity["collapsed"] and identity["energy_share"] in (0.0, 1.0)


def test_identity_scores_as_a_collapse_from_mixtures_alone(make_config, stroke_data):
    """Identity's remixes are the mixtures themselves: remix consistency at its ceiling and a
    judge at chance, everything in one output, which the energy share alone tells."""
    config = make_config()
    runner.run_baseline("identity", config, data=stroke_data, judge=TINY_JUDGE)
    with open(os.path.join(config.workdir, runs.SCORES_FILE)) as f:
        [entry] = json.load(f)["checkpoints"]
    assert entry["energy_share"] in (0.0, 1.0) and evaluation.is_collapsed(entry["energy_share"])
    assert entry["remix_consistency_db"] == pytest.approx(100.0)
    assert entry["judge_auc"] == 0.5
    assert entry["mask_confidence"] == 1.0


@pytest.mark.parametrize("method", ["identity", "half_mask", "rpca"])
def test_separations_are_on_the_mixture_scale(method, stroke_data):
    mixtures = stroke_data.validation.mixtures[:8]
    x_tilde, b_tilde = runner.separation(method)(mixtures)
    assert x_tilde.dtype == b_tilde.dtype == np.float32 and x_tilde.shape == mixtures.shape
    np.testing.assert_allclose(x_tilde + b_tilde, mixtures, atol=1e-5)


def test_too_few_validation_mixtures_to_score_are_refused_before_the_work(make_config, monkeypatch):
    from synthetic import stroke_dataset

    monkeypatch.setattr(glo.Glo, "fit", lambda *args: pytest.fail("GLO trained"))
    with pytest.raises(UserError, match="need at least 4 validation mixtures"):
        runner.run_baseline("glo", make_config(), glo_settings=TINY_GLO, data=stroke_dataset(16, 3))


def test_samples_follow_the_scored_permutation(make_config, stroke_data):
    """Identity puts everything in output 0; the estimate drawn as source a is the one scored so."""
    config = make_config()
    results = runner.run_baseline("identity", config, data=stroke_data, judge=TINY_JUDGE)
    with np.load(os.path.join(config.workdir, rundir.SAMPLES_FILE)) as samples:
        matched_to_a = results["permutation"] == [0, 1]
        everything = samples["estimates_a" if matched_to_a else "estimates_b"]
        np.testing.assert_allclose(
            everything, 2 * stroke_data.validation.mixtures[: rundir.SAMPLE_COUNT]
        )


def test_refuses_a_workdir_of_another_run(make_config, stroke_data):
    config = make_config()
    runner.run_baseline("half_mask", config, data=stroke_data, judge=TINY_JUDGE)
    with pytest.raises(UserError, match="holds results of half_mask"):
        runner.run_baseline("identity", config, data=stroke_data)
    os.makedirs(os.path.join(config.workdir + "_net", "checkpoints"))
    with pytest.raises(UserError, match="mask-net training run"):
        runner.run_baseline(
            "identity", make_config(workdir=config.workdir + "_net"), data=stroke_data
        )


@pytest.mark.slow
def test_command_line_reads_main_flagfiles_and_fails_in_one_line(tmp_path):
    rng = np.random.default_rng(0)
    source = tmp_path / "blobs.npz"
    np.savez(
        source,
        x_train=(rng.random((60, 28, 28)) > 0.8).astype(np.uint8) * 255,
        y_train=np.arange(60) % 10,
        x_test=(rng.random((40, 28, 28)) > 0.8).astype(np.uint8) * 255,
        y_test=np.arange(40) % 10,
    )
    flagfile = tmp_path / "tiny.cfg"
    flagfile.write_text(
        "\n".join(
            [
                "--mode=unsupervised",
                "--alpha=5",
                f"--source_a=npz:{source}?labels=0-4",
                f"--source_b=npz:{source}?labels=5-9",
                "--train_mixtures=20",
                "--test_mixtures=16",
                "--batch_pairs=4",
                f"--cache_dir={tmp_path / 'cache'}",
            ]
        )
    )
    command = [sys.executable, "-m", "aur_tf.baselines", f"--flagfile={flagfile}"]
    done = subprocess.run(
        command + ["--method=rpca", f"--workdir={tmp_path / 'rpca'}"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    assert "done: rpca" in done.stdout
    assert os.path.exists(tmp_path / "rpca" / "eval.json")
    bad = subprocess.run(
        command + ["--method=nmf", f"--workdir={tmp_path / 'nmf'}"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert bad.returncode == 2
    errors = [line for line in bad.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1 and "--method=nmf" in errors[0]
