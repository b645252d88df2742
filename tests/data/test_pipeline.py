import numpy as np
import pytest
import tensorflow as tf

from aur_tf.data import pipeline


def _take(dataset, count):
    return [np.asarray(x) for x in dataset.take(count)]


@pytest.mark.parametrize("num_items, batch_size", [(10, 3), (12, 4), (7, 7)])
def test_each_pass_draws_every_index_at_most_once(num_items, batch_size):
    per_pass = num_items // batch_size
    batches = _take(pipeline.index_batches(num_items, batch_size, seed=3), 3 * per_pass)
    for p in range(3):
        drawn = np.concatenate(batches[p * per_pass : (p + 1) * per_pass])
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


@pytest.mark.parametrize("workers, local_replicas", [(1, 2), (2, 1), (2, 2)])
def test_replicas_share_the_one_device_batch_and_its_pairs(workers, local_replicas):
    """Replica r gets rows r*b .. (r+1)*b - 1 of each half: its halves pair up as on one device."""
    replicas, steps = workers * local_replicas, 3
    one_device = _take(pipeline.replica_index_batches(40, 8, seed=2), steps)
    streams = [
        _take(
            pipeline.replica_index_batches(
                40, 8, seed=2, input_context=tf.distribute.InputContext(workers, w, replicas)
            ),
            steps * local_replicas,
        )
        for w in range(workers)
    ]
    for step, batch in enumerate(one_device):
        # Global replica w * local_replicas + i takes worker w's i-th element of the step.
        shares = [
            streams[w][step * local_replicas + i]
            for w in range(workers)
            for i in range(local_replicas)
        ]
        halves = np.stack([np.split(share, 2) for share in shares])  # [replica, half, 4 / replicas]
        np.testing.assert_array_equal(np.concatenate(halves[:, 0]), batch[:4])
        np.testing.assert_array_equal(np.concatenate(halves[:, 1]), batch[4:])


def test_a_batch_that_does_not_split_over_the_replicas_is_refused():
    with pytest.raises(ValueError, match="3 equal halves"):
        pipeline.replica_index_batches(
            40, 8, seed=0, input_context=tf.distribute.InputContext(1, 0, 3)
        )
