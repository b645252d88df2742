"""Scores of a separation that read mixtures only, for users who have no clean sources.

A user of this method has mixtures and nothing else, so PSNR against clean sources cannot tell
them whether a run separated or is stuck. Each function here scores a *separation* from held-out
mixtures `y` `[N, H, W, C]` in [0, 1] alone; nothing in this module accepts a clean source.

A separation is a callable `separate(y) -> (x~, b~)`: for float32 mixtures `[N, H, W, C]` in
[0, 1], the two estimates on the mixture scale, each `[N, H, W, C]` float32, with x~ + b~ = y
(exactly for a mask, up to the method's reconstruction error for a baseline such as RPCA or
GLO). `mask_separation` makes one of a mask net (x~ = M y, b~ = y - x~); the baselines make
theirs in `aur_tf.baselines.runner`. A separation may be called on remixes as well as mixtures.

- `remix_consistency_db`: unmix every mixture, remix each first estimate with another mixture's
  second (z = x~_i + b~_p(i), Eq. 3), unmix z again and compare, as PSNR on the clean scale, the
  second-pass estimates with the first-pass ones they were made of. A mask that sends a pattern
  to the same output whatever its partner scores high; one that decides by the pair does not.
- `judge_auc`: a fresh discriminator (the "judge"), trained after the fact on one half of the
  mixtures to tell them from their remixes, then asked to rank the other half's mixtures above
  their remixes: the ROC AUC of its scores. Remixes of a correct separation are mixtures of two
  real sources, so the judge cannot beat chance (0.5); a wrong one leaves traces it learns.
- `remix_minus_judge_db`: the two above in one figure, remix consistency less a penalty for a
  judge above chance; what seed trials (`aur_tf.trials`) rank by.
- `energy_share`: the first output's share of the estimates' energy, 0.5 for equal outputs and
  0 or 1 when one output takes everything (collapse).
- `mask_confidence`: the mean of |2M - 1| over the mixtures' non-background pixels, 1 when the
  mask gives each pixel to one output, 0 for the half mask. M = x~ / y there, the mask net's
  own mask, and the share of the pixel that any other separation gives its first output.
"""

import dataclasses
import functools

import keras
import numpy as np
import tensorflow as tf

from aur_tf import evaluation, losses, models

# Pixels of a mixture at or below this value are background and do not count toward the mask's
# confidence (MNIST's background is exactly 0; inverted natural images are close to it).
BACKGROUND = 1 / 255
# PSNR's data range on the clean scale, where estimates lie in [0, 1] like the sources, and the
# squared error below which images count as identical (100 dB), as in `metrics`.
DATA_RANGE = 1.0
MSE_FLOOR = 1e-10
# dB of remix consistency that one unit of judge AUC above chance (0.5) costs in
# `remix_minus_judge_db`.
JUDGE_PENALTY_DB = 20.0


@dataclasses.dataclass(frozen=True)
class JudgeSettings:
    """The fresh discriminator of `judge_auc`: its width, steps, batch and Adam learning rate."""

    width: int = 16
    steps: int = 400
    batch: int = 64
    learning_rate: float = 2e-4
    seed: int = 0


def first_pass(mask_net, mixtures):
    """`(x~, b~)`, the unmixed estimates on the mixture scale, each `[N, H, W, C]`, x~ + b~ = y.

    Args:
      mask_net: `[batch, H, W, C] -> [batch, H, W, C]` masks in [0, 1].
      mixtures: `[N, H, W, C]` float32 in [0, 1].
    """
    masks = evaluation.predict_masks(mask_net, mixtures)
    estimates = mixtures * masks
    return estimates, mixtures - estimates


def mask_separation(mask_net):
    """The separation (see the module docstring) of a mask net: `first_pass` with `mask_net`."""
    return functools.partial(first_pass, mask_net)


def _first_pass_once(separate, mixtures):
    """`separate`, calling through except on `mixtures` itself (the same array object), whose
    estimates it computes once: the scores of `candidate_scores` share one first pass."""
    first = []

    def remembering(images):
        if images is not mixtures:
            return separate(images)
        if not first:
            first.append(separate(mixtures))
        return first[0]

    return remembering


