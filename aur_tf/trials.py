"""Seed trials: several seeds trained briefly, the best by an unsupervised score trained on.

Some seeds of the adversarial game stay on the plateau for thousands of steps, which a user with
mixtures only cannot see in PSNR. With `--trials=N --trial_steps=S`, `train_with_trials` trains N
seeds for S steps each, keeps the one with the highest combined score at step S and trains it on
to `--train_steps`. The combined score (`scores.remix_minus_judge_db`, dB, higher is better) is
the remix consistency of the trial's evaluation at step S less 20 dB per unit of judge AUC above
chance. The judge, a fresh discriminator, is trained to tell mixtures from the remixes of the
trial's final checkpoint (step S) by `unsupervised.runs.score_run`. Remix consistency alone can
rate a seed stuck in a consistent wrong split as high as one that separated; the judge tells the
stuck seed's remixes from real mixtures better (docs/unsupervised-score.md has the figures). Both
read the first `--unsupervised_mixtures` validation mixtures alone: no clean source takes part in
the choice.
While no trial has reached `--trial_min_score_db` (of the combined score), another round of N
fresh seeds is trained, up to `--trial_rounds` rounds; the winner is the best trial of all rounds.

Trial k of round r has seed `seed + r*N + k` and is a plain run (`aur_tf.rundir` layout) in
`WORKDIR/trials/seed-<seed>/` with `train_steps=S`, whose test mixtures are left unscored and
whose unsupervised_scores.json holds its judge AUC. The choice is written to
`WORKDIR/trials.json` (`read_choice` has its schema). The winner's eval.json, samples.npz,
tensorboard/ and checkpoints/ are then copied into WORKDIR, where `train_lib.train` resumes them
with the winner's seed: WORKDIR becomes an ordinary run, its config.json holding that seed, whose
test mixtures are scored once at the end.

Running the same command again carries on wherever the last one stopped: a finished trial is
read from its eval.json and not trained again, nor judged again once its unsupervised_scores.json
holds its judge AUC; an unfinished one resumes from its checkpoint, a written trials.json is final
(also one written before trials ranked by the combined score), and once WORKDIR has checkpoints
the run resumes as any other.
"""

import dataclasses
import logging
import math
import os
import shutil
import tempfile

from aur_tf import rundir, safe_io, train_lib
from aur_tf.config import MAX_SEED
from aur_tf.errors import TrainingDiverged, UserError
from aur_tf.unsupervised import runs as unsupervised_runs
from aur_tf.unsupervised import scores as unsupervised_scores

log = logging.getLogger("aur_tf")

FINISHED = "finished"
# A trial's status in trials.json; only finished trials can win.
STATUSES = (FINISHED, "diverged", "collapsed", "unscored")
# What WORKDIR takes over from the winning trial. Checkpoints come last: once they are there,
# WORKDIR is a started run that resumes by itself.
_CONTINUED_FILES = (rundir.EVAL_FILE, rundir.SAMPLES_FILE)
_CONTINUED_FOLDERS = (rundir.TENSORBOARD_DIR, rundir.SELECTED_DIR, rundir.CHECKPOINTS_DIR)
_CHOOSE_AGAIN = "delete it to choose again (finished trials are not trained again)"


def trial_workdir(workdir, seed):
    """The folder of the trial of `seed` in the run directory `workdir`."""
    return os.path.join(workdir, rundir.TRIALS_DIR, f"seed-{seed}")


def trial_config(config, seed):
    """The settings of the trial of `seed`: a plain run of `config.trial_steps` steps in its own
    folder."""
    return dataclasses.replace(
        config,
        workdir=trial_workdir(config.workdir, seed),
        seed=seed,
        train_steps=config.trial_steps,
        trials=1,
    )


