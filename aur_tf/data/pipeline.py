"""Mixtures -> endless tf.data streams of training batches.

The order is a function of (seed, data epoch, position) only, so a run resumed at step s sees
exactly the batches an uninterrupted run would have seen from step s on, without replaying the
earlier ones.

Under tf.distribute the global batch of a step is the one-device batch, split across R replicas
(`input_context`): replica r gets rows [r B/R, (r+1) B/R) of each half, so its halves still pair
up, its pairs are the one-device pairs r B/R ... (r+1) B/R - 1, and the R replicas together train
on exactly the one-device pairs of that step, on any number of devices or workers.
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
        order = tf.argsort(
            tf.random.stateless_uniform(
                [num_items], seed=tf.stack([tf.cast(seed, tf.int64), epoch])
            )
        )
        batches = tf.reshape(
            order[: batches_per_epoch * batch_size], [batches_per_epoch, batch_size]
        )
        return tf.data.Dataset.from_tensor_slices(batches)

    first_epoch, offset = divmod(start_step, batches_per_epoch)
    return tf.data.Dataset.range(first_epoch, 2**62).flat_map(epoch_batches).skip(offset)


def replica_index_batches(num_items, global_batch, seed, start_step=0, input_context=None):
    """`index_batches` of the global batch, cut into this input pipeline's replica batches.

    Args:
      num_items, global_batch, seed, start_step: as for `index_batches`; `global_batch` is even
        and divides by the number of replicas.
      input_context: the `tf.distribute.InputContext` of this input pipeline (one per worker),
        or None for one device.

    Returns:
      A `tf.data.Dataset` of int32 `[global_batch / R]` index vectors: for each step, one per
      local replica in replica order (tf.distribute hands a worker's consecutive elements to its
      local replicas in turn). Replica r's vector is rows [r b, (r+1) b) of each half of the global
      batch, b = global_batch / (2 R); with R = 1 it is the global batch itself.
    """
    if input_context is None:
        input_context = tf.distribute.InputContext()
    replicas = input_context.num_replicas_in_sync
    if global_batch % (2 * replicas):
        raise ValueError(f"global batch {global_batch} must split into {replicas} equal halves")
    local = replicas // input_context.num_input_pipelines
    first = input_context.input_pipeline_id * local

    def local_replica_batches(indices):
        halves = tf.reshape(indices, [2, replicas, global_batch // (2 * replicas)])
        mine = tf.transpose(halves[:, first : first + local], [1, 0, 2])
        return tf.data.Dataset.from_tensor_slices(tf.reshape(mine, [local, -1]))

    return index_batches(num_items, global_batch, seed, start_step).flat_map(local_replica_batches)


def pair_batches(mixtures, batch_pairs, seed, start_step=0, input_context=None):
    """Endless batches for unsupervised training: mixtures only.

    Args:
      mixtures: `[N, H, W, C]` float32 in [0, 1], the training mixtures.
      batch_pairs: B, the number of (y1, y2) pairs per step over all replicas.
      seed: integer seed of the order and the pairing.
      start_step: steps already taken (for resuming).
      input_context: a `tf.distribute.InputContext`, or None for one device.

    Returns:
      A `tf.data.Dataset` of `[2B/R, H, W, C]` float32 batches, R replicas (1 without a context);
      rows i and B/R + i form a pair, so the pairing changes with every reshuffle.
    """
    table = tf.constant(mixtures, tf.float32)
    return (
        replica_index_batches(len(mixtures), 2 * batch_pairs, seed, start_step, input_context)
        .map(lambda indices: tf.gather(table, indices), num_parallel_calls=tf.data.AUTOTUNE)
        .prefetch(tf.data.AUTOTUNE)
    )


def supervised_batches(mixtures, sources_a, batch_size, seed, start_step=0, input_context=None):
    """Endless `(mixtures, sources_a)` batches, each `[batch_size/R, H, W, C]` float32 in [0, 1]."""
    mixture_table = tf.constant(mixtures, tf.float32)
    source_table = tf.constant(sources_a, tf.float32)
    return (
        replica_index_batches(len(mixtures), batch_size, seed, start_step, input_context)
        .map(
            lambda indices: (tf.gather(mixture_table, indices), tf.gather(source_table, indices)),
            num_parallel_calls=tf.data.AUTOTUNE,
        )
        .prefetch(tf.data.AUTOTUNE)
    )
