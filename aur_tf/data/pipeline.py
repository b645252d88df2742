"""Mixtures -> endless tf.data streams of training batches.

The order is a function of (seed, data epoch, position) only, so a run resumed at step s sees
exactly the batches an uninterrupted run would have seen from step s on, without replaying the
earlier ones.
"""
import tensorflow as tf


def index_batches(num_items, batch_size, seed, start_step=0):
    """Endless batches of item indices, reshuffled every pass over the data.

    Each pass (data epoch) e is a permutation drawn from the stateless seed (seed, e); its
    trailing `num_items % batch_size` items wait for a later pass, where they land elsewhere.

    Args:
      num_items: number of items to index.
      batch_size: indices per batch; at most `num_items`.
      seed: integer seed of the order.
      start_step: number of batches to skip, as if they had been consumed already.

    Returns:
      A `tf.data.Dataset` of int32 `[batch_size]` index vectors.
    """
    if not 0 < batch_size <= num_items:
        raise ValueError(f"batch_size {batch_size} must be in [1, {num_items}]")
    batches_per_epoch = num_items // batch_size

    def epoch_batches(epoch):
        order = tf.argsort(tf.random.stateless_uniform(
            [num_items], seed=tf.stack([tf.cast(seed, tf.int64), epoch])))
        batches = tf.reshape(order[:batches_per_epoch * batch_size], [batches_per_epoch, batch_size])
        return tf.data.Dataset.from_tensor_slices(batches)

    first_epoch, offset = divmod(start_step, batches_per_epoch)
    return (tf.data.Dataset.range(first_epoch, 2 ** 62)
            .flat_map(epoch_batches)
            .skip(offset))


def pair_batches(mixtures, batch_pairs, seed, start_step=0):
    """Endless batches for unsupervised training: mixtures only.

    Args:
      mixtures: `[N, H, W, C]` float32 in [0, 1], the training mixtures.
      batch_pairs: B, the number of (y1, y2) pairs per step.
      seed: integer seed of the order and the pairing.
      start_step: steps already taken (for resuming).

    Returns:
      A `tf.data.Dataset` of `[2B, H, W, C]` float32 batches; rows i and B + i form pair i, so the
      pairing changes with every reshuffle.
    """
    table = tf.constant(mixtures, tf.float32)
    return (index_batches(len(mixtures), 2 * batch_pairs, seed, start_step)
            .map(lambda indices: tf.gather(table, indices), num_parallel_calls=tf.data.AUTOTUNE)
            .prefetch(tf.data.AUTOTUNE))


def supervised_batches(mixtures, sources_a, batch_size, seed, start_step=0):
    """Endless `(mixtures, sources_a)` batches, each `[batch_size, H, W, C]` float32 in [0, 1]."""
    mixture_table = tf.constant(mixtures, tf.float32)
    source_table = tf.constant(sources_a, tf.float32)
    return (index_batches(len(mixtures), batch_size, seed, start_step)
            .map(lambda indices: (tf.gather(mixture_table, indices),
                                  tf.gather(source_table, indices)),
                 num_parallel_calls=tf.data.AUTOTUNE)
            .prefetch(tf.data.AUTOTUNE))