def train_with_trials(config, data=None):
    """Chooses a seed by seed trials, or reads the choice made before, and trains it to
    `config.train_steps` in `config.workdir`.

    Args:
      config: the run's settings, with `trials` > 1.
      data: a `MixtureDataset` that every trial and the continued run train on; when None, each
        loads its own, drawn with its seed.

    Returns:
      The dict written to `WORKDIR/eval.json`, test scores included.

    Raises:
      UserError: as `train_lib.train`; also a damaged trials.json, a workdir that holds a run
        started without seed trials, or every trial failed.
      TrainingDiverged: the continued run diverged.
    """
    rundir.check_writable(config.workdir)
    with rundir.exclusive(config.workdir, "training run"):
        choice = read_choice(config.workdir)
        if choice is None:
            _refuse_a_run_without_trials(config)
            choice = choose_seed(config, data)
        else:
            log.info(
                "seed trials chosen before (%s): seed %d, %s",
                rundir.path(config.workdir, rundir.TRIALS_FILE),
                choice["winner_seed"],
                choice["reason"],
            )
        winner = dataclasses.replace(config, seed=choice["winner_seed"])
        _take_over_trial(winner)
    # train() locks WORKDIR itself, and a second lock on it from this process would conflict
    # with this one, so this one is released first.
    return train_lib.train(winner, data)


def choose_seed(config, data=None):
    """Trains the seed trials (or reads those finished before), writes `WORKDIR/trials.json` and
    returns what it holds. The caller holds WORKDIR's lock.

    Raises:
      UserError: every trial failed, or as `train_lib.train` and `unsupervised.runs.score_run`.
    """
    results, best = [], None
    for round_index in range(config.trial_rounds):
        first = config.seed + round_index * config.trials
        if round_index:
            log.info(
                "no seed trial reached --trial_min_score_db=%g (best %s): round %d of %d, "
                "seeds %d to %d",
                config.trial_min_score_db,
                "none" if best is None else f"{best['score_db']:.2f} dB",
                round_index + 1,
                config.trial_rounds,
                first,
                first + config.trials - 1,
            )
        for seed in range(first, first + config.trials):
            results.append(_run_trial(config, seed, round_index, data))
            log.info("%s", _describe(results[-1]))
        best = _best(results)
        if best is not None and (
            not config.trial_min_score_db or best["score_db"] >= config.trial_min_score_db
        ):
            break
    if best is None:
        failures = ", ".join(f"seed {r['seed']} {r['status']}" for r in results)
        raise UserError(
            f"every one of the {len(results)} seed trials failed ({failures}): see "
            f"{rundir.path(config.workdir, rundir.TRIALS_DIR)}; lower the learning rates or "
            "start from another --seed"
        )
    choice = {
        "trial_steps": config.trial_steps,
        "trials": results,
        "winner_seed": best["seed"],
        "reason": _why(best, results),
    }
    rundir.write_json(rundir.path(config.workdir, rundir.TRIALS_FILE), choice)
    log.info(
        "seed trials: seed %d wins: %s; training it on to step %d in %s",
        best["seed"],
        choice["reason"],
        config.train_steps,
        config.workdir,
    )
    return choice


def _run_trial(config, seed, round_index, data):
    """Trains the trial of `seed` to `config.trial_steps` unless it got there before; returns its
    entry in trials.json."""
    trial = trial_config(config, seed)
    # Before a finished trial's record is trusted: one made with other data or model settings
    # is refused, as resuming it would be.
    rundir.check_resumable(trial, chief=True)
    record = _read_trial_record(trial)
    failure = None
    if record is None or record["step"] < trial.train_steps:
        try:
            record = train_lib.train(trial, data, final_test=False)
        except TrainingDiverged as error:
            record, failure = _read_trial_record(trial), ("diverged", str(error))
    else:
        log.info("trial seed %d reached step %d before: not trained again", seed, record["step"])
    record = record or {}
    score = record.get("remix_consistency_db")
    result = {
        "seed": seed,
        "round": round_index,
        "workdir": os.path.relpath(trial.workdir, config.workdir),
        "step": record.get("step", 0),
        "train_seconds": record.get("train_seconds", 0.0),
        "remix_consistency_db": score if rundir.is_number(score) and math.isfinite(score) else None,
        "judge_auc": None,
        "score_db": None,
    }
    status, reason = failure or _failure(record, result, trial.workdir)
    if status == FINISHED:
        status, reason = _judge(trial, result, data)
    result["status"] = status
    if reason:
        result["reason"] = reason
    return result


