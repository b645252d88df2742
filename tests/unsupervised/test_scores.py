import numpy as np
import pytest
from synthetic import color_strokes

from aur_tf.unsupervised import scores


def _channel_mask(channel):
    """A mask net that gives every pixel of one colour channel to the first output."""

    def mask_net(mixtures, training=False):
        masks = np.zeros_like(mixtures)
        masks[..., channel] = 1.0
        return masks

    return mask_net


def _constant_mask(value):
    return lambda mixtures, training=False: np.full_like(mixtures, value)


def _partner_dependent_mask(mixtures, training=False):
    """Gives the red channel to the first output only when the mixture is mostly red: the kind
    of pair-dependent decision a stuck run makes."""
    red = mixtures[..., 0].sum(axis=(1, 2)) > mixtures[..., 1].sum(axis=(1, 2))
    masks = np.zeros_like(mixtures)
    masks[red, ..., 0] = 1.0
    masks[~red, ..., 1] = 1.0
    return masks


@pytest.fixture(scope="module")
def mixtures():
    rng = np.random.default_rng(0)
    return ((color_strokes(64, 0, rng) + color_strokes(64, 1, rng)) / 2).astype(np.float32)


def test_partners_are_a_permutation_without_fixed_points():
    partner = scores.partners(50, seed=3)
    assert sorted(partner.tolist()) == list(range(50))
    assert not np.any(partner == np.arange(50))


def test_remixes_swap_second_estimates_between_partners(mixtures):
    x_tilde, b_tilde = scores.first_pass(_channel_mask(0), mixtures)
    np.testing.assert_allclose(x_tilde + b_tilde, mixtures)
    partner = scores.partners(len(mixtures))
    z = scores.remixes(x_tilde, b_tilde, partner)
    np.testing.assert_array_equal(z[..., 0], mixtures[..., 0])
    np.testing.assert_array_equal(z[..., 1], mixtures[partner][..., 1])


def test_a_consistent_mask_is_more_remix_consistent_than_a_pair_dependent_one(mixtures):
    partner = scores.partners(len(mixtures))
    consistent = scores.remix_consistency_db(_channel_mask(0), mixtures, partner)
    pair_dependent = scores.remix_consistency_db(_partner_dependent_mask, mixtures, partner)
    half = scores.remix_consistency_db(_constant_mask(0.5), mixtures, partner)
    assert consistent == pytest.approx(100.0)  # identical images: the PSNR's ceiling
    assert pair_dependent < 30 and half < 30


def test_the_judge_tells_a_wrong_separation_from_a_right_one(mixtures):
    settings = scores.JudgeSettings(width=4, steps=150, batch=16)
    right = scores.judge_auc(_channel_mask(0), mixtures, settings)
    wrong = scores.judge_auc(_constant_mask(0.5), mixtures, settings)
    assert right == pytest.approx(0.5, abs=0.1)  # remixes are mixtures of real sources
    assert wrong > 0.8


def test_energy_share_and_mask_confidence_of_reference_masks(mixtures):
    assert scores.energy_share(_constant_mask(1.0), mixtures) == 1.0
    assert scores.energy_share(_constant_mask(0.5), mixtures) == pytest.approx(0.5)
    assert scores.mask_confidence(_channel_mask(1), mixtures) == 1.0
    assert scores.mask_confidence(_constant_mask(0.5), mixtures) == 0.0


def test_roc_auc_and_spearman_match_their_definitions():
    assert scores.roc_auc(np.array([3.0, 4.0]), np.array([1.0, 2.0])) == 1.0
    assert scores.roc_auc(np.array([1.0, 2.0]), np.array([1.0, 2.0])) == 0.5
    assert scores.roc_auc(np.array([2.0]), np.array([1.0, 3.0])) == 0.5
    stats = pytest.importorskip("scipy.stats")
    rng = np.random.default_rng(0)
    a, b = rng.integers(0, 5, 30), rng.random(30)
    assert scores.spearman(a, b) == pytest.approx(stats.spearmanr(a, b).statistic)
    positive, negative = rng.random(20), rng.random(25) - 0.2
    mann_whitney = stats.mannwhitneyu(positive, negative).statistic
    assert scores.roc_auc(positive, negative) == pytest.approx(mann_whitney / (20 * 25))
