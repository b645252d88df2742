"""Unsupervised scores of a training run's checkpoints, kept in `WORKDIR/unsupervised_scores.json`.

The file holds `settings` (the held-out mixture count and the judge's settings) and `checkpoints`,
one entry per scored checkpoint: its `step` and every score of `scores.candidate_scores`. Scoring
again scores only the checkpoints not in the file yet (all of them when the settings changed), so
a long run can be scored as it trains; the file is rewritten after every checkpoint scored.

Only the run's validation *mixtures* reach the scores: the clean sources are loaded with them (one
data pipeline builds both) and dropped before anything is scored.
"""

import dataclasses
import os

import tensorflow as tf

from aur_tf.data.mixtures import load_mixture_dataset
from aur_tf.errors import UserError
from aur_tf.rundir import (
    list_checkpoints,
    load_run,
    read_json_object,
    restore_mask_net,
    write_json,
)
from aur_tf.unsupervised import scores

SCORES_FILE = "unsupervised_scores.json"


def held_out_mixtures(config, count):
    """The first `count` validation mixtures of the run, `[count, H, W, C]` float32 in [0, 1]."""
    return load_mixture_dataset(config).validation.mixtures[:count]


def _previous(path, settings):
    """The entries of an earlier scoring with the same settings, `{step: entry}`; none when there
    is no such file or it cannot be read (its checkpoints are then scored again)."""
    try:
        previous = read_json_object(path, "it is scored again")
    except UserError:
        return {}
    if previous is None or previous.get("settings") != settings:
        return {}
    entries = previous.get("checkpoints")
    if not isinstance(entries, list):
        return {}
    return {
        entry["step"]: entry
        for entry in entries
        if isinstance(entry, dict) and isinstance(entry.get("step"), int)
    }


def score_run(workdir, mixtures=1000, judge=scores.JudgeSettings(), latest_only=False, log=print):
    """Scores the run's checkpoints (or only its latest) and updates its scores file.

    Args:
      workdir: a training run's workdir.
      mixtures: how many validation mixtures to score on.
      judge: settings of `scores.judge_auc`'s fresh discriminator.
      latest_only: score the newest checkpoint only.
      log: called with one line per checkpoint scored.

    Returns:
      The record written to `WORKDIR/unsupervised_scores.json`.
    """
    config, _ = load_run(workdir)
    found = list_checkpoints(workdir)
    if not found:
        raise UserError(f"no checkpoint in {workdir}/checkpoints: train the run first")
    if latest_only:
        found = found[-1:]
    settings = {"mixtures": mixtures, "judge": dataclasses.asdict(judge)}
    path = os.path.join(workdir, SCORES_FILE)
    entries = _previous(path, settings)
    held_out = held_out_mixtures(config, mixtures)
    for step, prefix in found:
        if step in entries:
            continue
        mask_net, _ = restore_mask_net(workdir, config, prefix)
        entries[step] = {
            "step": step,
            **scores.candidate_scores(scores.mask_separation(mask_net), held_out, judge),
        }
        log(
            f"step {step}: "
            + ", ".join(
                f"{name} {value:.4f}" for name, value in entries[step].items() if name != "step"
            )
        )
        tf.keras.backend.clear_session()
        # Written after every checkpoint, so a scoring that is stopped keeps what it scored.
        _write(path, settings, entries)
    return _write(path, settings, entries)


def _write(path, settings, entries):
    """Writes and returns the record of `entries` (`{step: entry}`)."""
    record = {"settings": settings, "checkpoints": [entries[step] for step in sorted(entries)]}
    write_json(path, record)
    return record