def _read_trial_record(trial):
    """The eval.json record of a trial, or None before its first evaluation."""
    return rundir.read_record(
        rundir.path(trial.workdir, rundir.EVAL_FILE),
        f"delete {trial.workdir} to train the trial again",
    )


def _judge(trial, result, data):
    """Judges the checkpoint of a finished trial's last evaluation on its first
    `--unsupervised_mixtures` validation mixtures and sets `judge_auc` and `score_db` of
    `result`, its entry in trials.json; returns `(status, reason)` as `_failure`.

    `unsupervised.runs.score_run` keeps the scores in the trial's unsupervised_scores.json, where
    a trial judged before finds them: it is not judged again. Training checkpoints and evaluates
    at its last step, so a finished trial's newest checkpoint is the one its eval.json scored,
    unless its checkpoints were changed by hand.

    Args:
      trial: the trial's settings (`trial_config`).
      result: the trial's entry in trials.json, finished.
      data: the `MixtureDataset` the trial trained on, or None when it loaded its own.
    """
    step = result["step"]
    found = rundir.list_checkpoints(trial.workdir)
    if not found or found[-1][0] != step:
        return "unscored", (
            f"its newest checkpoint is not the one of step {step}, which the judge scores: "
            f"delete {trial.workdir} to train it again"
        )
    record = unsupervised_runs.score_run(
        trial.workdir,
        mixtures=trial.unsupervised_mixtures,
        latest_only=True,
        log=lambda line: log.info("trial seed %d, unsupervised scores at %s", trial.seed, line),
        validation_mixtures=None if data is None else data.validation.mixtures,
    )
    result["judge_auc"] = next(e["judge_auc"] for e in record["checkpoints"] if e["step"] == step)
    result["score_db"] = unsupervised_scores.remix_minus_judge_db(
        result["remix_consistency_db"], result["judge_auc"]
    )
    return FINISHED, None


def _failure(record, result, workdir):
    """`(status, reason)` of a trial whose training ended, reason None if it can win."""
    collapse_step = record.get("collapse_detected_at_step")
    if collapse_step is not None:
        return "collapsed", f"one output took nearly all energy from training step {collapse_step}"
    if record.get("collapsed"):
        return "collapsed", f"one output takes nearly all energy at step {result['step']}"
    if result["remix_consistency_db"] is None:
        return "unscored", (
            f"no remix consistency at step {result['step']}: delete {workdir} to train it again"
        )
    return FINISHED, None


def _best(results):
    """The finished trial with the highest combined score (the first of equals), or None."""
    finished = [r for r in results if r["status"] == FINISHED]
    return max(finished, key=lambda r: r["score_db"], default=None)


def _score(result, label=""):
    """A finished trial's combined score with its two parts, e.g. "21.30 dB (remix consistency
    22.10 dB, judge AUC 0.540)", `label` opening the parenthesis."""
    return (
        f"{result['score_db']:.2f} dB ({label}remix consistency "
        f"{result['remix_consistency_db']:.2f} dB, judge AUC {result['judge_auc']:.3f})"
    )


def _describe(result):
    """One log line about a trial's result."""
    head = f"trial seed {result['seed']} (round {result['round'] + 1})"
    if result["status"] != FINISHED:
        return f"{head}: {result['status']}: {result['reason']}"
    return (
        f"{head}: combined score {_score(result)} at step {result['step']}, "
        f"{result['train_seconds']:.0f} s of training"
    )


