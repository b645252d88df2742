import dataclasses
import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest

from aur_tf import averaging, train_lib
from aur_tf.baselines import glo, runner
from aur_tf.data.mixtures import MixtureSplit
from aur_tf.errors import UserError
from aur_tf.unsupervised import runs, scores

TINY_JUDGE = scores.JudgeSettings(width=4, steps=5, batch=8)


def _digit_halves(npz_source):
    """Data settings of the runs here: the npz source's labels 0-4 vs 5-9, 40 / 16 / 16 mixtures."""
    return dict(
        channels=1,
        source_a=f"npz:{npz_source}?labels=0-4",
        source_b=f"npz:{npz_source}?labels=5-9",
        train_mixtures=40,
        validation_mixtures=16,
        test_mixtures=16,
    )


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory, npz_source):
    """A tiny run on the npz source's labels 0-4 vs 5-9 with checkpoints at steps 3 and 6, and
    their average as its selected net."""
    from synthetic import tiny_config

    root = tmp_path_factory.mktemp("unsupervised")
    config = tiny_config(
        root / "run", **_digit_halves(npz_source), keep_checkpoints=5, average_checkpoints=2
    )
    train_lib.train(config)
    return config


@pytest.mark.slow
def test_every_checkpoint_is_scored_once(trained_run):
    lines = []
    record = runs.score_run(trained_run.workdir, mixtures=8, judge=TINY_JUDGE, log=lines.append)
    assert [entry["step"] for entry in record["checkpoints"]] == [3, 6]
    assert len(lines) == 3 and lines[0].startswith("selected net, step 6: remix_consistency_db ")
    assert lines[1].startswith("step 3: remix_consistency_db ")
    assert record["selected"]["averaged_steps"] == [3, 6]
    assert set(record["selected"]) == {"averaged_steps", *record["checkpoints"][0]}
    # The scores are the average's, as the test scoring and export take it.
    average, _ = averaging.average_mask_net(trained_run.workdir, trained_run, 2)
    held_out = runs.held_out_mixtures(trained_run, 8)
    expected = runs.score_separation(
        6, scores.mask_separation(average), held_out, TINY_JUDGE, log=print
    )
    assert record["selected"] == {"averaged_steps": [3, 6], **expected}
    with open(f"{trained_run.workdir}/{runs.SCORES_FILE}") as f:
        assert json.load(f) == json.loads(json.dumps(record))
    again = []
    assert (
        runs.score_run(trained_run.workdir, mixtures=8, judge=TINY_JUDGE, log=again.append)
        == record
    )
    assert again == []  # nothing left to score
    other = runs.score_run(
        trained_run.workdir, mixtures=6, judge=TINY_JUDGE, latest_only=True, log=again.append
    )
    assert [entry["step"] for entry in other["checkpoints"]] == [6]
    assert other["selected"]["averaged_steps"] == [3, 6]


@pytest.mark.slow
def test_the_selected_net_is_scored_again_when_eval_json_names_another(trained_run, tmp_path):
    workdir = tmp_path / "run"
    shutil.copytree(trained_run.workdir, workdir, ignore=shutil.ignore_patterns(runs.SCORES_FILE))
    runs.score_run(str(workdir), mixtures=8, judge=TINY_JUDGE, log=print)
    record = json.loads((workdir / "eval.json").read_text())
    record["selected"]["averaged_steps"] = [6]
    (workdir / "eval.json").write_text(json.dumps(record))
    lines = []
    rescored = runs.score_run(str(workdir), mixtures=8, judge=TINY_JUDGE, log=lines.append)
    assert [line.split(":")[0] for line in lines] == ["selected net, step 6"]
    assert rescored["selected"]["averaged_steps"] == [6]


@pytest.mark.slow
def test_a_run_without_a_selected_net_has_no_selected_scores(trained_run, tmp_path):
    workdir = tmp_path / "run"
    shutil.copytree(trained_run.workdir, workdir, ignore=shutil.ignore_patterns(runs.SCORES_FILE))
    shutil.rmtree(workdir / "selected")
    assert "selected" not in runs.score_run(str(workdir), mixtures=8, judge=TINY_JUDGE, log=print)


