"""Separation quality metrics: PSNR, SSIM and permutation-invariant scoring of two estimates.

A mixture is y = (x + b) / 2 of two clean images in [0, 1]. A mask m = M(y) in [0, 1] gives the
estimates x_hat = 2 * y * m and b_hat = 2 * y - x_hat on the clean scale. The method cannot know
which output corresponds to which source, so scoring picks the better of the two assignments,
once for the whole set.

All arrays are numpy, [batch, H, W, C]; computation is in float64.
"""

import dataclasses
from collections.abc import Callable

import numpy as np

_MSE_FLOOR = 1e-10  # caps PSNR at 10 * log10(data_range**2 / 1e-10), i.e. 100 dB for data_range 1

# SSIM constants from Wang et al. 2004, matched to skimage.metrics.structural_similarity defaults.
_SSIM_WIN = 7
_SSIM_K1 = 0.01
_SSIM_K2 = 0.03
_SSIM_COV_NORM = _SSIM_WIN**2 / (_SSIM_WIN**2 - 1)  # skimage uses the sample covariance

# Per-image metrics run on chunks of this many input elements (512 KB in float64) so that
# SSIM's dozen temporaries stay in cache (whole-batch temporaries made 5000x64x64x3 several
# times slower) and float32 inputs are never copied to float64 all at once.
_CHUNK_ELEMENTS = 1 << 16


def _check_batch(name: str, *arrays: np.ndarray) -> None:
    """Raise ValueError unless all arrays are rank-4 [batch, H, W, C] of one non-empty shape."""
    first = arrays[0]
    for array in arrays:
        if array.ndim != 4:
            raise ValueError(
                f"{name}: expected rank-4 arrays [batch, H, W, C], got shape {array.shape}"
            )
        if array.shape != first.shape:
            raise ValueError(
                f"{name}: all arrays must have the same shape, got {first.shape} and {array.shape}"
            )
    if 0 in first.shape:
        raise ValueError(f"{name}: arrays are empty (shape {first.shape})")