def _why(best, results):
    """Why `best` won, with every other trial's score or failure."""
    others = [r for r in results if r is not best]
    scores = [_score(r, f"seed {r['seed']}: ") for r in others if r["status"] == FINISHED]
    reason = f"highest combined score at step {best['step']}, {_score(best)}"
    if scores:
        reason += " against " + (
            scores[0] if len(scores) == 1 else ", ".join(scores[:-1]) + " and " + scores[-1]
        )
    else:
        reason += ", the only trial that did not fail"
    failed = [f"seed {r['seed']} {r['status']}" for r in others if r["status"] != FINISHED]
    return reason + ("; " + ", ".join(failed) if failed else "")


def read_choice(workdir):
    """`WORKDIR/trials.json`, checked, or None if there is none.

    The schema:
      trial_steps: the steps each trial trained;
      trials: one object per trial, in the order they were trained: `seed`, `round` (from 0),
        `workdir` (relative to WORKDIR), `step` and `train_seconds` of its last evaluation (0
        if none), `remix_consistency_db` there (dB, null if none), `judge_auc` of its
        checkpoint of that step (null unless finished), `score_db`, the combined score
        `scores.remix_minus_judge_db` of those two (dB, null unless finished), `status` (one of
        `STATUSES`) and, unless finished, `reason`;
      winner_seed: the seed of the finished trial with the highest `score_db`;
      reason: why it won, with every other trial's score or failure.

    A file written before trials ranked by the combined score has neither `judge_auc` nor
    `score_db`, and its winner had the highest remix consistency. It is read all the same: the
    choice it records is made, and the run it started goes on from it.

    Raises:
      UserError: the file is unreadable or a field is missing or of the wrong type.
    """
    file_path = rundir.path(workdir, rundir.TRIALS_FILE)
    choice = rundir.read_json_object(file_path, _CHOOSE_AGAIN)
    if choice is None:
        return None
    invalid = _invalid_field(choice)
    if invalid:
        raise UserError(
            f"{file_path}: {invalid} is missing or of the wrong type (a damaged file, or not "
            f"written by aur_tf): {_CHOOSE_AGAIN}"
        )
    return choice


def _is_count(value):
    """Whether a value read from JSON is an integer >= 0 (a bool is not)."""
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def _is_seed(value):
    return _is_count(value) and value <= MAX_SEED


def _invalid_field(choice):
    """The first field of a trials.json object that is missing or of the wrong type, or None."""
    if not _is_count(choice.get("trial_steps")):
        return "trial_steps"
    trials = choice.get("trials")
    if not (isinstance(trials, list) and trials):
        return "trials"
    for index, trial in enumerate(trials):
        name = f"trials[{index}]"
        if not isinstance(trial, dict):
            return name
        if not _is_seed(trial.get("seed")):
            return f"{name}.seed"
        if not _is_count(trial.get("round")):
            return f"{name}.round"
        if not isinstance(trial.get("workdir"), str):
            return f"{name}.workdir"
        if trial.get("status") not in STATUSES:
            return f"{name}.status"
        if trial["status"] != FINISHED and not isinstance(trial.get("reason"), str):
            return f"{name}.reason"
        for key in ("step", "train_seconds"):
            if not rundir.is_number(trial.get(key)):
                return f"{name}.{key}"
        combined = ("judge_auc", "score_db")
        for key in ("remix_consistency_db", *combined):
            # Both of the combined score's fields are missing from an older file (`read_choice`).
            if key in combined and not any(k in trial for k in combined):
                continue
            score = trial.get(key)
            if not (rundir.is_number(score) or (score is None and trial["status"] != FINISHED)):
                return f"{name}.{key}"
    winner = choice.get("winner_seed")
    if not any(t["seed"] == winner and t["status"] == FINISHED for t in trials):
        return "winner_seed"
    if not isinstance(choice.get("reason"), str):
        return "reason"
    return None


