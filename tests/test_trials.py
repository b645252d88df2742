"""Seed trials: the seed chosen by the combined score of remix consistency and judge AUC, from
mixtures alone, recorded, trained on and resumed."""

import dataclasses
import json
import os
import shutil
import types

import numpy as np
import pytest
from cli_helpers import snapshot
from synthetic import tiny_config

from aur_tf import evaluation, rundir, train_lib, trials
from aur_tf.errors import TrainingDiverged, UserError
from aur_tf.unsupervised import runs as unsupervised_runs
from aur_tf.unsupervised import scores as unsupervised_scores

# Remix consistency, judge AUC, their combined score and clean PSNR of every run by seed: seed 2
# has the highest combined score, seed 1 the highest remix consistency (with a judge that tells
# its remixes from mixtures) and seed 0 (the first trial) the highest PSNR, so a choice by
# remix consistency alone, by PSNR, or no choice at all, picks another.
SCORES = {0: 11.0, 1: 19.0, 2: 15.0}
JUDGE = {0: 0.5, 1: 0.9, 2: 0.55}
COMBINED = {0: 11.0, 1: 11.0, 2: 14.0}
PSNR = {0: 30.0, 1: 10.0, 2: 20.0}
RUN_FILES = ("checkpoints", "config.json", "eval.json", "samples.npz", "tensorboard")


def _score_by_seed(patch, calls, judged=None):
    """Makes every evaluation's remix consistency `SCORES[seed]`, every judge's AUC
    `JUDGE[seed]` and clean PSNR `PSNR[seed]`, the seed being that of the last `train_lib.train`
    call; `calls` gets `(config, final_test)` of every such call, `judged` (unless None) the
    mixtures every judge was given."""
    train, evaluate = train_lib.train, evaluation.evaluate

    def recording_train(config, data=None, final_test=True):
        calls.append((config, final_test))
        return train(config, data, final_test=final_test)

    def seed():
        return calls[-1][0].seed

    def judge_auc(separate, mixtures, settings):
        if judged is not None:
            judged.append(mixtures)
        return JUDGE[seed()]

    patch.setattr(train_lib, "train", recording_train)
    patch.setattr(unsupervised_scores, "remix_consistency_db", lambda *args: SCORES[seed()])
    patch.setattr(unsupervised_scores, "judge_auc", judge_auc)
    patch.setattr(evaluation, "evaluate", lambda *a: dict(evaluate(*a), psnr_db=PSNR[seed()]))


def _read(*parts):
    with open(os.path.join(*parts)) as f:
        return json.load(f)


def _remove(workdir, names):
    """Deletes the files and folders `names` of `workdir`."""
    for name in names:
        path = workdir / name
        if path.is_dir():
            shutil.rmtree(path)
        else:
            path.unlink()


@pytest.fixture(scope="module")
def trials_run(tmp_path_factory, stroke_data):
    """Three trials of 3 steps, the winner trained on to step 6."""
    config = tiny_config(tmp_path_factory.mktemp("trials") / "run", trials=3, trial_steps=3)
    calls, judged, test_scorings = [], [], []
    score_test = train_lib.score_test
    with pytest.MonkeyPatch.context() as patch:
        _score_by_seed(patch, calls, judged)
        patch.setattr(train_lib, "score_test", lambda *a: test_scorings.append(a) or score_test(*a))
        results = trials.train_with_trials(config, data=stroke_data)
    return types.SimpleNamespace(
        config=config,
        results=results,
        calls=calls,
        judged=judged,
        test_scorings=len(test_scorings),
    )


def test_the_trial_with_the_highest_combined_score_wins_not_the_most_remix_consistent(
    trials_run,
):
    workdir = trials_run.config.workdir
    assert _read(workdir, "trials.json")["winner_seed"] == 2
    assert _read(workdir, "config.json")["seed"] == 2
    assert trials_run.results["config"]["seed"] == 2
    # Seed 1 had the highest remix consistency and seed 0 the best clean PSNR: neither won.
    assert max(SCORES, key=SCORES.get) == 1
    assert _read(workdir, "trials", "seed-0", "eval.json")["psnr_db"] == PSNR[0]


def test_each_trial_is_judged_once_on_the_validation_mixtures_it_trained_with(
    trials_run, stroke_data
):
    assert len(trials_run.judged) == 3
    for mixtures in trials_run.judged:
        np.testing.assert_array_equal(mixtures, stroke_data.validation.mixtures)
    for seed in (0, 1, 2):
        scored = _read(
            trials_run.config.workdir, "trials", f"seed-{seed}", "unsupervised_scores.json"
        )
        assert [(e["step"], e["judge_auc"]) for e in scored["checkpoints"]] == [(3, JUDGE[seed])]


