"""`--strategy` -> a `tf.distribute.Strategy`, and where each worker of a cluster writes.

What a multi-replica step computes (trainer.py, losses.py, data/pipeline.py): the one-device step
on the same global batch. Each replica takes 2B/R of the step's mixtures, pairs within them, and
differentiates 1/R of its mean losses, so the summed gradients are those of the global means;
BatchNorm statistics and the batch energy term are all-reduced over the global batch.
"""

import functools
import json
import os
import re
import tempfile

import tensorflow as tf

from aur_tf.errors import UserError

# The roles a MultiWorkerMirroredStrategy cluster has; worker 0 leads if there is no chief.
_ROLES = ("chief", "worker")
# host:port, the host a name, an IPv4 address or a bracketed IPv6 one.
_ADDRESS = re.compile(r"(?:\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9_.-]+):([0-9]{1,5})")
_MAX_PORT = 65535
_SCALING_OUT = "see docs/scaling-out.md"


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
        check_tf_config(os.environ.get("TF_CONFIG"))
        return tf.distribute.MultiWorkerMirroredStrategy()
    if name == "tpu":
        resolver = tf.distribute.cluster_resolver.TPUClusterResolver()
        tf.config.experimental_connect_to_cluster(resolver)
        tf.tpu.experimental.initialize_tpu_system(resolver)
        return tf.distribute.TPUStrategy(resolver)
    raise ValueError(f"unknown strategy {name!r}")


def check_tf_config(text):
    """Raises a one-line UserError unless `text` ($TF_CONFIG) describes a cluster that
    --strategy=multi_worker can join, before TensorFlow reads it (its own checks end in
    tracebacks, or in waiting forever for a task that cannot exist).

    Expected: `{"cluster": {"chief": [ADDRESS], "worker": [ADDRESS, ...]}, "task": {"type":
    ROLE, "index": I}}`: the chief optional and at most one, every ADDRESS a distinct
    `host:port` string, ROLE a role of the cluster and I an integer in 0 .. (its addresses - 1).
    """
    if text is None:
        raise UserError(
            "--strategy=multi_worker needs $TF_CONFIG with this worker's cluster and "
            f"task ({_SCALING_OUT})"
        )
    try:
        tf_config = json.loads(text)
    except (ValueError, RecursionError) as e:  # RecursionError: nested too deep
        raise UserError(f"$TF_CONFIG is not JSON ({e}): {_SCALING_OUT}") from None
    cluster = tf_config.get("cluster") if isinstance(tf_config, dict) else None
    if not (isinstance(cluster, dict) and cluster):
        raise UserError(
            '$TF_CONFIG has no "cluster" object mapping roles to lists of '
            f"host:port addresses: {_SCALING_OUT}"
        )
    addresses = []
    for role, members in cluster.items():
        if role not in _ROLES:
            raise UserError(
                f"$TF_CONFIG's cluster has the role {role!r}: --strategy=multi_worker"
                f" takes {' and '.join(_ROLES)} only ({_SCALING_OUT})"
            )
        if not (
            isinstance(members, list)
            and members
            and all(isinstance(member, str) for member in members)
        ):
            raise UserError(
                f"$TF_CONFIG's cluster {role!r} is {json.dumps(members)}: give a "
                f"non-empty list of host:port strings ({_SCALING_OUT})"
            )
        for member in members:
            port = _ADDRESS.fullmatch(member)
            if not (port and 1 <= int(port[1]) <= _MAX_PORT):
                raise UserError(
                    f"$TF_CONFIG's cluster {role!r} has the address {member!r}: "
                    f"write host:port, the port 1 .. {_MAX_PORT} ({_SCALING_OUT})"
                )
        addresses += members
    if len(cluster.get("chief", [])) > 1:
        raise UserError(
            f"$TF_CONFIG's cluster has {len(cluster['chief'])} chiefs: at most one ({_SCALING_OUT})"
        )
    repeated = sorted({address for address in addresses if addresses.count(address) > 1})
    if repeated:
        raise UserError(
            f"$TF_CONFIG's cluster lists {', '.join(repeated)} more than once: every "
            f"task needs its own host:port ({_SCALING_OUT})"
        )
    task = tf_config.get("task")
    role = task.get("type") if isinstance(task, dict) else None
    if not (isinstance(role, str) and role in cluster):
        raise UserError(
            f'$TF_CONFIG\'s task is {json.dumps(task)}: its "type" must be a role '
            f"of the cluster, one of {', '.join(cluster)} ({_SCALING_OUT})"
        )
    index = task.get("index")
    # bool is an int subclass, but true is no index.
    if type(index) is not int or not 0 <= index < len(cluster[role]):
        raise UserError(
            f"$TF_CONFIG's task index {json.dumps(index)} is not an integer in 0 .. "
            f"{len(cluster[role]) - 1}, one of the cluster's {len(cluster[role])} "
            f"{role} addresses ({_SCALING_OUT})"
        )


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
        raise UserError(
            f"the workers resumed from different steps {restored} of "
            f"--workdir={workdir}: it must be one directory that every worker sees"
        )


def checkpoint_write_dir(run_directory, chief):
    """Where this worker saves checkpoints: `run_directory` on the chief, a new scratch directory
    elsewhere, which the caller removes when training ends.

    Every worker must save, because reading distributed variables for a save may need all of
    them; only the chief's copy is kept (the MultiWorkerMirroredStrategy convention).
    """
    return run_directory if chief else tempfile.mkdtemp(prefix="aur_tf_worker_checkpoints_")