def partners(count, seed=0):
    """`[count]` int: a fixed permutation with no fixed point, the partner of each mixture."""
    order = np.random.default_rng(seed).permutation(count)
    partner = np.empty(count, np.int64)
    partner[order] = np.roll(order, 1)
    return partner


def remixes(x_tilde, b_tilde, partner):
    """`[N, H, W, C]` remixes z_i = x~_i + b~_partner(i) (Eq. 3), on the mixture scale."""
    return x_tilde + b_tilde[partner]


def remix_consistency_db(separate, mixtures, partner):
    """PSNR (dB, clean scale) of the second-pass estimates of the remixes against the first-pass
    estimates they were made of: of the squared error's mean over both outputs and every remix,
    so that a few remixes reproduced almost exactly cannot outweigh the ones that flipped.

    Args:
      separate: the separation under test, `[N, H, W, C] -> (x~, b~)` on the mixture scale.
      mixtures: `[N, H, W, C]` float32 in [0, 1].
      partner: `[N]` int, see `partners`.
    """
    x_tilde, b_tilde = separate(mixtures)
    z = remixes(x_tilde, b_tilde, partner)
    x_again, b_again = separate(z)
    squared_error = np.mean(
        [
            np.mean((2 * again - 2 * before) ** 2)
            for again, before in ((x_again, x_tilde), (b_again, b_tilde[partner]))
        ]
    )
    return float(10 * np.log10(DATA_RANGE**2 / max(squared_error, MSE_FLOOR)))


def roc_auc(positive, negative):
    """The probability that a random positive scores above a random negative (ties count 1/2).

    Args:
      positive, negative: `[P]` and `[N]` scores, P, N >= 1, any real values.

    Returns:
      The ROC AUC, a float in [0, 1].
    """
    scores = np.concatenate([positive, negative])
    ranks = _average_ranks(scores)
    wins = ranks[: len(positive)].sum() - len(positive) * (len(positive) + 1) / 2
    return float(wins / (len(positive) * len(negative)))


def _average_ranks(values):
    """1-based ranks of `values`, tied values sharing the mean of their ranks."""
    order = np.argsort(values, kind="mergesort")
    ranks = np.empty(len(values), np.float64)
    ranks[order] = np.arange(1, len(values) + 1)
    unique, inverse = np.unique(values, return_inverse=True)
    sums = np.bincount(inverse, weights=ranks)
    counts = np.bincount(inverse)
    return (sums / counts)[inverse]


def spearman(a, b):
    """Spearman's rank correlation of two equal-length sequences; NaN if either is constant."""
    ranks_a, ranks_b = _average_ranks(np.asarray(a, float)), _average_ranks(np.asarray(b, float))
    if ranks_a.std() == 0 or ranks_b.std() == 0:
        return float("nan")
    return float(np.corrcoef(ranks_a, ranks_b)[0, 1])


def judge_auc(separate, mixtures, settings=JudgeSettings()):
    """ROC AUC of a fresh discriminator ranking held-out mixtures above their remixes.

    The judge trains with the LS-GAN loss (Eq. 4) on the first half of `mixtures` against their
    remixes for `settings.steps` steps, then scores the second half and its remixes, which it has
    not seen. 0.5: the remixes are indistinguishable from mixtures; 1: always told apart.

    Args:
      separate: the separation under test, `[N, H, W, C] -> (x~, b~)` on the mixture scale.
      mixtures: `[N, H, W, C]` float32 in [0, 1], N >= 4.
    """
    half = len(mixtures) // 2
    halves = (mixtures[:half], mixtures[half : 2 * half])
    fakes = []
    for part in halves:
        x_tilde, b_tilde = separate(part)
        fakes.append(remixes(x_tilde, b_tilde, partners(len(part), settings.seed)))
    keras.utils.set_random_seed(settings.seed)
    judge = models.build_discriminator(mixtures.shape[1], mixtures.shape[3], settings.width)
    optimizer = keras.optimizers.Adam(settings.learning_rate, beta_1=0.5)
    rng = np.random.default_rng(settings.seed)

    @tf.function
    def step(real, fake):
        with tf.GradientTape() as tape:
            loss = losses.discriminator_loss_eq4(
                judge(real, training=True), judge(fake, training=True)
            )
        optimizer.apply(tape.gradient(loss, judge.trainable_variables), judge.trainable_variables)

    for _ in range(settings.steps):
        chosen = rng.choice(half, min(settings.batch, half), replace=False)
        step(tf.constant(halves[0][chosen]), tf.constant(fakes[0][chosen]))
    real_scores, fake_scores = (
        np.asarray(judge(images, training=False)).ravel() for images in (halves[1], fakes[1])
    )
    return roc_auc(real_scores, fake_scores)


