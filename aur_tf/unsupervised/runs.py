"""Unsupervised scores of a run's checkpoints or a baseline's separation, kept in
`WORKDIR/unsupervised_scores.json`.

The file holds `settings` (the held-out mixture count and the judge's settings) and `checkpoints`,
one entry per scored checkpoint: its `step` and every score of `scores.candidate_scores`. Scoring
again scores only the checkpoints not in the file yet (all of them when the settings changed), so
a long run can be scored as it trains; the file is rewritten after every checkpoint scored.
A run with a selected net (`WORKDIR/selected/`: the average of its newest checkpoints, or the
checkpoint `--select=unsupervised` picked), the net that the test scoring and export take, also
gets `selected`: the `step` and, for an average, `averaged_steps` that its eval.json records for
it, and the same scores; it is scored again when eval.json names another selected net.
`write_scores` is the one writer of the file, for training runs and baselines alike.

A baseline's workdir (`aur_tf.baselines.runner`: an eval.json with `method`, no config.json) holds
one entry, at its eval.json `step`: the baseline's separation of the same held-out mixtures. The
runner writes it when the baseline runs; `score_run` recomputes it for identity, half_mask and
rpca from the record's data settings (`config`) and `method_settings`. GLO's trained generators
are not saved, so a GLO record without scores (for the settings asked) has to be run again.

Only the run's validation *mixtures* reach the scores: the clean sources are loaded with them (one
data pipeline builds both) and dropped before anything is scored.
"""

import dataclasses
import os

import tensorflow as tf

from aur_tf.config import MIN_SCORED_MIXTURES, Config
from aur_tf.data.mixtures import load_mixture_dataset
from aur_tf.errors import UserError
from aur_tf.rundir import (
    CONFIG_FILE,
    EVAL_FILE,
    list_checkpoints,
    load_run,
    read_json_object,
    read_record,
    restore_mask_net,
    selected_checkpoint,
    write_json,
)
from aur_tf.unsupervised import scores

SCORES_FILE = "unsupervised_scores.json"
# Validation mixtures scored by default, by the command line and when a baseline runs.
MIXTURES = 1000


def held_out_mixtures(config, count):
    """The first `count` validation mixtures of the run, `[count, H, W, C]` float32 in [0, 1]."""
    return load_mixture_dataset(config).validation.mixtures[:count]


def settings_of(mixtures, judge):
    """The file's `settings`: the held-out mixture count asked for and the judge's settings."""
    return {"mixtures": mixtures, "judge": dataclasses.asdict(judge)}


def _previous(scores_path, settings):
    """The entries of an earlier scoring with the same settings, `{step: entry}`, and its
    `selected` entry (or None); none of either when there is no such file or it cannot be read
    (what it held is then scored again)."""
    try:
        previous = read_json_object(scores_path, "it is scored again")
    except UserError:
        return {}, None
    if previous is None or previous.get("settings") != settings:
        return {}, None
    entries = previous.get("checkpoints")
    selected = previous.get("selected")
    return (
        {
            entry["step"]: entry
            for entry in (entries if isinstance(entries, list) else [])
            if isinstance(entry, dict) and isinstance(entry.get("step"), int)
        },
        selected if isinstance(selected, dict) else None,
    )


def _score_checkpoint(workdir, config, prefix, step, held_out, judge, log):
    """The entry of the mask net in checkpoint `prefix` (see `score_separation`)."""
    mask_net, _ = restore_mask_net(workdir, config, prefix)
    entry = score_separation(step, scores.mask_separation(mask_net), held_out, judge, log)
    tf.keras.backend.clear_session()
    return entry


def _score_selected(workdir, config, record, previous, held_out, judge, log):
    """The `selected` entry of the scores file (see the module docstring), scored unless
    `previous` is the entry of the same net; None when the run has no selected net.

    Args:
      record: the run's eval.json record, whose `selected` names the net in selected/.
    """
    prefix = selected_checkpoint(workdir)
    selected = record.get("selected")
    if prefix is None or not isinstance(selected, dict) or "step" not in selected:
        return None
    identity = {key: selected[key] for key in ("step", "averaged_steps") if key in selected}
    if previous is not None and {k: previous.get(k) for k in identity} == identity:
        return previous
    entry = _score_checkpoint(
        workdir,
        config,
        prefix,
        identity["step"],
        held_out,
        judge,
        lambda line: log(f"selected net, {line}"),
    )
    return {**identity, **entry}


def score_separation(step, separate, held_out, judge, log=print):
    """The file's entry for one separation: `{"step": step, **scores.candidate_scores(...)}`.

    Args:
      step: the training step (a checkpoint's, or a baseline's eval.json `step`).
      separate: the separation, see `scores`.
      held_out: `[N, H, W, C]` float32 validation mixtures in [0, 1], N >= `MIN_SCORED_MIXTURES`.
      judge: settings of `scores.judge_auc`'s fresh discriminator.
      log: called with the entry's one line.
    """
    if len(held_out) < MIN_SCORED_MIXTURES:
        raise UserError(
            f"the unsupervised scores need at least {MIN_SCORED_MIXTURES} validation mixtures, "
            f"the run has {len(held_out)}: give it more (--validation_mixtures)"
        )
    entry = {"step": step, **scores.candidate_scores(separate, held_out, judge)}
    log(
        f"step {step}: "
        + ", ".join(f"{name} {value:.4f}" for name, value in entry.items() if name != "step")
    )
    return entry


