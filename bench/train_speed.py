"""Speed of the unsupervised train step: steps/s, mixtures/s, FLOPs per step and GFLOP/s.

  python bench/train_speed.py --mask_width=64 --batch_pairs=64 --steps=32
  python bench/train_speed.py ... --torch_python=/path/to/venv/bin/python   # + PyTorch reference
  python bench/train_speed.py --eval_json=runs/mnist/eval.json               # time to quality only

For each of {--conv_kernels phases, native} x {--jit_compile false, true} (or the values given by
those flags) x {real tf.data pipeline, one in-memory batch} it times `--steps` steps after
`--warmup` steps (tracing, warm-up) and prints their mean time: with the discriminator updated every
k-th step the step times are bimodal, and a median would land anywhere between the two modes, so
`--steps` must be whole cycles of k. FLOPs are counted from the layers' shapes (2 multiply-adds per
weight use in every convolution; the backward pass counted as twice the forward, input and weight
gradients), so GFLOP/s is what the step achieves of the machine's matmul rate
(docs/training-speed.md has the rates measured here).

With --torch_python (a Python that has torch, e.g. `pip install torch==2.13.0` in its own venv;
torch is never an aur_tf dependency) the same network and batch run in the independent PyTorch
implementation ../shared/reference/apmr.py --bench, on the same mixtures.
"""

import argparse
import dataclasses
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from aur_tf import evaluation, rundir, train_lib  # noqa: E402
from aur_tf.config import Config  # noqa: E402
from aur_tf.data import pipeline  # noqa: E402
from aur_tf.data.mixtures import load_mixture_dataset  # noqa: E402
from aur_tf.errors import UserError  # noqa: E402

REFERENCE = os.path.join(os.path.dirname(ROOT), "shared", "reference", "apmr.py")


def forward_flops(model):
    """Multiply-adds x 2 of one image through every convolution of a Keras Sequential model."""
    total = 0
    for layer in model.layers:
        # In Keras 3 Conv2DTranspose is no Conv2D subclass (in Keras 2 it was).
        if not isinstance(layer, (keras.layers.Conv2D, keras.layers.Conv2DTranspose)):
            continue
        kernel_h, kernel_w, *_ = layer.kernel.shape
        if isinstance(layer, keras.layers.Conv2DTranspose):
            _, height, width, channels_in = layer.input.shape  # each input pixel spreads k x k
            channels_out = layer.filters
        else:
            _, height, width, channels_out = layer.output.shape  # each output pixel gathers k x k
            channels_in = layer.input.shape[-1]
        total += 2 * height * width * kernel_h * kernel_w * channels_in * channels_out
    return total


def step_flops(trainer, batch_pairs, mask_steps_per_disc_step):
    """FLOPs of one unsupervised step, averaged over the discriminator's 1-in-k updates.

    M runs on y and on z (2B images each) with full backward passes (3x forward); D scores z for
    L_M with an input gradient only (2x); every k-th step D also learns on y and z (3x each).
    """
    mask, disc = forward_flops(trainer.mask_net), forward_flops(trainer.discriminator)
    images = 2 * batch_pairs
    return images * (2 * 3 * mask + 2 * disc + 2 * 3 * disc / mask_steps_per_disc_step)


class _StepTimer(keras.callbacks.Callback):
    def __init__(self):
        super().__init__()
        self.times = []

    def on_train_batch_begin(self, batch, logs=None):
        self._start = time.perf_counter()

    def on_train_batch_end(self, batch, logs=None):
        self.times.append(time.perf_counter() - self._start)


def time_keras(config, mixtures, steps, warmup, in_memory):
    """Mean seconds per train step of aur_tf's UnmixRemixTrainer, and its FLOPs per step."""
    keras.backend.clear_session()
    keras.utils.set_random_seed(config.seed)
    trainer, _ = train_lib.build_trainer(config)
    batches = pipeline.pair_batches(mixtures, config.batch_pairs, config.seed)
    if in_memory:
        batches = tf.data.Dataset.from_tensors(next(iter(batches))).repeat()
    timer = _StepTimer()
    trainer.fit(
        batches,
        epochs=1,
        steps_per_epoch=warmup + steps,
        verbose=0,
        shuffle=False,
        callbacks=[timer],
    )
    return (
        statistics.mean(timer.times[warmup:]),
        step_flops(trainer, config.batch_pairs, config.mask_steps_per_disc_step),
    )


def time_torch(torch_python, data, config, steps):
    """Mean seconds per step of the PyTorch reference on the same mixtures, after 5 warm-ups."""
    with tempfile.TemporaryDirectory() as scratch:
        path = os.path.join(scratch, "mix.npz")
        # The reference reads uint8 sources with a scale; MNIST pixels are exactly k/256.
        as_u8 = {
            name: np.round(getattr(split, f"sources_{ab}")[..., 0] * 256).astype(np.uint8)
            for name, split, ab in (
                ("train_x", data.train, "a"),
                ("train_b", data.train, "b"),
                ("test_x", data.validation, "a"),
                ("test_b", data.validation, "b"),
            )
        }
        np.savez(path, scale=np.float32(256), **as_u8)
        result = subprocess.run(
            [
                torch_python,
                REFERENCE,
                "--data",
                path,
                "--energy",
                config.energy,
                "--device",
                "cpu",
                "--bench",
                "--max-steps",
                str(steps + 5),
                "--pairs",
                str(config.batch_pairs),
                "--nf",
                str(config.mask_width),
                "--lr",
                str(config.mask_learning_rate),
                "--d-every",
                str(config.mask_steps_per_disc_step),
            ],
            capture_output=True,
            text=True,
            check=True,
        )
    return float(re.search(r"mean after warmup ([\d.]+) ms", result.stdout).group(1)) / 1000


