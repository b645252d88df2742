"""Separation speed of an export: images/s and GFLOP/s of each artifact, beside matmul's peak.

    PYTHONPATH=. python bench/export_speed.py --export_dir=W/export [--provider=cpu]
        [--models=saved_model,separator.onnx,separator_int8.onnx] [--batch_sizes=1,16,256]
        [--repetitions=7] [--images_per_repetition=512] [--device_id=0] [--trt_fp16]
        [--trt_engine_cache=DIR] [--threads=N]

Each of --models found in --export_dir (written by `python -m export.onnx`) is loaded through
`aur_tf.separator.Separator`: the ONNX files on onnxruntime's --provider (cpu, cuda or tensorrt;
one that cannot be loaded ends the command with one `error:` line, exit status 2), the SavedModel
on TensorFlow's CPU (only with --provider=cpu, and skipped with a note where TensorFlow is not
installed: the ONNX part imports no TensorFlow). All are given the same deterministic mixtures.
For each batch size, every repetition separates about `images_per_repetition` images in calls of
that batch size (so batch 1 is timed over many calls, not one), alternating between the models;
after a warm-up call the median rate over the repetitions is printed.

GFLOP/s counts the mask net's multiply-adds as two operations each, those of the stock Keras
layers (4x4 kernels, padding taps included), the same count for every artifact whatever its graph
does. Beside them: this machine's float32 matmul rate (numpy, 2048 x 2048, all cores), the
practical peak a convolution could reach on CPU. A benchmark, not a test: run it on an otherwise
idle machine.
"""

import json
import os
import platform
import statistics
import time

import numpy as np
from absl import app, flags

from aur_tf import cli, machine
from aur_tf.errors import UserError
from aur_tf.separator import ONNX_PROVIDERS, Separator
from export.separate import define_provider_option_flags, provider_options_from_flags

SAVED_MODEL = "saved_model"
_KERNEL_TAPS = 16  # 4x4
_DOWN_STEPS = 4
_MATMUL_SIZE = 2048

FLAGS = flags.FLAGS


def _define_flags():
    """Defined only when run as a script: absl flags are process-global, and the test suite
    loads this module beside other entry points (a required flag here would fail their parsing).
    """
    flags.DEFINE_string("export_dir", None, "Output directory of python -m export.onnx.")
    flags.DEFINE_enum(
        "provider",
        "cpu",
        list(ONNX_PROVIDERS),
        "onnxruntime execution provider of the ONNX models; the SavedModel is timed with cpu only.",
    )
    flags.DEFINE_list(
        "models",
        [SAVED_MODEL, "separator.onnx", "separator_int8.onnx"],
        "Artifacts in --export_dir to time; missing ones are skipped with a note.",
    )
    flags.DEFINE_list("batch_sizes", ["1", "16", "256"], "Batch sizes to time.")
    flags.DEFINE_integer("repetitions", 7, "Timed repetitions per batch size and model (median).")
    flags.DEFINE_integer("images_per_repetition", 512, "Images separated per repetition.")
    define_provider_option_flags()
    flags.mark_flag_as_required("export_dir")


def mask_net_flops(image_size, channels, width):
    """Floating-point operations of one image through the mask net (2 per multiply-add).

    The convolutions of `aur_tf.models.build_mask_net`: four 4x4 stride-2 ones halving the image
    (channels -> width -> ... -> 8 width) and four transposed ones doubling it back (... -> width
    -> channels); BatchNorm, activations and the mask formula add well under 1%.
    """
    widths = [width * 2**i for i in range(_DOWN_STEPS)]
    flops, size, depth = 0, image_size, channels
    for filters in widths:
        size //= 2
        flops += 2 * size * size * _KERNEL_TAPS * depth * filters
        depth = filters
    for filters in [*reversed(widths[:-1]), channels]:
        flops += 2 * size * size * _KERNEL_TAPS * depth * filters
        size, depth = size * 2, filters
    return flops


def matmul_gflops(repetitions=5, size=_MATMUL_SIZE):
    """Median GFLOP/s of numpy's float32 `size` x `size` matmul."""
    rng = np.random.default_rng(0)
    a, b = (rng.random((size, size), dtype=np.float32) for _ in range(2))
    a @ b  # warm-up: BLAS threads
    rates = []
    for _ in range(repetitions):
        start = time.perf_counter()
        a @ b
        rates.append(2 * size**3 / (time.perf_counter() - start) / 1e9)
    return statistics.median(rates)


