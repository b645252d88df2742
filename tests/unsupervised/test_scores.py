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


def _separation(mask_net):
    return scores.mask_separation(mask_net)


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
    consistent = scores.remix_consistency_db(_separation(_channel_mask(0)), mixtures, partner)
    pair_dependent = scores.remix_consistency_db(
        _separation(_partner_dependent_mask), mixtures, partner
    )
    half = scores.remix_consistency_db(_separation(_constant_mask(0.5)), mixtures, partner)
    assert consistent == pytest.approx(100.0)  # identical images: the PSNR's ceiling
    assert pair_dependent < 30 and half < 30


def test_the_judge_tells_a_wrong_separation_from_a_right_one(mixtures):
    settings = scores.JudgeSettings(width=4, steps=150, batch=16)
    right = scores.judge_auc(_separation(_channel_mask(0)), mixtures, settings)
    wrong = scores.judge_auc(_separation(_constant_mask(0.5)), mixtures, settings)
    assert right == pytest.approx(0.5, abs=0.1)  # remixes are mixtures of real sources
    assert wrong > 0.8


def test_energy_share_and_mask_confidence_of_reference_masks(mixtures):
    assert scores.energy_share(_separation(_constant_mask(1.0)), mixtures) == 1.0
    assert scores.energy_share(_separation(_constant_mask(0.5)), mixtures) == pytest.approx(0.5)
    assert scores.mask_confidence(_separation(_channel_mask(1)), mixtures) == 1.0
    assert scores.mask_confidence(_separation(_constant_mask(0.5)), mixtures) == 0.0


def _split_channels(mixtures):
    """A separation written without a mask: the red channel to the first output, the rest to
    the second."""
    red = np.zeros_like(mixtures)
    red[..., 0] = mixtures[..., 0]
    return red, mixtures - red


def _quarter(mixtures):
    """A quarter of every pixel to the first output: the constant mask 1/4 as estimates."""
    return mixtures / 4, mixtures * 3 / 4


@pytest.mark.parametrize(
    "separate, mask_net",
    [(_split_channels, _channel_mask(0)), (_quarter, _constant_mask(0.25))],
    ids=["channels", "quarter"],
)
def test_a_separation_scores_as_the_mask_net_that_makes_it(mixtures, separate, mask_net):
    judge = scores.JudgeSettings(width=4, steps=20, batch=16)
    direct = scores.candidate_scores(separate, mixtures, judge)
    assert direct == pytest.approx(
        scores.candidate_scores(scores.mask_separation(mask_net), mixtures, judge)
    )
    if separate is _quarter:  # M = 1/4 read back from the estimates: |2M - 1| = 1/2
        assert direct["mask_confidence"] == pytest.approx(0.5)
        assert direct["energy_share"] == pytest.approx(1 / 10)  # 1/16 against 9/16


def test_candidate_scores_separate_the_held_out_mixtures_once(mixtures):
    """One first pass shared by every score, one of the remixes, one per half for the judge."""
    inputs = []

    def separate(images):
        inputs.append(images)
        return _split_channels(images)

    scores.candidate_scores(separate, mixtures, scores.JudgeSettings(width=4, steps=2, batch=8))
    assert [len(images) for images in inputs] == [64, 64, 32, 32]
    assert inputs[0] is mixtures and not any(images is mixtures for images in inputs[1:])


def test_remix_minus_judge_costs_20_db_per_unit_of_judge_auc_above_chance():
    assert scores.remix_minus_judge_db(22.0, 0.5) == 22.0
    assert scores.remix_minus_judge_db(22.0, 0.6) == pytest.approx(20.0)
    assert scores.remix_minus_judge_db(24.0, 0.9) == pytest.approx(16.0)
    assert scores.remix_minus_judge_db(20.0, 0.4) == pytest.approx(22.0)


def test_mask_confidence_reads_estimates_outside_the_mixture_as_a_full_mask(mixtures):
    """RPCA's parts can leave [0, y]: M = x~ / y is clipped to [0, 1]."""
    assert scores.mask_confidence(lambda y: (-y, 2 * y), mixtures) == 1.0
    assert scores.mask_confidence(lambda y: (1.5 * y, -0.5 * y), mixtures) == 1.0


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