def print_time_to_quality(path):
    """Prints when a mask-net run's eval.json at `path` first reached each quality mark.

    Raises:
      UserError: the file is missing, damaged or has no training history (a baseline's).
    """
    results = rundir.read_record(path)
    if results is None or "history" not in results:
        raise UserError(f"--eval_json={path} is not the eval.json of a mask-net training run")
    now = f"run at step {results['step']}: {results['psnr_db']:.2f} dB, {results['ssim']:.3f} SSIM"
    for metric, marks in evaluation.seconds_to_quality_marks(results["history"]).items():
        for mark, seconds in marks.items():
            reached = "not yet" if seconds is None else f"{seconds / 60:.1f} min of training"
            unit = evaluation.QUALITY_MARK_UNITS[metric]
            print(f"validation at {mark} {unit}: {reached} ({now})")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mask_width", type=int, default=64)
    parser.add_argument("--disc_width", type=int, default=64)
    parser.add_argument("--batch_pairs", type=int, default=64)
    parser.add_argument("--mask_steps_per_disc_step", type=int, default=4)
    parser.add_argument(
        "--mixed_precision",
        default="float32",
        help="float32, mixed_bfloat16 or mixed_float16 (aur_tf only)",
    )
    parser.add_argument(
        "--conv_kernels",
        default="phases,native",
        help="comma-separated --conv_kernels values to time (aur_tf only)",
    )
    parser.add_argument(
        "--jit_compile",
        default="false,true",
        help="comma-separated --jit_compile values to time (aur_tf only)",
    )
    parser.add_argument("--steps", type=int, default=32)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--cache_dir", default=Config().cache_dir)
    parser.add_argument("--torch_python", help="a Python with torch, for the reference comparison")
    parser.add_argument(
        "--eval_json", help="only print time to 18 / 20.4 dB and 0.9 SSIM from a run's eval.json"
    )
    args = parser.parse_args()
    if args.eval_json:
        try:
            return print_time_to_quality(args.eval_json)
        except UserError as e:
            parser.exit(2, f"error: {e}\n")
    if args.steps % args.mask_steps_per_disc_step:
        parser.error(
            f"--steps={args.steps} must be a multiple of --mask_steps_per_disc_step="
            f"{args.mask_steps_per_disc_step}: whole cycles of mask and discriminator "
            "updates"
        )
    jit_values = args.jit_compile.lower().split(",")
    if not set(jit_values) <= {"true", "false"}:
        parser.error(f"--jit_compile={args.jit_compile}: give true, false or both, comma-separated")
    jit_settings = [value == "true" for value in jit_values]

    config = Config(
        workdir=tempfile.mkdtemp(),
        mask_width=args.mask_width,
        disc_width=args.disc_width,
        batch_pairs=args.batch_pairs,
        mask_steps_per_disc_step=args.mask_steps_per_disc_step,
        mixed_precision=args.mixed_precision,
        cache_dir=args.cache_dir,
    )
    data = load_mixture_dataset(config)
    print(
        f"{config.mixed_precision}, mask width {config.mask_width}, disc width "
        f"{config.disc_width}, {config.batch_pairs} "
        f"pairs ({2 * config.batch_pairs} mixtures) per step, D updated every "
        f"{config.mask_steps_per_disc_step} steps, mean of {args.steps} steps after "
        f"{args.warmup}"
    )
    for conv_kernels in args.conv_kernels.split(","):
        for jit in jit_settings:
            for in_memory in (False, True):
                timed = dataclasses.replace(config, conv_kernels=conv_kernels, jit_compile=jit)
                seconds, flops = time_keras(
                    timed, data.train.mixtures, args.steps, args.warmup, in_memory
                )
                print(
                    f"aur_tf  {conv_kernels:6} xla={int(jit)} "
                    f"{'in-memory' if in_memory else 'pipeline '}  "
                    f"{seconds * 1000:7.1f} ms/step  {1 / seconds:5.2f} steps/s  "
                    f"{2 * config.batch_pairs / seconds:7.1f} mixtures/s  "
                    f"{flops / 1e9:6.1f} GFLOP/step  {flops / seconds / 1e9:6.1f} GFLOP/s"
                )
    if args.torch_python:
        seconds = time_torch(args.torch_python, data, config, args.steps)
        print(
            f"PyTorch reference             {seconds * 1000:7.1f} ms/step  "
            f"{1 / seconds:5.2f} steps/s  "
            f"{2 * config.batch_pairs / seconds:7.1f} mixtures/s  "
            f"{flops / seconds / 1e9:6.1f} GFLOP/s"
        )


if __name__ == "__main__":
    main()
