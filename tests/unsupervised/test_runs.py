import dataclasses
import json
import os
import shutil

import numpy as np
import pytest

from aur_tf import train_lib
from aur_tf.data.mixtures import MixtureSplit
from aur_tf.errors import UserError
from aur_tf.unsupervised import runs, scores

TINY_JUDGE = scores.JudgeSettings(width=4, steps=5, batch=8)


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory, npz_source):
    """A tiny run on the npz source's labels 0-4 vs 5-9 with checkpoints at steps 3 and 6."""
    from synthetic import tiny_config

    root = tmp_path_factory.mktemp("unsupervised")
    config = tiny_config(
        root / "run",
        channels=1,
        source_a=f"npz:{npz_source}?labels=0-4",
        source_b=f"npz:{npz_source}?labels=5-9",
        train_mixtures=40,
        validation_mixtures=16,
        test_mixtures=16,
        keep_checkpoints=5,
    )
    train_lib.train(config)
    return config


@pytest.mark.slow
def test_every_checkpoint_is_scored_once(trained_run):
    lines = []
    record = runs.score_run(trained_run.workdir, mixtures=8, judge=TINY_JUDGE, log=lines.append)
    assert [entry["step"] for entry in record["checkpoints"]] == [3, 6]
    assert len(lines) == 2 and lines[0].startswith("step 3: remix_consistency_db ")
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


@pytest.mark.slow
def test_scores_never_read_the_clean_sources(trained_run, tmp_path, monkeypatch):
    """Replacing the validation split's clean sources by garbage changes no score."""
    honest = runs.score_run(trained_run.workdir, mixtures=8, judge=TINY_JUDGE, log=print)
    load = runs.load_mixture_dataset

    def with_garbage_sources(config):
        data = load(config)
        garbage = np.random.default_rng(1).random(data.validation.sources_a.shape, np.float32)
        return dataclasses.replace(
            data, validation=MixtureSplit(data.validation.mixtures, garbage, garbage[::-1])
        )

    monkeypatch.setattr(runs, "load_mixture_dataset", with_garbage_sources)
    blind_workdir = tmp_path / "blind"
    shutil.copytree(
        trained_run.workdir, blind_workdir, ignore=shutil.ignore_patterns(runs.SCORES_FILE)
    )
    blind = runs.score_run(str(blind_workdir), mixtures=8, judge=TINY_JUDGE, log=print)
    assert blind == honest


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