def test_trials_json_records_every_trial_and_why_the_winner_won(trials_run):
    choice = _read(trials_run.config.workdir, "trials.json")
    assert choice["trial_steps"] == 3
    assert [
        {k: v for k, v in trial.items() if k != "train_seconds"} for trial in choice["trials"]
    ] == [
        {
            "seed": seed,
            "round": 0,
            "workdir": f"trials/seed-{seed}",
            "step": 3,
            "remix_consistency_db": SCORES[seed],
            "judge_auc": JUDGE[seed],
            "score_db": pytest.approx(COMBINED[seed]),
            "status": "finished",
        }
        for seed in (0, 1, 2)
    ]
    assert all(trial["train_seconds"] > 0 for trial in choice["trials"])
    assert choice["reason"] == (
        "highest combined score at step 3, 14.00 dB (remix consistency 15.00 dB, judge AUC "
        "0.550) against 11.00 dB (seed 0: remix consistency 11.00 dB, judge AUC 0.500) and "
        "11.00 dB (seed 1: remix consistency 19.00 dB, judge AUC 0.900)"
    )
    assert trials.read_choice(trials_run.config.workdir) == choice


def test_the_winner_is_trained_on_to_train_steps_and_scores_test_once(trials_run):
    workdir = trials_run.config.workdir
    assert [(c.workdir, c.seed, c.train_steps, test) for c, test in trials_run.calls] == [
        (os.path.join(workdir, "trials", f"seed-{seed}"), seed, 3, False) for seed in (0, 1, 2)
    ] + [(workdir, 2, 6, True)]
    assert trials_run.test_scorings == 1
    results = trials_run.results
    assert results["step"] == 6 and "test" in results
    # The winner's evaluation at step 3 is the first of the run's history.
    assert [h["step"] for h in results["history"]] == [3, 6]
    assert _read(workdir, "eval.json") == json.loads(json.dumps(results))
    assert "ckpt-6.index" in os.listdir(os.path.join(workdir, "checkpoints"))
    for seed in (0, 1, 2):
        assert "test" not in _read(workdir, "trials", f"seed-{seed}", "eval.json")


@pytest.mark.parametrize(
    "removed, trained",
    [
        pytest.param((), [], id="finished"),
        pytest.param(("trials.json",), [], id="trials-json-lost"),
        pytest.param(RUN_FILES, [], id="crashed-after-the-choice"),
        pytest.param(("trials.json", *RUN_FILES), [], id="crashed-before-the-choice"),
        pytest.param(
            ("trials.json", "trials/seed-2", *RUN_FILES), ["trials/seed-2"], id="crashed-in-a-trial"
        ),
    ],
)
def test_running_the_command_again_trains_no_finished_trial(
    trials_run, tmp_path, stroke_data, monkeypatch, removed, trained
):
    workdir = tmp_path / "run"
    shutil.copytree(trials_run.config.workdir, workdir)
    _remove(workdir, removed)
    finished_trials = snapshot(workdir / "trials")
    calls, judged = [], []
    _score_by_seed(monkeypatch, calls, judged)
    config = dataclasses.replace(trials_run.config, workdir=str(workdir))
    results = trials.train_with_trials(config, data=stroke_data)
    assert [os.path.relpath(c.workdir, workdir) for c, _ in calls] == [*trained, "."]
    assert calls[-1][0].seed == 2
    assert {k: v for k, v in snapshot(workdir / "trials").items() if k in finished_trials} == (
        finished_trials
    )
    # Only a trial trained again is judged again: the others' judge AUC is read back.
    assert len(judged) == len(trained)
    assert results["step"] == 6 and [h["step"] for h in results["history"]] == [3, 6]
    assert _read(workdir, "trials.json")["winner_seed"] == 2


def test_a_trials_json_written_before_the_judge_keeps_its_choice(
    trials_run, tmp_path, stroke_data, monkeypatch
):
    """A file without judge_auc and score_db, whose winner had the highest remix consistency,
    is final: its seed is trained on, no trial is trained or judged again."""
    workdir = tmp_path / "run"
    shutil.copytree(trials_run.config.workdir, workdir)
    _remove(workdir, RUN_FILES)
    older = _read(workdir, "trials.json")
    for trial in older["trials"]:
        del trial["judge_auc"], trial["score_db"]
    older.update(winner_seed=1, reason="highest remix consistency at step 3, 19.00 dB against …")
    (workdir / "trials.json").write_text(json.dumps(older))
    assert trials.read_choice(str(workdir)) == older
    calls, judged = [], []
    _score_by_seed(monkeypatch, calls, judged)
    config = dataclasses.replace(trials_run.config, workdir=str(workdir))
    results = trials.train_with_trials(config, data=stroke_data)
    assert [(c.workdir, c.seed) for c, _ in calls] == [(str(workdir), 1)]
    assert judged == [] and results["config"]["seed"] == 1
    assert _read(workdir, "trials.json") == older