def _garbage_sources(load):
    """`load` (a `load_mixture_dataset`) with the validation split's clean sources replaced by
    noise; the mixtures stay."""

    def with_garbage_sources(config):
        data = load(config)
        garbage = np.random.default_rng(1).random(data.validation.sources_a.shape, np.float32)
        return dataclasses.replace(
            data, validation=MixtureSplit(data.validation.mixtures, garbage, garbage[::-1])
        )

    return with_garbage_sources


@pytest.mark.slow
def test_scores_never_read_the_clean_sources(trained_run, tmp_path, monkeypatch):
    """Replacing the validation split's clean sources by garbage changes no score."""
    honest = runs.score_run(trained_run.workdir, mixtures=8, judge=TINY_JUDGE, log=print)
    with_garbage_sources = _garbage_sources(runs.load_mixture_dataset)

    monkeypatch.setattr(runs, "load_mixture_dataset", with_garbage_sources)
    blind_workdir = tmp_path / "blind"
    shutil.copytree(
        trained_run.workdir, blind_workdir, ignore=shutil.ignore_patterns(runs.SCORES_FILE)
    )
    blind = runs.score_run(str(blind_workdir), mixtures=8, judge=TINY_JUDGE, log=print)
    assert blind == honest


@pytest.mark.slow
def test_validation_mixtures_the_caller_holds_are_scored_instead_of_loaded(trained_run, tmp_path):
    """A run trained on a dataset it was given is scored on that dataset's mixtures."""
    mixtures = runs.load_mixture_dataset(trained_run).validation.mixtures
    scored = {}
    for name, given in (("loaded", None), ("same", mixtures), ("other", 1 - mixtures)):
        workdir = tmp_path / name
        shutil.copytree(
            trained_run.workdir, workdir, ignore=shutil.ignore_patterns(runs.SCORES_FILE)
        )
        scored[name] = runs.score_run(
            str(workdir), mixtures=8, judge=TINY_JUDGE, log=print, validation_mixtures=given
        )["checkpoints"]
    assert scored["same"] == scored["loaded"]
    assert scored["other"] != scored["loaded"]


@pytest.mark.slow
@pytest.mark.parametrize("damage", ["garbage", "list"])
def test_an_unreadable_scores_file_is_scored_again(trained_run, tmp_path, damage):
    workdir = tmp_path / "run"
    shutil.copytree(trained_run.workdir, workdir, ignore=shutil.ignore_patterns(runs.SCORES_FILE))
    (workdir / runs.SCORES_FILE).write_text("[1, 2]" if damage == "list" else "{not json")
    record = runs.score_run(str(workdir), mixtures=8, judge=TINY_JUDGE, log=print)
    assert [entry["step"] for entry in record["checkpoints"]] == [3, 6]


@pytest.mark.slow
def test_a_fifo_in_place_of_the_scores_file_is_refused_without_blocking(trained_run, tmp_path):
    workdir = tmp_path / "run"
    shutil.copytree(trained_run.workdir, workdir, ignore=shutil.ignore_patterns(runs.SCORES_FILE))
    os.mkfifo(workdir / runs.SCORES_FILE)
    with pytest.raises(UserError, match=f"cannot write .*{runs.SCORES_FILE}"):
        runs.score_run(str(workdir), mixtures=8, judge=TINY_JUDGE, log=print)


# --- baselines ------------------------------------------------------------------------------

TINY_GLO = glo.GloSettings(
    glo_latent_dim=4, glo_width=4, glo_batch_size=8, glo_train_steps=2, glo_test_steps=2
)


