"""Steps/s of `train_lib.train` on one device and on N logical devices, same global batch.

  python bench/strategy_speed.py --devices=2 --mask_width=16 --batch_pairs=32 --steps=20

Splits the host CPU (or uses the GPUs, if any) into `--devices` logical devices, then trains the
same run twice: `--strategy=default` (one device) and `--strategy=mirrored` (all of them), and
prints the steady-state steps/s of each: the rate over steps N+1..2N, after the first N steps
(tracing, warm-up). Synthetic mixtures: throughput does not depend on the images.

On one CPU, logical devices share the same cores, so this measures what replication costs (one
thread per replica, all-reduces, synchronized BatchNorm), never what more devices gain.
"""

import argparse
import glob
import os
import sys
import tempfile

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402


def _steps_per_second(workdir, step):
    """The `train/steps_per_second` scalar that the run logged at `step`."""
    for path in glob.glob(os.path.join(workdir, "tensorboard", "events*")):
        for event in tf.compat.v1.train.summary_iterator(path):
            for value in event.summary.value:
                if value.tag == "train/steps_per_second" and event.step == step:
                    return float(tf.make_ndarray(value.tensor))
    raise LookupError(f"no steps/s logged at step {step} in {workdir}")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--devices", type=int, default=2)
    parser.add_argument("--mask_width", type=int, default=16)
    parser.add_argument("--disc_width", type=int, default=16)
    parser.add_argument("--batch_pairs", type=int, default=32)
    parser.add_argument("--steps", type=int, default=20, help="Warm-up steps, then timed steps.")
    args = parser.parse_args()
    if not tf.config.list_physical_devices("GPU"):
        cpu = tf.config.list_physical_devices("CPU")[0]
        tf.config.set_logical_device_configuration(
            cpu, [tf.config.LogicalDeviceConfiguration()] * args.devices
        )

    from aur_tf import train_lib
    from aur_tf.config import Config
    from aur_tf.data.mixtures import MixtureDataset, mix_split

    rng = np.random.default_rng(0)
    train_count, test_count = 4 * args.batch_pairs * args.steps, 64
    images = rng.random((2, train_count + test_count, 32, 32, 1), np.float32)
    data = MixtureDataset(
        train=mix_split(images[0, :train_count], images[1, :train_count], train_count, rng),
        test=mix_split(images[0, train_count:], images[1, train_count:], test_count, rng),
    )
    total = 2 * args.steps
    with tempfile.TemporaryDirectory() as root:
        for strategy in ("default", "mirrored"):
            config = Config(
                workdir=os.path.join(root, strategy),
                strategy=strategy,
                train_steps=total,
                log_every=args.steps,
                eval_every=total,
                checkpoint_every=total,
                train_mixtures=train_count,
                test_mixtures=test_count,
                batch_pairs=args.batch_pairs,
                mask_width=args.mask_width,
                disc_width=args.disc_width,
                cache_dir=os.path.join(root, "cache"),
            )
            train_lib.train(config, data=data)
            replicas = 1 if strategy == "default" else args.devices
            print(
                f"{strategy:8s} {replicas} replica(s): "
                f"{_steps_per_second(config.workdir, total):.2f} steps/s "
                f"(mask width {args.mask_width}, {args.batch_pairs} pairs per step)",
                flush=True,
            )


if __name__ == "__main__":
    main()