def cpu_description(cpuinfo=machine.CPUINFO):
    """`model name (avx2, avx512f, ...)` of the first CPU in `cpuinfo`, or the platform's name."""
    fields = machine.cpu_fields(cpuinfo)
    if not fields:
        return platform.processor() or platform.machine()
    wanted = ("avx2", "avx512f", "avx512_vnni", "avx_vnni", "amx_int8")
    present = [flag for flag in wanted if flag in fields.get("flags", "").split()]
    return f"{fields.get('model name', 'unknown CPU')} ({', '.join(present) or 'no AVX2'})"


def median_rates(runtimes, mixtures, batch_size, repetitions, images_per_repetition):
    """`{name: median images/s}` of each `Separator` in `runtimes` on the same `mixtures`.

    Repetitions alternate between the runtimes, so that load from other processes, if any,
    falls on all alike instead of on whichever happens to run last.
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


def load_runtimes(export_dir, names, provider, options, note=print):
    """`{name: Separator}` of the `names` present in `export_dir`, in order.

    Raises:
      UserError: nothing to time, or a model cannot be loaded with `provider`.
    """
    runtimes = {}
    for name in names:
        path = os.path.join(export_dir, name)
        if not os.path.exists(path):
            note(f"note: {path} does not exist, skipped")
        elif name == SAVED_MODEL and provider != "cpu":
            note(f"note: {name} skipped: it runs on TensorFlow, timed with --provider=cpu only")
        elif name == SAVED_MODEL:
            try:
                runtimes[name] = Separator.load(path, provider="cpu")
            except ImportError:
                note(f"note: {name} skipped: TensorFlow is not installed")
        else:
            runtimes[name] = Separator.load(path, provider=provider, options=options)
    if not runtimes:
        raise UserError(
            f"none of {', '.join(names)} is in --export_dir={export_dir}: give the "
            "output directory of python -m export.onnx"
        )
    return runtimes


def main(argv):
    del argv
    cli.configure_logging()
    try:
        runtimes = load_runtimes(
            FLAGS.export_dir, FLAGS.models, FLAGS.provider, provider_options_from_flags()
        )
        batch_sizes = [int(b) for b in FLAGS.batch_sizes]
    except UserError as e:
        cli.fail(e)
    except ValueError:
        cli.fail(f"--batch_sizes={','.join(FLAGS.batch_sizes)} must be integers >= 1")
    if min(batch_sizes) < 1:
        cli.fail(f"--batch_sizes={','.join(FLAGS.batch_sizes)} must be integers >= 1")
    separator = next(iter(runtimes.values()))
    config = json.loads(separator.metadata["training_config"])
    flops = mask_net_flops(separator.image_size, separator.channels, config["mask_width"])
    print(
        f"{FLAGS.export_dir}: {separator.image_size}x{separator.image_size}x"
        f"{separator.channels} images, mask width {config['mask_width']} "
        f"({flops / 1e9:.3f} GFLOP per image); {cpu_description()}, {os.cpu_count()} CPUs; "
        f"median of {FLAGS.repetitions} repetitions of ~{FLAGS.images_per_repetition} images"
    )
    for name, runtime in runtimes.items():
        print(f"  {name}: {runtime.provider}")
    print(f"float32 matmul {_MATMUL_SIZE}x{_MATMUL_SIZE} (numpy): {matmul_gflops():.0f} GFLOP/s")
    print(f"{'batch':>6} " + " ".join(f"{name:>26}" for name in runtimes))
    rng = np.random.default_rng(0)
    for batch_size in batch_sizes:
        mixtures = rng.random((batch_size, *separator.input_shape), dtype=np.float32)
        rates = median_rates(
            runtimes, mixtures, batch_size, FLAGS.repetitions, FLAGS.images_per_repetition
        )
        print(
            f"{batch_size:>6} "
            + " ".join(
                f"{rates[name]:>9.0f} im/s {rates[name] * flops / 1e9:>7.1f} GFLOP/s"
                for name in runtimes
            )
        )


if __name__ == "__main__":
    _define_flags()
    app.run(main, flags_parser=cli.parse_flags)
