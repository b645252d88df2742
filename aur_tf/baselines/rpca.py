"""Robust PCA by inexact augmented Lagrange multipliers (Lin, Chen & Ma 2010), batched in numpy.

RPCA splits a matrix D into a low-rank part A and a sparse part E, D = A + E, by solving

    min ||A||_* + lambda * ||E||_1   subject to   D = A + E.

The paper's RPCA baseline is Huang et al. (ICASSP 2012), who decompose each mixture on its own
(there one magnitude spectrogram; here one mixture image, a 32x32 matrix per channel) and read the
low-rank part as one source and the sparse part as the other. `decompose` runs the same
iterations on a whole stack of matrices at once, each with its own penalty weight, step size and
stopping test, so 5000 MNIST mixtures are one batched SVD per iteration.
"""

import dataclasses

import numpy as np

from aur_tf.config import setting
from aur_tf.errors import UserError


@dataclasses.dataclass(frozen=True)
class RpcaSettings:
    """Settings of the RPCA baseline (Lin et al.'s defaults)."""

    rpca_lambda_scale: float = setting(
        1.0,
        "RPCA: multiplies the sparse-part weight "
        "1/sqrt(max(H, W)); larger moves more into the low-rank "
        "part.",
    )
    rpca_tolerance: float = setting(
        1e-7,
        "RPCA: relative residual ||D - A - E|| / ||D|| at which a mixture counts as decomposed.",
    )
    rpca_max_iterations: int = setting(500, "RPCA: cap on the augmented-Lagrangian iterations.")

    def __post_init__(self):
        if not (self.rpca_lambda_scale > 0 and self.rpca_tolerance > 0):
            raise UserError(
                f"--rpca_lambda_scale={self.rpca_lambda_scale} and --rpca_tolerance="
                f"{self.rpca_tolerance} must be > 0"
            )
        if self.rpca_max_iterations < 1:
            raise UserError(
                f"--rpca_max_iterations={self.rpca_max_iterations} must be a positive integer"
            )


def default_lambda(height, width):
    """The weight 1 / sqrt(max(m, n)) for which Candes et al. prove exact recovery."""
    return 1.0 / np.sqrt(max(height, width))


def _shrink(values, threshold):
    """Soft thresholding sign(v) * max(|v| - t, 0), elementwise; `threshold` broadcasts."""
    return np.sign(values) * np.maximum(np.abs(values) - threshold, 0.0)


def decompose(matrices, lambda_scale=1.0, tolerance=1e-7, max_iterations=500, rho=1.5):
    """Low-rank + sparse decomposition of each matrix in a batch.

    Follows Lin et al.'s `inexact_alm_rpca`: Y0 = D / max(||D||_2, ||D||_inf / lambda),
    mu0 = 1.25 / ||D||_2, mu grows by `rho` per iteration up to 1e7 * mu0, and each matrix stops
    once ||D - A - E||_F / ||D||_F < `tolerance` (later iterations leave it unchanged).

    Args:
      matrices: `[batch, m, n]` real values (for images: one mixture channel, in [0, 1]).
      lambda_scale: multiplies the default weight 1 / sqrt(max(m, n)) of the sparse part;
        larger values move more of each matrix into the low-rank part.
      tolerance: relative residual at which a matrix counts as converged.
      max_iterations: hard cap on iterations.
      rho: growth factor of the penalty mu (Lin et al.'s default 1.5).

    Returns:
      (low_rank, sparse, iterations): two `[batch, m, n]` float64 arrays that sum to `matrices`
      up to `tolerance`, and the number of iterations run (the slowest matrix's).
    """
    d = np.asarray(matrices, dtype=np.float64)
    if d.ndim != 3:
        raise ValueError(f"decompose: expected [batch, m, n] matrices, got shape {d.shape}")
    weight = lambda_scale * default_lambda(*d.shape[1:])
    spectral = np.linalg.norm(d, ord=2, axis=(1, 2))
    frobenius = np.linalg.norm(d, axis=(1, 2))
    # An all-zero matrix is already decomposed (A = E = 0); unit norms keep its divisions finite.
    spectral = np.where(spectral > 0, spectral, 1.0)
    frobenius = np.where(frobenius > 0, frobenius, 1.0)
    dual = np.maximum(spectral, np.abs(d).max(axis=(1, 2)) / weight)
    multipliers = d / dual[:, None, None]
    mu = 1.25 / spectral
    mu_max = mu * 1e7
    low_rank = np.zeros_like(d)
    sparse = np.zeros_like(d)
    active = np.ones(len(d), dtype=bool)
    iterations = 0
    while active.any() and iterations < max_iterations:
        iterations += 1
        # Only the matrices still running are touched; converged ones keep their result.
        idx = np.flatnonzero(active)
        step = (1.0 / mu[idx])[:, None, None]
        dual_term = multipliers[idx] * step
        sparse[idx] = _shrink(d[idx] - low_rank[idx] + dual_term, weight * step)
        u, s, vt = np.linalg.svd(d[idx] - sparse[idx] + dual_term, full_matrices=False)
        s = np.maximum(s - step[:, :, 0], 0.0)  # singular value thresholding at 1 / mu
        low_rank[idx] = (u * s[:, None, :]) @ vt
        residual = d[idx] - low_rank[idx] - sparse[idx]
        multipliers[idx] += mu[idx][:, None, None] * residual
        mu[idx] = np.minimum(mu[idx] * rho, mu_max[idx])
        error = np.linalg.norm(residual, axis=(1, 2)) / frobenius[idx]
        active[idx[error < tolerance]] = False
    return low_rank, sparse, iterations


def separate(mixtures, settings=RpcaSettings(), batch_size=1000):
    """RPCA of each mixture image, read as two source estimates on the clean scale.

    Since y = (x + b) / 2, the parts of y are doubled: x_hat = 2 * low_rank, b_hat = 2 * sparse.
    Nothing is clipped: RPCA's parts can leave [0, 1], and the scores see them as they are.

    Args:
      mixtures: `[N, H, W, C]` in [0, 1]; each channel of each image is one H x W matrix.
      settings: `RpcaSettings`.
      batch_size: matrices decomposed together (bounds the memory of the batched SVD).

    Returns:
      (low_rank_estimates, sparse_estimates, iterations): two `[N, H, W, C]` float64 arrays
      summing to 2 * mixtures, and the largest iteration count of any batch.
    """
    mixtures = np.asarray(mixtures)
    n, h, w, c = mixtures.shape
    matrices = np.moveaxis(mixtures, 3, 1).reshape(n * c, h, w)
    low_rank, sparse, iterations = [], [], 0
    for start in range(0, len(matrices), batch_size):
        a, e, k = decompose(
            matrices[start : start + batch_size],
            settings.rpca_lambda_scale,
            settings.rpca_tolerance,
            settings.rpca_max_iterations,
        )
        low_rank.append(a)
        sparse.append(e)
        iterations = max(iterations, k)

    def to_images(parts):
        return np.moveaxis(2.0 * np.concatenate(parts).reshape(n, c, h, w), 1, 3)

    return to_images(low_rank), to_images(sparse), iterations
