"""Scores separations against the held-out clean sources: the only place ground truth is used."""

import numpy as np

from aur_tf import metrics

# Both outputs near-equal in energy is the separated state; one output carrying more than this
# share (or less than 1 - this) of all energy is the trivial "everything in one source" mask.
COLLAPSE_ENERGY_SHARE = 0.95
# Validation marks whose first crossing time eval.json records, per metric: the paper's MNIST
# figures (20.4 dB, 0.90 SSIM) and a midway PSNR mark.
QUALITY_MARKS = {"psnr_db": (18.0, 20.4), "ssim": (0.9,)}
# How a mark of each metric is written for people: "20.4 dB", "0.9 SSIM".
QUALITY_MARK_UNITS = {"psnr_db": "dB", "ssim": "SSIM"}


def quality_mark_key(mark):
    """How a mark is named in `eval.json`'s `seconds_to_<metric>`: 20.4 -> "20.4", 18.0 -> "18"."""
    return f"{mark:g}"


def seconds_to_quality_marks(history):
    """First training time (s) at which each validation metric reached each of its `QUALITY_MARKS`.

    Args:
      history: evaluations in step order, dicts with `train_seconds` and every metric of
        `QUALITY_MARKS` (`psnr_db`, `ssim`).

    Returns:
      `{metric: {quality_mark_key(mark): seconds or None}}`, None for a mark not reached yet.
    """
    return {
        metric: {
            quality_mark_key(mark): next(
                (h["train_seconds"] for h in history if h[metric] >= mark), None
            )
            for mark in marks
        }
        for metric, marks in QUALITY_MARKS.items()
    }


def predict_masks(mask_net, mixtures, batch_size=500):
    """Masks with BatchNorm in inference mode.

    Args:
      mask_net: a Keras model `[batch, H, W, C] -> [batch, H, W, C]`.
      mixtures: `[N, H, W, C]` float32 in [0, 1].

    Returns:
      `[N, H, W, C]` float32 masks in (0, 1).
    """
    return np.concatenate(
        [
            np.asarray(mask_net(mixtures[i : i + batch_size], training=False))
            for i in range(0, len(mixtures), batch_size)
        ]
    )


def is_collapsed(energy_share):
    """Whether one output carries nearly all energy: `energy_share`, source a's share of both
    estimates' energy in [0, 1], outside (1 - COLLAPSE_ENERGY_SHARE, COLLAPSE_ENERGY_SHARE)."""
    return not 1 - COLLAPSE_ENERGY_SHARE < energy_share < COLLAPSE_ENERGY_SHARE


def score_estimates(split, estimate_0, estimate_1):
    """Permutation-invariant PSNR/SSIM of any method's two estimates, plus the collapse flag.

    Args:
      split: the `MixtureSplit` the estimates were made from.
      estimate_0, estimate_1: `[N, H, W, C]` estimates on the clean scale, nominally in [0, 1].

    Returns:
      `SeparationScores.as_dict()` with `collapsed` added.
    """
    scores = metrics.score_separation(
        estimate_0, estimate_1, split.sources_a, split.sources_b
    ).as_dict()
    scores["collapsed"] = is_collapsed(scores["energy_share"])
    return scores


def evaluate(mask_net, split):
    """Permutation-invariant PSNR/SSIM of the mask net on a `MixtureSplit`, plus collapse flag."""
    return score_estimates(
        split, *metrics.estimates_from_mask(split.mixtures, predict_masks(mask_net, split.mixtures))
    )


def half_mask_baseline(split):
    """The trivial M = 1/2 that any method must beat: `{"half_mask_psnr_db", "half_mask_ssim"}`."""
    scores = metrics.half_mask_scores(split.mixtures, split.sources_a, split.sources_b)
    return {"half_mask_psnr_db": scores.psnr_db, "half_mask_ssim": scores.ssim}