def _baseline(make_config, method, npz_source, name=None, data=None):
    """The config of a baseline on the npz source's labels 0-4 vs 5-9, run (and so scored) with
    `data` if given, else with the data its config loads."""
    config = make_config(name or method, **_digit_halves(npz_source))
    runner.run_baseline(method, config, glo_settings=TINY_GLO, data=data, judge=TINY_JUDGE)
    return config


def _read_scores(workdir):
    with open(os.path.join(workdir, runs.SCORES_FILE)) as f:
        return json.load(f)


@pytest.mark.parametrize("method", ["identity", "half_mask", "rpca"])
def test_a_baseline_is_scored_again_as_it_scored_itself(make_config, npz_source, method):
    workdir = _baseline(make_config, method, npz_source).workdir
    written = _read_scores(workdir)
    assert [entry["step"] for entry in written["checkpoints"]] == [0]
    os.remove(os.path.join(workdir, runs.SCORES_FILE))
    lines = []
    assert runs.score_run(workdir, judge=TINY_JUDGE, log=lines.append) == written
    assert _read_scores(workdir) == written
    assert len(lines) == 1 and lines[0].startswith("step 0: remix_consistency_db ")
    again = []
    assert runs.score_run(workdir, judge=TINY_JUDGE, log=again.append) == written
    assert again == []  # nothing left to score


def test_baseline_scores_never_read_the_clean_sources(make_config, npz_source, monkeypatch):
    """Garbage in place of the validation split's clean sources changes no score of a baseline,
    neither when it runs nor when it is scored again."""
    honest = _read_scores(_baseline(make_config, "rpca", npz_source).workdir)
    with_garbage_sources = _garbage_sources(runs.load_mixture_dataset)

    blind_config = _baseline(make_config, "rpca", npz_source, "blind_rpca")
    blind_data = with_garbage_sources(blind_config)
    blind = _baseline(make_config, "rpca", npz_source, "blind_rpca", data=blind_data)
    assert _read_scores(blind.workdir) == honest
    os.remove(os.path.join(blind.workdir, runs.SCORES_FILE))
    monkeypatch.setattr(runs, "load_mixture_dataset", with_garbage_sources)
    assert runs.score_run(blind.workdir, judge=TINY_JUDGE, log=print) == honest


def test_a_glo_baseline_is_not_scored_again_but_run_again(make_config, npz_source):
    """Its trained generators are not saved: the scores it wrote when it ran are all there is."""
    workdir = _baseline(make_config, "glo", npz_source).workdir
    written = _read_scores(workdir)
    assert [entry["step"] for entry in written["checkpoints"]] == [TINY_GLO.glo_train_steps]
    assert runs.score_run(workdir, judge=TINY_JUDGE, log=print) == written
    with pytest.raises(UserError, match="glo baseline without unsupervised scores for these"):
        runs.score_run(workdir, mixtures=8, judge=TINY_JUDGE, log=print)
    os.remove(os.path.join(workdir, runs.SCORES_FILE))
    with pytest.raises(UserError, match=r"run the baseline again \(python -m aur_tf.baselines"):
        runs.score_run(workdir, judge=TINY_JUDGE, log=print)


@pytest.mark.slow
def test_the_command_line_scores_a_baseline_and_refuses_an_unscored_glo(make_config, npz_source):
    from cli_helpers import ROOT, assert_one_line_error

    def score(workdir):
        os.remove(os.path.join(workdir, runs.SCORES_FILE))
        return subprocess.run(
            [
                sys.executable,
                "-m",
                "aur_tf.unsupervised",
                f"--workdir={workdir}",
                "--mixtures=8",
                "--judge_steps=5",
            ],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=300,
        )

    identity = _baseline(make_config, "identity", npz_source).workdir
    done = score(identity)
    assert done.returncode == 0, done.stderr
    assert "the identity baseline scored" in done.stdout
    [entry] = _read_scores(identity)["checkpoints"]
    assert entry["step"] == 0 and entry["energy_share"] == 1.0
    refused = score(_baseline(make_config, "glo", npz_source).workdir)
    assert_one_line_error(refused.returncode, refused.stderr, "run the baseline again")