def write_scores(workdir, settings, entries, selected=None):
    """Writes and returns the record of `entries` (`{step: entry}`) and, if not None, of the
    `selected` entry as the workdir's `SCORES_FILE`, the file's one writer."""
    record = {"settings": settings, "checkpoints": [entries[step] for step in sorted(entries)]}
    if selected is not None:
        record["selected"] = selected
    write_json(os.path.join(workdir, SCORES_FILE), record)
    return record


def score_run(
    workdir,
    mixtures=MIXTURES,
    judge=scores.JudgeSettings(),
    latest_only=False,
    log=print,
    validation_mixtures=None,
):
    """Scores the run's checkpoints (or only its latest) and its selected net, or a baseline's
    separation, and updates its scores file.

    Args:
      workdir: a training run's workdir, or a baseline's (see the module docstring).
      mixtures: how many validation mixtures to score on.
      judge: settings of `scores.judge_auc`'s fresh discriminator.
      latest_only: score the newest checkpoint only (a baseline has one).
      log: called with one line per checkpoint scored.
      validation_mixtures: a training run's validation mixtures, `[N, H, W, C]` float32 in
        [0, 1], when the caller holds them (a run trained on a dataset it was given, as seed
        trials can be); the first `mixtures` of them are scored. None: loaded from the run's
        config.json.

    Returns:
      The record written to `WORKDIR/unsupervised_scores.json`.

    Raises:
      UserError: no run or baseline in `workdir`, no checkpoint, or a GLO baseline whose scores
        for these settings were not written when it ran.
    """
    baseline = baseline_record(workdir)
    if baseline is not None:
        return _score_baseline(workdir, baseline, mixtures, judge, log)
    config, eval_record = load_run(workdir)
    found = list_checkpoints(workdir)
    if not found:
        raise UserError(f"no checkpoint in {workdir}/checkpoints: train the run first")
    if latest_only:
        found = found[-1:]
    settings = settings_of(mixtures, judge)
    entries, selected = _previous(os.path.join(workdir, SCORES_FILE), settings)
    held_out = (
        held_out_mixtures(config, mixtures)
        if validation_mixtures is None
        else validation_mixtures[:mixtures]
    )
    selected = _score_selected(workdir, config, eval_record, selected, held_out, judge, log)
    for step, prefix in found:
        if step in entries:
            continue
        entries[step] = _score_checkpoint(workdir, config, prefix, step, held_out, judge, log)
        # Written after every checkpoint, so a scoring that is stopped keeps what it scored.
        write_scores(workdir, settings, entries, selected)
    return write_scores(workdir, settings, entries, selected)


def baseline_record(workdir):
    """The eval.json record of the baseline in `workdir`, or None when it holds no baseline (a
    training run has a config.json, a baseline only an eval.json with `method`)."""
    if not os.path.isdir(workdir) or os.path.lexists(os.path.join(workdir, CONFIG_FILE)):
        return None
    record = read_record(
        os.path.join(workdir, EVAL_FILE),
        "run the baseline again to score it (python -m aur_tf.baselines)",
    )
    return record if record is not None and "method" in record else None


def _score_baseline(workdir, record, mixtures, judge, log):
    """`score_run` of a baseline's workdir: its one entry, recomputed unless already there."""
    # The runner writes this file through `score_separation` and `write_scores` when a baseline
    # runs, so it imports this module: imported here, where a baseline is rescored.
    from aur_tf.baselines import rpca, runner

    method, step = record["method"], record["step"]
    settings = settings_of(mixtures, judge)
    entries, _ = _previous(os.path.join(workdir, SCORES_FILE), settings)
    if step in entries:
        return write_scores(workdir, settings, {step: entries[step]})
    eval_path = os.path.join(workdir, EVAL_FILE)
    if method == "glo":
        raise UserError(
            f"--workdir={workdir} holds a glo baseline without unsupervised scores for these "
            f"settings (--mixtures={mixtures}, --judge_steps={judge.steps}), and its trained "
            "generators are not saved: run the baseline again (python -m aur_tf.baselines "
            "--method=glo), which scores it with the default settings"
        )
    fields = {k: v for k, v in record["config"].items() if k in runner.DATA_FIELDS}
    try:
        # The record holds the data settings only; batch_pairs, a mask-net setting checked
        # against train_mixtures, gets the one value any record's train_mixtures allows.
        config = Config(**dict(fields, workdir=workdir, batch_pairs=1))
        rpca_settings = (
            rpca.RpcaSettings(**record.get("method_settings", {}))
            if method == "rpca"
            else rpca.RpcaSettings()
        )
        separate = runner.separation(method, rpca_settings)
    except (TypeError, ValueError, UserError) as e:
        raise UserError(
            f"cannot read the settings of {eval_path} ({e}): run the baseline again to score it"
        ) from None
    held_out = held_out_mixtures(config, mixtures)
    return write_scores(
        workdir, settings, {step: score_separation(step, separate, held_out, judge, log)}
    )
