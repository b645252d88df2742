"""Tests for aur_tf.metrics on synthetic images (no dataset needed)."""

import numpy as np
import pytest

from aur_tf import metrics


def _structured(n: int, h: int, w: int, c: int, seed: int) -> np.ndarray:
    """[n, h, w, c] in [0, 1]: gradients, stripes, flat blocks and a little noise."""
    rng = np.random.default_rng(seed)
    rows = np.linspace(0.0, 1.0, h)[:, None, None]
    cols = np.linspace(0.0, 1.0, w)[None, :, None]
    images = []
    for _ in range(n):
        freq = rng.uniform(1.0, 6.0, size=(1, 1, c))
        phase = rng.uniform(0.0, 2 * np.pi, size=(1, 1, c))
        image = 0.5 + 0.4 * np.sin(2 * np.pi * freq * (rows + cols) + phase)
        image = image * np.ones((h, w, c))
        top, left = rng.integers(0, h // 2), rng.integers(0, w // 2)
        image[top : top + h // 3, left : left + w // 3] = rng.uniform()  # flat, zero variance
        image += 0.05 * rng.standard_normal(image.shape)
        images.append(image)
    return np.clip(np.stack(images), 0.0, 1.0)


def _sources(n: int = 6, h: int = 16, w: int = 16, c: int = 1):
    """Two different source batches and their mixture y = (a + b) / 2."""
    source_a = _structured(n, h, w, c, seed=1)
    source_b = np.random.default_rng(2).uniform(size=(n, h, w, c)) ** 3  # darker, texture-like
    return (source_a + source_b) / 2, source_a, source_b


# --- PSNR -------------------------------------------------------------------------------------


def test_psnr_constant_error_matches_hand_computed_db():
    target = np.full((2, 8, 8, 1), 0.5)
    estimate = target + np.array([0.1, 0.01]).reshape(2, 1, 1, 1)
    np.testing.assert_allclose(metrics.psnr_per_image(estimate, target), [20.0, 40.0], atol=1e-9)


def test_psnr_identical_images_clamp_at_100_db():
    images = np.random.default_rng(0).uniform(size=(3, 8, 8, 2))
    np.testing.assert_allclose(metrics.psnr_per_image(images, images), 100.0)


def test_psnr_uses_data_range():
    target = np.zeros((1, 4, 4, 1))
    np.testing.assert_allclose(
        metrics.psnr_per_image(target + 25.5, target, data_range=255.0), [20.0], atol=1e-9
    )


# --- SSIM -------------------------------------------------------------------------------------


def _skimage_ssim(estimate: np.ndarray, target: np.ndarray) -> np.ndarray:
    skimage_metrics = pytest.importorskip("skimage.metrics")
    if estimate.shape[-1] == 1:
        return np.array(
            [
                skimage_metrics.structural_similarity(e[..., 0], t[..., 0], data_range=1.0)
                for e, t in zip(estimate, target)
            ]
        )
    return np.array(
        [
            skimage_metrics.structural_similarity(e, t, data_range=1.0, channel_axis=-1)
            for e, t in zip(estimate, target)
        ]
    )


@pytest.mark.parametrize("shape", [(32, 32, 1), (64, 64, 3), (7, 9, 1)])
@pytest.mark.parametrize("kind", ["random", "structured"])
def test_ssim_matches_skimage(shape, kind):
    rng = np.random.default_rng(3)
    if kind == "random":
        target = rng.uniform(size=(5,) + shape)
        estimate = rng.uniform(size=(5,) + shape)
    else:
        target = _structured(5, *shape, seed=4)
        estimate = np.clip(target + 0.1 * rng.standard_normal(target.shape), 0.0, 1.0)
        estimate[0] = 0.3  # flat estimate: zero variance in every window
    ours = metrics.ssim_per_image(estimate, target)
    assert ours.shape == (5,)
    np.testing.assert_allclose(ours, _skimage_ssim(estimate, target), atol=1e-6, rtol=0)


def test_ssim_identical_images_is_one():
    images = _structured(3, 16, 16, 2, seed=5)
    np.testing.assert_allclose(metrics.ssim_per_image(images, images), 1.0, atol=1e-12)


def test_per_image_metrics_do_not_depend_on_chunking(monkeypatch):
    target = _structured(7, 12, 10, 2, seed=6)
    estimate = np.clip(target[::-1] + 0.1, 0.0, 1.0)
    whole_ssim = metrics.ssim_per_image(estimate, target)
    whole_psnr = metrics.psnr_per_image(estimate, target)
    monkeypatch.setattr(metrics, "_CHUNK_ELEMENTS", 3 * 12 * 10 * 2)  # 3 images per chunk
    np.testing.assert_array_equal(metrics.ssim_per_image(estimate, target), whole_ssim)
    np.testing.assert_array_equal(metrics.psnr_per_image(estimate, target), whole_psnr)


@pytest.mark.parametrize("shape", [(2, 6, 6, 1), (2, 7, 6, 1), (2, 6, 9, 3)])
def test_ssim_rejects_images_smaller_than_window(shape):
    images = np.zeros(shape)
    with pytest.raises(ValueError, match="at least 7x7"):
        metrics.ssim_per_image(images, images)


# --- Permutation-invariant scoring ------------------------------------------------------------


def test_swapping_estimates_flips_permutation_only():
    mixtures, source_a, source_b = _sources()
    rng = np.random.default_rng(7)
    estimate_0 = np.clip(source_a + 0.05 * rng.standard_normal(source_a.shape), 0.0, 1.0)
    estimate_1 = np.clip(source_b + 0.2 * rng.standard_normal(source_b.shape), 0.0, 1.0)

    straight = metrics.score_separation(estimate_0, estimate_1, source_a, source_b)
    swapped = metrics.score_separation(estimate_1, estimate_0, source_a, source_b)

    assert straight.permutation == (0, 1)
    assert swapped.permutation == (1, 0)
    for field in ("psnr_db", "ssim", "psnr_db_a", "psnr_db_b", "ssim_a", "ssim_b"):
        assert getattr(swapped, field) == pytest.approx(getattr(straight, field), abs=1e-12)
    assert straight.swapped_fraction == swapped.swapped_fraction == 0.0
    # energy_share follows the given estimate order, not the matched one.
    assert swapped.energy_share == pytest.approx(1.0 - straight.energy_share, abs=1e-12)
    # The cleaner estimate was matched to a, so a scores better than b.
    assert straight.psnr_db_a > straight.psnr_db_b


def test_exactly_swapped_estimates_score_perfectly():
    _, source_a, source_b = _sources()
    scores = metrics.score_separation(source_b, source_a, source_a, source_b)
    assert scores.permutation == (1, 0)
    assert scores.psnr_db == pytest.approx(100.0)
    assert scores.ssim == pytest.approx(1.0, abs=1e-12)


def test_psnr_and_ssim_are_means_over_both_sources():
    _, source_a, source_b = _sources()
    estimate_0, estimate_1 = np.clip(source_a + 0.1, 0, 1), np.clip(source_b - 0.05, 0, 1)
    scores = metrics.score_separation(estimate_0, estimate_1, source_a, source_b)
    psnr_a = metrics.psnr_per_image(estimate_0, source_a).mean()
    psnr_b = metrics.psnr_per_image(estimate_1, source_b).mean()
    ssim_a = metrics.ssim_per_image(estimate_0, source_a).mean()
    ssim_b = metrics.ssim_per_image(estimate_1, source_b).mean()
    assert (scores.psnr_db_a, scores.psnr_db_b) == pytest.approx((psnr_a, psnr_b))
    assert (scores.ssim_a, scores.ssim_b) == pytest.approx((ssim_a, ssim_b))
    assert scores.psnr_db == pytest.approx((psnr_a + psnr_b) / 2)
    assert scores.ssim == pytest.approx((ssim_a + ssim_b) / 2)


def test_permutation_is_chosen_by_psnr_over_both_sources():
    flat = np.ones((2, 8, 8, 1))
    source_a, source_b = 0.5 * flat, 0.6 * flat
    estimate_0, estimate_1 = 0.3 * flat, 0.6 * flat
    # Source a alone prefers the swap (|0.6 - 0.5| beats |0.3 - 0.5|), but straight wins overall:
    # 14.0 + 100 dB straight against 20.0 + 10.5 dB swapped.
    scores = metrics.score_separation(estimate_0, estimate_1, source_a, source_b)
    assert scores.permutation == (0, 1)
    assert scores.psnr_db_a == pytest.approx(-20 * np.log10(0.2))
    assert scores.psnr_db_b == pytest.approx(100.0)


def test_one_permutation_is_chosen_for_the_whole_set():
    _, source_a, source_b = _sources(n=4)
    # Images 0-2 are matched straight, image 3 swapped: the set as a whole stays (0, 1), and
    # image 3 is scored against the wrong sources instead of being re-matched on its own.
    estimate_0, estimate_1 = source_a.copy(), source_b.copy()
    estimate_0[3], estimate_1[3] = source_b[3], source_a[3]
    scores = metrics.score_separation(estimate_0, estimate_1, source_a, source_b)
    assert scores.permutation == (0, 1)
    assert scores.psnr_db < 99.0
    assert scores.swapped_fraction == 0.25


@pytest.mark.parametrize("majority_swapped", [False, True])
@pytest.mark.parametrize("minority", [0, 1, 2])
def test_swapped_fraction_counts_images_against_the_set_wide_assignment(majority_swapped, minority):
    _, source_a, source_b = _sources(n=5)
    rng = np.random.default_rng(3)
    noisy_a = np.clip(source_a + 0.05 * rng.standard_normal(source_a.shape), 0, 1)
    noisy_b = np.clip(source_b + 0.05 * rng.standard_normal(source_b.shape), 0, 1)
    image_swapped = np.arange(5) < minority
    if majority_swapped:
        image_swapped = ~image_swapped
    flip = image_swapped[:, None, None, None]
    estimate_0, estimate_1 = np.where(flip, noisy_b, noisy_a), np.where(flip, noisy_a, noisy_b)
    scores = metrics.score_separation(estimate_0, estimate_1, source_a, source_b)
    assert scores.permutation == ((1, 0) if majority_swapped else (0, 1))
    assert scores.swapped_fraction == pytest.approx(minority / 5)
    against_set = image_swapped != majority_swapped  # the minority, whichever way the set went
    for permutation, expected in (
        (scores.permutation, against_set),
        (scores.permutation[::-1], ~against_set),
    ):
        np.testing.assert_array_equal(
            metrics.swapped_per_image(estimate_0, estimate_1, source_a, source_b, permutation),
            expected,
        )


def test_as_dict_has_every_field():
    _, source_a, source_b = _sources()
    scores = metrics.score_separation(source_a, source_b, source_a, source_b)
    as_dict = scores.as_dict()
    assert set(as_dict) == {
        "psnr_db",
        "ssim",
        "psnr_db_a",
        "psnr_db_b",
        "ssim_a",
        "ssim_b",
        "permutation",
        "energy_share",
        "swapped_fraction",
    }
    assert as_dict["permutation"] == (0, 1)
    assert all(isinstance(v, float) for k, v in as_dict.items() if k != "permutation")


# --- Masks ------------------------------------------------------------------------------------


def test_estimates_from_mask():
    mixtures, _, _ = _sources()
    masks = np.random.default_rng(8).uniform(size=mixtures.shape)
    estimate_0, estimate_1 = metrics.estimates_from_mask(mixtures, masks)
    np.testing.assert_allclose(estimate_0, 2 * mixtures * masks)
    np.testing.assert_allclose(estimate_0 + estimate_1, 2 * mixtures)


def test_half_mask_equals_scoring_the_mixture_directly():
    mixtures, source_a, source_b = _sources()
    half = metrics.half_mask_scores(mixtures, source_a, source_b)
    direct = metrics.score_separation(2 * mixtures * 0.5, 2 * mixtures * 0.5, source_a, source_b)
    assert half == direct
    assert half.permutation == (0, 1)
    assert half.energy_share == pytest.approx(0.5)
    assert half.psnr_db_a == pytest.approx(metrics.psnr_per_image(mixtures, source_a).mean())


def test_perfect_mask_scores_perfectly():
    mixtures, source_a, source_b = _sources()
    total = source_a + source_b
    masks = np.divide(source_a, total, out=np.full_like(total, 0.5), where=total > 0)
    scores = metrics.score_mask(mixtures, masks, source_a, source_b)
    assert scores.permutation == (0, 1)
    assert scores.psnr_db >= 99.0
    assert scores.ssim == pytest.approx(1.0, abs=1e-6)


@pytest.mark.parametrize("mask_value, share", [(1.0, 1.0), (0.0, 0.0), (0.5, 0.5)])
def test_energy_share_flags_trivial_masks(mask_value, share):
    mixtures, source_a, source_b = _sources()
    scores = metrics.score_mask(mixtures, np.full_like(mixtures, mask_value), source_a, source_b)
    assert scores.energy_share == pytest.approx(share, abs=1e-12)


def test_energy_share_of_black_mixture_is_even_split():
    black = np.zeros((2, 8, 8, 1))
    scores = metrics.score_mask(black, np.ones_like(black), black, black)
    assert scores.energy_share == 0.5


# --- Input validation -------------------------------------------------------------------------

_GOOD = np.zeros((2, 8, 8, 1))
_BAD_SHAPES = [np.zeros((8, 8, 1)), np.zeros((2, 8, 8, 1, 1)), np.zeros((2, 8, 9, 1))]


@pytest.mark.parametrize("bad", _BAD_SHAPES, ids=["rank3", "rank5", "mismatch"])
@pytest.mark.parametrize(
    "call",
    [
        lambda bad: metrics.psnr_per_image(bad, _GOOD),
        lambda bad: metrics.ssim_per_image(_GOOD, bad),
        lambda bad: metrics.estimates_from_mask(_GOOD, bad),
        lambda bad: metrics.score_separation(_GOOD, _GOOD, _GOOD, bad),
        lambda bad: metrics.swapped_per_image(_GOOD, _GOOD, bad, _GOOD, (0, 1)),
        lambda bad: metrics.score_mask(_GOOD, bad, _GOOD, _GOOD),
        lambda bad: metrics.half_mask_scores(_GOOD, _GOOD, bad),
    ],
    ids=[
        "psnr",
        "ssim",
        "estimates",
        "score_separation",
        "swapped_per_image",
        "score_mask",
        "half_mask",
    ],
)
def test_bad_shapes_raise_value_error(call, bad):
    with pytest.raises(ValueError, match=r"rank-4|same shape"):
        call(bad)


@pytest.mark.parametrize("shape", [(0, 8, 8, 1), (2, 8, 8, 0)])
def test_empty_arrays_raise_value_error(shape):
    empty = np.zeros(shape)
    with pytest.raises(ValueError, match="empty"):
        metrics.score_separation(empty, empty, empty, empty)
    with pytest.raises(ValueError, match="empty"):
        metrics.psnr_per_image(empty, empty)
