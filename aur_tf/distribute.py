"""`--strategy` -> a `tf.distribute.Strategy`, and where each worker of a cluster writes.

What a multi-replica step computes (trainer.py, losses.py, data/pipeline.py): the one-device step
on the same global batch. Each replica takes 2B/R of the step's mixtures, pairs within them, and
differentiates 1/R of its mean losses, so the summed gradients are those of the global means;
BatchNorm statistics and the batch energy term are all-reduced over the global batch.
"""
import functools
import json
import os
import tempfile

import tensorflow as tf

from aur_tf.errors import UserError


def make_strategy(name):
    """The strategy named by `Config.strategy`.

    Call it before TensorFlow runs anything else in the process: multi-worker collectives can only
    be configured before the runtime starts.

    Args:
      name: "default" (the current, normally one-device strategy), "mirrored" (every local GPU,
        else every logical CPU device: one unless the process split its CPU), "multi_worker"
        (cluster and this worker's role from $TF_CONFIG) or "tpu" (the TPU named by $TPU_NAME or
        the local TPU VM; untested).
    """
    if name == "default":
        return tf.distribute.get_strategy()
    return _distributed_strategy(name)


@functools.cache
def _distributed_strategy(name):
    """Created once per process and then reused: a second strategy over the same devices restarts
    the collective instance keys, and its all-reduces fail with shape mismatches against the
    first one's."""
    if name == "mirrored":
        devices = tf.config.list_logical_devices("GPU") or tf.config.list_logical_devices("CPU")
        return tf.distribute.MirroredStrategy([d.name for d in devices])
    if name == "multi_worker":
        try:
            json.loads(os.environ["TF_CONFIG"])["task"]
        except (KeyError, ValueError, TypeError):
            raise UserError("--strategy=multi_worker needs $TF_CONFIG with this worker's cluster "
                            "and task (see README, Scaling out)") from None
        return tf.distribute.MultiWorkerMirroredStrategy()
    if name == "tpu":
        resolver = tf.distribute.cluster_resolver.TPUClusterResolver()
        tf.config.experimental_connect_to_cluster(resolver)
        tf.tpu.experimental.initialize_tpu_system(resolver)
        return tf.distribute.TPUStrategy(resolver)
    raise ValueError(f"unknown strategy {name!r}")


def is_chief(strategy):
    """Whether this process writes the run's files (always, except on a cluster's other workers)."""
    return strategy.extended.should_checkpoint


def check_same_step(strategy, step, workdir):
    """Raises a UserError unless every worker restored the same step.

    Workers restore from their own view of `WORKDIR/checkpoints`; if that is not one shared
    directory, they would silently train different weights in lockstep.
    """
    @tf.function  # Run eagerly, a MirroredStrategy warns of its overhead.
    def every_workers_step():
        return strategy.gather(strategy.run(lambda: tf.constant([step], tf.int64)), axis=0)

    restored = sorted(set(every_workers_step().numpy().tolist()))
    if len(restored) > 1:
        raise UserError(f"the workers resumed from different steps {restored} of "
                        f"--workdir={workdir}: it must be one directory that every worker sees")


def checkpoint_write_dir(run_directory, chief):
    """Where this worker saves checkpoints: `run_directory` on the chief, a new scratch directory
    elsewhere, which the caller removes when training ends.

    Every worker must save, because reading distributed variables for a save may need all of
    them; only the chief's copy is kept (the MultiWorkerMirroredStrategy convention).
    """
    return run_directory if chief else tempfile.mkdtemp(prefix="aur_tf_worker_checkpoints_")