def remix_minus_judge_db(remix_consistency_db, judge_auc):
    """The combined score of a separation in dB, higher is better: its remix consistency (dB)
    less `JUDGE_PENALTY_DB` per unit of judge AUC above chance,
    `remix_consistency_db - JUDGE_PENALTY_DB * (judge_auc - 0.5)`.

    Remix consistency alone rates a mask that splits every mixture the same wrong way as high as
    one that separates; the judge tells the remixes of such a mask from real mixtures, and its
    AUC costs it here: an AUC of 0.6 costs 2 dB, one of 0.9 costs 8 dB (one below chance adds
    as much). docs/unsupervised-score.md has how well the combination ranks checkpoints and
    runs.

    Args:
      remix_consistency_db: `remix_consistency_db` of the separation, in dB.
      judge_auc: `judge_auc` of the same separation, in [0, 1].
    """
    return remix_consistency_db - JUDGE_PENALTY_DB * (judge_auc - 0.5)


def energy_share(separate, mixtures):
    """The first output's share of the estimates' total energy, in [0, 1].

    Args:
      separate: the separation under test, `[N, H, W, C] -> (x~, b~)` on the mixture scale.
      mixtures: `[N, H, W, C]` float32 in [0, 1].
    """
    x_tilde, b_tilde = separate(mixtures)
    energy_x, energy_b = float(np.sum(x_tilde**2)), float(np.sum(b_tilde**2))
    return energy_x / max(energy_x + energy_b, np.finfo(np.float32).tiny)


def mask_confidence(separate, mixtures):
    """Mean |2M - 1| over the pixels of `mixtures` above `BACKGROUND`, in [0, 1].

    M = x~ / y on those pixels: a mask net's mask, and for any other separation the share of the
    pixel its first output takes, clipped to [0, 1] (RPCA's parts can leave [0, y]).

    Args:
      separate: the separation under test, `[N, H, W, C] -> (x~, b~)` on the mixture scale.
      mixtures: `[N, H, W, C]` float32 in [0, 1].
    """
    x_tilde, _ = separate(mixtures)
    foreground = mixtures > BACKGROUND
    if not foreground.any():
        return 0.0
    masks = np.clip(np.asarray(x_tilde)[foreground] / mixtures[foreground], 0.0, 1.0)
    return float(np.abs(2 * masks - 1).mean())


def candidate_scores(separate, mixtures, judge=JudgeSettings()):
    """Every candidate score of the separation `separate` on held-out `mixtures`.

    The held-out mixtures are separated once for all the scores (the remixes and the judge's
    halves are separated on their own).

    Args:
      separate: `[N, H, W, C] -> (x~, b~)` on the mixture scale (see the module docstring;
        `mask_separation` for a mask net).
      mixtures: `[N, H, W, C]` float32 in [0, 1], N >= 4.
      judge: settings of `judge_auc`'s fresh discriminator.

    Returns:
      `{"remix_consistency_db", "judge_auc", "energy_share", "mask_confidence"}`.
    """
    separate = _first_pass_once(separate, mixtures)
    return {
        "remix_consistency_db": remix_consistency_db(separate, mixtures, partners(len(mixtures))),
        "judge_auc": judge_auc(separate, mixtures, judge),
        "energy_share": energy_share(separate, mixtures),
        "mask_confidence": mask_confidence(separate, mixtures),
    }
