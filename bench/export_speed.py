"""Separation speed of an export: TF SavedModel vs onnxruntime CPU, images per second.

    PYTHONPATH=. python bench/export_speed.py --export_dir=W/export [--batch_sizes=1,256]
        [--repetitions=7] [--images_per_repetition=512]

Both artifacts of one `python -m export.onnx` run are loaded through `aur_tf.separator.Separator`
(the SavedModel on TensorFlow's CPU device, the ONNX file on onnxruntime's CPU provider) and
given the same deterministic mixtures. For each batch size, every repetition separates about
`images_per_repetition` images in calls of that batch size (so batch 1 is timed over many calls,
not one), alternating between the runtimes; after a warm-up call the median rate over the
repetitions is printed, with the ONNX / SavedModel ratio. Both runtimes use their default thread
pools. A benchmark, not a test: run it on an otherwise idle machine.
"""
import json
import os
import statistics
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402
from absl import app, flags  # noqa: E402

from aur_tf import cli  # noqa: E402
from aur_tf.errors import UserError  # noqa: E402
from aur_tf.separator import Separator  # noqa: E402

flags.DEFINE_string("export_dir", None, "Output directory of python -m export.onnx (holds "
                    "saved_model/ and separator.onnx).")
flags.DEFINE_list("batch_sizes", ["1", "256"], "Batch sizes to time.")
flags.DEFINE_integer("repetitions", 7, "Timed repetitions per batch size and runtime (median).")
flags.DEFINE_integer("images_per_repetition", 512, "Images separated per repetition.")
flags.mark_flag_as_required("export_dir")
FLAGS = flags.FLAGS


def median_rates(runtimes, mixtures, batch_size, repetitions, images_per_repetition):
    """`{name: median images/s}` of each `Separator` in `runtimes` on the same `mixtures`.

    Repetitions alternate between the runtimes, so that load from other processes, if any,
    falls on both alike instead of on whichever happens to run second.
    """
    calls = max(1, images_per_repetition // batch_size)
    rates = {name: [] for name in runtimes}
    for separator in runtimes.values():
        separator.separate(mixtures, batch_size=batch_size)  # warm-up: graph building, allocation
    for _ in range(repetitions):
        for name, separator in runtimes.items():
            start = time.perf_counter()
            for _ in range(calls):
                separator.separate(mixtures, batch_size=batch_size)
            rates[name].append(calls * batch_size / (time.perf_counter() - start))
    return {name: statistics.median(values) for name, values in rates.items()}


def main(argv):
    del argv
    cli.configure_logging()
    try:
        runtimes = {
            "TF SavedModel": Separator.load(os.path.join(FLAGS.export_dir, "saved_model"),
                                            provider="cpu"),
            "onnxruntime CPU": Separator.load(os.path.join(FLAGS.export_dir, "separator.onnx"),
                                              provider="cpu"),
        }
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
    separator = runtimes["onnxruntime CPU"]
    width = json.loads(separator.metadata["training_config"])["mask_width"]
    print(f"{FLAGS.export_dir}: {separator.image_size}x{separator.image_size}x"
          f"{separator.channels} images, mask width {width}, {os.cpu_count()} CPUs, median of "
          f"{FLAGS.repetitions} repetitions of ~{FLAGS.images_per_repetition} images")
    print(f"{'batch':>6} {'TF SavedModel':>16} {'onnxruntime CPU':>16} {'ONNX / TF':>10}")
    rng = np.random.default_rng(0)
    for batch_size in (int(b) for b in FLAGS.batch_sizes):
        mixtures = rng.random((batch_size, *separator.input_shape), dtype=np.float32)
        rates = median_rates(runtimes, mixtures, batch_size, FLAGS.repetitions,
                             FLAGS.images_per_repetition)
        print(f"{batch_size:>6} {rates['TF SavedModel']:>12.0f} im/s "
              f"{rates['onnxruntime CPU']:>12.0f} im/s "
              f"{rates['onnxruntime CPU'] / rates['TF SavedModel']:>9.2f}x")


if __name__ == "__main__":
    app.run(main)