def _per_image(
    fn: Callable[[np.ndarray, np.ndarray], np.ndarray], first: np.ndarray, second: np.ndarray
) -> np.ndarray:
    """fn over float64 chunks of two [batch, H, W, C] arrays, its [n] results joined -> [batch]."""
    chunk = max(1, _CHUNK_ELEMENTS // first[0].size)
    return np.concatenate(
        [
            fn(
                np.asarray(first[i : i + chunk], dtype=np.float64),
                np.asarray(second[i : i + chunk], dtype=np.float64),
            )
            for i in range(0, first.shape[0], chunk)
        ]
    )


def _mse(estimate: np.ndarray, target: np.ndarray) -> np.ndarray:
    """Mean squared error of each image, [n, H, W, C] x2 -> [n]."""
    return np.mean((estimate - target) ** 2, axis=(1, 2, 3))


def psnr_per_image(estimate: np.ndarray, target: np.ndarray, data_range: float = 1.0) -> np.ndarray:
    """Peak signal-to-noise ratio of each image, in dB.

    Args:
        estimate: [batch, H, W, C], nominally in [0, data_range] (values outside are not clipped).
        target: [batch, H, W, C] in [0, data_range].
        data_range: peak-to-peak range of the images.

    Returns:
        [batch] float64. The MSE is clamped at 1e-10 so identical images give a finite
        10 * log10(data_range**2 / 1e-10) (100 dB for data_range 1) instead of inf.
    """
    estimate = np.asarray(estimate)
    target = np.asarray(target)
    _check_batch("psnr_per_image", estimate, target)
    mse = _per_image(_mse, estimate, target)
    return 10.0 * np.log10(data_range**2 / np.maximum(mse, _MSE_FLOOR))


def _slice(a: np.ndarray, axis: int, start: int, length: int) -> np.ndarray:
    """a[..., start:start + length, ...] along axis (a view)."""
    index = [slice(None)] * a.ndim
    index[axis] = slice(start, start + length)
    return a[tuple(index)]


def _sums_of_7(a: np.ndarray, axis: int) -> np.ndarray:
    """Sums of every 7 consecutive entries along axis, which shrinks by 6."""
    n = a.shape[axis] - (_SSIM_WIN - 1)
    # Direct sums (pairs -> fours -> 4 + 2 + 1) rather than cumsum differences: 4 additions,
    # no cancellation error, and numpy's cumsum along an inner axis is slow.
    pairs = _slice(a, axis, 0, n + 5) + _slice(a, axis, 1, n + 5)
    fours = _slice(pairs, axis, 0, n + 3) + _slice(pairs, axis, 2, n + 3)
    return _slice(fours, axis, 0, n) + _slice(pairs, axis, 4, n) + _slice(a, axis, 6, n)


def _window_means(a: np.ndarray) -> np.ndarray:
    """Means over every fully-inside 7x7 window of [n, H, W, C] -> [n, H-6, W-6, C]."""
    return _sums_of_7(_sums_of_7(a, 1), 2) / _SSIM_WIN**2


def _ssim(x: np.ndarray, y: np.ndarray, c1: float, c2: float) -> np.ndarray:
    """Mean SSIM over valid windows and channels for float64 [n, H, W, C] -> [n]."""
    ux = _window_means(x)
    uy = _window_means(y)
    ux_uy = ux * uy
    ux2_uy2 = ux * ux + uy * uy
    # Only vx + vy enters the formula, so one filtered field (x^2 + y^2) replaces two.
    vx_vy = _SSIM_COV_NORM * (_window_means(x * x + y * y) - ux2_uy2)
    vxy = _SSIM_COV_NORM * (_window_means(x * y) - ux_uy)
    s = ((2 * ux_uy + c1) * (2 * vxy + c2)) / ((ux2_uy2 + c1) * (vx_vy + c2))
    # Only windows fully inside the image, which is exactly skimage's crop of (7 - 1) // 2 pixels
    # per side; averaging over channels too equals skimage's mean of per-channel SSIM.
    return s.mean(axis=(1, 2, 3))


def ssim_per_image(estimate: np.ndarray, target: np.ndarray, data_range: float = 1.0) -> np.ndarray:
    """Mean structural similarity of each image, equal to skimage's defaults.

    Matches ``skimage.metrics.structural_similarity(est, tgt, data_range=data_range)`` (with
    ``channel_axis=-1`` when C > 1): 7x7 uniform window, sample covariance, K1=0.01, K2=0.03,
    averaged over windows that lie fully inside the image and then over channels.

    Args:
        estimate: [batch, H, W, C], nominally in [0, data_range]; H and W must be at least 7.
        target: [batch, H, W, C] in [0, data_range].
        data_range: peak-to-peak range of the images.

    Returns:
        [batch] float64, in [-1, 1].
    """
    estimate = np.asarray(estimate)
    target = np.asarray(target)
    _check_batch("ssim_per_image", estimate, target)
    _, h, w, _ = estimate.shape
    if h < _SSIM_WIN or w < _SSIM_WIN:
        raise ValueError(
            f"ssim_per_image: images must be at least {_SSIM_WIN}x{_SSIM_WIN}, got {h}x{w}"
        )
    c1 = (_SSIM_K1 * data_range) ** 2
    c2 = (_SSIM_K2 * data_range) ** 2
    return _per_image(lambda x, y: _ssim(x, y, c1, c2), estimate, target)


def estimates_from_mask(mixtures: np.ndarray, masks: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Turn mixtures and masks into the two source estimates on the clean scale.

    Args:
        mixtures: [batch, H, W, C] in [0, 1], y = (x + b) / 2.
        masks: [batch, H, W, C] in [0, 1].

    Returns:
        (2 * y * m, 2 * y - 2 * y * m), each [batch, H, W, C] float64 in [0, 2]; they sum to
        2 * y, so a perfect mask recovers x and b exactly.
    """
    mixtures = np.asarray(mixtures)
    masks = np.asarray(masks)
    _check_batch("estimates_from_mask", mixtures, masks)
    # In-place steps: for 5000x64x64x3 each extra temporary is another 490 MB to allocate.
    estimate_0 = np.multiply(mixtures, masks, dtype=np.float64)
    estimate_0 *= 2.0
    estimate_1 = np.multiply(mixtures, 2.0, dtype=np.float64)
    estimate_1 -= estimate_0
    return estimate_0, estimate_1


@dataclasses.dataclass(frozen=True)
class SeparationScores:
    """Scores of one two-source separation over a whole test set, under the chosen permutation.

    Attributes:
        psnr_db: mean PSNR over images and both sources, in dB.
        ssim: mean SSIM over images and both sources.
        psnr_db_a: mean PSNR of the estimate assigned to source a.
        psnr_db_b: mean PSNR of the estimate assigned to source b.
        ssim_a: mean SSIM of the estimate assigned to source a.
        ssim_b: mean SSIM of the estimate assigned to source b.
        permutation: (0, 1) if estimate 0 was matched to source a, (1, 0) if swapped.
        energy_share: mean over images of |est0|^2 / (|est0|^2 + |est1|^2), in [0, 1], taken
            in the given estimate order (not the permutation). Near 0 or 1 means the mask
            collapsed to the trivial all-or-nothing solution.
        swapped_fraction: share of images, in [0, 1], that on their own would score higher under
            the other assignment: mixtures whose sources the method put in each other's output.
            A method that separates well but inconsistently (say, every digit 4 sent to the
            5-9 output) loses PSNR through these images alone.
    """

    psnr_db: float
    ssim: float
    psnr_db_a: float
    psnr_db_b: float
    ssim_a: float
    ssim_b: float
    permutation: tuple[int, int]
    energy_share: float
    swapped_fraction: float

    def as_dict(self) -> dict:
        """All fields as a plain dict (for JSON logs)."""
        return dataclasses.asdict(self)


def _energy_share(estimate_0: np.ndarray, estimate_1: np.ndarray) -> np.ndarray:
    """Estimate 0's fraction of the total energy, float64 [n, H, W, C] x2 -> [n]."""
    e0 = np.sum(estimate_0**2, axis=(1, 2, 3))
    total = e0 + np.sum(estimate_1**2, axis=(1, 2, 3))
    # An all-zero pair (a black mixture) favours neither output, so it counts as an even split.
    return np.divide(e0, total, out=np.full_like(total, 0.5), where=total > 0)


def score_separation(
    estimate_0: np.ndarray,
    estimate_1: np.ndarray,
    source_a: np.ndarray,
    source_b: np.ndarray,
    data_range: float = 1.0,
) -> SeparationScores:
    """Permutation-invariant PSNR/SSIM of two estimates against two sources.

    Both assignments (estimate 0 -> a, 1 -> b) and (0 -> b, 1 -> a) are tried and the one with
    the higher mean PSNR over both sources and all images is kept, once for the whole set (ties
    keep (0, 1)). SSIM is reported under that same assignment.

    Args:
        estimate_0, estimate_1: [batch, H, W, C] source estimates, nominally in [0, data_range];
            H and W must be at least 7 (for SSIM).
        source_a, source_b: [batch, H, W, C] clean sources in [0, data_range].
        data_range: peak-to-peak range of the images.

    Returns:
        SeparationScores for the chosen permutation.
    """
    estimate_0 = np.asarray(estimate_0)
    estimate_1 = np.asarray(estimate_1)
    source_a = np.asarray(source_a)
    source_b = np.asarray(source_b)
    _check_batch("score_separation", estimate_0, estimate_1, source_a, source_b)

    straight, swapped = _assignment_psnrs(estimate_0, estimate_1, source_a, source_b, data_range)
    if np.mean(sum(swapped)) > np.mean(sum(straight)):
        permutation, for_a, for_b, chosen = (1, 0), estimate_1, estimate_0, swapped
    else:
        permutation, for_a, for_b, chosen = (0, 1), estimate_0, estimate_1, straight
    psnr_a, psnr_b = np.mean(chosen[0]), np.mean(chosen[1])

    ssim_a = float(np.mean(ssim_per_image(for_a, source_a, data_range)))
    ssim_b = float(np.mean(ssim_per_image(for_b, source_b, data_range)))
    return SeparationScores(
        psnr_db=float((psnr_a + psnr_b) / 2),
        ssim=(ssim_a + ssim_b) / 2,
        psnr_db_a=float(psnr_a),
        psnr_db_b=float(psnr_b),
        ssim_a=ssim_a,
        ssim_b=ssim_b,
        permutation=permutation,
        energy_share=float(np.mean(_per_image(_energy_share, estimate_0, estimate_1))),
        swapped_fraction=float(np.mean(_swapped_under(permutation, straight, swapped))),
    )


def swapped_per_image(
    estimate_0: np.ndarray,
    estimate_1: np.ndarray,
    source_a: np.ndarray,
    source_b: np.ndarray,
    permutation: tuple[int, int],
    data_range: float = 1.0,
) -> np.ndarray:
    """Which images the other assignment than `permutation` fits better.

    Per image, the sum of both sources' PSNR is compared under the two assignments; the mean of
    the result under `score_separation`'s permutation is its `swapped_fraction`.

    Args:
        estimate_0, estimate_1: [batch, H, W, C] source estimates, nominally in [0, data_range].
        source_a, source_b: [batch, H, W, C] clean sources in [0, data_range].
        permutation: (0, 1) (estimate 0 is source a) or (1, 0).
        data_range: peak-to-peak range of the images.

    Returns:
        [batch] bool, True where the image is swapped against `permutation` (ties are not).
    """
    _check_batch("swapped_per_image", estimate_0, estimate_1, source_a, source_b)
    return _swapped_under(
        tuple(permutation),
        *_assignment_psnrs(estimate_0, estimate_1, source_a, source_b, data_range),
    )


def _assignment_psnrs(estimate_0, estimate_1, source_a, source_b, data_range):
    """Per-image PSNR of (source a, source b) under each assignment: (straight, swapped)."""
    straight = (
        psnr_per_image(estimate_0, source_a, data_range),
        psnr_per_image(estimate_1, source_b, data_range),
    )
    swapped = (
        psnr_per_image(estimate_1, source_a, data_range),
        psnr_per_image(estimate_0, source_b, data_range),
    )
    return straight, swapped


def _swapped_under(permutation, straight, swapped):
    chosen, other = (straight, swapped) if permutation == (0, 1) else (swapped, straight)
    return sum(other) > sum(chosen)


def score_mask(
    mixtures: np.ndarray, masks: np.ndarray, source_a: np.ndarray, source_b: np.ndarray
) -> SeparationScores:
    """Score a predicted mask: estimates_from_mask, then score_separation.

    Args:
        mixtures: [batch, H, W, C] in [0, 1], y = (a + b) / 2.
        masks: [batch, H, W, C] in [0, 1], the model output M(y).
        source_a, source_b: [batch, H, W, C] clean sources in [0, 1].

    Returns:
        SeparationScores; energy_share is the share of the masked output 2 * y * m.
    """
    estimate_0, estimate_1 = estimates_from_mask(mixtures, masks)
    return score_separation(estimate_0, estimate_1, source_a, source_b)


def half_mask_scores(
    mixtures: np.ndarray, source_a: np.ndarray, source_b: np.ndarray
) -> SeparationScores:
    """Trivial baseline M = 0.5 everywhere: both estimates equal the mixture.

    Args:
        mixtures: [batch, H, W, C] in [0, 1], y = (a + b) / 2.
        source_a, source_b: [batch, H, W, C] clean sources in [0, 1].

    Returns:
        SeparationScores of the baseline (permutation (0, 1), energy_share 0.5).
    """
    return score_mask(mixtures, np.full(np.shape(mixtures), 0.5), source_a, source_b)