def _refuse_a_run_without_trials(config):
    """Refuses a WORKDIR that holds a run started without seed trials, before any trial trains.

    A run that continues a trial and lost its trials.json (config.json records `trials` > 1) is
    not refused: choosing again reads the same finished trials and picks the same seed. (One
    chosen before trials ranked by the combined score may now pick another, whose settings
    resuming the run then refuses in one line.)
    """
    saved = rundir.read_json_object(
        rundir.path(config.workdir, rundir.CONFIG_FILE),
        "restore it, or delete it to resume without checking the settings",
    )
    trials = saved.get("trials") if saved else None
    if isinstance(trials, int) and not isinstance(trials, bool) and trials > 1:
        return
    # The usual refusal first, for a run made with another seed or other data or model settings.
    rundir.check_resumable(config, chief=True)
    if saved is not None or os.path.lexists(rundir.path(config.workdir, rundir.CHECKPOINTS_DIR)):
        raise UserError(
            f"--workdir={config.workdir} holds a run started without --trials: resume it "
            "without --trials, or use another --workdir"
        )


def _take_over_trial(winner):
    """Copies the winning trial's record and checkpoints into WORKDIR, unless WORKDIR has
    checkpoints already (then it was done before, and the run resumes from them)."""
    if os.path.lexists(rundir.path(winner.workdir, rundir.CHECKPOINTS_DIR)):
        return
    trial = trial_config(winner, winner.seed)
    checkpoints = rundir.path(trial.workdir, rundir.CHECKPOINTS_DIR)
    if not os.path.isdir(checkpoints):
        raise UserError(
            f"{checkpoints} is missing, so the winning trial cannot be trained on: restore it, "
            f"or delete {trial.workdir} and "
            f"{rundir.path(winner.workdir, rundir.TRIALS_FILE)} to train the trial again"
        )
    # Settings neither run could be resumed with are refused before anything is copied.
    rundir.check_resumable(winner, chief=True)
    rundir.check_resumable(trial, chief=True)
    for name in _CONTINUED_FILES:
        source = rundir.path(trial.workdir, name)
        if os.path.lexists(source):
            rundir.write_durably(rundir.path(winner.workdir, name), _read(source, trial))
    for name in _CONTINUED_FOLDERS:
        source = rundir.path(trial.workdir, name)
        if os.path.lexists(source):
            _copy_folder(source, rundir.path(winner.workdir, name), trial)
    log.info("copied the winning trial %s into %s to train it on", trial.workdir, winner.workdir)


def _read(file_path, trial):
    """The bytes of the regular file `file_path` of the winning trial."""
    try:
        with safe_io.open_regular(file_path) as f:
            return f.read()
    except (OSError, safe_io.FileRefused) as error:
        raise UserError(
            f"cannot read {file_path} of the winning trial ({safe_io.printable(error)}): "
            f"restore it, or delete {trial.workdir} and its trials.json to train it again"
        ) from None


def _copy_folder(source, target, trial):
    """Replaces the folder `target` by a copy of the folder of regular files `source`, every
    file flushed to disk. The copy is made under a temporary name and renamed into place, so
    `target` never holds part of it."""
    parent = os.path.dirname(target)
    with rundir.writes_to(target, then="run the same command again"):
        temporary = tempfile.mkdtemp(prefix=f".{os.path.basename(target)}-", dir=parent)
        try:
            with safe_io.OutputDirectory(temporary) as copy:
                for name in sorted(os.listdir(source)):
                    copy.write(name, _read(os.path.join(source, name), trial), fsync=True)
            if os.path.lexists(target):  # left by a copy that a crash ended before the next one
                shutil.rmtree(target)
            os.rename(temporary, target)
            descriptor = os.open(parent, os.O_RDONLY | os.O_DIRECTORY)
            try:
                os.fsync(descriptor)
            finally:
                os.close(descriptor)
        except BaseException:
            shutil.rmtree(temporary, ignore_errors=True)
            raise