@pytest.mark.parametrize(
    "seed, message",
    [
        (5, r"holds a run made with --seed=5: resume it with the same settings"),
        (0, r"holds a run started without --trials: resume it without --trials"),
    ],
)
def test_a_workdir_with_a_run_started_without_trials_is_refused(make_config, seed, message):
    config = make_config(trials=3, trial_steps=3)
    os.makedirs(config.workdir)
    plain = dataclasses.replace(config, trials=1, seed=seed)
    rundir.write_json(rundir.path(config.workdir, "config.json"), plain.to_dict())
    with pytest.raises(UserError, match=message) as refused:
        trials.train_with_trials(config)
    assert "\n" not in str(refused.value)
    assert os.listdir(config.workdir) == ["config.json"]


def _fake_trials(monkeypatch, outcomes, judge=None):
    """Replaces training by `outcomes[seed]`: a remix consistency, a record or an exception to
    raise; a trial that trains leaves an (empty) checkpoint of its last step. Replaces the
    unsupervised scoring by `judge[seed]` as the judge AUC (0.5 for a seed not in it). Returns
    the lists of seeds trained and judged."""
    trained, judged, seeds = [], [], {}

    def train(config, data=None, final_test=True):
        assert not final_test
        trained.append(config.seed)
        seeds[config.workdir] = config.seed
        outcome = outcomes[config.seed]
        if isinstance(outcome, Exception):
            raise outcome
        checkpoints = rundir.path(config.workdir, "checkpoints")
        os.makedirs(checkpoints, exist_ok=True)
        open(os.path.join(checkpoints, f"ckpt-{config.train_steps}.index"), "w").close()
        if not isinstance(outcome, dict):
            outcome = {"remix_consistency_db": outcome}
        return {"step": config.train_steps, "train_seconds": 1.0, "collapsed": False, **outcome}

    def score_run(workdir, mixtures, latest_only, log, validation_mixtures):
        assert latest_only
        (step, _), *_ = reversed(rundir.list_checkpoints(workdir))
        judged.append(seeds[workdir])
        auc = (judge or {}).get(seeds[workdir], 0.5)
        return {"checkpoints": [{"step": step, "remix_consistency_db": 0.0, "judge_auc": auc}]}

    monkeypatch.setattr(train_lib, "train", train)
    monkeypatch.setattr(unsupervised_runs, "score_run", score_run)
    return trained, judged


