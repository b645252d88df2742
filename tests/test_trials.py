"""Seed trials: the seed chosen by remix consistency alone, recorded, trained on and resumed."""

import dataclasses
import json
import os
import shutil
import types

import pytest
from cli_helpers import snapshot
from synthetic import tiny_config

from aur_tf import evaluation, rundir, train_lib, trials
from aur_tf.errors import TrainingDiverged, UserError
from aur_tf.unsupervised import scores as unsupervised_scores

# Remix consistency and clean PSNR of every run by seed: seed 1 has the highest score, seed 0
# (the first trial) the highest PSNR, so a choice by PSNR, or no choice at all, picks another.
SCORES = {0: 11.0, 1: 19.0, 2: 15.0}
PSNR = {0: 30.0, 1: 10.0, 2: 20.0}
RUN_FILES = ("checkpoints", "config.json", "eval.json", "samples.npz", "tensorboard")


def _score_by_seed(patch, calls):
    """Makes every evaluation's remix consistency `SCORES[seed]` and clean PSNR `PSNR[seed]`;
    `calls` gets `(config, final_test)` of every `train_lib.train` call."""
    train, evaluate = train_lib.train, evaluation.evaluate

    def recording_train(config, data=None, final_test=True):
        calls.append((config, final_test))
        return train(config, data, final_test=final_test)

    def seed():
        return calls[-1][0].seed

    patch.setattr(train_lib, "train", recording_train)
    patch.setattr(unsupervised_scores, "remix_consistency_db", lambda *args: SCORES[seed()])
    patch.setattr(evaluation, "evaluate", lambda *a: dict(evaluate(*a), psnr_db=PSNR[seed()]))


def _read(*parts):
    with open(os.path.join(*parts)) as f:
        return json.load(f)


@pytest.fixture(scope="module")
def trials_run(tmp_path_factory, stroke_data):
    """Three trials of 3 steps, the winner trained on to step 6."""
    config = tiny_config(tmp_path_factory.mktemp("trials") / "run", trials=3, trial_steps=3)
    calls, test_scorings = [], []
    score_test = train_lib.score_test
    with pytest.MonkeyPatch.context() as patch:
        _score_by_seed(patch, calls)
        patch.setattr(train_lib, "score_test", lambda *a: test_scorings.append(a) or score_test(*a))
        results = trials.train_with_trials(config, data=stroke_data)
    return types.SimpleNamespace(
        config=config, results=results, calls=calls, test_scorings=len(test_scorings)
    )


def test_the_trial_with_the_highest_remix_consistency_wins_not_the_best_psnr(trials_run):
    workdir = trials_run.config.workdir
    assert _read(workdir, "trials.json")["winner_seed"] == 1
    assert _read(workdir, "config.json")["seed"] == 1
    assert trials_run.results["config"]["seed"] == 1
    # The first trial had the best clean PSNR, and the choice did not take it.
    assert _read(workdir, "trials", "seed-0", "eval.json")["psnr_db"] == PSNR[0]


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
            "status": "finished",
        }
        for seed in (0, 1, 2)
    ]
    assert all(trial["train_seconds"] > 0 for trial in choice["trials"])
    assert choice["reason"] == (
        "highest remix consistency at step 3, 19.00 dB against 11.00 dB (seed 0) and "
        "15.00 dB (seed 2)"
    )
    assert trials.read_choice(trials_run.config.workdir) == choice


def test_the_winner_is_trained_on_to_train_steps_and_scores_test_once(trials_run):
    workdir = trials_run.config.workdir
    assert [(c.workdir, c.seed, c.train_steps, test) for c, test in trials_run.calls] == [
        (os.path.join(workdir, "trials", f"seed-{seed}"), seed, 3, False) for seed in (0, 1, 2)
    ] + [(workdir, 1, 6, True)]
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
    for name in removed:
        path = workdir / name
        if path.is_dir():
            shutil.rmtree(path)
        else:
            path.unlink()
    finished_trials = snapshot(workdir / "trials")
    calls = []
    _score_by_seed(monkeypatch, calls)
    config = dataclasses.replace(trials_run.config, workdir=str(workdir))
    results = trials.train_with_trials(config, data=stroke_data)
    assert [os.path.relpath(c.workdir, workdir) for c, _ in calls] == [*trained, "."]
    assert calls[-1][0].seed == 1
    assert {k: v for k, v in snapshot(workdir / "trials").items() if k in finished_trials} == (
        finished_trials
    )
    assert results["step"] == 6 and [h["step"] for h in results["history"]] == [3, 6]
    assert _read(workdir, "trials.json")["winner_seed"] == 1


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


def _fake_trials(monkeypatch, outcomes):
    """Replaces training by `outcomes[seed]`: a remix consistency, a record or an exception to
    raise. Returns the list of seeds trained."""
    trained = []

    def train(config, data=None, final_test=True):
        assert not final_test
        trained.append(config.seed)
        outcome = outcomes[config.seed]
        if isinstance(outcome, Exception):
            raise outcome
        if not isinstance(outcome, dict):
            outcome = {"remix_consistency_db": outcome}
        return {"step": config.train_steps, "train_seconds": 1.0, "collapsed": False, **outcome}

    monkeypatch.setattr(train_lib, "train", train)
    return trained


@pytest.mark.parametrize(
    "min_score_db, trained, winner",
    [(0.0, [0, 1], 1), (14.0, [0, 1, 2, 3], 2), (20.0, [0, 1, 2, 3, 4, 5], 2)],
)
def test_another_round_of_fresh_seeds_starts_while_no_trial_reaches_the_minimum_score(
    make_config, monkeypatch, min_score_db, trained, winner
):
    scores = {0: 10.0, 1: 12.0, 2: 16.0, 3: 11.0, 4: 13.0, 5: 15.0}
    trained_seeds = _fake_trials(monkeypatch, scores)
    config = make_config(trials=2, trial_steps=3, trial_rounds=3, trial_min_score_db=min_score_db)
    choice = trials.choose_seed(config)
    assert trained_seeds == trained
    assert [t["seed"] for t in choice["trials"]] == trained
    assert [t["round"] for t in choice["trials"]] == [seed // 2 for seed in trained]
    assert choice["winner_seed"] == winner
    assert trials.read_choice(config.workdir) == choice


def test_a_diverged_or_collapsed_trial_cannot_win(make_config, monkeypatch):
    _fake_trials(
        monkeypatch,
        {
            0: 10.0,
            1: TrainingDiverged("loss became nan at step 2; no checkpoint was written"),
            2: {"remix_consistency_db": 25.0, "collapse_detected_at_step": 3},
            3: 11.0,
        },
    )
    choice = trials.choose_seed(make_config(trials=4, trial_steps=3))
    assert [t["status"] for t in choice["trials"]] == [
        "finished",
        "diverged",
        "collapsed",
        "finished",
    ]
    assert choice["trials"][1]["reason"] == "loss became nan at step 2; no checkpoint was written"
    assert choice["trials"][1]["remix_consistency_db"] is None
    assert choice["winner_seed"] == 3
    assert choice["reason"] == (
        "highest remix consistency at step 3, 11.00 dB against 10.00 dB (seed 0); "
        "seed 1 diverged, seed 2 collapsed"
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
