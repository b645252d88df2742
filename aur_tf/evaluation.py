"""Scores a mask net against the held-out clean sources: the only place ground truth is used."""
import numpy as np

from aur_tf import metrics

# Both outputs near-equal in energy is the separated state; one output carrying more than this
# share (or less than 1 - this) of all energy is the trivial "everything in one source" mask.
COLLAPSE_ENERGY_SHARE = 0.95


def predict_masks(mask_net, mixtures, batch_size=500):
    """Masks with BatchNorm in inference mode.

    Args:
      mask_net: a Keras model `[batch, H, W, C] -> [batch, H, W, C]`.
      mixtures: `[N, H, W, C]` float32 in [0, 1].

    Returns:
      `[N, H, W, C]` float32 masks in (0, 1).
    """
    return np.concatenate([np.asarray(mask_net(mixtures[i:i + batch_size], training=False))
                           for i in range(0, len(mixtures), batch_size)])


def is_collapsed(energy_share):
    return not 1 - COLLAPSE_ENERGY_SHARE < energy_share < COLLAPSE_ENERGY_SHARE


def evaluate(mask_net, split):
    """Permutation-invariant PSNR/SSIM of the mask net on a `MixtureSplit`, plus collapse flag."""
    scores = metrics.score_mask(split.mixtures, predict_masks(mask_net, split.mixtures),
                                split.sources_a, split.sources_b).as_dict()
    scores["collapsed"] = is_collapsed(scores["energy_share"])
    return scores


def half_mask_baseline(split):
    """The trivial M = 1/2 that any method must beat: `{"half_mask_psnr_db", "half_mask_ssim"}`."""
    scores = metrics.half_mask_scores(split.mixtures, split.sources_a, split.sources_b)
    return {"half_mask_psnr_db": scores.psnr_db, "half_mask_ssim": scores.ssim}
