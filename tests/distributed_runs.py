"""Runs for tests/test_distribute.py that need a process of their own; prints one JSON line.

  python tests/distributed_runs.py mirrored WORKDIR   two logical CPU devices: one-device and
                                                      MirroredStrategy runs, a loss-scale overflow
  python tests/distributed_runs.py worker WORKDIR     one MultiWorkerMirroredStrategy worker
                                                      ($TF_CONFIG names the cluster and this task)

Logical devices and multi-worker collectives must be configured before TensorFlow starts, which
a pytest process has long done; hence these separate processes.
"""

import glob
import json
import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
# The checkout's aur_tf and the tests' fixtures, as pytest's `pythonpath = .` gives the tests.
_TESTS = os.path.dirname(os.path.abspath(__file__))
sys.path[:0] = [_TESTS, os.path.dirname(_TESTS)]

import tensorflow as tf  # noqa: E402
from synthetic import stroke_dataset, tiny_config  # noqa: E402

# Steps 1 and 5 update the discriminator (every 4th step), the others only the mask net.
TRAIN_STEPS = 5
LOGGED = (
    "loss_total",
    "loss_cycle",
    "loss_adversarial",
    "loss_energy",
    "loss_disc",
    "mask_mean",
    "energy_share",
    "beta_now",
    "learning_rate_scale",
)


def run_config(workdir, **overrides):
    """The tiny run every process trains: log (and so reset the means) after every step; the
    energy term's weight fades over steps 2-5, so a resume to step 7 continues it past its end,
    and the learning rates decay from step 3 on."""
    settings = dict(
        train_steps=TRAIN_STEPS,
        log_every=1,
        eval_every=TRAIN_STEPS,
        checkpoint_every=TRAIN_STEPS,
        beta_fade_start=1,
        beta_fade_steps=4,
        learning_rate_decay_start=2,
        learning_rate_decay_steps=8,
    )
    return tiny_config(workdir, **{**settings, **overrides})


def logged_scalars(workdir):
    """{name: [value at step 1, 2, ...]} from the run's TensorBoard events."""
    values = {}
    for path in glob.glob(os.path.join(workdir, "tensorboard", "events*")):
        for event in tf.compat.v1.train.summary_iterator(path):
            for value in event.summary.value:
                name = value.tag.removeprefix("train/")
                if name in LOGGED:
                    values.setdefault(name, {})[event.step] = float(tf.make_ndarray(value.tensor))
    return {name: [by_step[s] for s in sorted(by_step)] for name, by_step in values.items()}


def loss_scale_overflow_on_one_replica(strategy):
    """One float16 update whose gradient overflows on replica 1 only: what each replica did."""
    import keras

    from aur_tf import trainer

    with strategy.scope():
        weight = keras.Variable(1.0)
        optimizer = trainer.make_optimizer(1e-3, 0.5, "mixed_float16")
        optimizer.build([weight])
    inputs = strategy.experimental_distribute_values_from_function(
        lambda context: tf.constant([1.0, float("inf")][context.replica_id_in_sync_group])
    )

    @tf.function
    def step(x):
        def replica_step(x):
            with tf.GradientTape() as tape:
                loss = optimizer.scale_loss(trainer._replica_share(x * weight))
            return trainer._apply_gradients(optimizer, tape, loss, [weight])

        return strategy.run(replica_step, args=(x,))

    initial_scale = float(optimizer.dynamic_scale.numpy())
    skipped = [int(s) for s in strategy.experimental_local_results(step(inputs))]
    return {
        "skipped": skipped,
        "weight": float(weight.numpy()),
        "scale_ratio": float(optimizer.dynamic_scale.numpy()) / initial_scale,
    }


def mirrored(workdir):
    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
    from aur_tf import distribute, train_lib

    data = stroke_dataset()
    report = {}
    for strategy in ("default", "mirrored"):
        config = run_config(os.path.join(workdir, strategy), strategy=strategy)
        train_lib.train(config, data=data)
        report[strategy] = logged_scalars(config.workdir)
    report["overflow"] = loss_scale_overflow_on_one_replica(distribute.make_strategy("mirrored"))
    return report


def worker(workdir):
    from aur_tf import train_lib

    results = train_lib.train(run_config(workdir, strategy="multi_worker"), data=stroke_dataset())
    return {"step": results["step"], "task": json.loads(os.environ["TF_CONFIG"])["task"]}


if __name__ == "__main__":
    mode, workdir = sys.argv[1:]
    print(json.dumps({"mirrored": mirrored, "worker": worker}[mode](workdir)))
