"""Robust PCA: exact recovery where theory promises it, and the batched run equals one by one."""

import numpy as np
import pytest

from aur_tf.baselines import rpca
from aur_tf.errors import UserError


def _low_rank_plus_sparse(count, size, rank, density, seed):
    rng = np.random.default_rng(seed)
    low_rank = rng.normal(size=(count, size, rank)) @ rng.normal(size=(count, rank, size))
    support = rng.random((count, size, size)) < density
    sparse = np.where(support, rng.uniform(-5, 5, (count, size, size)), 0.0)
    return low_rank, sparse


def test_recovers_low_rank_and_sparse_parts():
    low_rank, sparse = _low_rank_plus_sparse(count=4, size=64, rank=2, density=0.05, seed=0)
    a, e, iterations = rpca.decompose(low_rank + sparse)
    assert iterations < 100
    np.testing.assert_allclose(a, low_rank, atol=1e-4)
    np.testing.assert_allclose(e, sparse, atol=1e-4)
    assert [np.linalg.matrix_rank(m, tol=1e-3) for m in a] == [2] * 4


def test_batched_decomposition_equals_one_matrix_at_a_time():
    low_rank, sparse = _low_rank_plus_sparse(count=5, size=32, rank=3, density=0.1, seed=1)
    together = rpca.decompose(low_rank + sparse)
    for i in range(5):
        alone = rpca.decompose((low_rank + sparse)[i : i + 1])
        np.testing.assert_allclose(alone[0][0], together[0][i], atol=1e-9)
        np.testing.assert_allclose(alone[1][0], together[1][i], atol=1e-9)


def test_separate_returns_doubled_parts_that_sum_to_twice_the_mixture():
    rng = np.random.default_rng(2)
    mixtures = rng.random((6, 32, 32, 3)).astype(np.float32) * 0.5
    mixtures[0] = 0.0  # a black mixture decomposes into zeros instead of dividing by zero
    low_rank, sparse, _ = rpca.separate(mixtures, batch_size=4)
    assert low_rank.shape == sparse.shape == mixtures.shape
    np.testing.assert_allclose(low_rank + sparse, 2 * mixtures, atol=1e-5)
    assert not low_rank[0].any() and not sparse[0].any()
    # Each channel is its own matrix: decomposing one channel alone gives the same parts.
    alone, _, _ = rpca.separate(mixtures[..., 1:2])
    np.testing.assert_allclose(alone[..., 0], low_rank[..., 1], atol=1e-9)


def test_bad_settings_are_user_errors():
    with pytest.raises(UserError, match="rpca_lambda_scale"):
        rpca.RpcaSettings(rpca_lambda_scale=0)
    with pytest.raises(UserError, match="rpca_max_iterations"):
        rpca.RpcaSettings(rpca_max_iterations=0)