@pytest.mark.parametrize(
    "min_score_db, judge, trained, winner",
    [
        (0.0, {}, [0, 1], 1),
        (14.0, {}, [0, 1, 2, 3], 2),
        (20.0, {}, [0, 1, 2, 3, 4, 5], 2),
        # Seed 2's remix consistency reaches 14 dB, its combined score (16 - 4 dB) does not.
        (14.0, {2: 0.7}, [0, 1, 2, 3, 4, 5], 5),
    ],
)
def test_another_round_of_fresh_seeds_starts_while_no_trial_reaches_the_minimum_score(
    make_config, monkeypatch, min_score_db, judge, trained, winner
):
    scores = {0: 10.0, 1: 12.0, 2: 16.0, 3: 11.0, 4: 13.0, 5: 15.0}
    trained_seeds, _ = _fake_trials(monkeypatch, scores, judge)
    config = make_config(trials=2, trial_steps=3, trial_rounds=3, trial_min_score_db=min_score_db)
    choice = trials.choose_seed(config)
    assert trained_seeds == trained
    assert [t["seed"] for t in choice["trials"]] == trained
    assert [t["round"] for t in choice["trials"]] == [seed // 2 for seed in trained]
    assert choice["winner_seed"] == winner
    assert trials.read_choice(config.workdir) == choice


def test_a_diverged_or_collapsed_trial_cannot_win_nor_is_judged(make_config, monkeypatch):
    _, judged = _fake_trials(
        monkeypatch,
        {
            0: 10.0,
            1: TrainingDiverged("loss became nan at step 2; no checkpoint was written"),
            2: {"remix_consistency_db": 25.0, "collapse_detected_at_step": 3},
            3: 11.0,
        },
    )
    choice = trials.choose_seed(make_config(trials=4, trial_steps=3))
    assert judged == [0, 3]
    assert [t["status"] for t in choice["trials"]] == [
        "finished",
        "diverged",
        "collapsed",
        "finished",
    ]
    assert choice["trials"][1]["reason"] == "loss became nan at step 2; no checkpoint was written"
    assert [
        (t["remix_consistency_db"], t["judge_auc"], t["score_db"]) for t in choice["trials"]
    ] == [
        (10.0, 0.5, 10.0),
        (None, None, None),
        (25.0, None, None),
        (11.0, 0.5, 11.0),
    ]
    assert choice["winner_seed"] == 3
    assert choice["reason"] == (
        "highest combined score at step 3, 11.00 dB (remix consistency 11.00 dB, judge AUC "
        "0.500) against 10.00 dB (seed 0: remix consistency 10.00 dB, judge AUC 0.500); "
        "seed 1 diverged, seed 2 collapsed"
    )


def test_a_trial_whose_newest_checkpoint_is_not_its_last_evaluation_is_unscored(
    make_config, monkeypatch
):
    """The judge scores the checkpoint of the trial's last evaluation, or none."""
    _, judged = _fake_trials(monkeypatch, {0: 10.0, 1: {"remix_consistency_db": 12.0, "step": 2}})
    choice = trials.choose_seed(make_config(trials=2, trial_steps=3))
    assert judged == [0] and choice["winner_seed"] == 0
    assert choice["trials"][1]["status"] == "unscored"
    assert choice["trials"][1]["reason"].startswith(
        "its newest checkpoint is not the one of step 2, which the judge scores: delete "
    )


def test_every_trial_failing_is_a_one_line_error(make_config, monkeypatch):
    _fake_trials(monkeypatch, {seed: TrainingDiverged("loss became nan") for seed in (0, 1)})
    config = make_config(trials=2, trial_steps=3)
    with pytest.raises(UserError, match=r"every one of the 2 seed trials failed \(seed 0 div"):
        trials.choose_seed(config)
    assert not os.path.exists(os.path.join(config.workdir, "trials.json"))


# A trial's entry in trials.json.
TRIAL = {
    "seed": 0,
    "round": 0,
    "workdir": "trials/seed-0",
    "step": 3,
    "train_seconds": 1.0,
    "remix_consistency_db": 12.0,
    "judge_auc": 0.6,
    "score_db": 10.0,
    "status": "finished",
}


@pytest.mark.parametrize(
    "payload, field",
    [
        ([], "the top-level object"),
        ({"trials": []}, "trial_steps"),
        ({"trial_steps": 3, "trials": []}, "trials"),
        ({"trial_steps": 3, "trials": [{"seed": "0"}]}, r"trials\[0\].seed"),
        ({"trial_steps": 3, "trials": [{**TRIAL, "status": "won"}]}, r"trials\[0\].status"),
        (
            {"trial_steps": 3, "trials": [{**TRIAL, "remix_consistency_db": None}]},
            r"trials\[0\].remix_consistency_db",
        ),
        (
            {"trial_steps": 3, "trials": [{**TRIAL, "judge_auc": None}]},
            r"trials\[0\].judge_auc",
        ),
        (
            {"trial_steps": 3, "trials": [{**TRIAL, "score_db": "10"}]},
            r"trials\[0\].score_db",
        ),
        # An older file has neither field; one of the two alone is damage.
        (
            {"trial_steps": 3, "trials": [{k: v for k, v in TRIAL.items() if k != "score_db"}]},
            r"trials\[0\].score_db",
        ),
        (
            {"trial_steps": 3, "trials": [{k: v for k, v in TRIAL.items() if k != "judge_auc"}]},
            r"trials\[0\].judge_auc",
        ),
        (
            {"trial_steps": 3, "trials": [{**TRIAL, "status": "diverged"}]},
            r"trials\[0\].reason",
        ),
        (
            {
                "trial_steps": 3,
                "trials": [{**TRIAL, "status": "diverged", "reason": "loss became nan"}],
                "winner_seed": 0,
                "reason": "",
            },
            "winner_seed",
        ),
        ({"trial_steps": 3, "trials": [TRIAL], "winner_seed": 0}, "reason"),
    ],
)
def test_a_damaged_trials_json_is_a_one_line_error(tmp_path, payload, field):
    (tmp_path / "trials.json").write_text(json.dumps(payload))
    with pytest.raises(UserError, match=field + r".*delete it to choose again") as refused:
        trials.read_choice(str(tmp_path))
    assert "\n" not in str(refused.value)
