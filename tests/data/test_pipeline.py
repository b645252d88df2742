import numpy as np
import pytest

from aur_tf.data import pipeline


def _take(dataset, count):
    return [np.asarray(x) for x in dataset.take(count)]


@pytest.mark.parametrize("num_items, batch_size", [(10, 3), (12, 4), (7, 7)])
def test_each_pass_draws_every_index_at_most_once(num_items, batch_size):
    per_pass = num_items // batch_size
    batches = _take(pipeline.index_batches(num_items, batch_size, seed=3), 3 * per_pass)
    for p in range(3):
        drawn = np.concatenate(batches[p * per_pass:(p + 1) * per_pass])
        assert len(set(drawn.tolist())) == per_pass * batch_size
        assert drawn.min() >= 0 and drawn.max() < num_items


def test_order_is_reshuffled_every_pass_and_fixed_by_the_seed():
    first = _take(pipeline.index_batches(20, 10, seed=0), 4)
    again = _take(pipeline.index_batches(20, 10, seed=0), 4)
    other = _take(pipeline.index_batches(20, 10, seed=1), 4)
    np.testing.assert_array_equal(np.stack(first), np.stack(again))
    assert not np.array_equal(np.stack(first), np.stack(other))
    assert not np.array_equal(np.concatenate(first[:2]), np.concatenate(first[2:]))


@pytest.mark.parametrize("start_step", [0, 1, 5, 7])
def test_resuming_at_a_step_continues_the_same_stream(start_step):
    full = _take(pipeline.index_batches(11, 3, seed=5), 10)
    resumed = _take(pipeline.index_batches(11, 3, seed=5, start_step=start_step), 10 - start_step)
    np.testing.assert_array_equal(np.stack(full[start_step:]), np.stack(resumed))


def test_pair_batches_are_mixture_rows():
    mixtures = np.arange(16, dtype=np.float32).reshape(16, 1, 1, 1) / 16
    batch = next(iter(pipeline.pair_batches(mixtures, batch_pairs=3, seed=0)))
    assert batch.shape == (6, 1, 1, 1)
    assert set(np.asarray(batch).ravel().tolist()) <= set(mixtures.ravel().tolist())


def test_supervised_batches_keep_mixture_and_source_aligned():
    mixtures = np.arange(8, dtype=np.float32).reshape(8, 1, 1, 1)
    sources = -mixtures
    y, x = next(iter(pipeline.supervised_batches(mixtures, sources, batch_size=4, seed=0)))
    np.testing.assert_array_equal(np.asarray(x), -np.asarray(y))


def test_batch_larger_than_data_is_refused():
    with pytest.raises(ValueError, match="batch_size"):
        pipeline.index_batches(3, 4, seed=0)
